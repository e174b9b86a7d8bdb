"""sqlwasm/_capabilities.py: what a guest may import (log, clock, random),
how the host grants it, and the SQLite flags that follow from it.

Hostile guests here import things they did not declare, declare things the
host did not grant, pass pointers outside their memory and flood the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import apsw
import pytest
from conftest import MEMORY, Build, fn, manifest, one_error
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm import CapabilityError

PAGE = 65536
WASI = "wasi_snapshot_preview1"
ERRNO_FAULT, ERRNO_INVAL = 21, 28
ALL = ["log", "clock", "random"]
ROWS_200 = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)"

# The imports each capability provides, with their correct types.
LOG_IMPORT = '(import "sqlwasm" "log" (func $log (param i32 i32 i32)))'
CLOCK_IMPORTS = f"""
  (import "{WASI}" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "{WASI}" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
"""
RANDOM_IMPORT = f'(import "{WASI}" "random_get" (func $random_get (param i32 i32) (result i32)))'

# A function every test module exports, so manifests have something to name.
PLAIN = '(func (export "twice") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 2)))'


def granting(session_key: Ed25519PrivateKey, grant: list[str], **options: Any) -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=grant, **options)


def plain_manifest(capabilities: list[str], name: str = "t") -> dict[str, Any]:
    return manifest(fn("t_twice", export="twice", deterministic=True), name=name, capabilities=capabilities)


def i32(n: str) -> str:
    return f"(i32.wrap_i64 (local.get {n}))"


# ------------------------------------------------------------------ grants


def test_default_grant_is_nothing(build: Build, runtime: sqlwasm.Runtime) -> None:
    assert runtime.grant == frozenset()
    data = build(LOG_IMPORT + MEMORY + PLAIN, plain_manifest(["log"]))
    with pytest.raises(CapabilityError) as info:
        runtime.load(data)
    assert "module 't'" in str(info.value) and "'log'" in str(info.value) and "not granted" in str(info.value)


def test_module_without_capabilities_needs_no_grant(build: Build, runtime: sqlwasm.Runtime) -> None:
    module = runtime.load(build(MEMORY + PLAIN, plain_manifest([])))
    assert module.capabilities == ()


def test_grant_through_connect(build: Build, session_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture) -> None:
    data = build(LOG_WAT, LOG_MANIFEST)
    with pytest.raises(CapabilityError, match="'log'"):
        sqlwasm.connect(":memory:", [data], trusted_keys=[session_key.public_key()])
    conn = sqlwasm.connect(":memory:", [data], trusted_keys=[session_key.public_key()], grant=["log"])
    try:
        caplog.set_level(logging.DEBUG, logger="sqlwasm.guest.lg")
        assert conn.execute("SELECT lg_say(1, 0, 5)").fetchall() == [(0,)]
        assert guest_records(caplog) == [(logging.INFO, "hello")]
    finally:
        conn.close()


def test_grant_accepts_a_single_name(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = granting(session_key, "clock")  # type: ignore[arg-type]
    assert runtime.grant == frozenset({"clock"})
    assert runtime.load(build(CLOCK_IMPORTS + MEMORY + PLAIN, plain_manifest(["clock"]))).capabilities == ("clock",)


@pytest.mark.parametrize("grant", [["fs"], ["log", "net"], ["LOG"]])
def test_unknown_grant_is_refused(grant: list[str]) -> None:
    with pytest.raises(CapabilityError, match="unknown capabilities"):
        sqlwasm.Runtime(grant=grant)


# ---------------------------------------------------- import checks at load

IMPORTS = {
    "sqlwasm.log": ("log", LOG_IMPORT),
    f"{WASI}.clock_time_get": ("clock", f'(import "{WASI}" "clock_time_get" (func (param i32 i64 i32) (result i32)))'),
    f"{WASI}.clock_res_get": ("clock", f'(import "{WASI}" "clock_res_get" (func (param i32 i32) (result i32)))'),
    f"{WASI}.random_get": ("random", RANDOM_IMPORT),
}


@pytest.mark.parametrize("name", list(IMPORTS))
@pytest.mark.parametrize("declared", ["none", "the others"])
def test_import_not_covered_by_a_declared_capability(
    build: Build, session_key: Ed25519PrivateKey, name: str, declared: str
) -> None:
    """Granting everything does not help: the manifest must declare it."""
    capability, imp = IMPORTS[name]
    capabilities = [] if declared == "none" else [c for c in ALL if c != capability]
    data = build(imp + MEMORY + PLAIN, plain_manifest(capabilities))
    with pytest.raises(CapabilityError) as info:
        granting(session_key, ALL).load(data)
    message = str(info.value)
    assert "module 't'" in message and name in message, message
    assert f"capability '{capability}'" in message and "does not declare" in message, message


@pytest.mark.parametrize("name", list(IMPORTS))
def test_declared_capability_not_granted(build: Build, session_key: Ed25519PrivateKey, name: str) -> None:
    capability, imp = IMPORTS[name]
    data = build(imp + MEMORY + PLAIN, plain_manifest([capability]))
    others = [c for c in ALL if c != capability]
    with pytest.raises(CapabilityError) as info:
        granting(session_key, others).load(data)
    message = str(info.value)
    assert "module 't'" in message and f"capability '{capability}'" in message and "not granted" in message, message
    # Granting it is all that was missing.
    assert granting(session_key, [capability]).load(data).capabilities == (capability,)


def test_declared_capability_not_granted_names_the_import(build: Build, session_key: Ed25519PrivateKey) -> None:
    """The issue: each refusal names the import and the capability."""
    silent = []
    for name, (capability, imp) in IMPORTS.items():
        data = build(imp + MEMORY + PLAIN, plain_manifest([capability]))
        with pytest.raises(CapabilityError) as info:
            granting(session_key, []).load(data)
        if name not in str(info.value) or f"'{capability}'" not in str(info.value):
            silent.append(str(info.value))
    assert silent == []


def test_declared_capability_without_imports_still_needs_the_grant(build: Build, session_key: Ed25519PrivateKey) -> None:
    data = build(MEMORY + PLAIN, plain_manifest(["random"]))
    with pytest.raises(CapabilityError, match="capability 'random', which was not granted"):
        granting(session_key, ["log", "clock"]).load(data)


WRONG_TYPES = [
    ("sqlwasm", "log", "(func (param i32 i32))", "log"),
    ("sqlwasm", "log", "(func (param i32 i32 i32) (result i32))", "log"),
    ("sqlwasm", "log", "(func (param i64 i32 i32))", "log"),
    ("sqlwasm", "log", "(global i32)", "log"),
    ("sqlwasm", "log", "(memory 1)", "log"),
    (WASI, "clock_time_get", "(func (param i32 i32 i32) (result i32))", "clock"),
    (WASI, "clock_time_get", "(func (param i32 i64 i32))", "clock"),
    (WASI, "clock_res_get", "(func (param i32 i32) (result i64))", "clock"),
    (WASI, "random_get", "(func (param i64 i32) (result i32))", "random"),
    (WASI, "random_get", "(table 1 funcref)", "random"),
]


def wrong_type_module(build: Build, module: str, name: str, ty: str, capability: str) -> bytes:
    # An imported memory becomes memory 0; the module exports its own as well.
    own_memory = '(memory (export "memory") 1)'
    return build(f'(import "{module}" "{name}" {ty})' + own_memory + PLAIN, plain_manifest([capability]))


@pytest.mark.parametrize("module, name, ty, capability", WRONG_TYPES)
def test_import_with_the_wrong_type_is_refused(
    build: Build, session_key: Ed25519PrivateKey, module: str, name: str, ty: str, capability: str
) -> None:
    data = wrong_type_module(build, module, name, ty, capability)
    with pytest.raises(CapabilityError) as info:
        granting(session_key, ALL).load(data)
    message = str(info.value)
    assert "module 't'" in message and f"{module}.{name}" in message and "wrong type" in message, message


def test_import_with_the_wrong_type_names_the_capability(build: Build, session_key: Ed25519PrivateKey) -> None:
    """The issue: each refusal names the import and the capability."""
    silent = []
    for module, name, ty, capability in WRONG_TYPES:
        with pytest.raises(CapabilityError) as info:
            granting(session_key, ALL).load(wrong_type_module(build, module, name, ty, capability))
        if f"capability '{capability}'" not in str(info.value):
            silent.append(str(info.value))
    assert silent == []


# WASI functions that give files, environment, network, processes or
# scheduling: nothing provides them, whatever is declared and granted.
# (fd_write, fd_seek and fd_close are the `stdio` capability's: writes to fds
# 1 and 2 into a per-call buffer, nothing else; tests/test_debug_output.py.)
NEVER_LINKED = [
    ("fd_read", "(param i32 i32 i32 i32) (result i32)"),
    ("fd_prestat_get", "(param i32 i32) (result i32)"),
    ("fd_prestat_dir_name", "(param i32 i32 i32) (result i32)"),
    ("path_open", "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)"),
    ("path_unlink_file", "(param i32 i32 i32) (result i32)"),
    ("environ_get", "(param i32 i32) (result i32)"),
    ("environ_sizes_get", "(param i32 i32) (result i32)"),
    ("args_get", "(param i32 i32) (result i32)"),
    ("args_sizes_get", "(param i32 i32) (result i32)"),
    ("sock_accept", "(param i32 i32 i32) (result i32)"),
    ("sock_recv", "(param i32 i32 i32 i32 i32 i32) (result i32)"),
    ("sock_send", "(param i32 i32 i32 i32 i32) (result i32)"),
    ("sock_shutdown", "(param i32 i32) (result i32)"),
    ("proc_exit", "(param i32)"),
    ("proc_raise", "(param i32) (result i32)"),
    ("poll_oneoff", "(param i32 i32 i32 i32) (result i32)"),
    ("sched_yield", "(result i32)"),
]


@pytest.mark.parametrize("name, signature", NEVER_LINKED, ids=[n for n, _ in NEVER_LINKED])
def test_other_wasi_functions_are_never_linked(build: Build, session_key: Ed25519PrivateKey, name: str, signature: str) -> None:
    wat = f'(import "{WASI}" "{name}" (func {signature}))' + LOG_IMPORT + CLOCK_IMPORTS + RANDOM_IMPORT + MEMORY + PLAIN
    data = build(wat, plain_manifest(ALL))
    with pytest.raises(CapabilityError) as info:
        granting(session_key, ALL).load(data)
    assert f"{WASI}.{name}" in str(info.value) and "no capability provides" in str(info.value)


@pytest.mark.parametrize("module", ["sqlwasm", "env", "wasi_unstable", "wasi_snapshot_preview2"])
def test_capability_names_in_other_modules_are_not_linked(build: Build, session_key: Ed25519PrivateKey, module: str) -> None:
    """Only the exact (module, name) pairs link: random_get under another
    import module name is just an unknown import."""
    wat = f'(import "{module}" "random_get" (func (param i32 i32) (result i32)))' + MEMORY + PLAIN
    with pytest.raises(CapabilityError, match=f"{module}.random_get"):
        granting(session_key, ALL).load(build(wat, plain_manifest(ALL)))


def test_all_capabilities_together_link_and_work(build: Build, session_key: Ed25519PrivateKey) -> None:
    wat = LOG_IMPORT + CLOCK_IMPORTS + RANDOM_IMPORT + MEMORY + PLAIN
    conn = granting(session_key, ALL).connect(":memory:", [build(wat, plain_manifest(ALL))])
    try:
        assert conn.execute("SELECT t_twice(21)").fetchall() == [(42,)]
    finally:
        conn.close()


# ---------------------------------------------------------------------- log

LOG_MESSAGE = "a" * 5000
LOG_WAT = LOG_IMPORT + MEMORY + f"""
  (data (i32.const 0) "hello")
  (data (i32.const 16) "caf\\c3\\a9 \\ff!")
  (data (i32.const 1024) "{LOG_MESSAGE}")
  (func (export "say") (param i64 i64 i64) (result i64)
    (call $log {i32('0')} {i32('1')} {i32('2')})
    (i64.const 0))
  ;; n messages "hello" at level info in one call
  (func (export "burst") (param $n i64) (result i64)
    (local $i i64)
    (block $done
      (loop $again
        (br_if $done (i64.ge_s (local.get $i) (local.get $n)))
        (call $log (i32.const 1) (i32.const 0) (i32.const 5))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $again)))
    (local.get $i))
