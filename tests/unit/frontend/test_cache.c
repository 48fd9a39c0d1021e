/*
 * Unit tests for src/frontend/cache.c: LRU order and bounds, and the fill
 * protocol that keeps a fill begun before an invalidation from landing after
 * it (SPEC §3, issue 3). Races are driven deterministically by calling
 * fill_begin / invalidate / fill_end in a chosen order; time is passed in.
 */
#include "unit.h"

#include <pthread.h>
#include <stdatomic.h>

#include "cache.h"

/* ---------------------------------------------------------------- helpers */

static bool fill(struct cache *c, const char *key, const char *bytes, uint64_t version,
                 uint64_t now)
{
    uint64_t token = cache_fill_begin(c);
    return cache_fill_end(c, key, token, bytes, strlen(bytes), version, now);
}

/* The cached bytes of key as a string in buf, or NULL on a miss. */
static const char *get(struct cache *c, const char *key, uint64_t now, char *buf, size_t len)
{
    struct strbuf b;
    strbuf_init(&b, 4096);
    bool hit = cache_get(c, key, now, &b);
    const char *rv = NULL;
    if (hit) {
        snprintf(buf, len, "%s", b.data ? b.data : "");
        rv = buf;
    }
    strbuf_free(&b);
    return rv;
}

/* The keys in LRU order (most recent first), comma-separated, into buf. */
static const char *order(struct cache *c, char *buf, size_t len)
{
    json_t *arr = cache_entries_json(c, 0);
    size_t off = 0, i;
    json_t *e;
    buf[0] = '\0';
    json_array_foreach(arr, i, e)
    {
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
                                json_string_value(json_object_get(e, "name")));
    }
    json_decref(arr);
    return buf;
}

static struct cache_stats stats(struct cache *c)
{
    struct cache_stats s;
    cache_stats(c, &s);
    return s;
}

/* ---------------------------------------------------------------- LRU */

struct lru_step {
    char op; /* 'f' fill, 'g' get, 'i' invalidate */
    const char *key;
    bool result;     /* fill stored / get hit */
    const char *lru; /* the LRU order afterwards */
};

static void run_script(size_t capacity, const struct lru_step *steps, size_t n)
{
    struct cache *c = cache_new(capacity, 0);
    char buf[256], val[64];
    for (size_t i = 0; i < n; i++) {
        const struct lru_step *s = &steps[i];
        bool r = true;
        switch (s->op) {
        case 'f':
            snprintf(val, sizeof val, "value-of-%s", s->key);
            r = fill(c, s->key, val, 1, 0);
            break;
        case 'g':
            r = get(c, s->key, 0, buf, sizeof buf) != NULL;
            if (r) {
                snprintf(val, sizeof val, "value-of-%s", s->key);
                assert_string_equal(buf, val);
            }
            break;
        case 'i':
            cache_invalidate(c, s->key, 1);
            break;
        }
        if (r != s->result)
            fail_msg("step %zu (%c %s): result %d, want %d", i, s->op, s->key, r, s->result);
        order(c, buf, sizeof buf);
        if (strcmp(buf, s->lru) != 0)
            fail_msg("step %zu (%c %s): LRU \"%s\", want \"%s\"", i, s->op, s->key, buf, s->lru);
        assert_true(stats(c).entries <= capacity);
    }
    cache_free(c);
}

static void test_lru_order_and_eviction(void **state)
{
    (void)state;
    static const struct lru_step steps[] = {
        {'g', "A", false, ""},
        {'f', "A", true, "A"},
        {'f', "B", true, "B,A"},
        {'f', "C", true, "C,B,A"},
        {'g', "A", true, "A,C,B"}, /* a hit moves A to the front */
        {'f', "D", true, "D,A,C"}, /* evicts B, the least recently used */
        {'g', "B", false, "D,A,C"},
        {'g', "C", true, "C,D,A"},
        {'f', "E", true, "E,C,D"}, /* evicts A */
        {'f', "D", true, "D,E,C"}, /* a refill counts as a use */
        {'f', "F", true, "F,D,E"}, /* evicts C */
        {'i', "D", true, "F,E"},   /* invalidate removes */
        {'g', "D", false, "F,E"},
        {'f', "G", true, "G,F,E"}, /* room again: no eviction */
        {'g', "E", true, "E,G,F"},
        {'g', "E", true, "E,G,F"}, /* a hit on the front changes nothing */
        {'i', "Z", true, "E,G,F"}, /* invalidating an absent key is harmless */
        {'f', "H", true, "H,E,G"}, /* evicts F */
    };
    run_script(3, steps, UNIT_COUNT(steps));
}

