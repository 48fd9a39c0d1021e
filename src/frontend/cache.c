#include "cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/*
 * A node exists for a key that has a value (on the LRU list) or a recent
 * invalidation record without a value (a tombstone, on the tombstone FIFO).
 * Tombstones are bounded; dropping one raises `floor`, which then stands in
 * for every key without a node, so bounding memory never lets a stale fill in.
 */
struct cache__node {
    char key[STOCK_NAME_MAX + 1];
    uint64_t inval_seq;     /* sequence number of the key's last invalidation */
    uint64_t inval_version; /* catalog version carried by that invalidation */
    bool has_value;
    char *bytes;
    size_t len;
    uint64_t version; /* catalog version of the cached reply */
    /* Highest version a reply for this key brought from the catalog, cached or not: some
     * client may have seen it, so no older reply may be cached from now on. */
    uint64_t seen_version;
    uint64_t stored_ms;
    struct cache__node *prev, *next; /* LRU list (value) or tombstone FIFO */
    struct cache__node *hnext;       /* hash chain */
};

/* A fetch in the air for one key, shared by the misses that join it (cache.h). */
struct cache_flight {
    char key[STOCK_NAME_MAX + 1];
    uint64_t token;  /* c->seq when it began */
    unsigned refs;   /* the leader and the joiners not yet released */
    bool registered; /* joinable: on c->flights */
    bool done;       /* the result below is set */
    int status, retry_after_s;
    char *bytes;
    size_t len;
    struct cache_flight *next; /* c->flights, while registered */
};

struct cache__list {
    struct cache__node head; /* sentinel: head.next is the front */
    size_t count;
};

struct cache {
    pthread_mutex_t lock;
    size_t capacity, tomb_max;
    uint64_t ttl_ms;
    struct cache__node **buckets;
    size_t nbuckets;
    struct cache__list lru;       /* values, most recent at the front */
    struct cache__list tombs;     /* tombstones, oldest at the back */
    uint64_t seq;                 /* invalidation sequence */
    uint64_t floor;               /* highest seq of a dropped tombstone */
    struct cache_flight *flights; /* joinable flights, at most one per key */
    pthread_cond_t flight_done;   /* broadcast when any flight finishes */
    struct cache_stats stats;
};

/* ---------------------------------------------------------------- lists, hash */

static void cache__list_init(struct cache__list *l)
{
    l->head.next = l->head.prev = &l->head;
    l->count = 0;
}

static void cache__unlink(struct cache__list *l, struct cache__node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    l->count--;
}

static void cache__push_front(struct cache__list *l, struct cache__node *n)
{
    n->next = l->head.next;
    n->prev = &l->head;
    l->head.next->prev = n;
    l->head.next = n;
    l->count++;
}

static struct cache__node *cache__back(struct cache__list *l)
{
    return l->head.prev == &l->head ? NULL : l->head.prev;
}

static size_t cache__hash(const struct cache *c, const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h & (c->nbuckets - 1));
}

