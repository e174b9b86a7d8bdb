"""The `sql` capability: a guest reads its own database, within what the host granted.

query(sql, params) runs one statement eagerly: it is prepared, bound, stepped
to the end and finalized before the host function returns, so no statement a
guest started can outlive its call. The rows wait in a cursor (already
msgpack-encoded) that query_next hands out in batches that fit the guest's
buffer. Errors are values: a query that fails or is refused still gives a
cursor, whose query_next returns {"error": text}. Only the end of the
caller's time and interrupt() stop the guest's call (a trap).

What a query may do is decided by SQLite, not by parsing SQL: while the
query is prepared, an authorizer (QueryPolicy.authorize) sees every action
and allows only reading; just before the statement first steps,
QueryPolicy.check_statement looks at what it reads and calls, and at
sqlite3_stmt_readonly. docs/security.md has the rules. The host layer
(_host_apsw.run_query) installs the policy on the connection and removes it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import msgpack  # type: ignore[import-untyped]  # ships no type information

from ._engine import GuestMemory
from ._errors import Error, MarshallingError, TrapError

# SQLite's authorizer action codes (sqlite3.h, stable across versions).
SQLITE_OK, SQLITE_DENY = 0, 1
SQLITE_READ, SQLITE_SELECT, SQLITE_FUNCTION, SQLITE_RECURSIVE = 20, 21, 31, 33
SQLITE_PRAGMA = 19
SQLITE_DIRECTONLY = 0x80000  # a function's flag, as PRAGMA function_list shows it

# The built-in eponymous virtual tables a query may read even when the grant
# lists tables: they compute from their arguments and read nothing stored.
HARMLESS_TABLE_FUNCTIONS = frozenset({"json_each", "json_tree", "jsonb_each", "jsonb_tree"})
# SQLite built-ins that read the clock or randomness: a query may call them
# only if the module was also granted that capability (sql alone is neither).
BUILTIN_NEEDS = {
    **dict.fromkeys(("random", "randomblob"), "random"),
    **dict.fromkeys(
        ("date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff", "current_date",
         "current_time", "current_timestamp"),
        "clock",
    ),
}  # fmt: skip
# SQLite binds at most 32766 parameters: a longer array is refused before it is decoded.
MAX_PARAMS = 32766
# Pragmas that only read a counter, without an argument (FTS5 reads
# data_version while it answers a query).
READ_ONLY_PRAGMAS = frozenset({"data_version"})
# The schema tables, as the authorizer names them: every database has one
# (main's may be read when every table is granted); temp's has its own name.
SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema"})
TEMP_SCHEMA_TABLES = frozenset({"sqlite_temp_master", "sqlite_temp_schema"})

MAX_OPEN_CURSORS = 64  # per instance
PACKED_BATCH_BYTES = 1 << 16  # rows per packed query_next, beyond the first
QUERY_MAX_ROWS = 1_000_000  # rows held by one instance's open cursors
PROGRESS_STEPS = 1000  # SQLite instructions between time checks
I32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Action codes by name, for refusal messages.
_ACTION_NAMES = {
    1: "CREATE INDEX", 2: "CREATE TABLE", 3: "CREATE TEMP INDEX", 4: "CREATE TEMP TABLE",
    5: "CREATE TEMP TRIGGER", 6: "CREATE TEMP VIEW", 7: "CREATE TRIGGER", 8: "CREATE VIEW", 9: "DELETE",
    10: "DROP INDEX", 11: "DROP TABLE", 12: "DROP TEMP INDEX", 13: "DROP TEMP TABLE", 14: "DROP TEMP TRIGGER",
    15: "DROP TEMP VIEW", 16: "DROP TRIGGER", 17: "DROP VIEW", 18: "INSERT", 19: "PRAGMA", 22: "transaction control",
    23: "UPDATE", 24: "ATTACH", 25: "DETACH", 26: "ALTER TABLE", 27: "REINDEX", 28: "ANALYZE",
    29: "CREATE VIRTUAL TABLE", 30: "DROP VIRTUAL TABLE", 32: "SAVEPOINT",
}  # fmt: skip


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(name: str) -> str:
    """name as SQLite compares names: only ASCII letters ignore case
    (str.lower would also fold 'É' into 'é', which SQLite keeps apart)."""
    return name.translate(_ASCII_LOWER)


class QueryError(Error):
    """A guest's query failed or was refused; the guest gets the message as a value."""


