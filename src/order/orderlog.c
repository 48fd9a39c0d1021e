#include "orderlog.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "store.h"

struct orderlog {
    sqlite3 *sql;
    pthread_mutex_t db_lock;    /* serialises every use of `sql`; held to change `state` */
    pthread_mutex_t state_lock; /* also held to change `state`, and enough to read it */
    struct orderlog_state state;
    bool group; /* a group transaction is open (orderlog_group_open): calls nest as savepoints */

    sqlite3_stmt *st_insert, *st_get, *st_find, *st_range, *st_truncate, *st_meta_put,
        *st_delete_stale;
};

/*
 * SQLite's page cache for the log, in KiB (negative cache_size). Appends touch the table's last
 * pages and random pages of the request-id index; with SQLite's default 2 MB, a page of a few
 * thousand appends spilled dirty index pages to the WAL in the middle of its transaction and wrote
 * them again at the commit (catch-up profile: a third of the apply time in pwrite).
 */
#define ORDERLOG__CACHE_KIB 32768

static const char orderlog__schema[] =
    "CREATE TABLE IF NOT EXISTS orders(number INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE,"
    " name TEXT NOT NULL, type TEXT NOT NULL CHECK (type IN ('buy','sell')),"
    " quantity INTEGER NOT NULL, epoch INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('promised', 0);"
    "INSERT OR IGNORE INTO meta VALUES('promised_leader', 0);"
    "INSERT OR IGNORE INTO meta VALUES('log_epoch', 0);";

static int orderlog__load_state(struct orderlog *log)
{
    struct orderlog_state *s = &log->state;
    sqlite3_stmt *st = store_prepare(log->sql, "SELECT key, value FROM meta");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        if (strcmp(k, "promised") == 0)
            s->promised = (uint64_t)sqlite3_column_int64(st, 1);
        else if (strcmp(k, "promised_leader") == 0)
            s->promised_leader = (int)sqlite3_column_int64(st, 1);
        else if (strcmp(k, "log_epoch") == 0)
            s->log_epoch = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);

    s->last = -1;
    s->last_epoch = 0;
    st = store_prepare(log->sql, "SELECT number, epoch, (SELECT count(*) FROM orders) FROM orders"
                                 " ORDER BY number DESC LIMIT 1");
    int rv = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        s->last = sqlite3_column_int64(st, 0);
        s->last_epoch = (uint64_t)sqlite3_column_int64(st, 1);
        /* Numbers are dense from 0: the count must be last+1, or the file is damaged. */
        if (sqlite3_column_int64(st, 2) != s->last + 1)
            rv = BZ_EIO;
    }
    sqlite3_finalize(st);
    return rv;
}

int orderlog_open(struct orderlog **out, const char *path, char *errmsg, size_t errlen)
{
    struct orderlog *log = xcalloc(1, sizeof *log);
    int rv = store_open(path, &log->sql, errmsg, errlen);
    if (rv) {
        free(log);
        return rv;
    }
    sqlite3_stmt *check = store_prepare(log->sql, "PRAGMA quick_check");
    int rc = sqlite3_step(check);
    const char *verdict = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(check, 0) : NULL;
    if (!verdict || strcmp(verdict, "ok") != 0) {
        snprintf(errmsg, errlen,
                 "%s is damaged (%s): move it aside to rebuild this replica from its peers", path,
                 verdict ? verdict : sqlite3_errmsg(log->sql));
        sqlite3_finalize(check);
        goto err;
    }
    sqlite3_finalize(check);
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA cache_size=-%d;", ORDERLOG__CACHE_KIB);
    if (store_exec(log->sql, pragma) != 0 || store_exec(log->sql, orderlog__schema) != 0) {
        snprintf(errmsg, errlen, "%s: cannot create the schema", path);
        goto err;
    }
    if (orderlog__load_state(log) != 0) {
        snprintf(errmsg, errlen, "%s: order numbers are not dense from 0", path);
        goto err;
    }
    log->st_insert = store_prepare(log->sql, "INSERT INTO orders VALUES(?,?,?,?,?,?)");
    log->st_get = store_prepare(log->sql, "SELECT number, request_id, name, type, quantity, epoch"
                                          " FROM orders WHERE number = ?");
    log->st_find = store_prepare(log->sql, "SELECT number, request_id, name, type, quantity, epoch"
                                           " FROM orders WHERE request_id = ?");
    log->st_range =
        store_prepare(log->sql, "SELECT number, request_id, name, type, quantity, epoch"
                                " FROM orders WHERE number >= ? ORDER BY number LIMIT ?");
    log->st_truncate = store_prepare(log->sql, "DELETE FROM orders WHERE number >= ?");
    log->st_delete_stale =
        store_prepare(log->sql, "DELETE FROM orders WHERE number >= (SELECT min(number) FROM"
                                " orders WHERE number > ?1 AND epoch < ?2)");
    log->st_meta_put = store_prepare(log->sql, "UPDATE meta SET value = ? WHERE key = ?");
    pthread_mutex_init(&log->db_lock, NULL);
    pthread_mutex_init(&log->state_lock, NULL);
    *out = log;
    return 0;
err:
    sqlite3_close(log->sql);
    free(log);
    return BZ_EIO;
}

