"""`python -m benchmarks.NAME` run from a checkout measures the installed
sqlwasm, not the checkout's unbuilt sqlwasm/ that sits first on sys.path.
Checked on a copy of benchmarks/__init__.py in a stand-in checkout whose
sqlwasm/ fails to import the way an unbuilt one does (the benchmarks
themselves take minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sqlwasm

REPO = Path(__file__).resolve().parents[1]
PROBE = "import sqlwasm\nprint(sqlwasm.__file__)\n"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with an unbuilt sqlwasm/ and benchmarks/ holding a probe."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "__init__.py", tmp_path / "benchmarks" / "__init__.py")
    (tmp_path / "benchmarks" / "probe.py").write_text(PROBE, encoding="utf-8")
    (tmp_path / "sqlwasm").mkdir()
    (tmp_path / "sqlwasm" / "__init__.py").write_text(
        'raise ImportError("sqlwasm\'s native extension is not built")\n', encoding="utf-8"
    )
    return tmp_path


def run_probe(checkout: Path, *python_options: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *python_options, "-m", "benchmarks.probe"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_benchmarks_import_the_installed_sqlwasm(checkout: Path) -> None:
    result = run_probe(checkout)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == Path(sqlwasm.__file__).resolve()


def test_benchmarks_say_how_to_install_when_sqlwasm_is_missing(checkout: Path) -> None:
    result = run_probe(checkout, "-S")  # no site-packages: nothing installed
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "benchmarks: sqlwasm is not installed in this Python; run `pip install .` in the checkout first"
    )
