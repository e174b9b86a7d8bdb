/*
 * stats.c - the "stats" sqlwasm module: aggregate and window functions for
 * descriptive statistics.
 *
 * Every aggregate keeps its state in guest memory behind a small integer
 * handle (see "State handles"). Two families of states:
 *
 *   - running moments (variance, stddev, covariance, correlation, weighted
 *     mean): a fixed-size state updated per row and, for windows, downdated
 *     by the inverse of the same update. These use the raw ABI: numbers in,
 *     a number out, no error can arise; a NaN result is SQL NULL.
 *
 *   - stored values (median, percentile, mode, histogram): every value is
 *     kept, so a state can run out of memory; these use the msgpack ABI so
 *     that this, and bad arguments, become error results instead of traps.
 *
 * Non-finite inputs (possible in SQLite as 1e999): the moment functions
 * return NULL while such a value is in the group or window frame; median,
 * percentile and mode order them like any other value; the histogram
 * rejects them (JSON has no infinity). NaN never comes from SQL (SQLite
 * stores it as NULL); where it could arrive anyway it is rejected or treated
 * as non-finite.
 *
 * Every family also exports serialize and merge, so that the host can ship
 * a state as bytes and fold it into another (NAME_partial / NAME_merge; see
 * "Serialized states" for the formats): exact for the stored values,
 * Chan et al.'s pairwise update for the moments.
 *
 * Build: python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 -s -Wl,-z,stack-size=262144 -Wl,--export=__stack_pointer
 *        -I extensions/sdk extensions/stats/stats.c -o stats.wasm
 */
#include <float.h>
#include <math.h>

#include "sqlwasm.h"

/* ------------------------------------------------------------------------
 * State handles
 *
 * init() returns index + 1 into a table of state pointers; freed slots are
 * reused. Every state begins with its kind, so a handle of the wrong family
 * or one already released is caught: a msgpack export then returns an
 * error, a raw export traps (it has no other way to fail). Handle 0 is what
 * a msgpack init returns when it runs out of memory; the step and final
 * that follow report "out of memory". A raw init traps instead.
 * ------------------------------------------------------------------------ */

typedef enum {
    STATE_VALUES = 1, /* median, percentile, mode */
    STATE_HISTOGRAM,
    STATE_MOMENTS,   /* variance and stddev, sample and population */
    STATE_COMOMENTS, /* covariance, correlation */
    STATE_WEIGHTED   /* weighted mean */
} state_kind;

typedef struct {
    state_kind kind; /* first member of every state */
} state_header;

typedef struct {
    state_header *state; /* NULL when the slot is free */
    uint32_t next_free;  /* when free: index + 1 of the next free slot, or 0 */
} handle_slot;

static struct {
    handle_slot *slots;
    uint32_t count; /* slots ever used (live or free) */
    uint32_t cap;
    uint32_t first_free; /* index + 1 of a free slot, or 0 */
} handles;

/* A new handle for state, or 0 when out of memory. */
static int32_t handle_open(state_header *state) {
    uint32_t index;
    if (handles.first_free != 0) {
        index = handles.first_free - 1;
        handles.first_free = handles.slots[index].next_free;
    } else {
        if (handles.count == handles.cap) {
            uint32_t cap = handles.cap ? handles.cap * 2 : 16;
            if (cap > (uint32_t)INT32_MAX) return 0;
            handle_slot *grown = (handle_slot *)realloc(handles.slots, cap * sizeof *grown);
            if (grown == NULL) return 0;
            handles.slots = grown;
            handles.cap = cap;
        }
        index = handles.count++;
    }
    handles.slots[index].state = state;
    handles.slots[index].next_free = 0;
    return (int32_t)(index + 1);
}

/* The live state of `kind` behind handle, or NULL. */
static void *handle_state(int32_t handle, state_kind kind) {
    if (handle <= 0 || (uint32_t)handle > handles.count) return NULL;
    state_header *state = handles.slots[handle - 1].state;
    return state != NULL && state->kind == kind ? state : NULL;
}

/* Return the slot of a live handle to the free list. */
static void handle_close(int32_t handle) {
    handle_slot *slot = &handles.slots[handle - 1];
    slot->state = NULL;
    slot->next_free = handles.first_free;
    handles.first_free = (uint32_t)handle;
}

/* The error result for a handle with no usable state (msgpack exports). */
static int64_t bad_handle(int32_t handle) {
    if (handle == 0) return sqlwasm_return_error("out of memory");
    return sqlwasm_return_errorf("invalid aggregate state handle %d", (int)handle);
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/* Shortest of %.15g, %.16g, %.17g that reads back as x. */
static void format_real(char *buf, size_t size, double x) {
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(buf, size, "%.*g", precision, x);
        if (!isfinite(x) || strtod(buf, NULL) == x) return;
    }
}

/* Interpolate between neighbours a <= b at fraction t in (0, 1), the way
 * numpy does (from the nearer end), falling back to a weighted sum when
 * b - a overflows. */
static double interpolate(double a, double b, double t) {
    double d = b - a;
    if (isfinite(d)) return t < 0.5 ? a + d * t : b - d * (1.0 - t);
    return a * (1.0 - t) + b * t;
}

/* Midpoint of a <= b, exact to rounding, without overflow. */
static double midpoint(double a, double b) {
    double m = (a + b) / 2.0;
    return isfinite(m) || !isfinite(a) || !isfinite(b) ? m : a / 2.0 + b / 2.0;
}

/* Grow *buf (of *cap elements of `size` bytes) to hold at least `need`
 * elements, doubling. Returns 0, leaving everything as it was, when out of
 * memory or past the 32-bit address space. */
static int grow_array(void **buf, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return 1;
    uint64_t want = *cap ? (uint64_t)*cap * 2 : 16;
    if (want < need) want = need;
    if (want * size > (uint64_t)INT32_MAX) want = (uint64_t)INT32_MAX / size;
    if (want < need) return 0;
    void *grown = realloc(*buf, (size_t)(want * size));
    if (grown == NULL) return 0;
    *buf = grown;
    *cap = (uint32_t)want;
    return 1;
}

