/*
 * batch.c - order batches (batch.h): a queue per replica, and the threads
 * that wait on it taking turns to send what is queued.
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

/*
 * One order waiting for its reply; on its thread's stack. Its thread sleeps on
 * its own mutex and condition variable, so waking the orders of a finished call
 * makes no herd on the batch's lock.
 */
struct batch__item {
    const char *body;
    size_t len;
    int timeout_ms;
    int rv;
    struct http_reply *out;
    struct batch__item *next; /* in the queue; guarded by batch.lock */
    pthread_mutex_t m;        /* guards the two flags */
    pthread_cond_t cond;
    bool done; /* its reply is in *out */
    bool turn; /* a call slot is free and it is first in the queue: send what is queued */
};
struct batch {
    char url[CONFIG_ADDR_MAX + 32]; /* http://host:port/orders/batch */
    const char *secret;
    pthread_mutex_t lock; /* the queue and `inflight`; taken before an item's mutex */
    struct batch__item *head, **tail;
    int inflight;
    atomic_uint_fast64_t calls, orders;
};

struct batch *batch_new(const char *base_url, const char *secret)
{
    struct batch *b = xcalloc(1, sizeof *b);
    snprintf(b->url, sizeof b->url, "%s/orders/batch", base_url);
    b->secret = secret;
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

/* Gives each order its copy of one reply for the whole call (a status other than 200). */
static void batch__share_reply(struct batch__item **items, size_t n, const struct http_reply *r)
{
    for (size_t i = 0; i < n; i++) {
        items[i]->rv = 0;
        items[i]->out->status = r->status;
        strbuf_init(&items[i]->out->body, HTTP_CLIENT_REPLY_MAX);
        if (r->body.len)
            strbuf_append(&items[i]->out->body, r->body.data, r->body.len);
    }
}

/*
 * Decodes {"data":{"results":[{"status":s,"reply":{...}}, ...]}} with exactly n results into
 * each order's reply. 0, or BZ_EUPSTREAM (nothing handed out) when the reply does not decode.
 */
static int batch__split_reply(struct batch__item **items, size_t n, const struct http_reply *r)
{
    json_t *body = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    json_t *results = json_object_get(json_object_get(body, "data"), "results");
    bool ok = json_is_array(results) && json_array_size(results) == n;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *res = json_array_get(results, i), *reply = NULL;
        json_int_t status = 0;
        ok = json_unpack(res, "{s:I,s:o}", "status", &status, "reply", &reply) == 0 &&
             status >= 100 && status <= 599 && json_is_object(reply);
    }
    if (!ok) {
        json_decref(body);
        return BZ_EUPSTREAM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *res = json_array_get(results, i);
        char *text = xjson_dumps(json_object_get(res, "reply"), JSON_COMPACT);
        items[i]->rv = 0;
        items[i]->out->status = (int)json_integer_value(json_object_get(res, "status"));
        strbuf_init(&items[i]->out->body, HTTP_CLIENT_REPLY_MAX);
        strbuf_append(&items[i]->out->body, text, strlen(text));
        free(text);
    }
    json_decref(body);
    return 0;
}

/* One call carrying items[0..n-1]; sets every item's rv and reply. Without the lock. */
static void batch__send(struct batch *b, struct batch__item **items, size_t n)
{
    struct strbuf req;
    strbuf_init(&req, MSG_ORDER_BATCH_BYTES_MAX);
    int timeout_ms = 0;
    strbuf_append(&req, "{\"orders\":[", 11);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strbuf_append(&req, ",", 1);
        strbuf_append(&req, items[i]->body, items[i]->len);
        if (items[i]->timeout_ms > timeout_ms)
            timeout_ms = items[i]->timeout_ms;
    }
    strbuf_append(&req, "]}", 2);
    atomic_fetch_add(&b->calls, 1);
    atomic_fetch_add(&b->orders, n);

    struct http_reply reply;
    int rv = http_client_request("POST", b->url, b->secret, req.data, req.len, timeout_ms, &reply);
    strbuf_free(&req);
    if (rv == 0) {
        if (reply.status != 200)
            batch__share_reply(items, n, &reply);
        else
            rv = batch__split_reply(items, n, &reply);
        http_reply_free(&reply);
    }
    if (rv)
        for (size_t i = 0; i < n; i++)
            items[i]->rv = rv;
}

/* Sets one of an item's flags and wakes its thread. */
static void batch__wake(struct batch__item *it, bool done)
{
    pthread_mutex_lock(&it->m);
    if (done)
        it->done = true;
    else
        it->turn = true;
    pthread_cond_signal(&it->cond);
    pthread_mutex_unlock(&it->m);
}

/*
 * With b->lock held, and a call slot free: takes what is queued (within a
 * call's bounds), performs the call without the lock and hands every order
 * its reply. Returns with b->lock held.
 */
static void batch__take_and_send(struct batch *b)
{
    struct batch__item *items[MSG_ORDER_BATCH_MAX];
    size_t n = 0, bytes = 16;
    while (b->head && n < MSG_ORDER_BATCH_MAX &&
           (n == 0 || bytes + b->head->len + 1 <= MSG_ORDER_BATCH_BYTES_MAX)) {
        bytes += b->head->len + 1;
        items[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head)
        b->tail = &b->head;
    b->inflight++;
    /* More than one call's worth queued and a slot free: its first order's thread sends. */
    if (b->head && b->inflight < BATCH_CALLS_MAX)
        batch__wake(b->head, false);
    pthread_mutex_unlock(&b->lock);

    batch__send(b, items, n);
    for (size_t i = 0; i < n; i++)
        batch__wake(items[i], true); /* ours too: its thread is this one, awake */

    pthread_mutex_lock(&b->lock);
    b->inflight--;
}

int batch_call(struct batch *b, const char *body, size_t body_len, int timeout_ms,
               struct http_reply *out)
{
    struct batch__item me = {.body = body, .len = body_len, .timeout_ms = timeout_ms, .out = out};
    pthread_mutex_init(&me.m, NULL);
    pthread_cond_init(&me.cond, NULL);

    pthread_mutex_lock(&b->lock);
    *b->tail = &me;
    b->tail = &me.next;
    for (;;) {
        /* With b->lock held. A free slot and something queued: send it (ours or not). */
        if (b->inflight < BATCH_CALLS_MAX && b->head) {
            batch__take_and_send(b);
            pthread_mutex_lock(&me.m);
            bool done = me.done;
            pthread_mutex_unlock(&me.m);
            if (done)
                break;
            continue;
        }
        pthread_mutex_unlock(&b->lock);
        pthread_mutex_lock(&me.m);
        while (!me.done && !me.turn)
            pthread_cond_wait(&me.cond, &me.m);
        bool done = me.done;
        me.turn = false;
        pthread_mutex_unlock(&me.m);
        pthread_mutex_lock(&b->lock);
        if (done)
            break;
    }
    /* A slot is free: the next queued order's thread sends it. */
    if (b->head && b->inflight < BATCH_CALLS_MAX)
        batch__wake(b->head, false);
    pthread_mutex_unlock(&b->lock);
    /* Whoever set done did so under me.m and has released it: nobody touches me any more. */
    pthread_mutex_lock(&me.m);
    pthread_mutex_unlock(&me.m);
    pthread_cond_destroy(&me.cond);
    pthread_mutex_destroy(&me.m);
    return me.rv;
}
