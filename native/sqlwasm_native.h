/*
 * What Python (sqlwasm/_native.py, through cffi) may call in the native part.
 * Everything else in native/ is static: the per-row path never enters Python.
 */
#ifndef SQLWASM_NATIVE_H
#define SQLWASM_NATIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sw_conn sw_conn;

/* Native stack budgets, in bytes (Python reads them from here). A guest call
   starts only with SW_MAX_WASM_STACK (the engine's max_wasm_stack) plus
   SW_CALL_STACK_RESERVE left, plus SW_HOST_STACK_RESERVE for a module whose
   guest can call host functions (Python frames). */
enum {
    SW_MAX_WASM_STACK = 131072,      /* 128 KiB */
    SW_CALL_STACK_RESERVE = 16384,   /* 16 KiB: wasmtime entry and sqlwasm frames */
    SW_HOST_STACK_RESERVE = 49152,   /* 48 KiB: a log call measured under 20 KiB */
};

/* The numbering Python and C share (sqlwasm/_abi.py reads it from here).
   Declared value types of arguments and results: */
enum {
    SW_TYPE_INTEGER = 1,
    SW_TYPE_REAL = 2,
    SW_TYPE_TEXT = 3,
    SW_TYPE_BLOB = 4,
    SW_TYPE_ANY = 5,
};
/* How arguments and results cross into the guest (docs/abi.md): */
enum {
    SW_ABI_RAW = 0,
    SW_ABI_MSGPACK = 1,
};
enum {
    SW_KIND_SCALAR = 0,
    SW_KIND_AGGREGATE = 1,
    SW_KIND_WINDOW = 2,
    SW_KIND_TABLE = 3,
};
/* A function's export slots. A scalar has only SW_FN_MAIN; for aggregates
   and windows SW_FN_MAIN is step (serialize and merge, both or neither, add
   NAME_partial and NAME_merge); a table function has open, next and close. */
enum {
    SW_FN_MAIN = 0,
    SW_FN_INIT = 1,
    SW_FN_FINAL = 2,
    SW_FN_VALUE = 3,
    SW_FN_INVERSE = 4,
    SW_FN_DROP = 5,
    SW_FN_STEP_BATCH = 6,
    SW_FN_OPEN = 7,
    SW_FN_NEXT = 8,
    SW_FN_CLOSE = 9,
    SW_FN_SERIALIZE = 10,
    SW_FN_MERGE = 11,
    SW_FN_COUNT = 12,
};
/* A raw aggregate's step_batch buffers rows in C, so it takes at most this
   many arguments (the manifest refuses more). */
enum {
    SW_BATCH_MAX_ARGS = 4,
};

/* Resolves the wasmtime C API from the library wasmtime-py already loaded.
   Returns NULL on success, else a static message. */
const char *sw_bind_wasmtime(const char *library_path);

/* Per-connection state for the connection this thread just loaded the
   extension into (its entry point keeps SQLite's routines pointer and the
   sqlite3*); registers wasm_call(). Python frees it with sw_conn_free, but
   only once sw_conn_take_closed has handed it back: SQLite has then
   destroyed every registration, so no SQL can reach its guests. */
sw_conn *sw_conn_open_loaded(char *errbuf, size_t errbuf_len);
/* The same for a connection (sqlite3*) whose SQLite could not load the
   extension: routines from sw_api_of_library. */
sw_conn *sw_conn_open(const void *routines, void *db, char *errbuf, size_t errbuf_len);

/* A routines table for the SQLite library that the already loaded shared
   object at module_path links (Python's _sqlite3), built once per library;
   NULL with a message if a routine is missing. */
const void *sw_api_of_library(const char *module_path, char *errbuf, size_t errbuf_len);
/* sqlite3_limit through such a table (a host checks the sqlite3* it found). */
int sw_api_limit(const void *routines, void *db, int id, int value);
sw_conn *sw_conn_take_closed(void);
/* Waits (without the GIL, from Python) until a connection is on the closed
   list or timeout_ms passes; whether one is. */
int sw_conn_wait_closed(int timeout_ms);
void sw_conn_free(sw_conn *conn);

/* The catalog tables every connection with sqlwasm has, and their rows: a
   msgpack array of rows (arrays of text, integers, nil) in the columns
   native/catalog.c declares. Returns 0, or -1. */
enum {
    SW_CATALOG_MODULES = 0,   /* sqlwasm_modules */
    SW_CATALOG_FUNCTIONS = 1, /* sqlwasm_functions */
};
int sw_conn_set_catalog(sw_conn *conn, int which, const uint8_t *rows, size_t len);

/* Whether a statement of the connection is running (stepped, not reset):
   SQLite then refuses to delete or replace functions. */
int sw_conn_statement_active(sw_conn *conn);

/* For each of count functions (name, number of arguments), whether the
   connection has it (found[i] = 1) or not (0). Returns 0, or -1 when SQLite
   could not say. Needs no statement of the connection to be running. */
int sw_conn_functions_exist(sw_conn *conn, const char *const *names, const int *n_args, int count, uint8_t *found);

/* Whether every connection of the connection's SQLite library can read a
   table of this name (json_each, pragma_table_info): 1, 0, or -1 when
   SQLite could not say. */
