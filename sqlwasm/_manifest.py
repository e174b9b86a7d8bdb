"""The module manifest: what a module declares about itself.

It lives in the custom section ``sqlwasm.manifest`` as UTF-8 JSON; authors
write it as TOML and ``sqlwasm pack`` embeds it. docs/manifest.md is the
contract; this module enforces it.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ._abi import ABIS, BATCH_MAX_ARGS, EXPORT_SLOTS, KINDS, VALUE_TYPES
from ._capabilities import CAPABILITIES as _CAPABILITY_REGISTRY
from ._engine import CompiledModule, FuncType, MemoryType, interface
from ._errors import ManifestError
from ._limits import limit_problem
from ._signing import SIGNATURE_SECTION
from ._wasmfile import MalformedModule, custom_section, without_custom_sections

MANIFEST_SECTION = "sqlwasm.manifest"
FORMAT_VERSION = 1

# VALUE_TYPES, ABIS and KINDS (names -> native numbers) come from _abi.
RAW_WASM_TYPES = {"integer": "i64", "real": "f64"}

CAPABILITIES = tuple(_CAPABILITY_REGISTRY)  # the known names, from the one registry
LIMITS = ("timeout_ms", "fuel", "memory_pages", "max_result_bytes")
# The exports an aggregate or window function names, in the native order.
EXPORT_ROLES = tuple(EXPORT_SLOTS)
REQUIRED_ROLES = {
    "aggregate": ("init", "step", "final"),
    "window": ("init", "step", "final", "value", "inverse"),
    "table": ("open", "next", "close"),
}
NULL_POLICIES = ("strict", "call")
ALLOC_EXPORT = "sqlwasm_alloc"
# A C guest's shadow stack pointer, exported by `sqlwasm build` (wasm-ld
# --export=__stack_pointer): the host puts it back after a trap.
STACK_POINTER_EXPORT = "__stack_pointer"
RESERVED_NAMES = frozenset({"wasm_call", "sqlwasm_modules", "sqlwasm_functions"})

_MODULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_VERSION = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?")
_MODULE_KEYS = {"sqlwasm", "name", "version", "description", "capabilities", "limits", "instance", "functions"}
INSTANCE_POLICIES = ("connection", "statement")
_FUNCTION_KEYS = {
    "name", "export", "exports", "kind", "abi", "args", "varargs", "returns", "columns", "deterministic", "null"
}


@dataclass(frozen=True)
class FunctionSpec:
    """One SQL function a module provides."""

    name: str
    export: str  # a scalar's export; for aggregates and windows, step; for tables, open
    abi: str
    args: tuple[str, ...]
    returns: str  # "" for a table function, which has columns instead
    kind: str = "scalar"
    varargs: str | None = None
    deterministic: bool = False
    null: str = "strict"
    role_exports: tuple[tuple[str, str], ...] = ()  # aggregates, windows, tables: (role, export)
    columns: tuple[tuple[str, str], ...] = ()  # a table function's output columns: (name, type)

    @property
    def partial_names(self) -> tuple[str, str] | None:
        """An aggregate with serialize and merge: the SQL names of its
        partial (same arguments) and merge (one BLOB) functions."""
        if "merge" not in dict(self.role_exports):
            return None
        return f"{self.name}_partial", f"{self.name}_merge"

    @property
    def sql_signatures(self) -> tuple[tuple[str, int], ...]:
        """(SQL name, number of arguments, -1: any) of every SQL function this
        registers; a table function registers a module instead (none)."""
        if self.kind == "table":
            return ()
        n_args = -1 if self.varargs else len(self.args)
        partial = self.partial_names
        return ((self.name, n_args),) + (((partial[0], n_args), (partial[1], 1)) if partial else ())

    @property
    def hidden_columns(self) -> tuple[str, ...]:
        """A table function's arguments, as the hidden columns SQLite binds
        them to: arg1, arg2, ..."""
        return tuple(f"arg{i}" for i in range(1, len(self.args) + 1))

    @property
    def exports(self) -> dict[str, str]:
        """Role -> export name: {"main": export} for a scalar."""
        return dict(self.role_exports) if self.kind != "scalar" else {"main": self.export}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.kind == "scalar":
            out["export"] = self.export
        else:
            out["exports"] = dict(self.role_exports)
        out.update(kind=self.kind, abi=self.abi, args=list(self.args))
        if self.varargs is not None:
            out["varargs"] = self.varargs
        if self.kind == "table":
            out["columns"] = [{"name": n, "type": t} for n, t in self.columns]
        else:
            out["returns"] = self.returns
        out.update(deterministic=self.deterministic, null=self.null)
        return out


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    functions: tuple[FunctionSpec, ...]
    description: str = ""
    capabilities: tuple[str, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    instance: str = "connection"  # or "statement": a fresh instance per SQL statement

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sqlwasm": FORMAT_VERSION, "name": self.name, "version": self.version}
        if self.description:
            out["description"] = self.description
        out.update(capabilities=list(self.capabilities), limits=dict(self.limits))
        if self.instance != "connection":
            out["instance"] = self.instance
        out["functions"] = [f.to_json() for f in self.functions]
        return out

    def to_bytes(self) -> bytes:
        """The canonical section payload: compact JSON, fixed key order."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fail(where: str, problem: str) -> ManifestError:
    return ManifestError(f"{where}: {problem}")


