#include "config.h"

#include <arpa/inet.h>
#include <ini.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

enum config__type {
    CONFIG_STR,
    CONFIG_INT,
    CONFIG_BOOL,
    CONFIG_MODE,
    CONFIG_QUORUM,
    CONFIG_LEVEL,
    CONFIG_LOGFMT
};

struct config__row {
    const char *section;
    const char *key;
    enum config__type type;
    size_t offset;
    size_t size;   /* for strings: the buffer size */
    long min, max; /* for integers; for strings min is the minimum length */
    const char *def;
};

#define CFG_STR(sec, key, field, def)                                                              \
    {                                                                                              \
        sec, key, CONFIG_STR, offsetof(struct bz_config, field),                                   \
            sizeof(((struct bz_config *)0)->field), 1, 0, def                                      \
    }
/* A string that may be empty (min is the minimum length for strings). */
#define CFG_OPT_STR(sec, key, field, def)                                                          \
    {                                                                                              \
        sec, key, CONFIG_STR, offsetof(struct bz_config, field),                                   \
            sizeof(((struct bz_config *)0)->field), 0, 0, def                                      \
    }
#define CFG_INT(sec, key, field, lo, hi, def)                                                      \
    {                                                                                              \
        sec, key, CONFIG_INT, offsetof(struct bz_config, field), sizeof(int), lo, hi, def          \
    }
#define CFG_OF(sec, key, type, field, def)                                                         \
    {                                                                                              \
        sec, key, type, offsetof(struct bz_config, field), 0, 0, 0, def                            \
    }

static const struct config__row config__rows[] = {
    CFG_STR("cluster", "data_dir", data_dir, "./data"),
    CFG_STR("cluster", "secret", secret, CONFIG_DEFAULT_SECRET),
    CFG_OF("cluster", "log_level", CONFIG_LEVEL, log_level, "info"),
    CFG_OF("cluster", "log_format", CONFIG_LOGFMT, log_format, "text"),
    CFG_INT("cluster", "call_timeout_ms", call_timeout_ms, 10, 600000, "2000"),
    CFG_INT("cluster", "idle_timeout_s", idle_timeout_s, 1, 3600, "15"),
    CFG_STR("catalog", "listen", catalog_listen, "127.0.0.1:9001"),
    CFG_STR("catalog", "stocks", stocks_csv, "config/stocks.csv"),
    CFG_OPT_STR("catalog", "notify", notify, ""),
    CFG_INT("catalog", "restock_interval_s", restock_interval_s, 0, 86400, "0"),
    CFG_INT("catalog", "restock_to", restock_to, 0, 1000000000, "100"),
    CFG_INT("catalog", "idempotency_window_s", idempotency_window_s, 1, 365 * 86400, "86400"),
    CFG_INT("catalog", "heartbeat_ms", heartbeat_ms, 20, 60000, "200"),
    CFG_INT("catalog", "threads", catalog_threads, 1, 64, "2"),
    CFG_INT("catalog", "workers", catalog_workers, 1, 256, "8"),
    CFG_STR("frontend", "listen", frontend_listen, "127.0.0.1:8080"),
    CFG_OF("frontend", "cache", CONFIG_BOOL, cache_on, "on"),
    CFG_INT("frontend", "cache_size", cache_size, 1, 10000000, "8"),
    CFG_INT("frontend", "cache_ttl_s", cache_ttl_s, 0, 86400, "0"),
    CFG_INT("frontend", "order_cache_size", order_cache_size, 0, 10000000, "10000"),
    CFG_INT("frontend", "threads", frontend_threads, 1, 64, "2"),
    CFG_INT("frontend", "workers", frontend_workers, 1, 256, "128"),
    CFG_INT("frontend", "health_interval_ms", health_interval_ms, 10, 60000, "500"),
    CFG_OF("replication", "mode", CONFIG_MODE, mode, "primary-backup"),
    CFG_OF("replication", "write_quorum", CONFIG_QUORUM, write_quorum, "majority"),
    CFG_INT("replication", "threads", order_threads, 1, 64, "2"),
    CFG_INT("replication", "workers", order_workers, 1, 256, "128"),
    CFG_INT("replication", "snapshot_threshold", snapshot_threshold, 16, 100000000, "32768"),
    CFG_INT("replication", "snapshot_trailing", snapshot_trailing, 0, 100000000, "2048"),
};

#define CONFIG__NROWS (sizeof config__rows / sizeof config__rows[0])

