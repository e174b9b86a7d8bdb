"""Scalar function cost: `SELECT sum(f(a, b)) FROM t` over 1M integer rows.

    python -m benchmarks.scalar [--rows N] [--repeats K]

All variants run in one process against one table, best of K. Ratios are
against the native C UDF (the thing sqlwasm competes with). Also measures
loading geo (verify + compile) and installing it into a new connection.
Writes benchmarks/results/scalar.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import apsw
import wasmtime
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm

from ._common import (
    HERE,
    best_of,
    load_baseline_udf,
    measure_interleaved,
    print_against,
    print_checks,
    signed_guest,
    workdir,
    write_results,
)

TARGETS = {"wasm raw / C UDF": 1.6, "wasm msgpack / C UDF": 3.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-rows", type=int, default=20_000, help="rows for the slow wasmtime-py path")
    args = parser.parse_args(argv)

    with workdir() as tmp:
        tmpdir = Path(tmp)
        wasm, pub = signed_guest(HERE / "guests" / "bench.c", HERE / "guests" / "bench.toml", tmpdir)
        runtime = sqlwasm.Runtime(trusted_keys=[pub])
        conn = runtime.connect(":memory:", [wasm])
        load_baseline_udf(conn, tmpdir)
        conn.create_scalar_function("py_add", lambda a, b: a + b, 2, deterministic=True)

        # The naive path: a Python UDF calling a wasmtime-py Func.
        store = wasmtime.Store()
        naive_module = wasmtime.Module(store.engine, wasm)
        naive_add = wasmtime.Instance(store, naive_module, []).exports(store)["add_raw"]
        assert isinstance(naive_add, wasmtime.Func)
        conn.create_scalar_function("naive_add", lambda a, b: naive_add(store, a, b), 2)

        conn.execute(
            "CREATE TABLE t(a INTEGER, b INTEGER); "
            "INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "SELECT i, i * 7 FROM c",
            (args.rows,),
        )
        conn.execute(
            "CREATE TABLE small AS SELECT a, b FROM t LIMIT ?", (args.naive_rows,)
        )
        expected = conn.execute("SELECT sum(a + b) FROM t").fetchall()[0][0]
        expected_small = conn.execute("SELECT sum(a + b) FROM small").fetchall()[0][0]

        variants = {
            "builtin a+b": ("a + b", "t"),
            "C UDF": ("c_add(a, b)", "t"),
            "Python UDF": ("py_add(a, b)", "t"),
            "wasm raw": ("bench_add_raw(a, b)", "t"),
            "wasm msgpack": ("bench_add_msgpack(a, b)", "t"),
            "wasm_call raw": ("wasm_call('bench', 'add_raw', a, b)", "t"),
            "wasmtime-py Func from Python": ("naive_add(a, b)", "small"),
        }
        queries = {
            label: (f"SELECT sum({expr}) FROM {table}", args.rows, expected)
            if table == "t"
            else (f"SELECT sum({expr}) FROM {table}", args.naive_rows, expected_small)
            for label, (expr, table) in variants.items()
        }
        # The naive path is slow: once is enough.
        ns_per_row = measure_interleaved(conn, queries, args.repeats, once={"wasmtime-py Func from Python"})
        conn.close()

        # Lifecycle: verify + compile the shipped geo module; install into a new connection.
        geo_path = module_path("geo")
        load_s, _ = best_of(args.repeats, lambda: sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY]).load(geo_path))
        geo_runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY])
        geo = geo_runtime.load(geo_path)
        connections: list[apsw.Connection] = []

        def install() -> None:
            c = apsw.Connection(":memory:")
            connections.append(c)
            geo_runtime.install(c, geo)

        install()  # first use warms the extension load
        install_s, _ = best_of(20, install)
        for c in connections:
            c.close()

    print(f"SELECT sum(f(a, b)) over {args.rows:,} rows, best of {args.repeats}")
    ratios = print_against(ns_per_row, "C UDF")
    ratios["Python UDF / wasm raw"] = ns_per_row["Python UDF"] / ns_per_row["wasm raw"]
    print(f"  Python UDF / wasm raw: {ratios['Python UDF / wasm raw']:.2f}x (target >= 2)")
    print(f"load geo (verify + compile): {load_s * 1e3:.1f} ms (target <= 50)")
    print(f"install geo into a new connection: {install_s * 1e3:.3f} ms (target <= 1)")
    checks = {
        "wasm raw <= 1.6x C UDF": ratios["wasm raw / C UDF"] <= 1.6,
        "wasm msgpack <= 3x C UDF": ratios["wasm msgpack / C UDF"] <= 3.0,
        "wasm raw >= 2x faster than Python UDF": ratios["Python UDF / wasm raw"] >= 2.0,
        "load geo <= 50 ms": load_s <= 0.050,
        "install <= 1 ms": install_s <= 0.001,
    }
    print_checks(checks)
    path = write_results(
        "scalar",
        {
            "rows": args.rows,
            "repeats": args.repeats,
            "ns_per_row": ns_per_row,
            "ratios": ratios,
            "load_geo_ms": load_s * 1e3,
            "install_ms": install_s * 1e3,
            "targets_met": checks,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
