/*
 * bazaar-client: the trading client and load generator (SPEC §4).
 *
 * Parses and checks the flags, runs one thread per session (workload.c),
 * then one thread per session again to read every recorded order back, and
 * prints the latency summary (stats.c) as a table or as one JSON object.
 * Exit status: 0 when every order verified and nothing unexpected happened,
 * 1 otherwise, 2 for bad flags or an unreadable stock list.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "service.h"
#include "stats.h"
#include "util.h"
#include "workload.h"

#define CLIENT__URL_MAX        1024
#define CLIENT__SESSIONS_MAX   4096
#define CLIENT__ITERATIONS_MAX 1000000000ull
#define CLIENT__TIMEOUT_MS_MAX 600000
#define CLIENT__DURATION_MAX   (7 * 86400)
#define CLIENT__TRIES_MAX      1000
#define CLIENT__STOCKS_MAX     4096
#define CLIENT__LINE_MAX       4096
#define CLIENT__WARNINGS       20         /* unexpected outcomes logged in detail */
#define CLIENT__PROGRESS_AFTER 2000000ull /* µs before the progress line appears */
#define CLIENT__THREAD_STACK   (1024 * 1024)

/* Set by the SIGINT/SIGTERM handler, which only ever runs on the main thread (the session
 * threads block those signals). Process-wide by nature. */
static volatile sig_atomic_t client__interrupted;

struct client_opts {
    char url[CLIENT__URL_MAX]; /* without trailing slashes */
    const char *stocks_list;   /* --stocks, or NULL */
    const char *stocks_file;   /* --stocks-file, or NULL: the list comes from GET /stocks */
    bool stocks_file_given;
    uint64_t sessions;
    uint64_t iterations; /* 0 = until --duration-s */
    double p;
    uint64_t seed;
    bool seed_given;
    const char *csv; /* --csv FILE, or NULL */
    bool json;
    uint64_t timeout_ms;
    uint64_t duration_s; /* 0 = no limit */
    uint64_t max_tries;
    bool quiet;
};

/* The whole run; one per process, passed explicitly. */
struct client {
    struct client_opts opts;
    char **stocks; /* owned, nstocks names */
    size_t nstocks;
    char run_id[9];
    FILE *csv;
    struct workload_config cfg;
    struct workload_shared shared;
    struct workload_session *sessions; /* opts.sessions of them */
    pthread_t *threads;
    size_t nthreads;                   /* threads started in the current phase */
    atomic_uint_fast32_t threads_done; /* threads of the current phase that have finished */
    bool thread_failed;                /* a session thread could not be started */
    bool progress_shown;               /* the progress line is on screen */
    uint64_t trade_us;                 /* duration of the trading phase */
    uint64_t verify_us;                /* duration of the verification phase */
};

/* ---------------------------------------------------------------- flags */

static const char client__usage[] =
    "usage: bazaar-client [flags]\n"
    "  --url URL          front-end base URL (default http://127.0.0.1:8080)\n"
    "  --sessions N       concurrent sessions, one thread and connection each, 1..4096 "
    "(default 5)\n"
    "  --iterations N     lookups per session (default 100); 0 = until --duration-s\n"
    "  --p P              probability of a trade after each lookup, 0..1 (default 0.5)\n"
    "  --seed S           PRNG seed, 0..2^64-1 (default random; always printed)\n"
    "  --stocks A,B,C     stock names to trade (default: every stock, from GET /stocks)\n"
    "  --stocks-file FILE CSV with header name,price,quantity, instead of GET /stocks\n"
    "  --csv FILE         one row per request: session,type,start_us,latency_us,status\n"
    "  --json             print the summary as one JSON object\n"
    "  --timeout-ms N     deadline of every request, 1..600000 (default 5000)\n"
    "  --duration-s N     start no new iteration after N seconds (default: no limit)\n"
    "  --max-tries N      attempts for a request answered 502/503/504, timed out or refused,\n"
    "                     1..1000, pausing 100 ms doubling to 1 s (default 20)\n"
    "  --quiet            no progress line, only errors on stderr\n"
    "  --version          print the version and exit\n"
    "  --help             this text\n"
    "Exit status: 0 all orders verified and no unexpected error, 1 otherwise, 2 bad flags.\n";

