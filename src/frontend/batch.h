/*
 * batch.h - order batches: the front-end's concurrent orders to one replica
 * share HTTP calls (POST /orders/batch) instead of one call each.
 *
 * No thread of its own and no timer: an order is queued, and while fewer than
 * BATCH_CALLS_MAX calls to the replica are in flight, whoever queued it takes
 * everything queued (up to MSG_ORDER_BATCH_MAX orders) into one call on the
 * front-end's http_async loop. When a call ends, the loop thread hands each
 * order its own reply and sends what queued meanwhile. One client alone thus
 * calls the leader at once; under load, calls carry many orders each
 * (docs/design.md, "Order batches").
 *
 * Each order's reply is exactly what POST /orders would have answered; a
 * failed call fails every order it carried, like a failed single call (the
 * caller retries with the same request id).
 */
#ifndef BZ_BATCH_H
#define BZ_BATCH_H

#include <stddef.h>

#include <jansson.h>

#include "http_async.h"
#include "http_client.h"
#include "metrics.h"
#include "util.h"

#define BATCH_CALLS_MAX 4 /* calls in flight per replica */

struct batch;
struct batch_item;

/*
 * How an order's call ended, exactly once per batch_submit: rv is 0 with this
 * order's own reply, its status and its body as parsed JSON (borrowed: valid
 * during the call; NULL when a whole-call reply was not JSON), or BZ_EUNAVAIL
 * / BZ_ETIMEDOUT / BZ_EUPSTREAM (a reply that does not decode). Runs on the
 * http_async loop thread (or on the submitting thread when no call could be
 * started); must not block.
 */
typedef void (*batch_done_fn)(struct batch_item *it, int rv, int status, json_t *body);

/* One order; the caller's memory, untouched by the batcher once done has run. */
struct batch_item {
    const char *body; /* a POST /orders body with its request id; kept until done */
    size_t len;
    int timeout_ms;
    batch_done_fn done;
    struct batch_item *next_; /* private: the queue */
};

/* A batcher for the replica at base_url ("http://host:port"), calling through a. */
struct batch *batch_new(const char *base_url, const char *secret, struct http_async *a);
/* Call only once no order is queued or in flight. NULL is a no-op. */
void batch_free(struct batch *b);

/* Queues it (body, len, timeout_ms and done set) and returns at once. */
void batch_submit(struct batch *b, struct batch_item *it);

/*
 * batch_submit, then waits for the order's reply. Returns like
 * http_client_request: 0 with *out this order's own reply (free it with
 * http_reply_free), or BZ_EUNAVAIL / BZ_ETIMEDOUT / BZ_EUPSTREAM.
 */
int batch_call(struct batch *b, const char *body, size_t body_len, int timeout_ms,
               struct http_reply *out);

/* Calls made, orders carried; for /metrics. */
void batch_counts(struct batch *b, uint64_t *calls, uint64_t *orders);

#endif
