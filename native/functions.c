/* functions.c: registering a module's SQL functions with SQLite (scalars,
   aggregates, windows, table functions, NAME_partial / NAME_merge), and
   undoing it. */

/* Required exports of each kind (bits of SW_FN_*); drop is always optional. */
static const unsigned sw_required_exports[4] = {
    [SW_KIND_SCALAR] = 1u << SW_FN_MAIN,
    [SW_KIND_AGGREGATE] = 1u << SW_FN_MAIN | 1u << SW_FN_INIT | 1u << SW_FN_FINAL,
    [SW_KIND_WINDOW] = 1u << SW_FN_MAIN | 1u << SW_FN_INIT | 1u << SW_FN_FINAL | 1u << SW_FN_VALUE |
                       1u << SW_FN_INVERSE,
    [SW_KIND_TABLE] = 1u << SW_FN_OPEN | 1u << SW_FN_NEXT | 1u << SW_FN_CLOSE,
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

int sw_conn_add_function(sw_conn *conn, const sw_function_desc *desc, char *errbuf, size_t errbuf_len)
{
    const char *sql_name = desc->sql_name;
    int instance = desc->instance, kind = desc->kind, abi = desc->abi, n_args = desc->n_args;
    unsigned present = desc->present;
    if (conn->closed) {
        sw_errbuf(errbuf, errbuf_len, "the connection is closed");
        return -1;
    }
    if (instance < 0 || instance >= conn->n_instances || n_args < 0 || n_args > SW_MAX_ARGS || kind < 0 ||
        kind > SW_KIND_TABLE || (present & sw_required_exports[kind]) != sw_required_exports[kind] ||
        (kind == SW_KIND_TABLE &&
         (abi != SW_ABI_MSGPACK || desc->vararg_type || desc->n_columns < 1 || !desc->column_types ||
          !desc->table_schema)) ||
        (abi != SW_ABI_RAW && abi != SW_ABI_MSGPACK) ||
        (abi == SW_ABI_MSGPACK && !conn->instances[instance]->has_alloc) ||
        (abi == SW_ABI_RAW && (desc->vararg_type || desc->null_call)) ||
        /* serialize and merge come together, for aggregates, and merge needs a buffer. */
        (!(present & (1u << SW_FN_SERIALIZE)) != !(present & (1u << SW_FN_MERGE))) ||
        ((present & (1u << SW_FN_MERGE)) &&
         ((kind != SW_KIND_AGGREGATE && kind != SW_KIND_WINDOW) || !conn->instances[instance]->has_alloc)) ||
        /* step_batch rows are buffered in C as wasm values (see SW_BATCH_MAX_ARGS). */
        ((present & (1u << SW_FN_STEP_BATCH)) &&
         (kind != SW_KIND_AGGREGATE || abi != SW_ABI_RAW || n_args > SW_BATCH_MAX_ARGS ||
          !conn->instances[instance]->has_alloc))) {
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
    f->export_name = sw_strdup(desc->export_name);
    if (kind == SW_KIND_TABLE) {
        f->column_types = malloc((size_t)desc->n_columns);
        f->table_schema = sw_strdup(desc->table_schema);
    }
    if (!f->label || !f->sql_name || !f->export_name ||
        (kind == SW_KIND_TABLE && (!f->column_types || !f->table_schema))) {
        sw_function_free(f);
        sw_errbuf(errbuf, errbuf_len, "out of memory");
        return -1;
    }
    snprintf(f->label, label_len, "%s.%s", inst->name, sql_name);
    if (kind == SW_KIND_TABLE) {
        memcpy(f->column_types, desc->column_types, (size_t)desc->n_columns);
        f->n_columns = desc->n_columns;
    }
    f->inst = inst;
    sw_set_funcs(f, desc->funcs, present);
    f->kind = kind;
    f->abi = abi;
    if (present & (1u << SW_FN_STEP_BATCH))
        f->batch_rows = SW_BATCH_ROWS;
    f->returns = desc->returns;
    f->direct_only = desc->direct_only;
    f->null_call = desc->null_call;
    f->n_args = n_args;
    f->vararg_type = desc->vararg_type;
    memcpy(f->arg_types, desc->arg_types, (size_t)n_args);
    /* Owned by conn from here on, whatever SQLite says. */
    int index = conn->n_functions;
    conn->functions[conn->n_functions++] = f;

    const sqlite3_api_routines *api = conn->api;
    int slot = sw_api_slot(api);
    sw_conn_registered(conn);
    int n_arg = desc->vararg_type ? -1 : n_args;
    /* A sandboxed pure function is safe anywhere (views, triggers, indexes);
       one that can reach the host is callable only from top-level SQL. */
    int flags = SQLITE_UTF8 | (desc->direct_only ? SQLITE_DIRECTONLY : SQLITE_INNOCUOUS) |
                (desc->deterministic ? SQLITE_DETERMINISTIC : 0);
    int rc;
    if (kind == SW_KIND_TABLE)
        rc = api->create_module_v2(conn->db, sql_name, &sw_table_module, f, sw_function_destroy);
    else if (kind == SW_KIND_SCALAR)
        rc = api->create_function_v2(conn->db, sql_name, n_arg, flags, f, sw_scalar_cbs[slot], NULL, NULL,
                                     sw_function_destroy);
    else if (kind == SW_KIND_AGGREGATE)
        rc = api->create_function_v2(conn->db, sql_name, n_arg, flags, f, NULL, sw_step_cbs[slot],
                                     sw_final_cbs[slot], sw_function_destroy);
    else
        rc = api->create_window_function(conn->db, sql_name, n_arg, flags, f, sw_step_cbs[slot],
                                         sw_final_cbs[slot], sw_value_cbs[slot], sw_inverse_cbs[slot],
                                         sw_function_destroy);
    if (rc == SQLITE_OK && (present & (1u << SW_FN_MERGE))) {
        /* NAME_partial(args) and NAME_merge(partial): plain aggregates, also for a window. */
        char partial[96], merge[96];
        snprintf(partial, sizeof partial, "%s_partial", sql_name);
        snprintf(merge, sizeof merge, "%s_merge", sql_name);
        sw_conn_registered(conn);
        rc = api->create_function_v2(conn->db, partial, n_arg, flags, f, NULL, sw_step_cbs[slot],
                                     sw_partial_cbs[slot], sw_function_destroy);
        if (rc == SQLITE_OK) {
            sw_conn_registered(conn);
            rc = api->create_function_v2(conn->db, merge, 1, flags, f, NULL, sw_merge_cbs[slot], sw_final_cbs[slot],
                                         sw_function_destroy);
        }
        if (rc != SQLITE_OK) {
            sw_errbuf(errbuf, errbuf_len, "registering %s: %s", rc == SQLITE_OK ? merge : partial,
                      api->errmsg(conn->db));
            sw_conn_remove_function(conn, index);
            return -1;
        }
    }
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
    /* Registering no callbacks (or no module) deletes the function; SQLite
       then runs its destructor. */
    if (f->kind == SW_KIND_TABLE)
        rc = api->create_module_v2(conn->db, f->sql_name, NULL, NULL, NULL);
    else if (f->kind == SW_KIND_WINDOW)
        rc = api->create_window_function(conn->db, f->sql_name, n_arg, SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL,
                                         NULL);
    else
        rc = api->create_function_v2(conn->db, f->sql_name, n_arg, SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL);
    if (f->present & (1u << SW_FN_MERGE)) {
        char name[96];
        snprintf(name, sizeof name, "%s_partial", f->sql_name);
        int partial_rc = api->create_function_v2(conn->db, name, n_arg, SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL);
        snprintf(name, sizeof name, "%s_merge", f->sql_name);
        int merge_rc = api->create_function_v2(conn->db, name, 1, SQLITE_UTF8, NULL, NULL, NULL, NULL, NULL);
        rc = rc != SQLITE_OK ? rc : partial_rc != SQLITE_OK ? partial_rc : merge_rc;
    }
    if (rc == SQLITE_OK)
        f->removed = 1;
    return rc;
}
