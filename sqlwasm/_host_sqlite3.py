"""The stdlib host: what sqlwasm needs to know about a sqlite3.Connection.

Python's sqlite3 is often built without load_extension (this project's
machines are), and never hands out its sqlite3*. So the native part is not
loaded into the connection: it gets the SQLite routines of the library the
_sqlite3 module links (looked up by name, once per library) and the
connection's sqlite3*, read from the Connection object, where CPython keeps
it right after the object header, and checked through SQLite before use.

What this host cannot do (each refused with an error that says so): per
statement instances (the stdlib reports no statement starts), and the sql
capability (an application's authorizer cannot be read back, so it could not
be restored after a guest's query). Before SQLite 3.41 (no
sqlite3_is_interrupted), interrupt() stops a statement between guest calls,
not inside one; the time limit still stops a call.
"""

from __future__ import annotations

import ctypes
import sqlite3
import sys
import threading
from typing import Any, Callable, Sequence

from . import _native
from ._errors import Error

_routines: int | None = None
_routines_lock = threading.Lock()


class HostError(Error):
    """What a stdlib sqlite3.Connection cannot do with sqlwasm."""


def _library() -> int:
    global _routines
    with _routines_lock:
        if _routines is None:
            import _sqlite3

            _routines = _native.api_of_library(_sqlite3.__file__)
        return _routines


def owns(conn: Any) -> bool:
    return isinstance(conn, sqlite3.Connection)


def handle(conn: sqlite3.Connection) -> int:
    """The connection's sqlite3* address; raises if it is closed."""
    try:
        conn.total_changes  # noqa: B018 - raises ProgrammingError once the connection is closed
    except sqlite3.ProgrammingError as exc:
        raise Error(f"the connection is closed: {exc}") from exc
    if sys.implementation.name != "cpython":
        raise HostError("a stdlib sqlite3 connection's database handle is found only on CPython")
    db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not db:
        raise Error("the connection is closed")
    return int(db)


def attach(conn: sqlite3.Connection) -> _native.NativeConnection:
    """Opens sqlwasm's native state for conn, after checking, through SQLite,
    that the sqlite3* found in the Connection object is conn's."""
    routines, db = _library(), handle(conn)
    limit = sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH
    saved = conn.getlimit(limit)
    marker = 987 if saved != 987 else 986
    conn.setlimit(limit, marker)
    try:
        if _native.api_limit(routines, db, limit, -1) != marker:
            raise HostError("cannot find this sqlite3.Connection's database handle (an unsupported Python build)")
    finally:
        conn.setlimit(limit, saved)
    return _native.NativeConnection(routines, db)


def connection_ref(conn: sqlite3.Connection) -> Callable[[], Any]:
    """sqlite3.Connection takes no weak references; nothing here needs the object later."""
    return lambda: None


def watch_statements(conn: sqlite3.Connection, key: str, on_statement: Callable[[int, bool], None]) -> None:
    raise HostError(
        "modules with instance = \"statement\" need an APSW connection: the stdlib's sqlite3 reports no "
        "statement starts"
    )


def run_query(
    conn: Any, sql: str, params: Sequence[Any], policy: Any, on_row: Callable[[tuple[Any, ...]], None]
) -> None:
    raise HostError("the sql capability needs an APSW connection")


def check_module(name: str, instance: str, capabilities: Sequence[str]) -> None:
    """Refuses, before anything is registered, what this host cannot do."""
    if instance == "statement":
        raise HostError(
            f"module '{name}' asks for a fresh instance per statement (instance = \"statement\"), which needs "
            "an APSW connection: the stdlib's sqlite3 reports no statement starts"
        )
    if "sql" in capabilities:
        raise HostError(
            f"module '{name}' has the sql capability, which needs an APSW connection (the stdlib's sqlite3 "
            "cannot read back an application's authorizer to restore it after a guest's query)"
        )
