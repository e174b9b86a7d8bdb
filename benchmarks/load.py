"""What the compiled-module cache saves: loading a module cold (verify,
compile) against warm (verify, read the cached code, deserialize).

    python -m benchmarks.load [--repeats K]

One process, best of K, cold and warm interleaved so that machine noise hits
both alike. Each load is a new Runtime (nothing compiled in memory): cold
ones have no disk cache (cache_dir=None), warm ones a private temporary
cache holding the module's entry. Modules: the shipped geo, and a generated
~1 MB module of many functions (real compile work: a table of 1,800
functions, each a chain of 64-bit arithmetic). The wasmtime engine itself
is made before timing starts (once per process either way). Writes
benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm._manifest import embed_manifest, parse_manifest
from sqlwasm._signing import sign

from ._common import best_of, print_checks, workdir, write_results

BIG_FUNCTIONS = 1_800
TARGETS_MS = {"geo": 5.0, "1 MB module": 10.0}


def big_module_wat(functions: int, seed: int = 1) -> str:
    """A module whose export f(x) calls function x mod `functions` through a
    table, so that every function is live code the compiler must translate."""
    rng = random.Random(seed)
    parts = ['(module (type $t (func (param i64) (result i64))) (memory (export "memory") 1)']
    for index in range(functions):
        body = ["local.get 0"]
        for _ in range(24):
            body += [f"i64.const {rng.getrandbits(62)}", "i64.mul", f"i64.const {rng.getrandbits(40)}", "i64.xor"]
            body += [f"i64.const {rng.randrange(1, 63)}", "i64.rotl"]
        parts.append(f"(func $f{index} (type $t) {' '.join(body)})")
    names = " ".join(f"$f{i}" for i in range(functions))
    parts.append(f"(table {functions} {functions} funcref) (elem (i32.const 0) func {names})")
    parts.append(
        '(func (export "f") (param i64) (result i64) (call_indirect (type $t) (local.get 0)'
        f" (i32.wrap_i64 (i64.rem_u (local.get 0) (i64.const {functions})))))"
    )
    return "\n".join(parts) + ")"


def big_module(key: Ed25519PrivateKey) -> bytes:
    manifest = parse_manifest(
        {
            "sqlwasm": 1,
            "name": "big",
            "version": "1.0.0",
            "functions": [{"name": "big_f", "abi": "raw", "args": ["integer"], "returns": "integer", "export": "f"}],
        }
    )
    return sign(embed_manifest(wasmtime.wat2wasm(big_module_wat(BIG_FUNCTIONS)), manifest), key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    key = Ed25519PrivateKey.generate()
    trusted = [EXAMPLES_PUBLIC_KEY, key.public_key()]
    modules = {"geo": module_path("geo").read_bytes(), "1 MB module": big_module(key)}
    queries = {"geo": "SELECT round(geo_haversine(0, 0, 0, 1), 3)", "1 MB module": "SELECT big_f(12345)"}
    results: dict[str, dict[str, Any]] = {}
    with workdir() as tmp:
        cache_dir = Path(tmp) / "cache"
        for label, data in modules.items():
            # Fills the cache, and checks that cached code answers as compiled code does.
            compiled = sqlwasm.Runtime(trusted_keys=trusted, cache_dir=cache_dir).connect(":memory:", [data])
            cached = sqlwasm.Runtime(trusted_keys=trusted, cache_dir=cache_dir).connect(":memory:", [data])
            expected, got = (c.execute(queries[label]).fetchone()[0] for c in (compiled, cached))
            if expected != got:
                raise SystemExit(f"{label}: cached code answered {got}, compiled code {expected}")
            seconds = {"cold": float("inf"), "warm": float("inf")}
            for _ in range(args.repeats):
                for mode, where in (("cold", None), ("warm", cache_dir)):
                    took, _ = best_of(1, lambda: sqlwasm.Runtime(trusted_keys=trusted, cache_dir=where).load(data))
                    seconds[mode] = min(seconds[mode], took)
            results[label] = {
                "module_bytes": len(data),
                "cold_ms": seconds["cold"] * 1e3,
                "warm_ms": seconds["warm"] * 1e3,
                "cold / warm": seconds["cold"] / seconds["warm"],
            }
        entry_bytes = sorted(p.stat().st_size for p in cache_dir.iterdir())

    print(f"module load, new Runtime each time, best of {args.repeats} (ms)")
    print(f"  {'module':14} {'bytes':>10} {'cold':>10} {'warm':>8} {'cold/warm':>10}")
    for label, row in results.items():
        print(
            f"  {label:14} {row['module_bytes']:>10,} {row['cold_ms']:>10.2f} {row['warm_ms']:>8.2f}"
            f" {row['cold / warm']:>9.1f}x"
        )
    print(f"  cache entries: {', '.join(f'{size:,}' for size in entry_bytes)} bytes")
    checks = {f"{label} warm <= {ms:g} ms": results[label]["warm_ms"] <= ms for label, ms in TARGETS_MS.items()}
    print_checks(checks)
    path = write_results(
        "load",
        {"repeats": args.repeats, "modules": results, "cache_entry_bytes": entry_bytes, "targets_met": checks},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
