/* libFuzzer target: every internal message decoder (invalidation, leader notice,
 * replication append, log pages). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!obj)
        return 0;
    char msg[160];
    struct msg_inval inval;
    struct msg_notice notice;
    struct msg_append append;
    struct order *entries;
    size_t n;

    msg_inval_from_json(obj, &inval, msg, sizeof msg);
    msg_notice_from_json(obj, &notice, msg, sizeof msg);
    if (msg_append_from_json(obj, &append, msg, sizeof msg) == 0) {
        /* Decoded appends obey the protocol's shape. */
        for (size_t i = 0; i < append.n; i++)
            if (append.entries[i].number != append.prev + 1 + (int64_t)i ||
                append.entries[i].epoch > append.epoch)
                __builtin_trap();
        json_t *again = msg_append_to_json(&append);
        struct msg_append back;
        if (msg_append_from_json(again, &back, msg, sizeof msg) != 0 || back.n != append.n)
            __builtin_trap();
        msg_append_free(&back);
        json_decref(again);
        msg_append_free(&append);
    }
    if (msg_entries_from_json(json_object_get(obj, "entries"), MSG_LOG_PAGE_MAX, &entries, &n, msg,
                              sizeof msg) == 0)
        free(entries);
    json_decref(obj);
    return 0;
}
