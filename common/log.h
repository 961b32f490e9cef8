/* log: timestamped, levelled messages on stderr, safe to call from any thread.
 * The level comes from FEDNAS_LOG (debug, info, warn, error) or log_set_level().
 * Each process sets a short tag ("server", "site-3") so interleaved output stays readable. */
#ifndef FEDNAS_COMMON_LOG_H
#define FEDNAS_COMMON_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

void log_set_level(log_level_t level);
void log_set_tag(const char *tag);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 when the name is unknown. */
int log_level_parse(const char *name);
void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
