"""The APSW host: everything sqlwasm needs to know about an apsw.Connection.

A host answers four questions: how the native part gets into a connection
(SQLite's routines pointer and sqlite3* arrive at the extension's entry
point), which connection an object is (for the registry), whether it is
still open, and when statements start and end (for per-statement
instances). It also runs a guest's queries (the sql capability) under the
policy _guest_sql decides. A second host (the stdlib's sqlite3) is a second file like this.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Sequence

import apsw

from . import _native
from ._guest_sql import PROGRESS_STEPS, SQLITE_OK, QueryError, QueryPolicy, QueryStopped


def attach(conn: apsw.Connection) -> _native.NativeConnection:
    """Loads the native part into conn (as SQLite extension) and opens its state."""
    conn.enable_load_extension(True)
    try:
        conn.load_extension(_native.EXTENSION_PATH, _native.ENTRY_POINT)
        return _native.NativeConnection()
    finally:
        # Leave SQL's load_extension() off: a query must not load code.
        conn.enable_load_extension(False)


def owns(conn: Any) -> bool:
    return isinstance(conn, apsw.Connection)


def connection_ref(conn: apsw.Connection) -> Callable[[], Any]:
    """For the sql capability's queries. A plain weak reference: a closed or
    collected connection only makes them fail."""
    return weakref.ref(conn)


def check_module(name: str, instance: str, capabilities: Sequence[str]) -> None:
    """APSW connections can host every module."""


def handle(conn: apsw.Connection) -> int:
    """The connection's sqlite3* address; raises if it is closed."""
    return int(conn.sqlite3pointer())


def watch_statements(conn: apsw.Connection, key: str, on_statement: Callable[[int, bool], None]) -> None:
    """on_statement(statement id, started) when a statement starts (also for
    each trigger it fires, under the same id) and when it is reset."""

    def hook(event: dict[str, Any]) -> None:
        on_statement(event["id"], event["code"] == apsw.SQLITE_TRACE_STMT)

    conn.trace_v2(apsw.SQLITE_TRACE_STMT | apsw.SQLITE_TRACE_PROFILE, hook, id=key)


def run_query(
    conn: apsw.Connection,
    sql: str,
    params: Sequence[Any],
    policy: QueryPolicy,
    on_row: Callable[[tuple[Any, ...]], None],
) -> None:
    """Runs a guest's query (the sql capability, see _guest_sql) on conn, in
    whatever transaction conn is in: prepared under policy's authorizer,
    checked by policy before its first step, stepped to the end under its
    progress handler, and finalized before this returns. The application's
    authorizer, if any, still has its say, and is back when this returns."""
    saved = conn.authorizer
    # A query run from inside another guest's query answers to the application, not to that guest's policy.
    application = saved.application if isinstance(saved, _Authorizer) else saved
    authorizer = _Authorizer(policy, application)
    cursor = _plain_cursor(conn)

    def lookup(lookup_sql: str, lookup_params: Sequence[Any]) -> list[tuple[Any, ...]]:
        authorizer.internal = True
        try:
            return list(_plain_cursor(conn).execute(lookup_sql, lookup_params, can_cache=False))
        finally:
            authorizer.internal = False

    def before_statement(_cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
        return policy.check_statement(cursor.is_readonly, lookup)

    # Both stay until the statement is finalized: a statement that SQLite
    # prepares again (after a schema change) is authorized again by the policy.
    conn.authorizer = authorizer
    conn.set_progress_handler(policy.progress, PROGRESS_STEPS, id=authorizer)
    saved_length = conn.limit(apsw.SQLITE_LIMIT_LENGTH)
    if policy.max_value_bytes is not None:
        conn.limit(apsw.SQLITE_LIMIT_LENGTH, min(saved_length, max(policy.max_value_bytes, 1)))
    try:
        cursor.exec_trace = before_statement
        for row in cursor.execute(sql, params, can_cache=False):
            on_row(row)
    except apsw.InterruptError:
        raise QueryStopped("stopped") from None
    except (apsw.Error, ValueError) as exc:  # ValueError: APSW refuses SQL text with a NUL character
        if policy.refusal is not None:
            raise QueryError(f"query refused: {policy.refusal}") from None
        if isinstance(exc, apsw.AuthError):
            raise QueryError(f"query refused: {exc}") from None
        raise QueryError(f"{type(exc).__name__}: {exc}") from None
    finally:
        try:
            cursor.close(True)
        finally:
            conn.limit(apsw.SQLITE_LIMIT_LENGTH, saved_length)
            conn.set_progress_handler(None, id=authorizer)
            conn.authorizer = saved


def _plain_cursor(conn: apsw.Connection) -> apsw.Cursor:
    """A cursor that the application's exec and row tracers do not touch (they
    would see, or change, a guest's rows)."""
    cursor = conn.cursor()
    cursor.exec_trace = lambda _cursor, _sql, _bindings: True
    cursor.row_trace = lambda _cursor, row: row
    return cursor


class _Authorizer:
    """The policy as an APSW authorizer, then the application's (either may deny)."""

    def __init__(self, policy: QueryPolicy, application: Callable[..., int] | None) -> None:
        self.policy = policy
        self.application = application
        self.internal = False  # the policy's own lookups run unchecked

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if self.internal:
            return SQLITE_OK
        verdict = self.policy.authorize(action, arg1, arg2, db)
        if verdict == SQLITE_OK and self.application is not None:
            return self.application(action, arg1, arg2, db, trigger)
        return verdict
