/* libFuzzer target: the order-body JSON validation (public and internal forms). */
#include <stddef.h>
#include <stdint.h>

#include "trade.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!obj)
        return 0;
    char msg[160];
    struct trade t;
    for (int with_id = 0; with_id < 2; with_id++) {
        if (trade_from_json(obj, with_id, &t, msg, sizeof msg) == 0) {
            /* A valid trade round-trips through its own encoder. */
            json_t *again = trade_to_json(&t);
            struct trade u;
            if (trade_from_json(again, with_id, &u, msg, sizeof msg) != 0 || !trade_same(&t, &u))
                __builtin_trap();
            json_decref(again);
        }
    }
    json_decref(obj);
    return 0;
}
