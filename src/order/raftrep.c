/*
 * raftrep.c - the order service in raft mode: the ledger's trade path (the
 * catalog's journal copied into the order log) with the durable step going
 * through libraft (raftnode.h) instead of the primary-backup append.
 *
 * A sequencer thread, while this node is the ready Raft leader, sends the
 * trades that wait to the catalog as one batch with its cursor (the next
 * journal number its table lacks), proposes the journal page it gets back as
 * one Raft entry and answers each trade once the page is applied here (which
 * in Raft means committed). Reads are served from the table, which holds only
 * applied, hence committed, entries; a number past its end is looked up again
 * after a barrier, so an order acknowledged by an earlier leader is never
 * missed. The argument is in docs/design.md, "Raft mode".
 */
#include "raftrep.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "ordersvc.h"
#include "raftnode.h"

#define RAFTREP__IDLE_SYNC_MS 500 /* an idle leader still reads the catalog's journal */
#define RAFTREP__RETRY_MS     100
#define RAFTREP__PROPOSALS    4 /* journal pages proposed and not yet applied, at most */

/* Trades handed in together (raftrep_submit_async), answered together once each has its outcome. */
struct raftrep__group {
    size_t n, pending;         /* pending: guarded by raftrep.lock */
    struct trade_outcome *out; /* the caller's, until done */
    trade_outcomes_fn done;
    void *arg;
    struct raftrep__wait *waits;
    struct raftrep__group *next; /* raftrep.answered */
};

/* A trade waiting for the sequencer; owned by its group. */
struct raftrep__wait {
    struct raftrep__group *group;
    struct trade trade;
    struct trade_outcome *out; /* where its answer goes */
    int64_t number;            /* the catalog's number for it, once it executed */
    int lookup;                /* raftrep__take_incoming: its request id in the table? */
    struct raftrep__wait *next;
};

struct raftrep {
    const struct bz_config *cfg;
    int id;
    struct orderlog *log;
    struct raftnode *node;

    pthread_mutex_t lock; /* the queues, the waiters and the fields below */
    pthread_cond_t cond;  /* the sequencer's: a trade handed in, a proposal done, stopping */
    struct raftrep__wait *incoming, **incoming_tail; /* handed in, not yet looked up */
    struct raftrep__wait *queue, **queue_tail;       /* for the next exchange */
    struct raftrep__group *answered;                 /* groups to finish (raftrep__unlock) */
    size_t waiting;                                  /* trades handed in, not yet answered */
    uint64_t refused;                                /* for ORDERSVC_WAITING_MAX */
    bool stopping;
    int proposals;                    /* in flight (raftrep__proposal) */
    struct raftrep__proposal *newest; /* the last one proposed, while in flight */
    bool cursor_stale;                /* a proposal failed: re-read the cursor from the table */
    pthread_t sequencer;

    atomic_uint_fast64_t batches, acked, journal_entries, failed_proposals;
};

static void raftrep__answer(struct raftrep *r, struct raftrep__wait *w, int status, int64_t number,
                            const char *message)
{
    w->out->status = status;
    w->out->number = status ? -1 : number;
    snprintf(w->out->message, sizeof w->out->message, "%.180s", message ? message : "");
    struct raftrep__group *g = w->group;
    r->waiting--;
    if (--g->pending == 0) {
        g->next = r->answered;
        r->answered = g;
    }
    if (status == 0)
        atomic_fetch_add(&r->acked, 1);
}

/* Not the leader: BZ_ENOTLEADER with the leader's id, if known. */
static int raftrep__not_leader(struct raftrep *r, int *leader)
{
    struct raftnode_info info;
    raftnode_info(r->node, &info);
    *leader = info.leader_id != r->id ? info.leader_id : 0;
    return info.role == RAFTNODE_LEADER ? BZ_EUNAVAIL /* taking over */ : BZ_ENOTLEADER;
}

