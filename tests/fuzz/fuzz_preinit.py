"""Fuzzes pre-initialization's reader and rewriter (sqlwasm/_preinit.py)
with whole module files.

Oracle: preinit either returns a module or raises PreinitError (its one
documented error); any other exception is a finding. A module it returns
must be valid wasm on sqlwasm's own engine, keep no signature section, and
export neither `_initialize` nor the initializer it ran.

    python tests/fuzz/run.py preinit --seconds 3600
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["sqlwasm"]):
    from sqlwasm._engine_wasmtime import engine
    from sqlwasm._preinit import INITIALIZERS, PreinitError, preinit
    from sqlwasm._signing import SIGNATURE_SECTION
    from sqlwasm._wasmfile import find_custom

import wasmtime  # noqa: E402
from wasm_mutations import wasm_mutator  # noqa: E402

ENGINE = engine(fuel=False)


def test_one_input(data: bytes) -> None:
    try:
        snapshot = preinit(data, timeout_ms=200, memory_pages=64)
    except PreinitError:
        return
    try:
        module = wasmtime.Module(ENGINE, snapshot)
    except wasmtime.WasmtimeError as exc:
        raise AssertionError(f"preinit wrote an invalid module from {data!r}: {exc}") from exc
    names = {e.name for e in module.exports}
    if names & {"_initialize", *INITIALIZERS} or find_custom(snapshot, SIGNATURE_SECTION):
        raise AssertionError(f"preinit kept an initializer or the signature: {sorted(names)} from {data!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=wasm_mutator())
    atheris.Fuzz()


if __name__ == "__main__":
    main()
