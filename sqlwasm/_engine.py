"""The process-wide wasmtime engines and the watchdog that drives time limits.

Two engines: one plain, one that meters fuel (fuel instrumentation costs every
guest something, so only modules with a fuel limit pay for it). Both interrupt
guests through epochs: a native watchdog thread advances the epoch every
10 ms and the per-store epoch callback enforces time limits and
sqlite3_interrupt(). The watchdog holds its own engine references and is
stopped at exit, before Python frees its objects.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import threading

import wasmtime
import wasmtime._bindings as wasmtime_c

from . import _native
from ._errors import Error

# Native stack for wasm frames. wasmtime's default (512 KiB) kills the process
# with SIGSEGV when a guest recurses on a thread whose whole stack is 512 KiB;
# 256 KiB still did on a 256 KiB thread. 128 KiB leaves the host frames room
# and traps cleanly on both.
MAX_WASM_STACK = 128 * 1024

MEMORY_RESERVATION = 1 << 32

_lock = threading.Lock()

# Stop the watchdog before the interpreter tears anything down.
atexit.register(_native.lib.sw_watchdog_stop)


@functools.cache
def engine(*, fuel: bool) -> wasmtime.Engine:
    with _lock:
        config = wasmtime.Config()
        config.cranelift_opt_level = "speed"
        config.epoch_interruption = True
        config.consume_fuel = fuel
        config.max_wasm_stack = MAX_WASM_STACK
        # The native path keeps each memory's base address: it must never move.
        # memory.grow within the 4 GiB reservation (all of wasm32) never needs to.
        wasmtime_c.wasmtime_config_memory_reservation_set(config.ptr(), MEMORY_RESERVATION)
        wasmtime_c.wasmtime_config_memory_may_move_set(config.ptr(), False)
        return wasmtime.Engine(config)


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
