"""Pure-Python reference implementation of the ``text`` extension.

Written separately from ``extensions/text/text.c`` so tests can compare the
guest against it. Python strings are sequences of code points, which is
what the guest works on after decoding UTF-8. Where the SQL function would
fail, :class:`TextError` is raised with the guest's message (the host
prefixes it with ``text.<function>: ``).

* ``text_levenshtein``: insertions, deletions, substitutions.
* ``text_damerau_levenshtein``: the unrestricted Damerau-Levenshtein
  distance (adjacent transpositions; the characters between a transposed
  pair may be edited too), not the "optimal string alignment" variant:
  ``('CA', 'ABC')`` is 2, not 3. Refused when ``len(a) * len(b) > 10**8``.
* ``text_jaro_winkler``: prefix scale 0.1, at most 4 prefix characters,
  boost only when the Jaro similarity exceeds 0.7; two empty texts -> 1.0.
* ``text_soundex``: American Soundex of the ASCII letters; '' without any.
* ``text_trigram_similarity``: pg_trgm's similarity (ASCII lower-casing,
  words of ASCII alphanumerics and code points >= 128).
* ``text_tokens`` (table): the maximal runs of token characters (ASCII
  letters and digits, and code points from U+0080 up outside
  ``TOKEN_SEPARATORS``) as rows (token, position, start, end), offsets in
  code points, end exclusive.
* ``text_ngrams`` (table): rows (ngram, position) for every run of n code
  points; n in 1..``NGRAM_MAX_N``.
"""

from __future__ import annotations

import re
from typing import Optional

DAMERAU_MAX_CELLS = 10**8
NGRAM_MAX_N = 1000

# Code points from U+0080 up that separate tokens (inclusive ranges).
TOKEN_SEPARATORS = (
    (0x0080, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x1680, 0x1680),
    (0x2000, 0x206F),
    (0x3000, 0x3003),
    (0x3008, 0x3011),
    (0x3014, 0x301F),
    (0xFEFF, 0xFEFF),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
)

__all__ = [
    "DAMERAU_MAX_CELLS",
    "TextError",
    "utf8_error",
    "text_levenshtein",
    "text_damerau_levenshtein",
    "text_jaro_winkler",
    "text_soundex",
    "text_trigram_similarity",
    "trigrams",
    "NGRAM_MAX_N",
    "TOKEN_SEPARATORS",
    "is_token_char",
    "text_tokens",
    "text_ngrams",
]


class TextError(ValueError):
    """A text function failed; ``str(err)`` is the guest's error message."""


def utf8_error(argument: int, data: bytes) -> Optional[str]:
    """The guest's message for argument number ``argument`` (1-based) given
    as the raw bytes ``data``, or None when they are valid UTF-8."""
    try:
        data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        return "argument %d is not valid UTF-8 (at byte offset %d)" % (argument, exc.start)
    return None


# ---------------------------------------------------------------------------
# Edit distances


def text_levenshtein(a: str, b: str) -> int:
    # previous[j]: distance between a[:i-1] and b[:j]
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(
                min(
                    previous[j] + 1,  # delete ca
                    current[j - 1] + 1,  # insert cb
                    previous[j - 1] + (ca != cb),  # keep or substitute
                )
            )
        previous = current
    return previous[-1]


def text_damerau_levenshtein(a: str, b: str) -> int:
    """Lowrance-Wagner: the full table with a sentinel row and column."""
    if len(a) * len(b) > DAMERAU_MAX_CELLS:
        raise TextError(
            "inputs too long: %d x %d code points is more than the limit of %d "
            "for the product of the lengths" % (len(a), len(b), DAMERAU_MAX_CELLS)
        )
    n, m = len(a), len(b)
    infinity = n + m + 1
    # table[i + 1][j + 1] is the distance of a[:i] and b[:j]; row/column 0 is
    # the sentinel (infinity)
    table = [[infinity] * (m + 2) for _ in range(n + 2)]
    for i in range(n + 1):
        table[i + 1][1] = i
    for j in range(m + 1):
        table[1][j + 1] = j
    last_row_of = {}  # character -> last row (1-based) of a holding it
    for i in range(1, n + 1):
        last_match_col = 0
        for j in range(1, m + 1):
            k = last_row_of.get(b[j - 1], 0)  # last row < i holding b[j]
            col = last_match_col  # last column < j holding a[i]
            if a[i - 1] == b[j - 1]:
                cost = 0
                last_match_col = j
            else:
                cost = 1
            table[i + 1][j + 1] = min(
                table[i][j] + cost,
                table[i + 1][j] + 1,
                table[i][j + 1] + 1,
                table[k][col] + (i - k - 1) + 1 + (j - col - 1),  # transpose
            )
        last_row_of[a[i - 1]] = i
    return table[n + 1][m + 1]


