/*
 * replica.c - the production driver of the primary-backup core (pb.h):
 * threads, libcurl and SQLite around the protocol logic.
 *
 * One mutex serialises every call into the core. A loop thread runs its
 * timers; one sender thread per peer performs the calls the core starts, in
 * order, and hands each reply back (a page of a peer's log goes to the loop
 * thread instead, so the sender fetches the next page while the loop writes
 * this one). The catalog has two: the core starts the
 * next exchange before it writes the page the last one returned, and the
 * second thread performs it while the first is still in that write. A sender's
 * queue has its own lock, so a call the core starts goes out at once even
 * while the core still holds its mutex for an fsync: the leader's own write
 * overlaps its followers' (docs/design.md, "The leader's own write"). HTTP handler
 * threads hand in notices, appends, orders and queries, and an order or a
 * query waits on its own condition variable for the core's answer. After
 * every call into the core the driver publishes a view (pb_view) under a
 * second lock, so /health, /status and /metrics never wait for the core
 * while it is in an fsync.
 */
#include "replica.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "ordersvc.h"
#include "pb.h"

struct replica__queued {
    struct pb_call *call;
    struct pb_reply reply; /* on the loop's queue: the reply, performed */
    struct replica__queued *next;
};

#define REPLICA__CATALOG_THREADS 2

/* Performs one target's calls (a peer's in order, or the catalog's). */
struct replica__sender {
    struct replica *r;
    char url[CONFIG_ADDR_MAX + 16]; /* http://host:port */
    pthread_t threads[REPLICA__CATALOG_THREADS];
    int nthreads, started;
    pthread_mutex_t qlock; /* the queue and `stop`; taken after r->lock, never before */
    pthread_cond_t cond;   /* guarded by qlock */
    bool stop;
    struct replica__queued *head, **tail;
};

/* Requests handed in together, waiting for all of the core's answers; on the handler's stack. */
struct replica__group {
    pthread_cond_t cond; /* signalled when the last answer arrives */
    size_t pending;      /* guarded by r->lock */
};

/* An order or query waiting for the core's answer. */
struct replica__waiter {
    struct replica__group *group;
    struct pb_answer answer;
};

struct replica {
    const struct bz_config *cfg;
    int id;
    struct orderlog *log;
    struct pb_store store;
    struct pb *pb;

    pthread_mutex_t lock; /* every call into pb */
    pthread_cond_t loop_cond;
    bool stopping;
    pthread_t loop;
    /* Performed page calls whose replies the loop thread hands to the core (under `lock`). */
    struct replica__queued *replies, **replies_tail;
    int nsenders; /* peers, then the catalog */
    struct replica__sender senders[PB_MAX_PEERS + 1];

    pthread_mutex_t view_lock;
    struct pb_view view;
};

/* ---------------------------------------------------------------- view */

/* With r->lock held: copies what readers may see. */
static void replica__publish(struct replica *r)
{
    struct pb_view v;
    pb_view_get(r->pb, &v);
    pthread_mutex_lock(&r->view_lock);
    r->view = v;
    pthread_mutex_unlock(&r->view_lock);
}

static void replica__view(struct replica *r, struct pb_view *out)
{
    pthread_mutex_lock(&r->view_lock);
    *out = r->view;
    pthread_mutex_unlock(&r->view_lock);
}

/* ---------------------------------------------------------------- io for the core */

static uint64_t replica__now(void *ctx)
{
    (void)ctx;
    return clock_now_ms();
}

static void replica__send(void *ctx, struct pb_call *call)
{
    struct replica *r = ctx;
    int i = call->peer >= 0 ? call->peer : r->nsenders - 1;
    struct replica__sender *s = &r->senders[i];
    struct replica__queued *q = xcalloc(1, sizeof *q);
    q->call = call;
    pthread_mutex_lock(&s->qlock);
    *s->tail = q;
    s->tail = &q->next;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->qlock);
}

static void replica__answer(void *ctx, void *token, const struct pb_answer *answer)
{
    (void)ctx;
    struct replica__waiter *w = token;
    w->answer = *answer;
    if (--w->group->pending == 0)
        pthread_cond_signal(&w->group->cond);
}

/* ---------------------------------------------------------------- calls over HTTP */

