"""sqlwasm/_signing.py: keys, the signature section, and trust at load time."""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import pytest
from conftest import MEMORY, KeyPair, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import SignatureError
from sqlwasm._manifest import MANIFEST_SECTION
from sqlwasm._signing import (
    PUBLIC_KEY_TAG,
    SIGNATURE_SECTION,
    PublicKey,
    check_signature,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    parse_public_key_text,
    sign,
)
from sqlwasm._wasmfile import custom_section, sections

CODE_SECTION_ID = 10

IDENTITY_WAT = MEMORY + """
  (func (export "ident") (param i64) (result i64) local.get 0)
"""
IDENTITY_MANIFEST = manifest(fn("sig_ident", export="ident"), name="sig")


def unsigned_module() -> bytes:
    return wasm_module(IDENTITY_WAT, IDENTITY_MANIFEST)


def flipped(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def signature_sections(data: bytes) -> list:
    return [s for s in sections(data) if s.name == SIGNATURE_SECTION]


# ------------------------------------------------------------------ keygen


def test_keygen_writes_private_key_0600_and_public_key(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair("alice", tmp_path)
    assert key_path == tmp_path / "alice.key"
    assert pub_path == tmp_path / "alice.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = parse_public_key_text(pub_path.read_text())
    assert public.name == "alice"
    assert pub_path.read_text().startswith(PUBLIC_KEY_TAG + " ")
    # The .pub is the public half of the .key.
    private = load_private_key(key_path)
    assert load_public_key(private.public_key()).raw == public.raw


@pytest.mark.parametrize("existing", ["alice.key", "alice.pub"])
def test_keygen_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious")
    with pytest.raises(SignatureError, match="already exists"):
        generate_keypair("alice", tmp_path)
    assert (tmp_path / existing).read_text() == "precious"
    other = "alice.pub" if existing == "alice.key" else "alice.key"
    assert not (tmp_path / other).exists()


def test_keygen_twice_refuses_and_keeps_first_key(tmp_path: Path) -> None:
    key_path, _ = generate_keypair("alice", tmp_path)
    before = key_path.read_bytes()
    with pytest.raises(SignatureError):
        generate_keypair("alice", tmp_path)
    assert key_path.read_bytes() == before


@pytest.mark.parametrize("name", ["", "a/b", "tab\there", "\udcff"])
def test_keygen_refuses_a_name_that_is_not_one_printable_word(tmp_path: Path, name: str) -> None:
    with pytest.raises(SignatureError, match="key name"):
        generate_keypair(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_private_key_errors(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="cannot read signing key"):
        load_private_key(tmp_path / "missing.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(SignatureError, match="not an unencrypted PEM private key"):
        load_private_key(garbage)


# ------------------------------------------------------- sign and verify


def test_sign_verify_round_trip(keypair: KeyPair) -> None:
    data = unsigned_module()
    signed = sign(data, keypair.private)
    assert signed.startswith(data)
    found = check_signature(signed)
    assert found is not None
    assert found.public_key.raw == keypair.public.raw
    assert found.key_id == key_id(keypair.public.raw) == keypair.public.key_id

    module = sqlwasm.Runtime(trusted_keys=[keypair.pub_path]).load(signed)
    assert module.signer == keypair.public.key_id


def test_unsigned_module_has_no_signature() -> None:
    assert check_signature(unsigned_module()) is None


def test_resigning_replaces_the_signature(keypair: KeyPair) -> None:
    other = Ed25519PrivateKey.generate()
    once = sign(unsigned_module(), other)
    twice = sign(once, keypair.private)
    found = sections(twice)
    assert len(signature_sections(twice)) == 1
    assert found[-1].name == SIGNATURE_SECTION
    assert check_signature(twice).public_key.raw == keypair.public.raw  # type: ignore[union-attr]
    # The old signer no longer vouches for it; the new one does.
    with pytest.raises(SignatureError, match="not in trusted_keys"):
        sqlwasm.Runtime(trusted_keys=[other.public_key()]).load(twice)
    assert sqlwasm.Runtime(trusted_keys=[keypair.pub_path]).load(twice).signer == keypair.public.key_id
    # ed25519 is deterministic: signing again with the same key changes nothing.
    assert sign(twice, keypair.private) == twice


def test_sign_refuses_non_wasm(keypair: KeyPair) -> None:
    with pytest.raises(SignatureError, match="cannot sign"):
        sign(b"not wasm at all", keypair.private)


# ------------------------------------------------------------- tampering


@pytest.fixture
def signed(keypair: KeyPair) -> bytes:
    return sign(unsigned_module(), keypair.private)


@pytest.fixture
def trusting(keypair: KeyPair) -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[keypair.pub_path])


def _region_offsets(data: bytes) -> dict[str, int]:
    """One byte offset inside each region of a signed module."""
    found = sections(data)
    code = next(s for s in found if s.id == CODE_SECTION_ID)
    manifest_section = next(s for s in found if s.name == MANIFEST_SECTION)
    signature = found[-1]
    assert signature.name == SIGNATURE_SECTION
    payload = signature.payload(data)
    sig_value = json.loads(payload)["signature"]
    return {
        "magic": 1,  # the 'a' of \0asm
        "version": 4,
        "code": (code.payload_start + code.end) // 2,
        "manifest": manifest_section.payload_start + manifest_section.payload(data).index(b'"version"') + 2,
        "signature-name": signature.payload_start - 3,
        "signature-value": signature.payload_start + payload.index(sig_value.encode()) + 10,
        "signature-key": signature.payload_start + payload.index(b'"public_key":"') + 20,
        "signature-json": signature.payload_start,
    }


@pytest.mark.parametrize(
    "region",
    ["magic", "version", "code", "manifest", "signature-name", "signature-value", "signature-key", "signature-json"],
)
@pytest.mark.parametrize("allow_unsigned", [False, True])
def test_byte_flip_in_every_region_is_refused(
    keypair: KeyPair, signed: bytes, region: str, allow_unsigned: bool
) -> None:
    pos = _region_offsets(signed)[region]
    tampered = flipped(signed, pos)
    runtime = sqlwasm.Runtime(trusted_keys=[keypair.pub_path], allow_unsigned=allow_unsigned)
    if region == "signature-name" and allow_unsigned:
        # A renamed signature section is no signature at all: the module is
        # unsigned, which allow_unsigned accepts -- but never as signed.
        assert runtime.load(tampered).signer is None
        return
    # SignatureError, not ManifestError: refused before the manifest is read
    # or the code compiled.
    with pytest.raises(SignatureError):
        runtime.load(tampered)


def test_tampered_code_is_refused_before_compile(trusting: sqlwasm.Runtime, signed: bytes) -> None:
    code = next(s for s in sections(signed) if s.id == CODE_SECTION_ID)
    # Garbage opcodes: compiling this would fail with ManifestError("not valid wasm").
    tampered = bytearray(signed)
    tampered[code.end - 3 : code.end - 1] = b"\xff\xff"
    with pytest.raises(SignatureError, match="does not verify"):
        trusting.load(bytes(tampered))
    assert trusting._compiled == {}


def test_tampered_manifest_is_refused(trusting: sqlwasm.Runtime, signed: bytes) -> None:
    # Same length, still a valid manifest: only the signature can tell.
    tampered = signed.replace(b'"version":"1.0.0"', b'"version":"6.6.6"')
    assert tampered != signed
    with pytest.raises(SignatureError, match="does not verify"):
        trusting.load(tampered)


@pytest.mark.parametrize("cut", [1, 10, 70])
def test_truncated_module_is_refused(trusting: sqlwasm.Runtime, signed: bytes, cut: int) -> None:
    with pytest.raises(SignatureError):
        trusting.load(signed[:-cut])


def test_truncated_to_before_signature_is_unsigned(keypair: KeyPair, signed: bytes) -> None:
    stripped = signed[: signature_sections(signed)[0].start]
    with pytest.raises(SignatureError, match="not signed"):
        sqlwasm.Runtime(trusted_keys=[keypair.pub_path]).load(stripped)


@pytest.mark.parametrize(
    "suffix",
    [b"\x00", custom_section("extra", b"appended"), custom_section(MANIFEST_SECTION, b"{}")],
    ids=["one-byte", "custom-section", "second-manifest"],
)
def test_bytes_after_signature_are_refused(trusting: sqlwasm.Runtime, signed: bytes, suffix: bytes) -> None:
    with pytest.raises(SignatureError):
        trusting.load(signed + suffix)


def test_appended_section_error_says_so(trusting: sqlwasm.Runtime, signed: bytes) -> None:
    with pytest.raises(SignatureError, match="not the last section"):
        trusting.load(signed + custom_section("extra", b"x"))


def test_two_signature_sections_are_refused(trusting: sqlwasm.Runtime, signed: bytes) -> None:
    last = signature_sections(signed)[0]
    doubled = signed + signed[last.start : last.end]
    with pytest.raises(SignatureError, match="more than one signature"):
        trusting.load(doubled)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{}",
        b'{"alg":"rsa","public_key":"","signature":""}',
        b'{"alg":"ed25519","public_key":"!!!","signature":"AAAA"}',
        b'{"alg":"ed25519","public_key":"AAAA","signature":"AAAA"}',
        b'{"alg":"ed25519","public_key":"AAAA","signature":"AAAA","extra":1}',
    ],
)
def test_malformed_signature_section_is_refused(trusting: sqlwasm.Runtime, payload: bytes) -> None:
    data = unsigned_module() + custom_section(SIGNATURE_SECTION, payload)
    with pytest.raises(SignatureError, match="malformed signature section"):
        trusting.load(data)
    with pytest.raises(SignatureError, match="malformed signature section"):
        sqlwasm.Runtime(allow_unsigned=True).load(data)


def _reencoded_signature(signed: bytes, how: str) -> bytes:
    """The same signature, written differently in the signature section."""
    last = signature_sections(signed)[0]
    obj = json.loads(last.payload(signed))
    if how == "base64-unused-bits":
        # 64 bytes in base64 leave 4 unused bits in the last data character;
        # setting one changes the file but not the decoded signature.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        sig = obj["signature"]
        i = len(sig) - 3  # before "=="
        obj["signature"] = sig[:i] + alphabet[alphabet.index(sig[i]) ^ 1] + sig[i + 1 :]
        body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        assert len(body) == len(last.payload(signed))  # a one-byte change
    else:  # "key-order"
        body = json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode()
    assert body != last.payload(signed)
    return signed[: last.start] + custom_section(SIGNATURE_SECTION, body)


@pytest.mark.parametrize("how", ["base64-unused-bits", "key-order"])
def test_reencoded_signature_section_is_refused(trusting: sqlwasm.Runtime, signed: bytes, how: str) -> None:
    """The signature section is the one region the signature does not cover,
    so its encoding must be canonical: otherwise a changed file (a different
    sha256) still loads as signed by the trusted key."""
    tampered = _reencoded_signature(signed, how)
    assert tampered != signed
    with pytest.raises(SignatureError):
        trusting.load(tampered)


# ------------------------------------------------------------------ trust


def test_untrusted_signer_is_refused(signed: bytes) -> None:
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="not in trusted_keys"):
        sqlwasm.Runtime(trusted_keys=[stranger.public_key()]).load(signed)
    with pytest.raises(SignatureError, match="not in trusted_keys"):
        sqlwasm.Runtime().load(signed)


