/*
 * The benchmarks' baseline: a plain native SQLite UDF in its own loadable
 * extension, what a C programmer would write without sqlwasm. Not part of
 * the package; benchmarks/_common.py compiles it with the system C compiler.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

static void baseline_add(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL)
        return;
    sqlite3_int64 a = sqlite3_value_int64(argv[0]), b = sqlite3_value_int64(argv[1]);
    sqlite3_result_int64(ctx, (sqlite3_int64)((sqlite3_uint64)a + (sqlite3_uint64)b));
}

/* c_sum(x): the native aggregate baseline (integer sum, wrapping). */
static void baseline_sum_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_int64 *total = sqlite3_aggregate_context(ctx, sizeof *total);
    if (total && sqlite3_value_type(argv[0]) != SQLITE_NULL)
        *total = (sqlite3_int64)((sqlite3_uint64)*total + (sqlite3_uint64)sqlite3_value_int64(argv[0]));
}

static void baseline_sum_final(sqlite3_context *ctx)
{
    sqlite3_int64 *total = sqlite3_aggregate_context(ctx, 0);
    sqlite3_result_int64(ctx, total ? *total : 0);
}

__attribute__((visibility("default"))) int sqlite3_baseline_init(sqlite3 *db, char **errmsg,
                                                                 const sqlite3_api_routines *api)
{
    (void)errmsg;
    SQLITE_EXTENSION_INIT2(api);
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
    int rc = sqlite3_create_function(db, "c_add", 2, flags, 0, baseline_add, 0, 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "c_sum", 1, flags, 0, 0, baseline_sum_step, baseline_sum_final);
    return rc;
}
