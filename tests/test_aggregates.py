"""Aggregate and window functions through the native per-row path.

The guests here are inline WAT that count their live state handles, so the
tests can prove that every state the host creates is released (final or
drop), whatever happens to the statement.
"""

from __future__ import annotations

import math

import apsw
import pytest
from conftest import Build, Connect, fn, manifest, one_error

# States live at 1024 + 16 * handle: f64 sum, i64 count. `live` counts
# handles from init until final or drop; `dropped` counts drop calls.
SUM_WAT = """
(module
  (memory (export "memory") 64)
  (global $next (mut i32) (i32.const 0))
  (global $live (mut i32) (i32.const 0))
  (global $dropped (mut i32) (i32.const 0))
  (func $addr (param $h i32) (result i32)
    (i32.add (i32.const 1024) (i32.mul (local.get $h) (i32.const 16))))
  (func (export "init") (result i32) (local $h i32)
    (local.set $h (global.get $next))
    (global.set $next (i32.add (global.get $next) (i32.const 1)))
    (global.set $live (i32.add (global.get $live) (i32.const 1)))
    (f64.store (call $addr (local.get $h)) (f64.const 0))
    (i64.store offset=8 (call $addr (local.get $h)) (i64.const 0))
    (local.get $h))
  (func (export "step") (param $h i32) (param $x f64)
    (if (f64.eq (local.get $x) (f64.const -13)) (then unreachable))
    (f64.store (call $addr (local.get $h))
      (f64.add (f64.load (call $addr (local.get $h))) (local.get $x)))
    (i64.store offset=8 (call $addr (local.get $h))
      (i64.add (i64.load offset=8 (call $addr (local.get $h))) (i64.const 1))))
  (func (export "inverse") (param $h i32) (param $x f64)
    (f64.store (call $addr (local.get $h))
      (f64.sub (f64.load (call $addr (local.get $h))) (local.get $x)))
    (i64.store offset=8 (call $addr (local.get $h))
      (i64.sub (i64.load offset=8 (call $addr (local.get $h))) (i64.const 1))))
  (func $current (param $h i32) (result f64)
    ;; NaN (SQL NULL) for an empty state
    (if (result f64) (i64.eqz (i64.load offset=8 (call $addr (local.get $h))))
      (then (f64.const nan))
      (else (f64.load (call $addr (local.get $h))))))
  (func (export "value") (param $h i32) (result f64) (call $current (local.get $h)))
  (func (export "final") (param $h i32) (result f64)
    (global.set $live (i32.sub (global.get $live) (i32.const 1)))
    (call $current (local.get $h)))
  (func (export "drop") (param $h i32)
    (global.set $live (i32.sub (global.get $live) (i32.const 1)))
    (global.set $dropped (i32.add (global.get $dropped) (i32.const 1))))
  (func (export "step_batch") (param $h i32) (param $p i32) (param $n i32) (local $i i32) (local $x f64)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $x (f64.load (i32.add (local.get $p) (i32.mul (local.get $i) (i32.const 8)))))
      (if (f64.eq (local.get $x) (f64.const -13)) (then unreachable))
      (f64.store (call $addr (local.get $h)) (f64.add (f64.load (call $addr (local.get $h))) (local.get $x)))
      (i64.store offset=8 (call $addr (local.get $h))
        (i64.add (i64.load offset=8 (call $addr (local.get $h))) (i64.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  (func (export "live") (param i64) (result i64) (i64.extend_i32_s (global.get $live)))
  (func (export "dropped") (param i64) (result i64) (i64.extend_i32_s (global.get $dropped)))
  ;; msgpack aggregate: counts rows; a text first argument is an error
  (data (i32.const 100) "\\81\\a5error\\a4boom")
  (global $count (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "m_init") (result i32) (global.set $count (i32.const 0)) (i32.const 7))
  (func (export "m_step") (param $h i32) (param $p i32) (param $n i32) (result i64)
    (if (i32.ne (local.get $h) (i32.const 7)) (then unreachable))
    (if (i32.eq (i32.and (i32.load8_u offset=1 (local.get $p)) (i32.const 0xe0)) (i32.const 0xa0))
      (then (return (i64.or (i64.shl (i64.const 100) (i64.const 32)) (i64.const 12)))))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i64.const 0))
  (func (export "m_final") (param $h i32) (result i64)
    ;; uint16 count at 200
    (i32.store8 (i32.const 200) (i32.const 0xcd))
    (i32.store8 (i32.const 201) (i32.shr_u (global.get $count) (i32.const 8)))
    (i32.store8 (i32.const 202) (global.get $count))
    (i64.or (i64.shl (i64.const 200) (i64.const 32)) (i64.const 3)))
)
"""

