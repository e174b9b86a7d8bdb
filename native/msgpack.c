/* msgpack.c: the msgpack ABI's pure encoder and decoder. Nothing here knows
   SQLite's context or a function: callers report the errors. */

/* ---------------------------------------------------------------- encode */

static size_t sw_int_size(int64_t i)
{
    if (i >= -32 && i <= 127) return 1;
    if (i >= 0) return i <= 0xff ? 2 : i <= 0xffff ? 3 : i <= 0xffffffffLL ? 5 : 9;
    return i >= INT8_MIN ? 2 : i >= INT16_MIN ? 3 : i >= INT32_MIN ? 5 : 9;
}

static size_t sw_cell_size(const sw_cell *c)
{
    switch (c->kind) {
    case SQLITE_INTEGER: return sw_int_size(c->i);
    case SQLITE_FLOAT: return 9;
    case SQLITE_TEXT: return (c->n < 32 ? 1 : c->n <= 0xff ? 2 : c->n <= 0xffff ? 3 : 5) + (size_t)c->n;
    case SQLITE_BLOB: return (c->n <= 0xff ? 2 : c->n <= 0xffff ? 3 : 5) + (size_t)c->n;
    default: return 1;
    }
}

static uint8_t *sw_put_be(uint8_t *out, uint64_t v, int bytes)
{
    for (int k = bytes - 1; k >= 0; k--)
        *out++ = (uint8_t)(v >> (8 * k));
    return out;
}

static uint8_t *sw_put_header(uint8_t *out, uint32_t n, uint8_t b8, uint8_t b16, uint8_t b32)
{
    if (n <= 0xff && b8) {
        *out++ = b8;
        return sw_put_be(out, n, 1);
    }
    if (n <= 0xffff) {
        *out++ = b16;
        return sw_put_be(out, n, 2);
    }
    *out++ = b32;
    return sw_put_be(out, n, 4);
}

static uint8_t *sw_put_cell(uint8_t *out, const sw_cell *c)
{
    switch (c->kind) {
    case SQLITE_INTEGER: {
        int64_t i = c->i;
        if (i >= -32 && i <= 127) {
            *out++ = (uint8_t)i;
            return out;
        }
        if (i >= 0) {
            if (i <= 0xff) { *out++ = 0xcc; return sw_put_be(out, (uint64_t)i, 1); }
            if (i <= 0xffff) { *out++ = 0xcd; return sw_put_be(out, (uint64_t)i, 2); }
            if (i <= 0xffffffffLL) { *out++ = 0xce; return sw_put_be(out, (uint64_t)i, 4); }
            *out++ = 0xd3;
            return sw_put_be(out, (uint64_t)i, 8);
        }
        if (i >= INT8_MIN) { *out++ = 0xd0; return sw_put_be(out, (uint64_t)i, 1); }
        if (i >= INT16_MIN) { *out++ = 0xd1; return sw_put_be(out, (uint64_t)i, 2); }
        if (i >= INT32_MIN) { *out++ = 0xd2; return sw_put_be(out, (uint64_t)i, 4); }
        *out++ = 0xd3;
        return sw_put_be(out, (uint64_t)i, 8);
    }
    case SQLITE_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &c->d, 8);
        *out++ = 0xcb;
        return sw_put_be(out, bits, 8);
    }
    case SQLITE_TEXT:
        if (c->n < 32)
            *out++ = (uint8_t)(0xa0 | c->n);
        else
            out = sw_put_header(out, c->n, 0xd9, 0xda, 0xdb);
        memcpy(out, c->p, c->n);
        return out + c->n;
    case SQLITE_BLOB:
        out = sw_put_header(out, c->n, 0xc4, 0xc5, 0xc6);
        memcpy(out, c->p, c->n);
        return out + c->n;
    default:
        *out++ = 0xc0;
        return out;
    }
}

/* ---------------------------------------------------------------- decode */

