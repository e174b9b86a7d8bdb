/* values.c: SQLite values converted to the types a function declares, for
   the raw ABI (wasm values) and the msgpack ABI (sw_cell). */

static const char *sw_type_name(int t)
{
    switch (t) {
    case SW_TYPE_INTEGER: return "integer";
    case SW_TYPE_REAL: return "real";
    case SW_TYPE_TEXT: return "text";
    case SW_TYPE_BLOB: return "blob";
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
    case SW_TYPE_INTEGER:
        if (kind != SQLITE_INTEGER && kind != SQLITE_FLOAT)
            goto mismatch;
        c->kind = SQLITE_INTEGER;
        c->i = api->value_int64(v);
        return 1;
    case SW_TYPE_REAL:
        if (kind != SQLITE_INTEGER && kind != SQLITE_FLOAT)
            goto mismatch;
        c->kind = SQLITE_FLOAT;
        c->d = api->value_double(v);
        return 1;
    case SW_TYPE_TEXT:
        if (kind == SQLITE_BLOB)
            goto mismatch;
        kind = SQLITE_TEXT;
        break;
    case SW_TYPE_BLOB:
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
            sw_nomem(ctx, api);
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
            if (declared == SW_TYPE_INTEGER)
                vals[i].i64 = api->value_int64(v);
            else
                vals[i].f64 = (double)api->value_int64(v);
            break;
        case SQLITE_FLOAT:
            if (declared == SW_TYPE_REAL)
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
