/*
 * pb_leader.c - the leader's side: one pipeline per follower (appends in
 * order, a heartbeat when idle, stepping back on a mismatch), the sequencer
 * (batches of trades to the catalog, the journal it returns appended to the
 * log: docs/design.md, "Ledger order"), and orders and queries answered once
 * committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "pb_int.h"

/* ---------------------------------------------------------------- pipelines */

struct pb_append *pb__append_new(struct pb *pb, struct msg_append *m)
{
    struct pb_append *a = xcalloc(1, sizeof *a);
    atomic_init(&a->refs, 1);
    a->m = *m;
    m->entries = NULL;
    m->n = 0;
    atomic_fetch_add(&pb->appends_encoded, 1);
    int rv = msg_append_encode(&a->m, &a->wire, &a->wire_len);
    if (rv) {
        pb_append_release(a);
        pb__break(pb, "encoding an append", rv);
        return NULL;
    }
    return a;
}

/* Sends `a` (a new reference) to peer `index`. */
static void pb__pipeline_start(struct pb *pb, struct pb_peer *p, int index, struct pb_append *a,
                               uint64_t now)
{
    struct pb_call *c = pb__call_new(pb, PB_CALL_APPEND, index, pb->cfg.call_timeout_ms);
    c->append = pb_append_retain(a);
    atomic_fetch_add(&pb->appends_sent, 1);
    p->append_call = c->id;
    p->last_sent_ms = now;
    pb->io.send(pb->io.ctx, c);
}

/* Makes `a` (the caller's reference moves here) the append that the next follower may reuse. */
static void pb__append_keep(struct pb *pb, struct pb_append *a)
{
    pb_append_release(pb->last_append);
    pb->last_append = a;
}

static void pb__pipeline_send(struct pb *pb, struct pb_peer *p, int index, uint64_t now)
{
    /* As many as the log holds past next (none: a heartbeat), at most a batch. */
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    size_t max = st.last >= p->next ? (size_t)(st.last - p->next + 1) : 0;
    if (max > PB_APPEND_BATCH)
        max = PB_APPEND_BATCH;
    struct pb_append *kept = pb->last_append;
    if (kept && kept->m.epoch == pb->epoch && kept->m.prev == p->next - 1 && kept->m.n == max) {
        pb__pipeline_start(pb, p, index, kept, now); /* the same bytes another follower got */
        return;
    }
    struct msg_append m = {.epoch = pb->epoch,
                           .leader = pb->cfg.id,
                           .prev = p->next - 1,
                           .start_last = pb->start_last};
    if (m.prev >= 0) {
        struct order prev;
        int err = pb->st.get(pb->st.ctx, m.prev, &prev);
        if (err) {
            /* next is never past our log's end + 1: only a broken store gets here */
            pb__break(pb, "reading the log", err);
            return;
        }
        m.prev_epoch = prev.epoch;
    }
    m.entries = xcalloc(max ? max : 1, sizeof *m.entries);
    if (max && pb->st.read(pb->st.ctx, p->next, max, m.entries, &m.n) != 0) {
        free(m.entries);
        pb__break(pb, "reading the log", BZ_EIO);
        return;
    }
    struct pb_append *a = pb__append_new(pb, &m);
    if (!a)
        return;
    pb__pipeline_start(pb, p, index, a, now);
    pb__append_keep(pb, a);
}

/*
 * Sends entries the leader is about to write, straight from the catalog's
 * reply, to every follower whose pipeline is idle and caught up to them: the
 * followers' writes then overlap the leader's own (docs/design.md, "The
 * leader's own write"). The leader counts itself towards a quorum only once
 * its own write is done (pb__advance_commit reads its log), and every entry is
 * the catalog's journal entry at its number, so a follower holding entries
 * its leader failed to write holds nothing another leader could contradict.
 * The append is encoded once, for all of them.
 */
