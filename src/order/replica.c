#include "replica.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"

#define REPLICA__BATCH        500 /* entries per append */
#define REPLICA__HEARTBEAT_MS 200 /* an idle pipeline still sends this often */
#define REPLICA__PROBE_MS     500 /* deadline of a peer state/notice probe */
#define REPLICA__MATCH_WINDOW 256 /* entries compared per round when finding a match point */
#define REPLICA__BACKOFF      64  /* how far a pipeline steps back on a mismatch */

/* Peers answer 409 only to refuse an epoch older than one they promised. */
#define REPLICA__REFUSED(err) ((err) == BZ_ESTALE || (err) == BZ_ECONFLICT)

struct replica__peer {
    int id;
    char url[CONFIG_ADDR_MAX + 16]; /* http://host:port */
    struct replica *r;
    pthread_t thread;
    /* Guarded by r->lock. */
    uint64_t epoch_seen; /* epoch the fields below belong to */
    int64_t next;        /* next number to send */
    int64_t match;       /* highest number known to be on the peer in this epoch */
    bool reachable;
};

struct replica {
    const struct bz_config *cfg;
    int id;
    struct orderlog *log;
    int write_quorum; /* replicas (leader included) that must hold an order */
    int npeers;
    struct replica__peer peers[CONFIG_MAX_REPLICAS];
    char catalog_url[CONFIG_ADDR_MAX + 16];

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* role, epoch, log or peer progress changed */
    enum replica_role role;
    int leader_id;      /* 0 when unknown */
    uint64_t epoch;     /* epoch of leader_id (== promised) */
    int64_t start_last; /* as leader: the log's last number when the epoch began */
    bool stopping;

    pthread_mutex_t apply_lock; /* serialises follower-side log rewrites */
    /*
     * Fences leader appends against epoch changes: a leader append holds it
     * shared while it re-checks role and epoch and writes; adopting a new
     * epoch holds it exclusively. So no entry of an old epoch can land after
     * this replica has accepted a newer leader (see docs/design.md).
     * Lock order: apply_lock, term_lock, lock, then the log's own locks.
     */
    pthread_rwlock_t term_lock;
    pthread_t control;

    /*
     * The sequencer (leader only, one thread): trades wait in `queue` until it
     * sends them to the catalog as one batch with the journal cursor, appends
     * the journal it gets back to the log (one transaction) and hands each
     * trade its number. Guarded by r->lock; it sleeps on seq_cond.
     */
    pthread_t sequencer;
    pthread_cond_t seq_cond;
    struct replica__pending *queue_head, **queue_tail;
    bool sync_needed; /* a catalog call failed, or the epoch just began: sync the journal */
    int64_t commit;   /* leader: highest number on a write quorum in this epoch (-1 none) */
    bool catalog_ok;  /* the last catalog call succeeded */

    atomic_uint_fast64_t promotions, orders_acked, quorum_timeouts, appends_received,
        entries_applied, batches, journal_synced;
};

/* One trade waiting for the sequencer; lives on the submitting thread's stack. */
struct replica__pending {
    const struct trade *trade;
    bool taken; /* in a batch at the catalog: the submitter must wait for `done` */
    bool done;
    int status;        /* 0, or BZ_E*: the catalog's refusal or why the batch failed */
    int64_t number;    /* status 0: the trade's transaction number */
    char message[200]; /* status != 0: for the client */
    struct replica__pending *next;
};

/* A peer's replication state, as reported by GET /state or a notice reply. */
struct replica__peer_state {
    bool ok;
    uint64_t promised, log_epoch;
    int64_t last;
};

static void replica__advance_commit(struct replica *r);
static void *replica__sequencer_main(void *arg);

const char *replica_role_name(enum replica_role role)
{
    static const char *const names[] = {"starting", "follower", "promoting", "leader"};
    return names[role];
}

static void replica__set_role(struct replica *r, enum replica_role role)
{
    if (r->role != role)
        LOG_INFO("role %s -> %s (epoch %llu, leader %d)", replica_role_name(r->role),
                 replica_role_name(role), (unsigned long long)r->epoch, r->leader_id);
    r->role = role;
    pthread_cond_broadcast(&r->cond);
}

/* ---------------------------------------------------------------- peer calls */

/* POST (body) or GET to a peer with the secret; returns the "data" member or NULL (*err set). */
static json_t *replica__call(struct replica *r, const char *url, const char *path, json_t *body,
                             int timeout_ms, int *err)
{
    char full[256], msg[160];
    snprintf(full, sizeof full, "%s%s", url, path);
    json_t *data =
        http_client_call_json(full, r->cfg->secret, body, timeout_ms, err, msg, sizeof msg);
    if (!data)
        LOG_DEBUG("%s%s: %s", url, path, msg);
    return data;
}

static void replica__parse_state(const json_t *data, struct replica__peer_state *st)
{
    json_int_t promised = 0, log_epoch = 0, last = -1;
    st->ok = data && json_unpack((json_t *)data, "{s:I,s:I,s:I}", "promised", &promised,
                                 "log_epoch", &log_epoch, "last", &last) == 0;
    st->promised = (uint64_t)promised;
    st->log_epoch = (uint64_t)log_epoch;
    st->last = last;
}

