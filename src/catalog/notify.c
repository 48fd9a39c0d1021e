#include "notify.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "http_async.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"

#define NOTIFY__QUEUE      8192 /* changes waiting per front-end */
#define NOTIFY__ATTEMPTS   3    /* tries of one message before it is dropped (a gap) */
#define NOTIFY__TIMEOUT_MS 500  /* deadline of one POST /invalidate */
#define NOTIFY__RETRY_MS   50   /* pause after a failed try, times the attempt number */

/* One front-end: its queue, its numbering and the message being delivered to it. */
struct notify__target {
    struct notify *owner;
    char addr[CONFIG_ADDR_MAX];
    char url[CONFIG_ADDR_MAX + 32];

    /* Guarded by owner->lock. */
    struct msg_inval ring[NOTIFY__QUEUE];
    size_t head, count;
    bool overflowed;     /* changes were lost: skip a number so the front-end empties its cache */
    uint64_t seq;        /* last number used (sent, or skipped) */
    uint64_t last_ok_ms; /* 0 until the first delivery */
    bool reachable;
    /* The message being delivered: from its first try until it is delivered or dropped. */
    bool busy;
    bool inflight;     /* a try is on the http_async loop */
    char *msg;         /* its body */
    size_t msg_stocks; /* changes it carries; 0 for a heartbeat */
    uint64_t msg_seq;
    int attempts;       /* tries made */
    uint64_t retry_at;  /* busy: the next try; idle: no new message before (after a failure) */
    uint64_t last_send; /* when the last message ended */

    atomic_uint_fast64_t delivered, dropped, heartbeats, failures;
};

struct notify {
    const struct bz_config *cfg;
    uint64_t stream; /* this run's id, random */
    struct http_async *async;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the timer thread's: a retry or a heartbeat may be due earlier */
    bool stopping;
    pthread_t timer;
    int ntargets;
    struct notify__target targets[CONFIG_MAX_NOTIFY];
    atomic_uint_fast64_t overflows;
};

static void notify__try(struct notify__target *t, uint64_t now);

/*
 * With the lock: makes the next message (what is queued, or a heartbeat when nothing is)
 * and tries it.
 */
static void notify__begin(struct notify__target *t, uint64_t now)
{
    struct notify *n = t->owner;
    if (t->overflowed) {
        t->overflowed = false;
        t->seq++; /* the lost changes' number: the front-end sees the gap */
        atomic_fetch_add(&t->dropped, 1);
        LOG_WARN("invalidation queue for %s overflowed: it will empty its cache", t->addr);
    }
    struct msg_inval_batch batch;
    batch.stream = n->stream;
    batch.n = 0;
    /* Up to MSG_INVAL_BATCH_MAX queued changes, keeping the newest version of each name. */
    while (t->count > 0 && batch.n < MSG_INVAL_BATCH_MAX) {
        struct msg_inval *it = &t->ring[t->head];
        size_t j = 0;
        while (j < batch.n && strcmp(batch.stocks[j].name, it->name) != 0)
            j++;
        if (j == batch.n)
            batch.stocks[batch.n++] = *it;
        else if (it->version > batch.stocks[j].version)
            batch.stocks[j].version = it->version;
        t->head = (t->head + 1) % NOTIFY__QUEUE;
        t->count--;
    }
    if (batch.n > 0)
        t->seq++;
    batch.seq = t->seq;
    json_t *obj = msg_inval_batch_to_json(&batch);
    t->msg = xjson_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    t->msg_stocks = batch.n;
    t->msg_seq = batch.seq;
    t->attempts = 0;
    t->busy = true;
    notify__try(t, now);
}

/* With the lock: the message has been delivered or dropped (a failure: its number stays used). */
static void notify__end(struct notify__target *t, bool ok, uint64_t now)
{
    struct notify *n = t->owner;
    free(t->msg);
    t->msg = NULL;
    t->busy = false;
    t->last_send = now;
    if (ok) {
        t->retry_at = 0;
        t->last_ok_ms = now;
        if (!t->reachable && t->last_ok_ms)
            LOG_INFO("invalidations reach %s (seq %llu)", t->addr, (unsigned long long)t->msg_seq);
        t->reachable = true;
        if (t->msg_stocks)
            atomic_fetch_add(&t->delivered, t->msg_stocks);
        else
            atomic_fetch_add(&t->heartbeats, 1);
        /* What queued meanwhile leaves at once (also while stopping: flush it). */
        if (t->count > 0 || t->overflowed)
            notify__begin(t, now);
    } else {
        /* Until it answers again, try once per heartbeat (changes queue up and coalesce). */
        t->retry_at = now + (uint64_t)n->cfg->heartbeat_ms;
        atomic_fetch_add(&t->failures, 1);
        if (t->msg_stocks)
            atomic_fetch_add(&t->dropped, 1);
        if (t->reachable)
            LOG_WARN("cannot deliver invalidations to %s: it will empty its cache when it "
                     "hears from us again",
                     t->addr);
        t->reachable = false;
    }
    /* The timer never waits past a heartbeat, so only a stop needs to wake it here. */
    if (n->stopping)
        pthread_cond_broadcast(&n->cond);
}

