"""Rebuilds and re-signs the shipped example modules.

    python -m sqlwasm.extensions.rebuild          # rewrite every .wasm
    python -m sqlwasm.extensions.rebuild --check  # exit 1 if any differs

zig cc output is reproducible and ed25519 signatures are deterministic, so a
rebuild gives byte-identical files; tests/test_extensions.py checks that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlwasm.extensions import ROOT, module_path

from sqlwasm._build import build, write_module

SHIPPED = ("geo",)
EXAMPLES_KEY = ROOT / "keys" / "examples.key"


def rebuild(name: str) -> bytes:
    directory = ROOT / name
    return build(directory / f"{name}.c", directory / f"{name}.toml", key=EXAMPLES_KEY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("names", nargs="*", default=list(SHIPPED))
    args = parser.parse_args(argv)
    stale = []
    for name in args.names:
        data = rebuild(name)
        path: Path = module_path(name)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(name)
        else:
            write_module(path, data)
            print(f"wrote {path} ({len(data)} bytes)")
    if stale:
        print(f"out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
