"""`sqlwasm build` with real zig-built guests: the import check before
signing, several sources, C++, -D/-I/--cflag, and the SDK's
SQLWASM_RAW_STEP (a raw aggregate's step and step_batch from one function).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import _cli
from sqlwasm._build import build
from sqlwasm._capabilities import HOST_IMPORTS, WASI, HostImport
from sqlwasm._errors import CapabilityError, Error
from sqlwasm._signing import generate_keypair

SCALAR_TOML = """\
sqlwasm = 1
name = "b"
version = "1.0.0"
{capabilities}
[[functions]]
name = "b_f"
abi = "raw"
args = ["integer"]
returns = "integer"
export = "f"
"""


def scalar_guest(tmp_path: Path, body: str, *, capabilities: str = "", headers: str = "") -> tuple[Path, Path]:
    """b_f(x) = body (C, with x in scope) as f.c, and its manifest."""
    source = tmp_path / "f.c"
    source.write_text(
        f"#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\n{headers}\n"
        f'__attribute__((export_name("f"))) int64_t f(int64_t x) {{ {body} }}\n'
    )
    toml = tmp_path / "f.toml"
    toml.write_text(SCALAR_TOML.format(capabilities=capabilities))
    return source, toml


def import_error(tmp_path: Path, body: str, **options: str) -> str:
    source, toml = scalar_guest(tmp_path, body, **options)
    with pytest.raises(CapabilityError) as info:
        build(source, toml)
    return str(info.value)


@pytest.mark.parametrize(
    ("body", "imports", "libc"),
    [
        ('printf("%d", (int)x); return x;', ["fd_write", "fd_seek", "fd_close"], "printf"),
        ('return getenv("HOME") != NULL;', ["environ_get", "environ_sizes_get"], "getenv"),
        ("if (x) exit(3); return x;", ["proc_exit"], "exit"),
        ('return fopen("/etc/passwd", "r") != NULL;', ["path_open"], "fopen"),
    ],
    ids=["printf", "getenv", "exit", "fopen"],
)
def test_an_import_no_capability_provides_is_named_with_the_libc_call(
    tmp_path: Path, body: str, imports: list[str], libc: str
) -> None:
    """What each import needs comes from the registry: none of these is
    declared, so each is 'no capability provides' or 'declare it'."""
    message = import_error(tmp_path, body)
    assert message.startswith("module 'b' imports wasi_snapshot_preview1.")
    assert libc in message
    for name in imports:
        assert name in message
        provider = HOST_IMPORTS.get((WASI, name))
        if provider is None:
            assert "which no capability provides" in message
        else:
            assert f"which capability '{provider.capability}' provides: declare it" in message


def test_an_import_of_an_undeclared_capability_says_to_declare_it(tmp_path: Path) -> None:
    message = import_error(tmp_path, "return x + (int64_t)time(NULL);")
    assert "wasi_snapshot_preview1.clock_time_get" in message
    assert "time()" in message
    assert "capability 'clock' provides: declare it in the manifest (capabilities = [\"clock\"])" in message


def test_the_same_guest_with_the_capability_declared_builds_and_runs(tmp_path: Path) -> None:
    source, toml = scalar_guest(tmp_path, "return x + (int64_t)time(NULL);", capabilities='capabilities = ["clock"]')
    conn = sqlwasm.connect(":memory:", [build(source, toml)], allow_unsigned=True, grant=["clock"])
    [(now,)] = conn.execute("SELECT b_f(0)").fetchall()
    assert isinstance(now, int) and abs(now - time.time()) < 60
    conn.close()


def test_random_get_needs_capability_random(tmp_path: Path) -> None:
    message = import_error(tmp_path, "uint64_t r; arc4random_buf(&r, sizeof r); return (int64_t)(r >> 1);")
    assert "random_get" in message and "capability 'random' provides" in message


def test_the_check_follows_the_capability_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import becomes 'declare it' as soon as a capability in
    sqlwasm._capabilities.HOST_IMPORTS provides it (no list of our own)."""
    signature = ((("i32", "i32", "i32", "i32"), ("i32",)),)
    monkeypatch.setitem(HOST_IMPORTS, (WASI, "fd_write"), HostImport("log", signature))
    message = import_error(tmp_path, 'puts("hi"); return x;')
    assert "wasi_snapshot_preview1.fd_write (usually from stdio: printf, puts" in message
    assert "which capability 'log' provides: declare it" in message
    assert "fd_close, fd_fdstat_get, fd_seek (usually from stdio" in message  # the rest: grouped apart


