"""The shipped geo module (extensions/geo/geo.wasm), called through SQL and
compared with the pure-Python reference in tests/geo_reference.py.

The module under test is the committed, signed file, trusted with the
examples' public key: exactly what `pip install .` gives a user.
"""

from __future__ import annotations

import json
import math
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
        "geo_geohash_encode", "geo_geohash_decode", "geo_contains",
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
    assert {f.name: list(f.args) for f in module.functions} == SIGNATURES
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
