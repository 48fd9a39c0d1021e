/*
 * metrics.h - lock-free counters and latency histograms, rendered in the
 * Prometheus text format for GET /metrics.
 *
 * A histogram has fixed buckets (100 µs .. 10 s) so observing is a handful
 * of atomic adds and rendering needs no lock. Not for per-request tracing.
 */
#ifndef BZ_METRICS_H
#define BZ_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "util.h"

#define METRICS_BUCKETS 15

struct metrics_hist {
    atomic_uint_fast64_t buckets[METRICS_BUCKETS]; /* non-cumulative counts per bucket */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us;
};

void metrics_hist_observe(struct metrics_hist *h, uint64_t us);
/* Upper bound (µs) of the smallest bucket holding quantile q of the observations; 0 if none. */
uint64_t metrics_hist_quantile_us(const struct metrics_hist *h, double q);

/* `labels` is either "" or like `route="GET /x"` (no braces). */
int metrics_render_hist(struct strbuf *out, const char *name, const char *labels,
                        const struct metrics_hist *h);
/* Writes the HELP and TYPE lines of a metric family. `type` is counter, gauge or histogram. */
int metrics_render_header(struct strbuf *out, const char *name, const char *type, const char *help);
int metrics_render_value(struct strbuf *out, const char *name, const char *labels, uint64_t value);
/* HELP, TYPE and one unlabelled sample in one call. */
int metrics_render_simple(struct strbuf *out, const char *name, const char *type, const char *help,
                          uint64_t value);

/*
 * The standard process_* metrics of Prometheus client libraries, read from
 * /proc/self: resident and virtual memory, CPU seconds, open and maximum file
 * descriptors, start time (seconds since the epoch).
 */
int metrics_render_process(struct strbuf *out);

#endif
