/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "dmbyok/log.h"

static const char *program = "dmbyok";
static enum log_level max_level = LOG_LEVEL_INFO;
static bool journal = false;
static bool error_logged = false;
static unsigned quiet = 0;
static int (*journal_sink)(const struct iovec *iov, int n) = sd_journal_sendv;

/*
 * Whether stderr is journald's stream for us. systemd sets JOURNAL_STREAM to "DEV:INODE" of
 * the stream it connected, and documents that only a match with fstat(2) of stderr counts:
 * the variable is inherited by children whose stderr went elsewhere (a file, a terminal).
 */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char *end;

	if (!e || !*e || *e == '-')
		return false;
	errno = 0;
	dev = strtoull(e, &end, 10);
	if (errno || end == e || *end != ':' || end[1] == '-')
		return false;
	e = end + 1;
	ino = strtoull(e, &end, 10);
	if (errno || end == e || *end)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void dmbyok_log_setup(const char *program_name)
{
	const char *level;

	if (program_name)
		program = program_name;
	/* stderr connected to journald: let it parse the priority instead of a name prefix. */
	journal = stderr_is_journal();

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

bool dmbyok_log_to_journal(void)
{
	return journal;
}

void dmbyok_log_set_journal_sink(int (*sink)(const struct iovec *iov, int n))
{
	journal_sink = sink ? sink : sd_journal_sendv;
}

/* The level a message is logged at, and whether it is logged at all. */
static bool log_admit(enum log_level *level)
{
	if (quiet && *level < LOG_LEVEL_NOTICE)
		*level = LOG_LEVEL_DEBUG; /* a probe's failures are expected: debug detail only */
	if (*level <= LOG_LEVEL_ERROR)
		error_logged = true;
	return *level <= max_level;
}

/* "NAME=" as journald accepts it: what makes a field addressable in journalctl. */
static bool field_name_valid(const char *s, size_t n)
{
	if (n == 0 || n > 64 || s[0] == '_' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

/* Length of a field's name, or 0 when the field is not "NAME=value" with a valid NAME. */
static size_t field_name_len(const char *field)
{
	const char *eq = strchr(field, '=');

	if (!eq || !field_name_valid(field, (size_t)(eq - field)))
		return 0;
	return (size_t)(eq - field);
}

/* " NAME=value" for each field (and ERRNO), quoted where needed; NULL if out of memory. */
static char *fields_format(const char *const *fields, int error)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	if (!f)
		return NULL;
	for (const char *const *p = fields; p && *p; p++) {
		size_t n = field_name_len(*p);
		const char *v;
		bool plain = true;

		if (n == 0)
			continue;
		v = *p + n + 1;
		for (const char *c = v; *c; c++)
			if ((unsigned char)*c <= ' ' || *c == '"' || *c == '\\' || *c == 0x7f)
				plain = false;
		if (plain && *v) {
			fprintf(f, " %s", *p);
			continue;
		}
		/* Quoted, C-escaped: one entry stays one line, whatever a value holds. */
		fprintf(f, " %.*s=\"", (int)n, *p);
		for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
			if (*c == '"' || *c == '\\')
				fprintf(f, "\\%c", *c);
			else if (*c == '\n')
				fputs("\\n", f);
			else if (*c == '\t')
				fputs("\\t", f);
			else if (*c < ' ' || *c == 0x7f)
				fprintf(f, "\\x%02x", *c);
			else
				fputc(*c, f);
		}
		fputc('"', f);
	}
	if (error != 0)
		fprintf(f, " ERRNO=%d", abs(error));
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

/*
 * One line in one write (stderr is unbuffered): the agent's children share its stream, and
 * a line written in pieces could be cut by another's.
 */
static void stderr_write(enum log_level level, int error, const char *msg,
                         const char *const *fields, bool with_fields)
{
	_cleanup_free_ char *tail = with_fields ? fields_format(fields, error) : NULL;

	if (journal)
		fprintf(stderr, "<%d>%s%s\n", (int)level, msg, tail ? tail : "");
	else
		fprintf(stderr, "%s: %s%s%s\n", program,
		        level == LOG_LEVEL_WARNING ? "warning: " : "", msg, tail ? tail : "");
}

int dmbyok_log_internal(enum log_level level, int error, const char *fmt, ...)
{
	int saved_errno = errno;
	char buf[2048];
	va_list ap;

	if (log_admit(&level)) {
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		stderr_write(level, error, buf, NULL, false);
	}

	errno = saved_errno;
	return error == 0 ? 0 : -abs(error);
}

/* Source paths from the project's root ("src/kms/kms.c"), not the build machine's. */
static const char *code_file(const char *file)
{
	/* This file's own path, less "src/core/log.c", is the root as the compiler saw it. */
	static const char self[] = __FILE__, tail[] = "src/core/log.c";
	size_t root = sizeof(self) - sizeof(tail);

	if (sizeof(self) < sizeof(tail) || strcmp(self + root, tail) != 0)
		return file;
	return strncmp(file, self, root) == 0 ? file + root : file;
}

#define JOURNAL_OWN_FIELDS 8

/* One native journal entry; a negative errno when it could not be handed over. */
static int journal_write(enum log_level level, int error, const char *file, int line,
                         const char *func, const char *message_id, const char *const *fields,
                         const char *msg)
{
	_cleanup_free_ struct iovec *iov = NULL;
	char m[2048 + 16], prio[16], ident[128], mid[64], err[32];
	char code_loc[256], code_line[32], code_func[128];
	size_t n_fields = 0;
	int n = 0;

	for (const char *const *p = fields; p && *p; p++)
		n_fields++;
	iov = calloc(JOURNAL_OWN_FIELDS + n_fields, sizeof(*iov));
	if (!iov)
		return -ENOMEM;
#define IOV_STR(s) (iov[n++] = (struct iovec){ .iov_base = (void *)(s), .iov_len = strlen(s) })
	snprintf(m, sizeof(m), "MESSAGE=%s", msg);
	IOV_STR(m);
	snprintf(prio, sizeof(prio), "PRIORITY=%d", (int)level);
	IOV_STR(prio);
	snprintf(ident, sizeof(ident), "SYSLOG_IDENTIFIER=%s", program);
	IOV_STR(ident);
	if (message_id) {
		snprintf(mid, sizeof(mid), "MESSAGE_ID=%s", message_id);
		IOV_STR(mid);
	}
	if (error != 0) {
		snprintf(err, sizeof(err), "ERRNO=%d", abs(error));
		IOV_STR(err);
	}
	if (file) {
		snprintf(code_loc, sizeof(code_loc), "CODE_FILE=%s", code_file(file));
		IOV_STR(code_loc);
		snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);
		IOV_STR(code_line);
	}
	if (func) {
		snprintf(code_func, sizeof(code_func), "CODE_FUNC=%s", func);
		IOV_STR(code_func);
	}
	for (const char *const *p = fields; p && *p; p++)
		if (field_name_len(*p) > 0)
			IOV_STR(*p);
#undef IOV_STR
	return journal_sink(iov, n);
}

int dmbyok_log_struct_internal(const char *file, int line, const char *func, enum log_level level,
                               int error, const char *message_id, const char *const *fields,
                               const char *fmt, ...)
{
	int saved_errno = errno;
	char buf[2048];
	va_list ap;

	if (log_admit(&level)) {
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);

		/*
		 * Natively to journald, so the fields are queryable. If that fails (journald
		 * restarting, a full socket buffer) the entry goes to its stream instead, fields
		 * included: there they are the only record of them.
		 */
		if (!journal ||
		    journal_write(level, error, file, line, func, message_id, fields, buf) < 0)
			stderr_write(level, error, buf, fields,
			             journal || max_level >= LOG_LEVEL_DEBUG);
	}

	errno = saved_errno;
	return error == 0 ? 0 : -abs(error);
}

