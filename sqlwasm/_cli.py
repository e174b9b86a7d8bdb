"""The `sqlwasm` command line."""

from __future__ import annotations

import argparse
import base64
import csv
import gc
import hashlib
import json
import logging
import math
import os
import re
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import __version__, _cache, _engine, _stored
from . import _apsw_cli as _apsw
from ._build import CompileError, build, pack, write_module
from ._config import Config, ModuleRef, load_config
from ._errors import CapabilityError, Error, ManifestError, SignatureError
from ._interrupt import CtrlC
from ._limits import DEFAULT_MAX_RESULT_BYTES, DEFAULT_MEMORY_PAGES, DEFAULT_TIMEOUT_MS, limit_problem
from ._manifest import CAPABILITIES, MANIFEST_SECTION, manifest_from_json, manifest_from_toml
from ._progress import Progress
from ._runtime import Module, Runtime
from ._signing import check_signature, generate_keypair, load_private_key, load_trusted_keys, sign
from ._table import cell_text, format_table, printable
from ._wasmfile import MalformedModule, find_custom


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Error(f"cannot read {path}: {exc.strerror}") from exc


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, pub_path = generate_keypair(args.name, args.dir)
    print(f"wrote {key_path} (private: keep it secret) and {pub_path} (share it)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    signed = sign(_read(args.module), load_private_key(args.key))
    out = args.output or args.module
    write_module(out, signed)
    signature = check_signature(signed)
    assert signature is not None
    print(f"signed {out} with key {signature.key_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    data = _read(args.module)
    trusted = load_trusted_keys(args.trust)
    try:
        signature = check_signature(data)
    except SignatureError as exc:
        print(f"FAILED: {exc}")
        return 1
    if signature is None:
        print(f"FAILED: {args.module} is not signed")
        return 1
    signer = trusted.get(signature.public_key.raw)  # the whole key: an id only names it
    if signer is None:
        print(f"FAILED: {args.module} is signed by key {signature.key_id}, which is not trusted")
        return 1
    name = signer.name
    print(f"OK: {args.module} is signed by trusted key {signature.key_id}" + (f" ({name})" if name else ""))
    return 0


def describe(data: bytes) -> dict[str, Any]:
    """What `inspect` shows: manifest, exports, imports, signer, sha256.
    An invalid manifest is shown as None with a "manifest_problem"."""
    info: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    try:
        signature = check_signature(data)
        info["signature"] = {"status": "valid", "key_id": signature.key_id} if signature else {"status": "unsigned"}
    except SignatureError as exc:
        info["signature"] = {"status": "invalid", "problem": str(exc)}
    try:
        manifests = find_custom(data, MANIFEST_SECTION)
    except MalformedModule as exc:
        raise Error(f"not a wasm module: {exc}") from exc
    info["manifest"] = None
    if len(manifests) > 1:
        info["manifest_problem"] = f"more than one '{MANIFEST_SECTION}' section"
    elif manifests:
        try:
            info["manifest"] = manifest_from_json(manifests[0].payload(data)).to_json()
        except ManifestError as exc:
            info["manifest_problem"] = str(exc)
    try:
        compiled = _engine.default().compile(_engine.EngineConfig(restricted=False), data)
    except _engine.InvalidWasm as exc:
        raise Error(f"not a valid wasm module: {exc.cause}") from exc.__cause__
    info["exports"] = [{"name": e.name, "type": _type_text(e.type)} for e in compiled.exports]
    info["imports"] = [{"module": i.module, "name": i.name, "type": _type_text(i.type)} for i in compiled.imports]
    return info


def _type_text(ty: _engine.ExternType) -> str:
    if isinstance(ty, _engine.FuncType):
        return f"func ({', '.join(ty.params)}) -> ({', '.join(ty.results)})"
    if isinstance(ty, _engine.MemoryType):
        return f"memory {ty.min_pages}..{ty.max_pages if ty.max_pages is not None else ''} pages"
    return ty.kind


def cmd_inspect(args: argparse.Namespace) -> int:
    info = describe(_read(args.module))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0

    def say(line: str) -> None:  # names and texts come from the module: shown, not obeyed
        print(printable(line))

    manifest = info["manifest"]
    if manifest:
        say(f"module    {manifest['name']} {manifest['version']}")
        if manifest.get("description"):
            say(f"          {manifest['description']}")
    elif "manifest_problem" in info:
        say(f"module    (invalid manifest: {info['manifest_problem']})")
    else:
        say("module    (no manifest)")
    sig = info["signature"]
    say(f"signature {sig['status']}" + (f", key {sig['key_id']}" if "key_id" in sig else "")
        + (f": {sig['problem']}" if "problem" in sig else ""))
    say(f"sha256    {info['sha256']}  ({info['size']} bytes)")
    if manifest:
        say(f"capabilities {', '.join(manifest['capabilities']) or 'none'}")
        say("functions")
        for f in manifest["functions"]:
            args_text = ", ".join(f["args"]) + (f", {f['varargs']}..." if "varargs" in f else "")
            if "exports" in f:  # aggregate or window: its exports by role
                where = ", ".join(f"{role} {name}" for role, name in f["exports"].items())
            else:
                where = f"export {f['export']}"
            if f["kind"] == "table":  # rows of its declared columns
                result = "table(" + ", ".join(f"{c['name']} {c['type']}" for c in f["columns"]) + ")"
            else:
                result = f["returns"]
            say(f"  {f['name']}({args_text}) -> {result}  [{f['kind']}, {f['abi']}, {where}]")
    say("exports")
    for e in info["exports"]:
        say(f"  {e['name']}: {e['type']}")
    say("imports" + ("" if info["imports"] else "   none"))
    for i in info["imports"]:
        say(f"  {i['module']}.{i['name']}: {i['type']}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    write_module(args.output, pack(_read(args.module), manifest_from_toml(args.manifest)))
    print(f"wrote {args.output} (unsigned: sign it with `sqlwasm sign`)")
    return 0


def _check_output(path: str) -> None:
    """Says at once that -o cannot be written (before a build's compile)."""
    out = Path(path)
    if out.is_dir():
        raise Error(f"cannot write {path}: it is a directory")
    if not out.parent.is_dir():
        raise Error(f"cannot write {path}: there is no directory {out.parent}")


def cmd_build(args: argparse.Namespace) -> int:
    _check_output(args.output)
    flags = (*(f"-D{d}" for d in args.define), *(f"-I{i}" for i in args.include), *args.cflag)
    write_module(args.output, build(args.source, args.manifest, key=args.key, cflags=flags))
    print(f"wrote {args.output}" + ("" if args.key else " (unsigned)"))
    return 0


def cmd_preinit(args: argparse.Namespace) -> int:
    from ._preinit import preinit

    _check_output(args.output)
    snapshot = preinit(_read(args.module), initializer=args.init)
    if args.key:
        snapshot = sign(snapshot, load_private_key(args.key))
    write_module(args.output, snapshot)
    print(f"wrote {args.output}" + ("" if args.key else " (unsigned: sign it with `sqlwasm sign`)"))
    return 0


# ------------------------------------------------------------ loading modules


def example_names() -> list[str]:
    """The shipped example modules, loadable by name (`--load geo`)."""
    from sqlwasm.extensions import ROOT

    return sorted(p.parent.name for p in Path(ROOT).glob("*/*.wasm") if p.stem == p.parent.name)


def _grant(args: argparse.Namespace) -> list[str] | dict[str, bool | list[str]]:
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
        command_line_grant = _grant(args)
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
        data = _read(str(path))
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
        _check_database(args.db, args.create)
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


def _check_database(db: str, create: bool) -> None:
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
def _showing_logs() -> Iterator[None]:
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


# ------------------------------------------------------------ query


def _sql_text(args: argparse.Namespace) -> str:
    """The SQL argument, `-` for standard input, or --file."""
    if args.file is not None and args.sql is not None:
        raise UsageError("give the SQL as an argument or with --file, not both")
    if args.file is None and args.sql is None:
        raise UsageError("no SQL: give it as an argument, `-` for standard input, or --file FILE")
    if args.sql is not None and args.sql != "-":
        return str(args.sql)
    source = args.file if args.file is not None else "-"
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise Error(f"cannot read {source}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Error(f"{'standard input' if source == '-' else source}: SQL is not UTF-8 (byte {exc.start})") from exc


_NAMED = re.compile(r"[:@$]([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def _param_value(text: str) -> int | float | str:
    """A number becomes INTEGER or REAL, anything else TEXT."""
    if re.fullmatch(r"[+-]?[0-9]+", text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    if re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text) and math.isfinite(float(text)):
        return float(text)
    return text


def _bindings(params: list[str]) -> list[Any] | dict[str, Any]:
    """--param VALUE (positional, for ?) or --param :NAME=VALUE (named)."""
    matches = [m for p in params if (m := _NAMED.fullmatch(p))]
    if not matches:
        return [_param_value(p) for p in params]
    if len(matches) != len(params):
        raise UsageError("--param: use all positional (VALUE) or all named (:NAME=VALUE), not both")
    named = {m.group(1): _param_value(m.group(2)) for m in matches}
    if len(named) != len(matches):
        raise UsageError("--param: a name is given twice")
    return named


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    return value


def _json_text(rows: list[dict[str, Any]]) -> str:
    """JSON with SQLite's infinite REALs as 1e999 and -1e999, numbers every
    JSON reader takes as infinite (json.dumps would write Infinity, which is
    not JSON)."""
    marker = f"sqlwasm-infinity-{uuid.uuid4().hex}"

    def finite(value: Any) -> Any:
        if isinstance(value, float) and math.isinf(value):
            return marker if value > 0 else "-" + marker
        return value

    text = json.dumps([{k: finite(v) for k, v in row.items()} for row in rows], indent=1, allow_nan=False)
    return text.replace(f'"-{marker}"', "-1e999").replace(f'"{marker}"', "1e999")


def _position(sql: str, offset: int) -> str:
    """Where in sql an error is, on one line."""
    before = sql.encode("utf-8")[:offset].decode("utf-8", "replace")
    after = sql[len(before) :]
    return f"at character {len(before) + 1} of the SQL: {printable(before[-30:])} <here> {printable(after[:30])}"


def cmd_query(args: argparse.Namespace) -> int:
    if args.map is not None:
        return _shard_query(args)
    if args.reduce is not None or args.workers is not None:
        raise UsageError("--reduce and --workers are for a query over shards: give its SQL with --map")
    sql = _sql_text(args)
    bindings = _bindings(args.param)
    with _showing_logs():
        result = _query(args, sql, bindings)
    _print_result(args, result)
    return 0


def _query(args: argparse.Namespace, sql: str, bindings: list[Any] | dict[str, Any]) -> _apsw.Result:
    loader = Loader(args)
    with CtrlC() as ctrl_c:
        conn, _, _ = loader.connect(args)
        try:
            progress = Progress(sys.stderr, args.progress or sys.stderr.isatty())
            with ctrl_c.statement(conn), progress:
                result = _apsw.run(conn, sql, bindings, progress)
        except UnicodeDecodeError as exc:  # APSW decodes every TEXT value as UTF-8
            raise Error(
                f"a result is TEXT that is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "CAST it AS BLOB to see its bytes"
            ) from exc
        except _apsw.HostError as exc:
            # Stopped by Ctrl-C: SQLite's interrupt error, or a guest's
            # `interrupted` if the statement was inside one.
            if ctrl_c.fired:
                raise KeyboardInterrupt from None
            if isinstance(exc, _apsw.BindingsError):
                raise Error(f"{exc} (give the values with --param)") from exc
            offset = _apsw.error_offset(exc)
            if offset is None:
                raise
            raise Error(f"{exc} ({_position(sql, offset)})") from exc
        finally:
            conn.close()
    return result


def _shard_query(args: argparse.Namespace) -> int:
    """DB is a glob of shard files: --map runs on each (on Dask workers),
    --reduce over table `map` here (docs/distributed.md)."""
    if args.sql is not None or args.file is not None:
        raise UsageError("with --map the SQL is --map's (and --reduce's): give no other SQL")
    if args.param or args.create:
        raise UsageError("--param and --create are not for a query over shards")
    from . import distributed

    loader = Loader(args)
    module_bytes, keys = loader.shard_modules(args)
    with _showing_logs():
        names, rows = distributed.query_with_columns(
            args.db, args.map, args.reduce, modules=module_bytes, trusted_keys=keys,
            allow_unsigned=loader.allow_unsigned, grant=loader.grant, workers=args.workers,
            progress=args.progress or sys.stderr.isatty(), db_modules=args.db_modules or loader.config.db_modules,
            **loader.limits, **loader.cache_option(),
        )
    _print_result(args, _apsw.Result(list(names), [tuple(r) for r in rows], None, []))
    return 0


def _print_result(args: argparse.Namespace, result: _apsw.Result) -> None:
    names, rows = result.names, result.rows
    if args.timer:
        for statement, seconds in result.timings:
            print(f"time: {1e3 * seconds:.1f} ms  {printable(' '.join(statement.split()))[:60]}", file=sys.stderr)
    if args.json:
        print(_json_text([{n: _json_value(v) for n, v in zip(names, row)} for row in rows]))
    elif args.csv:
        if names:
            writer = csv.writer(sys.stdout)
            writer.writerow(names)
            null = args.null if args.null is not None else ""
            writer.writerows([[null if v is None else cell_text(v) for v in row] for row in rows])
    else:
        table = format_table(names, rows, null=args.null if args.null is not None else "NULL")
        if table:
            print(table)
        if result.changed is not None:
            print(f"{result.changed} row{'' if result.changed == 1 else 's'} changed")


def cmd_shell(args: argparse.Namespace) -> int:
    with _showing_logs():
        return _shell(args)


def _shell(args: argparse.Namespace) -> int:
    loader = Loader(args)
    conn, modules, stored = loader.connect(args)
    try:
        with CtrlC() as ctrl_c:
            shell = _apsw.Shell(conn, modules, loader, ctrl_c, stored)
            shell.timer = args.timer
            return shell.run(args.sql)
    finally:
        conn.close()


def cmd_cache(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir is not None else _cache.user_cache_dir()
    if args.action == "clear":
        removed, freed = _cache.clear(directory) if directory is not None else (0, 0)
        if args.json:
            print(json.dumps({"directory": str(directory) if directory else None, "removed": removed, "bytes": freed}))
        else:
            print(f"removed {removed} files ({freed:,} bytes) from {directory}" if directory else "no cache directory")
        return 0
    if directory is None:
        info: dict[str, Any] = {
            "directory": None, "exists": False, "usable": False, "reason": f"{_cache.ENV_VAR} is empty",
            "entries": 0, "bytes": 0,
        }
    else:
        summary = _cache.summary(directory)
        info = {
            "directory": str(summary.directory), "exists": summary.exists, "usable": summary.usable,
            "reason": summary.reason,
            "entries": summary.entries, "bytes": summary.bytes,
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(printable(f"directory {info['directory'] or '(none)'}"))
    print(f"entries   {info['entries']} ({info['bytes']:,} bytes)")
    if not info["usable"]:
        print(printable(f"usable    no: {info['reason']}"))
    else:
        print("usable    yes" + ("" if info["exists"] else " (made on first load)"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(rows=args.rows)
    return 0


# ------------------------------------------------------------ store


def cmd_store(args: argparse.Namespace) -> int:
    if sum((bool(args.modules), args.list, bool(args.remove))) != 1:
        raise UsageError("give the modules to store, --list, or --remove NAME (one of them)")
    _check_database(args.db, args.create)
    if args.list and (args.trust or args.allow_unsigned):
        raise UsageError("--trust and --allow-unsigned are for storing modules, not --list")
    conn = _stored.open_database(args.db)
    try:
        execute = _stored.executor(conn)
        if args.list:
            return _list_stored(args.db, execute)
        if args.remove:
            return _remove_stored(args.db, conn, execute, args.remove)
        return _store(args, conn, execute)
    finally:
        conn.close()


def _store(args: argparse.Namespace, conn: Any, execute: _stored.Execute) -> int:
    """Every module is checked as it would be loaded (signature, manifest,
    exports, imports) before any is written: nothing stored fails to load
    for a reason of its own."""
    trusted = load_trusted_keys(args.trust)
    runtime = Runtime(trusted_keys=list(trusted.values()), allow_unsigned=args.allow_unsigned, grant=CAPABILITIES)
    checked: dict[str, tuple[str, Module, bytes]] = {}
    with _showing_logs():
        for spec in args.modules:
            data = _read(spec)
            if not data.startswith(b"\0asm"):
                raise Error(f"{spec} is not a wasm module")
            signature = check_signature(data)
            if signature is None and not args.allow_unsigned:
                raise SignatureError(
                    f"module {spec} is not signed: sign it with `sqlwasm sign {spec} --key NAME.key` "
                    "(or pass --allow-unsigned to store it unsigned, for development only)"
                )
            if signature is not None and signature.public_key.raw not in trusted and not args.allow_unsigned:
                raise SignatureError(
                    f"module {spec} is signed by key {signature.key_id}, which is not trusted: "
                    "pass --trust KEY.pub with its publisher's key"
                )
            module = runtime.load(data)
            if module.name in checked:
                raise Error(f"{checked[module.name][0]} and {spec} are both module '{module.name}'")
            checked[module.name] = (spec, module, data)
    with conn:  # one transaction: all stored, or none
        replaced = {
            name: _stored.write(execute, args.db, name, module.version, data)
            for name, (_, module, data) in checked.items()
        }
    for name, (spec, module, _) in checked.items():
        signer = f"signed by key {module.signer}" if module.signer else "unsigned"
        verb = "replaced" if replaced[name] else "stored"
        sha = module.sha256[:12]
        print(printable(f"{verb} {name} {module.version} from {spec} in {args.db} ({signer}, sha256 {sha})"))
    return 0


def _list_stored(db: str, execute: _stored.Execute) -> int:
    stored = _stored.read(execute, db)
    if not stored:
        print(printable(f"no modules stored in {db}"))
        return 0
    rows = []
    for module in stored:
        try:
            signature = check_signature(module.wasm)
            signer = signature.key_id if signature else "unsigned"
        except SignatureError:
            signer = "invalid signature"
        rows.append((module.name, module.version, module.sha256[:12], signer, len(module.wasm)))
    print(format_table(["name", "version", "sha256", "signer", "bytes"], rows))
    return 0


def _remove_stored(db: str, conn: Any, execute: _stored.Execute, names: list[str]) -> int:
    with conn:  # one transaction: all removed, or none
        for name in names:
            if not _stored.remove(execute, db, name):
                raise Error(f"no module {name!r} stored in {db}")
    for name in names:
        print(printable(f"removed {name} from {db}"))
    return 0


def _utf8(text: str) -> str:
    """An argument SQLite takes as text (SQL, a database name): a command
    line that was not UTF-8 reaches Python with surrogates in it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{printable(text)} is not valid UTF-8") from None
    return text


def _count(text: str) -> int:
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


def _add_database_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=_utf8, metavar="DB", help="database file (':memory:' for a temporary one)")
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


class _IntermixedParser(argparse.ArgumentParser):
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sqlwasm",
        description="Signed, sandboxed WebAssembly functions for SQLite.",
        epilog="`sqlwasm COMMAND --help` shows a command's options and an example. Exit status: 0 done, "
        "1 error, 2 usage error, 130 interrupted (Ctrl-C).",
    )
    top.add_argument("--version", action="version", version=f"sqlwasm {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_IntermixedParser)

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

    p = command("build", cmd_build, "compile a C or C++ guest with zig cc, check it and embed its manifest")
    p.add_argument(
        "source", nargs="+", metavar="SOURCE",
        help="the guest's source files, compiled into one module (.c; .cc, .cpp, .cxx for C++)",
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
    _add_database_options(p)
    p.add_argument("sql", type=_utf8, nargs="?", metavar="SQL", help="the SQL to run; - reads it from standard input")
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
    p.add_argument("--workers", type=_count, metavar="N", help="with --map: Dask worker processes (default: CPUs)")

    p = command("shell", cmd_shell, "APSW's interactive shell with modules loaded")
    _add_database_options(p)
    p.add_argument("sql", type=_utf8, nargs="?", metavar="SQL", help="run this SQL (or dot command) and exit")
    p.add_argument("--timer", action="store_true", help="print the time of each statement (the shell's .timer on)")

    p = command("demo", cmd_demo, "build a sample database and run near-data queries with the signed example modules")
    p.add_argument("--rows", type=_count, default=200_000, metavar="N", help="number of sample readings")

    p = command("cache", cmd_cache, "show (info) or empty (clear) the compiled-module cache")
    p.add_argument(
        "action", choices=("info", "clear"), metavar="info|clear",
        help="info: directory, entries, size and whether it is used (and why not); clear: remove every entry",
    )
    p.add_argument(
        "--dir", metavar="DIR",
        help=f"the cache directory (default: ${_cache.ENV_VAR}, else the user's cache directory)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("store", cmd_store, "store signed modules in a database, list them, or remove them")
    p.add_argument("db", type=_utf8, metavar="DB", help="the database file")
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
