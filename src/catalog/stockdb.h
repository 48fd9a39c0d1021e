/*
 * stockdb.h - the catalog's stocks: durable in SQLite (catalog.db), served
 * from a read-mostly in-memory copy.
 *
 * Tables: stocks(name, price, quantity) as in SPEC §5; applied(request_id,
 * ..., number) records the outcome of every trade in the same transaction
 * as the quantity change, so a retried request id returns the first outcome
 * and changes nothing (exactly-once across order-leader failover). Applied
 * trades also get a transaction number there: the rows with a number are
 * the journal, the catalog's execution order, which the order leader copies
 * into the replicated order log (docs/design.md, "Ledger order"). meta holds
 * the catalog version, which grows with every change and stamps each stock
 * so invalidations can be ordered, and the next journal number. The set of
 * stocks is fixed once seeded.
 */
#ifndef BZ_STOCKDB_H
#define BZ_STOCKDB_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "trade.h"
#include "util.h"

struct stock {
    char name[STOCK_NAME_MAX + 1];
    double price;
    int64_t quantity;
    uint64_t version; /* catalog version of this stock's last change */
};

struct stockdb;

/*
 * Opens path; when the database is new, seeds it from the CSV at seed_csv
 * (header line name,price,quantity). 0, or BZ_EIO / BZ_EINVAL with errmsg.
 */
int stockdb_open(struct stockdb **out, const char *path, const char *seed_csv, char *errmsg,
                 size_t errlen);
void stockdb_close(struct stockdb *db);

size_t stockdb_count(const struct stockdb *db);

/* The position of a stock in name order (for stockdb_get_at), or BZ_ENOTFOUND. The set of
 * stocks never changes, so a position stays valid as long as db. */
int stockdb_index(struct stockdb *db, const char *name, size_t *index);

/* Copies the i-th stock (in name order, i < stockdb_count) into *out. */
void stockdb_get_at(struct stockdb *db, size_t i, struct stock *out);

/* Copies the stock into *out. 0 or BZ_ENOTFOUND. */
int stockdb_lookup(struct stockdb *db, const char *name, struct stock *out);

/*
 * The outcome of one trade of a batch. status 0: applied, `number` is its
 * transaction number (its position in the journal) and `stock` the stock
 * after it (after the first application, for a repeated request id).
 * Otherwise BZ_ENOTFOUND, BZ_ECONFLICT (not enough shares, or a sell would
 * overflow) or BZ_EMISMATCH (request id reused for a different trade).
 */
struct stockdb_outcome {
    int status;
    int64_t number;
    struct stock stock;
};

/*
 * Executes trades[0..n-1] in this order, in one transaction (one fsync),
 * once per request id: a repeated id gets its first outcome and changes
 * nothing. Every applied trade is appended to the journal with the next
 * transaction number, so numbers are the order of execution, gap-free from 0;
 * a refused trade is recorded (its retry is refused the same way) but takes
 * no number. Returns 0 with out[i] set for each trade, or BZ_EIO (nothing
 * applied). `committed`: every journal entry below it is in a majority of
 * the order replicas' logs, so it may be forgotten once past the window.
 */
int stockdb_execute(struct stockdb *db, const struct trade *trades, size_t n,
                    struct stockdb_outcome *out, int64_t committed);

/* The message a client gets for a refused trade (status from stockdb_outcome). */
const char *stockdb_refusal(const struct trade *t, int status);

/*
 * The reply to the order leader's exchange (POST /execute) whose trades m->trades were
 * executed with outcomes out[0..m->n-1]: each outcome, and the journal from m->from.
 * On 0 *reply is filled (free with msg_exec_reply_free); else the stockdb_journal error
 * with errmsg, and nothing to free.
 */
int stockdb_exec_reply(struct stockdb *db, const struct msg_exec *m,
                       const struct stockdb_outcome *out, struct msg_exec_reply *reply,
                       char *errmsg, size_t errlen);

/* One trade: stockdb_execute with n = 1, returning its status. */
int stockdb_trade(struct stockdb *db, const struct trade *t, struct stock *out);

/*
 * Up to `max` journal entries from number `from` on (epoch 0) into *out, an
 * array allocated for exactly as many as the journal holds there (the caller
 * frees it; NULL when none); *n receives how many and *end the next number
 * the journal will give.
 * BZ_ESTALE with errmsg when `from` is past the end (the order log holds
 * trades this catalog never executed: the data directories do not belong
 * together) or before the oldest entry kept. 0 or BZ_EIO.
 */
int stockdb_journal(struct stockdb *db, int64_t from, size_t max, struct order **out, size_t *n,
                    int64_t *end, char *errmsg, size_t errlen);

/* How long request ids are remembered (default 24 h): the retry window of a client. */
void stockdb_set_window(struct stockdb *db, int64_t window_ms);

/* Rows in the applied table (request ids remembered), for metrics and tests. */
int64_t stockdb_applied_rows(struct stockdb *db);

/*
 * Refills every stock whose quantity is 0 to `to`, in one transaction, and
 * calls cb for each refilled stock after the commit. Returns the number
 * refilled or BZ_EIO.
 */
typedef void (*stockdb_changed_cb)(void *arg, const struct stock *s);
int stockdb_restock(struct stockdb *db, int64_t to, stockdb_changed_cb cb, void *arg);

/* The catalog-wide version (the highest stock version). */
uint64_t stockdb_version(struct stockdb *db);

#endif