"""
LOG_MANIFEST = manifest(
    fn("lg_say", export="say", args=["integer", "integer", "integer"]),
    fn("lg_burst", export="burst"),
    name="lg",
    capabilities=["log"],
)


@pytest.fixture
def log_runtime(session_key: Ed25519PrivateKey) -> sqlwasm.Runtime:
    return granting(session_key, ["log"])


@pytest.fixture
def logger(build: Build, log_runtime: sqlwasm.Runtime, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG, logger="sqlwasm.guest.lg")
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, LOG_MANIFEST)])
    yield conn
    conn.close()


def guest_records(caplog: pytest.LogCaptureFixture, name: str = "lg") -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == f"sqlwasm.guest.{name}"]


@pytest.mark.parametrize(
    "level, expected",
    [(0, logging.DEBUG), (1, logging.INFO), (2, logging.WARNING), (3, logging.ERROR), (4, logging.ERROR), (1000, logging.ERROR)],
)
def test_log_levels(logger: apsw.Connection, caplog: pytest.LogCaptureFixture, level: int, expected: int) -> None:
    assert logger.execute("SELECT lg_say(?, 0, 5)", (level,)).fetchall() == [(0,)]
    assert guest_records(caplog) == [(expected, "hello")]


def test_log_text_is_decoded_leniently(logger: apsw.Connection, caplog: pytest.LogCaptureFixture) -> None:
    logger.execute("SELECT lg_say(2, 16, 8), lg_say(2, 16, 0)").fetchall()
    assert guest_records(caplog) == [(logging.WARNING, "caf\u00e9 \ufffd!"), (logging.WARNING, "")]


def test_log_goes_to_the_module_logger(build: Build, log_runtime: sqlwasm.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlwasm.guest")
    other = build(LOG_WAT, {**LOG_MANIFEST, "name": "lh", "functions": [fn("lh_say", export="say", args=["integer"] * 3)]})
    conn = log_runtime.connect(":memory:", [build(LOG_WAT, LOG_MANIFEST), other])
    try:
        conn.execute("SELECT lg_say(1, 0, 5), lh_say(3, 0, 4)").fetchall()
    finally:
        conn.close()
    assert guest_records(caplog, "lg") == [(logging.INFO, "hello")]
    assert guest_records(caplog, "lh") == [(logging.ERROR, "hell")]


def test_log_message_capped_at_4096_bytes(logger: apsw.Connection, caplog: pytest.LogCaptureFixture) -> None:
    logger.execute("SELECT lg_say(1, 1024, 5000), lg_say(1, 1024, 4096), lg_say(1, 1024, 2147483647)").fetchall()
    assert guest_records(caplog) == [(logging.INFO, "a" * 4096)] * 3


@pytest.mark.parametrize(
    "ptr, length",
    [
        (PAGE, 1),  # starts at the end
        (PAGE - 1, 2),  # one byte past the end
        (PAGE + 4096, 0),  # empty, but outside
        (-1, 1),  # 0xffffffff
        (-2147483648, 16),
        (0, -1),  # negative length
        (0, -2147483648),
        (PAGE - 100, 100_000),  # capped to 4096, still past the end
    ],
)
def test_log_message_outside_memory(logger: apsw.Connection, caplog: pytest.LogCaptureFixture, ptr: int, length: int) -> None:
    message = one_error(logger, "SELECT lg_say(1, ?, ?)", ptr, length)
    assert message.startswith("lg.lg_say: host function sqlwasm.log failed"), message
    assert "outside guest memory" in message
    assert guest_records(caplog) == []
    # the instance and its log keep working
    assert logger.execute("SELECT lg_say(1, 0, 5)").fetchall() == [(0,)]
    assert guest_records(caplog) == [(logging.INFO, "hello")]


def test_log_at_the_very_end_of_memory(logger: apsw.Connection, caplog: pytest.LogCaptureFixture) -> None:
    logger.execute("SELECT lg_say(1, ?, 4), lg_say(1, ?, 0)", (PAGE - 4, PAGE)).fetchall()
    assert guest_records(caplog) == [(logging.INFO, "\x00" * 4), (logging.INFO, "")]


def test_log_is_rate_limited_per_instance(
    build: Build, log_runtime: sqlwasm.Runtime, logger: apsw.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    assert logger.execute("SELECT lg_burst(250)").fetchall() == [(250,)]  # never an error
    elapsed = time.monotonic() - started
    logged = len(guest_records(caplog))
    # A burst of 100, plus what refills (100 a second) while the burst runs.
    assert 100 <= logged <= 100 + 100 * elapsed + 2, (logged, elapsed)
    # Another instance has its own budget.
    caplog.clear()
    other = log_runtime.connect(":memory:", [build(LOG_WAT, LOG_MANIFEST)])
    try:
        other.execute("SELECT lg_burst(50)").fetchall()
        assert guest_records(caplog) == [(logging.INFO, "hello")] * 50
    finally:
        other.close()
    # Once the budget refills, the next message says how many were dropped.
    caplog.clear()
    time.sleep(0.1)
    logger.execute("SELECT lg_say(0, 0, 5)").fetchall()
    records = guest_records(caplog)
    assert records == [(logging.WARNING, f"({250 - logged} messages suppressed by the rate limit)"), (logging.DEBUG, "hello")]


def test_log_rate_limit_refills_at_100_per_second(logger: apsw.Connection, caplog: pytest.LogCaptureFixture) -> None:
    logger.execute("SELECT lg_burst(200)").fetchall()
    caplog.clear()
    time.sleep(0.3)
    logger.execute("SELECT lg_burst(200)").fetchall()
    hellos = [r for r in guest_records(caplog) if r[1] == "hello"]
    assert 25 <= len(hellos) <= 60, len(hellos)  # about 30 in 0.3 s (100/s), nowhere near 100
    assert any("messages suppressed" in m for _, m in guest_records(caplog))


# --------------------------------------------- a failure belongs to its call

BAD_START_WAT = MEMORY + '(func (export "_initialize") unreachable)' + PLAIN
INSTALLS_BESIDE_FAILURES = 500


def test_host_function_failure_is_reported_only_to_its_own_call(build: Build, log_runtime: sqlwasm.Runtime) -> None:
    """Thread A's guest keeps making sqlwasm.log fail (MarshallingError)
    while thread B keeps installing a module whose start function traps. B
    must only ever see its own trap: wasmtime-py keeps one process-wide
    'last exception' of host functions and raises it at the next trap any
    thread sees from Python, so B used to get A's MarshallingError."""
    failing = log_runtime.connect(":memory:", [build(LOG_WAT, LOG_MANIFEST)])
    bad_start = build(BAD_START_WAT, plain_manifest([], name="bs"))
    good = build(LOG_WAT, {**LOG_MANIFEST, "name": "ok", "functions": [fn("ok_say", export="say", args=["integer"] * 3)]})
    stop = threading.Event()
    failures_in_a: list[str] = []

    def keep_failing() -> None:
        while not stop.is_set():
            try:
                failing.execute("SELECT lg_say(1, ?, 1)", (PAGE,)).fetchall()
                failures_in_a.append("no error")
            except apsw.SQLError as exc:
                failures_in_a.append(str(exc))

    seen_by_b: Counter[str] = Counter()
    thread_a = threading.Thread(target=keep_failing)
    thread_a.start()
    try:
        while len(failures_in_a) < 10:  # A is failing before B starts
            time.sleep(0.001)
        for k in range(INSTALLS_BESIDE_FAILURES):
            conn = apsw.Connection(":memory:")
            try:
                log_runtime.install(conn, bad_start)
                seen_by_b["installed"] += 1
            except BaseException as exc:  # caught: A's error could even be a KeyboardInterrupt
                seen_by_b[f"{type(exc).__name__}: {exc}"] += 1
            if k % 100 == 0:  # installs that succeed see no one else's error either
                log_runtime.install(conn, good)
                assert conn.execute("SELECT ok_say(1, 0, 5)").fetchall() == [(0,)]
            conn.close()
    finally:
        stop.set()
        thread_a.join()
        failing.close()
    own_trap = "TrapError: module 'bs': failed while starting: wasm trap: wasm `unreachable` instruction executed"
    assert seen_by_b == {own_trap: INSTALLS_BESIDE_FAILURES}
    assert len(failures_in_a) > 10
    assert set(failures_in_a) == {
        f"lg.lg_say: host function sqlwasm.log failed: MarshallingError: log message (ptr {PAGE}, len 1) is outside guest memory"
    }


