#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

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
    /* One pass over the buckets is the snapshot: _count is their total, so the +Inf
     * bucket always equals _count even while other threads observe (reading h->count
     * separately raced with them). _sum is read after and may include a few newer
     * observations, which Prometheus tolerates. */
    uint64_t snap[METRICS_BUCKETS];
    for (int i = 0; i < METRICS_BUCKETS; i++)
        snap[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    const char *sep = labels[0] ? "," : "";
    uint64_t cumulative = 0;
    int rv = 0;
    for (int i = 0; i < METRICS_BUCKETS && !rv; i++) {
        cumulative += snap[i];
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
                          (unsigned long long)cumulative);
}

/* Field `want` (1-based, as in proc(5)) of /proc/self/stat, or 0. */
static unsigned long long metrics__stat_field(int want)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces: count fields after its ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    int field = 2;
    unsigned long long value = 0;
    for (p++; *p && field < want;) {
        while (*p == ' ')
            p++;
        field++;
        char *end = p;
        while (*end && *end != ' ')
            end++;
        if (field == want) {
            uint64_t v;
            if (parse_u64(p, (size_t)(end - p), UINT64_MAX, &v) == 0)
                value = v;
        }
        p = end;
    }
    return value;
}

static double metrics__start_time_s(void)
{
    long ticks = sysconf(_SC_CLK_TCK);
    unsigned long long start_ticks = metrics__stat_field(22);
    FILE *f = fopen("/proc/uptime", "r");
    double uptime = 0;
    if (f) {
        char line[64] = "";
        if (fgets(line, sizeof line, f)) {
            uint64_t whole = 0;
            size_t len = strcspn(line, ". ");
            if (parse_u64(line, len, UINT64_MAX, &whole) == 0)
                uptime = (double)whole;
        }
        fclose(f);
    }
    if (ticks <= 0)
        return 0;
    struct timeval now;
    gettimeofday(&now, NULL);
    double boot = (double)now.tv_sec - uptime;
    return boot + (double)start_ticks / (double)ticks;
}

static uint64_t metrics__open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* minus the descriptor of the listing itself */
}

int metrics_render_process(struct strbuf *out)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long rss_pages = metrics__stat_field(24), vsize = metrics__stat_field(23);
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    int rv = 0;
    rv |= metrics_render_header(out, "process_cpu_seconds_total", "counter",
                                "Total user and system CPU time spent in seconds.");
    rv |= strbuf_appendf(out, "process_cpu_seconds_total %.3f\n", cpu);
    rv |= metrics_render_simple(out, "process_resident_memory_bytes", "gauge",
                                "Resident memory size in bytes.",
                                rss_pages * (unsigned long long)(page > 0 ? page : 4096));
    rv |= metrics_render_simple(out, "process_virtual_memory_bytes", "gauge",
                                "Virtual memory size in bytes.", vsize);
    rv |= metrics_render_simple(out, "process_open_fds", "gauge",
                                "Number of open file descriptors.", metrics__open_fds());
    rv |= metrics_render_simple(out, "process_max_fds", "gauge",
                                "Maximum number of open file descriptors.",
                                rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur);
    rv |= metrics_render_header(out, "process_start_time_seconds", "gauge",
                                "Start time of the process since unix epoch in seconds.");
    rv |= strbuf_appendf(out, "process_start_time_seconds %.2f\n", metrics__start_time_s());
    return rv ? BZ_ENOMEM : 0;
}
