/*
 * The order state machine (src/order/raftfsm.c, the same apply and snapshot
 * code as production, over order logs on temporary files) driven through
 * libraft's deterministic in-memory cluster (raft/fixture.h): elections, a
 * partitioned leader, a leader that dies after proposing and before the
 * commit, snapshot install to a lagging node, and seeded random schedules of
 * all of these.
 *
 * The catalog is modelled by `journal`: trades numbered in execution order,
 * never changed. The leader's sequencer copies pages from its cursor as the
 * order service will: the cursor restarts at its table's last + 1 whenever
 * leadership or term changes or a proposal fails, and otherwise advances by
 * each page proposed. After every step the checker reads every replica's
 * table: numbers gap-free from 0, no request id twice, every table a prefix
 * of every other and of the journal.
 *
 * Random schedules print their seed; BAZAAR_RAFT_SEED=<seed> replays one,
 * BAZAAR_RAFT_SCHEDULES=<n> runs more.
 *
 * The last tests run src/order/raftnode.c itself: three nodes with libraft's
 * libuv I/O and TCP transport on 127.0.0.1 (free ports below 32768), in one
 * process: proposals, barriers, a follower refusing, status, a replica
 * restarted behind a snapshot that is not ready until it caught up, and a
 * restart of the whole cluster from disk. Bounded by real-time deadlines.
 */
#include "unit.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <raft.h>
#include <raft/fixture.h>

#include "config.h"
#include "error.h"
#include "orderlog.h"
#include "pagecodec.h"
#include "raftfsm.h"
#include "raftnode.h"

#define MAX_NODES 5

struct cluster {
    struct raft_fixture f;
    unsigned n;
    char dir[256];
    struct orderlog *logs[MAX_NODES];
    struct raftfsm fsms[MAX_NODES];
    uint64_t seed; /* of the schedule, for failure messages; 0 for scripted tests */

    /* The catalog's journal. */
    struct order *journal;
    size_t journal_len, journal_cap;

    /* The sequencer of whichever node leads. */
    unsigned seq_leader;
    raft_term seq_term;
    int64_t cursor;
    unsigned proposals, failed_proposals;
};

struct proposal {
    struct raft_apply req;
    struct cluster *c;
};

/* ---------------------------------------------------------------- a fixture bug */

/*
 * libraft 0.15's in-memory I/O keeps a node's log in an array it assumes starts at index 1: its
 * truncate(index) keeps index - 1 entries. Installing a snapshot (trailing 0) empties the array,
 * after which it holds the entries from snapshot index + 1, and a later truncation (a follower
 * dropping a deposed leader's entries) copies past the array (ASan: heap-buffer-overflow in
 * raft_fixture_step; plain build: a crash in raft_fixture_close). The real libuv I/O is not
 * affected. These wrappers keep, per server, the index the array starts after and translate.
 */
struct fixture_fix {
    struct raft_io *io;
    int (*truncate)(struct raft_io *io, raft_index index);
    int (*snapshot_put)(struct raft_io *io, unsigned trailing, struct raft_io_snapshot_put *req,
                        const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb);
    raft_io_snapshot_put_cb put_cb; /* raft's callback of the install in flight */
    struct raft_io_snapshot_put *put_req;
    raft_index put_index;
    raft_index base; /* the array holds entries base+1.. */
};

static struct fixture_fix fixture_fixes[MAX_NODES]; /* one cluster at a time */

static struct fixture_fix *fixture_fix_of(struct raft_io *io)
{
    for (unsigned i = 0; i < MAX_NODES; i++)
        if (fixture_fixes[i].io == io)
            return &fixture_fixes[i];
    fail_msg("unknown fixture io");
    return NULL;
}

static int fixture_fix_truncate(struct raft_io *io, raft_index index)
{
    struct fixture_fix *x = fixture_fix_of(io);
    /* index 1 is the fixture emptying the array for an installed snapshot. */
    if (index == 1)
        return x->truncate(io, 1);
    assert_true(index > x->base);
    return x->truncate(io, index - x->base);
}

static void fixture_fix_put_cb(struct raft_io_snapshot_put *req, int status)
{
    for (unsigned i = 0; i < MAX_NODES; i++) {
        struct fixture_fix *x = &fixture_fixes[i];
        if (x->put_req == req) {
            raft_io_snapshot_put_cb cb = x->put_cb;
            if (status == 0)
                x->base = x->put_index;
            x->put_req = NULL;
            cb(req, status);
            return;
        }
    }
    fail_msg("unknown snapshot put");
}

static int fixture_fix_snapshot_put(struct raft_io *io, unsigned trailing,
                                    struct raft_io_snapshot_put *req,
                                    const struct raft_snapshot *snapshot,
                                    raft_io_snapshot_put_cb cb)
{
    struct fixture_fix *x = fixture_fix_of(io);
    if (trailing == 0) {
        x->put_cb = cb;
        x->put_req = req;
        x->put_index = snapshot->index;
        cb = fixture_fix_put_cb;
    }
    return x->snapshot_put(io, trailing, req, snapshot, cb);
}

static void fixture_fix_install(struct raft_fixture *f, unsigned i)
{
    struct fixture_fix *x = &fixture_fixes[i];
    memset(x, 0, sizeof *x);
    x->io = &f->servers[i].io;
    x->truncate = x->io->truncate;
    x->snapshot_put = x->io->snapshot_put;
    x->io->truncate = fixture_fix_truncate;
    x->io->snapshot_put = fixture_fix_snapshot_put;
}

/* ---------------------------------------------------------------- cluster */