static void test_lru_capacity_one(void **state)
{
    (void)state;
    static const struct lru_step steps[] = {
        {'f', "A", true, "A"}, {'f', "B", true, "B"}, {'g', "A", false, "B"}, {'g', "B", true, "B"},
        {'f', "B", true, "B"}, {'i', "B", true, ""},  {'f', "C", true, "C"},
    };
    run_script(1, steps, UNIT_COUNT(steps));
}

static void test_capacity_never_exceeded(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char key[32], buf[256];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_true(fill(c, key, key, 1, 0));
        struct cache_stats s = stats(c);
        if (s.entries > 8)
            fail_msg("after %d fills: %llu entries", i + 1, (unsigned long long)s.entries);
        json_t *arr = cache_entries_json(c, 0);
        assert_true(json_array_size(arr) <= 8);
        json_decref(arr);
    }
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 8);
    assert_int_equal(s.evictions, 992);
    /* Exactly the 8 most recent remain, newest first. */
    assert_string_equal(order(c, buf, sizeof buf), "k999,k998,k997,k996,k995,k994,k993,k992");
    assert_null(get(c, "k991", 0, buf, sizeof buf));
    assert_non_null(get(c, "k992", 0, buf, sizeof buf));
    assert_string_equal(buf, "k992");
    cache_free(c);
}

static void test_update_in_place(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    char buf[256];
    assert_true(fill(c, "A", "first", 1, 0));
    assert_true(fill(c, "B", "b", 1, 0));
    assert_true(fill(c, "A", "second, longer bytes", 2, 0));
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.evictions, 0);
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "second, longer bytes");
    assert_true(fill(c, "A", "x", 2, 0)); /* same version: replaced */
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "x");
    assert_int_equal(stats(c).entries, 2);
    cache_free(c);
}

static void test_get_appends_to_out(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    assert_true(fill(c, "A", "{\"data\":1}", 1, 0));
    struct strbuf b;
    strbuf_init(&b, 64);
    assert_int_equal(strbuf_append(&b, "pre:", 4), 0);
    assert_true(cache_get(c, "A", 0, &b));
    assert_string_equal(b.data, "pre:{\"data\":1}");
    strbuf_free(&b);
    /* A reply that does not fit the caller's buffer is not a hit. */
    strbuf_init(&b, 4);
    assert_false(cache_get(c, "A", 0, &b));
    assert_int_equal(b.len, 0);
    strbuf_free(&b);
    cache_free(c);
}

static void test_binary_bytes(void **state)
{
    (void)state;
    struct cache *c = cache_new(2, 0);
    uint64_t token = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "A", token, "a\0b", 3, 1, 0));
    struct strbuf b;
    strbuf_init(&b, 64);
    assert_true(cache_get(c, "A", 0, &b));
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 3);
    strbuf_free(&b);
    cache_free(c);
}

static void test_entries_json_fields(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    assert_true(fill(c, "A", "a", 7, 1000));
    assert_true(fill(c, "B", "b", 9, 1500));
    json_t *arr = cache_entries_json(c, 2000);
    assert_int_equal(json_array_size(arr), 2);
    json_t *b = json_array_get(arr, 0), *a = json_array_get(arr, 1);
    assert_string_equal(json_string_value(json_object_get(b, "name")), "B");
    assert_int_equal(json_integer_value(json_object_get(b, "version")), 9);
    assert_int_equal(json_integer_value(json_object_get(b, "age_ms")), 500);
    assert_string_equal(json_string_value(json_object_get(a, "name")), "A");
    assert_int_equal(json_integer_value(json_object_get(a, "version")), 7);
    assert_int_equal(json_integer_value(json_object_get(a, "age_ms")), 1000);
    json_decref(arr);
    cache_free(c);
}

/* ---------------------------------------------------------------- the fill/invalidate race */

/* token; invalidate; fill_end: the fetched bytes may predate the change, so refuse them. */
static void test_fill_overtaken_by_invalidation_is_refused(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    uint64_t token = cache_fill_begin(c);
    cache_invalidate(c, "A", 5);
    assert_false(cache_fill_end(c, "A", token, "old", 3, 5, 0));
    assert_null(get(c, "A", 0, buf, sizeof buf));
    assert_int_equal(stats(c).entries, 0);
    assert_int_equal(stats(c).stale_fills, 1);

    /* A fill begun after the invalidation succeeds. */
    uint64_t later = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "A", later, "new", 3, 5, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "new");
    /* The old token is still refused, even now that A has a value again; its reply is not
     * newer than the cached one, which stays. */
    assert_false(cache_fill_end(c, "A", token, "old", 3, 5, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "new");
    assert_int_equal(stats(c).stale_fills, 2);
    /* A refused reply newer than the cached value: a client saw it, so the value goes. */
    assert_false(cache_fill_end(c, "A", token, "newer", 5, 6, 0));
    assert_null(get(c, "A", 0, buf, sizeof buf));
    cache_free(c);
}

