/*
 * replica.c - the production driver of the primary-backup core (pb.h): one
 * loop thread, non-blocking HTTP calls (http_async.h) and SQLite around the
 * protocol logic.
 *
 * One mutex serialises every call into the core. The loop thread owns an
 * embedded http_async client: it runs the core's timers, performs every call
 * the core starts, hands each reply back to the core, and takes in the orders
 * that HTTP event threads queue (replica_submit_async), so no thread waits
 * for an order. A call the core starts on the loop thread goes on the wire at
 * once, before the core goes on to write: the leader's own write overlaps its
 * followers' and the catalog's next exchange, and a catch-up fetches the next
 * page while it writes this one (docs/design.md, "The leader's own write" and
 * "The driver: one loop, no waiting thread"). A call started on another thread (while a handler
 * hands in a notice or an append) is queued for the loop thread. Notices,
 * appends and queries are handed in by HTTP handler threads, a query waiting
 * on its own condition variable. After every call into the core the driver
 * publishes a view (pb_view) under a second lock, so /health, /status and
 * /metrics never wait for the core while it is in an fsync.
 */
#include "replica.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "error.h"
#include "http_async.h"
#include "http_client.h"
#include "http_server.h"
#include "log.h"
#include "ordersvc.h"
#include "pb.h"

/*
 * The largest reply of a call: a log page of MSG_LOG_PAGE_MAX entries, or the
 * catalog's reply of MSG_MAX_ENTRIES results and journal entries (an entry
 * encodes in at most 151 bytes, a result in 259).
 */
#define REPLICA__REPLY_MAX   (1024 * 1024)
#define REPLICA__WAIT_MAX_MS 1000 /* the loop looks at its inbox at least this often */

_Static_assert(HTTP_ASYNC_PEERS_MAX >= CONFIG_MAX_REPLICAS,
               "one client calls every peer and the catalog");

/* One call the core started: performed on the loop thread, its reply handed back. */
struct replica__call {
    struct replica *r;
    struct pb_call *call;
    struct pb_reply reply;
    struct replica__call *next; /* r->outbox, then r->replies */
};

/* A request handed to the core, answered once the core has answered each of its tokens. */
struct replica__group {
    size_t n, pending;          /* pending: guarded by r->lock */
    const struct trade *trades; /* a submit: the caller's, until done */
    struct trade_outcome *out;
    struct replica__waiter *waiters;
    void **tokens;
    trade_outcomes_fn done; /* a submit */
    void *arg;
    bool counted;                /* a submit counted in r->orders_waiting */
    pthread_cond_t *cond;        /* a query: its waiting thread's */
    struct replica__group *next; /* r->submitted, then r->answered */
};

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

    pthread_mutex_t lock;            /* every call into pb, and `answered` */
    struct replica__group *answered; /* submits the core has fully answered, to finish */

    pthread_mutex_t inbox_lock; /* the fields below; may be taken under `lock`, never before */
    struct replica__call *outbox, **outbox_tail; /* calls started off the loop thread */
    struct replica__group *submitted, **submitted_tail;
    bool woken;              /* a wake-up is on its way */
    bool closed;             /* the loop has stopped: submits are refused */
    size_t orders_waiting;   /* handed in by replica_submit_async, not yet answered */
    uint64_t orders_refused; /* refused for ORDERSVC_WAITING_MAX */

    /* Loop thread only (and replica_stop once it has ended). */
    pthread_t loop;
    int wake_fd;
    struct http_async *async;
    struct replica__call *replies, **replies_tail; /* performed, for the core */
    char peer_urls[PB_MAX_PEERS][CONFIG_ADDR_MAX + 16], catalog_url[CONFIG_ADDR_MAX + 16];

    pthread_mutex_t view_lock;
    struct pb_view view;
};

/* The replica whose loop runs on this thread, if any. */
static _Thread_local struct replica *replica__loop_self;

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

/* The leader this replica knows of, for a 421 (0 when none, or when it is us). */
static int replica__leader_hint(struct replica *r)
{
    struct pb_view v;
    replica__view(r, &v);
    return v.leader != r->id ? v.leader : 0;
}

/* ---------------------------------------------------------------- answers */

static void replica__group_free(struct replica__group *g)
{
    free(g->tokens);
    free(g->waiters);
    free(g);
}

