/*
 * msg.h - the internal JSON messages between services, and their strict
 * decoders (the codec of replication and invalidation; see docs/design.md).
 *
 *   invalidation   POST /invalidate {"name":"GameStart","version":12}   catalog -> front-end
 *   leader notice  POST /leader     {"leader":2,"epoch":7}              front-end -> replicas
 *   append         POST /replicate  {"epoch":7,"leader":2,"prev":41,"prev_epoch":6,
 *                                    "start_last":40,"entries":[<entry>...]}
 *   entry                           {"number":42,"epoch":7,"request_id":"r:..",
 *                                    "name":"GameStart","type":"buy","quantity":3}
 *
 * Decoders accept exactly these shapes and reject anything else with a
 * message, so a malformed or hostile peer cannot corrupt a log. Pure
 * functions: no I/O, no locks.
 */
#ifndef BZ_MSG_H
#define BZ_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "trade.h"

#define MSG_MAX_ENTRIES 1000 /* per append and per log page */

struct msg_notice {
    int leader;
    uint64_t epoch;
};

struct msg_append {
    uint64_t epoch;
    int leader;
    int64_t prev;          /* number before the first entry; -1 at the start of the log */
    uint64_t prev_epoch;   /* epoch of entry `prev` (0 when prev is -1) */
    int64_t start_last;    /* the leader's last number when its epoch began */
    struct order *entries; /* caller frees with msg_append_free */
    size_t n;
};

struct msg_inval {
    char name[STOCK_NAME_MAX + 1];
    uint64_t version; /* catalog version of the change */
};

json_t *msg_inval_to_json(const struct msg_inval *m);
int msg_inval_from_json(const json_t *obj, struct msg_inval *out, char *errmsg, size_t errlen);

json_t *msg_entry_to_json(const struct order *o);
int msg_entry_from_json(const json_t *obj, struct order *out, char *errmsg, size_t errlen);

json_t *msg_notice_to_json(const struct msg_notice *m);
int msg_notice_from_json(const json_t *obj, struct msg_notice *out, char *errmsg, size_t errlen);

/* Does not take ownership of m->entries. */
json_t *msg_append_to_json(const struct msg_append *m);
/* On 0, out->entries is allocated (even when n is 0); free with msg_append_free. */
int msg_append_from_json(const json_t *obj, struct msg_append *out, char *errmsg, size_t errlen);
void msg_append_free(struct msg_append *m);

/* A page of log entries {"entries":[...]}; *entries is allocated on 0. */
int msg_entries_from_json(const json_t *arr, struct order **entries, size_t *n, char *errmsg,
                          size_t errlen);

#endif
