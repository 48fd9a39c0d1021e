/*
 * log.h - levelled logging to stderr with a per-process prefix.
 *
 * Every line looks like `2026-11-30T12:00:01.234Z frontend[1] INFO  message`:
 * an ISO-8601 UTC time with milliseconds, role and instance id, level. With
 * `[cluster] log_format = json` each line is one JSON object instead
 * ({"ts","process","level","msg"}). The level is checked inside the macro, so
 * a suppressed debug line costs one comparison and no formatting. The same
 * message again within a second (a burst of requests failing on one dead
 * leader) is counted, not printed, and the count is added to its next print.
 * Not for metrics or audit trails; those live in /metrics and the databases.
 */
#ifndef BZ_LOG_H
#define BZ_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

extern int log__level;

/* Sets the prefix ("catalog", 0). `role` must outlive the process (a literal). */
void log_init(const char *role, int id);
void log_set_level(enum log_level level);
/* true: one JSON object per line; false (default): text. */
void log_set_json(bool json);
/* "2026-11-30T12:00:01.234Z" for a wall-clock time in ms into buf (>= 25 bytes). */
int log_format_time(uint64_t wall_ms, char *buf, size_t len);
/* Parses "debug", "info", "warn" or "error"; returns 0 or BZ_EINVAL. */
int log_parse_level(const char *name, enum log_level *out);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG__AT(level, ...)                                                                        \
    do {                                                                                           \
        if ((int)(level) >= log__level)                                                            \
            log_write((level), __VA_ARGS__);                                                       \
    } while (0)
#define LOG_DEBUG(...) LOG__AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...)  LOG__AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...)  LOG__AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG__AT(LOG_LEVEL_ERROR, __VA_ARGS__)

static inline bool log_enabled(enum log_level level)
{
    return (int)level >= log__level;
}

#endif
