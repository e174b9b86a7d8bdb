/*
 * What every part of the native code shares: includes, limits, the per
 * connection, instance and function structs, and the lifetime contract.
 * Included once, by the unity file sqlwasm_native.c.
 */
#ifndef SQLWASM_INTERNAL_H
#define SQLWASM_INTERNAL_H

#define _GNU_SOURCE /* pthread_getattr_np */
#include "sqlwasm_native.h"
#include "wasmtime_abi.h"

#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqlite_abi.h" /* SQLite's ABI, declared here: no SQLite headers needed */

#define SW_PUBLIC __attribute__((visibility("default")))

/* The watchdog advances each engine's epoch this often; time limits are
   counted in these ticks. */
#define SW_TICK_MS 10
/* How long a cleanup call (close, drop) may run before interrupt() stops it too. */
#define SW_CLEANUP_GRACE_TICKS 20

/* Rows a raw aggregate with a step_batch export buffers in C before one call
   into the guest, for functions of at most SW_BATCH_MAX_ARGS arguments
   (sqlwasm_native.h). */
#define SW_BATCH_ROWS 256
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "batches are copied as wasm's little-endian values");

/* Declared arguments (the manifest allows 127); a variadic call may pass up
   to SQLite's own limit, and cells beyond SW_STACK_CELLS go on the heap. */
#define SW_MAX_ARGS 127
#define SW_STACK_CELLS 16
#define SW_ERRMSG_MAX 600
#define SW_CATALOGS 2

/* Watchdog ticks since it first started: the clock of time limits (only the
   watchdog thread advances it). */
static uint64_t sw_ticks;

typedef struct sw_instance sw_instance;
typedef struct sw_function sw_function;

/*
 * Lifetime: Python creates and frees an sw_conn; SQLite holds it through
 * registrations (wasm_call and every guest function). When SQLite has
 * destroyed the last registration (the connection closed, or every function
 * was replaced) no SQL can reach the connection's guests any more: the
 * sw_conn goes on the closed list, and Python, from an ordinary call (never a
 * finalizer, never at exit), frees the wasm stores and then the sw_conn.
 */
struct sw_conn {
    const sqlite3_api_routines *api;
    sqlite3 *db;
    int (*is_interrupted)(sqlite3 *); /* NULL before SQLite 3.41 */
    long sqlite_refs;                 /* registrations SQLite still holds */
    int closed;                       /* on the closed list: accepts no registrations */
    sw_conn *next_closed;
    sw_instance **instances;
    int n_instances;
    sw_function **functions;
    int n_functions;
    /* The rows of sqlwasm_modules and sqlwasm_functions (catalog.c). */
    uint8_t *catalog[SW_CATALOGS];
    size_t catalog_len[SW_CATALOGS];
    sw_conn *catalog_aux[SW_CATALOGS]; /* each table's user data: &catalog_aux[k] says which */
};

enum { SW_STOP_NONE = 0, SW_STOP_TIMEOUT, SW_STOP_INTERRUPT };

struct sw_instance {
    sw_conn *conn;
    sw_wasmtime_store *store;
    sw_wasmtime_context *context;
    sw_wasmtime_memory memory;
    sw_wasmtime_func alloc;
    int has_alloc;
    /* A C guest's shadow stack pointer (its export "__stack_pointer", a
       mutable i32) and its value between calls: a trap skips the epilogues
       that would move it back, so the host does (engine_wasmtime.c). */
    sw_wasmtime_global stack_pointer;
    int has_stack_pointer;
    int32_t stack_pointer_at_rest;
    uint32_t max_result_bytes;
    uint64_t fuel_per_call; /* 0: fuel metering off */
    uint32_t timeout_ms;    /* 0: no time limit */
    uint64_t timeout_ticks;
    uint64_t call_started;  /* sw_ticks when the current call began */
    int stop_reason;        /* why the epoch callback stopped the guest */
    int depth;              /* calls into the guest in progress (reentrancy guard) */
    int used;               /* called since the last bind */
    int cleanup;            /* the running call frees state: interrupts do not stop it */
    uint64_t calls;         /* calls into the guest so far */
    int removed;            /* its install was rolled back: wasm_call skips it */
    size_t host_stack;      /* native stack its host functions may need below the wasm frames */
    char host_error[200];   /* set by a failing host function */
    /* The argument buffer from the last sqlwasm_alloc(arg_cap), reused while
       rows fit (see docs/abi.md). */
    uint32_t arg_ptr;
    uint32_t arg_cap;
    /* The engines are configured with memory_may_move = false, so the base
       stays put for the memory's lifetime, and memory only grows, so a size
       seen once is a safe lower bound for bounds checks. */
    uint8_t *mem_base;
    size_t mem_size_seen;
    char *name;
    char *version; /* the module's, for partial aggregates' envelopes */
};

struct sw_function {
    sw_instance *inst;
    sw_wasmtime_func funcs[SW_FN_COUNT];
    unsigned present; /* bit i: funcs[i] is set */
    int kind;
    int batch_rows; /* > 0: steps are buffered and sent with step_batch */
    char *sql_name;
    char *export_name;
    char *label; /* "module.function", the prefix of every error message */
    int removed; /* unregistered again (a rolled-back install) */
    int abi;
    int returns;
    int direct_only;
    /* A table function's output columns and its virtual table's schema. */
    int n_columns;
    uint8_t *column_types;
    char *table_schema;
    int null_call;
    int n_args;
    int vararg_type; /* 0: fixed arity */
    uint8_t arg_types[];
};

/* A plain SQL value: an argument read from SQLite (to encode for the guest),
   or a result decoded from the guest's msgpack. */
enum { SW_VALUE_GUEST_ERROR = 0x100 }; /* kind of a decoded {"error": text}: p, n hold the text */
typedef struct {
    int kind; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL, SW_VALUE_GUEST_ERROR */
    int64_t i;
    double d;
    const void *p;
    uint32_t n;
} sw_cell;

enum { SW_SKIP_ROW = -1 }; /* a NULL argument under null = "strict" */

/* Shared helpers, defined in the file named. */
static void sw_errorf(sqlite3_context *ctx, const sqlite3_api_routines *api, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))); /* results.c; ctx NULL: into sw_pending_error */
static void sw_nomem(sqlite3_context *ctx, const sqlite3_api_routines *api); /* results.c */
static void sw_closed_list_lock(void);     /* registry.c */
static void sw_closed_list_unlock(void);   /* registry.c */
static int sw_catalog_register(sw_conn *conn); /* catalog.c */

#endif
