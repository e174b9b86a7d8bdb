"""The stdlib host's cost: `SELECT sum(f(a, b)) FROM t` over 1M integer rows
on Python's own sqlite3.Connection.

    python -m benchmarks.stdlib [--rows N] [--repeats K]

The same bench module installed with sqlwasm.install (raw and msgpack ABIs)
against a stdlib create_function Python UDF and SQLite's built-in `+`, one
process, one table, best of K. Writes benchmarks/results/stdlib.json.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import sqlwasm

from ._common import HERE, measure_interleaved, print_against, print_checks, signed_guest, workdir, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    with workdir() as tmp:
        wasm, pub = signed_guest(HERE / "guests" / "bench.c", HERE / "guests" / "bench.toml", Path(tmp))
        conn = sqlite3.connect(":memory:")
        sqlwasm.install(conn, [wasm], trusted_keys=[pub])
        conn.create_function("py_add", 2, lambda a, b: a + b, deterministic=True)
        conn.execute("CREATE TABLE t(a INTEGER, b INTEGER)")
        conn.execute(
            "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "SELECT i, i * 7 FROM c",
            (args.rows,),
        )
        expected = conn.execute("SELECT sum(a + b) FROM t").fetchall()[0][0]
        variants = {
            "built-in +": "a + b",
            "Python UDF": "py_add(a, b)",
            "wasm raw": "bench_add_raw(a, b)",
            "wasm msgpack": "bench_add_msgpack(a, b)",
        }
        queries = {label: (f"SELECT sum({expr}) FROM t", args.rows, expected) for label, expr in variants.items()}
        ns_per_row = measure_interleaved(conn, queries, args.repeats)
        conn.close()

    print(f"stdlib sqlite3 {sqlite3.sqlite_version}: SELECT sum(f(a, b)) over {args.rows:,} rows, "
          f"best of {args.repeats}")
    ratios = print_against(ns_per_row, "Python UDF")
    speedup = ns_per_row["Python UDF"] / ns_per_row["wasm raw"]
    print(f"  Python UDF / wasm raw: {speedup:.2f}x")
    checks = {"wasm raw >= 2x faster than a stdlib Python UDF": speedup >= 2.0}
    print_checks(checks)
    path = write_results(
        "stdlib",
        {"rows": args.rows, "repeats": args.repeats, "ns_per_row": ns_per_row, "ratios": ratios, "targets_met": checks},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
