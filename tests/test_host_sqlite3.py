"""The stdlib host: modules installed into Python's own sqlite3.Connection
(sqlwasm/_host_sqlite3.py), which here is built without load_extension and
links a different SQLite (the system's) than APSW does."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import apsw
import pytest
from conftest import MEMORY, Build, fn, manifest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm import _connection

LOOP_WAT = f"""
(module
  {MEMORY}
  (func (export "spin") (param i64) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
  (func (export "add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1))))
"""
LOOP = manifest(fn("t_spin", export="spin"), fn("t_add", export="add", args=["integer", "integer"]))


@pytest.fixture
def examples() -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], timeout_ms=1000)


@pytest.fixture
def stdlib(examples: sqlwasm.Runtime) -> Any:
    conn = sqlite3.connect(":memory:")
    for name in ("geo", "stats", "text"):
        examples.install(conn, examples.load(module_path(name)))
    conn.execute("CREATE TABLE t(g TEXT, x REAL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1.0), ("a", 3.0), ("b", 2.0), ("a", 10.0)])
    yield conn
    conn.close()


def test_scalars_aggregates_windows_tables_and_wasm_call(stdlib: Any) -> None:
    assert stdlib.execute("SELECT round(geo_haversine(51.5074, -0.1278, 48.8566, 2.3522))").fetchall() == [(344.0,)]
    assert stdlib.execute("SELECT g, stats_median(x) FROM t GROUP BY g ORDER BY g").fetchall() == [
        ("a", 3.0),
        ("b", 2.0),
    ]
    assert stdlib.execute(
        "SELECT stats_median(x) OVER (ORDER BY rowid ROWS 1 PRECEDING) FROM t WHERE g = 'a'"
    ).fetchall() == [(1.0,), (2.0,), (6.5,)]
    assert stdlib.execute("SELECT token FROM text_tokens('stdlib too')").fetchall() == [("stdlib",), ("too",)]
    assert stdlib.execute(
        "SELECT stats_median_merge(p) FROM (SELECT stats_median_partial(x) AS p FROM t GROUP BY g)"
    ).fetchall() == [(2.5,)]
    assert stdlib.execute("SELECT round(wasm_call('geo', 'haversine', 51.5074, -0.1278, 48.8566, 2.3522))").fetchall() == [
        (344.0,)
    ]


def test_errors_name_module_and_function(stdlib: Any) -> None:
    with pytest.raises(sqlite3.OperationalError, match="geo.geo_contains: polygon: "):
        stdlib.execute("SELECT geo_contains('POLYGON((', 1, 2)").fetchall()
    with pytest.raises(sqlite3.OperationalError, match="geo.geo_haversine: argument 1 is TEXT, expected real"):
        stdlib.execute("SELECT geo_haversine('x', 1, 2, 3)").fetchall()
    assert stdlib.execute("SELECT 40 + 2").fetchall() == [(42,)]


def test_the_time_limit_stops_a_guest(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=100)
    conn = sqlite3.connect(":memory:")
    runtime.install(conn, runtime.load(build(LOOP_WAT, LOOP)))
    with pytest.raises(sqlite3.OperationalError, match="t.t_spin: time limit of 100 ms exceeded"):
        conn.execute("SELECT t_spin(1)").fetchall()
    assert conn.execute("SELECT t_add(40, 2)").fetchall() == [(42,)]
    conn.close()


def test_interrupt_stops_the_statement(build: Build, session_key: Ed25519PrivateKey) -> None:
    # SQLite 3.40 (this stdlib's) has no sqlite3_is_interrupted: the statement stops between guest calls.
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    runtime.install(conn, runtime.load(build(LOOP_WAT, LOOP)))
    timer = threading.Timer(0.2, conn.interrupt)
    timer.start()
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        conn.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT sum(t_add(i, 1)) FROM c"
        ).fetchall()
    timer.join()
    conn.close()


def test_apsw_and_stdlib_in_one_process(examples: sqlwasm.Runtime) -> None:
    geo = examples.load(module_path("geo"))
    stdlib_conn = sqlite3.connect(":memory:")
    apsw_conn = apsw.Connection(":memory:")
    examples.install(stdlib_conn, geo)
    examples.install(apsw_conn, geo)
    sql = "SELECT round(geo_haversine(0, 0, 0, 1), 3)"
    assert stdlib_conn.execute(sql).fetchall() == apsw_conn.execute(sql).fetchall() == [(111.195,)]
    stdlib_conn.close()
    apsw_conn.close()


def test_closing_frees_the_state(examples: sqlwasm.Runtime) -> None:
    conn = sqlite3.connect(":memory:")
    examples.install(conn, examples.load(module_path("geo")))
    db = _connection._host_sqlite3.handle(conn)
    assert db in _connection._states
    conn.close()
    _connection.reap_closed_now()
    assert db not in _connection._states
    with pytest.raises(sqlwasm.Error, match="closed"):
        examples.install(conn, examples.load(module_path("geo")))


def test_what_the_stdlib_cannot_host_is_refused(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["sql"])
    conn = sqlite3.connect(":memory:")
    per_statement = runtime.load(build(LOOP_WAT, manifest(*LOOP["functions"], instance="statement")))
    with pytest.raises(sqlwasm.Error, match="instance = \"statement\".*needs an APSW connection"):
        runtime.install(conn, per_statement)
    conn.close()


def test_graph_on_stdlib_is_refused_cleanly() -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], grant=["sql"])
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlwasm.Error, match="module 'graph' has the sql capability, which needs an APSW connection"):
        runtime.install(conn, runtime.load(module_path("graph")))
    assert conn.execute("SELECT 1").fetchall() == [(1,)]
    conn.close()


def test_install_rules_hold(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlwasm.ManifestError, match="abs would shadow SQLite built-in"):
        runtime.install(conn, runtime.load(build(LOOP_WAT, manifest(fn("abs", export="spin")))))
    conn.create_function("t_add", 2, lambda a, b: 0)
    module = runtime.load(build(LOOP_WAT, LOOP))
    with pytest.raises(sqlwasm.ManifestError, match="already has functions named t_add"):
        runtime.install(conn, module)
    runtime.install(conn, module, replace=True)
    assert conn.execute("SELECT t_add(40, 2)").fetchall() == [(42,)]
    conn.close()


def test_only_connections(examples: sqlwasm.Runtime) -> None:
    with pytest.raises(TypeError, match="apsw.Connection or a sqlite3.Connection, not str"):
        examples.install("data.db", examples.load(module_path("geo")))  # type: ignore[arg-type]


def test_a_connection_used_from_another_thread(examples: sqlwasm.Runtime) -> None:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    examples.install(conn, examples.load(module_path("geo")))
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(conn.execute("SELECT geo_bearing(0, 0, 1, 0)").fetchall()))
    worker.start()
    worker.join()
    assert results == [[(0.0,)]]
    conn.close()


def test_sqlwasm_install_checks_every_module_before_installing_any(tmp_path: Any) -> None:
    conn = sqlite3.connect(":memory:")
    loaded = sqlwasm.install(conn, [module_path("geo"), module_path("stats")], trusted_keys=[EXAMPLES_PUBLIC_KEY])
    assert [m.name for m in loaded] == ["geo", "stats"]
    assert conn.execute("SELECT stats_median(x) FROM (SELECT 1 AS x UNION ALL SELECT 5)").fetchall() == [(3.0,)]
    other = sqlite3.connect(":memory:")
    with pytest.raises(sqlwasm.SignatureError, match="not in trusted_keys"):
        sqlwasm.install(other, module_path("geo"))  # trusts nothing by default
    with pytest.raises(sqlwasm.ModuleFileNotFoundError):
        sqlwasm.install(other, [module_path("geo"), tmp_path / "missing.wasm"], trusted_keys=[EXAMPLES_PUBLIC_KEY])
    with pytest.raises(sqlite3.OperationalError, match="no such function: geo_haversine"):
        other.execute("SELECT geo_haversine(0, 0, 0, 0)").fetchall()
    conn.close()
    other.close()
