"""Loading modules as the command line asks: --load, --trust, --grant, the
config file, stored modules; and the guests' log lines on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .. import _apsw_cli as _apsw
from .. import _cache
from .._config import Config, ModuleRef, load_config
from .._errors import CapabilityError, Error, ManifestError, SignatureError
from .._manifest import MANIFEST_SECTION, manifest_from_json
from .._runtime import Module, Runtime
from .._signing import check_signature, load_trusted_keys
from .._table import printable
from .._wasmfile import MalformedModule, find_custom
from .modules import read_file

# ------------------------------------------------------------ loading modules


def example_names() -> list[str]:
    """The shipped example modules, loadable by name (`--load geo`)."""
    from sqlwasm.extensions import ROOT

    return sorted(p.parent.name for p in Path(ROOT).glob("*/*.wasm") if p.stem == p.parent.name)


def grant_from_args(args: argparse.Namespace) -> list[str] | dict[str, bool | list[str]]:
    """--grant CAP (repeatable); `sql:T1,T2` narrows sql to those tables,
    which takes the mapping form of Runtime's grant."""
    grant: dict[str, bool | list[str]] = {}
    for item in args.grant:
        cap, _, tables = item.partition(":")
        grant[cap] = [t for t in tables.split(",") if t] if tables else True
    if all(value is True for value in grant.values()):
        return list(grant)
    return grant


