"""JavaScript guests (sqlwasm build funcs.js): QuickJS-ng inside the module.

One module is built per session (the first build also compiles the engine
into the session's cache directory; tests/conftest.py makes that a fresh
one); every test queries it through real SQLite, wasmtime and signing."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
import threading
import time
from pathlib import Path

import apsw
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import _cache
from sqlwasm._build import build
from sqlwasm._build._javascript import engine_key, engine_objects
from sqlwasm._errors import Error
from sqlwasm._signing import sign
from sqlwasm._wasmfile import declared_memories

SOURCE = textwrap.dedent(
    """\
    export function js_add(a, b) { return a + b; }
    export function js_id(x) { return x; }
    export function js_type(x) {
      return x === null ? 'null' : x instanceof Uint8Array ? 'Uint8Array' : typeof x;
    }
    export function js_concat(...parts) { return parts.join('|'); }
    function check(x) {
      if (x < 0) throw new RangeError(`negative: ${x}`);
      return Math.sqrt(x);
    }
    export function js_sqrt(x) { return check(x); }
    export function js_spin() { for (;;) {} }
    export function js_alloc(megabytes) { return new Uint8Array(megabytes << 20).length; }
    export function js_deep(n) { return n === 0 ? 0 : 1 + js_deep(n - 1); }
    export function js_deep_map(n) { return n === 0 ? 0 : 1 + [n - 1].map(js_deep_map)[0]; }
    export function js_object() { return {a: 1}; }
    export async function js_async() { return 1; }
    export function js_throw_symbol() { throw Symbol('odd'); }
    export function js_now() { return Date.now(); }

    // A running mean: an aggregate; with value() and inverse() a window.
    export class js_mean {
      constructor() { this.sum = 0; this.count = 0; }
      step(x) { this.sum += x; this.count++; }
      inverse(x) { this.sum -= x; this.count--; }
      value() { return this.count ? this.sum / this.count : null; }
      final() { return this.value(); }
    }
    class Counter {
      constructor() { this.count = 0; }
      step() { this.count++; }
      final() { return this.count; }
    }
    export class js_count_long extends Counter {
      step(s) { if (s.length > 3) super.step(); }
    }
    export class js_strict_sum {
      constructor() { this.total = 0n; }
      step(x) {
        if (typeof x !== 'number' || !Number.isInteger(x)) throw new TypeError(`not an integer: ${x}`);
        this.total += BigInt(x);
      }
      final() { return this.total; }
    }
    """
)

MANIFEST = textwrap.dedent(
    """\
    sqlwasm = 1
    name = "jsfuncs"
    version = "1.0.0"

    [[functions]]
    name = "js_add"
    abi = "msgpack"
    args = ["integer", "integer"]
    returns = "integer"
    deterministic = true

    [[functions]]
    name = "js_id"
    abi = "msgpack"
    args = ["any"]
    returns = "any"
    null = "call"

    [[functions]]
    name = "js_type"
    abi = "msgpack"
    args = ["any"]
    returns = "text"
    null = "call"

    [[functions]]
    name = "js_concat"
    abi = "msgpack"
    args = []
    varargs = "text"
    returns = "text"

    [[functions]]
    name = "js_sqrt"
    abi = "msgpack"
    args = ["real"]
    returns = "real"

    [[functions]]
    name = "js_spin"
    abi = "msgpack"
    args = []
    returns = "integer"

    [[functions]]
    name = "js_alloc"
    abi = "msgpack"
    args = ["integer"]
    returns = "integer"

    [[functions]]
    name = "js_deep"
    abi = "msgpack"
    args = ["integer"]
    returns = "integer"

    [[functions]]
    name = "js_deep_map"
    abi = "msgpack"
    args = ["integer"]
    returns = "integer"

    [[functions]]
    name = "js_object"
    abi = "msgpack"
    args = []
    returns = "any"

    [[functions]]
    name = "js_async"
    abi = "msgpack"
    args = []
    returns = "any"

    [[functions]]
    name = "js_throw_symbol"
    abi = "msgpack"
    args = []
    returns = "any"

    [[functions]]
    name = "js_now"
    abi = "msgpack"
    args = []
    returns = "integer"

    [[functions]]
    name = "js_mean"
    kind = "window"
    abi = "msgpack"
    args = ["real"]
    returns = "real"
    exports = { init = "js_mean.init", step = "js_mean.step", final = "js_mean.final", value = "js_mean.value", inverse = "js_mean.inverse", drop = "js_mean.drop" }

    [[functions]]
    name = "js_count_long"
    kind = "aggregate"
    abi = "msgpack"
    args = ["text"]
    returns = "integer"
    exports = { init = "js_count_long.init", step = "js_count_long.step", final = "js_count_long.final", drop = "js_count_long.drop" }

    [[functions]]
    name = "js_strict_sum"
    kind = "aggregate"
    abi = "msgpack"
    args = ["any"]
    returns = "integer"
    exports = { init = "js_strict_sum.init", step = "js_strict_sum.step", final = "js_strict_sum.final", drop = "js_strict_sum.drop" }
    """
)


@pytest.fixture(scope="session")
def js_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("javascript")
    (directory / "funcs.js").write_text(SOURCE)
    (directory / "funcs.toml").write_text(MANIFEST)
    return directory


@pytest.fixture(scope="session")
def js_module(js_sources: Path, session_key: Ed25519PrivateKey) -> bytes:
    """The module, built once (and the engine with it, on a cold cache)."""
    return sign(build(js_sources / "funcs.js", js_sources / "funcs.toml"), session_key)


@pytest.fixture(scope="session")
def js_runtime(session_key: Ed25519PrivateKey) -> sqlwasm.Runtime:
    return sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=1_000, memory_pages=1_024)


@pytest.fixture(scope="session")
def js_loaded(js_runtime: sqlwasm.Runtime, js_module: bytes) -> sqlwasm.Module:
    return js_runtime.load(js_module)


@pytest.fixture(scope="session")
def js_conn(js_runtime: sqlwasm.Runtime, js_loaded: sqlwasm.Module) -> apsw.Connection:
    return js_runtime.connect(":memory:", [js_loaded])


def one(conn: apsw.Connection, sql: str, *bindings: object) -> object:
    return conn.execute(sql, bindings).fetchall()[0][0]


def error_of(conn: apsw.Connection, sql: str, *bindings: object) -> str:
    with pytest.raises(apsw.SQLError) as caught:
        conn.execute(sql, bindings).fetchall()
    return str(caught.value)


def test_the_module_imports_nothing(js_loaded: sqlwasm.Module) -> None:
    assert js_loaded._compiled.imports == ()
    exported = {e.name for e in js_loaded._compiled.exports}
    assert {"js_add", "js_mean.init", "js_mean.value", "js_mean.inverse", "js_strict_sum.step"} <= exported
    # a class is an aggregate, not also a scalar; the initializer ran at build time
    assert "js_mean" not in exported and "sqlwasm_init" not in exported and "_initialize" not in exported


def test_scalar(js_conn: apsw.Connection) -> None:
    assert one(js_conn, "SELECT js_add(2, 40)") == 42
    assert one(js_conn, "SELECT js_concat('a', 'é', '☃')") == "a|é|☃"
    assert one(js_conn, "SELECT js_sqrt(2.25)") == 1.5
    assert one(js_conn, "SELECT js_add(NULL, 1)") is None  # null = "strict": not called


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.none(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.sampled_from([2**63 - 1, -(2**63), 2**53 - 1, 2**53, -(2**53), 0]),
        st.floats(allow_nan=False),
        st.text(alphabet=st.characters(exclude_categories=["Cs"])),
        st.binary(),
    )
)
def test_values_cross_unchanged(js_conn: apsw.Connection, value: object) -> None:
    back = one(js_conn, "SELECT js_id(?)", value)
    negative_zero = isinstance(value, float) and value == 0 and math.copysign(1, value) < 0
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53 and not negative_zero:
        # a JS number does not know it was a REAL: an integral one returns as an integer
        assert back == value and isinstance(back, int)
    elif negative_zero:
        assert isinstance(back, float) and back == 0 and math.copysign(1, back) == -1  # stays a REAL
    else:
        assert back == value and type(back) is type(value)


def test_types_on_the_js_side(js_conn: apsw.Connection) -> None:
    row = js_conn.execute(
        "SELECT js_type(1), js_type(2.5), js_type(9007199254740992), js_type('x'), js_type(x'00'), js_type(NULL)"
    ).fetchall()[0]
    assert row == ("number", "number", "bigint", "string", "Uint8Array", "null")
    assert one(js_conn, "SELECT js_id(9e999)") == math.inf
    assert one(js_conn, "SELECT js_id(-9e999)") == -math.inf


def test_aggregate_and_window(js_conn: apsw.Connection) -> None:
    js_conn.execute("CREATE TEMP TABLE t(g, x); INSERT INTO t VALUES (1, 1), (1, 2), (2, 10), (1, 6)")
    assert js_conn.execute("SELECT g, js_mean(x) FROM t GROUP BY g ORDER BY g").fetchall() == [(1, 3.0), (2, 10.0)]
    assert one(js_conn, "SELECT js_mean(x) FROM t WHERE 0") is None
    window = "SELECT js_mean(x) OVER (ORDER BY rowid ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t"
    assert [r[0] for r in js_conn.execute(window)] == [1.0, 1.5, 6.0, 8.0]
    assert one(js_conn, "SELECT js_strict_sum(x) FROM t") == 19  # a BigInt result
    # final() inherited from a base class
    assert one(js_conn, "SELECT js_count_long(value) FROM json_each('[\"a\", \"abcd\", \"abcde\"]')") == 2
    message = error_of(js_conn, "SELECT js_strict_sum(x) FROM (SELECT 1 AS x UNION ALL SELECT 'two')")
    assert "jsfuncs.js_strict_sum" in message and "TypeError: not an integer: two" in message
    assert "at step (funcs.js:" in message
    js_conn.execute("DROP TABLE t")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-(2**53) + 1, 2**53 - 1)), max_size=30))
def test_aggregate_states_per_group(js_conn: apsw.Connection, rows: list[tuple[int, int]]) -> None:
    # one live state per group, all open at once, each fed its own rows
    values = ",".join("(?, ?)" for _ in rows) or "(NULL, NULL)"
    sql = f"WITH v(g, x) AS (VALUES {values}) SELECT g, js_strict_sum(x) FROM v WHERE g IS NOT NULL GROUP BY g ORDER BY g"
    expected: dict[int, int] = {}
    for group, x in rows:
        expected[group] = expected.get(group, 0) + x
    got = js_conn.execute(sql, [v for row in rows for v in row]).fetchall()
    assert got == sorted(expected.items())


def test_exception_is_the_sql_error_with_its_stack(js_conn: apsw.Connection) -> None:
    message = error_of(js_conn, "SELECT js_sqrt(-4)")
    assert message.startswith("jsfuncs.js_sqrt: RangeError: negative: -4\n")
    assert "at check (funcs.js:8:" in message and "at js_sqrt (funcs.js:11:" in message
    assert one(js_conn, "SELECT js_sqrt(16)") == 4


def test_results_sql_cannot_hold_are_errors(js_conn: apsw.Connection) -> None:
    assert "js_object: returned an object (return a string, e.g. JSON.stringify(value))" in error_of(
        js_conn, "SELECT js_object()"
    )
    # a thrown value that is not an Error still gives a message
    thrown = error_of(js_conn, "SELECT js_throw_symbol()")
    assert thrown == "jsfuncs.js_throw_symbol: (a thrown value that cannot be shown)"
    assert "js_async: returned a Promise (async functions cannot be used)" in error_of(js_conn, "SELECT js_async()")
    # an integral number is an integer; any other number is a REAL, refused where an integer is declared
    assert "jsfuncs.js_add" in error_of(js_conn, "SELECT js_add(9007199254740991, 1)")


def test_no_clock_without_the_capability(js_conn: apsw.Connection) -> None:
    assert one(js_conn, "SELECT js_now()") == 0  # the stubbed clock stands at the epoch


def test_infinite_loop_is_stopped_and_the_engine_restarts(js_conn: apsw.Connection) -> None:
    js_conn.execute("CREATE TEMP TABLE m(x); INSERT INTO m VALUES (1), (3)")
    message = error_of(js_conn, "SELECT js_spin()")
    assert "jsfuncs.js_spin" in message and "time" in message.lower()
    # the trap left QuickJS mid-call: the next call starts a fresh runtime
    assert one(js_conn, "SELECT js_add(1, 2)") == 3
    assert one(js_conn, "SELECT js_mean(x) FROM m") == 2.0
    js_conn.execute("DROP TABLE m")


def test_engine_restarts_free_the_old_engine(js_module: bytes, session_key: Ed25519PrivateKey) -> None:
    # 2 MiB beyond the snapshot's memory: enough for one engine, not for a
    # pile of engines abandoned by traps
    pages = declared_memories(js_module)[0].min_pages + 32
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], timeout_ms=20, memory_pages=pages)
    conn = runtime.connect(":memory:", [js_module])
    for _ in range(25):
        assert "jsfuncs.js_spin" in error_of(conn, "SELECT js_spin()")
        assert one(conn, "SELECT js_add(1, 2)") == 3


def test_too_little_memory_is_a_clean_error(js_module: bytes, session_key: Ed25519PrivateKey) -> None:
    # one page beyond the snapshot: no room for the call's result buffer
    pages = declared_memories(js_module)[0].min_pages + 1
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], memory_pages=pages)
    conn = runtime.connect(":memory:", [js_module])
    for _ in range(2):
        assert error_of(conn, "SELECT js_add(1, 2)") == "jsfuncs.js_add: out of memory"


def test_memory_limits(js_conn: apsw.Connection) -> None:
    assert one(js_conn, "SELECT js_alloc(8)") == 8 << 20
    message = error_of(js_conn, "SELECT js_alloc(200)")  # memory_pages = 1024: 64 MiB
    assert "jsfuncs.js_alloc" in message and ("RangeError" in message or "out of memory" in message)
    assert one(js_conn, "SELECT js_alloc(1)") == 1 << 20


def test_deep_recursion_fails_cleanly(js_conn: apsw.Connection) -> None:
    assert one(js_conn, "SELECT js_deep(100)") == 100
    message = error_of(js_conn, "SELECT js_deep(1000000)")
    assert message.startswith("jsfuncs.js_deep: RangeError: Maximum call stack size exceeded\n    at js_deep (funcs.js:")
    assert one(js_conn, "SELECT js_deep(10)") == 10


def test_stack_overflow_traps_leave_the_stack_whole(js_conn: apsw.Connection) -> None:
    # recursion through a built-in's callback overflows the native wasm stack
    # first: a trap, which leaves the shadow stack pointer deep; each call
    # must start from the top again, or a few traps exhaust the stack
    for _ in range(40):
        assert "trap (stack overflow)" in error_of(js_conn, "SELECT js_deep_map(100000)")
    assert one(js_conn, "SELECT js_deep(100)") == 100
    assert one(js_conn, "SELECT js_deep_map(20)") == 20


CAPABILITY_SOURCE = """\
const atBuild = [Date.now(), Math.random()];
export function js_now() { return Date.now(); }
export function js_random() { return Math.random(); }
export function js_at_build() { return JSON.stringify(atBuild); }
"""


CAPABILITY_MANIFEST = """\
sqlwasm = 1
name = "cap"
version = "1.0.0"
capabilities = ["clock", "random"]

