/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include <openssl/evp.h>

#include "dmbyok/encoding.h"
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

int dmbyok_base64_decode(const char *b64, size_t len, void *out, size_t out_size)
{
	uint8_t *tmp;
	size_t pad = 0, max;
	int n;

	/* EVP_DecodeBlock wants whole quanta and counts padding as output: account for both. */
	ENSURE(len % 4 == 0 && len <= (size_t)INT32_MAX, EINVAL);
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (b64[i] == '\0')
			return -EINVAL;
	if (b64[len - 1] == '=')
		pad++;
	if (b64[len - 2] == '=')
		pad++;
	max = len / 4 * 3;
	ENSURE(max - pad <= out_size, E2BIG);

	/* Decode straight into `out` when it has room for the padding bytes too. */
	if (out_size >= max) {
		n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);
		if (n < 0 || (size_t)n != max) {
			dmbyok_secure_wipe(out, max);
			return -EINVAL;
		}
		dmbyok_secure_wipe((uint8_t *)out + max - pad, pad);
		return (int)(max - pad);
	}

	/* Otherwise decode via a locked bounce buffer, since `out` may be a secret. */
	_cleanup_secret_ struct secret *bounce = NULL;
	GUARD(dmbyok_secret_new(max, &bounce));
	tmp = bounce->data;
	n = EVP_DecodeBlock(tmp, (const unsigned char *)b64, (int)len);
	if (n < 0 || (size_t)n != max)
		return -EINVAL;
	memcpy(out, tmp, max - pad);
	return (int)(max - pad);
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
