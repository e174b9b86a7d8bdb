"""The engine seam: what sqlwasm needs from a WebAssembly engine, as plain
data and a small interface. Nothing outside the engine layer touches an
engine's own types.

The one engine today is wasmtime (sqlwasm/_engine_wasmtime.py, the only
module that imports wasmtime-py). A second engine is a new file that
implements the Engine protocol below:

- compile(config, data): validate and compile under the configuration's
  policy (only the wasm proposals the ABI needs, see EngineConfig) and
  return a CompiledModule whose exports and imports are plain data; a
  module the engine refuses raises InvalidWasm, naming the disabled
  proposal it needs when that is why.
- new_store(config, memory_pages): a store whose memory and tables are
  capped (memory_pages; MAX_TABLE_ELEMENTS across all tables; one memory,
  one instance), whose time limit the native watchdog enforces (epoch
  interruption), and that hands C its native store and context pointers.
- instantiate(store, compiled, ...): link the host functions of granted
  capabilities (a failing host function traps only its own call and
  reports through report_failure; nothing unwinds through the guest), run
  the WASI reactor's _initialize, turn traps into TrapError, and return an
  Instance that hands C the bytes of its memory and function handles.
- describe(native_module): the plain interface of a module the engine
  compiled outside sqlwasm (tools and tests build them directly).
- snapshot(data, ...): pre-initialization (sqlwasm/_preinit.py): run a
  module's start and initializer exports on the sandbox's engine with every
  import a stub that fails the run naming itself, then report its memory,
  globals and whether its function references changed (Snapshot).
- cache_tag(config), serialize(compiled), deserialize(config, payload): the
  compiled-module cache (sqlwasm/_cache.py) stores serialize's bytes under a
  key that includes cache_tag, which must change with anything that changes
  what compiled code means (engine version, every engine setting, the
  machine); deserialize raises InvalidWasm for bytes the engine cannot take.

The native per-row path (native/) calls the engine's C API itself; a second
engine needs its own native binding there too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Protocol, Union

from ._errors import CapabilityError, Error, ManifestError, TrapError
from ._limits import MAX_TABLE_ELEMENTS
from ._wasmfile import MalformedModule, declared_tables

# --------------------------------------------------------------- plain data


@dataclass(frozen=True)
class EngineConfig:
    """How an engine compiles and runs code: a frozen, hashable value that
    keys compiled modules (code compiled under one configuration cannot be
    instantiated under another).

    restricted=True is sqlwasm's sandbox: epoch interruption, the native
    stack limit, only the wasm proposals C, Zig and AssemblyScript output
    needs, memories that never move. restricted=False is the engine's own
    defaults, only for reading a module's interface (pack, inspect)."""

    fuel: bool = False
    restricted: bool = True


@dataclass(frozen=True)
class FuncType:
    params: tuple[str, ...]  # wasm value types: "i32", "i64", "f32", "f64", "v128", ...
    results: tuple[str, ...]


@dataclass(frozen=True)
class MemoryType:
    min_pages: int
    max_pages: int | None


@dataclass(frozen=True)
class OtherType:
    kind: str  # "global", "table", "tag", ...


ExternType = Union[FuncType, MemoryType, OtherType]


@dataclass(frozen=True)
class Export:
    name: str
    type: ExternType


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    type: ExternType


@dataclass(frozen=True, eq=False)
class CompiledModule:
    """A compiled module: its interface as plain data, and the engine's own
    compiled form (only the engine that made it reads `native`)."""

    exports: tuple[Export, ...]
    imports: tuple[Import, ...]
    config: EngineConfig
    native: object


class InvalidWasm(Error):
    """The engine refused to compile a module: `cause` is its message's last
    line; `proposal` names a disabled wasm proposal the module needs, if
    that is why."""

    def __init__(self, cause: str, proposal: str | None) -> None:
        self.cause = cause
        self.proposal = proposal
        super().__init__(cause)


# ------------------------------------------------------ host functions


class GuestMemory(Protocol):
    """The calling guest's exported memory, as a host function sees it.
    Each method raises CapabilityError if the guest exports no memory."""

    def size(self) -> int: ...

    def read(self, ptr: int, length: int) -> bytes: ...

    def write(self, data: bytes, ptr: int) -> None: ...

    def debug_output(self, data: bytes, skipped: int) -> None:
        """Adds what the guest wrote to stdout or stderr to its call's
        debug output (after `skipped` bytes that were not kept)."""
        ...

    def alloc(self, size: int) -> int:
        """Calls the guest's sqlwasm_alloc(size) (a call into the guest from
        inside the host call): the buffer's address, unchecked."""
        ...


