"""Partial aggregates: NAME_partial(args) ships an aggregate's state as a
checked BLOB, NAME_merge(blob) folds such BLOBs and finishes as NAME would
(native/partial.c).

The guest is inline WAT: s(x) sums integers, with serialize/merge exports
that carry (sum, count) as 16 little-endian bytes; it counts live states, so
the tests can prove every state is released. Its misbehaviours are keyed on
the data: a state whose sum is -999 serializes outside memory (-998: to a
null pointer), a payload whose sum is 13 makes merge fail.
"""

from __future__ import annotations

import struct
from typing import Any

import apsw
import pytest
from conftest import Build, Connect, fn, manifest, one_error, wasm_module
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlwasm

SUM_WAT = """
(module
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 0))
  (global $live (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param i32) (result i32) (i32.const 65536))
  (func $state (param $h i32) (result i32) (i32.add (i32.const 1024) (i32.shl (local.get $h) (i32.const 4))))
  (func (export "live") (result i64) (i64.extend_i32_s (global.get $live)))
  (func (export "init") (result i32) (local $h i32)
    (local.set $h (i32.and (global.get $next) (i32.const 255)))
    (global.set $next (i32.add (global.get $next) (i32.const 1)))
    (global.set $live (i32.add (global.get $live) (i32.const 1)))
    (i64.store (call $state (local.get $h)) (i64.const 0))
    (i64.store offset=8 (call $state (local.get $h)) (i64.const 0))
    (local.get $h))
  (func (export "step") (param $h i32) (param $x i64)
    (i64.store (call $state (local.get $h)) (i64.add (i64.load (call $state (local.get $h))) (local.get $x)))
    (i64.store offset=8 (call $state (local.get $h))
      (i64.add (i64.load offset=8 (call $state (local.get $h))) (i64.const 1))))
  (func (export "final") (param $h i32) (result i64)
    (global.set $live (i32.sub (global.get $live) (i32.const 1)))
    (i64.load (call $state (local.get $h))))
  (func (export "drop") (param $h i32)
    (global.set $live (i32.sub (global.get $live) (i32.const 1))))
  (func (export "serialize") (param $h i32) (result i64)
    (if (i64.eq (i64.load (call $state (local.get $h))) (i64.const -998)) (then (return (i64.const 16))))
    (if (i64.eq (i64.load (call $state (local.get $h))) (i64.const -999))
      (then (return (i64.or (i64.shl (i64.const 0xfffff000) (i64.const 32)) (i64.const 16)))))
    (memory.copy (i32.const 8192) (call $state (local.get $h)) (i32.const 16))
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const 16)))
  (func (export "merge") (param $h i32) (param $p i32) (param $n i32) (result i32)
    (if (i32.ne (local.get $n) (i32.const 16)) (then (return (i32.const 1))))
    (if (i64.eq (i64.load (local.get $p)) (i64.const 13)) (then (return (i32.const 7))))
    (i64.store (call $state (local.get $h)) (i64.add (i64.load (call $state (local.get $h))) (i64.load (local.get $p))))
    (i64.store offset=8 (call $state (local.get $h))
      (i64.add (i64.load offset=8 (call $state (local.get $h))) (i64.load offset=8 (local.get $p))))
    (i32.const 0))
)
"""

ROLES = {"init": "init", "step": "step", "final": "final", "drop": "drop", "serialize": "serialize", "merge": "merge"}


def sum_function(name: str = "s", **extra: Any) -> dict[str, Any]:
    return fn(name, kind="aggregate", exports=dict(ROLES), **extra)


def sum_module(name: str = "agg", version: str = "1.0.0", functions: tuple[str, ...] = ("s",)) -> dict[str, Any]:
    return manifest(*(sum_function(f) for f in functions), fn("live", args=[]), name=name, version=version)


@pytest.fixture
def conn(build: Build, connect: Connect) -> apsw.Connection:
    db = connect(build(SUM_WAT, sum_module()))
    db.execute("CREATE TABLE t(g TEXT, x INTEGER, part INTEGER)")
    db.executemany(
        "INSERT INTO t VALUES (?, ?, ?)", [("a", 1, 0), ("a", 2, 1), ("b", 5, 0), ("b", 7, 2), ("a", 11, 2)]
    )
    return db


def live(db: apsw.Connection) -> int:
    value: int = db.execute("SELECT live()").fetchall()[0][0]
    return value


def partial_of(db: apsw.Connection, where: str = "1") -> bytes:
    value: bytes = db.execute(f"SELECT s_partial(x) FROM t WHERE {where}").fetchall()[0][0]
    return value


def test_merge_of_partials_equals_the_aggregate(conn: apsw.Connection) -> None:
    merged = conn.execute(
        "SELECT s_merge(p) FROM (SELECT s_partial(x) AS p FROM t GROUP BY part)"
    ).fetchall()
    assert merged == conn.execute("SELECT s(x) FROM t").fetchall() == [(26,)]
    assert live(conn) == 0


