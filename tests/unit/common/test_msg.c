/* Unit tests for src/common/msg.c: the strict decoders of the internal messages. */
#include "unit.h"

#include "error.h"
#include "msg.h"

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

/* ---------------------------------------------------------------- entries */

static json_t *entry_json(int64_t number, uint64_t epoch)
{
    char rid[32];
    snprintf(rid, sizeof rid, "r:%lld", (long long)number);
    return json_pack("{s:I,s:I,s:s,s:s,s:s,s:i}", "number", (json_int_t)number, "epoch",
                     (json_int_t)epoch, "request_id", rid, "name", "GameStart", "type", "buy",
                     "quantity", 3);
}

static json_t *entries_json(int64_t first, size_t n, uint64_t epoch)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, entry_json(first + (int64_t)i, epoch));
    return arr;
}

static void test_entry_table(void **state)
{
    (void)state;
    static const struct json_case cases[] = {
        {"{\"number\":42,\"epoch\":7,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\","
         "\"quantity\":3}",
         true},
        {"{\"number\":0,\"epoch\":1,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"sell\","
         "\"quantity\":1000000}",
         true},
        {"{\"epoch\":7,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\",\"quantity\":3}",
         false},
        {"{\"number\":42,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\",\"quantity\":3}",
         false},
        {"{\"number\":-1,\"epoch\":7,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\","
         "\"quantity\":3}",
         false},
        {"{\"number\":42,\"epoch\":0,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\","
         "\"quantity\":3}",
         false},
        {"{\"number\":\"42\",\"epoch\":7,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\","
         "\"quantity\":3}",
         false},
        {"{\"number\":42,\"epoch\":7,\"name\":\"G\",\"type\":\"buy\",\"quantity\":3}", false},
        {"{\"number\":42,\"epoch\":7,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\","
         "\"quantity\":0}",
         false},
        {"{\"number\":42,\"epoch\":7,\"request_id\":\"r:1\",\"name\":\"G\",\"type\":\"buy\","
         "\"quantity\":3,\"extra\":true}",
         false},
        {"42", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct order o;
        char errmsg[128] = "";
        int rv = msg_entry_from_json(obj, &o, errmsg, sizeof errmsg);
        json_decref(obj);
        if ((rv == 0) != cases[i].ok)
            fail_msg("entry %s: rv %d (%s)", cases[i].json, rv, errmsg);
    }
}

static void test_entry_round_trip(void **state)
{
    (void)state;
    const struct order in = {
        .number = 17,
        .epoch = 4,
        .trade = {.request_id = "k:abc", .name = "Boar", .type = TRADE_SELL, .quantity = 9}};
    json_t *obj = msg_entry_to_json(&in);
    struct order out;
    char errmsg[128];
    assert_int_equal(msg_entry_from_json(obj, &out, errmsg, sizeof errmsg), 0);
    assert_int_equal(out.number, 17);
    assert_true(out.epoch == 4);
    assert_true(trade_same(&in.trade, &out.trade));
    json_decref(obj);
}

static void test_entries_page(void **state)
{
    (void)state;
    static const struct {
        int64_t first;
        size_t n;
        bool ok;
    } pages[] = {
        {0, 0, true},
        {0, 1, true},
        {5, 10, true},
        {0, MSG_LOG_PAGE_MAX, true},
        {0, MSG_LOG_PAGE_MAX + 1, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(pages); i++) {
        json_t *arr = entries_json(pages[i].first, pages[i].n, 2);
        struct order *e = NULL;
        size_t n = 99;
        char errmsg[128] = "";
        int rv = msg_entries_from_json(arr, MSG_LOG_PAGE_MAX, &e, &n, errmsg, sizeof errmsg);
        json_decref(arr);
        if ((rv == 0) != pages[i].ok)
            fail_msg("page %zu (first %lld, n %zu): rv %d (%s)", i, (long long)pages[i].first,
                     pages[i].n, rv, errmsg);
        if (rv == 0) {
            assert_non_null(e);
            assert_int_equal(n, pages[i].n);
            for (size_t k = 0; k < n; k++)
                assert_int_equal(e[k].number, pages[i].first + (int64_t)k);
            free(e);
        }
    }
}

static void test_entries_refused(void **state)
{
    (void)state;
    json_t *bad[4];
    bad[0] = json_object();         /* not an array */
    bad[1] = entries_json(0, 3, 1); /* 0,1,2 then a gap */
    json_array_append_new(bad[1], entry_json(4, 1));
    bad[2] = entries_json(0, 3, 1); /* 0,1,2 then a repeat */
    json_array_append_new(bad[2], entry_json(2, 1));
    bad[3] = entries_json(0, 2, 1); /* a bad entry inside */
    json_array_append_new(bad[3], json_string("x"));
    for (size_t i = 0; i < UNIT_COUNT(bad); i++) {
        struct order *e = NULL;
        size_t n = 0;
        char errmsg[128] = "";
        if (msg_entries_from_json(bad[i], MSG_LOG_PAGE_MAX, &e, &n, errmsg, sizeof errmsg) !=
            BZ_EINVAL)
            fail_msg("bad page %zu accepted", i);
        assert_true(errmsg[0] != '\0');
        json_decref(bad[i]);
    }
}

/* ---------------------------------------------------------------- append */

struct append_case {
    const char *what;
    json_int_t epoch, leader, prev, prev_epoch, start_last;
    int64_t first; /* number of the first entry */
    size_t n;
    uint64_t entry_epoch;
    bool ok;
};

static json_t *append_json(const struct append_case *c)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "epoch", c->epoch, "leader", c->leader, "prev",
                     c->prev, "prev_epoch", c->prev_epoch, "start_last", c->start_last, "entries",
                     entries_json(c->first, c->n, c->entry_epoch));
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
        {"too many entries", 7, 2, 99, 7, 40, 100, MSG_MAX_ENTRIES + 1, 7, false},
        {"first entry is not prev+1 (gap)", 7, 2, 41, 6, 40, 43, 2, 7, false},
        {"first entry is not prev+1 (overlap)", 7, 2, 41, 6, 40, 41, 2, 7, false},
        {"entries from a future epoch", 7, 2, 41, 6, 40, 42, 2, 8, false},
        {"epoch 0", 0, 2, -1, 0, -1, 0, 0, 1, false},
        {"leader 0", 7, 0, -1, 0, -1, 0, 0, 1, false},
        {"prev -2", 7, 2, -2, 0, -1, 0, 0, 1, false},
        {"start_last -2", 7, 2, -1, 0, -2, 0, 0, 1, false},
        {"negative prev_epoch", 7, 2, -1, -1, -1, 0, 0, 1, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        const struct append_case *c = &cases[i];
        json_t *obj = append_json(c);
        struct msg_append m;
        char errmsg[128] = "";
        int rv = msg_append_from_json(obj, &m, errmsg, sizeof errmsg);
        json_decref(obj);
        if ((rv == 0) != c->ok)
            fail_msg("append '%s': rv %d (%s)", c->what, rv, errmsg);
        if (rv != 0) {
            assert_int_equal(rv, BZ_EINVAL);
            assert_true(errmsg[0] != '\0');
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
        msg_append_free(&m);
        assert_null(m.entries);
        assert_int_equal(m.n, 0);
    }
}

static void test_append_non_consecutive_entries(void **state)
{
    (void)state;
    const struct append_case c = {"", 7, 2, 41, 6, 40, 42, 2, 7, true};
    json_t *obj = append_json(&c);
    json_array_append_new(json_object_get(obj, "entries"), entry_json(45, 7));
    struct msg_append m;
    char errmsg[128] = "";
    assert_int_equal(msg_append_from_json(obj, &m, errmsg, sizeof errmsg), BZ_EINVAL);
    json_decref(obj);
}

static void test_append_shape_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"epoch\":7,\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1}",
        "{\"epoch\":7,\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1,\"entries\":{}}",
        "{\"epoch\":7,\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1,\"entries\":[],"
        "\"commit\":3}",
        "{\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1,\"entries\":[]}",
        "{\"epoch\":7,\"leader\":2,\"prev_epoch\":0,\"start_last\":-1,\"entries\":[]}",
        "{\"epoch\":7,\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1,\"entries\":[1]}",
        "{\"epoch\":\"7\",\"leader\":2,\"prev\":-1,\"prev_epoch\":0,\"start_last\":-1,"
        "\"entries\":[]}",
        "[]",
    };
    for (size_t i = 0; i < UNIT_COUNT(bad); i++) {
        json_t *obj = load(bad[i]);
        struct msg_append m;
        char errmsg[128] = "";
        if (msg_append_from_json(obj, &m, errmsg, sizeof errmsg) != BZ_EINVAL)
            fail_msg("append accepted: %s", bad[i]);
        json_decref(obj);
    }
}

