/* table.c: table-valued functions. Each is an eponymous virtual table whose
   hidden columns arg1..argN are its arguments; open(args) gives a guest
   handle, next(handle) a batch of rows, close(handle) frees it. */

typedef struct {
    sqlite3_vtab base;
    sw_function *f;
} sw_table;

typedef struct {
    sqlite3_vtab_cursor base;
    int32_t handle;
    uint8_t live; /* open returned handle and close has not been called */
    uint8_t done; /* next returned no rows: no more calls */
    uint8_t eof;
    sqlite3_int64 rowid;
    sqlite3_value **args; /* the arguments, for the hidden columns */
    int n_args;
    uint8_t *batch; /* a copy of next's result: other calls may reuse guest memory */
    size_t batch_cap;
    sw_reader rows; /* what is left of the batch */
    uint32_t rows_left;
    sw_cell cells[]; /* the current row */
} sw_table_cursor;

static sw_function *sw_table_function(sqlite3_vtab_cursor *cursor) { return ((sw_table *)cursor->pVtab)->f; }

/* The pending message (sw_pending_error) as the virtual table's error. */
static int sw_table_error(sqlite3_vtab *vtab, const sw_function *f)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    api->free(vtab->zErrMsg);
    vtab->zErrMsg = api->mprintf("%s", sw_pending_error);
    return SQLITE_ERROR;
}

static int sw_table_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                            char **errmsg)
{
    (void)argc;
    (void)argv;
    sw_function *f = aux;
    const sqlite3_api_routines *api = f->inst->conn->api;
    int rc = api->declare_vtab(db, f->table_schema);
    if (rc != SQLITE_OK) {
        *errmsg = api->mprintf("%s: %s", f->label, api->errmsg(db));
        return rc;
    }
    /* As for functions: a module that can reach the host only from top-level SQL. */
    api->vtab_config(db, f->direct_only ? SQLITE_VTAB_DIRECTONLY : SQLITE_VTAB_INNOCUOUS);
    sw_table *table = calloc(1, sizeof *table);
    if (!table)
        return SQLITE_NOMEM;
    table->f = f;
    *out = &table->base;
    return SQLITE_OK;
}

static int sw_table_disconnect(sqlite3_vtab *vtab)
{
    const sqlite3_api_routines *api = ((sw_table *)vtab)->f->inst->conn->api;
    api->free(vtab->zErrMsg);
    free(vtab);
    return SQLITE_OK;
}

/* Equality constraints on the hidden columns are the arguments, passed to
   filter in argument order; SQLite applies every other constraint. */
static int sw_table_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
    const sw_function *f = ((sw_table *)vtab)->f;
    int constraint_of[SW_MAX_ARGS];
    uint8_t unusable[SW_MAX_ARGS];
    for (int a = 0; a < f->n_args; a++) {
        constraint_of[a] = -1;
        unusable[a] = 0;
    }
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        int a = c->iColumn - f->n_columns;
        if (a < 0 || a >= f->n_args || c->op != SQLITE_INDEX_CONSTRAINT_EQ)
            continue;
        if (c->usable)
            constraint_of[a] = i;
        else
            unusable[a] = 1;
    }
    int given = 0;
    for (int a = 0; a < f->n_args; a++) {
        if (constraint_of[a] < 0) {
            /* This plan lacks an argument another plan (a join order) can supply. */
            if (unusable[a])
                return SQLITE_CONSTRAINT;
            continue;
        }
        info->aConstraintUsage[constraint_of[a]].argvIndex = ++given;
        info->aConstraintUsage[constraint_of[a]].omit = 1;
    }
    /* A plan missing an argument stays possible (filter then names the
       missing ones) but is never preferred. */
    info->idxNum = given;
    info->estimatedCost = given == f->n_args ? 1000.0 : 1e12;
    info->estimatedRows = 1000;
    return SQLITE_OK;
}

static int sw_table_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
    const sw_function *f = ((sw_table *)vtab)->f;
    sw_table_cursor *cur = calloc(1, sizeof *cur + (size_t)f->n_columns * sizeof(sw_cell));
    if (!cur)
        return SQLITE_NOMEM;
    cur->eof = 1;
    *out = &cur->base;
    return SQLITE_OK;
}

