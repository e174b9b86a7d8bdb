"""extensions/stats partial aggregates: NAME_partial / NAME_merge through SQL
equal NAME over all the rows, however the rows are split; and the guest's
merge export, driven directly through wasmtime, survives hostile bytes.

The host side (envelope, checksums, foreign partials) is tested elsewhere;
here every payload that reaches merge through SQL came from stats itself,
and the hostile ones go straight to the export.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any, Iterator, Sequence

import apsw
import msgpack
import pytest
import stats_reference as ref
import wasmtime
from conftest import one_error, shipped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlwasm.extensions import module_path
from test_stats import ONE_ARG, ORDER_STATISTICS, TWO_ARG, agrees, maybe_reals

fast = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ through SQL


@pytest.fixture(scope="module")
def conn() -> Iterator[apsw.Connection]:
    connection = shipped("stats")
    yield connection
    connection.close()


def load(conn: apsw.Connection, rows: Sequence[tuple[Any, ...]]) -> list[tuple[int, int, Any, Any]]:
    """Table t(i, g, part, x, y) with rows (g, part, x, y); returns them as
    stored (g, part, x, y)."""
    conn.execute(
        "DROP TABLE IF EXISTS t; CREATE TABLE t(i INTEGER PRIMARY KEY, g INTEGER, part INTEGER, x REAL, y REAL)"
    )
    with conn:
        conn.executemany("INSERT INTO t(g, part, x, y) VALUES (?, ?, ?, ?)", rows)
    return conn.execute("SELECT g, part, x, y FROM t ORDER BY i").fetchall()


def merged_sql(name: str, args: str, parts: int, *, grouped: bool) -> str:
    """NAME_merge over the UNION ALL of one NAME_partial query per part
    (each part a separate SELECT, as each shard would be)."""
    keys = "g, " if grouped else ""
    group = " GROUP BY g" if grouped else ""
    selects = " UNION ALL ".join(
        f"SELECT {keys}{name}_partial({args}) AS p FROM t WHERE part = {k}{group}" for k in range(parts)
    )
    return f"SELECT {keys}{name}_merge(p) FROM ({selects}){group}{' ORDER BY g' if grouped else ''}"


def args_of(name: str) -> str:
    return "x" if name in ONE_ARG else "x, y"


def assert_same(name: str, merged: Any, whole: Any, rows: Sequence[tuple[Any, Any]]) -> None:
    """Order statistics exactly; the moments as close to the aggregate over
    all rows as that aggregate is to the exact answer (tests/test_stats.py),
    and the same with respect to the reference."""
    if name in ORDER_STATISTICS:
        assert merged == whole, (name, merged, whole)
        return
    assert agrees(name, merged, whole, rows), (name, merged, whole)
    pairs = [x for x, _ in rows] if name in ONE_ARG else list(rows)
    assert agrees(name, merged, (ONE_ARG | TWO_ARG)[name](pairs), rows), (name, merged)


split_rows = st.integers(1, 6).flatmap(
    lambda parts: st.tuples(
        st.just(parts),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, parts - 1), maybe_reals, maybe_reals), max_size=50),
    )
)


@fast
@given(split=split_rows, name=st.sampled_from([*ONE_ARG, *TWO_ARG]))
def test_merge_of_partials_equals_the_aggregate(conn: apsw.Connection, split: tuple[int, list[Any]], name: str) -> None:
    parts, rows = split
    stored = load(conn, rows)
    whole = conn.execute(f"SELECT {name}({args_of(name)}) FROM t").fetchone()[0]
    merged = conn.execute(merged_sql(name, args_of(name), parts, grouped=False)).fetchone()[0]
    assert_same(name, merged, whole, [(x, y) for _, _, x, y in stored])


@fast
@given(split=split_rows, name=st.sampled_from([*ONE_ARG, *TWO_ARG]))
def test_grouped_merge_of_partials_equals_the_grouped_aggregate(
    conn: apsw.Connection, split: tuple[int, list[Any]], name: str
) -> None:
    """The issue's shape: per-shard partials GROUP BY g, merged GROUP BY g."""
    parts, rows = split
    stored = load(conn, rows)
    whole = conn.execute(f"SELECT g, {name}({args_of(name)}) FROM t GROUP BY g ORDER BY g").fetchall()
    merged = conn.execute(merged_sql(name, args_of(name), parts, grouped=True)).fetchall()
    assert [g for g, _ in merged] == [g for g, _ in whole]
    for (g, got), (_, want) in zip(merged, whole):
        assert_same(name, got, want, [(x, y) for gg, _, x, y in stored if gg == g])


