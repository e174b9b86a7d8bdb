"""The sqlite-utils and Datasette plugins, as users meet them: sqlite-utils'
Python API and its command (with $SQLWASM_CONFIG), and a real Datasette
server on 127.0.0.1 configured under `plugins: sqlwasm:`, asked over HTTP.

Commands run outside the checkout: CI installs the package and does not
build the checkout's sqlwasm/, which a process started in the repository
root would import."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlite_utils
from conftest import MEMORY, fn, manifest, wasm_module
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from geo_reference import geo_haversine

from sqlwasm._config import ENV_VAR
from sqlwasm._signing import generate_keypair, load_private_key

OUTSIDE = tempfile.gettempdir()
HAVERSINE = "select round(geo_haversine(51.5074, -0.1278, 48.8566, 2.3522), 3) as km"
KM = round(geo_haversine(51.5074, -0.1278, 48.8566, 2.3522), 3)  # the reference implementation's

WAT = MEMORY + """
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "spin") (param i64) (result i64) (loop $l br $l) i64.const 0)
  (func (export "boom") (param i64) (result i64) unreachable)
"""
FUNCTIONS = (
    fn("t_add", export="add", args=["integer", "integer"]),
    fn("t_spin", export="spin"),
    fn("t_boom", export="boom"),
)


def setup_directory(directory: Path) -> Path:
    """A key pair, a module it signs (modules/t.wasm) and a database with a
    table; returns the database."""
    _, pub = generate_keypair("publisher", directory)
    (directory / "modules").mkdir()
    (directory / "modules" / "t.wasm").write_bytes(
        wasm_module(WAT, manifest(*FUNCTIONS), key=load_private_key(directory / "publisher.key"))
    )
    db = directory / "data.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE places(name TEXT, lat REAL, lon REAL)")
        conn.execute("INSERT INTO places VALUES ('Paris', 48.8566, 2.3522)")
    conn.close()
    return db


SETTINGS = {
    "trusted_keys": ["publisher.pub"],
    "modules": ["modules", "geo"],
    "limits": {"timeout_ms": 100},
}


# ------------------------------------------------------------ sqlite-utils


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$SQLWASM_CONFIG names a config file (in a directory that is not the current one)."""
    db = setup_directory(tmp_path)
    config = tmp_path / "sqlwasm.toml"
    config.write_text(
        'trusted_keys = ["publisher.pub"]\nmodules = ["modules", "geo"]\n[limits]\ntimeout_ms = 100\n', encoding="utf-8"
    )
    monkeypatch.setenv(ENV_VAR, str(config))
    return db


def test_sqlite_utils_knows_the_plugin() -> None:
    from sqlite_utils.plugins import get_plugins

    assert any(p["name"] == "sqlwasm" and "prepare_connection" in p["hooks"] for p in get_plugins())


def test_sqlite_utils_database_has_the_modules(configured: Path) -> None:
    db = sqlite_utils.Database(configured)
    assert db.execute(HAVERSINE).fetchall() == [(KM,)]
    assert db.execute("select t_add(40, 2)").fetchall() == [(42,)]
    with pytest.raises(sqlite3.OperationalError, match="time limit"):
        db.execute("select t_spin(1)").fetchall()
    assert db.execute("select name from places").fetchall() == [("Paris",)]
    memory = sqlite_utils.Database(memory=True)
    assert memory.execute(HAVERSINE).fetchall() == [(KM,)]


def test_sqlite_utils_without_a_config_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    db = sqlite_utils.Database(memory=True)
    assert db.execute("select 40 + 2").fetchall() == [(42,)]
    with pytest.raises(sqlite3.OperationalError, match="no such function: geo_haversine"):
        db.execute(HAVERSINE)


def test_sqlite_utils_command(configured: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "query", str(configured), HAVERSINE],
        capture_output=True, text=True, timeout=60, cwd=OUTSIDE, env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"km": KM}]


