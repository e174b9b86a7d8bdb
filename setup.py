# The native part is built by cffi; everything else is in pyproject.toml.
import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

# Loaded by path: setup.py's directory need not be on sys.path under a build backend.
_spec = importlib.util.spec_from_file_location("native_compiler", Path(__file__).parent / "native" / "compiler.py")
assert _spec and _spec.loader
compiler = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compiler)


class BuildExtChoosingCompiler(build_ext):
    """The platform's C compiler if it is there, else zig cc (native/compiler.py)."""

    def build_extensions(self) -> None:
        if compiler.wants_zig(self.compiler.compiler_so[0], os.environ):
            zig = compiler.zig_cc()
            print(f"compiling the native part with {' '.join(zig)}", file=sys.stderr)
            self.compiler.set_executables(
                compiler_so=compiler.with_program(self.compiler.compiler_so, zig),
                linker_so=compiler.with_program(self.compiler.linker_so, zig),
            )
        super().build_extensions()


setup(cffi_modules=["native/build_native.py:ffibuilder"], cmdclass={"build_ext": BuildExtChoosingCompiler})
