#include "store.h"

#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "log.h"

int store_open(const char *path, sqlite3 **out, char *errmsg, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(errmsg, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return BZ_EIO;
    }
    sqlite3_busy_timeout(db, 5000);
    if (store_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") != 0) {
        snprintf(errmsg, errlen, "%s: cannot enable WAL: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return BZ_EIO;
    }
    *out = db;
    return 0;
}

int store_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        LOG_ERROR("sqlite: %s (in: %.60s)", err ? err : "?", sql);
        sqlite3_free(err);
        return BZ_EIO;
    }
    return 0;
}

sqlite3_stmt *store_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite prepare failed: %s: %s\n", sqlite3_errmsg(db), sql);
        abort();
    }
    return st;
}

int store_begin(sqlite3 *db)
{
    return store_exec(db, "BEGIN IMMEDIATE");
}

int store_commit(sqlite3 *db)
{
    return store_exec(db, "COMMIT");
}

void store_rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        store_exec(db, "ROLLBACK");
}
