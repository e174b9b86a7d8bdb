"""What sqlwasm keeps for each SQLite connection: the native state, the wasm
stores it points into and when they may be freed, installing a module's
functions (all or nothing), and fresh instances per statement."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from . import _catalog, _engine, _host_apsw, _host_sqlite3, _native
from ._abi import ABIS, EXPORT_SLOTS, FUNC_SLOTS, KINDS, MAIN_SLOT, VALUE_TYPES
from ._capabilities import host_functions, sqlite_call_flags
from ._errors import Error, ManifestError
from ._guest_sql import GuestSql, SqlGrant
from ._manifest import ALLOC_EXPORT, STACK_POINTER_EXPORT, FunctionSpec

if TYPE_CHECKING:
    from ._runtime import Module

log = logging.getLogger("sqlwasm")


@dataclass
class _Installed:
    """One module in one connection: its native instance and functions, and
    its current store and instance."""

    module: Module
    instance_index: int  # the native instance (sw_conn_add_instance)
    function_indexes: list[int]  # its native functions (sw_conn_add_function)
    store: _engine.Store
    instance: _engine.Instance | None
    # (direct_only, deterministic) of each function, as registered
    flags: list[tuple[bool, bool]] = field(default_factory=list)


class _ConnectionState:
    """What sqlwasm keeps for one connection: the native state and the wasm
    stores it points into.

    The stores live until SQLite has let go of every function that could
    enter them (the connection closed): _reap_closed then drops them, from
    sqlwasm's reaper thread or the next install. Never from a finalizer:
    those run on any thread, in the middle of other code (APSW's
    deallocation included), and at exit while other threads may still be
    inside a guest.
    """

    def __init__(self, conn: Any, host: ModuleType) -> None:
        self.host = host
        self.connection = host.connection_ref(conn)  # for the sql capability's queries
        self.db = host.handle(conn)
        self.native = host.attach(conn)
        self.installed: dict[str, _Installed] = {}
        self.function_owner: dict[str, str] = {}
        self.per_statement: list[_Installed] = []
        self.running_statements: set[int] = set()
        # Rolled-back installs whose functions SQLite would not delete.
        self.orphans: list[_Installed] = []

    def closed(self) -> None:
        self.native.forget()
        self.installed.clear()
        self.per_statement.clear()
        self.orphans.clear()


# States of open connections, by sqlite3* address and by native address.
_states: dict[int, _ConnectionState] = {}
_by_native: dict[int, _ConnectionState] = {}
_attach_lock = threading.RLock()
_exiting = False
_reaper_pid = 0  # the process the reaper thread runs in (threads do not survive fork)


_builtins_by_library: dict[int, frozenset[str]] = {}


def _builtin_names(state: _ConnectionState) -> frozenset[str]:
    """The built-in function names of the state's SQLite library (with _attach_lock held)."""
    library = state.native.library()
    found = _builtins_by_library.get(library)
    if found is None:
        found = _builtins_by_library[library] = state.native.builtin_function_names()
    return found


def _reap_closed() -> None:
    """Drops the stores of every connection SQLite has closed (with _attach_lock held)."""
    if _exiting:
        return
    while (address := _native.take_closed()) is not None:
        state = _by_native.pop(address, None)
        if state is not None:
            if _states.get(state.db) is state:
                del _states[state.db]
            state.closed()  # the last references to its stores
        _native.free_closed(address)


def reap_closed_now() -> None:
    """Frees every closed connection's stores before returning (the reaper
    does it soon anyway; tests that measure memory need it done)."""
    with _attach_lock:
        _reap_closed()


def _reap_when_closed() -> None:
    """The reaper thread: frees a closed connection's stores soon after SQLite
    closes it (it waits in C, without the GIL)."""
    while not _exiting:
        if _native.wait_closed(1000):
            with _attach_lock:
                _reap_closed()


def _host_of(conn: Any) -> ModuleType:
    """The host layer of conn: APSW's, or the stdlib's sqlite3."""
    for host in (_host_apsw, _host_sqlite3):
        if host.owns(conn):
            return host
    raise TypeError(f"sqlwasm installs into an apsw.Connection or a sqlite3.Connection, not {type(conn).__name__}")


def _state_of(conn: Any) -> _ConnectionState:
    global _reaper_pid
    _reap_closed()
    host = _host_of(conn)
    found = _states.get(host.handle(conn))
    if found is None:
        found = _ConnectionState(conn, host)
        _states[found.db] = found
        _by_native[found.native.address] = found
        if _reaper_pid != os.getpid():
            _reaper_pid = os.getpid()
            threading.Thread(target=_reap_when_closed, name="sqlwasm-reaper", daemon=True).start()
    return found


@atexit.register
def _keep_stores_at_exit() -> None:
    """Daemon threads may still be inside guests while the interpreter shuts
    down: from here on no store is ever freed (the OS reclaims them)."""
    global _exiting
    with _attach_lock:
        _exiting = True
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_by_native))


