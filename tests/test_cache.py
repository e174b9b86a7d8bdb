"""sqlwasm/_cache.py and Runtime(cache_dir=...): the on-disk compiled-module
cache. Real modules, real wasmtime; compiles are counted by wrapping the
engine's own compile (it still compiles)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import MEMORY, Build, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

import sqlwasm
from sqlwasm import SignatureError, _cache, _cli, _engine

ADD_WAT = MEMORY + '(func (export "f") (param i64) (result i64) (i64.add (local.get 0) (i64.const 1)))'
MUL_WAT = MEMORY + '(func (export "f") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 10)))'


def module_of(build: Build, wat: str, name: str) -> bytes:
    return build(wat, manifest(fn(f"{name}_f", export="f"), name=name))


@pytest.fixture
def add_module(build: Build) -> bytes:
    return module_of(build, ADD_WAT, "a")


@pytest.fixture
def mul_module(build: Build) -> bytes:
    return module_of(build, MUL_WAT, "m")


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[_engine.EngineConfig]:
    """The configurations the engine compiled modules under, in order."""
    engine = _engine.default()
    real_compile = engine.compile
    seen: list[_engine.EngineConfig] = []

    def counting_compile(config: _engine.EngineConfig, data: bytes) -> _engine.CompiledModule:
        seen.append(config)
        return real_compile(config, data)

    monkeypatch.setattr(engine, "compile", counting_compile)
    return seen


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_runtime(session_key: Ed25519PrivateKey, cache_dir: Path) -> Callable[..., sqlwasm.Runtime]:
    """A fresh Runtime (nothing compiled in memory) trusting session_key, caching in cache_dir."""

    def _make(**options: Any) -> sqlwasm.Runtime:
        options.setdefault("cache_dir", cache_dir)
        return sqlwasm.Runtime(trusted_keys=[session_key.public_key()], **options)

    return _make


def answer(runtime: sqlwasm.Runtime, module: bytes, sql: str) -> Any:
    conn = runtime.connect(":memory:", [module])
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + _cache.SUFFIX))


def disk(runtime: sqlwasm.Runtime) -> _cache.DiskCache:
    assert runtime._disk_cache is not None
    return runtime._disk_cache


# ------------------------------------------------------------- warm loads


def test_a_warm_load_deserializes_instead_of_compiling(
    make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, compiles: list[Any], cache_dir: Path
) -> None:
    cold = make_runtime()
    assert answer(cold, add_module, "SELECT a_f(41)") == 42
    assert len(compiles) == 1 and disk(cold).stores == 1
    assert len(entries(cache_dir)) == 1
    warm = make_runtime()
    assert answer(warm, add_module, "SELECT a_f(41)") == 42
    assert len(compiles) == 1  # no compile: the code came from disk
    assert (disk(warm).lookups, disk(warm).hits, disk(warm).stores) == (1, 1, 0)


def test_the_shipped_geo_module_loads_warm_in_a_new_process(cache_dir: Path) -> None:
    program = (
        "import sqlwasm, json\n"
        "from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path\n"
        "rt = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY])\n"
        "conn = rt.connect(':memory:', [module_path('geo')])\n"
        "km = conn.execute('SELECT round(geo_haversine(0, 0, 0, 1), 3)').fetchone()[0]\n"
        "print(json.dumps([km, rt._disk_cache.hits, rt._disk_cache.stores]))\n"
    )
    env = {**os.environ, _cache.ENV_VAR: str(cache_dir)}

    def run() -> list[Any]:
        done = subprocess.run(  # outside the checkout: the installed sqlwasm
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True, cwd=cache_dir.parent
        )
        result: list[Any] = json.loads(done.stdout)
        return result

    assert run() == [111.195, 0, 1]
    assert run() == [111.195, 1, 0]


def test_the_key_changes_with_the_engine_configuration(
    make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, compiles: list[Any], cache_dir: Path
) -> None:
    make_runtime().load(add_module)
    metered = make_runtime(fuel=1_000_000)
    assert answer(metered, add_module, "SELECT a_f(1)") == 2
    assert [c.fuel for c in compiles] == [False, True]  # unmetered code is not reused for a fuel limit
    assert len(entries(cache_dir)) == 2
    make_runtime(fuel=5).load(add_module)  # the fuel amount is not compiled in
    make_runtime().load(add_module)
    assert len(compiles) == 2
    engine = _engine.default()
    tags = {
        engine.cache_tag(_engine.EngineConfig(fuel=fuel, restricted=r)) for fuel in (False, True) for r in (False, True)
    }
    assert len(tags) == 4


def test_the_key_changes_with_the_module(
    make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, mul_module: bytes, compiles: list[Any]
) -> None:
    first = make_runtime()
    first.load(add_module)
    first.load(mul_module)
    assert len(compiles) == 2
    warm = make_runtime()
    assert answer(warm, add_module, "SELECT a_f(4)") == 5
    assert answer(warm, mul_module, "SELECT m_f(4)") == 40
    assert len(compiles) == 2


def test_the_key_names_the_engine_version_and_settings() -> None:
    tag = json.loads(_engine.default().cache_tag(_engine.EngineConfig(fuel=True)))
    assert tag["wasmtime"] and tag["machine"] and tag["config"] == {"fuel": True, "restricted": True}
    assert tag["settings"]["consume_fuel"] is True and tag["settings"]["max_wasm_stack"] > 0
    digest = "ab" * 32
    assert _cache.cache_key(digest, "one") != _cache.cache_key(digest, "two")
    assert _cache.cache_key(digest, "one") != _cache.cache_key("cd" * 32, "one")


# -------------------------------------------------- the signature comes first


def test_a_tampered_module_is_refused_before_the_cache_is_read(
    make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, compiles: list[Any], cache_dir: Path
) -> None:
    code_at = add_module.index(b"\x42\x01\x7c")  # i64.const 1; i64.add -> i64.const 2
    tampered = add_module[: code_at + 1] + b"\x02" + add_module[code_at + 2 :]
    # Its compiled code is in the cache already, under its own key.
    engine, config = _engine.default(), _engine.EngineConfig()
    key = _cache.cache_key(hashlib.sha256(tampered).hexdigest(), engine.cache_tag(config))
    _cache.DiskCache(cache_dir).put(key, engine.serialize(engine.compile(config, tampered)))
    assert len(entries(cache_dir)) == 1
    strict = make_runtime()
    with pytest.raises(SignatureError):
        strict.load(tampered)
    assert disk(strict).lookups == 0


def test_an_untrusted_module_is_refused_before_the_cache_is_read(
    make_runtime: Callable[..., sqlwasm.Runtime], cache_dir: Path
) -> None:
    stranger = wasm_module(ADD_WAT, manifest(fn("a_f", export="f"), name="a"), key=Ed25519PrivateKey.generate())
    make_runtime(allow_unsigned=True).load(stranger)
    strict = make_runtime()
    with pytest.raises(SignatureError, match="not in trusted_keys"):
        strict.load(stranger)
    assert disk(strict).lookups == 0


# ------------------------------------------------------- damaged entries


def damage_truncate_half(entry: bytes, _: bytes) -> bytes:
    return entry[: len(entry) // 2]


def damage_truncate_into_header(entry: bytes, _: bytes) -> bytes:
    return entry[: _cache.HEADER.size - 1]


def damage_flip_a_payload_byte(entry: bytes, _: bytes) -> bytes:
    at = _cache.HEADER.size + (len(entry) - _cache.HEADER.size) // 2
    return entry[:at] + bytes([entry[at] ^ 0x01]) + entry[at + 1 :]


def damage_empty(entry: bytes, _: bytes) -> bytes:
    return b""


def damage_other_modules_entry(_: bytes, other: bytes) -> bytes:
    return other  # a whole, valid entry, but written under another key


@pytest.mark.parametrize(
    "damage",
    [
        damage_truncate_half,
        damage_truncate_into_header,
        damage_flip_a_payload_byte,
        damage_empty,
        damage_other_modules_entry,
    ],
)
def test_a_damaged_entry_is_recompiled_and_rewritten(
    make_runtime: Callable[..., sqlwasm.Runtime],
    add_module: bytes,
    mul_module: bytes,
    compiles: list[Any],
    cache_dir: Path,
    damage: Callable[[bytes, bytes], bytes],
) -> None:
    make_runtime().load(mul_module)
    (mul_entry,) = entries(cache_dir)
    make_runtime().load(add_module)
    (add_entry,) = [p for p in entries(cache_dir) if p != mul_entry]
    add_entry.write_bytes(damage(add_entry.read_bytes(), mul_entry.read_bytes()))
    compiles.clear()
    again = make_runtime()
    assert answer(again, add_module, "SELECT a_f(1)") == 2  # add's code, never mul's
    assert len(compiles) == 1 and disk(again).hits == 0 and disk(again).stores == 1
    warm = make_runtime()
    assert answer(warm, add_module, "SELECT a_f(1)") == 2
    assert len(compiles) == 1 and disk(warm).hits == 1  # the rewritten entry is whole


def test_code_the_engine_refuses_is_recompiled(
    make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, compiles: list[Any], cache_dir: Path
) -> None:
    """A whole entry whose code was compiled for other settings (as another
    wasmtime build would write): the engine refuses it, sqlwasm compiles."""
    make_runtime(fuel=1000).load(add_module)
    (metered,) = entries(cache_dir)
    make_runtime().load(add_module)
    (plain,) = [p for p in entries(cache_dir) if p != metered]
    metered_code = metered.read_bytes()[_cache.HEADER.size :]
    plain_key = bytes.fromhex(plain.name.removesuffix(_cache.SUFFIX))
    disk_cache = _cache.DiskCache(cache_dir)
    disk_cache.put(plain_key, metered_code)
    assert disk_cache.get(plain_key) == metered_code  # the header checks pass
    compiles.clear()
    again = make_runtime()
    assert answer(again, add_module, "SELECT a_f(1)") == 2
    assert [c.fuel for c in compiles] == [False] and disk(again).stores == 1


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_changed_byte_of_an_entry_is_detected(payload: bytes, data: st.DataObject) -> None:
    key = _cache.cache_key("00" * 32, "tag")
    entry = (
        _cache.HEADER.pack(_cache.MAGIC, _cache.FORMAT, key, len(payload), hashlib.sha256(payload).digest()) + payload
    )
    assert _cache._payload(entry, key) == payload
    at = data.draw(st.integers(0, len(entry) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = entry[:at] + bytes([entry[at] ^ flip]) + entry[at + 1 :]
    assert _cache._payload(changed, key) is None
    assert _cache._payload(entry + b"\x00", key) is None
    assert _cache._payload(entry, _cache.cache_key("00" * 32, "other")) is None


# ------------------------------------------------------ a private directory


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    with caplog.at_level(logging.WARNING, logger="sqlwasm"):
        yield lambda: [r.getMessage() for r in caplog.records if "compiled-module cache" in r.getMessage()]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cache, "_warned", set())


def test_created_directories_are_private(session_key: Ed25519PrivateKey, tmp_path: Path, add_module: bytes) -> None:
    directory = tmp_path / "new" / "deeper" / "cache"
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], cache_dir=directory)
    runtime.load(add_module)
    for path in (tmp_path / "new", tmp_path / "new" / "deeper", directory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    (entry,) = entries(directory)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_a_group_writable_directory_is_not_used(
    make_runtime: Callable[..., sqlwasm.Runtime],
    add_module: bytes,
    compiles: list[Any],
    cache_dir: Path,
    warnings_logged: Callable[[], list[str]],
) -> None:
    make_runtime().load(add_module)  # an entry another user could have replaced
    cache_dir.chmod(0o770)
    for _ in range(2):
        runtime = make_runtime()
        assert answer(runtime, add_module, "SELECT a_f(1)") == 2
        assert disk(runtime).hits == 0 and disk(runtime).stores == 0
    assert len(compiles) == 3
    (warning,) = warnings_logged()  # once, naming the cause
    assert str(cache_dir) in warning and "writable by group or others" in warning
    assert _cache.summary(cache_dir).usable is False


def test_a_directory_owned_by_someone_else_is_not_used(
    make_runtime: Callable[..., sqlwasm.Runtime],
    add_module: bytes,
    compiles: list[Any],
    cache_dir: Path,
    warnings_logged: Callable[[], list[str]],
) -> None:
    if os.geteuid() == 0:
        cache_dir.mkdir(mode=0o700)
        os.chown(cache_dir, 12345, 12345)
        foreign = cache_dir
    else:
        foreign = Path("/")  # root's, not this user's
    runtime = make_runtime(cache_dir=foreign)
    assert answer(runtime, add_module, "SELECT a_f(1)") == 2
    assert len(compiles) == 1 and disk(runtime).stores == 0
    (warning,) = warnings_logged()
    assert "owned by uid" in warning


def test_a_directory_under_a_parent_others_can_write_is_not_used(
    session_key: Ed25519PrivateKey, tmp_path: Path, add_module: bytes, warnings_logged: Callable[[], list[str]]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # someone else could rename the cache away and put their own in its place
    directory = shared / "cache"
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], cache_dir=directory)
    runtime.load(add_module)
    assert entries(directory) == []
    (warning,) = warnings_logged()
    assert "not sticky" in warning
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot rename what is not theirs
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], cache_dir=directory)
    runtime.load(add_module)
    assert len(entries(directory)) == 1


def test_an_entry_that_is_a_symlink_is_not_followed(
    make_runtime: Callable[..., sqlwasm.Runtime],
    add_module: bytes,
    compiles: list[Any],
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    make_runtime().load(add_module)
    (entry,) = entries(cache_dir)
    elsewhere = tmp_path / "elsewhere"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere)
    runtime = make_runtime()
    runtime.load(add_module)
    assert disk(runtime).hits == 0 and len(compiles) == 2


# --------------------------------------------------------- no disk cache


def test_cache_dir_none_writes_nothing(
    session_key: Ed25519PrivateKey,
    add_module: bytes,
    compiles: list[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(_cache.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for _ in range(2):
        runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], cache_dir=None)
        assert runtime._disk_cache is None
        assert answer(runtime, add_module, "SELECT a_f(1)") == 2
    assert len(compiles) == 2
    assert list(tmp_path.iterdir()) == []


def test_an_empty_environment_variable_turns_the_default_cache_off(
    session_key: Ed25519PrivateKey, add_module: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_cache.ENV_VAR, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()])
    assert runtime._disk_cache is None
    runtime.load(add_module)
    assert list(tmp_path.iterdir()) == []


def test_the_default_is_the_xdg_cache_directory(
    session_key: Ed25519PrivateKey, add_module: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG applies on Linux and other Unixes")
    monkeypatch.delenv(_cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    sqlwasm.Runtime(trusted_keys=[session_key.public_key()]).load(add_module)
    assert len(entries(tmp_path / "xdg" / "sqlwasm")) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the spec: a relative path is invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.user_cache_dir() == tmp_path / "home" / ".cache" / "sqlwasm"


# ------------------------------------------------------- concurrent writers

WRITER = """
import sys
from pathlib import Path
from sqlwasm import _cache
cache = _cache.DiskCache(Path(sys.argv[1]))
key, fill = bytes.fromhex(sys.argv[2]), int(sys.argv[3])
for _ in range(int(sys.argv[4])):
    cache.put(key, bytes([fill]) * (1 << 20))