/*
 * Found by the history test (integration.history, seed 1963172125, under ASan): a
 * client's own fetch is refused (an invalidation came in while it ran), yet its reply
 * reached the client; a fetch begun before that refusal, which read an older state, then
 * filled the cache, and the client's next lookup went back in time (5 then 6 after a buy).
 * A refused fill now fences out the fills begun before it.
 */
static void test_refused_fill_fences_older_fetches(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    uint64_t mine = cache_fill_begin(c);  /* c3's lookup after its own buy #12 */
    cache_invalidate(c, "Alpha", 12);     /* #12's notice arrives meanwhile */
    uint64_t older = cache_fill_begin(c); /* another client's fetch: reads 6 (v12) */
    /* #13 (buy 1) executes; c3's fetch reads 5 (v13): refused, but c3 was told 5. */
    assert_false(cache_fill_end(c, "Alpha", mine, "5", 1, 13, 0));
    /* The other fetch, begun before c3's refusal, must not fill 6 now. */
    assert_false(cache_fill_end(c, "Alpha", older, "6", 1, 12, 0));
    assert_null(get(c, "Alpha", 0, buf, sizeof buf));
    /* A fetch begun after the refusal fills as usual. */
    uint64_t next = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "Alpha", next, "5", 1, 13, 0));
    assert_string_equal(get(c, "Alpha", 0, buf, sizeof buf), "5");
    cache_free(c);
}

/* The same when the reply reached a client while the cache was not trusted (no fill). */
static void test_skipped_fill_fences_older_fetches(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    uint64_t older = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "B", cache_fill_begin(c), "9", 1, 20, 0));
    cache_fill_skip(c, "B", 21); /* a client saw v21 */
    assert_null(get(c, "B", 0, buf, sizeof buf));
    assert_false(cache_fill_end(c, "B", older, "8", 1, 19, 0));
    cache_fill_skip(c, "B", 0); /* nothing cached: only the fence moves */
    uint64_t next = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "B", next, "7", 1, 21, 0));
    cache_fill_skip(c, "B", 21); /* not newer than the cached value: it stays */
    assert_string_equal(get(c, "B", 0, buf, sizeof buf), "7");
    cache_free(c);
}

/* The same race when the key was already cached: the invalidation wins. */
static void test_fill_over_cached_value_after_invalidation(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    assert_true(fill(c, "A", "v1", 1, 0));
    uint64_t token = cache_fill_begin(c); /* a second fetch of A starts */
    cache_invalidate(c, "A", 2);          /* a trade changes A */
    assert_false(cache_fill_end(c, "A", token, "v1-again", 8, 1, 0));
    assert_null(get(c, "A", 0, buf, sizeof buf));
    cache_free(c);
}

/* Two invalidations in a row, and fills interleaved between them. */
static void test_fill_between_invalidations(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    uint64_t t0 = cache_fill_begin(c);
    cache_invalidate(c, "A", 1);
    uint64_t t1 = cache_fill_begin(c);
    cache_invalidate(c, "A", 2);
    uint64_t t2 = cache_fill_begin(c);
    assert_false(cache_fill_end(c, "A", t0, "x", 1, 0, 0));
    assert_false(cache_fill_end(c, "A", t1, "x", 1, 1, 0));
    assert_true(cache_fill_end(c, "A", t2, "x", 1, 2, 0));
    cache_free(c);
}

static void test_invalidating_another_key_does_not_block(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    assert_true(fill(c, "B", "b", 1, 0));
    uint64_t token = cache_fill_begin(c);
    cache_invalidate(c, "B", 3);
    cache_invalidate(c, "C", 4);
    assert_true(cache_fill_end(c, "A", token, "a", 1, 1, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "a");
    assert_int_equal(stats(c).stale_fills, 0);
    cache_free(c);
}

/*
 * A reply older than a version the catalog has already shown is refused even with a
 * fresh token, and a later, lower-versioned (replayed) invalidation does not lower the bar.
 */
static void test_fill_older_than_invalidation_version(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    cache_invalidate(c, "A", 10);
    uint64_t token = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "A", token, "v10", 3, 10, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "v10");
    cache_invalidate(c, "A", 4);
    token = cache_fill_begin(c);
    assert_false(cache_fill_end(c, "A", token, "v9", 2, 9, 0));
    assert_null(get(c, "A", 0, buf, sizeof buf));
    assert_false(cache_fill_end(c, "A", token, "v9", 2, 9, 0)); /* still refused */
    assert_true(cache_fill_end(c, "A", token, "v11", 3, 11, 0));
    cache_free(c);
}

/*
 * Issue 12 finding 7: one invalidation carrying version 2^62 kept the stock out of
 * the cache for good. A fill that began after it and is not older than anything the
 * catalog showed proves that version was never the catalog's: one miss, then cached.
 */
