"""Building native/: SQLite's ABI as native/ declares it (sqlite_abi.h,
sqlite_routines.h) checked against a real sqlite3ext.h, and a build with
neither a system C compiler nor SQLite's headers (zig cc, native/compiler.py)
whose module then runs real queries."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest
from geo_reference import geo_haversine

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
LAST_3_40_ROUTINE = "int (*value_encoding)(sqlite3_value*);"
# What SQLite 3.41 to 3.44 appended after it, in order.
NEWER_ROUTINES = [
    "int (*is_interrupted)(sqlite3*);",
    "int (*stmt_explain)(sqlite3_stmt*,int);",
    "void *(*get_clientdata)(sqlite3*,const char*);",
    "int (*set_clientdata)(sqlite3*, const char*, void*, void(*)(void*));",
]
# The structs sqlite_abi.h declares; the two SQLite allocates or reads by
# version may be a prefix of the header's (later fields are not used).
STRUCTS = {
    "sqlite3_vtab", "sqlite3_vtab_cursor", "sqlite3_index_constraint", "sqlite3_index_orderby",
    "sqlite3_index_constraint_usage", "sqlite3_index_info", "sqlite3_module",
}
PREFIX_STRUCTS = {"sqlite3_index_info", "sqlite3_module"}

# Every routine's slot and signature, against whichever sqlite3ext.h is on the include path.
ROUTINE_CHECK = r"""
#include <stddef.h>
#include <sqlite3ext.h>
#include "sqlite_routines.h"
typedef void (*any_routine)(void);
#define SAME_AS_HEADER(slot, name, ret, params)                                                          \
    _Static_assert(offsetof(sqlite3_api_routines, name) == (slot) * sizeof(any_routine),                  \
                   #name ": this header has it at another slot than " #slot);                            \
    _Static_assert(__builtin_types_compatible_p(__typeof__(((sqlite3_api_routines *)0)->name), ret(*) params), \
                   #name ": this header's signature differs");
#define AFTER_HEADER(slot, name, ret, params)                                                            \
    _Static_assert((slot) * sizeof(any_routine) >= sizeof(sqlite3_api_routines),                         \
                   #name ": slot " #slot " is inside this older header's table");
SW_SQLITE_ROUTINES(SAME_AS_HEADER)
#if SQLITE_VERSION_NUMBER >= 3041000
SW_SQLITE_ROUTINES_3_41(SAME_AS_HEADER)
#else
SW_SQLITE_ROUTINES_3_41(AFTER_HEADER)
#endif
#if SQLITE_VERSION_NUMBER >= 3040000 && SQLITE_VERSION_NUMBER < 3041000
_Static_assert(266 * sizeof(any_routine) == sizeof(sqlite3_api_routines), "is_interrupted: 3.41 appended it first");
#endif
"""


def system_header() -> Path:
    deps = subprocess.run(["gcc", "-M", "-xc", "-"], input="#include <sqlite3ext.h>\n", capture_output=True, text=True, check=True)
    found = re.search(r"(\S*sqlite3ext\.h)", deps.stdout)
    assert found, deps.stdout
    return Path(found.group(1))


def check_routines(tmp_path: Path, include: Path) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "routine_check.c"
    program.write_text(ROUTINE_CHECK)
    return subprocess.run(["gcc", "-fsyntax-only", "-std=gnu11", f"-I{include}", f"-I{NATIVE}", str(program)],
                          capture_output=True, text=True)


def doctored_header(tmp_path: Path, replace: str, by: str, version: int | None = None) -> Path:
    """A copy of the system's sqlite3ext.h with one edit, and a sqlite3.h that claims `version`."""
    headers = tmp_path / "headers"
    headers.mkdir()
    text = system_header().read_text()
    assert replace in text, f"the system header has no {replace!r}"
    (headers / "sqlite3ext.h").write_text(text.replace(replace, by))
    claim = f"#undef SQLITE_VERSION_NUMBER\n#define SQLITE_VERSION_NUMBER {version}\n" if version else ""
    (headers / "sqlite3.h").write_text(f"#include_next <sqlite3.h>\n{claim}")
    return headers


def test_routines_match_the_system_header(tmp_path: Path) -> None:
    done = check_routines(tmp_path, tmp_path)  # nothing in tmp_path: the system headers
    assert done.returncode == 0, done.stderr


def test_routines_match_a_newer_header(tmp_path: Path) -> None:
    """Where is_interrupted really is, and its signature (the system header is 3.40's)."""
    headers = doctored_header(tmp_path, LAST_3_40_ROUTINE, "\n".join([LAST_3_40_ROUTINE, *NEWER_ROUTINES]), 3044000)
    done = check_routines(tmp_path, headers)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("replace", "by", "version", "named"),
    [
        (LAST_3_40_ROUTINE, "\n".join([LAST_3_40_ROUTINE, "int (*added_before)(void);", *NEWER_ROUTINES]), 3044000, "is_interrupted"),
        (LAST_3_40_ROUTINE, "\n".join([LAST_3_40_ROUTINE, *NEWER_ROUTINES[1:]]), 3044000, "is_interrupted"),
        ("void * (*aggregate_context)", "int (*added_first)(void);\n  void * (*aggregate_context)", None, "aggregate_context"),
        ("int  (*libversion_number)(void);", "int  (*libversion_number)(int);", None, "libversion_number"),
        ("void  (*result_int64)(sqlite3_context*,sqlite_int64);", "void  (*result_int64)(sqlite3_context*,int);", None, "result_int64"),
    ],
    ids=["shifted", "missing", "first-slot-moved", "parameter-differs", "integer-width-differs"],
)
def test_a_header_that_disagrees_fails_the_check(tmp_path: Path, replace: str, by: str, version: int | None, named: str) -> None:
    done = check_routines(tmp_path, doctored_header(tmp_path, replace, by, version))
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


def declared_structs(header: str) -> dict[str, list[str]]:
    """Each `struct sqlite3_* { ... };` in the header, with its members' names in order."""
    code = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    structs = {}
    for name, body in re.findall(r"struct (sqlite3_\w+) \{(.*?)\};", code, flags=re.S):
        members = []
        for declaration in body.split(";")[:-1]:
            pointer = re.search(r"\(\s*\*\s*(\w+)\s*\)", declaration)
            members.append(pointer.group(1) if pointer else re.findall(r"\w+", declaration)[-1])
        structs[name] = members
    return structs


def layout_program(header: str) -> str:
    """C that prints every constant, struct size and member offset the header declares."""
    constants = re.findall(r"^#define (SQLITE_\w+)", header, flags=re.M)
    structs = declared_structs(header)
    assert len(constants) > 20 and set(structs) == STRUCTS, (constants, structs)
    lines = [f'printf("{c} %lld\\n", (long long)(intptr_t)({c}));' for c in constants]
    for struct, members in structs.items():
        lines.append(f'printf("sizeof {struct} %zu\\n", sizeof(struct {struct}));')
        lines += [f'printf("{struct}.{m} %zu\\n", offsetof(struct {struct}, {m}));' for m in members]
    for integer in ("sqlite3_int64", "sqlite3_uint64"):
        lines.append(f'printf("sizeof {integer} %zu\\n", sizeof({integer}));')
        lines.append(f'printf("signed {integer} %d\\n", ({integer})-1 < 0);')
    body = "\n    ".join(lines)
    return f"#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\nint main(void)\n{{\n    {body}\n    return 0;\n}}\n"


def run_layout(tmp_path: Path, program: Path, header: str) -> dict[str, str]:
    binary = tmp_path / f"layout_{Path(header).stem}"
    subprocess.run(["gcc", "-std=gnu11", f"-I{NATIVE}", "-include", header, str(program), "-o", str(binary)], check=True)
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


def test_constants_and_struct_layouts_match_the_system_header(tmp_path: Path) -> None:
    program = tmp_path / "layout.c"
    program.write_text(layout_program((NATIVE / "sqlite_abi.h").read_text()))
    ours = run_layout(tmp_path, program, "sqlite_abi.h")
    sqlites = run_layout(tmp_path, program, "sqlite3ext.h")
    assert ours.keys() == sqlites.keys()
    sizes = {f"sizeof {s}" for s in PREFIX_STRUCTS}
    assert {k: v for k, v in ours.items() if k not in sizes} == {k: v for k, v in sqlites.items() if k not in sizes}
    for size in sizes:
        assert int(ours[size]) <= int(sqlites[size]), size


def load_compiler_choice() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sqlwasm_native_compiler", NATIVE / "compiler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_platform_compiler_unless_missing_or_zig_is_asked_for(tmp_path: Path) -> None:
    choice = load_compiler_choice()
    gcc_dir = str(Path(shutil.which("gcc") or "gcc").parent)
    assert choice.wants_zig("gcc", {"PATH": gcc_dir}) is False
    assert choice.wants_zig("gcc", {"PATH": str(tmp_path)}) is True
    assert choice.wants_zig("gcc", {"PATH": gcc_dir, "SQLWASM_NATIVE_CC": "zig"}) is True
    with pytest.raises(choice.CompilerChoiceError, match="SQLWASM_NATIVE_CC='clang'"):
        choice.wants_zig("gcc", {"PATH": gcc_dir, "SQLWASM_NATIVE_CC": "clang"})


# Variables through which a compiler could be named, or a system include directory added.
COMPILER_VARIABLES = ("CC", "CFLAGS", "CPPFLAGS", "LDSHARED", "LDFLAGS", "CPATH", "C_INCLUDE_PATH", "SQLWASM_NATIVE_CC")

QUERIES = """
import sqlite3, sqlwasm
from sqlwasm import _sqlwasm_native
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path
print(_sqlwasm_native.__file__)
conn = sqlwasm.connect(':memory:', [module_path('geo')], trusted_keys=[EXAMPLES_PUBLIC_KEY])
print(conn.execute("SELECT geo_haversine(51.5, -0.12, 48.86, 2.35)").fetchone()[0])
print(conn.execute("SELECT count(*) FROM geo_grid(0, 0, 1, 1, 0.5)").fetchone()[0])  # 3 x 3 cells
print(conn.execute("SELECT count(*) > 0 FROM sqlwasm_functions WHERE module = 'geo'").fetchone()[0])
stdlib = sqlite3.connect(':memory:')
sqlwasm.install(stdlib, [module_path('geo')], trusted_keys=[EXAMPLES_PUBLIC_KEY])
print(stdlib.execute("SELECT geo_haversine(51.5, -0.12, 48.86, 2.35)").fetchone()[0])
"""


def test_builds_with_zig_without_a_c_compiler_or_sqlite_headers_and_runs(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # PATH: python, and nothing that compiles C
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for tool in ("gcc", "cc", "clang"):
        assert shutil.which(tool, path=str(bin_dir)) is None
    env = {k: v for k, v in os.environ.items() if k not in COMPILER_VARIABLES} | {"PATH": str(bin_dir)}

    # zig, as native/compiler.py runs it, cannot see the system's sqlite3ext.h.
    probe = subprocess.run([*load_compiler_choice().zig_cc(), "-E", "-xc", "-"], input="#include <sqlite3ext.h>\n",
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert probe.returncode != 0 and "'sqlite3ext.h' file not found" in probe.stderr, probe.stderr

    # The project as an installer sees it, without sqlwasm/ (build_ext needs only the native part).
    source = tmp_path / "source"
    shutil.copytree(NATIVE, source / "native", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    started = time.monotonic()
    built = subprocess.run([sys.executable, "setup.py", "build_ext", "-b", str(tmp_path / "out"), "-t", str(tmp_path / "tmp")],
                           capture_output=True, text=True, env=env, cwd=source)
    seconds = time.monotonic() - started
    assert built.returncode == 0, built.stderr[-3000:]
    assert "compiling the native part with" in built.stderr and "ziglang cc -target" in built.stderr, built.stderr
    print(f"zig build of the native part: {seconds:.1f} s")
    [module] = (tmp_path / "out" / "sqlwasm").glob("_sqlwasm_native*.so")

    # sqlwasm with that module (and no other) ahead of any installed copy.
    package = tmp_path / "package" / "sqlwasm"
    shutil.copytree(ROOT / "sqlwasm", package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copytree(ROOT / "extensions", package / "extensions", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(module, package / module.name)
    ran = subprocess.run([sys.executable, "-c", textwrap.dedent(QUERIES)], capture_output=True, text=True,
                         env=env | {"PYTHONPATH": str(package.parent)}, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    path, apsw_km, cells, listed, stdlib_km = ran.stdout.split()
    assert path == str(package / module.name)
    km = geo_haversine(51.5, -0.12, 48.86, 2.35)
    assert float(apsw_km) == pytest.approx(km) and float(stdlib_km) == pytest.approx(km)
    assert (cells, listed) == ("9", "1")
