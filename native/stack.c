/* stack.c: the native stack check before every guest call. */

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

/* What a call into inst's guest needs left: the wasm frames, wasmtime's and
   sqlwasm's own frames, and the host functions' frames if it has any. */
static inline size_t sw_stack_needed(const sw_instance *inst)
{
    return (size_t)SW_MAX_WASM_STACK + SW_CALL_STACK_RESERVE + inst->host_stack;
}

static inline int sw_stack_enough(const sw_instance *inst)
{
    return sw_stack_left() >= sw_stack_needed(inst);
}

static __attribute__((noinline, cold)) void sw_report_stack(sqlite3_context *ctx, const sw_function *f)
{
    sw_errorf(ctx, f->inst->conn->api,
              "%s: not enough native stack left on this thread to call the guest safely "
              "(%zu bytes left, %zu needed; the host is nested too deeply or the thread's stack is too small)",
              f->label, sw_stack_left(), sw_stack_needed(f->inst));
}
