"""The shipped geo module (extensions/geo/geo.wasm), called through SQL and
compared with the pure-Python reference in tests/geo_reference.py.

The module under test is the committed, signed file, trusted with the
examples' public key: exactly what `pip install .` gives a user.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterator

import apsw
import geo_reference as ref
import pytest
from conftest import one_error, shipped
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlwasm.extensions import EXAMPLES_PUBLIC_KEY, module_path

import sqlwasm

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

REL = 1e-9  # relative error allowed between guest and reference


@pytest.fixture(scope="module")
def geo() -> Iterator[apsw.Connection]:
    conn = shipped("geo")
    yield conn
    conn.close()


def one(conn: apsw.Connection, sql: str, *bindings: Any) -> Any:
    rows = conn.execute(sql, bindings).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def guest_error(conn: apsw.Connection, function: str, *args: Any) -> str:
    """Calls geo_<function>(args...), which must fail; returns the message."""
    marks = ", ".join("?" * len(args))
    return one_error(conn, f"SELECT {function}({marks})", *args)


def rel_close(got: float, want: float, rel: float = REL) -> bool:
    return got == want or abs(got - want) <= rel * abs(want)


def angle_diff(a: float, b: float) -> float:
    """Distance between two angles in degrees, across the 0/360 seam."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


lats = st.floats(-90.0, 90.0)
lons = st.floats(-180.0, 180.0)


def test_the_shipped_module_is_the_one_loaded(geo: apsw.Connection) -> None:
    module = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY]).load(module_path("geo"))
    assert module.name == "geo" and module.signer is not None
    assert [f.name for f in module.functions] == [
        "geo_haversine", "geo_bearing", "geo_destination",
        "geo_geohash_encode", "geo_geohash_decode", "geo_contains", "geo_grid", "geo_grid_polygon",
    ]


# ---------------------------------------------------------------- great circles


def test_haversine_known_values(geo: apsw.Connection) -> None:
    # One degree of arc on the mean-radius sphere, and half the circumference.
    assert rel_close(one(geo, "SELECT geo_haversine(0, 0, 0, 1)"), ref.EARTH_RADIUS_KM * math.pi / 180)
    assert rel_close(one(geo, "SELECT geo_haversine(0, 0, 0, 180)"), ref.EARTH_RADIUS_KM * math.pi)
    assert one(geo, "SELECT geo_haversine(12.5, 99, 12.5, 99)") == 0.0
    # Integers are accepted for real arguments.
    assert one(geo, "SELECT typeof(geo_haversine(0, 0, 1, 1))") == "real"


