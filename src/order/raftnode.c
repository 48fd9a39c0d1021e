#include "raftnode.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "error.h"
#include "log.h"
#include "pagecodec.h"
#include "raftfsm.h"
#include "util.h"

#define RAFTNODE__POLL_MS 10 /* how often the published info is refreshed */

enum raftnode__op { RAFTNODE__PROPOSE, RAFTNODE__BARRIER, RAFTNODE__STATUS, RAFTNODE__STOP };

/* One raftnode_propose: its pages complete independently, the caller hears once. */
struct raftnode__group {
    raftnode_done_cb cb;
    void *arg;
    unsigned pending; /* pages not yet completed */
    int status;       /* first failure */
};

/* A waiter shared by a blocked caller and a callback; the last of the two frees it. */
struct raftnode__waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int status;
    json_t *json;
    atomic_int refs;
};

struct raftnode__req {
    enum raftnode__op op;
    struct raftnode__req *next;
    raftnode_done_cb cb; /* PROPOSE, BARRIER */
    void *arg;
    struct raft_buffer *bufs; /* PROPOSE: encoded pages, raft_malloc'ed */
    unsigned nbufs;
    int64_t from, last;              /* PROPOSE: the journal numbers the pages hold */
    struct raftnode__waiter *waiter; /* STATUS */
};

struct raftnode__apply {
    struct raft_apply req;
    struct raftnode__group *group;
};

struct raftnode__barrier {
    struct raft_barrier req;
    struct raftnode *node;
    raftnode_done_cb cb; /* NULL for the node's own leader barrier */
    void *arg;
    raft_term term; /* term it was issued in */
};

struct raftnode {
    int id;
    char dir[CONFIG_PATH_MAX + 32];
    char address[CONFIG_ADDR_MAX];
    struct orderlog *log;
    unsigned snapshot_threshold, snapshot_trailing;

    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t poll;
    uv_prepare_t flush; /* commits the state machine's applied pages before the loop waits */
    uv_timer_t reopen;  /* brings the raft instance back after libraft shut it down */
    struct raft_uv_transport transport;
    struct raft_io uv_io; /* libraft's libuv I/O */
    struct raft_io io;    /* the decorator raft uses: forwards to uv_io, watches receives */
    raft_io_recv_cb raft_recv;
    struct raft raft;
    struct raftfsm fsm;
    struct raftnode_options opts; /* as given to raftnode_start, zeros for defaults */
    pthread_t thread;

    pthread_mutex_t lock; /* guards head/tail, stopping and info */
    struct raftnode__req *head, *tail;
    bool stopping;
    struct raftnode_info info;

    /* Node thread only. */
    unsigned heartbeat_ms;
    bool target_known;       /* an AppendEntries has been received since start */
    raft_time target_since;  /* when the first one arrived (raft_io time) */
    raft_index target;       /* highest leader commit index received: what "caught up" means */
    bool caught_up;          /* sticky */
    raft_term ready_term;    /* term whose leader barrier is applied here */
    raft_term proposed_term; /* the term of proposed_last */
    int64_t proposed_last;   /* last number of the last page appended as leader in it */
    bool barrier_inflight;
    bool closing;
    bool raft_up;             /* raft and its libuv I/O are open (not closed for a reopen) */
    bool reopen_closing;      /* raft_close of a reopen is in flight */
    unsigned reopen_delay_ms; /* before the next attempt to reopen */
    uint64_t reopened_at;     /* uv_now of the last reopen */
    atomic_bool fault_term;   /* raftnode_fault_term: the next term change fails to persist */
};

/* ---------------------------------------------------------------- status mapping */

static int raftnode__status(int raft_rv)
{
    switch (raft_rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
        return BZ_ENOTLEADER;
    case RAFT_LEADERSHIPLOST:
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return BZ_EUNAVAIL;
    default:
        return BZ_EIO;
    }
}

/* ---------------------------------------------------------------- waiters */

static struct raftnode__waiter *raftnode__waiter_new(void)
{
    struct raftnode__waiter *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    clock_cond_init(&w->cond);
    atomic_init(&w->refs, 2);
    return w;
}

static void raftnode__waiter_release(struct raftnode__waiter *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    if (w->json)
        json_decref(w->json);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
}

static void raftnode__waiter_done(void *arg, int status)
{
    struct raftnode__waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    w->status = status;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    raftnode__waiter_release(w);
}

/* Waits for the callback; BZ_ETIMEDOUT after timeout_ms. Releases the caller's reference. */
static int raftnode__waiter_wait(struct raftnode__waiter *w, unsigned timeout_ms, json_t **json)
{
    struct timespec deadline;
    clock_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) == ETIMEDOUT)
            break;
    int rv = w->done ? w->status : BZ_ETIMEDOUT;
    if (w->done && json) {
        *json = w->json;
        w->json = NULL;
    }
    pthread_mutex_unlock(&w->lock);
    raftnode__waiter_release(w);
    return rv;
}

/* ---------------------------------------------------------------- the raft_io decorator */

/*
 * libraft offers no hook for "the leader's commit index", which a restarted follower needs to
 * know when it has caught up. Raft reaches its I/O through struct raft_io, so the node hands it
 * a thin wrapper around the libuv implementation that forwards every call and looks at each
 * received AppendEntries on its way in. Callbacks from the libuv I/O find the raft instance
 * through uv_io.data, which is kept equal to io.data.
 */
