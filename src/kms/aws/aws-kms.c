/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aws.h"
#include "dmbyok/encoding.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "../kms-provider.h"

struct aws_kms {
	struct kms_http *http;
	struct aws_credentials_cache creds;
	struct kms_retry retry;
	char *region; /* default region; NULL when only key ARNs can tell */
	bool region_explicit;
	char *endpoint; /* override, or NULL for AWS's own */
	unsigned timeout_ms;
};

static struct aws_kms *aws_of(struct kms_client *c)
{
	return c->provider_data;
}

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
#define _cleanup_json_ _cleanup_(json_object_putp)
DEFINE_CLEANUP_FUNC(json_tokener *, json_tokener_free);

static int call_target(struct aws_kms *k, const char *key_id, char **ret_region, char **ret_url)
{
	_cleanup_free_ char *region = NULL;

	/* A key ARN names its region; an explicit --region still wins, as in the CLI. */
	if (!k->region_explicit && key_id && dmbyok_aws_arn_region(key_id, &region) >= 0) {
		/* taken from the ARN */
	} else if (k->region) {
		region = strdup(k->region);
		ENSURE_ALLOC(region);
	} else {
		return log_debug_errno(EINVAL,
		                       "No AWS region for key %s: set AWS_REGION, the "
		                       "profile's region, or use the key's ARN.",
		                       key_id ? key_id : "(from blob)");
	}
	GUARD(dmbyok_aws_endpoint_url(k->endpoint, region, ret_url));
	*ret_region = TAKE_PTR(region);
	return 0;
}

