/*
 * config.h - the cluster configuration: one INI file (SPEC §5), then the
 * environment (BAZAAR_SECRET), then command-line flags, in that order.
 *
 * Every option is one row of a table in config.c (section, key, type, bounds,
 * default), so parsing, validation, flag overrides and the /status dump all
 * come from the same place. Unknown sections or keys are errors: a typo in a
 * config file should stop the service, not be silently ignored. After
 * loading, the struct is treated as immutable and passed to each module.
 */
#ifndef BZ_CONFIG_H
#define BZ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util.h"

#define CONFIG_MAX_REPLICAS  16
#define CONFIG_ADDR_MAX      64
#define CONFIG_PATH_MAX      160 /* values must fit one inih line (200 bytes) */
#define CONFIG_SECRET_MAX    128
#define CONFIG_MAX_FRONTENDS 8

enum config_mode { CONFIG_MODE_PRIMARY_BACKUP = 0, CONFIG_MODE_RAFT };
enum config_quorum { CONFIG_QUORUM_MAJORITY = 0, CONFIG_QUORUM_ONE };
enum config_log_format { CONFIG_LOG_TEXT = 0, CONFIG_LOG_JSON };

struct config_replica {
    int id;                            /* from the section name [order.<id>] */
    char listen[CONFIG_ADDR_MAX];      /* host:port */
    char raft_listen[CONFIG_ADDR_MAX]; /* host:port of the Raft transport; "" unless mode = raft */
};

/* One front-end: [frontend.N] listen, or id 0 for the single [frontend] listen form. */
struct config_frontend {
    int id;
    char listen[CONFIG_ADDR_MAX];
};

struct bz_config {
    /* [cluster] */
    char data_dir[CONFIG_PATH_MAX];
    char secret[CONFIG_SECRET_MAX];
    char log_level[8];
    enum config_log_format log_format;
    int call_timeout_ms; /* deadline of one internal HTTP call */
    int idle_timeout_s;  /* idle keep-alive connections are closed after this */
    /* [catalog] */
    char catalog_listen[CONFIG_ADDR_MAX];
    char stocks_csv[CONFIG_PATH_MAX];
    char notify[CONFIG_PATH_MAX]; /* front-ends to invalidate, "a:1,b:2"; "" = [frontend] listen */
    int restock_interval_s;
    int restock_to;
    int idempotency_window_s; /* request ids are remembered (retries answered) this long */
    int heartbeat_ms;    /* invalidation stream heartbeat; silence of 3x this empties a cache */
    int catalog_threads; /* event threads */
    int catalog_workers; /* threads for blocking handlers */
    /* [frontend] */
    char frontend_listen[CONFIG_ADDR_MAX];
    bool cache_on;
    int cache_size;
    int cache_ttl_s;      /* 0 = entries live until evicted or invalidated */
    int order_cache_size; /* entries of the GET /orders/{n} cache; 0 = off */
    int frontend_threads;
    int frontend_workers;
    int health_interval_ms; /* period of the leader health check */
    /* [replication] */
    enum config_mode mode;
    enum config_quorum write_quorum;
    int order_threads;
    int order_workers;
    int snapshot_threshold; /* raft: applied entries between two snapshots */
    int snapshot_trailing;  /* raft: entries kept in the log after a snapshot */
    /* [frontend.N], sorted by id; none means one front-end on frontend_listen */
    int frontend_count;
    struct config_frontend frontends[CONFIG_MAX_FRONTENDS];
    /* [order.N], sorted by id */
    int replica_count;
    struct config_replica replicas[CONFIG_MAX_REPLICAS];
};

/* Fills every option with its default (no replicas). */
void config_init_defaults(struct bz_config *cfg);

/*
 * Reads an INI file over the current values. A key given twice in a section,
 * or a section opened twice, is an error (the second would silently win).
 * Returns 0 or BZ_EINVAL with errmsg set.
 */
int config_load_file(struct bz_config *cfg, const char *path, char *errmsg, size_t errlen);
/* The same from an open stream (the caller closes it); `path` names it in messages. */
int config_load_stream(struct bz_config *cfg, FILE *f, const char *path, char *errmsg,
                       size_t errlen);

/*
 * Applies environment overrides (BAZAAR_SECRET; empty means unset). A secret
 * longer than CONFIG_SECRET_MAX - 1 bytes is an error (BZ_EINVAL with errmsg),
 * never silently ignored.
 */
int config_apply_env(struct bz_config *cfg, char *errmsg, size_t errlen);

/* The shipped default secret: config_validate refuses it on a non-loopback address. */
#define CONFIG_DEFAULT_SECRET "dev-secret"

/* Sets one option from "section.key=value" (the --set flag). Returns 0 or BZ_EINVAL. */
int config_set_option(struct bz_config *cfg, const char *assignment, char *errmsg, size_t errlen);

/* Sets one option by section and key, as the INI reader does. Returns 0 or BZ_EINVAL. */
int config_set(struct bz_config *cfg, const char *section, const char *key, const char *value,
               char *errmsg, size_t errlen);

/*
 * Checks cross-option rules (at least one replica, addresses parse, the
 * default secret only on loopback addresses). 0 or BZ_EINVAL.
 */
int config_validate(const struct bz_config *cfg, char *errmsg, size_t errlen);

#define CONFIG_MAX_NOTIFY CONFIG_MAX_FRONTENDS

/*
 * The front-ends the catalog invalidates: the [catalog] notify list, or every
 * configured front-end (each [frontend.N], else [frontend] listen) when the
 * list is empty. Returns how many were written to out, or BZ_EINVAL for a
 * malformed list.
 */
int config_notify_targets(const struct bz_config *cfg, char out[][CONFIG_ADDR_MAX], int max);

/*
 * Every configured front-end: the [frontend.N] sections, or one entry with
 * id 0 and [frontend] listen when there are none. Returns how many (>= 1).
 */
int config_frontends(const struct bz_config *cfg, struct config_frontend out[CONFIG_MAX_FRONTENDS]);

/*
 * The listen address of front-end `id` (0: the only one, when there is one).
 * NULL when there is no such front-end.
 */
const char *config_frontend_listen(const struct bz_config *cfg, int id);

/* The replica with this id, or NULL. */
const struct config_replica *config_replica_find(const struct bz_config *cfg, int id);

/* Appends the configuration as a JSON object (the secret redacted) to out. */
int config_dump_json(const struct bz_config *cfg, struct strbuf *out);

#endif
