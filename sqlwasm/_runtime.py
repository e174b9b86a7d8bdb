"""Runtime: verifies, compiles and installs modules into APSW connections."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import apsw

from . import _cache, _connection, _engine, _stored
from ._capabilities import check_imports
from ._errors import CapabilityError, Error, ManifestError, ModuleFileNotFoundError, SignatureError
from ._guest_sql import ascii_lower
from ._limits import (
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_MEMORY_PAGES,
    DEFAULT_TIMEOUT_MS,
    Limits,
)
from ._manifest import (
    CAPABILITIES,
    MANIFEST_SECTION,
    FunctionSpec,
    Manifest,
    check_exports,
    manifest_from_json,
)
from ._signing import TrustedKey, check_signature, load_trusted_keys
from ._wasmfile import MalformedModule, declared_memories, find_custom

log = logging.getLogger("sqlwasm")

# Binds the native part to the engine now: an engine whose handle types do
# not match the native build is an ImportError when sqlwasm is imported.
_engine.default()

ModuleSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
# grant=["log", "sql"], or {"log": True, "sql": ["readings", "places"]}
Grant = Union[Iterable[str], Mapping[str, Union[bool, Iterable[str]]]]


def parse_grant(grant: Grant) -> tuple[frozenset[str], frozenset[str] | None]:
    """(granted capability names, the tables queries may read: None for every
    table and view of the main schema)."""
    if isinstance(grant, str):
        grant = [grant]
    tables: frozenset[str] | None = None
    if isinstance(grant, Mapping):
        names = set()
        for name, value in grant.items():
            if value is True:
                names.add(name)
            elif value is False:
                continue
            elif name == "sql":
                listed = list(value) if isinstance(value, (list, tuple, set, frozenset)) else []
                if not listed or not all(isinstance(t, str) and t for t in listed):
                    raise CapabilityError(
                        f"grant['sql'] must be True, False or a non-empty list of table and view names, got {value!r}"
                    )
                names.add(name)
                tables = frozenset(map(ascii_lower, listed))  # SQLite's names ignore ASCII case only
            else:
                raise CapabilityError(
                    f"grant[{name!r}] must be True or False (only 'sql' takes a list of tables), got {value!r}"
                )
        granted = frozenset(names)
    else:
        granted = frozenset(grant)
    unknown = sorted(n for n in granted if n not in CAPABILITIES)
    if unknown:
        raise CapabilityError(f"unknown capabilities {unknown} (known: {', '.join(CAPABILITIES)})")
    return granted, tables


@dataclass(frozen=True, eq=False)
class Module:
    """A verified, compiled module, ready to install into connections."""

    name: str
    version: str
    sha256: str
    signer: str | None  # key id of a trusted signer; None if loaded unsigned/untrusted
    manifest: Manifest
    limits: Limits  # the runtime's limits tightened by the manifest's
    # With capability sql: the tables its queries may read (None: every
    # table and view of the main schema), from the Runtime's grant.
    sql_tables: frozenset[str] | None
    _compiled: _engine.CompiledModule = field(repr=False)
    _runtime: "Runtime" = field(repr=False)

    @property
    def functions(self) -> tuple[FunctionSpec, ...]:
        return self.manifest.functions

    @property
    def capabilities(self) -> tuple[str, ...]:
        return self.manifest.capabilities


class Runtime:
    """Verifies and compiles modules once; installs them into many connections.

    One Runtime may serve many threads, each with its own connection: every
    connection gets its own wasm instance (and store).

    Limits apply per SQL function call (timeout_ms, fuel, max_result_bytes) or
    per instance (memory_pages); None means unlimited. A module's manifest may
    only tighten them. ``grant`` lists the capabilities modules may use:
    ``["log", "sql"]``, or a dict such as ``{"log": True, "sql": ["readings"]}``
    whose list narrows sql to those tables and views (docs/security.md).
    With ``trust_deterministic=False`` no guest function is ever declared
    deterministic to SQLite, whatever its manifest claims.

    Compiled code is cached on disk in ``cache_dir``: by default the user's
    cache directory ($SQLWASM_CACHE_DIR, else e.g. ~/.cache/sqlwasm), None
    for no disk cache. A directory that is not private to the user is not
    used (docs/security.md).
    """

    def __init__(
        self,
        *,
        trusted_keys: TrustedKey | Iterable[TrustedKey] = (),
        allow_unsigned: bool = False,
        grant: Grant = (),
        timeout_ms: int | None = DEFAULT_TIMEOUT_MS,
        fuel: int | None = None,
        memory_pages: int | None = DEFAULT_MEMORY_PAGES,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        trust_deterministic: bool = True,
        cache_dir: _cache.CacheDir = _cache.USER_CACHE,
    ) -> None:
        self._trusted = load_trusted_keys(trusted_keys)  # one key, or many
        self.allow_unsigned = allow_unsigned
        self.grant, self.sql_tables = parse_grant(grant)
        self.limits = Limits(timeout_ms, fuel, memory_pages, max_result_bytes)
        # False: never tell SQLite a guest function is deterministic, whatever
        # its manifest claims (a guest that lies corrupts expression indexes).
        self.trust_deterministic = trust_deterministic
        self._compiled: dict[tuple[str, _engine.EngineConfig], _engine.CompiledModule] = {}
        self._lock = threading.Lock()
        directory = _cache.resolve(cache_dir)
        self._disk_cache = _cache.DiskCache(directory) if directory is not None else None

    # ---------------------------------------------------------------- load

    def load(self, source: ModuleSource | Module) -> Module:
        """Verifies the signature, reads the manifest, compiles, and checks
        exports, imports and limits."""
        if isinstance(source, Module):
            if source._runtime is not self:
                raise Error(f"module '{source.name}' was loaded by another Runtime; load it with this one")
            return source
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self._load_bytes(bytes(source), "<bytes>")
        label = os.fspath(source)
        try:
            data = Path(label).read_bytes()
        except FileNotFoundError:
            raise ModuleFileNotFoundError(label) from None
        except OSError as exc:
            raise Error(f"cannot read module {label}: {exc.strerror}") from exc
        return self._load_bytes(data, label)

    def load_stored(self, conn: Any) -> list[Module]:
        """Loads every module stored in the connection's database (the
        sqlwasm_module table that `sqlwasm store` writes; none if there is no
        such table), each verified against this Runtime's trusted keys like
        any other module: the database chooses no trust. A module that fails
        is refused with an error that names it and the database."""
        return [module for _, module in self.load_stored_rows(conn)]

    def load_stored_rows(self, conn: Any) -> list[tuple[_stored.StoredModule, Module]]:
        """load_stored, with each module's row (its bytes, for sending on)."""
        execute = _stored.executor(conn)
        where = _stored.database_label(execute)
        loaded = []
        for stored in _stored.read(execute, where):
            label = f"{stored.name!r} stored in {where}"
            try:
                module = self._load_bytes(stored.wasm, label)
                if module.name != stored.name:
                    raise ManifestError(f"its manifest names it '{module.name}'")
            except Error as exc:
                if label in str(exc):
                    raise
                raise type(exc)(f"module {label}: {exc}") from exc
            loaded.append((stored, module))
        return loaded

    def _load_bytes(self, data: bytes, label: str) -> Module:
        signer = self._check_trust(data, label)
        try:
            manifests = find_custom(data, MANIFEST_SECTION)
        except MalformedModule as exc:
            raise ManifestError(f"{label}: {exc}") from exc
        if len(manifests) != 1:
            raise ManifestError(
                f"{label}: {'has no' if not manifests else 'has more than one'} '{MANIFEST_SECTION}' section"
                + (" (embed one with `sqlwasm pack`)" if not manifests else "")
            )
        manifest = manifest_from_json(manifests[0].payload(data), f"{label}: manifest")
        limits = self.limits.tightened_by(manifest.limits)
        digest = hashlib.sha256(data).hexdigest()
        compiled = self._compile(data, digest, manifest.name, _engine.EngineConfig(fuel=limits.fuel is not None))
        check_exports(manifest, compiled)
        check_imports(manifest, compiled, self.grant)
        self._check_memory(manifest, data, limits)
        _engine.check_tables(data, manifest.name)
        sql_tables = self.sql_tables if "sql" in manifest.capabilities else None
        return Module(manifest.name, manifest.version, digest, signer, manifest, limits, sql_tables, compiled, self)

    def _check_trust(self, data: bytes, label: str) -> str | None:
        signature = check_signature(data)  # a signature that fails to verify is always refused
        # Trust is the whole 32-byte key; its 64-bit id only names it.
        if signature is not None and signature.public_key.raw in self._trusted:
            return signature.key_id
        if signature is None:
            problem = "is not signed"
        else:
            problem = f"is signed by key {signature.key_id}, which is not in trusted_keys"
        if not self.allow_unsigned:
            raise SignatureError(f"module {label} {problem}; refusing to load it")
        log.warning("sqlwasm: loading module %s, which %s (allow_unsigned=True)", label, problem)
        return None

    def _compile(self, data: bytes, digest: str, name: str, config: _engine.EngineConfig) -> _engine.CompiledModule:
        """Compiled code for a module whose signature and manifest have been
        checked: from memory, else the disk cache, else the engine."""
        with self._lock:
            compiled = self._compiled.get((digest, config))
            if compiled is None:
                engine = _engine.default()
                key = _cache.cache_key(digest, engine.cache_tag(config)) if self._disk_cache else b""
                compiled = self._cached(engine, config, key)
                if compiled is None:
                    try:
                        compiled = engine.compile(config, data)
                    except _engine.InvalidWasm as exc:
                        if exc.proposal is not None:
                            message = f"module '{name}' uses {exc.proposal}, which sqlwasm does not enable"
                        else:
                            message = f"module '{name}' is not valid wasm: {exc.cause}"
                        raise ManifestError(message) from exc.__cause__
                    if self._disk_cache is not None:
                        self._disk_cache.put(key, engine.serialize(compiled))
                self._compiled[(digest, config)] = compiled
            return compiled

    def _cached(
        self, engine: _engine.Engine, config: _engine.EngineConfig, key: bytes
    ) -> _engine.CompiledModule | None:
        if self._disk_cache is None:
            return None
        payload = self._disk_cache.get(key)
        if payload is None:
            return None
        try:
            return engine.deserialize(config, payload)
        except _engine.InvalidWasm as exc:  # written by another engine build: compile and replace it
            where = self._disk_cache.directory
            log.info("sqlwasm: cached code in %s refused by the engine (%s); compiling", where, exc)
            return None

    @staticmethod
    def _check_memory(manifest: Manifest, data: bytes, limits: Limits) -> None:
        """One 32-bit, unshared memory that fits memory_pages (exported or not:
        a second, hidden memory would escape the host's accounting)."""
        where = f"module '{manifest.name}'"
        memories = declared_memories(data)
        if len(memories) != 1:
            raise CapabilityError(f"{where} defines {len(memories)} memories; a module has exactly one")
        memory = memories[0]
        if memory.memory64 or memory.shared:
            raise CapabilityError(f"{where}: 64-bit and shared memories are not supported")
        if limits.memory_pages is not None and memory.min_pages > limits.memory_pages:
            raise CapabilityError(
                f"{where} starts with {memory.min_pages} pages of memory, more than the "
                f"{limits.memory_pages} it may have (memory_pages)"
            )

    # ------------------------------------------------------------- install

    def install(self, conn: apsw.Connection, module: ModuleSource | Module, *, replace: bool = False) -> Module:
        """Registers the module's functions (and wasm_call) in an open connection.

        All or nothing: on any error the connection is left as it was. A
        function the application registered under the same name is a
        ManifestError unless ``replace=True``.
        """
        module = self.load(module)
        _connection.install(conn, module, replace=replace, trust_deterministic=self.trust_deterministic)
        return module

    def connect(
        self,
        path: str,
        modules: ModuleSource | Module | Iterable[ModuleSource | Module] = (),
        *,
        db_modules: bool = False,
        **apsw_options: Any,
    ) -> apsw.Connection:
        """Opens an APSW connection with the given modules installed (one
        module, or many), and with ``db_modules=True`` the modules stored in
        the database (load_stored)."""
        if isinstance(modules, (str, os.PathLike, bytes, bytearray, memoryview, Module)):
            modules = [modules]  # one module: a path is not a list of characters
        conn = apsw.Connection(path, **apsw_options)
        try:
            loaded = [self.load(module) for module in modules]
            if db_modules:
                loaded += self.load_stored(conn)
            for module in loaded:  # every module checked before any is installed
                self.install(conn, module)
        except BaseException:
            conn.close()
            raise
        return conn


