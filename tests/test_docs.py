"""The examples in README.md and docs/*.md are checked: Python blocks run
(they hold their own asserts), TOML blocks are valid manifests. Shell blocks
(```sh, ```sql, indented commands) are not run."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sqlwasm._manifest import parse_manifest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[Any]:
    """pytest params (file, n, code) for every fenced block in `language`."""
    found = []
    for path in DOCUMENTS:
        n = 0
        for match in FENCE.finditer(path.read_text(encoding="utf-8")):
            if match.group(1).lower() == language:
                n += 1
                line = path.read_text(encoding="utf-8")[: match.start()].count("\n") + 1
                found.append(pytest.param(path, line, match.group(2), id=f"{path.relative_to(REPO)}:{line}"))
    return found


PYTHON_BLOCKS = blocks("python")
TOML_BLOCKS = blocks("toml")


def test_the_readme_has_a_python_example() -> None:
    assert any(param.values[0].name == "README.md" for param in PYTHON_BLOCKS)


def test_fences_are_balanced() -> None:
    for path in DOCUMENTS:
        fences = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, path


@pytest.mark.parametrize("path, line, code", PYTHON_BLOCKS)
def test_python_block_runs(path: Path, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
    for value in namespace.values():  # close what the example opened
        close = getattr(value, "close", None)
        if type(value).__name__ == "Connection" and callable(close):
            close()


@pytest.mark.parametrize("path, line, code", [p for p in PYTHON_BLOCKS if p.values[0].name == "README.md"][:1])
def test_readme_example_as_a_program(path: Path, line: int, code: str, tmp_path: Path) -> None:
    """The README example as a user runs it: a script that must exit 0.
    Started several times at once because a crash on the way out depends on
    timing."""
    script = tmp_path / "example.py"
    script.write_text(code + "\nprint('done')\n", encoding="utf-8")
    procs = [
        subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    results = [(proc.wait(timeout=120), proc.communicate()) for proc in procs]
    for _, (out, err) in results:
        assert out == "done\n", err
    assert [status for status, _ in results] == [0] * len(results)


@pytest.mark.parametrize("path, line, code", TOML_BLOCKS)
def test_toml_block_is_a_valid_manifest(path: Path, line: int, code: str) -> None:
    obj = tomllib.loads(code)
    if "sqlwasm" not in obj:  # a fragment: one or more [[functions]] tables
        obj = {"sqlwasm": 1, "name": "doc", "version": "1.0.0", **obj}
    manifest = parse_manifest(obj, f"{path.name}:{line}")
    assert manifest.functions