# -------------------------------------------------------------------- clock

CLOCK_WAT = CLOCK_IMPORTS + MEMORY + f"""
  (func (export "time") (param i64 i64) (result i64)
    (i64.extend_i32_u (call $clock_time_get {i32('0')} (i64.const 1) {i32('1')})))
  (func (export "res") (param i64 i64) (result i64)
    (i64.extend_i32_u (call $clock_res_get {i32('0')} {i32('1')})))
  (func (export "peek") (param i64) (result i64) (i64.load {i32('0')}))
  ;; clock_time_get into 8, then the value (or -errno)
  (func (export "now") (param i64) (result i64)
    (local $errno i32)
    (local.set $errno (call $clock_time_get {i32('0')} (i64.const 0) (i32.const 8)))
    (if (result i64) (local.get $errno)
      (then (i64.sub (i64.const 0) (i64.extend_i32_u (local.get $errno))))
      (else (i64.load (i32.const 8)))))
"""
CLOCK_MANIFEST = manifest(
    fn("ck_time", export="time", args=["integer", "integer"]),
    fn("ck_res", export="res", args=["integer", "integer"]),
    fn("ck_peek", export="peek"),
    fn("ck_now", export="now"),
    name="ck",
    capabilities=["clock"],
)


@pytest.fixture
def clock(build: Build, session_key: Ed25519PrivateKey) -> Any:
    conn = granting(session_key, ["clock"]).connect(":memory:", [build(CLOCK_WAT, CLOCK_MANIFEST)])
    yield conn
    conn.close()


