/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd's settings from the config file and the command line. config.h states the file's
 * syntax and the rules; every value goes through dmbyok_agent_config_set(), so the file
 * and the options are checked by the same code with the same words.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/macro.h"

#define DAY_S (24U * 3600U)
/* Long enough for any path (PATH_MAX) after its key; longer lines are refused, not cut. */
#define LINE_MAX_BYTES 8192

enum kind {
	KIND_SECONDS,   /* uint64_t ms */
	KIND_SECONDS32, /* unsigned ms */
	KIND_COUNT,     /* unsigned */
	KIND_BOOL,      /* bool */
	KIND_STRING,    /* char * */
	KIND_HOOK,      /* char *: a program we run as root */
	KIND_METRICS,   /* char *: a .prom file */
	KIND_SOCKET,    /* char *: a unix socket path */
	KIND_PATHS,     /* char *: absolute paths separated by ':' */
};

struct setting {
	const char *key;
	enum kind kind;
	size_t offset;
	unsigned min, max; /* seconds or count */
	const char *unit;  /* counts: what is counted; times with min 0: what 0 means */
};

#define FIELD(f) offsetof(struct dmbyok_agent_config, f)

/* The ranges of dmbyokd's options (and keywatch's, which validate() applies again). */
static const struct setting settings[] = {
	{ "check-interval", KIND_SECONDS, FIELD(watch.check_interval_ms), 1, 3600, NULL },
	{ "revoke-confirmations", KIND_COUNT, FIELD(watch.revoke_confirmations), 1, 100,
	  "answers" },
	{ "restore-interval", KIND_SECONDS, FIELD(watch.restore_interval_ms), 1, 3600, NULL },
	{ "teardown-after", KIND_SECONDS, FIELD(watch.teardown_after_ms), 0, 30 * DAY_S, "never" },
	{ "fail-closed-after", KIND_SECONDS, FIELD(watch.fail_closed_after_ms), 0, 30 * DAY_S,
	  "off" },
	{ "lock-timeout", KIND_SECONDS32, FIELD(lock_timeout_ms), 1, 3600, NULL },
	{ "region", KIND_STRING, FIELD(region), 0, 0, NULL },
	{ "endpoint", KIND_STRING, FIELD(endpoint), 0, 0, NULL },
	{ "profile", KIND_STRING, FIELD(profile), 0, 0, NULL },
	{ "ca-bundle", KIND_STRING, FIELD(ca_bundle), 0, 0, NULL },
	{ "on-revoke", KIND_HOOK, FIELD(on_revoke), 0, 0, NULL },
	{ "on-restore", KIND_HOOK, FIELD(on_restore), 0, 0, NULL },
	{ "metrics-file", KIND_METRICS, FIELD(metrics_file), 0, 0, NULL },
	{ "control-socket", KIND_SOCKET, FIELD(control_socket), 0, 0, NULL },
	{ "debug", KIND_BOOL, FIELD(debug), 0, 0, NULL },
	{ "volumes", KIND_STRING, FIELD(volumes), 0, 0, NULL },
	{ "attach-timeout", KIND_SECONDS32, FIELD(attach_timeout_ms), 0, 3600, "at once" },
	{ "attach-concurrency", KIND_COUNT, FIELD(attach_concurrency), 1, 256, "unwraps" },
	{ "auto-attach", KIND_BOOL, FIELD(auto_attach), 0, 0, NULL },
	{ "policy-data-paths", KIND_PATHS, FIELD(policy_data_paths), 0, 0, NULL },
	{ "policy-unmount", KIND_BOOL, FIELD(policy_unmount), 0, 0, NULL },
};

static char **string_field(struct dmbyok_agent_config *c, const struct setting *s)
{
	return (char **)((char *)c + s->offset);
}

void dmbyok_agent_config_init(struct dmbyok_agent_config *c)
{
	*c = (struct dmbyok_agent_config){ .lock_timeout_ms = DMBYOK_LOCK_TIMEOUT_MS,
		                           .attach_timeout_ms = 30000,
		                           .attach_concurrency = 32 };
	dmbyok_keywatch_config_default(&c->watch);
}

void dmbyok_agent_config_done(struct dmbyok_agent_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < ELEMENTSOF(settings); i++)
		if (settings[i].kind >= KIND_STRING)
			free(*string_field(c, &settings[i]));
	dmbyok_agent_config_init(c);
}

static const struct setting *setting_find(const char *key)
{
	for (size_t i = 0; i < ELEMENTSOF(settings); i++)
		if (!strcmp(settings[i].key, key))
			return &settings[i];
	return NULL;
}