def connect(
    path: str,
    modules: ModuleSource | Module | Iterable[ModuleSource | Module] = (),
    *,
    trusted_keys: TrustedKey | Iterable[TrustedKey] = (),
    allow_unsigned: bool = False,
    db_modules: bool = False,
    flags: int | None = None,
    vfs: str | None = None,
    **options: Any,
) -> apsw.Connection:
    """An apsw.Connection with the modules' functions and wasm_call registered.

    ``db_modules=True`` also installs the modules stored in the database
    (Runtime.load_stored), verified against ``trusted_keys``. ``options``
    go to Runtime (grant, timeout_ms, fuel, memory_pages, max_result_bytes,
    trust_deterministic, cache_dir); ``flags`` and ``vfs`` go to
    apsw.Connection. For many
    connections, make one Runtime and use Runtime.connect: it compiles each
    module once.
    """
    runtime = Runtime(trusted_keys=trusted_keys, allow_unsigned=allow_unsigned, **options)
    apsw_options: dict[str, Any] = {}
    if flags is not None:
        apsw_options["flags"] = flags
    if vfs is not None:
        apsw_options["vfs"] = vfs
    return runtime.connect(path, modules, db_modules=db_modules, **apsw_options)


def install(
    conn: Any,
    modules: ModuleSource | Module | Iterable[ModuleSource | Module],
    *,
    trusted_keys: TrustedKey | Iterable[TrustedKey] = (),
    allow_unsigned: bool = False,
    db_modules: bool = False,
    **options: Any,
) -> list[Module]:
    """Installs the modules into an open connection: an apsw.Connection or
    Python's own sqlite3.Connection (what sqlite-utils and Datasette use).
    ``db_modules=True`` also installs the modules stored in the connection's
    database (Runtime.load_stored), verified against ``trusted_keys``.
    ``options`` go to Runtime (grant, timeout_ms, fuel, memory_pages,
    max_result_bytes, trust_deterministic, cache_dir). Returns the loaded
    modules. All or nothing per module, as Runtime.install."""
    runtime = Runtime(trusted_keys=trusted_keys, allow_unsigned=allow_unsigned, **options)
    if isinstance(modules, (str, os.PathLike, bytes, bytearray, memoryview, Module)):
        modules = [modules]  # one module: a path is not a list of characters
    loaded = [runtime.load(module) for module in modules]  # every module checked before any is installed
    if db_modules:
        loaded += runtime.load_stored(conn)
    for module in loaded:
        runtime.install(conn, module)
    return loaded
