/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "dmbyok/error.h"
#include "dmbyok/log.h"

static void test_classes_match_taxonomy(void **state)
{
	(void)state;
	assert_int_equal(dmbyok_error_class(0), DMBYOK_OK);
	assert_int_equal(dmbyok_error_class(-EKEYREVOKED), DMBYOK_ERR_KEY_REVOKED);
	assert_int_equal(dmbyok_error_class(-ETIMEDOUT), DMBYOK_ERR_KMS_TRANSIENT);
	assert_int_equal(dmbyok_error_class(-ECONNREFUSED), DMBYOK_ERR_KMS_TRANSIENT);
	assert_int_equal(dmbyok_error_class(-EAGAIN), DMBYOK_ERR_KMS_TRANSIENT);
	assert_int_equal(dmbyok_error_class(-EREMOTEIO), DMBYOK_ERR_KMS_TRANSIENT);
	assert_int_equal(dmbyok_error_class(-EKEYEXPIRED), DMBYOK_ERR_CREDENTIALS);
	assert_int_equal(dmbyok_error_class(-EKEYREJECTED), DMBYOK_ERR_CREDENTIALS);
	assert_int_equal(dmbyok_error_class(-ENOKEY), DMBYOK_ERR_CREDENTIALS);
	assert_int_equal(dmbyok_error_class(-EBADMSG), DMBYOK_ERR_WRONG_TOKEN);
	assert_int_equal(dmbyok_error_class(-EUCLEAN), DMBYOK_ERR_HEADER);
	assert_int_equal(dmbyok_error_class(-ENODATA), DMBYOK_ERR_HEADER);
	assert_int_equal(dmbyok_error_class(-EBUSY), DMBYOK_ERR_BUSY);
	assert_int_equal(dmbyok_error_class(-ENOTSUP), DMBYOK_ERR_NO_KERNEL);
	assert_int_equal(dmbyok_error_class(-EINVAL), DMBYOK_ERR_INPUT);
	assert_int_equal(dmbyok_error_class(-ENOMEM), DMBYOK_ERR_INTERNAL);
	/* Positive errno values classify the same way. */
	assert_int_equal(dmbyok_error_class(EKEYREVOKED), DMBYOK_ERR_KEY_REVOKED);
}

static void test_exit_codes_are_documented_values(void **state)
{
	(void)state;
	assert_int_equal(dmbyok_exit_code(0), 0);
	assert_int_equal(dmbyok_exit_code(-ENOMEM), 1);
	assert_int_equal(dmbyok_exit_code(-EINVAL), 2);
	assert_int_equal(dmbyok_exit_code(-EKEYREVOKED), 3);
	assert_int_equal(dmbyok_exit_code(-ECONNREFUSED), 4);
	assert_int_equal(dmbyok_exit_code(-EKEYEXPIRED), 5);
	assert_int_equal(dmbyok_exit_code(-EBADMSG), 6);
	assert_int_equal(dmbyok_exit_code(-EUCLEAN), 7);
	assert_int_equal(dmbyok_exit_code(-EBUSY), 8);
	assert_int_equal(dmbyok_exit_code(-ENOTSUP), 9);
}

static void test_class_names_and_messages(void **state)
{
	(void)state;
	assert_string_equal(dmbyok_error_class_name(DMBYOK_ERR_KEY_REVOKED), "key-revoked");
	assert_string_equal(dmbyok_error_class_name(_DMBYOK_ERR_CLASS_MAX), "internal");
	assert_non_null(strstr(dmbyok_strerror(-EKEYREVOKED), "unusable"));
	assert_string_equal(dmbyok_strerror(-EIO), strerror(EIO));
}

static void test_log_errno_returns_negative(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR);
	assert_int_equal(log_debug_errno(EINVAL, "ignored"), -EINVAL);
	assert_int_equal(log_debug_errno(-EINVAL, "ignored"), -EINVAL);
	assert_int_equal(dmbyok_log_internal(LOG_LEVEL_DEBUG, 0, "ignored"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes_match_taxonomy),
		cmocka_unit_test(test_exit_codes_are_documented_values),
		cmocka_unit_test(test_class_names_and_messages),
		cmocka_unit_test(test_log_errno_returns_negative),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
