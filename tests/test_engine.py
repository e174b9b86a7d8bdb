"""sqlwasm/_engine.py: the process-wide engines (one per configuration, even
when many threads use sqlwasm for the first time at once) and what wasm
they accept: the proposals the ABI needs, nothing else, and a ceiling on
table elements across all of an instance's tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
from conftest import MEMORY, Build, Connect, KeyPair, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import CapabilityError, ManifestError, _engine
from sqlwasm._limits import MAX_TABLE_ELEMENTS

# ------------------------------------------------- one engine per configuration

ADD_WAT = MEMORY + '(func (export "add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))'
FIRST_USE_THREADS = 16
FIRST_USE_ROUNDS = 8  # fresh interpreters; one round alone caught the race about half the time

# Each thread gets a Runtime of its own (so nothing serializes the first
# compile) and half of them meter fuel, so both engines are first used by
# racing threads. All wait at a barrier, then install and query. Each
# thread reports the query's answer or its error.
FIRST_USE_SCRIPT = """
import json, sys, threading
import sqlwasm

module, pub, count = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
runtimes = [sqlwasm.Runtime(trusted_keys=[pub], fuel=10_000_000 if k % 2 else None) for k in range(count)]
barrier = threading.Barrier(count)
outcomes = [None] * count

def work(k):
    barrier.wait()
    try:
        conn = runtimes[k].connect(":memory:", [module])
        outcomes[k] = conn.execute("SELECT e_add(?, 1)", (k,)).fetchall()[0][0]
        conn.close()
    except Exception as exc:
        outcomes[k] = f"{type(exc).__name__}: {exc}"

threads = [threading.Thread(target=work, args=(k,)) for k in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(outcomes))
"""


def test_first_use_from_many_threads_at_once(keypair: KeyPair, tmp_path: Path) -> None:
    """In fresh interpreters (first use), 16 threads install at the same
    moment. With a racy engine cache two threads each created an engine, and
    a module compiled with one met a store made with the other: 'cross-Engine
    instantiation'."""
    module = tmp_path / "e.wasm"
    module.write_bytes(wasm_module(ADD_WAT, manifest(fn("e_add", export="add", args=["integer", "integer"]), name="e"), key=keypair.private))
    command = [sys.executable, "-c", FIRST_USE_SCRIPT, str(module), str(keypair.pub_path), str(FIRST_USE_THREADS)]
    # cwd: outside the checkout, whose sqlwasm/ has no compiled native part
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for _ in range(FIRST_USE_ROUNDS)
    ]
    for child in children:
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, (child.returncode, stdout, stderr[-2000:])
        assert json.loads(stdout.splitlines()[-1]) == [k + 1 for k in range(FIRST_USE_THREADS)]


# ------------------------------------------------------- refused proposals

ANSWER = '(func (export "f") (param i64) (result i64) (local.get 0))'

# A module using each proposal sqlwasm's engines leave off, and the words the
# refusal must use for it.
REFUSED = {
    "gc struct": (
        '(type $point (struct (field i32)))'
        '(func (export "g") (result i32) (struct.get $point 0 (struct.new $point (i32.const 1))))',
        "the wasm GC proposal",
    ),
    "gc array": (
        '(type $bytes (array (mut i8)))'
        '(func (export "g") (result i32) (array.len (array.new_default $bytes (i32.const 1000000))))',
        "the wasm GC proposal",
    ),
    "externref": ("(table 1 externref)", "garbage-collected references (externref)"),
    "exceptions try_table/throw": (
        "(tag $oops (param i32))"
        '(func (export "g") (result i32)'
        "  (block $caught (result i32) (try_table (catch $oops $caught) (throw $oops (i32.const 7))) (i32.const 0)))",
        "the wasm exception-handling proposal",
    ),
    "tail call": (
        '(func $callee (result i32) (i32.const 1)) (func (export "g") (result i32) (return_call $callee))',
        "the wasm tail-call proposal",
    ),
    "relaxed simd": (
        '(func (export "g") (param v128 v128 v128) (result v128)'
        "  (f32x4.relaxed_madd (local.get 0) (local.get 1) (local.get 2)))",
        "the wasm relaxed-SIMD proposal",
    ),
    "function references": (
        '(type $thunk (func (result i32))) (func $callee (result i32) (i32.const 1)) (elem declare func $callee)'
        '(func (export "g") (result i32) (call_ref $thunk (ref.func $callee)))',
        "the wasm typed function references proposal",
    ),
    "threads (atomics)": (
        '(func (export "g") (result i32) (i32.atomic.load (i32.const 0)))',
        "the wasm threads proposal",
    ),
    "64-bit table": ("(table i64 1 funcref)", "the wasm memory64 proposal"),
    "wide arithmetic": (
        '(func (export "g") (param i64 i64 i64 i64) (result i64 i64)'
        "  (i64.add128 (local.get 0) (local.get 1) (local.get 2) (local.get 3)))",
        "the wasm wide-arithmetic proposal",
    ),
    "stack switching": ("(type $f (func)) (type $k (cont $f))", "the wasm stack-switching proposal"),
}