enum client__flag {
    CLIENT__F_URL,
    CLIENT__F_SESSIONS,
    CLIENT__F_ITERATIONS,
    CLIENT__F_P,
    CLIENT__F_SEED,
    CLIENT__F_STOCKS,
    CLIENT__F_STOCKS_FILE,
    CLIENT__F_CSV,
    CLIENT__F_JSON,
    CLIENT__F_TIMEOUT,
    CLIENT__F_DURATION,
    CLIENT__F_TRIES,
    CLIENT__F_QUIET,
    CLIENT__F_HELP,
    CLIENT__F_VERSION,
};

static const struct {
    const char *name;
    enum client__flag flag;
    bool has_value;
} client__flags[] = {
    {"url", CLIENT__F_URL, true},
    {"sessions", CLIENT__F_SESSIONS, true},
    {"iterations", CLIENT__F_ITERATIONS, true},
    {"p", CLIENT__F_P, true},
    {"seed", CLIENT__F_SEED, true},
    {"stocks", CLIENT__F_STOCKS, true},
    {"stocks-file", CLIENT__F_STOCKS_FILE, true},
    {"csv", CLIENT__F_CSV, true},
    {"json", CLIENT__F_JSON, false},
    {"timeout-ms", CLIENT__F_TIMEOUT, true},
    {"duration-s", CLIENT__F_DURATION, true},
    {"max-tries", CLIENT__F_TRIES, true},
    {"quiet", CLIENT__F_QUIET, false},
    {"help", CLIENT__F_HELP, false},
    {"version", CLIENT__F_VERSION, false},
};

static int client__parse_uint(const char *flag, const char *val, uint64_t min, uint64_t max,
                              uint64_t *out, char *err, size_t errlen)
{
    uint64_t v;
    if (parse_u64_str(val, max, &v) != 0 || v < min) {
        snprintf(err, errlen, "--%s must be an integer in %llu..%llu, not '%.40s'", flag,
                 (unsigned long long)min, (unsigned long long)max, val);
        return BZ_EINVAL;
    }
    *out = v;
    return 0;
}

static int client__parse_p(const char *val, double *out, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(val, &end);
    /* strtod skips leading blanks and accepts "nan"; the range test below rejects NaN. */
    if (val[0] == '\0' || val[0] == ' ' || val[0] == '\t' || *end != '\0' || errno == ERANGE ||
        !(v >= 0.0 && v <= 1.0)) {
        snprintf(err, errlen, "--p must be a number in 0..1, not '%.40s'", val);
        return BZ_EINVAL;
    }
    *out = v;
    return 0;
}

static int client__parse_url(const char *val, char *out, size_t outlen, char *err, size_t errlen)
{
    size_t len = strlen(val);
    while (len > 0 && val[len - 1] == '/')
        len--;
    bool ok = len > strlen("http://") && strncmp(val, "http://", 7) == 0 && len < outlen;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)val[i] > 0x20 && (unsigned char)val[i] < 0x7f;
    if (!ok) {
        snprintf(err, errlen, "--url must look like http://HOST:PORT, not '%.60s'", val);
        return BZ_EINVAL;
    }
    memcpy(out, val, len);
    out[len] = '\0';
    return 0;
}

