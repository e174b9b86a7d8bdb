"""Shards on Dask: one query over 8 SQLite shards, in one process vs. on a
dask.distributed cluster of 2 worker processes.

    python -m benchmarks.distributed [--rows N] [--shards K] [--workers W] [--tiny T] [--repeats R]

The query keeps the readings a scalar wasm filter (geo_haversine) lets
through and takes their median per country (stats_median), as map_sql on
each shard and reduce_sql over table map: through stats_median_partial /
stats_median_merge when the stats module has them, otherwise shipping the
filtered rows. It prints the speed-up, the bytes each shard sends back
against its size (median, variance, raw rows), and the cost per shard of
many tiny shards (1,000 rows), grouped into few tasks.
Writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import apsw
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm import distributed

from ._common import print_checks, workdir, write_results

MODULES = [module_path("geo"), module_path("stats")]
KEYS = [EXAMPLES_PUBLIC_KEY]
COUNTRIES = [
    ("GB", 51.5, -0.1), ("FR", 48.9, 2.4), ("DE", 52.5, 13.4), ("ES", 40.4, -3.7), ("IT", 41.9, 12.5),
    ("NL", 52.4, 4.9), ("BE", 50.9, 4.4), ("IE", 53.3, -6.3), ("PL", 52.2, 21.0), ("SE", 59.3, 18.1),
    ("PT", 38.7, -9.1), ("AT", 48.2, 16.4),
]  # fmt: skip
NEAR = "geo_haversine(lat, lon, 51.5074, -0.1278) < 1500"  # the scalar wasm filter
PARTIAL_QUERY = (
    f"SELECT country, stats_median_partial(pm25) AS part FROM readings WHERE {NEAR} GROUP BY country",
    "SELECT country, stats_median_merge(part) FROM map GROUP BY country ORDER BY country",
)
ROWS_QUERY = (
    f"SELECT country, pm25 FROM readings WHERE {NEAR}",
    "SELECT country, stats_median(pm25) FROM map GROUP BY country ORDER BY country",
)
SINGLE_QUERY = f"SELECT country, stats_median(pm25) FROM readings WHERE {NEAR} GROUP BY country ORDER BY country"


def build_shard(path: Path, rows: int) -> None:
    """readings(country, lat, lon, pm25), random, generated inside SQLite (fast)."""
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TEMP TABLE countries(id INTEGER PRIMARY KEY, code TEXT, lat REAL, lon REAL)")
    conn.executemany("INSERT INTO countries VALUES (?, ?, ?, ?)", [(i, *c) for i, c in enumerate(COUNTRIES)])
    conn.execute("CREATE TABLE readings(country TEXT, lat REAL, lon REAL, pm25 REAL)")
    with conn:
        conn.execute(
            "INSERT INTO readings "
            "WITH RECURSIVE n(i, r) AS (SELECT 1, abs(random()) UNION ALL "
            "  SELECT i + 1, abs(random()) FROM n WHERE i < ?) "
            "SELECT c.code, c.lat + ((r >> 8) % 1000) / 250.0 - 2, c.lon + ((r >> 20) % 1000) / 250.0 - 2, "
            "  ((r >> 32) % 20000) / 100.0 "
            "FROM n JOIN countries AS c ON c.id = (r >> 40) % ?",
            (rows, len(COUNTRIES)),
        )
    conn.close()


def has_partials() -> bool:
    conn = sqlwasm.connect(":memory:", [module_path("stats")], trusted_keys=KEYS)
    try:
        return bool(conn.execute("SELECT 1 FROM pragma_function_list WHERE name = 'stats_median_partial'").fetchall())
    finally:
        conn.close()


def in_one_process(
    runtime: sqlwasm.Runtime, modules: list[sqlwasm.Module], paths: list[Path], map_sql: str, reduce_sql: str
) -> list[Any]:
    """The same map and reduce, the shards one after another in this process
    (the modules verified and compiled beforehand, as Dask's workers keep them)."""
    conn = runtime.connect(":memory:", modules)
    columns: tuple[str, ...] = ()
    for path in paths:
        shard = runtime.connect(str(path), modules, flags=apsw.SQLITE_OPEN_READONLY)
        names, rows = distributed.select(shard, map_sql, "map_sql")
        if not columns:
            columns = names
            conn.execute(f"CREATE TABLE map({', '.join(columns)})")
        conn.executemany(f"INSERT INTO map VALUES ({', '.join('?' * len(columns))})", rows)
        shard.close()
    result = conn.execute(reduce_sql).fetchall()
    conn.close()
    return result


def best(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    seconds, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds = min(seconds, time.perf_counter() - started)
    return seconds, result


def shipped_bytes(path: Path, map_sql: str) -> int:
    """What a shard's map rows weigh as Dask ships them (pickled)."""
    conn = sqlwasm.connect(str(path), MODULES, trusted_keys=KEYS, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return len(pickle.dumps(conn.execute(map_sql).fetchall(), protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per shard")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--tiny", type=int, default=200, help="how many 1,000-row shards")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from dask.distributed import Client, LocalCluster

    partials = has_partials()
    map_sql, reduce_sql = PARTIAL_QUERY if partials else ROWS_QUERY
    with workdir() as tmp:
        tmpdir = Path(tmp)
        started = time.perf_counter()
        paths = [tmpdir / f"shard-{i}.db" for i in range(args.shards)]
        for path in paths:
            build_shard(path, args.rows)
        whole = tmpdir / "whole.db"
        build_whole(whole, paths)
        tiny = [tmpdir / f"tiny-{i:04}.db" for i in range(args.tiny)]
        for path in tiny:
            build_shard(path, 1000)
        print(f"built {args.shards} shards x {args.rows:,} rows and {args.tiny} x 1,000 rows "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        expected = sqlwasm.connect(str(whole), MODULES, trusted_keys=KEYS).execute(SINGLE_QUERY).fetchall()

        runtime = sqlwasm.Runtime(trusted_keys=KEYS)
        modules = [runtime.load(path) for path in MODULES]
        sequential, answer = best(args.repeats, lambda: in_one_process(runtime, modules, paths, map_sql, reduce_sql))
        if answer != expected:
            raise SystemExit(f"one process: wrong answer {answer} != {expected}")
        tiny_sequential, _ = best(args.repeats, lambda: in_one_process(runtime, modules, tiny, map_sql, reduce_sql))

        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL,
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            cluster_start = time.perf_counter() - started

            def on_dask(shards: list[Path]) -> Callable[[], Any]:
                return lambda: distributed.query(
                    shards, map_sql, reduce_sql, modules=MODULES, trusted_keys=KEYS, client=client
                )

            first_query, _ = best(1, on_dask(paths))  # includes each worker's verify + compile
            on_cluster, answer = best(args.repeats, on_dask(paths))
            if answer != expected:
                raise SystemExit(f"Dask: wrong answer {answer} != {expected}")
            tiny_dask, _ = best(args.repeats, on_dask(tiny))
            sizes = [path.stat().st_size for path in tiny]
            tasks = len(distributed.group_shards([str(path) for path in tiny], sizes, args.workers))

        shard_bytes = paths[0].stat().st_size
        back = {
            "median partial (stats_median_partial)": shipped_bytes(paths[0], PARTIAL_QUERY[0]) if partials else None,
            "variance partial (stats_variance_partial)": shipped_bytes(
                paths[0],
                f"SELECT country, stats_variance_partial(pm25) FROM readings WHERE {NEAR} GROUP BY country",
            ) if partials else None,
            "filtered rows (country, pm25)": shipped_bytes(paths[0], ROWS_QUERY[0]),
        }  # fmt: skip

    speedup = sequential / on_cluster
    per_tiny_ms = tiny_dask / args.tiny * 1e3
    print(f"{args.shards} shards x {args.rows:,} rows, median per country of the readings a wasm filter keeps "
          f"({'partials' if partials else 'shipping rows: no stats_median_partial in this stats module'}), "
          f"best of {args.repeats}")  # fmt: skip
    print(f"  one process, shards in sequence: {sequential:.3f} s")
    print(f"  Dask, {args.workers} worker processes:   {on_cluster:.3f} s  ({speedup:.2f}x; "
          f"first query {first_query:.3f} s with verify + compile; cluster start {cluster_start:.1f} s)")  # fmt: skip
    print(f"  bytes shipped back per shard (shard file {shard_bytes:,} bytes):")
    for label, size in back.items():
        if size is not None:
            print(f"    {label:45} {size:>12,}  ({size / shard_bytes:.2%} of the shard)")
    print(f"  {args.tiny} tiny shards (1,000 rows) in {tasks} tasks: {per_tiny_ms:.2f} ms per shard on Dask, "
          f"{tiny_sequential / args.tiny * 1e3:.2f} ms in one process")  # fmt: skip
    checks = {
        f"Dask with {args.workers} workers >= 1.6x one process": speedup >= 1.6,
        "tiny shards <= 5 ms each with grouping": per_tiny_ms <= 5.0,
    }
    print_checks(checks)
    path = write_results(
        "distributed",
        {
            "rows_per_shard": args.rows,
            "shards": args.shards,
            "workers": args.workers,
            "repeats": args.repeats,
            "partials": partials,
            "seconds": {
                "one process": sequential,
                "dask": on_cluster,
                "dask first query": first_query,
                "cluster start": cluster_start,
            },
            "ratios": {"one process / dask": speedup},
            "shard_bytes": shard_bytes,
            "bytes_back_per_shard": back,
            "tiny": {
                "shards": args.tiny,
                "tasks": tasks,
                "ms_per_shard_dask": per_tiny_ms,
                "ms_per_shard_one_process": tiny_sequential / args.tiny * 1e3,
            },
            "targets_met": checks,
        },
    )
    print(f"wrote {path}")
    return 0


def build_whole(path: Path, shards: list[Path]) -> None:
    """One file with every shard's rows: the single-file answer."""
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE readings(country TEXT, lat REAL, lon REAL, pm25 REAL)")
    for shard in shards:
        conn.execute("ATTACH ? AS shard", (str(shard),))
        with conn:
            conn.execute("INSERT INTO readings SELECT * FROM shard.readings")
        conn.execute("DETACH shard")
    conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