@pytest.mark.parametrize("fuel", [None, 1_000_000], ids=["plain", "fuel"])
@pytest.mark.parametrize("feature", list(REFUSED))
def test_module_using_a_proposal_sqlwasm_does_not_enable_is_refused(
    build: Build, keypair: KeyPair, feature: str, fuel: int | None
) -> None:
    wat, words = REFUSED[feature]
    data = wasm_module(MEMORY + wat + ANSWER, manifest(fn("t_f", export="f"), name="t"), key=keypair.private)
    runtime = sqlwasm.Runtime(trusted_keys=[keypair.public], fuel=fuel)
    with pytest.raises(ManifestError) as info:
        runtime.load(data)
    assert str(info.value) == f"module 't' uses {words}, which sqlwasm does not enable"


def test_custom_page_size_is_refused(build: Build, runtime: sqlwasm.Runtime) -> None:
    data = build('(memory (export "memory") 1 (pagesize 1))' + ANSWER, manifest(fn("t_f", export="f"), name="t"))
    with pytest.raises(ManifestError, match="^module 't' uses the wasm custom-page-sizes proposal, which sqlwasm does not enable$"):
        runtime.load(data)


@pytest.mark.parametrize(
    "memory, proposal",
    [('(memory (export "memory") i64 1)', "the wasm memory64 proposal"), ('(memory (export "memory") 1 1 shared)', "the wasm threads proposal")],
    ids=["64-bit", "shared"],
)
def test_64_bit_and_shared_memories_are_refused(build: Build, runtime: sqlwasm.Runtime, memory: str, proposal: str) -> None:
    with pytest.raises(ManifestError) as info:
        runtime.load(build(memory + ANSWER, manifest(fn("t_f", export="f"), name="t")))
    assert str(info.value) == f"module 't' uses {proposal}, which sqlwasm does not enable"


def test_second_memory_is_refused_by_name(build: Build, runtime: sqlwasm.Runtime) -> None:
    """Multi-memory stays enabled so that sqlwasm's own check names the
    problem (and an imported second memory names its import, in
    test_capabilities.py and test_runtime.py)."""
    with pytest.raises(CapabilityError, match="^module 't' defines 2 memories; a module has exactly one$"):
        runtime.load(build('(memory (export "memory") 1) (memory 1)' + ANSWER, manifest(fn("t_f", export="f"), name="t")))


def test_an_invalid_module_is_still_just_invalid(build: Build, runtime: sqlwasm.Runtime) -> None:
    """A type error names no proposal."""
    data = build(MEMORY + '(func (export "f") (param i64) (result i64) (i32.const 1))', manifest(fn("t_f", export="f"), name="t"))
    with pytest.raises(ManifestError) as info:
        runtime.load(data)
    message = str(info.value)
    assert message.startswith("module 't' is not valid wasm: ") and "type mismatch" in message, message


# v128 at a module's boundary: wasmtime's C API aborts the process when asked
# the kind of a v128 value type, which describing a module's imports and
# exports does; found by the preinit fuzzer (its crash input is now a seed).
V128_AT_THE_BOUNDARY = [
    ('(import "env" "f" (func (param v128)))', "import env.f"),
    ('(import "env" "f" (func (result v128)))', "import env.f"),
    ('(import "env" "g" (global v128))', "import env.g"),
    ('(func (export "v") (param v128) (result v128) (local.get 0))', "export v"),
    ('(global (export "__stack_pointer") (mut v128) (v128.const i64x2 0 0))', "export __stack_pointer"),
]


