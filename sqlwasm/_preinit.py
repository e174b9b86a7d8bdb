"""Pre-initialization (Wizer-style snapshots): run a module's initializer
once, ahead of time, and write a module that starts in the state it left.

preinit(wasm) instantiates the module on the sandbox's engine with no host
functions (an import the initializer calls traps, naming it), runs its
start function, `_initialize` and the initializer, then writes the same
module with:

- its memory's contents as active data segments (the non-zero regions), and
  the memory's minimum raised to the size it has now;
- every mutable global's initializer set to the value it has now;
- no start section and no `_initialize` or initializer export (they ran);
- its custom sections (the manifest, names) kept, minus the signature: the
  new module must be signed again.

What a snapshot cannot carry is refused by name: imported memories, tables
or globals; a second memory; passive data or element segments (their
dropped-or-not state is not observable); a table or reference global the
initializer changed (a function reference has no index to write back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import _engine
from ._errors import Error, ManifestError, TrapError
from ._limits import DEFAULT_MEMORY_PAGES, WASM_PAGE
from ._manifest import MANIFEST_SECTION, manifest_from_json
from ._signing import SIGNATURE_SECTION
from ._wasmfile import (
    END,
    MAGIC,
    VALUE_TYPES,
    MalformedModule,
    SectionReader,
    _read_u32,
    encode_u32,
    find_custom,
    sections,
)

INITIALIZERS = ("wizer.initialize", "sqlwasm_init")
REACTOR_INITIALIZE = "_initialize"
DEFAULT_TIMEOUT_MS = 60_000
# Exports the instrumented copy adds, to read state the module keeps private.
EXPORT_PREFIX = "sqlwasm-preinit:"

IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, CODE, DATA, DATA_COUNT, TAG = (
    2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
)
# Where each known section goes: custom sections stay after the one they followed.
SECTION_ORDER = (1, IMPORT, FUNCTION, TABLE, MEMORY, TAG, GLOBAL, EXPORT, START, ELEMENT, DATA_COUNT, CODE, DATA)
EXTERN_KINDS = {0: "function", 1: "table", 2: "memory", 3: "global", 4: "tag"}
REFERENCE_TYPES = {"funcref", "externref"}
# A run of zeros at least this long splits a data segment (a segment's own
# framing costs up to 13 bytes).
SEGMENT_GAP = 16
MAX_SEGMENTS = 10_000


class PreinitError(Error):
    """A module cannot be pre-initialized: its initializer failed, or it
    holds state a snapshot cannot carry."""


@dataclass(frozen=True)
class _Global:
    type: str
    mutable: bool
    init: bytes  # the constant expression, END included


@dataclass(frozen=True)
class _Export:
    name: str
    kind: int
    index: int


def _encode_s(value: int) -> bytes:
    """Signed LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _vector(items: list[bytes]) -> bytes:
    return encode_u32(len(items)) + b"".join(items)


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    return encode_u32(len(raw)) + raw


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + encode_u32(len(payload)) + payload


