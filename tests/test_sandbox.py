"""Hostile guests: traps of every kind, garbage results, failing and
reentrant host functions, traps in the middle of transactions and scans.

Every case must end in a clean error, with the process alive, the
connection usable and other connections unaffected. (Result pointer,
length and encoding checks are mostly in tests/test_marshal.py.)
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import apsw
import msgpack
import pytest
from conftest import MEMORY, Build, Connect, KeyPair, fn, manifest, one_error, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm import TrapError

PAGE = 65536

# Module 'x': a per-instance counter (to see that state survives traps, and
# that another connection's instance is untouched) and one trap of each kind.
TRAPS_WAT = MEMORY + """
  (type $i64_to_i64 (func (param i64) (result i64)))
  (type $nothing (func))
  (table 4 funcref)
  (elem (i32.const 1) $plus_one $no_args)
  (global $n (mut i64) (i64.const 0))
  (func $plus_one (type $i64_to_i64) (i64.add (local.get 0) (i64.const 1)))
  (func $no_args (type $nothing))
  (func (export "next") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (global.get $n))
  ;; counts, then traps: state changed before the trap stays changed
  (func (export "count_then_trap") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    unreachable)
  (func (export "store") (param i64) (result i64)
    (i64.store (i32.wrap_i64 (local.get 0)) (i64.const -1)) (i64.const 0))
  (func (export "store8") (param i64) (result i64)
    (i32.store8 (i32.wrap_i64 (local.get 0)) (i32.const 1)) (i64.const 0))
  (func (export "fill") (param i64) (result i64)
    (memory.fill (i32.wrap_i64 (local.get 0)) (i32.const 0xAA) (i32.const 16)) (i64.const 0))
  (func (export "copy") (param i64) (result i64)
    (memory.copy (i32.const 0) (i32.wrap_i64 (local.get 0)) (i32.const 16)) (i64.const 0))
  (func (export "div32") (param i64) (result i64)
    (i64.extend_i32_s (i32.div_u (i32.const 1) (i32.wrap_i64 (local.get 0)))))
  (func (export "rem") (param i64) (result i64) (i64.rem_s (i64.const 7) (local.get 0)))
  ;; call_indirect through table slot k with signature i64 -> i64
  (func (export "indirect") (param i64) (result i64)
    (call_indirect (type $i64_to_i64) (i64.const 41) (i32.wrap_i64 (local.get 0))))
  (func (export "peek") (param i64) (result i64) (i64.load (i32.wrap_i64 (local.get 0))))