/* Without r->lock: a submit's outcomes from the core's answers, to its caller. */
static void replica__finish(struct replica *r, struct replica__group *g)
{
    int hint = -1;
    for (size_t i = 0; i < g->n; i++) {
        const struct pb_answer *a = &g->waiters[i].answer;
        struct trade_outcome *o = &g->out[i];
        *o = (struct trade_outcome){.status = a->status, .number = a->status ? -1 : a->number};
        if (a->status) {
            snprintf(o->message, sizeof o->message, "%s", a->message);
            if (a->status == BZ_ENOTLEADER) {
                if (hint < 0)
                    hint = replica__leader_hint(r);
                o->leader = hint;
            }
        }
    }
    if (g->counted) {
        pthread_mutex_lock(&r->inbox_lock);
        r->orders_waiting -= g->n;
        pthread_mutex_unlock(&r->inbox_lock);
    }
    g->done(g->arg, g->out, g->n);
    replica__group_free(g);
}

/* Without r->lock: finishes a list of submits (linked by next). */
static void replica__finish_list(struct replica *r, struct replica__group *g)
{
    while (g) {
        struct replica__group *next = g->next;
        replica__finish(r, g);
        g = next;
    }
}

/* Publishes the view and lets go of r->lock, then finishes the submits answered meanwhile. */
static void replica__unlock(struct replica *r)
{
    replica__publish(r);
    struct replica__group *g = r->answered;
    r->answered = NULL;
    pthread_mutex_unlock(&r->lock);
    replica__finish_list(r, g);
}

/* ---------------------------------------------------------------- io for the core */

static uint64_t replica__now(void *ctx)
{
    (void)ctx;
    return clock_now_ms();
}

static void replica__wake(struct replica *r)
{
    uint64_t one = 1;
    if (write(r->wake_fd, &one, sizeof one) != sizeof one)
        LOG_WARN("cannot wake the replica's loop: %s", strerror(errno));
}

static void replica__dispatch(struct replica *r, struct replica__call *q);

static void replica__send(void *ctx, struct pb_call *call)
{
    struct replica *r = ctx;
    struct replica__call *q = xcalloc(1, sizeof *q);
    q->r = r;
    q->call = call;
    if (replica__loop_self == r) {
        replica__dispatch(r, q); /* on the wire now, before the core writes */
        return;
    }
    pthread_mutex_lock(&r->inbox_lock);
    *r->outbox_tail = q;
    r->outbox_tail = &q->next;
    bool wake = !r->woken;
    r->woken = true;
    pthread_mutex_unlock(&r->inbox_lock);
    if (wake)
        replica__wake(r);
}

/* With r->lock held (the core calls it). */
static void replica__answer(void *ctx, void *token, const struct pb_answer *answer)
{
    struct replica *r = ctx;
    struct replica__waiter *w = token;
    struct replica__group *g = w->group;
    w->answer = *answer;
    if (--g->pending)
        return;
    if (g->cond) {
        pthread_cond_signal(g->cond);
    } else {
        g->next = r->answered;
        r->answered = g;
    }
}

/* ---------------------------------------------------------------- calls over HTTP */

/* Loop thread: a performed call (or one that could not start) joins the replies for the core. */
static void replica__push_reply(struct replica *r, struct replica__call *q)
{
    q->next = NULL;
    *r->replies_tail = q;
    r->replies_tail = &q->next;
}