/* A response's text fit for a message: printable ASCII, bounded. */
#define SHOWN_MAX 128
static const char *shown(const char *s, char buf[static SHOWN_MAX])
{
	size_t i;

	for (i = 0; s[i] && i < SHOWN_MAX - 1; i++)
		buf[i] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

int dmbyok_aws_parse_error(const struct secret *body, char **ret_code, char **ret_message)
{
	_cleanup_json_ json_object *j = NULL;
	_cleanup_free_ char *code = NULL, *msg = NULL;
	json_object *t = NULL, *m = NULL;

	/* Lenient on purpose: a proxy's odd body is still worth quoting. */
	j = json_tokener_parse((const char *)body->data);
	if (j && json_object_is_type(j, json_type_object)) {
		if (!json_object_object_get_ex(j, "__type", &t))
			(void)json_object_object_get_ex(j, "code", &t);
		if (!json_object_object_get_ex(j, "message", &m))
			(void)json_object_object_get_ex(j, "Message", &m);
		if (t && json_object_is_type(t, json_type_string))
			GUARD(dmbyok_aws_error_code(json_object_get_string(t), &code));
		if (m && json_object_is_type(m, json_type_string)) {
			char buf[SHOWN_MAX];

			msg = strdup(shown(json_object_get_string(m), buf));
			ENSURE_ALLOC(msg);
		}
	}
	/* An empty code names no error. */
	if (code && !*code)
		free(TAKE_PTR(code));
	*ret_code = TAKE_PTR(code);
	*ret_message = TAKE_PTR(msg);
	return 0;
}

/* Records an error response for the operator; returns its errno and *ret_code. */
static int error_response(struct kms_client *c, const char *operation,
                          const struct kms_http_response *resp, char **ret_code)
{
	_cleanup_free_ char *code = NULL, *msg = NULL;
	char buf[SHOWN_MAX];

	GUARD(dmbyok_aws_parse_error(resp->body, &code, &msg));
	if (code)
		dmbyok_kms_set_last_error(c, "%s: %s", shown(code, buf), msg ? msg : "");
	else
		dmbyok_kms_set_last_error(c, "%s: HTTP status %ld without an AWS error", operation,
		                          resp->status);
	*ret_code = TAKE_PTR(code);
	return dmbyok_aws_error_to_errno(*ret_code, resp->status);
}

/* The response body stays untouched in locked memory, since it may carry plaintext. */
int dmbyok_aws_kms_request(struct kms_client *c, const char *operation, const char *key_id,
                           json_object *request, struct secret **ret_body, char **ret_error_code)
{
	struct aws_kms *k = aws_of(c);
	_cleanup_free_ char *region = NULL, *url = NULL, *sigv4 = NULL, *target = NULL;
	_cleanup_free_ char *code = NULL;
	const char *body;
	bool refreshed = false, retried = false;
	int r = -EIO;

	r = call_target(k, key_id, &region, &url);
	if (r == -EINVAL)
		dmbyok_kms_set_last_error(
		    c,
		    "no AWS region for %s: set AWS_REGION or the profile's region, "
		    "or name the key by its ARN",
		    key_id ? key_id : "the key");
	if (r < 0)
		return r;
	if (asprintf(&sigv4, "aws:amz:%s:kms", region) < 0 ||
	    asprintf(&target, "X-Amz-Target: TrentService.%s", operation) < 0)
		return log_oom();
	body = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN);
	ENSURE_ALLOC(body);

	for (unsigned attempt = 1;; attempt++) {
		struct kms_http_response resp = {};
		const struct aws_credentials *cr;
		const char *headers[3], *detail = NULL;
		char why[512];
		bool retryable;
		size_t n = 0;

		r = dmbyok_aws_credentials_get(&k->creds, k->http, &cr, why, sizeof(why));
		if (r < 0) {
			dmbyok_kms_set_last_error(c, "%s", why);
			return log_debug_errno(r, "%s: %s", operation, why);
		}

		headers[n++] = "Content-Type: application/x-amz-json-1.1";
		headers[n++] = target;
		headers[n] = NULL;

		free(TAKE_PTR(code));
		r = dmbyok_kms_http_perform(
		    k->http,
		    &(struct kms_http_request){
		        .method = "POST",
		        .url = url,
		        .headers = headers,
		        .body = body,
		        .body_len = strlen(body),
		        .sigv4 = sigv4,
		        .access_key_id = cr->access_key_id,
		        .secret_access_key = (const char *)cr->secret_access_key->data,
		        /* the HTTP layer builds its header in locked memory */
		        .session_token = cr->session_token,
		        .timeout_ms = k->timeout_ms,
		    },
		    &resp, &detail);
		if (r < 0) {
			if (r == -EINVAL && detail)
				dmbyok_kms_set_last_error(
				    c,
				    "TLS or request setup failed for %s (check the "
				    "CA bundle, AWS_CA_BUNDLE): %s",
				    url, detail);
			else
				dmbyok_kms_set_last_error(c, "%s: cannot reach %s: %s", operation,
				                          url,
				                          detail ? detail : dmbyok_strerror(r));
			retryable = dmbyok_kms_errno_is_retryable(r);
		} else if (resp.status == 200) {
			dmbyok_kms_retry_release(&k->retry, r, retried);
			*ret_body = TAKE_PTR(resp.body);
			return 0;
		} else {
			r = error_response(c, operation, &resp, &code);
			retryable = dmbyok_aws_error_is_retryable(code, resp.status);
			dmbyok_kms_http_response_done(&resp);
			/* Temporary credentials may expire under us: fetch fresh ones once. */
			if (r == -EKEYEXPIRED && !refreshed && cr->expiration != 0) {
				refreshed = true;
				dmbyok_aws_credentials_invalidate(&k->creds);
				retryable = true;
			}
		}

		log_debug("%s attempt %u/%u: %s", operation, attempt, k->retry.max_attempts,
		          dmbyok_kms_last_error(c));
		if (!retryable || attempt >= k->retry.max_attempts)
			break;
		if (!dmbyok_kms_retry_acquire(&k->retry, r)) {
			log_debug("Retry quota exhausted, not retrying %s.", operation);
			break;
		}
		retried = true;
		dmbyok_kms_sleep_ms(dmbyok_kms_retry_backoff_ms(attempt));
	}
	if (ret_error_code)
		*ret_error_code = TAKE_PTR(code);
	return log_debug_errno(r, "%s failed: %s", operation, dmbyok_kms_last_error(c));
}