/* (log_epoch, last) ordering: is a strictly newer than b? */
static bool replica__newer(uint64_t a_epoch, int64_t a_last, uint64_t b_epoch, int64_t b_last)
{
    return a_epoch > b_epoch || (a_epoch == b_epoch && a_last > b_last);
}

/* Fetches up to MSG_MAX_ENTRIES entries of a peer's log from `from`. */
static int replica__fetch(struct replica *r, const struct replica__peer *p, int64_t from,
                          struct order **entries, size_t *n)
{
    char path[64], msg[160];
    int err;
    snprintf(path, sizeof path, "/log/%lld", (long long)from);
    json_t *data = replica__call(r, p->url, path, NULL, r->cfg->call_timeout_ms, &err);
    if (!data)
        return err ? err : BZ_EUPSTREAM;
    int rv = msg_entries_from_json(json_object_get(data, "entries"), entries, n, msg, sizeof msg);
    json_decref(data);
    if (rv == 0 && *n > 0 && (*entries)[0].number != from) {
        free(*entries);
        rv = BZ_EUPSTREAM;
    }
    if (rv)
        LOG_WARN("bad log page from replica %d: %s", p->id, msg);
    return rv;
}

/*
 * Makes the local log equal to peer p's log up to p_last: finds the highest
 * number where both logs hold the same (number, epoch), then copies p's
 * entries after it. Local entries past p_last older than `stale_before` are
 * dropped. 0 or a BZ_E* code.
 */
static int replica__pull(struct replica *r, const struct replica__peer *p, int64_t p_last,
                         uint64_t stale_before)
{
    struct orderlog_state mine;
    orderlog_state(r->log, &mine);
    int64_t match = -1, probe = mine.last < p_last ? mine.last : p_last;
    int rv = 0;

    while (probe >= 0 && match < 0) {
        int64_t from =
            probe - REPLICA__MATCH_WINDOW + 1 > 0 ? probe - REPLICA__MATCH_WINDOW + 1 : 0;
        struct order *theirs;
        size_t n;
        if ((rv = replica__fetch(r, p, from, &theirs, &n)) != 0)
            return rv;
        for (int64_t q = probe; q >= from && match < 0; q--) {
            struct order o;
            if ((size_t)(q - from) < n && orderlog_get(r->log, q, &o) == 0 &&
                o.epoch == theirs[q - from].epoch)
                match = q;
        }
        free(theirs);
        probe = from - 1;
    }

    int64_t next = match + 1;
    pthread_mutex_lock(&r->apply_lock);
    while (next <= p_last && rv == 0) {
        struct order *page;
        size_t n;
        if ((rv = replica__fetch(r, p, next, &page, &n)) != 0)
            break;
        if (n == 0) {
            free(page);
            break;
        }
        rv = orderlog_apply(r->log, page, n, page[n - 1].number, stale_before);
        next = page[n - 1].number + 1;
        atomic_fetch_add(&r->entries_applied, n);
        free(page);
    }
    /* Drop our own leftovers past what we copied. Not past p_last: the pages may reach
     * beyond it (p's log grew meanwhile), and those copied entries are p's. */
    if (rv == 0)
        rv = orderlog_apply(r->log, NULL, 0, next - 1, stale_before);
    pthread_mutex_unlock(&r->apply_lock);
    if (rv == 0)
        LOG_INFO("pulled log from replica %d: matched at %lld, now at %lld", p->id,
                 (long long)match, (long long)(next - 1));
    return rv;
}

/* ---------------------------------------------------------------- start-up catch-up */

/* Collects peers' states; returns how many answered. */
static int replica__probe_all(struct replica *r, struct replica__peer_state *states,
                              const struct msg_notice *notice)
{
    int answered = 0;
    json_t *body = notice ? msg_notice_to_json(notice) : NULL;
    for (int i = 0; i < r->npeers; i++) {
        int err;
        json_t *data = replica__call(r, r->peers[i].url, notice ? "/leader" : "/state", body,
                                     REPLICA__PROBE_MS, &err);
        replica__parse_state(data, &states[i]);
        if (!states[i].ok && REPLICA__REFUSED(err))
            states[i].promised = UINT64_MAX; /* refused: it knows a newer epoch */
        json_decref(data);
        answered += states[i].ok;
    }
    json_decref(body);
    return answered;
}

