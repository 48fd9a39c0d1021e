/*
 * raftcodec.h - the bytes of the Raft order log: journal pages (the payload
 * of one Raft command entry) and state-machine snapshots.
 *
 * A page is a run of consecutive, already-numbered orders copied from the
 * catalog's journal, stamped with the term of the leader that proposed it.
 * A snapshot is the whole orders table, numbers implicit from 0. Both are
 * little-endian binary with a magic and a version; the decoders are strict
 * (exact length, every field in range, names and request ids valid), so a
 * damaged or foreign buffer is refused, never half-applied. Pure functions:
 * no I/O, no locks, no Raft types. Not for the HTTP messages (msg.h).
 *
 *   page      "BZP1" first:i64 epoch:u64 n:u32 entry*n zero*(0..7, to a multiple of 8)
 *   snapshot  "BZS1" count:i64 (epoch:u64 entry)*count
 *   entry     type:u8 quantity:u32 name_len:u8 name rid_len:u8 rid
 */
#ifndef BZ_RAFTCODEC_H
#define BZ_RAFTCODEC_H

#include <stddef.h>
#include <stdint.h>

#include "trade.h"
#include "util.h"

#define RAFTCODEC_PAGE_MAX 1000 /* orders per page, as MSG_MAX_ENTRIES per journal page */

/* Bytes raftcodec_page_encode writes for these entries, a multiple of 8 (no validation). */
size_t raftcodec_page_size(const struct order *entries, size_t n);

/*
 * Encodes entries[0..n-1] (1..RAFTCODEC_PAGE_MAX, numbered consecutively from
 * entries[0].number >= 0, each a valid trade with a request id) stamped with
 * `epoch` into buf, which must hold raftcodec_page_size() bytes. The entries'
 * own epoch fields are ignored. 0, or BZ_EINVAL when the page would not
 * decode (nothing that fails raftcodec_page_decode is ever encoded).
 */
int raftcodec_page_encode(const struct order *entries, size_t n, uint64_t epoch, void *buf,
                          size_t len);

/*
 * Rewrites the epoch of an encoded page in place (the node stamps the term it
 * proposes in, known only on its own thread). 0 or BZ_EINVAL if buf is not a page.
 */
int raftcodec_page_set_epoch(void *buf, size_t len, uint64_t epoch);

/*
 * Decodes a page into out[0..max-1]; *n receives the count. Every decoded
 * entry carries the page's epoch and its number. 0, or BZ_EINVAL with errmsg
 * set (and *n undefined) for anything but an exact, valid page.
 */
int raftcodec_page_decode(const void *buf, size_t len, struct order *out, size_t max, size_t *n,
                          char *errmsg, size_t errlen);

/*
 * Snapshot writer: raftcodec_snap_begin writes the header for `count`
 * entries (numbers 0..count-1), then raftcodec_snap_append adds entries in
 * number order. 0, BZ_EINVAL (an entry out of order or invalid) or
 * BZ_ETOOBIG (out exceeded its maximum).
 */
int raftcodec_snap_begin(struct strbuf *out, int64_t count);
int raftcodec_snap_append(struct strbuf *out, const struct order *entries, size_t n,
                          int64_t expect_first);

/* Snapshot reader over a caller-owned buffer (which must outlive it). */
struct raftcodec_snap_reader {
    const uint8_t *p, *end;
    int64_t count; /* entries in the snapshot */
    int64_t next;  /* number of the next entry to read */
};

/* Checks the header. 0 or BZ_EINVAL with errmsg set. */
int raftcodec_snap_open(struct raftcodec_snap_reader *r, const void *buf, size_t len, char *errmsg,
                        size_t errlen);
/*
 * Reads up to max entries into out (*n receives how many; 0 at the end). After
 * the last entry it checks that no bytes follow. 0 or BZ_EINVAL with errmsg.
 */
int raftcodec_snap_read(struct raftcodec_snap_reader *r, struct order *out, size_t max, size_t *n,
                        char *errmsg, size_t errlen);

#endif
