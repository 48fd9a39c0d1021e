#include "stockdb.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "store.h"

#define STOCKDB__MAX_STOCKS 100000
#define STOCKDB__QTY_MAX    INT64_C(1000000000000) /* refuse sells beyond 10^12 shares */

struct stockdb {
    sqlite3 *sql;
    pthread_mutex_t write_lock; /* serialises transactions on `sql` */
    pthread_rwlock_t mem_lock;  /* guards the in-memory copy */
    struct stock *stocks;       /* sorted by name; the set is fixed after open */
    size_t nstocks;
    uint64_t version;
    sqlite3_stmt *st_applied_get, *st_applied_put, *st_update, *st_version;
};

static const char stockdb__schema[] =
    "CREATE TABLE IF NOT EXISTS stocks(name TEXT PRIMARY KEY, price REAL NOT NULL,"
    " quantity INTEGER NOT NULL CHECK (quantity >= 0));"
    "CREATE TABLE IF NOT EXISTS applied(request_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " type TEXT NOT NULL, quantity INTEGER NOT NULL, status INTEGER NOT NULL,"
    " result_quantity INTEGER NOT NULL, version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('version', 0);";

static int stockdb__cmp(const void *a, const void *b)
{
    return strcmp(((const struct stock *)a)->name, ((const struct stock *)b)->name);
}

static struct stock *stockdb__find(struct stockdb *db, const char *name)
{
    struct stock key;
    snprintf(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, db->stocks, db->nstocks, sizeof *db->stocks, stockdb__cmp);
}

/* Seeds an empty stocks table from the CSV, in one transaction. */
static int stockdb__seed(struct stockdb *db, const char *csv, char *errmsg, size_t errlen)
{
    FILE *f = fopen(csv, "r");
    if (!f) {
        snprintf(errmsg, errlen, "%s: cannot open the stocks CSV", csv);
        return BZ_EINVAL;
    }
    sqlite3_stmt *ins = store_prepare(db->sql, "INSERT INTO stocks VALUES(?,?,?)");
    char line[256];
    int lineno = 0, rv = store_begin(db->sql), added = 0;
    while (rv == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (lineno == 1 || line[0] == '\0' || line[0] == '#')
            continue; /* header, blank lines and comments */
        char *name = strtok(line, ","), *price = strtok(NULL, ","), *qty = strtok(NULL, ",");
        char *end = NULL;
        double p = price ? strtod(price, &end) : -1;
        uint64_t q;
        if (!name || !price || !qty || strtok(NULL, ",") || !stock_name_valid(name, strlen(name)) ||
            *end != '\0' || !(p >= 0 && p < 1e12) || parse_u64_str(qty, 1000000000, &q)) {
            snprintf(errmsg, errlen, "%s:%d: expected name,price,quantity", csv, lineno);
            rv = BZ_EINVAL;
            break;
        }
        sqlite3_bind_text(ins, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(ins, 2, p);
        sqlite3_bind_int64(ins, 3, (sqlite3_int64)q);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            snprintf(errmsg, errlen, "%s:%d: %s", csv, lineno, sqlite3_errmsg(db->sql));
            rv = BZ_EINVAL;
        }
        sqlite3_reset(ins);
        added++;
    }
    fclose(f);
    sqlite3_finalize(ins);
    if (rv == 0 && added == 0) {
        snprintf(errmsg, errlen, "%s: no stocks", csv);
        rv = BZ_EINVAL;
    }
    if (rv == 0)
        rv = store_commit(db->sql);
    if (rv)
        store_rollback(db->sql);
    else
        LOG_INFO("seeded %d stocks from %s", added, csv);
    return rv;
}

static int stockdb__load(struct stockdb *db, char *errmsg, size_t errlen)
{
    sqlite3_stmt *st = store_prepare(db->sql, "SELECT value FROM meta WHERE key='version'");
    if (sqlite3_step(st) == SQLITE_ROW)
        db->version = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);

    st = store_prepare(db->sql, "SELECT name, price, quantity FROM stocks ORDER BY name");
    size_t cap = 16;
    db->stocks = xcalloc(cap, sizeof *db->stocks);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name || !stock_name_valid(name, strlen(name)) || db->nstocks == STOCKDB__MAX_STOCKS) {
            snprintf(errmsg, errlen, "catalog.db holds an invalid stock name or too many stocks");
            sqlite3_finalize(st);
            return BZ_EIO;
        }
        if (db->nstocks == cap) {
            cap *= 2;
            db->stocks = xrealloc(db->stocks, cap * sizeof *db->stocks);
        }
        struct stock *s = &db->stocks[db->nstocks++];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", name);
        s->price = sqlite3_column_double(st, 1);
        s->quantity = sqlite3_column_int64(st, 2);
        s->version = db->version; /* per-stock versions are not stored; this bound is safe */
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(errmsg, errlen, "reading stocks: %s", sqlite3_errmsg(db->sql));
        return BZ_EIO;
    }
    /* ORDER BY name uses SQLite's BINARY collation, which is memcmp order, as strcmp. */
    return 0;
}

