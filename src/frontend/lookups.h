/*
 * lookups.h - lookup batches: the cache misses of one front-end event thread
 * share catalog calls (POST /lookups, msg.h) instead of one call each.
 *
 * The order batches' scheme (batch.h) on one thread: no thread, timer or lock
 * of its own. A miss is queued, and while fewer than LOOKUPS_CALLS_MAX calls
 * are in flight, everything queued (up to MSG_LOOKUP_BATCH_MAX names) goes out
 * at once as one call. When a call ends, each miss gets its own answer and
 * what queued meanwhile goes out. One client alone thus calls the catalog at
 * once; under load a call carries the misses that arrived while the others
 * were in flight, and every miss is still answered by the catalog, after it
 * arrived (docs/design.md, "Lookup batches").
 *
 * Each miss keeps the deadline it arrived with (the batcher's timeout): a call
 * ends by the deadline of the oldest miss it carries, and a miss whose deadline
 * passed while it queued fails without a call, so waiting behind a hung call
 * never makes a miss wait longer than a call of its own would have.
 *
 * A batcher belongs to one event thread and its http_async client: submit and
 * the callbacks run on that thread only.
 */
#ifndef BZ_LOOKUPS_H
#define BZ_LOOKUPS_H

#include <stddef.h>
#include <stdint.h>

#include "http_async.h"
#include "util.h"

#define LOOKUPS_CALLS_MAX 1 /* calls in flight per event thread (measured: docs/design.md) */

struct lookups;
struct lookups_item;

/*
 * How a miss's lookup ended, exactly once per lookups_submit: rv is 0 with the
 * status and body GET /stocks/{name} answers (borrowed: valid during the
 * call), or BZ_EUNAVAIL / BZ_ETIMEDOUT / BZ_EUPSTREAM (the call failed or its
 * reply does not decode). Runs on the batcher's thread; must not block.
 */
typedef void (*lookups_done_fn)(struct lookups_item *it, int rv, int status, const char *body,
                                size_t len);

/* One miss; the caller's memory, untouched by the batcher once done has run. */
struct lookups_item {
    const char *name; /* a valid stock name, kept until done */
    lookups_done_fn done;
    uint64_t deadline_ms_;      /* private: set by lookups_submit */
    struct lookups_item *next_; /* private: the queue */
};

/* A batcher for the catalog at base_url ("http://host:port"), calling through a. */
struct lookups *lookups_new(const char *base_url, const char *secret, struct http_async *a,
                            int timeout_ms);
/* Call only once nothing is queued or in flight. NULL is a no-op. */
void lookups_free(struct lookups *l);

/* Queues it (name and done set) and returns; done may run before it returns. */
void lookups_submit(struct lookups *l, struct lookups_item *it);

/* Calls made, names they carried, and calls whose reply was refused (an error status or
 * bytes that do not decode), since the start; for /metrics. */
void lookups_counts(const struct lookups *l, uint64_t *calls, uint64_t *names, uint64_t *refused);

#endif
