"""The wasmtime engine (see _engine for the interface): the only module that
imports wasmtime-py or touches its internals.

Engines: one per EngineConfig, made once per process (a module compiled
with one engine cannot be instantiated in a store of another, so threads
that arrive together on first use must all get the same one). Restricted
engines interrupt guests through epochs: a native watchdog thread advances
the epoch every 10 ms and the per-store epoch callback enforces time limits
and sqlite3_interrupt(). The watchdog holds its own engine references and is
stopped at exit, before Python frees its objects. Fuel instrumentation costs
every guest something, so only modules with a fuel limit run on a metering
engine.

Restricted engines enable only the wasm proposals that C, Zig and
AssemblyScript output needs (SIMD128, bulk memory, sign extension, mutable
globals, multi-value, saturating conversions, reference types; multi-memory,
see DISABLED); every other proposal is off, and a module that needs one is
refused at load, naming it.

Host functions are linked through sqlwasm's own trampoline rather than
wasmtime-py's: wasmtime-py keeps an exception a host function raised in one
process-wide slot and raises it at the next trap any thread sees from Python,
so one guest's failure could surface in another thread's install. Here a
failure becomes a trap of the call it happened in, and nothing else.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import functools
import importlib.metadata
import itertools
import json
import platform
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import wasmtime
import wasmtime._bindings as wasmtime_c
import wasmtime._ffi as wasmtime_ffi

from . import _native
from ._engine import (
    CompiledModule,
    Engine,
    EngineConfig,
    Export,
    ExternType,
    FuncType,
    HostFunction,
    Import,
    Instance,
    InvalidWasm,
    MemoryType,
    OtherType,
    Snapshot,
    Store,
    start_failure,
)
from ._errors import CapabilityError, TrapError
from ._limits import MAX_TABLE_ELEMENTS, WASM_PAGE
from ._wasmfile import MalformedModule, v128_at_boundary

_native.bind_engine(
    str(wasmtime_ffi.filename),
    {name: ctypes.sizeof(getattr(wasmtime_c, name)) for name in _native.handle_sizes()},
)
# Stop the watchdog before the interpreter tears anything down.
atexit.register(_native.watchdog_stop)

MEMORY_RESERVATION = 1 << 32
EPOCH_TICK_MS = 10  # how often the native watchdog advances the epoch (SW_TICK_MS)
WASMTIME_VERSION = importlib.metadata.version("wasmtime")

# The wasmtime.Config settings turned off. Reference types stay on: LLVM
# (zig cc included) encodes call_indirect's table index the reference-types
# way, and the shipped modules do not load without it. gc_support off means
# no GC heap at all (it would sit outside memory_pages), so externref goes too.
# Multi-memory stays on only so that a second memory, defined or imported,
# reaches sqlwasm's own checks, which refuse it by name (the store allows one).
DISABLED = (
    "wasm_gc",
    "gc_support",
    "wasm_function_references",
    "wasm_exceptions",
    "wasm_tail_call",
    "wasm_relaxed_simd",
    "wasm_threads",
    "wasm_memory64",
    "wasm_wide_arithmetic",
    "wasm_custom_page_sizes",
    "wasm_stack_switching",
)

# What wasmtime's validator says when a module needs a disabled proposal,
# and the proposal in plain words. First match wins: several messages name
# two proposals ("cannot define continuation types when gc types are disabled").
REFUSED_PROPOSALS = (
    (re.compile(r"stack switching|continuation", re.I), "the wasm stack-switching proposal"),
    (re.compile(r"exception", re.I), "the wasm exception-handling proposal"),
    (re.compile(r"gc types are disallowed", re.I), "garbage-collected references (externref)"),
    (re.compile(r"\bgc\b", re.I), "the wasm GC proposal"),
    (re.compile(r"function references", re.I), "the wasm typed function references proposal"),
    (re.compile(r"tail call", re.I), "the wasm tail-call proposal"),
    (re.compile(r"relaxed simd", re.I), "the wasm relaxed-SIMD proposal"),
    (re.compile(r"shared-everything", re.I), "the wasm shared-everything-threads proposal"),
    (re.compile(r"threads", re.I), "the wasm threads proposal"),
    (re.compile(r"memory64", re.I), "the wasm memory64 proposal"),
    (re.compile(r"wide arithmetic", re.I), "the wasm wide-arithmetic proposal"),
    (re.compile(r"custom page size", re.I), "the wasm custom-page-sizes proposal"),
)

_engines: dict[EngineConfig, wasmtime.Engine] = {}
_engines_lock = threading.Lock()


def _engine(config: EngineConfig) -> wasmtime.Engine:
    with _engines_lock:
        found = _engines.get(config)
        if found is None:
            found = _engines[config] = wasmtime.Engine(_wasmtime_config(config))
        return found


def engine(*, fuel: bool) -> wasmtime.Engine:
    """The wasmtime engine sqlwasm runs guests on, for tools that drive
    wasmtime directly (the fuzz harnesses)."""
    return _engine(EngineConfig(fuel=fuel))


def _settings(config: EngineConfig) -> dict[str, object]:
    """Every wasmtime setting sqlwasm changes for config: _wasmtime_config
    applies exactly these, and cache_tag keys compiled code by them."""
    if not config.restricted:
        return {}
    return {
        "cranelift_opt_level": "speed",
        "epoch_interruption": True,
        "consume_fuel": config.fuel,
        "max_wasm_stack": _native.MAX_WASM_STACK,
        **{setting: False for setting in DISABLED},
        # The native path keeps each memory's base address: it must never move.
        # memory.grow within the 4 GiB reservation (all of wasm32) never needs to.
        "memory_reservation": MEMORY_RESERVATION,
        "memory_may_move": False,
    }


def _wasmtime_config(config: EngineConfig) -> wasmtime.Config:
    settings = wasmtime.Config()
    for name, value in _settings(config).items():
        if name == "memory_reservation":
            wasmtime_c.wasmtime_config_memory_reservation_set(settings.ptr(), value)
        elif name == "memory_may_move":
            wasmtime_c.wasmtime_config_memory_may_move_set(settings.ptr(), value)
        else:
            setattr(settings, name, value)
    return settings


def _address(pointer: Any) -> int:
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


def _handle_bytes(struct: ctypes.Structure) -> bytes:
    return ctypes.string_at(ctypes.addressof(struct), ctypes.sizeof(struct))


def _cause(exc: BaseException) -> str:
    """The cause in a wasmtime error or trap message: its last non-empty line
    (the lines before it are context and a backtrace)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _extern_type(ty: Any) -> ExternType:
    if isinstance(ty, wasmtime.FuncType):
        return FuncType(tuple(map(str, ty.params)), tuple(map(str, ty.results)))
    if isinstance(ty, wasmtime.MemoryType):
        return MemoryType(ty.limits.min, ty.limits.max)
    kinds = {wasmtime.GlobalType: "global", wasmtime.TableType: "table"}
    return OtherType(next((kind for cls, kind in kinds.items() if isinstance(ty, cls)), type(ty).__name__))


