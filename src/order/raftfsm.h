/*
 * raftfsm.h - the Raft state machine of the order log: committed journal
 * pages applied to a replica's order-<id>.db, and its snapshots.
 *
 * Every Raft command entry is one journal page (pagecodec.h): orders the
 * catalog already numbered, copied by the leader from its journal cursor.
 * Apply is idempotent: entries numbered at or below the table's last are
 * duplicates of a page proposed again (after a leader change, a lost reply,
 * a restart replaying the Raft log) and are skipped once their content is
 * checked; the rest is appended through orderlog_apply, consecutive pages
 * in one group transaction (raftfsm_flush).
 * A page that would leave a gap, or a duplicate whose content differs, is a
 * broken invariant: the state machine fails (see raftfsm.c for why it cannot
 * happen) and refuses every later entry rather than diverge.
 *
 * Snapshots serialise the whole orders table (a replica that installs one
 * must end with the same table as everyone else) and install by appending
 * what the local table lacks. Not for Raft I/O or threads (raftnode.h): the
 * callbacks run on whatever thread drives the raft instance, one at a time;
 * raftfsm_stats may be called from any thread.
 */
#ifndef BZ_RAFTFSM_H
#define BZ_RAFTFSM_H

#include <pthread.h>
#include <raft.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "orderlog.h"
#include "trade.h"

/* Orders one group transaction takes at most (raftfsm_flush commits it sooner): a follower that
 * catches up applies thousands of pages in a row, and one commit each cost it about 0.4 ms. */
#define RAFTFSM_GROUP_MAX 16384

struct raftfsm_stats {
    uint64_t pages;      /* command entries applied */
    uint64_t appended;   /* orders added to the table */
    uint64_t duplicates; /* orders skipped as already present */
    uint64_t snapshots;  /* snapshots taken */
    uint64_t restores;   /* snapshots installed */
    bool failed;         /* a broken invariant or a storage error stopped the state machine */
    char error[256];     /* why, when failed */
};

/* Caller-allocated; raftfsm_init / raftfsm_close. Fields are private. */
struct raftfsm {
    struct raft_fsm fsm;  /* give &this->fsm to raft_init; fsm.data points back here */
    struct orderlog *log; /* not owned: outlives the raftfsm */
    bool abort_on_failure;
    struct order *scratch; /* PAGECODEC_PAGE_MAX entries for decoding */
    struct order *mine;    /* PAGECODEC_PAGE_MAX entries read back from the table */
    bool grouped;          /* applied pages are in an open orderlog group (raftfsm_flush) */
    size_t group_orders;   /* orders applied in that group */
    _Atomic uint64_t pages, appended, duplicates, snapshots, restores;
    pthread_mutex_t lock; /* guards failed and error */
    bool failed;
    char error[256];
    int64_t snap_count; /* async snapshots: the table's length when the snapshot was asked for */
    _Atomic unsigned slow_snapshot_ms; /* tests: how long the worker waits before reading */
};

/*
 * Prepares the state machine over an open order log. With
 * `abort_on_failure` (production), a broken invariant logs and aborts the
 * process; without it (tests), the state machine only marks itself failed.
 */
void raftfsm_init(struct raftfsm *f, struct orderlog *log, bool abort_on_failure);
/*
 * Snapshots read the table on a libraft worker (fsm version 3, snapshot_async) instead of on
 * the Raft thread, which a large table stalled: about 130 ms per 100k orders, every
 * snapshot_threshold entries. The Raft I/O must implement async_work (libraft's libuv I/O
 * does; its test fixture does not). Before raft_init.
 */
void raftfsm_set_async_snapshots(struct raftfsm *f);
/* Frees the contents, not the struct; the log stays open. */
void raftfsm_close(struct raftfsm *f);

/*
 * The apply step on one encoded page, as the Raft apply callback runs it.
 * 0; BZ_EINVAL when the page is undecodable, leaves a gap or contradicts the
 * table (the state machine is then failed); BZ_EIO on a storage error (also
 * failed); BZ_EUNAVAIL when the state machine already failed.
 */
int raftfsm_apply_page(struct raftfsm *f, const void *buf, size_t len);
/*
 * Applied pages go into one orderlog group transaction (orderlog.h), committed
 * every RAFTFSM_GROUP_MAX orders and by this call, which the Raft thread makes
 * whenever its loop is about to wait (and before a snapshot install). Until
 * then they are visible through the log but not in the file: a crash loses
 * them from the table, and the restart re-applies them from Raft's log.
 * 0, or BZ_EIO (the state machine is then failed).
 */
int raftfsm_flush(struct raftfsm *f);

/*
 * Encodes the table as a snapshot into out (strbuf_init'ed by the caller).
 * 0, BZ_EIO or BZ_ETOOBIG.
 */
int raftfsm_snapshot_encode(struct raftfsm *f, struct strbuf *out);
/*
 * Encodes the table's first `count` orders (at most its length) as a snapshot into out, reading
 * them through `buf` (PAGECODEC_PAGE_MAX entries). Safe on another thread than the one
 * applying pages: the rows below the table's end never change, and each read holds the log's
 * lock only for one page of rows. 0, BZ_EIO or BZ_ETOOBIG.
 */
int raftfsm_snapshot_encode_prefix(struct raftfsm *f, int64_t count, struct order *buf,
                                   struct strbuf *out);
/* Installs an encoded snapshot (caller keeps buf). 0, BZ_EINVAL (failed) or BZ_EIO. */
int raftfsm_snapshot_install(struct raftfsm *f, const void *buf, size_t len);

void raftfsm_stats(struct raftfsm *f, struct raftfsm_stats *out);

#endif
