/*
 * sqlwasm.h - guest-side SDK for sqlwasm extension modules (header-only).
 *
 * Include this header in exactly ONE .c file of a module: it defines the
 * exported sqlwasm_alloc() and the state of the per-call arena.
 *
 * Build a module (a WASI "reactor" with no imports; `sqlwasm build` does this):
 *
 *   python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 -s \
 *       -Wl,-z,stack-size=262144 -Wl,--export=__stack_pointer -I extensions/sdk my_module.c -o my_module.wasm
 *
 * Calling conventions (the "abi" of a function in the module's manifest):
 *
 *   raw      The export takes one int64_t per SQL integer argument and one
 *            double per SQL real argument, and returns one int64_t or double.
 *            Use it for numeric functions declared null = "strict".
 *
 *   msgpack  The host gets an argument buffer from sqlwasm_alloc(len) and
 *            keeps reusing it while rows fit (docs/abi.md). Per SQL call it
 *            writes the argument row there as ONE msgpack array (elements:
 *            nil, int, float64, str, bin) and calls export(ptr, len). The
 *            export returns sqlwasm_result(ptr, len) of ONE msgpack value:
 *            nil, int, float, str, bin or bool, or the map {"error": "text"},
 *            which makes the SQL call fail with that text. The result may
 *            live in the arena: it stays valid until the next call.
 *
 * Example (a raw function and a msgpack function):
 *
 *   #include "sqlwasm.h"
 *
 *   SQLWASM_EXPORT(add) int64_t add(int64_t a, int64_t b) { return a + b; }
 *
 *   SQLWASM_EXPORT(greet) int64_t greet(const uint8_t *row, uint32_t len) {
 *       sqlwasm_arg a[1];
 *       int64_t err;
 *       if (!sqlwasm_read_args(row, len, "t", a, &err)) return err;
 *       return sqlwasm_return_textf("hello, %.*s", (int)a[0].len, a[0].text);
 *   }
 *
 * A msgpack export's parameters are declared as (const uint8_t *, uint32_t):
 * on wasm32 a pointer is an i32, so this matches the host's (i32, i32).
 *
 * API summary:
 *   args     sqlwasm_read_args(row, len, sig, out, &err): the whole argument
 *            row checked against a signature, one letter per argument:
 *            'r' real (an integer is accepted), 'i' integer (a real with an
 *            integral value is accepted), 't' text, 'b' blob; each value
 *            lands in a sqlwasm_arg (.real, .integer, .text / .blob + .len,
 *            pointing into the row). On a malformed row, a wrong count or a
 *            wrong type it returns 0 and *err holds the {"error": ...}
 *            result to return. It starts the reader, so the arena resets.
 *   arena    sqlwasm_arena_alloc(n): 8-aligned memory valid until the next
 *            call (NULL when out of memory). The arena resets by itself when
 *            an export reads the host's argument row; an export that reads
 *            no row (an aggregate's final or value) calls
 *            sqlwasm_arena_reset() first, or the arena keeps growing.
 *   reader   sqlwasm_reader_init, sqlwasm_peek (-> SQLWASM_NIL, _BOOL, _INT,
 *            _FLOAT, _STR, _BIN, _ARRAY, _MAP, _OTHER, or _END at the end),
 *            sqlwasm_read_array / _map (-> count), _int, _double (floats and
 *            ints), _str / _bin (pointer into the input + length, no copy),
 *            _nil, _bool, sqlwasm_skip, sqlwasm_reader_done (all consumed,
 *            no error), sqlwasm_type_name (for messages).
 *            Every read is bounds-checked: after any error (truncated input,
 *            wrong type, uint64 above INT64_MAX) the sticky flag r.error is
 *            set and later reads return 0 / NULL without advancing, so check
 *            it once before using the values. A wrong-type read consumes
 *            nothing.
 *   writer   sqlwasm_writer_init, sqlwasm_write_nil / _bool / _int / _double
 *            / _str / _cstr / _bin / _array / _map, sqlwasm_writer_finish
 *            (-> the export's result; {"error": "out of memory"} on failure).
 *   results  sqlwasm_return_nil / _int / _double / _bool / _text / _cstring
 *            / _blob / _error / _error_n, and printf-style sqlwasm_return_textf
 *            and sqlwasm_return_errorf.
 *   tables   sqlwasm_handle_new / _get / _release and the row batches
 *            sqlwasm_batch_begin / _row / _full / _finish, for table
 *            functions: see "Table functions" below.
 *
 *   aggregates  SQLWASM_RAW_STEP(step, step_batch, add_row, types...): a
 *            raw aggregate's step and batched step from one function: see
 *            "Raw aggregates with a batched step" below.
 *
 * Imports: a module may import only what a capability its manifest declares
 * provides (clock: time(), clock(); random: arc4random(), getentropy()).
 * Files, getenv and exit() import WASI functions no capability provides, and
 * stdio (printf, puts) imports fd_write and others: `sqlwasm build` refuses
 * a module whose imports its manifest does not cover, naming the call.
 * snprintf into a buffer, malloc, string.h, math.h, qsort, rand() and
 * abort() (a trap) need no import. docs/sdk-c.md has the list.
 */
#ifndef SQLWASM_H
#define SQLWASM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Slow paths: kept out of line; unused ones draw no warning. */
#define SQLWASM__SLOW static __attribute__((noinline, unused))

/* Export a C function from the module under `name`. */
#define SQLWASM_EXPORT(name) __attribute__((export_name(#name)))

/* Pack a msgpack result living at p (len bytes) as the export's i64 result. */
static inline int64_t sqlwasm_result(const void *p, uint32_t len) {
    return (int64_t)(((uint64_t)(uintptr_t)p << 32) | (uint64_t)len);
}

/* ------------------------------------------------------------------------
 * Per-call arena
 *
 * A list of malloc'd chunks, oldest first. Allocation bumps an offset in the
 * current chunk and never moves earlier allocations. When the current chunk
 * is full, the arena moves on to the next kept chunk that is big enough, or
 * mallocs a new one at the end of the list. The arena is reset at the start
 * of every call, when the export begins reading the row the host passed it
 * (sqlwasm_reader_init on the argument buffer): back to the first chunk,
 * everything kept. So after the first few calls the arena does no malloc at
 * all. Only if the chunks add up to more than SQLWASM_ARENA_RETAIN are they
 * all freed.
 * ------------------------------------------------------------------------ */

