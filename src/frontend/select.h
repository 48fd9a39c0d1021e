/*
 * select.h - the rules by which a front-end chooses the order leader in
 * primary-backup mode, as one pure function (no I/O, no clock), so the
 * front-end (leader.c) and the simulator (tests/sim) apply the same rules.
 *
 * Input: what each replica's /health said (or that it did not answer), the
 * leader this front-end uses and its epoch. Output: keep it, follow a leader
 * that another front-end chose in a newer epoch (no new election: several
 * front-ends agree instead of fighting), or select a new one: the ready
 * replica with the highest id, in an epoch above every promise seen,
 * preferring one that reaches the catalog. A leader that cannot reach the
 * catalog gives way when another ready replica can.
 */
#ifndef BZ_SELECT_H
#define BZ_SELECT_H

#include <stdbool.h>
#include <stdint.h>

enum select_role {
    SELECT_ROLE_UNKNOWN = 0,
    SELECT_ROLE_FOLLOWER,
    SELECT_ROLE_PROMOTING,
    SELECT_ROLE_LEADER
};

/* One replica as its /health showed it. */
struct select_obs {
    int id;
    bool reachable; /* answered at all */
    bool ready;     /* answered 200 */
    enum select_role role;
    uint64_t promised;   /* its promised epoch */
    int promised_leader; /* the leader it promised that epoch to (0: none named) */
    bool catalog_ok;     /* it reaches the catalog (its last exchange or probe did) */
};

enum select_action { SELECT_KEEP = 0, SELECT_FOLLOW, SELECT_NEW, SELECT_NONE };

struct select_decision {
    enum select_action action;
    int index;      /* FOLLOW / NEW: index into obs of the leader */
    uint64_t epoch; /* FOLLOW: the epoch it leads; NEW: the epoch to announce */
};

/* "leader", "promoting", ... -> role (UNKNOWN for anything else). */
enum select_role select_role_parse(const char *s);

/*
 * obs[0..n-1] sorted by id; `current` the index of the leader in use (-1:
 * none) and `epoch` its epoch. See the header comment for the rules.
 */
void select_decide(const struct select_obs *obs, int n, int current, uint64_t epoch,
                   struct select_decision *out);

#endif
