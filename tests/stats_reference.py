"""Pure-Python reference implementation of the ``stats`` extension.

Written separately from ``extensions/stats/stats.c`` so tests can compare the
guest against it. Each function takes what one group (or one window frame)
of the SQL aggregate sees and returns the SQL result:

* one-argument functions take a sequence of values, two-argument functions
  a sequence of ``(a, b)`` pairs;
* rows with a NULL (``None``) argument are skipped, as the host does for
  ``null = "strict"``;
* ``None`` is SQL NULL. Where the SQL call would fail, :class:`StatsError` is
  raised with the guest's message (the host prefixes it with
  ``stats.<function>: ``).

Where the ``statistics`` module has the function it is used; the rest is
independent code. Conventions shared with the guest:

* median: the middle value, or the midpoint of the two middle values;
* percentile: linear interpolation between the order statistics around
  position ``p * (n - 1)`` (numpy's default method; for ``p = i / m`` the
  same as ``statistics.quantiles(data, n=m, method="inclusive")[i - 1]``);
* mode: the most frequent value, the smallest of them on a tie;
* variance, stddev (sample: NULL below 2 values; population: NULL for 0),
  covariance, correlation (NULL below 2 rows or for a constant input) and
  weighted mean (NULL when the weights sum to 0) are NULL while the group
  holds an infinite value; the weighted mean is the exception: one sign of
  infinite product ``w * x`` gives that infinity divided by ``sum(w)``;
* histogram: JSON ``{"min":..,"max":..,"counts":[..]}``, value ``x`` in bin
  ``floor((x - min) / (max - min) * bins)``, the maximum in the last bin, all
  values in the first when they are equal; numbers in the shortest of
  ``%.15g``, ``%.16g``, ``%.17g`` that reads back exactly.
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction
from typing import Iterable, Optional, Sequence, Tuple

MAX_BINS = 1000

__all__ = [
    "MAX_BINS",
    "StatsError",
    "format_real",
    "stats_median",
    "stats_percentile",
    "stats_mode",
    "stats_variance",
    "stats_stddev",
    "stats_variance_pop",
    "stats_stddev_pop",
    "stats_covariance",
    "stats_correlation",
    "stats_weighted_mean",
    "stats_histogram",
]

Real = float
Pair = Tuple[Optional[float], Optional[float]]


class StatsError(ValueError):
    """A stats function failed; ``str(err)`` is the guest's error message."""


def format_real(x: float) -> str:
    """The guest's number format: the shortest of %.15g/%.16g/%.17g that
    reads back as x (so 0.1 -> '0.1', 2.0 -> '2')."""
    text = "%.17g" % x
    for precision in (15, 16):
        candidate = "%.*g" % (precision, x)
        if not math.isfinite(x) or float(candidate) == x:
            return candidate
    return text


def _values(values: Iterable[Optional[float]]) -> list:
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if math.isnan(v):
            raise StatsError("value is NaN")
        out.append(v)
    return out


def _pairs(rows: Iterable[Pair]) -> list:
    return [(float(a), float(b)) for a, b in rows if a is not None and b is not None]


def _nan_to_null(x: float) -> Optional[float]:
    return None if math.isnan(x) else x


# ---------------------------------------------------------------------------
# Order statistics


