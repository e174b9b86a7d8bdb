/*
 * sqlwasm's per-row path: SQL function callbacks that call straight into a
 * guest's exports through wasmtime_func_call_unchecked.
 *
 * This file is both a cffi extension (Python sets things up) and a SQLite
 * loadable extension (SQLite calls the functions). It never calls Python.
 * SQLite is reached only through the routines pointer each connection's
 * load_extension() hands over: APSW's SQLite exports no symbols, and another
 * SQLite in the process would hand a different pointer.
 */
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

#include <sqlite3ext.h>

#define SW_PUBLIC __attribute__((visibility("default")))

/* The watchdog advances each engine's epoch this often; time limits are
   counted in these ticks. */
#define SW_TICK_MS 10

/* sqlite3_is_interrupted (SQLite 3.41+) is routine number SW_ROUTINE_IS_INTERRUPTED
   of the routines table, which only ever grows at its end: it follows
   value_encoding, the last routine of 3.40. The table is read by index, so
   the header this builds with may be older or newer; the asserts check the
   index against whichever header it is. */
#define SW_ROUTINE_IS_INTERRUPTED 266
typedef void (*sw_routine)(void);
#if SQLITE_VERSION_NUMBER >= 3041000
_Static_assert(offsetof(sqlite3_api_routines, is_interrupted) == SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "sqlite3_is_interrupted moved in the routines table");
#elif SQLITE_VERSION_NUMBER >= 3040000
_Static_assert(sizeof(sqlite3_api_routines) == SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "the 3.40 routines table should end where is_interrupted begins");
#else
_Static_assert(sizeof(sqlite3_api_routines) < SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "an older routines table ends before is_interrupted");
#endif

/* Value types and ABIs as numbered in sqlwasm/_manifest.py. */
enum { SW_T_INTEGER = 1, SW_T_REAL = 2, SW_T_TEXT = 3, SW_T_BLOB = 4, SW_T_ANY = 5 };
enum { SW_ABI_RAW = 0, SW_ABI_MSGPACK = 1 };
enum { SW_KIND_SCALAR = 0, SW_KIND_AGGREGATE = 1, SW_KIND_WINDOW = 2 };
/* A function's exports, numbered as in sqlwasm/_native.py. A scalar has only
   SW_FN_MAIN; for aggregates and windows SW_FN_MAIN is step. */
enum { SW_FN_MAIN = 0, SW_FN_INIT, SW_FN_FINAL, SW_FN_VALUE, SW_FN_INVERSE, SW_FN_DROP, SW_FN_STEP_BATCH, SW_FN_COUNT };

/* Rows a raw aggregate with a step_batch export buffers in C before one call
   into the guest, for functions of at most SW_BATCH_MAX_ARGS arguments. */
#define SW_BATCH_ROWS 256
#define SW_BATCH_MAX_ARGS 4
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "batches are copied as wasm's little-endian values");

/* Declared arguments (the manifest allows 127); a variadic call may pass up
   to SQLite's own limit, and cells beyond SW_STACK_CELLS go on the heap. */
#define SW_MAX_ARGS 127
#define SW_STACK_CELLS 16
#define SW_ERRMSG_MAX 600

static sw_wasmtime_api wt;
static int wt_bound;
static uint64_t sw_ticks; /* watchdog ticks since it first started: the clock of time limits */


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
};

enum { SW_STOP_NONE = 0, SW_STOP_TIMEOUT, SW_STOP_INTERRUPT };

struct sw_instance {
    sw_conn *conn;
    sw_wasmtime_store *store;
    sw_wasmtime_context *context;
    sw_wasmtime_memory memory;
    sw_wasmtime_func alloc;
    int has_alloc;
    uint32_t max_result_bytes;
    uint64_t fuel_per_call; /* 0: fuel metering off */
    uint32_t timeout_ms;    /* 0: no time limit */
    uint64_t timeout_ticks;
    uint64_t call_started;  /* sw_ticks when the current call began */
    int stop_reason;        /* why the epoch callback stopped the guest */
    int depth;              /* calls into the guest in progress (reentrancy guard) */
    int used;               /* called since the last bind */
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
    int null_call;
    int n_args;
    int vararg_type; /* 0: fixed arity */
    uint8_t arg_types[];
};

/* ------------------------------------------------------------------ setup */

static _Thread_local const sqlite3_api_routines *tls_loaded_api;

/* The loadable-extension entry point. Registration happens afterwards, from
   Python, with the pointer kept per connection. */
SW_PUBLIC int sqlite3_sqlwasm_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api)
{
    (void)db;
    (void)errmsg;
    tls_loaded_api = api;
    return SQLITE_OK;
}

const void *sw_take_api(void)
{
    const void *api = tls_loaded_api;
    tls_loaded_api = NULL;
    return api;
}

static void sw_atfork_prepare(void);
static void sw_atfork_parent(void);
static void sw_atfork_child(void);

const char *sw_bind_wasmtime(const char *library_path)
{
    if (wt_bound)
        return NULL;
    /* RTLD_NOLOAD: use the copy wasmtime-py already loaded, never a second one. */
    void *lib = dlopen(library_path, RTLD_NOW | RTLD_NOLOAD);
    if (!lib)
        return "libwasmtime is not loaded in this process";
#define SW_BIND(field, symbol)                                   \
    do {                                                         \
        *(void **)(&wt.field) = dlsym(lib, symbol);              \
        if (!wt.field)                                           \
            return "libwasmtime lacks " symbol;                  \
    } while (0)
    SW_BIND(func_call_unchecked, "wasmtime_func_call_unchecked");
    SW_BIND(memory_data, "wasmtime_memory_data");
    SW_BIND(memory_data_size, "wasmtime_memory_data_size");
    SW_BIND(trap_message, "wasm_trap_message");
    SW_BIND(trap_code, "wasmtime_trap_code");
    SW_BIND(trap_delete, "wasm_trap_delete");
    SW_BIND(error_message, "wasmtime_error_message");
    SW_BIND(error_delete, "wasmtime_error_delete");
    SW_BIND(byte_vec_delete, "wasm_byte_vec_delete");
    SW_BIND(context_set_fuel, "wasmtime_context_set_fuel");
    SW_BIND(context_set_epoch_deadline, "wasmtime_context_set_epoch_deadline");
    SW_BIND(store_epoch_deadline_callback, "wasmtime_store_epoch_deadline_callback");
    SW_BIND(error_new, "wasmtime_error_new");
    SW_BIND(engine_increment_epoch, "wasmtime_engine_increment_epoch");
    SW_BIND(engine_clone, "wasmtime_engine_clone");
#undef SW_BIND
    if (pthread_atfork(sw_atfork_prepare, sw_atfork_parent, sw_atfork_child) != 0)
        return "pthread_atfork failed";
    wt_bound = 1;
    return NULL;
}

size_t sw_sizeof_func(void) { return sizeof(sw_wasmtime_func); }
size_t sw_sizeof_memory(void) { return sizeof(sw_wasmtime_memory); }
size_t sw_sizeof_val_raw(void) { return sizeof(sw_val_raw); }

static pthread_mutex_t sw_closed_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sw_closed_cond = PTHREAD_COND_INITIALIZER;
static sw_conn *sw_closed_head;

static char *sw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

void sw_conn_free(sw_conn *conn)
{
    if (!conn)
        return;
    for (int i = 0; i < conn->n_functions; i++) {
        sw_function *f = conn->functions[i];
        free(f->sql_name);
        free(f->export_name);
        free(f->label);
        free(f);
    }
    for (int i = 0; i < conn->n_instances; i++) {
        free(conn->instances[i]->name);
        free(conn->instances[i]);
    }
    free(conn->functions);
    free(conn->instances);
    free(conn);
}

static void sw_conn_registered(sw_conn *conn) { __atomic_add_fetch(&conn->sqlite_refs, 1, __ATOMIC_ACQ_REL); }