"""
TRAP_EXPORTS = ("next", "count_then_trap", "store", "store8", "fill", "copy", "div32", "rem", "indirect", "peek")


def traps_manifest(**extra: Any) -> dict[str, Any]:
    return manifest(*(fn(f"x_{e}", export=e) for e in TRAP_EXPORTS), name="x", **extra)


@pytest.fixture
def pair(build: Build, connect: Connect) -> tuple[apsw.Connection, apsw.Connection]:
    """Two connections with module 'x': the victim and a bystander."""
    data = build(TRAPS_WAT, traps_manifest())
    return connect(data), connect(data)


def counter(conn: apsw.Connection) -> int:
    return int(conn.execute("SELECT x_next(0)").fetchone()[0])


@pytest.mark.parametrize(
    "sql, cause",
    [
        ("SELECT x_store(65535)", "trap (out-of-bounds memory access)"),
        ("SELECT x_store(65529)", "trap (out-of-bounds memory access)"),  # 8 bytes, one past the end
        ("SELECT x_store(-1)", "trap (out-of-bounds memory access)"),
        ("SELECT x_store8(65536)", "trap (out-of-bounds memory access)"),
        ("SELECT x_store8(-2147483648)", "trap (out-of-bounds memory access)"),
        ("SELECT x_fill(65530)", "trap (out-of-bounds memory access)"),
        ("SELECT x_copy(65530)", "trap (out-of-bounds memory access)"),
        ("SELECT x_copy(-16)", "trap (out-of-bounds memory access)"),
        ("SELECT x_div32(0)", "trap (integer division by zero)"),
        ("SELECT x_rem(0)", "trap (integer division by zero)"),
        ("SELECT x_indirect(0)", "trap (indirect call to null)"),  # empty slot
        ("SELECT x_indirect(3)", "trap (indirect call to null)"),
        ("SELECT x_indirect(2)", "trap (indirect call signature mismatch)"),
        ("SELECT x_indirect(4)", "trap (out-of-bounds table access)"),  # past the table
        ("SELECT x_indirect(-1)", "trap (out-of-bounds table access)"),
        ("SELECT x_count_then_trap(0)", "trap (unreachable)"),
    ],
)
def test_trap_is_a_clean_error(pair: tuple[apsw.Connection, apsw.Connection], sql: str, cause: str) -> None:
    conn, bystander = pair
    assert (counter(conn), counter(bystander), counter(bystander)) == (1, 1, 2)
    name = sql.split()[1].split("(")[0]
    for _ in range(2):
        message = one_error(conn, sql)
        assert message.startswith(f"x.{name}: {cause}"), message
    # the guest keeps its state (and a store that trapped half-way did not write)
    expected = 4 if "count_then_trap" in sql else 2
    assert counter(conn) == expected
    assert conn.execute("SELECT x_indirect(1), x_peek(65528)").fetchall() == [(42, 0)]
    assert counter(bystander) == 3


def test_an_out_of_bounds_message_names_the_cause_once(pair: tuple[apsw.Connection, apsw.Connection]) -> None:
    """wasmtime numbers the causes of an out-of-bounds access (0: the
    address, 1: the trap); the message gives the trap's alone."""
    conn, _ = pair
    message = one_error(conn, "SELECT x_store(-1)")
    assert re.fullmatch(
        r"x\.x_store: trap \(out-of-bounds memory access\): out of bounds memory access in wasm function \d+", message
    ), message


def test_in_bounds_edges_work(pair: tuple[apsw.Connection, apsw.Connection]) -> None:
    conn, _ = pair
    assert conn.execute("SELECT x_store(65528), x_peek(65528), x_store8(65535), x_fill(65520)").fetchall() == [
        (0, -1, 0, 0)
    ]
    assert conn.execute("SELECT x_copy(65520), x_peek(0), x_div32(3), x_rem(4)").fetchall() == [
        (0, -0x5555555555555556, 0, 3)
    ]


def test_many_traps_in_a_row(pair: tuple[apsw.Connection, apsw.Connection]) -> None:
    conn, bystander = pair
    for k in range(300):
        with pytest.raises(apsw.SQLError, match="x.x_store: trap"):
            conn.execute("SELECT x_store(-1)").fetchall()
        if k % 100 == 0:
            assert conn.execute("SELECT x_indirect(1)").fetchall() == [(42,)]
    assert counter(conn) == 1 and counter(bystander) == 1


# A C guest keeps its stack frames in linear memory below the global
# __stack_pointer, which each function moves down on entry and back on
# return. A trap skips the returns.

# The same in WAT: the module exports $sp as __stack_pointer (or under
# another name, or immutable, which the host leaves alone), "push" moves it
# down by 1000 and traps (deep at once); "sp" reads it.
STACK_POINTER_WAT = MEMORY + """
  (global $sp (export "{name}") (mut i32) (i32.const 65536))
  (func (export "push") (param i64) (result i64)
    (global.set $sp (i32.sub (global.get $sp) (i32.const 1000)))
    (if (i64.eqz (local.get 0)) (then unreachable))
    (i64.const 0))
  (func (export "sp") (param i64) (result i64) (i64.extend_i32_s (global.get $sp)))
"""
STACK_POINTER_FUNCTIONS = (fn("s_push", export="push"), fn("s_sp", export="sp"))


