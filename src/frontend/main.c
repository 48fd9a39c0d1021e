/*
 * bazaar-frontend: the public REST API (SPEC §2). Serves lookups from the
 * LRU cache or the catalog, and routes orders to the order leader with a
 * request id that survives retries and failover.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "error.h"
#include "http_client.h"
#include "http_async.h"
#include "http_server.h"
#include "leader.h"
#include "log.h"
#include "lookups.h"
#include "metrics.h"
#include "msg.h"
#include "service.h"

#define FRONTEND__RECENT_ORDERS   16   /* acknowledged orders kept for the status page */
#define FRONTEND__EVENTS          16   /* changes of leader and replica state kept for it */
#define FRONTEND__WATCH_MS        200  /* how often the watcher compares the leader's view */
#define FRONTEND__STREAM_GRACE_MS 5000 /* not ready at start until the stream is heard, or this */

/* Something an operator wants to see on the status page: a leader change, a replica down. */
struct frontend__event {
    uint64_t at_ms; /* wall clock */
    char text[96];
};

/* An order this front-end acknowledged, for GET /status and the status page. */
struct frontend__order_seen {
    int64_t number;
    char name[STOCK_NAME_MAX + 1];
    char type[8];
    int64_t quantity;
    uint64_t at_ms; /* wall clock */
};

/*
 * What this front-end knows of the catalog's invalidation stream (notify.h).
 * The cache is trusted only while the stream is heard from without gaps: a
 * gap, a new stream (the catalog restarted) or a silence longer than three
 * heartbeats empties the cache, and a silence also bypasses it until the
 * stream is heard again.
 */
struct frontend__stream {
    pthread_mutex_t lock; /* guards id and seq, and every change of the atomics below */
    uint64_t id, seq;     /* the stream and its last number */
    /* Read without the lock on every lookup. */
    atomic_bool known;             /* a message was received */
    atomic_uint_fast64_t heard_ms; /* monotonic time of the last message */
    atomic_bool silent;            /* the cache is bypassed until the next message */
    atomic_uint_fast64_t resets_gap, resets_silence, resets_restart;
};

/* The lookup batcher of one event thread (its http_async client's). */
struct frontend__thread_lookups {
    struct http_async *client;
    struct lookups *lookups;
};

struct frontend {
    struct bz_config cfg;
    int id;
    const char *listen;
    struct leader *leader;
    struct cache *cache;  /* NULL when cache = off */
    struct cache *orders; /* GET /orders/{n} replies (immutable once given); NULL when off */
    char catalog_url[CONFIG_ADDR_MAX + 16];
    struct http_async *async; /* the order batches' calls (a loop thread; misses use the
                                 event threads' own clients, http_request_async) */
    atomic_uint_fast64_t invalidations_received, catalog_failures;
    atomic_uint_fast64_t catalog_ok_ms; /* when a catalog call last got an answer (0: never) */
    uint64_t started_ms;
    struct frontend__stream stream;

    pthread_mutex_t lookups_lock; /* guards the list (each batcher is its thread's own) */
    struct frontend__thread_lookups *lookups;
    size_t nlookups;

    pthread_mutex_t recent_lock; /* guards recent[] and events[] */
    struct frontend__order_seen recent[FRONTEND__RECENT_ORDERS];
    size_t recent_next, recent_count;
    struct frontend__event events[FRONTEND__EVENTS];
    size_t events_next, events_count;

    /* The watcher thread: turns changes of the leader's view into events. */
    pthread_t watcher;
    pthread_mutex_t watch_lock;
    pthread_cond_t watch_cond;
    bool stopping;
};

extern const char frontend_page_html[]; /* page.c */

/* ---------------------------------------------------------------- cache trust */

static uint64_t frontend__silence_ms(const struct frontend *fe)
{
    return 3u * (uint64_t)fe->cfg.heartbeat_ms;
}

/* Heard within the silence limit (a message stamped after `now_ms` was taken counts). */
static bool frontend__fresh(const struct frontend *fe, uint64_t heard_ms, uint64_t now_ms)
{
    return heard_ms >= now_ms || now_ms - heard_ms <= frontend__silence_ms(fe);
}

/* Empties the cache because invalidations may have been missed; logs why once. */
static void frontend__reset_cache(struct frontend *fe, const char *why)
{
    size_t dropped = fe->cache ? cache_clear(fe->cache) : 0;
    LOG_WARN("cache emptied (%zu entries): %s", dropped, why);
}

/*
 * True when cached entries may be served and filled now: the invalidation
 * stream was heard within the silence limit. The first check that finds a
 * silence empties the cache (and says so).
 */
static bool frontend__cache_trusted(struct frontend *fe, uint64_t now_ms)
{
    if (!fe->cache)
        return false;
    struct frontend__stream *st = &fe->stream;
    if (atomic_load(&st->known) && !atomic_load(&st->silent) &&
        frontend__fresh(fe, atomic_load(&st->heard_ms), now_ms))
        return true; /* the common case, lock-free */
    pthread_mutex_lock(&st->lock);
    uint64_t heard = atomic_load(&st->heard_ms);
    bool trusted = st->known && !st->silent && frontend__fresh(fe, heard, now_ms);
    if (!trusted && st->known && !st->silent) {
        st->silent = true;
        atomic_fetch_add(&st->resets_silence, 1);
        char why[128];
        snprintf(why, sizeof why,
                 "no word from the catalog for %llu ms (limit %llu): bypassing the cache",
                 (unsigned long long)(now_ms - heard),
                 (unsigned long long)frontend__silence_ms(fe));
        frontend__reset_cache(fe, why);
    }
    pthread_mutex_unlock(&st->lock);
    return trusted;
}

