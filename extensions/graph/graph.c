/*
 * graph.c - the "graph" sqlwasm module: walks a graph stored in the database
 * it runs in, through the sql capability (docs/abi.md, "The sql imports").
 *
 * graph_reachable(start) is a table function: every node reachable from
 * start along the rows of edges(src, dst), with its depth (the fewest edges
 * from start); start is a row at depth 0. The walk is breadth-first, one
 * query per level, the level's nodes passed as a JSON array:
 *
 *   SELECT DISTINCT dst FROM edges WHERE src IN (SELECT value FROM json_each(?1))
 *
 * so the host grants the module that one table: grant={"sql": ["edges"]}.
 * The whole walk runs in open (one guest call, under its time limit); next
 * hands out the rows in batches. A failed query (no table edges, not
 * granted, ...) is the error of the first next, so SQL sees its text.
 *
 * Build: python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 -s -Wl,-z,stack-size=262144 -Wl,--export=__stack_pointer
 *        -I extensions/sdk extensions/graph/graph.c -o graph.wasm
 */
#include "sqlwasm.h"

/* The sql capability's imports. */
__attribute__((import_module("sqlwasm"), import_name("query")))
int32_t sql_query(const char *sql, int32_t sql_len, const uint8_t *params, int32_t params_len);
__attribute__((import_module("sqlwasm"), import_name("query_next")))
int32_t sql_query_next(int32_t cursor, uint8_t *out, int32_t out_cap);
__attribute__((import_module("sqlwasm"), import_name("query_close")))
void sql_query_close(int32_t cursor);

#define MAX_NODES 1000000u
#define MAX_WALKS 256       /* walks open at once (one per outer row of a join) */
#define BATCH_ROWS 4096u    /* rows per next */

static const char NEXT_LEVEL[] =
    "SELECT DISTINCT dst FROM edges WHERE src IN (SELECT value FROM json_each(?1))";

typedef struct {
    int64_t node;
    int64_t depth;
} row;

/* The nodes seen so far: an open-addressing hash set (capacity a power of two). */
typedef struct {
    int64_t *keys;
    uint8_t *used;
    uint32_t cap;
    uint32_t count;
} node_set;

typedef struct {
    row *rows; /* every node found, level by level */
    uint32_t count, cap;
    uint32_t emitted; /* rows handed out by next */
    char *error;      /* set: the walk failed; the first next says why */
} walk;

static walk *walks[MAX_WALKS];

/* The buffer query_next writes into; it grows when a row does not fit. */
static uint8_t *batch;
static uint32_t batch_cap;

static uint32_t slot_of(int64_t node, uint32_t cap) {
    uint64_t h = (uint64_t)node * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) & (cap - 1);
}

static int set_grow(node_set *s) {
    uint32_t cap = s->cap ? s->cap * 2 : 1024;
    int64_t *keys = malloc((size_t)cap * sizeof *keys);
    uint8_t *used = calloc(cap, 1);
    if (!keys || !used) {
        free(keys);
        free(used);
        return 0;
    }
    for (uint32_t i = 0; i < s->cap; i++) {
        if (!s->used[i]) continue;
        uint32_t j = slot_of(s->keys[i], cap);
        while (used[j]) j = (j + 1) & (cap - 1);
        used[j] = 1;
        keys[j] = s->keys[i];
    }
    free(s->keys);
    free(s->used);
    s->keys = keys;
    s->used = used;
    s->cap = cap;
    return 1;
}

/* Adds node: 1 if it is new, 0 if seen before, -1 when out of memory. */
static int set_add(node_set *s, int64_t node) {
    if ((uint64_t)(s->count + 1) * 2 > s->cap && !set_grow(s)) return -1;
    uint32_t j = slot_of(node, s->cap);
    while (s->used[j]) {
        if (s->keys[j] == node) return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->used[j] = 1;
    s->keys[j] = node;
    s->count++;
    return 1;
}

static void set_free(node_set *s) {
    free(s->keys);
    free(s->used);
}

/* Records the walk's error (printf-style); returns 0. */
__attribute__((format(printf, 2, 3))) static int fail(walk *w, const char *fmt, ...) {
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!w->error) w->error = strdup(text);
    return 0;
}

static int add_row(walk *w, node_set *seen, int64_t node, int64_t depth) {
    int added = set_add(seen, node);
    if (added < 0) return fail(w, "out of memory");
    if (!added) return 1;
    if (w->count == MAX_NODES) return fail(w, "more than %u nodes are reachable", MAX_NODES);
    if (w->count == w->cap) {
        uint32_t cap = w->cap ? w->cap * 2 : 256;
        row *rows = realloc(w->rows, (size_t)cap * sizeof *rows);
        if (!rows) return fail(w, "out of memory");
        w->rows = rows;
        w->cap = cap;
    }
    w->rows[w->count++] = (row){node, depth};
    return 1;
}

