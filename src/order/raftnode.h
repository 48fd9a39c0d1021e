/*
 * raftnode.h - one order replica's node of a libraft cluster (mode = raft):
 * libraft 0.15 with its libuv disk I/O and TCP transport, running the order
 * state machine (raftfsm.h) over the replica's order log.
 *
 * Threading. The node owns one thread that runs a libuv loop; libraft and
 * the state machine run only there. Every function below may be called from
 * any thread: requests are queued under a lock and the loop is woken with a
 * uv_async. Completion callbacks (raftnode_done_cb) run on the node's thread:
 * they must not block and must not call the *_wait functions (they may call
 * raftnode_propose/raftnode_barrier). The *_wait variants block the calling
 * thread until completion or a deadline. libuv writes to sockets a peer may
 * have closed: the process must ignore SIGPIPE (service_* does it for every
 * service).
 *
 * Storage: Raft's log, metadata and snapshots live in <data_dir>/raft-<id>/;
 * the orders table stays in order-<id>.db (opened by the caller). On the
 * first start the node bootstraps the configuration from every [order.N]
 * (all voters, at their raft_listen address). Not for HTTP, the catalog call
 * or the sequencer's cursor: those belong to the order service.
 */
#ifndef BZ_RAFTNODE_H
#define BZ_RAFTNODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "orderlog.h"
#include "trade.h"

struct raftnode;

/*
 * Completion of a proposal or a barrier, on the node's thread. status:
 *   0               applied on this node (the entries are in its table)
 *   BZ_ENOTLEADER   this node is not the leader: nothing was appended
 *   BZ_EUNAVAIL     leadership lost or node stopping after the entry was appended: the
 *                   outcome is unknown (a later leader may still commit it)
 *   BZ_EINVAL       the entries cannot form a journal page (nothing was appended)
 *   BZ_EIO          any other Raft failure (outcome unknown)
 */
typedef void (*raftnode_done_cb)(void *arg, int status);

/* Timeouts; 0 = the default: election 1000 ms, heartbeat 100 ms (libraft's), and a lost
 * InstallSnapshot resent after 5 election timeouts (libraft's own default is 30 s). */
struct raftnode_options {
    unsigned election_timeout_ms;
    unsigned heartbeat_timeout_ms;
    unsigned install_snapshot_timeout_ms;
};

/*
 * Starts replica `id` of cfg (which needs mode = raft and a raft_listen on
 * every [order.N]) over `log`, which the caller keeps open until after
 * raftnode_stop. Creates <data_dir>/raft-<id>/ if needed, loads or
 * bootstraps the Raft state, binds the Raft port and starts the node's
 * thread. opts may be NULL. 0, or BZ_EINVAL / BZ_EIO with errmsg set
 * (nothing left running).
 */
int raftnode_start(struct raftnode **out, const struct bz_config *cfg, int id, struct orderlog *log,
                   const struct raftnode_options *opts, char *errmsg, size_t errlen);

/*
 * Stops the node: pending proposals complete with BZ_EUNAVAIL, the Raft
 * instance and the libuv handles are closed and the thread joined. Frees
 * the node. Not from a callback.
 */
void raftnode_stop(struct raftnode *node);

/*
 * Proposes entries[0..n-1] (consecutive journal numbers, n >= 1) as one
 * group: each run of RAFTCODEC_PAGE_MAX orders becomes one journal page and
 * one Raft entry, all appended in the same loop turn (libraft's libuv I/O
 * writes entries submitted together in one batch, so concurrent proposals
 * share an fsync: group commit). The entries are copied before return.
 * cb(arg, status) runs once, when every page is applied here or the first
 * fails. Several proposals may be in flight; they are appended in call
 * order. A proposal whose first number is more than one past both the table's
 * last and the last number this leader appended in its term is refused
 * (BZ_EUNAVAIL through cb): it would follow a page that failed (the gap
 * guard, docs/design.md). 0 when queued (cb will run); BZ_EINVAL for entries that cannot form
 * a page, BZ_EUNAVAIL once raftnode_stop has begun (cb will not run).
 */
int raftnode_propose(struct raftnode *node, const struct order *entries, size_t n,
                     raftnode_done_cb cb, void *arg);

/*
 * Appends a Raft barrier: cb(arg, 0) once every entry committed before it
 * is applied on this node (the leader), so a read from the table afterwards
 * sees every order acknowledged before the barrier was requested. 0 when
 * queued (cb will run), BZ_EUNAVAIL once raftnode_stop has begun.
 */
int raftnode_barrier(struct raftnode *node, raftnode_done_cb cb, void *arg);

/* Blocking forms: the status, or BZ_ETIMEDOUT after timeout_ms (outcome unknown). */
int raftnode_propose_wait(struct raftnode *node, const struct order *entries, size_t n,
                          unsigned timeout_ms);
int raftnode_barrier_wait(struct raftnode *node, unsigned timeout_ms);

enum raftnode_role {
    RAFTNODE_UNAVAILABLE = 0,
    RAFTNODE_FOLLOWER,
    RAFTNODE_CANDIDATE,
    RAFTNODE_LEADER
};

/* A view of the node, refreshed by its thread every few milliseconds and after each request. */
struct raftnode_info {
    int id;
    enum raftnode_role role;
    int leader_id; /* 0 when unknown */
    uint64_t term;
    uint64_t commit_index, applied_index, last_index; /* Raft indexes, not order numbers */
    /* Caught up: applied at least up to the leader's commit index as of this node's start (a
     * leader: once a barrier of its term is applied). Sticky; false again only if the state
     * machine fails. What /readyz reports. */
    bool ready;
    /* Leader whose barrier of the current term is applied: it may serve reads and its
     * sequencer may start from its table's last number + 1. */
    bool leader_ready;
    bool fsm_failed;
    /* Times libraft shut the node down and the node reopened it from its data directory
     * (raftnode.c, "reopening"): each is logged as an error. */
    unsigned reopens;
};

void raftnode_info(struct raftnode *node, struct raftnode_info *out);

/*
 * Fault injection for tests: the node's next term change fails to persist (RAFT_IOERR from its
 * set_term), which libraft answers by shutting the node down, as it does on a log conflict with
 * a committed entry. The node must reopen itself.
 */
void raftnode_fault_term(struct raftnode *node);
/* Fault injection for tests: each snapshot's worker waits ms before reading the table, so that a
 * stop or a reopen meets a snapshot in flight. */
void raftnode_fault_slow_snapshot(struct raftnode *node, unsigned ms);
/* True when info.role is leader and info.leader_ready. */
bool raftnode_is_leader(struct raftnode *node);

/*
 * The node for /status as a new JSON object: id, role, leader, term, commit,
 * applied and last index, ready, the state machine's counters and, on the
 * leader, each replica's match index. Computed on the node's thread; NULL
 * (BZ_ETIMEDOUT) if it does not answer within timeout_ms.
 */
json_t *raftnode_status_json(struct raftnode *node, unsigned timeout_ms);

#endif