static int compare_doubles(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* ------------------------------------------------------------------------
 * Serialized states (the serialize and merge exports)
 *
 * serialize(handle) -> i64 packs (ptr << 32 | len) of the state's bytes in
 * the arena, valid until the next call; the state stays alive. merge(handle,
 * ptr, len) -> i32 folds such bytes into a live state of the same family: 0
 * on success, 1 on anything malformed or on a conflict (a different p or
 * bins), 2 when out of memory; on failure the state is left as it was.
 *
 * Format: little-endian (wasm's own order), fixed-width fields, one leading
 * tag byte per family. Stored values are written in ascending total order
 * (-0 before +0), so the bytes depend only on the multiset of values, not
 * on the order rows came in. Running moments are a few numbers: their bytes
 * are deterministic for equal states, but floating-point sums of the same
 * rows taken in another order may differ in the last bits. merge treats the
 * bytes as hostile: exact lengths, counts that fit, no NaN, finite moments,
 * no counter overflow, and it allocates at most what the bytes themselves
 * account for. serialize returns 0 (no bytes at all, which no merge
 * accepts) when out of memory or given an invalid handle.
 * ------------------------------------------------------------------------ */

enum { MERGE_OK = 0, MERGE_MALFORMED = 1, MERGE_OUT_OF_MEMORY = 2 };

#define TAG_VALUES 0x56u    /* 'V' */
#define TAG_HISTOGRAM 0x48u /* 'H' */
#define TAG_MOMENTS 0x4Du   /* 'M' */
#define TAG_COMOMENTS 0x43u /* 'C' */
#define TAG_WEIGHTED 0x57u  /* 'W' */

typedef struct {
    uint8_t *at;
} byte_writer;

static void put_u8(byte_writer *w, uint8_t v) { *w->at++ = v; }
static void put_u32(byte_writer *w, uint32_t v) { memcpy(w->at, &v, 4); w->at += 4; }
static void put_i64(byte_writer *w, int64_t v) { memcpy(w->at, &v, 8); w->at += 8; }
static void put_f64(byte_writer *w, double v) { memcpy(w->at, &v, 8); w->at += 8; }

/* Reads past the end set `error` and yield 0; check it once at the end. */
typedef struct {
    const uint8_t *at;
    uint32_t left;
    int error;
} byte_reader;

static const uint8_t *take_bytes(byte_reader *r, uint32_t n) {
    if (r->error || r->left < n) {
        r->error = 1;
        return NULL;
    }
    const uint8_t *p = r->at;
    r->at += n;
    r->left -= n;
    return p;
}

static uint8_t take_u8(byte_reader *r) {
    const uint8_t *p = take_bytes(r, 1);
    return p ? *p : 0;
}

static uint32_t take_u32(byte_reader *r) {
    uint32_t v = 0;
    const uint8_t *p = take_bytes(r, 4);
    if (p) memcpy(&v, p, 4);
    return v;
}

static int64_t take_i64(byte_reader *r) {
    int64_t v = 0;
    const uint8_t *p = take_bytes(r, 8);
    if (p) memcpy(&v, p, 8);
    return v;
}

static double take_f64(byte_reader *r) {
    double v = 0.0;
    const uint8_t *p = take_bytes(r, 8);
    if (p) memcpy(&v, p, 8);
    return v;
}

/* A counter from the bytes: non-negative, and adding it to `have` does not
 * overflow. */
static int counter_fits(int64_t have, int64_t more) {
    return more >= 0 && have <= INT64_MAX - more;
}

/* Ascending order with -0 before +0 (values are never NaN here). */
static int compare_total(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    if (a != b) return (a > b) - (a < b);
    return (int)!signbit(a) - (int)!signbit(b);
}

/* `count` doubles at r, checked to be non-NaN (finite too when asked) and
 * in ascending total order; r advances past them. NULL when malformed. */
static const uint8_t *take_sorted_values(byte_reader *r, uint32_t count, int finite_only) {
    if (count > r->left / 8u) {
        r->error = 1;
        return NULL;
    }
    const uint8_t *values = take_bytes(r, count * 8u);
    double prev = 0.0;
    for (uint32_t i = 0; i < count; i++) {
        double x;
        memcpy(&x, values + (size_t)i * 8u, 8);
        if (isnan(x) || (finite_only && !isfinite(x))) return NULL;
        if (i > 0 && compare_total(&prev, &x) > 0) return NULL;
        prev = x;
    }
    return values;
}

/* ------------------------------------------------------------------------
 * Sorted multiset of doubles (median, percentile, mode)
 *
 * An ordered list of blocks, each a sorted run of values, every value of a
 * block <= every value of the next. Steps append to an unsorted `pending`
 * buffer; a query first sorts pending in. When the set is empty, the sorted
 * pending buffer simply becomes the one block, so a plain aggregate costs a
 * single sort and no copy. Blocks larger than BLOCK_CAP are split before
 * anything is inserted into or removed from them; ordinary blocks hold at
 * most BLOCK_CAP values, split in half when full, and merge with a
 * neighbour when the two together fit in BLOCK_HALF, so that removals do
 * not leave many tiny blocks. Insert and remove cost O(log n + BLOCK_CAP),
 * the k-th value O(number of blocks), about n / BLOCK_HALF. Empty blocks
 * are dropped, so the set is empty exactly when it has no blocks.
 * ------------------------------------------------------------------------ */

#define BLOCK_CAP 1024u
#define BLOCK_HALF (BLOCK_CAP / 2u)

typedef struct {
    double *values; /* sorted */
    uint32_t count;
    uint32_t cap;
} block;

typedef struct {
    block *blocks;
    uint32_t nblocks;
    uint32_t blocks_cap;
    uint32_t size; /* values in blocks */
    double *pending; /* added, not sorted in yet */
    uint32_t npending;
    uint32_t pending_cap;
    int pending_unsorted; /* pending is not in ascending order (0: it is, so flush need not sort) */
} multiset;

static void multiset_free(multiset *ms) {
    for (uint32_t i = 0; i < ms->nblocks; i++) free(ms->blocks[i].values);
    free(ms->blocks);
    free(ms->pending);
    memset(ms, 0, sizeof *ms);
}

static uint32_t multiset_count(const multiset *ms) { return ms->size + ms->npending; }

static int multiset_add(multiset *ms, double x) {
    if (ms->npending == UINT32_MAX - ms->size) return 0;
    if (!grow_array((void **)&ms->pending, &ms->pending_cap, ms->npending + 1, sizeof(double)))
        return 0;
    if (ms->npending > 0 && ms->pending[ms->npending - 1] > x) ms->pending_unsorted = 1;
    ms->pending[ms->npending++] = x;
    return 1;
}

/* Adds count values in ascending order (a merged partial). While pending is
 * sorted they are merged in, linearly, so a merge of sorted partials never
 * sorts; otherwise appended. Returns 0 when out of memory (nothing added). */
static int multiset_add_sorted(multiset *ms, const double *values, uint32_t count) {
    if (count > UINT32_MAX - ms->size - ms->npending) return 0;
    uint32_t total = ms->npending + count;
    if (ms->npending == 0 || ms->pending_unsorted) {
        if (!grow_array((void **)&ms->pending, &ms->pending_cap, total, sizeof(double))) return 0;
        if (ms->npending > 0 && count > 0 && ms->pending[ms->npending - 1] > values[0]) ms->pending_unsorted = 1;
        memcpy(ms->pending + ms->npending, values, (size_t)count * sizeof(double));
        ms->npending = total;
        return 1;
    }
    double *merged = (double *)malloc((size_t)(total ? total : 1) * sizeof(double));
    if (merged == NULL) return 0;
    uint32_t i = 0, j = 0, k = 0;
    while (i < ms->npending && j < count) merged[k++] = values[j] < ms->pending[i] ? values[j++] : ms->pending[i++];
    while (i < ms->npending) merged[k++] = ms->pending[i++];
    while (j < count) merged[k++] = values[j++];
    free(ms->pending);
    ms->pending = merged;
    ms->npending = ms->pending_cap = total;
    return 1;
}

/* Make room for `extra` more blocks in the block list. */
static int reserve_blocks(multiset *ms, uint32_t extra) {
    if (extra > UINT32_MAX - ms->nblocks) return 0;
    return grow_array((void **)&ms->blocks, &ms->blocks_cap, ms->nblocks + extra, sizeof(block));
}

/* Index of the block where x belongs: the first whose last value >= x, or
 * the last block. Needs at least one block. */
static uint32_t find_block(const multiset *ms, double x) {
    uint32_t lo = 0, hi = ms->nblocks - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const block *b = &ms->blocks[mid];
        if (b->values[b->count - 1] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Split block i into pieces of at most BLOCK_HALF values: its tail moves
 * into new blocks of capacity BLOCK_CAP, taken from the end so that no
 * value moves twice, and block i keeps the first piece, shrunk to capacity
 * BLOCK_CAP. Out of memory part way leaves a valid, less split set, and
 * returns 0. */
static int split_block(multiset *ms, uint32_t i) {
    uint32_t parts = (ms->blocks[i].count + BLOCK_HALF - 1) / BLOCK_HALF;
    if (parts > 1) {
        if (!reserve_blocks(ms, parts - 1)) return 0;
        block *blocks = ms->blocks;
        uint32_t after = ms->nblocks - i - 1; /* blocks after block i */
        memmove(&blocks[i + parts], &blocks[i + 1], after * sizeof(block));
        /* blocks[i + 1 .. i + parts - 1] are holes, filled from the end */
        uint32_t made = 0;
        while (made < parts - 1) {
            double *values = (double *)malloc(BLOCK_CAP * sizeof(double));
            if (values == NULL) break;
            blocks[i].count -= BLOCK_HALF;
            memcpy(values, blocks[i].values + blocks[i].count, BLOCK_HALF * sizeof(double));
            blocks[i + parts - 1 - made] = (block){values, BLOCK_HALF, BLOCK_CAP};
            made++;
        }
        if (made < parts - 1) /* close the remaining holes */
            memmove(&blocks[i + 1], &blocks[i + parts - made], (made + after) * sizeof(block));
        ms->nblocks += made;
        if (made < parts - 1) return 0;
    }
    block *b = &ms->blocks[i];
    if (b->cap > BLOCK_CAP) {
        double *smaller = (double *)realloc(b->values, BLOCK_CAP * sizeof(double));
        if (smaller == NULL) return 0;
        b->values = smaller;
        b->cap = BLOCK_CAP;
    }
    return 1;
}

/* Make block i an ordinary block with room for one more value: split it if
 * it is larger than BLOCK_CAP (only a bulk-loaded block can be) or full. */
static int prepare_block(multiset *ms, uint32_t i) {
    const block *b = &ms->blocks[i];
    if (b->cap > BLOCK_CAP || b->count == BLOCK_CAP) return split_block(ms, i);
    return 1;
}

static int insert_value(multiset *ms, double x) {
    if (ms->nblocks == 0) {
        if (!reserve_blocks(ms, 1)) return 0;
        double *values = (double *)malloc(BLOCK_CAP * sizeof(double));
        if (values == NULL) return 0;
        ms->blocks[0] = (block){values, 0, BLOCK_CAP};
        ms->nblocks = 1;
    }
    uint32_t i = find_block(ms, x);
    if (!prepare_block(ms, i)) return 0;
    i = find_block(ms, x); /* it may have been split */
    block *b = &ms->blocks[i];
    if (b->count == b->cap) { /* a small block taken over from pending */
        uint32_t cap = b->cap;
        if (!grow_array((void **)&b->values, &cap, b->count + 1, sizeof(double))) return 0;
        b->cap = cap;
    }
    uint32_t lo = 0, hi = b->count; /* first value > x */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (b->values[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    memmove(&b->values[lo + 1], &b->values[lo], (b->count - lo) * sizeof(double));
    b->values[lo] = x;
    b->count++;
    ms->size++;
    return 1;
}

/* Sort the pending values in. Returns 0 when out of memory; the values not
 * yet inserted then stay pending, so the set is unchanged as a whole. */
static int multiset_flush(multiset *ms) {
    if (ms->npending == 0) return 1;
    if (ms->pending_unsorted) qsort(ms->pending, ms->npending, sizeof(double), compare_doubles);
    ms->pending_unsorted = 0; /* sorted now, and so is whatever stays pending below */
    if (ms->size == 0) { /* no blocks: adopt the sorted buffer as the only one */
        if (!reserve_blocks(ms, 1)) return 0;
        ms->blocks[0] = (block){ms->pending, ms->npending, ms->pending_cap};
        ms->nblocks = 1;
        ms->size = ms->npending;
        ms->pending = NULL;
        ms->npending = ms->pending_cap = 0;
        return 1;
    }
    for (uint32_t k = 0; k < ms->npending; k++) {
        if (!insert_value(ms, ms->pending[k])) {
            memmove(ms->pending, ms->pending + k, (ms->npending - k) * sizeof(double));
            ms->npending -= k;
            return 0;
        }
    }
    ms->npending = 0;
    return 1;
}

/* Remove one value equal to x. Returns 1 on success, 0 when out of memory,
 * -1 when x is not in the set. Needs a flushed set. */
static int multiset_remove(multiset *ms, double x) {
    if (ms->nblocks == 0) return -1;
    uint32_t i = find_block(ms, x);
    if (ms->blocks[i].cap > BLOCK_CAP) {
        if (!split_block(ms, i)) return 0;
        i = find_block(ms, x);
    }
    block *b = &ms->blocks[i];
    uint32_t lo = 0, hi = b->count; /* first value >= x */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (b->values[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    if (lo == b->count || b->values[lo] != x) return -1;
    memmove(&b->values[lo], &b->values[lo + 1], (b->count - lo - 1) * sizeof(double));
    b->count--;
    ms->size--;

    if (b->count == 0) { /* drop the empty block */
        free(b->values);
        memmove(b, b + 1, (ms->nblocks - i - 1) * sizeof(block));
        ms->nblocks--;
        return 1;
    }
    /* Merge with a neighbour when both fit in half a block. */
    uint32_t left = i;
    if (i > 0 && ms->blocks[i - 1].count + b->count <= BLOCK_HALF) left = i - 1;
    else if (i + 1 < ms->nblocks && ms->blocks[i + 1].count + b->count <= BLOCK_HALF) left = i;
    else return 1;
    block *into = &ms->blocks[left], *from = &ms->blocks[left + 1];
    if (into->cap < into->count + from->count) return 1; /* a small adopted block: no room */
    memcpy(into->values + into->count, from->values, from->count * sizeof(double));
    into->count += from->count;
    free(from->values);
    memmove(from, from + 1, (ms->nblocks - left - 2) * sizeof(block));
    ms->nblocks--;
    return 1;
}

/* The k-th smallest value (0-based, k < size) of a flushed set. */
static double multiset_kth(const multiset *ms, uint32_t k) {
    uint32_t i = 0;
    while (k >= ms->blocks[i].count) k -= ms->blocks[i++].count;
    return ms->blocks[i].values[k];
}

/* Continuous quantile at p in [0, 1] (linear interpolation between order
 * statistics at position p * (n - 1)) of a flushed, non-empty set. */
static double multiset_quantile(const multiset *ms, double p) {
    double position = p * (double)(ms->size - 1);
    double below = floor(position);
    uint32_t k = (uint32_t)below;
    double t = position - below;
    double a = multiset_kth(ms, k);
    if (t == 0.0 || k + 1 >= ms->size) return a;
    return interpolate(a, multiset_kth(ms, k + 1), t);
}

/* Median of a flushed, non-empty set: the middle value, or the midpoint of
 * the two middle values. */
static double multiset_median(const multiset *ms) {
    uint32_t n = ms->size;
    double upper = multiset_kth(ms, n / 2);
    return n % 2 ? upper : midpoint(multiset_kth(ms, n / 2 - 1), upper);
}

/* Most frequent value of a flushed, non-empty set; the smallest on ties. */
static double multiset_mode(const multiset *ms) {
    double best = 0.0, run_value = 0.0;
    uint32_t best_count = 0, run_count = 0;
    for (uint32_t i = 0; i < ms->nblocks; i++) {
        const block *b = &ms->blocks[i];
        for (uint32_t j = 0; j < b->count; j++) {
            if (run_count > 0 && b->values[j] == run_value) {
                run_count++;
            } else {
                run_value = b->values[j];
                run_count = 1;
            }
            if (run_count > best_count) { /* strictly: earlier (smaller) wins ties */
                best = run_value;
                best_count = run_count;
            }
        }
    }
    return best;
}

/* ------------------------------------------------------------------------
 * stats_median, stats_percentile, stats_mode (msgpack; windows)
 * ------------------------------------------------------------------------ */

typedef struct {
    state_header header;
    multiset values;
    double p;  /* stats_percentile: the p of the group */
    int has_p; /* p was set by a first row */
} values_state;

static values_state *values_of(int32_t handle) { return handle_state(handle, STATE_VALUES); }

SQLWASM_EXPORT(values_init)
int32_t values_init(void) {
    values_state *s = (values_state *)calloc(1, sizeof *s);
    if (s == NULL) return 0;
    s->header.kind = STATE_VALUES;
    int32_t handle = handle_open(&s->header);
    if (handle == 0) free(s);
    return handle;
}

static void values_release(int32_t handle, values_state *s) {
    multiset_free(&s->values);
    free(s);
    handle_close(handle);
}

SQLWASM_EXPORT(values_drop)
void values_drop(int32_t handle) {
    values_state *s = values_of(handle);
    if (s != NULL) values_release(handle, s);
}

static int64_t add_value(values_state *s, double x) {
    if (isnan(x)) return sqlwasm_return_error("value is NaN");
    if (!multiset_add(&s->values, x))
        return sqlwasm_return_errorf("out of memory (holding %u values)",
                                     multiset_count(&s->values));
    return 0;
}

static int64_t remove_value(values_state *s, double x) {
    if (!multiset_flush(&s->values))
        return sqlwasm_return_errorf("out of memory (holding %u values)",
                                     multiset_count(&s->values));
    int removed = multiset_remove(&s->values, x);
    if (removed < 0) {
        char text[32];
        format_real(text, sizeof text, x);
        return sqlwasm_return_errorf("inverse: value %s is not in the window", text);
    }
    if (removed == 0) return sqlwasm_return_error("out of memory");
    return 0;
}

/* step / inverse of stats_median and stats_mode: one real argument. */
SQLWASM_EXPORT(values_step)
int64_t values_step(int32_t handle, const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[1];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "r", a, &err)) return err;
    values_state *s = values_of(handle);
    return s ? add_value(s, a[0].real) : bad_handle(handle);
}

SQLWASM_EXPORT(values_inverse)
int64_t values_inverse(int32_t handle, const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[1];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "r", a, &err)) return err;
    values_state *s = values_of(handle);
    return s ? remove_value(s, a[0].real) : bad_handle(handle);
}

/* step / inverse of stats_percentile: (x, p), p in [0, 1] and the same for
 * every row. */
static int64_t percentile_row(int32_t handle, const uint8_t *row, uint32_t len, int inverse) {
    sqlwasm_arg a[2];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "rr", a, &err)) return err;
    values_state *s = values_of(handle);
    if (s == NULL) return bad_handle(handle);
    double p = a[1].real;
    char text[32], first[32];
    if (!(p >= 0.0 && p <= 1.0)) {
        format_real(text, sizeof text, p);
        return sqlwasm_return_errorf("p must be between 0 and 1, got %s", text);
    }
    if (!s->has_p) {
        s->p = p;
        s->has_p = 1;
    } else if (p != s->p) {
        format_real(text, sizeof text, p);
        format_real(first, sizeof first, s->p);
        return sqlwasm_return_errorf("p must be the same for every row of the group, "
                                     "got %s after %s", text, first);
    }
    return inverse ? remove_value(s, a[0].real) : add_value(s, a[0].real);
}

SQLWASM_EXPORT(percentile_step)
int64_t percentile_step(int32_t handle, const uint8_t *row, uint32_t len) {
    return percentile_row(handle, row, len, 0);
}

SQLWASM_EXPORT(percentile_inverse)
int64_t percentile_inverse(int32_t handle, const uint8_t *row, uint32_t len) {
    return percentile_row(handle, row, len, 1);
}

typedef enum { SUMMARY_MEDIAN, SUMMARY_PERCENTILE, SUMMARY_MODE } summary;

/* A real result; NaN (from -inf and +inf together) is NULL. */
static int64_t return_real(double x) {
    return isnan(x) ? sqlwasm_return_nil() : sqlwasm_return_double(x);
}

/* The result of a value/final call; final also releases the state. */
static int64_t values_result(int32_t handle, summary what, int release) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    values_state *s = values_of(handle);
    if (s == NULL) return bad_handle(handle);
    int64_t result;
    if (!multiset_flush(&s->values)) {
        result = sqlwasm_return_errorf("out of memory (holding %u values)",
                                       multiset_count(&s->values));
    } else if (s->values.size == 0) {
        result = sqlwasm_return_nil();
    } else if (what == SUMMARY_MEDIAN) {
        result = return_real(multiset_median(&s->values));
    } else if (what == SUMMARY_PERCENTILE) {
        result = return_real(multiset_quantile(&s->values, s->p));
    } else {
        result = return_real(multiset_mode(&s->values));
    }
    if (release) values_release(handle, s);
    return result;
}

SQLWASM_EXPORT(median_value)
int64_t median_value(int32_t handle) { return values_result(handle, SUMMARY_MEDIAN, 0); }

SQLWASM_EXPORT(median_final)
int64_t median_final(int32_t handle) { return values_result(handle, SUMMARY_MEDIAN, 1); }

SQLWASM_EXPORT(percentile_value)
int64_t percentile_value(int32_t handle) { return values_result(handle, SUMMARY_PERCENTILE, 0); }

SQLWASM_EXPORT(percentile_final)
int64_t percentile_final(int32_t handle) { return values_result(handle, SUMMARY_PERCENTILE, 1); }

SQLWASM_EXPORT(mode_value)
int64_t mode_value(int32_t handle) { return values_result(handle, SUMMARY_MODE, 0); }

SQLWASM_EXPORT(mode_final)
int64_t mode_final(int32_t handle) { return values_result(handle, SUMMARY_MODE, 1); }

/* Serialized (TAG_VALUES), 16 bytes then the values: tag u8, has_p u8 (0
 * or 1), two zero bytes, count u32, p f64 (0 without p), then the count
 * values, f64 in ascending total order. All values are kept, so median,
 * percentile and mode stay exact. A state only gets a p from a
 * stats_percentile row; merging a p into a state with another p fails. */
#define VALUES_HEADER 16u

/* Within a run of values sorted by compare_doubles, zeros of both signs
 * are mixed: put -0 first, so that the order is total. */
static void order_zeros(double *values, uint32_t count) {
    uint32_t start = 0;
    while (start < count && values[start] < 0.0) start++;
    uint32_t negative = 0, end = start;
    for (; end < count && values[end] == 0.0; end++) negative += signbit(values[end]) != 0;
    for (uint32_t i = start; i < end; i++) values[i] = i - start < negative ? -0.0 : 0.0;
}

SQLWASM_EXPORT(values_serialize)
int64_t values_serialize(int32_t handle) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    values_state *s = values_of(handle);
    if (s == NULL || !multiset_flush(&s->values)) return 0;
    uint32_t count = s->values.size;
    if (count > (UINT32_MAX - VALUES_HEADER) / 8u) return 0;
    uint32_t len = VALUES_HEADER + count * 8u;
    uint8_t *bytes = (uint8_t *)sqlwasm_arena_alloc(len);
    if (bytes == NULL) return 0;
    byte_writer w = {bytes};
    put_u8(&w, TAG_VALUES);
    put_u8(&w, (uint8_t)(s->has_p != 0));
    put_u8(&w, 0);
    put_u8(&w, 0);
    put_u32(&w, count);
    put_f64(&w, s->has_p ? s->p : 0.0);
    double *values = (double *)(void *)w.at; /* 8-aligned: the arena is, and so is 16 */
    uint32_t at = 0;
    for (uint32_t i = 0; i < s->values.nblocks; i++) {
        const block *b = &s->values.blocks[i];
        memcpy(values + at, b->values, (size_t)b->count * sizeof(double));
        at += b->count;
    }
    order_zeros(values, count);
    return sqlwasm_result(bytes, len);
}

