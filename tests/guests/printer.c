/* Test guest for debug output: prints to stdout and stderr with printf, then
   traps or returns an error (tests/test_debug_output.py). */
#include <stdint.h>
#include <stdio.h>

#include "sqlwasm.h"

/* printed(n) -> n * 2, printing a line to stdout and one to stderr; n = 13
   traps after printing (in check_value, so a backtrace has two frames). */
__attribute__((noinline)) static int64_t check_value(int64_t n) {
    fprintf(stderr, "checking %lld\n", (long long)n);
    if (n == 13) __builtin_trap();
    return n;
}

SQLWASM_EXPORT(printed)
int64_t printed(int64_t n) {
    printf("printed(%lld) called\n", (long long)n);
    return check_value(n) * 2;
}

/* refused(text) -> prints the text, then fails with {"error": ...}; an
   empty text fails without printing. */
SQLWASM_EXPORT(refused)
int64_t refused(const uint8_t *row, uint32_t len) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    uint32_t n = 0;
    if (sqlwasm_read_array(&r) != 1 || sqlwasm_peek(&r) != SQLWASM_STR)
        return sqlwasm_return_error("refused: expected one text argument");
    const char *text = sqlwasm_read_str(&r, &n);
    if (n == 0) return sqlwasm_return_error("refused: empty text");
    printf("about to refuse: %.*s\n", (int)n, text);
    return sqlwasm_return_error("refused on purpose");
}