@SETTINGS
@given(lats, lons, lats, lons)
def test_haversine_matches_reference(geo: apsw.Connection, lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    got = one(geo, "SELECT geo_haversine(?, ?, ?, ?)", lat1, lon1, lat2, lon2)
    assert rel_close(got, ref.geo_haversine(lat1, lon1, lat2, lon2))


@SETTINGS
@given(lats, lons, lats, lons)
def test_bearing_matches_reference(geo: apsw.Connection, lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    # Between (nearly) antipodal points every great circle joins them, so
    # the bearing is ill-conditioned: one ulp from a different libm moves it
    # by degrees. Everywhere else the two must agree.
    assume(ref.geo_haversine(lat1, lon1, lat2, lon2) < 0.9999 * math.pi * ref.EARTH_RADIUS_KM)
    got = one(geo, "SELECT geo_bearing(?, ?, ?, ?)", lat1, lon1, lat2, lon2)
    want = ref.geo_bearing(lat1, lon1, lat2, lon2)
    assert 0.0 <= got < 360.0
    # Relative error, measured across the 0/360 seam (359.999... and 0 agree).
    assert rel_close(got, want) or angle_diff(got, want) <= REL * min(want, 360.0 - want)


def test_bearing_known_values(geo: apsw.Connection) -> None:
    assert one(geo, "SELECT geo_bearing(0, 0, 0, 10)") == pytest.approx(90.0, rel=REL)
    assert one(geo, "SELECT geo_bearing(0, 0, 10, 0)") == 0.0
    assert one(geo, "SELECT geo_bearing(0, 0, -10, 0)") == pytest.approx(180.0, rel=REL)
    assert one(geo, "SELECT geo_bearing(0, 10, 0, 0)") == pytest.approx(270.0, rel=REL)


@SETTINGS
@given(lats, st.floats(-720.0, 720.0), st.floats(-720.0, 720.0), st.floats(0.0, 45_000.0))
def test_destination_matches_reference(geo: apsw.Connection, lat: float, lon: float, bearing: float, km: float) -> None:
    text = one(geo, "SELECT geo_destination(?, ?, ?, ?)", lat, lon, bearing, km)
    got_lat, got_lon = json.loads(text)
    want_lat, want_lon = ref.geo_destination_point(lat, lon, bearing, km)
    assert -90.0 <= got_lat <= 90.0 and -180.0 <= got_lon < 180.0
    # Latitude comes from asin(), whose slope is unbounded at +-1: compare
    # the sines there, the quantity the formula actually computes.
    assert abs(math.sin(math.radians(got_lat)) - math.sin(math.radians(want_lat))) <= 1e-12
    if abs(want_lat) < 89.9:
        assert abs(got_lat - want_lat) <= 1e-9
    # Longitude means little near a pole, whether at the start or the end.
    if abs(want_lat) < 89.9 and abs(lat) < 89.9:
        assert angle_diff(got_lon, want_lon) <= 1e-9


def test_destination_text_form(geo: apsw.Connection) -> None:
    text = one(geo, "SELECT geo_destination(0, 0, 90, 100)")
    assert text.startswith("[") and text.endswith("]") and " " not in text
    lat, lon = json.loads(text)
    assert abs(lat) < 1e-12 and lon == pytest.approx(100 / ref.EARTH_RADIUS_KM * 180 / math.pi, rel=REL)


@pytest.mark.parametrize("bad", ["1e999", "-1e999"])
def test_destination_rejects_infinite_arguments(geo: apsw.Connection, bad: str) -> None:
    for position in range(4):
        args = ["0"] * 4
        args[position] = bad
        message = one_error(geo, f"SELECT geo_destination({', '.join(args)})")
        assert message == "geo.geo_destination: arguments must be finite numbers"


# ---------------------------------------------------------------- geohash


@SETTINGS
@given(lats, lons, st.integers(1, 12))
def test_geohash_encode_matches_reference(geo: apsw.Connection, lat: float, lon: float, precision: int) -> None:
    got = one(geo, "SELECT geo_geohash_encode(?, ?, ?)", lat, lon, precision)
    assert got == ref.geo_geohash_encode(lat, lon, precision)


@pytest.mark.parametrize(
    "lat, lon",
    [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (-0.0, -0.0), (45.0, 90.0), (90.0, -180.0), (-90.0, 180.0)],
)
def test_geohash_encode_cell_edges(geo: apsw.Connection, lat: float, lon: float) -> None:
    for precision in range(1, 13):
        assert one(geo, "SELECT geo_geohash_encode(?, ?, ?)", lat, lon, precision) == ref.geo_geohash_encode(
            lat, lon, precision
        )


def test_geohash_known_values(geo: apsw.Connection) -> None:
    # The usual example: Jutland, from the geohash literature.
    assert one(geo, "SELECT geo_geohash_encode(57.64911, 10.40744, 11)") == "u4pruydqqvj"
    assert one(geo, "SELECT geo_geohash_encode(90, 180, 12)") == "zzzzzzzzzzzz"
    assert one(geo, "SELECT geo_geohash_encode(-90, -180, 12)") == "000000000000"


geohashes = st.text(alphabet=ref.GEOHASH_ALPHABET + ref.GEOHASH_ALPHABET.upper(), min_size=1, max_size=12)


@SETTINGS
@given(geohashes)
def test_geohash_decode_matches_reference(geo: apsw.Connection, geohash: str) -> None:
    assert one(geo, "SELECT geo_geohash_decode(?)", geohash) == ref.geo_geohash_decode(geohash)


@SETTINGS
@given(lats, lons, st.integers(1, 12))
def test_geohash_decode_of_encode_is_the_cell_centre(geo: apsw.Connection, lat: float, lon: float, precision: int) -> None:
    centre = json.loads(one(geo, "SELECT geo_geohash_decode(geo_geohash_encode(?, ?, ?))", lat, lon, precision))
    lon_bits = (5 * precision + 1) // 2
    lat_bits = 5 * precision // 2
    assert abs(centre[0] - lat) <= 90.0 / 2**lat_bits
    assert abs(centre[1] - lon) <= 180.0 / 2**lon_bits


@pytest.mark.parametrize("precision", [0, -1, 13, 100, 2**63 - 1, -(2**63)])
def test_geohash_encode_bad_precision(geo: apsw.Connection, precision: int) -> None:
    message = guest_error(geo, "geo_geohash_encode", 10.0, 20.0, precision)
    with pytest.raises(ref.GeoError) as want:
        ref.geo_geohash_encode(10.0, 20.0, precision)
    assert message == f"geo.geo_geohash_encode: {want.value}"


@pytest.mark.parametrize("lat, lon", [(90.5, 0.0), (-1e300, 0.0), (0.0, 180.0000001), (0.0, -1e308 * 10), (math.inf, 0.0)])
def test_geohash_encode_out_of_range(geo: apsw.Connection, lat: float, lon: float) -> None:
    message = guest_error(geo, "geo_geohash_encode", lat, lon, 5)
    with pytest.raises(ref.GeoError) as want:
        ref.geo_geohash_encode(lat, lon, 5)
    assert message == f"geo.geo_geohash_encode: {want.value}"


def test_geohash_encode_real_precision_is_truncated_by_the_host(geo: apsw.Connection) -> None:
    # docs/abi.md: a REAL for an integer argument is converted by SQLite's
    # rules (truncation toward zero) before the guest sees it.
    assert one(geo, "SELECT geo_geohash_encode(10, 20, 5.0)") == ref.geo_geohash_encode(10, 20, 5)
    assert one(geo, "SELECT geo_geohash_encode(10, 20, 5.9)") == ref.geo_geohash_encode(10, 20, 5)


@pytest.mark.parametrize(
    "geohash",
    ["", "a", "u4pruydqqvjx1", "u4pr!", "s\x00", "sé", "ilo", "u4 pr", "\x7f", "😀"],
)
def test_geohash_decode_bad_geohash(geo: apsw.Connection, geohash: str) -> None:
    message = guest_error(geo, "geo_geohash_decode", geohash)
    with pytest.raises(ref.GeoError) as want:
        ref.geo_geohash_decode(geohash)
    assert message == f"geo.geo_geohash_decode: {want.value}"


@SETTINGS
@given(st.text(max_size=16))
def test_geohash_decode_any_text_matches_reference(geo: apsw.Connection, text: str) -> None:
    try:
        want = ref.geo_geohash_decode(text)
    except ref.GeoError as err:
        assert guest_error(geo, "geo_geohash_decode", text) == f"geo.geo_geohash_decode: {err}"
    else:
        assert one(geo, "SELECT geo_geohash_decode(?)", text) == want


# ---------------------------------------------------------------- polygons


def wkt(rings: list[list[tuple[float, float]]]) -> str:
    return "POLYGON(" + ", ".join("(" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + ")" for ring in rings) + ")"


def geojson(rings: list[list[tuple[float, float]]]) -> str:
    return json.dumps({"type": "Polygon", "coordinates": [[list(p) for p in ring] for ring in rings]})


SQUARE_WITH_HOLE = [
    [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0)],
    [(3.0, 3.0), (7.0, 3.0), (7.0, 7.0), (3.0, 7.0), (3.0, 3.0)],
]


@pytest.mark.parametrize("form", [wkt, geojson])
@pytest.mark.parametrize(
    "lat, lon, inside",
    [(1.0, 1.0, 1), (5.0, 5.0, 0), (8.5, 5.0, 1), (5.0, 11.0, 0), (-1.0, 5.0, 0), (6.9, 3.1, 0), (9.9, 9.9, 1)],
)
def test_contains_square_with_hole(geo: apsw.Connection, form: Any, lat: float, lon: float, inside: int) -> None:
    text = form(SQUARE_WITH_HOLE)
    assert one(geo, "SELECT geo_contains(?, ?, ?)", text, lat, lon) == inside
    assert ref.geo_contains(text, lat, lon) == inside


def test_contains_forms_and_syntax_variants(geo: apsw.Connection) -> None:
    variants = [
        "polygon ((0 0,4 0,4 4,0 4,0 0))",
        "  POLYGON(\n(0 0,\t4 0, 4 4, 0 4, 0 0)\r\n)  ",
        "POLYGON((0e0 0, 4.0 +0, 4 4E0, .0 4, 0. 0))",
        '{"coordinates": [[[0, 0], [4, 0, 99], [4, 4], [0, 4], [0, 0]]], "bbox": [0, 0, 4, 4], "type": "Polygon"}',
        '{"type":"Polygon","properties":{"a":[1,{"b":null}],"c":true,"d":"x\\"y"},"coordinates":[[[0,0],[4,0],[4,4],[0,4],[0,0]]]}',
    ]
    for text in variants:
        assert one(geo, "SELECT geo_contains(?, 2, 2)", text) == 1 == ref.geo_contains(text, 2, 2), text
        assert one(geo, "SELECT geo_contains(?, 5, 2)", text) == 0 == ref.geo_contains(text, 5, 2), text
    for empty in ("POLYGON EMPTY", '{"type": "Polygon", "coordinates": []}'):
        assert one(geo, "SELECT geo_contains(?, 0, 0)", empty) == 0


@st.composite
def star_ring(draw: Any, cx: float, cy: float, r_min: float, r_max: float) -> list[tuple[float, float]]:
    """A simple closed ring around (cx, cy): vertices at increasing angles."""
    n = draw(st.integers(3, 10))
    angles = sorted(draw(st.lists(st.floats(0.0, 2 * math.pi, exclude_max=True), min_size=n, max_size=n, unique=True)))
    radii = draw(st.lists(st.floats(r_min, r_max), min_size=n, max_size=n))
    points = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)]
    return points + [points[0]]