def _described(module: wasmtime.Module, config: EngineConfig) -> CompiledModule:
    return CompiledModule(
        exports=tuple(Export(e.name, _extern_type(e.type)) for e in module.exports),
        imports=tuple(Import(i.module, i.name or "", _extern_type(i.type)) for i in module.imports),
        config=config,
        native=module,
    )


# ------------------------------------------------------------ host functions


class _CallerMemory:
    """The calling guest's exported memory, valid during one host call."""

    def __init__(self, caller: wasmtime.Caller) -> None:
        self._caller = caller

    def _memory(self) -> wasmtime.Memory:
        memory = self._caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise CapabilityError("guest has no exported memory")
        return memory

    def size(self) -> int:
        return int(self._memory().data_len(self._caller))

    def read(self, ptr: int, length: int) -> bytes:
        return bytes(self._memory().read(self._caller, ptr, ptr + length))

    def write(self, data: bytes, ptr: int) -> None:
        self._memory().write(self._caller, data, ptr)

    def debug_output(self, data: bytes, skipped: int) -> None:
        output = wasmtime_c.wasmtime_context_get_data(self._caller._context())
        if output:
            _native.lib.sw_guest_output_append(_native.ffi.cast("void *", output), data, len(data), skipped)

    def alloc(self, size: int) -> int:
        alloc = self._caller.get("sqlwasm_alloc")
        if not isinstance(alloc, wasmtime.Func):
            raise CapabilityError("guest exports no sqlwasm_alloc")
        return int(alloc(self._caller, size)) & 0xFFFFFFFF


