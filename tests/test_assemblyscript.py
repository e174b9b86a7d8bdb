"""AssemblyScript guests: `sqlwasm build x.ts` with the real compiler (npm's
assemblyscript, installed on demand into sqlwasm's cache directory), the
AssemblyScript SDK (extensions/sdk/assemblyscript) across the msgpack
boundary, and the shipped geo_as example against a Python reference.

The compiler is installed once per session into a directory of this file's
own (by two processes at once: one installs, the other waits for it); every
build here reuses it.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import apsw
import geo_reference as ref
import msgpack
import pytest
import wasmtime
from conftest import one_error, shipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import _cli
from sqlwasm._build import CompileError, build, compile_source
from sqlwasm._build import _assemblyscript as asc

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ADD_TS = "export function add(a: i64, b: i64): i64 {\n  return a + b;\n}\n"
ADD_TOML = """sqlwasm = 1
name = "as_add"
version = "1.0.0"

[[functions]]
name = "as_add"
export = "add"
abi = "raw"
args = ["integer", "integer"]
returns = "integer"
"""

# A module exercising the SDK: every value type both ways, argument errors,
# varargs, error results, a raw aggregate on Handles, a trap, and a guest
# that allocates per row (the runtime must free it within a small memory).
PROBE_TS = """
import { Handles, Type, Writer, readArgs, returnBytes, returnError, returnInt, returnNil, returnReal,
  returnText } from "sqlwasm";
export { sqlwasm_alloc } from "sqlwasm";

export function echo(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 1);
  let result: i64;
  switch (args.peek()) {
    case Type.Nil: result = returnNil(); break;
    case Type.Int: result = returnInt(args.nextInt()); break;
    case Type.Float: result = returnReal(args.nextReal()); break;
    case Type.Str: result = returnText(args.nextText()); break;
    default: result = returnBytes(args.nextBlob());
  }
  if (args.failed) return args.error();
  return result;
}

export function as_real(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 1);
  const value = args.nextReal();
  return args.failed ? args.error() : returnReal(value);
}

export function as_int(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 1);
  const value = args.nextInt();
  return args.failed ? args.error() : returnInt(value);
}

// (integer, text, blob) -> "i|text|blob length", zero-copy reads
export function triple(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 3);
  const i = args.nextInt();
  const text = args.nextTextUnsafe();
  const textLength = args.length;
  args.nextBlobUnsafe();
  const blobLength = args.length;
  if (args.failed) return args.error();
  const head = String.UTF8.decodeUnsafe(text, <usize>textLength);
  return returnText(`${i}|${head}|${blobLength}`);
}

// varargs: how many arguments, each skipped whatever its type
export function count(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len);
  for (let k = 0; k < args.count; k++) args.nextSkip();
  if (args.failed || !args.done()) return args.error();
  return returnInt(args.count);
}

// (any, any) -> "null" for each NULL, or the sum of the reals: NULL checks
// must not shift the numbering of arguments in messages
export function nullable_sum(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 2);
  let text = "";
  let sum: f64 = 0;
  for (let k = 0; k < 2; k++) {
    if (args.nextNil()) text += "null ";
    else sum += args.nextReal();
  }
  if (args.failed) return args.error();
  return returnText(`${text}${sum}`);
}

export function fail(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 1);
  const message = args.nextText();
  return args.failed ? args.error() : returnError(message);
}

export function checked_div(a: i64, b: i64): i64 {
  assert(b != 0, "division by zero");
  return a / b;
}

// per row: a string of n copies of the text, then its length
export function repeat_len(ptr: usize, len: i32): i64 {
  const args = readArgs(ptr, len, 2);
  const text = args.nextText();
  const n = args.nextInt();
  if (args.failed) return args.error();
  if (n < 0 || n > 100000) return returnError(`n must be in [0, 100000], got ${n}`);
  return returnInt(text.repeat(<i32>n).length);
}

class Total { sum: i64 = 0; }
const totals = new Handles<Total>();
export function total_init(): i32 { return totals.add(new Total()); }
export function total_step(handle: i32, value: i64): void { totals.get(handle).sum += value; }
export function total_final(handle: i32): i64 { return totals.release(handle).sum; }
export function total_drop(handle: i32): void { totals.release(handle); }
export function live(): i64 { return totals.live + series.live; }

