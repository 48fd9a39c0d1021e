#include "notify.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"

#define NOTIFY__QUEUE      8192 /* changes waiting per front-end */
#define NOTIFY__ATTEMPTS   3    /* tries of one message before it is dropped (a gap) */
#define NOTIFY__TIMEOUT_MS 500  /* deadline of one POST /invalidate */
#define NOTIFY__RETRY_MS   50   /* pause after a failed try, times the attempt number */

/* One front-end: its queue, its numbering and its sender thread. */
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
    pthread_t thread;

    atomic_uint_fast64_t delivered, dropped, heartbeats, failures;
};

struct notify {
    const struct bz_config *cfg;
    uint64_t stream; /* this run's id, random */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    int ntargets;
    struct notify__target targets[CONFIG_MAX_NOTIFY];
    atomic_uint_fast64_t overflows;
};

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
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

/* Takes up to MSG_INVAL_BATCH_MAX queued changes, keeping the newest version of each name. */
static void notify__take(struct notify__target *t, struct msg_inval_batch *batch)
{
    batch->n = 0;
    while (t->count > 0 && batch->n < MSG_INVAL_BATCH_MAX) {
        struct msg_inval *it = &t->ring[t->head];
        size_t j = 0;
        while (j < batch->n && strcmp(batch->stocks[j].name, it->name) != 0)
            j++;
        if (j == batch->n)
            batch->stocks[batch->n++] = *it;
        else if (it->version > batch->stocks[j].version)
            batch->stocks[j].version = it->version;
        t->head = (t->head + 1) % NOTIFY__QUEUE;
        t->count--;
    }
}

/* One POST with brief retries. true when the front-end took it. */
static bool notify__deliver(struct notify__target *t, const struct msg_inval_batch *batch)
{
    struct notify *n = t->owner;
    json_t *obj = msg_inval_batch_to_json(batch);
    char *body = xjson_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    int attempts = batch->n ? NOTIFY__ATTEMPTS : 1; /* a lost heartbeat is just late */
    bool ok = false;
    for (int attempt = 0; attempt < attempts && !ok; attempt++) {
        if (attempt > 0) {
            struct timespec ts = {0, NOTIFY__RETRY_MS * 1000000L * attempt};
            nanosleep(&ts, NULL);
        }
        struct http_reply reply;
        int rv = http_client_request("POST", t->url, n->cfg->secret, body, strlen(body),
                                     NOTIFY__TIMEOUT_MS, &reply);
        int status = rv ? 0 : reply.status;
        if (rv == 0)
            http_reply_free(&reply);
        ok = status == 200;
        if (status >= 400 && status < 500)
            break; /* refused (wrong secret?): retrying will not help */
    }
    free(body);
    return ok;
}

static void *notify__main(void *arg)
{
    struct notify__target *t = arg;
    struct notify *n = t->owner;
    struct msg_inval_batch batch;
    batch.stream = n->stream;
    uint64_t hb = (uint64_t)n->cfg->heartbeat_ms;
    uint64_t last_send = 0, retry_at = 0;

    pthread_mutex_lock(&n->lock);
    for (;;) {
        if (n->stopping && (t->count == 0 || !t->reachable))
            break; /* flush what can be flushed; never hang on a dead front-end */
        uint64_t now = clock_now_ms();
        bool work = t->count > 0 || t->overflowed;
        uint64_t due = work ? retry_at : (last_send + hb > retry_at ? last_send + hb : retry_at);
        if (now < due) {
            struct timespec ts;
            clock_deadline(&ts, due - now);
            pthread_cond_timedwait(&n->cond, &n->lock, &ts);
            continue;
        }
        if (t->overflowed) {
            t->overflowed = false;
            t->seq++; /* the lost changes' number: the front-end sees the gap */
            atomic_fetch_add(&t->dropped, 1);
            LOG_WARN("invalidation queue for %s overflowed: it will empty its cache", t->addr);
        }
        notify__take(t, &batch);
        if (batch.n > 0)
            t->seq++;
        batch.seq = t->seq;
        pthread_mutex_unlock(&n->lock);

        bool ok = notify__deliver(t, &batch);

        pthread_mutex_lock(&n->lock);
        last_send = clock_now_ms();
        if (ok) {
            retry_at = 0;
            t->last_ok_ms = last_send;
            if (!t->reachable && t->last_ok_ms)
                LOG_INFO("invalidations reach %s (seq %llu)", t->addr,
                         (unsigned long long)batch.seq);
            t->reachable = true;
            if (batch.n)
                atomic_fetch_add(&t->delivered, batch.n);
            else
                atomic_fetch_add(&t->heartbeats, 1);
        } else {
            /* Its number stays used, so the front-end sees a gap; until it answers again,
             * try once per heartbeat (changes queue up and coalesce meanwhile). */
            retry_at = last_send + hb;
            atomic_fetch_add(&t->failures, 1);
            if (batch.n)
                atomic_fetch_add(&t->dropped, 1);
            if (t->reachable)
                LOG_WARN("cannot deliver invalidations to %s: it will empty its cache when it "
                         "hears from us again",
                         t->addr);
            t->reachable = false;
        }
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
    for (int i = 0; i < n->ntargets; i++) {
        struct notify__target *t = &n->targets[i];
        t->owner = n;
        snprintf(t->addr, sizeof t->addr, "%.*s", CONFIG_ADDR_MAX - 1, targets[i]);
        snprintf(t->url, sizeof t->url, "http://%.*s/invalidate", CONFIG_ADDR_MAX - 1, targets[i]);
        pthread_create(&t->thread, NULL, notify__main, t);
    }
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
    for (int i = 0; i < n->ntargets; i++)
        pthread_join(n->targets[i].thread, NULL);
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