SQLWASM_EXPORT(values_merge)
int32_t values_merge(int32_t handle, const uint8_t *ptr, uint32_t len) {
    values_state *s = values_of(handle);
    if (s == NULL) return MERGE_MALFORMED;
    byte_reader r = {ptr, len, 0};
    uint8_t tag = take_u8(&r), has_p = take_u8(&r);
    uint8_t pad0 = take_u8(&r), pad1 = take_u8(&r);
    uint32_t count = take_u32(&r);
    double p = take_f64(&r);
    if (r.error || tag != TAG_VALUES || has_p > 1 || pad0 != 0 || pad1 != 0) return MERGE_MALFORMED;
    if (has_p ? !(p >= 0.0 && p <= 1.0) : memcmp(&p, &(double){0.0}, 8) != 0)
        return MERGE_MALFORMED;
    if (has_p && s->has_p && p != s->p) return MERGE_MALFORMED; /* another p */
    const uint8_t *values = take_sorted_values(&r, count, 0);
    if (values == NULL || r.error || r.left != 0) return MERGE_MALFORMED;
    multiset *ms = &s->values;
    if (count > UINT32_MAX - multiset_count(ms)) return MERGE_OUT_OF_MEMORY;
    double *sorted = (double *)malloc((size_t)(count ? count : 1) * sizeof(double)); /* aligned copy */
    if (sorted == NULL) return MERGE_OUT_OF_MEMORY;
    memcpy(sorted, values, (size_t)count * sizeof(double));
    int added = multiset_add_sorted(ms, sorted, count);
    free(sorted);
    if (!added) return MERGE_OUT_OF_MEMORY;
    if (has_p && !s->has_p) {
        s->p = p;
        s->has_p = 1;
    }
    return MERGE_OK;
}

