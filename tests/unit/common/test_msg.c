/* Unit tests for src/common/msg.c: the strict decoders of the internal messages. */
#include "unit.h"

#include "error.h"
#include "msg.h"
#include "pagecodec.h"

struct json_case {
    const char *json;
    bool ok;
};

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *obj = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!obj)
        fail_msg("test JSON does not parse: %s (%s)", text, jerr.text);
    return obj;
}

/* ---------------------------------------------------------------- leader notice */

static void test_notice_table(void **state)
{
    (void)state;
    static const struct json_case cases[] = {
        {"{\"leader\":2,\"epoch\":7}", true},
        {"{\"epoch\":1,\"leader\":1000000}", true},
        {"{\"leader\":1,\"epoch\":4611686018427387904}", true}, /* 2^62 */
        {"{\"leader\":1,\"epoch\":4611686018427387905}", false},
        {"{\"leader\":0,\"epoch\":7}", false},
        {"{\"leader\":-1,\"epoch\":7}", false},
        {"{\"leader\":1000001,\"epoch\":7}", false},
        {"{\"leader\":2,\"epoch\":0}", false},
        {"{\"leader\":2,\"epoch\":-7}", false},
        {"{\"leader\":2}", false},
        {"{\"epoch\":7}", false},
        {"{\"leader\":\"2\",\"epoch\":7}", false},
        {"{\"leader\":2,\"epoch\":7.0}", false},
        {"{\"leader\":2,\"epoch\":null}", false},
        {"{\"leader\":2,\"epoch\":7,\"term\":7}", false},
        {"[2,7]", false},
        {"null", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct msg_notice m = {0};
        char errmsg[128] = "";
        int rv = msg_notice_from_json(obj, &m, errmsg, sizeof errmsg);
        json_decref(obj);
        if ((rv == 0) != cases[i].ok)
            fail_msg("notice %s: rv %d (%s)", cases[i].json, rv, errmsg);
        if (rv)
            assert_int_equal(rv, BZ_EINVAL);
    }
}

static void test_notice_round_trip(void **state)
{
    (void)state;
    const struct msg_notice in = {.leader = 3, .epoch = 123456789012ull};
    json_t *obj = msg_notice_to_json(&in);
    struct msg_notice out;
    char errmsg[128];
    assert_int_equal(msg_notice_from_json(obj, &out, errmsg, sizeof errmsg), 0);
    assert_int_equal(out.leader, 3);
    assert_true(out.epoch == 123456789012ull);
    json_decref(obj);
}

/* ---------------------------------------------------------------- invalidation */

static void test_inval_table(void **state)
{
    (void)state;
    static const struct json_case cases[] = {
        {"{\"name\":\"GameStart\",\"version\":12}", true},
        {"{\"version\":0,\"name\":\"a\"}", true},
        {"{\"name\":\"GameStart\"}", false},
        {"{\"version\":12}", false},
        {"{\"name\":\"\",\"version\":12}", false},
        {"{\"name\":\"Game Start\",\"version\":12}", false},
        {"{\"name\":\"G\\u0000\",\"version\":12}", false},
        {"{\"name\":12,\"version\":12}", false},
        {"{\"name\":\"G\",\"version\":-1}", false},
        {"{\"name\":\"G\",\"version\":\"12\"}", false},
        {"{\"name\":\"G\",\"version\":1.5}", false},
        {"{\"name\":\"G\",\"version\":12,\"x\":0}", false},
        {"[]", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct msg_inval m = {0};
        char errmsg[128] = "";
        int rv = msg_inval_from_json(obj, &m, errmsg, sizeof errmsg);
        json_decref(obj);
        if ((rv == 0) != cases[i].ok)
            fail_msg("inval %s: rv %d (%s)", cases[i].json, rv, errmsg);
    }
}

static void test_inval_round_trip(void **state)
{
    (void)state;
    struct msg_inval in = {.name = "RottenFishCo", .version = 99};
    json_t *obj = msg_inval_to_json(&in);
    struct msg_inval out;
    char errmsg[128];
    assert_int_equal(msg_inval_from_json(obj, &out, errmsg, sizeof errmsg), 0);
    assert_string_equal(out.name, "RottenFishCo");
    assert_true(out.version == 99);
    json_decref(obj);
}

/* The invalidation stream: {"stream","seq","stocks":[...]} with at most MSG_INVAL_BATCH_MAX. */
static void test_inval_batch_table(void **state)
{
    (void)state;
    static const struct json_case cases[] = {
        {"{\"stream\":7,\"seq\":0,\"stocks\":[]}", true}, /* a heartbeat */
        {"{\"stream\":7,\"seq\":3,\"stocks\":[{\"name\":\"A\",\"version\":1},"
         "{\"name\":\"B\",\"version\":2}]}",
         true},
        {"{\"stream\":7,\"seq\":3}", false},
        {"{\"seq\":3,\"stocks\":[]}", false},
        {"{\"stream\":7,\"stocks\":[]}", false},
        {"{\"stream\":-7,\"seq\":3,\"stocks\":[]}", false},
        {"{\"stream\":7,\"seq\":-3,\"stocks\":[]}", false},
        {"{\"stream\":7,\"seq\":1.5,\"stocks\":[]}", false},
        {"{\"stream\":\"7\",\"seq\":3,\"stocks\":[]}", false},
        {"{\"stream\":7,\"seq\":3,\"stocks\":{}}", false},
        {"{\"stream\":7,\"seq\":3,\"stocks\":[1]}", false},
        {"{\"stream\":7,\"seq\":3,\"stocks\":[{\"name\":\"A\"}]}", false},
        {"{\"stream\":7,\"seq\":3,\"stocks\":[{\"name\":\"bad name\",\"version\":1}]}", false},
        {"{\"stream\":7,\"seq\":3,\"stocks\":[],\"x\":1}", false},
        {"{\"name\":\"A\",\"version\":1}", false}, /* the old single-stock message */
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct msg_inval_batch m;
        char errmsg[128] = "";
        int rv = msg_inval_batch_from_json(obj, &m, errmsg, sizeof errmsg);
        json_decref(obj);
        if ((rv == 0) != cases[i].ok)
            fail_msg("batch %s: rv %d (%s)", cases[i].json, rv, errmsg);
    }
}

static void test_inval_batch_bounds_and_round_trip(void **state)
{
    (void)state;
    static struct msg_inval_batch in, out;
    in.stream = (uint64_t)INT64_MAX;
    in.seq = 41;
    in.n = MSG_INVAL_BATCH_MAX;
    for (size_t i = 0; i < in.n; i++) {
        snprintf(in.stocks[i].name, sizeof in.stocks[i].name, "S%zu", i);
        in.stocks[i].version = i;
    }
    json_t *obj = msg_inval_batch_to_json(&in);
    char errmsg[128];
    assert_int_equal(msg_inval_batch_from_json(obj, &out, errmsg, sizeof errmsg), 0);
    assert_true(out.stream == in.stream && out.seq == 41 && out.n == MSG_INVAL_BATCH_MAX);
    assert_string_equal(out.stocks[MSG_INVAL_BATCH_MAX - 1].name,
                        in.stocks[MSG_INVAL_BATCH_MAX - 1].name);
    /* One more than the bound is refused, not truncated. */
    json_array_append_new(json_object_get(obj, "stocks"),
                          json_pack("{s:s,s:i}", "name", "Extra", "version", 1));
    assert_int_equal(msg_inval_batch_from_json(obj, &out, errmsg, sizeof errmsg), BZ_EINVAL);
    json_decref(obj);
}

/* ---------------------------------------------------------------- log entries (binary) */

static struct order entry(int64_t number, uint64_t epoch)
{
    struct order o = {.number = number, .epoch = epoch};
    snprintf(o.trade.request_id, sizeof o.trade.request_id, "r:%lld", (long long)number);
    snprintf(o.trade.name, sizeof o.trade.name, "GameStart");
    o.trade.type = number % 2 ? TRADE_SELL : TRADE_BUY;
    o.trade.quantity = 3;
    return o;
}

/* n entries from `first`, the epoch growing by one every `run` entries from `epoch`. */
static struct order *entries_new(int64_t first, size_t n, uint64_t epoch, size_t run)
{
    struct order *e = xcalloc(n ? n : 1, sizeof *e);
    for (size_t i = 0; i < n; i++)
        e[i] = entry(first + (int64_t)i, epoch + i / run);
    return e;
}

static void test_log_page_round_trip(void **state)
{
    (void)state;
    static const struct {
        int64_t first;
        size_t n, run; /* entries per epoch */
    } pages[] = {
        {0, 0, 1}, {0, 1, 1}, {5, 10, 3}, {0, MSG_LOG_PAGE_MAX, 1001}, {7, 2500, 1}, {1, 64, 64},
    };
    for (size_t i = 0; i < UNIT_COUNT(pages); i++) {
        struct order *in = entries_new(pages[i].first, pages[i].n, 2, pages[i].run), *out = NULL;
        char *bytes, errmsg[128] = "";
        size_t len, n = 99;
        assert_int_equal(msg_log_page_encode(in, pages[i].n, &bytes, &len), 0);
        int rv = msg_log_page_decode(bytes, len, &out, &n, errmsg, sizeof errmsg);
        if (rv)
            fail_msg("page %zu: %s", i, errmsg);
        assert_non_null(out);
        assert_int_equal(n, pages[i].n);
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(out[k].number, in[k].number);
            assert_true(out[k].epoch == in[k].epoch);
            assert_true(trade_same(&out[k].trade, &in[k].trade));
        }
        free(out);
        free(bytes);
        free(in);
    }
}

static void test_log_page_refused(void **state)
{
    (void)state;
    struct order *e = entries_new(0, MSG_LOG_PAGE_MAX + 1, 1, 5000);
    char *bytes, errmsg[128] = "";
    size_t len, n;
    struct order *out;
    /* Encoders refuse what decoders would: too many, epoch 0, a gap. */
    assert_int_equal(msg_log_page_encode(e, MSG_LOG_PAGE_MAX + 1, &bytes, &len), BZ_EINVAL);
    e[1].epoch = 0;
    assert_int_equal(msg_log_page_encode(e, 3, &bytes, &len), BZ_EINVAL);
    e[1].epoch = 1;
    e[2].number = 5;
    assert_int_equal(msg_log_page_encode(e, 3, &bytes, &len), BZ_EINVAL);
    free(e);
    /* A slice of MSG_LOG_PAGE_MAX + 1 entries is refused on decode; so is an epoch 0 page. */
    e = entries_new(0, MSG_LOG_PAGE_MAX + 1, 1, 5000);
    len = pagecodec_slice_size(e, MSG_LOG_PAGE_MAX + 1);
    bytes = xmalloc(len);
    assert_int_equal(pagecodec_slice_encode(e, MSG_LOG_PAGE_MAX + 1, bytes, len), 0);
    assert_int_equal(msg_log_page_decode(bytes, len, &out, &n, errmsg, sizeof errmsg), BZ_EINVAL);
    free(bytes);
    e[0].epoch = 0;
    len = pagecodec_slice_size(e, 1);
    bytes = xmalloc(len);
    assert_int_equal(pagecodec_slice_encode(e, 1, bytes, len), 0);
    assert_int_equal(msg_log_page_decode(bytes, len, &out, &n, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "epoch"));
    free(bytes);
    free(e);
    /* Not a slice at all (a JSON body). */
    assert_int_equal(msg_log_page_decode("{\"data\":{}}", 11, &out, &n, errmsg, sizeof errmsg),
                     BZ_EINVAL);
}

/* ---------------------------------------------------------------- append (binary) */

struct append_case {
    const char *what;
    int64_t epoch, leader, prev, prev_epoch, start_last;
    int64_t first; /* number of the first entry */
    size_t n;
    uint64_t entry_epoch;
    bool ok;
};

/* The bytes of an append as a (possibly hostile) peer may send them: no encoder checks. */
static uint8_t *append_raw(const struct append_case *c, size_t *len)
{
    struct order *e = entries_new(c->first, c->n, c->entry_epoch, SIZE_MAX);
    size_t slice = pagecodec_slice_size(e, c->n);
    uint8_t *b = xmalloc(40 + slice);
    memcpy(b, "BZA1", 4);
    uint8_t *p = pagecodec_put_u32(b + 4, (uint32_t)c->leader);
    p = pagecodec_put_u64(p, (uint64_t)c->epoch);
    p = pagecodec_put_u64(p, (uint64_t)c->prev);
    p = pagecodec_put_u64(p, (uint64_t)c->prev_epoch);
    p = pagecodec_put_u64(p, (uint64_t)c->start_last);
    assert_int_equal(pagecodec_slice_encode(e, c->n, p, slice), 0);
    free(e);
    *len = 40 + slice;
    return b;
}

static void test_append_table(void **state)
{
    (void)state;
    static const struct append_case cases[] = {
        {"heartbeat at the start", 1, 1, -1, 0, -1, 0, 0, 1, true},
        {"first entries", 7, 2, -1, 0, -1, 0, 3, 7, true},
        {"entries after prev", 7, 2, 41, 6, 40, 42, 5, 6, true},
        {"entries of the current epoch", 7, 2, 41, 7, 40, 42, 5, 7, true},
        {"a full batch", 7, 2, 99, 7, 40, 100, MSG_MAX_ENTRIES, 7, true},
        {"the largest epoch and leader", INT64_C(1) << 62, 1000000, -1, 0, -1, 0, 1, 1, true},
        {"too many entries", 7, 2, 99, 7, 40, 100, MSG_MAX_ENTRIES + 1, 7, false},
        {"first entry is not prev+1 (gap)", 7, 2, 41, 6, 40, 43, 2, 7, false},
        {"first entry is not prev+1 (overlap)", 7, 2, 41, 6, 40, 41, 2, 7, false},
        {"entries from a future epoch", 7, 2, 41, 6, 40, 42, 2, 8, false},
        {"entries of epoch 0", 7, 2, 41, 6, 40, 42, 2, 0, false},
        {"epoch 0", 0, 2, -1, 0, -1, 0, 0, 1, false},
        {"epoch past 2^62", (INT64_C(1) << 62) + 1, 2, -1, 0, -1, 0, 0, 1, false},
        {"leader 0", 7, 0, -1, 0, -1, 0, 0, 1, false},
        {"leader 1000001", 7, 1000001, -1, 0, -1, 0, 0, 1, false},
        {"prev -2", 7, 2, -2, 0, -1, 0, 0, 1, false},
        {"prev past 2^62", 7, 2, (INT64_C(1) << 62) + 1, 0, -1, 0, 0, 1, false},
        {"start_last -2", 7, 2, -1, 0, -2, 0, 0, 1, false},
        {"negative prev_epoch", 7, 2, -1, -1, -1, 0, 0, 1, false},
        {"prev_epoch without prev", 7, 2, -1, 3, -1, 0, 0, 1, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        const struct append_case *c = &cases[i];
        size_t len;
        uint8_t *bytes = append_raw(c, &len);
        struct msg_append m;
        char errmsg[128] = "";
        int rv = msg_append_decode(bytes, len, &m, errmsg, sizeof errmsg);
        free(bytes);
        if ((rv == 0) != c->ok)
            fail_msg("append '%s': rv %d (%s)", c->what, rv, errmsg);
        if (rv != 0) {
            assert_int_equal(rv, BZ_EINVAL);
            assert_true(errmsg[0] != '\0');
            assert_null(m.entries);
            continue;
        }
        assert_true(m.epoch == (uint64_t)c->epoch);
        assert_int_equal(m.leader, c->leader);
        assert_int_equal(m.prev, c->prev);
        assert_true(m.prev_epoch == (uint64_t)c->prev_epoch);
        assert_int_equal(m.start_last, c->start_last);
        assert_int_equal(m.n, c->n);
        assert_non_null(m.entries);
        for (size_t k = 0; k < m.n; k++) {
            assert_int_equal(m.entries[k].number, c->first + (int64_t)k);
            assert_true(m.entries[k].epoch == c->entry_epoch);
        }
        /* What decodes encodes to the same bytes. */
        char *again;
        size_t again_len;
        assert_int_equal(msg_append_encode(&m, &again, &again_len), 0);
        bytes = append_raw(c, &len);
        assert_int_equal(again_len, len);
        assert_memory_equal(again, bytes, len);
        free(again);
        free(bytes);
        msg_append_free(&m);
        assert_null(m.entries);
        assert_int_equal(m.n, 0);
    }
}

static struct msg_append append_sample(struct order *entries)
{
    /* Three epochs in one append (a lagging follower's catch-up through the pipeline). */
    for (int i = 0; i < 5; i++)
        entries[i] = entry(10 + i, (uint64_t)(3 + i / 2));
    return (struct msg_append){.epoch = 5,
                               .leader = 3,
                               .prev = 9,
                               .prev_epoch = 3,
                               .start_last = 8,
                               .entries = entries,
                               .n = 5};
}

static void test_append_round_trip(void **state)
{
    (void)state;
    struct order entries[5];
    const struct msg_append in = append_sample(entries);
    char *bytes, errmsg[128] = "";
    size_t len;
    assert_int_equal(msg_append_encode(&in, &bytes, &len), 0);
    struct msg_append out;
    assert_int_equal(msg_append_decode(bytes, len, &out, errmsg, sizeof errmsg), 0);
    free(bytes);
    assert_true(out.epoch == 5);
    assert_int_equal(out.leader, 3);
    assert_int_equal(out.prev, 9);
    assert_true(out.prev_epoch == 3);
    assert_int_equal(out.start_last, 8);
    assert_int_equal(out.n, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(out.entries[i].number, entries[i].number);
        assert_true(out.entries[i].epoch == entries[i].epoch);
        assert_true(trade_same(&out.entries[i].trade, &entries[i].trade));
    }
    msg_append_free(&out);
    /* The encoder refuses what the decoder would. */
    struct msg_append bad = in;
    bad.epoch = 4; /* entries of epoch 5 from a leader of 4 */
    assert_int_equal(msg_append_encode(&bad, &bytes, &len), BZ_EINVAL);
    bad = in;
    bad.prev = 10;
    assert_int_equal(msg_append_encode(&bad, &bytes, &len), BZ_EINVAL);
    bad = in;
    bad.leader = 0;
    assert_int_equal(msg_append_encode(&bad, &bytes, &len), BZ_EINVAL);
}

/*
 * A decoder under test: returns its rv; on 0 it has checked what it decoded (failing the
 * test if that is not well formed) and freed it.
 */
typedef int (*damage_decode_fn)(const char *buf, size_t len);

/*
 * Every truncation and every extension (up to 16 bytes) of bytes[0..n) is refused, and each
 * single-bit flip is refused or decodes to something well formed; nothing reads past the
 * buffer (ASan) or leaks. bytes are left as they were.
 */
static void assert_damage_refused(const char *what, char *bytes, size_t n, damage_decode_fn decode)
{
    for (size_t cut = 0; cut < n; cut++) {
        char *copy = xmalloc(cut ? cut : 1); /* exactly `cut` bytes, for ASan */
        memcpy(copy, bytes, cut);
        if (decode(copy, cut) != BZ_EINVAL)
            fail_msg("%s cut to %zu of %zu bytes accepted", what, cut, n);
        free(copy);
    }
    for (size_t extra = 1; extra <= 16; extra++) {
        char *longer = xcalloc(n + extra, 1);
        memcpy(longer, bytes, n);
        if (decode(longer, n + extra) != BZ_EINVAL)
            fail_msg("%s with %zu trailing bytes accepted", what, extra);
        free(longer);
    }
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            bytes[i] ^= (char)(1 << bit);
            decode(bytes, n);
            bytes[i] ^= (char)(1 << bit);
        }
    }
}