/* Without the lock: reports a group's outcomes to its caller (a 421 names the leader). */
static void raftrep__finish(struct raftrep *r, struct raftrep__group *g)
{
    int leader = -1;
    for (size_t i = 0; i < g->n; i++) {
        if (g->out[i].status == BZ_ENOTLEADER) {
            if (leader < 0)
                raftrep__not_leader(r, &leader);
            g->out[i].leader = leader;
        }
    }
    g->done(g->arg, g->out, g->n);
    free(g->waits);
    free(g);
}

/* Lets go of the lock, then finishes the groups answered meanwhile. */
static void raftrep__unlock(struct raftrep *r)
{
    struct raftrep__group *g = r->answered;
    r->answered = NULL;
    pthread_mutex_unlock(&r->lock);
    while (g) {
        struct raftrep__group *next = g->next;
        raftrep__finish(r, g);
        g = next;
    }
}

/*
 * A journal page proposed to Raft and not yet applied, with the trades its
 * application answers: those numbered in it, and those numbered in a page
 * proposed before it (Raft applies entries in order, so this one's
 * application implies theirs).
 */
struct raftrep__proposal {
    struct raftrep *r;
    int64_t from, end; /* journal numbers [from, end) */
    size_t n, cap;     /* guarded by raftrep.lock once proposed */
    struct raftrep__wait **waiting;
};

static void raftrep__proposal_add(struct raftrep__proposal *p, struct raftrep__wait *w,
                                  int64_t number)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->waiting = xrealloc(p->waiting, p->cap * sizeof *p->waiting);
    }
    w->number = number;
    p->waiting[p->n++] = w;
}

static void raftrep__proposal_free(struct raftrep__proposal *p)
{
    free(p->waiting);
    free(p);
}

static int64_t raftrep__applied_last(struct raftrep *r)
{
    struct orderlog_state st;
    orderlog_state(r->log, &st);
    return st.last;
}

/* Raft's verdict on a proposal (on the node's thread). */
static void raftrep__proposed(void *arg, int status)
{
    struct raftrep__proposal *p = arg;
    struct raftrep *r = p->r;
    if (status == 0) {
        atomic_fetch_add(&r->journal_entries, (uint64_t)(p->end - p->from));
    } else {
        atomic_fetch_add(&r->failed_proposals, 1);
        LOG_WARN("proposing journal %lld..%lld: %s", (long long)p->from, (long long)(p->end - 1),
                 bz_strerror(status));
    }
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < p->n; i++)
        if (status == 0)
            raftrep__answer(r, p->waiting[i], 0, p->waiting[i]->number, NULL);
        else
            raftrep__answer(r, p->waiting[i], BZ_EUNAVAIL, -1,
                            "the Raft proposal failed: outcome unknown, retry");
    if (status)
        r->cursor_stale = true;
    if (r->newest == p)
        r->newest = NULL;
    r->proposals--;
    pthread_cond_signal(&r->cond);
    raftrep__unlock(r);
    raftrep__proposal_free(p);
}

/*
 * One exchange and its proposal, which runs on while the sequencer goes on
 * (docs/design.md, "Raft mode", the sequencer's cursor). `batch` may be empty
 * (a journal read). Returns 0, 1 (more journal to read) or the failure every
 * trade of the batch was answered with.
 */