static struct raftnode *raftnode__of(struct raft_io *io)
{
    return io->impl;
}

static int raftnode__fwd(struct raftnode *n, int rv)
{
    if (rv)
        memcpy(n->io.errmsg, n->uv_io.errmsg, sizeof n->io.errmsg);
    return rv;
}

static int raftnode__io_init(struct raft_io *io, raft_id id, const char *address)
{
    struct raftnode *n = raftnode__of(io);
    n->uv_io.data = io->data;
    return raftnode__fwd(n, n->uv_io.init(&n->uv_io, id, address));
}

static void raftnode__io_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct raftnode *n = raftnode__of(io);
    n->uv_io.data = io->data;
    n->uv_io.close(&n->uv_io, cb);
}

static int raftnode__io_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                             struct raft_snapshot **snapshot, raft_index *start_index,
                             struct raft_entry *entries[], size_t *n_entries)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(
        n, n->uv_io.load(&n->uv_io, term, voted_for, snapshot, start_index, entries, n_entries));
}

/*
 * Readiness target. The first AppendEntries a restarted node receives can be stale: the leader's
 * libuv client queues a few messages while the peer is down and flushes them on reconnect, with
 * the commit index of back then (the unit test caught a node "ready" 300 orders short this way).
 * Messages on one connection arrive in order and commit indexes only grow, and a leader sends to
 * every follower at least once per heartbeat; so the node takes the highest leader commit it
 * receives during RAFTNODE__READY_WINDOW heartbeats after the first one, by which time a message
 * created after its start has arrived, and is caught up once it has applied that far.
 */
#define RAFTNODE__READY_WINDOW 3

static void raftnode__io_recv(struct raft_io *io, struct raft_message *msg)
{
    struct raft *r = io->data;
    struct raftnode *n = r->data;
    if (msg->type == RAFT_IO_APPEND_ENTRIES && !n->caught_up &&
        msg->append_entries.term >= r->current_term) {
        if (!n->target_known) {
            n->target_known = true;
            n->target_since = n->uv_io.time(&n->uv_io);
        }
        if (msg->append_entries.leader_commit > n->target)
            n->target = msg->append_entries.leader_commit;
    }
    n->raft_recv(io, msg);
}

static int raftnode__io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                              raft_io_recv_cb recv)
{
    struct raftnode *n = raftnode__of(io);
    n->uv_io.data = io->data;
    n->raft_recv = recv;
    return raftnode__fwd(n, n->uv_io.start(&n->uv_io, msecs, tick, raftnode__io_recv));
}

static int raftnode__io_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.bootstrap(&n->uv_io, conf));
}

static int raftnode__io_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.recover(&n->uv_io, conf));
}

static int raftnode__io_set_term(struct raft_io *io, raft_term term)
{
    struct raftnode *n = raftnode__of(io);
    if (atomic_exchange(&n->fault_term, false)) {
        snprintf(n->io.errmsg, sizeof n->io.errmsg, "injected fault: term %llu not persisted",
                 (unsigned long long)term);
        return RAFT_IOERR;
    }
    return raftnode__fwd(n, n->uv_io.set_term(&n->uv_io, term));
}

static int raftnode__io_set_vote(struct raft_io *io, raft_id server_id)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.set_vote(&n->uv_io, server_id));
}

static int raftnode__io_send(struct raft_io *io, struct raft_io_send *req,
                             const struct raft_message *message, raft_io_send_cb cb)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.send(&n->uv_io, req, message, cb));
}

static int raftnode__io_append(struct raft_io *io, struct raft_io_append *req,
                               const struct raft_entry entries[], unsigned count,
                               raft_io_append_cb cb)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.append(&n->uv_io, req, entries, count, cb));
}

static int raftnode__io_truncate(struct raft_io *io, raft_index index)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.truncate(&n->uv_io, index));
}

static int raftnode__io_snapshot_put(struct raft_io *io, unsigned trailing,
                                     struct raft_io_snapshot_put *req,
                                     const struct raft_snapshot *snapshot,
                                     raft_io_snapshot_put_cb cb)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.snapshot_put(&n->uv_io, trailing, req, snapshot, cb));
}

static int raftnode__io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                                     raft_io_snapshot_get_cb cb)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.snapshot_get(&n->uv_io, req, cb));
}

static raft_time raftnode__io_time(struct raft_io *io)
{
    struct raftnode *n = raftnode__of(io);
    return n->uv_io.time(&n->uv_io);
}

static int raftnode__io_random(struct raft_io *io, int min, int max)
{
    struct raftnode *n = raftnode__of(io);
    return n->uv_io.random(&n->uv_io, min, max);
}

static int raftnode__io_async_work(struct raft_io *io, struct raft_io_async_work *req,
                                   raft_io_async_work_cb cb)
{
    struct raftnode *n = raftnode__of(io);
    return raftnode__fwd(n, n->uv_io.async_work(&n->uv_io, req, cb));
}

