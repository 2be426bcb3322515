/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit file of KMS calls (include/dmbyok/audit.h): its settings, appending a line with
 * size-based rotation that is safe between processes, and reading it back.
 *
 * Concurrency: every writer opens the file, takes flock(LOCK_EX) and then checks that the
 * name still points to what it opened (another writer may have rotated it meanwhile; then
 * it reopens). Rotation renames under that lock, so a line is never split or lost, and a
 * killed writer's lock dies with it. A reader holds LOCK_SH on the current file for the
 * whole walk, so no rotation shifts the files under it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "dmbyok/audit.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "dmbyok/macro.h"
#include "dmbyok/message-ids.h"
#include "kms-provider.h"

#define LINE_MAX_BYTES (64U * 1024U)

void dmbyok_audit_settings_done(struct dmbyok_audit_settings *s)
{
	if (!s)
		return;
	free(s->file);
	s->file = NULL;
}

static char *strip(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* "N", "NK", "NM", "NG" (powers of 1024) -> bytes; at least 4 KiB, at most 1 TiB. */
static int parse_size(const char *v, uint64_t *ret)
{
	char *end;
	unsigned long long n;
	unsigned shift = 0;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *v == '-')
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		shift = 10, end++;
	else if (*end == 'M' || *end == 'm')
		shift = 20, end++;
	else if (*end == 'G' || *end == 'g')
		shift = 30, end++;
	if (*end || n > (1ULL << 40) >> shift || (n << shift) < 4096)
		return -EINVAL;
	*ret = n << shift;
	return 0;
}

static int parse_keep(const char *v, unsigned *ret)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || end == v || *end || *v == '-' || n < 1 || n > DMBYOK_AUDIT_MAX_KEEP)
		return -EINVAL;
	*ret = (unsigned)n;
	return 0;
}

int dmbyok_audit_settings_load(struct dmbyok_audit_settings *ret)
{
	const char *conf = secure_getenv("DMBYOK_AUDIT_CONF"),
	           *over = secure_getenv("DMBYOK_AUDIT_FILE");
	_cleanup_fclose_ FILE *f = NULL;
	struct dmbyok_audit_settings s = {
		.max_bytes = DMBYOK_AUDIT_DEFAULT_MAX_BYTES,
		.keep = DMBYOK_AUDIT_DEFAULT_KEEP,
	};
	char line[1024];
	unsigned n = 0;
	int r = 0;

	ENSURE(ret, EINVAL);
	if (!conf || !*conf)
		conf = DMBYOK_AUDIT_CONF_PATH;
	f = fopen(conf, "re");
	if (!f && errno != ENOENT)
		return log_error_errno(errno, "Cannot read %s: %s.", conf, dmbyok_strerror(-errno));
	while (f && fgets(line, sizeof(line), f)) {
		char *k = line, *v, *eq;

		n++;
		if (!strchr(line, '\n') && !feof(f)) {
			r = log_error_errno(EINVAL, "%s:%u: line too long.", conf, n);
			goto out;
		}
		k = strip(k);
		if (!*k || *k == '#')
			continue;
		eq = strchr(k, '=');
		if (!eq) {
			r = log_error_errno(EINVAL, "%s:%u: expected 'key = value'.", conf, n);
			goto out;
		}
		*eq = '\0';
		k = strip(k);
		v = strip(eq + 1);
		if (!strcmp(k, "file")) {
			if (v[0] != '/') {
				r = log_error_errno(EINVAL, "%s:%u: file must be an absolute path.",
				                    conf, n);
				goto out;
			}
			free(s.file);
			s.file = strdup(v);
			if (!s.file) {
				r = log_oom();
				goto out;
			}
		} else if (!strcmp(k, "max-size")) {
			if (parse_size(v, &s.max_bytes) < 0) {
				r = log_error_errno(
				    EINVAL, "%s:%u: max-size '%s' is not a size from 4K to 1024G.",
				    conf, n, v);
				goto out;
			}
		} else if (!strcmp(k, "keep")) {
			if (parse_keep(v, &s.keep) < 0) {
				r = log_error_errno(
				    EINVAL, "%s:%u: keep '%s' is not a number from 1 to %u.", conf,
				    n, v, DMBYOK_AUDIT_MAX_KEEP);
				goto out;
			}
		} else {
			r = log_error_errno(EINVAL,
			                    "%s:%u: unknown setting '%s' (file, max-size, keep).",
			                    conf, n, k);
			goto out;
		}
	}
	if (over && *over) {
		if (over[0] != '/') {
			r = log_error_errno(EINVAL, "DMBYOK_AUDIT_FILE must be an absolute path.");
			goto out;
		}
		free(s.file);
		s.file = strdup(over);
		if (!s.file) {
			r = log_oom();
			goto out;
		}
	}
	*ret = s;
	return 0;
out:
	dmbyok_audit_settings_done(&s);
	return r;
}

