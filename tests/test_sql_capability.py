"""The sql capability: guests read their own database, and nothing else.

Hostile guests (inline WAT) try to write, attach, change pragmas, control
transactions, read tables and views they were not granted, call functions
that would lend them capabilities, run out the clock, and pass bad pointers
and stale cursors. Each rule of docs/security.md's sql section is attacked here.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any, Iterator

import apsw
import msgpack
import pytest
from conftest import MEMORY, Build, fn, manifest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import CapabilityError, _guest_sql

SQL_IMPORTS = """
  (import "sqlwasm" "query" (func $query (param i32 i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_next" (func $next (param i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_close" (func $close (param i32)))
"""

# q(blob) -> blob. The blob argument is: u32 flags, u32 cap, u32 count,
# u32 sql_len, the SQL text, then msgpack params (the rest). The guest opens
# `count` cursors on the query, then reads the last one with query_next
# (buffers of at most `cap` bytes, 0: all it has) until an empty array, an
# error map or a negative size (which it appends as a msgpack int32), and
# returns everything query_next wrote. flags bit 0: query_close it.
# q_raw_*: the imports with any arguments; q_keep/q_next_kept: a cursor kept
# across calls; q_dump(blob u32 ptr, u32 len): guest memory.
GUEST = (
    SQL_IMPORTS
    + """
  (memory (export "memory") 6)
  (data (i32.const 16) "SELECT 1")
  (global $kept (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param i32) (result i32)
    (if (result i32) (i32.le_u (local.get 0) (i32.const 65536)) (then (i32.const 65536)) (else (i32.const 0))))
  (func $be32 (param $p i32) (param $v i32)
    (i32.store8 (local.get $p) (i32.shr_u (local.get $v) (i32.const 24)))
    (i32.store8 offset=1 (local.get $p) (i32.shr_u (local.get $v) (i32.const 16)))
    (i32.store8 offset=2 (local.get $p) (i32.shr_u (local.get $v) (i32.const 8)))
    (i32.store8 offset=3 (local.get $p) (local.get $v)))
  ;; the blob argument of a one-argument row: (data ptr, data len)
  (func $blob (param $p i32) (result i32 i32)
    (local $tag i32)
    (local.set $tag (i32.load8_u offset=1 (local.get $p)))
    (if (i32.eq (local.get $tag) (i32.const 0xc4))
      (then (return (i32.add (local.get $p) (i32.const 3)) (i32.load8_u offset=2 (local.get $p)))))
    (if (i32.eq (local.get $tag) (i32.const 0xc5))
      (then (return (i32.add (local.get $p) (i32.const 4))
                    (i32.or (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 8))
                            (i32.load8_u offset=3 (local.get $p))))))
    unreachable)
  ;; returns the bytes from 131077 to $end as a msgpack bin
  (func $result (param $end i32) (result i64)
    (i32.store8 (i32.const 131072) (i32.const 0xc6))
    (call $be32 (i32.const 131073) (i32.sub (local.get $end) (i32.const 131077)))
    (i64.or (i64.shl (i64.const 131072) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $end) (i32.const 131072)))))
  (func (export "q") (param $p i32) (param $n i32) (result i64)
    (local $d i32) (local $len i32) (local $cap i32) (local $count i32) (local $sql i32) (local $sqllen i32)
    (local $i i32) (local $cur i32) (local $pos i32) (local $r i32) (local $first i32) (local $room i32)
    (call $blob (local.get $p))
    (local.set $len) (local.set $d)
    (local.set $cap (i32.load offset=4 (local.get $d)))
    (local.set $count (i32.load offset=8 (local.get $d)))
    (local.set $sqllen (i32.load offset=12 (local.get $d)))
    (local.set $sql (i32.add (local.get $d) (i32.const 16)))
    (loop $open
      (local.set $cur (call $query (local.get $sql) (local.get $sqllen)
                                   (i32.add (local.get $sql) (local.get $sqllen))
                                   (i32.sub (i32.sub (local.get $len) (i32.const 16)) (local.get $sqllen))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $open (i32.lt_u (local.get $i) (local.get $count))))
    (local.set $pos (i32.const 131077))
    (block $done
      (loop $drain
        (local.set $room (i32.sub (i32.const 393000) (local.get $pos)))
        (if (i32.and (i32.ne (local.get $cap) (i32.const 0)) (i32.lt_u (local.get $cap) (local.get $room)))
          (then (local.set $room (local.get $cap))))
        (local.set $r (call $next (local.get $cur) (local.get $pos) (local.get $room)))
        (if (i32.lt_s (local.get $r) (i32.const 0))
          (then (i32.store8 (local.get $pos) (i32.const 0xd2))
                (call $be32 (i32.add (local.get $pos) (i32.const 1)) (local.get $r))
                (local.set $pos (i32.add (local.get $pos) (i32.const 5)))
                (br $done)))
        (local.set $first (i32.load8_u (local.get $pos)))
        (local.set $pos (i32.add (local.get $pos) (local.get $r)))
        (br_if $done (i32.eq (local.get $first) (i32.const 0x90)))
        (br_if $done (i32.eq (i32.and (local.get $first) (i32.const 0xf0)) (i32.const 0x80)))
        (br $drain)))
    (if (i32.and (i32.load (local.get $d)) (i32.const 1)) (then (call $close (local.get $cur))))
    (call $result (local.get $pos)))
  (func (export "q_dump") (param $p i32) (param $n i32) (result i64)
    (local $d i32) (local $len i32)
    (call $blob (local.get $p))
    (local.set $len) (local.set $d)
    (memory.copy (i32.const 131077) (i32.load (local.get $d)) (i32.load offset=4 (local.get $d)))
    (call $result (i32.add (i32.const 131077) (i32.load offset=4 (local.get $d)))))
  (func (export "q_raw_query") (param i64 i64 i64 i64) (result i64)
    (i64.extend_i32_s (call $query (i32.wrap_i64 (local.get 0)) (i32.wrap_i64 (local.get 1))
                                   (i32.wrap_i64 (local.get 2)) (i32.wrap_i64 (local.get 3)))))
  (func (export "q_raw_next") (param i64 i64 i64) (result i64)
    (i64.extend_i32_s (call $next (i32.wrap_i64 (local.get 0)) (i32.wrap_i64 (local.get 1))
                                  (i32.wrap_i64 (local.get 2)))))
  (func (export "q_raw_close") (param i64) (result i64)
    (call $close (i32.wrap_i64 (local.get 0)))
    (i64.const 0))
  (func (export "q_keep") (param i64) (result i64)
    (global.set $kept (call $query (i32.const 16) (i32.const 8) (i32.const 0) (i32.const 0)))
    (i64.extend_i32_s (global.get $kept)))
  (func (export "q_next_kept") (param i64) (result i64)
    (i64.extend_i32_s (call $next (global.get $kept) (i32.const 131072) (i32.const 1000))))
"""
)


def guest_manifest(
    name: str = "q", capabilities: tuple[str, ...] = ("sql",), deterministic: bool = False
) -> dict[str, Any]:
    return manifest(
        fn(f"{name}", export="q", abi="msgpack", args=["blob"], returns="blob", deterministic=deterministic),
        fn(f"{name}_dump", export="q_dump", abi="msgpack", args=["blob"], returns="blob"),
        fn(f"{name}_raw_query", export="q_raw_query", args=["integer"] * 4),
        fn(f"{name}_raw_next", export="q_raw_next", args=["integer"] * 3),
        fn(f"{name}_raw_close", export="q_raw_close"),
        fn(f"{name}_keep", export="q_keep"),
        fn(f"{name}_next_kept", export="q_next_kept"),
        name=name,
        capabilities=list(capabilities),
    )


def request(sql: str | bytes, params: Any = None, *, cap: int = 0, count: int = 1, close: bool = True) -> bytes:
    """The blob argument of q()."""
    text = sql.encode() if isinstance(sql, str) else sql
    packed = b"" if params is None else (params if isinstance(params, bytes) else msgpack.packb(params))
    return struct.pack("<4I", int(close), cap, count, len(text)) + text + packed


def answers(blob: bytes) -> list[Any]:
    """Every msgpack value query_next wrote, in order."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(blob)
    return list(unpacker)


def rows(conn: apsw.Connection, sql: str, params: Any = None, *, name: str = "q", **options: Any) -> list[list[Any]]:
    """The rows the guest reads; an error value raises QueryFailed."""
    ((blob,),) = conn.execute(f"SELECT {name}(?)", (request(sql, params, **options),)).fetchall()
    found: list[list[Any]] = []
    for value in answers(blob):
        if isinstance(value, dict):
            raise QueryFailed(value["error"])
        found.extend(value)
    return found


def error_of(conn: apsw.Connection, sql: str, params: Any = None, **options: Any) -> str:
    with pytest.raises(QueryFailed) as info:
        rows(conn, sql, params, **options)
    return str(info.value)


class QueryFailed(Exception):
    pass


def sql_runtime(session_key: Ed25519PrivateKey, grant: Any = ("sql",), **options: Any) -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=grant, **options)


