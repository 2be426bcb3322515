/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Internals of the Google Cloud KMS provider, shared by its modules and by the tests.
 * HTTP and retry pacing come from the providers' shared client (../kms-http.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "dmbyok/kms.h"
#include "dmbyok/macro.h"
#include "dmbyok/secret.h"
#include "../kms-util.h"

struct kms_http;
struct kms_provider_ops;

#define GCP_DEFAULT_ENDPOINT    "https://cloudkms.googleapis.com/"
#define GCP_DEFAULT_TOKEN_URI   "https://oauth2.googleapis.com/token"
#define GCP_METADATA_HOST       "metadata.google.internal"
#define GCP_SCOPE               "https://www.googleapis.com/auth/cloud-platform"
#define GCP_METADATA_TIMEOUT_MS 1000U
/* Google's libraries refresh a token 3 min 45 s before it expires. */
#define GCP_REFRESH_MARGIN_S 225
/* A JWT assertion is valid for at most an hour. */
#define GCP_JWT_LIFETIME_S 3600

extern const struct kms_provider_ops dmbyok_gcp_kms_provider_ops;

/* ---- gcp-wire.c: names, CRC32C (base64 and JSON helpers: ../kms-util.h) ---- */

/*
 * A Cloud KMS key or key version name:
 * projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N]. Any out-parameter
 * may be NULL: ret_key the key's name (without version), ret_location L, ret_version N or
 * NULL when the name is a key's. -EINVAL when `name` is neither.
 */
int dmbyok_gcp_parse_name(const char *name, char **ret_key, char **ret_location,
                          char **ret_version);
bool dmbyok_gcp_is_name(const char *name);
/* The location of a key or key version name (the token's "region"); -EINVAL if not one. */
int dmbyok_gcp_key_location(const char *name, char **ret);

/* CRC32C (Castagnoli), as Cloud KMS's integrity fields carry it. */
uint32_t dmbyok_gcp_crc32c(const void *data, size_t n);

/* ---- gcp-auth.c: access tokens as Google's libraries find them ---- */

struct gcp_token {
	struct secret *token; /* NUL-terminated access token */
	time_t expires;       /* absolute; 0 for unknown */
	time_t refresh_at;    /* refresh from this time on */
	const char *source;   /* "service-account" or "metadata" */
	char *principal;      /* client_email, or the metadata server's account when known */
};

struct gcp_auth {
	struct kms_http *http; /* borrowed */
	unsigned timeout_ms;   /* per request to the token endpoint */
	struct gcp_token cached;
};

/*
 * A current access token, from the cache or the chain: GOOGLE_APPLICATION_CREDENTIALS (a
 * service-account JSON key: RS256 JWT to its token_uri), the well-known file
 * ($CLOUDSDK_CONFIG or ~/.config/gcloud, application_default_credentials.json, service
 * account only), the GCE metadata server (GCE_METADATA_HOST, else metadata.google.internal;
 * skipped when NO_GCE_CHECK=true). The pointer is valid until the next call or invalidate.
 * Errors: -ENOKEY when no source has credentials, -EKEYREJECTED when the token endpoint
 * refuses the key, -EINVAL for an unusable key file, transient errnos when a source that
 * exists cannot be reached; `why` says which and why.
 */
int dmbyok_gcp_auth_token(struct gcp_auth *a, const struct gcp_token **ret, char *why,
                          size_t why_size);
void dmbyok_gcp_auth_invalidate(struct gcp_auth *a);
void dmbyok_gcp_auth_done(struct gcp_auth *a);

/*
 * The RS256 JWT assertion of the service-account JWT bearer grant, signed with the PEM
 * private key `pem` (NUL-terminated, locked), as a NUL-terminated secret.
 */
int dmbyok_gcp_jwt_sign(const struct secret *pem, const char *key_id, const char *email,
                        const char *audience, time_t now, struct secret **ret, char *why,
                        size_t why_size);

/* ---- gcp-kms.c: operations and error mapping ---- */

/*
 * The errno of a Google error ({"error": {"code", "message", "status"}}) for `operation`:
 * FAILED_PRECONDITION, PERMISSION_DENIED, NOT_FOUND -> -EKEYREVOKED; INVALID_ARGUMENT of a
 * Decrypt -> -EBADMSG, otherwise -EINVAL; UNAVAILABLE, INTERNAL -> -EREMOTEIO,
 * DEADLINE_EXCEEDED -> -ETIMEDOUT, RESOURCE_EXHAUSTED -> -EAGAIN; UNAUTHENTICATED ->
 * -EKEYEXPIRED. Without a status, by HTTP code.
 */
int dmbyok_gcp_error_to_errno(const char *operation, const char *status, long http_status);
/* The status and message of an error body (either NULL when absent), message printable. */
int dmbyok_gcp_parse_error(const struct secret *body, char **ret_status, char **ret_message);

/*
 * One authenticated Cloud KMS call with retries, for tests and admin tooling: `method`
 * "GET"/"POST"/"PATCH" on `path` (after the endpoint's v1/, e.g. "projects/...:encrypt")
 * with a JSON body (NULL for none). The response must not carry plaintext.
 */
int dmbyok_gcp_kms_call(struct kms_client *c, const char *method, const char *path,
                        json_object *request, json_object **ret_response);
