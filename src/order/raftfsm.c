#include "raftfsm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "log.h"
#include "pagecodec.h"

/* A snapshot of 10 million orders takes about 240 MB; refuse beyond 4 GiB rather than grow. */
#define RAFTFSM__SNAPSHOT_MAX ((size_t)4 << 30)
/* Orders per transaction when installing a snapshot: fewer fsyncs, bounded memory (~3 MB). */
#define RAFTFSM__INSTALL_CHUNK 16384

static int raftfsm__apply_cb(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result);
static int raftfsm__snapshot_cb(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs);
static int raftfsm__snapshot_async_cb(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                                      unsigned *n_bufs);
static int raftfsm__finalize_cb(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs);
static int raftfsm__restore_cb(struct raft_fsm *fsm, struct raft_buffer *buf);

void raftfsm_init(struct raftfsm *f, struct orderlog *log, bool abort_on_failure)
{
    memset(f, 0, sizeof *f);
    f->log = log;
    f->abort_on_failure = abort_on_failure;
    f->scratch = xcalloc(PAGECODEC_PAGE_MAX, sizeof *f->scratch);
    f->mine = xcalloc(PAGECODEC_PAGE_MAX, sizeof *f->mine);
    pthread_mutex_init(&f->lock, NULL);
    /* Version 2: snapshot buffers stay ours and are released in snapshot_finalize. The snapshot
     * is taken synchronously on the Raft thread, so it is exactly the table as of the last
     * applied entry; raftfsm_set_async_snapshots moves the reading to a worker. */
    f->fsm.version = 2;
    f->fsm.data = f;
    f->fsm.apply = raftfsm__apply_cb;
    f->fsm.snapshot = raftfsm__snapshot_cb;
    f->fsm.restore = raftfsm__restore_cb;
    f->fsm.snapshot_finalize = raftfsm__finalize_cb;
}

void raftfsm_set_async_snapshots(struct raftfsm *f)
{
    f->fsm.version = 3;
    f->fsm.snapshot_async = raftfsm__snapshot_async_cb;
}

void raftfsm_close(struct raftfsm *f)
{
    free(f->scratch);
    free(f->mine);
    f->scratch = f->mine = NULL;
    pthread_mutex_destroy(&f->lock);
}

void raftfsm_stats(struct raftfsm *f, struct raftfsm_stats *out)
{
    memset(out, 0, sizeof *out);
    out->pages = atomic_load(&f->pages);
    out->appended = atomic_load(&f->appended);
    out->duplicates = atomic_load(&f->duplicates);
    out->snapshots = atomic_load(&f->snapshots);
    out->restores = atomic_load(&f->restores);
    pthread_mutex_lock(&f->lock);
    out->failed = f->failed;
    memcpy(out->error, f->error, sizeof out->error);
    pthread_mutex_unlock(&f->lock);
}

static bool raftfsm__failed(struct raftfsm *f)
{
    pthread_mutex_lock(&f->lock);
    bool failed = f->failed;
    pthread_mutex_unlock(&f->lock);
    return failed;
}

/*
 * Stops the state machine: it refuses every later entry, so a replica whose table cannot follow
 * the committed log goes out of service instead of diverging. A broken invariant (rv BZ_EINVAL)
 * also aborts the process when abort_on_failure is set.
 */
__attribute__((format(printf, 3, 4))) static int raftfsm__fail(struct raftfsm *f, int rv,
                                                               const char *fmt, ...)
{
    char msg[sizeof f->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&f->lock);
    f->failed = true;
    memcpy(f->error, msg, sizeof msg);
    pthread_mutex_unlock(&f->lock);
    LOG_ERROR("raft state machine stopped: %s", msg);
    if (rv == BZ_EINVAL && f->abort_on_failure)
        abort();
    return rv;
}

/*
 * Checks that table entries first..first+n-1 are the same trades as entries[0..n-1]: a page
 * proposed twice carries the catalog's journal twice, and the journal never changes an entry.
 */
