/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd's settings: every key through the same setter the command line uses, its range
 * at both ends, the file's syntax and its errors (checked in the logged message: FILE:LINE
 * and the reason), the ownership and mode rules of the file and of the hooks, precedence
 * (file, then options), and the shipped example: its keys are exactly the real ones, and
 * uncommented it gives exactly the defaults it claims.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

#define S(x) ((uint64_t)(x)*1000)

static const char *const all_keys[] = {
	"check-interval",
	"revoke-confirmations",
	"restore-interval",
	"teardown-after",
	"fail-closed-after",
	"lock-timeout",
	"region",
	"endpoint",
	"profile",
	"ca-bundle",
	"on-revoke",
	"on-restore",
	"metrics-file",
	"control-socket",
	"debug",
	"volumes",
	"attach-timeout",
	"attach-concurrency",
	"auto-attach",
	"policy-data-paths",
	"policy-unmount",
};

static char tmpdir[] = "/tmp/dmbyok-test-config.XXXXXX";
static int saved_stderr = -1;

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static char *tmp_path(const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
	return p;
}

/* A file in the test directory with `text` and `mode` (exactly: chmod after the umask). */
static char *make_file(const char *name, const char *text, mode_t mode)
{
	char *p = tmp_path(name);
	FILE *f = fopen(p, "we");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(p, mode), 0);
	return p;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t cap = 0;

	assert_non_null(f);
	if (getdelim(&buf, &cap, '\0', f) < 0) {
		free(buf);
		buf = strdup("");
	}
	fclose(f);
	assert_non_null(buf);
	return buf;
}

/* Everything logged between start and end, for checking what the user is told. */
static void capture_start(void)
{
	_cleanup_free_ char *p = tmp_path("stderr");
	int fd;

	fflush(stderr);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
}

static char *capture_end(void)
{
	_cleanup_free_ char *p = tmp_path("stderr");

	fflush(stderr);
	assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
	close(saved_stderr);
	saved_stderr = -1;
	return read_all(p);
}

/* expr returns err and logs a message containing each needle. */
#define assert_fails(expr, err, ...)                                                               \
	do {                                                                                       \
		const char *const _needles[] = { __VA_ARGS__ };                                    \
		int _r;                                                                            \
		char *_log;                                                                        \
		capture_start();                                                                   \
		_r = (expr);                                                                       \
		_log = capture_end();                                                              \
		if (_r != (err))                                                                   \
			fail_msg("%s returned %d, not %d; it logged:\n%s", #expr, _r, (err),       \
			         _log);                                                            \
		for (size_t _i = 0; _i < ELEMENTSOF(_needles); _i++)                               \
			if (!strstr(_log, _needles[_i]))                                           \
				fail_msg("%s logged\n%swhich does not say \"%s\"", #expr, _log,    \
				         _needles[_i]);                                            \
		free(_log);                                                                        \
	} while (0)

/* A bad value for key, given as an option: -EINVAL, the option named in the message. */
static void assert_bad(struct dmbyok_agent_config *c, const char *key, const char *value)
{
	char opt[64], *log;
	int r;

	snprintf(opt, sizeof(opt), "--%s", key);
	capture_start();
	r = dmbyok_agent_config_set(c, key, value, opt);
	log = capture_end();
	if (r != -EINVAL || !strstr(log, opt))
		fail_msg("%s \"%s\": returned %d and logged\n%s", opt, value, r, log);
	free(log);
}

static void set_ok(struct dmbyok_agent_config *c, const char *key, const char *value)
{
	char opt[64];

	snprintf(opt, sizeof(opt), "--%s", key);
	assert_int_equal(dmbyok_agent_config_set(c, key, value, opt), 0);
}

static void assert_str_or_null(const char *got, const char *want)
{
	if (!want)
		assert_null(got);
	else {
		assert_non_null(got);
		assert_string_equal(got, want);
	}
}