# The host functions wasmtime can call, by the handle it hands back to the
# trampoline (its env pointer); wasmtime finalizes a handle after its last use.
_host_functions: dict[int, HostFunction] = {}
_handles = itertools.count(1)
WASMTIME_I32, WASMTIME_I64 = 0, 1  # wasmtime_valkind_t


def _trap(message: str) -> int:
    """A new trap carrying message, as a callback returns it (wasmtime then owns it)."""
    encoded = message.encode("utf-8", errors="replace")
    return _address(wasmtime_c.wasmtime_trap_new(ctypes.create_string_buffer(encoded), len(encoded)))


def _call_host_function(handle: int | None, caller_ptr: Any, params: Any, _: int, results: Any, __: int) -> int:
    """wasmtime calls every sqlwasm host function through here. It returns 0
    when the function returned, else the trap that ends the guest's call.
    Nothing may unwind out of it: not through the guest's frames, and not
    into wasmtime-py's process-wide slot."""
    function = _host_functions[handle or 0]  # wasmtime finalizes a handle only after its last call
    caller = wasmtime.Caller(caller_ptr)
    try:
        args = [params[i].of.i64 if ty == "i64" else params[i].of.i32 for i, ty in enumerate(function.params)]
        result = function.body(_CallerMemory(caller), *args)
        if function.results:
            (ty,) = function.results
            results[0].kind = WASMTIME_I64 if ty == "i64" else WASMTIME_I32
            setattr(results[0].of, ty, result)  # the union's i32 or i64 field
        return 0
    except BaseException as exc:  # KeyboardInterrupt too: it fails this call, like any failure
        message = f"host function {function.module}.{function.name} failed: {type(exc).__name__}: {exc}"[:190]
        function.report_failure(message)
        return _trap(message)
    finally:
        caller._invalidate()  # a Caller kept past the call must not reach the store


def _forget_host_function(handle: int | None, host_functions: dict[int, HostFunction] = _host_functions) -> None:
    # host_functions is bound at definition: wasmtime may finalize during interpreter teardown
    host_functions.pop(handle or 0, None)


_TRAMPOLINE = wasmtime_c.wasmtime_func_callback_t(_call_host_function)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_forget_host_function)
_VALTYPES = {
    "i32": wasmtime.ValType.i32,
    "i64": wasmtime.ValType.i64,
    "f32": wasmtime.ValType.f32,
    "f64": wasmtime.ValType.f64,
}


