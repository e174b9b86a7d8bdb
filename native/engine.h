/*
 * What per-row code may call to enter a guest. engine_wasmtime.c binds these
 * to the libwasmtime that wasmtime-py loaded; nothing else in native/ calls
 * wasmtime except through `wt` (memory sizes, and the registry's binding of a
 * store to its epoch callback).
 */
#ifndef SQLWASM_ENGINE_H
#define SQLWASM_ENGINE_H

#include "internal.h"

static sw_wasmtime_api wt;
static int wt_bound;

/* One call into the guest, with the per-call limits (reentrancy, native
   stack, fuel, time) applied first. Returns 1, or 0 with the SQL error set
   (what: the export's role in messages, e.g. "trap in final"). */
static inline __attribute__((always_inline)) int sw_guest_call(sqlite3_context *ctx, const sw_function *f,
                                                               const sw_wasmtime_func *func, const char *what,
                                                               sw_val_raw *vals, size_t n_vals);

/* A call that frees guest state (close, drop): like sw_guest_call, but an
   interrupt stops it only after SW_CLEANUP_GRACE_TICKS (the statement being
   interrupted is what asks for it); its time limit still does. */
static int sw_guest_cleanup_call(sqlite3_context *ctx, const sw_function *f, const sw_wasmtime_func *func,
                                 const char *what, sw_val_raw *vals, size_t n_vals);

/* Makes sure the guest's argument buffer holds `bytes` (asking sqlwasm_alloc
   for a bigger one when it does not fit; see docs/abi.md). */
static int sw_ensure_arg_buffer(sqlite3_context *ctx, const sw_function *f, size_t bytes);

/* A store's debug output (its data, when Python made one) learns which
   instance it belongs to, so that a call sees only its own output. */
static void sw_guest_output_bind(void *context, const sw_instance *inst);

/* A failure's message: the cause, where in the guest (a short backtrace),
   and the last lines the call wrote to stdout and stderr. */
#define SW_FAILURE_MAX 1600

/* Sets text as the SQL error (results.c; ctx NULL: into sw_pending_error). */
static void sw_error_text(sqlite3_context *ctx, const sqlite3_api_routines *api, const char *text);

#endif
