/*
 * raftrep.h - the order service in raft mode (raftrep.c): the catalog's
 * journal copied into the order log through libraft (raftnode.h). Used only
 * through ordersvc.h; the same calls as the primary-backup replica.h.
 */
#ifndef BZ_RAFTREP_H
#define BZ_RAFTREP_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "orderlog.h"
#include "trade.h"
#include "util.h"

struct raftrep;

int raftrep_start(struct raftrep **out, const struct bz_config *cfg, int id, struct orderlog *log,
                  char *errmsg, size_t errlen);
void raftrep_stop(struct raftrep *r);
bool raftrep_ready(struct raftrep *r, char *why, size_t whylen);
/* Orders t[0..n-1], sequenced together, without waiting (see replica_submit_async). */
void raftrep_submit_async(struct raftrep *r, const struct trade *t, size_t n,
                          struct trade_outcome *out, trade_outcomes_fn done, void *arg);
int raftrep_query(struct raftrep *r, int64_t number, struct order *out, int *leader);
json_t *raftrep_state_json(struct raftrep *r);
void raftrep_metrics(struct raftrep *r, struct strbuf *out);

#endif
