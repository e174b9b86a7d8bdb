"""Modules stored in a database: the sqlwasm_module table.

A database may carry signed modules beside its data (``sqlwasm store``),
so that they travel with it through copies, backups and ``VACUUM INTO``.
The table holds bytes only: which keys are trusted, and whether unsigned
modules load, is always the caller's choice (docs/security.md).

Everything here goes through an ``Execute``, a function that runs one SQL
statement with its parameters and returns the rows as tuples, so the same
code reads APSW and stdlib sqlite3 connections (``executor`` makes one).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import apsw

from ._errors import Error, ManifestError, SignatureError

TABLE = "sqlwasm_module"
COLUMNS = ("name", "version", "sha256", "wasm")
CREATE = f"CREATE TABLE main.{TABLE}(name TEXT PRIMARY KEY, version TEXT, sha256 TEXT, wasm BLOB)"

Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class StoredModule:
    """One row of the table, its types checked; the bytes are not verified
    yet (Runtime.load_stored does that)."""

    name: str
    version: str
    sha256: str
    wasm: bytes


def executor(conn: Any) -> Execute:
    """An Execute for an apsw.Connection or a sqlite3.Connection that
    returns plain tuples whatever row tracer or row factory the application
    set on the connection."""
    if isinstance(conn, apsw.Connection):

        def run_apsw(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            try:
                cursor = conn.cursor()
                cursor.row_trace = _plain_row  # a cursor's tracer takes the place of the connection's
                return [tuple(row) for row in cursor.execute(sql, tuple(params))]
            except apsw.Error as exc:
                raise Error(f"cannot {_verb(sql)} the stored modules: {exc}") from exc

        return run_apsw
    if isinstance(conn, sqlite3.Connection):

        def run_sqlite3(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            try:
                cursor = conn.cursor()
                cursor.row_factory = None
                try:
                    return [tuple(row) for row in cursor.execute(sql, tuple(params))]
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                raise Error(f"cannot {_verb(sql)} the stored modules: {exc}") from exc

        return run_sqlite3
    raise Error(f"expected an apsw.Connection or a sqlite3.Connection, got {type(conn).__name__}")


def open_database(path: str) -> apsw.Connection:
    """An APSW connection for reading and writing the table (waiting a while
    for other writers); a `file:` path is a URI."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI)
    conn.set_busy_timeout(5000)
    return conn


def _verb(sql: str) -> str:
    return "read" if sql.startswith("SELECT") else "write"


def _plain_row(cursor: Any, row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row


def database_label(execute: Execute) -> str:
    """The main database's file, as SQLite names it, for messages."""
    rows = execute("SELECT file FROM pragma_database_list WHERE name = 'main'", ())
    file = rows[0][0] if rows else None
    if isinstance(file, bytes):  # a sqlite3 text_factory of bytes
        file = file.decode("utf-8", "replace")
    return file or ":memory:"


def table_exists(execute: Execute, where: str) -> bool:
    """Whether the main schema has the table; a table of another shape, or a
    view or index of that name, is an error rather than no table."""
    kinds = execute(f"SELECT type FROM main.sqlite_master WHERE name = '{TABLE}' COLLATE NOCASE", ())
    if not kinds:
        return False
    kind = kinds[0][0]
    if kind != "table":
        raise Error(f"{TABLE} in {where} is a {kind}, not a table of stored modules")
    columns = execute(f"SELECT name, pk FROM pragma_table_info('{TABLE}', 'main') ORDER BY cid", ())
    shape = tuple((str(name).lower(), pk) for name, pk in columns)
    expected = tuple((name, 1 if name == "name" else 0) for name in COLUMNS)
    if shape != expected:
        found = ", ".join(f"{name}{' PRIMARY KEY' if pk else ''}" for name, pk in shape)
        raise Error(
            f"table {TABLE} in {where} is not a table of stored modules: its columns are ({found}), "
            f"not (name PRIMARY KEY, version, sha256, wasm)"
        )
    return True


def read(execute: Execute, where: str) -> list[StoredModule]:
    """Every stored module, by name; none if the table does not exist. A row
    whose values are not of the right types, or whose sha256 is not its
    blob's, is an error naming it."""
    if not table_exists(execute, where):
        return []
    rows = execute(
        f"SELECT name, typeof(name), version, typeof(version), sha256, typeof(sha256), wasm, typeof(wasm) "
        f"FROM main.{TABLE} ORDER BY name",
        (),
    )
    modules = []
    for name, name_type, version, version_type, sha256, sha256_type, wasm, wasm_type in rows:
        label = f"module {_text(name)!r} stored in {where}"
        if name_type != "text":
            raise ManifestError(f"a stored module in {where} has a name of type {name_type}, not text")
        for column, kind in (("version", version_type), ("sha256", sha256_type)):
            if kind != "text":
                raise ManifestError(f"{label}: its {column} is of type {kind}, not text")
        if wasm_type != "blob":
            raise ManifestError(f"{label}: its wasm is of type {wasm_type}, not a blob")
        data = bytes(wasm)
        digest = hashlib.sha256(data).hexdigest()
        if _text(sha256).lower() != digest:
            raise SignatureError(
                f"{label}: its sha256 {_text(sha256)[:64]!r} is not its wasm's ({digest}); the row was altered"
            )
        modules.append(StoredModule(_text(name), _text(version), digest, data))
    return modules


def _text(value: Any) -> str:
    """A TEXT value as the connection returned it (bytes under a sqlite3
    text_factory of bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def write(execute: Execute, where: str, name: str, version: str, data: bytes) -> bool:
    """Stores (or replaces) one module, in the caller's transaction, making
    the table if there is none; True if a module of that name was replaced."""
    if not table_exists(execute, where):
        execute(CREATE, ())
    replaced = bool(execute(f"SELECT 1 FROM main.{TABLE} WHERE name = ?", (name,)))
    execute(
        f"INSERT OR REPLACE INTO main.{TABLE}(name, version, sha256, wasm) VALUES (?, ?, ?, ?)",
        (name, version, hashlib.sha256(data).hexdigest(), data),
    )
    return replaced


def remove(execute: Execute, where: str, name: str) -> bool:
    """Deletes one stored module; False if there was none of that name."""
    if not table_exists(execute, where):
        return False
    found = bool(execute(f"SELECT 1 FROM main.{TABLE} WHERE name = ?", (name,)))
    if found:
        execute(f"DELETE FROM main.{TABLE} WHERE name = ?", (name,))
    return found