static void test_forged_invalidation_version_recovers(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    uint64_t token = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "A", token, "v3", 2, 3, 0));
    cache_invalidate(c, "A", UINT64_C(1) << 62);
    token = cache_fill_begin(c);
    assert_false(cache_fill_end(c, "A", token, "v5", 2, 5, 0)); /* one refusal */
    token = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "A", token, "v5", 2, 5, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "v5");
    /* Invalidations of the real versions keep working afterwards. */
    cache_invalidate(c, "A", 6);
    token = cache_fill_begin(c);
    assert_false(cache_fill_end(c, "A", token - 1, "v5", 2, 5, 0)); /* began before: refused */
    assert_true(cache_fill_end(c, "A", token, "v6", 2, 6, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "v6");
    cache_free(c);
}

static void test_older_version_does_not_overwrite_newer(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char buf[64];
    assert_true(fill(c, "A", "v5", 5, 0));
    assert_false(fill(c, "A", "v3", 3, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "v5");
    assert_true(fill(c, "A", "v6", 6, 0));
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "v6");
    assert_int_equal(stats(c).entries, 1);
    cache_free(c);
}

/* An invalidated key that was refilled and then evicted keeps its fence. */
static void test_eviction_keeps_the_fence(void **state)
{
    (void)state;
    struct cache *c = cache_new(2, 0);
    char buf[64];
    uint64_t old = cache_fill_begin(c);
    cache_invalidate(c, "A", 1);
    assert_true(fill(c, "A", "a", 1, 0));
    assert_true(fill(c, "B", "b", 1, 0));
    assert_true(fill(c, "C", "c", 1, 0)); /* evicts A */
    assert_null(get(c, "A", 0, buf, sizeof buf));
    assert_false(cache_fill_end(c, "A", old, "stale", 5, 1, 0));
    assert_null(get(c, "A", 0, buf, sizeof buf));
    cache_free(c);
}

/*
 * Tombstones are bounded; the floor must stand in for every dropped one.
 * 5000 invalidations is far beyond the bound, and a fill whose token
 * predates them all is still refused for every one of those keys.
 */
static void test_tombstone_floor(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char key[32], buf[64];
    uint64_t before = cache_fill_begin(c);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cache_invalidate(c, key, (uint64_t)i + 1);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        if (cache_fill_end(c, key, before, "stale", 5, (uint64_t)i + 1, 0))
            fail_msg("stale fill of %s let in after the tombstones were bounded", key);
    }
    struct cache_stats s = stats(c);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.stale_fills, 5000);
    assert_int_equal(s.invalidations, 5000);
    /* Fresh fills go through, for old keys and for keys never seen. */
    assert_true(fill(c, "k0", "fresh", 1, 0));
    assert_true(fill(c, "k4999", "fresh", 5000, 0));
    assert_true(fill(c, "never-seen", "fresh", 1, 0));
    assert_string_equal(get(c, "k0", 0, buf, sizeof buf), "fresh");
    /* A key refilled after its tombstone was dropped still refuses the old token. */
    assert_false(cache_fill_end(c, "k0", before, "stale", 5, 1, 0));
    assert_false(cache_fill_end(c, "never-seen", before, "stale", 5, 1, 0));
    assert_string_equal(get(c, "k0", 0, buf, sizeof buf), "fresh");
    cache_free(c);
}

/* A token taken midway: everything invalidated after it is refused. */
static void test_tombstone_floor_midway_token(void **state)
{
    (void)state;
    struct cache *c = cache_new(8, 0);
    char key[32];
    uint64_t mid = 0;
    for (int i = 0; i < 5000; i++) {
        if (i == 2500)
            mid = cache_fill_begin(c);
        snprintf(key, sizeof key, "k%d", i);
        cache_invalidate(c, key, 1);
    }
    for (int i = 2500; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        if (cache_fill_end(c, key, mid, "stale", 5, 1, 0))
            fail_msg("fill of %s with a token older than its invalidation accepted", key);
    }
    assert_int_equal(stats(c).entries, 0);
    cache_free(c);
}

/* Repeated invalidation of one key never grows memory or loses the fence. */
static void test_repeated_invalidation_of_one_key(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    uint64_t token = 0;
    for (int i = 0; i < 3000; i++) {
        token = cache_fill_begin(c);
        cache_invalidate(c, "A", (uint64_t)i);
        assert_false(cache_fill_end(c, "A", token, "x", 1, (uint64_t)i, 0));
    }
    token = cache_fill_begin(c);
    assert_true(cache_fill_end(c, "A", token, "x", 1, 3000, 0));
    cache_free(c);
}

/* ---------------------------------------------------------------- stats, ttl */

