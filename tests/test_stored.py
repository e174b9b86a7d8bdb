"""Modules stored in the database (the sqlwasm_module table): `sqlwasm
store`, and loading them with db_modules=True / --db-modules on APSW and
stdlib sqlite3 connections, always verified against the caller's keys."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import MEMORY, KeyPair, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import _cli

ADD_WAT = MEMORY + '(func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)'
NEG_WAT = MEMORY + '(func (export "neg") (param i64) (result i64) i64.const 0 local.get 0 i64.sub)'
ADD = manifest(fn("s_add", export="add", args=["integer", "integer"]), name="adder", version="1.0.0")
NEG = manifest(fn("s_neg", export="neg"), name="negator", version="2.0.0")


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    status = _cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def failed(capsys: pytest.CaptureFixture[str], *argv: Any) -> str:
    """A command that must fail with one `sqlwasm: error:` line; the message."""
    status, out, err = run(capsys, *argv)
    assert status == 1, (out, err)
    assert err.startswith("sqlwasm: error: ") and err.count("\n") == 1, err
    return err.removeprefix("sqlwasm: error: ").strip()


def usage_error(capsys: pytest.CaptureFixture[str], *argv: Any) -> str:
    with pytest.raises(SystemExit) as exc:
        _cli.main([str(a) for a in argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def modules(tmp_path: Path, keypair: KeyPair) -> dict[str, Path]:
    """adder and negator signed by keypair; adder unsigned; adder signed by another key."""
    paths = {
        "adder": wasm_module(ADD_WAT, ADD, key=keypair.private),
        "negator": wasm_module(NEG_WAT, NEG, key=keypair.private),
        "unsigned": wasm_module(ADD_WAT, ADD),
        "stranger": wasm_module(ADD_WAT, ADD, key=Ed25519PrivateKey.generate()),
    }
    out = {}
    for name, data in paths.items():
        out[name] = tmp_path / f"{name}.wasm"
        out[name].write_bytes(data)
    return out


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]) -> Path:
    """A database with adder and negator stored, signed by keypair."""
    path = tmp_path / "data.db"
    status, _, err = run(capsys, "store", path, modules["adder"], modules["negator"], "--trust", keypair.pub_path, "--create")
    assert status == 0, err
    return path


def rows(path: Path, sql: str, *bindings: Any) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(path))
    try:
        return list(conn.execute(sql, bindings))
    finally:
        conn.close()


def stored_sha256(path: Path, name: str) -> str:
    ((sha,),) = rows(path, "SELECT sha256 FROM sqlwasm_module WHERE name = ?", name)
    return str(sha)


# ------------------------------------------------------------ sqlwasm store


def test_store_writes_the_table(db: Path, modules: dict[str, Path]) -> None:
    stored = rows(db, "SELECT name, version, sha256, wasm FROM sqlwasm_module ORDER BY name")
    assert [(n, v) for n, v, _, _ in stored] == [("adder", "1.0.0"), ("negator", "2.0.0")]
    for name, _, sha, wasm in stored:
        assert wasm == modules[name].read_bytes()
        assert sha == hashlib.sha256(wasm).hexdigest()
    ((sql,),) = rows(db, "SELECT sql FROM sqlite_master WHERE name = 'sqlwasm_module'")
    assert "name TEXT PRIMARY KEY" in sql


def test_store_says_what_it_stored_and_replaced(
    db: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    status, out, _ = run(capsys, "store", db, modules["adder"], "--trust", keypair.pub_path)
    assert status == 0
    sha = hashlib.sha256(modules["adder"].read_bytes()).hexdigest()
    key_id = keypair.public.key_id
    assert out == f"replaced adder 1.0.0 from {modules['adder']} in {db} (signed by key {key_id}, sha256 {sha[:12]})\n"
    assert rows(db, "SELECT count(*) FROM sqlwasm_module") == [(2,)]


def test_store_list(db: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]) -> None:
    status, out, _ = run(capsys, "store", db, "--list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "version", "sha256", "signer", "bytes"]
    adder = modules["adder"].read_bytes()
    assert lines[2].split() == [
        "adder", "1.0.0", hashlib.sha256(adder).hexdigest()[:12], keypair.public.key_id, str(len(adder))
    ]
    assert lines[3].split()[:2] == ["negator", "2.0.0"]
    assert len(lines) == 4


def test_store_list_without_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.db"
    rows(path, "CREATE TABLE t(x)")
    assert run(capsys, "store", path, "--list") == (0, f"no modules stored in {path}\n", "")


def test_store_remove(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "store", db, "--remove", "adder")
    assert (status, out) == (0, f"removed adder from {db}\n")
    assert rows(db, "SELECT name FROM sqlwasm_module") == [("negator",)]
    assert failed(capsys, "store", db, "--remove", "adder") == f"no module 'adder' stored in {db}"


def test_store_remove_is_all_or_nothing(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert failed(capsys, "store", db, "--remove", "adder", "--remove", "nope") == f"no module 'nope' stored in {db}"
    assert len(rows(db, "SELECT name FROM sqlwasm_module")) == 2


def test_store_needs_an_existing_database_or_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    path = tmp_path / "new.db"
    message = failed(capsys, "store", path, modules["adder"], "--trust", keypair.pub_path)
    assert message == f"no database {path} (pass --create to make a new one)"
    assert not path.exists()
    assert failed(capsys, "store", path, "--list").startswith("no database")


def test_store_needs_one_action(db: Path, capsys: pytest.CaptureFixture[str], modules: dict[str, Path]) -> None:
    assert "one of them" in usage_error(capsys, "store", db)
    assert "one of them" in usage_error(capsys, "store", db, modules["adder"], "--list")
    assert "one of them" in usage_error(capsys, "store", db, "--list", "--remove", "adder")


@pytest.mark.parametrize(
    "which, expected",
    [
        ("unsigned", "is not signed: sign it with `sqlwasm sign"),
        ("stranger", "which is not trusted: pass --trust KEY.pub"),
    ],
)
def test_store_refuses_what_is_not_trusted(
    db: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path], which: str, expected: str
) -> None:
    before = rows(db, "SELECT * FROM sqlwasm_module ORDER BY name")
    assert expected in failed(capsys, "store", db, modules[which], "--trust", keypair.pub_path)
    assert rows(db, "SELECT * FROM sqlwasm_module ORDER BY name") == before


def test_store_refuses_a_tampered_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    data = modules["adder"].read_bytes()
    assert data.count(b'"1.0.0"') == 1
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(data.replace(b'"1.0.0"', b'"1.0.1"'))  # the manifest's version, covered by the signature
    path = tmp_path / "new.db"
    assert "signature" in failed(capsys, "store", path, modules["negator"], bad, "--trust", keypair.pub_path, "--create")
    assert rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'sqlwasm_module'") == [(0,)]


def test_store_refuses_what_would_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    """Signed and trusted, but its manifest names an export it lacks: nothing is stored, even the good one."""
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(wasm_module(ADD_WAT, manifest(fn("s_x", export="missing"), name="broken"), key=keypair.private))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    path = tmp_path / "new.db"
    assert "missing" in failed(capsys, "store", path, modules["adder"], broken, "--trust", keypair.pub_path, "--create")
    assert failed(capsys, "store", path, text, "--trust", keypair.pub_path, "--create") == f"{text} is not a wasm module"
    assert rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'sqlwasm_module'") == [(0,)]


def test_store_refuses_two_modules_of_one_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    again = tmp_path / "again.wasm"
    again.write_bytes(modules["adder"].read_bytes())
    message = failed(capsys, "store", tmp_path / "x.db", modules["adder"], again, "--trust", keypair.pub_path, "--create")
    assert message == f"{modules['adder']} and {again} are both module 'adder'"


# ------------------------------------------------------------ loading


def test_connect_loads_stored_modules_only_when_asked(db: Path, keypair: KeyPair) -> None:
    conn = sqlwasm.connect(str(db), db_modules=True, trusted_keys=[keypair.pub_path])
    try:
        assert conn.execute("SELECT s_add(40, 2), s_neg(7)").fetchall() == [(42, -7)]
    finally:
        conn.close()
    plain = sqlwasm.connect(str(db), trusted_keys=[keypair.pub_path])
    try:
        with pytest.raises(apsw.SQLError, match="no such function: s_add"):
            plain.execute("SELECT s_add(1, 2)").fetchall()
    finally:
        plain.close()


def test_runtime_connect_with_explicit_and_stored_modules(db: Path, keypair: KeyPair, tmp_path: Path) -> None:
    other = wasm_module(ADD_WAT, manifest(fn("o_add", export="add", args=["integer", "integer"]), name="other"),
                        key=keypair.private)
    runtime = sqlwasm.Runtime(trusted_keys=keypair.pub_path)
    reader = apsw.Connection(str(db))
    try:
        assert [m.name for m in runtime.load_stored(reader)] == ["adder", "negator"]
    finally:
        reader.close()
    conn = runtime.connect(str(db), other, db_modules=True)
    try:
        assert conn.execute("SELECT o_add(1, 2), s_add(3, 4), s_neg(5)").fetchall() == [(3, 7, -5)]
    finally:
        conn.close()


@pytest.mark.parametrize("row_factory", [None, sqlite3.Row])
def test_install_on_a_stdlib_connection(db: Path, keypair: KeyPair, row_factory: Any) -> None:
    conn = sqlite3.connect(str(db))
    conn.row_factory = row_factory  # Datasette sets sqlite3.Row
    try:
        loaded = sqlwasm.install(conn, [], db_modules=True, trusted_keys=[keypair.pub_path])
        assert [(m.name, m.signer) for m in loaded] == [("adder", keypair.public.key_id), ("negator", keypair.public.key_id)]
        assert tuple(conn.execute("SELECT s_add(40, 2), s_neg(7)").fetchone()) == (42, -7)
    finally:
        conn.close()


def test_install_on_an_apsw_connection_with_a_row_tracer(db: Path, keypair: KeyPair) -> None:
    conn = apsw.Connection(str(db))
    conn.row_trace = lambda cursor, row: {"row": row}
    try:
        sqlwasm.install(conn, [], db_modules=True, trusted_keys=[keypair.pub_path])
        traced: list[Any] = conn.execute("SELECT s_add(40, 2)").fetchall()
        assert traced == [{"row": (42,)}]
    finally:
        conn.close()


def test_no_table_loads_nothing(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "plain.db"
    rows(path, "CREATE TABLE t(x)")
    stdlib = sqlite3.connect(str(path))
    try:
        assert sqlwasm.install(stdlib, [], db_modules=True, trusted_keys=[keypair.pub_path]) == []
    finally:
        stdlib.close()
    conn = sqlwasm.connect(str(path), db_modules=True)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
    finally:
        conn.close()


# ------------------------------------------------------------ refused


def refusal(db: Path, error: type[sqlwasm.Error], **options: Any) -> str:
    """Loading db's stored modules must fail on APSW and on sqlite3 alike,
    with the same message, leaving no module installed."""
    with pytest.raises(error) as on_apsw:
        sqlwasm.connect(str(db), db_modules=True, **options)
    conn = sqlite3.connect(str(db))
    try:
        with pytest.raises(error) as on_sqlite3:
            sqlwasm.install(conn, [], db_modules=True, **options)
        with pytest.raises(sqlite3.OperationalError, match="no such function"):
            conn.execute("SELECT s_neg(1)")
    finally:
        conn.close()
    assert str(on_apsw.value) == str(on_sqlite3.value)
    return str(on_apsw.value)


def test_refused_without_trust(db: Path) -> None:
    message = refusal(db, sqlwasm.SignatureError)
    assert message.startswith(f"module 'adder' stored in {db} is signed by key ")
    assert "not in trusted_keys" in message


def test_refused_when_signed_by_another_key(db: Path) -> None:
    stranger = Ed25519PrivateKey.generate().public_key()
    assert "not in trusted_keys" in refusal(db, sqlwasm.SignatureError, trusted_keys=[stranger])


def test_refused_when_the_blob_was_tampered_with(db: Path, keypair: KeyPair) -> None:
    """The sha256 column updated to match: the signature still catches it."""
    ((wasm,),) = rows(db, "SELECT wasm FROM sqlwasm_module WHERE name = 'negator'")
    assert wasm.count(b'"2.0.0"') == 1
    tampered = wasm.replace(b'"2.0.0"', b'"2.0.1"')  # the manifest's version, covered by the signature
    rows(db, "UPDATE sqlwasm_module SET wasm = ?, sha256 = ? WHERE name = 'negator'",
         bytes(tampered), hashlib.sha256(tampered).hexdigest())
    message = refusal(db, sqlwasm.SignatureError, trusted_keys=[keypair.pub_path])
    assert message.startswith(f"module 'negator' stored in {db}: ")
    assert "signature" in message


def test_refused_when_the_sha256_does_not_match(db: Path, keypair: KeyPair) -> None:
    rows(db, "UPDATE sqlwasm_module SET sha256 = ? WHERE name = 'negator'", "0" * 64)
    message = refusal(db, sqlwasm.SignatureError, trusted_keys=[keypair.pub_path])
    assert message.startswith(f"module 'negator' stored in {db}: its sha256 '{'0' * 64}' is not its wasm's")


def test_unsigned_loads_only_when_the_caller_allows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], modules: dict[str, Path]
) -> None:
    path = tmp_path / "dev.db"
    status, out, _ = run(capsys, "store", path, modules["unsigned"], "--allow-unsigned", "--create")
    assert status == 0 and "(unsigned, sha256 " in out
    assert "is not signed; refusing to load it" in refusal(path, sqlwasm.SignatureError)
    conn = sqlwasm.connect(str(path), db_modules=True, allow_unsigned=True)
    try:
        assert conn.execute("SELECT s_add(1, 2)").fetchall() == [(3,)]
    finally:
        conn.close()


def test_refused_when_the_row_name_is_not_the_manifest_name(db: Path, keypair: KeyPair) -> None:
    rows(db, "UPDATE sqlwasm_module SET name = 'geo' WHERE name = 'adder'")
    message = refusal(db, sqlwasm.ManifestError, trusted_keys=[keypair.pub_path])
    assert message == f"module 'geo' stored in {db}: its manifest names it 'adder'"


def test_refused_when_a_value_has_the_wrong_type(db: Path, keypair: KeyPair) -> None:
    rows(db, "UPDATE sqlwasm_module SET wasm = 'text' WHERE name = 'adder'")
    message = refusal(db, sqlwasm.ManifestError, trusted_keys=[keypair.pub_path])
    assert message == f"module 'adder' stored in {db}: its wasm is of type text, not a blob"


@pytest.mark.parametrize(
    "create, problem",
    [
        ("CREATE TABLE sqlwasm_module(name TEXT PRIMARY KEY, wasm BLOB)",
         "its columns are (name PRIMARY KEY, wasm), not (name PRIMARY KEY, version, sha256, wasm)"),
        ("CREATE TABLE sqlwasm_module(name TEXT, version TEXT, sha256 TEXT, wasm BLOB)",
         "its columns are (name, version, sha256, wasm), not (name PRIMARY KEY, version, sha256, wasm)"),
        ("CREATE TABLE sqlwasm_module(name TEXT PRIMARY KEY, version TEXT, sha256 TEXT, wasm BLOB, key TEXT)",
         "its columns are (name PRIMARY KEY, version, sha256, wasm, key)"),
    ],
)
def test_a_table_of_the_wrong_shape_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path], create: str,
    problem: str,
) -> None:
    path = tmp_path / "odd.db"
    rows(path, create)
    message = refusal(path, sqlwasm.Error, trusted_keys=[keypair.pub_path])
    assert message.startswith(f"table sqlwasm_module in {path} is not a table of stored modules: ")
    assert problem in message
    assert problem in failed(capsys, "store", path, modules["adder"], "--trust", keypair.pub_path)
    assert problem in failed(capsys, "store", path, "--list")


def test_a_view_of_that_name_is_an_error(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "view.db"
    rows(path, "CREATE VIEW sqlwasm_module AS SELECT 'a' AS name, '1' AS version, '' AS sha256, x'00' AS wasm")
    message = refusal(path, sqlwasm.Error, trusted_keys=[keypair.pub_path])
    assert message == f"sqlwasm_module in {path} is a view, not a table of stored modules"


def test_one_bad_stored_module_installs_nothing(db: Path, keypair: KeyPair) -> None:
    """An explicit module and a good stored one are not installed either."""
    rows(db, "UPDATE sqlwasm_module SET sha256 = ? WHERE name = 'negator'", "0" * 64)
    other = wasm_module(ADD_WAT, manifest(fn("o_add", export="add", args=["integer", "integer"]), name="other"),
                        key=keypair.private)
    conn = sqlite3.connect(str(db))
    try:
        with pytest.raises(sqlwasm.SignatureError):
            sqlwasm.install(conn, [other], db_modules=True, trusted_keys=[keypair.pub_path])
        for function in ("o_add", "s_add"):
            with pytest.raises(sqlite3.OperationalError, match="no such function"):
                conn.execute(f"SELECT {function}(1, 2)")
    finally:
        conn.close()


# ------------------------------------------------------------ copies carry them


def test_vacuum_into_carries_the_modules(db: Path, tmp_path: Path, keypair: KeyPair) -> None:
    copy = tmp_path / "copy.db"
    rows(db, "VACUUM INTO ?", str(copy))
    conn = sqlwasm.connect(str(copy), db_modules=True, trusted_keys=[keypair.pub_path])
    try:
        assert conn.execute("SELECT s_add(1, 2), s_neg(3)").fetchall() == [(3, -3)]
    finally:
        conn.close()


def test_backup_carries_the_modules(db: Path, tmp_path: Path, keypair: KeyPair) -> None:
    copy = tmp_path / "backup.db"
    source, destination = apsw.Connection(str(db)), apsw.Connection(str(copy))
    try:
        with destination.backup("main", source, "main") as backup:
            backup.step()
    finally:
        source.close()
        destination.close()
    conn = sqlite3.connect(str(copy))
    try:
        sqlwasm.install(conn, [], db_modules=True, trusted_keys=[keypair.pub_path])
        assert conn.execute("SELECT s_add(1, 2), s_neg(3)").fetchall() == [(3, -3)]
    finally:
        conn.close()


# ------------------------------------------------------------ --db-modules


def test_query_with_db_modules(db: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair) -> None:
    status, out, err = run(capsys, "query", db, "SELECT s_add(40, 2) AS v", "--db-modules", "--trust", keypair.pub_path, "--json")
    assert (status, out) == (0, '[\n {\n  "v": 42\n }\n]\n'), err
    assert "no such function: s_add" in failed(capsys, "query", db, "SELECT s_add(40, 2)", "--trust", keypair.pub_path)


def test_query_with_db_modules_refuses_untrusted(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = failed(capsys, "query", db, "SELECT 1", "--db-modules")
    assert message.startswith(f"module 'adder' stored in {db} is signed by key ")


def test_shell_with_db_modules(db: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair) -> None:
    status, out, err = run(capsys, "shell", db, "--db-modules", "--trust", keypair.pub_path, "SELECT s_neg(5);")
    assert status == 0, err
    assert "-5" in out


def test_shell_open_swaps_the_stored_modules_for_the_new_databases(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    """.open with --db-modules installs the new database's stored modules, and
    the old database's are gone; modules loaded by hand stay."""
    other = tmp_path / "other.db"
    status, _, err = run(capsys, "store", other, modules["negator"], "--trust", keypair.pub_path, "--create")
    assert status == 0, err
    script = f"SELECT s_add(1, 2);\n.modules\n.open {other}\nSELECT s_neg(7);\n.modules\nSELECT s_add(1, 2);\n"
    result = shell(db, "--db-modules", "--trust", keypair.pub_path, "--load", "geo", stdin=script)
    before, found, after = result.stdout.partition("-7\n")
    assert found and before.startswith("3\n"), (result.stdout, result.stderr)
    assert "adder 1.0.0  (stored in the database)" in before and "geo " in before
    assert "adder" not in after and "negator 2.0.0  (stored in the database)" in after and "geo " in after
    assert "no such function: s_add" in result.stderr and "Traceback" not in result.stderr
    # Without --db-modules, .open loads none of the new database's.
    result = shell(":memory:", "--load", "geo", stdin=f".open {other}\nSELECT s_neg(7);\n")
    assert "no such function: s_neg" in result.stderr


