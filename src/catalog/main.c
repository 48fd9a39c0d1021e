/*
 * bazaar-catalog: owns the stocks. Serves lookups to the front-end and
 * applies trades for the order leader, exactly once per request id.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "http_server.h"
#include "log.h"
#include "msg.h"
#include "notify.h"
#include "service.h"
#include "stockdb.h"

#define CATALOG__REPLY_MAX 256 /* a lookup reply is ~110 bytes; longer ones are not kept */

/*
 * One stock's GET /stocks/{name} reply, serialised once per version: the hot
 * path of every front-end miss then costs a copy instead of JSON building.
 * A stock's version changes with every change of the stock, so equal versions
 * mean equal bytes.
 */
struct catalog__reply {
    bool valid;
    uint64_t version;
    size_t len;
    char bytes[CATALOG__REPLY_MAX];
};

struct catalog {
    struct bz_config cfg;
    struct stockdb *db;
    struct notify *notify;
    pthread_mutex_t replies_lock;      /* guards replies[] */
    struct catalog__reply *replies;    /* one per stock, by stockdb_index */
    atomic_uint_fast64_t replies_hits; /* lookups answered from replies[] */
    atomic_uint_fast64_t lookups;      /* stocks looked up, alone or in a batch */

    pthread_mutex_t restock_lock;
    pthread_cond_t restock_cond;
    bool stopping;
    atomic_uint_fast64_t restocked, trades, trades_refused;
};

/* A lookup's data. "version" stays last: the front-end cuts it out of the bytes
 * (frontend__lookup_strip) to get its client's reply. */
static json_t *catalog__stock_json(const struct stock *s)
{
    return json_pack("{s:s,s:f,s:I,s:I}", "name", s->name, "price", s->price, "quantity",
                     (json_int_t)s->quantity, "version", (json_int_t)s->version);
}

static bool catalog__health(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct catalog *c = svc;
    (void)req;
    http_reply_json(resp, 200,
                    json_pack("{s:s,s:s,s:I,s:I}", "status", "ok", "service", "catalog", "stocks",
                              (json_int_t)stockdb_count(c->db), "version",
                              (json_int_t)stockdb_version(c->db)));
    return true;
}

/* GET /stocks: every stock, in name order (SPEC §2), in the public shape (no version). */
static bool catalog__list(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct catalog *c = svc;
    (void)req;
    json_t *arr = json_array();
    for (size_t i = 0; i < stockdb_count(c->db); i++) {
        struct stock s;
        stockdb_get_at(c->db, i, &s);
        json_array_append_new(arr, json_pack("{s:s,s:f,s:I}", "name", s.name, "price", s.price,
                                             "quantity", (json_int_t)s.quantity));
    }
    http_reply_data(resp, arr);
    return true;
}

static bool catalog__status(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct catalog *c = svc;
    (void)req;
    json_t *st = service_status_json(&c->cfg, "catalog", 0);
    json_object_set_new(st, "role", json_string("catalog"));
    json_object_set_new(st, "stocks", json_integer((json_int_t)stockdb_count(c->db)));
    json_object_set_new(st, "catalog_version", json_integer((json_int_t)stockdb_version(c->db)));
    json_object_set_new(st, "pending_invalidations",
                        json_integer((json_int_t)notify_pending(c->notify)));
    json_object_set_new(st, "invalidation_targets", notify_status_json(c->notify));
    http_reply_json(resp, 200, st);
    return true;
}

/*
 * Writes what GET /stocks/{name} answers for name into resp: the stock's reply
 * bytes (kept per version), or the error. Counts the lookup.
 */
