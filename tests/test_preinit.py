"""Pre-initialization (sqlwasm._preinit, `sqlwasm preinit`): a snapshot
module behaves as the original does after its initializer ran; what a
snapshot cannot carry is refused by name."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

import apsw
import pytest
import wasmtime
from conftest import MEMORY, Connect, KeyPair, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import _cli as cli
from sqlwasm._build import build as build_guest
from sqlwasm._manifest import MANIFEST_SECTION
from sqlwasm._preinit import PreinitError, preinit
from sqlwasm._signing import SIGNATURE_SECTION, check_signature, sign
from sqlwasm._wasmfile import declared_memories, find_custom, sections


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


# ------------------------------------------------------ a real C guest

GUESTS = Path(__file__).resolve().parent / "guests"


@pytest.fixture(scope="module")
def lookup_modules() -> tuple[bytes, bytes]:
    """tests/guests/lookup.c built by zig cc, and its snapshot."""
    original = build_guest(GUESTS / "lookup.c", GUESTS / "lookup.toml")
    return original, preinit(original)


@pytest.fixture(scope="module")
def lookup_connections(lookup_modules: tuple[bytes, bytes]) -> Iterator[tuple[apsw.Connection, apsw.Connection]]:
    key = Ed25519PrivateKey.generate()
    runtime = sqlwasm.Runtime(trusted_keys=[key.public_key()])
    original, snapshot = (runtime.connect(":memory:", [sign(m, key)]) for m in lookup_modules)
    yield original, snapshot
    original.close()
    snapshot.close()


def test_the_snapshot_starts_initialized(lookup_modules: tuple[bytes, bytes]) -> None:
    original, snapshot = lookup_modules
    names = [e.name for e in wasmtime.Module(wasmtime.Engine(), snapshot).exports]
    assert "sqlwasm_init" not in names and "_initialize" not in names and "lookup" in names
    # The tables are in the snapshot's data: 4096 u32 + 4096 u64 at least.
    assert len(snapshot) - len(original) > 4096 * 12
    assert find_custom(snapshot, MANIFEST_SECTION) and check_signature(snapshot) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=20))
def test_results_are_the_same_with_and_without_preinit(
    lookup_connections: tuple[apsw.Connection, apsw.Connection], values: list[int]
) -> None:
    original, snapshot = lookup_connections
    sql = "SELECT lookup(value) FROM json_each(?)"
    bound = (json.dumps(values),)
    assert snapshot.execute(sql, bound).fetchall() == original.execute(sql, bound).fetchall()


def test_cli_preinit_writes_a_signed_snapshot(lookup_modules: tuple[bytes, bytes], keypair: KeyPair, tmp_path: Path) -> None:
    module = tmp_path / "lookup.wasm"
    module.write_bytes(lookup_modules[0])
    out = tmp_path / "ready.wasm"
    assert cli.main(["preinit", str(module), "-o", str(out), "--key", str(keypair.key_path)]) == 0
    signature = check_signature(out.read_bytes())
    assert signature is not None and signature.key_id == keypair.public.key_id
    conn = sqlwasm.connect(":memory:", [out], trusted_keys=[keypair.pub_path])
    assert conn.execute("SELECT lookup(5)").fetchall() == [(52134245,)]


def test_cli_preinit_names_a_missing_initializer(
    lookup_modules: tuple[bytes, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "lookup.wasm"
    module.write_bytes(lookup_modules[0])
    assert cli.main(["preinit", str(module), "-o", str(tmp_path / "out.wasm"), "--init", "setup"]) == 1
    assert capsys.readouterr().err == (
        "sqlwasm: error: cannot pre-initialize module 'lookup': it exports no function 'setup' to run as its "
        "initializer\n"
    )
    assert not (tmp_path / "out.wasm").exists()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_modules_are_refused_cleanly_or_give_valid_snapshots(data: st.DataObject) -> None:
    """preinit's reader on broken bytes: a PreinitError, never another
    exception; a snapshot it does write is valid wasm."""
    module = bytearray(GLOBALS_WASM)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(8, len(module) - 1))
        module[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(module)))
    try:
        snapshot = preinit(bytes(module[:cut]), timeout_ms=100, memory_pages=16)
    except PreinitError:
        return
    wasmtime.Module.validate(wasmtime.Engine(), snapshot)


GLOBALS_WASM = wat2wasm(GLOBALS)


def test_an_invalid_module_is_refused_even_where_the_rewrite_would_fix_it() -> None:
    # Sections out of order: reassembling in the canonical order would make
    # it valid; preinit refuses it as the engine does.
    found = {s.id: GLOBALS_WASM[s.start : s.end] for s in sections(GLOBALS_WASM) if s.id in (6, 7)}
    swapped = GLOBALS_WASM.replace(found[6] + found[7], found[7] + found[6])
    assert swapped != GLOBALS_WASM
    with pytest.raises(PreinitError, match="cannot pre-initialize module: the engine refuses it: .*section"):
        preinit(swapped)