static int raftfsm__check_present(struct raftfsm *f, const struct order *entries, size_t n)
{
    for (size_t done = 0; done < n;) {
        size_t want = n - done < PAGECODEC_PAGE_MAX ? n - done : PAGECODEC_PAGE_MAX, got = 0;
        const struct order *e = entries + done;
        if (orderlog_read(f->log, e[0].number, want, f->mine, &got) != 0)
            return raftfsm__fail(f, BZ_EIO, "cannot read orders from %lld", (long long)e[0].number);
        if (got != want)
            return raftfsm__fail(f, BZ_EIO, "orders table shorter than its last number");
        for (size_t i = 0; i < want; i++)
            if (f->mine[i].number != e[i].number || !trade_same(&f->mine[i].trade, &e[i].trade))
                return raftfsm__fail(
                    f, BZ_EINVAL, "order %lld differs: request %s in the table, %s in the log",
                    (long long)e[i].number, f->mine[i].trade.request_id, e[i].trade.request_id);
        done += want;
    }
    return 0;
}

/*
 * Appends entries[0..n-1] (starting at most at last+1) to the table: the prefix already there is
 * checked and skipped, the rest appended in one transaction. *added receives how many were new.
 */
static int raftfsm__merge(struct raftfsm *f, const struct order *entries, size_t n, size_t *added)
{
    struct orderlog_state st;
    orderlog_state(f->log, &st);
    *added = 0;
    /*
     * Why a gap cannot happen. A leader proposes a page that starts at its cursor, and the cursor
     * is either (a) its applied last + 1 (when it becomes leader, and after any failed proposal)
     * or (b) the end + 1 of a page it proposed earlier in the same term, successfully. In case
     * (a) every entry the leader had applied precedes the new page in its Raft log; in case (b)
     * the earlier page precedes it in the same leader's log. Raft commits and applies a log
     * prefix in order on every replica, so when this page is applied anywhere, the entry holding
     * number start-1 (or, in (b), the earlier page, which by induction left last >= its end) has
     * already been applied there: last >= start - 1. Snapshots keep this: they carry the whole
     * table as of an applied index, and a restore only ever extends the table.
     */
    if (entries[0].number > st.last + 1)
        return raftfsm__fail(
            f, BZ_EINVAL, "page %lld..%lld would leave a gap after %lld (broken invariant)",
            (long long)entries[0].number, (long long)entries[n - 1].number, (long long)st.last);
    size_t dup = 0;
    if (entries[0].number <= st.last) {
        int64_t present = st.last - entries[0].number + 1;
        dup = (int64_t)n < present ? n : (size_t)present;
        int rv = raftfsm__check_present(f, entries, dup);
        if (rv)
            return rv;
    }
    if (dup < n) {
        int rv = orderlog_apply(f->log, entries + dup, n - dup, INT64_MAX, 0);
        if (rv == BZ_ECONFLICT)
            return raftfsm__fail(f, BZ_EINVAL,
                                 "a request id of orders %lld..%lld is already in the table "
                                 "under another number (broken invariant)",
                                 (long long)entries[dup].number, (long long)entries[n - 1].number);
        if (rv == BZ_EINVAL)
            return raftfsm__fail(f, BZ_EINVAL, "orders %lld..%lld refused by the order log",
                                 (long long)entries[dup].number, (long long)entries[n - 1].number);
        if (rv)
            return raftfsm__fail(f, BZ_EIO, "cannot append orders %lld..%lld",
                                 (long long)entries[dup].number, (long long)entries[n - 1].number);
    }
    atomic_fetch_add(&f->duplicates, dup);
    atomic_fetch_add(&f->appended, n - dup);
    *added = n - dup;
    return 0;
}

int raftfsm_apply_page(struct raftfsm *f, const void *buf, size_t len)
{
    if (raftfsm__failed(f))
        return BZ_EUNAVAIL;
    char err[160];
    size_t n = 0, added;
    if (pagecodec_page_decode(buf, len, f->scratch, PAGECODEC_PAGE_MAX, &n, err, sizeof err))
        return raftfsm__fail(
            f, BZ_EINVAL,
            "committed entry (%zu bytes, starting %02x%02x%02x%02x) is not a "
            "journal page: %s",
            len, len > 0 ? ((const uint8_t *)buf)[0] : 0, len > 1 ? ((const uint8_t *)buf)[1] : 0,
            len > 2 ? ((const uint8_t *)buf)[2] : 0, len > 3 ? ((const uint8_t *)buf)[3] : 0, err);
    if (!f->grouped) {
        if (orderlog_group_open(f->log) != 0)
            return raftfsm__fail(f, BZ_EIO, "cannot open a transaction on the orders table");
        f->grouped = true;
        f->group_orders = 0;
    }
    int rv = raftfsm__merge(f, f->scratch, n, &added);
    if (rv)
        return rv;
    atomic_fetch_add(&f->pages, 1);
    f->group_orders += n;
    return f->group_orders >= RAFTFSM_GROUP_MAX ? raftfsm_flush(f) : 0;
}