/*
 * With the lock: a try failed (`refused`: a 4xx, which retrying will not mend). Schedules the
 * next try, or drops the message once its tries are spent; a heartbeat gets one, since a lost
 * heartbeat is just late.
 */
static void notify__try_failed(struct notify__target *t, bool refused, uint64_t now)
{
    int attempts = t->msg_stocks ? NOTIFY__ATTEMPTS : 1;
    if (refused || t->attempts >= attempts) {
        notify__end(t, false, now);
        return;
    }
    t->retry_at = now + (uint64_t)NOTIFY__RETRY_MS * (uint64_t)t->attempts;
    pthread_cond_broadcast(&t->owner->cond);
}

/* A try ended, on the http_async loop. */
static void notify__done(void *arg, int rv, struct http_reply *reply)
{
    struct notify__target *t = arg;
    struct notify *n = t->owner;
    int status = rv ? 0 : reply->status;
    if (rv == 0)
        http_reply_free(reply);
    pthread_mutex_lock(&n->lock);
    t->inflight = false;
    uint64_t now = clock_now_ms();
    if (status == 200)
        notify__end(t, true, now);
    else
        notify__try_failed(t, status >= 400 && status < 500, now); /* 4xx: wrong secret? */
    pthread_mutex_unlock(&n->lock);
}

/* With the lock: one try of the current message, on the http_async loop. */
static void notify__try(struct notify__target *t, uint64_t now)
{
    struct notify *n = t->owner;
    struct http_async_req r = {.method = "POST",
                               .url = t->url,
                               .secret = n->cfg->secret,
                               .body = t->msg,
                               .body_len = strlen(t->msg),
                               .timeout_ms = NOTIFY__TIMEOUT_MS,
                               .idempotent = true}; /* a duplicate message is harmless */
    t->attempts++;
    t->inflight = true;
    if (http_async_request(n->async, &r, notify__done, t) != 0) {
        t->inflight = false; /* cannot even queue it (stopping): this try failed */
        notify__try_failed(t, false, now);
    }
}

void notify_stock_changed(struct notify *n, const char *name, uint64_t version)
{
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < n->ntargets; i++) {
        struct notify__target *t = &n->targets[i];
        if (t->count == NOTIFY__QUEUE) {
            t->overflowed = true;
            atomic_fetch_add(&n->overflows, 1);
            continue;
        }
        struct msg_inval *it = &t->ring[(t->head + t->count) % NOTIFY__QUEUE];
        snprintf(it->name, sizeof it->name, "%s", name);
        it->version = version;
        t->count++;
    }
    pthread_mutex_unlock(&n->lock);
}

void notify_flush(struct notify *n)
{
    pthread_mutex_lock(&n->lock);
    uint64_t now = clock_now_ms();
    for (int i = 0; i < n->ntargets; i++) {
        struct notify__target *t = &n->targets[i];
        /* Nothing on its way to this front-end: what is queued leaves now, from this thread. */
        if (!t->busy && !n->stopping && (t->count > 0 || t->overflowed) && now >= t->retry_at)
            notify__begin(t, now);
    }
    pthread_mutex_unlock(&n->lock);
}

/*
 * The timer thread: the tries that are due after a pause (a retry, the first message after a
 * failure, a heartbeat). Changes themselves leave from notify_stock_changed and from the end
 * of the previous message, without this thread.
 */