static void test_append_round_trip(void **state)
{
    (void)state;
    struct order entries[3];
    for (int i = 0; i < 3; i++) {
        entries[i] = (struct order){.number = 10 + i, .epoch = (uint64_t)(4 + i / 2)};
        snprintf(entries[i].trade.request_id, sizeof entries[i].trade.request_id, "r:%d", i);
        snprintf(entries[i].trade.name, sizeof entries[i].trade.name, "S%d", i);
        entries[i].trade.type = i % 2 ? TRADE_SELL : TRADE_BUY;
        entries[i].trade.quantity = i + 1;
    }
    const struct msg_append in = {.epoch = 5,
                                  .leader = 3,
                                  .prev = 9,
                                  .prev_epoch = 4,
                                  .start_last = 8,
                                  .entries = entries,
                                  .n = 3};
    json_t *obj = msg_append_to_json(&in);
    struct msg_append out;
    char errmsg[128] = "";
    assert_int_equal(msg_append_from_json(obj, &out, errmsg, sizeof errmsg), 0);
    json_decref(obj);
    assert_true(out.epoch == 5);
    assert_int_equal(out.leader, 3);
    assert_int_equal(out.prev, 9);
    assert_true(out.prev_epoch == 4);
    assert_int_equal(out.start_last, 8);
    assert_int_equal(out.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(out.entries[i].number, entries[i].number);
        assert_true(out.entries[i].epoch == entries[i].epoch);
        assert_true(trade_same(&out.entries[i].trade, &entries[i].trade));
    }
    msg_append_free(&out);
}