/* A bounds-checked reader over the guest's result. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} sw_reader;

static int sw_take(sw_reader *r, size_t n, const uint8_t **out)
{
    if ((size_t)(r->end - r->p) < n)
        return 0;
    *out = r->p;
    r->p += n;
    return 1;
}

static int sw_take_be(sw_reader *r, int bytes, uint64_t *out)
{
    const uint8_t *b;
    if (!sw_take(r, (size_t)bytes, &b))
        return 0;
    uint64_t v = 0;
    for (int k = 0; k < bytes; k++)
        v = (v << 8) | b[k];
    *out = v;
    return 1;
}

static int sw_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

/* Reads a str header (fixstr, str8/16/32); returns 0 if the next value is not a str. */
static int sw_read_str(sw_reader *r, const uint8_t **s, uint32_t *n)
{
    uint64_t len;
    const uint8_t *tag;
    if (!sw_take(r, 1, &tag))
        return 0;
    if ((*tag & 0xe0) == 0xa0)
        len = *tag & 0x1f;
    else if (*tag == 0xd9 || *tag == 0xda || *tag == 0xdb) {
        if (!sw_take_be(r, 1 << (*tag - 0xd9), &len))
            return 0;
    } else
        return 0;
    if (!sw_take(r, (size_t)len, s))
        return 0;
    *n = (uint32_t)len;
    return 1;
}


/* Why a guest's msgpack result was refused; detail says more for some. */
typedef enum {
    SW_DECODE_OK = 0,
    SW_DECODE_TRUNCATED,
    SW_DECODE_TRAILING,    /* detail: how many bytes follow the value */
    SW_DECODE_NOT_STATUS,  /* status_only, and the value is not a map */
    SW_DECODE_INT_RANGE,   /* detail: the unsigned integer over INT64_MAX */
    SW_DECODE_TEXT_UTF8,   /* a str that is not valid UTF-8 */
    SW_DECODE_BAD_MAP,     /* a map other than {"error": text} */
    SW_DECODE_ERROR_UTF8,  /* {"error": text} whose text is not valid UTF-8 */
    SW_DECODE_UNSUPPORTED, /* detail: the type byte */
} sw_decode_status;

static int sw_is_map_tag(uint8_t t) { return t == 0x81 || t == 0xde || t == 0xdf; }

/* Reads one msgpack value from r into out: an integer (bool as 0 or 1), a
   real (float32 widened), text (valid UTF-8), a blob, nil, or a guest error
   {"error": text} (kind SW_VALUE_GUEST_ERROR). With status_only (a step's
   status) only the error map is acceptable. Text and blobs point into the
   reader's bytes. */