static int append_decode_checked(const char *buf, size_t len)
{
    struct msg_append out;
    char errmsg[160];
    int rv = msg_append_decode(buf, len, &out, errmsg, sizeof errmsg);
    if (rv == 0) {
        for (size_t k = 0; k < out.n; k++)
            assert_true(out.entries[k].number == out.prev + 1 + (int64_t)k &&
                        out.entries[k].epoch >= 1 && out.entries[k].epoch <= out.epoch);
        msg_append_free(&out);
    }
    return rv;
}

/* Every truncation, every extension and a flip of every byte is refused or decodes to a
 * well-formed append; nothing reads past the buffer (ASan) or leaks. */
static void test_append_damaged(void **state)
{
    (void)state;
    struct order entries[5];
    const struct msg_append in = append_sample(entries);
    char *bytes, errmsg[128];
    size_t len;
    assert_int_equal(msg_append_encode(&in, &bytes, &len), 0);
    struct msg_append out;
    assert_damage_refused("append", bytes, len, append_decode_checked);
    /* The entry count claims more than the bytes hold. */
    pagecodec_put_u32((uint8_t *)bytes + 40 + 4, 1000);
    assert_int_equal(msg_append_decode(bytes, len, &out, errmsg, sizeof errmsg), BZ_EINVAL);
    free(bytes);
    /* A JSON append (the old wire format) is not an append. */
    const char *json = "{\"epoch\":7,\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1,"
                       "\"entries\":[]}";
    assert_int_equal(msg_append_decode(json, strlen(json), &out, errmsg, sizeof errmsg), BZ_EINVAL);
}

