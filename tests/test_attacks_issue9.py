"""Attacks on issue 9 (table functions and the sql capability), as a hostile
guest author and a hostile SQL user.

Each xfail(strict=True) test is a breach found on the current code: it
states what should happen and flips to XPASS (a failure) once fixed. The
passing tests are attacks that failed and that no other file covers.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import apsw
import msgpack  # type: ignore[import-untyped]  # ships no type information
import pytest
from conftest import MEMORY, Build, fn, manifest, shipped, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sql_capability import GUEST, SCHEMA, QueryFailed, guest_manifest, rows, sql_runtime
from test_table import LIVE, SERIES, SERIES_WAT

import sqlwasm


@pytest.fixture
def open_db(build: Build, session_key: Ed25519PrivateKey) -> Iterator[Any]:
    """open_db(grant=..., **limits) -> a connection with the sql test schema
    and module q (tests/test_sql_capability.py's guest) installed."""
    opened: list[apsw.Connection] = []
    data = build(GUEST, guest_manifest())

    def _open(grant: Any = ("sql",), **options: Any) -> apsw.Connection:
        conn = apsw.Connection(":memory:")
        opened.append(conn)
        conn.execute(SCHEMA)
        sql_runtime(session_key, grant, **options).install(conn, data)
        return conn

    yield _open
    for conn in opened:
        conn.close()


def guest_error(conn: apsw.Connection, sql: str) -> str:
    """The error value q's query gets (the query must fail)."""
    with pytest.raises(QueryFailed) as info:
        rows(conn, sql)
    return str(info.value)


def seconds_to_fail(conn: apsw.Connection, sql: str) -> float:
    """How long q's call runs before its statement fails (it must fail)."""
    started = time.monotonic()
    with pytest.raises((apsw.SQLError, QueryFailed)):
        rows(conn, sql)
    return time.monotonic() - started


# ------------------------------------------------------------ table functions


@pytest.fixture
def series_conn(build: Build, session_key: Ed25519PrivateKey) -> Iterator[apsw.Connection]:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = runtime.connect(":memory:", [build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl"))])
    yield conn
    conn.close()


def live_handles(conn: apsw.Connection) -> int:
    ((value,),) = conn.execute("SELECT live()").fetchall()
    assert isinstance(value, int)
    return value


def test_a_table_function_filtered_again_after_a_partly_read_batch(series_conn: apsw.Connection) -> None:
    # Failed with "next's result has 22 trailing bytes" while sw_table_reset
    # (native/table.c) kept what was left of the previous filter's batch.
    # The correlated subquery stops after one row of three (LIMIT 1), then
    # SQLite filters the same cursor again for the next outer row.
    sql = "SELECT (SELECT i FROM series(0, v.column1) LIMIT 1) FROM (VALUES (3), (3)) AS v"
    assert series_conn.execute(sql).fetchall() == [(0,), (0,)]
    assert live_handles(series_conn) == 0


def test_shipped_text_tokens_in_a_correlated_subquery() -> None:
    conn = shipped("text")
    try:
        sql = "SELECT (SELECT token FROM text_tokens(v.column1) LIMIT 1) FROM (VALUES ('a b c'), ('d e f')) AS v"
        assert conn.execute(sql).fetchall() == [("a",), ("d",)]
    finally:
        conn.close()


def test_in_on_an_argument_column_filters_once_per_value_and_closes_every_handle(
    series_conn: apsw.Connection,
) -> None:
    sql = "SELECT count(*) FROM series WHERE arg1 = 0 AND arg2 IN (3, 5, 300)"
    assert series_conn.execute(sql).fetchall() == [(308,)]
    assert live_handles(series_conn) == 0


@pytest.mark.parametrize("force", [False, True])
def test_closing_the_connection_mid_iteration(build: Build, session_key: Ed25519PrivateKey, force: bool) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = runtime.connect(":memory:", [build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl"))])
    cursor = conn.execute("SELECT i FROM series(0, 1000)")
    assert next(cursor) == (0,)
    conn.close(force)  # finalizes the statement: close() runs on a still-bound instance, no crash
    with pytest.raises(apsw.ConnectionClosedError):
        conn.execute("SELECT 1")


# replay(batch): a table function whose next returns its blob argument's
# bytes once, as they are, then an empty array: any batch a guest may send.
REPLAY_WAT = r"""
(module
  (memory (export "memory") 2)
  (global $len (mut i32) (i32.const 0))
  (global $done (mut i32) (i32.const 0))
  (data (i32.const 100) "\90")
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 4096))
  ;; the argument row is [bin 8 or bin 16]: copy its bytes to 32768
  (func (export "open") (param $p i32) (param $n i32) (result i32) (local $data i32)
    (if (i32.eq (i32.load8_u offset=1 (local.get $p)) (i32.const 0xc4))
      (then (local.set $data (i32.add (local.get $p) (i32.const 3)))
            (global.set $len (i32.load8_u offset=2 (local.get $p))))
      (else (local.set $data (i32.add (local.get $p) (i32.const 4)))
            (global.set $len (i32.or (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 8))
                                     (i32.load8_u offset=3 (local.get $p))))))
    (memory.copy (i32.const 32768) (local.get $data) (global.get $len))
    (global.set $done (i32.const 0))
    (i32.const 1))
  (func (export "next") (param i32) (result i64)
    (if (global.get $done) (then (return (i64.const 0x0000006400000001))))
    (global.set $done (i32.const 1))
    (i64.or (i64.shl (i64.const 32768) (i64.const 32)) (i64.extend_i32_u (global.get $len))))
  (func (export "close") (param i32))
)
"""
REPLAY = {
    "name": "replay",
    "kind": "table",
    "abi": "msgpack",
    "args": ["blob"],
    "columns": [
        {"name": "a", "type": "any"},
        {"name": "i", "type": "integer"},
        {"name": "r", "type": "real"},
        {"name": "t", "type": "text"},
        {"name": "b", "type": "blob"},
    ],
    "exports": {"open": "open", "next": "next", "close": "close"},
}
CELLS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # all msgpack encodes; above 2**63 - 1 is out of range for SQLite
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["error", "x"]), st.text(max_size=4), max_size=2),
)
GUEST_BATCHES = st.one_of(
    st.binary(max_size=60),
    st.lists(st.lists(CELLS, min_size=4, max_size=6), max_size=4).map(lambda b: msgpack.packb(b, use_bin_type=True)),
    st.lists(st.tuples(st.none(), st.integers(-5, 5), st.floats(), st.text(max_size=4), st.binary(max_size=4)))
    .map(lambda b: msgpack.packb(b, use_bin_type=True))
    .flatmap(lambda packed: st.integers(0, len(packed)).map(lambda cut: packed[:cut])),
)


@pytest.fixture
def replay_conn(build: Build, session_key: Ed25519PrivateKey) -> Iterator[apsw.Connection]:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = runtime.connect(":memory:", [build(REPLAY_WAT, manifest(REPLAY, name="rp"))])
    yield conn
    conn.close()


@given(batch=GUEST_BATCHES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_batch_gives_typed_rows_or_a_named_error(replay_conn: apsw.Connection, batch: bytes) -> None:
    sql = "SELECT typeof(a), typeof(i), typeof(r), typeof(t), typeof(b) FROM replay(?)"
    try:
        found = replay_conn.execute(sql, (batch,)).fetchall()
    except apsw.SQLError as exc:
        assert str(exc).startswith("rp.replay: "), exc
    else:
        for kinds in found:
            assert kinds[1] in ("integer", "null") and kinds[2] in ("real", "null")
            assert kinds[3] in ("text", "null") and kinds[4] in ("blob", "null")
    assert replay_conn.execute(
        "SELECT count(*) FROM replay(?)", (b"\x91\x95\xc0\x01\x02\xa1t\xc4\x00",)
    ).fetchall() == [(1,)]


# rec_go(0): opens a cursor, then reads it with the packed query_next, whose
# host side calls the guest's sqlwasm_alloc, which reads the cursor again
# with query_next, and so on: host and guest frames pile up without end.
REENTRANT_ALLOC = """
  (import "sqlwasm" "query" (func $query (param i32 i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_next" (func $next (param i32) (result i64)))
  (import "sqlwasm" "query_close" (func $close (param i32)))
  (memory (export "memory") 16)
  (data (i32.const 1024) "SELECT 1")
  (global $cursor (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param $n i32) (result i32)
    (if (global.get $cursor) (then (drop (call $next (global.get $cursor)))))
    (i32.const 262144))
  (func (export "go") (param i64) (result i64)
    (global.set $cursor (call $query (i32.const 1024) (i32.const 8) (i32.const 0) (i32.const 0)))
    (drop (call $next (global.get $cursor)))
    (global.set $cursor (i32.const 0))
    (i64.const 0))
  (func (export "calm") (param i64) (result i64)
    (global.set $cursor (i32.const 0))
    (i64.const 1))
"""


def test_sqlwasm_alloc_reentering_query_next_fails_cleanly(build: Build, session_key: Ed25519PrivateKey) -> None:
    module = build(
        REENTRANT_ALLOC,
        manifest(fn("rec_go", export="go"), fn("rec_calm", export="calm"), name="rec", capabilities=["sql"]),
    )
    conn = sql_runtime(session_key).connect(":memory:", [module])
    try:
        with pytest.raises(apsw.SQLError, match=r"rec\.rec_go: host function sqlwasm\.query_next failed"):
            conn.execute("SELECT rec_go(0)").fetchall()
        assert conn.execute("SELECT rec_calm(0), 40 + 2").fetchall() == [(1, 42)]
    finally:
        conn.close()


# stuck(n): next hands out the rows [1], [2] forever; close never returns.
STUCK_CLOSE = r"""
(module
  (memory (export "memory") 1)
  (data (i32.const 256) "\92\91\01\91\02")
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "open") (param i32 i32) (result i32) (i32.const 0))
  (func (export "next") (param i32) (result i64) (i64.const 0x0000010000000005))
  (func (export "close") (param i32) (loop $forever (br $forever)))
)
"""
STUCK = {
    "name": "stuck",
    "kind": "table",
    "abi": "msgpack",
    "args": ["integer"],
    "columns": [{"name": "v", "type": "integer"}],
    "exports": {"open": "open", "next": "next", "close": "close"},
}
# Run in a child process: the breach is a hang.
INTERRUPT_A_SCAN = """
import sys, threading, apsw, sqlwasm
conn = sqlwasm.connect(":memory:", [open(sys.argv[1], "rb").read()], allow_unsigned=True, timeout_ms=None)
threading.Timer(0.2, conn.interrupt).start()
try:
    conn.execute("SELECT count(*) FROM stuck(1)").fetchall()
except apsw.Error as exc:
    print(type(exc).__name__)
"""


def test_interrupt_ends_a_scan_whose_close_never_returns(tmp_path: Any) -> None:
    import subprocess
    import sys

    module = tmp_path / "stuck.wasm"
    module.write_bytes(wasm_module(STUCK_CLOSE, manifest(STUCK, name="sk")))
    try:
        done = subprocess.run(
            # outside the checkout: the installed sqlwasm (CI does not build the checkout's)
            [sys.executable, "-c", INTERRUPT_A_SCAN, str(module)], capture_output=True, text=True, timeout=4,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the statement was still running 4 s after interrupt()")
    assert done.stdout.strip() == "InterruptError", done.stderr


# ------------------------------------------------------------------- time

# instr() compares the needle at every position of the haystack: one VM
# instruction whose cost grows with the square of the lengths (seconds here).
QUADRATIC = "SELECT instr(printf('%.*c', 700000, 'a'), printf('%.*c', 350000, 'a') || 'b')"
# The limit must leave the guest time to reach its query even on a loaded
# machine: a call stopped before the query starts would pass for the wrong reason.
REACH_QUERY_MS = 400


@pytest.mark.xfail(
    strict=True,
    reason="the progress handler (and sqlite3_interrupt) are only checked between VM instructions: one "
    "built-in call (instr on long strings; lengths are bounded only by SQLITE_LIMIT_LENGTH, 1e9) runs for "
    "as long as it likes; the guest is stopped only after the host function returns",
)
def test_one_expensive_builtin_call_in_a_query_is_stopped_by_the_time_limit(open_db: Any) -> None:
    conn = open_db(timeout_ms=REACH_QUERY_MS)
    assert seconds_to_fail(conn, QUADRATIC) < REACH_QUERY_MS / 1000 + 1.0


@pytest.mark.xfail(strict=True, reason="as above: interrupt() is not seen inside one built-in call")
def test_interrupt_stops_one_expensive_builtin_call_in_a_query(open_db: Any) -> None:
    conn = open_db(timeout_ms=None)
    timer = threading.Timer(REACH_QUERY_MS / 1000, conn.interrupt)
    timer.start()
    try:
        assert seconds_to_fail(conn, QUADRATIC) < REACH_QUERY_MS / 1000 + 1.0
    finally:
        timer.cancel()


def test_expensive_rows_between_progress_checks_stay_within_the_time_limit(open_db: Any) -> None:
    conn = open_db(timeout_ms=100)
    sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) "
        "SELECT sum(length(randomblob(15000000))) FROM n"
    )
    assert seconds_to_fail(conn, sql) < 1.0


# on_once(0): runs one query (the text in its data segment) and returns its
# cursor at once: no loop and no call to a wasm function after the query.
ONCE_SQL = "SELECT instr(printf('%.*c', 300000, 'a'), printf('%.*c', 150000, 'a') || 'b')"
ONCE = f"""
  (import "sqlwasm" "query" (func $query (param i32 i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_next" (func $next (param i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_close" (func $close (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{ONCE_SQL}")
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "once") (param i64) (result i64)
    (i64.extend_i32_s (call $query (i32.const 1024) (i32.const {len(ONCE_SQL)}) (i32.const 0) (i32.const 0))))
"""


def test_a_call_that_overran_in_a_query_fails_even_without_a_loop_after_it(
    build: Build, session_key: Ed25519PrivateKey
) -> None:
    module = build(ONCE, manifest(fn("on_once", export="once"), name="on", capabilities=["sql"]))
    conn = sql_runtime(session_key, timeout_ms=100).connect(":memory:", [module])
    try:
        started = time.monotonic()
        with pytest.raises(apsw.SQLError, match="on.on_once: .*time limit of 100 ms exceeded"):
            conn.execute("SELECT on_once(0)").fetchall()
        assert time.monotonic() - started > 0.1  # the query did run past the limit
    finally:
        conn.close()


# b_busy(n): counts n down to 0, then returns 7 (n = 3e8: about 0.2 s here).
BUSY = (
    MEMORY
    + """
  (func (export "busy") (param $n i64) (result i64)
    (loop $l
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $l (i64.gt_s (local.get $n) (i64.const 0))))
    (i64.const 7))
"""
)


@pytest.mark.xfail(
    strict=True,
    reason="a function of another module (no capabilities, so the query may call it) runs under its own "
    "timeout_ms, not the caller's remaining time, and no progress check falls between its calls",
)
def test_calling_another_modules_function_does_not_extend_the_callers_time(
    open_db: Any, build: Build, session_key: Ed25519PrivateKey
) -> None:
    conn = open_db(timeout_ms=100)
    busy = build(BUSY, manifest(fn("b_busy", export="busy"), name="b"))
    sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=2000).install(conn, busy)
    sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8) SELECT b_busy(3e8) FROM n"
    assert seconds_to_fail(conn, sql) < 1.0