@st.composite
def polygons(draw: Any) -> list[list[tuple[float, float]]]:
    """An outer star ring and zero to two holes inside its inner radius."""
    cx, cy = draw(st.floats(-170.0, 170.0)), draw(st.floats(-80.0, 80.0))
    scale = draw(st.floats(0.001, 10.0))
    rings = [draw(star_ring(cx, cy, 0.5 * scale, scale))]
    for _ in range(draw(st.integers(0, 2))):
        hx, hy = draw(st.floats(-0.1, 0.1)) * scale, draw(st.floats(-0.1, 0.1)) * scale
        rings.append(draw(star_ring(cx + hx, cy + hy, 0.05 * scale, 0.3 * scale)))
    return rings


def distance_to_segment(px: float, py: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


@SETTINGS
@given(polygons(), st.floats(-1.2, 1.2), st.floats(-1.2, 1.2), st.sampled_from([wkt, geojson]))
def test_contains_matches_reference(geo: apsw.Connection, rings: Any, u: float, v: float, form: Any) -> None:
    xs = [x for x, _ in rings[0]]
    ys = [y for _, y in rings[0]]
    scale = max(max(xs) - min(xs), max(ys) - min(ys))
    # The point, somewhere in and around the outer ring's bounding box.
    lon = (min(xs) + max(xs)) / 2 + u * scale / 2
    lat = (min(ys) + max(ys)) / 2 + v * scale / 2
    edges = [(a, b) for ring in rings for a, b in zip(ring, ring[1:])]
    assume(min(distance_to_segment(lon, lat, a, b) for a, b in edges) > 1e-6 * scale)
    text = form(rings)
    want = ref.geo_contains(text, lat, lon)
    event(f"inside={want}, holes={len(rings) - 1}")
    assert one(geo, "SELECT geo_contains(?, ?, ?)", text, lat, lon) == want


MALFORMED_POLYGONS = [
    "",
    "   ",
    "POINT(1 2)",
    "POLYGONS((0 0, 1 0, 1 1, 0 0))",
    "POLYGON",
    "POLYGON((0 0, 1 0, 1 1))",
    "POLYGON((0 0))",
    "POLYGON(())",
    "POLYGON((0 0, 1 0, 1 1, 0 1))",
    "POLYGON((0 0, 1 0, 1 1, 0 0)",
    "POLYGON((0 0, 1 0, 1 1, 0 0)) trailing",
    "POLYGON((0 0, 1 0, 1 1, 0 0),)",
    "POLYGON((0 0 1 0, 1 1, 0 0))",
    "POLYGON((0 0, 1 0; 1 1, 0 0))",
    "POLYGON((0,0, 1 0, 1 1, 0 0))",
    "POLYGON((1-1, 1 0, 1 1, 0 0))",
    "POLYGON((0 0, 1e999 0, 1 1, 0 0))",
    "POLYGON((0 0, 1e 0, 1 1, 0 0))",
    "POLYGON((0 0, . 0, 1 1, 0 0))",
    "POLYGON((0 0, " + "1" * 401 + " 0, 1 1, 0 0))",
    "POLYGON((0 0, 1 0, 1 1, 0 0), (5 5, 6 5, 6 6))",
    "{",
    "{}",
    '{"type": "Point", "coordinates": [1, 2]}',
    '{"type": "polygon", "coordinates": []}',
    '{"type": "\\u00e9", "coordinates": []}',
    '{"type": "' + "P" * 41 + '", "coordinates": []}',
    '{"type": 5, "coordinates": []}',
    '{"coordinates": []}',
    '{"type": "Polygon"}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1], [1, 1], [0, 0]]]}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]} x',
    '{"type": "Polygon" "coordinates": []}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]], "x": tru}',
    '{"type": "Polygon", "x": "a\nb", "coordinates": []}',
    '{"type": "Polygon", "x": "unterminated',
    '{"type": "Polygon", "x": ' + "[" * 70 + "]" * 70 + ', "coordinates": []}',
    "\x00",
    "POLYGON((0 0, 1 0, 1 1, 0 0))\x00",
]


@pytest.mark.parametrize("text", MALFORMED_POLYGONS)
def test_contains_malformed_polygon(geo: apsw.Connection, text: str) -> None:
    message = guest_error(geo, "geo_contains", text, 0.5, 0.5)
    with pytest.raises(ref.GeoError) as want:
        ref.geo_contains(text, 0.5, 0.5)
    assert message == f"geo.geo_contains: {want.value}"
    assert message.startswith("geo.geo_contains: polygon: ")


VALID_POLYGONS = [wkt(SQUARE_WITH_HOLE), geojson(SQUARE_WITH_HOLE)]


@pytest.mark.parametrize("text", VALID_POLYGONS)
def test_contains_every_truncation_matches_reference(geo: apsw.Connection, text: str) -> None:
    for end in range(len(text) + 1):
        prefix = text[:end]
        try:
            want = ref.geo_contains(prefix, 0.5, 0.5)
        except ref.GeoError as err:
            assert guest_error(geo, "geo_contains", prefix, 0.5, 0.5) == f"geo.geo_contains: {err}"
        else:
            assert one(geo, "SELECT geo_contains(?, 0.5, 0.5)", prefix) == want


@SETTINGS
@given(
    st.text(alphabet='POLYGNEMTpolygnemt{}[]()":,.-+eE0123456789 \n\x00éxtypecordinas', max_size=60)
    | st.sampled_from(VALID_POLYGONS).flatmap(
        lambda t: st.tuples(st.integers(0, len(t)), st.integers(0, len(t)), st.text(max_size=3)).map(
            lambda c: t[: c[0]] + c[2] + t[c[1]:]
        )
    )
)
def test_contains_any_text_matches_reference(geo: apsw.Connection, text: str) -> None:
    try:
        want = ref.geo_contains(text, 0.25, 0.75)
    except ref.GeoError as err:
        assert guest_error(geo, "geo_contains", text, 0.25, 0.75) == f"geo.geo_contains: {err}"
    else:
        assert one(geo, "SELECT geo_contains(?, 0.25, 0.75)", text) == want


# ---------------------------------------------------------------- SQL types and NULL

SIGNATURES = {
    "geo_haversine": ["real", "real", "real", "real"],
    "geo_bearing": ["real", "real", "real", "real"],
    "geo_destination": ["real", "real", "real", "real"],
    "geo_geohash_encode": ["real", "real", "integer"],
    "geo_geohash_decode": ["text"],
    "geo_contains": ["text", "real", "real"],
}
GOOD_ARGS = {
    "geo_haversine": [1.0, 2.0, 3.0, 4.0],
    "geo_bearing": [1.0, 2.0, 3.0, 4.0],
    "geo_destination": [1.0, 2.0, 3.0, 4.0],
    "geo_geohash_encode": [1.0, 2.0, 5],
    "geo_geohash_decode": ["u4pru"],
    "geo_contains": [wkt(SQUARE_WITH_HOLE), 1.0, 1.0],
}
CASES = [(f, i) for f, types in SIGNATURES.items() for i in range(len(types))]


def test_manifest_matches_the_table_above(geo: apsw.Connection) -> None:
    module = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY]).load(module_path("geo"))
    assert {f.name: list(f.args) for f in module.functions if f.kind == "scalar"} == SIGNATURES
    assert all(f.null == "strict" for f in module.functions)