class QueryStopped(TrapError):
    """The guest's call ran out of time, or the connection was interrupted, during a query."""


@dataclass(frozen=True)
class SqlGrant:
    """What the host granted a module's queries: tables=None is every table
    and view of the main schema; else only these names (ascii_lower)."""

    module: str
    capabilities: frozenset[str]
    tables: frozenset[str] | None

    def covers(self, other: SqlGrant) -> bool:
        """Whether other may do nothing this grant may not (no capability borrowing)."""
        if not other.capabilities <= self.capabilities:
            return False
        if "sql" not in other.capabilities or self.tables is None:
            return True
        return other.tables is not None and other.tables <= self.tables


# The schemas that have a table or view of this name (PRAGMA table_list
# compares names as SQLite does, ignoring ASCII case).
_SCHEMAS_OF = "SELECT schema FROM pragma_table_list(?)"

# The host's internal lookup: (sql, params) -> rows, run outside the policy.
Lookup = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class QueryPolicy:
    """One query's rules, as SQLite reports what the statement does."""

    def __init__(
        self,
        grant: SqlGrant,
        grant_of_function: Callable[[str], SqlGrant | None],
        out_of_time: Callable[[], bool],
        max_value_bytes: int | None = None,
    ) -> None:
        self.grant = grant
        # The longest string or blob the query may make (SQLITE_LIMIT_LENGTH
        # while it runs): bounds the host memory a query holds, and the work
        # one built-in call on it can take between two progress checks.
        self.max_value_bytes = max_value_bytes
        self.grant_of_function = grant_of_function  # sqlwasm functions (and table functions) by lower-case name
        self.out_of_time = out_of_time
        self.refusal: str | None = None  # why the query was refused (the first reason)
        self.timed_out = False
        self._functions: set[str] = set()  # to check against PRAGMA function_list
        self._reads: set[str] = set()  # to check against the main schema
        self._unqualified_reads: set[str] = set()  # read without naming a database
        self._statements = 0

    def _refuse(self, reason: str) -> int:
        if self.refusal is None:
            self.refusal = reason
        return SQLITE_DENY

    def authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None) -> int:
        """The authorizer: SQLITE_OK or SQLITE_DENY for one action of the statement being prepared."""
        if action in (SQLITE_SELECT, SQLITE_RECURSIVE):
            return SQLITE_OK
        if action == SQLITE_READ:
            table = ascii_lower(arg1 or "")
            # SQLite names no database when a statement reads no column of
            # a table (count(*)): check_statement finds where it can be.
            if db is None and arg2 == "":
                self._unqualified_reads.add(table)
            elif (db or "").lower() != "main":  # SQLite passes the name as typed: MAIN.t
                return self._refuse(f"reading {arg1!r} in database {db!r}: only the main database may be read")
            if table in self._reads:
                return SQLITE_OK
            function_grant = self.grant_of_function(table)
            if function_grant is not None and not self.grant.covers(function_grant):
                return self._refuse(self._borrowing(table, function_grant))
            in_scope = self.grant.tables is None or table in self.grant.tables
            # Refused here, not later: SQL an application function runs while the
            # query steps is authorized here but never reaches check_statement.
            if not in_scope and function_grant is None and table not in HARMLESS_TABLE_FUNCTIONS:
                return self._refuse(f"table {arg1!r} was not granted to module '{self.grant.module}'")
            self._reads.add(table)
            return SQLITE_OK
        if action == SQLITE_FUNCTION:
            name = ascii_lower(arg2 or "")
            needed = BUILTIN_NEEDS.get(name)
            if needed is not None and needed not in self.grant.capabilities:
                return self._refuse(f"{name}() reads the {needed}, which needs capability '{needed}'")
            function_grant = self.grant_of_function(name)
            if function_grant is not None:
                if not self.grant.covers(function_grant):
                    return self._refuse(self._borrowing(name, function_grant))
            else:
                self._functions.add(name)
            return SQLITE_OK
        if action == SQLITE_PRAGMA and ascii_lower(arg1 or "") in READ_ONLY_PRAGMAS and arg2 is None:
            return SQLITE_OK
        what = _ACTION_NAMES.get(action, f"action {action}")
        target = next((a for a in (arg1, arg2) if a), None)
        return self._refuse(f"{what}{f' {target!r}' if target else ''} is not allowed: a query may only read")

    def _borrowing(self, name: str, other: SqlGrant) -> str:
        return (
            f"{name}() belongs to module '{other.module}', which may do more than module "
            f"'{self.grant.module}' was granted"
        )

    def check_statement(self, readonly: bool, lookup: Lookup) -> bool:
        """After the statement is prepared, before it runs: whether it may run."""
        self._statements += 1
        if self._statements > 1:
            self._refuse("a query is one statement")
            return False
        if not readonly:
            self._refuse("the statement writes (sqlite3_stmt_readonly): a query may only read")
            return False
        return self._functions_allowed(lookup) and (not self._reads or self._reads_allowed(lookup))

    def _functions_allowed(self, lookup: Lookup) -> bool:
        if not self._functions:
            return True
        # The lookups call no SQL function and use no collation: the
        # application may have replaced any of them.
        rows = lookup("SELECT name, flags FROM pragma_function_list", [])
        # SQLite marks its risky built-ins DIRECTONLY too (load_extension, fts3_tokenizer, sqlite_log, ...).
        direct_only = sorted(
            {
                ascii_lower(name)
                for name, flags in rows
                if flags & SQLITE_DIRECTONLY and ascii_lower(name) in self._functions
            }
        )
        if direct_only:
            self._refuse(f"{direct_only[0]}() may only be called from top-level SQL (SQLITE_DIRECTONLY)")
            return False
        return True

    def _reads_allowed(self, lookup: Lookup) -> bool:
        """Every name read is a table or view of the main schema that the
        grant covers, or an allowed table function (no other eponymous
        virtual table). A name read without its database (count(*)) must be
        in main alone, or be one of the query's own CTEs or subqueries."""
        schemas = {table: self._schemas_of(table, lookup) for table in self._reads}
        modules: set[str] | None = None  # virtual table modules, looked up when needed
        for table in sorted(self._reads):
            where = schemas[table]
            if table in self._unqualified_reads:
                if where - {"main"}:
                    self._refuse(f"{table!r} exists outside the main database, and only main may be read")
                    return False
                if not where:
                    if modules is None:
                        modules = {ascii_lower(row[0]) for row in lookup("SELECT name FROM pragma_module_list", [])}
                    if table not in modules:
                        continue  # the query's own CTE or subquery
            if "main" in where:
                if self.grant.tables is not None and table not in self.grant.tables:
                    self._refuse(f"table {table!r} was not granted to module '{self.grant.module}'")
                    return False
            elif table not in HARMLESS_TABLE_FUNCTIONS and self.grant_of_function(table) is None:
                self._refuse(f"{table!r} may not be read by a query")
                return False
        return True

    def _schemas_of(self, table: str, lookup: Lookup) -> set[str]:
        """The databases that have a table or view named table."""
        if table in TEMP_SCHEMA_TABLES:
            return {"temp"}
        if table in SCHEMA_TABLES:
            # Without its database, it may be any attached database's.
            databases = {row[0] for row in lookup("SELECT name FROM pragma_database_list", [])}
            return {"main"} if table not in self._unqualified_reads else databases - {"temp"}
        return {row[0] for row in lookup(_SCHEMAS_OF, [table])}

    def progress(self) -> bool:
        """The progress handler: True stops the query (the caller's time is up)."""
        if self.out_of_time():
            self.timed_out = True
            return True
        return False


