/*
 * test_http_server.c - src/common/http_server.c without a socket: the one
 * error-reply helper. (Framing, the door and limits are covered over real
 * sockets by tests/integration/test_bad_input.py.)
 */
#include "unit.h"

#include <jansson.h>

#include "error.h"
#include "http_server.h"
#include "trade.h"

/* Issue 12 finding 4: a field name whose 40-byte cut splits 'é' gave 500 "out of memory". */
static void test_error_message_cut_mid_character_is_still_400(void **state)
{
    (void)state;
    char body[128];
    snprintf(body, sizeof body, "{\"%s\xc3\xa9\":1}", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    json_t *obj = json_loads(body, 0, NULL);
    assert_non_null(obj);
    static const char *const keys[] = {"name"};
    char errmsg[160];
    assert_int_equal(trade_check_fields(obj, keys, 1, errmsg, sizeof errmsg), BZ_EINVAL);
    json_decref(obj);

    struct http_response resp = {0};
    strbuf_init(&resp.body, 1 << 16);
    http_reply_error(&resp, BZ_EINVAL, errmsg);
    assert_int_equal(resp.status, 400);
    json_t *reply = json_loadb(resp.body.data, resp.body.len, 0, NULL);
    assert_non_null(reply);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(reply, "error"), "code")),
                     400);
    json_decref(reply);

    /* Raw invalid bytes in a message are replaced, not a reason for a 5xx. */
    http_reply_error(&resp, BZ_EINVAL, "near '\xff\xfe'");
    assert_int_equal(resp.status, 400);
    assert_non_null(strstr(resp.body.data, "near '?"
                                           "?'"));
    strbuf_free(&resp.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_message_cut_mid_character_is_still_400),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