#ifndef SQLWASM_ARENA_MIN_BLOCK
#define SQLWASM_ARENA_MIN_BLOCK (64u * 1024u) /* smallest block we malloc */
#endif
#ifndef SQLWASM_ARENA_RETAIN
#define SQLWASM_ARENA_RETAIN (16u * 1024u * 1024u) /* keep at most this much */
#endif
/* Bytes of each block lost to malloc's bookkeeping and our chunk header.
 * Blocks are malloc'd as (power of two - slack): the wasm32 malloc of
 * zig's libc rounds every block up to a power of two, so nothing is wasted
 * there, and other allocators lose little. */
#define SQLWASM_ARENA_SLACK 64u

typedef struct sqlwasm_chunk {
    struct sqlwasm_chunk *next; /* newer chunk, or NULL */
    size_t size;                /* usable bytes after the header */
} sqlwasm_chunk;

/* Header padded to 16 bytes so chunk data keeps malloc's alignment. */
#define SQLWASM_CHUNK_HEADER ((sizeof(sqlwasm_chunk) + 15u) & ~(size_t)15u)

static struct {
    sqlwasm_chunk *first; /* oldest chunk */
    sqlwasm_chunk *last;  /* newest chunk */
    sqlwasm_chunk *cur;   /* chunk being bumped, or NULL */
    uint8_t *base;        /* data of cur */
    size_t used;          /* bytes used in cur */
    size_t cap;           /* usable bytes in cur */
    size_t total;         /* usable bytes over all chunks */
} sqlwasm_arena_state;

#define SQLWASM__CHUNK_DATA(c) ((uint8_t *)(c) + SQLWASM_CHUNK_HEADER)

/* Usable bytes of the smallest block (power of two) holding n, or 0. */
static inline size_t sqlwasm__chunk_size(size_t n) {
    size_t block = SQLWASM_ARENA_MIN_BLOCK;
    while (block - SQLWASM_ARENA_SLACK < n) {
        if (block > SIZE_MAX / 2) return 0;
        block *= 2;
    }
    return block - SQLWASM_ARENA_SLACK;
}

/* Make c the current chunk and take its first n bytes. */
static inline void *sqlwasm__arena_enter(sqlwasm_chunk *c, size_t n) {
    sqlwasm_arena_state.cur = c;
    sqlwasm_arena_state.base = SQLWASM__CHUNK_DATA(c);
    sqlwasm_arena_state.cap = c->size;
    sqlwasm_arena_state.used = n;
    return sqlwasm_arena_state.base;
}

/* Slow path: the current chunk is full. Use the next kept chunk that holds
 * n bytes, or malloc one at least as big as the current chunk. */
SQLWASM__SLOW void *sqlwasm_arena_grow(size_t n) {
    sqlwasm_chunk *c = sqlwasm_arena_state.cur ? sqlwasm_arena_state.cur->next
                                               : sqlwasm_arena_state.first;
    for (; c != NULL; c = c->next)
        if (c->size >= n) return sqlwasm__arena_enter(c, n);

    size_t hint = sqlwasm_arena_state.cap;
    if (hint > SQLWASM_ARENA_RETAIN / 2) hint = SQLWASM_ARENA_RETAIN / 2;
    size_t size = sqlwasm__chunk_size(hint > n ? hint : n);
    c = size ? (sqlwasm_chunk *)malloc(SQLWASM_CHUNK_HEADER + size) : NULL;
    if (c == NULL && hint > n) { /* retry with just what is needed */
        size = sqlwasm__chunk_size(n);
        c = size ? (sqlwasm_chunk *)malloc(SQLWASM_CHUNK_HEADER + size) : NULL;
    }
    if (c == NULL) return NULL;
    c->next = NULL;
    c->size = size;
    if (sqlwasm_arena_state.last) sqlwasm_arena_state.last->next = c;
    else sqlwasm_arena_state.first = c;
    sqlwasm_arena_state.last = c;
    sqlwasm_arena_state.total += size;
    return sqlwasm__arena_enter(c, n);
}

/* Allocate n bytes, 8-aligned, valid until the next call. NULL on failure. */
static inline void *sqlwasm_arena_alloc(size_t n) {
    size_t off = (sqlwasm_arena_state.used + 7u) & ~(size_t)7u;
    if (off <= sqlwasm_arena_state.cap && n <= sqlwasm_arena_state.cap - off) {
        sqlwasm_arena_state.used = off + n;
        return sqlwasm_arena_state.base + off;
    }
    return sqlwasm_arena_grow(n);
}

/* Release everything allocated during the previous call. */
static inline void sqlwasm_arena_reset(void) {
    if (sqlwasm_arena_state.total > SQLWASM_ARENA_RETAIN) {
        sqlwasm_chunk *c = sqlwasm_arena_state.first;
        while (c != NULL) {
            sqlwasm_chunk *next = c->next;
            free(c);
            c = next;
        }
        memset(&sqlwasm_arena_state, 0, sizeof sqlwasm_arena_state);
    } else if (sqlwasm_arena_state.first != NULL) {
        sqlwasm__arena_enter(sqlwasm_arena_state.first, 0);
    }
}

/* The argument buffer: separate from the arena, because the host keeps
 * writing rows into it, call after call, until it asks for a bigger one. */
static struct {
    uint8_t *buf;
    size_t cap;
} sqlwasm_args_state;

/* Exported: an 8-aligned buffer of at least len bytes for the host to write
 * argument rows into (0 on failure). It stays put until the next call of
 * sqlwasm_alloc, which replaces it. */
__attribute__((export_name("sqlwasm_alloc"))) void *sqlwasm_alloc(int32_t len) {
    if (len < 0) return NULL;
    size_t want = len ? (size_t)len : 1; /* never 0 for len 0 */
    if (want > sqlwasm_args_state.cap) {
        free(sqlwasm_args_state.buf);
        sqlwasm_args_state.buf = (uint8_t *)malloc(want);
        sqlwasm_args_state.cap = sqlwasm_args_state.buf ? want : 0;
    }
    return sqlwasm_args_state.buf;
}

/* ------------------------------------------------------------------------
 * msgpack reader
 * ------------------------------------------------------------------------ */

/* Type of the next value, as told by sqlwasm_peek(). */
typedef enum {
    SQLWASM_END = 0, /* no more input, or the reader is in error */
    SQLWASM_NIL,
    SQLWASM_BOOL,
    SQLWASM_INT,
    SQLWASM_FLOAT,
    SQLWASM_STR,
    SQLWASM_BIN,
    SQLWASM_ARRAY,
    SQLWASM_MAP,
    SQLWASM_OTHER /* ext types and the unused byte 0xc1 */
} sqlwasm_type;

typedef struct {
    const uint8_t *p; /* input */
    uint32_t len;     /* input length */
    uint32_t pos;     /* offset of the next byte to read */
    int error;        /* sticky: nonzero once anything went wrong */
} sqlwasm_reader;

