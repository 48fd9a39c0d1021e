/*
 * stockdb.h - the catalog's stocks: durable in SQLite (catalog.db), served
 * from a read-mostly in-memory copy.
 *
 * Tables: stocks(name, price, quantity) as in SPEC §5; applied(request_id,
 * ...) records the outcome of every trade, in the same transaction as the
 * quantity change, so a retried request id returns the first outcome and
 * changes nothing (exactly-once across order-leader failover); meta holds
 * the catalog version, which grows with every change and stamps each stock
 * so invalidations can be ordered. The set of stocks is fixed once seeded.
 */
#ifndef BZ_STOCKDB_H
#define BZ_STOCKDB_H

#include <stddef.h>
#include <stdint.h>

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

/* Copies the i-th stock (in name order, i < stockdb_count) into *out. */
void stockdb_get_at(struct stockdb *db, size_t i, struct stock *out);

/* Copies the stock into *out. 0 or BZ_ENOTFOUND. */
int stockdb_lookup(struct stockdb *db, const char *name, struct stock *out);

/*
 * Applies a trade once per request id. On 0, *out is the stock after the
 * trade (or after the first application, for a repeat). Errors: BZ_ENOTFOUND,
 * BZ_ECONFLICT (not enough shares, or a sell would overflow), BZ_EMISMATCH
 * (request id reused for a different trade), BZ_EIO. A refused trade is
 * recorded too, so its retry is refused the same way.
 */
int stockdb_trade(struct stockdb *db, const struct trade *t, struct stock *out);

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
