"""Building guests: `sqlwasm pack` and `sqlwasm build`.

`build` picks a toolchain by the source's suffix; each language is one module
here (`_c`: C with zig cc). Whatever the language, the result is an ordinary
module: the manifest is embedded, checked against the code, then signed.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

from .. import _engine
from .._errors import Error, ManifestError
from .._manifest import Manifest, check_exports, embed_manifest, manifest_from_toml
from .._signing import load_private_key, sign

PathLike = str | os.PathLike[str]


class CompileError(Error):
    """A guest's compiler refused it: `summary` says so in one line,
    `diagnostics` is what the compiler said."""

    def __init__(self, source: Path, tool: str, status: int, diagnostics: str) -> None:
        self.summary = f"compiling {source} failed ({tool} exit status {status})"
        self.diagnostics = diagnostics
        super().__init__(f"{self.summary}:\n{diagnostics}")


def sdk_dir() -> Path:
    from sqlwasm.extensions import SDK_DIR  # the guest SDK ships as package data

    return Path(SDK_DIR)


def validate_against(wasm: bytes, manifest: Manifest) -> None:
    """Checks the manifest's exports against the compiled code."""
    try:
        compiled = _engine.default().compile(_engine.EngineConfig(restricted=False), wasm)
    except _engine.InvalidWasm as exc:
        raise ManifestError(f"module '{manifest.name}' is not valid wasm: {exc.cause}") from exc.__cause__
    check_exports(manifest, compiled)


def pack(wasm: bytes, manifest: Manifest) -> bytes:
    """Embeds the manifest (replacing any) after checking it fits the code."""
    packed = embed_manifest(wasm, manifest)
    validate_against(packed, manifest)
    return packed


# source suffix -> the module here that compiles it; each has
# compile_guest(source: Path, *, flags: tuple[str, ...]) -> bytes
TOOLCHAINS: dict[str, str] = {".c": "_c"}


def compile_source(source: PathLike, *, cflags: tuple[str, ...] = ()) -> bytes:
    """Compiles a guest's source to wasm with the toolchain its suffix names."""
    source = Path(source)
    toolchain = TOOLCHAINS.get(source.suffix.lower())
    if toolchain is None:
        known = ", ".join(sorted(TOOLCHAINS))
        raise Error(f"cannot build {source}: no toolchain for '{source.suffix or source.name}' sources (known: {known})")
    compile_guest: Callable[..., bytes] = importlib.import_module(f"{__name__}.{toolchain}").compile_guest
    return compile_guest(source, flags=cflags)


def build(
    source: PathLike,
    manifest_path: PathLike,
    *,
    key: PathLike | None = None,
    cflags: tuple[str, ...] = (),
) -> bytes:
    """source + manifest.toml -> a packed (and, with key, signed) module."""
    manifest = manifest_from_toml(Path(manifest_path))  # fail fast, before compiling
    packed = pack(compile_source(source, cflags=cflags), manifest)
    return sign(packed, load_private_key(key)) if key is not None else packed


def write_module(path: PathLike, data: bytes) -> None:
    """Writes atomically, so a failed write never leaves half a module."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Error(f"cannot write {path}: {exc.strerror}") from exc


from ._c import ZIG_FLAGS, compile_c  # noqa: E402  (the C toolchain needs the names above)

__all__ = [
    "TOOLCHAINS", "ZIG_FLAGS", "CompileError", "build", "compile_c", "compile_source", "pack", "sdk_dir",
    "validate_against", "write_module",
]
