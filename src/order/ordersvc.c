#include "ordersvc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http_client.h"
#include "metrics.h"
#include "raftrep.h"
#include "replica.h"

struct ordersvc {
    enum config_mode mode;
    struct replica *pb;   /* primary-backup */
    struct raftrep *raft; /* raft */
};

int ordersvc_start(struct ordersvc **out, const struct bz_config *cfg, int id, struct orderlog *log,
                   char *errmsg, size_t errlen)
{
    struct ordersvc *s = xcalloc(1, sizeof *s);
    s->mode = cfg->mode;
    int rv = s->mode == CONFIG_MODE_RAFT ? raftrep_start(&s->raft, cfg, id, log, errmsg, errlen)
                                         : replica_start(&s->pb, cfg, id, log);
    if (rv) {
        if (s->mode != CONFIG_MODE_RAFT)
            snprintf(errmsg, errlen, "cannot start the replica: %s", bz_strerror(rv));
        free(s);
        return rv;
    }
    *out = s;
    return 0;
}

void ordersvc_stop(struct ordersvc *s)
{
    if (!s)
        return;
    if (s->raft)
        raftrep_stop(s->raft);
    else
        replica_stop(s->pb);
    free(s);
}

bool ordersvc_ready(struct ordersvc *s, char *why, size_t whylen)
{
    return s->raft ? raftrep_ready(s->raft, why, whylen) : replica_ready(s->pb, why, whylen);
}

void ordersvc_submit_async(struct ordersvc *s, const struct trade *t, size_t n,
                           struct trade_outcome *out, trade_outcomes_fn done, void *arg)
{
    if (s->raft)
        raftrep_submit_async(s->raft, t, n, out, done, arg);
    else
        replica_submit_async(s->pb, t, n, out, done, arg);
}

void ordersvc_render_waiting(struct strbuf *out, uint64_t waiting, uint64_t refused)
{
    metrics_render_simple(out, "bazaar_order_orders_waiting", "gauge",
                          "Orders handed to the leader and not yet answered.", waiting);
    metrics_render_simple(out, "bazaar_order_orders_refused_total", "counter",
                          "Orders refused (503) because too many were waiting at the leader.",
                          refused);
}

int ordersvc_query(struct ordersvc *s, int64_t number, struct order *out, int *leader)
{
    return s->raft ? raftrep_query(s->raft, number, out, leader)
                   : replica_query(s->pb, number, out, leader);
}

json_t *ordersvc_state_json(struct ordersvc *s)
{
    if (s->raft)
        return raftrep_state_json(s->raft);
    json_t *st = replica_state_json(s->pb);
    json_object_set_new(st, "mode", json_string("primary-backup"));
    return st;
}

void ordersvc_metrics(struct ordersvc *s, struct strbuf *out)
{
    if (s->raft)
        raftrep_metrics(s->raft, out);
    else
        replica_metrics(s->pb, out);
}

int ordersvc_notice(struct ordersvc *s, const struct msg_notice *m)
{
    return s->raft ? BZ_EINVAL : replica_notice(s->pb, m);
}

int ordersvc_append(struct ordersvc *s, const struct msg_append *m, struct msg_append_reply *reply)
{
    return s->raft ? BZ_EINVAL : replica_append(s->pb, m, reply);
}

int ordersvc_catalog_execute(const struct bz_config *cfg, const struct msg_exec *m,
                             struct msg_exec_reply *out, char *errmsg, size_t errlen)
{
    char url[CONFIG_ADDR_MAX + 32];
    snprintf(url, sizeof url, "http://%s/execute", cfg->catalog_listen);
    char *body;
    size_t len;
    struct http_reply reply;
    int rv = msg_exec_encode(m, &body, &len);
    if (rv) {
        snprintf(errmsg, errlen, "batch cannot be encoded");
        return BZ_EINTERNAL;
    }
    rv = http_client_call_binary(url, cfg->secret, body, len, cfg->call_timeout_ms, &reply, errmsg,
                                 errlen);
    free(body);
    if (rv)
        return rv;
    rv = ordersvc_catalog_decode(m, &reply, out, errmsg, errlen);
    http_reply_free(&reply);
    return rv;
}

int ordersvc_catalog_decode(const struct msg_exec *m, const struct http_reply *reply,
                            struct msg_exec_reply *out, char *errmsg, size_t errlen)
{
    return msg_exec_reply_decode(reply->body.data, reply->body.len, m->n, m->from, out, errmsg,
                                 errlen) != 0
               ? BZ_EUPSTREAM
               : 0;
}