# ----------------------------------------------------------------- cursors

# The host's runner (_host_apsw.run_query): runs sql on the connection under
# the policy and hands each row to on_row; raises QueryError or QueryStopped.
RunQuery = Callable[[Any, str, Sequence[Any], QueryPolicy, Callable[[tuple[Any, ...]], None]], None]


@dataclass
class _Cursor:
    rows: list[bytes] = field(default_factory=list)  # msgpack-encoded rows
    size: int = 0  # bytes of rows
    error: str | None = None
    position: int = 0


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _bounds(memory: GuestMemory, what: str, ptr: int, length: int) -> tuple[int, int]:
    """(ptr, length) as unsigned; a MarshallingError (the call traps) if they leave guest memory."""
    ptr, length = ptr & 0xFFFFFFFF, length & 0xFFFFFFFF
    if ptr + length > memory.size():
        raise MarshallingError(f"{what} (ptr {ptr}, len {length}) is outside guest memory")
    return ptr, length


def _decode_params(data: bytes) -> list[Any]:
    try:
        params = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, max_array_len=MAX_PARAMS
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise QueryError(f"params are not one well-formed msgpack value: {exc}") from None
    if not isinstance(params, list):
        raise QueryError(f"params must be a msgpack array, got {type(params).__name__}")
    for number, value in enumerate(params, 1):
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise QueryError(f"parameter {number} does not fit a 64-bit integer")
        if value is not None and not isinstance(value, (int, float, str, bytes)):
            raise QueryError(
                f"parameter {number} is a {type(value).__name__}: expected nil, bool, int, float, str or bin"
            )
    return params