/* ---------------------------------------------------------------- execute (binary) */

/* The bytes of a batch as a (possibly hostile) leader may send them: no encoder checks. */
static uint8_t *exec_raw(int64_t from, int64_t committed, uint32_t claimed, const struct order *e,
                         size_t n, size_t *len)
{
    size_t size = 24;
    for (size_t i = 0; i < n; i++)
        size += pagecodec_entry_size(&e[i].trade);
    uint8_t *b = xmalloc(size), *p = b;
    memcpy(p, "BZX1", 4);
    p = pagecodec_put_u64(p + 4, (uint64_t)from);
    p = pagecodec_put_u64(p, (uint64_t)committed);
    p = pagecodec_put_u32(p, claimed);
    for (size_t i = 0; i < n; i++)
        p = pagecodec_entry_put(p, &e[i].trade);
    *len = size;
    return b;
}

static void test_exec_table(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        int64_t from, committed;
        uint32_t claimed; /* the count in the header */
        size_t n;         /* trades written */
        bool ok;
    } cases[] = {
        {"an empty batch", 0, 0, 0, 0, true},
        {"three trades", 5, 3, 3, 3, true},
        {"MSG_MAX_ENTRIES trades", 1, 0, MSG_MAX_ENTRIES, MSG_MAX_ENTRIES, true},
        {"more than MSG_MAX_ENTRIES", 1, 0, MSG_MAX_ENTRIES + 1, MSG_MAX_ENTRIES + 1, false},
        {"negative from", -1, 0, 0, 0, false},
        {"negative committed", 0, -1, 0, 0, false},
        {"from past 2^62", (INT64_C(1) << 62) + 1, 0, 0, 0, false},
        {"a count above the trades", 0, 0, 3, 2, false},
        {"a count below the trades", 0, 0, 1, 2, false},
        {"a count of 2^32-1", 0, 0, UINT32_MAX, 1, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct order *e = entries_new(0, cases[i].n, 1, SIZE_MAX);
        size_t len;
        uint8_t *bytes =
            exec_raw(cases[i].from, cases[i].committed, cases[i].claimed, e, cases[i].n, &len);
        struct msg_exec m;
        char errmsg[160] = "", *again;
        size_t again_len;
        int rv = msg_exec_decode(bytes, len, &m, errmsg, sizeof errmsg);
        if ((rv == 0) != cases[i].ok)
            fail_msg("case %s: rv %d (%s)", cases[i].what, rv, errmsg);
        if (rv == 0) {
            assert_int_equal(m.n, cases[i].n);
            assert_int_equal(m.from, cases[i].from);
            assert_int_equal(m.committed, cases[i].committed);
            for (size_t k = 0; k < m.n; k++)
                assert_memory_equal(&m.trades[k], &e[k].trade, sizeof m.trades[k]);
            /* The encoder writes exactly these bytes back. */
            assert_int_equal(msg_exec_encode(&m, &again, &again_len), 0);
            assert_int_equal(again_len, len);
            assert_memory_equal(again, bytes, len);
            free(again);
            msg_exec_free(&m);
        } else {
            assert_true(errmsg[0] != '\0');
            assert_null(m.trades);
            /* What the decoder refuses, the encoder refuses too (a cursor or count out of range).
             */
            if (cases[i].claimed == cases[i].n) {
                struct msg_exec bad = {.from = cases[i].from,
                                       .committed = cases[i].committed,
                                       .trades = NULL,
                                       .n = cases[i].n};
                struct trade *t = xcalloc(cases[i].n ? cases[i].n : 1, sizeof *t);
                for (size_t k = 0; k < cases[i].n; k++)
                    t[k] = e[k].trade;
                bad.trades = t;
                assert_int_equal(msg_exec_encode(&bad, &again, &again_len), BZ_EINVAL);
                free(t);
            }
        }
        free(bytes);
        free(e);
    }
    /* A trade without its request id cannot be sent. */
    struct trade t = {.name = "A", .type = TRADE_BUY, .quantity = 1};
    struct msg_exec m = {.from = 0, .committed = 0, .trades = &t, .n = 1};
    char *bytes;
    size_t len;
    assert_int_equal(msg_exec_encode(&m, &bytes, &len), BZ_EINVAL);
    /* The old JSON body is not a batch. */
    const char *json = "{\"from\":0,\"committed\":0,\"trades\":[]}";
    char errmsg[160];
    struct msg_exec out;
    assert_int_equal(msg_exec_decode(json, strlen(json), &out, errmsg, sizeof errmsg), BZ_EINVAL);
}