/* Start reading p. Reading the host's argument buffer means a new call has
 * begun: the previous call's arena allocations (its result) are released. */
static inline void sqlwasm_reader_init(sqlwasm_reader *r, const uint8_t *p, uint32_t len) {
    if (p != NULL && p == sqlwasm_args_state.buf) sqlwasm_arena_reset();
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->error = (p == NULL && len != 0);
}

/* True when all input was consumed without error. */
static inline int sqlwasm_reader_done(const sqlwasm_reader *r) {
    return !r->error && r->pos == r->len;
}

/* Human-readable name of a type, for error messages. */
static inline const char *sqlwasm_type_name(sqlwasm_type t) {
    switch (t) {
    case SQLWASM_NIL: return "null";
    case SQLWASM_BOOL: return "boolean";
    case SQLWASM_INT: return "integer";
    case SQLWASM_FLOAT: return "real";
    case SQLWASM_STR: return "text";
    case SQLWASM_BIN: return "blob";
    case SQLWASM_ARRAY: return "array";
    case SQLWASM_MAP: return "map";
    case SQLWASM_OTHER: return "extension value";
    default: return "nothing";
    }
}

static inline sqlwasm_type sqlwasm_peek(const sqlwasm_reader *r) {
    if (r->error || r->pos >= r->len) return SQLWASM_END;
    uint8_t b = r->p[r->pos];
    if (b <= 0x7f || b >= 0xe0) return SQLWASM_INT;
    if (b <= 0x8f) return SQLWASM_MAP;
    if (b <= 0x9f) return SQLWASM_ARRAY;
    if (b <= 0xbf) return SQLWASM_STR;
    switch (b) {
    case 0xc0: return SQLWASM_NIL;
    case 0xc2: case 0xc3: return SQLWASM_BOOL;
    case 0xc4: case 0xc5: case 0xc6: return SQLWASM_BIN;
    case 0xca: case 0xcb: return SQLWASM_FLOAT;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return SQLWASM_INT;
    case 0xd9: case 0xda: case 0xdb: return SQLWASM_STR;
    case 0xdc: case 0xdd: return SQLWASM_ARRAY;
    case 0xde: case 0xdf: return SQLWASM_MAP;
    default: return SQLWASM_OTHER;
    }
}

/* Consume n bytes; returns a pointer to them, or NULL (and sets the error). */
static inline const uint8_t *sqlwasm__take(sqlwasm_reader *r, uint32_t n) {
    if (r->error || n > r->len - r->pos) {
        r->error = 1;
        return NULL;
    }
    const uint8_t *q = r->p + r->pos;
    r->pos += n;
    return q;
}

/* Read an n-byte big-endian unsigned integer (n = 1, 2, 4 or 8). */
static inline uint64_t sqlwasm__be(sqlwasm_reader *r, uint32_t n) {
    const uint8_t *q = sqlwasm__take(r, n);
    uint64_t v = 0;
    if (q != NULL)
        for (uint32_t i = 0; i < n; i++) v = (v << 8) | q[i];
    return v;
}

/* Consume the tag byte; returns it, or -1 (error) at end of input. */
static inline int sqlwasm__tag(sqlwasm_reader *r) {
    const uint8_t *q = sqlwasm__take(r, 1);
    return q ? *q : -1;
}

/* Mark a type error: rewind over the tag so nothing is consumed. */
static inline void sqlwasm__mismatch(sqlwasm_reader *r) {
    if (!r->error) r->pos--;
    r->error = 1;
}

/* Read an array header; returns the element count. */
static inline uint32_t sqlwasm_read_array(sqlwasm_reader *r) {
    int t = sqlwasm__tag(r);
    if (t >= 0x90 && t <= 0x9f) return (uint32_t)t & 0x0f;
    if (t == 0xdc) return (uint32_t)sqlwasm__be(r, 2);
    if (t == 0xdd) return (uint32_t)sqlwasm__be(r, 4);
    sqlwasm__mismatch(r);
    return 0;
}

/* Read a map header; returns the number of key/value pairs. */
static inline uint32_t sqlwasm_read_map(sqlwasm_reader *r) {
    int t = sqlwasm__tag(r);
    if (t >= 0x80 && t <= 0x8f) return (uint32_t)t & 0x0f;
    if (t == 0xde) return (uint32_t)sqlwasm__be(r, 2);
    if (t == 0xdf) return (uint32_t)sqlwasm__be(r, 4);
    sqlwasm__mismatch(r);
    return 0;
}

/* Read an integer of any encoding; a uint64 above INT64_MAX is an error. */
static inline int64_t sqlwasm_read_int(sqlwasm_reader *r) {
    int t = sqlwasm__tag(r);
    if (t < 0) return 0;
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return (int64_t)t - 256;
    switch (t) {
    case 0xcc: return (int64_t)sqlwasm__be(r, 1);
    case 0xcd: return (int64_t)sqlwasm__be(r, 2);
    case 0xce: return (int64_t)sqlwasm__be(r, 4);
    case 0xcf: {
        uint64_t v = sqlwasm__be(r, 8);
        if (v > (uint64_t)INT64_MAX) {
            r->error = 1;
            return 0;
        }
        return (int64_t)v;
    }
    case 0xd0: return (int8_t)sqlwasm__be(r, 1);
    case 0xd1: return (int16_t)sqlwasm__be(r, 2);
    case 0xd2: return (int32_t)sqlwasm__be(r, 4);
    case 0xd3: return (int64_t)sqlwasm__be(r, 8);
    }
    sqlwasm__mismatch(r);
    return 0;
}

