"""cffi builder for sqlwasm's native part (out-of-line API mode).

setup.py names this file in ``cffi_modules``; the compiled module is
``sqlwasm._sqlwasm_native``. The cdef is read from ``sqlwasm_native.h`` so the
header stays the one description of what Python may call.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _cdef_from_header(header: Path) -> str:
    # cffi's parser takes C declarations, not preprocessor lines.
    return "\n".join(line for line in header.read_text().splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(HERE / "sqlwasm_native.h"))
ffibuilder.set_source(
    "sqlwasm._sqlwasm_native",
    '#include "sqlwasm_native.h"',
    # Relative to the project root, where setup.py runs.
    sources=["native/sqlwasm_native.c"],
    include_dirs=["native"],
    libraries=["dl"],
    # SQLite loads extensions with RTLD_GLOBAL: keep every symbol but the
    # entry points out of the global namespace.
    extra_compile_args=["-O2", "-fvisibility=hidden", "-std=gnu11"],
)