/* A reply to a batch of 3 from cursor 7: a number, a refusal, a number; two journal entries. */
static struct msg_exec_reply exec_reply_sample(struct msg_exec_result results[3],
                                               struct order journal[2])
{
    memset(results, 0, 3 * sizeof *results);
    results[0].code = 200;
    results[0].number = 7;
    results[1].code = 409;
    results[1].number = -1;
    snprintf(results[1].message, sizeof results[1].message, "not enough shares");
    results[2].code = 200;
    results[2].number = 8;
    journal[0] = entry(7, 0);
    journal[1] = entry(8, 0);
    return (struct msg_exec_reply){
        .results = results, .nresults = 3, .journal = journal, .njournal = 2, .end = 9};
}

static void test_exec_reply(void **state)
{
    (void)state;
    struct msg_exec_result results[3];
    struct order journal[2];
    struct msg_exec_reply in = exec_reply_sample(results, journal), out;
    char *bytes, errmsg[160] = "";
    size_t len;
    assert_int_equal(msg_exec_reply_encode(&in, &bytes, &len), 0);
    assert_int_equal(msg_exec_reply_decode(bytes, len, 3, 7, &out, errmsg, sizeof errmsg), 0);
    assert_int_equal(out.nresults, 3);
    assert_int_equal(out.njournal, 2);
    assert_int_equal(out.end, 9);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(out.results[i].code, results[i].code);
        assert_int_equal(out.results[i].number, results[i].number);
        assert_string_equal(out.results[i].message, results[i].message);
    }
    for (size_t i = 0; i < 2; i++)
        assert_memory_equal(&out.journal[i], &journal[i], sizeof journal[i]);
    msg_exec_reply_free(&out);
    /* The decoder checks the reply against the batch it answers. */
    assert_int_equal(msg_exec_reply_decode(bytes, len, 2, 7, &out, errmsg, sizeof errmsg),
                     BZ_EINVAL); /* results must match the trades */
    assert_int_equal(msg_exec_reply_decode(bytes, len, 3, 6, &out, errmsg, sizeof errmsg),
                     BZ_EINVAL); /* the journal must start at the cursor */
    assert_non_null(strstr(errmsg, "numbered"));
    free(bytes);

    /* An empty journal with more to come; an end before the cursor is refused. */
    struct msg_exec_reply empty = {.results = results, .nresults = 0, .end = 9};
    assert_int_equal(msg_exec_reply_encode(&empty, &bytes, &len), 0);
    assert_int_equal(msg_exec_reply_decode(bytes, len, 0, 3, &out, errmsg, sizeof errmsg), 0);
    assert_int_equal(out.end, 9);
    msg_exec_reply_free(&out);
    assert_int_equal(msg_exec_reply_decode(bytes, len, 0, 10, &out, errmsg, sizeof errmsg),
                     BZ_EINVAL);
    assert_non_null(strstr(errmsg, "end"));
    free(bytes);

    /* What the decoder would refuse is never encoded. */
    struct msg_exec_reply bad = in;
    journal[0].epoch = 1; /* journal entries carry no epoch */
    assert_int_equal(msg_exec_reply_encode(&bad, &bytes, &len), BZ_EINVAL);
    journal[0].epoch = 0;
    results[0].code = 99;
    assert_int_equal(msg_exec_reply_encode(&bad, &bytes, &len), BZ_EINVAL);
    results[0].code = 200;
    results[0].number = -1; /* a number for every executed trade */
    assert_int_equal(msg_exec_reply_encode(&bad, &bytes, &len), BZ_EINVAL);
    results[0].number = 7;
    bad.end = 8; /* before the journal's last entry */
    assert_int_equal(msg_exec_reply_encode(&bad, &bytes, &len), BZ_EINVAL);
}

