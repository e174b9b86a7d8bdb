"""The boundary round trip: every SQL value through a real guest and back.

tests/guests/echo.c is compiled by the real toolchain (sqlwasm._build.build:
zig cc, the C SDK, manifest embedding, signing) once per session. echo_value
decodes its argument with the SDK's msgpack reader and writes it again with
the SDK's writer, so what SQL gets back shows the host encoder, the guest SDK
and the host decoder agree on every value.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, Iterator

import apsw
import pytest
from conftest import one_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlwasm
from sqlwasm._build import build
from sqlwasm._signing import generate_keypair

GUESTS = Path(__file__).resolve().parent / "guests"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MIB = 1 << 20

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="session")
def echo_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """(echo.wasm signed by a fresh key, that key's .pub), built once."""
    keys = tmp_path_factory.mktemp("echo-keys")
    key_path, pub_path = generate_keypair("echo-tests", keys)
    data = build(GUESTS / "echo.c", GUESTS / "echo.toml", key=key_path)
    return data, pub_path


@pytest.fixture(scope="module")
def echo(echo_module: tuple[bytes, Path]) -> Iterator[apsw.Connection]:
    data, pub_path = echo_module
    conn = sqlwasm.connect(":memory:", [data], trusted_keys=[pub_path])
    yield conn
    conn.close()


def echo_value(conn: apsw.Connection, value: Any) -> Any:
    rows = conn.execute("SELECT echo_value(?)", (value,)).fetchall()
    assert len(rows) == 1
    return rows[0][0]


def same_value(got: Any, sent: Any) -> bool:
    """Equal, with the same Python type; floats compared bit for bit."""
    if isinstance(sent, float):
        return isinstance(got, float) and struct.pack("<d", got) == struct.pack("<d", sent)
    return type(got) is type(sent) and got == sent


def test_module_is_built_signed_and_trusted(echo_module: tuple[bytes, Path]) -> None:
    data, pub_path = echo_module
    module = sqlwasm.Runtime(trusted_keys=[pub_path]).load(data)
    assert module.name == "echo" and module.signer is not None
    assert [f.name for f in module.functions] == ["echo_value", "echo_count", "echo_add", "echo_fail"]


# ------------------------------------------------------------ integers

# Every msgpack integer encoding and the values on both sides of its limits:
# positive fixint, uint8/16/32/64, negative fixint, int8/16/32/64.
MSGPACK_INT_BOUNDARIES = sorted(
    {
        0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, INT64_MAX - 1, INT64_MAX,
        -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769, -(2**31) + 1, -(2**31), -(2**31) - 1,
        INT64_MIN + 1, INT64_MIN, 2**31 - 1, 2**31, 2**53, 2**53 + 1, -(2**53) - 1,
    }
)


@pytest.mark.parametrize("value", MSGPACK_INT_BOUNDARIES)
def test_integer_boundaries(echo: apsw.Connection, value: int) -> None:
    assert same_value(echo_value(echo, value), value)


@SETTINGS
@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_integers(echo: apsw.Connection, value: int) -> None:
    assert same_value(echo_value(echo, value), value)


def test_integer_type_is_kept(echo: apsw.Connection) -> None:
    assert echo.execute("SELECT typeof(echo_value(1)), typeof(echo_value(1.0))").fetchall() == [("integer", "real")]


# ------------------------------------------------------------ floats

SPECIAL_FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.1, 1e308, -1e308, math.inf, -math.inf,
    5e-324, -5e-324, 2.2250738585072009e-308, 2.2250738585072014e-308,  # smallest subnormal, largest subnormal, smallest normal
    1.7976931348623157e308, 2.0**53, 2.0**63, -(2.0**63), 2.0**64, 3.4028234663852886e38, 1.401298464324817e-45,
]


@pytest.mark.parametrize("value", SPECIAL_FLOATS, ids=repr)
def test_float_specials(echo: apsw.Connection, value: float) -> None:
    assert same_value(echo_value(echo, value), value)


def test_negative_zero_keeps_its_sign(echo: apsw.Connection) -> None:
    got = echo_value(echo, -0.0)
    assert got == 0.0 and math.copysign(1.0, got) == -1.0
    assert math.copysign(1.0, echo_value(echo, 0.0)) == 1.0


def test_nan_becomes_null(echo: apsw.Connection) -> None:
    # SQLite has no NaN: binding one stores NULL, so the guest sees nil
    # (echo_value is null = "call") and NULL comes back.
    assert echo.execute("SELECT ? IS NULL", (math.nan,)).fetchall() == [(1,)]
    assert echo_value(echo, math.nan) is None
    assert echo_value(echo, -math.nan) is None
    assert echo.execute("SELECT typeof(echo_value(?))", (math.nan,)).fetchall() == [("null",)]


@SETTINGS
@given(st.floats())
def test_floats(echo: apsw.Connection, value: float) -> None:
    got = echo_value(echo, value)
    if math.isnan(value):
        assert got is None
    else:
        assert same_value(got, value)


# ------------------------------------------------------------ text and blobs