static void assert_config_equal(const struct dmbyok_agent_config *a,
                                const struct dmbyok_agent_config *b)
{
	assert_int_equal(a->watch.check_interval_ms, b->watch.check_interval_ms);
	assert_int_equal(a->watch.revoke_confirmations, b->watch.revoke_confirmations);
	assert_int_equal(a->watch.restore_interval_ms, b->watch.restore_interval_ms);
	assert_int_equal(a->watch.teardown_after_ms, b->watch.teardown_after_ms);
	assert_int_equal(a->watch.fail_closed_after_ms, b->watch.fail_closed_after_ms);
	assert_int_equal(a->lock_timeout_ms, b->lock_timeout_ms);
	assert_str_or_null(a->region, b->region);
	assert_str_or_null(a->endpoint, b->endpoint);
	assert_str_or_null(a->profile, b->profile);
	assert_str_or_null(a->ca_bundle, b->ca_bundle);
	assert_str_or_null(a->on_revoke, b->on_revoke);
	assert_str_or_null(a->on_restore, b->on_restore);
	assert_str_or_null(a->metrics_file, b->metrics_file);
	assert_str_or_null(a->control_socket, b->control_socket);
	assert_int_equal(a->debug, b->debug);
	assert_str_or_null(a->policy_data_paths, b->policy_data_paths);
	assert_int_equal(a->policy_unmount, b->policy_unmount);
}

static void test_defaults(void **state)
{
	struct dmbyok_agent_config c;
	struct dmbyok_keywatch_config kw;

	(void)state;
	dmbyok_agent_config_init(&c);
	dmbyok_keywatch_config_default(&kw);
	assert_int_equal(c.watch.check_interval_ms, kw.check_interval_ms);
	assert_int_equal(c.watch.revoke_confirmations, kw.revoke_confirmations);
	assert_int_equal(c.watch.restore_interval_ms, kw.restore_interval_ms);
	assert_int_equal(c.watch.teardown_after_ms, kw.teardown_after_ms);
	assert_int_equal(c.watch.fail_closed_after_ms, kw.fail_closed_after_ms);
	assert_int_equal(c.lock_timeout_ms, DMBYOK_LOCK_TIMEOUT_MS);
	assert_null(c.region);
	assert_null(c.endpoint);
	assert_null(c.profile);
	assert_null(c.ca_bundle);
	assert_null(c.on_revoke);
	assert_null(c.on_restore);
	assert_null(c.metrics_file);
	assert_null(c.control_socket);
	assert_false(c.debug);
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);

	/* done: frees, resets to the defaults, may be repeated; NULL is fine. */
	set_ok(&c, "region", "eu-west-1");
	set_ok(&c, "check-interval", "60");
	dmbyok_agent_config_done(&c);
	assert_null(c.region);
	assert_int_equal(c.watch.check_interval_ms, S(10));
	dmbyok_agent_config_done(&c);
	dmbyok_agent_config_done(NULL);
}

/* Time settings: plain seconds and units, both ends of each range. */
static void test_times(void **state)
{
	static const struct {
		const char *key;
		unsigned min, max;
	} times[] = {
		{ "check-interval", 1, 3600 },    { "restore-interval", 1, 3600 },
		{ "teardown-after", 0, 2592000 }, { "fail-closed-after", 0, 2592000 },
		{ "lock-timeout", 1, 3600 },
	};
	static const char *const bad[] = {
		"",
		" 5",
		"5 ",
		"+5",
		"-1",
		"0x10",
		"5m",
		"5ms",
		"5 s",
		"5S",
		"1.5",
		"s",
		"5ss",
		"5minute",
		"1e3",
		"99999999999999999999",
		/* overflows when multiplied */
		"18446744073709551615d",
	};
	struct dmbyok_agent_config c;
	char v[32];

	(void)state;
	dmbyok_agent_config_init(&c);
	for (size_t i = 0; i < ELEMENTSOF(times); i++) {
		const char *k = times[i].key;
		uint64_t got;

#define STORED()                                                                                   \
	(!strcmp(k, "check-interval")      ? c.watch.check_interval_ms                             \
	 : !strcmp(k, "restore-interval")  ? c.watch.restore_interval_ms                           \
	 : !strcmp(k, "teardown-after")    ? c.watch.teardown_after_ms                             \
	 : !strcmp(k, "fail-closed-after") ? c.watch.fail_closed_after_ms                          \
	                                   : (uint64_t)c.lock_timeout_ms)
		snprintf(v, sizeof(v), "%u", times[i].min);
		set_ok(&c, k, v);
		assert_int_equal(STORED(), S(times[i].min));
		snprintf(v, sizeof(v), "%u", times[i].max);
		set_ok(&c, k, v);
		assert_int_equal(STORED(), S(times[i].max));
		snprintf(v, sizeof(v), "%us", times[i].max);
		set_ok(&c, k, v);
		assert_int_equal(STORED(), S(times[i].max));
		got = STORED();
		snprintf(v, sizeof(v), "%u", times[i].max + 1);
		assert_bad(&c, k, v);
		snprintf(v, sizeof(v), "%us", times[i].max + 1);
		assert_bad(&c, k, v);
		if (times[i].min > 0) {
			snprintf(v, sizeof(v), "%u", times[i].min - 1);
			assert_bad(&c, k, v);
		}
		for (size_t j = 0; j < ELEMENTSOF(bad); j++)
			assert_bad(&c, k, bad[j]);
		/* A refused value leaves the setting as it was. */
		assert_int_equal(STORED(), got);
		/* Units. */
		set_ok(&c, k, "1min");
		assert_int_equal(STORED(), S(60));
		set_ok(&c, k, "7sec");
		assert_int_equal(STORED(), S(7));
		set_ok(&c, k, "1h");
		assert_int_equal(STORED(), S(3600));
		if (times[i].max == 2592000) {
			set_ok(&c, k, "30d");
			assert_int_equal(STORED(), S(2592000));
			set_ok(&c, k, "720h");
			assert_int_equal(STORED(), S(2592000));
			assert_bad(&c, k, "31d");
			assert_bad(&c, k, "721h");
		} else {
			assert_bad(&c, k, "2h");
			assert_bad(&c, k, "61min");
			assert_bad(&c, k, "1d");
		}
#undef STORED
	}
	dmbyok_agent_config_done(&c);
}

