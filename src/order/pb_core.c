/*
 * pb_core.c - the primary-backup core's roles, leader notices, commit index,
 * waiting clients and state (see pb.h and pb_int.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "pb_int.h"

/* ---------------------------------------------------------------- the store over an orderlog */

static void pb__ol_state(void *ctx, struct orderlog_state *out)
{
    orderlog_state(ctx, out);
}

static int pb__ol_promise(void *ctx, uint64_t epoch, int leader)
{
    return orderlog_promise(ctx, epoch, leader);
}

static int pb__ol_set_log_epoch(void *ctx, uint64_t epoch)
{
    return orderlog_set_log_epoch(ctx, epoch);
}

static int pb__ol_apply(void *ctx, const struct order *entries, size_t n, int64_t stale_after,
                        uint64_t leader_epoch)
{
    return orderlog_apply(ctx, entries, n, stale_after, leader_epoch);
}

static int pb__ol_get(void *ctx, int64_t number, struct order *out)
{
    return orderlog_get(ctx, number, out);
}

static int pb__ol_find(void *ctx, const char *request_id, struct order *out)
{
    return orderlog_find_request(ctx, request_id, out);
}

static int pb__ol_read(void *ctx, int64_t from, size_t max, struct order *out, size_t *n)
{
    return orderlog_read(ctx, from, max, out, n);
}

struct pb_store pb_store_orderlog(struct orderlog *log)
{
    return (struct pb_store){.ctx = log,
                             .state = pb__ol_state,
                             .promise = pb__ol_promise,
                             .set_log_epoch = pb__ol_set_log_epoch,
                             .apply = pb__ol_apply,
                             .get = pb__ol_get,
                             .find_request = pb__ol_find,
                             .read = pb__ol_read};
}

/* ---------------------------------------------------------------- calls and replies */

void pb_call_free(struct pb_call *call)
{
    if (!call)
        return;
    pb_append_release(call->append);
    msg_exec_free(&call->exec);
    free(call);
}

struct pb_append *pb_append_retain(struct pb_append *a)
{
    atomic_fetch_add(&a->refs, 1);
    return a;
}

void pb_append_release(struct pb_append *a)
{
    if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    msg_append_free(&a->m);
    free(a->wire);
    free(a);
}

void pb_reply_free(struct pb_reply *reply)
{
    free(reply->entries);
    reply->entries = NULL;
    msg_exec_reply_free(&reply->exec);
}

uint64_t pb__now(struct pb *pb)
{
    return pb->io.now_ms(pb->io.ctx);
}

struct pb_call *pb__call_new(struct pb *pb, enum pb_call_kind kind, int peer, int timeout_ms)
{
    struct pb_call *c = xcalloc(1, sizeof *c);
    c->id = ++pb->next_call_id;
    c->kind = kind;
    c->peer = peer;
    c->timeout_ms = timeout_ms;
    return c;
}

/* ---------------------------------------------------------------- roles */

const char *pb_role_name(enum pb_role role)
{
    static const char *const names[] = {"starting", "follower", "promoting", "leader"};
    return names[role];
}

void pb__set_role(struct pb *pb, enum pb_role role)
{
    if (pb->role == role)
        return;
    LOG_INFO("role %s -> %s (epoch %llu, leader %d)", pb_role_name(pb->role), pb_role_name(role),
             (unsigned long long)pb->epoch, pb->leader_id);
    enum pb_role was = pb->role;
    pb->role = role;
    if (was == PB_LEADER || was == PB_PROMOTING) {
        /* Whatever waited on this leadership has an unknown outcome now. */
        pb__fail_all_waits(pb, BZ_EUNAVAIL, "leadership moved: outcome unknown, retry");
        pb->exec_call = 0; /* a late catalog reply is ignored; its journal comes back later */
        pb->exec_next = -1;
        pb_append_release(pb->last_append); /* its log may change now */
        pb->last_append = NULL;
    }
    pb->leader_since_ms = pb__now(pb);
    if (role == PB_LEADER) {
        pb->commit = -1;
        pb->sync_needed = true; /* complete the log from the catalog's journal first */
        pb->exec_retry_at_ms = 0;
        atomic_fetch_add(&pb->promotions, 1);
    }
}