def test_clock_realtime(clock: apsw.Connection) -> None:
    before = time.time_ns()
    (now,) = clock.execute("SELECT ck_now(0)").fetchone()
    after = time.time_ns()
    assert before - 10_000_000 <= now <= after + 10_000_000
    assert clock.execute("SELECT ck_time(0, 64), ck_peek(64) > 0").fetchall() == [(0, 1)]


def test_clock_monotonic(clock: apsw.Connection) -> None:
    (first,) = clock.execute("SELECT ck_now(1)").fetchone()
    time.sleep(0.05)
    (second,) = clock.execute("SELECT ck_now(1)").fetchone()
    assert first > 0 and 40_000_000 <= second - first < 2_000_000_000
    values = [v for (v,) in clock.execute(f"{ROWS_200} SELECT ck_now(1) FROM n")]
    assert values == sorted(values)


@pytest.mark.parametrize("clock_id", [2, 3, 4, 100, -1, -2147483648])
def test_clock_other_ids_are_einval(clock: apsw.Connection, clock_id: int) -> None:
    assert clock.execute("SELECT ck_time(?, 64), ck_res(?, 64), ck_peek(64)", (clock_id, clock_id)).fetchall() == [
        (ERRNO_INVAL, ERRNO_INVAL, 0)  # nothing written
    ]