[[functions]]
name = "js_now"
abi = "msgpack"
args = []
returns = "integer"

[[functions]]
name = "js_random"
abi = "msgpack"
args = []
returns = "real"

[[functions]]
name = "js_at_build"
abi = "msgpack"
args = []
returns = "text"
"""


def test_clock_and_random_with_the_capabilities(tmp_path: Path, js_module: bytes, session_key: Ed25519PrivateKey) -> None:
    """`sqlwasm build` gives the engine the host's clock and random source
    when the manifest declares them (and only then: the module without
    capabilities imports nothing, test_the_module_imports_nothing)."""
    source = tmp_path / "cap.js"
    source.write_text(CAPABILITY_SOURCE)
    (tmp_path / "cap.toml").write_text(CAPABILITY_MANIFEST)
    wasm = sign(build(source, tmp_path / "cap.toml"), session_key)
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=["clock", "random"])
    module = runtime.load(wasm)
    assert sorted(i.name for i in module._compiled.imports) == ["clock_time_get", "random_get"]
    conn = runtime.connect(":memory:", [module])
    now, first, second, at_build = conn.execute("SELECT js_now(), js_random(), js_random(), js_at_build()").fetchall()[0]
    assert isinstance(now, int) and isinstance(first, float) and isinstance(second, float)
    assert isinstance(at_build, str)
    assert abs(now - time.time() * 1000) < 60_000
    assert 0 <= first < 1 and 0 <= second < 1 and first != second
    # top-level code ran at build time (pre-initialization), where neither import is called
    assert json.loads(at_build)[0] == 0


def test_a_build_waits_for_the_engine_another_is_building(
    js_module: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = engine_key()
    cached_dir = _cache.user_cache_dir()
    assert cached_dir is not None
    built = cached_dir / "javascript" / key  # built by the js_module fixture
    monkeypatch.setenv("SQLWASM_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "javascript"
    root.mkdir(parents=True, mode=0o700)
    found: list[list[Path]] = []
    with _cache.locked(root / f"{key}.lock"):  # another process is building
        waiting = threading.Thread(target=lambda: found.append(engine_objects()))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()
        shutil.copytree(built, root / key)  # what that build leaves
    waiting.join(10)  # a build of its own would take far longer, and fail on the existing entry
    assert not waiting.is_alive()
    assert [p.name for p in found[0]] == sorted(p.name for p in built.glob("*.o"))
    assert all(p.parent == root / key for p in found[0])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("export function f(x) {\n  return x +;\n}\n", "SyntaxError: unexpected token in expression: ';'\n    at bad.js:2"),
        ("export const x = 1;\nthrow new TypeError('not today');\n", "evaluating bad.js: TypeError: not today\n    at <anonymous> (bad.js:2"),
        ("import {g} from './other.js';\nexport function f() { return g(); }\n", "evaluating bad.js:"),
        ("for (;;) {}\n", "top-level code did not finish at build time: it ran for more than 2,000,000,000 wasm"),
        ("export function sqlwasm_alloc() {}\n", "export 'sqlwasm_alloc' takes a name the JavaScript runtime uses"),
        ("export class C { step() {} final() {} }\nfunction g() {}\nexport {g as 'C.init'};\n",
         "two exports would both be the wasm export 'C.init'"),
        ("function g() {}\nexport {g as 'a\\0b'};\n", "an export's name contains a NUL character"),
    ],
    ids=["syntax", "throws", "imports", "endless", "reserved-name", "name-clash", "nul-name"],
)
def test_bad_source_fails_the_build(
    tmp_path: Path, js_sources: Path, js_module: bytes, source: str, expected: str
) -> None:
    (tmp_path / "bad.js").write_text(source)
    with pytest.raises(Error) as caught:
        build(tmp_path / "bad.js", js_sources / "funcs.toml")
    assert str(caught.value).startswith(f"{tmp_path / 'bad.js'}: ")
    assert expected in str(caught.value)
