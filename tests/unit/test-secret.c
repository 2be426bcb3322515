/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "dmbyok/secret.h"

/* Locked kB of this process, from /proc/self/status (VmLck). */
static long locked_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void test_secret_is_locked_zeroed_and_released(void **state)
{
	struct secret *s = NULL;
	long before = locked_kb();

	(void)state;
	assert_int_equal(dmbyok_secret_new(64, &s), 0);
	assert_int_equal(s->size, 64);
	assert_true(s->capacity >= 64);
	for (size_t i = 0; i < s->capacity; i++)
		assert_int_equal(s->data[i], 0);
	assert_true(locked_kb() > before);
	dmbyok_secret_free(s);
	assert_int_equal(locked_kb(), before);
	dmbyok_secret_free(NULL); /* destructors accept NULL */
}

static void test_secret_append_bounds(void **state)
{
	_cleanup_secret_ struct secret *s = NULL;
	uint8_t big[8192] = { 0 };

	(void)state;
	assert_int_equal(dmbyok_secret_new(0, &s), 0);
	assert_int_equal(dmbyok_secret_append(s, "abc", 3), 0);
	assert_int_equal(s->size, 3);
	assert_memory_equal(s->data, "abc", 3);
	assert_int_equal(dmbyok_secret_append(s, big, sizeof(big)), -E2BIG);
	assert_int_equal(s->size, 3);
}

static void test_secret_equal(void **state)
{
	(void)state;
	assert_true(dmbyok_secret_equal("abcd", "abcd", 4));
	assert_false(dmbyok_secret_equal("abcd", "abce", 4));
}

static void test_harden_process_disables_core_dumps(void **state)
{
	struct rlimit rl;

	(void)state;
	assert_int_equal(dmbyok_harden_process(), 0);
	assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 0);
	assert_int_equal(rl.rlim_max, 0);
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_is_locked_zeroed_and_released),
		cmocka_unit_test(test_secret_append_bounds),
		cmocka_unit_test(test_secret_equal),
		cmocka_unit_test(test_harden_process_disables_core_dumps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
