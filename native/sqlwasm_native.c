/*
 * sqlwasm's per-row path: SQL function callbacks that call straight into a
 * guest's exports through wasmtime_func_call_unchecked.
 *
 * This file is both a cffi extension (Python sets things up) and a SQLite
 * loadable extension (SQLite calls the functions). It never calls Python.
 * SQLite is reached only through the routines pointer each connection's
 * load_extension() hands over: APSW's SQLite exports no symbols, and another
 * SQLite in the process would hand a different pointer.
 *
 * A unity build: the parts below are one translation unit, so the per-row
 * path inlines across them, and everything but sqlwasm_native.h stays static.
 * Each part may use what the parts before it define.
 */
#include "internal.h"        /* structs, limits, the lifetime contract */
#include "engine.h"          /* what per-row code may call to enter a guest */

#include "stack.c"           /* native stack check */
#include "watchdog.c"        /* epoch tick thread, fork handling */
#include "engine_wasmtime.c" /* wasmtime binding, guest call, traps, epoch callback */
#include "values.c"          /* SQLite value -> declared type */
#include "msgpack.c"         /* msgpack encode and decode, no SQLite context */
#include "results.c"         /* declared-type coercion, bounds checks, sqlite3_result_* */
#include "scalar.c"          /* export calls with a row of arguments; scalar functions */
#include "aggregate.c"       /* aggregate and window functions */
#include "partial.c"         /* NAME_partial / NAME_merge: states as checked BLOBs */
#include "table.c"           /* table-valued functions (eponymous virtual tables) */
#include "wasm_call.c"       /* wasm_call(module, function, args...) */
#include "sqlite_api.c"      /* entry point, per-library API slots and callbacks */
#include "registry.c"        /* connection lifetime, instances */
#include "functions.c"       /* registering SQL functions, and undoing it */
#include "lookup.c"          /* what a connection has already (install's clash checks) */
#include "catalog.c"         /* sqlwasm_modules and sqlwasm_functions: what is loaded, in SQL */
