"""The one place that touches cffi's ffi/lib: sqlwasm's native per-row path.

The compiled module ``sqlwasm._sqlwasm_native`` is at once a Python extension
(this file drives it) and a SQLite loadable extension (each connection loads
the same file, so both share one copy of its statics).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ._errors import Error

try:
    from . import _sqlwasm_native  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - a broken install, not a code path
    raise ImportError(
        "sqlwasm's native extension is not built; install the package with `pip install .`"
    ) from exc

ffi: Any = _sqlwasm_native.ffi
lib: Any = _sqlwasm_native.lib

# What a host loads into a connection as a SQLite extension: this very file.
EXTENSION_PATH: str = _sqlwasm_native.__file__
ENTRY_POINT = "sqlite3_sqlwasm_init"
# Native stack budgets (bytes), defined once in native/sqlwasm_native.h.
MAX_WASM_STACK: int = lib.SW_MAX_WASM_STACK
_ERRBUF_LEN = 512


def handle_sizes() -> dict[str, int]:
    """The sizes (bytes) of the engine's C handle types the native part was built for."""
    return {
        "wasmtime_func_t": int(lib.sw_sizeof_func()),
        "wasmtime_memory_t": int(lib.sw_sizeof_memory()),
        "wasmtime_global_t": int(lib.sw_sizeof_global()),
        "wasmtime_val_t": int(lib.sw_sizeof_val()),
        "wasmtime_val_raw_t": int(lib.sw_sizeof_val_raw()),
    }


def bind_engine(library_path: str, sizes: Mapping[str, int]) -> None:
    """Checks that the engine's handle types have the sizes the native part
    was built for, then points the native part at the engine's C library
    (the copy already loaded in the process)."""
    for name, native_size in handle_sizes().items():
        actual = sizes[name]
        if actual != native_size:
            raise ImportError(
                f"wasmtime {name} is {actual} bytes but sqlwasm's native part was built for {native_size}: "
                "install the wasmtime version pinned in pyproject.toml"
            )
    problem = lib.sw_bind_wasmtime(library_path.encode())
    if problem != ffi.NULL:
        raise ImportError(f"sqlwasm cannot bind wasmtime's C API: {ffi.string(problem).decode()}")


def watchdog_watch(engine_pointer: int) -> None:
    """Makes sure the watchdog ticks this engine (and runs in this process:
    after fork() the first install restarts it)."""
    if lib.sw_watchdog_watch(ffi.cast("void *", engine_pointer)) != 0:
        raise Error("sqlwasm could not start its watchdog thread")


def watchdog_stop() -> None:
    lib.sw_watchdog_stop()


def _funcs_argument(funcs: Sequence[bytes | None]) -> tuple[Any, int]:
    """The native (funcs, present) pair: SW_FN_COUNT handles and a bit mask."""
    if len(funcs) != lib.SW_FN_COUNT:
        raise ValueError(f"expected {lib.SW_FN_COUNT} function slots")
    size = int(lib.sw_sizeof_func())
    if any(f is not None and len(f) != size for f in funcs):
        raise ValueError(f"a function handle is {size} bytes")
    blob = b"".join(f if f is not None else bytes(size) for f in funcs)
    present = sum(1 << i for i, f in enumerate(funcs) if f is not None)
    return ffi.new("char[]", blob), present


def _pointer(address: int) -> Any:
    return ffi.cast("void *", address)


def take_closed() -> int | None:
    """The address of a NativeConnection whose SQLite registrations are all
    gone (so no SQL can reach its guests), or None."""
    found = lib.sw_conn_take_closed()
    return None if found == ffi.NULL else int(ffi.cast("uintptr_t", found))


def free_closed(address: int) -> None:
    """Frees a connection that take_closed returned (its stores must be gone)."""
    lib.sw_conn_free(ffi.cast("sw_conn *", address))


def wait_closed(timeout_ms: int) -> bool:
    """Blocks (the GIL released) until take_closed has something, or timeout."""
    return bool(lib.sw_conn_wait_closed(timeout_ms))


def api_of_library(module_path: str) -> int:
    """The routines table (address) of the SQLite that the loaded shared
    object at module_path links."""
    errbuf = ffi.new("char[]", _ERRBUF_LEN)
    api = lib.sw_api_of_library(module_path.encode(), errbuf, _ERRBUF_LEN)
    if api == ffi.NULL:
        raise Error(f"sqlwasm cannot reach this SQLite library: {ffi.string(errbuf).decode()}")
    return int(ffi.cast("uintptr_t", api))