# ---------------------------------------------------------------------------
# Jaro-Winkler


def text_jaro_winkler(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    reach = max(0, max(len(a), len(b)) // 2 - 1)
    used = [False] * len(b)
    a_matches = []  # matched characters of a, in a's order
    a_positions = []
    for i, ch in enumerate(a):
        for j in range(max(0, i - reach), min(len(b), i + reach + 1)):
            if not used[j] and b[j] == ch:
                used[j] = True
                a_matches.append(ch)
                a_positions.append(i)
                break
    m = len(a_matches)
    if m == 0:
        return 0.0
    b_matches = [b[j] for j in range(len(b)) if used[j]]
    half_transpositions = sum(x != y for x, y in zip(a_matches, b_matches)) / 2.0
    jaro = (m / len(a) + m / len(b) + (m - half_transpositions) / m) / 3.0
    if jaro <= 0.7:
        return jaro
    prefix = 0
    for x, y in zip(a[:4], b[:4]):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * 0.1 * (1.0 - jaro)


# ---------------------------------------------------------------------------
# Soundex

_SOUNDEX_GROUPS = {
    **dict.fromkeys("BFPV", "1"),
    **dict.fromkeys("CGJKQSXZ", "2"),
    **dict.fromkeys("DT", "3"),
    "L": "4",
    **dict.fromkeys("MN", "5"),
    "R": "6",
}


def text_soundex(s: str) -> str:
    letters = [ch.upper() for ch in s if ch.isascii() and ch.isalpha()]
    if not letters:
        return ""
    first = letters[0]
    digits = []
    last = _SOUNDEX_GROUPS.get(first)  # None for vowels, H and W
    for ch in letters[1:]:
        if ch in "HW":
            continue  # transparent: does not separate equal digits
        digit = _SOUNDEX_GROUPS.get(ch)
        if digit is None:  # a vowel (or Y) separates
            last = None
            continue
        if digit != last:
            digits.append(digit)
        last = digit
    return (first + "".join(digits) + "000")[:4]


# ---------------------------------------------------------------------------
# Trigrams


# ASCII letters and digits, and every code point from U+0080 up
_WORD = re.compile("[0-9A-Za-z\u0080-\U0010ffff]+")


def trigrams(s: str) -> set:
    """pg_trgm's trigram set of s: tuples of three characters."""
    lowered = "".join(ch.lower() if ch.isascii() else ch for ch in s)
    out = set()
    for w in _WORD.findall(lowered):
        padded = "  " + w + " "
        out.update(tuple(padded[k:k + 3]) for k in range(len(padded) - 2))
    return out


def text_trigram_similarity(a: str, b: str) -> float:
    ta, tb = trigrams(a), trigrams(b)
    union = ta | tb
    if not union:
        return 0.0
    return len(ta & tb) / len(union)


# ---------------------------------------------------------------------------
# Table functions


def is_token_char(c: str) -> bool:
    code = ord(c)
    if code < 0x80:
        return c.isascii() and c.isalnum()
    return not any(lo <= code <= hi for lo, hi in TOKEN_SEPARATORS)


def text_tokens(text: str) -> list[tuple[str, int, int, int]]:
    """Rows (token, position, start, end) of text_tokens(text)."""
    rows: list[tuple[str, int, int, int]] = []
    start: Optional[int] = None
    for i, c in enumerate(text + " "):  # a trailing separator ends the last token
        if is_token_char(c) and i < len(text):
            if start is None:
                start = i
        elif start is not None:
            rows.append((text[start:i], len(rows), start, i))
            start = None
    return rows


def text_ngrams(text: str, n: int) -> list[tuple[str, int]]:
    """Rows (ngram, position) of text_ngrams(text, n)."""
    if not 1 <= n <= NGRAM_MAX_N:
        raise TextError("n must be between 1 and %d, got %d" % (NGRAM_MAX_N, n))
    return [(text[i:i + n], i) for i in range(len(text) - n + 1)]
