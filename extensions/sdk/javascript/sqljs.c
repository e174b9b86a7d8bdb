/*
 * sqljs.c - the runtime of JavaScript guests: QuickJS-ng behind the sqlwasm
 * msgpack ABI (docs/abi.md, docs/sdk-javascript.md).
 *
 * `sqlwasm build funcs.js` links this file and the QuickJS engine (compiled
 * once, cached) with a small generated file that holds the author's source
 * and one wasm export per JS export:
 *
 *   const char sqljs_source[];               the module's text, NUL-terminated
 *   const uint32_t sqljs_source_len;
 *   const char sqljs_filename[];             shown in stack traces
 *   const char *const sqljs_export_names[];  the JS exports the wasm exports call
 *   const uint32_t sqljs_export_count;
 *
 * and stubs that call sqljs_scalar / sqljs_agg_* with the export's index.
 *
 * The JS module is evaluated once per instance, by the first call or by
 * sqlwasm_init (which pre-initialization runs before snapshotting memory).
 * A trap (timeout, fuel, a wasm stack overflow) can stop the engine anywhere,
 * leaving its heap inconsistent: the next call sees that the previous one
 * never returned, frees the old runtime's whole heap and starts a new one.
 */
#include <math.h>
#include <stdbool.h>

#include "quickjs.h"
#include "sqlwasm.h"

extern const char sqljs_source[];
extern const uint32_t sqljs_source_len;
extern const char sqljs_filename[];
extern const char *const sqljs_export_names[];
extern const uint32_t sqljs_export_count;

/* How deep JS may recurse on the shadow stack (256 KiB linked in) before
 * QuickJS throws RangeError. Each JS call also takes about 800 bytes of the
 * host's 128 KiB native wasm stack, against about 350 here: 48 KiB lets
 * plain recursion (about 145 calls) end in a catchable RangeError just
 * before the native stack would trap. Paths heavier on the native stack
 * (callbacks through built-ins) still trap; the engine then restarts. */
#define SQLJS_JS_STACK (48u * 1024u)
#define SQLJS_SAFE_INT 9007199254740991.0 /* 2^53 - 1 */

static JSRuntime *sqljs_rt;
static JSContext *sqljs_ctx;
static JSValue *sqljs_exports; /* sqljs_export_count values, JS_UNDEFINED until bound */
static bool sqljs_in_call;     /* set while a call runs: still set at entry = the last call trapped */
static uint32_t sqljs_generation; /* bumped per runtime, part of every state handle */
static char sqljs_init_error[512]; /* why the module failed to evaluate, "" if it did not */

/* An aggregate's methods, looked up on each call by atoms made once per runtime. */
typedef enum { SQLJS_STEP, SQLJS_INVERSE, SQLJS_FINAL, SQLJS_VALUE, SQLJS_METHODS } sqljs_method;
static const char *const sqljs_method_names[SQLJS_METHODS] = {"step", "inverse", "final", "value"};
static JSAtom sqljs_method_atoms[SQLJS_METHODS];

/* ------------------------------------------------------------------------
 * No WASI imports but the capabilities': QuickJS reads the clock (Date.now,
 * the Math.random seed) and, in debugging paths, writes to stdout. Output
 * goes nowhere (below). The generated file defines the clock: at the epoch,
 * or (capability clock) the host's, and sqljs_random_bytes: none, or
 * (capability random) the host's random_get.
 * ------------------------------------------------------------------------ */
extern const bool sqljs_random_enabled;
int32_t sqljs_random_bytes(uint8_t *buf, uint32_t len);

/* True while sqlwasm_init runs, at build time: the generated clock reads 0
 * and Math.random keeps its fixed sequence then, so pre-initialization never
 * calls an import. */
bool sqljs_initializing;

#define SQLJS_WASI_STUB(name, ...) \
    int32_t __imported_wasi_snapshot_preview1_##name(__VA_ARGS__)

SQLJS_WASI_STUB(fd_write, int32_t fd, int32_t iovs, int32_t n, int32_t written) {
    (void)fd;
    const uint32_t *iov = (const uint32_t *)(uintptr_t)iovs;
    uint32_t total = 0;
    for (int32_t i = 0; i < n; i++) total += iov[2 * i + 1];
    *(uint32_t *)(uintptr_t)written = total;
    return 0;
}
SQLJS_WASI_STUB(fd_seek, int32_t fd, int64_t offset, int32_t whence, int32_t out) {
    (void)fd, (void)offset, (void)whence, (void)out;
    return 70; /* ESPIPE */
}
/* zig's libc closes descriptors through its own import of fd_close */
int close(int fd) {
    (void)fd;
    return 0;
}
SQLJS_WASI_STUB(fd_fdstat_get, int32_t fd, int32_t out) {
    /* a character device with no rights: stdio treats it as unbuffered */
    memset((void *)(uintptr_t)out, 0, 24);
    *(uint8_t *)(uintptr_t)out = 2;
    (void)fd;
    return 0;
}
void __imported_wasi_snapshot_preview1_proc_exit(int32_t code) {
    (void)code;
    __builtin_trap();
}

