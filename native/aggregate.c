/* aggregate.c: aggregate and window functions: the per-group state, step
   batching, and final/value. */

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
            sw_guest_cleanup_call(ctx, f, &f->funcs[SW_FN_DROP], sw_trap_in[SW_FN_DROP], vals, 1);
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
