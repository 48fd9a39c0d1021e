#include "msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "pagecodec.h"

#define MSG__EPOCH_MAX  ((json_int_t)1 << 62)
#define MSG__NUMBER_MAX ((json_int_t)1 << 62)

/* An integer member in [lo, hi]; 0 or BZ_EINVAL. */
static int msg__int(const json_t *obj, const char *key, json_int_t lo, json_int_t hi,
                    json_int_t *out, char *errmsg, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(errmsg, errlen, "'%s' must be an integer in %lld..%lld", key, (long long)lo,
                 (long long)hi);
        return BZ_EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

json_t *msg_notice_to_json(const struct msg_notice *m)
{
    return json_pack("{s:i,s:I}", "leader", m->leader, "epoch", (json_int_t)m->epoch);
}

int msg_notice_from_json(const json_t *obj, struct msg_notice *out, char *errmsg, size_t errlen)
{
    static const char *const keys[] = {"leader", "epoch"};
    json_int_t leader, epoch;
    if (trade_check_fields(obj, keys, 2, errmsg, errlen) ||
        msg__int(obj, "leader", 1, 1000000, &leader, errmsg, errlen) ||
        msg__int(obj, "epoch", 1, MSG__EPOCH_MAX, &epoch, errmsg, errlen))
        return BZ_EINVAL;
    out->leader = (int)leader;
    out->epoch = (uint64_t)epoch;
    return 0;
}

/* ---------------------------------------------------------------- binary: appends, log pages */

static const char msg__append_magic[4] = {'B', 'Z', 'A', '1'};
static const char msg__reply_magic[4] = {'B', 'Z', 'R', '1'};

#define MSG__APPEND_HEADER (4 + 4 + 8 + 8 + 8 + 8)

/* Log entries as the replicas' protocol allows them: numbers and epochs in range. */
static int msg__entries_check(const struct order *e, size_t n, uint64_t max_epoch, char *errmsg,
                              size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (e[i].number > MSG__NUMBER_MAX) {
            snprintf(errmsg, errlen, "entry number past %lld", (long long)MSG__NUMBER_MAX);
            return BZ_EINVAL;
        }
        if (e[i].epoch < 1 || e[i].epoch > max_epoch) {
            snprintf(errmsg, errlen, "entry %lld: epoch %llu not in 1..%llu",
                     (long long)e[i].number, (unsigned long long)e[i].epoch,
                     (unsigned long long)max_epoch);
            return BZ_EINVAL;
        }
    }
    return 0;
}

int msg_append_encode(const struct msg_append *m, char **buf, size_t *len)
{
    char errmsg[96];
    /* Nothing is encoded that msg_append_decode would refuse. */
    if (m->leader < 1 || m->leader > 1000000 || m->epoch < 1 ||
        m->epoch > (uint64_t)MSG__EPOCH_MAX || m->prev < -1 || m->prev > MSG__NUMBER_MAX ||
        m->prev_epoch > (uint64_t)MSG__EPOCH_MAX || (m->prev == -1 && m->prev_epoch != 0) ||
        m->start_last < -1 || m->start_last > MSG__NUMBER_MAX || m->n > MSG_MAX_ENTRIES ||
        (m->n > 0 && m->entries[0].number != m->prev + 1) ||
        msg__entries_check(m->entries, m->n, m->epoch, errmsg, sizeof errmsg))
        return BZ_EINVAL;
    size_t slice = pagecodec_slice_size(m->entries, m->n);
    uint8_t *b = xmalloc(MSG__APPEND_HEADER + slice);
    memcpy(b, msg__append_magic, 4);
    uint8_t *p = pagecodec_put_u32(b + 4, (uint32_t)m->leader);
    p = pagecodec_put_u64(p, m->epoch);
    p = pagecodec_put_u64(p, (uint64_t)m->prev);
    p = pagecodec_put_u64(p, m->prev_epoch);
    p = pagecodec_put_u64(p, (uint64_t)m->start_last);
    int rv = pagecodec_slice_encode(m->entries, m->n, p, slice);
    if (rv) {
        free(b);
        return rv;
    }
    *buf = (char *)b;
    *len = MSG__APPEND_HEADER + slice;
    return 0;
}