/* ------------------------------------------------------------------------
 * stats_histogram(x, bins) (msgpack; aggregate only)
 *
 * JSON {"min":..,"max":..,"counts":[...]}: `bins` equal-width bins over
 * [min, max]; value x goes to bin floor((x - min) / (max - min) * bins),
 * the maximum into the last bin; when all values are equal, all go to the
 * first. Values must be finite; bins is 1..1000, the same for every row.
 * ------------------------------------------------------------------------ */

#define MAX_BINS 1000

typedef struct {
    state_header header;
    double *values;
    uint32_t count;
    uint32_t cap;
    double min, max;
    int64_t bins; /* 0 until the first row */
} histogram_state;

static histogram_state *histogram_of(int32_t handle) {
    return handle_state(handle, STATE_HISTOGRAM);
}

SQLWASM_EXPORT(histogram_init)
int32_t histogram_init(void) {
    histogram_state *s = (histogram_state *)calloc(1, sizeof *s);
    if (s == NULL) return 0;
    s->header.kind = STATE_HISTOGRAM;
    int32_t handle = handle_open(&s->header);
    if (handle == 0) free(s);
    return handle;
}

static void histogram_release(int32_t handle, histogram_state *s) {
    free(s->values);
    free(s);
    handle_close(handle);
}