def api_limit(routines: int, db: int, limit_id: int, value: int) -> int:
    """sqlite3_limit(db, limit_id, value) through a routines table."""
    return int(lib.sw_api_limit(_pointer(routines), _pointer(db), limit_id, value))


def stack_left() -> int:
    """Native stack left below the caller on this thread, in bytes."""
    return int(lib.sw_stack_left())


class NativeConnection:
    """sqlwasm's C state for one SQLite connection. SQLite keeps it alive
    through registrations; once take_closed returns its address, the owner
    drops the wasm stores and calls free_closed."""

    def __init__(self, routines: int | None = None, db: int | None = None) -> None:
        """For the connection a host has just loaded EXTENSION_PATH into (on
        this thread); or, given them, for the sqlite3* db of the SQLite whose
        routines table api_of_library built."""
        errbuf = ffi.new("char[]", _ERRBUF_LEN)
        if routines is None or db is None:
            self._ptr = lib.sw_conn_open_loaded(errbuf, _ERRBUF_LEN)
        else:
            self._ptr = lib.sw_conn_open(_pointer(routines), _pointer(db), errbuf, _ERRBUF_LEN)
        if self._ptr == ffi.NULL:
            raise Error(f"sqlwasm could not attach to the connection: {ffi.string(errbuf).decode()}")
        self.address = int(ffi.cast("uintptr_t", self._ptr))

    @property
    def open(self) -> bool:
        return bool(self._ptr != ffi.NULL)

    def forget(self) -> None:
        """After take_closed: nothing may use the native state any more."""
        self._ptr = ffi.NULL

    def statement_active(self) -> bool:
        return bool(lib.sw_conn_statement_active(self._ptr))

    def library(self) -> int:
        """Which SQLite library the connection belongs to (its routines table's address)."""
        return int(ffi.cast("uintptr_t", lib.sw_conn_library(self._ptr)))

    def builtin_function_names(self) -> frozenset[str]:
        """Lower-cased names of the functions the connection's SQLite provides itself."""
        out = ffi.new("char[]", 1 << 16)
        used = int(lib.sw_conn_builtin_names(self._ptr, out, len(out)))
        if used < 0:
            raise Error("sqlwasm could not list the SQLite built-in functions")
        return frozenset(name.lower() for name in ffi.string(out, used).decode().split("\n") if name)

    def builtin_table(self, name: str) -> bool:
        """Whether SQLite itself provides a table of this name (json_each, pragma_*)."""
        found = int(lib.sw_conn_builtin_table(self._ptr, name.encode()))
        if found < 0:
            raise Error("SQLite could not say whether it has a built-in table of this name")
        return bool(found)

    def module_exists(self, name: str) -> bool:
        """Whether the connection has a virtual table module of this name."""
        found = int(lib.sw_conn_module_exists(self._ptr, name.encode()))
        if found < 0:
            raise Error("SQLite could not list the connection's virtual table modules")
        return bool(found)

    def functions_exist(self, functions: Sequence[tuple[str, int]]) -> list[bool]:
        """Whether the connection has each (name, number of arguments; -1:
        variadic). No statement may be running on the connection."""
        names = [ffi.new("char[]", name.encode()) for name, _ in functions]
        found = ffi.new("uint8_t[]", len(functions) or 1)
        n_args = ffi.new("int[]", [n for _, n in functions] or [0])
        if lib.sw_conn_functions_exist(self._ptr, ffi.new("char *[]", names), n_args, len(functions), found):
            raise Error("sqlwasm could not check the connection's functions")
        return [bool(found[i]) for i in range(len(functions))]

    def add_instance(
        self,
        module_name: str,
        store: tuple[int, int],
        *,
        module_version: str,
        max_result_bytes: int,
        fuel_per_call: int,
        timeout_ms: int,
        host_calls: bool,
    ) -> int:
        """A slot for one module's instance in store (its native store and
        context pointers); its limits apply from now on, including to the
        start function."""
        index: int = lib.sw_conn_add_instance(
            self._ptr,
            module_name.encode(),
            module_version.encode(),
            _pointer(store[0]),
            _pointer(store[1]),
            max_result_bytes,
            fuel_per_call,
            timeout_ms,
            int(host_calls),
        )
        if index < 0:
            raise MemoryError("sqlwasm: out of memory adding a module instance")
        return index

    def bind_instance(
        self,
        index: int,
        store: tuple[int, int],
        memory: bytes | None,
        alloc: bytes | None,
        stack_pointer: bytes | None = None,
    ) -> None:
        """Points the slot at store (its native store and context pointers),
        memory, alloc and the shadow stack pointer global (native handle
        bytes); without memory the slot refuses calls (the instance is
        starting)."""
        if memory is not None and len(memory) != lib.sw_sizeof_memory():
            raise ValueError(f"a memory handle is {lib.sw_sizeof_memory()} bytes")
        if alloc is not None and len(alloc) != lib.sw_sizeof_func():
            raise ValueError(f"a function handle is {lib.sw_sizeof_func()} bytes")
        if stack_pointer is not None and len(stack_pointer) != lib.sw_sizeof_global():
            raise ValueError(f"a global handle is {lib.sw_sizeof_global()} bytes")
        lib.sw_conn_bind_instance(
            self._ptr,
            index,
            _pointer(store[0]),
            _pointer(store[1]),
            ffi.new("char[]", memory) if memory is not None else ffi.NULL,
            ffi.new("char[]", alloc) if alloc is not None else ffi.NULL,
            ffi.new("char[]", stack_pointer) if stack_pointer is not None else ffi.NULL,
        )

    def instance_used(self, index: int) -> bool:
        return self.open and bool(lib.sw_conn_instance_used(self._ptr, index))

    def remove_instance(self, index: int) -> None:
        lib.sw_conn_remove_instance(self._ptr, index)

    def remove_function(self, index: int) -> int:
        """Unregisters a function; SQLite's result code (0 on success)."""
        return int(lib.sw_conn_remove_function(self._ptr, index))

    def set_catalog(self, which: int, rows: bytes) -> None:
        """The rows of catalog table `which` (SW_CATALOG_*), msgpack."""
        if lib.sw_conn_set_catalog(self._ptr, which, rows, len(rows)) != 0:
            raise MemoryError("sqlwasm: out of memory setting the catalog")

    def call_ms_left(self, index: int) -> int | None:
        """Milliseconds left before the time limit of the instance's running
        guest call; None when it has no limit or no call is running."""
        left = int(lib.sw_conn_call_ms_left(self._ptr, index))
        return None if left < 0 else left

    def instance_calls(self, index: int) -> int:
        """Calls into the instance's guest so far: the running call's identity."""
        return int(lib.sw_conn_instance_calls(self._ptr, index))

    def host_error(self, index: int, message: str) -> None:
        lib.sw_conn_host_error(self._ptr, index, message.encode("utf-8", errors="replace"))

    def add_function(
        self,
        instance: int,
        *,
        sql_name: str,
        export_name: str,
        kind: int,
        funcs: Sequence[bytes | None],
        abi: int,
        arg_types: Sequence[int],
        vararg_type: int,
        returns: int,
        null_call: bool,
        direct_only: bool,
        deterministic: bool,
        column_types: Sequence[int] = (),
        table_schema: str | None = None,
    ) -> int:
        """Registers one SQL function (numbers as in native/sqlwasm_native.h,
        see _abi); its index."""
        errbuf = ffi.new("char[]", _ERRBUF_LEN)
        # A struct's pointer fields do not keep their cdata alive: these locals
        # do, until the call returns.
        sql_name_c = ffi.new("char[]", sql_name.encode())
        export_name_c = ffi.new("char[]", export_name.encode())
        funcs_c, present = _funcs_argument(funcs)
        arg_types_c = ffi.new("uint8_t[]", list(arg_types) or [0])
        column_types_c = ffi.new("uint8_t[]", list(column_types)) if column_types else ffi.NULL
        table_schema_c = ffi.new("char[]", table_schema.encode()) if table_schema is not None else ffi.NULL
        desc = ffi.new(
            "sw_function_desc *",
            {
                "instance": instance,
                "sql_name": sql_name_c,
                "export_name": export_name_c,
                "kind": kind,
                "funcs": funcs_c,
                "present": present,
                "abi": abi,
                "arg_types": arg_types_c,
                "n_args": len(arg_types),
                "vararg_type": vararg_type,
                "returns": returns,
                "null_call": int(null_call),
                "direct_only": int(direct_only),
                "deterministic": int(deterministic),
                "column_types": column_types_c,
                "n_columns": len(column_types),
                "table_schema": table_schema_c,
            },
        )
        index: int = lib.sw_conn_add_function(self._ptr, desc, errbuf, _ERRBUF_LEN)
        if index < 0:
            raise Error(f"sqlwasm could not register {sql_name}: {ffi.string(errbuf).decode()}")
        return index

    def rebind_function(self, index: int, funcs: Sequence[bytes | None]) -> None:
        lib.sw_conn_rebind_function(self._ptr, index, *_funcs_argument(funcs))
