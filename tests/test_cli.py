"""The `sqlwasm` command: every subcommand through sqlwasm._cli.main, and the
installed console script through a real process."""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from conftest import MEMORY, KeyPair, fn, manifest, wasm_module
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm
from sqlwasm import _cli
from sqlwasm._demo import QUERIES
from sqlwasm._manifest import MANIFEST_SECTION
from sqlwasm._signing import check_signature, generate_keypair, load_private_key, load_public_key
from sqlwasm._wasmfile import find_custom

REPO = Path(__file__).resolve().parents[1]
GUESTS = REPO / "tests" / "guests"
GEO = str(module_path("geo"))
EXAMPLES_PUB = str(EXAMPLES_PUBLIC_KEY)

# A small raw-ABI module: t_add(a, b) = a + b, t_neg(x) = -x (reals).
WAT = MEMORY + """
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "neg") (param f64) (result f64) local.get 0 f64.neg)
"""
TOML = """\
sqlwasm = 1
name = "t"
version = "1.2.3"
description = "CLI test module"

[[functions]]
name = "t_add"
export = "add"
abi = "raw"
args = ["integer", "integer"]
returns = "integer"
deterministic = true

[[functions]]
name = "t_neg"
export = "neg"
abi = "raw"
args = ["real"]
returns = "real"
"""
MANIFEST = manifest(
    fn("t_add", export="add", args=["integer", "integer"], returns="integer", deterministic=True),
    fn("t_neg", export="neg", args=["real"], returns="real"),
    name="t",
    version="1.2.3",
    description="CLI test module",
)


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    """sqlwasm._cli.main(argv) -> (exit status, stdout, stderr)."""
    status = _cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def failed(capsys: pytest.CaptureFixture[str], *argv: Any) -> str:
    """Runs a command that must fail the documented way; returns the message."""
    status, out, err = run(capsys, *argv)
    assert status == 1, (out, err)
    err = without_unsigned_warnings(err)
    assert err.startswith("sqlwasm: error: "), err
    assert err.count("\n") >= 1
    return err.removeprefix("sqlwasm: error: ").strip()


def without_unsigned_warnings(err: str) -> str:
    """stderr without the warning each module loaded through --allow-unsigned gets."""
    return re.sub(r"^sqlwasm: loading module .*, which is (not signed|signed by key \w+, which is not in trusted_keys) \(allow_unsigned=True\)\n", "", err, flags=re.MULTILINE)


def console(*argv: Any, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the installed `sqlwasm` console script."""
    exe = shutil.which("sqlwasm")
    assert exe is not None, "the sqlwasm console script is not installed (pip install -e .)"
    return subprocess.run(
        [exe, *map(str, argv)], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.fixture
def unsigned(tmp_path: Path) -> Path:
    path = tmp_path / "t.wasm"
    path.write_bytes(wasm_module(WAT, MANIFEST))
    return path


@pytest.fixture
def signed(tmp_path: Path, keypair: KeyPair) -> Path:
    path = tmp_path / "t-signed.wasm"
    path.write_bytes(wasm_module(WAT, MANIFEST, key=keypair.private))
    return path


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def raw_wasm(tmp_path: Path) -> Path:
    path = tmp_path / "raw.wasm"
    path.write_bytes(wasmtime.wat2wasm(WAT))
    return path


def tamper(path: Path) -> None:
    """Changes one byte the signature covers, keeping the module valid wasm:
    a letter of the manifest's description."""
    data = path.read_bytes()
    assert data.count(b"CLI test module") == 1
    path.write_bytes(data.replace(b"CLI test module", b"CLI test modulE"))


def embedded_manifest(data: bytes) -> dict[str, Any]:
    sections = find_custom(data, MANIFEST_SECTION)
    assert len(sections) == 1
    return json.loads(sections[0].payload(data))


# ------------------------------------------------------------ the console script


def test_console_script_help() -> None:
    result = console("--help")
    assert result.returncode == 0, result.stderr
    for name in subcommands():
        assert name in result.stdout


def test_console_script_query_and_exit_status() -> None:
    ok = console("query", ":memory:", "SELECT round(geo_haversine(0, 0, 0, 1), 3) AS km", "--load", GEO, "--trust", EXAMPLES_PUB, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == [{"km": 111.195}]
    bad = console("query", ":memory:", "SELECT nope()", "--load", GEO, "--trust", EXAMPLES_PUB)
    assert bad.returncode == 1
    assert bad.stderr.startswith("sqlwasm: error: ") and "nope" in bad.stderr


def test_console_script_exits_cleanly_every_time() -> None:
    """A finished command exits with its own status (0, or 1 after an error),
    never a crash on the way out. Run many times at once: a crash at
    interpreter exit depends on timing."""
    exe = shutil.which("sqlwasm")
    assert exe is not None
    base = [exe, "query", ":memory:", "--load", GEO, "--trust", EXAMPLES_PUB]
    commands = [(base[:3] + ["SELECT geo_haversine(0, 0, 0, 1)"] + base[3:], 0) for _ in range(8)]
    commands += [(base[:3] + ["SELECT nope()"] + base[3:], 1) for _ in range(8)]
    procs = [(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), want) for cmd, want in commands]
    got = [(proc.wait(timeout=120), want) for proc, want in procs]
    assert [status for status, _ in got] == [want for _, want in got]


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _cli.main([])
    assert exc.value.code == 2
    assert "usage: sqlwasm" in capsys.readouterr().err


# ------------------------------------------------------------ keygen


def test_keygen_writes_a_key_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "keygen", "alice", "--dir", tmp_path)
    assert status == 0
    key, pub = tmp_path / "alice.key", tmp_path / "alice.pub"
    assert str(key) in out and str(pub) in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    lines = pub.read_text().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"sqlwasm-ed25519 [A-Za-z0-9+/]{43}= alice", lines[0])
    public = load_public_key(pub)
    assert public.name == "alice"
    assert public.raw == load_private_key(key).public_key().public_bytes_raw()