/* Read a float32/float64 (bits preserved for float64) or any integer. */
static inline double sqlwasm_read_double(sqlwasm_reader *r) {
    sqlwasm_type t = sqlwasm_peek(r);
    if (t == SQLWASM_INT) return (double)sqlwasm_read_int(r);
    int tag = sqlwasm__tag(r);
    if (tag == 0xcb) {
        uint64_t bits = sqlwasm__be(r, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        return d;
    }
    if (tag == 0xca) {
        uint32_t bits = (uint32_t)sqlwasm__be(r, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
        return (double)f;
    }
    if (tag >= 0) sqlwasm__mismatch(r);
    return 0.0;
}

/* Read a str: returns a pointer into the input (NOT NUL-terminated) and
 * stores its byte length in *len. NULL on error. */
static inline const char *sqlwasm_read_str(sqlwasm_reader *r, uint32_t *len) {
    int t = sqlwasm__tag(r);
    uint32_t n;
    if (t >= 0xa0 && t <= 0xbf) n = (uint32_t)t & 0x1f;
    else if (t == 0xd9) n = (uint32_t)sqlwasm__be(r, 1);
    else if (t == 0xda) n = (uint32_t)sqlwasm__be(r, 2);
    else if (t == 0xdb) n = (uint32_t)sqlwasm__be(r, 4);
    else {
        if (t >= 0) sqlwasm__mismatch(r);
        *len = 0;
        return NULL;
    }
    const char *s = (const char *)sqlwasm__take(r, n);
    *len = s ? n : 0;
    return s;
}

/* Read a bin: pointer into the input plus length. NULL on error. */
static inline const uint8_t *sqlwasm_read_bin(sqlwasm_reader *r, uint32_t *len) {
    int t = sqlwasm__tag(r);
    uint32_t n;
    if (t == 0xc4) n = (uint32_t)sqlwasm__be(r, 1);
    else if (t == 0xc5) n = (uint32_t)sqlwasm__be(r, 2);
    else if (t == 0xc6) n = (uint32_t)sqlwasm__be(r, 4);
    else {
        if (t >= 0) sqlwasm__mismatch(r);
        *len = 0;
        return NULL;
    }
    const uint8_t *b = sqlwasm__take(r, n);
    *len = b ? n : 0;
    /* A zero-length bin at the very end still gets a valid pointer. */
    return b;
}

static inline void sqlwasm_read_nil(sqlwasm_reader *r) {
    int t = sqlwasm__tag(r);
    if (t >= 0 && t != 0xc0) sqlwasm__mismatch(r);
}

static inline int sqlwasm_read_bool(sqlwasm_reader *r) {
    int t = sqlwasm__tag(r);
    if (t == 0xc2 || t == 0xc3) return t == 0xc3;
    if (t >= 0) sqlwasm__mismatch(r);
    return 0;
}

/* Skip one complete value (arrays and maps included), without recursion:
 * `pending` counts values still to skip. Every step consumes at least one
 * byte, so hostile headers cannot make this loop run past the input. */
static inline void sqlwasm_skip(sqlwasm_reader *r) {
    uint64_t pending = 1;
    while (pending > 0 && !r->error) {
        pending--;
        int t = sqlwasm__tag(r);
        if (t < 0) return;
        uint64_t skip = 0; /* payload bytes after the header */
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
            /* single-byte values */
        } else if (t <= 0x8f) {
            pending += 2u * ((uint32_t)t & 0x0f);
        } else if (t <= 0x9f) {
            pending += (uint32_t)t & 0x0f;
        } else if (t <= 0xbf) {
            skip = (uint32_t)t & 0x1f;
        } else {
            switch (t) {
            case 0xc4: case 0xd9: skip = sqlwasm__be(r, 1); break;
            case 0xc5: case 0xda: skip = sqlwasm__be(r, 2); break;
            case 0xc6: case 0xdb: skip = sqlwasm__be(r, 4); break;
            case 0xc7: skip = sqlwasm__be(r, 1) + 1; break; /* ext8: +type */
            case 0xc8: skip = sqlwasm__be(r, 2) + 1; break;
            case 0xc9: skip = sqlwasm__be(r, 4) + 1; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break; /* fixext: type + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: pending += sqlwasm__be(r, 2); break;
            case 0xdd: pending += sqlwasm__be(r, 4); break;
            case 0xde: pending += 2 * sqlwasm__be(r, 2); break;
            case 0xdf: pending += 2 * sqlwasm__be(r, 4); break;
            default: r->error = 1; return; /* 0xc1: never used */
            }
        }
        if (r->error) return;
        if (skip > (uint64_t)(r->len - r->pos)) r->error = 1;
        else r->pos += (uint32_t)skip;
    }
}

/* ------------------------------------------------------------------------
 * msgpack writer (into arena memory, growing as needed)
 * ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *buf;
    uint32_t len;
    uint32_t cap;
    int error; /* sticky: out of memory */
} sqlwasm_writer;

/* {"error": "out of memory"}: static, so it needs no allocation. */
static const uint8_t sqlwasm__oom_result[] = {
    0x81, 0xa5, 'e', 'r', 'r', 'o', 'r',
    0xad, 'o', 'u', 't', ' ', 'o', 'f', ' ', 'm', 'e', 'm', 'o', 'r', 'y'};
static const uint8_t sqlwasm__nil_result[] = {0xc0};

static inline void sqlwasm_writer_init(sqlwasm_writer *w, uint32_t initial_cap) {
    if (initial_cap < 16) initial_cap = 16;
    w->buf = (uint8_t *)sqlwasm_arena_alloc(initial_cap);
    w->len = 0;
    w->cap = w->buf ? initial_cap : 0;
    w->error = (w->buf == NULL);
}

/* Make room for n more bytes. If the buffer is the arena's latest allocation
 * it grows in place; otherwise it moves to a bigger arena block. */
SQLWASM__SLOW int sqlwasm__writer_reserve_slow(sqlwasm_writer *w, uint32_t n) {
    if (w->error) return 0;
    uint64_t need = (uint64_t)w->len + n;
    if (need > UINT32_MAX) {
        w->error = 1;
        return 0;
    }
    uint64_t cap = (uint64_t)w->cap * 2;
    if (cap < need) cap = need;
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    uint8_t *end = w->buf + w->cap;
    if (w->buf != NULL && end == sqlwasm_arena_state.base + sqlwasm_arena_state.used &&
        cap - w->cap <= sqlwasm_arena_state.cap - sqlwasm_arena_state.used) {
        sqlwasm_arena_state.used += (size_t)(cap - w->cap);
        w->cap = (uint32_t)cap;
        return 1;
    }
    uint8_t *nb = (uint8_t *)sqlwasm_arena_alloc((size_t)cap);
    if (nb == NULL && cap > need) nb = (uint8_t *)sqlwasm_arena_alloc((size_t)(cap = need));
    if (nb == NULL) {
        w->error = 1;
        return 0;
    }
    if (w->len) memcpy(nb, w->buf, w->len);
    w->buf = nb;
    w->cap = (uint32_t)cap;
    return 1;
}

/* Returns a pointer where n bytes may be written, and counts them as used. */
static inline uint8_t *sqlwasm__put(sqlwasm_writer *w, uint32_t n) {
    if (n > w->cap - w->len && !sqlwasm__writer_reserve_slow(w, n)) return NULL;
    uint8_t *q = w->buf + w->len;
    w->len += n;
    return q;
}

/* Write tag then an n-byte big-endian value. */
static inline void sqlwasm__put_be(sqlwasm_writer *w, uint8_t tag, uint64_t v, uint32_t n) {
    uint8_t *q = sqlwasm__put(w, 1 + n);
    if (q == NULL) return;
    q[0] = tag;
    for (uint32_t i = n; i > 0; i--, v >>= 8) q[i] = (uint8_t)v;
}

