"""Threads and isolation: one Runtime serving many threads, each with its
own connection; what guest state is shared (within a connection) and what
is not (between connections); fresh instances per statement.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import apsw
import pytest
from conftest import MEMORY, Build, Connect, fn, manifest, one_error
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm

CALLS = 50_000
THREADS = 8

# Module 'w': a raw function, and msgpack functions that hand back their
# first argument exactly as the host encoded it (so every row's bytes go
# through guest memory and back).
WORK_WAT = MEMORY + """
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "mix") (param i64 i64) (result i64)
    (i64.add (i64.mul (local.get 0) (i64.const 3)) (local.get 1)))
  ;; the row is [x, ...]: a one-byte fixarray header, then x
  (func (export "first") (param $p i32) (param $n i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (i32.add (local.get $p) (i32.const 1))) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $n) (i32.const 1)))))
"""
WORK_MANIFEST = manifest(
    fn("w_mix", export="mix", args=["integer", "integer"], deterministic=True),
    fn("w_id", export="first", abi="msgpack", args=["any"], returns="any", deterministic=True),
    name="w",
)
SERIES = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {CALLS}) "


def run_threads(count: int, work: Callable[[int], Any]) -> dict[int, Any]:
    """Runs work(k) for k in range(count) on threads started together;
    returns the results, re-raising the first failure here."""
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def main(k: int) -> None:
        try:
            barrier.wait()
            results[k] = work(k)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=main, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def test_shared_runtime_many_threads(build: Build, runtime: sqlwasm.Runtime) -> None:
    module = runtime.load(build(WORK_WAT, WORK_MANIFEST))

    def work(k: int) -> tuple[Any, ...]:
        conn = runtime.connect(":memory:", [module])
        try:
            raw = conn.execute(SERIES + "SELECT sum(w_mix(i, ?)) FROM n", (k,)).fetchone()[0]
            packed = conn.execute(SERIES + "SELECT sum(w_id(i * ? + 1000)) FROM n", (k + 1,)).fetchone()[0]
            text = conn.execute(
                SERIES + "SELECT sum(length(w_id('t' || (i + ?)))), count(*) FROM n", (k,)
            ).fetchone()
            return raw, packed, text
        finally:
            conn.close()

    start = time.monotonic()
    results = run_threads(THREADS, work)
    elapsed = time.monotonic() - start
    total = CALLS * (CALLS + 1) // 2
    for k in range(THREADS):
        raw, packed, text = results[k]
        assert raw == 3 * total + k * CALLS
        assert packed == (k + 1) * total + 1000 * CALLS
        assert text == (sum(1 + len(str(i + k)) for i in range(1, CALLS + 1)), CALLS)
    assert elapsed < 30, elapsed  # 1.2 million calls; about a second here


def test_threads_sharing_one_connection(build: Build, connect: Connect) -> None:
    """SQLite serialises a connection: its instance never runs on two
    threads at once, whatever the threads do."""
    conn = connect(build(WORK_WAT, WORK_MANIFEST))

    def work(k: int) -> list[Any]:
        out = []
        for _ in range(20):
            while True:
                try:
                    out.append(conn.execute(SERIES.replace(str(CALLS), "2000") + "SELECT sum(w_id(i + ?)), sum(w_mix(i, 0)) FROM n", (k,)).fetchone())
                    break
                except apsw.ThreadingViolationError:  # APSW's own guard against concurrent use of a cursor
                    time.sleep(0.001)
        return out

    results = run_threads(4, work)
    for k in range(4):
        assert results[k] == [(2000 * 2001 // 2 + 2000 * k, 3 * 2000 * 2001 // 2)] * 20


# ---------------------------------------------------------- guest state

STATE_WAT = MEMORY + """
  (global $n (mut i64) (i64.const 0))
  (func (export "next") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (global.get $n))
  (func (export "poke") (param i64 i64) (result i64)
    (i64.store (i32.wrap_i64 (local.get 0)) (local.get 1)) (i64.const 0))
  (func (export "peek") (param i64) (result i64) (i64.load (i32.wrap_i64 (local.get 0))))
  (func (export "boom") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (if (i64.eq (local.get 0) (i64.const 0)) (then unreachable))
    (global.get $n))
