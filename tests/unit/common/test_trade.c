/* Unit tests for src/common/trade.c: the strict order-body parser shared by every service. */
#include "unit.h"

#include "error.h"
#include "trade.h"

#define NAME64 "N234567890123456789012345678901234567890123456789012345678901234"
#define NAME65 NAME64 "5"
#define RID80  "r:345678901234567890123456789012345678901234567890123456789012345678901234567890"
#define RID81  RID80 "1"
#define KEY64  "k234567890123456789012345678901234567890123456789012345678901234"

_Static_assert(sizeof NAME64 == STOCK_NAME_MAX + 1, "NAME64 is 64 bytes");
_Static_assert(sizeof RID80 == TRADE_REQUEST_ID_MAX + 1, "RID80 is 80 bytes");
_Static_assert(sizeof KEY64 == IDEMPOTENCY_KEY_MAX + 1, "KEY64 is 64 bytes");

struct body_case {
    const char *json;
    bool with_request_id;
    bool ok;
    /* expected on success */
    const char *name;
    enum trade_type type;
    int64_t quantity;
    const char *request_id;
};

static const struct body_case cases[] = {
    /* good bodies */
    {"{\"name\":\"GameStart\",\"type\":\"buy\",\"quantity\":3}", false, true, "GameStart",
     TRADE_BUY, 3, ""},
    {"{\"quantity\":7,\"type\":\"sell\",\"name\":\"Fish.Co-1_x\"}", false, true, "Fish.Co-1_x",
     TRADE_SELL, 7, ""},
    {"{\"name\":\"a\",\"type\":\"buy\",\"quantity\":1}", false, true, "a", TRADE_BUY, 1, ""},
    {"{\"name\":\"a\",\"type\":\"buy\",\"quantity\":1000000}", false, true, "a", TRADE_BUY, 1000000,
     ""},
    {"{\"name\":\"" NAME64 "\",\"type\":\"sell\",\"quantity\":2}", false, true, NAME64, TRADE_SELL,
     2, ""},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"r:abc\"}", true, true, "G",
     TRADE_BUY, 3, "r:abc"},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"" RID80 "\"}", true, true,
     "G", TRADE_BUY, 3, RID80},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"k:a key with spaces\"}",
     true, true, "G", TRADE_BUY, 3, "k:a key with spaces"},

    /* not an object */
    {"[]", false, false, NULL, 0, 0, NULL},
    {"\"buy\"", false, false, NULL, 0, 0, NULL},
    {"3", false, false, NULL, 0, 0, NULL},
    {"null", false, false, NULL, 0, 0, NULL},
    {"{}", false, false, NULL, 0, 0, NULL},

    /* missing fields */
    {"{\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\"}", false, false, NULL, 0, 0, NULL},

    /* quantity: wrong type or out of range */
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3.0}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3.5}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3e0}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":\"3\"}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":true}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":null}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":[3]}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":{}}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":0}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":-1}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":1000001}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":4294967299}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":-9223372036854775808}", false, false, NULL, 0,
     0, NULL},

    /* bad names */
    {"{\"name\":\"\",\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"Game Start\",\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"a/b\",\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"" NAME65 "\",\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\\u0000x\",\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"caf\\u00e9\",\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":3,\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":null,\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":[\"G\"],\"type\":\"buy\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},

    /* bad types */
    {"{\"name\":\"G\",\"type\":\"BUY\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"Sell\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"hold\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy \",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\\u0000\",\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":0,\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":true,\"quantity\":3}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":null,\"quantity\":3}", false, false, NULL, 0, 0, NULL},

    /* extra fields */
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"price\":1}", false, false, NULL, 0, 0,
     NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"\":1}", false, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"Name\":\"G\"}", false, false, NULL, 0, 0,
     NULL},

    /* request_id: refused on the public API, required on internal hops */
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"r:abc\"}", false, false,
     NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3}", true, false, NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"\"}", true, false, NULL, 0,
     0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"" RID81 "\"}", true, false,
     NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":17}", true, false, NULL, 0, 0,
     NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":null}", true, false, NULL, 0,
     0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"r:\\n\"}", true, false, NULL,
     0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"r:\\u0000x\"}", true, false,
     NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"r:\\u00e9\"}", true, false,
     NULL, 0, 0, NULL},
    {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"request_id\":\"r:1\",\"x\":1}", true, false,
     NULL, 0, 0, NULL},
};

static void test_trade_from_json_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        const struct body_case *c = &cases[i];
        json_error_t jerr;
        json_t *obj = json_loads(c->json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!obj)
            fail_msg("case %zu: test JSON does not parse: %s (%s)", i, c->json, jerr.text);
        struct trade t;
        char errmsg[128] = "";
        int rv = trade_from_json(obj, c->with_request_id, &t, errmsg, sizeof errmsg);
        json_decref(obj);
        if ((rv == 0) != c->ok)
            fail_msg("case %zu: %s (request_id %d): rv %d, errmsg \"%s\", want %s", i, c->json,
                     c->with_request_id, rv, errmsg, c->ok ? "ok" : "BZ_EINVAL");
        if (!c->ok) {
            assert_int_equal(rv, BZ_EINVAL);
            if (errmsg[0] == '\0')
                fail_msg("case %zu: %s: refused without a message", i, c->json);
            continue;
        }
        assert_string_equal(t.name, c->name);
        assert_int_equal(t.type, c->type);
        assert_int_equal(t.quantity, c->quantity);
        assert_string_equal(t.request_id, c->request_id);
    }
}

