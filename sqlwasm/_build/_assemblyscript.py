"""AssemblyScript guests: compiled by asc from the `assemblyscript` npm package.

The compiler is not a Python package, so the first build installs a pinned
version with npm into sqlwasm's user cache directory
(<cache>/assemblyscript-<version>/) and later builds reuse it. The install
happens in a temporary directory renamed into place when complete, under a
lock, so two processes never install at once and none ever runs half an
install. It needs Node.js and npm; without them the error says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Collection

from .. import _cache
from .._errors import Error
from . import CompileError, sdk_dir

ASSEMBLYSCRIPT_VERSION = "0.28.20"
NODE_MIN_MAJOR = 20  # what assemblyscript 0.28 declares (engines.node)
NPM_TIMEOUT_S = 600
NODE_HINT = "install Node.js 20 or later and npm (Debian: apt-get install nodejs npm)"

# -O3: optimise for speed. The incremental runtime frees what guests
# allocate (strings, arrays, aggregate states); the stub never frees, so a
# guest that allocates per row would grow without bound. `abort=` turns
# assertion failures into a trap instead of an `env.abort` import, so the
# module imports nothing. Top-level code runs in `_initialize`, which the
# host calls once after instantiation (a trap there fails the install).
ASC_FLAGS = ("-O3", "--runtime", "incremental", "--use", "abort=", "--exportStart", "_initialize", "--noColors")

# What the install leaves beside the compiler: written last, so its presence
# (with this content) means the directory is complete.
_STAMP = "sqlwasm-installed"


def toolchain_dir() -> Path:
    """Where this version of the compiler lives: in sqlwasm's user cache directory."""
    base = _cache.user_cache_dir()
    if base is None:
        raise Error(
            f"cannot build AssemblyScript: the compiler is installed into sqlwasm's cache directory, and "
            f"{_cache.ENV_VAR} is empty (no cache); set it to a directory"
        )
    return base.absolute() / f"assemblyscript-{ASSEMBLYSCRIPT_VERSION}"


def _asc(directory: Path) -> Path:
    return directory / "node_modules" / "assemblyscript" / "bin" / "asc.js"


def _installed(directory: Path) -> bool:
    try:
        stamp = (directory / _STAMP).read_text(encoding="utf-8")
    except OSError:
        return False
    return stamp == ASSEMBLYSCRIPT_VERSION and _asc(directory).is_file()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Error(f"cannot build AssemblyScript: `{name}` is not on PATH; {NODE_HINT}")
    return path


def _check_node(node: str) -> None:
    result = subprocess.run([node, "--version"], capture_output=True, text=True, errors="replace")
    match = re.fullmatch(r"v(\d+)\.\S*", result.stdout.strip())
    if result.returncode != 0 or match is None:
        raise Error(f"cannot build AssemblyScript: `{node} --version` did not answer a version; {NODE_HINT}")
    if int(match.group(1)) < NODE_MIN_MAJOR:
        raise Error(
            f"cannot build AssemblyScript: Node.js {result.stdout.strip()} is too old "
            f"(assemblyscript {ASSEMBLYSCRIPT_VERSION} needs {NODE_MIN_MAJOR} or later); {NODE_HINT}"
        )


def _npm_install(npm: str, base: Path, directory: Path) -> None:
    """Installs the pinned compiler into a fresh directory beside `directory`
    and renames it into place."""
    staging = Path(tempfile.mkdtemp(dir=base, prefix=f".{directory.name}.tmp-"))
    try:
        command = [
            npm, "install", "--prefix", str(staging), "--no-save", "--no-audit", "--no-fund", "--ignore-scripts",
            "--loglevel=error", f"assemblyscript@{ASSEMBLYSCRIPT_VERSION}",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, errors="replace", timeout=NPM_TIMEOUT_S,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
        except subprocess.TimeoutExpired:
            raise Error(
                f"installing AssemblyScript {ASSEMBLYSCRIPT_VERSION} with npm took over {NPM_TIMEOUT_S} s; "
                f"check that the npm registry is reachable"
            ) from None
        if result.returncode != 0 or not _asc(staging).is_file():
            # npm's first lines name the cause; a stack trace follows
            lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if " at " not in line]
            said = "; ".join(line.strip() for line in lines[:4])
            raise Error(
                f"installing AssemblyScript {ASSEMBLYSCRIPT_VERSION} with npm failed (npm exit status "
                f"{result.returncode}); check that the npm registry is reachable, or install it by hand with "
                f"`npm install --prefix {directory} assemblyscript@{ASSEMBLYSCRIPT_VERSION}` (npm said: {said})"
            )
        (staging / _STAMP).write_text(ASSEMBLYSCRIPT_VERSION, encoding="utf-8")
        if directory.exists():  # a damaged earlier install (we hold the lock)
            shutil.rmtree(directory)
        try:
            os.rename(staging, directory)
        except OSError as exc:
            if not _installed(directory):  # without a lock, another process may have won
                raise Error(f"cannot install the AssemblyScript compiler into {directory}: {exc.strerror}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_compiler() -> Path:
    """The path of asc.js, installing the pinned compiler with npm first if
    this user's cache does not have it yet."""
    node = _tool("node")
    directory = toolchain_dir()
    if _installed(directory):
        usability = _cache.check(directory, create=False)
        if not usability.usable:  # someone else could have replaced the compiler
            raise Error(f"cannot use the AssemblyScript compiler in {directory}: {usability.reason}")
        return _asc(directory)
    _check_node(node)
    npm = _tool("npm")
    base = directory.parent
    usability = _cache.check(base, create=True)
    if not usability.usable:  # someone else could replace the compiler there
        raise Error(f"cannot install the AssemblyScript compiler into {base}: {usability.reason}")
    with _cache.locked(base / f".{directory.name}.lock"):
        if not _installed(directory):  # another process may have finished meanwhile
            if _cache.CAN_LOCK:  # staging directories of installs that were killed: no one else is installing
                for leftover in base.glob(f".{directory.name}.tmp-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            print(
                f"sqlwasm: installing AssemblyScript {ASSEMBLYSCRIPT_VERSION} with npm into {directory} (once)",
                file=sys.stderr,
            )
            _npm_install(npm, base, directory)
    return _asc(directory)


def compile_assemblyscript(source: Path, *, flags: tuple[str, ...] = ()) -> bytes:
    """Compiles one AssemblyScript file (an entry file: its exports are the
    module's) to wasm; `import ... from "sqlwasm"` finds the guest SDK."""
    if not source.is_file():
        raise Error(f"no such source file: {source}")
    sdk = sdk_dir() / "assemblyscript"
    if not (sdk / "sqlwasm" / "index.ts").is_file():
        raise Error(f"cannot build AssemblyScript: the guest SDK is missing from this sqlwasm installation ({sdk})")
    asc = ensure_compiler()
    with tempfile.TemporaryDirectory(prefix="sqlwasm-build-") as tmp:
        out = Path(tmp) / "out.wasm"
        command = [
            _tool("node"), str(asc), str(source), "--outFile", str(out),
            "--path", str(sdk), *ASC_FLAGS, *flags,
        ]
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        if result.returncode != 0 or not out.is_file():
            said = "\n".join(part for part in (result.stderr.strip(), result.stdout.strip()) if part)
            raise CompileError(source, "asc", result.returncode, said)
        return out.read_bytes()


def compile_guest(source: Path, *, flags: tuple[str, ...] = (), capabilities: Collection[str] = ()) -> bytes:
    return compile_assemblyscript(source, flags=flags)  # the author declares imports with @external