/* A signed field in [lo, hi] (read as u64, two's complement); 0 or BZ_EINVAL. */
static int msg__field(const char *name, uint64_t raw, int64_t lo, int64_t hi, int64_t *out,
                      char *errmsg, size_t errlen)
{
    int64_t v = (int64_t)raw;
    if (v < lo || v > hi) {
        snprintf(errmsg, errlen, "'%s' must be an integer in %lld..%lld", name, (long long)lo,
                 (long long)hi);
        return BZ_EINVAL;
    }
    *out = v;
    return 0;
}

int msg_append_decode(const void *buf, size_t len, struct msg_append *out, char *errmsg,
                      size_t errlen)
{
    const uint8_t *p = buf;
    int64_t leader, epoch, prev, prev_epoch, start_last;
    memset(out, 0, sizeof *out);
    if (len < MSG__APPEND_HEADER || memcmp(p, msg__append_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not an append (%zu bytes)", len);
        return BZ_EINVAL;
    }
    if (msg__field("leader", pagecodec_get_u32(p + 4), 1, 1000000, &leader, errmsg, errlen) ||
        msg__field("epoch", pagecodec_get_u64(p + 8), 1, MSG__EPOCH_MAX, &epoch, errmsg, errlen) ||
        msg__field("prev", pagecodec_get_u64(p + 16), -1, MSG__NUMBER_MAX, &prev, errmsg, errlen) ||
        msg__field("prev_epoch", pagecodec_get_u64(p + 24), 0, MSG__EPOCH_MAX, &prev_epoch, errmsg,
                   errlen) ||
        msg__field("start_last", pagecodec_get_u64(p + 32), -1, MSG__NUMBER_MAX, &start_last,
                   errmsg, errlen))
        return BZ_EINVAL;
    if (prev == -1 && prev_epoch != 0) {
        snprintf(errmsg, errlen, "prev_epoch must be 0 when prev is -1");
        return BZ_EINVAL;
    }
    if (pagecodec_slice_decode(p + MSG__APPEND_HEADER, len - MSG__APPEND_HEADER, MSG_MAX_ENTRIES,
                               &out->entries, &out->n, errmsg, errlen))
        return BZ_EINVAL;
    if (out->n > 0 && out->entries[0].number != prev + 1) {
        snprintf(errmsg, errlen, "first entry must be number prev+1");
        msg_append_free(out);
        return BZ_EINVAL;
    }
    /* An entry from a future epoch is refused (as is epoch 0). */
    if (msg__entries_check(out->entries, out->n, (uint64_t)epoch, errmsg, errlen)) {
        msg_append_free(out);
        return BZ_EINVAL;
    }
    out->epoch = (uint64_t)epoch;
    out->leader = (int)leader;
    out->prev = prev;
    out->prev_epoch = (uint64_t)prev_epoch;
    out->start_last = start_last;
    return 0;
}

void msg_append_free(struct msg_append *m)
{
    free(m->entries);
    m->entries = NULL;
    m->n = 0;
}

json_t *msg_inval_to_json(const struct msg_inval *m)
{
    return json_pack("{s:s,s:I}", "name", m->name, "version", (json_int_t)m->version);
}

int msg_inval_from_json(const json_t *obj, struct msg_inval *out, char *errmsg, size_t errlen)
{
    static const char *const keys[] = {"name", "version"};
    json_int_t version;
    if (trade_check_fields(obj, keys, 2, errmsg, errlen) ||
        msg__int(obj, "version", 0, MSG__EPOCH_MAX, &version, errmsg, errlen))
        return BZ_EINVAL;
    const json_t *name = json_object_get(obj, "name");
    if (!json_is_string(name) ||
        !stock_name_valid(json_string_value(name), json_string_length(name))) {
        snprintf(errmsg, errlen, "name must be a valid stock name");
        return BZ_EINVAL;
    }
    memcpy(out->name, json_string_value(name), json_string_length(name) + 1);
    out->version = (uint64_t)version;
    return 0;
}

/* ---------------------------------------------------------------- execute */

static const char msg__exec_magic[4] = {'B', 'Z', 'X', '1'};
static const char msg__exec_reply_magic[4] = {'B', 'Z', 'Y', '1'};

#define MSG__EXEC_HEADER       (4 + 8 + 8 + 4) /* magic from committed n */
#define MSG__EXEC_REPLY_HEADER (4 + 8 + 4)     /* magic end n */
#define MSG__RESULT_MIN        (2 + 1)         /* a refusal with an empty message */

int msg_exec_encode(const struct msg_exec *m, char **buf, size_t *len)
{
    /* Nothing is encoded that msg_exec_decode would refuse. */
    if (m->from < 0 || m->from > MSG__NUMBER_MAX || m->committed < 0 ||
        m->committed > MSG__NUMBER_MAX || m->n > MSG_MAX_ENTRIES)
        return BZ_EINVAL;
    size_t size = MSG__EXEC_HEADER;
    for (size_t i = 0; i < m->n; i++) {
        if (pagecodec_entry_check(&m->trades[i]))
            return BZ_EINVAL;
        size += pagecodec_entry_size(&m->trades[i]);
    }
    uint8_t *b = xmalloc(size);
    memcpy(b, msg__exec_magic, 4);
    uint8_t *p = pagecodec_put_u64(b + 4, (uint64_t)m->from);
    p = pagecodec_put_u64(p, (uint64_t)m->committed);
    p = pagecodec_put_u32(p, (uint32_t)m->n);
    for (size_t i = 0; i < m->n; i++)
        p = pagecodec_entry_put(p, &m->trades[i]);
    *buf = (char *)b;
    *len = size;
    return 0;
}

int msg_exec_decode(const void *buf, size_t len, struct msg_exec *out, char *errmsg, size_t errlen)
{
    const uint8_t *p = buf, *end = p + len;
    int64_t from, committed;
    memset(out, 0, sizeof *out);
    if (len < MSG__EXEC_HEADER || memcmp(p, msg__exec_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not a batch to execute (%zu bytes)", len);
        return BZ_EINVAL;
    }
    if (msg__field("from", pagecodec_get_u64(p + 4), 0, MSG__NUMBER_MAX, &from, errmsg, errlen) ||
        msg__field("committed", pagecodec_get_u64(p + 12), 0, MSG__NUMBER_MAX, &committed, errmsg,
                   errlen))
        return BZ_EINVAL;
    uint32_t n = pagecodec_get_u32(p + 20);
    if (n > MSG_MAX_ENTRIES) {
        snprintf(errmsg, errlen, "trades: %u, at most %d", n, MSG_MAX_ENTRIES);
        return BZ_EINVAL;
    }
    p += MSG__EXEC_HEADER;
    out->trades = xcalloc(n ? n : 1, sizeof *out->trades);
    for (uint32_t i = 0; i < n; i++) {
        if (pagecodec_entry_get(&p, end, &out->trades[i], errmsg, errlen)) {
            msg_exec_free(out);
            return BZ_EINVAL;
        }
    }
    if (p != end) {
        snprintf(errmsg, errlen, "%zu bytes past the batch's %u trades", (size_t)(end - p), n);
        msg_exec_free(out);
        return BZ_EINVAL;
    }
    out->n = n;
    out->from = from;
    out->committed = committed;
    return 0;
}

void msg_exec_free(struct msg_exec *m)
{
    free(m->trades);
    m->trades = NULL;
    m->n = 0;
}

/* A result's message as sent: at most sizeof message - 1 bytes, no NUL. */
static size_t msg__result_message_len(const struct msg_exec_result *r)
{
    return strnlen(r->message, sizeof r->message - 1);
}

int msg_exec_reply_encode(const struct msg_exec_reply *m, char **buf, size_t *len)
{
    if (m->nresults > MSG_MAX_ENTRIES || m->njournal > MSG_MAX_ENTRIES || m->end < 0 ||
        m->end > MSG__NUMBER_MAX ||
        (m->njournal && m->end < m->journal[0].number + (int64_t)m->njournal))
        return BZ_EINVAL;
    for (size_t i = 0; i < m->njournal; i++)
        if (m->journal[i].epoch != 0 || m->journal[i].number < 0 ||
            m->journal[i].number > MSG__NUMBER_MAX)
            return BZ_EINVAL;
    size_t size = MSG__EXEC_REPLY_HEADER;
    for (size_t i = 0; i < m->nresults; i++) {
        const struct msg_exec_result *r = &m->results[i];
        if (r->code < 200 || r->code > 599 ||
            (r->code == 200 && (r->number < 0 || r->number > MSG__NUMBER_MAX)))
            return BZ_EINVAL;
        size += 2 + (r->code == 200 ? 8 : 1 + msg__result_message_len(r));
    }
    size_t slice = pagecodec_slice_size(m->journal, m->njournal);
    uint8_t *b = xmalloc(size + slice);
    memcpy(b, msg__exec_reply_magic, 4);
    uint8_t *p = pagecodec_put_u64(b + 4, (uint64_t)m->end);
    p = pagecodec_put_u32(p, (uint32_t)m->nresults);
    for (size_t i = 0; i < m->nresults; i++) {
        const struct msg_exec_result *r = &m->results[i];
        *p++ = (uint8_t)(r->code & 0xff);
        *p++ = (uint8_t)(r->code >> 8);
        if (r->code == 200) {
            p = pagecodec_put_u64(p, (uint64_t)r->number);
        } else {
            size_t mlen = msg__result_message_len(r);
            *p++ = (uint8_t)mlen;
            memcpy(p, r->message, mlen);
            p += mlen;
        }
    }
    int rv = pagecodec_slice_encode(m->journal, m->njournal, p, slice);
    if (rv) {
        free(b);
        return rv;
    }
    *buf = (char *)b;
    *len = size + slice;
    return 0;
}

/* Reads one result at *pp (advancing it); 0 or BZ_EINVAL with errmsg. */
static int msg__exec_result_get(const uint8_t **pp, const uint8_t *end, struct msg_exec_result *out,
                                char *errmsg, size_t errlen)
{
    const uint8_t *p = *pp;
    memset(out, 0, sizeof *out);
    out->number = -1;
    if (end - p < MSG__RESULT_MIN) {
        snprintf(errmsg, errlen, "truncated result");
        return BZ_EINVAL;
    }
    out->code = p[0] | p[1] << 8;
    p += 2;
    if (out->code < 200 || out->code > 599) {
        snprintf(errmsg, errlen, "result code %d not in 200..599", out->code);
        return BZ_EINVAL;
    }
    if (out->code == 200) {
        if (end - p < 8 || msg__field("number", pagecodec_get_u64(p), 0, MSG__NUMBER_MAX,
                                      &out->number, errmsg, errlen)) {
            if (end - p < 8)
                snprintf(errmsg, errlen, "truncated result");
            return BZ_EINVAL;
        }
        *pp = p + 8;
        return 0;
    }
    size_t mlen = *p++;
    if (mlen >= sizeof out->message || (size_t)(end - p) < mlen || memchr(p, 0, mlen)) {
        snprintf(errmsg, errlen, "bad or truncated refusal message");
        return BZ_EINVAL;
    }
    memcpy(out->message, p, mlen);
    *pp = p + mlen;
    return 0;
}

int msg_exec_reply_decode(const void *buf, size_t len, size_t ntrades, int64_t from,
                          struct msg_exec_reply *out, char *errmsg, size_t errlen)
{
    const uint8_t *p = buf, *end = p + len;
    int64_t last_end;
    memset(out, 0, sizeof *out);
    if (len < MSG__EXEC_REPLY_HEADER || memcmp(p, msg__exec_reply_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not an execute reply (%zu bytes)", len);
        return BZ_EINVAL;
    }
    if (msg__field("end", pagecodec_get_u64(p + 4), 0, MSG__NUMBER_MAX, &last_end, errmsg, errlen))
        return BZ_EINVAL;
    if (pagecodec_get_u32(p + 12) != ntrades) {
        snprintf(errmsg, errlen, "%u results for %zu trades", pagecodec_get_u32(p + 12), ntrades);
        return BZ_EINVAL;
    }
    p += MSG__EXEC_REPLY_HEADER;
    out->results = xcalloc(ntrades ? ntrades : 1, sizeof *out->results);
    for (size_t i = 0; i < ntrades; i++)
        if (msg__exec_result_get(&p, end, &out->results[i], errmsg, errlen))
            goto err;
    if (pagecodec_slice_decode(p, (size_t)(end - p), MSG_MAX_ENTRIES, &out->journal, &out->njournal,
                               errmsg, errlen))
        goto err;
    for (size_t i = 0; i < out->njournal; i++) {
        if (out->journal[i].number != from + (int64_t)i || out->journal[i].epoch != 0) {
            snprintf(errmsg, errlen, "journal entries must be numbered from %lld on, epoch 0",
                     (long long)from);
            goto err;
        }
    }
    if (last_end < from + (int64_t)out->njournal) {
        snprintf(errmsg, errlen, "journal end before its last entry");
        goto err;
    }
    out->nresults = ntrades;
    out->end = last_end;
    return 0;
err:
    msg_exec_reply_free(out);
    return BZ_EINVAL;
}

void msg_exec_reply_free(struct msg_exec_reply *m)
{
    free(m->results);
    free(m->journal);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- lookup batches */

static const char msg__lookups_magic[4] = {'B', 'Z', 'L', '1'};
static const char msg__lookup_reply_magic[4] = {'B', 'Z', 'M', '1'};

#define MSG__LOOKUPS_HEADER (4 + 4) /* magic n */

int msg_lookups_encode(const char *const *names, size_t n, struct strbuf *out)
{
    if (n == 0 || n > MSG_LOOKUP_BATCH_MAX)
        return BZ_EINVAL;
    uint8_t b[MSG_LOOKUPS_BYTES_MAX];
    memcpy(b, msg__lookups_magic, 4);
    uint8_t *p = pagecodec_put_u32(b + 4, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (!stock_name_valid(names[i], len))
            return BZ_EINVAL;
        *p++ = (uint8_t)len;
        memcpy(p, names[i], len);
        p += len;
    }
    return strbuf_append(out, b, (size_t)(p - b));
}

int msg_lookups_decode(const void *buf, size_t len, struct msg_lookups *out, char *errmsg,
                       size_t errlen)
{
    const uint8_t *p = buf, *end = p + len;
    out->n = 0;
    if (len < MSG__LOOKUPS_HEADER || memcmp(p, msg__lookups_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not a lookup batch (%zu bytes)", len);
        return BZ_EINVAL;
    }
    uint32_t n = pagecodec_get_u32(p + 4);
    if (n == 0 || n > MSG_LOOKUP_BATCH_MAX) {
        snprintf(errmsg, errlen, "names: %u, 1 to %d", n, MSG_LOOKUP_BATCH_MAX);
        return BZ_EINVAL;
    }
    p += MSG__LOOKUPS_HEADER;
    for (uint32_t i = 0; i < n; i++) {
        size_t nlen = p < end ? *p++ : 0;
        if ((size_t)(end - p) < nlen || !stock_name_valid((const char *)p, nlen)) {
            snprintf(errmsg, errlen, "name %u: not a stock name (1-64 characters [A-Za-z0-9_.-])",
                     i);
            out->n = 0;
            return BZ_EINVAL;
        }
        memcpy(out->names[i], p, nlen);
        out->names[i][nlen] = '\0';
        p += nlen;
    }
    if (p != end) {
        snprintf(errmsg, errlen, "%zu bytes past the batch's %u names", (size_t)(end - p), n);
        return BZ_EINVAL;
    }
    out->n = n;
    return 0;
}

void msg_lookup_reply_start(struct strbuf *out, size_t n)
{
    uint8_t b[MSG__LOOKUPS_HEADER];
    memcpy(b, msg__lookup_reply_magic, 4);
    pagecodec_put_u32(b + 4, (uint32_t)n);
    strbuf_append(out, b, sizeof b);
}

int msg_lookup_reply_put(struct strbuf *out, int status, const void *body, size_t len)
{
    if (status < 200 || status > 599 || len > MSG_LOOKUP_BODY_MAX)
        return BZ_EINVAL;
    uint8_t b[6] = {(uint8_t)(status & 0xff), (uint8_t)(status >> 8)};
    pagecodec_put_u32(b + 2, (uint32_t)len);
    if (strbuf_append(out, b, sizeof b) != 0 || strbuf_append(out, body, len) != 0)
        return BZ_EINVAL;
    return 0;
}

int msg_lookup_reply_decode(const void *buf, size_t len, size_t n, struct msg_lookup_result *out,
                            char *errmsg, size_t errlen)
{
    const uint8_t *p = buf, *end = p + len;
    if (len < MSG__LOOKUPS_HEADER || memcmp(p, msg__lookup_reply_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not a lookup reply (%zu bytes)", len);
        return BZ_EINVAL;
    }
    if (pagecodec_get_u32(p + 4) != n) {
        snprintf(errmsg, errlen, "%u answers for %zu names", pagecodec_get_u32(p + 4), n);
        return BZ_EINVAL;
    }
    p += MSG__LOOKUPS_HEADER;
    for (size_t i = 0; i < n; i++) {
        if (end - p < 6) {
            snprintf(errmsg, errlen, "truncated answer %zu", i);
            return BZ_EINVAL;
        }
        int status = p[0] | p[1] << 8;
        uint32_t blen = pagecodec_get_u32(p + 2);
        p += 6;
        if (status < 200 || status > 599 || blen > MSG_LOOKUP_BODY_MAX ||
            (size_t)(end - p) < blen) {
            snprintf(errmsg, errlen, "answer %zu: status %d, %u bytes of body", i, status, blen);
            return BZ_EINVAL;
        }
        out[i] = (struct msg_lookup_result){.status = status, .body = (const char *)p, .len = blen};
        p += blen;
    }
    if (p != end) {
        snprintf(errmsg, errlen, "%zu bytes past the reply's %zu answers", (size_t)(end - p), n);
        return BZ_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------- append replies, peer state */

void msg_append_reply_encode(const struct msg_append_reply *m, uint8_t out[MSG_APPEND_REPLY_SIZE])
{
    memcpy(out, msg__reply_magic, 4);
    uint8_t *p = pagecodec_put_u32(out + 4, m->ok ? 1 : 0);
    p = pagecodec_put_u64(p, (uint64_t)m->match);
    pagecodec_put_u64(p, (uint64_t)m->last);
}

int msg_append_reply_decode(const void *buf, size_t len, struct msg_append_reply *out, char *errmsg,
                            size_t errlen)
{
    const uint8_t *p = buf;
    int64_t match, last;
    if (len != MSG_APPEND_REPLY_SIZE || memcmp(p, msg__reply_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not an append reply (%zu bytes)", len);
        return BZ_EINVAL;
    }
    uint32_t ok = pagecodec_get_u32(p + 4);
    if (msg__field("match", pagecodec_get_u64(p + 8), -1, MSG__NUMBER_MAX, &match, errmsg,
                   errlen) ||
        msg__field("last", pagecodec_get_u64(p + 16), -1, MSG__NUMBER_MAX, &last, errmsg, errlen))
        return BZ_EINVAL;
    if (ok > 1 || (ok == 0 && match != -1)) {
        /* Accepted with match -1 is a heartbeat to an empty log; refused never matches. */
        snprintf(errmsg, errlen, "'ok' must be 0 or 1; a refusal has match -1");
        return BZ_EINVAL;
    }
    out->ok = ok == 1;
    out->match = match;
    out->last = last;
    return 0;
}

int msg_log_page_encode(const struct order *entries, size_t n, char **buf, size_t *len)
{
    char errmsg[96];
    if (n > MSG_LOG_PAGE_MAX ||
        msg__entries_check(entries, n, MSG__EPOCH_MAX, errmsg, sizeof errmsg))
        return BZ_EINVAL;
    size_t size = pagecodec_slice_size(entries, n);
    char *b = xmalloc(size);
    int rv = pagecodec_slice_encode(entries, n, b, size);
    if (rv) {
        free(b);
        return rv;
    }
    *buf = b;
    *len = size;
    return 0;
}

int msg_log_page_decode(const void *buf, size_t len, struct order **entries, size_t *n,
                        char *errmsg, size_t errlen)
{
    if (pagecodec_slice_decode(buf, len, MSG_LOG_PAGE_MAX, entries, n, errmsg, errlen))
        return BZ_EINVAL;
    if (msg__entries_check(*entries, *n, MSG__EPOCH_MAX, errmsg, errlen)) {
        free(*entries);
        *entries = NULL;
        *n = 0;
        return BZ_EINVAL;
    }
    return 0;
}

int msg_peer_state_from_json(const json_t *obj, struct msg_peer_state *out, char *errmsg,
                             size_t errlen)
{
    json_int_t promised, leader, log_epoch, last;
    if (!json_is_object(obj)) {
        snprintf(errmsg, errlen, "state must be an object");
        return BZ_EINVAL;
    }
    if (msg__int(obj, "promised", 0, MSG__EPOCH_MAX, &promised, errmsg, errlen) ||
        msg__int(obj, "promised_leader", 0, 1000000, &leader, errmsg, errlen) ||
        msg__int(obj, "log_epoch", 0, MSG__EPOCH_MAX, &log_epoch, errmsg, errlen) ||
        msg__int(obj, "last", -1, MSG__NUMBER_MAX, &last, errmsg, errlen))
        return BZ_EINVAL;
    if ((uint64_t)log_epoch > (uint64_t)promised) {
        snprintf(errmsg, errlen, "log_epoch above promised");
        return BZ_EINVAL;
    }
    out->promised = (uint64_t)promised;
    out->promised_leader = (int)leader;
    out->log_epoch = (uint64_t)log_epoch;
    out->last = last;
    return 0;
}

/* ---------------------------------------------------------------- invalidation stream */

json_t *msg_inval_batch_to_json(const struct msg_inval_batch *m)
{
    json_t *stocks = json_array();
    for (size_t i = 0; i < m->n; i++)
        json_array_append_new(stocks, msg_inval_to_json(&m->stocks[i]));
    return json_pack("{s:I,s:I,s:o}", "stream", (json_int_t)m->stream, "seq", (json_int_t)m->seq,
                     "stocks", stocks);
}

int msg_inval_batch_from_json(const json_t *obj, struct msg_inval_batch *out, char *errmsg,
                              size_t errlen)
{
    static const char *const keys[] = {"stream", "seq", "stocks"};
    json_int_t stream, seq;
    if (trade_check_fields(obj, keys, 3, errmsg, errlen) ||
        msg__int(obj, "stream", 0, INT64_MAX, &stream, errmsg, errlen) ||
        msg__int(obj, "seq", 0, MSG__NUMBER_MAX, &seq, errmsg, errlen))
        return BZ_EINVAL;
    const json_t *stocks = json_object_get(obj, "stocks");
    if (!json_is_array(stocks) || json_array_size(stocks) > MSG_INVAL_BATCH_MAX) {
        snprintf(errmsg, errlen, "stocks must be an array of at most %d invalidations",
                 MSG_INVAL_BATCH_MAX);
        return BZ_EINVAL;
    }
    out->stream = (uint64_t)stream;
    out->seq = (uint64_t)seq;
    out->n = json_array_size(stocks);
    for (size_t i = 0; i < out->n; i++) {
        const json_t *item = json_array_get(stocks, i);
        if (!json_is_object(item)) {
            snprintf(errmsg, errlen, "stocks[%zu] must be an object", i);
            return BZ_EINVAL;
        }
        if (msg_inval_from_json(item, &out->stocks[i], errmsg, errlen))
            return BZ_EINVAL;
    }
    return 0;
}

int msg_check_epoch_step(uint64_t current, uint64_t proposed, char *errmsg, size_t errlen)
{
    if (proposed <= current || proposed - current <= MSG_EPOCH_STEP_MAX)
        return 0;
    snprintf(errmsg, errlen, "epoch %llu is more than %d beyond the current epoch %llu",
             (unsigned long long)proposed, MSG_EPOCH_STEP_MAX, (unsigned long long)current);
    return BZ_EINVAL;
}

int msg_exec_refusal(int code)
{
    int err = bz_error_from_status(code);
    return err == BZ_ENOTFOUND || err == BZ_ECONFLICT || err == BZ_EMISMATCH ? err : BZ_EUPSTREAM;
}