/* Takes one message of the stream: detects gaps and restarts, then applies it. */
static void frontend__stream_receive(struct frontend *fe, const struct msg_inval_batch *m)
{
    struct frontend__stream *st = &fe->stream;
    char why[160] = "";
    pthread_mutex_lock(&st->lock);
    bool was_known = st->known;
    uint64_t now = clock_now_ms();
    if (st->known && !st->silent && !frontend__fresh(fe, atomic_load(&st->heard_ms), now)) {
        /* A silence nobody looked at yet (the process was paused, say): messages may have been
         * lost in it even if this one looks in sequence. */
        atomic_fetch_add(&st->resets_silence, 1);
        frontend__reset_cache(fe, "no word from the catalog for longer than the silence limit");
    }
    if (!st->known || st->id != m->stream) {
        if (st->known) {
            atomic_fetch_add(&st->resets_restart, 1);
            snprintf(why, sizeof why, "the catalog restarted (new invalidation stream)");
        } else {
            LOG_INFO("invalidation stream from the catalog: seq %llu", (unsigned long long)m->seq);
        }
        st->known = true;
        st->id = m->stream;
        st->seq = m->seq;
        if (fe->cache)
            cache_clear(fe->cache); /* nothing can be known about what came before */
    } else {
        /* A message with stocks takes the next number; a heartbeat repeats the last. */
        uint64_t expect = m->n ? st->seq + 1 : st->seq;
        if (m->seq > expect) {
            atomic_fetch_add(&st->resets_gap, 1);
            snprintf(why, sizeof why, "invalidations %llu..%llu were lost",
                     (unsigned long long)(st->seq + 1),
                     (unsigned long long)(m->n ? m->seq - 1 : m->seq));
        }
        if (m->seq > st->seq)
            st->seq = m->seq; /* an older number is a late retry: applied, not counted */
    }
    if (why[0])
        frontend__reset_cache(fe, why);
    if (st->silent && was_known)
        LOG_INFO("invalidation stream heard again (seq %llu): cache in use again",
                 (unsigned long long)m->seq);
    atomic_store(&st->heard_ms, now);
    st->silent = false;
    for (size_t i = 0; i < m->n && fe->cache; i++)
        cache_invalidate(fe->cache, m->stocks[i].name, m->stocks[i].version);
    pthread_mutex_unlock(&st->lock);
}

static json_t *frontend__stream_json(struct frontend *fe, uint64_t now_ms)
{
    struct frontend__stream *st = &fe->stream;
    pthread_mutex_lock(&st->lock);
    uint64_t heard = atomic_load(&st->heard_ms);
    json_t *obj = json_pack(
        "{s:b,s:I,s:I,s:o,s:b,s:I,s:I,s:I}", "known", st->known, "stream", (json_int_t)st->id,
        "seq", (json_int_t)st->seq, "heard_ms_ago",
        st->known && now_ms >= heard ? json_integer((json_int_t)(now_ms - heard)) : json_null(),
        "trusted", st->known && !st->silent && frontend__fresh(fe, heard, now_ms), "resets_gap",
        (json_int_t)atomic_load(&st->resets_gap), "resets_silence",
        (json_int_t)atomic_load(&st->resets_silence), "resets_restart",
        (json_int_t)atomic_load(&st->resets_restart));
    pthread_mutex_unlock(&st->lock);
    return obj;
}

/* Replies 503 with Retry-After: the documented answer when a dependency is down. */
static void frontend__unavailable(struct http_response *resp, const char *msg)
{
    resp->retry_after_s = 1;
    http_reply_error(resp, BZ_EUNAVAIL, msg);
}

/*
 * GET /health = /readyz (SPEC §2): ready when an order leader is known and the
 * catalog is reachable (its invalidation stream or its last answer), else 503
 * with the reason.
 */
static bool frontend__health(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    (void)req;
    uint64_t now = clock_now_ms();
    json_t *st = leader_status_json(fe->leader);
    bool has_leader = json_is_integer(json_object_get(st, "leader"));
    pthread_mutex_lock(&fe->stream.lock);
    bool stream_alive =
        fe->stream.known && frontend__fresh(fe, atomic_load(&fe->stream.heard_ms), now);
    pthread_mutex_unlock(&fe->stream.lock);
    /* The catalog counts as reachable while its stream is heard, or it answered a lookup
     * within the same limit (its pushes may be cut off while its answers still arrive). */
    uint64_t answered = atomic_load(&fe->catalog_ok_ms);
    bool catalog = stream_alive || (answered && frontend__fresh(fe, answered, now));
    /* At start, a cached front-end waits (a few heartbeats at most) for the catalog's stream,
     * so that it does not take traffic with a cache it cannot use yet. */
    bool waiting =
        fe->cache && !fe->stream.known && now - fe->started_ms < FRONTEND__STREAM_GRACE_MS;
    const char *reason = !has_leader ? "no order leader"
                         : !catalog  ? "catalog unreachable"
                         : waiting   ? "waiting for the catalog's invalidation stream"
                                     : NULL;
    json_t *body = json_pack("{s:s,s:s,s:i,s:O,s:O}", "status", reason ? "unavailable" : "ok",
                             "service", "frontend", "id", fe->id, "leader",
                             json_object_get(st, "leader"), "epoch", json_object_get(st, "epoch"));
    if (reason) {
        json_object_set_new(body, "reason", json_string(reason));
        resp->retry_after_s = 1;
    }
    json_decref(st);
    http_reply_json(resp, reason ? 503 : 200, body);
    return true;
}

static json_t *frontend__recent_json(struct frontend *fe)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&fe->recent_lock);
    for (size_t k = 0; k < fe->recent_count; k++) {
        size_t i = (fe->recent_next + FRONTEND__RECENT_ORDERS - 1 - k) % FRONTEND__RECENT_ORDERS;
        const struct frontend__order_seen *o = &fe->recent[i];
        json_array_append_new(arr,
                              json_pack("{s:I,s:s,s:s,s:I,s:I}", "number", (json_int_t)o->number,
                                        "name", o->name, "type", o->type, "quantity",
                                        (json_int_t)o->quantity, "at_ms", (json_int_t)o->at_ms));
    }
    pthread_mutex_unlock(&fe->recent_lock);
    return arr; /* newest first */
}

static void frontend__event_add(struct frontend *fe, const char *text)
{
    pthread_mutex_lock(&fe->recent_lock);
    struct frontend__event *e = &fe->events[fe->events_next];
    e->at_ms = clock_wall_ms();
    snprintf(e->text, sizeof e->text, "%s", text);
    fe->events_next = (fe->events_next + 1) % FRONTEND__EVENTS;
    if (fe->events_count < FRONTEND__EVENTS)
        fe->events_count++;
    pthread_mutex_unlock(&fe->recent_lock);
}