int stockdb_open(struct stockdb **out, const char *path, const char *seed_csv, char *errmsg,
                 size_t errlen)
{
    struct stockdb *db = xcalloc(1, sizeof *db);
    int rv = store_open(path, &db->sql, errmsg, errlen);
    if (rv)
        goto err_after_alloc;
    rv = store_exec(db->sql, stockdb__schema);
    if (rv) {
        snprintf(errmsg, errlen, "%s: cannot create the schema", path);
        goto err_after_open;
    }
    sqlite3_stmt *count = store_prepare(db->sql, "SELECT count(*) FROM stocks");
    sqlite3_step(count);
    int64_t n = sqlite3_column_int64(count, 0);
    sqlite3_finalize(count);
    if (n == 0 && (rv = stockdb__seed(db, seed_csv, errmsg, errlen)) != 0)
        goto err_after_open;
    if ((rv = stockdb__load(db, errmsg, errlen)) != 0)
        goto err_after_open;

    db->st_applied_get = store_prepare(
        db->sql, "SELECT name, type, quantity, status, result_quantity, version FROM applied"
                 " WHERE request_id = ?");
    db->st_applied_put = store_prepare(db->sql, "INSERT INTO applied VALUES(?,?,?,?,?,?,?)");
    db->st_update = store_prepare(db->sql, "UPDATE stocks SET quantity = ? WHERE name = ?");
    db->st_version = store_prepare(db->sql, "UPDATE meta SET value = ? WHERE key = 'version'");
    pthread_mutex_init(&db->write_lock, NULL);
    pthread_rwlock_init(&db->mem_lock, NULL);
    *out = db;
    return 0;

err_after_open:
    free(db->stocks);
    sqlite3_close(db->sql);
err_after_alloc:
    free(db);
    return rv;
}

void stockdb_close(struct stockdb *db)
{
    if (!db)
        return;
    sqlite3_finalize(db->st_applied_get);
    sqlite3_finalize(db->st_applied_put);
    sqlite3_finalize(db->st_update);
    sqlite3_finalize(db->st_version);
    sqlite3_close(db->sql);
    pthread_mutex_destroy(&db->write_lock);
    pthread_rwlock_destroy(&db->mem_lock);
    free(db->stocks);
    free(db);
}

size_t stockdb_count(const struct stockdb *db)
{
    return db->nstocks;
}

uint64_t stockdb_version(struct stockdb *db)
{
    pthread_rwlock_rdlock(&db->mem_lock);
    uint64_t v = db->version;
    pthread_rwlock_unlock(&db->mem_lock);
    return v;
}

void stockdb_get_at(struct stockdb *db, size_t i, struct stock *out)
{
    pthread_rwlock_rdlock(&db->mem_lock);
    *out = db->stocks[i];
    pthread_rwlock_unlock(&db->mem_lock);
}

int stockdb_lookup(struct stockdb *db, const char *name, struct stock *out)
{
    pthread_rwlock_rdlock(&db->mem_lock);
    struct stock *s = stockdb__find(db, name);
    if (s)
        *out = *s;
    pthread_rwlock_unlock(&db->mem_lock);
    return s ? 0 : BZ_ENOTFOUND;
}

/* Looks up a previous outcome of this request id. 1 found, 0 not, BZ_EIO. */
static int stockdb__applied_get(struct stockdb *db, const struct trade *t, int *status,
                                struct stock *result)
{
    sqlite3_stmt *st = db->st_applied_get;
    sqlite3_bind_text(st, 1, t->request_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        struct trade prev = {0};
        snprintf(prev.request_id, sizeof prev.request_id, "%s", t->request_id);
        snprintf(prev.name, sizeof prev.name, "%s", (const char *)sqlite3_column_text(st, 0));
        trade_type_parse((const char *)sqlite3_column_text(st, 1), &prev.type);
        prev.quantity = sqlite3_column_int64(st, 2);
        *status = trade_same(&prev, t) ? sqlite3_column_int(st, 3) : BZ_EMISMATCH;
        result->quantity = sqlite3_column_int64(st, 4);
        result->version = (uint64_t)sqlite3_column_int64(st, 5);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = BZ_EIO;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

static int stockdb__applied_put(struct stockdb *db, const struct trade *t, int status,
                                const struct stock *result)
{
    sqlite3_stmt *st = db->st_applied_put;
    sqlite3_bind_text(st, 1, t->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, trade_type_name(t->type), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, t->quantity);
    sqlite3_bind_int(st, 5, status);
    sqlite3_bind_int64(st, 6, result->quantity);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)result->version);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : BZ_EIO;
}