static int rotated_name(const char *file, unsigned i, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s.%u", file, i);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Opens the file and locks it, reopening when a rotation replaced it before the lock. */
static int open_locked(const char *file, int open_flags, int lock, int *ret_fd)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		_cleanup_close_ int fd = open(file, open_flags | O_CLOEXEC | O_NOFOLLOW, 0600);
		struct stat a, b;

		if (fd < 0)
			return negative_errno();
		if (flock(fd, lock) < 0 || fstat(fd, &a) < 0)
			return negative_errno();
		if (stat(file, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			*ret_fd = fd;
			fd = -1;
			return 0;
		}
		/* Rotated between our open and our lock: the name is someone else's now. */
	}
	return -EBUSY;
}

/* FILE.keep goes, FILE.i becomes FILE.i+1, FILE becomes FILE.1. Called under LOCK_EX. */
static int rotate(const char *file, unsigned keep)
{
	char from[PATH_MAX], to[PATH_MAX];

	for (unsigned i = keep; i >= 1; i--) {
		if (i == 1) {
			if (strlen(file) >= sizeof(from))
				return -ENAMETOOLONG;
			strcpy(from, file);
		} else {
			GUARD(rotated_name(file, i - 1, from, sizeof(from)));
		}
		GUARD(rotated_name(file, i, to, sizeof(to)));
		if (rename(from, to) < 0 && errno != ENOENT)
			return negative_errno();
	}
	return 0;
}

static int make_parent(const char *file)
{
	_cleanup_free_ char *dir = strdup(file);
	char *slash;

	ENSURE_ALLOC(dir);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return negative_errno();
	return 0;
}

int dmbyok_audit_file_append(const struct dmbyok_audit_settings *s, const char *line)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t len;
	struct stat st;

	ENSURE(s && s->file && line, EINVAL);
	len = strlen(line);
	ENSURE(len > 0 && len < LINE_MAX_BYTES && !memchr(line, '\n', len), EINVAL);
	GUARD(make_parent(s->file));
	GUARD(open_locked(s->file, O_WRONLY | O_APPEND | O_CREAT, LOCK_EX, &fd));
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (st.st_size > 0 && (uint64_t)st.st_size + len + 1 > s->max_bytes) {
		int fresh = -1;

		GUARD(rotate(s->file, s->keep));
		/* The new file is locked before the old one's waiters get their turn (they then
		 * find the name moved and reopen). On failure the old one is closed by cleanup. */
		GUARD(open_locked(s->file, O_WRONLY | O_APPEND | O_CREAT, LOCK_EX, &fresh));
		closep(&fd);
		fd = fresh;
	}
	/* One write of the whole line: O_APPEND places it whole at the end. */
	buf = malloc(len + 1);
	ENSURE_ALLOC(buf);
	memcpy(buf, line, len);
	buf[len] = '\n';
	for (size_t done = 0; done < len + 1;) {
		ssize_t n = write(fd, buf + done, len + 1 - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? negative_errno() : -EIO;
		done += (size_t)n;
	}
	if (fdatasync(fd) < 0)
		return negative_errno();
	return 0;
}

static int walk_one(const char *path, int (*fn)(json_object *, void *), void *userdata,
                    unsigned *skipped)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (!f)
		return errno == ENOENT ? 0 : negative_errno();
	while ((n = getline(&line, &cap, f)) >= 0) {
		json_object *j = json_tokener_parse(line);
		int r;

		if (!j || !json_object_is_type(j, json_type_object)) {
			json_object_put(j);
			(*skipped)++;
			continue;
		}
		r = fn(j, userdata);
		json_object_put(j);
		if (r < 0)
			return r;
	}
	return 0;
}