@pytest.mark.parametrize("function, position", CASES)
def test_null_argument_gives_null(geo: apsw.Connection, function: str, position: int) -> None:
    args: list[Any] = list(GOOD_ARGS[function])
    assert one(geo, f"SELECT {function}({', '.join('?' * len(args))})", *args) is not None
    args[position] = None
    assert one(geo, f"SELECT {function}({', '.join('?' * len(args))})", *args) is None


@pytest.mark.parametrize("function, position", CASES)
def test_wrong_sql_type_names_the_argument(geo: apsw.Connection, function: str, position: int) -> None:
    expected = SIGNATURES[function][position]
    wrong: list[tuple[str, Any]] = [("BLOB", b"\x01\x02")]
    if expected != "text":
        wrong.append(("TEXT", "12.5"))  # TEXT is never converted to a number, even when it looks like one
    for sql_type, value in wrong:
        args = list(GOOD_ARGS[function])
        args[position] = value
        message = guest_error(geo, function, *args)
        assert message == f"geo.{function}: argument {position + 1} is {sql_type}, expected {expected}"


def test_numbers_for_a_text_argument_are_their_text_form(geo: apsw.Connection) -> None:
    # docs/abi.md: INTEGER and REAL reach a text argument as SQLite's text.
    assert one(geo, "SELECT geo_geohash_decode(12345)") == ref.geo_geohash_decode("12345")
    with pytest.raises(ref.GeoError) as want:
        ref.geo_geohash_decode("1.5")
    assert guest_error(geo, "geo_geohash_decode", 1.5) == f"geo.geo_geohash_decode: {want.value}"