/* ------------------------------------------------------------------------
 * Errors: the exception's text and its stack, as the call's error result.
 * ------------------------------------------------------------------------ */

/* Fills buf with "Error: text\n    at f (funcs.js:3:11)\n..." for the
 * pending exception, which it clears. */
static void sqljs_exception_text(JSContext *ctx, char *buf, size_t cap) {
    JSValue exc = JS_GetException(ctx);
    size_t text_len = 0, stack_len = 0;
    const char *text = JS_ToCStringLen(ctx, &text_len, exc);
    if (text == NULL) JS_FreeValue(ctx, JS_GetException(ctx));
    const char *stack = NULL;
    if (JS_IsError(exc)) {
        JSValue st = JS_GetPropertyStr(ctx, exc, "stack");
        if (JS_IsString(st)) stack = JS_ToCStringLen(ctx, &stack_len, st);
        if (stack == NULL) JS_FreeValue(ctx, JS_GetException(ctx));
        JS_FreeValue(ctx, st);
    }
    JS_FreeValue(ctx, exc);
    while (stack_len > 0 && stack[stack_len - 1] == '\n') stack_len--;
    static const char unshown[] = "(a thrown value that cannot be shown)";
    snprintf(buf, cap, "%.*s%s%.*s", (int)(text ? text_len : sizeof unshown - 1), text ? text : unshown,
             stack_len ? "\n" : "", (int)stack_len, stack ? stack : "");
    if (text) JS_FreeCString(ctx, text);
    if (stack) JS_FreeCString(ctx, stack);
}

/* The host shows 500 bytes of an error; a little more lets it cut cleanly. */
static char sqljs_error_buf[1024];

/* The pending exception as the call's {"error": ...} result. */
static int64_t sqljs_exception_result(JSContext *ctx, const char *role) {
    sqljs_exception_text(ctx, sqljs_error_buf, sizeof sqljs_error_buf);
    return sqlwasm_return_errorf("%s%s%s", role ? role : "", role ? ": " : "", sqljs_error_buf);
}

/* ------------------------------------------------------------------------
 * The runtime: created on first use, the module evaluated into it.
 * ------------------------------------------------------------------------ */

/* Compiles and runs the module text (NUL-terminated at len); its namespace
 * object, or JS_EXCEPTION with sqljs_init_error saying why. */