@pytest.mark.parametrize("out", [PAGE - 7, PAGE - 1, PAGE, PAGE + 8, -1, -8, -2147483648])
@pytest.mark.parametrize("clock_id", [0, 1])
def test_clock_out_of_bounds_is_efault(clock: apsw.Connection, clock_id: int, out: int) -> None:
    assert clock.execute("SELECT ck_time(?, ?), ck_res(?, ?)", (clock_id, out, clock_id, out)).fetchall() == [
        (ERRNO_FAULT, ERRNO_FAULT)
    ]
    assert clock.execute("SELECT 40 + 2").fetchall() == [(42,)]


def test_clock_at_the_very_end_of_memory(clock: apsw.Connection) -> None:
    assert clock.execute("SELECT ck_time(0, ?), ck_peek(?) > 0", (PAGE - 8, PAGE - 8)).fetchall() == [(0, 1)]


@pytest.mark.parametrize("clock_id", [0, 1])
def test_clock_resolution(clock: apsw.Connection, clock_id: int) -> None:
    (errno, resolution) = clock.execute("SELECT ck_res(?, 64), ck_peek(64)", (clock_id,)).fetchone()
    assert errno == 0 and 0 < resolution <= 1_000_000_000


# ------------------------------------------------------------------- random

RANDOM_WAT = RANDOM_IMPORT + '(memory (export "memory") 17)' + f"""
  (func (export "fill") (param i64 i64) (result i64)
    (i64.extend_i32_u (call $random_get {i32('0')} {i32('1')})))
  (func (export "peek") (param i64) (result i64) (i64.load {i32('0')}))
"""
RANDOM_MANIFEST = manifest(
    fn("rn_fill", export="fill", args=["integer", "integer"]),
    fn("rn_peek", export="peek"),
    name="rn",
    capabilities=["random"],
)
RANDOM_MEMORY = 17 * PAGE


