"""Pure-Python reference implementation of the ``geo`` extension.

Written separately from ``extensions/geo/geo.c`` so tests can compare the
guest against it. Conventions (shared with the guest):

* angles in degrees, distances in kilometres, spherical Earth of mean
  radius 6371.0088 km;
* geohash cells are half-open: a coordinate on a cell boundary belongs to the
  north/east cell (latitude 90 and longitude 180 fall in the last cell);
* ``geo_contains`` is planar (x = longitude, y = latitude), even-odd rule
  over all rings; points exactly on an edge are unspecified.

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
