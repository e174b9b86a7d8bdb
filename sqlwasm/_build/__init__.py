"""Building guests: `sqlwasm pack` and `sqlwasm build`.

`build` picks a toolchain by the source's suffix; each language is one module
here (`_c`: C with zig cc). Whatever the language, the result is an ordinary
module: the manifest is embedded, checked against the code, then signed.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable, Collection, Sequence

from .. import _engine
from .._errors import Error, ManifestError
from .._manifest import Manifest, check_exports, embed_manifest, manifest_from_toml
from .._signing import load_private_key, sign

PathLike = str | os.PathLike[str]


class CompileError(Error):
    """A guest's compiler refused it: `summary` says so in one line,
    `diagnostics` is what the compiler said."""

    def __init__(self, source: Path | str, tool: str, status: int, diagnostics: str) -> None:
        self.summary = f"compiling {source} failed ({tool} exit status {status})"
        self.diagnostics = diagnostics
        super().__init__(f"{self.summary}:\n{diagnostics}")


def sdk_dir() -> Path:
    from sqlwasm.extensions import SDK_DIR  # the guest SDK ships as package data

    return Path(SDK_DIR)


def _compile(wasm: bytes, manifest: Manifest) -> _engine.CompiledModule:
    try:
        return _engine.default().compile(_engine.EngineConfig(restricted=False), wasm)
    except _engine.InvalidWasm as exc:
        raise ManifestError(f"module '{manifest.name}' is not valid wasm: {exc.cause}") from exc.__cause__


def validate_against(wasm: bytes, manifest: Manifest) -> None:
    """Checks the manifest's exports against the compiled code."""
    check_exports(manifest, _compile(wasm, manifest))


def pack(wasm: bytes, manifest: Manifest) -> bytes:
    """Embeds the manifest (replacing any) after checking it fits the code."""
    packed = embed_manifest(wasm, manifest)
    validate_against(packed, manifest)
    return packed


# source suffix -> the module here that compiles it; each has
# compile_guest(source: Path, *, flags: tuple[str, ...], capabilities: Collection[str]) -> bytes
# (capabilities: the manifest's, for a toolchain whose runtime can use them)
TOOLCHAINS: dict[str, str] = {
    ".c": "_c", ".cc": "_c", ".cpp": "_c", ".cxx": "_c",
    ".ts": "_assemblyscript",
    ".js": "_javascript",
}


def _toolchain(source: Path) -> str:
    toolchain = TOOLCHAINS.get(source.suffix.lower())
    if toolchain is None:
        known = ", ".join(sorted(TOOLCHAINS))
        kind = source.suffix or source.name
        raise Error(f"cannot build {source}: no toolchain for '{kind}' sources (known: {known})")
    return toolchain


def _source_paths(sources: PathLike | Sequence[PathLike]) -> tuple[Path, ...]:
    if isinstance(sources, (str, os.PathLike)):
        return (Path(sources),)
    paths = tuple(Path(s) for s in sources)
    if not paths:
        raise Error("cannot build: no source files given")
    return paths


def compile_source(
    sources: PathLike | Sequence[PathLike], *, cflags: tuple[str, ...] = (), capabilities: Collection[str] = ()
) -> bytes:
    """Compiles a guest's source (or sources, one module) to wasm with the
    toolchain their suffix names. Several sources need one toolchain whose
    module links several: compile_guests(sources, *, flags) -> bytes."""
    paths = _source_paths(sources)
    toolchains = {_toolchain(p) for p in paths}
    if len(toolchains) > 1:
        listed = ", ".join(str(p) for p in paths)
        raise Error(f"cannot build {listed} into one module: they are sources of different languages")
    language = importlib.import_module(f"{__name__}.{toolchains.pop()}")
    if len(paths) == 1:
        compile_guest: Callable[..., bytes] = language.compile_guest
        return compile_guest(paths[0], flags=cflags, capabilities=capabilities)
    compile_guests: Callable[..., bytes] | None = getattr(language, "compile_guests", None)
    if compile_guests is None:
        raise Error(f"cannot build {paths[0]} with other sources: its toolchain compiles one source file")
    return compile_guests(paths, flags=cflags, capabilities=capabilities)


def build(
    source: PathLike | Sequence[PathLike],
    manifest_path: PathLike,
    *,
    key: PathLike | None = None,
    cflags: tuple[str, ...] = (),
) -> bytes:
    """source(s) + manifest.toml -> a packed (and, with key, signed) module.

    Before signing, the module's imports are checked against the manifest's
    capabilities (_imports) and its exports against the manifest."""
    manifest = manifest_from_toml(Path(manifest_path))  # fail fast, before compiling
    wasm = compile_source(source, cflags=cflags, capabilities=manifest.capabilities)
    packed = embed_manifest(wasm, manifest)
    compiled = _compile(packed, manifest)
    check_build_imports(manifest, compiled)
    check_exports(manifest, compiled)
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
from ._imports import check_build_imports  # noqa: E402

__all__ = [
    "TOOLCHAINS", "ZIG_FLAGS", "CompileError", "build", "compile_c", "compile_source", "pack", "sdk_dir",
    "validate_against", "write_module",
]