@pytest.mark.parametrize("name, restored", [("__stack_pointer", True), ("stack", False)])
def test_a_trap_puts_the_exported_stack_pointer_back(build: Build, connect: Connect, name: str, restored: bool) -> None:
    conn = connect(build(STACK_POINTER_WAT.format(name=name), manifest(*STACK_POINTER_FUNCTIONS, name="s")))
    for _ in range(3):
        with pytest.raises(apsw.SQLError, match="s.s_push: trap"):
            conn.execute("SELECT s_push(0)").fetchall()
    assert conn.execute("SELECT s_sp(0)").fetchall() == [(65536 if restored else 65536 - 3000,)]
    # A call that returns keeps what it did: only a trap's leftovers are undone.
    assert conn.execute("SELECT s_push(1), s_sp(0)").fetchall() == [(0, 64536 if restored else 61536)]


def test_an_immutable_or_other_typed_stack_pointer_export_is_left_alone(build: Build, connect: Connect) -> None:
    wat = MEMORY + """
  (global (export "__stack_pointer") i64 (i64.const 7))
  (func (export "boom") (param i64) (result i64) unreachable)
  (func (export "ok") (param i64) (result i64) (local.get 0))
"""
    conn = connect(build(wat, manifest(fn("b_boom", export="boom"), fn("b_ok", export="ok"), name="b")))
    with pytest.raises(apsw.SQLError, match="b.b_boom: trap"):
        conn.execute("SELECT b_boom(0)").fetchall()
    assert conn.execute("SELECT b_ok(5)").fetchall() == [(5,)]
RECURSE_C = r'''
#include "sqlwasm.h"
static volatile int sink;
static int64_t down(int64_t n) { volatile char pad[512]; pad[0] = (char)n; sink = pad[0]; return n <= 0 ? 0 : 1 + down(n - 1); }
SQLWASM_EXPORT(deep) int64_t deep(int64_t n) { return down(n); }
'''
RECURSE_TOML = '''
sqlwasm = 1
name = "rec"
version = "1.0.0"
[[functions]]
name = "rec_deep"
export = "deep"
abi = "raw"
args = ["integer"]
returns = "integer"
'''


def test_stack_overflow_traps_do_not_use_up_a_c_guests_stack(tmp_path: Path, session_key: Ed25519PrivateKey) -> None:
    """The host puts the exported __stack_pointer back after each trap.
    Before it did, the 60th or so trap left the stack pointer below 0 and
    every later call failed with an out-of-bounds access."""
    from sqlwasm._build import build
    from sqlwasm._signing import sign

    (tmp_path / "rec.c").write_text(RECURSE_C)
    (tmp_path / "rec.toml").write_text(RECURSE_TOML)
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = runtime.connect(":memory:", [sign(build(tmp_path / "rec.c", tmp_path / "rec.toml"), session_key)])
    assert conn.execute("SELECT rec_deep(100)").fetchall() == [(100,)]
    for _ in range(80):
        with pytest.raises(apsw.SQLError, match="rec.rec_deep: trap"):
            conn.execute("SELECT rec_deep(1000000)").fetchall()
    assert conn.execute("SELECT rec_deep(100)").fetchall() == [(100,)]


# ---------------------------------------------- garbage from a msgpack guest