/* Records why a response is unusable; returns -EPROTO. */
static int protocol_error(char *why, size_t why_size, const char *fmt, ...) _printf_(3, 4);
static int protocol_error(char *why, size_t why_size, const char *fmt, ...)
{
	va_list ap;

	if (why && why_size > 0) {
		va_start(ap, fmt);
		vsnprintf(why, why_size, fmt, ap);
		va_end(ap);
	}
	return -EPROTO;
}

/*
 * A success response as strict JSON (what AWS sends), and an object: json-c's lenient
 * extensions (comments, single quotes) could make it read other fields than
 * dmbyok_aws_json_take_string() did.
 */
int dmbyok_aws_parse_object(const struct secret *body, json_object **ret)
{
	_cleanup_(json_tokener_freep) json_tokener *tok = NULL;
	json_object *j;
	size_t len = strlen((const char *)body->data), end;

	ENSURE(len <= INT32_MAX, EPROTO);
	tok = json_tokener_new();
	ENSURE_ALLOC(tok);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	j = json_tokener_parse_ex(tok, (const char *)body->data, (int)len);
	if (!j)
		return -EPROTO;
	end = json_tokener_get_parse_end(tok);
	while (end < len && strchr(" \t\r\n", body->data[end]))
		end++;
	if (end != len || !json_object_is_type(j, json_type_object)) {
		json_object_put(j);
		return -EPROTO;
	}
	*ret = j;
	return 0;
}

int dmbyok_aws_member_string(json_object *o, const char *operation, const char *field,
                             bool required, char **ret, char *why, size_t why_size)
{
	json_object *v;

	*ret = NULL;
	if (!json_object_object_get_ex(o, field, &v)) {
		if (!required)
			return 0;
		return protocol_error(why, why_size, "%s: the response lacks %s", operation, field);
	}
	/* A NUL inside (JSON's \u0000) would cut the C string short of what the KMS said. */
	if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
		return protocol_error(why, why_size, "%s: %s in the response is not a string",
		                      operation, field);
	*ret = strdup(json_object_get_string(v));
	ENSURE_ALLOC(*ret);
	return 0;
}

bool dmbyok_aws_is_key_arn(const char *s)
{
	_cleanup_free_ char *region = NULL;
	size_t n;

	/* arn:PARTITION:kms:REGION:ACCOUNT:key/ID; the region is checked on the way. */
	if (!s || dmbyok_aws_arn_region(s, &region) < 0)
		return false;
	s += strlen("arn:");
	n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-");
	if (n == 0 || s[n] != ':')
		return false;
	s += n + 1;
	if (strncmp(s, "kms:", 4) != 0)
		return false;
	s += 4 + strlen(region);
	if (*s++ != ':' || strspn(s, "0123456789") != 12 || s[12] != ':')
		return false;
	s += 13;
	if (strncmp(s, "key/", 4) != 0)
		return false;
	s += 4;
	n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-");
	return n > 0 && n <= 128 && s[n] == '\0';
}

/* A member naming a key by its ARN: anything else is a protocol error, not a key. */
static int member_key_arn(json_object *o, const char *operation, const char *field, bool required,
                          char **ret, char *why, size_t why_size)
{
	_cleanup_free_ char *v = NULL;
	char buf[SHOWN_MAX];

	GUARD(dmbyok_aws_member_string(o, operation, field, required, &v, why, why_size));
	if (v && !dmbyok_aws_is_key_arn(v))
		return protocol_error(why, why_size,
		                      "%s: %s \"%s\" in the response is not a key ARN", operation,
		                      field, shown(v, buf));
	*ret = TAKE_PTR(v);
	return 0;
}

