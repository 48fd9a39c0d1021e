/* libFuzzer target: the INI config parser and the --set flag parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An in-memory stream: no temporary file per input (that capped this target at
     * ~10k executions/s, far from 10^7 in one `make fuzz`). */
    struct bz_config cfg;
    char err[512];
    FILE *f = size ? fmemopen((void *)data, size, "r") : NULL;
    if (f) {
        config_init_defaults(&cfg);
        if (config_load_stream(&cfg, f, "fuzz.conf", err, sizeof err) == 0) {
            config_validate(&cfg, err, sizeof err);
            struct strbuf out;
            strbuf_init(&out, 1 << 20);
            config_dump_json(&cfg, &out);
            strbuf_free(&out);
            if (cfg.replica_count > CONFIG_MAX_REPLICAS)
                __builtin_trap();
        }
        fclose(f);
    }

    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';
    config_init_defaults(&cfg);
    config_set_option(&cfg, z, err, sizeof err);
    free(z);
    return 0;
}