def test_group_by_over_shards(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE t2 AS SELECT g, x * 10 AS x FROM t")
    rows = conn.execute(
        "SELECT g, s_merge(p) FROM (SELECT g, s_partial(x) AS p FROM t GROUP BY g "
        "UNION ALL SELECT g, s_partial(x) FROM t2 GROUP BY g) GROUP BY g ORDER BY g"
    ).fetchall()
    assert rows == conn.execute(
        "SELECT g, s(x) FROM (SELECT g, x FROM t UNION ALL SELECT g, x FROM t2) GROUP BY g ORDER BY g"
    ).fetchall()
    assert rows == [("a", 154), ("b", 132)]
    assert live(conn) == 0


def test_empty_groups(conn: apsw.Connection) -> None:
    empty = partial_of(conn, "0")
    assert conn.execute("SELECT s_merge(?)", (empty,)).fetchall() == conn.execute(
        "SELECT s(x) FROM t WHERE 0"
    ).fetchall()
    # no partials at all: init, then final
    assert conn.execute("SELECT s_merge(p) FROM (SELECT NULL AS p) WHERE 0").fetchall() == [(0,)]
    assert conn.execute("SELECT s_merge(NULL)").fetchall() == [(0,)]  # NULL partials are skipped
    assert live(conn) == 0


def test_the_envelope_names_module_version_and_function(conn: apsw.Connection) -> None:
    blob = partial_of(conn)
    assert blob.startswith(b"SWPART\x00\x01")
    assert b"agg" in blob and b"1.0.0" in blob and b"s" in blob
    assert struct.pack("<qq", 26, 5) in blob  # the guest's own bytes, as serialize gave them


@pytest.mark.parametrize(
    ("tamper", "cause"),
    [
        (lambda b: b[:-1], "the partial is corrupted or truncated (checksum mismatch)"),
        (lambda b: b[:20], "the partial is corrupted or truncated (checksum mismatch)"),
        (lambda b: b[:-6] + bytes([b[-6] ^ 1]) + b[-5:], "the partial is corrupted or truncated (checksum mismatch)"),
        (lambda b: b[:8] + bytes([b[8] ^ 0x40]) + b[9:], "the partial is corrupted or truncated (checksum mismatch)"),
        (lambda b: b"XX" + b[2:], "the argument is not a partial (make it with s_partial)"),
        (lambda b: b"", "the argument is not a partial"),
    ],
)
def test_tampered_partials_are_refused(conn: apsw.Connection, tamper: Any, cause: str) -> None:
    blob = tamper(partial_of(conn))
    assert f"agg.s_merge: {cause}" in one_error(conn, "SELECT s_merge(?)", blob)
    assert live(conn) == 0


def test_not_a_blob(conn: apsw.Connection) -> None:
    message = one_error(conn, "SELECT s_merge('x')")
    assert "agg.s_merge: the argument is TEXT, not a partial BLOB from s_partial" in message


def test_partials_of_another_module_version_or_function_are_refused(build: Build, connect: Connect) -> None:
    mine = connect(build(SUM_WAT, sum_module(functions=("s", "s2"))))
    other_module = connect(build(SUM_WAT, sum_module(name="other")))
    other_version = connect(build(SUM_WAT, sum_module(version="1.1.0")))
    for db in (mine, other_module, other_version):
        db.execute("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2)")
    s2 = mine.execute("SELECT s2_partial(x) FROM t").fetchall()[0][0]
    assert (
        "agg.s_merge: the partial is of module 'agg' 1.0.0, function s2; this is module 'agg' 1.0.0, function s"
        in one_error(mine, "SELECT s_merge(?)", s2)
    )
    foreign = other_module.execute("SELECT s_partial(x) FROM t").fetchall()[0][0]
    assert "the partial is of module 'other' 1.0.0, function s; this is module 'agg' 1.0.0" in one_error(
        mine, "SELECT s_merge(?)", foreign
    )
    newer = other_version.execute("SELECT s_partial(x) FROM t").fetchall()[0][0]
    assert "the partial is of module 'agg' 1.1.0, function s; this is module 'agg' 1.0.0" in one_error(
        mine, "SELECT s_merge(?)", newer
    )
    assert mine.execute("SELECT s_merge(?)", (mine.execute("SELECT s_partial(x) FROM t").fetchall()[0][0],)).fetchall() == [
        (3,)
    ]


def test_a_failing_merge_fails_the_statement(conn: apsw.Connection) -> None:
    conn.execute("INSERT INTO t VALUES ('c', 13, 9)")
    blob = partial_of(conn, "part = 9")
    assert "agg.s_merge: merge failed (returned 7)" in one_error(conn, "SELECT s_merge(?)", blob)
    assert live(conn) == 0


def test_serialize_outside_memory_fails_and_releases(conn: apsw.Connection) -> None:
    conn.execute("INSERT INTO t VALUES ('c', -999, 9)")
    message = one_error(conn, "SELECT s_partial(x) FROM t WHERE part = 9")
    assert "agg.s_partial: serialize's result (ptr 4294963200, len 16) lies outside" in message
    assert live(conn) == 0


def test_serialize_returning_null_fails_and_releases(conn: apsw.Connection) -> None:
    conn.execute("INSERT INTO t VALUES ('c', -998, 9)")
    message = one_error(conn, "SELECT s_partial(x) FROM t WHERE part = 9")
    assert "agg.s_partial: serialize failed (it returned a null pointer)" in message
    assert live(conn) == 0


def test_partial_functions_follow_the_install_rules(build: Build, runtime: sqlwasm.Runtime) -> None:
    db = apsw.Connection(":memory:")
    db.create_scalar_function("s_merge", lambda x: x)
    module = runtime.load(build(SUM_WAT, sum_module()))
    with pytest.raises(sqlwasm.ManifestError, match="already has functions named s_merge"):
        runtime.install(db, module)
    runtime.install(db, module, replace=True)
    assert db.execute("SELECT s_merge(p) FROM (SELECT s_partial(4) AS p)").fetchall() == [(4,)]
    db.close()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"exports": {**ROLES, "merge": None}}, "'serialize' and 'merge' come together"),
        ({"exports": {k: v for k, v in ROLES.items() if k != "serialize"}}, "'serialize' and 'merge' come together"),
        ({"name": "s" * 57}, "leaves room for the suffixes"),
    ],
)
def test_manifest_rules(change: dict[str, Any], problem: str) -> None:
    function = sum_function(**{k: v for k, v in change.items() if k != "exports"})
    if "exports" in change:
        function["exports"] = {k: v for k, v in change["exports"].items() if v is not None}
    with pytest.raises(sqlwasm.ManifestError, match=problem):
        sqlwasm.Runtime(allow_unsigned=True).load(wasm_module(SUM_WAT, manifest(function, name="agg")))