# Module 'rf': rf_echo(blob) returns the blob's bytes as its result, so SQL
# chooses exactly what the host has to decode. sqlwasm_alloc grows memory
# as needed and always answers 1024.
REFLECT_WAT = MEMORY + """
  (func (export "sqlwasm_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub (i32.shr_u (i32.add (local.get $n) (i32.const 66559)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
    (i32.const 1024))
  ;; the row is [bin]: fixarray(1), then a bin8/16/32 header, then the payload
  (func (export "echo") (param $p i32) (param $n i32) (result i64)
    (local $header i32)
    (local.set $header
      (select (i32.const 3)
        (select (i32.const 4) (i32.const 6) (i32.eq (i32.load8_u offset=1 (local.get $p)) (i32.const 0xc5)))
        (i32.eq (i32.load8_u offset=1 (local.get $p)) (i32.const 0xc4))))
    (i64.or
      (i64.shl (i64.extend_i32_u (i32.add (local.get $p) (local.get $header))) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $n) (local.get $header)))))
  ;; the row itself as the result: an array, which no function may return
  (func (export "row") (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
"""
REFLECT_MANIFEST = manifest(
    fn("rf_echo", export="echo", abi="msgpack", args=["blob"], returns="any"),
    fn("rf_row", export="row", abi="msgpack", args=[], varargs="any", returns="any"),
    name="rf",
)


@pytest.fixture
def reflector(build: Build, connect: Connect) -> apsw.Connection:
    conn = connect(build(REFLECT_WAT, REFLECT_MANIFEST))
    assert conn.execute("SELECT rf_echo(?)", (msgpack.packb("ok"),)).fetchall() == [("ok",)]
    return conn


def echo_error(conn: apsw.Connection, data: bytes) -> str:
    message = one_error(conn, "SELECT rf_echo(?)", data)
    assert message.startswith("rf.rf_echo: "), message
    assert conn.execute("SELECT rf_echo(?)", (msgpack.packb(7),)).fetchall() == [(7,)]
    return message


DEPTH = 100_000


@pytest.mark.parametrize(
    "data, cause",
    [
        (b"\x91" * DEPTH + b"\xc0", "unsupported msgpack type 0x91"),
        (b"\xdc\x00\x01" * DEPTH + b"\xc0", "unsupported msgpack type 0xdc"),
        (b"\x81\xa5error" * DEPTH + b"\xa1x", 'result map must be {"error": text}'),
        (b"\x81\xa5error\x91" * DEPTH + b"\xc0", 'result map must be {"error": text}'),
        (b"\x81\xc0" * DEPTH + b"\xc0", 'result map must be {"error": text}'),
        (b"\xd4\x00" * DEPTH, "unsupported msgpack type 0xd4"),
        (b"\x91" * DEPTH, "unsupported msgpack type 0x91"),  # nested and truncated
    ],
    ids=["fixarray", "array16", "error-map-in-map", "error-map-with-array", "nil-keyed-maps", "ext", "truncated"],
)
def test_deeply_nested_results(reflector: apsw.Connection, data: bytes, cause: str) -> None:
    assert cause in echo_error(reflector, data)


def test_row_echoed_back_is_refused(reflector: apsw.Connection) -> None:
    """A guest that hands back the host's own argument buffer."""
    for sql in ("SELECT rf_row()", "SELECT rf_row(1, 2, 3)", "SELECT rf_row(zeroblob(100000))"):
        message = one_error(reflector, sql)
        assert message.startswith("rf.rf_row: result has unsupported msgpack type 0x9"), message


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 100, 1 << 20])
def test_large_truncated_results(reflector: apsw.Connection, cut: int) -> None:
    whole = msgpack.packb("z" * (1 << 20)) + b""  # str32 header, 1 MiB body
    assert "result msgpack is truncated" in echo_error(reflector, whole[: len(whole) - cut])


def test_large_results_with_trailing_bytes(reflector: apsw.Connection) -> None:
    assert "1048576 trailing bytes" in echo_error(reflector, b"\xc0" + b"\x00" * (1 << 20))
    assert "1 trailing bytes" in echo_error(reflector, msgpack.packb(b"q" * (1 << 20)) + b"\x00")


