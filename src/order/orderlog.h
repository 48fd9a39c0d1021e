/*
 * orderlog.h - one replica's durable order log (order-<id>.db, SQLite).
 *
 * Table orders(number, request_id, name, type, quantity, epoch) as in SPEC §5:
 * numbers are consecutive from 0 with no gaps, request ids are unique, and
 * `epoch` is the epoch of the leader that created the entry. Table meta keeps
 * the replica's promised epoch (it refuses older leaders) and its log epoch
 * (the newest leader whose start-of-epoch log this replica has installed),
 * which is what leader promotion compares (see docs/design.md).
 *
 * This module knows nothing about leaders or the network: it offers ordered
 * append with conflict truncation (orderlog_apply: the leader appends the
 * catalog's journal with it, followers what the leader sends), lookup and
 * range reads, each one transaction.
 * Thread-safe: one internal mutex serialises every call.
 */
#ifndef BZ_ORDERLOG_H
#define BZ_ORDERLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trade.h"

struct orderlog_state {
    int64_t last;        /* number of the last entry, -1 when empty */
    uint64_t last_epoch; /* epoch of the last entry, 0 when empty */
    uint64_t promised;   /* highest leader epoch this replica has accepted */
    int promised_leader; /* the leader it accepted for `promised` (0: none named yet) */
    uint64_t log_epoch;  /* newest epoch whose start-of-epoch log is installed here */
};

struct orderlog;

/*
 * Opens or creates path, checking the file (PRAGMA quick_check and dense
 * numbers): a damaged log is refused, never served. 0, or BZ_EIO with errmsg.
 */
int orderlog_open(struct orderlog **out, const char *path, char *errmsg, size_t errlen);
void orderlog_close(struct orderlog *log);

/*
 * every_commit false: commits are no longer fsynced one by one (SQLite's
 * synchronous=NORMAL in WAL mode: they survive a crash of the process, and
 * a power loss may take the last ones). Only for a log that is a copy of a
 * durable record elsewhere: raft mode's table, which Raft's own log and
 * snapshots rebuild (docs/design.md, "Raft mode"). 0 or BZ_EIO.
 */
int orderlog_set_fsync(struct orderlog *log, bool every_commit);

void orderlog_state(struct orderlog *log, struct orderlog_state *out);

/*
 * Records durably that this replica accepted `leader` for `epoch` (leader 0:
 * only the epoch is known, from a peer). The promise only moves forward: a
 * lower epoch, or the same epoch naming another leader once one is named, is
 * refused with BZ_ESTALE. 0, BZ_ESTALE or BZ_EIO.
 */
int orderlog_promise(struct orderlog *log, uint64_t epoch, int leader);
/* Sets the log epoch (durably). 0 or BZ_EIO. */
int orderlog_set_log_epoch(struct orderlog *log, uint64_t epoch);

/*
 * Applies entries received from a leader, Raft-style, in one transaction:
 * an entry already present with the same epoch is kept, an entry whose
 * number is present with another epoch truncates the log from there, then
 * the rest is appended. Entries must be consecutive and start at most at
 * last+1. Afterwards, the log is cut from the first entry numbered above
 * `stale_after` whose epoch is older than `leader_epoch` (the caller knows
 * such entries cannot be in the leader's log); cutting a suffix keeps the
 * numbers dense. Returns 0, BZ_EINVAL for a batch that leaves a gap, or
 * BZ_EIO.
 */
int orderlog_apply(struct orderlog *log, const struct order *entries, size_t n, int64_t stale_after,
                   uint64_t leader_epoch);

/*
 * A group transaction: from orderlog_group_open until orderlog_group_commit,
 * every call's changes go into one SQLite transaction (each call still all
 * or nothing, as a savepoint), so many small applies cost one commit. The
 * changes are visible to every later call at once, and durable only once
 * committed: only for a log that is a copy of a durable record elsewhere
 * (raft mode's table, see orderlog_set_fsync). A failed commit loses the
 * whole group (the state follows the table again). Opening an open group
 * and committing none do nothing. 0 or BZ_EIO.
 */
int orderlog_group_open(struct orderlog *log);
int orderlog_group_commit(struct orderlog *log);

/* The entry with this number. 0 or BZ_ENOTFOUND / BZ_EIO. */
int orderlog_get(struct orderlog *log, int64_t number, struct order *out);
/* The entry with this request id. 0 or BZ_ENOTFOUND / BZ_EIO. */
int orderlog_find_request(struct orderlog *log, const char *request_id, struct order *out);
/*
 * Up to `max` consecutive entries starting at `from` into out; *n receives
 * how many. 0 or BZ_EIO.
 */
int orderlog_read(struct orderlog *log, int64_t from, size_t max, struct order *out, size_t *n);

#endif
