"""What is loaded, visible in SQL: the sqlwasm_modules and sqlwasm_functions
tables of every connection with sqlwasm (native/catalog.c, _catalog.py)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import apsw
import pytest
from conftest import MEMORY, Build, fn, manifest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm


def open_connection(kind: str) -> Any:
    return apsw.Connection(":memory:") if kind == "apsw" else sqlite3.connect(":memory:")


@pytest.mark.parametrize("kind", ["apsw", "sqlite3"])
def test_modules_and_functions_are_listed(kind: str) -> None:
    conn = open_connection(kind)
    loaded = sqlwasm.install(conn, [module_path("geo"), module_path("stats")], trusted_keys=[EXAMPLES_PUBLIC_KEY])
    modules = conn.execute("SELECT * FROM sqlwasm_modules ORDER BY name").fetchall()
    assert modules == [
        (m.name, m.version, m.sha256, m.signer, "[]", "connection") for m in sorted(loaded, key=lambda m: m.name)
    ]
    geo = conn.execute("SELECT name, kind, abi, args, returns, deterministic, flags FROM sqlwasm_functions "
                       "WHERE module = 'geo' ORDER BY name").fetchall()  # fmt: skip
    assert [row[0] for row in geo] == sorted(f.name for f in loaded[0].functions)
    assert ("geo_haversine", "scalar", "raw", json.dumps(["real"] * 4), "real", 1, "INNOCUOUS DETERMINISTIC") in geo
    grid = [row for row in geo if row[0] == "geo_grid"][0]
    assert grid[1] == "table" and grid[4].startswith("table(lat_index integer, lon_index integer")
    median = conn.execute("SELECT name, kind, args, returns FROM sqlwasm_functions "
                          "WHERE name LIKE 'stats_median%' ORDER BY name").fetchall()  # fmt: skip
    assert median == [
        ("stats_median", "window", '["real"]', "real"),
        ("stats_median_merge", "aggregate", '["blob"]', "real"),
        ("stats_median_partial", "aggregate", '["real"]', "blob"),
    ]
    conn.close()


def test_flags_are_what_sqlite_was_told(build: Build, session_key: Ed25519PrivateKey) -> None:
    wat = f'(module (import "sqlwasm" "log" (func (param i32 i32 i32))) {MEMORY} ' \
          '(func (export "f") (param i64) (result i64) (local.get 0)))'  # fmt: skip
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["log"], trust_deterministic=False)
    conn = runtime.connect(":memory:", [build(wat, manifest(fn("f", deterministic=True), name="lg", capabilities=["log"]))])
    assert conn.execute("SELECT deterministic, flags FROM sqlwasm_functions").fetchall() == [(0, "DIRECTONLY")]
    assert conn.execute("SELECT capabilities FROM sqlwasm_modules").fetchall() == [('["log"]',)]
    conn.close()


def test_an_install_that_failed_is_not_listed(build: Build, session_key: Ed25519PrivateKey) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    conn = apsw.Connection(":memory:")
    conn.create_scalar_function("b", lambda x: x)
    wat = f'(module {MEMORY} (func (export "f") (param i64) (result i64) (local.get 0)))'
    runtime.install(conn, runtime.load(build(wat, manifest(fn("a", export="f"), name="one"))))
    with pytest.raises(sqlwasm.ManifestError):
        runtime.install(conn, runtime.load(build(wat, manifest(fn("b", export="f"), name="two"))))
    assert conn.execute("SELECT name FROM sqlwasm_modules").fetchall() == [("one",)]
    assert conn.execute("SELECT module, name FROM sqlwasm_functions").fetchall() == [("one", "a")]
    conn.close()


def test_the_catalog_names_are_reserved() -> None:
    from sqlwasm._manifest import parse_manifest

    for name in ("sqlwasm_modules", "SQLWASM_FUNCTIONS"):
        with pytest.raises(sqlwasm.ManifestError, match="name is reserved by sqlwasm"):
            parse_manifest(manifest(fn(name)))
