/*
 * leader.h - the front-end's view of the order replicas: which one leads,
 * in which epoch, and the forwarding of order calls to it.
 *
 * Selection pings replicas from the highest id down, takes the first that
 * reports ready, and announces it to every replica with an epoch one above
 * any epoch a replica has promised. Selection re-runs when a call to the
 * leader fails or a periodic health check misses. leader_forward_* retry a
 * call (with the same body, hence the same request id) across re-selections
 * until it succeeds or the failover deadline passes, so a client sees no
 * error when one replica of three dies.
 */
#ifndef BZ_LEADER_H
#define BZ_LEADER_H

#include <stdbool.h>

#include <jansson.h>

#include "batch.h"
#include "config.h"
#include "http_async.h"
#include "http_client.h"

struct leader;

/* Starts the health-check thread. cfg and a (order calls go through it) must outlive it. */
int leader_start(struct leader **out, const struct bz_config *cfg, struct http_async *a);
void leader_stop(struct leader *l);

/*
 * Sends an order (a POST /orders body with its request id) to the current
 * leader, batched with other threads' orders (batch.h), re-selecting and
 * retrying on failure. On 0, *out holds the leader's reply to this order (any
 * status but 421/503 while time remains); free it with http_reply_free.
 * BZ_EUNAVAIL when no leader could answer before the deadline.
 */
int leader_forward_order(struct leader *l, const char *body, size_t body_len,
                         struct http_reply *out);
/* The same for a GET of `path` (an order query), one call each. */
int leader_forward_query(struct leader *l, const char *path, struct http_reply *out);

/*
 * An order on the non-blocking path, for a server's event thread: one attempt
 * without a thread waiting, and only when that attempt fails, the retry loop
 * of leader_forward_order on a thread that may block.
 */
struct leader_order {
    const char *body; /* a POST /orders body with its request id; kept until the end */
    size_t body_len;
    /*
     * The first attempt ended, on the http_async loop (must not block): rv,
     * status and body (borrowed) as for batch_done_fn. If
     * leader_order_settled(rv, status), that is the answer; otherwise pass them
     * to leader_order_finish on a thread that may block.
     */
    void (*done)(struct leader_order *o, int rv, int status, json_t *body);
    /* Private. */
    struct leader *l_;
    struct batch_item item_;
    int cur_;
    uint64_t epoch_, start_ms_;
};

/* Sends o to the current leader and returns true; false (nothing sent) when none is known. */
bool leader_order_start(struct leader *l, struct leader_order *o);
/* True when an attempt's result (status when rv is 0) is the order's answer, not a failure. */
bool leader_order_settled(int rv, int status);
/*
 * After a first attempt that did not settle (rv, and status and body when rv
 * is 0): goes on as leader_forward_order would have after it (re-selection,
 * retries with the same body, the same failover deadline counted from the
 * start), and returns as it does.
 */
int leader_order_finish(struct leader_order *o, int rv, int status, const json_t *body,
                        struct http_reply *out);

/* True once a leader has been selected (the front-end reports ready from then on). */
bool leader_ever_selected(struct leader *l);

/* {"leader": id|null, "epoch": n, "replicas": [...]}; new reference. */
json_t *leader_status_json(struct leader *l);

void leader_metrics(struct leader *l, struct strbuf *out);

#endif
