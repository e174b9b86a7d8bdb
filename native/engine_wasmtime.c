/* engine_wasmtime.c: the wasmtime binding, the guest call with its limits,
   how traps are reported (with a backtrace and the guest's debug output),
   and the epoch callback. */

/* wasmtime functions only failure reports and debug output use (not the
   per-row path's slice in wasmtime_abi.h). */
typedef struct {
    size_t size;
    void **data;
} sw_frame_vec;
static struct {
    void (*trap_trace)(const sw_wasm_trap *, sw_frame_vec *);
    void (*error_wasm_trace)(const sw_wasmtime_error *, sw_frame_vec *);
    void (*frame_vec_delete)(sw_frame_vec *);
    const sw_byte_vec *(*frame_func_name)(const void *frame);
    uint32_t (*frame_func_index)(const void *frame);
    void *(*context_get_data)(const sw_wasmtime_context *);
} wt_report;

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
    SW_BIND(global_get, "wasmtime_global_get");
    SW_BIND(global_set, "wasmtime_global_set");
#undef SW_BIND
#define SW_BIND_REPORT(field, symbol)                            \
    do {                                                         \
        *(void **)(&wt_report.field) = dlsym(lib, symbol);       \
        if (!wt_report.field)                                    \
            return "libwasmtime lacks " symbol;                  \
    } while (0)
    SW_BIND_REPORT(trap_trace, "wasm_trap_trace");
    SW_BIND_REPORT(error_wasm_trace, "wasmtime_error_wasm_trace");
    SW_BIND_REPORT(frame_vec_delete, "wasm_frame_vec_delete");
    SW_BIND_REPORT(frame_func_name, "wasmtime_frame_func_name");
    SW_BIND_REPORT(frame_func_index, "wasm_frame_func_index");
    SW_BIND_REPORT(context_get_data, "wasmtime_context_get_data");
#undef SW_BIND_REPORT
    if (pthread_atfork(sw_atfork_prepare, sw_atfork_parent, sw_atfork_child) != 0)
        return "pthread_atfork failed";
    wt_bound = 1;
    return NULL;
}

size_t sw_sizeof_func(void) { return sizeof(sw_wasmtime_func); }
size_t sw_sizeof_memory(void) { return sizeof(sw_wasmtime_memory); }
size_t sw_sizeof_global(void) { return sizeof(sw_wasmtime_global); }
size_t sw_sizeof_val(void) { return sizeof(sw_wasmtime_val); }

/* After a trap: the shadow stack pointer back where calls start from, so
   the frames the trapped call left in linear memory are free again. */
static void sw_restore_stack_pointer(sw_instance *inst)
{
    if (!inst->has_stack_pointer)
        return;
    sw_wasmtime_val val;
    memset(&val, 0, sizeof val);
    val.kind = SW_VALKIND_I32;
    val.of.i32 = inst->stack_pointer_at_rest;
    sw_wasmtime_error *err = wt.global_set(inst->context, &inst->stack_pointer, &val);
    if (err)
        wt.error_delete(err);
}
size_t sw_sizeof_val_raw(void) { return sizeof(sw_val_raw); }

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
    /* "Caused by:" lists its causes numbered ("    1: wasm trap: ..."). */
    size_t digits = begin;
    while (digits < end && v->data[digits] >= '0' && v->data[digits] <= '9')
        digits++;
    if (digits > begin && end - digits >= 2 && v->data[digits] == ':' && v->data[digits + 1] == ' ')
        begin = digits + 2;
    static const char prefix[] = "wasm trap: ";
    if (end - begin >= sizeof prefix - 1 && memcmp(v->data + begin, prefix, sizeof prefix - 1) == 0)
        begin += sizeof prefix - 1;
    *start = v->data ? v->data + begin : "";
    *len = end - begin > 300 ? 300 : (int)(end - begin);
}

/*
 * A guest's debug output: what it wrote to fds 1 and 2 (wasi fd_write, see
 * sqlwasm/_capabilities.py) during its current call, the last
 * SW_OUTPUT_MAX bytes of it. Python makes one per store (the store's data)
 * and appends from the fd_write host function; a failing call's SQL error
 * ends with its last lines. The bytes are stamped with the instance's call
 * count, so a call sees only its own output.
 */
enum { SW_OUTPUT_MAX = 4096, SW_OUTPUT_SHOWN = 600, SW_OUTPUT_LINES = 8 };
static const uint64_t SW_OUTPUT_MAGIC = 0x7377677565737430ull; /* "swguest0" */
typedef struct {
    uint64_t magic;
    const sw_instance *inst; /* bound by sw_bind_store; NULL while the store is new */
    uint64_t call;           /* inst->calls when these bytes were written */
    size_t len;
    uint64_t dropped;        /* bytes of this call no longer held */
    char *buf;               /* SW_OUTPUT_MAX bytes, allocated on the first write */
} sw_guest_output;

void *sw_guest_output_new(void)
{
    sw_guest_output *out = calloc(1, sizeof *out);
    if (out)
        out->magic = SW_OUTPUT_MAGIC;
    return out;
}