@SETTINGS
@given(st.text())
def test_text(echo: apsw.Connection, value: str) -> None:
    assert same_value(echo_value(echo, value), value)


@SETTINGS
@given(st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF) | st.just("\x00"), min_size=1))
def test_text_astral_and_nul(echo: apsw.Connection, value: str) -> None:
    assert same_value(echo_value(echo, value), value)


@pytest.mark.parametrize(
    "value",
    ["", "\x00", "a\x00b", "\x00" * 40, "😀", "\U0010ffff", "é" * 300, "\ufeffbom", "日本語テキスト"],
    ids=repr,
)
def test_text_examples(echo: apsw.Connection, value: str) -> None:
    assert same_value(echo_value(echo, value), value)


@SETTINGS
@given(st.binary())
def test_blobs(echo: apsw.Connection, value: bytes) -> None:
    assert same_value(echo_value(echo, value), value)


# str/bin 8/16/32 headers: lengths on both sides of each limit.
LENGTH_BOUNDARIES = [0, 1, 31, 32, 255, 256, 65535, 65536, MIB]


@pytest.mark.parametrize("length", LENGTH_BOUNDARIES)
def test_length_boundaries(echo: apsw.Connection, length: int) -> None:
    blob = bytes(i % 251 for i in range(length))
    text = "".join(chr(0x61 + i % 26) for i in range(length))
    assert same_value(echo_value(echo, blob), blob)
    assert same_value(echo_value(echo, text), text)


def test_empty_text_and_blob_keep_their_types(echo: apsw.Connection) -> None:
    assert echo.execute("SELECT typeof(echo_value('')), typeof(echo_value(x''))").fetchall() == [("text", "blob")]
    assert same_value(echo_value(echo, b""), b"")
    assert same_value(echo_value(echo, ""), "")


