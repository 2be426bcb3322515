/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The one logging path. Messages go to stderr, prefixed with the program name; under
 * systemd (JOURNAL_STREAM set) they carry a syslog priority prefix instead, so journald
 * files them at the right level. Never log a secret: the log is not a safe place.
 *
 * log_*_errno(r, ...) log and return the negative errno, so a failure site reads
 *         return log_error_errno(r, "Cannot read header of %s: %s", dev, dmbyok_strerror(r));
 */

#include <stdarg.h>
#include <stdbool.h>

#include "dmbyok/error.h"
#include "dmbyok/macro.h"

enum log_level {
	LOG_LEVEL_ERROR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_NOTICE = 5,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

void dmbyok_log_setup(const char *program_name);
/* Whether an error-level message was logged: lets a caller avoid a silent failure. */
bool dmbyok_log_error_was_logged(void);
void dmbyok_log_set_max_level(enum log_level level);
/*
 * Between push and pop, errors and warnings are logged at debug level: for probes whose
 * failure is an answer ("is this a dmbyok volume?"), not a failure of the command.
 */
void dmbyok_log_quiet_push(void);
void dmbyok_log_quiet_pop(void);
enum log_level dmbyok_log_get_max_level(void);

/* Returns -abs(error), or 0 when error is 0. */
int dmbyok_log_internal(enum log_level level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...) dmbyok_log_internal((level), (error), __VA_ARGS__)

#define log_debug(...)   (void)dmbyok_log_internal(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    (void)dmbyok_log_internal(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_notice(...)  (void)dmbyok_log_internal(LOG_LEVEL_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) (void)dmbyok_log_internal(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_error(...)   (void)dmbyok_log_internal(LOG_LEVEL_ERROR, 0, __VA_ARGS__)

#define log_debug_errno(error, ...)   dmbyok_log_internal(LOG_LEVEL_DEBUG, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) dmbyok_log_internal(LOG_LEVEL_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...)   dmbyok_log_internal(LOG_LEVEL_ERROR, (error), __VA_ARGS__)

/* Memory exhaustion is reported once, the same way everywhere. */
#define log_oom() dmbyok_log_internal(LOG_LEVEL_ERROR, ENOMEM, "Out of memory.")
