/* lookup.c: what a connection already has, asked before an install so that
   it never replaces or shadows anything silently: running statements,
   functions, virtual table modules, built-ins. */

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