static json_t *frontend__events_json(struct frontend *fe)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&fe->recent_lock);
    for (size_t k = 0; k < fe->events_count; k++) {
        size_t i = (fe->events_next + FRONTEND__EVENTS - 1 - k) % FRONTEND__EVENTS;
        json_array_append_new(arr, json_pack("{s:I,s:s}", "at_ms", (json_int_t)fe->events[i].at_ms,
                                             "text", fe->events[i].text));
    }
    pthread_mutex_unlock(&fe->recent_lock);
    return arr; /* newest first */
}

/*
 * Compares the leader module's view (leader, epoch, each replica reachable or
 * not) with the previous one every FRONTEND__WATCH_MS and records what changed.
 */
/*
 * While the invalidation stream is silent, asks the catalog's /livez, so that
 * readiness says whether the catalog is reachable rather than whether it pushes
 * to us (a front-end missing from [catalog] notify serves, uncached, and says why).
 */
static void frontend__probe_catalog(struct frontend *fe, bool *warned)
{
    uint64_t now = clock_now_ms();
    if (atomic_load(&fe->stream.known) &&
        frontend__fresh(fe, atomic_load(&fe->stream.heard_ms), now))
        return;
    char url[CONFIG_ADDR_MAX + 32];
    struct http_reply reply;
    snprintf(url, sizeof url, "%s/livez", fe->catalog_url);
    if (http_client_request("GET", url, NULL, NULL, 0, 300, &reply) != 0)
        return;
    bool alive = reply.status == 200;
    http_reply_free(&reply);
    if (!alive)
        return;
    atomic_store(&fe->catalog_ok_ms, clock_now_ms());
    if (!atomic_load(&fe->stream.known) && !*warned &&
        now > fe->started_ms + FRONTEND__STREAM_GRACE_MS) {
        *warned = true;
        LOG_WARN("the catalog answers but sends no invalidations here: the cache stays bypassed "
                 "(is %s in the catalog's notify list?)",
                 fe->listen);
    }
}

static void *frontend__watch_main(void *arg)
{
    struct frontend *fe = arg;
    json_int_t leader = 0, epoch = 0;
    bool reachable[CONFIG_MAX_REPLICAS] = {0};
    bool primed = false; /* a first leader was named: from then on, changes are events */
    bool warned = false;
    pthread_mutex_lock(&fe->watch_lock);
    while (!fe->stopping) {
        pthread_mutex_unlock(&fe->watch_lock);
        frontend__probe_catalog(fe, &warned);
        json_t *st = leader_status_json(fe->leader);
        json_t *l = json_object_get(st, "leader");
        json_int_t now_leader = json_is_integer(l) ? json_integer_value(l) : 0;
        json_int_t now_epoch = json_integer_value(json_object_get(st, "epoch"));
        bool report = primed;
        char text[96];
        if (!primed && now_leader) {
            primed = true;
            snprintf(text, sizeof text, "leader is replica %lld (epoch %lld)",
                     (long long)now_leader, (long long)now_epoch);
            frontend__event_add(fe, text);
        } else if (report && now_leader != leader) {
            if (now_leader)
                snprintf(text, sizeof text, "leader changed to replica %lld (epoch %lld)",
                         (long long)now_leader, (long long)now_epoch);
            else
                snprintf(text, sizeof text, "no leader (replica %lld lost)", (long long)leader);
            frontend__event_add(fe, text);
        } else if (report && now_epoch != epoch && now_leader) {
            snprintf(text, sizeof text, "replica %lld leads again in epoch %lld",
                     (long long)now_leader, (long long)now_epoch);
            frontend__event_add(fe, text);
        }
        leader = now_leader;
        epoch = now_epoch;
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(st, "replicas"), i, r)
        {
            if (i >= CONFIG_MAX_REPLICAS)
                break;
            bool up = json_is_true(json_object_get(r, "reachable"));
            if (report && up != reachable[i]) {
                snprintf(text, sizeof text, "replica %lld %s",
                         (long long)json_integer_value(json_object_get(r, "id")),
                         up ? "is back" : "is down");
                frontend__event_add(fe, text);
            }
            reachable[i] = up;
        }
        json_decref(st);
        pthread_mutex_lock(&fe->watch_lock);
        struct timespec ts;
        clock_deadline(&ts, FRONTEND__WATCH_MS);
        if (!fe->stopping)
            pthread_cond_timedwait(&fe->watch_cond, &fe->watch_lock, &ts);
    }
    pthread_mutex_unlock(&fe->watch_lock);
    return NULL;
}

static void frontend__recent_add(struct frontend *fe, const struct trade *t, int64_t number)
{
    pthread_mutex_lock(&fe->recent_lock);
    struct frontend__order_seen *o = &fe->recent[fe->recent_next];
    o->number = number;
    snprintf(o->name, sizeof o->name, "%s", t->name);
    snprintf(o->type, sizeof o->type, "%s", trade_type_name(t->type));
    o->quantity = t->quantity;
    o->at_ms = clock_wall_ms();
    fe->recent_next = (fe->recent_next + 1) % FRONTEND__RECENT_ORDERS;
    if (fe->recent_count < FRONTEND__RECENT_ORDERS)
        fe->recent_count++;
    pthread_mutex_unlock(&fe->recent_lock);
}

