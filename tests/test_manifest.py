"""sqlwasm/_manifest.py: every rule of the manifest, and its section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from conftest import MEMORY, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import ManifestError
from sqlwasm._abi import BATCH_MAX_ARGS
from sqlwasm._manifest import (
    CAPABILITIES,
    LIMITS,
    MANIFEST_SECTION,
    Manifest,
    check_exports,
    embed_manifest,
    manifest_from_json,
    manifest_from_toml,
    parse_manifest,
)
from sqlwasm._signing import SIGNATURE_SECTION, sign
from sqlwasm._wasmfile import custom_section, find_custom, sections


def good() -> dict[str, Any]:
    """A valid manifest using every optional key."""
    return manifest(
        fn("m_add", export="add", args=["integer", "integer"], deterministic=True, kind="scalar", null="strict"),
        fn("m_fmt", abi="msgpack", args=["text"], varargs="any", returns="text", null="call"),
        name="mod_1",
        version="1.2.3-rc.1",
        description="a test module",
        capabilities=["log"],
        limits={"timeout_ms": 100, "fuel": 10**9, "memory_pages": 16, "max_result_bytes": 1024},
    )


def refused(obj: Any, *fragments: str) -> str:
    """parse_manifest must raise ManifestError whose message has every fragment."""
    with pytest.raises(ManifestError) as info:
        parse_manifest(obj)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def with_function(**changes: Any) -> dict[str, Any]:
    """A one-function manifest whose function entry has `changes` applied
    (a value of None deletes the key)."""
    entry = fn("m_f")
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return manifest(entry)


# ------------------------------------------------------- the valid case


def test_good_manifest_parses_every_field() -> None:
    m = parse_manifest(good())
    assert (m.name, m.version, m.description) == ("mod_1", "1.2.3-rc.1", "a test module")
    assert m.capabilities == ("log",)
    assert dict(m.limits) == {"timeout_ms": 100, "fuel": 10**9, "memory_pages": 16, "max_result_bytes": 1024}
    add, fmt = m.functions
    assert (add.name, add.export, add.abi, add.args, add.returns) == ("m_add", "add", "raw", ("integer", "integer"), "integer")
    assert add.deterministic and add.null == "strict" and add.varargs is None and add.kind == "scalar"
    assert (fmt.export, fmt.varargs, fmt.null, fmt.deterministic) == ("m_fmt", "any", "call", False)


def test_defaults() -> None:
    m = parse_manifest(manifest(fn("m_f")))
    assert (m.description, m.capabilities, dict(m.limits)) == ("", (), {})
    (f,) = m.functions
    assert (f.export, f.kind, f.varargs, f.deterministic, f.null) == ("m_f", "scalar", None, False, "strict")


def test_json_round_trip() -> None:
    m = parse_manifest(good())
    assert manifest_from_json(m.to_bytes()) == m
    assert parse_manifest(json.loads(m.to_bytes())) == m


@pytest.mark.parametrize("version", ["0.0.0", "1.2.3", "10.20.30-alpha", "1.0.0+build.5", "1.0.0-rc.1+x"])
def test_versions_accepted(version: str) -> None:
    assert parse_manifest(manifest(fn("m_f"), version=version)).version == version


@pytest.mark.parametrize("name", ["a", "geo", "a1_b2", "x" * 32])
def test_module_names_accepted(name: str) -> None:
    assert parse_manifest(manifest(fn("m_f"), name=name)).name == name


@pytest.mark.parametrize("name", ["_f", "F", "f1", "CamelCase", "x" * 64])
def test_function_names_accepted(name: str) -> None:
    assert parse_manifest(manifest(fn(name))).functions[0].name == name


def test_127_arguments_accepted_128_refused() -> None:
    ok = parse_manifest(manifest(fn("m_f", abi="msgpack", args=["any"] * 127)))
    assert len(ok.functions[0].args) == 127
    refused(manifest(fn("m_f", abi="msgpack", args=["any"] * 128)), "function 'm_f'", "more than 127 arguments")


# ------------------------------------------------------ module level


def test_not_an_object() -> None:
    for obj in ([], "x", 1, None):
        refused(obj, "must be a JSON object")


def test_unknown_module_key() -> None:
    refused({**good(), "colour": "blue"}, "module 'mod_1'", "unknown key 'colour'")


def test_unknown_module_keys_plural() -> None:
    refused({**good(), "b": 1, "a": 2}, "unknown keys 'a', 'b'")


@pytest.mark.parametrize("key", ["sqlwasm", "name", "version", "functions"])
def test_missing_module_key(key: str) -> None:
    obj = good()
    del obj[key]
    refused(obj, f"missing key '{key}'")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("sqlwasm", "1", "'sqlwasm' must be int, got str"),
        ("sqlwasm", True, "'sqlwasm' must be int, got bool"),
        ("sqlwasm", 1.0, "'sqlwasm' must be int, got float"),
        ("name", 7, "'name' must be str, got int"),
        ("version", 1, "'version' must be str, got int"),
        ("description", ["x"], "'description' must be str, got list"),
        ("capabilities", "log", "'capabilities' must be list, got str"),
        ("limits", [], "'limits' must be dict, got list"),
        ("functions", {}, "'functions' must be list, got dict"),
    ],
)
def test_module_key_types(key: str, value: Any, expected: str) -> None:
    refused({**good(), key: value}, expected)


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unsupported_format_version(version: int) -> None:
    refused({**good(), "sqlwasm": version}, f"manifest format {version} is not supported")


@pytest.mark.parametrize("name", ["", "Geo", "1geo", "_geo", "geo-x", "geo x", "x" * 33, "géo"])
def test_bad_module_name(name: str) -> None:
    refused(manifest(fn("m_f"), name=name), "module name", repr(name))


@pytest.mark.parametrize("version", ["", "1", "1.0", "v1.0.0", "1.0.0.0", "1.0.x", "1.0.0-"])
def test_bad_version(version: str) -> None:
    refused(manifest(fn("m_f"), version=version), f"version {version!r} is not MAJOR.MINOR.PATCH")


def test_no_functions() -> None:
    refused(manifest(), "module 't'", "declares no functions")


@pytest.mark.parametrize("cap", ["network", "LOG", "", 1])
def test_unknown_capability(cap: Any) -> None:
    refused(manifest(fn("m_f"), capabilities=["log", cap]), "unknown capability", repr(cap))


def test_every_known_capability_accepted() -> None:
    assert parse_manifest(manifest(fn("m_f"), capabilities=list(CAPABILITIES))).capabilities == CAPABILITIES


def test_duplicate_capability() -> None:
    refused(manifest(fn("m_f"), capabilities=["clock", "clock"]), "listed twice")


def test_unknown_limit() -> None:
    refused(manifest(fn("m_f"), limits={"fuel": 1, "cpu": 5}), "limits", "unknown key 'cpu'")


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10", None])
def test_limit_must_be_positive_integer(limit: str, value: Any) -> None:
    refused(manifest(fn("m_f"), limits={limit: value}), f"limit '{limit}' must be a positive integer")


def test_error_names_source() -> None:
    with pytest.raises(ManifestError, match=r"^geo\.toml of module 'geo': unknown key 'x'"):
        parse_manifest({**manifest(fn("m_f"), name="geo"), "x": 1}, "geo.toml")


# ---------------------------------------------------- function level


def test_function_not_an_object() -> None:
    for entry in ("m_f", ["m_f"], None):
        refused({**manifest(fn("m_a")), "functions": [fn("m_a"), entry]}, "functions[1]", "each function must be a table/object")


def test_error_names_the_function_index_before_its_name() -> None:
    refused(manifest(fn("m_a"), {"abi": "raw"}), "functions[1]", "missing key 'name'")


def test_unknown_function_key() -> None:
    refused(with_function(colour="red"), "function 'm_f'", "unknown key 'colour'")


def test_unknown_function_keys_plural() -> None:
    refused(with_function(zz=1, aa=2), "function 'm_f'", "unknown keys 'aa', 'zz'")


@pytest.mark.parametrize("key", ["abi", "args", "returns"])
def test_missing_function_key(key: str) -> None:
    refused(with_function(**{key: None}), "function 'm_f'", f"missing key '{key}'")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("export", 1, "'export' must be str, got int"),
        ("kind", 5, "'kind' must be str, got int"),
        ("abi", ["raw"], "'abi' must be str, got list"),
        ("args", "integer", "'args' must be list, got str"),
        ("varargs", ["any"], "'varargs' must be str, got list"),
        ("returns", 1, "'returns' must be str, got int"),
        ("deterministic", 1, "'deterministic' must be bool, got int"),
        ("deterministic", "yes", "'deterministic' must be bool, got str"),
        ("null", False, "'null' must be str, got bool"),
    ],
)
def test_function_key_types(key: str, value: Any, expected: str) -> None:
    refused(with_function(**{key: value}), "function 'm_f'", expected)


def test_function_name_type() -> None:
    refused(manifest({**fn("x"), "name": 3}), "'name' must be str, got int")


@pytest.mark.parametrize("name", ["", "1f", "f-g", "f g", "f.g", "x" * 65, "é"])
def test_bad_function_name(name: str) -> None:
    refused(manifest(fn(name)), f"function name {name!r} is not a valid SQL identifier")


@pytest.mark.parametrize("name", ["wasm_call", "WASM_Call"])
def test_reserved_name(name: str) -> None:
    refused(manifest(fn(name)), f"function '{name}'", "name is reserved by sqlwasm")


@pytest.mark.parametrize("name", ["abs", "median", "json_extract", "coalesce"])
def test_builtin_names_are_checked_at_install_not_in_the_manifest(name: str) -> None:
    """The manifest cannot know which SQLite it will meet (built-ins differ
    between versions and builds): the clash is found at install time, against
    the actual connection (tests/test_runtime.py)."""
    assert parse_manifest(manifest(fn(name))).functions[0].name == name


def test_duplicate_function_names_case_insensitive() -> None:
    refused(manifest(fn("m_f"), fn("M_F")), "function 'M_F' is declared twice")


def test_bad_kind() -> None:
    refused(with_function(kind="view"), "function 'm_f'", "kind must be one of scalar, aggregate, window, table", "'view'")


def test_aggregate_needs_exports_not_export() -> None:
    refused(with_function(kind="aggregate", export="x"), "function 'm_f'", "names its exports in 'exports'")
    refused(with_function(kind="aggregate"), "function 'm_f'", "missing key 'exports'")
    agg = fn("m_f", kind="aggregate", exports={"init": "i", "step": "s"})
    agg.pop("export", None)
    refused(manifest(agg), "function 'm_f'", "needs exports 'final'")


def test_window_needs_value_and_inverse() -> None:
    win = fn("m_f", kind="window", exports={"init": "i", "step": "s", "final": "f"})
    refused(manifest(win), "function 'm_f'", "needs exports 'value', 'inverse'")


def test_aggregate_refuses_window_roles_and_unknown_roles() -> None:
    agg = fn("m_f", kind="aggregate", exports={"init": "i", "step": "s", "final": "f", "value": "v"})
    refused(manifest(agg), "'value' and 'inverse' are for window functions")
    odd = fn("m_f", kind="aggregate", exports={"init": "i", "step": "s", "final": "f", "reset": "r"})
    refused(manifest(odd), "unknown export role 'reset'")


def test_step_batch_is_only_for_raw_aggregates() -> None:
    roles = {"init": "i", "step": "s", "final": "f", "step_batch": "b"}
    win = fn("m_f", kind="window", exports={**roles, "value": "v", "inverse": "n"})
    refused(manifest(win), "'step_batch' is for raw aggregates")
    packed = fn("m_f", abi="msgpack", kind="aggregate", exports=roles)
    refused(manifest(packed), "'step_batch' is for raw aggregates")


def test_step_batch_refused_over_the_native_batch_arguments() -> None:
    # The limit is the native header's (rows are buffered in C); a wider
    # aggregate was once accepted and its step_batch silently never called.
    roles = {"init": "i", "step": "s", "final": "f", "step_batch": "b"}
    at_limit = fn("m_f", kind="aggregate", args=["integer"] * BATCH_MAX_ARGS, exports=roles)
    assert parse_manifest(manifest(at_limit)).functions[0].exports["step_batch"] == "b"
    over = fn("m_f", kind="aggregate", args=["real"] * (BATCH_MAX_ARGS + 1), exports=roles)
    refused(
        manifest(over),
        "function 'm_f'",
        f"'step_batch' is for aggregates of at most {BATCH_MAX_ARGS} arguments",
        f"this one takes {BATCH_MAX_ARGS + 1}",
    )
    unbatched = {"init": "i", "step": "s", "final": "f"}
    without = fn("m_f", kind="aggregate", args=["real"] * (BATCH_MAX_ARGS + 1), exports=unbatched)
    assert parse_manifest(manifest(without)).functions[0].exports == unbatched


def test_scalar_refuses_exports() -> None:
    refused(with_function(exports={"init": "i"}), "'exports' is for aggregate and window functions")


def test_bad_abi() -> None:
    refused(with_function(abi="json"), "function 'm_f'", "abi must be 'raw' or 'msgpack'", "'json'")


def test_unknown_argument_type_names_its_position() -> None:
    refused(with_function(args=["integer", "string"]), "function 'm_f'", "argument 2 has unknown type 'string'")


@pytest.mark.parametrize("arg", [["integer"], {"t": "integer"}, 1, None])
def test_non_string_argument_type(arg: Any) -> None:
    """An argument type that is not a string (as JSON/TOML can say) is a
    manifest error, not a crash in the validator."""
    refused(with_function(args=["integer", arg]), "function 'm_f'", "argument 2 has unknown type")


def test_unknown_varargs_type() -> None:
    refused(with_function(abi="msgpack", varargs="int"), "function 'm_f'", "varargs has unknown type 'int'")


def test_unknown_return_type() -> None:
    refused(with_function(returns="float"), "function 'm_f'", "returns has unknown type 'float'")


def test_bad_null_policy() -> None:
    refused(with_function(abi="msgpack", null="skip"), "function 'm_f'", "null must be 'strict' or 'call'")


@pytest.mark.parametrize(
    "changes, bad",
    [
        ({"args": ["text"]}, "'text'"),
        ({"args": ["integer", "blob"]}, "'blob'"),
        ({"args": ["any"]}, "'any'"),
        ({"returns": "text"}, "'text'"),
        ({"returns": "any"}, "'any'"),
    ],
)
def test_raw_abi_carries_only_numbers(changes: dict[str, Any], bad: str) -> None:
    refused(with_function(**changes), "function 'm_f'", "raw ABI carries only integer and real", bad)


def test_raw_abi_refuses_varargs() -> None:
    refused(with_function(varargs="integer"), "function 'm_f'", "varargs needs abi = 'msgpack'")


def test_raw_abi_refuses_null_call() -> None:
    refused(with_function(null="call"), "function 'm_f'", "null must be 'strict'")


def test_msgpack_allows_every_type() -> None:
    types = ["integer", "real", "text", "blob", "any"]
    m = parse_manifest(manifest(*(fn(f"m_{t}", abi="msgpack", args=types, returns=t, varargs=t) for t in types)))
    assert [f.returns for f in m.functions] == types


# ------------------------------------------------------- hypothesis

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from(["module", "function", "limits"]),
    key=st.sampled_from(sorted({"sqlwasm", "name", "version", "description", "capabilities", "limits", "functions", "export", "kind", "abi", "args", "varargs", "returns", "deterministic", "null", "timeout_ms"})),
    value=_json,
)
def test_any_json_value_anywhere_gives_manifest_error_or_manifest(where: str, key: str, value: Any) -> None:
    """Whatever JSON a key holds, the validator answers with a Manifest or a
    ManifestError, never another exception."""
    obj = good()
    target = {"module": obj, "function": obj["functions"][1], "limits": obj["limits"]}[where]
    target[key] = value
    try:
        result = parse_manifest(obj)
    except ManifestError:
        return
    assert isinstance(result, Manifest)
    assert parse_manifest(result.to_json()) == result


@settings(max_examples=100, deadline=None)
@given(
    args=st.lists(st.sampled_from(["integer", "real", "text", "blob", "any"]), max_size=6),
    returns=st.sampled_from(["integer", "real", "text", "blob", "any"]),
    varargs=st.none() | st.sampled_from(["integer", "real", "text", "blob", "any"]),
    deterministic=st.booleans(),
    null=st.sampled_from(["strict", "call"]),
    description=st.text(max_size=20),
    capabilities=st.lists(st.sampled_from(CAPABILITIES), unique=True),
)
def test_manifest_bytes_round_trip(
    args: list[str], returns: str, varargs: str | None, deterministic: bool, null: str, description: str, capabilities: list[str]
) -> None:
    entry = fn("m_f", abi="msgpack", args=args, returns=returns, deterministic=deterministic, null=null)
    if varargs is not None:
        entry["varargs"] = varargs
    m = parse_manifest(manifest(entry, description=description, capabilities=capabilities))
    assert manifest_from_json(m.to_bytes()) == m


# ---------------------------------------------------------- JSON, TOML


@pytest.mark.parametrize("payload", [b"{", b"", b"\xff\xfe{}", b"[1,]", b"{'a': 1}"])
def test_manifest_from_json_invalid(payload: bytes) -> None:
    with pytest.raises(ManifestError, match="src: not valid UTF-8 JSON"):
        manifest_from_json(payload, "src")


def test_manifest_from_json_deeply_nested() -> None:
    """Nesting deep enough to exhaust the JSON parser's recursion is still a
    ManifestError (module bytes must never crash the loader)."""
    payload = b'{"sqlwasm":1,"name":"t","version":"1.0.0","functions":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ManifestError):
        manifest_from_json(payload, "src")


GOOD_TOML = """
sqlwasm = 1
name = "mod_1"
version = "1.2.3-rc.1"
description = "a test module"
capabilities = ["log"]