static inline void sqlwasm_write_nil(sqlwasm_writer *w) {
    uint8_t *q = sqlwasm__put(w, 1);
    if (q) *q = 0xc0;
}

static inline void sqlwasm_write_bool(sqlwasm_writer *w, int v) {
    uint8_t *q = sqlwasm__put(w, 1);
    if (q) *q = v ? 0xc3 : 0xc2;
}

/* Integer in its smallest encoding. */
static inline void sqlwasm_write_int(sqlwasm_writer *w, int64_t v) {
    if (v >= -32 && v <= 127) {
        uint8_t *q = sqlwasm__put(w, 1);
        if (q) *q = (uint8_t)v;
    } else if (v >= 0) {
        if (v <= 0xff) sqlwasm__put_be(w, 0xcc, (uint64_t)v, 1);
        else if (v <= 0xffff) sqlwasm__put_be(w, 0xcd, (uint64_t)v, 2);
        else if (v <= 0xffffffffll) sqlwasm__put_be(w, 0xce, (uint64_t)v, 4);
        else sqlwasm__put_be(w, 0xcf, (uint64_t)v, 8);
    } else {
        if (v >= INT8_MIN) sqlwasm__put_be(w, 0xd0, (uint64_t)v, 1);
        else if (v >= INT16_MIN) sqlwasm__put_be(w, 0xd1, (uint64_t)v, 2);
        else if (v >= INT32_MIN) sqlwasm__put_be(w, 0xd2, (uint64_t)v, 4);
        else sqlwasm__put_be(w, 0xd3, (uint64_t)v, 8);
    }
}

/* Always float64, bits preserved (NaN payloads, -0.0). */
static inline void sqlwasm_write_double(sqlwasm_writer *w, double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    sqlwasm__put_be(w, 0xcb, bits, 8);
}

/* Header for a str/bin of n bytes, then the bytes. */
static inline void sqlwasm__write_bytes(sqlwasm_writer *w, uint8_t t8, uint8_t t16,
                                        uint8_t t32, const void *p, uint32_t n) {
    if (n <= 0xff) sqlwasm__put_be(w, t8, n, 1);
    else if (n <= 0xffff) sqlwasm__put_be(w, t16, n, 2);
    else sqlwasm__put_be(w, t32, n, 4);
    uint8_t *q = sqlwasm__put(w, n);
    if (q && n) memcpy(q, p, n);
}

static inline void sqlwasm_write_str(sqlwasm_writer *w, const char *s, uint32_t n) {
    if (n < 32) {
        uint8_t *q = sqlwasm__put(w, 1 + n);
        if (q == NULL) return;
        q[0] = (uint8_t)(0xa0 | n);
        if (n) memcpy(q + 1, s, n);
        return;
    }
    sqlwasm__write_bytes(w, 0xd9, 0xda, 0xdb, s, n);
}

static inline void sqlwasm_write_cstr(sqlwasm_writer *w, const char *s) {
    sqlwasm_write_str(w, s, (uint32_t)strlen(s));
}

static inline void sqlwasm_write_bin(sqlwasm_writer *w, const void *p, uint32_t n) {
    sqlwasm__write_bytes(w, 0xc4, 0xc5, 0xc6, p, n);
}

static inline void sqlwasm_write_array(sqlwasm_writer *w, uint32_t n) {
    if (n < 16) {
        uint8_t *q = sqlwasm__put(w, 1);
        if (q) *q = (uint8_t)(0x90 | n);
    } else if (n <= 0xffff) sqlwasm__put_be(w, 0xdc, n, 2);
    else sqlwasm__put_be(w, 0xdd, n, 4);
}

static inline void sqlwasm_write_map(sqlwasm_writer *w, uint32_t n) {
    if (n < 16) {
        uint8_t *q = sqlwasm__put(w, 1);
        if (q) *q = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) sqlwasm__put_be(w, 0xde, n, 2);
    else sqlwasm__put_be(w, 0xdf, n, 4);
}

/* The packed result for what was written ({"error": "out of memory"} if the
 * writer ran out of memory). */
static inline int64_t sqlwasm_writer_finish(const sqlwasm_writer *w) {
    if (w->error) return sqlwasm_result(sqlwasm__oom_result, sizeof sqlwasm__oom_result);
    return sqlwasm_result(w->buf, w->len);
}

/* ------------------------------------------------------------------------
 * One-line results
 * ------------------------------------------------------------------------ */

static inline int64_t sqlwasm_return_nil(void) {
    return sqlwasm_result(sqlwasm__nil_result, 1);
}

static inline int64_t sqlwasm_return_int(int64_t v) {
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, 16);
    sqlwasm_write_int(&w, v);
    return sqlwasm_writer_finish(&w);
}

static inline int64_t sqlwasm_return_double(double d) {
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, 16);
    sqlwasm_write_double(&w, d);
    return sqlwasm_writer_finish(&w);
}

static inline int64_t sqlwasm_return_bool(int v) {
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, 16);
    sqlwasm_write_bool(&w, v);
    return sqlwasm_writer_finish(&w);
}

static inline int64_t sqlwasm_return_text(const char *s, uint32_t n) {
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, n + 5 < n ? UINT32_MAX : n + 5);
    sqlwasm_write_str(&w, s, n);
    return sqlwasm_writer_finish(&w);
}

static inline int64_t sqlwasm_return_cstring(const char *s) {
    return sqlwasm_return_text(s, (uint32_t)strlen(s));
}

static inline int64_t sqlwasm_return_blob(const void *p, uint32_t n) {
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, n + 5 < n ? UINT32_MAX : n + 5);
    sqlwasm_write_bin(&w, p, n);
    return sqlwasm_writer_finish(&w);
}

/* {"error": message} with an explicit length. */
static inline int64_t sqlwasm_return_error_n(const char *msg, uint32_t n) {
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, n + 12 < n ? UINT32_MAX : n + 12);
    sqlwasm_write_map(&w, 1);
    sqlwasm_write_str(&w, "error", 5);
    sqlwasm_write_str(&w, msg, n);
    return sqlwasm_writer_finish(&w);
}

static inline int64_t sqlwasm_return_error(const char *msg) {
    return sqlwasm_return_error_n(msg, (uint32_t)strlen(msg));
}

/* Build a text (as_error = 0) or error (as_error = 1) result from a printf
 * format. Short texts are formatted on the stack and copied once. */
