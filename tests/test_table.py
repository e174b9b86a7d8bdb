"""Table-valued functions: a guest's open/next/close as an eponymous virtual
table (native/table.c).

The guest here is inline WAT: series(mode, n) yields the rows (i, 2 * i) for
i in [0, n), at most 100 per next call, and counts its live handles, so the
tests can prove that every handle open returns is closed, whatever happens
to the statement. `mode` selects a misbehaviour.
"""

from __future__ import annotations

import apsw
import pytest
from conftest import Build, Connect, fn, manifest, one_error
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlwasm

MODE_OK, MODE_TRAP_OPEN, MODE_TRAP_NEXT, MODE_ERROR, MODE_OUT_OF_BOUNDS = 0, 1, 2, 3, 4
MODE_OPEN_FAILS, MODE_WRONG_WIDTH, MODE_LOOP, MODE_WRONG_TYPE, MODE_TRAILING = 5, 6, 7, 8, 9

SERIES_WAT = r"""
(module
  (memory (export "memory") 2)
  (data (i32.const 1024) "\81\a5error\a4boom")
  (global $next_handle (mut i32) (i32.const 0))
  (global $live (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "live") (result i64) (i64.extend_i32_s (global.get $live)))
  ;; an unsigned msgpack integer (fixint, uint8, uint16 or uint32) at p
  (func $read_uint (param $p i32) (result i32) (local $tag i32)
    (local.set $tag (i32.load8_u (local.get $p)))
    (if (i32.lt_u (local.get $tag) (i32.const 0x80)) (then (return (local.get $tag))))
    (if (i32.eq (local.get $tag) (i32.const 0xcc)) (then (return (i32.load8_u offset=1 (local.get $p)))))
    (if (i32.eq (local.get $tag) (i32.const 0xcd))
      (then (return (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 8))
                            (i32.load8_u offset=2 (local.get $p))))))
    (i32.or (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 24))
                    (i32.shl (i32.load8_u offset=2 (local.get $p)) (i32.const 16)))
            (i32.or (i32.shl (i32.load8_u offset=3 (local.get $p)) (i32.const 8))
                    (i32.load8_u offset=4 (local.get $p)))))
  ;; writes 0xce + v as big-endian uint32 at p; returns p + 5
  (func $put_uint (param $p i32) (param $v i32) (result i32)
    (i32.store8 (local.get $p) (i32.const 0xce))
    (i32.store8 offset=1 (local.get $p) (i32.shr_u (local.get $v) (i32.const 24)))
    (i32.store8 offset=2 (local.get $p) (i32.shr_u (local.get $v) (i32.const 16)))
    (i32.store8 offset=3 (local.get $p) (i32.shr_u (local.get $v) (i32.const 8)))
    (i32.store8 offset=4 (local.get $p) (local.get $v))
    (i32.add (local.get $p) (i32.const 5)))
  (func $state (param $h i32) (result i32) (i32.add (i32.const 16384) (i32.shl (local.get $h) (i32.const 4))))
  ;; args: [mode (fixint), n]
  (func (export "open") (param $p i32) (param $len i32) (result i32) (local $mode i32) (local $h i32)
    (local.set $mode (i32.load8_u offset=1 (local.get $p)))
    (if (i32.eq (local.get $mode) (i32.const 1)) (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const 5)) (then (return (i32.const -7))))
    (local.set $h (i32.and (global.get $next_handle) (i32.const 1023)))
    (global.set $next_handle (i32.add (global.get $next_handle) (i32.const 1)))
    (global.set $live (i32.add (global.get $live) (i32.const 1)))
    (i32.store (call $state (local.get $h)) (call $read_uint (i32.add (local.get $p) (i32.const 2))))
    (i32.store offset=4 (call $state (local.get $h)) (i32.const 0))
    (i32.store offset=8 (call $state (local.get $h)) (local.get $mode))
    (i32.store offset=12 (call $state (local.get $h)) (i32.const 0))
    (local.get $h))
  (func (export "next") (param $h i32) (result i64)
    (local $st i32) (local $n i32) (local $i i32) (local $mode i32) (local $calls i32) (local $k i32) (local $p i32)
    (local.set $st (call $state (local.get $h)))
    (local.set $n (i32.load (local.get $st)))
    (local.set $i (i32.load offset=4 (local.get $st)))
    (local.set $mode (i32.load offset=8 (local.get $st)))
    (local.set $calls (i32.add (i32.load offset=12 (local.get $st)) (i32.const 1)))
    (i32.store offset=12 (local.get $st) (local.get $calls))
    (if (i32.and (i32.eq (local.get $mode) (i32.const 2)) (i32.eq (local.get $calls) (i32.const 2)))
      (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const 3))
      (then (return (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 12)))))
    (if (i32.eq (local.get $mode) (i32.const 4))
      (then (return (i64.or (i64.shl (i64.const 0xffff0000) (i64.const 32)) (i64.const 16)))))
    (if (i32.eq (local.get $mode) (i32.const 7)) (then (loop $forever (br $forever))))
    (i32.store8 (i32.const 65536) (i32.const 0xdc))
    (local.set $p (i32.const 65539))
    (block $full (loop $row
      (br_if $full (i32.ge_u (local.get $k) (i32.const 100)))
      (br_if $full (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.eq (local.get $mode) (i32.const 6))
        (then (i32.store8 (local.get $p) (i32.const 0x91)))
        (else (i32.store8 (local.get $p) (i32.const 0x92))))
      (local.set $p (call $put_uint (i32.add (local.get $p) (i32.const 1)) (local.get $i)))
      (if (i32.eq (local.get $mode) (i32.const 8))
        (then (i32.store16 (local.get $p) (i32.const 0x78a1)) (local.set $p (i32.add (local.get $p) (i32.const 2))))
        (else (if (i32.ne (local.get $mode) (i32.const 6))
          (then (local.set $p (call $put_uint (local.get $p) (i32.shl (local.get $i) (i32.const 1))))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $row)))
    (if (i32.eq (local.get $mode) (i32.const 9))
      (then (i32.store8 (local.get $p) (i32.const 0xc0)) (local.set $p (i32.add (local.get $p) (i32.const 1)))))
    (i32.store8 (i32.const 65537) (i32.shr_u (local.get $k) (i32.const 8)))
    (i32.store8 (i32.const 65538) (local.get $k))
    (i32.store offset=4 (local.get $st) (local.get $i))
    (i64.or (i64.shl (i64.const 65536) (i64.const 32)) (i64.extend_i32_u (i32.sub (local.get $p) (i32.const 65536)))))
  (func (export "close") (param $h i32)
    (global.set $live (i32.sub (global.get $live) (i32.const 1))))
)
"""

