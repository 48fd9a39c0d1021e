/*
 * workload.h - one trading session of bazaar-client (SPEC §4) and the
 * verification of the orders it recorded.
 *
 * A session runs on its own thread and so uses its own keep-alive connection
 * (http_client keeps one curl handle per thread). It looks up random stocks,
 * trades some of them with an Idempotency-Key per order, retries a request
 * whose outcome is unknown (502/503/504, timeout, refused) - a trade with
 * the same key - until it is known, and records every acknowledged order.
 * Verification then reads each recorded order back. Not for flag parsing or
 * reporting: see main.c.
 */
#ifndef BZ_CLIENT_WORKLOAD_H
#define BZ_CLIENT_WORKLOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats.h"

/* What every session of one run shares, read-only while sessions run. */
struct workload_config {
    const char *url;           /* front-end base URL without a trailing slash */
    const char *const *stocks; /* names to trade, all valid stock names */
    size_t nstocks;            /* >= 1 */
    uint64_t iterations;       /* per session; 0 = until deadline_us */
    double p;                  /* probability of a trade after a lookup, 0..1 */
    uint64_t seed;             /* session i uses a PRNG seeded from seed + i */
    const char *run_id;        /* random per run; makes Idempotency-Keys unique across runs */
    int timeout_ms;            /* deadline of every request */
    unsigned max_tries;        /* attempts for a request answered 502/503/504 or timed out */
    uint64_t start_us;         /* clock_now_us() at the start of the run */
    uint64_t deadline_us;      /* no new iteration starts after it; 0 = none */
};

/* What sessions share and may change while they run. */
struct workload_shared {
    atomic_bool stop;              /* set to end every session after its current iteration */
    atomic_int warnings_left;      /* unexpected outcomes still logged in detail */
    atomic_uint_fast64_t requests; /* requests made, for the progress line */
    atomic_uint_fast64_t orders;   /* orders acknowledged, for the progress line */
    atomic_uint_fast64_t failed;   /* requests that were not ok, for the progress line */
};

/* An order the front-end acknowledged. */
struct workload_order {
    int64_t number;   /* transaction number */
    uint32_t stock;   /* index into workload_config.stocks */
    uint8_t type;     /* enum trade_type */
    uint8_t quantity; /* 1..10 */
};

/* One session. The caller sets cfg, shared and id and zeroes the rest (workload_session_init). */
struct workload_session {
    const struct workload_config *cfg;
    struct workload_shared *shared;
    uint32_t id;

    /* Results, written only by the session's thread; read them after joining it. */
    struct stats_log log;          /* every request */
    struct workload_order *orders; /* acknowledged orders, owned */
    size_t norders;
    size_t orders_cap;
    uint64_t iterations_done;
    uint64_t conflicts;  /* trades answered 409 (not enough shares): a normal outcome */
    uint64_t retries;    /* repeated attempts (any type) after a 503 or a timeout */
    uint64_t unknown;    /* trades whose outcome stayed unknown after max_tries */
    uint64_t unexpected; /* final outcomes that are neither success nor a normal refusal */
    uint64_t verified;   /* recorded orders read back identical */
    uint64_t mismatches; /* recorded orders read back different, or not found */
    uint64_t unverified; /* recorded orders that could not be read back at all */
};

void workload_session_init(struct workload_session *s, const struct workload_config *cfg,
                           struct workload_shared *shared, uint32_t id);
/* Frees the contents, not the struct. */
void workload_session_free(struct workload_session *s);

/* The trading loop: cfg->iterations times, or until the deadline or shared->stop. */
void workload_run_session(struct workload_session *s);

/* Reads back every order the session recorded (GET /orders/{n}) and compares. */
void workload_verify_session(struct workload_session *s);

/*
 * Transaction numbers must be unique across all sessions: counts the recorded
 * orders whose number another recorded order also has.
 */
uint64_t workload_count_duplicates(const struct workload_session *sessions, size_t n);

#endif
