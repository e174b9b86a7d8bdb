"""JavaScript guests: the author's ES module runs on QuickJS-ng inside the module.

The engine (QuickJS-ng's C sources from its pinned PyPI sdist, plus the glue
in extensions/sdk/javascript/sqljs.c) is compiled to wasm32 objects once and
kept in the user cache directory. Per build:

1. a probe module (engine + glue + an export that evaluates any source)
   runs the author's code at build time, in a sandbox, to list its exports
   (a syntax or top-level error fails the build here, with the JS message);
2. a generated C file holds the source and one wasm export per JS export:
   a function `f` gives the msgpack scalar export `f`; a class `C` whose
   instances have step() gives `C.init`, `C.step`, `C.final`, `C.drop`
   (and `C.value`, `C.inverse` when it has them);
3. that file is linked with the cached objects into an ordinary module.

docs/sdk-javascript.md is the author's side of this.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Collection

import wasmtime

from .. import _cache
from .._errors import Error
from .._preinit import PreinitError, preinit
from . import ZIG_FLAGS, CompileError, sdk_dir

log = logging.getLogger("sqlwasm")

QUICKJS_VERSION = "0.17.0.2"  # the quickjs-ng sdist on PyPI (QuickJS-ng 0.17.0)
QUICKJS_SDIST = f"quickjs_ng-{QUICKJS_VERSION}.tar.gz"
QUICKJS_SDIST_SHA256 = "43d2e48272208721a7aaea8e3f02d4b9318f12ef20cc4f5421b59d9a470706ef"
QUICKJS_DIR = f"quickjs_ng-{QUICKJS_VERSION}/upstream-quickjs/"
ENGINE_SOURCES = ("quickjs.c", "libregexp.c", "libunicode.c", "dtoa.c")
# Set to a downloaded copy of the sdist to build without reaching PyPI.
SDIST_ENV_VAR = "SQLWASM_QUICKJS_SDIST"

# -Os: the engine is most of the module; it halves the code Cranelift compiles.
COMPILE_FLAGS = ("-target", "wasm32-wasi", "-Os")
# Linked as C guests are (ZIG_FLAGS): their 256 KiB shadow stack (the host's
# 128 KiB native wasm stack runs out first; the glue caps JS recursion at
# 48 KiB of it), the libc zig built for them, and __stack_pointer exported.
LINK_FLAGS = ZIG_FLAGS
COMPILE_JOBS = 2

# Exports the glue itself has: a JS export must not take these names.
GLUE_EXPORTS = frozenset({"memory", "_initialize", "sqlwasm_alloc", "sqlwasm_init", "__stack_pointer"})
AGGREGATE_ROLES = ("init", "step", "final", "drop")
WINDOW_ROLES = ("value", "inverse")
PROBE_FUEL = 2_000_000_000  # the author's top-level code gets this much at build time (seconds)
PROBE_MEMORY = 256 << 20


def glue_dir() -> Path:
    return sdk_dir() / "javascript"


def _run(cmd: list[str], source: Path, cwd: Path) -> None:
    """Runs zig in cwd (a scratch directory: `python -m` puts the working
    directory first on sys.path)."""
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=cwd)
    if result.returncode != 0:
        raise CompileError(source, "zig cc", result.returncode, result.stderr.strip())


def _zig_version() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if result.returncode != 0:
        raise Error(f"cannot run zig (python -m ziglang version): {result.stderr.strip()}")
    return result.stdout.strip()


def engine_key() -> str:
    """Names a build of the engine: QuickJS-ng's version, the glue's sources,
    the flags and zig's version; a change in any builds it again."""
    digest = hashlib.sha256()
    for part in (QUICKJS_VERSION, QUICKJS_SDIST_SHA256, " ".join(COMPILE_FLAGS), _zig_version()):
        digest.update(part.encode() + b"\0")
    for glue in (glue_dir() / "sqljs.c", sdk_dir() / "sqlwasm.h"):
        if not glue.is_file():
            raise Error(f"cannot build JavaScript guests: {glue} is missing from this sqlwasm installation")
        digest.update(glue.read_bytes() + b"\0")
    digest.update(PROBE_C.encode())  # the probe is cached beside the objects
    return digest.hexdigest()[:24]


