"""Fuzzes the native msgpack result decoder (sw_packed_result and
sw_set_result in native/sqlwasm_native.c), in process, through real SQLite
(APSW) and real wasmtime.

The guest is inline WAT with the msgpack ABI. Its exports return a packed
(ptr, len) that points at the payload of their BLOB argument inside the
argument buffer, so the fuzzer's bytes become the guest's result. Each input
goes through one scalar per declared return type, through an aggregate step
(where only {"error": text} is a valid answer) and, as the first batch of
rows, through a table function's next (native/table.c).

The oracle is msgpack's pure-Python decoder: the call returns exactly the
value it reads when that is one allowed scalar of the declared type, and
otherwise fails with apsw.SQLError naming module.function. The decoder is
instrumented, so its branches guide the fuzzer through msgpack's types (the
native code itself is not instrumented).

    python tests/fuzz/run.py msgpack --seconds 3600     (see run.py)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["msgpack"]):
    import msgpack  # type: ignore[import-untyped]
    import msgpack.fallback  # type: ignore[import-untyped]

import apsw  # noqa: E402
import wasmtime  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

import sqlwasm  # noqa: E402
from sqlwasm._manifest import embed_manifest, parse_manifest  # noqa: E402
from sqlwasm._signing import sign  # noqa: E402

MODULE = "fz"
RETURN_TYPES = ("integer", "real", "text", "blob", "any")
STATUS_FUNCTION = "fz_status"  # the aggregate whose step returns the payload
TABLE_FUNCTION = "fz_rows"  # the table function whose first next returns the payload
NIL_AT = 16  # a msgpack nil for the aggregate's final
EMPTY_ARRAY_AT = 17  # the table function's second next: no more rows
ARG_BUFFER = 1024
PAGES = 4
# Rows must fit the argument buffer sqlwasm_alloc hands out (row header <= 6 bytes).
MAX_PAYLOAD = PAGES * 65536 - ARG_BUFFER - 6

# The argument row is [bin]: 0x91, a bin tag c4/c5/c6, 1/2/4 length bytes, the
# payload. The payload runs to the end of the row.
GUEST_WAT = f"""
(module
  (memory (export "memory") {PAGES})
  (data (i32.const {NIL_AT}) "\\c0\\90")
  (global $rows (mut i64) (i64.const 0))
  (global $batches (mut i32) (i32.const 0))
  (func (export "sqlwasm_alloc") (param i32) (result i32) i32.const {ARG_BUFFER})
  (func $payload (param $ptr i32) (param $len i32) (result i64)
    (local $start i32)
    (local.set $start
      (i32.add
        (i32.add (local.get $ptr) (i32.const 2))
        (i32.shl (i32.const 1) (i32.sub (i32.load8_u offset=1 (local.get $ptr)) (i32.const 0xc4)))))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $start)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (i32.add (local.get $ptr) (local.get $len)) (local.get $start)))))
  (func (export "result") (param i32 i32) (result i64) (call $payload (local.get 0) (local.get 1)))
  (func (export "init") (result i32) i32.const 1)
  (func (export "step") (param i32 i32 i32) (result i64) (call $payload (local.get 1) (local.get 2)))
  (func (export "final") (param i32) (result i64) i64.const {(NIL_AT << 32) | 1})
  (func (export "open") (param i32 i32) (result i32)
    (global.set $rows (call $payload (local.get 0) (local.get 1)))
    (global.set $batches (i32.const 0))
    i32.const 0)
  (func (export "next") (param i32) (result i64)
    (global.set $batches (i32.add (global.get $batches) (i32.const 1)))
    (if (result i64) (i32.eq (global.get $batches) (i32.const 1))
      (then (global.get $rows))
      (else (i64.const {(EMPTY_ARRAY_AT << 32) | 1}))))
  (func (export "close") (param i32)))
"""


def guest_manifest() -> dict[str, Any]:
    scalars = [
        {"name": f"fz_{returns}", "export": "result", "abi": "msgpack", "args": ["blob"], "returns": returns}
        for returns in RETURN_TYPES
    ]
    status = {
        "name": STATUS_FUNCTION,
        "kind": "aggregate",
        "exports": {"init": "init", "step": "step", "final": "final"},
        "abi": "msgpack",
        "args": ["blob"],
        "returns": "any",
    }
    table = {
        "name": TABLE_FUNCTION,
        "kind": "table",
        "exports": {"open": "open", "next": "next", "close": "close"},
        "abi": "msgpack",
        "args": ["blob"],
        "columns": [{"name": "a", "type": "any"}, {"name": "b", "type": "any"}],
    }
    return {"sqlwasm": 1, "name": MODULE, "version": "1.0.0", "functions": [*scalars, status, table]}


def open_connection() -> apsw.Connection:
    key = Ed25519PrivateKey.generate()
    module = sign(embed_manifest(bytes(wasmtime.wat2wasm(GUEST_WAT)), parse_manifest(guest_manifest())), key)
    return sqlwasm.connect(":memory:", [module], trusted_keys=[key.public_key()])


@dataclass(frozen=True)
class Refused:
    """The call must fail; guest_message is set when the result is the
    guest's own {"error": text}."""

    guest_message: str | None = None