def test_random_garbage_results(reflector: apsw.Connection) -> None:
    """Seeded garbage: each result either decodes exactly as msgpack says, or
    is a clean error; never anything else."""
    rng = random.Random(20240601)
    failures = decoded = 0
    for k in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 3, 5, 9, 17, 64, 300])))
        try:
            (got,) = reflector.execute("SELECT rf_echo(?)", (data,)).fetchone()
        except apsw.SQLError as exc:
            assert str(exc).startswith("rf.rf_echo: "), str(exc)
            failures += 1
            continue
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float) and value != value:
            value = None  # NaN is NULL in SQLite
        assert got == value and type(got) is type(value), (data, got, value)
        decoded += 1
    assert failures > 1000 and decoded > 50
    assert reflector.execute("SELECT 40 + 2").fetchall() == [(42,)]


# ------------------------------------------- traps inside transactions and scans

# Module 'tr': tr_f(x) = x + 1, but traps when x = 500 (or x = 50000).
TRAP_ON_WAT = MEMORY + """
  (func (export "f") (param i64) (result i64)
    (if (i64.eq (local.get 0) (i64.const 500)) (then unreachable))
    (if (i64.eq (local.get 0) (i64.const 50000)) (then unreachable))
    (i64.add (local.get 0) (i64.const 1)))
"""
TRAP_ON_MANIFEST = manifest(fn("tr_f", export="f", deterministic=True), name="tr")
ROWS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "


@pytest.mark.parametrize("where", ["memory", "file"])
def test_trap_in_the_middle_of_an_update_inside_a_transaction(
    build: Build, runtime: sqlwasm.Runtime, tmp_path: Path, where: str
) -> None:
    path = ":memory:" if where == "memory" else str(tmp_path / "t.db")
    data = build(TRAP_ON_WAT, TRAP_ON_MANIFEST)
    conn = runtime.connect(path, [data])
    try:
        conn.execute("CREATE TABLE t(x INTEGER)")
        conn.execute(ROWS + "INSERT INTO t SELECT i FROM n", (1000,))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (-7)")
        with pytest.raises(apsw.SQLError, match="tr.tr_f: trap \\(unreachable\\)"):
            conn.execute("UPDATE t SET x = tr_f(x)")
        assert conn.in_transaction
        # the statement was undone, the earlier work of the transaction was not
        assert conn.execute("SELECT count(*), sum(x), min(x) FROM t").fetchall() == [(1001, 500500 - 7, -7)]
        conn.execute("UPDATE t SET x = tr_f(x) WHERE x < 500")  # the guest still works
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*), sum(x) FROM t").fetchall() == [(1001, 500500 - 7 + 500)]
    finally:
        conn.close()
    if where == "file":
        again = runtime.connect(path, [data])
        try:
            assert again.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert again.execute("SELECT count(*), sum(x), min(x) FROM t").fetchall() == [(1001, 500500 - 7 + 500, -6)]
        finally:
            again.close()


def test_trap_in_an_autocommit_update_changes_nothing(build: Build, runtime: sqlwasm.Runtime, tmp_path: Path) -> None:
    conn = runtime.connect(str(tmp_path / "a.db"), [build(TRAP_ON_WAT, TRAP_ON_MANIFEST)])
    try:
        conn.execute("CREATE TABLE t(x INTEGER PRIMARY KEY, y)")
        conn.execute(ROWS + "INSERT INTO t SELECT i, i FROM n", (1000,))
        with pytest.raises(apsw.SQLError, match="tr.tr_f: trap"):
            conn.execute("UPDATE t SET y = tr_f(y)")
        assert not conn.in_transaction
        assert conn.execute("SELECT sum(y) FROM t").fetchall() == [(500500,)]
        with pytest.raises(apsw.SQLError, match="tr.tr_f: trap"):
            conn.execute("INSERT INTO t SELECT x + 1000, tr_f(y) FROM t")
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1000,)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_trap_in_the_middle_of_a_large_scan(build: Build, runtime: sqlwasm.Runtime) -> None:
    data = build(TRAP_ON_WAT, TRAP_ON_MANIFEST)
    conn = runtime.connect(":memory:", [data])
    other = runtime.connect(":memory:", [data])
    try:
        conn.execute("CREATE TABLE t(x INTEGER PRIMARY KEY)")
        conn.execute(ROWS + "INSERT INTO t SELECT i + 500 FROM n", (100_000,))  # 501 .. 100500
        seen = 0
        with pytest.raises(apsw.SQLError, match="tr.tr_f: trap \\(unreachable\\)"):
            for (value,) in conn.execute("SELECT tr_f(x) FROM t ORDER BY x"):
                seen += 1
                assert value == seen + 501
        assert seen == 50000 - 501  # every row before 50000 arrived, then the error
        assert "tr.tr_f: trap" in one_error(conn, "SELECT sum(tr_f(x)) FROM t")
        assert conn.execute("SELECT count(*), sum(tr_f(x)) FROM t WHERE x != 50000").fetchall() == [
            (99_999, sum(range(502, 100_502)) - 50_001)
        ]
        assert other.execute("SELECT tr_f(1)").fetchall() == [(2,)]
    finally:
        conn.close()
        other.close()


