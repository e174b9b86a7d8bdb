/*
 * geo.c - the "geo" sqlwasm module: great-circle geometry on a spherical
 * Earth, geohash encoding/decoding and point-in-polygon.
 *
 * Conventions shared by all functions:
 *   - angles are given and returned in degrees, distances in kilometres;
 *   - the Earth is a sphere of mean radius 6371.0088 km;
 *   - geohash cells are half-open: a coordinate equal to a cell boundary
 *     belongs to the upper (north/east) cell, except that latitude 90 and
 *     longitude 180 belong to the last cell;
 *   - geo_contains works in the plane with x = longitude, y = latitude and
 *     the even-odd rule over all rings (so holes exclude their inside);
 *     points exactly on an edge may go either way.
 *
 * Build: python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 -s -Wl,-z,stack-size=262144
 *        -I extensions/sdk extensions/geo/geo.c -o geo.wasm
 */
#include <math.h>

#include "sqlwasm.h"

#define EARTH_RADIUS_KM 6371.0088
#define PI 3.14159265358979323846
#define GEOHASH_MAX_LEN 12

static const char GEOHASH_ALPHABET[] = "0123456789bcdefghjkmnpqrstuvwxyz";

static double radians(double deg) { return deg * (PI / 180.0); }
static double degrees(double rad) { return rad * (180.0 / PI); }

/* Longitude wrapped into [-180, 180). */
static double normalize_lon(double lon) {
    double x = fmod(lon + 180.0, 360.0);
    if (x < 0.0) x += 360.0;
    if (x >= 360.0) x -= 360.0; /* a tiny negative x rounded up to 360 */
    return x - 180.0;
}

/* Text result "[lat,lon]". */
static int64_t return_lat_lon(double lat, double lon) {
    return sqlwasm_return_textf("[%.17g,%.17g]", lat, lon);
}

/* ------------------------------------------------------------------------
 * Great-circle functions
 * ------------------------------------------------------------------------ */

/* geo_haversine(lat1, lon1, lat2, lon2) -> distance in km (raw ABI). */
SQLWASM_EXPORT(haversine)
double haversine(double lat1, double lon1, double lat2, double lon2) {
    double s_dlat = sin(radians(lat2 - lat1) / 2.0);
    double s_dlon = sin(radians(lon2 - lon1) / 2.0);
    double a = s_dlat * s_dlat + cos(radians(lat1)) * cos(radians(lat2)) * s_dlon * s_dlon;
    if (a > 1.0) a = 1.0; /* rounding near the antipode */
    return 2.0 * EARTH_RADIUS_KM * atan2(sqrt(a), sqrt(1.0 - a));
}

/* geo_bearing(lat1, lon1, lat2, lon2) -> initial bearing in [0, 360) (raw). */
SQLWASM_EXPORT(bearing)
double bearing(double lat1, double lon1, double lat2, double lon2) {
    double phi1 = radians(lat1), phi2 = radians(lat2);
    double dlon = radians(lon2 - lon1);
    double s_half = sin(dlon / 2.0);
    double y = sin(dlon) * cos(phi2);
    /* = cos(phi1) sin(phi2) - sin(phi1) cos(phi2) cos(dlon), rewritten so
     * it does not cancel catastrophically for nearby points */
    double x = sin(radians(lat2 - lat1)) + 2.0 * sin(phi1) * cos(phi2) * s_half * s_half;
    return fmod(degrees(atan2(y, x)) + 360.0, 360.0);
}

/* geo_destination(lat, lon, bearing, distance_km) -> "[lat,lon]" (msgpack):
 * the point reached by following the great circle from (lat, lon) with the
 * given initial bearing for the given distance. */
