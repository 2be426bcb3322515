/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Azure Key Vault and Managed HSM (REST, api-version 7.4). A volume's data key is random
 * bytes from OpenSSL's private generator, wrapped by `wrapkey` (RSA-OAEP-256 under an RSA
 * key, A256KW under a 256-bit oct-HSM key) on one exact key version, which the token
 * records; `unwrapkey` on that version opens it. Key Vault has no data-key call, no
 * re-encrypt and no additional authenticated data: the first two are composed here (the
 * plaintext only in locked memory), and the volume binding is dmbyok's own key check value
 * (docs/kms-azure.md). The encryption context is accepted and not sent.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "azure.h"
#include "../aws/aws.h"
#include "../kms-http.h"
#include "../kms-util.h"
#include "dmbyok/encoding.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "../kms-provider.h"

#define AZURE_DEFAULT_TIMEOUT_MS 10000U
/* ReEncrypt looks for the version that wrapped a blob among this many, newest first. */
#define AZURE_MAX_VERSIONS 25U

/* A vault's audience, as its challenge named it (Azure Stack Hub's, a sovereign cloud's). */
struct audience {
	char *host;
	char *resource;
};

struct azure_kms {
	struct kms_http *http;
	struct azure_auth auth;
	struct kms_retry retry;
	struct audience *audiences;
	size_t n_audiences;
	char *label; /* --region: labels the audit before a key names its vault; or NULL */
	unsigned timeout_ms;
};

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
#define _cleanup_json_ _cleanup_(json_object_putp)

static struct azure_kms *azure_of(struct kms_client *c)
{
	return c->provider_data;
}

