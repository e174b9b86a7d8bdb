"""Reading and writing the section structure of a wasm binary.

Only the framing is parsed here (magic, version, section ids and sizes, custom
section names); validating the code is the engine's job.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\0asm\x01\0\0\0"
CUSTOM_SECTION_ID = 0


class MalformedModule(ValueError):
    """The bytes are not a well-framed wasm binary."""


@dataclass(frozen=True)
class Section:
    id: int
    start: int  # offset of the section id byte
    end: int  # offset just past the payload
    payload_start: int  # for custom sections: just past the name
    name: str | None  # custom sections only

    def payload(self, data: bytes) -> bytes:
        return data[self.payload_start : self.end]


def _read_u32(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(5):
        if pos >= end:
            raise MalformedModule(f"truncated LEB128 at offset {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 32:
                raise MalformedModule(f"LEB128 value too large at offset {pos}")
            return result, pos
        shift += 7
    raise MalformedModule(f"LEB128 too long at offset {pos}")


def encode_u32(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(data: bytes) -> list[Section]:
    """Every section of a wasm binary, in file order."""
    if data[:8] != MAGIC:
        raise MalformedModule("not a wasm module (bad magic or version)")
    found = []
    pos = len(MAGIC)
    while pos < len(data):
        start = pos
        section_id = data[pos]
        size, pos = _read_u32(data, pos + 1, len(data))
        end = pos + size
        if end > len(data):
            raise MalformedModule(f"section at offset {start} runs past the end of the file")
        name = None
        payload_start = pos
        if section_id == CUSTOM_SECTION_ID:
            name_len, name_start = _read_u32(data, pos, end)
            payload_start = name_start + name_len
            if payload_start > end:
                raise MalformedModule(f"custom section name at offset {start} runs past its section")
            try:
                name = data[name_start:payload_start].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedModule(f"custom section name at offset {start} is not UTF-8") from exc
        found.append(Section(section_id, start, end, payload_start, name))
        pos = end
    return found


MEMORY_SECTION_ID = 5


@dataclass(frozen=True)
class DeclaredMemory:
    min_pages: int
    memory64: bool
    shared: bool


def declared_memories(data: bytes) -> list[DeclaredMemory]:
    """The memories a module defines itself (its memory section), exported or
    not; a compiled module's interface only shows exported ones."""
    found = []
    for section in sections(data):
        if section.id != MEMORY_SECTION_ID:
            continue
        count, pos = _read_u32(data, section.payload_start, section.end)
        for _ in range(count):
            if pos >= section.end:
                raise MalformedModule("memory section is truncated")
            flags = data[pos]
            if flags & 0x04:  # 64-bit limits follow: sqlwasm refuses such modules anyway
                found.append(DeclaredMemory(0, True, bool(flags & 0x02)))
                break
            minimum, pos = _read_u32(data, pos + 1, section.end)
            if flags & 0x01:
                _, pos = _read_u32(data, pos, section.end)
            found.append(DeclaredMemory(minimum, False, bool(flags & 0x02)))
    return found


def custom_section(name: str, payload: bytes) -> bytes:
    encoded_name = name.encode("utf-8")
    body = encode_u32(len(encoded_name)) + encoded_name + payload
    return bytes([CUSTOM_SECTION_ID]) + encode_u32(len(body)) + body


def without_custom_sections(data: bytes, names: set[str]) -> bytes:
    """The binary with every custom section of the given names removed."""
    kept = bytearray(data[: len(MAGIC)])
    for section in sections(data):
        if section.name not in names:
            kept += data[section.start : section.end]
    return bytes(kept)


def find_custom(data: bytes, name: str) -> list[Section]:
    return [s for s in sections(data) if s.name == name]


TABLE_SECTION_ID = 4
REFERENCE_TYPES = {0x70: "funcref", 0x6F: "externref"}


@dataclass(frozen=True)
class DeclaredTable:
    min_elements: int
    max_elements: int | None


def declared_tables(data: bytes) -> list[DeclaredTable]:
    """The tables a module defines itself (its table section). Reads only
    the encodings of the proposals sqlwasm enables (a funcref or externref
    table with 32-bit limits): call it on modules the engine has validated."""
    found = []
    for section in sections(data):
        if section.id != TABLE_SECTION_ID:
            continue
        count, pos = _read_u32(data, section.payload_start, section.end)
        for _ in range(count):
            if pos + 2 > section.end:
                raise MalformedModule("table section is truncated")
            element_type, flags = data[pos], data[pos + 1]
            if element_type not in REFERENCE_TYPES or flags not in (0, 1):
                raise MalformedModule(f"table at offset {pos} uses an encoding sqlwasm does not read")
            minimum, pos = _read_u32(data, pos + 2, section.end)
            maximum = None
            if flags:
                maximum, pos = _read_u32(data, pos, section.end)
            found.append(DeclaredTable(minimum, maximum))
    return found


# Value types by their one-byte encoding (the proposals sqlwasm enables).
V128 = 0x7B
VALUE_TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", V128: "v128", 0x70: "funcref", 0x6F: "externref"}
END = 0x0B
TYPE_SECTION_ID, IMPORT_SECTION_ID, FUNCTION_SECTION_ID, GLOBAL_SECTION_ID, EXPORT_SECTION_ID = 1, 2, 3, 6, 7