static int raftrep__exchange(struct raftrep *r, int64_t cursor, struct raftrep__wait **batch,
                             size_t n, int64_t *next_cursor)
{
    char msg[120];
    struct orderlog_state st;
    orderlog_state(r->log, &st);
    struct msg_exec m = {.from = cursor, .committed = st.last + 1, .n = n};
    m.trades = xcalloc(n ? n : 1, sizeof *m.trades);
    for (size_t i = 0; i < n; i++)
        m.trades[i] = batch[i]->trade;
    struct msg_exec_reply x;
    int rv = ordersvc_catalog_execute(r->cfg, &m, &x, msg, sizeof msg);
    free(m.trades);
    atomic_fetch_add(&r->batches, 1);
    if (rv) {
        char why[180];
        snprintf(why, sizeof why, "catalog call failed (%.120s): outcome unknown, retry", msg);
        pthread_mutex_lock(&r->lock);
        for (size_t i = 0; i < n; i++)
            raftrep__answer(r, batch[i], rv == BZ_ETIMEDOUT ? BZ_ETIMEDOUT : BZ_EUPSTREAM, -1, why);
        raftrep__unlock(r);
        return rv;
    }
    *next_cursor = cursor;
    struct raftrep__proposal *p = NULL;
    if (x.njournal > 0) {
        p = xcalloc(1, sizeof *p);
        p->r = r;
        p->from = cursor;
        p->end = cursor + (int64_t)x.njournal;
    }
    pthread_mutex_lock(&r->lock);
    int64_t end = p ? p->end : cursor;
    for (size_t i = 0; i < n; i++) {
        const struct msg_exec_result *res = &x.results[i];
        if (res->code != 200) {
            raftrep__answer(r, batch[i], msg_exec_refusal(res->code), -1, res->message);
        } else if (res->number < end && p) {
            raftrep__proposal_add(p, batch[i], res->number);
        } else if (res->number < end && r->newest) {
            /* A repeat of an order in a page still in flight: answered with the newest. */
            raftrep__proposal_add(r->newest, batch[i], res->number);
        } else if (res->number < end && res->number <= raftrep__applied_last(r)) {
            /* A repeat of an order in a page already applied. */
            raftrep__answer(r, batch[i], 0, res->number, NULL);
        } else {
            /* Past this page (the journal had more than a page ahead): next exchange. */
            batch[i]->next = r->queue;
            r->queue = batch[i];
            if (!batch[i]->next)
                r->queue_tail = &batch[i]->next;
        }
    }
    if (p) {
        rv = raftnode_propose(r->node, x.journal, x.njournal, raftrep__proposed, p);
        if (rv == 0) {
            r->proposals++;
            r->newest = p;
            *next_cursor = p->end;
        } else {
            atomic_fetch_add(&r->failed_proposals, 1);
            for (size_t i = 0; i < p->n; i++)
                raftrep__answer(r, p->waiting[i], BZ_EUNAVAIL, -1,
                                "the Raft proposal failed: outcome unknown, retry");
            raftrep__proposal_free(p);
        }
    }
    raftrep__unlock(r);
    bool more = x.end > cursor + (int64_t)x.njournal;
    msg_exec_reply_free(&x);
    return rv ? rv : more ? 1 : 0;
}

/*
 * Sequencer, with the lock held (let go of meanwhile): the trades handed in since the
 * last look. The table holds only committed entries: a retry of one of them is answered
 * from it; the others join the queue for the next exchange, in order. The lookups run
 * without the lock: one may wait for the log while the node's thread commits a page, and
 * that thread takes the lock to answer the page's trades.
 */
static void raftrep__take_incoming(struct raftrep *r)
{
    struct raftrep__wait *in = r->incoming;
    r->incoming = NULL;
    r->incoming_tail = &r->incoming;
    pthread_mutex_unlock(&r->lock);
    for (struct raftrep__wait *w = in; w; w = w->next) {
        struct order o;
        w->lookup = orderlog_find_request(r->log, w->trade.request_id, &o);
        if (w->lookup == 0 && !trade_same(&o.trade, &w->trade))
            w->lookup = BZ_EMISMATCH;
        w->number = w->lookup == 0 ? o.number : -1;
    }
    pthread_mutex_lock(&r->lock);
    for (struct raftrep__wait *w = in, *next; w; w = next) {
        next = w->next;
        if (w->lookup == BZ_EMISMATCH) {
            raftrep__answer(r, w, BZ_EMISMATCH, -1,
                            "Idempotency-Key reused with a different request");
        } else if (w->lookup == 0) {
            raftrep__answer(r, w, 0, w->number, NULL); /* a retry of a committed order */
        } else if (w->lookup != BZ_ENOTFOUND) {
            raftrep__answer(r, w, w->lookup, -1, "order log unreadable");
        } else {
            w->next = NULL;
            *r->queue_tail = w;
            r->queue_tail = &w->next;
        }
    }
    raftrep__unlock(r);
    pthread_mutex_lock(&r->lock);
}

