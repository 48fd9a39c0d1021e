/*
 * replica.h - one order replica in primary-backup replication: the protocol
 * core (pb.h) driven by a loop thread, HTTP calls and the SQLite order log.
 *
 * Roles: starting (catching up after a restart; not ready), follower,
 * promoting (named leader; collecting the newest log from a write quorum
 * before taking trades) and leader. The front-end names the leader and the
 * epoch (replica_notice); the leader sends trades to the catalog in batches,
 * logs the catalog's journal, streams it to each follower in order, and
 * acknowledges an order once a write quorum holds it durably. Followers
 * accept only in-order appends from the current epoch.
 *
 * The protocol and why it never loses or changes an acknowledged order are
 * written down in docs/design.md. This module owns threads; main.c only maps
 * HTTP routes onto these calls.
 */
#ifndef BZ_REPLICA_H
#define BZ_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "orderlog.h"
#include "msg.h"

struct replica;

/* Starts the replica's threads (catch-up first). cfg and log must outlive it. */
int replica_start(struct replica **out, const struct bz_config *cfg, int id, struct orderlog *log);
/* Stops the threads and frees the replica (not the log). */
void replica_stop(struct replica *r);

/* Ready for /health: caught up, storage healthy, a leader in touch with a quorum. */
bool replica_ready(struct replica *r, char *why, size_t whylen);

/* A leader notice. 0, or BZ_ESTALE when the epoch is older than promised. */
int replica_notice(struct replica *r, const struct msg_notice *m);

/*
 * The leader path for orders t[0..n-1], handed to the core together, without
 * waiting: queues them for the replica's loop thread and returns at once.
 * done(arg, out, n) reports every outcome once all are known (t and out are
 * the caller's until then): out[i].status is 0 (with its transaction number)
 * or BZ_ENOTLEADER, BZ_EUNAVAIL (promoting, quorum not reached in time, or
 * too many orders waiting: outcome unknown, retry with the same request id),
 * BZ_EUPSTREAM / BZ_ETIMEDOUT (catalog unreachable), BZ_ENOTFOUND,
 * BZ_ECONFLICT, BZ_EMISMATCH from the catalog or the dedupe check, with a
 * message.
 */
void replica_submit_async(struct replica *r, const struct trade *t, size_t n,
                          struct trade_outcome *out, trade_outcomes_fn done, void *arg);

/* An order by number, answered by the leader only. 0, BZ_ENOTLEADER, BZ_ENOTFOUND. */
int replica_query(struct replica *r, int64_t number, struct order *out, int *leader);

/* A follower's handling of an append; *reply is what to send (200). 0 or BZ_ESTALE. */
int replica_append(struct replica *r, const struct msg_append *m, struct msg_append_reply *reply);

/* {"id","role","leader","epoch","promised","log_epoch","last","last_epoch",...}; new ref. */
json_t *replica_state_json(struct replica *r);

void replica_metrics(struct replica *r, struct strbuf *out);

#endif
