/*
 * sim.c - the deterministic simulator of primary-backup replication.
 *
 * Runs the real protocol core of every order replica (src/order/pb_*.c over
 * the real SQLite order log, in memory), the real front-end selection rules
 * (src/frontend/select.c) and the real catalog store (src/catalog/stockdb.c)
 * in one process, on simulated time and a simulated network, driven by a
 * seed: crashes and restarts, front-end restarts, partitions and heals,
 * message delay, loss, duplication and reordering, paused processes that
 * wake up as stale leaders, disk-full write errors, replayed and far-future
 * notices, clients retrying with and without request ids.
 *
 * After every event it checks: at most one leader per epoch; a new leader's
 * log holds every acknowledged order; no number is acknowledged twice or
 * served with another order; numbers respect real time. At the end it heals
 * everything and checks: one leader, identical logs equal to the catalog's
 * journal, every acknowledged and served order in them, conservation and a
 * replay that never goes below zero, and that a new order still commits.
 *
 *   bazaar-sim [--seeds N] [--first S] [--jobs J] [--seed S] [--replicas N] [--verbose]
 *              [--old-promise] [--break1]
 *
 * A failure prints its seed, the check that failed and the schedule's last
 * trace lines; `--seed S --verbose` replays it with the whole trace.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "pb.h"
#include "select.h"
#include "stockdb.h"

#define SIM_MAX_NODES   5
#define SIM_MAX_FES     3
#define SIM_CLIENTS     5
#define SIM_STOCKS      3
#define SIM_MAX_ACKED   8192
#define SIM_TRACE_LINES 60
#define SIM_CATALOG     (-1)
#define SIM_RUN_MS      12000 /* faults and traffic */
#define SIM_QUIET_MS    12000 /* then everything healed, until quiescence */

/* ---------------------------------------------------------------- randomness */

struct sim_rng {
    uint64_t s;
};

static uint64_t sim_rand(struct sim_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

static int sim_between(struct sim_rng *r, int lo, int hi)
{
    return lo + (int)(sim_rand(r) % (uint64_t)(hi - lo + 1));
}

static bool sim_chance(struct sim_rng *r, double p)
{
    return (double)(sim_rand(r) >> 11) / 9007199254740992.0 < p;
}

/* ---------------------------------------------------------------- the world */

enum sim_ev_kind {
    EV_DELIVER = 0, /* a call reaches its target */
    EV_REPLY,       /* a call's reply reaches its caller */
    EV_TIMEOUT,     /* a call's deadline at its caller */
    EV_TICK,        /* a replica's timers */
    EV_CLIENT_DELIVER,
    EV_CLIENT_ANSWER,
    EV_CLIENT_TIMEOUT,
    EV_CLIENT_NEXT,
    EV_FE_CHECK,
};

/* A call in flight: referenced by its deliveries, its reply and its timeout. */
struct sim_call {
    struct pb_call *call;
    int caller;
    uint32_t inc;  /* the caller's incarnation */
    bool answered; /* reply or timeout delivered to the caller */
    int refs;
};

struct sim_ev {
    uint64_t at_us, seq;
    enum sim_ev_kind kind;
    int node; /* the node the event happens at (-1 catalog / none) */
    uint32_t inc;
    struct sim_call *sc;
    struct pb_reply *reply;
    int client;
    uint64_t op;
    struct pb_answer *answer;
    uint64_t epoch; /* EV_CLIENT_ANSWER: the answering node's epoch */
};

struct sim_node {
    int id;
    bool up, paused, crashing;
    uint64_t paused_until_us;
    uint32_t inc;
    struct orderlog *log;
    struct pb_store store; /* over the fault wrapper below */
    struct pb *pb;
    int disk_full;       /* > 0: every write fails */
    int volatile_leader; /* --old-promise: the promised leader, kept in memory only */
    enum pb_role last_role;
    struct sim *sim;
    int index;
};

struct sim_fe {
    bool up;
    int current;
    uint64_t epoch;
};

struct sim_op {
    uint64_t seq;
    bool active, is_query, keyed;
    struct trade trade;
    int64_t number; /* query */
    int attempts;
    int64_t max_acked_at_start; /* real-time order: the number must be above this */
    uint64_t start_us;
    int fe;
};

struct sim_acked {
    bool set;
    uint64_t at_us; /* when the client learnt it */
    uint64_t epoch; /* the oldest epoch whose leader acknowledged it */
    char rid[TRADE_REQUEST_ID_MAX + 1];
    struct trade trade;
};

struct sim_leader {
    uint64_t epoch;
    int leader;
};

struct sim {
    uint64_t seed;
    struct sim_rng rng;
    bool verbose;
    uint64_t now_us, seq;
    /* the heap of events */
    struct sim_ev *heap;
    size_t nheap, capheap;
    uint64_t steps;

    int nnodes, nfes;
    struct sim_node nodes[SIM_MAX_NODES];
    struct sim_fe fes[SIM_MAX_FES];
    struct stockdb *catalog;
    bool catalog_up;
    uint64_t catalog_back_us;           /* the catalog comes back then (0: not down) */
    uint64_t heal_us;                   /* the partition heals then (0: none) */
    uint64_t restart_us[SIM_MAX_NODES]; /* a crashed replica restarts then (0: stays down) */
    int64_t initial[SIM_STOCKS];
    /* links: cut[a][b] for a,b in 0..nnodes-1 nodes, nnodes = catalog, nnodes+1.. = fes */
    bool cut[SIM_MAX_NODES + 1 + SIM_MAX_FES][SIM_MAX_NODES + 1 + SIM_MAX_FES];
    /* network behaviour of this schedule */
    double loss, dup;
    int delay_max_us;
    size_t page_max; /* entries per log page a node serves (multi-page catch-up) */

    struct sim_op ops[SIM_CLIENTS];
    uint64_t next_op;
    struct sim_acked acked[SIM_MAX_ACKED];
    int64_t max_acked;
    struct sim_acked served[SIM_MAX_ACKED];
    struct sim_leader leaders[4096];
    int nleaders;
    bool healing;

    char trace[SIM_TRACE_LINES][200];
    int ntrace;
    char failure[400];
    /* statistics */
    uint64_t acks, refusals, unknown, queries, crashes, pauses, partitions;
};

static const char *const sim_stock_names[SIM_STOCKS] = {"Alpha", "Beta", "Gamma"};

static void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sim_trace(struct sim *s, const char *fmt, ...)
{
    char line[200];
    int k = snprintf(line, sizeof line, "%8.3f ", (double)s->now_us / 1e6);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, sizeof line - (size_t)k, fmt, ap);
    va_end(ap);
    if (s->verbose)
        fprintf(stderr, "%s\n", line);
    memcpy(s->trace[s->ntrace % SIM_TRACE_LINES], line, sizeof line);
    s->ntrace++;
}

static void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->failure, sizeof s->failure, fmt, ap);
    va_end(ap);
    sim_trace(s, "FAIL: %s", s->failure);
}

/* ---------------------------------------------------------------- event heap */