@fast
@given(split=split_rows, p=st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.floats(0, 1)))
def test_percentile_partials_carry_p(conn: apsw.Connection, split: tuple[int, list[Any]], p: float) -> None:
    parts, rows = split
    stored = load(conn, rows)
    whole = conn.execute("SELECT g, stats_percentile(x, ?) FROM t GROUP BY g ORDER BY g", (p,)).fetchall()
    merged = conn.execute(merged_sql("stats_percentile", "x, ?", parts, grouped=True), (p,) * parts).fetchall()
    assert merged == whole
    for g, got in merged:
        want = ref.stats_percentile([(x, p) for gg, _, x, _ in stored if gg == g])
        assert agrees("stats_percentile", got, want, []), (got, want)  # interpolation: within rounding


@fast
@given(split=split_rows, bins=st.integers(1, 12))
def test_histogram_partials(conn: apsw.Connection, split: tuple[int, list[Any]], bins: int) -> None:
    parts, rows = split
    load(conn, rows)
    whole = conn.execute("SELECT g, stats_histogram(x, ?) FROM t GROUP BY g ORDER BY g", (bins,)).fetchall()
    merged = conn.execute(merged_sql("stats_histogram", "x, ?", parts, grouped=True), (bins,) * parts).fetchall()
    assert merged == whole


def test_partials_of_order_statistics_do_not_depend_on_row_order(conn: apsw.Connection) -> None:
    values = [3.0, -0.0, 0.0, 1e999, -1e999, 2.5, 2.5, -7.0, 0.0, -0.0, -0.0, 1.0, 0.0, -0.0]
    shuffler = random.Random(10)
    calls = ("stats_median_partial(x)", "stats_percentile_partial(x, 0.3)", "stats_histogram_partial(x, 4)")
    blobs: dict[str, set[bytes]] = {call: set() for call in calls}
    for _ in range(8):
        shuffler.shuffle(values)
        conn.execute("DROP TABLE IF EXISTS v; CREATE TABLE v(i INTEGER PRIMARY KEY, x)")  # no affinity: -0.0 stays
        with conn:
            conn.executemany("INSERT INTO v(x) VALUES (?)", [(x,) for x in values])
        for call in calls:
            finite = " WHERE abs(x) < 1e308" if "histogram" in call else ""
            blobs[call].add(conn.execute(f"SELECT {call} FROM (SELECT x FROM v{finite} ORDER BY i)").fetchone()[0])
    assert {call: len(found) for call, found in blobs.items()} == {call: 1 for call in calls}


def test_histogram_bounds_do_not_depend_on_row_order(conn: apsw.Connection) -> None:
    """Between zeros of both signs the min is -0 and the max +0, so the
    histogram of merged partials is the histogram of all rows, text and all."""
    conn.execute("DROP TABLE IF EXISTS z; CREATE TABLE z(i INTEGER PRIMARY KEY, x)")  # no affinity: -0.0 stays
    for values in ([0.0, -0.0], [-0.0, 0.0], [0.0, -0.0, 0.0, -0.0]):
        conn.execute("DELETE FROM z")
        conn.executemany("INSERT INTO z(x) VALUES (?)", [(x,) for x in values])
        assert conn.execute("SELECT stats_histogram(x, 2) FROM z").fetchone() == ('{"min":-0,"max":0,"counts":[%d,0]}' % len(values),)
        assert ref.stats_histogram([(x, 2) for x in values]) == '{"min":-0,"max":0,"counts":[%d,0]}' % len(values)
    got = conn.execute("SELECT stats_histogram_merge(p) FROM (SELECT stats_histogram_partial(x, 2) AS p FROM z "
                       "WHERE i % 2 = 0 UNION ALL SELECT stats_histogram_partial(x, 2) FROM z WHERE i % 2 = 1)")
    assert got.fetchone() == ('{"min":-0,"max":0,"counts":[4,0]}',)