def test_a_derived_name_may_not_be_declared_again() -> None:
    from sqlwasm._manifest import parse_manifest

    with pytest.raises(sqlwasm.ManifestError, match="function 's_partial' is declared twice"):
        parse_manifest(manifest(sum_function(), fn("s_partial"), name="agg"))


def test_export_types_are_checked() -> None:
    wat = SUM_WAT.replace('(func (export "merge") (param $h i32) (param $p i32) (param $n i32) (result i32)',
                          '(func (export "merge") (param $h i32) (param $p i32) (param $n i32) (result i64)')
    wat = wat.replace("(return (i32.const 1))", "(return (i64.const 1))").replace(
        "(return (i32.const 7))", "(return (i64.const 7))").replace("    (i32.const 0))\n)", "    (i64.const 0))\n)")
    with pytest.raises(sqlwasm.ManifestError, match="merge export 'merge' has type"):
        sqlwasm.Runtime(allow_unsigned=True).load(wasm_module(wat, sum_module()))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 5)), max_size=60),
)
def test_any_split_merges_to_the_whole(rows: list[tuple[int, int]]) -> None:
    data = wasm_module(SUM_WAT, sum_module())
    with sqlwasm.connect(":memory:", [data], allow_unsigned=True) as db:
        db.execute("CREATE TABLE t(x INTEGER, part INTEGER)")
        db.executemany("INSERT INTO t VALUES (?, ?)", rows)
        parts = " UNION ALL ".join(f"SELECT s_partial(x) AS p FROM t WHERE part = {k}" for k in range(6))
        assert db.execute(f"SELECT s_merge(p) FROM ({parts})").fetchall() == [(sum(x for x, _ in rows),)]
        assert live(db) == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 120), st.integers(0, 255))
def test_arbitrary_and_mutated_bytes_never_reach_the_guest_unchecked(junk: bytes, at: int, flip: int) -> None:
    data = wasm_module(SUM_WAT, sum_module())
    with sqlwasm.connect(":memory:", [data], allow_unsigned=True) as db:
        good = db.execute("SELECT s_partial(7)").fetchall()[0][0]
        mutated = bytearray(good)
        mutated[at % len(mutated)] ^= flip
        for blob in (junk, bytes(mutated), good + junk, good[: at % len(good)]):
            try:
                result = db.execute("SELECT s_merge(?)", (blob,)).fetchall()
            except apsw.SQLError as exc:
                assert "agg.s_merge: " in str(exc)
            else:
                assert blob == good and result == [(7,)]
        assert live(db) == 0
