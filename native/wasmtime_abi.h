/*
 * The slice of wasmtime's C API (v50) that the per-row path uses.
 *
 * The wasmtime wheel ships the shared library but no headers, so these are
 * sqlwasm's own declarations. Handles are opaque fixed-size blobs: their
 * private fields change between wasmtime versions while their sizes do not.
 * Python asserts at import time that every size here matches wasmtime-py's
 * ctypes bindings, and pyproject.toml pins the wasmtime version.
 */
#ifndef SQLWASM_WASMTIME_ABI_H
#define SQLWASM_WASMTIME_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sw_wasmtime_context sw_wasmtime_context;
typedef struct sw_wasm_trap sw_wasm_trap;
typedef struct sw_wasmtime_error sw_wasmtime_error;
typedef struct sw_wasmtime_store sw_wasmtime_store;
typedef struct sw_wasm_engine sw_wasm_engine;

/* What an epoch-deadline callback tells wasmtime to do next. */
enum { SW_DEADLINE_CONTINUE = 0, SW_DEADLINE_YIELD = 1 };
typedef sw_wasmtime_error *(*sw_epoch_callback)(sw_wasmtime_context *, void *data, uint64_t *deadline_delta,
                                                uint8_t *update_kind);

typedef struct { _Alignas(8) unsigned char opaque[16]; } sw_wasmtime_func;
typedef struct { _Alignas(8) unsigned char opaque[24]; } sw_wasmtime_memory;
typedef struct { _Alignas(8) unsigned char opaque[24]; } sw_wasmtime_global;
/* wasmtime_val_t: a kind, then the value at offset 8 (an i32 is the union's first field). */
enum { SW_VALKIND_I32 = 0 };
typedef struct {
    uint8_t kind;
    _Alignas(8) union {
        int32_t i32;
        unsigned char opaque[24];
    } of;
} sw_wasmtime_val;

typedef union {
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
    unsigned char v128[16];
} sw_val_raw;

typedef struct {
    size_t size;
    char *data;
} sw_byte_vec;

_Static_assert(sizeof(sw_wasmtime_func) == 16, "wasmtime_func_t is 16 bytes in wasmtime 50");
_Static_assert(sizeof(sw_wasmtime_memory) == 24, "wasmtime_memory_t is 24 bytes in wasmtime 50");
_Static_assert(sizeof(sw_wasmtime_global) == 24, "wasmtime_global_t is 24 bytes in wasmtime 50");
_Static_assert(sizeof(sw_wasmtime_val) == 32 && offsetof(sw_wasmtime_val, of) == 8,
               "wasmtime_val_t is a kind and a 24-byte union at offset 8 in wasmtime 50");
_Static_assert(sizeof(sw_val_raw) == 16, "wasmtime_val_raw_t is 16 bytes in wasmtime 50");
_Static_assert(sizeof(sw_byte_vec) == 16, "wasm_byte_vec_t is 16 bytes");

/* wasmtime_trap_code_t values that the host names in its messages. */
enum {
    SW_TRAP_STACK_OVERFLOW = 0,
    SW_TRAP_MEMORY_OUT_OF_BOUNDS = 1,
    SW_TRAP_HEAP_MISALIGNED = 2,
    SW_TRAP_TABLE_OUT_OF_BOUNDS = 3,
    SW_TRAP_INDIRECT_CALL_TO_NULL = 4,
    SW_TRAP_BAD_SIGNATURE = 5,
    SW_TRAP_INTEGER_OVERFLOW = 6,
    SW_TRAP_INTEGER_DIVISION_BY_ZERO = 7,
    SW_TRAP_BAD_CONVERSION_TO_INTEGER = 8,
    SW_TRAP_UNREACHABLE = 9,
    SW_TRAP_INTERRUPT = 10,
    SW_TRAP_OUT_OF_FUEL = 11,
};

/* Function pointers resolved once from the libwasmtime that wasmtime-py loaded. */
typedef struct {
    sw_wasmtime_error *(*func_call_unchecked)(sw_wasmtime_context *, const sw_wasmtime_func *,
                                              sw_val_raw *, size_t, sw_wasm_trap **);
    uint8_t *(*memory_data)(const sw_wasmtime_context *, const sw_wasmtime_memory *);
    size_t (*memory_data_size)(const sw_wasmtime_context *, const sw_wasmtime_memory *);
    void (*trap_message)(const sw_wasm_trap *, sw_byte_vec *);
    bool (*trap_code)(const sw_wasm_trap *, uint8_t *);
    void (*trap_delete)(sw_wasm_trap *);
    void (*error_message)(const sw_wasmtime_error *, sw_byte_vec *);
    void (*error_delete)(sw_wasmtime_error *);
    void (*byte_vec_delete)(sw_byte_vec *);
    sw_wasmtime_error *(*context_set_fuel)(sw_wasmtime_context *, uint64_t);
    void (*context_set_epoch_deadline)(sw_wasmtime_context *, uint64_t);
    void (*store_epoch_deadline_callback)(sw_wasmtime_store *, sw_epoch_callback, void *data,
                                          void (*finalizer)(void *));
    sw_wasmtime_error *(*error_new)(const char *message);
    void (*engine_increment_epoch)(sw_wasm_engine *);
    sw_wasm_engine *(*engine_clone)(sw_wasm_engine *);
    void (*global_get)(sw_wasmtime_context *, const sw_wasmtime_global *, sw_wasmtime_val *);
    sw_wasmtime_error *(*global_set)(sw_wasmtime_context *, const sw_wasmtime_global *, const sw_wasmtime_val *);
} sw_wasmtime_api;

#endif
