/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Google access tokens, found the way Google's client libraries find Application Default
 * Credentials: GOOGLE_APPLICATION_CREDENTIALS, the gcloud well-known file, the GCE metadata
 * server. A service-account key signs an RS256 JWT that its token_uri exchanges for an
 * access token (RFC 7523); the private key is read from the file for each signature and
 * lives only in locked memory (and OpenSSL's key object, freed at once). Tokens are cached
 * and refreshed before they expire.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "gcp.h"
#include "../aws/aws.h"
#include "../kms-http.h"
#include "dmbyok/log.h"

#define KEY_FILE_MAX (64U * 1024U)

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);

static void token_clear(struct gcp_token *t)
{
	dmbyok_secret_free(t->token);
	free(t->principal);
	*t = (struct gcp_token){};
}

void dmbyok_gcp_auth_invalidate(struct gcp_auth *a)
{
	token_clear(&a->cached);
}

void dmbyok_gcp_auth_done(struct gcp_auth *a)
{
	if (a)
		token_clear(&a->cached);
}

static bool env_true(const char *name)
{
	const char *v = getenv(name);

	return v && (!strcasecmp(v, "true") || !strcmp(v, "1"));
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

int dmbyok_gcp_jwt_sign(const struct secret *pem, const char *key_id, const char *email,
                        const char *audience, time_t now, struct secret **ret, char *why,
                        size_t why_size)
{
	_cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
	_cleanup_(json_object_putp) json_object *claims = NULL;
	int r;

	claims = json_object_new_object();
	ENSURE_ALLOC(claims);
	if (json_object_object_add(claims, "iss", json_object_new_string(email)) < 0 ||
	    json_object_object_add(claims, "scope", json_object_new_string(GCP_SCOPE)) < 0 ||
	    json_object_object_add(claims, "aud", json_object_new_string(audience)) < 0 ||
	    json_object_object_add(claims, "iat", json_object_new_int64((int64_t)now)) < 0 ||
	    json_object_object_add(claims, "exp",
	                           json_object_new_int64((int64_t)now + GCP_JWT_LIFETIME_S)) < 0)
		return -ENOMEM;
	r = dmbyok_kms_rsa_key_from_pem(pem, &pkey);
	if (r == -EINVAL)
		snprintf(why, why_size,
		         "the service-account key's private_key is not an "
		         "unencrypted RSA key in PEM");
	if (r < 0)
		return r;
	r = dmbyok_kms_jwt_sign_rs256(pkey, key_id ? "kid" : NULL, key_id, claims, ret);
	if (r == -EIO)
		snprintf(why, why_size, "cannot sign the service-account JWT (OpenSSL)");
	return r;
}

/* An error answer of a token source: its errno (see dmbyok_gcp_auth_token). */
static int token_http_error(long status)
{
	if (status == 429)
		return -EAGAIN;
	if (status >= 500)
		return -EREMOTEIO;
	if (status == 400 || status == 401 || status == 403)
		return -EKEYREJECTED;
	if (status == 404)
		return -ENOKEY;
	return -EPROTO;
}

/* {"access_token", "expires_in", "token_type"} into t; the body (locked) is blanked. */
static int parse_token_response(struct secret *body, const char *source, struct gcp_token *t,
                                char *why, size_t why_size)
{
	_cleanup_(json_object_putp) json_object *j = NULL;
	_cleanup_secret_ struct secret *token = NULL;
	json_object *v;
	int64_t expires_in = 3600;
	time_t now = time(NULL), margin;
	int r;

	r = dmbyok_kms_json_take_string(body, "access_token", &token);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || token->size == 0 ||
	    !dmbyok_aws_header_safe((char *)token->data, token->size)) {
		snprintf(why, why_size, "the %s answer carries no usable access_token", source);
		return -EPROTO;
	}
	j = json_tokener_parse((const char *)body->data);
	if (!j || !json_object_is_type(j, json_type_object)) {
		snprintf(why, why_size, "the %s answer is not JSON", source);
		return -EPROTO;
	}
	if (json_object_object_get_ex(j, "expires_in", &v)) {
		if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) <= 0) {
			snprintf(why, why_size,
			         "the %s answer's expires_in is not a positive number", source);
			return -EPROTO;
		}
		expires_in = json_object_get_int64(v);
	}
	if (json_object_object_get_ex(j, "token_type", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     strcasecmp(json_object_get_string(v), "Bearer") != 0)) {
		snprintf(why, why_size, "the %s answer's token_type is not Bearer", source);
		return -EPROTO;
	}
	if (expires_in > 86400)
		expires_in = 86400;
	margin = expires_in / 4 < GCP_REFRESH_MARGIN_S ? expires_in / 4 : GCP_REFRESH_MARGIN_S;
	token_clear(t);
	t->token = TAKE_PTR(token);
	t->expires = now + (time_t)expires_in;
	t->refresh_at = t->expires - margin;
	t->source = source;
	return 0;
}