def stats_median(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _values(values)
    if not data:
        return None
    result = statistics.median(data)
    if math.isinf(result) and all(math.isfinite(v) for v in data):
        # (a + b) / 2 overflowed; the midpoint itself is finite
        data.sort()
        n = len(data)
        result = float((Fraction(data[n // 2 - 1]) + Fraction(data[n // 2])) / 2)
    return _nan_to_null(result)


def stats_percentile(rows: Iterable[Pair]) -> Optional[float]:
    """rows: (x, p) pairs; p must be in [0, 1] and the same on every row."""
    data = []
    first_p = None
    for x, p in rows:
        if x is None or p is None:
            continue
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise StatsError("p must be between 0 and 1, got %s" % format_real(p))
        if first_p is None:
            first_p = p
        elif p != first_p:
            raise StatsError(
                "p must be the same for every row of the group, got %s after %s"
                % (format_real(p), format_real(first_p))
            )
        data.extend(_values([x]))
    if not data:
        return None
    data.sort()
    position = first_p * (len(data) - 1)
    k = math.floor(position)
    t = position - k
    if t == 0.0 or k + 1 >= len(data):
        return data[k]
    low, high = data[k], data[k + 1]
    if math.isinf(low) or math.isinf(high):
        result = low * (1.0 - t) + high * t
        return _nan_to_null(result)
    # exact interpolation, rounded once
    return float(Fraction(low) + (Fraction(high) - Fraction(low)) * Fraction(t))


def stats_mode(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _values(values)
    if not data:
        return None
    return min(statistics.multimode(data))


# ---------------------------------------------------------------------------
# Moments


def _finite_or_none(data: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in data)


def stats_variance(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _values(values)
    if len(data) < 2 or not _finite_or_none(data):
        return None
    return statistics.variance(data)


def stats_stddev(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _values(values)
    if len(data) < 2 or not _finite_or_none(data):
        return None
    return statistics.stdev(data)


def stats_variance_pop(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _values(values)
    if not data or not _finite_or_none(data):
        return None
    return statistics.pvariance(data)


def stats_stddev_pop(values: Iterable[Optional[float]]) -> Optional[float]:
    data = _values(values)
    if not data or not _finite_or_none(data):
        return None
    return statistics.pstdev(data)


def stats_covariance(rows: Iterable[Pair]) -> Optional[float]:
    pairs = _pairs(rows)
    if len(pairs) < 2 or not all(math.isfinite(a) and math.isfinite(b) for a, b in pairs):
        return None
    xs, ys = zip(*pairs)
    return statistics.covariance(xs, ys)


def stats_correlation(rows: Iterable[Pair]) -> Optional[float]:
    pairs = _pairs(rows)
    if len(pairs) < 2 or not all(math.isfinite(a) and math.isfinite(b) for a, b in pairs):
        return None
    xs, ys = zip(*pairs)
    if len(set(xs)) == 1 or len(set(ys)) == 1:
        return None  # a constant input: undefined
    try:
        r = statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # a spread lost to underflow
        return None
    return max(-1.0, min(1.0, r))


def stats_weighted_mean(rows: Iterable[Pair]) -> Optional[float]:
    """rows: (x, w) pairs; sum(w * x) / sum(w)."""
    pairs = _pairs(rows)
    if not pairs:
        return None
    xs = [x for x, _ in pairs]
    ws = [w for _, w in pairs]
    if not all(math.isfinite(w) for w in ws):
        return None
    total_weight = math.fsum(ws)
    if total_weight == 0.0:
        return None
    products = [w * x for x, w in pairs]
    if any(math.isnan(v) for v in products):
        return None
    positive = any(v == math.inf for v in products)
    negative = any(v == -math.inf for v in products)
    if positive and negative:
        return None
    if positive or negative:
        return (math.inf if positive else -math.inf) / total_weight
    return statistics.fmean(xs, weights=ws)


# ---------------------------------------------------------------------------
# Histogram


def _bin_of(x: float, low: float, high: float, bins: int) -> int:
    span = high - low
    if math.isfinite(span):
        fraction = (x - low) / span
    else:  # the span overflows: work with halves
        fraction = (x / 2.0 - low / 2.0) / (high / 2.0 - low / 2.0)
    return max(0, min(bins - 1, math.floor(fraction * bins)))


def stats_histogram(rows: Iterable[Tuple[Optional[float], Optional[int]]]) -> Optional[str]:
    """rows: (x, bins) pairs; bins in 1..1000 and the same on every row."""
    data = []
    first_bins = None
    for x, bins in rows:
        if x is None or bins is None:
            continue
        if not 1 <= bins <= MAX_BINS:
            raise StatsError("bins must be between 1 and %d, got %d" % (MAX_BINS, bins))
        if first_bins is None:
            first_bins = bins
        elif bins != first_bins:
            raise StatsError(
                "bins must be the same for every row of the group, got %d after %d"
                % (bins, first_bins)
            )
        x = float(x)
        if not math.isfinite(x):
            raise StatsError("values must be finite numbers")
        data.append(x)
    if not data:
        return None
    # between zeros of both signs, the min is -0.0 and the max +0.0
    low = min(data, key=lambda v: (v, math.copysign(1.0, v)))
    high = max(data, key=lambda v: (v, math.copysign(1.0, v)))
    counts = [0] * first_bins
    if low == high:
        counts[0] = len(data)
    else:
        for x in data:
            counts[_bin_of(x, low, high, first_bins)] += 1
    return '{"min":%s,"max":%s,"counts":[%s]}' % (
        format_real(low),
        format_real(high),
        ",".join(str(c) for c in counts),
    )