SERIES = {
    "name": "series",
    "kind": "table",
    "abi": "msgpack",
    "args": ["integer", "integer"],
    "columns": [{"name": "i", "type": "integer"}, {"name": "twice", "type": "integer"}],
    "exports": {"open": "open", "next": "next", "close": "close"},
}
LIVE = fn("live", args=[], returns="integer")


@pytest.fixture
def conn(build: Build, connect: Connect) -> apsw.Connection:
    return connect(build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl")))


def live(conn: apsw.Connection) -> int:
    value: int = conn.execute("SELECT live()").fetchall()[0][0]
    return value


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101, 1234])
def test_rows_across_batches(conn: apsw.Connection, n: int) -> None:
    rows = conn.execute("SELECT i, twice FROM series(0, ?)", (n,)).fetchall()
    assert rows == [(i, 2 * i) for i in range(n)]
    assert live(conn) == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.integers(min_value=0, max_value=350))
def test_rows_of_any_count_and_offset(n_big: int, n: int) -> None:
    # hypothesis and function-scoped fixtures do not mix: a module per run
    from conftest import wasm_module

    data = wasm_module(SERIES_WAT, manifest(SERIES, LIVE, name="tbl"))
    with sqlwasm.connect(":memory:", [data], allow_unsigned=True) as conn:
        assert conn.execute("SELECT count(*), max(i) FROM series(0, ?)", (n,)).fetchall() == [
            (n, n - 1 if n else None)
        ]
        # the argument crosses as msgpack uint8/16/32: read back exactly
        assert conn.execute("SELECT arg2 FROM series(0, ?) LIMIT 1", (n_big,)).fetchall() in ([(n_big,)], [])
        assert live(conn) == 0