static bool frontend__status(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    (void)req;
    uint64_t now = clock_now_ms();
    json_t *st = service_status_json(&fe->cfg, "frontend", fe->id);
    json_object_set_new(st, "role", json_string("frontend"));
    json_object_set_new(st, "listen", json_string(fe->listen));
    json_t *lst = leader_status_json(fe->leader);
    json_object_update(st, lst);
    json_decref(lst);
    frontend__cache_trusted(fe, now); /* notices a silence even with no lookups */
    json_object_set_new(st, "invalidation_stream", frontend__stream_json(fe, now));
    json_object_set_new(st, "recent_orders", frontend__recent_json(fe));
    json_object_set_new(st, "events", frontend__events_json(fe));
    json_object_set_new(st, "now_ms", json_integer((json_int_t)clock_wall_ms()));
    json_t *cache;
    if (fe->cache) {
        struct cache_stats cs;
        cache_stats(fe->cache, &cs);
        cache = json_pack(
            "{s:b,s:i,s:I,s:I,s:I,s:I,s:I,s:o}", "enabled", 1, "capacity", fe->cfg.cache_size,
            "hits", (json_int_t)cs.hits, "misses", (json_int_t)cs.misses, "evictions",
            (json_int_t)cs.evictions, "invalidations", (json_int_t)cs.invalidations, "stale_fills",
            (json_int_t)cs.stale_fills, "entries", cache_entries_json(fe->cache, now));
        json_object_set_new(cache, "flights", json_integer((json_int_t)cs.flights));
        json_object_set_new(cache, "flight_joins", json_integer((json_int_t)cs.flight_joins));
    } else {
        cache = json_pack("{s:b,s:[]}", "enabled", 0, "entries");
    }
    json_object_set_new(st, "cache", cache);
    if (fe->orders) {
        struct cache_stats os;
        cache_stats(fe->orders, &os);
        cache = json_pack("{s:b,s:i,s:I,s:I,s:I,s:I}", "enabled", 1, "capacity",
                          fe->cfg.order_cache_size, "hits", (json_int_t)os.hits, "misses",
                          (json_int_t)os.misses, "evictions", (json_int_t)os.evictions, "entries",
                          (json_int_t)os.entries);
    } else {
        cache = json_pack("{s:b}", "enabled", 0);
    }
    json_object_set_new(st, "order_cache", cache);
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
    uint64_t now = req->start_us / 1000u; /* microseconds ago: no clock read per hit */
    if (frontend__cache_trusted(fe, now) && cache_get(fe->cache, req->param, now, &resp->body)) {
        resp->status = 200;
        return true;
    }
    return false;
}

/*
 * The client's reply in a catalog lookup reply: the catalog answers
 * {"data":{"name":..,"price":..,"quantity":..,"version":N}} with "version" last
 * (catalog__stock_json), and the client gets the same bytes without
 * ',"version":N'. Cutting them out replaces a JSON parse and a dump per miss
 * (18 % of the front-end's CPU on misses, perf); the catalog is the only
 * writer of these bytes. Writes the reply into out and the version into
 * *version: 0, or BZ_EUPSTREAM for a body of any other shape.
 */
static int frontend__lookup_strip(const char *body, size_t len, struct strbuf *out,
                                  uint64_t *version)
{
    static const char head[] = "{\"data\":{", key[] = ",\"version\":";
    const size_t head_len = sizeof head - 1, key_len = sizeof key - 1;
    if (len < head_len + 1 + key_len + 1 + 2 || memcmp(body, head, head_len) != 0 ||
        memcmp(body + len - 2, "}}", 2) != 0)
        return BZ_EUPSTREAM;
    size_t end = len - 2, digits = end;
    while (digits > head_len + 1 + key_len && body[digits - 1] >= '0' && body[digits - 1] <= '9')
        digits--;
    size_t cut = digits - key_len; /* > head_len: at least one member before "version" */
    if (digits == end || memcmp(body + cut, key, key_len) != 0 ||
        parse_u64(body + digits, end - digits, INT64_MAX, version) != 0)
        return BZ_EUPSTREAM;
    strbuf_reset(out);
    if (strbuf_append(out, body, cut) != 0 || strbuf_append(out, "}}", 2) != 0)
        return BZ_EUPSTREAM;
    return 0;
}

/*
 * Turns the catalog's answer to a lookup into resp: rv as http_client_request
 * gives it, and when 0 the status and body GET /stocks/{name} answered.
 * Returns the catalog version of a 200 reply (to fill the cache with), or -1.
 */
static int64_t frontend__lookup_answer(struct frontend *fe, int rv, int status, const char *body,
                                       size_t len, struct http_response *resp)
{
    char msg[160];
    if (rv) {
        atomic_fetch_add(&fe->catalog_failures, 1);
        frontend__unavailable(resp, "catalog unavailable");
        return -1;
    }
    atomic_store(&fe->catalog_ok_ms, clock_now_ms());
    if (status == 200) {
        uint64_t version;
        if (frontend__lookup_strip(body, len, &resp->body, &version) != 0) {
            frontend__unavailable(resp, "catalog gave a bad reply");
            return -1;
        }
        resp->status = 200;
        return (int64_t)version;
    }
    json_t *data = http_data_json(status, body, len, &rv, msg, sizeof msg);
    json_int_t version = 0;
    if (rv == BZ_ENOTFOUND) {
        http_reply_error(resp, rv, "stock not found");
        return -1;
    }
    if (!data || json_unpack(data, "{s:I}", "version", &version) != 0 || version < 0) {
        json_decref(data);
        frontend__unavailable(resp, "catalog gave a bad reply");
        return -1;
    }
    json_object_del(data, "version");
    http_reply_data(resp, data);
    return resp->status == 200 ? (int64_t)version : -1;
}

/* The catalog URL of a stock's lookup, len >= sizeof catalog_url + 8 + STOCK_NAME_MAX. Pieces,
 * not a format: this runs on every cache miss. */
static void frontend__lookup_url(const struct frontend *fe, const char *name, char *url, size_t len)
{
    static const char stocks[] = "/stocks/";
    size_t base = strlen(fe->catalog_url), nlen = strlen(name);
    if (base + sizeof stocks + nlen > len) { /* cannot happen with the sizes above */
        url[0] = '\0';
        return;
    }
    memcpy(url, fe->catalog_url, base);
    memcpy(url + base, stocks, sizeof stocks - 1);
    memcpy(url + base + sizeof stocks - 1, name, nlen + 1);
}

/*
 * Asks the catalog for one stock into resp (blocking). Returns the catalog
 * version of a 200 reply (to fill the cache with), or -1.
 */
static int64_t frontend__lookup_fetch(struct frontend *fe, const char *name,
                                      struct http_response *resp)
{
    char url[CONFIG_ADDR_MAX + 96];
    struct http_reply reply;
    frontend__lookup_url(fe, name, url, sizeof url);
    int rv = http_client_request("GET", url, NULL, NULL, 0, fe->cfg.call_timeout_ms, &reply);
    int64_t version =
        frontend__lookup_answer(fe, rv, reply.status, reply.body.data, reply.body.len, resp);
    if (rv == 0)
        http_reply_free(&reply);
    return version;
}