static int exec_decode_checked(const char *buf, size_t len)
{
    struct msg_exec m;
    char errmsg[160];
    int rv = msg_exec_decode(buf, len, &m, errmsg, sizeof errmsg);
    if (rv == 0) {
        assert_true(m.n == 3 && m.from >= 0 && m.committed >= 0);
        msg_exec_free(&m);
    }
    return rv;
}

/* A reply to a batch of 3 trades from cursor 7. */
static int exec_reply_decode_checked(const char *buf, size_t len)
{
    struct msg_exec_reply r;
    char errmsg[160];
    int rv = msg_exec_reply_decode(buf, len, 3, 7, &r, errmsg, sizeof errmsg);
    if (rv == 0) {
        assert_true(r.nresults == 3 && r.end >= 7 + (int64_t)r.njournal);
        for (size_t k = 0; k < r.njournal; k++)
            assert_true(r.journal[k].number == 7 + (int64_t)k && r.journal[k].epoch == 0);
        for (size_t k = 0; k < 3; k++)
            assert_true(r.results[k].code >= 200 && r.results[k].code <= 599);
        msg_exec_reply_free(&r);
    }
    return rv;
}

/* Every truncation, every extension and a flip of every byte of a batch and of a reply is
 * refused or decodes to a well-formed message. */