static void raftnode__io_wrap(struct raftnode *n)
{
    struct raft_io *io = &n->io;
    memset(io, 0, sizeof *io);
    /* libraft 0.15's libuv I/O implements async_work (a libuv thread-pool job) but still says
     * version 1, and raft_init refuses async snapshots (raftfsm_set_async_snapshots) without
     * version 2: the decorator says 2 when the method is there. */
    io->version = n->uv_io.version >= 2 || n->uv_io.async_work ? 2 : n->uv_io.version;
    io->impl = n;
    io->init = raftnode__io_init;
    io->close = raftnode__io_close;
    io->load = raftnode__io_load;
    io->start = raftnode__io_start;
    io->bootstrap = raftnode__io_bootstrap;
    io->recover = raftnode__io_recover;
    io->set_term = raftnode__io_set_term;
    io->set_vote = raftnode__io_set_vote;
    io->send = raftnode__io_send;
    io->append = raftnode__io_append;
    io->truncate = raftnode__io_truncate;
    io->snapshot_put = raftnode__io_snapshot_put;
    io->snapshot_get = raftnode__io_snapshot_get;
    io->time = raftnode__io_time;
    io->random = raftnode__io_random;
    if (io->version >= 2)
        io->async_work = raftnode__io_async_work;
}

/* ---------------------------------------------------------------- the transport's sockets */

/*
 * libraft's TCP transport leaves Nagle's algorithm on. Each node sends on the connection it
 * opened and receives replies on the one its peer opened, so a leader's connection to a follower
 * carries no data back and its ACKs are delayed ones: an AppendEntries written while the previous
 * one was unacknowledged waited up to the 40 ms delayed-ACK timer (raft's p99 at 16-64
 * connections was 45 ms, primary-backup's 7-13 ms). The transport's connect and accept are
 * wrapped to set TCP_NODELAY on every Raft connection. The callbacks libraft passes are the same
 * function for every node of the process, kept once here.
 */
typedef int (*raftnode__connect_fn)(struct raft_uv_transport *, struct raft_uv_connect *, raft_id,
                                    const char *, raft_uv_connect_cb);
typedef int (*raftnode__listen_fn)(struct raft_uv_transport *, raft_uv_accept_cb);
static _Atomic(raft_uv_connect_cb) raftnode__connect_cb;
static _Atomic(raft_uv_accept_cb) raftnode__accept_cb;
static _Atomic(raftnode__connect_fn) raftnode__tcp_connect;
static _Atomic(raftnode__listen_fn) raftnode__tcp_listen;

static void raftnode__nodelay(struct uv_stream_s *stream)
{
    if (stream && stream->type == UV_TCP && uv_tcp_nodelay((uv_tcp_t *)stream, 1) != 0)
        LOG_WARN("raft: cannot turn Nagle's algorithm off on a Raft connection");
}

static void raftnode__connected(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    if (status == 0)
        raftnode__nodelay(stream);
    atomic_load (&raftnode__connect_cb)(req, stream, status);
}

static int raftnode__connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                             const char *address, raft_uv_connect_cb cb)
{
    atomic_store(&raftnode__connect_cb, cb);
    return atomic_load(&raftnode__tcp_connect)(t, req, id, address, raftnode__connected);
}

static void raftnode__accepted(struct raft_uv_transport *t, raft_id id, const char *address,
                               struct uv_stream_s *stream)
{
    raftnode__nodelay(stream);
    atomic_load (&raftnode__accept_cb)(t, id, address, stream);
}

static int raftnode__listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    atomic_store(&raftnode__accept_cb, cb);
    return atomic_load(&raftnode__tcp_listen)(t, raftnode__accepted);
}

static void raftnode__transport_wrap(struct raft_uv_transport *t)
{
    atomic_store(&raftnode__tcp_connect, t->connect);
    atomic_store(&raftnode__tcp_listen, t->listen);
    t->connect = raftnode__connect;
    t->listen = raftnode__listen;
}

/* ---------------------------------------------------------------- node thread: state */

static void raftnode__refresh(struct raftnode *n);
static void raftnode__reopen_begin(struct raftnode *n);

/* While the raft instance is closed for a reopen: unavailable, not ready, nothing else known. */
static void raftnode__publish_down(struct raftnode *n)
{
    struct raftfsm_stats fs;
    raftfsm_stats(&n->fsm, &fs);
    pthread_mutex_lock(&n->lock);
    n->info.role = RAFTNODE_UNAVAILABLE;
    n->info.leader_id = 0;
    n->info.ready = false;
    n->info.leader_ready = false;
    n->info.fsm_failed = fs.failed;
    pthread_mutex_unlock(&n->lock);
}

static void raftnode__barrier_cb(struct raft_barrier *req, int status)
{
    struct raftnode__barrier *b = req->data;
    struct raftnode *n = b->node;
    if (b->cb) {
        b->cb(b->arg, raftnode__status(status));
    } else {
        n->barrier_inflight = false;
        if (status == 0 && b->term > n->ready_term)
            n->ready_term = b->term;
        if (!n->closing)
            raftnode__refresh(n);
    }
    free(b);
}

static int raftnode__barrier_submit(struct raftnode *n, raftnode_done_cb cb, void *arg)
{
    struct raftnode__barrier *b = xcalloc(1, sizeof *b);
    b->req.data = b;
    b->node = n;
    b->cb = cb;
    b->arg = arg;
    b->term = n->raft.current_term;
    int rv = raft_barrier(&n->raft, &b->req, raftnode__barrier_cb);
    if (rv) {
        free(b);
        return raftnode__status(rv);
    }
    return 0;
}

/*
 * Publishes the node's state for other threads and moves readiness forward. A new leader appends
 * a barrier of its term: once applied, everything committed by earlier terms is in its table, so
 * it may serve reads and start its sequencer from its table's end.
 */