/* A wrapped key: non-empty canonical base64, or it could never be unwrapped again. */
static int member_ciphertext(json_object *o, const char *operation, char **ret, char *why,
                             size_t why_size)
{
	_cleanup_free_ char *v = NULL;
	_cleanup_free_ uint8_t *raw = NULL;
	size_t len;

	GUARD(dmbyok_aws_member_string(o, operation, "CiphertextBlob", true, &v, why, why_size));
	len = strlen(v);
	raw = malloc(len / 4 * 3 + 1);
	ENSURE_ALLOC(raw);
	if (dmbyok_base64_decode(v, len, raw, len / 4 * 3) <= 0)
		return protocol_error(
		    why, why_size, "%s: CiphertextBlob in the response is not base64", operation);
	*ret = TAKE_PTR(v);
	return 0;
}

/* The Plaintext of a response, base64-decoded from locked memory into locked memory. */
static int take_plaintext(struct secret *body, const char *operation, struct secret **ret,
                          char *why, size_t why_size)
{
	_cleanup_secret_ struct secret *b64 = NULL, *pt = NULL;
	int n;

	n = dmbyok_aws_json_take_string(body, "Plaintext", &b64);
	if (n == -ENOENT)
		return protocol_error(why, why_size, "%s: the response lacks Plaintext", operation);
	if (n < 0)
		return n == -ENOMEM
		           ? n
		           : protocol_error(why, why_size, "%s: malformed response", operation);
	GUARD(dmbyok_secret_new(b64->size / 4 * 3 + 1, &pt));
	n = dmbyok_base64_decode((const char *)b64->data, b64->size, pt->data, pt->capacity);
	if (n <= 0)
		return protocol_error(why, why_size,
		                      "%s: Plaintext in the response is empty or not base64",
		                      operation);
	pt->size = (size_t)n;
	*ret = TAKE_PTR(pt);
	return 0;
}

void dmbyok_aws_kms_result_done(struct aws_kms_result *res)
{
	if (!res)
		return;
	dmbyok_secret_free(res->plaintext);
	free(res->ciphertext_b64);
	free(res->key_arn);
	free(res->source_key_arn);
	*res = (struct aws_kms_result){};
}

/* The members GenerateDataKey, Decrypt and ReEncrypt have in common; *ret_json optional. */
static int parse_common(struct secret *body, const char *operation, bool plaintext, bool ciphertext,
                        struct aws_kms_result *ret, json_object **ret_json, char *why,
                        size_t why_size)
{
	_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};
	_cleanup_json_ json_object *j = NULL;
	int r;

	/* The key comes out of the locked body before json-c copies the document. */
	if (plaintext)
		GUARD(take_plaintext(body, operation, &res.plaintext, why, why_size));
	r = dmbyok_aws_parse_object(body, &j);
	if (r == -EPROTO)
		return protocol_error(why, why_size, "%s: malformed response", operation);
	if (r < 0)
		return r;
	if (ciphertext)
		GUARD(member_ciphertext(j, operation, &res.ciphertext_b64, why, why_size));
	GUARD(member_key_arn(j, operation, "KeyId", true, &res.key_arn, why, why_size));
	*ret = res;
	res = (struct aws_kms_result){};
	if (ret_json)
		*ret_json = TAKE_PTR(j);
	return 0;
}

int dmbyok_aws_parse_generate_data_key(struct secret *body, struct aws_kms_result *ret, char *why,
                                       size_t why_size)
{
	return parse_common(body, "GenerateDataKey", true, true, ret, NULL, why, why_size);
}

int dmbyok_aws_parse_decrypt(struct secret *body, struct aws_kms_result *ret, char *why,
                             size_t why_size)
{
	return parse_common(body, "Decrypt", true, false, ret, NULL, why, why_size);
}

int dmbyok_aws_parse_reencrypt(struct secret *body, struct aws_kms_result *ret, char *why,
                               size_t why_size)
{
	_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};
	_cleanup_json_ json_object *j = NULL;

	GUARD(parse_common(body, "ReEncrypt", false, true, &res, &j, why, why_size));
	GUARD(member_key_arn(j, "ReEncrypt", "SourceKeyId", false, &res.source_key_arn, why,
	                     why_size));
	*ret = res;
	res = (struct aws_kms_result){};
	return 0;
}