SQLWASM_EXPORT(histogram_drop)
void histogram_drop(int32_t handle) {
    histogram_state *s = histogram_of(handle);
    if (s != NULL) histogram_release(handle, s);
}

/* Append x (room made) and widen [min, max]; between zeros of both signs
 * the min is -0 and the max +0, whatever order they came in. */
static void histogram_add(histogram_state *s, double x) {
    if (s->count == 0 || compare_total(&x, &s->min) < 0) s->min = x;
    if (s->count == 0 || compare_total(&x, &s->max) > 0) s->max = x;
    s->values[s->count++] = x;
}

SQLWASM_EXPORT(histogram_step)
int64_t histogram_step(int32_t handle, const uint8_t *row, uint32_t len) {
    sqlwasm_arg a[2];
    int64_t err;
    if (!sqlwasm_read_args(row, len, "ri", a, &err)) return err;
    histogram_state *s = histogram_of(handle);
    if (s == NULL) return bad_handle(handle);
    double x = a[0].real;
    int64_t bins = a[1].integer;
    if (bins < 1 || bins > MAX_BINS)
        return sqlwasm_return_errorf("bins must be between 1 and %d, got %lld", MAX_BINS,
                                     (long long)bins);
    if (s->bins == 0) s->bins = bins;
    else if (bins != s->bins)
        return sqlwasm_return_errorf("bins must be the same for every row of the group, "
                                     "got %lld after %lld", (long long)bins, (long long)s->bins);
    if (!isfinite(x)) return sqlwasm_return_error("values must be finite numbers");
    if (!grow_array((void **)&s->values, &s->cap, s->count + 1, sizeof(double)))
        return sqlwasm_return_errorf("out of memory (holding %u values)", s->count);
    histogram_add(s, x);
    return 0;
}

/* Bin of x in [min, max] split into `bins` equal parts. */
static int64_t bin_of(double x, double min, double max, int64_t bins) {
    double span = max - min;
    double fraction = isfinite(span) ? (x - min) / span /* halves when the span overflows: */
                                     : (x / 2.0 - min / 2.0) / (max / 2.0 - min / 2.0);
    double position = floor(fraction * (double)bins);
    if (position < 0.0) return 0;
    if (position >= (double)bins) return bins - 1;
    return (int64_t)position;
}

SQLWASM_EXPORT(histogram_final)
int64_t histogram_final(int32_t handle) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    histogram_state *s = histogram_of(handle);
    if (s == NULL) return bad_handle(handle);
    int64_t result;
    uint32_t *counts = NULL;
    /* 32 characters of keys and brackets, min and max at most 24 each, each
     * count at most 10 digits and a comma. */
    size_t text_cap = 128 + (size_t)s->bins * 11;
    char *text = NULL;
    if (s->count > 0) {
        counts = (uint32_t *)sqlwasm_arena_alloc((size_t)s->bins * sizeof(uint32_t));
        text = (char *)sqlwasm_arena_alloc(text_cap);
    }
    if (s->count == 0) {
        result = sqlwasm_return_nil();
    } else if (counts == NULL || text == NULL) {
        result = sqlwasm_return_error("out of memory");
    } else {
        memset(counts, 0, (size_t)s->bins * sizeof(uint32_t));
        if (s->max == s->min) counts[0] = s->count;
        else
            for (uint32_t i = 0; i < s->count; i++)
                counts[bin_of(s->values[i], s->min, s->max, s->bins)]++;
        char min_text[32], max_text[32];
        format_real(min_text, sizeof min_text, s->min);
        format_real(max_text, sizeof max_text, s->max);
        size_t n = (size_t)snprintf(text, text_cap, "{\"min\":%s,\"max\":%s,\"counts\":[",
                                    min_text, max_text);
        for (int64_t b = 0; b < s->bins; b++)
            n += (size_t)snprintf(text + n, text_cap - n, b ? ",%u" : "%u", counts[b]);
        n += (size_t)snprintf(text + n, text_cap - n, "]}");
        result = sqlwasm_return_text(text, (uint32_t)n);
    }
    histogram_release(handle, s);
    return result;
}

/* Serialized (TAG_HISTOGRAM), 12 bytes then the values: tag u8, three zero
 * bytes, bins u32 (0 before the first row, else 1..MAX_BINS), count u32,
 * then the count values, finite f64 in ascending total order. The values
 * are all kept because the bins span the min and max of all rows. Merging
 * a different bins fails; a state that never saw a row has bins 0. */
#define HISTOGRAM_HEADER 12u

SQLWASM_EXPORT(histogram_serialize)
int64_t histogram_serialize(int32_t handle) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    histogram_state *s = histogram_of(handle);
    if (s == NULL || s->count > (UINT32_MAX - HISTOGRAM_HEADER - 4u) / 8u) return 0;
    /* 4 bytes of padding before the values keep them 8-aligned for sorting */
    uint8_t *bytes = (uint8_t *)sqlwasm_arena_alloc(4u + HISTOGRAM_HEADER + s->count * 8u);
    if (bytes == NULL) return 0;
    bytes += 4;
    byte_writer w = {bytes};
    put_u8(&w, TAG_HISTOGRAM);
    put_u8(&w, 0);
    put_u8(&w, 0);
    put_u8(&w, 0);
    put_u32(&w, (uint32_t)s->bins);
    put_u32(&w, s->count);
    double *values = (double *)(void *)w.at;
    memcpy(values, s->values, (size_t)s->count * sizeof(double));
    qsort(values, s->count, sizeof(double), compare_total);
    return sqlwasm_result(bytes, HISTOGRAM_HEADER + s->count * 8u);
}

SQLWASM_EXPORT(histogram_merge)
int32_t histogram_merge(int32_t handle, const uint8_t *ptr, uint32_t len) {
    histogram_state *s = histogram_of(handle);
    if (s == NULL) return MERGE_MALFORMED;
    byte_reader r = {ptr, len, 0};
    uint8_t tag = take_u8(&r), pad0 = take_u8(&r), pad1 = take_u8(&r), pad2 = take_u8(&r);
    uint32_t bins = take_u32(&r), count = take_u32(&r);
    if (r.error || tag != TAG_HISTOGRAM || pad0 != 0 || pad1 != 0 || pad2 != 0) return MERGE_MALFORMED;
    if (bins > MAX_BINS || (bins == 0 && count > 0)) return MERGE_MALFORMED;
    if (bins != 0 && s->bins != 0 && (int64_t)bins != s->bins) return MERGE_MALFORMED;
    const uint8_t *values = take_sorted_values(&r, count, 1);
    if (values == NULL || r.error || r.left != 0) return MERGE_MALFORMED;
    if (count > UINT32_MAX - s->count) return MERGE_OUT_OF_MEMORY;
    if (!grow_array((void **)&s->values, &s->cap, s->count + count, sizeof(double)))
        return MERGE_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < count; i++) {
        double x;
        memcpy(&x, values + (size_t)i * 8u, 8);
        histogram_add(s, x);
    }
    if (bins != 0) s->bins = bins;
    return MERGE_OK;
}

/* ------------------------------------------------------------------------
 * Running moments (raw ABI)
 *
 * Welford's updates; a window's inverse applies the exact inverse update.
 * Downdating leaves rounding residue where the true sum of squares is 0
 * (a window of equal values after a large value left it, say), and a ratio
 * of such residues (a correlation) is meaningless. So each sum also tracks
 * `noise`, the root-sum-square of the rounding-error scale of all its
 * updates, |x - old mean| * (|x| + |new mean|). Once a row has been
 * removed, a sum within NOISE_FACTOR * DBL_EPSILON * noise of zero counts
 * as zero (the observed error stays below 12 times that scale). A plain
 * aggregate never removes: its sums of squares add non-negative terms, are
 * exactly zero for constant data, and are used as they are.
 * ------------------------------------------------------------------------ */

#define NOISE_FACTOR 64.0