def test_a_query_cannot_make_the_host_hold_far_more_than_the_guests_limits(open_db: Any) -> None:
    conn = open_db(max_result_bytes=1 << 20, memory_pages=16)
    apsw.memory_high_water(True)
    before = apsw.memory_used()
    blobs = ", ".join(["randomblob(1000000)"] * 100)
    try:
        rows(conn, f"SELECT length(max({blobs}))")
    except QueryFailed:
        pass  # refusing the query is fine too
    assert apsw.memory_high_water() - before < 64 << 20


# fl_flood(n): queries "SELECT ?" with params = a msgpack array of n nils
# (n + 5 bytes of guest memory); returns what query_next wrote (bytes).
FLOOD = """
  (import "sqlwasm" "query" (func $query (param i32 i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_next" (func $next (param i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_close" (func $close (param i32)))
  (memory (export "memory") 40)
  (data (i32.const 16) "SELECT ?")
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "flood") (param $n i64) (result i64)
    (i32.store8 (i32.const 4096) (i32.const 0xdd))
    (i32.store8 (i32.const 4097) (i32.wrap_i64 (i64.shr_u (local.get $n) (i64.const 24))))
    (i32.store8 (i32.const 4098) (i32.wrap_i64 (i64.shr_u (local.get $n) (i64.const 16))))
    (i32.store8 (i32.const 4099) (i32.wrap_i64 (i64.shr_u (local.get $n) (i64.const 8))))
    (i32.store8 (i32.const 4100) (i32.wrap_i64 (local.get $n)))
    (memory.fill (i32.const 4101) (i32.const 0xc0) (i32.wrap_i64 (local.get $n)))
    (i64.extend_i32_s
      (call $next
        (call $query (i32.const 16) (i32.const 8) (i32.const 4096) (i32.add (i32.wrap_i64 (local.get $n)) (i32.const 5)))
        (i32.const 64) (i32.const 900))))
"""


