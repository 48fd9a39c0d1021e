/*
 * pb.h - the primary-backup protocol core of one order replica, without I/O.
 *
 * Everything the protocol decides lives here: adopting a leader notice
 * (one leader per epoch, durably), catch-up at start, promotion (newest log
 * of a write quorum), the follower's in-order append, the leader's
 * per-follower pipelines, its sequencer (batches to the catalog, journal
 * appended to the log) and its commit index. The core never blocks, never
 * reads the clock, never touches a socket or a thread: it talks to the world
 * through `struct pb_io` (send a call and get its reply later, answer a
 * client, the time) and `struct pb_store` (the durable log).
 *
 * Two drivers use it: replica.c (a loop thread, http_async, SQLite: production) and
 * tests/sim (simulated time and network, thousands of seeded schedules).
 * Not thread-safe: the driver serialises every call into one core. The
 * argument for the protocol is in docs/design.md.
 */
#ifndef BZ_PB_H
#define BZ_PB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "msg.h"
#include "orderlog.h"
#include "trade.h"
#include "util.h"

#define PB_MAX_PEERS        16
#define PB_APPEND_BATCH     500  /* entries per append */
#define PB_PIPELINE_MIN     8    /* orders waiting for the next exchange to start it early */
#define PB_HEARTBEAT_MS     200  /* an idle pipeline still sends this often */
#define PB_RETRY_MS         100  /* after a failed call */
#define PB_PROBE_MS         500  /* deadline of a notice, state or page call */
#define PB_IDLE_SYNC_MS     500  /* an idle leader still reads the catalog's journal */
#define PB_QUORUM_LOST_MS   1500 /* a leader without a quorum's replies for this long is unready */
#define PB_MATCH_WINDOW     256  /* entries compared per page when looking for a match point */
#define PB_BACKOFF          64   /* how far a pipeline steps back on a mismatch */
#define PB_CATALOG_PROBE_MS 500  /* a replica that does not lead probes the catalog this often */

enum pb_role { PB_STARTING = 0, PB_FOLLOWER, PB_PROMOTING, PB_LEADER };

/* ------------------------------------------------------------------ the store */

/*
 * The durable log, as orderlog.h defines it (production: an orderlog; the
 * simulator wraps one to inject faults). Writes return 0 or a BZ_E* code.
 */
struct pb_store {
    void *ctx;
    void (*state)(void *ctx, struct orderlog_state *out);
    int (*promise)(void *ctx, uint64_t epoch, int leader);
    int (*set_log_epoch)(void *ctx, uint64_t epoch);
    int (*apply)(void *ctx, const struct order *entries, size_t n, int64_t stale_after,
                 uint64_t leader_epoch);
    int (*get)(void *ctx, int64_t number, struct order *out);
    int (*find_request)(void *ctx, const char *request_id, struct order *out);
    int (*read)(void *ctx, int64_t from, size_t max, struct order *out, size_t *n);
};

/* The store functions over an orderlog (what production uses). */
struct pb_store pb_store_orderlog(struct orderlog *log);

/* ------------------------------------------------------------------ calls */

enum pb_call_kind {
    PB_CALL_NOTICE = 0, /* POST /leader to a peer: {leader, epoch} -> peer state */
    PB_CALL_STATE,      /* GET /state of a peer -> peer state */
    PB_CALL_APPEND,     /* POST /replicate -> {ok, match, last} */
    PB_CALL_PAGE,       /* GET /log/{from} -> entries */
    PB_CALL_EXECUTE,    /* POST /execute to the catalog -> results and journal */
    PB_CALL_CATALOG,    /* GET /health of the catalog (a follower's probe) -> reachable or not */
};

/*
 * An append as it goes on the wire: the message and its bytes
 * (msg_append_encode), built once by the core and shared by every call that
 * sends it (the same page to several followers, docs/design.md, "The
 * replication wire"). Immutable once built; the last pb_append_release frees it.
 */
struct pb_append {
    atomic_int refs;
    struct msg_append m; /* entries owned */
    char *wire;          /* the encoded append */
    size_t wire_len;
};

/* Takes one more reference (any thread). */
struct pb_append *pb_append_retain(struct pb_append *a);
/* Drops one (any thread; NULL is a no-op). */
void pb_append_release(struct pb_append *a);

/*
 * One outgoing call. `peer` is an index into the core's peers (-1: the
 * catalog). The driver owns the call from pb_io.send on: it frees it with
 * pb_call_free after delivering the reply (or the failure) to pb_on_reply.
 */
