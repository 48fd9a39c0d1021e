#include "pagecodec.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static const char pagecodec__page_magic[4] = {'B', 'Z', 'P', '1'};
static const char pagecodec__snap_magic[4] = {'B', 'Z', 'S', '1'};

#define PAGECODEC__PAGE_HEADER (4 + 8 + 8 + 4)
#define PAGECODEC__SNAP_HEADER (4 + 8)

/* ---------------------------------------------------------------- primitives */

uint8_t *pagecodec_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

uint8_t *pagecodec_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

uint64_t pagecodec_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint32_t pagecodec_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

/* ---------------------------------------------------------------- one entry */

size_t pagecodec_entry_size(const struct trade *t)
{
    return 1 + 4 + 1 + strlen(t->name) + 1 + strlen(t->request_id);
}

/* The checks the decoder makes, so the encoder never writes what cannot be read back. */
int pagecodec_entry_check(const struct trade *t)
{
    if (!stock_name_valid(t->name, strlen(t->name)) || !request_id_valid(t->request_id) ||
        (t->type != TRADE_BUY && t->type != TRADE_SELL) || t->quantity < 1 ||
        t->quantity > TRADE_QUANTITY_MAX)
        return BZ_EINVAL;
    return 0;
}

uint8_t *pagecodec_entry_put(uint8_t *p, const struct trade *t)
{
    size_t nlen = strlen(t->name), rlen = strlen(t->request_id);
    *p++ = (uint8_t)t->type;
    p = pagecodec_put_u32(p, (uint32_t)t->quantity);
    *p++ = (uint8_t)nlen;
    memcpy(p, t->name, nlen);
    p += nlen;
    *p++ = (uint8_t)rlen;
    memcpy(p, t->request_id, rlen);
    return p + rlen;
}