SQLWASM__SLOW int64_t sqlwasm__vresult(int as_error, const char *fmt, va_list ap) {
    char small[256];
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    const char *text = small;
    if (n >= (int)sizeof small) {
        char *big = (char *)sqlwasm_arena_alloc((size_t)n + 1);
        if (big != NULL) vsnprintf(big, (size_t)n + 1, fmt, again);
        text = big;
    }
    va_end(again);
    if (n < 0) { /* only on an invalid format */
        text = "sqlwasm: invalid format";
        n = (int)strlen(text);
        as_error = 1;
    }
    if (text == NULL) return sqlwasm_result(sqlwasm__oom_result, sizeof sqlwasm__oom_result);
    return as_error ? sqlwasm_return_error_n(text, (uint32_t)n)
                    : sqlwasm_return_text(text, (uint32_t)n);
}

/* Text result formatted printf-style. */
__attribute__((format(printf, 1, 2)))
static inline int64_t sqlwasm_return_textf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int64_t res = sqlwasm__vresult(0, fmt, ap);
    va_end(ap);
    return res;
}

/* Error result formatted printf-style. */
__attribute__((format(printf, 1, 2)))
static inline int64_t sqlwasm_return_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int64_t res = sqlwasm__vresult(1, fmt, ap);
    va_end(ap);
    return res;
}

/* A copy of a packed result in malloc'd memory, to return from a later call
 * (an error that a table function's open() found, returned by its first
 * next()). Out of memory: the static {"error": "out of memory"}. Free it
 * with sqlwasm_result_free. */
SQLWASM__SLOW int64_t sqlwasm_result_keep(int64_t packed) {
    const void *p = (const void *)(uintptr_t)((uint64_t)packed >> 32);
    uint32_t len = (uint32_t)packed;
    void *copy = malloc(len ? len : 1);
    if (copy == NULL) return sqlwasm_result(sqlwasm__oom_result, sizeof sqlwasm__oom_result);
    memcpy(copy, p, len);
    return sqlwasm_result(copy, len);
}

/* Free what sqlwasm_result_keep returned (0 is ignored). */
static inline void sqlwasm_result_free(int64_t kept) {
    void *p = (void *)(uintptr_t)((uint64_t)kept >> 32);
    if (kept != 0 && p != (const void *)sqlwasm__oom_result) free(p);
}

/* ------------------------------------------------------------------------
 * Argument rows by signature
 * ------------------------------------------------------------------------ */

/* One argument read by sqlwasm_read_args(). Only the member named by the
 * argument's signature letter is set; the others are zero. */
typedef struct {
    double real;         /* 'r' */
    int64_t integer;     /* 'i' */
    const char *text;    /* 't': points into the row, NOT NUL-terminated */
    const uint8_t *blob; /* 'b': points into the row */
    uint32_t len;        /* 't' and 'b': length in bytes */
} sqlwasm_arg;

/* Read the host's argument row (row, len) into out[], one signature letter
 * per argument:
 *   'r'  real      msgpack float or int (an integer is accepted) -> .real
 *   'i'  integer   msgpack int, or a float with an integral value inside
 *                  the int64 range -> .integer
 *   't'  text      msgpack str -> .text, .len
 *   'b'  blob      msgpack bin -> .blob, .len
 * out must have room for strlen(sig) entries. Reading starts with
 * sqlwasm_reader_init, so the arena resets (a new call has begun).
 * Returns 1 on success. On failure returns 0 and stores in *err the result
 * the export should return, {"error": text}, the text being one of
 *   "malformed argument row"                (bad msgpack, trailing bytes)
 *   "expected N argument(s), got M"
 *   "argument N must be <real|integer|text|blob>, got <sqlwasm_type_name>"
 * (an unknown signature letter is reported as an error too). Even then the
 * arguments read before the problem are in out[] and the rest are zero, so
 * an export may check those first (a text's .text is non-NULL once read). */
static __attribute__((unused)) int sqlwasm_read_args(const uint8_t *row, uint32_t len,
                                                     const char *sig, sqlwasm_arg *out,
                                                     int64_t *err) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len); /* a new call: resets the arena */
    uint32_t want = (uint32_t)strlen(sig);
    memset(out, 0, (size_t)want * sizeof *out);
    uint32_t count = sqlwasm_read_array(&r);
    if (r.error) goto malformed;
    if (count != want) {
        *err = sqlwasm_return_errorf("expected %u argument%s, got %u", want, want == 1 ? "" : "s",
                                     count);
        return 0;
    }
    for (uint32_t i = 0; i < want; i++) {
        sqlwasm_type t = sqlwasm_peek(&r);
        sqlwasm_arg *a = &out[i];
        const char *expected;
        int ok = 0;
        switch (sig[i]) {
        case 'r':
            expected = "real";
            if (t == SQLWASM_FLOAT || t == SQLWASM_INT) {
                a->real = sqlwasm_read_double(&r);
                ok = 1;
            }
            break;
        case 'i':
            expected = "integer";
            if (t == SQLWASM_INT) {
                a->integer = sqlwasm_read_int(&r);
                ok = 1;
            } else if (t == SQLWASM_FLOAT) {
                double d = sqlwasm_read_double(&r);
                /* inside the int64 range [-2^63, 2^63) (false for NaN), then
                 * integral: there the conversion is exact both ways */
                if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
                    (double)(int64_t)d == d) {
                    a->integer = (int64_t)d;
                    ok = 1;
                }
            }
            break;
        case 't':
            expected = "text";
            if (t == SQLWASM_STR) {
                a->text = sqlwasm_read_str(&r, &a->len);
                ok = 1;
            }
            break;
        case 'b':
            expected = "blob";
            if (t == SQLWASM_BIN) {
                a->blob = sqlwasm_read_bin(&r, &a->len);
                ok = 1;
            }
            break;
        default:
            *err = sqlwasm_return_errorf("sqlwasm_read_args: unknown signature letter '%c'",
                                         sig[i]);
            return 0;
        }
        if (r.error || t == SQLWASM_END) goto malformed;
        if (!ok) {
            *err = sqlwasm_return_errorf("argument %u must be %s, got %s", i + 1, expected,
                                         sqlwasm_type_name(t));
            return 0;
        }
    }
    if (sqlwasm_reader_done(&r)) return 1;
malformed:
    *err = sqlwasm_return_error("malformed argument row");
    return 0;
}