static void cluster_start(struct cluster *c, unsigned n, unsigned threshold, unsigned trailing)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    unit_tmpdir_make(c->dir, sizeof c->dir);
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (unsigned i = 0; i < n; i++) {
        char path[512], errmsg[256];
        snprintf(path, sizeof path, "%s/order-%u.db", c->dir, i + 1);
        assert_int_equal(orderlog_open(&c->logs[i], path, errmsg, sizeof errmsg), 0);
        raftfsm_init(&c->fsms[i], c->logs[i], false);
        assert_int_equal(raft_fixture_grow(&c->f, &c->fsms[i].fsm), 0);
        fixture_fix_install(&c->f, i);
        struct raft *r = raft_fixture_get(&c->f, i);
        raft_set_snapshot_threshold(r, threshold);
        raft_set_snapshot_trailing(r, trailing);
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&c->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
    c->seq_leader = n;
}

static void cluster_stop(struct cluster *c)
{
    raft_fixture_close(&c->f); /* fails pending proposals: their callbacks still see c */
    for (unsigned i = 0; i < c->n; i++) {
        raftfsm_close(&c->fsms[i]);
        orderlog_close(c->logs[i]);
    }
    unit_tmpdir_remove(c->dir);
    free(c->journal);
}

/* The catalog executes k trades: each gets the next number. */
static void journal_execute(struct cluster *c, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        if (c->journal_len == c->journal_cap) {
            c->journal_cap = c->journal_cap ? 2 * c->journal_cap : 64;
            c->journal = realloc(c->journal, c->journal_cap * sizeof *c->journal);
            assert_non_null(c->journal);
        }
        int64_t n = (int64_t)c->journal_len;
        struct order *o = &c->journal[c->journal_len++];
        memset(o, 0, sizeof *o);
        o->number = n;
        snprintf(o->trade.request_id, sizeof o->trade.request_id, "r:%llx-%lld",
                 (unsigned long long)c->seed, (long long)n);
        snprintf(o->trade.name, sizeof o->trade.name, "Stock%lld", (long long)(n % 5));
        o->trade.type = n % 2 ? TRADE_SELL : TRADE_BUY;
        o->trade.quantity = n % 9 + 1;
    }
}

static int64_t table_last(struct cluster *c, unsigned i)
{
    struct orderlog_state st;
    orderlog_state(c->logs[i], &st);
    return st.last;
}

/* The live node in leader state with the highest term, or c->n. */
static unsigned find_leader(struct cluster *c)
{
    unsigned best = c->n;
    raft_term term = 0;
    for (unsigned i = 0; i < c->n; i++) {
        struct raft *r = raft_fixture_get(&c->f, i);
        if (raft_fixture_alive(&c->f, i) && raft_state(r) == RAFT_LEADER &&
            r->current_term > term) {
            best = i;
            term = r->current_term;
        }
    }
    return best;
}

static void proposal_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct proposal *p = req->data;
    p->c->proposals++;
    if (status != 0) {
        p->c->failed_proposals++;
        p->c->seq_term = 0; /* restart the cursor from the table */
    }
    free(p);
}

/* The sequencer: proposes the next journal page (at most max orders). Returns how many. */
static size_t seq_propose(struct cluster *c, size_t max)
{
    unsigned l = find_leader(c);
    if (l == c->n)
        return 0;
    struct raft *r = raft_fixture_get(&c->f, l);
    if (c->seq_leader != l || c->seq_term != r->current_term) {
        c->seq_leader = l;
        c->seq_term = r->current_term;
        c->cursor = table_last(c, l) + 1;
    }
    if (c->cursor >= (int64_t)c->journal_len)
        return 0;
    size_t k = c->journal_len - (size_t)c->cursor;
    if (k > max)
        k = max;
    const struct order *page = &c->journal[c->cursor];
    struct raft_buffer buf = {.len = pagecodec_page_size(page, k)};
    buf.base = raft_malloc(buf.len);
    assert_non_null(buf.base);
    assert_int_equal(pagecodec_page_encode(page, k, r->current_term, buf.base, buf.len), 0);
    struct proposal *p = calloc(1, sizeof *p);
    p->c = c;
    p->req.data = p;
    if (raft_apply(r, &p->req, &buf, 1, proposal_cb) != 0) {
        raft_free(buf.base);
        free(p);
        c->seq_term = 0;
        return 0;
    }
    c->cursor += (int64_t)k;
    return k;
}

/* ---------------------------------------------------------------- the checker */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static struct order *read_table(struct cluster *c, unsigned i, size_t *n)
{
    int64_t last = table_last(c, i);
    size_t count = (size_t)(last + 1), got = 0;
    struct order *all = calloc(count + 1, sizeof *all);
    while (got < count) {
        size_t k = 0;
        assert_int_equal(orderlog_read(c->logs[i], (int64_t)got, count - got, all + got, &k), 0);
        if (k == 0)
            break;
        got += k;
    }
    *n = got;
    return all;
}

