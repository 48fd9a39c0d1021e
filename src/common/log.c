#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "error.h"

#define LOG__LINE_MAX  1024
#define LOG__RECENT    8    /* distinct recent messages remembered for repeat suppression */
#define LOG__REPEAT_MS 1000 /* the same message again within this is counted, not printed */

int log__level = LOG_LEVEL_INFO;
static const char *log__role = "bazaar";
static int log__id;
static bool log__json;

/* A message printed recently, so that a burst of the same event is one line. */
struct log__recent {
    uint64_t hash;
    uint64_t printed_ms;
    unsigned suppressed;
};

static pthread_mutex_t log__lock = PTHREAD_MUTEX_INITIALIZER;
static struct log__recent log__recent[LOG__RECENT];
static unsigned log__next_slot;

void log_init(const char *role, int id)
{
    log__role = role;
    log__id = id;
}

void log_set_level(enum log_level level)
{
    log__level = level;
}

void log_set_json(bool json)
{
    log__json = json;
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

int log_format_time(uint64_t wall_ms, char *buf, size_t len)
{
    time_t sec = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    int n =
        snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
    return n < 0 || (size_t)n >= len ? BZ_EINVAL : 0;
}

static uint64_t log__hash(enum log_level level, const char *msg)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)level; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/*
 * Repeat suppression: returns false when the same message was printed less
 * than LOG__REPEAT_MS ago (it is counted instead); otherwise true, with
 * *repeats set to how many copies were suppressed since it was last printed.
 */
static bool log__should_print(uint64_t hash, uint64_t now_ms, unsigned *repeats)
{
    bool print = true;
    *repeats = 0;
    pthread_mutex_lock(&log__lock);
    struct log__recent *slot = NULL;
    for (int i = 0; i < LOG__RECENT; i++)
        if (log__recent[i].printed_ms && log__recent[i].hash == hash)
            slot = &log__recent[i];
    if (slot && now_ms - slot->printed_ms < LOG__REPEAT_MS) {
        slot->suppressed++;
        print = false;
    } else {
        if (!slot)
            slot = &log__recent[log__next_slot++ % LOG__RECENT];
        else
            *repeats = slot->suppressed;
        slot->hash = hash;
        slot->printed_ms = now_ms;
        slot->suppressed = 0;
    }
    pthread_mutex_unlock(&log__lock);
    return print;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *const lower[] = {"debug", "info", "warn", "error"};
    /* ts: 25 bytes in practice; sized for any int fields so gcc -O2 (Release) does not see a
     * possible -Wformat-truncation in log_format_time. */
    char msg[LOG__LINE_MAX], ts[128], proc[48], line[LOG__LINE_MAX + 128];

    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    uint64_t now = clock_wall_ms();
    unsigned repeats = 0;
    if (level != LOG_LEVEL_DEBUG && !log__should_print(log__hash(level, msg), now, &repeats))
        return;
    if (repeats) {
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof msg - n, " (and %u more times in the second before)", repeats);
    }
    log_format_time(now, ts, sizeof ts);
    snprintf(proc, sizeof proc, "%s[%d]", log__role, log__id);

    if (log__json) {
        json_t *obj = json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "process", proc, "level",
                                lower[level], "msg", msg);
        char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(obj);
        if (s) {
            snprintf(line, sizeof line, "%s\n", s);
            free(s);
        } else {
            snprintf(line, sizeof line,
                     "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"unloggable\"}\n", ts);
        }
    } else {
        int n = snprintf(line, sizeof line, "%s %s %-5s %s", ts, proc, names[level], msg);
        size_t len = n < 0 ? 0 : (size_t)n;
        if (len > sizeof line - 2)
            len = sizeof line - 2; /* truncated: keep room for the newline */
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    /* One fputs per line keeps lines from concurrent threads whole. */
    fputs(line, stderr);
}
