"""Pre-initialization (sqlwasm._preinit, `sqlwasm preinit`): a snapshot
module behaves as the original does after its initializer ran; what a
snapshot cannot carry is refused by name."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import wasmtime
from conftest import MEMORY, Connect, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sqlwasm._manifest import MANIFEST_SECTION
from sqlwasm._preinit import PreinitError, preinit
from sqlwasm._signing import SIGNATURE_SECTION, check_signature, sign
from sqlwasm._wasmfile import declared_memories, find_custom


def wat2wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def run(wasm: bytes, *calls: str, imports: dict[str, Any] | None = None) -> tuple[list[Any], wasmtime.Instance]:
    """Instantiates wasm on plain wasmtime (stub imports) and calls each export."""
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wasm)
    linker = wasmtime.Linker(engine)
    for imp in module.imports:
        assert isinstance(imp.type, wasmtime.FuncType)
        linker.define_func(imp.module, imp.name or "", imp.type, lambda *_: 0)
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    results = []
    for name in calls:
        func = exports[name]
        assert isinstance(func, wasmtime.Func)
        results.append(func(store))
    return results, instance


GLOBALS = f"""(module {MEMORY}
  (global $i (mut i32) (i32.const 1))
  (global $l (mut i64) (i64.const 2))
  (global $f (mut f32) (f32.const 3))
  (global $d (mut f64) (f64.const 4))
  (global $v (mut v128) (v128.const i64x2 5 6))
  (global $k i32 (i32.const 7))
  (global $r (mut funcref) (ref.null func))
  (data (i32.const 16) "seed")
  (func (export "i") (result i32) (global.get $i))
  (func (export "l") (result i64) (global.get $l))
  (func (export "f") (result f32) (global.get $f))
  (func (export "d") (result f64) (global.get $d))
  (func (export "v") (result i64) (i64x2.extract_lane 1 (global.get $v)))
  (func (export "k") (result i32) (global.get $k))
  (func (export "byte") (result i32) (i32.load8_u (i32.const 131072)))
  (func (export "pages") (result i32) (memory.size))
  (func (export "sqlwasm_init")
    (global.set $i (i32.const -2147483648)) (global.set $l (i64.const -1))
    (global.set $f (f32.const nan:0x200001)) (global.set $d (f64.const -0.0))
    (global.set $v (v128.const i64x2 -9 0x7fffffffffffffff))
    (drop (memory.grow (i32.const 2)))
    (i32.store8 (i32.const 131072) (i32.const 201))
    (memory.fill (i32.const 16) (i32.const 0) (i32.const 4))))
