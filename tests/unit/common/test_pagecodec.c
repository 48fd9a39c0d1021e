/*
 * Unit tests for src/common/pagecodec.c: journal pages and snapshots round-trip,
 * and the strict decoders refuse every damaged or foreign buffer.
 */
#include "unit.h"

#include "error.h"
#include "pagecodec.h"

static struct order mk(int64_t number, const char *rid)
{
    struct order o = {.number = number, .epoch = 99};
    snprintf(o.trade.request_id, sizeof o.trade.request_id, "%s", rid);
    snprintf(o.trade.name, sizeof o.trade.name, "Stock%lld", (long long)(number % 7));
    o.trade.type = number % 2 ? TRADE_SELL : TRADE_BUY;
    o.trade.quantity = number % 1000 + 1;
    return o;
}

static void mk_range(struct order *out, int64_t first, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "r:%lld", (long long)(first + (int64_t)i));
        out[i] = mk(first + (int64_t)i, rid);
    }
}

static uint8_t *encode(const struct order *e, size_t n, uint64_t epoch, size_t *len)
{
    *len = pagecodec_page_size(e, n);
    uint8_t *buf = malloc(*len);
    assert_int_equal(pagecodec_page_encode(e, n, epoch, buf, *len), 0);
    return buf;
}

static void test_page_round_trip(void **state)
{
    (void)state;
    struct order in[PAGECODEC_PAGE_MAX], out[PAGECODEC_PAGE_MAX];
    size_t sizes[] = {1, 2, 17, PAGECODEC_PAGE_MAX};
    for (size_t s = 0; s < UNIT_COUNT(sizes); s++) {
        mk_range(in, 41, sizes[s]);
        /* The longest name and request id survive too. */
        memset(in[0].trade.name, 'N', STOCK_NAME_MAX);
        in[0].trade.name[STOCK_NAME_MAX] = '\0';
        memset(in[0].trade.request_id, 'k', TRADE_REQUEST_ID_MAX);
        in[0].trade.request_id[TRADE_REQUEST_ID_MAX] = '\0';
        in[0].trade.quantity = TRADE_QUANTITY_MAX;
        size_t len, n = 0;
        uint8_t *buf = encode(in, sizes[s], 7, &len);
        char err[128] = "";
        assert_int_equal(
            pagecodec_page_decode(buf, len, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err), 0);
        assert_int_equal(n, sizes[s]);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(out[i].number, in[i].number);
            assert_int_equal(out[i].epoch, 7); /* the page's epoch, not the entry's 99 */
            assert_true(trade_same(&out[i].trade, &in[i].trade));
        }
        /* The node stamps the term after encoding. */
        assert_int_equal(pagecodec_page_set_epoch(buf, len, 12), 0);
        assert_int_equal(
            pagecodec_page_decode(buf, len, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err), 0);
        assert_int_equal(out[n - 1].epoch, 12);
        free(buf);
    }
}

