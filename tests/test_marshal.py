"""Values crossing the host/guest boundary (native/sqlwasm_native.c):
sw_call_raw, sw_call_msgpack and sw_set_result, driven by hostile guests.

Every failure must be a clean apsw.SQLError naming module.function and the
cause, with the process alive and the connection still usable.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Iterator

import apsw
import msgpack
import pytest
from conftest import MEMORY, Build, Connect, fn, manifest, one_error, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PAGE = 65536


def wat_bytes(data: bytes) -> str:
    """A WAT string literal holding exactly these bytes."""
    return '"' + "".join(f"\\{b:02x}" for b in data) + '"'


def packed(ptr: int, length: int) -> str:
    """The i64 a msgpack export returns: ptr in the high half, len in the low."""
    return f"0x{(ptr << 32) | length:016x}"


# ------------------------------------------------- fixed-result guests

RESULT_AT = 1024


def fixed_guest(
    result: bytes | None = None,
    *,
    ptr: int | None = None,
    length: int | None = None,
    alloc: str = "i32.const 64",
    returns: str = "any",
) -> tuple[str, dict[str, Any]]:
    """WAT + manifest for module 'h' with one msgpack function h_f() whose
    export ignores its input and returns (ptr, length); `result` is placed at
    RESULT_AT by a data segment (and is the default ptr/length). A well-behaved
    raw h_ok(x) = x + 1 shows the instance still works afterwards."""
    data = result or b""
    ptr = RESULT_AT if ptr is None else ptr
    length = len(data) if length is None else length
    segment = f"(data (i32.const {RESULT_AT}) {wat_bytes(data)})" if data else ""
    wat = MEMORY + f"""
      {segment}
      (func (export "sqlwasm_alloc") (param i32) (result i32) {alloc})
      (func (export "f") (param i32 i32) (result i64) i64.const {packed(ptr, length)})
      (func (export "ok") (param i64) (result i64) (i64.add (local.get 0) (i64.const 1)))
    """
    return wat, manifest(
        fn("h_f", export="f", abi="msgpack", args=[], varargs="any", returns=returns),
        fn("h_ok", export="ok"),
        name="h",
    )


def hostile(build: Build, connect: Connect, result: bytes | None = None, **options: Any) -> apsw.Connection:
    wat, m = fixed_guest(result, **options)
    return connect(build(wat, m))


def guest_error(conn: apsw.Connection, *fragments: str, sql: str = "SELECT h_f()") -> str:
    """The message of the SQLError that sql raises; checks it names h.h_f and
    every fragment, and that the guest still answers afterwards."""
    message = one_error(conn, sql)
    assert conn.execute("SELECT h_ok(41)").fetchall() == [(42,)]
    assert "h.h_f" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ----------------------------------------------- result pointer and length


def test_fixed_guest_sanity(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, msgpack.packb("hello"))
    assert conn.execute("SELECT h_f(), h_f(1, 'x', 2.5, x'00')").fetchall() == [("hello", "hello")]


@pytest.mark.parametrize(
    "ptr, length",
    [
        (PAGE - 4, 5),  # one byte past the end
        (PAGE, 1),  # starts at the end
        (PAGE + 100, 0),  # empty, but out of bounds
        (0xFFFFFFF0, 0x20),  # ptr + len wraps a u32
        (0xFFFFFFFF, 1),
        (0xFFFFFFFF, 0),
        (0x80000000, 10),  # negative as i32
    ],
)
def test_result_outside_memory(build: Build, connect: Connect, ptr: int, length: int) -> None:
    conn = hostile(build, connect, ptr=ptr, length=length)
    guest_error(conn, "lies outside the 65536-byte memory", f"ptr {ptr}", f"len {length}")


def test_result_ending_exactly_at_memory_end_is_fine(build: Build, connect: Connect) -> None:
    wat = MEMORY + f"""
      (data (i32.const {PAGE - 1}) "\\2a")
      (func (export "sqlwasm_alloc") (param i32) (result i32) i32.const 64)
      (func (export "f") (param i32 i32) (result i64) i64.const {packed(PAGE - 1, 1)})
    """
    conn = connect(build(wat, manifest(fn("h_f", export="f", abi="msgpack", args=[], returns="any"), name="h")))
    assert conn.execute("SELECT h_f()").fetchall() == [(42,)]


def test_result_over_the_cap(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], max_result_bytes=16)
    fits = msgpack.packb("x" * 15)  # fixstr: 16 bytes
    too_big = msgpack.packb("x" * 16)  # fixstr: 17 bytes
    conn = runtime.connect(":memory:", [build(*fixed_guest(fits))])
    assert conn.execute("SELECT h_f()").fetchall() == [("x" * 15,)]
    conn.close()
    conn = runtime.connect(":memory:", [build(*fixed_guest(too_big))])
    guest_error(conn, "result is 17 bytes, over the 16-byte result limit")
    conn.close()


@pytest.mark.parametrize("length", [16 * 1024 * 1024 + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_huge_length_hits_default_cap(build: Build, connect: Connect, length: int) -> None:
    conn = hostile(build, connect, ptr=RESULT_AT, length=length)
    guest_error(conn, f"result is {length} bytes, over the {16 * 1024 * 1024}-byte result limit")


def test_huge_length_under_a_huge_cap_is_still_bounds_checked(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], max_result_bytes=0x7FFFFFFF)
    conn = runtime.connect(":memory:", [build(*fixed_guest(ptr=0xFFFFFFFF, length=0x7FFFFFFF))])
    guest_error(conn, "lies outside")
    conn.close()


@pytest.mark.parametrize("cap", [0, -1, 2**31])
def test_max_result_bytes_validated(cap: int) -> None:
    with pytest.raises(ValueError, match="max_result_bytes"):
        sqlwasm.Runtime(max_result_bytes=cap)


def test_empty_result_is_truncated(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, ptr=RESULT_AT, length=0)
    guest_error(conn, "result msgpack is truncated")


# -------------------------------------------------------- sqlwasm_alloc


# The host asks for at least 256 bytes (docs/abi.md), so a buffer must have
# room for 256 even when the row is 3 bytes.
@pytest.mark.parametrize(
    "alloc, shown",
    [
        ("i32.const 0", "returned 0"),
        (f"i32.const {PAGE}", f"returned {PAGE}"),
        (f"i32.const {PAGE - 1}", f"returned {PAGE - 1}"),
        (f"i32.const {PAGE - 255}", f"returned {PAGE - 255}"),
        ("i32.const -1", f"returned {2**32 - 1}"),
        ("i32.const -2147483648", f"returned {2**31}"),
    ],
)
def test_alloc_returns_bad_pointer(build: Build, connect: Connect, alloc: str, shown: str) -> None:
    conn = hostile(build, connect, msgpack.packb(1), alloc=alloc)
    guest_error(conn, "sqlwasm_alloc(256)", shown, "outside the 65536-byte memory", sql="SELECT h_f(1, 2)")
    # Refused buffers are not kept: the next call asks again and fails again.
    guest_error(conn, "sqlwasm_alloc(256)", shown, sql="SELECT h_f(1, 2)")


def test_alloc_buffer_ending_at_memory_end_is_fine(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, msgpack.packb(1), alloc=f"i32.const {PAGE - 256}")
    assert conn.execute("SELECT h_f(1, 2)").fetchall() == [(1,)]


def test_alloc_traps(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, msgpack.packb(1), alloc="unreachable")
    guest_error(conn, "trap in sqlwasm_alloc", "unreachable")


# A guest that counts its sqlwasm_alloc calls and remembers the last size
# asked for; h_len returns the row length it was called with.
COUNTING_WAT = MEMORY + """
  (global $calls (mut i64) (i64.const 0))
  (global $asked (mut i64) (i64.const 0))
  (global $fail_first (mut i32) (i32.const 1))
  (func (export "sqlwasm_alloc") (param i32) (result i32)
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    (global.set $asked (i64.extend_i32_u (local.get 0)))
    (if (global.get $fail_first) (then (global.set $fail_first (i32.const 0)) (return (i32.const 0))))
    (i32.const 4096))
  (func (export "calls") (param i64) (result i64) (global.get $calls))
  (func (export "asked") (param i64) (result i64) (global.get $asked))
  ;; result: the row length as a uint32 msgpack int, written at 64
  (func (export "len") (param i32 i32) (result i64)
    (i32.store8 (i32.const 64) (i32.const 0xce))
    (i32.store (i32.const 65)
      (i32.or (i32.or
        (i32.shl (i32.and (local.get 1) (i32.const 0xff)) (i32.const 24))
        (i32.shl (i32.and (local.get 1) (i32.const 0xff00)) (i32.const 8)))
        (i32.or
          (i32.and (i32.shr_u (local.get 1) (i32.const 8)) (i32.const 0xff00))
          (i32.shr_u (local.get 1) (i32.const 24)))))
    (i64.const 0x0000004000000005))