static void raftnode__refresh(struct raftnode *n)
{
    struct raft *r = &n->raft;
    if (n->raft_up && raft_state(r) == RAFT_UNAVAILABLE && !n->closing)
        raftnode__reopen_begin(n);
    if (!n->raft_up) {
        raftnode__publish_down(n);
        return;
    }
    int state = raft_state(r);
    if (state == RAFT_LEADER && n->ready_term != r->current_term && !n->barrier_inflight &&
        !n->closing) {
        if (raftnode__barrier_submit(n, NULL, NULL) == 0)
            n->barrier_inflight = true;
    }
    bool leader_ready = state == RAFT_LEADER && n->ready_term == r->current_term;
    bool window_over = n->target_known &&
                       n->uv_io.time(&n->uv_io) >=
                           n->target_since + (raft_time)RAFTNODE__READY_WINDOW * n->heartbeat_ms;
    if (!n->caught_up && (leader_ready || (window_over && raft_last_applied(r) >= n->target))) {
        n->caught_up = true;
        LOG_INFO("raft: caught up at index %llu (leader commit %llu, term %llu)",
                 (unsigned long long)raft_last_applied(r), (unsigned long long)n->target,
                 (unsigned long long)r->current_term);
    }
    raft_id leader_id = 0;
    const char *leader_addr = NULL;
    raft_leader(r, &leader_id, &leader_addr);
    struct raftfsm_stats fs;
    raftfsm_stats(&n->fsm, &fs);

    struct raftnode_info info = {
        .id = n->id,
        .role = state == RAFT_LEADER      ? RAFTNODE_LEADER
                : state == RAFT_FOLLOWER  ? RAFTNODE_FOLLOWER
                : state == RAFT_CANDIDATE ? RAFTNODE_CANDIDATE
                                          : RAFTNODE_UNAVAILABLE,
        .leader_id = (int)leader_id,
        .term = r->current_term,
        .commit_index = r->commit_index,
        .applied_index = raft_last_applied(r),
        .last_index = raft_last_index(r),
        .ready = n->caught_up && !fs.failed,
        .leader_ready = leader_ready && !fs.failed,
        .fsm_failed = fs.failed,
    };
    pthread_mutex_lock(&n->lock);
    info.reopens = n->info.reopens;
    n->info = info;
    pthread_mutex_unlock(&n->lock);
}

static void raftnode__poll_cb(uv_timer_t *t)
{
    raftnode__refresh(t->data);
}

/* Before the loop waits for I/O: what this iteration applied goes into the table file in one
 * commit (a failed commit stops the state machine, see raftfsm_flush). */
static void raftnode__flush_cb(uv_prepare_t *h)
{
    struct raftnode *n = h->data;
    raftfsm_flush(&n->fsm);
}

/* ---------------------------------------------------------------- node thread: requests */

static void raftnode__group_done(struct raftnode__group *g, int status, unsigned count)
{
    if (status && !g->status)
        g->status = status;
    g->pending -= count;
    if (g->pending == 0) {
        g->cb(g->arg, g->status);
        free(g);
    }
}

static void raftnode__apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct raftnode__apply *a = req->data;
    raftnode__group_done(a->group, raftnode__status(status), 1);
    free(a);
}

/*
 * The gap guard (docs/design.md, "Raft mode"): a page is appended only right after what this
 * log already orders before it, namely the last page this leader appended in its current term
 * (which precedes it in the same leader's log) or, when none, the entries applied here (which
 * precede it in any log). A page starting past both would be applied after a gap once an
 * earlier page failed; it is refused instead, and the proposer starts again from the table.
 */
static bool raftnode__follows(struct raftnode *n, int64_t from)
{
    struct orderlog_state st;
    orderlog_state(n->log, &st);
    int64_t last = st.last;
    if (n->proposed_term == n->raft.current_term && n->proposed_last > last)
        last = n->proposed_last;
    return from <= last + 1;
}

static void raftnode__do_propose(struct raftnode *n, struct raftnode__req *q)
{
    struct raftnode__group *g = xcalloc(1, sizeof *g);
    g->cb = q->cb;
    g->arg = q->arg;
    g->pending = q->nbufs;
    int refused = n->closing || !n->raft_up             ? RAFT_SHUTDOWN
                  : raft_state(&n->raft) != RAFT_LEADER ? RAFT_NOTLEADER
                  : !raftnode__follows(n, q->from)      ? RAFT_CANCELED
                                                        : 0;
    if (refused == RAFT_CANCELED)
        LOG_INFO("raft: page from #%lld refused: an earlier page of the term was not appended",
                 (long long)q->from);
    unsigned appended = 0;
    for (unsigned i = 0; i < q->nbufs; i++) {
        pagecodec_page_set_epoch(q->bufs[i].base, q->bufs[i].len, n->raft.current_term);
        struct raftnode__apply *a = xcalloc(1, sizeof *a);
        a->req.data = a;
        a->group = g;
        int rv =
            refused ? refused : raft_apply(&n->raft, &a->req, &q->bufs[i], 1, raftnode__apply_cb);
        if (rv) {
            /* Nothing from page i on was appended: free those pages and finish the group. */
            free(a);
            for (unsigned j = i; j < q->nbufs; j++)
                raft_free(q->bufs[j].base);
            raftnode__group_done(g, raftnode__status(rv), q->nbufs - i);
            break;
        }
        appended++;
    }
    if (appended > 0) {
        int64_t last = q->from + (int64_t)appended * PAGECODEC_PAGE_MAX - 1;
        n->proposed_term = n->raft.current_term;
        n->proposed_last = last < q->last ? last : q->last;
    }
    free(q->bufs);
    q->bufs = NULL;
}

