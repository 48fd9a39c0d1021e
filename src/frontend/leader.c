#include "leader.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "select.h"

#define LEADER__PING_MS        300  /* deadline of one health ping */
#define LEADER__FAILOVER_MS    8000 /* how long leader__forward keeps retrying */
#define LEADER__RETRY_PAUSE_MS 20

struct leader__replica {
    int id;
    char url[CONFIG_ADDR_MAX + 16];
    /* Last health observation, guarded by leader->lock. */
    bool reachable;
    json_t *health;        /* last /health body, or NULL */
    struct select_obs obs; /* what that body said, for select_decide */
    struct batch *orders;  /* this replica's order batches (batch.h) */
};

struct leader {
    const struct bz_config *cfg;
    int n;
    struct leader__replica replicas[CONFIG_MAX_REPLICAS]; /* sorted by id, ascending */

    pthread_mutex_t select_lock; /* one selection at a time */
    pthread_mutex_t lock;        /* guards the fields below and replicas[].reachable/health */
    pthread_cond_t cond;
    int current;        /* index into replicas, -1 when none */
    bool ever_selected; /* a leader was named at least once */
    uint64_t epoch;
    bool stopping;
    pthread_t health_thread;

    atomic_uint_fast64_t leader_changes, retries, failed_selections;
    struct metrics_hist failover_us; /* time from a failed call to a working leader */
};

static void leader__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* GET /health of one replica into replicas[i].obs (strict about the members it reads). */
static void leader__ping(struct leader *l, int i)
{
    char url[CONFIG_ADDR_MAX + 32], msg[128];
    struct http_reply reply;
    snprintf(url, sizeof url, "%s/health", l->replicas[i].url);
    int rv = http_client_request("GET", url, NULL, NULL, 0, LEADER__PING_MS, &reply);
    json_t *body = NULL;
    struct select_obs obs = {.id = l->replicas[i].id};
    if (rv == 0) {
        body = json_loadb(reply.body.data ? reply.body.data : "", reply.body.len, 0, NULL);
        struct msg_peer_state ps = {0};
        const char *role = NULL;
        json_int_t term = 0;
        bool raft = l->cfg->mode == CONFIG_MODE_RAFT;
        if (raft && body && json_unpack(body, "{s:s,s:I}", "role", &role, "epoch", &term) == 0 &&
            term >= 0) {
            /* Raft: the replica's own word on who leads; a leader "promises" itself. */
            ps.promised = (uint64_t)term;
            ps.promised_leader = strcmp(role, "leader") == 0 ? obs.id : 0;
        }
        if (body && (raft ? role != NULL
                          : msg_peer_state_from_json(body, &ps, msg, sizeof msg) == 0 &&
                                json_unpack(body, "{s:s}", "role", &role) == 0)) {
            obs.reachable = true;
            obs.ready = reply.status == 200;
            obs.role = select_role_parse(role);
            obs.promised = ps.promised;
            obs.promised_leader = ps.promised_leader;
            json_t *cat = json_object_get(body, "catalog_ok");
            obs.catalog_ok = !json_is_false(cat); /* raft replicas do not say: assume yes */
        }
        http_reply_free(&reply);
    }
    pthread_mutex_lock(&l->lock);
    l->replicas[i].reachable = obs.reachable;
    l->replicas[i].obs = obs;
    json_decref(l->replicas[i].health);
    l->replicas[i].health = obs.reachable ? body : NULL;
    if (!obs.reachable)
        json_decref(body);
    pthread_mutex_unlock(&l->lock);
}

/* Pings every replica and applies the selection rules to what they said. */
static void leader__observe(struct leader *l, int current, uint64_t epoch,
                            struct select_decision *d)
{
    struct select_obs obs[CONFIG_MAX_REPLICAS];
    for (int i = 0; i < l->n; i++)
        leader__ping(l, i);
    pthread_mutex_lock(&l->lock);
    for (int i = 0; i < l->n; i++)
        obs[i] = l->replicas[i].obs;
    pthread_mutex_unlock(&l->lock);
    select_decide(obs, l->n, current, epoch, d);
}