static void replica__catch_up(struct replica *r)
{
    struct replica__peer_state states[CONFIG_MAX_REPLICAS];
    struct orderlog_state mine;
    orderlog_state(r->log, &mine);
    if (replica__probe_all(r, states, NULL) == 0) {
        LOG_INFO("no peer reachable: starting from my own log (last %lld)", (long long)mine.last);
        return;
    }
    int best = -1;
    uint64_t best_epoch = mine.log_epoch;
    int64_t best_last = mine.last;
    for (int i = 0; i < r->npeers; i++) {
        if (states[i].ok &&
            replica__newer(states[i].log_epoch, states[i].last, best_epoch, best_last)) {
            best = i;
            best_epoch = states[i].log_epoch;
            best_last = states[i].last;
        }
    }
    if (best < 0) {
        LOG_INFO("my log is the newest reachable (last %lld)", (long long)mine.last);
        return;
    }
    /* Promise the newest epoch the peer knows before copying its log, so no append from
     * a deposed leader can land in (or after) the copy. */
    pthread_rwlock_wrlock(&r->term_lock);
    pthread_mutex_lock(&r->lock);
    uint64_t promised = states[best].promised;
    if (promised > r->epoch && orderlog_promise(r->log, promised) == 0) {
        r->epoch = promised;
        r->leader_id = 0; /* learnt from the first notice or append of that epoch */
    }
    pthread_mutex_unlock(&r->lock);
    pthread_rwlock_unlock(&r->term_lock);

    uint64_t t0 = clock_now_ms();
    if (replica__pull(r, &r->peers[best], best_last, best_epoch + 1) == 0) {
        orderlog_set_log_epoch(r->log, best_epoch);
        LOG_INFO("caught up %lld -> %lld from replica %d in %llu ms", (long long)mine.last,
                 (long long)best_last, r->peers[best].id,
                 (unsigned long long)(clock_now_ms() - t0));
    } else {
        LOG_WARN("catch-up from replica %d failed; the leader will fill the gap",
                 r->peers[best].id);
    }
}

/* ---------------------------------------------------------------- promotion */

/*
 * Becoming leader of epoch E: make sure a write quorum (ourselves included)
 * has accepted E, take the newest log among them, and install it locally.
 */
static int replica__promote(struct replica *r, uint64_t epoch)
{
    struct replica__peer_state states[CONFIG_MAX_REPLICAS];
    struct msg_notice notice = {.leader = r->id, .epoch = epoch};
    replica__probe_all(r, states, &notice);

    struct orderlog_state mine;
    orderlog_state(r->log, &mine);
    int voters = 1, best = -1;
    uint64_t best_epoch = mine.log_epoch;
    int64_t best_last = mine.last;
    for (int i = 0; i < r->npeers; i++) {
        if (states[i].promised > epoch && states[i].promised != 0) {
            LOG_WARN("replica %d promised a newer epoch: abandoning epoch %llu", r->peers[i].id,
                     (unsigned long long)epoch);
            return BZ_ESTALE;
        }
        if (!states[i].ok || states[i].promised != epoch)
            continue;
        voters++;
        if (replica__newer(states[i].log_epoch, states[i].last, best_epoch, best_last)) {
            best = i;
            best_epoch = states[i].log_epoch;
            best_last = states[i].last;
        }
    }
    if (voters < r->write_quorum) {
        LOG_WARN("promotion to epoch %llu: %d of %d needed replicas reachable",
                 (unsigned long long)epoch, voters, r->write_quorum);
        return BZ_EUNAVAIL;
    }
    /* Ours may already be the newest; otherwise copy the newest. */
    int rv = best >= 0 ? replica__pull(r, &r->peers[best], best_last, epoch) : 0;
    if (rv == 0)
        rv = orderlog_set_log_epoch(r->log, epoch);
    if (rv)
        return rv;
    orderlog_state(r->log, &mine);
    pthread_mutex_lock(&r->lock);
    if (r->epoch == epoch && r->role == REPLICA_PROMOTING) {
        r->start_last = mine.last;
        r->commit = -1;
        r->sync_needed = true; /* complete the log from the catalog's journal first */
        atomic_fetch_add(&r->promotions, 1);
        replica__set_role(r, REPLICA_LEADER);
        replica__advance_commit(r);
        pthread_cond_signal(&r->seq_cond);
        LOG_INFO("leader of epoch %llu with %lld orders (%d replicas reachable)",
                 (unsigned long long)epoch, (long long)(mine.last + 1), voters);
    }
    pthread_mutex_unlock(&r->lock);
    return 0;
}