@atheris.instrument_func  # type: ignore[untyped-decorator]
def decoded(payload: bytes) -> Any:
    """What the host must make of the payload before the declared type is
    applied (docs/abi.md, the msgpack ABI, step 4)."""
    try:
        value = msgpack.fallback.unpackb(payload)
    except (ValueError, msgpack.UnpackException, RecursionError):
        return Refused()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else Refused()
    if value is None or isinstance(value, (float, str, bytes)):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((k, v),) = value.items()
        if isinstance(k, str) and k == "error" and isinstance(v, str):
            return Refused(v)
    return Refused()  # arrays, other maps, ext types


@atheris.instrument_func  # type: ignore[untyped-decorator]
def table_rows(payload: bytes) -> Any:
    """The rows a table function's batch stands for (docs/abi.md, table
    functions): an array of 2-value arrays of allowed scalars, or refused."""
    try:
        value = msgpack.fallback.unpackb(payload)
    except (ValueError, msgpack.UnpackException, RecursionError):
        return Refused()
    if isinstance(value, dict):
        error = decoded(payload)
        return error if isinstance(error, Refused) else Refused()
    if not isinstance(value, list):
        return Refused()
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != 2:
            return Refused()
        cells = []
        for cell in row:
            if isinstance(cell, bool):
                cell = int(cell)
            elif isinstance(cell, int) and not -(2**63) <= cell < 2**63:
                return Refused()
            elif isinstance(cell, float):
                cell = sql_real(cell)
            elif not (cell is None or isinstance(cell, (int, str, bytes))):
                return Refused()
            cells.append(cell)
        rows.append(tuple(cells))
    return rows


def sql_real(value: float) -> float | None:
    return None if math.isnan(value) else value  # SQLite's rule: a NaN result is NULL


@atheris.instrument_func  # type: ignore[untyped-decorator]
def as_declared(value: Any, returns: str) -> Any:
    """The SQL result for a decoded value under the declared return type."""
    if isinstance(value, Refused) or value is None:
        return value
    if returns == "any":
        return sql_real(value) if isinstance(value, float) else value
    if returns == "integer" and isinstance(value, int):
        return value
    if returns == "real" and isinstance(value, (int, float)):
        return sql_real(float(value))
    if returns == "text" and isinstance(value, str):
        return value
    if returns == "blob" and isinstance(value, bytes):
        return value
    return Refused()


def shown_message(message: str) -> str:
    """A guest's error text as the host shows it: at most 500 bytes, cut on a
    character boundary, NUL as '?'."""
    raw = message.encode("utf-8")
    if len(raw) > 500:
        cut = 500
        while cut > 0 and raw[cut] & 0xC0 == 0x80:
            cut -= 1
        raw = raw[:cut]
    return raw.decode("utf-8").replace("\0", "?")


def check_call(conn: apsw.Connection, function: str, payload: bytes, want: Any) -> None:
    label = f"{MODULE}.{function}"
    table = function == TABLE_FUNCTION
    try:
        sql = f"SELECT a, b FROM {function}(?)" if table else f"SELECT {function}(?)"
        rows = conn.execute(sql, (payload,)).fetchall()
    except apsw.SQLError as exc:
        message = str(exc)
        if not isinstance(want, Refused):
            raise AssertionError(f"{label} refused {payload!r}, expected {want!r}: {message}") from exc
        if f"{label}: " not in message:
            raise AssertionError(f"{label}: error does not name the function: {message!r}") from exc
        if want.guest_message is not None and f"{label}: {shown_message(want.guest_message)}" not in message:
            raise AssertionError(f"{label}: guest error {want.guest_message!r} shown as {message!r}") from exc
        return
    if isinstance(want, Refused):
        raise AssertionError(f"{label} accepted {payload!r} as {rows!r}; it must be refused")
    if table:
        same = len(rows) == len(want) and all(
            type(got) is type(expected) and got == expected for r, w in zip(rows, want) for got, expected in zip(r, w)
        )
        if not same:
            raise AssertionError(f"{label} returned {rows!r} for {payload!r}, expected {want!r}")
        return
    if len(rows) != 1 or len(rows[0]) != 1 or type(rows[0][0]) is not type(want) or rows[0][0] != want:
        raise AssertionError(f"{label} returned {rows!r} for {payload!r}, expected {want!r}")


CONN = open_connection()


def test_one_input(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD:
        return
    value = decoded(payload)
    for returns in RETURN_TYPES:
        check_call(CONN, f"fz_{returns}", payload, as_declared(value, returns))
    # A step's result is only a status: anything but {"error": text} is an error too.
    check_call(CONN, STATUS_FUNCTION, payload, value if isinstance(value, Refused) else Refused())
    check_call(CONN, TABLE_FUNCTION, payload, table_rows(payload))


def main() -> None:
    test_one_input(msgpack.packb("ready"))  # the guest hands back what it was given
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
