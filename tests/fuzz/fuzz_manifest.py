"""Fuzzes the manifest parser (sqlwasm/_manifest.py: manifest_from_json,
parse_manifest) with the bytes of a manifest section.

Oracle: a payload either parses into a Manifest or raises ManifestError; any
other exception is a finding. A parsed manifest must survive its own
canonical encoding: to_bytes() parses back to an equal Manifest and encodes
to the same bytes (the encoding `sqlwasm pack` embeds and a signature covers).

Byte-level mutations of JSON mostly give invalid JSON, which json.loads (C,
not instrumented) refuses at once. So half of the mutations are structural:
decode, change one node (a value, a key, a list element), encode again.

    python tests/fuzz/run.py manifest --seconds 3600     (see run.py)
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["sqlwasm"]):
    from sqlwasm import ManifestError
    from sqlwasm._abi import ABIS, KINDS, VALUE_TYPES
    from sqlwasm._manifest import (
        CAPABILITIES,
        EXPORT_ROLES,
        INSTANCE_POLICIES,
        LIMITS,
        NULL_POLICIES,
        manifest_from_json,
    )

# Words of the manifest language (docs/manifest.md), for keys and values.
WORDS = sorted(
    {"sqlwasm", "name", "version", "description", "capabilities", "limits", "instance", "functions", "export"}
    | {"exports", "kind", "abi", "args", "varargs", "returns", "deterministic", "null", "1.0.0", "t", "t_f"}
    | {*ABIS, *CAPABILITIES, *EXPORT_ROLES, *INSTANCE_POLICIES, *KINDS, *LIMITS, *NULL_POLICIES, *VALUE_TYPES}
)
ODD_VALUES: list[Any] = [None, True, False, 0, 1, -1, 2, 127, 128, 2**31, 2**63, 10**30, 1.5, float("inf"), "", [], {}]


def new_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(WORDS)
    if roll < 0.8:
        return rng.choice(ODD_VALUES)
    if roll < 0.9:
        return [rng.choice(WORDS) for _ in range(rng.randrange(4))]
    return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 8)))


def containers(node: Any) -> list[Any]:
    """Every dict and list in a decoded JSON document."""
    found = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            found.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def mutate_structure(document: Any, rng: random.Random) -> Any:
    """The document with one node changed: a value replaced, a key added,
    removed or renamed, a list element duplicated or removed."""
    places = containers(document)
    if not places:
        return new_value(rng)
    target = rng.choice(places)
    if isinstance(target, dict):
        key = rng.choice(list(target)) if target else rng.choice(WORDS)
        action = rng.randrange(4)
        if action == 0:
            target[key] = new_value(rng)
        elif action == 1:
            target[rng.choice(WORDS)] = new_value(rng)
        elif action == 2:
            target.pop(key, None)
        else:
            target[rng.choice(WORDS)] = target.pop(key, None)
    elif target:
        index = rng.randrange(len(target))
        action = rng.randrange(3)
        if action == 0:
            target[index] = new_value(rng)
        elif action == 1:
            target.insert(index, target[index])
        else:
            del target[index]
    else:
        target.append(new_value(rng))
    return document


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            pass
        else:
            mutated_text = json.dumps(mutate_structure(document, rng), ensure_ascii=rng.random() < 0.5)
            mutated = mutated_text.encode("utf-8", "surrogatepass")
            if len(mutated) <= max_size:
                return mutated
    result: bytes = atheris.Mutate(data, max_size)
    return result


def test_one_input(payload: bytes) -> None:
    try:
        manifest = manifest_from_json(payload, "fuzzed manifest")
    except ManifestError:
        return
    canonical = manifest.to_bytes()
    again = manifest_from_json(canonical, "canonical manifest")
    if again != manifest or again.to_bytes() != canonical:
        raise AssertionError(f"{payload!r} parsed to {manifest!r}, whose encoding {canonical!r} reads back differently")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