/* Fills the cache with a fetched reply, or records that it reached a client uncached. */
static void frontend__lookup_fill(struct frontend *fe, const char *name, uint64_t token,
                                  int64_t version, const struct http_response *resp)
{
    if (version < 0 || !fe->cache)
        return;
    uint64_t now = clock_now_ms();
    if (frontend__cache_trusted(fe, now))
        cache_fill_end(fe->cache, name, token, resp->body.data, resp->body.len, (uint64_t)version,
                       now);
    else
        cache_fill_skip(fe->cache, name, (uint64_t)version);
}

/*
 * Worker: a miss (or cache off) asks the catalog, then fills the cache. While
 * the cache is trusted, concurrent misses for one stock share one fetch
 * (cache_flight_begin says when a miss may join one in the air). The flight
 * lands before the fill, so no client can see this reply while an older
 * flight is still joinable (cache.h).
 */
static void frontend__lookup(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    if (!frontend__cache_trusted(fe, clock_now_ms())) {
        uint64_t token = fe->cache ? cache_fill_begin(fe->cache) : 0;
        frontend__lookup_fill(fe, req->param, token, frontend__lookup_fetch(fe, req->param, resp),
                              resp);
        return;
    }
    bool leads;
    struct cache_flight *f = cache_flight_begin(fe->cache, req->param, &leads);
    if (leads) {
        int64_t version = frontend__lookup_fetch(fe, req->param, resp);
        cache_flight_finish(fe->cache, f, resp->status, resp->retry_after_s, resp->body.data,
                            resp->body.len);
        frontend__lookup_fill(fe, req->param, cache_flight_token(f), version, resp);
    } else {
        /* The leader's call has its own deadline; this one only guards against its loss. */
        strbuf_reset(&resp->body);
        if (!cache_flight_wait(fe->cache, f, (uint64_t)fe->cfg.call_timeout_ms + 1000u,
                               &resp->status, &resp->retry_after_s, &resp->body))
            frontend__unavailable(resp, "catalog unavailable");
    }
    cache_flight_release(fe->cache, f);
}

/* A miss whose catalog call runs on its event thread's http_async client (no worker). */
struct frontend__miss {
    struct lookups_item item; /* first: the batcher's done gets &item */
    struct frontend *fe;
    const struct http_request *req;
    struct http_response *resp;
    struct cache_flight *flight; /* led by this miss; NULL when the cache is not in use */
    uint64_t token;              /* fill token, taken before the call */
    char name[STOCK_NAME_MAX + 1];
};

/* On the event thread: the catalog answered (or not); the same steps as frontend__lookup. */
static void frontend__lookup_done(struct lookups_item *it, int rv, int status, const char *body,
                                  size_t len)
{
    struct frontend__miss *m = (struct frontend__miss *)it;
    struct frontend *fe = m->fe;
    int64_t version = frontend__lookup_answer(fe, rv, status, body, len, m->resp);
    if (m->flight)
        cache_flight_finish(fe->cache, m->flight, m->resp->status, m->resp->retry_after_s,
                            m->resp->body.data, m->resp->body.len);
    frontend__lookup_fill(fe, m->name, m->token, version, m->resp);
    if (m->flight)
        cache_flight_release(fe->cache, m->flight);
    http_request_resume(m->req);
    free(m);
}

/*
 * The lookup batcher of the event thread driving client, made on its first
 * miss. Each thread remembers its own, so the list's lock is taken once per
 * thread.
 */
static struct lookups *frontend__lookups(struct frontend *fe, struct http_async *client)
{
    static _Thread_local struct http_async *mine_client;
    static _Thread_local struct lookups *mine;
    if (mine_client == client)
        return mine;
    struct lookups *l = NULL;
    pthread_mutex_lock(&fe->lookups_lock);
    for (size_t i = 0; i < fe->nlookups && !l; i++)
        if (fe->lookups[i].client == client)
            l = fe->lookups[i].lookups;
    if (!l) {
        l = lookups_new(fe->catalog_url, fe->cfg.secret, client, fe->cfg.call_timeout_ms);
        fe->lookups = xrealloc(fe->lookups, (fe->nlookups + 1) * sizeof *fe->lookups);
        fe->lookups[fe->nlookups++] = (struct frontend__thread_lookups){client, l};
    }
    pthread_mutex_unlock(&fe->lookups_lock);
    mine_client = client;
    mine = l;
    return l;
}

/*
 * Event thread, after a miss: queues the lookup on the thread's batcher, whose
 * calls run on the thread's own http_async client; the thread answers the
 * client when the catalog's answer comes (frontend__lookup_done), with no
 * other thread involved. A miss that would join a flight in the air must wait
 * for it, so it declines and runs on a worker (frontend__lookup) instead.
 */
static bool frontend__lookup_async(void *svc, const struct http_request *req,
                                   struct http_response *resp)
{
    struct frontend *fe = svc;
    struct http_async *client = http_request_async(req);
    if (!client)
        return false;
    if (req->param_len > STOCK_NAME_MAX) /* validated by the fast handler */
        return false;
    struct frontend__miss *m = xcalloc(1, sizeof *m);
    m->fe = fe;
    m->req = req;
    m->resp = resp;
    memcpy(m->name, req->param, req->param_len + 1);
    if (frontend__cache_trusted(fe, clock_now_ms())) {
        m->flight = cache_flight_lead(fe->cache, m->name);
        if (!m->flight) {
            free(m);
            return false;
        }
        m->token = cache_flight_token(m->flight);
    } else {
        m->token = fe->cache ? cache_fill_begin(fe->cache) : 0;
    }
    m->item.name = m->name;
    m->item.done = frontend__lookup_done;
    lookups_submit(frontend__lookups(fe, client), &m->item);
    return true;
}

/* GET /stocks: the catalog's list, passed through (never cached: it is not a hot path). */
static void frontend__list(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    (void)req;
    char url[CONFIG_ADDR_MAX + 32], msg[160];
    struct http_reply reply;
    snprintf(url, sizeof url, "%s/stocks", fe->catalog_url);
    int rv = http_client_request("GET", url, NULL, NULL, 0, fe->cfg.call_timeout_ms, &reply);
    if (rv) {
        atomic_fetch_add(&fe->catalog_failures, 1);
        frontend__unavailable(resp, "catalog unavailable");
        return;
    }
    atomic_store(&fe->catalog_ok_ms, clock_now_ms());
    json_t *data = http_reply_data_json(&reply, &rv, msg, sizeof msg);
    http_reply_free(&reply);
    if (!json_is_array(data)) {
        json_decref(data);
        frontend__unavailable(resp, "catalog gave a bad reply");
        return;
    }
    http_reply_data(resp, data);
}