def test_arguments_are_hidden_columns(conn: apsw.Connection) -> None:
    cursor = conn.execute("SELECT * FROM series(0, 2)")
    assert [d[0] for d in cursor.getdescription()] == ["i", "twice"]
    assert cursor.fetchall() == [(0, 0), (1, 2)]
    assert conn.execute("SELECT arg1, arg2, i FROM series(0, 2)").fetchall() == [(0, 2, 0), (0, 2, 1)]
    # the same call, written as constraints on the hidden columns
    assert conn.execute("SELECT i FROM series WHERE arg1 = 0 AND arg2 = 3").fetchall() == [(0,), (1,), (2,)]


def test_other_constraints_are_sqlites(conn: apsw.Connection) -> None:
    rows = conn.execute("SELECT i FROM series(0, 50) WHERE twice > 90 ORDER BY i DESC").fetchall()
    assert rows == [(49,), (48,), (47,), (46,)]


def test_lateral_join_reopens_per_row(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE t(n INTEGER); INSERT INTO t VALUES (0), (3), (250), (1)")
    rows = conn.execute("SELECT t.n, count(s.i), total(s.i) FROM t, series(0, t.n) s GROUP BY t.n").fetchall()
    assert rows == [(1, 1, 0.0), (3, 3, 3.0), (250, 250, float(sum(range(250))))]  # n = 0: no rows to join
    assert live(conn) == 0


def test_limit_closes_the_handle(conn: apsw.Connection) -> None:
    assert conn.execute("SELECT i FROM series(0, 100000) LIMIT 3").fetchall() == [(0,), (1,), (2,)]
    assert live(conn) == 0
    cursor = conn.execute("SELECT i FROM series(0, 100000)")
    assert next(cursor) == (0,)
    assert live(conn) == 1  # the statement is still running
    cursor.close()
    assert live(conn) == 0


def test_null_argument_gives_no_rows_without_calling_open(conn: apsw.Connection) -> None:
    assert conn.execute("SELECT * FROM series(0, NULL)").fetchall() == []
    assert conn.execute("SELECT * FROM series(NULL, 5)").fetchall() == []
    assert live(conn) == 0


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        (MODE_TRAP_OPEN, "tbl.series: trap in open (unreachable)"),
        (MODE_TRAP_NEXT, "tbl.series: trap in next (unreachable)"),
        (MODE_ERROR, "tbl.series: boom"),
        (MODE_OUT_OF_BOUNDS, "tbl.series: next's result (ptr 4294901760, len 16) lies outside"),
        (MODE_OPEN_FAILS, "tbl.series: open failed (returned -7)"),
        (MODE_WRONG_WIDTH, "tbl.series: row 1 is not an array of 2 values"),
        (MODE_WRONG_TYPE, "tbl.series: row 1, column 2 is TEXT, declared integer"),
        (MODE_TRAILING, "tbl.series: next's result has 1 trailing bytes"),
    ],
)
def test_misbehaviour_fails_the_statement_and_closes_the_handle(
    conn: apsw.Connection, mode: int, cause: str
) -> None:
    assert cause in one_error(conn, "SELECT * FROM series(?, 250)", mode)
    assert live(conn) == 0
    assert conn.execute("SELECT count(*) FROM series(0, 250)").fetchall() == [(250,)]


