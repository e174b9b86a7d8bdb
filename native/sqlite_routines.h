/*
 * The SQLite routines native/ calls, as X-macro lists: X(slot, name, return
 * type, parameter list). The slot is the routine's index in the
 * sqlite3_api_routines table SQLite hands a loadable extension; that table
 * only grows at its end, so a slot holds in every later SQLite. `name` is the
 * routine without its sqlite3_ prefix, which is also how dlsym finds it.
 *
 * Only macro definitions live here: tests/test_native_build.py includes this
 * file next to a real sqlite3ext.h and checks every slot and signature.
 * sqlite_abi.h builds the table type and the callers from these lists.
 */
#ifndef SQLWASM_SQLITE_ROUTINES_H
#define SQLWASM_SQLITE_ROUTINES_H

/* Routines every SQLite since 3.25 has (create_window_function is the newest of them). */
#define SW_SQLITE_ROUTINES(X)                                                                        \
    X(0, aggregate_context, void *, (sqlite3_context *, int))                                        \
    X(10, bind_text, int, (sqlite3_stmt *, int, const char *, int, void (*)(void *)))                \
    X(16, close, int, (sqlite3 *))                                                                   \
    X(20, column_bytes, int, (sqlite3_stmt *, int))                                                  \
    X(36, column_text, const unsigned char *, (sqlite3_stmt *, int))                                 \
    X(50, declare_vtab, int, (sqlite3 *, const char *))                                              \
    X(53, errmsg, const char *, (sqlite3 *))                                                         \
    X(57, finalize, int, (sqlite3_stmt *))                                                           \
    X(58, free, void, (void *))                                                                      \
    X(67, libversion_number, int, (void))                                                            \
    X(69, mprintf, char *, (const char *, ...))                                                      \
    X(78, result_blob, void, (sqlite3_context *, const void *, int, void (*)(void *)))               \
    X(79, result_double, void, (sqlite3_context *, double))                                          \
    X(80, result_error, void, (sqlite3_context *, const char *, int))                                \
    X(83, result_int64, void, (sqlite3_context *, sqlite3_int64))                                    \
    X(84, result_null, void, (sqlite3_context *))                                                    \
    X(85, result_text, void, (sqlite3_context *, const char *, int, void (*)(void *)))               \
    X(89, result_value, void, (sqlite3_context *, sqlite3_value *))                                  \
    X(94, step, int, (sqlite3_stmt *))                                                               \
    X(101, user_data, void *, (sqlite3_context *))                                                   \
    X(102, value_blob, const void *, (sqlite3_value *))                                              \
    X(103, value_bytes, int, (sqlite3_value *))                                                      \
    X(105, value_double, double, (sqlite3_value *))                                                  \
    X(107, value_int64, sqlite3_int64, (sqlite3_value *))                                            \
    X(109, value_text, const unsigned char *, (sqlite3_value *))                                     \
    X(113, value_type, int, (sqlite3_value *))                                                       \
    X(116, prepare_v2, int, (sqlite3 *, const char *, int, sqlite3_stmt **, const char **))          \
    X(119, create_module_v2, int, (sqlite3 *, const char *, const sqlite3_module *, void *,          \
                                   void (*)(void *)))                                                \
    X(135, open_v2, int, (const char *, sqlite3 **, int, const char *))                              \
    X(137, result_error_nomem, void, (sqlite3_context *))                                            \
    X(151, limit, int, (sqlite3 *, int, int))                                                        \
    X(152, next_stmt, sqlite3_stmt *, (sqlite3 *, sqlite3_stmt *))                                   \
    X(162, create_function_v2, int,                                                                  \
      (sqlite3 *, const char *, int, int, void *, void (*)(sqlite3_context *, int, sqlite3_value **), \
       void (*)(sqlite3_context *, int, sqlite3_value **), void (*)(sqlite3_context *),              \
       void (*)(void *)))                                                                            \
    X(177, vtab_config, int, (sqlite3 *, int, ...))                                                  \
    X(184, stmt_busy, int, (sqlite3_stmt *))                                                         \
    X(186, stricmp, int, (const char *, const char *))                                               \
    X(197, malloc64, void *, (sqlite3_uint64))                                                       \
    X(201, result_blob64, void, (sqlite3_context *, const void *, sqlite3_uint64, void (*)(void *))) \
    X(204, value_dup, sqlite3_value *, (const sqlite3_value *))                                      \
    X(205, value_free, void, (sqlite3_value *))                                                      \
    X(239, create_window_function, int,                                                              \
      (sqlite3 *, const char *, int, int, void *, void (*)(sqlite3_context *, int, sqlite3_value **), \
       void (*)(sqlite3_context *), void (*)(sqlite3_context *),                                     \
       void (*)(sqlite3_context *, int, sqlite3_value **), void (*)(void *)))

/* Added in SQLite 3.41: a table from an older SQLite ends before these slots,
   so callers check sqlite3_libversion_number() first. The first routine
   3.41 appended after value_encoding, the last of 3.40 (slot 265). */
#define SW_SQLITE_ROUTINES_3_41(X) X(266, is_interrupted, int, (sqlite3 *))

#define SW_SQLITE_ROUTINES_ALL(X) SW_SQLITE_ROUTINES(X) SW_SQLITE_ROUTINES_3_41(X)

#endif
