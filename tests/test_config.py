"""The config file (sqlwasm.toml): every key, paths relative to the file,
errors that name the file and the key, where it is found (--config, then
$SQLWASM_CONFIG, then ./sqlwasm.toml), installing through it into both kinds
of connection, and the CLI's --config with options that add to or override it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import apsw
import pytest
from conftest import MEMORY, KeyPair, fn, manifest, wasm_module
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm import _cli
from sqlwasm._cli.loading import Loader
from sqlwasm._config import ENV_VAR, Config, ConfigError, ModuleRef, load_config
from sqlwasm._signing import load_public_key

WAT = MEMORY + """
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "spin") (param i64) (result i64) (loop $l br $l) i64.const 0)
"""
FUNCTIONS = (fn("t_add", export="add", args=["integer", "integer"]), fn("t_spin", export="spin"))
HAVERSINE = "SELECT round(geo_haversine(51.5074, -0.1278, 48.8566, 2.3522))"


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test finds only the config it writes: no $SQLWASM_CONFIG, and a
    current directory of its own."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


@pytest.fixture
def signed(tmp_path: Path, keypair: KeyPair) -> Path:
    """A module signed by keypair, in tmp_path/modules/."""
    (tmp_path / "modules").mkdir()
    path = tmp_path / "modules" / "t.wasm"
    path.write_bytes(wasm_module(WAT, manifest(*FUNCTIONS), key=keypair.private))
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ parsing


def test_every_key(tmp_path: Path, keypair: KeyPair, signed: Path) -> None:
    key_text = EXAMPLES_PUBLIC_KEY.read_text(encoding="utf-8").strip()
    config_path = write(tmp_path / "sqlwasm.toml", f"""