/* GET /: the live status page (one self-contained HTML page reading /status). */
static bool frontend__page(void *svc, const struct http_request *req, struct http_response *resp)
{
    (void)svc;
    (void)req;
    http_reply_bytes(resp, 200, frontend_page_html, strlen(frontend_page_html));
    resp->content_type = "text/html; charset=utf-8";
    return true;
}

/* ---------------------------------------------------------------- orders */

/*
 * Turns a leader reply (its status and parsed body, NULL when it was not JSON) into ours:
 * data passes through, errors keep status and message. `number` (may be NULL) receives the
 * data's transaction_number, -1 when it has none.
 */
static void frontend__relay_json(struct http_response *resp, int status, json_t *root,
                                 int64_t *number)
{
    json_t *data = status >= 200 && status < 300 ? json_object_get(root, "data") : NULL;
    if (number) {
        json_t *n = json_object_get(data, "transaction_number");
        *number = json_is_integer(n) ? (int64_t)json_integer_value(n) : -1;
    }
    if (data) {
        http_reply_data(resp, json_incref(data));
    } else if (status >= 200 && status < 300) {
        http_reply_error(resp, BZ_EINTERNAL, "reply without data");
    } else if (status == 502 || status == 504) {
        frontend__unavailable(resp, "catalog unavailable");
    } else if (status == 503 || status == 421) {
        frontend__unavailable(resp, "no order replica can take the order now");
    } else {
        const char *m = NULL;
        json_unpack(root, "{s:{s:s}}", "error", "message", &m);
        int err = status >= 400 && status < 500 ? bz_error_from_status(status) : BZ_EINTERNAL;
        http_reply_error(resp, err, m ? m : bz_strerror(bz_error_from_status(status)));
    }
}

/* frontend__relay_json of a reply as http_client gives it. */
static void frontend__relay(struct http_response *resp, struct http_reply *reply, int64_t *number)
{
    json_t *root = json_loadb(reply->body.data ? reply->body.data : "", reply->body.len, 0, NULL);
    frontend__relay_json(resp, reply->status, root, number);
    json_decref(root);
}

/*
 * Validates a POST /orders and gives it its request id: true with *t set and *payload (free
 * it) the body to forward, or false with the 4xx already in resp.
 */
static bool frontend__order_prepare(const struct http_request *req, struct http_response *resp,
                                    struct trade *t, char **payload)
{
    char msg[200];
    json_t *body = http_request_json_object(req, resp);
    if (!body)
        return false;
    int rv = trade_from_json(body, false, t, msg, sizeof msg);
    json_decref(body);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return false;
    }
    /* Every POST gets a request id; a client's Idempotency-Key makes it stable across
     * the client's own retries, ours are stable by construction. */
    const char *key = http_request_header(req, "Idempotency-Key");
    if (key) {
        if (!idempotency_key_valid(key)) {
            http_reply_error(resp, BZ_EINVAL, "Idempotency-Key must be 1-64 printable characters");
            return false;
        }
        snprintf(t->request_id, sizeof t->request_id, "k:%s", key);
    } else {
        /* Wall-clock milliseconds first, then 64 random bits: unique like the random part
         * alone, but ids arrive in nearly ascending order, so each request-id index (the
         * catalog's and every replica's) grows at its right edge: a batch of orders dirties
         * a page or two, not one random leaf page per order (docs/design.md, "Request ids"). */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t ms = (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
        snprintf(t->request_id, sizeof t->request_id, "r:%012llx",
                 (unsigned long long)(ms & 0xffffffffffffULL));
        util_random_hex(t->request_id + 14, 8);
    }
    json_t *out = trade_to_json(t);
    *payload = xjson_dumps(out, JSON_COMPACT);
    json_decref(out);
    return true;
}

/*
 * Answers an order from the leader's final word: rv, and when it is 0 the reply's status and
 * parsed body (NULL when not JSON).
 */
static void frontend__order_answer(struct frontend *fe, const struct trade *t, int rv, int status,
                                   json_t *body, struct http_response *resp)
{
    /* Read-your-writes without waiting for the push: a success changed the stock, a 409
     * showed the client a quantity newer than our entry may hold, and an unknown outcome
     * may have applied. Either way this client's next lookup must not be older. */
    if (fe->cache && (rv || status == 200 || status == 409 || status >= 500))
        cache_invalidate(fe->cache, t->name, 0);
    if (rv) {
        frontend__unavailable(resp, "no order replica can take the order now");
        return;
    }
    int64_t number;
    frontend__relay_json(resp, status, body, &number);
    if (resp->status == 200 && number >= 0)
        frontend__recent_add(fe, t, number);
}

/* frontend__order_answer of what leader_forward_order returned (consumes the reply). */
static void frontend__order_answer_reply(struct frontend *fe, const struct trade *t, int rv,
                                         struct http_reply *reply, struct http_response *resp)
{
    json_t *body = NULL;
    if (rv == 0) {
        body = json_loadb(reply->body.data ? reply->body.data : "", reply->body.len, 0, NULL);
        frontend__order_answer(fe, t, 0, reply->status, body, resp);
        http_reply_free(reply);
    } else {
        frontend__order_answer(fe, t, rv, 0, NULL, resp);
    }
    json_decref(body);
}

/* Worker: an order when no leader is known yet (the async path declined). */
static void frontend__order(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    struct trade t;
    char *payload;
    if (!frontend__order_prepare(req, resp, &t, &payload))
        return;
    struct http_reply reply;
    int rv = leader_forward_order(fe->leader, payload, strlen(payload), &reply);
    free(payload);
    frontend__order_answer_reply(fe, &t, rv, &reply, resp);
}

/* An order on the non-blocking path (frontend__order_async). */
struct frontend__order_job {
    struct frontend *fe;
    const struct http_request *req;
    struct http_response *resp;
    struct trade t;
    char *payload;
    struct leader_order call;
    /* The first attempt's result, for the retry on a worker. */
    int rv, status;
    json_t *body;
};

