/* Unit tests for src/common/util.c: checked parsing, names, addresses, strbuf, secrets. */
#include "unit.h"

#include <pthread.h>
#include <unistd.h>

#include "error.h"
#include "util.h"

/* ---------------------------------------------------------------- parse_u64 */

static void test_parse_u64_table(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t max;
        int rv;
        uint64_t want;
    } cases[] = {
        {"0", 10, 0, 0},
        {"7", 10, 0, 7},
        {"10", 10, 0, 10},
        {"11", 10, BZ_EINVAL, 0},
        {"007", 10, 0, 7},
        {"18446744073709551615", UINT64_MAX, 0, UINT64_MAX},
        {"18446744073709551616", UINT64_MAX, BZ_EINVAL, 0}, /* overflow by one */
        {"99999999999999999999", UINT64_MAX, BZ_EINVAL, 0},
        {"000000000000000000001", UINT64_MAX, BZ_EINVAL, 0}, /* 21 bytes */
        {"", 10, BZ_EINVAL, 0},
        {"-1", 10, BZ_EINVAL, 0},
        {"+1", 10, BZ_EINVAL, 0},
        {" 1", 10, BZ_EINVAL, 0},
        {"1 ", 10, BZ_EINVAL, 0},
        {"1a", 10, BZ_EINVAL, 0},
        {"0x1", 100, BZ_EINVAL, 0},
        {"1e3", 10000, BZ_EINVAL, 0},
        {"3.0", 10, BZ_EINVAL, 0},
        {"65535", 65535, 0, 65535},
        {"65536", 65535, BZ_EINVAL, 0},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        uint64_t out = 12345;
        int rv = parse_u64_str(cases[i].s, cases[i].max, &out);
        if (rv != cases[i].rv)
            fail_msg("parse_u64_str(\"%s\", %llu) = %d, want %d", cases[i].s,
                     (unsigned long long)cases[i].max, rv, cases[i].rv);
        if (rv == 0)
            assert_true(out == cases[i].want);
        else
            assert_true(out == 12345); /* untouched on failure */
    }
}

static void test_parse_u64_len_bounded(void **state)
{
    (void)state;
    uint64_t out = 0;
    /* Only `len` bytes are read: the junk after them does not matter. */
    assert_int_equal(parse_u64("42xyz", 2, 100, &out), 0);
    assert_true(out == 42);
    assert_int_equal(parse_u64("42xyz", 3, 100, &out), BZ_EINVAL);
    assert_int_equal(parse_u64("42", 0, 100, &out), BZ_EINVAL);
    /* A NUL inside the counted bytes is junk too. */
    static const char nul[] = {'4', '\0', '2'};
    assert_int_equal(parse_u64(nul, sizeof nul, 100, &out), BZ_EINVAL);
}

/* ---------------------------------------------------------------- stock names */

static void test_stock_name_valid_table(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"GameStart", true},   {"a", true},        {"A-b_c.9", true},
        {"...", true},         {"", false},        {"Game Start", false},
        {"Game/Start", false}, {"Game%20", false}, {"caf\xc3\xa9", false},
        {"tab\there", false},  {"a:b", false},     {"a,b", false},
        {"a\"b", false},       {"a\\b", false},    {"{}", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++)
        if (stock_name_valid(cases[i].s, strlen(cases[i].s)) != cases[i].ok)
            fail_msg("stock_name_valid(\"%s\") != %d", cases[i].s, cases[i].ok);
}

static void test_stock_name_length_bounds(void **state)
{
    (void)state;
    char name[STOCK_NAME_MAX + 2];
    memset(name, 'x', sizeof name);
    assert_true(stock_name_valid(name, 1));
    assert_true(stock_name_valid(name, STOCK_NAME_MAX));
    assert_false(stock_name_valid(name, STOCK_NAME_MAX + 1));
    assert_false(stock_name_valid(name, 0));
    /* An embedded NUL inside the given length is refused. */
    assert_false(stock_name_valid("ab\0cd", 5));
}

/* ---------------------------------------------------------------- host:port */

