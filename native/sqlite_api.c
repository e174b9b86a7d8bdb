/* sqlite_api.c: the loadable-extension entry point, where
   sqlite3_is_interrupted sits in the routines table, and the per-library
   API slots with their SQL callbacks. */

/* sqlite3_is_interrupted (SQLite 3.41+) is routine number SW_ROUTINE_IS_INTERRUPTED
   of the routines table, which only ever grows at its end: it follows
   value_encoding, the last routine of 3.40. The table is read by index, so
   the header this builds with may be older or newer; the asserts check the
   index against whichever header it is. */
#define SW_ROUTINE_IS_INTERRUPTED 266
typedef void (*sw_routine)(void);
#if SQLITE_VERSION_NUMBER >= 3041000
_Static_assert(offsetof(sqlite3_api_routines, is_interrupted) == SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "sqlite3_is_interrupted moved in the routines table");
#elif SQLITE_VERSION_NUMBER >= 3040000
_Static_assert(sizeof(sqlite3_api_routines) == SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "the 3.40 routines table should end where is_interrupted begins");
#else
_Static_assert(sizeof(sqlite3_api_routines) < SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "an older routines table ends before is_interrupted");
#endif

/* What the last load of the extension on this thread handed over. */
static _Thread_local const sqlite3_api_routines *tls_loaded_api;
static _Thread_local sqlite3 *tls_loaded_db;

/* The loadable-extension entry point. Registration happens afterwards, from
   Python (sw_conn_open_loaded), with both pointers kept per connection. */
SW_PUBLIC int sqlite3_sqlwasm_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api)
{
    (void)errmsg;
    tls_loaded_api = api;
    tls_loaded_db = db;
    return SQLITE_OK;
}

static int sw_take_loaded(const sqlite3_api_routines **api, sqlite3 **db)
{
    *api = tls_loaded_api;
    *db = tls_loaded_db;
    tls_loaded_api = NULL;
    tls_loaded_db = NULL;
    return *api && *db;
}

/*
 * A callback needs the routines pointer before it can even ask SQLite for its
 * user data, and one process may hold several SQLite libraries (APSW's, the
 * stdlib's). So each distinct routines table gets a slot, and each slot its
 * own set of callbacks that know their table.
 */
#define SW_API_SLOTS 4
static const sqlite3_api_routines *sw_api_slots[SW_API_SLOTS];

#define SW_SLOT_CALLBACKS(k)                                                             \
    static void sw_scalar_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv)  \
    {                                                                                    \
        sw_invoke(ctx, sw_api_slots[k]->user_data(ctx), argc, argv);                     \
    }                                                                                    \
    static void sw_wasm_call_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv) \
    {                                                                                    \
        sw_wasm_call(ctx, sw_api_slots[k]->user_data(ctx), argc, argv);                  \
    }                                                                                    \
    static void sw_step_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv)    \
    {                                                                                    \
        sw_agg_row(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_MAIN, argc, argv);        \
    }                                                                                    \
    static void sw_inverse_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv) \
    {                                                                                    \
        sw_agg_row(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_INVERSE, argc, argv);     \
    }                                                                                    \
    static void sw_final_cb_##k(sqlite3_context *ctx)                                    \
    {                                                                                    \
        sw_agg_result(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_FINAL);                \
    }                                                                                    \
    static void sw_value_cb_##k(sqlite3_context *ctx)                                    \
    {                                                                                    \
        sw_agg_result(ctx, sw_api_slots[k]->user_data(ctx), SW_FN_VALUE);                \
    }                                                                                    \
    static void sw_partial_cb_##k(sqlite3_context *ctx)                                  \
    {                                                                                    \
        sw_agg_partial(ctx, sw_api_slots[k]->user_data(ctx));                            \
    }                                                                                    \
    static void sw_merge_cb_##k(sqlite3_context *ctx, int argc, sqlite3_value **argv)   \
    {                                                                                    \
        (void)argc;                                                                      \
        sw_agg_merge(ctx, sw_api_slots[k]->user_data(ctx), argv[0]);                     \
    }

SW_SLOT_CALLBACKS(0)
SW_SLOT_CALLBACKS(1)
SW_SLOT_CALLBACKS(2)
SW_SLOT_CALLBACKS(3)

typedef void (*sw_sql_cb)(sqlite3_context *, int, sqlite3_value **);
static const sw_sql_cb sw_scalar_cbs[SW_API_SLOTS] = {sw_scalar_cb_0, sw_scalar_cb_1, sw_scalar_cb_2, sw_scalar_cb_3};
static const sw_sql_cb sw_wasm_call_cbs[SW_API_SLOTS] = {sw_wasm_call_cb_0, sw_wasm_call_cb_1, sw_wasm_call_cb_2,
                                                         sw_wasm_call_cb_3};
static const sw_sql_cb sw_step_cbs[SW_API_SLOTS] = {sw_step_cb_0, sw_step_cb_1, sw_step_cb_2, sw_step_cb_3};
static const sw_sql_cb sw_inverse_cbs[SW_API_SLOTS] = {sw_inverse_cb_0, sw_inverse_cb_1, sw_inverse_cb_2,
                                                       sw_inverse_cb_3};
typedef void (*sw_final_cb)(sqlite3_context *);
static const sw_final_cb sw_final_cbs[SW_API_SLOTS] = {sw_final_cb_0, sw_final_cb_1, sw_final_cb_2, sw_final_cb_3};
static const sw_final_cb sw_value_cbs[SW_API_SLOTS] = {sw_value_cb_0, sw_value_cb_1, sw_value_cb_2, sw_value_cb_3};
static const sw_final_cb sw_partial_cbs[SW_API_SLOTS] = {sw_partial_cb_0, sw_partial_cb_1, sw_partial_cb_2,
                                                         sw_partial_cb_3};