// a table function: probe_series(n) -> (value, label) for 0 <= value < n,
// in batches of at most 100 rows
class Series { next: i64 = 0; end: i64 = 0; }
const series = new Handles<Series>();
export function series_open(ptr: usize, len: i32): i32 {
  const args = readArgs(ptr, len, 1);
  const n = args.nextInt();
  if (args.failed || n < 0) return -1;
  const state = new Series();
  state.end = n;
  return series.add(state);
}
export function series_next(handle: i32): i64 {
  const state = series.get(handle);
  const rows = <u32>min<i64>(state.end - state.next, 100);
  Writer.begin();
  Writer.array(rows);
  for (let k: u32 = 0; k < rows; k++) {
    Writer.array(2);
    Writer.int(state.next);
    Writer.text(`row ${state.next}`);
    state.next++;
  }
  return Writer.finish();
}
export function series_close(handle: i32): void { series.release(handle); }
"""

PROBE_TOML = """sqlwasm = 1
name = "probe"
version = "1.0.0"
limits = { memory_pages = 64 }

[[functions]]
name = "probe_echo"
export = "echo"
abi = "msgpack"
args = ["any"]
returns = "any"
null = "call"

[[functions]]
name = "probe_real"
export = "as_real"
abi = "msgpack"
args = ["any"]
returns = "real"

[[functions]]
name = "probe_int"
export = "as_int"
abi = "msgpack"
args = ["any"]
returns = "integer"

[[functions]]
name = "probe_triple"
export = "triple"
abi = "msgpack"
args = ["integer", "text", "blob"]
returns = "text"

[[functions]]
name = "probe_count"
export = "count"
abi = "msgpack"
args = []
varargs = "any"
returns = "integer"
null = "call"

[[functions]]
name = "probe_nullable_sum"
export = "nullable_sum"
abi = "msgpack"
args = ["any", "any"]
returns = "text"
null = "call"

[[functions]]
name = "probe_fail"
export = "fail"
abi = "msgpack"
args = ["text"]
returns = "any"

[[functions]]
name = "probe_div"
export = "checked_div"
abi = "raw"
args = ["integer", "integer"]
returns = "integer"

[[functions]]
name = "probe_repeat_len"
export = "repeat_len"
abi = "msgpack"
args = ["text", "integer"]
returns = "integer"

[[functions]]
name = "probe_live"
export = "live"
abi = "raw"
args = []
returns = "integer"

[[functions]]
name = "probe_series"
kind = "table"
abi = "msgpack"
args = ["integer"]
columns = [{ name = "value", type = "integer" }, { name = "label", type = "text" }]
exports = { open = "series_open", next = "series_next", close = "series_close" }

