/* Benchmark guest for pre-initialization: sqlwasm_init sieves the primes
   below 2^23 into a 1 MiB bit set (the kind of table a guest computes once);
   without a snapshot the first call does it (benchmarks/preinit.py). */
#include <stdint.h>

#include "sqlwasm.h"

#define LIMIT (1u << 23)
static uint8_t composite[LIMIT / 8];
static int ready;

SQLWASM_EXPORT(sqlwasm_init)
void sqlwasm_init(void) {
    composite[0] |= 3; /* 0 and 1 */
    for (uint32_t i = 2; (uint64_t)i * i < LIMIT; i++)
        if (!(composite[i >> 3] & (1u << (i & 7))))
            for (uint32_t j = i * i; j < LIMIT; j += i) composite[j >> 3] |= (uint8_t)(1u << (j & 7));
    ready = 1;
}

/* is_prime(n) -> 1 if n is a prime below 2^23, else 0. */
SQLWASM_EXPORT(is_prime)
int64_t is_prime(int64_t n) {
    if (!ready) sqlwasm_init();
    if (n < 0 || n >= LIMIT) return 0;
    return !(composite[n >> 3] & (1u << (n & 7)));
}