static void check(struct cluster *c, const char *when)
{
    struct order *tables[MAX_NODES];
    size_t lens[MAX_NODES];
    for (unsigned i = 0; i < c->n; i++) {
        struct raftfsm_stats s;
        raftfsm_stats(&c->fsms[i], &s);
        if (s.failed)
            fail_msg("seed %llu, %s: node %u state machine failed: %s", (unsigned long long)c->seed,
                     when, i + 1, s.error);
        tables[i] = read_table(c, i, &lens[i]);
        if ((int64_t)lens[i] != table_last(c, i) + 1)
            fail_msg("seed %llu, %s: node %u has %zu rows for last number %lld",
                     (unsigned long long)c->seed, when, i + 1, lens[i],
                     (long long)table_last(c, i));
        const char **ids = calloc(lens[i] + 1, sizeof *ids);
        for (size_t k = 0; k < lens[i]; k++) {
            if (tables[i][k].number != (int64_t)k)
                fail_msg("seed %llu, %s: node %u: row %zu has number %lld (gap)",
                         (unsigned long long)c->seed, when, i + 1, k,
                         (long long)tables[i][k].number);
            if (k >= c->journal_len || !trade_same(&tables[i][k].trade, &c->journal[k].trade))
                fail_msg("seed %llu, %s: node %u: order %zu is not the journal's",
                         (unsigned long long)c->seed, when, i + 1, k);
            ids[k] = tables[i][k].trade.request_id;
        }
        qsort(ids, lens[i], sizeof *ids, cmp_str);
        for (size_t k = 1; k < lens[i]; k++)
            if (strcmp(ids[k - 1], ids[k]) == 0)
                fail_msg("seed %llu, %s: node %u: request id %s twice", (unsigned long long)c->seed,
                         when, i + 1, ids[k]);
        free(ids);
    }
    for (unsigned i = 0; i < c->n; i++)
        for (unsigned j = i + 1; j < c->n; j++) {
            size_t m = lens[i] < lens[j] ? lens[i] : lens[j];
            for (size_t k = 0; k < m; k++)
                if (!trade_same(&tables[i][k].trade, &tables[j][k].trade))
                    fail_msg("seed %llu, %s: nodes %u and %u differ at %zu",
                             (unsigned long long)c->seed, when, i + 1, j + 1, k);
        }
    for (unsigned i = 0; i < c->n; i++)
        free(tables[i]);
}

/* Steps (proposing pages of `page` orders as leadership allows) until every live node's table
 * holds the whole journal. False if that does not happen within max_ms of cluster time. */
static bool run_until_logged(struct cluster *c, size_t page, unsigned max_ms)
{
    raft_time end = raft_fixture_time(&c->f) + max_ms;
    while (raft_fixture_time(&c->f) < end) {
        bool done = true;
        for (unsigned i = 0; i < c->n; i++)
            if (raft_fixture_alive(&c->f, i) && table_last(c, i) + 1 != (int64_t)c->journal_len)
                done = false;
        if (done)
            return true;
        /* Re-propose from the table when nothing moved for a while (a page lost with a leader). */
        seq_propose(c, page);
        raft_fixture_step_until_elapsed(&c->f, 20);
    }
    return false;
}

static unsigned elect_any(struct cluster *c)
{
    assert_true(raft_fixture_step_until_has_leader(&c->f, 10000));
    unsigned l = find_leader(c);
    assert_true(l < c->n);
    return l;
}

/* Steps one event at a time until a live leader other than `old` appears; returns it. */
static unsigned wait_new_leader(struct cluster *c, unsigned old)
{
    raft_time end = raft_fixture_time(&c->f) + 10000;
    unsigned l;
    while (((l = find_leader(c)) == old || l == c->n) && raft_fixture_time(&c->f) < end)
        raft_fixture_step(&c->f);
    return l;
}

static struct raftfsm_stats stats(struct cluster *c, unsigned i)
{
    struct raftfsm_stats s;
    raftfsm_stats(&c->fsms[i], &s);
    return s;
}

/* ---------------------------------------------------------------- scripted scenarios */

static void test_elections(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 3, 1024, 128);
    unsigned l1 = elect_any(&c);
    journal_execute(&c, 40);
    assert_true(run_until_logged(&c, 5, 10000));
    check(&c, "first leader");
    /* The leader dies: another is elected and goes on from its table. */
    raft_fixture_kill(&c.f, l1);
    assert_true(raft_fixture_step_until_has_no_leader(&c.f, 10000) || find_leader(&c) != l1);
    unsigned l2 = elect_any(&c);
    assert_int_not_equal(l1, l2);
    journal_execute(&c, 25);
    assert_true(run_until_logged(&c, 4, 10000));
    check(&c, "second leader");
    raft_fixture_revive(&c.f, l1);
    assert_true(run_until_logged(&c, 4, 10000));
    check(&c, "old leader back");
    assert_int_equal(table_last(&c, l1), 64);
    cluster_stop(&c);
}

static void test_partitioned_leader(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 3, 1024, 128);
    unsigned l = elect_any(&c);
    journal_execute(&c, 20);
    assert_true(run_until_logged(&c, 6, 10000));
    /* Cut the leader off, then let it propose the next trades: they cannot commit. */
    for (unsigned j = 0; j < c.n; j++)
        if (j != l) {
            raft_fixture_disconnect(&c.f, l, j);
            raft_fixture_disconnect(&c.f, j, l);
        }
    journal_execute(&c, 10);
    assert_int_equal(seq_propose(&c, 10), 10);
    raft_fixture_step_until_elapsed(&c.f, 200);
    assert_int_equal(table_last(&c, l), 19);
    /* The majority elects a new leader, whose sequencer copies the same page again. */
    unsigned l2 = wait_new_leader(&c, l);
    assert_true(l2 != l && l2 < c.n);
    raft_time stop = raft_fixture_time(&c.f) + 10000;
    while (raft_fixture_time(&c.f) < stop && (table_last(&c, l2) != 29)) {
        seq_propose(&c, 10);
        raft_fixture_step_until_elapsed(&c.f, 20);
    }
    assert_int_equal(table_last(&c, l2), 29);
    assert_int_equal(table_last(&c, l), 19);
    check(&c, "during the partition");
    /* Healed: the old leader steps down, drops its uncommitted page and logs the committed one. */
    for (unsigned j = 0; j < c.n; j++)
        if (j != l) {
            raft_fixture_reconnect(&c.f, l, j);
            raft_fixture_reconnect(&c.f, j, l);
        }
    assert_true(run_until_logged(&c, 10, 10000));
    check(&c, "after the partition");
    assert_int_equal(table_last(&c, l), 29);
    cluster_stop(&c);
}