static const char *const config__mode_names[] = {"primary-backup", "raft"};
static const char *const config__quorum_names[] = {"majority", "1"};
static const char *const config__logfmt_names[] = {"text", "json"};

static const char *const *config__enum_names(enum config__type type)
{
    return type == CONFIG_MODE     ? config__mode_names
           : type == CONFIG_QUORUM ? config__quorum_names
                                   : config__logfmt_names;
}

/* Parses value into the field of row; 0 or BZ_EINVAL. */
static int config__assign(struct bz_config *cfg, const struct config__row *row, const char *value,
                          char *errmsg, size_t errlen)
{
    char *field = (char *)cfg + row->offset;
    switch (row->type) {
    case CONFIG_STR:
        if (strlen(value) >= row->size || strlen(value) < (size_t)row->min) {
            snprintf(errmsg, errlen, "%s.%s: must be %ld..%zu bytes", row->section, row->key,
                     row->min, row->size - 1);
            return BZ_EINVAL;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case CONFIG_INT: {
        uint64_t v;
        if (parse_u64_str(value, (uint64_t)row->max, &v) || (long)v < row->min) {
            snprintf(errmsg, errlen, "%s.%s: '%s' is not an integer in %ld..%ld", row->section,
                     row->key, value, row->min, row->max);
            return BZ_EINVAL;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case CONFIG_BOOL:
        if (!strcmp(value, "on") || !strcmp(value, "true") || !strcmp(value, "yes") ||
            !strcmp(value, "1")) {
            *(bool *)field = true;
            return 0;
        }
        if (!strcmp(value, "off") || !strcmp(value, "false") || !strcmp(value, "no") ||
            !strcmp(value, "0")) {
            *(bool *)field = false;
            return 0;
        }
        snprintf(errmsg, errlen, "%s.%s: '%s' is not on/off", row->section, row->key, value);
        return BZ_EINVAL;
    case CONFIG_MODE:
    case CONFIG_QUORUM:
    case CONFIG_LOGFMT: {
        const char *const *names = config__enum_names(row->type);
        for (int i = 0; i < 2; i++) {
            if (!strcmp(value, names[i])) {
                *(int *)field = i;
                return 0;
            }
        }
        snprintf(errmsg, errlen, "%s.%s: '%s' must be %s or %s", row->section, row->key, value,
                 names[0], names[1]);
        return BZ_EINVAL;
    }
    case CONFIG_LEVEL: {
        static const char *const levels[] = {"debug", "info", "warn", "error"};
        for (int i = 0; i < 4; i++) {
            if (!strcmp(value, levels[i])) {
                snprintf(field, sizeof cfg->log_level, "%s", levels[i]);
                return 0;
            }
        }
        snprintf(errmsg, errlen, "%s.%s: '%s' must be debug, info, warn or error", row->section,
                 row->key, value);
        return BZ_EINVAL;
    }
    }
    return BZ_EINVAL;
}

void config_init_defaults(struct bz_config *cfg)
{
    char ignored[256]; /* defaults always parse; sized so -Wformat-truncation (Release) holds */
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CONFIG__NROWS; i++)
        config__assign(cfg, &config__rows[i], config__rows[i].def, ignored, sizeof ignored);
}

/* [order.N] sections: N is a positive integer id; the keys are listen and raft_listen. */
static int config__set_replica(struct bz_config *cfg, const char *section, const char *key,
                               const char *value, char *errmsg, size_t errlen)
{
    uint64_t id;
    if (parse_u64_str(section + strlen("order."), 1000000, &id) || id == 0) {
        snprintf(errmsg, errlen, "[%s]: replica id must be a positive integer", section);
        return BZ_EINVAL;
    }
    if (strcmp(key, "listen") != 0 && strcmp(key, "raft_listen") != 0) {
        snprintf(errmsg, errlen, "[%s]: unknown key '%s'", section, key);
        return BZ_EINVAL;
    }
    struct config_replica *r = (struct config_replica *)config_replica_find(cfg, (int)id);
    if (!r) {
        if (cfg->replica_count == CONFIG_MAX_REPLICAS) {
            snprintf(errmsg, errlen, "too many replicas (max %d)", CONFIG_MAX_REPLICAS);
            return BZ_EINVAL;
        }
        /* Keep the array sorted by id. */
        int pos = cfg->replica_count;
        while (pos > 0 && cfg->replicas[pos - 1].id > (int)id) {
            cfg->replicas[pos] = cfg->replicas[pos - 1];
            pos--;
        }
        r = &cfg->replicas[pos];
        memset(r, 0, sizeof *r);
        r->id = (int)id;
        cfg->replica_count++;
    }
    char *field = strcmp(key, "listen") == 0 ? r->listen : r->raft_listen;
    if (strlen(value) >= CONFIG_ADDR_MAX || value[0] == '\0') {
        snprintf(errmsg, errlen, "[%s] %s: bad address", section, key);
        return BZ_EINVAL;
    }
    snprintf(field, CONFIG_ADDR_MAX, "%s", value);
    return 0;
}

/* [frontend.N] sections: N is a positive integer id; the only key is listen. */
static int config__set_frontend(struct bz_config *cfg, const char *section, const char *key,
                                const char *value, char *errmsg, size_t errlen)
{
    uint64_t id;
    if (parse_u64_str(section + strlen("frontend."), 1000000, &id) || id == 0) {
        snprintf(errmsg, errlen, "[%s]: front-end id must be a positive integer", section);
        return BZ_EINVAL;
    }
    if (strcmp(key, "listen") != 0) {
        snprintf(errmsg, errlen, "[%s]: unknown key '%s' (shared settings go in [frontend])",
                 section, key);
        return BZ_EINVAL;
    }
    if (strlen(value) >= CONFIG_ADDR_MAX || value[0] == '\0') {
        snprintf(errmsg, errlen, "[%s] listen: bad address", section);
        return BZ_EINVAL;
    }
    struct config_frontend *f = NULL;
    for (int i = 0; i < cfg->frontend_count; i++)
        if (cfg->frontends[i].id == (int)id)
            f = &cfg->frontends[i];
    if (!f) {
        if (cfg->frontend_count == CONFIG_MAX_FRONTENDS) {
            snprintf(errmsg, errlen, "too many front-ends (max %d)", CONFIG_MAX_FRONTENDS);
            return BZ_EINVAL;
        }
        int pos = cfg->frontend_count;
        while (pos > 0 && cfg->frontends[pos - 1].id > (int)id) {
            cfg->frontends[pos] = cfg->frontends[pos - 1];
            pos--;
        }
        f = &cfg->frontends[pos];
        memset(f, 0, sizeof *f);
        f->id = (int)id;
        cfg->frontend_count++;
    }
    snprintf(f->listen, sizeof f->listen, "%s", value);
    return 0;
}

int config_set(struct bz_config *cfg, const char *section, const char *key, const char *value,
               char *errmsg, size_t errlen)
{
    if (strncmp(section, "order.", 6) == 0)
        return config__set_replica(cfg, section, key, value, errmsg, errlen);
    if (strncmp(section, "frontend.", 9) == 0)
        return config__set_frontend(cfg, section, key, value, errmsg, errlen);
    for (size_t i = 0; i < CONFIG__NROWS; i++) {
        const struct config__row *row = &config__rows[i];
        if (!strcmp(row->section, section) && !strcmp(row->key, key))
            return config__assign(cfg, row, value, errmsg, errlen);
    }
    snprintf(errmsg, errlen, "unknown option [%s] %s", section, key);
    return BZ_EINVAL;
}

#define CONFIG__SEEN_MAX 256

struct config__ini_ctx {
    struct bz_config *cfg;
    /* "section" and "section\nkey" already read, to refuse duplicates. */
    char *seen[CONFIG__SEEN_MAX];
    int nseen;
    int dup_section; /* first line opening a section a second time, 0 if none */
    char dup_detail[96];
    FILE *file;
    int lineno;       /* line being parsed (counted by our reader) */
    int long_line;    /* first line longer than inih accepts, 0 if none */
    int bad_line;     /* first line the handler refused, 0 if none */
    char detail[256]; /* why bad_line was refused */
};

/* Records name; false if it was already recorded (or the table is full). */
static bool config__first_time(struct config__ini_ctx *ctx, const char *name)
{
    for (int i = 0; i < ctx->nseen; i++)
        if (strcmp(ctx->seen[i], name) == 0)
            return false;
    if (ctx->nseen == CONFIG__SEEN_MAX)
        return false;
    ctx->seen[ctx->nseen++] = xstrdup(name);
    return true;
}

static int config__ini_refuse(struct config__ini_ctx *ctx, const char *detail)
{
    if (!ctx->bad_line) {
        ctx->bad_line = ctx->lineno;
        snprintf(ctx->detail, sizeof ctx->detail, "%s", detail);
    }
    return 0;
}

/*
 * inih's line reader, so that we know which line each handler call is about and can
 * refuse lines longer than inih's buffer instead of letting them be split in two.
 */
static char *config__ini_reader(char *str, int num, void *stream)
{
    struct config__ini_ctx *ctx = stream;
    if (!fgets(str, num, ctx->file))
        return NULL;
    ctx->lineno++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(ctx->file)) {
        if (!ctx->long_line)
            ctx->long_line = ctx->lineno;
        int c;
        while ((c = fgetc(ctx->file)) != EOF && c != '\n')
            ; /* skip the rest of the over-long line */
        str[0] = '\0';
    }
    /* inih does not report [section] lines, so sections opened twice are found here. */
    const char *p = str + strspn(str, " \t");
    const char *close = p[0] == '[' ? strchr(p, ']') : NULL;
    if (close && (size_t)(close - p) < 70) {
        char name[72];
        snprintf(name, sizeof name, "[%.*s", (int)(close - p - 1), p + 1);
        if (!config__first_time(ctx, name) && !ctx->dup_section) {
            ctx->dup_section = ctx->lineno;
            snprintf(ctx->dup_detail, sizeof ctx->dup_detail, "section %s] appears twice", name);
        }
    }
    return str;
}

static int config__ini_handler(void *user, const char *section, const char *key, const char *value)
{
    struct config__ini_ctx *ctx = user;
    char detail[sizeof ctx->detail];
    if (!key) /* a bare [section] line with no keys yet */
        return 1;
    char both[256];
    snprintf(both, sizeof both, "%s\n%s", section, key);
    if (!config__first_time(ctx, both)) {
        snprintf(detail, sizeof detail, "[%.60s] %.60s is set twice", section, key);
        return config__ini_refuse(ctx, detail);
    }
    if (config_set(ctx->cfg, section, key, value, detail, sizeof detail) == 0)
        return 1;
    if (!ctx->bad_line) { /* keep the first refusal, as inih reports the first error */
        ctx->bad_line = ctx->lineno;
        memcpy(ctx->detail, detail, sizeof detail);
    }
    return 0;
}

int config_load_file(struct bz_config *cfg, const char *path, char *errmsg, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errmsg, errlen, "%s: cannot open", path);
        return BZ_EINVAL;
    }
    int rv = config_load_stream(cfg, f, path, errmsg, errlen);
    fclose(f);
    return rv;
}

