"""The `sqlwasm` command line."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import _engine
from . import _host_apsw as _host
from ._build import CompileError, build, pack, write_module
from ._errors import Error, ManifestError, SignatureError
from ._manifest import MANIFEST_SECTION, manifest_from_json, manifest_from_toml
from ._runtime import Runtime
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


def cmd_build(args: argparse.Namespace) -> int:
    write_module(args.output, build(args.source, args.manifest, key=args.key))
    print(f"wrote {args.output}" + ("" if args.key else " (unsigned)"))
    return 0


def _open(args: argparse.Namespace) -> Any:
    runtime = Runtime(trusted_keys=args.trust, allow_unsigned=args.allow_unsigned)
    return runtime.connect(args.db, args.load)


def cmd_query(args: argparse.Namespace) -> int:
    conn = _open(args)
    try:
        names, rows = _host.query(conn, args.sql)
    except UnicodeDecodeError as exc:  # APSW decodes every TEXT value as UTF-8
        raise Error(
            f"a result is TEXT that is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "CAST it AS BLOB to see its bytes"
        ) from exc
    finally:
        conn.close()
    if args.json:
        print(json.dumps([{n: cell_text(v) for n, v in zip(names, row)} for row in rows], indent=1))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([[cell_text(v) for v in row] for row in rows])
    else:
        table = format_table(names, rows)
        if table:
            print(table)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    _host.interactive_shell(_open(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    run_demo(rows=args.rows)
    return 0


def _utf8(text: str) -> str:
    """An argument SQLite takes as text (SQL, a database name): a command
    line that was not UTF-8 reaches Python with surrogates in it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{printable(text)} is not valid UTF-8") from None
    return text


def _add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=_utf8, metavar="DB", help="database file (':memory:' for a temporary one)")
    p.add_argument("--load", action="append", default=[], metavar="MODULE", help="module to load (repeatable)")
    p.add_argument("--trust", action="append", default=[], metavar="KEY.pub", help="trusted public key (repeatable)")
    p.add_argument(
        "--allow-unsigned", action="store_true", help="load modules without a trusted signature (development only)"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="sqlwasm", description="Signed, sandboxed WebAssembly functions for SQLite.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("keygen", cmd_keygen, "create an ed25519 signing key pair: NAME.key and NAME.pub")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", metavar="DIR", help="directory to write the keys to")

    p = command("sign", cmd_sign, "sign a module (in place unless -o is given)")
    p.add_argument("module", metavar="MODULE")
    p.add_argument("--key", required=True, metavar="NAME.key")
    p.add_argument("-o", "--output", metavar="OUT")

    p = command("verify", cmd_verify, "check a module's signature against trusted keys (exit status 0 if trusted)")
    p.add_argument("module", metavar="MODULE")
    p.add_argument("--trust", action="append", default=[], required=True, metavar="NAME.pub")

    p = command("inspect", cmd_inspect, "show a module's manifest, exports, imports, signer and sha256")
    p.add_argument("module", metavar="MODULE")
    p.add_argument("--json", action="store_true")

    p = command("pack", cmd_pack, "embed a TOML manifest into a module (replacing any)")
    p.add_argument("module", metavar="MODULE")
    p.add_argument("manifest", metavar="MANIFEST.toml")
    p.add_argument("-o", "--output", required=True, metavar="OUT")

    p = command("build", cmd_build, "compile a C guest with zig cc and embed its manifest")
    p.add_argument("source", metavar="SOURCE.c")
    p.add_argument("--manifest", required=True, metavar="MANIFEST.toml")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--key", metavar="NAME.key", help="also sign with this key")

    p = command("query", cmd_query, "run one SQL statement with modules loaded")
    _add_load_options(p)
    p.add_argument("sql", type=_utf8, metavar="SQL")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")

    p = command("shell", cmd_shell, "APSW's interactive shell with modules loaded")
    _add_load_options(p)

    p = command("demo", cmd_demo, "build a sample database and run near-data queries with the signed example modules")
    p.add_argument("--rows", type=int, default=200_000, metavar="N", help="number of sample readings")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CompileError as exc:  # the one line, then the compiler's own words
        print(f"sqlwasm: error: {printable(exc.summary)}\n{exc.diagnostics}", file=sys.stderr)
        return 1
    except (Error, _host.HostError) as exc:
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