def test_partials_of_running_moments_are_small(conn: apsw.Connection) -> None:
    sizes = {}
    for n in (1, 10, 10000):
        row = conn.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) SELECT "
            "length(stats_variance_partial(i)), length(stats_correlation_partial(i, i % 7)), "
            "length(stats_weighted_mean_partial(i, 2)), length(stats_median_partial(i)) FROM c",
            (n,),
        ).fetchone()
        sizes[n] = row
    assert sizes[1][:3] == sizes[10000][:3]  # fixed size, whatever the row count
    assert sizes[10000][3] - sizes[10][3] == 8 * (10000 - 10)  # median: 8 bytes per value


def test_empty_and_null_partials(conn: apsw.Connection) -> None:
    load(conn, [(0, 0, None, None), (0, 1, 4.0, 1.0), (0, 1, 2.0, 3.0)])
    for name in [*ONE_ARG, *TWO_ARG]:
        got = conn.execute(merged_sql(name, args_of(name), 3, grouped=False)).fetchone()[0]
        want = conn.execute(f"SELECT {name}({args_of(name)}) FROM t").fetchone()[0]
        assert got == want, name
        nothing = conn.execute(f"SELECT {name}_merge(p) FROM (SELECT {name}_partial({args_of(name)}) AS p FROM t "
                               "WHERE part = 9)").fetchone()[0]
        assert nothing is None, name
    assert conn.execute("SELECT stats_histogram_merge(NULL), stats_median_merge(NULL)").fetchone() == (None, None)


def test_partials_with_different_p_or_bins_do_not_merge(conn: apsw.Connection) -> None:
    load(conn, [(0, 0, 1.0, None), (0, 1, 2.0, None)])
    message = one_error(conn, "SELECT stats_percentile_merge(p) FROM (SELECT stats_percentile_partial(x, 0.5) AS p "
                              "FROM t WHERE part = 0 UNION ALL SELECT stats_percentile_partial(x, 0.25) FROM t "
                              "WHERE part = 1)")
    assert message.startswith("stats.stats_percentile_merge: merge failed")
    message = one_error(conn, "SELECT stats_histogram_merge(p) FROM (SELECT stats_histogram_partial(x, 3) AS p "
                              "FROM t WHERE part = 0 UNION ALL SELECT stats_histogram_partial(x, 4) FROM t "
                              "WHERE part = 1)")
    assert message.startswith("stats.stats_histogram_merge: merge failed")
    # A part with no rows has no p or bins and merges with anything.
    got = conn.execute("SELECT stats_percentile_merge(p), stats_histogram_merge(h) FROM (SELECT "
                       "stats_percentile_partial(x, 0.5) AS p, stats_histogram_partial(x, 2) AS h FROM t "
                       "UNION ALL SELECT stats_percentile_partial(x, 0.1), stats_histogram_partial(x, 7) "
                       "FROM t WHERE part = 5)").fetchone()
    assert got == (1.5, '{"min":1,"max":2,"counts":[1,1]}')


# ------------------------------------------------------------------ merge on hostile bytes (wasmtime, no host)