/* close(handle), once per handle, whatever happened before. */
static void sw_table_release(sw_table_cursor *cur, const sw_function *f)
{
    if (!cur->live)
        return;
    cur->live = 0;
    sw_val_raw vals[1];
    vals[0].i32 = cur->handle;
    if (!sw_guest_cleanup_call(NULL, f, &f->funcs[SW_FN_CLOSE], sw_trap_in[SW_FN_CLOSE], vals, 1))
        sw_pending_error[0] = '\0'; /* nothing to report it to: the rows are done */
}

static void sw_table_reset(sw_table_cursor *cur, const sw_function *f)
{
    sw_table_release(cur, f);
    const sqlite3_api_routines *api = f->inst->conn->api;
    for (int a = 0; a < cur->n_args; a++)
        api->value_free(cur->args[a]);
    api->free(cur->args);
    cur->args = NULL;
    cur->n_args = 0;
    cur->done = 0;
    cur->eof = 1;
    cur->rows_left = 0;
    cur->rows.p = cur->rows.end = NULL; /* what was left of the last batch is dropped */
    cur->rowid = 0;
}

static int sw_table_close(sqlite3_vtab_cursor *cursor)
{
    sw_table_cursor *cur = (sw_table_cursor *)cursor;
    sw_table_reset(cur, sw_table_function(cursor));
    free(cur->batch);
    free(cur);
    return SQLITE_OK;
}

/* The value of column `column` of a row, checked against its declared type
   (an integer in a real column becomes a real, as for results). */
static int sw_table_cell_type_ok(int declared, sw_cell *c)
{
    switch (declared) {
    case SW_TYPE_INTEGER: return c->kind == SQLITE_INTEGER || c->kind == SQLITE_NULL;
    case SW_TYPE_REAL:
        if (c->kind == SQLITE_INTEGER) {
            c->kind = SQLITE_FLOAT;
            c->d = (double)c->i;
        }
        return c->kind == SQLITE_FLOAT || c->kind == SQLITE_NULL;
    case SW_TYPE_TEXT: return c->kind == SQLITE_TEXT || c->kind == SQLITE_NULL;
    case SW_TYPE_BLOB: return c->kind == SQLITE_BLOB || c->kind == SQLITE_NULL;
    default: return c->kind != SW_VALUE_GUEST_ERROR;
    }
}

/* Calls next and keeps a copy of its batch. Returns 1, or 0 with the error pending. */
static int sw_table_fetch(sw_table_cursor *cur, const sw_function *f)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_instance *inst = f->inst;
    sw_val_raw vals[1];
    vals[0].i32 = cur->handle;
    if (!sw_guest_call(NULL, f, &f->funcs[SW_FN_NEXT], sw_trap_in[SW_FN_NEXT], vals, 1))
        return 0;
    uint64_t packed = (uint64_t)vals[0].i64;
    uint32_t ptr = (uint32_t)(packed >> 32), len = (uint32_t)packed;
    if (len > inst->max_result_bytes) {
        sw_errorf(NULL, api, "%s: next returned %u bytes, over the %u-byte result limit", f->label, len,
                  inst->max_result_bytes);
        return 0;
    }
    if ((uint64_t)ptr + len > inst->mem_size_seen) {
        inst->mem_size_seen = wt.memory_data_size(inst->context, &inst->memory);
        if ((uint64_t)ptr + len > inst->mem_size_seen) {
            sw_errorf(NULL, api, "%s: next's result (ptr %u, len %u) lies outside the %zu-byte memory", f->label,
                      ptr, len, inst->mem_size_seen);
            return 0;
        }
    }
    if (len > cur->batch_cap) {
        uint8_t *grown = realloc(cur->batch, len);
        if (!grown) {
            sw_nomem(NULL, api);
            return 0;
        }
        cur->batch = grown;
        cur->batch_cap = len;
    }
    if (len)
        memcpy(cur->batch, inst->mem_base + ptr, len);
    cur->rows.p = cur->batch;
    cur->rows.end = cur->batch + len;
    if (!sw_msgpack_array(&cur->rows, &cur->rows_left)) {
        sw_cell v;
        uint64_t detail = 0;
        sw_reader whole = {cur->batch, cur->batch + len};
        if (sw_msgpack_value(&whole, 0, &v, &detail) == SW_DECODE_OK && v.kind == SW_VALUE_GUEST_ERROR &&
            whole.p == whole.end) {
            sw_report_guest_error(NULL, f, v.p, v.n);
        } else {
            sw_errorf(NULL, api, "%s: next must return an array of rows or {\"error\": text}", f->label);
        }
        return 0;
    }
    if (cur->rows_left == 0)
        cur->done = 1; /* sw_table_advance checks for bytes after the empty array */
    return 1;
}

