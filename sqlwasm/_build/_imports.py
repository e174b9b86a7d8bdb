"""A built guest's imports, checked before it is signed.

What the host can link is sqlwasm._capabilities.HOST_IMPORTS (the one
registry); this module only adds what a C author needs to hear: which libc
call usually brings in an import, and which capability to declare.
"""

from __future__ import annotations

from .._capabilities import HOST_IMPORTS, WASI
from .._engine import CompiledModule, FuncType, Import
from .._errors import CapabilityError
from .._manifest import Manifest

STDIO = "stdio: printf, puts, fprintf, perror; snprintf into a buffer needs none"
FILES = "files: fopen, open"
ARGV = "main(argc, argv) (a guest is a library: build it as a reactor, without main)"

# wasi-libc function -> the calls that usually pull it in (checked with zig
# cc's wasm32-wasi libc). Hints only: whether an import is allowed is the
# registry's business.
LIBC_CAUSES: dict[str, str] = {
    "fd_write": STDIO,
    "fd_close": STDIO,
    "fd_seek": STDIO,
    "fd_fdstat_get": STDIO,
    "fd_read": FILES,
    "fd_fdstat_set_flags": FILES,
    "fd_prestat_get": FILES,
    "fd_prestat_dir_name": FILES,
    "path_open": FILES,
    "proc_exit": "exit or _Exit (abort() traps and needs no import), or getenv or fopen",
    "environ_get": "getenv",
    "environ_sizes_get": "getenv",
    "args_get": ARGV,
    "args_sizes_get": ARGV,
    "clock_time_get": "time(), clock(), clock_gettime() or gettimeofday()",
    "clock_res_get": "clock_getres()",
    "random_get": "arc4random(), getentropy() or getrandom() (rand() needs no import)",
    "poll_oneoff": "sleep, usleep or nanosleep",
}


def _problem(imp: Import, manifest: Manifest) -> str | None:
    """What is wrong with one import, worded to follow its name (None: fine)."""
    provider = HOST_IMPORTS.get((imp.module, imp.name))
    if provider is None:
        return "which no capability provides"
    if provider.capability not in manifest.capabilities:
        return (
            f"which capability '{provider.capability}' provides: declare it in the manifest "
            f"(capabilities = [\"{provider.capability}\"])"
        )
    ty = imp.type
    if not isinstance(ty, FuncType) or (ty.params, ty.results) not in provider.signatures:
        forms = " or ".join(f"({', '.join(p)}) -> ({', '.join(r)})" for p, r in provider.signatures)
        return f"with the wrong type (capability '{provider.capability}' provides {forms})"
    return None


def check_build_imports(manifest: Manifest, compiled: CompiledModule) -> None:
    """Refuses a module the host would refuse for its imports, naming every
    such import, the libc calls that usually bring it in, and what to do.
    Imports with the same problem and cause are named together."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for imp in compiled.imports:
        problem = _problem(imp, manifest)
        if problem is not None:
            cause = LIBC_CAUSES.get(imp.name, "") if imp.module == WASI else ""
            groups.setdefault((imp.module, problem, cause), []).append(imp.name)
    if not groups:
        return
    clauses = []
    for (module, problem, cause), names in groups.items():
        listed = ", ".join(sorted(names))
        usually = f" (usually from {cause})" if cause else ""
        clauses.append(f"{module}.{listed}{usually}, {problem}")
    raise CapabilityError(
        f"module '{manifest.name}' imports {'; '.join(clauses)}. "
        "A guest can import only what a declared capability provides (docs/sdk-c.md, \"libc\")"
    )
