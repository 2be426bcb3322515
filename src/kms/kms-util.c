/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the cloud KMS providers share (kms-util.h): written once for Google's provider,
 * used by Azure's and AWS's as well.
 */
#include <ctype.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "kms-util.h"
#include "dmbyok/macro.h"

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);

int dmbyok_kms_base64_secret(const void *data, size_t n, struct secret **ret)
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

int dmbyok_kms_base64url(const void *data, size_t n, char **ret)
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

/* The member scan both variants share; `plain`: a value with an escape is refused. */
static int take_string(struct secret *body, const char *field, bool plain, struct secret **ret)
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
			if (!close || (plain && memchr(p + 1, '\\', (size_t)(close - 1 - (p + 1)))))
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

int dmbyok_kms_json_take_string(struct secret *body, const char *field, struct secret **ret)
{
	return take_string(body, field, false, ret);
}

int dmbyok_kms_json_take_plain_string(struct secret *body, const char *field, struct secret **ret)
{
	return take_string(body, field, true, ret);
}

bool dmbyok_kms_url_is_loopback(const char *url)
{
	const char *h = strstr(url, "://"), *end;
	size_t n;

	if (!h)
		return false;
	h += 3;
	if (*h == '[') {
		end = strchr(h, ']');
		return end && (size_t)(end - h) == 4 && !strncmp(h, "[::1", 4);
	}
	end = h + strcspn(h, ":/?#");
	n = (size_t)(end - h);
	if (n == 9 && !strncasecmp(h, "localhost", 9))
		return true;
	/* 127.0.0.0/8 written as a dotted quad */
	if (n >= 7 && !strncmp(h, "127.", 4)) {
		for (const char *p = h; p < end; p++)
			if (!isdigit((unsigned char)*p) && *p != '.')
				return false;
		return true;
	}
	return false;
}

bool dmbyok_kms_url_acceptable(const char *url)
{
	return url && !strchr(url, '@') &&
	       (!strncasecmp(url, "https://", 8) ||
	        (!strncasecmp(url, "http://", 7) && dmbyok_kms_url_is_loopback(url)));
}

int dmbyok_kms_read_secret_file(const char *path, size_t max_size, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	struct stat st;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	if (fstat(fd, &st) < 0) {
		r = negative_errno();
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || (size_t)st.st_size >= max_size) {
		r = -EINVAL;
		goto out;
	}
	r = dmbyok_secret_new((size_t)st.st_size + 1, &s);
	if (r < 0)
		goto out;
	s->size = 0;
	/* Up to the size fstat saw: a file rewritten meanwhile gives what it holds now. */
	while (s->size < (size_t)st.st_size) {
		ssize_t n = read(fd, s->data + s->size, (size_t)st.st_size - s->size);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = negative_errno();
			goto out;
		}
		if (n == 0)
			break;
		s->size += (size_t)n;
	}
	s->data[s->size] = '\0';
	*ret = TAKE_PTR(s);
out:
	close(fd);
	return r;
}

/* OpenSSL must never prompt for a passphrase: an encrypted key is a configuration error. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

int dmbyok_kms_rsa_key_from_pem(const struct secret *pem, EVP_PKEY **ret)
{
	_cleanup_(BIO_freep) BIO *bio = NULL;
	EVP_PKEY *key;

	bio = BIO_new_mem_buf(pem->data, (int)pem->size);
	ENSURE_ALLOC(bio);
	key = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, NULL);
	if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
		EVP_PKEY_free(key);
		return -EINVAL;
	}
	*ret = key;
	return 0;
}

/* The compact JSON text of o, base64url: a JWT's header or claims part. */
static int base64url_json(json_object *o, char **ret)
{
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                                         JSON_C_TO_STRING_NOSLASHESCAPE);

	ENSURE_ALLOC(text);
	return dmbyok_kms_base64url(text, strlen(text), ret);
}

int dmbyok_kms_jwt_sign_rs256(EVP_PKEY *key, const char *key_member, const char *key_value,
                              json_object *claims, struct secret **ret)
{
	_cleanup_(json_object_putp) json_object *header = NULL;
	_cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = NULL;
	_cleanup_free_ char *h64 = NULL, *c64 = NULL, *s64 = NULL;
	_cleanup_free_ unsigned char *sig = NULL;
	_cleanup_secret_ struct secret *jwt = NULL;
	size_t sig_len = 0;

	header = json_object_new_object();
	ENSURE_ALLOC(header);
	if (json_object_object_add(header, "alg", json_object_new_string("RS256")) < 0 ||
	    json_object_object_add(header, "typ", json_object_new_string("JWT")) < 0 ||
	    (key_member &&
	     json_object_object_add(header, key_member, json_object_new_string(key_value)) < 0))
		return -ENOMEM;
	GUARD(base64url_json(header, &h64));
	GUARD(base64url_json(claims, &c64));

	md = EVP_MD_CTX_new();
	ENSURE_ALLOC(md);
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_PKEY_get_size(key) <= 0)
		return -EIO;
	sig_len = (size_t)EVP_PKEY_get_size(key);
	sig = malloc(sig_len);
	ENSURE_ALLOC(sig);

	/* header.claims, then .signature, built in locked memory: the JWT is a credential. */
	GUARD(dmbyok_secret_new(strlen(h64) + strlen(c64) + (sig_len + 2) / 3 * 4 + 3, &jwt));
	jwt->size = 0;
	GUARD(dmbyok_secret_append(jwt, h64, strlen(h64)));
	GUARD(dmbyok_secret_append(jwt, ".", 1));
	GUARD(dmbyok_secret_append(jwt, c64, strlen(c64)));
	if (EVP_DigestSign(md, sig, &sig_len, jwt->data, jwt->size) != 1)
		return -EIO;
	GUARD(dmbyok_kms_base64url(sig, sig_len, &s64));
	GUARD(dmbyok_secret_append(jwt, ".", 1));
	GUARD(dmbyok_secret_append(jwt, s64, strlen(s64)));
	jwt->data[jwt->size] = '\0';
	dmbyok_secure_wipe(s64, strlen(s64));
	*ret = TAKE_PTR(jwt);
	return 0;
}