/* Moves to the next row, fetching batches as needed. Returns 1, or 0 with
   the error pending. */
static int sw_table_advance(sw_table_cursor *cur, const sw_function *f)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    while (cur->rows_left == 0) {
        if (cur->rows.p != cur->rows.end) {
            sw_errorf(NULL, api, "%s: next's result has %ld trailing bytes", f->label,
                      (long)(cur->rows.end - cur->rows.p));
            return 0;
        }
        if (cur->done || !sw_table_fetch(cur, f)) {
            if (cur->done) {
                cur->eof = 1;
                sw_table_release(cur, f); /* free the guest's state as soon as the rows end */
                return 1;
            }
            return 0;
        }
    }
    uint32_t n_cells;
    if (!sw_msgpack_array(&cur->rows, &n_cells) || n_cells != (uint32_t)f->n_columns) {
        sw_errorf(NULL, api, "%s: row %lld is not an array of %d values", f->label, (long long)cur->rowid + 1,
                  f->n_columns);
        return 0;
    }
    for (int i = 0; i < f->n_columns; i++) {
        uint64_t detail = 0;
        sw_decode_status status = sw_msgpack_value(&cur->rows, 0, &cur->cells[i], &detail);
        if (status != SW_DECODE_OK) {
            sw_errorf(NULL, api, "%s: row %lld, column %d: %s", f->label, (long long)cur->rowid + 1, i + 1,
                      status == SW_DECODE_TRUNCATED      ? "truncated msgpack"
                      : status == SW_DECODE_INT_RANGE    ? "integer out of the int64 range"
                      : status == SW_DECODE_TEXT_UTF8    ? "text is not valid UTF-8"
                      : status == SW_DECODE_UNSUPPORTED ? "unsupported msgpack type"
                                                         : "a map is not a value");
            return 0;
        }
        if (!sw_table_cell_type_ok(f->column_types[i], &cur->cells[i])) {
            sw_errorf(NULL, api, "%s: row %lld, column %d is %s, declared %s", f->label, (long long)cur->rowid + 1,
                      i + 1, cur->cells[i].kind == SW_VALUE_GUEST_ERROR ? "a map" : sw_sql_type_name(cur->cells[i].kind),
                      sw_type_name(f->column_types[i]));
            return 0;
        }
    }
    cur->rows_left--;
    cur->rowid++;
    cur->eof = 0;
    return 1;
}

