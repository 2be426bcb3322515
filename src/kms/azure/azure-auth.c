/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Microsoft Entra access tokens for Key Vault, found as Azure's DefaultAzureCredential
 * finds them, in its order, the parts that fit a host: the environment's service principal
 * (client secret, or a certificate that signs a client assertion), workload identity (a
 * federated token file), managed identity (IMDS). A source that is configured but fails is
 * reported, never replaced by the next one. Secrets, assertions and tokens live in locked
 * memory; tokens are cached per client and refreshed 5 minutes before they expire.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "azure.h"
#include "../aws/aws.h"
#include "../kms-http.h"
#include "../kms-util.h"
#include "dmbyok/log.h"

#define FILE_MAX (64U * 1024U)

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_CLEANUP_FUNC(X509 *, X509_free);

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static void token_clear(struct azure_token *t)
{
	dmbyok_secret_free(t->token);
	free(t->resource);
	free(t->principal);
	*t = (struct azure_token){};
}

void dmbyok_azure_auth_invalidate(struct azure_auth *a)
{
	if (a)
		token_clear(&a->cached);
}

const char *dmbyok_azure_credential_source(void)
{
	bool sp = env("AZURE_TENANT_ID") && env("AZURE_CLIENT_ID");

	/* EnvironmentCredential: a secret wins over a certificate, as in the SDKs. */
	if (sp && env("AZURE_CLIENT_SECRET"))
		return "client-secret";
	if (sp && env("AZURE_CLIENT_CERTIFICATE_PATH"))
		return "client-certificate";
	if (sp && env("AZURE_FEDERATED_TOKEN_FILE"))
		return "workload-identity";
	return "managed-identity";
}

int dmbyok_azure_client_assertion(const struct secret *pem, const char *client_id,
                                  const char *audience, time_t now, struct secret **ret, char *why,
                                  size_t why_size)
{
	_cleanup_(BIO_freep) BIO *cb = NULL;
	_cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
	_cleanup_(X509_freep) X509 *cert = NULL;
	_cleanup_(json_object_putp) json_object *claims = NULL;
	_cleanup_free_ char *x5t = NULL, *jti = NULL;
	unsigned char thumb[EVP_MAX_MD_SIZE], nonce[16];
	const char *cert_pem;
	unsigned thumb_len = 0;
	int r;

	/*
	 * The certificate is read from its own block on: OpenSSL's PEM reader decodes every
	 * block it passes over and frees the bytes without wiping them, the key's included.
	 */
	cert_pem = strstr((const char *)pem->data, "-----BEGIN CERTIFICATE-----");
	cb = cert_pem ? BIO_new_mem_buf(cert_pem, -1) : NULL;
	r = dmbyok_kms_rsa_key_from_pem(pem, &key);
	if (r == -ENOMEM)
		return r;
	cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
	if (r < 0 || !cert || X509_check_private_key(cert, key) != 1) {
		snprintf(why, why_size,
		         "AZURE_CLIENT_CERTIFICATE_PATH must be a PEM file with the certificate "
		         "and its unencrypted RSA private key");
		return -EINVAL;
	}
	if (X509_digest(cert, EVP_sha1(), thumb, &thumb_len) != 1 ||
	    RAND_bytes(nonce, sizeof(nonce)) != 1)
		return -EIO;
	GUARD(dmbyok_kms_base64url(thumb, thumb_len, &x5t));
	GUARD(dmbyok_kms_base64url(nonce, sizeof(nonce), &jti));

	claims = json_object_new_object();
	ENSURE_ALLOC(claims);
	if (json_object_object_add(claims, "aud", json_object_new_string(audience)) < 0 ||
	    json_object_object_add(claims, "iss", json_object_new_string(client_id)) < 0 ||
	    json_object_object_add(claims, "sub", json_object_new_string(client_id)) < 0 ||
	    json_object_object_add(claims, "jti", json_object_new_string(jti)) < 0 ||
	    json_object_object_add(claims, "nbf", json_object_new_int64(now)) < 0 ||
	    json_object_object_add(claims, "iat", json_object_new_int64(now)) < 0 ||
	    json_object_object_add(claims, "exp",
	                           json_object_new_int64(now + AZURE_ASSERTION_LIFETIME_S)) < 0)
		return -ENOMEM;
	r = dmbyok_kms_jwt_sign_rs256(key, "x5t", x5t, claims, ret);
	if (r == -EIO)
		snprintf(why, why_size, "cannot sign the client assertion (OpenSSL)");
	return r;
}