int dmbyok_log_field(struct log_fields *f, const char *name, const char *fmt, ...)
{
	static const char *const reserved[] = {
		"MESSAGE", "MESSAGE_ID", "PRIORITY", "ERRNO", "SYSLOG_IDENTIFIER",
	};
	size_t n = name ? strlen(name) : 0, room;
	char *at;
	va_list ap;
	int len;

	if (!f || !fmt || !field_name_valid(name ? name : "", n) || !strncmp(name, "CODE_", 5))
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
		if (!strcmp(name, reserved[i]))
			return -EINVAL;
	if (f->n >= DMBYOK_LOG_FIELDS_MAX || f->used >= sizeof(f->buf))
		return -E2BIG;

	at = f->buf + f->used;
	room = sizeof(f->buf) - f->used;
	if (n + 1 >= room)
		return -E2BIG;
	memcpy(at, name, n);
	at[n] = '=';
	va_start(ap, fmt);
	len = vsnprintf(at + n + 1, room - n - 1, fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= room - n - 1) {
		at[0] = '\0'; /* a cut value would be a wrong one: leave the field out */
		return len < 0 ? -EINVAL : -E2BIG;
	}
	f->field[f->n++] = at;
	f->field[f->n] = NULL;
	f->used += n + 1 + (size_t)len + 1;
	return 0;
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
