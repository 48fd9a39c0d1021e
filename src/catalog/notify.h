/*
 * notify.h - the catalog's server-push invalidation of front-end caches.
 *
 * notify_stock_changed() only queues (never blocks on the network), so it is
 * safe to call from a request handler: a front-end worker waiting on the
 * catalog can never be what the catalog waits on. One dedicated thread
 * drains the queue, coalesces repeated names, and POSTs /invalidate to every
 * front-end ([catalog] notify, default [frontend] listen) with a deadline and
 * a few quick retries. If the queue overflows,
 * the thread invalidates every stock instead of losing a change.
 */
#ifndef BZ_NOTIFY_H
#define BZ_NOTIFY_H

#include <stdint.h>

#include "config.h"
#include "stockdb.h"

struct notify;

/* Starts the push thread. cfg and db must outlive it. */
int notify_start(struct notify **out, const struct bz_config *cfg, struct stockdb *db);
/* Sends what is queued (bounded by the deadlines), stops the thread, frees. */
void notify_stop(struct notify *n);

void notify_stock_changed(struct notify *n, const char *name, uint64_t version);

void notify_metrics(struct notify *n, struct strbuf *out);

#endif