static int fail(struct kms_client *c, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(struct kms_client *c, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
	return log_debug_errno(r, "%s", c->last_error);
}

/* "Authorization: Bearer TOKEN", built in locked memory. */
static int bearer(const struct azure_token *t, struct secret **ret)
{
	_cleanup_secret_ struct secret *value = NULL;

	GUARD(dmbyok_secret_new(t->token->size + 8, &value));
	value->size = 0;
	GUARD(dmbyok_secret_append(value, "Bearer ", 7));
	GUARD(dmbyok_secret_append(value, t->token->data, t->token->size + 1));
	return dmbyok_kms_http_secret_header("Authorization", (const char *)value->data, ret);
}

struct call {
	const char *operation; /* dmbyok's name, for messages and the error mapping */
	const char *method;
	const struct azure_key_id *key;
	const char *what;   /* after /keys/NAME[/VERSION]: "/wrapkey", "/versions", "" */
	bool versionless;   /* the key's path even when key->version is set */
	const char *body;   /* JSON, may be in locked memory; NULL for none */
	const char *prefix; /* "keys" or "deletedkeys" */
};

struct outcome {
	struct secret *body; /* the answer (200), in locked memory */
	long status;
	char *code, *inner; /* Key Vault's error codes */
};

static void outcome_done(struct outcome *o)
{
	dmbyok_secret_free(o->body);
	free(o->code);
	free(o->inner);
	*o = (struct outcome){};
}

static const char *audience_of(struct azure_kms *k, const char *host)
{
	for (size_t i = 0; i < k->n_audiences; i++)
		if (!strcmp(k->audiences[i].host, host))
			return k->audiences[i].resource;
	return dmbyok_azure_resource_for_host(host);
}

static int audience_learn(struct azure_kms *k, const char *host, char *resource)
{
	struct audience *a;

	for (size_t i = 0; i < k->n_audiences; i++)
		if (!strcmp(k->audiences[i].host, host)) {
			free(k->audiences[i].resource);
			k->audiences[i].resource = resource;
			return 0;
		}
	a = reallocarray(k->audiences, k->n_audiences + 1, sizeof(*a));
	if (!a) {
		free(resource);
		return -ENOMEM;
	}
	k->audiences = a;
	a[k->n_audiences].host = strdup(host);
	if (!a[k->n_audiences].host) {
		free(resource);
		return -ENOMEM;
	}
	a[k->n_audiences++].resource = resource;
	return 0;
}

/*
 * A 401's challenge, followed as Azure's SDK follows it: a resource in the vault's own
 * domain becomes the vault's audience (*learnt when it changed); a foreign one, or another
 * tenant than a service principal's AZURE_TENANT_ID, is refused. 0 when there is nothing
 * to follow.
 */
static int follow_challenge(struct kms_client *c, const char *host, const char *header,
                            const char *current, bool *learnt)
{
	_cleanup_(dmbyok_azure_challenge_done) struct azure_challenge ch = {};
	_cleanup_free_ char *resource = NULL;
	const char *source = dmbyok_azure_credential_source(), *tenant = NULL;
	char why[512] = "";
	int r;

	if (!header || dmbyok_azure_parse_challenge(header, &ch) < 0)
		return 0;
	/* Managed identity has no tenant to choose: IMDS issues the VM identity's tokens. */
	if (strcmp(source, "managed-identity"))
		tenant = getenv("AZURE_TENANT_ID");
	r = dmbyok_azure_challenge_verify(&ch, host, tenant, &resource, why, sizeof(why));
	if (r == -EKEYREJECTED)
		return fail(c, EKEYREJECTED, "%s", why);
	if (r < 0)
		return r;
	if (!resource || (current && !strcmp(current, resource)))
		return 0;
	log_debug("Key Vault %s asks for tokens for %s (was %s).", host, resource,
	          current ? current : "not known yet");
	*learnt = true;
	return audience_learn(azure_of(c), host, TAKE_PTR(resource));
}

/*
 * One attempt: the token, the request, the answer classified. *retry when worth another;
 * *learnt when the vault's challenge named a new audience for its host (try again at once).
 * A vault whose audience is not known yet (outside Azure's known clouds) is first asked
 * without a token and without the body, as Azure's SDK does, for its challenge.
 */
static int attempt_once(struct kms_client *c, const struct call *call, const char *url, bool *retry,
                        bool *learnt, struct outcome *out)
{
	struct azure_kms *k = azure_of(c);
	static const char *const headers[] = { "Content-Type: application/json",
		                               "Accept: application/json", NULL };
	_cleanup_secret_ struct secret *auth = NULL;
	_cleanup_free_ char *msg = NULL;
	const char *resource = audience_of(k, call->key->host);
	const struct azure_token *tok;
	const struct secret *secrets[2] = {};
	struct kms_http_response resp = {};
	const char *detail = NULL;
	char why[512] = "";
	bool probe;
	int r;

	*retry = *learnt = false;
	if (resource) {
		r = dmbyok_azure_auth_token(&k->auth, resource, &tok, why, sizeof(why));
		if (r < 0) {
			*retry =
			    dmbyok_kms_errno_is_retryable(r) || r == -EAGAIN || r == -EREMOTEIO;
			dmbyok_kms_set_last_error(c, "%s", why);
			return r;
		}
		GUARD(bearer(tok, &auth));
		secrets[0] = auth;
	}
	r = dmbyok_kms_http_perform(k->http,
	                            &(struct kms_http_request){
	                                .method = call->method,
	                                .url = url,
	                                .headers = headers,
	                                .body = resource ? call->body : NULL,
	                                .body_len = resource && call->body ? strlen(call->body) : 0,
	                                .timeout_ms = k->timeout_ms,
	                                .secret_headers = secrets,
	                                .want_headers = true,
	                            },
	                            &resp, &detail);
	dmbyok_kms_note_attempt(call->key->host, resp.request_id);
	if (r < 0) {
		*retry = dmbyok_kms_errno_is_retryable(r);
		if (r == -EINVAL && detail)
			dmbyok_kms_set_last_error(
			    c,
			    "TLS or request setup failed for %s (check the CA "
			    "bundle, REQUESTS_CA_BUNDLE): %s",
			    url, detail);
		else
			dmbyok_kms_set_last_error(c, "%s: cannot reach %s: %s", call->operation,
			                          call->key->vault,
			                          detail ? detail : dmbyok_strerror(r));
		return r;
	}
	out->status = resp.status;
	if (resp.status >= 200 && resp.status < 300) {
		out->body = TAKE_PTR(resp.body);
		dmbyok_kms_http_response_done(&resp);
		return 0;
	}
	r = dmbyok_azure_parse_error(resp.body, &out->code, &out->inner, &msg);
	/* (Following it may replace the string `resource` points to.) */
	probe = !resource;
	if (r >= 0 && resp.status == 401)
		r = follow_challenge(c, call->key->host, resp.www_authenticate, resource, learnt);
	if (r >= 0 && resp.status == 401 && probe && !*learnt)
		r = fail(c, EKEYREJECTED,
		         "%s: the vault %s answers 401 without a Bearer challenge naming its "
		         "audience, so dmbyok cannot tell which token it takes",
		         call->operation, call->key->host);
	dmbyok_kms_http_response_done(&resp);
	if (r < 0)
		return r;
	if (out->code)
		dmbyok_kms_set_last_error(c, "%s%s%s%s: %s", out->code, out->inner ? " (" : "",
		                          out->inner ? out->inner : "", out->inner ? ")" : "",
		                          msg ? msg : "");
	else
		dmbyok_kms_set_last_error(c, "%s: HTTP status %ld without a Key Vault error",
		                          call->operation, out->status);
	*retry = out->status == 408 || out->status == 429 || out->status == 500 ||
	         out->status == 502 || out->status == 503 || out->status == 504;
	return dmbyok_azure_error_to_errno(call->operation, out->status, out->code, out->inner);
}

/*
 * One Key Vault call with retries (capped full-jitter backoff and a retry quota, the
 * standard mode dmbyok uses everywhere). A 401 whose challenge names a new audience is
 * followed at once (once per call); otherwise a 401 drops the cached token and tries once
 * more with a fresh one; a second 401 is the credentials' fault.
 */
static int kv_call(struct kms_client *c, const struct call *call, struct outcome *out)
{
	struct azure_kms *k = azure_of(c);
	const struct azure_key_id *key = call->key;
	_cleanup_free_ char *url = NULL;
	bool fresh = false, retried = false, followed = false, retry, learnt;
	int r;

	if (asprintf(&url, "%s/%s/%s%s%s%s?api-version=" AZURE_API_VERSION, key->vault,
	             call->prefix ? call->prefix : "keys", key->name,
	             key->version && !call->versionless ? "/" : "",
	             key->version && !call->versionless ? key->version : "", call->what) < 0)
		return log_oom();
	for (unsigned n = 1;; n++) {
		outcome_done(out);
		r = attempt_once(c, call, url, &retry, &learnt, out);
		if (r >= 0) {
			dmbyok_kms_retry_release(&k->retry, r, retried);
			return 0;
		}
		if (learnt && !followed) {
			/* Not a retry: the vault said which token it takes. */
			followed = true;
			n--;
			continue;
		}
		if (r == -EKEYEXPIRED && !fresh) {
			fresh = true;
			retry = true;
			dmbyok_azure_auth_invalidate(&k->auth);
		}
		log_debug("%s attempt %u/%u: %s", call->operation, n, k->retry.max_attempts,
		          dmbyok_kms_last_error(c));
		if (!retry || n >= k->retry.max_attempts)
			break;
		if (!dmbyok_kms_retry_acquire(&k->retry, r)) {
			log_debug("Retry quota exhausted, not retrying %s.", call->operation);
			break;
		}
		retried = true;
		dmbyok_kms_sleep_ms(dmbyok_kms_retry_backoff_ms(n));
	}
	return log_debug_errno(r, "%s failed: %s", call->operation, dmbyok_kms_last_error(c));
}

/* A success answer as a JSON object. */
static int answer_object(struct kms_client *c, const char *operation, const struct secret *body,
                         json_object **ret)
{
	json_object *j = json_tokener_parse((const char *)body->data);

	if (!j || !json_object_is_type(j, json_type_object)) {
		json_object_put(j);
		return fail(c, EPROTO, "%s: malformed answer from Key Vault", operation);
	}
	*ret = j;
	return 0;
}

static const char *member(json_object *o, const char *a, const char *b)
{
	json_object *v = o;

	if (!json_object_object_get_ex(v, a, &v) || (b && !json_object_object_get_ex(v, b, &v)) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int parse_or_fail(struct kms_client *c, const char *operation, const char *id,
                         struct azure_key_id *ret)
{
	if (id && dmbyok_azure_parse_key_id(id, ret) == 0)
		return 0;
	return fail(c, EINVAL,
	            "%s: \"%.200s\" is not a Key Vault key identifier "
	            "(https://VAULT.vault.azure.net/keys/NAME[/VERSION])",
	            operation, id ? id : "(none)");
}

/* Whether `kid` names the same vault and key as `key` (and its version, when it has one). */
static bool kid_matches(const char *kid, const struct azure_key_id *key, struct azure_key_id *ret)
{
	if (!kid || dmbyok_azure_parse_key_id(kid, ret) < 0 || !ret->version)
		return false;
	return !strcmp(ret->host, key->host) && !strcasecmp(ret->name, key->name) &&
	       (!key->version || !strcmp(ret->version, key->version));
}

struct key_state {
	char *kid; /* versioned */
	char *kty;
	bool enabled;
	bool can_wrap, can_unwrap;
};

static void key_state_done(struct key_state *s)
{
	free(s->kid);
	free(s->kty);
	*s = (struct key_state){};
}

static bool expired_now(json_object *attributes, const char *field, bool past)
{
	json_object *v;
	int64_t t;

	if (!json_object_object_get_ex(attributes, field, &v) ||
	    !json_object_is_type(v, json_type_int))
		return false;
	t = json_object_get_int64(v);
	return past ? t <= (int64_t)time(NULL) : t > (int64_t)time(NULL);
}

/* GET the key (or version): its versioned kid, type, whether it is usable and for what. */
static int get_key(struct kms_client *c, const char *operation, const struct azure_key_id *key,
                   struct key_state *ret, struct outcome *out)
{
	_cleanup_json_ json_object *j = NULL;
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id got = {};
	json_object *attributes = NULL, *ops = NULL, *e;
	const char *kid, *kty;

	GUARD(kv_call(
	    c, &(struct call){ .operation = operation, .method = "GET", .key = key, .what = "" },
	    out));
	GUARD(answer_object(c, operation, out->body, &j));
	kid = member(j, "key", "kid");
	kty = member(j, "key", "kty");
	if (!kid_matches(kid, key, &got) || !kty)
		return fail(c, EPROTO, "%s: Key Vault answered for \"%.200s\", not for %s/keys/%s",
		            operation, kid ? kid : "(no kid)", key->vault, key->name);
	ret->kid = strdup(kid);
	ret->kty = strdup(kty);
	ENSURE(ret->kid && ret->kty, ENOMEM);
	(void)json_object_object_get_ex(j, "attributes", &attributes);
	e = NULL;
	ret->enabled = attributes && json_object_object_get_ex(attributes, "enabled", &e) &&
	               json_object_is_type(e, json_type_boolean) && json_object_get_boolean(e) &&
	               !expired_now(attributes, "exp", true) &&
	               !expired_now(attributes, "nbf", false);
	if (json_object_object_get_ex(json_object_object_get(j, "key"), "key_ops", &ops) &&
	    json_object_is_type(ops, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(ops); i++) {
			const char *op = json_object_get_string(json_object_array_get_idx(ops, i));

			ret->can_wrap |= op && !strcmp(op, "wrapKey");
			ret->can_unwrap |= op && !strcmp(op, "unwrapKey");
		}
	} else {
		/* No key_ops: every operation of its type is allowed. */
		ret->can_wrap = ret->can_unwrap = true;
	}
	return 0;
}

static const char *alg_for_type(const char *kty)
{
	if (!strcmp(kty, "RSA") || !strcmp(kty, "RSA-HSM"))
		return AZURE_ALG_RSA;
	if (!strcmp(kty, "oct") || !strcmp(kty, "oct-HSM"))
		return AZURE_ALG_AES;
	return NULL;
}

/* {"alg": ALG, "value": B64URL} in locked memory. */
static int crypto_body(const char *alg, const struct secret *value_b64url, struct secret **ret)
{
	_cleanup_secret_ struct secret *s = NULL;
	static const char mid[] = "\",\"value\":\"";

	GUARD(dmbyok_secret_new(value_b64url->size + strlen(alg) + 32, &s));
	s->size = 0;
	GUARD(dmbyok_secret_append(s, "{\"alg\":\"", 8));
	GUARD(dmbyok_secret_append(s, alg, strlen(alg)));
	GUARD(dmbyok_secret_append(s, mid, sizeof(mid) - 1));
	GUARD(dmbyok_secret_append(s, value_b64url->data, value_b64url->size));
	GUARD(dmbyok_secret_append(s, "\"}", 3)); /* with the NUL */
	s->size--;
	*ret = TAKE_PTR(s);
	return 0;
}

/* wrapkey of the plaintext on the exact version `version_key`; the blob as standard base64. */
static int wrap(struct kms_client *c, const char *operation, const struct azure_key_id *version_key,
                const char *alg, const struct secret *plaintext, char **ret_b64, char **ret_kid)
{
	_cleanup_secret_ struct secret *value = NULL, *body = NULL, *blob = NULL;
	_cleanup_(outcome_done) struct outcome out = {};
	_cleanup_json_ json_object *j = NULL;
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id got = {};
	const char *kid, *v;

	GUARD(dmbyok_azure_base64url_secret(plaintext->data, plaintext->size, &value));
	GUARD(crypto_body(alg, value, &body));
	dmbyok_secret_freep(&value);
	GUARD(kv_call(c,
	              &(struct call){ .operation = operation,
	                              .method = "POST",
	                              .key = version_key,
	                              .what = "/wrapkey",
	                              .body = (const char *)body->data },
	              &out));
	GUARD(answer_object(c, operation, out.body, &j));
	kid = member(j, "kid", NULL);
	v = member(j, "value", NULL);
	if (!kid_matches(kid, version_key, &got))
		return fail(c, EPROTO, "%s: Key Vault wrapped under \"%.200s\", not %s", operation,
		            kid ? kid : "(no kid)", version_key->name);
	if (!v || dmbyok_azure_base64url_decode(v, strlen(v), &blob) < 0 || blob->size < 16)
		return fail(c, EPROTO, "%s: the answer's value is missing or not base64url",
		            operation);
	GUARD(dmbyok_base64_encode(blob->data, blob->size, ret_b64));
	*ret_kid = strdup(kid);
	ENSURE_ALLOC(*ret_kid);
	return 0;
}

/* unwrapkey of a blob on its exact version; the algorithm follows from the blob's length. */
static int unwrap(struct kms_client *c, const char *operation, const struct azure_key_id *key,
                  const uint8_t *blob, size_t n, struct secret **ret, char **ret_kid)
{
	_cleanup_secret_ struct secret *value = NULL, *body = NULL, *pt64 = NULL, *pt = NULL;
	_cleanup_(outcome_done) struct outcome out = {};
	_cleanup_json_ json_object *j = NULL;
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id got = {};
	const char *kid;
	int r;

	GUARD(dmbyok_azure_base64url_secret(blob, n, &value));
	GUARD(crypto_body(n == AZURE_A256KW_BLOB ? AZURE_ALG_AES : AZURE_ALG_RSA, value, &body));
	GUARD(kv_call(c,
	              &(struct call){ .operation = operation,
	                              .method = "POST",
	                              .key = key,
	                              .what = "/unwrapkey",
	                              .body = (const char *)body->data },
	              &out));
	/* The plaintext leaves the locked answer before json-c copies the document. */
	r = dmbyok_kms_json_take_string(out.body, "value", &pt64);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || dmbyok_azure_base64url_decode((const char *)pt64->data, pt64->size, &pt) < 0)
		return fail(c, EPROTO, "%s: the answer carries no base64url value", operation);
	GUARD(answer_object(c, operation, out.body, &j));
	kid = member(j, "kid", NULL);
	if (!kid_matches(kid, key, &got))
		return fail(c, EPROTO, "%s: Key Vault unwrapped under \"%.200s\", not %s",
		            operation, kid ? kid : "(no kid)", key->name);
	if (ret_kid) {
		*ret_kid = strdup(kid);
		ENSURE_ALLOC(*ret_kid);
	}
	*ret = TAKE_PTR(pt);
	return 0;
}

/* The key's current version, usable for wrapping: its identifier parsed, and the algorithm. */
static int current_version(struct kms_client *c, const char *operation, const char *key_id,
                           struct azure_key_id *ret, const char **ret_alg)
{
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id key = {};
	_cleanup_(key_state_done) struct key_state st = {};
	_cleanup_(outcome_done) struct outcome out = {};
	int r;

	GUARD(parse_or_fail(c, operation, key_id, &key));
	r = get_key(c, operation, &key, &st, &out);
	if (r == -EKEYREVOKED && out.status == 404 && !strcmp(operation, "GenerateDataKey")) {
		char said[sizeof(c->last_error)];

		/* The key the operator just named does not exist: a typo, not a revocation. */
		snprintf(said, sizeof(said), "%s", dmbyok_kms_last_error(c));
		return fail(c, EINVAL, "no Key Vault key %s: check the identifier (%s)", key_id,
		            said);
	}
	if (r < 0)
		return r;
	*ret_alg = alg_for_type(st.kty);
	if (!*ret_alg)
		return fail(c, EINVAL,
		            "%s: %s is a %s key; dmbyok wraps with RSA (RSA-OAEP-256) or oct-HSM "
		            "(A256KW) keys",
		            operation, st.kid, st.kty);
	if (!st.enabled)
		return fail(c, EKEYREVOKED, "%s: %s is disabled, expired or not yet valid",
		            operation, st.kid);
	if (!st.can_wrap)
		return fail(c, EKEYREVOKED, "%s: %s does not allow wrapKey (key_ops)", operation,
		            st.kid);
	return dmbyok_azure_parse_key_id(st.kid, ret);
}

static int azure_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                   size_t n_bytes, struct secret **ret_plaintext,
                                   char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id version = {};
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *ct = NULL, *kid = NULL;
	const char *alg;

	(void)context; /* Key Vault has no AAD: the key check value binds the volume. */
	GUARD(current_version(c, "GenerateDataKey", key_id, &version, &alg));
	GUARD(dmbyok_secret_new(n_bytes, &dek));
	/* The generator OpenSSL keeps apart for private keys. */
	if (RAND_priv_bytes(dek->data, (int)n_bytes) != 1)
		return fail(c, EIO, "OpenSSL's random generator failed");
	GUARD(wrap(c, "GenerateDataKey", &version, alg, dek, &ct, &kid));
	*ret_plaintext = TAKE_PTR(dek);
	*ret_ciphertext_b64 = TAKE_PTR(ct);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(kid);
	return 0;
}

static int decode_blob(struct kms_client *c, const char *operation, const char *b64, uint8_t **ret,
                       size_t *ret_n)
{
	size_t len = strlen(b64);
	_cleanup_free_ uint8_t *raw = malloc(len / 4 * 3 + 3);
	int n;

	ENSURE_ALLOC(raw);
	n = dmbyok_base64_decode(b64, len, raw, len / 4 * 3 + 3);
	if (n < 16)
		return fail(c, EBADMSG, "%s: the wrapped key is not base64 of a Key Vault blob",
		            operation);
	*ret = TAKE_PTR(raw);
	*ret_n = (size_t)n;
	return 0;
}

static int azure_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                         json_object *context, struct secret **ret_plaintext, char **ret_key_arn)
{
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id key = {};
	_cleanup_free_ uint8_t *blob = NULL;
	size_t n;

	(void)context;
	GUARD(parse_or_fail(c, "Decrypt", key_id, &key));
	if (!key.version)
		return fail(c, EINVAL,
		            "Decrypt: Key Vault unwraps with the version that wrapped: %s names no "
		            "version",
		            key_id);
	GUARD(decode_blob(c, "Decrypt", ciphertext_b64, &blob, &n));
	return unwrap(c, "Decrypt", &key, blob, n, ret_plaintext, ret_key_arn);
}