static bool sim_ev_before(const struct sim_ev *a, const struct sim_ev *b)
{
    return a->at_us < b->at_us || (a->at_us == b->at_us && a->seq < b->seq);
}

static void sim_push(struct sim *s, struct sim_ev ev)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 256;
        s->heap = xrealloc(s->heap, s->capheap * sizeof *s->heap);
    }
    ev.seq = ++s->seq;
    size_t i = s->nheap++;
    while (i > 0 && sim_ev_before(&ev, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = ev;
}

static struct sim_ev sim_pop(struct sim *s)
{
    struct sim_ev top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && sim_ev_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!sim_ev_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nheap > 0)
        s->heap[i] = last;
    return top;
}

static int sim_delay(struct sim *s)
{
    int d = sim_between(&s->rng, 50, s->delay_max_us);
    if (sim_chance(&s->rng, 0.02))
        d += sim_between(&s->rng, 10000, 200000); /* a slow path: reordering */
    return d;
}

/* ---------------------------------------------------------------- the store with faults */

static struct sim_node *sim__node(void *ctx)
{
    return ctx;
}

/*
 * --old-promise emulates the first release: the promised epoch was durable, the leader it
 * was promised to was not (a restarted replica accepted any leader for it). It exists to show
 * that the simulator finds break 1 (two leaders in one epoch) against that rule.
 */
static bool sim_old_promise;

static void sim_st_state(void *ctx, struct orderlog_state *out)
{
    struct sim_node *n = sim__node(ctx);
    orderlog_state(n->log, out);
    if (sim_old_promise)
        out->promised_leader = n->volatile_leader;
}

static int sim_st_promise(void *ctx, uint64_t epoch, int leader)
{
    struct sim_node *n = sim__node(ctx);
    if (n->disk_full)
        return BZ_EIO;
    if (!sim_old_promise)
        return orderlog_promise(n->log, epoch, leader);
    int rv = orderlog_promise(n->log, epoch, 0);
    if (rv == 0)
        n->volatile_leader = leader;
    return rv;
}

static int sim_st_set_log_epoch(void *ctx, uint64_t epoch)
{
    struct sim_node *n = sim__node(ctx);
    return n->disk_full ? BZ_EIO : orderlog_set_log_epoch(n->log, epoch);
}

static int sim_st_apply(void *ctx, const struct order *e, size_t k, int64_t stale_after,
                        uint64_t leader_epoch)
{
    struct sim_node *n = sim__node(ctx);
    return n->disk_full ? BZ_EIO : orderlog_apply(n->log, e, k, stale_after, leader_epoch);
}

static int sim_st_get(void *ctx, int64_t number, struct order *out)
{
    return orderlog_get(sim__node(ctx)->log, number, out);
}

static int sim_st_find(void *ctx, const char *rid, struct order *out)
{
    return orderlog_find_request(sim__node(ctx)->log, rid, out);
}

static int sim_st_read(void *ctx, int64_t from, size_t max, struct order *out, size_t *n)
{
    return orderlog_read(sim__node(ctx)->log, from, max, out, n);
}

/* ---------------------------------------------------------------- links */

static int sim_ep_node(int i)
{
    return i;
}

static int sim_ep_catalog(struct sim *s)
{
    return s->nnodes;
}

static int sim_ep_fe(struct sim *s, int f)
{
    return s->nnodes + 1 + f;
}

static bool sim_linked(struct sim *s, int a, int b)
{
    return !s->cut[a][b];
}

/* ---------------------------------------------------------------- io of a node */

static uint64_t sim_io_now(void *ctx)
{
    struct sim_node *n = ctx;
    return n->sim->now_us / 1000;
}

static void sim_call_unref(struct sim_call *sc)
{
    if (--sc->refs == 0) {
        pb_call_free(sc->call);
        free(sc);
    }
}

static void sim_io_send(void *ctx, struct pb_call *call)
{
    struct sim_node *n = ctx;
    struct sim *s = n->sim;
    struct sim_call *sc = xcalloc(1, sizeof *sc);
    sc->call = call;
    sc->caller = n->index;
    sc->inc = n->inc;
    sc->refs = 1;
    sim_push(s, (struct sim_ev){.at_us = s->now_us + (uint64_t)call->timeout_ms * 1000,
                                .kind = EV_TIMEOUT,
                                .node = n->index,
                                .inc = n->inc,
                                .sc = sc});
    int target = call->peer < 0 ? SIM_CATALOG : call->peer;
    int to_ep = call->peer < 0 ? sim_ep_catalog(s) : -1;
    if (call->peer >= 0) {
        /* peer index -> node index: peers are the other nodes in id order */
        target = call->peer < n->index ? call->peer : call->peer + 1;
        to_ep = sim_ep_node(target);
    }
    if (!sim_linked(s, sim_ep_node(n->index), to_ep) || sim_chance(&s->rng, s->loss))
        return; /* lost: the caller will time out */
    int copies = sim_chance(&s->rng, s->dup) ? 2 : 1;
    for (int k = 0; k < copies; k++) {
        sc->refs++;
        sim_push(s, (struct sim_ev){.at_us = s->now_us + (uint64_t)sim_delay(s),
                                    .kind = EV_DELIVER,
                                    .node = target,
                                    .sc = sc});
    }
}

static void sim_io_answer(void *ctx, void *token, const struct pb_answer *answer)
{
    struct sim_node *n = ctx;
    struct sim *s = n->sim;
    if (n->crashing)
        return; /* a crashing process answers nobody */
    uint64_t t = (uint64_t)(uintptr_t)token;
    struct pb_answer *a = xmalloc(sizeof *a);
    *a = *answer;
    sim_push(s, (struct sim_ev){.at_us = s->now_us + (uint64_t)sim_delay(s),
                                .kind = EV_CLIENT_ANSWER,
                                .client = (int)(t % SIM_CLIENTS),
                                .op = t / SIM_CLIENTS,
                                .answer = a,
                                .epoch = answer->status == 0 ? pb_epoch(n->pb) : 0});
}

/* ---------------------------------------------------------------- nodes */

static void sim_node_start(struct sim *s, struct sim_node *n)
{
    n->inc++;
    n->up = true;
    n->paused = false;
    n->crashing = false;
    n->volatile_leader = 0; /* forgotten with the process (--old-promise) */
    struct pb_config pc = {.id = n->id, .write_quorum = s->nnodes / 2 + 1, .call_timeout_ms = 2000};
    for (int i = 0; i < s->nnodes; i++)
        if (i != n->index)
            pc.peer_ids[pc.npeers++] = s->nodes[i].id;
    struct pb_io io = {
        .ctx = n, .now_ms = sim_io_now, .send = sim_io_send, .answer = sim_io_answer};
    n->pb = pb_new(&pc, &io, &n->store);
    n->last_role = pb_role(n->pb);
    sim_push(s, (struct sim_ev){
                    .at_us = s->now_us + 1000, .kind = EV_TICK, .node = n->index, .inc = n->inc});
}