int config_load_stream(struct bz_config *cfg, FILE *f, const char *path, char *errmsg,
                       size_t errlen)
{
    struct config__ini_ctx ctx = {.cfg = cfg, .file = f};
    int line = ini_parse_stream(config__ini_reader, &ctx, config__ini_handler, &ctx);
    for (int i = 0; i < ctx.nseen; i++)
        free(ctx.seen[i]);
    if (ctx.long_line && (line == 0 || ctx.long_line <= line)) {
        snprintf(errmsg, errlen, "%s:%d: line too long", path, ctx.long_line);
        return BZ_EINVAL;
    }
    if (ctx.dup_section && (line == 0 || ctx.dup_section <= line)) {
        snprintf(errmsg, errlen, "%s:%d: %s", path, ctx.dup_section, ctx.dup_detail);
        return BZ_EINVAL;
    }
    if (line != 0) {
        snprintf(errmsg, errlen, "%s:%d: %s", path, line,
                 line == ctx.bad_line ? ctx.detail : "syntax error");
        return BZ_EINVAL;
    }
    return 0;
}

int config_apply_env(struct bz_config *cfg, char *errmsg, size_t errlen)
{
    const char *secret = getenv("BAZAAR_SECRET");
    if (!secret || !secret[0])
        return 0;
    if (strlen(secret) >= sizeof cfg->secret) {
        snprintf(errmsg, errlen, "BAZAAR_SECRET is %zu bytes; at most %zu are allowed",
                 strlen(secret), sizeof cfg->secret - 1);
        return BZ_EINVAL;
    }
    memcpy(cfg->secret, secret, strlen(secret) + 1);
    return 0;
}