/* ---------------------------------------------------------------- execute */

static void test_exec_table(void **state)
{
    (void)state;
    static const struct json_case cases[] = {
        {"{\"from\":0,\"committed\":0,\"trades\":[]}", true},
        {"{\"from\":5,\"committed\":3,\"trades\":[{\"request_id\":\"r:1\",\"name\":\"A\","
         "\"type\":\"buy\",\"quantity\":1}]}",
         true},
        {"{\"from\":-1,\"committed\":0,\"trades\":[]}", false},
        {"{\"from\":0,\"trades\":[]}", false},
        {"{\"from\":0,\"committed\":0,\"trades\":{}}", false},
        {"{\"from\":0,\"committed\":0,\"trades\":[],\"x\":1}", false},
        {"{\"from\":0,\"committed\":0,\"trades\":[{\"name\":\"A\",\"type\":\"buy\","
         "\"quantity\":1}]}",
         false}, /* a trade without its request id */
        {"{\"from\":0,\"committed\":0,\"trades\":[{\"request_id\":\"r:1\",\"name\":\"A\","
         "\"type\":\"buy\",\"quantity\":0}]}",
         false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct msg_exec m;
        char errmsg[160] = "";
        int rv = msg_exec_from_json(obj, &m, errmsg, sizeof errmsg);
        if ((rv == 0) != cases[i].ok)
            fail_msg("case %zu %s: rv %d (%s)", i, cases[i].json, rv, errmsg);
        if (rv == 0) {
            json_t *again = msg_exec_to_json(&m);
            assert_true(json_equal(obj, again));
            json_decref(again);
            msg_exec_free(&m);
        } else {
            assert_true(errmsg[0] != '\0');
        }
        json_decref(obj);
    }
}

static void test_exec_reply(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        size_t ntrades;
        int64_t from;
        bool ok;
    } cases[] = {
        {"{\"results\":[{\"code\":200,\"number\":7},{\"code\":409,\"message\":\"no\"}],"
         "\"journal\":[{\"number\":7,\"request_id\":\"r:1\",\"name\":\"A\",\"type\":\"buy\","
         "\"quantity\":1}],\"end\":8}",
         2, 7, true},
        {"{\"results\":[],\"journal\":[],\"end\":3}", 0, 3, true},
        {"{\"results\":[],\"journal\":[],\"end\":9}", 0, 3, true},  /* more pages */
        {"{\"results\":[],\"journal\":[],\"end\":2}", 0, 3, false}, /* end before cursor */
        {"{\"results\":[{\"code\":200,\"number\":7}],\"journal\":[],\"end\":8}", 2, 7, false},
        {"{\"results\":[],\"journal\":[{\"number\":8,\"request_id\":\"r:1\",\"name\":\"A\","
         "\"type\":\"buy\",\"quantity\":1}],\"end\":9}",
         0, 7, false}, /* journal not from the cursor */
        {"{\"results\":[],\"journal\":[{\"number\":7,\"epoch\":1,\"request_id\":\"r:1\","
         "\"name\":\"A\",\"type\":\"buy\",\"quantity\":1}],\"end\":9}",
         0, 7, false}, /* journal entries carry no epoch */
        {"{\"results\":[{\"code\":200}],\"journal\":[],\"end\":8}", 1, 7, false},
        {"{\"results\":[{\"code\":409}],\"journal\":[],\"end\":8}", 1, 7, false},
        {"{\"results\":[{\"code\":99,\"message\":\"x\"}],\"journal\":[],\"end\":8}", 1, 7, false},
        {"{\"results\":[],\"journal\":[]}", 0, 7, false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct msg_exec_reply r;
        char errmsg[160] = "";
        int rv = msg_exec_reply_from_json(obj, cases[i].ntrades, cases[i].from, &r, errmsg,
                                          sizeof errmsg);
        if ((rv == 0) != cases[i].ok)
            fail_msg("case %zu %s: rv %d (%s)", i, cases[i].json, rv, errmsg);
        if (rv == 0) {
            json_t *again = msg_exec_reply_to_json(&r);
            assert_true(json_equal(obj, again));
            json_decref(again);
            msg_exec_reply_free(&r);
        }
        json_decref(obj);
    }
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
    static const struct json_case cases[] = {
        {"{\"ok\":true,\"match\":41,\"last\":41}", true},
        {"{\"ok\":true,\"match\":-1,\"last\":-1}", true}, /* a heartbeat to an empty log */
        {"{\"ok\":false,\"match\":-1,\"last\":7}", true},
        {"{\"ok\":false,\"match\":3,\"last\":7}", false},
        {"{\"ok\":1,\"match\":-1,\"last\":7}", false},
        {"{\"ok\":true,\"match\":-2,\"last\":7}", false},
        {"{\"ok\":true,\"match\":1}", false},
        {"{\"ok\":true,\"match\":1,\"last\":1,\"x\":0}", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        json_t *obj = load(cases[i].json);
        struct msg_append_reply r;
        char errmsg[160] = "";
        int rv = msg_append_reply_from_json(obj, &r, errmsg, sizeof errmsg);
        if ((rv == 0) != cases[i].ok)
            fail_msg("case %zu %s: rv %d (%s)", i, cases[i].json, rv, errmsg);
        if (rv == 0) {
            json_t *again = msg_append_reply_to_json(&r);
            assert_true(json_equal(obj, again));
            json_decref(again);
        }
        json_decref(obj);
    }
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
        cmocka_unit_test(test_entry_table),
        cmocka_unit_test(test_entry_round_trip),
        cmocka_unit_test(test_entries_page),
        cmocka_unit_test(test_entries_refused),
        cmocka_unit_test(test_append_table),
        cmocka_unit_test(test_append_non_consecutive_entries),
        cmocka_unit_test(test_append_shape_refused),
        cmocka_unit_test(test_append_round_trip),
        cmocka_unit_test(test_exec_table),
        cmocka_unit_test(test_append_reply),
        cmocka_unit_test(test_exec_reply),
    };
    return cmocka_run_group_tests_name("unit.common.msg", tests, NULL, NULL);
}