@pytest.mark.parametrize("wat, where", V128_AT_THE_BOUNDARY, ids=[w for _, w in V128_AT_THE_BOUNDARY])
def test_v128_at_a_modules_boundary_is_refused_not_a_crash(build: Build, runtime: sqlwasm.Runtime, wat: str, where: str) -> None:
    data = build(wat + MEMORY + ANSWER, manifest(fn("t_f", export="f"), name="t"))
    with pytest.raises(ManifestError, match=f"^module 't' is not valid wasm: {where} has a v128 in its type"):
        runtime.load(data)


def test_v128_inside_a_modules_functions_is_fine(build: Build, connect: Connect) -> None:
    wat = MEMORY + """
  (global $lanes (mut v128) (v128.const i64x2 1 2))
  (func $sum (param v128) (result i64) (i64.add (i64x2.extract_lane 0 (local.get 0)) (i64x2.extract_lane 1 (local.get 0))))
  (func (export "f") (param i64) (result i64) (i64.add (local.get 0) (call $sum (global.get $lanes))))
"""
    conn = connect(build(wat, manifest(fn("t_f", export="f"), name="t")))
    assert conn.execute("SELECT t_f(4)").fetchall() == [(7,)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_the_boundary_reader_takes_any_bytes(tail: bytes) -> None:
    from sqlwasm._wasmfile import MAGIC, MalformedModule, v128_at_boundary

    for data in (tail, MAGIC + tail):
        try:
            found = v128_at_boundary(data)
        except MalformedModule:
            continue
        assert found is None or found.startswith(("import ", "export "))


# What the ABI keeps: SIMD128, bulk memory, sign extension, multi-value,
# mutable globals, saturating conversions, reference types (LLVM encodes
# call_indirect's table index the reference-types way).
KEPT = (
    "(global $calls (mut i32) (i32.const 0))"
    "(table 1 funcref) (elem (i32.const 0) $double)"
    "(func $double (param i64) (result i64) (i64.mul (local.get 0) (i64.const 2)))"
    "(func $pair (param i64) (result i64 i64) (local.get 0) (i64.const 1))"
    '(func (export "f") (param i64) (result i64)'
    "  (memory.fill (i32.const 0) (i32.const 0) (i32.const 16))"
    "  (global.set $calls (i32.add (global.get $calls) (i32.const 1)))"
    "  (i64.add"
    "    (i64.add"
    "      (i64.extend8_s (i64x2.extract_lane 1 (i64x2.add (i64x2.splat (local.get 0)) (i64x2.splat (local.get 0)))))"
    "      (i64.extend_i32_s (i32.trunc_sat_f64_s (f64.const 1e10))))"
    "    (i64.add"
    "      (i64.sub (call $pair (local.get 0)))"
    "      (call_indirect (param i64) (result i64) (local.get 0) (i32.const 0)))))"
)


def test_what_the_abi_needs_still_works(build: Build, connect: Connect) -> None:
    conn = connect(build(MEMORY + KEPT, manifest(fn("t_f", export="f"), name="t")))
    # extend8_s(2x) + saturated 2**31 - 1 + (x - 1) + double(x), for x = 3
    assert conn.execute("SELECT t_f(3)").fetchall() == [(6 + 2147483647 + 2 + 6,)]


# ------------------------------------------------------------ table ceiling

# Table elements live in host memory, outside memory_pages. What all of an
# instance's tables can ever hold is capped: a table grows to its declared
# maximum, or without one to the store's per-table limit (the ceiling).
TWO_TABLES = MEMORY + """
  (table $a 1 {a_max} funcref)
  (table $b 2 {b_max} funcref)
  (func (export "grow_a") (param i64) (result i64)
    (i64.extend_i32_s (table.grow $a (ref.null func) (i32.wrap_i64 (local.get 0)))))
  (func (export "grow_b") (param i64) (result i64)
    (i64.extend_i32_s (table.grow $b (ref.null func) (i32.wrap_i64 (local.get 0)))))
"""
TWO_TABLES_MANIFEST = manifest(fn("tt_grow_a", export="grow_a"), fn("tt_grow_b", export="grow_b"), name="tt")


@pytest.mark.parametrize(
    "tables, cause",
    [
        (
            f"(table {MAX_TABLE_ELEMENTS + 1} funcref)",
            f"starts with a table of {MAX_TABLE_ELEMENTS + 1} elements, more than the {MAX_TABLE_ELEMENTS} an instance may have",
        ),
        ("(table 4294967295 funcref)", f"starts with a table of 4294967295 elements, more than the {MAX_TABLE_ELEMENTS}"),
        (
            "(table 60000 funcref) (table 60000 funcref)",
            f"has 2 tables that can grow to {2 * MAX_TABLE_ELEMENTS} elements in all, more than the {MAX_TABLE_ELEMENTS}",
        ),
        (
            "(table 1 funcref) (table 0 funcref)",
            f"has 2 tables that can grow to {2 * MAX_TABLE_ELEMENTS} elements in all, more than the {MAX_TABLE_ELEMENTS}",
        ),
        (
            "(table 1 60000 funcref) (table 0 40001 funcref)",
            f"has 2 tables that can grow to 100001 elements in all, more than the {MAX_TABLE_ELEMENTS}",
        ),
        (
            "(table 0 0 funcref)" * 3 + "(table 0 funcref)" * 2,
            f"has 5 tables that can grow to {2 * MAX_TABLE_ELEMENTS} elements in all",
        ),
    ],
    ids=["one huge", "one enormous", "two large", "two growable", "maxima just over", "several"],
)
def test_tables_over_the_ceiling_are_refused_at_load(build: Build, runtime: sqlwasm.Runtime, tables: str, cause: str) -> None:
    data = build(MEMORY + tables + ANSWER, manifest(fn("t_f", export="f"), name="t"))
    with pytest.raises(CapabilityError) as info:
        runtime.load(data)
    message = str(info.value)
    assert message.startswith("module 't' ") and cause in message, message


def test_tables_within_the_ceiling_work(build: Build, connect: Connect) -> None:
    conn = connect(build(TWO_TABLES.format(a_max=60000, b_max=40000), TWO_TABLES_MANIFEST))
    # each table grows up to its own maximum, and not past it
    assert conn.execute("SELECT tt_grow_a(59999), tt_grow_a(1), tt_grow_b(39998), tt_grow_b(1)").fetchall() == [(1, -1, 2, -1)]
    single = connect(build(MEMORY + f"(table {MAX_TABLE_ELEMENTS} funcref)" + ANSWER, manifest(fn("s_f", export="f"), name="s")))
    assert single.execute("SELECT s_f(7)").fetchall() == [(7,)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 * MAX_TABLE_ELEMENTS), st.none() | st.integers(0, 2**32 - 1)), max_size=4))