/* The params of NEXT_LEVEL: [json array of rows[from, to)'s nodes], in the arena. */
static const uint8_t *level_params(walk *w, uint32_t from, uint32_t to, uint32_t *len) {
    size_t cap = 2 + (size_t)(to - from) * 21;
    char *json = sqlwasm_arena_alloc(cap);
    if (!json) return NULL;
    size_t n = 0;
    json[n++] = '[';
    for (uint32_t i = from; i < to; i++)
        n += (size_t)snprintf(json + n, cap - n, "%s%lld", i > from ? "," : "", (long long)w->rows[i].node);
    json[n++] = ']';
    sqlwasm_writer out;
    sqlwasm_writer_init(&out, (uint32_t)n + 8);
    sqlwasm_write_array(&out, 1);
    sqlwasm_write_str(&out, json, (uint32_t)n);
    if (out.error) return NULL;
    *len = out.len;
    return out.buf;
}

/* Reads every row of the open cursor: each dst not seen yet joins the walk at depth. */
static int read_level(walk *w, node_set *seen, int32_t cursor, int64_t depth) {
    for (;;) {
        int32_t n = sql_query_next(cursor, batch, (int32_t)batch_cap);
        if (n < 0) { /* not even one row fits: grow to what it needs */
            uint32_t want = (uint32_t)-n > batch_cap * 2 ? (uint32_t)-n : batch_cap * 2;
            uint8_t *grown = realloc(batch, want);
            if (!grown) return fail(w, "out of memory");
            batch = grown;
            batch_cap = want;
            continue;
        }
        sqlwasm_reader r;
        sqlwasm_reader_init(&r, batch, (uint32_t)n);
        if (sqlwasm_peek(&r) == SQLWASM_MAP) { /* {"error": text} */
            uint32_t len = 0;
            const char *text = "";
            if (sqlwasm_read_map(&r) == 1) {
                uint32_t key_len;
                sqlwasm_read_str(&r, &key_len);
                text = sqlwasm_read_str(&r, &len);
            }
            return fail(w, "%.*s", r.error ? 0 : (int)len, r.error ? "" : text);
        }
        uint32_t rows = sqlwasm_read_array(&r);
        if (rows == 0) return r.error ? fail(w, "malformed rows from query_next") : 1;
        for (uint32_t i = 0; i < rows; i++) {
            if (sqlwasm_read_array(&r) != 1) return fail(w, "malformed rows from query_next");
            sqlwasm_type t = sqlwasm_peek(&r);
            if (t != SQLWASM_INT)
                return fail(w, "edges.dst must be an integer, got %s", sqlwasm_type_name(t));
            if (!add_row(w, seen, sqlwasm_read_int(&r), depth)) return 0;
        }
        if (!sqlwasm_reader_done(&r)) return fail(w, "malformed rows from query_next");
    }
}

static void walk_from(walk *w, int64_t start) {
    node_set seen = {0};
    if (!batch) {
        batch = malloc(batch_cap = 64 * 1024);
        if (!batch) {
            batch_cap = 0;
            fail(w, "out of memory");
            return;
        }
    }
    if (!add_row(w, &seen, start, 0)) {
        set_free(&seen);
        return;
    }
    uint32_t level_start = 0;
    for (int64_t depth = 1; level_start < w->count; depth++) {
        uint32_t level_end = w->count, params_len = 0;
        const uint8_t *params = level_params(w, level_start, level_end, &params_len);
        if (!params) {
            fail(w, "out of memory");
            break;
        }
        int32_t cursor = sql_query(NEXT_LEVEL, (int32_t)sizeof NEXT_LEVEL - 1, params, (int32_t)params_len);
        int ok = read_level(w, &seen, cursor, depth);
        sql_query_close(cursor);
        sqlwasm_arena_reset(); /* this level's params */
        if (!ok) break;
        level_start = level_end;
    }
    set_free(&seen);
}

SQLWASM_EXPORT(reachable_open) int32_t reachable_open(const uint8_t *args, uint32_t len) {
    sqlwasm_arg a[1];
    int64_t err;
    if (!sqlwasm_read_args(args, len, "i", a, &err)) return -1;
    int32_t handle = 0;
    while (handle < MAX_WALKS && walks[handle]) handle++;
    if (handle == MAX_WALKS) return -2; /* too many walks open at once */
    walk *w = calloc(1, sizeof *w);
    if (!w) return -3;
    walks[handle] = w;
    walk_from(w, a[0].integer);
    return handle;
}

SQLWASM_EXPORT(reachable_next) int64_t reachable_next(int32_t handle) {
    sqlwasm_arena_reset(); /* next reads no argument row */
    walk *w = handle >= 0 && handle < MAX_WALKS ? walks[handle] : NULL;
    if (!w) return sqlwasm_return_error("graph_reachable: no such walk");
    if (w->error) return sqlwasm_return_error(w->error);
    uint32_t n = w->count - w->emitted;
    if (n > BATCH_ROWS) n = BATCH_ROWS;
    sqlwasm_writer out;
    sqlwasm_writer_init(&out, 5 + n * 19);
    sqlwasm_write_array(&out, n);
    for (uint32_t i = w->emitted; i < w->emitted + n; i++) {
        sqlwasm_write_array(&out, 2);
        sqlwasm_write_int(&out, w->rows[i].node);
        sqlwasm_write_int(&out, w->rows[i].depth);
    }
    w->emitted += n;
    return sqlwasm_writer_finish(&out);
}

SQLWASM_EXPORT(reachable_close) void reachable_close(int32_t handle) {
    if (handle < 0 || handle >= MAX_WALKS || !walks[handle]) return;
    free(walks[handle]->rows);
    free(walks[handle]->error);
    free(walks[handle]);
    walks[handle] = NULL;
}