trusted_keys = ["publisher.pub", "{key_text}"]
modules = ["modules", "geo"]
allow_unsigned = true
grant = {{ sql = ["edges"], log = true, clock = false }}
cache_dir = "compiled"
[limits]
timeout_ms = 250
fuel = 1000000
memory_pages = 64
max_result_bytes = 4096
""")
    config = load_config(config_path)
    assert config is not None
    assert [k.raw for k in config.trusted_keys] == [keypair.public.raw, load_public_key(EXAMPLES_PUBLIC_KEY).raw]
    assert config.modules == (ModuleRef(signed, example=False), ModuleRef(module_path("geo"), example=True))
    assert config.allow_unsigned is True
    assert config.grant == {"sql": ["edges"], "log": True, "clock": False}
    assert config.limits == {"timeout_ms": 250, "fuel": 1_000_000, "memory_pages": 64, "max_result_bytes": 4096}
    assert config.cache_dir == tmp_path / "compiled"


def test_defaults_and_simple_forms(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.toml", 'grant = ["log", "clock"]\ncache_dir = false\n'))
    assert config is not None
    assert (config.trusted_keys, config.modules, config.allow_unsigned, config.limits) == ((), (), False, {})
    assert config.grant == {"log": True, "clock": True}
    assert config.cache_dir is None
    assert repr(load_config(write(tmp_path / "d.toml", "")).cache_dir) == "USER_CACHE"  # type: ignore[union-attr]


def test_relative_paths_are_relative_to_the_file_not_the_current_directory(
    tmp_path: Path, keypair: KeyPair, signed: Path
) -> None:
    config_path = write(tmp_path / "sqlwasm.toml", 'trusted_keys = ["publisher.pub"]\nmodules = ["modules/t.wasm"]\n')
    assert Path.cwd() != tmp_path
    conn = sqlite3.connect(":memory:")
    config = load_config(config_path)
    assert config is not None
    config.install(conn)
    assert conn.execute("SELECT t_add(40, 2)").fetchall() == [(42,)]


@pytest.mark.parametrize(
    ("text", "key", "cause"),
    [
        ('trust = ["a.pub"]', "trust", "unknown key"),
        ('trusted_keys = ["missing.pub"]', "trusted_keys[0]", "cannot read trusted key"),
        ('trusted_keys = ["sqlwasm-ed25519 bm90IGEga2V5"]', "trusted_keys[0]", ""),
        ("trusted_keys = [1]", "trusted_keys", "list of non-empty strings"),
        ('modules = ["nowhere.wasm"]', "modules[0]", "no module nowhere.wasm"),
        ('modules = ["geo", "nosuchexample"]', "modules[1]", "nor the name of a shipped example"),
        ('modules = ["empty"]', "modules[0]", "no .wasm modules in directory"),
        ('allow_unsigned = "yes"', "allow_unsigned", "must be true or false"),
        ('grant = ["teleport"]', "grant", "unknown capabilities ['teleport']"),
        ('grant = { log = ["t"] }', "grant", "only 'sql' takes a list"),
        ("grant = 3", "grant", "must be a list of capabilities"),
        ("limits = 3", "limits", "must be a table"),
        ("[limits]\ntimeout = 5", "limits.timeout", "unknown limit"),
        ("[limits]\nfuel = 0", "limits.fuel", "must be a positive integer"),
        ('[limits]\ntimeout_ms = "5"', "limits.timeout_ms", "must be a positive integer"),
        ("[limits]\nmemory_pages = 99999999", "limits.memory_pages", "at most"),
        ("cache_dir = true", "cache_dir", "false for no disk cache"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, key: str, cause: str) -> None:
    (tmp_path / "empty").mkdir()
    path = write(tmp_path / "sqlwasm.toml", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert isinstance(info.value, sqlwasm.Error)
    assert str(info.value).startswith(f"config file {path}: {key}: "), str(info.value)
    assert cause in str(info.value)


def test_not_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "sqlwasm.toml", 'modules = ["geo"]\nlimits = ]\nfuel = 1\n')
    with pytest.raises(ConfigError, match=rf"^config file {path}: not valid TOML: .*line 2"):
        load_config(path)


# ------------------------------------------------------- where it is found


def test_explicit_path_then_environment_then_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "explicit.toml", "[limits]\nfuel = 1\n")
    from_env = write(tmp_path / "env.toml", "[limits]\nfuel = 2\n")
    write(Path.cwd() / "sqlwasm.toml", "[limits]\nfuel = 3\n")

    def fuel(path: Path | None = None) -> int:
        config = load_config(path)
        assert config is not None
        return config.limits["fuel"]

    assert fuel() == 3
    monkeypatch.setenv(ENV_VAR, str(from_env))
    assert fuel() == 2
    assert fuel(explicit) == 1
    monkeypatch.setenv(ENV_VAR, "")  # empty: not set
    assert fuel() == 3


def test_no_config_anywhere_is_none() -> None:
    assert load_config() is None


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read config file .*missing.toml: No such file"):
        load_config(tmp_path / "missing.toml")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=rf"gone.toml \(from \${ENV_VAR}\): No such file"):
        load_config()


def test_one_config_and_one_runtime_per_file(tmp_path: Path) -> None:
    """A process opening many connections verifies and compiles once; an
    edited file is read again."""
    path = write(tmp_path / "sqlwasm.toml", 'modules = ["geo"]\n')
    first = load_config(path)
    assert first is not None and load_config(path) is first
    modules = first.load()
    assert first.install(sqlite3.connect(":memory:")) == modules  # the same Module objects: loaded once
    write(path, 'modules = ["geo", "stats"]\n# edited\n')
    second = load_config(path)
    assert second is not first and [m.name for m in second.load()] == ["geo", "stats"]  # type: ignore[union-attr]


# ------------------------------------------------------------- installing


@pytest.mark.parametrize("kind", ["sqlite3", "apsw"])
def test_install_applies_trust_grant_and_limits(tmp_path: Path, keypair: KeyPair, signed: Path, kind: str) -> None:
    path = write(tmp_path / "sqlwasm.toml", """