static void frontend__order_job_free(struct frontend__order_job *job)
{
    json_decref(job->body);
    free(job->payload);
    free(job);
}

/* Worker: the first attempt failed; the retry loop may block (re-selection, pauses). */
static void frontend__order_retry(void *arg)
{
    struct frontend__order_job *job = arg;
    struct http_reply reply;
    int rv = leader_order_finish(&job->call, job->rv, job->status, job->body, &reply);
    frontend__order_answer_reply(job->fe, &job->t, rv, &reply, job->resp);
    frontend__order_job_free(job);
}

/* http_async loop: the first attempt ended; answer, or retry on a worker. */
static void frontend__order_done(struct leader_order *o, int rv, int status, json_t *body)
{
    struct frontend__order_job *job =
        (struct frontend__order_job *)((char *)o - offsetof(struct frontend__order_job, call));
    if (!leader_order_settled(rv, status)) {
        job->rv = rv;
        job->status = status;
        job->body = json_incref(body); /* body is only lent to this call */
        if (http_request_defer(job->req, frontend__order_retry, job))
            return;
        /* No worker can take it (stopping): this attempt's answer is the answer. */
    }
    frontend__order_answer(job->fe, &job->t, rv, status, body, job->resp);
    http_request_resume(job->req);
    frontend__order_job_free(job);
}

/*
 * Event thread: validates the order and sends it to the leader in the next batch without
 * a worker; its reply is written from the http_async loop (frontend__order_done). Only a
 * failed attempt takes a worker, for the retry loop. With no leader known, it declines and
 * the order runs on a worker (frontend__order), which selects one.
 */
static bool frontend__order_async(void *svc, const struct http_request *req,
                                  struct http_response *resp)
{
    struct frontend *fe = svc;
    struct frontend__order_job *job = xcalloc(1, sizeof *job);
    if (!frontend__order_prepare(req, resp, &job->t, &job->payload)) {
        free(job);
        http_request_resume(req); /* the 4xx is in resp */
        return true;
    }
    job->fe = fe;
    job->req = req;
    job->resp = resp;
    job->call.body = job->payload;
    job->call.body_len = strlen(job->payload);
    job->call.done = frontend__order_done;
    if (!leader_order_start(fe->leader, &job->call)) {
        frontend__order_job_free(job);
        return false;
    }
    return true;
}

/*
 * The order number of GET /orders/{n} as its cache key (canonical decimal).
 * False (with a 400 written) when it is not a non-negative integer.
 */
static bool frontend__order_key(const struct http_request *req, struct http_response *resp,
                                char key[24])
{
    uint64_t number;
    if (parse_u64(req->param, req->param_len, INT64_MAX, &number) != 0) {
        http_reply_error(resp, BZ_EINVAL, "order number must be a non-negative integer");
        return false;
    }
    snprintf(key, 24, "%llu", (unsigned long long)number);
    return true;
}

/*
 * Event thread: GET /orders/{n} from the order cache. The leader answers 200
 * only for a committed number, and a committed number never changes content
 * (docs/design.md, "Order query cache"), so a cached 200 needs no invalidation
 * and stays right across leader changes.
 */
static bool frontend__query_fast(void *svc, const struct http_request *req,
                                 struct http_response *resp)
{
    struct frontend *fe = svc;
    char key[24];
    if (!frontend__order_key(req, resp, key))
        return true;
    if (fe->orders && cache_get(fe->orders, key, clock_now_ms(), &resp->body)) {
        resp->status = 200;
        return true;
    }
    return false;
}

/* Worker: asks the leader; only a 200 is cached (never 404, 503 or another error). */
static void frontend__query(void *svc, const struct http_request *req, struct http_response *resp)
{
    struct frontend *fe = svc;
    char key[24];
    if (!frontend__order_key(req, resp, key))
        return;
    uint64_t token = fe->orders ? cache_fill_begin(fe->orders) : 0;
    char path[64];
    snprintf(path, sizeof path, "/orders/%s", key);
    struct http_reply reply;
    if (leader_forward_query(fe->leader, path, &reply) != 0) {
        frontend__unavailable(resp, "no order replica can answer now");
        return;
    }
    frontend__relay(resp, &reply, NULL);
    if (fe->orders && reply.status == 200 && resp->status == 200)
        cache_fill_end(fe->orders, key, token, resp->body.data, resp->body.len, 0, clock_now_ms());
    http_reply_free(&reply);
}

/* ---------------------------------------------------------------- internal */