static int client__apply_flag(struct client_opts *o, enum client__flag flag, const char *name,
                              const char *val, char *err, size_t errlen)
{
    switch (flag) {
    case CLIENT__F_URL:
        return client__parse_url(val, o->url, sizeof o->url, err, errlen);
    case CLIENT__F_SESSIONS:
        return client__parse_uint(name, val, 1, CLIENT__SESSIONS_MAX, &o->sessions, err, errlen);
    case CLIENT__F_ITERATIONS:
        return client__parse_uint(name, val, 0, CLIENT__ITERATIONS_MAX, &o->iterations, err,
                                  errlen);
    case CLIENT__F_P:
        return client__parse_p(val, &o->p, err, errlen);
    case CLIENT__F_SEED:
        o->seed_given = true;
        return client__parse_uint(name, val, 0, UINT64_MAX, &o->seed, err, errlen);
    case CLIENT__F_STOCKS:
        o->stocks_list = val;
        return 0;
    case CLIENT__F_STOCKS_FILE:
        o->stocks_file = val;
        o->stocks_file_given = true;
        return 0;
    case CLIENT__F_CSV:
        if (val[0] == '\0') {
            snprintf(err, errlen, "--csv needs a file name");
            return BZ_EINVAL;
        }
        o->csv = val;
        return 0;
    case CLIENT__F_JSON:
        o->json = true;
        return 0;
    case CLIENT__F_TIMEOUT:
        return client__parse_uint(name, val, 1, CLIENT__TIMEOUT_MS_MAX, &o->timeout_ms, err,
                                  errlen);
    case CLIENT__F_DURATION:
        return client__parse_uint(name, val, 1, CLIENT__DURATION_MAX, &o->duration_s, err, errlen);
    case CLIENT__F_TRIES:
        return client__parse_uint(name, val, 1, CLIENT__TRIES_MAX, &o->max_tries, err, errlen);
    case CLIENT__F_QUIET:
        o->quiet = true;
        return 0;
    case CLIENT__F_HELP:
    case CLIENT__F_VERSION:
        return 0;
    }
    return BZ_EINVAL;
}

/* Returns 0 to run, 1 for --help, 2 for --version, BZ_EINVAL with a message in err. */
static int client__parse_args(struct client_opts *o, int argc, char **argv, char *err,
                              size_t errlen)
{
    snprintf(o->url, sizeof o->url, "http://127.0.0.1:8080");
    o->stocks_file = NULL;
    o->sessions = 5;
    o->iterations = 100;
    o->p = 0.5;
    o->timeout_ms = 5000;
    o->max_tries = 20;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%.60s'", arg);
            return BZ_EINVAL;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t namelen = eq ? (size_t)(eq - name) : strlen(name);
        size_t f = 0;
        size_t nflags = sizeof client__flags / sizeof client__flags[0];
        while (f < nflags && !(strlen(client__flags[f].name) == namelen &&
                               strncmp(client__flags[f].name, name, namelen) == 0))
            f++;
        if (f == nflags) {
            snprintf(err, errlen, "unknown flag '%.60s'", arg);
            return BZ_EINVAL;
        }
        const char *val = NULL;
        if (client__flags[f].has_value) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                snprintf(err, errlen, "--%s needs a value", client__flags[f].name);
                return BZ_EINVAL;
            }
        } else if (eq) {
            snprintf(err, errlen, "--%s takes no value", client__flags[f].name);
            return BZ_EINVAL;
        }
        if (client__flags[f].flag == CLIENT__F_HELP)
            return 1;
        if (client__flags[f].flag == CLIENT__F_VERSION)
            return 2;
        int rv =
            client__apply_flag(o, client__flags[f].flag, client__flags[f].name, val, err, errlen);
        if (rv)
            return rv;
    }

    if (o->stocks_list && o->stocks_file_given) {
        snprintf(err, errlen, "--stocks and --stocks-file exclude each other");
        return BZ_EINVAL;
    }
    if (o->iterations == 0 && o->duration_s == 0) {
        snprintf(err, errlen, "--iterations 0 (unlimited) needs --duration-s");
        return BZ_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------- stock names */

static int client__add_stock(struct client *c, const char *name, size_t len, const char *where,
                             char *err, size_t errlen)
{
    if (!stock_name_valid(name, len)) {
        snprintf(err, errlen, "%s: '%.*s' is not a valid stock name (1-64 of [A-Za-z0-9_.-])",
                 where, (int)(len > 64 ? 64 : len), name);
        return BZ_EINVAL;
    }
    if (c->nstocks == CLIENT__STOCKS_MAX) {
        snprintf(err, errlen, "%s: more than %d stocks", where, CLIENT__STOCKS_MAX);
        return BZ_EINVAL;
    }
    c->stocks = xrealloc(c->stocks, (c->nstocks + 1) * sizeof *c->stocks);
    c->stocks[c->nstocks++] = xmemdup(name, len);
    return 0;
}

static int client__stocks_from_list(struct client *c, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int rv = client__add_stock(c, p, len, "--stocks", err, errlen);
        if (rv)
            return rv;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static void client__chomp(char *line, size_t *len)
{
    while (*len > 0 && (line[*len - 1] == '\n' || line[*len - 1] == '\r'))
        line[--*len] = '\0';
}

static int client__stocks_from_file(struct client *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open stock list %s: %s", path, strerror(errno));
        return BZ_EINVAL;
    }
    int rv = 0;
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    char where[300];
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        size_t len = (size_t)n;
        lineno++;
        snprintf(where, sizeof where, "%.250s:%u", path, lineno);
        if (len > CLIENT__LINE_MAX || strlen(line) != len) {
            snprintf(err, errlen, "%s: line too long or not text", where);
            rv = BZ_EINVAL;
            break;
        }
        client__chomp(line, &len);
        if (lineno == 1) {
            if (strcmp(line, "name,price,quantity") != 0) {
                snprintf(err, errlen, "%s: expected the header line name,price,quantity", where);
                rv = BZ_EINVAL;
                break;
            }
            continue;
        }
        if (len == 0)
            continue;
        char *comma = strchr(line, ',');
        if (!comma) {
            snprintf(err, errlen, "%s: expected name,price,quantity", where);
            rv = BZ_EINVAL;
            break;
        }
        rv = client__add_stock(c, line, (size_t)(comma - line), where, err, errlen);
        if (rv)
            break;
    }
    if (rv == 0 && ferror(f)) {
        snprintf(err, errlen, "reading %s: %s", path, strerror(errno));
        rv = BZ_EINVAL;
    }
    if (rv == 0 && c->nstocks == 0) {
        snprintf(err, errlen, "%s: no stocks listed", path);
        rv = BZ_EINVAL;
    }
    free(line);
    fclose(f);
    return rv;
}

