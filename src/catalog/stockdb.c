#include "stockdb.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "store.h"

#define STOCKDB__MAX_STOCKS 100000
#define STOCKDB__QTY_MAX    INT64_C(1000000000000)  /* refuse sells beyond 10^12 shares */
#define STOCKDB__WINDOW_MS  (INT64_C(86400) * 1000) /* request ids kept by default: 24 h */
#define STOCKDB__GC_EVERY   200                     /* ms between two clean-ups */
#define STOCKDB__GC_ROWS                                                                           \
    16384 /* rows forgotten per clean-up at most: 80k/s, above any trade rate */

struct stockdb {
    sqlite3 *sql;
    pthread_mutex_t write_lock; /* serialises transactions on `sql` */
    pthread_rwlock_t mem_lock;  /* guards the in-memory copy */
    struct stock *stocks;       /* sorted by name; the set is fixed after open */
    size_t nstocks;
    uint64_t version;
    int64_t journal_next;             /* number of the next applied trade; guarded by write_lock */
    int64_t window_ms;                /* request ids are remembered this long */
    uint64_t last_gc_ms;              /* monotonic time of the last clean-up */
    atomic_int_fast64_t applied_rows; /* rows in `applied` (kept in step with the table) */
    sqlite3_stmt *st_applied_get, *st_applied_put, *st_update, *st_version, *st_journal,
        *st_journal_next, *st_gc;
};

static const char stockdb__schema[] =
    "CREATE TABLE IF NOT EXISTS stocks(name TEXT PRIMARY KEY, price REAL NOT NULL,"
    " quantity INTEGER NOT NULL CHECK (quantity >= 0));"
    "CREATE TABLE IF NOT EXISTS applied(request_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " type TEXT NOT NULL CHECK (type IN ('buy','sell')), quantity INTEGER NOT NULL,"
    " outcome TEXT NOT NULL CHECK (outcome IN ('applied','refused')),"
    " result_quantity INTEGER NOT NULL, version INTEGER NOT NULL,"
    " number INTEGER UNIQUE CHECK ((outcome = 'applied') = (number IS NOT NULL)),"
    " created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS applied_created ON applied(created_ms);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('version', 0);"
    "INSERT OR IGNORE INTO meta VALUES('journal_next', 0);";

/* Milliseconds since the epoch: request ids expire by wall-clock age, across restarts. */
static int64_t stockdb__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

#define STOCKDB__CSV_HEADER   "name,price,quantity"
#define STOCKDB__CSV_LINE_MAX 1024 /* a valid line is under 100 bytes */

/* A price: digits, optionally '.' and digits; at most 12 integer digits (no sign, hex,
 * exponent, inf or nan, which strtod alone would accept). */
static bool stockdb__price_valid(const char *s)
{
    size_t whole = strspn(s, "0123456789");
    if (whole == 0 || whole > 12)
        return false;
    if (s[whole] == '\0')
        return true;
    return s[whole] == '.' && strspn(s + whole + 1, "0123456789") > 0 &&
           s[whole + 1 + strspn(s + whole + 1, "0123456789")] == '\0';
}

/* Splits line in place into exactly three non-empty comma-separated fields. */
static bool stockdb__split3(char *line, char *fields[3])
{
    fields[0] = line;
    for (int i = 1; i < 3; i++) {
        char *comma = strchr(fields[i - 1], ',');
        if (!comma)
            return false;
        *comma = '\0';
        fields[i] = comma + 1;
    }
    return !strchr(fields[2], ',') && fields[0][0] && fields[1][0] && fields[2][0];
}

/*
 * Reads the stocks CSV strictly: the header line must be name,price,quantity;
 * then one stock per line (blank lines and # comments allowed), no empty fields,
 * decimal prices, lines read whole whatever their length. Every line is checked
 * and the stock limit applied before anything is written; then one transaction.
 */