static bool frontend__invalidate(void *svc, const struct http_request *req,
                                 struct http_response *resp)
{
    struct frontend *fe = svc;
    struct msg_inval_batch m;
    char msg[160];
    json_t *body = http_request_json_object(req, resp);
    if (!body)
        return true;
    int rv = msg_inval_batch_from_json(body, &m, msg, sizeof msg);
    json_decref(body);
    if (rv) {
        http_reply_error(resp, rv, msg);
        return true;
    }
    atomic_fetch_add(&fe->invalidations_received, m.n);
    frontend__stream_receive(fe, &m);
    http_reply_data(resp,
                    json_pack("{s:I,s:i}", "seq", (json_int_t)m.seq, "invalidated", (int)m.n));
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
    metrics_render_simple(out, "bazaar_frontend_cache_flights_total", "counter",
                          "Catalog fetches made for misses while the cache is in use.", cs.flights);
    metrics_render_simple(out, "bazaar_frontend_cache_flight_joins_total", "counter",
                          "Misses that shared a fetch already in the air (single flight).",
                          cs.flight_joins);
    metrics_render_header(out, "bazaar_frontend_cache_resets_total", "counter",
                          "Times the cache was emptied because invalidations may have been "
                          "missed (a gap in the stream, a silence, a catalog restart).");
    metrics_render_value(out, "bazaar_frontend_cache_resets_total", "reason=\"gap\"",
                         atomic_load(&fe->stream.resets_gap));
    metrics_render_value(out, "bazaar_frontend_cache_resets_total", "reason=\"silence\"",
                         atomic_load(&fe->stream.resets_silence));
    metrics_render_value(out, "bazaar_frontend_cache_resets_total", "reason=\"catalog_restart\"",
                         atomic_load(&fe->stream.resets_restart));
    metrics_render_simple(out, "bazaar_frontend_cache_trusted", "gauge",
                          "1 while the invalidation stream is heard and the cache is in use.",
                          frontend__cache_trusted(fe, clock_now_ms()) ? 1 : 0);
    uint64_t calls = 0, names = 0, refused = 0;
    pthread_mutex_lock(&fe->lookups_lock);
    for (size_t i = 0; i < fe->nlookups; i++) {
        uint64_t c, n, r;
        lookups_counts(fe->lookups[i].lookups, &c, &n, &r);
        calls += c;
        names += n;
        refused += r;
    }
    pthread_mutex_unlock(&fe->lookups_lock);
    metrics_render_simple(out, "bazaar_frontend_lookup_calls_total", "counter",
                          "Catalog calls that carried misses (POST /lookups).", calls);
    metrics_render_simple(out, "bazaar_frontend_lookup_names_total", "counter",
                          "Misses those calls carried (names per call: this over calls).", names);
    metrics_render_simple(out, "bazaar_frontend_lookup_refused_total", "counter",
                          "Catalog calls for misses whose reply was an error or did not decode.",
                          refused);
    struct cache_stats os = {0};
    if (fe->orders)
        cache_stats(fe->orders, &os);
    metrics_render_simple(out, "bazaar_frontend_order_cache_hits_total", "counter",
                          "GET /orders/{n} answered from the order cache.", os.hits);
    metrics_render_simple(out, "bazaar_frontend_order_cache_misses_total", "counter",
                          "GET /orders/{n} asked of the order leader.", os.misses);
    metrics_render_simple(out, "bazaar_frontend_order_cache_evictions_total", "counter",
                          "LRU evictions from the order cache.", os.evictions);
    metrics_render_simple(out, "bazaar_frontend_order_cache_entries", "gauge",
                          "Order replies cached.", os.entries);
    metrics_render_simple(out, "bazaar_frontend_catalog_failures_total", "counter",
                          "Catalog lookups that could not reach the catalog.",
                          atomic_load(&fe->catalog_failures));
    leader_metrics(fe->leader, out);
}

static struct http_route frontend__routes[] = {
    {.method = "GET", .pattern = "/health", .fast = frontend__health},
    {.method = "GET", .pattern = "/status", .fast = frontend__status},
    {.method = "GET", .pattern = "/", .fast = frontend__page},
    {.method = "GET", .pattern = "/stocks", .handler = frontend__list},
    {.method = "GET",
     .pattern = "/stocks/{}",
     .fast = frontend__lookup_fast,
     .async = frontend__lookup_async,
     .handler = frontend__lookup},
    {.method = "POST",
     .pattern = "/orders",
     .async = frontend__order_async,
     .handler = frontend__order},
    {.method = "GET",
     .pattern = "/orders/{}",
     .fast = frontend__query_fast,
     .handler = frontend__query},
    {.method = "POST", .pattern = "/invalidate", .fast = frontend__invalidate, .internal = true},
};

static void frontend__watch_stop(struct frontend *fe)
{
    pthread_mutex_lock(&fe->watch_lock);
    fe->stopping = true;
    pthread_cond_signal(&fe->watch_cond);
    pthread_mutex_unlock(&fe->watch_lock);
    pthread_join(fe->watcher, NULL);
}

int main(int argc, char **argv)
{
    static struct frontend fe; /* large (the recent-orders ring); lives as long as the process */
    char err[512];

    if (service_init(argc, argv, "frontend", SERVICE_ID_FRONTEND, &fe.cfg, &fe.id) != 0)
        return 2;
    fe.listen = config_frontend_listen(&fe.cfg, fe.id);
    fe.started_ms = clock_now_ms();
    /* Bind before anything else: a front-end that cannot listen must not pick a leader or
     * send a single notice to the replicas (SPEC §5). */
    int listen_fd;
    if (http_server_bind(fe.listen, &listen_fd, err, sizeof err) != 0) {
        LOG_ERROR("%s", err);
        return 1;
    }
    snprintf(fe.catalog_url, sizeof fe.catalog_url, "http://%s", fe.cfg.catalog_listen);
    pthread_mutex_init(&fe.stream.lock, NULL);
    pthread_mutex_init(&fe.recent_lock, NULL);
    pthread_mutex_init(&fe.lookups_lock, NULL);
    fe.stream.silent = true; /* nothing heard yet: the cache waits for the stream */
    if (fe.cfg.cache_on)
        fe.cache = cache_new((size_t)fe.cfg.cache_size, (uint64_t)fe.cfg.cache_ttl_s * 1000u);
    if (fe.cfg.order_cache_size > 0)
        fe.orders = cache_new((size_t)fe.cfg.order_cache_size, 0);
    fe.async = http_async_start();
    leader_start(&fe.leader, &fe.cfg, fe.async);
    pthread_mutex_init(&fe.watch_lock, NULL);
    clock_cond_init(&fe.watch_cond);
    pthread_create(&fe.watcher, NULL, frontend__watch_main, &fe);

    struct http_server *http = NULL;
    struct http_server_opts opts = {
        .listen = fe.listen,
        .listen_fd = listen_fd,
        .threads = fe.cfg.frontend_threads,
        .async_clients = true, /* misses call the catalog from their event thread */
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
        frontend__watch_stop(&fe);
        http_async_stop(fe.async);
        leader_stop(fe.leader);
        cache_free(fe.cache);
        cache_free(fe.orders);
        return 1;
    }
    LOG_INFO("API on http://%s (cache %s, %d entries; order cache %d entries)", fe.listen,
             fe.cache ? "on" : "off", fe.cfg.cache_size, fe.cfg.order_cache_size);

    int sig = service_wait_for_signal();
    LOG_INFO("signal %d: shutting down", sig);
    http_server_stop(http); /* waits for the misses and orders in flight (each has a deadline) */
    for (size_t i = 0; i < fe.nlookups; i++)
        lookups_free(fe.lookups[i].lookups);
    free(fe.lookups);
    http_async_stop(fe.async);
    frontend__watch_stop(&fe);
    leader_stop(fe.leader);
    cache_free(fe.cache);
    cache_free(fe.orders);
    return 0;
}