# family -> (step export, a final export, arguments per row, raw ABI?)
FAMILIES: dict[str, tuple[str, str, int, bool]] = {
    "values": ("percentile_step", "percentile_final", 2, False),
    "histogram": ("histogram_step", "histogram_final", 2, False),
    "moments": ("moments_step", "variance_final", 1, True),
    "comoments": ("comoments_step", "correlation_final", 2, True),
    "weighted": ("weighted_step", "weighted_mean_final", 2, True),
}
MERGE_CODES = {0, 1, 2}  # ok, malformed or conflicting, out of memory


class Guest:
    """The shipped stats.wasm in its own store, called like the host does."""

    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, module_path("stats").read_bytes())

    def __init__(self) -> None:
        self.store = wasmtime.Store(self.engine)
        self.exports = wasmtime.Instance(self.store, self.module, []).exports(self.store)
        self.call("_initialize")

    def call(self, name: str, *args: Any) -> Any:
        func = self.exports[name]
        assert isinstance(func, wasmtime.Func)
        return func(self.store, *args)

    def _memory(self) -> wasmtime.Memory:
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return memory

    def write_arguments(self, data: bytes) -> int:
        ptr = self.call("sqlwasm_alloc", len(data))
        assert ptr != 0
        self._memory().write(self.store, data, ptr)
        return int(ptr)

    def read_packed(self, packed: int) -> bytes:
        packed &= 2**64 - 1
        ptr, length = packed >> 32, packed & 0xFFFFFFFF
        return bytes(self._memory().read(self.store, ptr, ptr + length))

    def step(self, family: str, handle: int, row: Sequence[float]) -> None:
        step, _, _, raw = FAMILIES[family]
        if raw:
            self.call(step, handle, *row)
        else:
            data = msgpack.packb(list(row))
            assert self.call(step, handle, self.write_arguments(data), len(data)) == 0

    def serialize(self, family: str, handle: int) -> bytes:
        return self.read_packed(self.call(f"{family}_serialize", handle))

    def merge(self, family: str, handle: int, data: bytes) -> int:
        return int(self.call(f"{family}_merge", handle, self.write_arguments(data), len(data)))

    def final(self, family: str, handle: int) -> Any:
        _, final, _, raw = FAMILIES[family]
        result = self.call(final, handle)
        return result if raw else msgpack.unpackb(self.read_packed(result))


def rows_for(family: str, values: list[float]) -> list[tuple[float, ...]]:
    if family == "values":
        return [(v, 0.5) for v in values]
    if family == "histogram":
        return [(v, 3) for v in values if math.isfinite(v)]
    if family == "moments":
        return [(v,) for v in values]
    return [(v, float(i % 3)) for i, v in enumerate(values)]


def f64(x: float) -> bytes:
    return struct.pack("<d", x)


# Hand-made payloads that claim more than they carry, or carry what no state has.
NASTY = {
    "values": [
        b"V\x00\x00\x00" + struct.pack("<I", 0x1FFFFFFF) + f64(0.0),  # a huge count, no values
        b"V\x00\x00\x00" + struct.pack("<I", 1) + f64(0.0) + f64(math.nan),
        b"V\x01\x00\x00" + struct.pack("<I", 0) + f64(1.5),  # p out of range
        b"V\x00\x00\x00" + struct.pack("<I", 2) + f64(0.0) + f64(2.0) + f64(1.0),  # not sorted
        b"V\x02\x00\x00" + struct.pack("<I", 0) + f64(0.0),
    ],
    "histogram": [
        b"H\x00\x00\x00" + struct.pack("<II", 3, 0xFFFFFFFF),
        b"H\x00\x00\x00" + struct.pack("<II", 1001, 1) + f64(1.0),
        b"H\x00\x00\x00" + struct.pack("<II", 0, 1) + f64(1.0),  # values without bins
        b"H\x00\x00\x00" + struct.pack("<II", 3, 1) + f64(math.inf),
    ],
    "moments": [
        b"M" + bytes(7) + struct.pack("<qq", -1, 0) + f64(0.0) + f64(0.0),
        b"M" + bytes(7) + struct.pack("<qq", 2**63 - 1, 0) + f64(1.0) + f64(1.0),  # the count overflows
        b"M" + bytes(7) + struct.pack("<qq", 3, 0) + f64(math.nan) + f64(1.0),
        b"M" + bytes(7) + struct.pack("<qq", 3, 0) + f64(1.0) + f64(-1.0),
        b"M" + bytes(7) + struct.pack("<qq", 1, 0) + f64(1.0) + f64(5.0),  # spread in one value
    ],
    "comoments": [
        b"C" + bytes(7) + struct.pack("<qq", 2, -5) + f64(0.0) * 5,
        b"C" + bytes(7) + struct.pack("<qq", 0, 0) + f64(1.0) + f64(0.0) * 4,
        b"C" + bytes(7) + struct.pack("<qq", 2, 0) + f64(0.0) * 4 + f64(math.inf),
    ],
    "weighted": [
        b"W" + bytes(7) + struct.pack("<qqqq", 0, 0, 0, 0) + f64(1.0) + f64(0.0) * 3,
        b"W" + bytes(7) + struct.pack("<qqqq", 1, -1, 0, 0) + f64(1.0) + f64(0.0) * 3,
        b"W" + bytes(7) + struct.pack("<qqqq", 1, 0, 0, 0) + f64(math.nan) + f64(0.0) * 3,
    ],
}