int orderlog_set_fsync(struct orderlog *log, bool every_commit)
{
    pthread_mutex_lock(&log->db_lock);
    int rv = store_exec(log->sql,
                        every_commit ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;");
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

void orderlog_close(struct orderlog *log)
{
    if (!log)
        return;
    if (orderlog_group_commit(log) != 0)
        LOG_ERROR("orders: the last group of appends was not committed");
    sqlite3_stmt *sts[] = {log->st_insert,   log->st_get,          log->st_find,    log->st_range,
                           log->st_truncate, log->st_delete_stale, log->st_meta_put};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++)
        sqlite3_finalize(sts[i]);
    sqlite3_close(log->sql);
    pthread_mutex_destroy(&log->db_lock);
    pthread_mutex_destroy(&log->state_lock);
    free(log);
}

void orderlog_state(struct orderlog *log, struct orderlog_state *out)
{
    /* Not db_lock: reading the state must not wait for a commit's fsync. */
    pthread_mutex_lock(&log->state_lock);
    *out = log->state;
    pthread_mutex_unlock(&log->state_lock);
}

/* ---------------------------------------------------------------- rows */

static void orderlog__row(sqlite3_stmt *st, struct order *o)
{
    memset(o, 0, sizeof *o);
    o->number = sqlite3_column_int64(st, 0);
    snprintf(o->trade.request_id, sizeof o->trade.request_id, "%s",
             (const char *)sqlite3_column_text(st, 1));
    snprintf(o->trade.name, sizeof o->trade.name, "%s", (const char *)sqlite3_column_text(st, 2));
    trade_type_parse((const char *)sqlite3_column_text(st, 3), &o->trade.type);
    o->trade.quantity = sqlite3_column_int64(st, 4);
    o->epoch = (uint64_t)sqlite3_column_int64(st, 5);
}

/* Inserts one row; returns 0, BZ_ECONFLICT (duplicate request id or number) or BZ_EIO. */
static int orderlog__insert(struct orderlog *log, const struct order *o)
{
    sqlite3_stmt *st = log->st_insert;
    sqlite3_bind_int64(st, 1, o->number);
    sqlite3_bind_text(st, 2, o->trade.request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, o->trade.name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, trade_type_name(o->trade.type), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, o->trade.quantity);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)o->epoch);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc == SQLITE_CONSTRAINT)
        return BZ_ECONFLICT;
    LOG_ERROR("orders insert: %s", sqlite3_errmsg(log->sql));
    return BZ_EIO;
}

static int orderlog__exec_int(struct orderlog *log, sqlite3_stmt *st, int64_t a, int64_t b)
{
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) > 1)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        LOG_ERROR("orders: %s", sqlite3_errmsg(log->sql));
        return BZ_EIO;
    }
    return 0;
}

