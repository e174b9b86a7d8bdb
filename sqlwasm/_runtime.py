"""Runtime: verifies, compiles and installs modules into APSW connections."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import apsw
import wasmtime

from . import _native
from ._errors import CapabilityError, Error, ManifestError, SignatureError, TrapError
from ._manifest import (
    ABIS,
    ALLOC_EXPORT,
    MANIFEST_SECTION,
    VALUE_TYPES,
    FunctionSpec,
    Manifest,
    check_exports,
    manifest_from_json,
)
from ._signing import TrustedKey, check_signature, trusted_key_ids
from ._wasmfile import MalformedModule, find_custom

log = logging.getLogger("sqlwasm")

DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024
SQLITE_DETERMINISTIC = apsw.SQLITE_DETERMINISTIC
SQLITE_DIRECTONLY = apsw.SQLITE_DIRECTONLY
SQLITE_INNOCUOUS = apsw.SQLITE_INNOCUOUS

ModuleSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


@dataclass(frozen=True, eq=False)
class Module:
    """A verified, compiled module, ready to install into connections."""

    name: str
    version: str
    sha256: str
    signer: str | None  # key id of a trusted signer; None if loaded unsigned/untrusted
    manifest: Manifest
    _compiled: wasmtime.Module = field(repr=False)
    _runtime: "Runtime" = field(repr=False)

    @property
    def functions(self) -> tuple[FunctionSpec, ...]:
        return self.manifest.functions

    @property
    def capabilities(self) -> tuple[str, ...]:
        return self.manifest.capabilities


def _sqlite_flags(manifest: Manifest, spec: FunctionSpec) -> int:
    """A sandboxed pure function is safe anywhere; one with capabilities is not."""
    if manifest.capabilities:
        flags = SQLITE_DIRECTONLY
        if spec.deterministic and not {"clock", "random"} & set(manifest.capabilities):
            flags |= SQLITE_DETERMINISTIC
        return flags
    return SQLITE_INNOCUOUS | (SQLITE_DETERMINISTIC if spec.deterministic else 0)


class _Attachment:
    """What sqlwasm keeps for one connection: the native state and the wasm
    stores it points into. Lives exactly as long as the apsw.Connection."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.native = _native.NativeConnection(conn)
        self.modules: dict[str, Module] = {}
        self.function_owner: dict[str, str] = {}
        self.stores: list[tuple[wasmtime.Store, wasmtime.Instance]] = []

    def release(self) -> None:
        self.native.release()
        self.stores.clear()


_attachments: "weakref.WeakKeyDictionary[apsw.Connection, _Attachment]" = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def _attachment(conn: apsw.Connection) -> _Attachment:
    with _attach_lock:
        found = _attachments.get(conn)
        if found is None:
            found = _Attachment(conn)
            _attachments[conn] = found
            weakref.finalize(conn, found.release)
        return found