void sw_guest_output_free(void *handle)
{
    sw_guest_output *out = handle;
    if (!out)
        return;
    out->magic = 0;
    free(out->buf);
    free(out);
}

void sw_guest_output_append(void *handle, const char *data, size_t len, uint64_t skipped)
{
    sw_guest_output *out = handle;
    uint64_t call = out->inst ? out->inst->calls : 0;
    if (out->call != call) {
        out->call = call;
        out->len = 0;
        out->dropped = 0;
    }
    if (!out->buf && !(out->buf = malloc(SW_OUTPUT_MAX))) {
        out->dropped += skipped + len;
        return;
    }
    out->dropped += skipped;
    if (len >= SW_OUTPUT_MAX) {
        out->dropped += out->len + len - SW_OUTPUT_MAX;
        memcpy(out->buf, data + len - SW_OUTPUT_MAX, SW_OUTPUT_MAX);
        out->len = SW_OUTPUT_MAX;
        return;
    }
    if (out->len + len > SW_OUTPUT_MAX) {
        size_t drop = out->len + len - SW_OUTPUT_MAX;
        memmove(out->buf, out->buf + drop, out->len - drop);
        out->len -= drop;
        out->dropped += drop;
    }
    memcpy(out->buf + out->len, data, len);
    out->len += len;
}

static void sw_guest_output_bind(void *context, const sw_instance *inst)
{
    sw_guest_output *out = wt_report.context_get_data(context);
    if (out && out->magic == SW_OUTPUT_MAGIC)
        out->inst = inst;
}

/* A text builder that never overflows: what does not fit is cut. */
typedef struct {
    char *p;
    size_t len, cap;
} sw_text;

