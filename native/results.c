/* results.c: a guest's result as the SQL result: bounds checks on the
   guest's memory, the declared return type, and sqlite3_result_*. Also the
   error reporting every part uses. */

/* Without a SQL function context (a table function's calls), the message
   waits here for the virtual table to report it. */
static _Thread_local char sw_pending_error[SW_FAILURE_MAX];

static void sw_errorf(sqlite3_context *ctx, const sqlite3_api_routines *api, const char *fmt, ...)
{
    char msg[SW_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx ? msg : sw_pending_error, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx)
        api->result_error(ctx, msg, -1);
}

static void sw_error_text(sqlite3_context *ctx, const sqlite3_api_routines *api, const char *text)
{
    if (ctx) {
        api->result_error(ctx, text, -1);
        return;
    }
    size_t n = strlen(text);
    if (n >= sizeof sw_pending_error) { /* cut on a character boundary */
        n = sizeof sw_pending_error - 1;
        while (n > 0 && (text[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(sw_pending_error, text, n);
    sw_pending_error[n] = '\0';
}

static void sw_nomem(sqlite3_context *ctx, const sqlite3_api_routines *api)
{
    if (ctx)
        api->result_error_nomem(ctx);
    else
        sw_errorf(NULL, api, "out of memory");
}

/* A guest's {"error": text} as the SQL error, cut to 500 bytes, then the
   call's debug output. */
static void sw_report_guest_error(sqlite3_context *ctx, const sw_function *f, const uint8_t *msg, uint32_t msg_len)
{
    uint32_t shown = msg_len;
    if (shown > 500) { /* cut on a character boundary */
        shown = 500;
        while (shown > 0 && (msg[shown] & 0xc0) == 0x80)
            shown--;
    }
    char text[501];
    for (uint32_t k = 0; k < shown; k++) /* a NUL would end the message early */
        text[k] = msg[k] ? (char)msg[k] : '?';
    char buf[SW_FAILURE_MAX];
    int n = snprintf(buf, sizeof buf, "%s: %.*s", f->label, (int)shown, text);
    sw_text t = {buf, n < 0 ? 0 : (size_t)n, sizeof buf};
    sw_add_guest_output(&t, f->inst);
    sw_error_text(ctx, f->inst->conn->api, buf);
}

static __attribute__((noinline, cold)) void sw_report_decode(sqlite3_context *ctx, const sw_function *f,
                                                              sw_decode_status status, uint64_t detail)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    switch (status) {
    case SW_DECODE_TRUNCATED:
        sw_errorf(ctx, api, "%s: result msgpack is truncated", f->label);
        break;
    case SW_DECODE_TRAILING:
        sw_errorf(ctx, api, "%s: result has %ld trailing bytes after the msgpack value", f->label, (long)detail);
        break;
    case SW_DECODE_NOT_STATUS:
        sw_errorf(ctx, api, "%s: step and inverse must return 0 or {\"error\": text}", f->label);
        break;
    case SW_DECODE_INT_RANGE:
        sw_errorf(ctx, api, "%s: result integer %llu is out of the int64 range", f->label,
                  (unsigned long long)detail);
        break;
    case SW_DECODE_TEXT_UTF8:
        sw_errorf(ctx, api, "%s: result text is not valid UTF-8", f->label);
        break;
    case SW_DECODE_BAD_MAP:
        sw_errorf(ctx, api, "%s: result map must be {\"error\": text}", f->label);
        break;
    case SW_DECODE_ERROR_UTF8:
        sw_errorf(ctx, api, "%s: guest error (message is not valid UTF-8)", f->label);
        break;
    case SW_DECODE_UNSUPPORTED:
        sw_errorf(ctx, api, "%s: result has unsupported msgpack type 0x%02x", f->label, (unsigned)detail);
        break;
    case SW_DECODE_OK:
        break;
    }
}

/* Sets the SQL result from the guest's msgpack result p[0..n). With
   error_only (a step's status), only {"error": text} is acceptable. */
static void sw_set_result(sqlite3_context *ctx, const sw_function *f, const uint8_t *p, uint32_t n, int error_only)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_cell v;
    uint64_t detail = 0;
    sw_decode_status status = sw_msgpack_decode(p, n, error_only, &v, &detail);
    if (status != SW_DECODE_OK) {
        sw_report_decode(ctx, f, status, detail);
        return;
    }
    if (v.kind == SW_VALUE_GUEST_ERROR) {
        sw_report_guest_error(ctx, f, v.p, v.n);
        return;
    }
    /* The declared return type decides what the guest may hand back. */
    switch (f->returns) {
    case SW_TYPE_INTEGER:
        if (v.kind != SQLITE_INTEGER && v.kind != SQLITE_NULL)
            goto wrong_type;
        break;
    case SW_TYPE_REAL:
        if (v.kind == SQLITE_INTEGER) {
            v.kind = SQLITE_FLOAT;
            v.d = (double)v.i;
        } else if (v.kind != SQLITE_FLOAT && v.kind != SQLITE_NULL)
            goto wrong_type;
        break;
    case SW_TYPE_TEXT:
        if (v.kind != SQLITE_TEXT && v.kind != SQLITE_NULL)
            goto wrong_type;
        break;
    case SW_TYPE_BLOB:
        if (v.kind != SQLITE_BLOB && v.kind != SQLITE_NULL)
            goto wrong_type;
        break;
    default:
        break;
    }
    switch (v.kind) {
    case SQLITE_INTEGER: api->result_int64(ctx, v.i); break;
    case SQLITE_FLOAT: api->result_double(ctx, v.d); break;
    case SQLITE_TEXT: api->result_text(ctx, (const char *)v.p, (int)v.n, SQLITE_TRANSIENT); break;
    case SQLITE_BLOB: api->result_blob(ctx, v.p, (int)v.n, SQLITE_TRANSIENT); break;
    default: api->result_null(ctx); break;
    }
    return;
wrong_type:
    sw_errorf(ctx, api, "%s: result is %s, declared %s", f->label, sw_sql_type_name(v.kind),
              sw_type_name(f->returns));
}

/* msgpack ABI: bounds-checks a packed (ptr << 32 | len) result and makes it
   the SQL result (or, with error_only, reports the error it must be). */
static int sw_packed_result(sqlite3_context *ctx, const sw_function *f, uint64_t packed, int error_only)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_instance *inst = f->inst;
    uint32_t rptr = (uint32_t)(packed >> 32);
    uint32_t rlen = (uint32_t)packed;
    if (rlen > inst->max_result_bytes) {
        sw_errorf(ctx, api, "%s: result is %u bytes, over the %u-byte result limit", f->label, rlen,
                  inst->max_result_bytes);
        return 0;
    }
    uint8_t *mem = inst->mem_base;
    if ((uint64_t)rptr + rlen > inst->mem_size_seen) {
        inst->mem_size_seen = wt.memory_data_size(inst->context, &inst->memory);
        if ((uint64_t)rptr + rlen > inst->mem_size_seen) {
            sw_errorf(ctx, api, "%s: result (ptr %u, len %u) lies outside the %zu-byte memory", f->label, rptr,
                      rlen, inst->mem_size_seen);
            return 0;
        }
    }
    sw_set_result(ctx, f, mem + rptr, rlen, error_only);
    return !error_only;
}

/* A raw export's i64 or f64 result as the SQL result (a NaN real becomes
   NULL: SQLite's rule, and how a raw function returns NULL). */
static inline void sw_raw_result(sqlite3_context *ctx, const sw_function *f, sw_val_raw result)
{
    if (f->returns == SW_TYPE_INTEGER)
        f->inst->conn->api->result_int64(ctx, result.i64);
    else
        f->inst->conn->api->result_double(ctx, result.f64);
}