/*
 * The leader proposes a page that reaches the followers' logs, and dies before it learns of a
 * majority. The new leader has the page in its log uncommitted, and its sequencer (cursor at its
 * table's end) proposes the same orders again: both commit, the second is skipped entry by entry.
 */
static void test_leader_crash_before_commit(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 3, 1024, 128);
    unsigned l = elect_any(&c);
    journal_execute(&c, 10);
    assert_true(run_until_logged(&c, 10, 10000));
    for (unsigned j = 0; j < c.n; j++)
        if (j != l)
            raft_fixture_saturate(&c.f, j, l); /* the leader never hears the acks */
    journal_execute(&c, 5);
    assert_int_equal(seq_propose(&c, 5), 5);
    for (unsigned j = 0; j < c.n; j++)
        if (j != l)
            assert_true(raft_fixture_step_until_delivered(&c.f, l, j, 1000));
    raft_fixture_step_until_elapsed(&c.f, 30); /* followers persist the page */
    for (unsigned i = 0; i < c.n; i++)
        assert_int_equal(table_last(&c, i), 9); /* not committed anywhere */
    raft_fixture_kill(&c.f, l);
    for (unsigned j = 0; j < c.n; j++)
        if (j != l)
            raft_fixture_desaturate(&c.f, j, l);
    /* The new leader's sequencer starts at once, before the old page commits. */
    unsigned l2 = wait_new_leader(&c, l);
    assert_true(l2 < c.n && l2 != l);
    assert_int_equal(table_last(&c, l2), 9);
    assert_int_equal(seq_propose(&c, 5), 5);
    assert_true(run_until_logged(&c, 5, 10000));
    check(&c, "after the new leader");
    uint64_t dups = 0;
    for (unsigned i = 0; i < c.n; i++)
        if (i != l)
            dups += stats(&c, i).duplicates;
    assert_true(dups >= 5); /* the page was proposed twice and logged once */
    raft_fixture_revive(&c.f, l);
    assert_true(run_until_logged(&c, 5, 10000));
    check(&c, "old leader back");
    cluster_stop(&c);
}

/* Same, but the page never left the leader: the new leader's copy is the only one. */
static void test_leader_crash_page_lost(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 3, 1024, 128);
    unsigned l = elect_any(&c);
    journal_execute(&c, 10);
    assert_true(run_until_logged(&c, 10, 10000));
    for (unsigned j = 0; j < c.n; j++)
        if (j != l)
            raft_fixture_saturate(&c.f, l, j);
    journal_execute(&c, 5);
    assert_int_equal(seq_propose(&c, 5), 5);
    raft_fixture_step_until_elapsed(&c.f, 30);
    raft_fixture_kill(&c.f, l);
    for (unsigned j = 0; j < c.n; j++)
        if (j != l)
            raft_fixture_desaturate(&c.f, l, j);
    assert_true(run_until_logged(&c, 5, 10000));
    check(&c, "after the new leader");
    raft_fixture_revive(&c.f, l); /* its uncommitted copy is truncated by Raft, never applied */
    assert_true(run_until_logged(&c, 5, 10000));
    check(&c, "old leader back");
    assert_int_equal(table_last(&c, l), 14);
    cluster_stop(&c);
}

static void test_snapshot_install(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 3, 8, 2);
    unsigned l = elect_any(&c);
    unsigned lag = (l + 1) % c.n;
    journal_execute(&c, 10);
    assert_true(run_until_logged(&c, 3, 10000));
    raft_fixture_kill(&c.f, lag);
    journal_execute(&c, 120);
    assert_true(run_until_logged(&c, 3, 20000));
    assert_true(stats(&c, l).snapshots >= 1);
    assert_int_equal(table_last(&c, lag), 9);
    raft_fixture_revive(&c.f, lag);
    assert_true(run_until_logged(&c, 3, 20000));
    check(&c, "after the install");
    assert_true(stats(&c, lag).restores >= 1);
    assert_int_equal(table_last(&c, lag), 129);
    cluster_stop(&c);
}

/* ---------------------------------------------------------------- random schedules */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: small, seedable, the same sequence on every platform. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
    return (unsigned)(rng_next(s) % n);
}

/*
 * libraft 0.15 commits entries of earlier terms by counting replicas (Figure 8 of the Raft paper)
 * and then shuts down a node whose committed entry a later leader overwrites (docs/design.md,
 * "A node libraft shut down"). The libuv node reopens itself (test_node_reopen); the fixture
 * cannot reopen a server without losing what it persisted, so such a node is killed for the
 * rest of the schedule. Its table stays under check(): that it holds no wrong order is the
 * safety the design argues. Returns how many nodes are out.
 */
static unsigned take_out_shut_down(struct cluster *c, bool out[])
{
    unsigned k = 0;
    for (unsigned i = 0; i < c->n; i++) {
        if (!out[i] && raft_fixture_alive(&c->f, i) &&
            raft_state(raft_fixture_get(&c->f, i)) == RAFT_UNAVAILABLE) {
            print_message("  seed %llu: libraft shut node %u down; out of the schedule\n",
                          (unsigned long long)c->seed, i + 1);
            out[i] = true;
            raft_fixture_kill(&c->f, i);
        }
        k += out[i];
    }
    return k;
}

