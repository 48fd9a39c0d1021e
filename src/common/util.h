/*
 * util.h - memory, bounded buffers, checked number parsing and clocks.
 *
 * OOM policy (decided once, here): allocation failure aborts the process with
 * file:line through the x* wrappers. A service that cannot allocate a few
 * hundred bytes cannot make progress safely, and aborting removes thousands of
 * unreachable error branches. Every other failure is a BZ_E* code.
 *
 * struct strbuf is a growable byte buffer with a hard maximum given at init
 * (like curl's dynbuf): appends past the maximum fail with BZ_ETOOBIG and
 * leave the contents unchanged.
 */
#ifndef BZ_UTIL_H
#define BZ_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

#define xmalloc(n)     util__xmalloc((n), __FILE__, __LINE__)
#define xcalloc(n, sz) util__xcalloc((n), (sz), __FILE__, __LINE__)
#define xrealloc(p, n) util__xrealloc((p), (n), __FILE__, __LINE__)
#define xstrdup(s)     util__xstrdup((s), __FILE__, __LINE__)
#define xmemdup(p, n)  util__xmemdup((p), (n), __FILE__, __LINE__)

/* Logs the failed allocation of n bytes at file:line and aborts (the OOM policy, design.md). */
_Noreturn void util__oom(size_t n, const char *file, int line);
void *util__xmalloc(size_t n, const char *file, int line);
void *util__xcalloc(size_t n, size_t size, const char *file, int line);
void *util__xrealloc(void *p, size_t n, const char *file, int line);
char *util__xstrdup(const char *s, const char *file, int line);
/* json_dumps that aborts on allocation failure, its only failure (caller frees). */
struct json_t;
char *xjson_dumps(const struct json_t *json, size_t flags);
/* Copies n bytes and appends a NUL. */
char *util__xmemdup(const void *p, size_t n, const char *file, int line);

struct strbuf {
    char *data; /* NUL-terminated when non-NULL; owned by the strbuf */
    size_t len; /* bytes in use, excluding the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* hard ceiling on len */
};

void strbuf_init(struct strbuf *b, size_t max);
/* Frees the contents, not the struct. The strbuf can be reused after init. */
void strbuf_free(struct strbuf *b);
void strbuf_reset(struct strbuf *b);
int strbuf_append(struct strbuf *b, const void *data, size_t len);
int strbuf_appendf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int strbuf_vappendf(struct strbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Hands the bytes to the caller (who frees them) and leaves the strbuf empty. */
char *strbuf_steal(struct strbuf *b, size_t *len);

/*
 * Parses exactly `len` bytes of decimal digits into *out. Rejects an empty
 * string, any sign, whitespace, trailing junk and values above `max`.
 * Returns 0 or BZ_EINVAL.
 */
int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);
/* Same for a NUL-terminated string. */
int parse_u64_str(const char *s, uint64_t max, uint64_t *out);

/* Stock names: 1-64 bytes of [A-Za-z0-9_.-]. */
#define STOCK_NAME_MAX 64
bool stock_name_valid(const char *s, size_t len);

/* "127.0.0.1:8080" -> host (NUL-terminated, at most hostlen-1 bytes) and port 1..65535. */
int parse_host_port(const char *s, char *host, size_t hostlen, uint16_t *port);

/* Monotonic clock, for durations and deadlines. */
uint64_t clock_now_us(void);
uint64_t clock_now_ms(void);
/* The same clock at the kernel's tick (a few ms, never ahead of clock_now_ms) without reading
 * the CPU's counter: for deadlines of seconds taken on every request. */
uint64_t clock_coarse_ms(void);
/* Wall-clock time in milliseconds since the Unix epoch, for timestamps shown to people. */
uint64_t clock_wall_ms(void);

/* A condition variable whose timed waits use the monotonic clock (see clock_deadline). */
void clock_cond_init(pthread_cond_t *cond);
/* The absolute CLOCK_MONOTONIC time `ms` from now, for pthread_cond_timedwait. */
void clock_deadline(struct timespec *ts, uint64_t ms);

/*
 * A one-shot event between two threads: a blocking caller of an asynchronous
 * call waits (latch_wait) until the thread that finished the call sets it
 * (latch_set, exactly once). It may live on the waiter's stack: latch_wait
 * returns only once the setter has let go of it, and destroys it.
 */
struct latch {
    pthread_mutex_t m;
    pthread_cond_t cond;
    bool set;
};

void latch_init(struct latch *l);
void latch_set(struct latch *l);
void latch_wait(struct latch *l);

/* Fills buf with 2*nbytes lowercase hex characters of random data and a NUL. */
void util_random_hex(char *buf, size_t nbytes);

/*
 * Copies src into dst (dstlen >= 1, always NUL-terminated) as valid UTF-8:
 * each byte that does not begin a complete, well-formed sequence (RFC 3629:
 * no overlongs, surrogates or values past U+10FFFF) becomes '?', and a cut
 * never splits a character. For messages that may quote client input.
 */
void util_utf8_copy(char *dst, size_t dstlen, const char *src);

/* Constant-time comparison of two strings (time depends only on the lengths). */
bool util_secret_equal(const char *a, const char *b);

#endif
