"""Table function cost: `SELECT sum(value) FROM f(N)` producing 1M integer rows.

    python -m benchmarks.table [--rows N] [--repeats K]

A wasm table function (bench_range, rows handed over in batches), the same
rows from a Python virtual table (apsw.ext.make_virtual_module over a
generator), and the built-in json_each over a JSON array of the same
integers (bound as text, so its per-row figure includes parsing it); one
process, best of K. Writes benchmarks/results/table.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator

import apsw.ext

import sqlwasm

from ._common import HERE, measure_interleaved, print_against, print_checks, signed_guest, workdir, write_results


def py_range(n: int) -> Iterator[tuple[int]]:
    """The Python virtual table baseline: the integers 0..n-1."""
    for i in range(n):
        yield (i,)


py_range.columns = ("value",)  # type: ignore[attr-defined]
py_range.column_access = apsw.ext.VTColumnAccess.By_Index  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.rows

    with workdir() as tmp:
        wasm, pub = signed_guest(HERE / "guests" / "bench.c", HERE / "guests" / "bench.toml", Path(tmp))
        conn = sqlwasm.Runtime(trusted_keys=[pub]).connect(":memory:", [wasm])
        apsw.ext.make_virtual_module(conn, "py_range", py_range)
        conn.execute("CREATE TEMP TABLE arrays(json TEXT)")
        conn.execute("INSERT INTO arrays VALUES (?)", (json.dumps(list(range(n))),))
        expected = n * (n - 1) // 2
        queries = {
            "json_each": ("SELECT sum(value) FROM arrays, json_each(arrays.json)", n, expected),
            "wasm table function": (f"SELECT sum(value) FROM bench_range({n})", n, expected),
            "Python virtual table": (f"SELECT sum(value) FROM py_range({n})", n, expected),
        }
        ns_per_row = measure_interleaved(conn, queries, args.repeats, once={"Python virtual table"})
        conn.close()

    print(f"SELECT sum(value) FROM f({n:,}), best of {args.repeats}")
    ratios = print_against(ns_per_row, "json_each")
    ratios["Python virtual table / wasm table function"] = (
        ns_per_row["Python virtual table"] / ns_per_row["wasm table function"]
    )
    print(f"  Python virtual table / wasm table function: {ratios['Python virtual table / wasm table function']:.2f}x")
    checks = {
        "wasm table function >= 5x the Python virtual table": ratios["Python virtual table / wasm table function"] >= 5,
        "wasm table function <= 2x json_each per row": ratios["wasm table function / json_each"] <= 2,
    }
    print_checks(checks)
    path = write_results(
        "table",
        {"rows": n, "repeats": args.repeats, "ns_per_row": ns_per_row, "ratios": ratios, "targets_met": checks},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