/* SQLite destroyed one registration (runs inside SQLite, on any thread). */
static void sw_conn_unregistered(sw_conn *conn)
{
    if (__atomic_sub_fetch(&conn->sqlite_refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_lock(&sw_closed_lock);
    conn->closed = 1;
    conn->next_closed = sw_closed_head;
    sw_closed_head = conn;
    pthread_cond_signal(&sw_closed_cond);
    pthread_mutex_unlock(&sw_closed_lock);
}

int sw_conn_wait_closed(int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&sw_closed_lock);
    int rc = 0;
    while (!sw_closed_head && rc == 0)
        rc = pthread_cond_timedwait(&sw_closed_cond, &sw_closed_lock, &until);
    int found = sw_closed_head != NULL;
    pthread_mutex_unlock(&sw_closed_lock);
    return found;
}

sw_conn *sw_conn_take_closed(void)
{
    pthread_mutex_lock(&sw_closed_lock);
    sw_conn *conn = sw_closed_head;
    if (conn)
        sw_closed_head = conn->next_closed;
    pthread_mutex_unlock(&sw_closed_lock);
    return conn;
}

/* xDestroy of wasm_call (user data: the connection state) and of every
   guest function (user data: its sw_function). */
static void sw_wasm_call_destroy(void *conn) { sw_conn_unregistered(conn); }
static void sw_function_destroy(void *f) { sw_conn_unregistered(((sw_function *)f)->inst->conn); }

/* ------------------------------------------------------------ call errors */

static void sw_errorf(sqlite3_context *ctx, const sqlite3_api_routines *api, const char *fmt, ...)
{
    char msg[SW_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    api->result_error(ctx, msg, -1);
}

static const char *sw_trap_kind(uint8_t code)
{
    switch (code) {
    case SW_TRAP_STACK_OVERFLOW: return "stack overflow";
    case SW_TRAP_MEMORY_OUT_OF_BOUNDS: return "out-of-bounds memory access";
    case SW_TRAP_HEAP_MISALIGNED: return "misaligned memory access";
    case SW_TRAP_TABLE_OUT_OF_BOUNDS: return "out-of-bounds table access";
    case SW_TRAP_INDIRECT_CALL_TO_NULL: return "indirect call to null";
    case SW_TRAP_BAD_SIGNATURE: return "indirect call signature mismatch";
    case SW_TRAP_INTEGER_OVERFLOW: return "integer overflow";
    case SW_TRAP_INTEGER_DIVISION_BY_ZERO: return "integer division by zero";
    case SW_TRAP_BAD_CONVERSION_TO_INTEGER: return "invalid conversion to integer";
    case SW_TRAP_UNREACHABLE: return "unreachable";
    case SW_TRAP_INTERRUPT: return "interrupted (time limit)";
    case SW_TRAP_OUT_OF_FUEL: return "out of fuel";
    default: return "trap";
    }
}

/* The cause in a wasmtime message: its last non-empty line (the lines
   before it are a backtrace), without the "wasm trap: " prefix. */
static void sw_message_cause(const sw_byte_vec *v, const char **start, int *len)
{
    size_t end = v->size;
    while (end > 0 && (v->data[end - 1] == '\n' || v->data[end - 1] == ' ' || v->data[end - 1] == '\0'))
        end--;
    size_t begin = end;
    while (begin > 0 && v->data[begin - 1] != '\n')
        begin--;
    while (begin < end && v->data[begin] == ' ')
        begin++;
    static const char prefix[] = "wasm trap: ";
    if (end - begin >= sizeof prefix - 1 && memcmp(v->data + begin, prefix, sizeof prefix - 1) == 0)
        begin += sizeof prefix - 1;
    *start = v->data ? v->data + begin : "";
    *len = end - begin > 300 ? 300 : (int)(end - begin);
}

/* Reports a failed call into the guest and frees what wasmtime returned. */
static __attribute__((noinline, cold)) void sw_report_failure(sqlite3_context *ctx, const sw_function *f,
                                                               const char *what,
                              sw_wasmtime_error *err, sw_wasm_trap *trap)
{
    sw_instance *inst = f->inst;
    const sqlite3_api_routines *api = inst->conn->api;
    sw_byte_vec msg = {0, NULL};
    if (inst->stop_reason != SW_STOP_NONE || inst->host_error[0]) {
        if (inst->stop_reason == SW_STOP_TIMEOUT)
            sw_errorf(ctx, api, "%s: time limit of %u ms exceeded", f->label, inst->timeout_ms);
        else if (inst->stop_reason == SW_STOP_INTERRUPT)
            sw_errorf(ctx, api, "%s: interrupted", f->label);
        else
            sw_errorf(ctx, api, "%s: %s", f->label, inst->host_error);
        inst->stop_reason = SW_STOP_NONE;
        inst->host_error[0] = '\0';
        if (trap)
            wt.trap_delete(trap);
        if (err)
            wt.error_delete(err);
        return;
    }
    if (trap) {
        uint8_t code = 0xff;
        int has_code = wt.trap_code(trap, &code);
        wt.trap_message(trap, &msg);
        const char *cause;
        int cause_len;
        sw_message_cause(&msg, &cause, &cause_len);
        sw_errorf(ctx, api, "%s: %s (%s): %.*s", f->label, what, has_code ? sw_trap_kind(code) : "trap",
                  cause_len, cause);
        wt.byte_vec_delete(&msg);
        wt.trap_delete(trap);
    } else {
        wt.error_message(err, &msg);
        const char *cause;
        int cause_len;
        sw_message_cause(&msg, &cause, &cause_len);
        sw_errorf(ctx, api, "%s: %s failed: %.*s", f->label, what, cause_len, cause);
        wt.byte_vec_delete(&msg);
        wt.error_delete(err);
    }
}

static inline void sw_watchdog_ensure(void);

/*
 * Native stack. wasmtime lets wasm frames use SW_MAX_WASM_STACK below the
 * point where the guest is entered, however deep the host already is there;
 * past the end of the thread's stack the process dies. So a call is refused
 * unless that much, plus room for wasmtime's own frames and the host functions
 * the guest may call, is left. The stack's end is looked up once per thread.
 */
static _Thread_local uintptr_t tls_stack_end;

static __attribute__((noinline, cold)) uintptr_t sw_stack_end_lookup(void)
{
    pthread_attr_t attr;
    void *low = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &low, &size);
        pthread_attr_destroy(&attr);
    }
    /* Unknown: assume the smallest stack a thread is likely to have below here. */
    uintptr_t end = low ? (uintptr_t)low : (uintptr_t)__builtin_frame_address(0) - 64 * 1024;
    tls_stack_end = end;
    return end;
}

size_t sw_stack_left(void)
{
    uintptr_t end = tls_stack_end;
    if (__builtin_expect(!end, 0))
        end = sw_stack_end_lookup();
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    return here > end ? here - end : 0;
}

static inline int sw_stack_enough(const sw_instance *inst)
{
    return sw_stack_left() >= SW_MAX_WASM_STACK + SW_CALL_STACK_RESERVE + inst->host_stack;
}

static __attribute__((noinline, cold)) void sw_report_stack(sqlite3_context *ctx, const sw_function *f)
{
    sw_errorf(ctx, f->inst->conn->api,
              "%s: not enough native stack left on this thread to call the guest safely "
              "(%zu bytes left, %zu needed; the host is nested too deeply or the thread's stack is too small)",
              f->label, sw_stack_left(),
              (size_t)SW_MAX_WASM_STACK + SW_CALL_STACK_RESERVE + f->inst->host_stack);
}

/* One call into the guest, with the per-call limits applied first. */
static inline __attribute__((always_inline)) int sw_guest_call(sqlite3_context *ctx, const sw_function *f,
                                                               const sw_wasmtime_func *func,
                         const char *what, sw_val_raw *vals, size_t n_vals)
{
    sw_instance *inst = f->inst;
    if (inst->depth) {
        /* A host function ran SQL that calls back into the same instance, or
           the instance is being started. */
        if (inst->removed)
            sw_errorf(ctx, inst->conn->api, "%s: module '%s' failed to install", f->label, inst->name);
        else
            sw_errorf(ctx, inst->conn->api, "%s: module '%s' is busy: a reentrant call, or a call while it starts",
                      f->label, inst->name);
        return 0;
    }
    if (__builtin_expect(!sw_stack_enough(inst), 0)) {
        sw_report_stack(ctx, f);
        return 0;
    }
    sw_watchdog_ensure();
    if (inst->fuel_per_call) {
        sw_wasmtime_error *err = wt.context_set_fuel(inst->context, inst->fuel_per_call);
        if (err) {
            sw_report_failure(ctx, f, "setting fuel", err, NULL);
            return 0;
        }
    }
    /* The epoch deadline stays armed (sw_epoch_tick re-arms it at every
       tick), so a call only restarts the count its time limit is checked on. */
    inst->call_started = __atomic_load_n(&sw_ticks, __ATOMIC_RELAXED);
    inst->used = 1;
    inst->depth = 1;
    sw_wasm_trap *trap = NULL;
    sw_wasmtime_error *err = wt.func_call_unchecked(inst->context, func, vals, n_vals, &trap);
    inst->depth = 0;
    if (err || trap) {
        sw_report_failure(ctx, f, what, err, trap);
        return 0;
    }
    return 1;
}

