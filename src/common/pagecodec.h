/*
 * pagecodec.h - the bytes of the order log: journal pages (the payload of one
 * Raft command entry), slices (runs of a replica's log on the primary-backup
 * wire: appends and catch-up pages, msg.h) and state-machine snapshots.
 *
 * A page is a run of consecutive, already-numbered orders copied from the
 * catalog's journal, stamped with one epoch (the term of the Raft leader
 * that proposed it, or the primary-backup epoch the entries were written
 * in). A slice is consecutive entries of any epochs as back-to-back pages, a
 * new page at every epoch change. A snapshot is the whole orders table,
 * numbers implicit from 0. All are little-endian binary with a magic and a
 * version; the decoders are strict (exact length, every field in range,
 * names and request ids valid), so a damaged or foreign buffer is refused,
 * never half-applied. Pure functions: no I/O, no locks, no Raft types. The
 * envelopes around slices (the append's header, its reply) are msg.h's.
 *
 *   page      "BZP1" first:i64 epoch:u64 n:u32 entry*n zero*(0..7, to a multiple of 8)
 *   slice     "BZL1" n:u32 page*  (n entries in all, numbered consecutively across the pages)
 *   snapshot  "BZS1" count:i64 (epoch:u64 entry)*count
 *   entry     type:u8 quantity:u32 name_len:u8 name rid_len:u8 rid
 */
#ifndef BZ_PAGECODEC_H
#define BZ_PAGECODEC_H

#include <stddef.h>
#include <stdint.h>

#include "trade.h"
#include "util.h"

#define PAGECODEC_PAGE_MAX 1000 /* orders per page, as MSG_MAX_ENTRIES per journal page */

/* Bytes pagecodec_page_encode writes for these entries, a multiple of 8 (no validation). */
size_t pagecodec_page_size(const struct order *entries, size_t n);

/*
 * Encodes entries[0..n-1] (1..PAGECODEC_PAGE_MAX, numbered consecutively from
 * entries[0].number >= 0, each a valid trade with a request id) stamped with
 * `epoch` into buf, which must hold pagecodec_page_size() bytes. The entries'
 * own epoch fields are ignored. 0, or BZ_EINVAL when the page would not
 * decode (nothing that fails pagecodec_page_decode is ever encoded).
 */
int pagecodec_page_encode(const struct order *entries, size_t n, uint64_t epoch, void *buf,
                          size_t len);

/*
 * Rewrites the epoch of an encoded page in place (the node stamps the term it
 * proposes in, known only on its own thread). 0 or BZ_EINVAL if buf is not a page.
 */
int pagecodec_page_set_epoch(void *buf, size_t len, uint64_t epoch);

/*
 * Decodes a page into out[0..max-1]; *n receives the count. Every decoded
 * entry carries the page's epoch and its number. 0, or BZ_EINVAL with errmsg
 * set (and *n undefined) for anything but an exact, valid page.
 */
int pagecodec_page_decode(const void *buf, size_t len, struct order *out, size_t max, size_t *n,
                          char *errmsg, size_t errlen);

#define PAGECODEC_SLICE_HEADER 8 /* "BZL1" n */

/* Bytes pagecodec_slice_encode writes for these entries (no validation). */
size_t pagecodec_slice_size(const struct order *entries, size_t n);

/*
 * Encodes entries[0..n-1] (n may be 0; numbered consecutively, each with its
 * own epoch, each a valid trade with a request id) into buf, which must hold
 * pagecodec_slice_size() bytes. 0, or BZ_EINVAL when the slice would not decode.
 */
int pagecodec_slice_encode(const struct order *entries, size_t n, void *buf, size_t len);

/*
 * Decodes a slice of at most `max` entries that fills buf exactly. On 0,
 * *entries is allocated (even when *n is 0: the caller frees it); otherwise
 * BZ_EINVAL with errmsg set and nothing allocated. Numbers and epochs are as
 * encoded: the caller checks them against its protocol.
 */
int pagecodec_slice_decode(const void *buf, size_t len, size_t max, struct order **entries,
                           size_t *n, char *errmsg, size_t errlen);

/*
 * One entry (a trade with its request id), for envelopes that carry trades
 * without numbers (the catalog's batch, msg.h). size: the bytes put writes.
 * check: 0, or BZ_EINVAL for a trade the decoder would refuse (put writes
 * only checked trades). get: reads the entry at *pp (never past end) and
 * advances *pp; 0, or BZ_EINVAL with errmsg set.
 */
size_t pagecodec_entry_size(const struct trade *t);
int pagecodec_entry_check(const struct trade *t);
uint8_t *pagecodec_entry_put(uint8_t *p, const struct trade *t);
int pagecodec_entry_get(const uint8_t **pp, const uint8_t *end, struct trade *t, char *errmsg,
                        size_t errlen);

/* Little-endian fields, for the envelopes around slices (msg.c). Each put returns p past it. */
uint8_t *pagecodec_put_u64(uint8_t *p, uint64_t v);
uint8_t *pagecodec_put_u32(uint8_t *p, uint32_t v);
uint64_t pagecodec_get_u64(const uint8_t *p);
uint32_t pagecodec_get_u32(const uint8_t *p);

/*
 * Snapshot writer: pagecodec_snap_begin writes the header for `count`
 * entries (numbers 0..count-1), then pagecodec_snap_append adds entries in
 * number order. 0, BZ_EINVAL (an entry out of order or invalid) or
 * BZ_ETOOBIG (out exceeded its maximum).
 */
int pagecodec_snap_begin(struct strbuf *out, int64_t count);
int pagecodec_snap_append(struct strbuf *out, const struct order *entries, size_t n,
                          int64_t expect_first);

/* Snapshot reader over a caller-owned buffer (which must outlive it). */
struct pagecodec_snap_reader {
    const uint8_t *p, *end;
    int64_t count; /* entries in the snapshot */
    int64_t next;  /* number of the next entry to read */
};

/* Checks the header. 0 or BZ_EINVAL with errmsg set. */
int pagecodec_snap_open(struct pagecodec_snap_reader *r, const void *buf, size_t len, char *errmsg,
                        size_t errlen);
/*
 * Reads up to max entries into out (*n receives how many; 0 at the end). After
 * the last entry it checks that no bytes follow. 0 or BZ_EINVAL with errmsg.
 */
int pagecodec_snap_read(struct pagecodec_snap_reader *r, struct order *out, size_t max, size_t *n,
                        char *errmsg, size_t errlen);

#endif