@dataclass(frozen=True)
class HostFunction:
    """A host function to link as import `module`.`name`. body(memory,
    *params) returns the result (or None when there is none); an exception
    fails the guest's call, and report_failure(message) hears why first."""

    module: str
    name: str
    params: tuple[str, ...]  # "i32" or "i64"
    results: tuple[str, ...]
    body: Callable[..., int | None]
    report_failure: Callable[[str], None]


@dataclass(frozen=True)
class Snapshot:
    """An instance's state after pre-initialization's calls."""

    memory: bytes | None  # the whole memory export asked for
    globals: dict[str, bytes]  # export -> the value's little-endian bytes (16, zero-padded)
    changed: tuple[str, ...]  # the reference exports (tables, funcref globals) the calls changed


# ------------------------------------------------------------ interface


class Store(Protocol):
    def pointers(self) -> tuple[int, int]:
        """(store, context) native pointers, for the native path."""
        ...


class Instance(Protocol):
    @property
    def memory_handle(self) -> bytes:
        """The native handle of export "memory"."""
        ...

    def func_handle(self, export: str) -> bytes | None:
        """The native handle of an exported function; None if export is not one."""
        ...

    def i32_global_handle(self, export: str) -> bytes | None:
        """The native handle of an exported mutable i32 global; None if export is not one."""
        ...


class Engine(Protocol):
    def compile(self, config: EngineConfig, data: bytes) -> CompiledModule: ...

    def new_store(self, config: EngineConfig, memory_pages: int | None) -> Store: ...

    def instantiate(
        self,
        store: Store,
        compiled: CompiledModule,
        host_functions: list[HostFunction],
        *,
        fuel: int | None,
        where: str,
        timeout_ms: int | None,
    ) -> Instance: ...

    def describe(self, native_module: object) -> CompiledModule: ...

    def validate(self, config: EngineConfig, data: bytes) -> None:
        """Raises InvalidWasm if compile(config, data) would refuse data
        (without compiling it)."""
        ...

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
        """Instantiates data (restricted, every import a stub that traps
        naming itself), runs the exports `calls` in order within timeout_ms in
        all, and returns the state of the exports named: references are
        compared before and after the calls. A failure raises TrapError
        naming the call (and the import, when one was called); a module the
        engine refuses raises InvalidWasm."""
        ...

    def cache_tag(self, config: EngineConfig) -> str:
        """What, besides the module, decides the code compile(config, ...)
        produces: the engine and its version, every setting, the machine."""
        ...

    def serialize(self, compiled: CompiledModule) -> bytes:
        """compiled's code, for deserialize in a later process."""
        ...

    def deserialize(self, config: EngineConfig, payload: bytes) -> CompiledModule:
        """The module serialize wrote. payload is executable code: only ever
        pass bytes sqlwasm itself wrote and checked (sqlwasm/_cache.py)."""
        ...


def default() -> Engine:
    """The engine sqlwasm runs on (imported on first use)."""
    found: Engine = importlib.import_module("sqlwasm._engine_wasmtime").ENGINE
    return found


def interface(module: CompiledModule | object) -> CompiledModule:
    """module's plain interface; a module the engine compiled directly is described by it."""
    return module if isinstance(module, CompiledModule) else default().describe(module)


def start_failure(where: str, cause: str, timeout_ms: int | None) -> TrapError:
    """The error for an instance that failed while starting (linking, _initialize)."""
    if "time limit exceeded" in cause:
        cause = f"time limit of {timeout_ms} ms exceeded"
    return TrapError(f"{where}: failed while starting: {cause}")


# ------------------------------------------------------ engine-neutral checks


def check_tables(data: bytes, module_name: str) -> None:
    """What all of a module's tables can ever hold stays within
    MAX_TABLE_ELEMENTS: table elements live in host memory, outside
    memory_pages. A table grows to its declared maximum, and the store
    stops any table at MAX_TABLE_ELEMENTS, so one without a maximum counts
    as that much. (Call it on a module the engine has compiled.)"""
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