int dmbyok_aws_parse_describe_key(const struct secret *body, struct kms_key_info *ret, char *why,
                                  size_t why_size)
{
	_cleanup_(dmbyok_kms_key_info_done) struct kms_key_info info = {};
	_cleanup_json_ json_object *j = NULL;
	json_object *md, *enabled;
	int r;

	r = dmbyok_aws_parse_object(body, &j);
	if (r == -EPROTO)
		return protocol_error(why, why_size, "DescribeKey: malformed response");
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(j, "KeyMetadata", &md) ||
	    !json_object_is_type(md, json_type_object))
		return protocol_error(why, why_size, "DescribeKey: the response lacks KeyMetadata");
	GUARD(member_key_arn(md, "DescribeKey", "Arn", true, &info.key_arn, why, why_size));
	GUARD(dmbyok_aws_member_string(md, "DescribeKey", "KeyState", true, &info.key_state, why,
	                               why_size));
	if (json_object_object_get_ex(md, "Enabled", &enabled)) {
		/* json-c would read "false" as true */
		if (!json_object_is_type(enabled, json_type_boolean))
			return protocol_error(
			    why, why_size, "DescribeKey: Enabled in the response is not a boolean");
		info.enabled = json_object_get_boolean(enabled);
	} else {
		info.enabled = !strcmp(info.key_state, "Enabled");
	}

	*ret = info;
	info = (struct kms_key_info){};
	return 0;
}

int dmbyok_aws_response_failed(struct kms_client *c, const char *operation, int r, const char *why)
{
	if (r == -EPROTO)
		dmbyok_kms_set_last_error(c, "%s", *why ? why : "malformed response from the KMS");
	return log_debug_errno(r, "%s: unusable response: %s", operation,
	                       *why ? why : dmbyok_strerror(r));
}

int dmbyok_aws_add_string(json_object *o, const char *k, const char *v)
{
	json_object *s = json_object_new_string(v);

	ENSURE_ALLOC(s);
	if (json_object_object_add(o, k, s) < 0) {
		json_object_put(s);
		return -ENOMEM;
	}
	return 0;
}

int dmbyok_aws_add_object(json_object *o, const char *k, json_object *v)
{
	if (!v)
		return 0;
	if (json_object_object_add(o, k, json_object_get(v)) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

int dmbyok_aws_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                 size_t n_bytes, struct secret **ret_plaintext,
                                 char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_json_ json_object *req = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};
	_cleanup_free_ char *code = NULL;
	char why[256] = "";
	int r;

	req = json_object_new_object();
	ENSURE_ALLOC(req);
	GUARD(dmbyok_aws_add_string(req, "KeyId", key_id));
	if (json_object_object_add(req, "NumberOfBytes", json_object_new_int((int)n_bytes)) < 0)
		return -ENOMEM;
	GUARD(dmbyok_aws_add_object(req, "EncryptionContext", context));

	r = dmbyok_aws_kms_request(c, "GenerateDataKey", key_id, req, &body, &code);
	if (r == -EKEYREVOKED && code && !strcmp(code, "NotFoundException")) {
		char said[sizeof(c->last_error)];

		/* The key the operator just named does not exist: a typo, not a revocation. */
		snprintf(said, sizeof(said), "%s", dmbyok_kms_last_error(c));
		dmbyok_kms_set_last_error(c, "no KMS key %s: check the key id or alias (%s)",
		                          key_id, said);
		return log_debug_errno(EINVAL, "GenerateDataKey: no key %s.", key_id);
	}
	if (r < 0)
		return r;
	r = dmbyok_aws_parse_generate_data_key(body, &res, why, sizeof(why));
	if (r < 0)
		return dmbyok_aws_response_failed(c, "GenerateDataKey", r, why);
	if (res.plaintext->size != n_bytes) {
		dmbyok_kms_set_last_error(c, "GenerateDataKey: got %zu bytes of key, asked for %zu",
		                          res.plaintext->size, n_bytes);
		return log_debug_errno(EPROTO, "%s", dmbyok_kms_last_error(c));
	}

	*ret_plaintext = TAKE_PTR(res.plaintext);
	*ret_ciphertext_b64 = TAKE_PTR(res.ciphertext_b64);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(res.key_arn);
	return 0;
}