static void test_stats_counters(void **state)
{
    (void)state;
    struct cache *c = cache_new(2, 0);
    char buf[64];
    struct cache_stats s = stats(c);
    assert_true(s.hits == 0 && s.misses == 0 && s.evictions == 0 && s.invalidations == 0 &&
                s.stale_fills == 0 && s.entries == 0);
    assert_null(get(c, "A", 0, buf, sizeof buf)); /* miss 1 */
    assert_true(fill(c, "A", "a", 1, 0));
    assert_non_null(get(c, "A", 0, buf, sizeof buf)); /* hit 1 */
    assert_non_null(get(c, "A", 0, buf, sizeof buf)); /* hit 2 */
    assert_true(fill(c, "B", "b", 1, 0));
    assert_true(fill(c, "C", "c", 1, 0));         /* eviction 1 (A) */
    assert_null(get(c, "A", 0, buf, sizeof buf)); /* miss 2 */
    cache_invalidate(c, "B", 2);                  /* invalidation 1 */
    cache_invalidate(c, "nope", 2);               /* invalidation 2 */
    uint64_t t = cache_fill_begin(c);
    cache_invalidate(c, "C", 2);                           /* invalidation 3 */
    assert_false(cache_fill_end(c, "C", t, "c", 1, 2, 0)); /* stale fill 1 */
    s = stats(c);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.invalidations, 3);
    assert_int_equal(s.stale_fills, 1);
    assert_int_equal(s.entries, 0);
    cache_free(c);
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    static const struct {
        uint64_t ttl, stored, now;
        bool hit;
    } cases[] = {
        {100, 1000, 1000, true},
        {100, 1000, 1099, true},
        {100, 1000, 1100, false},
        {100, 1000, 5000, false},
        {0, 1000, UINT64_MAX, true},
        {1, 7, 7, true},
        {1, 7, 8, false},
        /* Stored after the caller's "now" (a fast handler passes the request's start time,
         * and another thread may fill in between): fresh, not 2^64 ms old. */
        {100, 1000, 999, true},
        {1, 7, 0, true},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct cache *c = cache_new(4, cases[i].ttl);
        char buf[64];
        assert_true(fill(c, "A", "a", 1, cases[i].stored));
        bool hit = get(c, "A", cases[i].now, buf, sizeof buf) != NULL;
        if (hit != cases[i].hit)
            fail_msg("ttl %llu, stored %llu, now %llu: hit %d", (unsigned long long)cases[i].ttl,
                     (unsigned long long)cases[i].stored, (unsigned long long)cases[i].now, hit);
        cache_free(c);
    }
}

static void test_ttl_refill_restarts_the_clock(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 100);
    char buf[64];
    assert_true(fill(c, "A", "a", 1, 0));
    assert_null(get(c, "A", 150, buf, sizeof buf));
    assert_true(fill(c, "A", "a2", 2, 150));
    assert_string_equal(get(c, "A", 200, buf, sizeof buf), "a2");
    assert_null(get(c, "A", 250, buf, sizeof buf));
    cache_free(c);
}

/* ---------------------------------------------------------------- threads */

#define SMOKE_THREADS 4
#define SMOKE_OPS     20000
#define SMOKE_KEYS    16
#define SMOKE_CAP     8

struct smoke {
    struct cache *c;
    atomic_uint_fast64_t version[SMOKE_KEYS]; /* the "catalog": current version per key */
    atomic_uint_fast64_t over_capacity, gets, bad_bytes;
};

struct smoke_arg {
    struct smoke *sm;
    unsigned seed;
};

static void *smoke_thread(void *p)
{
    struct smoke_arg *a = p;
    struct smoke *sm = a->sm;
    char key[16], bytes[32];
    struct strbuf b;
    strbuf_init(&b, 256);
    for (int i = 0; i < SMOKE_OPS; i++) {
        int k = rand_r(&a->seed) % SMOKE_KEYS;
        int op = rand_r(&a->seed) % 10;
        snprintf(key, sizeof key, "stock%d", k);
        if (op < 5) {
            strbuf_reset(&b);
            atomic_fetch_add(&sm->gets, 1);
            if (cache_get(sm->c, key, 0, &b) &&
                (strncmp(b.data, key, strlen(key)) != 0 || b.data[strlen(key)] != '@'))
                atomic_fetch_add(&sm->bad_bytes, 1);
        } else if (op < 8) {
            /* fill: token, "fetch" the current version, store it */
            uint64_t token = cache_fill_begin(sm->c);
            uint64_t v = atomic_load(&sm->version[k]);
            snprintf(bytes, sizeof bytes, "%s@%llu", key, (unsigned long long)v);
            cache_fill_end(sm->c, key, token, bytes, strlen(bytes), v, 0);
        } else {
            /* a trade: change the catalog, then invalidate (as the catalog does) */
            uint64_t v = atomic_fetch_add(&sm->version[k], 1) + 1;
            cache_invalidate(sm->c, key, v);
        }
        if (i % 64 == 0) {
            struct cache_stats s;
            cache_stats(sm->c, &s);
            if (s.entries > SMOKE_CAP)
                atomic_fetch_add(&sm->over_capacity, 1);
        }
    }
    strbuf_free(&b);
    return NULL;
}