static int service_account_token(struct gcp_auth *a, const char *path, struct gcp_token *t,
                                 char *why, size_t why_size)
{
	static const char grant[] =
	    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
	_cleanup_secret_ struct secret *file = NULL, *pem = NULL, *jwt = NULL, *form = NULL;
	_cleanup_(json_object_putp) json_object *j = NULL;
	_cleanup_free_ char *email = NULL, *token_uri = NULL, *kid = NULL;
	struct kms_http_response resp = {};
	const char *detail = NULL;
	json_object *v;
	int r;

	r = dmbyok_kms_read_secret_file(path, KEY_FILE_MAX, &file);
	if (r == 0 && file->size == 0)
		r = -EINVAL;
	if (r < 0) {
		snprintf(why, why_size, "cannot read the credentials file %s: %s", path,
		         r == -EINVAL ? "not a regular file of a sane size" : dmbyok_strerror(r));
		return r == -ENOENT || r == -EACCES ? -ENOKEY : -EINVAL;
	}
	r = dmbyok_kms_json_take_string(file, "private_key", &pem);
	if (r == -ENOMEM)
		return r;
	j = json_tokener_parse((const char *)file->data);
	if (!j || !json_object_is_type(j, json_type_object)) {
		snprintf(why, why_size, "the credentials file %s is not JSON", path);
		return -EINVAL;
	}
	if (!json_object_object_get_ex(j, "type", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), "service_account") != 0) {
		snprintf(why, why_size,
		         "the credentials file %s is of type \"%s\": dmbyok takes service-account "
		         "keys (type service_account) and the metadata server",
		         path,
		         v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
		                                                       : "(none)");
		return -EINVAL;
	}
	if (r < 0 || !json_object_object_get_ex(j, "client_email", &v) ||
	    !json_object_is_type(v, json_type_string) || !*json_object_get_string(v)) {
		snprintf(why, why_size,
		         "the service-account key %s lacks private_key or client_email", path);
		return -EINVAL;
	}
	email = strdup(json_object_get_string(v));
	ENSURE_ALLOC(email);
	if (json_object_object_get_ex(j, "private_key_id", &v) &&
	    json_object_is_type(v, json_type_string) && *json_object_get_string(v)) {
		kid = strdup(json_object_get_string(v));
		ENSURE_ALLOC(kid);
	}
	token_uri =
	    strdup(json_object_object_get_ex(j, "token_uri", &v) &&
	                   json_object_is_type(v, json_type_string) && *json_object_get_string(v)
	               ? json_object_get_string(v)
	               : GCP_DEFAULT_TOKEN_URI);
	ENSURE_ALLOC(token_uri);
	if (!dmbyok_kms_url_acceptable(token_uri)) {
		snprintf(why, why_size,
		         "the token_uri %s of %s must be https:// (plain http only to loopback)",
		         token_uri, path);
		return -EINVAL;
	}

	GUARD(dmbyok_gcp_jwt_sign(pem, kid, email, token_uri, time(NULL), &jwt, why, why_size));
	dmbyok_secret_freep(&pem);
	dmbyok_secret_freep(&file);
	GUARD(dmbyok_secret_new(sizeof(grant) + jwt->size, &form));
	memcpy(form->data, grant, sizeof(grant) - 1);
	memcpy(form->data + sizeof(grant) - 1, jwt->data, jwt->size + 1);
	form->size = sizeof(grant) - 1 + jwt->size;

	r = dmbyok_kms_token_post(a->http, token_uri, form, a->timeout_ms, &resp, &detail);
	if (r < 0) {
		snprintf(why, why_size, "cannot reach the token endpoint %s for %s: %s", token_uri,
		         email, detail ? detail : dmbyok_strerror(r));
		return r;
	}
	if (resp.status != 200) {
		_cleanup_(json_object_putp) json_object *e =
		    json_tokener_parse((const char *)resp.body->data);
		json_object *code = NULL, *desc = NULL;

		if (e && json_object_is_type(e, json_type_object)) {
			(void)json_object_object_get_ex(e, "error", &code);
			(void)json_object_object_get_ex(e, "error_description", &desc);
		}
		snprintf(why, why_size, "the token endpoint %s refused %s: HTTP %ld %s%s%.200s",
		         token_uri, email, resp.status,
		         code && json_object_is_type(code, json_type_string)
		             ? json_object_get_string(code)
		             : "",
		         desc ? ": " : "",
		         desc && json_object_is_type(desc, json_type_string)
		             ? json_object_get_string(desc)
		             : "");
		r = token_http_error(resp.status);
		dmbyok_kms_http_response_done(&resp);
		return r == -ENOKEY ? -EKEYREJECTED : r;
	}
	r = parse_token_response(resp.body, "token endpoint", t, why, why_size);
	dmbyok_kms_http_response_done(&resp);
	if (r < 0)
		return r;
	t->source = "service-account";
	t->principal = TAKE_PTR(email);
	return 0;
}

