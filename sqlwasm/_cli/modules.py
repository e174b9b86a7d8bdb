"""Commands on module files: keygen, sign, verify, inspect, pack, build, preinit."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from .. import _engine
from .._build import build, pack, write_module
from .._errors import Error, ManifestError, SignatureError
from .._manifest import MANIFEST_SECTION, manifest_from_json, manifest_from_toml
from .._signing import check_signature, generate_keypair, load_private_key, load_trusted_keys, sign
from .._table import printable
from .._wasmfile import MalformedModule, find_custom


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Error(f"cannot read {path}: {exc.strerror}") from exc


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, pub_path = generate_keypair(args.name, args.dir)
    print(f"wrote {key_path} (private: keep it secret) and {pub_path} (share it)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    signed = sign(read_file(args.module), load_private_key(args.key))
    out = args.output or args.module
    write_module(out, signed)
    signature = check_signature(signed)
    assert signature is not None
    print(f"signed {out} with key {signature.key_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    data = read_file(args.module)
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
    info = describe(read_file(args.module))
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
    write_module(args.output, pack(read_file(args.module), manifest_from_toml(args.manifest)))
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
    from .._preinit import preinit

    _check_output(args.output)
    snapshot = preinit(read_file(args.module), initializer=args.init)
    if args.key:
        snapshot = sign(snapshot, load_private_key(args.key))
    write_module(args.output, snapshot)
    print(f"wrote {args.output}" + ("" if args.key else " (unsigned: sign it with `sqlwasm sign`)"))
    return 0