/* Rounding-error scale of one update by value x, whose deviation from the
 * old mean is d, leaving the mean at `mean`. */
static double error_scale(double d, double x, double mean) {
    return fabs(d) * (fabs(x) + fabs(mean));
}

/* sum, or 0 when it is within rounding noise of 0 after removals. */
static double denoise(double sum, double noise, int64_t removals) {
    if (removals > 0 && fabs(sum) <= NOISE_FACTOR * DBL_EPSILON * noise) return 0.0;
    return sum;
}

/* Trap: a raw export has no other way to fail. */
static void *raw_state(int32_t handle, state_kind kind) {
    void *state = handle_state(handle, kind);
    if (state == NULL) __builtin_trap();
    return state;
}

static int32_t raw_init(size_t size, state_kind kind) {
    state_header *s = (state_header *)calloc(1, size);
    if (s == NULL) __builtin_trap();
    s->kind = kind;
    int32_t handle = handle_open(s);
    if (handle == 0) __builtin_trap();
    return handle;
}

static void raw_drop(int32_t handle, state_kind kind) {
    void *state = handle_state(handle, kind);
    if (state == NULL) return;
    free(state);
    handle_close(handle);
}

/* --- stats_variance, stats_stddev, stats_variance_pop, stats_stddev_pop */

typedef struct {
    state_header header;
    int64_t n;         /* finite values */
    int64_t nonfinite; /* infinite (or NaN) values: the result is NULL */
    int64_t removals;  /* finite values removed since the state was last empty */
    double mean;
    double m2; /* sum of squared deviations from the mean */
    double noise;
} moments_state;

SQLWASM_EXPORT(moments_init)
int32_t moments_init(void) { return raw_init(sizeof(moments_state), STATE_MOMENTS); }

SQLWASM_EXPORT(moments_drop)
void moments_drop(int32_t handle) { raw_drop(handle, STATE_MOMENTS); }

SQLWASM_EXPORT(moments_step)
void moments_step(int32_t handle, double x) {
    moments_state *m = raw_state(handle, STATE_MOMENTS);
    if (!isfinite(x)) {
        m->nonfinite++;
        return;
    }
    m->n++;
    double delta = x - m->mean;
    m->mean += delta / (double)m->n;
    m->m2 += delta * (x - m->mean);
    m->noise = hypot(m->noise, error_scale(delta, x, m->mean));
}

SQLWASM_EXPORT(moments_inverse)
void moments_inverse(int32_t handle, double x) {
    moments_state *m = raw_state(handle, STATE_MOMENTS);
    if (!isfinite(x)) {
        if (m->nonfinite > 0) m->nonfinite--;
        return;
    }
    if (m->n <= 1) { /* no finite value left: start clean */
        m->n = m->removals = 0;
        m->mean = m->m2 = m->noise = 0.0;
        return;
    }
    m->n--;
    m->removals++;
    double delta = x - m->mean;
    m->mean -= delta / (double)m->n;
    m->m2 -= delta * (x - m->mean);
    m->noise = hypot(m->noise, error_scale(delta, x, m->mean));
    if (m->n == 1) m->m2 = 0.0; /* one value has no spread, exactly */
}

/* m2 / (n - ddof), or NaN (NULL) when undefined. */
static double moments_variance(int32_t handle, int64_t ddof) {
    const moments_state *m = raw_state(handle, STATE_MOMENTS);
    if (m->nonfinite > 0 || m->n <= ddof) return NAN;
    double m2 = denoise(m->m2, m->noise, m->removals);
    return (m2 > 0.0 ? m2 : 0.0) / (double)(m->n - ddof);
}

static double moments_finish(int32_t handle, double result) {
    moments_drop(handle);
    return result;
}

SQLWASM_EXPORT(variance_value)
double variance_value(int32_t handle) { return moments_variance(handle, 1); }

SQLWASM_EXPORT(variance_final)
double variance_final(int32_t handle) { return moments_finish(handle, variance_value(handle)); }

SQLWASM_EXPORT(stddev_value)
double stddev_value(int32_t handle) { return sqrt(moments_variance(handle, 1)); }

SQLWASM_EXPORT(stddev_final)
double stddev_final(int32_t handle) { return moments_finish(handle, stddev_value(handle)); }

SQLWASM_EXPORT(variance_pop_value)
double variance_pop_value(int32_t handle) { return moments_variance(handle, 0); }

SQLWASM_EXPORT(variance_pop_final)
double variance_pop_final(int32_t handle) {
    return moments_finish(handle, variance_pop_value(handle));
}

SQLWASM_EXPORT(stddev_pop_value)
double stddev_pop_value(int32_t handle) { return sqrt(moments_variance(handle, 0)); }

SQLWASM_EXPORT(stddev_pop_final)
double stddev_pop_final(int32_t handle) { return moments_finish(handle, stddev_pop_value(handle)); }

/* Serialized (TAG_MOMENTS), 40 bytes: tag u8, seven zero bytes, n i64,
 * nonfinite i64, mean f64, m2 f64 (denoised, so a window's rounding
 * residue does not travel). Merging is Chan et al.'s pairwise update. */
#define MOMENTS_BYTES 40u

/* Mean of a group of na values (mean a) and one of nb (mean b), with
 * delta = b - a; without overflow when delta does. */
static double pooled_mean(double a, double b, double delta, double na, double nb) {
    double n = na + nb;
    return isfinite(delta) ? a + delta * (nb / n) : a * (na / n) + b * (nb / n);
}

/* Reads n bytes of padding: 1 when all are zero. */
static int take_padding(byte_reader *r, uint32_t n) {
    int zero = 1;
    for (uint32_t i = 0; i < n; i++) zero &= take_u8(r) == 0;
    return zero;
}

SQLWASM_EXPORT(moments_serialize)
int64_t moments_serialize(int32_t handle) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    const moments_state *m = handle_state(handle, STATE_MOMENTS);
    uint8_t *bytes = m ? (uint8_t *)sqlwasm_arena_alloc(MOMENTS_BYTES) : NULL;
    if (bytes == NULL) return 0;
    double m2 = denoise(m->m2, m->noise, m->removals);
    byte_writer w = {bytes};
    memset(bytes, 0, MOMENTS_BYTES);
    put_u8(&w, TAG_MOMENTS);
    w.at += 7;
    put_i64(&w, m->n);
    put_i64(&w, m->nonfinite);
    put_f64(&w, m->mean);
    put_f64(&w, m2 > 0.0 ? m2 : 0.0);
    return sqlwasm_result(bytes, MOMENTS_BYTES);
}

SQLWASM_EXPORT(moments_merge)
int32_t moments_merge(int32_t handle, const uint8_t *ptr, uint32_t len) {
    moments_state *m = handle_state(handle, STATE_MOMENTS);
    if (m == NULL) return MERGE_MALFORMED;
    byte_reader r = {ptr, len, 0};
    int tag_ok = take_u8(&r) == TAG_MOMENTS && take_padding(&r, 7);
    int64_t n = take_i64(&r), nonfinite = take_i64(&r);
    double mean = take_f64(&r), m2 = take_f64(&r);
    if (r.error || r.left != 0 || !tag_ok) return MERGE_MALFORMED;
    if (!counter_fits(m->n, n) || !counter_fits(m->nonfinite, nonfinite)) return MERGE_MALFORMED;
    if (!isfinite(mean) || !(m2 >= 0.0 && m2 <= DBL_MAX)) return MERGE_MALFORMED;
    if ((n == 0 && (mean != 0.0 || m2 != 0.0)) || (n == 1 && m2 != 0.0)) return MERGE_MALFORMED;
    if (n == 0) {
        m->nonfinite += nonfinite;
        return MERGE_OK;
    }
    if (m->n == 0) {
        m->nonfinite += nonfinite;
        m->n = n;
        m->mean = mean;
        m->m2 = m2;
        return MERGE_OK;
    }
    double na = (double)m->n, nb = (double)n;
    double delta = mean - m->mean;
    double correction = delta * delta * (na * (nb / (na + nb)));
    double merged_mean = pooled_mean(m->mean, mean, delta, na, nb), merged_m2 = m->m2 + (m2 + correction);
    /* Refused whole, before any change: a state whose sums overflow is not one rows made. */
    if (!isfinite(merged_mean) || !(merged_m2 <= DBL_MAX)) return MERGE_MALFORMED;
    m->nonfinite += nonfinite;
    m->mean = merged_mean;
    m->m2 = merged_m2;
    m->noise = hypot(m->noise, m2 + correction);
    m->n += n;
    return MERGE_OK;
}