# ------------------------------------------------------ failing host functions

LOG_WAT = '(import "sqlwasm" "log" (func $log (param i32 i32 i32)))' + MEMORY + """
  (data (i32.const 0) "hello")
  (global $n (mut i64) (i64.const 0))
  ;; logs "hello", then returns how many times it has been called
  (func (export "say") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (call $log (i32.const 1) (i32.const 0) (i32.const 5))
    (global.get $n))
  (func (export "twice") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 2)))
"""


def log_manifest(name: str = "lg", **extra: Any) -> dict[str, Any]:
    return manifest(fn(f"{name}_say", export="say"), fn(f"{name}_twice", export="twice"), name=name, capabilities=["log"], **extra)


@pytest.fixture
def log_runtime(session_key: Ed25519PrivateKey) -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["log"])


class _Handler(logging.Handler):
    def __init__(self, action: Any) -> None:
        super().__init__(logging.DEBUG)
        self.action = action
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        self.action(record)


@pytest.fixture
def guest_handler() -> Iterator[Any]:
    """guest_handler(action, name="lg"): installs a handler on the guest's
    logger whose emit runs action(record); removed at teardown."""
    installed: list[tuple[logging.Logger, logging.Handler, int]] = []

    def install(action: Any, name: str = "lg") -> _Handler:
        logger = logging.getLogger(f"sqlwasm.guest.{name}")
        handler = _Handler(action)
        installed.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return handler

    yield install
    for logger, handler, level in installed:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _raise(exc: BaseException) -> Any:
    def action(record: logging.LogRecord) -> None:
        raise exc

    return action


@pytest.mark.parametrize(
    "exc, shown",
    [
        (RuntimeError("handler broke"), "RuntimeError: handler broke"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (SystemExit(3), "SystemExit: 3"),
        (MemoryError(), "MemoryError"),
    ],
)
def test_exception_in_a_host_function(
    build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any, exc: BaseException, shown: str
) -> None:
    data = build(LOG_WAT, log_manifest())
    conn = log_runtime.connect(":memory:", [data])
    bystander = log_runtime.connect(":memory:", [data])
    try:
        handler = guest_handler(_raise(exc))
        for _ in range(2):
            message = one_error(conn, "SELECT lg_say(0)")
            assert message.startswith("lg.lg_say: host function sqlwasm.log failed"), message
            assert shown in message, message
        assert handler.calls == 2
        # inside a multi-row statement, too: the first row stops it
        assert "host function sqlwasm.log failed" in one_error(conn, ROWS + "SELECT lg_say(i) FROM n", 10)
        assert handler.calls == 3
        logging.getLogger("sqlwasm.guest.lg").removeHandler(handler)
        # the guest ran up to the log call each time: its state moved on
        assert conn.execute("SELECT lg_say(0), lg_twice(21)").fetchall() == [(4, 42)]
        assert bystander.execute("SELECT lg_say(0)").fetchall() == [(1,)]
    finally:
        conn.close()
        bystander.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("stale")])