static void sim_node_crash(struct sim *s, struct sim_node *n)
{
    if (!n->up)
        return;
    n->crashing = true;
    pb_free(n->pb);
    n->pb = NULL;
    n->up = false;
    n->paused = false;
    n->inc++;
    s->crashes++;
}

/* ---------------------------------------------------------------- checks */

static void sim_check_leader(struct sim *s, struct sim_node *n)
{
    if (!n->pb)
        return;
    enum pb_role role = pb_role(n->pb);
    if (role == n->last_role)
        return;
    n->last_role = role;
    sim_trace(s, "node %d: %s epoch %" PRIu64, n->id, pb_role_name(role), pb_epoch(n->pb));
    if (role != PB_LEADER)
        return;
    uint64_t epoch = pb_epoch(n->pb);
    for (int i = 0; i < s->nleaders; i++) {
        if (s->leaders[i].epoch == epoch && s->leaders[i].leader != n->id) {
            sim_fail(s, "two leaders in epoch %" PRIu64 ": %d and %d", epoch, s->leaders[i].leader,
                     n->id);
            return;
        }
    }
    if (s->nleaders < (int)(sizeof s->leaders / sizeof s->leaders[0]))
        s->leaders[s->nleaders++] = (struct sim_leader){epoch, n->id};
    /*
     * Its start log holds every order acknowledged in an older epoch (leader completeness). A
     * leader of an epoch older than one that already acknowledged orders can exist (it completed
     * a promotion begun before the newer one): it can commit nothing, since a quorum promised the
     * newer epoch and refuses its appends, so it need not hold those orders (seed 1838).
     */
    for (int64_t k = 0; k <= s->max_acked; k++) {
        if (!s->acked[k].set || s->acked[k].epoch >= epoch)
            continue;
        struct order o;
        if (orderlog_get(n->log, k, &o) != 0 || strcmp(o.trade.request_id, s->acked[k].rid)) {
            sim_fail(s, "new leader %d (epoch %" PRIu64 ") lacks acknowledged #%" PRId64 " (%s)",
                     n->id, epoch, k, s->acked[k].rid);
            return;
        }
    }
}

/* ---------------------------------------------------------------- handling calls */

static struct pb_reply *sim_process(struct sim *s, const struct pb_call *call)
{
    struct pb_reply *r = xcalloc(1, sizeof *r);
    if (call->kind == PB_CALL_EXECUTE) {
        /* Through the wire format both ways, as production sends it (msg.h). */
        struct msg_exec m;
        struct msg_exec_reply reply;
        char msg[200], *bytes = NULL;
        size_t len;
        int bad = msg_exec_encode(&call->exec, &bytes, &len) ||
                  msg_exec_decode(bytes, len, &m, msg, sizeof msg);
        free(bytes);
        bytes = NULL;
        if (bad) {
            sim_fail(s, "a batch the leader built does not encode and decode");
            r->err = BZ_EUPSTREAM;
            return r;
        }
        struct stockdb_outcome *out = xcalloc(m.n ? m.n : 1, sizeof *out);
        int rv = stockdb_execute(s->catalog, m.trades, m.n, out, m.committed);
        if (rv == 0) /* the reply the catalog's POST /execute sends */
            rv = stockdb_exec_reply(s->catalog, &m, out, &reply, msg, sizeof msg);
        free(out);
        if (rv == 0) {
            if (msg_exec_reply_encode(&reply, &bytes, &len) ||
                msg_exec_reply_decode(bytes, len, m.n, m.from, &r->exec, msg, sizeof msg)) {
                sim_fail(s, "an execute reply does not encode and decode");
                rv = BZ_EUPSTREAM;
            }
            free(bytes);
            msg_exec_reply_free(&reply);
        }
        msg_exec_free(&m);
        r->err = rv;
        return r;
    }
    /* Delivered to a node: the caller ensured it is up and running. */
    return r;
}

static struct pb_reply *sim_process_node(struct sim *s, struct sim_node *t,
                                         const struct pb_call *call, int caller_id)
{
    struct pb_reply *r = xcalloc(1, sizeof *r);
    switch (call->kind) {
    case PB_CALL_NOTICE:
        r->err = pb_on_notice(t->pb, &call->notice);
        if (!r->err)
            pb_peer_state(t->pb, &r->state);
        break;
    case PB_CALL_STATE:
        pb_peer_state(t->pb, &r->state);
        break;
    case PB_CALL_APPEND: {
        /* Through the wire format both ways, as production sends it (msg.h). */
        struct msg_append m;
        struct msg_append_reply a = {0};
        uint8_t bytes[MSG_APPEND_REPLY_SIZE];
        char msg[160];
        if (msg_append_decode(call->append->wire, call->append->wire_len, &m, msg, sizeof msg)) {
            sim_fail(s, "an append the leader encoded does not decode: %s", msg);
            r->err = BZ_EUPSTREAM;
            break;
        }
        r->err = pb_on_append(t->pb, &m, &a.ok, &a.match, &a.last);
        msg_append_free(&m);
        msg_append_reply_encode(&a, bytes);
        if (r->err == 0 && msg_append_reply_decode(bytes, sizeof bytes, &a, msg, sizeof msg)) {
            sim_fail(s, "an append reply does not decode: %s", msg);
            r->err = BZ_EUPSTREAM;
            break;
        }
        r->ok = a.ok;
        r->match = a.match;
        r->last = a.last;
        break;
    }
    case PB_CALL_PAGE: {
        struct order *page = xcalloc(s->page_max, sizeof *page);
        size_t n = 0, len;
        char *bytes, msg[160];
        r->err = orderlog_read(t->log, call->from, s->page_max, page, &n);
        if (r->err == 0 && msg_log_page_encode(page, n, &bytes, &len) != 0) {
            sim_fail(s, "a log page does not encode");
            r->err = BZ_EUPSTREAM;
        } else if (r->err == 0) {
            if (msg_log_page_decode(bytes, len, &r->entries, &r->n, msg, sizeof msg) != 0) {
                sim_fail(s, "a log page does not decode: %s", msg);
                r->err = BZ_EUPSTREAM;
            }
            free(bytes);
        }
        free(page);
        break;
    }
    case PB_CALL_EXECUTE:
    case PB_CALL_CATALOG:
        break;
    }
    (void)caller_id;
    sim_check_leader(s, t);
    return r;
}

static bool sim_node_runs(const struct sim_node *n)
{
    return n->up && !n->paused;
}

