"""The APSW host: everything sqlwasm needs to know about an apsw.Connection.

A host answers four questions: how the native part gets into a connection
(SQLite's routines pointer and sqlite3* arrive at the extension's entry
point), which connection an object is (for the registry), whether it is
still open, and when statements start and end (for per-statement
instances). A second host (the stdlib's sqlite3) is a second file like this.
"""

from __future__ import annotations

from typing import Any, Callable

import apsw

from . import _native


def attach(conn: apsw.Connection) -> _native.NativeConnection:
    """Loads the native part into conn (as SQLite extension) and opens its state."""
    conn.enable_load_extension(True)
    try:
        conn.load_extension(_native.EXTENSION_PATH, _native.ENTRY_POINT)
        return _native.NativeConnection()
    finally:
        # Leave SQL's load_extension() off: a query must not load code.
        conn.enable_load_extension(False)


def handle(conn: apsw.Connection) -> int:
    """The connection's sqlite3* address; raises if it is closed."""
    return int(conn.sqlite3pointer())


def watch_statements(conn: apsw.Connection, key: str, on_statement: Callable[[int, bool], None]) -> None:
    """on_statement(statement id, started) when a statement starts (also for
    each trigger it fires, under the same id) and when it is reset."""

    def hook(event: dict[str, Any]) -> None:
        on_statement(event["id"], event["code"] == apsw.SQLITE_TRACE_STMT)

    conn.trace_v2(apsw.SQLITE_TRACE_STMT | apsw.SQLITE_TRACE_PROFILE, hook, id=key)
