"""sqlwasm/_runtime.py: load, compile once, install per connection, lifetimes."""

from __future__ import annotations

import gc
import hashlib
import threading
import time
import weakref
from pathlib import Path

import apsw
import pytest
from conftest import MEMORY, Build, fn, manifest, one_error, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm import CapabilityError, ManifestError, TrapError
from sqlwasm._manifest import FunctionSpec

# A raw function returning a per-instance counter: 1, 2, 3... on each call.
COUNTER_WAT = MEMORY + """
  (global $n (mut i64) (i64.const 0))
  (func (export "next") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (global.get $n))
  (func (export "twice") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 2)))
"""


def counter_manifest(name: str = "c", *, prefix: str = "c", **extra: object) -> dict:
    return manifest(
        fn(f"{prefix}_next", export="next", args=["integer"]),
        fn(f"{prefix}_twice", export="twice", deterministic=True),
        name=name,
        **extra,
    )


@pytest.fixture
def counter(build: Build) -> bytes:
    return build(COUNTER_WAT, counter_manifest())


def count(conn: apsw.Connection, times: int = 1) -> list[int]:
    return [conn.execute("SELECT c_next(0)").fetchone()[0] for _ in range(times)]


# ------------------------------------------------------------------ load


def test_load_returns_module_description(runtime: sqlwasm.Runtime, counter: bytes, session_key: Ed25519PrivateKey) -> None:
    module = runtime.load(counter)
    assert isinstance(module, sqlwasm.Module)
    assert (module.name, module.version) == ("c", "1.0.0")
    assert module.sha256 == hashlib.sha256(counter).hexdigest()
    expected_signer = sqlwasm.PublicKey(
        session_key.public_key().public_bytes_raw()
    ).key_id
    assert module.signer == expected_signer
    assert module.capabilities == ()
    assert all(isinstance(f, FunctionSpec) for f in module.functions)
    assert [(f.name, f.export, f.deterministic) for f in module.functions] == [
        ("c_next", "next", False),
        ("c_twice", "twice", True),
    ]


def test_load_reports_capabilities(build: Build, session_key: Ed25519PrivateKey) -> None:
    granting = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["log", "clock"])
    module = granting.load(build(COUNTER_WAT, counter_manifest(capabilities=["log", "clock"])))
    assert module.capabilities == ("log", "clock")


def test_load_from_path(runtime: sqlwasm.Runtime, counter: bytes, tmp_path: Path) -> None:
    path = tmp_path / "c.wasm"
    path.write_bytes(counter)
    assert runtime.load(path).sha256 == runtime.load(str(path)).sha256 == hashlib.sha256(counter).hexdigest()


def test_load_missing_path(runtime: sqlwasm.Runtime, tmp_path: Path) -> None:
    with pytest.raises(sqlwasm.Error, match="cannot read module"):
        runtime.load(tmp_path / "none.wasm")


def test_load_error_names_the_path(runtime: sqlwasm.Runtime, tmp_path: Path) -> None:
    path = tmp_path / "unsigned.wasm"
    path.write_bytes(wasm_module(COUNTER_WAT, counter_manifest()))
    with pytest.raises(sqlwasm.SignatureError, match="unsigned.wasm"):
        runtime.load(path)


def test_compiles_once(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    first, second = runtime.load(counter), runtime.load(counter)
    assert first._compiled is second._compiled
    assert runtime.load(first) is first


def test_module_from_another_runtime_is_refused(runtime: sqlwasm.Runtime, counter: bytes, session_key: Ed25519PrivateKey) -> None:
    other = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    foreign = other.load(counter)
    with pytest.raises(sqlwasm.Error, match="loaded by another Runtime"):
        runtime.load(foreign)
    conn = apsw.Connection(":memory:")
    try:
        with pytest.raises(sqlwasm.Error, match="another Runtime"):
            runtime.install(conn, foreign)
        with pytest.raises(apsw.SQLError, match="no such function"):
            conn.execute("SELECT c_next(0)")
    finally:
        conn.close()


# --------------------------------------------------------------- imports


@pytest.mark.parametrize(
    "imports, named",
    [
        ('(import "env" "now" (func (result i64)))', "env.now"),
        ('(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))', "wasi_snapshot_preview1.fd_write"),
        ('(import "env" "table" (table 1 funcref))', "env.table"),
        ('(import "env" "g" (global i32))', "env.g"),
    ],
)
@pytest.mark.parametrize("capabilities", [[], ["log", "clock", "random"]])
def test_imports_are_refused(
    build: Build, session_key: Ed25519PrivateKey, imports: str, named: str, capabilities: list[str]
) -> None:
    """Even with every capability declared and granted, nothing else links."""
    wat = COUNTER_WAT.replace(MEMORY, imports + MEMORY)
    data = build(wat, counter_manifest(capabilities=capabilities))
    granting = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=capabilities)
    with pytest.raises(CapabilityError) as info:
        granting.load(data)
    assert named in str(info.value) and "module 'c'" in str(info.value)