guest_values = st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -0.0, 1.0, math.inf])), max_size=12)


@st.composite
def hostile_payloads(draw: st.DrawFn) -> tuple[str, list[float], bytes]:
    """A family, the rows of the live state merged into, and bytes: a
    genuine payload mutated (bytes changed, cut or extended), a hand-made
    nasty one, or noise."""
    family = draw(st.sampled_from(sorted(FAMILIES)))
    live = draw(guest_values)
    how = draw(st.sampled_from(["mutate", "cut", "extend", "nasty", "noise", "another family"]))
    if how == "noise":
        return family, live, draw(st.binary(max_size=100))
    if how == "nasty":
        return family, live, draw(st.sampled_from(NASTY[family]))
    source = draw(st.sampled_from(sorted(FAMILIES))) if how == "another family" else family
    guest = Guest()
    handle = guest.call(f"{source}_init")
    for row in rows_for(source, draw(guest_values)):
        guest.step(source, handle, row)
    data = bytearray(guest.serialize(source, handle))
    if how == "mutate":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "cut":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=24))
    return family, live, bytes(data)


@settings(max_examples=400, deadline=None)
@given(case=hostile_payloads())
def test_merge_refuses_bad_bytes_without_harm(case: tuple[str, list[float], bytes]) -> None:
    """merge returns a code and never traps; a refused payload leaves the
    state as it was; an accepted one leaves a state that finishes and
    serializes again (so it was a state some rows could have made)."""
    family, live, data = case
    guest = Guest()
    handle = guest.call(f"{family}_init")
    for row in rows_for(family, live):
        guest.step(family, handle, row)
    before = guest.serialize(family, handle)
    code = guest.merge(family, handle, data)
    assert code in MERGE_CODES
    if code != 0:
        assert guest.serialize(family, handle) == before
    else:
        again = guest.serialize(family, handle)
        fresh = guest.call(f"{family}_init")
        assert guest.merge(family, fresh, again) == 0
        assert guest.serialize(family, fresh) == again
    guest.final(family, handle)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nasty_payloads_are_refused(family: str) -> None:
    guest = Guest()
    for data in NASTY[family]:
        handle = guest.call(f"{family}_init")
        for row in rows_for(family, [1.0, 2.0]):
            guest.step(family, handle, row)
        assert guest.merge(family, handle, data) != 0, (family, data)
        guest.final(family, handle)


def test_merge_and_serialize_refuse_bad_handles() -> None:
    guest = Guest()
    handle = guest.call("moments_init")
    payload = guest.serialize("moments", handle)
    for family in FAMILIES:
        assert guest.merge(family, 0, payload) != 0
        assert guest.merge(family, 12345, payload) != 0
        assert guest.call(f"{family}_serialize", 12345) == 0
    assert guest.merge("values", handle, payload) != 0  # a handle of another family


