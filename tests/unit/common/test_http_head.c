/*
 * test_http_head.c - src/common/http_head.c: the first-request-head classifier
 * and the RFC 9112 framing verdict (issue 12 findings 1, 2, 3 and 10).
 */
#include "unit.h"

#include "error.h"
#include "http_head.h"

struct head_case {
    const char *label;
    const char *bytes;
    size_t len; /* 0: strlen(bytes) */
    int want;   /* 0 more, 1 complete, or a BZ_E* code */
};

static int classify(const char *bytes, size_t len, size_t *head_len, const char **why)
{
    *why = NULL;
    /* Every prefix of an acceptable head is "more", never an error. */
    return http_head_check(bytes, len, head_len, why);
}

static void test_heads_table(void **state)
{
    (void)state;
    static const struct head_case cases[] = {
        {"simple GET", "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 0, 1},
        {"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 0, 1},
        {"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 0, 1},
        {"leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 1},
        /* A lone chunked is well-formed but not accepted: 411 (docs/security.md). */
        {"chunked POST", "POST /o HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
         BZ_ELENGTH},
        {"chunked any case, OWS",
         "POST /o HTTP/1.1\r\nHost: x\r\ntransfer-encoding:  Chunked \r\n\r\n", 0, BZ_ELENGTH},
        {"incomplete head", "GET /health HTTP/1.1\r\nHost: x\r\n", 0, 0},
        {"incomplete line", "GET /heal", 0, 0},
        {"incomplete version", "GET / HTTP/1", 0, 0},
        {"empty", "", 0, 0},
        /* finding 2: non-HTTP bytes, refused on the first byte that shows it */
        {"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11, BZ_EINVAL},
        {"TLS first byte", "\x16", 1, BZ_EINVAL},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, BZ_EINVAL},
        {"HTTP/2 preface prefix", "PRI * HTTP/2", 0, BZ_EINVAL},
        {"garbage", "HELLO WORLD\r\n\r\n", 0, BZ_EINVAL},
        {"NUL bytes", "\0\0\0\0", 4, BZ_EINVAL},
        {"SSH banner", "SSH-2.0-OpenSSH_9.2\r\n", 0, BZ_EINVAL},
        {"HTTP/0.9", "GET /x\r\n\r\n", 0, BZ_EINVAL},
        {"two spaces", "GET  / HTTP/1.1\r\n", 0, BZ_EINVAL},
        {"lowercase version", "GET / http/1.1\r\n", 0, BZ_EINVAL},
        {"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 0, BZ_EINVAL},
        {"field without colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 0, BZ_EINVAL},
        {"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 0, BZ_EINVAL},
        {"NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\0b\r\n\r\n", 52,
         BZ_EINVAL},
        {"CR inside a value", "GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", 0, BZ_EINVAL},
        /* finding 1: smuggling shapes */
        {"CL + TE",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
         BZ_EINVAL},
        {"TE + CL",
         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 0,
         BZ_EINVAL},
        {"two CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 46\r\n\r\n",
         0, BZ_EINVAL},
        {"two equal CL",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0,
         BZ_EINVAL},
        {"TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, BZ_EINVAL},
        {"two TE lines",
         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n",
         0, BZ_EINVAL},
        /* finding 3: malformed Content-Length values */
        {"CL abc", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 0, BZ_EINVAL},
        {"CL -1", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 0, BZ_EINVAL},
        {"CL +2", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n", 0, BZ_EINVAL},
        {"CL 2, 2", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n", 0, BZ_EINVAL},
        {"CL empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 0, BZ_EINVAL},
        {"CL 20 digits",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 0,
         BZ_EINVAL},
        /* finding 2: codings other than a lone chunked are 501 */
        {"TE gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 0,
         BZ_ENOTIMPL},
        {"TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 0,
         BZ_ENOTIMPL},
        {"TE gzip, chunked",
         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, BZ_ENOTIMPL},
        /* finding 10: Host */
        {"two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, BZ_EINVAL},
        {"no Host in 1.1", "GET / HTTP/1.1\r\n\r\n", 0, BZ_EINVAL},
        {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 0, BZ_EINVAL},
        {"HTTP/3.0", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", 0, BZ_EINVAL},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].bytes);
        size_t head_len = 0;
        const char *why;
        int rv = classify(cases[i].bytes, len, &head_len, &why);
        if (rv != cases[i].want)
            fail_msg("%s: got %d (%s), want %d", cases[i].label, rv, why ? why : "-",
                     cases[i].want);
        if (rv < 0 && (!why || !why[0]))
            fail_msg("%s: no reason given", cases[i].label);
        if (rv == 1 && head_len != len)
            fail_msg("%s: head_len %zu of %zu", cases[i].label, head_len, len);
        if (rv == 1) {
            /* Every strict prefix of an acceptable head asks for more bytes. */
            for (size_t n = 0; n < len; n++) {
                int p = classify(cases[i].bytes, n, &head_len, &why);
                if (p != 0)
                    fail_msg("%s: prefix of %zu bytes gave %d (%s)", cases[i].label, n, p,
                             why ? why : "-");
            }
        }
    }
}

/* A body that follows the head is not part of it (libmicrohttpd reads it). */
static void test_head_len_excludes_body(void **state)
{
    (void)state;
    const char *req =
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1";
    size_t head_len = 0;
    const char *why = NULL;
    assert_int_equal(http_head_check(req, strlen(req), &head_len, &why), 1);
    assert_int_equal(head_len, strlen(req) - strlen("{}GET / HTTP/1.1"));
}

static void test_limits(void **state)
{
    (void)state;
    static char buf[HTTP_HEAD_MAX + 4096];
    size_t head_len;
    const char *why;

    /* 65 query parameters: 414, decided while the request line is still incomplete. */
    int n = snprintf(buf, sizeof buf, "GET /x?");
    for (int i = 0; i < HTTP_QUERY_PARAMS_MAX + 1; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%sa%d=1", i ? "&" : "", i);
    assert_int_equal(http_head_check(buf, (size_t)n, &head_len, &why), BZ_EURI);
    /* 64 are fine. */
    n = snprintf(buf, sizeof buf, "GET /x?");
    for (int i = 0; i < HTTP_QUERY_PARAMS_MAX; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%sa%d=1", i ? "&" : "", i);
    n += snprintf(buf + n, sizeof buf - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(http_head_check(buf, (size_t)n, &head_len, &why), 1);

    /* A target over 8 KiB: 414. */
    n = snprintf(buf, sizeof buf, "GET /");
    memset(buf + n, 'a', HTTP_TARGET_MAX + 1);
    n += HTTP_TARGET_MAX + 1;
    assert_int_equal(http_head_check(buf, (size_t)n, &head_len, &why), BZ_EURI);

    /* 101 fields: 431; 100 are fine. */
    for (int fields = HTTP_FIELDS_MAX; fields <= HTTP_FIELDS_MAX + 1; fields++) {
        n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: x\r\n");
        for (int i = 1; i < fields; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "X-H%d: v\r\n", i);
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n");
        assert_int_equal(http_head_check(buf, (size_t)n, &head_len, &why),
                         fields > HTTP_FIELDS_MAX ? BZ_EHEADERS : 1);
    }

    /* A head that never ends: 431 once HTTP_HEAD_MAX bytes are there. */
    n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(buf + n, 'b', HTTP_HEAD_MAX - (size_t)n);
    assert_int_equal(http_head_check(buf, HTTP_HEAD_MAX - 1, &head_len, &why), 0);
    assert_int_equal(http_head_check(buf, HTTP_HEAD_MAX, &head_len, &why), BZ_EHEADERS);
}

static void test_framing_from_fields(void **state)
{
    (void)state;
    struct http_framing f;
    const char *why = NULL;
    http_framing_init(&f, false);
    http_framing_add(&f, "host", 4, "x", 1);
    http_framing_add(&f, "CONTENT-LENGTH", 14, " 12 ", 4);
    assert_int_equal(http_framing_verdict(&f, &why), 0);
    http_framing_add(&f, "Transfer-Encoding", 17, "chunked", 7);
    assert_int_equal(http_framing_verdict(&f, &why), BZ_EINVAL);
    assert_non_null(strstr(why, "Transfer-Encoding"));

    assert_int_equal(http_query_param_count("/x", 2), 0);
    assert_int_equal(http_query_param_count("/x?", 3), 1);
    assert_int_equal(http_query_param_count("/x?a&b&c", 8), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads_table),
        cmocka_unit_test(test_head_len_excludes_body),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_framing_from_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