static int stockdb__seed(struct stockdb *db, const char *csv, char *errmsg, size_t errlen)
{
    FILE *f = fopen(csv, "r");
    if (!f) {
        snprintf(errmsg, errlen, "%s: cannot open the stocks CSV", csv);
        return BZ_EINVAL;
    }
    struct stock *rows = NULL;
    int *linenos = NULL; /* line of each row, for messages */
    size_t nrows = 0, cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    int lineno = 0, rv = 0;
    while (rv == 0 && (got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        if ((size_t)got != strlen(line) || (size_t)got > STOCKDB__CSV_LINE_MAX) {
            snprintf(errmsg, errlen, "%s:%d: %s", csv, lineno,
                     (size_t)got != strlen(line) ? "NUL byte in the line" : "line too long");
            rv = BZ_EINVAL;
            break;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (lineno == 1) {
            if (strcmp(line, STOCKDB__CSV_HEADER) != 0) {
                snprintf(errmsg, errlen, "%s:1: the first line must be the header %s", csv,
                         STOCKDB__CSV_HEADER);
                rv = BZ_EINVAL;
            }
            continue;
        }
        if (line[0] == '\0' || line[0] == '#')
            continue; /* blank lines and comments */
        char *fields[3];
        uint64_t q;
        if (!stockdb__split3(line, fields) || !stock_name_valid(fields[0], strlen(fields[0])) ||
            !stockdb__price_valid(fields[1]) || parse_u64_str(fields[2], 1000000000, &q)) {
            snprintf(errmsg, errlen,
                     "%s:%d: expected name,price,quantity (a name of 1-64 [A-Za-z0-9_.-], a "
                     "decimal price, an integer quantity 0..1000000000)",
                     csv, lineno);
            rv = BZ_EINVAL;
            break;
        }
        if (nrows == STOCKDB__MAX_STOCKS) {
            snprintf(errmsg, errlen, "%s:%d: more than %d stocks", csv, lineno,
                     STOCKDB__MAX_STOCKS);
            rv = BZ_EINVAL;
            break;
        }
        if (nrows == cap) {
            cap = cap ? cap * 2 : 64;
            rows = xrealloc(rows, cap * sizeof *rows);
            linenos = xrealloc(linenos, cap * sizeof *linenos);
        }
        linenos[nrows] = lineno;
        struct stock *s = &rows[nrows++];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", fields[0]);
        s->price = strtod(fields[1], NULL);
        s->quantity = (int64_t)q;
    }
    free(line);
    if (rv == 0 && ferror(f)) {
        snprintf(errmsg, errlen, "%s: read error", csv);
        rv = BZ_EINVAL;
    }
    fclose(f);
    if (rv == 0 && lineno == 0) {
        snprintf(errmsg, errlen, "%s: empty file (expected the header %s)", csv,
                 STOCKDB__CSV_HEADER);
        rv = BZ_EINVAL;
    }
    if (rv == 0 && nrows == 0) {
        snprintf(errmsg, errlen, "%s: no stocks", csv);
        rv = BZ_EINVAL;
    }
    if (rv) {
        free(rows);
        free(linenos);
        return rv;
    }

    sqlite3_stmt *ins = store_prepare(db->sql, "INSERT INTO stocks VALUES(?,?,?)");
    rv = store_begin(db->sql);
    for (size_t i = 0; rv == 0 && i < nrows; i++) {
        sqlite3_bind_text(ins, 1, rows[i].name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(ins, 2, rows[i].price);
        sqlite3_bind_int64(ins, 3, (sqlite3_int64)rows[i].quantity);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            snprintf(errmsg, errlen, "%s:%d: stock %s: %s", csv, linenos[i], rows[i].name,
                     sqlite3_errmsg(db->sql));
            rv = BZ_EINVAL;
        }
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    if (rv == 0)
        rv = store_commit(db->sql);
    if (rv)
        store_rollback(db->sql);
    else
        LOG_INFO("seeded %zu stocks from %s", nrows, csv);
    free(rows);
    free(linenos);
    return rv;
}

/* Is this a catalog.db of the first release (applied.status, no journal)? */
static bool stockdb__old_schema(sqlite3 *sql)
{
    sqlite3_stmt *st = store_prepare(sql, "SELECT 1 FROM pragma_table_info('applied')"
                                          " WHERE name = 'status'");
    bool old = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return old;
}

static int stockdb__load(struct stockdb *db, char *errmsg, size_t errlen)
{
    sqlite3_stmt *st = store_prepare(db->sql, "SELECT key, value FROM meta");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        if (strcmp(key, "version") == 0)
            db->version = (uint64_t)sqlite3_column_int64(st, 1);
        else if (strcmp(key, "journal_next") == 0)
            db->journal_next = sqlite3_column_int64(st, 1);
    }
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
    if (stockdb__old_schema(db->sql)) {
        snprintf(errmsg, errlen,
                 "%s was written by an older bazaar-catalog (applied.status); it cannot be "
                 "upgraded in place: see docs/deploy.md",
                 path);
        rv = BZ_EINVAL;
        goto err_after_open;
    }
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

    db->st_applied_get =
        store_prepare(db->sql, "SELECT name, type, quantity, outcome, result_quantity, version,"
                               " number FROM applied WHERE request_id = ?");
    db->st_applied_put = store_prepare(db->sql, "INSERT INTO applied VALUES(?,?,?,?,?,?,?,?,?)");
    db->st_update = store_prepare(db->sql, "UPDATE stocks SET quantity = ? WHERE name = ?");
    db->st_version = store_prepare(db->sql, "UPDATE meta SET value = ? WHERE key = 'version'");
    db->st_journal_next =
        store_prepare(db->sql, "UPDATE meta SET value = ? WHERE key = 'journal_next'");
    db->st_journal = store_prepare(db->sql, "SELECT number, request_id, name, type, quantity"
                                            " FROM applied WHERE number >= ? ORDER BY number"
                                            " LIMIT ?");
    db->st_gc = store_prepare(db->sql, "DELETE FROM applied WHERE rowid IN (SELECT rowid FROM"
                                       " applied WHERE created_ms <= ?1 AND (number IS NULL OR"
                                       " number < ?2) ORDER BY created_ms LIMIT ?3)");
    db->window_ms = STOCKDB__WINDOW_MS;
    sqlite3_stmt *rows = store_prepare(db->sql, "SELECT count(*) FROM applied");
    if (sqlite3_step(rows) == SQLITE_ROW)
        atomic_store(&db->applied_rows, sqlite3_column_int64(rows, 0));
    sqlite3_finalize(rows);
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
    sqlite3_finalize(db->st_journal_next);
    sqlite3_finalize(db->st_journal);
    sqlite3_finalize(db->st_gc);
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

int stockdb_index(struct stockdb *db, const char *name, size_t *index)
{
    struct stock *s = stockdb__find(db, name); /* names never change: no lock needed */
    if (!s)
        return BZ_ENOTFOUND;
    *index = (size_t)(s - db->stocks);
    return 0;
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

/* Looks up a previous outcome of this request id into *o. 1 found, 0 not, BZ_EIO. */
static int stockdb__applied_get(struct stockdb *db, const struct trade *t,
                                struct stockdb_outcome *o)
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
        bool applied = strcmp((const char *)sqlite3_column_text(st, 3), "applied") == 0;
        o->status = !trade_same(&prev, t) ? BZ_EMISMATCH : applied ? 0 : BZ_ECONFLICT;
        o->stock.quantity = sqlite3_column_int64(st, 4);
        o->stock.version = (uint64_t)sqlite3_column_int64(st, 5);
        o->number = applied ? sqlite3_column_int64(st, 6) : -1;
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = BZ_EIO;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

static int stockdb__applied_put(struct stockdb *db, const struct trade *t,
                                const struct stockdb_outcome *o, int64_t now_ms)
{
    sqlite3_stmt *st = db->st_applied_put;
    sqlite3_bind_text(st, 1, t->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, trade_type_name(t->type), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, t->quantity);
    sqlite3_bind_text(st, 5, o->status == 0 ? "applied" : "refused", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, o->stock.quantity);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)o->stock.version);
    if (o->status == 0)
        sqlite3_bind_int64(st, 8, o->number);
    else
        sqlite3_bind_null(st, 8);
    sqlite3_bind_int64(st, 9, now_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : BZ_EIO;
}

static int stockdb__put_int(sqlite3_stmt *st, int64_t a, const char *b)
{
    sqlite3_bind_int64(st, 1, a);
    if (b)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : BZ_EIO;
}

/*
 * Forgets request ids older than the window; journal entries only once
 * committed. Returns the rows deleted, or BZ_EIO.
 */
static int stockdb__gc(struct stockdb *db, int64_t now_ms, int64_t committed)
{
    uint64_t mono = clock_now_ms();
    if (mono - db->last_gc_ms < STOCKDB__GC_EVERY && db->last_gc_ms != 0)
        return 0;
    db->last_gc_ms = mono;
    sqlite3_stmt *st = db->st_gc;
    sqlite3_bind_int64(st, 1, now_ms - db->window_ms);
    sqlite3_bind_int64(st, 2, committed < db->journal_next ? committed : db->journal_next);
    sqlite3_bind_int(st, 3, STOCKDB__GC_ROWS);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return BZ_EIO;
    int deleted = sqlite3_changes(db->sql);
    if (deleted > 0)
        LOG_DEBUG("forgot %d request ids older than %lld s", deleted,
                  (long long)(db->window_ms / 1000));
    return deleted;
}

/* A stock's quantity as of the trades of this batch so far (changes[0..k-1]). */
struct stockdb__change {
    struct stock *s;
    int64_t quantity;
    uint64_t version;
};

static int64_t stockdb__current(const struct stockdb__change *changes, size_t k,
                                const struct stock *s)
{
    for (size_t i = k; i-- > 0;)
        if (changes[i].s == s)
            return changes[i].quantity;
    return s->quantity;
}

int stockdb_execute(struct stockdb *db, const struct trade *trades, size_t n,
                    struct stockdb_outcome *out, int64_t committed)
{
    struct stockdb__change *changes = xcalloc(n ? n : 1, sizeof *changes);
    size_t k = 0, inserted = 0;
    int64_t now_ms = stockdb__wall_ms();

    pthread_mutex_lock(&db->write_lock);
    int64_t next = db->journal_next;
    uint64_t version = db->version;
    int rv = store_begin(db->sql);
    for (size_t i = 0; i < n && rv == 0; i++) {
        const struct trade *t = &trades[i];
        struct stockdb_outcome *o = &out[i];
        memset(o, 0, sizeof *o);
        o->number = -1;
        /* Only this thread writes quantities, under write_lock, so reading *s is safe. */
        struct stock *s = stockdb__find(db, t->name); /* the set of stocks never changes */
        if (!s) {
            o->status = BZ_ENOTFOUND;
            continue;
        }
        o->stock = *s;
        int found = stockdb__applied_get(db, t, o);
        if (found < 0) {
            rv = found;
            break;
        }
        if (found)
            continue; /* a repeat: its first outcome, with the stock as it was then */
        int64_t now = stockdb__current(changes, k, s);
        o->stock.quantity = now;
        if (t->type == TRADE_BUY && now < t->quantity) {
            o->status = BZ_ECONFLICT;
        } else if (t->type == TRADE_SELL && now > STOCKDB__QTY_MAX - t->quantity) {
            o->status = BZ_ECONFLICT;
        } else {
            o->stock.quantity = t->type == TRADE_BUY ? now - t->quantity : now + t->quantity;
            o->stock.version = ++version;
            o->number = next++;
            changes[k++] = (struct stockdb__change){s, o->stock.quantity, o->stock.version};
            rv = stockdb__put_int(db->st_update, o->stock.quantity, s->name);
        }
        if (rv == 0 && (rv = stockdb__applied_put(db, t, o, now_ms)) == 0)
            inserted++;
    }
    if (rv == 0 && k > 0)
        rv = stockdb__put_int(db->st_version, (int64_t)version, NULL);
    if (rv == 0 && k > 0)
        rv = stockdb__put_int(db->st_journal_next, next, NULL);
    int deleted = 0;
    if (rv == 0 && (deleted = stockdb__gc(db, now_ms, committed)) < 0)
        rv = deleted;
    if (rv == 0)
        rv = store_commit(db->sql);
    if (rv) {
        store_rollback(db->sql);
        LOG_ERROR("catalog.db: %s", sqlite3_errmsg(db->sql));
    } else {
        atomic_fetch_add(&db->applied_rows, (int64_t)inserted - deleted);
    }
    if (rv == 0 && k > 0) {
        pthread_rwlock_wrlock(&db->mem_lock);
        for (size_t i = 0; i < k; i++) {
            changes[i].s->quantity = changes[i].quantity;
            changes[i].s->version = changes[i].version;
        }
        db->version = version;
        pthread_rwlock_unlock(&db->mem_lock);
        db->journal_next = next;
    }
    pthread_mutex_unlock(&db->write_lock);
    free(changes);
    return rv;
}

const char *stockdb_refusal(const struct trade *t, int status)
{
    switch (status) {
    case BZ_ENOTFOUND:
        return "stock not found";
    case BZ_ECONFLICT:
        return t->type == TRADE_BUY ? "not enough shares" : "quantity would overflow";
    case BZ_EMISMATCH:
        return "Idempotency-Key reused with a different request";
    default:
        return bz_strerror(status);
    }
}

int stockdb_exec_reply(struct stockdb *db, const struct msg_exec *m,
                       const struct stockdb_outcome *out, struct msg_exec_reply *reply,
                       char *errmsg, size_t errlen)
{
    memset(reply, 0, sizeof *reply);
    int rv = stockdb_journal(db, m->from, MSG_MAX_ENTRIES, &reply->journal, &reply->njournal,
                             &reply->end, errmsg, errlen);
    if (rv) {
        msg_exec_reply_free(reply);
        return rv;
    }
    reply->results = xcalloc(m->n ? m->n : 1, sizeof *reply->results);
    reply->nresults = m->n;
    for (size_t i = 0; i < m->n; i++) {
        reply->results[i].code = bz_error_status(out[i].status);
        reply->results[i].number = out[i].number;
        snprintf(reply->results[i].message, sizeof reply->results[i].message, "%s",
                 stockdb_refusal(&m->trades[i], out[i].status));
    }
    return 0;
}

int stockdb_trade(struct stockdb *db, const struct trade *t, struct stock *out)
{
    struct stockdb_outcome o;
    int rv = stockdb_execute(db, t, 1, &o, 0);
    if (rv)
        return rv;
    if (o.status == 0)
        *out = o.stock;
    return o.status;
}

int stockdb_journal(struct stockdb *db, int64_t from, size_t max, struct order **out, size_t *n,
                    int64_t *end, char *errmsg, size_t errlen)
{
    *n = 0;
    *out = NULL;
    pthread_mutex_lock(&db->write_lock);
    int rv = 0;
    *end = db->journal_next;
    if (from > db->journal_next) {
        snprintf(errmsg, errlen,
                 "order log is ahead of the catalog's journal (%lld > %lld): the catalog's and "
                 "the order replicas' data do not belong together",
                 (long long)from, (long long)db->journal_next);
        rv = BZ_ESTALE;
        goto out;
    }
    if (from == db->journal_next || max == 0)
        goto out;
    if ((uint64_t)(db->journal_next - from) < max)
        max = (size_t)(db->journal_next - from);
    *out = xcalloc(max, sizeof **out);
    sqlite3_stmt *st = db->st_journal;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    int rc;
    while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct order *o = &(*out)[*n];
        o->number = sqlite3_column_int64(st, 0);
        snprintf(o->trade.request_id, sizeof o->trade.request_id, "%s",
                 (const char *)sqlite3_column_text(st, 1));
        snprintf(o->trade.name, sizeof o->trade.name, "%s",
                 (const char *)sqlite3_column_text(st, 2));
        trade_type_parse((const char *)sqlite3_column_text(st, 3), &o->trade.type);
        o->trade.quantity = sqlite3_column_int64(st, 4);
        if (o->number != from + (int64_t)*n) {
            snprintf(errmsg, errlen, "journal entry %lld is gone (kept for the retry window)",
                     (long long)(from + (int64_t)*n));
            rv = BZ_ESTALE;
            break;
        }
        (*n)++;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
out:
    pthread_mutex_unlock(&db->write_lock);
    return rv;
}

void stockdb_set_window(struct stockdb *db, int64_t window_ms)
{
    pthread_mutex_lock(&db->write_lock);
    db->window_ms = window_ms;
    db->last_gc_ms = 0;
    pthread_mutex_unlock(&db->write_lock);
}

int64_t stockdb_applied_rows(struct stockdb *db)
{
    return atomic_load(&db->applied_rows);
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
        rv = stockdb__put_int(db->st_update, to, db->stocks[i].name);
        ++version;
        changed[n] = db->stocks[i];
        changed[n].quantity = to;
        changed[n].version = version;
        n++;
    }
    if (rv == 0 && n > 0)
        rv = stockdb__put_int(db->st_version, (int64_t)version, NULL);
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
