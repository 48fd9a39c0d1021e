/*
 * bazaar-order: one order replica. Maps HTTP routes onto the order service
 * (ordersvc.h: primary-backup or raft) and the order log (orderlog.h); every
 * route but /health, /state and /metrics requires the cluster secret.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http_server.h"
#include "log.h"
#include "orderlog.h"
#include "ordersvc.h"
#include "msg.h"
#include "service.h"

struct order_service {
    struct bz_config cfg;
    int id;
    struct orderlog *log;
    struct ordersvc *svc;
};

static json_t *order__public_json(const struct order *o)
{
    return json_pack("{s:I,s:s,s:s,s:I}", "number", (json_int_t)o->number, "name", o->trade.name,
                     "type", trade_type_name(o->trade.type), "quantity",
                     (json_int_t)o->trade.quantity);
}

/* Order numbers in paths: a non-negative integer without sign or leading junk. */
static int order__parse_number(const struct http_request *req, int64_t *out)
{
    uint64_t v;
    if (parse_u64(req->param, req->param_len, INT64_MAX, &v) != 0)
        return BZ_EINVAL;
    *out = (int64_t)v;
    return 0;
}

/*
 * The reply body of one order's outcome (its status is bz_error_status(o->status)):
 * {"data":{"transaction_number":n}}, or the error shape; a 421 names the
 * leader when known ({"error":{"code":421,"message":..,"leader":2}}), so the
 * front-end follows it (raft mode) instead of guessing.
 */
static json_t *order__outcome_json(const struct trade *t, const struct trade_outcome *o)
{
    if (o->status == 0) {
        LOG_DEBUG("order %lld: %s %lld %s (%s)", (long long)o->number, trade_type_name(t->type),
                  (long long)t->quantity, t->name, t->request_id);
        return json_pack("{s:{s:I}}", "data", "transaction_number", (json_int_t)o->number);
    }
    json_t *err = http_error_json(o->status, o->message);
    if (o->status == BZ_ENOTLEADER && o->leader > 0)
        json_object_set_new(json_object_get(err, "error"), "leader", json_integer(o->leader));
    return err;
}

static void order__not_leader(struct http_response *resp, int leader, const char *msg)
{
    struct trade_outcome o = {.status = BZ_ENOTLEADER, .leader = leader};
    snprintf(o.message, sizeof o.message, "%s", msg);
    http_reply_json(resp, 421, order__outcome_json(NULL, &o));
}

static bool order__health(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    (void)req;
    char why[128];
    bool ready = ordersvc_ready(s->svc, why, sizeof why);
    json_t *state = ordersvc_state_json(s->svc);
    json_object_set_new(state, "status", json_string(ready ? "ok" : "unavailable"));
    if (!ready)
        json_object_set_new(state, "reason", json_string(why)); /* SPEC §2: 503 says why */
    json_object_set_new(state, "service", json_string("order"));
    json_object_del(state, "peers");
    if (!ready)
        resp->retry_after_s = 1;
    http_reply_json(resp, ready ? 200 : 503, state);
    return true;
}

static bool order__state(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    (void)req;
    http_reply_data(resp, ordersvc_state_json(s->svc));
    return true;
}

/* GET /status (SPEC §2): the replica's state with lag, version and configuration. */
static bool order__status(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    (void)req;
    json_t *st = service_status_json(&s->cfg, "order", s->id);
    json_t *state = ordersvc_state_json(s->svc);
    char why[128];
    json_object_set_new(state, "ready", json_boolean(ordersvc_ready(s->svc, why, sizeof why)));
    json_object_update(st, state);
    json_decref(state);
    http_reply_json(resp, 200, st);
    return true;
}

static void order__leader(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    struct msg_notice m;
    char msg[160];
    json_t *body = http_request_json_object(req, resp);
    if (!body)
        return;
    int rv = msg_notice_from_json(body, &m, msg, sizeof msg);
    json_decref(body);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return;
    }
    rv = ordersvc_notice(s->svc, &m);
    if (rv) {
        http_reply_error(resp, rv,
                         rv == BZ_ESTALE   ? "epoch older than promised"
                         : rv == BZ_EINVAL ? "leader notices are for primary-backup; this "
                                             "replica runs raft"
                                           : NULL);
        return;
    }
    http_reply_data(resp, ordersvc_state_json(s->svc));
}