/* Encodes a call, performs it and decodes the reply strictly into *reply. */
static void replica__perform(struct replica *r, const char *base, const struct pb_call *c,
                             struct pb_reply *reply)
{
    char url[CONFIG_ADDR_MAX + 64], msg[160] = "";
    json_t *body = NULL;
    struct http_reply h;
    int err = 0;
    switch (c->kind) {
    case PB_CALL_NOTICE:
        snprintf(url, sizeof url, "%s/leader", base);
        body = msg_notice_to_json(&c->notice);
        break;
    case PB_CALL_STATE:
        snprintf(url, sizeof url, "%s/state", base);
        break;
    case PB_CALL_APPEND:
    case PB_CALL_PAGE:
        if (c->kind == PB_CALL_APPEND)
            snprintf(url, sizeof url, "%s/replicate", base);
        else
            snprintf(url, sizeof url, "%s/log/%lld", base, (long long)c->from);
        err = http_client_call_binary(url, r->cfg->secret,
                                      c->kind == PB_CALL_APPEND ? c->append->wire : NULL,
                                      c->kind == PB_CALL_APPEND ? c->append->wire_len : 0,
                                      c->timeout_ms, &h, msg, sizeof msg);
        if (err) {
            /* Replicas answer 409 only to refuse an epoch older than one they promised. */
            reply->err = err == BZ_ECONFLICT ? BZ_ESTALE : err;
            if (reply->err != BZ_EUNAVAIL && reply->err != BZ_ETIMEDOUT)
                LOG_DEBUG("%s: %s", url, msg);
            return;
        }
        if (c->kind == PB_CALL_APPEND) {
            struct msg_append_reply a;
            if ((err = msg_append_reply_decode(h.body.data, h.body.len, &a, msg, sizeof msg)) ==
                0) {
                reply->ok = a.ok;
                reply->match = a.match;
                reply->last = a.last;
            }
        } else {
            err = msg_log_page_decode(h.body.data, h.body.len, &reply->entries, &reply->n, msg,
                                      sizeof msg);
        }
        http_reply_free(&h);
        if (err) {
            LOG_WARN("malformed reply from %s: %s", url, msg);
            reply->err = BZ_EUPSTREAM;
        }
        return;
    case PB_CALL_EXECUTE:
        reply->err = ordersvc_catalog_execute(r->cfg, &c->exec, &reply->exec, msg, sizeof msg);
        if (reply->err && reply->err != BZ_EUNAVAIL && reply->err != BZ_ETIMEDOUT)
            LOG_WARN("catalog exchange: %s", msg);
        return;
    case PB_CALL_CATALOG:
        snprintf(url, sizeof url, "%s/health", base);
        reply->err = http_client_request("GET", url, NULL, NULL, 0, c->timeout_ms, &h);
        if (reply->err == 0) {
            reply->err = h.status == 200 ? 0 : BZ_EUNAVAIL;
            http_reply_free(&h);
        }
        return;
    }
    json_t *data =
        http_client_call_json(url, r->cfg->secret, body, c->timeout_ms, &err, msg, sizeof msg);
    json_decref(body);
    if (!data) {
        /* Replicas answer 409 only to refuse an epoch older than one they promised. */
        reply->err = err == BZ_ECONFLICT ? BZ_ESTALE : err;
        if (reply->err != BZ_EUNAVAIL && reply->err != BZ_ETIMEDOUT)
            LOG_DEBUG("%s: %s", url, msg);
        return;
    }
    err = msg_peer_state_from_json(data, &reply->state, msg, sizeof msg); /* NOTICE, STATE */
    json_decref(data);
    if (err) {
        LOG_WARN("malformed reply from %s: %s", url, msg);
        reply->err = BZ_EUPSTREAM;
    }
}

static void replica__queued_free(struct replica__queued *q)
{
    pb_reply_free(&q->reply);
    pb_call_free(q->call);
    free(q);
}

/* With r->lock held: hands the queued page replies to the core, oldest first. */
static void replica__drain_replies(struct replica *r)
{
    while (r->replies && !r->stopping) {
        struct replica__queued *q = r->replies;
        r->replies = q->next;
        if (!r->replies)
            r->replies_tail = &r->replies;
        pb_on_reply(r->pb, q->call, &q->reply);
        replica__publish(r);
        replica__queued_free(q);
    }
}