ROLES = {"init": "init", "step": "step", "final": "final", "value": "value", "inverse": "inverse", "drop": "drop"}


def sum_manifest() -> dict[str, object]:
    return manifest(
        {**fn("w_sum", args=["real"], returns="real", kind="window", exports=ROLES), "deterministic": True},
        {
            **fn("b_sum", args=["real"], returns="real", kind="aggregate"),
            "exports": {"init": "init", "step": "step", "step_batch": "step_batch", "final": "final", "drop": "drop"},
        },
        fn("w_live", export="live"),
        fn("w_dropped", export="dropped"),
        {
            **fn("m_count", abi="msgpack", args=["any"], returns="integer", kind="aggregate"),
            "exports": {"init": "m_init", "step": "m_step", "final": "m_final"},
        },
        name="t",
    )


@pytest.fixture
def conn(build: Build, connect: Connect) -> apsw.Connection:
    c = connect(build(SUM_WAT, sum_manifest()))
    c.execute(
        "CREATE TABLE t(i INTEGER PRIMARY KEY, g INTEGER, x REAL);"
        "INSERT INTO t(g, x) WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) "
        "SELECT n % 10, n FROM c"
    )
    return c


def live(conn: apsw.Connection) -> int:
    return conn.execute("SELECT w_live(0)").fetchall()[0][0]


def test_group_by_matches_builtin_and_releases_every_state(conn: apsw.Connection) -> None:
    got = conn.execute("SELECT g, w_sum(x) FROM t GROUP BY g ORDER BY g").fetchall()
    want = conn.execute("SELECT g, sum(x) FROM t GROUP BY g ORDER BY g").fetchall()
    assert got == want and len(got) == 10
    assert live(conn) == 0


def test_many_groups_leak_no_handles(conn: apsw.Connection) -> None:
    rows = conn.execute("SELECT i, w_sum(x) FROM t GROUP BY i").fetchall()
    assert len(rows) == 1000 and all(total == float(i) for i, total in rows)
    assert live(conn) == 0


def test_several_aggregates_in_one_query_have_their_own_states(conn: apsw.Connection) -> None:
    got = conn.execute("SELECT w_sum(x), w_sum(x * 2), w_sum(x - 5000) FROM t WHERE g = 3").fetchall()
    want = conn.execute("SELECT sum(x), sum(x * 2), sum(x - 5000) FROM t WHERE g = 3").fetchall()
    assert got == want
    assert live(conn) == 0


def test_empty_group_calls_init_then_final(conn: apsw.Connection) -> None:
    assert conn.execute("SELECT w_sum(x) FROM t WHERE 0").fetchall() == [(None,)]
    assert live(conn) == 0


def test_null_strict_skips_rows(conn: apsw.Connection) -> None:
    conn.execute("UPDATE t SET x = NULL WHERE i % 2 = 0")
    assert conn.execute("SELECT w_sum(x) FROM t").fetchall() == conn.execute("SELECT sum(x) FROM t").fetchall()
    assert conn.execute("SELECT w_sum(x) FROM t WHERE x IS NULL").fetchall() == [(None,)]


