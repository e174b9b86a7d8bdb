"""Shared test helpers: keys, and modules built from inline WAT + a manifest.

The plain functions (``fn``, ``manifest``, ``wasm_module``, ``one_error``) can be
imported by test files (``from conftest import wasm_module``); the fixtures
wrap the parts that need a temporary directory or a shared key.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import apsw
import pytest
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm._manifest import Manifest, embed_manifest, parse_manifest
from sqlwasm._signing import PublicKey, generate_keypair, load_private_key, public_key_of, sign

# Compiled code goes to a private cache of this session's, never the user's
# (set before any test module makes a Runtime; subprocesses inherit it).
os.environ["SQLWASM_CACHE_DIR"] = _COMPILED_CACHE = tempfile.mkdtemp(prefix="sqlwasm-test-cache-")
atexit.register(shutil.rmtree, _COMPILED_CACHE, ignore_errors=True)

# A memory export every module needs; WAT snippets start with it.
MEMORY = '(memory (export "memory") 1)'

# The types of the `build` and `connect` fixtures, for annotations in tests.
Build = Callable[[str, "Mapping[str, Any] | Manifest"], bytes]
Connect = Callable[..., apsw.Connection]


def fn(name: str, *, abi: str = "raw", args: Iterable[str] = ("integer",), returns: str = "integer", **extra: Any) -> dict[str, Any]:
    """One function entry of a manifest dict."""
    return {"name": name, "abi": abi, "args": list(args), "returns": returns, **extra}


def manifest(*functions: Mapping[str, Any], name: str = "t", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    """A manifest dict (format 1) with the given function entries."""
    return {"sqlwasm": 1, "name": name, "version": version, "functions": [dict(f) for f in functions], **extra}


def wasm_module(
    wat: str,
    manifest_obj: Mapping[str, Any] | Manifest,
    *,
    key: Ed25519PrivateKey | str | Path | None = None,
) -> bytes:
    """A module from WAT with the manifest embedded; signed if a key (object
    or PEM path) is given."""
    parsed = manifest_obj if isinstance(manifest_obj, Manifest) else parse_manifest(dict(manifest_obj))
    data = embed_manifest(wasmtime.wat2wasm(wat), parsed)
    if key is None:
        return data
    private = key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)
    return sign(data, private)


def one_error(conn: apsw.Connection, sql: str, *bindings: Any) -> str:
    """Runs sql, which must fail with apsw.SQLError; returns the message.
    Afterwards checks that the connection still answers a query."""
    with pytest.raises(apsw.SQLError) as info:
        conn.execute(sql, bindings).fetchall()
    assert conn.execute("SELECT 40 + 2").fetchall() == [(42,)]
    return str(info.value)


def shipped(name: str, **options: Any) -> apsw.Connection:
    """An in-memory connection with the shipped, signed example module `name`
    (as users get it: trusted through the examples key)."""
    from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

    return sqlwasm.connect(":memory:", [module_path(name)], trusted_keys=[EXAMPLES_PUBLIC_KEY], **options)


@dataclass(frozen=True)
class KeyPair:
    name: str
    key_path: Path
    pub_path: Path
    private: Ed25519PrivateKey
    public: PublicKey


@pytest.fixture
def keypair(tmp_path: Path) -> KeyPair:
    """A fresh key pair written by sqlwasm's keygen into tmp_path."""
    key_path, pub_path = generate_keypair("publisher", tmp_path)
    private = load_private_key(key_path)
    return KeyPair("publisher", key_path, pub_path, private, public_key_of(private, "publisher"))


@pytest.fixture(scope="session")
def session_key() -> Ed25519PrivateKey:
    """An in-memory signing key shared by the whole session (for tests that
    need a trusted module but are not about signing)."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def runtime(session_key: Ed25519PrivateKey) -> sqlwasm.Runtime:
    """A Runtime that trusts session_key."""
    return sqlwasm.Runtime(trusted_keys=[session_key.public_key()])


@pytest.fixture
def build(session_key: Ed25519PrivateKey) -> Build:
    """build(wat, manifest) -> module bytes signed by session_key."""

    def _build(wat: str, manifest_obj: Mapping[str, Any] | Manifest) -> bytes:
        return wasm_module(wat, manifest_obj, key=session_key)

    return _build


@pytest.fixture
def connect(runtime: sqlwasm.Runtime) -> Iterator[Connect]:
    """connect(*modules) -> an in-memory connection with the modules installed
    by the `runtime` fixture; closed at teardown."""
    opened: list[apsw.Connection] = []

    def _connect(*modules: bytes | sqlwasm.Module) -> apsw.Connection:
        conn = runtime.connect(":memory:", modules)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()