static int sw_table_filter(sqlite3_vtab_cursor *cursor, int idx_num, const char *idx_str, int argc,
                           sqlite3_value **argv)
{
    (void)idx_num;
    (void)idx_str;
    sw_table_cursor *cur = (sw_table_cursor *)cursor;
    const sw_function *f = sw_table_function(cursor);
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_table_reset(cur, f);
    if (argc != f->n_args) {
        sw_errorf(NULL, api, "%s: takes %d argument%s, got %d", f->label, f->n_args, f->n_args == 1 ? "" : "s",
                  argc);
        return sw_table_error(cursor->pVtab, f);
    }
    if (argc) {
        cur->args = api->malloc64(sizeof *cur->args * (size_t)argc);
        if (!cur->args)
            return SQLITE_NOMEM;
        for (int a = 0; a < argc; a++) {
            cur->args[a] = api->value_dup(argv[a]);
            if (!cur->args[a]) {
                cur->n_args = a;
                return SQLITE_NOMEM;
            }
        }
        cur->n_args = argc;
    }
    sw_cell stack_cells[SW_STACK_CELLS];
    sw_cell *cells = argc <= SW_STACK_CELLS ? stack_cells : api->malloc64(sizeof *cells * (size_t)argc);
    if (!cells)
        return SQLITE_NOMEM;
    uint32_t row_len = 0;
    int ok = sw_write_row(NULL, f, argc, argv, cells, &row_len);
    if (cells != stack_cells)
        api->free(cells);
    if (ok == SW_SKIP_ROW)
        return SQLITE_OK; /* a NULL argument under null = "strict": no rows */
    if (!ok)
        return sw_table_error(cursor->pVtab, f);
    sw_val_raw vals[2];
    vals[0].i32 = (int32_t)f->inst->arg_ptr;
    vals[1].i32 = (int32_t)row_len;
    if (!sw_guest_call(NULL, f, &f->funcs[SW_FN_OPEN], sw_trap_in[SW_FN_OPEN], vals, 2))
        return sw_table_error(cursor->pVtab, f);
    if (vals[0].i32 < 0) {
        sw_errorf(NULL, api, "%s: open failed (returned %d)", f->label, vals[0].i32);
        return sw_table_error(cursor->pVtab, f);
    }
    cur->handle = vals[0].i32;
    cur->live = 1;
    if (!sw_table_advance(cur, f)) {
        int rc = sw_table_error(cursor->pVtab, f);
        sw_table_release(cur, f);
        return rc;
    }
    return SQLITE_OK;
}

static int sw_table_next(sqlite3_vtab_cursor *cursor)
{
    sw_table_cursor *cur = (sw_table_cursor *)cursor;
    const sw_function *f = sw_table_function(cursor);
    if (sw_table_advance(cur, f))
        return SQLITE_OK;
    int rc = sw_table_error(cursor->pVtab, f);
    sw_table_release(cur, f);
    cur->eof = 1;
    return rc;
}

static int sw_table_eof(sqlite3_vtab_cursor *cursor) { return ((sw_table_cursor *)cursor)->eof; }

static int sw_table_column(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    sw_table_cursor *cur = (sw_table_cursor *)cursor;
    const sw_function *f = sw_table_function(cursor);
    const sqlite3_api_routines *api = f->inst->conn->api;
    if (column >= f->n_columns) {
        int a = column - f->n_columns;
        if (a < cur->n_args)
            api->result_value(ctx, cur->args[a]);
        return SQLITE_OK;
    }
    const sw_cell *c = &cur->cells[column];
    switch (c->kind) {
    case SQLITE_INTEGER: api->result_int64(ctx, c->i); break;
    case SQLITE_FLOAT: api->result_double(ctx, c->d); break;
    case SQLITE_TEXT: api->result_text(ctx, (const char *)c->p, (int)c->n, SQLITE_TRANSIENT); break;
    case SQLITE_BLOB: api->result_blob(ctx, c->p, (int)c->n, SQLITE_TRANSIENT); break;
    default: api->result_null(ctx); break;
    }
    return SQLITE_OK;
}

static int sw_table_rowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid)
{
    *rowid = ((sw_table_cursor *)cursor)->rowid;
    return SQLITE_OK;
}

/* Eponymous only (no xCreate): the function is used as FROM name(args). */
static const sqlite3_module sw_table_module = {
    .iVersion = 0,
    .xCreate = NULL,
    .xConnect = sw_table_connect,
    .xBestIndex = sw_table_best_index,
    .xDisconnect = sw_table_disconnect,
    .xDestroy = NULL,
    .xOpen = sw_table_open,
    .xClose = sw_table_close,
    .xFilter = sw_table_filter,
    .xNext = sw_table_next,
    .xEof = sw_table_eof,
    .xColumn = sw_table_column,
    .xRowid = sw_table_rowid,
};