"""


def state_manifest(**extra: Any) -> dict[str, Any]:
    return manifest(
        fn("s_next", export="next"),
        fn("s_poke", export="poke", args=["integer", "integer"]),
        fn("s_peek", export="peek"),
        fn("s_boom", export="boom"),
        name="s",
        **extra,
    )


THREE_ROWS = "SELECT s_next(0) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)"


def column(conn: apsw.Connection, sql: str, *bindings: Any) -> list[Any]:
    return [row[0] for row in conn.execute(sql, bindings)]


def test_state_persists_within_a_connection_and_never_crosses(build: Build, connect: Connect) -> None:
    data = build(STATE_WAT, state_manifest())
    a, b = connect(data), connect(data)
    # across rows and across statements of one connection
    assert column(a, THREE_ROWS) == [1, 2, 3]
    assert column(a, THREE_ROWS) == [4, 5, 6]
    assert column(a, "SELECT s_next(0); SELECT s_next(0)") == [7, 8]
    # another connection has its own instance: globals...
    assert column(b, THREE_ROWS) == [1, 2, 3]
    assert column(a, "SELECT s_next(0)") == [9]
    # ...and memory
    assert column(a, "SELECT s_poke(4096, 1234567)") == [0]
    assert column(a, "SELECT s_peek(4096)") == [1234567]
    assert column(b, "SELECT s_peek(4096)") == [0]
    # a trap does not reset the instance: the increment before it stays
    assert "s.s_boom: trap (unreachable)" in one_error(a, "SELECT s_boom(0)")
    assert column(a, "SELECT s_next(0), s_peek(4096)") == [11]
    assert column(a, "SELECT s_peek(4096)") == [1234567]


def test_state_per_thread_connection(build: Build, runtime: sqlwasm.Runtime) -> None:
    module = runtime.load(build(STATE_WAT, state_manifest()))

    def work(k: int) -> list[int]:
        conn = runtime.connect(":memory:", [module])
        try:
            conn.execute("SELECT s_poke(2048, ?)", (k,)).fetchall()
            seen = [conn.execute("SELECT s_next(0)").fetchone()[0] for _ in range(200)]
            assert conn.execute("SELECT s_peek(2048)").fetchone()[0] == k
            return seen
        finally:
            conn.close()

    assert run_threads(THREADS, work) == {k: list(range(1, 201)) for k in range(THREADS)}


# ------------------------------------------------- instance per statement


@pytest.fixture
def per_statement(build: Build, connect: Connect) -> apsw.Connection:
    return connect(build(STATE_WAT, state_manifest(instance="statement")))


def test_fresh_instance_per_statement(per_statement: apsw.Connection) -> None:
    conn = per_statement
    assert column(conn, THREE_ROWS) == [1, 2, 3]  # rows of one statement share it
    assert column(conn, THREE_ROWS) == [1, 2, 3]
    assert column(conn, "SELECT s_next(0), s_next(0)") == [1]
    assert conn.execute("SELECT s_next(0), s_next(0)").fetchall() == [(1, 2)]
    # memory is fresh too
    conn.execute("SELECT s_poke(4096, 99)").fetchall()
    assert column(conn, "SELECT s_peek(4096)") == [0]
    assert conn.execute("SELECT s_poke(4096, 99), s_peek(4096)").fetchall() == [(0, 99)]


def test_per_statement_several_statements_in_a_row(per_statement: apsw.Connection) -> None:
    conn = per_statement
    assert column(conn, "SELECT s_next(0); SELECT s_next(0); " + THREE_ROWS + "; SELECT wasm_call('s', 'next', 0)") == [
        1,
        1,
        1,
        2,
        3,
        1,
    ]
    for _ in range(50):
        assert column(conn, "SELECT s_next(0)") == [1]


def test_per_statement_after_a_trap(per_statement: apsw.Connection) -> None:
    conn = per_statement
    assert "s.s_boom: trap (unreachable)" in one_error(conn, "SELECT s_boom(1), s_boom(2), s_boom(0)")
    assert column(conn, "SELECT s_next(0)") == [1]
    # a statement that traps half-way through its rows
    with pytest.raises(apsw.SQLError, match="trap"):
        conn.execute("SELECT s_boom(x) FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 0)").fetchall()
    assert column(conn, THREE_ROWS) == [1, 2, 3]
    assert conn.execute("SELECT s_boom(5), s_next(0)").fetchall() == [(1, 2)]


def test_per_statement_instance_serves_the_statements_triggers(per_statement: apsw.Connection) -> None:
    conn = per_statement
    conn.execute(
        "CREATE TABLE t(x); CREATE TABLE seen(v);"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO seen VALUES (s_next(0)); END"
    )
    conn.execute("INSERT INTO t SELECT s_next(0) FROM (SELECT 1 UNION ALL SELECT 2)")
    # one statement: the SELECT's calls and the trigger's calls share one instance
    assert sorted(column(conn, "SELECT x FROM t") + column(conn, "SELECT v FROM seen")) == [1, 2, 3, 4]
    conn.execute("INSERT INTO t VALUES (0)")
    assert column(conn, "SELECT v FROM seen ORDER BY rowid DESC LIMIT 1") == [1]


def test_per_statement_instances_on_many_threads(build: Build, runtime: sqlwasm.Runtime) -> None:
    module = runtime.load(build(STATE_WAT, state_manifest(instance="statement")))

    def work(k: int) -> list[list[int]]:
        conn = runtime.connect(":memory:", [module])
        try:
            return [column(conn, THREE_ROWS) for _ in range(30)]
        finally:
            conn.close()

    assert run_threads(THREADS, work) == {k: [[1, 2, 3]] * 30 for k in range(THREADS)}


def test_per_statement_instance_is_not_swapped_by_a_nested_statement(
    build: Build, session_key: Ed25519PrivateKey
) -> None:
    """A host function of module 'lg' runs SQL while the outer statement is
    still using per-statement module 's': that inner statement must not swap
    the instance under the outer one (whose rows count 1, 2, 3)."""
    log_wat = '(import "sqlwasm" "log" (func $log (param i32 i32 i32)))' + MEMORY + """
      (func (export "say") (param i64) (result i64) (call $log (i32.const 1) (i32.const 0) (i32.const 1)) (local.get 0))
    """
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["log"])
    conn = runtime.connect(
        ":memory:",
        [
            build(log_wat, manifest(fn("lg_say", export="say"), name="lg", capabilities=["log"])),
            build(STATE_WAT, state_manifest(instance="statement")),
        ],
    )

    inner: list[Any] = []

    class RunsSql(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            inner.append(conn.execute("SELECT 6 * 7").fetchall())

    logger = logging.getLogger("sqlwasm.guest.lg")
    handler = RunsSql()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        rows = conn.execute(
            "SELECT s_next(0), lg_say(x) FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3)"
        ).fetchall()
        assert inner == [[(42,)]] * 3
        assert rows == [(1, 1), (2, 2), (3, 3)]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        conn.close()


def test_per_statement_counts_statements_that_start_with_a_comment(per_statement: apsw.Connection) -> None:
    """SQLite reports a statement that starts with a comment the way it
    reports a trigger ('-- ...'): it is still a statement of its own."""
    conn = per_statement
    for sql in ("SELECT s_next(0)", "-- a comment\nSELECT s_next(0)", "/* another */ SELECT s_next(0)", "-- again\nSELECT s_next(0)"):
        assert column(conn, sql) == [1], sql


def test_per_statement_instance_is_shared_with_statements_nested_in_it(per_statement: apsw.Connection) -> None:
    """A Python function the outer statement calls runs its own statement on
    the connection: it shares the outer statement's instance (docs/manifest.md)."""
    conn = per_statement
    inner: list[int] = []
    conn.create_scalar_function("py_inner", lambda x: inner.append(conn.execute("SELECT s_next(0)").fetchone()[0]) or x)
    rows = conn.execute("SELECT s_next(0), py_inner(x) FROM (SELECT 1 AS x UNION ALL SELECT 2)").fetchall()
    assert [r[0] for r in rows] + inner in ([1, 3, 2, 4], [2, 4, 1, 3])  # one instance counts all four calls
    assert column(conn, "SELECT s_next(0)") == [1]  # the next outermost statement gets a fresh one