/*
 * 4 threads x 20000 random get/fill/invalidate on 16 keys, capacity 8. Checks
 * the capacity bound throughout, and at quiescence that no stale value
 * survived: every change was followed by an invalidation, so whatever is
 * cached must be the key's current version.
 */
static void test_threads_smoke(void **state)
{
    (void)state;
    static struct smoke sm;
    memset(&sm, 0, sizeof sm);
    sm.c = cache_new(SMOKE_CAP, 0);
    for (int k = 0; k < SMOKE_KEYS; k++)
        atomic_init(&sm.version[k], 1);
    pthread_t th[SMOKE_THREADS];
    struct smoke_arg args[SMOKE_THREADS];
    for (int t = 0; t < SMOKE_THREADS; t++) {
        args[t] = (struct smoke_arg){&sm, 0x5eed0000u + (unsigned)t};
        assert_int_equal(pthread_create(&th[t], NULL, smoke_thread, &args[t]), 0);
    }
    for (int t = 0; t < SMOKE_THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);

    assert_int_equal(atomic_load(&sm.over_capacity), 0);
    assert_int_equal(atomic_load(&sm.bad_bytes), 0);
    struct cache_stats s;
    cache_stats(sm.c, &s);
    assert_true(s.entries <= SMOKE_CAP);
    assert_true(s.hits + s.misses == atomic_load(&sm.gets));
    json_t *arr = cache_entries_json(sm.c, 0);
    assert_true(json_array_size(arr) == s.entries);
    json_decref(arr);

    char key[16], want[32], buf[64];
    for (int k = 0; k < SMOKE_KEYS; k++) {
        snprintf(key, sizeof key, "stock%d", k);
        snprintf(want, sizeof want, "%s@%llu", key,
                 (unsigned long long)atomic_load(&sm.version[k]));
        if (get(sm.c, key, 0, buf, sizeof buf) && strcmp(buf, want) != 0)
            fail_msg("stale value survived: cached \"%s\", current \"%s\"", buf, want);
    }
    cache_free(sm.c);
}

/* cache_clear: what a front-end does after a gap or silence in its invalidation stream. */
static void test_clear_drops_everything_and_fences_fills(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    char buf[64];
    assert_true(fill(c, "A", "a1", 1, 0));
    assert_true(fill(c, "B", "b1", 1, 0));
    cache_invalidate(c, "C", 5);           /* a tombstone */
    uint64_t before = cache_fill_begin(c); /* a fetch that started before the clear */
    assert_int_equal(cache_clear(c), 2);
    assert_null(get(c, "A", 0, buf, sizeof buf));
    assert_null(get(c, "B", 0, buf, sizeof buf));
    assert_false(cache_fill_end(c, "A", before, "old", 3, 1, 0)); /* may be stale: refused */
    assert_false(cache_fill_end(c, "Z", before, "old", 3, 1, 0)); /* any key */
    assert_true(fill(c, "A", "a2", 2, 0)); /* a fetch after the clear is fine */
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "a2");
    assert_int_equal(cache_clear(c), 1);
    assert_int_equal(cache_clear(c), 0);
    cache_free(c);
}

/* ---------------------------------------------------------------- single flight */

/* A joiner's view of a finished flight: its status and bytes in buf. */
static int flight_result(struct cache *c, struct cache_flight *f, char *buf, size_t len)
{
    struct strbuf b;
    strbuf_init(&b, 4096);
    int status = 0, retry = 0;
    assert_true(cache_flight_wait(c, f, 1000, &status, &retry, &b));
    snprintf(buf, len, "%s", b.data ? b.data : "");
    strbuf_free(&b);
    return status;
}

/* Concurrent misses of one key share the first one's fetch; other keys fly alone. */
static void test_flight_joins_and_shares_the_result(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    char buf[64];
    bool leads;
    struct cache_flight *lead = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    struct cache_flight *join = cache_flight_begin(c, "A", &leads);
    assert_false(leads);
    assert_ptr_equal(join, lead);
    struct cache_flight *other = cache_flight_begin(c, "B", &leads);
    assert_true(leads);
    assert_ptr_not_equal(other, lead);
    cache_flight_finish(c, lead, 200, 0, "a1", 2);
    cache_flight_release(c, lead);
    assert_int_equal(flight_result(c, join, buf, sizeof buf), 200);
    assert_string_equal(buf, "a1");
    cache_flight_release(c, join);
    /* A finished flight is no longer joinable: the next miss leads a new one. */
    struct cache_flight *next = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    cache_flight_finish(c, next, 404, 0, "nf", 2);
    cache_flight_release(c, next);
    cache_flight_finish(c, other, 503, 1, "", 0);
    cache_flight_release(c, other);
    struct cache_stats st;
    cache_stats(c, &st);
    assert_int_equal(st.flights, 3);
    assert_int_equal(st.flight_joins, 1);
    cache_free(c);
}