class GuestSql:
    """The sql imports of one instance: its cursors and how its queries run.

    Cursors belong to the guest call that opened them: the first import
    called in a later call (instance_calls() moved on) drops them all.
    """

    def __init__(
        self,
        *,
        connection: weakref.ref[Any],
        run_query: RunQuery,
        grant: SqlGrant,
        grant_of_function: Callable[[str], SqlGrant | None],
        call_ms_left: Callable[[], int | None],
        calls: Callable[[], int],
        timeout_ms: int | None,
        max_result_bytes: int,
    ) -> None:
        self._connection = connection
        self._run_query = run_query
        self.grant = grant
        self._grant_of_function = grant_of_function
        self._call_ms_left = call_ms_left
        self._calls = calls
        self._timeout_ms = timeout_ms
        self._max_result_bytes = max_result_bytes
        self._cursors: dict[int, _Cursor] = {}
        self._call = -1  # the guest call the cursors belong to
        self._last_id = 0
        # A query refused because MAX_OPEN_CURSORS are open gets this one
        # cursor (the latest such), outside the count.
        self._overflow: tuple[int, str] | None = None

    def _forget_stale(self) -> None:
        call = self._calls()
        if call != self._call:
            self._call = call
            self._cursors.clear()
            self._overflow = None

    def _new_id(self) -> int:
        while True:
            self._last_id = self._last_id % I32_MAX + 1
            if self._last_id not in self._cursors:
                return self._last_id

    # ------------------------------------------------------------ imports

    def query(self, memory: GuestMemory, sql_ptr: int, sql_len: int, params_ptr: int, params_len: int) -> int:
        """sqlwasm.query: runs the statement now; returns its cursor (> 0)."""
        sql_ptr, sql_len = _bounds(memory, "query text", sql_ptr, sql_len)
        params_ptr, params_len = _bounds(memory, "query params", params_ptr, params_len)
        self._forget_stale()
        cursor_id = self._new_id()
        if len(self._cursors) >= MAX_OPEN_CURSORS:
            self._overflow = (cursor_id, f"too many open cursors: at most {MAX_OPEN_CURSORS} (query_close them)")
            return cursor_id
        try:
            sql = memory.read(sql_ptr, sql_len).decode("utf-8")
        except UnicodeDecodeError:
            self._cursors[cursor_id] = _Cursor(error="the query text is not valid UTF-8")
            return cursor_id
        try:
            params = _decode_params(memory.read(params_ptr, params_len)) if params_len else []
            self._cursors[cursor_id] = self._run(sql, params)
        except QueryError as exc:
            self._cursors[cursor_id] = _Cursor(error=str(exc))
        return cursor_id

    def query_next(self, memory: GuestMemory, cursor_id: int, out_ptr: int, out_cap: int) -> int:
        """sqlwasm.query_next: writes the next rows (an array of arrays; empty
        when done) or {"error": text} at out_ptr; returns the bytes written,
        or -(bytes needed) when not even one row fits in out_cap."""
        out_ptr, out_cap = _bounds(memory, "query_next buffer", out_ptr, out_cap)
        out_cap = min(out_cap, I32_MAX)
        self._forget_stale()
        payload, taken = self._next_value(cursor_id, out_cap)
        if len(payload) > out_cap:
            return -len(payload)
        memory.write(payload, out_ptr)
        taken()
        return len(payload)

    def query_next_packed(self, memory: GuestMemory, cursor_id: int) -> int:
        """sqlwasm.query_next in its packed form: the same value, in a buffer
        the guest's sqlwasm_alloc gives (up to PACKED_BATCH_BYTES of rows, at
        least one row); returns (ptr << 32) | len, as a msgpack result is."""
        self._forget_stale()
        payload, taken = self._next_value(cursor_id, PACKED_BATCH_BYTES)
        ptr = memory.alloc(len(payload))
        if ptr == 0 or ptr + len(payload) > memory.size():
            raise MarshallingError(f"sqlwasm_alloc({len(payload)}) returned {ptr}, outside guest memory")
        memory.write(payload, ptr)
        taken()
        packed = ptr << 32 | len(payload)
        return packed - (1 << 64) if packed >= 1 << 63 else packed  # as the signed i64 wasm sees

    def _next_value(self, cursor_id: int, cap: int) -> tuple[bytes, Callable[[], None]]:
        """query_next's value: the rows that fit in cap (at least one, even
        if it does not fit), an empty array, or an error map; and what moves
        the cursor past those rows once they are delivered."""
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            if self._overflow is not None and self._overflow[0] == cursor_id:
                return _error_value(self._overflow[1]), _nothing
            return _error_value(f"cursor {cursor_id} is not open (closed, or opened by an earlier call)"), _nothing
        if cursor.error is not None:
            return _error_value(cursor.error), _nothing
        rows, start = cursor.rows, cursor.position
        end, size = start, 0
        while end < len(rows) and (
            end == start or len(_array_header(end + 1 - start)) + size + len(rows[end]) <= cap
        ):
            size += len(rows[end])
            end += 1

        def taken() -> None:
            cursor.position = end

        return _array_header(end - start) + b"".join(rows[start:end]), taken

    def query_close(self, memory: GuestMemory, cursor_id: int) -> None:
        """sqlwasm.query_close: frees the cursor (an unknown one is ignored)."""
        self._forget_stale()
        if self._cursors.pop(cursor_id, None) is None and self._overflow and self._overflow[0] == cursor_id:
            self._overflow = None

    # -------------------------------------------------------------- running

    def _run(self, sql: str, params: list[Any]) -> _Cursor:
        conn = self._connection()
        if conn is None:
            raise QueryError("the connection is closed")
        held_bytes = sum(c.size for c in self._cursors.values())
        held_rows = sum(len(c.rows) for c in self._cursors.values())
        cursor = _Cursor()

        def on_row(row: tuple[Any, ...]) -> None:
            try:
                encoded = msgpack.packb(list(row), use_bin_type=True)
            except (ValueError, TypeError, OverflowError) as exc:
                raise QueryError(f"a value in row {len(cursor.rows) + 1} cannot be sent as msgpack: {exc}") from None
            cursor.size += len(encoded)
            if held_bytes + cursor.size > self._max_result_bytes:
                raise QueryError(
                    f"the rows exceed {self._max_result_bytes} bytes (max_result_bytes, for all open cursors "
                    "of the instance together)"
                )
            if held_rows + len(cursor.rows) >= QUERY_MAX_ROWS:
                raise QueryError(f"the rows exceed {QUERY_MAX_ROWS} (for all open cursors of the instance together)")
            cursor.rows.append(encoded)

        policy = QueryPolicy(
            self.grant, self._grant_of_function, lambda: self._call_ms_left() == 0, self._max_result_bytes
        )
        try:
            self._run_query(conn, sql, params, policy, on_row)
        except QueryStopped:
            if policy.timed_out:
                raise QueryStopped(f"time limit of {self._timeout_ms} ms exceeded during a query") from None
            raise QueryStopped("interrupted during a query") from None
        return cursor


def _error_value(text: str) -> bytes:
    return msgpack.packb({"error": text}, use_bin_type=True)  # type: ignore[no-any-return]


def _nothing() -> None:
    pass