"""
COUNTING_MANIFEST = manifest(
    fn("h_calls", export="calls"),
    fn("h_asked", export="asked"),
    fn("h_len", export="len", abi="msgpack", args=[], varargs="any", returns="integer"),
    name="h",
)


def test_alloc_is_asked_again_after_a_refusal_then_the_buffer_is_reused(build: Build, connect: Connect) -> None:
    conn = connect(build(COUNTING_WAT, COUNTING_MANIFEST))
    assert "h.h_len: sqlwasm_alloc(256) returned 0" in one_error(conn, "SELECT h_len(1)")
    assert conn.execute("SELECT h_calls(0), h_asked(0)").fetchall() == [(1, 256)]
    # Now it succeeds, once, and small rows keep using that buffer.
    rows = conn.execute("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100) SELECT h_len(x, 'ab') FROM n").fetchall()
    assert rows == [(5,)] * 100  # 0x92, fixint, fixstr "ab"
    assert conn.execute("SELECT h_calls(0), h_asked(0)").fetchall() == [(2, 256)]
    # A row too big for the buffer asks for its exact size...
    big = "z" * 1000
    assert conn.execute("SELECT h_len(?)", (big,)).fetchall() == [(1 + 3 + 1000,)]
    assert conn.execute("SELECT h_calls(0), h_asked(0)").fetchall() == [(3, 1004)]
    # ...and smaller rows after it fit in the bigger buffer.
    assert conn.execute("SELECT h_len(?), h_len(1)", ("z" * 900,)).fetchall() == [(904, 2)]
    assert conn.execute("SELECT h_calls(0)").fetchall() == [(3,)]


# -------------------------------------------------- what the bytes say


@pytest.mark.parametrize(
    "result, cause",
    [
        (b"\xc1", "unsupported msgpack type 0xc1"),  # never used
        (b"\x91\x01", "unsupported msgpack type 0x91"),  # fixarray
        (b"\xdc\x00\x01\x01", "unsupported msgpack type 0xdc"),  # array16
        (b"\xdd\x00\x00\x00\x00", "unsupported msgpack type 0xdd"),  # array32
        (b"\xd4\x01\x00", "unsupported msgpack type 0xd4"),  # fixext1
        (b"\xc7\x01\x05\x00", "unsupported msgpack type 0xc7"),  # ext8
        (b"\xd6\xff\x00\x00\x00\x00", "unsupported msgpack type 0xd6"),  # timestamp32
        (b"\x80", "unsupported msgpack type 0x80"),  # empty map
        (b"\x82\xa5error\xa1x\xa1y\xa1z", "unsupported msgpack type 0x82"),  # two-entry map
        (b"\x81\xa3err\xa1x", 'result map must be {"error": text}'),
        (b"\x81\xa5error\x01", 'result map must be {"error": text}'),
        (b"\x81\x01\xa1x", 'result map must be {"error": text}'),
        (b"\xde\x00\x02\xa5error\xa1x\xa1y\xa1z", 'result map must be {"error": text}'),
        (b"\xdf\x00\x00\x00\x00", 'result map must be {"error": text}'),
        (b"\xd9\x0aabc", "result msgpack is truncated"),  # str8 claims 10, has 3
        (b"\xdb\xff\xff\xff\xffabc", "result msgpack is truncated"),  # str32 claims 4 GiB
        (b"\xa5ab", "result msgpack is truncated"),  # fixstr claims 5
        (b"\xc4\x05ab", "result msgpack is truncated"),  # bin8
        (b"\xc6\xff\xff\xff\xff", "result msgpack is truncated"),  # bin32 claims 4 GiB
        (b"\xce\x00\x01", "result msgpack is truncated"),  # uint32, 2 of 4 bytes
        (b"\xd3\x00", "result msgpack is truncated"),  # int64
        (b"\xcb\x00\x00\x00\x00", "result msgpack is truncated"),  # float64, 4 of 8
        (b"\xca\x00", "result msgpack is truncated"),  # float32
        (b"\xde\x00", "result msgpack is truncated"),  # map16 count cut short
        (b"\x01\x02", "1 trailing bytes after the msgpack value"),
        (b"\xc0\xc0\xc0", "2 trailing bytes after the msgpack value"),
        (b"\xa1x\x00", "1 trailing bytes after the msgpack value"),
        (b"\x81\xa5error\xa1x\x00", "1 trailing bytes after the msgpack value"),
        (b"\xcf\x80\x00\x00\x00\x00\x00\x00\x00", f"result integer {2**63} is out of the int64 range"),
        (b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", f"result integer {2**64 - 1} is out of the int64 range"),
        (b"\xa2\xc3\x28", "result text is not valid UTF-8"),  # bad continuation
        (b"\xa2\xc0\x80", "result text is not valid UTF-8"),  # overlong NUL
        (b"\xa3\xed\xa0\x80", "result text is not valid UTF-8"),  # surrogate
        (b"\xa4\xf4\x90\x80\x80", "result text is not valid UTF-8"),  # above U+10FFFF
        (b"\xa1\xff", "result text is not valid UTF-8"),
        (b"\xa1\xe2", "result text is not valid UTF-8"),  # cut sequence
        (b"\x81\xa5error\xa1\xff", "guest error (message is not valid UTF-8)"),
    ],
)
def test_bad_result_bytes(build: Build, connect: Connect, result: bytes, cause: str) -> None:
    conn = hostile(build, connect, result)
    guest_error(conn, cause)


@pytest.mark.parametrize(
    "result, value",
    [
        (b"\xc0", None),
        (b"\xc2", 0),
        (b"\xc3", 1),
        (b"\x7f", 127),
        (b"\xe0", -32),
        (b"\xff", -1),
        (b"\xcc\xff", 255),
        (b"\xcd\xff\xff", 65535),
        (b"\xce\xff\xff\xff\xff", 2**32 - 1),
        (b"\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", INT64_MAX),
        (b"\xd0\x80", -128),
        (b"\xd1\x80\x00", -32768),
        (b"\xd2\x80\x00\x00\x00", -(2**31)),
        (b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", INT64_MIN),
        (b"\xd0\x7f", 127),
        (b"\xca" + struct.pack(">f", 1.5), 1.5),
        (b"\xcb" + struct.pack(">d", -2.25), -2.25),
        (b"\xcb" + struct.pack(">d", math.inf), math.inf),
        (b"\xa0", ""),
        (b"\xa3\xe2\x82\xac", "\u20ac"),
        (b"\xa4\xf0\x9f\x98\x80", "\U0001f600"),
        (b"\xd9\x03abc", "abc"),
        (b"\xda\x00\x03abc", "abc"),
        (b"\xdb\x00\x00\x00\x03abc", "abc"),
        (b"\xa3a\x00b", "a\x00b"),
        (b"\xc4\x00", b""),
        (b"\xc4\x03\x00\x01\x02", b"\x00\x01\x02"),
        (b"\xc5\x00\x01z", b"z"),
        (b"\xc6\x00\x00\x00\x01z", b"z"),
    ],
)
def test_good_result_bytes(build: Build, connect: Connect, result: bytes, value: Any) -> None:
    conn = hostile(build, connect, result)
    (got,) = conn.execute("SELECT h_f()").fetchone()
    assert got == value and type(got) is type(value)


def test_nan_result_becomes_null(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, b"\xcb" + struct.pack(">d", math.nan))
    assert conn.execute("SELECT h_f()").fetchall() == [(None,)]


@pytest.mark.parametrize("message", ["msg", "no such thing", "100% %s %n %x", "caf\u00e9", "x" * 31, "y" * 300])
def test_guest_error_map_surfaces_as_sql_error(build: Build, connect: Connect, message: str) -> None:
    conn = hostile(build, connect, msgpack.packb({"error": message}))
    text = guest_error(conn)
    assert f"h.h_f: {message}" in text


def test_guest_error_map16_form(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, b"\xde\x00\x01\xa5error\xd9\x03bad")
    assert "h.h_f: bad" in guest_error(conn)


def test_long_guest_error_is_cut_not_crashed(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, msgpack.packb({"error": "z" * 60_000}))
    text = guest_error(conn)
    assert text.count("z") <= 600 and "zzzz" in text


def test_guest_error_with_nul_and_split_utf8(build: Build, connect: Connect) -> None:
    conn = hostile(build, connect, msgpack.packb({"error": "bad\x00hidden"}))
    assert "h.h_f: bad" in guest_error(conn)
    # 1 + 2*300 bytes: the 500-byte cut falls inside a two-byte character.
    conn = hostile(build, connect, msgpack.packb({"error": "x" + "\u00e9" * 300}))
    assert "h.h_f: x\u00e9" in guest_error(conn)


@pytest.mark.parametrize(
    "returns, result, cause",
    [
        ("integer", msgpack.packb("7"), "result is TEXT, declared integer"),
        ("integer", msgpack.packb(1.5), "result is REAL, declared integer"),
        ("integer", msgpack.packb(b"7"), "result is BLOB, declared integer"),
        ("real", msgpack.packb("7"), "result is TEXT, declared real"),
        ("text", msgpack.packb(7), "result is INTEGER, declared text"),
        ("text", msgpack.packb(b"7"), "result is BLOB, declared text"),
        ("blob", msgpack.packb("7"), "result is TEXT, declared blob"),
        ("blob", msgpack.packb(7.0), "result is REAL, declared blob"),
    ],
)
def test_result_of_the_wrong_declared_type(build: Build, connect: Connect, returns: str, result: bytes, cause: str) -> None:
    conn = hostile(build, connect, result, returns=returns)
    guest_error(conn, cause)


@pytest.mark.parametrize(
    "returns, result, value",
    [
        ("real", msgpack.packb(7), 7.0),  # integer widened to real
        ("real", msgpack.packb(True), 1.0),
        ("integer", msgpack.packb(None), None),
        ("text", msgpack.packb(None), None),
        ("blob", msgpack.packb(None), None),
        ("real", msgpack.packb(None), None),
        ("integer", msgpack.packb(False), 0),
    ],
)
def test_result_converted_to_declared_type(build: Build, connect: Connect, returns: str, result: bytes, value: Any) -> None:
    conn = hostile(build, connect, result, returns=returns)
    (got,) = conn.execute("SELECT h_f()").fetchone()
    assert got == value and type(got) is type(value)


# --------------------------------------- the reflector: SQL bytes as result

# Input: fixarray(1) [bin8|bin16|bin32 payload]; output: the payload itself,
# so a blob passed from SQL is decoded as the result. sqlwasm_alloc grows
# memory as needed and always answers 1024.
REFLECTOR_WAT = MEMORY + """
  (func (export "sqlwasm_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub
        (i32.shr_u (i32.add (i32.add (local.get $n) (i32.const 1024)) (i32.const 65535)) (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
    (i32.const 1024))
  (func $header (param $tag i32) (result i32)
    (if (result i32) (i32.eq (local.get $tag) (i32.const 0xc4))
      (then (i32.const 2))
      (else (if (result i32) (i32.eq (local.get $tag) (i32.const 0xc5))
        (then (i32.const 3))
        (else (i32.const 5))))))
  (func (export "reflect") (param $p i32) (param $n i32) (result i64)
    (local $skip i32)
    (local.set $skip
      (i32.add (i32.const 1) (call $header (i32.load8_u (i32.add (local.get $p) (i32.const 1))))))
    (i64.or
      (i64.shl (i64.extend_i32_u (i32.add (local.get $p) (local.get $skip))) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $n) (local.get $skip)))))
  (func (export "echo") (param $p i32) (param $n i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (i32.add (local.get $p) (i32.const 1))) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $n) (i32.const 1)))))