static const sw_sql_cb sw_merge_cbs[SW_API_SLOTS] = {sw_merge_cb_0, sw_merge_cb_1, sw_merge_cb_2, sw_merge_cb_3};

/*
 * A host whose SQLite cannot load extensions (Python's sqlite3 is often built
 * without it) hands over its sqlite3* directly; the routines table is then
 * built here, each routine looked up by name from the host module's own
 * handle (dlsym searches the libraries it links, where its SQLite is).
 */
static struct {
    void *handle;
    sqlite3_api_routines *api;
} sw_linked[SW_API_SLOTS];
static pthread_mutex_t sw_linked_lock = PTHREAD_MUTEX_INITIALIZER;

static const sqlite3_api_routines *sw_link_routines(void *handle, const char **missing)
{
    /* Big enough for sqlite3_is_interrupted's slot whatever header this builds with. */
    size_t size = sizeof(sqlite3_api_routines) > (SW_ROUTINE_IS_INTERRUPTED + 1) * sizeof(sw_routine)
                      ? sizeof(sqlite3_api_routines)
                      : (SW_ROUTINE_IS_INTERRUPTED + 1) * sizeof(sw_routine);
    sqlite3_api_routines *api = calloc(1, size);
    if (!api) {
        *missing = "memory";
        return NULL;
    }
#define SW_LINK(field)                                                   \
    do {                                                                 \
        *(void **)(&api->field) = dlsym(handle, "sqlite3_" #field);      \
        if (!api->field) {                                               \
            *missing = "sqlite3_" #field;                                \
            free(api);                                                   \
            return NULL;                                                 \
        }                                                                \
    } while (0)
    /* Every routine native/ calls (tests/test_native_build.py checks the list). */
    SW_LINK(aggregate_context); SW_LINK(bind_text); SW_LINK(close); SW_LINK(column_bytes);
    SW_LINK(column_text); SW_LINK(create_function_v2); SW_LINK(create_module_v2);
    SW_LINK(create_window_function); SW_LINK(declare_vtab); SW_LINK(errmsg); SW_LINK(finalize); SW_LINK(free);
    SW_LINK(libversion_number); SW_LINK(limit); SW_LINK(malloc64); SW_LINK(mprintf); SW_LINK(next_stmt);
    SW_LINK(open_v2); SW_LINK(prepare_v2); SW_LINK(result_blob); SW_LINK(result_blob64); SW_LINK(result_double);
    SW_LINK(result_error); SW_LINK(result_error_nomem); SW_LINK(result_int64); SW_LINK(result_null);
    SW_LINK(result_text); SW_LINK(result_value); SW_LINK(step); SW_LINK(stmt_busy); SW_LINK(stricmp);
    SW_LINK(user_data); SW_LINK(value_blob); SW_LINK(value_bytes); SW_LINK(value_double); SW_LINK(value_dup);
    SW_LINK(value_free); SW_LINK(value_int64); SW_LINK(value_text); SW_LINK(value_type); SW_LINK(vtab_config);
#undef SW_LINK
    void *is_interrupted = dlsym(handle, "sqlite3_is_interrupted"); /* 3.41+ */
    if (is_interrupted)
        memcpy((char *)api + SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine), &is_interrupted, sizeof is_interrupted);
    return api;
}

const void *sw_api_of_library(const char *module_path, char *errbuf, size_t errbuf_len)
{
    void *handle = dlopen(module_path, RTLD_NOW | RTLD_NOLOAD);
    if (!handle) {
        snprintf(errbuf, errbuf_len, "%s is not loaded in this process", module_path);
        return NULL;
    }
    const sqlite3_api_routines *api = NULL;
    pthread_mutex_lock(&sw_linked_lock);
    int k = 0;
    while (k < SW_API_SLOTS && sw_linked[k].handle && sw_linked[k].handle != handle)
        k++;
    if (k == SW_API_SLOTS) {
        snprintf(errbuf, errbuf_len, "more than %d SQLite libraries in one process", SW_API_SLOTS);
    } else if (sw_linked[k].handle) {
        api = sw_linked[k].api;
        dlclose(handle); /* the first lookup keeps its reference */
    } else {
        const char *missing = NULL;
        api = sw_link_routines(handle, &missing);
        if (api) {
            sw_linked[k].handle = handle;
            sw_linked[k].api = (sqlite3_api_routines *)api;
        } else {
            snprintf(errbuf, errbuf_len, "%s's SQLite lacks %s", module_path, missing);
            dlclose(handle);
        }
    }
    pthread_mutex_unlock(&sw_linked_lock);
    return api;
}

int sw_api_limit(const void *api, void *db, int id, int value)
{
    return ((const sqlite3_api_routines *)api)->limit(db, id, value);
}

/* The slot of a routines table, claiming a free one the first time. */
static int sw_api_slot(const sqlite3_api_routines *api)
{
    for (int k = 0; k < SW_API_SLOTS; k++) {
        const sqlite3_api_routines *seen = __atomic_load_n(&sw_api_slots[k], __ATOMIC_ACQUIRE);
        if (seen == api)
            return k;
        if (seen == NULL) {
            const sqlite3_api_routines *expected = NULL;
            if (__atomic_compare_exchange_n(&sw_api_slots[k], &expected, api, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) ||
                expected == api)
                return k;
        }
    }
    return -1;
}
