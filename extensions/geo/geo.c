/*
 * geo.c - the "geo" sqlwasm module: great-circle geometry on a spherical
 * Earth, geohash encoding/decoding, point-in-polygon, and the table
 * functions geo_grid and geo_grid_polygon (the cells of a degree grid that
 * cover a box or a polygon; see "Grids" below).
 *
 * Conventions shared by all functions:
 *   - angles are given and returned in degrees, distances in kilometres;
 *   - the Earth is a sphere of mean radius 6371.0088 km;
 *   - geohash cells are half-open: a coordinate equal to a cell boundary
 *     belongs to the upper (north/east) cell, except that latitude 90 and
 *     longitude 180 belong to the last cell;
 *   - geo_contains works in the plane with x = longitude, y = latitude and
 *     the even-odd rule over all rings (so holes exclude their inside);
 *     points exactly on an edge may go either way;
 *   - grid cells are half-open too: a point is in cell
 *     (floor(lat / step), floor(lon / step)).
 *
 * Build: python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 -s -Wl,-z,stack-size=262144 -Wl,--export=__stack_pointer
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

    /* geo_grid_polygon: the edges go to this cursor instead of the point
     * test (NULL for geo_contains) */
    struct grid_cursor *grid;
} polygon_parser;

static void grid_add_edge(polygon_parser *p, double x1, double y1, double x2, double y2);

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
    } else if (p->grid != NULL) {
        grid_add_edge(p, p->prev_x, p->prev_y, x, y);
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

/* A WKT or GeoJSON polygon, all of p->s. */
static void parse_polygon(polygon_parser *p) {
    skip_space(p);
    if (p->pos < p->n && p->s[p->pos] == '{') parse_geojson(p);
    else parse_wkt(p);
    if (!p->failed) {
        skip_space(p);
        if (p->pos < p->n) fail(p, p->pos, "unexpected text after the polygon");
    }
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

    parse_polygon(&p);
    if (p.failed) return sqlwasm_return_errorf("polygon: %s", p.message);
    return sqlwasm_return_int(p.inside);
}

/* ------------------------------------------------------------------------
 * Grids (table functions)
 *
 * The grid of step x step degree cells is anchored at latitude 0,
 * longitude 0. Working in grid units u = lon / step, v = lat / step (each a
 * double division), the cell (lat_index, lon_index) = (i, j) is the
 * half-open unit square i <= v < i + 1, j <= u < j + 1: a point belongs to
 * the cell (floor(lat / step), floor(lon / step)). Reported bounds and
 * centres are i * step, (i + 1) * step, (i + 0.5) * step (and so for j),
 * unclipped: a cell may reach past latitude 90.
 *
 * geo_grid(min_lat, min_lon, max_lat, max_lon, step): the cells holding at
 * least one point of the closed box, i.e. lat_index from
 * floor(min_lat / step) to floor(max_lat / step) and lon_index likewise.
 *
 * geo_grid_polygon(polygon, step): the cells holding at least one point of
 * the closed polygon (interior by the even-odd rule, plus boundary), with
 * the polygon's vertices moved into grid units first. Computed row by row
 * (one row per lat_index i, the band i <= v < i + 1):
 *   - every edge that meets the band marks the columns it passes through
 *     there: with (ua, va) its lower and (ub, vb) its upper end, its part
 *     in the band runs from v0 = max(va, i) to v1 = min(vb, i + 1), at u
 *     values u(v) = ua + (v - va) * (ub - ua) / (vb - va) (the vertex's own
 *     u where v0 = va or v1 = vb; clamped between ua and ub), and marks
 *     floor(min) .. floor(max) of u(v0), u(v1), except that when vb >= i + 1
 *     (the band's upper edge is not part of it) and u(v1) is an integer
 *     greater than u(v0), the last column is u(v1) - 1. A horizontal edge
 *     (va = vb) marks floor(min(ua, ub)) .. floor(max(ua, ub)) in its band;
 *   - a run of unmarked cells between marked ones is wholly inside or
 *     wholly outside; it is emitted when the centre of its first cell is
 *     inside, by the even-odd ray test of geo_contains (an edge (u1, v1)-
 *     (u2, v2) counts when (v1 > pv) != (v2 > pv) and
 *     pu < (u2 - u1) * (pv - v1) / (v2 - v1) + u1).
 * Cells come out ordered by lat_index, then lon_index.
 *
 * Coordinates must be latitudes in [-90, 90] and longitudes in [-180, 180],
 * and step a finite number of at least GRID_MIN_STEP degrees, which keeps
 * every index within +-2^50 (no overflow, exact in a double).
 * ------------------------------------------------------------------------ */

#define GRID_MIN_STEP (180.0 / 1125899906842624.0) /* 180 / 2^50 */
/* A next() of geo_grid_polygon sets up no more rows once its rows so far
 * visited this many edges (about 10 ms here). */
#define GRID_WORK_PER_CALL (1u << 20)

typedef struct {
    double u1, v1, u2, v2;
    int64_t lo, hi; /* the rows it meets: floor(min v) .. floor(max v) */
} grid_edge;

typedef struct grid_cursor {
    int64_t error; /* a kept {"error": ...} result, or 0 */
    double step;
    int64_t row, row_last; /* the row being emitted, the last row */
    int64_t col;           /* next column of the current span */
    /* the current row's cells: spans[2k] .. spans[2k + 1], k < span_count */
    int64_t *spans;
    uint32_t span_count, span_at;
    int started; /* the first row has been set up */
    /* geo_grid: the one span of every row */
    int64_t col_first, col_last;
    /* geo_grid_polygon */
    int polygon;
    grid_edge *edges; /* sorted by lo once parsed */
    uint32_t edge_count, edge_cap;
    uint32_t *active;     /* the edges meeting the current row */
    uint32_t active_count;
    uint32_t next_edge;   /* edges[next_edge..] have not reached a row yet */
    int64_t *marks;       /* column intervals marked by edges: 2 per edge */
    double *crossings;    /* u of the ray crossings at the row's centre line */
} grid_cursor;

static void grid_free(grid_cursor *g) {
    sqlwasm_result_free(g->error);
    free(g->spans);
    free(g->edges);
    free(g->active);
    free(g->marks);
    free(g->crossings);
    free(g);
}

/* A handle for g (freed on failure); -1 when out of memory. */
static int32_t grid_handle(grid_cursor *g) {
    int32_t h = sqlwasm_handle_new(g);
    if (h < 0) grid_free(g);
    return h;
}

/* A handle that only reports err (a result in the arena). */
static int32_t grid_failed(grid_cursor *g, int64_t err) {
    g->error = sqlwasm_result_keep(err);
    return grid_handle(g);
}

/* NULL when step is acceptable, else the reason. */
static int64_t check_step(double step) {
    if (!(step >= GRID_MIN_STEP && step <= 1.7976931348623157e308))
        return sqlwasm_return_errorf("step must be a finite number of at least %.17g degrees, "
                                     "got %.17g", GRID_MIN_STEP, step);
    return 0;
}

static int lat_ok(double lat) { return lat >= -90.0 && lat <= 90.0; }
static int lon_ok(double lon) { return lon >= -180.0 && lon <= 180.0; }

SQLWASM_EXPORT(grid_open)
int32_t grid_open(const uint8_t *row, uint32_t len) {
    grid_cursor *g = (grid_cursor *)calloc(1, sizeof *g);
    if (g == NULL) return -1;
    sqlwasm_arg a[5];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "rrrrr", a, &err)) return grid_failed(g, err);
    double min_lat = a[0].real, min_lon = a[1].real, max_lat = a[2].real, max_lon = a[3].real;
    double step = a[4].real;
    if ((err = check_step(step)) != 0) return grid_failed(g, err);
    static const char *const names[4] = {"min_lat", "min_lon", "max_lat", "max_lon"};
    for (int i = 0; i < 4; i++) {
        double x = a[i].real;
        if (i % 2 == 0 ? !lat_ok(x) : !lon_ok(x))
            return grid_failed(g, sqlwasm_return_errorf("%s must be between %s, got %.17g",
                                                        names[i],
                                                        i % 2 == 0 ? "-90 and 90" : "-180 and 180",
                                                        x));
    }
    if (min_lat > max_lat)
        return grid_failed(g, sqlwasm_return_errorf("min_lat %.17g is greater than max_lat %.17g",
                                                    min_lat, max_lat));
    if (min_lon > max_lon)
        return grid_failed(g, sqlwasm_return_errorf("min_lon %.17g is greater than max_lon %.17g "
                                                    "(split a box that crosses 180 in two)",
                                                    min_lon, max_lon));
    g->spans = (int64_t *)malloc(2 * sizeof(int64_t));
    if (g->spans == NULL) return grid_failed(g, sqlwasm_return_error("out of memory"));
    g->step = step;
    g->row = (int64_t)floor(min_lat / step);
    g->row_last = (int64_t)floor(max_lat / step);
    g->col_first = (int64_t)floor(min_lon / step);
    g->col_last = (int64_t)floor(max_lon / step);
    return grid_handle(g);
}