/* The encoder refuses what the decoder would refuse. */
static void test_page_encode_refuses(void **state)
{
    (void)state;
    struct order e[3];
    uint8_t buf[1024];
    mk_range(e, 0, 3);
    e[2].number = 5; /* not consecutive */
    assert_int_equal(pagecodec_page_encode(e, 3, 1, buf, pagecodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, -1, 3); /* negative first number */
    assert_int_equal(pagecodec_page_encode(e, 3, 1, buf, pagecodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    e[1].trade.request_id[0] = '\0'; /* no request id */
    assert_int_equal(pagecodec_page_encode(e, 3, 1, buf, pagecodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    e[1].trade.quantity = 0;
    assert_int_equal(pagecodec_page_encode(e, 3, 1, buf, pagecodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    snprintf(e[1].trade.name, sizeof e[1].trade.name, "bad name");
    assert_int_equal(pagecodec_page_encode(e, 3, 1, buf, pagecodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    assert_int_equal(pagecodec_page_encode(e, 0, 1, buf, 24), BZ_EINVAL); /* empty */
    assert_int_equal(pagecodec_page_encode(e, 3, 1, buf, pagecodec_page_size(e, 3) - 1),
                     BZ_EINVAL); /* wrong length */
}

/* Every truncation and every single-byte change either decodes to a valid page or is refused. */
static void test_page_decode_strict(void **state)
{
    (void)state;
    struct order in[4], out[PAGECODEC_PAGE_MAX];
    mk_range(in, 10, 4);
    size_t len, n;
    char err[128];
    uint8_t *buf = encode(in, 4, 3, &len);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(
            pagecodec_page_decode(buf, cut, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err),
            BZ_EINVAL);
    /* Trailing junk. */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(
        pagecodec_page_decode(longer, len + 1, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err),
        BZ_EINVAL);
    assert_non_null(strstr(err, "trailing"));
    free(longer);
    /* The page is padded with zeros to a multiple of 8 (libraft's libuv I/O needs it), and
     * the padding must be zeros. */
    assert_int_equal(len % 8, 0);
    size_t unpadded = 24;
    for (int i = 0; i < 4; i++)
        unpadded += 1 + 4 + 1 + strlen(in[i].trade.name) + 1 + strlen(in[i].trade.request_id);
    if (unpadded < len) {
        buf[len - 1] = 1;
        assert_int_equal(
            pagecodec_page_decode(buf, len, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err),
            BZ_EINVAL);
        buf[len - 1] = 0;
    }
    /* Bad magic, zero count, count over the caller's max. */
    buf[0] = 'X';
    assert_int_equal(pagecodec_page_decode(buf, len, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err),
                     BZ_EINVAL);
    buf[0] = 'B';
    assert_int_equal(pagecodec_page_decode(buf, len, out, 3, &n, err, sizeof err), BZ_EINVAL);
    /* Flip every byte to every value in a few positions: never a crash, never an invalid trade. */
    for (size_t pos = 0; pos < len; pos++) {
        uint8_t saved = buf[pos];
        for (int v = 0; v < 256; v += 17) {
            buf[pos] = (uint8_t)v;
            if (pagecodec_page_decode(buf, len, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err) ==
                0) {
                for (size_t i = 0; i < n; i++) {
                    assert_true(stock_name_valid(out[i].trade.name, strlen(out[i].trade.name)));
                    assert_true(request_id_valid(out[i].trade.request_id));
                    assert_in_range(out[i].trade.quantity, 1, TRADE_QUANTITY_MAX);
                    assert_true(out[i].number >= 0);
                }
            }
        }
        buf[pos] = saved;
    }
    /* A NUL inside a name is refused (it would shorten the name silently). */
    size_t name_at = 24 + 1 + 4 + 1; /* header, type, quantity, name length */
    buf[name_at + 1] = '\0';
    assert_int_equal(pagecodec_page_decode(buf, len, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err),
                     BZ_EINVAL);
    free(buf);
}

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    enum { COUNT = 2500 };
    struct order *in = calloc(COUNT, sizeof *in), out[PAGECODEC_PAGE_MAX];
    mk_range(in, 0, COUNT);
    for (int i = 0; i < COUNT; i++)
        in[i].epoch = (uint64_t)(i / 100 + 1);
    struct strbuf sb;
    strbuf_init(&sb, 1 << 24);
    assert_int_equal(pagecodec_snap_begin(&sb, COUNT), 0);
    assert_int_equal(pagecodec_snap_append(&sb, in, 1000, 0), 0);
    assert_int_equal(pagecodec_snap_append(&sb, in + 1000, COUNT - 1000, 1000), 0);
    /* Out of order is refused. */
    assert_int_equal(pagecodec_snap_append(&sb, in, 1, 5), BZ_EINVAL);
    struct pagecodec_snap_reader r;
    char err[128];
    assert_int_equal(pagecodec_snap_open(&r, sb.data, sb.len, err, sizeof err), 0);
    assert_int_equal(r.count, COUNT);
    int64_t seen = 0;
    for (;;) {
        size_t n = 0;
        assert_int_equal(pagecodec_snap_read(&r, out, 333, &n, err, sizeof err), 0);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++, seen++) {
            assert_int_equal(out[i].number, seen);
            assert_int_equal(out[i].epoch, in[seen].epoch);
            assert_true(trade_same(&out[i].trade, &in[seen].trade));
        }
    }
    assert_int_equal(seen, COUNT);
    /* Truncated or padded snapshots are refused when read to the end. */
    size_t cuts[] = {0, 5, 12, sb.len / 2, sb.len - 1, sb.len + 1};
    char *padded = calloc(1, sb.len + 1);
    memcpy(padded, sb.data, sb.len);
    for (size_t c = 0; c < UNIT_COUNT(cuts); c++) {
        int rv = pagecodec_snap_open(&r, padded, cuts[c], err, sizeof err);
        size_t n = 1;
        while (rv == 0 && n > 0)
            rv = pagecodec_snap_read(&r, out, PAGECODEC_PAGE_MAX, &n, err, sizeof err);
        assert_int_equal(rv, BZ_EINVAL);
    }
    free(padded);
    /* An empty table is a valid snapshot. */
    strbuf_reset(&sb);
    assert_int_equal(pagecodec_snap_begin(&sb, 0), 0);
    assert_int_equal(pagecodec_snap_open(&r, sb.data, sb.len, err, sizeof err), 0);
    size_t n = 9;
    assert_int_equal(pagecodec_snap_read(&r, out, 10, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    /* A count the buffer cannot hold is refused before any allocation or read. */
    assert_int_equal(pagecodec_snap_begin(&sb, 0), 0);
    memset(sb.data + 4, 0xff, 8);
    assert_int_equal(pagecodec_snap_open(&r, sb.data, sb.len, err, sizeof err), BZ_EINVAL);
    strbuf_free(&sb);
    free(in);
}

/* ---------------------------------------------------------------- slices */

static uint8_t *slice_encode(const struct order *e, size_t n, size_t *len)
{
    *len = pagecodec_slice_size(e, n);
    uint8_t *buf = malloc(*len);
    assert_int_equal(pagecodec_slice_encode(e, n, buf, *len), 0);
    return buf;
}

static void test_slice_round_trip(void **state)
{
    (void)state;
    static const struct {
        size_t n, run; /* entries, and entries per epoch */
    } cases[] = {{0, 1}, {1, 1}, {5, 1}, {17, 4}, {2500, 2500}, {2500, 999}, {3000, 1000}};
    for (size_t c = 0; c < UNIT_COUNT(cases); c++) {
        size_t n = cases[c].n;
        struct order *in = calloc(n ? n : 1, sizeof *in), *out = NULL;
        mk_range(in, 1000, n);
        for (size_t i = 0; i < n; i++)
            in[i].epoch = 3 + i / cases[c].run;
        size_t len, got = 99;
        uint8_t *buf = slice_encode(in, n, &len);
        char err[128] = "";
        assert_int_equal(pagecodec_slice_decode(buf, len, n, &out, &got, err, sizeof err), 0);
        assert_non_null(out);
        assert_int_equal(got, n);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(out[i].number, in[i].number);
            assert_int_equal(out[i].epoch, in[i].epoch);
            assert_true(trade_same(&out[i].trade, &in[i].trade));
        }
        free(out);
        /* One entry fewer allowed than the slice holds: refused, nothing allocated. */
        if (n > 0) {
            out = NULL;
            assert_int_equal(pagecodec_slice_decode(buf, len, n - 1, &out, &got, err, sizeof err),
                             BZ_EINVAL);
            assert_null(out);
        }
        free(buf);
        free(in);
    }
}

static void test_slice_encode_refuses(void **state)
{
    (void)state;
    struct order in[4];
    mk_range(in, 0, 4);
    in[2].number = 7; /* a gap */
    size_t len = pagecodec_slice_size(in, 4);
    uint8_t *buf = malloc(len);
    assert_int_equal(pagecodec_slice_encode(in, 4, buf, len), BZ_EINVAL);
    mk_range(in, 0, 4);
    assert_int_equal(pagecodec_slice_encode(in, 4, buf, len - 1), BZ_EINVAL); /* wrong size */
    in[3].trade.quantity = 0;
    assert_int_equal(pagecodec_slice_encode(in, 4, buf, len), BZ_EINVAL);
    free(buf);
}

static void test_slice_decode_strict(void **state)
{
    (void)state;
    struct order in[6], *out;
    mk_range(in, 10, 6);
    for (size_t i = 0; i < 6; i++)
        in[i].epoch = 1 + i / 2; /* three pages */
    size_t len, n;
    uint8_t *buf = slice_encode(in, 6, &len);
    char err[128];
    /* Every truncation (exact-size copies, so ASan sees any overread). */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        out = NULL;
        if (pagecodec_slice_decode(copy, cut, 100, &out, &n, err, sizeof err) != BZ_EINVAL)
            fail_msg("slice cut to %zu of %zu bytes accepted", cut, len);
        assert_null(out);
        free(copy);
    }
    /* Trailing bytes, zero or not. */
    uint8_t *longer = calloc(len + 8, 1);
    memcpy(longer, buf, len);
    assert_int_equal(pagecodec_slice_decode(longer, len + 8, 100, &out, &n, err, sizeof err),
                     BZ_EINVAL);
    free(longer);
    /* A count past the entries present, and one the bytes could never hold. */
    pagecodec_put_u32(buf + 4, 7);
    assert_int_equal(pagecodec_slice_decode(buf, len, 100, &out, &n, err, sizeof err), BZ_EINVAL);
    pagecodec_put_u32(buf + 4, UINT32_MAX);
    assert_int_equal(pagecodec_slice_decode(buf, len, SIZE_MAX, &out, &n, err, sizeof err),
                     BZ_EINVAL);
    /* Fewer than present. */
    pagecodec_put_u32(buf + 4, 5);
    assert_int_equal(pagecodec_slice_decode(buf, len, 100, &out, &n, err, sizeof err), BZ_EINVAL);
    pagecodec_put_u32(buf + 4, 6);
    assert_int_equal(pagecodec_slice_decode(buf, len, 100, &out, &n, err, sizeof err), 0);
    free(out);
    /* Pages that are not consecutive: the second page starts one number late. */
    size_t first_page = pagecodec_page_size(in, 2);
    uint8_t *second = buf + PAGECODEC_SLICE_HEADER + first_page;
    pagecodec_put_u64(second + 4, 13);
    assert_int_equal(pagecodec_slice_decode(buf, len, 100, &out, &n, err, sizeof err), BZ_EINVAL);
    assert_non_null(strstr(err, "consecutive"));
    pagecodec_put_u64(second + 4, 12);
    /* A wrong magic. */
    buf[3] = '2';
    assert_int_equal(pagecodec_slice_decode(buf, len, 100, &out, &n, err, sizeof err), BZ_EINVAL);
    buf[3] = '1';
    /* Non-zero padding inside the slice. */
    size_t unpadded = 24;
    for (size_t i = 0; i < 2; i++)
        unpadded += 1 + 4 + 1 + strlen(in[i].trade.name) + 1 + strlen(in[i].trade.request_id);
    if (unpadded % 8) {
        buf[PAGECODEC_SLICE_HEADER + unpadded] = 1;
        assert_int_equal(pagecodec_slice_decode(buf, len, 100, &out, &n, err, sizeof err),
                         BZ_EINVAL);
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_round_trip),     cmocka_unit_test(test_page_encode_refuses),
        cmocka_unit_test(test_page_decode_strict),  cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_slice_round_trip),    cmocka_unit_test(test_slice_encode_refuses),
        cmocka_unit_test(test_slice_decode_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
