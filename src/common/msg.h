/*
 * msg.h - the internal JSON messages between services, and their strict
 * decoders (the codec of replication and invalidation; see docs/design.md).
 *
 *   invalidation   POST /invalidate {"stream":S,"seq":N,"stocks":[{"name":"GameStart",
 *                                    "version":12}...]}                 catalog -> front-end
 *                  (a heartbeat has no stocks; see notify.h for the numbering)
 *   leader notice  POST /leader     {"leader":2,"epoch":7}              front-end -> replicas
 *   append         POST /replicate  binary (application/octet-stream), below  leader -> follower
 *     reply                         binary, below (an error is the JSON error shape)
 *   log page       GET /log/{from}  reply: binary, a slice (pagecodec.h)     replica -> replica
 *   execute        POST /execute    binary, below                       order leader -> catalog
 *     reply                         binary, below (an error is the JSON error shape)
 *   lookups        POST /lookups    binary, below                       front-end -> catalog
 *     reply                         binary, below (an error is the JSON error shape)
 *
 * The trade hot path is binary (docs/design.md, "The replication wire"): the
 * entries are a pagecodec.h slice, or pagecodec.h entries without numbers,
 * behind a fixed little-endian header:
 *
 *   append        "BZA1" leader:u32 epoch:u64 prev:i64 prev_epoch:u64 start_last:i64 slice
 *   reply         "BZR1" ok:u32 match:i64 last:i64                 (MSG_APPEND_REPLY_SIZE)
 *   execute       "BZX1" from:i64 committed:i64 n:u32 entry*n
 *   reply         "BZY1" end:i64 n:u32 result*n slice       (the journal from `from`, epoch 0)
 *   result        code:u16, then number:i64 if code is 200, else len:u8 message (no NUL)
 *   lookups       "BZL1" n:u32 (len:u8 name)*n                    (1 <= n <= MSG_LOOKUP_BATCH_MAX)
 *   reply         "BZM1" n:u32 (status:u16 len:u32 body)*n   each body as GET /stocks/{name}'s
 *
 * Decoders accept exactly these shapes and reject anything else with a
 * message, so a malformed or hostile peer cannot corrupt a log; encoders
 * refuse what the decoders would. Pure functions: no I/O, no locks.
 */
#ifndef BZ_MSG_H
#define BZ_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "trade.h"
#include "util.h"

#define MSG_MAX_ENTRIES  1000 /* per append, per catalog batch and journal page */
#define MSG_LOG_PAGE_MAX 4096 /* per page of GET /log/{from} (catch-up): larger, fewer writes */
/* Per POST /orders/batch (front-end -> leader), and its body's bound: an order encodes in
 * under 320 bytes (an 80-byte request id, escapes included, a 64-byte name). */
#define MSG_ORDER_BATCH_MAX       256
#define MSG_ORDER_BATCH_BYTES_MAX (MSG_ORDER_BATCH_MAX * 512)

struct msg_notice {
    int leader;
    uint64_t epoch;
};

struct msg_append {
    uint64_t epoch;
    int leader;
    int64_t prev;          /* number before the first entry; -1 at the start of the log */
    uint64_t prev_epoch;   /* epoch of entry `prev` (0 when prev is -1) */
    int64_t start_last;    /* the leader's last number when its epoch began */
    struct order *entries; /* caller frees with msg_append_free */
    size_t n;
};

struct msg_inval {
    char name[STOCK_NAME_MAX + 1];
    uint64_t version; /* catalog version of the change */
};

#define MSG_INVAL_BATCH_MAX 64 /* stocks per invalidation message */

/*
 * One message of a catalog's invalidation stream to one front-end. `stream`
 * names the catalog run (random at start), `seq` numbers the messages of that
 * stream to this front-end: a message with stocks carries the next number, a
 * heartbeat (n == 0) repeats the last one.
 */
struct msg_inval_batch {
    uint64_t stream;
    uint64_t seq;
    struct msg_inval stocks[MSG_INVAL_BATCH_MAX];
    size_t n;
};

json_t *msg_inval_batch_to_json(const struct msg_inval_batch *m);
int msg_inval_batch_from_json(const json_t *obj, struct msg_inval_batch *out, char *errmsg,
                              size_t errlen);