SCHEMA = """
CREATE TABLE readings(id INTEGER PRIMARY KEY, place TEXT, value REAL);
CREATE TABLE places(name TEXT PRIMARY KEY, lat REAL, lon REAL);
CREATE TABLE secret(token TEXT);
CREATE VIEW v AS SELECT * FROM secret;
CREATE VIEW v2 AS SELECT * FROM v;
CREATE VIEW hot AS SELECT * FROM readings WHERE value > 20;
INSERT INTO readings(place, value) VALUES ('a', 10.5), ('b', 25.0), ('a', 30.25);
INSERT INTO places VALUES ('a', 51.5, -0.1), ('b', 48.9, 2.3);
INSERT INTO secret VALUES ('hunter2');
"""


@pytest.fixture
def open_db(build: Build, session_key: Ed25519PrivateKey) -> Iterator[Any]:
    """open_db(grant=..., **limits) -> a connection with SCHEMA and module q installed."""
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


# ------------------------------------------------------------------ reading


def test_guest_reads_rows(open_db: Any) -> None:
    conn = open_db()
    assert rows(conn, "SELECT id, place, value FROM readings ORDER BY id") == [
        [1, "a", 10.5],
        [2, "b", 25.0],
        [3, "a", 30.25],
    ]


def test_params_bind_positionally(open_db: Any) -> None:
    conn = open_db()
    assert rows(conn, "SELECT ?, ?, ?, ?, ?, ?", [1, -(2**63), 2.5, "text", b"\x00\xff", None]) == [
        [1, -(2**63), 2.5, "text", b"\x00\xff", None]
    ]
    assert rows(conn, "SELECT place FROM readings WHERE value > ? ORDER BY id", [20]) == [["b"], ["a"]]


@pytest.mark.parametrize(
    "params, expected",
    [
        (b"\x93\x01", "params are not one well-formed msgpack value"),  # truncated
        (b"\x91\x01\x01", "params are not one well-formed msgpack value"),  # trailing bytes
        (msgpack.packb({"a": 1}), "params must be a msgpack array"),
        (msgpack.packb([[1]]), "parameter 1 is a list"),
        (msgpack.packb([1, {"a": 1}]), "parameter 2 is a dict"),
        (msgpack.packb([2**64 - 1]), "parameter 1 does not fit a 64-bit integer"),
        (msgpack.packb([msgpack.ExtType(1, b"x")]), "parameter 1 is a ExtType"),
        (b"\x91\xa1\xff", "params are not one well-formed msgpack value"),  # invalid UTF-8
        (msgpack.packb([1, 2]), "Incorrect number of bindings"),
    ],
)
def test_bad_params_are_error_values(open_db: Any, params: bytes, expected: str) -> None:
    conn = open_db()
    assert expected in error_of(conn, "SELECT ?", params)


def test_query_text_not_utf8_is_an_error_value(open_db: Any) -> None:
    assert "not valid UTF-8" in error_of(open_db(), b"SELECT '\xff'")  # type: ignore[arg-type]


def test_sql_error_is_a_value_and_the_guest_goes_on(open_db: Any) -> None:
    conn = open_db()
    assert "no such table: nowhere" in error_of(conn, "SELECT * FROM nowhere")
    assert "syntax error" in error_of(conn, "SELEKT 1")
    assert rows(conn, "SELECT 7") == [[7]]


def test_empty_result_and_empty_statement(open_db: Any) -> None:
    conn = open_db()
    assert rows(conn, "SELECT * FROM readings WHERE 0") == []
    assert rows(conn, "-- nothing") == []


def test_rows_come_in_batches_that_fit_the_buffer(open_db: Any) -> None:
    conn = open_db()
    sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT i, 'x' FROM n"
    ((blob,),) = conn.execute("SELECT q(?)", (request(sql, cap=40),)).fetchall()
    batches = answers(blob)
    assert batches[-1] == [] and all(0 < len(b) for b in batches[:-1])
    assert [r for b in batches for r in b] == [[i, "x"] for i in range(1, 101)]
    assert all(len(msgpack.packb(b)) <= 40 for b in batches)
    assert len(batches) > 10


