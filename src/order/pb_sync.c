/*
 * pb_sync.c - catch-up at start and promotion: make the local log equal to
 * the newest log among the peers that answer (catch-up) or among a write
 * quorum that promised the new epoch to us (promotion), then start serving.
 *
 * One round: probe every peer (state, or the leader notice when promoting);
 * choose the newest log by (log_epoch, last); find the highest number where
 * both logs hold the same (number, epoch) by reading the peer's log
 * backwards a window at a time; copy its entries after that point page by
 * page. Every step is one call; a failed call ends the round (catch-up gives
 * up and leaves the rest to the leader's pipeline; promotion tries a new
 * round shortly).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "pb_int.h"

/* (log_epoch, last) ordering: is a strictly newer than b? */
static bool pb__newer(uint64_t a_epoch, int64_t a_last, uint64_t b_epoch, int64_t b_last)
{
    return a_epoch > b_epoch || (a_epoch == b_epoch && a_last > b_last);
}

static bool pb__sync_current(const struct pb *pb)
{
    if (pb->sync.phase == PB_SYNC_IDLE)
        return false;
    if (pb->sync.promote)
        return pb->role == PB_PROMOTING && pb->epoch == pb->sync.epoch;
    return pb->role == PB_STARTING;
}

static void pb__sync_decide(struct pb *pb);

static void pb__sync_round(struct pb *pb)
{
    pb->sync.phase = PB_SYNC_PROBE;
    pb->sync.call = 0;
    pb->sync.round_ms = pb__now(pb);
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    pb->sync.mine_last = st.last;
    int probes = 0;
    for (int i = 0; i < pb->cfg.npeers; i++) {
        struct pb_peer *p = &pb->peers[i];
        p->probe_ok = p->probe_refused = false;
        struct pb_call *c =
            pb__call_new(pb, pb->sync.promote ? PB_CALL_NOTICE : PB_CALL_STATE, i, PB_PROBE_MS);
        c->notice = (struct msg_notice){.leader = pb->cfg.id, .epoch = pb->sync.epoch};
        p->probe_call = c->id;
        probes++;
        pb->io.send(pb->io.ctx, c);
    }
    if (probes == 0)
        pb__sync_decide(pb); /* a cluster of one */
}

void pb__sync_start(struct pb *pb, bool promote, uint64_t epoch)
{
    memset(&pb->sync, 0, sizeof pb->sync);
    pb->sync.promote = promote;
    pb->sync.epoch = epoch;
    pb->sync.started_ms = pb__now(pb);
    pb__sync_round(pb);
}

/* Ends a sync: a catch-up makes the replica a follower, a promotion makes it leader. */
static void pb__sync_finish(struct pb *pb, int rv)
{
    pb->sync.phase = PB_SYNC_IDLE;
    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    if (!pb->sync.promote) {
        if (rv)
            LOG_WARN("catch-up did not finish (%s); the leader will fill the gap", bz_strerror(rv));
        else if (st.last != pb->sync.mine_last)
            LOG_INFO("caught up %lld -> %lld in %llu ms", (long long)pb->sync.mine_last,
                     (long long)st.last, (unsigned long long)(pb__now(pb) - pb->sync.started_ms));
        if (pb->role == PB_STARTING)
            pb__set_role(pb, PB_FOLLOWER);
        return;
    }
    if (rv) {
        pb->sync.phase = PB_SYNC_WAIT;
        pb->sync.retry_at_ms = pb__now(pb) + PB_RETRY_MS;
        return;
    }
    /* The quorum's promises must be recent: a replica paused in the middle of a promotion
     * wakes with answers from long ago, when peers may since have promised newer epochs.
     * Confirm with a new round (it finds our log newest, so it is quick). */
    if (pb__now(pb) - pb->sync.round_ms > PB_QUORUM_LOST_MS) {
        LOG_INFO("promotion to epoch %llu: the quorum answered %llu ms ago; asking again",
                 (unsigned long long)pb->sync.epoch,
                 (unsigned long long)(pb__now(pb) - pb->sync.round_ms));
        pb__sync_round(pb);
        return;
    }
    int err = pb->st.set_log_epoch(pb->st.ctx, pb->sync.epoch);
    if (err) {
        pb__break(pb, "recording the log epoch", err);
        return;
    }
    pb->start_last = st.last;
    pb__set_role(pb, PB_LEADER);
    pb__advance_commit(pb);
    LOG_INFO("leader of epoch %llu with %lld orders", (unsigned long long)pb->epoch,
             (long long)(st.last + 1));
}