def _export_handles(spec: FunctionSpec, instance: _engine.Instance) -> list[bytes | None]:
    """The native handles of the function's exports by native export slot (a
    scalar's one export takes step's)."""
    slots = {**EXPORT_SLOTS, "main": MAIN_SLOT}
    funcs: list[bytes | None] = [None] * FUNC_SLOTS
    for role, name in spec.exports.items():
        func = instance.func_handle(name)
        assert func is not None  # check_exports made sure
        funcs[slots[role]] = func
    return funcs


def install(conn: Any, module: Module, *, replace: bool, trust_deterministic: bool) -> None:
    """Registers the module's functions (and wasm_call) in an open connection."""
    with _attach_lock:  # _state_of raises if the connection is closed
        _install(conn, _state_of(conn), module, replace=replace, trust_deterministic=trust_deterministic)


def _install(
    conn: Any, state: _ConnectionState, module: Module, *, replace: bool, trust_deterministic: bool
) -> None:
    name = module.name
    state.host.check_module(name, module.manifest.instance, module.capabilities)
    if name in state.installed:
        raise Error(f"module '{name}' is already installed in this connection")
    sql_names = [sql_name for spec in module.functions for sql_name in (spec.name, *(spec.partial_names or ()))]
    for sql_name in sql_names:
        owner = state.function_owner.get(sql_name.lower())
        if owner is not None:
            raise ManifestError(f"module '{name}': function '{sql_name}' is already provided by module '{owner}'")
    if state.native.statement_active():
        # SQLite cannot delete functions then, so an install could not be undone.
        raise Error(
            f"module '{name}': cannot install while a statement is running on this connection; "
            "finish or reset it first"
        )
    builtins = sorted(
        {sql_name for sql_name in sql_names if sql_name.lower() in _builtin_names(state)}
        | {spec.name for spec in module.functions if spec.kind == "table" and state.native.builtin_table(spec.name)}
    )
    if builtins:
        raise ManifestError(
            f"module '{name}': {', '.join(builtins)} would shadow SQLite built-in functions or table functions"
        )
    # A function of the same name taking the same number of arguments, or any
    # number (variadic, like SQLite's coalesce), would be replaced or shadowed;
    # a table function would replace a virtual table module.
    signatures = sorted(
        {
            (sql_name, n)
            for spec in module.functions
            for sql_name, n_args in spec.sql_signatures
            for n in {-1, n_args}
        }
    )
    existing = state.native.functions_exist(signatures)
    clashes = sorted({sql_name for (sql_name, _), found in zip(signatures, existing) if found})
    clashes += sorted(
        spec.name for spec in module.functions if spec.kind == "table" and state.native.module_exists(spec.name)
    )
    if clashes and not replace:
        raise ManifestError(
            f"module '{name}': the connection already has functions named {', '.join(clashes)} "
            "(registered by the application); pass replace=True to replace them"
        )

    store = _new_store(module)
    instance_index = state.native.add_instance(
        name,
        store.pointers(),
        module_version=module.version,
        max_result_bytes=module.limits.max_result_bytes,
        fuel_per_call=module.limits.fuel or 0,
        timeout_ms=module.limits.timeout_ms or 0,
        host_calls=bool(module.capabilities),
    )
    installed = _Installed(module, instance_index, [], store, None)
    try:
        installed.instance = instance = _instantiate(state, instance_index, module, store)
        for spec in module.functions:
            # The manifest's deterministic claim counts only with trust_deterministic.
            direct_only, deterministic = sqlite_call_flags(
                module.manifest.capabilities, spec.deterministic and trust_deterministic
            )
            installed.flags.append((direct_only, deterministic))
            installed.function_indexes.append(
                state.native.add_function(
                    instance_index,
                    sql_name=spec.name,
                    export_name=spec.export,
                    kind=KINDS[spec.kind],
                    funcs=_export_handles(spec, instance),
                    abi=ABIS[spec.abi],
                    arg_types=[VALUE_TYPES[t] for t in spec.args],
                    vararg_type=VALUE_TYPES[spec.varargs] if spec.varargs else 0,
                    returns=VALUE_TYPES.get(spec.returns, 0),
                    null_call=spec.null == "call",
                    direct_only=direct_only,
                    deterministic=deterministic,
                    column_types=[VALUE_TYPES[t] for _, t in spec.columns],
                    table_schema=_table_schema(spec) if spec.kind == "table" else None,
                )
            )
        if module.manifest.instance == "statement" and not state.per_statement:
            state.host.watch_statements(conn, _TRACE_ID, _statement_hook(state))
    except BaseException:
        _roll_back(state, installed)
        raise
    state.installed[name] = installed
    _update_catalog(state)
    for spec in module.functions:
        for sql_name in (spec.name, *(spec.partial_names or ())):
            state.function_owner[sql_name.lower()] = name
    if module.manifest.instance == "statement":
        state.per_statement.append(installed)


def _table_schema(spec: FunctionSpec) -> str:
    """The CREATE TABLE a table function declares to SQLite: its output
    columns, then its arguments as hidden columns."""
    declared = {"integer": "INTEGER", "real": "REAL", "text": "TEXT", "blob": "BLOB", "any": ""}
    columns = [f'"{name}" {declared[type_]}'.rstrip() for name, type_ in spec.columns]
    columns += [f"{hidden} HIDDEN" for hidden in spec.hidden_columns]
    return f"CREATE TABLE x({', '.join(columns)})"