/* Parser callback: the edge (x1, y1)-(x2, y2) in degrees, into grid units. */
static void grid_add_edge(polygon_parser *p, double x1, double y1, double x2, double y2) {
    grid_cursor *g = p->grid;
    if (!lat_ok(y2)) {
        fail(p, p->pos, "latitude %.17g is outside [-90, 90]", y2);
        return;
    }
    if (!lon_ok(x2)) {
        fail(p, p->pos, "longitude %.17g is outside [-180, 180]", x2);
        return;
    }
    if (g->edge_count == g->edge_cap) {
        uint32_t cap = g->edge_cap ? g->edge_cap * 2 : 16;
        grid_edge *edges = cap > g->edge_cap && cap < (UINT32_MAX / 4) / sizeof(grid_edge)
                               ? (grid_edge *)realloc(g->edges, (size_t)cap * sizeof *edges)
                               : NULL;
        if (edges == NULL) {
            fail(p, p->pos, "out of memory");
            return;
        }
        g->edges = edges;
        g->edge_cap = cap;
    }
    /* the first vertex of a ring was checked as the last one of its edge */
    grid_edge *e = &g->edges[g->edge_count++];
    e->u1 = x1 / g->step;
    e->v1 = y1 / g->step;
    e->u2 = x2 / g->step;
    e->v2 = y2 / g->step;
    e->lo = (int64_t)floor(fmin(e->v1, e->v2));
    e->hi = (int64_t)floor(fmax(e->v1, e->v2));
}