/* ------------------------------------------------------------------------
 * Raw aggregates with a batched step
 *
 * SQLWASM_RAW_STEP(step_export, batch_export, add_row, T1[, T2, T3, T4])
 * defines the two exports of a raw aggregate's step (manifest exports roles
 * step and step_batch, docs/abi.md) from one function of yours,
 *
 *   void add_row(int32_t handle, T1 x1, ...)
 *
 * each T int64_t (an "integer" argument) or double ("real"), one to four of
 * them (the host batches rows of at most 4 arguments):
 *
 *   step_export(handle, x1, ...)        calls add_row once;
 *   batch_export(handle, rows, count)   calls add_row for each of count rows
 *                                       the host packed at rows, 8 bytes a
 *                                       value (docs/abi.md, step_batch).
 *
 * Make add_row static: then the compiler inlines it into the batch loop,
 * and one call into the guest adds up to 256 rows. Example (a sum):
 *
 *   static int64_t totals[64];
 *   static inline void sum_add(int32_t h, int64_t x) { totals[h] += x; }
 *   SQLWASM_RAW_STEP(sum_step, sum_step_batch, sum_add, int64_t)
 * ------------------------------------------------------------------------ */

#ifdef __cplusplus
#define SQLWASM__ASSERT_SIZE(T) static_assert(sizeof(T) == 8, "SQLWASM_RAW_STEP: argument types are int64_t or double")
#else
#define SQLWASM__ASSERT_SIZE(T) _Static_assert(sizeof(T) == 8, "SQLWASM_RAW_STEP: argument types are int64_t or double")
#endif
#define SQLWASM__CAT(a, b) SQLWASM__CAT2(a, b)
#define SQLWASM__CAT2(a, b) a##b
/* How many types follow (1-4); more names a macro that does not exist. */
#define SQLWASM__NTYPES(...) SQLWASM__NTYPES2(__VA_ARGS__, _SQLWASM_RAW_STEP_takes_at_most_4_types, 4, 3, 2, 1, _)
#define SQLWASM__NTYPES2(a, b, c, d, e, n, ...) n
#define SQLWASM__PARAMS_1(T1) T1 x1
#define SQLWASM__PARAMS_2(T1, T2) T1 x1, T2 x2
#define SQLWASM__PARAMS_3(T1, T2, T3) T1 x1, T2 x2, T3 x3
#define SQLWASM__PARAMS_4(T1, T2, T3, T4) T1 x1, T2 x2, T3 x3, T4 x4
#define SQLWASM__NAMES_1 x1
#define SQLWASM__NAMES_2 x1, x2
#define SQLWASM__NAMES_3 x1, x2, x3
#define SQLWASM__NAMES_4 x1, x2, x3, x4
/* Declare x1.. and load them from a row of 8-byte values at p. */
#define SQLWASM__LOAD_1(p, T1) SQLWASM__ASSERT_SIZE(T1); T1 x1; memcpy(&x1, (p), 8);
#define SQLWASM__LOAD_2(p, T1, T2) SQLWASM__LOAD_1(p, T1) SQLWASM__ASSERT_SIZE(T2); T2 x2; memcpy(&x2, (p) + 8, 8);
#define SQLWASM__LOAD_3(p, T1, T2, T3) \
    SQLWASM__LOAD_2(p, T1, T2) SQLWASM__ASSERT_SIZE(T3); T3 x3; memcpy(&x3, (p) + 16, 8);
#define SQLWASM__LOAD_4(p, T1, T2, T3, T4) \
    SQLWASM__LOAD_3(p, T1, T2, T3) SQLWASM__ASSERT_SIZE(T4); T4 x4; memcpy(&x4, (p) + 24, 8);

#define SQLWASM_RAW_STEP(step_export, batch_export, add_row, ...)                                   \
    SQLWASM_EXPORT(step_export)                                                                    \
    void step_export(int32_t handle, SQLWASM__CAT(SQLWASM__PARAMS_, SQLWASM__NTYPES(__VA_ARGS__))(__VA_ARGS__)) { \
        add_row(handle, SQLWASM__CAT(SQLWASM__NAMES_, SQLWASM__NTYPES(__VA_ARGS__)));              \
    }                                                                                              \
    SQLWASM_EXPORT(batch_export)                                                                   \
    void batch_export(int32_t handle, const uint8_t *rows, int32_t count) {                        \
        for (int32_t row = 0; row < count; row++, rows += 8 * SQLWASM__NTYPES(__VA_ARGS__)) {      \
            SQLWASM__CAT(SQLWASM__LOAD_, SQLWASM__NTYPES(__VA_ARGS__))(rows, __VA_ARGS__)          \
            add_row(handle, SQLWASM__CAT(SQLWASM__NAMES_, SQLWASM__NTYPES(__VA_ARGS__)));          \
        }                                                                                          \
    }

/* ------------------------------------------------------------------------
 * Table functions (manifest kind "table", abi "msgpack")
 *
 * A table function exports three functions (docs/abi.md):
 *   open(row, len) -> int32    reads the argument row like a msgpack scalar,
 *                              keeps what it needs in malloc'd state and
 *                              returns a handle >= 0 (negative: "open failed");
 *   next(handle) -> int64      the next batch of rows: a msgpack array of
 *                              rows, each an array with one value per declared
 *                              column; an empty array when done; or
 *                              {"error": text};
 *   close(handle)              frees the state. The host calls it exactly once
 *                              per handle, also after an error, a trap or an
 *                              early stop (LIMIT).
 * Several handles may be open at once (a join, a correlated subquery), so
 * keep all per-handle state behind the handle, never in globals.
 *
 *   handles  sqlwasm_handle_new(state) -> handle (>= 0) or -1 when out of
 *            memory; sqlwasm_handle_get(h) -> state or NULL for a handle that
 *            is not open; sqlwasm_handle_release(h) -> state (or NULL), and
 *            the handle may be reused by a later sqlwasm_handle_new. The
 *            table holds void pointers; freeing the state is the caller's.
 *   errors   sqlwasm_result_keep(packed) copies a result (e.g. the err of
 *            sqlwasm_read_args) out of the arena, so a later next() can
 *            return it; sqlwasm_result_free(kept) frees the copy.
 *   batches  sqlwasm_batch_begin(&b) starts a batch and RESETS THE ARENA (a
 *            next() reads no argument row, so nothing else resets it): call
 *            it first in next(). Then per row sqlwasm_batch_row(&b, ncols)
 *            followed by exactly ncols sqlwasm_write_* calls on &b.w, while
 *            !sqlwasm_batch_full(&b); then return sqlwasm_batch_finish(&b).
 *            A batch with no rows is the empty array, "done".
 *            sqlwasm_batch_full() turns true at SQLWASM_BATCH_ROWS rows or
 *            SQLWASM_BATCH_BYTES bytes (define either before including this
 *            header to change it). The check comes between rows, so a
 *            batch holds at most SQLWASM_BATCH_BYTES plus one row: the
 *            host's max_result_bytes must hold that.
 *
 * Example: count(n) -> rows 0..n-1 in a column "value".
 *
 *   typedef struct { int64_t next, end; } counter;
 *
 *   SQLWASM_EXPORT(count_open) int32_t count_open(const uint8_t *row, uint32_t len) {
 *       sqlwasm_arg a[1];
 *       int64_t err;
 *       if (!sqlwasm_read_args(row, len, "i", a, &err)) return -1;
 *       counter *c = malloc(sizeof *c);
 *       if (c == NULL) return -1;
 *       c->next = 0, c->end = a[0].integer;
 *       int32_t h = sqlwasm_handle_new(c);
 *       if (h < 0) free(c);
 *       return h;
 *   }
 *   SQLWASM_EXPORT(count_next) int64_t count_next(int32_t h) {
 *       counter *c = sqlwasm_handle_get(h);
 *       if (c == NULL) return sqlwasm_return_error("bad handle");
 *       sqlwasm_batch b;
 *       sqlwasm_batch_begin(&b);
 *       for (; c->next < c->end && !sqlwasm_batch_full(&b); c->next++) {
 *           sqlwasm_batch_row(&b, 1);
 *           sqlwasm_write_int(&b.w, c->next);
 *       }
 *       return sqlwasm_batch_finish(&b);
 *   }
 *   SQLWASM_EXPORT(count_close) void count_close(int32_t h) {
 *       free(sqlwasm_handle_release(h));
 *   }
 *
 * An open() that wants to explain a bad argument cannot return text (its
 * result is an int32, and a negative one only says "open failed"): return
 * a handle whose state keeps the error (sqlwasm_result_keep) and let the
 * first next() return it. The shipped modules do this, so the SQL error
 * names the cause.
 * ------------------------------------------------------------------------ */