[limits]
timeout_ms = 100
fuel = 1_000_000_000
memory_pages = 16
max_result_bytes = 1024

[[functions]]
name = "m_add"
export = "add"
kind = "scalar"
abi = "raw"
args = ["integer", "integer"]
returns = "integer"
deterministic = true
null = "strict"

[[functions]]
name = "m_fmt"
abi = "msgpack"
args = ["text"]
varargs = "any"
returns = "text"
null = "call"
"""


def test_manifest_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "mod.toml"
    path.write_text(GOOD_TOML)
    assert manifest_from_toml(path) == parse_manifest(good())
    assert manifest_from_toml(str(path)) == parse_manifest(good())


def test_manifest_from_toml_invalid(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ManifestError, match="invalid TOML") as info:
        manifest_from_toml(path)
    assert str(path) in str(info.value)


def test_manifest_from_toml_missing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        manifest_from_toml(tmp_path / "nope.toml")


def test_manifest_from_toml_rule_error_names_path(tmp_path: Path) -> None:
    path = tmp_path / "mod.toml"
    path.write_text(GOOD_TOML.replace('name = "m_fmt"', 'name = "wasm_call"'))
    with pytest.raises(ManifestError) as info:
        manifest_from_toml(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "function 'wasm_call'" in message and "reserved" in message


# ------------------------------------------------------------- embed


WAT_ONE = MEMORY + '(func (export "m_f") (param i64) (result i64) local.get 0)'


def test_embed_replaces_manifest_and_drops_signature(session_key: Ed25519PrivateKey) -> None:
    first = wasm_module(WAT_ONE, manifest(fn("m_f"), version="1.0.0"), key=session_key)
    assert sections(first)[-1].name == SIGNATURE_SECTION
    second = parse_manifest(manifest(fn("m_f"), version="2.0.0"))
    out = embed_manifest(first, second)
    found = find_custom(out, MANIFEST_SECTION)
    assert len(found) == 1
    assert manifest_from_json(found[0].payload(out)) == second
    assert not find_custom(out, SIGNATURE_SECTION)
    # Only the two custom sections changed: the code is intact.
    assert [s.id for s in sections(out) if s.id] == [s.id for s in sections(first) if s.id]
    assert sqlwasm.Runtime(allow_unsigned=True).load(out).version == "2.0.0"


def test_embed_refuses_non_wasm() -> None:
    with pytest.raises(ManifestError, match="cannot embed the manifest"):
        embed_manifest(b"\0asm\x02\0\0\0", parse_manifest(manifest(fn("m_f"))))


# -------------------------------------------- the manifest section, via load


def _raw_module(wat: str, *payloads: bytes) -> bytes:
    data = bytes(wasmtime.wat2wasm(wat))
    for payload in payloads:
        data += custom_section(MANIFEST_SECTION, payload)
    return data


@pytest.fixture
def loose() -> sqlwasm.Runtime:
    return sqlwasm.Runtime(allow_unsigned=True)


def test_load_no_manifest_section(loose: sqlwasm.Runtime) -> None:
    with pytest.raises(ManifestError, match="has no 'sqlwasm.manifest' section"):
        loose.load(_raw_module(WAT_ONE))


def test_load_two_manifest_sections(loose: sqlwasm.Runtime) -> None:
    payload = parse_manifest(manifest(fn("m_f"))).to_bytes()
    with pytest.raises(ManifestError, match="more than one 'sqlwasm.manifest' section"):
        loose.load(_raw_module(WAT_ONE, payload, payload))


def test_load_invalid_json(loose: sqlwasm.Runtime) -> None:
    with pytest.raises(ManifestError, match="not valid UTF-8 JSON"):
        loose.load(_raw_module(WAT_ONE, b"{not json"))


def test_load_unsupported_format(loose: sqlwasm.Runtime) -> None:
    payload = json.dumps({**manifest(fn("m_f")), "sqlwasm": 2}).encode()
    with pytest.raises(ManifestError, match="manifest format 2 is not supported"):
        loose.load(_raw_module(WAT_ONE, payload))


def test_load_invalid_wasm(loose: sqlwasm.Runtime) -> None:
    payload = parse_manifest(manifest(fn("m_f"))).to_bytes()
    # Framing is fine, the code is not: a type section with garbage.
    data = b"\0asm\x01\0\0\0" + b"\x01\x03\x01\x99\x99" + custom_section(MANIFEST_SECTION, payload)
    with pytest.raises(ManifestError, match="module 't' is not valid wasm"):
        loose.load(data)


def test_load_bad_framing_is_not_a_crash(loose: sqlwasm.Runtime) -> None:
    payload = parse_manifest(manifest(fn("m_f"))).to_bytes()
    data = bytes(wasmtime.wat2wasm(WAT_ONE)) + custom_section(MANIFEST_SECTION, payload)
    with pytest.raises(sqlwasm.Error):
        loose.load(data[:-5])


# ---------------------------------------------------- exports vs manifest


def exports_error(wat: str, *functions: dict[str, Any]) -> str:
    compiled = wasmtime.Module(wasmtime.Engine(), wasmtime.wat2wasm(wat))
    with pytest.raises(ManifestError) as info:
        check_exports(parse_manifest(manifest(*functions, name="ex")), compiled)
    return str(info.value)


ALLOC = '(func (export "sqlwasm_alloc") (param i32) (result i32) i32.const 16)'
PACKED = '(func (export "{name}") (param i32 i32) (result i64) i64.const 0)'


def test_exports_ok() -> None:
    wat = MEMORY + ALLOC + PACKED.format(name="p") + """
      (func (export "r") (param i64 f64) (result f64) local.get 1)"""
    compiled = wasmtime.Module(wasmtime.Engine(), wasmtime.wat2wasm(wat))
    check_exports(
        parse_manifest(manifest(fn("m_r", export="r", args=["integer", "real"], returns="real"), fn("m_p", export="p", abi="msgpack", args=["text"], returns="blob"))),
        compiled,
    )


def test_exports_no_memory() -> None:
    message = exports_error('(func (export "m_f") (param i64) (result i64) local.get 0)', fn("m_f"))
    assert "module 'ex'" in message and "does not export its linear memory as 'memory'" in message


def test_exports_memory_under_another_name() -> None:
    message = exports_error('(memory (export "mem") 1)' + WAT_ONE.replace(MEMORY, ""), fn("m_f"))
    assert "'memory'" in message


def test_exports_memory_name_is_not_a_memory() -> None:
    wat = '(memory (export "mem") 1) (func (export "memory") (param i64) (result i64) local.get 0)'
    assert "does not export its linear memory" in exports_error(wat, fn("m_f", export="memory"))


def test_export_missing() -> None:
    message = exports_error(WAT_ONE, fn("m_g", export="nothere"))
    assert "function 'm_g'" in message and "export 'nothere' is missing" in message


def test_export_defaults_to_sql_name() -> None:
    message = exports_error(WAT_ONE, fn("m_g"))
    assert "export 'm_g' is missing" in message


def test_export_is_a_memory_not_a_function() -> None:
    message = exports_error(WAT_ONE, fn("m_g", export="memory"))
    assert "function 'm_g'" in message and "export 'memory' is not a function" in message


def test_export_is_a_global_not_a_function() -> None:
    wat = MEMORY + '(global (export "g") i64 (i64.const 1))'
    assert "export 'g' is not a function" in exports_error(wat, fn("m_g", export="g"))


@pytest.mark.parametrize(
    "func, spec, got, want",
    [
        ("(param i32) (result i64) i64.const 0", fn("m_f"), "(i32) -> (i64)", "(i64) -> (i64)"),
        ("(param i64) (result f64) f64.const 0", fn("m_f"), "(i64) -> (f64)", "(i64) -> (i64)"),
        ("(param i64 i64) (result i64) i64.const 0", fn("m_f"), "(i64, i64) -> (i64)", "(i64) -> (i64)"),
        ("(param i64)", fn("m_f"), "(i64) -> ()", "(i64) -> (i64)"),
        ("(param f64 i64) (result f64) f64.const 0", fn("m_f", args=["integer", "real"], returns="real"), "(f64, i64) -> (f64)", "(i64, f64) -> (f64)"),
        ("(param i64) (result i64) i64.const 0", fn("m_f", abi="msgpack"), "(i64) -> (i64)", "(i32, i32) -> (i64)"),
        ("(param i32 i32) (result i32) i32.const 0", fn("m_f", abi="msgpack"), "(i32, i32) -> (i32)", "(i32, i32) -> (i64)"),
    ],
)
def test_export_signature_mismatch(func: str, spec: dict[str, Any], got: str, want: str) -> None:
    wat = MEMORY + ALLOC + f'(func (export "m_f") {func})'
    message = exports_error(wat, spec)
    assert "function 'm_f'" in message
    assert f"has type {got}" in message
    assert f"needs {want}" in message
    assert f"the {spec['abi']} ABI" in message


def test_msgpack_without_alloc() -> None:
    message = exports_error(MEMORY + PACKED.format(name="m_f"), fn("m_f", abi="msgpack"))
    assert "module 'ex'" in message and "sqlwasm_alloc" in message and "(i32) -> (i32)" in message


@pytest.mark.parametrize(
    "alloc",
    [
        '(func (export "sqlwasm_alloc") (param i64) (result i32) i32.const 16)',
        '(func (export "sqlwasm_alloc") (param i32) (result i64) i64.const 16)',
        '(func (export "sqlwasm_alloc") (param i32))',
        '(global (export "sqlwasm_alloc") i32 (i32.const 16))',
    ],
)
def test_msgpack_with_bad_alloc(alloc: str) -> None:
    message = exports_error(MEMORY + alloc + PACKED.format(name="m_f"), fn("m_f", abi="msgpack"))
    assert "sqlwasm_alloc" in message


def test_raw_only_module_needs_no_alloc() -> None:
    compiled = wasmtime.Module(wasmtime.Engine(), wasmtime.wat2wasm(WAT_ONE))
    check_exports(parse_manifest(manifest(fn("m_f"))), compiled)


def test_load_checks_exports(loose: sqlwasm.Runtime) -> None:
    data = wasm_module(WAT_ONE, manifest(fn("m_g", export="gone")))
    with pytest.raises(ManifestError, match="export 'gone' is missing"):
        loose.load(data)


def test_signed_module_with_bad_manifest_is_a_manifest_error(session_key: Ed25519PrivateKey) -> None:
    data = sign(_raw_module(WAT_ONE, b'{"sqlwasm":1}'), session_key)
    with pytest.raises(ManifestError, match="missing key 'name'"):
        sqlwasm.Runtime(trusted_keys=[session_key.public_key()]).load(data)


# ------------------------------------ one reading of the JSON, for everyone


@pytest.mark.parametrize(
    "payload, key",
    [
        (b'{"sqlwasm":1,"name":"evil","name":"t","version":"1.0.0","functions":[{"name":"m_f","abi":"raw","args":["integer"],"returns":"integer"}]}', "name"),
        (b'{"sqlwasm":1,"name":"t","version":"1.0.0","capabilities":[],"capabilities":["log"],"functions":[{"name":"m_f","abi":"raw","args":["integer"],"returns":"integer"}]}', "capabilities"),
        (b'{"sqlwasm":1,"name":"t","version":"1.0.0","limits":{"fuel":1,"fuel":1},"functions":[{"name":"m_f","abi":"raw","args":["integer"],"returns":"integer"}]}', "fuel"),
        (b'{"sqlwasm":1,"name":"t","version":"1.0.0","functions":[{"name":"m_f","export":"a","export":"m_f","abi":"raw","args":["integer"],"returns":"integer"}]}', "export"),
    ],
    ids=["module-name", "capabilities", "same-value-twice", "function-export"],
)
def test_duplicate_json_keys_are_refused(payload: bytes, key: str, session_key: Ed25519PrivateKey) -> None:
    """Python's json keeps the last of two equal keys, other readers the
    first or neither: a reviewer and the host could read different manifests."""
    with pytest.raises(ManifestError, match=f"src: key '{key}' appears twice"):
        manifest_from_json(payload, "src")
    data = sign(_raw_module(WAT_ONE, payload), session_key)
    with pytest.raises(ManifestError, match=f"key '{key}' appears twice"):
        sqlwasm.Runtime(trusted_keys=[session_key.public_key()]).load(data)


def _with_raw_value(raw: bytes) -> bytes:
    """A manifest whose description is the raw JSON `raw`."""
    return b'{"sqlwasm":1,"name":"t","version":"1.0.0","description":' + raw + b',"functions":[]}'


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_json_constants_are_refused(raw: bytes) -> None:
    with pytest.raises(ManifestError, match=f"src: {raw.decode()} is not JSON"):
        manifest_from_json(_with_raw_value(raw), "src")


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'"ok \\udfff"', b'["\\ud83d"]', b'{"\\udc00":1}'])
def test_lone_surrogates_are_refused(raw: bytes) -> None:
    """Valid JSON escapes, but no Unicode text: the manifest could not be
    written back as UTF-8, or printed."""
    with pytest.raises(ManifestError, match="src: a string holds a lone surrogate"):
        manifest_from_json(_with_raw_value(raw), "src")


def test_paired_surrogate_escapes_are_text() -> None:
    payload = parse_manifest(manifest(fn("m_f"), description="x")).to_bytes().replace(b'"x"', b'"\\ud83d\\ude00"')
    assert manifest_from_json(payload).description == "\N{GRINNING FACE}"


@pytest.mark.parametrize("digits", [101, 5000, 100_000])
def test_integer_with_too_many_digits_is_a_manifest_error(digits: int) -> None:
    payload = parse_manifest(manifest(fn("m_f"))).to_bytes().replace(b'"sqlwasm":1', b'"sqlwasm":' + b"9" * digits)
    with pytest.raises(ManifestError, match=f"src: an integer of {digits} digits"):
        manifest_from_json(payload, "src")


def test_toml_integer_with_5000_digits_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(GOOD_TOML.replace("fuel = 1_000_000_000", "fuel = " + "9" * 5000))
    with pytest.raises(ManifestError, match="invalid TOML") as info:
        manifest_from_toml(path)
    assert str(path) in str(info.value)


def test_toml_that_is_not_utf8_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(GOOD_TOML.replace("a test module", "caf\xe9").encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8") as info:
        manifest_from_toml(path)
    assert str(path) in str(info.value)


# --------------------------------------------- limits the host can honour

# The host's maxima (docs/manifest.md): what the native layer can carry.
HOST_MAXIMA = {"timeout_ms": 2**31 - 1, "fuel": 2**64 - 1, "memory_pages": 65_536, "max_result_bytes": 2**31 - 1}


@pytest.mark.parametrize("limit", LIMITS)
def test_limit_above_the_host_maximum_is_refused(limit: str) -> None:
    too_big = HOST_MAXIMA[limit] + 1
    refused(
        manifest(fn("m_f"), name="big", limits={limit: too_big}),
        "module 'big'", f"limit '{limit}'", str(too_big), f"at most {HOST_MAXIMA[limit]}",
    )
    assert parse_manifest(manifest(fn("m_f"), limits={limit: HOST_MAXIMA[limit]})).limits == {limit: HOST_MAXIMA[limit]}


@pytest.mark.parametrize(
    "limit, value", [("fuel", 2**70), ("timeout_ms", 2**31), ("memory_pages", 70_000), ("max_result_bytes", 2**40)]
)
def test_load_with_limit_above_the_host_maximum_is_a_manifest_error(
    limit: str, value: int, session_key: Ed25519PrivateKey
) -> None:
    """The runtime sets no limit of its own, so the manifest's would reach
    the native layer unchanged."""
    data = sign(_raw_module(WAT_ONE, json.dumps(manifest(fn("m_f"), name="big", limits={limit: value})).encode()), session_key)
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=None, fuel=None, memory_pages=None)
    with pytest.raises(ManifestError, match=f"module 'big': limit '{limit}' is {value}, at most"):
        runtime.load(data)


def test_limits_at_the_host_maxima_load_and_run(session_key: Ed25519PrivateKey) -> None:
    data = wasm_module(WAT_ONE, manifest(fn("m_f"), limits=HOST_MAXIMA), key=session_key)
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=None, fuel=None, memory_pages=None)
    module = runtime.load(data)
    assert (module.limits.timeout_ms, module.limits.fuel, module.limits.memory_pages) == (2**31 - 1, 2**64 - 1, 65_536)
    conn = runtime.connect(":memory:", [module])
    try:
        assert conn.execute("SELECT m_f(41) + 1").fetchall() == [(42,)]
    finally:
        conn.close()


@pytest.mark.parametrize("limit", LIMITS)
def test_runtime_limit_above_the_host_maximum_is_a_value_error(limit: str) -> None:
    with pytest.raises(ValueError, match=f"{limit} is {HOST_MAXIMA[limit] + 1}, at most {HOST_MAXIMA[limit]}"):
        sqlwasm.Runtime(**{limit: HOST_MAXIMA[limit] + 1})
    assert getattr(sqlwasm.Runtime(**{limit: HOST_MAXIMA[limit]}).limits, limit) == HOST_MAXIMA[limit]