SQLWASM_EXPORT(destination)
int64_t destination(const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[4];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "rrrr", a, &err)) return err;
    double lat = a[0].real, lon = a[1].real, brg = a[2].real, dist = a[3].real;
    if (!isfinite(lat) || !isfinite(lon) || !isfinite(brg) || !isfinite(dist))
        return sqlwasm_return_error("arguments must be finite numbers");

    double phi1 = radians(lat), theta = radians(brg);
    double delta = dist / EARTH_RADIUS_KM; /* angular distance */
    double sin_phi2 = sin(phi1) * cos(delta) + cos(phi1) * sin(delta) * cos(theta);
    if (sin_phi2 > 1.0) sin_phi2 = 1.0;
    if (sin_phi2 < -1.0) sin_phi2 = -1.0;
    double y = sin(theta) * sin(delta) * cos(phi1);
    double x = cos(delta) - sin(phi1) * sin_phi2;
    return return_lat_lon(degrees(asin(sin_phi2)), normalize_lon(lon + degrees(atan2(y, x))));
}

/* ------------------------------------------------------------------------
 * Geohash
 * ------------------------------------------------------------------------ */

/* geo_geohash_encode(lat, lon, precision) -> geohash text (msgpack). */
SQLWASM_EXPORT(geohash_encode)
int64_t geohash_encode(const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[3];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "rri", a, &err)) return err;
    double lat = a[0].real, lon = a[1].real;
    int64_t precision = a[2].integer;
    if (precision < 1 || precision > GEOHASH_MAX_LEN)
        return sqlwasm_return_errorf("precision must be between 1 and %d, "
                                     "got %lld", GEOHASH_MAX_LEN, (long long)precision);
    if (!(lat >= -90.0 && lat <= 90.0))
        return sqlwasm_return_errorf("latitude %.17g is outside [-90, 90]", lat);
    if (!(lon >= -180.0 && lon <= 180.0))
        return sqlwasm_return_errorf("longitude %.17g is outside [-180, 180]",
                                     lon);

    /* Bisect the two ranges alternately, longitude first; each bit says
     * whether the coordinate lies in the upper half. */
    double lat_lo = -90.0, lat_hi = 90.0, lon_lo = -180.0, lon_hi = 180.0;
    char hash[GEOHASH_MAX_LEN];
    int lon_turn = 1;
    for (int i = 0; i < precision; i++) {
        int index = 0;
        for (int bit = 0; bit < 5; bit++, lon_turn = !lon_turn) {
            double *lo = lon_turn ? &lon_lo : &lat_lo, *hi = lon_turn ? &lon_hi : &lat_hi;
            double value = lon_turn ? lon : lat;
            double mid = (*lo + *hi) / 2.0;
            if (value >= mid) {
                index = index * 2 + 1;
                *lo = mid;
            } else {
                index = index * 2;
                *hi = mid;
            }
        }
        hash[i] = GEOHASH_ALPHABET[index];
    }
    return sqlwasm_return_text(hash, (uint32_t)precision);
}

/* Value 0..31 of a geohash character (either case), or -1. */
static int geohash_digit(unsigned char c) {
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
    for (int i = 0; i < 32; i++)
        if (GEOHASH_ALPHABET[i] == c) return i;
    return -1;
}

/* geo_geohash_decode(hash) -> "[lat,lon]" of the cell centre (msgpack). */
SQLWASM_EXPORT(geohash_decode)
int64_t geohash_decode(const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[1];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "t", a, &err)) return err;
    const unsigned char *s = (const unsigned char *)a[0].text;
    uint32_t n = a[0].len;
    if (n == 0) return sqlwasm_return_error("empty geohash");
    if (n > GEOHASH_MAX_LEN)
        return sqlwasm_return_errorf("geohash too long: %u characters "
                                     "(at most %d)", n, GEOHASH_MAX_LEN);

    double lat_lo = -90.0, lat_hi = 90.0, lon_lo = -180.0, lon_hi = 180.0;
    int lon_turn = 1;
    for (uint32_t i = 0; i < n; i++) {
        int digit = geohash_digit(s[i]);
        if (digit < 0) {
            if (s[i] >= 0x21 && s[i] <= 0x7e)
                return sqlwasm_return_errorf("invalid character '%c' "
                                             "at offset %u", s[i], i);
            return sqlwasm_return_errorf("invalid byte 0x%02x at offset %u",
                                         s[i], i);
        }
        for (int bit = 4; bit >= 0; bit--, lon_turn = !lon_turn) {
            double *lo = lon_turn ? &lon_lo : &lat_lo, *hi = lon_turn ? &lon_hi : &lat_hi;
            double mid = (*lo + *hi) / 2.0;
            if ((digit >> bit) & 1) *lo = mid;
            else *hi = mid;
        }
    }
    return return_lat_lon((lat_lo + lat_hi) / 2.0, (lon_lo + lon_hi) / 2.0);
}