/*
 * The orders of one request, waiting for their outcomes: POST /orders carries
 * one, POST /orders/batch {"orders":[order, ...]} several front-end clients'
 * orders in one call, sequenced together (docs/design.md, "Order batches").
 * Each order of a batch is validated and answered on its own, exactly as POST
 * /orders would: {"data":{"results":[{"status":200,"reply":{"data":{...}}},
 * ...]}} in the request's order. Only a malformed envelope fails the whole
 * call (400). Both run on the event thread: the orders are handed to the
 * replication mode without waiting, and the reply is sent when their
 * outcomes are known (docs/design.md, "The driver: one loop, no waiting
 * thread"), with no worker in between.
 */
struct order__batch {
    const struct http_request *req;
    struct http_response *resp;
    bool single; /* POST /orders: the reply is the outcome itself */
    size_t n, nvalid;
    struct trade *t, *valid;        /* by request item; the valid ones, in order */
    struct trade_outcome *o, *done; /* by request item; the valid ones' */
    size_t *slot;                   /* valid order k is request item slot[k] */
};

static struct order__batch *order__batch_new(const struct http_request *req,
                                             struct http_response *resp, size_t n)
{
    struct order__batch *b = xcalloc(1, sizeof *b);
    *b = (struct order__batch){.req = req,
                               .resp = resp,
                               .n = n,
                               .t = xcalloc(n, sizeof *b->t),
                               .valid = xcalloc(n, sizeof *b->valid),
                               .o = xcalloc(n, sizeof *b->o),
                               .done = xcalloc(n, sizeof *b->done),
                               .slot = xcalloc(n, sizeof *b->slot)};
    return b;
}

static void order__batch_free(struct order__batch *b)
{
    free(b->slot);
    free(b->done);
    free(b->o);
    free(b->valid);
    free(b->t);
    free(b);
}

/* Validates request item i (a decoded order) and counts it among the valid ones. */
static void order__batch_take(struct order__batch *b, size_t i, const json_t *order)
{
    b->o[i].status =
        trade_from_json(order, true, &b->t[i], b->o[i].message, sizeof b->o[i].message);
    if (b->o[i].status == 0) {
        b->valid[b->nvalid] = b->t[i];
        b->slot[b->nvalid++] = i;
    }
}

/* Writes the reply from the outcomes (the valid orders' in b->done), resumes it, frees b. */
static void order__batch_reply(struct order__batch *b)
{
    const struct http_request *req = b->req;
    for (size_t k = 0; k < b->nvalid; k++)
        b->o[b->slot[k]] = b->done[k];
    if (b->single) {
        if (b->o[0].status == BZ_EUNAVAIL)
            b->resp->retry_after_s = 1;
        http_reply_json(b->resp, bz_error_status(b->o[0].status),
                        order__outcome_json(&b->t[0], &b->o[0]));
    } else {
        json_t *results = json_array();
        for (size_t i = 0; i < b->n; i++)
            json_array_append_new(results,
                                  json_pack("{s:i,s:o}", "status", bz_error_status(b->o[i].status),
                                            "reply", order__outcome_json(&b->t[i], &b->o[i])));
        http_reply_data(b->resp, json_pack("{s:o}", "results", results));
    }
    order__batch_free(b);
    http_request_resume(req);
}

/* The outcomes of a request's orders: on whatever thread finished them. */
static void order__batch_done(void *arg, const struct trade_outcome *out, size_t n)
{
    (void)out; /* b->done */
    (void)n;
    order__batch_reply(arg);
}

/* Hands the valid orders to the replication mode, or answers at once when there are none. */
static void order__batch_submit(struct order_service *s, struct order__batch *b)
{
    if (b->nvalid)
        ordersvc_submit_async(s->svc, b->valid, b->nvalid, b->done, order__batch_done, b);
    else
        order__batch_reply(b);
}

