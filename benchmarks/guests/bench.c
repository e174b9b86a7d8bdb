/*
 * bench.c - the "bench" module: the same trivial function through both ABIs,
 * to measure the per-call overhead of each.
 */
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