static void *notify__timer_main(void *arg)
{
    struct notify *n = arg;
    uint64_t hb = (uint64_t)n->cfg->heartbeat_ms;
    pthread_mutex_lock(&n->lock);
    for (;;) {
        uint64_t now = clock_now_ms(), next = now + hb;
        bool pending = false; /* stopping: something can still be flushed */
        for (int i = 0; i < n->ntargets; i++) {
            struct notify__target *t = &n->targets[i];
            if (t->inflight)
                continue;
            bool work = t->count > 0 || t->overflowed;
            if (n->stopping && !t->busy && (!work || !t->reachable))
                continue; /* flushed, or never hang on a dead front-end */
            pending = true;
            uint64_t due =
                t->busy ? t->retry_at
                : work  ? t->retry_at
                        : (t->last_send + hb > t->retry_at ? t->last_send + hb : t->retry_at);
            if (now >= due) {
                if (t->busy)
                    notify__try(t, now);
                else if (!n->stopping || work)
                    notify__begin(t, now);
                continue;
            }
            if (due < next)
                next = due;
        }
        bool inflight = false;
        for (int i = 0; i < n->ntargets; i++)
            inflight = inflight || n->targets[i].inflight;
        if (n->stopping && !pending && !inflight)
            break;
        struct timespec ts;
        clock_deadline(&ts, next - now);
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

int notify_start(struct notify **out, const struct bz_config *cfg)
{
    struct notify *n = xcalloc(1, sizeof *n);
    n->cfg = cfg;
    char hex[17];
    util_random_hex(hex, 8);
    n->stream = (uint64_t)strtoull(hex, NULL, 16) & (uint64_t)INT64_MAX;
    char targets[CONFIG_MAX_NOTIFY][CONFIG_ADDR_MAX];
    n->ntargets = config_notify_targets(cfg, targets, CONFIG_MAX_NOTIFY); /* validated at start */
    if (n->ntargets < 0)
        n->ntargets = 0;
    pthread_mutex_init(&n->lock, NULL);
    clock_cond_init(&n->cond);
    n->async = http_async_start();
    for (int i = 0; i < n->ntargets; i++) {
        struct notify__target *t = &n->targets[i];
        t->owner = n;
        snprintf(t->addr, sizeof t->addr, "%.*s", CONFIG_ADDR_MAX - 1, targets[i]);
        snprintf(t->url, sizeof t->url, "http://%.*s/invalidate", CONFIG_ADDR_MAX - 1, targets[i]);
    }
    pthread_create(&n->timer, NULL, notify__timer_main, n);
    *out = n;
    return 0;
}

void notify_stop(struct notify *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->timer, NULL); /* ends once every queue is flushed or its target is down */
    http_async_stop(n->async);    /* tries still in flight end at their deadline */
    for (int i = 0; i < n->ntargets; i++)
        free(n->targets[i].msg);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
    free(n);
}

uint64_t notify_pending(struct notify *n)
{
    uint64_t pending = 0;
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < n->ntargets; i++)
        pending += n->targets[i].count;
    pthread_mutex_unlock(&n->lock);
    return pending;
}

json_t *notify_status_json(struct notify *n)
{
    json_t *arr = json_array();
    uint64_t now = clock_now_ms();
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < n->ntargets; i++) {
        struct notify__target *t = &n->targets[i];
        json_array_append_new(
            arr, json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:o}", "target", t->addr, "reachable",
                           t->reachable, "seq", (json_int_t)t->seq, "pending", (json_int_t)t->count,
                           "delivered", (json_int_t)atomic_load(&t->delivered), "dropped",
                           (json_int_t)atomic_load(&t->dropped), "last_ok_ms_ago",
                           t->last_ok_ms > 1 ? json_integer((json_int_t)(now - t->last_ok_ms))
                                             : json_null()));
    }
    pthread_mutex_unlock(&n->lock);
    return arr;
}

void notify_metrics(struct notify *n, struct strbuf *out)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } counters[] = {
        {"bazaar_catalog_invalidations_sent_total", "Invalidations delivered, per front-end.",
         offsetof(struct notify__target, delivered)},
        {"bazaar_catalog_invalidations_dropped_total",
         "Invalidation messages given up after retries (the front-end sees a gap), per front-end.",
         offsetof(struct notify__target, dropped)},
        {"bazaar_catalog_invalidation_heartbeats_total", "Heartbeats delivered, per front-end.",
         offsetof(struct notify__target, heartbeats)},
        {"bazaar_catalog_invalidation_failures_total",
         "Failed deliveries (messages and heartbeats), per front-end.",
         offsetof(struct notify__target, failures)},
    };
    char labels[CONFIG_ADDR_MAX + 16];
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        metrics_render_header(out, counters[c].name, "counter", counters[c].help);
        for (int i = 0; i < n->ntargets; i++) {
            struct notify__target *t = &n->targets[i];
            snprintf(labels, sizeof labels, "target=\"%s\"", t->addr);
            metrics_render_value(
                out, counters[c].name, labels,
                atomic_load((atomic_uint_fast64_t *)((char *)t + counters[c].offset)));
        }
    }
    metrics_render_header(out, "bazaar_catalog_invalidations_pending", "gauge",
                          "Invalidations queued, per front-end.");
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < n->ntargets; i++) {
        snprintf(labels, sizeof labels, "target=\"%s\"", n->targets[i].addr);
        metrics_render_value(out, "bazaar_catalog_invalidations_pending", labels,
                             n->targets[i].count);
    }
    pthread_mutex_unlock(&n->lock);
    metrics_render_simple(out, "bazaar_catalog_invalidation_overflows_total", "counter",
                          "Changes that found a front-end's queue full.",
                          atomic_load(&n->overflows));
}