/* Decodes a call's HTTP outcome (rv, and the reply when rv is 0) strictly into q->reply. */
static void replica__decode(struct replica__call *q, int rv, struct http_reply *h)
{
    const struct pb_call *c = q->call;
    struct pb_reply *reply = &q->reply;
    char msg[160] = "";
    int err = rv;
    if (err) {
        snprintf(msg, sizeof msg, "%s", bz_strerror(err));
    } else if (c->kind == PB_CALL_CATALOG) {
        reply->err = h->status == 200 ? 0 : BZ_EUNAVAIL;
        http_reply_free(h);
        return;
    } else if (c->kind == PB_CALL_NOTICE || c->kind == PB_CALL_STATE) {
        json_t *data = http_reply_data_json(h, &err, msg, sizeof msg);
        http_reply_free(h);
        if (data) {
            err = msg_peer_state_from_json(data, &reply->state, msg, sizeof msg);
            json_decref(data);
            if (err) {
                LOG_WARN("malformed reply from replica %d: %s", c->peer, msg);
                reply->err = BZ_EUPSTREAM;
                return;
            }
        }
    } else if ((err = http_reply_check_binary(h, msg, sizeof msg)) == 0) {
        if (c->kind == PB_CALL_APPEND) {
            struct msg_append_reply a;
            if ((err = msg_append_reply_decode(h->body.data, h->body.len, &a, msg, sizeof msg)) ==
                0) {
                reply->ok = a.ok;
                reply->match = a.match;
                reply->last = a.last;
            }
        } else if (c->kind == PB_CALL_PAGE) {
            err = msg_log_page_decode(h->body.data, h->body.len, &reply->entries, &reply->n, msg,
                                      sizeof msg);
        } else {
            err = ordersvc_catalog_decode(&c->exec, h, &reply->exec, msg, sizeof msg);
        }
        http_reply_free(h);
        if (err) {
            LOG_WARN("malformed reply from %s: %s", c->peer >= 0 ? "a replica" : "the catalog",
                     msg);
            reply->err = BZ_EUPSTREAM;
        }
        return;
    }
    if (!err)
        return;
    if (c->peer < 0) {
        reply->err = err;
        if (err != BZ_EUNAVAIL && err != BZ_ETIMEDOUT)
            LOG_WARN("catalog exchange: %s", msg);
        return;
    }
    /* Replicas answer 409 only to refuse an epoch older than one they promised. */
    reply->err = err == BZ_ECONFLICT ? BZ_ESTALE : err;
    if (reply->err != BZ_EUNAVAIL && reply->err != BZ_ETIMEDOUT)
        LOG_DEBUG("replica call %d: %s", (int)c->kind, msg);
}

/* http_async's callback, on the loop thread (or replica_stop's, after the loop). */
static void replica__call_done(void *arg, int rv, struct http_reply *reply)
{
    struct replica__call *q = arg;
    replica__decode(q, rv, reply);
    replica__push_reply(q->r, q);
}

/* Loop thread: puts the call on the wire; its reply (or failure) joins r->replies. */
static void replica__dispatch(struct replica *r, struct replica__call *q)
{
    const struct pb_call *c = q->call;
    char url[CONFIG_ADDR_MAX + 64];
    const char *base = c->peer >= 0 ? r->peer_urls[c->peer] : r->catalog_url;
    struct http_async_req req = {.method = "POST",
                                 .url = url,
                                 .secret = r->cfg->secret,
                                 .content_type = HTTP_BINARY_TYPE,
                                 .timeout_ms = c->timeout_ms,
                                 .idempotent = true, /* each of these may arrive twice */
                                 .reply_max = REPLICA__REPLY_MAX};
    char *owned = NULL;
    switch (c->kind) {
    case PB_CALL_NOTICE: {
        snprintf(url, sizeof url, "%s/leader", base);
        json_t *body = msg_notice_to_json(&c->notice);
        owned = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!owned) {
            q->reply.err = BZ_EINTERNAL;
            replica__push_reply(r, q);
            return;
        }
        req.body = owned;
        req.body_len = strlen(owned);
        req.content_type = NULL;
        break;
    }
    case PB_CALL_STATE:
        snprintf(url, sizeof url, "%s/state", base);
        req.method = "GET";
        break;
    case PB_CALL_APPEND:
        snprintf(url, sizeof url, "%s/replicate", base);
        req.body = c->append->wire;
        req.body_len = c->append->wire_len;
        break;
    case PB_CALL_PAGE:
        snprintf(url, sizeof url, "%s/log/%lld", base, (long long)c->from);
        req.method = "GET";
        break;
    case PB_CALL_EXECUTE:
        snprintf(url, sizeof url, "%s/execute", base);
        if (msg_exec_encode(&c->exec, &owned, &req.body_len) != 0) {
            LOG_WARN("catalog exchange: batch cannot be encoded");
            q->reply.err = BZ_EINTERNAL;
            replica__push_reply(r, q);
            return;
        }
        req.body = owned;
        break;
    case PB_CALL_CATALOG:
        snprintf(url, sizeof url, "%s/health", base);
        req.method = "GET";
        req.secret = NULL;
        break;
    }
    int rv = http_async_request(r->async, &req, replica__call_done, q);
    free(owned);
    if (rv) {
        q->reply.err = BZ_EUNAVAIL;
        replica__push_reply(r, q);
    }
}

static void replica__call_free(struct replica__call *q)
{
    pb_reply_free(&q->reply);
    pb_call_free(q->call);
    free(q);
}

/* ---------------------------------------------------------------- the loop */

/* Loop thread, with r->lock held: hands the performed calls' replies to the core, oldest first. */
static void replica__drain_replies(struct replica *r)
{
    while (r->replies) {
        struct replica__call *q = r->replies;
        r->replies = q->next;
        if (!r->replies)
            r->replies_tail = &r->replies;
        pb_on_reply(r->pb, q->call, &q->reply); /* may start calls: they join the wire now */
        replica__call_free(q);
    }
}