static void pb__pipeline_push(struct pb *pb, const struct order *entries, size_t n, int64_t from,
                              uint64_t now)
{
    if (n == 0 || n > PB_APPEND_BATCH)
        return; /* large pages go the ordinary way, from the log */
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    if (st.last != from - 1)
        return;
    struct pb_append *a = NULL;
    for (int i = 0; i < pb->cfg.npeers; i++) {
        struct pb_peer *p = &pb->peers[i];
        if (p->epoch_seen != pb->epoch || p->append_call || now < p->retry_at_ms || p->next != from)
            continue;
        if (!a) {
            struct msg_append m = {.epoch = pb->epoch,
                                   .leader = pb->cfg.id,
                                   .prev = from - 1,
                                   .prev_epoch = from > 0 ? st.last_epoch : 0,
                                   .start_last = pb->start_last,
                                   .n = n};
            m.entries = xcalloc(n, sizeof *entries);
            memcpy(m.entries, entries, n * sizeof *entries);
            if (!(a = pb__append_new(pb, &m)))
                return;
        }
        pb__pipeline_start(pb, p, i, a, now);
    }
    if (a)
        pb__append_keep(pb, a);
}

static void pb__pipelines(struct pb *pb, uint64_t now)
{
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    for (int i = 0; i < pb->cfg.npeers && pb->role == PB_LEADER; i++) {
        struct pb_peer *p = &pb->peers[i];
        if (p->epoch_seen != pb->epoch) {
            p->epoch_seen = pb->epoch;
            p->next = pb->start_last + 1;
            p->match = -1;
            p->append_call = 0;
            p->retry_at_ms = 0;
            p->last_sent_ms = 0;
            p->last_ok_ms = 0;
        }
        if (p->append_call || now < p->retry_at_ms)
            continue;
        if (st.last >= p->next || now - p->last_sent_ms >= PB_HEARTBEAT_MS)
            pb__pipeline_send(pb, p, i, now);
    }
}

static void pb__pipeline_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply)
{
    struct pb_peer *p = &pb->peers[call->peer];
    if (call->id != p->append_call)
        return; /* a duplicate, or from before an epoch change */
    p->append_call = 0;
    if (pb->role != PB_LEADER || call->append->m.epoch != pb->epoch)
        return;
    uint64_t now = pb__now(pb);
    if (reply->err == BZ_ESTALE) {
        LOG_WARN("replica %d knows a newer epoch than %llu: stepping down", p->id,
                 (unsigned long long)pb->epoch);
        pb__set_role(pb, PB_FOLLOWER);
        return;
    }
    if (reply->err) {
        if (p->reachable && reply->err == BZ_EUNAVAIL)
            LOG_INFO("replica %d is catching up: appends wait until it has", p->id);
        else if (p->reachable)
            LOG_WARN("replica %d unreachable: %s", p->id, bz_strerror(reply->err));
        p->reachable = false;
        p->retry_at_ms = now + PB_RETRY_MS;
        return;
    }
    if (!p->reachable)
        LOG_INFO("replica %d reachable again", p->id);
    p->reachable = true;
    p->last_ok_ms = now;
    if (reply->ok) {
        if (reply->match > p->match)
            p->match = reply->match;
        p->next = reply->match + 1;
        pb__advance_commit(pb);
    } else {
        /* Step back past the mismatch; re-sending entries it has is harmless. */
        int64_t back = call->append->m.prev - PB_BACKOFF + 1;
        p->next = reply->last + 1 < back ? reply->last + 1 : back;
        if (p->next < 0)
            p->next = 0;
        struct orderlog_state st;
        pb->st.state(pb->st.ctx, &st);
        if (p->next > st.last + 1)
            p->next = st.last + 1;
    }
}

/* ---------------------------------------------------------------- the sequencer */

/* True when at least n orders wait for the sequencer (counts no further than n). */
static bool pb__queue_at_least(const struct pb *pb, size_t n)
{
    size_t k = 0;
    for (const struct pb_wait *w = pb->queue; w && k < n; w = w->next)
        k++;
    return k >= n;
}

