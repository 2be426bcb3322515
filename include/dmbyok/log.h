/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The one logging path. Messages go to stderr, prefixed with the program name; when stderr
 * is journald's stream for us (JOURNAL_STREAM names stderr's device and inode, as systemd
 * documents) they carry a syslog priority prefix instead, so journald files them at the
 * right level. Never log a secret: the log is not a safe place.
 *
 * log_*_errno(r, ...) log and return the negative errno, so a failure site reads
 *         return log_error_errno(r, "Cannot read header of %s: %s", dev, dmbyok_strerror(r));
 *
 * Events worth selecting by machine (a key revoked, volumes locked, each KMS call) are
 * structured entries with a stable MESSAGE_ID (dmbyok/message-ids.h) and fields:
 *
 *         struct log_fields f = {};
 *         (void)dmbyok_log_field(&f, "KEY_ARN", "%s", arn);
 *         for (size_t i = 0; i < n; i++)
 *                 (void)dmbyok_log_field(&f, "VOLUME", "%s", names[i]);
 *         log_struct(LOG_LEVEL_NOTICE, DMBYOK_MESSAGE_VOLUMES_LOCKED, f.field,
 *                    "Locked the %zu volume(s) of %s.", n, arn);
 *
 * Under journald they are sent natively (sd_journal_sendv), so the fields can be queried
 * (journalctl MESSAGE_ID=... VOLUME=orders); should that fail they go to the stream with
 * their fields appended. On stderr the message reads as any other; the fields are appended
 * as " NAME=value" only at debug level.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

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

/*
 * A structured entry: message_id (a DMBYOK_MESSAGE_* string, or NULL) and fields, a
 * NULL-terminated list of "NAME=value" (NAME as journald wants it: A-Z, 0-9 and '_', not
 * starting with '_' or a digit; malformed ones are dropped), or NULL. Adds CODE_FILE,
 * CODE_LINE, CODE_FUNC and, when error is not 0, ERRNO. Returns -abs(error), or 0.
 * Call it through dmbyok_log_struct()/log_struct(), which pass the code location.
 */
int dmbyok_log_struct_internal(const char *file, int line, const char *func, enum log_level level,
                               int error, const char *message_id, const char *const *fields,
                               const char *fmt, ...) _printf_(8, 9);

#define dmbyok_log_struct(level, error, message_id, fields, ...)                                   \
	dmbyok_log_struct_internal(__FILE__, __LINE__, __func__, (level), (error), (message_id),   \
	                           (fields), __VA_ARGS__)
#define log_struct(level, message_id, fields, ...)                                                 \
	(void)dmbyok_log_struct((level), 0, (message_id), (fields), __VA_ARGS__)
#define log_struct_errno(level, error, message_id, fields, ...)                                    \
	dmbyok_log_struct((level), (error), (message_id), (fields), __VA_ARGS__)

/* Whether entries go to journald (natively or through its stream) rather than a terminal. */
bool dmbyok_log_to_journal(void);

/*
 * Fields built on the stack for one entry, without allocation: `struct log_fields f = {};`,
 * dmbyok_log_field() for each, then pass f.field. A name may repeat (one VOLUME= per volume).
 */
#define DMBYOK_LOG_FIELDS_MAX 32
struct log_fields {
	const char *field[DMBYOK_LOG_FIELDS_MAX + 1]; /* NULL-terminated */
	size_t n;
	size_t used;
	char buf[8192];
};

/*
 * Appends "NAME=value" with the value formatted. -EINVAL for a name journald would not take
 * (or one log_struct sets itself: MESSAGE, MESSAGE_ID, PRIORITY, ERRNO, CODE_*,
 * SYSLOG_IDENTIFIER), -E2BIG when the list or its buffer is full; the field is then left
 * out and the rest of the entry stays usable.
 */
int dmbyok_log_field(struct log_fields *f, const char *name, const char *fmt, ...) _printf_(3, 4);

/* Tests: what receives native journal entries (NULL: sd_journal_sendv). */
void dmbyok_log_set_journal_sink(int (*sink)(const struct iovec *iov, int n));

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
