"""One function in every guest language, one host, one process: geo_haversine
in C (the shipped geo module, raw ABI), AssemblyScript (geo_as, raw ABI)
and JavaScript (QuickJS inside the module, msgpack ABI: the only one a JS
guest has), with SQLite's own arithmetic on the columns as the floor.

    python -m benchmarks.languages [--rows N] [--repeats K]

Best of K, interleaved. The JS module is built here (the engine from the
user cache, built there on first use). Writes benchmarks/results/languages.json;
benchmarks.preinit and benchmarks.javascript measure what pre-initialization
saves.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm._build import build
from sqlwasm._signing import generate_keypair, load_private_key, sign

from ._common import measure_interleaved, print_against, workdir, write_results
from .javascript import MANIFEST as JS_MANIFEST
from .javascript import SOURCE as JS_SOURCE

EXPRESSIONS = {
    "SQL arithmetic": "sum(lat1 + lon1 + lat2 + lon2)",
    "C geo_haversine": "sum(geo_haversine(lat1, lon1, lat2, lon2))",
    "AssemblyScript geo_as_haversine": "sum(geo_as_haversine(lat1, lon1, lat2, lon2))",
    "JavaScript js_haversine": "sum(js_haversine(lat1, lon1, lat2, lon2))",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    with workdir() as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "bench.js").write_text(JS_SOURCE)
        (tmpdir / "bench.toml").write_text(JS_MANIFEST)
        key, pub = generate_keypair("bench", tmpdir)
        js = sign(build(tmpdir / "bench.js", tmpdir / "bench.toml"), load_private_key(key))
        conn = sqlwasm.connect(
            ":memory:", [module_path("geo"), module_path("geo_as"), js], trusted_keys=[EXAMPLES_PUBLIC_KEY, pub]
        )
        # Points spread over the globe, deterministic: a Weyl sequence per coordinate.
        conn.execute(
            "CREATE TABLE t(lat1 REAL, lon1 REAL, lat2 REAL, lon2 REAL); "
            "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "SELECT (i * 0.6180339887 % 1) * 180 - 90, (i * 0.4142135623 % 1) * 360 - 180, "
            "(i * 0.7320508075 % 1) * 180 - 90, (i * 0.2360679774 % 1) * 360 - 180 FROM c",
            (args.rows,),
        )
        queries = {}
        for label, expression in EXPRESSIONS.items():
            sql = f"SELECT {expression} FROM t"
            queries[label] = (sql, args.rows, conn.execute(sql).fetchall()[0][0])
        reference = queries["C geo_haversine"][2]
        for label in ("AssemblyScript geo_as_haversine", "JavaScript js_haversine"):
            if not math.isclose(queries[label][2], reference, rel_tol=1e-9):
                raise SystemExit(f"{label} disagrees with C: {queries[label][2]!r} != {reference!r}")
        ns_per_row = measure_interleaved(conn, queries, args.repeats)
        conn.close()
    print(f"SELECT sum(haversine(lat1, lon1, lat2, lon2)) over {args.rows:,} rows, best of {args.repeats}")
    ratios = print_against(ns_per_row, "C geo_haversine")
    path = write_results(
        "languages", {"rows": args.rows, "repeats": args.repeats, "ns_per_row": ns_per_row, "ratios": ratios}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