static void catalog__stock_reply(struct catalog *c, const char *name, size_t len,
                                 struct http_response *resp)
{
    struct stock s;
    size_t i;
    atomic_fetch_add_explicit(&c->lookups, 1, memory_order_relaxed);
    if (!stock_name_valid(name, len)) {
        http_reply_error(resp, BZ_EINVAL, "stock names are 1-64 characters [A-Za-z0-9_.-]");
        return;
    }
    if (stockdb_index(c->db, name, &i) != 0) {
        http_reply_error(resp, BZ_ENOTFOUND, "stock not found");
        return;
    }
    stockdb_get_at(c->db, i, &s);
    struct catalog__reply *r = &c->replies[i];
    pthread_mutex_lock(&c->replies_lock);
    bool hit = r->valid && r->version == s.version;
    if (hit)
        http_reply_bytes(resp, 200, r->bytes, r->len);
    pthread_mutex_unlock(&c->replies_lock);
    if (hit) {
        atomic_fetch_add_explicit(&c->replies_hits, 1, memory_order_relaxed);
        return;
    }
    http_reply_data(resp, catalog__stock_json(&s));
    if (resp->status != 200 || resp->body.len > sizeof r->bytes)
        return;
    pthread_mutex_lock(&c->replies_lock);
    if (!r->valid || r->version <= s.version) { /* never replace a newer reply */
        r->valid = true;
        r->version = s.version;
        r->len = resp->body.len;
        memcpy(r->bytes, resp->body.data, resp->body.len);
    }
    pthread_mutex_unlock(&c->replies_lock);
}

static bool catalog__lookup(void *svc, const struct http_request *req, struct http_response *resp)
{
    catalog__stock_reply(svc, req->param, req->param_len, resp);
    return true;
}

/*
 * POST /lookups (internal): a front-end thread's concurrent cache misses in one
 * call (msg.h); each answer is exactly what GET /stocks/{name} would have sent.
 */
static bool catalog__lookups(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct catalog *c = svc;
    struct msg_lookups batch;
    char err[160];
    if (!http_request_binary(req, resp, "a lookup batch"))
        return true;
    if (msg_lookups_decode(req->body, req->body_len, &batch, err, sizeof err) != 0) {
        http_reply_error(resp, BZ_EINVAL, err);
        return true;
    }
    struct http_response one = {0};
    strbuf_init(&one.body, MSG_LOOKUP_BODY_MAX);
    strbuf_reset(&resp->body);
    msg_lookup_reply_start(&resp->body, batch.n);
    for (size_t i = 0; i < batch.n; i++) {
        one.status = 200;
        strbuf_reset(&one.body);
        catalog__stock_reply(c, batch.names[i], strlen(batch.names[i]), &one);
        if (msg_lookup_reply_put(&resp->body, one.status, one.body.data, one.body.len) != 0) {
            strbuf_free(&one.body);
            http_reply_error(resp, BZ_EINTERNAL, "a lookup's answer does not fit a batch");
            return true;
        }
    }
    strbuf_free(&one.body);
    resp->status = 200; /* the reply built in place: http_reply_binary would copy it */
    resp->content_type = HTTP_BINARY_TYPE;
    return true;
}

/* The message of a refused trade, as the order leader relays it to the client. */
/* Counts and announces the outcomes of an executed batch. */
static void catalog__executed(struct catalog *c, const struct trade *trades,
                              const struct stockdb_outcome *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (out[i].status == BZ_ECONFLICT)
            atomic_fetch_add(&c->trades_refused, 1);
        if (out[i].status != 0)
            continue;
        atomic_fetch_add(&c->trades, 1);
        /* Repeats announce again; an invalidation is idempotent. */
        notify_stock_changed(c->notify, out[i].stock.name, out[i].stock.version);
        LOG_DEBUG("trade #%lld %s %s %lld %s -> %lld", (long long)out[i].number,
                  trades[i].request_id, trade_type_name(trades[i].type),
                  (long long)trades[i].quantity, trades[i].name, (long long)out[i].stock.quantity);
    }
    notify_flush(c->notify); /* the batch's changes in one message per front-end */
}

/*
 * POST /execute: the order leader's batch, binary (msg.h). The trades run in order in one
 * transaction; the reply carries each outcome and the journal from the
 * leader's cursor, so whatever this catalog executed for a leader that died
 * (or for a call whose reply was lost) reaches the order log with the next
 * batch (docs/design.md, "Ledger order").
 */