/*
 * A miss after an invalidation of the key must not join a flight that began
 * before it (its reply may predate the change): it leads a new flight, which
 * later misses join instead of the old one.
 */
static void test_flight_not_joined_across_invalidation(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    char buf[64];
    bool leads;
    struct cache_flight *old = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    cache_invalidate(c, "B", 7); /* another key: no effect on A's flight */
    struct cache_flight *j = cache_flight_begin(c, "A", &leads);
    assert_false(leads);
    cache_flight_release(c, j);
    cache_invalidate(c, "A", 8);
    struct cache_flight *fresh = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    assert_ptr_not_equal(fresh, old);
    struct cache_flight *later = cache_flight_begin(c, "A", &leads);
    assert_false(leads);
    assert_ptr_equal(later, fresh);
    /* The old flight's fill is refused, the new one's lands. */
    cache_flight_finish(c, old, 200, 0, "a7", 2);
    assert_false(cache_fill_end(c, "A", cache_flight_token(old), "a7", 2, 7, 0));
    cache_flight_release(c, old);
    cache_flight_finish(c, fresh, 200, 0, "a8", 2);
    assert_true(cache_fill_end(c, "A", cache_flight_token(fresh), "a8", 2, 8, 0));
    cache_flight_release(c, fresh);
    assert_int_equal(flight_result(c, later, buf, sizeof buf), 200);
    assert_string_equal(buf, "a8");
    cache_flight_release(c, later);
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "a8");
    cache_free(c);
}

/*
 * Monotonic lookups: after an invalidation, flight `fresh` replaces `old`; if
 * `old` lands first, its reply may be newer than what `fresh` read (fresh's
 * catalog read can precede old's), so a miss after that must not join
 * `fresh`: it leads a new flight.
 */
static void test_flight_not_joined_after_an_older_one_lands(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    bool leads;
    struct cache_flight *old = cache_flight_begin(c, "A", &leads);
    cache_invalidate(c, "A", 5);
    struct cache_flight *fresh = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    cache_flight_finish(c, old, 200, 0, "a6", 2); /* a client gets version 6 */
    cache_flight_release(c, old);
    struct cache_flight *next = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    assert_ptr_not_equal(next, fresh);
    struct cache_flight *join = cache_flight_begin(c, "A", &leads);
    assert_false(leads);
    assert_ptr_equal(join, next);
    for (struct cache_flight *f = fresh; f; f = f == fresh ? next : NULL) {
        cache_flight_finish(c, f, 200, 0, "x", 1);
        cache_flight_release(c, f);
    }
    cache_flight_release(c, join);
    cache_free(c);
}

/*
 * cache_flight_lead (a miss that cannot wait, on an event thread): it leads a
 * new flight only when no joinable one is in the air, registers nothing
 * otherwise, and an invalidation makes the old flight unjoinable for it too.
 */
static void test_flight_lead_never_joins(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    char buf[64];
    bool leads;
    struct cache_flight *lead = cache_flight_lead(c, "A");
    assert_non_null(lead);
    assert_null(cache_flight_lead(c, "A")); /* joinable flight in the air: no second fetch */
    struct cache_flight *join = cache_flight_begin(c, "A", &leads);
    assert_false(leads);
    assert_ptr_equal(join, lead);
    cache_invalidate(c, "A", 3);
    struct cache_flight *fresh = cache_flight_lead(c, "A");
    assert_non_null(fresh);
    assert_ptr_not_equal(fresh, lead);
    cache_flight_finish(c, lead, 200, 0, "a2", 2);
    cache_flight_release(c, lead);
    assert_int_equal(flight_result(c, join, buf, sizeof buf), 200);
    cache_flight_release(c, join);
    cache_flight_finish(c, fresh, 200, 0, "a3", 2);
    assert_true(cache_fill_end(c, "A", cache_flight_token(fresh), "a3", 2, 3, 0));
    cache_flight_release(c, fresh);
    struct cache_stats st;
    cache_stats(c, &st);
    assert_int_equal(st.flights, 2);
    assert_int_equal(st.flight_joins, 1);
    assert_string_equal(get(c, "A", 0, buf, sizeof buf), "a3");
    cache_free(c);
}