int dmbyok_audit_file_foreach(const struct dmbyok_audit_settings *s,
                              int (*fn)(json_object *entry, void *userdata), void *userdata,
                              unsigned *ret_skipped)
{
	_cleanup_close_ int fd = -1;
	char path[PATH_MAX];
	unsigned skipped = 0;
	int r;

	ENSURE(s && s->file && fn, EINVAL);
	r = open_locked(s->file, O_RDONLY, LOCK_SH, &fd);
	if (r == -ENOENT)
		fd = -1; /* nothing written yet, or only rotated copies */
	else if (r < 0)
		return r;
	for (unsigned i = s->keep; i >= 1; i--) {
		GUARD(rotated_name(s->file, i, path, sizeof(path)));
		GUARD(walk_one(path, fn, userdata, &skipped));
	}
	GUARD(walk_one(s->file, fn, userdata, &skipped));
	if (ret_skipped)
		*ret_skipped = skipped;
	return 0;
}

/* ---- the KMS layer's side: one line per call ---- */

static pthread_once_t settings_once = PTHREAD_ONCE_INIT;
static struct dmbyok_audit_settings settings;
static int settings_result;
static atomic_bool warned;

static void settings_load_once(void)
{
	settings_result = dmbyok_audit_settings_load(&settings);
}

static int add_string(json_object *o, const char *k, const char *v)
{
	json_object *s;

	if (!v || !*v)
		return 0;
	s = json_object_new_string(v);
	ENSURE_ALLOC(s);
	if (json_object_object_add(o, k, s) < 0) {
		json_object_put(s);
		return -ENOMEM;
	}
	return 0;
}

static int add_int(json_object *o, const char *k, int64_t v)
{
	json_object *i = json_object_new_int64(v);

	ENSURE_ALLOC(i);
	if (json_object_object_add(o, k, i) < 0) {
		json_object_put(i);
		return -ENOMEM;
	}
	return 0;
}

static int audit_line(const struct kms_audit *a, char **ret)
{
	json_object *o = json_object_new_object();
	struct timespec ts;
	struct tm tm;
	char when[64];
	int r = 0;

	ENSURE_ALLOC(o);
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	(void)gmtime_r(&ts.tv_sec, &tm);
	(void)snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	               tm.tm_sec, ts.tv_nsec / 1000000L);
	if ((r = add_string(o, "time", when)) < 0 ||
	    (r = add_string(o, "program", program_invocation_short_name)) < 0 ||
	    (r = add_int(o, "pid", getpid())) < 0 ||
	    (r = add_string(o, "operation", a->operation)) < 0 ||
	    (r = add_string(o, "provider", a->provider)) < 0 ||
	    (r = add_string(o, "region", a->region)) < 0 ||
	    (r = add_string(o, "key_id", a->key_id)) < 0 ||
	    (r = add_string(o, "key_arn", a->key_arn)) < 0)
		goto out;
	if (a->context) {
		json_object *c = json_object_get(a->context);

		if (json_object_object_add(o, "encryption_context", c) < 0) {
			json_object_put(c);
			r = -ENOMEM;
			goto out;
		}
	}
	if ((r = add_string(o, "result", dmbyok_error_class_name(dmbyok_error_class(a->result)))) <
	        0 ||
	    (r = add_int(o, "errno", a->result < 0 ? -a->result : 0)) < 0 ||
	    (r = add_int(o, "latency_ms", (int64_t)a->latency_ms)) < 0 ||
	    (r = add_string(o, "request_id", a->request_id)) < 0 ||
	    (r = add_string(o, "principal", a->principal)) < 0 ||
	    (r = add_string(o, "detail", a->result < 0 ? a->detail : NULL)) < 0)
		goto out;
	*ret = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                                    JSON_C_TO_STRING_NOSLASHESCAPE));
	r = *ret ? 0 : -ENOMEM;
out:
	json_object_put(o);
	return r;
}

void dmbyok_kms_audit_file(const struct kms_audit *a)
{
	_cleanup_free_ char *line = NULL;
	int r;

	(void)pthread_once(&settings_once, settings_load_once);
	r = settings_result;
	if (r == 0 && !settings.file)
		return;
	if (r == 0)
		r = audit_line(a, &line);
	if (r == 0)
		r = dmbyok_audit_file_append(&settings, line);
	/* The call itself stands: the journal has its entry. Say so once per process. */
	if (r < 0 && !atomic_exchange(&warned, true))
		log_warning_errno(
		    r,
		    "Cannot append to the audit file %s: %s. The journal still has each KMS call.",
		    settings.file ? settings.file : DMBYOK_AUDIT_CONF_PATH, dmbyok_strerror(r));
}

/* ---- reading the journal's entries in the file's shape ---- */

static void journal_closep(sd_journal **j)
{
	if (*j)
		sd_journal_close(*j);
}

