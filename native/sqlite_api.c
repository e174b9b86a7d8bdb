/* sqlite_api.c: the loadable-extension entry point, the routines table
   built by name for a SQLite that cannot load extensions, and the
   per-library API slots with their SQL callbacks. */

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
    sqlite3_api_routines *api = calloc(1, sizeof *api);
    if (!api) {
        *missing = "memory";
        return NULL;
    }
    void *found;
    /* Every routine native/ calls (sqlite_routines.h). */
#define SW_LINK_REQUIRED(slot, name, ret, params)     \
    found = dlsym(handle, "sqlite3_" #name);          \
    if (!found) {                                     \
        *missing = "sqlite3_" #name;                  \
        free(api);                                    \
        return NULL;                                  \
    }                                                 \
    memcpy(&api->name, &found, sizeof found);
    SW_SQLITE_ROUTINES(SW_LINK_REQUIRED)
#undef SW_LINK_REQUIRED
    /* Newer routines stay NULL in an older SQLite; callers check its version. */
#define SW_LINK_NEWER(slot, name, ret, params)        \
    found = dlsym(handle, "sqlite3_" #name);          \
    memcpy(&api->name, &found, sizeof found);
    SW_SQLITE_ROUTINES_3_41(SW_LINK_NEWER)
#undef SW_LINK_NEWER
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