/* Uses replica `index` as leader of `epoch` from now on. */
static void leader__use(struct leader *l, int index, uint64_t epoch, const char *how)
{
    pthread_mutex_lock(&l->lock);
    bool changed = l->current != index || l->epoch != epoch;
    l->current = index;
    l->epoch = epoch;
    l->ever_selected = true;
    pthread_mutex_unlock(&l->lock);
    if (changed) {
        atomic_fetch_add(&l->leader_changes, 1);
        LOG_INFO("leader is replica %d, epoch %llu (%s)", l->replicas[index].id,
                 (unsigned long long)epoch, how);
    }
}

/* Announces leader `id` in `epoch` to replica i. 0, BZ_ESTALE (refused) or unreachable. */
static int leader__notify(struct leader *l, int i, int id, uint64_t epoch)
{
    char url[CONFIG_ADDR_MAX + 32], msg[128];
    struct msg_notice notice = {.leader = id, .epoch = epoch};
    json_t *body = msg_notice_to_json(&notice);
    snprintf(url, sizeof url, "%s/leader", l->replicas[i].url);
    int rv;
    json_t *data =
        http_client_call_json(url, l->cfg->secret, body, LEADER__PING_MS, &rv, msg, sizeof msg);
    json_decref(body);
    json_decref(data);
    return rv == BZ_ECONFLICT ? BZ_ESTALE : rv;
}

/*
 * Finds a working leader after the one of `seen_epoch` failed (or none was
 * known): follows one that another front-end chose meanwhile, or picks and
 * announces a new one (select.h). Unless the leader already changed since
 * the caller saw it fail: then the caller just uses the new one.
 */
static int leader__select(struct leader *l, uint64_t seen_epoch, bool force)
{
    pthread_mutex_lock(&l->select_lock);
    pthread_mutex_lock(&l->lock);
    bool already = !force && l->current >= 0 && l->epoch != seen_epoch;
    uint64_t epoch = l->epoch;
    pthread_mutex_unlock(&l->lock);
    if (already) {
        pthread_mutex_unlock(&l->select_lock);
        return 0;
    }

    int rv = BZ_EUNAVAIL;
    if (l->cfg->mode == CONFIG_MODE_RAFT) {
        /* The replicas elect their leader: find the one that says it leads, announce nothing. */
        struct select_decision d;
        leader__observe(l, -1, 0, &d);
        if (d.action == SELECT_FOLLOW) {
            leader__use(l, d.index, d.epoch, "the Raft leader");
            rv = 0;
        }
        pthread_mutex_unlock(&l->select_lock);
        return rv;
    }
    for (int attempt = 0; attempt < 3 && rv != 0; attempt++) {
        struct select_decision d;
        leader__observe(l, -1, epoch, &d); /* the failed leader is not simply kept */
        if (d.action == SELECT_FOLLOW) {
            leader__use(l, d.index, d.epoch, "chosen by another front-end");
            rv = 0;
            break;
        }
        if (d.action == SELECT_NONE)
            break;
        int chosen = d.index, id = l->replicas[chosen].id;
        rv = leader__notify(l, chosen, id, d.epoch);
        if (rv) {
            epoch = d.epoch; /* refused or gone: try again with a higher epoch */
            continue;
        }
        for (int i = 0; i < l->n; i++)
            if (i != chosen)
                leader__notify(l, i, id, d.epoch); /* best effort: the leader tells them too */
        leader__use(l, chosen, d.epoch, "selected");
    }
    if (rv) {
        pthread_mutex_lock(&l->lock);
        l->current = -1;
        pthread_mutex_unlock(&l->lock);
        atomic_fetch_add(&l->failed_selections, 1);
        LOG_WARN("no order replica can lead right now");
    }
    pthread_mutex_unlock(&l->select_lock);
    return rv;
}