/* A field's value (after "NAME="), or NULL; valid until the next sd_journal call. */
static const char *journal_field(sd_journal *j, const char *name, char *buf, size_t size)
{
	const void *data;
	size_t len, n = strlen(name);

	if (sd_journal_get_data(j, name, &data, &len) < 0 || len <= n + 1)
		return NULL;
	len -= n + 1;
	if (len >= size)
		len = size - 1;
	memcpy(buf, (const char *)data + n + 1, len);
	buf[len] = '\0';
	return buf;
}

static int entry_from_journal(sd_journal *j, json_object **ret)
{
	static const struct {
		const char *field, *key;
		bool number;
	} map[] = {
		{ "SYSLOG_IDENTIFIER", "program", false },
		{ "_PID", "pid", true },
		{ "OPERATION", "operation", false },
		{ "PROVIDER", "provider", false },
		{ "REGION", "region", false },
		{ "KEY_ID", "key_id", false },
		{ "KEY_ARN", "key_arn", false },
		{ "RESULT", "result", false },
		{ "ERRNO", "errno", true },
		{ "LATENCY_MS", "latency_ms", true },
		{ "REQUEST_ID", "request_id", false },
		{ "PRINCIPAL", "principal", false },
		{ "DETAIL", "detail", false },
	};
	json_object *o = json_object_new_object();
	char buf[4096], when[64];
	const char *v;
	uint64_t usec;
	struct tm tm;
	time_t secs;
	int r = 0;

	ENSURE_ALLOC(o);
	if (sd_journal_get_realtime_usec(j, &usec) >= 0) {
		secs = (time_t)(usec / 1000000ULL);
		(void)gmtime_r(&secs, &tm);
		(void)snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
		               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		               tm.tm_sec, (unsigned)(usec % 1000000ULL / 1000ULL));
		r = add_string(o, "time", when);
	}
	for (size_t i = 0; r == 0 && i < ELEMENTSOF(map); i++) {
		v = journal_field(j, map[i].field, buf, sizeof(buf));
		if (!v)
			continue;
		r = map[i].number ? add_int(o, map[i].key, strtoll(v, NULL, 10))
		                  : add_string(o, map[i].key, v);
	}
	if (r == 0 && (v = journal_field(j, "ENCRYPTION_CONTEXT", buf, sizeof(buf)))) {
		json_object *c = json_tokener_parse(v);

		if (c && json_object_object_add(o, "encryption_context", c) < 0) {
			json_object_put(c);
			r = -ENOMEM;
		}
	}
	if (r == 0 && !json_object_object_get_ex(o, "errno", NULL))
		r = add_int(o, "errno", 0);
	if (r < 0) {
		json_object_put(o);
		return r;
	}
	*ret = o;
	return 0;
}

int dmbyok_audit_journal_foreach(uint64_t since_usec, int (*fn)(json_object *entry, void *userdata),
                                 void *userdata)
{
	_cleanup_(journal_closep) sd_journal *j = NULL;
	int r;

	ENSURE(fn, EINVAL);
	r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
	if (r < 0)
		return r;
	r = sd_journal_add_match(j, "MESSAGE_ID=" DMBYOK_MESSAGE_KMS_CALL, 0);
	if (r < 0)
		return r;
	r = since_usec ? sd_journal_seek_realtime_usec(j, since_usec) : sd_journal_seek_head(j);
	if (r < 0)
		return r;
	while ((r = sd_journal_next(j)) > 0) {
		json_object *e = NULL;

		GUARD(entry_from_journal(j, &e));
		r = fn(e, userdata);
		json_object_put(e);
		if (r < 0)
			return r;
	}
	return r;
}

int dmbyok_audit_entry_time(json_object *entry, uint64_t *ret_usec)
{
	json_object *t;
	struct tm tm = {};
	unsigned ms = 0;
	const char *s, *end;

	ENSURE(entry && ret_usec, EINVAL);
	if (!json_object_object_get_ex(entry, "time", &t) ||
	    !json_object_is_type(t, json_type_string))
		return -EINVAL;
	s = json_object_get_string(t);
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return -EINVAL;
	if (*end == '.') {
		char *e2;

		ms = (unsigned)strtoul(end + 1, &e2, 10);
		end = e2;
	}
	if (strcmp(end, "Z") != 0 || ms > 999)
		return -EINVAL;
	*ret_usec = (uint64_t)timegm(&tm) * 1000000ULL + ms * 1000ULL;
	return 0;
}