static int compare_edge_lo(const void *pa, const void *pb) {
    int64_t a = ((const grid_edge *)pa)->lo, b = ((const grid_edge *)pb)->lo;
    return (a > b) - (a < b);
}

SQLWASM_EXPORT(grid_polygon_open)
int32_t grid_polygon_open(const uint8_t *row, uint32_t len) {
    grid_cursor *g = (grid_cursor *)calloc(1, sizeof *g);
    if (g == NULL) return -1;
    g->polygon = 1;
    sqlwasm_arg a[2];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "tr", a, &err)) return grid_failed(g, err);
    if ((err = check_step(a[1].real)) != 0) return grid_failed(g, err);
    g->step = a[1].real;

    polygon_parser p;
    memset(&p, 0, sizeof p);
    p.s = a[0].text;
    p.n = a[0].len;
    p.grid = g;
    parse_polygon(&p);
    if (p.failed) return grid_failed(g, sqlwasm_return_errorf("polygon: %s", p.message));

    uint32_t n = g->edge_count;
    if (n == 0) { /* an empty polygon: no rows */
        g->row = 1;
        g->row_last = 0;
        return grid_handle(g);
    }
    g->spans = (int64_t *)malloc((size_t)n * 4 * sizeof(int64_t));
    g->marks = (int64_t *)malloc((size_t)n * 2 * sizeof(int64_t));
    g->crossings = (double *)malloc((size_t)n * sizeof(double));
    g->active = (uint32_t *)malloc((size_t)n * sizeof(uint32_t));
    if (g->spans == NULL || g->marks == NULL || g->crossings == NULL || g->active == NULL)
        return grid_failed(g, sqlwasm_return_error("out of memory"));
    /* rows are visited in order; edges join the active list as rows reach
     * them and leave after their last row */
    qsort(g->edges, n, sizeof(grid_edge), compare_edge_lo);
    g->row = g->edges[0].lo;
    g->row_last = g->edges[0].hi;
    for (uint32_t i = 1; i < n; i++)
        if (g->edges[i].hi > g->row_last) g->row_last = g->edges[i].hi;
    return grid_handle(g);
}

