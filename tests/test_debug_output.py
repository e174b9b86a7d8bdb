"""Debug output (capability stdio): a guest's writes to stdout and stderr go
to a bounded per-call buffer whose last lines end the SQL error of a failing
call, and to the logger sqlwasm.guest.<module> at DEBUG; no other fd exists.
A trap's message names the guest function and a short backtrace."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import apsw
import pytest
from conftest import MEMORY, Build, Connect, fn, manifest, one_error
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sqlwasm
from sqlwasm._build import build
from sqlwasm._errors import CapabilityError

GUESTS = Path(__file__).resolve().parent / "guests"


@pytest.fixture(scope="module")
def printer_module() -> bytes:
    """tests/guests/printer.c built by the real toolchain (zig cc, -s: no names)."""
    return build(GUESTS / "printer.c", GUESTS / "printer.toml")


@pytest.fixture
def printer(printer_module: bytes) -> Iterator[apsw.Connection]:
    # No grant: stdio needs none.
    conn = sqlwasm.connect(":memory:", [printer_module], allow_unsigned=True)
    yield conn
    conn.close()


def test_printf_before_a_trap_is_in_the_error(printer: apsw.Connection) -> None:
    assert printer.execute("SELECT printed(4)").fetchall() == [(8,)]
    message = one_error(printer, "SELECT printed(13)")
    assert message.startswith("printer.printed: trap (unreachable): wasm `unreachable` instruction executed in ")
    # stdout and stderr interleaved as written; printed(4)'s lines are not this call's
    assert message.endswith("\nguest output:\nprinted(13) called\nchecking 13")


def test_a_debug_build_names_the_functions_in_the_backtrace(tmp_path: Path) -> None:
    # sqlwasm build strips names (-s); --cflag=-g keeps the name section.
    conn = sqlwasm.connect(
        ":memory:", [build(GUESTS / "printer.c", GUESTS / "printer.toml", cflags=("-g",))], allow_unsigned=True
    )
    message = one_error(conn, "SELECT printed(13)")
    assert "instruction executed in check_value (called from printed)\nguest output:\n" in message
    conn.close()


def test_printf_before_an_error_result_is_in_the_error(printer: apsw.Connection) -> None:
    message = one_error(printer, "SELECT refused('x')")
    assert message == "printer.refused: refused on purpose\nguest output:\nabout to refuse: x"


def test_a_failure_without_output_shows_none(printer: apsw.Connection) -> None:
    printer.execute("SELECT printed(1)").fetchall()
    assert one_error(printer, "SELECT refused('')") == "printer.refused: refused: empty text"


def test_logger_shows_every_line_at_debug(printer_module: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sqlwasm.guest.printer"):
        conn = sqlwasm.connect(":memory:", [printer_module], allow_unsigned=True)
        conn.execute("SELECT printed(2)").fetchall()
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("sqlwasm.guest")]
    assert lines == [
        ("sqlwasm.guest.printer", logging.DEBUG, "stdout: printed(2) called"),
        ("sqlwasm.guest.printer", logging.DEBUG, "stderr: checking 2"),
    ]


def test_stdio_functions_stay_usable_in_views(printer: apsw.Connection) -> None:
    # Not SQLITE_DIRECTONLY (nothing leaves the process), still deterministic.
    printer.execute("CREATE VIEW v AS SELECT printed(3) AS x; CREATE TABLE t(a, b AS (printed(a)))")
    printer.execute("INSERT INTO t(a) VALUES (5)")
    assert printer.execute("SELECT x FROM v").fetchall() == [(6,)]
    assert printer.execute("SELECT b FROM t").fetchall() == [(10,)]


def test_printf_without_declaring_stdio_is_refused(tmp_path: Path) -> None:
    undeclared = tmp_path / "undeclared.toml"
    undeclared.write_text((GUESTS / "printer.toml").read_text().replace('capabilities = ["stdio"]', "capabilities = []"))
    with pytest.raises(CapabilityError, match="imports wasi_snapshot_preview1.fd_.*capability 'stdio'"):
        sqlwasm.connect(":memory:", [build(GUESTS / "printer.c", undeclared)], allow_unsigned=True)


# ---------------------------------------------------------------- hostile WAT

WASI = "wasi_snapshot_preview1"
STDIO_IMPORTS = f"""
  (import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "{WASI}" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "{WASI}" "fd_close" (func $fd_close (param i32) (result i32)))