/* The versions of a key, newest first, enabled ones only (at most AZURE_MAX_VERSIONS). */
static int list_versions(struct kms_client *c, const struct azure_key_id *key, char ***ret)
{
	_cleanup_(outcome_done) struct outcome out = {};
	_cleanup_json_ json_object *j = NULL;
	json_object *items;
	char **v;
	size_t n, m = 0;

	GUARD(kv_call(c,
	              &(struct call){ .operation = "ReEncrypt",
	                              .method = "GET",
	                              .key = key,
	                              .what = "/versions",
	                              .versionless = true },
	              &out));
	GUARD(answer_object(c, "ReEncrypt", out.body, &j));
	if (!json_object_object_get_ex(j, "value", &items) ||
	    !json_object_is_type(items, json_type_array))
		return fail(c, EPROTO, "ReEncrypt: the version list has no value array");
	n = json_object_array_length(items);
	v = calloc(n + 1, sizeof(*v));
	ENSURE_ALLOC(v);
	/* Newest (latest "created") first: a blob is most likely its key's last version's. */
	for (size_t picked = 0; picked < n && m < AZURE_MAX_VERSIONS; picked++) {
		int64_t best_t = -1;
		size_t best = n;

		for (size_t i = 0; i < n; i++) {
			json_object *it = json_object_array_get_idx(items, i), *a = NULL, *t = NULL,
			            *e = NULL;
			int64_t created;
			bool taken = false;

			if (!json_object_object_get_ex(it, "attributes", &a) ||
			    !json_object_object_get_ex(a, "enabled", &e) ||
			    !json_object_get_boolean(e) || !member(it, "kid", NULL))
				continue;
			created = json_object_object_get_ex(a, "created", &t)
			              ? json_object_get_int64(t)
			              : 0;
			for (size_t k = 0; k < m; k++)
				taken |= !strcmp(v[k], member(it, "kid", NULL));
			/* Equal times (one second): the later in the list, Key Vault's order. */
			if (!taken && created >= best_t) {
				best_t = created;
				best = i;
			}
		}
		if (best == n)
			break;
		v[m] = strdup(member(json_object_array_get_idx(items, best), "kid", NULL));
		if (!v[m++]) {
			for (size_t k = 0; k < m; k++)
				free(v[k]);
			free(v);
			return -ENOMEM;
		}
	}
	*ret = v;
	return 0;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}
