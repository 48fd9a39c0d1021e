/*
 * store.h - opening SQLite databases the way every service needs them.
 *
 * WAL journal, synchronous=FULL (a committed transaction survives power
 * loss, which is what "durable" means in SPEC §3), a busy timeout so the
 * sqlite3 shell can read while a service writes, and helpers to run a
 * statement with a BZ_E* result. Callers serialise use of one connection.
 */
#ifndef BZ_STORE_H
#define BZ_STORE_H

#include <sqlite3.h>
#include <stddef.h>

/* Opens (creating if needed) and configures path. 0 or BZ_EIO with errmsg set. */
int store_open(const char *path, sqlite3 **out, char *errmsg, size_t errlen);

/* Runs one or more SQL statements with no results. 0 or BZ_EIO (logged). */
int store_exec(sqlite3 *db, const char *sql);

/* Prepares a statement; aborts on failure, since our SQL is fixed at compile time. */
sqlite3_stmt *store_prepare(sqlite3 *db, const char *sql);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. 0 or BZ_EIO. */
int store_begin(sqlite3 *db);
int store_commit(sqlite3 *db);
void store_rollback(sqlite3 *db);

#endif
