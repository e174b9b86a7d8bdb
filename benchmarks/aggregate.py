"""Aggregate cost: `SELECT agg(x) FROM t` over 1M integer rows.

    python -m benchmarks.aggregate [--rows N] [--repeats K]

Built-in sum, a native C aggregate, a Python aggregate class, and the wasm sum
aggregate through the raw ABI (with and without a step_batch export) and the
msgpack ABI; one process, one table, best of K.
Writes benchmarks/results/aggregate.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sqlwasm

from ._common import (
    HERE,
    load_baseline_udf,
    measure_interleaved,
    print_against,
    print_checks,
    signed_guest,
    workdir,
    write_results,
)


class PythonSum:
    """The Python aggregate baseline (APSW's aggregate class protocol)."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, x: Any) -> None:
        if x is not None:
            self.total += x

    def final(self) -> int:
        return self.total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    with workdir() as tmp:
        tmpdir = Path(tmp)
        wasm, pub = signed_guest(HERE / "guests" / "bench.c", HERE / "guests" / "bench.toml", tmpdir)
        conn = sqlwasm.Runtime(trusted_keys=[pub]).connect(":memory:", [wasm])
        load_baseline_udf(conn, tmpdir)
        conn.create_aggregate_function("py_sum", PythonSum, 1)
        conn.execute(
            "CREATE TABLE t(x INTEGER); "
            "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "SELECT i * 3 FROM c",
            (args.rows,),
        )
        expected = conn.execute("SELECT sum(x) FROM t").fetchall()[0][0]
        variants = {
            "builtin sum": "sum(x)",
            "C aggregate": "c_sum(x)",
            "Python aggregate": "py_sum(x)",
            "wasm raw aggregate": "bench_sum_raw(x)",
            "wasm raw, no step_batch": "bench_sum_raw_unbatched(x)",
            "wasm msgpack aggregate": "bench_sum_msgpack(x)",
        }
        queries = {label: (f"SELECT {expr} FROM t", args.rows, expected) for label, expr in variants.items()}
        ns_per_row = measure_interleaved(conn, queries, args.repeats)
        conn.close()

    print(f"SELECT agg(x) over {args.rows:,} rows, best of {args.repeats}")
    ratios = print_against(ns_per_row, "C aggregate")
    ratios["Python aggregate / wasm raw aggregate"] = ns_per_row["Python aggregate"] / ns_per_row["wasm raw aggregate"]
    checks = {
        "wasm raw aggregate <= 1.6x C aggregate": ratios["wasm raw aggregate / C aggregate"] <= 1.6,
        "wasm raw aggregate >= 3x faster than Python": ratios["Python aggregate / wasm raw aggregate"] >= 3.0,
    }
    print(f"  Python aggregate / wasm raw aggregate: {ratios['Python aggregate / wasm raw aggregate']:.2f}x")
    print_checks(checks)
    path = write_results(
        "aggregate",
        {"rows": args.rows, "repeats": args.repeats, "ns_per_row": ns_per_row, "ratios": ratios, "targets_met": checks},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