static void test_counts_and_bools(void **state)
{
	static const char *const yes[] = { "yes", "true", "on", "1", "YES", "True" };
	static const char *const no[] = { "no", "false", "off", "0", "No", "FALSE" };
	struct dmbyok_agent_config c;

	(void)state;
	dmbyok_agent_config_init(&c);
	set_ok(&c, "revoke-confirmations", "1");
	assert_int_equal(c.watch.revoke_confirmations, 1);
	set_ok(&c, "revoke-confirmations", "100");
	assert_int_equal(c.watch.revoke_confirmations, 100);
	set_ok(&c, "revoke-confirmations", "007");
	assert_int_equal(c.watch.revoke_confirmations, 7);
	assert_bad(&c, "revoke-confirmations", "0");
	assert_bad(&c, "revoke-confirmations", "101");
	assert_bad(&c, "revoke-confirmations", "2s"); /* a count, not a time */
	assert_bad(&c, "revoke-confirmations", "-2");
	assert_bad(&c, "revoke-confirmations", "");
	assert_bad(&c, "revoke-confirmations", "4294967298"); /* 2 after a 32-bit wrap */
	assert_int_equal(c.watch.revoke_confirmations, 7);

	for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
		set_ok(&c, "debug", yes[i]);
		assert_true(c.debug);
		set_ok(&c, "debug", no[i]);
		assert_false(c.debug);
	}
	assert_bad(&c, "debug", "");
	assert_bad(&c, "debug", "2");
	assert_bad(&c, "debug", "yess");
	assert_bad(&c, "debug", "y");
	dmbyok_agent_config_done(&c);
}

static void test_strings(void **state)
{
	struct dmbyok_agent_config c;

	(void)state;
	dmbyok_agent_config_init(&c);
	set_ok(&c, "region", "eu-west-1");
	set_ok(&c, "endpoint", "https://kms.eu-west-1.amazonaws.com");
	set_ok(&c, "profile", "dmbyok");
	set_ok(&c, "ca-bundle", "/etc/ssl/kms.pem");
	assert_string_equal(c.region, "eu-west-1");
	assert_string_equal(c.endpoint, "https://kms.eu-west-1.amazonaws.com");
	assert_string_equal(c.profile, "dmbyok");
	assert_string_equal(c.ca_bundle, "/etc/ssl/kms.pem");
	/* Replaced (the old string freed: ASan would tell), then unset by an empty value. */
	set_ok(&c, "region", "us-east-1");
	assert_string_equal(c.region, "us-east-1");
	set_ok(&c, "region", "");
	assert_null(c.region);
	assert_bad(&c, "profile", "a\nb");
	assert_bad(&c, "profile", "a\tb");
	assert_bad(&c, "profile", "a\x7f");
	assert_string_equal(c.profile, "dmbyok");

	/* Unknown keys are refused, named. */
	assert_fails(dmbyok_agent_config_set(&c, "regoin", "x", "--regoin"), -EINVAL, "--regoin",
	             "unknown setting \"regoin\"");
	assert_fails(dmbyok_agent_config_set(&c, NULL, "x", NULL), -EINVAL, "no setting");
	assert_fails(dmbyok_agent_config_set(&c, "region", NULL, NULL), -EINVAL, "no setting");
	/* Every key is known. */
	for (size_t i = 0; i < ELEMENTSOF(all_keys); i++) {
		int r;

		capture_start();
		r = dmbyok_agent_config_set(&c, all_keys[i], "", NULL);
		free(capture_end());
		/* "" is fine for strings, a bad value for the others: never "unknown". */
		if (r < 0) {
			char *log;

			capture_start();
			(void)dmbyok_agent_config_set(&c, all_keys[i], "", NULL);
			log = capture_end();
			assert_null(strstr(log, "unknown"));
			free(log);
		}
	}
	dmbyok_agent_config_done(&c);
}