@pytest.mark.parametrize(
    "frame",
    [
        "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
        "ROWS BETWEEN 5 PRECEDING AND 5 FOLLOWING",
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
        "ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING",
    ],
)
def test_window_matches_builtin(conn: apsw.Connection, frame: str) -> None:
    sql = "SELECT i, {f}(x) OVER (PARTITION BY g ORDER BY i " + frame + ") FROM t ORDER BY i"
    got = conn.execute(sql.format(f="w_sum")).fetchall()
    want = conn.execute(sql.format(f="sum")).fetchall()
    assert got == want
    assert live(conn) == 0


def test_trap_in_step_fails_the_statement_and_drops_the_state(conn: apsw.Connection) -> None:
    conn.execute("UPDATE t SET x = -13 WHERE i = 500")
    message = one_error(conn, "SELECT g, w_sum(x) FROM t GROUP BY g")
    assert message.startswith("t.w_sum: trap in step (unreachable)")
    assert live(conn) == 0
    assert conn.execute("SELECT w_dropped(0)").fetchall()[0][0] >= 1
    # The connection and the function keep working.
    assert conn.execute("SELECT w_sum(x) FROM t WHERE x BETWEEN 1 AND 12").fetchall() == [(78.0,)]


def test_trap_in_window_step_fails_cleanly(conn: apsw.Connection) -> None:
    conn.execute("UPDATE t SET x = -13 WHERE i = 500")
    message = one_error(conn, "SELECT w_sum(x) OVER (ORDER BY i ROWS 3 PRECEDING) FROM t")
    assert "t.w_sum: trap in step" in message
    assert live(conn) == 0


def test_msgpack_aggregate_and_its_error(conn: apsw.Connection) -> None:
    assert conn.execute("SELECT m_count(x) FROM t").fetchall() == [(1000,)]
    assert conn.execute("SELECT m_count(x) FROM t WHERE 0").fetchall() == [(0,)]
    message = one_error(conn, "SELECT m_count(CASE WHEN i = 500 THEN 'text' ELSE x END) FROM t")
    assert message == "t.m_count: boom"


def test_wasm_call_refuses_aggregates(conn: apsw.Connection) -> None:
    message = one_error(conn, "SELECT wasm_call('t', 'w_sum', 1.0)")
    assert "t.w_sum is an aggregate function" in message


def test_aggregate_arity_is_checked_by_sqlite(conn: apsw.Connection) -> None:
    with pytest.raises(apsw.SQLError, match="wrong number of arguments"):
        conn.execute("SELECT w_sum(x, x) FROM t").fetchall()


def test_aggregate_in_a_transaction_that_fails_keeps_earlier_work(conn: apsw.Connection) -> None:
    conn.execute("BEGIN; INSERT INTO t(g, x) VALUES (99, 1.5)")
    conn.execute("UPDATE t SET x = -13 WHERE i = 500")
    with pytest.raises(apsw.SQLError):
        conn.execute("INSERT INTO t(g, x) SELECT 100, w_sum(x) FROM t").fetchall()
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM t WHERE g = 99").fetchall() == [(1,)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert not math.isnan(conn.execute("SELECT w_sum(x) FROM t WHERE g = 99").fetchall()[0][0])


@pytest.mark.parametrize("rows", [0, 1, 255, 256, 257, 1000])
def test_step_batch_gives_the_same_sums(conn: apsw.Connection, rows: int) -> None:
    """Rows are buffered in C and sent 256 at a time: every boundary counts."""
    sql = "SELECT {f}(x) FROM (SELECT x FROM t ORDER BY i LIMIT ?)"
    want = conn.execute(sql.format(f="sum"), (rows,)).fetchall()
    assert conn.execute(sql.format(f="b_sum"), (rows,)).fetchall() == want
    assert conn.execute("SELECT g, b_sum(x) FROM t GROUP BY g").fetchall() == conn.execute(
        "SELECT g, sum(x) FROM t GROUP BY g"
    ).fetchall()
    assert live(conn) == 0


def test_trap_in_step_batch_fails_cleanly(conn: apsw.Connection) -> None:
    conn.execute("UPDATE t SET x = -13 WHERE i = 700")
    message = one_error(conn, "SELECT b_sum(x) FROM t")
    assert message.startswith("t.b_sum: trap in step_batch (unreachable)")
    assert live(conn) == 0
