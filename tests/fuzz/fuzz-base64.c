/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict base64: decoding accepts exactly the canonical encodings, so whatever decodes must
 * encode back to the same text; and anything encoded decodes back to itself.
 */
#include "dmbyok/encoding.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t room = size / 4 * 3;
	/* exact-size heap buffers, so ASan sees any write past the room given */
	_cleanup_free_ uint8_t *out = malloc(room + 1), *again = NULL;
	_cleanup_free_ char *enc = NULL, *enc2 = NULL;
	int n, m;

	FUZZ_CHECK(out);
	n = dmbyok_base64_decode((const char *)data, size, out, room);
	FUZZ_CHECK(n == -EINVAL || (n >= 0 && (size_t)n <= room));
	if (n >= 0) {
		FUZZ_CHECK(dmbyok_base64_encode(out, (size_t)n, &enc) == 0);
		FUZZ_CHECK(strlen(enc) == size && !memcmp(enc, data, size));
		/* an exact fit works, one byte less is -E2BIG */
		again = malloc((size_t)n + 1);
		FUZZ_CHECK(again);
		m = dmbyok_base64_decode((const char *)data, size, again, (size_t)n);
		FUZZ_CHECK(m == n && !memcmp(again, out, (size_t)n));
		if (n > 0)
			FUZZ_CHECK(dmbyok_base64_decode((const char *)data, size, again,
			                                (size_t)n - 1) == -E2BIG);
	}

	/* the input as bytes to encode */
	FUZZ_CHECK(dmbyok_base64_encode(data, size, &enc2) == 0);
	free(out);
	out = malloc(size + 1);
	FUZZ_CHECK(out);
	n = dmbyok_base64_decode(enc2, strlen(enc2), out, size);
	FUZZ_CHECK(n >= 0 && (size_t)n == size && !memcmp(out, data, size));
	return 0;
}
