"""extensions/text: the string functions, from SQL, against
tests/text_reference.py."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Iterator

import apsw
import pytest
import text_reference as ref
from conftest import one_error, shipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PAIR_FUNCTIONS = {
    "text_levenshtein": ref.text_levenshtein,
    "text_damerau_levenshtein": ref.text_damerau_levenshtein,
    "text_jaro_winkler": ref.text_jaro_winkler,
    "text_trigram_similarity": ref.text_trigram_similarity,
}


@pytest.fixture(scope="module")
def conn() -> Iterator[apsw.Connection]:
    connection = shipped("text")
    yield connection
    connection.close()


def sql_value(conn: apsw.Connection, sql: str, *bindings: Any) -> Any:
    return conn.execute(sql, bindings).fetchone()[0]


def same(got: Any, want: Any) -> bool:
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15)
    return got == want and type(got) is type(want)


# Any code point SQLite can store as UTF-8 (no surrogates; no NUL, which
# the text binding of some drivers cuts at), weighted towards small
# alphabets so that strings share characters.
any_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
small_alphabet = st.sampled_from(list("abcAB -'1ñé日本\U0001F600"))
texts = st.one_of(st.text(small_alphabet, max_size=25), st.text(any_char, max_size=25))
fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fast
@given(a=texts, b=texts, name=st.sampled_from(sorted(PAIR_FUNCTIONS)))
def test_pair_functions_match_reference(conn: apsw.Connection, a: str, b: str, name: str) -> None:
    got = sql_value(conn, f"SELECT {name}(?, ?)", a, b)
    want = PAIR_FUNCTIONS[name](a, b)
    assert same(got, want), (name, a, b, got, want)


@fast
@given(a=st.text(st.sampled_from("abcd"), max_size=12), edits=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20), st.sampled_from("abcde")), max_size=4))
def test_distances_of_near_copies(conn: apsw.Connection, a: str, edits: list[tuple[int, int, str]]) -> None:
    """b is a few edits (including swaps) away from a."""
    b = list(a)
    for op, pos, ch in edits:
        pos = pos % (len(b) + 1)
        if op == 0:
            b.insert(pos, ch)
        elif op == 1 and pos < len(b):
            del b[pos]
        elif op == 2 and pos < len(b):
            b[pos] = ch
        elif op == 3 and pos + 1 < len(b):
            b[pos], b[pos + 1] = b[pos + 1], b[pos]
    b_text = "".join(b)
    got = conn.execute("SELECT text_levenshtein(?1, ?2), text_damerau_levenshtein(?1, ?2), "
                       "text_damerau_levenshtein(?2, ?1)", (a, b_text)).fetchone()
    dl = ref.text_damerau_levenshtein(a, b_text)
    assert got == (ref.text_levenshtein(a, b_text), dl, dl)
    assert dl <= got[0] and dl <= len(edits)


@fast
@given(s=texts)
def test_soundex_matches_reference(conn: apsw.Connection, s: str) -> None:
    assert sql_value(conn, "SELECT text_soundex(?)", s) == ref.text_soundex(s)


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT text_levenshtein('kitten', 'sitting')", 3),
        ("SELECT text_levenshtein('日本', '日本語')", 1),  # code points, not bytes
        ("SELECT text_levenshtein('', '')", 0),
        ("SELECT text_damerau_levenshtein('CA', 'ABC')", 2),  # unrestricted: OSA would say 3
        ("SELECT text_damerau_levenshtein('ab', 'ba')", 1),
        ("SELECT text_jaro_winkler('', '')", 1.0),
        ("SELECT text_jaro_winkler('abc', '')", 0.0),
        ("SELECT text_soundex('Robert')", "R163"),
        ("SELECT text_soundex('Rupert')", "R163"),
        ("SELECT text_soundex('Tymczak')", "T522"),
        ("SELECT text_soundex('Pfister')", "P236"),  # the first letter's code counts
        ("SELECT text_soundex('Ashcraft')", "A261"),  # H does not separate S and C
        ("SELECT text_soundex('Honeyman')", "H555"),  # vowels do separate
        ("SELECT text_soundex('Lee')", "L000"),
        ("SELECT text_soundex('42 ü')", ""),
        ("SELECT text_soundex(1234)", ""),
        ("SELECT text_trigram_similarity('', '')", 0.0),
        ("SELECT text_trigram_similarity('Word', 'wORD')", 1.0),
        ("SELECT text_trigram_similarity('word', 'two words')", 4 / 11),  # as PostgreSQL's pg_trgm
        ("SELECT text_levenshtein(NULL, 'a')", None),
    ],
)
def test_known_values(conn: apsw.Connection, sql: str, expected: Any) -> None:
    assert sql_value(conn, sql) == expected


def test_jaro_winkler_known_values(conn: apsw.Connection) -> None:
    for a, b, want in [("MARTHA", "MARHTA", 0.9611111111111111), ("DIXON", "DICKSONX", 0.8133333333333333),
                       ("DWAYNE", "DUANE", 0.84)]:
        assert sql_value(conn, "SELECT text_jaro_winkler(?, ?)", a, b) == pytest.approx(want, abs=1e-12)


def test_damerau_is_the_true_edit_distance_with_swaps(conn: apsw.Connection) -> None:
    """Against a breadth-first search over single edits (insert, delete,
    substitute, swap neighbours) for all short strings over 'ab'."""
    words = ["".join(p) for n in range(4) for p in itertools.product("ab", repeat=n)]
    for a, b in itertools.product(words, repeat=2):
        assert sql_value(conn, "SELECT text_damerau_levenshtein(?, ?)", a, b) == _edit_distance(a, b, "ab"), (a, b)


def _edit_distance(a: str, b: str, alphabet: str) -> int:
    frontier, seen, distance = {a}, {a}, 0
    while b not in frontier:
        following = set()
        for s in frontier:
            for i in range(len(s) + 1):
                following.update(s[:i] + c + s[i:] for c in alphabet)
                if i < len(s):
                    following.add(s[:i] + s[i + 1:])
                    following.update(s[:i] + c + s[i + 1:] for c in alphabet)
                if i + 1 < len(s):
                    following.add(s[:i] + s[i + 1] + s[i] + s[i + 2:])
        frontier = {s for s in following if s not in seen and len(s) <= max(len(a), len(b)) + 1}
        seen |= frontier
        distance += 1
    return distance


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"ab\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\xe2\x82",
     b"\xf0\x9f\x98\x80\xf0"],
)
def test_invalid_utf8_is_an_error(conn: apsw.Connection, data: bytes) -> None:
    for name in [*PAIR_FUNCTIONS, "text_soundex"]:
        if name == "text_soundex":
            message = one_error(conn, "SELECT text_soundex(CAST(? AS TEXT))", data)
            assert message == f"text.text_soundex: {ref.utf8_error(1, data)}"
        else:
            message = one_error(conn, f"SELECT {name}('ok', CAST(? AS TEXT))", data)
            assert message == f"text.{name}: {ref.utf8_error(2, data)}"


def test_damerau_refuses_inputs_over_the_limit(conn: apsw.Connection) -> None:
    message = one_error(conn, "SELECT text_damerau_levenshtein(printf('%.*c', 10001, 'a'), printf('%.*c', 10000, 'b'))")
    assert message == ("text.text_damerau_levenshtein: inputs too long: 10001 x 10000 code points is more than "
                       "the limit of 100000000 for the product of the lengths")
    assert sql_value(conn, "SELECT text_damerau_levenshtein(printf('%.*c', 10000, 'a'), printf('%.*c', 10000, 'b'))") == 10000


def test_long_inputs(conn: apsw.Connection) -> None:
    """100k code points: Levenshtein is bit-parallel and Jaro-Winkler's
    matching near-linear, so both stay well inside the default time limit."""
    a = "".join("abcdefgh ñ日"[(i * 7 + i // 13) % 11] for i in range(100_000))
    b = a[:50_000] + "xyz" + a[50_010:]
    started = time.monotonic()
    got = conn.execute("SELECT text_levenshtein(?1, ?2), text_jaro_winkler(?1, ?2), "
                       "text_trigram_similarity(?1, ?2), text_soundex(?1)", (a, b)).fetchone()
    assert time.monotonic() - started < 4.0
    assert got[0] == 10  # 7 deleted, 3 substituted
    assert 0.9 < got[1] < 1.0
    assert got[2] == pytest.approx(ref.text_trigram_similarity(a, b), abs=1e-12)
    assert got[3] == ref.text_soundex(a)
    # the reference's Jaro-Winkler is quadratic: compare on a slice
    a, b = a[:4000], a[:2000] + "xyz" + a[2010:4000]
    assert sql_value(conn, "SELECT text_jaro_winkler(?, ?)", a, b) == pytest.approx(ref.text_jaro_winkler(a, b), abs=1e-12)


# ---------------------------------------------------------------- table functions

# Texts rich in token separators: ASCII punctuation, Latin-1 symbols,
# general punctuation, CJK and fullwidth punctuation, and the code points
# just outside those ranges.
separator_heavy = st.sampled_from(list("ab Z9 .,-_\t\n\x7f\x80\xa0\xaa\xbf\xc0\xd7\xf7\u1680\u1fff\u2000\u2014\u206f"
                                       "\u2070\u3001\u3004\u3008\u3012\u301f\u3020\ufeff\uff01\uff10\uff21\uff65"
                                       "\uff66日ñ\U0001F600"))
token_texts = st.one_of(st.text(separator_heavy, max_size=40), texts)


def table_rows(conn: apsw.Connection, sql: str, *bindings: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql, bindings).fetchall()]


@fast
@given(s=token_texts)
def test_tokens_match_reference(conn: apsw.Connection, s: str) -> None:
    got = table_rows(conn, "SELECT * FROM text_tokens(?)", s)
    assert got == ref.text_tokens(s)
    for token, _, start, end in got:
        assert token == s[start:end]


@fast
@given(s=texts, n=st.integers(1, 6))
def test_ngrams_match_reference(conn: apsw.Connection, s: str, n: int) -> None:
    assert table_rows(conn, "SELECT * FROM text_ngrams(?, ?)", s, n) == ref.text_ngrams(s, n)


def test_table_columns(conn: apsw.Connection) -> None:
    tokens = conn.execute("SELECT * FROM text_tokens('a')")
    assert [d[0] for d in tokens.getdescription()] == ["token", "position", "start", "end"]
    ngrams = conn.execute("SELECT * FROM text_ngrams('a', 1)")
    assert [d[0] for d in ngrams.getdescription()] == ["ngram", "position"]
    # the arguments are hidden columns, and named columns work in any order
    assert table_rows(conn, "SELECT \"end\", token FROM text_tokens('x yz') WHERE start > 0") == [(4, "yz")]


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT token FROM text_tokens('Hello, wörld! 日本、東京 x—y 42')",
         [("Hello",), ("wörld",), ("日本",), ("東京",), ("x",), ("y",), ("42",)]),
        ("SELECT * FROM text_tokens('')", []),
        ("SELECT * FROM text_tokens(' ,.;')", []),
        ("SELECT * FROM text_tokens('ab')", [("ab", 0, 0, 2)]),
        ("SELECT * FROM text_tokens('\U0001F600x')", [("\U0001F600x", 0, 0, 2)]),  # offsets in code points
        ("SELECT * FROM text_ngrams('abc', 2)", [("ab", 0), ("bc", 1)]),
        ("SELECT * FROM text_ngrams('日本語', 3)", [("日本語", 0)]),
        ("SELECT * FROM text_ngrams('ab', 3)", []),
        ("SELECT * FROM text_ngrams('abc', 2.0)", [("ab", 0), ("bc", 1)]),
        ("SELECT * FROM text_tokens(NULL)", []),
        ("SELECT * FROM text_ngrams(NULL, 2)", []),
        ("SELECT * FROM text_ngrams('abc', NULL)", []),
    ],
)
def test_table_known_values(conn: apsw.Connection, sql: str, expected: list[tuple[Any, ...]]) -> None:
    assert table_rows(conn, sql) == expected


@pytest.mark.parametrize("n", [0, -1, 1001, 2**62])
def test_ngrams_refuses_bad_n(conn: apsw.Connection, n: int) -> None:
    message = one_error(conn, "SELECT * FROM text_ngrams('abc', ?)", n)
    assert message == f"text.text_ngrams: n must be between 1 and {ref.NGRAM_MAX_N}, got {n}"
    with pytest.raises(ref.TextError, match="n must be"):
        ref.text_ngrams("abc", n)


@pytest.mark.parametrize("data", [b"\xff", b"ab\x80", b"\xed\xa0\x80", b"abc\xe2\x82"])
def test_table_functions_refuse_invalid_utf8(conn: apsw.Connection, data: bytes) -> None:
    want = ref.utf8_error(1, data)
    assert one_error(conn, "SELECT * FROM text_tokens(CAST(? AS TEXT))", data) == f"text.text_tokens: {want}"
    assert one_error(conn, "SELECT * FROM text_ngrams(CAST(? AS TEXT), 2)", data) == f"text.text_ngrams: {want}"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(token_texts, max_size=8))
def test_tokens_in_a_join(conn: apsw.Connection, names: list[str]) -> None:
    conn.execute("CREATE TEMP TABLE places(id INTEGER PRIMARY KEY, name TEXT)")
    try:
        conn.executemany("INSERT INTO places(id, name) VALUES (?, ?)", list(enumerate(names)))
        got = table_rows(conn, "SELECT p.id, t.token, t.position FROM places p, text_tokens(p.name) t "
                               "ORDER BY p.id, t.position")
        want = [(i, token, position) for i, name in enumerate(names) for token, position, _, _ in ref.text_tokens(name)]
        assert got == want
        counts = table_rows(conn, "SELECT p.id, (SELECT count(*) FROM text_ngrams(p.name, 2)) FROM places p ORDER BY p.id")
        assert counts == [(i, len(ref.text_ngrams(name, 2))) for i, name in enumerate(names)]
    finally:
        conn.execute("DROP TABLE temp.places")


def test_long_texts_take_many_batches(conn: apsw.Connection) -> None:
    """100,000 tokens and 300,000 n-grams: hundreds of next() batches."""
    s = " ".join(f"w{i % 997}é" for i in range(100_000))
    assert table_rows(conn, "SELECT * FROM text_tokens(?)", s) == ref.text_tokens(s)
    got = table_rows(conn, "SELECT count(*), sum(position), max(length(ngram)) FROM text_ngrams(?, 1000)", s)
    count = len(s) - 1000 + 1
    assert got == [(count, count * (count - 1) // 2, 1000)]


def test_early_stops_free_the_cursor(conn: apsw.Connection) -> None:
    """Each open copies a 1M-code-point text (about 9 MB of guest memory);
    LIMIT stops each statement after one batch. If close() leaked, 60 of
    these would pass the module's 256 MiB memory limit."""
    s = "ab " * 333_334
    for _ in range(60):
        assert table_rows(conn, "SELECT token, position FROM text_tokens(?) LIMIT 2", s) == [("ab", 0), ("ab", 1)]
        assert table_rows(conn, "SELECT ngram FROM text_ngrams(?, 2) LIMIT 1", s) == [("ab",)]


def test_batches_fit_a_small_result_limit() -> None:
    """A host may lower max_result_bytes far below its 16 MiB default; the
    batches (at most 32 KiB plus one row) still fit 40,000 bytes."""
    small = shipped("text", max_result_bytes=40_000)
    try:
        s = " ".join(f"w{i}" for i in range(50_000))
        assert table_rows(small, "SELECT count(*), max(length(ngram)) FROM text_ngrams(?, 1000)", s) == [
            (len(s) - 999, 1000)]
        assert table_rows(small, "SELECT count(*) FROM text_tokens(?)", s) == [(50_000,)]
    finally:
        small.close()