def test_time_limit_stops_next_and_closes(build: Build, session_key: object) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=50)  # type: ignore[attr-defined]
    with runtime.connect(":memory:", [build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl"))]) as conn:
        assert "tbl.series: time limit of 50 ms exceeded" in one_error(conn, "SELECT * FROM series(7, 5)")
        assert live(conn) == 0


def test_interrupt_stops_a_long_table_scan(conn: apsw.Connection) -> None:
    import threading

    timer = threading.Timer(0.2, conn.interrupt)
    timer.start()
    # SQLite's own check, or the guest's call stopped mid-way ("tbl.series: interrupted")
    with pytest.raises((apsw.InterruptError, apsw.SQLError), match="interrupted"):
        # 2 * 10^9 rows: far longer than the test
        conn.execute("SELECT count(*) FROM series(0, 2000000000) a, series(0, 2000000000) b").fetchall()
    timer.join()
    assert live(conn) == 0


def test_missing_arguments_are_named(conn: apsw.Connection) -> None:
    assert "tbl.series: takes 2 arguments, got 1" in one_error(conn, "SELECT * FROM series(0)")
    assert "tbl.series: takes 2 arguments, got 0" in one_error(conn, "SELECT * FROM series")


def test_argument_types_are_checked(conn: apsw.Connection) -> None:
    assert "tbl.series: argument 2 is TEXT, expected integer" in one_error(conn, "SELECT * FROM series(0, 'x')")


def test_wasm_call_points_to_from(conn: apsw.Connection) -> None:
    message = one_error(conn, "SELECT wasm_call('tbl', 'series', 0, 1)")
    assert "tbl.series is a table function: use it in FROM, as series(...)" in message


def test_two_cursors_of_one_function_are_independent(conn: apsw.Connection) -> None:
    rows = conn.execute("SELECT a.i, b.i FROM series(0, 3) a, series(0, 2) b ORDER BY 1, 2").fetchall()
    assert rows == [(a, b) for a in range(3) for b in range(2)]
    assert live(conn) == 0


def test_per_statement_instance(build: Build, connect: Connect) -> None:
    conn = connect(build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl", instance="statement")))
    for _ in range(3):
        assert conn.execute("SELECT count(*) FROM series(0, 150)").fetchall() == [(150,)]


def test_a_builtin_table_function_cannot_be_shadowed(build: Build, connect: Connect) -> None:
    data = build(SERIES_WAT, manifest(dict(SERIES, name="json_each"), name="tbl"))
    with pytest.raises(sqlwasm.ManifestError, match="json_each would shadow SQLite built-in"):
        connect(data)


def test_an_application_module_is_not_replaced_silently(build: Build, runtime: sqlwasm.Runtime) -> None:
    class Source:
        def Connect(self, *args: object) -> tuple[str, object]:  # noqa: N802 - APSW's protocol
            raise AssertionError("not used")

    conn = apsw.Connection(":memory:")
    conn.create_module("series", Source())
    data = build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl"))
    with pytest.raises(sqlwasm.ManifestError, match="already has functions named series"):
        runtime.install(conn, runtime.load(data))
    runtime.install(conn, runtime.load(data), replace=True)
    assert conn.execute("SELECT count(*) FROM series(0, 5)").fetchall() == [(5,)]
    conn.close()


def test_a_failed_install_removes_the_table_function(build: Build, runtime: sqlwasm.Runtime) -> None:
    # the second function clashes with an application function: the whole install is undone
    conn = apsw.Connection(":memory:")
    conn.create_scalar_function("live", lambda: 7)
    data = build(SERIES_WAT, manifest(SERIES, LIVE, name="tbl"))
    with pytest.raises(sqlwasm.ManifestError):
        runtime.install(conn, runtime.load(data))
    with pytest.raises(apsw.SQLError, match="no such table: series"):
        conn.execute("SELECT * FROM series(0, 1)").fetchall()
    conn.close()


def test_a_module_with_capabilities_is_direct_only(build: Build, session_key: object) -> None:
    wat = SERIES_WAT.replace(
        "(memory", '(import "sqlwasm" "log" (func $log (param i32 i32 i32)))\n  (memory', 1
    )
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["log"])  # type: ignore[attr-defined]
    with runtime.connect(":memory:", [build(wat, manifest(SERIES, name="tbl", capabilities=["log"]))]) as conn:
        assert conn.execute("SELECT count(*) FROM series(0, 3)").fetchall() == [(3,)]
        conn.execute("CREATE VIEW v AS SELECT * FROM series(0, 3)")
        with pytest.raises(apsw.SQLError, match="unsafe use of virtual table"):
            conn.execute("SELECT * FROM v").fetchall()


def test_a_pure_module_works_in_views(conn: apsw.Connection) -> None:
    conn.execute("CREATE VIEW v AS SELECT * FROM series(0, 3)")
    assert conn.execute("SELECT sum(twice) FROM v").fetchall() == [(6,)]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"returns": "integer"}, "declares its output 'columns', not 'returns'"),
        ({"abi": "raw"}, "needs abi = 'msgpack'"),
        ({"columns": []}, "at least one output column"),
        ({"columns": [{"name": "arg1", "type": "integer"}]}, "taken by an argument's hidden column"),
        ({"columns": [{"name": "a", "type": "integer"}, {"name": "A", "type": "real"}]}, "appears twice"),
        ({"columns": [{"name": "a", "type": "date"}]}, "unknown type 'date'"),
        ({"columns": [{"name": "a b", "type": "text"}]}, "not a valid SQL identifier"),
        ({"exports": {"open": "open", "next": "next"}}, "needs exports 'close'"),
        ({"exports": {"open": "open", "next": "next", "close": "close", "step": "x"}}, "has only the export roles"),
        ({"varargs": "integer"}, "no varargs"),
        ({"deterministic": True}, "not tables"),
    ],
)
def test_manifest_checks_table_functions(change: dict[str, object], problem: str) -> None:
    with pytest.raises(sqlwasm.ManifestError, match=problem):
        sqlwasm.Runtime(allow_unsigned=True).load(
            __import__("conftest").wasm_module(SERIES_WAT, manifest(dict(SERIES, **change), name="tbl"))
        )


