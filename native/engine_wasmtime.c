/* engine_wasmtime.c: the wasmtime binding, the guest call with its limits,
   how traps are reported, and the epoch callback. */

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