static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* The columns edge e marks in the band row <= v < row + 1: 0 if it does not
 * meet the band, else 1 with the interval in *first .. *last. */
static int edge_columns(const grid_edge *e, int64_t row, int64_t *first, int64_t *last) {
    double lo = (double)row, hi = lo + 1.0;
    /* (ua, va) the lower end, (ub, vb) the upper */
    int up = e->v1 <= e->v2;
    double ua = up ? e->u1 : e->u2, va = up ? e->v1 : e->v2;
    double ub = up ? e->u2 : e->u1, vb = up ? e->v2 : e->v1;
    if (!(va < hi && vb >= lo)) return 0;
    double u0, u1;
    int open_end = 0;
    if (va == vb) {
        u0 = ua;
        u1 = ub;
    } else {
        double u_min = fmin(ua, ub), u_max = fmax(ua, ub);
        u0 = va >= lo ? ua : clamp(ua + (lo - va) * (ub - ua) / (vb - va), u_min, u_max);
        if (vb < hi) {
            u1 = ub;
        } else {
            u1 = clamp(ua + (hi - va) * (ub - ua) / (vb - va), u_min, u_max);
            open_end = 1;
        }
    }
    double a = fmin(u0, u1), b = fmax(u0, u1);
    *first = (int64_t)floor(a);
    *last = (int64_t)floor(b);
    if (open_end && u1 > u0 && u1 == floor(u1)) *last = (int64_t)u1 - 1;
    return 1;
}

static int compare_interval(const void *pa, const void *pb) {
    const int64_t *a = (const int64_t *)pa, *b = (const int64_t *)pb;
    return (a[0] > b[0]) - (a[0] < b[0]);
}

