/*
 * bazaar-frontend: the public REST API (SPEC §2). Serves lookups from the
 * LRU cache or the catalog, and routes orders to the order leader with a
 * request id that survives retries and failover.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "error.h"
#include "http_client.h"
#include "http_server.h"
#include "leader.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "service.h"

struct frontend {
    struct bz_config cfg;
    struct leader *leader;
    struct cache *cache; /* NULL when cache = off */
    char catalog_url[CONFIG_ADDR_MAX + 16];
    atomic_uint_fast64_t invalidations_received, catalog_failures;
};

/* Replies 503 with Retry-After: the documented answer when a dependency is down. */
static void frontend__unavailable(struct http_response *resp, const char *msg)
{
    resp->retry_after_s = 1;
    http_reply_error(resp, BZ_EUNAVAIL, msg);
}

/* Ready once a first order leader is known: before that no order could be taken. */
static bool frontend__health(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    (void)req;
    bool ready = leader_ever_selected(fe->leader);
    json_t *st = leader_status_json(fe->leader);
    if (!ready)
        resp->retry_after_s = 1;
    http_reply_json(resp, ready ? 200 : 503,
                    json_pack("{s:s,s:s,s:O,s:O}", "status", ready ? "ok" : "starting", "service",
                              "frontend", "leader", json_object_get(st, "leader"), "epoch",
                              json_object_get(st, "epoch")));
    json_decref(st);
    return true;
}

static bool frontend__status(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    (void)req;
    json_t *st = leader_status_json(fe->leader);
    json_t *cache;
    if (fe->cache) {
        struct cache_stats cs;
        cache_stats(fe->cache, &cs);
        cache = json_pack(
            "{s:b,s:i,s:I,s:I,s:I,s:I,s:I,s:o}", "enabled", 1, "capacity", fe->cfg.cache_size,
            "hits", (json_int_t)cs.hits, "misses", (json_int_t)cs.misses, "evictions",
            (json_int_t)cs.evictions, "invalidations", (json_int_t)cs.invalidations, "stale_fills",
            (json_int_t)cs.stale_fills, "entries", cache_entries_json(fe->cache, clock_now_ms()));
    } else {
        cache = json_pack("{s:b,s:[]}", "enabled", 0, "entries");
    }
    json_object_set_new(st, "cache", cache);
    struct strbuf cfg;
    strbuf_init(&cfg, 64 * 1024);
    config_dump_json(&fe->cfg, &cfg);
    json_object_set_new(st, "config", json_loads(cfg.data, 0, NULL));
    strbuf_free(&cfg);
    http_reply_json(resp, 200, st);
    return true;
}

/* ---------------------------------------------------------------- lookups */

/* Event thread: bad names and cache hits are answered without blocking. */
static bool frontend__lookup_fast(void *svc, const struct http_request *req,
                                  struct http_response *resp)
{
    struct frontend *fe = svc;
    if (!stock_name_valid(req->param, req->param_len)) {
        http_reply_error(resp, BZ_EINVAL, "stock names are 1-64 characters [A-Za-z0-9_.-]");
        return true;
    }
    if (fe->cache && cache_get(fe->cache, req->param, clock_now_ms(), &resp->body)) {
        resp->status = 200;
        return true;
    }
    return false;
}

/* Worker: a miss (or cache off) asks the catalog, then fills the cache. */
static void frontend__lookup(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    uint64_t token = fe->cache ? cache_fill_begin(fe->cache) : 0;

    char url[CONFIG_ADDR_MAX + 96], msg[160];
    struct http_reply reply;
    snprintf(url, sizeof url, "%s/stocks/%s", fe->catalog_url, req->param);
    int rv = http_client_request("GET", url, NULL, NULL, 0, fe->cfg.call_timeout_ms, &reply);
    if (rv) {
        atomic_fetch_add(&fe->catalog_failures, 1);
        frontend__unavailable(resp, "catalog unavailable");
        return;
    }
    json_t *data = http_reply_data_json(&reply, &rv, msg, sizeof msg);
    http_reply_free(&reply);
    json_int_t version = 0;
    if (rv == BZ_ENOTFOUND) {
        http_reply_error(resp, rv, "stock not found");
        return;
    }
    if (!data || json_unpack(data, "{s:I}", "version", &version) != 0) {
        json_decref(data);
        frontend__unavailable(resp, "catalog gave a bad reply");
        return;
    }
    json_object_del(data, "version");
    http_reply_data(resp, data);
    if (fe->cache && resp->status == 200)
        cache_fill_end(fe->cache, req->param, token, resp->body.data, resp->body.len,
                       (uint64_t)version, clock_now_ms());
}