/* Runs on the guest's thread at each watchdog tick while it executes. */
static sw_wasmtime_error *sw_epoch_tick(sw_wasmtime_context *context, void *data, uint64_t *deadline_delta,
                                        uint8_t *update_kind)
{
    (void)context;
    sw_instance *inst = data;
    *deadline_delta = 1;
    *update_kind = SW_DEADLINE_CONTINUE;
    /* Ticks are counted by the watchdog, not by these callbacks, so time the
       guest spends in host functions (no callbacks then) counts too. */
    uint64_t elapsed = __atomic_load_n(&sw_ticks, __ATOMIC_RELAXED) - inst->call_started;
    if (inst->timeout_ticks && elapsed >= inst->timeout_ticks) {
        inst->stop_reason = SW_STOP_TIMEOUT;
        return wt.error_new("sqlwasm: time limit exceeded");
    }
    sw_conn *conn = inst->conn;
    if (conn && conn->is_interrupted && conn->is_interrupted(conn->db)) {
        inst->stop_reason = SW_STOP_INTERRUPT;
        return wt.error_new("sqlwasm: interrupted");
    }
    return NULL;
}

/* ----------------------------------------------------------- watchdog */

#define SW_MAX_ENGINES 8
static pthread_mutex_t sw_watchdog_lock = PTHREAD_MUTEX_INITIALIZER;
static sw_wasm_engine *sw_watched_as_given[SW_MAX_ENGINES];
/* Our own references (wasmtime_engine_clone): an engine the watchdog ticks
   cannot be freed under it, even while Python tears its objects down. */
static sw_wasm_engine *sw_watched[SW_MAX_ENGINES];
static int sw_n_watched;
static pthread_t sw_watchdog_thread;
static int sw_watchdog_stopping;
static int sw_watchdog_final; /* stopped at exit: never started again */

/* Threads do not survive fork(): each child gets a new generation, and the
   next guest call there (or install) starts the watchdog again. */
static unsigned sw_fork_generation = 1;
static unsigned sw_watchdog_generation; /* the generation its thread runs in; 0: none */

static void *sw_watchdog_main(void *unused)
{
    (void)unused;
    struct timespec tick = {0, SW_TICK_MS * 1000000L};
    while (!__atomic_load_n(&sw_watchdog_stopping, __ATOMIC_ACQUIRE)) {
        nanosleep(&tick, NULL);
        __atomic_add_fetch(&sw_ticks, 1, __ATOMIC_RELAXED);
        int n = __atomic_load_n(&sw_n_watched, __ATOMIC_ACQUIRE);
        for (int i = 0; i < n; i++)
            wt.engine_increment_epoch(sw_watched[i]);
    }
    return NULL;
}

/* With sw_watchdog_lock held. */
static int sw_watchdog_start_locked(void)
{
    if (sw_watchdog_generation == sw_fork_generation || sw_watchdog_final)
        return 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    __atomic_store_n(&sw_watchdog_stopping, 0, __ATOMIC_RELEASE);
    int rc = pthread_create(&sw_watchdog_thread, &attr, sw_watchdog_main, NULL) == 0 ? 0 : -1;
    pthread_attr_destroy(&attr);
    if (rc == 0)
        __atomic_store_n(&sw_watchdog_generation, sw_fork_generation, __ATOMIC_RELEASE);
    return rc;
}

/* The call path's check: one load and a compare unless this is a fresh fork child. */
static inline void sw_watchdog_ensure(void)
{
    if (__builtin_expect(__atomic_load_n(&sw_watchdog_generation, __ATOMIC_ACQUIRE) != sw_fork_generation, 0) &&
        __atomic_load_n(&sw_n_watched, __ATOMIC_ACQUIRE) > 0) {
        pthread_mutex_lock(&sw_watchdog_lock);
        sw_watchdog_start_locked();
        pthread_mutex_unlock(&sw_watchdog_lock);
    }
}

int sw_watchdog_watch(void *engine)
{
    int rc = 0;
    pthread_mutex_lock(&sw_watchdog_lock);
    int known = 0;
    for (int i = 0; i < sw_n_watched; i++)
        known |= sw_watched_as_given[i] == engine;
    if (!known) {
        if (sw_n_watched == SW_MAX_ENGINES) {
            rc = -1;
            goto out;
        }
        sw_watched_as_given[sw_n_watched] = engine;
        sw_watched[sw_n_watched] = wt.engine_clone(engine);
        __atomic_store_n(&sw_n_watched, sw_n_watched + 1, __ATOMIC_RELEASE);
    }
    rc = sw_watchdog_start_locked();
out:
    pthread_mutex_unlock(&sw_watchdog_lock);
    return rc;
}

void sw_watchdog_stop(void)
{
    pthread_mutex_lock(&sw_watchdog_lock);
    sw_watchdog_final = 1;
    if (sw_watchdog_generation == sw_fork_generation) {
        __atomic_store_n(&sw_watchdog_stopping, 1, __ATOMIC_RELEASE);
        pthread_join(sw_watchdog_thread, NULL);
        __atomic_store_n(&sw_watchdog_generation, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sw_watchdog_lock);
}

/* fork() with another thread inside one of these locks would leave it held
   forever in the child: hold them across the fork. */
static void sw_atfork_prepare(void)
{
    pthread_mutex_lock(&sw_watchdog_lock);
    pthread_mutex_lock(&sw_closed_lock);
}

static void sw_atfork_parent(void)
{
    pthread_mutex_unlock(&sw_closed_lock);
    pthread_mutex_unlock(&sw_watchdog_lock);
}

static void sw_atfork_child(void)
{
    sw_fork_generation++;
    if (sw_fork_generation == 0) /* 0 means "no watchdog" */
        sw_fork_generation = 1;
    pthread_mutex_unlock(&sw_closed_lock);
    pthread_mutex_unlock(&sw_watchdog_lock);
}

static const char *sw_type_name(int t)
{
    switch (t) {
    case SW_T_INTEGER: return "integer";
    case SW_T_REAL: return "real";
    case SW_T_TEXT: return "text";
    case SW_T_BLOB: return "blob";
    default: return "any";
    }
}

static const char *sw_sql_type_name(int t)
{
    switch (t) {
    case SQLITE_INTEGER: return "INTEGER";
    case SQLITE_FLOAT: return "REAL";
    case SQLITE_TEXT: return "TEXT";
    case SQLITE_BLOB: return "BLOB";
    default: return "NULL";
    }
}

static int sw_arg_type(const sw_function *f, int i)
{
    return i < f->n_args ? f->arg_types[i] : f->vararg_type;
}

/* ------------------------------------------------------------ msgpack ABI */

/* One argument, read from SQLite and converted to its declared type. */
typedef struct {
    int kind; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL */
    int64_t i;
    double d;
    const void *p;
    uint32_t n;
} sw_cell;

static size_t sw_int_size(int64_t i)
{
    if (i >= -32 && i <= 127) return 1;
    if (i >= 0) return i <= 0xff ? 2 : i <= 0xffff ? 3 : i <= 0xffffffffLL ? 5 : 9;
    return i >= INT8_MIN ? 2 : i >= INT16_MIN ? 3 : i >= INT32_MIN ? 5 : 9;
}

static size_t sw_cell_size(const sw_cell *c)
{
    switch (c->kind) {
    case SQLITE_INTEGER: return sw_int_size(c->i);
    case SQLITE_FLOAT: return 9;
    case SQLITE_TEXT: return (c->n < 32 ? 1 : c->n <= 0xff ? 2 : c->n <= 0xffff ? 3 : 5) + (size_t)c->n;
    case SQLITE_BLOB: return (c->n <= 0xff ? 2 : c->n <= 0xffff ? 3 : 5) + (size_t)c->n;
    default: return 1;
    }
}

static uint8_t *sw_put_be(uint8_t *out, uint64_t v, int bytes)
{
    for (int k = bytes - 1; k >= 0; k--)
        *out++ = (uint8_t)(v >> (8 * k));
    return out;
}

static uint8_t *sw_put_header(uint8_t *out, uint32_t n, uint8_t b8, uint8_t b16, uint8_t b32)
{
    if (n <= 0xff && b8) {
        *out++ = b8;
        return sw_put_be(out, n, 1);
    }
    if (n <= 0xffff) {
        *out++ = b16;
        return sw_put_be(out, n, 2);
    }
    *out++ = b32;
    return sw_put_be(out, n, 4);
}

static uint8_t *sw_put_cell(uint8_t *out, const sw_cell *c)
{
    switch (c->kind) {
    case SQLITE_INTEGER: {
        int64_t i = c->i;
        if (i >= -32 && i <= 127) {
            *out++ = (uint8_t)i;
            return out;
        }
        if (i >= 0) {
            if (i <= 0xff) { *out++ = 0xcc; return sw_put_be(out, (uint64_t)i, 1); }
            if (i <= 0xffff) { *out++ = 0xcd; return sw_put_be(out, (uint64_t)i, 2); }
            if (i <= 0xffffffffLL) { *out++ = 0xce; return sw_put_be(out, (uint64_t)i, 4); }
            *out++ = 0xd3;
            return sw_put_be(out, (uint64_t)i, 8);
        }
        if (i >= INT8_MIN) { *out++ = 0xd0; return sw_put_be(out, (uint64_t)i, 1); }
        if (i >= INT16_MIN) { *out++ = 0xd1; return sw_put_be(out, (uint64_t)i, 2); }
        if (i >= INT32_MIN) { *out++ = 0xd2; return sw_put_be(out, (uint64_t)i, 4); }
        *out++ = 0xd3;
        return sw_put_be(out, (uint64_t)i, 8);
    }
    case SQLITE_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &c->d, 8);
        *out++ = 0xcb;
        return sw_put_be(out, bits, 8);
    }
    case SQLITE_TEXT:
        if (c->n < 32)
            *out++ = (uint8_t)(0xa0 | c->n);
        else
            out = sw_put_header(out, c->n, 0xd9, 0xda, 0xdb);
        memcpy(out, c->p, c->n);
        return out + c->n;
    case SQLITE_BLOB:
        out = sw_put_header(out, c->n, 0xc4, 0xc5, 0xc6);
        memcpy(out, c->p, c->n);
        return out + c->n;
    default:
        *out++ = 0xc0;
        return out;
    }
}

