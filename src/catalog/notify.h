/*
 * notify.h - the catalog's server-push invalidation of front-end caches.
 *
 * notify_stock_changed() only queues (never blocks on the network), so it is
 * safe to call from a request handler: a front-end worker waiting on the
 * catalog can never be what the catalog waits on.
 *
 * Every front-end ([catalog] notify, default every [frontend.N] or [frontend]
 * listen) has its own queue and sender thread, so a paused or unreachable
 * front-end delays nobody else's invalidations. Each sender numbers the
 * messages of its stream (`stream` = random id of this catalog run, `seq` =
 * 1, 2, ...) and sends a heartbeat carrying the last number when it has had
 * nothing to send for [catalog] heartbeat_ms. A message that cannot be
 * delivered after a few quick tries is dropped and its number skipped, as is
 * a queue overflow: the front-end then sees a gap (or a silence, while it is
 * unreachable) and empties its cache instead of trusting it (see
 * src/frontend/main.c and docs/design.md).
 */
#ifndef BZ_NOTIFY_H
#define BZ_NOTIFY_H

#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "stockdb.h"

struct notify;

/* Starts one sender thread per front-end. cfg must outlive it. */
int notify_start(struct notify **out, const struct bz_config *cfg);
/* Sends what is queued (bounded by the deadlines), stops the threads, frees. */
void notify_stop(struct notify *n);

void notify_stock_changed(struct notify *n, const char *name, uint64_t version);

/* Invalidations queued but not yet delivered, over every front-end. */
uint64_t notify_pending(struct notify *n);

/* [{"target","seq","pending","delivered","dropped","last_ok_ms_ago"}...]; new reference. */
json_t *notify_status_json(struct notify *n);

void notify_metrics(struct notify *n, struct strbuf *out);

#endif
