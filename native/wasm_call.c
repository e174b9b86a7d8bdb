/* wasm_call.c: wasm_call(module, function, args...): dispatch by name at run time. */

static void sw_wasm_call(sqlite3_context *ctx, sw_conn *conn, int argc, sqlite3_value **argv)
{
    const sqlite3_api_routines *api = conn->api;
    if (argc < 2) {
        api->result_error(ctx, "wasm_call(module, function, args...) needs a module and a function name", -1);
        return;
    }
    /* Check the types first: value_text() would convert a blob in place. */
    if (api->value_type(argv[0]) != SQLITE_TEXT || api->value_type(argv[1]) != SQLITE_TEXT) {
        api->result_error(ctx, "wasm_call: module and function names must be text", -1);
        return;
    }
    const char *module = (const char *)api->value_text(argv[0]);
    const char *name = (const char *)api->value_text(argv[1]);
    if (!module || !name) {
        api->result_error_nomem(ctx);
        return;
    }
    int module_found = 0;
    for (int i = 0; i < conn->n_functions; i++) {
        const sw_function *f = conn->functions[i];
        if (f->removed || api->stricmp(f->inst->name, module) != 0)
            continue;
        module_found = 1;
        if (api->stricmp(f->sql_name, name) == 0 || strcmp(f->export_name, name) == 0) {
            if (f->kind == SW_KIND_TABLE)
                sw_errorf(ctx, api, "wasm_call: %s is a table function: use it in FROM, as %s(...)", f->label,
                          f->sql_name);
            else if (f->kind != SW_KIND_SCALAR)
                sw_errorf(ctx, api, "wasm_call: %s is an aggregate function: call it directly", f->label);
            else
                sw_invoke(ctx, f, argc - 2, argv + 2);
            return;
        }
    }
    if (module_found)
        sw_errorf(ctx, api, "wasm_call: module '%s' has no function '%s'", module, name);
    else
        sw_errorf(ctx, api, "wasm_call: no module '%s' is installed in this connection", module);
}