/* Reads argument i as its declared type. Returns 0 (with the error set) if it
   cannot be converted, -1 if it is NULL under null = "strict". */
static int sw_read_cell(sqlite3_context *ctx, const sw_function *f, int i, sqlite3_value *v, sw_cell *c)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    int declared = sw_arg_type(f, i);
    int kind = api->value_type(v);
    if (kind == SQLITE_NULL) {
        if (!f->null_call)
            return -1;
        c->kind = SQLITE_NULL;
        return 1;
    }
    switch (declared) {
    case SW_T_INTEGER:
        if (kind != SQLITE_INTEGER && kind != SQLITE_FLOAT)
            goto mismatch;
        c->kind = SQLITE_INTEGER;
        c->i = api->value_int64(v);
        return 1;
    case SW_T_REAL:
        if (kind != SQLITE_INTEGER && kind != SQLITE_FLOAT)
            goto mismatch;
        c->kind = SQLITE_FLOAT;
        c->d = api->value_double(v);
        return 1;
    case SW_T_TEXT:
        if (kind == SQLITE_BLOB)
            goto mismatch;
        kind = SQLITE_TEXT;
        break;
    case SW_T_BLOB:
        if (kind != SQLITE_BLOB && kind != SQLITE_TEXT)
            goto mismatch;
        kind = SQLITE_BLOB;
        break;
    default: /* any: as SQLite holds it */
        break;
    }
    c->kind = kind;
    if (kind == SQLITE_INTEGER) {
        c->i = api->value_int64(v);
    } else if (kind == SQLITE_FLOAT) {
        c->d = api->value_double(v);
    } else {
        const void *p = kind == SQLITE_TEXT ? (const void *)api->value_text(v) : api->value_blob(v);
        int n = api->value_bytes(v);
        if (!p && n > 0) {
            api->result_error_nomem(ctx);
            return 0;
        }
        c->p = p ? p : "";
        c->n = (uint32_t)n;
    }
    return 1;
mismatch:
    sw_errorf(ctx, api, "%s: argument %d is %s, expected %s", f->label, i + 1, sw_sql_type_name(kind),
              sw_type_name(declared));
    return 0;
}

/* A bounds-checked reader over the guest's result. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} sw_reader;

static int sw_take(sw_reader *r, size_t n, const uint8_t **out)
{
    if ((size_t)(r->end - r->p) < n)
        return 0;
    *out = r->p;
    r->p += n;
    return 1;
}

static int sw_take_be(sw_reader *r, int bytes, uint64_t *out)
{
    const uint8_t *b;
    if (!sw_take(r, (size_t)bytes, &b))
        return 0;
    uint64_t v = 0;
    for (int k = 0; k < bytes; k++)
        v = (v << 8) | b[k];
    *out = v;
    return 1;
}

static int sw_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

/* Reads a str header (fixstr, str8/16/32); returns 0 if the next value is not a str. */
static int sw_read_str(sw_reader *r, const uint8_t **s, uint32_t *n)
{
    uint64_t len;
    const uint8_t *tag;
    if (!sw_take(r, 1, &tag))
        return 0;
    if ((*tag & 0xe0) == 0xa0)
        len = *tag & 0x1f;
    else if (*tag == 0xd9 || *tag == 0xda || *tag == 0xdb) {
        if (!sw_take_be(r, 1 << (*tag - 0xd9), &len))
            return 0;
    } else
        return 0;
    if (!sw_take(r, (size_t)len, s))
        return 0;
    *n = (uint32_t)len;
    return 1;
}

/* Sets the SQL result from one msgpack value and checks it is all there is.
   With error_only (a step's status), only {"error": text} is acceptable. */
static void sw_set_result(sqlite3_context *ctx, const sw_function *f, const uint8_t *p, uint32_t n, int error_only)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_reader r = {p, p + n};
    const uint8_t *tag;
    uint64_t u;
    int kind;
    int64_t i = 0;
    double d = 0;
    const uint8_t *bytes = NULL;
    uint32_t len = 0;

    if (!sw_take(&r, 1, &tag))
        goto truncated;
    uint8_t t = *tag;
    if (error_only && t != 0x81 && t != 0xde && t != 0xdf) {
        sw_errorf(ctx, api, "%s: step and inverse must return 0 or {\"error\": text}", f->label);
        return;
    }
    if (t <= 0x7f || t >= 0xe0) {
        kind = SQLITE_INTEGER;
        i = (int8_t)t;
    } else if (t == 0xc0) {
        kind = SQLITE_NULL;
    } else if (t == 0xc2 || t == 0xc3) {
        kind = SQLITE_INTEGER;
        i = t == 0xc3;
    } else if (t >= 0xcc && t <= 0xcf) {
        if (!sw_take_be(&r, 1 << (t - 0xcc), &u))
            goto truncated;
        if (u > INT64_MAX) {
            sw_errorf(ctx, api, "%s: result integer %llu is out of the int64 range", f->label,
                      (unsigned long long)u);
            return;
        }
        kind = SQLITE_INTEGER;
        i = (int64_t)u;
    } else if (t >= 0xd0 && t <= 0xd3) {
        int bytes_n = 1 << (t - 0xd0);
        if (!sw_take_be(&r, bytes_n, &u))
            goto truncated;
        int shift = 64 - 8 * bytes_n; /* sign-extend */
        kind = SQLITE_INTEGER;
        i = shift ? (int64_t)(u << shift) >> shift : (int64_t)u;
    } else if (t == 0xca) {
        if (!sw_take_be(&r, 4, &u))
            goto truncated;
        uint32_t bits = (uint32_t)u;
        float fl;
        memcpy(&fl, &bits, 4);
        kind = SQLITE_FLOAT;
        d = fl;
    } else if (t == 0xcb) {
        if (!sw_take_be(&r, 8, &u))
            goto truncated;
        memcpy(&d, &u, 8);
        kind = SQLITE_FLOAT;
    } else if ((t & 0xe0) == 0xa0 || (t >= 0xd9 && t <= 0xdb)) {
        r.p--;
        if (!sw_read_str(&r, &bytes, &len))
            goto truncated;
        if (!sw_utf8_valid(bytes, len)) {
            sw_errorf(ctx, api, "%s: result text is not valid UTF-8", f->label);
            return;
        }
        kind = SQLITE_TEXT;
    } else if (t >= 0xc4 && t <= 0xc6) {
        if (!sw_take_be(&r, 1 << (t - 0xc4), &u) || !sw_take(&r, (size_t)u, &bytes))
            goto truncated;
        len = (uint32_t)u;
        kind = SQLITE_BLOB;
    } else if (t == 0x81 || t == 0xde || t == 0xdf) {
        /* Only {"error": "message"} is a valid map. */
        if (t != 0x81) {
            if (!sw_take_be(&r, t == 0xde ? 2 : 4, &u))
                goto truncated;
            if (u != 1)
                goto bad_map;
        }
        const uint8_t *key, *msg;
        uint32_t key_len, msg_len;
        if (!sw_read_str(&r, &key, &key_len) || key_len != 5 || memcmp(key, "error", 5) != 0)
            goto bad_map;
        if (!sw_read_str(&r, &msg, &msg_len))
            goto bad_map;
        if (r.p != r.end)
            goto trailing;
        if (!sw_utf8_valid(msg, msg_len)) {
            sw_errorf(ctx, api, "%s: guest error (message is not valid UTF-8)", f->label);
            return;
        }
        uint32_t shown = msg_len;
        if (shown > 500) { /* cut on a character boundary */
            shown = 500;
            while (shown > 0 && (msg[shown] & 0xc0) == 0x80)
                shown--;
        }
        char text[501];
        for (uint32_t k = 0; k < shown; k++) /* a NUL would end the message early */
            text[k] = msg[k] ? (char)msg[k] : '?';
        sw_errorf(ctx, api, "%s: %.*s", f->label, (int)shown, text);
        return;
    } else {
        sw_errorf(ctx, api, "%s: result has unsupported msgpack type 0x%02x", f->label, t);
        return;
    }
    if (r.p != r.end)
        goto trailing;

    /* The declared return type decides what the guest may hand back. */
    switch (f->returns) {
    case SW_T_INTEGER:
        if (kind != SQLITE_INTEGER && kind != SQLITE_NULL)
            goto wrong_type;
        break;
    case SW_T_REAL:
        if (kind == SQLITE_INTEGER) {
            kind = SQLITE_FLOAT;
            d = (double)i;
        } else if (kind != SQLITE_FLOAT && kind != SQLITE_NULL)
            goto wrong_type;
        break;
    case SW_T_TEXT:
        if (kind != SQLITE_TEXT && kind != SQLITE_NULL)
            goto wrong_type;
        break;
    case SW_T_BLOB:
        if (kind != SQLITE_BLOB && kind != SQLITE_NULL)
            goto wrong_type;
        break;
    default:
        break;
    }
    switch (kind) {
    case SQLITE_INTEGER: api->result_int64(ctx, i); break;
    case SQLITE_FLOAT: api->result_double(ctx, d); break;
    case SQLITE_TEXT: api->result_text(ctx, (const char *)bytes, (int)len, SQLITE_TRANSIENT); break;
    case SQLITE_BLOB: api->result_blob(ctx, bytes, (int)len, SQLITE_TRANSIENT); break;
    default: api->result_null(ctx); break;
    }
    return;