static int compare_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* Number of crossings (sorted, count of them) greater than u. */
static uint32_t crossings_after(const double *xs, uint32_t count, double u) {
    uint32_t lo = 0, hi = count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (xs[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    return count - lo;
}

/* Set up the spans of g->row (polygon mode). */
static void polygon_row(grid_cursor *g) {
    int64_t row = g->row;
    uint32_t marked = 0;
    for (uint32_t k = 0; k < g->active_count; k++)
        if (edge_columns(&g->edges[g->active[k]], row, &g->marks[2 * marked],
                         &g->marks[2 * marked + 1]))
            marked++;
    qsort(g->marks, marked, 2 * sizeof(int64_t), compare_interval);

    /* the ray crossings of the band's centre line */
    double pv = (double)row + 0.5;
    uint32_t crossing_count = 0; /* a crossing edge meets the row: it is active */
    for (uint32_t k = 0; k < g->active_count; k++) {
        const grid_edge *e = &g->edges[g->active[k]];
        if ((e->v1 > pv) != (e->v2 > pv))
            g->crossings[crossing_count++] = (e->u2 - e->u1) * (pv - e->v1) / (e->v2 - e->v1) + e->u1;
    }
    qsort(g->crossings, crossing_count, sizeof(double), compare_double);

    /* merge the marked intervals, adding the unmarked runs that are inside */
    uint32_t spans = 0;
    for (uint32_t i = 0; i < marked; i++) {
        int64_t first = g->marks[2 * i], last = g->marks[2 * i + 1];
        if (spans > 0 && first <= g->spans[2 * spans - 1] + 1) {
            if (last > g->spans[2 * spans - 1]) g->spans[2 * spans - 1] = last;
            continue;
        }
        if (spans > 0) {
            int64_t gap = g->spans[2 * spans - 1] + 1;
            if (crossings_after(g->crossings, crossing_count, (double)gap + 0.5) % 2 == 1) {
                g->spans[2 * spans - 1] = last; /* the gap is inside: one span */
                continue;
            }
        }
        g->spans[2 * spans] = first;
        g->spans[2 * spans + 1] = last;
        spans++;
    }
    g->span_count = spans;
}

/* Polygon mode: move to the next row that some edge meets (rows no edge
 * meets have no cells; between far-apart rings there may be 2^50 of them)
 * and update the active edges. 0 when no edge is left. */
static int polygon_next_edge_row(grid_cursor *g) {
    uint32_t kept = 0;
    for (uint32_t k = 0; k < g->active_count; k++)
        if (g->edges[g->active[k]].hi >= g->row) g->active[kept++] = g->active[k];
    g->active_count = kept;
    if (kept == 0) {
        if (g->next_edge == g->edge_count) return 0;
        if (g->edges[g->next_edge].lo > g->row) g->row = g->edges[g->next_edge].lo;
    }
    while (g->next_edge < g->edge_count && g->edges[g->next_edge].lo <= g->row) {
        if (g->edges[g->next_edge].hi >= g->row) g->active[g->active_count++] = g->next_edge;
        g->next_edge++;
    }
    return 1;
}

/* Move to the first cell of the next row that has any; 0 when none is left. */
static int grid_next_row(grid_cursor *g) {
    for (;;) {
        if (g->started) g->row++;
        g->started = 1;
        if (g->polygon && !polygon_next_edge_row(g)) {
            g->row = g->row_last + 1;
            return 0;
        }
        if (g->row > g->row_last) return 0;
        if (g->polygon) {
            polygon_row(g);
        } else {
            g->spans[0] = g->col_first;
            g->spans[1] = g->col_last;
            g->span_count = 1;
        }
        if (g->span_count > 0) {
            g->span_at = 0;
            g->col = g->spans[0];
            return 1;
        }
    }
}

/* Columns: lat_index, lon_index, min_lat, min_lon, max_lat, max_lon,
 * center_lat, center_lon. */
SQLWASM_EXPORT(grid_next)
int64_t grid_next(int32_t h) {
    grid_cursor *g = (grid_cursor *)sqlwasm_handle_get(h);
    if (g == NULL) return sqlwasm_return_error("no such table-function handle");
    if (g->error) return g->error;
    sqlwasm_batch b;
    sqlwasm_batch_begin(&b);
    uint64_t work = 0; /* edges visited setting up rows in this call */
    while (!sqlwasm_batch_full(&b)) {
        if (!g->started || g->span_at == g->span_count) {
            /* many long edges make rows costly: return what there is rather
             * than run into the time limit (a batch is never empty here) */
            if (b.rows > 0 && work >= GRID_WORK_PER_CALL) break;
            if (g->row > g->row_last || !grid_next_row(g)) break;
            work += g->active_count + 1;
        }
        double i = (double)g->row, j = (double)g->col, step = g->step;
        sqlwasm_batch_row(&b, 8);
        sqlwasm_write_int(&b.w, g->row);
        sqlwasm_write_int(&b.w, g->col);
        sqlwasm_write_double(&b.w, i * step);
        sqlwasm_write_double(&b.w, j * step);
        sqlwasm_write_double(&b.w, (i + 1.0) * step);
        sqlwasm_write_double(&b.w, (j + 1.0) * step);
        sqlwasm_write_double(&b.w, (i + 0.5) * step);
        sqlwasm_write_double(&b.w, (j + 0.5) * step);
        if (g->col < g->spans[2 * g->span_at + 1]) {
            g->col++;
        } else if (++g->span_at < g->span_count) {
            g->col = g->spans[2 * g->span_at];
        }
    }
    return sqlwasm_batch_finish(&b);
}

SQLWASM_EXPORT(grid_close)
void grid_close(int32_t h) {
    grid_cursor *g = (grid_cursor *)sqlwasm_handle_release(h);
    if (g != NULL) grid_free(g);
}
