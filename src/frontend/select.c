#include "select.h"

#include <string.h>

enum select_role select_role_parse(const char *s)
{
    if (!s)
        return SELECT_ROLE_UNKNOWN;
    if (strcmp(s, "leader") == 0)
        return SELECT_ROLE_LEADER;
    if (strcmp(s, "promoting") == 0)
        return SELECT_ROLE_PROMOTING;
    if (strcmp(s, "follower") == 0)
        return SELECT_ROLE_FOLLOWER;
    return SELECT_ROLE_UNKNOWN;
}

/* Leads (or is taking over) `epoch` by its own account, and is ready. */
static bool select__leads(const struct select_obs *o, uint64_t epoch)
{
    return o->reachable && o->ready && o->promised == epoch && o->promised_leader == o->id &&
           (o->role == SELECT_ROLE_LEADER || o->role == SELECT_ROLE_PROMOTING);
}

void select_decide(const struct select_obs *obs, int n, int current, uint64_t epoch,
                   struct select_decision *out)
{
    uint64_t max_promised = epoch;
    int newest = -1; /* the leader of the newest epoch any replica promised */
    for (int i = 0; i < n; i++) {
        if (!obs[i].reachable)
            continue;
        if (obs[i].promised > max_promised)
            max_promised = obs[i].promised;
        for (int j = 0; j < n; j++)
            if (obs[j].id == obs[i].promised_leader && obs[i].promised > epoch &&
                select__leads(&obs[j], obs[i].promised) &&
                (newest < 0 || obs[j].promised > obs[newest].promised))
                newest = j;
    }
    /* Another front-end chose a leader in a newer epoch and it serves: follow it. */
    if (newest >= 0) {
        *out = (struct select_decision){SELECT_FOLLOW, newest, obs[newest].promised};
        return;
    }
    int with_catalog = -1, any = -1; /* the highest ready replica, with and without */
    for (int i = n - 1; i >= 0; i--) {
        if (!obs[i].reachable || !obs[i].ready)
            continue;
        if (any < 0)
            any = i;
        if (with_catalog < 0 && obs[i].catalog_ok)
            with_catalog = i;
    }
    if (current >= 0 && current < n && select__leads(&obs[current], epoch) &&
        (obs[current].catalog_ok || with_catalog < 0 || with_catalog == current)) {
        *out = (struct select_decision){SELECT_KEEP, current, epoch};
        return;
    }
    if (any >= 0) {
        int pick = with_catalog >= 0 ? with_catalog : any;
        *out = (struct select_decision){SELECT_NEW, pick, max_promised + 1};
        return;
    }
    *out = (struct select_decision){SELECT_NONE, -1, 0};
}