def test_table_ceiling_over_declared_limits(session_key: Ed25519PrivateKey, tables: list[tuple[int, int | None]]) -> None:
    """Any mix of tables (LEB128 limits of every length) is accepted exactly
    when it cannot outgrow the ceiling: each starts within it, and the
    maxima, a missing one counting as the ceiling, add up to no more."""
    tables = [(low, None if high is None else max(low, high)) for low, high in tables]
    wat = MEMORY + "".join(f"(table {low} {'' if high is None else high} funcref)" for low, high in tables) + ANSWER
    data = wasm_module(wat, manifest(fn("t_f", export="f"), name="t"), key=session_key)
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    reach = sum(MAX_TABLE_ELEMENTS if high is None else min(high, MAX_TABLE_ELEMENTS) for _, high in tables)
    if all(low <= MAX_TABLE_ELEMENTS for low, _ in tables) and reach <= MAX_TABLE_ELEMENTS:
        assert runtime.load(data).name == "t"
    else:
        with pytest.raises(CapabilityError, match="^module 't' (starts with a table|has .* tables that can grow)"):
            runtime.load(data)


def test_a_table_encoding_sqlwasm_does_not_read_is_an_error_not_a_crash() -> None:
    """Tables of typed references never get past compiling; if one reached
    the table check, it would be refused, not misread."""
    data = wasmtime.wat2wasm("(module (type $t (func)) (table 1 (ref null $t)))")
    with pytest.raises(ManifestError, match="^module 't': table at offset .* uses an encoding sqlwasm does not read$"):
        _engine.check_tables(data, "t")