def test_a_row_that_does_not_fit_asks_for_more_room(open_db: Any) -> None:
    conn = open_db()
    ((blob,),) = conn.execute("SELECT q(?)", (request("SELECT 'abcdefghij'", cap=5),)).fetchall()
    # -(bytes needed): a one-row array header, the row's header and the string.
    assert answers(blob) == [-len(msgpack.packb([["abcdefghij"]]))]
    ((blob,),) = conn.execute("SELECT q(?)", (request("SELECT 'abcdefghij'", cap=14),)).fetchall()
    assert answers(blob) == [[["abcdefghij"]], []]


def test_big_batches_use_wider_array_headers(open_db: Any) -> None:
    conn = open_db()
    sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 70000) SELECT i % 7 FROM n"
    ((blob,),) = conn.execute("SELECT q(?)", (request(sql),)).fetchall()
    batches = answers(blob)
    assert [r for b in batches for r in b] == [[i % 7] for i in range(1, 70001)]
    assert len(batches[0]) > 65535  # array 32 header


def test_query_sees_the_calling_statements_transaction(open_db: Any) -> None:
    conn = open_db()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO readings(place, value) VALUES ('c', 99.0)")
    assert rows(conn, "SELECT place FROM readings WHERE value = 99") == [["c"]]
    # and the rows the calling statement itself has written so far
    conn.execute("CREATE TABLE log(n)")
    conn.execute("INSERT INTO log VALUES (1), (2)")
    ((blob,),) = conn.execute("SELECT q(?) FROM (SELECT 1)", (request("SELECT count(*) FROM log"),)).fetchall()
    assert answers(blob) == [[[2]], []]
    conn.execute("ROLLBACK")
    assert rows(conn, "SELECT count(*) FROM readings WHERE value = 99") == [[0]]


def test_no_statement_stays_open_after_the_call(open_db: Any) -> None:
    conn = open_db()
    # Opened with many rows and never closed by the guest:
    sql = "SELECT * FROM readings, readings AS r2, readings AS r3"
    conn.execute("SELECT q(?)", (request(sql, cap=20, close=False),)).fetchall()
    # A statement still reading readings would make DROP fail ("table is locked").
    conn.execute("DROP VIEW hot")
    conn.execute("DROP TABLE readings")


# ------------------------------------------------------------- read-only


WRITES = [
    "INSERT INTO readings(place, value) VALUES ('x', 1)",
    "UPDATE readings SET value = 0",
    "DELETE FROM readings",
    "REPLACE INTO places VALUES ('a', 0, 0)",
    "WITH x AS (SELECT 1) INSERT INTO secret SELECT * FROM x",
    "CREATE TABLE t2(a)",
    "CREATE INDEX ix ON readings(value)",
    "CREATE VIEW v3 AS SELECT 1",
    "CREATE TRIGGER tr AFTER INSERT ON readings BEGIN SELECT 1; END",
    "DROP TABLE secret",
    "DROP VIEW v",
    "ALTER TABLE readings ADD COLUMN extra",
    "ALTER TABLE readings RENAME TO r",
    "CREATE TEMP TABLE t(a)",
    "CREATE TEMP VIEW tv AS SELECT 1",
    "CREATE TEMP TRIGGER tt AFTER INSERT ON readings BEGIN SELECT 1; END",
    "CREATE VIRTUAL TABLE f USING fts5(x)",
    "ATTACH ':memory:' AS other",
    "DETACH main",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "RELEASE s",
    "PRAGMA writable_schema = 1",
    "PRAGMA user_version = 7",
    "PRAGMA user_version",
    "PRAGMA table_info(secret)",
    "PRAGMA journal_mode = off",
    "SELECT * FROM pragma_table_info('secret')",
    "SELECT * FROM pragma_function_list",
    "SELECT * FROM dbstat",
    "ANALYZE",
    "REINDEX",
    "VACUUM",
    "VACUUM INTO '/tmp/sqlwasm-guest-copy.db'",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT 1; DELETE FROM readings",
    "SELECT 1; SELECT 2",
]


@pytest.mark.parametrize("sql", WRITES)
def test_only_reading_is_allowed(open_db: Any, sql: str) -> None:
    conn = open_db()
    before = conn.execute("SELECT count(*), sum(value) FROM readings").fetchall()
    message = error_of(conn, sql)
    assert message.startswith("query refused: "), message
    assert conn.execute("SELECT count(*), sum(value) FROM readings").fetchall() == before
    assert conn.execute("SELECT count(*) FROM sqlite_schema").fetchall() == [(7,)]
    assert conn.execute("PRAGMA user_version").fetchall() == [(0,)]
    assert [r[1] for r in conn.execute("PRAGMA database_list")] == ["main"]
    assert rows(conn, "SELECT count(*) FROM readings") == [[3]]  # still works


def test_temp_objects_are_not_main(open_db: Any) -> None:
    conn = open_db()
    conn.execute("CREATE TEMP TABLE scratch(a); INSERT INTO scratch VALUES (1), (2)")
    assert "in database 'temp'" in error_of(conn, "SELECT a FROM scratch")
    assert "in database 'temp'" in error_of(conn, "SELECT * FROM temp.sqlite_master")
    # count(*) names no database: a name that exists outside main is refused
    assert "outside the main database" in error_of(conn, "SELECT count(*) FROM scratch")
    assert "in database 'temp'" in error_of(conn, "SELECT count(*) FROM temp.scratch")
    # a temp table shadowing a main one
    conn.execute("CREATE TEMP TABLE readings(x)")
    assert "in database 'temp'" in error_of(conn, "SELECT * FROM readings")
    assert "outside the main database" in error_of(conn, "SELECT count(*) FROM readings")
    assert rows(conn, "SELECT count(*) FROM main.readings WHERE 1") == [[3]]


def test_attached_databases_are_not_main(open_db: Any) -> None:
    conn = open_db()
    conn.execute("ATTACH ':memory:' AS other; CREATE TABLE other.hidden(a); INSERT INTO other.hidden VALUES (1)")
    assert "in database 'other'" in error_of(conn, "SELECT a FROM other.hidden")
    assert "in database 'other'" in error_of(conn, "SELECT count(*) FROM other.hidden")
    conn.execute("CREATE TABLE other.readings(a)")
    assert "outside the main database" in error_of(conn, "SELECT count(*) FROM readings")
    assert "in database 'other'" in error_of(conn, "SELECT count(*) FROM other.sqlite_master")
    assert "outside the main database" in error_of(conn, "SELECT count(*) FROM sqlite_master")  # which one?
    assert rows(conn, "SELECT count(*) FROM sqlite_master WHERE type IS NOT NULL") == [[7]]


