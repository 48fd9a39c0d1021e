/*
 * Unit tests for src/order/raftfsm.c, called directly (no Raft): idempotent
 * apply of journal pages, refusal of gaps and contradictions, snapshots taken
 * and installed over an order log on a temporary file.
 */
#include "unit.h"

#include <sqlite3.h>

#include "error.h"
#include "orderlog.h"
#include "pagecodec.h"
#include "raftfsm.h"

struct fx {
    char dir[256];
    struct orderlog *log, *other;
    struct raftfsm fsm, other_fsm;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    unit_tmpdir_make(f->dir, sizeof f->dir);
    char path[512], errmsg[256];
    snprintf(path, sizeof path, "%s/order-1.db", f->dir);
    assert_int_equal(orderlog_open(&f->log, path, errmsg, sizeof errmsg), 0);
    snprintf(path, sizeof path, "%s/order-2.db", f->dir);
    assert_int_equal(orderlog_open(&f->other, path, errmsg, sizeof errmsg), 0);
    raftfsm_init(&f->fsm, f->log, false);
    raftfsm_init(&f->other_fsm, f->other, false);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    raftfsm_close(&f->fsm);
    raftfsm_close(&f->other_fsm);
    orderlog_close(f->log);
    orderlog_close(f->other);
    unit_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* Journal entry n: request id "t:<n>", deterministic trade. */
static struct order journal(int64_t n)
{
    struct order o = {.number = n};
    snprintf(o.trade.request_id, sizeof o.trade.request_id, "t:%lld", (long long)n);
    snprintf(o.trade.name, sizeof o.trade.name, "S%lld", (long long)(n % 4));
    o.trade.type = n % 3 ? TRADE_BUY : TRADE_SELL;
    o.trade.quantity = n % 10 + 1;
    return o;
}

/* Encodes journal entries first..first+n-1 as a page of this epoch; *len receives its size. */
static uint8_t *page(int64_t first, size_t n, uint64_t epoch, size_t *len)
{
    struct order *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++)
        e[i] = journal(first + (int64_t)i);
    *len = pagecodec_page_size(e, n);
    uint8_t *buf = malloc(*len);
    assert_int_equal(pagecodec_page_encode(e, n, epoch, buf, *len), 0);
    free(e);
    return buf;
}

static int apply(struct raftfsm *fsm, int64_t first, size_t n, uint64_t epoch)
{
    size_t len;
    uint8_t *buf = page(first, n, epoch, &len);
    int rv = raftfsm_apply_page(fsm, buf, len);
    free(buf);
    return rv;
}

/* The table holds exactly journal entries 0..count-1. */
static void assert_table(struct orderlog *log, int64_t count)
{
    struct orderlog_state st;
    orderlog_state(log, &st);
    assert_int_equal(st.last, count - 1);
    struct order got[64];
    for (int64_t from = 0; from < count;) {
        size_t n = 0;
        assert_int_equal(orderlog_read(log, from, 64, got, &n), 0);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++, from++) {
            struct order want = journal(from);
            assert_int_equal(got[i].number, from);
            assert_true(trade_same(&got[i].trade, &want.trade));
        }
    }
}

static void test_apply_in_order_and_duplicates(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply(&f->fsm, 0, 5, 1), 0);
    assert_int_equal(apply(&f->fsm, 5, 3, 1), 0);
    assert_table(f->log, 8);
    /* The same page proposed again by a later leader (another epoch) is skipped whole. */
    assert_int_equal(apply(&f->fsm, 5, 3, 2), 0);
    /* A page overlapping the end: the known part is checked and skipped, the rest appended. */
    assert_int_equal(apply(&f->fsm, 6, 6, 2), 0);
    assert_table(f->log, 12);
    /* The first epoch stays on entries applied under it. */
    struct order o;
    assert_int_equal(orderlog_get(f->log, 5, &o), 0);
    assert_int_equal(o.epoch, 1);
    assert_int_equal(orderlog_get(f->log, 11, &o), 0);
    assert_int_equal(o.epoch, 2);
    struct raftfsm_stats s;
    raftfsm_stats(&f->fsm, &s);
    assert_int_equal(s.pages, 4);
    assert_int_equal(s.appended, 12);
    assert_int_equal(s.duplicates, 3 + 2);
    assert_false(s.failed);
}