def test_sqlite_utils_command_with_a_bad_config_says_why_in_one_line(configured: Path) -> None:
    config = configured.parent / "sqlwasm.toml"
    config.write_text("[limits]\nfuel = 0\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "query", str(configured), "select 1"],
        capture_output=True, text=True, timeout=60, cwd=OUTSIDE, env=os.environ.copy(),
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"Error: config file {config}: limits.fuel: must be a positive integer, got 0\n"


def test_sqlite_utils_database_with_a_bad_config_raises_the_config_error(configured: Path) -> None:
    from sqlwasm._config import ConfigError

    (configured.parent / "sqlwasm.toml").write_text('modules = ["missing.wasm"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"modules\[0\]: no module missing.wasm"):
        sqlite_utils.Database(memory=True)


# ---------------------------------------------------------------- Datasette


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    def query(self, sql: str) -> tuple[int, Any]:
        query = urllib.parse.urlencode({"sql": sql, "_shape": "array"})
        return get(f"http://127.0.0.1:{self.port}/data.json?{query}")


def start_datasette(
    directory: Path, metadata: dict[str, Any], *, config_dir: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """`datasette serve data.db -m metadata.json` in directory, or with
    config_dir `datasette serve DIRECTORY` (configuration-directory mode)
    from elsewhere."""
    (directory / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    port = free_port()
    served = [str(directory)] if config_dir else ["data.db", "-m", "metadata.json"]
    process = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", *served, "-h", "127.0.0.1", "-p", str(port)],
        cwd=OUTSIDE if config_dir else directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return process, port


@contextmanager
def running(process: subprocess.Popen[str], port: int) -> Iterator[Server]:
    """The server once it answers; stopped afterwards."""
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"http://127.0.0.1:{port}/-/versions.json")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.communicate(timeout=5)[0] if process.poll() is not None else "(still running)"
                pytest.fail(f"datasette did not start: {output}")
            time.sleep(0.1)
        yield Server(process, port)
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.fixture(scope="module")
def datasette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, started in its own directory (outside
    the checkout): relative paths in its configuration are relative to it."""
    directory = tmp_path_factory.mktemp("datasette")
    setup_directory(directory)
    with running(*start_datasette(directory, {"plugins": {"sqlwasm": SETTINGS}})) as server:
        yield server


def test_datasette_answers_a_wasm_query(datasette: Server) -> None:
    assert datasette.query(HAVERSINE) == (200, [{"km": KM}])
    status, rows = datasette.query(
        "select name, round(geo_haversine(lat, lon, 51.5074, -0.1278)) as km, t_add(1, 2) as s from places"
    )
    assert (status, rows) == (200, [{"name": "Paris", "km": 344.0, "s": 3}])


@pytest.mark.parametrize(("sql", "cause"), [("select t_boom(1)", "unreachable"), ("select t_spin(1)", "time limit")])
def test_datasette_trap_and_timeout_are_its_normal_errors(datasette: Server, sql: str, cause: str) -> None:
    started = time.monotonic()
    status, body = datasette.query(sql)
    assert status == 400
    assert body["ok"] is False and body["error"].startswith("t.t_") and cause in body["error"], body
    assert time.monotonic() - started < 5
    assert datasette.query(HAVERSINE) == (200, [{"km": KM}])  # the server keeps answering
    assert datasette.process.poll() is None


def test_datasette_error_page(datasette: Server) -> None:
    """The HTML page shows the guest's error as Datasette shows any SQL error."""
    url = f"http://127.0.0.1:{datasette.port}/data?" + urllib.parse.urlencode({"sql": "select t_boom(1)"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=30)
    page = info.value.read().decode("utf-8")
    assert info.value.code == 400 and "t.t_boom" in page and "unreachable" in page


def test_datasette_configuration_directory_is_where_relative_paths_start(tmp_path: Path) -> None:
    setup_directory(tmp_path)
    with running(*start_datasette(tmp_path, {"plugins": {"sqlwasm": SETTINGS}}, config_dir=True)) as server:
        assert server.query("select t_add(40, 2) as s") == (200, [{"s": 42}])


def test_datasette_bad_configuration_stops_it_at_startup(tmp_path: Path) -> None:
    setup_directory(tmp_path)
    bad = {**SETTINGS, "limits": {"fuel": 0}}
    process, _ = start_datasette(tmp_path, {"plugins": {"sqlwasm": bad}})
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 1
    assert output.endswith(
        "Error: Datasette's plugins.sqlwasm configuration: limits.fuel: must be a positive integer, got 0\n"
    ) and "Traceback" not in output, output


def test_untrusted_key_is_refused_by_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin loads what the config trusts, nothing more: a module signed
    by another key is refused."""
    import sqlwasm

    setup_directory(tmp_path)
    other = Ed25519PrivateKey.generate()
    (tmp_path / "modules" / "t.wasm").write_bytes(wasm_module(WAT, manifest(*FUNCTIONS), key=other))
    config = tmp_path / "sqlwasm.toml"
    config.write_text('trusted_keys = ["publisher.pub"]\nmodules = ["modules"]\n', encoding="utf-8")
    monkeypatch.setenv(ENV_VAR, str(config))
    with pytest.raises(sqlwasm.SignatureError):
        sqlite_utils.Database(memory=True)
