/*
 * Unit tests for src/order/raftcodec.c: journal pages and snapshots round-trip,
 * and the strict decoders refuse every damaged or foreign buffer.
 */
#include "unit.h"

#include "error.h"
#include "raftcodec.h"

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
    *len = raftcodec_page_size(e, n);
    uint8_t *buf = malloc(*len);
    assert_int_equal(raftcodec_page_encode(e, n, epoch, buf, *len), 0);
    return buf;
}

static void test_page_round_trip(void **state)
{
    (void)state;
    struct order in[RAFTCODEC_PAGE_MAX], out[RAFTCODEC_PAGE_MAX];
    size_t sizes[] = {1, 2, 17, RAFTCODEC_PAGE_MAX};
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
            raftcodec_page_decode(buf, len, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err), 0);
        assert_int_equal(n, sizes[s]);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(out[i].number, in[i].number);
            assert_int_equal(out[i].epoch, 7); /* the page's epoch, not the entry's 99 */
            assert_true(trade_same(&out[i].trade, &in[i].trade));
        }
        /* The node stamps the term after encoding. */
        assert_int_equal(raftcodec_page_set_epoch(buf, len, 12), 0);
        assert_int_equal(
            raftcodec_page_decode(buf, len, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err), 0);
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
    assert_int_equal(raftcodec_page_encode(e, 3, 1, buf, raftcodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, -1, 3); /* negative first number */
    assert_int_equal(raftcodec_page_encode(e, 3, 1, buf, raftcodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    e[1].trade.request_id[0] = '\0'; /* no request id */
    assert_int_equal(raftcodec_page_encode(e, 3, 1, buf, raftcodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    e[1].trade.quantity = 0;
    assert_int_equal(raftcodec_page_encode(e, 3, 1, buf, raftcodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    snprintf(e[1].trade.name, sizeof e[1].trade.name, "bad name");
    assert_int_equal(raftcodec_page_encode(e, 3, 1, buf, raftcodec_page_size(e, 3)), BZ_EINVAL);
    mk_range(e, 0, 3);
    assert_int_equal(raftcodec_page_encode(e, 0, 1, buf, 24), BZ_EINVAL); /* empty */
    assert_int_equal(raftcodec_page_encode(e, 3, 1, buf, raftcodec_page_size(e, 3) - 1),
                     BZ_EINVAL); /* wrong length */
}

/* Every truncation and every single-byte change either decodes to a valid page or is refused. */
static void test_page_decode_strict(void **state)
{
    (void)state;
    struct order in[4], out[RAFTCODEC_PAGE_MAX];
    mk_range(in, 10, 4);
    size_t len, n;
    char err[128];
    uint8_t *buf = encode(in, 4, 3, &len);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(
            raftcodec_page_decode(buf, cut, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err),
            BZ_EINVAL);
    /* Trailing junk. */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(
        raftcodec_page_decode(longer, len + 1, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err),
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
            raftcodec_page_decode(buf, len, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err),
            BZ_EINVAL);
        buf[len - 1] = 0;
    }
    /* Bad magic, zero count, count over the caller's max. */
    buf[0] = 'X';
    assert_int_equal(raftcodec_page_decode(buf, len, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err),
                     BZ_EINVAL);
    buf[0] = 'B';
    assert_int_equal(raftcodec_page_decode(buf, len, out, 3, &n, err, sizeof err), BZ_EINVAL);
    /* Flip every byte to every value in a few positions: never a crash, never an invalid trade. */
    for (size_t pos = 0; pos < len; pos++) {
        uint8_t saved = buf[pos];
        for (int v = 0; v < 256; v += 17) {
            buf[pos] = (uint8_t)v;
            if (raftcodec_page_decode(buf, len, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err) ==
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
    assert_int_equal(raftcodec_page_decode(buf, len, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err),
                     BZ_EINVAL);
    free(buf);
}

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    enum { COUNT = 2500 };
    struct order *in = calloc(COUNT, sizeof *in), out[RAFTCODEC_PAGE_MAX];
    mk_range(in, 0, COUNT);
    for (int i = 0; i < COUNT; i++)
        in[i].epoch = (uint64_t)(i / 100 + 1);
    struct strbuf sb;
    strbuf_init(&sb, 1 << 24);
    assert_int_equal(raftcodec_snap_begin(&sb, COUNT), 0);
    assert_int_equal(raftcodec_snap_append(&sb, in, 1000, 0), 0);
    assert_int_equal(raftcodec_snap_append(&sb, in + 1000, COUNT - 1000, 1000), 0);
    /* Out of order is refused. */
    assert_int_equal(raftcodec_snap_append(&sb, in, 1, 5), BZ_EINVAL);
    struct raftcodec_snap_reader r;
    char err[128];
    assert_int_equal(raftcodec_snap_open(&r, sb.data, sb.len, err, sizeof err), 0);
    assert_int_equal(r.count, COUNT);
    int64_t seen = 0;
    for (;;) {
        size_t n = 0;
        assert_int_equal(raftcodec_snap_read(&r, out, 333, &n, err, sizeof err), 0);
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
        int rv = raftcodec_snap_open(&r, padded, cuts[c], err, sizeof err);
        size_t n = 1;
        while (rv == 0 && n > 0)
            rv = raftcodec_snap_read(&r, out, RAFTCODEC_PAGE_MAX, &n, err, sizeof err);
        assert_int_equal(rv, BZ_EINVAL);
    }
    free(padded);
    /* An empty table is a valid snapshot. */
    strbuf_reset(&sb);
    assert_int_equal(raftcodec_snap_begin(&sb, 0), 0);
    assert_int_equal(raftcodec_snap_open(&r, sb.data, sb.len, err, sizeof err), 0);
    size_t n = 9;
    assert_int_equal(raftcodec_snap_read(&r, out, 10, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    /* A count the buffer cannot hold is refused before any allocation or read. */
    assert_int_equal(raftcodec_snap_begin(&sb, 0), 0);
    memset(sb.data + 4, 0xff, 8);
    assert_int_equal(raftcodec_snap_open(&r, sb.data, sb.len, err, sizeof err), BZ_EINVAL);
    strbuf_free(&sb);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_round_trip),
        cmocka_unit_test(test_page_encode_refuses),
        cmocka_unit_test(test_page_decode_strict),
        cmocka_unit_test(test_snapshot_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