"""
REFLECTOR_MANIFEST = manifest(
    fn("h_reflect", export="reflect", abi="msgpack", args=["blob"], returns="any"),
    fn("h_echo", export="echo", abi="msgpack", args=["any"], returns="any", null="call"),
    name="h",
)


@pytest.fixture(scope="module")
def reflector(session_key: Ed25519PrivateKey) -> Iterator[apsw.Connection]:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = runtime.connect(":memory:", [wasm_module(REFLECTOR_WAT, REFLECTOR_MANIFEST, key=session_key)])
    yield conn
    conn.close()


def reflect(conn: apsw.Connection, data: bytes) -> Any:
    return conn.execute("SELECT h_reflect(?)", (data,)).fetchone()[0]


def test_reflector_sanity(reflector: apsw.Connection) -> None:
    assert reflect(reflector, msgpack.packb("hi")) == "hi"
    assert reflect(reflector, msgpack.packb(-5)) == -5
    message = one_error(reflector, "SELECT h_reflect(?)", b"\xc1")
    assert "h.h_reflect: result has unsupported msgpack type 0xc1" in message


def test_large_result_after_memory_grow(reflector: apsw.Connection) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: alloc must grow memory first
    assert reflect(reflector, msgpack.packb(big)) == big
    text = "\u00e9" * 300_000
    assert reflect(reflector, msgpack.packb(text)) == text


def _expected(data: bytes) -> tuple[str, Any]:
    """What sqlwasm should make of result bytes, using the msgpack library as
    the reference decoder: ("value", v) or ("error", fragment)."""
    trailing = False
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except msgpack.ExtraData as extra:
        value, trailing = extra.unpacked, True
    except Exception:  # truncated, invalid UTF-8, reserved byte...
        return "error", ""
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return "error", "out of the int64 range"
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("error"), str):
        return "error", "trailing bytes" if trailing else value["error"].split("\x00")[0][:100]
    if value is not None and not isinstance(value, (bool, int, float, str, bytes)):
        return "error", ""  # arrays, ext, other maps
    if trailing:
        return "error", "trailing bytes"
    if isinstance(value, bool):
        return "value", int(value)
    if isinstance(value, float) and math.isnan(value):
        return "value", None
    return "value", value


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.floats(width=32)
    | st.text(max_size=40)
    | st.binary(max_size=300)
)
_values = st.recursive(
    _scalars | st.builds(lambda m: {"error": m}, st.text(max_size=40)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=2),
    max_leaves=4,
)


def _pack(value: Any) -> bytes:
    """msgpack bytes; floats that fit exactly in 32 bits as float 32."""
    if isinstance(value, float) and not math.isnan(value):
        try:
            if struct.unpack(">f", struct.pack(">f", value))[0] == value:
                return msgpack.packb(value, use_single_float=True)
        except OverflowError:
            pass
    return msgpack.packb(value)


_result_bytes = st.one_of(
    st.builds(_pack, _values),
    st.binary(max_size=40),
    st.builds(lambda v, extra: _pack(v) + extra, _scalars, st.binary(min_size=1, max_size=4)),
    st.builds(lambda v, cut: _pack(v)[: max(0, len(_pack(v)) - cut)], _scalars, st.integers(1, 9)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_result_bytes)
def test_any_result_bytes_decode_like_msgpack_or_fail_cleanly(reflector: apsw.Connection, data: bytes) -> None:
    kind, expected = _expected(data)
    if kind == "value":
        got = reflect(reflector, data)
        assert got == expected and type(got) is type(expected), (data, got, expected)
    else:
        message = one_error(reflector, "SELECT h_reflect(?)", data)
        assert message.startswith("h.h_reflect: ") or "h.h_reflect: " in message
        assert expected in message, (data, message)


# --------------------------------------------------- arguments, msgpack ABI


_sql_values = (
    st.none()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=2000)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_sql_values)
def test_any_value_round_trips_through_msgpack(reflector: apsw.Connection, value: Any) -> None:
    (got,) = reflector.execute("SELECT h_echo(?)", (value,)).fetchone()
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("value", [INT64_MIN, INT64_MIN + 1, -(2**31) - 1, -129, -33, -32, 127, 128, 2**16, 2**32, INT64_MAX])
def test_integer_encoding_boundaries(reflector: apsw.Connection, value: int) -> None:
    assert reflector.execute("SELECT h_echo(?)", (value,)).fetchone()[0] == value


@pytest.mark.parametrize("size", [0, 31, 32, 255, 256, 65535, 65536])
def test_text_and_blob_header_boundaries(reflector: apsw.Connection, size: int) -> None:
    assert reflector.execute("SELECT h_echo(?)", ("t" * size,)).fetchone()[0] == "t" * size
    assert reflector.execute("SELECT h_echo(?)", (b"b" * size,)).fetchone()[0] == b"b" * size


def test_many_arguments_use_array16_header(build: Build, connect: Connect) -> None:
    # The guest returns the first byte of its input (the array header) as the
    # result; neither header is a valid result, so the error shows which it was.
    wat = MEMORY + """
      (func (export "sqlwasm_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "f") (param i32 i32) (result i64)
        (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32)) (i64.const 1)))
      (func (export "ok") (param i64) (result i64) (i64.add (local.get 0) (i64.const 1)))
    """
    m = manifest(fn("h_f", export="f", abi="msgpack", args=[], varargs="any", returns="any"), fn("h_ok", export="ok"), name="h")
    conn = connect(build(wat, m))
    # 15 arguments: fixarray 0x9f; 16: array16 0xdc.
    args15 = ", ".join(["1"] * 15)
    args16 = ", ".join(["1"] * 16)
    guest_error(conn, "unsupported msgpack type 0x9f", sql=f"SELECT h_f({args15})")
    guest_error(conn, "unsupported msgpack type 0xdc", sql=f"SELECT h_f({args16})")


TYPED_WAT = REFLECTOR_WAT
TYPED_MANIFEST = manifest(
    fn("h_int", export="echo", abi="msgpack", args=["integer"], returns="any"),
    fn("h_real", export="echo", abi="msgpack", args=["real"], returns="any"),
    fn("h_text", export="echo", abi="msgpack", args=["text"], returns="any"),
    fn("h_blob", export="echo", abi="msgpack", args=["blob"], returns="any"),
    fn("h_trap", export="reflect", abi="msgpack", args=["any"], returns="any"),
    name="h",
)


@pytest.fixture
def typed(build: Build, connect: Connect) -> apsw.Connection:
    return connect(build(TYPED_WAT, TYPED_MANIFEST))


@pytest.mark.parametrize(
    "sql, value",
    [
        ("SELECT h_int(5)", 5),
        ("SELECT h_int(5.9)", 5),
        ("SELECT h_int(-5.9)", -5),
        ("SELECT h_real(5)", 5.0),
        ("SELECT h_real(2.5)", 2.5),
        ("SELECT h_text(5)", "5"),
        ("SELECT h_text(2.5)", "2.5"),
        ("SELECT h_text('t')", "t"),
        ("SELECT h_blob('t')", b"t"),
        ("SELECT h_blob(x'00ff')", b"\x00\xff"),
        ("SELECT h_int(NULL)", None),
        ("SELECT h_text(NULL)", None),
    ],
)
def test_msgpack_arguments_converted_to_declared_type(typed: apsw.Connection, sql: str, value: Any) -> None:
    (got,) = typed.execute(sql).fetchone()
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "sql, cause",
    [
        ("SELECT h_int('5')", "h.h_int: argument 1 is TEXT, expected integer"),
        ("SELECT h_int(x'05')", "h.h_int: argument 1 is BLOB, expected integer"),
        ("SELECT h_real('x')", "h.h_real: argument 1 is TEXT, expected real"),
        ("SELECT h_text(x'00')", "h.h_text: argument 1 is BLOB, expected text"),
        ("SELECT h_blob(1)", "h.h_blob: argument 1 is INTEGER, expected blob"),
        ("SELECT h_blob(1.5)", "h.h_blob: argument 1 is REAL, expected blob"),
    ],
)
def test_msgpack_argument_type_errors(typed: apsw.Connection, sql: str, cause: str) -> None:
    assert cause in one_error(typed, sql)


def test_msgpack_strict_null_skips_the_guest(build: Build, connect: Connect) -> None:
    wat = MEMORY + """
      (func (export "sqlwasm_alloc") (param i32) (result i32) unreachable)
      (func (export "f") (param i32 i32) (result i64) unreachable)
    """
    m = manifest(
        fn("h_strict", export="f", abi="msgpack", args=["integer", "text"], returns="any"),
        fn("h_call", export="f", abi="msgpack", args=["integer", "text"], returns="any", null="call"),
        name="h",
    )
    conn = connect(build(wat, m))
    assert conn.execute("SELECT h_strict(NULL, 'x'), h_strict(1, NULL)").fetchall() == [(None, None)]
    # null = 'call': the guest is called, and here it traps -- proof it ran.
    assert "h.h_call: trap in sqlwasm_alloc (unreachable)" in one_error(conn, "SELECT h_call(NULL, 'x')")
    assert "h.h_strict: trap in sqlwasm_alloc (unreachable)" in one_error(conn, "SELECT h_strict(1, 'x')")


def test_varargs_too_few_arguments(build: Build, connect: Connect) -> None:
    wat, _ = fixed_guest(msgpack.packb(1))
    m = manifest(fn("h_f", export="f", abi="msgpack", args=["integer", "integer"], varargs="any", returns="any"), name="h")
    conn = connect(build(wat, m))
    assert conn.execute("SELECT h_f(1, 2), h_f(1, 2, 3, 4)").fetchall() == [(1, 1)]
    assert "h.h_f: takes at least 2 arguments, got 1" in one_error(conn, "SELECT h_f(1)")


def test_varargs_type_applies_to_extra_arguments(build: Build, connect: Connect) -> None:
    wat, _ = fixed_guest(msgpack.packb(1))
    m = manifest(fn("h_f", export="f", abi="msgpack", args=["text"], varargs="integer", returns="any"), name="h")
    conn = connect(build(wat, m))
    assert conn.execute("SELECT h_f('a', 1, 2.5)").fetchall() == [(1,)]
    assert "h.h_f: argument 3 is TEXT, expected integer" in one_error(conn, "SELECT h_f('a', 1, 'b')")


# ------------------------------------------------------------- raw ABI

RAW_WAT = MEMORY + """
  (func (export "add") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))
  (func (export "int") (param i64) (result i64) (local.get 0))
  (func (export "real") (param f64) (result f64) (local.get 0))
  (func (export "mix") (param i64 f64) (result f64) (f64.add (f64.convert_i64_s (local.get 0)) (local.get 1)))
  (func (export "zero") (result i64) (i64.const 7))
  (func (export "boom") (param i64) (result i64) unreachable)
  (func (export "div") (param i64 i64) (result i64) (i64.div_s (local.get 0) (local.get 1)))
  (func (export "load") (param i64) (result i64) (i64.load (i32.wrap_i64 (local.get 0))))
  (func (export "trunc") (param f64) (result i64) (i64.trunc_f64_s (local.get 0)))
  (func (export "nanconv") (param i64) (result i64) (i64.trunc_f64_s (f64.const nan)))
  (func $down (export "down") (param i64) (result i64) (call $down (i64.add (local.get 0) (i64.const 1))))