static void test_gap_is_refused_and_stops(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply(&f->fsm, 0, 3, 1), 0);
    assert_int_equal(apply(&f->fsm, 4, 2, 1), BZ_EINVAL); /* would skip number 3 */
    struct raftfsm_stats s;
    raftfsm_stats(&f->fsm, &s);
    assert_true(s.failed);
    assert_non_null(strstr(s.error, "gap"));
    /* Stopped: even a valid page is refused now, and the table did not move. */
    assert_int_equal(apply(&f->fsm, 3, 1, 1), BZ_EUNAVAIL);
    assert_table(f->log, 3);
}

static void test_contradicting_duplicate_is_refused(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply(&f->fsm, 0, 4, 1), 0);
    struct order e = journal(2);
    e.trade.quantity += 1; /* number 2 with other content */
    struct order run[2] = {e, journal(3)};
    run[1].number = 3;
    size_t len = pagecodec_page_size(run, 2);
    uint8_t *buf = malloc(len);
    assert_int_equal(pagecodec_page_encode(run, 2, 5, buf, len), 0);
    assert_int_equal(raftfsm_apply_page(&f->fsm, buf, len), BZ_EINVAL);
    free(buf);
    struct raftfsm_stats s;
    raftfsm_stats(&f->fsm, &s);
    assert_true(s.failed);
    assert_table(f->log, 4);
}

/* A request id already in the table under another number: the journal never does that. */
static void test_request_id_twice_is_refused(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply(&f->fsm, 0, 2, 1), 0);
    struct order e = journal(2);
    snprintf(e.trade.request_id, sizeof e.trade.request_id, "t:0");
    size_t len = pagecodec_page_size(&e, 1);
    uint8_t *buf = malloc(len);
    assert_int_equal(pagecodec_page_encode(&e, 1, 1, buf, len), 0);
    assert_int_equal(raftfsm_apply_page(&f->fsm, buf, len), BZ_EINVAL);
    free(buf);
    assert_table(f->log, 2);
}

static void test_undecodable_entry_is_refused(void **state)
{
    struct fx *f = *state;
    const char junk[] = "not a page at all";
    assert_int_equal(raftfsm_apply_page(&f->fsm, junk, sizeof junk), BZ_EINVAL);
    struct raftfsm_stats s;
    raftfsm_stats(&f->fsm, &s);
    assert_true(s.failed);
}

static void snapshot_of(struct raftfsm *fsm, struct strbuf *sb)
{
    strbuf_init(sb, 1 << 26);
    assert_int_equal(raftfsm_snapshot_encode(fsm, sb), 0);
}

static void test_snapshot_into_empty_shorter_longer(void **state)
{
    struct fx *f = *state;
    for (int64_t first = 0; first < 2600; first += 100)
        assert_int_equal(apply(&f->fsm, first, 100, (uint64_t)(first / 1000 + 1)), 0);
    struct strbuf sb;
    snapshot_of(&f->fsm, &sb);
    /* Into an empty table: the whole table, epochs included. */
    assert_int_equal(raftfsm_snapshot_install(&f->other_fsm, sb.data, sb.len), 0);
    assert_table(f->other, 2600);
    struct order o;
    assert_int_equal(orderlog_get(f->other, 2500, &o), 0);
    assert_int_equal(o.epoch, 3);
    /* Into the same table again: nothing changes. */
    assert_int_equal(raftfsm_snapshot_install(&f->other_fsm, sb.data, sb.len), 0);
    assert_table(f->other, 2600);
    /* Into a longer table: kept (a restart whose table outran the Raft snapshot). */
    assert_int_equal(apply(&f->other_fsm, 2600, 10, 4), 0);
    assert_int_equal(raftfsm_snapshot_install(&f->other_fsm, sb.data, sb.len), 0);
    assert_table(f->other, 2610);
    struct raftfsm_stats s;
    raftfsm_stats(&f->other_fsm, &s);
    assert_int_equal(s.restores, 3);
    assert_false(s.failed);
    strbuf_free(&sb);
}

