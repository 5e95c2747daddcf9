#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int log_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log__write(int lvl, const char *fmt, ...)
{
	char line[2048], ts[32];
	struct timeval tv;
	struct tm tm;
	va_list ap;
	int n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "ts=%s.%03ldZ level=%s ", ts, (long)(tv.tv_usec / 1000),
		     level_names[lvl < 0 ? 0 : lvl > 3 ? 3 : lvl]);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One fputs per line keeps lines whole when several processes share a terminal. */
	n = (int)strlen(line);
	if ((size_t)n < sizeof(line) - 1) {
		line[n] = '\n';
		line[n + 1] = '\0';
	}
	fputs(line, stderr);
}

int log_parse_level(const char *s)
{
	int i;

	for (i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}