/* The index of the leader a 421 names ({"error":{"leader":id}}), or -1. */
static int leader__hint(struct leader *l, const struct http_reply *reply)
{
    json_t *root = json_loadb(reply->body.data ? reply->body.data : "", reply->body.len, 0, NULL);
    json_int_t id = 0;
    int index = -1;
    if (root && json_unpack(root, "{s:{s:I}}", "error", "leader", &id) == 0)
        for (int i = 0; i < l->n; i++)
            if (l->replicas[i].id == id)
                index = i;
    json_decref(root);
    return index;
}

/* An attempt made before leader__forward took over (leader_order_start). */
struct leader__first {
    int cur;
    uint64_t epoch, start_ms;
    int rv;
    struct http_reply *reply; /* moved into out when rv == 0 */
};

/* The deadline of one order call: the leader spends up to one call timeout on the catalog
 * and one on the quorum. */
static int leader__call_timeout_ms(const struct leader *l)
{
    return 2 * l->cfg->call_timeout_ms + 500;
}

/*
 * leader_forward_order (body: an order) and leader_forward_query (body NULL: GET path);
 * with `first`, the loop goes on from an attempt already made.
 */
static int leader__forward(struct leader *l, const char *path, const char *body, size_t body_len,
                           struct http_reply *out, const struct leader__first *first)
{
    uint64_t start = first ? first->start_ms : clock_now_ms(), failed_at = 0;
    for (int attempt = 0;; attempt++) {
        int cur, rv;
        uint64_t epoch;
        if (attempt == 0 && first) {
            cur = first->cur;
            epoch = first->epoch;
            rv = first->rv;
            if (rv == 0)
                *out = *first->reply;
        } else {
            if (attempt > 0)
                atomic_fetch_add(&l->retries, 1);
            if (clock_now_ms() - start > LEADER__FAILOVER_MS)
                return BZ_EUNAVAIL;
            pthread_mutex_lock(&l->lock);
            cur = l->current;
            epoch = l->epoch;
            pthread_mutex_unlock(&l->lock);
            if (cur < 0) {
                if (leader__select(l, epoch, false) != 0)
                    leader__sleep_ms(100);
                continue;
            }
            int timeout_ms = leader__call_timeout_ms(l);
            if (body) {
                rv = batch_call(l->replicas[cur].orders, body, body_len, timeout_ms, out);
            } else {
                char url[CONFIG_ADDR_MAX + 96];
                snprintf(url, sizeof url, "%s%s", l->replicas[cur].url, path);
                rv = http_client_request("GET", url, l->cfg->secret, NULL, 0, timeout_ms, out);
            }
        }
        if (leader_order_settled(rv, rv == 0 ? out->status : 0)) {
            if (failed_at)
                metrics_hist_observe(&l->failover_us, (clock_now_ms() - failed_at) * 1000);
            return 0;
        }
        if (!failed_at)
            failed_at = clock_now_ms();
        if (rv == 0 && out->status == 503) {
            /* The leader is taking over or waiting for followers: same leader, a bit later. */
            if (clock_now_ms() - start + LEADER__RETRY_PAUSE_MS > LEADER__FAILOVER_MS)
                return 0; /* out of time: pass its 503 on */
            http_reply_free(out);
            leader__sleep_ms(LEADER__RETRY_PAUSE_MS);
            continue;
        }
        int hint = rv == 0 && out->status == 421 ? leader__hint(l, out) : -1;
        if (rv == 0)
            http_reply_free(out);
        if (hint >= 0 && l->cfg->mode == CONFIG_MODE_RAFT) {
            /* The replica named the Raft leader: go there at once. */
            leader__use(l, hint, epoch, "named by a replica");
            continue;
        }
        LOG_INFO("leader %d failed (%s): re-selecting", l->replicas[cur].id,
                 rv ? bz_strerror(rv) : "not the leader");
        if (leader__select(l, epoch, false) != 0 && l->cfg->mode == CONFIG_MODE_RAFT)
            leader__sleep_ms(50); /* an election in progress */
    }
}