/*
 * How far one message may move an epoch beyond the receiver's current one. Real
 * epochs grow by one per leader selection, so a step this large is never
 * legitimate; a forged or corrupt notice that jumps to the decoders' ceiling
 * (2^62) would leave no higher epoch to recover with (issue 12).
 */
#define MSG_EPOCH_STEP_MAX 1000000

/*
 * 0 when `proposed` is at most MSG_EPOCH_STEP_MAX above `current` (or not above
 * it: older epochs are the receiver's own business); else BZ_EINVAL with errmsg.
 * For the receiver of a leader notice or an append, with its promised epoch.
 */
int msg_check_epoch_step(uint64_t current, uint64_t proposed, char *errmsg, size_t errlen);

json_t *msg_inval_to_json(const struct msg_inval *m);
int msg_inval_from_json(const json_t *obj, struct msg_inval *out, char *errmsg, size_t errlen);

json_t *msg_notice_to_json(const struct msg_notice *m);
int msg_notice_from_json(const json_t *obj, struct msg_notice *out, char *errmsg, size_t errlen);

/*
 * The append's bytes: 0 with *buf (caller frees) and *len, or BZ_EINVAL for a
 * message msg_append_decode would refuse. Does not take ownership of m->entries.
 */
int msg_append_encode(const struct msg_append *m, char **buf, size_t *len);
/*
 * Decodes an append that fills buf exactly: header fields in range, at most
 * MSG_MAX_ENTRIES entries numbered from prev+1, epochs 1..epoch. On 0,
 * out->entries is allocated (even when n is 0); free with msg_append_free.
 * BZ_EINVAL with errmsg set otherwise (nothing allocated).
 */
int msg_append_decode(const void *buf, size_t len, struct msg_append *out, char *errmsg,
                      size_t errlen);
void msg_append_free(struct msg_append *m);

/*
 * A page of a replica's log (GET /log/{from}): at most MSG_LOG_PAGE_MAX
 * consecutive entries, epochs >= 1. Encode: 0 with *buf (caller frees), or
 * BZ_EINVAL. Decode: 0 with *entries allocated (caller frees), or BZ_EINVAL
 * with errmsg set.
 */
int msg_log_page_encode(const struct order *entries, size_t n, char **buf, size_t *len);
int msg_log_page_decode(const void *buf, size_t len, struct order **entries, size_t *n,
                        char *errmsg, size_t errlen);

/*
 * A batch of trades for the catalog to execute in order, with the leader's
 * journal cursor: `from` is the next number its log lacks, `committed` the
 * first number not yet on a majority (the catalog may forget entries below).
 */
struct msg_exec {
    int64_t from;
    int64_t committed;
    struct trade *trades; /* caller frees with msg_exec_free */
    size_t n;
};

/* The outcome of one trade of a batch: an HTTP status code, and the number when 200. */
struct msg_exec_result {
    int code;
    int64_t number;
    char message[96];
};

/*
 * The catalog's answer: one result per trade, in order, and the journal from
 * the request's `from` (at most MSG_MAX_ENTRIES entries, epoch 0), with `end`
 * the number the journal will give next (end > from + njournal: more pages).
 */
struct msg_exec_reply {
    struct msg_exec_result *results;
    size_t nresults;
    struct order *journal;
    size_t njournal;
    int64_t end;
};

/*
 * The batch's bytes: 0 with *buf (caller frees) and *len, or BZ_EINVAL for a
 * batch msg_exec_decode would refuse (a cursor out of range, more than
 * MSG_MAX_ENTRIES trades, a trade without a valid request id).
 */
int msg_exec_encode(const struct msg_exec *m, char **buf, size_t *len);
/* Decodes a batch that fills buf exactly. On 0, out->trades is allocated (even when n is 0);
 * free with msg_exec_free. BZ_EINVAL with errmsg set otherwise (nothing allocated). */
int msg_exec_decode(const void *buf, size_t len, struct msg_exec *out, char *errmsg, size_t errlen);
void msg_exec_free(struct msg_exec *m);

/* The reply's bytes: 0 with *buf (caller frees) and *len, or BZ_EINVAL for a reply
 * msg_exec_reply_decode would refuse. */
int msg_exec_reply_encode(const struct msg_exec_reply *m, char **buf, size_t *len);
/*
 * The BZ_E* code of a refused trade from the HTTP status in its result:
 * BZ_ENOTFOUND, BZ_ECONFLICT, BZ_EMISMATCH, else BZ_EUPSTREAM.
 */