def test_the_temp_schema_table_is_not_main(open_db: Any) -> None:
    conn = open_db()
    conn.execute("CREATE TEMP TABLE scratch(a)")
    assert "outside the main database" in error_of(conn, "SELECT count(*) FROM sqlite_temp_master")
    assert "in database 'temp'" in error_of(conn, "SELECT count(*) FROM temp.sqlite_master")
    assert "in database 'temp'" in error_of(conn, "SELECT name FROM sqlite_temp_schema")


# ---------------------------------------------------------- table scope


def test_every_table_and_view_of_main_with_a_plain_grant(open_db: Any) -> None:
    conn = open_db()
    assert rows(conn, "SELECT token FROM v2") == [["hunter2"]]
    assert rows(conn, "SELECT count(*) FROM secret") == [[1]]
    assert rows(conn, "SELECT name FROM sqlite_schema WHERE type = 'view' ORDER BY name") == [["hot"], ["v"], ["v2"]]
    assert rows(conn, "SELECT value FROM json_each('[1, 2]')") == [[1], [2]]


def test_scoped_grant_reads_only_the_listed_tables(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings", "Places"]})
    assert rows(conn, "SELECT r.place, p.lat FROM readings r JOIN places p ON p.name = r.place ORDER BY r.id") == [
        ["a", 51.5],
        ["b", 48.9],
        ["a", 51.5],
    ]
    assert rows(conn, "SELECT count(*) FROM readings") == [[3]]
    for sql in (
        "SELECT * FROM secret",
        "SELECT count(*) FROM secret",
        "SELECT (SELECT token FROM secret) FROM readings",
        "SELECT * FROM readings WHERE place IN (SELECT token FROM secret)",
        "WITH s AS (SELECT * FROM secret) SELECT * FROM s",
        "SELECT * FROM v",
        "SELECT name, sql FROM sqlite_schema",
    ):
        message = error_of(conn, sql)
        assert "was not granted to module 'q'" in message, (sql, message)


def test_table_names_ignore_ascii_case_only(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["ÉTUDE", "Readings"]})
    conn.execute('CREATE TABLE "étude"(secret); CREATE TABLE "ÉTUDE"(open)')  # two tables for SQLite
    conn.execute("""INSERT INTO "étude" VALUES ('shh'); INSERT INTO "ÉTUDE" VALUES ('hello')""")
    assert rows(conn, 'SELECT * FROM "ÉTUDE"') == [["hello"]]
    assert rows(conn, "SELECT count(*) FROM READINGS") == [[3]]
    assert "'étude' was not granted" in error_of(conn, 'SELECT * FROM "étude"')


def test_a_view_cannot_widen_the_table_list(open_db: Any) -> None:
    # v2 reads v, which reads secret: granting v2 alone grants nothing.
    conn = open_db(grant={"sql": ["v2"]})
    assert "'secret' was not granted" in error_of(conn, "SELECT * FROM v2")
    # a view over granted tables is fine when it is granted too
    conn = open_db(grant={"sql": ["hot", "readings"]})
    assert rows(conn, "SELECT place FROM hot ORDER BY id") == [["b"], ["a"]]
    conn = open_db(grant={"sql": ["hot"]})
    assert "'readings' was not granted" in error_of(conn, "SELECT place FROM hot")
    conn = open_db(grant={"sql": ["v2", "v", "secret"]})
    assert rows(conn, "SELECT * FROM v2") == [["hunter2"]]


