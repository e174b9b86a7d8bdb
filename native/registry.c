/* registry.c: connection lifetime (including the closed list) and module
   instances. */

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

/* Frees a function and what it owns (any part may still be NULL). */
static void sw_function_free(sw_function *f)
{
    free(f->sql_name);
    free(f->export_name);
    free(f->label);
    free(f->column_types);
    free(f->table_schema);
    free(f);
}

void sw_conn_free(sw_conn *conn)
{
    if (!conn)
        return;
    for (int i = 0; i < conn->n_functions; i++)
        sw_function_free(conn->functions[i]);
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
    sw_conn_bind_instance(conn, conn->n_instances, store, context, NULL, NULL, NULL);
    return conn->n_instances++;
}

void sw_conn_bind_instance(sw_conn *conn, int instance, void *store, void *context, const void *memory,
                           const void *alloc_func, const void *stack_pointer)
{
    sw_instance *inst = conn->instances[instance];
    if (inst->store != store) {
        inst->store = store;
        wt.store_epoch_deadline_callback(store, sw_epoch_tick, inst, NULL);
        wt.context_set_epoch_deadline(context, 1);
        sw_guest_output_bind(context, inst);
    }
    inst->context = context;
    /* Without a memory the instance is starting: refuse calls until bound. */
    inst->depth = memory == NULL;
    if (memory)
        memcpy(&inst->memory, memory, sizeof inst->memory);
    inst->has_alloc = alloc_func != NULL;
    if (alloc_func)
        memcpy(&inst->alloc, alloc_func, sizeof inst->alloc);
    /* Read once the instance has started: where every call finds it. */
    inst->has_stack_pointer = memory && stack_pointer;
    if (inst->has_stack_pointer) {
        memcpy(&inst->stack_pointer, stack_pointer, sizeof inst->stack_pointer);
        sw_wasmtime_val val;
        wt.global_get(context, &inst->stack_pointer, &val);
        inst->stack_pointer_at_rest = val.of.i32;
    }
    inst->arg_ptr = inst->arg_cap = 0;
    inst->mem_base = memory ? wt.memory_data(context, &inst->memory) : NULL;
    inst->mem_size_seen = memory ? wt.memory_data_size(context, &inst->memory) : 0;
    inst->used = 0;
    inst->call_started = __atomic_load_n(&sw_ticks, __ATOMIC_RELAXED);
    inst->stop_reason = SW_STOP_NONE;
    inst->host_error[0] = '\0';
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

void sw_conn_remove_instance(sw_conn *conn, int instance)
{
    sw_instance *inst = conn->instances[instance];
    inst->removed = 1;
    inst->depth = 1; /* refuses calls, like an instance that is starting */
}