/* --- stats_covariance, stats_correlation */

typedef struct {
    state_header header;
    int64_t n;
    int64_t nonfinite; /* rows with a non-finite x or y: the result is NULL */
    int64_t removals;
    double mean_x, mean_y;
    double m2_x, m2_y; /* sums of squared deviations */
    double c_xy;       /* sum of products of deviations */
    double noise_x, noise_y, noise_xy;
} comoments_state;

SQLWASM_EXPORT(comoments_init)
int32_t comoments_init(void) { return raw_init(sizeof(comoments_state), STATE_COMOMENTS); }

SQLWASM_EXPORT(comoments_drop)
void comoments_drop(int32_t handle) { raw_drop(handle, STATE_COMOMENTS); }

/* Add (sign 1) or remove (sign -1) the finite row (x, y), n already
 * counted: with dx = x - old mean_x (likewise dy), the sums change by
 * dx * (x - new mean_x), dy * (y - new mean_y) and dx * (y - new mean_y). */
static void comoments_update(comoments_state *c, double x, double y, double sign) {
    double dx = x - c->mean_x, dy = y - c->mean_y;
    c->mean_x += sign * dx / (double)c->n;
    c->mean_y += sign * dy / (double)c->n;
    c->m2_x += sign * dx * (x - c->mean_x);
    c->m2_y += sign * dy * (y - c->mean_y);
    c->c_xy += sign * dx * (y - c->mean_y);
    double scale_x = error_scale(dx, x, c->mean_x), scale_y = error_scale(dy, y, c->mean_y);
    c->noise_x = hypot(c->noise_x, scale_x);
    c->noise_y = hypot(c->noise_y, scale_y);
    c->noise_xy = hypot(c->noise_xy, sqrt(scale_x) * sqrt(scale_y));
}

SQLWASM_EXPORT(comoments_step)
void comoments_step(int32_t handle, double x, double y) {
    comoments_state *c = raw_state(handle, STATE_COMOMENTS);
    if (!isfinite(x) || !isfinite(y)) {
        c->nonfinite++;
        return;
    }
    c->n++;
    comoments_update(c, x, y, 1.0);
}

SQLWASM_EXPORT(comoments_inverse)
void comoments_inverse(int32_t handle, double x, double y) {
    comoments_state *c = raw_state(handle, STATE_COMOMENTS);
    if (!isfinite(x) || !isfinite(y)) {
        if (c->nonfinite > 0) c->nonfinite--;
        return;
    }
    if (c->n <= 1) { /* no finite row left: start clean */
        *c = (comoments_state){.header = c->header, .nonfinite = c->nonfinite};
        return;
    }
    c->n--;
    c->removals++;
    comoments_update(c, x, y, -1.0);
    if (c->n == 1) c->m2_x = c->m2_y = c->c_xy = 0.0;
}

SQLWASM_EXPORT(covariance_value)
double covariance_value(int32_t handle) {
    const comoments_state *c = raw_state(handle, STATE_COMOMENTS);
    if (c->nonfinite > 0 || c->n < 2) return NAN;
    return denoise(c->c_xy, c->noise_xy, c->removals) / (double)(c->n - 1);
}

SQLWASM_EXPORT(covariance_final)
double covariance_final(int32_t handle) {
    double result = covariance_value(handle);
    comoments_drop(handle);
    return result;
}

SQLWASM_EXPORT(correlation_value)
double correlation_value(int32_t handle) {
    const comoments_state *c = raw_state(handle, STATE_COMOMENTS);
    if (c->nonfinite > 0 || c->n < 2) return NAN;
    double sx = denoise(c->m2_x, c->noise_x, c->removals);
    double sy = denoise(c->m2_y, c->noise_y, c->removals);
    if (!(sx > 0.0 && sy > 0.0)) return NAN; /* a constant input */
    double r = c->c_xy / (sqrt(sx) * sqrt(sy));
    return r > 1.0 ? 1.0 : r < -1.0 ? -1.0 : r;
}

SQLWASM_EXPORT(correlation_final)
double correlation_final(int32_t handle) {
    double result = correlation_value(handle);
    comoments_drop(handle);
    return result;
}

/* Serialized (TAG_COMOMENTS), 64 bytes: tag u8, seven zero bytes, n i64,
 * nonfinite i64, mean_x, mean_y, m2_x, m2_y, c_xy f64 (denoised). Merged
 * with Chan et al.'s pairwise update, the co-moment gaining
 * dx * dy * na * nb / n. */
#define COMOMENTS_BYTES 64u

SQLWASM_EXPORT(comoments_serialize)
int64_t comoments_serialize(int32_t handle) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    const comoments_state *c = handle_state(handle, STATE_COMOMENTS);
    uint8_t *bytes = c ? (uint8_t *)sqlwasm_arena_alloc(COMOMENTS_BYTES) : NULL;
    if (bytes == NULL) return 0;
    double m2_x = denoise(c->m2_x, c->noise_x, c->removals);
    double m2_y = denoise(c->m2_y, c->noise_y, c->removals);
    byte_writer w = {bytes};
    memset(bytes, 0, COMOMENTS_BYTES);
    put_u8(&w, TAG_COMOMENTS);
    w.at += 7;
    put_i64(&w, c->n);
    put_i64(&w, c->nonfinite);
    put_f64(&w, c->mean_x);
    put_f64(&w, c->mean_y);
    put_f64(&w, m2_x > 0.0 ? m2_x : 0.0);
    put_f64(&w, m2_y > 0.0 ? m2_y : 0.0);
    put_f64(&w, denoise(c->c_xy, c->noise_xy, c->removals));
    return sqlwasm_result(bytes, COMOMENTS_BYTES);
}

SQLWASM_EXPORT(comoments_merge)
int32_t comoments_merge(int32_t handle, const uint8_t *ptr, uint32_t len) {
    comoments_state *c = handle_state(handle, STATE_COMOMENTS);
    if (c == NULL) return MERGE_MALFORMED;
    byte_reader r = {ptr, len, 0};
    int tag_ok = take_u8(&r) == TAG_COMOMENTS && take_padding(&r, 7);
    int64_t n = take_i64(&r), nonfinite = take_i64(&r);
    double mean_x = take_f64(&r), mean_y = take_f64(&r);
    double m2_x = take_f64(&r), m2_y = take_f64(&r), c_xy = take_f64(&r);
    if (r.error || r.left != 0 || !tag_ok) return MERGE_MALFORMED;
    if (!counter_fits(c->n, n) || !counter_fits(c->nonfinite, nonfinite)) return MERGE_MALFORMED;
    if (!isfinite(mean_x) || !isfinite(mean_y) || !isfinite(c_xy)) return MERGE_MALFORMED;
    if (!(m2_x >= 0.0 && m2_x <= DBL_MAX && m2_y >= 0.0 && m2_y <= DBL_MAX)) return MERGE_MALFORMED;
    int spread = m2_x != 0.0 || m2_y != 0.0 || c_xy != 0.0;
    if ((n == 0 && (mean_x != 0.0 || mean_y != 0.0 || spread)) || (n == 1 && spread))
        return MERGE_MALFORMED;
    if (n == 0) {
        c->nonfinite += nonfinite;
        return MERGE_OK;
    }
    if (c->n == 0) {
        c->nonfinite += nonfinite;
        c->n = n;
        c->mean_x = mean_x;
        c->mean_y = mean_y;
        c->m2_x = m2_x;
        c->m2_y = m2_y;
        c->c_xy = c_xy;
        return MERGE_OK;
    }
    double na = (double)c->n, nb = (double)n, weight = na * (nb / (na + nb));
    double dx = mean_x - c->mean_x, dy = mean_y - c->mean_y;
    double add_x = m2_x + dx * dx * weight, add_y = m2_y + dy * dy * weight;
    double add_xy = c_xy + dx * dy * weight;
    double merged_mean_x = pooled_mean(c->mean_x, mean_x, dx, na, nb);
    double merged_mean_y = pooled_mean(c->mean_y, mean_y, dy, na, nb);
    /* Refused whole, before any change: a state whose sums overflow is not one rows made. */
    if (!isfinite(merged_mean_x) || !isfinite(merged_mean_y) || !(c->m2_x + add_x <= DBL_MAX) ||
        !(c->m2_y + add_y <= DBL_MAX) || !isfinite(c->c_xy + add_xy))
        return MERGE_MALFORMED;
    c->nonfinite += nonfinite;
    c->mean_x = merged_mean_x;
    c->mean_y = merged_mean_y;
    c->m2_x += add_x;
    c->m2_y += add_y;
    c->c_xy += add_xy;
    c->noise_x = hypot(c->noise_x, add_x);
    c->noise_y = hypot(c->noise_y, add_y);
    c->noise_xy = hypot(c->noise_xy, fabs(add_xy));
    c->n += n;
    return MERGE_OK;
}

