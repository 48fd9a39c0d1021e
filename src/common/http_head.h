/*
 * http_head.h - strict checks of an HTTP/1.x request head (RFC 9112), run
 * before libmicrohttpd reads anything that depends on them.
 *
 * Two entry points, both pure (no I/O, no allocation), so they are unit
 * tested and fuzzed on their own:
 *   - http_head_check() classifies the raw bytes that start a connection:
 *     not HTTP/1.x at all (a TLS ClientHello, the HTTP/2 preface, garbage),
 *     a request line or head over our limits, or a complete head that may be
 *     handed to libmicrohttpd.
 *   - struct http_framing collects Content-Length, Transfer-Encoding and Host
 *     fields (from raw bytes or from libmicrohttpd's parsed list) and decides
 *     whether the message framing is unambiguous (RFC 9112 §6.1-§6.3): no
 *     request-smuggling shapes, only the `chunked` coding.
 * Errors are negative BZ_E* codes (so their HTTP status comes from error.h)
 * with a static message. Not a general HTTP parser: libmicrohttpd still
 * parses every request it is handed.
 */
#ifndef BZ_HTTP_HEAD_H
#define BZ_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_HEAD_MAX         (12 * 1024) /* request line + fields + blank line */
#define HTTP_TARGET_MAX       (8 * 1024)  /* request target; longer is 414 */
#define HTTP_QUERY_PARAMS_MAX 64          /* query parameters; more is 414 */
#define HTTP_FIELDS_MAX       100         /* header fields; more is 431 */

struct http_framing {
    bool http10;         /* the request is HTTP/1.0 */
    unsigned n_cl;       /* Content-Length fields */
    unsigned n_te;       /* Transfer-Encoding fields */
    unsigned n_host;     /* Host fields */
    bool cl_invalid;     /* a Content-Length that is not 1*DIGIT (at most 19 digits) */
    bool te_not_chunked; /* a Transfer-Encoding other than exactly `chunked` */
};

void http_framing_init(struct http_framing *f, bool http10);
/* Looks at one header field; names compare case-insensitively. */
void http_framing_add(struct http_framing *f, const char *name, size_t name_len, const char *value,
                      size_t value_len);
/*
 * 0 when the framing is unambiguous and supported; otherwise BZ_EINVAL (400:
 * duplicate or malformed Content-Length or Host, Content-Length with
 * Transfer-Encoding, Transfer-Encoding on HTTP/1.0 or repeated, HTTP/1.1
 * without Host), BZ_ENOTIMPL (501: a transfer coding other than a lone
 * `chunked`) or BZ_ELENGTH (411: a lone `chunked`, see docs/security.md), with
 * *why set to a static message.
 */
int http_framing_verdict(const struct http_framing *f, const char **why);

/* Number of query parameters in a request target ("/x?a=1&b" has 2). */
size_t http_query_param_count(const char *target, size_t len);

/*
 * Classifies buf[0..len), the first bytes received on a connection:
 *   0       a prefix of an acceptable head: wait for more bytes;
 *   1       a complete, acceptable head of *head_len bytes;
 *   < 0     a BZ_E* code: BZ_EINVAL (not HTTP/1.x, malformed, bad framing),
 *           BZ_EURI (target or query too long), BZ_EHEADERS (too many or too
 *           large fields) or BZ_ENOTIMPL (a transfer coding);
 *           *why says why.
 * Decides as early as the bytes allow: a TLS record is refused on its first
 * byte. Leading empty lines are skipped (RFC 9112 §2.2).
 */
int http_head_check(const char *buf, size_t len, size_t *head_len, const char **why);

#endif