static struct cache__node *cache__find(struct cache *c, const char *key)
{
    for (struct cache__node *n = c->buckets[cache__hash(c, key)]; n; n = n->hnext)
        if (strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

static struct cache__node *cache__create(struct cache *c, const char *key)
{
    struct cache__node *n = xcalloc(1, sizeof *n);
    size_t klen = strnlen(key, STOCK_NAME_MAX);
    memcpy(n->key, key, klen);
    n->inval_seq = c->floor;
    size_t b = cache__hash(c, n->key);
    n->hnext = c->buckets[b];
    c->buckets[b] = n;
    return n;
}

static void cache__destroy(struct cache *c, struct cache__node *n)
{
    struct cache__node **pp = &c->buckets[cache__hash(c, n->key)];
    while (*pp != n)
        pp = &(*pp)->hnext;
    *pp = n->hnext;
    free(n->bytes);
    free(n);
}

/* Keeps a valueless node's invalidation record on the bounded tombstone FIFO, or frees it. */
static void cache__entomb(struct cache *c, struct cache__node *n)
{
    if (n->inval_seq <= c->floor && n->seen_version == 0) {
        cache__destroy(c, n); /* the floor already covers it */
        return;
    }
    cache__push_front(&c->tombs, n);
    while (c->tombs.count > c->tomb_max) {
        struct cache__node *old = cache__back(&c->tombs);
        cache__unlink(&c->tombs, old);
        /* Its fence and its seen version go: fence out every fill in flight instead. */
        c->floor = c->seq;
        cache__destroy(c, old);
    }
}

/* Removes a node's value (it must have one) and entombs it. */
static void cache__drop_value(struct cache *c, struct cache__node *n)
{
    cache__unlink(&c->lru, n);
    free(n->bytes);
    n->bytes = NULL;
    n->len = 0;
    n->has_value = false;
    cache__entomb(c, n);
}

/*
 * Fences out every fill of key that began before now (its node, created if
 * need be, takes the next invalidation number) and drops its cached value.
 */
static struct cache__node *cache__fence(struct cache *c, const char *key, struct cache__node *n)
{
    if (!n) {
        n = cache__create(c, key);
    } else if (n->prev && !n->has_value) {
        cache__unlink(&c->tombs, n); /* re-queued at the front below */
    }
    n->inval_seq = ++c->seq;
    if (n->has_value)
        cache__drop_value(c, n);
    else
        cache__entomb(c, n);
    return n;
}

/*
 * A reply of `version` for key reached a client without being cached: from
 * now on no older reply may be cached, nor served (a cached value older than
 * it goes), or that client's next lookup could go back in time. Where there
 * is no node to remember it on, every fill begun before now is fenced out.
 */
static void cache__seen(struct cache *c, const char *key, struct cache__node *n, uint64_t version)
{
    if (!n || (n->has_value && n->version < version))
        n = cache__fence(c, key, n);
    if (version > n->seen_version)
        n->seen_version = version;
}

/* ---------------------------------------------------------------- API */

struct cache *cache_new(size_t capacity, uint64_t ttl_ms)
{
    struct cache *c = xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    clock_cond_init(&c->flight_done);
    c->capacity = capacity ? capacity : 1;
    c->tomb_max = c->capacity < 1024 ? 1024 : c->capacity;
    c->ttl_ms = ttl_ms;
    c->nbuckets = 64;
    while (c->nbuckets < 2 * (c->capacity + c->tomb_max))
        c->nbuckets *= 2;
    c->buckets = xcalloc(c->nbuckets, sizeof *c->buckets);
    cache__list_init(&c->lru);
    cache__list_init(&c->tombs);
    return c;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    for (size_t b = 0; b < c->nbuckets; b++) {
        for (struct cache__node *n = c->buckets[b], *next; n; n = next) {
            next = n->hnext;
            free(n->bytes);
            free(n);
        }
    }
    free(c->buckets);
    pthread_cond_destroy(&c->flight_done);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool cache_get(struct cache *c, const char *key, uint64_t now_ms, struct strbuf *out)
{
    pthread_mutex_lock(&c->lock);
    struct cache__node *n = cache__find(c, key);
    /* Stored after now_ms (the caller's clock is a little old) is fresh too. */
    bool hit = n && n->has_value &&
               (c->ttl_ms == 0 || n->stored_ms > now_ms || now_ms - n->stored_ms < c->ttl_ms);
    if (hit) {
        cache__unlink(&c->lru, n);
        cache__push_front(&c->lru, n);
        hit = strbuf_append(out, n->bytes, n->len) == 0;
    }
    if (hit)
        c->stats.hits++;
    else
        c->stats.misses++;
    pthread_mutex_unlock(&c->lock);
    if (log_enabled(LOG_LEVEL_DEBUG))
        LOG_DEBUG("cache %s %s", hit ? "HIT" : "MISS", key);
    return hit;
}

uint64_t cache_fill_begin(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t token = c->seq;
    pthread_mutex_unlock(&c->lock);
    return token;
}

bool cache_fill_end(struct cache *c, const char *key, uint64_t token, const void *bytes, size_t len,
                    uint64_t version, uint64_t now_ms)
{
    char evicted[STOCK_NAME_MAX + 1] = "";
    bool stored = false;
    pthread_mutex_lock(&c->lock);
    struct cache__node *n = cache__find(c, key);
    uint64_t fence = n ? n->inval_seq : c->floor;
    if (token < fence || (n && version < n->seen_version)) {
        /* Invalidated while we were fetching, or older than a reply some client already
         * got. This reply reached its client all the same: remember its version, so that
         * a fetch begun before ours that read an older state cannot fill it afterwards
         * (docs/design.md, "Caching and invalidation"). */
        c->stats.stale_fills++;
        cache__seen(c, key, n, version);
        goto out;
    }
    if (n && version < n->inval_version) {
        /* This fetch began after the invalidation, so the catalog answered after the
         * change it announced; a genuine invalidation's version is then never above the
         * reply's. Unless the catalog already showed a newer version (this reply is
         * stale), the invalidation's version was never the catalog's: a forged or
         * corrupt message, which must not keep the key out of the cache for ever
         * (issue 12). Refuse this fill, and trust the catalog's version from now on. */
        if (version >= n->seen_version)
            n->inval_version = version;
        c->stats.stale_fills++;
        cache__seen(c, key, n, version);
        goto out;
    }
    if (n && n->has_value && n->version > version)
        goto out; /* a newer reply is already cached */
    if (!n) {
        n = cache__create(c, key);
    } else if (n->has_value) {
        cache__unlink(&c->lru, n);
    } else if (n->prev) {
        cache__unlink(&c->tombs, n);
    }
    free(n->bytes);
    n->bytes = xmemdup(bytes, len);
    n->len = len;
    n->version = version;
    if (version > n->seen_version)
        n->seen_version = version;
    n->stored_ms = now_ms;
    n->has_value = true;
    cache__push_front(&c->lru, n);
    stored = true;
    if (c->lru.count > c->capacity) {
        struct cache__node *victim = cache__back(&c->lru);
        memcpy(evicted, victim->key, sizeof evicted);
        cache__drop_value(c, victim);
        c->stats.evictions++;
    }
out:
    pthread_mutex_unlock(&c->lock);
    if (evicted[0])
        LOG_DEBUG("cache EVICT %s", evicted);
    return stored;
}

void cache_invalidate(struct cache *c, const char *key, uint64_t version)
{
    pthread_mutex_lock(&c->lock);
    struct cache__node *n = cache__fence(c, key, cache__find(c, key));
    if (version > n->inval_version)
        n->inval_version = version;
    c->stats.invalidations++;
    pthread_mutex_unlock(&c->lock);
    LOG_DEBUG("cache INVALIDATE %s (version %llu)", key, (unsigned long long)version);
}

void cache_fill_skip(struct cache *c, const char *key, uint64_t version)
{
    pthread_mutex_lock(&c->lock);
    cache__seen(c, key, cache__find(c, key), version);
    pthread_mutex_unlock(&c->lock);
}

size_t cache_clear(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t dropped = c->lru.count;
    for (size_t b = 0; b < c->nbuckets; b++) {
        for (struct cache__node *n = c->buckets[b], *next; n; n = next) {
            next = n->hnext;
            free(n->bytes);
            free(n);
        }
        c->buckets[b] = NULL;
    }
    cache__list_init(&c->lru);
    cache__list_init(&c->tombs);
    c->floor = ++c->seq; /* every key now stands behind this invalidation */
    c->stats.invalidations += dropped;
    pthread_mutex_unlock(&c->lock);
    return dropped;
}

/* ---------------------------------------------------------------- single flight */

/* Takes f off the joinable list (if on it). */
static void cache__flight_unregister(struct cache *c, struct cache_flight *f)
{
    if (!f->registered)
        return;
    for (struct cache_flight **pp = &c->flights; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    f->next = NULL;
    f->registered = false;
}

/*
 * The joinable flight of key, or NULL (an overtaken one is unregistered). Under c->lock.
 * Joinable only if no invalidation of the key came after the flight began: the same fence
 * cache_fill_end applies to the flight's own fill.
 */
static struct cache_flight *cache__flight_joinable(struct cache *c, const char *key)
{
    struct cache_flight *f = c->flights;
    while (f && strcmp(f->key, key) != 0)
        f = f->next;
    if (!f)
        return NULL;
    struct cache__node *n = cache__find(c, key);
    uint64_t fence = n ? n->inval_seq : c->floor;
    if (f->token >= fence)
        return f;
    cache__flight_unregister(c, f); /* overtaken: a new flight replaces it */
    return NULL;
}

/* A new flight of key, led by the caller and joinable from now on. Under c->lock. */
static struct cache_flight *cache__flight_new(struct cache *c, const char *key)
{
    struct cache_flight *f = xcalloc(1, sizeof *f);
    memcpy(f->key, key, strnlen(key, STOCK_NAME_MAX));
    f->token = c->seq;
    f->refs = 1;
    f->registered = true;
    f->next = c->flights;
    c->flights = f;
    c->stats.flights++;
    return f;
}

struct cache_flight *cache_flight_begin(struct cache *c, const char *key, bool *leads)
{
    pthread_mutex_lock(&c->lock);
    struct cache_flight *f = cache__flight_joinable(c, key);
    *leads = f == NULL;
    if (f) {
        f->refs++;
        c->stats.flight_joins++;
    } else {
        f = cache__flight_new(c, key);
    }
    pthread_mutex_unlock(&c->lock);
    return f;
}

struct cache_flight *cache_flight_lead(struct cache *c, const char *key)
{
    pthread_mutex_lock(&c->lock);
    struct cache_flight *f = cache__flight_joinable(c, key) ? NULL : cache__flight_new(c, key);
    pthread_mutex_unlock(&c->lock);
    return f;
}

uint64_t cache_flight_token(const struct cache_flight *f)
{
    return f->token;
}

void cache_flight_finish(struct cache *c, struct cache_flight *f, int status, int retry_after_s,
                         const void *bytes, size_t len)
{
    char *copy = xmemdup(bytes, len);
    pthread_mutex_lock(&c->lock);
    cache__flight_unregister(c, f);
    /* A newer flight of the key (it replaced f after an invalidation) began before this
     * reply reached anyone, so it may have read an older state: once this reply is out,
     * joining it could take a client back in time. Later misses fetch anew. */
    for (struct cache_flight *g = c->flights; g; g = g->next) {
        if (strcmp(g->key, f->key) == 0) {
            cache__flight_unregister(c, g);
            break;
        }
    }
    f->status = status;
    f->retry_after_s = retry_after_s;
    f->bytes = copy;
    f->len = len;
    f->done = true;
    pthread_cond_broadcast(&c->flight_done);
    pthread_mutex_unlock(&c->lock);
}

bool cache_flight_wait(struct cache *c, struct cache_flight *f, uint64_t timeout_ms, int *status,
                       int *retry_after_s, struct strbuf *out)
{
    struct timespec ts;
    clock_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&c->lock);
    while (!f->done && pthread_cond_timedwait(&c->flight_done, &c->lock, &ts) == 0)
        ;
    bool ok = f->done && strbuf_append(out, f->bytes, f->len) == 0;
    if (ok) {
        *status = f->status;
        *retry_after_s = f->retry_after_s;
    }
    pthread_mutex_unlock(&c->lock);
    return ok;
}

void cache_flight_release(struct cache *c, struct cache_flight *f)
{
    pthread_mutex_lock(&c->lock);
    bool last = --f->refs == 0;
    if (last)
        cache__flight_unregister(c, f); /* a leader that never finished */
    pthread_mutex_unlock(&c->lock);
    if (last) {
        free(f->bytes);
        free(f);
    }
}

void cache_stats(struct cache *c, struct cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    out->entries = c->lru.count;
    pthread_mutex_unlock(&c->lock);
}

json_t *cache_entries_json(struct cache *c, uint64_t now_ms)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&c->lock);
    for (struct cache__node *n = c->lru.head.next; n != &c->lru.head; n = n->next)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I}", "name", n->key, "version",
                                             (json_int_t)n->version, "age_ms",
                                             (json_int_t)(now_ms - n->stored_ms)));
    pthread_mutex_unlock(&c->lock);
    return arr;
}
