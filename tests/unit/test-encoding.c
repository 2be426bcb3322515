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

static void test_base64_decode_exact_fit(void **state)
{
	uint8_t out[5] = { 0, 0, 0, 0, 0xaa };

	(void)state;
	/* "Zm9vYg==" is 4 bytes: no room for the padding is needed, nothing beyond is touched. */
	assert_int_equal(dmbyok_base64_decode("Zm9vYg==", 8, out, 4), 4);
	assert_memory_equal(out, "foob", 4);
	assert_int_equal(out[4], 0xaa);
	assert_int_equal(dmbyok_base64_decode("Zm9vYg==", 8, out, 3), -E2BIG);
}

static void test_base64_decode_rejects_bad_input(void **state)
{
	static const char *const bad[] = {
		"Zm9",      /* not whole quanta */
		"Zm9v!!!!", /* outside the alphabet */
		"Zg=A",     /* padding in the middle */
		"Z===",     /* three '=' */
		"====",     /* nothing but padding */
		"=Zm9",     /* padding first */
		"Zg==Zm9v", /* padding before the end */
		"Zh==",     /* non-zero bits under "==" ("Zg==" is canonical) */
		"Zm9=",     /* non-zero bits under '=' ("Zm8=" is canonical) */
		"Zm9v Yg=", /* whitespace */
		"Zm9v\nYg=",   "Zm9vYg=\r", "Zm-_", /* base64url alphabet */
		"Zm9v\x80Zm9",
	};
	uint8_t out[16];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 0x55, sizeof(out));
		if (dmbyok_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out)) != -EINVAL)
			fail_msg("\"%s\" was not refused", bad[i]);
		/* whatever was decoded before the fault is wiped */
		for (size_t j = 0; j < 3; j++)
			assert_true(out[j] == 0 || out[j] == 0x55);
	}
	/* an embedded NUL inside the given length is not the end of the input */
	assert_int_equal(dmbyok_base64_decode("Zm9v\0Zm9", 8, out, sizeof(out)), -EINVAL);
	assert_int_equal(dmbyok_base64_decode("Zm9vYmFy", 8, out, 5), -E2BIG);
}

static void test_base64_decode_valid(void **state)
{
	uint8_t all[256], out[256];
	char *enc = NULL;

	(void)state;
	/* all 64 characters and both padded forms */
	assert_int_equal(dmbyok_base64_decode("+/+/", 4, out, sizeof(out)), 3);
	assert_memory_equal(out, "\xfb\xff\xbf", 3);
	assert_int_equal(dmbyok_base64_decode("AA==", 4, out, sizeof(out)), 1);
	assert_int_equal(out[0], 0);
	assert_int_equal(dmbyok_base64_decode("//8=", 4, out, sizeof(out)), 2);
	assert_memory_equal(out, "\xff\xff", 2);
	assert_int_equal(dmbyok_base64_decode("", 0, out, 0), 0);

	/* every length 0..256 of every byte value round-trips through the encoder */
	for (size_t i = 0; i < sizeof(all); i++)
		all[i] = (uint8_t)(i * 167 + 13);
	for (size_t n = 0; n <= sizeof(all); n++) {
		assert_int_equal(dmbyok_base64_encode(all, n, &enc), 0);
		assert_int_equal(dmbyok_base64_decode(enc, strlen(enc), out, n), (int)n);
		assert_memory_equal(out, all, n);
		free(enc);
	}
}

static void test_hex(void **state)
{
	char *hex = NULL;

	(void)state;
	assert_int_equal(dmbyok_hex_encode("\x00\xff\x10", 3, &hex), 0);
	assert_string_equal(hex, "00ff10");
	free(hex);
}

/* Options: decimal only, inside the range; anything else is refused with -EINVAL. */
static void test_parse_option_uint(void **state)
{
	unsigned v = 7;

	(void)state;
	assert_int_equal(dmbyok_parse_option_uint("timeout", "30", 1, 3600, "seconds", &v), 0);
	assert_int_equal(v, 30);
	assert_int_equal(dmbyok_parse_option_uint("timeout", "3600", 1, 3600, "seconds", &v), 0);
	assert_int_equal(v, 3600);
	for (const char *const *bad =
	         (const char *const[]){ "0", "3601", "-5", "+5", " 5", "5s", "", "0x10",
	                                "99999999999999999999", NULL };
	     *bad; bad++)
		assert_int_equal(dmbyok_parse_option_uint("timeout", *bad, 1, 3600, "seconds", &v),
		                 -EINVAL);
	assert_int_equal(v, 3600); /* untouched on failure */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_option_uint),
		cmocka_unit_test(test_base64_rfc4648_vectors),
		cmocka_unit_test(test_base64_decode_exact_fit),
		cmocka_unit_test(test_base64_decode_rejects_bad_input),
		cmocka_unit_test(test_base64_decode_valid),
		cmocka_unit_test(test_hex),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