/* Asks the target for a page of its log from `from`. */
static void pb__sync_page(struct pb *pb, int64_t from)
{
    struct pb_call *c = pb__call_new(pb, PB_CALL_PAGE, pb->sync.target, pb->cfg.call_timeout_ms);
    c->from = from;
    pb->sync.call = c->id;
    pb->io.send(pb->io.ctx, c);
}

static void pb__sync_match_step(struct pb *pb)
{
    if (pb->sync.probe_at < 0) {
        pb->sync.phase = PB_SYNC_COPY;
        pb->sync.next = 0;
        pb__sync_page(pb, 0);
        return;
    }
    int64_t from = pb->sync.probe_at - PB_MATCH_WINDOW + 1;
    pb__sync_page(pb, from > 0 ? from : 0);
}

/* All probes answered: choose what to copy, or finish. */
static void pb__sync_decide(struct pb *pb)
{
    struct orderlog_state mine;
    pb->st.state(pb->st.ctx, &mine);
    int best = -1, voters = 1, answered = 0;
    uint64_t best_epoch = mine.log_epoch;
    int64_t best_last = mine.last;
    for (int i = 0; i < pb->cfg.npeers; i++) {
        const struct pb_peer *p = &pb->peers[i];
        if (pb->sync.promote &&
            (p->probe_refused || (p->probe_ok && p->probe.promised > pb->sync.epoch))) {
            LOG_WARN("replica %d promised a newer epoch: abandoning epoch %llu", p->id,
                     (unsigned long long)pb->sync.epoch);
            pb->sync.phase = PB_SYNC_IDLE;
            pb__set_role(pb, PB_FOLLOWER);
            return;
        }
        if (!p->probe_ok)
            continue;
        answered++;
        if (pb->sync.promote &&
            (p->probe.promised != pb->sync.epoch || p->probe.promised_leader != pb->cfg.id))
            continue;
        voters++;
        if (pb__newer(p->probe.log_epoch, p->probe.last, best_epoch, best_last)) {
            best = i;
            best_epoch = p->probe.log_epoch;
            best_last = p->probe.last;
        }
    }
    if (pb->sync.promote && voters < pb->cfg.write_quorum) {
        LOG_WARN("promotion to epoch %llu: %d of %d needed replicas reachable",
                 (unsigned long long)pb->sync.epoch, voters, pb->cfg.write_quorum);
        pb__sync_finish(pb, BZ_EUNAVAIL);
        return;
    }
    if (!pb->sync.promote && answered == 0) {
        LOG_INFO("no peer reachable: starting from my own log (last %lld)", (long long)mine.last);
        pb__sync_finish(pb, 0);
        return;
    }
    if (best < 0) {
        pb__sync_finish(pb, 0);
        return;
    }
    if (!pb->sync.promote) {
        /* Promise what the peer promised before copying its log, so no append from a
         * deposed leader can land in (or after) the copy. */
        const struct msg_peer_state *ps = &pb->peers[best].probe;
        if (ps->promised > pb->epoch ||
            (ps->promised == pb->epoch && pb->leader_id == 0 && ps->promised_leader != 0)) {
            int rv = pb->st.promise(pb->st.ctx, ps->promised, ps->promised_leader);
            if (rv && rv != BZ_ESTALE) {
                pb__break(pb, "recording a promise", rv);
                return;
            }
            if (rv == 0) {
                pb->epoch = ps->promised;
                pb->leader_id = ps->promised_leader;
            }
        }
    }
    pb->sync.target = best;
    pb->sync.target_last = best_last;
    pb->sync.target_log_epoch = best_epoch;
    /* Promoting: the quorum promised our epoch, so the target's log no longer grows and ours
     * past its end holds nothing acknowledged. Restarting: the current leader may append to us
     * while we copy, and what it appends is the target's epoch or newer, which we may have
     * acknowledged (seed 104195): only entries older than the target's log epoch go, since
     * an acknowledged one of those is in the target's log already. */
    pb->sync.stale_before = pb->sync.promote ? pb->sync.epoch : best_epoch;
    pb->sync.phase = PB_SYNC_MATCH;
    pb->sync.probe_at = mine.last < best_last ? mine.last : best_last;
    pb__sync_match_step(pb);
}

void pb__sync_pump(struct pb *pb)
{
    if (pb->sync.phase == PB_SYNC_WAIT && pb__sync_current(pb) &&
        pb__now(pb) >= pb->sync.retry_at_ms)
        pb__sync_round(pb);
}

/*
 * The copy reached the target's last number: drop our own leftovers past it
 * (not past target_last: pages may reach beyond it, the peer's log grew
 * meanwhile, and those copied entries are its), then finish.
 */
