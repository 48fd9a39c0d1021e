#include "stats.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "util.h"

void stats_log_init(struct stats_log *log)
{
    memset(log, 0, sizeof *log);
}

void stats_log_free(struct stats_log *log)
{
    free(log->recs);
    memset(log, 0, sizeof *log);
}

void stats_add_sample(struct stats_log *log, enum stats_type type, uint64_t start_us,
                      uint64_t latency_us, int status, bool ok)
{
    if (log->len == log->cap) {
        log->cap = log->cap ? log->cap * 2 : 256;
        log->recs = xrealloc(log->recs, log->cap * sizeof *log->recs);
    }
    struct stats_record *r = &log->recs[log->len++];
    r->start_us = start_us;
    r->latency_us = latency_us > UINT32_MAX ? UINT32_MAX : (uint32_t)latency_us;
    r->status = (status < 0 || status > 999) ? 0 : (int16_t)status;
    r->type = (uint8_t)type;
    r->ok = ok ? 1 : 0;
}

const char *stats_type_name(enum stats_type type)
{
    switch (type) {
    case STATS_LOOKUP:
        return "lookup";
    case STATS_TRADE:
        return "trade";
    case STATS_QUERY:
        return "query";
    default:
        return "?";
    }
}

static int stats__cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of n sorted samples: the smallest sample with at least q*n at or
 * below it. q is given in per mille so the rank is computed in integers. */
static uint64_t stats__rank(const uint32_t *sorted, size_t n, unsigned per_mille)
{
    size_t rank = (n * per_mille + 999) / 1000; /* ceil(n * q) */
    if (rank == 0)
        rank = 1;
    return sorted[rank - 1];
}

void stats_summarize(const struct stats_log *logs, size_t nlogs, struct stats_summary *out)
{
    memset(out, 0, STATS_NTYPES * sizeof *out);
    for (size_t i = 0; i < nlogs; i++)
        for (size_t j = 0; j < logs[i].len; j++)
            out[logs[i].recs[j].type].count++;

    for (int t = 0; t < STATS_NTYPES; t++) {
        struct stats_summary *s = &out[t];
        if (s->count == 0)
            continue;
        uint32_t *lat = xmalloc(s->count * sizeof *lat);
        size_t n = 0;
        uint64_t sum = 0;
        for (size_t i = 0; i < nlogs; i++) {
            for (size_t j = 0; j < logs[i].len; j++) {
                const struct stats_record *r = &logs[i].recs[j];
                if (r->type != t)
                    continue;
                lat[n++] = r->latency_us;
                sum += r->latency_us;
                s->errors += r->ok ? 0 : 1;
            }
        }
        qsort(lat, n, sizeof *lat, stats__cmp_u32);
        s->mean_us = (sum + n / 2) / n;
        s->p50_us = stats__rank(lat, n, 500);
        s->p99_us = stats__rank(lat, n, 990);
        s->max_us = lat[n - 1];
        free(lat);
    }
}

int stats_write_csv(FILE *f, const struct stats_log *logs, size_t nlogs)
{
    fputs("session,type,start_us,latency_us,status\n", f);
    for (size_t i = 0; i < nlogs; i++) {
        for (size_t j = 0; j < logs[i].len; j++) {
            const struct stats_record *r = &logs[i].recs[j];
            fprintf(f, "%zu,%s,%llu,%lu,%d\n", i, stats_type_name((enum stats_type)r->type),
                    (unsigned long long)r->start_us, (unsigned long)r->latency_us, r->status);
        }
    }
    return ferror(f) ? BZ_EIO : 0;
}