static void sw_text_add(sw_text *t, const char *s, size_t n)
{
    if (t->len + 1 >= t->cap)
        return;
    if (n > t->cap - 1 - t->len) {
        n = t->cap - 1 - t->len;
        while (n > 0 && (s[n] & 0xc0) == 0x80) /* never half a character */
            n--;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

/* Adds guest bytes as valid UTF-8 text: control characters other than a
   newline or tab become '?', malformed sequences U+FFFD. */
static void sw_text_add_guest(sw_text *t, const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        int ok = need > 0 && i + need <= n;
        for (size_t k = 1; ok && k < need; k++)
            ok = (s[i + k] & 0xc0) == 0x80;
        if (ok && need > 1) {
            uint32_t cp = need == 2 ? c & 0x1f : need == 3 ? c & 0x0f : c & 0x07;
            for (size_t k = 1; k < need; k++)
                cp = cp << 6 | (s[i + k] & 0x3f);
            static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= least[need] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (!ok) {
            static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
            sw_text_add(t, replacement, sizeof replacement - 1);
            i++;
        } else if (need == 1 && ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)) {
            sw_text_add(t, "?", 1);
            i++;
        } else {
            sw_text_add(t, (const char *)s + i, need);
            i += need;
        }
    }
}

/* The last lines the failing call wrote to stdout and stderr, if any. */
static void sw_add_guest_output(sw_text *t, const sw_instance *inst)
{
    if (!inst->context)
        return;
    const sw_guest_output *out = wt_report.context_get_data(inst->context);
    if (!out || out->magic != SW_OUTPUT_MAGIC || out->inst != inst || out->call != inst->calls || !out->len)
        return;
    size_t end = out->len;
    while (end > 0 && out->buf[end - 1] == '\n')
        end--;
    size_t start = end, lines = 0;
    while (start > 0 && end - start < SW_OUTPUT_SHOWN) {
        if (out->buf[start - 1] == '\n' && ++lines == SW_OUTPUT_LINES)
            break;
        start--;
    }
    while (start < end && (out->buf[start] & 0xc0) == 0x80) /* start on a character */
        start++;
    int cut = start > 0 || out->dropped;
    static const char whole[] = "\nguest output:\n", last[] = "\nguest output (last lines):\n";
    if (cut)
        sw_text_add(t, last, sizeof last - 1);
    else
        sw_text_add(t, whole, sizeof whole - 1);
    sw_text_add_guest(t, (const uint8_t *)out->buf + start, end - start);
}

/* " in F (called from G <- H)": where the guest was, innermost first,
   by the name section's names when the module has them. */
static void sw_add_backtrace(sw_text *t, sw_frame_vec *frames)
{
    enum { SHOWN = 6 };
    for (size_t i = 0; i < frames->size && i < SHOWN; i++) {
        const sw_byte_vec *name = wt_report.frame_func_name(frames->data[i]);
        char index[40];
        static const char in[] = " in ", called_from[] = " (called from ", arrow[] = " <- ";
        if (i == 0)
            sw_text_add(t, in, sizeof in - 1);
        else if (i == 1)
            sw_text_add(t, called_from, sizeof called_from - 1);
        else
            sw_text_add(t, arrow, sizeof arrow - 1);
        if (name && name->size) {
            sw_text_add_guest(t, (const uint8_t *)name->data, name->size > 80 ? 80 : name->size);
        } else {
            int n = snprintf(index, sizeof index, "wasm function %u", wt_report.frame_func_index(frames->data[i]));
            sw_text_add(t, index, (size_t)n);
        }
        if (i == 0 && frames->size == 1)
            return;
    }
    static const char more[] = " <- ...";
    if (frames->size > SHOWN)
        sw_text_add(t, more, sizeof more - 1);
    if (frames->size > 1)
        sw_text_add(t, ")", 1);
}

/* Reports a failed call into the guest and frees what wasmtime returned. */
static __attribute__((noinline, cold)) void sw_report_failure(sqlite3_context *ctx, const sw_function *f,
                                                               const char *what, sw_wasmtime_error *err,
                                                               sw_wasm_trap *trap)
{
    sw_instance *inst = f->inst;
    const sqlite3_api_routines *api = inst->conn->api;
    char buf[SW_FAILURE_MAX];
    sw_text t = {buf, 0, sizeof buf};
    buf[0] = '\0';
    sw_byte_vec msg = {0, NULL};
    sw_frame_vec frames = {0, NULL};
    if (trap)
        wt_report.trap_trace(trap, &frames);
    else
        wt_report.error_wasm_trace(err, &frames);
    int n;
    /* A host function's failure names the import; the guest frames below it
       add nothing a reader needs. */
    int show_frames = !inst->host_error[0] || inst->stop_reason != SW_STOP_NONE;
    if (inst->stop_reason != SW_STOP_NONE || inst->host_error[0]) {
        if (inst->stop_reason == SW_STOP_TIMEOUT)
            n = snprintf(buf, sizeof buf, "%s: time limit of %u ms exceeded", f->label, inst->timeout_ms);
        else if (inst->stop_reason == SW_STOP_INTERRUPT)
            n = snprintf(buf, sizeof buf, "%s: interrupted", f->label);
        else
            n = snprintf(buf, sizeof buf, "%s: %s", f->label, inst->host_error);
        inst->stop_reason = SW_STOP_NONE;
        inst->host_error[0] = '\0';
    } else {
        const char *cause;
        int cause_len;
        if (trap) {
            uint8_t code = 0xff;
            int has_code = wt.trap_code(trap, &code);
            wt.trap_message(trap, &msg);
            sw_message_cause(&msg, &cause, &cause_len);
            n = snprintf(buf, sizeof buf, "%s: %s (%s): %.*s", f->label, what,
                         has_code ? sw_trap_kind(code) : "trap", cause_len, cause);
        } else {
            wt.error_message(err, &msg);
            sw_message_cause(&msg, &cause, &cause_len);
            n = snprintf(buf, sizeof buf, "%s: %s failed: %.*s", f->label, what, cause_len, cause);
        }
        wt.byte_vec_delete(&msg);
    }
    t.len = n < 0 ? 0 : (size_t)n >= sizeof buf ? sizeof buf - 1 : (size_t)n;
    if (show_frames)
        sw_add_backtrace(&t, &frames);
    sw_add_guest_output(&t, inst);
    wt_report.frame_vec_delete(&frames);
    if (trap)
        wt.trap_delete(trap);
    if (err)
        wt.error_delete(err);
    sw_error_text(ctx, api, buf);
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
    inst->calls++;
    inst->depth = 1;
    sw_wasm_trap *trap = NULL;
    sw_wasmtime_error *err = wt.func_call_unchecked(inst->context, func, vals, n_vals, &trap);
    inst->depth = 0;
    if (err || trap) {
        sw_report_failure(ctx, f, what, err, trap);
        sw_restore_stack_pointer(inst);
        return 0;
    }
    /* wasmtime checks the deadline only at function entries and loop
       back-edges: a guest that spent its time in a host function (a query)
       and then ran straight-line code to its return would get away with it. */
    if (__builtin_expect(inst->host_stack && inst->timeout_ticks, 0) &&
        __atomic_load_n(&sw_ticks, __ATOMIC_RELAXED) - inst->call_started >= inst->timeout_ticks) {
        sw_errorf(ctx, inst->conn->api, "%s: time limit of %u ms exceeded", f->label, inst->timeout_ms);
        return 0;
    }
    return 1;
}

static int sw_guest_cleanup_call(sqlite3_context *ctx, const sw_function *f, const sw_wasmtime_func *func,
                                 const char *what, sw_val_raw *vals, size_t n_vals)
{
    f->inst->cleanup = 1;
    int ok = sw_guest_call(ctx, f, func, what, vals, n_vals);
    f->inst->cleanup = 0;
    return ok;
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
    /* A cleanup call (close, drop) is what an interrupted statement needs to
       end: it gets a grace period before the interrupt applies to it too. */
    if ((!inst->cleanup || elapsed >= SW_CLEANUP_GRACE_TICKS) && conn && conn->is_interrupted &&
        conn->is_interrupted(conn->db)) {
        inst->stop_reason = SW_STOP_INTERRUPT;
        return wt.error_new("sqlwasm: interrupted");
    }
    return NULL;
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

