"""The process-wide wasmtime engines, what wasm they accept, and the
watchdog that drives time limits.

Two engines: one plain, one that meters fuel (fuel instrumentation costs every
guest something, so only modules with a fuel limit pay for it). Both interrupt
guests through epochs: a native watchdog thread advances the epoch every
10 ms and the per-store epoch callback enforces time limits and
sqlite3_interrupt(). The watchdog holds its own engine references and is
stopped at exit, before Python frees its objects.

Both engines enable only the wasm proposals that C, Zig and AssemblyScript
output needs (SIMD128, bulk memory, sign extension, mutable globals,
multi-value, saturating conversions, reference types; multi-memory, see
DISABLED); every other proposal is off, and a module that needs one is
refused at load, naming it.
"""

from __future__ import annotations

import atexit
import ctypes
import re
import threading

import wasmtime
import wasmtime._bindings as wasmtime_c

from . import _native
from ._errors import CapabilityError, Error, ManifestError
from ._limits import MAX_TABLE_ELEMENTS
from ._wasmfile import MalformedModule, declared_tables

# Native stack for wasm frames, counted from where the guest is entered. The
# native call path refuses a call unless this much (plus reserves) is left on
# the thread, so a recursing guest traps instead of overflowing the stack.
MAX_WASM_STACK = _native.MAX_WASM_STACK

MEMORY_RESERVATION = 1 << 32

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

_engines: dict[bool, wasmtime.Engine] = {}
_engines_lock = threading.Lock()

# Stop the watchdog before the interpreter tears anything down.
atexit.register(_native.lib.sw_watchdog_stop)


def engine(*, fuel: bool) -> wasmtime.Engine:
    """The process's one engine for this configuration. A module compiled
    with one engine cannot be instantiated in a store of another, so
    threads that arrive together on first use must all get the same one."""
    with _engines_lock:
        found = _engines.get(fuel)
        if found is None:
            found = _engines[fuel] = wasmtime.Engine(_config(fuel=fuel))
        return found


def _config(*, fuel: bool) -> wasmtime.Config:
    config = wasmtime.Config()
    config.cranelift_opt_level = "speed"
    config.epoch_interruption = True
    config.consume_fuel = fuel
    config.max_wasm_stack = MAX_WASM_STACK
    for setting in DISABLED:
        setattr(config, setting, False)
    # The native path keeps each memory's base address: it must never move.
    # memory.grow within the 4 GiB reservation (all of wasm32) never needs to.
    wasmtime_c.wasmtime_config_memory_reservation_set(config.ptr(), MEMORY_RESERVATION)
    wasmtime_c.wasmtime_config_memory_may_move_set(config.ptr(), False)
    return config


def watch(watched: wasmtime.Engine) -> None:
    """Makes sure the watchdog ticks this engine (and runs in this process:
    after fork() the first install restarts it)."""
    pointer = ctypes.cast(watched.ptr(), ctypes.c_void_p).value
    if _native.lib.sw_watchdog_watch(_native.ffi.cast("void *", pointer)) != 0:
        raise Error("sqlwasm could not start its watchdog thread")


def wasmtime_cause(exc: BaseException) -> str:
    """The cause in a wasmtime error or trap message: its last non-empty line
    (the lines before it are context and a backtrace)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def refused_proposal(error: ManifestError, module_name: str) -> ManifestError:
    """The error for a module wasmtime refused to compile: one that names the
    proposal the module needs if a disabled one is why, else error itself."""
    cause = error.__cause__
    if isinstance(cause, wasmtime.WasmtimeError):
        message = wasmtime_cause(cause)
        for pattern, proposal in REFUSED_PROPOSALS:
            if pattern.search(message):
                return ManifestError(f"module '{module_name}' uses {proposal}, which sqlwasm does not enable")
    return error


def check_tables(data: bytes, module_name: str) -> None:
    """What all of a module's tables can ever hold stays within
    MAX_TABLE_ELEMENTS: table elements live in host memory, outside
    memory_pages. A table grows to its declared maximum, and the store
    stops any table at MAX_TABLE_ELEMENTS, so one without a maximum counts
    as that much. (Call it on a module wasmtime has compiled.)"""
    where = f"module '{module_name}'"
    try:
        tables = declared_tables(data)
    except MalformedModule as exc:
        raise ManifestError(f"{where}: {exc}") from exc
    reach = 0
    for table in tables:
        if table.min_elements > MAX_TABLE_ELEMENTS:
            raise CapabilityError(
                f"{where} starts with a table of {table.min_elements} elements, more than the "
                f"{MAX_TABLE_ELEMENTS} an instance may have"
            )
        reach += MAX_TABLE_ELEMENTS if table.max_elements is None else min(table.max_elements, MAX_TABLE_ELEMENTS)
    if reach > MAX_TABLE_ELEMENTS:
        raise CapabilityError(
            f"{where} has {len(tables)} tables that can grow to {reach} elements in all, more than the "
            f"{MAX_TABLE_ELEMENTS} an instance may have (a table without a declared maximum can grow to "
            f"{MAX_TABLE_ELEMENTS})"
        )