/* ------------------------------------------------------------------------
 * Point in polygon
 *
 * The polygon text is parsed in one pass; every edge is tested against the
 * point as soon as it is read, so no vertex list is kept.
 * ------------------------------------------------------------------------ */

#define MAX_NUMBER_LEN 400 /* longest coordinate literal accepted */
#define MAX_JSON_DEPTH 64  /* nesting allowed in skipped GeoJSON members */

typedef struct {
    const char *s; /* polygon text (not NUL-terminated) */
    uint32_t n;
    uint32_t pos;
    int failed;
    char message[160]; /* what went wrong, set by fail() */

    double px, py; /* the point: x = longitude, y = latitude */
    int inside;    /* even-odd parity so far */

    uint32_t ring;      /* rings read so far */
    uint32_t positions; /* positions in the current ring */
    double first_x, first_y, prev_x, prev_y;
} polygon_parser;

__attribute__((format(printf, 3, 4)))
static void fail(polygon_parser *p, uint32_t at, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->message, sizeof p->message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof p->message)
        snprintf(p->message + n, sizeof p->message - (size_t)n, " at offset %u%s", at,
                 at >= p->n ? " (end of input)" : "");
}

static void skip_space(polygon_parser *p) {
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Skip whitespace and consume `c` if it is next. */
static int accept(polygon_parser *p, char c) {
    skip_space(p);
    if (p->pos < p->n && p->s[p->pos] == c) {
        p->pos++;
        return 1;
    }
    return 0;
}

static int expect(polygon_parser *p, char c) {
    if (accept(p, c)) return 1;
    fail(p, p->pos, "expected '%c'", c);
    return 0;
}

/* Consume `word` if it comes next and is not followed by a letter; WKT
 * keywords (given in upper case) match case-insensitively. */
static int accept_word(polygon_parser *p, const char *word, int any_case) {
    uint32_t k = (uint32_t)strlen(word);
    if (p->n - p->pos < k) return 0;
    for (uint32_t i = 0; i < k; i++) {
        char c = p->s[p->pos + i];
        if (any_case && c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c != word[i]) return 0;
    }
    if (p->pos + k < p->n) {
        char next = p->s[p->pos + k];
        if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z')) return 0;
    }
    p->pos += k;
    return 1;
}

static int accept_keyword(polygon_parser *p, const char *word) {
    return accept_word(p, word, 1);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Number: [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?
 * converted with strtod; it must be finite. */
static int parse_number(polygon_parser *p, double *out) {
    skip_space(p);
    uint32_t start = p->pos, i = p->pos, digits = 0;
    const char *s = p->s;
    if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
    while (i < p->n && is_digit(s[i])) i++, digits++;
    if (i < p->n && s[i] == '.') {
        i++;
        while (i < p->n && is_digit(s[i])) i++, digits++;
    }
    if (digits == 0) {
        fail(p, start, "expected a number");
        return 0;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->n || !is_digit(s[i])) {
            fail(p, i, "expected exponent digits");
            return 0;
        }
        while (i < p->n && is_digit(s[i])) i++;
    }
    if (i - start > MAX_NUMBER_LEN) {
        fail(p, start, "number too long");
        return 0;
    }
    char buf[MAX_NUMBER_LEN + 1];
    memcpy(buf, s + start, i - start);
    buf[i - start] = '\0';
    double v = strtod(buf, NULL);
    if (!isfinite(v)) {
        fail(p, start, "number out of range");
        return 0;
    }
    p->pos = i;
    *out = v;
    return 1;
}

/* Even-odd test of the edge (x1,y1)-(x2,y2) against a ray from the point
 * towards +x. */
static void cross_edge(polygon_parser *p, double x1, double y1, double x2, double y2) {
    if ((y1 > p->py) != (y2 > p->py) && p->px < (x2 - x1) * (p->py - y1) / (y2 - y1) + x1)
        p->inside = !p->inside;
}

static void ring_begin(polygon_parser *p) {
    p->ring++;
    p->positions = 0;
}

static void ring_add(polygon_parser *p, double x, double y) {
    if (p->positions == 0) {
        p->first_x = x;
        p->first_y = y;
    } else {
        cross_edge(p, p->prev_x, p->prev_y, x, y);
    }
    p->prev_x = x;
    p->prev_y = y;
    p->positions++;
}

/* A ring must be closed and have at least 4 positions; `at` is the offset of
 * its opening bracket, for error messages. */
static int ring_end(polygon_parser *p, uint32_t at) {
    if (p->positions < 4) {
        fail(p, at, "ring %u has %u position%s (at least 4 needed)", p->ring, p->positions,
             p->positions == 1 ? "" : "s");
        return 0;
    }
    if (p->first_x != p->prev_x || p->first_y != p->prev_y) {
        fail(p, at, "ring %u is not closed (first and last positions differ)", p->ring);
        return 0;
    }
    return 1;
}

/* WKT: POLYGON ( (x y, x y, ...) [, (hole) ...] )  or  POLYGON EMPTY */
static void parse_wkt(polygon_parser *p) {
    skip_space(p);
    if (!accept_keyword(p, "POLYGON")) {
        fail(p, p->pos, "expected WKT POLYGON or a GeoJSON object");
        return;
    }
    skip_space(p);
    if (accept_keyword(p, "EMPTY")) return;
    if (!expect(p, '(')) return;
    do {
        skip_space(p);
        uint32_t ring_at = p->pos;
        if (!expect(p, '(')) return;
        ring_begin(p);
        do {
            double x, y;
            if (!parse_number(p, &x)) return;
            uint32_t gap = p->pos;
            skip_space(p);
            if (p->pos == gap) {
                fail(p, p->pos, "expected whitespace between coordinates");
                return;
            }
            if (!parse_number(p, &y)) return;
            ring_add(p, x, y);
            skip_space(p);
            if (p->pos < p->n && p->s[p->pos] != ',' && p->s[p->pos] != ')') {
                fail(p, p->pos, "expected ',' or ')'");
                return;
            }
        } while (accept(p, ','));
        if (!expect(p, ')') || !ring_end(p, ring_at)) return;
        skip_space(p);
        if (p->pos < p->n && p->s[p->pos] != ',' && p->s[p->pos] != ')') {
            fail(p, p->pos, "expected ',' or ')'");
            return;
        }
    } while (accept(p, ','));
    expect(p, ')');
}

/* Consume a JSON string; its raw contents (escapes untouched) go to
 * *str / *len. */
static int parse_json_string(polygon_parser *p, const char **str, uint32_t *len) {
    if (!expect(p, '"')) return 0;
    uint32_t start = p->pos;
    while (p->pos < p->n) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            *str = p->s + start;
            *len = p->pos - start;
            p->pos++;
            return 1;
        }
        if (c < 0x20) {
            fail(p, p->pos, "control character in string");
            return 0;
        }
        p->pos += (c == '\\') ? 2 : 1;
    }
    fail(p, p->n, "unterminated string");
    return 0;
}

