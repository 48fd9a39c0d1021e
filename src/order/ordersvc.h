/*
 * ordersvc.h - the order service behind bazaar-order's HTTP routes: one
 * interface, two replication modes. Primary-backup (replica.h: the pb core
 * driven by a loop thread) and raft (raftrep.h: libraft) share the routes in
 * main.c, the SQLite order log (orderlog.h), the dedupe by request id and
 * the one catalog exchange below. main.c calls only these functions.
 */
#ifndef BZ_ORDERSVC_H
#define BZ_ORDERSVC_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "http_client.h"
#include "msg.h"
#include "orderlog.h"
#include "trade.h"
#include "util.h"

struct ordersvc;

/* Starts the mode cfg->mode names over `log` (kept open by the caller). 0 or BZ_E* + errmsg. */
int ordersvc_start(struct ordersvc **out, const struct bz_config *cfg, int id, struct orderlog *log,
                   char *errmsg, size_t errlen);
void ordersvc_stop(struct ordersvc *s);

/* /readyz: can serve now; otherwise why says why. */
bool ordersvc_ready(struct ordersvc *s, char *why, size_t whylen);

/*
 * Orders a leader holds, handed in and not yet answered, at most (64 full
 * batches, in either mode). No thread waits for an order, so nothing else
 * bounds them: more are answered at once with BZ_EUNAVAIL (503, outcome
 * known: not taken) and ORDERSVC_BUSY, and counted.
 */
#define ORDERSVC_WAITING_MAX (64 * MSG_ORDER_BATCH_MAX)
#define ORDERSVC_BUSY        "too many orders are waiting at the leader"

/* The metrics of that bound: orders waiting now, orders refused so far. */
void ordersvc_render_waiting(struct strbuf *out, uint64_t waiting, uint64_t refused);

/*
 * Orders t[0..n-1] (as leader), handed to the sequencer together, without
 * waiting: done(arg, out, n) reports every outcome once all are known, on
 * whatever thread finished them (t and out are the caller's until then).
 * out[i].status 0 with out[i].number its transaction number; BZ_ENOTLEADER
 * with out[i].leader the leader's id when known (else 0): the caller answers
 * 421 naming it. Other errors as the catalog or the log gave them, with
 * out[i].message.
 */
void ordersvc_submit_async(struct ordersvc *s, const struct trade *t, size_t n,
                           struct trade_outcome *out, trade_outcomes_fn done, void *arg);
/* A committed order by number: 0, BZ_ENOTFOUND, BZ_ENOTLEADER (+ *leader), BZ_EUNAVAIL. */
int ordersvc_query(struct ordersvc *s, int64_t number, struct order *out, int *leader);

json_t *ordersvc_state_json(struct ordersvc *s);
void ordersvc_metrics(struct ordersvc *s, struct strbuf *out);

/* Primary-backup only (BZ_EINVAL in raft mode): a leader notice, a leader's append. */
int ordersvc_notice(struct ordersvc *s, const struct msg_notice *m);
int ordersvc_append(struct ordersvc *s, const struct msg_append *m, struct msg_append_reply *reply);

/*
 * The one exchange with the catalog (POST /execute), for both modes: sends
 * the batch, decodes the reply strictly. 0 with *out filled (free it with
 * msg_exec_reply_free), or BZ_E* with errmsg set.
 */
int ordersvc_catalog_execute(const struct bz_config *cfg, const struct msg_exec *m,
                             struct msg_exec_reply *out, char *errmsg, size_t errlen);
/*
 * Its reply's half, for a driver that makes the call itself (the primary-backup
 * loop): decodes the catalog's 200 reply to m strictly. 0 with *out filled, or
 * BZ_EUPSTREAM with errmsg set. The reply stays the caller's.
 */
int ordersvc_catalog_decode(const struct msg_exec *m, const struct http_reply *reply,
                            struct msg_exec_reply *out, char *errmsg, size_t errlen);

#endif
