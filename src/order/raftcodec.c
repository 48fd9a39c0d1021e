#include "raftcodec.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static const char raftcodec__page_magic[4] = {'B', 'Z', 'P', '1'};
static const char raftcodec__snap_magic[4] = {'B', 'Z', 'S', '1'};

#define RAFTCODEC__PAGE_HEADER (4 + 8 + 8 + 4)
#define RAFTCODEC__SNAP_HEADER (4 + 8)

/* ---------------------------------------------------------------- primitives */

static uint8_t *raftcodec__put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *raftcodec__put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint64_t raftcodec__get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint32_t raftcodec__get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

/* ---------------------------------------------------------------- one entry */

static size_t raftcodec__entry_size(const struct order *o)
{
    return 1 + 4 + 1 + strlen(o->trade.name) + 1 + strlen(o->trade.request_id);
}

/* The checks the decoder makes, so the encoder never writes what cannot be read back. */
static int raftcodec__entry_check(const struct order *o)
{
    const struct trade *t = &o->trade;
    if (!stock_name_valid(t->name, strlen(t->name)) || !request_id_valid(t->request_id) ||
        (t->type != TRADE_BUY && t->type != TRADE_SELL) || t->quantity < 1 ||
        t->quantity > TRADE_QUANTITY_MAX)
        return BZ_EINVAL;
    return 0;
}

static uint8_t *raftcodec__entry_put(uint8_t *p, const struct order *o)
{
    size_t nlen = strlen(o->trade.name), rlen = strlen(o->trade.request_id);
    *p++ = (uint8_t)o->trade.type;
    p = raftcodec__put_u32(p, (uint32_t)o->trade.quantity);
    *p++ = (uint8_t)nlen;
    memcpy(p, o->trade.name, nlen);
    p += nlen;
    *p++ = (uint8_t)rlen;
    memcpy(p, o->trade.request_id, rlen);
    return p + rlen;
}

/* Reads one entry at *pp (advancing it); the caller sets number and epoch. */
static int raftcodec__entry_get(const uint8_t **pp, const uint8_t *end, struct order *o,
                                char *errmsg, size_t errlen)
{
    const uint8_t *p = *pp;
    memset(o, 0, sizeof *o);
    if (end - p < 6) {
        snprintf(errmsg, errlen, "truncated entry");
        return BZ_EINVAL;
    }
    uint8_t type = *p++;
    uint32_t quantity = raftcodec__get_u32(p);
    p += 4;
    size_t nlen = *p++;
    if (type > TRADE_SELL || quantity < 1 || quantity > TRADE_QUANTITY_MAX) {
        snprintf(errmsg, errlen, "bad type or quantity");
        return BZ_EINVAL;
    }
    if (nlen > STOCK_NAME_MAX || (size_t)(end - p) < nlen + 1) {
        snprintf(errmsg, errlen, "bad or truncated stock name");
        return BZ_EINVAL;
    }
    memcpy(o->trade.name, p, nlen);
    p += nlen;
    size_t rlen = *p++;
    if (rlen > TRADE_REQUEST_ID_MAX || (size_t)(end - p) < rlen) {
        snprintf(errmsg, errlen, "bad or truncated request id");
        return BZ_EINVAL;
    }
    memcpy(o->trade.request_id, p, rlen);
    p += rlen;
    o->trade.type = type == TRADE_SELL ? TRADE_SELL : TRADE_BUY;
    o->trade.quantity = quantity;
    /* memcpy'd bytes may hold a NUL: the length checks below compare against the copied length. */
    if (strlen(o->trade.name) != nlen || !stock_name_valid(o->trade.name, nlen) ||
        strlen(o->trade.request_id) != rlen || !request_id_valid(o->trade.request_id)) {
        snprintf(errmsg, errlen, "invalid stock name or request id");
        return BZ_EINVAL;
    }
    *pp = p;
    return 0;
}

/* ---------------------------------------------------------------- pages */

/*
 * libraft's libuv I/O lays entries out in 8-byte words (its batch decoder reads each payload
 * rounded up to 8 bytes; an unpadded page made it read past its receive buffer under ASan), so a
 * page is padded with zeros to a multiple of 8.
 */
#define RAFTCODEC__ALIGN 8

static size_t raftcodec__page_unpadded(const struct order *entries, size_t n)
{
    size_t len = RAFTCODEC__PAGE_HEADER;
    for (size_t i = 0; i < n; i++)
        len += raftcodec__entry_size(&entries[i]);
    return len;
}

size_t raftcodec_page_size(const struct order *entries, size_t n)
{
    size_t len = raftcodec__page_unpadded(entries, n);
    return (len + RAFTCODEC__ALIGN - 1) / RAFTCODEC__ALIGN * RAFTCODEC__ALIGN;
}