static void *raftrep__sequencer_main(void *arg)
{
    struct raftrep *r = arg;
    struct raftrep__wait **batch = xcalloc(MSG_MAX_ENTRIES, sizeof *batch);
    bool cursor_valid = false, sync = true;
    uint64_t cursor_term = 0, last_exchange = 0;
    int64_t cursor = 0;

    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        if (r->incoming) {
            raftrep__take_incoming(r);
            continue;
        }
        struct raftnode_info info;
        raftnode_info(r->node, &info);
        bool leads = info.role == RAFTNODE_LEADER && info.leader_ready;
        if (!leads) {
            /* Trades queued here cannot be sequenced: the front-end takes them to the
             * leader (same request id). */
            for (struct raftrep__wait *w = r->queue; w; w = w->next)
                raftrep__answer(r, w, BZ_ENOTLEADER, -1, "this replica is not the Raft leader");
            r->queue = NULL;
            r->queue_tail = &r->queue;
            cursor_valid = false;
            raftrep__unlock(r);
            pthread_mutex_lock(&r->lock);
            if (r->stopping || r->incoming)
                continue;
            struct timespec ts;
            clock_deadline(&ts, 50);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
            continue;
        }
        uint64_t now = clock_now_ms();
        if (!r->queue && !sync && now - last_exchange < RAFTREP__IDLE_SYNC_MS) {
            struct timespec ts;
            clock_deadline(&ts, RAFTREP__IDLE_SYNC_MS - (now - last_exchange));
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
            continue;
        }
        if (r->proposals >= RAFTREP__PROPOSALS ||
            (r->proposals > 0 && (r->cursor_stale || cursor_term != info.term))) {
            /* The pipeline is full, or the cursor must be re-read once it is empty. */
            struct timespec ts;
            clock_deadline(&ts, 50);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
            continue;
        }
        if (!cursor_valid || r->cursor_stale || cursor_term != info.term) {
            /* A new term, or a failed proposal: the table's end (after our barrier, and with
             * no proposal of ours in flight). */
            r->cursor_stale = false;
            struct orderlog_state st;
            orderlog_state(r->log, &st);
            cursor = st.last + 1;
            cursor_term = info.term;
            cursor_valid = true;
        }
        size_t n = 0;
        while (r->queue && n < MSG_MAX_ENTRIES) {
            batch[n] = r->queue;
            r->queue = r->queue->next;
            n++;
        }
        if (!r->queue)
            r->queue_tail = &r->queue;
        pthread_mutex_unlock(&r->lock);

        int64_t next = cursor;
        int rv = raftrep__exchange(r, cursor, batch, n, &next);
        last_exchange = clock_now_ms();
        cursor = next;
        sync = rv != 0; /* 1: more journal to read; < 0: retry soon */
        if (rv < 0)
            cursor_valid = false;

        pthread_mutex_lock(&r->lock);
        if (rv < 0 && !r->stopping) {
            struct timespec ts;
            clock_deadline(&ts, RAFTREP__RETRY_MS);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
    }
    for (struct raftrep__wait *w = r->queue; w; w = w->next)
        raftrep__answer(r, w, BZ_EUNAVAIL, -1, "replica shutting down");
    for (struct raftrep__wait *w = r->incoming; w; w = w->next)
        raftrep__answer(r, w, BZ_EUNAVAIL, -1, "replica shutting down");
    r->queue = r->incoming = NULL;
    raftrep__unlock(r);
    pthread_mutex_lock(&r->lock);
    /* Proposals in flight end with a verdict (applied, or failed when leadership goes), which
     * needs the node: it stops only after this thread. */
    while (r->proposals > 0)
        pthread_cond_wait(&r->cond, &r->lock);
    pthread_mutex_unlock(&r->lock);
    free(batch);
    return NULL;
}