static void sim_on_deliver(struct sim *s, struct sim_ev *ev)
{
    struct sim_call *sc = ev->sc;
    struct pb_reply *reply;
    int from_ep = sim_ep_node(sc->caller), to_ep;
    if (ev->node == SIM_CATALOG) {
        to_ep = sim_ep_catalog(s);
        if (!s->catalog_up) {
            reply = xcalloc(1, sizeof *reply);
            reply->err = BZ_EUNAVAIL;
        } else {
            reply = sim_process(s, sc->call);
        }
    } else {
        struct sim_node *t = &s->nodes[ev->node];
        to_ep = sim_ep_node(ev->node);
        if (!t->up) {
            reply = xcalloc(1, sizeof *reply);
            reply->err = BZ_EUNAVAIL; /* connection refused */
        } else {
            reply = sim_process_node(s, t, sc->call, s->nodes[sc->caller].id);
        }
    }
    if (!sim_linked(s, to_ep, from_ep) || sim_chance(&s->rng, s->loss)) {
        pb_reply_free(reply);
        free(reply);
        sim_call_unref(sc);
        return;
    }
    sim_push(s, (struct sim_ev){.at_us = s->now_us + (uint64_t)sim_delay(s),
                                .kind = EV_REPLY,
                                .node = sc->caller,
                                .inc = sc->inc,
                                .sc = sc,
                                .reply = reply});
}

/* A reply or a timeout reaches the caller: the first of the two counts. */
static void sim_on_outcome(struct sim *s, struct sim_ev *ev)
{
    struct sim_call *sc = ev->sc;
    struct sim_node *n = &s->nodes[ev->node];
    struct pb_reply timeout = {.err = BZ_ETIMEDOUT};
    struct pb_reply *reply = ev->kind == EV_REPLY ? ev->reply : &timeout;
    if (!sc->answered && n->up && n->inc == sc->inc) {
        sc->answered = true;
        pb_on_reply(n->pb, sc->call, reply);
        sim_check_leader(s, n);
    }
    if (ev->kind == EV_REPLY) {
        pb_reply_free(ev->reply);
        free(ev->reply);
    }
    sim_call_unref(sc);
}

/* ---------------------------------------------------------------- front-ends */

static void sim_fe_check(struct sim *s, int f)
{
    struct sim_fe *fe = &s->fes[f];
    if (!fe->up)
        return;
    struct select_obs obs[SIM_MAX_NODES];
    for (int attempt = 0; attempt < 3; attempt++) {
        for (int i = 0; i < s->nnodes; i++) {
            struct sim_node *n = &s->nodes[i];
            obs[i] = (struct select_obs){.id = n->id};
            if (!sim_node_runs(n) || !sim_linked(s, sim_ep_fe(s, f), sim_ep_node(i)))
                continue;
            struct pb_view v;
            pb_view_get(n->pb, &v);
            obs[i].reachable = true;
            obs[i].ready = v.ready;
            obs[i].role = select_role_parse(pb_role_name(v.role));
            obs[i].promised = v.log.promised;
            obs[i].promised_leader = v.log.promised_leader;
            obs[i].catalog_ok = v.catalog_ok;
        }
        struct select_decision d;
        select_decide(obs, s->nnodes, attempt == 0 ? fe->current : -1, fe->epoch, &d);
        if (d.action == SELECT_KEEP)
            return;
        if (d.action == SELECT_FOLLOW) {
            sim_trace(s, "fe %d follows node %d epoch %" PRIu64, f, s->nodes[d.index].id, d.epoch);
            fe->current = d.index;
            fe->epoch = d.epoch;
            return;
        }
        if (d.action == SELECT_NONE) {
            fe->current = -1;
            return;
        }
        struct sim_node *c = &s->nodes[d.index];
        struct msg_notice m = {.leader = c->id, .epoch = d.epoch};
        int rv = pb_on_notice(c->pb, &m);
        sim_check_leader(s, c);
        sim_trace(s, "fe %d selects node %d epoch %" PRIu64 ": %s", f, c->id, d.epoch,
                  bz_strerror(rv));
        if (rv) {
            fe->epoch = d.epoch;
            continue;
        }
        for (int i = 0; i < s->nnodes; i++) {
            struct sim_node *n = &s->nodes[i];
            if (i != d.index && sim_node_runs(n) &&
                sim_linked(s, sim_ep_fe(s, f), sim_ep_node(i))) {
                pb_on_notice(n->pb, &m);
                sim_check_leader(s, n);
            }
        }
        fe->current = d.index;
        fe->epoch = d.epoch;
        return;
    }
}

/* ---------------------------------------------------------------- clients */

static void sim_client_send(struct sim *s, int c)
{
    struct sim_op *op = &s->ops[c];
    struct sim_fe *fe = &s->fes[op->fe];
    uint64_t t = op->seq * SIM_CLIENTS + (uint64_t)c;
    sim_push(s, (struct sim_ev){.at_us = s->now_us + 4500000, /* the front-end's deadline */
                                .kind = EV_CLIENT_TIMEOUT,
                                .client = c,
                                .op = op->seq});
    if (!fe->up || fe->current < 0)
        return;
    int node = fe->current;
    if (!sim_linked(s, sim_ep_fe(s, op->fe), sim_ep_node(node)))
        return;
    sim_push(s, (struct sim_ev){.at_us = s->now_us + (uint64_t)sim_delay(s),
                                .kind = EV_CLIENT_DELIVER,
                                .node = node,
                                .client = c,
                                .op = t});
}

static void sim_client_next(struct sim *s, int c)
{
    struct sim_op *op = &s->ops[c];
    memset(op, 0, sizeof *op);
    op->seq = ++s->next_op;
    op->active = true;
    op->fe = sim_between(&s->rng, 0, s->nfes - 1);
    op->max_acked_at_start = s->max_acked;
    op->start_us = s->now_us;
    if (s->max_acked >= 0 && sim_chance(&s->rng, 0.25)) {
        op->is_query = true;
        op->number = sim_between(&s->rng, 0, (int)s->max_acked + 2);
        s->queries++;
    } else {
        op->keyed = sim_chance(&s->rng, 0.7);
        struct trade *t = &op->trade;
        snprintf(t->request_id, sizeof t->request_id, "%c:%" PRIu64 "-%d", op->keyed ? 'k' : 'r',
                 op->seq, c);
        snprintf(t->name, sizeof t->name, "%s", sim_stock_names[sim_between(&s->rng, 0, 2)]);
        t->type = sim_chance(&s->rng, 0.5) ? TRADE_BUY : TRADE_SELL;
        t->quantity = sim_between(&s->rng, 1, 3);
    }
    sim_client_send(s, c);
}

static void sim_client_done(struct sim *s, int c)
{
    s->ops[c].active = false;
    if (!s->healing)
        sim_push(s,
                 (struct sim_ev){.at_us = s->now_us + (uint64_t)sim_between(&s->rng, 1000, 30000),
                                 .kind = EV_CLIENT_NEXT,
                                 .client = c});
}

static void sim_client_retry(struct sim *s, int c)
{
    struct sim_op *op = &s->ops[c];
    if (op->is_query || !op->keyed || ++op->attempts > 6) {
        if (!op->is_query)
            s->unknown++;
        sim_client_done(s, c);
        return;
    }
    op->seq = ++s->next_op; /* a new attempt, the same request id */
    op->fe = sim_between(&s->rng, 0, s->nfes - 1);
    sim_client_send(s, c);
}