/* After cache_clear (invalidations may have been missed) no flight from before is joinable. */
static void test_flight_not_joined_across_clear(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    bool leads;
    struct cache_flight *old = cache_flight_begin(c, "A", &leads);
    cache_clear(c);
    struct cache_flight *fresh = cache_flight_begin(c, "A", &leads);
    assert_true(leads);
    assert_ptr_not_equal(fresh, old);
    for (struct cache_flight *f = old; f; f = f == old ? fresh : NULL) {
        cache_flight_finish(c, f, 200, 0, "x", 1);
        cache_flight_release(c, f);
    }
    cache_free(c);
}

/* A joiner whose leader never answers gives up at its deadline. */
static void test_flight_wait_times_out(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    bool leads;
    struct cache_flight *lead = cache_flight_begin(c, "A", &leads);
    struct cache_flight *join = cache_flight_begin(c, "A", &leads);
    struct strbuf b;
    strbuf_init(&b, 64);
    int status = 0, retry = 0;
    assert_false(cache_flight_wait(c, join, 20, &status, &retry, &b));
    strbuf_free(&b);
    cache_flight_release(c, join);
    cache_flight_finish(c, lead, 200, 0, "x", 1);
    cache_flight_release(c, lead);
    cache_free(c);
}

struct flight_arg {
    struct cache *c;
    atomic_int *fetches;
    char result[32];
};

/* One miss on a thread: lead (fetch = count and sleep a little) or join. */
static void *flight_thread(void *p)
{
    struct flight_arg *a = p;
    bool leads;
    struct cache_flight *f = cache_flight_begin(a->c, "A", &leads);
    if (leads) {
        atomic_fetch_add(a->fetches, 1);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        cache_flight_finish(a->c, f, 200, 0, "shared", 6);
        snprintf(a->result, sizeof a->result, "shared");
    } else {
        struct strbuf b;
        strbuf_init(&b, 64);
        int status = 0, retry = 0;
        if (cache_flight_wait(a->c, f, 5000, &status, &retry, &b) && status == 200)
            snprintf(a->result, sizeof a->result, "%s", b.data);
        strbuf_free(&b);
    }
    cache_flight_release(a->c, f);
    return NULL;
}

/* 8 threads miss at once: far fewer fetches than misses, and every one gets the reply. */
static void test_flight_threads(void **state)
{
    (void)state;
    struct cache *c = cache_new(4, 0);
    atomic_int fetches = 0;
    enum { N = 8 };
    pthread_t th[N];
    struct flight_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct flight_arg){.c = c, .fetches = &fetches};
        assert_int_equal(pthread_create(&th[i], NULL, flight_thread, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_string_equal(args[i].result, "shared");
    }
    struct cache_stats st;
    cache_stats(c, &st);
    assert_int_equal(st.flights, atomic_load(&fetches));
    assert_int_equal(st.flights + st.flight_joins, N);
    cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flight_joins_and_shares_the_result),
        cmocka_unit_test(test_flight_not_joined_across_invalidation),
        cmocka_unit_test(test_flight_not_joined_after_an_older_one_lands),
        cmocka_unit_test(test_flight_not_joined_across_clear),
        cmocka_unit_test(test_flight_lead_never_joins),
        cmocka_unit_test(test_flight_wait_times_out),
        cmocka_unit_test(test_flight_threads),
        cmocka_unit_test(test_lru_order_and_eviction),
        cmocka_unit_test(test_lru_capacity_one),
        cmocka_unit_test(test_capacity_never_exceeded),
        cmocka_unit_test(test_update_in_place),
        cmocka_unit_test(test_get_appends_to_out),
        cmocka_unit_test(test_binary_bytes),
        cmocka_unit_test(test_entries_json_fields),
        cmocka_unit_test(test_fill_overtaken_by_invalidation_is_refused),
        cmocka_unit_test(test_refused_fill_fences_older_fetches),
        cmocka_unit_test(test_skipped_fill_fences_older_fetches),
        cmocka_unit_test(test_fill_over_cached_value_after_invalidation),
        cmocka_unit_test(test_fill_between_invalidations),
        cmocka_unit_test(test_invalidating_another_key_does_not_block),
        cmocka_unit_test(test_fill_older_than_invalidation_version),
        cmocka_unit_test(test_forged_invalidation_version_recovers),
        cmocka_unit_test(test_older_version_does_not_overwrite_newer),
        cmocka_unit_test(test_eviction_keeps_the_fence),
        cmocka_unit_test(test_tombstone_floor),
        cmocka_unit_test(test_tombstone_floor_midway_token),
        cmocka_unit_test(test_repeated_invalidation_of_one_key),
        cmocka_unit_test(test_stats_counters),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_ttl_refill_restarts_the_clock),
        cmocka_unit_test(test_threads_smoke),
        cmocka_unit_test(test_clear_drops_everything_and_fences_fills),
    };
    return cmocka_run_group_tests_name("unit.frontend.cache", tests, NULL, NULL);
}
