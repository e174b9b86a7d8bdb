/*
 * echo.c - the "echo" test module: round-trips values through the msgpack
 * ABI and exercises the SDK's reader, writer and arena.
 */
#include "sqlwasm.h"

/* echo_value(x) -> x, re-encoded (ints stay ints, float64 bits preserved). */
SQLWASM_EXPORT(echo_value)
int64_t echo_value(const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    uint32_t count = sqlwasm_read_array(&r);
    if (r.error) return sqlwasm_return_error("echo_value: malformed argument row");
    if (count != 1) return sqlwasm_return_errorf("echo_value: expected 1 argument, got %u", count);

    sqlwasm_type type = sqlwasm_peek(&r);
    sqlwasm_writer w;
    uint32_t n = 0;
    const void *bytes;
    switch (type) {
    case SQLWASM_NIL:
        sqlwasm_read_nil(&r);
        sqlwasm_writer_init(&w, 16);
        sqlwasm_write_nil(&w);
        break;
    case SQLWASM_BOOL:
        sqlwasm_writer_init(&w, 16);
        sqlwasm_write_bool(&w, sqlwasm_read_bool(&r));
        break;
    case SQLWASM_INT:
        sqlwasm_writer_init(&w, 16);
        sqlwasm_write_int(&w, sqlwasm_read_int(&r));
        break;
    case SQLWASM_FLOAT:
        sqlwasm_writer_init(&w, 16);
        sqlwasm_write_double(&w, sqlwasm_read_double(&r));
        break;
    case SQLWASM_STR:
        bytes = sqlwasm_read_str(&r, &n);
        /* Start small on purpose so long values exercise writer growth. */
        sqlwasm_writer_init(&w, 16);
        sqlwasm_write_str(&w, (const char *)bytes, n);
        break;
    case SQLWASM_BIN:
        bytes = sqlwasm_read_bin(&r, &n);
        sqlwasm_writer_init(&w, 16);
        sqlwasm_write_bin(&w, bytes, n);
        break;
    default:
        if (type == SQLWASM_END) return sqlwasm_return_error("echo_value: malformed argument row");
        return sqlwasm_return_errorf("echo_value: unsupported argument type %s",
                                     sqlwasm_type_name(type));
    }
    if (!sqlwasm_reader_done(&r)) return sqlwasm_return_error("echo_value: malformed argument row");
    return sqlwasm_writer_finish(&w);
}

/* echo_count(...) -> number of arguments (every one is validated). */
SQLWASM_EXPORT(echo_count)
int64_t echo_count(const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    uint32_t count = sqlwasm_read_array(&r);
    for (uint32_t i = 0; i < count && !r.error; i++) sqlwasm_skip(&r);
    if (!sqlwasm_reader_done(&r)) return sqlwasm_return_error("echo_count: malformed argument row");
    return sqlwasm_return_int(count);
}

/* echo_add(a, b) -> a + b, wrapping on overflow (raw ABI). */
SQLWASM_EXPORT(echo_add)
int64_t echo_add(int64_t a, int64_t b) {
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

/* echo_fail(message) -> fails with exactly that message. */
SQLWASM_EXPORT(echo_fail)
int64_t echo_fail(const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    uint32_t n = 0;
    if (sqlwasm_read_array(&r) != 1 || sqlwasm_peek(&r) != SQLWASM_STR)
        return sqlwasm_return_error("echo_fail: expected one text argument");
    const char *message = sqlwasm_read_str(&r, &n);
    if (!sqlwasm_reader_done(&r)) return sqlwasm_return_error("echo_fail: malformed argument row");
    return sqlwasm_return_error_n(message, n);
}