/* ---------------------------------------------------------------- the interface */

int raftrep_start(struct raftrep **out, const struct bz_config *cfg, int id, struct orderlog *log,
                  char *errmsg, size_t errlen)
{
    struct raftrep *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->id = id;
    r->log = log;
    r->queue_tail = &r->queue;
    r->incoming_tail = &r->incoming;
    pthread_mutex_init(&r->lock, NULL);
    clock_cond_init(&r->cond);
    int rv = raftnode_start(&r->node, cfg, id, log, NULL, errmsg, errlen);
    if (rv)
        goto err_after_init;
    if ((rv = pthread_create(&r->sequencer, NULL, raftrep__sequencer_main, r)) != 0) {
        snprintf(errmsg, errlen, "cannot start the sequencer: %s", strerror(rv));
        raftnode_stop(r->node);
        rv = BZ_EINTERNAL;
        goto err_after_init;
    }
    *out = r;
    return 0;
err_after_init:
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
    return rv;
}

void raftrep_stop(struct raftrep *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->sequencer, NULL);
    raftnode_stop(r->node);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}

bool raftrep_ready(struct raftrep *r, char *why, size_t whylen)
{
    struct raftnode_info info;
    raftnode_info(r->node, &info);
    if (info.fsm_failed)
        snprintf(why, whylen, "the order log refused a committed entry (see the log)");
    else if (!info.ready)
        snprintf(why, whylen, "catching up with the Raft leader");
    else
        why[0] = '\0';
    return info.ready && !info.fsm_failed;
}

void raftrep_submit_async(struct raftrep *r, const struct trade *t, size_t n,
                          struct trade_outcome *out, trade_outcomes_fn done, void *arg)
{
    int leader = 0, refusal = 0;
    char why[sizeof out->message] = ""; /* the refusal's message for every trade */
    if (!raftnode_is_leader(r->node)) {
        refusal = raftrep__not_leader(r, &leader);
        snprintf(why, sizeof why, "replica %d %s", r->id,
                 refusal == BZ_ENOTLEADER ? "is not the Raft leader" : "is still taking over");
    } else if (n > 0) {
        struct raftrep__group *g = xcalloc(1, sizeof *g);
        *g = (struct raftrep__group){.n = n,
                                     .pending = n,
                                     .out = out,
                                     .done = done,
                                     .arg = arg,
                                     .waits = xcalloc(n, sizeof *g->waits)};
        for (size_t i = 0; i < n; i++) {
            out[i] = (struct trade_outcome){.status = 0, .number = -1};
            g->waits[i] = (struct raftrep__wait){.group = g, .trade = t[i], .out = &out[i]};
            if (i > 0)
                g->waits[i - 1].next = &g->waits[i];
        }
        pthread_mutex_lock(&r->lock);
        bool open = !r->stopping && r->waiting + n <= ORDERSVC_WAITING_MAX;
        if (r->stopping) {
            snprintf(why, sizeof why, "replica %d is shutting down", r->id);
        } else if (!open) {
            snprintf(why, sizeof why, "%s", ORDERSVC_BUSY);
            r->refused += n;
        } else {
            r->waiting += n;
            /* The sequencer looks each up and queues it (raftrep__take_incoming); it answers
             * every trade it takes within a catalog call and a proposal, each bounded by
             * call_timeout_ms, and a trade never taken when leadership goes. */
            *r->incoming_tail = &g->waits[0];
            r->incoming_tail = &g->waits[n - 1].next;
            pthread_cond_signal(&r->cond);
        }
        pthread_mutex_unlock(&r->lock);
        if (open)
            return;
        free(g->waits);
        free(g);
        refusal = BZ_EUNAVAIL;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = (struct trade_outcome){.status = refusal, .number = -1, .leader = leader};
        memcpy(out[i].message, why, sizeof why);
    }
    done(arg, out, n);
}

