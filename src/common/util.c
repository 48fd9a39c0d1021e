#include "util.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "error.h"

/* ---------------------------------------------------------------- memory */

_Noreturn void util__oom(size_t n, const char *file, int line)
{
    fprintf(stderr, "out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *util__xmalloc(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        util__oom(n, file, line);
    return p;
}

void *util__xcalloc(size_t n, size_t size, const char *file, int line)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        util__oom(n * size, file, line);
    return p;
}

void *util__xrealloc(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        util__oom(n, file, line);
    return q;
}

char *util__xstrdup(const char *s, const char *file, int line)
{
    return util__xmemdup(s, strlen(s), file, line);
}

char *util__xmemdup(const void *p, size_t n, const char *file, int line)
{
    char *q = util__xmalloc(n + 1, file, line);
    if (n)
        memcpy(q, p, n);
    q[n] = '\0';
    return q;
}

char *xjson_dumps(const struct json_t *json, size_t flags)
{
    char *s = json_dumps(json, flags);
    if (!s)
        util__oom(0, __FILE__, __LINE__);
    return s;
}

/* ---------------------------------------------------------------- strbuf */

void strbuf_init(struct strbuf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void strbuf_free(struct strbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void strbuf_reset(struct strbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int strbuf__reserve(struct strbuf *b, size_t extra)
{
    if (extra > b->max - b->len)
        return BZ_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int strbuf_append(struct strbuf *b, const void *data, size_t len)
{
    int rv = strbuf__reserve(b, len);
    if (rv)
        return rv;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int strbuf_vappendf(struct strbuf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return BZ_EINVAL;
    int rv = strbuf__reserve(b, (size_t)n);
    if (rv)
        return rv;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int strbuf_appendf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rv = strbuf_vappendf(b, fmt, ap);
    va_end(ap);
    return rv;
}

char *strbuf_steal(struct strbuf *b, size_t *len)
{
    char *data = b->data ? b->data : xstrdup("");
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return data;
}

/* ---------------------------------------------------------------- parsing */

int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return BZ_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return BZ_EINVAL;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return BZ_EINVAL;
        v = v * 10 + d;
    }
    if (v > max)
        return BZ_EINVAL;
    *out = v;
    return 0;
}

int parse_u64_str(const char *s, uint64_t max, uint64_t *out)
{
    return parse_u64(s, strlen(s), max, out);
}

bool stock_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > STOCK_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int parse_host_port(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return BZ_EINVAL;
    size_t hlen = (size_t)(colon - s);
    if (hlen >= hostlen)
        return BZ_EINVAL;
    uint64_t p;
    if (parse_u64_str(colon + 1, 65535, &p) || p == 0)
        return BZ_EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return 0;
}

/* ---------------------------------------------------------------- time, randomness */

uint64_t clock_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t clock_now_ms(void)
{
    return clock_now_us() / 1000u;
}

static uint64_t util__clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t clock_coarse_ms(void)
{
    return util__clock_ms(CLOCK_MONOTONIC_COARSE);
}

uint64_t clock_wall_ms(void)
{
    return util__clock_ms(CLOCK_REALTIME);
}

void clock_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

void latch_init(struct latch *l)
{
    pthread_mutex_init(&l->m, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->set = false;
}

void latch_set(struct latch *l)
{
    pthread_mutex_lock(&l->m);
    l->set = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->m);
}

void latch_wait(struct latch *l)
{
    pthread_mutex_lock(&l->m);
    while (!l->set)
        pthread_cond_wait(&l->cond, &l->m);
    pthread_mutex_unlock(&l->m); /* the setter signalled under l->m and has let go of it */
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->m);
}

void clock_deadline(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void util_random_hex(char *buf, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        nbytes = sizeof raw;
    size_t got = 0;
    while (got < nbytes) {
        ssize_t n = getrandom(raw + got, nbytes - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    for (size_t i = 0; i < nbytes; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[2 * nbytes] = '\0';
}

bool util_secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    /* Compare over the expected length so timing does not reveal a prefix match. */
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)((i < la ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0. */
static size_t util__utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        if (s[0] == 0xe0)
            lo = 0xa0; /* no overlongs */
        if (s[0] == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        if (s[0] == 0xf0)
            lo = 0x90;
        if (s[0] == 0xf4)
            hi = 0x8f; /* nothing past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

void util_utf8_copy(char *dst, size_t dstlen, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t n = strlen(src), w = 0;
    for (size_t r = 0; r < n;) {
        size_t len = util__utf8_seq(s + r, n - r);
        size_t take = len ? len : 1;
        if (w + (len ? len : 1) >= dstlen)
            break; /* a character that does not fit whole is left out */
        if (len)
            memcpy(dst + w, s + r, len);
        else
            dst[w] = '?';
        w += len ? len : 1;
        r += take;
    }
    dst[w] = '\0';
}
