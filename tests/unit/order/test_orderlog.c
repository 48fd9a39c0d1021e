/*
 * Unit tests for src/order/orderlog.c: one replica's durable order log.
 * Every test gets its own temporary directory and order-1.db.
 */
#include "unit.h"

#include <pthread.h>
#include <sqlite3.h>

#include "error.h"
#include "orderlog.h"

struct fixture {
    char dir[256];
    char path[512];
    struct orderlog *log;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    unit_tmpdir_make(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/order-1.db", f->dir);
    char errmsg[256] = "";
    if (orderlog_open(&f->log, f->path, errmsg, sizeof errmsg) != 0)
        fail_msg("orderlog_open: %s", errmsg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    orderlog_close(f->log);
    unit_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    char errmsg[256] = "";
    orderlog_close(f->log);
    f->log = NULL;
    if (orderlog_open(&f->log, f->path, errmsg, sizeof errmsg) != 0)
        fail_msg("reopen: %s", errmsg);
}

static struct order mk(int64_t number, uint64_t epoch, const char *rid)
{
    struct order o = {.number = number, .epoch = epoch};
    snprintf(o.trade.request_id, sizeof o.trade.request_id, "%s", rid);
    snprintf(o.trade.name, sizeof o.trade.name, "Stock%lld", (long long)(number % 5));
    o.trade.type = number % 2 ? TRADE_SELL : TRADE_BUY;
    o.trade.quantity = number % 10 + 1;
    return o;
}

/* Entries first..first+n-1 of one epoch; request ids "<tag>:<number>". */
static void mk_range(struct order *out, int64_t first, size_t n, uint64_t epoch, const char *tag)
{
    char rid[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(rid, sizeof rid, "%s:%lld", tag, (long long)(first + (int64_t)i));
        out[i] = mk(first + (int64_t)i, epoch, rid);
    }
}

static struct orderlog_state st(struct fixture *f)
{
    struct orderlog_state s;
    orderlog_state(f->log, &s);
    return s;
}

static void assert_same_order(const struct order *a, const struct order *b)
{
    assert_int_equal(a->number, b->number);
    assert_true(a->epoch == b->epoch);
    assert_string_equal(a->trade.request_id, b->trade.request_id);
    assert_string_equal(a->trade.name, b->trade.name);
    assert_int_equal(a->trade.type, b->trade.type);
    assert_int_equal(a->trade.quantity, b->trade.quantity);
}

/* The whole log must be exactly `want` (numbers 0..n-1). */
static void assert_log(struct fixture *f, const struct order *want, size_t n)
{
    struct order got[64];
    size_t k = 99;
    assert_true(n < 64);
    assert_int_equal(orderlog_read(f->log, 0, 64, got, &k), 0);
    if (k != n)
        fail_msg("log has %zu entries, want %zu", k, n);
    for (size_t i = 0; i < n; i++)
        assert_same_order(&got[i], &want[i]);
    struct orderlog_state s = st(f);
    assert_int_equal(s.last, (int64_t)n - 1);
    assert_true(s.last_epoch == (n ? want[n - 1].epoch : 0));
}

/* Appends n entries one transaction each, as the leader appends journal pages. */
static void append_n(struct fixture *f, struct order *out, size_t n, uint64_t epoch,
                     const char *tag)
{
    char rid[32];
    struct orderlog_state s = st(f);
    for (size_t i = 0; i < n; i++) {
        snprintf(rid, sizeof rid, "%s:%zu", tag, i);
        out[i] = mk(s.last + 1 + (int64_t)i, epoch, rid);
        assert_int_equal(orderlog_apply(f->log, &out[i], 1, INT64_MAX, epoch), 0);
        assert_int_equal(st(f).last, out[i].number);
    }
}

/* ---------------------------------------------------------------- basics */

static void test_empty_log(void **state)
{
    struct fixture *f = *state;
    struct orderlog_state s = st(f);
    assert_int_equal(s.last, -1);
    assert_true(s.last_epoch == 0 && s.promised == 0 && s.log_epoch == 0);
    struct order o;
    assert_int_equal(orderlog_get(f->log, 0, &o), BZ_ENOTFOUND);
    assert_int_equal(orderlog_find_request(f->log, "r:x", &o), BZ_ENOTFOUND);
    size_t n = 99;
    assert_int_equal(orderlog_read(f->log, 0, 10, &o, &n), 0);
    assert_int_equal(n, 0);
}

static void test_append_lookups(void **state)
{
    struct fixture *f = *state;
    struct order want[3];
    append_n(f, want, 3, 2, "r");
    assert_log(f, want, 3);
    struct order got;
    assert_int_equal(orderlog_get(f->log, 1, &got), 0);
    assert_same_order(&got, &want[1]);
    assert_int_equal(orderlog_find_request(f->log, "r:2", &got), 0);
    assert_same_order(&got, &want[2]);
    assert_int_equal(orderlog_get(f->log, 3, &got), BZ_ENOTFOUND);
    assert_int_equal(orderlog_get(f->log, -1, &got), BZ_ENOTFOUND);
}

static void test_read_ranges(void **state)
{
    struct fixture *f = *state;
    struct order all[10];
    append_n(f, all, 10, 1, "r");
    static const struct {
        int64_t from;
        size_t max, n;
    } cases[] = {
        {0, 10, 10}, {0, 100, 10}, {3, 4, 4}, {8, 5, 2},  {9, 1, 1},
        {10, 5, 0},  {50, 5, 0},   {0, 0, 0}, {-5, 3, 3},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct order out[100];
        size_t n = 999;
        assert_int_equal(orderlog_read(f->log, cases[i].from, cases[i].max, out, &n), 0);
        if (n != cases[i].n)
            fail_msg("read(%lld, %zu): %zu entries, want %zu", (long long)cases[i].from,
                     cases[i].max, n, cases[i].n);
        int64_t first = cases[i].from < 0 ? 0 : cases[i].from;
        for (size_t k = 0; k < n; k++)
            assert_same_order(&out[k], &all[first + (int64_t)k]);
    }
}

/* ---------------------------------------------------------------- apply */

static void test_apply_to_empty_and_reapply(void **state)
{
    struct fixture *f = *state;
    struct order e[5];
    mk_range(e, 0, 3, 1, "r");
    assert_int_equal(orderlog_apply(f->log, e, 3, 2, 1), 0);
    assert_log(f, e, 3);
    /* The same (number, epoch) entries again: kept, nothing changes. */
    assert_int_equal(orderlog_apply(f->log, e, 3, 2, 1), 0);
    assert_log(f, e, 3);
    /* A batch overlapping the end: old entries kept, new ones appended. */
    mk_range(e, 0, 5, 1, "r");
    assert_int_equal(orderlog_apply(f->log, e + 1, 4, 4, 1), 0);
    assert_log(f, e, 5);
    /* A re-sent prefix of the log with a lower stale_after changes nothing either. */
    assert_int_equal(orderlog_apply(f->log, e, 2, 1, 1), 0);
    assert_log(f, e, 5);
}

static void test_apply_conflicting_epoch_truncates(void **state)
{
    struct fixture *f = *state;
    struct order local[6], want[6];
    mk_range(local, 0, 6, 1, "old");
    assert_int_equal(orderlog_apply(f->log, local, 6, 5, 1), 0);

    /* The new leader (epoch 2) has entries 3 and 4 from its own epoch. */
    struct order from_leader[2];
    mk_range(from_leader, 3, 2, 2, "new");
    assert_int_equal(orderlog_apply(f->log, from_leader, 2, 4, 2), 0);
    memcpy(want, local, 3 * sizeof *want);
    memcpy(want + 3, from_leader, 2 * sizeof *want);
    assert_log(f, want, 5); /* 5 went with the truncation */
    struct order got;
    assert_int_equal(orderlog_find_request(f->log, "old:3", &got), BZ_ENOTFOUND);
    assert_int_equal(orderlog_find_request(f->log, "old:5", &got), BZ_ENOTFOUND);
    assert_int_equal(orderlog_find_request(f->log, "new:4", &got), 0);
    assert_int_equal(got.number, 4);
}

/* A conflict inside a batch that starts with matching entries. */
static void test_apply_conflict_after_matching_prefix(void **state)
{
    struct fixture *f = *state;
    struct order local[4], batch[4];
    mk_range(local, 0, 4, 1, "a");
    assert_int_equal(orderlog_apply(f->log, local, 4, 3, 1), 0);
    memcpy(batch, local, 2 * sizeof *batch); /* 0,1 same */
    mk_range(batch + 2, 2, 2, 3, "b");       /* 2,3 from epoch 3 */
    assert_int_equal(orderlog_apply(f->log, batch, 4, 3, 3), 0);
    assert_log(f, batch, 4);
}

static void test_apply_gap_refused(void **state)
{
    struct fixture *f = *state;
    struct order local[3], gap[2];
    mk_range(local, 0, 3, 1, "r");
    assert_int_equal(orderlog_apply(f->log, local, 3, 2, 1), 0);
    mk_range(gap, 4, 2, 1, "r"); /* last is 2: 4 leaves a hole at 3 */
    assert_int_equal(orderlog_apply(f->log, gap, 2, 5, 1), BZ_EINVAL);
    assert_log(f, local, 3);
    struct order got;
    assert_int_equal(orderlog_get(f->log, 4, &got), BZ_ENOTFOUND);
}

/* On an empty log anything but 0 is a gap. */
static void test_apply_gap_on_empty_log(void **state)
{
    struct fixture *f = *state;
    struct order e[1];
    mk_range(e, 1, 1, 1, "r");
    assert_int_equal(orderlog_apply(f->log, e, 1, 1, 1), BZ_EINVAL);
    assert_log(f, NULL, 0);
}

static void test_apply_non_consecutive_batch_changes_nothing(void **state)
{
    struct fixture *f = *state;
    struct order local[2], batch[2];
    mk_range(local, 0, 2, 1, "r");
    assert_int_equal(orderlog_apply(f->log, local, 2, 1, 1), 0);
    mk_range(batch, 2, 1, 1, "r");
    batch[1] = mk(4, 1, "r:4"); /* 2 then 4 */
    assert_int_equal(orderlog_apply(f->log, batch, 2, 4, 1), BZ_EINVAL);
    assert_log(f, local, 2); /* entry 2 was rolled back with the rest */
}

/* A batch that would put one request id at two numbers is refused whole. */
static void test_apply_duplicate_request_id_changes_nothing(void **state)
{
    struct fixture *f = *state;
    struct order local[2], batch[2];
    mk_range(local, 0, 2, 1, "r");
    assert_int_equal(orderlog_apply(f->log, local, 2, 1, 1), 0);
    mk_range(batch, 2, 2, 1, "r");
    snprintf(batch[1].trade.request_id, sizeof batch[1].trade.request_id, "r:0");
    assert_true(orderlog_apply(f->log, batch, 2, 3, 1) != 0);
    assert_log(f, local, 2);
}

static void test_apply_deletes_stale_tail(void **state)
{
    struct fixture *f = *state;
    struct order local[7];
    mk_range(local, 0, 7, 1, "r");
    assert_int_equal(orderlog_apply(f->log, local, 7, 6, 1), 0);
    /* Leader of epoch 2 whose log ends at 4: our 5 and 6 (epoch 1) cannot be in it. */
    assert_int_equal(orderlog_apply(f->log, local + 3, 2, 4, 2), 0);
    assert_log(f, local, 5);
    struct order got;
    assert_int_equal(orderlog_find_request(f->log, "r:6", &got), BZ_ENOTFOUND);
    /* A heartbeat (no entries) does the same. */
    struct order more[2];
    mk_range(more, 5, 2, 1, "s");
    assert_int_equal(orderlog_apply(f->log, more, 2, 6, 1), 0);
    assert_int_equal(st(f).last, 6);
    assert_int_equal(orderlog_apply(f->log, NULL, 0, 4, 2), 0);
    assert_log(f, local, 5);
}

static void test_apply_keeps_newer_tail(void **state)
{
    struct fixture *f = *state;
    struct order e[7];
    mk_range(e, 0, 5, 1, "r");
    mk_range(e + 5, 5, 2, 3, "n"); /* 5, 6 from epoch 3 */
    assert_int_equal(orderlog_apply(f->log, e, 7, 6, 3), 0);
    /* A message from an epoch-2 leader ending at 4 does not delete newer entries. */
    assert_int_equal(orderlog_apply(f->log, e, 5, 4, 2), 0);
    assert_log(f, e, 7);
    /* Nor do entries of exactly the leader's epoch count as stale. */
    assert_int_equal(orderlog_apply(f->log, NULL, 0, 4, 3), 0);
    assert_log(f, e, 7);
}

/*
 * Regression (fault runner, seed 42): a catch-up copied entries past the peer's old
 * last number that spanned an epoch change (5, 6 in epoch 1; 7, 8 in epoch 2), then
 * cleaned up "older than epoch 2 past 4", which removed 5 and 6 but kept 7 and 8: a
 * gap. The clean-up now cuts the log from the first such entry, so it stays dense.
 */
static void test_apply_stale_cleanup_never_leaves_a_gap(void **state)
{
    struct fixture *f = *state;
    struct order e[9];
    mk_range(e, 0, 7, 1, "r");
    mk_range(e + 7, 7, 2, 2, "n");
    assert_int_equal(orderlog_apply(f->log, e, 9, 8, 2), 0);
    assert_int_equal(st(f).last, 8);
    assert_int_equal(orderlog_apply(f->log, NULL, 0, 4, 2), 0);
    assert_log(f, e, 5); /* 0..4 remain, nothing after: dense */
    struct order got;
    assert_int_equal(orderlog_get(f->log, 7, &got), BZ_ENOTFOUND);
    assert_int_equal(st(f).last, 4);
    assert_int_equal(st(f).last_epoch, 1);
    /* And it reopens (the open check refuses a log that is not dense). */
    orderlog_close(f->log);
    char err[256];
    assert_int_equal(orderlog_open(&f->log, f->path, err, sizeof err), 0);
    assert_int_equal(st(f).last, 4);
}

static void test_apply_empty_batch_noop(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(orderlog_apply(f->log, NULL, 0, -1, 1), 0);
    assert_log(f, NULL, 0);
    struct order e[3];
    mk_range(e, 0, 3, 2, "r");
    assert_int_equal(orderlog_apply(f->log, e, 3, 2, 2), 0);
    assert_int_equal(orderlog_apply(f->log, NULL, 0, 2, 2), 0);
    assert_int_equal(orderlog_apply(f->log, NULL, 0, 10, 9), 0); /* stale_after beyond us */
    assert_log(f, e, 3);
}

/* ---------------------------------------------------------------- durability */

static void test_promise_and_log_epoch_persist(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(orderlog_promise(f->log, 5, 0), 0); /* the epoch only, from a peer */
    assert_true(st(f).promised == 5 && st(f).promised_leader == 0);
    assert_int_equal(orderlog_promise(f->log, 5, 2), 0); /* then its leader */
    assert_true(st(f).promised == 5 && st(f).promised_leader == 2);
    /* One leader per epoch: a second leader for 5 is refused, even after a restart. */
    assert_int_equal(orderlog_promise(f->log, 5, 3), BZ_ESTALE);
    assert_int_equal(orderlog_promise(f->log, 5, 2), 0);
    assert_int_equal(orderlog_promise(f->log, 5, 0), 0);
    assert_int_equal(orderlog_promise(f->log, 3, 1), BZ_ESTALE); /* never lowered */
    assert_true(st(f).promised == 5 && st(f).promised_leader == 2);
    assert_int_equal(orderlog_set_log_epoch(f->log, 4), 0);
    assert_true(st(f).log_epoch == 4);
    assert_int_equal(orderlog_set_log_epoch(f->log, 2), 0); /* set, not raised */
    assert_true(st(f).log_epoch == 2);
    reopen(f);
    struct orderlog_state s = st(f);
    assert_true(s.promised == 5 && s.promised_leader == 2);
    assert_int_equal(orderlog_promise(f->log, 5, 3), BZ_ESTALE);
    assert_true(s.log_epoch == 2);
    assert_int_equal(orderlog_promise(f->log, 9, 1), 0);
    reopen(f);
    assert_true(st(f).promised == 9);
}

static void test_reopen_preserves_log(void **state)
{
    struct fixture *f = *state;
    struct order e[8];
    mk_range(e, 0, 4, 1, "a");
    assert_int_equal(orderlog_apply(f->log, e, 4, 3, 1), 0);
    append_n(f, e + 4, 4, 2, "b");
    reopen(f);
    assert_log(f, e, 8);
    struct order got;
    assert_int_equal(orderlog_find_request(f->log, "b:3", &got), 0);
    assert_same_order(&got, &e[7]);
    /* Appending resumes where it stopped, and old ids are still refused. */
    struct order o = mk(8, 2, "c:0");
    assert_int_equal(orderlog_apply(f->log, &o, 1, INT64_MAX, 2), 0);
    assert_int_equal(st(f).last, 8);
    o = mk(9, 2, "a:1");
    assert_int_equal(orderlog_apply(f->log, &o, 1, INT64_MAX, 2), BZ_ECONFLICT);
    assert_int_equal(st(f).last, 8);
}

static void test_open_refuses_damaged_log(void **state)
{
    struct fixture *f = *state;
    struct order e[3];
    append_n(f, e, 3, 1, "r");
    orderlog_close(f->log);
    f->log = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM orders WHERE number = 1", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    char errmsg[256] = "";
    assert_int_equal(orderlog_open(&f->log, f->path, errmsg, sizeof errmsg), BZ_EIO);
    assert_null(f->log);
    assert_true(errmsg[0] != '\0');
}

/* Random bytes in the last page (a torn or rotten write): refused at open, never served. */
static void test_open_refuses_corrupted_page(void **state)
{
    struct fixture *f = *state;
    static struct order e[400];
    append_n(f, e, 400, 1, "corrupt");
    orderlog_close(f->log); /* checkpoints the WAL into the file */
    f->log = NULL;
    FILE *fp = fopen(f->path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long size = ftell(fp);
    assert_true(size > 8192);
    assert_int_equal(fseek(fp, size - 4096, SEEK_SET), 0);
    unsigned x = 12345;
    for (int i = 0; i < 4096; i++) {
        x = x * 1103515245u + 12345u;
        fputc((int)(x >> 16) & 0xff, fp);
    }
    fclose(fp);
    char errmsg[256] = "";
    assert_int_equal(orderlog_open(&f->log, f->path, errmsg, sizeof errmsg), BZ_EIO);
    assert_null(f->log);
    assert_non_null(strstr(errmsg, "damaged"));
}

static void test_open_bad_path(void **state)
{
    struct fixture *f = *state;
    char path[600], errmsg[256] = "";
    struct orderlog *log = NULL;
    snprintf(path, sizeof path, "%s/no/such/dir/order.db", f->dir);
    assert_int_equal(orderlog_open(&log, path, errmsg, sizeof errmsg), BZ_EIO);
    assert_null(log);
    assert_true(errmsg[0] != '\0');
}

/* ---------------------------------------------------------------- group transactions */

/* Rows of the file as another connection sees them: what is committed. */
static int64_t committed_rows(struct fixture *f)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM orders", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

static void test_group_commits_many_applies_at_once(void **state)
{
    struct fixture *f = *state;
    struct order e[9];
    mk_range(e, 0, 9, 1, "g");
    assert_int_equal(orderlog_group_commit(f->log), 0); /* none open: nothing to do */
    assert_int_equal(orderlog_apply(f->log, e, 2, INT64_MAX, 1), 0);
    assert_int_equal(committed_rows(f), 2);

    assert_int_equal(orderlog_group_open(f->log), 0);
    assert_int_equal(orderlog_group_open(f->log), 0); /* already open: the same group */
    assert_int_equal(orderlog_apply(f->log, e + 2, 3, INT64_MAX, 1), 0);
    assert_int_equal(orderlog_apply(f->log, e + 5, 2, INT64_MAX, 1), 0);
    /* Visible through the log at once, not yet in the file. */
    assert_log(f, e, 7);
    assert_int_equal(committed_rows(f), 2);
    /* A call that fails inside the group undoes only itself. */
    struct order dup[2];
    mk_range(dup, 7, 2, 1, "h");
    snprintf(dup[1].trade.request_id, sizeof dup[1].trade.request_id, "g:3");
    assert_true(orderlog_apply(f->log, dup, 2, INT64_MAX, 1) != 0);
    assert_int_equal(orderlog_apply(f->log, e + 8, 1, INT64_MAX, 1), BZ_EINVAL); /* a gap */
    assert_log(f, e, 7);
    assert_int_equal(orderlog_promise(f->log, 4, 2), 0);
    assert_int_equal(orderlog_apply(f->log, e + 7, 2, INT64_MAX, 1), 0);

    assert_int_equal(orderlog_group_commit(f->log), 0);
    assert_int_equal(committed_rows(f), 9);
    reopen(f);
    assert_log(f, e, 9);
    assert_int_equal(st(f).promised, 4);
    assert_int_equal(st(f).promised_leader, 2);
}

static void test_group_is_committed_at_close(void **state)
{
    struct fixture *f = *state;
    struct order e[3];
    mk_range(e, 0, 3, 1, "c");
    assert_int_equal(orderlog_group_open(f->log), 0);
    assert_int_equal(orderlog_apply(f->log, e, 3, INT64_MAX, 1), 0);
    assert_int_equal(committed_rows(f), 0);
    reopen(f);
    assert_log(f, e, 3);
    /* Outside a group every apply is its own commit again. */
    struct order more[1];
    mk_range(more, 3, 1, 1, "d");
    assert_int_equal(orderlog_apply(f->log, more, 1, INT64_MAX, 1), 0);
    assert_int_equal(committed_rows(f), 4);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_empty_log),
        T(test_append_lookups),
        T(test_read_ranges),
        T(test_apply_to_empty_and_reapply),
        T(test_apply_conflicting_epoch_truncates),
        T(test_apply_conflict_after_matching_prefix),
        T(test_apply_gap_refused),
        T(test_apply_gap_on_empty_log),
        T(test_apply_non_consecutive_batch_changes_nothing),
        T(test_apply_duplicate_request_id_changes_nothing),
        T(test_apply_deletes_stale_tail),
        T(test_apply_stale_cleanup_never_leaves_a_gap),
        T(test_apply_keeps_newer_tail),
        T(test_apply_empty_batch_noop),
        T(test_promise_and_log_epoch_persist),
        T(test_reopen_preserves_log),
        T(test_open_refuses_damaged_log),
        T(test_open_refuses_corrupted_page),
        T(test_open_bad_path),
        T(test_group_commits_many_applies_at_once),
        T(test_group_is_committed_at_close),
    };
    return cmocka_run_group_tests_name("unit.order.orderlog", tests, NULL, NULL);
}
