/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/dm.h"
#include "dmbyok/log.h"
#include "lifecycle/registry.h"
#include "lifecycle/runtime.h"

static char dir[] = "/var/tmp/dmbyok-registry-XXXXXX";

static int setup(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1);
	if (!mkdtemp(dir))
		return -1;
	return setenv("DMBYOK_RUNTIME_DIR", dir, 1);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static void test_save_load_remove(void **state)
{
	struct registry_entry e = {
		.name = (char *)"data",
		.device = (char *)"/dev/vda",
		.header = (char *)"/etc/dmbyok/data.hdr",
		.volume_uuid = (char *)"3f1c2b9e-5d6a-4e7f-8a9b-0c1d2e3f4a5b",
		.key_id = (char *)"alias/orders",
		.key_arn = (char *)"arn:aws:kms:eu-west-1:111122223333:key/k1",
	};
	struct registry_entry got = { 0 };

	(void)state;
	assert_string_equal(dmbyok_runtime_dir(), dir);
	assert_int_equal(dmbyok_registry_save(&e), 0);
	assert_int_equal(dmbyok_registry_load("data", &got), 0);
	assert_string_equal(got.device, e.device);
	assert_string_equal(got.header, e.header);
	assert_string_equal(got.volume_uuid, e.volume_uuid);
	assert_string_equal(got.key_arn, e.key_arn);
	dmbyok_registry_entry_done(&got);

	assert_int_equal(dmbyok_registry_remove("data"), 0);
	assert_int_equal(dmbyok_registry_load("data", &got), -ENOENT);
	assert_int_equal(dmbyok_registry_remove("data"), 0); /* removing twice is fine */
}