class _Module:
    """The parts of a module a snapshot rewrites, parsed from its sections."""

    def __init__(self, data: bytes, where: str) -> None:
        self.where = where
        self.data = data
        self.known: dict[int, bytes] = {}  # section id -> payload
        self.customs: list[tuple[int, bytes]] = []  # (id of the known section before it, 0: none; whole section)
        self.imported_functions = 0
        self.globals: list[_Global] = []
        self.tables = 0
        self.memory: tuple[int, int, int | None] | None = None  # (flags, minimum, maximum)
        self.exports: list[_Export] = []
        self.start: int | None = None
        self.data_segments = 0
        last = 0
        for section in sections(data):
            if section.id == 0:
                self.customs.append((last, data[section.start : section.end]))
                continue
            if section.id not in SECTION_ORDER or section.id in self.known:
                raise MalformedModule(f"unexpected section id {section.id} at offset {section.start}")
            last = section.id
            self.known[section.id] = data[section.payload_start : section.end]
            reader = SectionReader.of(data, section)
            parse = {
                IMPORT: self._imports, TABLE: self._tables, MEMORY: self._memories, GLOBAL: self._globals,
                EXPORT: self._exports, START: self._start, ELEMENT: self._elements, DATA: self._data,
            }.get(section.id)
            if parse is not None:
                parse(reader)
                reader.done()

    def refuse(self, why: str) -> PreinitError:
        return PreinitError(f"cannot pre-initialize {self.where}: {why}")

    def _imports(self, r: SectionReader) -> None:
        for _ in range(r.u32()):
            module, name, kind = r.name(), r.name(), r.byte()
            if kind != 0:
                raise self.refuse(
                    f"it imports {EXTERN_KINDS.get(kind, f'kind {kind}')} {module}.{name}, "
                    "whose state a snapshot cannot carry (only function imports can be pre-initialized)"
                )
            r.u32()
            self.imported_functions += 1

    def _tables(self, r: SectionReader) -> None:
        for _ in range(r.u32()):
            r.byte()  # the element type
            r.limits()
            self.tables += 1

    def _memories(self, r: SectionReader) -> None:
        count = r.u32()
        if count > 1:
            raise self.refuse(f"it defines {count} memories (multiple memories are not supported)")
        if count:
            self.memory = r.limits()

    def _globals(self, r: SectionReader) -> None:
        for _ in range(r.u32()):
            code = r.byte()
            if code not in VALUE_TYPES:
                raise MalformedModule(f"global of unknown type 0x{code:02x} at offset {r.pos - 1}")
            mutable = r.byte()
            if mutable not in (0, 1):
                raise MalformedModule(f"global mutability 0x{mutable:02x} at offset {r.pos - 1}")
            self.globals.append(_Global(VALUE_TYPES[code], bool(mutable), r.const_expr()))

    def _exports(self, r: SectionReader) -> None:
        for _ in range(r.u32()):
            self.exports.append(_Export(r.name(), r.byte(), r.u32()))

    def _start(self, r: SectionReader) -> None:
        self.start = r.u32()

    def _elements(self, r: SectionReader) -> None:
        for index in range(r.u32()):
            flags = r.u32()
            if flags > 7:
                raise MalformedModule(f"element segment flags {flags} at offset {r.pos}")
            if flags & 0b011 == 0b001:
                raise self.refuse(
                    f"element segment {index} is passive (table.init/elem.drop state cannot be snapshotted)"
                )
            if flags & 0b010 and not flags & 0b001:
                r.u32()  # table index
            if not flags & 0b001:
                r.const_expr()  # offset
            if flags & 0b011:
                r.byte()  # element kind or reference type
            for _ in range(r.u32()):
                r.const_expr() if flags & 0b100 else r.u32()

    def _data(self, r: SectionReader) -> None:
        for index in range(r.u32()):
            flags = r.u32()
            if flags == 1:
                raise self.refuse(
                    f"data segment {index} is passive (bulk memory: memory.init/data.drop state cannot be snapshotted)"
                )
            if flags == 2:
                r.u32()
            elif flags != 0:
                raise MalformedModule(f"data segment flags {flags} at offset {r.pos}")
            r.const_expr()
            r.take(r.u32())
            self.data_segments += 1

    def assemble(self, replaced: dict[int, bytes | None]) -> bytes:
        """The module with the given sections' payloads replaced (None: removed),
        custom sections in place, known sections in their required order."""
        payloads = {**self.known, **replaced}
        out = bytearray(MAGIC)
        out += b"".join(c for after, c in self.customs if after == 0)
        for section_id in SECTION_ORDER:
            payload = payloads.get(section_id)
            if payload is not None:
                out += _section(section_id, payload)
            out += b"".join(c for after, c in self.customs if after == section_id)
        return bytes(out)


def _instrumented(module: _Module, added: list[_Export]) -> bytes:
    """The module, with extra exports and without its start section (the
    snapshot calls the start function itself, after looking at the tables)."""
    exports = [_name(e.name) + bytes([e.kind]) + encode_u32(e.index) for e in [*module.exports, *added]]
    return module.assemble({EXPORT: _vector(exports), START: None})


def _const(value_type: str, raw: bytes) -> bytes:
    """A constant expression giving the value whose little-endian bytes are raw."""
    if value_type in ("i32", "i64"):
        size = 4 if value_type == "i32" else 8
        opcode = 0x41 if value_type == "i32" else 0x42
        return bytes([opcode]) + _encode_s(int.from_bytes(raw[:size], "little", signed=True)) + bytes([END])
    if value_type == "f32":
        return b"\x43" + raw[:4] + bytes([END])
    if value_type == "f64":
        return b"\x44" + raw[:8] + bytes([END])
    assert value_type == "v128"
    return b"\xfd" + encode_u32(12) + raw[:16] + bytes([END])


def _nonzero_regions(memory: bytes) -> list[tuple[int, int]]:
    """(start, end) of the memory's non-zero regions, zero runs shorter than
    the gap merged in, at most MAX_SEGMENTS of them."""
    gap = SEGMENT_GAP
    while True:
        regions = []
        pos = 0
        for zeros in re.finditer(b"\x00{%d,}" % gap, memory):
            if zeros.start() > pos:
                regions.append((pos, zeros.start()))
            pos = zeros.end()
        if pos < len(memory):
            regions.append((pos, len(memory)))
        if len(regions) <= MAX_SEGMENTS:
            return regions
        gap *= 4


def _data_payload(module: _Module, memory: bytes) -> bytes:
    segments = []
    if DATA_COUNT in module.known:
        # Code that names data segments (memory.init, data.drop) keeps valid
        # indices: each original active segment becomes an empty one, as
        # dropped as the original was after instantiation.
        segments += [b"\x00\x41\x00\x0b\x00"] * module.data_segments
    for start, end in _nonzero_regions(memory):
        offset = _encode_s(start - (1 << 32) if start >= 1 << 31 else start)
        segments.append(b"\x00\x41" + offset + bytes([END]) + encode_u32(end - start) + memory[start:end])
    return _vector(segments)