static json_t *raftnode__status_build(struct raftnode *n)
{
    struct raft *r = &n->raft;
    raftnode__refresh(n);
    struct raftnode_info info;
    pthread_mutex_lock(&n->lock);
    info = n->info;
    pthread_mutex_unlock(&n->lock);
    static const char *const roles[] = {"unavailable", "follower", "candidate", "leader"};
    struct raftfsm_stats fs;
    raftfsm_stats(&n->fsm, &fs);
    struct orderlog_state st;
    orderlog_state(n->log, &st);
    json_t *o = json_pack(
        "{s:i,s:s,s:i,s:I,s:I,s:I,s:I,s:b,s:b,s:I,s:{s:I,s:I,s:I},"
        "s:{s:I,s:I,s:I,s:I,s:I,s:b,s:s}}",
        "id", n->id, "role", roles[info.role], "leader", info.leader_id, "term",
        (json_int_t)info.term, "commit_index", (json_int_t)info.commit_index, "applied_index",
        (json_int_t)info.applied_index, "last_index", (json_int_t)info.last_index, "ready",
        info.ready, "leader_ready", info.leader_ready, "last_number", (json_int_t)st.last,
        "snapshot", "index", (json_int_t)(n->raft_up ? r->log.snapshot.last_index : 0), "threshold",
        (json_int_t)n->snapshot_threshold, "trailing", (json_int_t)n->snapshot_trailing, "fsm",
        "pages", (json_int_t)fs.pages, "appended", (json_int_t)fs.appended, "duplicates",
        (json_int_t)fs.duplicates, "snapshots", (json_int_t)fs.snapshots, "restores",
        (json_int_t)fs.restores, "failed", fs.failed, "error", fs.error);
    json_t *reps = json_array();
    for (unsigned i = 0; n->raft_up && i < r->configuration.n; i++) {
        const struct raft_server *s = &r->configuration.servers[i];
        json_t *e = json_pack("{s:I,s:s}", "id", (json_int_t)s->id, "address", s->address);
        if (raft_state(r) == RAFT_LEADER)
            json_object_set_new(e, "match_index",
                                json_integer((json_int_t)r->leader_state.progress[i].match_index));
        json_array_append_new(reps, e);
    }
    json_object_set_new(o, "replicas", reps);
    json_object_set_new(o, "reopens", json_integer((json_int_t)info.reopens));
    return o;
}

static void raftnode__raft_close_cb(struct raft *r);
static void raftnode__handles_close(struct raftnode *n);

static void raftnode__wake_cb(uv_async_t *h)
{
    struct raftnode *n = h->data;
    pthread_mutex_lock(&n->lock);
    struct raftnode__req *q = n->head;
    n->head = n->tail = NULL;
    pthread_mutex_unlock(&n->lock);
    while (q) {
        struct raftnode__req *next = q->next;
        switch (q->op) {
        case RAFTNODE__PROPOSE:
            raftnode__do_propose(n, q);
            break;
        case RAFTNODE__BARRIER: {
            int rv = n->closing || !n->raft_up ? BZ_EUNAVAIL
                                               : raftnode__barrier_submit(n, q->cb, q->arg);
            if (rv)
                q->cb(q->arg, rv);
            break;
        }
        case RAFTNODE__STATUS:
            q->waiter->json = raftnode__status_build(n);
            raftnode__waiter_done(q->waiter, 0);
            break;
        case RAFTNODE__STOP:
            if (!n->closing) {
                n->closing = true;
                uv_timer_stop(&n->poll);
                uv_prepare_stop(&n->flush);
                uv_timer_stop(&n->reopen);
                raftfsm_flush(&n->fsm);
                if (n->raft_up)
                    raft_close(&n->raft, raftnode__raft_close_cb);
                else if (!n->reopen_closing)
                    raftnode__handles_close(n);
                /* else the reopen's close callback sees closing and closes the handles */
            }
            break;
        }
        free(q);
        q = next;
    }
    if (!n->closing)
        raftnode__refresh(n);
}

static void raftnode__handles_close(struct raftnode *n)
{
    uv_close((uv_handle_t *)&n->poll, NULL);
    uv_close((uv_handle_t *)&n->flush, NULL);
    uv_close((uv_handle_t *)&n->reopen, NULL);
    uv_close((uv_handle_t *)&n->wake, NULL);
}