static void pb__sequencer(struct pb *pb, uint64_t now)
{
    if (pb->role != PB_LEADER || pb->exec_call || now < pb->exec_retry_at_ms)
        return;
    if (!pb->queue && !pb->sync_needed && now - pb->last_exec_ms < PB_IDLE_SYNC_MS)
        return;
    size_t n = 0;
    while (pb->queue && n < MSG_MAX_ENTRIES) {
        pb->batch[n] = pb->queue;
        pb->queue = pb->queue->next;
        pb->batch[n]->next = NULL;
        n++;
    }
    if (!pb->queue)
        pb->queue_tail = &pb->queue;
    pb->batch_n = n;

    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    struct pb_call *c = pb__call_new(pb, PB_CALL_EXECUTE, -1, pb->cfg.call_timeout_ms);
    c->exec.from = pb->exec_next > st.last ? pb->exec_next : st.last + 1;
    c->exec.committed = pb->commit + 1;
    c->exec.n = n;
    c->exec.trades = xcalloc(n ? n : 1, sizeof *c->exec.trades);
    for (size_t i = 0; i < n; i++)
        c->exec.trades[i] = pb->batch[i]->trade;
    pb->exec_call = c->id;
    pb->exec_epoch = pb->epoch;
    pb->last_exec_ms = now;
    atomic_fetch_add(&pb->batches, 1);
    pb->io.send(pb->io.ctx, c);
}

static void pb__sequencer_on_reply(struct pb *pb, const struct pb_call *call,
                                   struct pb_reply *reply)
{
    if (call->id != pb->exec_call)
        return; /* from before a role change: its waiters were answered then */
    pb->exec_call = 0;
    uint64_t now = pb__now(pb);
    if (pb->role != PB_LEADER || pb->epoch != pb->exec_epoch) {
        pb__fail_batch(pb, BZ_EUNAVAIL, "leadership moved: outcome unknown, retry");
        return;
    }
    if (reply->err) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "catalog call failed (%s): outcome unknown, retry with the same Idempotency-Key",
                 bz_strerror(reply->err));
        if (pb->catalog_ok)
            LOG_WARN("catalog exchange failed (%s): retrying every %d ms", bz_strerror(reply->err),
                     PB_RETRY_MS);
        pb->catalog_ok = false;
        pb->sync_needed = true;
        pb->exec_next = -1;
        pb->exec_retry_at_ms = now + PB_RETRY_MS;
        pb__fail_batch(pb, reply->err == BZ_ETIMEDOUT ? BZ_ETIMEDOUT : BZ_EUPSTREAM, msg);
        return;
    }
    if (!pb->catalog_ok)
        LOG_INFO("catalog reachable again");
    pb->catalog_ok = true;
    struct msg_exec_reply *x = &reply->exec;
    for (size_t i = 0; i < x->njournal; i++)
        x->journal[i].epoch = pb->epoch;
    pb__pipeline_push(pb, x->journal, x->njournal, call->exec.from, now);
    pb->sync_needed = x->end > call->exec.from + (int64_t)x->njournal;
    for (size_t i = 0; i < pb->batch_n; i++) {
        struct pb_wait *w = pb->batch[i];
        const struct msg_exec_result *res = &x->results[i];
        if (res->code != 200) {
            pb__answer(pb, w, msg_exec_refusal(res->code), res->message);
            continue;
        }
        w->number = res->number;
        w->epoch = pb->epoch;
        w->deadline_ms = now + (uint64_t)pb->cfg.call_timeout_ms;
        w->next = pb->committing;
        pb->committing = w;
    }
    size_t batch_n = pb->batch_n;
    pb->batch_n = 0;
    /* With a full batch waiting, the next exchange starts now, before our own write of this
     * page: the catalog executes it while we write (docs/design.md, "The leader's own
     * write"). A small one waits for the write, and grows meanwhile. */
    pb->exec_next = call->exec.from + (int64_t)x->njournal;
    if (pb__queue_at_least(pb, PB_PIPELINE_MIN))
        pb__sequencer(pb, now);
    if (x->njournal > 0) {
        int rv = pb->st.apply(pb->st.ctx, x->journal, x->njournal, INT64_MAX, pb->epoch);
        if (rv) {
            LOG_ERROR("appending journal %lld..%lld: %s", (long long)call->exec.from,
                      (long long)(call->exec.from + (int64_t)x->njournal - 1), bz_strerror(rv));
            /* The exchange begun above reads past a page we do not hold: drop it, and start
             * again from our log's end. Its orders' outcome is unknown. */
            pb->exec_call = 0;
            pb->exec_next = -1;
            pb->sync_needed = true;
            pb__fail_batch(pb, BZ_EIO, "order log write failed: outcome unknown, retry");
            if (rv == BZ_EIO)
                pb__break(pb, "appending to the log", rv);
            return;
        }
        atomic_fetch_add(&pb->journal_synced, x->njournal);
        if (batch_n == 0)
            LOG_INFO("logged %zu trades from the catalog's journal: %lld..%lld", x->njournal,
                     (long long)call->exec.from,
                     (long long)(call->exec.from + (int64_t)x->njournal - 1));
    }
    pb__advance_commit(pb);
}