static void sim_on_answer(struct sim *s, int c, uint64_t seq, const struct pb_answer *a,
                          uint64_t epoch)
{
    struct sim_op *op = &s->ops[c];
    if (!op->active || op->seq != seq)
        return; /* the answer to an attempt the client gave up on */
    if (op->is_query) {
        if (a->status == 0) {
            int64_t k = a->order.number;
            if (k != op->number)
                sim_fail(s, "query for #%" PRId64 " answered #%" PRId64, op->number, k);
            if (k >= 0 && k < SIM_MAX_ACKED) {
                if (s->acked[k].set && strcmp(s->acked[k].rid, a->order.trade.request_id))
                    sim_fail(s, "#%" PRId64 " served as %s but acknowledged as %s", k,
                             a->order.trade.request_id, s->acked[k].rid);
                if (s->served[k].set && strcmp(s->served[k].rid, a->order.trade.request_id))
                    sim_fail(s, "#%" PRId64 " served as %s and as %s", k, a->order.trade.request_id,
                             s->served[k].rid);
                s->served[k].set = true;
                snprintf(s->served[k].rid, sizeof s->served[k].rid, "%s",
                         a->order.trade.request_id);
            }
        } else if (a->status == BZ_ENOTFOUND && op->number >= 0 && op->number < SIM_MAX_ACKED &&
                   s->acked[op->number].set && s->acked[op->number].at_us < op->start_us) {
            sim_fail(s, "acknowledged #%" PRId64 " answered 404", op->number);
        }
        sim_client_done(s, c);
        return;
    }
    if (a->status == 0) {
        int64_t k = a->number;
        sim_trace(s, "client %d: %s acknowledged as #%" PRId64, c, op->trade.request_id, k);
        if (k < 0 || k >= SIM_MAX_ACKED) {
            sim_fail(s, "number %" PRId64 " out of range", k);
        } else if (s->acked[k].set && strcmp(s->acked[k].rid, op->trade.request_id)) {
            sim_fail(s, "#%" PRId64 " acknowledged twice: %s and %s", k, s->acked[k].rid,
                     op->trade.request_id);
        } else if (k <= op->max_acked_at_start && !s->acked[k].set) {
            sim_fail(s, "#%" PRId64 " (%s) is below #%" PRId64 ", acknowledged before it was sent",
                     k, op->trade.request_id, op->max_acked_at_start);
        } else {
            if (!s->acked[k].set || epoch < s->acked[k].epoch)
                s->acked[k].epoch = epoch;
            s->acked[k].set = true;
            s->acked[k].at_us = s->now_us;
            /* memcpy, not snprintf: gcc -Os (MinSizeRel) reports -Werror=restrict here. */
            size_t rid_len = strnlen(op->trade.request_id, sizeof s->acked[k].rid - 1);
            memcpy(s->acked[k].rid, op->trade.request_id, rid_len);
            s->acked[k].rid[rid_len] = '\0';
            s->acked[k].trade = op->trade;
            if (k > s->max_acked)
                s->max_acked = k;
            s->acks++;
        }
        sim_client_done(s, c);
        return;
    }
    if (a->status == BZ_ECONFLICT || a->status == BZ_ENOTFOUND || a->status == BZ_EMISMATCH) {
        s->refusals++;
        sim_client_done(s, c);
        return;
    }
    sim_client_retry(s, c);
}

/* ---------------------------------------------------------------- faults */

static void sim_fault(struct sim *s)
{
    struct sim_rng *r = &s->rng;
    int i = sim_between(r, 0, s->nnodes - 1);
    struct sim_node *n = &s->nodes[i];
    switch (sim_between(r, 0, 9)) {
    case 0: /* crash; it restarts a little later (or much later) */
    case 1:
        if (n->up) {
            sim_trace(s, "crash node %d", n->id);
            sim_node_crash(s, n);
            s->restart_us[i] = s->now_us + (uint64_t)sim_between(r, 50, 4000) * 1000;
        }
        break;
    case 2: /* pause: it wakes up later, possibly as a stale leader */
        if (sim_node_runs(n)) {
            n->paused = true;
            n->paused_until_us = s->now_us + (uint64_t)sim_between(r, 200, 5000) * 1000;
            s->pauses++;
            sim_trace(s, "pause node %d until %.3f", n->id, (double)n->paused_until_us / 1e6);
        }
        break;
    case 3: { /* partition: cut one endpoint from some others */
        int total = s->nnodes + 1 + s->nfes, a = sim_between(r, 0, total - 1);
        for (int b = 0; b < total; b++) {
            if (b != a && sim_chance(r, 0.6)) {
                s->cut[a][b] = s->cut[b][a] = true;
            }
        }
        s->partitions++;
        s->heal_us = s->now_us + (uint64_t)sim_between(r, 200, 5000) * 1000;
        sim_trace(s, "partition endpoint %d", a);
        break;
    }
    case 4: /* a second, overlapping cut */
        if (s->heal_us) {
            int total = s->nnodes + 1 + s->nfes, a = sim_between(r, 0, total - 1),
                b = sim_between(r, 0, total - 1);
            if (a != b)
                s->cut[a][b] = s->cut[b][a] = true;
        }
        break;
    case 5: { /* a front-end restarts: it forgets its leader and epoch */
        int f = sim_between(r, 0, s->nfes - 1);
        s->fes[f] = (struct sim_fe){.up = true, .current = -1, .epoch = 0};
        sim_trace(s, "restart fe %d", f);
        break;
    }
    case 6: /* the catalog crashes for a while */
        if (s->catalog_up) {
            s->catalog_up = false;
            s->catalog_back_us = s->now_us + (uint64_t)sim_between(r, 100, 3000) * 1000;
            sim_trace(s, "catalog down");
        }
        break;
    case 7: /* the disk fills: writes fail until an operator frees space and restarts it */
        if (n->up && sim_chance(r, 0.3)) {
            n->disk_full = 1;
            sim_trace(s, "disk full on node %d", n->id);
        }
        break;
    case 8: /* a replayed notice from an older epoch, or one far in the future */
        if (sim_node_runs(n)) {
            uint64_t e = pb_epoch(n->pb);
            struct msg_notice m = {.leader = s->nodes[sim_between(r, 0, s->nnodes - 1)].id,
                                   .epoch = sim_chance(r, 0.5) && e > 1 ? e - 1
                                            : sim_chance(r, 0.5)        ? e + 1000
                                                                        : e + ((uint64_t)1 << 61)};
            int rv = pb_on_notice(n->pb, &m);
            sim_trace(s, "notice leader %d epoch %" PRIu64 " to node %d: %s", m.leader, m.epoch,
                      n->id, bz_strerror(rv));
            sim_check_leader(s, n);
        }
        break;
    default: /* a quiet step */
        break;
    }
}

/* ---------------------------------------------------------------- scripted schedules */

/*
 * Break 1 of the primary-backup issue, as found with real processes, replayed on
 * simulated time (3 replicas, one front-end, node 3 leads epoch 1): node 1 dies; the
 * leader pauses, so the front-end moves to node 2 (epoch 2, which completes when node 3
 * wakes and promises it); nodes 3 and 2 die; the front-end restarts and, seeing only node
 * 1, names it leader of epoch 2 again; node 3 comes back, having promised epoch 2 to
 * node 2. With the first release's promise it accepts node 1 for epoch 2: two leaders in
 * one epoch. With a promise that names its leader it refuses, and the cluster moves on.
 */
