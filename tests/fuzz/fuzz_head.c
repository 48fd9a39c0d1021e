/*
 * libFuzzer target: the request-head checks that run before libmicrohttpd sees a
 * connection (http_head_check) and the RFC 9112 framing verdict (http_framing_*).
 * Properties: no crash or out-of-bounds read on any bytes; a verdict is one of the
 * documented ones with a reason; an accepted head is accepted again on its own bytes,
 * with the same length, and every strict prefix of it asks for more bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http_head.h"

static void check_verdict(int rv, const char *why)
{
    if (rv < 0 && rv != BZ_EINVAL && rv != BZ_EURI && rv != BZ_EHEADERS && rv != BZ_ENOTIMPL &&
        rv != BZ_ELENGTH)
        __builtin_trap();
    if (rv < 0 && (!why || !why[0]))
        __builtin_trap();
    if (rv > 1)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so ASan catches any read past the bytes received. */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    size_t head_len = 0;
    const char *why = NULL;
    int rv = http_head_check(buf, size, &head_len, &why);
    check_verdict(rv, why);
    if (rv == 1) {
        if (head_len == 0 || head_len > size || head_len > HTTP_HEAD_MAX)
            __builtin_trap();
        size_t again = 0;
        if (http_head_check(buf, head_len, &again, &why) != 1 || again != head_len)
            __builtin_trap();
        /* A few strict prefixes (all of them would be quadratic). */
        for (size_t n = 0; n < head_len; n += 1 + head_len / 8) {
            size_t ignored;
            if (http_head_check(buf, n, &ignored, &why) != 0)
                __builtin_trap();
        }
    }
    if (rv == 0 && size >= HTTP_HEAD_MAX)
        __builtin_trap(); /* never waits for more than the head limit */

    /* The framing verdict on fields "name:value" split at each newline. */
    struct http_framing f;
    http_framing_init(&f, size && (data[0] & 1));
    const char *p = buf, *end = buf + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon)
            http_framing_add(&f, p, (size_t)(colon - p), colon + 1, (size_t)(line_end - colon - 1));
        p = nl ? nl + 1 : end;
    }
    why = NULL;
    int fv = http_framing_verdict(&f, &why);
    if (fv != 0 && fv != BZ_EINVAL && fv != BZ_ENOTIMPL && fv != BZ_ELENGTH)
        __builtin_trap();
    if (fv && !why)
        __builtin_trap();
    if (f.n_cl > 1 && fv == 0)
        __builtin_trap(); /* two Content-Length fields are never accepted */
    if (f.n_cl && f.n_te && fv == 0)
        __builtin_trap(); /* nor Content-Length with Transfer-Encoding */
    free(buf);
    return 0;
}