def test_unsigned_is_refused_by_default(keypair: KeyPair) -> None:
    with pytest.raises(SignatureError, match="is not signed"):
        sqlwasm.Runtime(trusted_keys=[keypair.pub_path]).load(unsigned_module())


def test_allow_unsigned_loads_unsigned_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlwasm"):
        module = sqlwasm.Runtime(allow_unsigned=True).load(unsigned_module())
    assert module.signer is None
    warnings = [r for r in caplog.records if r.name == "sqlwasm" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not signed" in warnings[0].getMessage()


def test_allow_unsigned_loads_untrusted_signer_as_unsigned(
    signed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlwasm"):
        module = sqlwasm.Runtime(allow_unsigned=True).load(signed)
    assert module.signer is None
    assert any("not in trusted_keys" in r.getMessage() for r in caplog.records)


def test_trusted_module_loads_without_warning(
    trusting: sqlwasm.Runtime, signed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlwasm"):
        trusting.load(signed)
    assert not [r for r in caplog.records if r.name == "sqlwasm"]


def test_bad_signature_is_refused_even_with_allow_unsigned(keypair: KeyPair, signed: bytes) -> None:
    tampered = signed.replace(b'"version":"1.0.0"', b'"version":"6.6.6"')
    for runtime in (sqlwasm.Runtime(allow_unsigned=True), sqlwasm.Runtime(trusted_keys=[keypair.pub_path], allow_unsigned=True)):
        with pytest.raises(SignatureError, match="does not verify"):
            runtime.load(tampered)


@pytest.mark.parametrize("form", ["str-path", "path", "raw-bytes", "key-object", "PublicKey", "single-path"])
def test_trusted_keys_forms(keypair: KeyPair, signed: bytes, form: str) -> None:
    key = {
        "str-path": str(keypair.pub_path),
        "path": keypair.pub_path,
        "raw-bytes": keypair.public.raw,
        "key-object": keypair.private.public_key(),
        "PublicKey": PublicKey(keypair.public.raw),
        "single-path": str(keypair.pub_path),
    }[form]
    trusted = key if form == "single-path" else [key]
    module = sqlwasm.Runtime(trusted_keys=trusted).load(signed)
    assert module.signer == keypair.public.key_id


def test_single_raw_key_not_in_a_list(keypair: KeyPair, signed: bytes) -> None:
    assert sqlwasm.Runtime(trusted_keys=keypair.public.raw).load(signed).signer == keypair.public.key_id


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_raw_key_of_wrong_length(length: int) -> None:
    with pytest.raises(SignatureError, match="32 bytes"):
        sqlwasm.Runtime(trusted_keys=[b"k" * length])


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "not a sqlwasm public key"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== me", "not a sqlwasm public key"),
        (f"{PUBLIC_KEY_TAG}", "not a sqlwasm public key"),
        (f"{PUBLIC_KEY_TAG} !!notbase64!!", "not valid base64"),
        (f"{PUBLIC_KEY_TAG} {base64.b64encode(b'x' * 31).decode()}", "32 bytes, got 31"),
        (f"{PUBLIC_KEY_TAG} {base64.b64encode(b'x' * 33).decode()} name", "32 bytes, got 33"),
    ],
)
def test_bad_pub_file(tmp_path: Path, text: str, problem: str) -> None:
    pub = tmp_path / "bad.pub"
    pub.write_text(text)
    with pytest.raises(SignatureError, match=problem) as info:
        sqlwasm.Runtime(trusted_keys=[pub])
    assert str(pub) in str(info.value)


def test_missing_pub_file(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="cannot read trusted key"):
        sqlwasm.Runtime(trusted_keys=[tmp_path / "nowhere.pub"])


def test_pub_file_round_trip_keeps_name(keypair: KeyPair) -> None:
    parsed = parse_public_key_text(keypair.pub_path.read_text())
    assert parsed == PublicKey(keypair.public.raw, "publisher")
    assert parse_public_key_text(parsed.to_text()) == parsed


# ------------------------------------------------------------- hypothesis

_HYPO_KEY = Ed25519PrivateKey.generate()
_HYPO_SIGNED = sign(unsigned_module(), _HYPO_KEY)
_HYPO_RUNTIME = sqlwasm.Runtime(trusted_keys=[_HYPO_KEY.public_key()])


def test_hypothesis_subject_loads() -> None:
    assert _HYPO_RUNTIME.load(_HYPO_SIGNED).signer == key_id(load_public_key(_HYPO_KEY.public_key()).raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(_HYPO_SIGNED) - 1), st.integers(1, 255)), min_size=1, max_size=3
    )
)
def test_random_byte_flips_are_always_refused(flips: list[tuple[int, int]]) -> None:
    tampered = bytearray(_HYPO_SIGNED)
    for pos, mask in flips:
        tampered[pos] ^= mask
    if bytes(tampered) == _HYPO_SIGNED:  # two flips that cancel out
        return
    with pytest.raises(SignatureError):
        _HYPO_RUNTIME.load(bytes(tampered))