/*
 * The stock list from the front-end's GET /stocks (SPEC §2), so the client needs no
 * local file. Retried like any request (a cluster that is still starting answers 503).
 */
static int client__stocks_from_api(struct client *c, char *err, size_t errlen)
{
    char url[CLIENT__URL_MAX + 16], msg[160];
    snprintf(url, sizeof url, "%s/stocks", c->opts.url);
    int rv = BZ_EUNAVAIL;
    for (uint64_t attempt = 0; attempt < c->opts.max_tries; attempt++) {
        if (attempt > 0) {
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
        struct http_reply reply;
        rv = http_client_request("GET", url, NULL, NULL, 0, (int)c->opts.timeout_ms, &reply);
        if (rv)
            continue;
        int status = reply.status;
        json_t *data = http_reply_data_json(&reply, &rv, msg, sizeof msg);
        http_reply_free(&reply);
        if (status == 503 || status == 502 || status == 504) {
            json_decref(data);
            rv = BZ_EUNAVAIL;
            continue;
        }
        if (!json_is_array(data)) {
            json_decref(data);
            snprintf(err, errlen, "GET %.200s answered %d, not a list of stocks", url, status);
            return BZ_EINVAL;
        }
        size_t i;
        json_t *item;
        rv = 0;
        json_array_foreach(data, i, item)
        {
            json_t *name = json_object_get(item, "name");
            if (!json_is_string(name)) {
                snprintf(err, errlen, "GET %.200s: entry %zu has no name", url, i);
                rv = BZ_EINVAL;
                break;
            }
            rv = client__add_stock(c, json_string_value(name), json_string_length(name), url, err,
                                   errlen);
            if (rv)
                break;
        }
        json_decref(data);
        if (rv == 0 && c->nstocks == 0) {
            snprintf(err, errlen, "GET %.200s: the catalog lists no stocks", url);
            rv = BZ_EINVAL;
        }
        return rv;
    }
    snprintf(err, errlen, "cannot read the stock list from %.200s: %s (or pass --stocks)", url,
             bz_strerror(rv));
    return rv;
}

/* ---------------------------------------------------------------- threads */

static void client__on_signal(int sig)
{
    (void)sig;
    client__interrupted = 1;
}

static void client__install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = client__on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends the process at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Thread bodies: the session is the argument; the client is reached through it. */
struct client__job {
    struct client *c;
    uint32_t index;
    bool verify;
};

static void *client__session_main(void *arg)
{
    struct client__job *job = arg;
    struct workload_session *s = &job->c->sessions[job->index];
    if (job->verify)
        workload_verify_session(s);
    else
        workload_run_session(s);
    atomic_fetch_add_explicit(&job->c->threads_done, 1, memory_order_release);
    return NULL;
}

static void client__progress(struct client *c, const char *phase, uint64_t now)
{
    uint64_t elapsed = now - c->cfg.start_us;
    uint64_t requests = atomic_load_explicit(&c->shared.requests, memory_order_relaxed);
    uint64_t orders = atomic_load_explicit(&c->shared.orders, memory_order_relaxed);
    uint64_t failed = atomic_load_explicit(&c->shared.failed, memory_order_relaxed);
    uint64_t done = atomic_load_explicit(&c->threads_done, memory_order_relaxed);
    fprintf(stderr,
            "\r%s %llus: %llu requests (%.0f/s), %llu orders, %llu failed, %llu/%zu sessions "
            "done\033[K",
            phase, (unsigned long long)(elapsed / 1000000), (unsigned long long)requests,
            (double)requests * 1e6 / (double)(elapsed ? elapsed : 1), (unsigned long long)orders,
            (unsigned long long)failed, (unsigned long long)done, c->nthreads);
    c->progress_shown = true;
}

/* Runs one phase (trading or verification) on one thread per session and waits for it,
 * drawing the progress line and turning a signal into an orderly stop. */
static void client__run_phase(struct client *c, bool verify, struct client__job *jobs)
{
    pthread_attr_t attr;
    sigset_t block, old;
    bool progress = !c->opts.quiet && isatty(STDERR_FILENO);

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, CLIENT__THREAD_STACK);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old); /* inherited: signals go to this thread only */

    atomic_store(&c->threads_done, 0);
    c->nthreads = 0;
    for (uint32_t i = 0; i < c->opts.sessions; i++) {
        jobs[i] = (struct client__job){.c = c, .index = i, .verify = verify};
        int rv = pthread_create(&c->threads[i], &attr, client__session_main, &jobs[i]);
        if (rv != 0) {
            fprintf(stderr, "bazaar-client: cannot start session %u: %s\n", i, strerror(rv));
            c->thread_failed = true;
            atomic_store(&c->shared.stop, true);
            break;
        }
        c->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);

    uint64_t next_draw = c->cfg.start_us + CLIENT__PROGRESS_AFTER;
    while (atomic_load_explicit(&c->threads_done, memory_order_acquire) < c->nthreads) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
        nanosleep(&ts, NULL);
        if (client__interrupted && !atomic_load(&c->shared.stop)) {
            atomic_store(&c->shared.stop, true);
            fprintf(stderr,
                    "%sbazaar-client: interrupted; finishing the current iterations, "
                    "then verifying (Ctrl-C again to abort)\n",
                    c->progress_shown ? "\n" : "");
            c->progress_shown = false;
        }
        uint64_t now = clock_now_us();
        if (progress && now >= next_draw) {
            client__progress(c, verify ? "verifying" : "trading", now);
            next_draw = now + 1000000;
        }
    }
    for (size_t i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    if (c->progress_shown) {
        fputs("\r\033[K", stderr);
        c->progress_shown = false;
    }
}

