/* Leveled logging to stderr.
 *
 * The level is read once from FIM_DEBUG (1 turns on debug output). Messages
 * start in lower case, quote values, and end with what the user can do. Every
 * line starts with "flatimage: " to set it apart from the program's own
 * output. */
#pragma once

#include <stdbool.h>

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

void log_init(void);
bool log_debug_enabled(void);
void log_message(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_message(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_message(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_message(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                   \
	do {                                                             \
		if (log_debug_enabled())                                 \
			log_message(LOG_LEVEL_DEBUG, __VA_ARGS__);       \
	} while (0)
