"""What the command line needs from APSW: running one piece of SQL with its
column names and changes, SQLite's errors, and the interactive shell."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import apsw
import apsw.shell

from ._interrupt import CtrlC
from ._progress import Progress
from ._runtime import Module

# The errors SQLite and APSW raise (the CLI reports them in one line).
HostError = apsw.Error
# The SQL's parameters and the values given do not match.
BindingsError = apsw.BindingsError

# A statement that inserts, updates or deletes rows (not DDL): its first
# word after any comments, or a WITH clause that is not read-only.
_CHANGES_ROWS = re.compile(r"(\s+|--[^\n]*(\n|$)|/\*.*?\*/)*(INSERT|UPDATE|DELETE|REPLACE|WITH)\b", re.I | re.S)

Bindings = Sequence[Any] | Mapping[str, Any]


class ModuleLoader(Protocol):
    def load(self, spec: str) -> Module: ...

    def install(self, conn: apsw.Connection, module: Module) -> None: ...

    def load_stored(self, conn: apsw.Connection) -> list[Module]: ...


@dataclass
class Result:
    names: list[str]  # the columns of the last statement; none for one that returns no rows
    rows: list[tuple[Any, ...]]
    changed: int | None  # rows inserted, updated or deleted; None for a statement that only reads
    timings: list[tuple[str, float]]  # (statement, seconds) for each statement run


def open_options(db: str) -> dict[str, Any]:
    """apsw.Connection's options for a DB as the command line names it: a
    `file:` name is a URI (mode=ro, ...), not a file of that name."""
    if db.startswith("file:"):
        return {"flags": apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI}
    return {}


def run(conn: apsw.Connection, sql: str, bindings: Bindings = (), progress: Progress | None = None) -> Result:
    """Runs sql (every statement in it) and fetches the rows, counting them
    in progress."""
    seen: dict[str, Any] = {}
    starts: list[tuple[str, float]] = []

    def before_each_statement(cursor: apsw.Cursor, statement: str, _bindings: Any) -> bool:
        starts.append((statement, time.perf_counter()))
        # Prepared but not yet run: the columns are known even if no row comes.
        seen["names"] = [d[0] for d in cursor.get_description()]
        seen["changes_rows"] = not cursor.is_readonly and _CHANGES_ROWS.match(statement) is not None
        return True

    changes_before = conn.total_changes()
    cursor = conn.cursor()
    cursor.exec_trace = before_each_statement
    rows = []
    for row in cursor.execute(sql, bindings):
        rows.append(row)
        if progress is not None:
            progress.rows += 1
    ended = time.perf_counter()
    names = seen.get("names", [])
    changed = conn.total_changes() - changes_before if seen.get("changes_rows") and not names else None
    ends = [start for _, start in starts[1:]] + [ended]
    timings = [(statement, end - start) for (statement, start), end in zip(starts, ends)]
    return Result(names, rows, changed, timings)


def error_offset(exc: BaseException) -> int | None:
    """Where in the SQL text SQLite found the error, if it says."""
    offset = getattr(exc, "error_offset", -1)
    return offset if isinstance(offset, int) and offset >= 0 else None


class Shell(apsw.shell.Shell):
    """APSW's shell with sqlwasm's modules: .open keeps them, .load adds
    one, .modules lists them; Ctrl-C stops the running statement.

    stored: the modules stored in the database (--db-modules), or None if
    the shell does not load them; each .open replaces them with the new
    database's."""

    def __init__(
        self,
        conn: apsw.Connection,
        modules: list[Module],
        loader: ModuleLoader,
        ctrl_c: CtrlC,
        stored: list[Module] | None = None,
        **options: Any,
    ) -> None:
        self._progress = Progress(sys.stderr, False)  # one per statement (process_sql)
        super().__init__(db=conn, **options)
        self._modules = modules
        self._stored = stored
        self._loader = loader
        self._ctrl_c = ctrl_c

    def run(self, sql: str | None) -> int:
        """The interactive loop or, like `sqlite3 DB SQL`, sql alone; the exit status."""
        if sql is None:
            self.cmdloop()  # type: ignore[no-untyped-call]
            return 0
        try:
            self.process_complete_line(sql)  # type: ignore[no-untyped-call]
        except Exception:
            self.handle_exception()  # type: ignore[no-untyped-call]
            return 1
        return 130 if self._ctrl_c.fired else 0

    def write(self, dest: Any, text: str) -> None:
        self._progress.stop()  # output takes the progress line's place
        super().write(dest, text)  # type: ignore[no-untyped-call]

    def process_sql(self, sql: str, bindings: Any = None, internal: bool = False, summary: Any = None) -> None:
        # Until the first output: the elapsed time, if the shell is on a terminal.
        self._progress = Progress(self.stderr, bool(self.interactive) and self.stderr.isatty(), count_rows=False)
        with self._ctrl_c.statement(self.db), self._progress:
            try:
                super().process_sql(sql, bindings, internal, summary)
            except apsw.Error:  # SQLite's interrupt error, or a guest's `interrupted`
                if not self._ctrl_c.fired:
                    raise
                self.write(self.stderr, "interrupted\n")

    def command_open(self, cmd: list[str]) -> None:
        """open ?OPTIONS? ?FILE?: Opens a database connection, with the loaded modules

        The options are those of APSW's shell (--wipe, --vfs VFS, --flags
        FLAGS). Every module loaded so far is installed into the new
        connection; with --db-modules, so are the new database's stored
        modules (verified like any other) in place of the old one's. If FILE
        is omitted a memory database is opened.
        """
        super().command_open(cmd)  # type: ignore[no-untyped-call]
        for module in self._modules:
            self._loader.install(self.db, module)
        if self._stored is not None:
            self._stored = []
            stored = self._loader.load_stored(self.db)
            for module in stored:
                self._loader.install(self.db, module)
                self._stored.append(module)

    def command_load(self, cmd: list[str]) -> None:
        """load MODULE: Loads a sqlwasm module into the connection

        MODULE is a .wasm file or the name of a shipped example (geo, geo_as,
        graph, stats, text). It is checked as on the command line (--trust, --grant,
        the limits) and stays loaded across .open.
        """
        if len(cmd) != 1:
            raise self.Error("load takes one parameter: a module (.wasm file or example name)")
        module = self._loader.load(cmd[0])
        self._loader.install(self.db, module)
        self._modules.append(module)
        self.write(
            self.stdout, f"loaded {module.name} {module.version}: {', '.join(f.name for f in module.functions)}\n"
        )

    def command_modules(self, cmd: list[str]) -> None:
        """modules: Lists the loaded sqlwasm modules and their functions"""
        if cmd:
            raise self.Error("modules takes no parameters")
        stored = self._stored or []
        for module in [*self._modules, *stored]:
            signer = f"signed by key {module.signer}" if module.signer else "not trusted (--allow-unsigned)"
            capabilities = ", ".join(module.capabilities) or "none"
            where = "  (stored in the database)" if module in stored else ""
            self.write(
                self.stdout,
                f"{module.name} {module.version}{where}  {signer}; capabilities: {capabilities}\n"
                f"  {', '.join(f.name for f in module.functions)}\n",
            )