/* ---------------------------------------------------------------- report */

struct client__totals {
    struct stats_summary types[STATS_NTYPES];
    uint64_t requests, iterations, recorded, verified, mismatches, unverified, duplicates;
    uint64_t conflicts, retries, unknown, unexpected;
    bool ok;
};

/* The sessions' logs side by side, as stats.c wants them. Caller frees the array only: the
 * records still belong to the sessions. */
static struct stats_log *client__logs(const struct client *c)
{
    struct stats_log *logs = xcalloc(c->opts.sessions, sizeof *logs);
    for (size_t i = 0; i < c->opts.sessions; i++)
        logs[i] = c->sessions[i].log;
    return logs;
}

static void client__totals(struct client *c, struct client__totals *t)
{
    memset(t, 0, sizeof *t);
    struct stats_log *logs = client__logs(c);
    for (size_t i = 0; i < c->opts.sessions; i++) {
        const struct workload_session *s = &c->sessions[i];
        t->iterations += s->iterations_done;
        t->recorded += s->norders;
        t->verified += s->verified;
        t->mismatches += s->mismatches;
        t->unverified += s->unverified;
        t->conflicts += s->conflicts;
        t->retries += s->retries;
        t->unknown += s->unknown;
        t->unexpected += s->unexpected;
    }
    stats_summarize(logs, c->opts.sessions, t->types);
    free(logs);
    for (int i = 0; i < STATS_NTYPES; i++)
        t->requests += t->types[i].count;
    t->duplicates = workload_count_duplicates(c->sessions, c->opts.sessions);
    t->ok = !c->thread_failed && t->verified == t->recorded && t->mismatches == 0 &&
            t->unverified == 0 && t->duplicates == 0 && t->unknown == 0 && t->unexpected == 0;
}

