"""sqlwasm/_limits.py and the native watchdog: time limits, fuel, memory,
result size, stack depth and Connection.interrupt(), against guests that
never stop, eat memory or recurse forever.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import msgpack
import pytest
from conftest import MEMORY, Build, KeyPair, fn, manifest, one_error, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm import CapabilityError, TrapError
from sqlwasm._limits import DEFAULT_TIMEOUT_MS

PAGE = 65536

# Module 'l': loops that never end, count, grow memory and recurse.
LOOPS_WAT = MEMORY + """
  (func (export "forever") (param i64) (result i64) (loop $again (br $again)) (i64.const 0))
  (func (export "spin") (param $n i64) (result i64)
    (local $i i64)
    (block $done
      (loop $again
        (br_if $done (i64.ge_s (local.get $i) (local.get $n)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $again)))
    (local.get $i))
  (func (export "grow") (param i64) (result i64) (i64.extend_i32_s (memory.grow (i32.wrap_i64 (local.get 0)))))
  (func (export "size") (param i64) (result i64) (i64.extend_i32_u (memory.size)))
  ;; grows by n pages until refused; the page count it reached
  (func (export "bomb") (param $n i64) (result i64)
    (loop $again
      (br_if $again (i32.ne (memory.grow (i32.wrap_i64 (local.get $n))) (i32.const -1))))
    (i64.extend_i32_u (memory.size)))
  ;; writes the last byte of memory: proves the pages it has are usable
  (func (export "touch_end") (param i64) (result i64)
    (i32.store8 (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1)) (i32.const 7))
    (i64.load8_u (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1))))
  (func $down (export "down") (param i64) (result i64) (call $down (i64.add (local.get 0) (i64.const 1))))
  (func (export "ok") (param i64) (result i64) (i64.add (local.get 0) (i64.const 1)))