def test_scoped_grant_still_allows_json_table_functions(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    assert rows(conn, "SELECT value FROM json_each('[3, 4]')") == [[3], [4]]
    assert rows(conn, """SELECT count(*) FROM json_tree('{"a": [1]}')""") == [[3]]


def test_a_stored_table_named_like_a_table_function_stays_out_of_reach(open_db: Any) -> None:
    conn = open_db(grant={"sql": ["readings"]})
    conn.execute("CREATE TABLE json_each(secret)")
    conn.execute("INSERT INTO json_each VALUES ('shh')")
    for sql in ("SELECT * FROM json_each", "SELECT * FROM main.json_each", "SELECT count(*) FROM main.json_each"):
        assert error_of(conn, sql)  # SQLite means the table function; never the stored rows


@pytest.mark.parametrize(
    "grant, message",
    [
        ({"sql": []}, "non-empty list"),
        ({"sql": None}, "must be True, False or a non-empty list"),
        ({"sql": "readings"}, "must be True, False or a non-empty list"),
        ({"sql": [1]}, "non-empty list"),
        ({"sql": [""]}, "non-empty list"),
        ({"log": ["readings"]}, "only 'sql' takes a list of tables"),
        ({"log": 1}, "must be True or False"),
        ({"fs": True}, "unknown capabilities ['fs']"),
    ],
)
def test_bad_grants_are_refused(grant: Any, message: str) -> None:
    with pytest.raises(CapabilityError) as info:
        sqlwasm.Runtime(grant=grant)
    assert message in str(info.value)


def test_grant_forms() -> None:
    assert sqlwasm.Runtime(grant="sql").grant == frozenset({"sql"})
    runtime = sqlwasm.Runtime(grant={"sql": ["Readings", "places"], "log": True, "clock": False})
    assert runtime.grant == frozenset({"sql", "log"})
    assert runtime.sql_tables == frozenset({"readings", "places"})
    assert sqlwasm.Runtime(grant={"sql": True}).sql_tables is None
    assert sqlwasm.Runtime(grant=["sql"]).sql_tables is None


def test_module_with_sql_needs_the_grant(build: Build, session_key: Ed25519PrivateKey) -> None:
    data = build(GUEST, guest_manifest())
    with pytest.raises(CapabilityError, match="'sql'"):
        sql_runtime(session_key, grant=["log"]).load(data)


# -------------------------------------------------------------- functions

PLAIN = '(func (export "twice") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 2)))'


def helper_module(build: Build, name: str, capabilities: list[str]) -> bytes:
    return build(MEMORY + PLAIN, manifest(fn(f"{name}_twice", export="twice"), name=name, capabilities=capabilities))


def test_builtin_and_ordinary_application_functions_are_allowed(open_db: Any) -> None:
    conn = open_db()
    conn.create_scalar_function("app_double", lambda x: 2 * x, 1)
    assert rows(conn, "SELECT lower('A'), abs(-2), json_array(1), app_double(21), count(*) FROM readings") == [
        ["a", 2, "[1]", 42, 3]
    ]


@pytest.mark.parametrize("name", ["app_secret", "lower"])
def test_directonly_application_functions_are_refused(open_db: Any, name: str) -> None:
    conn = open_db()
    called = []
    conn.create_scalar_function(name, lambda x: called.append(x) or 1, 1, flags=apsw.SQLITE_DIRECTONLY)
    assert f"{name}() may only be called from top-level SQL" in error_of(conn, f"SELECT {name}('x')")
    assert called == []


@pytest.mark.parametrize(
    "sql, name",
    [
        ("SELECT load_extension('x')", "load_extension"),
        ("SELECT sqlite_log(1, 'x')", "sqlite_log"),
        ("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),
        ("SELECT wasm_call('p_twice', 1)", "wasm_call"),
    ],
)
def test_directonly_builtins_and_wasm_call_are_refused(open_db: Any, sql: str, name: str) -> None:
    assert f"{name}() may only be called from top-level SQL" in error_of(open_db(), sql)


@pytest.fixture
def modules(build: Build, session_key: Ed25519PrivateKey) -> Iterator[Any]:
    """modules(q_capabilities, q_grant) -> a connection with q (its grant
    given), p (no capabilities), r (random), l (log) and w (sql over every table)."""
    opened: list[apsw.Connection] = []

    def _open(capabilities: tuple[str, ...] = ("sql",), grant: Any = None) -> apsw.Connection:
        conn = apsw.Connection(":memory:")
        opened.append(conn)
        conn.execute(SCHEMA)
        everything = sql_runtime(session_key, ["sql", "random", "log"])
        q_runtime = everything if grant is None else sql_runtime(session_key, grant)
        q_runtime.install(conn, build(GUEST, guest_manifest("q", capabilities)))
        everything.install(conn, build(GUEST, guest_manifest("w", ("sql",))))
        for name, caps in (("p", []), ("r", ["random"]), ("l", ["log"])):
            everything.install(conn, helper_module(build, name, caps))
        return conn

    yield _open
    for conn in opened:
        conn.close()


def test_functions_of_a_module_without_capabilities_are_allowed(modules: Any) -> None:
    assert rows(modules(), "SELECT p_twice(21)") == [[42]]


@pytest.mark.parametrize("function", ["r_twice(1)", "l_twice(1)"])
def test_no_capability_borrowing(modules: Any, function: str) -> None:
    owner = function[0]
    message = error_of(modules(), f"SELECT {function}")
    assert f"belongs to module '{owner}', which may do more than module 'q' was granted" in message


def test_a_caller_granted_as_much_may_call(modules: Any) -> None:
    conn = modules(capabilities=("sql", "random", "log"), grant=["sql", "random", "log"])
    assert rows(conn, "SELECT r_twice(1), l_twice(2)") == [[2, 4]]


def test_no_borrowing_a_wider_table_scope(modules: Any) -> None:
    conn = modules(grant={"sql": ["readings"]})
    assert "belongs to module 'w'" in error_of(conn, "SELECT w_raw_close(0) FROM readings")
    # w may read everything, so it may call q (whose scope is narrower)
    ((blob,),) = conn.execute("SELECT w(?)", (request("SELECT q_raw_close(0)"),)).fetchall()
    assert answers(blob) == [[[0]], []]


def test_a_query_cannot_reenter_its_own_module(modules: Any) -> None:
    assert "module 'q' is busy" in error_of(modules(), "SELECT q_raw_close(0)")


def test_sql_functions_are_directonly_and_never_deterministic(build: Build, session_key: Ed25519PrivateKey) -> None:
    conn = apsw.Connection(":memory:")
    try:
        sql_runtime(session_key).install(conn, build(GUEST, guest_manifest(deterministic=True)))
        ((flags,),) = conn.execute("SELECT flags FROM pragma_function_list WHERE name = 'q'").fetchall()
        assert flags & apsw.SQLITE_DIRECTONLY and not flags & apsw.SQLITE_DETERMINISTIC
        conn.execute("CREATE TABLE t(a); CREATE VIEW qv AS SELECT q(x'00') FROM t; INSERT INTO t VALUES (1)")
        with pytest.raises(apsw.SQLError, match="unsafe use of q"):
            conn.execute("SELECT * FROM qv").fetchall()
    finally:
        conn.close()


# --------------------------------------------------------- time and size

FOREVER = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def test_time_in_queries_counts_against_the_time_limit(open_db: Any) -> None:
    conn = open_db(timeout_ms=200)
    started = time.monotonic()
    with pytest.raises(apsw.SQLError) as info:
        rows(conn, FOREVER)
    assert time.monotonic() - started < 2
    assert "q.q: " in str(info.value) and "time limit of 200 ms exceeded during a query" in str(info.value)
    assert conn.authorizer is None
    assert rows(conn, "SELECT 1") == [[1]]


def test_interrupt_stops_a_query(open_db: Any) -> None:
    conn = open_db(timeout_ms=None)
    timer = threading.Timer(0.2, conn.interrupt)
    timer.start()
    try:
        with pytest.raises(apsw.SQLError) as info:
            rows(conn, FOREVER)
    finally:
        timer.cancel()
    assert "q.q: " in str(info.value) and "interrupted" in str(info.value)
    assert rows(conn, "SELECT 1") == [[1]]


def test_the_application_authorizer_still_applies_and_is_restored(open_db: Any) -> None:
    conn = open_db()
    seen: list[str] = []

    def application(action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
        if action == apsw.SQLITE_READ:
            seen.append(arg1)
            if arg1 == "places":
                return apsw.SQLITE_DENY
        return apsw.SQLITE_OK

    conn.authorizer = application
    assert rows(conn, "SELECT count(*) FROM readings WHERE 1") == [[3]]
    assert "access to places.name is prohibited" in error_of(conn, "SELECT * FROM places")
    assert conn.authorizer is application and "readings" in seen


def test_result_bytes_are_capped(open_db: Any) -> None:
    conn = open_db(max_result_bytes=1000)
    big = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT printf('%020d', i) FROM n"
    )
    assert "exceed 1000 bytes (max_result_bytes" in error_of(conn, big)
    # the cap holds for all open cursors together: two of 600 bytes do not fit
    half = big.replace("i < 100", "i < 27")
    assert len(rows(conn, half)) == 27
    assert "exceed 1000 bytes" in error_of(conn, half, count=2)


def test_result_rows_are_capped(open_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_guest_sql, "QUERY_MAX_ROWS", 10)
    conn = open_db()
    many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 11) SELECT i FROM n"
    assert "the rows exceed 10" in error_of(conn, many)
    assert len(rows(conn, many.replace("i < 11", "i < 10"))) == 10


# ------------------------------------------------ pointers and cursors

PAGES = 6 * 65536


@pytest.mark.parametrize(
    "args, what",
    [
        ((PAGES, 1, 0, 0), "query text"),
        ((PAGES - 1, 2, 0, 0), "query text"),
        ((-1, 2, 0, 0), "query text"),
        ((0, PAGES + 1, 0, 0), "query text"),
        ((16, 8, PAGES, 1), "query params"),
        ((16, 8, 0, -1), "query params"),
    ],
)
def test_query_with_pointers_outside_memory_traps(open_db: Any, args: tuple[int, ...], what: str) -> None:
    conn = open_db()
    with pytest.raises(apsw.SQLError) as info:
        conn.execute("SELECT q_raw_query(?, ?, ?, ?)", args).fetchall()
    assert f"q.q_raw_query: host function sqlwasm.query failed: MarshallingError: {what}" in str(info.value)
    assert "outside guest memory" in str(info.value)


@pytest.mark.parametrize("out_ptr, out_cap", [(PAGES, 1), (PAGES - 10, 11), (-1, 2), (0, -1)])
def test_query_next_with_a_buffer_outside_memory_traps(open_db: Any, out_ptr: int, out_cap: int) -> None:
    conn = open_db()
    with pytest.raises(apsw.SQLError) as info:
        conn.execute("SELECT q_raw_next(1, ?, ?)", (out_ptr, out_cap)).fetchall()
    assert "sqlwasm.query_next failed: MarshallingError: query_next buffer" in str(info.value)


def test_buffers_up_to_the_end_of_memory_are_fine(open_db: Any) -> None:
    conn = open_db()
    assert conn.execute("SELECT q_raw_query(?, 8, ?, 0)", (PAGES - 8, PAGES)).fetchall()[0][0] > 0
    written = conn.execute("SELECT q_raw_next(1, ?, 100)", (PAGES - 100,)).fetchall()[0][0]
    assert 0 < written <= 100  # the error value: cursor 1 belonged to the earlier call


def memory_at(conn: apsw.Connection, ptr: int, length: int) -> bytes:
    ((blob,),) = conn.execute("SELECT q_dump(?)", (struct.pack("<2I", ptr, length),)).fetchall()
    return bytes(blob)


def test_a_cursor_from_an_earlier_call_is_stale(open_db: Any) -> None:
    conn = open_db()
    assert conn.execute("SELECT q_keep(0)").fetchall()[0][0] > 0
    written = conn.execute("SELECT q_next_kept(0)").fetchall()[0][0]
    assert msgpack.unpackb(memory_at(conn, 131072, written)) == {
        "error": f"cursor {1} is not open (closed, or opened by an earlier call)"
    }
    # also within one statement: each row is a call
    ((_, written),) = conn.execute("SELECT q_keep(0), q_next_kept(0)").fetchall()
    assert "is not open" in msgpack.unpackb(memory_at(conn, 131072, written))["error"]


def test_unknown_and_closed_cursors(open_db: Any) -> None:
    conn = open_db()
    for cursor in (0, -1, 12345):
        written = conn.execute("SELECT q_raw_next(?, 131072, 200)", (cursor,)).fetchall()[0][0]
        assert "is not open" in msgpack.unpackb(memory_at(conn, 131072, written))["error"]
        assert conn.execute("SELECT q_raw_close(?)", (cursor,)).fetchall() == [(0,)]
    # closing twice, then reading, in one call
    ((blob,),) = conn.execute("SELECT q(?)", (request("SELECT 1", count=1, close=True),)).fetchall()
    assert answers(blob) == [[[1]], []]


def test_exhausted_cursor_keeps_answering_empty(open_db: Any) -> None:
    conn = open_db()
    ((blob,),) = conn.execute("SELECT q(?)", (request("SELECT 1 WHERE 0", cap=1),)).fetchall()
    assert answers(blob) == [[]]
    ((blob,),) = conn.execute("SELECT q(?)", (request("SELECT 1 WHERE 0", cap=0),)).fetchall()
    assert answers(blob) == [[]]


def test_open_cursors_are_capped(open_db: Any) -> None:
    conn = open_db()
    most = _guest_sql.MAX_OPEN_CURSORS
    assert rows(conn, "SELECT 1", count=most, close=False) == [[1]]
    # the cursors of the earlier call were dropped: the next call has room again
    assert rows(conn, "SELECT 1", count=most) == [[1]]
    assert f"too many open cursors: at most {most}" in error_of(conn, "SELECT 1", count=most + 1)
    assert f"too many open cursors: at most {most}" in error_of(conn, "SELECT 1", count=most + 50)


@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False),
            st.text(),
            st.binary(),
        ),
        max_size=8,
    )
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_values_round_trip_through_params_and_rows(open_db: Any, values: list[Any]) -> None:
    conn = open_db()
    if not values:
        assert rows(conn, "SELECT 1 WHERE 0") == []
        return
    assert rows(conn, "SELECT " + ", ".join("?" * len(values)), values) == [values]


