#include "http_head.h"

#include <string.h>
#include <strings.h>

#include "error.h"

/* RFC 9110 §5.6.2 tchar. */
static bool http_head__tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field-value bytes (RFC 9110 §5.5): VCHAR, SP, HTAB and obs-text; no CTL, no NUL. */
static bool http_head__value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool http_head__ieq(const char *a, size_t alen, const char *lit)
{
    return alen == strlen(lit) && strncasecmp(a, lit, alen) == 0;
}

void http_framing_init(struct http_framing *f, bool http10)
{
    memset(f, 0, sizeof *f);
    f->http10 = http10;
}

/* value without leading and trailing optional whitespace. */
static void http_head__trim(const char **v, size_t *len)
{
    while (*len && ((*v)[0] == ' ' || (*v)[0] == '\t')) {
        (*v)++;
        (*len)--;
    }
    while (*len && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
        (*len)--;
}

void http_framing_add(struct http_framing *f, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    http_head__trim(&value, &value_len);
    if (http_head__ieq(name, name_len, "Content-Length")) {
        f->n_cl++;
        bool digits = value_len > 0 && value_len <= 19;
        for (size_t i = 0; digits && i < value_len; i++)
            digits = value[i] >= '0' && value[i] <= '9';
        if (!digits)
            f->cl_invalid = true;
    } else if (http_head__ieq(name, name_len, "Transfer-Encoding")) {
        f->n_te++;
        if (!http_head__ieq(value, value_len, "chunked"))
            f->te_not_chunked = true;
    } else if (http_head__ieq(name, name_len, "Host")) {
        f->n_host++;
    }
}

int http_framing_verdict(const struct http_framing *f, const char **why)
{
    if (f->n_host > 1) {
        *why = "more than one Host header";
        return BZ_EINVAL;
    }
    if (f->n_cl > 1) {
        *why = "more than one Content-Length header";
        return BZ_EINVAL;
    }
    if (f->cl_invalid) {
        *why = "Content-Length must be a decimal number";
        return BZ_EINVAL;
    }
    if (f->n_te && f->n_cl) {
        *why = "Content-Length and Transfer-Encoding together";
        return BZ_EINVAL;
    }
    if (f->n_te && f->http10) {
        *why = "Transfer-Encoding in an HTTP/1.0 request";
        return BZ_EINVAL;
    }
    if (f->n_te > 1) {
        *why = "more than one Transfer-Encoding header";
        return BZ_EINVAL;
    }
    if (f->te_not_chunked) {
        *why = "transfer coding not supported (only chunked)";
        return BZ_ENOTIMPL;
    }
    if (!f->http10 && f->n_host == 0) {
        *why = "HTTP/1.1 requests need a Host header";
        return BZ_EINVAL;
    }
    if (f->n_te) {
        /* A lone chunked is well-formed, but libmicrohttpd 0.9.75's chunk parser answers
         * some malformed chunks (a 100 KB chunk extension) with its own 500: bodies are
         * at most a few KiB, so we ask for a Content-Length (RFC 9110 §15.5.12). */
        *why = "request bodies need a Content-Length (chunked is not accepted)";
        return BZ_ELENGTH;
    }
    return 0;
}

size_t http_query_param_count(const char *target, size_t len)
{
    const char *q = memchr(target, '?', len);
    if (!q)
        return 0;
    size_t n = 1;
    for (const char *p = q + 1; p < target + len; p++)
        n += *p == '&';
    return n;
}

/*
 * The request line "METHOD SP target SP HTTP/x.y" ending at eol (the LF; a CR
 * before it is allowed). 0 or a BZ_E* code; sets *http10.
 */
static int http_head__request_line(const char *s, size_t n, bool *http10, const char **why)
{
    size_t i = 0;
    while (i < n && http_head__tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i > 16 || i == n || s[i] != ' ') {
        *why = "malformed request line";
        return BZ_EINVAL;
    }
    size_t t0 = ++i;
    while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f)
        i++;
    if (i - t0 > HTTP_TARGET_MAX ||
        http_query_param_count(s + t0, i - t0) > HTTP_QUERY_PARAMS_MAX) {
        *why = i - t0 > HTTP_TARGET_MAX ? "request target too long" : "too many query parameters";
        return BZ_EURI;
    }
    if (i == t0 || i == n || s[i] != ' ') {
        *why = "malformed request target";
        return BZ_EINVAL;
    }
    const char *v = s + i + 1;
    size_t vlen = n - i - 1;
    if (vlen && v[vlen - 1] == '\r')
        vlen--;
    /* Only HTTP/1.0 and HTTP/1.1: the HTTP/2 preface ("PRI * HTTP/2.0") is not an
     * HTTP/1.x request, and SPEC §6 asks for 400 there. */
    if (vlen != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1')) {
        *why = "not an HTTP/1.0 or HTTP/1.1 request";
        return BZ_EINVAL;
    }
    *http10 = v[7] == '0';
    return 0;
}