static double client__ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static double client__rate(uint64_t n, uint64_t us)
{
    double r = us ? (double)n * 1e6 / (double)us : 0.0;
    return (double)(uint64_t)(r * 10.0 + 0.5) / 10.0; /* one decimal */
}

static void client__print_table(struct client *c, const struct client__totals *t)
{
    const struct client_opts *o = &c->opts;
    char per_session[32];
    if (o->iterations)
        snprintf(per_session, sizeof per_session, "%llu", (unsigned long long)o->iterations);
    else
        snprintf(per_session, sizeof per_session, "up to %llu s of",
                 (unsigned long long)o->duration_s);
    printf("bazaar-client: %llu sessions x %s iterations (%llu done), p %.2f, seed %llu "
           "(run %s)\n",
           (unsigned long long)o->sessions, per_session, (unsigned long long)t->iterations, o->p,
           (unsigned long long)o->seed, c->run_id);
    printf("trading %.2f s, verifying %.2f s, %.1f requests/s while trading\n\n",
           (double)c->trade_us / 1e6, (double)c->verify_us / 1e6,
           client__rate(t->types[STATS_LOOKUP].count + t->types[STATS_TRADE].count, c->trade_us));
    printf("%-8s %9s %7s %9s %9s %9s %9s\n", "type", "count", "errors", "mean ms", "p50 ms",
           "p99 ms", "max ms");
    for (int i = 0; i < STATS_NTYPES; i++) {
        const struct stats_summary *s = &t->types[i];
        printf("%-8s %9llu %7llu %9.3f %9.3f %9.3f %9.3f\n", stats_type_name((enum stats_type)i),
               (unsigned long long)s->count, (unsigned long long)s->errors, client__ms(s->mean_us),
               client__ms(s->p50_us), client__ms(s->p99_us), client__ms(s->max_us));
    }
    printf("\norders:  %llu recorded, %llu verified, %llu mismatched or missing, %llu unverified, "
           "%llu duplicate numbers\n",
           (unsigned long long)t->recorded, (unsigned long long)t->verified,
           (unsigned long long)t->mismatches, (unsigned long long)t->unverified,
           (unsigned long long)t->duplicates);
    printf("trades:  %llu refused with 409 (not enough shares), %llu outcomes still unknown "
           "after retrying\n",
           (unsigned long long)t->conflicts, (unsigned long long)t->unknown);
    printf("retries: %llu requests repeated after a 502/503/504, a timeout or a refused "
           "connection\n",
           (unsigned long long)t->retries);
    printf("errors:  %llu unexpected outcomes%s\n", (unsigned long long)t->unexpected,
           c->thread_failed ? ", some sessions could not start" : "");
    printf("result:  %s%s\n", t->ok ? "OK" : "FAILED",
           atomic_load(&c->shared.stop) ? " (run stopped early)" : "");
}

