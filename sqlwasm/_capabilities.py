"""Capabilities: the only imports a guest can have, and their host functions.

A module declares capabilities in its manifest, the host grants them
(Runtime(grant=...)); an import is linked only when a declared and granted
capability provides it. There is no filesystem, environment, network or
process capability: the WASI functions for those are never linked.

This is the policy and the host functions' bodies, engine-neutral; the
engine links them (and makes a failing one trap only its own call).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from ._engine import CompiledModule, FuncType, GuestMemory, HostFunction, Import
from ._errors import CapabilityError, MarshallingError

if TYPE_CHECKING:
    from ._guest_sql import GuestSql
    from ._manifest import Manifest

log = logging.getLogger("sqlwasm")

WASI = "wasi_snapshot_preview1"
WASI_ERRNO_SUCCESS = 0
WASI_ERRNO_BADF = 8
WASI_ERRNO_FAULT = 21
WASI_ERRNO_INVAL = 28
WASI_ERRNO_SPIPE = 70
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
STDOUT, STDERR = 1, 2
WASI_FILETYPE_CHARACTER_DEVICE = 2
WASI_RIGHT_FD_WRITE = 1 << 6

LOG_MESSAGE_MAX = 4096
LOG_RATE_PER_SECOND = 100  # per instance; the rest are counted, then reported
RANDOM_GET_MAX = 1 << 20
IOV_MAX = 1024  # iovecs one fd_write may pass (POSIX's IOV_MAX; wasi-libc passes at most 2)
# Bytes of one write that are kept: the native buffer keeps each call's last
# 4096 (SW_OUTPUT_MAX), and the log shows no more.
DEBUG_OUTPUT_KEPT = 4096


Signature = tuple[tuple[str, ...], tuple[str, ...]]  # (params, results)


@dataclass(frozen=True)
class HostImport:
    capability: str
    signatures: tuple[Signature, ...]  # the forms a guest may import it in; the first is the main one


@dataclass(frozen=True)
class Capability:
    """What a capability lets a guest do, and what that means for SQLite."""

    name: str
    # (import module, import name) -> its wasm signatures, (params, results)
    # each: a guest imports the function in one of these forms
    imports: dict[tuple[str, str], tuple[Signature, ...]]
    # Functions of a module with it may still be deterministic (log: yes;
    # clock and random: their results differ between calls).
    deterministic: bool
    # Its guest reaches the host, so its functions are callable only from
    # top-level SQL (SQLITE_DIRECTONLY).
    direct_only: bool = True
    # The host must grant it (Runtime(grant=...)); one that needs no grant is
    # still declared, so a module's manifest says what it does.
    needs_grant: bool = True


# The one registry of capabilities. docs/security.md has this table.
CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in (
        Capability("log", {("sqlwasm", "log"): ((("i32", "i32", "i32"), ()),)}, deterministic=True),
        Capability(
            "clock",
            {
                (WASI, "clock_time_get"): ((("i32", "i64", "i32"), ("i32",)),),
                (WASI, "clock_res_get"): ((("i32", "i32"), ("i32",)),),
            },
            deterministic=False,
        ),
        Capability("random", {(WASI, "random_get"): ((("i32", "i32"), ("i32",)),)}, deterministic=False),
        # Debug output: fd_write to stdout and stderr only, into the call's
        # bounded buffer and a DEBUG logger; nothing leaves the process and
        # the guest learns nothing, so no grant and no SQLITE_DIRECTONLY
        # (docs/security.md). The rest is what wasi-libc's stdio links.
        Capability(
            "stdio",
            {
                (WASI, "fd_write"): ((("i32", "i32", "i32", "i32"), ("i32",)),),
                (WASI, "fd_fdstat_get"): ((("i32", "i32"), ("i32",)),),
                (WASI, "fd_seek"): ((("i32", "i64", "i32", "i32"), ("i32",)),),
                (WASI, "fd_close"): ((("i32",), ("i32",)),),
            },
            deterministic=True,
            direct_only=False,
            needs_grant=False,
        ),
        # Reads the database (docs/security.md): the rows can change between calls.
        Capability(
            "sql",
            {
                ("sqlwasm", "query"): ((("i32", "i32", "i32", "i32"), ("i32",)),),
                # into the guest's buffer, or packed into one sqlwasm_alloc gives
                ("sqlwasm", "query_next"): ((("i32", "i32", "i32"), ("i32",)), (("i32",), ("i64",))),
                ("sqlwasm", "query_close"): ((("i32",), ()),),
            },
            deterministic=False,
        ),
    )
}

# (import module, import name) -> what provides it.
HOST_IMPORTS: dict[tuple[str, str], HostImport] = {
    key: HostImport(c.name, signatures) for c in CAPABILITIES.values() for key, signatures in c.imports.items()
}


def sqlite_call_flags(capabilities: Iterable[str], declared_deterministic: bool) -> tuple[bool, bool]:
    """(direct_only, deterministic) for a function of a module with these
    capabilities whose manifest claims declared_deterministic."""
    capabilities = tuple(capabilities)
    deterministic = declared_deterministic and all(CAPABILITIES[c].deterministic for c in capabilities)
    return any(CAPABILITIES[c].direct_only for c in capabilities), deterministic


def check_imports(manifest: Manifest, compiled: CompiledModule, granted: Iterable[str]) -> None:
    """Every import is provided by a declared, granted capability; every
    declared capability is granted."""
    where = f"module '{manifest.name}'"
    granted = set(granted)
    for imp in compiled.imports:
        name = f"{imp.module}.{imp.name}"
        provider = HOST_IMPORTS.get((imp.module, imp.name))
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
        if provider.capability not in granted and CAPABILITIES[provider.capability].needs_grant:
            raise CapabilityError(
                f"{where} imports {name}, which needs capability '{provider.capability}', "
                "which was not granted (grant=[...])"
            )
        ty = imp.type
        if not isinstance(ty, FuncType) or (ty.params, ty.results) not in provider.signatures:
            forms = " or ".join(f"({', '.join(p)}) -> ({', '.join(r)})" for p, r in provider.signatures)
            raise CapabilityError(
                f"{where} imports {name} (capability '{provider.capability}') with the wrong type: expected {forms}"
            )
    for cap in manifest.capabilities:
        if cap not in granted and CAPABILITIES[cap].needs_grant:
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


def _in_bounds(memory: GuestMemory, ptr: int, length: int) -> bool:
    return length >= 0 and ptr + length <= memory.size()


def host_functions(
    manifest: Manifest,
    report_failure: Callable[[str], None],
    sql: GuestSql | None = None,
    imports: Iterable[Import] = (),
) -> list[HostFunction]:
    """The host functions of the module's capabilities, for the engine to link.

    report_failure(message) tells the native side why a host function failed,
    so the SQL error names the cause; the failure then traps the guest's call.
    sql runs the instance's queries (needed if it has capability sql).
    imports: the module's imports, which pick the form of an import that has
    several (check_imports has checked them).
    """
    imported = {(i.module, i.name): (i.type.params, i.type.results) for i in imports if isinstance(i.type, FuncType)}
    if "sql" in manifest.capabilities and sql is None:
        raise CapabilityError(f"module '{manifest.name}' has capability 'sql' but no connection to query")
    module_name = manifest.name
    guest_log = logging.getLogger(f"sqlwasm.guest.{module_name}")
    limiter = _RateLimiter(LOG_RATE_PER_SECOND)
    limiter_lock = threading.Lock()

    def log_message(memory: GuestMemory, level: int, ptr: int, length: int) -> None:
        ptr &= 0xFFFFFFFF
        length = min(length, LOG_MESSAGE_MAX) if length >= 0 else -1
        if not _in_bounds(memory, ptr, length):
            raise MarshallingError(f"log message (ptr {ptr}, len {length}) is outside guest memory")
        with limiter_lock:
            if not limiter.allow():
                return
            suppressed, limiter.suppressed = limiter.suppressed, 0
        text = memory.read(ptr, length).decode("utf-8", errors="replace")
        if suppressed:
            guest_log.warning("(%d messages suppressed by the rate limit)", suppressed)
        guest_log.log({0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING}.get(level, logging.ERROR), "%s", text)

    def clock_time_get(memory: GuestMemory, clock_id: int, precision: int, out: int) -> int:
        out &= 0xFFFFFFFF
        if clock_id == CLOCK_REALTIME:
            now = time.time_ns()
        elif clock_id == CLOCK_MONOTONIC:
            now = time.monotonic_ns()
        else:
            return WASI_ERRNO_INVAL
        if not _in_bounds(memory, out, 8):
            return WASI_ERRNO_FAULT
        memory.write(now.to_bytes(8, "little"), out)
        return WASI_ERRNO_SUCCESS

    def clock_res_get(memory: GuestMemory, clock_id: int, out: int) -> int:
        out &= 0xFFFFFFFF
        if clock_id not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
            return WASI_ERRNO_INVAL
        if not _in_bounds(memory, out, 8):
            return WASI_ERRNO_FAULT
        memory.write((1000).to_bytes(8, "little"), out)
        return WASI_ERRNO_SUCCESS

    def random_get(memory: GuestMemory, buf: int, length: int) -> int:
        buf &= 0xFFFFFFFF
        length &= 0xFFFFFFFF
        if length > RANDOM_GET_MAX:
            return WASI_ERRNO_INVAL
        if not _in_bounds(memory, buf, length):
            return WASI_ERRNO_FAULT
        if length:
            memory.write(os.urandom(length), buf)
        return WASI_ERRNO_SUCCESS

    def fd_write(memory: GuestMemory, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
        if fd not in (STDOUT, STDERR):
            return WASI_ERRNO_BADF
        iovs, iovs_len, nwritten = iovs & 0xFFFFFFFF, iovs_len & 0xFFFFFFFF, nwritten & 0xFFFFFFFF
        if iovs_len > IOV_MAX:
            return WASI_ERRNO_INVAL
        if not _in_bounds(memory, iovs, 8 * iovs_len) or not _in_bounds(memory, nwritten, 4):
            return WASI_ERRNO_FAULT
        buffers = list(struct.iter_unpack("<II", memory.read(iovs, 8 * iovs_len)))
        if any(not _in_bounds(memory, ptr, length) for ptr, length in buffers):
            return WASI_ERRNO_FAULT
        total = sum(length for _, length in buffers)
        if total > 0xFFFFFFFF:
            return WASI_ERRNO_INVAL
        kept: list[bytes] = []  # the last DEBUG_OUTPUT_KEPT bytes, read back to front
        room = DEBUG_OUTPUT_KEPT
        for ptr, length in reversed(buffers):
            if room == 0:
                break
            take = min(length, room)
            kept.append(memory.read(ptr + length - take, take))
            room -= take
        tail = b"".join(reversed(kept))
        memory.write(total.to_bytes(4, "little"), nwritten)
        memory.debug_output(tail, total - len(tail))
        if guest_log.isEnabledFor(logging.DEBUG):
            stream = "stdout" if fd == STDOUT else "stderr"
            if total > len(tail):
                guest_log.debug("%s: (%d bytes not shown)", stream, total - len(tail))
            for line in tail.decode("utf-8", errors="replace").splitlines():
                guest_log.debug("%s: %s", stream, line)
        return WASI_ERRNO_SUCCESS

    def fd_fdstat_get(memory: GuestMemory, fd: int, out: int) -> int:
        if fd not in (STDOUT, STDERR):
            return WASI_ERRNO_BADF
        out &= 0xFFFFFFFF
        if not _in_bounds(memory, out, 24):
            return WASI_ERRNO_FAULT
        # A character device that cannot seek: wasi-libc takes it for a
        # terminal and line-buffers it, so output before a trap is not lost
        # in libc's buffer.
        memory.write(struct.pack("<BxHxxxxQQ", WASI_FILETYPE_CHARACTER_DEVICE, 0, WASI_RIGHT_FD_WRITE, 0), out)
        return WASI_ERRNO_SUCCESS

    def fd_seek(memory: GuestMemory, fd: int, offset: int, whence: int, out: int) -> int:
        return WASI_ERRNO_SPIPE if fd in (STDOUT, STDERR) else WASI_ERRNO_BADF

    def fd_close(memory: GuestMemory, fd: int) -> int:
        return WASI_ERRNO_SUCCESS if fd in (STDOUT, STDERR) else WASI_ERRNO_BADF

    bodies: dict[tuple[str, str], Callable[..., int | None]] = {
        (WASI, "fd_write"): fd_write,
        (WASI, "fd_fdstat_get"): fd_fdstat_get,
        (WASI, "fd_seek"): fd_seek,
        (WASI, "fd_close"): fd_close,
        ("sqlwasm", "log"): log_message,
        (WASI, "clock_time_get"): clock_time_get,
        (WASI, "clock_res_get"): clock_res_get,
        (WASI, "random_get"): random_get,
    }
    # Bodies by import and form, where an import has several forms.
    forms: dict[tuple[str, str, Signature], Callable[..., int | None]] = {}
    if sql is not None:
        bodies[("sqlwasm", "query")] = sql.query
        bodies[("sqlwasm", "query_close")] = sql.query_close
        buffer_form, packed_form = HOST_IMPORTS[("sqlwasm", "query_next")].signatures
        forms["sqlwasm", "query_next", buffer_form] = sql.query_next
        forms["sqlwasm", "query_next", packed_form] = sql.query_next_packed
    functions = []
    for (module, name), spec in HOST_IMPORTS.items():
        if spec.capability not in manifest.capabilities:
            continue
        signature = imported.get((module, name), spec.signatures[0])
        if signature not in spec.signatures:
            signature = spec.signatures[0]  # check_imports refuses the module
        body = forms.get((module, name, signature)) or bodies[(module, name)]
        functions.append(HostFunction(module, name, *signature, body, report_failure))
    return functions