static void *replica__sender_main(void *arg)
{
    struct replica__sender *s = arg;
    struct replica *r = s->r;
    pthread_mutex_lock(&s->qlock);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cond, &s->qlock);
        if (s->stop)
            break;
        struct replica__queued *q = s->head;
        s->head = q->next;
        if (!s->head)
            s->tail = &s->head;
        pthread_mutex_unlock(&s->qlock);

        replica__perform(r, s->url, q->call, &q->reply);

        pthread_mutex_lock(&r->lock);
        if (q->call->kind == PB_CALL_PAGE && !r->stopping) {
            /* The loop thread writes the page: this thread is free at once to fetch the next
             * one, which the core asks for before it writes this one (pb_sync.c). */
            q->next = NULL;
            *r->replies_tail = q;
            r->replies_tail = &q->next;
            pthread_cond_signal(&r->loop_cond);
            pthread_mutex_unlock(&r->lock);
            pthread_mutex_lock(&s->qlock);
            continue;
        }
        if (!r->stopping) {
            pb_on_reply(r->pb, q->call, &q->reply);
            replica__publish(r);
        }
        pthread_mutex_unlock(&r->lock);
        replica__queued_free(q);
        pthread_mutex_lock(&s->qlock);
    }
    /* Calls never performed are dropped with the core. */
    for (struct replica__queued *q = s->head, *next; q; q = next) {
        next = q->next;
        replica__queued_free(q);
    }
    s->head = NULL;
    s->tail = &s->head;
    pthread_mutex_unlock(&s->qlock);
    return NULL;
}

static void *replica__loop_main(void *arg)
{
    struct replica *r = arg;
    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        replica__drain_replies(r);
        uint64_t next = pb_tick(r->pb);
        replica__publish(r);
        uint64_t now = clock_now_ms();
        struct timespec ts;
        clock_deadline(&ts, next > now ? next - now : 1);
        pthread_cond_timedwait(&r->loop_cond, &r->lock, &ts);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* ---------------------------------------------------------------- public calls */

/* Tells every sender thread to end (after the call it is performing, if any). */
static void replica__stop_senders(struct replica *r)
{
    for (int i = 0; i < r->nsenders; i++) {
        struct replica__sender *s = &r->senders[i];
        pthread_mutex_lock(&s->qlock);
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->qlock);
    }
}

/* Frees what replica_start made, once no thread runs. */
static void replica__destroy(struct replica *r)
{
    for (struct replica__queued *q = r->replies, *next; q; q = next) {
        next = q->next;
        replica__queued_free(q);
    }
    for (int i = 0; i < r->nsenders; i++) {
        pthread_cond_destroy(&r->senders[i].cond);
        pthread_mutex_destroy(&r->senders[i].qlock);
    }
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->view_lock);
    pthread_cond_destroy(&r->loop_cond);
    free(r);
}

int replica_start(struct replica **out, const struct bz_config *cfg, int id, struct orderlog *log)
{
    struct replica *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->id = id;
    r->log = log;
    r->store = pb_store_orderlog(log);
    r->replies_tail = &r->replies;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->view_lock, NULL);
    clock_cond_init(&r->loop_cond);

    struct pb_config pc = {
        .id = id,
        .write_quorum = cfg->write_quorum == CONFIG_QUORUM_ONE ? 1 : cfg->replica_count / 2 + 1,
        .call_timeout_ms = cfg->call_timeout_ms,
    };
    for (int i = 0; i < cfg->replica_count; i++) {
        if (cfg->replicas[i].id == id)
            continue;
        struct replica__sender *s = &r->senders[pc.npeers];
        snprintf(s->url, sizeof s->url, "http://%s", cfg->replicas[i].listen);
        pc.peer_ids[pc.npeers++] = cfg->replicas[i].id;
    }
    r->nsenders = pc.npeers + 1;
    snprintf(r->senders[pc.npeers].url, sizeof r->senders[pc.npeers].url, "http://%s",
             cfg->catalog_listen);
    for (int i = 0; i < r->nsenders; i++) {
        r->senders[i].r = r;
        r->senders[i].tail = &r->senders[i].head;
        pthread_mutex_init(&r->senders[i].qlock, NULL);
        clock_cond_init(&r->senders[i].cond);
    }
    struct pb_io io = {
        .ctx = r, .now_ms = replica__now, .send = replica__send, .answer = replica__answer};

    pthread_mutex_lock(&r->lock);
    r->pb = pb_new(&pc, &io, &r->store);
    replica__publish(r);
    pthread_mutex_unlock(&r->lock);

    int rv = 0;
    for (int i = 0; i < r->nsenders && rv == 0; i++) {
        struct replica__sender *s = &r->senders[i];
        s->nthreads = i == r->nsenders - 1 ? REPLICA__CATALOG_THREADS : 1;
        for (int k = 0; k < s->nthreads && rv == 0; k++)
            if ((rv = pthread_create(&s->threads[k], NULL, replica__sender_main, s)) == 0)
                s->started++;
    }
    if (rv == 0)
        rv = pthread_create(&r->loop, NULL, replica__loop_main, r);
    if (rv) {
        LOG_ERROR("cannot start replica threads: %s", strerror(rv));
        pthread_mutex_lock(&r->lock);
        r->stopping = true;
        pthread_mutex_unlock(&r->lock);
        replica__stop_senders(r);
        for (int i = 0; i < r->nsenders; i++)
            for (int k = 0; k < r->senders[i].started; k++)
                pthread_join(r->senders[i].threads[k], NULL);
        pb_free(r->pb);
        replica__destroy(r);
        return BZ_EINTERNAL;
    }
    *out = r;
    return 0;
}