enum sim_act { ACT_CRASH, ACT_RESTART, ACT_PAUSE, ACT_FE_RESTART };
static const struct {
    int at_ms;
    enum sim_act act;
    int node; /* index */
    int ms;   /* pause length */
} sim_break1[] = {
    {1000, ACT_CRASH, 0, 0},    {2000, ACT_PAUSE, 2, 2500},   {6000, ACT_CRASH, 2, 0},
    {7500, ACT_CRASH, 1, 0},    {8000, ACT_FE_RESTART, 0, 0}, {8500, ACT_RESTART, 0, 0},
    {10000, ACT_RESTART, 2, 0},
};

static void sim_script(struct sim *s, size_t *next)
{
    while (*next < sizeof sim_break1 / sizeof sim_break1[0] &&
           s->now_us >= (uint64_t)sim_break1[*next].at_ms * 1000) {
        struct sim_node *n = &s->nodes[sim_break1[*next].node];
        switch (sim_break1[*next].act) {
        case ACT_CRASH:
            sim_trace(s, "script: crash node %d", n->id);
            sim_node_crash(s, n);
            break;
        case ACT_RESTART:
            sim_trace(s, "script: restart node %d", n->id);
            sim_node_start(s, n);
            break;
        case ACT_PAUSE:
            n->paused = true;
            n->paused_until_us = s->now_us + (uint64_t)sim_break1[*next].ms * 1000;
            sim_trace(s, "script: pause node %d for %d ms", n->id, sim_break1[*next].ms);
            break;
        case ACT_FE_RESTART:
            s->fes[0] = (struct sim_fe){.up = true, .current = -1, .epoch = 0};
            sim_trace(s, "script: restart the front-end");
            break;
        }
        (*next)++;
    }
}

/* ---------------------------------------------------------------- one event */

/* Faults that end by themselves: restarts, the catalog's return, a partition's heal. */
static void sim_recover(struct sim *s)
{
    if (s->catalog_back_us && s->now_us >= s->catalog_back_us) {
        s->catalog_up = true;
        s->catalog_back_us = 0;
        sim_trace(s, "catalog up");
    }
    if (s->heal_us && s->now_us >= s->heal_us) {
        memset(s->cut, 0, sizeof s->cut);
        s->heal_us = 0;
        sim_trace(s, "heal");
    }
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->up && n->disk_full && n->disk_full++ > 2000) {
            sim_trace(s, "operator frees the disk of node %d and restarts it", n->id);
            sim_node_crash(s, n);
            s->restart_us[i] = s->now_us + 1000;
        }
        if (!n->up && s->restart_us[i] && s->now_us >= s->restart_us[i]) {
            s->restart_us[i] = 0;
            n->disk_full = 0;
            sim_trace(s, "restart node %d", n->id);
            sim_node_start(s, n);
        }
    }
}

static void sim_step(struct sim *s)
{
    struct sim_ev ev = sim_pop(s);
    if (ev.at_us > s->now_us)
        s->now_us = ev.at_us;
    s->steps++;
    sim_recover(s);
    /* Events at a paused node wait until it wakes. */
    if (ev.node >= 0 && ev.node < s->nnodes && s->nodes[ev.node].paused &&
        ev.kind != EV_CLIENT_ANSWER && ev.kind != EV_CLIENT_TIMEOUT && ev.kind != EV_CLIENT_NEXT &&
        ev.kind != EV_FE_CHECK) {
        struct sim_node *n = &s->nodes[ev.node];
        if (s->now_us >= n->paused_until_us) {
            n->paused = false;
            sim_trace(s, "node %d wakes", n->id);
        } else {
            ev.at_us = n->paused_until_us;
            sim_push(s, ev);
            return;
        }
    }
    switch (ev.kind) {
    case EV_DELIVER:
        sim_on_deliver(s, &ev);
        break;
    case EV_REPLY:
    case EV_TIMEOUT:
        sim_on_outcome(s, &ev);
        break;
    case EV_TICK: {
        struct sim_node *n = &s->nodes[ev.node];
        if (!n->up || n->inc != ev.inc)
            break;
        uint64_t next = pb_tick(n->pb);
        sim_check_leader(s, n);
        sim_push(s, (struct sim_ev){
                        .at_us = next * 1000, .kind = EV_TICK, .node = ev.node, .inc = n->inc});
        break;
    }
    case EV_CLIENT_DELIVER: {
        struct sim_node *n = &s->nodes[ev.node];
        int c = (int)(ev.op % SIM_CLIENTS);
        struct sim_op *op = &s->ops[c];
        if (!n->up || !op->active || op->seq != ev.op / SIM_CLIENTS)
            break;
        if (op->is_query)
            pb_query(n->pb, op->number, (void *)(uintptr_t)ev.op);
        else {
            void *token = (void *)(uintptr_t)ev.op;
            pb_submit(n->pb, &op->trade, 1, &token);
        }
        sim_check_leader(s, n);
        break;
    }
    case EV_CLIENT_ANSWER:
        sim_on_answer(s, ev.client, ev.op, ev.answer, ev.epoch);
        free(ev.answer);
        break;
    case EV_CLIENT_TIMEOUT: {
        struct sim_op *op = &s->ops[ev.client];
        if (op->active && op->seq == ev.op)
            sim_client_retry(s, ev.client);
        break;
    }
    case EV_CLIENT_NEXT:
        if (!s->ops[ev.client].active && !s->healing)
            sim_client_next(s, ev.client);
        break;
    case EV_FE_CHECK:
        sim_fe_check(s, ev.client);
        sim_push(s, (struct sim_ev){.at_us = s->now_us + 500000,
                                    .kind = EV_FE_CHECK,
                                    .node = -1,
                                    .client = ev.client});
        break;
    }
}

/* ---------------------------------------------------------------- a schedule */

static int sim_setup(struct sim *s, const char *csv)
{
    char err[256];
    if (stockdb_open(&s->catalog, ":memory:", csv, err, sizeof err) != 0) {
        fprintf(stderr, "catalog: %s\n", err);
        return -1;
    }
    s->catalog_up = true;
    for (int k = 0; k < SIM_STOCKS; k++) {
        struct stock st;
        stockdb_lookup(s->catalog, sim_stock_names[k], &st);
        s->initial[k] = st.quantity;
    }
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        n->id = i + 1;
        n->index = i;
        n->sim = s;
        if (orderlog_open(&n->log, ":memory:", err, sizeof err) != 0) {
            fprintf(stderr, "order log: %s\n", err);
            return -1;
        }
        n->store = (struct pb_store){.ctx = n,
                                     .state = sim_st_state,
                                     .promise = sim_st_promise,
                                     .set_log_epoch = sim_st_set_log_epoch,
                                     .apply = sim_st_apply,
                                     .get = sim_st_get,
                                     .find_request = sim_st_find,
                                     .read = sim_st_read};
        sim_node_start(s, n);
    }
    for (int f = 0; f < s->nfes; f++) {
        s->fes[f] = (struct sim_fe){.up = true, .current = -1};
        sim_push(s, (struct sim_ev){.at_us = (uint64_t)(f + 1) * 1000,
                                    .kind = EV_FE_CHECK,
                                    .node = -1,
                                    .client = f});
    }
    for (int c = 0; c < SIM_CLIENTS; c++)
        sim_push(s, (struct sim_ev){.at_us = 100000 + (uint64_t)c * 1000,
                                    .kind = EV_CLIENT_NEXT,
                                    .node = -1,
                                    .client = c});
    s->max_acked = -1;
    return 0;
}

