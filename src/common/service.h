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

/*
 * Parses argv into cfg. `role` names the process in logs ("catalog");
 * `needs_id` requires --id N naming an [order.N] section. Prints a usage or
 * config error to stderr and returns nonzero if the process should exit.
 * Must be called before any thread is started.
 */
int service_init(int argc, char **argv, const char *role, bool needs_id, struct bz_config *cfg,
                 int *id);

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
