#include "metrics.h"

/* Bucket upper bounds in microseconds; the last bucket is +Inf. */
static const uint64_t metrics__bounds_us[METRICS_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 10000000,
};

void metrics_hist_observe(struct metrics_hist *h, uint64_t us)
{
    int i = 0;
    while (i < METRICS_BUCKETS - 1 && us > metrics__bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

uint64_t metrics_hist_quantile_us(const struct metrics_hist *h, double q)
{
    uint64_t total = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    for (int i = 0; i < METRICS_BUCKETS - 1; i++) {
        seen += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (seen > want)
            return metrics__bounds_us[i];
    }
    return UINT64_MAX;
}

int metrics_render_header(struct strbuf *out, const char *name, const char *type, const char *help)
{
    return strbuf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int metrics_render_value(struct strbuf *out, const char *name, const char *labels, uint64_t value)
{
    if (labels[0])
        return strbuf_appendf(out, "%s{%s} %llu\n", name, labels, (unsigned long long)value);
    return strbuf_appendf(out, "%s %llu\n", name, (unsigned long long)value);
}

int metrics_render_simple(struct strbuf *out, const char *name, const char *type, const char *help,
                          uint64_t value)
{
    int rv = metrics_render_header(out, name, type, help);
    return rv ? rv : metrics_render_value(out, name, "", value);
}

int metrics_render_hist(struct strbuf *out, const char *name, const char *labels,
                        const struct metrics_hist *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cumulative = 0;
    int rv = 0;
    for (int i = 0; i < METRICS_BUCKETS && !rv; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < METRICS_BUCKETS - 1)
            rv =
                strbuf_appendf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                               (double)metrics__bounds_us[i] / 1e6, (unsigned long long)cumulative);
        else
            rv = strbuf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                                (unsigned long long)cumulative);
    }
    if (rv)
        return rv;
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    return strbuf_appendf(out, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %llu\n", name, open, labels,
                          close, (double)atomic_load(&h->sum_us) / 1e6, name, open, labels, close,
                          (unsigned long long)atomic_load(&h->count));
}
