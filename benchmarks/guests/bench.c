/*
 * bench.c - the "bench" module: the same trivial function through both ABIs,
 * to measure the per-call overhead of each.
 */
/* Big batches: a table function's cost per row is what bench_range measures. */
#define SQLWASM_BATCH_ROWS 1024u
#include "sqlwasm.h"

static int64_t wrapping_add(int64_t a, int64_t b) {
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

/* bench_add_raw(a, b) -> a + b (raw ABI). */
SQLWASM_EXPORT(add_raw)
int64_t add_raw(int64_t a, int64_t b) {
    return wrapping_add(a, b);
}

/* bench_add_msgpack(a, b) -> a + b (msgpack ABI). */
SQLWASM_EXPORT(add_msgpack)
int64_t add_msgpack(const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    if (sqlwasm_read_array(&r) != 2 || sqlwasm_peek(&r) != SQLWASM_INT)
        return sqlwasm_return_error("bench_add_msgpack: expected two integers");
    int64_t a = sqlwasm_read_int(&r);
    if (sqlwasm_peek(&r) != SQLWASM_INT)
        return sqlwasm_return_error("bench_add_msgpack: expected two integers");
    int64_t b = sqlwasm_read_int(&r);
    if (!sqlwasm_reader_done(&r))
        return sqlwasm_return_error("bench_add_msgpack: malformed argument row");
    return sqlwasm_return_int(wrapping_add(a, b));
}

/*
 * bench_sum_raw(x) / bench_sum_msgpack(x): a sum aggregate through each ABI,
 * to measure the per-row cost of a step. States are slots in a small table
 * (a handle is the slot's index), reused after final.
 */
#define BENCH_MAX_STATES 4096
static int64_t bench_sums[BENCH_MAX_STATES];
static int32_t bench_free_slots[BENCH_MAX_STATES];
static int32_t bench_n_free = -1; /* -1: table not initialised yet */

SQLWASM_EXPORT(sum_init)
int32_t sum_init(void) {
    if (bench_n_free < 0) {
        for (int32_t i = 0; i < BENCH_MAX_STATES; i++) bench_free_slots[i] = BENCH_MAX_STATES - 1 - i;
        bench_n_free = BENCH_MAX_STATES;
    }
    if (bench_n_free == 0) __builtin_trap(); /* more live states than slots */
    int32_t h = bench_free_slots[--bench_n_free];
    bench_sums[h] = 0;
    return h;
}

static void bench_release(int32_t h) { bench_free_slots[bench_n_free++] = h; }

SQLWASM_EXPORT(sum_step)
void sum_step(int32_t h, int64_t x) { bench_sums[h] = wrapping_add(bench_sums[h], x); }

SQLWASM_EXPORT(sum_final)
int64_t sum_final(int32_t h) {
    int64_t total = bench_sums[h];
    bench_release(h);
    return total;
}

SQLWASM_EXPORT(sum_drop)
void sum_drop(int32_t h) { bench_release(h); }

SQLWASM_EXPORT(sum_step_msgpack)
int64_t sum_step_msgpack(int32_t h, const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    if (sqlwasm_read_array(&r) != 1 || sqlwasm_peek(&r) != SQLWASM_INT)
        return sqlwasm_return_error("bench_sum_msgpack: expected one integer");
    bench_sums[h] = wrapping_add(bench_sums[h], sqlwasm_read_int(&r));
    return 0;
}

SQLWASM_EXPORT(sum_final_msgpack)
int64_t sum_final_msgpack(int32_t h) { return sqlwasm_return_int(sum_final(h)); }

/* bench_sum_raw's batched step: `count` rows of one int64 each at `rows`. */
SQLWASM_EXPORT(sum_step_batch)
void sum_step_batch(int32_t h, const int64_t *rows, int32_t count) {
    int64_t total = bench_sums[h];
    for (int32_t i = 0; i < count; i++) total = wrapping_add(total, rows[i]);
    bench_sums[h] = total;
}

/* bench_range(n): a table function yielding 0..n-1 (column "value"). */
typedef struct {
    int64_t next, end;
} bench_counter;

SQLWASM_EXPORT(range_open)
int32_t range_open(const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    if (sqlwasm_read_array(&r) != 1 || sqlwasm_peek(&r) != SQLWASM_INT) return -1;
    bench_counter *c = malloc(sizeof *c);
    if (c == NULL) return -1;
    c->next = 0;
    c->end = sqlwasm_read_int(&r);
    int32_t h = sqlwasm_handle_new(c);
    if (h < 0) free(c);
    return h;
}

SQLWASM_EXPORT(range_next)
int64_t range_next(int32_t h) {
    bench_counter *c = sqlwasm_handle_get(h);
    if (c == NULL) return sqlwasm_return_error("bench_range: no such handle");
    sqlwasm_batch b;
    sqlwasm_batch_begin(&b);
    for (; c->next < c->end && !sqlwasm_batch_full(&b); c->next++) {
        sqlwasm_batch_row(&b, 1);
        sqlwasm_write_int(&b.w, c->next);
    }
    return sqlwasm_batch_finish(&b);
}

SQLWASM_EXPORT(range_close)
void range_close(int32_t h) { free(sqlwasm_handle_release(h)); }
