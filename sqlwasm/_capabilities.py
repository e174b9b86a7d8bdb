"""Capabilities: the only imports a guest can have, and their host functions.

A module declares capabilities in its manifest, the host grants them
(Runtime(grant=...)); an import is linked only when a declared and granted
capability provides it. There is no filesystem, environment, network or
process capability: the WASI functions for those are never linked.

Host functions are linked through sqlwasm's own trampoline rather than
wasmtime-py's: wasmtime-py keeps an exception a host function raised in one
process-wide slot and raises it at the next trap any thread sees from Python,
so one guest's failure could surface in another thread's install. Here a
failure becomes a trap of the call it happened in, and nothing else.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import wasmtime
import wasmtime._bindings as wasmtime_c

from ._errors import CapabilityError, MarshallingError
from ._manifest import Manifest

log = logging.getLogger("sqlwasm")

WASI = "wasi_snapshot_preview1"
WASI_ERRNO_SUCCESS = 0
WASI_ERRNO_FAULT = 21
WASI_ERRNO_INVAL = 28
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1

LOG_MESSAGE_MAX = 4096
LOG_RATE_PER_SECOND = 100  # per instance; the rest are counted, then reported
RANDOM_GET_MAX = 1 << 20


@dataclass(frozen=True)
class HostImport:
    capability: str
    params: tuple[str, ...]
    results: tuple[str, ...]

    def func_type(self) -> wasmtime.FuncType:
        make = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}
        return wasmtime.FuncType([make[p]() for p in self.params], [make[r]() for r in self.results])


# (import module, import name) -> what provides it. docs/security.md has this table.
HOST_IMPORTS: dict[tuple[str, str], HostImport] = {
    ("sqlwasm", "log"): HostImport("log", ("i32", "i32", "i32"), ()),
    (WASI, "clock_time_get"): HostImport("clock", ("i32", "i64", "i32"), ("i32",)),
    (WASI, "clock_res_get"): HostImport("clock", ("i32", "i32"), ("i32",)),
    (WASI, "random_get"): HostImport("random", ("i32", "i32"), ("i32",)),
}


def check_imports(manifest: Manifest, compiled: wasmtime.Module, granted: Iterable[str]) -> None:
    """Every import is provided by a declared, granted capability; every
    declared capability is granted."""
    where = f"module '{manifest.name}'"
    granted = set(granted)
    for imp in compiled.imports:
        name = f"{imp.module}.{imp.name}"
        provider = HOST_IMPORTS.get((imp.module, imp.name or ""))
        if provider is None:
            raise CapabilityError(
                f"{where} imports {name}, which no capability provides "
                "(there is no filesystem, environment, network or process access)"
            )
        if provider.capability not in manifest.capabilities:
            raise CapabilityError(
                f"{where} imports {name}, which needs capability '{provider.capability}' "
                "that its manifest does not declare"
            )
        if provider.capability not in granted:
            raise CapabilityError(
                f"{where} imports {name}, which needs capability '{provider.capability}', "
                "which was not granted (grant=[...])"
            )
        ty = imp.type
        if not isinstance(ty, wasmtime.FuncType) or (
            tuple(map(str, ty.params)),
            tuple(map(str, ty.results)),
        ) != (provider.params, provider.results):
            raise CapabilityError(
                f"{where} imports {name} (capability '{provider.capability}') with the wrong type: expected "
                f"({', '.join(provider.params)}) -> ({', '.join(provider.results)})"
            )
    for cap in manifest.capabilities:
        if cap not in granted:
            raise CapabilityError(f"{where} needs capability '{cap}', which was not granted (grant=[...])")


class _RateLimiter:
    """A token bucket: `rate` messages a second, bursts up to `rate`."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.suppressed += 1
        return False


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise CapabilityError("guest has no exported memory")
    return memory


def _in_bounds(caller: wasmtime.Caller, memory: wasmtime.Memory, ptr: int, length: int) -> bool:
    return length >= 0 and ptr + length <= memory.data_len(caller)


@dataclass(frozen=True)
class _HostFunction:
    name: str  # "module.name", for messages
    spec: HostImport
    body: Callable[..., Any]  # body(caller, *params) -> the result, or None
    report_failure: Callable[[str], None]


# The host functions wasmtime can call, by the handle it hands back to the
# trampoline (its env pointer); wasmtime finalizes a handle after its last use.
_host_functions: dict[int, _HostFunction] = {}
_handles = itertools.count(1)
WASMTIME_I32, WASMTIME_I64 = 0, 1  # wasmtime_valkind_t


def _trap(message: str) -> int:
    """A new trap carrying message, as a callback returns it (wasmtime then owns it)."""
    encoded = message.encode("utf-8", errors="replace")
    trap = wasmtime_c.wasmtime_trap_new(ctypes.create_string_buffer(encoded), len(encoded))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


