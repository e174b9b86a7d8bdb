"""The rows of the catalog tables sqlwasm_modules and sqlwasm_functions
(native/catalog.c serves them), from what is installed in a connection."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

import msgpack  # type: ignore[import-untyped]  # ships no type information

if TYPE_CHECKING:
    from ._manifest import FunctionSpec
    from ._runtime import Module

# (module, function spec, direct_only, deterministic) as registered.
Registered = tuple["Module", "FunctionSpec", bool, bool]


def _flags(direct_only: bool, deterministic: bool) -> str:
    return ("DIRECTONLY" if direct_only else "INNOCUOUS") + (" DETERMINISTIC" if deterministic else "")


def module_rows(modules: Iterable[Module]) -> bytes:
    """sqlwasm_modules(name, version, sha256, signer, capabilities, instance)."""
    rows = [
        [m.name, m.version, m.sha256, m.signer, json.dumps(list(m.capabilities)), m.manifest.instance]
        for m in modules
    ]
    return msgpack.packb(rows, use_bin_type=True)  # type: ignore[no-any-return]


def function_rows(registered: Iterable[Registered]) -> bytes:
    """sqlwasm_functions(module, name, kind, abi, args, returns, deterministic,
    flags): one row per SQL function, NAME_partial and NAME_merge included;
    a table function's returns lists its columns."""
    rows = []
    for module, spec, direct_only, deterministic in registered:
        args = json.dumps(list(spec.args) + ([f"{spec.varargs}..."] if spec.varargs else []))
        if spec.kind == "table":
            returns = "table(" + ", ".join(f"{name} {type_}" for name, type_ in spec.columns) + ")"
        else:
            returns = spec.returns
        flags = _flags(direct_only, deterministic)
        rows.append([module.name, spec.name, spec.kind, spec.abi, args, returns, int(deterministic), flags])
        if spec.partial_names:
            partial, merge = spec.partial_names
            rows.append([module.name, partial, "aggregate", spec.abi, args, "blob", int(deterministic), flags])
            rows.append([module.name, merge, "aggregate", spec.abi, '["blob"]', returns, int(deterministic), flags])
    return msgpack.packb(rows, use_bin_type=True)  # type: ignore[no-any-return]
