"""The `sqlwasm` command: its parser, and how a command's failure becomes an
exit status and one line on stderr."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import Callable, Sequence

from .. import __version__, _cache
from .. import _apsw_cli as _apsw
from .._build import CompileError
from .._errors import Error
from .._table import printable
from .modules import cmd_build, cmd_inspect, cmd_keygen, cmd_pack, cmd_preinit, cmd_sign, cmd_verify
from .options import EXAMPLES, IntermixedParser, UsageError, add_database_options, count_arg, utf8_arg
from .query import cmd_query, cmd_shell
from .store import cmd_cache, cmd_demo, cmd_store


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sqlwasm",
        description="Signed, sandboxed WebAssembly functions for SQLite.",
        epilog="`sqlwasm COMMAND --help` shows a command's options and an example. Exit status: 0 done, "
        "1 error, 2 usage error, 130 interrupted (Ctrl-C).",
    )
    top.add_argument("--version", action="version", version=f"sqlwasm {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=IntermixedParser)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help, description=help, epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func, parser=p)
        return p

    p = command("keygen", cmd_keygen, "create an ed25519 signing key pair: NAME.key and NAME.pub")
    p.add_argument("name", metavar="NAME", help="the key's name: the files are NAME.key and NAME.pub")
    p.add_argument("--dir", default=".", metavar="DIR", help="directory to write the keys to")

    p = command("sign", cmd_sign, "sign a module (in place unless -o is given)")
    p.add_argument("module", metavar="MODULE", help="the .wasm module to sign")
    p.add_argument("--key", required=True, metavar="NAME.key", help="the private key (from sqlwasm keygen)")
    p.add_argument("-o", "--output", metavar="OUT", help="write the signed module here instead")

    p = command("verify", cmd_verify, "check a module's signature against trusted keys (exit status 0 if trusted)")
    p.add_argument("module", metavar="MODULE", help="the .wasm module to check")
    p.add_argument(
        "--trust", action="append", default=[], required=True, metavar="KEY.pub",
        help="trusted public key: a .pub file or its text (repeatable)",
    )

    p = command("inspect", cmd_inspect, "show a module's manifest, exports, imports, signer and sha256")
    p.add_argument("module", metavar="MODULE", help="the .wasm module to show")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("pack", cmd_pack, "embed a TOML manifest into a module (replacing any)")
    p.add_argument("module", metavar="MODULE", help="the compiled .wasm module")
    p.add_argument("manifest", metavar="MANIFEST.toml", help="the manifest to embed")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the packed module")

    p = command("build", cmd_build, "compile a guest (C, C++, AssemblyScript, JS), check it, embed its manifest")
    p.add_argument(
        "source", nargs="+", metavar="SOURCE",
        help="the guest's source files, compiled into one module (.c; .cc, .cpp, .cxx for C++; "
        "one .ts for AssemblyScript; one .js for JavaScript)",
    )
    p.add_argument("--manifest", required=True, metavar="MANIFEST.toml", help="the manifest to embed")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the module")
    p.add_argument("--key", metavar="NAME.key", help="also sign with this key")
    p.add_argument(
        "-D", dest="define", action="append", default=[], metavar="NAME[=VALUE]",
        help="define a preprocessor macro in every source (repeatable; -DNAME works too)",
    )
    p.add_argument(
        "-I", dest="include", action="append", default=[], metavar="DIR",
        help="search DIR for #include files (repeatable; -IDIR works too)",
    )
    p.add_argument(
        "--cflag", action="append", default=[], metavar="FLAG",
        help="pass FLAG to the compiler as is; write --cflag=FLAG (repeatable): --cflag=-O3",
    )

    p = command(
        "preinit", cmd_preinit,
        "run a module's initializer once and write a module that starts in the state it left (a snapshot)",
    )
    p.add_argument("module", metavar="MODULE", help="the .wasm module (its signature is dropped: sign the output)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the snapshot module")
    p.add_argument(
        "--init", metavar="NAME", help="the export to run (default: wizer.initialize or sqlwasm_init, the first found)"
    )
    p.add_argument("--key", metavar="NAME.key", help="also sign the snapshot with this key")

    p = command("query", cmd_query, "run SQL with modules loaded and print the rows")
    add_database_options(p)
    p.add_argument(
        "sql", type=utf8_arg, nargs="?", metavar="SQL", help="the SQL to run; - reads it from standard input"
    )
    p.add_argument("-f", "--file", metavar="FILE", help="read the SQL from FILE (- for standard input)")
    p.add_argument(
        "--param", action="append", default=[], metavar="VALUE",
        help="bind a parameter: VALUE for the next ?, or :NAME=VALUE; numbers bind as numbers (repeatable)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help='print a JSON array of objects (blobs as {"$base64": ...})')
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header (blobs as hex)")
    p.add_argument("--null", metavar="TEXT", help="show NULL as TEXT (default: NULL in a table, empty in CSV)")
    p.add_argument("--timer", action="store_true", help="print the time of each statement (on stderr)")
    p.add_argument(
        "--progress", action="store_true",
        help="show elapsed time and rows so far on stderr even when it is not a terminal",
    )
    p.add_argument(
        "--map", metavar="SQL",
        help="DB is a glob of shard files: run SQL on each, on Dask workers (pip install '.[dask]')",
    )
    p.add_argument("--reduce", metavar="SQL", help="with --map: run SQL over table `map`, the rows of every shard")
    p.add_argument("--workers", type=count_arg, metavar="N", help="with --map: Dask worker processes (default: CPUs)")

    p = command("shell", cmd_shell, "APSW's interactive shell with modules loaded")
    add_database_options(p)
    p.add_argument("sql", type=utf8_arg, nargs="?", metavar="SQL", help="run this SQL (or dot command) and exit")
    p.add_argument("--timer", action="store_true", help="print the time of each statement (the shell's .timer on)")

    p = command("demo", cmd_demo, "build a sample database and run near-data queries with the signed example modules")
    p.add_argument("--rows", type=count_arg, default=200_000, metavar="N", help="number of sample readings")

    p = command("cache", cmd_cache, "show (info) or empty (clear) the compiled-module cache")
    p.add_argument(
        "action", choices=("info", "clear"), metavar="info|clear",
        help="info: directory, entries, size, toolchains and whether it is used (and why not); clear: remove every "
        "compiled module",
    )
    p.add_argument(
        "--dir", metavar="DIR",
        help=f"the cache directory (default: ${_cache.ENV_VAR}, else the user's cache directory)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--toolchains", action="store_true",
        help="with clear: also remove the guest toolchains kept there (AssemblyScript's compiler, the JS engine)",
    )

    p = command("store", cmd_store, "store signed modules in a database, list them, or remove them")
    p.add_argument("db", type=utf8_arg, metavar="DB", help="the database file")
    p.add_argument(
        "modules", nargs="*", metavar="MODULE", help="the .wasm modules to store (replacing any of the same name)"
    )
    p.add_argument("--create", action="store_true", help="create DB if it does not exist (otherwise an error)")
    p.add_argument(
        "--trust", action="append", default=[], metavar="KEY.pub",
        help="trusted public key: a .pub file or its text (repeatable); a module to store must be signed by one",
    )
    p.add_argument(
        "--allow-unsigned", action="store_true", help="store modules without a trusted signature (development only)"
    )
    p.add_argument("--list", action="store_true", help="list the stored modules: name, version, sha256, signer, size")
    p.add_argument(
        "--remove", action="append", default=[], metavar="NAME", help="remove the stored module NAME (repeatable)"
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line argv (default: this process's, as the `sqlwasm`
    command); returns the exit status."""
    status = _run(argv)
    if argv is None:
        # The process exits next: leave what the command loaded to the OS
        # rather than to a final garbage collection (tens of milliseconds
        # after Ctrl-C, say).
        gc.freeze()
    return status


def _run(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        args.parser.error(str(exc))  # exits with status 2
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CompileError as exc:  # the one line, then the compiler's own words
        print(f"sqlwasm: error: {printable(exc.summary)}\n{exc.diagnostics}", file=sys.stderr)
        return 1
    except (Error, _apsw.HostError) as exc:
        # One line whatever the message holds: a guest's error text is
        # untrusted and must not forge output lines or drive the terminal.
        print(f"sqlwasm: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`sqlwasm query ... | head`): stop quietly, and
        # keep Python from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