static void *raftnode__main(void *arg)
{
    struct raftnode *n = arg;
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---------------------------------------------------------------- public API */

static int raftnode__enqueue(struct raftnode *n, struct raftnode__req *q)
{
    pthread_mutex_lock(&n->lock);
    if (n->stopping && q->op != RAFTNODE__STOP) {
        pthread_mutex_unlock(&n->lock);
        return BZ_EUNAVAIL;
    }
    if (q->op == RAFTNODE__STOP)
        n->stopping = true;
    if (n->tail)
        n->tail->next = q;
    else
        n->head = q;
    n->tail = q;
    pthread_mutex_unlock(&n->lock);
    uv_async_send(&n->wake);
    return 0;
}

int raftnode_propose(struct raftnode *node, const struct order *entries, size_t n,
                     raftnode_done_cb cb, void *arg)
{
    if (n == 0)
        return BZ_EINVAL;
    size_t npages = (n + PAGECODEC_PAGE_MAX - 1) / PAGECODEC_PAGE_MAX;
    struct raftnode__req *q = xcalloc(1, sizeof *q);
    q->op = RAFTNODE__PROPOSE;
    q->cb = cb;
    q->arg = arg;
    q->bufs = xcalloc(npages, sizeof *q->bufs);
    q->from = entries[0].number;
    q->last = entries[n - 1].number;
    int rv = 0;
    for (size_t i = 0; i < npages && rv == 0; i++) {
        const struct order *page = entries + i * PAGECODEC_PAGE_MAX;
        size_t k = n - i * PAGECODEC_PAGE_MAX;
        if (k > PAGECODEC_PAGE_MAX)
            k = PAGECODEC_PAGE_MAX;
        size_t len = pagecodec_page_size(page, k);
        void *buf = raft_malloc(len);
        if (!buf)
            util__oom(len, __FILE__, __LINE__);
        q->bufs[q->nbufs++] = (struct raft_buffer){buf, len};
        rv = pagecodec_page_encode(page, k, 0, buf, len);
    }
    if (rv == 0)
        rv = raftnode__enqueue(node, q);
    if (rv) {
        for (unsigned i = 0; i < q->nbufs; i++)
            raft_free(q->bufs[i].base);
        free(q->bufs);
        free(q);
    }
    return rv;
}

int raftnode_barrier(struct raftnode *node, raftnode_done_cb cb, void *arg)
{
    struct raftnode__req *q = xcalloc(1, sizeof *q);
    q->op = RAFTNODE__BARRIER;
    q->cb = cb;
    q->arg = arg;
    int rv = raftnode__enqueue(node, q);
    if (rv)
        free(q);
    return rv;
}

int raftnode_propose_wait(struct raftnode *node, const struct order *entries, size_t n,
                          unsigned timeout_ms)
{
    struct raftnode__waiter *w = raftnode__waiter_new();
    int rv = raftnode_propose(node, entries, n, raftnode__waiter_done, w);
    if (rv) {
        raftnode__waiter_release(w);
        raftnode__waiter_release(w);
        return rv;
    }
    return raftnode__waiter_wait(w, timeout_ms, NULL);
}

int raftnode_barrier_wait(struct raftnode *node, unsigned timeout_ms)
{
    struct raftnode__waiter *w = raftnode__waiter_new();
    int rv = raftnode_barrier(node, raftnode__waiter_done, w);
    if (rv) {
        raftnode__waiter_release(w);
        raftnode__waiter_release(w);
        return rv;
    }
    return raftnode__waiter_wait(w, timeout_ms, NULL);
}

json_t *raftnode_status_json(struct raftnode *node, unsigned timeout_ms)
{
    struct raftnode__waiter *w = raftnode__waiter_new();
    struct raftnode__req *q = xcalloc(1, sizeof *q);
    q->op = RAFTNODE__STATUS;
    q->waiter = w;
    if (raftnode__enqueue(node, q)) {
        free(q);
        raftnode__waiter_release(w);
        raftnode__waiter_release(w);
        return NULL;
    }
    json_t *out = NULL;
    if (raftnode__waiter_wait(w, timeout_ms, &out) != 0)
        return NULL;
    return out;
}

void raftnode_fault_term(struct raftnode *node)
{
    atomic_store(&node->fault_term, true);
}

void raftnode_fault_slow_snapshot(struct raftnode *node, unsigned ms)
{
    atomic_store(&node->fsm.slow_snapshot_ms, ms);
}

void raftnode_info(struct raftnode *node, struct raftnode_info *out)
{
    pthread_mutex_lock(&node->lock);
    *out = node->info;
    pthread_mutex_unlock(&node->lock);
}

bool raftnode_is_leader(struct raftnode *node)
{
    struct raftnode_info info;
    raftnode_info(node, &info);
    return info.role == RAFTNODE_LEADER && info.leader_ready;
}

/* ---------------------------------------------------------------- start / stop */

static int raftnode__mkdir(const char *path, char *errmsg, size_t errlen)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    snprintf(errmsg, errlen, "%s: %s", path, strerror(errno));
    return BZ_EIO;
}

/*
 * Creates the TCP transport, libraft's libuv I/O over the node's data directory, the decorator
 * and the raft instance with the node's settings: what raftnode_start and a reopen share. On
 * failure nothing of it is left open.
 */
