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

#include "config.h"
#include "http_client.h"

struct leader;

/* Starts the health-check thread. cfg must outlive the leader. */
int leader_start(struct leader **out, const struct bz_config *cfg);
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

/* True once a leader has been selected (the front-end reports ready from then on). */
bool leader_ever_selected(struct leader *l);

/* {"leader": id|null, "epoch": n, "replicas": [...]}; new reference. */
json_t *leader_status_json(struct leader *l);

void leader_metrics(struct leader *l, struct strbuf *out);

#endif