truncated:
    sw_errorf(ctx, api, "%s: result msgpack is truncated", f->label);
    return;
trailing:
    sw_errorf(ctx, api, "%s: result has %ld trailing bytes after the msgpack value", f->label,
              (long)(r.end - r.p));
    return;
bad_map:
    sw_errorf(ctx, api, "%s: result map must be {\"error\": text}", f->label);
    return;
wrong_type:
    sw_errorf(ctx, api, "%s: result is %s, declared %s", f->label, sw_sql_type_name(kind),
              sw_type_name(f->returns));
}

/* ------------------------------------------------------------- calling */

enum { SW_SKIP_ROW = -1 }; /* a NULL argument under null = "strict" */

/* Raw ABI: the arguments as wasm values, into vals[0..argc). */
static inline __attribute__((always_inline)) int sw_raw_args(sqlite3_context *ctx, const sw_function *f, int argc,
                                                             sqlite3_value **argv, sw_val_raw *vals)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    for (int i = 0; i < argc; i++) {
        sqlite3_value *v = argv[i];
        int declared = f->arg_types[i];
        switch (api->value_type(v)) {
        case SQLITE_INTEGER:
            if (declared == SW_T_INTEGER)
                vals[i].i64 = api->value_int64(v);
            else
                vals[i].f64 = (double)api->value_int64(v);
            break;
        case SQLITE_FLOAT:
            if (declared == SW_T_REAL)
                vals[i].f64 = api->value_double(v);
            else
                vals[i].i64 = api->value_int64(v);
            break;
        case SQLITE_NULL:
            return SW_SKIP_ROW; /* raw functions are always null = "strict" (checked at load) */
        default:
            sw_errorf(ctx, api, "%s: argument %d is %s, expected %s", f->label, i + 1,
                      sw_sql_type_name(api->value_type(v)), sw_type_name(declared));
            return 0;
        }
    }
    return 1;
}

/* Makes sure the guest's argument buffer holds `bytes` (asking sqlwasm_alloc
   for a bigger one when it does not fit; see docs/abi.md). */
static int sw_ensure_arg_buffer(sqlite3_context *ctx, const sw_function *f, size_t bytes)
{
    sw_instance *inst = f->inst;
    if (bytes <= inst->arg_cap)
        return 1;
    /* Round small requests up so that a growing row needs few allocations. */
    uint32_t want = bytes < 256 ? 256 : (uint32_t)bytes;
    sw_val_raw vals[1];
    vals[0].i32 = (int32_t)want;
    if (!sw_guest_call(ctx, f, &inst->alloc, "trap in sqlwasm_alloc", vals, 1))
        return 0;
    uint32_t ptr = (uint32_t)vals[0].i32;
    inst->mem_size_seen = wt.memory_data_size(inst->context, &inst->memory);
    if (ptr == 0 || (uint64_t)ptr + want > inst->mem_size_seen) {
        inst->arg_cap = 0;
        sw_errorf(ctx, inst->conn->api, "%s: sqlwasm_alloc(%u) returned %u, outside the %zu-byte memory",
                  f->label, want, ptr, inst->mem_size_seen);
        return 0;
    }
    inst->arg_ptr = ptr;
    inst->arg_cap = want;
    return 1;
}

/* msgpack ABI: writes the argument row into the guest's argument buffer. */
static int sw_write_row(sqlite3_context *ctx, const sw_function *f, int argc, sqlite3_value **argv, sw_cell *cells,
                        uint32_t *row_len)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_instance *inst = f->inst;
    size_t total = argc < 16 ? 1 : argc <= 0xffff ? 3 : 5;
    for (int i = 0; i < argc; i++) {
        int ok = sw_read_cell(ctx, f, i, argv[i], &cells[i]);
        if (ok <= 0)
            return ok < 0 ? SW_SKIP_ROW : 0;
        total += sw_cell_size(&cells[i]);
    }
    if (total > INT32_MAX) {
        sw_errorf(ctx, api, "%s: arguments are %zu bytes, over the 2 GiB limit", f->label, total);
        return 0;
    }
    if (!sw_ensure_arg_buffer(ctx, f, total))
        return 0;
    uint8_t *out = inst->mem_base + inst->arg_ptr;
    if (argc < 16)
        *out++ = (uint8_t)(0x90 | argc);
    else
        out = sw_put_header(out, (uint32_t)argc, 0, 0xdc, 0xdd);
    for (int i = 0; i < argc; i++)
        out = sw_put_cell(out, &cells[i]);
    *row_len = (uint32_t)total;
    return 1;
}

/* msgpack ABI: bounds-checks a packed (ptr << 32 | len) result and makes it
   the SQL result (or, with error_only, reports the error it must be). */
static int sw_packed_result(sqlite3_context *ctx, const sw_function *f, uint64_t packed, int error_only)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_instance *inst = f->inst;
    uint32_t rptr = (uint32_t)(packed >> 32);
    uint32_t rlen = (uint32_t)packed;
    if (rlen > inst->max_result_bytes) {
        sw_errorf(ctx, api, "%s: result is %u bytes, over the %u-byte result limit", f->label, rlen,
                  inst->max_result_bytes);
        return 0;
    }
    uint8_t *mem = inst->mem_base;
    if ((uint64_t)rptr + rlen > inst->mem_size_seen) {
        inst->mem_size_seen = wt.memory_data_size(inst->context, &inst->memory);
        if ((uint64_t)rptr + rlen > inst->mem_size_seen) {
            sw_errorf(ctx, api, "%s: result (ptr %u, len %u) lies outside the %zu-byte memory", f->label, rptr,
                      rlen, inst->mem_size_seen);
            return 0;
        }
    }
    sw_set_result(ctx, f, mem + rptr, rlen, error_only);
    return !error_only;
}

/* A raw export's i64 or f64 result as the SQL result (a NaN real becomes
   NULL: SQLite's rule, and how a raw function returns NULL). */
static inline void sw_raw_result(sqlite3_context *ctx, const sw_function *f, sw_val_raw result)
{
    if (f->returns == SW_T_INTEGER)
        f->inst->conn->api->result_int64(ctx, result.i64);
    else
        f->inst->conn->api->result_double(ctx, result.f64);
}

/* The names of the exports in messages. */
static const char *const sw_trap_in[SW_FN_COUNT] = {"trap",          "trap in init", "trap in final",
                                                    "trap in value", "trap in inverse", "trap in drop",
                                                    "trap in step_batch"};

/*
 * Calls export fn with the SQL arguments, after the state handle for
 * aggregate steps (with_handle). A scalar's result becomes the SQL result; a
 * step's result is only a status. Returns 1 on success, 0 with an error set,
 * SW_SKIP_ROW for a NULL argument under null = "strict".
 */