static int client__print_json(struct client *c, const struct client__totals *t)
{
    const struct client_opts *o = &c->opts;
    json_t *types = json_object();
    for (int i = 0; i < STATS_NTYPES; i++) {
        const struct stats_summary *s = &t->types[i];
        json_object_set_new(types, stats_type_name((enum stats_type)i),
                            json_pack("{s:I,s:I,s:f,s:f,s:f,s:f}", "count", (json_int_t)s->count,
                                      "errors", (json_int_t)s->errors, "mean_ms",
                                      client__ms(s->mean_us), "p50_ms", client__ms(s->p50_us),
                                      "p99_ms", client__ms(s->p99_us), "max_ms",
                                      client__ms(s->max_us)));
    }
    json_t *root = json_pack(
        "{s:s,s:I,s:s,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,"
        "s:b}",
        "url", o->url, "seed", (json_int_t)o->seed, "run_id", c->run_id, "sessions",
        (json_int_t)o->sessions, "iterations", (json_int_t)o->iterations, "iterations_done",
        (json_int_t)t->iterations, "p", o->p, "trade_s", client__ms(c->trade_us / 1000), "verify_s",
        client__ms(c->verify_us / 1000), "throughput_rps",
        client__rate(t->types[STATS_LOOKUP].count + t->types[STATS_TRADE].count, c->trade_us),
        "requests", types, "orders_recorded", (json_int_t)t->recorded, "orders_verified",
        (json_int_t)t->verified, "mismatches", (json_int_t)t->mismatches, "unverified",
        (json_int_t)t->unverified, "duplicates", (json_int_t)t->duplicates, "conflicts",
        (json_int_t)t->conflicts, "retries", (json_int_t)t->retries, "unknown_outcomes",
        (json_int_t)t->unknown, "unexpected_errors", (json_int_t)t->unexpected, "stopped_early",
        (int)atomic_load(&c->shared.stop), "ok", (int)t->ok);
    if (!root) {
        fprintf(stderr, "bazaar-client: cannot build the JSON summary\n");
        return BZ_EINTERNAL;
    }
    /* json_int_t is signed: a seed above INT64_MAX would come out negative, so it is also
     * given as a string. */
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    json_object_set_new(root, "seed_str", json_string(seed));
    json_object_set_new(root, "duration_s", json_integer((json_int_t)o->duration_s));
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(root);
    if (!text)
        return BZ_EINTERNAL;
    puts(text);
    free(text);
    return 0;
}

/* ---------------------------------------------------------------- main */

static uint64_t client__random_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = clock_now_us() ^ ((uint64_t)getpid() << 32);
    return seed;
}

