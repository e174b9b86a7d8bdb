"""AssemblyScript against C: the same function, the same host, one process.

    python -m benchmarks.assemblyscript [--rows N] [--repeats K]

`SELECT sum(f(lat1, lon1, lat2, lon2)) FROM t` over N rows of points, with
f the shipped geo module's geo_haversine (C, zig cc -O2) and geo_as's
geo_as_haversine (AssemblyScript, asc -O3), both raw ABI, and SQLite's own
arithmetic on the columns as the floor. Also the cost per row of geo_as's
msgpack window aggregate geo_as_centroid. Best of K, interleaved.
Writes benchmarks/results/assemblyscript.json.
"""

from __future__ import annotations

import argparse
import math

from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm

from ._common import measure_interleaved, print_against, print_checks, write_results

TARGET = 1.2  # geo_as_haversine / geo_haversine, per row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    conn = sqlwasm.connect(":memory:", [module_path("geo"), module_path("geo_as")], trusted_keys=[EXAMPLES_PUBLIC_KEY])
    # Points spread over the globe, deterministic: a Weyl sequence per coordinate.
    conn.execute(
        "CREATE TABLE t(lat1 REAL, lon1 REAL, lat2 REAL, lon2 REAL); "
        "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
        "SELECT (i * 0.6180339887 % 1) * 180 - 90, (i * 0.4142135623 % 1) * 360 - 180, "
        "(i * 0.7320508075 % 1) * 180 - 90, (i * 0.2360679774 % 1) * 360 - 180 FROM c",
        (args.rows,),
    )
    expressions = {
        "SQL arithmetic": "sum(lat1 + lon1 + lat2 + lon2)",
        "C geo_haversine": "sum(geo_haversine(lat1, lon1, lat2, lon2))",
        "AS geo_as_haversine": "sum(geo_as_haversine(lat1, lon1, lat2, lon2))",
        "AS geo_as_centroid (msgpack window aggregate)": "geo_as_centroid(lat1, lon1)",
    }
    queries = {}
    for label, expression in expressions.items():
        sql = f"SELECT {expression} FROM t"
        queries[label] = (sql, args.rows, conn.execute(sql).fetchall()[0][0])
    c_sum, as_sum = queries["C geo_haversine"][2], queries["AS geo_as_haversine"][2]
    if not math.isclose(c_sum, as_sum, rel_tol=1e-12):
        raise SystemExit(f"the two haversines disagree: C {c_sum!r}, AssemblyScript {as_sum!r}")

    ns_per_row = measure_interleaved(conn, queries, args.repeats)
    print(f"SELECT f(lat1, lon1, lat2, lon2) over {args.rows:,} rows, best of {args.repeats}")
    ratios = print_against(ns_per_row, "C geo_haversine")
    ratio = ns_per_row["AS geo_as_haversine"] / ns_per_row["C geo_haversine"]
    checks = {f"AssemblyScript haversine within {TARGET}x of C per row": ratio <= TARGET}
    print_checks(checks)
    path = write_results(
        "assemblyscript",
        {
            "rows": args.rows, "repeats": args.repeats, "ns_per_row": ns_per_row, "ratios": ratios,
            "as_over_c": ratio, "target": TARGET, "targets_met": checks,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