/* Hooks run as root: only a root-owned (or our own, when not root), safe executable. */
static void test_hooks(void **state)
{
	_cleanup_free_ char *ok = make_file("hook-ok", "#!/bin/sh\nexit 0\n", 0755);
	_cleanup_free_ char *ok2 = make_file("hook-ok2", "#!/bin/sh\nexit 0\n", 0700);
	_cleanup_free_ char *noexec = make_file("hook-noexec", "#!/bin/sh\n", 0644);
	_cleanup_free_ char *gw = make_file("hook-gw", "#!/bin/sh\n", 0775);
	_cleanup_free_ char *ow = make_file("hook-ow", "#!/bin/sh\n", 0757);
	_cleanup_free_ char *missing = tmp_path("hook-missing");
	_cleanup_free_ char *dir = tmp_path("hook-dir");
	struct dmbyok_agent_config c;

	(void)state;
	assert_int_equal(mkdir(dir, 0755), 0);
	dmbyok_agent_config_init(&c);

	set_ok(&c, "on-revoke", ok);
	set_ok(&c, "on-restore", ok2);
	assert_string_equal(c.on_revoke, ok);
	assert_string_equal(c.on_restore, ok2);
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);

	for (int h = 0; h < 2; h++) {
		const char *key = h ? "on-restore" : "on-revoke",
		           *opt = h ? "--on-restore" : "--on-revoke";

		assert_fails(dmbyok_agent_config_set(&c, key, "bin/hook", opt), -EINVAL, opt,
		             "absolute path");
		assert_fails(dmbyok_agent_config_set(&c, key, missing, opt), -EINVAL, opt,
		             "No such file");
		assert_fails(dmbyok_agent_config_set(&c, key, dir, opt), -EINVAL,
		             "not a regular file");
		assert_fails(dmbyok_agent_config_set(&c, key, noexec, opt), -EINVAL,
		             "not executable");
		assert_fails(dmbyok_agent_config_set(&c, key, gw, opt), -EINVAL,
		             "writable by group or others", "0775");
		assert_fails(dmbyok_agent_config_set(&c, key, ow, opt), -EINVAL,
		             "writable by group or others", "0757");
	}
	/* The refused values changed nothing. */
	assert_string_equal(c.on_revoke, ok);
	assert_string_equal(c.on_restore, ok2);

	if (geteuid() == 0) {
		/* Root: a hook another user owns could be rewritten by that user. */
		_cleanup_free_ char *other = make_file("hook-other", "#!/bin/sh\n", 0755);

		assert_int_equal(chown(other, 65534, 65534), 0);
		assert_fails(dmbyok_agent_config_set(&c, "on-revoke", other, "--on-revoke"),
		             -EINVAL, "owned by uid 65534");
	} else {
		/* Not root (a developer's run): our own hooks (above) and root's are trusted. */
		assert_int_equal(dmbyok_agent_config_set(&c, "on-revoke", "/bin/true", NULL), 0);
	}

	/* validate() checks again: the program may have changed since it was set. */
	set_ok(&c, "on-revoke", ok);
	assert_int_equal(chmod(ok, 0777), 0);
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "on-revoke",
	             "writable by group or others");
	assert_int_equal(chmod(ok, 0755), 0);
	assert_int_equal(unlink(ok2), 0);
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "on-restore");
	set_ok(&c, "on-restore", ""); /* unset: no hook */
	assert_null(c.on_restore);
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);
	dmbyok_agent_config_done(&c);
}