def test_wrong_argument_count_is_an_error(geo: apsw.Connection) -> None:
    for function, types in SIGNATURES.items():
        with pytest.raises(apsw.SQLError):
            geo.execute(f"SELECT {function}({', '.join(['1'] * (len(types) + 1))})").fetchall()


# ---------------------------------------------------------------- wasm_call


@SETTINGS
@given(lats, lons, lats, lons)
def test_wasm_call_equals_the_named_function(geo: apsw.Connection, lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    direct, generic = geo.execute(
        "SELECT geo_haversine(?1, ?2, ?3, ?4), wasm_call('geo', 'haversine', ?1, ?2, ?3, ?4)", (lat1, lon1, lat2, lon2)
    ).fetchall()[0]
    assert generic == direct


@pytest.mark.parametrize("function", list(SIGNATURES))
def test_wasm_call_every_function(geo: apsw.Connection, function: str) -> None:
    args = GOOD_ARGS[function]
    marks = ", ".join("?" * len(args))
    export = function.removeprefix("geo_")
    direct = one(geo, f"SELECT {function}({marks})", *args)
    assert one(geo, f"SELECT wasm_call('geo', '{export}', {marks})", *args) == direct


def test_wasm_call_errors_are_the_functions_errors(geo: apsw.Connection) -> None:
    direct = guest_error(geo, "geo_geohash_encode", 1.0, 2.0, 0)
    assert one_error(geo, "SELECT wasm_call('geo', 'geohash_encode', 1.0, 2.0, 0)") == direct


# ---------------------------------------------------------------- grids (table functions)

GRID_COLUMNS = ["lat_index", "lon_index", "min_lat", "min_lon", "max_lat", "max_lon", "center_lat", "center_lon"]


def rows(conn: apsw.Connection, sql: str, *bindings: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql, bindings).fetchall()]


def test_grid_functions_are_tables(geo: apsw.Connection) -> None:
    module = sqlwasm.Runtime(trusted_keys=[EXAMPLES_PUBLIC_KEY]).load(module_path("geo"))
    tables = {f.name: f for f in module.functions if f.kind == "table"}
    assert list(tables) == ["geo_grid", "geo_grid_polygon"]
    assert tables["geo_grid"].args == ("real",) * 5
    assert tables["geo_grid_polygon"].args == ("text", "real")
    for name in tables:
        assert [c[0] for c in tables[name].columns] == GRID_COLUMNS
        cursor = geo.execute(f"SELECT * FROM {name}({', '.join('?' * len(tables[name].args))})",
                             (0.0, 0.0, 0.0, 0.0, 1.0) if name == "geo_grid" else ("POLYGON((0 0, 1 0, 1 1, 0 0))", 1.0))
        assert [d[0] for d in cursor.getdescription()] == GRID_COLUMNS
        cursor.fetchall()