static void test_parse_host_port_table(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rv;
        const char *host;
        uint16_t port;
    } cases[] = {
        {"127.0.0.1:8080", 0, "127.0.0.1", 8080},
        {"localhost:1", 0, "localhost", 1},
        {"h:65535", 0, "h", 65535},
        {"[::1]:9001", 0, "[::1]", 9001}, /* the last colon separates the port */
        {"h:65536", BZ_EINVAL, NULL, 0},
        {"h:0", BZ_EINVAL, NULL, 0},
        {"h:", BZ_EINVAL, NULL, 0},
        {":80", BZ_EINVAL, NULL, 0},
        {"h", BZ_EINVAL, NULL, 0},
        {"", BZ_EINVAL, NULL, 0},
        {"h:-1", BZ_EINVAL, NULL, 0},
        {"h:80x", BZ_EINVAL, NULL, 0},
        {"h: 80", BZ_EINVAL, NULL, 0},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        char host[64] = "unchanged";
        uint16_t port = 7;
        int rv = parse_host_port(cases[i].s, host, sizeof host, &port);
        if (rv != cases[i].rv)
            fail_msg("parse_host_port(\"%s\") = %d, want %d", cases[i].s, rv, cases[i].rv);
        if (rv == 0) {
            assert_string_equal(host, cases[i].host);
            assert_int_equal(port, cases[i].port);
        }
    }
}

static void test_parse_host_port_host_too_long(void **state)
{
    (void)state;
    char host[8];
    uint16_t port = 0;
    assert_int_equal(parse_host_port("1234567:80", host, sizeof host, &port), 0);
    assert_string_equal(host, "1234567");
    assert_int_equal(parse_host_port("12345678:80", host, sizeof host, &port), BZ_EINVAL);
}

/* ---------------------------------------------------------------- strbuf */

static void test_strbuf_append_within_max(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b, 10);
    assert_int_equal(strbuf_append(&b, "hello", 5), 0);
    assert_int_equal(strbuf_append(&b, "world", 5), 0); /* exactly max */
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "helloworld");
    assert_true(b.cap <= b.max + 1);
    /* One more byte is too big and leaves the contents unchanged. */
    assert_int_equal(strbuf_append(&b, "!", 1), BZ_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "helloworld");
    /* Appending nothing at the ceiling is fine. */
    assert_int_equal(strbuf_append(&b, "", 0), 0);
    strbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_strbuf_too_big_first_append(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b, 4);
    assert_int_equal(strbuf_append(&b, "12345", 5), BZ_ETOOBIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(strbuf_appendf(&b, "%d", 12345), BZ_ETOOBIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(strbuf_appendf(&b, "%d", 1234), 0);
    assert_string_equal(b.data, "1234");
    strbuf_free(&b);
}

static void test_strbuf_appendf_and_growth(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b, 100000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(strbuf_appendf(&b, "%03d,", i), 0);
    assert_int_equal(b.len, 4000);
    assert_memory_equal(b.data, "000,001,", 8);
    assert_memory_equal(b.data + 3996, "999,", 4);
    assert_int_equal(b.data[b.len], '\0');
    assert_true(b.cap >= b.len + 1);
    assert_true(b.cap <= b.max + 1);

    strbuf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    strbuf_free(&b);
}

static void test_strbuf_steal(void **state)
{
    (void)state;
    struct strbuf b;
    size_t len = 99;
    strbuf_init(&b, 64);
    char *empty = strbuf_steal(&b, &len); /* an empty strbuf still gives "" */
    assert_non_null(empty);
    assert_string_equal(empty, "");
    assert_int_equal(len, 0);
    free(empty);

    assert_int_equal(strbuf_append(&b, "abc", 3), 0);
    char *s = strbuf_steal(&b, &len);
    assert_string_equal(s, "abc");
    assert_int_equal(len, 3);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    /* The strbuf is reusable afterwards, still with its maximum. */
    assert_int_equal(strbuf_append(&b, "xyz", 3), 0);
    assert_string_equal(b.data, "xyz");
    strbuf_free(&b);
}

static void test_strbuf_binary_bytes(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b, 16);
    assert_int_equal(strbuf_append(&b, "a\0b", 3), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 4);
    strbuf_free(&b);
}

/* ---------------------------------------------------------------- secrets, misc */