static void test_paths(void **state)
{
	struct dmbyok_agent_config c;
	char long_sock[200];

	(void)state;
	dmbyok_agent_config_init(&c);
	set_ok(&c, "metrics-file", "/var/lib/prometheus/node-exporter/dmbyokd.prom");
	assert_string_equal(c.metrics_file, "/var/lib/prometheus/node-exporter/dmbyokd.prom");
	set_ok(&c, "metrics-file", "/a.prom");
	assert_fails(dmbyok_agent_config_set(&c, "metrics-file", "dmbyokd.prom", "--metrics-file"),
	             -EINVAL, "--metrics-file", "*.prom");
	assert_bad(&c, "metrics-file", "/var/lib/dmbyokd.txt");
	assert_bad(&c, "metrics-file", "/var/lib/dmbyokd.prom.bak");
	assert_bad(&c, "metrics-file", "/var/lib/.prom");
	assert_bad(&c, "metrics-file", "/var/lib/prom/");
	assert_bad(&c, "metrics-file", "/var/lib/x.prom\n");
	assert_string_equal(c.metrics_file, "/a.prom");
	set_ok(&c, "metrics-file", "");
	assert_null(c.metrics_file);

	set_ok(&c, "control-socket", "/run/dmbyok/other.sock");
	assert_string_equal(c.control_socket, "/run/dmbyok/other.sock");
	assert_bad(&c, "control-socket", "run/x.sock");
	/* sun_path holds 107 characters and the NUL. */
	memset(long_sock, 'a', sizeof(long_sock));
	long_sock[0] = '/';
	long_sock[108] = '\0';
	assert_fails(dmbyok_agent_config_set(&c, "control-socket", long_sock, "--control-socket"),
	             -EINVAL, "too long");
	long_sock[107] = '\0';
	set_ok(&c, "control-socket", long_sock);
	dmbyok_agent_config_done(&c);
}

/* The rules between settings, and fields set directly by a caller. */
static void test_validate(void **state)
{
	struct dmbyok_agent_config c;

	(void)state;
	dmbyok_agent_config_init(&c);
	set_ok(&c, "check-interval", "10");
	set_ok(&c, "fail-closed-after", "19"); /* below two check intervals */
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "fail-closed-after (19 s)",
	             "twice check-interval (10 s)");
	set_ok(&c, "fail-closed-after", "20");
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);
	/* Order does not matter: the rule is checked once everything is in. */
	set_ok(&c, "check-interval", "11");
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "(20 s)", "(11 s)");
	set_ok(&c, "fail-closed-after", "0");
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);

	set_ok(&c, "metrics-file", "/run/dmbyok/x.prom");
	set_ok(&c, "control-socket", "/run/dmbyok/x.prom");
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "same path");
	set_ok(&c, "control-socket", "");
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);

	c.lock_timeout_ms = 999;
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "lock-timeout");
	c.lock_timeout_ms = 3600001;
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "not 3600001 ms");
	c.lock_timeout_ms = 3600000;
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);
	c.watch.revoke_confirmations = 0;
	assert_fails(dmbyok_agent_config_validate(&c), -EINVAL, "revoke_confirmations");
	dmbyok_agent_config_done(&c);
}

/* A file with every key, in every allowed spelling of a line. */
static void test_load_every_key(void **state)
{
	_cleanup_free_ char *hook = make_file("h1", "#!/bin/sh\n", 0755);
	_cleanup_free_ char *text = NULL, *path = NULL;
	struct dmbyok_agent_config c;

	(void)state;
	assert_true(asprintf(&text,
	                     "# dmbyokd test config\n"
	                     "\n"
	                     "check-interval = 30\n"
	                     "   revoke-confirmations=3   \n"
	                     "\trestore-interval\t=\t5s\n"
	                     "teardown-after = 10min # ten minutes\n"
	                     "fail-closed-after = 1h\r\n"
	                     "lock-timeout = 45\n"
	                     "   # indented comment = not a setting\n"
	                     "region = eu-west-1\n"
	                     "endpoint = https://kms.example.test:4443/x#y\n"
	                     "profile = prof\n"
	                     "ca-bundle = /etc/ssl/ca.pem\n"
	                     "on-revoke = %s\n"
	                     "on-restore = %s\t# same program\n"
	                     "metrics-file = /var/lib/node-exporter/dmbyokd.prom\n"
	                     "control-socket = /run/dmbyok/ctl.sock\n"
	                     "debug = yes\n"
	                     "#debug = no\n"
	                     "   \n",
	                     hook, hook) > 0);
	path = make_file("every.conf", text, 0644);
	dmbyok_agent_config_init(&c);
	assert_int_equal(dmbyok_agent_config_load(&c, path, true), 0);
	assert_int_equal(c.watch.check_interval_ms, S(30));
	assert_int_equal(c.watch.revoke_confirmations, 3);
	assert_int_equal(c.watch.restore_interval_ms, S(5));
	assert_int_equal(c.watch.teardown_after_ms, S(600));
	assert_int_equal(c.watch.fail_closed_after_ms, S(3600));
	assert_int_equal(c.lock_timeout_ms, 45000);
	assert_string_equal(c.region, "eu-west-1");
	/* A `#` not after a blank is part of the value. */
	assert_string_equal(c.endpoint, "https://kms.example.test:4443/x#y");
	assert_string_equal(c.profile, "prof");
	assert_string_equal(c.ca_bundle, "/etc/ssl/ca.pem");
	assert_string_equal(c.on_revoke, hook);
	assert_string_equal(c.on_restore, hook);
	assert_string_equal(c.metrics_file, "/var/lib/node-exporter/dmbyokd.prom");
	assert_string_equal(c.control_socket, "/run/dmbyok/ctl.sock");
	assert_true(c.debug);
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);
	dmbyok_agent_config_done(&c);

	/* An empty file, and one of comments only: the defaults. */
	{
		_cleanup_free_ char *empty = make_file("empty.conf", "", 0644);
		_cleanup_free_ char *comments = make_file("comments.conf", "# x\n\n#y = 1\n", 0600);
		struct dmbyok_agent_config d;

		dmbyok_agent_config_init(&c);
		dmbyok_agent_config_init(&d);
		assert_int_equal(dmbyok_agent_config_load(&c, empty, true), 0);
		assert_config_equal(&c, &d);
		assert_int_equal(dmbyok_agent_config_load(&c, comments, true), 0);
		assert_config_equal(&c, &d);
	}
}