DEFINE_CLEANUP_FUNC(char **, strv_free);

static int azure_reencrypt(struct kms_client *c, const char *source_key_arn,
                           const char *ciphertext_b64, json_object *context,
                           const char *dest_key_id, char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id dest = {}, src = {};
	_cleanup_(strv_freep) char **versions = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ uint8_t *blob = NULL;
	_cleanup_free_ char *ct = NULL, *kid = NULL;
	const char *alg;
	size_t n;
	int r = -EBADMSG;

	(void)context;
	GUARD(decode_blob(c, "ReEncrypt", ciphertext_b64, &blob, &n));
	GUARD(current_version(c, "ReEncrypt", dest_key_id, &dest, &alg));
	/* The exact version that wrapped it, as the token records it. */
	if (source_key_arn) {
		GUARD(parse_or_fail(c, "ReEncrypt", source_key_arn, &src));
		if (!src.version)
			return fail(c, EINVAL, "ReEncrypt: %s names no key version",
			            source_key_arn);
		GUARD(unwrap(c, "ReEncrypt", &src, blob, n, &dek, NULL));
		goto wrap;
	}
	/*
	 * A Key Vault blob does not name the version that wrapped it: without the token's
	 * key_arn, the blob is unwrapped by the key's enabled versions, newest first, until one
	 * takes it (a wrong version answers BadParameter).
	 */
	GUARD(list_versions(c, &dest, &versions));
	for (size_t i = 0; versions[i] && r == -EBADMSG; i++) {
		_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id v = {};

		if (dmbyok_azure_parse_key_id(versions[i], &v) < 0 || strcmp(v.host, dest.host) ||
		    strcasecmp(v.name, dest.name))
			continue;
		r = unwrap(c, "ReEncrypt", &v, blob, n, &dek, NULL);
	}
	if (r == -EBADMSG)
		return fail(c, EBADMSG,
		            "ReEncrypt: no enabled version of %s/keys/%s unwraps this blob (it is "
		            "another key's, or its version is disabled)",
		            dest.vault, dest.name);
	if (r < 0)
		return r;
wrap:
	GUARD(wrap(c, "ReEncrypt", &dest, alg, dek, &ct, &kid));
	*ret_ciphertext_b64 = TAKE_PTR(ct);
	if (ret_key_arn)
		*ret_key_arn = TAKE_PTR(kid);
	return 0;
}