"""
LOOP_FUNCTIONS = ("forever", "spin", "grow", "size", "bomb", "touch_end", "down", "ok")


def loops_manifest(name: str = "l", **extra: Any) -> dict[str, Any]:
    return manifest(*(fn(f"{name}_{e}", export=e) for e in LOOP_FUNCTIONS), name=name, **extra)


def make_runtime(session_key: Ed25519PrivateKey, **options: Any) -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[session_key.public_key()], **options)


def timed_error(conn: apsw.Connection, sql: str, *bindings: Any) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(apsw.SQLError) as info:
        conn.execute(sql, bindings).fetchall()
    elapsed = time.monotonic() - start
    assert conn.execute("SELECT 40 + 2").fetchall() == [(42,)]
    return str(info.value), elapsed


@pytest.fixture
def loops(build: Build) -> bytes:
    return build(LOOPS_WAT, loops_manifest())


# -------------------------------------------------------------- time limit


def test_time_limit_through_connect(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    conn = sqlwasm.connect(":memory:", [loops], trusted_keys=[session_key.public_key()], timeout_ms=120)
    try:
        message, elapsed = timed_error(conn, "SELECT l_forever(0)")
        assert message.startswith("l.l_forever: time limit of 120 ms exceeded"), message
        assert 0.115 <= elapsed < 1.12, elapsed
    finally:
        conn.close()


def test_default_time_limit(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    runtime = make_runtime(session_key)
    assert DEFAULT_TIMEOUT_MS == 5000
    assert runtime.limits.timeout_ms == 5000
    assert runtime.load(loops).limits.timeout_ms == 5000


@pytest.mark.parametrize("timeout_ms", [100, 250])
def test_infinite_loop_hits_the_time_limit(loops: bytes, session_key: Ed25519PrivateKey, timeout_ms: int) -> None:
    conn = make_runtime(session_key, timeout_ms=timeout_ms).connect(":memory:", [loops])
    try:
        message, elapsed = timed_error(conn, "SELECT l_forever(0)")
        assert message.startswith(f"l.l_forever: time limit of {timeout_ms} ms exceeded"), message
        assert timeout_ms / 1000 - 0.005 <= elapsed < timeout_ms / 1000 + 1.0, elapsed
        # the instance works afterwards, and the next call gets a full budget again
        assert conn.execute("SELECT l_ok(1), l_spin(1000)").fetchall() == [(2, 1000)]
        message, elapsed = timed_error(conn, "SELECT wasm_call('l', 'forever', 0)")
        assert f"time limit of {timeout_ms} ms exceeded" in message
        assert timeout_ms / 1000 - 0.005 <= elapsed < timeout_ms / 1000 + 1.0, elapsed
    finally:
        conn.close()


@pytest.mark.parametrize(
    "host, declared, expected",
    [(300, 100, 100), (100, 300, 100), (None, 100, 100), (100, None, 100)],
)
def test_stricter_time_limit_wins(
    build: Build, session_key: Ed25519PrivateKey, host: int | None, declared: int | None, expected: int
) -> None:
    limits = {} if declared is None else {"timeout_ms": declared}
    runtime = make_runtime(session_key, timeout_ms=host)
    module = runtime.load(build(LOOPS_WAT, loops_manifest(limits=limits)))
    assert module.limits.timeout_ms == expected
    conn = runtime.connect(":memory:", [module])
    try:
        message, elapsed = timed_error(conn, "SELECT l_forever(0)")
        assert f"l.l_forever: time limit of {expected} ms exceeded" in message
        assert elapsed < expected / 1000 + 1.0
    finally:
        conn.close()


def spin_rate(conn: apsw.Connection) -> float:
    """Loop iterations per second of l_spin on this machine (measured over
    at least 40 ms, so that the call overhead does not count)."""
    n = 1_000_000
    while True:
        start = time.monotonic()
        conn.execute("SELECT l_spin(?)", (n,)).fetchall()
        elapsed = time.monotonic() - start
        if elapsed >= 0.04:
            return n / elapsed
        n *= 4


def test_time_limit_is_per_call_not_per_statement(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    conn = make_runtime(session_key, timeout_ms=300).connect(":memory:", [loops])
    try:
        n = int(spin_rate(conn) * 0.05)  # ~50 ms per call
        start = time.monotonic()
        rows = conn.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 10) SELECT l_spin(?) FROM k", (n,)
        ).fetchall()
        assert rows == [(n,)] * 10
        assert time.monotonic() - start > 0.3  # the statement outlived one call's limit
    finally:
        conn.close()


def test_no_time_limit(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    limited = make_runtime(session_key, timeout_ms=50).connect(":memory:", [loops])
    runtime = make_runtime(session_key, timeout_ms=None)
    assert runtime.load(loops).limits.timeout_ms is None
    unlimited = runtime.connect(":memory:", [loops])
    try:
        n = int(spin_rate(unlimited) * 0.3)  # ~300 ms in one call, 6 times the limit
        assert "time limit of 50 ms exceeded" in one_error(limited, "SELECT l_spin(?)", n)
        assert unlimited.execute("SELECT l_spin(?)", (n,)).fetchall() == [(n,)]
    finally:
        limited.close()
        unlimited.close()


@pytest.mark.parametrize("timeout_ms", [0, -5, True, 1.5, 2**40])
def test_time_limit_validated(timeout_ms: Any) -> None:
    with pytest.raises(ValueError, match="timeout_ms"):
        sqlwasm.Runtime(timeout_ms=timeout_ms)


STARTERS = {
    "start function": MEMORY + """
      (func $start (loop $again (br $again)))
      (start $start)
      (func (export "ok") (param i64) (result i64) (local.get 0))
    """,
    "_initialize": MEMORY + """
      (func (export "_initialize") (loop $again (br $again)))
      (func (export "ok") (param i64) (result i64) (local.get 0))
    """,
}


@pytest.mark.parametrize("where", list(STARTERS))
def test_infinite_loop_while_starting(build: Build, session_key: Ed25519PrivateKey, loops: bytes, where: str) -> None:
    runtime = make_runtime(session_key, timeout_ms=150)
    conn = runtime.connect(":memory:", [loops])
    other = runtime.connect(":memory:", [loops])
    try:
        assert conn.execute("SELECT l_ok(1), l_ok(2)").fetchall() == [(2, 3)]
        start = time.monotonic()
        with pytest.raises(TrapError) as info:
            runtime.install(conn, build(STARTERS[where], manifest(fn("s_ok", export="ok"), name="s")))
        assert time.monotonic() - start < 1.5
        assert "module 's': failed while starting: time limit of 150 ms exceeded" in str(info.value)
        # nothing of 's' was registered; the connection and its other module work
        with pytest.raises(apsw.SQLError, match="no such function"):
            conn.execute("SELECT s_ok(1)")
        assert "no module 's'" in one_error(conn, "SELECT wasm_call('s', 'ok', 1)")
        assert conn.execute("SELECT l_ok(41)").fetchall() == [(42,)]
        assert "time limit of 150 ms exceeded" in one_error(conn, "SELECT l_forever(0)")
        assert other.execute("SELECT l_ok(9)").fetchall() == [(10,)]
        # and a fresh connection with the same runtime works too
        again = runtime.connect(":memory:", [loops])
        assert again.execute("SELECT l_ok(0)").fetchall() == [(1,)]
        again.close()
    finally:
        conn.close()
        other.close()


def test_infinite_loop_in_sqlwasm_alloc(build: Build, session_key: Ed25519PrivateKey) -> None:
    wat = MEMORY + """
      (func (export "sqlwasm_alloc") (param i32) (result i32) (loop $again (br $again)) (i32.const 64))
      (func (export "f") (param i32 i32) (result i64) (i64.const 0x0000004000000001))
    """
    conn = make_runtime(session_key, timeout_ms=100).connect(
        ":memory:", [build(wat, manifest(fn("a_f", export="f", abi="msgpack", args=["any"], returns="any"), name="a"))]
    )
    try:
        message, elapsed = timed_error(conn, "SELECT a_f(1)")
        assert message.startswith("a.a_f: time limit of 100 ms exceeded"), message
        assert elapsed < 1.1
    finally:
        conn.close()


# A guest that spends its time in host functions: logging, or asking for
# 1 MiB of random bytes, forever.
HOST_LOOP_WAT = """
  (import "sqlwasm" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 17)
  (func (export "log_forever") (param i64) (result i64)
    (loop $again (call $log (i32.const 1) (i32.const 0) (i32.const 1)) (br $again))
    (i64.const 0))
  (func (export "random_forever") (param i64) (result i64)
    (loop $again (drop (call $random_get (i32.const 0) (i32.const 1048576))) (br $again))
    (i64.const 0))