/* Every kind of bad line: -EINVAL and a message naming FILE:LINE and the reason. */
static void test_load_bad_lines(void **state)
{
	static const struct {
		const char *text, *line, *reason;
	} cases[] = {
		{ "check-interval = 10\nbogus = 1\n", ":2:", "unknown key \"bogus\"" },
		{ "\n\n# c\ncheck_interval = 10\n", ":4:", "did you mean \"check-interval\"" },
		{ "check-interval 10\n", ":1:", "expected \"key = value\"" },
		{ "region = a\n = b\n", ":2:", "no key before" },
		{ "check-interval = 0\n", ":1: check-interval", "wants 1 to 3600 seconds" },
		{ "revoke-confirmations = 2\n\nrevoke-confirmations = 3\n",
		  ":3:", "already given on line 1" },
		{ "teardown-after = 31d\n", ":1: teardown-after",
		  "0 (never) or 1 to 2592000 seconds (30 days;" },
		{ "debug = maybe\n", ":1: debug", "wants yes or no" },
		{ "on-revoke = relative/hook\n", ":1: on-revoke", "absolute path" },
		{ "metrics-file = /tmp/x.txt\n", ":1: metrics-file", "*.prom" },
		{ "check-interval = 10 seconds\n", ":1:", "not \"10 seconds\"" },
		{ "Check-Interval = 10\n", ":1:", "unknown key" },
	};
	struct dmbyok_agent_config c;
	char name[32], needle[PATH_MAX + 64];

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *path = NULL;

		snprintf(name, sizeof(name), "bad%zu.conf", i);
		path = make_file(name, cases[i].text, 0644);
		snprintf(needle, sizeof(needle), "%s%s", path, cases[i].line);
		dmbyok_agent_config_init(&c);
		assert_fails(dmbyok_agent_config_load(&c, path, false), -EINVAL, needle,
		             cases[i].reason);
		dmbyok_agent_config_done(&c);
	}

	/* All bad lines are reported at once, not only the first. */
	{
		_cleanup_free_ char *path =
		    make_file("many.conf", "a = 1\ncheck-interval = 10\nb = 2\n\nc\n", 0644);
		_cleanup_free_ char *l1 = NULL, *l3 = NULL, *l5 = NULL;

		assert_true(asprintf(&l1, "%s:1:", path) > 0);
		assert_true(asprintf(&l3, "%s:3:", path) > 0);
		assert_true(asprintf(&l5, "%s:5:", path) > 0);
		dmbyok_agent_config_init(&c);
		assert_fails(dmbyok_agent_config_load(&c, path, true), -EINVAL, l1, l3, l5);
		dmbyok_agent_config_done(&c);
	}

	/* A NUL byte in a line, and an overlong line. */
	{
		_cleanup_free_ char *nul = tmp_path("nul.conf"), *lng = tmp_path("long.conf");
		_cleanup_free_ char *big = malloc(10000);
		FILE *f = fopen(nul, "we");

		assert_non_null(f);
		assert_int_equal(fwrite("region = a\0b\n", 1, 13, f), 13);
		assert_int_equal(fclose(f), 0);
		assert_int_equal(chmod(nul, 0644), 0);
		dmbyok_agent_config_init(&c);
		assert_fails(dmbyok_agent_config_load(&c, nul, true), -EINVAL, ":1: NUL byte");
		dmbyok_agent_config_done(&c);

		assert_non_null(big);
		memcpy(big, "region = ", 9);
		memset(big + 9, 'x', 9989);
		memcpy(big + 9998, "\n", 2);
		free(make_file("long.conf", big, 0644));
		dmbyok_agent_config_init(&c);
		assert_fails(dmbyok_agent_config_load(&c, lng, true), -EINVAL, ":1: line longer");
		assert_null(c.region);
		dmbyok_agent_config_done(&c);
	}
}