[[functions]]
name = "probe_total"
kind = "aggregate"
abi = "raw"
args = ["integer"]
returns = "integer"
exports = { init = "total_init", step = "total_step", final = "total_final", drop = "total_drop" }
"""


def sqlwasm_build(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a new process (cwd outside the checkout)."""
    command = [sys.executable, "-m", "sqlwasm", "build", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@dataclass(frozen=True)
class Installed:
    cache: Path  # a cache directory holding the compiler
    add_wasm: Path  # ADD_TS, built while installing


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh cache directory with the compiler installed in it, by two
    `sqlwasm build` processes started at once: both must build the same
    module, and exactly one of them install."""
    cache = tmp_path_factory.mktemp("as-cache")
    work = tmp_path_factory.mktemp("as-install")
    (work / "add.ts").write_text(ADD_TS)
    (work / "add.toml").write_text(ADD_TOML)
    env = {**os.environ, "SQLWASM_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(
            lambda n: sqlwasm_build("add.ts", "--manifest", "add.toml", "-o", f"add{n}.wasm", cwd=work, env=env),
            range(2),
        ))
    print(f"\ncold AssemblyScript install + build: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    for run in runs:
        assert run.returncode == 0, run.stderr
    installs = [run for run in runs if "installing AssemblyScript" in run.stderr]
    assert len(installs) == 1, [run.stderr for run in runs]
    assert (work / "add0.wasm").read_bytes() == (work / "add1.wasm").read_bytes()
    leftovers = sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert leftovers == [f"assemblyscript-{asc.ASSEMBLYSCRIPT_VERSION}"]  # no staging directory left
    return Installed(cache, work / "add0.wasm")


@pytest.fixture
def with_toolchain(installed: Installed, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SQLWASM_CACHE_DIR", str(installed.cache))
    return installed.cache


@pytest.fixture(scope="session")
def probe_wasm(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("as-probe")
    (work / "probe.ts").write_text(PROBE_TS)
    (work / "probe.toml").write_text(PROBE_TOML)
    saved = os.environ["SQLWASM_CACHE_DIR"]
    os.environ["SQLWASM_CACHE_DIR"] = str(installed.cache)
    try:
        return build(work / "probe.ts", work / "probe.toml")
    finally:
        os.environ["SQLWASM_CACHE_DIR"] = saved


@pytest.fixture
def probe(probe_wasm: bytes) -> Iterator[apsw.Connection]:
    conn = sqlwasm.connect(":memory:", [probe_wasm], allow_unsigned=True)
    yield conn
    conn.close()


def one(conn: apsw.Connection, sql: str, *bindings: Any) -> Any:
    rows = conn.execute(sql, bindings).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


# ---------------------------------------------------------------- the toolchain


def test_built_module_imports_nothing_and_runs(installed: Installed) -> None:
    wasm = installed.add_wasm.read_bytes()
    module = sqlwasm.Runtime(allow_unsigned=True).load(wasm)
    assert module.name == "as_add"
    conn = sqlwasm.connect(":memory:", [wasm], allow_unsigned=True)
    assert one(conn, "SELECT as_add(?, ?)", 2**62, 2**62 - 1) == 2**63 - 1


def test_inspect_shows_no_imports(installed: Installed, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["inspect", str(installed.add_wasm)]) == 0
    out = capsys.readouterr().out
    assert "imports   none" in out and "add: func (i64, i64) -> (i64)" in out


def test_compile_error_names_the_file_and_says_what_asc_said(with_toolchain: Path, tmp_path: Path) -> None:
    source = tmp_path / "bad.ts"
    source.write_text("export function f(a: f64): f64 { return a + undefinedName; }\n")
    with pytest.raises(CompileError) as info:
        compile_source(source)
    assert info.value.summary.startswith(f"compiling {source} failed (asc exit status")
    assert "undefinedName" in info.value.diagnostics


def test_missing_source_is_an_error(with_toolchain: Path, tmp_path: Path) -> None:
    with pytest.raises(sqlwasm.Error, match="no such source file"):
        compile_source(tmp_path / "nothing.ts")


def test_no_node_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.ts").write_text(ADD_TS)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(sqlwasm.Error, match=r"`node` is not on PATH; install Node.js 20 or later and npm"):
        compile_source(tmp_path / "f.ts")


def test_no_npm_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    node = subprocess.run(["which", "node"], capture_output=True, text=True, check=True).stdout.strip()
    (bin_dir / "node").symlink_to(node)
    (tmp_path / "f.ts").write_text(ADD_TS)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("SQLWASM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(sqlwasm.Error, match=r"`npm` is not on PATH; install Node.js 20 or later and npm"):
        compile_source(tmp_path / "f.ts")


def test_failed_install_is_an_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.ts").write_text(ADD_TS)
    cache = tmp_path / "cache"
    killed = cache / f".assemblyscript-{asc.ASSEMBLYSCRIPT_VERSION}.tmp-killed" / "node_modules"
    killed.mkdir(parents=True)  # what an install killed half-way leaves: removed under the lock
    monkeypatch.setenv("SQLWASM_CACHE_DIR", str(cache))
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(sqlwasm.Error) as info:
        compile_source(tmp_path / "f.ts")
    message = str(info.value)
    assert message.startswith(f"installing AssemblyScript {asc.ASSEMBLYSCRIPT_VERSION} with npm failed (npm exit")
    assert "ECONNREFUSED" in message and "\n" not in message
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_no_cache_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.ts").write_text(ADD_TS)
    monkeypatch.setenv("SQLWASM_CACHE_DIR", "")
    with pytest.raises(sqlwasm.Error, match="SQLWASM_CACHE_DIR is empty"):
        compile_source(tmp_path / "f.ts")


def test_shared_cache_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.ts").write_text(ADD_TS)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # anyone could swap the compiler
    monkeypatch.setenv("SQLWASM_CACHE_DIR", str(cache))
    with pytest.raises(sqlwasm.Error, match=r"cannot install the AssemblyScript compiler into .*writable by group"):
        compile_source(tmp_path / "f.ts")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o777 and list(cache.iterdir()) == []


def test_installed_compiler_in_a_shared_directory_is_not_run(with_toolchain: Path, tmp_path: Path) -> None:
    (tmp_path / "f.ts").write_text(ADD_TS)
    installed_dir = with_toolchain / f"assemblyscript-{asc.ASSEMBLYSCRIPT_VERSION}"
    installed_dir.chmod(0o777)
    try:
        with pytest.raises(sqlwasm.Error, match=r"cannot use the AssemblyScript compiler in .*writable by group"):
            compile_source(tmp_path / "f.ts")
    finally:
        installed_dir.chmod(0o700)


# ---------------------------------------------------------------- the SDK


def test_probe_imports_nothing(probe_wasm: bytes) -> None:
    module = sqlwasm.Runtime(allow_unsigned=True).load(probe_wasm)
    assert module.name == "probe"


int64s = st.integers(-(2**63), 2**63 - 1)
reals = st.floats(allow_nan=False)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
blobs = st.binary(max_size=300)


@SETTINGS
@given(value=st.one_of(st.none(), int64s, reals, texts, blobs))
def test_echo_round_trips_every_type(probe: apsw.Connection, value: Any) -> None:
    got = one(probe, "SELECT probe_echo(?)", value)
    assert type(got) is type(value)
    assert got == value or (isinstance(value, float) and math.isnan(value) and math.isnan(got))


@pytest.mark.parametrize("size", [31, 32, 255, 256, 65535, 65536, 200_000])
def test_echo_long_values_cross_every_header_size(probe: apsw.Connection, size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    assert one(probe, "SELECT probe_echo(?)", text) == text
    blob = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert one(probe, "SELECT probe_echo(?)", blob) == blob


@SETTINGS
@given(value=st.one_of(int64s, st.floats(-1e300, 1e300)))
def test_real_accepts_integers_and_reals(probe: apsw.Connection, value: int | float) -> None:
    assert one(probe, "SELECT probe_real(?)", value) == float(value)


@SETTINGS
@given(value=st.one_of(int64s, st.integers(-(2**53), 2**53).map(float)))
def test_integer_accepts_integral_reals(probe: apsw.Connection, value: int | float) -> None:
    assert one(probe, "SELECT probe_int(?)", value) == int(value)


def test_argument_type_errors_name_the_argument(probe: apsw.Connection) -> None:
    assert one_error(probe, "SELECT probe_real('x')").endswith("probe.probe_real: argument 1 must be real, got text")
    assert one_error(probe, "SELECT probe_int(x'00')").endswith("probe.probe_int: argument 1 must be integer, got blob")
    assert one_error(probe, "SELECT probe_int(2.5)").endswith("probe.probe_int: argument 1 must be integer, got real")


def test_null_checks_keep_argument_numbers(probe: apsw.Connection) -> None:
    assert one(probe, "SELECT probe_nullable_sum(NULL, 2.5)") == "null 2.5"
    assert one(probe, "SELECT probe_nullable_sum(1, NULL)") == "null 1.0"
    assert one(probe, "SELECT probe_nullable_sum(1, 2)") == "3.0"
    message = one_error(probe, "SELECT probe_nullable_sum(NULL, 'x')")
    assert message.endswith("probe.probe_nullable_sum: argument 2 must be real, got text")
    message = one_error(probe, "SELECT probe_nullable_sum(x'01', NULL)")
    assert message.endswith("probe.probe_nullable_sum: argument 1 must be real, got blob")


@SETTINGS
@given(i=int64s, text=texts, blob=blobs)
def test_zero_copy_reads(probe: apsw.Connection, i: int, text: str, blob: bytes) -> None:
    assert one(probe, "SELECT probe_triple(?, ?, ?)", i, text, blob) == f"{i}|{text}|{len(blob)}"


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), int64s, reals, texts, blobs), max_size=40))
def test_varargs_count_and_skip(probe: apsw.Connection, values: list[Any]) -> None:
    marks = ", ".join("?" * len(values))
    assert one(probe, f"SELECT probe_count({marks})", *values) == len(values)


@SETTINGS
@given(message=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                       max_size=100))
def test_error_results_fail_the_call_with_the_text(probe: apsw.Connection, message: str) -> None:
    assert one_error(probe, "SELECT probe_fail(?)", message) == f"probe.probe_fail: {message}"


def test_assert_traps_without_importing_abort(probe: apsw.Connection) -> None:
    assert one(probe, "SELECT probe_div(7, 2)") == 3
    assert "probe.probe_div: trap" in one_error(probe, "SELECT probe_div(7, 0)")
    assert one(probe, "SELECT probe_div(9, 3)") == 3  # the instance still works


def test_aggregate_states_are_released(probe: apsw.Connection) -> None:
    probe.execute("CREATE TABLE t(g INTEGER, v INTEGER)")
    probe.executemany("INSERT INTO t VALUES (?, ?)", [(i % 7, i) for i in range(1000)])
    got = probe.execute("SELECT g, probe_total(v) FROM t GROUP BY g ORDER BY g").fetchall()
    assert got == [(g, sum(i for i in range(1000) if i % 7 == g)) for g in range(7)]
    assert one(probe, "SELECT probe_total(v) FROM t WHERE v < 0") == 0  # no rows: init, then final
    assert one(probe, "SELECT probe_live()") == 0


def test_table_function_rows_in_batches(probe: apsw.Connection) -> None:
    rows = probe.execute("SELECT value, label FROM probe_series(250)").fetchall()
    assert rows == [(k, f"row {k}") for k in range(250)]
    assert probe.execute("SELECT * FROM probe_series(3) LIMIT 1").fetchall() == [(0, "row 0")]
    assert probe.execute("SELECT count(*) FROM probe_series(0)").fetchall() == [(0,)]
    assert one(probe, "SELECT probe_live()") == 0  # every handle closed


class RawProbe:
    """The probe's echo export called directly, with any bytes as the row:
    what the host never sends, to check the SDK's reader bounds."""

    def __init__(self, wasm: bytes) -> None:
        self.store = wasmtime.Store()
        instance = wasmtime.Instance(self.store, wasmtime.Module(self.store.engine, wasm), [])
        exports = instance.exports(self.store)
        self.memory = exports["memory"]
        self.alloc = exports["sqlwasm_alloc"]
        self.echo = exports["echo"]
        exports["_initialize"](self.store)

    def call(self, row: bytes) -> bytes:
        ptr = self.alloc(self.store, max(len(row), 256))
        self.memory.write(self.store, row, ptr)
        packed = self.echo(self.store, ptr, len(row)) & (2**64 - 1)
        start, length = packed >> 32, packed & 0xFFFFFFFF
        return bytes(self.memory.read(self.store, start, start + length))


@pytest.fixture(scope="module")
def raw_probe(probe_wasm: bytes) -> RawProbe:
    return RawProbe(probe_wasm)


@SETTINGS
@given(row=st.one_of(st.binary(max_size=64), st.binary(max_size=60).map(lambda b: b"\x91" + b)))
def test_any_bytes_give_a_value_or_an_error_never_a_trap(raw_probe: RawProbe, row: bytes) -> None:
    result = msgpack.unpackb(raw_probe.call(row), raw=False)  # one whole value, valid UTF-8
    if isinstance(result, dict):
        assert list(result) == ["error"] and isinstance(result["error"], str)


@pytest.mark.parametrize(("row", "message"), [
    (b"", "expected array, got nothing"),
    (b"\x92\x01\x02", "expected 1 argument, got 2"),
    (b"\x91\xd9", "truncated msgpack input"),
    (b"\x91\xdb\xff\xff\xff\xfcabc", "truncated msgpack input"),  # header + length wraps 32 bits
    (b"\x91\xcf\xff\xff\xff\xff\xff\xff\xff\xff", "integer 18446744073709551615 is out of range"),
    (b"\x91\x80", "argument 1 must be blob, got map"),
])
def test_malformed_rows_are_error_results(raw_probe: RawProbe, row: bytes, message: str) -> None:
    assert msgpack.unpackb(raw_probe.call(row), raw=False) == {"error": message}


def test_per_row_allocations_are_freed(probe: apsw.Connection) -> None:
    # 5,000 rows x 40 KiB of string each: 200 MiB allocated in all, in a
    # module limited to 64 pages (4 MiB). It fits only if the runtime frees.
    total = one(probe, "SELECT sum(probe_repeat_len('0123456789', 2048 + value % 2)) "
                " FROM (WITH RECURSIVE c(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM c WHERE value < 5000)"
                " SELECT value FROM c)")
    assert total == 2500 * 20480 + 2500 * 20490


# ---------------------------------------------------------------- geo_as, the shipped example


@pytest.fixture(scope="module")
def geo_as() -> Iterator[apsw.Connection]:
    conn = shipped("geo_as")
    yield conn
    conn.close()


lats = st.floats(-90.0, 90.0)
lons = st.floats(-180.0, 180.0)


@SETTINGS
@given(lat1=lats, lon1=lons, lat2=lats, lon2=lons)
def test_haversine_matches_reference(geo_as: apsw.Connection, lat1: float, lon1: float, lat2: float,
                                     lon2: float) -> None:
    got = one(geo_as, "SELECT geo_as_haversine(?, ?, ?, ?)", lat1, lon1, lat2, lon2)
    assert math.isclose(got, ref.geo_haversine(lat1, lon1, lat2, lon2), rel_tol=1e-9, abs_tol=1e-9)


def test_haversine_known_value(geo_as: apsw.Connection) -> None:
    assert round(one(geo_as, "SELECT geo_as_haversine(51.5074, -0.1278, 48.8566, 2.3522)")) == 344
    assert one(geo_as, "SELECT geo_as_haversine(NULL, 0, 0, 0)") is None


points = st.lists(st.tuples(lats, lons), max_size=50)


@SETTINGS
@given(path=points)
def test_path_km_matches_reference(geo_as: apsw.Connection, path: list[tuple[float, float]]) -> None:
    blob = b"".join(struct.pack("<dd", lat, lon) for lat, lon in path)
    want = sum(ref.geo_haversine(*a, *b) for a, b in zip(path, path[1:]))
    assert math.isclose(one(geo_as, "SELECT geo_as_path_km(?)", blob), want, rel_tol=1e-9, abs_tol=1e-9)


def test_path_km_refuses_a_partial_pair(geo_as: apsw.Connection) -> None:
    message = one_error(geo_as, "SELECT geo_as_path_km(?)", bytes(24))
    assert message.endswith("geo_as.geo_as_path_km: points: 24 bytes is not a whole number of (lat, lon) pairs of reals")


def centroid(path: list[tuple[float, float]]) -> tuple[float, float]:
    """The reference: the direction of the sum of the unit vectors."""
    x = y = z = 0.0
    for lat, lon in path:
        phi, lam = math.radians(lat), math.radians(lon)
        x += math.cos(phi) * math.cos(lam)
        y += math.cos(phi) * math.sin(lam)
        z += math.sin(phi)
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


def parse_point(text: str) -> tuple[float, float]:
    assert text.startswith("[") and text.endswith("]"), text
    lat, lon = text[1:-1].split(",")
    return float(lat), float(lon)


# Points of one hemisphere (|lon| <= 60): their unit vectors never cancel,
# so the centroid is well-conditioned and comparable to 1e-9 degrees.
near = st.lists(st.tuples(st.floats(-80.0, 80.0), st.floats(-60.0, 60.0)), min_size=1, max_size=30)


@SETTINGS
@given(path=near)
def test_centroid_matches_reference(geo_as: apsw.Connection, path: list[tuple[float, float]]) -> None:
    geo_as.execute("DROP TABLE IF EXISTS p; CREATE TABLE p(i INTEGER PRIMARY KEY, lat REAL, lon REAL)")
    geo_as.executemany("INSERT INTO p(lat, lon) VALUES (?, ?)", path)
    got = parse_point(one(geo_as, "SELECT geo_as_centroid(lat, lon) FROM p"))
    want = centroid(path)
    assert math.isclose(got[0], want[0], abs_tol=1e-9) and math.isclose(got[1], want[1], abs_tol=1e-9)
    window = geo_as.execute(
        "SELECT geo_as_centroid(lat, lon) OVER (ORDER BY i ROWS 2 PRECEDING) FROM p ORDER BY i").fetchall()
    for k, (text,) in enumerate(window):
        got = parse_point(text)
        want = centroid(path[max(0, k - 2):k + 1])
        assert math.isclose(got[0], want[0], abs_tol=1e-7) and math.isclose(got[1], want[1], abs_tol=1e-7)


def test_centroid_of_nothing_or_of_antipodes_is_null(geo_as: apsw.Connection) -> None:
    assert one(geo_as, "SELECT geo_as_centroid(lat, lon) FROM (SELECT 1.0 AS lat, 2.0 AS lon) WHERE lat > 5") is None
    assert one(geo_as, "SELECT geo_as_centroid(lat, lon) FROM (SELECT 10.0 AS lat, 20.0 AS lon "
                       "UNION ALL SELECT -10.0, -160.0)") is None
    assert one(geo_as, "SELECT geo_as_centroid(lat, lon) FROM (SELECT 0.0 AS lat, 0.0 AS lon)") == "[0.0,0.0]"
