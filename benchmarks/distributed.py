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
from concurrent.futures import ProcessPoolExecutor
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
# name -> (map_sql and reduce_sql through partials, the same shipping the
# filtered rows, the single-file query): the median, whose partial
# holds every value, and stddev, whose partial is a few numbers.
QUERIES = {
    name: (
        (
            f"SELECT country, {agg}_partial(pm25) AS part FROM readings WHERE {NEAR} GROUP BY country",
            f"SELECT country, {agg}_merge(part) FROM map GROUP BY country ORDER BY country",
        ),
        (
            f"SELECT country, pm25 FROM readings WHERE {NEAR}",
            f"SELECT country, {agg}(pm25) FROM map GROUP BY country ORDER BY country",
        ),
        f"SELECT country, {agg}(pm25) FROM readings WHERE {NEAR} GROUP BY country ORDER BY country",
    )
    for name, agg in (("median", "stats_median"), ("stddev", "stats_stddev"))
}


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
) -> tuple[list[Any], float]:
    """The same map and reduce, the shards one after another in this process
    (the modules verified and compiled beforehand, as Dask's workers keep
    them). Returns the rows and the seconds the reduce took."""
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
    started = time.perf_counter()
    result = conn.execute(reduce_sql).fetchall()
    reduce_seconds = time.perf_counter() - started
    conn.close()
    return result, reduce_seconds


def best(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """Best wall time and last result of each run, the runs interleaved so
    that the other load on the machine hits them alike."""
    measured: dict[str, tuple[float, Any]] = {label: (float("inf"), None) for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            started = time.perf_counter()
            result = run()
            measured[label] = (min(measured[label][0], time.perf_counter() - started), result)
    return measured


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
        runtime = sqlwasm.Runtime(trusted_keys=KEYS)
        modules = [runtime.load(path) for path in MODULES]
        single = runtime.connect(str(whole), modules)
        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL,
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            cluster_start = time.perf_counter() - started

            def on_dask(shards: list[Path], map_sql: str, reduce_sql: str) -> Callable[[], Any]:
                return lambda: distributed.query(
                    shards, map_sql, reduce_sql, modules=MODULES, trusted_keys=KEYS, client=client
                )

            ceiling = parallel_ceiling(args.workers)
            seconds: dict[str, dict[str, float]] = {}
            for name, (partial_query, rows_query, single_sql) in QUERIES.items():
                map_sql, reduce_sql = partial_query if partials else rows_query
                expected = single.execute(single_sql).fetchall()
                first_query = best(1, {"dask": on_dask(paths, map_sql, reduce_sql)})["dask"][0]
                runs = best(
                    args.repeats,
                    {
                        "one process": lambda: in_one_process(runtime, modules, paths, map_sql, reduce_sql),
                        "dask": on_dask(paths, map_sql, reduce_sql),
                    },
                )
                (one_process, (answer, reduce_seconds)), (on_cluster, dask_answer) = runs["one process"], runs["dask"]
                check(name, "one process", answer, expected)
                check(name, "Dask", dask_answer, expected)
                seconds[name] = {
                    "one process": one_process,
                    "reduce in one process (last run)": reduce_seconds,
                    "dask": on_cluster,
                    "dask first query": first_query,
                }

            map_sql, reduce_sql = QUERIES["median"][0] if partials else QUERIES["median"][1]
            runs = best(
                args.repeats,
                {
                    "one process": lambda: in_one_process(runtime, modules, tiny, map_sql, reduce_sql),
                    "dask": on_dask(tiny, map_sql, reduce_sql),
                },
            )
            tiny_sequential, tiny_dask = runs["one process"][0], runs["dask"][0]
            sizes = [path.stat().st_size for path in tiny]
            tasks = len(distributed.group_shards([str(path) for path in tiny], sizes, args.workers))
        single.close()

        shard_bytes = paths[0].stat().st_size
        back = {"filtered rows (country, pm25)": shipped_bytes(paths[0], QUERIES["median"][1][0])}
        if partials:
            back["median partials (stats_median_partial)"] = shipped_bytes(paths[0], QUERIES["median"][0][0])
            back["stddev partials (stats_stddev_partial)"] = shipped_bytes(paths[0], QUERIES["stddev"][0][0])

    ratios = {f"{name}: one process / dask": times["one process"] / times["dask"] for name, times in seconds.items()}
    per_tiny_ms = tiny_dask / args.tiny * 1e3
    how = "through partials" if partials else "shipping the filtered rows (this stats module has no partials)"
    print(f"{args.shards} shards x {args.rows:,} rows: per country, an aggregate of the readings a wasm filter "
          f"keeps, {how}; best of {args.repeats}, interleaved; Dask cluster start {cluster_start:.1f} s")  # fmt: skip
    for name, measured in seconds.items():
        print(f"  {name}: one process {measured['one process']:.3f} s (of which reduce "
              f"{measured['reduce in one process (last run)']:.3f} s), "
              f"Dask with {args.workers} workers {measured['dask']:.3f} s: "
              f"{ratios[f'{name}: one process / dask']:.2f}x (first query, verify + compile on each worker: "
              f"{measured['dask first query']:.3f} s)")  # fmt: skip
    print(f"  plain CPU work in {args.workers} processes vs one, measured alongside: {ceiling:.2f}x "
          f"(the most any split could gain while others share the machine)")  # fmt: skip
    print(f"  bytes shipped back per shard (shard file {shard_bytes:,} bytes):")
    for label, size in back.items():
        print(f"    {label:42} {size:>12,}  ({size / shard_bytes:.3%} of the shard)")
    print(f"  {args.tiny} tiny shards (1,000 rows) in {tasks} tasks: {per_tiny_ms:.2f} ms per shard on Dask, "
          f"{tiny_sequential / args.tiny * 1e3:.2f} ms in one process")  # fmt: skip
    checks = {
        f"median: Dask with {args.workers} workers >= 1.6x one process": ratios["median: one process / dask"] >= 1.6,
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
            "cluster_start_seconds": cluster_start,
            "seconds": seconds,
            "ratios": ratios,
            "plain_cpu_parallel_ratio": ceiling,
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


def spin(count: int) -> int:
    """CPU work with no I/O: the yardstick for how much two processes get."""
    total = 0
    for i in range(count):
        total += i * i % 7
    return total


def parallel_ceiling(workers: int, count: int = 5_000_000) -> float:
    """How much faster `workers` processes finish `workers` equal pieces of
    plain CPU work than one process doing them in turn, right now: the best
    any split can do on this machine while others share it."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(spin, [1000] * workers))  # the processes started
        started = time.perf_counter()
        list(pool.map(spin, [count] * workers))
        parallel = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(workers):
        spin(count)
    return (time.perf_counter() - started) / parallel


def check(name: str, where: str, answer: list[Any], expected: list[Any]) -> None:
    """Order statistics must be equal; a merged stddev within 1e-9 relative."""
    same = len(answer) == len(expected) and all(
        a[0] == e[0] and abs(a[1] - e[1]) <= 1e-9 * abs(e[1]) for a, e in zip(answer, expected)
    )
    if not same or (name == "median" and answer != expected):
        raise SystemExit(f"{name}, {where}: wrong answer {answer} != {expected}")


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