static void catalog__execute(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct catalog *c = svc;
    char msg[240];
    struct msg_exec m;
    if (!http_request_binary(req, resp, "a batch"))
        return;
    int rv = msg_exec_decode(req->body, req->body_len, &m, msg, sizeof msg);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return;
    }
    struct stockdb_outcome *out = xcalloc(m.n ? m.n : 1, sizeof *out);
    struct msg_exec_reply reply;
    char *bytes;
    size_t len;
    if ((rv = stockdb_execute(c->db, m.trades, m.n, out, m.committed)) != 0) {
        http_reply_error(resp, rv, NULL);
    } else {
        catalog__executed(c, m.trades, out, m.n);
        if ((rv = stockdb_exec_reply(c->db, &m, out, &reply, msg, sizeof msg)) != 0) {
            LOG_ERROR("journal from %lld: %s", (long long)m.from, msg);
            http_reply_error(resp, rv, msg);
        } else {
            if (msg_exec_reply_encode(&reply, &bytes, &len) != 0) {
                LOG_ERROR("the reply to a batch from %lld cannot be encoded", (long long)m.from);
                http_reply_error(resp, BZ_EINTERNAL, "reply cannot be encoded");
            } else {
                http_reply_binary(resp, bytes, len);
                free(bytes);
            }
            msg_exec_reply_free(&reply);
        }
    }
    free(out);
    msg_exec_free(&m);
}

/*
 * POST /trade: one trade outside any batch (operators and tests). It takes
 * its number in the journal like any other, so the order leader logs it.
 */
static void catalog__trade(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct catalog *c = svc;
    char msg[160];
    struct trade t;
    struct stockdb_outcome o;

    json_t *body = http_request_json_object(req, resp);
    if (!body)
        return;
    int rv = trade_from_json(body, true, &t, msg, sizeof msg);
    json_decref(body);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return;
    }
    if ((rv = stockdb_execute(c->db, &t, 1, &o, 0)) != 0) {
        http_reply_error(resp, rv, NULL);
        return;
    }
    catalog__executed(c, &t, &o, 1);
    if (o.status) {
        http_reply_error(resp, o.status, stockdb_refusal(&t, o.status));
        return;
    }
    json_t *data = catalog__stock_json(&o.stock);
    json_object_set_new(data, "number", json_integer(o.number));
    http_reply_data(resp, data);
}

static void catalog__restocked(void *arg, const struct stock *s)
{
    struct catalog *c = arg;
    LOG_INFO("restocked %s to %lld", s->name, (long long)s->quantity);
    atomic_fetch_add(&c->restocked, 1);
    notify_stock_changed(c->notify, s->name, s->version);
    notify_flush(c->notify);
}

/* Refills sold-out stocks every restock_interval_s (SPEC §3, optional). */
static void *catalog__restock_main(void *arg)
{
    struct catalog *c = arg;
    pthread_mutex_lock(&c->restock_lock);
    while (!c->stopping) {
        struct timespec ts;
        clock_deadline(&ts, (uint64_t)c->cfg.restock_interval_s * 1000u);
        if (pthread_cond_timedwait(&c->restock_cond, &c->restock_lock, &ts) == 0)
            continue; /* woken: re-check stopping */
        pthread_mutex_unlock(&c->restock_lock);
        if (stockdb_restock(c->db, c->cfg.restock_to, catalog__restocked, c) < 0)
            LOG_ERROR("restock failed");
        pthread_mutex_lock(&c->restock_lock);
    }
    pthread_mutex_unlock(&c->restock_lock);
    return NULL;
}

static void catalog__metrics(void *svc, struct strbuf *out)
{
    struct catalog *c = svc;
    metrics_render_simple(out, "bazaar_catalog_trades_total", "counter", "Trades applied.",
                          atomic_load(&c->trades));
    metrics_render_simple(out, "bazaar_catalog_trades_refused_total", "counter",
                          "Trades refused for lack of shares or overflow.",
                          atomic_load(&c->trades_refused));
    metrics_render_simple(out, "bazaar_catalog_restocked_total", "counter",
                          "Stocks refilled by the restock timer.", atomic_load(&c->restocked));
    metrics_render_simple(out, "bazaar_catalog_version", "gauge",
                          "Catalog version (grows with every change).", stockdb_version(c->db));
    int64_t rows = stockdb_applied_rows(c->db);
    metrics_render_simple(out, "bazaar_catalog_request_ids", "gauge",
                          "Request ids remembered (trades within the idempotency window).",
                          rows > 0 ? (uint64_t)rows : 0);
    metrics_render_simple(out, "bazaar_catalog_lookups_total", "counter",
                          "Stocks looked up (GET /stocks/{name}, and each name of POST /lookups).",
                          atomic_load(&c->lookups));
    metrics_render_simple(out, "bazaar_catalog_lookup_replies_reused_total", "counter",
                          "Lookups answered with the stock's reply bytes serialised before.",
                          atomic_load(&c->replies_hits));
    notify_metrics(c->notify, out);
}

