"""ed25519 keys and the signature section of a module.

A signed module ends with one custom section ``sqlwasm.signature`` whose
payload is JSON: ``{"alg": "ed25519", "public_key": b64, "signature": b64}``.
The signature covers every byte of the file before that section, and the
section itself has one canonical encoding. Carrying the public key lets anyone
check integrity; trust is a separate question, answered by the caller's list
of trusted keys, which are compared whole (a key id is only for display).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._errors import SignatureError
from ._wasmfile import MalformedModule, custom_section, sections, without_custom_sections

SIGNATURE_SECTION = "sqlwasm.signature"
PUBLIC_KEY_TAG = "sqlwasm-ed25519"


def key_id(raw_public_key: bytes) -> str:
    """A short, stable name for a public key, for people: 16 hex digits of its
    SHA-256. Never a test of trust: 64 bits can collide."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes
    name: str = ""

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def to_text(self) -> str:
        return f"{PUBLIC_KEY_TAG} {base64.b64encode(self.raw).decode()} {self.name}".rstrip() + "\n"

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """A key from the text of a .pub file: `sqlwasm-ed25519 <base64> [name]`."""
        return parse_public_key_text(text)


TrustedKey = Union[str, os.PathLike[str], bytes, bytearray, memoryview, Ed25519PublicKey, PublicKey]
# What one trusted key can be (anything else iterable is a collection of keys).
_ONE_KEY = (str, os.PathLike, bytes, bytearray, memoryview, Ed25519PublicKey, PublicKey)


def parse_public_key_text(text: str, source: str = "public key") -> PublicKey:
    parts = text.strip().split(maxsplit=2)
    if len(parts) < 2 or parts[0] != PUBLIC_KEY_TAG:
        raise SignatureError(f"{source}: not a sqlwasm public key (expected '{PUBLIC_KEY_TAG} <base64> [name]')")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise SignatureError(f"{source}: public key is not valid base64") from exc
    if len(raw) != 32:
        raise SignatureError(f"{source}: an ed25519 public key is 32 bytes, got {len(raw)}")
    return PublicKey(raw, parts[2] if len(parts) > 2 else "")


def load_public_key(key: TrustedKey) -> PublicKey:
    """A trusted key given as a .pub path, the text of a .pub file, 32 raw
    bytes, or a key object."""
    if isinstance(key, PublicKey):
        return key
    if isinstance(key, Ed25519PublicKey):
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)  # a memoryview's bytes, whatever its item size
        if len(raw) != 32:
            raise SignatureError(f"a raw ed25519 public key is 32 bytes, got {len(raw)}")
        return PublicKey(raw)
    if not isinstance(key, (str, os.PathLike)):
        raise SignatureError(
            f"a trusted key is a .pub path or text, 32 raw bytes or a public key object, not {type(key).__name__}"
        )
    if isinstance(key, str) and key.startswith(PUBLIC_KEY_TAG + " "):  # no file name starts so
        return parse_public_key_text(key, "trusted key text")
    path = Path(key)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SignatureError(f"cannot read trusted key {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SignatureError(f"{path}: not a sqlwasm public key (not UTF-8 text: byte {exc.start})") from exc
    return parse_public_key_text(text, str(path))


def load_trusted_keys(keys: TrustedKey | Iterable[TrustedKey]) -> dict[bytes, PublicKey]:
    """One trusted key or a collection of them, by their 32 raw bytes: trust
    compares whole keys. Of two equal keys, the first one's name is kept."""
    if isinstance(keys, _ONE_KEY) or not isinstance(keys, Iterable):
        keys = [keys]
    trusted: dict[bytes, PublicKey] = {}
    for key in keys:
        public_key = load_public_key(key)
        trusted.setdefault(public_key.raw, public_key)
    return trusted


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read signing key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an ed25519 private key")
    return key


def public_key_of(private_key: Ed25519PrivateKey, name: str = "") -> PublicKey:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw, name)


def generate_keypair(name: str, directory: str | os.PathLike[str] = ".") -> tuple[Path, Path]:
    """Writes NAME.key (private, mode 0600) and NAME.pub; refuses to overwrite."""
    # The name ends the one-line .pub and names both files. (A command-line
    # argument that was not UTF-8 holds surrogates, which are not printable.)
    # No '/', '\\' or '..': the files stay in `directory`, whatever the name.
    if not name or not name.isprintable() or any(part in name for part in ("/", "\\", "..")):
        raise SignatureError(f"key name {name!r} must be printable UTF-8 text, not empty, without '/', '\\' or '..'")
    directory = Path(directory)
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (key_path, pub_path):
        if path.exists():
            raise SignatureError(f"{path} already exists; not overwriting a key")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SignatureError(f"cannot write {key_path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_text(public_key_of(private_key, name).to_text(), encoding="utf-8")
    return key_path, pub_path


def sign(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The module signed by private_key; an existing signature is replaced."""
    try:
        unsigned = without_custom_sections(data, {SIGNATURE_SECTION})
    except MalformedModule as exc:
        raise SignatureError(f"cannot sign: {exc}") from exc
    body = _signature_payload(public_key_of(private_key).raw, private_key.sign(unsigned))
    return unsigned + custom_section(SIGNATURE_SECTION, body)


def _signature_payload(raw_public_key: bytes, raw_signature: bytes) -> bytes:
    """The one encoding of a signature section's payload."""
    payload = {
        "alg": "ed25519",
        "public_key": base64.b64encode(raw_public_key).decode(),
        "signature": base64.b64encode(raw_signature).decode(),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signature:
    """A signature that verifies: the module is exactly what its signer signed."""

    public_key: PublicKey

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


def check_signature(data: bytes) -> Signature | None:
    """Checks integrity. None if the module carries no signature; raises
    SignatureError if it carries one that does not verify."""
    try:
        found = sections(data)
    except MalformedModule as exc:
        raise SignatureError(f"cannot verify: {exc}") from exc
    signatures = [s for s in found if s.name == SIGNATURE_SECTION]
    if not signatures:
        return None
    if len(signatures) > 1:
        raise SignatureError("module has more than one signature section")
    section = signatures[0]
    if section is not found[-1]:
        raise SignatureError("signature section is not the last section: bytes were added after signing")
    try:
        payload = json.loads(section.payload(data))
        if set(payload) != {"alg", "public_key", "signature"} or payload["alg"] != "ed25519":
            raise ValueError("unexpected fields")
        raw_key = base64.b64decode(payload["public_key"], validate=True)
        raw_signature = base64.b64decode(payload["signature"], validate=True)
        public_key = Ed25519PublicKey.from_public_bytes(raw_key)
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise SignatureError(f"malformed signature section ({exc})") from exc
    # The signature does not cover its own section, so accept only the one
    # canonical encoding of all of it (the payload, and the LEB128 section
    # size and name length, which wasm lets a writer pad): otherwise an
    # equivalent re-encoding would change the file (and its sha256) without
    # invalidating it.
    if data[section.start : section.end] != custom_section(
        SIGNATURE_SECTION, _signature_payload(raw_key, raw_signature)
    ):
        raise SignatureError("signature section is not in canonical form: it was modified after signing")
    try:
        public_key.verify(raw_signature, data[: section.start])
    except InvalidSignature:
        raise SignatureError(
            f"signature by key {key_id(raw_key)} does not verify: the module was modified after signing"
        ) from None
    return Signature(PublicKey(raw_key))
