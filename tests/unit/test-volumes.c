/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The volumes table (src/lifecycle/volumes.c): parsing, bad lines reported and skipped,
 * editing that keeps every other line, concurrent editors that lose nothing, and an editor
 * killed mid-way (kill -9) that never leaves a half-written table.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/volumes.h"

static char dir[] = "/var/tmp/dmbyok-volumes-XXXXXX";
static char path[128];

static int setup(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/volumes", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static void write_file(const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *read_file(void)
{
	static char buf[65536];
	FILE *f = fopen(path, "re");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_parse_good(void **state)
{
	struct dmbyok_volume_entry e;
	const char *why = NULL;

	(void)state;
	assert_int_equal(dmbyok_volume_entry_parse("orders UUID=2f6c0b1e-7a7d-4a0e-9d59-0c0d4b6f55aa",
	                                           &e, &why),
	                 0);
	assert_string_equal(e.name, "orders");
	assert_string_equal(e.device, "UUID=2f6c0b1e-7a7d-4a0e-9d59-0c0d4b6f55aa");
	assert_false(e.nofail);
	assert_null(e.header);
	dmbyok_volume_entry_done(&e);

	assert_int_equal(dmbyok_volume_entry_parse(
	                     "a.b_c+d-1 /dev/disk/by-id/x nofail,header=/etc/h,teardown-after=30s,"
	                     "on-revoke=/usr/bin/stop,on-restore=/usr/bin/start\n",
	                     &e, &why),
	                 0);
	assert_true(e.nofail);
	assert_string_equal(e.header, "/etc/h");
	assert_true(e.teardown_after_set);
	assert_int_equal(e.teardown_after, 30);
	assert_string_equal(e.on_revoke, "/usr/bin/stop");
	assert_string_equal(e.on_restore, "/usr/bin/start");
	dmbyok_volume_entry_done(&e);

	assert_int_equal(dmbyok_volume_entry_parse("x LABEL=data -", &e, &why), 0);
	dmbyok_volume_entry_done(&e);
	assert_int_equal(dmbyok_volume_entry_parse("x PARTUUID=5e0c8c31-01 defaults", &e, &why), 0);
	dmbyok_volume_entry_done(&e);
}

static void test_parse_bad(void **state)
{
	static const char *bad[] = {
		"onlyname",
		"bad/name /dev/vda",
		".hidden /dev/vda",
		"-dash /dev/vda",
		"x relative/path",
		"x UUID=",
		"x FOO=bar",
		"x /dev/vda nofail extra",
		"x /dev/vda bogus",
		"x /dev/vda nofail=yes",
		"x /dev/vda header=relative",
		"x /dev/vda header=/a,header=/b",
		"x /dev/vda teardown-after=-1",
		"x /dev/vda teardown-after=10min",
		"x /dev/vda teardown-after=99999999",
		"x /dev/vda perf=nonsense",
		"x /dev/vda on-revoke=stop",
		"x UUID=2f6c0b1e header=/etc/h",
		NULL, /* a name of 128 characters, filled in below */
	};
	struct dmbyok_volume_entry e;
	char too_long[160];

	(void)state;
	memset(too_long, 'n', 128);
	strcpy(too_long + 128, " /dev/vda");
	bad[sizeof(bad) / sizeof(bad[0]) - 1] = too_long;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		assert_int_equal(dmbyok_volume_entry_parse(bad[i], &e, &why), -EINVAL);
		assert_non_null(why);
	}
}

static void test_load_skips_bad_lines(void **state)
{
	struct dmbyok_volumes *t = NULL;

	(void)state;
	write_file("# comment\n"
	           "\n"
	           "a /dev/vda\n"
	           "bad line with too many fields here\n"
	           "b UUID=1234 nofail\n"
	           "a /dev/vdb\n"
	           "   # indented comment\n"
	           "c LABEL=x bogus-option\n"
	           "d /dev/vdd"); /* no final newline */
	assert_int_equal(dmbyok_volumes_load(path, &t), 0);
	assert_int_equal(t->n, 3);
	assert_int_equal(t->n_bad, 3);
	assert_string_equal(t->entries[0].name, "a");
	assert_int_equal(t->entries[0].line, 3);
	assert_string_equal(t->entries[1].name, "b");
	assert_true(t->entries[1].nofail);
	assert_string_equal(t->entries[2].name, "d");
	assert_int_equal(t->entries[2].line, 9);
	assert_non_null(dmbyok_volumes_find(t, "d"));
	assert_null(dmbyok_volumes_find(t, "c"));
	dmbyok_volumes_free(t);

	/* A missing table is an empty one. */
	unlink(path);
	assert_int_equal(dmbyok_volumes_load(path, &t), 0);
	assert_int_equal(t->n, 0);
	dmbyok_volumes_free(t);
}

static void test_add_remove_keep_other_lines(void **state)
{
	(void)state;
	write_file("# the table\na /dev/vda # trailing words are a bad line\nb /dev/vdb\n\n# end");
	assert_int_equal(dmbyok_volumes_add(path, "c /dev/vdc nofail"), 0);
	assert_string_equal(read_file(), "# the table\na /dev/vda # trailing words are a bad line\n"
	                                 "b /dev/vdb\n\n# end\nc /dev/vdc nofail\n");
	/* Name or device taken, or a bad line: refused, the table unchanged. */
	assert_int_equal(dmbyok_volumes_add(path, "b /dev/vdz"), -EEXIST);
	assert_int_equal(dmbyok_volumes_add(path, "z /dev/vdb"), -EEXIST);
	assert_int_equal(dmbyok_volumes_add(path, "z"), -EINVAL);
	assert_int_equal(dmbyok_volumes_add(path, "z /dev/vdz\ny /dev/vdy"), -EINVAL);
	assert_string_equal(read_file(), "# the table\na /dev/vda # trailing words are a bad line\n"
	                                 "b /dev/vdb\n\n# end\nc /dev/vdc nofail\n");
	assert_int_equal(dmbyok_volumes_remove(path, "b"), 0);
	assert_string_equal(read_file(), "# the table\na /dev/vda # trailing words are a bad line\n"
	                                 "\n# end\nc /dev/vdc nofail\n");
	assert_int_equal(dmbyok_volumes_remove(path, "b"), -ENOENT);
	unlink(path);
	assert_int_equal(dmbyok_volumes_add(path, "first /dev/vda"), 0);
	assert_string_equal(read_file(), "first /dev/vda\n");
}

/* Concurrent editors: every add lands, none is lost to another's rewrite. */
static void test_concurrent_adds(void **state)
{
	enum { WRITERS = 8, EACH = 10 };
	struct dmbyok_volumes *t = NULL;
	pid_t pids[WRITERS];

	(void)state;
	unlink(path);
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0) {
			for (int i = 0; i < EACH; i++) {
				char line[64];

				snprintf(line, sizeof(line), "v%d-%d /dev/disk/by-id/d%d-%d", w, i, w, i);
				if (dmbyok_volumes_add(path, line) < 0)
					_exit(1);
			}
			_exit(0);
		}
	}
	for (int w = 0; w < WRITERS; w++) {
		int st;

		assert_int_equal(waitpid(pids[w], &st, 0), pids[w]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_int_equal(dmbyok_volumes_load(path, &t), 0);
	assert_int_equal(t->n, WRITERS * EACH);
	assert_int_equal(t->n_bad, 0);
	dmbyok_volumes_free(t);
}

/* An editor killed at any moment leaves the old table or the new one, never half. */
static void test_killed_editor(void **state)
{
	(void)state;
	unlink(path);
	assert_int_equal(dmbyok_volumes_add(path, "keep /dev/vda"), 0);
	for (int round = 0; round < 30; round++) {
		struct dmbyok_volumes *t = NULL;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			for (int i = 0;; i++) {
				char line[64];

				snprintf(line, sizeof(line), "r%d-%d /dev/x%d-%d", round, i, round, i);
				(void)dmbyok_volumes_add(path, line);
				snprintf(line, sizeof(line), "r%d-%d", round, i);
				(void)dmbyok_volumes_remove(path, line);
			}
		}
		usleep(1000 + (useconds_t)(round * 337 % 5000));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		assert_int_equal(dmbyok_volumes_load(path, &t), 0);
		assert_int_equal(t->n_bad, 0);
		assert_non_null(dmbyok_volumes_find(t, "keep"));
		assert_true(t->n <= 2);
		dmbyok_volumes_free(t);
		/* The lock died with its holder: the next editor goes on. */
		for (size_t i = 0; i < 2; i++) {
			struct dmbyok_volumes *u = NULL;

			assert_int_equal(dmbyok_volumes_load(path, &u), 0);
			for (size_t j = 0; j < u->n; j++)
				if (strcmp(u->entries[j].name, "keep"))
					assert_int_equal(dmbyok_volumes_remove(path, u->entries[j].name), 0);
			dmbyok_volumes_free(u);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_load_skips_bad_lines),
		cmocka_unit_test(test_add_remove_keep_other_lines),
		cmocka_unit_test(test_concurrent_adds),
		cmocka_unit_test(test_killed_editor),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