"""


def test_globals_of_every_type_and_grown_memory_are_snapshotted() -> None:
    original = wat2wasm(GLOBALS)
    snapshot = preinit(original)
    (i, l_, f, d, v, k, byte, pages), instance = run(snapshot, "i", "l", "f", "d", "v", "k", "byte", "pages")
    assert (i, l_, k, byte, pages) == (-(2**31), -1, 7, 201, 3)
    assert struct.pack("<d", d) == struct.pack("<d", -0.0)
    assert v == 2**63 - 1
    assert f != f  # a NaN: wasmtime-py hands f32 back as a Python float
    # The memory's minimum is its size after the initializer; the seed bytes
    # it cleared stay cleared; the initializer export is gone.
    assert declared_memories(snapshot)[0].min_pages == 3
    assert "sqlwasm_init" not in [e.name for e in wasmtime.Module(wasmtime.Engine(), snapshot).exports]
    assert run(original, "sqlwasm_init", "byte")[0][1] == 201  # the same as running it


def test_f32_bits_are_kept_exactly() -> None:
    wat = f"""(module {MEMORY} (global $f (mut f32) (f32.const 0))
      (func (export "bits") (result i32) (i32.reinterpret_f32 (global.get $f)))
      (func (export "wizer.initialize") (global.set $f (f32.const nan:0x200001))))"""
    (bits,), _ = run(preinit(wat2wasm(wat)), "bits")
    assert bits == 0x7FA00001


def test_start_function_and_reactor_initialize_run_once_then_vanish() -> None:
    wat = f"""(module {MEMORY} (global $n (mut i32) (i32.const 0))
      (func $start (global.set $n (i32.add (global.get $n) (i32.const 1))))
      (start $start)
      (func (export "_initialize") (global.set $n (i32.mul (global.get $n) (i32.const 10))))
      (func (export "sqlwasm_init") (global.set $n (i32.add (global.get $n) (i32.const 5))))
      (func (export "n") (result i32) (global.get $n)))"""
    snapshot = preinit(wat2wasm(wat))
    assert run(snapshot, "n")[0] == [15]
    assert [e.name for e in wasmtime.Module(wasmtime.Engine(), snapshot).exports] == ["memory", "n"]


@pytest.mark.parametrize(
    ("wat", "expected"),
    [
        pytest.param(
            f"""(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
               {MEMORY} (func (export "sqlwasm_init") (drop (call $w (i32.const 1) (i32.const 0) (i32.const 0)
               (i32.const 0)))))""",
            "sqlwasm_init failed: it called import wasi_snapshot_preview1.fd_write, and preinit provides no host",
            id="calls-an-import",
        ),
        pytest.param(
            f'(module {MEMORY} (func (export "sqlwasm_init") unreachable))',
            "sqlwasm_init failed: wasm trap: wasm `unreachable` instruction executed",
            id="traps",
        ),
        pytest.param(
            f'(module {MEMORY} (func (export "sqlwasm_init") (loop $l (br $l))))',
            "sqlwasm_init failed: time limit of 200 ms exceeded",
            id="loops-forever",
        ),
        pytest.param(
            f'(module {MEMORY} (func (export "sqlwasm_init") (drop (memory.grow (i32.const 10))) '
            '(i32.store (i32.const 655000) (i32.const 1))))',
            "out of bounds memory access",
            id="grows-past-the-page-limit",
        ),
        pytest.param(
            '(module (import "env" "memory" (memory 1)) (func (export "sqlwasm_init")))',
            "it imports memory env.memory, whose state a snapshot cannot carry",
            id="imported-memory",
        ),
        pytest.param(
            '(module (import "env" "g" (global (mut i32))) (func (export "sqlwasm_init")))',
            "it imports global env.g",
            id="imported-global",
        ),
        pytest.param(
            '(module (import "env" "t" (table 1 funcref)) (func (export "sqlwasm_init")))',
            "it imports table env.t",
            id="imported-table",
        ),
        pytest.param(
            f'(module {MEMORY} (memory 1) (func (export "sqlwasm_init")))',
            "it defines 2 memories (multiple memories are not supported)",
            id="two-memories",
        ),
        pytest.param(
            f'(module {MEMORY} (data "passive") (func (export "sqlwasm_init") '
            "(memory.init 0 (i32.const 0) (i32.const 0) (i32.const 3)) (data.drop 0)))",
            "data segment 0 is passive (bulk memory",
            id="passive-data",
        ),
        pytest.param(
            f"""(module {MEMORY} (table 2 funcref) (func $a) (func $b) (elem (i32.const 0) $a) (elem declare func $b)
               (func (export "sqlwasm_init") (table.set (i32.const 0) (ref.func $b))))""",
            "the initializer changed table 0: function references cannot be written",
            id="changes-a-table",
        ),
        pytest.param(
            f"""(module {MEMORY} (func $a) (elem declare func $a) (global $g (mut funcref) (ref.null func))
               (func (export "sqlwasm_init") (global.set $g (ref.func $a))))""",
            "the initializer changed global 0",
            id="changes-a-funcref-global",
        ),
        pytest.param(
            f'(module {MEMORY} (func $a) (elem funcref (ref.func $a)) (func (export "sqlwasm_init")))',
            "element segment 0 is passive",
            id="passive-elements",
        ),
        pytest.param(f'(module {MEMORY} (func (export "init")))', "it exports no initializer", id="no-initializer"),
        pytest.param(
            f'(module {MEMORY} (func (export "sqlwasm_init") (param i32)))',
            "sqlwasm_init takes parameters",
            id="initializer-with-parameters",
        ),
    ],
)
def test_what_a_snapshot_cannot_carry_is_refused_by_name(wat: str, expected: str) -> None:
    with pytest.raises(PreinitError) as info:
        preinit(wat2wasm(wat), timeout_ms=200, memory_pages=10)
    assert expected in str(info.value)
    assert str(info.value).startswith("cannot pre-initialize module")


def test_unchanged_tables_and_bulk_memory_code_stay_valid() -> None:
    wat = f"""(module {MEMORY} (table 2 funcref) (func $a (result i32) (i32.const 41)) (elem (i32.const 1) $a)
      (data (i32.const 8) "xy") (data (i32.const 64) "zw")
      (func (export "call") (result i32) (data.drop 1) (call_indirect (result i32) (i32.const 1)))
      (func (export "sqlwasm_init") (i32.store8 (i32.const 9) (i32.const 0x51))))"""
    snapshot = preinit(wat2wasm(wat))
    (value,), instance = run(snapshot, "call")
    assert value == 41


def test_manifest_is_kept_and_signature_dropped(session_key: Ed25519PrivateKey, connect: Connect) -> None:
    wat = f"""(module {MEMORY} (global $base (mut i64) (i64.const 0))
      (func (export "sqlwasm_init") (global.set $base (i64.const 1000)))
      (func (export "plus_base") (param i64) (result i64) (i64.add (local.get 0) (global.get $base))))"""
    signed = wasm_module(wat, manifest(fn("plus_base"), name="based"), key=session_key)
    snapshot = preinit(signed)
    assert check_signature(snapshot) is None and not find_custom(snapshot, SIGNATURE_SECTION)
    assert len(find_custom(snapshot, MANIFEST_SECTION)) == 1
    conn = connect(sign(snapshot, session_key))
    assert conn.execute("SELECT plus_base(5)").fetchall() == [(1005,)]


def test_module_name_is_in_errors(session_key: Ed25519PrivateKey) -> None:
    wat = f'(module {MEMORY} (func (export "sqlwasm_init") unreachable) (func (export "f") (param i64) (result i64) (local.get 0)))'
    with pytest.raises(PreinitError, match="cannot pre-initialize module 'named': sqlwasm_init failed"):
        preinit(wasm_module(wat, manifest(fn("f"), name="named")))


def test_not_wasm_is_refused() -> None:
    with pytest.raises(PreinitError, match="not a wasm module preinit can read: not a wasm module"):
        preinit(b"\0asm\x02\0\0\0")