static void sim_teardown(struct sim *s)
{
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->pb) {
            n->crashing = true;
            pb_free(n->pb);
        }
        orderlog_close(n->log);
    }
    while (s->nheap > 0) {
        struct sim_ev ev = sim_pop(s);
        if (ev.kind == EV_REPLY) {
            pb_reply_free(ev.reply);
            free(ev.reply);
        }
        if (ev.sc)
            sim_call_unref(ev.sc);
        free(ev.answer);
    }
    free(s->heap);
    stockdb_close(s->catalog);
}

/* Everything healed and idle: the final invariants. */
static void sim_final_checks(struct sim *s)
{
    int leader = -1;
    uint64_t best = 0;
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (pb_role(n->pb) == PB_LEADER && pb_epoch(n->pb) >= best) {
            best = pb_epoch(n->pb);
            leader = i;
        }
    }
    if (leader < 0) {
        sim_fail(s, "no leader after healing");
        return;
    }
    struct orderlog_state ls;
    orderlog_state(s->nodes[leader].log, &ls);
    /* The log is the catalog's whole journal: no trade left out. */
    struct order *journal = NULL;
    size_t nj = 0;
    int64_t end = 0;
    char msg[200];
    int64_t qty[SIM_STOCKS];
    memcpy(qty, s->initial, sizeof qty);
    for (int64_t from = 0;; from += (int64_t)nj) {
        free(journal);
        if (stockdb_journal(s->catalog, from, MSG_MAX_ENTRIES, &journal, &nj, &end, msg,
                            sizeof msg) != 0) {
            sim_fail(s, "journal from %" PRId64 ": %s", from, msg);
            break;
        }
        for (size_t k = 0; k < nj; k++) {
            const struct order *j = &journal[k];
            int st = 0;
            while (st < SIM_STOCKS && strcmp(sim_stock_names[st], j->trade.name))
                st++;
            qty[st] += j->trade.type == TRADE_SELL ? j->trade.quantity : -j->trade.quantity;
            if (qty[st] < 0)
                sim_fail(s, "replaying the journal by number takes %s below zero at #%" PRId64,
                         j->trade.name, j->number);
            for (int i = 0; i < s->nnodes; i++) {
                struct order o;
                if (orderlog_get(s->nodes[i].log, j->number, &o) != 0 ||
                    strcmp(o.trade.request_id, j->trade.request_id) ||
                    !trade_same(&o.trade, &j->trade))
                    sim_fail(s, "node %d's #%" PRId64 " differs from the journal (%s)",
                             s->nodes[i].id, j->number, j->trade.request_id);
            }
        }
        if (nj == 0 || from + (int64_t)nj >= end)
            break;
    }
    free(journal);
    for (int i = 0; i < s->nnodes; i++) {
        struct orderlog_state st;
        orderlog_state(s->nodes[i].log, &st);
        if (st.last != end - 1)
            sim_fail(s, "node %d ends at #%" PRId64 ", the journal at #%" PRId64, s->nodes[i].id,
                     st.last, end - 1);
    }
    for (int st = 0; st < SIM_STOCKS; st++) {
        struct stock now;
        stockdb_lookup(s->catalog, sim_stock_names[st], &now);
        if (now.quantity != qty[st])
            sim_fail(s, "%s: catalog %" PRId64 ", initial + log %" PRId64, sim_stock_names[st],
                     now.quantity, qty[st]);
    }
    for (int64_t k = 0; k <= s->max_acked; k++) {
        struct order o;
        if (s->acked[k].set && (orderlog_get(s->nodes[leader].log, k, &o) != 0 ||
                                strcmp(o.trade.request_id, s->acked[k].rid)))
            sim_fail(s, "acknowledged #%" PRId64 " (%s) missing or changed", k, s->acked[k].rid);
    }
    for (int64_t k = 0; k < SIM_MAX_ACKED; k++) {
        struct order o;
        if (s->served[k].set && (orderlog_get(s->nodes[leader].log, k, &o) != 0 ||
                                 strcmp(o.trade.request_id, s->served[k].rid)))
            sim_fail(s, "#%" PRId64 " was served as %s, the log says otherwise", k,
                     s->served[k].rid);
    }
}

static bool sim_scripted; /* --break1: the scripted schedule above, random network */

