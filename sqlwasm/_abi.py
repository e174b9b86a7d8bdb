"""The numbering Python shares with the native part, read from the one place
it is defined: the enums of native/sqlwasm_native.h (cffi's lib.SW_*)."""

from __future__ import annotations

from ._native import lib

# Declared value types of arguments and results.
VALUE_TYPES: dict[str, int] = {
    "integer": lib.SW_TYPE_INTEGER,
    "real": lib.SW_TYPE_REAL,
    "text": lib.SW_TYPE_TEXT,
    "blob": lib.SW_TYPE_BLOB,
    "any": lib.SW_TYPE_ANY,
}
ABIS: dict[str, int] = {"raw": lib.SW_ABI_RAW, "msgpack": lib.SW_ABI_MSGPACK}
KINDS: dict[str, int] = {
    "scalar": lib.SW_KIND_SCALAR,
    "aggregate": lib.SW_KIND_AGGREGATE,
    "window": lib.SW_KIND_WINDOW,
    "table": lib.SW_KIND_TABLE,
}
# A manifest's export roles and their native slots, in slot order. A scalar's
# one export ("main") takes the slot of an aggregate's step.
EXPORT_SLOTS: dict[str, int] = {
    "step": lib.SW_FN_MAIN,
    "init": lib.SW_FN_INIT,
    "final": lib.SW_FN_FINAL,
    "value": lib.SW_FN_VALUE,
    "inverse": lib.SW_FN_INVERSE,
    "drop": lib.SW_FN_DROP,
    "step_batch": lib.SW_FN_STEP_BATCH,
    "open": lib.SW_FN_OPEN,
    "next": lib.SW_FN_NEXT,
    "close": lib.SW_FN_CLOSE,
}
MAIN_SLOT: int = lib.SW_FN_MAIN
FUNC_SLOTS: int = lib.SW_FN_COUNT
# step_batch rows are buffered natively as wasm values: at most this many arguments.
BATCH_MAX_ARGS: int = lib.SW_BATCH_MAX_ARGS