def test_grid_known_values(geo: apsw.Connection) -> None:
    # The example: a 0.5 x 0.8 degree box over London in 0.05 degree
    # cells. Its north edge (51.7 / 0.05 = 1034.0) lies on a cell boundary,
    # so the row of cells north of it holds points of the box too.
    got = rows(geo, "SELECT * FROM geo_grid(51.2, -0.5, 51.7, 0.3, 0.05)")
    assert got == ref.geo_grid(51.2, -0.5, 51.7, 0.3, 0.05)
    assert len(got) == 11 * 16
    assert got[0][:2] == (1024, -10) and got[-1][:2] == (1034, 5)
    assert rows(geo, "SELECT * FROM geo_grid(0.5, 0.5, 0.5, 0.5, 1)") == [(0, 0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5)]
    assert rows(geo, "SELECT lat_index, lon_index FROM geo_grid(-0.5, -1, 0, -0.5, 1)") == [
        (-1, -1), (0, -1)]


grid_steps = st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.3, 1.0, 7.0, 90.0, 1000.0])


@st.composite
def boxes(draw: Any) -> tuple[float, float, float, float, float]:
    """A box and a step giving at most a few thousand cells."""
    step = draw(grid_steps)
    lat = draw(st.floats(-90.0, 90.0))
    lon = draw(st.floats(-180.0, 180.0))
    height = draw(st.floats(0.0, min(30 * step, 90.0 - lat)))
    width = draw(st.floats(0.0, min(40 * step, 180.0 - lon)))
    return lat, lon, min(lat + height, 90.0), min(lon + width, 180.0), step


@SETTINGS
@given(boxes())
def test_grid_matches_reference(geo: apsw.Connection, box: tuple[float, float, float, float, float]) -> None:
    got = rows(geo, "SELECT * FROM geo_grid(?, ?, ?, ?, ?)", *box)
    assert got == ref.geo_grid(*box)
    min_lat, min_lon, max_lat, max_lon, step = box
    # every corner of the box lies in an emitted cell
    cells = {(i, j) for i, j, *_ in got}
    for lat in (min_lat, max_lat):
        for lon in (min_lon, max_lon):
            assert (math.floor(lat / step), math.floor(lon / step)) in cells


@pytest.mark.parametrize(
    "args",
    [
        (0, 0, 1, 1, 0), (0, 0, 1, 1, -1), (0, 0, 1, 1, 1e-14), (0, 0, 1, 1, math.inf), (0, 0, 1, 1, -math.inf),
        (91, 0, 92, 1, 1), (0, -180.5, 1, 1, 1), (0, 0, 90.0001, 1, 1), (0, 0, 1, 1e300, 1), (-math.inf, 0, 1, 1, 1),
        (2, 0, 1, 1, 1), (0, 170, 1, -170, 1),
    ],
)
def test_grid_bad_input(geo: apsw.Connection, args: tuple[float, ...]) -> None:
    message = one_error(geo, "SELECT * FROM geo_grid(?, ?, ?, ?, ?)", *args)
    with pytest.raises(ref.GeoError) as want:
        ref.geo_grid(*args)
    assert message == f"geo.geo_grid: {want.value}"


def test_grid_indices_at_the_extremes(geo: apsw.Connection) -> None:
    """The smallest step puts indices at +-2^50: exact, no overflow; a grid
    of 2^101 cells streams, and LIMIT stops it after one batch."""
    step = ref.GRID_MIN_STEP
    assert rows(geo, "SELECT lat_index, lon_index FROM geo_grid(90, 180, 90, 180, ?)", step) == [(2**49, 2**50)]
    assert rows(geo, "SELECT lat_index, lon_index FROM geo_grid(-90, -180, -90, -180, ?)", step) == [(-(2**49), -(2**50))]
    first = rows(geo, "SELECT lat_index, lon_index, min_lon FROM geo_grid(-90, -180, 90, 180, ?) LIMIT 3", step)
    assert first == [(-(2**49), -(2**50) + k, (-(2**50) + k) * step) for k in range(3)]
    assert rows(geo, "SELECT count(*) FROM (SELECT 1 FROM geo_grid(-90, -180, 90, 180, 1e-9) LIMIT 5000)") == [(5000,)]


def test_grid_null_arguments_give_no_rows(geo: apsw.Connection) -> None:
    for position in range(5):
        args: list[Any] = [0.0, 0.0, 1.0, 1.0, 0.5]
        args[position] = None
        assert rows(geo, "SELECT * FROM geo_grid(?, ?, ?, ?, ?)", *args) == []
    assert rows(geo, "SELECT * FROM geo_grid_polygon(NULL, 1)") == []
    assert rows(geo, "SELECT * FROM geo_grid_polygon('POLYGON EMPTY', NULL)") == []
    # SQLite stores a NaN as NULL, so a NaN argument is a NULL one as well
    assert rows(geo, "SELECT * FROM geo_grid(?, 0, 1, 1, 1)", math.nan) == []


