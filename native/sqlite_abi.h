/*
 * The part of SQLite's C ABI that native/ uses, declared here so that
 * building needs no SQLite headers: the opaque handles, the constants, the
 * virtual-table structs and the routines table a loadable extension receives.
 * SQLite keeps all of these stable (structs and the table only grow at their
 * end). tests/test_native_build.py compares every value, offset and routine
 * signature below with a real sqlite3ext.h.
 */
#ifndef SQLWASM_SQLITE_ABI_H
#define SQLWASM_SQLITE_ABI_H

#include <stddef.h>

#include "sqlite_routines.h"

/* Handles SQLite gives out and only it looks inside. */
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_context sqlite3_context;
typedef struct sqlite3_value sqlite3_value;
typedef struct sqlite3_stmt sqlite3_stmt;

typedef long long sqlite3_int64;
typedef unsigned long long sqlite3_uint64;
typedef void (*sqlite3_destructor_type)(void *);

/* Result codes. */
#define SQLITE_OK 0
#define SQLITE_ERROR 1
#define SQLITE_BUSY 5
#define SQLITE_NOMEM 7
#define SQLITE_CONSTRAINT 19
#define SQLITE_ROW 100
#define SQLITE_DONE 101

/* Value types. */
#define SQLITE_INTEGER 1
#define SQLITE_FLOAT 2
#define SQLITE_TEXT 3
#define SQLITE_BLOB 4
#define SQLITE_NULL 5

/* Function registration: text encoding and flags. */
#define SQLITE_UTF8 1
#define SQLITE_DETERMINISTIC 0x800
#define SQLITE_DIRECTONLY 0x80000
#define SQLITE_INNOCUOUS 0x200000

/* sqlite3_open_v2 flags. */
#define SQLITE_OPEN_READWRITE 0x2
#define SQLITE_OPEN_CREATE 0x4
#define SQLITE_OPEN_MEMORY 0x80

/* Virtual tables: a constraint's operator, and sqlite3_vtab_config options. */
#define SQLITE_INDEX_CONSTRAINT_EQ 2
#define SQLITE_VTAB_INNOCUOUS 2
#define SQLITE_VTAB_DIRECTONLY 3

/* SQLite copies the bytes before the call returns. */
#define SQLITE_TRANSIENT ((sqlite3_destructor_type)-1)

typedef struct sqlite3_module sqlite3_module;
typedef struct sqlite3_vtab sqlite3_vtab;
typedef struct sqlite3_vtab_cursor sqlite3_vtab_cursor;
typedef struct sqlite3_index_info sqlite3_index_info;

/* The head of every virtual table and cursor (ours embed them first). */
struct sqlite3_vtab {
    const sqlite3_module *pModule;
    int nRef;
    char *zErrMsg; /* freed by SQLite with sqlite3_free */
};

struct sqlite3_vtab_cursor {
    sqlite3_vtab *pVtab;
};

struct sqlite3_index_constraint {
    int iColumn;
    unsigned char op;
    unsigned char usable;
    int iTermOffset;
};

struct sqlite3_index_orderby {
    int iColumn;
    unsigned char desc;
};

struct sqlite3_index_constraint_usage {
    int argvIndex;
    unsigned char omit;
};

/* SQLite allocates this; later versions append fields after estimatedRows
   (3.8.2), which native/ does not read. */
struct sqlite3_index_info {
    int nConstraint;
    struct sqlite3_index_constraint *aConstraint;
    int nOrderBy;
    struct sqlite3_index_orderby *aOrderBy;
    struct sqlite3_index_constraint_usage *aConstraintUsage;
    int idxNum;
    char *idxStr;
    int needToFreeIdxStr;
    int orderByConsumed;
    double estimatedCost;
    sqlite3_int64 estimatedRows;
};

/* Methods native/ never sets: only their places in the struct matter. */
typedef void (*sw_unset_method)(void);

/* The version 1 layout; SQLite reads the methods after xRename only from a
   module whose iVersion is 2 or more, and native/'s modules are version 0. */
struct sqlite3_module {
    int iVersion;
    int (*xCreate)(sqlite3 *, void *aux, int argc, const char *const *argv, sqlite3_vtab **vtab, char **err);
    int (*xConnect)(sqlite3 *, void *aux, int argc, const char *const *argv, sqlite3_vtab **vtab, char **err);
    int (*xBestIndex)(sqlite3_vtab *, sqlite3_index_info *);
    int (*xDisconnect)(sqlite3_vtab *);
    int (*xDestroy)(sqlite3_vtab *);
    int (*xOpen)(sqlite3_vtab *, sqlite3_vtab_cursor **cursor);
    int (*xClose)(sqlite3_vtab_cursor *);
    int (*xFilter)(sqlite3_vtab_cursor *, int idx_num, const char *idx_str, int argc, sqlite3_value **argv);
    int (*xNext)(sqlite3_vtab_cursor *);
    int (*xEof)(sqlite3_vtab_cursor *);
    int (*xColumn)(sqlite3_vtab_cursor *, sqlite3_context *, int column);
    int (*xRowid)(sqlite3_vtab_cursor *, sqlite3_int64 *rowid);
    sw_unset_method xUpdate;
    sw_unset_method xBegin;
    sw_unset_method xSync;
    sw_unset_method xCommit;
    sw_unset_method xRollback;
    sw_unset_method xFindFunction;
    sw_unset_method xRename;
};

/*
 * The routines table, with only the routines native/ calls: each is a member
 * of its own struct that first skips `slot` entries, so api->name(...) reads
 * the table at SQLite's index. The union is as large as the highest slot.
 */
typedef void (*sw_routine)(void);
#define SW_ROUTINE_MEMBER(slot, name, ret, params) \
    struct {                                       \
        sw_routine sw_before_##name[slot];         \
        ret(*name) params;                         \
    };
typedef union sqlite3_api_routines {
    SW_SQLITE_ROUTINES_ALL(SW_ROUTINE_MEMBER)
} sqlite3_api_routines;
#undef SW_ROUTINE_MEMBER

#define SW_ROUTINE_AT_SLOT(slot, name, ret, params) \
    _Static_assert(offsetof(sqlite3_api_routines, name) == (slot) * sizeof(sw_routine), #name "'s slot");
SW_SQLITE_ROUTINES_ALL(SW_ROUTINE_AT_SLOT)
#undef SW_ROUTINE_AT_SLOT

/* registry.c reads this slot only from SQLite 3.41 on. */
#define SW_ROUTINE_IS_INTERRUPTED 266
_Static_assert(offsetof(sqlite3_api_routines, is_interrupted) == SW_ROUTINE_IS_INTERRUPTED * sizeof(sw_routine),
               "SW_ROUTINE_IS_INTERRUPTED is is_interrupted's slot");

#endif