trusted_keys = ["publisher.pub"]
modules = ["modules", "geo"]
[limits]
timeout_ms = 50
""")
    config = load_config(path)
    assert config is not None
    conn = sqlite3.connect(":memory:") if kind == "sqlite3" else apsw.Connection(":memory:")
    assert [m.name for m in config.install(conn)] == ["t", "geo"]
    assert conn.execute(HAVERSINE).fetchall() in ([(344.0,)], [(344.0,)])
    with pytest.raises((sqlite3.OperationalError, apsw.SQLError), match="time limit"):
        conn.execute("SELECT t_spin(1)").fetchall()
    assert [tuple(r) for r in conn.execute("SELECT t_add(1, 2)").fetchall()] == [(3,)]


def test_an_untrusted_module_is_refused(tmp_path: Path, signed: Path) -> None:
    config = load_config(write(tmp_path / "sqlwasm.toml", 'modules = ["modules/t.wasm"]\n'))
    assert config is not None
    with pytest.raises(sqlwasm.SignatureError):
        config.install(sqlite3.connect(":memory:"))


def test_a_capability_not_granted_is_refused_and_granted_loads(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "logs.wasm").write_bytes(wasm_module(WAT, manifest(*FUNCTIONS, capabilities=["log"])))
    refused = load_config(write(tmp_path / "a.toml", 'modules = ["m"]\nallow_unsigned = true\n'))
    assert refused is not None
    with pytest.raises(sqlwasm.CapabilityError, match="log"):
        refused.load()
    granted = load_config(write(tmp_path / "b.toml", 'modules = ["m"]\nallow_unsigned = true\ngrant = ["log"]\n'))
    assert granted is not None and [m.name for m in granted.load()] == ["t"]


def test_an_empty_config_installs_nothing() -> None:
    assert Config(source="test").install(sqlite3.connect(":memory:")) == []


# ----------------------------------------------------------------- the CLI


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = _cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_config_gives_modules_keys_and_limits(
    tmp_path: Path, keypair: KeyPair, signed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "conf" / "sqlwasm.toml", """
trusted_keys = ["../publisher.pub"]
modules = ["../modules", "geo"]
[limits]
timeout_ms = 30
""")
    status, out, err = run(capsys, "query", ":memory:", "--config", path, "--json", HAVERSINE + " AS km, t_add(1, 2) AS s")
    assert (status, err) == (0, "") and '"km": 344.0' in out and '"s": 3' in out
    status, out, err = run(capsys, "query", ":memory:", "--config", path, "SELECT t_spin(1)")
    assert status == 1 and "time limit" in err


def test_cli_options_add_to_and_override_the_file(
    tmp_path: Path, keypair: KeyPair, signed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "sqlwasm.toml", 'modules = ["geo"]\n[limits]\ntimeout_ms = 30\nfuel = 1000000000\n')
    argv = ["query", ":memory:", "--config", path, "--load", signed, "--trust", keypair.pub_path]
    # --load and --trust add to the file's modules and keys
    status, out, err = run(capsys, *argv, "--json", HAVERSINE + " AS km, t_add(1, 2) AS s")
    assert (status, err) == (0, "") and '"km": 344.0' in out
    # --fuel replaces the file's fuel; the file's timeout stays
    status, out, err = run(capsys, *argv, "--fuel", 10_000, "SELECT t_spin(1)")
    assert status == 1 and "fuel" in err
    status, out, err = run(capsys, *argv, "--timeout-ms", 20, "SELECT t_spin(1)")
    assert status == 1 and "time limit" in err


def test_cli_grant_adds_to_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "logs.wasm").write_bytes(
        wasm_module(WAT, manifest(*FUNCTIONS, capabilities=["log", "clock"]))
    )
    path = write(tmp_path / "sqlwasm.toml", 'modules = ["m"]\nallow_unsigned = true\ngrant = ["log"]\n')
    status, out, err = run(capsys, "query", ":memory:", "--config", path, "SELECT t_add(1, 2)")
    assert status == 1 and "needs capability 'clock'" in err
    status, out, err = run(capsys, "query", ":memory:", "--config", path, "--grant", "clock", "--json", "SELECT t_add(1, 2) AS s")
    assert status == 0 and '"s": 3' in out


def test_cli_finds_the_config_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path / "sqlwasm.toml", 'modules = ["geo"]\n')))
    status, out, err = run(capsys, "query", ":memory:", "--json", HAVERSINE + " AS km")
    assert (status, err) == (0, "") and '"km": 344.0' in out


def test_cli_config_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "sqlwasm.toml", "[limits]\nfuel = -1\n")
    status, out, err = run(capsys, "query", ":memory:", "--config", path, "SELECT 1")
    assert (status, out) == (1, "")
    assert err == f"sqlwasm: error: config file {path}: limits.fuel: must be a positive integer, got -1\n"


# ------------------------------------------------- modules stored in the database


@pytest.fixture
def stored_geo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A database with the signed geo module stored in it."""
    db = tmp_path / "stored.db"
    assert _cli.main(["store", str(db), str(module_path("geo")), "--trust", str(EXAMPLES_PUBLIC_KEY), "--create"]) == 0
    capsys.readouterr()
    return db