@pytest.fixture
def rand(build: Build, session_key: Ed25519PrivateKey) -> Any:
    conn = granting(session_key, ["random"]).connect(":memory:", [build(RANDOM_WAT, RANDOM_MANIFEST)])
    yield conn
    conn.close()


def peek_words(conn: apsw.Connection, at: int, words: int) -> list[int]:
    return [conn.execute("SELECT rn_peek(?)", (at + 8 * k,)).fetchone()[0] for k in range(words)]


def test_random_fills_bytes(rand: apsw.Connection) -> None:
    assert rand.execute("SELECT rn_fill(1024, 32)").fetchall() == [(0,)]
    first = peek_words(rand, 1024, 4)
    assert rand.execute("SELECT rn_fill(1024, 32)").fetchall() == [(0,)]
    second = peek_words(rand, 1024, 4)
    assert first != second
    assert all(first) and all(second)  # a zero word is a 2**-64 event
    assert peek_words(rand, 1024 + 32, 1) == [0]  # nothing past len


def test_random_empty_and_full_sizes(rand: apsw.Connection) -> None:
    assert rand.execute("SELECT rn_fill(100, 0), rn_peek(100), rn_fill(?, 0)", (RANDOM_MEMORY,)).fetchall() == [(0, 0, 0)]
    # exactly 1 MiB is allowed
    assert rand.execute("SELECT rn_fill(0, 1048576)").fetchall() == [(0,)]
    assert all(peek_words(rand, 1048576 - 16, 2))


