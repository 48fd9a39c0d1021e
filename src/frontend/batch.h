/*
 * batch.h - order batches: the front-end's concurrent orders to one replica
 * share HTTP calls (POST /orders/batch) instead of one call each.
 *
 * No thread of its own: a thread with an order to send queues it, and while
 * fewer than BATCH_CALLS_MAX calls are in flight it takes everything queued
 * (up to MSG_ORDER_BATCH_MAX orders) and performs the call itself, then hands
 * each order its own reply. When a call ends and orders are still queued, it
 * wakes the first one's thread to send the next batch. One client alone thus
 * calls the leader directly, with no hand-off; under load, calls carry many
 * orders each (docs/design.md, "Order batches").
 *
 * Each order's reply is exactly what POST /orders would have answered; a
 * failed call fails every order it carried, like a failed single call (the
 * caller retries with the same request id).
 */
#ifndef BZ_BATCH_H
#define BZ_BATCH_H

#include <stddef.h>

#include "http_client.h"
#include "metrics.h"
#include "util.h"

#define BATCH_CALLS_MAX 4 /* calls in flight per replica */

struct batch;

/* A batcher for the replica at base_url ("http://host:port"); secret as for internal routes. */
struct batch *batch_new(const char *base_url, const char *secret);
/* Call only once no thread is in batch_call. NULL is a no-op. */
void batch_free(struct batch *b);

/*
 * Sends one order (a POST /orders body with its request id) with whatever
 * else is queued, and waits for its reply. Returns like http_client_request:
 * 0 with *out this order's own reply (free it with http_reply_free), or
 * BZ_EUNAVAIL / BZ_ETIMEDOUT / BZ_EUPSTREAM (a reply that does not decode)
 * when the call failed.
 */
int batch_call(struct batch *b, const char *body, size_t body_len, int timeout_ms,
               struct http_reply *out);

/* Calls made, orders carried; for /metrics. */
void batch_counts(struct batch *b, uint64_t *calls, uint64_t *orders);

#endif
