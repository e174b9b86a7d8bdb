"""Rebuilds and re-signs the shipped example modules (a tool for this
repository, not part of the package: it needs extensions/keys/examples.key,
which is not installed).

    python tools/rebuild_extensions.py            # rewrite every .wasm
    python tools/rebuild_extensions.py --check    # exit 1 if any differs

zig cc output is reproducible and ed25519 signatures are deterministic, so a
rebuild gives byte-identical files; tests/test_extensions.py checks that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlwasm._build import build, write_module

SHIPPED = ("geo", "geo_as", "graph", "stats", "text")
EXTENSIONS = Path(__file__).resolve().parents[1] / "extensions"


def rebuild(name: str, root: Path = EXTENSIONS) -> bytes:
    """extensions/NAME/NAME.c (or NAME.ts, AssemblyScript) + NAME.toml, built and signed with the examples key."""
    directory = root / name
    source = directory / f"{name}.c"
    if not source.exists():
        source = directory / f"{name}.ts"
    return build(source, directory / f"{name}.toml", key=root / "keys" / "examples.key")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--root", type=Path, default=EXTENSIONS, help="the extensions/ directory")
    parser.add_argument("names", nargs="*", default=list(SHIPPED))
    args = parser.parse_args(argv)
    stale = []
    for name in args.names:
        data = rebuild(name, args.root)
        path = args.root / name / f"{name}.wasm"
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