static void run_schedule(uint64_t seed)
{
    uint64_t s = seed ? seed : 1;
    struct cluster c;
    unsigned n = rng_below(&s, 2) ? 5 : 3;
    cluster_start(&c, n, 16, 4);
    c.seed = seed;
    print_message("schedule seed %llu: %u nodes\n", (unsigned long long)seed, n);
    char when[64];
    bool out[MAX_NODES] = {false};
    for (int step = 0; step < 250; step++) {
        unsigned a = rng_below(&s, 100), i = rng_below(&s, n), j = rng_below(&s, n);
        unsigned alive = 0;
        for (unsigned k = 0; k < n; k++)
            alive += raft_fixture_alive(&c.f, k);
        if (a < 25) {
            journal_execute(&c, 1 + rng_below(&s, 6));
        } else if (a < 50) {
            seq_propose(&c, 1 + rng_below(&s, 8));
        } else if (a < 55) {
            if (alive > 1 && raft_fixture_alive(&c.f, i))
                raft_fixture_kill(&c.f, i); /* the leader, as often as anyone */
        } else if (a < 58) {
            unsigned l = find_leader(&c);
            if (l < n && alive > 1)
                raft_fixture_kill(&c.f, l); /* right after proposing, before the commit */
        } else if (a < 68) {
            if (!raft_fixture_alive(&c.f, i) && !out[i])
                raft_fixture_revive(&c.f, i);
        } else if (a < 73) {
            if (i != j) {
                raft_fixture_disconnect(&c.f, i, j);
                raft_fixture_disconnect(&c.f, j, i);
            }
        } else if (a < 80) {
            if (i != j) {
                raft_fixture_reconnect(&c.f, i, j);
                raft_fixture_reconnect(&c.f, j, i);
            }
        } else if (a < 84) {
            raft_fixture_set_disk_latency(&c.f, i, 1 + rng_below(&s, 60));
        } else if (a < 88) {
            raft_fixture_set_network_latency(&c.f, i, 1 + rng_below(&s, 40));
        } else {
            raft_fixture_step_until_elapsed(&c.f, 1 + rng_below(&s, 300));
        }
        raft_fixture_step_n(&c.f, 1 + rng_below(&s, 20));
        snprintf(when, sizeof when, "step %d (action %u)", step, a);
        check(&c, when);
        take_out_shut_down(&c, out);
    }
    /* Heal everything: every trade the catalog executed reaches every table, once. */
    for (unsigned i = 0; i < n; i++) {
        if (!raft_fixture_alive(&c.f, i) && !out[i])
            raft_fixture_revive(&c.f, i);
        raft_fixture_set_disk_latency(&c.f, i, 10);
        raft_fixture_set_network_latency(&c.f, i, 15);
        for (unsigned j = 0; j < n; j++)
            if (i != j)
                raft_fixture_reconnect(&c.f, i, j);
    }
    /* With a majority out, nothing can commit: only the tables' safety is left to check. */
    unsigned gone = take_out_shut_down(&c, out), before;
    bool logged = false;
    do {
        before = gone;
        logged = gone <= (n - 1) / 2 && run_until_logged(&c, 8, 60000);
        gone = take_out_shut_down(&c, out); /* another may have gone while healing */
    } while (!logged && gone != before && gone <= (n - 1) / 2);
    if (gone <= (n - 1) / 2 && !logged)
        fail_msg("seed %llu: the journal (%zu orders) did not reach every table",
                 (unsigned long long)seed, c.journal_len);
    check(&c, "healed");
    uint64_t dups = 0, restores = 0;
    for (unsigned i = 0; i < n; i++) {
        dups += stats(&c, i).duplicates;
        restores += stats(&c, i).restores;
    }
    print_message("  %zu orders, %u proposals (%u failed), %llu duplicates skipped, %llu "
                  "snapshots installed\n",
                  c.journal_len, c.proposals, c.failed_proposals, (unsigned long long)dups,
                  (unsigned long long)restores);
    cluster_stop(&c);
}

static void test_random_schedules(void **state)
{
    (void)state;
    /*
     * make test runs schedules 1..100 and the regressions: the same every time, because libraft
     * 0.15's fixture has a crash of its own that about one random schedule in 2,000 meets
     * (docs/design.md, "A node libraft shut down"), and a run of the suite must not fail by
     * chance. make sim explores: BAZAAR_RAFT_SEED=s replays schedule s, and with
     * BAZAAR_RAFT_SCHEDULES=N runs s..s+N-1 (a crash names only the first seed);
     * BAZAAR_RAFT_SEED=random picks s from the clock.
     */
    const char *replay = getenv("BAZAAR_RAFT_SEED");
    const char *more = getenv("BAZAAR_RAFT_SCHEDULES");
    uint64_t count = 100, base = 1;
    if (more && more[0])
        assert_int_equal(parse_u64_str(more, 10000000, &count), 0);
    if (replay && strcmp(replay, "random") == 0) {
        base = clock_now_us() ^ ((uint64_t)getpid() << 32);
    } else if (replay && replay[0]) {
        assert_int_equal(parse_u64_str(replay, UINT64_MAX, &base), 0);
        if (!(more && more[0]))
            count = 1;
    } else {
        /* Seeds that once failed: 62815975902635 is the Figure 8 case, two of three nodes shut
         * down by libraft (it failed before take_out_shut_down). */
        static const uint64_t regressions[] = {62815975902635ULL};
        for (size_t k = 0; k < sizeof regressions / sizeof regressions[0]; k++)
            run_schedule(regressions[k]);
    }
    print_message("random schedules from seed %llu (replay one with BAZAAR_RAFT_SEED=<seed>)\n",
                  (unsigned long long)base);
    for (uint64_t k = 0; k < count; k++)
        run_schedule(base + k);
}

/* ---------------------------------------------------------------- the libuv node */