int raftfsm_flush(struct raftfsm *f)
{
    if (!f->grouped)
        return 0;
    f->grouped = false;
    if (orderlog_group_commit(f->log) != 0)
        return raftfsm__fail(f, BZ_EIO, "cannot commit %zu applied orders to the table",
                             f->group_orders);
    return 0;
}

/* ---------------------------------------------------------------- snapshots */

int raftfsm_snapshot_encode_prefix(struct raftfsm *f, int64_t count, struct order *buf,
                                   struct strbuf *out)
{
    struct orderlog_state st;
    orderlog_state(f->log, &st);
    if (count > st.last + 1)
        count = st.last + 1;
    int rv = pagecodec_snap_begin(out, count);
    for (int64_t from = 0; rv == 0 && from < count;) {
        size_t want =
            count - from < PAGECODEC_PAGE_MAX ? (size_t)(count - from) : (size_t)PAGECODEC_PAGE_MAX;
        size_t got = 0;
        if (orderlog_read(f->log, from, want, buf, &got) != 0 || got == 0)
            return BZ_EIO;
        rv = pagecodec_snap_append(out, buf, got, from);
        if (rv == BZ_EINVAL) /* the table holds something we could not read back */
            return BZ_EIO;
        from += (int64_t)got;
    }
    return rv;
}

int raftfsm_snapshot_encode(struct raftfsm *f, struct strbuf *out)
{
    struct orderlog_state st;
    orderlog_state(f->log, &st);
    return raftfsm_snapshot_encode_prefix(f, st.last + 1, f->mine, out);
}

/*
 * Installing a snapshot extends the table with what it lacks. The table only ever holds applied
 * (committed) entries, so it and the snapshot are both prefixes of one sequence: the part they
 * share is checked, entry by entry, and the rest appended. Each chunk of RAFTFSM__INSTALL_CHUNK
 * is one transaction, and after each the table is again a prefix of that sequence, so a crash
 * midway leaves a valid, shorter table that the next start (which restores the same snapshot)
 * extends. A table longer than the snapshot (a restart whose SQLite commits outran the Raft
 * snapshot) is kept after the check: rewinding it would only make it re-apply the same entries.
 */
int raftfsm_snapshot_install(struct raftfsm *f, const void *buf, size_t len)
{
    if (raftfsm__failed(f))
        return BZ_EUNAVAIL;
    int rv = raftfsm_flush(f); /* the install commits chunk by chunk, on its own */
    if (rv)
        return rv;
    char err[160];
    struct pagecodec_snap_reader r;
    if (pagecodec_snap_open(&r, buf, len, err, sizeof err))
        return raftfsm__fail(f, BZ_EINVAL, "bad snapshot: %s", err);
    struct order *chunk = xcalloc(RAFTFSM__INSTALL_CHUNK, sizeof *chunk);
    for (;;) {
        size_t n = 0, added;
        if (pagecodec_snap_read(&r, chunk, RAFTFSM__INSTALL_CHUNK, &n, err, sizeof err)) {
            rv = raftfsm__fail(f, BZ_EINVAL, "bad snapshot: %s", err);
            break;
        }
        if (n == 0 || (rv = raftfsm__merge(f, chunk, n, &added)) != 0)
            break;
    }
    free(chunk);
    if (rv)
        return rv;
    atomic_fetch_add(&f->restores, 1);
    LOG_INFO("installed a snapshot of %lld orders", (long long)r.count);
    return 0;
}

/* ---------------------------------------------------------------- libraft callbacks */