int raftcodec_page_encode(const struct order *entries, size_t n, uint64_t epoch, void *buf,
                          size_t len)
{
    if (n == 0 || n > RAFTCODEC_PAGE_MAX || entries[0].number < 0 ||
        entries[0].number > INT64_MAX - (int64_t)n || len != raftcodec_page_size(entries, n))
        return BZ_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (raftcodec__entry_check(&entries[i]) ||
            entries[i].number != entries[0].number + (int64_t)i)
            return BZ_EINVAL;
    uint8_t *p = buf;
    memcpy(p, raftcodec__page_magic, 4);
    p = raftcodec__put_u64(p + 4, (uint64_t)entries[0].number);
    p = raftcodec__put_u64(p, epoch);
    p = raftcodec__put_u32(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        p = raftcodec__entry_put(p, &entries[i]);
    memset(p, 0, len - (size_t)(p - (uint8_t *)buf));
    return 0;
}

int raftcodec_page_set_epoch(void *buf, size_t len, uint64_t epoch)
{
    uint8_t *p = buf;
    if (len < RAFTCODEC__PAGE_HEADER || memcmp(p, raftcodec__page_magic, 4) != 0)
        return BZ_EINVAL;
    raftcodec__put_u64(p + 12, epoch);
    return 0;
}

int raftcodec_page_decode(const void *buf, size_t len, struct order *out, size_t max, size_t *n,
                          char *errmsg, size_t errlen)
{
    const uint8_t *p = buf, *end = p + len;
    if (len < RAFTCODEC__PAGE_HEADER || memcmp(p, raftcodec__page_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not a journal page");
        return BZ_EINVAL;
    }
    uint64_t first = raftcodec__get_u64(p + 4);
    uint64_t epoch = raftcodec__get_u64(p + 12);
    uint32_t count = raftcodec__get_u32(p + 20);
    p += RAFTCODEC__PAGE_HEADER;
    if (count == 0 || count > RAFTCODEC_PAGE_MAX || count > max || first > (uint64_t)INT64_MAX ||
        first > (uint64_t)INT64_MAX - count) {
        snprintf(errmsg, errlen, "page: bad first number or count");
        return BZ_EINVAL;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (raftcodec__entry_get(&p, end, &out[i], errmsg, errlen))
            return BZ_EINVAL;
        out[i].number = (int64_t)first + (int64_t)i;
        out[i].epoch = epoch;
    }
    /* Only the zero padding to the next multiple of 8 may follow. */
    bool padding_ok = len % RAFTCODEC__ALIGN == 0 && (size_t)(end - p) < RAFTCODEC__ALIGN;
    for (const uint8_t *q = p; padding_ok && q < end; q++)
        padding_ok = *q == 0;
    if (!padding_ok) {
        snprintf(errmsg, errlen, "page: %zu trailing bytes", (size_t)(end - p));
        return BZ_EINVAL;
    }
    *n = count;
    return 0;
}

/* ---------------------------------------------------------------- snapshots */

int raftcodec_snap_begin(struct strbuf *out, int64_t count)
{
    if (count < 0)
        return BZ_EINVAL;
    uint8_t h[RAFTCODEC__SNAP_HEADER];
    memcpy(h, raftcodec__snap_magic, 4);
    raftcodec__put_u64(h + 4, (uint64_t)count);
    return strbuf_append(out, h, sizeof h);
}

int raftcodec_snap_append(struct strbuf *out, const struct order *entries, size_t n,
                          int64_t expect_first)
{
    uint8_t tmp[8 + 1 + 4 + 1 + STOCK_NAME_MAX + 1 + TRADE_REQUEST_ID_MAX];
    for (size_t i = 0; i < n; i++) {
        const struct order *o = &entries[i];
        if (o->number != expect_first + (int64_t)i || raftcodec__entry_check(o))
            return BZ_EINVAL;
        uint8_t *p = raftcodec__put_u64(tmp, o->epoch);
        p = raftcodec__entry_put(p, o);
        int rv = strbuf_append(out, tmp, (size_t)(p - tmp));
        if (rv)
            return rv;
    }
    return 0;
}

int raftcodec_snap_open(struct raftcodec_snap_reader *r, const void *buf, size_t len, char *errmsg,
                        size_t errlen)
{
    const uint8_t *p = buf;
    if (len < RAFTCODEC__SNAP_HEADER || memcmp(p, raftcodec__snap_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not an order snapshot");
        return BZ_EINVAL;
    }
    uint64_t count = raftcodec__get_u64(p + 4);
    /* Each entry takes at least 16 bytes: a count the buffer cannot hold is refused up front. */
    if (count > (len - RAFTCODEC__SNAP_HEADER) / 16) {
        snprintf(errmsg, errlen, "snapshot: count %llu does not fit %zu bytes",
                 (unsigned long long)count, len);
        return BZ_EINVAL;
    }
    r->p = p + RAFTCODEC__SNAP_HEADER;
    r->end = p + len;
    r->count = (int64_t)count;
    r->next = 0;
    return 0;
}

int raftcodec_snap_read(struct raftcodec_snap_reader *r, struct order *out, size_t max, size_t *n,
                        char *errmsg, size_t errlen)
{
    size_t k = 0;
    while (k < max && r->next < r->count) {
        if (r->end - r->p < 8) {
            snprintf(errmsg, errlen, "snapshot: truncated at entry %lld", (long long)r->next);
            return BZ_EINVAL;
        }
        uint64_t epoch = raftcodec__get_u64(r->p);
        r->p += 8;
        if (raftcodec__entry_get(&r->p, r->end, &out[k], errmsg, errlen))
            return BZ_EINVAL;
        out[k].number = r->next++;
        out[k].epoch = epoch;
        k++;
    }
    if (r->next == r->count && r->p != r->end) {
        snprintf(errmsg, errlen, "snapshot: %zu trailing bytes", (size_t)(r->end - r->p));
        return BZ_EINVAL;
    }
    *n = k;
    return 0;
}
