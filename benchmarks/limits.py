"""What the sandbox's limits cost per row, as ratios against the unlimited path.

    python -m benchmarks.limits [--rows N] [--repeats K]

Three configurations of the same modules, in one process, best of K:
no time limit and no fuel; the default time limit (5 s per call); the default
time limit plus fuel metering (1e9 per call). Measured on a trivial raw scalar
(call overhead), a raw aggregate, and geo_haversine (real guest compute, where
fuel instrumentation shows). Writes benchmarks/results/limits.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm

from ._common import HERE, best_of, signed_guest, workdir, write_results

CONFIGS: dict[str, dict[str, Any]] = {
    "unlimited": {"timeout_ms": None},
    "timeout": {},  # the default timeout_ms
    "timeout + fuel": {"fuel": 1_000_000_000},
}
QUERIES = {
    "raw scalar a+b": "SELECT sum(bench_add_raw(a, b)) FROM t",
    "raw aggregate": "SELECT bench_sum_raw(a) FROM t",
    "geo_haversine": "SELECT sum(geo_haversine(a % 90, b % 180, 51.5, -0.12)) FROM t",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    ns_per_row: dict[str, dict[str, float]] = {q: {c: float("inf") for c in CONFIGS} for q in QUERIES}
    with workdir() as tmp:
        wasm, pub = signed_guest(HERE / "guests" / "bench.c", HERE / "guests" / "bench.toml", Path(tmp))
        connections = {}
        for config, options in CONFIGS.items():
            runtime = sqlwasm.Runtime(trusted_keys=[pub, EXAMPLES_PUBLIC_KEY], **options)
            conn = runtime.connect(":memory:", [wasm, module_path("geo")])
            conn.execute(
                "CREATE TABLE t(a INTEGER, b INTEGER); "
                "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                "SELECT i, i * 7 FROM c",
                (args.rows,),
            )
            connections[config] = conn
        # Interleave the configurations so that machine noise hits them alike.
        for _ in range(args.repeats):
            for label, sql in QUERIES.items():
                for config, conn in connections.items():
                    seconds, _ = best_of(1, lambda: conn.execute(sql).fetchall())
                    ns_per_row[label][config] = min(ns_per_row[label][config], seconds / args.rows * 1e9)
        for conn in connections.values():
            conn.close()

    ratios = {q: {c: ns / row["unlimited"] for c, ns in row.items()} for q, row in ns_per_row.items()}
    print(f"cost of limits over {args.rows:,} rows, best of {args.repeats} (ns/row, x unlimited)")
    print(f"  {'query':16}" + "".join(f"{c:>24}" for c in CONFIGS))
    for label, row in ns_per_row.items():
        cells = "".join(f"{row[c]:>14.1f} ({ratios[label][c]:4.2f}x)" for c in CONFIGS)
        print(f"  {label:16}{cells}")
    path = write_results(
        "limits", {"rows": args.rows, "repeats": args.repeats, "ns_per_row": ns_per_row, "ratios": ratios}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