#ifndef SQLWASM_BATCH_ROWS
#define SQLWASM_BATCH_ROWS 256u
#endif
/* 32 KiB: measured no slower than larger batches, and far below any
 * sensible max_result_bytes (the default is 16 MiB). */
#ifndef SQLWASM_BATCH_BYTES
#define SQLWASM_BATCH_BYTES (32u * 1024u)
#endif

/* Open handles: slots[h] is handle h's state, NULL when h is free. */
static struct {
    void **slots;
    uint32_t cap;
} sqlwasm_handles_state;

/* A new handle for state (not NULL), the lowest free one; -1 when out of
 * memory. */
SQLWASM__SLOW int32_t sqlwasm_handle_new(void *state) {
    uint32_t h = 0;
    while (h < sqlwasm_handles_state.cap && sqlwasm_handles_state.slots[h] != NULL) h++;
    if (h == sqlwasm_handles_state.cap) {
        uint32_t cap = sqlwasm_handles_state.cap ? sqlwasm_handles_state.cap * 2 : 8;
        if (cap > (uint32_t)INT32_MAX) return -1;
        void **slots = (void **)realloc(sqlwasm_handles_state.slots, (size_t)cap * sizeof *slots);
        if (slots == NULL) return -1;
        memset(slots + h, 0, (size_t)(cap - h) * sizeof *slots);
        sqlwasm_handles_state.slots = slots;
        sqlwasm_handles_state.cap = cap;
    }
    sqlwasm_handles_state.slots[h] = state;
    return (int32_t)h;
}

/* The state of an open handle; NULL for any other number. */
static inline void *sqlwasm_handle_get(int32_t h) {
    if (h < 0 || (uint32_t)h >= sqlwasm_handles_state.cap) return NULL;
    return sqlwasm_handles_state.slots[h];
}

/* Close handle h: returns its state (NULL if h was not open) for the caller
 * to free; h becomes free for reuse. */
static inline void *sqlwasm_handle_release(int32_t h) {
    void *state = sqlwasm_handle_get(h);
    if (state != NULL) sqlwasm_handles_state.slots[h] = NULL;
    return state;
}

typedef struct {
    sqlwasm_writer w; /* write each row's values here */
    uint32_t rows;    /* rows begun so far */
} sqlwasm_batch;

/* The array header is written last, into 5 bytes reserved at the start, so
 * it can use the smallest encoding for the final row count. */
#define SQLWASM__BATCH_HEADER 5u

/* Start a batch of rows; resets the arena (see above). */
static inline void sqlwasm_batch_begin(sqlwasm_batch *b) {
    sqlwasm_arena_reset();
    sqlwasm_writer_init(&b->w, 4096);
    sqlwasm__put(&b->w, SQLWASM__BATCH_HEADER);
    b->rows = 0;
}

/* True once the batch holds enough rows or bytes: stop adding rows. */
static inline int sqlwasm_batch_full(const sqlwasm_batch *b) {
    return b->rows >= SQLWASM_BATCH_ROWS || b->w.len >= SQLWASM_BATCH_BYTES;
}

/* Begin a row of ncols values; write them next with sqlwasm_write_*(&b->w). */
static inline void sqlwasm_batch_row(sqlwasm_batch *b, uint32_t ncols) {
    b->rows++;
    sqlwasm_write_array(&b->w, ncols);
}

/* The packed result: the array of the rows written ({"error": "out of
 * memory"} if the writer ran out of memory). */
static inline int64_t sqlwasm_batch_finish(const sqlwasm_batch *b) {
    if (b->w.error) return sqlwasm_writer_finish(&b->w);
    uint32_t n = b->rows, header;
    uint8_t *at = b->w.buf + SQLWASM__BATCH_HEADER;
    if (n < 16) {
        header = 1;
        at[-1] = (uint8_t)(0x90 | n);
    } else if (n <= 0xffff) {
        header = 3;
        at[-3] = 0xdc, at[-2] = (uint8_t)(n >> 8), at[-1] = (uint8_t)n;
    } else {
        header = 5;
        at[-5] = 0xdd, at[-4] = (uint8_t)(n >> 24), at[-3] = (uint8_t)(n >> 16);
        at[-2] = (uint8_t)(n >> 8), at[-1] = (uint8_t)n;
    }
    return sqlwasm_result(at - header, b->w.len - SQLWASM__BATCH_HEADER + header);
}

/* C++: libc++ reports a broken precondition, or what would have thrown
 * (guests build with -fno-exceptions), through this function before it
 * aborts. Its default writes to stderr, importing fd_write and friends,
 * which no capability provides; a guest traps instead. */
#if defined(__cplusplus) && defined(_LIBCPP_VERSION)
_LIBCPP_BEGIN_NAMESPACE_STD
[[noreturn]] void __libcpp_verbose_abort(char const *, ...) noexcept { __builtin_trap(); }
_LIBCPP_END_NAMESPACE_STD
#endif

#endif /* SQLWASM_H */