@pytest.mark.parametrize("length", [1048577, 2**31 - 1, -1, 4 * 1048576])
def test_random_more_than_one_mib_is_einval(rand: apsw.Connection, length: int) -> None:
    assert rand.execute("SELECT rn_fill(0, ?), rn_peek(0)", (length,)).fetchall() == [(ERRNO_INVAL, 0)]


@pytest.mark.parametrize(
    "buf, length",
    [(RANDOM_MEMORY - 8, 16), (RANDOM_MEMORY, 1), (RANDOM_MEMORY - 1048575, 1048576), (-1, 1), (-2147483648, 8)],
)
def test_random_out_of_bounds_is_efault(rand: apsw.Connection, buf: int, length: int) -> None:
    assert rand.execute("SELECT rn_fill(?, ?)", (buf, length)).fetchall() == [(ERRNO_FAULT,)]
    assert rand.execute("SELECT rn_peek(?)", (RANDOM_MEMORY - 8,)).fetchall() == [(0,)]  # nothing written


# ------------------------------------------------------------ SQLite flags

# f counts its calls; calls() reports the count.
FLAGS_WAT = MEMORY + """
  (global $n (mut i64) (i64.const 0))
  (func (export "f") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (i64.mul (local.get 0) (i64.const 2)))
  (func (export "calls") (param i64) (result i64) (global.get $n))
"""


def flags_conn(build: Build, session_key: Ed25519PrivateKey, capabilities: list[str], deterministic: bool) -> apsw.Connection:
    data = build(
        FLAGS_WAT,
        manifest(fn("fl_f", export="f", deterministic=deterministic), fn("fl_calls", export="calls"), name="fl", capabilities=capabilities),
    )
    conn = granting(session_key, ALL).connect(":memory:", [data])
    # Untrusted schema: only SQLITE_INNOCUOUS functions may run from views/triggers.
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3); CREATE TABLE log(y)")
    return conn


