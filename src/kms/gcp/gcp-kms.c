/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Google Cloud KMS (REST v1). A volume's data key is random bytes from OpenSSL's private
 * generator, wrapped by :encrypt with the canonical encryption context as additional
 * authenticated data, so the volume binding holds as with AWS's encryption context; Cloud
 * KMS has no GenerateDataKey or ReEncrypt, so those are composed here, the plaintext only
 * in locked memory. Requests and answers carry CRC32C integrity fields, checked both ways.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "gcp.h"
#include "../aws/aws.h"
#include "../kms-http.h"
#include "dmbyok/encoding.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "../kms-provider.h"

#define GCP_DEFAULT_TIMEOUT_MS 10000U

struct gcp_kms {
	struct kms_http *http;
	struct gcp_auth auth;
	struct kms_retry retry;
	char *endpoint; /* base URL ending in '/' */
	char *location; /* from --region, for the audit before a key names one; or NULL */
	unsigned timeout_ms;
};

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
#define _cleanup_json_ _cleanup_(json_object_putp)
DEFINE_CLEANUP_FUNC(json_tokener *, json_tokener_free);

static struct gcp_kms *gcp_of(struct kms_client *c)
{
	return c->provider_data;
}

/* Text from the network fit for a message: printable ASCII, bounded. */
#define SHOWN_MAX 256
static const char *shown(const char *s, char buf[static SHOWN_MAX])
{
	size_t i;

	for (i = 0; s[i] && i < SHOWN_MAX - 1; i++)
		buf[i] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

int dmbyok_gcp_error_to_errno(const char *operation, const char *status, long http_status)
{
	static const struct {
		const char *status;
		int r;
	} map[] = {
		/* the key version is disabled, scheduled for destruction or destroyed */
		{ "FAILED_PRECONDITION", -EKEYREVOKED },
		{ "PERMISSION_DENIED", -EKEYREVOKED },
		{ "NOT_FOUND", -EKEYREVOKED },
		{ "UNAVAILABLE", -EREMOTEIO },
		{ "INTERNAL", -EREMOTEIO },
		{ "UNKNOWN", -EREMOTEIO },
		{ "ABORTED", -EAGAIN },
		{ "DEADLINE_EXCEEDED", -ETIMEDOUT },
		{ "RESOURCE_EXHAUSTED", -EAGAIN },
		{ "UNAUTHENTICATED", -EKEYEXPIRED },
		{ "OUT_OF_RANGE", -EINVAL },
		{ "ALREADY_EXISTS", -EINVAL },
		{ "UNIMPLEMENTED", -EINVAL },
	};

	if (status && *status) {
		/* Cloud KMS says a blob is not this key's, or the AAD differs, this way only. */
		if (!strcmp(status, "INVALID_ARGUMENT"))
			return operation && !strcmp(operation, "Decrypt") ? -EBADMSG : -EINVAL;
		for (size_t i = 0; i < ELEMENTSOF(map); i++)
			if (!strcmp(status, map[i].status))
				return map[i].r;
	}
	switch (http_status) {
	case 401:
		return -EKEYEXPIRED;
	case 403:
	case 404:
		return -EKEYREVOKED;
	case 429:
		return -EAGAIN;
	case 504:
		return -ETIMEDOUT;
	default:
		if (http_status >= 500)
			return -EREMOTEIO;
		if (http_status >= 400)
			return -EINVAL;
		return -EPROTO;
	}
}

int dmbyok_gcp_parse_error(const struct secret *body, char **ret_status, char **ret_message)
{
	_cleanup_json_ json_object *j = NULL;
	_cleanup_free_ char *status = NULL, *msg = NULL;
	json_object *e, *s = NULL, *m = NULL;
	char buf[SHOWN_MAX];

	/* Lenient: a proxy's odd body is still worth quoting. */
	j = json_tokener_parse((const char *)body->data);
	if (j && json_object_object_get_ex(j, "error", &e) &&
	    json_object_is_type(e, json_type_object)) {
		(void)json_object_object_get_ex(e, "status", &s);
		(void)json_object_object_get_ex(e, "message", &m);
		if (s && json_object_is_type(s, json_type_string) && *json_object_get_string(s)) {
			status = strdup(shown(json_object_get_string(s), buf));
			ENSURE_ALLOC(status);
		}
		if (m && json_object_is_type(m, json_type_string)) {
			msg = strdup(shown(json_object_get_string(m), buf));
			ENSURE_ALLOC(msg);
		}
	}
	*ret_status = TAKE_PTR(status);
	*ret_message = TAKE_PTR(msg);
	return 0;
}

static bool status_retryable(long http_status)
{
	return http_status == 429 || http_status == 500 || http_status == 502 ||
	       http_status == 503 || http_status == 504;
}

/* "Authorization: Bearer TOKEN" built in locked memory. */
static int bearer_header(const struct secret *token, struct secret **ret)
{
	static const char prefix[] = "Authorization: Bearer ";
	_cleanup_secret_ struct secret *s = NULL;

	GUARD(dmbyok_secret_new(sizeof(prefix) + token->size, &s));
	memcpy(s->data, prefix, sizeof(prefix) - 1);
	memcpy(s->data + sizeof(prefix) - 1, token->data, token->size);
	s->size = sizeof(prefix) - 1 + token->size;
	s->data[s->size] = '\0';
	*ret = TAKE_PTR(s);
	return 0;
}

/*
 * One Cloud KMS method with retries (the SDKs' standard mode: capped full-jitter backoff, a
 * retry quota). `body` (NULL for none) may be in locked memory; so is the answer, untouched.
 * After an error answer *ret_status (optional) is Google's status code, or NULL.
 */
static int kms_call(struct kms_client *c, const char *operation, const char *method,
                    const char *path, const char *location, const char *body,
                    struct secret **ret_body, char **ret_status)
{
	struct gcp_kms *k = gcp_of(c);
	_cleanup_free_ char *url = NULL, *status = NULL;
	static const char *const json_headers[] = { "Content-Type: application/json",
		                                    "Accept: application/json", NULL };
	bool refreshed = false, retried = false;
	int r = -EIO;

	if (asprintf(&url, "%sv1/%s", k->endpoint, path) < 0)
		return log_oom();

	for (unsigned attempt = 1;; attempt++) {
		_cleanup_secret_ struct secret *auth_header = NULL;
		struct kms_http_response resp = {};
		const struct gcp_token *tok;
		const char *detail = NULL;
		char why[512] = "";
		bool retryable;

		free(TAKE_PTR(status));
		r = dmbyok_gcp_auth_token(&k->auth, &tok, why, sizeof(why));
		if (r < 0) {
			dmbyok_kms_set_last_error(c, "%s", why);
			dmbyok_kms_note_attempt(location, NULL);
			retryable =
			    dmbyok_kms_errno_is_retryable(r) || r == -EAGAIN || r == -EREMOTEIO;
		} else {
			const struct secret *secret_headers[2] = { NULL, NULL };

			r = bearer_header(tok->token, &auth_header);
			if (r < 0)
				return r;
			secret_headers[0] = auth_header;
			r = dmbyok_kms_http_perform(k->http,
			                            &(struct kms_http_request){
			                                .method = method,
			                                .url = url,
			                                .headers = json_headers,
			                                .body = body,
			                                .body_len = body ? strlen(body) : 0,
			                                .timeout_ms = k->timeout_ms,
			                                .secret_headers = secret_headers,
			                            },
			                            &resp, &detail);
			dmbyok_kms_note_attempt(location, NULL);
			if (r < 0) {
				if (r == -EINVAL && detail)
					dmbyok_kms_set_last_error(
					    c,
					    "TLS or request setup failed for %s (check the CA "
					    "bundle, CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE): %s",
					    url, detail);
				else
					dmbyok_kms_set_last_error(
					    c, "%s: cannot reach %s: %s", operation, url,
					    detail ? detail : dmbyok_strerror(r));
				retryable = dmbyok_kms_errno_is_retryable(r);
			} else if (resp.status == 200) {
				dmbyok_kms_retry_release(&k->retry, r, retried);
				*ret_body = TAKE_PTR(resp.body);
				return 0;
			} else {
				_cleanup_free_ char *msg = NULL;

				r = dmbyok_gcp_parse_error(resp.body, &status, &msg);
				if (r < 0) {
					dmbyok_kms_http_response_done(&resp);
					return r;
				}
				if (status)
					dmbyok_kms_set_last_error(c, "%s: %s", status,
					                          msg ? msg : "");
				else
					dmbyok_kms_set_last_error(
					    c, "%s: HTTP status %ld without a Google error",
					    operation, resp.status);
				r = dmbyok_gcp_error_to_errno(operation, status, resp.status);
				retryable = status_retryable(resp.status);
				/* A token revoked or expired early: fetch a fresh one, once. */
				if (r == -EKEYEXPIRED && !refreshed) {
					refreshed = true;
					dmbyok_gcp_auth_invalidate(&k->auth);
					retryable = true;
				}
				dmbyok_kms_http_response_done(&resp);
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
	if (ret_status)
		*ret_status = TAKE_PTR(status);
	return log_debug_errno(r, "%s failed: %s", operation, dmbyok_kms_last_error(c));
}

static int protocol_error(struct kms_client *c, const char *fmt, ...) _printf_(2, 3);
static int protocol_error(struct kms_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
	return log_debug_errno(EPROTO, "%s", c->last_error);
}

/* A success answer as strict JSON and an object (Google sends nothing else). */
static int parse_object(const struct secret *body, json_object **ret)
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

static const char *member_string(json_object *o, const char *field)
{
	json_object *v;

	if (!json_object_object_get_ex(o, field, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* An int64 member (Google's JSON writes them as strings); -ENOENT when absent. */
static int member_uint32(json_object *o, const char *field, uint32_t *ret)
{
	const char *s = member_string(o, field);
	char *end = NULL;
	unsigned long long v;

	if (!json_object_object_get_ex(o, field, NULL))
		return -ENOENT;
	if (!s || !*s || *s == '-')
		return -EPROTO;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -EPROTO;
	*ret = (uint32_t)v;
	return 0;
}

static bool member_true(json_object *o, const char *field)
{
	json_object *v;

	return json_object_object_get_ex(o, field, &v) &&
	       json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

/* The request body {"NAME": "B64", "NAMECrc32c": "N", ...} of up to two fields, locked. */
static int build_body(const char *f1, const struct secret *v1, uint32_t crc1, const char *f2,
                      const char *v2, uint32_t crc2, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	size_t cap = 128 + 2 * (strlen(f1) + strlen(f2)) + v1->size + strlen(v2);
	int n;

	GUARD(dmbyok_secret_new(cap, &s));
	n = snprintf((char *)s->data, cap,
	             "{\"%s\":\"%s\",\"%sCrc32c\":\"%u\",\"%s\":\"%s\",\"%sCrc32c\":\"%u\"}", f1,
	             (const char *)v1->data, f1, crc1, f2, v2, f2, crc2);
	ENSURE(n > 0 && (size_t)n < cap, E2BIG);
	s->size = (size_t)n;
	*ret = TAKE_PTR(s);
	return 0;
}

/* The AAD: the canonical context as base64, and its CRC32C ("" and CRC of nothing if none). */
static int context_aad(json_object *context, char **ret_b64, uint32_t *ret_crc)
{
	_cleanup_free_ char *canonical = NULL;

	if (context)
		GUARD(dmbyok_kms_context_canonical(context, &canonical));
	*ret_crc = dmbyok_gcp_crc32c(canonical ? canonical : "", canonical ? strlen(canonical) : 0);
	if (!canonical) {
		*ret_b64 = strdup("");
		ENSURE_ALLOC(*ret_b64);
		return 0;
	}
	return dmbyok_base64_encode(canonical, strlen(canonical), ret_b64);
}

static int check_name(struct kms_client *c, const char *operation, const char *name, char **ret_key,
                      char **ret_location, char **ret_version)
{
	char buf[SHOWN_MAX];

	if (!name) {
		dmbyok_kms_set_last_error(c,
		                          "%s: Cloud KMS needs the key's name "
		                          "(projects/P/locations/L/keyRings/R/cryptoKeys/K)",
		                          operation);
		return -EINVAL;
	}
	if (dmbyok_gcp_parse_name(name, ret_key, ret_location, ret_version) < 0) {
		dmbyok_kms_set_last_error(
		    c,
		    "%s: \"%s\" is not a Cloud KMS key name "
		    "(projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N])",
		    operation, shown(name, buf));
		return log_debug_errno(EINVAL, "%s", c->last_error);
	}
	return 0;
}

/* :encrypt of plaintext under `name` (a key: its primary; or a version); the version used. */
static int encrypt(struct kms_client *c, const char *operation, const char *name,
                   const struct secret *plaintext, json_object *context, char **ret_ciphertext,
                   char **ret_version_name)
{
	_cleanup_secret_ struct secret *pt64 = NULL, *body = NULL, *resp = NULL;
	_cleanup_free_ char *key = NULL, *location = NULL, *version = NULL, *aad = NULL,
	                    *path = NULL, *status = NULL, *got_key = NULL, *got_version = NULL,
	                    *ciphertext = NULL;
	_cleanup_free_ uint8_t *raw = NULL;
	_cleanup_json_ json_object *j = NULL;
	const char *v;
	uint32_t aad_crc, crc;
	char buf[SHOWN_MAX];
	int r, n;

	GUARD(check_name(c, operation, name, &key, &location, &version));
	GUARD(context_aad(context, &aad, &aad_crc));
	GUARD(dmbyok_kms_base64_secret(plaintext->data, plaintext->size, &pt64));
	GUARD(build_body("plaintext", pt64, dmbyok_gcp_crc32c(plaintext->data, plaintext->size),
	                 "additionalAuthenticatedData", aad, aad_crc, &body));
	dmbyok_secret_freep(&pt64);
	if (asprintf(&path, "%s:encrypt", name) < 0)
		return log_oom();

	r = kms_call(c, operation, "POST", path, location, (const char *)body->data, &resp,
	             &status);
	dmbyok_secret_freep(&body);
	if (r == -EKEYREVOKED && status && !strcmp(status, "NOT_FOUND")) {
		char said[sizeof(c->last_error)];

		/* The key the operator just named does not exist: a typo, not a revocation. */
		snprintf(said, sizeof(said), "%s", dmbyok_kms_last_error(c));
		dmbyok_kms_set_last_error(c, "no Cloud KMS key %s: check the name (%s)", name,
		                          said);
		return log_debug_errno(EINVAL, "%s: no key %s.", operation, name);
	}
	if (r < 0)
		return r;

	if (parse_object(resp, &j) < 0)
		return protocol_error(c, "%s: malformed answer from Cloud KMS", operation);
	v = member_string(j, "name");
	/* The version that did the work must be of the key we asked for (or that version). */
	if (!v || dmbyok_gcp_parse_name(v, &got_key, NULL, &got_version) < 0 || !got_version ||
	    strcmp(got_key, key) != 0 || (version && strcmp(got_version, version) != 0))
		return protocol_error(c, "%s: Cloud KMS answered for \"%s\", not for %s", operation,
		                      v ? shown(v, buf) : "(no name)", name);
	if (!member_true(j, "verifiedPlaintextCrc32c") ||
	    !member_true(j, "verifiedAdditionalAuthenticatedDataCrc32c"))
		return protocol_error(c,
		                      "%s: Cloud KMS did not verify the request's checksums (the "
		                      "request may have been corrupted in transit)",
		                      operation);
	v = member_string(j, "ciphertext");
	n = v ? (int)strlen(v) : 0;
	raw = malloc((size_t)n / 4 * 3 + 3);
	ENSURE_ALLOC(raw);
	if (!v || (n = dmbyok_base64_decode(v, strlen(v), raw, strlen(v) / 4 * 3 + 3)) <= 0)
		return protocol_error(c, "%s: the answer's ciphertext is missing or not base64",
		                      operation);
	if (member_uint32(j, "ciphertextCrc32c", &crc) < 0 ||
	    crc != dmbyok_gcp_crc32c(raw, (size_t)n))
		return protocol_error(c,
		                      "%s: the ciphertext's checksum does not match (the answer "
		                      "was corrupted in transit)",
		                      operation);
	ciphertext = strdup(v);
	ENSURE_ALLOC(ciphertext);
	*ret_version_name = strdup(member_string(j, "name"));
	ENSURE_ALLOC(*ret_version_name);
	*ret_ciphertext = TAKE_PTR(ciphertext);
	return 0;
}

/* :decrypt of a blob of key `name` (a key or a key version name: the key decrypts). */
static int decrypt(struct kms_client *c, const char *operation, const char *name,
                   const char *ciphertext_b64, json_object *context, struct secret **ret,
                   char **ret_key)
{
	_cleanup_secret_ struct secret *body = NULL, *resp = NULL, *pt64 = NULL, *pt = NULL;
	_cleanup_secret_ struct secret *ct = NULL;
	_cleanup_free_ char *key = NULL, *location = NULL, *aad = NULL, *path = NULL;
	_cleanup_free_ uint8_t *raw = NULL;
	_cleanup_json_ json_object *j = NULL;
	size_t len = strlen(ciphertext_b64);
	uint32_t aad_crc, crc;
	int r, n;

	GUARD(check_name(c, operation, name, &key, &location, NULL));
	raw = malloc(len / 4 * 3 + 3);
	ENSURE_ALLOC(raw);
	n = dmbyok_base64_decode(ciphertext_b64, len, raw, len / 4 * 3 + 3);
	if (n <= 0) {
		dmbyok_kms_set_last_error(c, "%s: the wrapped key is not base64", operation);
		return -EBADMSG;
	}
	GUARD(context_aad(context, &aad, &aad_crc));
	GUARD(dmbyok_aws_secret_strndup(ciphertext_b64, len, &ct));
	GUARD(build_body("ciphertext", ct, dmbyok_gcp_crc32c(raw, (size_t)n),
	                 "additionalAuthenticatedData", aad, aad_crc, &body));
	if (asprintf(&path, "%s:decrypt", key) < 0)
		return log_oom();

	GUARD(
	    kms_call(c, operation, "POST", path, location, (const char *)body->data, &resp, NULL));
	/* The plaintext comes out of the locked answer before json-c copies the document. */
	r = dmbyok_kms_json_take_string(resp, "plaintext", &pt64);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return protocol_error(c, "%s: the answer carries no plaintext", operation);
	GUARD(dmbyok_secret_new(pt64->size / 4 * 3 + 3, &pt));
	n = dmbyok_base64_decode((const char *)pt64->data, pt64->size, pt->data, pt->capacity);
	if (n <= 0)
		return protocol_error(c, "%s: the answer's plaintext is empty or not base64",
		                      operation);
	pt->size = (size_t)n;
	if (parse_object(resp, &j) < 0)
		return protocol_error(c, "%s: malformed answer from Cloud KMS", operation);
	r = member_uint32(j, "plaintextCrc32c", &crc);
	if (r == -EPROTO || (r == 0 && crc != dmbyok_gcp_crc32c(pt->data, pt->size)))
		return protocol_error(c,
		                      "%s: the plaintext's checksum does not match (the answer "
		                      "was corrupted in transit)",
		                      operation);
	*ret = TAKE_PTR(pt);
	if (ret_key)
		*ret_key = TAKE_PTR(key);
	return 0;
}

static int gcp_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                 size_t n_bytes, struct secret **ret_plaintext,
                                 char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *ct = NULL, *version = NULL;

	GUARD(dmbyok_secret_new(n_bytes, &dek));
	/* The generator OpenSSL keeps apart for private keys. */
	if (RAND_priv_bytes(dek->data, (int)n_bytes) != 1) {
		dmbyok_kms_set_last_error(c, "OpenSSL's random generator failed");
		return log_error_errno(EIO, "RAND_priv_bytes failed.");
	}
	GUARD(encrypt(c, "GenerateDataKey", key_id, dek, context, &ct, &version));
	*ret_plaintext = TAKE_PTR(dek);
	*ret_ciphertext_b64 = TAKE_PTR(ct);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(version);
	return 0;
}

static int gcp_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                       json_object *context, struct secret **ret_plaintext, char **ret_key_arn)
{
	return decrypt(c, "Decrypt", key_id, ciphertext_b64, context, ret_plaintext, ret_key_arn);
}

static int gcp_reencrypt(struct kms_client *c, const char *source_key_arn,
                         const char *ciphertext_b64, json_object *context, const char *dest_key_id,
                         char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *ct = NULL, *version = NULL;

	/*
	 * Cloud KMS has no re-encrypt: decrypt with the source key (a blob does not name its
	 * key to the client, and :decrypt needs it), encrypt under the destination's primary.
	 * No source named: the destination's key, the case of rotation.
	 */
	GUARD(decrypt(c, "ReEncrypt", source_key_arn ? source_key_arn : dest_key_id, ciphertext_b64,
	              context, &dek, NULL));
	GUARD(encrypt(c, "ReEncrypt", dest_key_id, dek, context, &ct, &version));
	*ret_ciphertext_b64 = TAKE_PTR(ct);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(version);
	return 0;
}

static int gcp_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret)
{
	_cleanup_(dmbyok_kms_key_info_done) struct kms_key_info info = {};
	_cleanup_secret_ struct secret *resp = NULL;
	_cleanup_free_ char *location = NULL, *version = NULL, *status = NULL;
	_cleanup_json_ json_object *j = NULL;
	json_object *primary = NULL, *o;
	const char *name, *state;
	char buf[SHOWN_MAX];
	int r;

	GUARD(check_name(c, "DescribeKey", key_id, NULL, &location, &version));
	r = kms_call(c, "DescribeKey", "GET", key_id, location, NULL, &resp, &status);
	/* No such key or version: not a revocation of access. */
	if (r == -EKEYREVOKED && status && !strcmp(status, "NOT_FOUND"))
		return log_debug_errno(ENOENT, "DescribeKey: no %s.", key_id);
	if (r < 0)
		return r;
	if (parse_object(resp, &j) < 0)
		return protocol_error(c, "DescribeKey: malformed answer from Cloud KMS");
	if (!version) {
		/* A key: its primary version is what encrypts (none: nothing does). */
		if (!json_object_object_get_ex(j, "primary", &primary) ||
		    !json_object_is_type(primary, json_type_object)) {
			info.key_arn = strdup(key_id);
			info.key_state = strdup("NO_PRIMARY_VERSION");
			ENSURE(info.key_arn && info.key_state, ENOMEM);
			info.enabled = false;
			goto done;
		}
	}
	o = version ? j : primary;
	name = member_string(o, "name");
	state = member_string(o, "state");
	if (!name || !dmbyok_gcp_is_name(name) || strncmp(name, key_id, strlen(key_id)) != 0 ||
	    !state || !*state)
		return protocol_error(c,
		                      "DescribeKey: the answer for %s lacks a version's name "
		                      "or state",
		                      shown(key_id, buf));
	/* A destroyed version's key material is gone for good: as a deleted key. */
	if (version && !strcmp(state, "DESTROYED")) {
		dmbyok_kms_set_last_error(c, "%s is DESTROYED", shown(key_id, buf));
		return log_debug_errno(ENOENT, "DescribeKey: %s is destroyed.", key_id);
	}
	info.key_arn = strdup(name);
	info.key_state = strdup(shown(state, buf));
	ENSURE(info.key_arn && info.key_state, ENOMEM);
	info.enabled = !strcmp(state, "ENABLED");
done:
	*ret = info;
	info = (struct kms_key_info){};
	return 0;
}

int dmbyok_gcp_kms_call(struct kms_client *c, const char *method, const char *path,
                        json_object *request, json_object **ret_response)
{
	_cleanup_secret_ struct secret *resp = NULL;
	_cleanup_free_ char *location = NULL;
	const char *body = NULL;

	ENSURE(c && c->ops == &dmbyok_gcp_kms_provider_ops && method && path && ret_response,
	       EINVAL);
	if (request) {
		body = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN);
		ENSURE_ALLOC(body);
	}
	/* projects/P/locations/L/...: the location for the audit, if the path names one. */
	if (!strncmp(path, "projects/", 9)) {
		const char *l = strstr(path, "/locations/");

		if (l) {
			l += strlen("/locations/");
			location = strndup(l, strcspn(l, "/:?"));
			ENSURE_ALLOC(location);
		}
	}
	GUARD(kms_call(c, method, method, path, location, body, &resp, NULL));
	if (parse_object(resp, ret_response) < 0)
		return protocol_error(c, "%s %s: malformed answer from Cloud KMS", method, path);
	return 0;
}

static void gcp_client_free(struct kms_client *c)
{
	struct gcp_kms *k = gcp_of(c);

	dmbyok_gcp_auth_done(&k->auth);
	dmbyok_kms_http_free(k->http);
	free(k->endpoint);
	free(k->location);
	free(k);
	c->provider_data = NULL;
}

static int gcp_client_new(struct kms_client *c, const struct kms_options *opts)
{
	const char *endpoint = opts->endpoint, *ca = opts->ca_bundle;
	struct gcp_kms *k;
	size_t n;

	k = calloc(1, sizeof(*k));
	ENSURE_ALLOC(k);
	c->provider_data = k;

	if (opts->profile && *opts->profile)
		return log_error_errno(EINVAL,
		                       "Profiles are AWS's: Google credentials come from "
		                       "GOOGLE_APPLICATION_CREDENTIALS or the metadata server.");
	if (opts->region && *opts->region) {
		k->location = strdup(opts->region);
		ENSURE_ALLOC(k->location);
	}
	/* gcloud's own override, so one setting points both at a test or private endpoint. */
	if (!endpoint || !*endpoint)
		endpoint = getenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS");
	if (!endpoint || !*endpoint)
		endpoint = GCP_DEFAULT_ENDPOINT;
	if (!dmbyok_kms_url_acceptable(endpoint))
		return log_error_errno(EINVAL,
		                       "Cloud KMS endpoint %s must be https:// without credentials "
		                       "(plain http only to loopback).",
		                       endpoint);
	n = strlen(endpoint);
	if (asprintf(&k->endpoint, "%s%s", endpoint, endpoint[n - 1] == '/' ? "" : "/") < 0)
		return log_oom();

	if (!ca || !*ca)
		ca = getenv("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE");
	if (ca && *ca && access(ca, R_OK) < 0)
		return log_error_errno(errno, "Cannot read the CA bundle %s: %m", ca);
	GUARD(dmbyok_kms_http_new(ca && *ca ? ca : NULL, &k->http));

	k->timeout_ms = opts->timeout_ms ? opts->timeout_ms : GCP_DEFAULT_TIMEOUT_MS;
	k->auth.http = k->http;
	k->auth.timeout_ms = k->timeout_ms;
	dmbyok_kms_retry_init(&k->retry, opts->max_attempts);
	return 0;
}

static const char *gcp_region(struct kms_client *c)
{
	return gcp_of(c)->location;
}

/* The service account's email, as Cloud Audit Logs' principalEmail names it. */
static const char *gcp_principal(struct kms_client *c)
{
	return gcp_of(c)->auth.cached.principal;
}

const struct kms_provider_ops dmbyok_gcp_kms_provider_ops = {
	.name = "gcp",
	.title = "Google Cloud",
	.client_new = gcp_client_new,
	.client_free = gcp_client_free,
	.generate_data_key = gcp_generate_data_key,
	.decrypt = gcp_decrypt,
	.reencrypt = gcp_reencrypt,
	.describe_key = gcp_describe_key,
	.region = gcp_region,
	.principal = gcp_principal,
};