static struct http_route catalog__routes[] = {
    {.method = "GET", .pattern = "/health", .fast = catalog__health},
    {.method = "GET", .pattern = "/status", .fast = catalog__status},
    {.method = "GET", .pattern = "/stocks", .fast = catalog__list},
    {.method = "GET", .pattern = "/stocks/{}", .fast = catalog__lookup},
    {.method = "POST",
     .pattern = "/lookups",
     .fast = catalog__lookups,
     .internal = true,
     .body_max = MSG_LOOKUPS_BYTES_MAX},
    {.method = "POST", .pattern = "/trade", .handler = catalog__trade, .internal = true},
    {.method = "POST",
     .pattern = "/execute",
     .handler = catalog__execute,
     .internal = true,
     .body_max = 1024 * 1024},
};

int main(int argc, char **argv)
{
    struct catalog c = {0};
    char err[512], path[CONFIG_PATH_MAX + 32];
    int id;

    if (service_init(argc, argv, "catalog", false, &c.cfg, &id) != 0)
        return 2;
    if (service_make_data_dir(&c.cfg) != 0 ||
        service_data_path(&c.cfg, "catalog.db", path, sizeof path) != 0) {
        LOG_ERROR("cannot create data directory %s", c.cfg.data_dir);
        return 1;
    }
    if (service_lock_data(path) != 0) {
        LOG_ERROR("%s is in use by another process (is this catalog already running?)", path);
        return 1;
    }
    /* Bind before anything talks to the cluster: a catalog that cannot listen must not
     * send a single invalidation or heartbeat (SPEC §5). */
    int listen_fd;
    if (http_server_bind(c.cfg.catalog_listen, &listen_fd, err, sizeof err) != 0) {
        LOG_ERROR("%s", err);
        return 1;
    }
    if (stockdb_open(&c.db, path, c.cfg.stocks_csv, err, sizeof err) != 0) {
        LOG_ERROR("%s", err);
        return 1;
    }
    stockdb_set_window(c.db, (int64_t)c.cfg.idempotency_window_s * 1000);
    pthread_mutex_init(&c.replies_lock, NULL);
    c.replies = xcalloc(stockdb_count(c.db) ? stockdb_count(c.db) : 1, sizeof *c.replies);

    struct http_server *http = NULL;
    struct http_server_opts opts = {
        .listen = c.cfg.catalog_listen,
        .listen_fd = listen_fd,
        .threads = c.cfg.catalog_threads,
        .workers = c.cfg.catalog_workers,
        .idle_timeout_s = c.cfg.idle_timeout_s,
        .secret = c.cfg.secret,
        .metrics_prefix = "bazaar_catalog",
        .metrics = catalog__metrics,
        .svc = &c,
    };
    notify_start(&c.notify, &c.cfg);
    pthread_t restock;
    pthread_mutex_init(&c.restock_lock, NULL);
    clock_cond_init(&c.restock_cond);

    if (http_server_start(&http, &opts, catalog__routes,
                          sizeof catalog__routes / sizeof catalog__routes[0], err,
                          sizeof err) != 0) {
        LOG_ERROR("%s", err);
        notify_stop(c.notify);
        stockdb_close(c.db);
        free(c.replies);
        return 1;
    }
    if (c.cfg.restock_interval_s > 0)
        pthread_create(&restock, NULL, catalog__restock_main, &c);
    LOG_INFO("serving %zu stocks on %s (data %s)", stockdb_count(c.db), c.cfg.catalog_listen, path);

    int sig = service_wait_for_signal();
    LOG_INFO("signal %d: shutting down", sig);
    http_server_stop(http);
    if (c.cfg.restock_interval_s > 0) {
        pthread_mutex_lock(&c.restock_lock);
        c.stopping = true;
        pthread_cond_signal(&c.restock_cond);
        pthread_mutex_unlock(&c.restock_lock);
        pthread_join(restock, NULL);
    }
    notify_stop(c.notify);
    stockdb_close(c.db);
    free(c.replies);
    pthread_mutex_destroy(&c.replies_lock);
    return 0;
}
