/* registry.c: connection lifetime (including the closed list), instances,
   and function registration. */

static pthread_mutex_t sw_closed_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sw_closed_cond = PTHREAD_COND_INITIALIZER;
static sw_conn *sw_closed_head;

/* Held across fork() (watchdog.c): a child must not inherit it locked. */
static void sw_closed_list_lock(void) { pthread_mutex_lock(&sw_closed_lock); }
static void sw_closed_list_unlock(void) { pthread_mutex_unlock(&sw_closed_lock); }

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
        free(f->column_types);
        free(f->table_schema);
        free(f);
    }
    for (int i = 0; i < conn->n_instances; i++) {
        free(conn->instances[i]->name);
        free(conn->instances[i]->version);
        free(conn->instances[i]);
    }
    for (int k = 0; k < SW_CATALOGS; k++)
        free(conn->catalog[k]);
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
static void sw_catalog_destroy(void *aux) { sw_conn_unregistered(*(sw_conn **)aux); }
static void sw_function_destroy(void *f) { sw_conn_unregistered(((sw_function *)f)->inst->conn); }

static void sw_errbuf(char *errbuf, size_t errbuf_len, const char *fmt, ...)
{
    if (!errbuf || !errbuf_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errbuf_len, fmt, ap);
    va_end(ap);
}

sw_conn *sw_conn_open_loaded(char *errbuf, size_t errbuf_len)
{
    const sqlite3_api_routines *api;
    sqlite3 *db;
    if (!sw_take_loaded(&api, &db)) {
        sw_errbuf(errbuf, errbuf_len, "the extension was not loaded into a connection on this thread");
        return NULL;
    }
    return sw_conn_open(api, db, errbuf, errbuf_len);
}

sw_conn *sw_conn_open(const void *routines, void *handle, char *errbuf, size_t errbuf_len)
{
    const sqlite3_api_routines *api = routines;
    sqlite3 *db = handle;
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
    if (sw_catalog_register(conn) != SQLITE_OK) {
        /* SQLite holds conn through wasm_call: it is freed from the closed list. */
        sw_errbuf(errbuf, errbuf_len, "registering the catalog tables: %s", api->errmsg(db));
        return NULL;
    }
    return conn;
}

int sw_conn_add_instance(sw_conn *conn, const char *module_name, const char *module_version, void *store,
                         void *context, uint32_t max_result_bytes, uint64_t fuel_per_call, uint32_t timeout_ms,
                         int host_calls)
{
    sw_instance **grown = realloc(conn->instances, (size_t)(conn->n_instances + 1) * sizeof *grown);
    if (!grown)
        return -1;
    conn->instances = grown;
    sw_instance *inst = calloc(1, sizeof *inst);
    if (!inst || !(inst->name = sw_strdup(module_name)) || !(inst->version = sw_strdup(module_version))) {
        if (inst)
            free(inst->name);
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

int sw_conn_instance_used(sw_conn *conn, int instance)
{
    const sw_instance *inst = conn->instances[instance];
    return inst->used && !inst->depth; /* never report one that is running */
}

int64_t sw_conn_call_ms_left(sw_conn *conn, int instance)
{
    const sw_instance *inst = conn->instances[instance];
    if (!inst->depth || !inst->timeout_ticks)
        return -1;
    uint64_t elapsed = __atomic_load_n(&sw_ticks, __ATOMIC_RELAXED) - inst->call_started;
    return elapsed >= inst->timeout_ticks ? 0 : (int64_t)(inst->timeout_ticks - elapsed) * SW_TICK_MS;
}

uint64_t sw_conn_instance_calls(sw_conn *conn, int instance)
{
    return conn->instances[instance]->calls;
}

void sw_conn_host_error(sw_conn *conn, int instance, const char *message)
{
    sw_instance *inst = conn->instances[instance];
    snprintf(inst->host_error, sizeof inst->host_error, "%s", message);
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
    if (!f->label || !f->sql_name || !f->export_name) {
        free(f->label);
        free(f->sql_name);
        free(f->export_name);
        free(f);
        sw_errbuf(errbuf, errbuf_len, "out of memory");
        return -1;
    }
    snprintf(f->label, label_len, "%s.%s", inst->name, sql_name);
    if (kind == SW_KIND_TABLE) {
        f->column_types = malloc((size_t)desc->n_columns);
        f->table_schema = sw_strdup(desc->table_schema);
        if (!f->column_types || !f->table_schema) {
            free(f->column_types);
            free(f->table_schema);
            free(f->label);
            free(f->sql_name);
            free(f->export_name);
            free(f);
            sw_errbuf(errbuf, errbuf_len, "out of memory");
            return -1;
        }
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

int sw_conn_builtin_table(sw_conn *conn, const char *name)
{
    /* An empty private database has no tables: what a SELECT can read there
       is built in (json_each, pragma_* and other eponymous tables). */
    const sqlite3_api_routines *api = conn->api;
    sqlite3 *fresh = NULL;
    int found = -1;
    char *sql = api->mprintf("SELECT * FROM \"%w\"", name);
    if (sql && api->open_v2(":memory:", &fresh, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY,
                            NULL) == SQLITE_OK) {
        sqlite3_stmt *stmt = NULL;
        found = api->prepare_v2(fresh, sql, -1, &stmt, NULL) == SQLITE_OK;
        api->finalize(stmt);
    }
    api->free(sql);
    if (fresh)
        api->close(fresh);
    return found;
}

int sw_conn_module_exists(sw_conn *conn, const char *name)
{
    const sqlite3_api_routines *api = conn->api;
    sqlite3_stmt *stmt = NULL;
    if (api->prepare_v2(conn->db, "SELECT 1 FROM pragma_module_list WHERE name = ?1 COLLATE NOCASE", -1, &stmt,
                        NULL) != SQLITE_OK)
        return -1;
    api->bind_text(stmt, 1, name, -1, SQLITE_TRANSIENT);
    int rc = api->step(stmt);
    api->finalize(stmt);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

const void *sw_conn_library(sw_conn *conn) { return conn->api; }

int sw_conn_builtin_names(sw_conn *conn, char *out, size_t out_len)
{
    /* A private in-memory connection of the same SQLite library: the user's
       database, its VFS and the host's connection hooks are never involved. */
    const sqlite3_api_routines *api = conn->api;
    sqlite3 *fresh = NULL;
    int rc = api->open_v2(":memory:", &fresh, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY, NULL);
    sqlite3_stmt *stmt = NULL;
    size_t used = 0;
    int result = -1;
    if (rc == SQLITE_OK && api->prepare_v2(fresh, "SELECT name FROM pragma_function_list UNION SELECT name FROM pragma_module_list", -1, &stmt, NULL) == SQLITE_OK) {
        result = 0;
        while (result == 0 && api->step(stmt) == SQLITE_ROW) {
            const char *name = (const char *)api->column_text(stmt, 0);
            size_t n = (size_t)api->column_bytes(stmt, 0);
            if (!name)
                continue;
            if (used + n + 2 > out_len) {
                result = -2;
                break;
            }
            memcpy(out + used, name, n);
            used += n;
            out[used++] = '\n';
        }
        api->finalize(stmt);
    }
    if (fresh)
        api->close(fresh);
    if (result != 0)
        return result;
    out[used] = '\0';
    return (int)used;
}