static void *replica__loop_main(void *arg)
{
    struct replica *r = arg;
    replica__loop_self = r;
    for (;;) {
        pthread_mutex_lock(&r->inbox_lock);
        if (r->closed) {
            pthread_mutex_unlock(&r->inbox_lock);
            return NULL; /* replica_stop answers and frees what is left */
        }
        struct replica__call *calls = r->outbox;
        struct replica__group *subs = r->submitted;
        r->outbox = NULL;
        r->outbox_tail = &r->outbox;
        r->submitted = NULL;
        r->submitted_tail = &r->submitted;
        r->woken = false;
        pthread_mutex_unlock(&r->inbox_lock);
        while (calls) {
            struct replica__call *next = calls->next;
            replica__dispatch(r, calls);
            calls = next;
        }

        pthread_mutex_lock(&r->lock);
        while (subs) {
            struct replica__group *next = subs->next;
            pb_submit(r->pb, subs->trades, subs->n, subs->tokens);
            subs = next;
        }
        replica__drain_replies(r);
        uint64_t next = pb_tick(r->pb);
        replica__drain_replies(r); /* calls that failed at once */
        replica__unlock(r);

        uint64_t now = clock_now_ms();
        uint64_t wait = next > now ? next - now : 1;
        if (wait > REPLICA__WAIT_MAX_MS)
            wait = REPLICA__WAIT_MAX_MS;
        int calls_wait = http_async_timeout_ms(r->async);
        if (calls_wait >= 0 && (uint64_t)calls_wait < wait)
            wait = (uint64_t)calls_wait;
        struct pollfd fds[2] = {{.fd = r->wake_fd, .events = POLLIN},
                                {.fd = http_async_fd(r->async), .events = POLLIN}};
        if (poll(fds, 2, r->replies ? 0 : (int)wait) < 0 && errno != EINTR)
            LOG_WARN("replica loop: poll: %s", strerror(errno));
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            if (read(r->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                LOG_WARN("replica loop: cannot read its wake-up: %s", strerror(errno));
        }
        http_async_run(r->async); /* replies and deadlines: r->replies */
    }
}

/* ---------------------------------------------------------------- public calls */

/* Frees what replica_start made, once no thread runs. */
static void replica__destroy(struct replica *r)
{
    while (r->replies) {
        struct replica__call *q = r->replies;
        r->replies = q->next;
        replica__call_free(q);
    }
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->inbox_lock);
    pthread_mutex_destroy(&r->view_lock);
    free(r);
}

int replica_start(struct replica **out, const struct bz_config *cfg, int id, struct orderlog *log)
{
    struct replica *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->id = id;
    r->log = log;
    r->store = pb_store_orderlog(log);
    r->outbox_tail = &r->outbox;
    r->submitted_tail = &r->submitted;
    r->replies_tail = &r->replies;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->inbox_lock, NULL);
    pthread_mutex_init(&r->view_lock, NULL);
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wake_fd < 0) {
        LOG_ERROR("cannot make the replica's wake-up descriptor: %s", strerror(errno));
        replica__destroy(r);
        return BZ_EINTERNAL;
    }

    struct pb_config pc = {
        .id = id,
        .write_quorum = cfg->write_quorum == CONFIG_QUORUM_ONE ? 1 : cfg->replica_count / 2 + 1,
        .call_timeout_ms = cfg->call_timeout_ms,
    };
    for (int i = 0; i < cfg->replica_count; i++) {
        if (cfg->replicas[i].id == id)
            continue;
        snprintf(r->peer_urls[pc.npeers], sizeof r->peer_urls[pc.npeers], "http://%s",
                 cfg->replicas[i].listen);
        pc.peer_ids[pc.npeers++] = cfg->replicas[i].id;
    }
    snprintf(r->catalog_url, sizeof r->catalog_url, "http://%s", cfg->catalog_listen);
    r->async = http_async_embed();
    struct pb_io io = {
        .ctx = r, .now_ms = replica__now, .send = replica__send, .answer = replica__answer};

    pthread_mutex_lock(&r->lock);
    r->pb = pb_new(&pc, &io, &r->store); /* its first calls wait in the outbox */
    replica__publish(r);
    pthread_mutex_unlock(&r->lock);

    int rv = pthread_create(&r->loop, NULL, replica__loop_main, r);
    if (rv) {
        LOG_ERROR("cannot start the replica's loop thread: %s", strerror(rv));
        while (r->outbox) {
            struct replica__call *q = r->outbox;
            r->outbox = q->next;
            replica__call_free(q);
        }
        http_async_stop(r->async);
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
    pthread_mutex_lock(&r->inbox_lock);
    r->closed = true;
    pthread_mutex_unlock(&r->inbox_lock);
    replica__wake(r);
    pthread_join(r->loop, NULL);
    /* The calls still open run to their ends (each has its deadline); the core is past
     * caring for their replies, which replica__destroy drops. */
    http_async_stop(r->async);
    struct replica__group *left = r->submitted; /* queued, never handed to the core */
    r->submitted = NULL;
    pthread_mutex_lock(&r->lock);
    pb_free(r->pb); /* answers every request still waiting */
    struct replica__group *answered = r->answered;
    r->answered = NULL;
    pthread_mutex_unlock(&r->lock);
    replica__finish_list(r, answered);
    for (struct replica__group *g = left; g; g = g->next)
        for (size_t i = 0; i < g->n; i++)
            g->waiters[i].answer =
                (struct pb_answer){.status = BZ_EUNAVAIL, .message = "the replica is stopping"};
    replica__finish_list(r, left);
    while (r->outbox) {
        struct replica__call *q = r->outbox;
        r->outbox = q->next;
        replica__call_free(q);
    }
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
    replica__unlock(r);
    if (rv == 0)
        LOG_DEBUG("notice: leader %d epoch %llu", m->leader, (unsigned long long)m->epoch);
    return rv;
}

