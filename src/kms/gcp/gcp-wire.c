/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the Google Cloud KMS provider's modules share: resource names and CRC32C (Cloud KMS's
 * integrity fields). Base64 and JSON helpers that are not Google's are in ../kms-util.c.
 */
#include <string.h>

#include "gcp.h"
#include "dmbyok/log.h"

/* [a-zA-Z0-9_-]{1,63}: key ring and key ids. */
static size_t span_id(const char *s)
{
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
}

/* "prefix/VALUE" at *p: VALUE's length (ending at '/' or NUL), 0 when absent or empty. */
static size_t segment(const char **p, const char *prefix, size_t (*span)(const char *))
{
	size_t n = strlen(prefix), m;

	if (strncmp(*p, prefix, n) != 0)
		return 0;
	m = span(*p + n);
	if (m == 0 || m > 63 || ((*p)[n + m] != '/' && (*p)[n + m] != '\0'))
		return 0;
	*p += n;
	return m;
}

/* Project ids (and "domain.com:id" legacy ones), or numbers. */
static size_t span_project(const char *s)
{
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-.:");
}

static size_t span_location(const char *s)
{
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-");
}

static size_t span_version(const char *s)
{
	size_t n = strspn(s, "0123456789");

	return n > 0 && n <= 10 && s[0] != '0' ? n : 0;
}

int dmbyok_gcp_parse_name(const char *name, char **ret_key, char **ret_location, char **ret_version)
{
	const char *p = name, *loc, *key_end;
	size_t n_loc, n;

	ENSURE(name, EINVAL);
	if (!(n = segment(&p, "projects/", span_project)))
		return -EINVAL;
	p += n;
	if (!(n_loc = segment(&p, "/locations/", span_location)))
		return -EINVAL;
	loc = p;
	p += n_loc;
	if (!(n = segment(&p, "/keyRings/", span_id)))
		return -EINVAL;
	p += n;
	if (!(n = segment(&p, "/cryptoKeys/", span_id)))
		return -EINVAL;
	p += n;
	key_end = p;
	if (*p) {
		if (!(n = segment(&p, "/cryptoKeyVersions/", span_version)))
			return -EINVAL;
		p += n;
		if (*p)
			return -EINVAL;
	}
	if (ret_key) {
		*ret_key = strndup(name, (size_t)(key_end - name));
		ENSURE_ALLOC(*ret_key);
	}
	if (ret_location) {
		*ret_location = strndup(loc, n_loc);
		if (!*ret_location) {
			if (ret_key)
				free(TAKE_PTR(*ret_key));
			return -ENOMEM;
		}
	}
	if (ret_version) {
		*ret_version = *key_end ? strdup(key_end + strlen("/cryptoKeyVersions/")) : NULL;
		if (*key_end && !*ret_version) {
			if (ret_key)
				free(TAKE_PTR(*ret_key));
			if (ret_location)
				free(TAKE_PTR(*ret_location));
			return -ENOMEM;
		}
	}
	return 0;
}

bool dmbyok_gcp_is_name(const char *name)
{
	return dmbyok_gcp_parse_name(name, NULL, NULL, NULL) == 0;
}

int dmbyok_gcp_key_location(const char *name, char **ret)
{
	return dmbyok_gcp_parse_name(name, NULL, ret, NULL);
}

uint32_t dmbyok_gcp_crc32c(const void *data, size_t n)
{
	const uint8_t *p = data;
	uint32_t crc = 0xFFFFFFFFU;

	/* Bitwise: a few hundred bytes per call, not worth a table. */
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78U & (0U - (crc & 1U)));
	}
	return crc ^ 0xFFFFFFFFU;
}
