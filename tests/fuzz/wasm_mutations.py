"""A structure-aware libFuzzer mutator for wasm files (used by
fuzz_wasmfile.py and fuzz_signature.py).

Byte-level mutations rarely change a file's framing consistently: padding a
LEB128 size (0x05 -> 0x85 0x00) or moving a section takes two or more exact
edits. Half of the time this mutator splits the file into sections with its
own small reader (not sqlwasm's, so a bug there cannot hide here) and edits
one: pads a size or a custom section's name length with redundant LEB128
bytes, duplicates, drops or swaps sections, appends a custom section, or
mutates one section's payload and fixes its size. Otherwise, or when the
file does not split, it leaves the work to libFuzzer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import atheris  # type: ignore[import-untyped]

MAGIC = b"\0asm\x01\0\0\0"
CUSTOM_NAMES = (b"sqlwasm.signature", b"sqlwasm.manifest", b"name", b"")


@dataclass
class RawSection:
    id: int
    body: bytes  # everything after the size: for custom sections, name length + name + payload
    size_padding: int = 0  # redundant LEB128 bytes in the size


def leb128(value: int, padding: int = 0) -> bytes:
    """value in unsigned LEB128, with `padding` redundant continuation bytes."""
    out = bytearray()
    while True:
        out.append(value & 0x7F)
        value >>= 7
        if not value:
            break
    out += b"\0" * padding
    for i in range(len(out) - 1):
        out[i] |= 0x80
    return bytes(out)


def read_leb128(data: bytes, pos: int) -> tuple[int, int] | None:
    value = 0
    for shift in range(0, 35, 7):
        if pos >= len(data):
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    return None


def split(data: bytes) -> list[RawSection] | None:
    if not data.startswith(MAGIC):
        return None
    found = []
    pos = len(MAGIC)
    while pos < len(data):
        size = read_leb128(data, pos + 1)
        if size is None or size[1] + size[0] > len(data):
            return None
        found.append(RawSection(data[pos], data[size[1] : size[1] + size[0]]))
        pos = size[1] + size[0]
    return found


def join(found: list[RawSection]) -> bytes:
    return MAGIC + b"".join(bytes([s.id]) + leb128(len(s.body), s.size_padding) + s.body for s in found)


def pad_name_length(section: RawSection, rng: random.Random) -> None:
    name = read_leb128(section.body, 0)
    if section.id == 0 and name is not None:
        section.body = leb128(name[0], rng.randint(1, 4)) + section.body[name[1] :]


def custom(rng: random.Random, filler: bytes) -> RawSection:
    name = rng.choice(CUSTOM_NAMES)
    return RawSection(0, leb128(len(name)) + name + filler[: rng.randrange(64)])


def mutate_sections(found: list[RawSection], rng: random.Random) -> None:
    if not found:
        found.append(custom(rng, b""))
        return
    i = rng.randrange(len(found))
    action = rng.randrange(7)
    if action == 0:
        found[i].size_padding = rng.randint(1, 4)
    elif action == 1:
        pad_name_length(found[i], rng)
    elif action == 2:
        found.insert(i, RawSection(found[i].id, found[i].body))
    elif action == 3:
        del found[i]
    elif action == 4 and len(found) > 1:
        j = rng.randrange(len(found))
        found[i], found[j] = found[j], found[i]
    elif action == 5:
        found.insert(rng.randrange(len(found) + 1), custom(rng, found[i].body))
    else:
        found[i].body = atheris.Mutate(found[i].body, max(len(found[i].body) * 2, 16))


def wasm_mutator(prefix_bytes: int = 0) -> Callable[[bytes, int, int], bytes]:
    """A libFuzzer custom mutator for inputs that are `prefix_bytes` of
    harness parameters followed by a wasm file."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        prefix, module = data[:prefix_bytes], data[prefix_bytes:]
        found = split(module) if rng.random() < 0.5 else None
        if found is None:
            result: bytes = atheris.Mutate(data, max_size)
            return result
        mutate_sections(found, rng)
        if rng.random() < 0.25:
            prefix = atheris.Mutate(prefix, prefix_bytes)
        mutated = prefix + join(found)
        return mutated[:max_size]

    return mutate
