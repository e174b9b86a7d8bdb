"""Pure-Python reference implementation of the ``geo`` extension.

Written separately from ``extensions/geo/geo.c`` so tests can compare the
guest against it. Conventions (shared with the guest):

* angles in degrees, distances in kilometres, spherical Earth of mean
  radius 6371.0088 km;
* geohash cells are half-open: a coordinate on a cell boundary belongs to the
  north/east cell (latitude 90 and longitude 180 fall in the last cell);
* ``geo_contains`` is planar (x = longitude, y = latitude), even-odd rule
  over all rings; points exactly on an edge are unspecified.
* ``geo_grid`` / ``geo_grid_polygon`` (tables): the cells of the grid of
  step x step degrees anchored at (0, 0) that hold a point of the closed box
  / closed polygon; a point is in cell (floor(lat / step), floor(lon / step)).
  ``geo_grid_polygon`` follows the guest's row-by-row floating-point rule
  (extensions/geo/geo.c, "Grids"); ``grid_cells_exact`` computes the same
  definition in exact rational arithmetic, as an independent check.

Where the SQL function would fail, these functions raise :class:`GeoError`
whose message is the exact error text the guest returns.
"""

from __future__ import annotations

import math
from fractions import Fraction

EARTH_RADIUS_KM = 6371.0088
GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
GEOHASH_MAX_LEN = 12

__all__ = [
    "EARTH_RADIUS_KM",
    "GeoError",
    "geo_haversine",
    "geo_bearing",
    "geo_destination",
    "geo_geohash_encode",
    "geo_geohash_decode",
    "geo_contains",
    "parse_polygon",
    "GRID_MIN_STEP",
    "geo_grid",
    "geo_grid_polygon",
    "grid_cells_exact",
]


class GeoError(ValueError):
    """A geo function failed; ``str(err)`` is the SQL error message."""


def _lat_lon_json(lat: float, lon: float) -> str:
    return "[%.17g,%.17g]" % (lat, lon)


def _wrap_lon(lon: float) -> float:
    """Longitude wrapped into [-180, 180)."""
    shifted = math.fmod(lon + 180.0, 360.0)
    if shifted < 0.0:
        shifted += 360.0
    if shifted >= 360.0:
        shifted -= 360.0
    return shifted - 180.0


# ---------------------------------------------------------------------------
# Great circles


