"""sqlwasm.distributed on a real dask.distributed cluster (2 worker processes,
shared by this file), over shard files built with the shipped geo and stats
modules."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import apsw
import dask
import pytest
from conftest import MEMORY, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from distributed import Client, LocalCluster
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm import distributed
from sqlwasm._signing import sign
from sqlwasm.distributed import MapPlan, ShardError

MODULES = [module_path("geo"), module_path("stats")]
KEYS = [EXAMPLES_PUBLIC_KEY]
LONDON = (51.5074, -0.1278)
COUNTRIES = [("GB", 51.5, -0.1), ("FR", 48.9, 2.4), ("DE", 52.5, 13.4)]

# Readings near London (geo_haversine, a scalar wasm filter), and their
# median per country (stats_median, a wasm aggregate).
NEAR_LONDON = f"geo_haversine(lat, lon, {LONDON[0]}, {LONDON[1]}) < 600"
SINGLE_FILE_MEDIANS = (
    f"SELECT country, stats_median(pm25), count(*) FROM readings WHERE {NEAR_LONDON} GROUP BY country ORDER BY country"
)
MAP_NEAR_LONDON = f"SELECT country, pm25 FROM readings WHERE {NEAR_LONDON}"
REDUCE_MEDIANS = "SELECT country, stats_median(pm25), count(*) FROM map GROUP BY country ORDER BY country"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as started,
    ):
        yield started


def readings(rng: random.Random, count: int) -> list[tuple[str, float, float, float]]:
    rows = []
    for _ in range(count):
        country, lat, lon = rng.choice(COUNTRIES)
        rows.append((country, lat + rng.gauss(0, 1), lon + rng.gauss(0, 1), round(rng.lognormvariate(2.3, 0.5), 2)))
    return rows


def write_shard(path: Path, rows: list[tuple[str, float, float, float]], p: float = 0.9) -> Path:
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE readings(country TEXT, lat REAL, lon REAL, pm25 REAL); CREATE TABLE meta(p REAL)")
    with conn:
        conn.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", rows)
        conn.execute("INSERT INTO meta VALUES (?)", (p,))
    conn.close()
    return path


@pytest.fixture
def shards(tmp_path: Path) -> tuple[list[Path], Path]:
    """Five shards of uneven size, and one file holding all their rows."""
    rng = random.Random(10)
    parts = [readings(rng, count) for count in (300, 1, 250, 40, 500)]
    paths = [write_shard(tmp_path / f"shard-{i}.db", rows) for i, rows in enumerate(parts)]
    whole = write_shard(tmp_path / "whole.sqlite", [row for rows in parts for row in rows])
    return paths, whole


def single_file(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlwasm.connect(str(path), MODULES, trusted_keys=KEYS)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_map_only_returns_every_shards_rows_in_shard_order(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    sql = "SELECT country, round(geo_haversine(lat, lon, 51.5074, -0.1278), 3) AS km FROM readings"
    rows = distributed.query(paths, sql, modules=MODULES, trusted_keys=KEYS, client=client)
    expected = [row for path in paths for row in single_file(path, sql)]
    assert rows == expected
    assert len(rows) == 1091


def test_map_reduce_equals_the_single_file_answer(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, whole = shards
    rows = distributed.query(paths, MAP_NEAR_LONDON, REDUCE_MEDIANS, modules=MODULES, trusted_keys=KEYS, client=client)
    expected = single_file(whole, SINGLE_FILE_MEDIANS)
    assert rows == expected
    assert [country for country, _, _ in rows] == ["FR", "GB"]  # DE is too far from London


def test_glob_matches_sorted_shards(
    client: Client, shards: tuple[list[Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _ = shards
    sql = "SELECT count(*) AS n, sum(pm25) AS total FROM readings"
    key_text = EXAMPLES_PUBLIC_KEY.read_text(encoding="utf-8")  # a key as text, not a path
    by_glob = distributed.query(
        str(tmp_path / "shard-*.db"), sql, modules=MODULES, trusted_keys=key_text, client=client, progress=True
    )
    assert by_glob == [single_file(path, sql)[0] for path in sorted(paths)]
    drawn = capsys.readouterr()
    assert "100% Completed" in drawn.err and not drawn.out  # Dask's progress bar, on stderr
    with pytest.raises(sqlwasm.Error, match=r"no file matches the shard pattern '.*nothing-\*\.db'"):
        distributed.query(str(tmp_path / "nothing-*.db"), sql, modules=MODULES, trusted_keys=KEYS, client=client)


def test_tiny_shards_share_tasks(client: Client, tmp_path: Path) -> None:
    rng = random.Random(3)
    paths = [write_shard(tmp_path / f"tiny-{i:02}.db", readings(rng, 5)) for i in range(40)]
    before = sum(counts["tasks"] for counts in client.run(distributed.worker_counts).values())
    rows = distributed.query(
        paths, "SELECT count(*) AS n FROM readings", "SELECT sum(n), count(*) FROM map",
        modules=MODULES, trusted_keys=KEYS, client=client,
    )
    after = sum(counts["tasks"] for counts in client.run(distributed.worker_counts).values())
    assert rows == [(200, 40)]
    assert after - before == 8  # 4 tasks per worker thread, not 40


def test_group_shards_balances_sizes_and_keeps_large_shards_alone() -> None:
    paths = [f"s{i}" for i in range(10)]
    sizes = [100, 1, 1, 1, 1, 1, 1, 1, 1, 50]
    groups = distributed.group_shards(paths, sizes, threads=1)
    assert sorted(path for group in groups for path in group) == sorted(paths)
    assert groups[0] == ("s0",) and groups[1] == ("s9",)  # the heaviest tasks first
    assert len(groups) == 4
    big = 64 << 20
    assert distributed.group_shards(["a", "b", "c"], [big, big, big], threads=1) == [("a",), ("b",), ("c",)]
    assert len(distributed.group_shards([f"t{i}" for i in range(100)], [10] * 100, threads=2)) == 8


def test_a_guest_error_on_one_shard_names_that_shard(client: Client, tmp_path: Path) -> None:
    rng = random.Random(4)
    good = [write_shard(tmp_path / f"good-{i}.db", readings(rng, 20)) for i in range(3)]
    bad = write_shard(tmp_path / "bad.db", readings(rng, 20), p=7.0)
    sql = "SELECT stats_percentile(pm25, (SELECT p FROM meta)) AS p90 FROM readings"
    with pytest.raises(ShardError) as info:
        distributed.query([*good, bad], sql, modules=MODULES, trusted_keys=KEYS, client=client)
    assert info.value.path == str(bad)
    assert str(bad) in str(info.value)
    assert "stats.stats_percentile: p must be between 0 and 1, got 7" in str(info.value)


CHECK_WAT = f"""(module {MEMORY}
  (func $deeper (param i64) (result i64) (i64.add (call $deeper (i64.add (local.get 0) (i64.const 1))) (i64.const 1)))
  (func (export "check") (param i64) (result i64)
    (if (i64.eq (local.get 0) (i64.const 7)) (then unreachable))
    (if (i64.eq (local.get 0) (i64.const 9)) (then (return (call $deeper (local.get 0)))))
    (local.get 0)))"""
CHECK = manifest(fn("t_check", export="check"))


@pytest.mark.parametrize("value, message", [(7, "trap (unreachable)"), (9, "trap (stack overflow)")])
def test_a_guest_trap_on_one_shard_names_that_shard_and_the_workers_survive(
    client: Client, tmp_path: Path, value: int, message: str
) -> None:
    key = Ed25519PrivateKey.generate()
    module = wasm_module(CHECK_WAT, CHECK, key=key)
    paths = []
    for i, values in enumerate([[1, 2], [3, value], [5, 6]]):
        conn = apsw.Connection(str(tmp_path / f"n-{i}.db"))
        conn.execute("CREATE TABLE n(x INTEGER)")
        conn.executemany("INSERT INTO n VALUES (?)", [(v,) for v in values])
        conn.close()
        paths.append(tmp_path / f"n-{i}.db")
    options = {"modules": [module], "trusted_keys": [key.public_key().public_bytes_raw()], "client": client}
    with pytest.raises(ShardError) as info:
        distributed.query(paths, "SELECT t_check(x) AS x FROM n", **options)
    assert info.value.path == str(paths[1])
    assert f"t.t_check: {message}" in str(info.value)
    # The same workers answer the next query.
    assert distributed.query(paths[::2], "SELECT t_check(x) AS x FROM n", "SELECT sum(x) FROM map", **options) == [(14,)]


def test_an_sql_error_on_a_shard_names_the_shard(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    with pytest.raises(ShardError, match=r"shard .*shard-\d\.db: SQLError: no such column: altitude"):
        distributed.query(paths, "SELECT altitude FROM readings", modules=MODULES, trusted_keys=KEYS, client=client)


def test_a_missing_shard_is_an_error_and_never_created(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    missing = paths[0].parent / "missing.db"
    with pytest.raises(ShardError, match=r"missing\.db: No such file"):
        distributed.query([*paths, missing], "SELECT 1", modules=MODULES, trusted_keys=KEYS, client=client)
    # The worker refuses it too, should it vanish after the caller looked.
    plan = plan_for([module_path("stats").read_bytes()], "SELECT 1")
    with pytest.raises(ShardError, match=r"missing\.db: cannot open it read-only: no such file"):
        client.submit(distributed.run_map_task, [str(missing)], plan, pure=False).result()
    assert not missing.exists()


def plan_for(modules: list[bytes], map_sql: str, *, keys: list[bytes] | None = None, allow_unsigned: bool = False) -> MapPlan:
    """A plan as a worker receives it, built without the caller's checks."""
    raw_keys = keys if keys is not None else list(distributed.trusted_key_bytes(KEYS))
    return MapPlan(tuple(modules), tuple(raw_keys), allow_unsigned, ((), None), (), map_sql)