@settings(max_examples=100, deadline=None)
@given(length=st.integers(0, len(_HYPO_SIGNED) - 1))
def test_every_truncation_is_refused(length: int) -> None:
    with pytest.raises(SignatureError):
        _HYPO_RUNTIME.load(_HYPO_SIGNED[:length])


# ------------------------------------------- trust compares whole keys


def _every_key_id_is(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Makes every key's display id the same string: the collision of two
    64-bit ids that nobody can produce on demand (about 2**32 keys for a
    birthday pair), so that trust can be checked not to depend on ids."""
    monkeypatch.setattr("sqlwasm._signing.key_id", lambda raw: value)


def test_trust_compares_the_whole_key_not_its_id(
    signed: bytes, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = Ed25519PrivateKey.generate().public_key()
    _every_key_id_is(monkeypatch, "0123456789abcdef")
    assert load_public_key(stranger).key_id == keypair.public.key_id
    with pytest.raises(SignatureError, match="not in trusted_keys"):
        sqlwasm.Runtime(trusted_keys=[stranger]).load(signed)
    # Two trusted keys with one id are two keys: neither hides the other.
    for keys in ([stranger, keypair.pub_path], [keypair.pub_path, stranger]):
        assert sqlwasm.Runtime(trusted_keys=keys).load(signed).signer == "0123456789abcdef"


# ------------------------------------- the signature section is canonical


def padded_u32(value: int, length: int) -> bytes:
    """value as an unsigned LEB128 of exactly `length` bytes: valid wasm, but
    not the shortest encoding."""
    out = bytearray()
    for i in range(length):
        byte = (value >> (7 * i)) & 0x7F
        out.append(byte | 0x80 if i < length - 1 else byte)
    assert value >> (7 * length) == 0
    return bytes(out)


def _padded_signature_section(signed: bytes, *, size_bytes: int, name_bytes: int) -> bytes:
    """The signed module with its signature section's size and name length
    written with `size_bytes` and `name_bytes` LEB128 bytes."""
    last = signature_sections(signed)[0]
    name = SIGNATURE_SECTION.encode()
    body = padded_u32(len(name), name_bytes) + name + last.payload(signed)
    return signed[: last.start] + b"\x00" + padded_u32(len(body), size_bytes) + body


@pytest.mark.parametrize("size_bytes, name_bytes", [(3, 1), (5, 1), (2, 2), (2, 5)])
def test_padded_leb128_in_the_signature_section_is_refused(
    signed: bytes, keypair: KeyPair, trusting: sqlwasm.Runtime, size_bytes: int, name_bytes: int
) -> None:
    """The signature does not cover its own section, so the section's framing
    must be the one canonical encoding too: a padded LEB128 gives another
    file (another sha256) with the same signature."""
    shortest = _padded_signature_section(signed, size_bytes=2, name_bytes=1)
    assert shortest == signed  # the payload is 100-odd bytes: a 2-byte size
    padded = _padded_signature_section(signed, size_bytes=size_bytes, name_bytes=name_bytes)
    assert padded != signed
    assert sections(padded)[-1].payload(padded) == signature_sections(signed)[0].payload(signed)
    for runtime in (trusting, sqlwasm.Runtime(trusted_keys=[keypair.pub_path], allow_unsigned=True)):
        with pytest.raises(SignatureError, match="not in canonical form"):
            runtime.load(padded)


# ------------------------------------------------- keys in every form


def test_non_utf8_pub_file_is_a_signature_error(tmp_path: Path) -> None:
    pub = tmp_path / "latin1.pub"
    pub.write_bytes(f"{PUBLIC_KEY_TAG} ".encode() + base64.b64encode(b"k" * 32) + " m\xe9lanie\n".encode("latin-1"))
    with pytest.raises(SignatureError, match="not UTF-8") as info:
        sqlwasm.Runtime(trusted_keys=[pub])
    assert str(pub) in str(info.value)


@pytest.mark.parametrize("form", [bytearray, memoryview], ids=["bytearray", "memoryview"])
@pytest.mark.parametrize("single", [False, True], ids=["in-a-list", "alone"])
def test_bytes_like_raw_key(keypair: KeyPair, signed: bytes, form: type, single: bool) -> None:
    key = form(keypair.public.raw)
    module = sqlwasm.Runtime(trusted_keys=key if single else [key]).load(signed)
    assert module.signer == keypair.public.key_id


def test_memoryview_raw_key_counts_bytes_not_items(keypair: KeyPair, signed: bytes) -> None:
    words = memoryview(keypair.public.raw).cast("I")  # 8 items of 4 bytes: still 32 raw bytes
    assert sqlwasm.Runtime(trusted_keys=[words]).load(signed).signer == keypair.public.key_id
    with pytest.raises(SignatureError, match="32 bytes, got 31"):
        sqlwasm.Runtime(trusted_keys=[memoryview(keypair.public.raw)[1:]])


@pytest.mark.parametrize("form", ["key-object", "PublicKey"])
def test_single_key_object_not_in_a_list(keypair: KeyPair, signed: bytes, form: str) -> None:
    key = keypair.private.public_key() if form == "key-object" else PublicKey(keypair.public.raw)
    assert sqlwasm.Runtime(trusted_keys=key).load(signed).signer == keypair.public.key_id


@pytest.mark.parametrize("key", [42, None, 1.5, [b"k" * 32]], ids=["int", "None", "float", "nested-list"])
def test_key_of_another_type_is_a_signature_error(key: object) -> None:
    with pytest.raises(SignatureError, match="a trusted key is") as info:
        sqlwasm.Runtime(trusted_keys=[key])  # type: ignore[list-item]
    assert type(key).__name__ in str(info.value)