def schema_uses(conn: apsw.Connection) -> dict[str, Any]:
    """Tries the function in each schema position; the outcome of each."""
    outcomes: dict[str, Any] = {}
    attempts = {
        "view": ["CREATE VIEW v AS SELECT fl_f(x) AS y FROM t", "SELECT y FROM v ORDER BY y"],
        "trigger": [
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (fl_f(new.x)); END",
            "INSERT INTO t VALUES (10)",
            "SELECT y FROM log",
        ],
        "generated column": ["CREATE TABLE g(x, y AS (fl_f(x)))", "INSERT INTO g(x) VALUES (4)", "SELECT y FROM g"],
        "index": ["CREATE INDEX i ON t(fl_f(x))", "SELECT x FROM t WHERE fl_f(x) = 4"],
        "check constraint": ["CREATE TABLE c(x CHECK (fl_f(x) < 100))", "INSERT INTO c VALUES (5)", "SELECT x FROM c"],
    }
    for where, statements in attempts.items():
        try:
            for sql in statements:
                rows = conn.execute(sql).fetchall()
            outcomes[where] = rows
        except apsw.SQLError as exc:
            outcomes[where] = str(exc)
        assert conn.execute("SELECT 40 + 2").fetchall() == [(42,)]
    return outcomes


def calls_for_a_constant(conn: apsw.Connection) -> int:
    """How often SQLite calls fl_f(5) over 3 rows: once if it treats the
    function as deterministic (a constant, factored out), else 3 times."""
    (before,) = conn.execute("SELECT fl_calls(0)").fetchone()
    assert conn.execute("SELECT fl_f(5) FROM t").fetchall() == [(10,)] * 3
    (after,) = conn.execute("SELECT fl_calls(0)").fetchone()
    return int(after - before)


def test_pure_deterministic_function_is_usable_anywhere(build: Build, session_key: Ed25519PrivateKey) -> None:
    conn = flags_conn(build, session_key, [], True)
    try:
        assert calls_for_a_constant(conn) == 1
        assert schema_uses(conn) == {
            "view": [(2,), (4,), (6,)],
            "trigger": [(20,)],
            "generated column": [(8,)],
            "index": [(2,)],
            "check constraint": [(5,)],
        }
    finally:
        conn.close()


def test_pure_non_deterministic_function(build: Build, session_key: Ed25519PrivateKey) -> None:
    conn = flags_conn(build, session_key, [], False)
    try:
        assert calls_for_a_constant(conn) == 3
        outcomes = schema_uses(conn)
        # innocuous: views and triggers work even with an untrusted schema
        assert outcomes["view"] == [(2,), (4,), (6,)]
        assert outcomes["trigger"] == [(20,)]
        assert outcomes["check constraint"] == [(5,)]
        assert "non-deterministic functions prohibited" in outcomes["index"]
        assert "non-deterministic functions prohibited" in outcomes["generated column"]
    finally:
        conn.close()


@pytest.mark.parametrize("capabilities", [["log"], ["clock"], ["random"], ALL])
@pytest.mark.parametrize("deterministic", [True, False])
def test_function_with_capabilities_is_direct_only(
    build: Build, session_key: Ed25519PrivateKey, capabilities: list[str], deterministic: bool
) -> None:
    conn = flags_conn(build, session_key, capabilities, deterministic)
    try:
        assert conn.execute("SELECT fl_f(21)").fetchall() == [(42,)]  # top-level SQL is fine
        outcomes = schema_uses(conn)
        for where in ("view", "trigger", "generated column", "index", "check constraint"):
            assert isinstance(outcomes[where], str), (where, outcomes[where])
        for where in ("view", "trigger", "generated column", "check constraint"):
            assert "unsafe use of fl_f()" in outcomes[where], (where, outcomes[where])
        assert "unsafe use of fl_f()" in outcomes["index"] or "non-deterministic" in outcomes["index"]
        # with trusted_schema on, direct-only still applies
        conn.execute("PRAGMA trusted_schema = ON")
        assert "unsafe use of fl_f()" in one_error(conn, "SELECT y FROM v")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "capabilities, deterministic",
    [(["log"], True), (["clock"], False), (["random"], False), (["log", "clock"], False), (["log", "random"], False)],
)
def test_clock_and_random_make_a_function_non_deterministic(
    build: Build, session_key: Ed25519PrivateKey, capabilities: list[str], deterministic: bool
) -> None:
    """Declared deterministic, but a function that can read the clock or
    random bytes is not: SQLite must call it on every row."""
    conn = flags_conn(build, session_key, capabilities, True)
    try:
        assert calls_for_a_constant(conn) == (1 if deterministic else 3)
    finally:
        conn.close()
