/*
 * test_metrics.c - src/common/metrics.c: histogram rendering, and a scrape that
 * is consistent (+Inf bucket == _count) while other threads observe.
 */
#include "unit.h"

#include <pthread.h>
#include <stdatomic.h>

#include "metrics.h"

/* The value of the sample line that starts with `prefix`, or UINT64_MAX. */
static uint64_t sample(const char *text, const char *prefix)
{
    const char *p = strstr(text, prefix);
    if (!p)
        return UINT64_MAX;
    p += strlen(prefix);
    return *p == ' ' ? strtoull(p + 1, NULL, 10) : UINT64_MAX;
}

static void test_render_counts(void **state)
{
    (void)state;
    static struct metrics_hist h;
    memset(&h, 0, sizeof h);
    metrics_hist_observe(&h, 50);       /* le 0.0001 */
    metrics_hist_observe(&h, 3000);     /* le 0.005 */
    metrics_hist_observe(&h, 99999999); /* +Inf only */
    struct strbuf out;
    strbuf_init(&out, 1 << 16);
    assert_int_equal(metrics_render_hist(&out, "x", "route=\"GET /a\"", &h), 0);
    assert_int_equal(sample(out.data, "x_bucket{route=\"GET /a\",le=\"0.0001\"}"), 1);
    assert_int_equal(sample(out.data, "x_bucket{route=\"GET /a\",le=\"0.005\"}"), 2);
    assert_int_equal(sample(out.data, "x_bucket{route=\"GET /a\",le=\"+Inf\"}"), 3);
    assert_int_equal(sample(out.data, "x_count{route=\"GET /a\"}"), 3);
    strbuf_free(&out);
}

struct observer {
    struct metrics_hist *h;
    atomic_bool stop;
};

static void *observe_main(void *arg)
{
    struct observer *o = arg;
    uint64_t us = 1;
    while (!atomic_load(&o->stop)) {
        metrics_hist_observe(o->h, us);
        us = us * 7 % 20000011;
    }
    return NULL;
}

/* Issue 12 finding 10: 13 of 919 scrapes under load had +Inf != _count. */
static void test_scrape_consistent_under_concurrent_observes(void **state)
{
    (void)state;
    static struct metrics_hist h;
    memset(&h, 0, sizeof h);
    struct observer o = {.h = &h};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, observe_main, &o), 0);
    int bad = 0;
    struct strbuf out;
    strbuf_init(&out, 1 << 16);
    for (int i = 0; i < 20000; i++) {
        strbuf_reset(&out);
        assert_int_equal(metrics_render_hist(&out, "y", "", &h), 0);
        if (sample(out.data, "y_bucket{le=\"+Inf\"}") != sample(out.data, "y_count"))
            bad++;
    }
    atomic_store(&o.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    strbuf_free(&out);
    assert_true(atomic_load(&h.count) > 0);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_counts),
        cmocka_unit_test(test_scrape_consistent_under_concurrent_observes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