"""
RAW_MANIFEST = manifest(
    fn("r_add", export="add", args=["integer", "integer"]),
    fn("r_int", export="int"),
    fn("r_real", export="real", args=["real"], returns="real"),
    fn("r_mix", export="mix", args=["integer", "real"], returns="real"),
    fn("r_zero", export="zero", args=[]),
    fn("r_boom", export="boom"),
    fn("r_div", export="div", args=["integer", "integer"]),
    fn("r_load", export="load"),
    fn("r_trunc", export="trunc", args=["real"]),
    fn("r_nanconv", export="nanconv"),
    fn("r_down", export="down"),
    name="r",
)


@pytest.fixture
def raw(build: Build, connect: Connect) -> apsw.Connection:
    return connect(build(RAW_WAT, RAW_MANIFEST))


def test_raw_basic(raw: apsw.Connection) -> None:
    assert raw.execute("SELECT r_add(2, 3), r_zero(), r_mix(2, 0.5)").fetchall() == [(5, 7, 2.5)]


@pytest.mark.parametrize(
    "sql, value",
    [
        ("SELECT r_int(2.9)", 2),
        ("SELECT r_int(-2.9)", -2),
        ("SELECT r_int(1e300)", INT64_MAX),  # SQLite saturates real -> int64
        ("SELECT r_int(-1e300)", INT64_MIN),
        ("SELECT r_real(3)", 3.0),
        ("SELECT r_real(-9007199254740993)", -9007199254740992.0),
        ("SELECT r_mix(1.9, 1)", 2.0),
        ("SELECT r_add(9223372036854775807, 1)", INT64_MIN),  # wasm i64.add wraps
    ],
)
def test_raw_numeric_conversions(raw: apsw.Connection, sql: str, value: Any) -> None:
    (got,) = raw.execute(sql).fetchone()
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "sql, cause",
    [
        ("SELECT r_add('1', 2)", "r.r_add: argument 1 is TEXT, expected integer"),
        ("SELECT r_add(1, x'02')", "r.r_add: argument 2 is BLOB, expected integer"),
        ("SELECT r_real('1.5')", "r.r_real: argument 1 is TEXT, expected real"),
        ("SELECT r_mix(1, x'')", "r.r_mix: argument 2 is BLOB, expected real"),
    ],
)
def test_raw_text_or_blob_argument(raw: apsw.Connection, sql: str, cause: str) -> None:
    assert cause in one_error(raw, sql)


def test_raw_null_gives_null_without_calling_the_guest(raw: apsw.Connection) -> None:
    assert raw.execute("SELECT r_boom(NULL), r_add(NULL, 1), r_add(1, NULL), r_real(NULL)").fetchall() == [
        (None, None, None, None)
    ]
    assert "r.r_boom: trap (unreachable)" in one_error(raw, "SELECT r_boom(1)")


def test_raw_null_wins_over_a_later_type_error(raw: apsw.Connection) -> None:
    assert raw.execute("SELECT r_add(NULL, 'x')").fetchall() == [(None,)]


def test_raw_argument_count(raw: apsw.Connection) -> None:
    # SQLite checks the arity of a fixed-arity function itself...
    with pytest.raises(apsw.SQLError, match="wrong number of arguments to function r_add"):
        raw.execute("SELECT r_add(1)").fetchall()
    # ...wasm_call leaves it to sqlwasm.
    assert "r.r_add: takes 2 arguments, got 1" in one_error(raw, "SELECT wasm_call('r', 'r_add', 1)")
    assert "r.r_add: takes 2 arguments, got 3" in one_error(raw, "SELECT wasm_call('r', 'r_add', 1, 2, 3)")
    assert "r.r_int: takes 1 argument, got 0" in one_error(raw, "SELECT wasm_call('r', 'r_int')")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.integers(INT64_MIN, INT64_MAX), x=st.floats(allow_nan=False))
def test_raw_values_round_trip(raw: apsw.Connection, a: int, x: float) -> None:
    assert raw.execute("SELECT r_int(?), r_real(?)", (a, x)).fetchone() == (a, x)


def test_raw_nan_argument_is_null(raw: apsw.Connection) -> None:
    assert raw.execute("SELECT r_real(?)", (math.nan,)).fetchall() == [(None,)]


# ----------------------------------------------------------- wasm_call


def test_wasm_call_by_sql_and_export_name(raw: apsw.Connection) -> None:
    assert raw.execute(
        "SELECT wasm_call('r', 'r_add', 2, 3), wasm_call('r', 'add', 2, 3), wasm_call('R', 'R_ADD', 2, 3)"
    ).fetchall() == [(5, 5, 5)]


def test_wasm_call_applies_the_same_conversions(raw: apsw.Connection) -> None:
    assert raw.execute("SELECT wasm_call('r', 'r_int', 2.9), wasm_call('r', 'boom', NULL)").fetchall() == [(2, None)]
    assert "r.r_add: argument 2 is TEXT" in one_error(raw, "SELECT wasm_call('r', 'add', 1, 'x')")
    assert "r.r_boom: trap (unreachable)" in one_error(raw, "SELECT wasm_call('r', 'boom', 1)")


def test_wasm_call_msgpack(typed: apsw.Connection) -> None:
    assert typed.execute("SELECT wasm_call('h', 'h_text', 12), wasm_call('h', 'H_BLOB', 'b')").fetchall() == [("12", b"b")]
    # 'echo' is the export behind several SQL functions: the first declared (h_int) answers.
    assert typed.execute("SELECT wasm_call('h', 'echo', 2.5)").fetchall() == [(2,)]
    assert "h.h_int: argument 1 is TEXT" in one_error(typed, "SELECT wasm_call('h', 'echo', 'x')")


@pytest.mark.parametrize(
    "sql, cause",
    [
        ("SELECT wasm_call('nope', 'r_add', 1, 2)", "wasm_call: no module 'nope' is installed in this connection"),
        ("SELECT wasm_call('r', 'nope', 1, 2)", "wasm_call: module 'r' has no function 'nope'"),
        ("SELECT wasm_call('r')", "needs a module and a function name"),
        ("SELECT wasm_call()", "needs a module and a function name"),
        ("SELECT wasm_call(1, 'r_add', 1, 2)", "module and function names must be text"),
        ("SELECT wasm_call('r', NULL, 1, 2)", "module and function names must be text"),
    ],
)
def test_wasm_call_errors(raw: apsw.Connection, sql: str, cause: str) -> None:
    assert cause in one_error(raw, sql)


@pytest.mark.parametrize(
    "sql",
    ["SELECT wasm_call('r', x'725f616464', 1, 2)", "SELECT wasm_call(x'72', 'r_add', 1, 2)"],
    ids=["blob-function", "blob-module"],
)
def test_wasm_call_blob_names_are_refused(raw: apsw.Connection, sql: str) -> None:
    """Names must be TEXT; a BLOB spelling 'r'/'r_add' is not a name. (The
    native check asks sqlite3_value_type after sqlite3_value_text, which has
    already converted the blob, so the check never sees BLOB.)"""
    assert "module and function names must be text" in one_error(raw, sql)


def test_wasm_call_sees_only_its_own_connection(runtime: sqlwasm.Runtime, build: Build) -> None:
    conn = runtime.connect(":memory:", [build(RAW_WAT, RAW_MANIFEST)])
    other = runtime.connect(":memory:", [build(*fixed_guest(msgpack.packb(1)))])
    try:
        assert "no module 'r'" in one_error(other, "SELECT wasm_call('r', 'r_add', 1, 2)")
        assert conn.execute("SELECT wasm_call('r', 'r_add', 1, 2)").fetchall() == [(3,)]
    finally:
        conn.close()
        other.close()


# ----------------------------------------------------------------- traps


@pytest.mark.parametrize(
    "sql, cause",
    [
        ("SELECT r_boom(1)", "r.r_boom: trap (unreachable)"),
        ("SELECT r_div(1, 0)", "r.r_div: trap (integer division by zero)"),
        (f"SELECT r_div({INT64_MIN}, -1)", "r.r_div: trap (integer overflow)"),
        ("SELECT r_load(65535)", "r.r_load: trap (out-of-bounds memory access)"),
        ("SELECT r_load(-1)", "r.r_load: trap (out-of-bounds memory access)"),
        ("SELECT r_trunc(1e300)", "r.r_trunc: trap (integer overflow)"),
        ("SELECT r_nanconv(1)", "r.r_nanconv: trap (invalid conversion to integer)"),
        ("SELECT r_down(0)", "r.r_down: trap (stack overflow)"),
    ],
)
def test_traps_name_function_and_kind(raw: apsw.Connection, sql: str, cause: str) -> None:
    assert cause in one_error(raw, sql)


def test_instance_usable_after_traps(raw: apsw.Connection) -> None:
    for _ in range(3):
        one_error(raw, "SELECT r_boom(1)")
        one_error(raw, "SELECT r_down(0)")
        assert raw.execute("SELECT r_add(20, 22), r_load(0)").fetchall() == [(42, 0)]


def test_trap_inside_a_statement_stops_it(raw: apsw.Connection) -> None:
    raw.execute("CREATE TABLE t(x)")
    raw.executemany("INSERT INTO t VALUES (?)", [(1,), (0,), (2,)])
    with pytest.raises(apsw.SQLError, match="integer division by zero"):
        raw.execute("SELECT r_div(10, x) FROM t").fetchall()
    assert raw.execute("SELECT sum(r_div(10, x)) FROM t WHERE x != 0").fetchall() == [(15,)]