int main(int argc, char **argv)
{
    struct client c;
    char err[512];
    int status = 1;

    memset(&c, 0, sizeof c);
    log_init("client", 0);
    int rv = client__parse_args(&c.opts, argc, argv, err, sizeof err);
    if (rv == 1) {
        fputs(client__usage, stdout);
        return 0;
    }
    if (rv == 2) {
        service_print_version(argv[0]);
        return 0;
    }
    if (rv) {
        fprintf(stderr,
                "bazaar-client: %s\nusage: bazaar-client [--url URL] [--sessions N] "
                "[--iterations N] [--p P] [--seed S] [--csv FILE] (--help for more)\n",
                err);
        return 2;
    }
    http_client_global_init();
    if (c.opts.stocks_list)
        rv = client__stocks_from_list(&c, c.opts.stocks_list, err, sizeof err);
    else if (c.opts.stocks_file)
        rv = client__stocks_from_file(&c, c.opts.stocks_file, err, sizeof err);
    else
        rv = client__stocks_from_api(&c, err, sizeof err);
    if (rv == 0 && c.opts.csv && !(c.csv = fopen(c.opts.csv, "w"))) {
        snprintf(err, sizeof err, "cannot write %s: %s", c.opts.csv, strerror(errno));
        rv = BZ_EINVAL;
    }
    if (rv) {
        fprintf(stderr, "bazaar-client: %s\n", err);
        status = 2;
        goto out;
    }
    if (!c.opts.seed_given)
        c.opts.seed = client__random_seed();
    if (c.opts.quiet)
        log_set_level(LOG_LEVEL_ERROR);
    util_random_hex(c.run_id, 4);
    client__install_signals();

    c.cfg = (struct workload_config){
        .url = c.opts.url,
        .stocks = (const char *const *)c.stocks,
        .nstocks = c.nstocks,
        .iterations = c.opts.iterations,
        .p = c.opts.p,
        .seed = c.opts.seed,
        .run_id = c.run_id,
        .timeout_ms = (int)c.opts.timeout_ms,
        .max_tries = (unsigned)c.opts.max_tries,
    };
    atomic_init(&c.shared.stop, false);
    atomic_init(&c.shared.warnings_left, CLIENT__WARNINGS);
    atomic_init(&c.shared.requests, 0);
    atomic_init(&c.shared.orders, 0);
    atomic_init(&c.shared.failed, 0);
    c.sessions = xcalloc(c.opts.sessions, sizeof *c.sessions);
    c.threads = xcalloc(c.opts.sessions, sizeof *c.threads);
    struct client__job *jobs = xcalloc(c.opts.sessions, sizeof *jobs);
    for (uint32_t i = 0; i < c.opts.sessions; i++)
        workload_session_init(&c.sessions[i], &c.cfg, &c.shared, i);

    if (!c.opts.quiet)
        fprintf(stderr, "bazaar-client: %s, %llu sessions, seed %llu, run %s\n", c.opts.url,
                (unsigned long long)c.opts.sessions, (unsigned long long)c.opts.seed, c.run_id);

    c.cfg.start_us = clock_now_us();
    if (c.opts.duration_s)
        c.cfg.deadline_us = c.cfg.start_us + c.opts.duration_s * 1000000u;
    client__run_phase(&c, false, jobs);
    uint64_t verify_start = clock_now_us();
    c.trade_us = verify_start - c.cfg.start_us;
    client__run_phase(&c, true, jobs);
    c.verify_us = clock_now_us() - verify_start;
    free(jobs);

    struct client__totals totals;
    client__totals(&c, &totals);
    if (c.opts.json)
        rv = client__print_json(&c, &totals);
    else
        client__print_table(&c, &totals);
    fflush(stdout);
    status = totals.ok && rv == 0 ? 0 : 1;

    if (c.csv) {
        struct stats_log *logs = client__logs(&c);
        if (stats_write_csv(c.csv, logs, c.opts.sessions) != 0) {
            fprintf(stderr, "bazaar-client: writing %s failed\n", c.opts.csv);
            status = 1;
        }
        free(logs);
    }

out:
    if (c.csv && fclose(c.csv) != 0) {
        fprintf(stderr, "bazaar-client: writing %s: %s\n", c.opts.csv, strerror(errno));
        status = status ? status : 1;
    }
    for (size_t i = 0; c.sessions && i < c.opts.sessions; i++)
        workload_session_free(&c.sessions[i]);
    free(c.sessions);
    free(c.threads);
    for (size_t i = 0; i < c.nstocks; i++)
        free(c.stocks[i]);
    free(c.stocks);
    return status;
}