static void test_snapshot_that_contradicts_is_refused(void **state)
{
    struct fx *f = *state;
    assert_int_equal(apply(&f->fsm, 0, 10, 1), 0);
    struct strbuf sb;
    snapshot_of(&f->fsm, &sb);
    /* The other table has a different entry 4. */
    struct order run[5];
    for (int i = 0; i < 5; i++)
        run[i] = journal(i);
    run[4].trade.quantity += 1;
    size_t len = pagecodec_page_size(run, 5);
    uint8_t *buf = malloc(len);
    assert_int_equal(pagecodec_page_encode(run, 5, 1, buf, len), 0);
    assert_int_equal(raftfsm_apply_page(&f->other_fsm, buf, len), 0);
    free(buf);
    assert_int_equal(raftfsm_snapshot_install(&f->other_fsm, sb.data, sb.len), BZ_EINVAL);
    struct orderlog_state st;
    orderlog_state(f->other, &st);
    assert_int_equal(st.last, 4);
    /* A damaged snapshot is refused too. */
    sb.data[sb.len / 2] ^= 0x5a;
    struct raftfsm fresh;
    raftfsm_init(&fresh, f->log, false);
    sb.len -= 3;
    assert_int_equal(raftfsm_snapshot_install(&fresh, sb.data, sb.len), BZ_EINVAL);
    raftfsm_close(&fresh);
    strbuf_free(&sb);
}

/* The cost of a synchronous snapshot on the Raft thread, quoted in raftfsm.c. */
static void test_snapshot_cost(void **state)
{
    struct fx *f = *state;
    enum { TOTAL = 100000 };
    for (int64_t first = 0; first < TOTAL; first += PAGECODEC_PAGE_MAX)
        assert_int_equal(apply(&f->fsm, first, PAGECODEC_PAGE_MAX, 1), 0);
    struct strbuf sb;
    uint64_t t0 = clock_now_us();
    snapshot_of(&f->fsm, &sb);
    uint64_t t1 = clock_now_us();
    assert_int_equal(raftfsm_snapshot_install(&f->other_fsm, sb.data, sb.len), 0);
    uint64_t t2 = clock_now_us();
    print_message("snapshot of %d orders: %zu bytes, taken in %.1f ms, installed in %.1f ms\n",
                  TOTAL, sb.len, (double)(t1 - t0) / 1000, (double)(t2 - t1) / 1000);
    assert_table(f->other, TOTAL);
    strbuf_free(&sb);
}

/* Rows of order-1.db as another connection sees them: what is committed to the file. */
static int64_t committed_rows(struct fx *f)
{
    char path[512];
    snprintf(path, sizeof path, "%s/order-1.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM orders", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

/* Consecutive pages share one commit: at raftfsm_flush, or once RAFTFSM_GROUP_MAX are applied. */
static void test_pages_commit_together(void **state)
{
    struct fx *f = *state;
    assert_int_equal(raftfsm_flush(&f->fsm), 0); /* nothing applied: nothing to do */
    assert_int_equal(apply(&f->fsm, 0, 5, 1), 0);
    assert_int_equal(apply(&f->fsm, 5, 3, 1), 0);
    assert_table(f->log, 8);
    assert_int_equal(committed_rows(f), 0);
    assert_int_equal(raftfsm_flush(&f->fsm), 0);
    assert_int_equal(committed_rows(f), 8);

    int64_t next = 8;
    while (next - 8 + PAGECODEC_PAGE_MAX <= RAFTFSM_GROUP_MAX - 1) {
        assert_int_equal(apply(&f->fsm, next, PAGECODEC_PAGE_MAX, 1), 0);
        next += PAGECODEC_PAGE_MAX;
    }
    assert_int_equal(committed_rows(f), 8);
    assert_int_equal(apply(&f->fsm, next, PAGECODEC_PAGE_MAX, 1), 0); /* reaches the bound */
    next += PAGECODEC_PAGE_MAX;
    assert_int_equal(committed_rows(f), next);
    assert_table(f->log, next);
    /* A snapshot install commits what was applied before it, then its own chunks. */
    assert_int_equal(apply(&f->fsm, next, 2, 1), 0);
    next += 2;
    struct strbuf sb;
    strbuf_init(&sb, (size_t)64 << 20);
    assert_int_equal(raftfsm_snapshot_encode(&f->fsm, &sb), 0);
    assert_int_equal(raftfsm_snapshot_install(&f->fsm, sb.data, sb.len), 0);
    strbuf_free(&sb);
    assert_int_equal(committed_rows(f), next);
    struct raftfsm_stats s;
    raftfsm_stats(&f->fsm, &s);
    assert_false(s.failed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_apply_in_order_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_is_refused_and_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contradicting_duplicate_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id_twice_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable_entry_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_into_empty_shorter_longer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_that_contradicts_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_cost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pages_commit_together, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