static int metadata_token(struct gcp_auth *a, struct gcp_token *t, char *why, size_t why_size)
{
	static const char *const headers[] = { "Metadata-Flavor: Google", NULL };
	_cleanup_free_ char *url = NULL;
	struct kms_http_response resp = {};
	const char *host = env_nonempty("GCE_METADATA_HOST"), *detail = NULL;
	bool explicit_host;
	int r;

	if (!host)
		host = env_nonempty("GCE_METADATA_ROOT");
	explicit_host = host != NULL;
	if (!host)
		host = GCP_METADATA_HOST;
	if (strpbrk(host, "/@?# ")) {
		snprintf(why, why_size, "GCE_METADATA_HOST must be HOST[:PORT], not %s", host);
		return -EINVAL;
	}
	if (asprintf(&url, "http://%s/computeMetadata/v1/instance/service-accounts/default/token",
	             host) < 0)
		return -ENOMEM;
	r = dmbyok_kms_metadata_get(a->http, url, headers, a->timeout_ms, GCP_METADATA_TIMEOUT_MS,
	                            &resp, &detail);
	if (r < 0) {
		snprintf(why, why_size,
		         "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is not set, there "
		         "is no application_default_credentials.json, and the metadata server %s "
		         "does not answer (%s)",
		         host, detail ? detail : dmbyok_strerror(r));
		/* Off Google Cloud the metadata server is simply absent; a named one is down. */
		return explicit_host ? r : -ENOKEY;
	}
	if (resp.status != 200) {
		snprintf(why, why_size,
		         "the metadata server %s answers HTTP %ld for the default "
		         "service account's token",
		         host, resp.status);
		r = token_http_error(resp.status);
		dmbyok_kms_http_response_done(&resp);
		return r == -EKEYREJECTED ? -ENOKEY : r;
	}
	r = parse_token_response(resp.body, "metadata server", t, why, why_size);
	dmbyok_kms_http_response_done(&resp);
	if (r < 0)
		return r;
	t->source = "metadata";
	return 0;
}

/* The well-known file gcloud writes for Application Default Credentials, if it exists. */
static int well_known_file(char **ret)
{
	const char *dir = env_nonempty("CLOUDSDK_CONFIG"), *home = env_nonempty("HOME");
	char *path = NULL;

	*ret = NULL;
	if (dir) {
		if (asprintf(&path, "%s/application_default_credentials.json", dir) < 0)
			return -ENOMEM;
	} else if (home) {
		if (asprintf(&path, "%s/.config/gcloud/application_default_credentials.json",
		             home) < 0)
			return -ENOMEM;
	}
	if (path && access(path, F_OK) < 0)
		free(TAKE_PTR(path));
	*ret = path;
	return 0;
}

int dmbyok_gcp_auth_token(struct gcp_auth *a, const struct gcp_token **ret, char *why,
                          size_t why_size)
{
	struct gcp_token fresh = {};
	_cleanup_free_ char *adc = NULL;
	const char *path = env_nonempty("GOOGLE_APPLICATION_CREDENTIALS");
	time_t now = time(NULL);
	int r;

	if (a->cached.token && now < a->cached.refresh_at) {
		*ret = &a->cached;
		return 0;
	}
	if (!path) {
		GUARD(well_known_file(&adc));
		path = adc;
	}
	if (path)
		r = service_account_token(a, path, &fresh, why, why_size);
	else if (env_true("NO_GCE_CHECK")) {
		snprintf(why, why_size,
		         "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is not set, there "
		         "is no application_default_credentials.json, and NO_GCE_CHECK rules out "
		         "the metadata server");
		r = -ENOKEY;
	} else
		r = metadata_token(a, &fresh, why, why_size);
	if (r < 0) {
		token_clear(&fresh);
		/* A token that has not expired yet still works: use it while the source is down. */
		if (a->cached.token && now + 10 < a->cached.expires) {
			log_debug("Refreshing the Google access token failed (%s); the cached one "
			          "is valid for %lld s more.",
			          why, (long long)(a->cached.expires - now));
			*ret = &a->cached;
			return 0;
		}
		return r;
	}
	token_clear(&a->cached);
	a->cached = fresh;
	log_debug("Google access token from the %s, valid for %lld s.", fresh.source,
	          (long long)(fresh.expires - now));
	*ret = &a->cached;
	return 0;
}