"""


@pytest.mark.parametrize("handler_seconds", [0.03, 0.1])
def test_time_in_host_functions_counts(build: Build, session_key: Ed25519PrivateKey, handler_seconds: float) -> None:
    """The limit is wall-clock time for the whole call, including the time
    the guest spends waiting in host functions (here a slow log handler)."""
    data = build(
        HOST_LOOP_WAT,
        manifest(
            fn("hl_log", export="log_forever"),
            fn("hl_random", export="random_forever"),
            name="hl",
            capabilities=["log", "random"],
        ),
    )
    conn = make_runtime(session_key, grant=["log", "random"], timeout_ms=150).connect(":memory:", [data])

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(handler_seconds)

    logger = logging.getLogger("sqlwasm.guest.hl")
    handler, level = Slow(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        message, elapsed = timed_error(conn, "SELECT hl_random(0)")
        assert "hl.hl_random: time limit of 150 ms exceeded" in message
        assert elapsed < 0.15 + 0.5, elapsed
        message, elapsed = timed_error(conn, "SELECT hl_log(0)")
        assert "hl.hl_log: time limit of 150 ms exceeded" in message
        # the limit, one host call that was under way, and some slack
        assert elapsed < 0.15 + handler_seconds + 0.5, elapsed
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        conn.close()


# -------------------------------------------------------------------- fuel


def test_out_of_fuel_traps_and_the_next_call_is_refuelled(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    runtime = make_runtime(session_key, fuel=100_000)
    assert runtime.load(loops).limits.fuel == 100_000
    conn = runtime.connect(":memory:", [loops])
    try:
        assert conn.execute("SELECT l_spin(10)").fetchall() == [(10,)]
        for sql in ("SELECT l_forever(0)", "SELECT l_spin(100000000)"):
            assert "trap (out of fuel)" in one_error(conn, sql)
            assert conn.execute("SELECT l_spin(10)").fetchall() == [(10,)]
        # the largest doubling of n that fits: spin(n) uses over half the budget
        n = 1000
        while True:
            try:
                conn.execute("SELECT l_spin(?)", (n * 2,)).fetchall()
            except apsw.SQLError as exc:
                assert "out of fuel" in str(exc)
                break
            n *= 2
        # ...yet 50 calls in one statement all run: each call gets a full tank
        rows = conn.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 50) SELECT l_spin(?) FROM k", (n,)
        ).fetchall()
        assert rows == [(n,)] * 50
    finally:
        conn.close()


@pytest.mark.parametrize("host, declared, expected", [(1_000_000, 10_000, 10_000), (10_000, 1_000_000, 10_000), (None, 10_000, 10_000)])
def test_manifest_fuel_tightens_runtime_fuel(
    build: Build, session_key: Ed25519PrivateKey, host: int | None, declared: int, expected: int
) -> None:
    runtime = make_runtime(session_key, fuel=host)
    module = runtime.load(build(LOOPS_WAT, loops_manifest(limits={"fuel": declared})))
    assert module.limits.fuel == expected
    conn = runtime.connect(":memory:", [module])
    try:
        assert conn.execute("SELECT l_spin(100)").fetchall() == [(100,)]
        # 50_000 iterations cost far more than 10_000 fuel but far less than 1_000_000
        assert "l.l_spin: trap (out of fuel)" in one_error(conn, "SELECT l_spin(50000)")
    finally:
        conn.close()


def test_fuel_while_starting(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = make_runtime(session_key, fuel=10_000, timeout_ms=None)
    conn = apsw.Connection(":memory:")
    try:
        with pytest.raises(TrapError, match="module 's': failed while starting"):
            runtime.install(conn, build(STARTERS["_initialize"], manifest(fn("s_ok", export="ok"), name="s")))
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        conn.close()


# ------------------------------------------------------------------ memory


def test_memory_grow_bomb_stops_at_the_limit(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    conn = make_runtime(session_key, memory_pages=8).connect(":memory:", [loops])
    try:
        assert conn.execute("SELECT l_bomb(1)").fetchall() == [(8,)]  # the guest sees -1 at 8 pages
        assert conn.execute("SELECT l_size(0), l_grow(1), l_grow(0), l_size(0)").fetchall() == [(8, -1, 8, 8)]
        assert conn.execute("SELECT l_touch_end(0)").fetchall() == [(7,)]
        assert conn.execute("SELECT l_grow(65536), l_grow(-1), l_size(0)").fetchall() == [(-1, -1, 8)]
    finally:
        conn.close()


@pytest.mark.parametrize("step", [3, 1000])
def test_memory_grow_bomb_with_big_steps(loops: bytes, session_key: Ed25519PrivateKey, step: int) -> None:
    conn = make_runtime(session_key, memory_pages=10).connect(":memory:", [loops])
    try:
        # 1 + 3 + 3 + 3 = 10 pages; a 1000-page step is refused at once
        assert conn.execute("SELECT l_bomb(?)", (step,)).fetchall() == [(10 if step == 3 else 1,)]
    finally:
        conn.close()


def test_default_memory_limit_stops_a_bomb(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    conn = make_runtime(session_key).connect(":memory:", [loops])
    try:
        # 4096 pages (256 MiB) of address space, never touched, so cheap
        assert conn.execute("SELECT l_grow(4095), l_grow(1), l_size(0)").fetchall() == [(1, -1, 4096)]
        assert conn.execute("SELECT l_touch_end(0)").fetchall() == [(7,)]
    finally:
        conn.close()


@pytest.mark.parametrize("host, declared, expected", [(8, 4, 4), (4, 8, 4), (None, 4, 4)])
def test_stricter_memory_limit_wins(
    build: Build, session_key: Ed25519PrivateKey, host: int | None, declared: int, expected: int
) -> None:
    runtime = make_runtime(session_key, memory_pages=host)
    module = runtime.load(build(LOOPS_WAT, loops_manifest(limits={"memory_pages": declared})))
    assert module.limits.memory_pages == expected
    conn = runtime.connect(":memory:", [module])
    try:
        assert conn.execute("SELECT l_bomb(1)").fetchall() == [(expected,)]
    finally:
        conn.close()


def test_memory_with_a_larger_declared_maximum_is_still_limited(build: Build, session_key: Ed25519PrivateKey) -> None:
    wat = LOOPS_WAT.replace(MEMORY, '(memory (export "memory") 1 65536)')
    conn = make_runtime(session_key, memory_pages=3).connect(":memory:", [build(wat, loops_manifest())])
    try:
        assert conn.execute("SELECT l_bomb(1)").fetchall() == [(3,)]
    finally:
        conn.close()


def test_initial_memory_over_the_limit_fails_at_load(build: Build, session_key: Ed25519PrivateKey) -> None:
    wat = LOOPS_WAT.replace(MEMORY, '(memory (export "memory") 9)')
    data = build(wat, loops_manifest())
    with pytest.raises(CapabilityError) as info:
        make_runtime(session_key, memory_pages=8).load(data)
    assert "module 'l' starts with 9 pages of memory, more than the 8" in str(info.value)
    with pytest.raises(CapabilityError, match="more than the 4"):
        make_runtime(session_key).load(build(wat, loops_manifest(limits={"memory_pages": 4})))
    # exactly at the limit is fine
    conn = make_runtime(session_key, memory_pages=9).connect(":memory:", [data])
    try:
        assert conn.execute("SELECT l_size(0), l_grow(1)").fetchall() == [(9, -1)]
    finally:
        conn.close()


def test_huge_initial_memory_is_refused_with_the_default_limit(build: Build, runtime: sqlwasm.Runtime) -> None:
    data = build(LOOPS_WAT.replace(MEMORY, '(memory (export "memory") 60000)'), loops_manifest())
    with pytest.raises(CapabilityError, match="starts with 60000 pages of memory, more than the 4096"):
        runtime.load(data)


@pytest.mark.parametrize("hidden", [60000, 1])
def test_second_memory_fails_at_load(build: Build, session_key: Ed25519PrivateKey, hidden: int) -> None:
    """A second, unexported memory (multi-memory) is checked at load like
    the exported one: the store allows one memory, so such a module can
    never be installed, and load should say so."""
    wat = LOOPS_WAT.replace(MEMORY, MEMORY + f" (memory $hidden {hidden})")
    runtime = make_runtime(session_key)
    data = build(wat, loops_manifest())
    conn = apsw.Connection(":memory:")
    try:
        with pytest.raises(sqlwasm.Error) as at_install:
            runtime.install(conn, data)  # never installable
        assert "module 'l'" in str(at_install.value)
        with pytest.raises(CapabilityError) as at_load:
            runtime.load(data)
        assert "module 'l'" in str(at_load.value)
    finally:
        conn.close()


TABLE_WAT = MEMORY + """
  (table $t 1 funcref)
  (func (export "grow") (param i64) (result i64)
    (i64.extend_i32_s (table.grow $t (ref.null func) (i32.wrap_i64 (local.get 0)))))
  (func (export "size") (param i64) (result i64) (i64.extend_i32_u (table.size $t)))
