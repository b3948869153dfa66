/* log.h - leveled logging to stderr, one line per call, thread-safe. */
#ifndef CORRAL_LOG_H
#define CORRAL_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

/* How a line looks: "2026-12-01T13:00:00.000Z info  text" (text), one
 * JSON object {"time","level","msg"} (json, for log shippers), or the
 * text with a syslog priority prefix and no time (journal: journald
 * stamps each line itself). */
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON, LOG_FORMAT_JOURNAL };
void log_set_format(enum log_format f);

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "debug", "info", "warn", "error", "off"; -1 if unknown. */
int log_level_parse(const char *s);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