int replica_append(struct replica *r, const struct msg_append *m, struct msg_append_reply *reply)
{
    pthread_mutex_lock(&r->lock);
    int rv = pb_on_append(r->pb, m, &reply->ok, &reply->match, &reply->last);
    replica__unlock(r);
    return rv;
}

void replica_submit_async(struct replica *r, const struct trade *t, size_t n,
                          struct trade_outcome *out, trade_outcomes_fn done, void *arg)
{
    struct replica__group *g = xcalloc(1, sizeof *g);
    *g = (struct replica__group){.n = n,
                                 .pending = n,
                                 .trades = t,
                                 .out = out,
                                 .done = done,
                                 .arg = arg,
                                 .waiters = xcalloc(n ? n : 1, sizeof *g->waiters),
                                 .tokens = xcalloc(n ? n : 1, sizeof *g->tokens)};
    for (size_t i = 0; i < n; i++) {
        g->waiters[i].group = g;
        g->tokens[i] = &g->waiters[i];
    }
    pthread_mutex_lock(&r->inbox_lock);
    const char *refusal = r->closed                                      ? "the replica is stopping"
                          : r->orders_waiting + n > ORDERSVC_WAITING_MAX ? ORDERSVC_BUSY
                                                                         : NULL;
    bool wake = false;
    if (refusal && !r->closed)
        r->orders_refused += n;
    if (!refusal && n > 0) {
        r->orders_waiting += n;
        g->counted = true;
        *r->submitted_tail = g;
        r->submitted_tail = &g->next;
        wake = !r->woken;
        r->woken = true;
    }
    pthread_mutex_unlock(&r->inbox_lock);
    if (refusal || n == 0) {
        for (size_t i = 0; i < n; i++) {
            g->waiters[i].answer = (struct pb_answer){.status = BZ_EUNAVAIL};
            snprintf(g->waiters[i].answer.message, sizeof g->waiters[i].answer.message, "%s",
                     refusal);
        }
        replica__finish(r, g);
    } else if (wake) {
        replica__wake(r);
    }
}

int replica_query(struct replica *r, int64_t number, struct order *out, int *leader)
{
    *leader = 0;
    pthread_cond_t cond;
    clock_cond_init(&cond);
    struct replica__group g = {.n = 1, .pending = 1, .cond = &cond};
    struct replica__waiter w = {.group = &g};
    pthread_mutex_lock(&r->lock);
    pb_query(r->pb, number, &w);
    while (g.pending) /* the core bounds the wait */
        pthread_cond_wait(&cond, &r->lock);
    replica__unlock(r);
    pthread_cond_destroy(&cond);
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
    pthread_mutex_lock(&r->inbox_lock);
    uint64_t waiting = r->orders_waiting, refused = r->orders_refused;
    pthread_mutex_unlock(&r->inbox_lock);
    ordersvc_render_waiting(out, waiting, refused);
}