def test_an_import_of_the_wrong_type_names_the_right_one(tmp_path: Path) -> None:
    headers = (
        '__attribute__((import_module("wasi_snapshot_preview1"), import_name("clock_time_get")))\n'
        "int32_t clock_wrong(int32_t id);"
    )
    message = import_error(tmp_path, "return clock_wrong((int32_t)x);", headers=headers, capabilities='capabilities = ["clock"]')
    assert "imports wasi_snapshot_preview1.clock_time_get (usually from time()" in message
    assert "with the wrong type (capability 'clock' provides (i32, i64, i32) -> (i32))" in message


def test_an_import_of_another_module_is_named(tmp_path: Path) -> None:
    headers = '__attribute__((import_module("env"), import_name("host_add"))) int64_t host_add(int64_t);'
    message = import_error(tmp_path, "return host_add(x);", headers=headers)
    assert "imports env.host_add, which no capability provides" in message


def test_a_refused_build_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, toml = scalar_guest(tmp_path, 'printf("%d", (int)x); return x;')
    out = tmp_path / "f.wasm"
    assert _cli.main(["build", str(source), "--manifest", str(toml), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sqlwasm: error: module 'b' imports") and "printf" in err
    assert not out.exists()


# ------------------------------------------------ several sources and flags

MULTI_TOML = """\
sqlwasm = 1
name = "m"
version = "1.0.0"
[[functions]]
name = "m_f"
abi = "raw"
args = ["integer"]
returns = "integer"
export = "f"
"""


def test_several_sources_with_defines_and_include_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "scale.h").write_text("#include <stdint.h>\nint64_t scale(int64_t x);\n")
    (tmp_path / "scale.c").write_text('#include "scale.h"\nint64_t scale(int64_t x) { return x * FACTOR; }\n')
    (tmp_path / "main.c").write_text(
        '#include "sqlwasm.h"\n#include "scale.h"\n'
        "SQLWASM_EXPORT(f) int64_t f(int64_t x) { return scale(x) + OFFSET; }\n"
    )
    (tmp_path / "m.toml").write_text(MULTI_TOML)
    out = tmp_path / "m.wasm"
    argv = [
        "build", str(tmp_path / "main.c"), str(tmp_path / "scale.c"), "--manifest", str(tmp_path / "m.toml"),
        "-o", str(out), "-DFACTOR=3", "-D", "OFFSET=4", "-I", str(tmp_path / "inc"), "--cflag=-O3",
    ]
    assert _cli.main(argv) == 0, capsys.readouterr().err
    conn = sqlwasm.connect(":memory:", [out], allow_unsigned=True)
    assert conn.execute("SELECT m_f(5)").fetchall() == [(19,)]
    conn.close()


def test_a_flag_reaches_the_compiler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "main.c").write_text("#ifndef NEEDED\n#error NEEDED is not defined\n#endif\n")
    (tmp_path / "m.toml").write_text(MULTI_TOML)
    argv = ["build", str(tmp_path / "main.c"), "--manifest", str(tmp_path / "m.toml"), "-o", str(tmp_path / "m.wasm")]
    assert _cli.main(argv) == 1
    assert "NEEDED is not defined" in capsys.readouterr().err
    with pytest.raises(Error, match="export 'f' is missing"):  # defined, it compiles (and exports nothing)
        build(tmp_path / "main.c", tmp_path / "m.toml", cflags=("-DNEEDED",))


def test_compiler_warnings_are_shown_when_the_build_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "main.c").write_text(
        '#include "sqlwasm.h"\nSQLWASM_EXPORT(f) int64_t f(int64_t x) { int unused_here; return x; }\n'
    )
    (tmp_path / "m.toml").write_text(MULTI_TOML)
    out = tmp_path / "m.wasm"
    argv = ["build", str(tmp_path / "main.c"), "--manifest", str(tmp_path / "m.toml"), "-o", str(out), "--cflag=-Wall"]
    assert _cli.main(argv) == 0
    assert "unused variable 'unused_here'" in capsys.readouterr().err
    assert out.exists()