class Loader:
    """Loads modules as the command line asks (--trust, --allow-unsigned,
    --grant, the limits) on top of the config file (--config) and says what
    to do, in its words, when one cannot be loaded."""

    def __init__(self, args: argparse.Namespace) -> None:
        # The config file's settings; the command line adds modules, keys and
        # grants to them, and its limits replace the file's.
        self.config = load_config(args.config) or Config(source="no config file")
        limits = dict(self.config.limits)
        for name in ("timeout_ms", "fuel", "memory_pages", "max_result_bytes"):
            if getattr(args, name) is not None:
                limits[name] = getattr(args, name)
        self.limits: dict[str, Any] = limits
        command_line_grant = grant_from_args(args)
        if not isinstance(command_line_grant, dict):
            command_line_grant = {cap: True for cap in command_line_grant}
        self.grant = {**self.config.grant, **command_line_grant}
        self.allow_unsigned = args.allow_unsigned or self.config.allow_unsigned
        self.trusted = load_trusted_keys([*self.config.trusted_keys, *args.trust])
        options: dict[str, Any] = {"grant": self.grant, **limits, "cache_dir": self.config.cache_dir}
        self.runtime = Runtime(trusted_keys=list(self.trusted.values()), allow_unsigned=self.allow_unsigned, **options)
        self._options = options
        self._examples_runtime: Runtime | None = None
        self._owner: dict[Module, Runtime] = {}  # a module installs through the Runtime that loaded it
        self._bytes: dict[Module, bytes] = {}

    def _examples(self) -> Runtime:
        """The Runtime for shipped examples loaded by name: one is as trusted
        as the package it came with, so it loads with the examples' key
        (which no other module gets)."""
        from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY

        if self._examples_runtime is None:
            self._examples_runtime = Runtime(trusted_keys=EXAMPLES_PUBLIC_KEY, **self._options)
        return self._examples_runtime

    def load(self, spec: str) -> Module:
        """spec: a .wasm file, or the name of a shipped example."""
        path = Path(spec)
        runtime = self.runtime
        if not path.exists() and os.sep not in spec and spec in example_names():
            from sqlwasm.extensions import module_path

            path, runtime = module_path(spec), self._examples()
        elif not path.exists():
            names = ", ".join(example_names())
            raise Error(f"no module {spec}: not a file, nor the name of a shipped example ({names})")
        if path.is_dir():
            raise Error(f"{spec} is a directory: pass its modules with --modules-dir {spec}")
        return self._load(spec, path, runtime)

    def load_configured(self, ref: ModuleRef) -> Module:
        """A module the config file names (its path resolved there)."""
        return self._load(str(ref.path), ref.path, self._examples() if ref.example else self.runtime)

    def _load(self, spec: str, path: Path, runtime: Runtime) -> Module:
        data = read_file(str(path))
        self._check(spec, data, runtime is self.runtime)
        module = runtime.load(path)
        self._owner[module] = runtime
        self._bytes[module] = data
        return module

    def _check(self, spec: str, data: bytes, check_trust: bool) -> None:
        """The usual reasons a module cannot load, as what to type instead
        (Runtime.load checks all of it again)."""
        if spec.endswith(".c"):
            raise Error(f"{spec} is C source, not a module: build one with `sqlwasm build {spec} --manifest ...`")
        if spec.endswith(".toml"):
            raise Error(f"{spec} is a manifest, not a module: embed it with `sqlwasm pack` or `sqlwasm build`")
        if not data.startswith(b"\0asm"):
            raise Error(f"{spec} is not a wasm module")
        try:
            signature = check_signature(data)
            manifests = find_custom(data, MANIFEST_SECTION)
            manifest = manifest_from_json(manifests[0].payload(data)) if len(manifests) == 1 else None
        except (SignatureError, MalformedModule, ManifestError):
            return  # Runtime.load says what is wrong
        if check_trust and not self.allow_unsigned:
            if signature is None:
                raise SignatureError(
                    f"module {spec} is not signed: sign it with `sqlwasm sign {spec} --key NAME.key` and pass "
                    "--trust NAME.pub (or pass --allow-unsigned, for development only)"
                )
            if signature.public_key.raw not in self.trusted:
                trusted = ", ".join(
                    k.key_id + (f" ({k.name})" if k.name else "") for k in self.trusted.values()
                ) or "none"
                raise SignatureError(
                    f"module {spec} is signed by key {signature.key_id}, which is not trusted (trusted keys: "
                    f"{trusted}): pass --trust KEY.pub with its publisher's key (or --allow-unsigned, for "
                    "development only)"
                )
        if manifest is not None:
            for cap in manifest.capabilities:
                if cap not in self.grant:
                    raise CapabilityError(
                        f"module '{manifest.name}' ({spec}) needs capability '{cap}': pass --grant {cap}"
                    )

    def install(self, conn: Any, module: Module) -> None:
        self._owner[module].install(conn, module)

    def cache_option(self) -> dict[str, Any]:
        """cache_dir for shard workers, when the config file sets one (the
        default, the user's cache directory, is each worker's own)."""
        cache_dir = self.config.cache_dir
        return {} if cache_dir is _cache.USER_CACHE else {"cache_dir": cache_dir}

    def shard_modules(self, args: argparse.Namespace) -> tuple[list[bytes], list[Any]]:
        """For a query over shards: every module's bytes (checked here as for
        any query) and the keys the workers must trust (the examples' key
        only if an example was loaded by name)."""
        modules = [self.load_configured(ref) for ref in self.config.modules]
        modules += [self.load(spec) for spec in self._specs(args)]
        keys: list[Any] = list(self.trusted.values())
        if any(self._owner[m] is not self.runtime for m in modules):
            from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY

            keys.append(EXAMPLES_PUBLIC_KEY)
        return [self._bytes[m] for m in modules], keys

    def load_stored(self, conn: Any) -> list[Module]:
        """The modules stored in conn's database, verified against --trust
        like any other module (the database chooses no trust)."""
        stored = self.runtime.load_stored(conn)
        for module in stored:
            self._owner[module] = self.runtime
        return stored

    def connect(self, args: argparse.Namespace) -> tuple[Any, list[Module], list[Module] | None]:
        """The database with every --modules-dir and --load module installed,
        and (with --db-modules) the modules stored in it, else None."""
        check_database(args.db, args.create)
        modules = [self.load_configured(ref) for ref in self.config.modules]
        modules += [self.load(spec) for spec in self._specs(args)]
        conn = self.runtime.connect(args.db, **_apsw.open_options(args.db))
        try:
            stored = self.load_stored(conn) if args.db_modules or self.config.db_modules else None
            for module in [*modules, *(stored or [])]:
                self.install(conn, module)
        except BaseException:
            conn.close()
            raise
        return conn, modules, stored

    def _specs(self, args: argparse.Namespace) -> list[str]:
        specs: list[str] = []
        for directory in args.modules_dir:
            if not Path(directory).is_dir():
                raise Error(f"--modules-dir {directory}: not a directory")
            found = sorted(str(p) for p in Path(directory).glob("*.wasm"))
            if not found:
                raise Error(f"--modules-dir {directory}: no .wasm modules in it")
            specs += found
        return specs + list(args.load)


def check_database(db: str, create: bool) -> None:
    """A database file that is not there is a typo unless --create says so
    (SQLite would make a new, empty one)."""
    if db in ("", ":memory:") or db.startswith("file:") or create:
        return
    if not Path(db).exists():
        raise Error(f"no database {db} (pass --create to make a new one)")
    if Path(db).is_dir():
        raise Error(f"{db} is a directory, not a database")


class _LogLine(logging.Formatter):
    """A log record on one line: guests' messages are untrusted text."""

    def format(self, record: logging.LogRecord) -> str:
        message = printable(record.getMessage())
        if record.name == "sqlwasm":  # sqlwasm's own messages name it already
            return message
        return f"{record.name} {record.levelname.lower()}: {message}"


@contextmanager
def showing_logs() -> Iterator[None]:
    """sqlwasm's warnings and guests' log messages (info and above) on
    stderr while a command runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogLine())
    logger = logging.getLogger("sqlwasm")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