def _new_store(module: Module) -> _engine.Store:
    return _engine.default().new_store(module._compiled.config, module.limits.memory_pages)


def _instantiate(
    state: _ConnectionState, instance_index: int, module: Module, store: _engine.Store
) -> _engine.Instance:
    """Instantiates module in store (the native instance already points at
    store, so its time limit covers the start function) and binds it."""
    sql = _guest_sql(state, instance_index, module) if "sql" in module.capabilities else None
    hosted = host_functions(
        module.manifest, lambda msg: state.native.host_error(instance_index, msg), sql, module._compiled.imports
    )
    instance = _engine.default().instantiate(
        store,
        module._compiled,
        hosted,
        fuel=module.limits.fuel,
        where=f"module '{module.name}'",
        timeout_ms=module.limits.timeout_ms,
    )
    _bind(state, instance_index, store, instance)
    return instance


def _sql_grant(module: Module) -> SqlGrant:
    return SqlGrant(module.name, frozenset(module.capabilities), module.sql_tables)


def _guest_sql(state: _ConnectionState, instance_index: int, module: Module) -> GuestSql:
    """The sql imports of one instance of module in state's connection."""

    def grant_of_function(name: str) -> SqlGrant | None:
        owner = state.function_owner.get(name)
        if owner is None:
            return None
        return _sql_grant(state.installed[owner].module)

    native = state.native
    return GuestSql(
        connection=state.connection,
        run_query=state.host.run_query,
        grant=_sql_grant(module),
        grant_of_function=grant_of_function,
        call_ms_left=lambda: native.call_ms_left(instance_index),
        calls=lambda: native.instance_calls(instance_index),
        timeout_ms=module.limits.timeout_ms,
        max_result_bytes=module.limits.max_result_bytes,
    )


def _bind(state: _ConnectionState, instance_index: int, store: _engine.Store, instance: _engine.Instance) -> None:
    alloc = instance.func_handle(ALLOC_EXPORT)
    stack_pointer = instance.i32_global_handle(STACK_POINTER_EXPORT)
    state.native.bind_instance(instance_index, store.pointers(), instance.memory_handle, alloc, stack_pointer)


def _refresh(state: _ConnectionState, installed: _Installed) -> None:
    """Swaps in a fresh instance (modules with instance = "statement")."""
    store = _new_store(installed.module)
    old_store = installed.store
    try:
        state.native.bind_instance(installed.instance_index, store.pointers(), None, None)
        instance = _instantiate(state, installed.instance_index, installed.module, store)
    except BaseException:
        assert installed.instance is not None
        _bind(state, installed.instance_index, old_store, installed.instance)
        raise
    for spec, function_index in zip(installed.module.functions, installed.function_indexes):
        state.native.rebind_function(function_index, _export_handles(spec, instance))
    installed.store, installed.instance = store, instance


_TRACE_ID = "sqlwasm.fresh-instance-per-statement"


def _update_catalog(state: _ConnectionState) -> None:
    """sqlwasm_modules and sqlwasm_functions: what is installed now."""
    installed = list(state.installed.values())
    state.native.set_catalog(_native.lib.SW_CATALOG_MODULES, _catalog.module_rows(i.module for i in installed))
    registered = [
        (i.module, spec, direct_only, deterministic)
        for i in installed
        for spec, (direct_only, deterministic) in zip(i.module.functions, i.flags)
    ]
    state.native.set_catalog(_native.lib.SW_CATALOG_FUNCTIONS, _catalog.function_rows(registered))


def _roll_back(state: _ConnectionState, installed: _Installed) -> None:
    """Undoes a partial install. A registration SQLite will not delete keeps
    its store alive for the connection's lifetime (the function stays callable)."""
    kept = False
    for function_index in installed.function_indexes:
        if state.native.remove_function(function_index) != 0:
            kept = True
    if kept:
        state.orphans.append(installed)
    else:
        state.native.remove_instance(installed.instance_index)


def _statement_hook(state: _ConnectionState) -> Callable[[int, bool], None]:
    """Before each outermost statement, replace every per-statement instance
    that the previous statements used.

    The host reports a statement when it starts (also for each trigger it
    fires, under the same statement id) and when it is reset. A statement
    that starts while another is running (a trigger, or SQL run from inside
    a function) shares its instance: swapping then would pull state from
    under the running statement.
    """
    running = state.running_statements

    def on_statement(statement: int, started: bool) -> None:
        if not started:
            running.discard(statement)
            return
        outermost = not running
        running.add(statement)
        if not outermost or not state.native.open:
            return
        for installed in state.per_statement:
            # used == False also while the guest is running (never swap then)
            if state.native.instance_used(installed.instance_index):
                try:
                    _refresh(state, installed)
                except Error as exc:
                    log.warning("sqlwasm: keeping the old instance of '%s': %s", installed.module.name, exc)

    return on_statement
