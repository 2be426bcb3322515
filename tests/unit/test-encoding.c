/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dmbyok/encoding.h"

/* RFC 4648 section 10 test vectors. */
static const struct {
	const char *plain;
	const char *b64;
} vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

static void test_base64_rfc4648_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char *enc = NULL;
		uint8_t out[16];
		int n;

		assert_int_equal(
		    dmbyok_base64_encode(vectors[i].plain, strlen(vectors[i].plain), &enc), 0);
		assert_string_equal(enc, vectors[i].b64);
		free(enc);

		n = dmbyok_base64_decode(vectors[i].b64, strlen(vectors[i].b64), out, sizeof(out));
		assert_int_equal(n, (int)strlen(vectors[i].plain));
		assert_memory_equal(out, vectors[i].plain, (size_t)n);
	}
}

static void test_base64_decode_exact_fit_uses_bounce_buffer(void **state)
{
	uint8_t out[4];

	(void)state;
	/* "Zm9vYg==" decodes to 4 bytes but needs 6 bytes of room in one pass. */
	assert_int_equal(dmbyok_base64_decode("Zm9vYg==", 8, out, sizeof(out)), 4);
	assert_memory_equal(out, "foob", 4);
}

static void test_base64_decode_rejects_bad_input(void **state)
{
	uint8_t out[16];

	(void)state;
	assert_int_equal(dmbyok_base64_decode("Zm9", 3, out, sizeof(out)), -EINVAL);
	assert_int_equal(dmbyok_base64_decode("Zm9v!!!!", 8, out, sizeof(out)), -EINVAL);
	assert_int_equal(dmbyok_base64_decode("Zm9vYmFy", 8, out, 5), -E2BIG);
}

static void test_hex(void **state)
{
	char *hex = NULL;

	(void)state;
	assert_int_equal(dmbyok_hex_encode("\x00\xff\x10", 3, &hex), 0);
	assert_string_equal(hex, "00ff10");
	free(hex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_rfc4648_vectors),
		cmocka_unit_test(test_base64_decode_exact_fit_uses_bounce_buffer),
		cmocka_unit_test(test_base64_decode_rejects_bad_input),
		cmocka_unit_test(test_hex),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
