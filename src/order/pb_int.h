/*
 * pb_int.h - the primary-backup core's internal state, shared by its parts:
 * pb_core.c (roles, leader notices, commit index, waiting clients, state),
 * pb_sync.c (catch-up at start and promotion), pb_follower.c (appends from a
 * leader) and pb_leader.c (pipelines to followers, the sequencer, orders and
 * queries). Nothing outside src/order/pb_*.c includes it.
 */
#ifndef BZ_PB_INT_H
#define BZ_PB_INT_H

#include <stdatomic.h>

#include "pb.h"

struct pb_peer {
    int id;
    /* The leader's pipeline to this peer, valid for epoch_seen. */
    uint64_t epoch_seen;
    int64_t next;  /* next number to send */
    int64_t match; /* highest number known to be on the peer in this epoch */
    bool reachable;
    uint64_t append_call; /* id of the append in flight, 0 when none */
    uint64_t last_sent_ms, retry_at_ms, last_ok_ms;
    /* The current probe round of a catch-up or promotion. */
    uint64_t probe_call; /* id of the probe in flight, 0 when answered */
    bool probe_ok, probe_refused;
    struct msg_peer_state probe;
};

/* A client request waiting for the sequencer or for the commit index. */
struct pb_wait {
    void *token;
    bool is_query;
    struct trade trade; /* a submit */
    int64_t number;     /* waiting for commit: the number to reach */
    uint64_t epoch;     /* the epoch it was taken in */
    uint64_t deadline_ms;
    struct pb_wait *next;
};

enum pb_sync_phase { PB_SYNC_IDLE = 0, PB_SYNC_PROBE, PB_SYNC_MATCH, PB_SYNC_COPY, PB_SYNC_WAIT };

struct pb {
    struct pb_config cfg;
    struct pb_io io;
    struct pb_store st;
    struct pb_peer peers[PB_MAX_PEERS];
    uint64_t next_call_id;

    enum pb_role role;
    int leader_id;            /* 0 when unknown */
    uint64_t epoch;           /* the promised epoch, whose leader is leader_id */
    int64_t start_last;       /* as leader: the log's last number when the epoch began */
    int64_t commit;           /* as leader: highest number on a write quorum in this epoch */
    uint64_t leader_since_ms; /* when the current role began (leader or promoting) */
    bool broken;              /* a store write failed: out of service until restarted */
    char broken_why[128];

    /* Catch-up (role STARTING) or promotion (role PROMOTING, for sync_epoch). */
    struct {
        enum pb_sync_phase phase;
        bool promote;
        uint64_t epoch;       /* promotion: the epoch being taken over */
        uint64_t retry_at_ms; /* PB_SYNC_WAIT: when to start a new round */
        int target;           /* peer index whose log is copied */
        int64_t target_last;
        uint64_t target_log_epoch;
        uint64_t stale_before; /* local entries past the copy older than this are dropped */
        int64_t probe_at;      /* MATCH: the highest number not yet compared */
        int64_t next;          /* COPY: the next number to fetch */
        uint64_t call;         /* id of the page call in flight */
        int64_t mine_last;     /* our last number when the sync began (logging) */
        uint64_t started_ms;
        uint64_t round_ms; /* when the current probe round began */
    } sync;

    /* The sequencer (leader only). */
    struct pb_wait *queue, **queue_tail; /* submits not yet sent to the catalog */
    struct pb_wait *batch[MSG_MAX_ENTRIES];
    size_t batch_n;
    uint64_t exec_call; /* id of the catalog call in flight, 0 when none */
    uint64_t exec_epoch;
    int64_t exec_next; /* where the next exchange reads the journal from, -1: the log's end + 1 */
    uint64_t last_exec_ms, exec_retry_at_ms;
    bool sync_needed; /* the journal may hold entries past our log */
    bool catalog_ok;  /* the last exchange or probe reached the catalog */
    uint64_t catalog_probe_call, next_catalog_probe_ms;
    struct pb_wait *committing; /* waiting for the commit index */
    /* The newest append built (a reference), sent again as is to a follower that needs the
     * same entries: within an epoch the leader's log below its end never changes. */
    struct pb_append *last_append;

    atomic_uint_fast64_t promotions, orders_acked, commit_timeouts, appends_received,
        entries_applied, batches, journal_synced, queue_timeouts, appends_sent, appends_encoded;
};

/* pb_core.c */
uint64_t pb__now(struct pb *pb);
struct pb_call *pb__call_new(struct pb *pb, enum pb_call_kind kind, int peer, int timeout_ms);
void pb__set_role(struct pb *pb, enum pb_role role);
/* Adopts (epoch, leader) if the promise allows it. 0, BZ_ESTALE or BZ_EIO. */
int pb__adopt(struct pb *pb, uint64_t epoch, int leader);
/* Takes the replica out of service after a store write failed. */
void pb__break(struct pb *pb, const char *what, int err);
void pb__advance_commit(struct pb *pb);
void pb__answer(struct pb *pb, struct pb_wait *w, int status, const char *message);
void pb__answer_committed(struct pb *pb);
void pb__expire_waits(struct pb *pb);
void pb__fail_all_waits(struct pb *pb, int status, const char *message);
/* Fails every trade of the batch at the catalog with `status` (outcome unknown). */
void pb__fail_batch(struct pb *pb, int status, const char *message);
/* Runs what can run now: pipelines, the sequencer, sync rounds. */
void pb__pump(struct pb *pb);

/* pb_sync.c */
void pb__sync_start(struct pb *pb, bool promote, uint64_t epoch);
void pb__sync_pump(struct pb *pb);
void pb__sync_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply);

/* pb_leader.c */
/*
 * The append of m (taking its entries) encoded for the wire, one reference held by the
 * caller; NULL after taking the replica out of service if it cannot be encoded (an entry
 * in the log that no decoder would accept).
 */
struct pb_append *pb__append_new(struct pb *pb, struct msg_append *m);
void pb__leader_pump(struct pb *pb);
void pb__leader_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply);

#endif