class SectionReader:
    """A cursor over one section's payload; every read checks its bounds."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    @classmethod
    def of(cls, data: bytes, section: Section) -> SectionReader:
        return cls(data, section.payload_start, section.end)

    def u32(self) -> int:
        value, self.pos = _read_u32(self.data, self.pos, self.end)
        return value

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedModule(f"truncated section at offset {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise MalformedModule(f"truncated section at offset {self.pos}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def name(self) -> str:
        raw = self.take(self.u32())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedModule(f"a name at offset {self.pos - len(raw)} is not UTF-8") from exc

    def skip_leb(self) -> None:
        for _ in range(10):
            if not self.byte() & 0x80:
                return
        raise MalformedModule(f"LEB128 too long at offset {self.pos}")

    def value_type(self) -> int:
        code = self.byte()
        if code not in VALUE_TYPES:
            raise MalformedModule(f"value type 0x{code:02x} at offset {self.pos - 1} is one sqlwasm does not read")
        return code

    def const_expr(self) -> bytes:
        """A constant expression's bytes, through its END."""
        start = self.pos
        while True:
            op = self.byte()
            if op == END:
                return self.data[start : self.pos]
            if op in (0x41, 0x42, 0x23, 0xD2):  # i32/i64.const, global.get, ref.func
                self.skip_leb()
            elif op == 0x43:
                self.take(4)
            elif op == 0x44:
                self.take(8)
            elif op == 0xD0:  # ref.null: a one-byte heap type (function references are off)
                self.byte()
            elif op == 0xFD and self.u32() == 12:  # v128.const
                self.take(16)
            elif op not in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const arithmetic
                raise MalformedModule(f"unsupported instruction 0x{op:02x} in a constant expression at {self.pos - 1}")

    def limits(self) -> tuple[int, int, int | None]:
        flags = self.byte()
        if flags & ~0x01:
            raise MalformedModule(f"limits flags 0x{flags:02x} at offset {self.pos - 1} (shared or 64-bit)")
        minimum = self.u32()
        return flags, minimum, self.u32() if flags & 0x01 else None

    def done(self) -> None:
        if self.pos != self.end:
            raise MalformedModule(f"section has {self.end - self.pos} unread bytes at offset {self.pos}")


def v128_at_boundary(data: bytes, *, exported_globals: bool = True) -> str | None:
    """The first import or export whose type carries a v128 ("import M.N",
    "export N"), or None; exported v128 globals count only with
    exported_globals. wasmtime's C API cannot describe a v128 (asking for its
    kind aborts the process), so the host asks this first; v128 inside a
    module's functions is fine. Reads the encodings of the proposals sqlwasm
    enables: call it on modules the engine has validated."""
    found = {s.id: s for s in sections(data) if s.id != CUSTOM_SECTION_ID}
    has_v128: list[bool] = []  # per type index
    if TYPE_SECTION_ID in found:
        r = SectionReader.of(data, found[TYPE_SECTION_ID])
        for _ in range(r.u32()):
            if r.byte() != 0x60:
                raise MalformedModule(f"type at offset {r.pos - 1} is not a function type sqlwasm reads")
            kinds = [r.value_type() for _ in range(r.u32())]
            kinds += [r.value_type() for _ in range(r.u32())]
            has_v128.append(V128 in kinds)
    function_types: list[int] = []
    global_types: list[int] = []
    if IMPORT_SECTION_ID in found:
        r = SectionReader.of(data, found[IMPORT_SECTION_ID])
        for _ in range(r.u32()):
            where = f"import {r.name()}.{r.name()}"
            kind = r.byte()
            if kind == 0x00:
                function_types.append(r.u32())
                if function_types[-1] < len(has_v128) and has_v128[function_types[-1]]:
                    return where
            elif kind == 0x01:
                r.value_type()
                r.limits()
            elif kind == 0x02:
                r.limits()
            elif kind == 0x03:
                global_types.append(r.value_type())
                r.byte()
                if global_types[-1] == V128:
                    return where
            else:
                raise MalformedModule(f"import kind 0x{kind:02x} is one sqlwasm does not read")
    if FUNCTION_SECTION_ID in found:
        r = SectionReader.of(data, found[FUNCTION_SECTION_ID])
        function_types += [r.u32() for _ in range(r.u32())]
    if GLOBAL_SECTION_ID in found:
        r = SectionReader.of(data, found[GLOBAL_SECTION_ID])
        for _ in range(r.u32()):
            global_types.append(r.value_type())
            r.byte()
            r.const_expr()
    if EXPORT_SECTION_ID in found:
        r = SectionReader.of(data, found[EXPORT_SECTION_ID])
        for _ in range(r.u32()):
            name, kind, index = r.name(), r.byte(), r.u32()
            if kind == 0x00 and index < len(function_types) and function_types[index] < len(has_v128):
                if has_v128[function_types[index]]:
                    return f"export {name}"
            elif kind == 0x03 and exported_globals and index < len(global_types) and global_types[index] == V128:
                return f"export {name}"
    return None