def test_db_modules_installs_the_stored_modules_verified_against_the_files_keys(
    tmp_path: Path, stored_geo: Path
) -> None:
    trusting = load_config(write(tmp_path / "a.toml", f'db_modules = true\ntrusted_keys = ["{EXAMPLES_PUBLIC_KEY}"]\n'))
    assert trusting is not None and trusting.db_modules is True
    conn = sqlite3.connect(stored_geo)
    assert [m.name for m in trusting.install(conn)] == ["geo"]
    assert conn.execute(HAVERSINE).fetchall() == [(344.0,)]
    untrusting = load_config(write(tmp_path / "b.toml", "db_modules = true\n"))
    assert untrusting is not None
    with pytest.raises(sqlwasm.SignatureError, match="module 'geo' stored in"):
        untrusting.install(sqlite3.connect(stored_geo))
    # without db_modules the stored modules stay where they are
    off = load_config(write(tmp_path / "c.toml", f'trusted_keys = ["{EXAMPLES_PUBLIC_KEY}"]\n'))
    assert off is not None and off.install(sqlite3.connect(stored_geo)) == []


def test_db_modules_must_be_a_boolean(tmp_path: Path) -> None:
    path = write(tmp_path / "sqlwasm.toml", 'db_modules = "yes"\n')
    with pytest.raises(ConfigError, match=rf"^config file {path}: db_modules: must be true or false"):
        load_config(path)


def test_cli_takes_db_modules_from_the_file(
    tmp_path: Path, stored_geo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "sqlwasm.toml", f'db_modules = true\ntrusted_keys = ["{EXAMPLES_PUBLIC_KEY}"]\n')
    status, out, err = run(capsys, "query", stored_geo, "--config", path, "--json", HAVERSINE + " AS km")
    assert (status, err) == (0, "") and '"km": 344.0' in out


def test_a_query_over_shards_takes_the_files_modules_and_limits(tmp_path: Path) -> None:
    """What `query --map` hands to the workers (the Dask run itself is
    tested in test_distributed)."""
    path = write(tmp_path / "sqlwasm.toml", 'modules = ["geo"]\nallow_unsigned = true\n[limits]\nfuel = 5000\n')
    args = _cli.parser().parse_args(["query", "shards/*.db", "--map", "SELECT 1", "--config", str(path)])
    loader = Loader(args)
    module_bytes, keys = loader.shard_modules(args)
    assert module_bytes == [module_path("geo").read_bytes()]
    assert keys == [EXAMPLES_PUBLIC_KEY]
    assert (loader.limits, loader.allow_unsigned) == ({"fuel": 5000}, True)
