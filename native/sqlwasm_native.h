/*
 * What Python (sqlwasm/_native.py, through cffi) may call in the native part.
 * Everything else in native/ is static: the per-row path never enters Python.
 */
#ifndef SQLWASM_NATIVE_H
#define SQLWASM_NATIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sw_conn sw_conn;

/* Resolves the wasmtime C API from the library wasmtime-py already loaded.
   Returns NULL on success, else a static message. */
const char *sw_bind_wasmtime(const char *library_path);

/* SQLite's routines pointer handed to the extension entry point by the last
   load_extension() on this thread (NULL if none). */
const void *sw_take_api(void);

/* Per-connection state; registers wasm_call(). The caller owns one reference. */
sw_conn *sw_conn_open(const void *api, void *db, char *errbuf, size_t errbuf_len);
void sw_conn_release(sw_conn *conn);

/* Adds an instance (one per module per connection); returns its index or -1. */
int sw_conn_add_instance(sw_conn *conn, const char *module_name, void *context,
                         const void *memory, const void *alloc_func,
                         uint32_t max_result_bytes, uint64_t fuel_per_call,
                         uint64_t epoch_ticks_per_call);

/* Registers one SQL function. Returns a SQLite result code; on error errbuf
   holds a message. */
int sw_conn_add_function(sw_conn *conn, int instance, const char *sql_name,
                         const char *export_name, const void *func, int abi,
                         const uint8_t *arg_types, int n_args, int vararg_type,
                         int returns, int null_call, int sqlite_flags,
                         char *errbuf, size_t errbuf_len);

/* Sizes of the wasmtime handles as compiled, checked against wasmtime-py. */
size_t sw_sizeof_func(void);
size_t sw_sizeof_memory(void);
size_t sw_sizeof_val_raw(void);

#endif