/* A positive number of seconds, as a JSON number or a decimal string (IMDS sends those). */
static bool seconds_of(json_object *v, int64_t *ret)
{
	const char *s;
	char *end = NULL;
	long long n;

	if (json_object_is_type(v, json_type_int)) {
		*ret = json_object_get_int64(v);
		return *ret > 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno || !*s || *end || n <= 0)
		return false;
	*ret = n;
	return true;
}

int dmbyok_azure_parse_token(struct secret *body, time_t now, struct azure_token *ret, char *why,
                             size_t why_size)
{
	_cleanup_(json_object_putp) json_object *j = NULL;
	_cleanup_secret_ struct secret *token = NULL;
	json_object *v;
	int64_t lifetime = 0, on = 0;
	time_t margin;
	int r;

	r = dmbyok_kms_json_take_string(body, "access_token", &token);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || token->size == 0 ||
	    !dmbyok_aws_header_safe((const char *)token->data, token->size)) {
		snprintf(why, why_size, "the answer carries no usable access_token");
		return -EPROTO;
	}
	j = json_tokener_parse((const char *)body->data);
	if (!j || !json_object_is_type(j, json_type_object)) {
		snprintf(why, why_size, "the answer is not a JSON object");
		return -EPROTO;
	}
	if (json_object_object_get_ex(j, "token_type", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     strcasecmp(json_object_get_string(v), "Bearer") != 0)) {
		snprintf(why, why_size, "the answer's token_type is not Bearer");
		return -EPROTO;
	}
	if (json_object_object_get_ex(j, "expires_in", &v)) {
		if (!seconds_of(v, &lifetime)) {
			snprintf(why, why_size, "the answer's expires_in is not a positive number");
			return -EPROTO;
		}
	} else if (json_object_object_get_ex(j, "expires_on", &v) && seconds_of(v, &on) &&
	           on > (int64_t)now) {
		lifetime = on - (int64_t)now;
	} else {
		snprintf(why, why_size, "the answer says neither expires_in nor expires_on");
		return -EPROTO;
	}
	if (lifetime > 86400)
		lifetime = 86400;
	margin =
	    lifetime / 4 < AZURE_REFRESH_MARGIN_S ? (time_t)lifetime / 4 : AZURE_REFRESH_MARGIN_S;
	token_clear(ret);
	ret->token = TAKE_PTR(token);
	ret->expires = now + (time_t)lifetime;
	ret->refresh_at = ret->expires - margin;
	return 0;
}

/* An error answer of a token source: its errno (see dmbyok_azure_auth_token). */
static int token_http_error(long status)
{
	if (status == 429 || status == 408)
		return -EAGAIN;
	if (status >= 500)
		return -EREMOTEIO;
	if (status >= 400)
		return -EKEYREJECTED;
	return -EPROTO;
}