def _cache_root() -> Path | None:
    """The user cache's javascript/ directory, or None if there is no usable one."""
    base = _cache.user_cache_dir()
    if base is None:
        return None
    root = base / "javascript"
    usability = _cache.check(root, create=True)
    if not usability.usable:
        log.warning("sqlwasm: JavaScript engine cache %s not used: %s; building in a temporary directory",
                    root, usability.reason)
        return None
    return root


def _sdist(root: Path) -> Path:
    """The pinned quickjs-ng sdist, checked against its sha256: from
    $SQLWASM_QUICKJS_SDIST, the cache, or PyPI (pip download)."""
    configured = os.environ.get(SDIST_ENV_VAR)
    candidates = [Path(configured)] if configured else [root / QUICKJS_SDIST]
    for path in candidates:
        if path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != QUICKJS_SDIST_SHA256:
                raise Error(f"{path} is not quickjs-ng {QUICKJS_VERSION}'s sdist (sha256 differs from the pinned one)")
            return path
    if configured:
        raise Error(f"${SDIST_ENV_VAR} names {configured}, which is not a file")
    with tempfile.TemporaryDirectory(prefix="sqlwasm-quickjs-", dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"quickjs-ng=={QUICKJS_VERSION}", "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=tmp)
        downloaded = Path(tmp) / QUICKJS_SDIST
        if result.returncode != 0 or not downloaded.is_file():
            raise Error(
                f"cannot download the JavaScript engine (quickjs-ng {QUICKJS_VERSION} sdist from PyPI): "
                f"{result.stderr.strip()[-500:]}; download it elsewhere and set ${SDIST_ENV_VAR} to the file"
            )
        if hashlib.sha256(downloaded.read_bytes()).hexdigest() != QUICKJS_SDIST_SHA256:
            raise Error(f"the quickjs-ng {QUICKJS_VERSION} sdist from PyPI does not match its pinned sha256")
        os.replace(downloaded, root / QUICKJS_SDIST)
    return root / QUICKJS_SDIST


def _extract_engine(sdist: Path, into: Path) -> None:
    """Only the engine's C sources and headers, flat, from the checked sdist."""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if not name.startswith(QUICKJS_DIR) or not member.isfile():
                continue
            leaf = name[len(QUICKJS_DIR):]
            if "/" in leaf or not leaf.endswith((".c", ".h")):
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file
            (into / leaf).write_bytes(extracted.read())
    missing = [s for s in ENGINE_SOURCES if not (into / s).is_file()]
    if missing:
        raise Error(f"{sdist} lacks the engine's sources {', '.join(missing)}")


def _compile_objects(src: Path, out: Path) -> None:
    """The engine and the glue to wasm32 objects, COMPILE_JOBS at a time."""
    zig = [sys.executable, "-m", "ziglang", "cc", *COMPILE_FLAGS, "-I", str(src), "-I", str(sdk_dir())]
    jobs = [(src / s, out / f"{Path(s).stem}.o") for s in ENGINE_SOURCES]
    jobs.append((glue_dir() / "sqljs.c", out / "sqljs.o"))
    with concurrent.futures.ThreadPoolExecutor(COMPILE_JOBS) as pool:
        for done in [pool.submit(_run, [*zig, "-c", str(c), "-o", str(o)], c, out) for c, o in jobs]:
            done.result()


def engine_objects() -> list[Path]:
    """The compiled engine and glue (cached; built under a lock if absent)."""
    root = _cache_root()
    key = engine_key()
    if root is None:
        scratch = Path(tempfile.mkdtemp(prefix="sqlwasm-quickjs-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return _build_engine(scratch, scratch / key)
    entry = root / key
    if not (entry / "complete").is_file():
        with _cache.locked(root / f"{key}.lock"):
            if not (entry / "complete").is_file():  # another process may have built it meanwhile
                _build_engine(root, entry)
    return sorted(entry.glob("*.o"))


def _build_engine(root: Path, entry: Path) -> list[Path]:
    sdist = _sdist(root)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        with tempfile.TemporaryDirectory(prefix="sqlwasm-quickjs-src-") as src:
            _extract_engine(sdist, Path(src))
            _compile_objects(Path(src), staging)
        (staging / "complete").write_text(f"quickjs-ng {QUICKJS_VERSION}\n")
        os.replace(staging, entry)  # whole entries only: readers never see a partial one
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only if the build failed
    return sorted(entry.glob("*.o"))


# ---------------------------------------------------------------------------
# The generated part of a module
# ---------------------------------------------------------------------------

def _c_string(text: str) -> str:
    """A C string literal of text's UTF-8 bytes (octal escapes, so no byte
    can end the literal or start a trigraph)."""
    return '"' + "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in b'"\\?' else f"\\{b:03o}" for b in text.encode()
    ) + '"'


def _c_bytes(data: bytes) -> str:
    return ",".join(str(b) for b in data)


SIGNATURES = {
    "scalar": ("int64_t", "const uint8_t *p, uint32_t n", "sqljs_scalar({i}, p, n)"),
    "init": ("int32_t", "void", "sqljs_agg_init({i})"),
    "step": ("int64_t", "int32_t h, const uint8_t *p, uint32_t n", "sqljs_agg_step({i}, h, p, n)"),
    "inverse": ("int64_t", "int32_t h, const uint8_t *p, uint32_t n", "sqljs_agg_inverse({i}, h, p, n)"),
    "final": ("int64_t", "int32_t h", "sqljs_agg_final({i}, h)"),
    "value": ("int64_t", "int32_t h", "sqljs_agg_value({i}, h)"),
    "drop": ("void", "int32_t h", "sqljs_agg_drop({i}, h)"),
}


def wasm_exports(described: list[dict[str, object]]) -> list[tuple[str, str, int]]:
    """(wasm export name, role, index of the JS export) for each JS export."""
    exports: list[tuple[str, str, int]] = []
    for index, item in enumerate(described):
        name = str(item["name"])
        if not item["function"]:
            continue
        methods = item["methods"]
        assert isinstance(methods, list)
        if "step" in methods:
            roles = AGGREGATE_ROLES + tuple(r for r in WINDOW_ROLES if r in methods)
            exports += [(f"{name}.{role}", role, index) for role in roles]
        else:
            exports.append((name, "scalar", index))
    return exports


WASI_IMPORT = '__attribute__((import_module("wasi_snapshot_preview1"), import_name("{name}")))'
# The clock and random source the glue uses (sqljs.c): the host's when the
# module has the capability, else none, so the module imports nothing.
STUB_CLOCK = """\
int32_t __imported_wasi_snapshot_preview1_clock_time_get(int32_t id, int64_t precision, int32_t out) {
    *(uint64_t *)(uintptr_t)out = 0; return 0;
}
"""
HOST_CLOCK = WASI_IMPORT.format(name="clock_time_get") + """
int32_t sqljs_host_clock_time_get(int32_t id, int64_t precision, int32_t out);
extern _Bool sqljs_initializing;
int32_t __imported_wasi_snapshot_preview1_clock_time_get(int32_t id, int64_t precision, int32_t out) {
    if (sqljs_initializing) { *(uint64_t *)(uintptr_t)out = 0; return 0; }
    return sqljs_host_clock_time_get(id, precision, out);
}
"""
CLOCK_RESOLUTION = """\
int32_t __imported_wasi_snapshot_preview1_clock_res_get(int32_t id, int32_t out) {
    *(uint64_t *)(uintptr_t)out = 1000; return 0;
}
"""
STUB_RANDOM = """\
const _Bool sqljs_random_enabled = 0;
int32_t sqljs_random_bytes(uint8_t *buf, uint32_t len) { return -1; }
"""
HOST_RANDOM = WASI_IMPORT.format(name="random_get") + """
int32_t sqljs_host_random_get(int32_t buf, int32_t len);
const _Bool sqljs_random_enabled = 1;
int32_t sqljs_random_bytes(uint8_t *buf, uint32_t len) {
    return sqljs_host_random_get((int32_t)(uintptr_t)buf, (int32_t)len);
}
"""


def capability_c(capabilities: Collection[str]) -> str:
    return (
        (HOST_CLOCK if "clock" in capabilities else STUB_CLOCK)
        + CLOCK_RESOLUTION
        + (HOST_RANDOM if "random" in capabilities else STUB_RANDOM)
    )


def generated_c(
    source_text: str, filename: str, described: list[dict[str, object]], capabilities: Collection[str] = ()
) -> str:
    names = [str(item["name"]) for item in described]
    source_bytes = source_text.encode()
    lines = [
        "#include <stdint.h>",
        f"const char sqljs_source[] = {{{_c_bytes(source_bytes + bytes(1))}}};",
        f"const uint32_t sqljs_source_len = {len(source_bytes)};",
        f"const char sqljs_filename[] = {_c_string(filename)};",
        f"const char *const sqljs_export_names[] = {{{', '.join(map(_c_string, names)) or '0'}}};",
        f"const uint32_t sqljs_export_count = {len(names)};",
        "int64_t sqljs_scalar(uint32_t, const uint8_t *, uint32_t);",
        "int32_t sqljs_agg_init(uint32_t);",
        "int64_t sqljs_agg_step(uint32_t, int32_t, const uint8_t *, uint32_t);",
        "int64_t sqljs_agg_inverse(uint32_t, int32_t, const uint8_t *, uint32_t);",
        "int64_t sqljs_agg_final(uint32_t, int32_t);",
        "int64_t sqljs_agg_value(uint32_t, int32_t);",
        "void sqljs_agg_drop(uint32_t, int32_t);",
        "void sqljs_restore_stack(void);",
        capability_c(capabilities),
    ]
    # Each stub is frameless and first puts back the shadow stack pointer a
    # trap may have left deep (sqljs_restore_stack).
    for n, (export, role, index) in enumerate(wasm_exports(described)):
        result, params, call = SIGNATURES[role]
        body = "sqljs_restore_stack(); " + (
            f"{call.format(i=index)};" if result == "void" else f"return {call.format(i=index)};"
        )
        lines.append(
            f"__attribute__((export_name({_c_string(export)}))) {result} sqljs_export_{n}({params}) {{ {body} }}"
        )
    return "\n".join(lines) + "\n"


PROBE_C = """\
#include <stdint.h>
""" + capability_c(()) + """\
const char sqljs_source[] = "";
const uint32_t sqljs_source_len = 0;
const char sqljs_filename[] = "probe";
const char *const sqljs_export_names[] = {0};
const uint32_t sqljs_export_count = 0;
int64_t sqljs_describe(const char *source, uint32_t len, const char *filename);
__attribute__((export_name("describe")))
int64_t describe(const char *source, uint32_t len, const char *filename) {
    return sqljs_describe(source, len, filename);
}
"""


def _link(c_text: str, objects: list[Path], source: Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sqlwasm-build-") as tmp:
        main_c = Path(tmp) / "module.c"
        main_c.write_text(c_text)
        out = Path(tmp) / "out.wasm"
        cmd = [sys.executable, "-m", "ziglang", "cc", *LINK_FLAGS, str(main_c), *map(str, objects), "-o", str(out)]
        _run(cmd, source, Path(tmp))
        return out.read_bytes()


def _probe_module(objects: list[Path], source: Path) -> bytes:
    """The probe (cached beside the objects it is linked from)."""
    cached = objects[0].parent / "probe.wasm"
    if cached.is_file():
        return cached.read_bytes()
    wasm = _link(PROBE_C, objects, source)
    staged = cached.with_name(f".probe-{os.getpid()}.wasm")
    staged.write_bytes(wasm)
    os.replace(staged, cached)
    return wasm


def _probe_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_opt_level = "none"  # it runs once per build: compile fast
    return wasmtime.Engine(config)


def _compiled_probe(engine: wasmtime.Engine, probe: bytes, cache: Path) -> wasmtime.Module:
    """The probe compiled, kept as cache (in the private engine cache, which
    only this user can write; wasmtime refuses an entry of another version
    or configuration, and then the probe is compiled again)."""
    if cache.is_file():
        try:
            return wasmtime.Module.deserialize_file(engine, str(cache))
        except wasmtime.WasmtimeError:
            pass
    module = wasmtime.Module(engine, probe)
    staged = cache.with_name(f".probe-{os.getpid()}.cwasm")
    staged.write_bytes(module.serialize())
    os.replace(staged, cache)
    return module


def describe_exports(
    engine: wasmtime.Engine, module: wasmtime.Module, source: Path, text: str
) -> list[dict[str, object]]:
    """Runs the module's top-level code in the probe; its exports, in order:
    {"name", "function", "methods"}. A JS error fails the build."""
    store = wasmtime.Store(engine)
    store.set_fuel(PROBE_FUEL)
    store.set_limits(memory_size=PROBE_MEMORY)
    instance = wasmtime.Instance(store, module, [])
    exports = instance.exports(store)
    memory = exports["memory"]
    alloc, init, describe = exports["sqlwasm_alloc"], exports["_initialize"], exports["describe"]
    assert isinstance(memory, wasmtime.Memory)
    assert isinstance(alloc, wasmtime.Func) and isinstance(init, wasmtime.Func)
    assert isinstance(describe, wasmtime.Func)
    init(store)
    blob = text.encode() + b"\0" + source.name.encode() + b"\0"
    ptr = alloc(store, len(blob))
    memory.write(store, blob, ptr)
    try:
        packed = describe(store, ptr, len(text.encode()), ptr + len(text.encode()) + 1)
    except wasmtime.Trap as exc:
        cause = (
            f"it ran for more than {PROBE_FUEL:,} wasm instructions (an endless loop?)"
            if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
            else exc.message.strip().splitlines()[-1]
        )
        raise Error(f"{source}: the module's top-level code did not finish at build time: {cause}") from None
    assert isinstance(packed, int)
    result = json.loads(memory.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF)))
    if "error" in result:
        raise Error(f"{source}: {result['error']}")
    described: list[dict[str, object]] = result["exports"]
    return described


def compile_guest(source: Path, *, flags: tuple[str, ...] = (), capabilities: Collection[str] = ()) -> bytes:
    if flags:
        raise Error(f"cannot build {source}: a JavaScript guest takes no compiler flags")
    return compile_javascript(source, capabilities=capabilities)


def compile_javascript(source: Path, *, snapshot: bool = True, capabilities: Collection[str] = ()) -> bytes:
    """The module for source. snapshot: pre-initialized (the JS module
    compiled and evaluated at build time, so an instance starts with it);
    otherwise the first call evaluates it. capabilities: with "clock",
    Date reads the host's clock; with "random", Math.random the host's
    random_get (the module then imports them); otherwise neither."""
    if not source.is_file():
        raise Error(f"no such source file: {source}")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise Error(f"{source} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if "\0" in text:
        raise Error(f"{source} contains a NUL character")
    objects = engine_objects()
    engine = _probe_engine()
    probe = _compiled_probe(engine, _probe_module(objects, source), objects[0].parent / "probe.cwasm")
    described = describe_exports(engine, probe, source, text)
    exports = wasm_exports(described)
    if any("\0" in str(item["name"]) for item in described):
        raise Error(f"{source}: an export's name contains a NUL character")
    taken = [e for e, _, _ in exports if e in GLUE_EXPORTS]
    if taken:
        raise Error(f"{source}: export '{taken[0]}' takes a name the JavaScript runtime uses; rename it")
    seen: set[str] = set()
    for export, _, _ in exports:
        if export in seen:
            raise Error(f"{source}: two exports would both be the wasm export '{export}'; rename one")
        seen.add(export)
    wasm = _link(generated_c(text, source.name, described, capabilities), objects, source)
    if not snapshot:
        return wasm
    try:
        return preinit(wasm, initializer="sqlwasm_init")
    except PreinitError as exc:
        raise Error(f"{source}: pre-initializing the JavaScript module failed: {exc}") from exc
