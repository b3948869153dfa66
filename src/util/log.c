/* log.c - leveled logging to stderr.
 *
 * One formatted line per call, written with a single write(2) so lines from
 * different threads never interleave. */
#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log__level = LOG_INFO;
static _Atomic int log__format = LOG_FORMAT_TEXT;

void log_set_format(enum log_format f) { atomic_store(&log__format, (int)f); }

void log_set_level(enum log_level level) { atomic_store(&log__level, (int)level); }

enum log_level log_get_level(void) { return (enum log_level)atomic_load(&log__level); }

int log_level_parse(const char *s) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) return i;
    if (strcmp(s, "warning") == 0) return LOG_WARN;
    return -1;
}

/* Append s to out as the inside of a JSON string (room: out ends at end). */
static char *log__json_str(char *out, char *end, const char *s) {
    for (; *s && out < end - 7; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') *out++ = '\\', *out++ = (char)c;
        else if (c == '\n') *out++ = '\\', *out++ = 'n';
        else if (c < 0x20) out += snprintf(out, 7, "\\u%04x", c);
        else *out++ = (char)c;
    }
    return out;
}

void log_msg(enum log_level level, const char *fmt, ...) {
    if ((int)level < atomic_load(&log__level)) return;
    static const char *tags[] = {"debug", "info", "warn", "error", "off"};
    static const int prio[] = {7, 6, 4, 3, 3}; /* syslog's debug, info, warning, err */
    char msg[2048], line[4200];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m < 0) msg[0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    size_t len;
    switch (atomic_load(&log__format)) {
    case LOG_FORMAT_JSON: {
        int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", when, tags[level]);
        char *end = log__json_str(line + n, line + sizeof line - 4, msg);
        memcpy(end, "\"}", 2);
        len = (size_t)(end + 2 - line);
        break;
    }
    case LOG_FORMAT_JOURNAL:
        len = (size_t)snprintf(line, sizeof line - 1, "<%d>%s", prio[level], msg);
        break;
    default:
        len = (size_t)snprintf(line, sizeof line - 1, "%s %-5s %s", when, tags[level], msg);
        break;
    }
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