static int raftnode__raft_init(struct raftnode *n, char *errmsg, size_t errlen)
{
    const struct raftnode_options *opts = &n->opts;
    if (raft_uv_tcp_init(&n->transport, &n->loop) != 0) {
        snprintf(errmsg, errlen, "raft: cannot create the TCP transport");
        return BZ_EIO;
    }
    raftnode__transport_wrap(&n->transport);
    if (raft_uv_init(&n->uv_io, &n->loop, n->dir, &n->transport) != 0) {
        snprintf(errmsg, errlen, "raft: %s: %s", n->dir, n->uv_io.errmsg);
        raft_uv_tcp_close(&n->transport);
        return BZ_EIO;
    }
    raftnode__io_wrap(n);
    if (raft_init(&n->raft, &n->io, &n->fsm.fsm, (raft_id)n->id, n->address) != 0) {
        snprintf(errmsg, errlen, "raft: init: %s", raft_errmsg(&n->raft));
        raft_uv_close(&n->uv_io);
        raft_uv_tcp_close(&n->transport);
        return BZ_EIO;
    }
    n->raft.data = n;
    n->uv_io.data = n->io.data;
    if (opts->election_timeout_ms)
        raft_set_election_timeout(&n->raft, opts->election_timeout_ms);
    if (opts->heartbeat_timeout_ms)
        raft_set_heartbeat_timeout(&n->raft, opts->heartbeat_timeout_ms);
    n->heartbeat_ms = n->raft.heartbeat_timeout;
    /* A peer that was down is dialled again after this (libuv transport default 1 s): a
     * restarted follower waited 0.3-1 s idle for its leader to reconnect before catching up.
     * One heartbeat keeps the retries of a dead peer cheap (a refused connect on a LAN). */
    raft_uv_set_connect_retry_delay(&n->uv_io, n->heartbeat_ms);
    /* libraft resends a lost InstallSnapshot only after this (default 30 s): a snapshot sent
     * while the lagging replica was still down or reconnecting kept it unready that long in the
     * unit test. Five election timeouts still cover sending a large snapshot on a LAN. */
    raft_set_install_snapshot_timeout(&n->raft, opts->install_snapshot_timeout_ms
                                                    ? opts->install_snapshot_timeout_ms
                                                    : 5 * n->raft.election_timeout);
    raft_set_snapshot_threshold(&n->raft, n->snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, n->snapshot_trailing);
    /* Pre-vote: a replica cut off from the others does not disrupt the leader on its return. */
    raft_set_pre_vote(&n->raft, true);
    return 0;
}

/* ---------------------------------------------------------------- reopening */

/*
 * libraft shuts a node down for good (state "unavailable") when an I/O call it cannot do without
 * fails, or when a leader's AppendEntries conflicts with an entry at or below its commit index.
 * The second can happen here: libraft 0.15, the version Debian 12 ships, counts replicas to
 * commit entries of earlier terms (the case of Figure 8 in the Raft paper), so a node may commit
 * an entry that a later leader overwrites. docs/design.md ("A node libraft shut down") shows
 * why the tables stay correct; what is lost is the node, which would otherwise stay out of
 * service until someone restarted the process. The node instead closes the instance and opens
 * it again from its data directory, as a process restart would, without the process exiting:
 * Raft's log and snapshots are loaded again, the commit index starts from the snapshot, and
 * the entries the leader sends replace the conflicting ones. Pending proposals and barriers
 * fail with BZ_EUNAVAIL (the proposer starts again from the table); readiness starts over.
 */
static void raftnode__reopen_cb(uv_timer_t *t);

static void raftnode__reopen_begin(struct raftnode *n)
{
    LOG_ERROR(
        "raft: libraft shut node %d down in term %llu (commit index %llu, last index %llu)%s%s; "
        "reopening it from %s",
        n->id, (unsigned long long)n->raft.current_term, (unsigned long long)n->raft.commit_index,
        (unsigned long long)raft_last_index(&n->raft), n->raft.errmsg[0] ? ": " : "",
        n->raft.errmsg, n->dir);
    n->raft_up = false;
    n->reopen_closing = true;
    uint64_t now = uv_now(&n->loop);
    /* Shut down again soon after a reopen (a disk that keeps failing): one try a second. */
    n->reopen_delay_ms = n->reopened_at && now - n->reopened_at < 10000 ? 1000 : 0;
    raftfsm_flush(&n->fsm);
    raft_close(&n->raft, raftnode__raft_close_cb);
}

/*
 * Every raft_close ends here: after a stop (closing) the loop's handles close too and the thread
 * ends; after libraft shut the node down, a fresh instance is opened on the reopen timer.
 */
static void raftnode__raft_close_cb(struct raft *r)
{
    struct raftnode *n = r->data;
    n->reopen_closing = false;
    raft_uv_close(&n->uv_io);
    raft_uv_tcp_close(&n->transport);
    raftfsm_flush(&n->fsm); /* anything raft_close applied */
    if (n->closing) {
        raftnode__handles_close(n);
        return;
    }
    /* Readiness starts over, as after a process start. */
    n->target_known = false;
    n->target = 0;
    n->caught_up = false;
    n->ready_term = 0;
    n->barrier_inflight = false;
    n->proposed_term = 0;
    uv_timer_start(&n->reopen, raftnode__reopen_cb, n->reopen_delay_ms, 0);
}

static void raftnode__reopen_cb(uv_timer_t *t)
{
    struct raftnode *n = t->data;
    if (n->closing || n->raft_up || n->reopen_closing)
        return;
    char errmsg[256];
    int rv = raftnode__raft_init(n, errmsg, sizeof errmsg);
    if (rv) {
        LOG_ERROR("raft: reopening node %d: %s; trying again in 1 s", n->id, errmsg);
        uv_timer_start(&n->reopen, raftnode__reopen_cb, 1000, 0);
        return;
    }
    if (raft_start(&n->raft) != 0) {
        LOG_ERROR("raft: reopening node %d: start: %s; trying again in 1 s", n->id,
                  raft_errmsg(&n->raft));
        n->reopen_closing = true;
        n->reopen_delay_ms = 1000;
        raft_close(&n->raft, raftnode__raft_close_cb);
        return;
    }
    n->raft_up = true;
    n->reopened_at = uv_now(&n->loop);
    pthread_mutex_lock(&n->lock);
    n->info.reopens++;
    pthread_mutex_unlock(&n->lock);
    LOG_WARN("raft: node %d reopened from %s (term %llu, last index %llu)", n->id, n->dir,
             (unsigned long long)n->raft.current_term,
             (unsigned long long)raft_last_index(&n->raft));
    raftnode__refresh(n);
}