static void pb__sync_copied(struct pb *pb)
{
    int rv = pb->st.apply(pb->st.ctx, NULL, 0, pb->sync.next - 1, pb->sync.stale_before);
    if (rv == 0 && !pb->sync.promote)
        rv = pb->st.set_log_epoch(pb->st.ctx, pb->sync.target_log_epoch);
    if (rv)
        pb__break(pb, "installing a peer's log", rv);
    pb__sync_finish(pb, rv);
}

/* A page of the target's log arrived (MATCH or COPY). */
static void pb__sync_on_page(struct pb *pb, const struct pb_call *call, struct pb_reply *reply)
{
    if (reply->err) {
        LOG_WARN("reading replica %d's log from %lld: %s", pb->peers[pb->sync.target].id,
                 (long long)call->from, bz_strerror(reply->err));
        pb__sync_finish(pb, reply->err);
        return;
    }
    if (reply->n > 0 && reply->entries[0].number != call->from) {
        pb__sync_finish(pb, BZ_EUPSTREAM);
        return;
    }
    if (pb->sync.phase == PB_SYNC_MATCH) {
        int64_t from = call->from, match = -1;
        for (int64_t q = pb->sync.probe_at; q >= from && match < 0; q--) {
            struct order o;
            if ((size_t)(q - from) < reply->n && pb->st.get(pb->st.ctx, q, &o) == 0 &&
                o.epoch == reply->entries[q - from].epoch)
                match = q;
        }
        if (match < 0 && from > 0) {
            pb->sync.probe_at = from - 1;
            pb__sync_match_step(pb);
            return;
        }
        pb->sync.phase = PB_SYNC_COPY;
        pb->sync.next = match + 1;
        LOG_INFO("copying replica %d's log: matched at %lld, copying to %lld",
                 pb->peers[pb->sync.target].id, (long long)match, (long long)pb->sync.target_last);
        if (pb->sync.next > pb->sync.target_last) {
            pb__sync_copied(pb);
            return;
        }
        pb__sync_page(pb, pb->sync.next);
        return;
    }
    /* COPY. The next page is asked for before this one is written, so the peer reads and
     * sends it while we write (its reply is handled after this write, or ignored if the
     * write fails and the round ends). */
    int64_t next = reply->n > 0 ? reply->entries[reply->n - 1].number + 1 : pb->sync.next;
    bool more = reply->n > 0 && next <= pb->sync.target_last;
    if (more)
        pb__sync_page(pb, next);
    int rv = 0;
    if (reply->n > 0) {
        /* Nothing past this page is dropped before the copy is complete (pb__sync_copied): an
         * interrupted copy must leave our own entries past it, which may be acknowledged ones
         * another promotion needs (docs/design.md, "Taking over"; seed 40445). A conflicting
         * entry inside the page still truncates from there: past a conflict nothing of ours can
         * be acknowledged, since the target holds every acknowledged entry. */
        rv = pb->st.apply(pb->st.ctx, reply->entries, reply->n, INT64_MAX, pb->sync.stale_before);
        if (rv) {
            if (rv == BZ_EIO)
                pb__break(pb, "copying a peer's log", rv);
            else
                LOG_ERROR("copying replica %d's log from %lld: %s", pb->peers[pb->sync.target].id,
                          (long long)call->from, bz_strerror(rv));
            pb__sync_finish(pb, rv);
            return;
        }
        atomic_fetch_add(&pb->entries_applied, reply->n);
        pb->sync.next = next;
    }
    if (!more)
        pb__sync_copied(pb);
}

void pb__sync_on_reply(struct pb *pb, const struct pb_call *call, struct pb_reply *reply)
{
    if (!pb__sync_current(pb))
        return; /* a reply of an abandoned round */
    if (call->kind == PB_CALL_PAGE) {
        if (call->id == pb->sync.call &&
            (pb->sync.phase == PB_SYNC_MATCH || pb->sync.phase == PB_SYNC_COPY))
            pb__sync_on_page(pb, call, reply);
        return;
    }
    struct pb_peer *p = &pb->peers[call->peer];
    if (pb->sync.phase != PB_SYNC_PROBE || call->id != p->probe_call)
        return;
    p->probe_call = 0;
    p->probe_ok = reply->err == 0;
    p->probe_refused = reply->err == BZ_ESTALE;
    p->probe = reply->state;
    for (int i = 0; i < pb->cfg.npeers; i++)
        if (pb->peers[i].probe_call)
            return; /* still waiting for some */
    pb__sync_decide(pb);
}
