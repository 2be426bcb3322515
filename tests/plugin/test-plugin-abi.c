/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token plugin as libcryptsetup loads it: dlopen, every ABI function found by dlvsym in
 * CRYPTSETUP_TOKEN_1.0; validate accepts a well-formed dmbyok token and refuses malformed
 * ones; dump writes key, ARN, region, context and version through libcryptsetup's log, and
 * never the wrapped key or the key check value; buffer_free takes NULL; a second dlopen after
 * dlclose finds the same (never unloaded) image. Opening needs a KMS and dm-crypt: that is
 * tests/plugin/cryptsetup.sh in the VM.
 *   test-plugin-abi PATH-TO-libcryptsetup-token-dmbyok.so
 */
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libcryptsetup.h>

static const char *plugin_path;
static void *handle;
static crypt_token_validate_func validate;
static crypt_token_dump_func dump;
static crypt_token_buffer_free_func buffer_free;
static crypt_token_version_func version_fn;
static char dumped[8192];

#define ARN        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#define CIPHERTEXT "AQIDAHhBase64CiphertextBlobThatIsNotSecretButLong=="
#define KCV        "hmac-sha256-128:00112233445566778899aabbccddeeff"

/* A well-formed version 2 token, with `extra` spliced in before the closing brace. */
static char *token_json(const char *version, const char *keyslots, const char *context,
                        const char *extra)
{
	char *s = NULL;

	assert_true(asprintf(&s,
	                     "{\"type\":\"dmbyok\",\"keyslots\":%s,\"version\":%s,\"kms\":\"aws\","
	                     "\"key_id\":\"alias/orders\",\"key_arn\":\"" ARN "\","
	                     "\"region\":\"eu-west-1\",\"ciphertext\":\"" CIPHERTEXT "\","
	                     "\"context\":%s,\"key_check\":\"" KCV "\","
	                     "\"binding\":\"sha256:%064d\",\"created\":\"2026-11-23T06:00:00Z\"%s}",
	                     keyslots, version, context, 0, extra) > 0);
	return s;
}

#define GOOD_CONTEXT                                                                               \
	"{\"dmbyok:volume\":\"6f1c7a52-2d0e-4e43-9d7e-0b4a4b7c9f11\",\"service\":\"orders\"}"

static void log_to_buffer(int level, const char *msg, void *usrptr)
{
	if (level == CRYPT_LOG_NORMAL)
		strncat(dumped, msg, sizeof(dumped) - strlen(dumped) - 1);
}

static int load(void **state)
{
	handle = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		fprintf(stderr, "dlopen %s: %s\n", plugin_path, dlerror());
		return -1;
	}
	validate = (crypt_token_validate_func)dlvsym(handle, CRYPT_TOKEN_ABI_VALIDATE,
	                                             CRYPT_TOKEN_ABI_VERSION1);
	dump =
	    (crypt_token_dump_func)dlvsym(handle, CRYPT_TOKEN_ABI_DUMP, CRYPT_TOKEN_ABI_VERSION1);
	buffer_free = (crypt_token_buffer_free_func)dlvsym(handle, CRYPT_TOKEN_ABI_BUFFER_FREE,
	                                                   CRYPT_TOKEN_ABI_VERSION1);
	version_fn = (crypt_token_version_func)dlvsym(handle, CRYPT_TOKEN_ABI_VERSION,
	                                              CRYPT_TOKEN_ABI_VERSION1);
	return 0;
}

static void abi_symbols_are_versioned(void **state)
{
	assert_non_null(dlvsym(handle, CRYPT_TOKEN_ABI_OPEN, CRYPT_TOKEN_ABI_VERSION1));
	assert_non_null(validate);
	assert_non_null(dump);
	assert_non_null(buffer_free);
	assert_non_null(version_fn);
	assert_string_equal(version_fn(), DMBYOK_VERSION);
	/* No PIN: libcryptsetup answers -ENOENT for a PIN given to a handler without open_pin. */
	assert_null(dlvsym(handle, CRYPT_TOKEN_ABI_OPEN_PIN, CRYPT_TOKEN_ABI_VERSION1));
	/* Nothing of libdmbyok is visible, versioned or not. */
	assert_null(dlsym(handle, "dmbyok_token_from_json"));
	assert_null(dlsym(handle, "dmbyok_kms_decrypt"));
}

