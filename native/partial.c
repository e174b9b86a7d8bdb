/* partial.c: partial aggregates. For an aggregate with serialize and merge
   exports, NAME_partial(args) returns its state as a BLOB in an envelope,
   and NAME_merge(blob) folds such BLOBs into a fresh state and finishes as
   NAME would. The envelope (docs/abi.md) names the module, its version and
   the function, and ends with a CRC-32C of all of it; the host checks it
   before the guest sees a byte. */

static const uint8_t sw_partial_magic[8] = {'S', 'W', 'P', 'A', 'R', 'T', 0, 1};

static uint32_t sw_crc32c_table[256];
static pthread_once_t sw_crc32c_once = PTHREAD_ONCE_INIT;

static void sw_crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        sw_crc32c_table[i] = c;
    }
}

static uint32_t sw_crc32c(const uint8_t *p, size_t n)
{
    pthread_once(&sw_crc32c_once, sw_crc32c_init);
    uint32_t c = 0xffffffffu;
    while (n--)
        c = sw_crc32c_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static uint8_t *sw_put_le(uint8_t *out, uint32_t v, int bytes)
{
    for (int k = 0; k < bytes; k++)
        *out++ = (uint8_t)(v >> (8 * k));
    return out;
}

static uint32_t sw_get_le(const uint8_t *p, int bytes)
{
    uint32_t v = 0;
    for (int k = bytes - 1; k >= 0; k--)
        v = (v << 8) | p[k];
    return v;
}

static uint8_t *sw_put_field(uint8_t *out, const char *s)
{
    size_t n = strlen(s);
    out = sw_put_le(out, (uint32_t)n, 2);
    memcpy(out, s, n);
    return out + n;
}

/* NAME_partial's final: the state's bytes from serialize, in the envelope;
   then the state is released (drop, or final with its result ignored). */
static void sw_agg_partial(sqlite3_context *ctx, const sw_function *f)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_instance *inst = f->inst;
    sw_agg empty = {0, 0, 0, 0};
    sw_agg *agg = api->aggregate_context(ctx, 0);
    if (!agg)
        agg = &empty; /* no rows: the partial of an empty state */
    if (agg->broken) {
        sw_agg_result(ctx, f, SW_FN_FINAL); /* lets the guest drop it */
        return;
    }
    if (!agg->live && !sw_agg_init(ctx, f, agg))
        return;
    sw_val_raw vals[1];
    int ok = sw_agg_flush(ctx, f, agg);
    if (ok) {
        vals[0].i32 = agg->handle;
        ok = sw_guest_call(ctx, f, &f->funcs[SW_FN_SERIALIZE], sw_trap_in[SW_FN_SERIALIZE], vals, 1);
    }
    uint8_t *envelope = NULL;
    size_t total = 0;
    if (ok) {
        uint32_t ptr = (uint32_t)((uint64_t)vals[0].i64 >> 32), len = (uint32_t)vals[0].i64;
        if (ptr == 0) {
            sw_errorf(ctx, api, "%s_partial: serialize failed (it returned a null pointer)", f->label);
            ok = 0;
        } else if (len > inst->max_result_bytes) {
            sw_errorf(ctx, api, "%s_partial: serialize returned %u bytes, over the %u-byte result limit", f->label,
                      len, inst->max_result_bytes);
            ok = 0;
        } else if ((uint64_t)ptr + len > (inst->mem_size_seen = wt.memory_data_size(inst->context, &inst->memory))) {
            sw_errorf(ctx, api, "%s_partial: serialize's result (ptr %u, len %u) lies outside the %zu-byte memory",
                      f->label, ptr, len, inst->mem_size_seen);
            ok = 0;
        } else {
            total = sizeof sw_partial_magic + 6 + strlen(inst->name) + strlen(inst->version) + strlen(f->sql_name) +
                    4 + len + 4;
            envelope = api->malloc64(total);
            if (!envelope) {
                sw_nomem(ctx, api);
                ok = 0;
            } else {
                uint8_t *out = envelope;
                memcpy(out, sw_partial_magic, sizeof sw_partial_magic);
                out += sizeof sw_partial_magic;
                out = sw_put_field(out, inst->name);
                out = sw_put_field(out, inst->version);
                out = sw_put_field(out, f->sql_name);
                out = sw_put_le(out, len, 4);
                memcpy(out, inst->mem_base + ptr, len);
                out += len;
                sw_put_le(out, sw_crc32c(envelope, (size_t)(out - envelope)), 4);
            }
        }
    }
    /* The state is done with either way: drop it, or finish it unseen. */
    agg->live = 0;
    vals[0].i32 = agg->handle;
    int fn = (f->present & (1u << SW_FN_DROP)) ? SW_FN_DROP : SW_FN_FINAL;
    if (!sw_guest_cleanup_call(ok ? ctx : NULL, f, &f->funcs[fn], sw_trap_in[fn], vals, 1))
        ok = 0;
    if (ok)
        api->result_blob64(ctx, envelope, total, api->free);
    else
        api->free(envelope);
}