static JSValue sqljs_evaluate(JSContext *ctx, const char *text, uint32_t len, const char *filename) {
    JSValue module = JS_Eval(ctx, text, len, filename, JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
    if (JS_IsException(module)) goto exception;
    JSModuleDef *def = (JSModuleDef *)JS_VALUE_GET_PTR(module);
    JSValue promise = JS_EvalFunction(ctx, module); /* consumes module */
    if (JS_IsException(promise)) goto exception;
    JSContext *job_ctx;
    while (JS_ExecutePendingJob(JS_GetRuntime(ctx), &job_ctx) > 0) {
    }
    JSPromiseStateEnum state = JS_PromiseState(ctx, promise);
    if (state == JS_PROMISE_REJECTED) {
        JS_Throw(ctx, JS_PromiseResult(ctx, promise));
        JS_FreeValue(ctx, promise);
        goto exception;
    }
    JS_FreeValue(ctx, promise);
    if (state == JS_PROMISE_PENDING) {
        snprintf(sqljs_init_error, sizeof sqljs_init_error,
                 "evaluating %s: its top-level code never finished (an await that nothing resolves)", filename);
        return JS_EXCEPTION;
    }
    JSValue ns = JS_GetModuleNamespace(ctx, def);
    if (!JS_IsException(ns)) return ns;
exception:
    sqljs_exception_text(ctx, sqljs_error_buf, sizeof sqljs_error_buf);
    snprintf(sqljs_init_error, sizeof sqljs_init_error, "evaluating %s: %s", filename, sqljs_error_buf);
    return JS_EXCEPTION;
}

/* Evaluates the author's module and binds its exports. */
static void sqljs_bind(JSContext *ctx) {
    JSValue ns = sqljs_evaluate(ctx, sqljs_source, sqljs_source_len, sqljs_filename);
    if (JS_IsException(ns)) return;
    for (uint32_t i = 0; i < sqljs_export_count; i++) {
        JSValue v = JS_GetPropertyStr(ctx, ns, sqljs_export_names[i]);
        if (JS_IsException(v)) {
            sqljs_exception_text(ctx, sqljs_error_buf, sizeof sqljs_error_buf);
            snprintf(sqljs_init_error, sizeof sqljs_init_error, "evaluating %s: export '%s': %s", sqljs_filename,
                     sqljs_export_names[i], sqljs_error_buf);
            break;
        }
        sqljs_exports[i] = v;
    }
    JS_FreeValue(ctx, ns);
}

/* ------------------------------------------------------------------------
 * The engine's heap: every block it allocates is on one list, so when a
 * trap makes the runtime unusable, its whole heap can be freed with it.
 * (A trap inside malloc itself can still lose the block being allocated.)
 * ------------------------------------------------------------------------ */
typedef struct sqljs_block {
    struct sqljs_block *prev, *next;
    size_t size;
    size_t unused; /* keeps the header 16 bytes, the data as aligned as malloc's */
} sqljs_block;

static sqljs_block sqljs_heap = {&sqljs_heap, &sqljs_heap, 0, 0};

static void *sqljs_link(sqljs_block *b, size_t size) {
    b->size = size;
    b->next = sqljs_heap.next;
    b->prev = &sqljs_heap;
    sqljs_heap.next->prev = b;
    sqljs_heap.next = b;
    return b + 1;
}

static void sqljs_unlink(sqljs_block *b) {
    b->prev->next = b->next;
    b->next->prev = b->prev;
}

static void *sqljs_malloc(void *opaque, size_t size) {
    (void)opaque;
    if (size > SIZE_MAX - sizeof(sqljs_block)) return NULL;
    sqljs_block *b = malloc(sizeof(sqljs_block) + size);
    return b ? sqljs_link(b, size) : NULL;
}

static void *sqljs_calloc(void *opaque, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    void *p = sqljs_malloc(opaque, count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

static void sqljs_free(void *opaque, void *ptr) {
    (void)opaque;
    if (ptr == NULL) return;
    sqljs_block *b = (sqljs_block *)ptr - 1;
    sqljs_unlink(b);
    free(b);
}

static void *sqljs_realloc(void *opaque, void *ptr, size_t size) {
    if (ptr == NULL) return size ? sqljs_malloc(opaque, size) : NULL;
    if (size == 0) {
        sqljs_free(opaque, ptr);
        return NULL;
    }
    if (size > SIZE_MAX - sizeof(sqljs_block)) return NULL;
    sqljs_block *b = (sqljs_block *)ptr - 1;
    sqljs_unlink(b);
    sqljs_block *moved = realloc(b, sizeof(sqljs_block) + size);
    if (moved == NULL) {
        sqljs_link(b, b->size); /* the old block stays valid */
        return NULL;
    }
    return sqljs_link(moved, size);
}

static size_t sqljs_usable_size(const void *ptr) {
    return ptr ? ((const sqljs_block *)ptr - 1)->size : 0;
}

static const JSMallocFunctions sqljs_malloc_functions = {
    sqljs_calloc, sqljs_malloc, sqljs_free, sqljs_realloc, sqljs_usable_size,
};

/* Frees every block of the engine's heap (the runtime is gone with it). */
static void sqljs_free_heap(void) {
    sqljs_block *b = sqljs_heap.next;
    while (b != &sqljs_heap) {
        sqljs_block *next = b->next;
        free(b);
        b = next;
    }
    sqljs_heap.next = sqljs_heap.prev = &sqljs_heap;
}

static JSContext *sqljs_new_context(void) {
    JSRuntime *rt = JS_NewRuntime2(&sqljs_malloc_functions, NULL);
    if (rt == NULL) return NULL;
    JS_SetMaxStackSize(rt, SQLJS_JS_STACK);
    JSContext *ctx = JS_NewContext(rt);
    if (ctx == NULL) JS_FreeRuntime(rt);
    return ctx;
}

/* Math.random with capability random: bits from the host's random_get,
 * fetched 512 bytes at a time; while initializing, QuickJS's own. */
static JSValue sqljs_builtin_random = JS_UNDEFINED;
static uint8_t sqljs_random_pool[512];
static uint32_t sqljs_random_left;

static JSValue sqljs_math_random(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv) {
    if (sqljs_initializing) return JS_Call(ctx, sqljs_builtin_random, this_val, argc, argv);
    if (sqljs_random_left < 8) {
        if (sqljs_random_bytes(sqljs_random_pool, sizeof sqljs_random_pool) != 0)
            return JS_ThrowInternalError(ctx, "random_get failed");
        sqljs_random_left = sizeof sqljs_random_pool;
    }
    uint64_t bits;
    sqljs_random_left -= 8;
    memcpy(&bits, sqljs_random_pool + sqljs_random_left, 8);
    return JS_NewFloat64(ctx, (double)(bits >> 11) * 0x1.0p-53);
}

static void sqljs_install_random(JSContext *ctx) {
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue math = JS_GetPropertyStr(ctx, global, "Math");
    sqljs_builtin_random = JS_GetPropertyStr(ctx, math, "random");
    JS_SetPropertyStr(ctx, math, "random", JS_NewCFunction(ctx, sqljs_math_random, "random", 0));
    JS_FreeValue(ctx, math);
    JS_FreeValue(ctx, global);
}

/* A fresh runtime with the module evaluated. false: out of memory, and no
 * runtime. */
static bool sqljs_start(void) {
    sqljs_init_error[0] = '\0';
    if (sqljs_exports == NULL) sqljs_exports = calloc(sqljs_export_count ? sqljs_export_count : 1, sizeof(JSValue));
    sqljs_ctx = sqljs_exports ? sqljs_new_context() : NULL;
    for (int m = 0; sqljs_ctx != NULL && m < SQLJS_METHODS; m++) {
        sqljs_method_atoms[m] = JS_NewAtom(sqljs_ctx, sqljs_method_names[m]);
        if (sqljs_method_atoms[m] == JS_ATOM_NULL) sqljs_ctx = NULL;
    }
    if (sqljs_ctx == NULL) {
        sqljs_free_heap();
        return false;
    }
    sqljs_rt = JS_GetRuntime(sqljs_ctx);
    for (uint32_t i = 0; i < sqljs_export_count; i++) sqljs_exports[i] = JS_UNDEFINED;
    sqljs_generation = (sqljs_generation + 1) & 0x7ff;
    if (sqljs_random_enabled) sqljs_install_random(sqljs_ctx);
    sqljs_bind(sqljs_ctx);
    return true;
}

/* Called at the start of every export: NULL with *err set when the engine
 * cannot run. */
static JSContext *sqljs_enter(int64_t *err) {
    if (sqljs_in_call) {
        /* The last call never returned: it trapped inside the engine. */
        sqljs_free_heap();
        sqljs_rt = NULL;
        sqljs_ctx = NULL;
    }
    sqljs_in_call = true;
    if (sqljs_rt == NULL && !sqljs_start()) {
        sqljs_in_call = false;
        *err = sqlwasm_return_error("out of memory starting the JavaScript engine");
        return NULL;
    }
    if (sqljs_init_error[0]) {
        sqljs_in_call = false;
        *err = sqlwasm_return_error(sqljs_init_error);
        return NULL;
    }
    JS_UpdateStackTop(sqljs_rt);
    return sqljs_ctx;
}

static inline void sqljs_leave(void) { sqljs_in_call = false; }

/* The shadow stack pointer (a wasm global) is not restored by a trap: after
 * one it stays as deep as the trapped call had gone, and calls after it
 * would start there, each trap taking more of the stack. Every export
 * stub (frameless, in the generated file) calls this first: the pointer
 * every call from the host starts at is noted once, and put back. */
static uintptr_t sqljs_stack_base;

static inline uintptr_t sqljs_get_stack_pointer(void) {
    uintptr_t sp;
    __asm__ volatile(".globaltype __stack_pointer, i32\n\tglobal.get __stack_pointer\n\tlocal.set %0" : "=r"(sp));
    return sp;
}

void sqljs_restore_stack(void) {
    uintptr_t sp = sqljs_get_stack_pointer();
    if (sqljs_stack_base == 0) {
        sqljs_stack_base = sp;
    } else if (sp != sqljs_stack_base) {
        __asm__ volatile(".globaltype __stack_pointer, i32\n\tlocal.get %0\n\tglobal.set __stack_pointer"
                         :
                         : "r"(sqljs_stack_base));
    }
}

/* Pre-initialization runs this, then snapshots memory: instances then start
 * with the module already compiled and evaluated. */
SQLWASM_EXPORT(sqlwasm_init) void sqlwasm_init(void) {
    int64_t err;
    sqljs_initializing = true;
    if (sqljs_enter(&err)) sqljs_leave();
    sqljs_in_call = false;
    sqljs_initializing = false;
}

/* ------------------------------------------------------------------------
 * Values: msgpack <-> JS.
 * ------------------------------------------------------------------------ */

/* The next msgpack value as JS: nil -> null, int -> number (BigInt beyond
 * 2^53 - 1), float -> number, str -> string, bin -> Uint8Array. */
static JSValue sqljs_read_value(JSContext *ctx, sqlwasm_reader *r) {
    uint32_t n = 0;
    switch (sqlwasm_peek(r)) {
    case SQLWASM_NIL:
        sqlwasm_read_nil(r);
        return JS_NULL;
    case SQLWASM_BOOL:
        return JS_NewBool(ctx, sqlwasm_read_bool(r));
    case SQLWASM_INT: {
        int64_t v = sqlwasm_read_int(r);
        if (r->error) return JS_EXCEPTION;
        if (v >= -(int64_t)SQLJS_SAFE_INT && v <= (int64_t)SQLJS_SAFE_INT) return JS_NewInt64(ctx, v);
        return JS_NewBigInt64(ctx, v);
    }
    case SQLWASM_FLOAT:
        return JS_NewFloat64(ctx, sqlwasm_read_double(r));
    case SQLWASM_STR: {
        const char *s = sqlwasm_read_str(r, &n);
        return s ? JS_NewStringLen(ctx, s, n) : JS_EXCEPTION;
    }
    case SQLWASM_BIN: {
        const uint8_t *b = sqlwasm_read_bin(r, &n);
        return b ? JS_NewUint8ArrayCopy(ctx, b, n) : JS_EXCEPTION;
    }
    default:
        r->error = 1;
        return JS_EXCEPTION;
    }
}

/* Writes v as a result: null/undefined -> nil, boolean -> bool, a number
 * with an integral value within +-(2^53 - 1) -> int (other numbers float),
 * BigInt -> int (within int64), string -> str, Uint8Array / ArrayBuffer ->
 * bin. Anything else is an error naming what it was. false: the pending
 * exception or *problem says why. */
static bool sqljs_write_value(JSContext *ctx, sqlwasm_writer *w, JSValueConst v, const char **problem) {
    int tag = JS_VALUE_GET_NORM_TAG(v);
    switch (tag) {
    case JS_TAG_NULL:
    case JS_TAG_UNDEFINED:
        sqlwasm_write_nil(w);
        return true;
    case JS_TAG_BOOL:
        sqlwasm_write_bool(w, JS_VALUE_GET_BOOL(v));
        return true;
    case JS_TAG_INT:
        sqlwasm_write_int(w, JS_VALUE_GET_INT(v));
        return true;
    case JS_TAG_FLOAT64: {
        double d = JS_VALUE_GET_FLOAT64(v);
        if (d == trunc(d) && fabs(d) <= SQLJS_SAFE_INT && !(d == 0 && signbit(d)))
            sqlwasm_write_int(w, (int64_t)d);
        else
            sqlwasm_write_double(w, d);
        return true;
    }
    case JS_TAG_BIG_INT:
    case JS_TAG_SHORT_BIG_INT: {
        int64_t i;
        /* JS_ToBigInt64 wraps modulo 2^64: compare back to catch overflow */
        if (JS_ToBigInt64(ctx, &i, v) < 0) return false;
        JSValue back = JS_NewBigInt64(ctx, i);
        bool same = JS_IsStrictEqual(ctx, back, v);
        JS_FreeValue(ctx, back);
        if (!same) {
            *problem = "returned a BigInt outside the 64-bit integer range";
            return false;
        }
        sqlwasm_write_int(w, i);
        return true;
    }
    case JS_TAG_STRING:
    case JS_TAG_STRING_ROPE: {
        size_t n = 0;
        const char *s = JS_ToCStringLen(ctx, &n, v);
        if (s == NULL) return false;
        sqlwasm_write_str(w, s, (uint32_t)n);
        JS_FreeCString(ctx, s);
        return true;
    }
    case JS_TAG_OBJECT: {
        size_t n = 0;
        uint8_t *p = NULL;
        if (JS_GetTypedArrayType(v) == JS_TYPED_ARRAY_UINT8) {
            p = JS_GetUint8Array(ctx, &n, v);
        } else if (JS_IsArrayBuffer(v)) {
            p = JS_GetArrayBuffer(ctx, &n, v);
        } else {
            *problem = JS_IsFunction(ctx, v)              ? "returned a function"
                       : JS_PromiseState(ctx, v) != JS_PROMISE_NOT_A_PROMISE ? "returned a Promise (async functions cannot be used)"
                       : JS_IsArray(v) ? "returned an array (return a string, e.g. JSON.stringify(value))"
                                       : "returned an object (return a string, e.g. JSON.stringify(value))";
            return false;
        }
        if (p == NULL && n != 0) return false;
        sqlwasm_write_bin(w, p ? p : (const uint8_t *)"", (uint32_t)n);
        return true;
    }
    case JS_TAG_SYMBOL:
        *problem = "returned a Symbol";
        return false;
    default:
        *problem = "returned a value sqlwasm cannot pass to SQL";
        return false;
    }
}

/* The packed result for v (consumed), or the error it caused. */
static int64_t sqljs_result(JSContext *ctx, JSValue v, const char *role) {
    if (JS_IsException(v)) return sqljs_exception_result(ctx, role);
    sqlwasm_writer w;
    sqlwasm_writer_init(&w, 64);
    const char *problem = NULL;
    bool ok = sqljs_write_value(ctx, &w, v, &problem);
    JS_FreeValue(ctx, v);
    if (ok) return sqlwasm_writer_finish(&w);
    if (problem) return sqlwasm_return_errorf("%s%s%s", role ? role : "", role ? " " : "", problem);
    return sqljs_exception_result(ctx, role);
}

#define SQLJS_MAX_ARGS 1000 /* SQLite's limit */

/* Decodes the argument row into argv (JS values to free); -1 when malformed. */
static int sqljs_read_row(JSContext *ctx, const uint8_t *row, uint32_t len, JSValue *argv) {
    sqlwasm_reader r;
    sqlwasm_reader_init(&r, row, len);
    uint32_t argc = sqlwasm_read_array(&r);
    if (r.error || argc > SQLJS_MAX_ARGS) return -1;
    for (uint32_t i = 0; i < argc; i++) {
        argv[i] = sqljs_read_value(ctx, &r);
        if (JS_IsException(argv[i])) {
            for (uint32_t j = 0; j < i; j++) JS_FreeValue(ctx, argv[j]);
            if (!r.error) JS_FreeValue(ctx, JS_GetException(ctx));
            return -1;
        }
    }
    if (!sqlwasm_reader_done(&r)) {
        for (uint32_t j = 0; j < argc; j++) JS_FreeValue(ctx, argv[j]);
        return -1;
    }
    return (int)argc;
}

static void sqljs_free_args(JSContext *ctx, JSValue *argv, int argc) {
    for (int i = 0; i < argc; i++) JS_FreeValue(ctx, argv[i]);
}

static JSValue sqljs_argv[SQLJS_MAX_ARGS];

/* ------------------------------------------------------------------------
 * Scalars: export i is a function, called with the row's values.
 * ------------------------------------------------------------------------ */

int64_t sqljs_scalar(uint32_t fn, const uint8_t *row, uint32_t len) {
    int64_t err;
    JSContext *ctx = sqljs_enter(&err);
    if (ctx == NULL) return err;
    int argc = sqljs_read_row(ctx, row, len, sqljs_argv);
    int64_t result;
    if (argc < 0) {
        result = sqlwasm_return_error("malformed argument row");
    } else if (!JS_IsFunction(ctx, sqljs_exports[fn])) {
        sqljs_free_args(ctx, sqljs_argv, argc);
        result = sqlwasm_return_errorf("%s: export '%s' is not a function", sqljs_filename, sqljs_export_names[fn]);
    } else {
        JSValue v = JS_Call(ctx, sqljs_exports[fn], JS_UNDEFINED, argc, sqljs_argv);
        sqljs_free_args(ctx, sqljs_argv, argc);
        result = sqljs_result(ctx, v, NULL);
    }
    sqljs_leave();
    return result;
}

/* ------------------------------------------------------------------------
 * Aggregates and windows: export i is a class; each state is an instance
 * (`new C()`), rows go to its step(...args) (inverse(...args) for windows),
 * the result comes from final() (value() for a window's current result).
 * A handle is the state's slot plus the runtime's generation, so a handle
 * from before a reset is refused rather than mistaken for another state.
 * ------------------------------------------------------------------------ */

#define SQLJS_SLOT_BITS 20
#define SQLJS_MAX_STATES (1u << SQLJS_SLOT_BITS)

typedef struct {
    JSValue value; /* the instance, or what its constructor threw; JS_UNDEFINED when the slot is free */
    bool threw;
} sqljs_state;

static sqljs_state *sqljs_states;
static uint32_t sqljs_states_cap;
static uint32_t sqljs_states_generation; /* the runtime the slots belong to */

static int32_t sqljs_handle(uint32_t slot) { return (int32_t)((sqljs_generation << SQLJS_SLOT_BITS) | slot); }

/* The state's slot, or -1 when the handle is not a live state. */
static int64_t sqljs_slot(int32_t handle) {
    uint32_t slot = (uint32_t)handle & (SQLJS_MAX_STATES - 1);
    if (((uint32_t)handle >> SQLJS_SLOT_BITS) != sqljs_generation || sqljs_states_generation != sqljs_generation ||
        slot >= sqljs_states_cap || JS_IsUndefined(sqljs_states[slot].value))
        return -1;
    return slot;
}

static int64_t sqljs_lost_state(void) {
    return sqlwasm_return_error("aggregate state lost: the JavaScript engine was restarted after a trap");
}

int32_t sqljs_agg_init(uint32_t fn) {
    int64_t err;
    JSContext *ctx = sqljs_enter(&err);
    if (ctx == NULL) return -1; /* step reports the cause */
    if (sqljs_states_generation != sqljs_generation) {
        /* slots of an abandoned runtime: forget them */
        for (uint32_t i = 0; i < sqljs_states_cap; i++) sqljs_states[i].value = JS_UNDEFINED;
        sqljs_states_generation = sqljs_generation;
    }
    uint32_t slot = 0;
    while (slot < sqljs_states_cap && !JS_IsUndefined(sqljs_states[slot].value)) slot++;
    if (slot == sqljs_states_cap) {
        uint32_t cap = sqljs_states_cap ? 2 * sqljs_states_cap : 16;
        sqljs_state *grown = cap <= SQLJS_MAX_STATES ? realloc(sqljs_states, cap * sizeof(sqljs_state)) : NULL;
        if (grown == NULL) {
            sqljs_leave();
            return -1;
        }
        for (uint32_t i = sqljs_states_cap; i < cap; i++) grown[i].value = JS_UNDEFINED;
        sqljs_states = grown;
        sqljs_states_cap = cap;
    }
    sqljs_state *state = &sqljs_states[slot];
    state->threw = false;
    if (!JS_IsConstructor(ctx, sqljs_exports[fn])) {
        state->value = JS_NULL; /* the first call on it says so */
    } else {
        state->value = JS_CallConstructor(ctx, sqljs_exports[fn], 0, NULL);
        if (JS_IsException(state->value)) {
            /* init cannot fail: the first call on the state rethrows */
            state->value = JS_GetException(ctx);
            state->threw = true;
            if (JS_IsUndefined(state->value)) state->value = JS_NULL;
        }
    }
    sqljs_leave();
    return sqljs_handle(slot);
}

/* Calls the method of the state behind handle with args; consumes nothing. */
static JSValue sqljs_call_method(JSContext *ctx, uint32_t fn, const sqljs_state *s, sqljs_method method, int argc,
                                 JSValueConst *argv, int64_t *err) {
    const char *name = sqljs_method_names[method];
    JSValueConst state = s->value;
    if (s->threw) {
        JS_Throw(ctx, JS_DupValue(ctx, state));
        *err = sqljs_exception_result(ctx, "constructor");
        return JS_UNINITIALIZED;
    }
    if (JS_IsNull(state)) {
        *err = sqlwasm_return_errorf("%s: export '%s' is not a class", sqljs_filename, sqljs_export_names[fn]);
        return JS_UNINITIALIZED;
    }
    JSValue function = JS_GetProperty(ctx, state, sqljs_method_atoms[method]);
    if (JS_IsException(function)) {
        *err = sqljs_exception_result(ctx, name);
        return JS_UNINITIALIZED;
    }
    if (!JS_IsFunction(ctx, function)) {
        JS_FreeValue(ctx, function);
        *err = sqlwasm_return_errorf("%s: class '%s' has no method %s()", sqljs_filename, sqljs_export_names[fn], name);
        return JS_UNINITIALIZED;
    }
    JSValue v = JS_Call(ctx, function, state, argc, argv);
    JS_FreeValue(ctx, function);
    return v;
}

/* step and inverse: 0, or the packed error. */
static int64_t sqljs_agg_rows(uint32_t fn, int32_t handle, const uint8_t *row, uint32_t len, sqljs_method method) {
    int64_t err;
    JSContext *ctx = sqljs_enter(&err);
    if (ctx == NULL) return err;
    int64_t slot = sqljs_slot(handle), result = 0;
    int argc;
    if (slot < 0) {
        result = sqljs_lost_state();
    } else if ((argc = sqljs_read_row(ctx, row, len, sqljs_argv)) < 0) {
        result = sqlwasm_return_error("malformed argument row");
    } else {
        JSValue v = sqljs_call_method(ctx, fn, &sqljs_states[slot], method, argc, sqljs_argv, &result);
        sqljs_free_args(ctx, sqljs_argv, argc);
        if (JS_IsException(v)) result = sqljs_exception_result(ctx, sqljs_method_names[method]);
        else JS_FreeValue(ctx, v);
    }
    sqljs_leave();
    return result;
}

int64_t sqljs_agg_step(uint32_t fn, int32_t handle, const uint8_t *row, uint32_t len) {
    return sqljs_agg_rows(fn, handle, row, len, SQLJS_STEP);
}

int64_t sqljs_agg_inverse(uint32_t fn, int32_t handle, const uint8_t *row, uint32_t len) {
    return sqljs_agg_rows(fn, handle, row, len, SQLJS_INVERSE);
}

/* final (release = true) and value: the packed result. */
static int64_t sqljs_agg_result(uint32_t fn, int32_t handle, sqljs_method method, bool release) {
    sqlwasm_arena_reset(); /* no argument row to reset it */
    int64_t err;
    JSContext *ctx = sqljs_enter(&err);
    if (ctx == NULL) return err;
    int64_t slot = sqljs_slot(handle), result = 0;
    if (slot < 0) {
        result = sqljs_lost_state();
    } else {
        JSValue v = sqljs_call_method(ctx, fn, &sqljs_states[slot], method, 0, NULL, &result);
        if (!JS_IsUninitialized(v)) result = sqljs_result(ctx, v, sqljs_method_names[method]);
        if (release) {
            JS_FreeValue(ctx, sqljs_states[slot].value);
            sqljs_states[slot].value = JS_UNDEFINED;
        }
    }
    sqljs_leave();
    return result;
}

int64_t sqljs_agg_final(uint32_t fn, int32_t handle) { return sqljs_agg_result(fn, handle, SQLJS_FINAL, true); }

int64_t sqljs_agg_value(uint32_t fn, int32_t handle) { return sqljs_agg_result(fn, handle, SQLJS_VALUE, false); }

void sqljs_agg_drop(uint32_t fn, int32_t handle) {
    (void)fn;
    int64_t err;
    JSContext *ctx = sqljs_enter(&err);
    if (ctx == NULL) return;
    int64_t slot = sqljs_slot(handle);
    if (slot >= 0) {
        JS_FreeValue(ctx, sqljs_states[slot].value);
        sqljs_states[slot].value = JS_UNDEFINED;
    }
    sqljs_leave();
}

/* ------------------------------------------------------------------------
 * Build time: `sqlwasm build` runs the module once in a probe to learn its
 * exports. The result is UTF-8 JSON text (not msgpack):
 *   {"exports": [{"name": ..., "function": bool, "methods": [...]}, ...]}
 * or {"error": text}.
 * ------------------------------------------------------------------------ */

static const char sqljs_describe_js[] =
    "(ns) => JSON.stringify({exports: Object.keys(ns).map((name) => {\n"
    "  const v = ns[name], methods = [];\n"
    "  if (typeof v === 'function')\n"
    "    for (let p = v.prototype; p && p !== Object.prototype; p = Object.getPrototypeOf(p))\n"
    "      for (const m of ['step', 'final', 'value', 'inverse'])\n"
    "        if (!methods.includes(m) && typeof Object.getOwnPropertyDescriptor(p, m)?.value === 'function')\n"
    "          methods.push(m);\n"
    "  return {name, function: typeof v === 'function', methods};\n"
    "})})";

int64_t sqljs_describe(const char *text, uint32_t len, const char *filename) {
    JSContext *ctx = sqljs_new_context();
    static const char oom[] = "{\"error\": \"out of memory\"}";
    if (ctx == NULL) return sqlwasm_result(oom, sizeof oom - 1);
    JS_UpdateStackTop(JS_GetRuntime(ctx));
    sqljs_init_error[0] = '\0';
    JSValue ns = sqljs_evaluate(ctx, text, len, filename);
    JSValue json = JS_EXCEPTION;
    if (!JS_IsException(ns)) {
        JSValue fn = JS_Eval(ctx, sqljs_describe_js, sizeof sqljs_describe_js - 1, "<describe>", JS_EVAL_TYPE_GLOBAL);
        json = JS_IsException(fn) ? fn : JS_Call(ctx, fn, JS_UNDEFINED, 1, (JSValueConst *)&ns);
        JS_FreeValue(ctx, fn);
        JS_FreeValue(ctx, ns);
        if (JS_IsException(json)) {
            sqljs_exception_text(ctx, sqljs_error_buf, sizeof sqljs_error_buf);
            snprintf(sqljs_init_error, sizeof sqljs_init_error, "listing the exports of %s: %s", filename,
                     sqljs_error_buf);
        }
    }
    if (JS_IsException(json)) {
        /* the error as a JSON object, through JSON.stringify for the escaping */
        JSValue obj = JS_NewObject(ctx);
        JS_SetPropertyStr(ctx, obj, "error", JS_NewString(ctx, sqljs_init_error));
        json = JS_JSONStringify(ctx, obj, JS_UNDEFINED, JS_UNDEFINED);
        JS_FreeValue(ctx, obj);
    }
    size_t n = 0;
    const char *s = JS_ToCStringLen(ctx, &n, json);
    JS_FreeValue(ctx, json);
    char *out = s ? sqlwasm_arena_alloc(n) : NULL;
    if (out == NULL) return sqlwasm_result(oom, sizeof oom - 1);
    memcpy(out, s, n);
    JS_FreeCString(ctx, s);
    return sqlwasm_result(out, (uint32_t)n);
}
