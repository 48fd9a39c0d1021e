/*
 * stats.h - the client's per-request records: latency samples, exact
 * percentiles and the CSV export.
 *
 * Each session appends to its own struct stats_log (one thread, no lock);
 * the summary is computed once at the end from every sample of every log,
 * sorted, so p50/p99 are exact, never averages of averages. Not for live
 * metrics: the progress line uses the sessions' own counters.
 */
#ifndef BZ_CLIENT_STATS_H
#define BZ_CLIENT_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum stats_type { STATS_LOOKUP = 0, STATS_TRADE, STATS_QUERY, STATS_NTYPES };

/* One HTTP request as the client saw it. */
struct stats_record {
    uint64_t start_us;   /* monotonic µs since the start of the run */
    uint32_t latency_us; /* from just before sending to the end of the reply (or failure) */
    int16_t status;      /* HTTP status; 0 when no reply arrived (timeout, refused) */
    uint8_t type;        /* enum stats_type */
    uint8_t ok;          /* 1 when the reply was an expected outcome (200, or 409 for a trade) */
};

/* The requests of one session, in the order they were made. */
struct stats_log {
    struct stats_record *recs; /* owned; freed by stats_log_free */
    size_t len;
    size_t cap;
};

/* Per-type result of stats_summarize. */
struct stats_summary {
    uint64_t count;   /* requests */
    uint64_t errors;  /* requests that were not ok */
    uint64_t mean_us; /* rounded to the nearest µs */
    uint64_t p50_us;  /* nearest-rank percentiles over every sample */
    uint64_t p99_us;
    uint64_t max_us;
};

void stats_log_init(struct stats_log *log);
/* Frees the contents, not the struct. */
void stats_log_free(struct stats_log *log);

void stats_add_sample(struct stats_log *log, enum stats_type type, uint64_t start_us,
                      uint64_t latency_us, int status, bool ok);

/* "lookup", "trade" or "query". */
const char *stats_type_name(enum stats_type type);

/* Summary per type over `nlogs` logs; out[] has STATS_NTYPES entries. */
void stats_summarize(const struct stats_log *logs, size_t nlogs, struct stats_summary *out);

/*
 * Writes a header line and one row per request, `session,type,start_us,latency_us,status`,
 * session being the index of the log. Returns 0, or BZ_EIO when the stream failed.
 */
int stats_write_csv(FILE *f, const struct stats_log *logs, size_t nlogs);

#endif
