/*
 * service.h - what every service binary does before and after its own work:
 * parse the command line (--config, --id, --set, --log-level), load and
 * validate the configuration, set up logging, block SIGINT/SIGTERM so that
 * only the main thread receives them, and wait for one.
 *
 * Signals are taken with sigwait() in the main thread, so no code ever runs
 * inside a signal handler.
 */
#ifndef BZ_SERVICE_H
#define BZ_SERVICE_H

#include <stdbool.h>

#include "config.h"

#include <jansson.h>

/* What --id means for a binary; 0 and 1 keep the old bool (needs_id) meaning. */
enum service_id_kind {
    SERVICE_ID_NONE = 0,     /* no --id */
    SERVICE_ID_REPLICA = 1,  /* --id N required, naming an [order.N] */
    SERVICE_ID_FRONTEND = 2, /* --id N names a [frontend.N]; optional with one front-end */
};

/*
 * Parses argv into cfg. `role` names the process in logs ("catalog");
 * `id_kind` says what --id means (see above). --help prints the usage to
 * stdout and --version the version, and both exit 0; a bad flag prints a
 * short usage line to stderr. Prints a usage or config error to stderr and
 * returns nonzero if the process should exit (status 2). Must be called
 * before any thread is started.
 */
int service_init(int argc, char **argv, const char *role, int id_kind, struct bz_config *cfg,
                 int *id);

/* "0.4.0 (commit 1a2b3c4d5e6f)": the version of this build. */
const char *service_version(void);

/* Prints "<prog> <version>" to stdout: the --version answer of every binary. */
void service_print_version(const char *prog);

/*
 * The part of /status every service shares: {"service", "id", "version",
 * "pid", "started_at", "uptime_s", "config"} (the secret redacted). New reference.
 */
json_t *service_status_json(const struct bz_config *cfg, const char *role, int id);

/* Blocks until SIGINT or SIGTERM arrives; returns the signal number. */
int service_wait_for_signal(void);

/* "data_dir/name" into buf. Returns 0 or BZ_EINVAL if it does not fit. */
int service_data_path(const struct bz_config *cfg, const char *name, char *buf, size_t len);

/*
 * Takes an exclusive lock on "<db_path>.lock" for the life of the process, so a
 * second process started for the same database (same replica id, same data
 * directory) refuses to run instead of corrupting it. 0 or BZ_ECONFLICT.
 */
int service_lock_data(const char *db_path);

/* Creates data_dir (and parents) if missing. 0 or BZ_EIO. */
int service_make_data_dir(const struct bz_config *cfg);

#endif