static void test_load_missing(void **state)
{
	_cleanup_free_ char *missing = tmp_path("no-such.conf");
	struct dmbyok_agent_config c, d;

	(void)state;
	dmbyok_agent_config_init(&c);
	dmbyok_agent_config_init(&d);
	/* The default path may be absent: the defaults apply. */
	assert_int_equal(dmbyok_agent_config_load(&c, missing, false), 0);
	assert_config_equal(&c, &d);
	/* --config FILE must exist. */
	assert_fails(dmbyok_agent_config_load(&c, missing, true), -ENOENT, missing);
}

/* The file names programs run as root: refused if anyone but root (or us) could change it. */
static void test_load_permissions(void **state)
{
	static const mode_t refused[] = { 0664, 0646, 0666, 0620, 0602, 0777 };
	static const mode_t accepted[] = { 0644, 0600, 0400, 0444, 0640 };
	_cleanup_free_ char *fifo = tmp_path("fifo.conf"), *dir = tmp_path("dir.conf");
	_cleanup_free_ char *path = NULL;
	struct dmbyok_agent_config c;

	(void)state;
	path = make_file("perm.conf", "check-interval = 20\n", 0644);
	dmbyok_agent_config_init(&c);
	for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
		char mode[16];

		assert_int_equal(chmod(path, refused[i]), 0);
		snprintf(mode, sizeof(mode), "mode %04o", (unsigned)refused[i]);
		assert_fails(dmbyok_agent_config_load(&c, path, true), -EPERM, path,
		             "writable by group or others", mode);
		assert_int_equal(c.watch.check_interval_ms, S(10)); /* nothing was read */
	}
	for (size_t i = 0; i < ELEMENTSOF(accepted); i++) {
		assert_int_equal(chmod(path, accepted[i]), 0);
		c.watch.check_interval_ms = S(10);
		assert_int_equal(dmbyok_agent_config_load(&c, path, true), 0);
		assert_int_equal(c.watch.check_interval_ms, S(20));
	}

	assert_int_equal(chmod(path, 0644), 0);
	if (geteuid() == 0) {
		assert_int_equal(chown(path, 65534, 0), 0);
		assert_fails(dmbyok_agent_config_load(&c, path, true), -EPERM,
		             "owned by uid 65534, not root");
		assert_int_equal(chown(path, 0, 65534), 0); /* a group of its own is fine */
		assert_int_equal(dmbyok_agent_config_load(&c, path, true), 0);
	} else {
		struct stat st;

		/* Not root: our own file is accepted (the rule's one exception). */
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_uid, geteuid());
		assert_int_equal(dmbyok_agent_config_load(&c, path, true), 0);
	}

	/* Not a regular file: refused, and a FIFO does not hang the start. */
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_fails(dmbyok_agent_config_load(&c, fifo, true), -EPERM, "not a regular file");
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_fails(dmbyok_agent_config_load(&c, dir, false), -EPERM, "not a regular file");
	dmbyok_agent_config_done(&c);
}

/* File first, then the command line, which wins; an empty option undoes a file setting. */
static void test_precedence(void **state)
{
	_cleanup_free_ char *hook = make_file("h2", "#!/bin/sh\n", 0755);
	_cleanup_free_ char *text = NULL, *path = NULL;
	struct dmbyok_agent_config c;

	(void)state;
	assert_true(asprintf(&text,
	                     "check-interval = 30\nregion = eu-west-1\ndebug = no\n"
	                     "on-revoke = %s\nlock-timeout = 60\n",
	                     hook) > 0);
	path = make_file("prec.conf", text, 0644);
	dmbyok_agent_config_init(&c);
	assert_int_equal(dmbyok_agent_config_load(&c, path, true), 0);
	set_ok(&c, "check-interval", "5");
	set_ok(&c, "region", "us-east-2");
	set_ok(&c, "debug", "yes");
	set_ok(&c, "on-revoke", "");
	assert_int_equal(c.watch.check_interval_ms, S(5));
	assert_string_equal(c.region, "us-east-2");
	assert_true(c.debug);
	assert_null(c.on_revoke);
	assert_int_equal(c.lock_timeout_ms, 60000); /* not overridden: the file's */
	assert_int_equal(dmbyok_agent_config_validate(&c), 0);
	dmbyok_agent_config_done(&c);
}