/* The control thread: start-up catch-up, then every promotion. */
static void *replica__control_main(void *arg)
{
    struct replica *r = arg;
    replica__catch_up(r);
    pthread_mutex_lock(&r->lock);
    if (r->role == REPLICA_STARTING)
        replica__set_role(r, REPLICA_FOLLOWER);
    while (!r->stopping) {
        if (r->role != REPLICA_PROMOTING) {
            pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        uint64_t epoch = r->epoch;
        pthread_mutex_unlock(&r->lock);
        int rv = replica__promote(r, epoch);
        pthread_mutex_lock(&r->lock);
        if (rv == BZ_ESTALE && r->epoch == epoch && r->role == REPLICA_PROMOTING) {
            replica__set_role(r, REPLICA_FOLLOWER);
        } else if (rv != 0 && !r->stopping) {
            struct timespec ts;
            clock_deadline(&ts, (uint64_t)100);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* ---------------------------------------------------------------- commit index */

static int replica__cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Leader, with r->lock held: moves the commit index to the highest number a
 * write quorum holds in this epoch. A follower counts only once it holds the
 * epoch's whole start log (match >= start_last), so an entry inherited from
 * an older epoch is committed only with that start log (docs/design.md).
 */
static void replica__advance_commit(struct replica *r)
{
    if (r->role != REPLICA_LEADER)
        return;
    struct orderlog_state st;
    orderlog_state(r->log, &st);
    int64_t held[CONFIG_MAX_REPLICAS];
    int n = 0;
    held[n++] = st.last;
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].epoch_seen == r->epoch)
            held[n++] = r->peers[i].match;
    if (n < r->write_quorum)
        return;
    qsort(held, (size_t)n, sizeof held[0], replica__cmp_desc);
    int64_t candidate = held[r->write_quorum - 1];
    if (candidate >= r->start_last && candidate > r->commit) {
        r->commit = candidate;
        pthread_cond_broadcast(&r->cond);
    }
}

/* ---------------------------------------------------------------- leader pipelines */

/* Sends one append to peer p; called without r->lock. Updates p under the lock. */
static void replica__send(struct replica *r, struct replica__peer *p, uint64_t epoch,
                          int64_t start_last, int64_t next)
{
    struct msg_append m = {
        .epoch = epoch, .leader = r->id, .prev = next - 1, .start_last = start_last};
    struct order prev;
    if (m.prev >= 0) {
        if (orderlog_get(r->log, m.prev, &prev) != 0)
            return;
        m.prev_epoch = prev.epoch;
    }
    m.entries = xcalloc(REPLICA__BATCH, sizeof *m.entries);
    orderlog_read(r->log, next, REPLICA__BATCH, m.entries, &m.n);
    json_t *body = msg_append_to_json(&m);
    free(m.entries);

    int err;
    json_t *data = replica__call(r, p->url, "/replicate", body, r->cfg->call_timeout_ms, &err);
    json_decref(body);

    pthread_mutex_lock(&r->lock);
    if (r->epoch == epoch && p->epoch_seen == epoch) {
        json_int_t match = -1, last = -1;
        int ok = 0;
        if (data &&
            json_unpack(data, "{s:b,s:I,s:I}", "ok", &ok, "match", &match, "last", &last) == 0) {
            if (!p->reachable)
                LOG_INFO("replica %d reachable again", p->id);
            p->reachable = true;
            if (ok) {
                if (match > p->match)
                    p->match = match;
                p->next = match + 1;
                replica__advance_commit(r);
            } else {
                /* Step back past the mismatch; re-sending entries it has is harmless. */
                int64_t back = m.prev - REPLICA__BACKOFF + 1;
                p->next = last + 1 < back ? last + 1 : back;
                if (p->next < 0)
                    p->next = 0;
            }
            pthread_cond_broadcast(&r->cond);
        } else if (REPLICA__REFUSED(err)) {
            LOG_WARN("replica %d knows a newer epoch than %llu: stepping down", p->id,
                     (unsigned long long)epoch);
            if (r->role == REPLICA_LEADER)
                replica__set_role(r, REPLICA_FOLLOWER);
        } else {
            if (p->reachable)
                LOG_WARN("replica %d unreachable: %s", p->id, bz_strerror(err));
            p->reachable = false;
        }
    }
    pthread_mutex_unlock(&r->lock);
    json_decref(data);
}

static void *replica__pipeline_main(void *arg)
{
    struct replica__peer *p = arg;
    struct replica *r = p->r;
    uint64_t last_sent_ms = 0;

    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        if (r->role != REPLICA_LEADER) {
            pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        if (p->epoch_seen != r->epoch) {
            p->epoch_seen = r->epoch;
            p->next = r->start_last + 1;
            p->match = -1;
            last_sent_ms = 0;
        }
        struct orderlog_state st;
        orderlog_state(r->log, &st);
        uint64_t now = clock_now_ms();
        bool due = now - last_sent_ms >= (p->reachable ? REPLICA__HEARTBEAT_MS : 100);
        if (st.last < p->next && !due) {
            struct timespec ts;
            clock_deadline(&ts, (uint64_t)p->reachable ? REPLICA__HEARTBEAT_MS : 100);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
            continue;
        }
        if (!p->reachable && !due) {
            struct timespec ts;
            clock_deadline(&ts, (uint64_t)50);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
            continue;
        }
        uint64_t epoch = r->epoch;
        int64_t start_last = r->start_last, next = p->next;
        pthread_mutex_unlock(&r->lock);
        replica__send(r, p, epoch, start_last, next);
        last_sent_ms = clock_now_ms();
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* ---------------------------------------------------------------- public calls */

int replica_start(struct replica **out, const struct bz_config *cfg, int id, struct orderlog *log)
{
    struct replica *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->id = id;
    r->log = log;
    r->role = REPLICA_STARTING;
    r->write_quorum = cfg->write_quorum == CONFIG_QUORUM_ONE ? 1 : cfg->replica_count / 2 + 1;
    snprintf(r->catalog_url, sizeof r->catalog_url, "http://%s", cfg->catalog_listen);
    struct orderlog_state st;
    orderlog_state(log, &st);
    r->epoch = st.promised;

    r->commit = -1;
    r->queue_tail = &r->queue_head;
    r->catalog_ok = true;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->apply_lock, NULL);
    pthread_rwlock_init(&r->term_lock, NULL);
    clock_cond_init(&r->cond);
    clock_cond_init(&r->seq_cond);

    for (int i = 0; i < cfg->replica_count; i++) {
        if (cfg->replicas[i].id == id)
            continue;
        struct replica__peer *p = &r->peers[r->npeers++];
        p->id = cfg->replicas[i].id;
        p->r = r;
        p->match = -1;
        p->reachable = true;
        snprintf(p->url, sizeof p->url, "http://%s", cfg->replicas[i].listen);
    }
    for (int i = 0; i < r->npeers; i++)
        pthread_create(&r->peers[i].thread, NULL, replica__pipeline_main, &r->peers[i]);
    pthread_create(&r->control, NULL, replica__control_main, r);
    pthread_create(&r->sequencer, NULL, replica__sequencer_main, r);
    *out = r;
    return 0;
}

void replica_stop(struct replica *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->cond);
    pthread_cond_broadcast(&r->seq_cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->control, NULL);
    pthread_join(r->sequencer, NULL);
    for (int i = 0; i < r->npeers; i++)
        pthread_join(r->peers[i].thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->apply_lock);
    pthread_rwlock_destroy(&r->term_lock);
    pthread_cond_destroy(&r->cond);
    pthread_cond_destroy(&r->seq_cond);
    free(r);
}

bool replica_ready(struct replica *r)
{
    pthread_mutex_lock(&r->lock);
    bool ready = r->role != REPLICA_STARTING;
    pthread_mutex_unlock(&r->lock);
    return ready;
}

/* Adopts a newer epoch and its leader; called with r->lock held. 0 or BZ_E*. */
static int replica__adopt(struct replica *r, uint64_t epoch, int leader)
{
    struct orderlog_state st;
    orderlog_state(r->log, &st);
    if (epoch < st.promised)
        return BZ_ESTALE;
    if (epoch == st.promised && r->leader_id == leader)
        return 0;
    if (epoch == st.promised && r->leader_id != 0 && r->leader_id != leader)
        return BZ_ESTALE; /* one leader per epoch: a second claim is refused */
    int rv = orderlog_promise(r->log, epoch);
    if (rv)
        return rv;
    r->epoch = epoch;
    r->leader_id = leader;
    if (leader == r->id)
        replica__set_role(r, REPLICA_PROMOTING);
    else if (r->role == REPLICA_LEADER || r->role == REPLICA_PROMOTING)
        replica__set_role(r, REPLICA_FOLLOWER);
    pthread_cond_broadcast(&r->cond);
    return 0;
}

int replica_notice(struct replica *r, const struct msg_notice *m)
{
    pthread_rwlock_wrlock(&r->term_lock);
    pthread_mutex_lock(&r->lock);
    int rv = replica__adopt(r, m->epoch, m->leader);
    if (rv == 0)
        LOG_DEBUG("notice: leader %d epoch %llu", m->leader, (unsigned long long)m->epoch);
    pthread_mutex_unlock(&r->lock);
    pthread_rwlock_unlock(&r->term_lock);
    return rv;
}

/*
 * Waits until `number` is committed in `epoch` (on a write quorum), at most
 * `timeout_ms`. 0, or BZ_EUNAVAIL: not yet, or leadership moved; the outcome
 * is then unknown to the caller, and a retry with the same request id learns it.
 */
static int replica__await_commit(struct replica *r, uint64_t epoch, int64_t number, int timeout_ms)
{
    struct timespec ts;
    clock_deadline(&ts, (uint64_t)timeout_ms);
    int rv = 0;
    pthread_mutex_lock(&r->lock);
    pthread_cond_broadcast(&r->cond); /* wake the pipelines: there is something to send */
    while (r->commit < number || r->role != REPLICA_LEADER || r->epoch != epoch) {
        if (r->role != REPLICA_LEADER || r->epoch != epoch) {
            rv = BZ_EUNAVAIL;
            break;
        }
        if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) != 0) {
            atomic_fetch_add(&r->quorum_timeouts, 1);
            rv = BZ_EUNAVAIL;
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return rv;
}

/* ---------------------------------------------------------------- the sequencer */

#define REPLICA__IDLE_SYNC_MS 500 /* an idle leader still reads the journal this often */
#define REPLICA__RETRY_MS     100 /* after a failed catalog call */

/* The code of a refused trade from its HTTP status in the catalog's reply. */
static int replica__refusal(int code)
{
    switch (code) {
    case 404:
        return BZ_ENOTFOUND;
    case 409:
        return BZ_ECONFLICT;
    case 422:
        return BZ_EMISMATCH;
    default:
        return BZ_EUPSTREAM;
    }
}

/* Fails every trade of a batch (with r->lock held by the caller or not: fields only). */
static void replica__fail_batch(struct replica__pending **batch, size_t n, int status,
                                const char *message)
{
    for (size_t i = 0; i < n; i++) {
        batch[i]->status = status;
        snprintf(batch[i]->message, sizeof batch[i]->message, "%s", message);
    }
}

/*
 * Appends journal entries to the leader's log in one transaction, stamped
 * with `epoch`, if this replica still leads in it. 0, BZ_ENOTLEADER, BZ_EIO.
 */
static int replica__append_journal(struct replica *r, uint64_t epoch, struct order *entries,
                                   size_t n)
{
    for (size_t i = 0; i < n; i++)
        entries[i].epoch = epoch;
    pthread_rwlock_rdlock(&r->term_lock);
    pthread_mutex_lock(&r->lock);
    bool still = r->role == REPLICA_LEADER && r->epoch == epoch;
    pthread_mutex_unlock(&r->lock);
    int rv = still ? orderlog_apply(r->log, entries, n, INT64_MAX, epoch) : BZ_ENOTLEADER;
    pthread_rwlock_unlock(&r->term_lock);
    if (rv == 0) {
        pthread_mutex_lock(&r->lock);
        replica__advance_commit(r); /* with write_quorum = 1 our own fsync commits */
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    return rv;
}

/*
 * One exchange with the catalog: the batch (possibly empty) with the journal
 * cursor, then the journal page it returns appended to the log. Fills the
 * batch's outcomes. 0, or a BZ_E* code when the call or the append failed
 * (every trade of the batch then has that status: its outcome is unknown).
 * *more is set when the journal has entries past the page.
 */
static int replica__exchange(struct replica *r, uint64_t epoch, int64_t committed,
                             struct replica__pending **batch, size_t n, bool *more)
{
    char url[CONFIG_ADDR_MAX + 32], msg[160];
    struct orderlog_state st;
    orderlog_state(r->log, &st);
    struct msg_exec m = {.from = st.last + 1, .committed = committed > 0 ? committed : 0, .n = n};
    m.trades = xcalloc(n ? n : 1, sizeof *m.trades);
    for (size_t i = 0; i < n; i++)
        m.trades[i] = *batch[i]->trade;
    json_t *body = msg_exec_to_json(&m);
    free(m.trades);
    snprintf(url, sizeof url, "%s/execute", r->catalog_url);
    int rv;
    json_t *data = http_client_call_json(url, r->cfg->secret, body, r->cfg->call_timeout_ms, &rv,
                                         msg, sizeof msg);
    json_decref(body);
    atomic_fetch_add(&r->batches, 1);
    if (rv == BZ_EUNAVAIL || rv == BZ_ETIMEDOUT) {
        snprintf(msg, sizeof msg,
                 "catalog unreachable (%s): outcome unknown, retry with the "
                 "same Idempotency-Key",
                 bz_strerror(rv));
        replica__fail_batch(batch, n, rv == BZ_ETIMEDOUT ? BZ_ETIMEDOUT : BZ_EUPSTREAM, msg);
        return rv;
    }
    struct msg_exec_reply out = {0};
    if (data)
        rv = msg_exec_reply_from_json(data, n, m.from, &out, msg, sizeof msg);
    json_decref(data);
    if (rv) {
        LOG_WARN("catalog batch of %zu from %lld: %s", n, (long long)m.from, msg);
        replica__fail_batch(batch, n, BZ_EUPSTREAM, "catalog refused the batch");
        return BZ_EUPSTREAM;
    }
    if (out.njournal > 0 && (rv = replica__append_journal(r, epoch, out.journal, out.njournal))) {
        LOG_ERROR("appending journal %lld..%lld: %s", (long long)m.from,
                  (long long)(m.from + (int64_t)out.njournal - 1), bz_strerror(rv));
        replica__fail_batch(batch, n, rv == BZ_ENOTLEADER ? BZ_EUNAVAIL : BZ_EIO,
                            "order log write failed: outcome unknown, retry");
        msg_exec_reply_free(&out);
        return rv;
    }
    if (out.njournal > 0 && n == 0)
        LOG_INFO("completed the order log from the catalog's journal: %lld..%lld",
                 (long long)m.from, (long long)(m.from + (int64_t)out.njournal - 1));
    atomic_fetch_add(&r->journal_synced, out.njournal);
    for (size_t i = 0; i < n; i++) {
        const struct msg_exec_result *res = &out.results[i];
        batch[i]->status = res->code == 200 ? 0 : replica__refusal(res->code);
        batch[i]->number = res->number;
        snprintf(batch[i]->message, sizeof batch[i]->message, "%s", res->message);
    }
    *more = out.end > m.from + (int64_t)out.njournal;
    msg_exec_reply_free(&out);
    return 0;
}

static void *replica__sequencer_main(void *arg)
{
    struct replica *r = arg;
    struct replica__pending **batch = xcalloc(MSG_MAX_ENTRIES, sizeof *batch);
    uint64_t last_call_ms = 0;

    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        if (r->role != REPLICA_LEADER) {
            /* Queued trades cannot be sequenced here any more: their submitters see
             * the role change and answer. */
            pthread_cond_wait(&r->seq_cond, &r->lock);
            continue;
        }
        uint64_t now = clock_now_ms();
        if (!r->queue_head && !r->sync_needed && now - last_call_ms < REPLICA__IDLE_SYNC_MS) {
            struct timespec ts;
            clock_deadline(&ts, REPLICA__IDLE_SYNC_MS - (now - last_call_ms));
            pthread_cond_timedwait(&r->seq_cond, &r->lock, &ts);
            continue;
        }
        size_t n = 0;
        while (r->queue_head && n < MSG_MAX_ENTRIES) {
            batch[n] = r->queue_head;
            batch[n]->taken = true;
            r->queue_head = batch[n]->next;
            n++;
        }
        if (!r->queue_head)
            r->queue_tail = &r->queue_head;
        uint64_t epoch = r->epoch;
        int64_t committed = r->commit + 1;
        pthread_mutex_unlock(&r->lock);

        bool more = false;
        int rv = replica__exchange(r, epoch, committed, batch, n, &more);
        last_call_ms = clock_now_ms();

        pthread_mutex_lock(&r->lock);
        for (size_t i = 0; i < n; i++)
            batch[i]->done = true;
        pthread_cond_broadcast(&r->cond);
        if (rv && r->catalog_ok)
            LOG_WARN("catalog exchange failed (%s): retrying every %d ms", bz_strerror(rv),
                     REPLICA__RETRY_MS);
        r->catalog_ok = rv == 0;
        r->sync_needed = rv != 0 || more;
        if (rv && !r->stopping) {
            struct timespec ts;
            clock_deadline(&ts, REPLICA__RETRY_MS);
            pthread_cond_timedwait(&r->seq_cond, &r->lock, &ts);
        }
    }
    pthread_mutex_unlock(&r->lock);
    free(batch);
    return NULL;
}

/*
 * Hands one trade to the sequencer and waits for its outcome. A trade still
 * queued when leadership moves or the wait runs out is withdrawn (never sent);
 * one already at the catalog is waited for (the call has its own deadline).
 */
static int replica__sequence(struct replica *r, const struct trade *t, uint64_t epoch,
                             int64_t *number, char *errmsg, size_t errlen)
{
    struct replica__pending me = {.trade = t};
    struct timespec ts;
    clock_deadline(&ts, (uint64_t)r->cfg->call_timeout_ms);

    pthread_mutex_lock(&r->lock);
    *r->queue_tail = &me;
    r->queue_tail = &me.next;
    pthread_cond_signal(&r->seq_cond);
    while (!me.done) {
        bool moved = r->role != REPLICA_LEADER || r->epoch != epoch;
        bool late = !moved && pthread_cond_timedwait(&r->cond, &r->lock, &ts) != 0;
        if (me.done || me.taken || !(moved || late)) {
            if (me.taken && !me.done && (moved || late))
                pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        /* Still queued: withdraw it. */
        struct replica__pending **pp = &r->queue_head;
        while (*pp != &me)
            pp = &(*pp)->next;
        *pp = me.next;
        if (r->queue_tail == &me.next)
            r->queue_tail = pp;
        pthread_mutex_unlock(&r->lock);
        snprintf(errmsg, errlen,
                 moved ? "leadership moved while ordering"
                       : "the catalog did not take the order in time");
        return BZ_EUNAVAIL;
    }
    pthread_mutex_unlock(&r->lock);
    if (me.status) {
        snprintf(errmsg, errlen, "%s", me.message);
        return me.status;
    }
    *number = me.number;
    return 0;
}

int replica_submit(struct replica *r, const struct trade *t, int64_t *number, char *errmsg,
                   size_t errlen)
{
    pthread_mutex_lock(&r->lock);
    enum replica_role role = r->role;
    uint64_t epoch = r->epoch;
    pthread_mutex_unlock(&r->lock);
    if (role == REPLICA_PROMOTING) {
        snprintf(errmsg, errlen, "leader is still taking over");
        return BZ_EUNAVAIL;
    }
    if (role != REPLICA_LEADER) {
        snprintf(errmsg, errlen, "replica %d is not the leader", r->id);
        return BZ_ENOTLEADER;
    }

    /* A retry of an order we already hold: answer it once committed, never re-apply. */
    struct order o;
    int rv = orderlog_find_request(r->log, t->request_id, &o);
    if (rv == 0 && !trade_same(&o.trade, t)) {
        snprintf(errmsg, errlen, "Idempotency-Key reused with a different request");
        return BZ_EMISMATCH;
    }
    if (rv == 0) {
        o.number = o.number;
    } else if (rv == BZ_ENOTFOUND) {
        if ((rv = replica__sequence(r, t, epoch, &o.number, errmsg, errlen)) != 0)
            return rv;
    } else {
        snprintf(errmsg, errlen, "order log: %s", bz_strerror(rv));
        return rv;
    }
    if ((rv = replica__await_commit(r, epoch, o.number, r->cfg->call_timeout_ms)) != 0) {
        snprintf(errmsg, errlen, "order %lld not yet on a write quorum", (long long)o.number);
        return rv;
    }
    atomic_fetch_add(&r->orders_acked, 1);
    *number = o.number;
    return 0;
}

int replica_query(struct replica *r, int64_t number, struct order *out)
{
    pthread_mutex_lock(&r->lock);
    enum replica_role role = r->role;
    uint64_t epoch = r->epoch;
    pthread_mutex_unlock(&r->lock);
    if (role == REPLICA_PROMOTING)
        return BZ_EUNAVAIL;
    if (role != REPLICA_LEADER)
        return BZ_ENOTLEADER;
    struct orderlog_state st;
    orderlog_state(r->log, &st);
    if (number > st.last)
        return BZ_ENOTFOUND;
    /* Only committed entries are served: an entry still on a minority may be the
     * query's answer only once a quorum holds it (docs/design.md, committed reads). */
    int rv = replica__await_commit(r, epoch, number, r->cfg->call_timeout_ms / 2);
    return rv ? rv : orderlog_get(r->log, number, out);
}

int replica_append(struct replica *r, const struct msg_append *m, json_t **reply)
{
    pthread_mutex_lock(&r->apply_lock);
    pthread_rwlock_wrlock(&r->term_lock);
    pthread_mutex_lock(&r->lock);
    int rv = replica__adopt(r, m->epoch, m->leader);
    pthread_mutex_unlock(&r->lock);
    pthread_rwlock_unlock(&r->term_lock);
    if (rv) {
        pthread_mutex_unlock(&r->apply_lock);
        return rv;
    }
    atomic_fetch_add(&r->appends_received, 1);

    struct orderlog_state st;
    orderlog_state(r->log, &st);
    int64_t hint = -2; /* -2: accepted */
    if (m->prev > st.last) {
        hint = st.last; /* a gap: tell the leader where we are */
    } else if (m->prev >= 0) {
        struct order prev;
        if (orderlog_get(r->log, m->prev, &prev) != 0 || prev.epoch != m->prev_epoch)
            hint = m->prev - 1; /* the entry before the batch differs: step back */
    }
    if (hint == -2) {
        int64_t batch_last = m->prev + (int64_t)m->n;
        /* Past start_last the leader's log holds only its own epoch, so older entries
         * there are leftovers; at or before it they may be the leader's too. */
        int64_t stale_after = batch_last > m->start_last ? batch_last : m->start_last;
        rv = orderlog_apply(r->log, m->entries, m->n, stale_after, m->epoch);
        if (rv == 0 && batch_last >= m->start_last)
            rv = orderlog_set_log_epoch(r->log, m->epoch);
        if (rv == 0) {
            atomic_fetch_add(&r->entries_applied, m->n);
            orderlog_state(r->log, &st);
            *reply = json_pack("{s:b,s:I,s:I}", "ok", 1, "match", (json_int_t)batch_last, "last",
                               (json_int_t)st.last);
        }
    } else {
        *reply =
            json_pack("{s:b,s:I,s:I}", "ok", 0, "match", (json_int_t)-1, "last", (json_int_t)hint);
    }
    pthread_mutex_unlock(&r->apply_lock);
    return rv;
}

json_t *replica_state_json(struct replica *r)
{
    struct orderlog_state st;
    pthread_mutex_lock(&r->lock);
    orderlog_state(r->log, &st);
    json_t *peers = json_array();
    for (int i = 0; i < r->npeers; i++) {
        const struct replica__peer *p = &r->peers[i];
        bool current = r->role == REPLICA_LEADER && p->epoch_seen == r->epoch;
        json_array_append_new(peers,
                              json_pack("{s:i,s:b,s:I,s:I}", "id", p->id, "reachable", p->reachable,
                                        "match", (json_int_t)(current ? p->match : -1), "lag",
                                        (json_int_t)(current ? st.last - p->match : 0)));
    }
    json_t *obj =
        json_pack("{s:i,s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "id", r->id, "role",
                  replica_role_name(r->role), "leader", r->leader_id, "epoch", (json_int_t)r->epoch,
                  "promised", (json_int_t)st.promised, "log_epoch", (json_int_t)st.log_epoch,
                  "last", (json_int_t)st.last, "last_epoch", (json_int_t)st.last_epoch,
                  "start_last", (json_int_t)r->start_last, "peers", peers);
    pthread_mutex_unlock(&r->lock);
    return obj;
}

void replica_metrics(struct replica *r, struct strbuf *out)
{
    struct orderlog_state st;
    pthread_mutex_lock(&r->lock);
    orderlog_state(r->log, &st);
    enum replica_role role = r->role;
    uint64_t epoch = r->epoch;
    int64_t lag[CONFIG_MAX_REPLICAS];
    for (int i = 0; i < r->npeers; i++)
        lag[i] = (role == REPLICA_LEADER && r->peers[i].epoch_seen == epoch)
                     ? st.last - r->peers[i].match
                     : 0;
    pthread_mutex_unlock(&r->lock);

    metrics_render_simple(out, "bazaar_order_last_number", "gauge",
                          "Number of the last order in the local log (-1 when empty, shown as 0).",
                          st.last >= 0 ? (uint64_t)st.last : 0);
    metrics_render_simple(out, "bazaar_order_epoch", "gauge", "Current leader epoch.", epoch);
    metrics_render_simple(out, "bazaar_order_is_leader", "gauge", "1 when this replica leads.",
                          role == REPLICA_LEADER);
    metrics_render_simple(out, "bazaar_order_leader_changes_total", "counter",
                          "Times this replica became leader.", atomic_load(&r->promotions));
    metrics_render_simple(out, "bazaar_order_acked_total", "counter",
                          "Orders acknowledged as leader.", atomic_load(&r->orders_acked));
    metrics_render_simple(out, "bazaar_order_quorum_timeouts_total", "counter",
                          "Orders not on a write quorum within the call timeout.",
                          atomic_load(&r->quorum_timeouts));
    metrics_render_simple(out, "bazaar_order_appends_received_total", "counter",
                          "Append messages received as follower.",
                          atomic_load(&r->appends_received));
    metrics_render_simple(out, "bazaar_order_entries_applied_total", "counter",
                          "Entries written from a leader or a catch-up.",
                          atomic_load(&r->entries_applied));
    metrics_render_header(out, "bazaar_order_replication_lag", "gauge",
                          "Orders the leader holds that a follower does not (leader only).");
    for (int i = 0; i < r->npeers; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "peer=\"%d\"", r->peers[i].id);
        metrics_render_value(out, "bazaar_order_replication_lag", labels,
                             lag[i] > 0 ? (uint64_t)lag[i] : 0);
    }
}
