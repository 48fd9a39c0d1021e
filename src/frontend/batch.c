/*
 * batch.c - order batches (batch.h): a queue per replica, drained into calls
 * on the http_async loop by whoever finds a call slot free.
 */
#include "batch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "error.h"
#include "msg.h"

struct batch {
    char url[CONFIG_ADDR_MAX + 32]; /* http://host:port/orders/batch */
    const char *secret;
    struct http_async *async;
    pthread_mutex_t lock; /* the queue and `inflight` */
    struct batch_item *head, **tail;
    int inflight;
    atomic_uint_fast64_t calls, orders;
};

/* One call in flight: the orders it carries, in the order of the body. */
struct batch__call {
    struct batch *b;
    struct batch_item *items;
    size_t n;
};

struct batch *batch_new(const char *base_url, const char *secret, struct http_async *a)
{
    struct batch *b = xcalloc(1, sizeof *b);
    snprintf(b->url, sizeof b->url, "%s/orders/batch", base_url);
    b->secret = secret;
    b->async = a;
    pthread_mutex_init(&b->lock, NULL);
    b->tail = &b->head;
    return b;
}

void batch_free(struct batch *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void batch_counts(struct batch *b, uint64_t *calls, uint64_t *orders)
{
    *calls = atomic_load(&b->calls);
    *orders = atomic_load(&b->orders);
}

/*
 * The results of a 200 reply, {"data":{"results":[{"status":s,"reply":{...}}, ...]}}, if it
 * holds exactly n well-formed ones; NULL otherwise.
 */
static json_t *batch__results(json_t *body, size_t n)
{
    json_t *results = json_object_get(json_object_get(body, "data"), "results");
    if (!json_is_array(results) || json_array_size(results) != n)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *res = json_array_get(results, i), *reply = NULL;
        json_int_t status = 0;
        if (json_unpack(res, "{s:I,s:o}", "status", &status, "reply", &reply) != 0 ||
            status < 100 || status > 599 || !json_is_object(reply))
            return NULL;
    }
    return results;
}

/* A call ended (rv, reply as http_async gives them): frees its slot, answers its orders. */
static void batch__finish(struct batch__call *c, int rv, struct http_reply *reply)
{
    struct batch *b = c->b;
    json_t *body = NULL, *results = NULL;
    bool own = rv == 0 && reply; /* http_async's reply, ours to free */
    if (rv == 0) {
        body = json_loadb(reply->body.data ? reply->body.data : "", reply->body.len, 0, NULL);
        /* A 200 answers each order on its own; any other status answers them all. */
        if (reply->status == 200 && !(results = batch__results(body, c->n)))
            rv = BZ_EUPSTREAM;
    }
    pthread_mutex_lock(&b->lock);
    b->inflight--;
    pthread_mutex_unlock(&b->lock);
    size_t i = 0;
    for (struct batch_item *it = c->items, *next; it; it = next, i++) {
        next = it->next_; /* it belongs to its caller again once done runs */
        if (rv) {
            it->done(it, rv, 0, NULL);
        } else if (results) {
            json_t *res = json_array_get(results, i);
            it->done(it, 0, (int)json_integer_value(json_object_get(res, "status")),
                     json_object_get(res, "reply"));
        } else {
            it->done(it, 0, reply->status, body);
        }
    }
    if (own)
        http_reply_free(reply);
    json_decref(body);
    free(c);
}

/*
 * Sends what is queued while call slots are free. Without the lock; on any thread.
 * A call that cannot even start fails its orders here, on this thread.
 */
static void batch__pump(struct batch *b);

static void batch__call_done(void *arg, int rv, struct http_reply *reply)
{
    struct batch__call *c = arg;
    struct batch *b = c->b;
    batch__finish(c, rv, reply);
    batch__pump(b);
}

static void batch__pump(struct batch *b)
{
    for (;;) {
        pthread_mutex_lock(&b->lock);
        if (b->inflight >= BATCH_CALLS_MAX || !b->head) {
            pthread_mutex_unlock(&b->lock);
            return;
        }
        struct batch__call *c = xcalloc(1, sizeof *c);
        c->b = b;
        struct batch_item **last = &c->items;
        size_t bytes = 16;
        int timeout_ms = 0;
        while (b->head && c->n < MSG_ORDER_BATCH_MAX &&
               (c->n == 0 || bytes + b->head->len + 1 <= MSG_ORDER_BATCH_BYTES_MAX)) {
            struct batch_item *it = b->head;
            b->head = it->next_;
            bytes += it->len + 1;
            if (it->timeout_ms > timeout_ms)
                timeout_ms = it->timeout_ms;
            it->next_ = NULL;
            *last = it;
            last = &it->next_;
            c->n++;
        }
        if (!b->head)
            b->tail = &b->head;
        b->inflight++;
        pthread_mutex_unlock(&b->lock);

        struct strbuf req;
        strbuf_init(&req, MSG_ORDER_BATCH_BYTES_MAX);
        strbuf_append(&req, "{\"orders\":[", 11);
        for (struct batch_item *it = c->items; it; it = it->next_) {
            if (it != c->items)
                strbuf_append(&req, ",", 1);
            strbuf_append(&req, it->body, it->len);
        }
        strbuf_append(&req, "]}", 2);
        atomic_fetch_add(&b->calls, 1);
        atomic_fetch_add(&b->orders, c->n);
        /* Every order carries its request id: sending the batch twice changes nothing. */
        struct http_async_req r = {.method = "POST",
                                   .url = b->url,
                                   .secret = b->secret,
                                   .body = req.data,
                                   .body_len = req.len,
                                   .timeout_ms = timeout_ms,
                                   .idempotent = true};
        int rv = http_async_request(b->async, &r, batch__call_done, c);
        strbuf_free(&req);
        if (rv)
            batch__finish(c, BZ_EUNAVAIL, NULL);
    }
}

void batch_submit(struct batch *b, struct batch_item *it)
{
    it->next_ = NULL;
    pthread_mutex_lock(&b->lock);
    *b->tail = it;
    b->tail = &it->next_;
    pthread_mutex_unlock(&b->lock);
    batch__pump(b);
}

/* A blocking caller's order: its thread sleeps on its own latch. */
struct batch__waiter {
    struct batch_item it; /* first: done gets &it */
    struct latch latch;
    int rv;
    struct http_reply *out;
};

static void batch__wake(struct batch_item *it, int rv, int status, json_t *body)
{
    struct batch__waiter *w = (struct batch__waiter *)it;
    if (rv == 0)
        http_reply_from_json(w->out, status, body);
    w->rv = rv;
    latch_set(&w->latch);
}

int batch_call(struct batch *b, const char *body, size_t body_len, int timeout_ms,
               struct http_reply *out)
{
    struct batch__waiter w = {
        .it = {.body = body, .len = body_len, .timeout_ms = timeout_ms, .done = batch__wake},
        .out = out};
    latch_init(&w.latch);
    batch_submit(b, &w.it);
    latch_wait(&w.latch);
    return w.rv;
}
