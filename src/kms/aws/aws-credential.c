/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One set of AWS credentials as a value: secrets in locked memory, where it came from, when
 * it expires, and its JSON form from the metadata endpoints. The chain that finds them is
 * aws-credentials.c; STS and credential_process make them too.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aws.h"
#include "dmbyok/log.h"

int dmbyok_aws_secret_strndup(const char *s, size_t n, struct secret **ret)
{
	_cleanup_secret_ struct secret *x = NULL;

	GUARD(dmbyok_secret_new(n + 1, &x));
	memcpy(x->data, s, n);
	x->data[n] = '\0';
	x->size = n;
	*ret = TAKE_PTR(x);
	return 0;
}

void dmbyok_aws_credentials_free(struct aws_credentials *cr)
{
	if (!cr)
		return;
	free(cr->access_key_id);
	dmbyok_secret_free(cr->secret_access_key);
	dmbyok_secret_free(cr->session_token);
	free(cr);
}

/* Header values must not be able to smuggle in further headers. */
bool dmbyok_aws_header_safe(const char *s, size_t n)
{
	return !memchr(s, '\r', n) && !memchr(s, '\n', n);
}

int dmbyok_aws_credentials_new(const char *akid, struct secret *secret, struct secret *token,
                               time_t expiration, const char *source, struct aws_credentials **ret)
{
	_cleanup_secret_ struct secret *s = secret, *t = token;
	_cleanup_(dmbyok_aws_credentials_freep) struct aws_credentials *cr = NULL;

	if (!akid || !*akid || !s || !s->size || !dmbyok_aws_header_safe(akid, strlen(akid)) ||
	    !dmbyok_aws_header_safe((const char *)s->data, s->size) ||
	    (t && !dmbyok_aws_header_safe((const char *)t->data, t->size)))
		return -EINVAL;
	cr = calloc(1, sizeof(*cr));
	ENSURE_ALLOC(cr);
	cr->access_key_id = strdup(akid);
	ENSURE_ALLOC(cr->access_key_id);
	cr->secret_access_key = TAKE_PTR(s);
	if (t && t->size)
		cr->session_token = TAKE_PTR(t);
	cr->expiration = expiration;
	cr->obtained = time(NULL);
	cr->source = source;
	*ret = TAKE_PTR(cr);
	return 0;
}

int dmbyok_aws_parse_iso8601(const char *s, time_t *ret)
{
	struct tm tm = {};
	const char *p;
	time_t t;

	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -EINVAL;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (strcmp(p, "Z") && strcmp(p, "+00:00") && strcmp(p, "+0000"))
		return -EINVAL;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*ret = t;
	return 0;
}

/* Credentials JSON of the container and instance metadata endpoints. */
int dmbyok_aws_credentials_from_json(struct secret *body, const char *source,
                                     struct aws_credentials **ret)
{
	_cleanup_secret_ struct secret *secret = NULL, *token = NULL;
	json_object *j, *akid, *exp, *code;
	time_t expiration = 0;
	int r;

	/* Secrets leave the body before json-c copies anything into the heap. */
	r = dmbyok_aws_json_take_string(body, "SecretAccessKey", &secret);
	if (r < 0)
		return r == -ENOENT ? -EPROTO : r;
	r = dmbyok_aws_json_take_string(body, "Token", &token);
	if (r < 0 && r != -ENOENT)
		return r;
	j = json_tokener_parse((const char *)body->data);
	if (!j || !json_object_is_type(j, json_type_object)) {
		r = -EPROTO;
		goto out;
	}
	/* A member of another type (null, a number) is as wrong as a failure code. */
	if (json_object_object_get_ex(j, "Code", &code) &&
	    (!json_object_is_type(code, json_type_string) ||
	     strcmp(json_object_get_string(code), "Success") != 0)) {
		r = log_debug_errno(EPROTO, "Metadata credentials not ready: %s",
		                    json_object_get_string(code));
		goto out;
	}
	if (!json_object_object_get_ex(j, "AccessKeyId", &akid) ||
	    !json_object_is_type(akid, json_type_string)) {
		r = -EPROTO;
		goto out;
	}
	if (json_object_object_get_ex(j, "Expiration", &exp) &&
	    (!json_object_is_type(exp, json_type_string) ||
	     dmbyok_aws_parse_iso8601(json_object_get_string(exp), &expiration) < 0)) {
		r = log_debug_errno(EPROTO, "Bad Expiration in %s credentials.", source);
		goto out;
	}
	/* Temporary credentials always expire; without a date, refresh them regularly. */
	if (!expiration)
		expiration = time(NULL) + 3600;
	r = dmbyok_aws_credentials_new(json_object_get_string(akid), TAKE_PTR(secret),
	                               TAKE_PTR(token), expiration, source, ret);
	if (r == -EINVAL)
		r = -EPROTO;
out:
	json_object_put(j);
	return r;
}