/* Skip any JSON value (members we do not use). */
static int skip_json_value(polygon_parser *p, int depth) {
    skip_space(p);
    if (depth > MAX_JSON_DEPTH) {
        fail(p, p->pos, "nesting too deep");
        return 0;
    }
    if (p->pos >= p->n) {
        fail(p, p->pos, "expected a value");
        return 0;
    }
    char c = p->s[p->pos];
    if (c == '"') {
        const char *s;
        uint32_t n;
        return parse_json_string(p, &s, &n);
    }
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        p->pos++;
        if (accept(p, close)) return 1;
        do {
            if (c == '{') {
                const char *s;
                uint32_t n;
                if (!parse_json_string(p, &s, &n) || !expect(p, ':')) return 0;
            }
            if (!skip_json_value(p, depth + 1)) return 0;
        } while (accept(p, ','));
        return expect(p, close);
    }
    if (accept_word(p, "true", 0) || accept_word(p, "false", 0) || accept_word(p, "null", 0))
        return 1;
    double ignored;
    return parse_number(p, &ignored);
}

/* GeoJSON "coordinates" of a Polygon: [ [ [x, y, ...], ... ], ... ] */
static void parse_geojson_rings(polygon_parser *p) {
    if (!expect(p, '[')) return;
    if (accept(p, ']')) return; /* no rings: an empty polygon */
    do {
        skip_space(p);
        uint32_t ring_at = p->pos;
        if (!expect(p, '[')) return;
        ring_begin(p);
        do {
            double x, y, extra;
            if (!expect(p, '[') || !parse_number(p, &x) || !expect(p, ',') ||
                !parse_number(p, &y))
                return;
            while (accept(p, ',')) /* altitude and beyond are ignored */
                if (!parse_number(p, &extra)) return;
            if (!expect(p, ']')) return;
            ring_add(p, x, y);
        } while (accept(p, ','));
        if (!expect(p, ']') || !ring_end(p, ring_at)) return;
    } while (accept(p, ','));
    expect(p, ']');
}

