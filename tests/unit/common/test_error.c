/* Unit tests for src/common/error.c: the one error map (code -> status, message). */
#include "unit.h"

#include "error.h"

/* The list itself, expanded here the same way error.h expands it. */
static const struct {
    int code;
    const char *name;
    int status;
    const char *message;
} rows[] = {
#define ROW(name, status, msg) {BZ_##name, #name, status, msg},
    BZ_ERROR_MAP(ROW)
#undef ROW
};

static void test_every_code_is_negative_and_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        if (rows[i].code >= 0)
            fail_msg("BZ_%s = %d is not negative", rows[i].name, rows[i].code);
        for (size_t j = 0; j < i; j++)
            if (rows[i].code == rows[j].code)
                fail_msg("BZ_%s and BZ_%s share %d", rows[i].name, rows[j].name, rows[i].code);
    }
}

static void test_every_code_has_error_status_and_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        int status = bz_error_status(rows[i].code);
        if (status < 400 || status > 599)
            fail_msg("BZ_%s maps to %d, not a 4xx/5xx", rows[i].name, status);
        assert_int_equal(status, rows[i].status);
        const char *msg = bz_strerror(rows[i].code);
        assert_non_null(msg);
        if (msg[0] == '\0' || strcmp(msg, "unknown error") == 0 || strcmp(msg, "ok") == 0)
            fail_msg("BZ_%s has no message of its own: \"%s\"", rows[i].name, msg);
        assert_string_equal(msg, rows[i].message);
    }
}

static void test_success_and_unknown_codes(void **state)
{
    (void)state;
    assert_int_equal(BZ_OK, 0);
    assert_int_equal(bz_error_status(0), 200);
    assert_string_equal(bz_strerror(0), "ok");
    int lowest = 0, highest = BZ__ERROR_BASE;
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        lowest = rows[i].code < lowest ? rows[i].code : lowest;
        highest = rows[i].code > highest ? rows[i].code : highest;
    }
    const int unknown[] = {-1, BZ__ERROR_BASE, lowest - 1, highest + 1, -5000, 1, 42};
    for (size_t i = 0; i < UNIT_COUNT(unknown); i++) {
        assert_int_equal(bz_error_status(unknown[i]), 500);
        assert_string_equal(bz_strerror(unknown[i]), "unknown error");
    }
}

/* The first code with a status maps back to itself; later duplicates map to it. */
static void test_from_status_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        int back = bz_error_from_status(rows[i].status);
        size_t first = 0;
        while (rows[first].status != rows[i].status)
            first++;
        if (back != rows[first].code)
            fail_msg("bz_error_from_status(%d) = %d, want BZ_%s", rows[i].status, back,
                     rows[first].name);
        assert_int_equal(bz_error_status(back), rows[i].status);
    }
}

static void test_from_status_table(void **state)
{
    (void)state;
    static const struct {
        int status, code;
    } cases[] = {
        {400, BZ_EINVAL},
        {401, BZ_EAUTH},
        {404, BZ_ENOTFOUND},
        {405, BZ_EMETHOD},
        {409, BZ_ECONFLICT},
        {413, BZ_ETOOBIG},
        {421, BZ_ENOTLEADER},
        {422, BZ_EMISMATCH},
        {500, BZ_EINTERNAL},
        {502, BZ_EUPSTREAM},
        {503, BZ_EUNAVAIL},
        {504, BZ_ETIMEDOUT},
        /* statuses with no code of their own */
        {200, BZ_EINTERNAL},
        {418, BZ_EINTERNAL},
        {0, BZ_EINTERNAL},
        {-1, BZ_EINTERNAL},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++)
        if (bz_error_from_status(cases[i].status) != cases[i].code)
            fail_msg("bz_error_from_status(%d) = %d, want %d", cases[i].status,
                     bz_error_from_status(cases[i].status), cases[i].code);
}

/* The statuses SPEC §2 promises on the public API each have a code. */
static void test_spec_statuses_covered(void **state)
{
    (void)state;
    static const int spec[] = {400, 404, 409, 413, 503};
    for (size_t i = 0; i < UNIT_COUNT(spec); i++)
        assert_int_equal(bz_error_status(bz_error_from_status(spec[i])), spec[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_is_negative_and_distinct),
        cmocka_unit_test(test_every_code_has_error_status_and_message),
        cmocka_unit_test(test_success_and_unknown_codes),
        cmocka_unit_test(test_from_status_round_trip),
        cmocka_unit_test(test_from_status_table),
        cmocka_unit_test(test_spec_statuses_covered),
    };
    return cmocka_run_group_tests_name("unit.common.error", tests, NULL, NULL);
}
