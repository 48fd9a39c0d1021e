/*
 * pb_follower.c - a follower's handling of an append from the leader: only
 * in-order entries from the current epoch (docs/design.md, "Ordering").
 */
#include "error.h"
#include "log.h"
#include "pb_int.h"

int pb_on_append(struct pb *pb, const struct msg_append *m, bool *ok, int64_t *match, int64_t *last)
{
    int rv = pb__adopt(pb, m->epoch, m->leader);
    if (rv)
        return rv;
    if (pb->role == PB_LEADER || pb->role == PB_PROMOTING)
        return BZ_ESTALE; /* cannot happen: the epoch names its one leader, and it is us */
    if (pb->role == PB_STARTING)
        return BZ_EUNAVAIL; /* catching up: the copy writes these entries in larger pages, and
                               the leader's pipeline retries shortly (docs/design.md, "Restart") */
    atomic_fetch_add(&pb->appends_received, 1);

    struct orderlog_state st;
    pb->st.state(pb->st.ctx, &st);
    int64_t hint = -2; /* -2: accepted */
    if (m->prev > st.last) {
        hint = st.last; /* a gap: tell the leader where we are */
    } else if (m->prev >= 0 && m->prev == st.last) {
        /* The usual append continues the log: the state knows the last entry's epoch, so no
         * read of the log (that read was 8.6% of a follower's CPU). */
        if (st.last_epoch != m->prev_epoch)
            hint = m->prev - 1;
    } else if (m->prev >= 0) {
        struct order prev;
        int err = pb->st.get(pb->st.ctx, m->prev, &prev);
        if (err == BZ_EIO) {
            pb__break(pb, "reading the log", err);
            return BZ_EIO;
        }
        if (err || prev.epoch != m->prev_epoch)
            hint = m->prev - 1; /* the entry before the batch differs: step back */
    }
    if (hint != -2) {
        *ok = false;
        *match = -1;
        *last = hint;
        return 0;
    }
    int64_t batch_last = m->prev + (int64_t)m->n;
    /* Past start_last the leader's log holds only its own epoch, so older entries there
     * are leftovers; at or before it they may be the leader's too. */
    int64_t stale_after = batch_last > m->start_last ? batch_last : m->start_last;
    rv = pb->st.apply(pb->st.ctx, m->entries, m->n, stale_after, m->epoch);
    if (rv == 0 && batch_last >= m->start_last)
        rv = pb->st.set_log_epoch(pb->st.ctx, m->epoch);
    if (rv == BZ_EIO) {
        pb__break(pb, "applying the leader's entries", rv);
        return BZ_EIO;
    }
    if (rv) {
        /* Entries that cannot be logged as sent (never a refusal of the epoch: a 409 here
         * would make the leader step down). */
        LOG_ERROR("append %lld..%lld from leader %d refused by the log: %s",
                  (long long)(m->prev + 1), (long long)batch_last, m->leader, bz_strerror(rv));
        return BZ_EINTERNAL;
    }
    atomic_fetch_add(&pb->entries_applied, m->n);
    pb->st.state(pb->st.ctx, &st);
    *ok = true;
    *match = batch_last;
    *last = st.last;
    return 0;
}