int config_set_option(struct bz_config *cfg, const char *assignment, char *errmsg, size_t errlen)
{
    char section[64];
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memrchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    if (!eq || !dot || dot == assignment || (size_t)(dot - assignment) >= sizeof section) {
        snprintf(errmsg, errlen, "--set '%s': expected section.key=value", assignment);
        return BZ_EINVAL;
    }
    char key[64];
    size_t klen = (size_t)(eq - dot - 1);
    if (klen == 0 || klen >= sizeof key) {
        snprintf(errmsg, errlen, "--set '%s': bad key", assignment);
        return BZ_EINVAL;
    }
    memcpy(section, assignment, (size_t)(dot - assignment));
    section[dot - assignment] = '\0';
    memcpy(key, dot + 1, klen);
    key[klen] = '\0';
    return config_set(cfg, section, key, eq + 1, errmsg, errlen);
}

/* 127.0.0.0/8 or localhost: reachable only from this machine. */
static bool config__loopback(const char *host)
{
    if (strcmp(host, "localhost") == 0)
        return true;
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

static int config__check_addr(const struct bz_config *cfg, const char *what, const char *addr,
                              char *errmsg, size_t errlen)
{
    char host[CONFIG_ADDR_MAX];
    uint16_t port;
    if (parse_host_port(addr, host, sizeof host, &port)) {
        snprintf(errmsg, errlen, "%s: '%s' is not host:port", what, addr);
        return BZ_EINVAL;
    }
    if (strcmp(cfg->secret, CONFIG_DEFAULT_SECRET) == 0 && !config__loopback(host)) {
        snprintf(errmsg, errlen,
                 "%s: '%s' is not a loopback address, and the secret is the public default "
                 "'%s': set [cluster] secret or BAZAAR_SECRET",
                 what, addr, CONFIG_DEFAULT_SECRET);
        return BZ_EINVAL;
    }
    return 0;
}

/*
 * Raft mode: every replica names its Raft transport address, as an IPv4 host:port (libraft's
 * TCP transport binds exactly that), distinct from every other address of the replicas.
 */
static int config__validate_raft(const struct bz_config *cfg, char *errmsg, size_t errlen)
{
    for (int i = 0; i < cfg->replica_count; i++) {
        const struct config_replica *r = &cfg->replicas[i];
        char what[40], host[CONFIG_ADDR_MAX];
        uint16_t port;
        snprintf(what, sizeof what, "order.%d.raft_listen", r->id);
        if (r->raft_listen[0] == '\0') {
            snprintf(errmsg, errlen, "%s is required when replication.mode = raft", what);
            return BZ_EINVAL;
        }
        unsigned char ip[sizeof(struct in_addr)];
        if (parse_host_port(r->raft_listen, host, sizeof host, &port) ||
            inet_pton(AF_INET, host, ip) != 1) {
            snprintf(errmsg, errlen, "%s: '%s' is not an IPv4 address:port", what, r->raft_listen);
            return BZ_EINVAL;
        }
        for (int j = 0; j < cfg->replica_count; j++) {
            const struct config_replica *o = &cfg->replicas[j];
            bool as_raft = j != i && strcmp(o->raft_listen, r->raft_listen) == 0;
            if (as_raft || strcmp(o->listen, r->raft_listen) == 0) {
                snprintf(errmsg, errlen, "%s: '%s' is also order.%d.%s", what, r->raft_listen,
                         o->id, as_raft ? "raft_listen" : "listen");
                return BZ_EINVAL;
            }
        }
    }
    return 0;
}

int config_validate(const struct bz_config *cfg, char *errmsg, size_t errlen)
{
    if (cfg->replica_count == 0) {
        snprintf(errmsg, errlen, "no [order.N] sections: at least one replica is needed");
        return BZ_EINVAL;
    }
    if (cfg->mode == CONFIG_MODE_RAFT && config__validate_raft(cfg, errmsg, errlen))
        return BZ_EINVAL;
    if (config__check_addr(cfg, "catalog.listen", cfg->catalog_listen, errmsg, errlen) ||
        config__check_addr(cfg, "frontend.listen", cfg->frontend_listen, errmsg, errlen))
        return BZ_EINVAL;
    for (int i = 0; i < cfg->replica_count; i++) {
        char what[32];
        snprintf(what, sizeof what, "order.%d.listen", cfg->replicas[i].id);
        if (config__check_addr(cfg, what, cfg->replicas[i].listen, errmsg, errlen))
            return BZ_EINVAL;
    }
    for (int i = 0; i < cfg->frontend_count; i++) {
        char what[40];
        snprintf(what, sizeof what, "frontend.%d.listen", cfg->frontends[i].id);
        if (config__check_addr(cfg, what, cfg->frontends[i].listen, errmsg, errlen))
            return BZ_EINVAL;
    }
    char targets[CONFIG_MAX_NOTIFY][CONFIG_ADDR_MAX];
    int n = config_notify_targets(cfg, targets, CONFIG_MAX_NOTIFY);
    if (n < 0) {
        snprintf(errmsg, errlen, "catalog.notify: expected up to %d host:port, comma-separated",
                 CONFIG_MAX_NOTIFY);
        return BZ_EINVAL;
    }
    for (int i = 0; i < n; i++)
        if (config__check_addr(cfg, "catalog.notify", targets[i], errmsg, errlen))
            return BZ_EINVAL;
    return 0;
}

int config_notify_targets(const struct bz_config *cfg, char out[][CONFIG_ADDR_MAX], int max)
{
    if (cfg->notify[0] == '\0') {
        struct config_frontend fes[CONFIG_MAX_FRONTENDS];
        int n = config_frontends(cfg, fes);
        if (n > max)
            return BZ_EINVAL;
        for (int i = 0; i < n; i++)
            snprintf(out[i], CONFIG_ADDR_MAX, "%s", fes[i].listen);
        return n;
    }
    int n = 0;
    for (const char *p = cfg->notify;;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == 0 || len >= CONFIG_ADDR_MAX || n == max)
            return BZ_EINVAL;
        memcpy(out[n], p, len);
        out[n++][len] = '\0';
        p += len;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return n;
        if (*p++ != ',')
            return BZ_EINVAL;
    }
}