def shell(*argv: Any, stdin: str) -> subprocess.CompletedProcess[str]:
    """`sqlwasm shell` reading stdin, run outside the checkout (the installed package)."""
    return subprocess.run(
        [sys.executable, "-m", "sqlwasm", "shell", *map(str, argv)], input=stdin, capture_output=True, text=True,
        timeout=120, cwd=tempfile.gettempdir(),
    )


# ------------------------------------------------------------ whatever the rows hold


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=20), st.binary(max_size=8), st.integers(-(2**63), 2**63 - 1), st.none()),
       version=st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), st.none()),
       wasm=st.one_of(st.binary(max_size=64), st.text(max_size=8), st.floats(allow_nan=False), st.none()),
       honest_sha=st.booleans())
def test_any_row_is_refused_with_a_sqlwasm_error(
    tmp_path_factory: pytest.TempPathFactory, keypair: KeyPair, name: Any, version: Any, wasm: Any, honest_sha: bool
) -> None:
    """No row loads unless it is a module signed by a trusted key; anything
    else is a sqlwasm error (never another exception), on both hosts."""
    path = tmp_path_factory.mktemp("rows") / "rows.db"
    digest = hashlib.sha256(wasm).hexdigest() if isinstance(wasm, bytes) and honest_sha else "0" * 64
    rows(path, "CREATE TABLE sqlwasm_module(name TEXT PRIMARY KEY, version TEXT, sha256 TEXT, wasm BLOB)")
    rows(path, "INSERT INTO sqlwasm_module VALUES (?, ?, ?, ?)", name, version, digest, wasm)
    message = refusal(path, sqlwasm.Error, trusted_keys=[keypair.pub_path])
    assert message.isprintable()


def test_a_closed_connection_is_a_sqlwasm_error(db: Path, keypair: KeyPair) -> None:
    conn = sqlite3.connect(str(db))
    conn.close()
    with pytest.raises(sqlwasm.Error, match="cannot read the stored modules: "):
        sqlwasm.install(conn, [], db_modules=True, trusted_keys=[keypair.pub_path])
    closed = apsw.Connection(str(db))
    closed.close()
    with pytest.raises(sqlwasm.Error, match="cannot read the stored modules: "):
        sqlwasm.Runtime(trusted_keys=[keypair.pub_path]).load_stored(closed)


def test_a_read_only_database_cannot_be_written(
    db: Path, capsys: pytest.CaptureFixture[str], keypair: KeyPair, modules: dict[str, Path]
) -> None:
    uri = f"file:{db}?mode=ro"
    message = failed(capsys, "store", uri, modules["adder"], "--trust", keypair.pub_path)
    assert message.startswith("cannot write the stored modules: ") and "readonly" in message
    assert failed(capsys, "store", uri, "--remove", "adder").startswith("cannot write the stored modules: ")
    assert run(capsys, "store", uri, "--list")[0] == 0
