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


# The value types a module's boundary may use: numbers and the two reference
# types. v128 is left out on purpose: wasmtime's C API cannot describe it
# (asking for its kind aborts the process), so a module whose imports or
# exports carry one is refused before anything asks (v128 inside its
# functions is fine).
V128 = 0x7B
BOUNDARY_VALUE_TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x70: "funcref", 0x6F: "externref"}
TYPE_SECTION_ID, IMPORT_SECTION_ID, FUNCTION_SECTION_ID, GLOBAL_SECTION_ID, EXPORT_SECTION_ID = 1, 2, 3, 6, 7
# constant-expression opcodes -> how many immediate bytes follow (None: one LEB128)
_CONST_IMMEDIATES: dict[int, int | None] = {
    0x41: None, 0x42: None, 0x23: None, 0xD2: None,  # i32/i64.const, global.get, ref.func
    0x43: 4, 0x44: 8, 0xD0: 1,  # f32/f64.const, ref.null (a one-byte heap type)
    0x6A: 0, 0x6B: 0, 0x6C: 0, 0x7C: 0, 0x7D: 0, 0x7E: 0,  # extended-const add, sub, mul
}


class _Cursor:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedModule(f"section truncated at offset {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self) -> int:
        value, self.pos = _read_u32(self.data, self.pos, self.end)
        return value

    def leb(self) -> None:
        """Skips a LEB128 of any width (s32, s64)."""
        for _ in range(10):
            if not self.byte() & 0x80:
                return
        raise MalformedModule(f"LEB128 too long at offset {self.pos}")

    def name(self) -> str:
        size = self.u32()
        if self.pos + size > self.end:
            raise MalformedModule(f"name at offset {self.pos} runs past its section")
        self.pos += size
        return self.data[self.pos - size : self.pos].decode("utf-8", "replace")

    def skip_limits(self) -> None:
        flags = self.byte()
        self.u32()
        if flags & 0x01:
            self.u32()

    def skip_const_expr(self) -> None:
        while True:
            opcode = self.byte()
            if opcode == 0x0B:
                return
            if opcode == 0xFD:  # v128.const: its sub-opcode, then 16 bytes
                self.u32()
                self.pos += 16
                continue
            if opcode not in _CONST_IMMEDIATES:
                raise MalformedModule(f"constant expression opcode 0x{opcode:02x} at offset {self.pos - 1}")
            size = _CONST_IMMEDIATES[opcode]
            if size is None:
                self.leb()
            else:
                self.pos += size


def v128_at_boundary(data: bytes, *, exported_globals: bool = True) -> str | None:
    """The first import or export whose type carries a v128 ("import M.N",
    "export N"), or None; exported v128 globals count only with
    exported_globals. Reads the encodings of the proposals sqlwasm enables:
    call it on modules the engine has validated."""
    found = {s.id: s for s in sections(data) if s.id != CUSTOM_SECTION_ID}
    has_v128: list[bool] = []  # per type index
    if TYPE_SECTION_ID in found:
        cursor = _Cursor(data, found[TYPE_SECTION_ID].payload_start, found[TYPE_SECTION_ID].end)
        for _ in range(cursor.u32()):
            if cursor.byte() != 0x60:
                raise MalformedModule(f"type at offset {cursor.pos - 1} is not a function type sqlwasm reads")
            kinds = [cursor.byte() for _ in range(cursor.u32())]
            kinds += [cursor.byte() for _ in range(cursor.u32())]
            unknown = [k for k in kinds if k != V128 and k not in BOUNDARY_VALUE_TYPES]
            if unknown:
                raise MalformedModule(f"value type 0x{unknown[0]:02x} in the type section is one sqlwasm does not read")
            has_v128.append(V128 in kinds)
    function_types: list[int] = []
    global_types: list[int] = []
    if IMPORT_SECTION_ID in found:
        cursor = _Cursor(data, found[IMPORT_SECTION_ID].payload_start, found[IMPORT_SECTION_ID].end)
        for _ in range(cursor.u32()):
            where = f"import {cursor.name()}.{cursor.name()}"
            kind = cursor.byte()
            if kind == 0x00:
                function_types.append(cursor.u32())
                if function_types[-1] < len(has_v128) and has_v128[function_types[-1]]:
                    return where
            elif kind == 0x01:
                cursor.byte()
                cursor.skip_limits()
            elif kind == 0x02:
                cursor.skip_limits()
            elif kind == 0x03:
                global_types.append(cursor.byte())
                cursor.byte()
                if global_types[-1] == V128:
                    return where
            else:
                raise MalformedModule(f"import kind 0x{kind:02x} is one sqlwasm does not read")
    if FUNCTION_SECTION_ID in found:
        cursor = _Cursor(data, found[FUNCTION_SECTION_ID].payload_start, found[FUNCTION_SECTION_ID].end)
        function_types += [cursor.u32() for _ in range(cursor.u32())]
    if GLOBAL_SECTION_ID in found:
        cursor = _Cursor(data, found[GLOBAL_SECTION_ID].payload_start, found[GLOBAL_SECTION_ID].end)
        for _ in range(cursor.u32()):
            global_types.append(cursor.byte())
            cursor.byte()
            cursor.skip_const_expr()
    if EXPORT_SECTION_ID in found:
        cursor = _Cursor(data, found[EXPORT_SECTION_ID].payload_start, found[EXPORT_SECTION_ID].end)
        for _ in range(cursor.u32()):
            name, kind, index = cursor.name(), cursor.byte(), cursor.u32()
            if kind == 0x00 and index < len(function_types) and function_types[index] < len(has_v128):
                if has_v128[function_types[index]]:
                    return f"export {name}"
            elif kind == 0x03 and exported_globals and index < len(global_types) and global_types[index] == V128:
                return f"export {name}"
    return None
