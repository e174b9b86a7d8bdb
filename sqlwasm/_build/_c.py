"""C and C++ guests: compiled to a wasm32 reactor module by zig cc (zig c++
when any source is C++) from the ziglang package."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Collection, Sequence

from .._errors import Error
from . import CompileError, PathLike, sdk_dir

# wasm32-wasi with the reactor model gives libc and libm with no imports as
# long as the guest does no I/O; -s strips names so builds are reproducible.
# zig's default 16 MiB shadow stack would make every instance start at 16 MiB
# of memory; 256 KiB is plenty for guest code and overflows trap cleanly.
# The shadow stack pointer is exported so that the host can put it back after
# a trap (which skips the epilogues that would): docs/abi.md.
ZIG_FLAGS = (
    "-target", "wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-Wl,-z,stack-size=262144",
    "-Wl,--export=__stack_pointer",
)
CXX_SUFFIXES = frozenset({".cc", ".cpp", ".cxx"})
# wasm32-wasi has no C++ exceptions: without this, anything that can throw
# fails to link (__cxa_throw). libc++ then aborts (a trap) where it would throw.
CXX_FLAGS = ("-fno-exceptions",)


def compile_c(
    source: PathLike | Sequence[PathLike],
    *,
    include_dirs: tuple[PathLike, ...] = (),
    cflags: tuple[str, ...] = (),
) -> bytes:
    """Compiles C (and C++) files into one wasm32 reactor module with the
    ziglang package; cflags (-D, -I, ...) apply to every file."""
    sources = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(s) for s in source]
    for src in sources:
        if not src.is_file():
            raise Error(f"no such source file: {src}")
    cxx = any(src.suffix.lower() in CXX_SUFFIXES for src in sources)
    with tempfile.TemporaryDirectory(prefix="sqlwasm-build-") as tmp:
        out = Path(tmp) / "out.wasm"
        cmd = [sys.executable, "-m", "ziglang", "c++" if cxx else "cc", *ZIG_FLAGS, *(CXX_FLAGS if cxx else ())]
        cmd += ["-I", str(sdk_dir())]
        for inc in include_dirs:
            cmd += ["-I", str(inc)]
        cmd += cflags
        for src in sources:
            # zig c++ would compile a .c file as C++: name its language
            cmd += ["-x", "c", str(src), "-x", "none"] if cxx and src.suffix.lower() == ".c" else [str(src)]
        cmd += ["-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            tool = "zig c++" if cxx else "zig cc"
            named = sources[0] if len(sources) == 1 else " + ".join(map(str, sources))
            raise CompileError(named, tool, result.returncode, result.stderr.strip())
        if result.stderr.strip():  # warnings: the author asked for them (-Wall) or needs them
            sys.stderr.write(result.stderr)
        return out.read_bytes()


def compile_guest(source: Path, *, flags: tuple[str, ...] = (), capabilities: Collection[str] = ()) -> bytes:
    return compile_c(source, cflags=flags)  # a C guest declares its own imports


def compile_guests(
    sources: Sequence[Path], *, flags: tuple[str, ...] = (), capabilities: Collection[str] = ()
) -> bytes:
    return compile_c(sources, cflags=flags)