/* ---------------------------------------------------------------- orders */

/* Turns a leader reply into ours: data passes through, errors keep status and message. */
static void frontend__relay(struct http_response *resp, struct http_reply *reply)
{
    char msg[200];
    int err;
    json_t *data = http_reply_data_json(reply, &err, msg, sizeof msg);
    if (data) {
        http_reply_data(resp, data);
    } else if (reply->status == 502 || reply->status == 504) {
        frontend__unavailable(resp, "catalog unavailable");
    } else if (reply->status == 503 || reply->status == 421) {
        frontend__unavailable(resp, "no order replica can take the order now");
    } else if (reply->status >= 400 && reply->status < 500) {
        http_reply_error(resp, err, msg);
    } else {
        http_reply_error(resp, BZ_EINTERNAL, msg);
    }
}

static void frontend__order(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    struct trade t;
    char msg[200];

    json_t *body = http_request_json_object(req, resp);
    if (!body)
        return;
    int rv = trade_from_json(body, false, &t, msg, sizeof msg);
    json_decref(body);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return;
    }
    /* Every POST gets a request id; a client's Idempotency-Key makes it stable across
     * the client's own retries, ours are stable by construction. */
    const char *key = http_request_header(req, "Idempotency-Key");
    if (key) {
        if (!idempotency_key_valid(key)) {
            http_reply_error(resp, BZ_EINVAL, "Idempotency-Key must be 1-64 printable characters");
            return;
        }
        snprintf(t.request_id, sizeof t.request_id, "k:%s", key);
    } else {
        t.request_id[0] = 'r';
        t.request_id[1] = ':';
        util_random_hex(t.request_id + 2, 16);
    }
    json_t *out = trade_to_json(&t);
    char *payload = json_dumps(out, JSON_COMPACT);
    json_decref(out);

    struct http_reply reply;
    rv = leader_forward(fe->leader, "POST", "/orders", payload, strlen(payload), &reply);
    free(payload);
    /* Read-your-writes without waiting for the push: a success changed the stock, a 409
     * showed the client a quantity newer than our entry may hold, and an unknown outcome
     * may have applied. Either way this client's next lookup must not be older. */
    if (fe->cache && (rv || reply.status == 200 || reply.status == 409 || reply.status >= 500))
        cache_invalidate(fe->cache, t.name, 0);
    if (rv) {
        frontend__unavailable(resp, "no order replica can take the order now");
        return;
    }
    frontend__relay(resp, &reply);
    http_reply_free(&reply);
}

static void frontend__query(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    uint64_t number;
    if (parse_u64(req->param, req->param_len, INT64_MAX, &number) != 0) {
        http_reply_error(resp, BZ_EINVAL, "order number must be a non-negative integer");
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "/orders/%llu", (unsigned long long)number);
    struct http_reply reply;
    if (leader_forward(fe->leader, "GET", path, NULL, 0, &reply) != 0) {
        frontend__unavailable(resp, "no order replica can answer now");
        return;
    }
    frontend__relay(resp, &reply);
    http_reply_free(&reply);
}

/* ---------------------------------------------------------------- internal */

static bool frontend__invalidate(void *svc, const struct http_request *req,
                                 struct http_response *resp)
{
    struct frontend *fe = svc;
    struct msg_inval m;
    char msg[160];
    json_t *body = http_request_json_object(req, resp);
    if (!body)
        return true;
    int rv = msg_inval_from_json(body, &m, msg, sizeof msg);
    json_decref(body);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return true;
    }
    atomic_fetch_add(&fe->invalidations_received, 1);
    if (fe->cache)
        cache_invalidate(fe->cache, m.name, m.version);
    http_reply_data(resp, json_pack("{s:s}", "invalidated", m.name));
    return true;
}

