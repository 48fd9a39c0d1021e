#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "error.h"

int log__level = LOG_LEVEL_INFO;
static const char *log__role = "bazaar";
static int log__id;

void log_init(const char *role, int id)
{
    log__role = role;
    log__id = id;
}

void log_set_level(enum log_level level)
{
    log__level = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return BZ_EINVAL;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    static const char letters[] = "DIWE";
    char line[1024];
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%s[%d] %02d:%02d:%02d.%03ld %c ", log__role, log__id,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000), letters[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line keeps lines from concurrent threads whole. */
    size_t len = strlen(line);
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep room for the newline */
    line[len] = '\n';
    line[len + 1] = '\0';
    fputs(line, stderr);
}