def test_one_mib_values(echo: apsw.Connection) -> None:
    blob = bytes(range(256)) * (MIB // 256)
    text = "€" * (MIB // 3) + "a"  # ~1 MiB of three-byte UTF-8
    assert same_value(echo_value(echo, blob), blob)
    assert same_value(echo_value(echo, text), text)


def test_null(echo: apsw.Connection) -> None:
    assert echo_value(echo, None) is None
    assert echo.execute("SELECT typeof(echo_value(NULL))").fetchall() == [("null",)]


sql_values = (
    st.none()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)


@SETTINGS
@given(st.lists(sql_values, max_size=30))
def test_a_column_of_mixed_values(echo: apsw.Connection, values: list[Any]) -> None:
    """Many rows through one statement: the argument buffer is reused."""
    echo.execute("CREATE TEMP TABLE IF NOT EXISTS mixed(i INTEGER PRIMARY KEY, v)")
    with echo:
        echo.execute("DELETE FROM mixed")
        echo.executemany("INSERT INTO mixed(i, v) VALUES (?, ?)", list(enumerate(values)))
    got = [row[0] for row in echo.execute("SELECT echo_value(v) FROM mixed ORDER BY i")]
    assert len(got) == len(values)
    for g, v in zip(got, values):
        assert same_value(g, v) or (v is None and g is None)


# ------------------------------------------------------------ the argument buffer


def test_argument_buffer_reuse_small_and_large_alternating(echo: apsw.Connection) -> None:
    """The host keeps the guest's buffer for rows that fit and asks for a
    bigger one otherwise (docs/abi.md); alternating sizes must never show a
    stale byte of an earlier row."""
    big = [bytes([i]) * MIB for i in range(8)]
    for round_ in range(40):
        small = f"small-{round_}".encode()
        assert echo_value(echo, big[round_ % 8]) == big[round_ % 8]
        assert echo_value(echo, small) == small
        assert echo_value(echo, round_) == round_
        assert echo_value(echo, "") == ""


def test_argument_buffer_reuse_within_one_statement(echo: apsw.Connection) -> None:
    echo.execute("CREATE TEMP TABLE IF NOT EXISTS alternating(i INTEGER PRIMARY KEY, v)")
    rows = []
    for i in range(60):
        if i % 2:
            rows.append((i, bytes([i]) * (MIB + i)))
        elif i % 4 == 0:
            rows.append((i, f"short text {i}"))
        else:
            rows.append((i, i * 1_000_003))
    with echo:
        echo.execute("DELETE FROM alternating")
        echo.executemany("INSERT INTO alternating VALUES (?, ?)", rows)
    for _ in range(2):
        got = echo.execute("SELECT i, echo_value(v) = v, length(echo_value(v)) FROM alternating ORDER BY i").fetchall()
        assert got == [(i, 1, len(v) if not isinstance(v, int) else len(str(v))) for i, v in rows]


def test_growing_rows(echo: apsw.Connection) -> None:
    """Rows that grow past the buffer one after another."""
    for size in [0, 200, 256, 257, 1000, 4096, 65536, 65537, 500_000, MIB, 2 * MIB]:
        value = bytes((size + i) % 256 for i in range(size))
        assert echo_value(echo, value) == value


# ------------------------------------------------------------ echo_count (variadic)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 100, 1000])
def test_count_arguments(echo: apsw.Connection, count: int) -> None:
    values = [[i, f"t{i}", float(i) / 3, bytes([i % 256]), None][i % 5] for i in range(count)]
    sql = f"SELECT echo_count({', '.join('?' * count)})"
    assert echo.execute(sql, values).fetchall() == [(count,)]


def test_count_over_sqlite_limit_is_an_error(echo: apsw.Connection) -> None:
    with pytest.raises(apsw.SQLError, match="too many arguments"):
        echo.execute(f"SELECT echo_count({', '.join('1' * 1001)})").fetchall()


@SETTINGS
@given(st.lists(sql_values | st.just(math.nan), max_size=40))
def test_count_any_values(echo: apsw.Connection, values: list[Any]) -> None:
    sql = f"SELECT echo_count({', '.join('?' * len(values))})"
    assert echo.execute(sql, values).fetchall() == [(len(values),)]


def test_count_large_arguments(echo: apsw.Connection) -> None:
    args = [b"x" * MIB, "y" * MIB, None, 1]
    assert echo.execute("SELECT echo_count(?, ?, ?, ?)", args).fetchall() == [(4,)]


# ------------------------------------------------------------ echo_add (raw)


def wrap64(n: int) -> int:
    return (n + 2**63) % 2**64 - 2**63


@SETTINGS
@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_add_wraps_at_int64(echo: apsw.Connection, a: int, b: int) -> None:
    assert echo.execute("SELECT echo_add(?, ?)", (a, b)).fetchall() == [(wrap64(a + b),)]


@pytest.mark.parametrize(
    "a, b, total",
    [(INT64_MAX, 1, INT64_MIN), (INT64_MIN, -1, INT64_MAX), (INT64_MAX, INT64_MAX, -2), (INT64_MIN, INT64_MIN, 0), (2, 3, 5)],
)
def test_add_examples(echo: apsw.Connection, a: int, b: int, total: int) -> None:
    assert echo.execute("SELECT echo_add(?, ?)", (a, b)).fetchall() == [(total,)]


def test_add_null_is_strict(echo: apsw.Connection) -> None:
    assert echo.execute("SELECT echo_add(NULL, 1), echo_add(1, NULL)").fetchall() == [(None, None)]


def test_add_converts_reals_and_refuses_text(echo: apsw.Connection) -> None:
    assert echo.execute("SELECT echo_add(1.9, -2.9)").fetchall() == [(-1,)]  # truncation toward zero
    assert one_error(echo, "SELECT echo_add(1, 'x')") == "echo.echo_add: argument 2 is TEXT, expected integer"
    assert one_error(echo, "SELECT echo_add(x'01', 1)") == "echo.echo_add: argument 1 is BLOB, expected integer"


# ------------------------------------------------------------ echo_fail

GUEST_MESSAGE_MAX = 500  # bytes of a guest's error text the host shows


def shown(message: str) -> str:
    """What the host shows of a guest's error text: at most 500 bytes of
    UTF-8, cut on a character boundary."""
    data = message.encode()
    if len(data) <= GUEST_MESSAGE_MAX:
        return message
    return data[:GUEST_MESSAGE_MAX].decode("utf-8", errors="ignore")


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_fail_message_is_the_guests_text(echo: apsw.Connection, message: str) -> None:
    assert one_error(echo, "SELECT echo_fail(?)", message) == f"echo.echo_fail: {shown(message)}"


def test_fail_examples(echo: apsw.Connection) -> None:
    assert one_error(echo, "SELECT echo_fail('boom')") == "echo.echo_fail: boom"
    assert one_error(echo, "SELECT echo_fail('')") == "echo.echo_fail: "
    assert one_error(echo, "SELECT echo_fail('😀 ünïcode')") == "echo.echo_fail: 😀 ünïcode"
    # null = "call": the guest gets nil and says what it expected.
    assert one_error(echo, "SELECT echo_fail(NULL)") == "echo.echo_fail: echo_fail: expected one text argument"
    # A number reaches a text argument as its text form.
    assert one_error(echo, "SELECT echo_fail(42)") == "echo.echo_fail: 42"


@pytest.mark.parametrize("length", [499, 500, 501, 100_000])
@pytest.mark.parametrize("char", ["m", "é", "€", "😀"])
def test_fail_long_message_is_cut_on_a_character_boundary(echo: apsw.Connection, length: int, char: str) -> None:
    message = (char * length)[:length]
    got = one_error(echo, "SELECT echo_fail(?)", message)
    assert got == f"echo.echo_fail: {shown(message)}"
    assert len(got.encode()) <= len("echo.echo_fail: ") + GUEST_MESSAGE_MAX


def test_fail_in_the_middle_of_a_statement(echo: apsw.Connection) -> None:
    with pytest.raises(apsw.SQLError, match=r"^echo\.echo_fail: row 3$"):
        echo.execute(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 5) "
            "SELECT CASE WHEN value = 3 THEN echo_fail('row ' || value) ELSE echo_value(value) END FROM n"
        ).fetchall()
    assert echo_value(echo, "still fine") == "still fine"