int msg_exec_refusal(int code);
/*
 * Decodes a reply, filling buf exactly, to a batch of `ntrades` trades sent
 * with cursor `from`: exactly ntrades results (codes 200..599, a number for
 * 200, a message otherwise), journal entries numbered consecutively from
 * `from` with epoch 0, and end >= from + njournal. On 0 the arrays are
 * allocated; free with msg_exec_reply_free. BZ_EINVAL with errmsg otherwise.
 */
int msg_exec_reply_decode(const void *buf, size_t len, size_t ntrades, int64_t from,
                          struct msg_exec_reply *out, char *errmsg, size_t errlen);
void msg_exec_reply_free(struct msg_exec_reply *m);

/*
 * Concurrent cache misses of one front-end thread share one catalog call
 * (docs/design.md, "Lookup batches"): the stock names, and per name the status
 * and body GET /stocks/{name} would have answered.
 */
#define MSG_LOOKUP_BATCH_MAX 64   /* names per POST /lookups */
#define MSG_LOOKUP_BODY_MAX  1024 /* bytes of one answer's body */
/* The largest request and reply bodies (each bounded by the limits above). */
#define MSG_LOOKUPS_BYTES_MAX      (8 + MSG_LOOKUP_BATCH_MAX * (1 + STOCK_NAME_MAX))
#define MSG_LOOKUP_REPLY_BYTES_MAX (8 + MSG_LOOKUP_BATCH_MAX * (6 + MSG_LOOKUP_BODY_MAX))

struct msg_lookups {
    size_t n;
    char names[MSG_LOOKUP_BATCH_MAX][STOCK_NAME_MAX + 1];
};

/* One answer of a lookup reply; body points into the decoded bytes. */
struct msg_lookup_result {
    int status;
    const char *body;
    size_t len;
};

/*
 * Appends the request for names[0..n) to out: 0, or BZ_EINVAL for what
 * msg_lookups_decode would refuse (n outside 1..MSG_LOOKUP_BATCH_MAX, a name
 * that is not a valid stock name) with out unchanged.
 */
int msg_lookups_encode(const char *const *names, size_t n, struct strbuf *out);
/* Decodes a request that fills buf exactly into *out; BZ_EINVAL with errmsg otherwise. */
int msg_lookups_decode(const void *buf, size_t len, struct msg_lookups *out, char *errmsg,
                       size_t errlen);
/* A reply: the header for n answers, then msg_lookup_reply_put for each, in the names' order. */
void msg_lookup_reply_start(struct strbuf *out, size_t n);
/* 0, or BZ_EINVAL for a status outside 200..599 or a body over MSG_LOOKUP_BODY_MAX. */
int msg_lookup_reply_put(struct strbuf *out, int status, const void *body, size_t len);
/*
 * Decodes a reply, filling buf exactly, to a request of n names: exactly n
 * answers into out[0..n), each with a status in 200..599 and at most
 * MSG_LOOKUP_BODY_MAX bytes of body (pointing into buf). 0, or BZ_EINVAL with
 * errmsg.
 */
int msg_lookup_reply_decode(const void *buf, size_t len, size_t n, struct msg_lookup_result *out,
                            char *errmsg, size_t errlen);

/* A follower's answer to an append. */
struct msg_append_reply {
    bool ok;       /* accepted */
    int64_t match; /* accepted: the batch's last number (-1 otherwise) */
    int64_t last;  /* the follower's last number, or where to resume when refused */
};

#define MSG_APPEND_REPLY_SIZE 24

void msg_append_reply_encode(const struct msg_append_reply *m, uint8_t out[MSG_APPEND_REPLY_SIZE]);
/* Exactly MSG_APPEND_REPLY_SIZE bytes, match and last in -1..2^62, a refusal with match -1. */
int msg_append_reply_decode(const void *buf, size_t len, struct msg_append_reply *out, char *errmsg,
                            size_t errlen);

/*
 * The replication state a replica reports (GET /state, and the reply to a
 * leader notice): the members promised, promised_leader, log_epoch and last
 * are required and checked; the report's other members (role, peers, ...)
 * are for people and are not read.
 */
struct msg_peer_state {
    uint64_t promised;
    int promised_leader;
    uint64_t log_epoch;
    int64_t last;
};

int msg_peer_state_from_json(const json_t *obj, struct msg_peer_state *out, char *errmsg,
                             size_t errlen);

#endif