def geo_haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points (haversine formula)."""
    half_dlat = math.sin(math.radians(lat2 - lat1) / 2.0)
    half_dlon = math.sin(math.radians(lon2 - lon1) / 2.0)
    h = half_dlat * half_dlat + (
        math.cos(math.radians(lat1)) * math.cos(math.radians(lat2)) * half_dlon * half_dlon
    )
    h = min(h, 1.0)
    return 2.0 * EARTH_RADIUS_KM * math.atan2(math.sqrt(h), math.sqrt(1.0 - h))


def geo_bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing in degrees, in [0, 360), from point 1 towards point 2."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlon = math.radians(lon2 - lon1)
    east = math.sin(dlon) * math.cos(phi2)
    # cos(phi1) sin(phi2) - sin(phi1) cos(phi2) cos(dlon), in the form
    # sin(phi2 - phi1) + 2 sin(phi1) cos(phi2) sin^2(dlon / 2), which keeps its
    # accuracy when the two points are close together.
    north = math.sin(math.radians(lat2 - lat1)) + 2.0 * math.sin(phi1) * math.cos(phi2) * (
        math.sin(dlon / 2.0) ** 2
    )
    return math.fmod(math.degrees(math.atan2(east, north)) + 360.0, 360.0)


def geo_destination_point(lat: float, lon: float, bearing: float, distance_km: float):
    """(lat, lon) reached from a start point along a great circle; lon in [-180, 180)."""
    if not all(math.isfinite(v) for v in (lat, lon, bearing, distance_km)):
        raise GeoError("arguments must be finite numbers")
    phi1 = math.radians(lat)
    theta = math.radians(bearing)
    delta = distance_km / EARTH_RADIUS_KM
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    sin_phi2 = max(-1.0, min(1.0, sin_phi2))
    east = math.sin(theta) * math.sin(delta) * math.cos(phi1)
    north = math.cos(delta) - math.sin(phi1) * sin_phi2
    lat2 = math.degrees(math.asin(sin_phi2))
    lon2 = _wrap_lon(lon + math.degrees(math.atan2(east, north)))
    return lat2, lon2


def geo_destination(lat: float, lon: float, bearing: float, distance_km: float) -> str:
    """Destination point as the JSON text ``"[lat,lon]"`` (numbers as %.17g)."""
    return _lat_lon_json(*geo_destination_point(lat, lon, bearing, distance_km))


# ---------------------------------------------------------------------------
# Geohash (exact arithmetic: every cell boundary is a dyadic rational)


def geo_geohash_encode(lat: float, lon: float, precision) -> str:
    """Geohash of a point with ``precision`` characters (1..12)."""
    if isinstance(precision, float):
        if not precision.is_integer():
            raise GeoError("argument 3 must be integer, got real")
        precision = int(precision)
    if not 1 <= precision <= GEOHASH_MAX_LEN:
        raise GeoError(
            "precision must be between 1 and %d, got %d"
            % (GEOHASH_MAX_LEN, precision)
        )
    if not -90.0 <= lat <= 90.0:
        raise GeoError("latitude %.17g is outside [-90, 90]" % lat)
    if not -180.0 <= lon <= 180.0:
        raise GeoError("longitude %.17g is outside [-180, 180]" % lon)

    total_bits = 5 * precision
    lon_bits = (total_bits + 1) // 2  # longitude takes the first, third, ... bit
    lat_bits = total_bits // 2

    def cell(value: float, low: int, span: int, bits: int) -> int:
        index = math.floor((Fraction(value) - low) * (1 << bits) / span)
        return min(index, (1 << bits) - 1)  # the top edge belongs to the last cell

    lon_index = cell(lon, -180, 360, lon_bits)
    lat_index = cell(lat, -90, 180, lat_bits)

    code = 0
    for k in range(total_bits):
        if k % 2 == 0:
            bit = (lon_index >> (lon_bits - 1 - k // 2)) & 1
        else:
            bit = (lat_index >> (lat_bits - 1 - k // 2)) & 1
        code = (code << 1) | bit
    return "".join(
        GEOHASH_ALPHABET[(code >> (5 * (precision - 1 - i))) & 31] for i in range(precision)
    )


def geo_geohash_decode_point(geohash: str):
    """Centre (lat, lon) of a geohash cell; case-insensitive."""
    raw = geohash.encode("utf-8")
    if not raw:
        raise GeoError("empty geohash")
    if len(raw) > GEOHASH_MAX_LEN:
        raise GeoError(
            "geohash too long: %d characters (at most %d)"
            % (len(raw), GEOHASH_MAX_LEN)
        )
    code = 0
    for offset, byte in enumerate(raw):
        digit = GEOHASH_ALPHABET.find(chr(byte).lower()) if byte < 128 else -1
        if digit < 0:
            if 0x21 <= byte <= 0x7E:
                raise GeoError(
                    "invalid character '%c' at offset %d" % (byte, offset)
                )
            raise GeoError("invalid byte 0x%02x at offset %d" % (byte, offset))
        code = (code << 5) | digit

    total_bits = 5 * len(raw)
    lon_index = lat_index = 0
    for k in range(total_bits):
        bit = (code >> (total_bits - 1 - k)) & 1
        if k % 2 == 0:
            lon_index = (lon_index << 1) | bit
        else:
            lat_index = (lat_index << 1) | bit
    lon_bits, lat_bits = (total_bits + 1) // 2, total_bits // 2

    lat = Fraction(-90) + (Fraction(2 * lat_index + 1, 2) * 180) / (1 << lat_bits)
    lon = Fraction(-180) + (Fraction(2 * lon_index + 1, 2) * 360) / (1 << lon_bits)
    return float(lat), float(lon)


def geo_geohash_decode(geohash: str) -> str:
    """Centre of a geohash cell as the JSON text ``"[lat,lon]"``."""
    return _lat_lon_json(*geo_geohash_decode_point(geohash))


# ---------------------------------------------------------------------------
# Polygons: WKT POLYGON or GeoJSON Polygon text -> list of rings of (x, y)

_SPACE = b" \t\n\r"
_DIGITS = b"0123456789"
_MAX_NUMBER_LEN = 400
_MAX_JSON_DEPTH = 64


class _PolygonSyntaxError(Exception):
    def __init__(self, offset: int, what: str):
        super().__init__(what)
        self.offset = offset
        self.what = what


class _Cursor:
    """Byte cursor over the polygon text with the shared tokenizing rules."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def error(self, offset: int, what: str) -> _PolygonSyntaxError:
        return _PolygonSyntaxError(offset, what)

    def peek(self):
        return self.data[self.pos] if self.pos < len(self.data) else None

    def spaces(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in _SPACE:
            self.pos += 1

    def take(self, char: str) -> bool:
        """Skip whitespace, then consume ``char`` if it comes next."""
        self.spaces()
        if self.peek() == ord(char):
            self.pos += 1
            return True
        return False

    def need(self, char: str) -> None:
        if not self.take(char):
            raise self.error(self.pos, "expected '%s'" % char)

    def word(self, word: str, any_case: bool = True) -> bool:
        """Consume ``word`` if next and not followed by a letter.

        WKT keywords match in any case; JSON literals (any_case=False) exactly.
        """
        end = self.pos + len(word)
        found = self.data[self.pos:end]
        if (found.upper() if any_case else found) != word.encode():
            return False
        if end < len(self.data) and chr(self.data[end]).isascii() and chr(self.data[end]).isalpha():
            return False
        self.pos = end
        return True

    def number(self) -> float:
        self.spaces()
        data, start = self.data, self.pos
        i = start
        if i < len(data) and data[i] in b"+-":
            i += 1
        mantissa_digits = 0
        while i < len(data) and data[i] in _DIGITS:
            i += 1
            mantissa_digits += 1
        if i < len(data) and data[i] == ord("."):
            i += 1
            while i < len(data) and data[i] in _DIGITS:
                i += 1
                mantissa_digits += 1
        if mantissa_digits == 0:
            raise self.error(start, "expected a number")
        if i < len(data) and data[i] in b"eE":
            i += 1
            if i < len(data) and data[i] in b"+-":
                i += 1
            if i >= len(data) or data[i] not in _DIGITS:
                raise self.error(i, "expected exponent digits")
            while i < len(data) and data[i] in _DIGITS:
                i += 1
        if i - start > _MAX_NUMBER_LEN:
            raise self.error(start, "number too long")
        value = float(data[start:i].decode("ascii"))
        if not math.isfinite(value):
            raise self.error(start, "number out of range")
        self.pos = i
        return value

    def json_string(self) -> bytes:
        """A JSON string's raw contents (escapes left as they are)."""
        self.need('"')
        data, start = self.data, self.pos
        i = start
        while i < len(data):
            byte = data[i]
            if byte == ord('"'):
                self.pos = i + 1
                return data[start:i]
            if byte < 0x20:
                raise self.error(i, "control character in string")
            i += 2 if byte == ord("\\") else 1
        raise self.error(len(data), "unterminated string")

    def skip_json(self, depth: int) -> None:
        """Skip one JSON value of a member we do not use."""
        self.spaces()
        if depth > _MAX_JSON_DEPTH:
            raise self.error(self.pos, "nesting too deep")
        first = self.peek()
        if first is None:
            raise self.error(self.pos, "expected a value")
        if first == ord('"'):
            self.json_string()
        elif first in b"[{":
            close = "]" if first == ord("[") else "}"
            self.pos += 1
            if self.take(close):
                return
            while True:
                if first == ord("{"):
                    self.json_string()
                    self.need(":")
                self.skip_json(depth + 1)
                if not self.take(","):
                    break
            self.need(close)
        elif not any(self.word(literal, any_case=False) for literal in ("true", "false", "null")):
            self.number()


def _check_ring(ring, number: int, offset: int) -> None:
    if len(ring) < 4:
        raise _PolygonSyntaxError(
            offset,
            "ring %d has %d position%s (at least 4 needed)"
            % (number, len(ring), "" if len(ring) == 1 else "s"),
        )
    if ring[0] != ring[-1]:
        raise _PolygonSyntaxError(
            offset, "ring %d is not closed (first and last positions differ)" % number
        )


def _wkt_rings(cur: _Cursor):
    cur.spaces()
    if not cur.word("POLYGON"):
        raise cur.error(cur.pos, "expected WKT POLYGON or a GeoJSON object")
    cur.spaces()
    if cur.word("EMPTY"):
        return []
    cur.need("(")
    rings = []
    while True:
        cur.spaces()
        ring_offset = cur.pos
        cur.need("(")
        ring = []
        while True:
            x = cur.number()
            before = cur.pos
            cur.spaces()
            if cur.pos == before:
                raise cur.error(cur.pos, "expected whitespace between coordinates")
            y = cur.number()
            ring.append((x, y))
            cur.spaces()
            if cur.peek() is not None and cur.peek() not in b",)":
                raise cur.error(cur.pos, "expected ',' or ')'")
            if not cur.take(","):
                break
        cur.need(")")
        _check_ring(ring, len(rings) + 1, ring_offset)
        rings.append(ring)
        cur.spaces()
        if cur.peek() is not None and cur.peek() not in b",)":
            raise cur.error(cur.pos, "expected ',' or ')'")
        if not cur.take(","):
            break
    cur.need(")")
    return rings


def _geojson_rings(cur: _Cursor):
    object_offset = cur.pos
    type_value = None
    type_offset = 0
    coordinates_offset = None
    cur.need("{")
    if not cur.take("}"):
        while True:
            key = cur.json_string()
            cur.need(":")
            cur.spaces()
            if key == b"type":
                type_offset = cur.pos
                if cur.peek() != ord('"'):
                    raise cur.error(cur.pos, '"type" must be a string')
                type_value = cur.json_string()
            else:
                if key == b"coordinates":
                    coordinates_offset = cur.pos
                cur.skip_json(1)
            if not cur.take(","):
                break
        cur.need("}")
    end = cur.pos

    if type_value is None:
        raise cur.error(object_offset, 'GeoJSON object has no "type"')
    if type_value != b"Polygon":
        printable = len(type_value) <= 40 and all(0x20 <= b <= 0x7E for b in type_value)
        if printable:
            what = 'unsupported GeoJSON type "%s" (expected "Polygon")' % type_value.decode()
        else:
            what = 'unsupported GeoJSON type (expected "Polygon")'
        raise cur.error(type_offset, what)
    if coordinates_offset is None:
        raise cur.error(object_offset, 'GeoJSON Polygon has no "coordinates"')

    cur.pos = coordinates_offset
    rings = []
    cur.need("[")
    if not cur.take("]"):
        while True:
            cur.spaces()
            ring_offset = cur.pos
            cur.need("[")
            ring = []
            while True:
                cur.need("[")
                x = cur.number()
                cur.need(",")
                y = cur.number()
                while cur.take(","):
                    cur.number()  # altitude etc. are ignored
                cur.need("]")
                ring.append((x, y))
                if not cur.take(","):
                    break
            cur.need("]")
            _check_ring(ring, len(rings) + 1, ring_offset)
            rings.append(ring)
            if not cur.take(","):
                break
        cur.need("]")
    cur.pos = end
    return rings


def parse_polygon(text: str):
    """Parse WKT or GeoJSON polygon text into a list of rings of (lon, lat).

    Raises GeoError with the guest's message on malformed input.
    """
    data = text.encode("utf-8")
    cur = _Cursor(data)
    try:
        cur.spaces()
        if cur.peek() == ord("{"):
            rings = _geojson_rings(cur)
        else:
            rings = _wkt_rings(cur)
        cur.spaces()
        if cur.pos < len(data):
            raise cur.error(cur.pos, "unexpected text after the polygon")
    except _PolygonSyntaxError as err:
        where = " at offset %d" % err.offset
        if err.offset >= len(data):
            where += " (end of input)"
        raise GeoError("polygon: " + err.what + where) from None
    return rings


def geo_contains(polygon: str, lat: float, lon: float) -> int:
    """1 if (lat, lon) is inside the polygon (even-odd rule, holes excluded), else 0."""
    inside = False
    for ring in parse_polygon(polygon):
        for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
            if (y1 > lat) != (y2 > lat) and lon < (x2 - x1) * (lat - y1) / (y2 - y1) + x1:
                inside = not inside
    return int(inside)


# ---------------------------------------------------------------------------
# Grids (table functions)

GRID_MIN_STEP = 180.0 / 2**50

GridRow = tuple[int, int, float, float, float, float, float, float]


def _grid_row(i: int, j: int, step: float) -> GridRow:
    """lat_index, lon_index, min_lat, min_lon, max_lat, max_lon, center_lat, center_lon."""
    return (i, j, i * step, j * step, (i + 1.0) * step, (j + 1.0) * step, (i + 0.5) * step, (j + 0.5) * step)


def _check_step(step: float) -> None:
    if not (GRID_MIN_STEP <= step <= 1.7976931348623157e308):
        raise GeoError("step must be a finite number of at least %.17g degrees, got %.17g" % (GRID_MIN_STEP, step))


def geo_grid(min_lat: float, min_lon: float, max_lat: float, max_lon: float, step: float) -> list[GridRow]:
    """Rows of geo_grid(...): every cell holding a point of the closed box."""
    _check_step(step)
    for name, value, bound in (("min_lat", min_lat, 90), ("min_lon", min_lon, 180),
                               ("max_lat", max_lat, 90), ("max_lon", max_lon, 180)):
        if not -bound <= value <= bound:
            raise GeoError("%s must be between %d and %d, got %.17g" % (name, -bound, bound, value))
    if min_lat > max_lat:
        raise GeoError("min_lat %.17g is greater than max_lat %.17g" % (min_lat, max_lat))
    if min_lon > max_lon:
        raise GeoError("min_lon %.17g is greater than max_lon %.17g (split a box that crosses 180 in two)"
                       % (min_lon, max_lon))
    rows = range(math.floor(min_lat / step), math.floor(max_lat / step) + 1)
    cols = range(math.floor(min_lon / step), math.floor(max_lon / step) + 1)
    return [_grid_row(i, j, step) for i in rows for j in cols]


Edge = tuple[float, float, float, float]  # u1, v1, u2, v2 in grid units


def _grid_edges(polygon: str, step: float) -> list[Edge]:
    _check_step(step)
    edges = []
    for ring in parse_polygon(polygon):
        for x, y in ring:
            if not -90.0 <= y <= 90.0:
                raise GeoError("polygon: latitude %.17g is outside [-90, 90]" % y)
            if not -180.0 <= x <= 180.0:
                raise GeoError("polygon: longitude %.17g is outside [-180, 180]" % x)
        for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
            edges.append((x1 / step, y1 / step, x2 / step, y2 / step))
    return edges


def _marked_columns(edge: Edge, row: int) -> tuple[int, int] | None:
    """The guest's rule: the columns the edge passes through in band `row`."""
    u1, v1, u2, v2 = edge
    ua, va, ub, vb = (u1, v1, u2, v2) if v1 <= v2 else (u2, v2, u1, v1)
    lo, hi = float(row), row + 1.0
    if not (va < hi and vb >= lo):
        return None
    open_end = False
    if va == vb:
        u0, u_end = ua, ub
    else:
        def at(v: float) -> float:
            return min(max(ua + (v - va) * (ub - ua) / (vb - va), min(ua, ub)), max(ua, ub))
        u0 = ua if va >= lo else at(lo)
        if vb < hi:
            u_end = ub
        else:
            u_end, open_end = at(hi), True
    first, last = math.floor(min(u0, u_end)), math.floor(max(u0, u_end))
    if open_end and u_end > u0 and u_end == math.floor(u_end):
        last = int(u_end) - 1
    return first, last


def _inside(edges: list[Edge], pu: float, pv: float) -> bool:
    inside = False
    for u1, v1, u2, v2 in edges:
        if (v1 > pv) != (v2 > pv) and pu < (u2 - u1) * (pv - v1) / (v2 - v1) + u1:
            inside = not inside
    return inside


def geo_grid_polygon(polygon: str, step: float) -> list[GridRow]:
    """Rows of geo_grid_polygon(polygon, step), by the guest's floating-point rule."""
    edges = _grid_edges(polygon, step)
    if not edges:
        return []
    # only rows some edge meets can have cells (the others are between
    # disjoint rings, so outside)
    edge_rows = set()
    for u1, v1, u2, v2 in edges:
        edge_rows.update(range(math.floor(min(v1, v2)), math.floor(max(v1, v2)) + 1))
    out = []
    for row in sorted(edge_rows):
        marked = sorted(m for m in (_marked_columns(e, row) for e in edges) if m is not None)
        columns: set[int] = set()
        previous_last: int | None = None
        for first, last in marked:
            columns.update(range(first, last + 1))
            if previous_last is not None and first > previous_last + 1:
                gap = previous_last + 1
                if _inside(edges, gap + 0.5, row + 0.5):
                    columns.update(range(gap, first))
            previous_last = last if previous_last is None else max(previous_last, last)
        out.extend(_grid_row(row, j, step) for j in sorted(columns))
    return out


# The same definition in exact arithmetic: a cell is emitted when the
# closed polygon (vertices divided by step, then taken exactly) meets the
# half-open unit square of the cell.

Bound = tuple[Fraction, bool]  # value, and whether the value itself is included


def _segment_meets_cell(a: tuple[Fraction, Fraction], b: tuple[Fraction, Fraction], i: int, j: int) -> bool:
    """Does the closed segment a-b meet j <= u < j + 1, i <= v < i + 1?"""
    low: Bound = (Fraction(0), True)
    high: Bound = (Fraction(1), True)
    for start, delta, cell in ((a[0], b[0] - a[0], j), (a[1], b[1] - a[1], i)):
        if delta == 0:
            if not cell <= start < cell + 1:
                return False
            continue
        t_in = (cell - start) / delta  # where the coordinate reaches the closed side
        t_out = (cell + 1 - start) / delta  # where it reaches the open side
        enter, leave = ((t_in, True), (t_out, False)) if delta > 0 else ((t_out, False), (t_in, True))
        if enter[0] > low[0] or (enter[0] == low[0] and not enter[1]):
            low = enter
        if leave[0] < high[0] or (leave[0] == high[0] and not leave[1]):
            high = leave
    return low[0] < high[0] or (low[0] == high[0] and low[1] and high[1])


def grid_cells_exact(polygon: str, step: float) -> list[tuple[int, int]]:
    """(lat_index, lon_index) of the cells meeting the closed polygon, exactly."""
    edges = [((Fraction(u1), Fraction(v1)), (Fraction(u2), Fraction(v2)))
             for u1, v1, u2, v2 in _grid_edges(polygon, step)]
    if not edges:
        return []
    us = [p[0] for e in edges for p in e]
    vs = [p[1] for e in edges for p in e]
    cells = []
    for i in range(math.floor(min(vs)), math.floor(max(vs)) + 1):
        for j in range(math.floor(min(us)), math.floor(max(us)) + 1):
            if any(_segment_meets_cell(a, b, i, j) for a, b in edges):
                cells.append((i, j))
                continue
            # no boundary in the cell: it is all inside or all outside
            pu, pv = Fraction(2 * j + 1, 2), Fraction(2 * i + 1, 2)
            crossings = sum(1 for (u1, v1), (u2, v2) in edges
                            if (v1 > pv) != (v2 > pv) and pu < (u2 - u1) * (pv - v1) / (v2 - v1) + u1)
            if crossings % 2:
                cells.append((i, j))
    return cells