"""


def test_table_grow_bomb_is_limited(build: Build, runtime: sqlwasm.Runtime) -> None:
    """Table entries live in host memory outside memory_pages: 20 million
    of them are 160 MB of host RAM per call (100 million: 800 MB). Growth
    must be refused (-1) long before that."""
    data = build(TABLE_WAT, manifest(fn("tb_grow", export="grow"), fn("tb_size", export="size"), name="tb"))
    conn = runtime.connect(":memory:", [data])
    try:
        assert conn.execute("SELECT tb_grow(10), tb_size(0)").fetchall() == [(1, 11)]  # small growth is fine
        assert conn.execute("SELECT tb_grow(20000000)").fetchall() == [(-1,)]
        assert conn.execute("SELECT tb_size(0)").fetchall() == [(11,)]
    finally:
        conn.close()


@pytest.mark.parametrize("pages", [0, -1, 65537, True])
def test_memory_pages_validated(pages: Any) -> None:
    with pytest.raises(ValueError, match="memory_pages"):
        sqlwasm.Runtime(memory_pages=pages)


# -------------------------------------------------------- max_result_bytes



def wat_bytes(data: bytes) -> str:
    return '"' + "".join(f"\\{b:02x}" for b in data) + '"'


RESULT_WAT = MEMORY + f"""
  (data (i32.const 1024) {wat_bytes(msgpack.packb("x" * 16))})
  (data (i32.const 2048) {wat_bytes(msgpack.packb("y" * 40))})
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 64))
  (func (export "small") (param i32 i32) (result i64) (i64.const 0x0000040000000011))
  (func (export "big") (param i32 i32) (result i64) (i64.const 0x000008000000002a))
