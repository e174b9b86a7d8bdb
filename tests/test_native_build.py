"""native/ against other SQLite headers: sqlite3_is_interrupted is found in
the routines table by its index, checked at compile time against whichever
sqlite3ext.h the build uses (the routines table only grows at its end)."""

from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parent.parent / "native"
LAST_3_40_ROUTINE = "int (*value_encoding)(sqlite3_value*);"
# What SQLite 3.41 to 3.44 appended after it, in order.
NEWER_ROUTINES = [
    "int (*is_interrupted)(sqlite3*);",
    "int (*stmt_explain)(sqlite3_stmt*,int);",
    "void *(*get_clientdata)(sqlite3*,const char*);",
    "int (*set_clientdata)(sqlite3*, const char*, void*, void(*)(void*));",
]


def system_header() -> Path:
    deps = subprocess.run(["gcc", "-M", "-xc", "-"], input="#include <sqlite3ext.h>\n", capture_output=True, text=True, check=True)
    found = re.search(r"(\S*sqlite3ext\.h)", deps.stdout)
    assert found, deps.stdout
    return Path(found.group(1))


def compile_native(include: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gcc", "-fsyntax-only", "-std=gnu11", f"-I{include}", f"-I{NATIVE}", f"-I{sysconfig.get_paths()['include']}",
         str(NATIVE / "sqlwasm_native.c")],
        capture_output=True,
        text=True,
    )


def newer_header(tmp_path: Path, routines: list[str], version: int) -> Path:
    """A sqlite3ext.h with the routines appended, and a sqlite3.h that claims `version`."""
    text = system_header().read_text()
    assert LAST_3_40_ROUTINE in text, "the system header is not SQLite 3.40's"
    (tmp_path / "sqlite3ext.h").write_text(text.replace(LAST_3_40_ROUTINE, LAST_3_40_ROUTINE + "\n" + "\n".join(routines)))
    (tmp_path / "sqlite3.h").write_text(
        f"#include_next <sqlite3.h>\n#undef SQLITE_VERSION_NUMBER\n#define SQLITE_VERSION_NUMBER {version}\n"
    )
    return tmp_path


def test_builds_against_the_system_header(tmp_path: Path) -> None:
    done = compile_native(tmp_path)  # nothing in tmp_path: the system headers
    assert done.returncode == 0, done.stderr


def test_builds_against_a_newer_header(tmp_path: Path) -> None:
    done = compile_native(newer_header(tmp_path, NEWER_ROUTINES, 3044000))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "routines",
    [["int (*added_before)(void);"] + NEWER_ROUTINES, NEWER_ROUTINES[1:]],
    ids=["shifted", "missing"],
)
def test_a_header_where_the_index_is_wrong_does_not_build(tmp_path: Path, routines: list[str]) -> None:
    done = compile_native(newer_header(tmp_path, routines, 3044000))
    assert done.returncode != 0
    assert "is_interrupted" in done.stderr, done.stderr


def test_every_routine_native_calls_is_linked_for_hosts_without_load_extension() -> None:
    """sw_link_routines (native/sqlite_api.c) builds a routines table by name
    for the stdlib's SQLite; a routine the code calls but the table lacks
    would be a NULL call there."""
    sources = "".join(path.read_text() for path in sorted(NATIVE.glob("*.c")))
    called = set(re.findall(r"\bapi->(\w+)\(", sources)) | set(re.findall(r"\]->(\w+)\(", sources))
    linked = set(re.findall(r"SW_LINK\((\w+)\)", (NATIVE / "sqlite_api.c").read_text()))
    assert called, "no routine calls found: the pattern is stale"
    assert called - linked == set()