static int sw_call_args_into(sqlite3_context *ctx, const sw_function *f, int fn, int with_handle, int32_t handle,
                             int argc, sqlite3_value **argv, sw_val_raw *vals, sw_cell *cells)
{
    const char *what = fn == SW_FN_MAIN && f->kind != SW_KIND_SCALAR ? "trap in step" : sw_trap_in[fn];
    int scalar = f->kind == SW_KIND_SCALAR;
    int ok;
    vals[0].i32 = handle;
    if (f->abi == SW_ABI_RAW) {
        ok = sw_raw_args(ctx, f, argc, argv, vals + with_handle);
        if (ok != 1)
            return ok;
        size_t n_vals = (size_t)(argc + with_handle);
        if (!sw_guest_call(ctx, f, &f->funcs[fn], what, vals, n_vals ? n_vals : 1))
            return 0;
        if (scalar)
            sw_raw_result(ctx, f, vals[0]);
        return 1;
    }
    uint32_t row_len;
    ok = sw_write_row(ctx, f, argc, argv, cells, &row_len);
    if (ok != 1)
        return ok;
    vals[with_handle].i32 = (int32_t)f->inst->arg_ptr;
    vals[with_handle + 1].i32 = (int32_t)row_len;
    if (!sw_guest_call(ctx, f, &f->funcs[fn], what, vals, (size_t)(2 + with_handle)))
        return 0;
    uint64_t packed = (uint64_t)vals[0].i64;
    if (scalar)
        return sw_packed_result(ctx, f, packed, 0);
    return packed == 0 ? 1 : sw_packed_result(ctx, f, packed, 1);
}

static int sw_call_args(sqlite3_context *ctx, const sw_function *f, int fn, int with_handle, int32_t handle,
                        int argc, sqlite3_value **argv)
{
    /* Small arrays keep the common call's stack frame in cache. */
    if (argc < SW_STACK_CELLS) {
        sw_val_raw vals[SW_STACK_CELLS + 2];
        sw_cell cells[SW_STACK_CELLS];
        return sw_call_args_into(ctx, f, fn, with_handle, handle, argc, argv, vals, cells);
    }
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_val_raw *vals = api->malloc64(sizeof *vals * (size_t)(argc + 2));
    sw_cell *cells = api->malloc64(sizeof *cells * (size_t)argc);
    int ok = 0;
    if (vals && cells)
        ok = sw_call_args_into(ctx, f, fn, with_handle, handle, argc, argv, vals, cells);
    else
        api->result_error_nomem(ctx);
    api->free(vals);
    api->free(cells);
    return ok;
}

static int sw_check_arity(sqlite3_context *ctx, const sw_function *f, int argc)
{
    if (f->vararg_type ? argc >= f->n_args : argc == f->n_args)
        return 1;
    sw_errorf(ctx, f->inst->conn->api, "%s: takes %s%d argument%s, got %d", f->label,
              f->vararg_type ? "at least " : "", f->n_args, f->n_args == 1 ? "" : "s", argc);
    return 0;
}

/* The hottest path, kept small: a raw scalar of a few arguments (SQLite has
   checked the count: raw functions are never variadic). */
#define SW_FAST_ARGS 8
static void sw_invoke_raw(sqlite3_context *ctx, const sw_function *f, int argc, sqlite3_value **argv)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_val_raw vals[SW_FAST_ARGS];
    int ok = sw_raw_args(ctx, f, argc, argv, vals);
    if (ok != 1) {
        if (ok == SW_SKIP_ROW)
            api->result_null(ctx);
        return;
    }
    if (!sw_guest_call(ctx, f, &f->funcs[SW_FN_MAIN], "trap", vals, argc > 0 ? (size_t)argc : 1))
        return;
    sw_raw_result(ctx, f, vals[0]);
}

/* A scalar call from SQL (directly or through wasm_call). */
static void sw_invoke(sqlite3_context *ctx, const sw_function *f, int argc, sqlite3_value **argv)
{
    if (f->abi == SW_ABI_RAW && argc == f->n_args && argc <= SW_FAST_ARGS) {
        sw_invoke_raw(ctx, f, argc, argv);
        return;
    }
    if (sw_check_arity(ctx, f, argc) && sw_call_args(ctx, f, SW_FN_MAIN, 0, 0, argc, argv) == SW_SKIP_ROW)
        f->inst->conn->api->result_null(ctx);
}

/* ---------------------------------------------------------- aggregates */

/* Lives in SQLite's aggregate context, one per group or window partition. */
typedef struct {
    int32_t handle;
    uint8_t live;     /* init has returned handle */
    uint8_t broken;   /* a call failed: the state is never used again */
    uint16_t pending; /* rows buffered for step_batch */
    uint64_t rows[];  /* batch_rows x n_args wasm values, when batching */
} sw_agg;

static size_t sw_agg_size(const sw_function *f)
{
    return sizeof(sw_agg) + (size_t)f->batch_rows * (size_t)f->n_args * sizeof(uint64_t);
}

/* Sends the buffered rows: step_batch(handle, ptr, count) with the values,
   row after row, in the argument buffer. */
static int sw_agg_flush(sqlite3_context *ctx, const sw_function *f, sw_agg *agg)
{
    if (!agg->pending)
        return 1;
    uint32_t rows = agg->pending;
    size_t bytes = (size_t)rows * (size_t)f->n_args * sizeof(uint64_t);
    agg->pending = 0;
    sw_instance *inst = f->inst;
    if (!sw_ensure_arg_buffer(ctx, f, bytes))
        return 0;
    memcpy(inst->mem_base + inst->arg_ptr, agg->rows, bytes);
    sw_val_raw vals[3];
    vals[0].i32 = agg->handle;
    vals[1].i32 = (int32_t)inst->arg_ptr;
    vals[2].i32 = (int32_t)rows;
    return sw_guest_call(ctx, f, &f->funcs[SW_FN_STEP_BATCH], sw_trap_in[SW_FN_STEP_BATCH], vals, 3);
}

/* Buffers one row for step_batch; flushes when the buffer is full. */
static int sw_agg_buffer_row(sqlite3_context *ctx, const sw_function *f, sw_agg *agg, int argc, sqlite3_value **argv)
{
    sw_val_raw vals[SW_BATCH_MAX_ARGS];
    int ok = sw_raw_args(ctx, f, argc, argv, vals);
    if (ok != 1)
        return ok;
    uint64_t *row = agg->rows + (size_t)agg->pending * (size_t)argc;
    for (int i = 0; i < argc; i++)
        memcpy(&row[i], &vals[i], sizeof row[i]);
    if (++agg->pending == f->batch_rows)
        return sw_agg_flush(ctx, f, agg);
    return 1;
}

static int sw_agg_init(sqlite3_context *ctx, const sw_function *f, sw_agg *agg)
{
    sw_val_raw vals[1];
    if (!sw_guest_call(ctx, f, &f->funcs[SW_FN_INIT], sw_trap_in[SW_FN_INIT], vals, 1))
        return 0;
    agg->handle = vals[0].i32;
    agg->live = 1;
    return 1;
}

static void sw_agg_row(sqlite3_context *ctx, const sw_function *f, int fn, int argc, sqlite3_value **argv)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_agg *agg = api->aggregate_context(ctx, (int)sw_agg_size(f));
    if (!agg) {
        api->result_error_nomem(ctx);
        return;
    }
    if (agg->broken || !sw_check_arity(ctx, f, argc))
        return;
    if (!agg->live && !sw_agg_init(ctx, f, agg))
        return;
    int ok;
    if (f->batch_rows && fn == SW_FN_MAIN)
        ok = sw_agg_buffer_row(ctx, f, agg, argc, argv);
    else
        ok = sw_call_args(ctx, f, fn, 1, agg->handle, argc, argv);
    if (ok == 0)
        agg->broken = 1;
}

/* The result from final (releasing the state) or value (keeping it). */
static void sw_agg_result(sqlite3_context *ctx, const sw_function *f, int fn)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_agg empty = {0, 0, 0, 0};
    sw_agg *agg = api->aggregate_context(ctx, fn == SW_FN_FINAL ? 0 : (int)sw_agg_size(f));
    if (!agg) {
        if (fn != SW_FN_FINAL) {
            api->result_error_nomem(ctx);
            return;
        }
        agg = &empty; /* no rows in the group: init, then final */
    }
    if (agg->broken) {
        /* The statement already failed; let the guest free the state. */
        if (fn == SW_FN_FINAL && agg->live && (f->present & (1u << SW_FN_DROP))) {
            sw_val_raw vals[1];
            vals[0].i32 = agg->handle;
            sw_guest_call(ctx, f, &f->funcs[SW_FN_DROP], sw_trap_in[SW_FN_DROP], vals, 1);
            agg->live = 0;
        }
        return;
    }
    if (!agg->live && !sw_agg_init(ctx, f, agg))
        return;
    if (!sw_agg_flush(ctx, f, agg)) {
        agg->broken = 1;
        sw_agg_result(ctx, f, fn); /* drops the state on final */
        return;
    }
    sw_val_raw vals[1];
    vals[0].i32 = agg->handle;
    if (fn == SW_FN_FINAL)
        agg->live = 0; /* final releases the state, whatever happens */
    if (!sw_guest_call(ctx, f, &f->funcs[fn], sw_trap_in[fn], vals, 1)) {
        agg->broken = 1;
        return;
    }
    if (f->abi == SW_ABI_RAW) {
        sw_raw_result(ctx, f, vals[0]);
    } else if (!sw_packed_result(ctx, f, (uint64_t)vals[0].i64, 0)) {
        agg->broken = 1;
    }
}