/*
 * Who the messages blame: "FILE:LINE: key" for the file, "--key" for an option (which
 * already names the key), the key alone otherwise.
 */
static void blame(char *buf, size_t n, const char *where, const char *key)
{
	if (!where)
		snprintf(buf, n, "%s", key);
	else if (where[0] == '-')
		snprintf(buf, n, "%s", where);
	else
		snprintf(buf, n, "%s: %s", where, key);
}

/* Whole seconds with an optional unit: 30, 30s, 30sec, 5min, 2h, 1d. */
static int parse_seconds(const char *s, uint64_t *ret_s)
{
	static const struct {
		const char *suffix;
		unsigned factor;
	} units[] = {
		{ "", 1 }, { "s", 1 }, { "sec", 1 }, { "min", 60 }, { "h", 3600 }, { "d", DAY_S },
	};
	unsigned long long v;
	char *end = NULL;

	if (*s < '0' || *s > '9')
		return -EINVAL; /* strtoull would take blanks, signs and "-1" */
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || !end)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(units); i++)
		if (!strcmp(end, units[i].suffix)) {
			if (__builtin_mul_overflow(v, (unsigned long long)units[i].factor, &v))
				return -EINVAL;
			*ret_s = v;
			return 0;
		}
	return -EINVAL;
}

static int parse_count(const char *s, unsigned long long *ret)
{
	char *end = NULL;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*ret = strtoull(s, &end, 10);
	return errno || !end || *end ? -EINVAL : 0;
}