static int azure_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret)
{
	_cleanup_(dmbyok_azure_key_id_done) struct azure_key_id key = {};
	_cleanup_(key_state_done) struct key_state st = {};
	_cleanup_(outcome_done) struct outcome out = {};
	int r;

	GUARD(parse_or_fail(c, "DescribeKey", key_id, &key));
	r = get_key(c, "DescribeKey", &key, &st, &out);
	if (r == -EKEYREVOKED && out.status == 404) {
		_cleanup_(outcome_done) struct outcome deleted = {};
		char said[sizeof(c->last_error)];

		/*
		 * Gone from the vault. Soft-deleted (still recoverable) is the counterpart of
		 * AWS's PendingDeletion; purged, or no way to tell, is a deleted key.
		 */
		snprintf(said, sizeof(said), "%s", dmbyok_kms_last_error(c));
		if (kv_call(c,
		            &(struct call){ .operation = "DescribeKey",
		                            .method = "GET",
		                            .key = &key,
		                            .what = "",
		                            .versionless = true,
		                            .prefix = "deletedkeys" },
		            &deleted) == 0) {
			ret->key_arn = strdup(key_id);
			ret->key_state = strdup("SoftDeleted");
			ENSURE(ret->key_arn && ret->key_state, ENOMEM);
			ret->enabled = false;
			dmbyok_kms_set_last_error(c, "%s", said);
			return 0;
		}
		dmbyok_kms_set_last_error(c, "%s", said);
		return log_debug_errno(ENOENT, "DescribeKey: no %s.", key_id);
	}
	if (r < 0)
		return r;
	ret->key_arn = strdup(st.kid);
	ret->key_state = strdup(!st.enabled                      ? "Disabled"
	                        : !st.can_wrap || !st.can_unwrap ? "OperationsRestricted"
	                                                         : "Enabled");
	ENSURE(ret->key_arn && ret->key_state, ENOMEM);
	ret->enabled = st.enabled && st.can_unwrap;
	return 0;
}