def _call_host_function(handle: int | None, caller_ptr: Any, params: Any, _: int, results: Any, __: int) -> int:
    """wasmtime calls every sqlwasm host function through here. It returns 0
    when the function returned, else the trap that ends the guest's call.
    Nothing may unwind out of it: not through the guest's frames, and not
    into wasmtime-py's process-wide slot."""
    function = _host_functions[handle or 0]  # wasmtime finalizes a handle only after its last call
    caller = wasmtime.Caller(caller_ptr)
    try:
        args = [params[i].of.i64 if ty == "i64" else params[i].of.i32 for i, ty in enumerate(function.spec.params)]
        result = function.body(caller, *args)
        if function.spec.results:
            (ty,) = function.spec.results
            results[0].kind = WASMTIME_I64 if ty == "i64" else WASMTIME_I32
            setattr(results[0].of, ty, result)  # the union's i32 or i64 field
        return 0
    except BaseException as exc:  # KeyboardInterrupt too: it fails this call, like any failure
        message = f"host function {function.name} failed: {type(exc).__name__}: {exc}"[:190]
        function.report_failure(message)
        return _trap(message)
    finally:
        caller._invalidate()  # a Caller kept past the call must not reach the store


def _forget_host_function(handle: int | None, host_functions: dict[int, _HostFunction] = _host_functions) -> None:
    # host_functions is bound at definition: wasmtime may finalize during interpreter teardown
    host_functions.pop(handle or 0, None)


_TRAMPOLINE = wasmtime_c.wasmtime_func_callback_t(_call_host_function)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_forget_host_function)


def _define(linker: wasmtime.Linker, module: str, name: str, function: _HostFunction) -> None:
    handle = next(_handles)
    _host_functions[handle] = function
    module_bytes, name_bytes = module.encode("utf-8"), name.encode("utf-8")
    func_type = function.spec.func_type()  # held: the call reads it
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


def define_host_functions(
    linker: wasmtime.Linker,
    manifest: Manifest,
    report_failure: Callable[[str], None],
) -> None:
    """Defines, in linker, the host functions of the module's capabilities.

    report_failure(message) tells the native side why a host function failed,
    so the SQL error names the cause; the failure then traps the guest's call.
    """
    module_name = manifest.name
    guest_log = logging.getLogger(f"sqlwasm.guest.{module_name}")
    limiter = _RateLimiter(LOG_RATE_PER_SECOND)
    limiter_lock = threading.Lock()

    def log_message(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
        ptr &= 0xFFFFFFFF
        memory = _memory(caller)
        length = min(length, LOG_MESSAGE_MAX) if length >= 0 else -1
        if not _in_bounds(caller, memory, ptr, length):
            raise MarshallingError(f"log message (ptr {ptr}, len {length}) is outside guest memory")
        with limiter_lock:
            if not limiter.allow():
                return
            suppressed, limiter.suppressed = limiter.suppressed, 0
        text = bytes(memory.read(caller, ptr, ptr + length)).decode("utf-8", errors="replace")
        if suppressed:
            guest_log.warning("(%d messages suppressed by the rate limit)", suppressed)
        guest_log.log({0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING}.get(level, logging.ERROR), "%s", text)

    def clock_time_get(caller: wasmtime.Caller, clock_id: int, precision: int, out: int) -> int:
        out &= 0xFFFFFFFF
        if clock_id == CLOCK_REALTIME:
            now = time.time_ns()
        elif clock_id == CLOCK_MONOTONIC:
            now = time.monotonic_ns()
        else:
            return WASI_ERRNO_INVAL
        memory = _memory(caller)
        if not _in_bounds(caller, memory, out, 8):
            return WASI_ERRNO_FAULT
        memory.write(caller, now.to_bytes(8, "little"), out)
        return WASI_ERRNO_SUCCESS

    def clock_res_get(caller: wasmtime.Caller, clock_id: int, out: int) -> int:
        out &= 0xFFFFFFFF
        if clock_id not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
            return WASI_ERRNO_INVAL
        memory = _memory(caller)
        if not _in_bounds(caller, memory, out, 8):
            return WASI_ERRNO_FAULT
        memory.write(caller, (1000).to_bytes(8, "little"), out)
        return WASI_ERRNO_SUCCESS

    def random_get(caller: wasmtime.Caller, buf: int, length: int) -> int:
        buf &= 0xFFFFFFFF
        length &= 0xFFFFFFFF
        if length > RANDOM_GET_MAX:
            return WASI_ERRNO_INVAL
        memory = _memory(caller)
        if not _in_bounds(caller, memory, buf, length):
            return WASI_ERRNO_FAULT
        if length:
            memory.write(caller, os.urandom(length), buf)
        return WASI_ERRNO_SUCCESS

    bodies: dict[tuple[str, str], Callable[..., Any]] = {
        ("sqlwasm", "log"): log_message,
        (WASI, "clock_time_get"): clock_time_get,
        (WASI, "clock_res_get"): clock_res_get,
        (WASI, "random_get"): random_get,
    }
    for (module, name), spec in HOST_IMPORTS.items():
        if spec.capability in manifest.capabilities:
            function = _HostFunction(f"{module}.{name}", spec, bodies[(module, name)], report_failure)
            _define(linker, module, name, function)