UNSIGNED_WAT = f'(module {MEMORY} (func (export "add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1))))'
UNSIGNED = manifest(fn("t_add", export="add", args=["integer", "integer"]))


def test_workers_refuse_unsigned_and_untrusted_modules(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    shard = [str(paths[0])]
    unsigned = wasm_module(UNSIGNED_WAT, UNSIGNED)
    with pytest.raises(sqlwasm.SignatureError, match="is not signed; refusing to load it"):
        client.submit(distributed.run_map_task, shard, plan_for([unsigned], "SELECT t_add(1, 2)"), pure=False).result()
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    stats = module_path("stats").read_bytes()
    with pytest.raises(sqlwasm.SignatureError, match="which is not in trusted_keys"):
        plan = plan_for([stats], "SELECT 1", keys=[stranger])
        client.submit(distributed.run_map_task, shard, plan, pure=False).result()
    # Only an explicit allow_unsigned lets the worker run it.
    plan = plan_for([unsigned], "SELECT t_add(40, 2) AS n", allow_unsigned=True)
    [result] = client.submit(distributed.run_map_task, shard, plan, pure=False).result()
    assert result.columns == ("n",) and result.rows == [(42,)]


def test_the_caller_refuses_an_unsigned_module_before_any_work(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    unsigned = wasm_module(UNSIGNED_WAT, UNSIGNED)
    with pytest.raises(sqlwasm.SignatureError, match="is not signed"):
        distributed.query(paths, "SELECT 1", modules=[unsigned], trusted_keys=KEYS, client=client)


def test_shards_are_read_only(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    before = [digest(path) for path in paths]
    with pytest.raises(ShardError, match=r"map_sql must only read, and 'DELETE FROM readings' writes"):
        distributed.query(paths, "DELETE FROM readings", modules=MODULES, trusted_keys=KEYS, client=client)
    with pytest.raises(ShardError, match="map_sql must be one statement"):
        distributed.query(paths, "SELECT 1; DELETE FROM readings", modules=MODULES, trusted_keys=KEYS, client=client)
    # Below that check, the connection itself refuses to write, and to
    # create a file with VACUUM INTO or ATTACH.
    conn = distributed.open_shard(str(paths[0]))
    with pytest.raises(apsw.ReadOnlyError):
        conn.execute("DELETE FROM readings")
    with pytest.raises(apsw.SQLError, match="too many attached databases"):
        conn.execute("VACUUM INTO ?", (str(paths[0].parent / "copy.db"),))
    with pytest.raises(apsw.SQLError, match="too many attached databases"):
        conn.execute("ATTACH ? AS other", (str(paths[1]),))
    conn.close()
    assert [digest(path) for path in paths] == before
    assert not (paths[0].parent / "copy.db").exists()


def test_each_worker_verifies_and_compiles_a_module_set_once(client: Client, tmp_path: Path) -> None:
    rng = random.Random(5)
    paths = [write_shard(tmp_path / f"s-{i:02}.db", readings(rng, 3)) for i in range(24)]

    def loads() -> int:
        return sum(counts["loads"] for counts in client.run(distributed.worker_counts).values())

    # timeout_ms=4321: a module set (modules, keys, options) no other test used.
    options = {"modules": MODULES, "trusted_keys": KEYS, "client": client, "timeout_ms": 4321}
    start = loads()
    assert distributed.query(paths, "SELECT count(*) AS n FROM readings", "SELECT sum(n) FROM map", **options) == [(72,)]
    first = loads() - start
    assert 1 <= first <= 2  # 8 tasks over 24 shards: once per worker that ran any
    assert distributed.query(paths, "SELECT count(*) AS n FROM readings", "SELECT sum(n) FROM map", **options) == [(72,)]
    assert loads() - start == first


def test_as_frame(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, whole = shards
    frame = distributed.query(
        paths, MAP_NEAR_LONDON, REDUCE_MEDIANS, modules=MODULES, trusted_keys=KEYS, client=client, as_frame=True
    )
    assert list(frame.columns) == ["country", "stats_median(pm25)", "count(*)"]
    assert [tuple(row) for row in frame.itertuples(index=False)] == single_file(whole, SINGLE_FILE_MEDIANS)


def test_reduce_errors_and_repeated_map_columns(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    with pytest.raises(distributed.ReduceError, match="'country'] appear more than once"):
        distributed.query(
            paths, "SELECT country, country FROM readings", "SELECT 1 FROM map", modules=MODULES, trusted_keys=KEYS, client=client
        )
    with pytest.raises(distributed.ReduceError, match=r"\['X', 'x'\] appear more than once"):
        distributed.query(
            paths, "SELECT 1 AS x, 2 AS X FROM readings", "SELECT 1 FROM map", modules=MODULES, trusted_keys=KEYS, client=client
        )
    with pytest.raises(distributed.ReduceError, match="reduce_sql failed: SQLError: no such column: nope"):
        distributed.query(paths, "SELECT country FROM readings", "SELECT nope FROM map", modules=MODULES, trusted_keys=KEYS, client=client)


def test_without_a_client_a_local_cluster_is_started_and_closed(shards: tuple[list[Path], Path]) -> None:
    paths, whole = shards
    rows = distributed.query(paths, MAP_NEAR_LONDON, REDUCE_MEDIANS, modules=MODULES, trusted_keys=KEYS, workers=1)
    assert rows == single_file(whole, SINGLE_FILE_MEDIANS)


def test_median_p90_and_stddev_per_country_through_partials_equal_the_single_file_answer(
    client: Client, shards: tuple[list[Path], Path]
) -> None:
    paths, whole = shards
    map_sql = (
        "SELECT country, stats_median_partial(pm25) AS median, stats_percentile_partial(pm25, 0.9) AS p90, "
        "stats_stddev_partial(pm25) AS stddev FROM readings GROUP BY country"
    )
    reduce_sql = (
        "SELECT country, stats_median_merge(median), stats_percentile_merge(p90), stats_stddev_merge(stddev) "
        "FROM map GROUP BY country ORDER BY country"
    )
    rows = distributed.query(paths, map_sql, reduce_sql, modules=MODULES, trusted_keys=KEYS, client=client)
    expected = single_file(
        whole,
        "SELECT country, stats_median(pm25), stats_percentile(pm25, 0.9), stats_stddev(pm25) "
        "FROM readings GROUP BY country ORDER BY country",
    )
    assert [row[:3] for row in rows] == [row[:3] for row in expected]  # order statistics: exact
    assert [row[3] for row in rows] == pytest.approx([row[3] for row in expected], rel=1e-9)
    assert len(rows) == 3


SQL_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    st.binary(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(SQL_VALUES, SQL_VALUES), max_size=20))
def test_map_rows_reach_reduce_sql_unchanged(rows: list[tuple[object, object]]) -> None:
    """Table map has no declared types: every SQLite value arrives as the shard gave it."""
    loaded = distributed.loaded_modules(plan_for([module_path("stats").read_bytes()], "unused"))
    columns, back = distributed._reduce(loaded, ("a", 'b "quoted"'), rows, 'SELECT a, "b ""quoted""" FROM map ORDER BY rowid')
    assert columns == ("a", 'b "quoted"')
    assert back == rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1 << 30), min_size=1, max_size=60), st.integers(min_value=1, max_value=8))
def test_grouping_keeps_every_shard_once_and_balances_sizes(sizes: list[int], threads: int) -> None:
    paths = [f"s{i}" for i in range(len(sizes))]
    groups = distributed.group_shards(paths, sizes, threads)
    assert sorted(path for group in groups for path in group) == sorted(paths)
    assert all(group for group in groups)
    assert len(groups) == min(len(paths), max(-(-sum(sizes) // distributed.MIN_TASK_BYTES), 4 * threads))
    loads = [sum(sizes[int(path[1:])] for path in group) for group in groups]
    assert loads == sorted(loads, reverse=True)  # the heaviest first
    assert max(loads) <= sum(sizes) / len(groups) + max(sizes)  # largest first onto the lightest: within one shard


def test_arguments_refused_before_any_work(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    with pytest.raises(sqlwasm.Error, match="no shards given"):
        distributed.query([], "SELECT 1", modules=MODULES, trusted_keys=KEYS, client=client)
    with pytest.raises(sqlwasm.Error, match="with a client, size the client's cluster instead"):
        distributed.query(paths, "SELECT 1", modules=MODULES, trusted_keys=KEYS, client=client, workers=2)
    loaded = sqlwasm.Runtime(trusted_keys=KEYS).load(module_path("stats"))
    with pytest.raises(sqlwasm.Error, match="module 'stats' is loaded already; pass its .wasm path or bytes"):
        distributed.query(paths, "SELECT 1", modules=[loaded], trusted_keys=KEYS, client=client)
    with pytest.raises(sqlwasm.Error, match=r"unknown options \['timeout'\]; the Runtime's are timeout_ms, fuel, "):
        distributed.query(paths, "SELECT 1", modules=MODULES, trusted_keys=KEYS, client=client, timeout=5)
    with pytest.raises(ShardError, match="not a regular file"):
        distributed.query([paths[0].parent], "SELECT 1", modules=MODULES, trusted_keys=KEYS, client=client)


def test_the_grant_travels_to_the_workers(client: Client, tmp_path: Path) -> None:
    """graph_reachable reads each shard's edges table (capability sql), on the workers."""
    paths = []
    for i, edges in enumerate([[(1, 2), (2, 3)], [(1, 4)], [(5, 6)]]):
        conn = apsw.Connection(str(tmp_path / f"g-{i}.db"))
        conn.execute("CREATE TABLE edges(src INTEGER, dst INTEGER); CREATE TABLE secret(x)")
        conn.executemany("INSERT INTO edges VALUES (?, ?)", edges)
        conn.close()
        paths.append(tmp_path / f"g-{i}.db")
    graph = [module_path("graph")]
    rows = distributed.query(
        paths, "SELECT node, depth FROM graph_reachable(1)", "SELECT node, min(depth) FROM map GROUP BY node ORDER BY node",
        modules=graph, trusted_keys=KEYS, client=client, grant={"sql": ["edges"]},
    )
    assert rows == [(1, 0), (2, 1), (3, 2), (4, 1)]
    with pytest.raises(ShardError, match="table 'edges' was not granted to module 'graph'"):  # the list travels too
        distributed.query(
            paths, "SELECT node FROM graph_reachable(1)", modules=graph, trusted_keys=KEYS, client=client,
            grant={"sql": ["secret"]},
        )
    with pytest.raises(sqlwasm.CapabilityError):
        distributed.query(paths, "SELECT 1", modules=graph, trusted_keys=KEYS, client=client)


# map_sql that runs for minutes: time to kill the worker running it.
SLOW_MAP = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000000) SELECT count(*) AS n FROM c"


def test_a_worker_killed_mid_task_fails_the_query_naming_its_shards(shards: tuple[list[Path], Path]) -> None:
    paths, _ = shards
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),  # no retry on another worker
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as own,
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(distributed.query, paths[:1], SLOW_MAP, modules=MODULES, trusted_keys=KEYS, client=own)
        deadline = time.monotonic() + 30
        while not any(keys for keys in own.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        for pid in own.run(os.getpid).values():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(distributed.WorkerLostError) as info:
            running.result(timeout=60)
    assert info.value.paths == (str(paths[0]),)
    assert str(info.value) == f"shards {paths[0]}: the worker process running map_sql on them died (killed, or out of memory?)"


def test_the_demos_shard_query_equals_the_one_file_answer(capsys: pytest.CaptureFixture[str]) -> None:
    """sqlwasm demo's last part: 8 shard files of its sample, partials merged on the caller."""
    from sqlwasm._demo import build_sample, run_shard_demo

    runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY])
    conn = runtime.connect(":memory:", [module_path("stats")])
    try:
        build_sample(conn, 3000)
        run_shard_demo(conn, 3000)
    finally:
        conn.close()
    out = capsys.readouterr().out
    assert "over 8 shard files on Dask" in out
    assert "equal to the one-file answer: yes" in out


def test_the_command_line_queries_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm import _cli

    for day in range(3):
        shard = apsw.Connection(str(tmp_path / f"day-{day}.db"))
        shard.execute("CREATE TABLE readings(country TEXT, pm25 REAL)")
        shard.executemany("INSERT INTO readings VALUES (?, ?)", [("GB", day + 1.0), ("FR", 2.0 * day)])
        shard.close()
    status = _cli.main([
        "query", str(tmp_path / "day-*.db"), "--load", "stats", "--workers", "2", "--csv",
        "--map", "SELECT country, stats_median_partial(pm25) AS m FROM readings GROUP BY country",
        "--reduce", "SELECT country, stats_median_merge(m) AS median FROM map GROUP BY country ORDER BY country",
    ])  # fmt: skip
    assert status == 0
    assert capsys.readouterr().out.splitlines() == ["country,median", "FR,2.0", "GB,2.0"]
    with pytest.raises(SystemExit) as usage:  # a usage error: argparse's exit 2
        _cli.main(["query", str(tmp_path / "day-0.db"), "--reduce", "SELECT 1"])
    assert usage.value.code == 2
    assert "--reduce and --workers are for a query over shards" in capsys.readouterr().err


# ------------------------------------------------- modules stored in the shards


def store_in(path: Path, module: bytes, name: str = "stats") -> None:
    from sqlwasm import _stored

    conn = apsw.Connection(str(path))
    with conn:
        _stored.write(_stored.executor(conn), str(path), name, "1", module)
    conn.close()


def test_modules_stored_in_the_shards_are_loaded_with_db_modules(client: Client, shards: tuple[list[Path], Path]) -> None:
    paths, whole = shards
    stats = module_path("stats").read_bytes()
    for path in paths:
        store_in(path, stats)
    map_sql = f"SELECT country, pm25 FROM readings WHERE {NEAR_LONDON}"
    rows = distributed.query(
        [str(p) for p in paths], map_sql, REDUCE_MEDIANS, modules=[module_path("geo")], trusted_keys=KEYS,
        client=client, db_modules=True,
    )
    assert rows == single_file(whole, SINGLE_FILE_MEDIANS)
    # Without db_modules the stored module is not there (the reduce needs stats_median).
    with pytest.raises(distributed.ReduceError, match="no such function: stats_median"):
        distributed.query([str(p) for p in paths], map_sql, REDUCE_MEDIANS, modules=[module_path("geo")], trusted_keys=KEYS, client=client)


def test_a_shard_storing_an_untrusted_module_is_refused_naming_it(
    client: Client, shards: tuple[list[Path], Path], session_key: Ed25519PrivateKey
) -> None:
    paths, _ = shards
    foreign = sign(module_path("stats").read_bytes(), session_key)  # signed by a key the caller does not trust
    store_in(paths[2], foreign)
    with pytest.raises(ShardError, match=r"shard-2\.db.*'stats' stored in .*shard-2\.db is signed by key .* not in trusted_keys") as failed:
        distributed.query([str(p) for p in paths], "SELECT 1", modules=[], trusted_keys=KEYS, client=client, db_modules=True)
    assert failed.value.path.endswith("shard-2.db")


def test_shards_storing_different_modules_of_one_name_are_refused(
    client: Client, shards: tuple[list[Path], Path], session_key: Ed25519PrivateKey
) -> None:
    paths, _ = shards
    stats = module_path("stats").read_bytes()
    other = sign(stats, session_key)
    store_in(paths[0], stats)
    store_in(paths[3], other)
    keys = [*KEYS, session_key.public_key()]
    with pytest.raises(ShardError, match=r"shard-3\.db.*its stored module 'stats' .* is not the one in .*shard-0\.db"):
        distributed.query([str(p) for p in paths], "SELECT 1", modules=[], trusted_keys=keys, client=client, db_modules=True)
    # Nor may a stored module differ from one passed in modules.
    with pytest.raises(ShardError, match=r"shard-3\.db.*'stats' .* is not the one in modules"):
        distributed.query([str(paths[3])], "SELECT 1", modules=[stats], trusted_keys=keys, client=client, db_modules=True)


def test_the_command_line_queries_shards_with_their_stored_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm.extensions import ROOT

    from sqlwasm import _cli

    for day in range(2):
        path = tmp_path / f"day-{day}.db"
        shard = apsw.Connection(str(path))
        shard.execute("CREATE TABLE readings(country TEXT, pm25 REAL)")
        shard.executemany("INSERT INTO readings VALUES (?, ?)", [("GB", day + 1.0), ("GB", 5.0)])
        shard.close()
        store_in(path, module_path("stats").read_bytes())
    status = _cli.main([
        "query", str(tmp_path / "day-*.db"), "--db-modules", "--trust", str(Path(ROOT) / "keys" / "examples.pub"),
        "--workers", "1", "--csv",
        "--map", "SELECT stats_median_partial(pm25) AS m FROM readings",
        "--reduce", "SELECT stats_median_merge(m) AS median FROM map",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines() == ["median", "3.5"]


def test_the_command_line_gives_shard_queries_the_config_files_cache_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm import _cli

    shard = apsw.Connection(str(tmp_path / "one.db"))
    shard.execute("CREATE TABLE t(x REAL); INSERT INTO t VALUES (1), (3)")
    shard.close()
    (tmp_path / "sqlwasm.toml").write_text('cache_dir = "compiled"\n')
    status = _cli.main([
        "query", str(tmp_path / "one*.db"), "--config", str(tmp_path / "sqlwasm.toml"), "--load", "stats",
        "--workers", "1", "--csv", "--map", "SELECT stats_median(x) AS m FROM t",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines() == ["m", "2.0"]
    assert list((tmp_path / "compiled").rglob("*.compiled")), "the config file's cache_dir was not used"
