/* libFuzzer target: the journal-page, slice and snapshot decoders (src/common/pagecodec.c).
 * A page that decodes must encode back to the same bytes (the format is canonical), a slice
 * must encode to one that decodes to the same entries, and every decoded entry must be a
 * valid, consecutively numbered order. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pagecodec.h"

static struct order entries[PAGECODEC_PAGE_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[160];
    size_t n = 0;
    if (pagecodec_page_decode(data, size, entries, PAGECODEC_PAGE_MAX, &n, msg, sizeof msg) == 0) {
        size_t len = pagecodec_page_size(entries, n);
        uint8_t *again = malloc(len);
        if (len != size || !again ||
            pagecodec_page_encode(entries, n, entries[0].epoch, again, len) != 0 ||
            memcmp(again, data, size) != 0)
            __builtin_trap();
        free(again);
    }
    struct order *slice, *back;
    size_t m;
    if (pagecodec_slice_decode(data, size, 4096, &slice, &n, msg, sizeof msg) == 0) {
        size_t len = pagecodec_slice_size(slice, n);
        uint8_t *again = malloc(len);
        if (!again || pagecodec_slice_encode(slice, n, again, len) != 0 ||
            pagecodec_slice_decode(again, len, 4096, &back, &m, msg, sizeof msg) != 0 || m != n)
            __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (back[i].number != slice[i].number || back[i].epoch != slice[i].epoch ||
                !trade_same(&back[i].trade, &slice[i].trade) ||
                (i > 0 && slice[i].number != slice[i - 1].number + 1))
                __builtin_trap();
        free(back);
        free(again);
        free(slice);
    }
    struct pagecodec_snap_reader r;
    if (pagecodec_snap_open(&r, data, size, msg, sizeof msg) == 0) {
        int64_t expect = 0;
        for (;;) {
            if (pagecodec_snap_read(&r, entries, 7, &n, msg, sizeof msg) != 0 || n == 0)
                break;
            for (size_t i = 0; i < n; i++)
                if (entries[i].number != expect++ || entries[i].trade.quantity < 1)
                    __builtin_trap();
        }
    }
    return 0;
}