/* Checks an envelope; on success points payload at the state's bytes. */
static int sw_partial_open(sqlite3_context *ctx, const sw_function *f, const uint8_t *p, size_t n,
                           const uint8_t **payload, uint32_t *payload_len)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    const sw_instance *inst = f->inst;
    if (n < sizeof sw_partial_magic || memcmp(p, sw_partial_magic, sizeof sw_partial_magic) != 0) {
        sw_errorf(ctx, api, "%s_merge: the argument is not a partial (make it with %s_partial)", f->label,
                  f->sql_name);
        return 0;
    }
    if (n < sizeof sw_partial_magic + 4 || sw_crc32c(p, n - 4) != sw_get_le(p + n - 4, 4)) {
        sw_errorf(ctx, api, "%s_merge: the partial is corrupted or truncated (checksum mismatch)", f->label);
        return 0;
    }
    size_t at = sizeof sw_partial_magic, end = n - 4;
    const char *fields[3];
    uint32_t lengths[3];
    for (int k = 0; k < 3; k++) {
        if (end - at < 2 || end - at - 2 < sw_get_le(p + at, 2))
            goto malformed;
        lengths[k] = sw_get_le(p + at, 2);
        fields[k] = (const char *)p + at + 2;
        at += 2 + lengths[k];
    }
    if (end - at < 4 || end - at - 4 != sw_get_le(p + at, 4))
        goto malformed;
    const char *mine[3] = {inst->name, inst->version, f->sql_name};
    for (int k = 0; k < 3; k++) {
        if (strlen(mine[k]) != lengths[k] || memcmp(mine[k], fields[k], lengths[k]) != 0) {
            sw_errorf(ctx, api,
                      "%s_merge: the partial is of module '%.*s' %.*s, function %.*s; this is module '%s' %s, "
                      "function %s",
                      f->label, (int)(lengths[0] > 64 ? 64 : lengths[0]), fields[0],
                      (int)(lengths[1] > 64 ? 64 : lengths[1]), fields[1], (int)(lengths[2] > 64 ? 64 : lengths[2]),
                      fields[2], inst->name, inst->version, f->sql_name);
            return 0;
        }
    }
    *payload = p + at + 4;
    *payload_len = (uint32_t)(end - at - 4);
    return 1;
malformed:
    sw_errorf(ctx, api, "%s_merge: the partial is malformed", f->label);
    return 0;
}

/* NAME_merge's step: one partial folded into the group's state. */
static void sw_agg_merge(sqlite3_context *ctx, const sw_function *f, sqlite3_value *partial)
{
    const sqlite3_api_routines *api = f->inst->conn->api;
    sw_instance *inst = f->inst;
    sw_agg *agg = api->aggregate_context(ctx, (int)sw_agg_size(f));
    if (!agg) {
        api->result_error_nomem(ctx);
        return;
    }
    if (agg->broken || api->value_type(partial) == SQLITE_NULL)
        return; /* NULL: no partial (strict, as for every aggregate) */
    if (api->value_type(partial) != SQLITE_BLOB) {
        sw_errorf(ctx, api, "%s_merge: the argument is %s, not a partial BLOB from %s_partial", f->label,
                  sw_sql_type_name(api->value_type(partial)), f->sql_name);
        agg->broken = 1;
        return;
    }
    const uint8_t *bytes = api->value_blob(partial);
    int n = api->value_bytes(partial);
    if (!bytes && n > 0) {
        api->result_error_nomem(ctx);
        agg->broken = 1;
        return;
    }
    const uint8_t *payload;
    uint32_t payload_len;
    if (!sw_partial_open(ctx, f, bytes ? bytes : (const uint8_t *)"", (size_t)n, &payload, &payload_len) ||
        (!agg->live && !sw_agg_init(ctx, f, agg)) || !sw_ensure_arg_buffer(ctx, f, payload_len)) {
        agg->broken = 1;
        return;
    }
    memcpy(inst->mem_base + inst->arg_ptr, payload, payload_len);
    sw_val_raw vals[3];
    vals[0].i32 = agg->handle;
    vals[1].i32 = (int32_t)inst->arg_ptr;
    vals[2].i32 = (int32_t)payload_len;
    if (!sw_guest_call(ctx, f, &f->funcs[SW_FN_MERGE], sw_trap_in[SW_FN_MERGE], vals, 3)) {
        agg->broken = 1;
    } else if (vals[0].i32 != 0) {
        sw_errorf(ctx, api, "%s_merge: merge failed (returned %d)", f->label, vals[0].i32);
        agg->broken = 1;
    }
}