def test_params_beyond_what_sqlite_can_bind_are_refused_before_decoding(
    build: Build, session_key: Ed25519PrivateKey
) -> None:
    import tracemalloc

    module = build(FLOOD, manifest(fn("fl_flood", export="flood"), name="fl", capabilities=["sql"]))
    conn = sql_runtime(session_key).connect(":memory:", [module])
    try:
        tracemalloc.start()
        try:
            ((written,),) = conn.execute("SELECT fl_flood(500000)").fetchall()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(written, int) and written > 0  # an error value
        assert peak < 1 << 20
    finally:
        conn.close()


@pytest.mark.parametrize(
    "sql", ["SELECT unixepoch('now', 'subsec')", "SELECT julianday('now')", "SELECT randomblob(32)", "SELECT random()"]
)
def test_sql_alone_lends_neither_the_clock_nor_randomness(open_db: Any, sql: str) -> None:
    assert guest_error(open_db(), sql)


# ------------------------------------------------------------------ scope


@pytest.mark.xfail(
    strict=True,
    reason="SQLite flattens the view into the query and reports only the reads it makes (main.readings), "
    "never the temp view's name, so check_statement never sees that the query read outside main",
)
def test_a_temp_view_is_not_main_even_for_count(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    conn.execute("CREATE TEMP VIEW recent AS SELECT * FROM main.readings WHERE value > 20")
    assert "in database 'temp'" in guest_error(conn, "SELECT * FROM recent")  # columns: refused
    assert guest_error(conn, "SELECT count(*) FROM recent")  # answers [[2]]


@pytest.mark.xfail(
    strict=True,
    reason="SQLite resolves names before the authorizer sees a read: 'no such column' for an ungranted "
    "table tells its column names apart from the ones it lacks",
)
def test_an_ungranted_tables_column_names_do_not_leak(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    existing = guest_error(conn, "SELECT token FROM secret")
    missing = guest_error(conn, "SELECT nosuch FROM secret")
    assert existing.replace("token", "nosuch") == missing


@pytest.mark.xfail(
    strict=True,
    reason="an ungranted table is refused as 'not granted', a missing one as 'no such table': the guest "
    "learns the names of tables it may not read",
)
def test_an_ungranted_tables_name_does_not_leak(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    existing = guest_error(conn, "SELECT * FROM secret")
    missing = guest_error(conn, "SELECT * FROM nosuch")
    assert existing.replace("secret", "nosuch") == missing


@pytest.mark.parametrize(
    "sql",
    [
        # a temp view shadowing a granted main table, reading an ungranted one
        "SELECT place FROM readings",
        "SELECT count(*) FROM readings",
        # ungranted rows smuggled through json into a granted query
        "SELECT * FROM main.readings WHERE place IN "
        "(SELECT value FROM json_each((SELECT json_group_array(token) FROM secret)))",
        "SELECT EXISTS (SELECT 1 FROM secret)",
        "SELECT count(*) FROM main.readings WHERE EXISTS (SELECT * FROM secret)",
        "SELECT count(*) FROM main.readings, secret",
    ],
)
def test_shadowing_and_existence_probes_stay_out_of_ungranted_tables(open_db: Any, sql: str) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    conn.execute("CREATE TEMP VIEW readings AS SELECT token AS place, 1 AS value, 1 AS id FROM main.secret")
    assert "'secret' was not granted" in guest_error(conn, sql)


def test_quoting_and_case_reach_the_granted_main_table(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    conn.execute("CREATE TEMP TABLE readings(x)")
    for sql in ('SELECT count(*) FROM "main"."READINGS"', 'SELECT count(*) FROM main."readings" WHERE id > 0'):
        assert rows(conn, sql) == [[3]]


def test_main_spelled_in_capitals_is_main(open_db: Any) -> None:
    # Refused while QueryPolicy.authorize compared the database name (as typed) with 'main' exactly.
    assert rows(open_db(), "SELECT count(*) FROM MAIN.readings") == [[3]]


@pytest.mark.xfail(
    strict=True,
    reason="a false refusal, not a breach: with a table list, QueryPolicy.authorize refuses a row-less read "
    "(count(*)) of the query's own recursive CTE as an ungranted table, though docs/security.md allows it",
)
def test_count_of_a_recursive_cte_with_a_table_list(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    assert rows(conn, "WITH x(a) AS (SELECT place FROM readings) SELECT count(*) FROM x") == [[3]]  # flattened
    counting = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT count(*) FROM n"
    assert rows(conn, counting) == [[5]]


def test_a_directonly_function_inside_a_temp_view_is_refused(open_db: Any) -> None:
    # SQLite lets DIRECTONLY functions into TEMP views; the query must not run them
    conn = open_db()
    called: list[Any] = []

    def app_secret(value: Any) -> int:
        called.append(value)
        return 1

    conn.create_scalar_function("app_secret", app_secret, 1, flags=apsw.SQLITE_DIRECTONLY)
    conn.execute("CREATE TEMP VIEW tv AS SELECT place FROM main.readings WHERE app_secret(place)")
    assert "app_secret() may only be called from top-level SQL" in guest_error(conn, "SELECT count(*) FROM tv")
    assert called == []


def test_fts4_optimize_through_a_select_writes_nothing(open_db: Any) -> None:
    # optimize() merges an FTS4 table's segments: a write sqlite3_stmt_readonly
    # cannot see; its own statements are refused by the authorizer.
    conn = open_db()
    conn.execute("CREATE VIRTUAL TABLE d4 USING fts4(body)")
    for i in range(20):
        conn.execute("INSERT INTO d4 VALUES (?)", (f"hello {i}",))
    segments = conn.execute("SELECT level, idx FROM d4_segdir ORDER BY 1, 2").fetchall()
    changes = conn.total_changes()
    assert "is not allowed: a query may only read" in guest_error(conn, "SELECT optimize(d4) FROM d4 LIMIT 1")
    assert conn.execute("SELECT level, idx FROM d4_segdir ORDER BY 1, 2").fetchall() == segments
    assert conn.total_changes() == changes
    assert rows(conn, "SELECT count(*) FROM d4 WHERE d4 MATCH 'hello'") == [[20]]


def test_the_applications_progress_handler_keeps_running(open_db: Any) -> None:
    conn = open_db()
    ticks: list[int] = []

    def tick() -> bool:
        ticks.append(1)
        return False

    conn.set_progress_handler(tick, 10)
    counting = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) SELECT count(*) FROM n"
    assert rows(conn, counting) == [[1000]]
    assert len(ticks) > 100  # it saw the guest's query too
    ticks.clear()
    conn.execute(counting).fetchall()
    assert len(ticks) > 100  # and is still installed after it
    conn.set_progress_handler(lambda: True, 10)  # an application handler that stops everything stops guests too
    with pytest.raises((apsw.SQLError, apsw.InterruptError), match="interrupted during a query"):
        rows(conn, counting)


def counting_function(conn: apsw.Connection, name: str, table: str) -> None:
    """An ordinary application function name() (not DIRECTONLY) that counts
    the rows of table with its own SQL, as helpers do."""

    def count(*_: apsw.SQLiteValue) -> int:
        ((found,),) = conn.execute(f"SELECT count(*) FROM {table}").fetchall()
        assert isinstance(found, int)
        return found

    conn.create_scalar_function(name, count, 0)


@pytest.mark.xfail(
    strict=True,
    reason="SQL an application function runs while a query steps is authorized by QueryPolicy.authorize alone; "
    "a row-less read names no database, and only check_statement (run for the guest's own statement, "
    "never for nested ones) looks where it is: temp and attached tables are counted",
)
@pytest.mark.parametrize("table", ["audit", "other"])
def test_an_application_functions_sql_stays_in_main(open_db: Any, table: str) -> None:
    conn = open_db()
    conn.execute("CREATE TEMP TABLE audit(x); INSERT INTO audit VALUES (1), (2)")
    conn.execute("ATTACH ':memory:' AS aux; CREATE TABLE aux.other(x); INSERT INTO aux.other VALUES (1), (2), (3)")
    counting_function(conn, "app_size", table)
    assert conn.execute("SELECT app_size()").fetchall()[0][0] > 0  # the application itself may
    assert guest_error(conn, "SELECT app_size()")


def test_an_application_functions_sql_stays_in_the_table_list(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    counting_function(conn, "app_secrets", "secret")
    assert conn.execute("SELECT app_secrets()").fetchall() == [(1,)]
    assert "'secret' was not granted" in guest_error(conn, "SELECT app_secrets()")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT EXISTS (SELECT 1 FROM tsecret)",
        "SELECT count(*) FROM (SELECT 1 FROM asecret)",
        "SELECT count(*) FROM readings, tsecret",
    ],
)
def test_rowless_reads_of_temp_and_attached_tables_are_refused(open_db: Any, sql: str) -> None:
    conn = open_db()
    conn.execute("CREATE TEMP TABLE tsecret(x); INSERT INTO tsecret VALUES ('temporary')")
    conn.execute("ATTACH ':memory:' AS aux; CREATE TABLE aux.asecret(x); INSERT INTO aux.asecret VALUES ('attached')")
    assert "outside the main database" in guest_error(conn, sql)