# ------------------------------------------------------------------ hostile bytes through SQL

# A function of each family, called through NAME_merge.
FAMILY_FUNCTION = {
    "values": "stats_median",
    "histogram": "stats_histogram",
    "moments": "stats_variance",
    "comoments": "stats_correlation",
    "weighted": "stats_weighted_mean",
}


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def genuine(conn: apsw.Connection, function: str) -> bytes:
    """A partial of `function` over the rows (1, 1) and (2, 2)."""
    args = "column1, 3" if function == "stats_histogram" else "column1, column2" if function in TWO_ARG else "column1"
    blob = conn.execute(f"SELECT {function}_partial({args}) FROM (VALUES (1.0, 1.0), (2.0, 2.0))").fetchone()[0]
    assert isinstance(blob, bytes)
    return blob


def forged(conn: apsw.Connection, function: str, payload: bytes) -> bytes:
    """An envelope (docs/abi.md) around payload that the host accepts as a
    partial of `function`: its header is taken from a genuine partial, the
    checksum computed anew (the host's check is against accidents)."""
    genuine_blob = genuine(conn, function)
    at = 8
    for _ in range(3):  # module name, version, function name
        at += 2 + int.from_bytes(genuine_blob[at : at + 2], "little")
    body = genuine_blob[:at] + struct.pack("<I", len(payload)) + payload
    return body + struct.pack("<I", crc32c(body))


def test_forged_envelopes_reach_merge(conn: apsw.Connection) -> None:
    """The forging is right: a genuine payload in a forged envelope merges."""
    guest = Guest()
    handle = guest.call("values_init")
    for row in rows_for("values", [4.0, 1.0, 2.0]):
        guest.step("values", handle, row)
    blob = forged(conn, "stats_median", guest.serialize("values", handle))
    assert conn.execute("SELECT stats_median_merge(?)", (blob,)).fetchone() == (2.0,)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nasty_payloads_fail_the_statement_cleanly(conn: apsw.Connection, family: str) -> None:
    function = FAMILY_FUNCTION[family]
    for data in NASTY[family]:  # merged after a genuine partial, as in test_nasty_payloads_are_refused
        message = one_error(conn, f"SELECT {function}_merge(column1) FROM (VALUES (?), (?))",
                            genuine(conn, function), forged(conn, function, data))
        assert message == f"stats.{function}_merge: merge failed (returned 1)"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_payloads())
def test_hostile_payloads_through_sql_merge_or_fail_cleanly(
    conn: apsw.Connection, case: tuple[str, list[float], bytes]
) -> None:
    family, _, data = case
    function = FAMILY_FUNCTION[family]
    try:
        conn.execute(f"SELECT {function}_merge(?)", (forged(conn, function, data),)).fetchall()
    except apsw.SQLError as exc:
        assert str(exc).startswith(f"stats.{function}_merge: merge failed (returned ")
    assert conn.execute("SELECT stats_median(column1) FROM (VALUES (1), (3))").fetchone() == (2.0,)


@pytest.mark.parametrize("family", ["moments", "comoments"])
def test_a_merge_whose_sums_would_overflow_is_refused_whole(family: str) -> None:
    """Found by test_merge_refuses_bad_bytes_without_harm: a well-formed
    payload whose mean is huge made the merged squared deviations infinite
    (accepted, and then refused when merged again)."""
    guest = Guest()
    handle = guest.call(f"{family}_init")
    for row in rows_for(family, [0.0]):
        guest.step(family, handle, row)
    before = guest.serialize(family, handle)
    payload = bytearray(before)  # tag and padding, n, nonfinite, then the (first) mean
    payload[24:32] = struct.pack("<d", 1e300)
    assert guest.merge(family, handle, bytes(payload)) != 0
    assert guest.serialize(family, handle) == before
