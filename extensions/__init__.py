"""The example modules, the guest SDK and the examples' signing key, shipped
with sqlwasm so that users need no compiler to try it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
SDK_DIR = ROOT / "sdk"
EXAMPLES_PUBLIC_KEY = ROOT / "keys" / "examples.pub"


def module_path(name: str) -> Path:
    """Path of a shipped, signed example module, e.g. module_path("geo")."""
    return ROOT / name / f"{name}.wasm"