int dmbyok_aws_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                       json_object *context, struct secret **ret_plaintext, char **ret_key_arn)
{
	_cleanup_json_ json_object *req = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};
	char why[256] = "";
	int r;

	req = json_object_new_object();
	ENSURE_ALLOC(req);
	GUARD(dmbyok_aws_add_string(req, "CiphertextBlob", ciphertext_b64));
	if (key_id)
		GUARD(dmbyok_aws_add_string(req, "KeyId", key_id));
	GUARD(dmbyok_aws_add_object(req, "EncryptionContext", context));

	GUARD(dmbyok_aws_kms_request(c, "Decrypt", key_id, req, &body, NULL));
	r = dmbyok_aws_parse_decrypt(body, &res, why, sizeof(why));
	if (r < 0)
		return dmbyok_aws_response_failed(c, "Decrypt", r, why);
	*ret_plaintext = TAKE_PTR(res.plaintext);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(res.key_arn);
	return 0;
}

int dmbyok_aws_kms_call(struct kms_client *c, const char *operation, const char *key_id,
                        json_object *request, json_object **ret_response)
{
	_cleanup_secret_ struct secret *body = NULL;
	int r;

	GUARD(dmbyok_aws_kms_request(c, operation, key_id, request, &body, NULL));
	r = dmbyok_aws_parse_object(body, ret_response);
	if (r < 0)
		return dmbyok_aws_response_failed(c, operation, r, "");
	return 0;
}

int dmbyok_aws_reencrypt(struct kms_client *c, const char *source_key_arn,
                         const char *ciphertext_b64, json_object *context, const char *dest_key_id,
                         char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_json_ json_object *req = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};
	char why[256] = "";
	int r;

	req = json_object_new_object();
	ENSURE_ALLOC(req);
	GUARD(dmbyok_aws_add_string(req, "CiphertextBlob", ciphertext_b64));
	GUARD(dmbyok_aws_add_string(req, "DestinationKeyId", dest_key_id));
	/* Optional for a symmetric key (the blob names it); named, KMS refuses any other. */
	if (source_key_arn)
		GUARD(dmbyok_aws_add_string(req, "SourceKeyId", source_key_arn));
	GUARD(dmbyok_aws_add_object(req, "SourceEncryptionContext", context));
	GUARD(dmbyok_aws_add_object(req, "DestinationEncryptionContext", context));

	/* The call goes to the destination key's region. */
	GUARD(dmbyok_aws_kms_request(c, "ReEncrypt", dest_key_id, req, &body, NULL));
	r = dmbyok_aws_parse_reencrypt(body, &res, why, sizeof(why));
	if (r < 0)
		return dmbyok_aws_response_failed(c, "ReEncrypt", r, why);
	*ret_ciphertext_b64 = TAKE_PTR(res.ciphertext_b64);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(res.key_arn);
	return 0;
}

int dmbyok_aws_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret)
{
	_cleanup_json_ json_object *req = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	_cleanup_free_ char *code = NULL;
	char why[256] = "";
	int r;

	req = json_object_new_object();
	ENSURE_ALLOC(req);
	GUARD(dmbyok_aws_add_string(req, "KeyId", key_id));
	r = dmbyok_aws_kms_request(c, "DescribeKey", key_id, req, &body, &code);
	/* No such key (never created, or its deletion completed): not a revocation of access. */
	if (r == -EKEYREVOKED && code && !strcmp(code, "NotFoundException"))
		return log_debug_errno(ENOENT, "DescribeKey: no key %s.", key_id);
	if (r < 0)
		return r;
	r = dmbyok_aws_parse_describe_key(body, ret, why, sizeof(why));
	if (r < 0)
		return dmbyok_aws_response_failed(c, "DescribeKey", r, why);
	return 0;
}