def default_initializer(export_names: list[str]) -> str | None:
    return next((name for name in INITIALIZERS if name in export_names), None)


def preinit(
    wasm: bytes,
    *,
    initializer: str | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    memory_pages: int = DEFAULT_MEMORY_PAGES,
) -> bytes:
    """The module, pre-initialized: see the module docstring. initializer:
    the export to run (default: the first of INITIALIZERS it exports);
    timeout_ms and memory_pages bound the run like a load's limits."""
    try:
        where = _describe(wasm)
        module = _Module(wasm, where)
    except MalformedModule as exc:
        raise PreinitError(f"cannot pre-initialize: not a wasm module preinit can read: {exc}") from exc
    try:
        # The instrumented copy is rebuilt in the canonical section order:
        # only a valid module may go in.
        _engine.default().validate(_engine.EngineConfig(), wasm)
    except _engine.InvalidWasm as exc:
        raise module.refuse(f"the engine refuses it: {exc.cause}") from exc
    names = [e.name for e in module.exports]
    chosen = initializer if initializer is not None else default_initializer(names)
    if chosen is None:
        raise module.refuse(f"it exports no initializer ({' or '.join(INITIALIZERS)}; or name one)")
    by_name = {e.name: e for e in module.exports}
    if chosen not in by_name or by_name[chosen].kind != 0:
        raise module.refuse(f"it exports no function '{chosen}' to run as its initializer")

    added: list[_Export] = []
    global_exports: dict[int, str] = {}
    ref_exports: list[str] = []
    for i, glob in enumerate(module.globals):  # all defined: imported globals were refused
        if not glob.mutable:
            continue
        export = _Export(f"{EXPORT_PREFIX}global:{i}", 3, i)
        added.append(export)
        if glob.type in REFERENCE_TYPES:
            ref_exports.append(export.name)
        else:
            global_exports[i] = export.name
    for i in range(module.tables):
        added.append(_Export(f"{EXPORT_PREFIX}table:{i}", 1, i))
        ref_exports.append(added[-1].name)
    memory_export = None
    if module.memory is not None:
        memory_export = f"{EXPORT_PREFIX}memory"
        added.append(_Export(memory_export, 2, 0))
    calls = []
    if module.start is not None:
        added.append(_Export(f"{EXPORT_PREFIX}start", 0, module.start))
        calls.append(added[-1].name)
    if REACTOR_INITIALIZE in by_name and chosen != REACTOR_INITIALIZE:
        calls.append(REACTOR_INITIALIZE)
    calls.append(chosen)

    try:
        snapshot = _engine.default().snapshot(
            _instrumented(module, added),
            calls=tuple(calls),
            memory=memory_export,
            globals=tuple(global_exports.values()),
            references=tuple(ref_exports),
            timeout_ms=timeout_ms,
            memory_pages=memory_pages,
            where=where,
        )
    except TrapError as exc:
        raise PreinitError(f"cannot pre-initialize {exc}") from exc
    except _engine.InvalidWasm as exc:
        raise module.refuse(f"the engine refuses it: {exc.cause}") from exc
    if snapshot.changed:
        what = ", ".join(name.removeprefix(EXPORT_PREFIX).replace(":", " ") for name in snapshot.changed)
        raise module.refuse(f"the initializer changed {what}: function references cannot be written into a snapshot")

    replaced: dict[int, bytes | None] = {START: None}
    removed = {chosen, REACTOR_INITIALIZE}
    replaced[EXPORT] = _vector(
        [_name(e.name) + bytes([e.kind]) + encode_u32(e.index) for e in module.exports if e.name not in removed]
    )
    if module.globals:
        replaced[GLOBAL] = _vector(
            [
                bytes([next(c for c, t in VALUE_TYPES.items() if t == g.type), int(g.mutable)])
                + (_const(g.type, snapshot.globals[global_exports[i]]) if i in global_exports else g.init)
                for i, g in enumerate(module.globals)
            ]
        )
    if module.memory is not None:
        assert snapshot.memory is not None
        flags, _, maximum = module.memory
        pages = len(snapshot.memory) // WASM_PAGE
        limits = bytes([flags]) + encode_u32(pages) + (encode_u32(maximum) if maximum is not None else b"")
        replaced[MEMORY] = encode_u32(1) + limits
        data_payload = _data_payload(module, snapshot.memory)
        replaced[DATA] = data_payload
        if DATA_COUNT in module.known:
            replaced[DATA_COUNT] = encode_u32(_read_u32(data_payload, 0, len(data_payload))[0])
    module.customs = [(after, c) for after, c in module.customs if not _is_signature(c)]
    return module.assemble(replaced)


def _describe(wasm: bytes) -> str:
    """'module NAME' from the manifest, when there is a readable one."""
    found = find_custom(wasm, MANIFEST_SECTION)
    if len(found) == 1:
        try:
            return f"module '{manifest_from_json(found[0].payload(wasm)).name}'"
        except ManifestError:
            pass
    return "module"


def _is_signature(custom: bytes) -> bool:
    (section,) = sections(MAGIC + custom)
    return section.name == SIGNATURE_SECTION
