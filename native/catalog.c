/* catalog.c: what is loaded, visible in SQL. Every connection with sqlwasm
   has the eponymous tables sqlwasm_modules and sqlwasm_functions; their rows
   are a msgpack array of rows that Python sets after each install
   (sw_conn_set_catalog), read here like a table function's batch. */

_Static_assert(SW_CATALOG_MODULES == 0 && SW_CATALOG_FUNCTIONS == 1, "the catalogs' order below");
static const char *const sw_catalog_names[SW_CATALOGS] = {"sqlwasm_modules", "sqlwasm_functions"};
static const char *const sw_catalog_schemas[SW_CATALOGS] = {
    "CREATE TABLE x(name TEXT, version TEXT, sha256 TEXT, signer TEXT, capabilities TEXT, instance TEXT)",
    "CREATE TABLE x(module TEXT, name TEXT, kind TEXT, abi TEXT, args TEXT, returns TEXT, deterministic INTEGER, "
    "flags TEXT)",
};
static const int sw_catalog_columns[SW_CATALOGS] = {6, 8};

typedef struct {
    sqlite3_vtab base;
    sw_conn *conn;
    int which;
} sw_catalog;

typedef struct {
    sqlite3_vtab_cursor base;
    uint8_t *rows; /* a copy of the catalog when the scan began */
    sw_reader left;
    uint32_t rows_left;
    sqlite3_int64 rowid;
    int eof;
    sw_cell cells[8];
} sw_catalog_cursor;

int sw_conn_set_catalog(sw_conn *conn, int which, const uint8_t *rows, size_t len)
{
    if (which < 0 || which >= SW_CATALOGS)
        return -1;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, rows, len);
    free(conn->catalog[which]);
    conn->catalog[which] = copy;
    conn->catalog_len[which] = len;
    return 0;
}

static int sw_catalog_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                              char **errmsg)
{
    (void)argc;
    (void)argv;
    (void)errmsg;
    sw_conn *conn = *(sw_conn **)aux;
    int which = (int)((sw_conn **)aux - conn->catalog_aux);
    int rc = conn->api->declare_vtab(db, sw_catalog_schemas[which]);
    if (rc != SQLITE_OK)
        return rc;
    conn->api->vtab_config(db, SQLITE_VTAB_INNOCUOUS);
    sw_catalog *table = calloc(1, sizeof *table);
    if (!table)
        return SQLITE_NOMEM;
    table->conn = conn;
    table->which = which;
    *out = &table->base;
    return SQLITE_OK;
}

static int sw_catalog_disconnect(sqlite3_vtab *vtab)
{
    free(vtab);
    return SQLITE_OK;
}

static int sw_catalog_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
    (void)vtab;
    info->estimatedCost = 100;
    info->estimatedRows = 100;
    return SQLITE_OK;
}

static int sw_catalog_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
    (void)vtab;
    sw_catalog_cursor *cur = calloc(1, sizeof *cur);
    if (!cur)
        return SQLITE_NOMEM;
    cur->eof = 1;
    *out = &cur->base;
    return SQLITE_OK;
}

static int sw_catalog_close(sqlite3_vtab_cursor *cursor)
{
    free(((sw_catalog_cursor *)cursor)->rows);
    free(cursor);
    return SQLITE_OK;
}

/* The next row's cells (Python wrote the rows: a malformed one ends the scan). */
static int sw_catalog_next(sqlite3_vtab_cursor *cursor)
{
    sw_catalog_cursor *cur = (sw_catalog_cursor *)cursor;
    const sw_catalog *table = (const sw_catalog *)cursor->pVtab;
    uint32_t n;
    cur->eof = 1;
    if (cur->rows_left == 0 || !sw_msgpack_array(&cur->left, &n) || n != (uint32_t)sw_catalog_columns[table->which])
        return SQLITE_OK;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t detail;
        if (sw_msgpack_value(&cur->left, 0, &cur->cells[i], &detail) != SW_DECODE_OK)
            return SQLITE_OK;
    }
    cur->rows_left--;
    cur->rowid++;
    cur->eof = 0;
    return SQLITE_OK;
}

static int sw_catalog_filter(sqlite3_vtab_cursor *cursor, int idx_num, const char *idx_str, int argc,
                             sqlite3_value **argv)
{
    (void)idx_num;
    (void)idx_str;
    (void)argc;
    (void)argv;
    sw_catalog_cursor *cur = (sw_catalog_cursor *)cursor;
    const sw_catalog *table = (const sw_catalog *)cursor->pVtab;
    const sw_conn *conn = table->conn;
    free(cur->rows);
    size_t len = conn->catalog_len[table->which];
    cur->rows = malloc(len ? len : 1);
    if (!cur->rows)
        return SQLITE_NOMEM;
    if (len)
        memcpy(cur->rows, conn->catalog[table->which], len);
    cur->left.p = cur->rows;
    cur->left.end = cur->rows + len;
    cur->rows_left = 0;
    cur->rowid = 0;
    if (!sw_msgpack_array(&cur->left, &cur->rows_left))
        cur->rows_left = 0;
    return sw_catalog_next(cursor);
}

static int sw_catalog_eof(sqlite3_vtab_cursor *cursor) { return ((sw_catalog_cursor *)cursor)->eof; }

static int sw_catalog_column(sqlite3_vtab_cursor *cursor, sqlite3_context *ctx, int column)
{
    const sw_catalog_cursor *cur = (const sw_catalog_cursor *)cursor;
    const sqlite3_api_routines *api = ((const sw_catalog *)cursor->pVtab)->conn->api;
    const sw_cell *c = &cur->cells[column];
    switch (c->kind) {
    case SQLITE_INTEGER: api->result_int64(ctx, c->i); break;
    case SQLITE_FLOAT: api->result_double(ctx, c->d); break;
    case SQLITE_TEXT: api->result_text(ctx, (const char *)c->p, (int)c->n, SQLITE_TRANSIENT); break;
    default: api->result_null(ctx); break;
    }
    return SQLITE_OK;
}

static int sw_catalog_rowid(sqlite3_vtab_cursor *cursor, sqlite3_int64 *rowid)
{
    *rowid = ((const sw_catalog_cursor *)cursor)->rowid;
    return SQLITE_OK;
}

static const sqlite3_module sw_catalog_module = {
    .iVersion = 0,
    .xConnect = sw_catalog_connect,
    .xBestIndex = sw_catalog_best_index,
    .xDisconnect = sw_catalog_disconnect,
    .xOpen = sw_catalog_open,
    .xClose = sw_catalog_close,
    .xFilter = sw_catalog_filter,
    .xNext = sw_catalog_next,
    .xEof = sw_catalog_eof,
    .xColumn = sw_catalog_column,
    .xRowid = sw_catalog_rowid,
};

/* Registers both catalog tables (each registration holds the connection). */
static int sw_catalog_register(sw_conn *conn)
{
    for (int k = 0; k < SW_CATALOGS; k++) {
        conn->catalog_aux[k] = conn;
        sw_conn_registered(conn);
        int rc = conn->api->create_module_v2(conn->db, sw_catalog_names[k], &sw_catalog_module, &conn->catalog_aux[k],
                                             sw_catalog_destroy);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}