void replica_stop(struct replica *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->loop_cond);
    pthread_mutex_unlock(&r->lock);
    replica__stop_senders(r);
    pthread_join(r->loop, NULL);
    for (int i = 0; i < r->nsenders; i++)
        for (int k = 0; k < r->senders[i].started; k++)
            pthread_join(r->senders[i].threads[k], NULL);
    pthread_mutex_lock(&r->lock);
    pb_free(r->pb); /* answers any request still waiting */
    pthread_mutex_unlock(&r->lock);
    replica__destroy(r);
}

bool replica_ready(struct replica *r, char *why, size_t whylen)
{
    struct pb_view v;
    replica__view(r, &v);
    snprintf(why, whylen, "%s", v.reason);
    return v.ready;
}

int replica_notice(struct replica *r, const struct msg_notice *m)
{
    pthread_mutex_lock(&r->lock);
    int rv = pb_on_notice(r->pb, m);
    replica__publish(r);
    pthread_mutex_unlock(&r->lock);
    if (rv == 0)
        LOG_DEBUG("notice: leader %d epoch %llu", m->leader, (unsigned long long)m->epoch);
    return rv;
}

int replica_append(struct replica *r, const struct msg_append *m, struct msg_append_reply *reply)
{
    pthread_mutex_lock(&r->lock);
    int rv = pb_on_append(r->pb, m, &reply->ok, &reply->match, &reply->last);
    replica__publish(r);
    pthread_mutex_unlock(&r->lock);
    return rv;
}

/* With r->lock held, after handing requests to the core: waits for all its answers (the core bounds
 * the wait). */
static void replica__await(struct replica *r, struct replica__group *g)
{
    while (g->pending)
        pthread_cond_wait(&g->cond, &r->lock);
    replica__publish(r);
    pthread_mutex_unlock(&r->lock);
    pthread_cond_destroy(&g->cond);
}

/* The leader this replica knows of, for a 421 (0 when none, or when it is us). */
static int replica__leader_hint(struct replica *r)
{
    struct pb_view v;
    replica__view(r, &v);
    return v.leader != r->id ? v.leader : 0;
}

void replica_submit(struct replica *r, const struct trade *t, size_t n, struct trade_outcome *out)
{
    struct replica__group g = {.pending = n};
    struct replica__waiter *w = xcalloc(n ? n : 1, sizeof *w);
    void **tokens = xcalloc(n ? n : 1, sizeof *tokens);
    for (size_t i = 0; i < n; i++) {
        w[i].group = &g;
        tokens[i] = &w[i];
    }
    clock_cond_init(&g.cond);
    pthread_mutex_lock(&r->lock);
    pb_submit(r->pb, t, n, tokens);
    replica__await(r, &g);
    int hint = -1;
    for (size_t i = 0; i < n; i++) {
        const struct pb_answer *a = &w[i].answer;
        out[i] = (struct trade_outcome){.status = a->status, .number = a->status ? -1 : a->number};
        if (a->status) {
            snprintf(out[i].message, sizeof out[i].message, "%s", a->message);
            if (a->status == BZ_ENOTLEADER) {
                if (hint < 0)
                    hint = replica__leader_hint(r);
                out[i].leader = hint;
            }
        }
    }
    free(tokens);
    free(w);
}

int replica_query(struct replica *r, int64_t number, struct order *out, int *leader)
{
    *leader = 0;
    struct replica__group g = {.pending = 1};
    struct replica__waiter w = {.group = &g};
    clock_cond_init(&g.cond);
    pthread_mutex_lock(&r->lock);
    pb_query(r->pb, number, &w);
    replica__await(r, &g);
    if (w.answer.status == 0)
        *out = w.answer.order;
    if (w.answer.status == BZ_ENOTLEADER)
        *leader = replica__leader_hint(r);
    return w.answer.status;
}

json_t *replica_state_json(struct replica *r)
{
    struct pb_view v;
    replica__view(r, &v);
    return pb_view_json(&v);
}

void replica_metrics(struct replica *r, struct strbuf *out)
{
    struct pb_view v;
    replica__view(r, &v);
    pb_metrics(r->pb, &v, out);
}