int config_frontends(const struct bz_config *cfg, struct config_frontend out[CONFIG_MAX_FRONTENDS])
{
    if (cfg->frontend_count == 0) {
        out[0].id = 0;
        snprintf(out[0].listen, sizeof out[0].listen, "%s", cfg->frontend_listen);
        return 1;
    }
    for (int i = 0; i < cfg->frontend_count; i++)
        out[i] = cfg->frontends[i];
    return cfg->frontend_count;
}

const char *config_frontend_listen(const struct bz_config *cfg, int id)
{
    if (cfg->frontend_count == 0)
        return id == 0 ? cfg->frontend_listen : NULL;
    if (id == 0 && cfg->frontend_count == 1)
        return cfg->frontends[0].listen;
    for (int i = 0; i < cfg->frontend_count; i++)
        if (cfg->frontends[i].id == id)
            return cfg->frontends[i].listen;
    return NULL;
}

const struct config_replica *config_replica_find(const struct bz_config *cfg, int id)
{
    for (int i = 0; i < cfg->replica_count; i++)
        if (cfg->replicas[i].id == id)
            return &cfg->replicas[i];
    return NULL;
}

int config_dump_json(const struct bz_config *cfg, struct strbuf *out)
{
    json_t *root = json_object();
    for (size_t i = 0; i < CONFIG__NROWS; i++) {
        const struct config__row *row = &config__rows[i];
        const char *field = (const char *)cfg + row->offset;
        json_t *sec = json_object_get(root, row->section);
        if (!sec) {
            sec = json_object();
            json_object_set_new(root, row->section, sec);
        }
        json_t *v = NULL;
        switch (row->type) {
        case CONFIG_STR:
            v = json_string(strcmp(row->key, "secret") == 0 ? "(redacted)" : field);
            break;
        case CONFIG_LEVEL:
            v = json_string(field);
            break;
        case CONFIG_INT:
            v = json_integer(*(const int *)field);
            break;
        case CONFIG_BOOL:
            v = json_boolean(*(const bool *)field);
            break;
        case CONFIG_MODE:
        case CONFIG_QUORUM:
        case CONFIG_LOGFMT:
            v = json_string(config__enum_names(row->type)[*(const int *)field]);
            break;
        }
        json_object_set_new(sec, row->key, v);
    }
    json_t *reps = json_array();
    for (int i = 0; i < cfg->replica_count; i++)
        json_array_append_new(reps, json_pack("{s:i,s:s,s:s}", "id", cfg->replicas[i].id, "listen",
                                              cfg->replicas[i].listen, "raft_listen",
                                              cfg->replicas[i].raft_listen));
    json_object_set_new(root, "replicas", reps);
    json_t *fes = json_array();
    for (int i = 0; i < cfg->frontend_count; i++)
        json_array_append_new(fes, json_pack("{s:i,s:s}", "id", cfg->frontends[i].id, "listen",
                                             cfg->frontends[i].listen));
    json_object_set_new(root, "frontends", fes);
    char *s = xjson_dumps(root, JSON_COMPACT);
    json_decref(root);
    int rv = strbuf_append(out, s, strlen(s));
    free(s);
    return rv;
}
