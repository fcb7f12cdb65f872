#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level max_level = LOG_LEVEL_INFO;

void log_init(void)
{
	const char *debug = getenv("FIM_DEBUG");

	if (debug && *debug && strcmp(debug, "0") != 0)
		max_level = LOG_LEVEL_DEBUG;
}

bool log_debug_enabled(void)
{
	return max_level >= LOG_LEVEL_DEBUG;
}

void log_message(enum log_level level, const char *fmt, ...)
{
	static const char *const prefix[] = {
		[LOG_LEVEL_ERROR] = "error: ",
		[LOG_LEVEL_WARNING] = "warning: ",
		[LOG_LEVEL_INFO] = "",
		[LOG_LEVEL_DEBUG] = "debug: ",
	};
	char line[4096];
	int saved_errno = errno;
	va_list ap;
	int n;

	if (level > max_level)
		return;

	if (level == LOG_LEVEL_DEBUG) {
		struct timespec now;

		/* Monotonic milliseconds make start-up phases easy to time. */
		clock_gettime(CLOCK_MONOTONIC, &now);
		n = snprintf(line, sizeof(line), "flatimage: [%ld.%03ld] %s", (long)now.tv_sec % 1000,
			     now.tv_nsec / 1000000, prefix[level]);
	} else {
		n = snprintf(line, sizeof(line), "flatimage: %s", prefix[level]);
	}
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");

	/* One write(2) per line, so lines from the supervisor and the
	 * container's init do not interleave mid-line. */
	if (write(STDERR_FILENO, line, strlen(line)) < 0) {
		/* Nothing sensible is left to report to. */
	}
	errno = saved_errno;
}