void pb__break(struct pb *pb, const char *what, int err)
{
    if (!pb->broken)
        LOG_ERROR("%s failed (%s): out of service until restarted", what, bz_strerror(err));
    pb->broken = true;
    snprintf(pb->broken_why, sizeof pb->broken_why, "storage failed: %s (%s)", what,
             bz_strerror(err));
    if (pb->role == PB_LEADER || pb->role == PB_PROMOTING)
        pb__set_role(pb, PB_FOLLOWER);
}

int pb__adopt(struct pb *pb, uint64_t epoch, int leader)
{
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    if (epoch < st.promised)
        return BZ_ESTALE;
    char why[128];
    if (msg_check_epoch_step(st.promised, epoch, why, sizeof why) != 0) {
        /* A forged or corrupt message must not push the epoch out of reach (issue 12). */
        LOG_WARN("refused leader %d: %s", leader, why);
        return BZ_EINVAL;
    }
    if (epoch == st.promised && st.promised_leader != 0 && leader != st.promised_leader)
        return BZ_ESTALE; /* one leader per epoch, remembered across restarts */
    bool same = epoch == pb->epoch && leader == pb->leader_id && epoch == st.promised &&
                leader == st.promised_leader;
    if (!same) {
        if (pb->broken)
            return BZ_EIO; /* a replica that cannot write cannot promise */
        int rv = pb->st.promise(pb->st.ctx, epoch, leader);
        if (rv == BZ_ESTALE)
            return rv;
        if (rv) {
            pb__break(pb, "recording a promise", rv);
            return BZ_EIO;
        }
        if (epoch != pb->epoch)
            LOG_DEBUG("promised epoch %llu to replica %d", (unsigned long long)epoch, leader);
        if (epoch != pb->epoch && (pb->role == PB_LEADER || pb->role == PB_PROMOTING))
            pb__set_role(pb, PB_FOLLOWER);
        pb->epoch = epoch;
        pb->leader_id = leader;
    }
    if (leader == pb->cfg.id && pb->role != PB_LEADER && pb->role != PB_PROMOTING && !pb->broken) {
        pb__set_role(pb, PB_PROMOTING);
        pb__sync_start(pb, true, epoch);
    } else if (leader != pb->cfg.id && (pb->role == PB_LEADER || pb->role == PB_PROMOTING)) {
        pb__set_role(pb, PB_FOLLOWER);
    }
    return 0;
}

/* ---------------------------------------------------------------- commit index */

static int pb__cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Moves the commit index to the highest number a write quorum holds in this
 * epoch. A follower counts only once it holds the epoch's whole start log
 * (match >= start_last), so an entry inherited from an older epoch commits
 * only with that start log (docs/design.md).
 */
void pb__advance_commit(struct pb *pb)
{
    if (pb->role != PB_LEADER)
        return;
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    int64_t held[PB_MAX_PEERS + 1];
    int n = 0;
    held[n++] = st.last;
    for (int i = 0; i < pb->cfg.npeers; i++)
        if (pb->peers[i].epoch_seen == pb->epoch)
            held[n++] = pb->peers[i].match;
    if (n < pb->cfg.write_quorum)
        return;
    qsort(held, (size_t)n, sizeof held[0], pb__cmp_desc);
    int64_t candidate = held[pb->cfg.write_quorum - 1];
    if (candidate >= pb->start_last && candidate > pb->commit)
        pb->commit = candidate;
}

/* ---------------------------------------------------------------- waiting clients */

void pb__answer(struct pb *pb, struct pb_wait *w, int status, const char *message)
{
    struct pb_answer a = {.status = status, .number = w->number};
    if (status == 0 && w->is_query)
        status = a.status = pb->st.get(pb->st.ctx, w->number, &a.order);
    if (status)
        snprintf(a.message, sizeof a.message, "%s", message ? message : bz_strerror(status));
    else if (!w->is_query)
        atomic_fetch_add(&pb->orders_acked, 1);
    pb->io.answer(pb->io.ctx, w->token, &a);
    free(w);
}