bool leader_order_settled(int rv, int status)
{
    return rv == 0 && status != 421 && status != 503;
}

int leader_forward_order(struct leader *l, const char *body, size_t body_len,
                         struct http_reply *out)
{
    return leader__forward(l, NULL, body, body_len, out, NULL);
}

int leader_forward_query(struct leader *l, const char *path, struct http_reply *out)
{
    return leader__forward(l, path, NULL, 0, out, NULL);
}

/* On the http_async loop: the first attempt of a leader_order ended. */
static void leader__order_done(struct batch_item *it, int rv, int status, json_t *body)
{
    struct leader_order *o =
        (struct leader_order *)((char *)it - offsetof(struct leader_order, item_));
    o->done(o, rv, status, body);
}

bool leader_order_start(struct leader *l, struct leader_order *o)
{
    pthread_mutex_lock(&l->lock);
    int cur = l->current;
    uint64_t epoch = l->epoch;
    pthread_mutex_unlock(&l->lock);
    if (cur < 0)
        return false;
    o->l_ = l;
    o->cur_ = cur;
    o->epoch_ = epoch;
    o->start_ms_ = clock_now_ms();
    o->item_ = (struct batch_item){.body = o->body,
                                   .len = o->body_len,
                                   .timeout_ms = leader__call_timeout_ms(l),
                                   .done = leader__order_done};
    batch_submit(l->replicas[cur].orders, &o->item_);
    return true;
}

int leader_order_finish(struct leader_order *o, int rv, int status, const json_t *body,
                        struct http_reply *out)
{
    struct http_reply reply = {0};
    if (rv == 0)
        http_reply_from_json(&reply, status, body);
    struct leader__first first = {
        .cur = o->cur_, .epoch = o->epoch_, .start_ms = o->start_ms_, .rv = rv, .reply = &reply};
    return leader__forward(o->l_, NULL, o->body, o->body_len, out, &first);
}

static void *leader__health_main(void *arg)
{
    struct leader *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stopping) {
        int cur = l->current;
        uint64_t epoch = l->epoch;
        pthread_mutex_unlock(&l->lock);
        if (cur < 0) {
            leader__select(l, epoch, false);
        } else {
            /* Ping everyone (for /status); follow a newer leader, or re-select if ours
             * is no longer ready or no longer leads our epoch. */
            struct select_decision d;
            leader__observe(l, cur, epoch, &d);
            if (d.action == SELECT_FOLLOW) {
                leader__use(l, d.index, d.epoch, "chosen by another front-end");
            } else if (d.action != SELECT_KEEP) {
                LOG_INFO("leader %d failed its health check: re-selecting", l->replicas[cur].id);
                leader__select(l, epoch, false);
            }
        }
        pthread_mutex_lock(&l->lock);
        if (l->stopping)
            break;
        /* Until a first leader is found (start-up), look again soon. */
        int wait_ms = l->current < 0 ? 100 : l->cfg->health_interval_ms;
        struct timespec ts;
        clock_deadline(&ts, (uint64_t)wait_ms);
        pthread_cond_timedwait(&l->cond, &l->lock, &ts);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

int leader_start(struct leader **out, const struct bz_config *cfg, struct http_async *a)
{
    struct leader *l = xcalloc(1, sizeof *l);
    l->cfg = cfg;
    l->current = -1;
    l->n = cfg->replica_count;
    for (int i = 0; i < l->n; i++) {
        l->replicas[i].id = cfg->replicas[i].id;
        snprintf(l->replicas[i].url, sizeof l->replicas[i].url, "http://%s",
                 cfg->replicas[i].listen);
        l->replicas[i].orders = batch_new(l->replicas[i].url, cfg->secret, a);
    }
    pthread_mutex_init(&l->select_lock, NULL);
    pthread_mutex_init(&l->lock, NULL);
    clock_cond_init(&l->cond);
    int rv = pthread_create(&l->health_thread, NULL, leader__health_main, l);
    if (rv) {
        LOG_ERROR("cannot start the health-check thread: %s", strerror(rv));
        pthread_mutex_destroy(&l->select_lock);
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->cond);
        for (int i = 0; i < l->n; i++)
            batch_free(l->replicas[i].orders);
        free(l);
        return BZ_EINTERNAL;
    }
    *out = l;
    return 0;
}

