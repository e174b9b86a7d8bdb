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
