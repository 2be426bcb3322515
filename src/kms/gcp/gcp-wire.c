/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the Google Cloud KMS provider's modules share: resource names, CRC32C (Cloud KMS's
 * integrity fields), base64 into locked memory, and secret strings out of JSON bodies.
 */
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "gcp.h"
#include "dmbyok/log.h"
#include "../aws/aws.h"

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

int dmbyok_gcp_base64_secret(const void *data, size_t n, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	int len;

	ENSURE(n <= (1U << 20), E2BIG);
	GUARD(dmbyok_secret_new((n + 2) / 3 * 4 + 1, &s));
	/* EVP_EncodeBlock writes only into its output: no copy outside locked memory. */
	len = EVP_EncodeBlock(s->data, data, (int)n);
	ENSURE(len >= 0, EIO);
	s->size = (size_t)len;
	s->data[len] = '\0';
	*ret = TAKE_PTR(s);
	return 0;
}

int dmbyok_gcp_base64url(const void *data, size_t n, char **ret)
{
	_cleanup_free_ char *s = NULL;
	int len;

	ENSURE(n <= (1U << 20), E2BIG);
	s = malloc((n + 2) / 3 * 4 + 1);
	ENSURE_ALLOC(s);
	len = EVP_EncodeBlock((unsigned char *)s, data, (int)n);
	ENSURE(len >= 0, EIO);
	while (len > 0 && s[len - 1] == '=')
		len--;
	s[len] = '\0';
	for (char *p = s; *p; p++)
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
	*ret = TAKE_PTR(s);
	return 0;
}

static char *skip_ws(char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* p at an opening quote: the character after the closing one, or NULL. */
static char *skip_string(char *p)
{
	for (p++; *p; p++) {
		if (*p == '\\') {
			if (!*++p)
				return NULL;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

/* A value at depth 0: the character after it, or NULL. */
static char *skip_value(char *p)
{
	unsigned depth = 0;

	for (;;) {
		switch (*p) {
		case '\0':
			return NULL;
		case '"':
			p = skip_string(p);
			if (!p)
				return NULL;
			if (depth == 0)
				return p;
			continue;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (depth == 0)
				return p;
			if (--depth == 0)
				return p + 1;
			break;
		case ',':
			if (depth == 0)
				return p;
			break;
		}
		p++;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Unescapes the string at v (after its opening quote) into out; the closing quote's place. */
static char *unescape(char *v, struct secret *out)
{
	size_t n = 0;

	for (; *v && *v != '"'; v++) {
		char c = *v;

		if (c == '\\') {
			switch (*++v) {
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case '"':
			case '\\':
			case '/':
				c = *v;
				break;
			case 'u': {
				int x = 0;

				for (int i = 1; i <= 4; i++) {
					int h = hexval(v[i]);

					if (h < 0)
						return NULL;
					x = x * 16 + h;
				}
				/* Keys, tokens and PEM are ASCII. */
				if (x == 0 || x > 0x7f)
					return NULL;
				c = (char)x;
				v += 4;
				break;
			}
			default:
				return NULL;
			}
		} else if ((unsigned char)c < 0x20) {
			return NULL;
		}
		out->data[n++] = (uint8_t)c;
	}
	if (*v != '"')
		return NULL;
	out->data[n] = '\0';
	out->size = n;
	return v;
}

int dmbyok_gcp_json_take_string(struct secret *body, const char *field, struct secret **ret)
{
	_cleanup_secret_ struct secret *val = NULL;
	size_t field_len = strlen(field);
	char *p = (char *)body->data;

	p = skip_ws(p);
	if (*p++ != '{')
		return -EPROTO;
	for (;;) {
		char *key, *end;

		p = skip_ws(p);
		if (*p == '}')
			break;
		if (*p != '"')
			return -EPROTO;
		key = p + 1;
		end = skip_string(p);
		/* An escaped name could spell `field` to a JSON parser without matching here. */
		if (!end || memchr(key, '\\', (size_t)(end - key)))
			return -EPROTO;
		p = skip_ws(end);
		if (*p++ != ':')
			return -EPROTO;
		p = skip_ws(p);

		if ((size_t)(end - key) == field_len + 1 && !strncmp(key, field, field_len)) {
			char *q, *close;

			if (*p != '"' || val)
				return -EPROTO;
			close = skip_string(p);
			if (!close)
				return -EPROTO;
			GUARD(dmbyok_secret_new((size_t)(close - p), &val));
			q = unescape(p + 1, val);
			if (!q || q + 1 != close)
				return -EPROTO;
			/* 'A' keeps the document valid JSON for the parser that reads the rest. */
			memset(p + 1, 'A', (size_t)(q - (p + 1)));
			p = close;
		} else {
			p = skip_value(p);
			if (!p)
				return -EPROTO;
		}
		p = skip_ws(p);
		if (*p == ',')
			p++;
		else if (*p != '}')
			return -EPROTO;
	}
	if (!val)
		return -ENOENT;
	*ret = TAKE_PTR(val);
	return 0;
}

bool dmbyok_gcp_url_acceptable(const char *url)
{
	return url && !strchr(url, '@') &&
	       (!strncasecmp(url, "https://", 8) ||
	        (!strncasecmp(url, "http://", 7) && dmbyok_aws_url_is_loopback(url)));
}
