"""extensions/stats: the aggregate and window functions, from SQL, against
tests/stats_reference.py.

These need the host's aggregate/window support (docs/abi.md).
"""

from __future__ import annotations

import json
import math
import statistics
from fractions import Fraction
from typing import Any, Callable, Iterator, Optional, Sequence

import apsw
import pytest
import stats_reference as ref
from conftest import one_error, shipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EPS = 2.0**-52

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def conn() -> Iterator[apsw.Connection]:
    connection = shipped("stats")
    yield connection
    connection.close()


def load(conn: apsw.Connection, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Table t(i, g, x, y) with rows (g, x, y), i the insertion order.
    Returns the rows as stored, which is what the functions see (a REAL
    column keeps -0.0 as 0.0, for one)."""
    conn.execute("DROP TABLE IF EXISTS t; CREATE TABLE t(i INTEGER PRIMARY KEY, g INTEGER, x REAL, y REAL)")
    with conn:
        conn.executemany("INSERT INTO t(g, x, y) VALUES (?, ?, ?)", rows)
    return conn.execute("SELECT g, x, y FROM t ORDER BY i").fetchall()


# ------------------------------------------------------------------ the functions

# SQL name -> (reference, number of arguments)
ONE_ARG: dict[str, Callable[..., Any]] = {
    "stats_median": ref.stats_median,
    "stats_mode": ref.stats_mode,
    "stats_variance": ref.stats_variance,
    "stats_stddev": ref.stats_stddev,
    "stats_variance_pop": ref.stats_variance_pop,
    "stats_stddev_pop": ref.stats_stddev_pop,
}
TWO_ARG: dict[str, Callable[..., Any]] = {
    "stats_covariance": ref.stats_covariance,
    "stats_correlation": ref.stats_correlation,
    "stats_weighted_mean": ref.stats_weighted_mean,
}
ORDER_STATISTICS = {"stats_median", "stats_mode", "stats_percentile"}
SQUARED = {"stats_variance", "stats_variance_pop", "stats_covariance"}
ROOTS = {"stats_stddev", "stats_stddev_pop"}


def reference(name: str, rows: Sequence[tuple[Any, ...]]) -> Any:
    """The reference result over rows of (x, y) (y unused by one-argument
    functions)."""
    if name in ONE_ARG:
        return ONE_ARG[name]([x for x, _ in rows])
    return TWO_ARG[name]([(x, y) for x, y in rows])


def call(name: str) -> str:
    return f"{name}(x)" if name in ONE_ARG else f"{name}(x, y)"


def magnitude(rows: Sequence[tuple[Any, ...]]) -> float:
    return max([1.0] + [abs(v) for row in rows for v in row if v is not None])


def agrees(name: str, got: Any, want: Any, rows: Sequence[tuple[Any, ...]], history: tuple[int, float] | None = None) -> bool:
    """got ~ want. A plain aggregate is held to a tight error; a window's
    running moments lose absolute precision with the size and magnitude of
    everything that passed through the partition (`history`: rows seen and
    the largest magnitude), inherent to Welford downdates."""
    if want is None or got is None:
        if got is None and want is None:
            return True
        # a correlation whose variance is lost in rounding noise may be NULL
        return name == "stats_correlation" and got is None and history is not None and _tiny_spread(rows, history)
    if math.isinf(want) or math.isinf(got):
        return got == want
    scale = magnitude(rows)
    if name in ORDER_STATISTICS:  # interpolation rounds like numpy: within eps of the values
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=4 * EPS * scale)
    seen, largest = history if history is not None else (len(rows), scale)
    tol_m2 = 400 * EPS * math.sqrt(seen) * largest * largest + 64 * EPS * len(rows) * scale * scale
    if name in SQUARED:
        return abs(got - want) <= tol_m2 + 1e-12 * abs(want)
    if name in ROOTS:
        return abs(got - want) <= math.sqrt(tol_m2) + 1e-12 * abs(want)
    if name == "stats_correlation":
        pairs = _complete(rows)
        spread = min(_m2([x for x, _ in pairs]), _m2([y for _, y in pairs]))
        return spread > 0 and abs(got - want) <= 4 * tol_m2 / spread + 1e-9
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9 * scale)  # weighted mean


def _complete(rows: Sequence[tuple[Any, ...]]) -> list[tuple[float, float]]:
    """The rows a two-argument aggregate sees: no NULL in either column."""
    return [(x, y) for x, y in rows if x is not None and y is not None]


def _m2(values: Sequence[float]) -> float:
    """Exact sum of squared deviations from the mean."""
    exact = [Fraction(v) for v in values]
    mean = sum(exact) / len(exact)
    return float(sum((v - mean) ** 2 for v in exact))


def _tiny_spread(rows: Sequence[tuple[Any, ...]], history: tuple[int, float]) -> bool:
    pairs = _complete(rows)
    if len(pairs) < 2:
        return True
    seen, largest = history
    limit = 400 * EPS * math.sqrt(seen) * largest * largest
    return min(_m2([x for x, _ in pairs]), _m2([y for _, y in pairs])) <= limit


# Values: small integers (ties, constant runs), dyadic fractions and a few
# large ones; no subnormals (correlation of 1e-320 is noise on any side).
reals = st.one_of(
    st.integers(-5, 5).map(float),
    st.integers(-10**6, 10**6).map(lambda i: i / 64),
    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-6),
)
maybe_reals = st.one_of(st.none(), reals, reals, reals)
rows_strategy = st.lists(st.tuples(st.integers(0, 3), maybe_reals, maybe_reals), max_size=60)
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ groups


@fast
@given(rows=rows_strategy)
def test_grouped_aggregates_match_reference(conn: apsw.Connection, rows: list[tuple[Any, ...]]) -> None:
    rows = load(conn, rows)
    names = [*ONE_ARG, *TWO_ARG]
    sql = f"SELECT g, {', '.join(call(n) for n in names)} FROM t GROUP BY g ORDER BY g"
    for g, *results in conn.execute(sql):
        group = [(x, y) for gg, x, y in rows if gg == g]
        for name, got in zip(names, results):
            want = reference(name, group)
            assert agrees(name, got, want, group), (name, g, got, want, group)


@fast
@given(rows=rows_strategy, p=st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]), st.floats(0, 1)))
def test_percentile_matches_reference(conn: apsw.Connection, rows: list[tuple[Any, ...]], p: float) -> None:
    rows = load(conn, rows)
    for g, got in conn.execute("SELECT g, stats_percentile(x, ?) FROM t GROUP BY g", (p,)):
        want = ref.stats_percentile([(x, p) for gg, x, _ in rows if gg == g])
        assert agrees("stats_percentile", got, want, []), (g, got, want)


@fast
@given(rows=rows_strategy, bins=st.integers(1, 12))
def test_histogram_matches_reference(conn: apsw.Connection, rows: list[tuple[Any, ...]], bins: int) -> None:
    rows = load(conn, rows)
    for g, got in conn.execute("SELECT g, stats_histogram(x, ?) FROM t GROUP BY g", (bins,)):
        want = ref.stats_histogram([(x, bins) for gg, x, _ in rows if gg == g])
        assert got == want
        if got is not None:
            parsed = json.loads(got)
            values = [x for gg, x, _ in rows if gg == g and x is not None]
            assert sum(parsed["counts"]) == len(values) and len(parsed["counts"]) == bins
            assert (parsed["min"], parsed["max"]) == (min(values), max(values))


def test_empty_input_gives_null(conn: apsw.Connection) -> None:
    load(conn, [])
    names = [*ONE_ARG, *TWO_ARG]
    sql = f"SELECT {', '.join(call(n) for n in names)}, stats_percentile(x, 0.5), stats_histogram(x, 3) FROM t"
    assert conn.execute(sql).fetchall() == [(None,) * (len(names) + 2)]


def test_null_rows_are_skipped(conn: apsw.Connection) -> None:
    load(conn, [(0, None, 1.0), (0, 4.0, None), (0, 1.0, 2.0), (0, 3.0, 6.0), (0, None, None)])
    got = conn.execute(
        "SELECT stats_median(x), stats_variance(x), stats_covariance(x, y), stats_weighted_mean(x, y), "
        "stats_percentile(x, 1) FROM t"
    ).fetchone()
    want = (3.0, statistics.variance([4.0, 1.0, 3.0]), statistics.covariance([1.0, 3.0], [2.0, 6.0]), 20.0 / 8.0, 4.0)
    assert got == pytest.approx(want, rel=1e-15)


def test_known_values(conn: apsw.Connection) -> None:
    load(conn, [(0, x, w) for x, w in [(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (3.0, 1.0), (10.0, 0.0)]])
    got = conn.execute(
        "SELECT stats_median(x), stats_mode(x), stats_percentile(x, 0.25), stats_variance_pop(x), "
        "stats_weighted_mean(x, y), stats_histogram(x, 3) FROM t"
    ).fetchone()
    assert got[:3] == (2.0, 2.0, 2.0)
    assert got[3] == pytest.approx(statistics.pvariance([1.0, 2, 2, 3, 10]), rel=1e-15)
    assert got[4:] == (2.0, '{"min":1,"max":10,"counts":[4,0,1]}')


def test_percentile_agrees_with_statistics_quantiles(conn: apsw.Connection) -> None:
    values = [3.5, -1.0, 7.25, 7.25, 0.0, 12.0, 5.5]
    load(conn, [(0, x, None) for x in values])
    for n in (2, 4, 10):
        cuts = statistics.quantiles(values, n=n, method="inclusive")
        for i, cut in enumerate(cuts, 1):
            got = conn.execute("SELECT stats_percentile(x, ?) FROM t", (i / n,)).fetchone()[0]
            assert math.isclose(got, cut, rel_tol=1e-12), (n, i, got, cut)


def test_correlation_is_null_for_a_constant_input(conn: apsw.Connection) -> None:
    load(conn, [(0, 0.1, float(y)) for y in range(5)])
    assert conn.execute("SELECT stats_correlation(x, y), stats_correlation(y, x) FROM t").fetchone() == (None, None)


def test_weighted_mean_with_zero_total_weight_is_null(conn: apsw.Connection) -> None:
    load(conn, [(0, 5.0, 2.5), (0, 7.0, -2.5)])
    assert conn.execute("SELECT stats_weighted_mean(x, y) FROM t").fetchone() == (None,)


def test_infinities(conn: apsw.Connection) -> None:
    load(conn, [(0, 1.0, 1.0), (0, 1e999, 1.0), (0, 3.0, 1.0)])
    got = conn.execute("SELECT stats_median(x), stats_variance(x), stats_weighted_mean(x, y), stats_mode(x) FROM t").fetchone()
    assert got == (3.0, None, math.inf, 1.0)


def test_many_states_live_at_once(conn: apsw.Connection) -> None:
    """Several aggregates per group and many groups: each has its own state."""
    rows = [(i % 37, float((i * 7919) % 101), float(i % 13)) for i in range(3000)]
    rows = load(conn, rows)
    names = [*ONE_ARG, *TWO_ARG]
    sql = f"SELECT g, {', '.join(call(n) for n in names)}, stats_percentile(x, 0.3) FROM t GROUP BY g"
    for g, *results in conn.execute(sql):
        group = [(x, y) for gg, x, y in rows if gg == g]
        for name, got in zip(names, results):
            assert agrees(name, got, reference(name, group), group), name
        assert results[-1] == ref.stats_percentile([(x, 0.3) for x, _ in group])


def test_large_group(conn: apsw.Connection) -> None:
    got = conn.execute(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 199999) "
        "SELECT stats_median((i * 7919) % 100003), stats_mode(i % 1000), stats_percentile(i, 0.999) FROM c"
    ).fetchone()
    values = [(i * 7919) % 100003 for i in range(200000)]
    assert got == (ref.stats_median(values), 0.0, ref.stats_percentile([(i, 0.999) for i in range(200000)]))


def test_states_are_freed() -> None:
    """With 4 MiB of guest memory, tens of thousands of groups only fit if
    every final releases its state."""
    small = shipped("stats", memory_pages=64)
    try:
        sql = (
            "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 199999) "
            "SELECT count(*), sum(m) FROM (SELECT i / 4 AS g, stats_median(i) AS m, stats_variance(i) AS v, "
            "stats_histogram(i, 3) AS h FROM c GROUP BY g)"
        )
        assert small.execute(sql).fetchone() == (50000, sum(4 * g + 1.5 for g in range(50000)))
    finally:
        small.close()


# ------------------------------------------------------------------ errors


def test_percentile_rejects_p_out_of_range(conn: apsw.Connection) -> None:
    load(conn, [(0, 1.0, None)])
    for p, text in [(1.5, "1.5"), (-0.25, "-0.25"), (2, "2")]:
        message = one_error(conn, "SELECT stats_percentile(x, ?) FROM t", p)
        assert message == f"stats.stats_percentile: p must be between 0 and 1, got {text}"


def test_percentile_rejects_changing_p(conn: apsw.Connection) -> None:
    load(conn, [(0, 1.0, 0.5), (0, 2.0, 0.75)])
    message = one_error(conn, "SELECT stats_percentile(x, y) FROM t")
    assert message == "stats.stats_percentile: p must be the same for every row of the group, got 0.75 after 0.5"


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT stats_histogram(x, 0) FROM t", "bins must be between 1 and 1000, got 0"),
        ("SELECT stats_histogram(x, 1001) FROM t", "bins must be between 1 and 1000, got 1001"),
        ("SELECT stats_histogram(x, i) FROM t", "bins must be the same for every row of the group, got 2 after 1"),
        ("SELECT stats_histogram(x * 1e999, 3) FROM t", "values must be finite numbers"),
    ],
)
def test_histogram_errors(conn: apsw.Connection, sql: str, message: str) -> None:
    load(conn, [(0, 1.0, None), (0, 2.0, None)])
    assert one_error(conn, sql) == f"stats.stats_histogram: {message}"


def test_error_in_one_group_leaves_the_connection_usable(conn: apsw.Connection) -> None:
    load(conn, [(0, 1.0, 0.5), (1, 2.0, 0.5), (1, 3.0, 0.9)])
    one_error(conn, "SELECT g, stats_percentile(x, y) FROM t GROUP BY g")
    assert conn.execute("SELECT stats_percentile(x, 0.5) FROM t").fetchone() == (2.0,)


# ------------------------------------------------------------------ windows


def frames_reference(name: str, rows: Sequence[tuple[Any, ...]], preceding: int, following: int,
                     extra: Optional[Callable[..., Any]] = None):
    """(result, frame, history) per row of one partition, for
    ROWS BETWEEN preceding PRECEDING AND following FOLLOWING."""
    out = []
    for r in range(len(rows)):
        frame = rows[max(0, r - preceding): r + following + 1]
        seen = rows[: r + following + 1]
        history = (len(seen), magnitude(seen))
        want = extra(frame) if extra else reference(name, frame)
        out.append((want, frame, history))
    return out


window_rows = st.lists(st.tuples(st.integers(0, 1), maybe_reals, maybe_reals), max_size=40)


@fast
@given(rows=window_rows, preceding=st.integers(0, 5), following=st.integers(0, 2),
       name=st.sampled_from([*ONE_ARG, *TWO_ARG]))
def test_sliding_windows_match_reference(conn: apsw.Connection, rows: list[tuple[Any, ...]], preceding: int,
                                         following: int, name: str) -> None:
    rows = load(conn, rows)
    sql = (f"SELECT g, {call(name)} OVER (PARTITION BY g ORDER BY i "
           f"ROWS BETWEEN {preceding} PRECEDING AND {following} FOLLOWING) FROM t ORDER BY g, i")
    got = conn.execute(sql).fetchall()
    expected = []
    for g in sorted({row[0] for row in rows}):
        part = [(x, y) for gg, x, y in rows if gg == g]
        expected += [(g, *item) for item in frames_reference(name, part, preceding, following)]
    assert len(got) == len(expected)
    for (g, value), (g2, want, frame, history) in zip(got, expected):
        assert g == g2
        assert agrees(name, value, want, frame, history), (name, value, want, frame)


@fast
@given(rows=window_rows, preceding=st.integers(0, 6), p=st.sampled_from([0.0, 0.1, 0.5, 0.8, 1.0]))
def test_percentile_window(conn: apsw.Connection, rows: list[tuple[Any, ...]], preceding: int, p: float) -> None:
    rows = load(conn, rows)
    got = [v for (v,) in conn.execute(
        f"SELECT stats_percentile(x, ?) OVER (ORDER BY i ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW) "
        "FROM t ORDER BY i", (p,))]
    part = [(x, None) for _, x, _ in rows]
    want = frames_reference("stats_percentile", part, preceding, 0,
                            extra=lambda frame: ref.stats_percentile([(x, p) for x, _ in frame]))
    assert len(got) == len(want)
    for value, (expected, frame, _) in zip(got, want):
        assert agrees("stats_percentile", value, expected, frame), (value, expected, frame)


def test_running_and_whole_partition_windows(conn: apsw.Connection) -> None:
    rows = [(i % 3, float((i * 37) % 11), float(i % 4)) for i in range(200)]
    rows = load(conn, rows)
    running = conn.execute("SELECT stats_median(x) OVER (ORDER BY i) FROM t ORDER BY i").fetchall()
    xs = [x for _, x, _ in rows]
    assert [v for (v,) in running] == [ref.stats_median(xs[: k + 1]) for k in range(len(xs))]
    whole = conn.execute("SELECT g, stats_mode(x) OVER (PARTITION BY g) FROM t ORDER BY i").fetchall()
    for g, value in whole:
        assert value == ref.stats_mode([x for gg, x, _ in rows if gg == g])
    peers = conn.execute("SELECT g, stats_variance(x) OVER (ORDER BY g) FROM t").fetchall()
    for g, value in peers:
        want = ref.stats_variance([x for gg, x, _ in rows if gg <= g])
        assert math.isclose(value, want, rel_tol=1e-9)


def test_constant_window_after_a_spike(conn: apsw.Connection) -> None:
    """Once a large value leaves the frame, a constant frame has variance 0
    and no correlation, despite the rounding left behind by the downdate."""
    rows = [(0, x, y) for x, y in [(1e9, 1.0), (0.1, 1.0), (0.1, 2.0), (0.1, 3.0), (0.1, 5.0)]]
    rows = load(conn, rows)
    got = conn.execute(
        "SELECT stats_variance(x) OVER w, stats_stddev(x) OVER w, stats_correlation(x, y) OVER w "
        "FROM t WINDOW w AS (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) ORDER BY i"
    ).fetchall()
    assert got[3:] == [(0.0, 0.0, None), (0.0, 0.0, None)]
