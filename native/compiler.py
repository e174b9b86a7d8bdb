"""Which C compiler builds the native part.

The platform's compiler (sysconfig's CC, what setuptools would run) when it is
on PATH; otherwise, or when SQLWASM_NATIVE_CC=zig, ``python -m ziglang cc``
from the ``ziglang`` package (a build and runtime dependency), so installing
needs no system toolchain. zig is given an explicit target for the running
platform: it then compiles against its own libc headers and never sees the
system's include directory (native/ needs only Python.h, which ships with
CPython, and declares SQLite's ABI itself in sqlite_abi.h).

setup.py loads this file by path; tests/test_native_build.py too.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Mapping, Sequence

CHOICE_VARIABLE = "SQLWASM_NATIVE_CC"
# zig's names for the machines CPython reports, where they differ.
ZIG_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


class CompilerChoiceError(RuntimeError):
    """The native part cannot be built with what this machine has."""


def zig_target() -> str:
    """The running platform as a zig target: the glibc version is the running one, so the
    built module links against symbols this machine's libc has."""
    if sys.platform != "linux":
        raise CompilerChoiceError(f"building sqlwasm's native part with zig needs Linux, not {sys.platform}")
    machine = platform.machine().lower()
    arch = ZIG_ARCH.get(machine, machine)
    libc, version = platform.libc_ver()
    if libc == "glibc":
        major, minor = version.split(".")[:2]
        return f"{arch}-linux-gnu.{major}.{minor}"
    return f"{arch}-linux-musl"


def zig_cc() -> list[str]:
    return [sys.executable, "-m", "ziglang", "cc", "-target", zig_target()]


def wants_zig(platform_program: str, environ: Mapping[str, str]) -> bool:
    """Whether to compile with zig instead of `platform_program`: asked for, or it is not on environ's PATH."""
    asked = environ.get(CHOICE_VARIABLE, "")
    if asked not in ("", "zig"):
        raise CompilerChoiceError(f"{CHOICE_VARIABLE}={asked!r}: the only value it takes is 'zig'")
    return asked == "zig" or shutil.which(platform_program, path=environ.get("PATH", os.defpath)) is None


def with_program(command: Sequence[str], program: Sequence[str]) -> list[str]:
    """`command` (a program and its flags, as setuptools holds it) run with `program` instead."""
    return [*program, *command[1:]]