/* Runs the loop until the handles closed by a failed start are gone, then closes it. */
static void raftnode__loop_drain(struct raftnode *n)
{
    uv_run(&n->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&n->loop) != 0)
        LOG_WARN("raft: libuv loop still had handles at close");
}

int raftnode_start(struct raftnode **out, const struct bz_config *cfg, int id, struct orderlog *log,
                   const struct raftnode_options *opts, char *errmsg, size_t errlen)
{
    const struct config_replica *me = config_replica_find(cfg, id);
    if (!me || me->raft_listen[0] == '\0') {
        snprintf(errmsg, errlen, "order.%d: no such replica or no raft_listen", id);
        return BZ_EINVAL;
    }
    struct raftnode *n = xcalloc(1, sizeof *n);
    n->id = id;
    n->log = log;
    n->snapshot_threshold = (unsigned)cfg->snapshot_threshold;
    n->snapshot_trailing = (unsigned)cfg->snapshot_trailing;
    snprintf(n->address, sizeof n->address, "%s", me->raft_listen);
    snprintf(n->dir, sizeof n->dir, "%s/raft-%d", cfg->data_dir, id);
    if (opts)
        n->opts = *opts;
    atomic_init(&n->fault_term, false);
    n->info.id = id;
    pthread_mutex_init(&n->lock, NULL);
    raftfsm_init(&n->fsm, log, true);
    raftfsm_set_async_snapshots(&n->fsm);
    int rv = BZ_EIO;

    /* The table is the state machine's copy: Raft's log and snapshots are the durable record
     * and rebuild it, so its commits need not wait for an fsync each (docs/design.md). */
    if (orderlog_set_fsync(log, false) != 0) {
        snprintf(errmsg, errlen, "raft: cannot configure the order table");
        goto err_after_fsm;
    }

    if (raftnode__mkdir(cfg->data_dir, errmsg, errlen) || raftnode__mkdir(n->dir, errmsg, errlen))
        goto err_after_fsm;
    if (uv_loop_init(&n->loop) != 0) {
        snprintf(errmsg, errlen, "raft: cannot create a libuv loop");
        goto err_after_fsm;
    }
    if (raftnode__raft_init(n, errmsg, errlen) != 0)
        goto err_after_loop;
    n->raft_up = true;

    uv_async_init(&n->loop, &n->wake, raftnode__wake_cb);
    n->wake.data = n;
    uv_timer_init(&n->loop, &n->poll);
    n->poll.data = n;
    uv_timer_init(&n->loop, &n->reopen);
    n->reopen.data = n;
    uv_prepare_init(&n->loop, &n->flush);
    n->flush.data = n;

    /* First start: every [order.N] is a voter. A node with state on disk keeps its own. */
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int crv = 0;
    for (int i = 0; i < cfg->replica_count && crv == 0; i++)
        crv = raft_configuration_add(&conf, (raft_id)cfg->replicas[i].id,
                                     cfg->replicas[i].raft_listen, RAFT_VOTER);
    if (crv == 0) {
        crv = raft_bootstrap(&n->raft, &conf);
        if (crv == 0)
            LOG_INFO("raft: bootstrapped %s with %d voters", n->dir, cfg->replica_count);
        else if (crv == RAFT_CANTBOOTSTRAP)
            crv = 0;
    }
    raft_configuration_close(&conf);
    if (crv) {
        snprintf(errmsg, errlen, "raft: bootstrap %s: %s", n->dir, raft_strerror(crv));
        goto err_after_raft;
    }
    if ((crv = raft_start(&n->raft)) != 0) {
        snprintf(errmsg, errlen, "raft: start on %s: %s", n->address, raft_errmsg(&n->raft));
        rv = crv == RAFT_CORRUPT || crv == RAFT_IOERR ? BZ_EIO : BZ_EINVAL;
        goto err_after_raft;
    }
    uv_timer_start(&n->poll, raftnode__poll_cb, RAFTNODE__POLL_MS, RAFTNODE__POLL_MS);
    uv_prepare_start(&n->flush, raftnode__flush_cb);
    raftnode__refresh(n);
    if (pthread_create(&n->thread, NULL, raftnode__main, n) != 0) {
        snprintf(errmsg, errlen, "raft: cannot start the node thread");
        goto err_after_raft;
    }
    LOG_INFO("raft: node %d on %s, data in %s", id, n->address, n->dir);
    *out = n;
    return 0;

err_after_raft:
    n->closing = true;
    uv_timer_stop(&n->poll);
    uv_prepare_stop(&n->flush);
    n->raft_up = false;
    raft_close(&n->raft, raftnode__raft_close_cb);
    raftnode__loop_drain(n);
    goto err_after_fsm;
err_after_loop:
    raftnode__loop_drain(n);
err_after_fsm:
    raftfsm_close(&n->fsm);
    pthread_mutex_destroy(&n->lock);
    free(n);
    return rv;
}

void raftnode_stop(struct raftnode *node)
{
    if (!node)
        return;
    struct raftnode__req *q = xcalloc(1, sizeof *q);
    q->op = RAFTNODE__STOP;
    raftnode__enqueue(node, q);
    pthread_join(node->thread, NULL);
    if (uv_loop_close(&node->loop) != 0)
        LOG_WARN("raft: libuv loop still had handles at close");
    raftfsm_close(&node->fsm);
    pthread_mutex_destroy(&node->lock);
    free(node);
}