static sw_decode_status sw_msgpack_value(sw_reader *rp, int status_only, sw_cell *out, uint64_t *detail)
{
    sw_reader r = *rp;
    const uint8_t *tag;
    uint64_t u;
    out->kind = SQLITE_NULL;
    out->p = NULL;
    out->n = 0;
    if (!sw_take(&r, 1, &tag))
        return SW_DECODE_TRUNCATED;
    uint8_t t = *tag;
    if (status_only && !sw_is_map_tag(t))
        return SW_DECODE_NOT_STATUS;
    if (t <= 0x7f || t >= 0xe0) {
        out->kind = SQLITE_INTEGER;
        out->i = (int8_t)t;
    } else if (t == 0xc0) {
        out->kind = SQLITE_NULL;
    } else if (t == 0xc2 || t == 0xc3) {
        out->kind = SQLITE_INTEGER;
        out->i = t == 0xc3;
    } else if (t >= 0xcc && t <= 0xcf) {
        if (!sw_take_be(&r, 1 << (t - 0xcc), &u))
            return SW_DECODE_TRUNCATED;
        if (u > INT64_MAX) {
            *detail = u;
            return SW_DECODE_INT_RANGE;
        }
        out->kind = SQLITE_INTEGER;
        out->i = (int64_t)u;
    } else if (t >= 0xd0 && t <= 0xd3) {
        int bytes_n = 1 << (t - 0xd0);
        if (!sw_take_be(&r, bytes_n, &u))
            return SW_DECODE_TRUNCATED;
        int shift = 64 - 8 * bytes_n; /* sign-extend */
        out->kind = SQLITE_INTEGER;
        out->i = shift ? (int64_t)(u << shift) >> shift : (int64_t)u;
    } else if (t == 0xca) {
        if (!sw_take_be(&r, 4, &u))
            return SW_DECODE_TRUNCATED;
        uint32_t bits = (uint32_t)u;
        float fl;
        memcpy(&fl, &bits, 4);
        out->kind = SQLITE_FLOAT;
        out->d = fl;
    } else if (t == 0xcb) {
        if (!sw_take_be(&r, 8, &u))
            return SW_DECODE_TRUNCATED;
        memcpy(&out->d, &u, 8);
        out->kind = SQLITE_FLOAT;
    } else if ((t & 0xe0) == 0xa0 || (t >= 0xd9 && t <= 0xdb)) {
        const uint8_t *bytes;
        r.p--;
        if (!sw_read_str(&r, &bytes, &out->n))
            return SW_DECODE_TRUNCATED;
        if (!sw_utf8_valid(bytes, out->n))
            return SW_DECODE_TEXT_UTF8;
        out->kind = SQLITE_TEXT;
        out->p = bytes;
    } else if (t >= 0xc4 && t <= 0xc6) {
        const uint8_t *bytes;
        if (!sw_take_be(&r, 1 << (t - 0xc4), &u) || !sw_take(&r, (size_t)u, &bytes))
            return SW_DECODE_TRUNCATED;
        out->kind = SQLITE_BLOB;
        out->p = bytes;
        out->n = (uint32_t)u;
    } else if (sw_is_map_tag(t)) {
        /* Only {"error": "message"} is a valid map. */
        if (t != 0x81) {
            if (!sw_take_be(&r, t == 0xde ? 2 : 4, &u))
                return SW_DECODE_TRUNCATED;
            if (u != 1)
                return SW_DECODE_BAD_MAP;
        }
        const uint8_t *key, *msg;
        uint32_t key_len, msg_len;
        if (!sw_read_str(&r, &key, &key_len) || key_len != 5 || memcmp(key, "error", 5) != 0)
            return SW_DECODE_BAD_MAP;
        if (!sw_read_str(&r, &msg, &msg_len))
            return SW_DECODE_BAD_MAP;
        if (!sw_utf8_valid(msg, msg_len))
            return SW_DECODE_ERROR_UTF8;
        out->kind = SW_VALUE_GUEST_ERROR;
        out->p = msg;
        out->n = msg_len;
    } else {
        *detail = t;
        return SW_DECODE_UNSUPPORTED;
    }
    *rp = r;
    return SW_DECODE_OK;
}

/* Decodes the one msgpack value that must fill p[0..n) (see sw_msgpack_value). */
static sw_decode_status sw_msgpack_decode(const uint8_t *p, uint32_t n, int status_only, sw_cell *out,
                                          uint64_t *detail)
{
    sw_reader r = {p, p + n};
    sw_decode_status status = sw_msgpack_value(&r, status_only, out, detail);
    if (status == SW_DECODE_OK && r.p != r.end) {
        *detail = (uint64_t)(r.end - r.p);
        return SW_DECODE_TRAILING;
    }
    return status;
}

/* Reads an array header (fixarray, array 16 or array 32): 1, or 0 when the
   next value is not an array or is truncated. */
static int sw_msgpack_array(sw_reader *r, uint32_t *count)
{
    const uint8_t *tag;
    uint64_t u;
    sw_reader peek = *r;
    if (!sw_take(&peek, 1, &tag))
        return 0;
    if ((*tag & 0xf0) == 0x90) {
        *count = *tag & 0x0f;
    } else if (*tag == 0xdc || *tag == 0xdd) {
        if (!sw_take_be(&peek, *tag == 0xdc ? 2 : 4, &u))
            return 0;
        *count = (uint32_t)u;
    } else {
        return 0;
    }
    *r = peek;
    return 1;
}