def _define(linker: wasmtime.Linker, function: HostFunction) -> None:
    handle = next(_handles)
    _host_functions[handle] = function
    module_bytes, name_bytes = function.module.encode("utf-8"), function.name.encode("utf-8")
    # held: the call reads it
    func_type = wasmtime.FuncType([_VALTYPES[p]() for p in function.params], [_VALTYPES[r]() for r in function.results])
    error = wasmtime_c.wasmtime_linker_define_func(
        linker.ptr(),
        ctypes.create_string_buffer(module_bytes),
        len(module_bytes),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        func_type.ptr(),
        _TRAMPOLINE,
        handle,
        _FINALIZER,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


# ------------------------------------------------------------ the engine


class WasmtimeStore:
    def __init__(self, engine: wasmtime.Engine, config: EngineConfig) -> None:
        self.config = config
        self.store = wasmtime.Store(engine)
        # The guest's debug output lives in C (the SQL error of a failing call
        # ends with it), as the store's data, as long as the store does.
        output = _native.lib.sw_guest_output_new()
        if output == _native.ffi.NULL:
            raise MemoryError("no memory for a store's guest output")
        wasmtime_c.wasmtime_context_set_data(self.store._context(), int(_native.ffi.cast("uintptr_t", output)))
        weakref.finalize(self.store, _native.lib.sw_guest_output_free, output)

    def pointers(self) -> tuple[int, int]:
        return _address(self.store.ptr()), _address(self.store._context())


@dataclass(frozen=True)
class WasmtimeInstance:
    store: WasmtimeStore
    instance: wasmtime.Instance
    memory_handle: bytes

    def func_handle(self, export: str) -> bytes | None:
        func = self.instance.exports(self.store.store).get(export)
        return _handle_bytes(func._func) if isinstance(func, wasmtime.Func) else None

    def i32_global_handle(self, export: str) -> bytes | None:
        found = self.instance.exports(self.store.store).get(export)
        if not isinstance(found, wasmtime.Global):
            return None
        kind = found.type(self.store.store)
        if not kind.mutable or kind.content != wasmtime.ValType.i32():
            return None
        return _handle_bytes(found._global)


class WasmtimeEngine:
    def compile(self, config: EngineConfig, data: bytes) -> CompiledModule:
        return self._compile(config, data, v128_globals=False)

    def _compile(self, config: EngineConfig, data: bytes, *, v128_globals: bool) -> CompiledModule:
        """v128_globals: whether exported v128 globals may stay (they are
        described without asking their type; preinit exports every global
        to read it)."""
        try:
            module = wasmtime.Module(_engine(config), data)
        except wasmtime.WasmtimeError as exc:
            cause = _cause(exc)
            proposal = next((name for pattern, name in REFUSED_PROPOSALS if pattern.search(cause)), None)
            raise InvalidWasm(cause, proposal if config.restricted else None) from exc
        try:
            v128 = v128_at_boundary(data, exported_globals=not v128_globals)
        except MalformedModule as exc:
            raise InvalidWasm(str(exc), None) from exc
        if v128 is not None:
            raise InvalidWasm(
                f"{v128} has a v128 in its type: v128 values may be used inside a module's functions, not at its "
                "imports and exports",
                None,
            )
        return _described(module, config)

    def validate(self, config: EngineConfig, data: bytes) -> None:
        try:
            wasmtime.Module.validate(_engine(config), data)
        except wasmtime.WasmtimeError as exc:
            cause = _cause(exc)
            proposal = next((name for pattern, name in REFUSED_PROPOSALS if pattern.search(cause)), None)
            raise InvalidWasm(cause, proposal if config.restricted else None) from exc

    def describe(self, native_module: object) -> CompiledModule:
        if not isinstance(native_module, wasmtime.Module):
            raise TypeError(f"not a module the wasmtime engine compiled: {type(native_module).__name__}")
        return _described(native_module, EngineConfig(restricted=False))

    def cache_tag(self, config: EngineConfig) -> str:
        return json.dumps(
            {
                "engine": "wasmtime",
                "wasmtime": WASMTIME_VERSION,
                "machine": platform.machine(),
                "config": dataclasses.asdict(config),
                "settings": _settings(config),
            },
            sort_keys=True,
        )

    def serialize(self, compiled: CompiledModule) -> bytes:
        assert isinstance(compiled.native, wasmtime.Module)
        return bytes(compiled.native.serialize())

    def deserialize(self, config: EngineConfig, payload: bytes) -> CompiledModule:
        try:
            module = wasmtime.Module.deserialize(_engine(config), payload)
        except wasmtime.WasmtimeError as exc:  # another version or settings
            raise InvalidWasm(_cause(exc), None) from exc
        return _described(module, config)

    def new_store(self, config: EngineConfig, memory_pages: int | None) -> Store:
        engine = _engine(config)
        _native.watchdog_watch(_address(engine.ptr()))
        store = WasmtimeStore(engine, config)
        store.store.set_limits(
            memory_size=memory_pages * WASM_PAGE if memory_pages is not None else -1,
            table_elements=MAX_TABLE_ELEMENTS,
            instances=1,
            memories=1,
        )
        return store

    def instantiate(
        self,
        store: Store,
        compiled: CompiledModule,
        host_functions: list[HostFunction],
        *,
        fuel: int | None,
        where: str,
        timeout_ms: int | None,
    ) -> Instance:
        assert isinstance(store, WasmtimeStore) and isinstance(compiled.native, wasmtime.Module)
        wasm_store = store.store
        if fuel is not None:
            wasm_store.set_fuel(fuel)
        wasm_store.set_epoch_deadline(1)
        try:
            if host_functions:
                linker = wasmtime.Linker(wasm_store.engine)
                for function in host_functions:
                    _define(linker, function)
                instance = linker.instantiate(wasm_store, compiled.native)
            else:
                instance = wasmtime.Instance(wasm_store, compiled.native, [])
            exports = instance.exports(wasm_store)
            initialize = exports.get("_initialize")
            if isinstance(initialize, wasmtime.Func):
                initialize(wasm_store)  # the WASI reactor convention: run constructors once
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise start_failure(where, _cause(exc), timeout_ms) from exc
        memory = exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return WasmtimeInstance(store, instance, _handle_bytes(memory._memory))


    def snapshot(
        self,
        data: bytes,
        *,
        calls: tuple[str, ...],
        memory: str | None,
        globals: tuple[str, ...],
        references: tuple[str, ...],
        timeout_ms: int,
        memory_pages: int,
        where: str,
    ) -> Snapshot:
        config = EngineConfig()
        compiled = self._compile(config, data, v128_globals=True)
        store = self.new_store(config, memory_pages)
        assert isinstance(store, WasmtimeStore) and isinstance(compiled.native, wasmtime.Module)
        wasm_store = store.store
        called: list[str] = []
        linker = wasmtime.Linker(wasm_store.engine)
        for imp in compiled.imports:
            ty = imp.type
            assert isinstance(ty, FuncType)  # preinit refuses every other import
            unsupported = [t for t in (*ty.params, *ty.results) if t not in _VALTYPES]
            if unsupported:
                raise TrapError(
                    f"{where}: imports {imp.module}.{imp.name} with a {unsupported[0]}, which preinit cannot stub"
                )
            body = functools.partial(_import_stub, called, f"{imp.module}.{imp.name}")
            _define(linker, HostFunction(imp.module, imp.name, ty.params, ty.results, body, _ignore))
        # The watchdog ticks the epoch every 10 ms; the deadline covers every call.
        wasm_store.set_epoch_deadline(-(-timeout_ms // EPOCH_TICK_MS) + 1)
        step = "instantiation"
        try:
            instance = linker.instantiate(wasm_store, compiled.native)
            exports = instance.exports(wasm_store)
            before = {name: _reference_state(wasm_store, exports[name]) for name in references}
            for step in calls:
                func = exports[step]
                assert isinstance(func, wasmtime.Func)
                if func.type(wasm_store).params:
                    raise TrapError(f"{where}: {step} takes parameters: an initializer takes none")
                func(wasm_store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if called:
                cause = f"it called import {called[0]}, and preinit provides no host functions"
            elif isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                cause = f"time limit of {timeout_ms} ms exceeded"
            else:
                cause = _cause(exc)
            raise TrapError(f"{where}: {step} failed: {cause}") from exc
        memory_bytes = None
        if memory is not None:
            found = exports[memory]
            assert isinstance(found, wasmtime.Memory)
            memory_bytes = ctypes.string_at(_address(found.data_ptr(wasm_store)), found.data_len(wasm_store))
        return Snapshot(
            memory=memory_bytes,
            globals={name: _global_bytes(wasm_store, exports[name]) for name in globals},
            changed=tuple(name for name in references if _reference_state(wasm_store, exports[name]) != before[name]),
        )


def _import_stub(called: list[str], name: str, _memory: object, *_args: int) -> int:
    called.append(name)
    raise CapabilityError("preinit provides no host functions")


def _ignore(_message: str) -> None:
    pass


def _global_bytes(store: wasmtime.Store, found: object) -> bytes:
    assert isinstance(found, wasmtime.Global)
    raw = wasmtime_c.wasmtime_val_t()
    wasmtime_c.wasmtime_global_get(store._context(), ctypes.byref(found._global), ctypes.byref(raw))
    return ctypes.string_at(ctypes.addressof(raw.of), 16)


def _reference_state(store: wasmtime.Store, found: object) -> list[bytes]:
    """A table's or reference global's contents, as comparable handles."""
    if isinstance(found, wasmtime.Global):
        return [_global_bytes(store, found)]
    assert isinstance(found, wasmtime.Table)
    state = []
    raw = wasmtime_c.wasmtime_val_t()
    for index in range(found.size(store)):
        wasmtime_c.wasmtime_table_get(store._context(), ctypes.byref(found._table), index, ctypes.byref(raw))
        kind = ctypes.string_at(ctypes.addressof(raw), 1)
        state.append(kind + ctypes.string_at(ctypes.addressof(raw.of), 16))
    return state


ENGINE: Engine = WasmtimeEngine()
