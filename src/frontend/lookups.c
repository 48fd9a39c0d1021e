/*
 * lookups.c - lookup batches (lookups.h): a queue per event thread, drained
 * into POST /lookups calls whenever a call slot is free.
 */
#include "lookups.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "log.h"
#include "http_server.h"
#include "msg.h"

struct lookups {
    char url[CONFIG_ADDR_MAX + 32]; /* http://host:port/lookups */
    const char *secret;
    struct http_async *async;
    int timeout_ms;
    struct lookups_item *head, **tail;
    int inflight;
    /* Written on the owner thread, read by /metrics from any thread. */
    atomic_uint_fast64_t calls, names, refused;
};

/* One call in flight: the misses it carries, in the order of the names. */
struct lookups__call {
    struct lookups *l;
    struct lookups_item *items;
    size_t n;
};

struct lookups *lookups_new(const char *base_url, const char *secret, struct http_async *a,
                            int timeout_ms)
{
    struct lookups *l = xcalloc(1, sizeof *l);
    snprintf(l->url, sizeof l->url, "%s/lookups", base_url);
    l->secret = secret;
    l->async = a;
    l->timeout_ms = timeout_ms;
    l->tail = &l->head;
    return l;
}

void lookups_free(struct lookups *l)
{
    free(l);
}

void lookups_counts(const struct lookups *l, uint64_t *calls, uint64_t *names, uint64_t *refused)
{
    *calls = atomic_load(&l->calls);
    *names = atomic_load(&l->names);
    *refused = atomic_load(&l->refused);
}

/* A call ended (rv, reply as http_async gives them): frees its slot, answers its misses. */
static void lookups__finish(struct lookups__call *c, int rv, struct http_reply *reply)
{
    struct msg_lookup_result results[MSG_LOOKUP_BATCH_MAX];
    char err[160];
    bool own = rv == 0 && reply; /* http_async's reply, ours to free once answered */
    c->l->inflight--;
    if (rv == 0) {
        /* An error status answers the call, not a stock (a 404 here is a catalog without
         * the route, not a stock not found): each miss gets the upstream failure. */
        if (reply->status != 200)
            snprintf(err, sizeof err, "status %d", reply->status);
        if (reply->status != 200 || msg_lookup_reply_decode(reply->body.data, reply->body.len, c->n,
                                                            results, err, sizeof err)) {
            /* Logged at the 1st, 2nd, 4th, 8th... refusal: a misconfigured catalog must be
             * seen, without a line per batch. */
            uint64_t refused = atomic_fetch_add(&c->l->refused, 1) + 1;
            if ((refused & (refused - 1)) == 0)
                LOG_WARN("catalog refused a lookup batch (%llu so far): %s",
                         (unsigned long long)refused, err);
            rv = BZ_EUPSTREAM;
        }
    }
    size_t i = 0;
    for (struct lookups_item *it = c->items, *next; it; it = next, i++) {
        next = it->next_; /* it belongs to its caller again once done runs */
        if (rv)
            it->done(it, rv, 0, NULL, 0);
        else
            it->done(it, 0, results[i].status, results[i].body, results[i].len);
    }
    if (own)
        http_reply_free(reply);
    free(c);
}

static void lookups__pump(struct lookups *l);

static void lookups__call_done(void *arg, int rv, struct http_reply *reply)
{
    struct lookups__call *c = arg;
    struct lookups *l = c->l;
    lookups__finish(c, rv, reply);
    lookups__pump(l);
}

/* Sends what is queued while call slots are free; a call that cannot start fails its misses. */
static void lookups__pump(struct lookups *l)
{
    uint64_t now = clock_now_ms();
    while (l->head && l->head->deadline_ms_ <= now) { /* waited its whole deadline in the queue */
        struct lookups_item *it = l->head;
        l->head = it->next_;
        if (!l->head)
            l->tail = &l->head;
        it->done(it, BZ_ETIMEDOUT, 0, NULL, 0);
    }
    while (l->inflight < LOOKUPS_CALLS_MAX && l->head) {
        /* The oldest miss's deadline is the call's; the others' are later. */
        int timeout_ms = (int)(l->head->deadline_ms_ - now);
        struct lookups__call *c = xcalloc(1, sizeof *c);
        const char *names[MSG_LOOKUP_BATCH_MAX];
        c->l = l;
        struct lookups_item **last = &c->items;
        while (l->head && c->n < MSG_LOOKUP_BATCH_MAX) {
            struct lookups_item *it = l->head;
            l->head = it->next_;
            it->next_ = NULL;
            *last = it;
            last = &it->next_;
            names[c->n++] = it->name;
        }
        if (!l->head)
            l->tail = &l->head;
        l->inflight++;
        struct strbuf body;
        strbuf_init(&body, MSG_LOOKUPS_BYTES_MAX);
        int rv = msg_lookups_encode(names, c->n, &body);
        if (rv == 0) {
            atomic_fetch_add_explicit(&l->calls, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&l->names, c->n, memory_order_relaxed);
            /* A lookup changes nothing: a call may be sent twice. */
            struct http_async_req r = {.method = "POST",
                                       .url = l->url,
                                       .secret = l->secret,
                                       .content_type = HTTP_BINARY_TYPE,
                                       .body = body.data,
                                       .body_len = body.len,
                                       .timeout_ms = timeout_ms,
                                       .idempotent = true};
            rv = http_async_request(l->async, &r, lookups__call_done, c);
        }
        strbuf_free(&body);
        if (rv)
            lookups__finish(c, BZ_EUNAVAIL, NULL);
    }
}

void lookups_submit(struct lookups *l, struct lookups_item *it)
{
    it->next_ = NULL;
    it->deadline_ms_ = clock_now_ms() + (uint64_t)(l->timeout_ms > 0 ? l->timeout_ms : 0);
    *l->tail = it;
    l->tail = &it->next_;
    lookups__pump(l);
}