/* Answers every commit waiter whose number is committed now. */
void pb__answer_committed(struct pb *pb)
{
    struct pb_wait **pp = &pb->committing;
    while (*pp) {
        struct pb_wait *w = *pp;
        if (pb->role == PB_LEADER && w->epoch == pb->epoch && w->number <= pb->commit) {
            *pp = w->next;
            pb__answer(pb, w, 0, NULL);
        } else {
            pp = &w->next;
        }
    }
}

void pb__expire_waits(struct pb *pb)
{
    uint64_t now = pb__now(pb);
    for (struct pb_wait **pp = &pb->committing; *pp;) {
        struct pb_wait *w = *pp;
        if (now >= w->deadline_ms) {
            *pp = w->next;
            atomic_fetch_add(&pb->commit_timeouts, 1);
            char msg[96];
            snprintf(msg, sizeof msg, "order %lld not yet on a write quorum", (long long)w->number);
            pb__answer(pb, w, BZ_EUNAVAIL, msg);
        } else {
            pp = &w->next;
        }
    }
    struct pb_wait **pp = &pb->queue;
    while (*pp) {
        struct pb_wait *w = *pp;
        if (now >= w->deadline_ms) {
            *pp = w->next;
            atomic_fetch_add(&pb->queue_timeouts, 1);
            pb__answer(pb, w, BZ_EUNAVAIL, "the catalog did not take the order in time");
        } else {
            pp = &w->next;
        }
    }
    pb->queue_tail = pp;
}

void pb__fail_all_waits(struct pb *pb, int status, const char *message)
{
    struct pb_wait *lists[2] = {pb->queue, pb->committing};
    pb->queue = pb->committing = NULL;
    pb->queue_tail = &pb->queue;
    for (int k = 0; k < 2; k++) {
        for (struct pb_wait *w = lists[k], *next; w; w = next) {
            next = w->next;
            pb__answer(pb, w, status, message);
        }
    }
    pb__fail_batch(pb, status, message);
}

void pb__fail_batch(struct pb *pb, int status, const char *message)
{
    for (size_t i = 0; i < pb->batch_n; i++)
        if (pb->batch[i])
            pb__answer(pb, pb->batch[i], status, message);
    pb->batch_n = 0;
}

/* ---------------------------------------------------------------- entry points */

struct pb *pb_new(const struct pb_config *cfg, const struct pb_io *io, const struct pb_store *store)
{
    struct pb *pb = xcalloc(1, sizeof *pb);
    pb->cfg = *cfg;
    pb->exec_next = -1;
    pb->io = *io;
    pb->st = *store;
    pb->role = PB_STARTING;
    pb->commit = -1;
    pb->start_last = -1;
    pb->catalog_ok = true;
    pb->queue_tail = &pb->queue;
    for (int i = 0; i < cfg->npeers; i++) {
        pb->peers[i].id = cfg->peer_ids[i];
        pb->peers[i].match = -1;
        pb->peers[i].reachable = true;
    }
    struct orderlog_state st;
    store->state(store->ctx, &st);
    pb->epoch = st.promised;
    pb->leader_id = st.promised_leader;
    pb__sync_start(pb, false, 0);
    return pb;
}

void pb_free(struct pb *pb)
{
    if (!pb)
        return;
    pb__fail_all_waits(pb, BZ_EUNAVAIL, "replica shutting down");
    pb_append_release(pb->last_append);
    free(pb);
}

/*
 * A replica that does not lead probes the catalog now and then, so a front-end can
 * tell which replica could lead when the leader cannot reach the catalog.
 */
static void pb__catalog_probe(struct pb *pb)
{
    uint64_t now = pb__now(pb);
    if (pb->role == PB_LEADER || pb->catalog_probe_call || now < pb->next_catalog_probe_ms)
        return;
    pb->next_catalog_probe_ms = now + PB_CATALOG_PROBE_MS;
    struct pb_call *c = pb__call_new(pb, PB_CALL_CATALOG, -1, PB_PROBE_MS);
    pb->catalog_probe_call = c->id;
    pb->io.send(pb->io.ctx, c);
}