static void test_exec_damaged(void **state)
{
    (void)state;
    struct order *e = entries_new(0, 3, 1, SIZE_MAX);
    struct trade trades[3] = {e[0].trade, e[1].trade, e[2].trade};
    free(e);
    struct msg_exec batch = {.from = 7, .committed = 5, .trades = trades, .n = 3};
    struct msg_exec_result results[3];
    struct order journal[2];
    struct msg_exec_reply reply = exec_reply_sample(results, journal);
    char *bytes;
    size_t len;
    assert_int_equal(msg_exec_encode(&batch, &bytes, &len), 0);
    assert_damage_refused("batch", bytes, len, exec_decode_checked);
    free(bytes);
    assert_int_equal(msg_exec_reply_encode(&reply, &bytes, &len), 0);
    assert_damage_refused("reply", bytes, len, exec_reply_decode_checked);
    free(bytes);
}

/* ---------------------------------------------------------------- lookup batches (binary) */

/* A lookup batch's bytes as a peer might send them: `claimed` names, then names[0..n). */
static size_t lookups_raw(uint32_t claimed, const char *const *names, size_t n, uint8_t *b)
{
    memcpy(b, "BZL1", 4);
    uint8_t *p = pagecodec_put_u32(b + 4, claimed);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        *p++ = (uint8_t)len;
        memcpy(p, names[i], len);
        p += len;
    }
    return (size_t)(p - b);
}