"""


def test_concurrent_writers_never_leave_a_damaged_entry(cache_dir: Path) -> None:
    """Processes and threads write the same key at once while another thread
    reads: every read is a whole entry of one writer, or nothing yet."""
    key = _cache.cache_key("11" * 32, "tag")
    cache = _cache.DiskCache(cache_dir)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cache_dir), key.hex(), str(fill), "15"], cwd=cache_dir.parent
        )
        for fill in (1, 2, 3)
    ]
    threads = [
        threading.Thread(target=lambda f=fill: [cache.put(key, bytes([f]) * (1 << 20)) for _ in range(15)])
        for fill in (4, 5)
    ]
    for thread in threads:
        thread.start()
    seen: set[int] = set()
    while any(w.poll() is None for w in writers) or any(t.is_alive() for t in threads):
        payload = cache.get(key)
        if payload is not None:
            assert len(payload) == 1 << 20 and payload == payload[:1] * len(payload)
            seen.add(payload[0])
    for thread in threads:
        thread.join()
    assert [w.wait() for w in writers] == [0, 0, 0]
    final = cache.get(key)
    assert final is not None and final[0] in {1, 2, 3, 4, 5} and final == final[:1] * len(final)
    assert seen <= {1, 2, 3, 4, 5} and seen
    assert [p.name for p in cache_dir.iterdir()] == [key.hex() + _cache.SUFFIX]  # no temporary file left


def test_threads_loading_one_module_share_one_entry(
    make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, cache_dir: Path
) -> None:
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(answer(make_runtime(), add_module, "SELECT a_f(1)")))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [2] * 6
    assert len(entries(cache_dir)) == 1
    assert answer(make_runtime(), add_module, "SELECT a_f(2)") == 3


# ------------------------------------------------------------------- CLI


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert _cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_cache_info_and_clear(
    capsys: pytest.CaptureFixture[str],
    make_runtime: Callable[..., sqlwasm.Runtime],
    add_module: bytes,
    mul_module: bytes,
    cache_dir: Path,
) -> None:
    runtime = make_runtime()
    runtime.load(add_module)
    runtime.load(mul_module)
    size = sum(p.stat().st_size for p in entries(cache_dir))
    out = cli(capsys, "cache", "info", "--dir", str(cache_dir))
    assert out.splitlines() == [f"directory {cache_dir}", f"entries   2 ({size:,} bytes)", "usable    yes"]
    info = json.loads(cli(capsys, "cache", "info", "--dir", str(cache_dir), "--json"))
    assert info == {
        "directory": str(cache_dir),
        "exists": True,
        "usable": True,
        "reason": "",
        "entries": 2,
        "bytes": size,
        "toolchains": {},
    }
    assert (
        cli(capsys, "cache", "clear", "--dir", str(cache_dir)) == f"removed 2 files ({size:,} bytes) from {cache_dir}\n"
    )
    assert entries(cache_dir) == []
    assert json.loads(cli(capsys, "cache", "info", "--dir", str(cache_dir), "--json"))["entries"] == 0


def test_toolchains_are_listed_and_kept_unless_asked(
    capsys: pytest.CaptureFixture[str], make_runtime: Callable[..., sqlwasm.Runtime], add_module: bytes, cache_dir: Path
) -> None:
    """The AssemblyScript compiler and the JS engine live in subdirectories
    of the cache: `cache info` shows them, `cache clear` keeps them (they take
    a download or a minute to make again) unless --toolchains."""
    make_runtime().load(add_module)
    for name, sizes in (("javascript", (1000, 234)), ("assemblyscript-0.28.20", (50,))):
        for i, size in enumerate(sizes):
            path = cache_dir / name / "deeper" / f"f{i}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * size)
    (cache_dir / "javascript" / "link").symlink_to("/etc/hostname")  # a link's target is not counted, nor removed
    out = cli(capsys, "cache", "info", "--dir", str(cache_dir)).splitlines()
    assert "toolchains assemblyscript-0.28.20 (50 bytes), javascript (1,234 bytes)" in out
    out = cli(capsys, "cache", "clear", "--dir", str(cache_dir)).splitlines()
    assert out[0].startswith("removed 1 files (")
    assert out[1] == "kept the toolchains assemblyscript-0.28.20 (50 bytes), javascript (1,234 bytes): remove them too with --toolchains"
    assert entries(cache_dir) == [] and (cache_dir / "javascript" / "deeper" / "f0").exists()
    done = json.loads(cli(capsys, "cache", "clear", "--toolchains", "--dir", str(cache_dir), "--json"))
    assert done == {"directory": str(cache_dir), "removed": 2, "bytes": 1284, "kept_toolchains": {}}
    assert list(cache_dir.iterdir()) == [] and Path("/etc/hostname").exists()
    with pytest.raises(SystemExit):
        _cli.main(["cache", "info", "--toolchains", "--dir", str(cache_dir)])
    assert "--toolchains is for `sqlwasm cache clear`" in capsys.readouterr().err


def test_cache_info_says_why_a_directory_is_not_used(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    cache_dir.chmod(0o707)
    out = cli(capsys, "cache", "info", "--dir", str(cache_dir))
    assert "usable    no: it is writable by group or others (mode 707)" in out
    out = cli(capsys, "cache", "info", "--dir", str(cache_dir.parent / "new"))
    assert "usable    yes (made on first load)" in out
    out = cli(capsys, "cache", "info", "--dir", str(cache_dir / "new"))
    assert "usable    no: " in out and "writable by group or others and not sticky" in out


def test_cache_info_uses_the_environment_variable(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_cache.ENV_VAR, str(cache_dir))
    assert json.loads(cli(capsys, "cache", "info", "--json"))["directory"] == str(cache_dir)
    monkeypatch.setenv(_cache.ENV_VAR, "")
    info = json.loads(cli(capsys, "cache", "info", "--json"))
    assert info["directory"] is None and info["reason"] == "SQLWASM_CACHE_DIR is empty"
