"""The command line as a user meets it: errors in its own words (one line,
exit status 1; usage errors 2), grants and limits, loading by name, query's
conveniences, the shell's module commands, and the Python API's edges."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import MEMORY, KeyPair, fn, manifest, wasm_module
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path
from test_cli import without_unsigned_warnings

import sqlwasm
from sqlwasm import _cli
from sqlwasm._cli.loading import grant_from_args
from sqlwasm._signing import generate_keypair, load_public_key, load_trusted_keys

REPO = Path(__file__).resolve().parents[1]
GEO = str(module_path("geo"))
EXAMPLES_PUB = str(EXAMPLES_PUBLIC_KEY)
EXAMPLES_KEY_ID = load_public_key(EXAMPLES_PUBLIC_KEY).key_id

WAT = MEMORY + """
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "spin") (param i64) (result i64) (loop $l br $l) i64.const 0)
"""
FUNCTIONS = (
    fn("t_add", export="add", args=["integer", "integer"]),
    fn("t_spin", export="spin"),
)


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    status = _cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def error(capsys: pytest.CaptureFixture[str], *argv: Any) -> str:
    """A command that must fail with one line and status 1: that line's message."""
    status, out, err = run(capsys, *argv)
    assert status == 1, (out, err)
    err = without_unsigned_warnings(err)
    assert err.startswith("sqlwasm: error: ") and err.count("\n") == 1, err
    return err.removeprefix("sqlwasm: error: ").rstrip("\n")