static int orderlog__meta_put(struct orderlog *log, const char *key, uint64_t value)
{
    sqlite3_stmt *st = log->st_meta_put;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)value);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : BZ_EIO;
}

/* With db_lock held: one call's transaction, or its savepoint inside an open group. */
static int orderlog__tx_begin(struct orderlog *log)
{
    return log->group ? store_exec(log->sql, "SAVEPOINT orderlog_call") : store_begin(log->sql);
}

static int orderlog__tx_commit(struct orderlog *log)
{
    return log->group ? store_exec(log->sql, "RELEASE orderlog_call") : store_commit(log->sql);
}

static void orderlog__tx_rollback(struct orderlog *log)
{
    if (!log->group)
        store_rollback(log->sql);
    else if (!sqlite3_get_autocommit(log->sql))
        store_exec(log->sql, "ROLLBACK TO orderlog_call; RELEASE orderlog_call");
}

int orderlog_group_open(struct orderlog *log)
{
    pthread_mutex_lock(&log->db_lock);
    int rv = 0;
    if (!log->group && (rv = store_begin(log->sql)) == 0)
        log->group = true;
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

int orderlog_group_commit(struct orderlog *log)
{
    pthread_mutex_lock(&log->db_lock);
    int rv = 0;
    if (log->group) {
        log->group = false;
        rv = store_commit(log->sql);
        if (rv) {
            /* What the group added is gone: the state follows the table again. */
            store_rollback(log->sql);
            pthread_mutex_lock(&log->state_lock);
            if (orderlog__load_state(log) != 0)
                LOG_ERROR("orders: the table is not dense after a failed commit");
            pthread_mutex_unlock(&log->state_lock);
        }
    }
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

int orderlog_promise(struct orderlog *log, uint64_t epoch, int leader)
{
    pthread_mutex_lock(&log->db_lock);
    struct orderlog_state cur = log->state;
    int rv = 0;
    if (epoch < cur.promised || (epoch == cur.promised && leader != cur.promised_leader &&
                                 (leader == 0 || cur.promised_leader != 0))) {
        rv = epoch == cur.promised && leader == 0 ? 0 : BZ_ESTALE;
        goto out;
    }
    if (epoch == cur.promised && leader == cur.promised_leader)
        goto out;
    if ((rv = orderlog__tx_begin(log)) == 0 &&
        (rv = orderlog__meta_put(log, "promised", epoch)) == 0 &&
        (rv = orderlog__meta_put(log, "promised_leader", (uint64_t)leader)) == 0)
        rv = orderlog__tx_commit(log);
    if (rv) {
        orderlog__tx_rollback(log);
        goto out;
    }
    pthread_mutex_lock(&log->state_lock);
    log->state.promised = epoch;
    log->state.promised_leader = leader;
    pthread_mutex_unlock(&log->state_lock);
out:
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

int orderlog_set_log_epoch(struct orderlog *log, uint64_t epoch)
{
    pthread_mutex_lock(&log->db_lock);
    int rv = 0;
    if (epoch != log->state.log_epoch) {
        rv = orderlog__meta_put(log, "log_epoch", epoch);
        if (rv == 0) {
            pthread_mutex_lock(&log->state_lock);
            log->state.log_epoch = epoch;
            pthread_mutex_unlock(&log->state_lock);
        }
    }
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

/* ---------------------------------------------------------------- appends */

int orderlog_apply(struct orderlog *log, const struct order *entries, size_t n, int64_t stale_after,
                   uint64_t leader_epoch)
{
    pthread_mutex_lock(&log->db_lock);
    struct orderlog_state s = log->state;
    int rv = 0;
    if (n > 0 && entries[0].number > s.last + 1) {
        rv = BZ_EINVAL;
        goto out;
    }
    if ((rv = orderlog__tx_begin(log)) != 0)
        goto out;
    for (size_t i = 0; i < n && rv == 0; i++) {
        const struct order *e = &entries[i];
        if (i > 0 && e->number != entries[i - 1].number + 1) {
            rv = BZ_EINVAL;
            break;
        }
        if (e->number <= s.last) {
            struct order mine;
            sqlite3_bind_int64(log->st_get, 1, e->number);
            int rc = sqlite3_step(log->st_get);
            if (rc == SQLITE_ROW)
                orderlog__row(log->st_get, &mine);
            sqlite3_reset(log->st_get);
            if (rc != SQLITE_ROW) {
                rv = BZ_EIO;
                break;
            }
            if (mine.epoch == e->epoch)
                continue; /* same (number, epoch): the same entry */
            LOG_WARN("log conflict at %lld (epoch %llu here, %llu from leader): truncating",
                     (long long)e->number, (unsigned long long)mine.epoch,
                     (unsigned long long)e->epoch);
            if ((rv = orderlog__exec_int(log, log->st_truncate, e->number, 0)) != 0)
                break;
            s.last = e->number - 1;
        }
        rv = orderlog__insert(log, e);
        if (rv == 0) {
            s.last = e->number;
            s.last_epoch = e->epoch;
        }
    }
    /* Entries past stale_after from an older epoch are leftovers of a deposed leader. The
     * log is cut from the first of them, so it stays dense whatever follows. */
    if (rv == 0 && s.last > stale_after) {
        rv = orderlog__exec_int(log, log->st_delete_stale, stale_after, (int64_t)leader_epoch);
        if (rv == 0 && sqlite3_changes(log->sql) > 0) {
            LOG_WARN("dropped %d stale entries after %lld", sqlite3_changes(log->sql),
                     (long long)stale_after);
            /* The log now ends just before the first leftover. */
            sqlite3_stmt *st = store_prepare(
                log->sql, "SELECT number, epoch FROM orders ORDER BY number DESC LIMIT 1");
            s.last = -1;
            s.last_epoch = 0;
            if (sqlite3_step(st) == SQLITE_ROW) {
                s.last = sqlite3_column_int64(st, 0);
                s.last_epoch = (uint64_t)sqlite3_column_int64(st, 1);
            }
            sqlite3_finalize(st);
        }
    }
    if (rv == 0)
        rv = orderlog__tx_commit(log);
    if (rv)
        orderlog__tx_rollback(log);
    else {
        pthread_mutex_lock(&log->state_lock);
        log->state = s;
        pthread_mutex_unlock(&log->state_lock);
    }
out:
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

/* ---------------------------------------------------------------- reads */

static int orderlog__get_one(struct orderlog *log, sqlite3_stmt *st, struct order *out)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        orderlog__row(st, out);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return BZ_ENOTFOUND;
    LOG_ERROR("orders read: %s", sqlite3_errmsg(log->sql));
    return BZ_EIO;
}

int orderlog_get(struct orderlog *log, int64_t number, struct order *out)
{
    pthread_mutex_lock(&log->db_lock);
    sqlite3_bind_int64(log->st_get, 1, number);
    int rv = orderlog__get_one(log, log->st_get, out);
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

int orderlog_find_request(struct orderlog *log, const char *request_id, struct order *out)
{
    pthread_mutex_lock(&log->db_lock);
    sqlite3_bind_text(log->st_find, 1, request_id, -1, SQLITE_STATIC);
    int rv = orderlog__get_one(log, log->st_find, out);
    pthread_mutex_unlock(&log->db_lock);
    return rv;
}

int orderlog_read(struct orderlog *log, int64_t from, size_t max, struct order *out, size_t *n)
{
    pthread_mutex_lock(&log->db_lock);
    sqlite3_stmt *st = log->st_range;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    size_t k = 0;
    int rc = SQLITE_DONE;
    while (k < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
        orderlog__row(st, &out[k++]);
    int rv = (k == max || rc == SQLITE_DONE) ? 0 : BZ_EIO;
    sqlite3_reset(st);
    pthread_mutex_unlock(&log->db_lock);
    *n = k;
    return rv;
}