static void validate_accepts_a_token(void **state)
{
	char *good = token_json("2", "[\"0\"]", GOOD_CONTEXT, "");
	char *v1 =
	    token_json("1", "[\"1\"]", GOOD_CONTEXT, ",\"rewrapped\":\"2026-12-24T06:00:00Z\"");

	assert_int_equal(validate(NULL, good), 0);
	assert_int_equal(validate(NULL, v1), 0);
	free(good);
	free(v1);
}

static void validate_refuses_malformed_tokens(void **state)
{
	char *bad[] = {
		token_json("3", "[\"0\"]", GOOD_CONTEXT, ""),            /* unknown version */
		token_json("\"2\"", "[\"0\"]", GOOD_CONTEXT, ""),        /* not an integer */
		token_json("2", "[\"0\",\"1\"]", GOOD_CONTEXT, ""),      /* two keyslots */
		token_json("2", "[\"x\"]", GOOD_CONTEXT, ""),            /* not a keyslot */
		token_json("2", "[\"0\"]", "{\"dmbyok:volume\":7}", ""), /* context value */
		token_json("2", "[\"0\"]", "\"service=orders\"", ""),    /* context not object */
		strdup("{\"type\":\"dmbyok\",\"keyslots\":[\"0\"],\"version\":2}"), /* no key */
		strdup("not json"),
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_non_null(bad[i]);
		if (validate(NULL, bad[i]) != -EINVAL)
			fail_msg("validate accepted bad token %zu: %s", i, bad[i]);
		free(bad[i]);
	}
	assert_int_equal(validate(NULL, NULL), -EINVAL);
}

static void dump_shows_the_key_never_secrets(void **state)
{
	char *good = token_json("2", "[\"0\"]", GOOD_CONTEXT, "");

	dumped[0] = '\0';
	crypt_set_log_callback(NULL, log_to_buffer, NULL);
	dump(NULL, good);
	crypt_set_log_callback(NULL, NULL, NULL);
	assert_non_null(strstr(dumped, "alias/orders"));
	assert_non_null(strstr(dumped, ARN));
	assert_non_null(strstr(dumped, "eu-west-1"));
	assert_non_null(strstr(dumped, "\"service\":\"orders\""));
	assert_non_null(strstr(dumped, "dmbyok:volume"));
	assert_non_null(strstr(dumped, "version:    2"));
	assert_null(strstr(dumped, CIPHERTEXT));
	assert_null(strstr(dumped, "00112233445566778899aabbccddeeff"));
	free(good);

	dumped[0] = '\0';
	crypt_set_log_callback(NULL, log_to_buffer, NULL);
	dump(NULL, "{\"type\":\"dmbyok\"}");
	crypt_set_log_callback(NULL, NULL, NULL);
	assert_non_null(strstr(dumped, "malformed token"));
}

static void buffer_free_takes_null(void **state)
{
	buffer_free(NULL, 0);
	buffer_free(NULL, 64);
}

static void reload_finds_the_same_image(void **state)
{
	void *again;

	/* -z nodelete: dlclose (as libcryptsetup does) leaves the image mapped, and libcurl in it.
	 */
	assert_int_equal(dlclose(handle), 0);
	again = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	assert_non_null(again);
	assert_ptr_equal(dlvsym(again, CRYPT_TOKEN_ABI_VALIDATE, CRYPT_TOKEN_ABI_VERSION1),
	                 (void *)validate);
	handle = again;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(abi_symbols_are_versioned),
		cmocka_unit_test(validate_accepts_a_token),
		cmocka_unit_test(validate_refuses_malformed_tokens),
		cmocka_unit_test(dump_shows_the_key_never_secrets),
		cmocka_unit_test(buffer_free_takes_null),
		cmocka_unit_test(reload_finds_the_same_image),
	};

	if (argc != 2) {
		fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
		return 2;
	}
	plugin_path = argv[1];
	return cmocka_run_group_tests(tests, load, NULL);
}