def test_sources_of_different_languages_are_refused(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(MULTI_TOML)
    with pytest.raises(Error, match="no toolchain for '.rs' sources"):
        build([tmp_path / "a.c", tmp_path / "b.rs"], tmp_path / "m.toml")
    with pytest.raises(Error, match="no source files"):
        build([], tmp_path / "m.toml")


def test_a_cxx_guest_with_the_standard_library_and_a_c_source(tmp_path: Path) -> None:
    """zig c++ with -fno-exceptions; the SDK routes libc++'s abort message
    to a trap, so std::string and std::sort need no import. The .c source
    stays C (its symbol is unmangled, which the extern "C" needs)."""
    (tmp_path / "sorted.cpp").write_text(
        "#include <algorithm>\n#include <string>\n#include \"sqlwasm.h\"\n"
        'extern "C" uint32_t keep(uint32_t n);\n'
        "SQLWASM_EXPORT(sorted) int64_t sorted(const uint8_t *row, uint32_t len) {\n"
        "    sqlwasm_arg a[1];\n    int64_t err;\n"
        '    if (!sqlwasm_read_args(row, len, "t", a, &err)) return err;\n'
        "    std::string s(a[0].text, a[0].len);\n    std::sort(s.begin(), s.end());\n"
        "    return sqlwasm_return_text(s.data(), keep((uint32_t)s.size()));\n}\n"
    )
    # `new` is a C++ keyword: this file fails to compile as C++
    (tmp_path / "keep.c").write_text("#include <stdint.h>\nuint32_t keep(uint32_t new) { return new - 1; }\n")
    (tmp_path / "s.toml").write_text(
        'sqlwasm = 1\nname = "s"\nversion = "1.0.0"\n[[functions]]\nname = "s_sorted"\nabi = "msgpack"\n'
        'args = ["text"]\nreturns = "text"\nexport = "sorted"\n'
    )
    module = build([tmp_path / "sorted.cpp", tmp_path / "keep.c"], tmp_path / "s.toml")
    conn = sqlwasm.connect(":memory:", [module], allow_unsigned=True)
    assert conn.execute("SELECT s_sorted('sqlwasm')").fetchall() == [("almqss",)]
    conn.close()


# ------------------------------------------------ SQLWASM_RAW_STEP

WSUM_C = """\
#include <math.h>
#include "sqlwasm.h"
/* wsum(x, w): sum of x * w; the state is a slot of the SDK's handle table */
typedef struct { double total; int64_t rows; } wsum_state;
SQLWASM_EXPORT(wsum_init) int32_t wsum_init(void) {
    wsum_state *s = calloc(1, sizeof *s);
    return s ? sqlwasm_handle_new(s) : -1;
}
static inline void wsum_add(int32_t h, double x, int64_t w) {
    wsum_state *s = sqlwasm_handle_get(h);
    s->total += x * (double)w;
    s->rows++;
}
SQLWASM_RAW_STEP(wsum_step, wsum_step_batch, wsum_add, double, int64_t)
SQLWASM_EXPORT(wsum_final) double wsum_final(int32_t h) {
    wsum_state *s = sqlwasm_handle_release(h);
    double total = s && s->rows ? s->total : NAN;
    free(s);
    return total;
}
"""

WSUM_TOML = """\
sqlwasm = 1
name = "w"
version = "1.0.0"
[[functions]]
name = "w_sum"
kind = "aggregate"
abi = "raw"
args = ["real", "integer"]
returns = "real"
exports = { init = "wsum_init", step = "wsum_step", step_batch = "wsum_step_batch", final = "wsum_final" }
"""


@pytest.fixture(scope="module")
def wsum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apsw.Connection]:
    tmp = tmp_path_factory.mktemp("wsum")
    (tmp / "wsum.c").write_text(WSUM_C)
    (tmp / "wsum.toml").write_text(WSUM_TOML)
    key, pub = generate_keypair("wsum", tmp)
    conn = sqlwasm.connect(":memory:", [build(tmp / "wsum.c", tmp / "wsum.toml", key=key)], trusted_keys=[pub])
    conn.execute("CREATE TABLE t(g INTEGER, x REAL, w INTEGER)")
    yield conn
    conn.close()


def test_raw_step_exports_step_and_step_batch(wsum: apsw.Connection) -> None:
    # 1000 rows: three full batches of 256 and a partial one; two groups
    wsum.execute("DELETE FROM t")
    wsum.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i % 2, i / 4, i % 7) for i in range(1000)])
    got = {g: total for g, total in wsum.execute("SELECT g, w_sum(x, w) FROM t GROUP BY g").fetchall()}
    for g in (0, 1):
        expected = math.fsum(i / 4 * (i % 7) for i in range(1000) if i % 2 == g)
        assert got[g] == pytest.approx(expected, rel=1e-12)
    assert wsum.execute("SELECT w_sum(x, w) FROM t WHERE 0").fetchall() == [(None,)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-(2**31), 2**31)),
        max_size=600,
    )
)
def test_raw_step_batches_carry_every_row_exactly(wsum: apsw.Connection, rows: list[tuple[float, int]]) -> None:
    """Each row's two 8-byte values reach wsum_add in order: the batched sum
    equals the same left-to-right sum in Python (doubles, same order)."""
    wsum.execute("DELETE FROM t")
    wsum.executemany("INSERT INTO t VALUES (0, ?, ?)", rows)
    total = 0.0
    for x, w in rows:
        total += x * float(w)
    [(got,)] = wsum.execute("SELECT w_sum(x, w) FROM (SELECT x, w FROM t ORDER BY rowid)").fetchall()
    assert got == (total if rows else None)