/* POST /orders: one order. */
static bool order__submit(void *svc, const struct http_request *req, struct http_response *resp)
{
    json_t *body = http_request_json_object(req, resp);
    if (!body) {
        http_request_resume(req);
        return true;
    }
    struct order__batch *b = order__batch_new(req, resp, 1);
    b->single = true;
    order__batch_take(b, 0, body);
    json_decref(body);
    if (b->o[0].status) {
        http_reply_error(resp, b->o[0].status, b->o[0].message);
        order__batch_free(b);
        http_request_resume(req);
        return true;
    }
    order__batch_submit(svc, b);
    return true;
}

/* POST /orders/batch. */
static bool order__submit_batch(void *svc, const struct http_request *req,
                                struct http_response *resp)
{
    char msg[200];
    json_t *body = http_request_json_object(req, resp);
    if (!body) {
        http_request_resume(req);
        return true;
    }
    json_t *orders = json_object_get(body, "orders");
    static const char *const keys[] = {"orders"};
    if (trade_check_fields(body, keys, 1, msg, sizeof msg) != 0 || !json_is_array(orders) ||
        json_array_size(orders) == 0 || json_array_size(orders) > MSG_ORDER_BATCH_MAX) {
        json_decref(body);
        snprintf(msg, sizeof msg, "body must be {\"orders\": [1..%d orders]}", MSG_ORDER_BATCH_MAX);
        http_reply_error(resp, BZ_EINVAL, msg);
        http_request_resume(req);
        return true;
    }
    struct order__batch *b = order__batch_new(req, resp, json_array_size(orders));
    for (size_t i = 0; i < b->n; i++)
        order__batch_take(b, i, json_array_get(orders, i));
    json_decref(body);
    order__batch_submit(svc, b);
    return true;
}

static void order__query(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    int64_t number;
    struct order o;
    if (order__parse_number(req, &number) != 0) {
        http_reply_error(resp, BZ_EINVAL, "order number must be a non-negative integer");
        return;
    }
    int leader;
    int rv = ordersvc_query(s->svc, number, &o, &leader);
    if (rv == BZ_ENOTLEADER) {
        order__not_leader(resp, leader, "this replica is not the leader");
        return;
    }
    if (rv) {
        http_reply_error(resp, rv, rv == BZ_ENOTFOUND ? "order not found" : NULL);
        return;
    }
    http_reply_data(resp, order__public_json(&o));
}

/* POST /replicate: a leader's append, binary (msg.h); the reply is binary too. */
static void order__replicate(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    struct msg_append m;
    char msg[160];
    if (!http_request_binary(req, resp, "an append"))
        return;
    int rv = msg_append_decode(req->body, req->body_len, &m, msg, sizeof msg);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return;
    }
    struct msg_append_reply a;
    rv = ordersvc_append(s->svc, &m, &a);
    msg_append_free(&m);
    if (rv) {
        http_reply_error(resp, rv,
                         rv == BZ_ESTALE ? "epoch older than promised"
                         : rv == BZ_EINVAL
                             ? "appends are for primary-backup; this replica runs raft"
                             : NULL);
        return;
    }
    uint8_t out[MSG_APPEND_REPLY_SIZE];
    msg_append_reply_encode(&a, out);
    http_reply_binary(resp, out, sizeof out);
}

/* GET /log/{from}: a page of this replica's log (catch-up), binary (msg.h). */
static void order__log_page(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct order_service *s = svc;
    int64_t from;
    if (order__parse_number(req, &from) != 0) {
        http_reply_error(resp, BZ_EINVAL, "log position must be a non-negative integer");
        return;
    }
    struct order *page = xcalloc(MSG_LOG_PAGE_MAX, sizeof *page);
    size_t n = 0, len;
    char *bytes;
    int rv = orderlog_read(s->log, from, MSG_LOG_PAGE_MAX, page, &n);
    if (rv == 0)
        rv = msg_log_page_encode(page, n, &bytes, &len);
    free(page);
    if (rv) {
        http_reply_error(resp, rv == BZ_EINVAL ? BZ_EINTERNAL : rv,
                         rv == BZ_EINVAL ? "log entry cannot be encoded" : NULL);
        return;
    }
    http_reply_binary(resp, bytes, len);
    free(bytes);
}