void leader_stop(struct leader *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->health_thread, NULL);
    for (int i = 0; i < l->n; i++) {
        json_decref(l->replicas[i].health);
        batch_free(l->replicas[i].orders);
    }
    pthread_mutex_destroy(&l->select_lock);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    free(l);
}

bool leader_ever_selected(struct leader *l)
{
    pthread_mutex_lock(&l->lock);
    bool ever = l->ever_selected;
    pthread_mutex_unlock(&l->lock);
    return ever;
}

json_t *leader_status_json(struct leader *l)
{
    pthread_mutex_lock(&l->lock);
    json_t *reps = json_array();
    for (int i = 0; i < l->n; i++) {
        const struct leader__replica *r = &l->replicas[i];
        json_t *obj =
            json_pack("{s:i,s:s,s:b}", "id", r->id, "url", r->url, "reachable", r->reachable);
        if (r->health) {
            /* Copies, not shared references: the status is serialised after the lock is
             * released, while the prober may drop r->health on another thread (jansson's
             * reference counts are atomic, but `make tsan` cannot see that inside the library
             * and flagged the free in leader__probe against the read in json_dumps). */
            const char *keys[] = {"role", "status", "epoch", "last", "log_epoch", "leader"};
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
                json_t *v = json_object_get(r->health, keys[k]);
                if (v)
                    json_object_set_new(obj, keys[k], json_deep_copy(v));
            }
        } else {
            json_object_set_new(obj, "role", json_string("down"));
        }
        json_array_append_new(reps, obj);
    }
    json_t *status =
        json_pack("{s:o,s:I,s:o}", "leader",
                  l->current >= 0 ? json_integer(l->replicas[l->current].id) : json_null(), "epoch",
                  (json_int_t)l->epoch, "replicas", reps);
    pthread_mutex_unlock(&l->lock);
    return status;
}

void leader_metrics(struct leader *l, struct strbuf *out)
{
    pthread_mutex_lock(&l->lock);
    uint64_t epoch = l->epoch;
    int leader_id = l->current >= 0 ? l->replicas[l->current].id : 0;
    pthread_mutex_unlock(&l->lock);
    metrics_render_simple(out, "bazaar_frontend_leader_changes_total", "counter",
                          "Leader selections that named a leader.",
                          atomic_load(&l->leader_changes));
    metrics_render_simple(out, "bazaar_frontend_leader_id", "gauge",
                          "Id of the current order leader (0 when none).", (uint64_t)leader_id);
    metrics_render_simple(out, "bazaar_frontend_epoch", "gauge", "Current leader epoch.", epoch);
    metrics_render_simple(out, "bazaar_frontend_order_retries_total", "counter",
                          "Order calls retried on a leader failure.", atomic_load(&l->retries));
    metrics_render_simple(out, "bazaar_frontend_failed_selections_total", "counter",
                          "Selections that found no ready replica.",
                          atomic_load(&l->failed_selections));
    uint64_t calls = 0, orders = 0;
    for (int i = 0; i < l->n; i++) {
        uint64_t c, o;
        batch_counts(l->replicas[i].orders, &c, &o);
        calls += c;
        orders += o;
    }
    metrics_render_simple(out, "bazaar_frontend_order_batches_total", "counter",
                          "Calls to a leader carrying orders (POST /orders/batch).", calls);
    metrics_render_simple(out, "bazaar_frontend_order_batched_total", "counter",
                          "Orders those calls carried (retries count again).", orders);
    metrics_render_header(out, "bazaar_frontend_failover_seconds", "histogram",
                          "Time from a failed leader call to a successful retry.");
    metrics_render_hist(out, "bazaar_frontend_failover_seconds", "", &l->failover_us);
}