def test_the_applications_tracers_neither_see_nor_change_guest_rows(open_db: Any) -> None:
    conn = open_db()
    traced: list[str] = []
    conn.exec_trace = lambda _cursor, sql, _bindings: traced.append(sql) or True
    conn.row_trace = lambda _cursor, row: ("changed",) * len(row) if len(row) == 2 else row  # not q's own row
    assert rows(conn, "SELECT count(*), lower('A') FROM readings") == [[3, "a"]]
    assert traced == ["SELECT q(?)"]


# ------------------------------------------------------- table functions

# tf_pair(n): a table function of a module without capabilities: rows [1], [2].
PAIR = (
    MEMORY
    + """
  (data (i32.const 256) "\\92\\91\\01\\91\\02\\90")
  (global $done (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "open") (param i32 i32) (result i32) (global.set $done (i32.const 0)) (i32.const 0))
  (func (export "next") (param i32) (result i64)
    (if (result i64) (global.get $done)
      (then (i64.const 0x0000010500000001))
      (else (global.set $done (i32.const 1)) (i64.const 0x0000010000000005))))
  (func (export "close") (param i32))
"""
)


def pair_module(build: Build, capabilities: list[str]) -> bytes:
    function = {
        "name": "tf_pair",
        "kind": "table",
        "abi": "msgpack",
        "args": ["integer"],
        "columns": [{"name": "value", "type": "integer"}],
        "exports": {"open": "open", "next": "next", "close": "close"},
    }
    return build(PAIR, manifest(function, name="tf", capabilities=capabilities))