def usage_error(capsys: pytest.CaptureFixture[str], *argv: Any) -> str:
    """A command line that must be refused as a usage error (status 2): the message."""
    with pytest.raises(SystemExit) as exc:
        _cli.main([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sqlwasm ") and "Traceback" not in err
    return err.splitlines()[-1]


@pytest.fixture
def unsigned(tmp_path: Path) -> Path:
    path = tmp_path / "t.wasm"
    path.write_bytes(wasm_module(WAT, manifest(*FUNCTIONS)))
    return path


@pytest.fixture
def signed(tmp_path: Path, keypair: KeyPair) -> Path:
    path = tmp_path / "t-signed.wasm"
    path.write_bytes(wasm_module(WAT, manifest(*FUNCTIONS), key=keypair.private))
    return path


@pytest.fixture
def logging_module(tmp_path: Path) -> Path:
    """A module that declares the `log` capability."""
    path = tmp_path / "logs.wasm"
    path.write_bytes(wasm_module(WAT, manifest(*FUNCTIONS, name="logs", capabilities=["log"])))
    return path


# ------------------------------------------------- errors in the CLI's words


def test_missing_output_directory(tmp_path: Path, unsigned: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing" / "out.wasm"
    assert error(capsys, "sign", unsigned, "--key", keypair.key_path, "-o", out) == (
        f"cannot write {out}: No such file or directory"
    )
    # build says so before compiling (no compiler runs: the source does not even exist)
    assert error(capsys, "build", tmp_path / "none.c", "--manifest", tmp_path / "none.toml", "-o", out) == (
        f"cannot write {out}: there is no directory {out.parent}"
    )


def test_output_is_a_directory(tmp_path: Path, unsigned: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    assert error(capsys, "sign", unsigned, "--key", keypair.key_path, "-o", tmp_path) == (
        f"cannot write {tmp_path}: Is a directory"
    )
    assert error(capsys, "build", tmp_path / "none.c", "--manifest", tmp_path / "none.toml", "-o", tmp_path) == (
        f"cannot write {tmp_path}: it is a directory"
    )


@pytest.mark.parametrize("name", ["../escape", "..", "a..b", "sub/k", "back\\slash"])
def test_keygen_name_that_could_leave_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    message = error(capsys, "keygen", name, "--dir", keys)
    assert message == f"key name {name!r} must be printable UTF-8 text, not empty, without '/', '\\' or '..'"
    assert list(tmp_path.rglob("*")) == [keys]


@pytest.mark.parametrize("rows", ["-1", "many"])
def test_demo_rows_must_be_a_count(capsys: pytest.CaptureFixture[str], rows: str) -> None:
    message = usage_error(capsys, "demo", "--rows", rows)
    assert message.startswith("sqlwasm demo: error: argument --rows: ")


@pytest.mark.parametrize("rows", [0, 1, 10])
def test_demo_with_few_rows(capsys: pytest.CaptureFixture[str], rows: int) -> None:
    """Queries that find no reading still show their columns."""
    status, out, err = run(capsys, "demo", "--rows", rows)
    assert status == 0, err
    assert f"{rows:,} readings" in out and "  cell  n  avg_pm25" in out


@pytest.mark.parametrize("suffix, what", [("c", "C source"), ("toml", "a manifest")])
def test_load_source_or_manifest(capsys: pytest.CaptureFixture[str], suffix: str, what: str) -> None:
    path = REPO / "extensions" / "geo" / f"geo.{suffix}"
    message = error(capsys, "query", ":memory:", "SELECT 1", "--load", path)
    assert message.startswith(f"{path} is {what}, not a module: ")
    assert "sqlwasm build" in message


def test_misspelled_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "placse.db"
    for command in ("query", "shell"):
        assert error(capsys, command, db, "SELECT 1") == f"no database {db} (pass --create to make a new one)"
    assert not db.exists()
    status, out, _ = run(capsys, "query", db, "CREATE TABLE t(x)", "--create")
    assert status == 0 and db.exists()
    status, out, _ = run(capsys, "query", db, "SELECT count(*) AS n FROM t", "--json")
    assert status == 0 and json.loads(out) == [{"n": 0}]


def test_unsigned_module_says_sign_it(unsigned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert error(capsys, "query", ":memory:", "SELECT 1", "--load", unsigned) == (
        f"module {unsigned} is not signed: sign it with `sqlwasm sign {unsigned} --key NAME.key` and pass "
        "--trust NAME.pub (or pass --allow-unsigned, for development only)"
    )


def test_unknown_key_names_it_and_the_trusted_ones(
    signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = keypair.public.key_id
    assert error(capsys, "query", ":memory:", "SELECT 1", "--load", signed) == (
        f"module {signed} is signed by key {signer}, which is not trusted (trusted keys: none): "
        "pass --trust KEY.pub with its publisher's key (or --allow-unsigned, for development only)"
    )
    message = error(capsys, "query", ":memory:", "SELECT 1", "--load", signed, "--trust", EXAMPLES_PUB)
    assert f"which is not trusted (trusted keys: {EXAMPLES_KEY_ID} (examples)): pass --trust KEY.pub" in message


def test_missing_grant_says_grant_it(logging_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["query", ":memory:", "SELECT t_add(1, 2) AS s", "--load", logging_module, "--allow-unsigned"]
    assert error(capsys, *argv) == f"module 'logs' ({logging_module}) needs capability 'log': pass --grant log"
    status, out, _ = run(capsys, *argv, "--grant", "log", "--json")
    assert status == 0 and json.loads(out) == [{"s": 3}]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grant", "network"], "argument --grant: unknown capability 'network' (known: log, clock, random"),
        (["--timeout-ms", "0"], "argument --timeout-ms: must be a positive integer, got 0"),
        (["--fuel", "lots"], "argument --fuel: lots is not a whole number"),
        (["--memory-pages", "70000"], "argument --memory-pages: is 70000, at most 65536"),
        (["--max-result-bytes", "-5"], "argument --max-result-bytes: must be a positive integer, got -5"),
    ],
)
def test_limits_and_grants_out_of_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in usage_error(capsys, "query", ":memory:", "SELECT 1", *argv)


# ------------------------------------------------------- grants and limits


def test_timeout_ms(unsigned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = error(capsys, "query", ":memory:", "SELECT t_spin(1)", "--load", unsigned, "--allow-unsigned", "--timeout-ms", 30)
    assert message.startswith("t.t_spin: ") and "time limit" in message


def test_fuel(unsigned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = error(capsys, "query", ":memory:", "SELECT t_spin(1)", "--load", unsigned, "--allow-unsigned", "--fuel", 10_000)
    assert message.startswith("t.t_spin: ") and "fuel" in message


def test_memory_pages(unsigned: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    big = tmp_path / "big.wasm"
    big.write_bytes(wasm_module(WAT.replace(MEMORY, '(memory (export "memory") 3)'), manifest(*FUNCTIONS)))
    argv = ["query", ":memory:", "SELECT t_add(1, 2) AS s", "--load", big, "--allow-unsigned"]
    assert "starts with 3 pages of memory, more than the 2 it may have" in error(capsys, *argv, "--memory-pages", 2)
    assert run(capsys, *argv, "--memory-pages", 3)[0] == 0


def test_max_result_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["query", ":memory:", "SELECT geo_geohash_encode(1, 2, 11) AS h", "--load", "geo"]
    assert error(capsys, *argv, "--max-result-bytes", 5) == (
        "geo.geo_geohash_encode: result is 12 bytes, over the 5-byte result limit"
    )
    assert run(capsys, *argv, "--max-result-bytes", 12)[0] == 0


def test_grant_narrowed_to_tables_is_passed_as_a_mapping() -> None:
    """`--grant sql:T1,T2` takes the mapping form of Runtime's grant (the
    runtime's `sql` capability itself is tested where it is built)."""
    args = argparse.Namespace(grant=["log", "sql:readings,places"])
    assert grant_from_args(args) == {"log": True, "sql": ["readings", "places"]}
    assert grant_from_args(argparse.Namespace(grant=["log", "clock"])) == ["log", "clock"]


# ------------------------------------------------------------ loading


def test_load_a_shipped_example_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys, "query", ":memory:", "SELECT round(geo_haversine(0, 0, 0, 1), 1) AS km, stats_median(2) AS m",
        "--load", "geo", "--load", "stats", "--json",
    )
    assert status == 0, err
    assert json.loads(out) == [{"km": 111.2, "m": 2.0}]


def test_load_a_name_that_is_not_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert error(capsys, "query", ":memory:", "SELECT 1", "--load", "goe") == (
        "no module goe: not a file, nor the name of a shipped example (geo, geo_as, graph, stats, text)"
    )


def test_an_example_by_path_still_needs_trust(capsys: pytest.CaptureFixture[str]) -> None:
    assert "which is not trusted" in error(capsys, "query", ":memory:", "SELECT 1", "--load", GEO)


def test_modules_dir(tmp_path: Path, unsigned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "u.wasm"
    other.write_bytes(wasm_module(WAT, manifest(fn("u_add", export="add", args=["integer", "integer"]), name="u")))
    (tmp_path / "notes.txt").write_text("not a module")
    status, out, err = run(
        capsys, "query", ":memory:", "SELECT t_add(1, 2) AS t, u_add(3, 4) AS u", "--modules-dir", tmp_path,
        "--allow-unsigned", "--json",
    )
    assert status == 0, err
    assert json.loads(out) == [{"t": 3, "u": 7}]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error(capsys, "query", ":memory:", "SELECT 1", "--modules-dir", empty) == (
        f"--modules-dir {empty}: no .wasm modules in it"
    )


# ------------------------------------------------------------ query


def test_sql_from_a_file_and_from_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "q.sql"
    script.write_text("SELECT 6 * 7 AS answer")
    status, out, _ = run(capsys, "query", ":memory:", "--file", script, "--json")
    assert status == 0 and json.loads(out) == [{"answer": 42}]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"SELECT 'from stdin' AS s")))
    status, out, _ = run(capsys, "query", ":memory:", "-", "--json")
    assert status == 0 and json.loads(out) == [{"s": "from stdin"}]
    assert "not both" in usage_error(capsys, "query", ":memory:", "SELECT 1", "--file", script)
    assert "no SQL" in usage_error(capsys, "query", ":memory:")


def test_params(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "query", ":memory:", "SELECT ? AS i, ? AS r, ? AS t, typeof(?) AS n",
        "--param", "42", "--param", "-0.5", "--param", "007x", "--param", "1e3", "--json",
    )
    assert status == 0 and json.loads(out) == [{"i": 42, "r": -0.5, "t": "007x", "n": "real"}]
    status, out, _ = run(
        capsys, "query", ":memory:", "SELECT :a AS a, @b AS b", "--param", ":a=x=y", "--param", "@b=3", "--json"
    )
    assert status == 0 and json.loads(out) == [{"a": "x=y", "b": 3}]
    assert "not both" in usage_error(capsys, "query", ":memory:", "SELECT ?, :a", "--param", "1", "--param", ":a=2")
    assert "given twice" in usage_error(capsys, "query", ":memory:", "SELECT :a", "--param", ":a=1", "--param", ":a=2")


def test_rows_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.db"
    assert run(capsys, "query", db, "CREATE TABLE t(x)", "--create")[1] == ""
    assert run(capsys, "query", db, "INSERT INTO t VALUES (1), (2), (3)")[1] == "3 rows changed\n"
    assert run(capsys, "query", db, "/* c */ UPDATE t SET x = x + 1 WHERE x = 1")[1] == "1 row changed\n"
    assert run(capsys, "query", db, "DELETE FROM t WHERE x > 100")[1] == "0 rows changed\n"


def test_csv_header_without_rows_and_null(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "query", ":memory:", "SELECT 1 AS a, 'b' AS b WHERE 0", "--csv")
    assert status == 0 and out.splitlines() == ["a,b"]
    status, out, _ = run(capsys, "query", ":memory:", "SELECT NULL AS n, '' AS e", "--csv")
    assert out.splitlines() == ["n,e", ","]
    status, out, _ = run(capsys, "query", ":memory:", "SELECT NULL AS n, '' AS e", "--csv", "--null", "\\N")
    assert out.splitlines() == ["n,e", "\\N,"]
    status, out, _ = run(capsys, "query", ":memory:", "SELECT NULL AS n", "--null", "(null)")
    assert out.splitlines()[2] == "(null)"


def test_json_blob_is_an_object(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "query", ":memory:", "SELECT x'00ff' AS b, '00ff' AS s", "--json")
    assert json.loads(out) == [{"b": {"$base64": "AP8="}, "s": "00ff"}]


def test_sql_error_says_where(capsys: pytest.CaptureFixture[str]) -> None:
    assert error(capsys, "query", ":memory:", "SELECT 1 +* 2") == (
        'near "*": syntax error (at character 11 of the SQL: SELECT 1 + <here> * 2)'
    )


# ------------------------------------------------------------ shell


# Subprocesses run outside the checkout, so that `python -m sqlwasm` is the
# installed package (CI installs it; the checkout's sqlwasm/ is not built there).
OUTSIDE = tempfile.gettempdir()


def shell(*argv: Any, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sqlwasm", "shell", *map(str, argv)], input=stdin, capture_output=True, text=True,
        timeout=120, cwd=OUTSIDE,
    )


def test_shell_load_modules_and_open(tmp_path: Path, unsigned: Path) -> None:
    other = tmp_path / "other.db"
    stdin = (
        f".load {unsigned}\n"
        ".modules\n"
        "SELECT t_add(1, 2);\n"
        f".open {other}\n"
        "SELECT t_add(20, 22), geo_haversine(0, 0, 0, 0);\n"
    )
    result = shell(":memory:", "--load", "geo", "--allow-unsigned", stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "loaded t 1.0.0: t_add, t_spin" in lines
    assert any(re.fullmatch(r"geo [0-9.]+  signed by key [0-9a-f]{16}; capabilities: none", line) for line in lines)
    assert "t 1.0.0  not trusted (--allow-unsigned); capabilities: none" in lines
    assert "3" in lines and "42|0.0" in lines
    assert "Traceback" not in result.stderr


def test_shell_load_refused_in_cli_words(unsigned: Path) -> None:
    result = shell(":memory:", stdin=f".load {unsigned}\nSELECT 'still here';\n")
    assert f"module {unsigned} is not signed: sign it with `sqlwasm sign" in result.stderr
    assert "still here" in result.stdout


def test_shell_sql_argument() -> None:
    result = shell(":memory:", "SELECT geo_haversine(0, 0, 0, 1)", "--load", "geo", stdin="")
    assert result.returncode == 0 and result.stdout.strip() == "111.1950802335329"
    result = shell(":memory:", "SELECT nope()", stdin="")
    assert result.returncode == 1 and "no such function: nope" in result.stderr


# ------------------------------------------------------------ entry points


def test_version_and_python_m(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"sqlwasm {sqlwasm.__version__}\n"
    result = subprocess.run(
        [sys.executable, "-m", "sqlwasm", "--version"], capture_output=True, text=True, timeout=60, cwd=OUTSIDE
    )
    assert result.returncode == 0 and result.stdout == f"sqlwasm {sqlwasm.__version__}\n"


def test_every_positional_has_help_and_every_command_an_example() -> None:
    top = _cli.parser()
    (action,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in action.choices.items():
        for arg in command._actions:
            assert arg.help, (name, arg.dest)
        assert command.epilog and f"sqlwasm {name}" in command.epilog


def test_verify_trusts_key_text_and_several_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str], signed: Path, keypair: KeyPair) -> None:
    _, other = generate_keypair("other", tmp_path)
    text = Path(keypair.pub_path).read_text().strip()
    status, out, _ = run(capsys, "verify", signed, "--trust", other, "--trust", text)
    assert status == 0 and out.startswith(f"OK: {signed} is signed by trusted key {keypair.public.key_id}")


# ------------------------------------------------------------ Python API


def test_one_module_as_a_str_is_one_module(unsigned: Path) -> None:
    conn = sqlwasm.connect(":memory:", str(unsigned), allow_unsigned=True)
    assert conn.execute("SELECT t_add(1, 2)").fetchall() == [(3,)]
    conn.close()
    runtime = sqlwasm.Runtime(allow_unsigned=True)
    conn = runtime.connect(":memory:", unsigned)
    assert conn.execute("SELECT t_add(2, 2)").fetchall() == [(4,)]
    conn.close()


def test_trusted_keys_accept_key_text(signed: Path, keypair: KeyPair) -> None:
    text = Path(keypair.pub_path).read_text()
    assert sqlwasm.PublicKey.from_text(text) == keypair.public
    for keys in (text, [text], [text.strip()]):
        conn = sqlwasm.connect(":memory:", [signed], trusted_keys=keys)
        assert conn.execute("SELECT t_add(1, 1)").fetchall() == [(2,)]
        conn.close()
    assert list(load_trusted_keys(text).values()) == [keypair.public]


def test_missing_module_file_is_an_error_and_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wasm"
    with pytest.raises(sqlwasm.Error) as exc:
        sqlwasm.connect(":memory:", [missing])
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, sqlwasm.ModuleFileNotFoundError)
    assert exc.value.filename == str(missing)
    assert str(exc.value) == f"cannot read module {missing}: No such file or directory"


# ------------------------------------------------------------ documentation


def test_cli_doc_names_every_exit_status() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    for status in ("status 1", "status 2", "status 130"):
        assert status in text


def test_python_doc_names_every_public_name() -> None:
    text = (REPO / "docs" / "python.md").read_text()
    for name in sqlwasm.__all__:
        assert f"`{name}" in text or f"sqlwasm.{name}" in text, name
    for name in sqlwasm.__all__:
        value = getattr(sqlwasm, name)
        if isinstance(value, type) and issubclass(value, sqlwasm.Error):
            assert f"`{name}`" in text, name


def test_timer(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "query", ":memory:", "CREATE TABLE t(x);\n INSERT INTO t VALUES (1); SELECT x FROM t", "--timer")
    assert status == 0 and out.splitlines()[-1] == "1"
    lines = err.splitlines()
    assert [re.sub(r"^time: \d+\.\d ms  ", "", line) for line in lines] == [
        "CREATE TABLE t(x);", "INSERT INTO t VALUES (1);", "SELECT x FROM t"
    ]
    assert all(re.match(r"time: \d+\.\d ms  ", line) for line in lines)


def test_json_infinity_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "query", ":memory:", "SELECT 1e999 AS big, -1e999 AS small, 'Infinity' AS t", "--json")
    assert status == 0 and "Infinity\n" not in out and "Infinity," not in out
    assert json.loads(out, parse_constant=lambda name: pytest.fail(f"not JSON: {name}")) == [
        {"big": float("inf"), "small": float("-inf"), "t": "Infinity"}
    ]


def test_missing_parameter_says_param(capsys: pytest.CaptureFixture[str]) -> None:
    message = error(capsys, "query", ":memory:", "SELECT ?")
    assert message.startswith("Incorrect number of bindings supplied") and message.endswith("(give the values with --param)")


def test_query_from_another_thread(capsys: pytest.CaptureFixture[str]) -> None:
    """Only the main thread may handle signals: elsewhere Ctrl-C is left alone."""
    import threading

    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(_cli.main(["query", ":memory:", "SELECT 1 AS one", "--json"])))
    thread.start()
    thread.join()
    assert statuses == [0] and json.loads(capsys.readouterr().out) == [{"one": 1}]


def test_grant_sql_narrowed_to_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "g.db"
    assert run(capsys, "query", db, "CREATE TABLE edges(src, dst); INSERT INTO edges VALUES (1, 2), (2, 3)", "--create")[0] == 0
    argv = ["query", db, "SELECT node, depth FROM graph_reachable(1)", "--load", "graph", "--json"]
    assert error(capsys, *argv) == "module 'graph' (graph) needs capability 'sql': pass --grant sql"
    status, out, _ = run(capsys, *argv, "--grant", "sql:edges")
    assert status == 0 and json.loads(out) == [{"node": 1, "depth": 0}, {"node": 2, "depth": 1}, {"node": 3, "depth": 2}]
    assert error(capsys, *argv, "--grant", "sql:other") == (
        "graph.graph_reachable: query refused: table 'edges' was not granted to module 'graph'"
    )


LOGGER_WAT = '(import "sqlwasm" "log" (func $log (param i32 i32 i32)))' + MEMORY + """
  (data (i32.const 64) "hello\\0aforged line\\1b[2J")
  (func (export "f") (param i64) (result i64) (call $log (i32.const 1) (i32.const 64) (i32.const 21)) local.get 0)
"""


def test_guest_log_messages_are_shown_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lg.wasm"
    path.write_bytes(wasm_module(LOGGER_WAT, manifest(fn("lg_f", export="f"), name="lg", capabilities=["log"])))
    status, out, err = run(capsys, "query", ":memory:", "SELECT lg_f(7) AS x", "--load", path, "--allow-unsigned", "--grant", "log", "--json")
    assert status == 0 and json.loads(out) == [{"x": 7}]
    assert err.splitlines() == [
        f"sqlwasm: loading module {path}, which is not signed (allow_unsigned=True)",
        "sqlwasm.guest.lg info: hello\\nforged line\\x1b[2J",
    ]


def test_verify_bad_key_text(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert error(capsys, "verify", signed, "--trust", "sqlwasm-ed25519 AAAA") == (
        "trusted key text: an ed25519 public key is 32 bytes, got 3"
    )


def test_a_file_uri_is_a_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.db"
    assert _cli.main(["query", str(db), "--create", "CREATE TABLE t(x); INSERT INTO t VALUES (42)"]) == 0
    uri = f"file:{db}?mode=ro"
    assert _cli.main(["query", uri, "--csv", "SELECT x FROM t"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["x", "42"]
    assert _cli.main(["query", uri, "INSERT INTO t VALUES (1)"]) == 1  # read-only, as the URI says
    assert "readonly" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.db"]  # no file named after the URI