def _require(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise _fail(where, f"missing key '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(where, f"'{key}' must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    return _require(obj, key, kind, where) if key in obj else default


def _check_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _fail(where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}")


def _parse_function(obj: Any, where: str) -> FunctionSpec:
    if not isinstance(obj, dict):
        raise _fail(where, "each function must be a table/object")
    name = _require(obj, "name", str, where)
    if not _SQL_NAME.fullmatch(name):
        raise _fail(where, f"function name {name!r} is not a valid SQL identifier")
    where = f"{where.rsplit(':', 1)[0]}: function '{name}'"
    _check_keys(obj, _FUNCTION_KEYS, where)
    if name.lower() in RESERVED_NAMES:
        raise _fail(where, "name is reserved by sqlwasm")
    kind = _optional(obj, "kind", str, "scalar", where)
    if kind not in KINDS:
        raise _fail(where, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    role_exports: tuple[tuple[str, str], ...] = ()
    if kind == "scalar":
        if "exports" in obj:
            raise _fail(where, "'exports' is for aggregate and window functions; a scalar names its 'export'")
        export = _optional(obj, "export", str, name, where)
    else:
        if "export" in obj:
            raise _fail(where, f"a {kind} function names its exports in 'exports', not 'export'")
        exports = _require(obj, "exports", dict, where)
        for role, value in exports.items():
            if role not in EXPORT_ROLES:
                raise _fail(where, f"unknown export role {role!r} (roles: {', '.join(EXPORT_ROLES)})")
            if not isinstance(value, str) or not value:
                raise _fail(where, f"export of role '{role}' must be a non-empty string")
        missing = [r for r in REQUIRED_ROLES[kind] if r not in exports]
        if missing:
            raise _fail(where, f"a {kind} function needs exports {', '.join(repr(r) for r in missing)}")
        table_roles = set(REQUIRED_ROLES["table"])
        if kind == "table" and set(exports) - table_roles:
            raise _fail(where, "a table function has only the export roles 'open', 'next' and 'close'")
        if kind != "table" and set(exports) & table_roles:
            raise _fail(where, "'open', 'next' and 'close' are for table functions (kind = 'table')")
        if kind == "aggregate" and {"value", "inverse"} & set(exports):
            raise _fail(where, "'value' and 'inverse' are for window functions (kind = 'window')")
        if len({"serialize", "merge"} & set(exports)) == 1:
            raise _fail(where, "'serialize' and 'merge' come together (they make NAME_partial and NAME_merge)")
        role_exports = tuple((r, exports[r]) for r in EXPORT_ROLES if r in exports)
        export = exports["open" if kind == "table" else "step"]
    abi = _require(obj, "abi", str, where)
    if abi not in ABIS:
        raise _fail(where, f"abi must be 'raw' or 'msgpack', got {abi!r}")
    args = _require(obj, "args", list, where)
    for i, arg in enumerate(args, 1):
        if not isinstance(arg, str) or arg not in VALUE_TYPES:
            raise _fail(where, f"argument {i} has unknown type {arg!r} (types: {', '.join(VALUE_TYPES)})")
    varargs = _optional(obj, "varargs", str, None, where)
    if varargs is not None and varargs not in VALUE_TYPES:
        raise _fail(where, f"varargs has unknown type {varargs!r}")
    columns: tuple[tuple[str, str], ...] = ()
    if kind == "table":
        if "returns" in obj:
            raise _fail(where, "a table function declares its output 'columns', not 'returns'")
        columns = _parse_columns(obj, len(args), where)
        returns = ""
        if abi != "msgpack":
            raise _fail(where, "a table function needs abi = 'msgpack' (its rows are msgpack arrays)")
        if varargs is not None:
            raise _fail(where, "a table function takes a fixed number of arguments (no varargs)")
        if obj.get("deterministic"):
            raise _fail(where, "'deterministic' is for scalar, aggregate and window functions, not tables")
    else:
        if "columns" in obj:
            raise _fail(where, "'columns' is for table functions (kind = 'table')")
        returns = _require(obj, "returns", str, where)
        if returns not in VALUE_TYPES:
            raise _fail(where, f"returns has unknown type {returns!r}")
    deterministic = _optional(obj, "deterministic", bool, False, where)
    null = _optional(obj, "null", str, "strict", where)
    if null not in NULL_POLICIES:
        raise _fail(where, f"null must be 'strict' or 'call', got {null!r}")
    if "merge" in dict(role_exports) and len(name) > 56:
        raise _fail(where, "a name of at most 56 characters leaves room for the suffixes _partial and _merge")
    if "step_batch" in dict(role_exports) and (kind != "aggregate" or abi != "raw"):
        raise _fail(where, "'step_batch' is for raw aggregates (kind = 'aggregate', abi = 'raw')")
    if "step_batch" in dict(role_exports) and len(args) > BATCH_MAX_ARGS:
        raise _fail(
            where,
            f"'step_batch' is for aggregates of at most {BATCH_MAX_ARGS} arguments (their rows are buffered "
            f"natively), this one takes {len(args)}: leave 'step_batch' out",
        )
    if abi == "raw":
        for t in [*args, returns]:
            if t not in RAW_WASM_TYPES:
                raise _fail(where, f"the raw ABI carries only integer and real, not {t!r} (use abi = 'msgpack')")
        if varargs is not None:
            raise _fail(where, "varargs needs abi = 'msgpack'")
        if null != "strict":
            raise _fail(where, "the raw ABI cannot pass NULL: null must be 'strict'")
    if len(args) > 127:
        raise _fail(where, "more than 127 arguments")
    return FunctionSpec(
        name, export, abi, tuple(args), returns, kind, varargs, deterministic, null, role_exports, columns
    )


def _parse_columns(obj: Mapping[str, Any], n_args: int, where: str) -> tuple[tuple[str, str], ...]:
    columns = _require(obj, "columns", list, where)
    if not columns:
        raise _fail(where, "a table function needs at least one output column")
    if len(columns) > 100:
        raise _fail(where, "more than 100 output columns")
    hidden = {f"arg{i}" for i in range(1, n_args + 1)}
    seen: set[str] = set()
    parsed = []
    for i, column in enumerate(columns, 1):
        cwhere = f"{where}: column {i}"
        if not isinstance(column, dict):
            raise _fail(cwhere, "must be a table/object with 'name' and 'type'")
        _check_keys(column, {"name", "type"}, cwhere)
        column_name = _require(column, "name", str, cwhere)
        column_type = _require(column, "type", str, cwhere)
        if not _SQL_NAME.fullmatch(column_name):
            raise _fail(cwhere, f"name {column_name!r} is not a valid SQL identifier")
        if column_type not in VALUE_TYPES:
            raise _fail(cwhere, f"unknown type {column_type!r} (types: {', '.join(VALUE_TYPES)})")
        if column_name.lower() in hidden:
            raise _fail(cwhere, f"name {column_name!r} is taken by an argument's hidden column (arg1..argN)")
        if column_name.lower() in seen:
            raise _fail(cwhere, f"name {column_name!r} appears twice")
        seen.add(column_name.lower())
        parsed.append((column_name, column_type))
    return tuple(parsed)


def parse_manifest(obj: Any, source: str = "manifest") -> Manifest:
    """Validates a decoded manifest; ManifestError names the problem."""
    if not isinstance(obj, dict):
        raise _fail(source, "the manifest must be a JSON object / TOML table")
    where = source
    if isinstance(obj.get("name"), str):
        where = f"{source} of module '{obj['name']}'"
    _check_keys(obj, _MODULE_KEYS, where)
    version_of_format = _require(obj, "sqlwasm", int, where)
    if version_of_format != FORMAT_VERSION:
        raise _fail(where, f"manifest format {version_of_format} is not supported (this host reads {FORMAT_VERSION})")
    name = _require(obj, "name", str, where)
    if not _MODULE_NAME.fullmatch(name):
        raise _fail(where, f"module name {name!r} must be lower case letters, digits and '_' (at most 32)")
    version = _require(obj, "version", str, where)
    if not _VERSION.fullmatch(version):
        raise _fail(where, f"version {version!r} is not MAJOR.MINOR.PATCH")
    description = _optional(obj, "description", str, "", where)
    capabilities = _optional(obj, "capabilities", list, [], where)
    for cap in capabilities:
        if cap not in CAPABILITIES:
            raise _fail(where, f"unknown capability {cap!r} (known: {', '.join(CAPABILITIES)})")
    if len(set(capabilities)) != len(capabilities):
        raise _fail(where, "a capability is listed twice")
    limits = _optional(obj, "limits", dict, {}, where)
    _check_keys(limits, set(LIMITS), f"{where}: limits")
    for key, value in limits.items():
        problem = limit_problem(value, key)
        if problem is not None:
            raise _fail(where, f"limit '{key}' {problem}")
    instance = _optional(obj, "instance", str, "connection", where)
    if instance not in INSTANCE_POLICIES:
        raise _fail(where, f"instance must be 'connection' or 'statement', got {instance!r}")
    raw_functions = _require(obj, "functions", list, where)
    if not raw_functions:
        raise _fail(where, "declares no functions")
    functions = tuple(_parse_function(f, f"{where}: functions[{i}]") for i, f in enumerate(raw_functions))
    seen: set[str] = set()
    for f in functions:
        for sql_name in (f.name, *(f.partial_names or ())):
            if sql_name.lower() in seen:
                raise _fail(where, f"function '{sql_name}' is declared twice")
            seen.add(sql_name.lower())
    return Manifest(name, version, functions, description, tuple(capabilities), dict(limits), instance)


# Far more digits than any manifest value may have (the largest limit,
# 2**64 - 1, has 20), so that a field's own check names most problems; far
# fewer than the 4300 past which Python's int() fails with a ValueError.
_MAX_INTEGER_DIGITS = 100
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def manifest_from_json(payload: bytes, source: str = "manifest") -> Manifest:
    """Reads strict JSON, so that every reader sees this same manifest: no
    repeated keys (readers disagree on which wins), no NaN or Infinity, no
    lone surrogates (not Unicode text)."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise ManifestError(f"{source}: key {key!r} appears twice in one object")
            obj[key] = value
        return obj

    def bounded_int(text: str) -> int:
        digits = len(text.lstrip("-"))
        if digits > _MAX_INTEGER_DIGITS:
            raise ManifestError(f"{source}: an integer of {digits} digits; no manifest value needs more than 20")
        return int(text)

    def no_constant(name: str) -> Any:
        raise ManifestError(f"{source}: {name} is not JSON")

    try:
        obj = json.loads(
            payload.decode("utf-8"), object_pairs_hook=unique_keys, parse_int=bounded_int, parse_constant=no_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{source}: not valid UTF-8 JSON ({type(exc).__name__}: {exc})") from exc
    if _holds_lone_surrogate(obj):
        raise ManifestError(f"{source}: a string holds a lone surrogate (a \\ud800-\\udfff escape): not Unicode text")
    return parse_manifest(obj, source)


def _holds_lone_surrogate(obj: Any) -> bool:
    pending = [obj]  # a loop, not recursion: the JSON may nest as deep as its parser allows
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False


def manifest_from_toml(path: str | Path) -> Manifest:
    try:
        with open(path, "rb") as f:
            obj = tomllib.load(f)
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: invalid TOML (not UTF-8: {exc.reason} at byte {exc.start})") from exc
    except ValueError as exc:  # TOMLDecodeError, and integers past Python's 4300-digit limit
        raise ManifestError(f"{path}: invalid TOML ({exc})") from exc
    return parse_manifest(obj, str(path))


def _wanted_type(f: FunctionSpec, role: str) -> tuple[list[str], list[str]]:
    """The wasm signature an export of this role needs (docs/abi.md)."""
    raw = f.abi == "raw"
    args = [RAW_WASM_TYPES[a] for a in f.args] if raw else ["i32", "i32"]
    result = [RAW_WASM_TYPES[f.returns]] if raw else ["i64"]
    if role == "main":
        return args, result
    if role == "init":
        return [], ["i32"]
    if role in ("step", "inverse"):
        return ["i32", *args], [] if raw else ["i64"]
    if role in ("final", "value"):
        return ["i32"], result
    if role == "step_batch":
        return ["i32", "i32", "i32"], []
    if role == "open":
        return ["i32", "i32"], ["i32"]
    if role == "serialize":
        return ["i32"], ["i64"]
    if role == "merge":
        return ["i32", "i32", "i32"], ["i32"]
    if role == "next":
        return ["i32"], ["i64"]
    return ["i32"], []  # drop, close


def check_exports(manifest: Manifest, module: CompiledModule | object) -> None:
    """Every declared export exists with the signature its ABI needs.
    module: a CompiledModule, or a module the engine compiled directly."""
    where = f"module '{manifest.name}'"
    exports = {e.name: e.type for e in interface(module).exports}
    if not isinstance(exports.get("memory"), MemoryType):
        raise ManifestError(f"{where}: does not export its linear memory as 'memory'")
    for f in manifest.functions:
        fwhere = f"{where}: function '{f.name}'"
        for role, export in f.exports.items():
            ty = exports.get(export)
            if ty is None:
                raise ManifestError(f"{fwhere}: export '{export}' is missing")
            if not isinstance(ty, FuncType):
                raise ManifestError(f"{fwhere}: export '{export}' is not a function")
            want = _wanted_type(f, role)
            got = (list(ty.params), list(ty.results))
            if got != want:
                what = f"{role} export" if role != "main" else "export"
                raise ManifestError(
                    f"{fwhere}: {what} '{export}' has type ({', '.join(got[0])}) -> ({', '.join(got[1])}), "
                    f"but the {f.abi} ABI with the declared types needs "
                    f"({', '.join(want[0])}) -> ({', '.join(want[1])})"
                )
    if any(f.abi == "msgpack" or {"step_batch", "merge"} & set(f.exports) for f in manifest.functions):
        alloc = exports.get(ALLOC_EXPORT)
        if not isinstance(alloc, FuncType) or (alloc.params, alloc.results) != (("i32",), ("i32",)):
            raise ManifestError(
                f"{where}: msgpack functions, step_batch and merge need an export '{ALLOC_EXPORT}' of type "
                "(i32) -> (i32)"
            )


def embed_manifest(wasm: bytes, manifest: Manifest) -> bytes:
    """The module with its manifest section replaced by this one, unsigned
    (a signature would no longer match)."""
    try:
        stripped = without_custom_sections(wasm, {MANIFEST_SECTION, SIGNATURE_SECTION})
    except MalformedModule as exc:
        raise ManifestError(f"cannot embed the manifest: {exc}") from exc
    return stripped + custom_section(MANIFEST_SECTION, manifest.to_bytes())
