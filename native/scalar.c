/* scalar.c: calling a function's export with a row of SQL arguments (shared
   with aggregate steps), and the scalar call from SQL. */

/* The names of the exports in messages. */
static const char *const sw_trap_in[SW_FN_COUNT] = {"trap",          "trap in init", "trap in final",
                                                    "trap in value", "trap in inverse", "trap in drop",
                                                    "trap in step_batch", "trap in open",
                                                    "trap in next",  "trap in close"};

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