/* ---------------------------------------------------------------- entry points */

void pb__leader_pump(struct pb *pb)
{
    if (pb->role != PB_LEADER)
        return;
    uint64_t now = pb__now(pb);
    pb__pipelines(pb, now);
    pb__sequencer(pb, now);
}

void pb__leader_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply)
{
    if (call->kind == PB_CALL_APPEND)
        pb__pipeline_on_reply(pb, call, reply);
    else
        pb__sequencer_on_reply(pb, call, reply);
}

/* A new waiter, or an immediate answer when this replica cannot take the request. */
static struct pb_wait *pb__wait_new(struct pb *pb, void *token, bool is_query)
{
    struct pb_wait *w = xcalloc(1, sizeof *w);
    w->token = token;
    w->is_query = is_query;
    w->epoch = pb->epoch;
    if (pb->role == PB_LEADER)
        return w;
    char msg[64];
    int status = pb->role == PB_PROMOTING ? BZ_EUNAVAIL : BZ_ENOTLEADER;
    snprintf(msg, sizeof msg,
             pb->role == PB_PROMOTING ? "leader is still taking over"
                                      : "replica %d is not the leader",
             pb->cfg.id);
    pb__answer(pb, w, status, msg);
    return NULL;
}

/* Waits for `number` to be committed in this epoch, at most timeout_ms. */
static void pb__await_commit(struct pb *pb, struct pb_wait *w, int64_t number, int timeout_ms)
{
    w->number = number;
    w->deadline_ms = pb__now(pb) + (uint64_t)timeout_ms;
    w->next = pb->committing;
    pb->committing = w;
    pb__answer_committed(pb);
}

void pb_submit(struct pb *pb, const struct trade *t, size_t n, void *const *tokens)
{
    bool queued = false;
    for (size_t i = 0; i < n; i++) {
        struct pb_wait *w = pb__wait_new(pb, tokens[i], false);
        if (!w)
            continue;
        w->trade = t[i];
        /* A retry of an order we already hold: answer it once committed, never re-apply. */
        struct order o;
        int rv = pb->st.find_request(pb->st.ctx, t[i].request_id, &o);
        if (rv == 0 && !trade_same(&o.trade, &t[i])) {
            pb__answer(pb, w, BZ_EMISMATCH, "Idempotency-Key reused with a different request");
        } else if (rv == 0) {
            pb__await_commit(pb, w, o.number, pb->cfg.call_timeout_ms);
        } else if (rv == BZ_ENOTFOUND) {
            w->deadline_ms = pb__now(pb) + (uint64_t)pb->cfg.call_timeout_ms;
            *pb->queue_tail = w;
            pb->queue_tail = &w->next;
            queued = true;
        } else {
            pb__answer(pb, w, rv, "order log unreadable");
        }
    }
    if (queued)
        pb__sequencer(pb, pb__now(pb));
}

void pb_query(struct pb *pb, int64_t number, void *token)
{
    struct pb_wait *w = pb__wait_new(pb, token, true);
    if (!w)
        return;
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    if (number > st.last) {
        w->number = number;
        pb__answer(pb, w, BZ_ENOTFOUND, "order not found");
        return;
    }
    /* Only committed entries are served (docs/design.md, "Committed reads"). */
    pb__await_commit(pb, w, number, pb->cfg.call_timeout_ms / 2);
}