def test_columns_are_refused_outside_tables() -> None:
    from sqlwasm._manifest import parse_manifest

    with pytest.raises(sqlwasm.ManifestError, match="'columns' is for table functions"):
        parse_manifest(manifest(fn("f", columns=[{"name": "a", "type": "integer"}])))


def test_export_types_are_checked() -> None:
    wat = SERIES_WAT.replace('(func (export "close") (param $h i32)', '(func (export "close") (param $h i64)')
    with pytest.raises(sqlwasm.ManifestError, match="close export 'close' has type \\(i64\\)"):
        sqlwasm.Runtime(allow_unsigned=True).load(
            __import__("conftest").wasm_module(wat, manifest(SERIES, name="tbl"))
        )


def test_manifest_round_trips_through_json() -> None:
    from sqlwasm._manifest import manifest_from_json, parse_manifest

    parsed = parse_manifest(manifest(SERIES, name="tbl"))
    assert manifest_from_json(parsed.to_bytes()) == parsed
    assert parsed.functions[0].columns == (("i", "integer"), ("twice", "integer"))
    assert parsed.functions[0].hidden_columns == ("arg1", "arg2")


def test_inspect_shows_columns_and_roles(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from conftest import wasm_module

    from sqlwasm._cli import main

    path = Path(str(tmp_path)) / "tbl.wasm"
    path.write_bytes(wasm_module(SERIES_WAT, manifest(SERIES, name="tbl")))
    assert main(["inspect", str(path)]) == 0
    assert (
        "  series(integer, integer) -> table(i integer, twice integer)  "
        "[table, msgpack, open open, next next, close close]"
    ) in capsys.readouterr().out.splitlines()
