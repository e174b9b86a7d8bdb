"""A msgpack aggregate's step status (0, or {"error": text}) as the native
decoder reads it: the guest below hands back its blob argument as the status,
so any bytes can be tried."""

from __future__ import annotations

import apsw
import msgpack
import pytest
from conftest import MEMORY, Build, Connect, fn, manifest, one_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STATUS_WAT = f"""
(module
  {MEMORY}
  (data (i32.const 16) "\\c0")
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "init") (result i32) (i32.const 1))
  ;; The row is [bin8 N, N bytes]: the status is those bytes.
  (func (export "step") (param $h i32) (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (i32.add (local.get $p) (i32.const 3))) (i64.const 32))
            (i64.extend_i32_u (i32.load8_u offset=2 (local.get $p)))))
  (func (export "final") (param i32) (result i64) (i64.const 0x0000001000000001))
)
"""
PREFIX = "t.s_agg: "
NOT_A_STATUS = PREFIX + 'step and inverse must return 0 or {"error": text}'


@pytest.fixture
def conn(build: Build, connect: Connect) -> apsw.Connection:
    entry = fn("s_agg", abi="msgpack", args=["blob"], returns="any", kind="aggregate")
    entry["exports"] = {"init": "init", "step": "step", "final": "final"}
    return connect(build(STATUS_WAT, manifest(entry, name="t")))


def step_error(conn: apsw.Connection, status: bytes) -> str:
    return one_error(conn, "SELECT s_agg(?)", status)


def test_no_rows_reach_final(conn: apsw.Connection) -> None:
    assert conn.execute("SELECT s_agg(x) FROM (SELECT x'00' AS x) WHERE 0").fetchall() == [(None,)]


@pytest.mark.parametrize("value", [0, 1, -1, 2.5, "error", b"error", None, True, [1]])
def test_a_value_that_is_not_a_map_is_refused(conn: apsw.Connection, value: object) -> None:
    assert step_error(conn, msgpack.packb(value)) == NOT_A_STATUS


def test_an_error_map_is_the_statement_error(conn: apsw.Connection) -> None:
    assert step_error(conn, msgpack.packb({"error": "bad row"})) == PREFIX + "bad row"
    assert step_error(conn, b"\xde\x00\x01" + msgpack.packb("error") + msgpack.packb("wide map")) == PREFIX + "wide map"


@pytest.mark.parametrize(
    "status, expected",
    [
        (b"", "result msgpack is truncated"),
        (b"\xde\x00", "result msgpack is truncated"),
        (msgpack.packb({"nope": "x"}), 'result map must be {"error": text}'),
        (msgpack.packb({"error": 1}), 'result map must be {"error": text}'),
        (b"\xde\x00\x02" + msgpack.packb("error") + msgpack.packb("a"), 'result map must be {"error": text}'),
        (msgpack.packb({"error": "a", "b": "c"}), 'step and inverse must return 0 or {"error": text}'),
        (msgpack.packb({"error": "x"}) + b"\x00\x00", "result has 2 trailing bytes after the msgpack value"),
        (b"\x81\xa5error\xa2\xff\xfe", "guest error (message is not valid UTF-8)"),
    ],
)
def test_a_malformed_status_names_its_problem(conn: apsw.Connection, status: bytes, expected: str) -> None:
    assert step_error(conn, status) == PREFIX + expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.binary(max_size=64) | st.builds(lambda m: msgpack.packb({"error": m}), st.text(max_size=40)))
def test_any_status_bytes_fail_the_statement_cleanly(conn: apsw.Connection, status: bytes) -> None:
    message = step_error(conn, status)
    assert message.startswith(PREFIX), message
