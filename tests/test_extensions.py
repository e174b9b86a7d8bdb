"""The shipped example modules: reproducible, signed with the examples key,
and importing nothing."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, ROOT, SDK_DIR, module_path

import sqlwasm
from sqlwasm import _cli
from sqlwasm._signing import check_signature, load_public_key

REPO = Path(__file__).resolve().parents[1]
# The checkout's extensions/ (with the examples key), not the installed copy.
REPO_EXTENSIONS = REPO / "extensions"


def load_rebuild_tool() -> ModuleType:
    """tools/rebuild_extensions.py, a script of the checkout (not a package)."""
    spec = importlib.util.spec_from_file_location("rebuild_extensions", REPO / "tools" / "rebuild_extensions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rebuild = load_rebuild_tool()


@pytest.fixture(scope="module", params=rebuild.SHIPPED)
def shipped(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_shipped_wasm_is_rebuilt() -> None:
    """Every .wasm installed as package data is covered by the rebuild check."""
    wasm_files = sorted(p.parent.name for p in ROOT.glob("*/*.wasm"))
    assert wasm_files == sorted(rebuild.SHIPPED)


def test_rebuild_is_byte_identical(shipped: str) -> None:
    committed = (REPO_EXTENSIONS / shipped / f"{shipped}.wasm").read_bytes()
    assert module_path(shipped).read_bytes() == committed, "the installed module is not the committed one"
    rebuilt = rebuild.rebuild(shipped, REPO_EXTENSIONS)
    assert len(rebuilt) == len(committed)
    assert rebuilt == committed, f"{shipped}.wasm is stale: run `python tools/rebuild_extensions.py`"


def test_rebuild_check_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert rebuild.main(["--check", "--root", str(REPO_EXTENSIONS)]) == 0
    assert capsys.readouterr().err == ""


def test_signed_by_the_examples_key(shipped: str) -> None:
    data = module_path(shipped).read_bytes()
    signature = check_signature(data)
    assert signature is not None
    assert signature.key_id == load_public_key(EXAMPLES_PUBLIC_KEY).key_id
    module = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY], grant=["sql"]).load(module_path(shipped))
    assert module.signer == signature.key_id
    assert module.name == shipped


def test_verify_command_trusts_the_examples_key(shipped: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["verify", str(module_path(shipped)), "--trust", str(EXAMPLES_PUBLIC_KEY)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")


def test_refused_without_trust(shipped: str) -> None:
    with pytest.raises(sqlwasm.SignatureError):
        sqlwasm.Runtime().load(module_path(shipped))


def test_geo_imports_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["inspect", "--json", str(module_path("geo"))]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["imports"] == []
    assert info["manifest"]["name"] == "geo"
    assert info["manifest"]["capabilities"] == []
    assert info["signature"] == {"status": "valid", "key_id": load_public_key(EXAMPLES_PUBLIC_KEY).key_id}


def test_sdk_header_and_public_key_ship() -> None:
    assert (SDK_DIR / "sqlwasm.h").is_file()
    assert load_public_key(EXAMPLES_PUBLIC_KEY).key_id == load_public_key(ROOT / "keys" / "examples.pub").key_id


def test_private_key_is_not_package_data() -> None:
    """The examples' private key sits in the source tree for rebuilds but
    must never be installed with the package."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["sqlwasm.extensions"]
    assert any(fnmatch.fnmatch("keys/examples.pub", p) for p in patterns)
    assert not any(fnmatch.fnmatch("keys/examples.key", p) for p in patterns)


def test_the_rebuild_tool_is_not_installed() -> None:
    """The rebuild tool needs the checkout's private key: it is not a module of the package."""
    assert importlib.util.find_spec("sqlwasm.extensions.rebuild") is None
    assert [p.name for p in REPO_EXTENSIONS.glob("*.py")] == ["__init__.py"]


def test_the_rebuild_tool_runs_as_documented() -> None:
    """`python tools/rebuild_extensions.py` from the checkout (only --help:
    the real run is test_rebuild_check_command)."""
    result = subprocess.run(
        [sys.executable, "tools/rebuild_extensions.py", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "python tools/rebuild_extensions.py --check" in result.stdout
