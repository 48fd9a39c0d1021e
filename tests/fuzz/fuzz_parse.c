/* libFuzzer target: stock-name, number, address and key parsing used by the routes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trade.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    uint64_t v;
    if (parse_u64(s, size, UINT64_MAX, &v) == 0) {
        /* Only plain digits parse, and the value is exact. */
        for (size_t i = 0; i < size; i++)
            if (s[i] < '0' || s[i] > '9')
                __builtin_trap();
    }
    if (stock_name_valid(s, size) && (size == 0 || size > STOCK_NAME_MAX))
        __builtin_trap();

    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';
    char host[64];
    uint16_t port;
    if (parse_host_port(z, host, sizeof host, &port) == 0 && port == 0)
        __builtin_trap();
    idempotency_key_valid(z);
    request_id_valid(z);
    parse_u64_str(z, 1000000, &v);
    free(z);
    return 0;
}
