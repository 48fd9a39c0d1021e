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

#define NOTIFY__QUEUE      8192
#define NOTIFY__ATTEMPTS   3
#define NOTIFY__TIMEOUT_MS 500

struct notify__item {
    char name[STOCK_NAME_MAX + 1];
    uint64_t version;
};

struct notify {
    const struct bz_config *cfg;
    struct stockdb *db;
    char urls[CONFIG_MAX_NOTIFY][CONFIG_ADDR_MAX + 32]; /* each front-end's /invalidate */
    int nurls;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct notify__item ring[NOTIFY__QUEUE];
    size_t head, count;
    bool overflowed; /* changes were dropped: invalidate everything */
    bool stopping;
    pthread_t thread;

    atomic_uint_fast64_t sent, failed, overflows;
};

void notify_stock_changed(struct notify *n, const char *name, uint64_t version)
{
    pthread_mutex_lock(&n->lock);
    if (n->count == NOTIFY__QUEUE) {
        n->overflowed = true;
        atomic_fetch_add(&n->overflows, 1);
    } else {
        struct notify__item *it = &n->ring[(n->head + n->count) % NOTIFY__QUEUE];
        snprintf(it->name, sizeof it->name, "%s", name);
        it->version = version;
        n->count++;
    }
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

/* One invalidation to one front-end, with brief retries. */
static void notify__send_one(struct notify *n, const char *url, const struct notify__item *it)
{
    struct msg_inval m;
    snprintf(m.name, sizeof m.name, "%s", it->name);
    m.version = it->version;
    json_t *obj = msg_inval_to_json(&m);
    char *body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    for (int attempt = 0; attempt < NOTIFY__ATTEMPTS; attempt++) {
        struct http_reply reply;
        int rv = http_client_request("POST", url, n->cfg->secret, body, strlen(body),
                                     NOTIFY__TIMEOUT_MS, &reply);
        int status = rv ? 0 : reply.status;
        if (rv == 0)
            http_reply_free(&reply);
        if (status == 200) {
            atomic_fetch_add(&n->sent, 1);
            LOG_DEBUG("INVALIDATE %s (version %llu) sent", it->name,
                      (unsigned long long)it->version);
            free(body);
            return;
        }
        if (status >= 400 && status < 500)
            break; /* refused (wrong secret?): retrying will not help */
        struct timespec ts = {0, 50000000L * (attempt + 1)};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_add(&n->failed, 1);
    LOG_WARN("could not invalidate %s at %s", it->name, url);
    free(body);
}

static void notify__send(struct notify *n, const struct notify__item *it)
{
    for (int i = 0; i < n->nurls; i++)
        notify__send_one(n, n->urls[i], it);
}

/* Takes up to `max` queued items, keeping only the newest version of each name. */
static size_t notify__take(struct notify *n, struct notify__item *batch, size_t max)
{
    size_t k = 0;
    while (n->count > 0 && k < max) {
        struct notify__item *it = &n->ring[n->head];
        n->head = (n->head + 1) % NOTIFY__QUEUE;
        n->count--;
        size_t j = 0;
        while (j < k && strcmp(batch[j].name, it->name) != 0)
            j++;
        if (j == k)
            batch[k++] = *it;
        else if (it->version > batch[j].version)
            batch[j].version = it->version;
    }
    return k;
}

static void *notify__main(void *arg)
{
    struct notify *n = arg;
    struct notify__item batch[64];
    pthread_mutex_lock(&n->lock);
    for (;;) {
        while (n->count == 0 && !n->overflowed && !n->stopping)
            pthread_cond_wait(&n->cond, &n->lock);
        if (n->count == 0 && !n->overflowed && n->stopping)
            break;
        bool all = n->overflowed;
        n->overflowed = false;
        size_t k = notify__take(n, batch, sizeof batch / sizeof batch[0]);
        pthread_mutex_unlock(&n->lock);
        for (size_t i = 0; i < k; i++)
            notify__send(n, &batch[i]);
        if (all) {
            LOG_WARN("invalidation queue overflowed: invalidating every stock");
            for (size_t i = 0; i < stockdb_count(n->db); i++) {
                struct notify__item it;
                struct stock s;
                stockdb_get_at(n->db, i, &s);
                snprintf(it.name, sizeof it.name, "%s", s.name);
                it.version = s.version;
                notify__send(n, &it);
            }
        }
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

int notify_start(struct notify **out, const struct bz_config *cfg, struct stockdb *db)
{
    struct notify *n = xcalloc(1, sizeof *n);
    n->cfg = cfg;
    n->db = db;
    char targets[CONFIG_MAX_NOTIFY][CONFIG_ADDR_MAX];
    n->nurls = config_notify_targets(cfg, targets, CONFIG_MAX_NOTIFY); /* validated at start */
    for (int i = 0; i < n->nurls; i++)
        snprintf(n->urls[i], sizeof n->urls[i], "http://%.*s/invalidate", CONFIG_ADDR_MAX - 1,
                 targets[i]);
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->cond, NULL);
    pthread_create(&n->thread, NULL, notify__main, n);
    *out = n;
    return 0;
}

void notify_stop(struct notify *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->thread, NULL);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cond);
    free(n);
}

void notify_metrics(struct notify *n, struct strbuf *out)
{
    metrics_render_simple(out, "bazaar_catalog_invalidations_sent_total", "counter",
                          "Invalidations delivered to the front-end.", atomic_load(&n->sent));
    metrics_render_simple(out, "bazaar_catalog_invalidations_failed_total", "counter",
                          "Invalidations given up after retries.", atomic_load(&n->failed));
    metrics_render_simple(out, "bazaar_catalog_invalidation_overflows_total", "counter",
                          "Changes that found the push queue full.", atomic_load(&n->overflows));
}