void pb__pump(struct pb *pb)
{
    pb__catalog_probe(pb);
    pb__sync_pump(pb);
    pb__leader_pump(pb);
    pb__answer_committed(pb);
}

uint64_t pb_tick(struct pb *pb)
{
    pb__expire_waits(pb);
    pb__pump(pb);
    return pb__now(pb) + 25;
}

void pb_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply)
{
    switch (call->kind) {
    case PB_CALL_NOTICE:
    case PB_CALL_STATE:
    case PB_CALL_PAGE:
        pb__sync_on_reply(pb, call, reply);
        break;
    case PB_CALL_APPEND:
    case PB_CALL_EXECUTE:
        pb__leader_on_reply(pb, call, reply);
        break;
    case PB_CALL_CATALOG:
        if (call->id == pb->catalog_probe_call) {
            pb->catalog_probe_call = 0;
            if (pb->role != PB_LEADER)
                pb->catalog_ok = reply->err == 0;
        }
        break;
    }
    pb__pump(pb);
}

int pb_on_notice(struct pb *pb, const struct msg_notice *m)
{
    int rv = pb__adopt(pb, m->epoch, m->leader);
    pb__pump(pb);
    return rv;
}

void pb_peer_state(struct pb *pb, struct msg_peer_state *out)
{
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    *out = (struct msg_peer_state){.promised = st.promised,
                                   .promised_leader = st.promised_leader,
                                   .log_epoch = st.log_epoch,
                                   .last = st.last};
}

enum pb_role pb_role(const struct pb *pb)
{
    return pb->role;
}

uint64_t pb_epoch(const struct pb *pb)
{
    return pb->epoch;
}

/* Ready to serve: caught up, the store healthy, and as leader in touch with a quorum. */
static bool pb__ready(struct pb *pb, const char **why)
{
    if (pb->broken) {
        *why = pb->broken_why;
        return false;
    }
    if (pb->role == PB_STARTING) {
        *why = "catching up";
        return false;
    }
    if (pb->role == PB_PROMOTING && pb__now(pb) - pb->leader_since_ms >= PB_QUORUM_LOST_MS) {
        *why = "promotion cannot reach a write quorum";
        return false;
    }
    if (pb->role == PB_LEADER) {
        uint64_t now = pb__now(pb);
        int contacts = 1;
        for (int i = 0; i < pb->cfg.npeers; i++)
            contacts += pb->peers[i].epoch_seen == pb->epoch &&
                        now - pb->peers[i].last_ok_ms < PB_QUORUM_LOST_MS;
        if (contacts < pb->cfg.write_quorum && now - pb->leader_since_ms >= PB_QUORUM_LOST_MS) {
            *why = "leader without a write quorum";
            return false;
        }
    }
    *why = NULL;
    return true;
}

void pb_view_get(struct pb *pb, struct pb_view *v)
{
    memset(v, 0, sizeof *v);
    v->id = pb->cfg.id;
    v->role = pb->role;
    v->leader = pb->leader_id;
    v->epoch = pb->epoch;
    pb->st.state(pb->st.ctx, &v->log);
    v->start_last = pb->start_last;
    v->commit = pb->commit;
    const char *why;
    v->ready = pb__ready(pb, &why);
    snprintf(v->reason, sizeof v->reason, "%s", why ? why : "");
    v->catalog_ok = pb->catalog_ok;
    v->npeers = pb->cfg.npeers;
    for (int i = 0; i < pb->cfg.npeers; i++) {
        const struct pb_peer *p = &pb->peers[i];
        v->peers[i].id = p->id;
        v->peers[i].reachable = p->reachable;
        v->peers[i].current = pb->role == PB_LEADER && p->epoch_seen == pb->epoch;
        v->peers[i].match = p->match;
    }
}