/* A port in 20000-31999 that 127.0.0.1 can bind right now (as tests/lib/bazaar.py free_port). */
static int free_port(void)
{
    static int handed[64], nhanded;
    uint64_t s = clock_now_us() ^ (uint64_t)getpid();
    for (int attempt = 0; attempt < 500; attempt++) {
        int port = 20000 + (int)(rng_next(&s) % 12000), dup = 0;
        for (int i = 0; i < nhanded; i++)
            dup |= handed[i] == port;
        if (dup)
            continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok && nhanded < 64) {
            handed[nhanded++] = port;
            return port;
        }
    }
    fail_msg("no free port");
    return -1;
}

struct uvcluster {
    char dir[256];
    struct bz_config cfg;
    struct orderlog *logs[3];
    struct raftnode *nodes[3];
};

static const struct raftnode_options uv_opts = {.election_timeout_ms = 300,
                                                .heartbeat_timeout_ms = 30};

static void uv_open(struct uvcluster *u, int i)
{
    char path[512], errmsg[256];
    snprintf(path, sizeof path, "%s/order-%d.db", u->cfg.data_dir, i + 1);
    assert_int_equal(orderlog_open(&u->logs[i], path, errmsg, sizeof errmsg), 0);
    if (raftnode_start(&u->nodes[i], &u->cfg, i + 1, u->logs[i], &uv_opts, errmsg, sizeof errmsg) !=
        0)
        fail_msg("raftnode_start %d: %s", i + 1, errmsg);
}

static void uv_close_node(struct uvcluster *u, int i)
{
    raftnode_stop(u->nodes[i]);
    u->nodes[i] = NULL;
    orderlog_close(u->logs[i]);
    u->logs[i] = NULL;
}

/* dst = dir + suffix, within a config path buffer. */
static void path_join(char dst[CONFIG_PATH_MAX], const char *dir, const char *suffix)
{
    size_t a = strlen(dir), b = strlen(suffix);
    assert_true(a + b < CONFIG_PATH_MAX);
    memcpy(dst, dir, a);
    memcpy(dst + a, suffix, b + 1);
}

static int uv_setup(void **state)
{
    struct uvcluster *u = calloc(1, sizeof *u);
    *state = u;
    unit_tmpdir_make(u->dir, sizeof u->dir);
    config_init_defaults(&u->cfg);
    char errmsg[256], v[64], sec[16];
    path_join(u->cfg.data_dir, u->dir, "/data");
    assert_int_equal(mkdir(u->cfg.data_dir, 0700), 0);
    assert_int_equal(config_set(&u->cfg, "replication", "mode", "raft", errmsg, sizeof errmsg), 0);
    assert_int_equal(
        config_set(&u->cfg, "replication", "snapshot_threshold", "16", errmsg, sizeof errmsg), 0);
    assert_int_equal(
        config_set(&u->cfg, "replication", "snapshot_trailing", "4", errmsg, sizeof errmsg), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(sec, sizeof sec, "order.%d", i + 1);
        snprintf(v, sizeof v, "127.0.0.1:%d", free_port());
        assert_int_equal(config_set(&u->cfg, sec, "listen", v, errmsg, sizeof errmsg), 0);
        snprintf(v, sizeof v, "127.0.0.1:%d", free_port());
        assert_int_equal(config_set(&u->cfg, sec, "raft_listen", v, errmsg, sizeof errmsg), 0);
    }
    for (int i = 0; i < 3; i++)
        uv_open(u, i);
    return 0;
}

/* Runs after a failed test too, so no node outlives its test. */
static int uv_teardown(void **state)
{
    struct uvcluster *u = *state;
    for (int i = 0; i < 3; i++)
        if (u->nodes[i])
            uv_close_node(u, i);
        else if (u->logs[i])
            orderlog_close(u->logs[i]);
    unit_tmpdir_remove(u->dir);
    free(u);
    return 0;
}

/* The index of the ready leader, waiting up to 10 s; fails otherwise. */
static int uv_leader(struct uvcluster *u)
{
    uint64_t end = clock_now_ms() + 10000;
    while (clock_now_ms() < end) {
        for (int i = 0; i < 3; i++)
            if (u->nodes[i] && raftnode_is_leader(u->nodes[i]))
                return i;
        usleep(5000);
    }
    fail_msg("no ready leader within 10 s");
    return -1;
}

static void uv_wait_last(struct uvcluster *u, int i, int64_t last)
{
    uint64_t end = clock_now_ms() + 10000;
    struct orderlog_state st;
    do {
        orderlog_state(u->logs[i], &st);
        if (st.last == last)
            return;
        usleep(2000);
    } while (clock_now_ms() < end);
    fail_msg("node %d: last %lld, want %lld", i + 1, (long long)st.last, (long long)last);
}

static struct order *uv_journal(int64_t first, size_t n)
{
    struct order *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        int64_t num = first + (int64_t)i;
        e[i].number = num;
        snprintf(e[i].trade.request_id, sizeof e[i].trade.request_id, "u:%lld", (long long)num);
        snprintf(e[i].trade.name, sizeof e[i].trade.name, "Stock%lld", (long long)(num % 3));
        e[i].trade.type = TRADE_BUY;
        e[i].trade.quantity = 1;
    }
    return e;
}

/* The verdict of an asynchronous proposal. */
struct uv_verdict {
    atomic_int done, status;
};

static void uv_verdict_cb(void *arg, int status)
{
    struct uv_verdict *v = arg;
    atomic_store(&v->status, status);
    atomic_store(&v->done, 1);
}

static int uv_verdict_wait(struct uv_verdict *v)
{
    uint64_t until = clock_now_ms() + 5000;
    while (!atomic_load(&v->done) && clock_now_ms() < until)
        usleep(500);
    return atomic_load(&v->done) ? atomic_load(&v->status) : BZ_ETIMEDOUT;
}

