"""Building guests: `sqlwasm pack` and `sqlwasm build` (C -> wasm with zig cc)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import _engine
from ._errors import Error, ManifestError
from ._manifest import Manifest, check_exports, embed_manifest, manifest_from_toml
from ._signing import load_private_key, sign

PathLike = str | os.PathLike[str]

# wasm32-wasi with the reactor model gives libc and libm with no imports as
# long as the guest does no I/O; -s strips names so builds are reproducible.
# zig's default 16 MiB shadow stack would make every instance start at 16 MiB
# of memory; 256 KiB is plenty for guest code and overflows trap cleanly.
ZIG_FLAGS = ("-target", "wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-Wl,-z,stack-size=262144")


class CompileError(Error):
    """The C compiler refused a guest: `summary` says so in one line,
    `diagnostics` is what the compiler said."""

    def __init__(self, source: Path, status: int, diagnostics: str) -> None:
        self.summary = f"compiling {source} failed (zig cc exit status {status})"
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


def compile_c(source: PathLike, *, include_dirs: tuple[PathLike, ...] = (), cflags: tuple[str, ...] = ()) -> bytes:
    """Compiles one C file to a wasm32 reactor module with the ziglang package."""
    source = Path(source)
    if not source.is_file():
        raise Error(f"no such source file: {source}")
    with tempfile.TemporaryDirectory(prefix="sqlwasm-build-") as tmp:
        out = Path(tmp) / "out.wasm"
        cmd = [sys.executable, "-m", "ziglang", "cc", *ZIG_FLAGS, "-I", str(sdk_dir())]
        for inc in include_dirs:
            cmd += ["-I", str(inc)]
        cmd += [*cflags, str(source), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            raise CompileError(source, result.returncode, result.stderr.strip())
        return out.read_bytes()


def build(
    source: PathLike,
    manifest_path: PathLike,
    *,
    key: PathLike | None = None,
    cflags: tuple[str, ...] = (),
) -> bytes:
    """source.c + manifest.toml -> a packed (and, with key, signed) module."""
    manifest = manifest_from_toml(Path(manifest_path))  # fail fast, before compiling
    packed = pack(compile_c(source, cflags=cflags), manifest)
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