static void test_trade_errmsg_names_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *needle;
    } msgs[] = {
        {"{\"type\":\"buy\",\"quantity\":3}", "name"},
        {"{\"name\":\"G\",\"quantity\":3}", "type"},
        {"{\"name\":\"G\",\"type\":\"buy\"}", "quantity"},
        {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":3,\"bogus\":1}", "bogus"},
        {"{\"name\":\"G\",\"type\":\"buy\",\"quantity\":0}", "quantity"},
    };
    for (size_t i = 0; i < UNIT_COUNT(msgs); i++) {
        json_t *obj = json_loads(msgs[i].json, 0, NULL);
        assert_non_null(obj);
        struct trade t;
        char errmsg[128] = "";
        assert_int_equal(trade_from_json(obj, false, &t, errmsg, sizeof errmsg), BZ_EINVAL);
        if (!strstr(errmsg, msgs[i].needle))
            fail_msg("%s: message \"%s\" does not mention %s", msgs[i].json, errmsg,
                     msgs[i].needle);
        json_decref(obj);
    }
}

static void test_trade_json_round_trip(void **state)
{
    (void)state;
    const struct trade in[] = {
        {.request_id = "", .name = "GameStart", .type = TRADE_BUY, .quantity = 3},
        {.request_id = "r:0001", .name = "Fish", .type = TRADE_SELL, .quantity = 1000000},
    };
    for (size_t i = 0; i < UNIT_COUNT(in); i++) {
        json_t *obj = trade_to_json(&in[i]);
        assert_non_null(obj);
        assert_int_equal(json_object_get(obj, "request_id") != NULL, in[i].request_id[0] != 0);
        struct trade out;
        char errmsg[128];
        assert_int_equal(
            trade_from_json(obj, in[i].request_id[0] != 0, &out, errmsg, sizeof errmsg), 0);
        assert_true(trade_same(&in[i], &out));
        json_decref(obj);
    }
}

static void test_trade_type_parse_and_name(void **state)
{
    (void)state;
    enum trade_type t = TRADE_SELL;
    assert_int_equal(trade_type_parse("buy", &t), 0);
    assert_int_equal(t, TRADE_BUY);
    assert_int_equal(trade_type_parse("sell", &t), 0);
    assert_int_equal(t, TRADE_SELL);
    static const char *const bad[] = {"", "BUY", "buy ", "hold", "sel", "sells"};
    for (size_t i = 0; i < UNIT_COUNT(bad); i++)
        assert_int_equal(trade_type_parse(bad[i], &t), BZ_EINVAL);
    assert_string_equal(trade_type_name(TRADE_BUY), "buy");
    assert_string_equal(trade_type_name(TRADE_SELL), "sell");
}

static void test_trade_same(void **state)
{
    (void)state;
    const struct trade base = {.request_id = "r:1", .name = "G", .type = TRADE_BUY, .quantity = 3};
    struct trade t = base;
    assert_true(trade_same(&base, &t));
    t.quantity = 4;
    assert_false(trade_same(&base, &t));
    t = base;
    t.type = TRADE_SELL;
    assert_false(trade_same(&base, &t));
    t = base;
    snprintf(t.name, sizeof t.name, "H");
    assert_false(trade_same(&base, &t));
    t = base;
    snprintf(t.request_id, sizeof t.request_id, "r:2");
    assert_false(trade_same(&base, &t));
}

static void test_idempotency_key_valid_table(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        bool ok;
    } keys[] = {
        {"a", true},
        {"order-17", true},
        {"a key with spaces inside", true},
        {"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", true},
        {KEY64, true},
        {KEY64 "x", false}, /* 65 bytes */
        {"", false},
        {"tab\there", false},
        {"new\nline", false},
        {"cr\r", false},
        {"del\x7f", false},
        {"\x01", false},
        {"caf\xc3\xa9", false},
    };
    for (size_t i = 0; i < UNIT_COUNT(keys); i++)
        if (idempotency_key_valid(keys[i].key) != keys[i].ok)
            fail_msg("idempotency_key_valid(\"%s\") != %d", keys[i].key, keys[i].ok);
}

static void test_request_id_valid_bounds(void **state)
{
    (void)state;
    assert_true(request_id_valid("r"));
    assert_true(request_id_valid(RID80));
    assert_false(request_id_valid(RID81));
    assert_false(request_id_valid(""));
    assert_false(request_id_valid("r:\x1f"));
    /* "k:" + the longest Idempotency-Key is a valid request id. */
    assert_true(request_id_valid("k:" KEY64));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trade_from_json_table),
        cmocka_unit_test(test_trade_errmsg_names_the_field),
        cmocka_unit_test(test_trade_json_round_trip),
        cmocka_unit_test(test_trade_type_parse_and_name),
        cmocka_unit_test(test_trade_same),
        cmocka_unit_test(test_idempotency_key_valid_table),
        cmocka_unit_test(test_request_id_valid_bounds),
    };
    return cmocka_run_group_tests_name("unit.common.trade", tests, NULL, NULL);
}