/*
 * etc/dmbyokd.conf.example: loads as is (all commented out); names every key exactly once
 * as a `#key = default` line and nothing else; uncommented, gives exactly the defaults.
 */
/* policy-data-paths: absolute paths separated by ':', never "/" (everything), none empty. */
static void test_policy(void **state)
{
	static const char *const bad[] = {
		"srv", "/srv:", ":/srv", "/srv::/db", "/", "/srv:/", "/srv:db", "/srv\n",
	};
	struct dmbyok_agent_config c;

	(void)state;
	dmbyok_agent_config_init(&c);
	assert_null(c.policy_data_paths);
	assert_false(c.policy_unmount);
	set_ok(&c, "policy-data-paths", "/srv");
	assert_string_equal(c.policy_data_paths, "/srv");
	set_ok(&c, "policy-data-paths", "/srv/data:/var/lib/postgresql");
	assert_string_equal(c.policy_data_paths, "/srv/data:/var/lib/postgresql");
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_bad(&c, "policy-data-paths", bad[i]);
	assert_string_equal(c.policy_data_paths, "/srv/data:/var/lib/postgresql");
	set_ok(&c, "policy-unmount", "yes");
	assert_true(c.policy_unmount);
	assert_bad(&c, "policy-unmount", "sometimes");
	set_ok(&c, "policy-data-paths", "");
	assert_null(c.policy_data_paths);
	dmbyok_agent_config_done(&c);
}

static void test_example(void **state)
{
	_cleanup_free_ char *text = read_all(DMBYOK_SOURCE_DIR "/etc/dmbyokd.conf.example");
	_cleanup_free_ char *as_is = NULL, *uncommented = NULL, *out = strdup("");
	unsigned seen[ELEMENTSOF(all_keys)] = { 0 };
	struct dmbyok_agent_config c, d;

	(void)state;
	assert_non_null(out);
	/* `#key =` (no blank after the `#`) is the form of a setting shown with its default. */
	for (char *line = text, *next; line && *line; line = next) {
		char *nl = strchr(line, '\n'), *t;
		size_t n;

		next = nl ? nl + 1 : NULL;
		n = nl ? (size_t)(nl - line) : strlen(line);
		if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z') {
			bool known = false;

			for (size_t i = 0; i < ELEMENTSOF(all_keys); i++) {
				size_t k = strlen(all_keys[i]);

				if (!strncmp(line + 1, all_keys[i], k) &&
				    !strncmp(line + 1 + k, " =", 2)) {
					seen[i]++;
					known = true;
				}
			}
			if (!known)
				fail_msg("example: not a known setting: %.*s", (int)n, line);
			assert_true(asprintf(&t, "%s%.*s\n", out, (int)n - 1, line + 1) > 0);
		} else
			assert_true(asprintf(&t, "%s%.*s\n", out, (int)n, line) > 0);
		free(out);
		out = t;
	}
	for (size_t i = 0; i < ELEMENTSOF(all_keys); i++)
		if (seen[i] != 1)
			fail_msg("example: %s shown %u times", all_keys[i], seen[i]);

	as_is = make_file("example.conf", text, 0644);
	uncommented = make_file("example-uncommented.conf", out, 0644);
	dmbyok_agent_config_init(&d);
	dmbyok_agent_config_init(&c);
	assert_int_equal(dmbyok_agent_config_load(&c, as_is, true), 0);
	assert_config_equal(&c, &d);
	assert_int_equal(dmbyok_agent_config_load(&c, uncommented, true), 0);
	assert_config_equal(&c, &d);
	dmbyok_agent_config_done(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_times),
		cmocka_unit_test(test_counts_and_bools),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_hooks),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_load_every_key),
		cmocka_unit_test(test_load_bad_lines),
		cmocka_unit_test(test_load_missing),
		cmocka_unit_test(test_load_permissions),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_example),
	};

	/* Errors are shown (captured where a test checks them); the rest is noise here. */
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, setup, teardown);
}
