"""What `pip install .` ships: CI and users install the package (not the
checkout), so a file the package needs at run time that package-data does not
name is missing there and nowhere else."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTENSIONS = REPO / "extensions"


def shipped(patterns: list[str]) -> set[Path]:
    # setuptools matches package-data patterns as globs below the package's directory
    return {path for pattern in patterns for path in EXTENSIONS.glob(pattern) if path.is_file()}


def test_every_file_the_extensions_package_needs_is_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["sqlwasm.extensions"]
    needed = {
        path
        for path in EXTENSIONS.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix not in (".py", ".key", ".md")  # Python modules ship as such; private keys never
    }
    assert needed, "no files found under extensions/"
    missing = sorted(str(p.relative_to(REPO)) for p in needed - shipped(patterns))
    assert not missing, f"not in package-data, so not installed: {missing}"


def test_no_private_key_is_shipped() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["sqlwasm.extensions"]
    assert not [p for p in shipped(patterns) if p.suffix == ".key"]