static void test_secret_equal_table(void **state)
{
    (void)state;
    static const struct {
        const char *a, *b;
        bool eq;
    } cases[] = {
        {"dev-secret", "dev-secret", true},
        {"", "", true},
        {"dev-secret", "dev-secreT", false},
        {"dev-secre", "dev-secret", false},   /* prefix */
        {"dev-secretX", "dev-secret", false}, /* extension */
        {"", "dev-secret", false},
        {"dev-secret", "", false},
        {"xev-secret", "dev-secret", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++)
        if (util_secret_equal(cases[i].a, cases[i].b) != cases[i].eq)
            fail_msg("util_secret_equal(\"%s\", \"%s\") != %d", cases[i].a, cases[i].b,
                     cases[i].eq);
}

static void test_random_hex(void **state)
{
    (void)state;
    char a[33], b[33];
    util_random_hex(a, 16);
    util_random_hex(b, 16);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
}

static void test_xmemdup_terminates(void **state)
{
    (void)state;
    char *p = xmemdup("abcdef", 3);
    assert_string_equal(p, "abc");
    free(p);
    p = xmemdup("", 0);
    assert_string_equal(p, "");
    free(p);
}

static void test_clock_monotonic(void **state)
{
    (void)state;
    uint64_t a = clock_now_us(), b = clock_now_us();
    assert_true(b >= a);
    assert_true(clock_now_ms() >= a / 1000);
    /* The coarse clock is the same clock at the tick: never ahead, at most a few ticks behind
     * (the connection deadlines read it; a second of slack would still be harmless). */
    uint64_t fine0 = clock_now_ms(), coarse = clock_coarse_ms(), fine1 = clock_now_ms();
    assert_true(coarse <= fine1);
    assert_true(coarse + 100 >= fine0);
}

/* A latch set by another thread, before or after the wait begins, ends the wait once. */
struct latch_case {
    struct latch latch;
    int value;
    unsigned delay_us;
};

static void *latch_setter(void *arg)
{
    struct latch_case *c = arg;
    usleep(c->delay_us);
    c->value = 42; /* published by latch_set */
    latch_set(&c->latch);
    return NULL;
}

static void test_latch(void **state)
{
    (void)state;
    for (unsigned delay_us = 0; delay_us <= 20000; delay_us += 20000) {
        for (int i = 0; i < 50; i++) {
            struct latch_case c = {.delay_us = i == 0 ? delay_us : 0};
            latch_init(&c.latch);
            pthread_t t;
            assert_int_equal(pthread_create(&t, NULL, latch_setter, &c), 0);
            latch_wait(&c.latch);
            assert_int_equal(c.value, 42);
            pthread_join(t, NULL);
        }
    }
}

/* util_utf8_copy: valid UTF-8 out, whatever comes in (issue 12 finding 4). */
static void test_utf8_copy(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t dstlen;
        const char *out;
    } cases[] = {
        {"plain", 64, "plain"},
        {"caf\xc3\xa9", 64, "caf\xc3\xa9"},
        {"caf\xc3\xa9", 5, "caf"},        /* the cut drops a character that does not fit */
        {"caf\xc3", 64, "caf?"},          /* already cut mid-character */
        {"\xff\xfe x", 64, "?? x"},       /* never valid */
        {"\xc0\xaf", 64, "??"},           /* overlong '/' */
        {"\xed\xa0\x80", 64, "???"},      /* a surrogate */
        {"\xf4\x90\x80\x80", 64, "????"}, /* past U+10FFFF */
        {"\xf0\x9f\x98\x80!", 64, "\xf0\x9f\x98\x80!"},
        {"\xf0\x9f\x98\x80", 4, ""},
        {"", 1, ""},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        char out[64];
        util_utf8_copy(out, cases[i].dstlen, cases[i].in);
        if (strcmp(out, cases[i].out) != 0)
            fail_msg("case %zu: got \"%s\"", i, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_copy),
        cmocka_unit_test(test_parse_u64_table),
        cmocka_unit_test(test_parse_u64_len_bounded),
        cmocka_unit_test(test_stock_name_valid_table),
        cmocka_unit_test(test_stock_name_length_bounds),
        cmocka_unit_test(test_parse_host_port_table),
        cmocka_unit_test(test_parse_host_port_host_too_long),
        cmocka_unit_test(test_strbuf_append_within_max),
        cmocka_unit_test(test_strbuf_too_big_first_append),
        cmocka_unit_test(test_strbuf_appendf_and_growth),
        cmocka_unit_test(test_strbuf_steal),
        cmocka_unit_test(test_strbuf_binary_bytes),
        cmocka_unit_test(test_secret_equal_table),
        cmocka_unit_test(test_random_hex),
        cmocka_unit_test(test_xmemdup_terminates),
        cmocka_unit_test(test_clock_monotonic),
        cmocka_unit_test(test_latch),
    };
    return cmocka_run_group_tests_name("unit.common.util", tests, NULL, NULL);
}