/* A torn-down volume's record carries what reprovisioning needs; list finds every record. */
static void test_torn_down_record_and_list(void **state)
{
	struct registry_entry e = {
		.name = (char *)"torn",
		.device = (char *)"/dev/vdb",
		.volume_uuid = (char *)"3f1c2b9e-5d6a-4e7f-8a9b-0c1d2e3f4a5c",
		.key_id = (char *)"alias/orders",
		.key_arn = (char *)"arn:aws:kms:eu-west-1:111122223333:key/k1",
		.torn_down = true,
		.flags = DM_CRYPT_ALLOW_DISCARDS | DM_CRYPT_NO_READ_WORKQUEUE,
	};
	struct registry_entry got = { 0 };
	char **names = NULL, path[512];
	size_t n = 0;
	bool found = false;
	FILE *f;

	(void)state;
	assert_int_equal(dmbyok_registry_save(&e), 0);
	assert_int_equal(dmbyok_registry_load("torn", &got), 0);
	assert_true(got.torn_down);
	assert_int_equal(got.flags, e.flags);
	dmbyok_registry_entry_done(&got);

	/* A save in progress (a dot-file) and foreign files are not records. */
	snprintf(path, sizeof(path), "%s/mappings/.torn.json.tmp", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/mappings/README", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(dmbyok_registry_list(&names), 0);
	for (; names[n]; n++) {
		assert_true(names[n][0] != '.' && strcmp(names[n], "README") != 0);
		found = found || !strcmp(names[n], "torn");
	}
	assert_true(found);
	dmbyok_strv_free(names);

	/* Not torn down: the flag is absent, not false-and-stale. */
	e.torn_down = false;
	assert_int_equal(dmbyok_registry_save(&e), 0);
	assert_int_equal(dmbyok_registry_load("torn", &got), 0);
	assert_false(got.torn_down);
	dmbyok_registry_entry_done(&got);
	assert_int_equal(dmbyok_registry_remove("torn"), 0);
}

static void test_names_cannot_escape_the_directory(void **state)
{
	struct registry_entry got = { 0 };

	(void)state;
	assert_int_equal(dmbyok_registry_load("../etc/passwd", &got), -EINVAL);
	assert_int_equal(dmbyok_registry_load("..", &got), -EINVAL);
	assert_int_equal(dmbyok_registry_remove("a/b"), -EINVAL);
}

static void test_dm_uuid_has_cryptsetup_form(void **state)
{
	_cleanup_free_ char *uuid = NULL;

	(void)state;
	assert_int_equal(
	    dmbyok_dm_luks2_uuid("3f1c2b9e-5d6a-4e7f-8a9b-0c1d2e3f4a5b", "data", &uuid), 0);
	assert_string_equal(uuid, "CRYPT-LUKS2-3f1c2b9e5d6a4e7f8a9b0c1d2e3f4a5b-data");
}

static struct registry_entry entry_for(const char *arn)
{
	return (struct registry_entry){
		.name = (char *)"race",
		.device = (char *)"/dev/vda",
		.volume_uuid = (char *)"3f1c2b9e-5d6a-4e7f-8a9b-0c1d2e3f4a5b",
		.key_id = (char *)"alias/orders",
		.key_arn = (char *)arn,
	};
}

/* Writers racing on one record: each rename is atomic, a reader always sees a whole one. */
static void test_concurrent_saves_never_tear_a_record(void **state)
{
	static const char *arns[] = { "arn:aws:kms:eu-west-1:111122223333:key/aaaa",
		                      "arn:aws:kms:eu-west-1:111122223333:key/bbbbbbbbbbbbbbbbbb" };
	pid_t pids[8];
	struct registry_entry got = { 0 };
	char tmpl[256];
	int status, leftovers = 0;

	(void)state;
	for (int i = 0; i < 8; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct registry_entry e = entry_for(arns[i % 2]);

			for (int j = 0; j < 50; j++)
				if (dmbyok_registry_save(&e) < 0)
					_exit(1);
			_exit(0);
		}
	}
	for (int j = 0; j < 200; j++) {
		if (dmbyok_registry_load("race", &got) == 0) {
			assert_true(!strcmp(got.key_arn, arns[0]) || !strcmp(got.key_arn, arns[1]));
			dmbyok_registry_entry_done(&got);
		}
	}
	for (int i = 0; i < 8; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	/* No temporary file is left behind. */
	snprintf(tmpl, sizeof(tmpl), "ls -a '%s/mappings' | grep -c '^\\.race\\.' >/dev/null", dir);
	leftovers = system(tmpl) == 0;
	assert_false(leftovers);
}

/* A planted symlink is never followed, and a directory others may write is not trusted. */
static void test_untrusted_places_are_refused(void **state)
{
	struct registry_entry e = entry_for("arn:aws:kms:eu-west-1:111122223333:key/k");
	struct registry_entry got = { 0 };
	char path[256], top[256];

	(void)state;
	assert_int_equal(dmbyok_registry_save(&e), 0);
	snprintf(path, sizeof(path), "%s/mappings/evil.json", dir);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_true(dmbyok_registry_load("evil", &got) < 0);
	assert_int_not_equal(dmbyok_registry_load("evil", &got), -ENOENT);

	snprintf(top, sizeof(top), "%s/mappings", dir);
	assert_int_equal(chmod(top, 0777), 0);
	assert_int_equal(dmbyok_registry_save(&e), -EPERM);
	assert_int_equal(chmod(top, 0700), 0);
	assert_int_equal(dmbyok_registry_save(&e), 0);
}

/* The device lock excludes other processes, waits a bounded time, and dies with its holder. */
static void test_device_lock(void **state)
{
	struct dmbyok_device_lock l = DMBYOK_DEVICE_LOCK_INIT, again = DMBYOK_DEVICE_LOCK_INIT;
	dev_t devno = makedev(7, 42);
	int ready[2];
	char c;
	pid_t holder;

	(void)state;
	assert_int_equal(pipe(ready), 0);
	holder = fork();
	assert_true(holder >= 0);
	if (holder == 0) {
		if (dmbyok_device_lock_devno(devno, 1000, &l) < 0)
			_exit(1);
		(void)!write(ready[1], "x", 1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	/* Held elsewhere: we wait our bound, then hear "busy". */
	assert_int_equal(dmbyok_device_lock_devno(devno, 200, &l), -EBUSY);
	/* Another device is not affected. */
	assert_int_equal(dmbyok_device_lock_devno(makedev(7, 43), 200, &again), 0);
	dmbyok_device_unlock(&again);
	/* kill -9 of the holder releases it. */
	assert_int_equal(kill(holder, SIGKILL), 0);
	assert_int_equal(waitpid(holder, NULL, 0), holder);
	assert_int_equal(dmbyok_device_lock_devno(devno, 1000, &l), 0);
	/*
	 * Children we fork do not hold our lock: one that inherited the descriptor and lives
	 * on (as a child stuck on a stalled disk would) does not keep it once we release it.
	 */
	holder = fork();
	assert_true(holder >= 0);
	if (holder == 0) {
		pause();
		_exit(0);
	}
	dmbyok_device_unlock(&l);
	assert_int_equal(dmbyok_device_lock_devno(devno, 100, &l), 0);
	dmbyok_device_unlock(&l);
	dmbyok_device_unlock(&l); /* releasing twice is harmless */
	assert_int_equal(kill(holder, SIGKILL), 0);
	assert_int_equal(waitpid(holder, NULL, 0), holder);
	close(ready[0]);
	close(ready[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_save_load_remove),
		cmocka_unit_test(test_torn_down_record_and_list),
		cmocka_unit_test(test_names_cannot_escape_the_directory),
		cmocka_unit_test(test_dm_uuid_has_cryptsetup_form),
		cmocka_unit_test(test_concurrent_saves_never_tear_a_record),
		cmocka_unit_test(test_untrusted_places_are_refused),
		cmocka_unit_test(test_device_lock),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
