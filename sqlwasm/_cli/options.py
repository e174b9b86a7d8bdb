"""Argument types and the options commands share."""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

from .._limits import DEFAULT_MAX_RESULT_BYTES, DEFAULT_MEMORY_PAGES, DEFAULT_TIMEOUT_MS, limit_problem
from .._manifest import CAPABILITIES
from .._table import printable


def utf8_arg(text: str) -> str:
    """An argument SQLite takes as text (SQL, a database name): a command
    line that was not UTF-8 reaches Python with surrogates in it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{printable(text)} is not valid UTF-8") from None
    return text


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{printable(text)} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _limit(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{printable(text)} is not a whole number") from None
        problem = limit_problem(value, name)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _capability(text: str) -> str:
    cap = text.partition(":")[0]
    if cap not in CAPABILITIES:
        raise argparse.ArgumentTypeError(f"unknown capability {printable(cap)!r} (known: {', '.join(CAPABILITIES)})")
    return text


def add_database_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=utf8_arg, metavar="DB", help="database file (':memory:' for a temporary one)")
    p.add_argument("--create", action="store_true", help="create DB if it does not exist (otherwise an error)")
    p.add_argument(
        "--config", metavar="FILE",
        help="the config file (default: $SQLWASM_CONFIG, else ./sqlwasm.toml if there is one); the options below "
        "add to its modules, keys and grants and replace its limits",
    )
    p.add_argument(
        "--load", action="append", default=[], metavar="MODULE",
        help="module to load: a .wasm file or a shipped example's name (geo, stats, text); repeatable",
    )
    p.add_argument(
        "--modules-dir", action="append", default=[], metavar="DIR", help="load every .wasm in DIR (repeatable)"
    )
    p.add_argument(
        "--db-modules", action="store_true",
        help="also load the modules stored in DB (sqlwasm store), verified against --trust like any other",
    )
    p.add_argument(
        "--trust", action="append", default=[], metavar="KEY.pub",
        help="trusted public key: a .pub file or its text (repeatable)",
    )
    p.add_argument(
        "--allow-unsigned", action="store_true", help="load modules without a trusted signature (development only)"
    )
    p.add_argument(
        "--grant", action="append", default=[], type=_capability, metavar="CAP",
        help=f"grant a capability modules may use ({', '.join(CAPABILITIES)}); repeatable",
    )
    p.add_argument(
        "--timeout-ms", type=_limit("timeout_ms"), metavar="MS",
        help=f"time limit per SQL function call (default {DEFAULT_TIMEOUT_MS})",
    )
    p.add_argument(
        "--fuel", type=_limit("fuel"), metavar="N", help="fuel (wasm instructions) per call (default: unmetered)"
    )
    p.add_argument(
        "--memory-pages", type=_limit("memory_pages"), metavar="N",
        help=f"linear memory per instance, in 64 KiB pages (default {DEFAULT_MEMORY_PAGES})",
    )
    p.add_argument(
        "--max-result-bytes", type=_limit("max_result_bytes"), metavar="N",
        help=f"largest result of one call (default {DEFAULT_MAX_RESULT_BYTES})",
    )


# One example per command, shown by `sqlwasm COMMAND --help`.
EXAMPLES = {
    "keygen": "sqlwasm keygen publisher --dir keys",
    "sign": "sqlwasm sign myfuncs.wasm --key keys/publisher.key",
    "verify": "sqlwasm verify myfuncs.wasm --trust keys/publisher.pub",
    "inspect": "sqlwasm inspect myfuncs.wasm --json",
    "pack": "sqlwasm pack myfuncs.wasm myfuncs.toml -o myfuncs-packed.wasm",
    "build": "sqlwasm build myfuncs.c --manifest myfuncs.toml -o myfuncs.wasm --key keys/publisher.key",
    "query": "sqlwasm query places.db \"SELECT name FROM places WHERE geo_haversine(lat, lon, ?, ?) < 50\" "
    "--load geo --param 51.5 --param -0.12",
    "shell": "sqlwasm shell places.db --load geo --load myfuncs.wasm --trust keys/publisher.pub",
    "demo": "sqlwasm demo --rows 10000",
    "cache": "sqlwasm cache info",
    "store": "sqlwasm store data.db myfuncs.wasm --trust keys/publisher.pub",
    "preinit": "sqlwasm preinit myfuncs.wasm -o myfuncs-ready.wasm --key keys/publisher.key",
}


class IntermixedParser(argparse.ArgumentParser):
    """A command whose optional positional (query's and shell's SQL) may
    come after options: `query DB --load geo "SELECT ..."`."""

    _parsing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._parsing:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