/*
 * Is s[0..n) (no LF yet) a possible prefix of a request line? Lets garbage
 * and TLS be refused on their first bytes instead of after a timeout.
 */
static int http_head__line_prefix(const char *s, size_t n, const char **why)
{
    size_t i = 0;
    while (i < n && http_head__tchar((unsigned char)s[i]))
        i++;
    if (i == n)
        return i > 16 ? (*why = "malformed request line", BZ_EINVAL) : 0;
    if (i == 0 || i > 16 || s[i] != ' ') {
        *why = "not an HTTP/1.x request";
        return BZ_EINVAL;
    }
    size_t t0 = ++i;
    while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f)
        i++;
    if (i - t0 > HTTP_TARGET_MAX ||
        http_query_param_count(s + t0, i - t0) > HTTP_QUERY_PARAMS_MAX) {
        *why = i - t0 > HTTP_TARGET_MAX ? "request target too long" : "too many query parameters";
        return BZ_EURI;
    }
    if (i == n)
        return 0;
    if (i == t0 || s[i] != ' ') {
        *why = "malformed request target";
        return BZ_EINVAL;
    }
    /* The version so far must be a prefix of "HTTP/1.0" or "HTTP/1.1" (then a CR). */
    static const char pat[] = "HTTP/1.x\r";
    for (size_t k = i + 1, j = 0; k < n; k++, j++) {
        bool ok =
            j < sizeof pat - 1 && (pat[j] == 'x' ? (s[k] == '0' || s[k] == '1') : s[k] == pat[j]);
        if (!ok) {
            *why = "not an HTTP/1.x request";
            return BZ_EINVAL;
        }
    }
    return 0;
}

int http_head_check(const char *buf, size_t len, size_t *head_len, const char **why)
{
    size_t pos = 0;
    /* RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request. */
    for (int skip = 0; skip < 4 && pos < len && (buf[pos] == '\r' || buf[pos] == '\n'); skip++) {
        if (buf[pos] == '\r' && (pos + 1 == len || buf[pos + 1] != '\n')) {
            if (pos + 1 == len)
                return 0;
            *why = "not an HTTP/1.x request";
            return BZ_EINVAL;
        }
        pos += buf[pos] == '\r' ? 2 : 1;
    }
    const char *line = buf + pos;
    const char *eol = memchr(line, '\n', len - pos);
    if (!eol) {
        int rv = http_head__line_prefix(line, len - pos, why);
        if (rv == 0 && len >= HTTP_HEAD_MAX) {
            *why = "request line too long";
            return BZ_EURI;
        }
        return rv;
    }
    bool http10 = false;
    int rv = http_head__request_line(line, (size_t)(eol - line), &http10, why);
    if (rv)
        return rv;
    struct http_framing f;
    http_framing_init(&f, http10);
    unsigned fields = 0;
    for (pos = (size_t)(eol - buf) + 1;;) {
        const char *start = buf + pos;
        const char *end = memchr(start, '\n', len - pos);
        if (!end) {
            /* Incomplete: check what is there so far for bytes no field may hold. */
            for (const char *p = start; p < buf + len; p++) {
                if (!http_head__value_byte((unsigned char)*p) && *p != '\r') {
                    *why = "invalid byte in a header field";
                    return BZ_EINVAL;
                }
            }
            if (len >= HTTP_HEAD_MAX) {
                *why = "request header fields too large";
                return BZ_EHEADERS;
            }
            return 0;
        }
        size_t n = (size_t)(end - start);
        if (n && start[n - 1] == '\r')
            n--;
        pos = (size_t)(end - buf) + 1;
        if (pos > HTTP_HEAD_MAX) {
            *why = "request header fields too large";
            return BZ_EHEADERS;
        }
        if (n == 0)
            break; /* the blank line: head complete */
        if (++fields > HTTP_FIELDS_MAX) {
            *why = "too many header fields";
            return BZ_EHEADERS;
        }
        size_t k = 0;
        while (k < n && http_head__tchar((unsigned char)start[k]))
            k++;
        if (k == 0 || k == n || start[k] != ':') {
            /* Also refuses obsolete line folding (a line starting with SP or HTAB). */
            *why = "malformed header field";
            return BZ_EINVAL;
        }
        for (size_t j = k + 1; j < n; j++) {
            if (!http_head__value_byte((unsigned char)start[j])) {
                *why = "invalid byte in a header field";
                return BZ_EINVAL;
            }
        }
        http_framing_add(&f, start, k, start + k + 1, n - k - 1);
    }
    rv = http_framing_verdict(&f, why);
    if (rv)
        return rv;
    *head_len = pos;
    return 1;
}