def test_host_exception_does_not_leak_into_later_calls(
    build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any, exc: BaseException
) -> None:
    """After a host function failed inside SQL, the next failure elsewhere
    must be reported as itself, not as the old host exception."""
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, log_manifest())])
    target = apsw.Connection(":memory:")
    try:
        guest_handler(_raise(exc))
        one_error(conn, "SELECT lg_say(0)")
        bad_start = MEMORY + '(func (export "_initialize") unreachable) (func (export "f") (param i64) (result i64) (local.get 0))'
        try:
            log_runtime.install(target, build(bad_start, manifest(fn("i_f", export="f"), name="i")))
        except TrapError as error:
            assert "module 'i': failed while starting" in str(error)
        except BaseException as error:  # caught so that a KeyboardInterrupt cannot end the session
            pytest.fail(f"install raised {type(error).__name__}({error}) left over from the host function, not TrapError")
        else:
            pytest.fail("install of a module whose _initialize traps succeeded")
    finally:
        conn.close()
        target.close()


def test_exception_in_a_host_function_inside_a_transaction(
    build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any
) -> None:
    """Through wasm_call, inside an open transaction: the error is clean and
    the transaction stays open and usable."""
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, log_manifest())])
    try:
        guest_handler(_raise(ValueError("nope")))
        conn.execute("CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1)")
        message = one_error(conn, "INSERT INTO t SELECT wasm_call('lg', 'say', 0)")
        assert "lg.lg_say: host function sqlwasm.log failed: ValueError: nope" in message
        assert conn.in_transaction
        conn.execute("COMMIT")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()


# ------------------------------------------------------------- reentrancy


def test_reentrant_call_into_the_same_module_is_refused(build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any) -> None:
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, log_manifest())])
    inner: list[Any] = []

    def reenter(record: logging.LogRecord) -> None:
        for sql in ("SELECT lg_twice(21)", "SELECT lg_say(0)", "SELECT wasm_call('lg', 'twice', 1)"):
            try:
                inner.append(conn.execute(sql).fetchall())
            except apsw.SQLError as exc:
                inner.append(str(exc))

    try:
        guest_handler(reenter)
        assert conn.execute("SELECT lg_say(0)").fetchall() == [(1,)]  # the outer call completes
        assert len(inner) == 3
        for message in inner:
            assert isinstance(message, str) and "is busy" in message and "reentrant" in message, inner
        assert inner[0].startswith("lg.lg_twice: module 'lg' is busy")
        # the handler's SQL that does not touch the module works meanwhile
        logging.getLogger("sqlwasm.guest.lg").handlers[-1].action = lambda r: inner.append(
            conn.execute("SELECT 6 * 7").fetchall()
        )
        assert conn.execute("SELECT lg_say(0)").fetchall() == [(2,)]
        assert inner[-1] == [(42,)]
    finally:
        logging.getLogger("sqlwasm.guest.lg").handlers.clear()
        assert conn.execute("SELECT lg_say(0), lg_twice(4)").fetchall() == [(3, 8)]
        conn.close()


def test_reentrant_error_propagating_fails_the_outer_call(build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any) -> None:
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, log_manifest())])
    try:
        guest_handler(lambda record: conn.execute("SELECT lg_twice(1)").fetchall())
        message = one_error(conn, "SELECT lg_say(0)")
        assert message.startswith("lg.lg_say: host function sqlwasm.log failed: SQLError"), message
        assert "busy" in message
    finally:
        logging.getLogger("sqlwasm.guest.lg").handlers.clear()
    try:
        assert conn.execute("SELECT lg_say(0)").fetchall() == [(2,)]
    finally:
        conn.close()


