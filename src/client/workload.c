#include "workload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "trade.h"
#include "util.h"

#define WORKLOAD__BACKOFF_FIRST_MS 100  /* pause before the first retry */
#define WORKLOAD__BACKOFF_MAX_MS   1000 /* the pause doubles up to this */
#define WORKLOAD__QTY_MAX          10   /* trades are for 1..10 shares */
#define WORKLOAD__URL_MAX          1200

/* ---------------------------------------------------------------- PRNG */

/* splitmix64: tiny, fast, and good enough to pick stocks; one per session, never shared. */
struct workload__rng {
    uint64_t state;
};

static uint64_t workload__rng_next(struct workload__rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in 0..n-1 (n >= 1), without modulo bias. */
static uint64_t workload__rng_below(struct workload__rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = workload__rng_next(r);
    while (x >= limit);
    return x % n;
}

/* Uniform in [0, 1). */
static double workload__rng_unit(struct workload__rng *r)
{
    return (double)(workload__rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------- helpers */

void workload_session_init(struct workload_session *s, const struct workload_config *cfg,
                           struct workload_shared *shared, uint32_t id)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->shared = shared;
    s->id = id;
    stats_log_init(&s->log);
}

void workload_session_free(struct workload_session *s)
{
    stats_log_free(&s->log);
    free(s->orders);
    s->orders = NULL;
    s->norders = s->orders_cap = 0;
}

static void workload__sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static unsigned workload__backoff_ms(unsigned attempt)
{
    unsigned ms = WORKLOAD__BACKOFF_FIRST_MS;
    for (unsigned i = 1; i < attempt && ms < WORKLOAD__BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < WORKLOAD__BACKOFF_MAX_MS ? ms : WORKLOAD__BACKOFF_MAX_MS;
}

/* Logs an unexpected outcome while the run-wide budget lasts, so a dead cluster does not
 * flood the terminal. */
__attribute__((format(printf, 3, 4))) static void
workload__report(struct workload_session *s, enum log_level level, const char *fmt, ...)
{
    int left = atomic_fetch_sub_explicit(&s->shared->warnings_left, 1, memory_order_relaxed);
    if (left <= 0 || !log_enabled(level))
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(level, "session %u: %s", s->id, line);
    if (left == 1)
        log_write(level, "further unexpected outcomes are counted but not logged");
}

/* A short description of a failed call: transport error or status and message. */
static void workload__describe(const struct workload_session *s, int rv,
                               const struct http_reply *reply, char *buf, size_t len)
{
    if (rv == BZ_ETIMEDOUT) {
        snprintf(buf, len, "no reply within %d ms", s->cfg->timeout_ms);
    } else if (rv == BZ_EUNAVAIL) {
        snprintf(buf, len, "front-end unreachable");
    } else if (rv) {
        snprintf(buf, len, "%s", bz_strerror(rv));
    } else {
        char msg[200];
        int err;
        json_t *data = http_reply_data_json(reply, &err, msg, sizeof msg);
        json_decref(data);
        snprintf(buf, len, "HTTP %d: %s", reply->status, data ? "(data)" : msg);
    }
}

/* An outcome that a retry with the same request may change: the request may not have been
 * processed at all, or its reply was lost. */
static bool workload__retryable(int rv, int status)
{
    return rv == BZ_ETIMEDOUT || rv == BZ_EUNAVAIL || status == 502 || status == 503 ||
           status == 504;
}

/*
 * One timed request to the front-end. Returns http_client's code; on 0 the caller frees
 * `reply`. *start_us and *latency_us receive the timing for workload__record.
 */
static int workload__call(struct workload_session *s, const char *method, const char *path,
                          const char *const *headers, const char *body, struct http_reply *reply,
                          uint64_t *start_us, uint64_t *latency_us)
{
    char url[WORKLOAD__URL_MAX];
    snprintf(url, sizeof url, "%s%s", s->cfg->url, path);
    uint64_t t0 = clock_now_us();
    int rv = http_client_request_headers(method, url, NULL, headers, body, body ? strlen(body) : 0,
                                         s->cfg->timeout_ms, reply);
    *latency_us = clock_now_us() - t0;
    *start_us = t0 - s->cfg->start_us;
    return rv;
}

static void workload__record(struct workload_session *s, enum stats_type type, uint64_t start_us,
                             uint64_t latency_us, int status, bool ok)
{
    stats_add_sample(&s->log, type, start_us, latency_us, status, ok);
    atomic_fetch_add_explicit(&s->shared->requests, 1, memory_order_relaxed);
    if (!ok)
        atomic_fetch_add_explicit(&s->shared->failed, 1, memory_order_relaxed);
}

/* ---------------------------------------------------------------- session */

/* GET /stocks/{name}; a 503 or a timeout is retried like a trade (a lookup is idempotent). */
static void workload__lookup(struct workload_session *s, uint32_t stock)
{
    const char *name = s->cfg->stocks[stock];
    char path[STOCK_NAME_MAX + 16];
    char why[300];

    snprintf(path, sizeof path, "/stocks/%s", name);
    for (unsigned attempt = 1;; attempt++) {
        struct http_reply reply;
        uint64_t start, lat;
        bool ok = false;
        int rv = workload__call(s, "GET", path, NULL, NULL, &reply, &start, &lat);
        int status = rv ? 0 : reply.status;
        if (status == 200) {
            char msg[200];
            int err;
            const char *got = NULL;
            json_t *data = http_reply_data_json(&reply, &err, msg, sizeof msg);
            ok = data && json_unpack(data, "{s:s}", "name", &got) == 0 && strcmp(got, name) == 0;
            json_decref(data);
        }
        workload__record(s, STATS_LOOKUP, start, lat, status, ok);
        if (status == 200 && !ok)
            snprintf(why, sizeof why, "HTTP 200 without the stock's data");
        else if (!ok)
            workload__describe(s, rv, &reply, why, sizeof why);
        if (rv == 0)
            http_reply_free(&reply);
        if (ok)
            return;
        if (workload__retryable(rv, status) && attempt < s->cfg->max_tries) {
            s->retries++;
            workload__sleep_ms(workload__backoff_ms(attempt));
            continue;
        }
        s->unexpected++;
        workload__report(s, LOG_LEVEL_WARN, "lookup %s: %s (attempt %u)", name, why, attempt);
        return;
    }
}

static void workload__add_order(struct workload_session *s, int64_t number, uint32_t stock,
                                enum trade_type type, unsigned quantity)
{
    if (s->norders == s->orders_cap) {
        s->orders_cap = s->orders_cap ? s->orders_cap * 2 : 64;
        s->orders = xrealloc(s->orders, s->orders_cap * sizeof *s->orders);
    }
    s->orders[s->norders++] = (struct workload_order){
        .number = number, .stock = stock, .type = (uint8_t)type, .quantity = (uint8_t)quantity};
    atomic_fetch_add_explicit(&s->shared->orders, 1, memory_order_relaxed);
}

/* POST /orders until the outcome is known: acknowledged, refused, or out of attempts. */
static void workload__trade(struct workload_session *s, uint64_t iteration, uint32_t stock,
                            enum trade_type type, unsigned quantity)
{
    const struct workload_config *cfg = s->cfg;
    char key_header[IDEMPOTENCY_KEY_MAX + 32];
    char why[300];
    struct trade t;

    /* run id (8 hex) + seed (<= 20 digits) + session + iteration stays within 64 bytes */
    snprintf(key_header, sizeof key_header, "Idempotency-Key: %s-%llu-%u-%llu", cfg->run_id,
             (unsigned long long)cfg->seed, s->id, (unsigned long long)iteration);
    const char *key = key_header + strlen("Idempotency-Key: ");
    const char *const headers[] = {key_header, NULL};

    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", cfg->stocks[stock]);
    t.type = type;
    t.quantity = quantity;
    json_t *obj = trade_to_json(&t);
    char *body = xjson_dumps(obj, JSON_COMPACT);
    json_decref(obj);

    for (unsigned attempt = 1;; attempt++) {
        struct http_reply reply;
        uint64_t start, lat;
        int rv = workload__call(s, "POST", "/orders", headers, body, &reply, &start, &lat);
        int status = rv ? 0 : reply.status;

        if (status == 200) {
            char msg[200];
            int err;
            json_int_t number = -1;
            json_t *data = http_reply_data_json(&reply, &err, msg, sizeof msg);
            if (!data || json_unpack(data, "{s:I}", "transaction_number", &number) != 0)
                number = -1;
            json_decref(data);
            workload__record(s, STATS_TRADE, start, lat, status, number >= 0);
            if (number >= 0) {
                workload__add_order(s, (int64_t)number, stock, type, quantity);
            } else {
                s->unexpected++;
                workload__report(s, LOG_LEVEL_WARN, "trade %s: HTTP 200 without a number", key);
            }
            http_reply_free(&reply);
            break;
        }
        if (status == 409) { /* not enough shares: a normal outcome, nothing was applied */
            workload__record(s, STATS_TRADE, start, lat, status, true);
            s->conflicts++;
            http_reply_free(&reply);
            break;
        }

        workload__record(s, STATS_TRADE, start, lat, status, false);
        workload__describe(s, rv, &reply, why, sizeof why);
        if (rv == 0)
            http_reply_free(&reply);
        if (workload__retryable(rv, status) && attempt < cfg->max_tries) {
            s->retries++;
            workload__sleep_ms(workload__backoff_ms(attempt));
            continue;
        }
        if (workload__retryable(rv, status)) {
            s->unknown++;
            workload__report(s, LOG_LEVEL_WARN, "trade %s: outcome unknown after %u attempts (%s)",
                             key, attempt, why);
        } else {
            s->unexpected++;
            workload__report(s, LOG_LEVEL_WARN, "trade %s %s %u %s: %s", key, trade_type_name(type),
                             quantity, t.name, why);
        }
        break;
    }
    free(body);
}

void workload_run_session(struct workload_session *s)
{
    const struct workload_config *cfg = s->cfg;
    struct workload__rng rng = {.state = cfg->seed + s->id};
    rng.state = workload__rng_next(&rng); /* spread neighbouring seeds apart */

    for (uint64_t i = 0; cfg->iterations == 0 || i < cfg->iterations; i++) {
        if (atomic_load_explicit(&s->shared->stop, memory_order_relaxed))
            break;
        if (cfg->deadline_us && clock_now_us() >= cfg->deadline_us)
            break;
        /* Every draw happens every iteration, so a seed names the same workload whatever
         * the replies are. */
        uint32_t stock = (uint32_t)workload__rng_below(&rng, cfg->nstocks);
        bool trade = workload__rng_unit(&rng) < cfg->p;
        enum trade_type type = (workload__rng_next(&rng) & 1) ? TRADE_SELL : TRADE_BUY;
        unsigned quantity = 1 + (unsigned)workload__rng_below(&rng, WORKLOAD__QTY_MAX);

        workload__lookup(s, stock);
        if (trade)
            workload__trade(s, i, stock, type, quantity);
        s->iterations_done++;
    }
}

/* ---------------------------------------------------------------- verification */

/* Compares one GET /orders/{n} reply with the recorded order; fills why on a difference. */
static bool workload__order_matches(const struct workload_session *s,
                                    const struct workload_order *o, const struct http_reply *reply,
                                    char *why, size_t len)
{
    char msg[200];
    int err;
    json_int_t number, quantity;
    const char *name, *type;
    bool same = false;

    json_t *data = http_reply_data_json(reply, &err, msg, sizeof msg);
    if (!data || json_unpack(data, "{s:I,s:s,s:s,s:I}", "number", &number, "name", &name, "type",
                             &type, "quantity", &quantity) != 0) {
        snprintf(why, len, "reply without number/name/type/quantity");
    } else {
        const char *want_name = s->cfg->stocks[o->stock];
        const char *want_type = trade_type_name((enum trade_type)o->type);
        same = number == o->number && strcmp(name, want_name) == 0 &&
               strcmp(type, want_type) == 0 && quantity == o->quantity;
        if (!same)
            snprintf(why, len, "got %lld %s %lld %s, recorded %s %u %s", (long long)number, type,
                     (long long)quantity, name, want_type, o->quantity, want_name);
    }
    json_decref(data);
    return same;
}

void workload_verify_session(struct workload_session *s)
{
    const struct workload_config *cfg = s->cfg;
    char why[300];

    for (size_t i = 0; i < s->norders; i++) {
        const struct workload_order *o = &s->orders[i];
        char path[48];
        snprintf(path, sizeof path, "/orders/%lld", (long long)o->number);

        for (unsigned attempt = 1;; attempt++) {
            struct http_reply reply;
            uint64_t start, lat;
            int rv = workload__call(s, "GET", path, NULL, NULL, &reply, &start, &lat);
            int status = rv ? 0 : reply.status;

            if (status == 200) {
                bool same = workload__order_matches(s, o, &reply, why, sizeof why);
                workload__record(s, STATS_QUERY, start, lat, status, true);
                http_reply_free(&reply);
                if (same) {
                    s->verified++;
                } else {
                    s->mismatches++;
                    workload__report(s, LOG_LEVEL_ERROR, "order %lld: %s", (long long)o->number,
                                     why);
                }
                break;
            }
            workload__record(s, STATS_QUERY, start, lat, status, false);
            workload__describe(s, rv, &reply, why, sizeof why);
            if (rv == 0)
                http_reply_free(&reply);
            if (status == 404) { /* an acknowledged order that the service lost */
                s->mismatches++;
                workload__report(s, LOG_LEVEL_ERROR, "order %lld (%s %u %s) not found",
                                 (long long)o->number, trade_type_name((enum trade_type)o->type),
                                 o->quantity, cfg->stocks[o->stock]);
                break;
            }
            if (workload__retryable(rv, status) && attempt < cfg->max_tries) {
                s->retries++;
                workload__sleep_ms(workload__backoff_ms(attempt));
                continue;
            }
            s->unverified++;
            workload__report(s, LOG_LEVEL_ERROR, "order %lld: could not be read back (%s)",
                             (long long)o->number, why);
            break;
        }
    }
}

static int workload__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

uint64_t workload_count_duplicates(const struct workload_session *sessions, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += sessions[i].norders;
    if (total < 2)
        return 0;
    int64_t *numbers = xmalloc(total * sizeof *numbers);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < sessions[i].norders; j++)
            numbers[k++] = sessions[i].orders[j].number;
    qsort(numbers, total, sizeof *numbers, workload__cmp_i64);

    uint64_t dups = 0;
    for (size_t i = 0; i < total;) {
        size_t j = i + 1;
        while (j < total && numbers[j] == numbers[i])
            j++;
        if (j - i > 1)
            dups += j - i;
        i = j;
    }
    free(numbers);
    return dups;
}
