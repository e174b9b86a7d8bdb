/* Test guest for pre-initialization: sqlwasm_init builds lookup tables (one
   static, one on the heap) that a scalar uses; without a snapshot the first
   call builds them (tests/test_preinit.py). */
#include <stdint.h>
#include <stdlib.h>

#include "sqlwasm.h"

#define SIZE 4096
static uint32_t mixed[SIZE];
static uint64_t *squares; /* SIZE entries from malloc: the heap is part of the snapshot */
static int ready;

SQLWASM_EXPORT(sqlwasm_init)
void sqlwasm_init(void) {
    uint32_t state = 2463534242u;
    for (int i = 0; i < SIZE; i++) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        mixed[i] = state;
    }
    squares = malloc(SIZE * sizeof *squares);
    for (int i = 0; i < SIZE; i++) squares[i] = (uint64_t)i * (uint64_t)i + mixed[(i * 7) % SIZE];
    ready = 1;
}

/* lookup(x) -> a value from both tables; also allocates, so the heap must
   work after the snapshot. */
SQLWASM_EXPORT(lookup)
int64_t lookup(int64_t x) {
    if (!ready) sqlwasm_init();
    uint64_t i = (uint64_t)x % SIZE;
    uint64_t *scratch = malloc(64);
    scratch[0] = squares[i] ^ mixed[SIZE - 1 - i];
    int64_t result = (int64_t)(scratch[0] + (uint64_t)x);
    free(scratch);
    return result;
}