static int sim_run(uint64_t seed, int nodes, bool verbose, const char *csv, uint64_t *steps)
{
    struct sim *s = xcalloc(1, sizeof *s);
    s->seed = seed;
    s->rng.s = seed * 0x9E3779B97F4A7C15ULL + 1;
    s->verbose = verbose;
    s->nnodes = sim_scripted ? 3 : nodes ? nodes : sim_between(&s->rng, 3, 5);
    s->nfes = sim_scripted ? 1 : sim_between(&s->rng, 1, 3);
    s->loss = sim_chance(&s->rng, 0.5) ? 0.0 : 0.05;
    s->dup = sim_chance(&s->rng, 0.5) ? 0.0 : 0.03;
    s->delay_max_us = sim_between(&s->rng, 200, 3000);
    /* From the seed, not the random stream, so every earlier seed keeps its schedule: a third
     * of the schedules serve production's page size, the rest 1-40 entries per page, so that
     * catch-up runs over many pages (and its prefetch) in most schedules. */
    s->page_max = seed % 3 == 0 ? MSG_LOG_PAGE_MAX : 1 + (size_t)(seed / 3 % 40);
    int rv = sim_setup(s, csv);
    double fault_rate = 0.0005 + (double)sim_between(&s->rng, 0, 30) / 10000.0;
    sim_trace(s, "seed %" PRIu64 ": %d replicas, %d front-ends, loss %.2f, dup %.2f", seed,
              s->nnodes, s->nfes, s->loss, s->dup);
    size_t script_next = 0;
    while (rv == 0 && !s->failure[0] && s->nheap > 0 && s->now_us < SIM_RUN_MS * 1000ULL) {
        if (sim_scripted)
            sim_script(s, &script_next);
        else if (sim_chance(&s->rng, fault_rate))
            sim_fault(s);
        sim_step(s);
    }
    /* Heal: every process up, every link whole, no loss; traffic stops, one last order. */
    if (rv == 0 && !s->failure[0]) {
        memset(s->cut, 0, sizeof s->cut);
        s->loss = s->dup = 0;
        s->catalog_up = true;
        for (int f = 0; f < s->nfes; f++)
            s->fes[f].up = true;
        for (int i = 0; i < s->nnodes; i++) {
            struct sim_node *n = &s->nodes[i];
            n->disk_full = 0;
            if (!n->up)
                sim_node_start(s, n);
            else if (n->paused)
                n->paused_until_us = s->now_us;
        }
        /* A replica that broke on a full disk is restarted by its operator. */
        for (int i = 0; i < s->nnodes; i++) {
            struct pb_view v;
            pb_view_get(s->nodes[i].pb, &v);
            if (!v.ready && strstr(v.reason, "storage")) {
                sim_node_crash(s, &s->nodes[i]);
                sim_node_start(s, &s->nodes[i]);
            }
        }
        sim_trace(s, "healed");
        s->healing = true;
        uint64_t until = s->now_us + SIM_QUIET_MS * 1000ULL;
        bool final_sent = false;
        while (!s->failure[0] && s->nheap > 0 && s->now_us < until) {
            if (!final_sent && s->now_us > until - SIM_QUIET_MS * 500ULL) {
                /* A new order must still commit after everything healed. */
                struct sim_op *op = &s->ops[0];
                if (!op->active) {
                    memset(op, 0, sizeof *op);
                    op->seq = ++s->next_op;
                    op->active = true;
                    op->keyed = true;
                    op->max_acked_at_start = s->max_acked;
                    snprintf(op->trade.request_id, sizeof op->trade.request_id, "k:final");
                    snprintf(op->trade.name, sizeof op->trade.name, "Alpha");
                    op->trade.type = TRADE_SELL;
                    op->trade.quantity = 1;
                    sim_client_send(s, 0);
                    final_sent = true;
                }
            }
            sim_step(s);
        }
        bool final_acked = false;
        for (int64_t k = 0; k <= s->max_acked; k++)
            final_acked |= s->acked[k].set && strcmp(s->acked[k].rid, "k:final") == 0;
        if (!s->failure[0] && !final_acked)
            sim_fail(s, "an order sent after healing was not acknowledged (liveness)");
        if (!s->failure[0])
            sim_final_checks(s);
    }
    if (s->failure[0]) {
        fprintf(stderr, "\nFAILED seed %" PRIu64 ": %s\nlast trace lines:\n", seed, s->failure);
        int first = s->ntrace > SIM_TRACE_LINES ? s->ntrace - SIM_TRACE_LINES : 0;
        for (int k = first; k < s->ntrace; k++)
            fprintf(stderr, "  %s\n", s->trace[k % SIM_TRACE_LINES]);
        fprintf(stderr, "replay: bazaar-sim --seed %" PRIu64 " --verbose\n", seed);
        rv = 1;
    } else if (verbose) {
        fprintf(stderr,
                "seed %" PRIu64 ": %" PRIu64 " steps, %" PRIu64 " acked, %" PRIu64
                " refused, %" PRIu64 " unknown, %" PRIu64 " queries, %" PRIu64 " crashes\n",
                seed, s->steps, s->acks, s->refusals, s->unknown, s->queries, s->crashes);
    }
    *steps = s->steps;
    sim_teardown(s);
    free(s);
    return rv;
}

int main(int argc, char **argv)
{
    uint64_t first = 1, count = 100, one = 0, jobs = 1, nodes = 0;
    bool verbose = false, have_one = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc &&
            parse_u64_str(argv[i + 1], UINT32_MAX, &count) == 0)
            i++;
        else if (strcmp(argv[i], "--first") == 0 && i + 1 < argc &&
                 parse_u64_str(argv[i + 1], UINT64_MAX / 2, &first) == 0)
            i++;
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc &&
                 parse_u64_str(argv[i + 1], UINT64_MAX / 2, &one) == 0)
            i++, have_one = true;
        else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc &&
                 parse_u64_str(argv[i + 1], 64, &jobs) == 0)
            i++;
        else if (strcmp(argv[i], "--replicas") == 0 && i + 1 < argc &&
                 parse_u64_str(argv[i + 1], SIM_MAX_NODES, &nodes) == 0 && nodes >= 3)
            i++;
        else if (strcmp(argv[i], "--verbose") == 0)
            verbose = true;
        else if (strcmp(argv[i], "--old-promise") == 0)
            sim_old_promise = true;
        else if (strcmp(argv[i], "--break1") == 0)
            sim_scripted = true;
        else {
            fprintf(stderr, "usage: bazaar-sim [--seeds N] [--first S] [--jobs J] [--seed S] "
                            "[--replicas 3..5] [--verbose] [--old-promise] [--break1]\n");
            return 2;
        }
    }
    log_init("sim", 0);
    log_set_level(verbose ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR + 1);
    char csv[] = "/tmp/bazaar-sim-XXXXXX";
    static const char stocks[] = "name,price,quantity\nAlpha,1,6\nBeta,2,6\nGamma,3,6\n";
    int fd = mkstemp(csv);
    if (fd < 0 || write(fd, stocks, sizeof stocks - 1) != (ssize_t)(sizeof stocks - 1)) {
        perror("stocks csv");
        return 2;
    }
    close(fd);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t failures = 0, steps = 0, runs = 0;
    if (have_one || jobs < 2)
        jobs = 1;
    /* Seeds are dealt to `jobs` processes (seed k goes to job k % jobs); each reports its
     * counts through a pipe. */
    int pipes[64][2];
    for (int j = 0; j < (int)jobs; j++) {
        if (jobs > 1 && (pipe(pipes[j]) != 0 || fork() != 0))
            continue;
        uint64_t f = 0, st_total = 0, r = 0;
        for (uint64_t k = (uint64_t)j; k < (have_one ? 1 : count); k += jobs) {
            uint64_t st = 0;
            f += sim_run(have_one ? one : first + k, (int)nodes, verbose, csv, &st) != 0;
            st_total += st;
            r++;
        }
        if (jobs == 1) {
            failures = f, steps = st_total, runs = r;
            break;
        }
        uint64_t counts[3] = {f, st_total, r};
        ssize_t w = write(pipes[j][1], counts, sizeof counts);
        _exit(w == (ssize_t)sizeof counts ? 0 : 3);
    }
    for (int j = 0; jobs > 1 && j < (int)jobs; j++) {
        uint64_t counts[3] = {1, 0, 0};
        if (read(pipes[j][0], counts, sizeof counts) != (ssize_t)sizeof counts)
            counts[0] = 1; /* a job that died counts as a failure */
        failures += counts[0];
        steps += counts[1];
        runs += counts[2];
    }
    while (jobs > 1 && wait(NULL) > 0) {
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unlink(csv);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%" PRIu64 " schedules, %" PRIu64 " failed, %" PRIu64 " steps (%.0f per schedule), "
           "%.1f s, %.0f schedules/min\n",
           runs, failures, steps, runs ? (double)steps / (double)runs : 0.0, secs,
           secs > 0 ? (double)runs * 60.0 / secs : 0.0);
    return failures ? 1 : 0;
}