/* wasm_call(module, function, args...): dispatch by name at run time. */
static void sw_wasm_call(sqlite3_context *ctx, sw_conn *conn, int argc, sqlite3_value **argv)
{
    const sqlite3_api_routines *api = conn->api;
    if (argc < 2) {
        api->result_error(ctx, "wasm_call(module, function, args...) needs a module and a function name", -1);
        return;
    }
    /* Check the types first: value_text() would convert a blob in place. */
    if (api->value_type(argv[0]) != SQLITE_TEXT || api->value_type(argv[1]) != SQLITE_TEXT) {
        api->result_error(ctx, "wasm_call: module and function names must be text", -1);
        return;
    }
    const char *module = (const char *)api->value_text(argv[0]);
    const char *name = (const char *)api->value_text(argv[1]);
    if (!module || !name) {
        api->result_error_nomem(ctx);
        return;
    }
    int module_found = 0;
    for (int i = 0; i < conn->n_functions; i++) {
        const sw_function *f = conn->functions[i];
        if (f->removed || api->stricmp(f->inst->name, module) != 0)
            continue;
        module_found = 1;
        if (api->stricmp(f->sql_name, name) == 0 || strcmp(f->export_name, name) == 0) {
            if (f->kind != SW_KIND_SCALAR)
                sw_errorf(ctx, api, "wasm_call: %s is an aggregate function: call it directly", f->label);
            else
                sw_invoke(ctx, f, argc - 2, argv + 2);
            return;
        }
    }
    if (module_found)
        sw_errorf(ctx, api, "wasm_call: module '%s' has no function '%s'", module, name);
    else
        sw_errorf(ctx, api, "wasm_call: no module '%s' is installed in this connection", module);
}

/*
 * A callback needs the routines pointer before it can even ask SQLite for its
 * user data, and one process may hold several SQLite libraries (APSW's, the
 * stdlib's). So each distinct routines table gets a slot, and each slot its
 * own set of callbacks that know their table.
 */
#define SW_API_SLOTS 4
static const sqlite3_api_routines *sw_api_slots[SW_API_SLOTS];

#define SW_SLOT_CALLBACKS(k)                                                             \
    static void sw_scalar_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv)  \
    {                                                                                    \
        sw_invoke(ctx, sw_api_slots[k]->user_data(ctx), argc, argv);                     \
    }                                                                                    \
    static void sw_wasm_call_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv) \
    {                                                                                    \
        sw_wasm_call(ctx, sw_api_slots[k]->user_data(ctx), argc, argv);                  \
    }                                                                                    \
    static void sw_step_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv)    \
    {                                                                                    \
        sw_agg_row(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_MAIN, argc, argv);        \
    }                                                                                    \
    static void sw_inverse_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv) \
    {                                                                                    \
        sw_agg_row(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_INVERSE, argc, argv);     \
    }                                                                                    \
    static void sw_final_cb_##k(sqlite3_context *ctx)                                    \
    {                                                                                    \
        sw_agg_result(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_FINAL);                \
    }                                                                                    \
    static void sw_value_cb_##k(sqlite3_context *ctx)                                    \
    {                                                                                    \
        sw_agg_result(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_VALUE);                \
    }

SW_SLOT_CALLBACKS(0)
SW_SLOT_CALLBACKS(1)
SW_SLOT_CALLBACKS(2)
SW_SLOT_CALLBACKS(3)

typedef void (*sw_sql_cb)(sqlite3_context *, int, sqlite3_value **);
static const sw_sql_cb sw_scalar_cbs[SW_API_SLOTS] = {sw_scalar_cb_0, sw_scalar_cb_1, sw_scalar_cb_2, sw_scalar_cb_3};
static const sw_sql_cb sw_wasm_call_cbs[SW_API_SLOTS] = {sw_wasm_call_cb_0, sw_wasm_call_cb_1, sw_wasm_call_cb_2,
                                                         sw_wasm_call_cb_3};
static const sw_sql_cb sw_step_cbs[SW_API_SLOTS] = {sw_step_cb_0, sw_step_cb_1, sw_step_cb_2, sw_step_cb_3};
static const sw_sql_cb sw_inverse_cbs[SW_API_SLOTS] = {sw_inverse_cb_0, sw_inverse_cb_1, sw_inverse_cb_2,
                                                       sw_inverse_cb_3};
typedef void (*sw_final_cb)(sqlite3_context *);
static const sw_final_cb sw_final_cbs[SW_API_SLOTS] = {sw_final_cb_0, sw_final_cb_1, sw_final_cb_2, sw_final_cb_3};
static const sw_final_cb sw_value_cbs[SW_API_SLOTS] = {sw_value_cb_0, sw_value_cb_1, sw_value_cb_2, sw_value_cb_3};

/* The slot of a routines table, claiming a free one the first time. */
static int sw_api_slot(const sqlite3_api_routines *api)
{
    for (int k = 0; k < SW_API_SLOTS; k++) {
        const sqlite3_api_routines *seen = __atomic_load_n(&sw_api_slots[k], __ATOMIC_ACQUIRE);
        if (seen == api)
            return k;
        if (seen == NULL) {
            const sqlite3_api_routines *expected = NULL;
            if (__atomic_compare_exchange_n(&sw_api_slots[k], &expected, api, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) ||
                expected == api)
                return k;
        }
    }
    return -1;
}

/* ------------------------------------------------------- registration API */

static void sw_errbuf(char *errbuf, size_t errbuf_len, const char *fmt, ...)
{
    if (!errbuf || !errbuf_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errbuf_len, fmt, ap);
    va_end(ap);
}

sw_conn *sw_conn_open(const void *api_ptr, void *db, char *errbuf, size_t errbuf_len)
{
    const sqlite3_api_routines *api = api_ptr;
    if (!wt_bound) {
        sw_errbuf(errbuf, errbuf_len, "wasmtime C API is not bound");
        return NULL;
    }
    int slot = sw_api_slot(api);
    if (slot < 0) {
        sw_errbuf(errbuf, errbuf_len, "more than %d SQLite libraries in one process", SW_API_SLOTS);
        return NULL;
    }
    sw_conn *conn = calloc(1, sizeof *conn);
    if (!conn) {
        sw_errbuf(errbuf, errbuf_len, "out of memory");
        return NULL;
    }
    conn->api = api;
    conn->db = db;
    /* The SQLite that loaded the extension decides, not the header. */
    if (api->libversion_number() >= 3041000)
        memcpy(&conn->is_interrupted, (const char *)api + SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               sizeof conn->is_interrupted);
    conn->sqlite_refs = 1; /* wasm_call's */
    int rc = api->create_function_v2(db, "wasm_call", -1, SQLITE_UTF8 | SQLITE_DIRECTONLY, conn,
                                     sw_wasm_call_cbs[slot], NULL, NULL, sw_wasm_call_destroy);
    if (rc != SQLITE_OK) {
        /* SQLite ran the destructor: conn is on the closed list, and freed from there. */
        sw_errbuf(errbuf, errbuf_len, "registering wasm_call: %s", api->errmsg(db));
        return NULL;
    }
    return conn;
}

int sw_conn_add_instance(sw_conn *conn, const char *module_name, void *store, void *context,
                         uint32_t max_result_bytes, uint64_t fuel_per_call, uint32_t timeout_ms, int host_calls)
{
    sw_instance **grown = realloc(conn->instances, (size_t)(conn->n_instances + 1) * sizeof *grown);
    if (!grown)
        return -1;
    conn->instances = grown;
    sw_instance *inst = calloc(1, sizeof *inst);
    if (!inst || !(inst->name = sw_strdup(module_name))) {
        free(inst);
        return -1;
    }
    inst->conn = conn;
    inst->max_result_bytes = max_result_bytes;
    inst->fuel_per_call = fuel_per_call;
    inst->timeout_ms = timeout_ms;
    inst->host_stack = host_calls ? SW_HOST_STACK_RESERVE : 0;
    /* The first tick comes within SW_TICK_MS of the call's start: one more
       tick guarantees the guest at least timeout_ms. */
    inst->timeout_ticks = timeout_ms ? (timeout_ms + SW_TICK_MS - 1) / SW_TICK_MS + 1 : 0;
    conn->instances[conn->n_instances] = inst;
    sw_conn_bind_instance(conn, conn->n_instances, store, context, NULL, NULL);
    return conn->n_instances++;
}

