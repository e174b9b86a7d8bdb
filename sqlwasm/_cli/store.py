"""`sqlwasm store`, `sqlwasm cache` and `sqlwasm demo`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import _cache, _stored
from .._errors import Error, SignatureError
from .._manifest import CAPABILITIES
from .._runtime import Module, Runtime
from .._signing import check_signature, load_trusted_keys
from .._table import format_table, printable
from .loading import check_database, showing_logs
from .modules import read_file
from .options import UsageError


def cmd_cache(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir is not None else _cache.user_cache_dir()
    if args.action == "clear":
        if directory is None:
            removed, freed, kept = 0, 0, {}
        else:
            removed, freed = _cache.clear(directory, with_toolchains=args.toolchains)
            kept = _cache.toolchains(directory)
        if args.json:
            print(json.dumps({
                "directory": str(directory) if directory else None, "removed": removed, "bytes": freed,
                "kept_toolchains": kept,
            }))
        elif directory is None:
            print("no cache directory")
        else:
            what = "files and toolchains" if args.toolchains else "files"
            print(printable(f"removed {removed} {what} ({freed:,} bytes) from {directory}"))
            if kept:
                print(printable(f"kept the toolchains {_sizes(kept)}: remove them too with --toolchains"))
        return 0
    if args.toolchains:
        raise UsageError("--toolchains is for `sqlwasm cache clear`")
    if directory is None:
        info: dict[str, Any] = {
            "directory": None, "exists": False, "usable": False, "reason": f"{_cache.ENV_VAR} is empty",
            "entries": 0, "bytes": 0, "toolchains": {},
        }
    else:
        summary = _cache.summary(directory)
        info = {
            "directory": str(summary.directory), "exists": summary.exists, "usable": summary.usable,
            "reason": summary.reason,
            "entries": summary.entries, "bytes": summary.bytes, "toolchains": _cache.toolchains(directory),
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(printable(f"directory {info['directory'] or '(none)'}"))
    print(f"entries   {info['entries']} ({info['bytes']:,} bytes)")
    if info["toolchains"]:
        print(printable(f"toolchains {_sizes(info['toolchains'])}"))
    if not info["usable"]:
        print(printable(f"usable    no: {info['reason']}"))
    else:
        print("usable    yes" + ("" if info["exists"] else " (made on first load)"))
    return 0


def _sizes(toolchains: dict[str, int]) -> str:
    return ", ".join(f"{name} ({size:,} bytes)" for name, size in toolchains.items())


def cmd_demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    run_demo(rows=args.rows)
    return 0


# ------------------------------------------------------------ store


def cmd_store(args: argparse.Namespace) -> int:
    if sum((bool(args.modules), args.list, bool(args.remove))) != 1:
        raise UsageError("give the modules to store, --list, or --remove NAME (one of them)")
    check_database(args.db, args.create)
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
    with showing_logs():
        for spec in args.modules:
            data = read_file(spec)
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