def test_grid_polygon_known_values(geo: apsw.Connection) -> None:
    # The closed triangle (0,0) (2,0) (2,2) in 1-degree cells: the cells on
    # and right of the diagonal, plus the column at lon 2 (its east edge).
    triangle = "POLYGON((0 0, 2 0, 2 2, 0 0))"
    assert [r[:2] for r in rows(geo, "SELECT * FROM geo_grid_polygon(?, 1)", triangle)] == [
        (0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    # A hole: the one cell wholly inside the hole's open interior is left out.
    square = wkt([[(0.0, 0.0), (3.0, 0.0), (3.0, 3.0), (0.0, 3.0), (0.0, 0.0)],
                  [(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0), (1.0, 1.0)]])
    cells = {r[:2] for r in rows(geo, "SELECT * FROM geo_grid_polygon(?, 0.5)", square)}
    assert cells == {(i, j) for i in range(7) for j in range(7)} - {(3, 3)}
    for empty in ("POLYGON EMPTY", '{"type": "Polygon", "coordinates": []}'):
        assert rows(geo, "SELECT * FROM geo_grid_polygon(?, 1)", empty) == []


@SETTINGS
@given(boxes(), st.sampled_from([wkt, geojson]))
def test_grid_polygon_of_a_box_is_the_box_grid(geo: apsw.Connection, box: tuple[float, float, float, float, float], form: Any) -> None:
    min_lat, min_lon, max_lat, max_lon, step = box
    ring = [(min_lon, min_lat), (max_lon, min_lat), (max_lon, max_lat), (min_lon, max_lat), (min_lon, min_lat)]
    got = rows(geo, "SELECT * FROM geo_grid_polygon(?, ?)", form([ring]), step)
    assert got == rows(geo, "SELECT * FROM geo_grid(?, ?, ?, ?, ?)", *box)


@st.composite
def grid_polygons(draw: Any) -> tuple[list[list[tuple[float, float]]], float]:
    """Star polygons (with holes) a few dozen cells across, and a step."""
    rings = draw(polygons())
    xs = [x for ring in rings for x, _ in ring]
    ys = [y for ring in rings for _, y in ring]
    extent = max(max(xs) - min(xs), max(ys) - min(ys))
    step = max(extent, 1e-6) / draw(st.floats(0.5, 40.0))
    return rings, step


@SETTINGS
@given(grid_polygons(), st.sampled_from([wkt, geojson]))
def test_grid_polygon_matches_reference(geo: apsw.Connection, polygon: Any, form: Any) -> None:
    rings, step = polygon
    assume(all(-90 <= y <= 90 and -180 <= x <= 180 for ring in rings for x, y in ring))
    text = form(rings)
    got = rows(geo, "SELECT * FROM geo_grid_polygon(?, ?)", text, step)
    assert got == ref.geo_grid_polygon(text, step)
    assert len(got) > 0
    # each vertex's cell is there; cells with their centre inside are there
    cells = {(i, j) for i, j, *_ in got}
    assert {(math.floor(y / step), math.floor(x / step)) for ring in rings for x, y in ring} <= cells
    for _, _, _, _, _, _, lat, lon in got[:: max(1, len(got) // 20)]:
        if ref.geo_contains(text, lat, lon):
            assert (math.floor(lat / step), math.floor(lon / step)) in cells


# Small polygons with vertices on a quarter-degree lattice: in grid units
# every computation of the guest's rule is exact, so it must agree with the
# exact-arithmetic definition, including on cell edges and corners.
lattice = st.integers(-8, 8).map(lambda k: k * 0.25)


@SETTINGS
@given(st.lists(st.tuples(lattice, lattice), min_size=3, max_size=8),
       st.lists(st.tuples(lattice, lattice), min_size=3, max_size=5) | st.none(),
       st.sampled_from([0.25, 0.5, 1.0]))
def test_grid_polygon_is_exact_on_lattice_polygons(geo: apsw.Connection, outer: list[tuple[float, float]],
                                                   inner: list[tuple[float, float]] | None, step: float) -> None:
    rings = [outer + outer[:1]] + ([inner + inner[:1]] if inner else [])
    text = wkt(rings)
    got = [r[:2] for r in rows(geo, "SELECT * FROM geo_grid_polygon(?, ?)", text, step)]
    assert got == ref.grid_cells_exact(text, step)


@pytest.mark.parametrize(
    "text, step",
    [
        ("POLYGON((0 0, 1 0, 0 0))", 1.0),
        ("POLYGON((0 0, 1 0, 1 1, 0 1))", 1.0),
        ("POLYGON((0 0, 1 0, 1 1, 0 0)", 1.0),
        ("LINESTRING(0 0, 1 1)", 1.0),
        ('{"type": "Point", "coordinates": [0, 0]}', 1.0),
        ("", 1.0),
        ("POLYGON((0 0, 1 0, 1 1, 0 0))", 0.0),
        ("POLYGON((0 0, 1 0, 1 1, 0 0))", -2.0),
        ("POLYGON((0 0, 1 0, 1 1, 0 0))", math.inf),
    ],
)
def test_grid_polygon_bad_input(geo: apsw.Connection, text: str, step: float) -> None:
    message = one_error(geo, "SELECT * FROM geo_grid_polygon(?, ?)", text, step)
    with pytest.raises(ref.GeoError) as want:
        ref.geo_grid_polygon(text, step)
    assert message == f"geo.geo_grid_polygon: {want.value}"


@pytest.mark.parametrize(
    "text, cause",
    [
        ("POLYGON((0 0, 1 0, 1 90.5, 0 0))", "latitude 90.5 is outside [-90, 90]"),
        ("POLYGON((0 0, 181 0, 1 1, 0 0))", "longitude 181 is outside [-180, 180]"),
        ('{"type": "Polygon", "coordinates": [[[0, 0], [1, -91], [1, 1], [0, 0]]]}', "latitude -91 is outside [-90, 90]"),
    ],
)
def test_grid_polygon_coordinates_out_of_range(geo: apsw.Connection, text: str, cause: str) -> None:
    message = one_error(geo, "SELECT * FROM geo_grid_polygon(?, 1)", text)
    # the guest adds the offset where it noticed; the reference cannot
    assert message.startswith(f"geo.geo_grid_polygon: polygon: {cause} at offset ")
    with pytest.raises(ref.GeoError, match=re.escape(cause)):
        ref.geo_grid_polygon(text, 1.0)


def test_grids_in_a_join(geo: apsw.Connection) -> None:
    geo.execute("CREATE TEMP TABLE areas(name TEXT, polygon TEXT, step REAL)")
    try:
        areas = [
            ("triangle", "POLYGON((0 0, 2 0, 2 2, 0 0))", 0.5),
            ("empty", "POLYGON EMPTY", 1.0),
            ("star", wkt([[(10.0, 10.0), (10.4, 10.9), (11.0, 10.1), (10.2, 10.5), (10.0, 10.0)]]), 0.1),
            ("london", "POLYGON((-0.5 51.2, 0.3 51.2, 0.3 51.7, -0.5 51.7, -0.5 51.2))", 0.05),
        ]
        geo.executemany("INSERT INTO areas VALUES (?, ?, ?)", areas)
        got = rows(geo, "SELECT a.name, g.lat_index, g.lon_index FROM areas a, geo_grid_polygon(a.polygon, a.step) g")
        want = [(name, r[0], r[1]) for name, text, step in areas for r in ref.geo_grid_polygon(text, step)]
        assert got == want
        counts = rows(geo, "SELECT a.name, count(g.lat_index) FROM areas a LEFT JOIN geo_grid_polygon(a.polygon, a.step) g "
                           "GROUP BY a.name ORDER BY a.name")
        assert counts == sorted((name, len(ref.geo_grid_polygon(text, step))) for name, text, step in areas)
    finally:
        geo.execute("DROP TABLE temp.areas")


def test_grid_polygon_many_batches(geo: apsw.Connection) -> None:
    """A large polygon in fine cells: ~100,000 rows, hundreds of batches."""
    text = wkt([[(-10.0, -10.0), (10.0, -9.0), (9.5, 10.0), (0.0, 2.0), (-9.0, 9.0), (-10.0, -10.0)]])
    got = rows(geo, "SELECT lat_index, lon_index FROM geo_grid_polygon(?, 0.07)", text)
    assert got == [r[:2] for r in ref.geo_grid_polygon(text, 0.07)]
    assert len(got) > 50_000
    assert rows(geo, "SELECT lat_index, lon_index FROM geo_grid_polygon(?, 0.07) LIMIT 2", text) == got[:2]


def test_grid_polygon_skips_rows_between_rings(geo: apsw.Connection) -> None:
    """Two specks 80 degrees apart in the finest grid: about 5 * 10^14 rows
    lie between them, and none has a cell."""
    step = ref.GRID_MIN_STEP
    specks = wkt([[(0.0, 0.0), (4 * step, 0.0), (4 * step, 4 * step), (0.0, 0.0)],
                  [(0.0, 80.0), (4 * step, 80.0), (4 * step, 80.0 + 4 * step), (0.0, 80.0)]])
    got = rows(geo, "SELECT lat_index, lon_index FROM geo_grid_polygon(?, ?)", specks, step)
    assert got == [r[:2] for r in ref.geo_grid_polygon(specks, step)]
    north = math.floor(80.0 / step)
    assert got[0] == (0, 0) and got[-1][0] >= north
    assert {i for i, _ in got} <= set(range(5)) | set(range(north, north + 6))


def test_grid_polygon_with_thousands_of_edges_per_row(geo: apsw.Connection) -> None:
    """A comb of 8,000 teeth inside one column of 1-degree cells: every row
    meets 16,000 edges, so next() returns before its batch is full (it caps
    the edges it visits per call) and resumes at the next row."""
    points = []
    for k in range(8000):
        points += [(k * 0.0001, -40.0), (k * 0.0001 + 0.00005, 40.0)]
    points += [(points[-1][0] + 0.00005, -40.5), (0.0, -40.5), points[0]]
    got = rows(geo, "SELECT lat_index, lon_index FROM geo_grid_polygon(?, 1)", wkt([points]))
    assert got == [(i, 0) for i in range(-41, 41)]