static void order__metrics(void *svc, struct strbuf *out)
{
    struct order_service *s = svc;
    ordersvc_metrics(s->svc, out);
}

/* The request body ceiling (4 KiB) does not fit an append of MSG_MAX_ENTRIES entries, so
 * replication uses the per-route limit below. */
static struct http_route order__routes[] = {
    {.method = "GET", .pattern = "/health", .fast = order__health},
    {.method = "GET", .pattern = "/state", .fast = order__state},
    {.method = "GET", .pattern = "/status", .fast = order__status},
    {.method = "POST", .pattern = "/leader", .handler = order__leader, .internal = true},
    {.method = "POST", .pattern = "/orders", .async = order__submit, .internal = true},
    {.method = "POST",
     .pattern = "/orders/batch",
     .async = order__submit_batch,
     .internal = true,
     .body_max = MSG_ORDER_BATCH_BYTES_MAX},
    {.method = "GET", .pattern = "/orders/{}", .handler = order__query, .internal = true},
    {.method = "POST",
     .pattern = "/replicate",
     .handler = order__replicate,
     .internal = true,
     .body_max = 1024 * 1024},
    {.method = "GET", .pattern = "/log/{}", .handler = order__log_page, .internal = true},
};

int main(int argc, char **argv)
{
    struct order_service s = {0};
    char err[512], path[CONFIG_PATH_MAX + 32], name[64];

    if (service_init(argc, argv, "order", true, &s.cfg, &s.id) != 0)
        return 2;
    snprintf(name, sizeof name, "order-%d.db", s.id);
    if (service_make_data_dir(&s.cfg) != 0 ||
        service_data_path(&s.cfg, name, path, sizeof path) != 0) {
        LOG_ERROR("cannot create data directory %s", s.cfg.data_dir);
        return 1;
    }
    if (service_lock_data(path) != 0) {
        LOG_ERROR("%s is in use by another process (is replica %d already running?)", path, s.id);
        return 1;
    }
    if (orderlog_open(&s.log, path, err, sizeof err) != 0) {
        LOG_ERROR("%s", err);
        return 1;
    }
    struct orderlog_state st;
    orderlog_state(s.log, &st);
    LOG_INFO("opened %s: last order %lld, promised epoch %llu, log epoch %llu", path,
             (long long)st.last, (unsigned long long)st.promised, (unsigned long long)st.log_epoch);

    /* Bind before the replica talks to its peers: a replica that cannot listen changes
     * nothing in the cluster (SPEC §5). */
    int listen_fd;
    if (http_server_bind(config_replica_find(&s.cfg, s.id)->listen, &listen_fd, err, sizeof err) !=
        0) {
        LOG_ERROR("%s", err);
        orderlog_close(s.log);
        return 1;
    }
    struct http_server *http = NULL;
    struct http_server_opts opts = {
        .listen = config_replica_find(&s.cfg, s.id)->listen,
        .listen_fd = listen_fd,
        .threads = s.cfg.order_threads,
        .workers = s.cfg.order_workers,
        .idle_timeout_s = s.cfg.idle_timeout_s,
        .secret = s.cfg.secret,
        .metrics_prefix = "bazaar_order",
        .metrics = order__metrics,
        .svc = &s,
    };
    /* Listen first, so peers can reach us while we catch up (/health says not ready). */
    if (ordersvc_start(&s.svc, &s.cfg, s.id, s.log, err, sizeof err) != 0) {
        LOG_ERROR("%s", err);
        orderlog_close(s.log);
        return 1;
    }
    if (http_server_start(&http, &opts, order__routes,
                          sizeof order__routes / sizeof order__routes[0], err, sizeof err) != 0) {
        LOG_ERROR("%s", err);
        ordersvc_stop(s.svc);
        orderlog_close(s.log);
        return 1;
    }
    LOG_INFO("replica %d serving on %s", s.id, opts.listen);

    int sig = service_wait_for_signal();
    LOG_INFO("signal %d: shutting down", sig);
    http_server_stop(http);
    ordersvc_stop(s.svc);
    orderlog_close(s.log);
    return 0;
}