def test_table_functions_follow_the_function_rule(build: Build, session_key: Ed25519PrivateKey) -> None:
    conn = apsw.Connection(":memory:")
    try:
        conn.execute(SCHEMA)
        sql_runtime(session_key, {"sql": ["readings"]}).install(conn, build(GUEST, guest_manifest()))
        sql_runtime(session_key, ["random"]).install(conn, pair_module(build, []))
        assert rows(conn, "SELECT value FROM tf_pair(1)") == [[1], [2]]
        assert rows(conn, "SELECT count(*) FROM tf_pair(1)") == [[2]]
    finally:
        conn.close()
    conn = apsw.Connection(":memory:")
    try:
        conn.execute(SCHEMA)
        sql_runtime(session_key, {"sql": ["readings"]}).install(conn, build(GUEST, guest_manifest()))
        sql_runtime(session_key, ["random"]).install(conn, pair_module(build, ["random"]))
        assert "tf_pair() belongs to module 'tf', which may do more" in error_of(conn, "SELECT value FROM tf_pair(1)")
        assert "tf_pair() belongs to module 'tf'" in error_of(conn, "SELECT count(*) FROM tf_pair(1)")
    finally:
        conn.close()


def test_a_query_may_call_graph_only_with_its_tables(build: Build, session_key: Ed25519PrivateKey) -> None:
    from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

    graph = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], grant={"sql": ["edges"]})
    for q_grant, allowed in (({"sql": ["readings"]}, False), ({"sql": ["edges", "readings"]}, True), (["sql"], True)):
        conn = apsw.Connection(":memory:")
        try:
            conn.execute(SCHEMA + "CREATE TABLE edges(src, dst); INSERT INTO edges VALUES (1, 2), (2, 3);")
            sql_runtime(session_key, q_grant).install(conn, build(GUEST, guest_manifest()))
            graph.install(conn, module_path("graph"))
            sql = "SELECT node, depth FROM graph_reachable(1)"
            if allowed:
                assert rows(conn, sql) == [[1, 0], [2, 1], [3, 2]]  # the graph's own queries nest inside q's
            else:
                assert "graph_reachable() belongs to module 'graph'" in error_of(conn, sql)
        finally:
            conn.close()


@given(texts=st.lists(st.text(max_size=40), max_size=30), cap=st.integers(1, 300))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_batches_fit_the_buffer_and_keep_the_rows_in_order(open_db: Any, texts: list[str], cap: int) -> None:
    conn = open_db()
    conn.execute("CREATE TABLE words(n INTEGER PRIMARY KEY, w TEXT)")
    conn.executemany("INSERT INTO words(w) VALUES (?)", [(t,) for t in texts])
    ((blob,),) = conn.execute("SELECT q(?)", (request("SELECT w FROM words ORDER BY n", cap=cap),)).fetchall()
    values = answers(blob)
    batches, last = values[:-1], values[-1]
    assert all(isinstance(b, list) and b and len(msgpack.packb(b)) <= cap for b in batches)
    delivered = [row for batch in batches for row in batch]
    assert delivered == [[t] for t in texts[: len(delivered)]]
    if last == []:
        assert len(delivered) == len(texts)
    else:  # the next row does not fit: -(bytes needed), more than cap
        assert last == -len(msgpack.packb([[texts[len(delivered)]]])) and -last > cap


def test_connections_in_threads_query_their_own_databases(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sql_runtime(session_key)
    data = runtime.load(build(GUEST, guest_manifest()))
    failures: list[BaseException] = []

    def work(number: int) -> None:
        conn = apsw.Connection(":memory:")
        try:
            conn.execute("CREATE TABLE mine(n)")
            conn.execute("INSERT INTO mine VALUES (?)", (number,))
            runtime.install(conn, data)
            for i in range(200):
                assert rows(conn, "SELECT n + ? FROM mine", [i]) == [[number + i]]
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_per_statement_instances_query_too(build: Build, session_key: Ed25519PrivateKey) -> None:
    conn = apsw.Connection(":memory:")
    try:
        conn.execute(SCHEMA)
        sql_runtime(session_key).install(conn, build(GUEST, {**guest_manifest(), "instance": "statement"}))
        for _ in range(3):
            assert rows(conn, "SELECT count(*) FROM readings") == [[3]]
        ((first, second),) = conn.execute("SELECT q(?), q(?)", (request("SELECT 1"), request("SELECT 2"))).fetchall()
        assert answers(first) == [[[1]], []] and answers(second) == [[[2]], []]
    finally:
        conn.close()


def test_vacuum_into_writes_no_file(open_db: Any, tmp_path: Any) -> None:
    # VACUUM has no authorizer action: sqlite3_stmt_readonly stops it before its first step.
    target = tmp_path / "copy.db"
    assert "the statement writes (sqlite3_stmt_readonly)" in error_of(open_db(), f"VACUUM INTO '{target}'")
    assert not target.exists()


def test_fts5_tables_are_readable_with_their_shadow_tables(open_db: Any) -> None:
    shadow = ["docs_data", "docs_idx", "docs_content", "docs_docsize", "docs_config"]
    for grant, allowed in ((["sql"], True), ({"sql": ["docs"]}, False), ({"sql": ["docs", *shadow]}, True)):
        conn = open_db(grant=grant)
        conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body); INSERT INTO docs VALUES ('hello world'), ('bye')")
        sql = "SELECT body FROM docs WHERE docs MATCH 'hello'"
        if allowed:
            assert rows(conn, sql) == [["hello world"]]
        else:
            assert "table 'docs_" in error_of(conn, sql)
    # FTS5 reads PRAGMA data_version, the one pragma a query may read; nothing may set it
    assert len(rows(open_db(), "PRAGMA data_version")) == 1
    assert "PRAGMA 'data_version'" in error_of(open_db(), "PRAGMA data_version = 3")


# ------------------------------------------------------------ packed query_next