static int stockdb__set_quantity(struct stockdb *db, const char *name, int64_t qty,
                                 uint64_t version)
{
    sqlite3_bind_int64(db->st_update, 1, qty);
    sqlite3_bind_text(db->st_update, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(db->st_update);
    sqlite3_reset(db->st_update);
    sqlite3_bind_int64(db->st_version, 1, (sqlite3_int64)version);
    int rc2 = sqlite3_step(db->st_version);
    sqlite3_reset(db->st_version);
    return rc == SQLITE_DONE && rc2 == SQLITE_DONE ? 0 : BZ_EIO;
}

int stockdb_trade(struct stockdb *db, const struct trade *t, struct stock *out)
{
    struct stock *s = stockdb__find(db, t->name); /* the set of stocks never changes */
    if (!s)
        return BZ_ENOTFOUND;

    pthread_mutex_lock(&db->write_lock);
    int status = 0;
    struct stock result = *s;
    int rv = store_begin(db->sql);
    if (rv)
        goto out;
    int found = stockdb__applied_get(db, t, &status, &result);
    if (found < 0) {
        rv = found;
        goto out;
    }
    if (found) {
        store_rollback(db->sql);
        rv = status;
        if (rv == 0)
            *out = result;
        goto out;
    }

    /* Only this thread writes quantities, under write_lock, so reading *s is safe. */
    int64_t now = s->quantity;
    if (t->type == TRADE_BUY && now < t->quantity) {
        status = BZ_ECONFLICT;
    } else if (t->type == TRADE_SELL && now > STOCKDB__QTY_MAX - t->quantity) {
        status = BZ_ECONFLICT;
    } else {
        result.quantity = t->type == TRADE_BUY ? now - t->quantity : now + t->quantity;
        result.version = db->version + 1;
        rv = stockdb__set_quantity(db, s->name, result.quantity, result.version);
    }
    if (rv == 0)
        rv = stockdb__applied_put(db, t, status, &result);
    if (rv == 0)
        rv = store_commit(db->sql);
    if (rv) {
        store_rollback(db->sql);
        goto out;
    }
    if (status == 0) {
        pthread_rwlock_wrlock(&db->mem_lock);
        s->quantity = result.quantity;
        s->version = result.version;
        db->version = result.version;
        pthread_rwlock_unlock(&db->mem_lock);
        *out = result;
    }
    rv = status;
out:
    pthread_mutex_unlock(&db->write_lock);
    return rv;
}

int stockdb_restock(struct stockdb *db, int64_t to, stockdb_changed_cb cb, void *arg)
{
    pthread_mutex_lock(&db->write_lock);
    struct stock *changed = xcalloc(db->nstocks, sizeof *changed);
    size_t n = 0;
    uint64_t version = db->version;
    int rv = store_begin(db->sql);
    for (size_t i = 0; rv == 0 && i < db->nstocks; i++) {
        if (db->stocks[i].quantity != 0)
            continue;
        rv = stockdb__set_quantity(db, db->stocks[i].name, to, ++version);
        changed[n] = db->stocks[i];
        changed[n].quantity = to;
        changed[n].version = version;
        n++;
    }
    if (rv == 0 && n > 0)
        rv = store_commit(db->sql);
    else
        store_rollback(db->sql);
    if (rv == 0 && n > 0) {
        pthread_rwlock_wrlock(&db->mem_lock);
        for (size_t k = 0; k < n; k++) {
            struct stock *s = stockdb__find(db, changed[k].name);
            s->quantity = changed[k].quantity;
            s->version = changed[k].version;
        }
        db->version = version;
        pthread_rwlock_unlock(&db->mem_lock);
    }
    pthread_mutex_unlock(&db->write_lock);
    for (size_t k = 0; rv == 0 && k < n && cb; k++)
        cb(arg, &changed[k]);
    free(changed);
    return rv ? rv : (int)n;
}