static void frontend__metrics(void *svc, struct strbuf *out)
{
    struct frontend *fe = svc;
    struct cache_stats cs = {0};
    if (fe->cache)
        cache_stats(fe->cache, &cs);
    metrics_render_simple(out, "bazaar_frontend_cache_hits_total", "counter", "Cache hits.",
                          cs.hits);
    metrics_render_simple(out, "bazaar_frontend_cache_misses_total", "counter", "Cache misses.",
                          cs.misses);
    metrics_render_simple(out, "bazaar_frontend_cache_evictions_total", "counter", "LRU evictions.",
                          cs.evictions);
    metrics_render_simple(out, "bazaar_frontend_cache_invalidations_total", "counter",
                          "Invalidations applied (pushed by the catalog or after own trades).",
                          cs.invalidations);
    metrics_render_simple(out, "bazaar_frontend_cache_invalidations_received_total", "counter",
                          "Invalidation messages received from the catalog.",
                          atomic_load(&fe->invalidations_received));
    metrics_render_simple(out, "bazaar_frontend_cache_stale_fills_total", "counter",
                          "Fills refused because the key was invalidated during the fetch.",
                          cs.stale_fills);
    metrics_render_simple(out, "bazaar_frontend_cache_entries", "gauge", "Entries cached.",
                          cs.entries);
    metrics_render_simple(out, "bazaar_frontend_catalog_failures_total", "counter",
                          "Catalog lookups that could not reach the catalog.",
                          atomic_load(&fe->catalog_failures));
    leader_metrics(fe->leader, out);
}

static struct http_route frontend__routes[] = {
    {.method = "GET", .pattern = "/health", .fast = frontend__health},
    {.method = "GET", .pattern = "/status", .fast = frontend__status},
    {.method = "GET",
     .pattern = "/stocks/{}",
     .fast = frontend__lookup_fast,
     .handler = frontend__lookup},
    {.method = "POST", .pattern = "/orders", .handler = frontend__order},
    {.method = "GET", .pattern = "/orders/{}", .handler = frontend__query},
    {.method = "POST", .pattern = "/invalidate", .fast = frontend__invalidate, .internal = true},
};

int main(int argc, char **argv)
{
    struct frontend fe = {0};
    char err[512];
    int id;

    if (service_init(argc, argv, "frontend", false, &fe.cfg, &id) != 0)
        return 2;
    snprintf(fe.catalog_url, sizeof fe.catalog_url, "http://%s", fe.cfg.catalog_listen);
    if (fe.cfg.cache_on)
        fe.cache = cache_new((size_t)fe.cfg.cache_size, (uint64_t)fe.cfg.cache_ttl_s * 1000u);
    leader_start(&fe.leader, &fe.cfg);

    struct http_server *http = NULL;
    struct http_server_opts opts = {
        .listen = fe.cfg.frontend_listen,
        .threads = fe.cfg.frontend_threads,
        .workers = fe.cfg.frontend_workers,
        .idle_timeout_s = fe.cfg.idle_timeout_s,
        .secret = fe.cfg.secret,
        .metrics_prefix = "bazaar_frontend",
        .metrics = frontend__metrics,
        .svc = &fe,
    };
    if (http_server_start(&http, &opts, frontend__routes,
                          sizeof frontend__routes / sizeof frontend__routes[0], err,
                          sizeof err) != 0) {
        LOG_ERROR("%s", err);
        leader_stop(fe.leader);
        cache_free(fe.cache);
        return 1;
    }
    LOG_INFO("API on http://%s (cache %s, %d entries)", fe.cfg.frontend_listen,
             fe.cache ? "on" : "off", fe.cfg.cache_size);

    int sig = service_wait_for_signal();
    LOG_INFO("signal %d: shutting down", sig);
    http_server_stop(http);
    leader_stop(fe.leader);
    cache_free(fe.cache);
    return 0;
}
