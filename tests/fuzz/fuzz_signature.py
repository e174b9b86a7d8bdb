"""Fuzzes the signature checker (sqlwasm/_signing.py: check_signature, sign).

An input is a 6-byte tampering recipe followed by a module:

    byte 0      what to do: 0 flip a byte, 1 insert bytes, 2 delete bytes, 3 truncate
    bytes 1-3   where (big-endian, modulo the signed file's length + 1)
    byte 4      how many bytes to insert or delete, minus one
    byte 5      the byte to insert, or the bits to flip (0 flips 0x01)

Oracle:
- check_signature on the module as given returns None or a Signature, or
  raises SignatureError; nothing else. When it accepts, the file is
  byte for byte what sign() makes of what the signature covers: the
  signature section is the last one, in its one canonical encoding
  (docs/abi.md), so no re-encoding of a signed file verifies;
- sign() with the harness key either refuses with SignatureError (a module
  that is not well framed) or gives a file that check_signature accepts as
  signed by exactly that key;
- that signed file, tampered with by the recipe, is never accepted as
  signed unless the tampering left it byte for byte the same: an ed25519
  signature cannot be forged by fuzzing, so an accepted modification is a
  flaw in how the checker frames what the signature covers.

    python tests/fuzz/run.py signature --seconds 3600     (see run.py)
"""

from __future__ import annotations

import base64
import json
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["sqlwasm"]):
    from sqlwasm import SignatureError
    from sqlwasm._signing import SIGNATURE_SECTION, Signature, check_signature, public_key_of, sign
    from sqlwasm._wasmfile import sections

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from wasm_mutations import wasm_mutator  # noqa: E402

RECIPE_BYTES = 6
KEY = Ed25519PrivateKey.generate()
PUBLIC = public_key_of(KEY)


def leb128(value: int) -> bytes:
    """The shortest unsigned LEB128 encoding."""
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def canonical_signature_section(signature: Signature, raw_signature: bytes) -> bytes:
    """The signature section as docs/abi.md specifies it (written out here,
    not taken from sqlwasm, so that the two can disagree)."""
    payload = json.dumps(
        {
            "alg": "ed25519",
            "public_key": base64.b64encode(signature.public_key.raw).decode(),
            "signature": base64.b64encode(raw_signature).decode(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    name = SIGNATURE_SECTION.encode()
    body = leb128(len(name)) + name + payload
    return b"\0" + leb128(len(body)) + body


def check_accepted_form(data: bytes, signature: Signature) -> None:
    last = sections(data)[-1]
    try:
        raw_signature = base64.b64decode(json.loads(last.payload(data))["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AssertionError(f"accepted a signature section that does not decode: {data!r}") from exc
    if last.name != SIGNATURE_SECTION or data[last.start :] != canonical_signature_section(signature, raw_signature):
        raise AssertionError(f"accepted a signature section that is not in canonical form: {data[last.start :]!r}")


def checked(data: bytes) -> Signature | None:
    try:
        return check_signature(data)
    except SignatureError:
        return None


def tampered(signed: bytes, recipe: bytes) -> bytes:
    kind = recipe[0] % 4
    pos = int.from_bytes(recipe[1:4], "big") % (len(signed) + 1)
    amount = recipe[4] + 1
    if kind == 0:
        if pos == len(signed):
            return signed
        return signed[:pos] + bytes([signed[pos] ^ (recipe[5] or 1)]) + signed[pos + 1 :]
    if kind == 1:
        return signed[:pos] + bytes([recipe[5]]) * amount + signed[pos:]
    if kind == 2:
        return signed[:pos] + signed[pos + amount :]
    return signed[:pos]


def test_one_input(data: bytes) -> None:
    recipe, module = data[:RECIPE_BYTES].ljust(RECIPE_BYTES, b"\0"), data[RECIPE_BYTES:]
    accepted = checked(module)
    if accepted is not None:
        check_accepted_form(module, accepted)
    try:
        signed = sign(module, KEY)
    except SignatureError:
        return
    signature = check_signature(signed)
    if signature is None or signature.public_key.raw != PUBLIC.raw:
        raise AssertionError(f"sign() output does not verify as ours: {signature} for {signed!r}")
    changed = tampered(signed, recipe)
    accepted = checked(changed)
    if accepted is not None and changed != signed:
        raise AssertionError(f"a modified file verifies as signed by {accepted.key_id}: {signed!r} -> {changed!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=wasm_mutator(RECIPE_BYTES))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