json_t *pb_view_json(const struct pb_view *v)
{
    json_t *peers = json_array();
    for (int i = 0; i < v->npeers; i++)
        json_array_append_new(
            peers,
            json_pack("{s:i,s:b,s:I,s:I}", "id", v->peers[i].id, "reachable", v->peers[i].reachable,
                      "match", (json_int_t)(v->peers[i].current ? v->peers[i].match : -1), "lag",
                      (json_int_t)(v->peers[i].current ? v->log.last - v->peers[i].match : 0)));
    json_t *obj = json_pack(
        "{s:i,s:s,s:i,s:I,s:I,s:i,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:o}", "id", v->id, "role",
        pb_role_name(v->role), "leader", v->leader, "epoch", (json_int_t)v->epoch, "promised",
        (json_int_t)v->log.promised, "promised_leader", v->log.promised_leader, "log_epoch",
        (json_int_t)v->log.log_epoch, "last", (json_int_t)v->log.last, "last_epoch",
        (json_int_t)v->log.last_epoch, "start_last", (json_int_t)v->start_last, "commit",
        (json_int_t)v->commit, "ready", v->ready, "catalog_ok", v->catalog_ok, "peers", peers);
    if (!v->ready)
        json_object_set_new(obj, "reason", json_string(v->reason));
    return obj;
}

void pb_metrics(struct pb *pb, const struct pb_view *v, struct strbuf *out)
{
    metrics_render_simple(out, "bazaar_order_last_number", "gauge",
                          "Number of the last order in the local log (-1 when empty, shown as 0).",
                          v->log.last >= 0 ? (uint64_t)v->log.last : 0);
    metrics_render_simple(out, "bazaar_order_commit_number", "gauge",
                          "Highest order number on a write quorum (leader only).",
                          v->commit >= 0 ? (uint64_t)v->commit : 0);
    metrics_render_simple(out, "bazaar_order_epoch", "gauge", "Current leader epoch.", v->epoch);
    metrics_render_simple(out, "bazaar_order_is_leader", "gauge", "1 when this replica leads.",
                          v->role == PB_LEADER);
    metrics_render_simple(out, "bazaar_order_ready", "gauge", "1 when /health answers 200.",
                          v->ready);
    metrics_render_simple(out, "bazaar_order_leader_changes_total", "counter",
                          "Times this replica became leader.", atomic_load(&pb->promotions));
    metrics_render_simple(out, "bazaar_order_acked_total", "counter",
                          "Orders acknowledged as leader.", atomic_load(&pb->orders_acked));
    metrics_render_simple(out, "bazaar_order_quorum_timeouts_total", "counter",
                          "Orders or queries not committed within their deadline.",
                          atomic_load(&pb->commit_timeouts));
    metrics_render_simple(out, "bazaar_order_queue_timeouts_total", "counter",
                          "Orders that waited too long for the catalog.",
                          atomic_load(&pb->queue_timeouts));
    metrics_render_simple(out, "bazaar_order_catalog_batches_total", "counter",
                          "Exchanges with the catalog (batches of trades, journal reads).",
                          atomic_load(&pb->batches));
    metrics_render_simple(out, "bazaar_order_journal_entries_total", "counter",
                          "Journal entries appended to the log as leader.",
                          atomic_load(&pb->journal_synced));
    metrics_render_simple(out, "bazaar_order_appends_sent_total", "counter",
                          "Append messages sent as leader.", atomic_load(&pb->appends_sent));
    metrics_render_simple(out, "bazaar_order_appends_encoded_total", "counter",
                          "Append messages encoded as leader (one is sent to every follower "
                          "that needs the same entries).",
                          atomic_load(&pb->appends_encoded));
    metrics_render_simple(out, "bazaar_order_appends_received_total", "counter",
                          "Append messages received as follower.",
                          atomic_load(&pb->appends_received));
    metrics_render_simple(out, "bazaar_order_entries_applied_total", "counter",
                          "Entries written from a leader or a catch-up.",
                          atomic_load(&pb->entries_applied));
    metrics_render_header(out, "bazaar_order_replication_lag", "gauge",
                          "Orders the leader holds that a follower does not (leader only).");
    for (int i = 0; i < v->npeers; i++) {
        char labels[32];
        int64_t lag = v->peers[i].current ? v->log.last - v->peers[i].match : 0;
        snprintf(labels, sizeof labels, "peer=\"%d\"", v->peers[i].id);
        metrics_render_value(out, "bazaar_order_replication_lag", labels,
                             lag > 0 ? (uint64_t)lag : 0);
    }
}