static void test_node_cluster(void **state)
{
    struct uvcluster *u = *state;
    int l = uv_leader(u), f = (l + 1) % 3;

    /* 2500 orders in one call: three pages, three Raft entries, applied everywhere. */
    struct order *e = uv_journal(0, 2500);
    assert_int_equal(raftnode_propose_wait(u->nodes[l], e, 2500, 5000), 0);
    free(e);
    struct orderlog_state st;
    orderlog_state(u->logs[l], &st);
    assert_int_equal(st.last, 2499); /* applied on the leader when the call returns */
    assert_int_equal(raftnode_barrier_wait(u->nodes[l], 5000), 0);
    for (int i = 0; i < 3; i++)
        uv_wait_last(u, i, 2499);

    /* A follower refuses: nothing is appended. */
    e = uv_journal(2500, 1);
    assert_int_equal(raftnode_propose_wait(u->nodes[f], e, 1, 5000), BZ_ENOTLEADER);
    assert_int_equal(raftnode_barrier_wait(u->nodes[f], 5000), BZ_ENOTLEADER);
    free(e);
    /* Entries that cannot form a page are refused before anything is queued. */
    e = uv_journal(2500, 2);
    e[1].number = 2600;
    assert_int_equal(raftnode_propose_wait(u->nodes[l], e, 2, 5000), BZ_EINVAL);
    free(e);

    /* Status on the leader: role, indexes, each replica's match index. */
    json_t *status = raftnode_status_json(u->nodes[l], 2000);
    assert_non_null(status);
    assert_string_equal(json_string_value(json_object_get(status, "role")), "leader");
    assert_int_equal(json_integer_value(json_object_get(status, "leader")), l + 1);
    assert_int_equal(json_integer_value(json_object_get(status, "last_number")), 2499);
    assert_true(json_is_true(json_object_get(status, "ready")));
    json_t *reps = json_object_get(status, "replicas");
    assert_int_equal(json_array_size(reps), 3);
    for (size_t i = 0; i < 3; i++)
        assert_true(json_integer_value(json_object_get(json_array_get(reps, i), "match_index")) >=
                    1);
    json_decref(status);
    struct raftnode_info info;
    uint64_t until = clock_now_ms() + 5000;
    do {
        raftnode_info(u->nodes[f], &info);
        usleep(2000);
    } while (!info.ready && clock_now_ms() < until);
    assert_int_equal(info.role, RAFTNODE_FOLLOWER);
    assert_int_equal(info.leader_id, l + 1);
    assert_true(info.ready);
    assert_false(info.leader_ready);

    /* Pipelined pages (the sequencer's): proposed back to back, applied in order. */
    e = uv_journal(2500, 20);
    struct uv_verdict v1 = {0}, v2 = {0};
    assert_int_equal(raftnode_propose(u->nodes[l], e, 10, uv_verdict_cb, &v1), 0);
    assert_int_equal(raftnode_propose(u->nodes[l], e + 10, 10, uv_verdict_cb, &v2), 0);
    assert_int_equal(uv_verdict_wait(&v1), 0);
    assert_int_equal(uv_verdict_wait(&v2), 0);
    free(e);
    orderlog_state(u->logs[l], &st);
    assert_int_equal(st.last, 2519);
    /* The gap guard: a page that would follow one never appended (2520..2529) is refused, and
     * the state machine goes on (it would stop at a gap). */
    e = uv_journal(2530, 5);
    assert_int_equal(raftnode_propose_wait(u->nodes[l], e, 5, 5000), BZ_EUNAVAIL);
    free(e);
    orderlog_state(u->logs[l], &st);
    assert_int_equal(st.last, 2519);
    raftnode_info(u->nodes[l], &info);
    assert_false(info.fsm_failed);

    /* A follower stops; 40 more pages (past the snapshot threshold of 16) commit without it. */
    uv_close_node(u, f);
    for (int k = 0; k < 40; k++) {
        e = uv_journal(2500 + k * 10, 10);
        assert_int_equal(raftnode_propose_wait(u->nodes[l], e, 10, 5000), 0);
        free(e);
    }
    /* It restarts behind the leader's log start: caught up through a snapshot, and not ready
     * before its table holds everything committed when it started. */
    uv_open(u, f);
    uint64_t end = clock_now_ms() + 10000;
    bool ready = false;
    while (!ready && clock_now_ms() < end) {
        raftnode_info(u->nodes[f], &info);
        orderlog_state(u->logs[f], &st);
        if (info.ready) {
            ready = true;
            orderlog_state(u->logs[f], &st);
            assert_int_equal(st.last, 2899);
        }
        usleep(500);
    }
    assert_true(ready);
    status = raftnode_status_json(u->nodes[f], 2000);
    assert_non_null(status);
    assert_true(json_integer_value(json_object_get(json_object_get(status, "fsm"), "restores")) >=
                1);
    json_decref(status);

    /* The whole cluster stops and starts again from disk: same tables, and it goes on. */
    for (int i = 0; i < 3; i++)
        uv_close_node(u, i);
    for (int i = 0; i < 3; i++)
        uv_open(u, i);
    l = uv_leader(u);
    e = uv_journal(2900, 5);
    assert_int_equal(raftnode_propose_wait(u->nodes[l], e, 5, 5000), 0);
    free(e);
    for (int i = 0; i < 3; i++)
        uv_wait_last(u, i, 2904);
}

/*
 * libraft shuts a node down for good on some failures (docs/design.md, "A node libraft shut
 * down"): here its next term change fails to persist. The node reopens itself from its data
 * directory, takes part in the election that follows, and its table goes on with the others.
 */