static void azure_client_free(struct kms_client *c)
{
	struct azure_kms *k = azure_of(c);

	dmbyok_azure_auth_invalidate(&k->auth);
	dmbyok_kms_http_free(k->http);
	for (size_t i = 0; i < k->n_audiences; i++) {
		free(k->audiences[i].host);
		free(k->audiences[i].resource);
	}
	free(k->audiences);
	free(k->label);
	free(k);
	c->provider_data = NULL;
}

static int azure_client_new(struct kms_client *c, const struct kms_options *opts)
{
	const char *ca = opts->ca_bundle;
	struct azure_kms *k;

	k = calloc(1, sizeof(*k));
	ENSURE_ALLOC(k);
	c->provider_data = k;

	if (opts->profile && *opts->profile)
		return log_error_errno(EINVAL, "Profiles are AWS's: Azure credentials come from "
		                               "AZURE_* variables or the managed identity.");
	if (opts->endpoint && *opts->endpoint)
		return log_error_errno(EINVAL,
		                       "Key Vault's endpoint is the vault in the key identifier; "
		                       "--endpoint does not apply (HTTPS_PROXY routes through a "
		                       "proxy).");
	if (opts->region && *opts->region) {
		k->label = strdup(opts->region);
		ENSURE_ALLOC(k->label);
	}
	/* The variable Azure's Python tools (az, the SDK's requests transport) read. */
	if (!ca || !*ca)
		ca = getenv("REQUESTS_CA_BUNDLE");
	if (ca && *ca && access(ca, R_OK) < 0)
		return log_error_errno(errno, "Cannot read the CA bundle %s: %m", ca);
	GUARD(dmbyok_kms_http_new(ca && *ca ? ca : NULL, &k->http));
	k->timeout_ms = opts->timeout_ms ? opts->timeout_ms : AZURE_DEFAULT_TIMEOUT_MS;
	k->auth.http = k->http;
	k->auth.timeout_ms = k->timeout_ms;
	dmbyok_kms_retry_init(&k->retry, opts->max_attempts);
	return 0;
}

static const char *azure_region(struct kms_client *c)
{
	return azure_of(c)->label;
}

/* The credentials' client id once a token was fetched (Key Vault logs identity.appid). */
static const char *azure_principal(struct kms_client *c)
{
	return azure_of(c)->auth.cached.principal;
}

const struct kms_provider_ops dmbyok_azure_kms_provider_ops = {
	.name = "azure",
	.title = "Azure",
	.client_new = azure_client_new,
	.client_free = azure_client_free,
	.generate_data_key = azure_generate_data_key,
	.decrypt = azure_decrypt,
	.reencrypt = azure_reencrypt,
	.describe_key = azure_describe_key,
	.region = azure_region,
	.principal = azure_principal,
};
