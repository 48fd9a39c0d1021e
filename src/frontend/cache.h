/*
 * cache.h - the front-end's LRU cache of stock lookups, with fills that an
 * invalidation can never be overtaken by.
 *
 * Keys are short strings (up to STOCK_NAME_MAX bytes): stock names for the
 * lookup cache, order numbers for the order cache (whose entries are never
 * invalidated). Values are the exact reply bytes sent to clients, so a hit
 * costs a hash lookup and a copy, no JSON work. A hash map plus an
 * intrusive recency list; one mutex (critical sections are a few hundred
 * nanoseconds). Time is passed in (`now_ms`), never read here.
 *
 * The fill protocol closes the classic race: take a token with
 * cache_fill_begin() before asking the catalog, and hand it to
 * cache_fill_end(), which refuses the insert if the key was invalidated in
 * between. A refused fill (its reply still reached a client) fences out the
 * fills begun before it, so no client's next lookup goes back in time. Why
 * this is enough is in docs/design.md.
 */
#ifndef BZ_CACHE_H
#define BZ_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util.h"

struct cache_stats {
    uint64_t hits, misses, evictions, invalidations, stale_fills, entries;
    uint64_t flights, flight_joins; /* fetches led, misses that shared one */
};

struct cache;

/* capacity >= 1 entries; ttl_ms 0 means entries never expire by age. */
struct cache *cache_new(size_t capacity, uint64_t ttl_ms);
void cache_free(struct cache *c);

/* On a hit, appends the cached bytes to out and returns true. */
bool cache_get(struct cache *c, const char *key, uint64_t now_ms, struct strbuf *out);

/* A token to pass to cache_fill_end for a fetch that starts now. */
uint64_t cache_fill_begin(struct cache *c);

/*
 * Stores bytes for key unless key was invalidated after `token` was taken,
 * or a newer catalog version is already known. Returns true if stored.
 */
bool cache_fill_end(struct cache *c, const char *key, uint64_t token, const void *bytes, size_t len,
                    uint64_t version, uint64_t now_ms);

/*
 * A fetch's reply went to a client without a fill (the cache was not to be
 * trusted then): fences out fills of key that began before now, which may
 * hold an older state than the one that client saw, and drops a cached value
 * older than `version`.
 */
void cache_fill_skip(struct cache *c, const char *key, uint64_t version);

/* Drops key (if present) and fences out fills that began before now. */
void cache_invalidate(struct cache *c, const char *key, uint64_t version);

/*
 * Drops every entry and fences out every fill that began before now: what a
 * front-end does when it may have missed invalidations. Returns how many
 * entries were dropped.
 */
size_t cache_clear(struct cache *c);

/*
 * Single flight: concurrent misses for one key share one fetch. The first
 * miss leads a flight (it fetches and then calls cache_flight_finish); a miss
 * that arrives while that flight is in the air joins it and waits for its
 * result, but only if the key was not invalidated since the flight began:
 * a joiner never gets a reply older than its own arrival's invalidations
 * (read-your-writes, monotonic lookups). A newer flight for the key replaces
 * the older one for joiners, and stops being joinable when any flight of the
 * key finishes (it may have read a state older than that flight's reply), so
 * call cache_flight_finish before filling the cache with the reply. Every
 * begin is matched by one release.
 */
struct cache_flight;

/* *leads is true when the caller must fetch and finish the flight, false when it joined one. */
struct cache_flight *cache_flight_begin(struct cache *c, const char *key, bool *leads);
/*
 * Like cache_flight_begin for a caller that cannot wait: a new flight it leads, or NULL
 * (nothing registered) when a joinable flight of key is in the air.
 */
struct cache_flight *cache_flight_lead(struct cache *c, const char *key);
/* The fill token of the flight (for cache_fill_end), taken when it began. */
uint64_t cache_flight_token(const struct cache_flight *f);
/* The leader hands its result (a status, retry-after and reply bytes) to the joiners. */
void cache_flight_finish(struct cache *c, struct cache_flight *f, int status, int retry_after_s,
                         const void *bytes, size_t len);
/*
 * A joiner waits up to timeout_ms for the result: true with *status,
 * *retry_after_s and the bytes appended to out; false on timeout.
 */
bool cache_flight_wait(struct cache *c, struct cache_flight *f, uint64_t timeout_ms, int *status,
                       int *retry_after_s, struct strbuf *out);
void cache_flight_release(struct cache *c, struct cache_flight *f);

void cache_stats(struct cache *c, struct cache_stats *out);

/* [{"name","version","age_ms"}...], most recently used first; new reference. */
json_t *cache_entries_json(struct cache *c, uint64_t now_ms);

#endif