static void test_lookups_table(void **state)
{
    (void)state;
    static const char long_name[] =
        "A123456789012345678901234567890123456789012345678901234567890123";
    static const char too_long[] =
        "A1234567890123456789012345678901234567890123456789012345678901234";
    static const struct {
        uint32_t claimed;
        const char *names[3];
        size_t n;
        bool valid;
    } cases[] = {
        {1, {"GameStart"}, 1, true},
        {3, {"GameStart", "a.b-c_d", long_name}, 3, true},
        {0, {NULL}, 0, false},                 /* nothing to look up */
        {2, {"GameStart"}, 1, false},          /* fewer names than claimed */
        {1, {"GameStart", "Other"}, 2, false}, /* bytes past the names */
        {1, {""}, 1, false},                   /* an empty name */
        {1, {too_long}, 1, false},             /* 65 characters */
        {1, {"Game Start"}, 1, false},         /* not a stock name */
        {1, {"../etc"}, 1, false},
        {MSG_LOOKUP_BATCH_MAX + 1, {"GameStart"}, 1, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        uint8_t b[MSG_LOOKUPS_BYTES_MAX + 256];
        size_t len = lookups_raw(cases[i].claimed, cases[i].names, cases[i].n, b);
        struct msg_lookups m;
        char errmsg[160] = "";
        int rv = msg_lookups_decode(b, len, &m, errmsg, sizeof errmsg);
        if ((rv == 0) != cases[i].valid)
            fail_msg("case %zu: rv %d (%s)", i, rv, errmsg);
        if (rv == 0) {
            assert_int_equal(m.n, cases[i].n);
            const char *names[3];
            for (size_t k = 0; k < m.n; k++) {
                assert_string_equal(m.names[k], cases[i].names[k]);
                names[k] = m.names[k];
            }
            struct strbuf again;
            strbuf_init(&again, MSG_LOOKUPS_BYTES_MAX);
            assert_int_equal(msg_lookups_encode(names, m.n, &again), 0);
            assert_int_equal(again.len, len);
            assert_memory_equal(again.data, b, len);
            strbuf_free(&again);
        } else {
            assert_int_equal(m.n, 0);
            assert_true(errmsg[0] != '\0');
            /* What the decoder refuses is never encoded. */
            if (cases[i].n == cases[i].claimed) {
                struct strbuf out;
                strbuf_init(&out, MSG_LOOKUPS_BYTES_MAX);
                assert_int_equal(msg_lookups_encode(cases[i].names, cases[i].n, &out), BZ_EINVAL);
                assert_int_equal(out.len, 0);
                strbuf_free(&out);
            }
        }
    }
    /* The most names a batch holds, each as long as a name may be: within the bound. */
    const char *names[MSG_LOOKUP_BATCH_MAX + 1];
    for (size_t k = 0; k <= MSG_LOOKUP_BATCH_MAX; k++)
        names[k] = long_name;
    struct strbuf out;
    strbuf_init(&out, MSG_LOOKUPS_BYTES_MAX);
    assert_int_equal(msg_lookups_encode(names, MSG_LOOKUP_BATCH_MAX, &out), 0);
    assert_int_equal(out.len, MSG_LOOKUPS_BYTES_MAX);
    strbuf_reset(&out);
    assert_int_equal(msg_lookups_encode(names, MSG_LOOKUP_BATCH_MAX + 1, &out), BZ_EINVAL);
    assert_int_equal(msg_lookups_encode(names, 0, &out), BZ_EINVAL);
    strbuf_free(&out);
}

/* A reply of three answers: a stock, a refusal and an empty body. */
static void lookup_reply_sample(struct strbuf *out)
{
    static const char stock[] = "{\"data\":{\"name\":\"GameStart\",\"version\":3}}",
                      missing[] = "{\"error\":{\"code\":404,\"message\":\"stock not found\"}}";
    msg_lookup_reply_start(out, 3);
    assert_int_equal(msg_lookup_reply_put(out, 200, stock, sizeof stock - 1), 0);
    assert_int_equal(msg_lookup_reply_put(out, 404, missing, sizeof missing - 1), 0);
    assert_int_equal(msg_lookup_reply_put(out, 503, "", 0), 0);
}

static void test_lookup_reply(void **state)
{
    (void)state;
    struct strbuf b;
    strbuf_init(&b, MSG_LOOKUP_REPLY_BYTES_MAX);
    lookup_reply_sample(&b);
    struct msg_lookup_result r[MSG_LOOKUP_BATCH_MAX];
    char errmsg[160];
    assert_int_equal(msg_lookup_reply_decode(b.data, b.len, 3, r, errmsg, sizeof errmsg), 0);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[1].status, 404);
    assert_int_equal(r[2].status, 503);
    assert_int_equal(r[2].len, 0);
    assert_memory_equal(r[0].body, "{\"data\":{\"name\":\"GameStart\"", 25);
    assert_non_null(memmem(r[1].body, r[1].len, "stock not found", 15));
    /* The answers must be exactly as many as the names asked. */
    assert_int_equal(msg_lookup_reply_decode(b.data, b.len, 2, r, errmsg, sizeof errmsg),
                     BZ_EINVAL);
    assert_non_null(strstr(errmsg, "3 answers for 2 names"));
    assert_int_equal(msg_lookup_reply_decode(b.data, b.len, 4, r, errmsg, sizeof errmsg),
                     BZ_EINVAL);
    /* The encoder refuses what the decoder would. */
    size_t before = b.len;
    char big[MSG_LOOKUP_BODY_MAX + 1] = {0};
    assert_int_equal(msg_lookup_reply_put(&b, 199, "x", 1), BZ_EINVAL);
    assert_int_equal(msg_lookup_reply_put(&b, 600, "x", 1), BZ_EINVAL);
    assert_int_equal(msg_lookup_reply_put(&b, 200, big, sizeof big), BZ_EINVAL);
    assert_int_equal(b.len, before);
    assert_int_equal(msg_lookup_reply_put(&b, 200, big, sizeof big - 1), 0);
    strbuf_free(&b);
    /* A JSON body (an error answering the whole call) is not a reply. */
    const char *json = "{\"error\":{\"code\":401,\"message\":\"unauthorized\"}}";
    assert_int_equal(msg_lookup_reply_decode(json, strlen(json), 1, r, errmsg, sizeof errmsg),
                     BZ_EINVAL);
}