struct pb_call {
    uint64_t id;
    enum pb_call_kind kind;
    int peer;
    int timeout_ms;
    struct msg_notice notice; /* NOTICE */
    struct pb_append *append; /* APPEND: a reference, released with the call */
    int64_t from;             /* PAGE */
    struct msg_exec exec;     /* EXECUTE (trades owned) */
};

void pb_call_free(struct pb_call *call);

/* A reply. err != 0: no usable reply (unreachable, timed out, refused, malformed). */
struct pb_reply {
    int err;
    struct msg_peer_state state; /* NOTICE, STATE */
    bool ok;                     /* APPEND: accepted */
    int64_t match, last;         /* APPEND */
    struct order *entries;       /* PAGE: owned by the reply */
    size_t n;
    struct msg_exec_reply exec; /* EXECUTE: owned by the reply */
};

void pb_reply_free(struct pb_reply *reply);

/* ------------------------------------------------------------------ answers */

/* The outcome of a submitted order or a query, handed to pb_io.answer. */
struct pb_answer {
    int status;         /* 0 or BZ_E* */
    int64_t number;     /* submit: the transaction number */
    struct order order; /* query: the entry */
    char message[200];  /* status != 0: for the client */
};

struct pb_io {
    void *ctx;
    uint64_t (*now_ms)(void *ctx);
    /* Starts a call (the driver owns it now); its reply comes back via pb_on_reply. */
    void (*send)(void *ctx, struct pb_call *call);
    /* Answers a request started with pb_submit or pb_query (exactly once per token). */
    void (*answer)(void *ctx, void *token, const struct pb_answer *answer);
};

/* ------------------------------------------------------------------ the core */

struct pb_config {
    int id;
    int npeers;
    int peer_ids[PB_MAX_PEERS];
    int write_quorum;    /* replicas, leader included, that must hold an order */
    int call_timeout_ms; /* deadline of a catalog call and of a client's wait */
};

struct pb;

/* A new core over `store` (which must outlive it); starts with catch-up. */
struct pb *pb_new(const struct pb_config *cfg, const struct pb_io *io,
                  const struct pb_store *store);
/* Frees the core. Pending client requests are answered BZ_EUNAVAIL first. */
void pb_free(struct pb *pb);

/* Runs timers that are due. Returns the time (io.now_ms) at which it next needs to run. */
uint64_t pb_tick(struct pb *pb);

/* The reply to a call the core sent (the driver then frees call and reply). */
void pb_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply);

/*
 * A leader notice (from a front-end or a promoting peer). 0, BZ_ESTALE (older epoch, or
 * another leader for the promised one), BZ_EINVAL (an epoch implausibly far ahead,
 * MSG_EPOCH_STEP_MAX) or BZ_EIO.
 */
int pb_on_notice(struct pb *pb, const struct msg_notice *m);

/* An append from a leader. On 0, ok, match and last are the reply. BZ_ESTALE or BZ_EIO. */
int pb_on_append(struct pb *pb, const struct msg_append *m, bool *ok, int64_t *match,
                 int64_t *last);

/*
 * Clients' orders t[0..n-1] (copied), in this order, and a query: each answered later via
 * io.answer with its token. Orders handed in together reach the sequencer together.
 */
void pb_submit(struct pb *pb, const struct trade *t, size_t n, void *const *tokens);
void pb_query(struct pb *pb, int64_t number, void *token);

/* This replica's state as peers and front-ends read it. */
void pb_peer_state(struct pb *pb, struct msg_peer_state *out);

enum pb_role pb_role(const struct pb *pb);
const char *pb_role_name(enum pb_role role);
uint64_t pb_epoch(const struct pb *pb);

/*
 * A copy of what /health, /status and /metrics show, taken by the driver
 * after each call into the core, so readers never wait for the core (which
 * may be in an fsync).
 */
struct pb_view {
    int id;
    enum pb_role role;
    int leader;
    uint64_t epoch;
    struct orderlog_state log;
    int64_t start_last, commit;
    bool ready;
    char reason[128]; /* why not ready */
    bool catalog_ok;
    int npeers;
    struct {
        int id;
        bool reachable, current; /* current: match is this epoch's */
        int64_t match;
    } peers[PB_MAX_PEERS];
};

void pb_view_get(struct pb *pb, struct pb_view *out);
/* {"id","role","leader","epoch","promised",...,"peers":[...]}; new reference. */
json_t *pb_view_json(const struct pb_view *v);
/* Counters are read from pb (atomics), the rest from the view. */
void pb_metrics(struct pb *pb, const struct pb_view *v, struct strbuf *out);

#endif
