/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmbyok/log.h"

static const char *program = "dmbyok";
static enum log_level max_level = LOG_LEVEL_INFO;
static int journal_prefix = 0;
static bool error_logged = false;
static unsigned quiet = 0;

void dmbyok_log_setup(const char *program_name)
{
	const char *level;

	if (program_name)
		program = program_name;
	/* stderr connected to journald: let it parse the priority instead of a name prefix. */
	journal_prefix = getenv("JOURNAL_STREAM") != NULL;

	level = getenv("DMBYOK_LOG_LEVEL");
	if (level) {
		if (!strcmp(level, "debug"))
			max_level = LOG_LEVEL_DEBUG;
		else if (!strcmp(level, "info"))
			max_level = LOG_LEVEL_INFO;
		else if (!strcmp(level, "notice"))
			max_level = LOG_LEVEL_NOTICE;
		else if (!strcmp(level, "warning"))
			max_level = LOG_LEVEL_WARNING;
		else if (!strcmp(level, "error"))
			max_level = LOG_LEVEL_ERROR;
	}
}

void dmbyok_log_set_max_level(enum log_level level)
{
	max_level = level;
}

enum log_level dmbyok_log_get_max_level(void)
{
	return max_level;
}

int dmbyok_log_internal(enum log_level level, int error, const char *fmt, ...)
{
	int saved_errno = errno;
	char buf[2048];
	va_list ap;

	if (quiet && level < LOG_LEVEL_NOTICE)
		level = LOG_LEVEL_DEBUG; /* a probe's failures are expected: debug detail only */
	if (level <= LOG_LEVEL_ERROR)
		error_logged = true;
	if (level <= max_level) {
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);

		if (journal_prefix)
			fprintf(stderr, "<%d>%s\n", (int)level, buf);
		else
			fprintf(stderr, "%s: %s%s\n", program,
			        level == LOG_LEVEL_WARNING ? "warning: " : "", buf);
	}

	errno = saved_errno;
	return error == 0 ? 0 : -abs(error);
}

bool dmbyok_log_error_was_logged(void)
{
	return error_logged;
}

void dmbyok_log_quiet_push(void)
{
	quiet++;
}

void dmbyok_log_quiet_pop(void)
{
	if (quiet)
		quiet--;
}
