/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every AWS service's responses share, for KMS, STS and the credential endpoints
 * alike: error codes and their place in dmbyok's error taxonomy, and taking a secret
 * string out of a JSON body before any JSON library copies it to the heap.
 */
#include <stdbool.h>
#include <string.h>

#include "aws.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"

int dmbyok_aws_error_code(const char *type, char **ret)
{
	const char *p, *hash;
	char *s;

	ENSURE(type, EINVAL);
	/* "aws.protocoltests#FooError:http://..." -> "FooError" */
	hash = strrchr(type, '#');
	p = hash ? hash + 1 : type;
	s = strndup(p, strcspn(p, ":"));
	ENSURE_ALLOC(s);
	*ret = s;
	return 0;
}

static bool code_in(const char *code, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(code, *list))
			return true;
	return false;
}

int dmbyok_aws_error_to_errno(const char *code, long status)
{
	static const char *const revoked[] = {
		"DisabledException",     "KMSInvalidStateException", "NotFoundException",
		"AccessDeniedException", "IncorrectKeyException",    NULL,
	};
	static const char *const remote[] = {
		"DependencyTimeoutException", "KMSInternalException",
		"KeyUnavailableException",    "InternalFailure",
		"ServiceUnavailable",         NULL,
	};
	static const char *const rejected[] = {
		"UnrecognizedClientException",
		"InvalidSignatureException",
		"IncompleteSignatureException",
		"MissingAuthenticationTokenException",
		"InvalidClientTokenId",
		"SignatureDoesNotMatch",
		/* a signature outside the allowed window: this host's clock is off */
		"RequestExpired",
		NULL,
	};
	static const char *const expired[] = { "ExpiredTokenException", "ExpiredToken", NULL };

	if (code && *code) {
		if (code_in(code, revoked))
			return -EKEYREVOKED;
		if (!strcmp(code, "InvalidCiphertextException"))
			return -EBADMSG;
		if (code_in(code, remote))
			return -EREMOTEIO;
		if (code_in(code, expired))
			return -EKEYEXPIRED;
		if (code_in(code, rejected))
			return -EKEYREJECTED;
		if (dmbyok_aws_error_is_retryable(code, 0))
			return -EAGAIN; /* throttling (the transient codes are caught above) */
		/* ValidationException, InvalidKeyUsage, InvalidArn, InvalidGrantToken, ... */
		if (status >= 400 && status < 500)
			return -EINVAL;
	}
	if (status == 429)
		return -EAGAIN;
	if (status >= 500)
		return -EREMOTEIO;
	return -EPROTO;
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* p at an opening quote: returns the character after the closing one, or NULL. */
static const char *skip_string(const char *p)
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

static const char *skip_value(const char *p)
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

int dmbyok_aws_json_take_string(struct secret *body, const char *field, struct secret **ret)
{
	_cleanup_secret_ struct secret *val = NULL;
	size_t field_len = strlen(field);
	char *p = (char *)body->data;

	p = (char *)skip_ws(p);
	if (*p++ != '{')
		return -EPROTO;
	for (;;) {
		const char *key, *end;

		p = (char *)skip_ws(p);
		if (*p == '}')
			break;
		if (*p != '"')
			return -EPROTO;
		key = p + 1;
		end = skip_string(p);
		/* An escaped name could spell `field` to a JSON parser without matching here. */
		if (!end || memchr(key, '\\', (size_t)(end - key)))
			return -EPROTO;
		p = (char *)skip_ws(end);
		if (*p++ != ':')
			return -EPROTO;
		p = (char *)skip_ws(p);

		if ((size_t)(end - key) == field_len + 1 && !strncmp(key, field, field_len)) {
			char *v = p + 1, *q;
			size_t n;

			if (*p != '"' || val)
				return -EPROTO;
			q = strchr(v, '"');
			if (!q || memchr(v, '\\', (size_t)(q - v)))
				return -EPROTO;
			n = (size_t)(q - v);
			GUARD(dmbyok_secret_new(n + 1, &val));
			memcpy(val->data, v, n);
			val->data[n] = '\0';
			val->size = n;
			/* 'A' keeps the document valid JSON (and valid base64) for the parser. */
			memset(v, 'A', n);
			p = q + 1;
		} else {
			p = (char *)skip_value(p);
			if (!p)
				return -EPROTO;
		}
		p = (char *)skip_ws(p);
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
