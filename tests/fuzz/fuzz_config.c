/* libFuzzer target: the INI config parser and the --set flag parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/bazaar-fuzz-config-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);

    struct bz_config cfg;
    char err[512];
    config_init_defaults(&cfg);
    if (config_load_file(&cfg, path, err, sizeof err) == 0) {
        config_validate(&cfg, err, sizeof err);
        struct strbuf out;
        strbuf_init(&out, 1 << 20);
        config_dump_json(&cfg, &out);
        strbuf_free(&out);
        if (cfg.replica_count > CONFIG_MAX_REPLICAS)
            __builtin_trap();
    }
    unlink(path);

    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = '\0';
    config_init_defaults(&cfg);
    config_set_option(&cfg, z, err, sizeof err);
    free(z);
    return 0;
}