class Runtime:
    """Verifies and compiles modules once; installs them into many connections.

    One Runtime may serve many threads, each with its own connection: every
    connection gets its own wasm instance (and store).
    """

    def __init__(
        self,
        *,
        trusted_keys: Iterable[TrustedKey] = (),
        allow_unsigned: bool = False,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        if isinstance(trusted_keys, (str, bytes, os.PathLike)):
            trusted_keys = [trusted_keys]
        self._trusted = trusted_key_ids(trusted_keys)
        self.allow_unsigned = allow_unsigned
        if not 0 < max_result_bytes <= 0x7FFFFFFF:
            raise ValueError("max_result_bytes must be between 1 and 2**31 - 1")
        self.max_result_bytes = max_result_bytes
        config = wasmtime.Config()
        config.cranelift_opt_level = "speed"
        self._engine = wasmtime.Engine(config)
        self._compiled: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- load

    def load(self, source: ModuleSource | Module) -> Module:
        """Verifies the signature, reads the manifest and compiles the module."""
        if isinstance(source, Module):
            if source._runtime is not self:
                raise Error(f"module '{source.name}' was loaded by another Runtime; load it with this one")
            return source
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, label = bytes(source), "<bytes>"
        else:
            label = os.fspath(source)
            try:
                data = Path(label).read_bytes()
            except OSError as exc:
                raise Error(f"cannot read module {label}: {exc.strerror}") from exc
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
        digest = hashlib.sha256(data).hexdigest()
        compiled = self._compile(data, digest, manifest.name)
        check_exports(manifest, compiled)
        self._check_imports(manifest, compiled)
        return Module(manifest.name, manifest.version, digest, signer, manifest, compiled, self)

    def _check_trust(self, data: bytes, label: str) -> str | None:
        signature = check_signature(data)  # a signature that fails to verify is always refused
        if signature is not None and signature.key_id in self._trusted:
            return signature.key_id
        if signature is None:
            problem = "is not signed"
        else:
            problem = f"is signed by key {signature.key_id}, which is not in trusted_keys"
        if not self.allow_unsigned:
            raise SignatureError(f"module {label} {problem}; refusing to load it")
        log.warning("sqlwasm: loading module %s, which %s (allow_unsigned=True)", label, problem)
        return None

    def _compile(self, data: bytes, digest: str, name: str) -> wasmtime.Module:
        with self._lock:
            compiled = self._compiled.get(digest)
            if compiled is None:
                try:
                    compiled = wasmtime.Module(self._engine, data)
                except wasmtime.WasmtimeError as exc:
                    raise ManifestError(f"module '{name}' is not valid wasm: {str(exc).splitlines()[0]}") from exc
                self._compiled[digest] = compiled
            return compiled

    def _check_imports(self, manifest: Manifest, compiled: wasmtime.Module) -> None:
        for imp in compiled.imports:
            raise CapabilityError(
                f"module '{manifest.name}' imports {imp.module}.{imp.name}, which no capability provides"
            )

    # ------------------------------------------------------------- install

    def install(self, conn: apsw.Connection, module: ModuleSource | Module) -> Module:
        """Registers the module's functions (and wasm_call) in an open connection."""
        module = self.load(module)
        attachment = _attachment(conn)
        with _attach_lock:
            self._install(conn, attachment, module)
        return module

    def _install(self, conn: apsw.Connection, attachment: _Attachment, module: Module) -> None:
        conn.sqlite3pointer()  # raises if the connection is closed
        name = module.name
        if name in attachment.modules:
            raise Error(f"module '{name}' is already installed in this connection")
        for spec in module.functions:
            owner = attachment.function_owner.get(spec.name.lower())
            if owner is not None:
                raise ManifestError(f"module '{name}': function '{spec.name}' is already provided by module '{owner}'")

        store = wasmtime.Store(self._engine)
        try:
            instance = wasmtime.Instance(store, module._compiled, [])
            exports = instance.exports(store)
            initialize = exports.get("_initialize")
            if isinstance(initialize, wasmtime.Func):
                initialize(store)  # the WASI reactor convention: run constructors once
        except wasmtime.Trap as exc:
            raise TrapError(f"module '{name}': trap while starting: {str(exc).splitlines()[0]}") from exc
        except wasmtime.WasmtimeError as exc:
            raise Error(f"module '{name}': cannot instantiate: {str(exc).splitlines()[0]}") from exc

        memory = exports["memory"]
        alloc = exports.get(ALLOC_EXPORT)
        assert isinstance(memory, wasmtime.Memory)
        index = attachment.native.add_instance(
            name,
            store,
            memory,
            alloc if isinstance(alloc, wasmtime.Func) else None,
            max_result_bytes=self.max_result_bytes,
        )
        attachment.stores.append((store, instance))
        attachment.modules[name] = module
        for spec in module.functions:
            func = exports[spec.export]
            assert isinstance(func, wasmtime.Func)
            attachment.native.add_function(
                index,
                sql_name=spec.name,
                export_name=spec.export,
                func=func,
                abi=ABIS[spec.abi],
                arg_types=[VALUE_TYPES[t] for t in spec.args],
                vararg_type=VALUE_TYPES[spec.varargs] if spec.varargs else 0,
                returns=VALUE_TYPES[spec.returns],
                null_call=spec.null == "call",
                sqlite_flags=_sqlite_flags(module.manifest, spec),
            )
            attachment.function_owner[spec.name.lower()] = name

    def connect(self, path: str, modules: Iterable[ModuleSource | Module] = (), **apsw_options: Any) -> apsw.Connection:
        """Opens an APSW connection with the given modules installed."""
        conn = apsw.Connection(path, **apsw_options)
        try:
            for module in modules:
                self.install(conn, module)
        except BaseException:
            conn.close()
            raise
        return conn


def connect(
    path: str,
    modules: Iterable[ModuleSource | Module] = (),
    *,
    trusted_keys: Iterable[TrustedKey] = (),
    allow_unsigned: bool = False,
    flags: int | None = None,
    vfs: str | None = None,
    **options: Any,
) -> apsw.Connection:
    """An apsw.Connection with the modules' functions and wasm_call registered.

    ``options`` go to Runtime (for example max_result_bytes); ``flags`` and
    ``vfs`` go to apsw.Connection. For many connections, make one Runtime and
    use Runtime.connect: it compiles each module once.
    """
    runtime = Runtime(trusted_keys=trusted_keys, allow_unsigned=allow_unsigned, **options)
    apsw_options: dict[str, Any] = {}
    if flags is not None:
        apsw_options["flags"] = flags
    if vfs is not None:
        apsw_options["vfs"] = vfs
    return runtime.connect(path, modules, **apsw_options)