static int raftfsm__raft_code(int rv)
{
    return rv == BZ_EIO ? RAFT_IOERR : rv == BZ_ETOOBIG ? RAFT_TOOBIG : RAFT_CORRUPT;
}

/* The snapshot of the table's first `count` orders (read through buf) as libraft's buffers. */
static int raftfsm__snapshot_take(struct raftfsm *f, int64_t count, struct order *buf,
                                  struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct strbuf sb;
    strbuf_init(&sb, RAFTFSM__SNAPSHOT_MAX);
    int rv = raftfsm_snapshot_encode_prefix(f, count, buf, &sb);
    if (rv) {
        LOG_ERROR("cannot take a snapshot: %s", bz_strerror(rv));
        strbuf_free(&sb);
        return raftfsm__raft_code(rv);
    }
    *bufs = raft_malloc(sizeof **bufs);
    if (!*bufs)
        util__oom(sizeof **bufs, __FILE__, __LINE__);
    size_t len;
    (*bufs)[0].base = strbuf_steal(&sb, &len);
    (*bufs)[0].len = len;
    *n_bufs = 1;
    atomic_fetch_add(&f->snapshots, 1);
    return 0;
}

static int raftfsm__apply_cb(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct raftfsm *f = fsm->data;
    *result = NULL;
    int rv = raftfsm_apply_page(f, buf->base, buf->len);
    return rv ? raftfsm__raft_code(rv) : 0;
}

/*
 * Without async snapshots (the tests' fixture) this runs on the Raft thread and blocks it while
 * the table is read: about 130 ms per 100k orders here (unit.order.raftfsm prints it), which a
 * trade at 64 connections saw as a p99 of 50-320 ms in raft mode (make bench, 400k orders).
 * With them (raftnode), it only notes the table's length. Installing is slower (about 1 s per
 * 100k orders, SQLite inserts with the request-id index) and runs on the Raft thread of the
 * node that lags; pre-vote keeps that node from disrupting the leader meanwhile.
 */
static int raftfsm__snapshot_cb(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct raftfsm *f = fsm->data;
    if (fsm->snapshot_async) {
        /* The Raft thread only notes how long the table is now; raftfsm__snapshot_async_cb
         * reads that prefix on a worker while pages go on being applied after it. Applied
         * rows are committed first so that the count is of rows that can be read back. */
        int rv = raftfsm_flush(f);
        if (rv)
            return raftfsm__raft_code(rv);
        struct orderlog_state st;
        orderlog_state(f->log, &st);
        f->snap_count = st.last + 1;
        *bufs = NULL;
        *n_bufs = 0;
        return 0;
    }
    struct orderlog_state st;
    orderlog_state(f->log, &st);
    return raftfsm__snapshot_take(f, st.last + 1, f->mine, bufs, n_bufs);
}

/*
 * On a libraft worker (async_work): the snapshot is the table's first snap_count rows, exactly
 * the table when raftfsm__snapshot_cb ran, because the table only grows (pages append past its
 * end; an install only appends what the table lacks). Each read holds the log's lock for one
 * page of rows, so the Raft thread's applies wait a millisecond at most, not the whole read.
 */
static int raftfsm__snapshot_async_cb(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                                      unsigned *n_bufs)
{
    struct raftfsm *f = fsm->data;
    unsigned slow = atomic_load(&f->slow_snapshot_ms);
    if (slow) { /* raftnode_fault_slow_snapshot */
        struct timespec ts = {.tv_sec = slow / 1000, .tv_nsec = (long)(slow % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    struct order *buf = xcalloc(PAGECODEC_PAGE_MAX, sizeof *buf);
    int rv = raftfsm__snapshot_take(f, f->snap_count, buf, bufs, n_bufs);
    free(buf);
    return rv;
}

static int raftfsm__finalize_cb(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    (void)fsm;
    if (*bufs) {
        for (unsigned i = 0; i < *n_bufs; i++)
            free((*bufs)[i].base);
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

/* On success the buffer is ours (libraft hands it over); on failure libraft frees it. */
static int raftfsm__restore_cb(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct raftfsm *f = fsm->data;
    int rv = raftfsm_snapshot_install(f, buf->base, buf->len);
    if (rv)
        return raftfsm__raft_code(rv);
    raft_free(buf->base);
    return 0;
}
