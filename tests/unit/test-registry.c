/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/dm.h"
#include "dmbyok/log.h"
#include "lifecycle/registry.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_save_load_remove),
		cmocka_unit_test(test_names_cannot_escape_the_directory),
		cmocka_unit_test(test_dm_uuid_has_cryptsetup_form),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
