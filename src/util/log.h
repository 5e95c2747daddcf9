/* log.h — single-line key=value logging to stderr. Only edge code logs; pure modules never do.
 * `log_level` is the one tolerated global, written once by main before the loop runs. */
#ifndef LLMLIMIT_UTIL_LOG_H
#define LLMLIMIT_UTIL_LOG_H

enum log_lvl { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

extern int log_level;

#define log_at(lvl, ...)                                                                           \
	do {                                                                                       \
		if ((lvl) >= log_level)                                                            \
			log__write((lvl), __VA_ARGS__);                                            \
	} while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

void log__write(int lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses "debug", "info", "warn" or "error"; -1 when unknown. */
int log_parse_level(const char *s);

#endif