/* GeoJSON: {"type": "Polygon", "coordinates": [...], ...} in any key order.
 * The object is scanned first; the coordinates are read once the type is
 * known to be "Polygon". */
static void parse_geojson(polygon_parser *p) {
    const char *type = NULL;
    uint32_t type_len = 0, type_at = 0;
    int have_coordinates = 0;
    uint32_t coordinates_at = 0;

    uint32_t object_at = p->pos;
    if (!expect(p, '{')) return;
    if (!accept(p, '}')) {
        do {
            const char *key;
            uint32_t key_len;
            if (!parse_json_string(p, &key, &key_len) || !expect(p, ':')) return;
            skip_space(p);
            if (key_len == 4 && memcmp(key, "type", 4) == 0) {
                type_at = p->pos;
                if (p->pos >= p->n || p->s[p->pos] != '"') {
                    fail(p, p->pos, "\"type\" must be a string");
                    return;
                }
                if (!parse_json_string(p, &type, &type_len)) return;
            } else {
                if (key_len == 11 && memcmp(key, "coordinates", 11) == 0) {
                    have_coordinates = 1;
                    coordinates_at = p->pos;
                }
                if (!skip_json_value(p, 1)) return;
            }
        } while (accept(p, ','));
        if (!expect(p, '}')) return;
    }
    uint32_t end = p->pos;

    if (type == NULL) {
        fail(p, object_at, "GeoJSON object has no \"type\"");
        return;
    }
    if (type_len != 7 || memcmp(type, "Polygon", 7) != 0) {
        /* Quote the type only when it is short printable ASCII, so the
         * message stays valid UTF-8 whatever the input was. */
        int printable = type_len <= 40;
        for (uint32_t i = 0; i < type_len && printable; i++)
            printable = type[i] >= 0x20 && type[i] <= 0x7e;
        if (printable)
            fail(p, type_at, "unsupported GeoJSON type \"%.*s\" (expected \"Polygon\")",
                 (int)type_len, type);
        else
            fail(p, type_at, "unsupported GeoJSON type (expected \"Polygon\")");
        return;
    }
    if (!have_coordinates) {
        fail(p, object_at, "GeoJSON Polygon has no \"coordinates\"");
        return;
    }
    p->pos = coordinates_at;
    parse_geojson_rings(p);
    p->pos = end;
}

/* geo_contains(polygon, lat, lon) -> 1 if the point is inside (msgpack). */
SQLWASM_EXPORT(contains)
int64_t contains(const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[3];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "trr", a, &err)) return err;

    polygon_parser p;
    memset(&p, 0, sizeof p);
    p.s = a[0].text;
    p.n = a[0].len;
    p.py = a[1].real;
    p.px = a[2].real;

    skip_space(&p);
    if (p.pos < p.n && p.s[p.pos] == '{') parse_geojson(&p);
    else parse_wkt(&p);
    if (!p.failed) {
        skip_space(&p);
        if (p.pos < p.n) fail(&p, p.pos, "unexpected text after the polygon");
    }
    if (p.failed) return sqlwasm_return_errorf("polygon: %s", p.message);
    return sqlwasm_return_int(p.inside);
}
