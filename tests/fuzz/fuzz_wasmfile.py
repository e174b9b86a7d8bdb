"""Fuzzes the wasm section reader (sqlwasm/_wasmfile.py: sections,
find_custom, declared_memories, without_custom_sections, v128_at_boundary) with whole files.

Oracle: every reader either answers or raises MalformedModule (the reader's
documented error; its callers turn it into ManifestError or SignatureError);
any other exception is a finding. What it answers must hold together:
- the sections tile the file from the header to the last byte, custom
  sections (and only they) have names, and find_custom finds exactly them;
- without_custom_sections keeps every other section byte for byte;
- a custom section appended with custom_section reads back as the last one;
- for a module that wasmtime (sqlwasm's own engine) accepts, the readers
  never fail, and when declared_memories reports the one 32-bit, unshared
  memory the runtime requires, every memory the module exports is that one
  (a second, hidden memory must not get past the check).

    python tests/fuzz/run.py wasmfile --seconds 3600     (see run.py)
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["sqlwasm"]):
    from sqlwasm._engine_wasmtime import engine
    from sqlwasm._wasmfile import (
        MAGIC,
        DeclaredMemory,
        MalformedModule,
        Section,
        custom_section,
        declared_memories,
        find_custom,
        sections,
        v128_at_boundary,
        without_custom_sections,
    )

import wasmtime  # noqa: E402
from wasm_mutations import wasm_mutator  # noqa: E402

ENGINE = engine(fuel=False)
APPENDED = "sqlwasm.fuzz"


def check_layout(data: bytes, found: list[Section]) -> None:
    pos = len(MAGIC)
    for s in found:
        if s.start != pos or not s.start < s.payload_start <= s.end or (s.name is not None) != (s.id == 0):
            raise AssertionError(f"section {s} does not follow the one before it (at {pos}) in {data!r}")
        pos = s.end
    if pos != len(data):
        raise AssertionError(f"sections end at {pos}, the file at {len(data)}: {data!r}")
    for name in {s.name for s in found if s.name is not None}:
        if find_custom(data, name) != [s for s in found if s.name == name]:
            raise AssertionError(f"find_custom({name!r}) disagrees with sections() in {data!r}")


def check_rewrites(data: bytes, found: list[Section]) -> None:
    names = {s.name for s in found if s.name is not None}
    stripped = without_custom_sections(data, names)
    kept = [data[s.start : s.end] for s in found if s.name is None]
    if [stripped[s.start : s.end] for s in sections(stripped)] != kept:
        raise AssertionError(f"without_custom_sections({names}) changed other sections of {data!r}")
    payload = data[len(MAGIC) : len(MAGIC) + 200]
    appended = data + custom_section(APPENDED, payload)
    last = sections(appended)[-1]
    if last.name != APPENDED or last.payload(appended) != payload or last.start != len(data):
        raise AssertionError(f"an appended custom section reads back as {last} in {appended!r}")


def check_memories(data: bytes, memories: list[DeclaredMemory]) -> None:
    """Only for modules wasmtime accepts: the runtime's memory check
    (Runtime._check_memory) must see what wasmtime will run."""
    module = wasmtime.Module(ENGINE, data)
    if any(isinstance(i.type, wasmtime.MemoryType) for i in module.imports):
        return  # an exported memory may be the imported one
    if len(memories) != 1 or memories[0].memory64 or memories[0].shared:
        return  # the runtime refuses the module
    (only,) = memories
    for export in module.exports:
        ty = export.type
        if isinstance(ty, wasmtime.MemoryType) and (ty.is_64, ty.is_shared, ty.limits.min) != (
            False,
            False,
            only.min_pages,
        ):
            raise AssertionError(f"export {export.name!r} is a memory the reader did not see ({only}) in {data!r}")


def check_boundary(data: bytes) -> None:
    """Only for modules wasmtime accepts: v128_at_boundary reads them, and
    when it finds no v128 at the boundary, describing every import and
    export type (what the engine layer does on load) is safe: asking
    wasmtime's C API the kind of a v128 aborts the process."""
    try:
        found = v128_at_boundary(data)
    except MalformedModule as exc:
        raise AssertionError(f"wasmtime accepts {data!r}; v128_at_boundary() refuses it: {exc}") from exc
    if found is None:
        module = wasmtime.Module(ENGINE, data)
        for item in [*module.imports, *module.exports]:
            if isinstance(item.type, wasmtime.FuncType):
                [str(t) for t in (*item.type.params, *item.type.results)]


def test_one_input(data: bytes) -> None:
    try:
        wasmtime.Module.validate(ENGINE, data)
        valid = True
    except wasmtime.WasmtimeError:
        valid = False
    try:
        found = sections(data)
    except MalformedModule as exc:
        if valid:
            raise AssertionError(f"wasmtime accepts {data!r}; sections() refuses it: {exc}") from exc
        for reader in (
            declared_memories,
            lambda d: find_custom(d, APPENDED),
            lambda d: without_custom_sections(d, set()),
        ):
            try:
                reader(data)
            except MalformedModule:
                continue
            raise AssertionError(f"sections() refuses {data!r} but {reader} reads it") from None
        return
    check_layout(data, found)
    check_rewrites(data, found)
    try:
        memories = declared_memories(data)
    except MalformedModule as exc:
        if valid:
            raise AssertionError(f"wasmtime accepts {data!r}; declared_memories() refuses it: {exc}") from exc
        return
    if valid:
        check_memories(data, memories)
        check_boundary(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=wasm_mutator())
    atheris.Fuzz()


if __name__ == "__main__":
    main()
