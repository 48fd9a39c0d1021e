/* Unit tests for src/common/log.c: ISO-8601 UTC timestamps, the line shapes, and repeat
 * suppression (a burst of one message is one line). stderr is redirected to a file. */
#include "unit.h"

#include <jansson.h>
#include <unistd.h>

#include "log.h"

static char dir[256];

static int group_setup(void **state)
{
    (void)state;
    unit_tmpdir_make(dir, sizeof dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unit_tmpdir_remove(dir);
    return 0;
}

/* Runs fn with stderr going to a file; returns what was written (static buffer). */
static const char *capture(void (*fn)(void))
{
    static char buf[8192];
    char path[512];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(2);
    assert_non_null(freopen(path, "w", stderr));
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_format_time(void **state)
{
    (void)state;
    char ts[32];
    assert_int_equal(log_format_time(1234, ts, sizeof ts), 0);
    assert_string_equal(ts, "1970-01-01T00:00:01.234Z");
    assert_int_equal(log_format_time(1796040558588ull, ts, sizeof ts), 0);
    assert_string_equal(ts, "2026-11-30T12:09:18.588Z");
    assert_int_not_equal(log_format_time(0, ts, 10), 0); /* too small a buffer */
}

static void write_text(void)
{
    log_init("frontend", 2);
    log_set_json(false);
    LOG_WARN("hello %d", 42);
}

static void test_text_line(void **state)
{
    (void)state;
    const char *out = capture(write_text);
    /* 2026-11-30T12:00:01.234Z frontend[2] WARN  hello 42 */
    assert_int_equal(strlen(out), 24 + 1 + strlen("frontend[2] WARN  hello 42\n"));
    assert_true(out[4] == '-' && out[10] == 'T' && out[19] == '.' && out[23] == 'Z');
    assert_string_equal(out + 25, "frontend[2] WARN  hello 42\n");
}

static void write_json(void)
{
    log_init("catalog", 0);
    log_set_json(true);
    LOG_ERROR("quote \" and newline \n end");
    log_set_json(false);
}

static void test_json_line(void **state)
{
    (void)state;
    const char *out = capture(write_json);
    json_error_t e;
    json_t *obj = json_loads(out, 0, &e);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "process")), "catalog[0]");
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(obj, "msg")),
                        "quote \" and newline \n end");
    assert_int_equal(strlen(json_string_value(json_object_get(obj, "ts"))), 24);
    assert_int_equal(json_object_size(obj), 4);
    json_decref(obj);
}

static void write_burst(void)
{
    log_init("frontend", 1);
    for (int i = 0; i < 5; i++)
        LOG_INFO("leader 3 failed (connection refused): re-selecting");
    LOG_INFO("leader is replica 2, epoch 9");
}

static void test_burst_is_one_line(void **state)
{
    (void)state;
    const char *out = capture(write_burst);
    int lines = 0, failed = 0;
    for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    for (const char *p = out; (p = strstr(p, "leader 3 failed")) != NULL; p++)
        failed++;
    assert_int_equal(failed, 1);
    assert_int_equal(lines, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_burst_is_one_line),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