int sw_conn_builtin_table(sw_conn *conn, const char *name);

/* Whether the connection has a virtual table module of this name (1, 0; -1
   when SQLite could not say). */
int sw_conn_module_exists(sw_conn *conn, const char *name);

/* The SQLite library (routines table) the connection belongs to. */
const void *sw_conn_library(sw_conn *conn);

/* The names of the functions and virtual table modules every connection of
   the connection's SQLite library has (its built-ins), newline-separated in out; the bytes written,
   -2 if out is too small, -1 on another failure. */
int sw_conn_builtin_names(sw_conn *conn, char *out, size_t out_len);

/* Undoes a registration (a rolled-back install): returns SQLite's result code. */
int sw_conn_remove_function(sw_conn *conn, int function);
/* Marks an instance whose install was rolled back (wasm_call skips it). */
void sw_conn_remove_instance(sw_conn *conn, int instance);

/* Native stack left below the caller on this thread, in bytes. */
size_t sw_stack_left(void);

/* Adds an instance slot (one per module per connection) for a store, before
   the module is instantiated, so that its limits cover the start function.
   timeout_ms 0: no time limit; fuel_per_call 0: no fuel metering; host_calls:
   the guest may call host functions (its calls need SW_HOST_STACK_RESERVE).
   Returns the slot's index, or -1 when out of memory. */
int sw_conn_add_instance(sw_conn *conn, const char *module_name, const char *module_version, void *store,
                         void *context, uint32_t max_result_bytes, uint64_t fuel_per_call, uint32_t timeout_ms,
                         int host_calls);

/* Points a slot at an instantiated module's memory, sqlwasm_alloc and
   shadow stack pointer global (each NULL if it has none). Also used to swap
   in a fresh store and instance. */
void sw_conn_bind_instance(sw_conn *conn, int instance, void *store, void *context, const void *memory,
                           const void *alloc_func, const void *stack_pointer);

/* One SQL function, as Python describes it to sw_conn_add_function. */
typedef struct {
    int instance;            /* from sw_conn_add_instance */
    const char *sql_name;
    const char *export_name; /* a scalar's export, or an aggregate's step */
    int kind;                /* SW_KIND_* */
    const void *funcs;       /* SW_FN_COUNT wasmtime_func_t, by SW_FN_* slot */
    unsigned present;        /* bit i: funcs[i] is set */
    int abi;                 /* SW_ABI_* */
    const uint8_t *arg_types; /* n_args SW_TYPE_* */
    int n_args;
    int vararg_type;         /* SW_TYPE_* of further arguments; 0: fixed arity */
    int returns;             /* SW_TYPE_*; 0 for a table function */
    const uint8_t *column_types; /* a table function's n_columns output columns, SW_TYPE_* */
    int n_columns;
    const char *table_schema; /* a table function's CREATE TABLE for sqlite3_declare_vtab */
    int null_call;           /* 1: NULL arguments reach the guest; 0: the result is NULL */
    int direct_only;         /* 1: only from top-level SQL (SQLITE_DIRECTONLY); 0: SQLITE_INNOCUOUS */
    int deterministic;       /* 1: SQLITE_DETERMINISTIC */
} sw_function_desc;

/* Registers one SQL function. Returns the function's index (>= 0), or -1
   with a message in errbuf. */
int sw_conn_add_function(sw_conn *conn, const sw_function_desc *desc, char *errbuf, size_t errbuf_len);

/* Points a function at the same exports of a fresh instance. */
void sw_conn_rebind_function(sw_conn *conn, int function, const void *funcs, unsigned present);

/* Whether the instance has been called since the last bind (then cleared). */
int sw_conn_instance_used(sw_conn *conn, int instance);

/* For host functions, while the instance's guest call runs: the
   milliseconds left before its time limit (-1: no limit, or no call
   running), and the number of calls into the guest so far (the current
   call's identity). */
int64_t sw_conn_call_ms_left(sw_conn *conn, int instance);
uint64_t sw_conn_instance_calls(sw_conn *conn, int instance);

/* A host function (Python) failed while the guest was calling it: the SQL
   error will say this instead of wasmtime's generic trap message. */
void sw_conn_host_error(sw_conn *conn, int instance, const char *message);

/* A store's guest debug output (engine_wasmtime.c): Python makes one per
   store, sets it as the store's data, and appends what the guest writes to
   stdout and stderr (skipped: bytes before data that were not kept). */
void *sw_guest_output_new(void);
void sw_guest_output_free(void *output);
void sw_guest_output_append(void *output, const char *data, size_t len, uint64_t skipped);

/* Starts (once per process, and again in a fork child) the watchdog thread
   that advances this engine's epoch every 10 ms; it keeps its own engine
   reference. */
int sw_watchdog_watch(void *engine);

/* Stops and joins the watchdog at exit; it is never started again. */
void sw_watchdog_stop(void);

/* Sizes of the wasmtime handles as compiled, checked against wasmtime-py. */
size_t sw_sizeof_func(void);
size_t sw_sizeof_memory(void);
size_t sw_sizeof_global(void);
size_t sw_sizeof_val(void);
size_t sw_sizeof_val_raw(void);

#endif