static int parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
		if (!strcasecmp(s, yes[i])) {
			*ret = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

static bool has_control_chars(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/*
 * Who may own a file that decides what runs as root: root, or ourselves when we are not
 * root (tests, a developer's agent): a file another user owns could be rewritten by them.
 */
static bool owner_trusted(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* A hook runs as root: whoever can change the program can run anything as root. */
int dmbyok_agent_check_hook(const char *path, const char *who)
{
	struct stat st;

	if (path[0] != '/')
		return log_error_errno(EINVAL, "%s wants an absolute path, not \"%.200s\".", who,
		                       path);
	if (stat(path, &st) < 0) {
		int r = negative_errno();

		return log_error_errno(EINVAL, "%s: cannot use %.200s: %s.", who, path,
		                       strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		return log_error_errno(EINVAL, "%s: %.200s is not a regular file.", who, path);
	if (!(st.st_mode & 0111) || access(path, X_OK) < 0)
		return log_error_errno(EINVAL, "%s: %.200s is not executable.", who, path);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return log_error_errno(EINVAL,
		                       "%s: %.200s is writable by group or others (mode %04o), and "
		                       "it would run as root.",
		                       who, path, (unsigned)(st.st_mode & 07777));
	if (!owner_trusted(st.st_uid))
		return log_error_errno(EINVAL,
		                       "%s: %.200s is owned by uid %u, not root, and it would run "
		                       "as root.",
		                       who, path, (unsigned)st.st_uid);
	return 0;
}

static int check_metrics_path(const char *path, const char *who)
{
	const char *base = strrchr(path, '/');
	size_t n = base ? strlen(base + 1) : 0;

	/* node_exporter's textfile collector reads *.prom files of one directory. */
	if (path[0] != '/' || n <= strlen(".prom") || strcmp(base + 1 + n - 5, ".prom"))
		return log_error_errno(EINVAL,
		                       "%s wants an absolute path to a file named *.prom, not "
		                       "\"%.200s\".",
		                       who, path);
	if (n > NAME_MAX - 8) /* room for the temporary file's name beside it */
		return log_error_errno(EINVAL, "%s: the file name of %.200s is too long.", who,
		                       path);
	return 0;
}

static int check_socket_path(const char *path, const char *who)
{
	if (path[0] != '/')
		return log_error_errno(EINVAL, "%s wants an absolute path, not \"%.200s\".", who,
		                       path);
	if (strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
		return log_error_errno(
		    EINVAL, "%s: %.200s is too long for a socket path (%zu bytes at most).", who,
		    path, sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
	return 0;
}

/* "/srv:/var/lib/db": each absolute, none empty; "/" alone would put everything in scope. */
static int check_paths(const char *value, const char *who)
{
	for (const char *p = value; *p;) {
		size_t n = strcspn(p, ":");

		if (n == 0 || p[0] != '/' || (n == 1 && p[0] == '/'))
			return log_error_errno(
			    EINVAL,
			    "%s wants absolute paths other than / separated by ':' "
			    "(/srv:/var/lib/db), not \"%.80s\".",
			    who, value);
		p += n;
		if (*p == ':' && *++p == '\0')
			return log_error_errno(EINVAL, "%s: \"%.80s\" ends with ':'.", who, value);
	}
	return 0;
}

static int set_string(struct dmbyok_agent_config *c, const struct setting *s, const char *value,
                      const char *who)
{
	char **field = string_field(c, s), *copy = NULL;

	if (has_control_chars(value))
		return log_error_errno(EINVAL, "%s: the value contains control characters.", who);
	/* Empty: back to unset, so the command line can undo what the file set. */
	if (value[0]) {
		switch (s->kind) {
		case KIND_HOOK:
			GUARD(dmbyok_agent_check_hook(value, who));
			break;
		case KIND_METRICS:
			GUARD(check_metrics_path(value, who));
			break;
		case KIND_SOCKET:
			GUARD(check_socket_path(value, who));
			break;
		case KIND_PATHS:
			GUARD(check_paths(value, who));
			break;
		default:
			break;
		}
		copy = strdup(value);
		if (!copy)
			return log_oom();
	}
	free(*field);
	*field = copy;
	return 0;
}

int dmbyok_agent_config_set(struct dmbyok_agent_config *c, const char *key, const char *value,
                            const char *where)
{
	const struct setting *s;
	char who[512];
	unsigned long long v;
	uint64_t secs;
	bool b;

	if (!key || !value)
		return log_error_errno(EINVAL, "%s: no setting given.", where ? where : "config");
	s = setting_find(key);
	if (!s)
		return log_error_errno(EINVAL, "%s: unknown setting \"%.80s\".",
		                       where ? where : "config", key);
	blame(who, sizeof(who), where, key);

	switch (s->kind) {
	case KIND_SECONDS:
	case KIND_SECONDS32:
		if (parse_seconds(value, &secs) < 0 || secs < s->min || secs > s->max) {
			if (s->min == 0)
				return log_error_errno(
				    EINVAL,
				    "%s wants 0 (%s) or 1 to %u seconds (%u days; or with a "
				    "unit: s, min, h, d), not \"%.80s\".",
				    who, s->unit, s->max, s->max / DAY_S, value);
			return log_error_errno(EINVAL,
			                       "%s wants %u to %u seconds (or with a unit: s, min, "
			                       "h, d), not \"%.80s\".",
			                       who, s->min, s->max, value);
		}
		if (s->kind == KIND_SECONDS)
			*(uint64_t *)((char *)c + s->offset) = secs * 1000;
		else
			*(unsigned *)((char *)c + s->offset) = (unsigned)(secs * 1000);
		return 0;
	case KIND_COUNT:
		if (parse_count(value, &v) < 0 || v < s->min || v > s->max)
			return log_error_errno(EINVAL, "%s wants %u to %u %s, not \"%.80s\".", who,
			                       s->min, s->max, s->unit, value);
		*(unsigned *)((char *)c + s->offset) = (unsigned)v;
		return 0;
	case KIND_BOOL:
		if (parse_bool(value, &b) < 0)
			return log_error_errno(EINVAL,
			                       "%s wants yes or no (true/false, on/off, 1/0), not "
			                       "\"%.80s\".",
			                       who, value);
		*(bool *)((char *)c + s->offset) = b;
		return 0;
	default:
		return set_string(c, s, value, who);
	}
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	return s;
}

/* `#` at the start or after a blank begins a comment; elsewhere it belongs to the value. */
static void strip_comment(char *line)
{
	for (char *p = line; *p; p++)
		if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			return;
		}
}

/* One `key = value` line; `seen` holds the line number that set each key (0: none yet). */
static int parse_line(struct dmbyok_agent_config *c, char *line, const char *path, unsigned line_no,
                      unsigned seen[])
{
	const struct setting *s;
	char where[PATH_MAX + 32], *eq, *key, *value;

	snprintf(where, sizeof(where), "%s:%u", path, line_no);
	strip_comment(line);
	key = trim(line);
	if (!key[0])
		return 0;
	eq = strchr(key, '=');
	if (!eq)
		return log_error_errno(EINVAL, "%s: expected \"key = value\", not \"%.80s\".",
		                       where, key);
	*eq = '\0';
	value = trim(eq + 1);
	key = trim(key);
	if (!key[0])
		return log_error_errno(EINVAL, "%s: no key before \"=\".", where);
	s = setting_find(key);
	if (!s) {
		char alt[64];
		size_t n = strlen(key);

		/* The common slip: systemd-style underscores for dashes. */
		if (n < sizeof(alt)) {
			for (size_t i = 0; i <= n; i++)
				alt[i] = key[i] == '_' ? '-' : key[i];
			if (strcmp(alt, key) && setting_find(alt))
				return log_error_errno(
				    EINVAL, "%s: unknown key \"%s\" (did you mean \"%s\"?).", where,
				    key, alt);
		}
		return log_error_errno(EINVAL, "%s: unknown key \"%.80s\".", where, key);
	}
	if (seen[s - settings])
		return log_error_errno(EINVAL, "%s: %s is already given on line %u.", where, s->key,
		                       seen[s - settings]);
	seen[s - settings] = line_no;
	return dmbyok_agent_config_set(c, s->key, value, where);
}

/* The file names programs run as root: only root (or, in tests, we) may be able to change it. */
static int check_file(int fd, const char *path)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		int r = negative_errno();

		return log_error_errno(r, "Cannot stat %s: %s.", path, strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		return log_error_errno(EPERM, "%s is not a regular file.", path);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return log_error_errno(EPERM,
		                       "%s is writable by group or others (mode %04o): refusing "
		                       "it, since it names programs that run as root (chmod go-w).",
		                       path, (unsigned)(st.st_mode & 07777));
	if (!owner_trusted(st.st_uid))
		return log_error_errno(
		    EPERM,
		    "%s is owned by uid %u, not root: refusing it, since it names "
		    "programs that run as root.",
		    path, (unsigned)st.st_uid);
	return 0;
}

int dmbyok_agent_check_trusted_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), r;

	if (fd < 0)
		return log_error_errno(errno, "Cannot open %s: %m", path);
	r = check_file(fd, path);
	close(fd);
	return r;
}

int dmbyok_agent_config_load(struct dmbyok_agent_config *c, const char *path, bool must_exist)
{
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL;
	unsigned seen[ELEMENTSOF(settings)] = { 0 };
	unsigned line_no = 0;
	size_t cap = 0;
	ssize_t n;
	int fd, r = 0;

	/* O_NONBLOCK: a FIFO put in its place must not hang the start; check_file refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int e = negative_errno();

		if (e == -ENOENT && !must_exist) {
			log_debug("No %s: the defaults and the command line apply.", path);
			return 0;
		}
		return log_error_errno(e, "Cannot open %s: %s.", path, strerror(-e));
	}
	f = fdopen(fd, "re");
	if (!f) {
		close(fd);
		return log_oom();
	}
	GUARD(check_file(fd, path));

	/* Every bad line is reported, not only the first: one round of fixes. */
	while ((n = getline(&line, &cap, f)) >= 0) {
		int q;

		line_no++;
		if (n > LINE_MAX_BYTES)
			q = log_error_errno(EINVAL, "%s:%u: line longer than %u bytes.", path,
			                    line_no, LINE_MAX_BYTES);
		else if (strlen(line) != (size_t)n)
			q = log_error_errno(EINVAL, "%s:%u: NUL byte in the line.", path, line_no);
		else
			q = parse_line(c, line, path, line_no, seen);
		if (q == -ENOMEM)
			return q;
		if (q < 0 && r == 0)
			r = q;
	}
	if (ferror(f))
		return log_error_errno(EIO, "Cannot read %s.", path);
	return r;
}

int dmbyok_agent_config_validate(const struct dmbyok_agent_config *c)
{
	/* keywatch has the same rule; this one speaks in the settings' own names. */
	if (c->watch.fail_closed_after_ms != 0 &&
	    c->watch.fail_closed_after_ms < 2 * c->watch.check_interval_ms)
		return log_error_errno(EINVAL,
		                       "fail-closed-after (%" PRIu64 " s) must be 0 (off) or at "
		                       "least twice check-interval (%" PRIu64 " s).",
		                       c->watch.fail_closed_after_ms / 1000,
		                       c->watch.check_interval_ms / 1000);
	GUARD(dmbyok_keywatch_config_validate(&c->watch));
	if (c->lock_timeout_ms < 1000 || c->lock_timeout_ms > 3600 * 1000)
		return log_error_errno(EINVAL, "lock-timeout must be 1 to 3600 s, not %u ms.",
		                       c->lock_timeout_ms);
	if (c->metrics_file && c->control_socket && !strcmp(c->metrics_file, c->control_socket))
		return log_error_errno(EINVAL,
		                       "metrics-file and control-socket are the same path (%s).",
		                       c->metrics_file);
	if (c->metrics_file)
		GUARD(check_metrics_path(c->metrics_file, "metrics-file"));
	if (c->control_socket)
		GUARD(check_socket_path(c->control_socket, "control-socket"));
	/* Again: the fields may have been set directly, and a hook may have changed since. */
	if (c->on_revoke)
		GUARD(dmbyok_agent_check_hook(c->on_revoke, "on-revoke"));
	if (c->on_restore)
		GUARD(dmbyok_agent_check_hook(c->on_restore, "on-restore"));
	return 0;
}