def test_keygen_defaults_to_the_current_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "keygen", "here")[0] == 0
    assert (tmp_path / "here.key").exists() and (tmp_path / "here.pub").exists()


@pytest.mark.parametrize("existing", ["k.key", "k.pub"])
def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: str) -> None:
    (tmp_path / existing).write_text("precious")
    message = failed(capsys, "keygen", "k", "--dir", tmp_path)
    assert "already exists" in message and existing in message
    assert (tmp_path / existing).read_text() == "precious"
    other = "k.pub" if existing == "k.key" else "k.key"
    assert not (tmp_path / other).exists()


# ------------------------------------------------------------ sign


def test_sign_in_place(unsigned: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    before = unsigned.read_bytes()
    status, out, _ = run(capsys, "sign", unsigned, "--key", keypair.key_path)
    assert status == 0
    assert out.strip() == f"signed {unsigned} with key {keypair.public.key_id}"
    after = unsigned.read_bytes()
    assert after.startswith(before)
    signature = check_signature(after)
    assert signature is not None and signature.key_id == keypair.public.key_id


def test_sign_to_output(unsigned: Path, keypair: KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = unsigned.read_bytes()
    out_path = tmp_path / "out.wasm"
    status, out, _ = run(capsys, "sign", unsigned, "--key", keypair.key_path, "-o", out_path)
    assert status == 0 and str(out_path) in out
    assert unsigned.read_bytes() == before
    assert check_signature(out_path.read_bytes()) is not None


def test_sign_replaces_a_signature(signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = generate_keypair("second", tmp_path)
    assert run(capsys, "sign", signed, "--key", key)[0] == 0
    signature = check_signature(signed.read_bytes())
    assert signature is not None and signature.key_id == load_public_key(pub).key_id
    # Signing twice with the same key gives the same bytes (ed25519 is deterministic).
    first = signed.read_bytes()
    assert run(capsys, "sign", signed, "--key", key)[0] == 0
    assert signed.read_bytes() == first


def test_sign_errors(unsigned: Path, tmp_path: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read" in failed(capsys, "sign", tmp_path / "missing.wasm", "--key", keypair.key_path)
    assert "cannot read signing key" in failed(capsys, "sign", unsigned, "--key", tmp_path / "missing.key")
    assert "not an unencrypted PEM private key" in failed(capsys, "sign", unsigned, "--key", keypair.pub_path)
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"not wasm at all")
    assert "cannot sign" in failed(capsys, "sign", junk, "--key", keypair.key_path)


# ------------------------------------------------------------ verify


def test_verify_trusted(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", signed, "--trust", keypair.pub_path)
    assert status == 0
    assert out.strip() == f"OK: {signed} is signed by trusted key {keypair.public.key_id} (publisher)"


def test_verify_with_several_keys(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", signed, "--trust", EXAMPLES_PUB, "--trust", keypair.pub_path)
    assert status == 0 and out.startswith("OK: ")


def test_verify_untrusted(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", signed, "--trust", EXAMPLES_PUB)
    assert status == 1
    assert out.strip() == f"FAILED: {signed} is signed by key {keypair.public.key_id}, which is not trusted"


def test_verify_unsigned(unsigned: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", unsigned, "--trust", keypair.pub_path)
    assert status == 1
    assert out.strip() == f"FAILED: {unsigned} is not signed"


def test_verify_tampered(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(signed)
    status, out, _ = run(capsys, "verify", signed, "--trust", keypair.pub_path)
    assert status == 1
    assert out.strip() == (
        f"FAILED: signature by key {keypair.public.key_id} does not verify: the module was modified after signing"
    )


def test_verify_tampered_code(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(signed.read_bytes())
    data[20] ^= 0x01  # inside the type section: not even valid wasm any more
    signed.write_bytes(bytes(data))
    status, out, _ = run(capsys, "verify", signed, "--trust", keypair.pub_path)
    assert status == 1
    assert out.startswith("FAILED: ") and "does not verify" in out


def test_verify_bytes_appended(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm._wasmfile import custom_section

    signed.write_bytes(signed.read_bytes() + custom_section("extra", b"x"))
    status, out, _ = run(capsys, "verify", signed, "--trust", keypair.pub_path)
    assert status == 1 and out.startswith("FAILED: ") and "last section" in out


def test_verify_shipped_geo(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", GEO, "--trust", EXAMPLES_PUB)
    assert status == 0 and out.startswith("OK: ")


def test_verify_errors(signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read trusted key" in failed(capsys, "verify", signed, "--trust", tmp_path / "none.pub")
    assert "cannot read" in failed(capsys, "verify", tmp_path / "none.wasm", "--trust", EXAMPLES_PUB)


# ------------------------------------------------------------ inspect


def test_inspect_json(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "inspect", signed, "--json")
    assert status == 0
    info = json.loads(out)
    data = signed.read_bytes()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["size"] == len(data)
    assert info["signature"] == {"status": "valid", "key_id": keypair.public.key_id}
    assert info["manifest"] == embedded_manifest(data)
    assert info["manifest"]["name"] == "t" and info["manifest"]["version"] == "1.2.3"
    assert [f["name"] for f in info["manifest"]["functions"]] == ["t_add", "t_neg"]
    assert {e["name"]: e["type"] for e in info["exports"]} == {
        "memory": "memory 1.. pages",
        "add": "func (i64, i64) -> (i64)",
        "neg": "func (f64) -> (f64)",
    }
    assert info["imports"] == []


def test_inspect_text(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "inspect", signed)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "module    t 1.2.3"
    assert "CLI test module" in lines[1]
    assert f"signature valid, key {keypair.public.key_id}" in lines
    assert f"sha256    {hashlib.sha256(signed.read_bytes()).hexdigest()}  ({signed.stat().st_size} bytes)" in lines
    assert "capabilities none" in lines
    assert "  t_add(integer, integer) -> integer  [scalar, raw, export add]" in lines
    assert "  t_neg(real) -> real  [scalar, raw, export neg]" in lines
    assert "  add: func (i64, i64) -> (i64)" in lines
    assert "imports   none" in lines


def test_inspect_shows_aggregate_exports_by_role(capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm.extensions import module_path

    status, out, _ = run(capsys, "inspect", str(module_path("stats")))
    assert status == 0
    assert (
        "  stats_histogram(real, integer) -> text  [aggregate, msgpack, step histogram_step, "
        "init histogram_init, final histogram_final, drop histogram_drop, serialize histogram_serialize, "
        "merge histogram_merge]" in out.splitlines()
    )


def test_inspect_unsigned_and_tampered(unsigned: Path, signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "inspect", unsigned, "--json")
    assert status == 0 and json.loads(out)["signature"] == {"status": "unsigned"}
    tamper(signed)
    status, out, _ = run(capsys, "inspect", signed, "--json")
    assert status == 0
    sig = json.loads(out)["signature"]
    assert sig["status"] == "invalid" and "does not verify" in sig["problem"]
    status, out, _ = run(capsys, "inspect", signed)
    assert status == 0 and "signature invalid: " in out


def test_inspect_shows_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wat = '(module (import "env" "f" (func (param i32) (result i32))) (memory (export "memory") 1))'
    path = tmp_path / "imports.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    status, out, _ = run(capsys, "inspect", path, "--json")
    assert status == 0
    info = json.loads(out)
    assert info["manifest"] is None
    assert info["imports"] == [{"module": "env", "name": "f", "type": "func (i32) -> (i32)"}]
    status, out, _ = run(capsys, "inspect", path)
    assert "module    (no manifest)" in out and "  env.f: func (i32) -> (i32)" in out


def test_inspect_geo(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "inspect", GEO, "--json")
    assert status == 0
    info = json.loads(out)
    assert info["sha256"] == hashlib.sha256(Path(GEO).read_bytes()).hexdigest()
    assert info["imports"] == [] and info["signature"]["status"] == "valid"


def test_inspect_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read" in failed(capsys, "inspect", tmp_path / "none.wasm")
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\x00asm\x01\x00\x00\x00\x00\xff")
    assert "not a wasm module" in failed(capsys, "inspect", junk)


def test_inspect_invalid_code_is_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/cli.md: errors go to stderr as `sqlwasm: error: ...`, exit 1.
    Here the section framing is fine (so the manifest and signature can be
    read) but the code is not valid wasm: a type section that promises five
    types and holds none."""
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\x00asm\x01\x00\x00\x00" + b"\x01\x01\x05")
    message = failed(capsys, "inspect", bad)
    assert "wasm" in message


# ------------------------------------------------------------ pack


def test_pack_embeds_the_manifest(raw_wasm: Path, toml_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "packed.wasm"
    status, out, _ = run(capsys, "pack", raw_wasm, toml_file, "-o", out_path)
    assert status == 0 and str(out_path) in out and "unsigned" in out
    data = out_path.read_bytes()
    assert check_signature(data) is None
    got = embedded_manifest(data)
    assert got["name"] == "t" and got["version"] == "1.2.3" and got["description"] == "CLI test module"
    assert [(f["name"], f["export"], f["args"], f["returns"]) for f in got["functions"]] == [
        ("t_add", "add", ["integer", "integer"], "integer"),
        ("t_neg", "neg", ["real"], "real"),
    ]
    # The packed module works once trusted explicitly as unsigned.
    conn = sqlwasm.connect(":memory:", [data], allow_unsigned=True)
    try:
        assert conn.execute("SELECT t_add(40, 2), t_neg(1.5)").fetchall() == [(42, -1.5)]
    finally:
        conn.close()


def test_pack_is_deterministic(raw_wasm: Path, toml_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.wasm", tmp_path / "b.wasm"
    assert run(capsys, "pack", raw_wasm, toml_file, "-o", a)[0] == 0
    assert run(capsys, "pack", raw_wasm, toml_file, "-o", b)[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_pack_replaces_manifest_and_drops_signature(signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new_toml = tmp_path / "new.toml"
    new_toml.write_text(TOML.replace('version = "1.2.3"', 'version = "2.0.0"').replace('name = "t"\n', 'name = "t2"\n'))
    out_path = tmp_path / "repacked.wasm"
    assert run(capsys, "pack", signed, new_toml, "-o", out_path)[0] == 0
    data = out_path.read_bytes()
    assert check_signature(data) is None
    got = embedded_manifest(data)  # exactly one manifest section
    assert got["name"] == "t2" and got["version"] == "2.0.0"


def test_pack_checks_exports(raw_wasm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "never.wasm"
    missing = tmp_path / "missing.toml"
    missing.write_text(TOML.replace('export = "neg"', 'export = "negate"'))
    message = failed(capsys, "pack", raw_wasm, missing, "-o", out_path)
    assert "t_neg" in message and "negate" in message
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text(TOML.replace('args = ["real"]', 'args = ["integer"]'))
    message = failed(capsys, "pack", raw_wasm, wrong_type, "-o", out_path)
    assert "t_neg" in message
    assert not out_path.exists()


def test_pack_bad_toml(raw_wasm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TOML + "\nsurprise = 1\n")
    assert "surprise" in failed(capsys, "pack", raw_wasm, bad, "-o", tmp_path / "x.wasm")
    broken = tmp_path / "broken.toml"
    broken.write_text("sqlwasm = [")
    failed(capsys, "pack", raw_wasm, broken, "-o", tmp_path / "x.wasm")


# ------------------------------------------------------------ build


@pytest.fixture(scope="module")
def built_echo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """echo.c built and signed by `sqlwasm build --key`: (wasm, pub, stdout)."""
    directory = tmp_path_factory.mktemp("cli-build")
    key, pub = generate_keypair("builder", directory)
    out_path = directory / "echo.wasm"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = _cli.main(["build", str(GUESTS / "echo.c"), "--manifest", str(GUESTS / "echo.toml"), "-o", str(out_path), "--key", str(key)])
    assert status == 0
    return out_path, pub, stdout.getvalue()


def test_build_signs_and_runs(built_echo: tuple[Path, Path, str]) -> None:
    wasm, pub, stdout = built_echo
    assert stdout.strip() == f"wrote {wasm}"
    signature = check_signature(wasm.read_bytes())
    assert signature is not None and signature.key_id == load_public_key(pub).key_id
    conn = sqlwasm.connect(":memory:", [wasm], trusted_keys=[pub])
    try:
        assert conn.execute("SELECT echo_value('hi'), echo_add(2, 3), echo_count(1, 2, 3)").fetchall() == [("hi", 5, 3)]
    finally:
        conn.close()


def test_build_without_key_is_unsigned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "echo.wasm"
    status, out, _ = run(capsys, "build", GUESTS / "echo.c", "--manifest", GUESTS / "echo.toml", "-o", out_path)
    assert status == 0 and out.strip() == f"wrote {out_path} (unsigned)"
    assert check_signature(out_path.read_bytes()) is None


def test_build_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "never.wasm"
    assert "no such source file" in failed(capsys, "build", tmp_path / "none.c", "--manifest", GUESTS / "echo.toml", "-o", out_path)
    broken = tmp_path / "broken.c"
    broken.write_text('#include "sqlwasm.h"\nint f(void) { return undeclared; }\n')
    message = failed(capsys, "build", broken, "--manifest", GUESTS / "echo.toml", "-o", out_path)
    # One line from sqlwasm, then the compiler's own diagnostics as it wrote them.
    first, diagnostics = message.split("\n", 1)
    assert first == f"compiling {broken} failed (zig cc exit status 1)"
    assert "undeclared" in diagnostics and "broken.c:2:" in diagnostics
    assert not out_path.exists()


# ------------------------------------------------------------ query


def query(capsys: pytest.CaptureFixture[str], sql: str, *extra: Any) -> tuple[int, str, str]:
    return run(capsys, "query", ":memory:", sql, "--load", GEO, "--trust", EXAMPLES_PUB, *extra)


def test_query_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = query(capsys, "SELECT 'a' AS name, round(geo_haversine(0, 0, 0, 1), 3) AS km, NULL AS absent UNION ALL SELECT 'longer', 2, 3")
    assert status == 0 and err == ""
    assert out.splitlines() == [
        "name    km       absent",
        "------  -------  ------",
        "a       111.195  NULL",
        "longer  2        3",
    ]


def test_query_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, "SELECT geo_geohash_encode(57.64911, 10.40744, 11) AS h, x'00ff10' AS b, NULL AS n, 1.5 AS r", "--json")
    assert status == 0
    assert json.loads(out) == [{"h": "u4pruydqqvj", "b": {"$base64": "AP8Q"}, "n": None, "r": 1.5}]  # a blob is not a string


def test_query_csv(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, "SELECT 'a,b' AS t, x'cafe' AS b, 7 AS i UNION ALL SELECT 'q\"', x'', NULL", "--csv")
    assert status == 0
    assert list(csv.reader(io.StringIO(out))) == [["t", "b", "i"], ["a,b", "cafe", "7"], ['q"', "", ""]]


def test_query_blob_as_hex_in_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, "SELECT x'0001abff' AS b")
    assert status == 0 and out.splitlines()[2].strip() == "0001abff"


def test_query_without_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "data.db"
    status, out, _ = run(capsys, "query", db, "CREATE TABLE t(x)", "--load", GEO, "--trust", EXAMPLES_PUB, "--create")
    assert status == 0 and out == ""
    status, out, _ = run(capsys, "query", db, "SELECT x FROM t", "--load", GEO, "--trust", EXAMPLES_PUB, "--json")
    assert status == 0 and json.loads(out) == []


def test_query_on_a_database_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import apsw

    db = tmp_path / "places.db"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE places(name TEXT, lat REAL, lon REAL)")
    conn.execute("INSERT INTO places VALUES ('Paris', 48.8566, 2.3522), ('Berlin', 52.52, 13.405)")
    conn.close()
    sql = "SELECT name, round(geo_haversine(lat, lon, 51.5074, -0.1278)) AS km FROM places ORDER BY km"
    status, out, _ = run(capsys, "query", db, sql, "--load", GEO, "--trust", EXAMPLES_PUB, "--json")
    assert status == 0
    assert json.loads(out) == [{"name": "Paris", "km": 344.0}, {"name": "Berlin", "km": 932.0}]


def test_query_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no such function" in failed(capsys, "query", ":memory:", "SELECT geo_haversine(0, 0, 0, 1)")
    assert "syntax error" in failed(capsys, "query", ":memory:", "SELEC 1")
    message = failed(capsys, "query", ":memory:", "SELECT geo_geohash_encode(0, 0, 99)", "--load", GEO, "--trust", EXAMPLES_PUB)
    assert message.startswith("geo.geo_geohash_encode: ")
    missing = tmp_path / "none.wasm"
    assert failed(capsys, "query", ":memory:", "SELECT 1", "--load", missing) == (
        f"no module {missing}: not a file, nor the name of a shipped example (geo, geo_as, graph, stats, text)"
    )


def test_query_untrusted_module_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    message = failed(capsys, "query", ":memory:", "SELECT 1", "--load", GEO)
    assert "geo" in message or "signed" in message


def test_query_allow_unsigned(unsigned: Path, signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = failed(capsys, "query", ":memory:", "SELECT t_add(1, 2)", "--load", unsigned)
    assert "not signed" in message or "unsigned" in message
    status, out, _ = run(capsys, "query", ":memory:", "SELECT t_add(1, 2) AS s", "--load", unsigned, "--allow-unsigned", "--json")
    assert status == 0 and json.loads(out) == [{"s": 3}]
    # Signed by a key that is not trusted: also only with --allow-unsigned.
    failed(capsys, "query", ":memory:", "SELECT t_add(1, 2)", "--load", signed)
    status, out, _ = run(capsys, "query", ":memory:", "SELECT t_add(1, 2) AS s", "--load", signed, "--allow-unsigned", "--json")
    assert status == 0 and json.loads(out) == [{"s": 3}]


def test_query_several_modules(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "query", ":memory:", "SELECT t_add(1, 2) AS s, round(geo_haversine(0, 0, 0, 1)) AS km",
        "--load", GEO, "--load", signed, "--trust", EXAMPLES_PUB, "--trust", keypair.pub_path, "--json",
    )
    assert status == 0 and json.loads(out) == [{"s": 3, "km": 111.0}]


def test_query_json_and_csv_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _cli.main(["query", ":memory:", "SELECT 1", "--json", "--csv"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


# ------------------------------------------------------------ shell


def test_shell_runs_commands_from_stdin() -> None:
    result = console("shell", ":memory:", "--load", GEO, "--trust", EXAMPLES_PUB, stdin="select geo_haversine(0,0,0,1);\n")
    assert result.returncode == 0, result.stderr
    assert "111.195080233" in result.stdout


def test_shell_reports_guest_errors() -> None:
    stdin = "select geo_geohash_encode(0, 0, 99);\nselect 'after' || 'wards';\n"
    result = console("shell", ":memory:", "--load", GEO, "--trust", EXAMPLES_PUB, stdin=stdin)
    assert "geo.geo_geohash_encode: " in result.stdout + result.stderr
    assert "afterwards" in result.stdout


def test_shell_refuses_untrusted_module() -> None:
    result = console("shell", ":memory:", "--load", GEO, stdin="select 1;\n")
    assert result.returncode == 1
    assert result.stderr.startswith("sqlwasm: error: ")


# ------------------------------------------------------------ demo


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "demo", "--rows", 2000)
    assert status == 0
    assert out.startswith("sqlwasm demo: ")
    for name in ("geo", "stats"):
        version = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY]).load(module_path(name)).version
        assert f"  module '{name}' {version}, signed by key " in out
    assert "2,000 readings" in out
    for title, _, _ in QUERIES:
        assert title in out
    # The nearest-to-London query lists London itself first, then its neighbours.
    section = out.split(QUERIES[0][0], 1)[1]
    first_rows = [line.split() for line in section.splitlines()[2:4]]
    assert first_rows[0][:3] == ["London", "GB", "0.0"]
    assert "Paris" in out and "Calais" in out


# ------------------------------------------------------------ documentation


def subcommands() -> list[str]:
    top = _cli.parser()
    actions = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return list(actions[0].choices)


def test_every_command_is_documented() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    headings = re.findall(r"^## sqlwasm (\S+)", text, flags=re.MULTILINE)
    assert sorted(headings) == sorted(subcommands())


def test_every_command_has_help() -> None:
    top = _cli.parser()
    action = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    assert set(helps) == set(subcommands()) and all(helps.values())


# ------------------------------------------------ trust and the signature


def test_verify_compares_the_whole_key_not_its_id(
    signed: Path, keypair: KeyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two keys with one display id (monkeypatched: a real 64-bit collision
    cannot be made on demand) are still two keys."""
    _, stranger_pub = generate_keypair("stranger", tmp_path)
    monkeypatch.setattr("sqlwasm._signing.key_id", lambda raw: "0123456789abcdef")
    status, out, _ = run(capsys, "verify", signed, "--trust", stranger_pub)
    assert status == 1
    assert out.strip() == f"FAILED: {signed} is signed by key 0123456789abcdef, which is not trusted"
    # Trusting both, the name shown is the signer's, not the other key's.
    status, out, _ = run(capsys, "verify", signed, "--trust", keypair.pub_path, "--trust", stranger_pub)
    assert status == 0 and out.strip().endswith("(publisher)")
    status, out, _ = run(capsys, "verify", signed, "--trust", stranger_pub, "--trust", keypair.pub_path)
    assert status == 0 and out.strip().endswith("(publisher)")


def test_verify_padded_signature_section(signed: Path, keypair: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm._signing import SIGNATURE_SECTION
    from sqlwasm._wasmfile import sections

    data = signed.read_bytes()
    last = sections(data)[-1]
    assert last.name == SIGNATURE_SECTION and data[last.start + 1] & 0x80 and not data[last.start + 2] & 0x80
    # The section size as a 3-byte LEB128 instead of 2: same value, another file.
    size = last.end - last.start - 3
    padded = data[: last.start + 1] + bytes([size & 0x7F | 0x80, size >> 7 | 0x80, 0]) + data[last.start + 3 :]
    signed.write_bytes(padded)
    status, out, _ = run(capsys, "verify", signed, "--trust", keypair.pub_path)
    assert status == 1
    assert out.startswith("FAILED: ") and "not in canonical form" in out


# --------------------------------------- every error is one line, no traceback


def test_verify_non_utf8_pub(signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "latin1.pub"
    pub.write_bytes(b"sqlwasm-ed25519 " + b"A" * 43 + b"= caf\xe9\n")
    message = failed(capsys, "verify", signed, "--trust", pub)
    assert str(pub) in message and "not UTF-8" in message


def test_keygen_into_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = failed(capsys, "keygen", "k", "--dir", tmp_path / "missing")
    assert "cannot write" in message and str(tmp_path / "missing" / "k.key") in message


@pytest.mark.parametrize("name", ["", "sub/k", "two\nlines", "not-utf8-\udcff"])
def test_keygen_refuses_a_name_that_is_not_one_printable_word(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    """A command line that was not UTF-8 reaches Python with surrogates."""
    assert "key name" in failed(capsys, "keygen", name, "--dir", tmp_path)
    assert list(tmp_path.iterdir()) == []  # in particular, no .key without its .pub


@pytest.mark.parametrize("which", ["sql", "db"])
def test_query_argument_that_is_not_utf8_is_a_usage_error(capsys: pytest.CaptureFixture[str], which: str) -> None:
    argv = ["query", ":memory:", "SELECT 1"]
    argv[1 if which == "db" else 2] += "\udcff"
    with pytest.raises(SystemExit) as exc:
        _cli.main(argv)
    assert exc.value.code == 2
    assert f"argument {which.upper()}: " in capsys.readouterr().err  # named as docs/cli.md names it


@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
def test_output_that_cannot_be_written(
    unsigned: Path, raw_wasm: Path, toml_file: Path, keypair: KeyPair, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], where: str,
) -> None:
    out_path = tmp_path / "missing" / "out.wasm" if where == "missing-directory" else tmp_path / "dir"
    if where == "a-directory":
        out_path.mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert f"cannot write {out_path}" in failed(capsys, "sign", unsigned, "--key", keypair.key_path, "-o", out_path)
    assert f"cannot write {out_path}" in failed(capsys, "pack", raw_wasm, toml_file, "-o", out_path)
    assert sorted(tmp_path.rglob("*")) == before  # no temporary file left behind


def test_pack_toml_with_a_5000_digit_integer(raw_wasm: Path, toml_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml_file.write_text(TOML.replace("sqlwasm = 1", "sqlwasm = " + "9" * 5000))
    assert "invalid TOML" in failed(capsys, "pack", raw_wasm, toml_file, "-o", tmp_path / "x.wasm")


def test_query_module_with_a_limit_above_the_host_maximum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlwasm._wasmfile import custom_section

    payload = json.dumps({**MANIFEST, "limits": {"fuel": 2**70}}).encode()
    path = tmp_path / "big.wasm"
    path.write_bytes(wasmtime.wat2wasm(WAT) + custom_section(MANIFEST_SECTION, payload))
    message = failed(capsys, "query", ":memory:", "SELECT t_add(1, 2)", "--load", path, "--allow-unsigned")
    assert "module 't'" in message and "limit 'fuel'" in message


def test_query_text_that_is_not_utf8(capsys: pytest.CaptureFixture[str]) -> None:
    message = failed(capsys, "query", ":memory:", "SELECT CAST(x'41ff' AS TEXT) AS t")
    assert "not valid UTF-8" in message


# A msgpack guest whose error message tries to forge a second stderr line
# and to clear the terminal.
FORGED = b"first\nsqlwasm: error: forged\x1b[2J"
FORGED_RESULT = b"\x81\xa5error\xd9" + bytes([len(FORGED)]) + FORGED  # {"error": FORGED}, a str8
FORGER_WAT = MEMORY + """
  (data (i32.const 64) "%s")
  (func (export "sqlwasm_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "f") (param i32 i32) (result i64) i64.const %d)
""" % ("".join(f"\\{b:02x}" for b in FORGED_RESULT), (64 << 32) | len(FORGED_RESULT))


def test_guest_error_is_printed_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "forger.wasm"
    path.write_bytes(wasm_module(FORGER_WAT, manifest(fn("f_f", export="f", abi="msgpack", args=[]), name="f")))
    status, out, err = run(capsys, "query", ":memory:", "SELECT f_f()", "--load", path, "--allow-unsigned")
    assert status == 1 and out == ""
    assert without_unsigned_warnings(err) == "sqlwasm: error: f.f_f: first\\nsqlwasm: error: forged\\x1b[2J\n"


def test_query_table_shows_control_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "query", ":memory:", "SELECT 'a' || char(10) || 'b' || char(27) AS t")
    shown = "a\\nb\\x1b"  # one line, its width the width of what is shown
    assert status == 0 and out.splitlines() == ["t", "-" * len(shown), shown]
    status, out, _ = run(capsys, "query", ":memory:", "SELECT 'a' || char(10) || 'b' AS t", "--json")
    assert json.loads(out) == [{"t": "a\nb"}]  # JSON and CSV carry the value itself


def test_console_script_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = console("keygen", "k", "--dir", tmp_path / "missing")
    assert result.returncode == 1
    assert result.stderr.startswith("sqlwasm: error: cannot write ") and result.stderr.count("\n") == 1


def test_console_script_output_into_a_closed_pipe() -> None:
    """`sqlwasm query ... | head -1`: the reader leaves early; no traceback."""
    exe = shutil.which("sqlwasm")
    assert exe is not None
    sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 200000) SELECT i FROM n"
    proc = subprocess.Popen([exe, "query", ":memory:", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"i\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""


# ------------------------------------------------ inspect an invalid manifest


def _with_manifest_payload(tmp_path: Path, *payloads: bytes) -> Path:
    from sqlwasm._wasmfile import custom_section

    path = tmp_path / "m.wasm"
    path.write_bytes(wasmtime.wat2wasm(WAT) + b"".join(custom_section(MANIFEST_SECTION, p) for p in payloads))
    return path


@pytest.mark.parametrize(
    "payloads, problem",
    [
        ([b'{"sqlwasm":1,"name":"t","name":"u"}'], "key 'name' appears twice"),
        ([json.dumps({**MANIFEST, "limits": {"memory_pages": 70_000}}).encode()], "limit 'memory_pages' is 70000"),
        ([b"{not json"], "not valid UTF-8 JSON"),
        ([json.dumps({**MANIFEST, "colour": "red"}).encode()], "unknown key 'colour'"),
        ([json.dumps(MANIFEST).encode()] * 2, "more than one 'sqlwasm.manifest' section"),
    ],
    ids=["duplicate-key", "limit-too-big", "not-json", "unknown-key", "two-sections"],
)
def test_inspect_invalid_manifest_shows_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payloads: list[bytes], problem: str
) -> None:
    path = _with_manifest_payload(tmp_path, *payloads)
    status, out, err = run(capsys, "inspect", path, "--json")
    assert status == 0 and err == ""
    info = json.loads(out)
    assert info["manifest"] is None and problem in info["manifest_problem"]
    assert info["signature"] == {"status": "unsigned"}
    assert {e["name"] for e in info["exports"]} == {"memory", "add", "neg"}
    status, out, err = run(capsys, "inspect", path)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("module    (invalid manifest: ") and problem in lines[0]
    assert "  add: func (i64, i64) -> (i64)" in lines and "signature unsigned" in lines


def test_inspect_without_manifest_has_no_problem(raw_wasm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "inspect", raw_wasm, "--json")
    assert status == 0 and json.loads(out)["manifest"] is None and "manifest_problem" not in json.loads(out)


def test_inspect_text_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Export names and the description come from the module: shown, not obeyed."""
    wat = WAT + '(func (export "x\\0aimports   none\\1b[2J"))'
    path = tmp_path / "odd.wasm"
    path.write_bytes(wasm_module(wat, {**MANIFEST, "description": "one\nsqlwasm: error: two"}))
    status, out, _ = run(capsys, "inspect", path)
    assert status == 0
    lines = out.splitlines()
    assert "          one\\nsqlwasm: error: two" in lines
    assert "  x\\nimports   none\\x1b[2J: func () -> ()" in lines
    assert lines.count("imports   none") == 1 and "\x1b" not in out
