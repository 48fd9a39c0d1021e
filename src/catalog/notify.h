/*
 * notify.h - the catalog's server-push invalidation of front-end caches.
 *
 * notify_stock_changed() and notify_flush() never block on the network, so they
 * are safe to call from a request handler: a front-end worker waiting on the
 * catalog can never be what the catalog waits on.
 *
 * Every front-end ([catalog] notify, default every [frontend.N] or [frontend]
 * listen) has its own queue and at most one message on its way, sent on a
 * non-blocking client (http_async) with a deadline, so a paused or unreachable
 * front-end delays nobody else's invalidations. A change leaves at once when
 * nothing is on its way to that front-end; otherwise it waits, coalesced, for
 * the end of the message in flight. One timer thread makes the tries that
 * come after a pause: retries, heartbeats. The messages to each front-end
 * are numbered (`stream` = random id of this catalog run, `seq` = 1, 2, ...),
 * and a heartbeat carrying the last number goes out when there has been
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

/* Starts the timer thread and the client. cfg must outlive it. */
int notify_start(struct notify **out, const struct bz_config *cfg);
/* Sends what is queued (bounded by the deadlines), stops the threads, frees. */
void notify_stop(struct notify *n);

/* Queues a change for every front-end; notify_flush sends it. Never blocks on the network. */
void notify_stock_changed(struct notify *n, const char *name, uint64_t version);
/*
 * Starts a message to every front-end that has changes queued and nothing on its way (the
 * others get theirs when the message in flight ends). Call it after queueing a request's
 * changes, so that they travel together. Without it they leave within a heartbeat.
 */
void notify_flush(struct notify *n);

/* Invalidations queued but not yet delivered, over every front-end. */
uint64_t notify_pending(struct notify *n);

/* [{"target","seq","pending","delivered","dropped","last_ok_ms_ago"}...]; new reference. */
json_t *notify_status_json(struct notify *n);

void notify_metrics(struct notify *n, struct strbuf *out);

#endif