"""


@pytest.mark.parametrize("host, declared, expected", [(20, 64, 20), (64, 20, 20), (16 * 1024 * 1024, 20, 20), (64, None, 64)])
def test_stricter_result_limit_wins(
    build: Build, session_key: Ed25519PrivateKey, host: int, declared: int | None, expected: int
) -> None:
    limits = {} if declared is None else {"max_result_bytes": declared}
    m = manifest(
        fn("m_small", export="small", abi="msgpack", args=[], returns="text"),
        fn("m_big", export="big", abi="msgpack", args=[], returns="text"),
        name="m",
        limits=limits,
    )
    runtime = make_runtime(session_key, max_result_bytes=host)
    module = runtime.load(build(RESULT_WAT, m))
    assert module.limits.max_result_bytes == expected
    conn = runtime.connect(":memory:", [module])
    try:
        assert conn.execute("SELECT m_small()").fetchall() == [("x" * 16,)]  # 17 bytes
        if expected < 42:
            assert f"m.m_big: result is 42 bytes, over the {expected}-byte result limit" in one_error(conn, "SELECT m_big()")
        else:
            assert conn.execute("SELECT m_big()").fetchall() == [("y" * 40,)]
    finally:
        conn.close()


# ------------------------------------------------------------- recursion

RECURSION_SCRIPT = """
import os, sys, threading
import apsw, sqlwasm