static int lookups_decode_checked(const char *buf, size_t len)
{
    struct msg_lookups m;
    char errmsg[160];
    int rv = msg_lookups_decode(buf, len, &m, errmsg, sizeof errmsg);
    if (rv == 0) {
        assert_true(m.n >= 1 && m.n <= 3);
        for (size_t k = 0; k < m.n; k++)
            assert_true(stock_name_valid(m.names[k], strlen(m.names[k])));
    }
    return rv;
}

/* A reply to 3 names: each answer inside the buffer. */
static int lookup_reply_decode_checked(const char *buf, size_t len)
{
    struct msg_lookup_result r[3];
    char errmsg[160];
    int rv = msg_lookup_reply_decode(buf, len, 3, r, errmsg, sizeof errmsg);
    if (rv == 0)
        for (size_t k = 0; k < 3; k++)
            assert_true(r[k].status >= 200 && r[k].status <= 599 && r[k].body >= buf &&
                        r[k].body + r[k].len <= buf + len);
    return rv;
}

/* Every cut, extension and bit flip of a batch and of a reply is refused or decodes to a
 * well-formed message. */
static void test_lookups_damaged(void **state)
{
    (void)state;
    const char *names[3] = {"GameStart", "Fish.Co", "a_b-c"};
    struct strbuf b;
    strbuf_init(&b, MSG_LOOKUP_REPLY_BYTES_MAX);
    assert_int_equal(msg_lookups_encode(names, 3, &b), 0);
    assert_damage_refused("lookup batch", b.data, b.len, lookups_decode_checked);
    strbuf_reset(&b);
    lookup_reply_sample(&b);
    assert_damage_refused("lookup reply", b.data, b.len, lookup_reply_decode_checked);
    strbuf_free(&b);
}

/* Issue 12 finding 7: an epoch far beyond the current one is refused, so a forged notice
 * cannot push it to the ceiling where no higher epoch is left to recover with. */
static void test_epoch_step(void **state)
{
    (void)state;
    char errmsg[160] = "";
    assert_int_equal(msg_check_epoch_step(0, 1, errmsg, sizeof errmsg), 0);
    assert_int_equal(msg_check_epoch_step(7, 8, errmsg, sizeof errmsg), 0);
    assert_int_equal(msg_check_epoch_step(7, 3, errmsg, sizeof errmsg), 0); /* older: not ours */
    assert_int_equal(msg_check_epoch_step(7, 7 + MSG_EPOCH_STEP_MAX, errmsg, sizeof errmsg), 0);
    assert_int_equal(msg_check_epoch_step(7, 8 + MSG_EPOCH_STEP_MAX, errmsg, sizeof errmsg),
                     BZ_EINVAL);
    assert_int_equal(msg_check_epoch_step(7, UINT64_C(1) << 62, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "beyond"));
    assert_int_equal(msg_check_epoch_step(UINT64_MAX - 1, UINT64_MAX, errmsg, sizeof errmsg), 0);
}

static void test_append_reply(void **state)
{
    (void)state;
    static const struct {
        uint32_t ok;
        int64_t match, last;
        bool valid;
    } cases[] = {
        {1, 41, 41, true}, {1, -1, -1, true}, /* a heartbeat to an empty log */
        {0, -1, 7, true},  {0, 3, 7, false},  /* a refusal never matches */
        {2, -1, 7, false}, {1, -2, 7, false},
        {1, 1, -2, false}, {1, (INT64_C(1) << 62) + 1, 1, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        uint8_t b[MSG_APPEND_REPLY_SIZE];
        memcpy(b, "BZR1", 4);
        pagecodec_put_u64(
            pagecodec_put_u64(pagecodec_put_u32(b + 4, cases[i].ok), (uint64_t)cases[i].match),
            (uint64_t)cases[i].last);
        struct msg_append_reply r;
        char errmsg[160] = "";
        int rv = msg_append_reply_decode(b, sizeof b, &r, errmsg, sizeof errmsg);
        if ((rv == 0) != cases[i].valid)
            fail_msg("case %zu: rv %d (%s)", i, rv, errmsg);
        if (rv == 0) {
            uint8_t again[MSG_APPEND_REPLY_SIZE];
            msg_append_reply_encode(&r, again);
            assert_memory_equal(again, b, sizeof b);
            /* Any other length is refused. */
            assert_int_equal(msg_append_reply_decode(b, sizeof b - 1, &r, errmsg, sizeof errmsg),
                             BZ_EINVAL);
        }
    }
    const char *json = "{\"data\":{\"ok\":true,\"match\":1,\"last\":1}}";
    struct msg_append_reply r;
    char errmsg[160];
    assert_int_equal(msg_append_reply_decode(json, strlen(json), &r, errmsg, sizeof errmsg),
                     BZ_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch_step),
        cmocka_unit_test(test_notice_table),
        cmocka_unit_test(test_notice_round_trip),
        cmocka_unit_test(test_inval_table),
        cmocka_unit_test(test_inval_round_trip),
        cmocka_unit_test(test_inval_batch_table),
        cmocka_unit_test(test_inval_batch_bounds_and_round_trip),
        cmocka_unit_test(test_log_page_round_trip),
        cmocka_unit_test(test_log_page_refused),
        cmocka_unit_test(test_append_table),
        cmocka_unit_test(test_append_round_trip),
        cmocka_unit_test(test_append_damaged),
        cmocka_unit_test(test_exec_table),
        cmocka_unit_test(test_append_reply),
        cmocka_unit_test(test_exec_reply),
        cmocka_unit_test(test_exec_damaged),
        cmocka_unit_test(test_lookups_table),
        cmocka_unit_test(test_lookup_reply),
        cmocka_unit_test(test_lookups_damaged),
    };
    return cmocka_run_group_tests_name("unit.common.msg", tests, NULL, NULL);
}