static void test_node_reopen(void **state)
{
    struct uvcluster *u = *state;
    int l = uv_leader(u), f = (l + 1) % 3;
    struct order *e = uv_journal(0, 100);
    assert_int_equal(raftnode_propose_wait(u->nodes[l], e, 100, 5000), 0);
    free(e);
    for (int i = 0; i < 3; i++)
        uv_wait_last(u, i, 99);

    raftnode_fault_term(u->nodes[f]);
    uv_close_node(u, l); /* the election that follows changes f's term */
    struct raftnode_info info;
    uint64_t end = clock_now_ms() + 10000;
    do {
        raftnode_info(u->nodes[f], &info);
        usleep(2000);
    } while (info.reopens == 0 && clock_now_ms() < end);
    assert_int_equal(info.reopens, 1);

    /* The two left elect a leader (f's vote is needed), which goes on from its table. */
    int l2 = uv_leader(u);
    assert_int_not_equal(l2, l);
    e = uv_journal(100, 20);
    assert_int_equal(raftnode_propose_wait(u->nodes[l2], e, 20, 5000), 0);
    free(e);
    uv_open(u, l);
    for (int i = 0; i < 3; i++)
        uv_wait_last(u, i, 119);
    end = clock_now_ms() + 10000;
    do {
        raftnode_info(u->nodes[f], &info);
        usleep(2000);
    } while (!info.ready && clock_now_ms() < end);
    assert_true(info.ready);
    assert_false(info.fsm_failed);
    assert_int_equal(info.reopens, 1);
    json_t *status = raftnode_status_json(u->nodes[f], 2000);
    assert_non_null(status);
    assert_int_equal(json_integer_value(json_object_get(status, "reopens")), 1);
    json_decref(status);
}

/*
 * Snapshots are read on a worker (raftfsm_set_async_snapshots): a node stopped while one is being
 * read, and a node reopened meanwhile, must wait for it and close cleanly (ASan watches). 48
 * pages of 1,000 orders cross the snapshot threshold (16 entries) three times on every node, and
 * each snapshot's worker first waits 400 ms, so the stops below meet snapshots in flight.
 */
static void test_node_snapshot_in_flight(void **state)
{
    struct uvcluster *u = *state;
    int l = uv_leader(u), f = (l + 1) % 3;
    for (int i = 0; i < 3; i++)
        raftnode_fault_slow_snapshot(u->nodes[i], 400);
    struct order *e = uv_journal(0, 48000);
    for (int k = 0; k < 48; k++)
        assert_int_equal(raftnode_propose_wait(u->nodes[l], e + k * 1000, 1000, 10000), 0);
    free(e);
    raftnode_fault_term(u->nodes[f]); /* a reopen on the next election, maybe mid-snapshot */
    uv_close_node(u, l);
    uv_open(u, l);
    int l2 = uv_leader(u);
    e = uv_journal(48000, 10);
    assert_int_equal(raftnode_propose_wait(u->nodes[l2], e, 10, 10000), 0);
    free(e);
    for (int i = 0; i < 3; i++)
        uv_wait_last(u, i, 48009);
    int g = (l + 2) % 3; /* never stopped: its counters cover the whole test */
    json_t *status = raftnode_status_json(u->nodes[g], 2000);
    assert_non_null(status);
    assert_true(json_integer_value(json_object_get(json_object_get(status, "fsm"), "snapshots")) >=
                1);
    json_decref(status);
    for (int i = 0; i < 3; i++)
        uv_close_node(u, i); /* each maybe while its snapshot is read */
}

/* Start-up errors leave nothing running: a busy Raft port, a replica missing from the config. */
static void test_node_start_errors(void **state)
{
    struct uvcluster *u = *state;
    char path[512], errmsg[256];
    struct orderlog *log;
    snprintf(path, sizeof path, "%s/extra.db", u->dir);
    assert_int_equal(orderlog_open(&log, path, errmsg, sizeof errmsg), 0);
    struct raftnode *node = NULL;
    /* Replica 1's Raft port is taken by the running replica 1. */
    struct bz_config cfg = u->cfg;
    path_join(cfg.data_dir, u->dir, "/other");
    assert_int_not_equal(raftnode_start(&node, &cfg, 1, log, &uv_opts, errmsg, sizeof errmsg), 0);
    assert_null(node);
    assert_true(errmsg[0] != '\0');
    assert_int_equal(raftnode_start(&node, &cfg, 7, log, &uv_opts, errmsg, sizeof errmsg),
                     BZ_EINVAL);
    orderlog_close(log);
}

int main(void)
{
    /* Every apply is an fsync'ed SQLite commit; on tmpfs the schedules run in seconds. The
     * durability of those commits is orderlog's business and tested there. */
    if (!getenv("TMPDIR") && access("/dev/shm", W_OK) == 0)
        setenv("TMPDIR", "/dev/shm", 1);
    signal(SIGPIPE, SIG_IGN); /* as every service does (service.c): see raftnode.h */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elections),
        cmocka_unit_test(test_partitioned_leader),
        cmocka_unit_test(test_leader_crash_before_commit),
        cmocka_unit_test(test_leader_crash_page_lost),
        cmocka_unit_test(test_snapshot_install),
        cmocka_unit_test(test_random_schedules),
        cmocka_unit_test_setup_teardown(test_node_cluster, uv_setup, uv_teardown),
        cmocka_unit_test_setup_teardown(test_node_reopen, uv_setup, uv_teardown),
        cmocka_unit_test_setup_teardown(test_node_snapshot_in_flight, uv_setup, uv_teardown),
        cmocka_unit_test_setup_teardown(test_node_start_errors, uv_setup, uv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