def test_imported_memory_is_refused(build: Build, runtime: sqlwasm.Runtime) -> None:
    wat = COUNTER_WAT.replace(MEMORY, '(import "env" "memory" (memory 1)) (export "memory" (memory 0))')
    with pytest.raises(CapabilityError, match="env.memory"):
        runtime.load(build(wat, counter_manifest()))


# ---------------------------------------------------------------- install


def test_one_instance_per_connection(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    module = runtime.load(counter)
    a = runtime.connect(":memory:", [module])
    b = runtime.connect(":memory:", [module])
    c = apsw.Connection(":memory:")
    try:
        assert runtime.install(c, counter) is not None
        assert count(a, 3) == [1, 2, 3]
        assert count(b, 2) == [1, 2]
        assert count(c, 1) == [1]
        assert count(a, 1) == [4]
        # State persists across statements and rows of one connection.
        assert a.execute("SELECT c_next(0) FROM (SELECT 1 UNION ALL SELECT 2)").fetchall() == [(5,), (6,)]
    finally:
        for conn in (a, b, c):
            conn.close()


def test_install_twice_into_one_connection(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = runtime.connect(":memory:", [counter])
    try:
        assert count(conn, 2) == [1, 2]
        with pytest.raises(sqlwasm.Error, match="module 'c' is already installed in this connection"):
            runtime.install(conn, counter)
        assert count(conn, 1) == [3]  # the first instance is untouched
    finally:
        conn.close()


@pytest.mark.parametrize("clash", ["c_twice", "C_TWICE"])
def test_function_name_clash_between_modules(build: Build, runtime: sqlwasm.Runtime, counter: bytes, clash: str) -> None:
    other = build(COUNTER_WAT, manifest(fn("d_next", export="next"), fn(clash, export="twice"), name="d"))
    conn = runtime.connect(":memory:", [counter])
    try:
        with pytest.raises(ManifestError) as info:
            runtime.install(conn, other)
        assert f"module 'd': function '{clash}' is already provided by module 'c'" in str(info.value)
        # Nothing of 'd' was registered; 'c' still answers.
        with pytest.raises(apsw.SQLError, match="no such function"):
            conn.execute("SELECT d_next(0)")
        assert conn.execute("SELECT c_twice(21)").fetchall() == [(42,)]
        assert "no module 'd'" in one_error(conn, "SELECT wasm_call('d', 'next', 0)")
    finally:
        conn.close()


def test_two_modules_in_one_connection(build: Build, runtime: sqlwasm.Runtime, counter: bytes) -> None:
    other = build(COUNTER_WAT, counter_manifest("d", prefix="d"))
    conn = runtime.connect(":memory:", [counter, other])
    try:
        assert conn.execute("SELECT c_next(0), c_next(0), d_next(0)").fetchall() == [(1, 2, 1)]
        assert conn.execute("SELECT wasm_call('c', 'next', 0), wasm_call('d', 'next', 0)").fetchall() == [(3, 2)]
    finally:
        conn.close()


def test_install_into_closed_connection(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = apsw.Connection(":memory:")
    conn.close()
    with pytest.raises((apsw.ConnectionClosedError, sqlwasm.Error)):
        runtime.install(conn, counter)


def test_install_after_close_of_a_used_connection(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = runtime.connect(":memory:", [counter])
    assert count(conn) == [1]
    conn.close()
    with pytest.raises((apsw.ConnectionClosedError, sqlwasm.Error)):
        runtime.install(conn, runtime.load(counter))


def test_connect_closes_the_connection_when_install_fails(
    runtime: sqlwasm.Runtime, counter: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[apsw.Connection] = []
    monkeypatch.setattr(apsw, "connection_hooks", [*apsw.connection_hooks, opened.append])
    with pytest.raises(sqlwasm.SignatureError):
        runtime.connect(":memory:", [counter, wasm_module(COUNTER_WAT, counter_manifest("d", prefix="d"))])
    assert len(opened) == 1 and _is_closed(opened[0])


def _is_closed(conn: apsw.Connection) -> bool:
    try:
        conn.sqlite3pointer()
    except apsw.ConnectionClosedError:
        return True
    return False


def test_module_level_connect(counter: bytes, session_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    conn = sqlwasm.connect(path, [counter], trusted_keys=[session_key.public_key()])
    try:
        conn.execute("CREATE TABLE t(x)")
        assert count(conn, 2) == [1, 2]
    finally:
        conn.close()
    ro = sqlwasm.connect(path, [counter], trusted_keys=[session_key.public_key()], flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert count(ro) == [1]
        with pytest.raises(apsw.ReadOnlyError):
            ro.execute("INSERT INTO t VALUES (1)")
    finally:
        ro.close()


def test_module_level_connect_passes_runtime_options(counter: bytes, session_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="max_result_bytes"):
        sqlwasm.connect(":memory:", [counter], trusted_keys=[session_key.public_key()], max_result_bytes=0)
    with pytest.raises(sqlwasm.SignatureError):
        sqlwasm.connect(":memory:", [counter])


# ------------------------------------------------------- starting an instance


def test_initialize_runs_once_per_instance(build: Build, runtime: sqlwasm.Runtime) -> None:
    wat = MEMORY + """
      (global $n (mut i64) (i64.const 0))
      (func (export "_initialize") (global.set $n (i64.add (global.get $n) (i64.const 1))))
      (func (export "inits") (param i64) (result i64) (global.get $n))
    """
    data = build(wat, manifest(fn("i_inits", export="inits"), name="i"))
    a, b = runtime.connect(":memory:", [data]), runtime.connect(":memory:", [data])
    try:
        assert a.execute("SELECT i_inits(0), i_inits(0)").fetchall() == [(1, 1)]
        assert b.execute("SELECT i_inits(0)").fetchall() == [(1,)]
    finally:
        a.close()
        b.close()


def test_trap_in_initialize_fails_install(build: Build, runtime: sqlwasm.Runtime) -> None:
    wat = MEMORY + """
      (func (export "_initialize") unreachable)
      (func (export "f") (param i64) (result i64) (local.get 0))
    """
    conn = apsw.Connection(":memory:")
    try:
        with pytest.raises(TrapError, match="module 'i': failed while starting"):
            runtime.install(conn, build(wat, manifest(fn("i_f", export="f"), name="i")))
        with pytest.raises(apsw.SQLError, match="no such function"):
            conn.execute("SELECT i_f(1)")
    finally:
        conn.close()


def test_start_function_trap_fails_install(build: Build, runtime: sqlwasm.Runtime) -> None:
    wat = MEMORY + """
      (func $start unreachable)
      (start $start)
      (func (export "f") (param i64) (result i64) (local.get 0))
    """
    conn = apsw.Connection(":memory:")
    try:
        with pytest.raises(sqlwasm.Error, match="module 'i'"):
            runtime.install(conn, build(wat, manifest(fn("i_f", export="f"), name="i")))
    finally:
        conn.close()


# ------------------------------------------------------------ SQLite flags


def test_pure_function_is_innocuous_and_deterministic_where_declared(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = runtime.connect(":memory:", [counter])
    try:
        conn.execute("CREATE TABLE t(x INTEGER)")
        # deterministic: allowed in an index expression and a generated column
        conn.execute("CREATE INDEX t_twice ON t(c_twice(x))")
        conn.execute("CREATE TABLE g(x, y AS (c_twice(x)))")
        conn.execute("INSERT INTO g(x) VALUES (4)")
        assert conn.execute("SELECT y FROM g").fetchall() == [(8,)]
        # not deterministic: refused there
        with pytest.raises(apsw.SQLError, match="non-deterministic"):
            conn.execute("CREATE INDEX t_next ON t(c_next(x))")
        # innocuous: usable from a view even under trusted_schema=OFF
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("CREATE VIEW v AS SELECT c_twice(5) AS y")
        assert conn.execute("SELECT y FROM v").fetchall() == [(10,)]
    finally:
        conn.close()


def test_function_with_capabilities_is_direct_only(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["log"])
    conn = runtime.connect(":memory:", [build(COUNTER_WAT, counter_manifest(capabilities=["log"]))])
    try:
        assert conn.execute("SELECT c_twice(5)").fetchall() == [(10,)]
        conn.execute("CREATE VIEW v AS SELECT c_twice(5) AS y")
        with pytest.raises(apsw.SQLError, match="unsafe use of c_twice"):
            conn.execute("SELECT y FROM v")
    finally:
        conn.close()


def test_wasm_call_is_direct_only(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = runtime.connect(":memory:", [counter])
    try:
        assert conn.execute("SELECT wasm_call('c', 'twice', 4)").fetchall() == [(8,)]
        conn.execute("CREATE VIEW v AS SELECT wasm_call('c', 'twice', 4) AS y")
        with pytest.raises(apsw.SQLError, match="unsafe use of wasm_call"):
            conn.execute("SELECT y FROM v")
    finally:
        conn.close()


def test_load_extension_stays_off(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = runtime.connect(":memory:", [counter])
    try:
        with pytest.raises(apsw.SQLError, match="not authorized"):
            conn.execute("SELECT load_extension('x')")
    finally:
        conn.close()


# -------------------------------------------------------------- lifetimes


def test_functions_outlive_the_runtime(session_key: Ed25519PrivateKey, counter: bytes) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    module = runtime.load(counter)
    conn = runtime.connect(":memory:", [module])
    del runtime, module
    gc.collect()
    try:
        assert count(conn, 3) == [1, 2, 3]
        assert conn.execute("SELECT wasm_call('c', 'twice', 21)").fetchall() == [(42,)]
    finally:
        conn.close()


@pytest.mark.parametrize("ending", ["close", "drop"])
def test_runtime_is_freed_after_its_connections(session_key: Ed25519PrivateKey, counter: bytes, ending: str) -> None:
    """A closed (or dropped) connection's stores, and the Runtime they keep
    alive, are freed soon after SQLite closes it: by sqlwasm's reaper
    thread, never from a finalizer."""
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    alive = weakref.ref(runtime)
    conn = runtime.connect(":memory:", [counter])
    del runtime
    gc.collect()
    assert count(conn) == [1]
    if ending == "close":
        conn.close()
    del conn
    gc.collect()
    deadline = time.monotonic() + 5
    while alive() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert alive() is None


def test_connection_dropped_without_close(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    conn = runtime.connect(":memory:", [counter])
    assert count(conn) == [1]
    cursor = conn.execute("SELECT c_next(0)")
    del conn, cursor
    gc.collect()
    again = runtime.connect(":memory:", [counter])
    try:
        assert count(again) == [1]
    finally:
        again.close()


def test_open_close_loop(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    module = runtime.load(counter)
    for i in range(200):
        conn = runtime.connect(":memory:", [module])
        assert conn.execute("SELECT c_next(0), c_twice(?)", (i,)).fetchall() == [(1, 2 * i)]
        if i % 3 == 0:
            conn.close()
        elif i % 3 == 1:
            cursor = conn.execute("SELECT c_next(0) FROM (SELECT 1 UNION ALL SELECT 2)")
            next(cursor)  # left mid-statement
            conn.close()
        del conn  # i % 3 == 2: never closed, left to the collector
        if i % 50 == 0:
            gc.collect()
    gc.collect()
    conn = runtime.connect(":memory:", [module])
    try:
        assert count(conn) == [1]
    finally:
        conn.close()


def test_threads_each_with_a_connection(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    module = runtime.load(counter)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            conn = runtime.connect(":memory:", [module])
            try:
                results[k] = count(conn, 50)
            finally:
                conn.close()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {k: list(range(1, 51)) for k in range(8)}


# ---------------------------------------------------------- manifest limits
# docs/manifest.md: `limits` are "stricter limits for this module".

LIMITS_WAT = MEMORY + """
  (data (i32.const 1024) "\\b1xxxxxxxxxxxxxxxxx")
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 64))
  (func (export "str17") (param i32 i32) (result i64) (i64.const 0x0000040000000012))
  (func (export "grow") (param i64) (result i64) (i64.extend_i32_s (memory.grow (i32.wrap_i64 (local.get 0)))))
  (func (export "spin") (param i64) (result i64)
    (local $i i64)
    (loop $again
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $again (i64.lt_s (local.get $i) (local.get 0))))
    (local.get $i))
"""


def limits_module(build: Build, **limits: int) -> bytes:
    return build(
        LIMITS_WAT,
        manifest(
            fn("l_str", export="str17", abi="msgpack", args=[], returns="text"),
            fn("l_grow", export="grow"),
            fn("l_spin", export="spin"),
            name="l",
            limits=limits,
        ),
    )


def test_limits_module_without_limits(build: Build, runtime: sqlwasm.Runtime) -> None:
    conn = runtime.connect(":memory:", [limits_module(build)])
    try:
        assert conn.execute("SELECT l_str(), l_grow(1), l_spin(1000)").fetchall() == [("x" * 17, 1, 1000)]
    finally:
        conn.close()


def test_manifest_max_result_bytes_is_applied(build: Build, runtime: sqlwasm.Runtime) -> None:
    conn = runtime.connect(":memory:", [limits_module(build, max_result_bytes=16)])
    try:
        assert "l.l_str: result is 18 bytes, over the 16-byte result limit" in one_error(conn, "SELECT l_str()")
    finally:
        conn.close()


def test_manifest_memory_pages_is_applied(build: Build, runtime: sqlwasm.Runtime) -> None:
    conn = runtime.connect(":memory:", [limits_module(build, memory_pages=2)])
    try:
        assert conn.execute("SELECT l_grow(1)").fetchall() == [(1,)]  # 1 -> 2 pages: allowed
        assert conn.execute("SELECT l_grow(1)").fetchall() == [(-1,)]  # 2 -> 3 pages: refused
    finally:
        conn.close()


def test_manifest_fuel_is_applied(build: Build, runtime: sqlwasm.Runtime) -> None:
    conn = runtime.connect(":memory:", [limits_module(build, fuel=10_000)])
    try:
        assert conn.execute("SELECT l_spin(10)").fetchall() == [(10,)]
        assert "l.l_spin: trap (out of fuel)" in one_error(conn, "SELECT l_spin(10000000)")
    finally:
        conn.close()


# ------------------------------------------- install: isolation, all or nothing


def test_install_refuses_to_replace_an_application_function(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    """The application's own c_twice guards a CHECK constraint: a module must
    not silently take its place."""
    conn = apsw.Connection(":memory:")
    try:
        conn.create_scalar_function("c_twice", lambda x: x, 1)
        conn.execute("CREATE TABLE t(x CHECK (c_twice(x) < 10))")
        with pytest.raises(ManifestError, match=r"module 'c': the connection already has functions named c_twice .*replace=True"):
            runtime.install(conn, counter)
        # nothing of the module is there, and the CHECK still uses the application's function
        with pytest.raises(apsw.SQLError, match="no such function: c_next"):
            conn.execute("SELECT c_next(0)")
        conn.execute("INSERT INTO t VALUES (6)")
        with pytest.raises(apsw.ConstraintError):
            conn.execute("INSERT INTO t VALUES (12)")
        # replacing is possible when asked for by name
        runtime.install(conn, counter, replace=True)
        assert conn.execute("SELECT c_twice(21), c_next(0)").fetchall() == [(42, 1)]
        with pytest.raises(apsw.ConstraintError):
            conn.execute("INSERT INTO t VALUES (6)")
    finally:
        conn.close()


def test_install_is_all_or_nothing_when_sqlite_refuses(runtime: sqlwasm.Runtime, counter: bytes) -> None:
    """SQLite refuses to replace or delete a function while a statement runs
    (so an install could not be undone): the install fails before registering
    anything, and can be retried once the statement is done."""
    conn = apsw.Connection(":memory:")
    try:
        conn.create_scalar_function("c_twice", lambda x: -x, 1)
        conn.execute("CREATE TABLE n(x); INSERT INTO n VALUES (1), (2), (3)")
        running = conn.execute("SELECT x FROM n")
        next(running)
        with pytest.raises(sqlwasm.Error, match="module 'c': cannot install while a statement is running"):
            runtime.install(conn, counter, replace=True)
        for sql in ("SELECT c_next(0)", "SELECT wasm_call('c', 'next', 0)"):
            with pytest.raises(apsw.SQLError, match="no such function: c_next|no module 'c'"):
                conn.execute(sql).fetchall()
        assert conn.execute("SELECT c_twice(2)").fetchall() == [(-2,)]
        running.close()
        runtime.install(conn, counter, replace=True)  # not recorded as installed before: this works
        assert conn.execute("SELECT c_next(0), c_twice(2)").fetchall() == [(1, 4)]
    finally:
        conn.close()


def test_install_rolls_back_registrations_after_a_failure(
    runtime: sqlwasm.Runtime, counter: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the second registration fails. The first is undone,
    the module is not recorded, and a later install works."""
    from sqlwasm import _native

    real = _native.NativeConnection.add_function
    calls = []

    def fail_second(self: _native.NativeConnection, *args: object, **kwargs: object) -> int:
        calls.append(kwargs["sql_name"])
        if len(calls) == 2:
            raise sqlwasm.Error("injected registration failure")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    conn = apsw.Connection(":memory:")
    try:
        monkeypatch.setattr(_native.NativeConnection, "add_function", fail_second)
        with pytest.raises(sqlwasm.Error, match="injected"):
            runtime.install(conn, counter)
        monkeypatch.undo()
        assert calls == ["c_next", "c_twice"]
        with pytest.raises(apsw.SQLError, match="no such function: c_next"):
            conn.execute("SELECT c_next(0)")
        with pytest.raises(apsw.SQLError, match="no module 'c' is installed"):
            conn.execute("SELECT wasm_call('c', 'next', 0)").fetchall()
        runtime.install(conn, counter)
        assert conn.execute("SELECT c_next(0), wasm_call('c', 'twice', 4)").fetchall() == [(1, 8)]
    finally:
        conn.close()


LIAR_WAT = MEMORY + """
  (global $n (mut i64) (i64.const 0))
  (func (export "f") (param i64) (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (i64.add (local.get 0) (global.get $n)))
"""


def test_trust_deterministic_false_never_sets_deterministic(build: Build, session_key: Ed25519PrivateKey) -> None:
    """A stateful guest claims determinism. Believed, SQLite lets it into an
    expression index, which it then corrupts; with trust_deterministic=False
    SQLite refuses the index instead."""
    liar = build(LIAR_WAT, manifest(fn("liar", export="f", deterministic=True), name="liar"))
    key = session_key.public_key()
    believed = sqlwasm.connect(":memory:", [liar], trusted_keys=[key])
    doubted = sqlwasm.connect(":memory:", [liar], trusted_keys=[key], trust_deterministic=False)
    try:
        for conn in (believed, doubted):
            conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)")
        believed.execute("CREATE INDEX lies ON t(liar(x))")  # allowed: the claim is believed
        with pytest.raises(apsw.SQLError, match="non-deterministic functions prohibited in index expressions"):
            doubted.execute("CREATE INDEX lies ON t(liar(x))")
        assert doubted.execute("SELECT liar(1), liar(1)").fetchall() == [(2, 3)]
    finally:
        believed.close()
        doubted.close()


@pytest.mark.parametrize(
    ("name", "args"),
    [("abs", ["integer"]), ("median", ["real"]), ("coalesce", ["integer", "integer"]), ("json_extract", ["text", "text"])],
)
def test_install_refuses_to_shadow_a_sqlite_builtin(runtime: sqlwasm.Runtime, build: Build, name: str, args: list[str]) -> None:
    """Checked at install against the connection's own SQLite library (the
    manifest cannot know which it will meet): any built-in name clashes."""
    params = " ".join(["i64"] * len(args))
    wat = MEMORY + f'(func (export "f") (param {params}) (result i64) (i64.const 7))'
    data = build(wat, manifest(fn(name, export="f", args=["integer"] * len(args)), name="b"))
    conn = apsw.Connection(":memory:")
    try:
        with pytest.raises(ManifestError, match=rf"module 'b': {name} would shadow SQLite built-in functions"):
            runtime.install(conn, data)
        with pytest.raises(apsw.SQLError, match="no module 'b'"):
            conn.execute("SELECT wasm_call('b', 'f', 1)").fetchall()
    finally:
        conn.close()