/* --- stats_weighted_mean(x, w) = sum(w * x) / sum(w)
 *
 * Both sums are compensated (Neumaier), so adding and later removing the
 * same rows leaves (almost always exactly) what was there before, and a sum
 * of weights that is truly zero is seen as zero (NULL). Infinite products
 * are counted apart, so the sums are intact again when a window drops
 * them: one sign of infinity gives +-inf, both or a NaN (0 * inf, an
 * infinite weight) give NULL. */

typedef struct {
    double sum;
    double compensation; /* rounding error of sum so far */
} compensated;

static void compensated_add(compensated *c, double x) {
    double t = c->sum + x;
    if (fabs(c->sum) >= fabs(x)) c->compensation += (c->sum - t) + x;
    else c->compensation += (x - t) + c->sum;
    c->sum = t;
}

static double compensated_value(const compensated *c) { return c->sum + c->compensation; }

typedef struct {
    state_header header;
    int64_t rows;             /* rows with a finite weight (all in sum_w) */
    compensated sum_w;
    compensated sum_wx;       /* the finite products */
    int64_t pos_inf, neg_inf; /* products w * x that are +inf / -inf */
    int64_t invalid;          /* rows with a non-finite weight or a NaN product */
} weighted_state;

SQLWASM_EXPORT(weighted_init)
int32_t weighted_init(void) { return raw_init(sizeof(weighted_state), STATE_WEIGHTED); }

SQLWASM_EXPORT(weighted_drop)
void weighted_drop(int32_t handle) { raw_drop(handle, STATE_WEIGHTED); }

/* Count a row in (sign 1) or out (sign -1) of a counter of odd rows. */
static void count_row(int64_t *counter, int sign) {
    if (sign > 0 || *counter > 0) *counter += sign;
}

/* Add (sign 1) or remove (sign -1) one row. */
static void weighted_update(int32_t handle, double x, double w, int sign) {
    weighted_state *s = raw_state(handle, STATE_WEIGHTED);
    if (!isfinite(w)) {
        count_row(&s->invalid, sign);
        return;
    }
    double product = w * x;
    if (isnan(product)) count_row(&s->invalid, sign); /* 0 * inf */
    else if (product == INFINITY) count_row(&s->pos_inf, sign);
    else if (product == -INFINITY) count_row(&s->neg_inf, sign);
    if (sign < 0 && s->rows <= 1) { /* the last row leaves: start clean */
        s->rows = 0;
        s->sum_w = s->sum_wx = (compensated){0.0, 0.0};
        return;
    }
    s->rows += sign;
    compensated_add(&s->sum_w, sign * w);
    if (isfinite(product)) compensated_add(&s->sum_wx, sign * product);
}

SQLWASM_EXPORT(weighted_step)
void weighted_step(int32_t handle, double x, double w) { weighted_update(handle, x, w, 1); }

SQLWASM_EXPORT(weighted_inverse)
void weighted_inverse(int32_t handle, double x, double w) { weighted_update(handle, x, w, -1); }

SQLWASM_EXPORT(weighted_mean_value)
double weighted_mean_value(int32_t handle) {
    const weighted_state *s = raw_state(handle, STATE_WEIGHTED);
    double sum_w = compensated_value(&s->sum_w);
    if (s->invalid > 0 || sum_w == 0.0 || (s->pos_inf > 0 && s->neg_inf > 0)) return NAN;
    if (s->pos_inf > 0) return INFINITY / sum_w;
    if (s->neg_inf > 0) return -INFINITY / sum_w;
    return compensated_value(&s->sum_wx) / sum_w;
}

SQLWASM_EXPORT(weighted_mean_final)
double weighted_mean_final(int32_t handle) {
    double result = weighted_mean_value(handle);
    weighted_drop(handle);
    return result;
}

/* Serialized (TAG_WEIGHTED), 72 bytes: tag u8, seven zero bytes, rows,
 * pos_inf, neg_inf, invalid i64, then sum_w, its compensation, sum_wx, its
 * compensation f64. Merging adds the counters, each sum into the live
 * compensated sum and each compensation into its compensation (so merging
 * into an empty state copies the state exactly). */
#define WEIGHTED_BYTES 72u

SQLWASM_EXPORT(weighted_serialize)
int64_t weighted_serialize(int32_t handle) {
    sqlwasm_arena_reset(); /* no argument row to read: a new call starts here */
    const weighted_state *s = handle_state(handle, STATE_WEIGHTED);
    uint8_t *bytes = s ? (uint8_t *)sqlwasm_arena_alloc(WEIGHTED_BYTES) : NULL;
    if (bytes == NULL) return 0;
    byte_writer w = {bytes};
    memset(bytes, 0, WEIGHTED_BYTES);
    put_u8(&w, TAG_WEIGHTED);
    w.at += 7;
    put_i64(&w, s->rows);
    put_i64(&w, s->pos_inf);
    put_i64(&w, s->neg_inf);
    put_i64(&w, s->invalid);
    put_f64(&w, s->sum_w.sum);
    put_f64(&w, s->sum_w.compensation);
    put_f64(&w, s->sum_wx.sum);
    put_f64(&w, s->sum_wx.compensation);
    return sqlwasm_result(bytes, WEIGHTED_BYTES);
}

SQLWASM_EXPORT(weighted_merge)
int32_t weighted_merge(int32_t handle, const uint8_t *ptr, uint32_t len) {
    weighted_state *s = handle_state(handle, STATE_WEIGHTED);
    if (s == NULL) return MERGE_MALFORMED;
    byte_reader r = {ptr, len, 0};
    int tag_ok = take_u8(&r) == TAG_WEIGHTED && take_padding(&r, 7);
    int64_t rows = take_i64(&r), pos_inf = take_i64(&r), neg_inf = take_i64(&r);
    int64_t invalid = take_i64(&r);
    compensated sum_w, sum_wx; /* one read per statement: the order matters */
    sum_w.sum = take_f64(&r);
    sum_w.compensation = take_f64(&r);
    sum_wx.sum = take_f64(&r);
    sum_wx.compensation = take_f64(&r);
    if (r.error || r.left != 0 || !tag_ok) return MERGE_MALFORMED;
    if (!counter_fits(s->rows, rows) || !counter_fits(s->pos_inf, pos_inf) ||
        !counter_fits(s->neg_inf, neg_inf) || !counter_fits(s->invalid, invalid))
        return MERGE_MALFORMED;
    if (!isfinite(sum_w.sum) || !isfinite(sum_w.compensation) || !isfinite(sum_wx.sum) ||
        !isfinite(sum_wx.compensation))
        return MERGE_MALFORMED;
    if (rows == 0 && (sum_w.sum != 0.0 || sum_w.compensation != 0.0 || sum_wx.sum != 0.0 ||
                      sum_wx.compensation != 0.0))
        return MERGE_MALFORMED;
    weighted_state merged = *s; /* refused whole, before any change, if the sums overflow */
    merged.rows += rows;
    merged.pos_inf += pos_inf;
    merged.neg_inf += neg_inf;
    merged.invalid += invalid;
    compensated_add(&merged.sum_w, sum_w.sum);
    merged.sum_w.compensation += sum_w.compensation;
    compensated_add(&merged.sum_wx, sum_wx.sum);
    merged.sum_wx.compensation += sum_wx.compensation;
    if (!isfinite(merged.sum_w.sum) || !isfinite(merged.sum_w.compensation) || !isfinite(merged.sum_wx.sum) ||
        !isfinite(merged.sum_wx.compensation))
        return MERGE_MALFORMED;
    *s = merged;
    return MERGE_OK;
}
