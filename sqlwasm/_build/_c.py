"""C (and C++) guests: compiled to a wasm32 reactor module by zig cc from the ziglang package."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .._errors import Error
from . import CompileError, PathLike, sdk_dir

# wasm32-wasi with the reactor model gives libc and libm with no imports as
# long as the guest does no I/O; -s strips names so builds are reproducible.
# zig's default 16 MiB shadow stack would make every instance start at 16 MiB
# of memory; 256 KiB is plenty for guest code and overflows trap cleanly.
ZIG_FLAGS = ("-target", "wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-Wl,-z,stack-size=262144")


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
            raise CompileError(source, "zig cc", result.returncode, result.stderr.strip())
        return out.read_bytes()


def compile_guest(source: Path, *, flags: tuple[str, ...] = ()) -> bytes:
    return compile_c(source, cflags=flags)