def run():
    runtime = sqlwasm.Runtime(trusted_keys=[{pub!r}])
    conn = runtime.connect(":memory:", [{module!r}])
    for attempt in range(2):
        try:
            conn.execute("SELECT l_down(0)").fetchall()
            print("no error")
        except apsw.SQLError as exc:
            print("error:", exc)
    print("after:", conn.execute("SELECT l_ok(41)").fetchall())
    conn.close()

stack = {stack}
if stack:
    threading.stack_size(stack)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
else:
    run()
sys.stdout.flush()
# Skip interpreter teardown: this test is about the recursion, and a crash
# at exit has its own test (test_sandbox.py::test_process_exits_cleanly).
os._exit(0)
"""


@pytest.mark.parametrize("stack", [0, 8 * 1024 * 1024, 1024 * 1024, 512 * 1024, 256 * 1024], ids=["main", "8M", "1M", "512K", "256K"])
def test_deep_recursion_traps_cleanly(build: Build, keypair: KeyPair, tmp_path: Path, stack: int) -> None:
    """Run in a child process: if the guest's recursion took the process
    down, only this test fails."""
    module = tmp_path / "l.wasm"
    module.write_bytes(wasm_module(LOOPS_WAT, loops_manifest(), key=keypair.private))
    script = RECURSION_SCRIPT.format(pub=str(keypair.pub_path), module=str(module), stack=stack)
    # cwd: outside the checkout, whose sqlwasm/ has no compiled native part
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    for line in lines[:2]:
        assert line.startswith("error: l.l_down: trap (stack overflow)"), line
    assert lines[2] == "after: [(42,)]"


# -------------------------------------------------------------- interrupt


def test_interrupt_stops_a_guest_without_time_limit(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    runtime = make_runtime(session_key, timeout_ms=None)
    conn = runtime.connect(":memory:", [loops])
    bystander = runtime.connect(":memory:", [loops])
    try:
        assert bystander.execute("SELECT l_ok(0)").fetchall() == [(1,)]
        timer = threading.Timer(0.2, conn.interrupt)
        timer.start()
        try:
            message, elapsed = timed_error(conn, "SELECT l_forever(0)")
        finally:
            timer.cancel()
        assert message.startswith("l.l_forever: interrupted"), message
        assert 0.15 < elapsed < 2.0
        # afterwards: the guest, the statement machinery and the other connection are fine
        assert conn.execute("SELECT l_ok(1), l_spin(1000)").fetchall() == [(2, 1000)]
        assert bystander.execute("SELECT l_ok(1)").fetchall() == [(2,)]
        # and it can be interrupted again
        timer = threading.Timer(0.1, conn.interrupt)
        timer.start()
        try:
            message, _ = timed_error(conn, "SELECT wasm_call('l', 'forever', 0)")
        finally:
            timer.cancel()
        assert "l.l_forever: interrupted" in message
    finally:
        conn.close()
        bystander.close()


def test_interrupt_of_one_connection_leaves_another_running(loops: bytes, session_key: Ed25519PrivateKey) -> None:
    runtime = make_runtime(session_key, timeout_ms=None)
    victim = runtime.connect(":memory:", [loops])
    worker = runtime.connect(":memory:", [loops])
    try:
        n = int(spin_rate(worker) * 0.4)
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(worker.execute("SELECT l_spin(?)", (n,)).fetchall()))
        timer = threading.Timer(0.1, victim.interrupt)
        thread.start()
        timer.start()
        message, _ = timed_error(victim, "SELECT l_forever(0)")
        thread.join()
        assert "interrupted" in message
        assert result == [[(n,)]]
    finally:
        victim.close()
        worker.close()