void sw_conn_bind_instance(sw_conn *conn, int instance, void *store, void *context, const void *memory,
                           const void *alloc_func)
{
    sw_instance *inst = conn->instances[instance];
    if (inst->store != store) {
        inst->store = store;
        wt.store_epoch_deadline_callback(store, sw_epoch_tick, inst, NULL);
        wt.context_set_epoch_deadline(context, 1);
    }
    inst->context = context;
    /* Without a memory the instance is starting: refuse calls until bound. */
    inst->depth = memory == NULL;
    if (memory)
        memcpy(&inst->memory, memory, sizeof inst->memory);
    inst->has_alloc = alloc_func != NULL;
    if (alloc_func)
        memcpy(&inst->alloc, alloc_func, sizeof inst->alloc);
    inst->arg_ptr = inst->arg_cap = 0;
    inst->mem_base = memory ? wt.memory_data(context, &inst->memory) : NULL;
    inst->mem_size_seen = memory ? wt.memory_data_size(context, &inst->memory) : 0;
    inst->used = 0;
    inst->call_started = __atomic_load_n(&sw_ticks, __ATOMIC_RELAXED);
    inst->stop_reason = SW_STOP_NONE;
    inst->host_error[0] = '\0';
}

/* Required exports of each kind (bits of SW_FN_*); drop is always optional. */
static const unsigned sw_required_exports[3] = {
    [SW_KIND_SCALAR] = 1u << SW_FN_MAIN,
    [SW_KIND_AGGREGATE] = 1u << SW_FN_MAIN | 1u << SW_FN_INIT | 1u << SW_FN_FINAL,
    [SW_KIND_WINDOW] = 1u << SW_FN_MAIN | 1u << SW_FN_INIT | 1u << SW_FN_FINAL | 1u << SW_FN_VALUE |
                       1u << SW_FN_INVERSE,
};

static void sw_set_funcs(sw_function *f, const void *funcs, unsigned present)
{
    memcpy(f->funcs, funcs, sizeof f->funcs);
    f->present = present;
}

void sw_conn_rebind_function(sw_conn *conn, int function, const void *funcs, unsigned present)
{
    sw_set_funcs(conn->functions[function], funcs, present);
}

int sw_conn_instance_used(sw_conn *conn, int instance)
{
    const sw_instance *inst = conn->instances[instance];
    return inst->used && !inst->depth; /* never report one that is running */
}

void sw_conn_host_error(sw_conn *conn, int instance, const char *message)
{
    sw_instance *inst = conn->instances[instance];
    snprintf(inst->host_error, sizeof inst->host_error, "%s", message);
}

int sw_conn_add_function(sw_conn *conn, int instance, const char *sql_name, const char *export_name, int kind,
                         const void *funcs, unsigned present, int abi, const uint8_t *arg_types, int n_args,
                         int vararg_type, int returns, int null_call, int sqlite_flags, char *errbuf,
                         size_t errbuf_len)
{
    if (conn->closed) {
        sw_errbuf(errbuf, errbuf_len, "the connection is closed");
        return -1;
    }
    if (instance < 0 || instance >= conn->n_instances || n_args < 0 || n_args > SW_MAX_ARGS || kind < 0 ||
        kind > SW_KIND_WINDOW || (present & sw_required_exports[kind]) != sw_required_exports[kind] ||
        (abi != SW_ABI_RAW && abi != SW_ABI_MSGPACK) ||
        (abi == SW_ABI_MSGPACK && !conn->instances[instance]->has_alloc) ||
        (abi == SW_ABI_RAW && (vararg_type || null_call))) {
        sw_errbuf(errbuf, errbuf_len, "invalid function description for %s", sql_name);
        return -1;
    }
    sw_function **grown = realloc(conn->functions, (size_t)(conn->n_functions + 1) * sizeof *grown);
    sw_function *f = grown ? calloc(1, sizeof *f + (size_t)n_args) : NULL;
    if (grown)
        conn->functions = grown;
    if (!f) {
        sw_errbuf(errbuf, errbuf_len, "out of memory");
        return -1;
    }
    sw_instance *inst = conn->instances[instance];
    size_t label_len = strlen(inst->name) + strlen(sql_name) + 2;
    f->label = malloc(label_len);
    f->sql_name = sw_strdup(sql_name);
    f->export_name = sw_strdup(export_name);
    if (!f->label || !f->sql_name || !f->export_name) {
        free(f->label);
        free(f->sql_name);
        free(f->export_name);
        free(f);
        sw_errbuf(errbuf, errbuf_len, "out of memory");
        return -1;
    }
    snprintf(f->label, label_len, "%s.%s", inst->name, sql_name);
    f->inst = inst;
    sw_set_funcs(f, funcs, present);
    f->kind = kind;
    f->abi = abi;
    if (kind == SW_KIND_AGGREGATE && abi == SW_ABI_RAW && (present & (1u << SW_FN_STEP_BATCH)) &&
        n_args <= SW_BATCH_MAX_ARGS && conn->instances[instance]->has_alloc)
        f->batch_rows = SW_BATCH_ROWS;
    f->returns = returns;
    f->null_call = null_call;
    f->n_args = n_args;
    f->vararg_type = vararg_type;
    memcpy(f->arg_types, arg_types, (size_t)n_args);
    /* Owned by conn from here on, whatever SQLite says. */
    int index = conn->n_functions;
    conn->functions[conn->n_functions++] = f;

    const sqlite3_api_routines *api = conn->api;
    int slot = sw_api_slot(api);
    sw_conn_registered(conn);
    int n_arg = vararg_type ? -1 : n_args;
    int flags = SQLITE_UTF8 | sqlite_flags;
    int rc;
    if (kind == SW_KIND_SCALAR)
        rc = api->create_function_v2(conn->db, sql_name, n_arg, flags, f, sw_scalar_cbs[slot], NULL, NULL,
                                     sw_function_destroy);
    else if (kind == SW_KIND_AGGREGATE)
        rc = api->create_function_v2(conn->db, sql_name, n_arg, flags, f, NULL, sw_step_cbs[slot],
                                     sw_final_cbs[slot], sw_function_destroy);
    else
        rc = api->create_window_function(conn->db, sql_name, n_arg, flags, f, sw_step_cbs[slot],
                                         sw_final_cbs[slot], sw_value_cbs[slot], sw_inverse_cbs[slot],
                                         sw_function_destroy);
    if (rc != SQLITE_OK) {
        sw_errbuf(errbuf, errbuf_len, "registering %s: %s", sql_name, api->errmsg(conn->db));
        return -1;
    }
    return index;
}

int sw_conn_remove_function(sw_conn *conn, int function)
{
    sw_function *f = conn->functions[function];
    const sqlite3_api_routines *api = conn->api;
    int n_arg = f->vararg_type ? -1 : f->n_args;
    int rc;
    /* Registering no callbacks deletes the function; SQLite then runs its destructor. */
    if (f->kind == SW_KIND_WINDOW)
        rc = api->create_window_function(conn->db, f->sql_name, n_arg, SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL,
                                         NULL);
    else
        rc = api->create_function_v2(conn->db, f->sql_name, n_arg, SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        f->removed = 1;
    return rc;
}

void sw_conn_remove_instance(sw_conn *conn, int instance)
{
    sw_instance *inst = conn->instances[instance];
    inst->removed = 1;
    inst->depth = 1; /* refuses calls, like an instance that is starting */
}

int sw_conn_statement_active(sw_conn *conn)
{
    const sqlite3_api_routines *api = conn->api;
    for (sqlite3_stmt *stmt = api->next_stmt(conn->db, NULL); stmt; stmt = api->next_stmt(conn->db, stmt))
        if (api->stmt_busy(stmt))
            return 1;
    return 0;
}

int sw_conn_functions_exist(sw_conn *conn, const char *const *names, const int *n_args, int count, uint8_t *found)
{
    /* There is no API to look a function up; but while a statement runs,
       SQLite refuses (SQLITE_BUSY) to delete a function that exists, and
       deleting one that does not is a no-op. "SELECT 1" runs without
       touching the database file or its schema. */
    const sqlite3_api_routines *api = conn->api;
    sqlite3_stmt *running = NULL;
    if (api->prepare_v2(conn->db, "SELECT 1", -1, &running, NULL) != SQLITE_OK || !running)
        return -1;
    int ok = api->step(running) == SQLITE_ROW;
    for (int i = 0; ok && i < count; i++) {
        int rc = api->create_function_v2(conn->db, names[i], n_args[i], SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL);
        if (rc == SQLITE_BUSY)
            found[i] = 1;
        else if (rc == SQLITE_OK)
            found[i] = 0;
        else
            ok = 0;
    }
    api->finalize(running);
    return ok ? 0 : -1;
}