int raftrep_query(struct raftrep *r, int64_t number, struct order *out, int *leader)
{
    *leader = 0;
    if (!raftnode_is_leader(r->node))
        return raftrep__not_leader(r, leader);
    int rv = orderlog_get(r->log, number, out);
    if (rv != BZ_ENOTFOUND)
        return rv;
    /* Not here yet: everything committed before now is applied after a barrier. */
    rv = raftnode_barrier_wait(r->node, (unsigned)r->cfg->call_timeout_ms / 2);
    if (rv)
        return BZ_EUNAVAIL;
    return orderlog_get(r->log, number, out);
}

json_t *raftrep_state_json(struct raftrep *r)
{
    json_t *st = raftnode_status_json(r->node, 500);
    if (!st)
        st = json_pack("{s:i,s:s}", "id", r->id, "role", "unavailable");
    struct raftnode_info info;
    raftnode_info(r->node, &info);
    struct orderlog_state ls;
    orderlog_state(r->log, &ls);
    /* The names primary-backup uses too, so one status page and one harness read both. */
    json_object_set_new(st, "mode", json_string("raft"));
    json_object_set_new(st, "epoch", json_integer((json_int_t)info.term));
    json_object_set_new(st, "last", json_integer(ls.last));
    json_object_set_new(st, "commit", json_integer(ls.last));
    return st;
}

void raftrep_metrics(struct raftrep *r, struct strbuf *out)
{
    struct raftnode_info info;
    raftnode_info(r->node, &info);
    struct orderlog_state ls;
    orderlog_state(r->log, &ls);
    metrics_render_simple(out, "bazaar_order_last_number", "gauge",
                          "Number of the last order in the local log (-1 when empty, shown as 0).",
                          ls.last >= 0 ? (uint64_t)ls.last : 0);
    metrics_render_simple(out, "bazaar_order_epoch", "gauge", "Current Raft term.", info.term);
    metrics_render_simple(out, "bazaar_order_is_leader", "gauge", "1 when this replica leads.",
                          info.role == RAFTNODE_LEADER);
    metrics_render_simple(out, "bazaar_order_ready", "gauge", "1 when /health answers 200.",
                          info.ready && !info.fsm_failed);
    metrics_render_simple(out, "bazaar_order_raft_commit_index", "gauge", "Raft commit index.",
                          info.commit_index);
    metrics_render_simple(out, "bazaar_order_raft_applied_index", "gauge", "Raft applied index.",
                          info.applied_index);
    metrics_render_simple(out, "bazaar_order_acked_total", "counter",
                          "Orders acknowledged as leader.", atomic_load(&r->acked));
    metrics_render_simple(out, "bazaar_order_catalog_batches_total", "counter",
                          "Exchanges with the catalog (batches of trades, journal reads).",
                          atomic_load(&r->batches));
    metrics_render_simple(out, "bazaar_order_journal_entries_total", "counter",
                          "Journal entries proposed and applied as leader.",
                          atomic_load(&r->journal_entries));
    metrics_render_simple(out, "bazaar_order_failed_proposals_total", "counter",
                          "Raft proposals that failed (outcome unknown).",
                          atomic_load(&r->failed_proposals));
    pthread_mutex_lock(&r->lock);
    uint64_t waiting = r->waiting, refused = r->refused;
    pthread_mutex_unlock(&r->lock);
    ordersvc_render_waiting(out, waiting, refused);
}