"""
# Memory: [0, 8) one iovec, [8, 12) nwritten, [100, ...) text.
HOSTILE = f"""(module {STDIO_IMPORTS} {MEMORY}
  (data (i32.const 100) "hello\\nworld\\n")
  (data (i32.const 200) "\\ff\\fe bad \\1b[31m red\\00nul\\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr)) (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
  ;; write(fd, ptr, len) -> errno * 2^32 + bytes written
  (func (export "write") (param i64 i64 i64) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (call $write (i32.wrap_i64 (local.get 0)) (i32.wrap_i64 (local.get 1))
              (i32.wrap_i64 (local.get 2)))) (i64.const 32))
            (i64.extend_i32_u (i32.load (i32.const 8)))))
  (func (export "write_iovs") (param $iovs i64) (param $n i64) (param $out i64) (result i64)
    (i64.extend_i32_u (call $fd_write (i32.const 1) (i32.wrap_i64 (local.get $iovs)) (i32.wrap_i64 (local.get $n))
      (i32.wrap_i64 (local.get $out)))))
  (func $inner (param i64) (result i64) (drop (call $write (i32.const 2) (i32.const 100) (i32.const 12))) unreachable)
  (func $outer (param i64) (result i64) (i64.add (call $inner (local.get 0)) (i64.const 1)))
  (func $trap_after (export "trap_after") (param i64) (result i64) (call $outer (local.get 0)))
  (func (export "trap_garbled") (param i64) (result i64)
    (drop (call $write (i32.const 1) (i32.const 200) (i32.const 21))) unreachable)
  (func (export "trap_huge") (param i64) (result i64)
    (memory.fill (i32.const 1000) (i32.const 0x41) (i32.const 60000))
    (i32.store8 (i32.const 60999) (i32.const 0x5a))
    (drop (call $write (i32.const 1) (i32.const 1000) (i32.const 60000))) unreachable)
  (func (export "trap_invalid") (param i64) (result i64)
    (memory.fill (i32.const 1000) (i32.const 0xff) (i32.const 5000))
    (drop (call $write (i32.const 2) (i32.const 1000) (i32.const 5000))) unreachable)
  (func (export "spin") (param i64) (result i64)
    (loop $l (drop (call $write (i32.const 1) (i32.const 100) (i32.const 6))) (br $l)) (i64.const 0))
  (func (export "fdstat") (param i64) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (call $fd_fdstat_get (i32.wrap_i64 (local.get 0)) (i32.const 16)))
                     (i64.const 32))
            (i64.load8_u (i32.const 16))))
  (func (export "seek") (param i64) (result i64)
    (i64.extend_i32_u (call $fd_seek (i32.wrap_i64 (local.get 0)) (i64.const 0) (i32.const 0) (i32.const 16))))
  (func (export "close") (param i64) (result i64) (i64.extend_i32_u (call $fd_close (i32.wrap_i64 (local.get 0)))))
)"""
HOSTILE_MANIFEST = manifest(
    fn("write", args=["integer"] * 3),
    fn("write_iovs", args=["integer"] * 3),
    fn("trap_invalid_x", export="trap_invalid"),  # the label's length puts the cut inside a character
    *(fn(name) for name in ("trap_after", "trap_garbled", "trap_huge", "spin", "fdstat", "seek", "close")),
    name="h",
    capabilities=["stdio"],
    limits={"timeout_ms": 200},
)
EBADF, EFAULT, EINVAL, ESPIPE = 8, 21, 28, 70


@pytest.fixture
def hostile(build: Build, connect: Connect) -> apsw.Connection:
    return connect(build(HOSTILE, HOSTILE_MANIFEST))


def one(conn: apsw.Connection, sql: str) -> int:
    ((value,),) = conn.execute(sql).fetchall()
    assert isinstance(value, int)
    return value


@pytest.mark.parametrize(
    ("sql", "errno", "written"),
    [
        ("SELECT write(1, 100, 6)", 0, 6),
        ("SELECT write(2, 100, 0)", 0, 0),
        ("SELECT write(0, 100, 6)", EBADF, 0),
        ("SELECT write(3, 100, 6)", EBADF, 0),
        ("SELECT write(-1, 100, 6)", EBADF, 0),
        ("SELECT write(1, 65530, 10)", EFAULT, 0),  # the buffer runs past memory
        ("SELECT write(1, 100, 4294967295)", EFAULT, 0),
    ],
)
def test_writes_reach_only_stdout_and_stderr(hostile: apsw.Connection, sql: str, errno: int, written: int) -> None:
    assert divmod(one(hostile, sql), 1 << 32) == (errno, written)


@pytest.mark.parametrize(
    ("sql", "errno"),
    [
        ("SELECT write_iovs(65532, 1, 8)", EFAULT),  # the iovec runs past memory
        ("SELECT write_iovs(0, 1, 65534)", EFAULT),  # nwritten past memory
        ("SELECT write_iovs(0, 536870911, 8)", EINVAL),  # more iovecs than IOV_MAX
        ("SELECT write_iovs(0, 1025, 8)", EINVAL),
        ("SELECT write_iovs(4294967295, 1, 8)", EFAULT),
    ],
)
def test_bad_iovecs_are_errors_not_traps(hostile: apsw.Connection, sql: str, errno: int) -> None:
    assert one(hostile, sql) == errno


def test_stdio_stubs_say_a_terminal_that_cannot_seek(hostile: apsw.Connection) -> None:
    assert divmod(one(hostile, "SELECT fdstat(1)"), 1 << 32) == (0, 2)  # a character device: line-buffered
    assert one(hostile, "SELECT fdstat(5)") >> 32 == EBADF
    assert (one(hostile, "SELECT seek(1)"), one(hostile, "SELECT seek(4)")) == (ESPIPE, EBADF)
    assert (one(hostile, "SELECT close(2)"), one(hostile, "SELECT close(3)")) == (0, EBADF)


def test_trap_names_the_function_and_backtrace(hostile: apsw.Connection) -> None:
    message = one_error(hostile, "SELECT trap_after(1)")
    assert message == (
        "h.trap_after: trap (unreachable): wasm `unreachable` instruction executed in inner "
        "(called from outer <- trap_after)\nguest output:\nhello\nworld"
    )


def test_bytes_that_are_not_utf8_or_controls_are_shown_safely(hostile: apsw.Connection) -> None:
    message = one_error(hostile, "SELECT trap_garbled(1)")
    assert message.endswith("\nguest output:\n\ufffd\ufffd bad ?[31m red?nul")


def test_a_message_full_of_replacement_characters_is_cut_between_characters(hostile: apsw.Connection) -> None:
    # 600 bytes that are not UTF-8 become 1800 bytes of U+FFFD, past the
    # message's 1600: the cut falls between characters (APSW decodes strictly).
    message = one_error(hostile, "SELECT trap_invalid_x(1)")
    head, _, shown = message.partition("\nguest output (last lines):\n")
    assert head.startswith("h.trap_invalid_x: trap (unreachable)")
    assert set(shown) == {"\ufffd"} and len(message.encode("utf-8")) <= 1599


def test_a_huge_write_keeps_the_last_bytes(hostile: apsw.Connection) -> None:
    message = one_error(hostile, "SELECT trap_huge(1)")
    head, _, shown = message.partition("\nguest output (last lines):\n")
    assert head.startswith("h.trap_huge: trap (unreachable)")
    assert shown.endswith("AZ") and set(shown[:-1]) == {"A"} and 500 <= len(shown) <= 600


def test_writing_in_a_loop_ends_at_the_time_limit(hostile: apsw.Connection) -> None:
    started = time.monotonic()
    message = one_error(hostile, "SELECT spin(1)")
    assert time.monotonic() - started < 5
    assert message.startswith("h.spin: time limit of 200 ms exceeded")
    assert message.endswith("\nguest output (last lines):\nhello\nhello\nhello\nhello\nhello\nhello\nhello\nhello")


def test_output_of_an_earlier_call_is_not_shown(hostile: apsw.Connection) -> None:
    hostile.execute("SELECT write(1, 100, 12)").fetchall()
    message = one_error(hostile, "SELECT wasm_call('h', 'trap_after', 1)")
    assert message.count("hello") == 1


def test_stdio_needs_no_grant_and_no_directonly(session_key: Ed25519PrivateKey, build: Build) -> None:
    runtime = sqlwasm.Runtime(trusted_keys=[session_key.public_key()], grant=())
    conn = runtime.connect(":memory:", [build(HOSTILE, HOSTILE_MANIFEST)])
    conn.execute("CREATE VIEW v AS SELECT write(1, 100, 5) AS r")
    assert conn.execute("SELECT r FROM v").fetchall() == [(5,)]


def test_stdio_imports_without_the_capability_are_refused_at_load(build: Build, connect: Connect) -> None:
    undeclared = manifest(*HOSTILE_MANIFEST["functions"], name="h")
    with pytest.raises(CapabilityError, match="needs capability 'stdio' that its manifest does not declare"):
        connect(build(HOSTILE, undeclared))