/* "invalid_client: AADSTS7000215: Invalid client secret provided." (first line only). */
static void oauth_error_text(const struct secret *body, char *buf, size_t size)
{
	_cleanup_(json_object_putp) json_object *e = json_tokener_parse((const char *)body->data);
	json_object *code = NULL, *desc = NULL;
	const char *d = "";

	buf[0] = '\0';
	if (!e || !json_object_is_type(e, json_type_object))
		return;
	(void)json_object_object_get_ex(e, "error", &code);
	(void)json_object_object_get_ex(e, "error_description", &desc);
	if (desc && json_object_is_type(desc, json_type_string))
		d = json_object_get_string(desc);
	snprintf(buf, size, "%s%s%.*s",
	         code && json_object_is_type(code, json_type_string) ? json_object_get_string(code)
	                                                             : "",
	         *d ? ": " : "", (int)strcspn(d, "\r\n"), d);
	for (char *c = buf; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			*c = '?';
}

static bool tenant_valid(const char *t)
{
	return strlen(t) <= 128 &&
	       strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
	           strlen(t);
}

/* The client-credentials grant at AZURE_AUTHORITY_HOST/TENANT/oauth2/v2.0/token. */
static int service_principal_token(struct azure_auth *a, const char *source, const char *resource,
                                   struct azure_token *t, char *why, size_t why_size)
{
	const char *tenant = env("AZURE_TENANT_ID"), *client = env("AZURE_CLIENT_ID");
	const char *authority = env("AZURE_AUTHORITY_HOST"), *detail = NULL;
	_cleanup_secret_ struct secret *form = NULL, *cred = NULL;
	_cleanup_free_ char *url = NULL, *scope = NULL;
	struct kms_http_response resp = {};
	char said[400];
	size_t n;
	int r;

	if (!authority)
		authority = AZURE_DEFAULT_AUTHORITY;
	n = strlen(authority);
	while (n > 0 && authority[n - 1] == '/')
		n--;
	if (!tenant_valid(tenant)) {
		snprintf(why, why_size, "AZURE_TENANT_ID is not a tenant id or domain");
		return -EINVAL;
	}
	if (asprintf(&url, "%.*s/%s/oauth2/v2.0/token", (int)n, authority, tenant) < 0 ||
	    asprintf(&scope, "%s/.default", resource) < 0)
		return -ENOMEM;
	if (!dmbyok_kms_url_acceptable(url)) {
		snprintf(why, why_size,
		         "AZURE_AUTHORITY_HOST must be https:// (plain http only to loopback), "
		         "without credentials");
		return -EINVAL;
	}

	if (!strcmp(source, "client-secret")) {
		const char *secret = env("AZURE_CLIENT_SECRET");

		r = dmbyok_aws_secret_strndup(secret, strlen(secret), &cred);
	} else if (!strcmp(source, "client-certificate")) {
		_cleanup_secret_ struct secret *pem = NULL;
		const char *path = env("AZURE_CLIENT_CERTIFICATE_PATH");

		r = dmbyok_kms_read_secret_file(path, FILE_MAX, &pem);
		if (r == 0 && pem->size == 0)
			r = -EINVAL;
		if (r < 0) {
			snprintf(why, why_size, "cannot read AZURE_CLIENT_CERTIFICATE_PATH %s: %s",
			         path,
			         r == -EINVAL ? "not a regular file of a sane size"
			                      : dmbyok_strerror(r));
			return r == -ENOENT || r == -EACCES ? -ENOKEY : -EINVAL;
		}
		r = dmbyok_azure_client_assertion(pem, client, url, time(NULL), &cred, why,
		                                  why_size);
	} else {
		const char *path = env("AZURE_FEDERATED_TOKEN_FILE");

		/* Re-read for every token: Kubernetes rotates the projected file. */
		r = dmbyok_kms_read_secret_file(path, FILE_MAX, &cred);
		if (r == 0 && cred->size == 0)
			r = -EINVAL;
		if (r < 0) {
			snprintf(why, why_size, "cannot read AZURE_FEDERATED_TOKEN_FILE %s: %s",
			         path, dmbyok_strerror(r));
			return -ENOKEY;
		}
		while (cred->size > 0 && strchr(" \t\r\n", cred->data[cred->size - 1]))
			cred->data[--cred->size] = '\0';
	}
	if (r < 0)
		return r;

	GUARD(dmbyok_secret_new(3 * cred->size + 1024, &form));
	form->size = 0;
	GUARD(dmbyok_azure_form_append(form, "client_id", client, strlen(client)));
	GUARD(dmbyok_azure_form_append(form, "grant_type", "client_credentials", 18));
	GUARD(dmbyok_azure_form_append(form, "scope", scope, strlen(scope)));
	if (!strcmp(source, "client-secret")) {
		GUARD(dmbyok_azure_form_append(form, "client_secret", cred->data, cred->size));
	} else {
		GUARD(dmbyok_azure_form_append(form, "client_assertion_type", AZURE_ASSERTION_TYPE,
		                               strlen(AZURE_ASSERTION_TYPE)));
		GUARD(dmbyok_azure_form_append(form, "client_assertion", cred->data, cred->size));
	}
	dmbyok_secret_freep(&cred);
	form->data[form->size] = '\0';

	r = dmbyok_kms_token_post(a->http, url, form, a->timeout_ms, &resp, &detail);
	if (r < 0) {
		snprintf(why, why_size, "cannot reach the token endpoint %s (%s credential): %s",
		         url, source, detail ? detail : dmbyok_strerror(r));
		return r;
	}
	if (resp.status != 200) {
		oauth_error_text(resp.body, said, sizeof(said));
		snprintf(why, why_size, "the token endpoint %s refused client %s (%s): HTTP %ld %s",
		         url, client, source, resp.status, said);
		r = token_http_error(resp.status);
		dmbyok_kms_http_response_done(&resp);
		return r;
	}
	r = dmbyok_azure_parse_token(resp.body, time(NULL), t, said, sizeof(said));
	dmbyok_kms_http_response_done(&resp);
	if (r < 0)
		snprintf(why, why_size, "the token endpoint %s: %s", url, said);
	return r;
}

/* Managed identity through the instance metadata service (IMDS). */
static int imds_token(struct azure_auth *a, const char *resource, struct azure_token *t, char *why,
                      size_t why_size)
{
	static const char *const headers[] = { "Metadata: true", NULL };
	const char *host = env("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
	           *client = env("AZURE_CLIENT_ID");
	const char *detail = NULL;
	_cleanup_free_ char *url = NULL;
	struct kms_http_response resp = {};
	bool explicit_host = host != NULL;
	char said[400];
	size_t n;
	int r;

	if (!host)
		host = AZURE_IMDS_AUTHORITY;
	n = strlen(host);
	while (n > 0 && host[n - 1] == '/')
		n--;
	if ((client && strspn(client, "0123456789abcdefABCDEF-") != strlen(client)) ||
	    strspn(resource, "abcdefghijklmnopqrstuvwxyz0123456789:/.-") != strlen(resource)) {
		snprintf(why, why_size, "AZURE_CLIENT_ID must be a client id (a GUID)");
		return -EINVAL;
	}
	if (asprintf(&url, "%.*s/metadata/identity/oauth2/token?api-version=%s&resource=%s%s%s",
	             (int)n, host, AZURE_IMDS_API_VERSION, resource, client ? "&client_id=" : "",
	             client ? client : "") < 0)
		return -ENOMEM;
	if (strncmp(url, "http://", 7) != 0 || strchr(url, '@')) {
		snprintf(why, why_size,
		         "AZURE_POD_IDENTITY_AUTHORITY_HOST must be http://HOST[:PORT]");
		return -EINVAL;
	}
	r = dmbyok_kms_metadata_get(a->http, url, headers, a->timeout_ms, AZURE_IMDS_TIMEOUT_MS,
	                            &resp, &detail);
	if (r < 0) {
		snprintf(why, why_size,
		         "no Azure credentials: AZURE_TENANT_ID/AZURE_CLIENT_ID with "
		         "AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or "
		         "AZURE_FEDERATED_TOKEN_FILE are not set, and the managed identity "
		         "endpoint %.*s does not answer (%s)",
		         (int)n, host, detail ? detail : dmbyok_strerror(r));
		/* Off Azure IMDS is simply absent; a named one is down. */
		return explicit_host ? r : -ENOKEY;
	}
	if (resp.status != 200) {
		oauth_error_text(resp.body, said, sizeof(said));
		snprintf(why, why_size,
		         "the managed identity endpoint %.*s answers HTTP %ld %s%s%s", (int)n, host,
		         resp.status, said, client ? " for client id " : "", client ? client : "");
		r = token_http_error(resp.status);
		/* 400 "Identity not found": this VM has no (such) managed identity. */
		if (resp.status == 400)
			r = -ENOKEY;
		/* IMDS answers 404 while an identity is being assigned: retry later. */
		if (resp.status == 404 || resp.status == 410)
			r = -EAGAIN;
		dmbyok_kms_http_response_done(&resp);
		return r;
	}
	r = dmbyok_azure_parse_token(resp.body, time(NULL), t, said, sizeof(said));
	dmbyok_kms_http_response_done(&resp);
	if (r < 0)
		snprintf(why, why_size, "the managed identity endpoint: %s", said);
	return r;
}

int dmbyok_azure_auth_token(struct azure_auth *a, const char *resource,
                            const struct azure_token **ret, char *why, size_t why_size)
{
	struct azure_token fresh = {};
	const char *source = dmbyok_azure_credential_source();
	time_t now = time(NULL);
	bool same = a->cached.token && a->cached.resource && !strcmp(a->cached.resource, resource);
	int r;

	if (same && now < a->cached.refresh_at) {
		*ret = &a->cached;
		return 0;
	}
	if (!strcmp(source, "managed-identity"))
		r = imds_token(a, resource, &fresh, why, why_size);
	else
		r = service_principal_token(a, source, resource, &fresh, why, why_size);
	if (r < 0) {
		token_clear(&fresh);
		/* A token that has not expired yet still works: use it while the source is down. */
		if (same && now + 10 < a->cached.expires && r != -EKEYREJECTED) {
			log_debug("Refreshing the Azure access token failed (%s); the cached one "
			          "is valid for %lld s more.",
			          why, (long long)(a->cached.expires - now));
			*ret = &a->cached;
			return 0;
		}
		return r;
	}
	fresh.source = source;
	fresh.resource = strdup(resource);
	/* Key Vault's logs name the caller by its application (client) id. */
	fresh.principal = strdup(env("AZURE_CLIENT_ID") ? env("AZURE_CLIENT_ID")
	                                                : "system-assigned managed identity");
	if (!fresh.resource || !fresh.principal) {
		token_clear(&fresh);
		return -ENOMEM;
	}
	token_clear(&a->cached);
	a->cached = fresh;
	log_debug("Azure access token for %s from the %s credential, valid for %lld s.", resource,
	          source, (long long)(fresh.expires - now));
	*ret = &a->cached;
	return 0;
}