# The form of query_next: (cursor) -> i64, the batch packed as
# (ptr << 32) | len in a buffer from the guest's own sqlwasm_alloc (a bump
# allocator from 262144, reset per call; `bad_alloc` makes it answer outside
# memory). pk(blob sql) runs the query and returns every batch, concatenated.
PACKED_GUEST = """
  (import "sqlwasm" "query" (func $query (param i32 i32 i32 i32) (result i32)))
  (import "sqlwasm" "query_next" (func $next (param i32) (result i64)))
  (import "sqlwasm" "query_close" (func $close (param i32)))
  (memory (export "memory") 16)
  (global $heap (mut i32) (i32.const 262144))
  (global $bad_alloc (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param $n i32) (result i32) (local $p i32)
    (if (global.get $bad_alloc) (then (return (i32.const -16))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.get $p))
  (func (export "break_alloc") (param i64) (result i64) (global.set $bad_alloc (i32.const 1)) (i64.const 0))
  ;; the blob argument (bin 8 or bin 16) of a one-argument row: (data ptr, data len)
  (func $blob (param $p i32) (result i32 i32)
    (if (i32.eq (i32.load8_u offset=1 (local.get $p)) (i32.const 0xc4))
      (then (return (i32.add (local.get $p) (i32.const 3)) (i32.load8_u offset=2 (local.get $p)))))
    (return (i32.add (local.get $p) (i32.const 4))
            (i32.or (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 8))
                    (i32.load8_u offset=3 (local.get $p)))))
  (func (export "pk") (param $p i32) (param $n i32) (result i64)
    (local $sql i32) (local $len i32) (local $cur i32) (local $packed i64) (local $at i32) (local $size i32)
    (local $out i32) (local $first i32)
    (call $blob (local.get $p))
    (local.set $len) (local.set $sql)
    ;; the argument row sits in the heap too: copy the SQL below it first
    (memory.copy (i32.const 1024) (local.get $sql) (local.get $len))
    (global.set $heap (i32.const 262144))
    (local.set $cur (call $query (i32.const 1024) (local.get $len) (i32.const 0) (i32.const 0)))
    (local.set $out (i32.const 65541))
    (block $done (loop $batch
      (local.set $packed (call $next (local.get $cur)))
      (local.set $at (i32.wrap_i64 (i64.shr_u (local.get $packed) (i64.const 32))))
      (local.set $size (i32.wrap_i64 (local.get $packed)))
      (memory.copy (local.get $out) (local.get $at) (local.get $size))
      (local.set $first (i32.load8_u (local.get $out)))
      (local.set $out (i32.add (local.get $out) (local.get $size)))
      (br_if $done (i32.eq (local.get $first) (i32.const 0x90)))
      (br_if $done (i32.eq (i32.and (local.get $first) (i32.const 0xf0)) (i32.const 0x80)))
      (br $batch)))
    (call $close (local.get $cur))
    ;; bin 32 header before the batches
    (i32.store8 (i32.const 65536) (i32.const 0xc6))
    (i32.store8 (i32.const 65537) (i32.shr_u (i32.sub (local.get $out) (i32.const 65541)) (i32.const 24)))
    (i32.store8 (i32.const 65538) (i32.shr_u (i32.sub (local.get $out) (i32.const 65541)) (i32.const 16)))
    (i32.store8 (i32.const 65539) (i32.shr_u (i32.sub (local.get $out) (i32.const 65541)) (i32.const 8)))
    (i32.store8 (i32.const 65540) (i32.sub (local.get $out) (i32.const 65541)))
    (i64.or (i64.shl (i64.const 65536) (i64.const 32)) (i64.extend_i32_u (i32.sub (local.get $out) (i32.const 65536)))))
"""


@pytest.fixture
def packed_db(build: Build, session_key: Ed25519PrivateKey) -> Iterator[apsw.Connection]:
    module = build(
        PACKED_GUEST,
        manifest(
            fn("pk", abi="msgpack", args=["blob"], returns="blob"),
            fn("pk_break_alloc", export="break_alloc"),
            name="pk",
            capabilities=["sql"],
        ),
    )
    conn = sql_runtime(session_key).connect(":memory:", [module])
    conn.execute(SCHEMA)
    yield conn
    conn.close()


def packed_answers(conn: apsw.Connection, sql: str) -> list[Any]:
    ((blob,),) = conn.execute("SELECT pk(?)", (sql.encode(),)).fetchall()
    return answers(blob)


def test_packed_query_next_hands_out_every_row_in_batches(packed_db: apsw.Connection) -> None:
    sql = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) SELECT i, 'row' FROM c"
    batches = packed_answers(packed_db, sql)
    assert len(batches) > 2 and batches[-1] == []  # 64 KiB batches, then the empty array
    assert [row for batch in batches for row in batch] == [[i, "row"] for i in range(1, 20001)]


def test_packed_query_next_reads_granted_tables(packed_db: apsw.Connection) -> None:
    assert packed_answers(packed_db, "SELECT place, value FROM readings ORDER BY id") == [
        [["a", 10.5], ["b", 25.0], ["a", 30.25]],
        [],
    ]


def test_packed_query_next_carries_refusals_as_values(packed_db: apsw.Connection) -> None:
    ((error,),) = [list(v.values()) for v in packed_answers(packed_db, "DELETE FROM secret")]
    assert "a query may only read" in error
    assert packed_db.execute("SELECT count(*) FROM secret").fetchall() == [(1,)]


def test_packed_query_next_checks_what_sqlwasm_alloc_returns(packed_db: apsw.Connection) -> None:
    packed_answers(packed_db, "SELECT 1")  # the host's argument buffer is allocated now, and kept
    packed_db.execute("SELECT pk_break_alloc(0)").fetchall()
    with pytest.raises(apsw.SQLError, match=r"pk\.pk: host function sqlwasm\.query_next failed: .*outside guest memory"):
        packed_db.execute("SELECT pk(?)", (b"SELECT 1",)).fetchall()


def test_query_next_in_another_form_is_refused(build: Build, session_key: Ed25519PrivateKey) -> None:
    wat = PACKED_GUEST.replace("(func $next (param i32) (result i64))", "(func $next (param i32 i32) (result i64))")
    wat = wat.replace("(call $next (local.get $cur))", "(call $next (local.get $cur) (i32.const 0))")
    module = build(wat, manifest(fn("pk", abi="msgpack", args=["blob"], returns="blob"), name="pk", capabilities=["sql"]))
    with pytest.raises(CapabilityError, match=r"expected \(i32, i32, i32\) -> \(i32\) or \(i32\) -> \(i64\)"):
        sql_runtime(session_key).load(module)
