/* SPDX-License-Identifier: Apache-2.0 */
#include <limits.h>
#include <string.h>

#include <openssl/evp.h>

#include "dmbyok/encoding.h"
#include "dmbyok/log.h"
#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

int dmbyok_base64_encode(const void *data, size_t n, char **ret)
{
	char *s;

	ENSURE(n <= (size_t)INT32_MAX / 2, E2BIG);
	s = malloc(4 * ((n + 2) / 3) + 1);
	ENSURE_ALLOC(s);
	EVP_EncodeBlock((unsigned char *)s, data, (int)n);
	*ret = s;
	return 0;
}

/* All ones when lo <= c <= hi, else zero; for c in 0..255, without a branch. */
static int ct_in_range(int c, int lo, int hi)
{
	return ((lo - 1 - c) & (c - hi - 1)) >> 8;
}

/*
 * The 6-bit value of a base64 character, or -1 outside the alphabet ('=' included). Free
 * of branches and table lookups indexed by the character, since it decodes data keys.
 */
static int b64_value(uint8_t ch)
{
	int c = ch, v = 0;

	v |= ct_in_range(c, 'A', 'Z') & (c - 'A' + 1);
	v |= ct_in_range(c, 'a', 'z') & (c - 'a' + 27);
	v |= ct_in_range(c, '0', '9') & (c - '0' + 53);
	v |= ct_in_range(c, '+', '+') & 63;
	v |= ct_in_range(c, '/', '/') & 64;
	return v - 1;
}

/*
 * Strict RFC 4648 decoding: whole quanta, padding only at the end and at most "==", no
 * whitespace, and the bits padding drops must be zero, so every byte string has exactly
 * one accepted encoding. Decodes straight into `out`, which is often secret memory: no
 * intermediate copy exists, and on failure whatever was written is wiped.
 */
int dmbyok_base64_decode(const char *b64, size_t len, void *out, size_t out_size)
{
	const uint8_t *in = (const uint8_t *)b64;
	uint8_t *o = out;
	size_t pad = 0, n, done = 0;
	uint32_t acc = 0;

	ENSURE(len % 4 == 0 && len / 4 * 3 <= (size_t)INT32_MAX, EINVAL);
	if (len == 0)
		return 0;
	if (in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	n = len / 4 * 3 - pad;
	ENSURE(n <= out_size, E2BIG);

	for (size_t i = 0; i < len - pad; i++) {
		int v = b64_value(in[i]);

		if (v < 0)
			goto fail;
		acc = acc << 6 | (uint32_t)v;
		if (i % 4 == 3) {
			o[done++] = (uint8_t)(acc >> 16);
			o[done++] = (uint8_t)(acc >> 8);
			o[done++] = (uint8_t)acc;
			acc = 0;
		}
	}
	/* The last quantum: 3 characters carry 2 bytes + 2 zero bits, 2 carry 1 byte + 4. */
	if (pad == 1) {
		if (acc & 0x3)
			goto fail;
		o[done++] = (uint8_t)(acc >> 10);
		o[done++] = (uint8_t)(acc >> 2);
	} else if (pad == 2) {
		if (acc & 0xf)
			goto fail;
		o[done++] = (uint8_t)(acc >> 4);
	}
	dmbyok_secure_wipe(&acc, sizeof(acc));
	return (int)n;

fail:
	dmbyok_secure_wipe(&acc, sizeof(acc));
	dmbyok_secure_wipe(o, done);
	return -EINVAL;
}

int dmbyok_hex_encode(const void *data, size_t n, char **ret)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = data;
	char *s;

	s = malloc(2 * n + 1);
	ENSURE_ALLOC(s);
	for (size_t i = 0; i < n; i++) {
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 0xf];
	}
	s[2 * n] = '\0';
	*ret = s;
	return 0;
}

int dmbyok_parse_option_uint(const char *option, const char *s, unsigned min, unsigned max,
                             const char *unit, unsigned *ret)
{
	char *end = NULL;
	unsigned long v;

	errno = 0;
	v = *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : ULONG_MAX;
	if (errno || !end || *end || v < min || v > max)
		return log_error_errno(EINVAL, "--%s wants %u to %u %s, not \"%s\".", option, min,
		                       max, unit, s);
	*ret = (unsigned)v;
	return 0;
}