void dmbyok_aws_client_free(struct kms_client *c)
{
	struct aws_kms *k = aws_of(c);

	dmbyok_kms_http_free(k->http);
	dmbyok_aws_credentials_cache_done(&k->creds);
	free(k->region);
	free(k->endpoint);
	free(k);
	c->provider_data = NULL;
}

int dmbyok_aws_client_new(struct kms_client *c, const struct kms_options *opts)
{
	_cleanup_free_ char *probe = NULL;
	const char *ca = opts->ca_bundle;
	struct aws_kms *k;
	int r;

	k = calloc(1, sizeof(*k));
	ENSURE_ALLOC(k);
	c->provider_data = k;

	r = dmbyok_aws_resolve_region(opts->region, NULL, opts->profile, &k->region);
	if (r < 0 && r != -ENOENT)
		return r;
	k->region_explicit = opts->region && *opts->region;

	GUARD(dmbyok_aws_endpoint_override(opts->endpoint, &k->endpoint));
	/* Refuse a bad endpoint now rather than at the first key operation. */
	GUARD(dmbyok_aws_endpoint_url(k->endpoint, k->region ? k->region : "us-east-1", &probe));

	if (!ca || !*ca)
		ca = getenv("AWS_CA_BUNDLE");
	if (ca && *ca && access(ca, R_OK) < 0)
		return log_error_errno(errno, "Cannot read the CA bundle %s: %m", ca);
	GUARD(dmbyok_kms_http_new(ca && *ca ? ca : NULL, &k->http));

	if (opts->profile && *opts->profile) {
		k->creds.profile = strdup(opts->profile);
		ENSURE_ALLOC(k->creds.profile);
	}
	k->timeout_ms = opts->timeout_ms ? opts->timeout_ms : AWS_DEFAULT_TIMEOUT_MS;
	dmbyok_kms_retry_init(&k->retry, opts->max_attempts);
	return 0;
}

/* Who these credentials are, named as a grant's grantee (aws-grants.c). */
int dmbyok_aws_caller_principal(struct kms_client *c, char **ret_arn)
{
	struct aws_kms *k = aws_of(c);
	_cleanup_free_ char *arn = NULL;
	const struct aws_credentials *cr;
	char why[512] = "", buf[SHOWN_MAX];
	int r;

	r = dmbyok_aws_credentials_get(&k->creds, k->http, &cr, why, sizeof(why));
	/* STS in the client's region (explicit, environment or profile), as the CLI does. */
	if (r >= 0)
		r = dmbyok_aws_sts_get_caller_identity(k->http, k->region, cr, &arn, NULL, why,
		                                       sizeof(why));
	if (r < 0) {
		dmbyok_kms_set_last_error(c, "%s", why);
		return log_debug_errno(r, "GetCallerIdentity: %s", why);
	}
	r = dmbyok_aws_grantee_from_caller_arn(arn, ret_arn);
	if (r == -EINVAL) {
		dmbyok_kms_set_last_error(c, "STS GetCallerIdentity: \"%s\" is not a principal ARN",
		                          shown(arn, buf));
		return log_debug_errno(EPROTO, "%s", dmbyok_kms_last_error(c));
	}
	return r;
}

const char *dmbyok_aws_region(struct kms_client *c)
{
	return aws_of(c)->region;
}

/* The access key id that signed the calls: CloudTrail names the caller by it too. */
const char *dmbyok_aws_principal(struct kms_client *c)
{
	const struct aws_credentials *cr = aws_of(c)->creds.cached;

	return cr ? cr->access_key_id : NULL;
}