int pagecodec_entry_get(const uint8_t **pp, const uint8_t *end, struct trade *t, char *errmsg,
                        size_t errlen)
{
    const uint8_t *p = *pp;
    memset(t, 0, sizeof *t);
    if (end - p < 6) {
        snprintf(errmsg, errlen, "truncated entry");
        return BZ_EINVAL;
    }
    uint8_t type = *p++;
    uint32_t quantity = pagecodec_get_u32(p);
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
    memcpy(t->name, p, nlen);
    p += nlen;
    size_t rlen = *p++;
    if (rlen > TRADE_REQUEST_ID_MAX || (size_t)(end - p) < rlen) {
        snprintf(errmsg, errlen, "bad or truncated request id");
        return BZ_EINVAL;
    }
    memcpy(t->request_id, p, rlen);
    p += rlen;
    t->type = type == TRADE_SELL ? TRADE_SELL : TRADE_BUY;
    t->quantity = quantity;
    /* memcpy'd bytes may hold a NUL: the length checks below compare against the copied length. */
    if (strlen(t->name) != nlen || !stock_name_valid(t->name, nlen) ||
        strlen(t->request_id) != rlen || !request_id_valid(t->request_id)) {
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
#define PAGECODEC__ALIGN 8

static size_t pagecodec__page_unpadded(const struct order *entries, size_t n)
{
    size_t len = PAGECODEC__PAGE_HEADER;
    for (size_t i = 0; i < n; i++)
        len += pagecodec_entry_size(&entries[i].trade);
    return len;
}

size_t pagecodec_page_size(const struct order *entries, size_t n)
{
    size_t len = pagecodec__page_unpadded(entries, n);
    return (len + PAGECODEC__ALIGN - 1) / PAGECODEC__ALIGN * PAGECODEC__ALIGN;
}

int pagecodec_page_encode(const struct order *entries, size_t n, uint64_t epoch, void *buf,
                          size_t len)
{
    if (n == 0 || n > PAGECODEC_PAGE_MAX || entries[0].number < 0 ||
        entries[0].number > INT64_MAX - (int64_t)n || len != pagecodec_page_size(entries, n))
        return BZ_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (pagecodec_entry_check(&entries[i].trade) ||
            entries[i].number != entries[0].number + (int64_t)i)
            return BZ_EINVAL;
    uint8_t *p = buf;
    memcpy(p, pagecodec__page_magic, 4);
    p = pagecodec_put_u64(p + 4, (uint64_t)entries[0].number);
    p = pagecodec_put_u64(p, epoch);
    p = pagecodec_put_u32(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        p = pagecodec_entry_put(p, &entries[i].trade);
    memset(p, 0, len - (size_t)(p - (uint8_t *)buf));
    return 0;
}

int pagecodec_page_set_epoch(void *buf, size_t len, uint64_t epoch)
{
    uint8_t *p = buf;
    if (len < PAGECODEC__PAGE_HEADER || memcmp(p, pagecodec__page_magic, 4) != 0)
        return BZ_EINVAL;
    pagecodec_put_u64(p + 12, epoch);
    return 0;
}

/*
 * Reads the page at p (ending at or before `end`) into out[0..max-1]: *n entries, *used bytes
 * (the page with its padding). 0, or BZ_EINVAL with errmsg set.
 */
static int pagecodec__page_read(const uint8_t *p, const uint8_t *end, struct order *out, size_t max,
                                size_t *n, size_t *used, char *errmsg, size_t errlen)
{
    const uint8_t *start = p;
    if (end - p < PAGECODEC__PAGE_HEADER || memcmp(p, pagecodec__page_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not a journal page");
        return BZ_EINVAL;
    }
    uint64_t first = pagecodec_get_u64(p + 4);
    uint64_t epoch = pagecodec_get_u64(p + 12);
    uint32_t count = pagecodec_get_u32(p + 20);
    p += PAGECODEC__PAGE_HEADER;
    if (count == 0 || count > PAGECODEC_PAGE_MAX || count > max || first > (uint64_t)INT64_MAX ||
        first > (uint64_t)INT64_MAX - count) {
        snprintf(errmsg, errlen, "page: bad first number or count");
        return BZ_EINVAL;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (pagecodec_entry_get(&p, end, &out[i].trade, errmsg, errlen))
            return BZ_EINVAL;
        out[i].number = (int64_t)first + (int64_t)i;
        out[i].epoch = epoch;
    }
    /* The zero padding to the next multiple of 8 (from the page's start) follows. */
    size_t pad = (PAGECODEC__ALIGN - (size_t)(p - start) % PAGECODEC__ALIGN) % PAGECODEC__ALIGN;
    bool padding_ok = (size_t)(end - p) >= pad;
    for (size_t i = 0; padding_ok && i < pad; i++)
        padding_ok = p[i] == 0;
    if (!padding_ok) {
        snprintf(errmsg, errlen, "page: bad padding");
        return BZ_EINVAL;
    }
    *n = count;
    *used = (size_t)(p - start) + pad;
    return 0;
}

int pagecodec_page_decode(const void *buf, size_t len, struct order *out, size_t max, size_t *n,
                          char *errmsg, size_t errlen)
{
    size_t used;
    if (pagecodec__page_read(buf, (const uint8_t *)buf + len, out, max, n, &used, errmsg, errlen))
        return BZ_EINVAL;
    if (used != len) {
        snprintf(errmsg, errlen, "page: %zu trailing bytes", len - used);
        return BZ_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------- slices */

static const char pagecodec__slice_magic[4] = {'B', 'Z', 'L', '1'};

/* The smallest entry: type, quantity, a 1-byte name, an empty request id. */
#define PAGECODEC__ENTRY_MIN (1 + 4 + 1 + 1 + 1)

/* Entries in the page that starts at e[i]: one epoch, at most PAGECODEC_PAGE_MAX. */
static size_t pagecodec__run(const struct order *e, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && j - i < PAGECODEC_PAGE_MAX && e[j].epoch == e[i].epoch)
        j++;
    return j - i;
}

size_t pagecodec_slice_size(const struct order *entries, size_t n)
{
    size_t len = PAGECODEC_SLICE_HEADER;
    for (size_t i = 0, k; i < n; i += k) {
        k = pagecodec__run(entries, n, i);
        len += pagecodec_page_size(entries + i, k);
    }
    return len;
}

int pagecodec_slice_encode(const struct order *entries, size_t n, void *buf, size_t len)
{
    if (n > UINT32_MAX || len != pagecodec_slice_size(entries, n))
        return BZ_EINVAL;
    for (size_t i = 1; i < n; i++)
        if (entries[i].number != entries[i - 1].number + 1)
            return BZ_EINVAL;
    uint8_t *p = buf;
    memcpy(p, pagecodec__slice_magic, 4);
    p = pagecodec_put_u32(p + 4, (uint32_t)n);
    for (size_t i = 0, k; i < n; i += k) {
        k = pagecodec__run(entries, n, i);
        size_t size = pagecodec_page_size(entries + i, k);
        int rv = pagecodec_page_encode(entries + i, k, entries[i].epoch, p, size);
        if (rv)
            return rv;
        p += size;
    }
    return 0;
}

int pagecodec_slice_decode(const void *buf, size_t len, size_t max, struct order **entries,
                           size_t *n, char *errmsg, size_t errlen)
{
    const uint8_t *p = buf, *end = p + len;
    if (len < PAGECODEC_SLICE_HEADER || memcmp(p, pagecodec__slice_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not a log slice");
        return BZ_EINVAL;
    }
    uint32_t count = pagecodec_get_u32(p + 4);
    p += PAGECODEC_SLICE_HEADER;
    /* Refused before anything is allocated: more entries than allowed or than the bytes hold. */
    if (count > max || count > (len - PAGECODEC_SLICE_HEADER) / PAGECODEC__ENTRY_MIN) {
        snprintf(errmsg, errlen, "slice: %u entries (at most %zu) in %zu bytes", count, max, len);
        return BZ_EINVAL;
    }
    struct order *e = xcalloc(count ? count : 1, sizeof *e);
    size_t k = 0;
    while (p < end) {
        size_t got, used;
        if (k == count) {
            snprintf(errmsg, errlen, "slice: %zu bytes past its %u entries", (size_t)(end - p),
                     count);
            goto fail;
        }
        if (pagecodec__page_read(p, end, e + k, count - k, &got, &used, errmsg, errlen))
            goto fail;
        if (k > 0 && e[k].number != e[k - 1].number + 1) {
            snprintf(errmsg, errlen, "slice: pages not consecutive at %lld",
                     (long long)e[k].number);
            goto fail;
        }
        k += got;
        p += used;
    }
    if (k != count) {
        snprintf(errmsg, errlen, "slice: %zu of %u entries", k, count);
        goto fail;
    }
    *entries = e;
    *n = count;
    return 0;
fail:
    free(e);
    return BZ_EINVAL;
}

/* ---------------------------------------------------------------- snapshots */

int pagecodec_snap_begin(struct strbuf *out, int64_t count)
{
    if (count < 0)
        return BZ_EINVAL;
    uint8_t h[PAGECODEC__SNAP_HEADER];
    memcpy(h, pagecodec__snap_magic, 4);
    pagecodec_put_u64(h + 4, (uint64_t)count);
    return strbuf_append(out, h, sizeof h);
}

int pagecodec_snap_append(struct strbuf *out, const struct order *entries, size_t n,
                          int64_t expect_first)
{
    uint8_t tmp[8 + 1 + 4 + 1 + STOCK_NAME_MAX + 1 + TRADE_REQUEST_ID_MAX];
    for (size_t i = 0; i < n; i++) {
        const struct order *o = &entries[i];
        if (o->number != expect_first + (int64_t)i || pagecodec_entry_check(&o->trade))
            return BZ_EINVAL;
        uint8_t *p = pagecodec_put_u64(tmp, o->epoch);
        p = pagecodec_entry_put(p, &o->trade);
        int rv = strbuf_append(out, tmp, (size_t)(p - tmp));
        if (rv)
            return rv;
    }
    return 0;
}

int pagecodec_snap_open(struct pagecodec_snap_reader *r, const void *buf, size_t len, char *errmsg,
                        size_t errlen)
{
    const uint8_t *p = buf;
    if (len < PAGECODEC__SNAP_HEADER || memcmp(p, pagecodec__snap_magic, 4) != 0) {
        snprintf(errmsg, errlen, "not an order snapshot");
        return BZ_EINVAL;
    }
    uint64_t count = pagecodec_get_u64(p + 4);
    /* Each entry takes at least 16 bytes: a count the buffer cannot hold is refused up front. */
    if (count > (len - PAGECODEC__SNAP_HEADER) / 16) {
        snprintf(errmsg, errlen, "snapshot: count %llu does not fit %zu bytes",
                 (unsigned long long)count, len);
        return BZ_EINVAL;
    }
    r->p = p + PAGECODEC__SNAP_HEADER;
    r->end = p + len;
    r->count = (int64_t)count;
    r->next = 0;
    return 0;
}

int pagecodec_snap_read(struct pagecodec_snap_reader *r, struct order *out, size_t max, size_t *n,
                        char *errmsg, size_t errlen)
{
    size_t k = 0;
    while (k < max && r->next < r->count) {
        if (r->end - r->p < 8) {
            snprintf(errmsg, errlen, "snapshot: truncated at entry %lld", (long long)r->next);
            return BZ_EINVAL;
        }
        uint64_t epoch = pagecodec_get_u64(r->p);
        r->p += 8;
        if (pagecodec_entry_get(&r->p, r->end, &out[k].trade, errmsg, errlen))
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