def test_host_call_may_use_other_modules_and_connections(build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any) -> None:
    """Only the running instance is busy: another module in the same
    connection, or the same module in another connection, answers."""
    data = build(LOG_WAT, log_manifest())
    other_module = build(LOG_WAT, log_manifest("lo"))
    conn = log_runtime.connect(":memory:", [data, other_module])
    second = log_runtime.connect(":memory:", [data])
    inner: list[Any] = []
    try:

        def use_others(record: logging.LogRecord) -> None:
            if not inner:  # second's lg_say logs to the same logger: act once
                inner.append(None)
                inner.append(conn.execute("SELECT lo_twice(5)").fetchall() + second.execute("SELECT lg_say(0)").fetchall())

        guest_handler(use_others)
        assert conn.execute("SELECT lg_say(0)").fetchall() == [(1,)]
        assert inner == [None, [(10,), (1,)]]
    finally:
        logging.getLogger("sqlwasm.guest.lg").handlers.clear()
        conn.close()
        second.close()


def test_host_call_cannot_close_the_connection(build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any) -> None:
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, log_manifest())])
    errors: list[BaseException] = []

    def close(record: logging.LogRecord) -> None:
        try:
            conn.close()
        except apsw.Error as exc:
            errors.append(exc)

    try:
        guest_handler(close)
        assert conn.execute("SELECT lg_say(0)").fetchall() == [(1,)]
        assert len(errors) == 1
    finally:
        logging.getLogger("sqlwasm.guest.lg").handlers.clear()
    assert conn.execute("SELECT lg_say(0)").fetchall() == [(2,)]
    conn.close()


def test_host_call_installing_a_module_meanwhile(build: Build, log_runtime: sqlwasm.Runtime, guest_handler: Any) -> None:
    """Installing into the connection from inside one of its statements is
    refused cleanly (SQLite could not undo a failed install then); the
    statement fails with that error, and the install works afterwards."""
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, log_manifest())])
    later = build(LOG_WAT, log_manifest("lz"))
    attempts: list[str] = []

    def install(record: logging.LogRecord) -> None:
        if not attempts:
            attempts.append("tried")
            log_runtime.install(conn, later)

    try:
        guest_handler(install)
        message = one_error(conn, "SELECT lg_say(0)")
        assert "module 'lz': cannot install while a statement is running on this connection" in message, message
        with pytest.raises(apsw.SQLError, match="no such function: lz_twice"):
            conn.execute("SELECT lz_twice(4)")
        log_runtime.install(conn, later)
        assert conn.execute("SELECT lz_twice(4), lz_say(0)").fetchall() == [(8, 1)]
    finally:
        logging.getLogger("sqlwasm.guest.lg").handlers.clear()
        conn.close()


# ------------------------------------------------------------- the process


EXIT_SCRIPT = """
import apsw, sqlwasm
conn = sqlwasm.Runtime(trusted_keys=[{pub!r}]).connect(":memory:", [{module!r}])
assert conn.execute("SELECT x_next(0), x_next(0)").fetchall() == [(1, 2)]
{close}
print("done", flush=True)
"""


def test_process_exits_cleanly(keypair: KeyPair, tmp_path: Path) -> None:
    """A program that used sqlwasm ends with exit status 0, whether it closed
    its connection or not (the watchdog must not outlive what it watches)."""
    module = tmp_path / "x.wasm"
    module.write_bytes(wasm_module(TRAPS_WAT, traps_manifest(), key=keypair.private))
    outcomes = []
    for close in ("conn.close()", "", "del conn"):
        script = EXIT_SCRIPT.format(pub=str(keypair.pub_path), module=str(module), close=close)
        # cwd: outside the checkout, whose sqlwasm/ has no compiled native part
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.stdout == "done\n", done.stderr[-2000:]
        outcomes.append((close or "left open", done.returncode))
    assert outcomes == [("conn.close()", 0), ("left open", 0), ("del conn", 0)]
