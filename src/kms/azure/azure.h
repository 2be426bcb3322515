/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Internals of the Azure Key Vault (and Managed HSM) provider, shared by its modules and by
 * the tests. HTTP goes through the providers' shared client (../kms-http.h), as Google's
 * provider does; base64 into locked memory, secret strings out of JSON bodies, secret files
 * and the RS256 JWT signer are the providers' shared helpers (../kms-util.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "dmbyok/kms.h"
#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

struct kms_http;
struct kms_provider_ops;

#define AZURE_API_VERSION       "7.4"
#define AZURE_DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define AZURE_IMDS_AUTHORITY    "http://169.254.169.254"
#define AZURE_IMDS_API_VERSION  "2018-02-01"
#define AZURE_IMDS_TIMEOUT_MS   1000U
#define AZURE_VAULT_RESOURCE    "https://vault.azure.net"
#define AZURE_HSM_RESOURCE      "https://managedhsm.azure.net"
#define AZURE_ASSERTION_TYPE    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
/* azure-core refreshes a token 5 minutes before it expires. */
#define AZURE_REFRESH_MARGIN_S 300
/* MSAL's client assertions live 10 minutes. */
#define AZURE_ASSERTION_LIFETIME_S 600
/* RSA-OAEP-256 for RSA keys; A256KW for 256-bit oct keys (Managed HSM). */
#define AZURE_ALG_RSA "RSA-OAEP-256"
#define AZURE_ALG_AES "A256KW"
/* An A256KW blob of a 64-byte key: 8 bytes longer; RSA blobs are the modulus' size. */
#define AZURE_A256KW_BLOB 72U

extern const struct kms_provider_ops dmbyok_azure_kms_provider_ops;

/* ---- azure-wire.c: key identifiers, challenges, errors, base64url ---- */

/*
 * A Key Vault key identifier: https://HOST[:PORT]/keys/NAME[/VERSION] (HOST e.g.
 * VAULT.vault.azure.net, POOL.managedhsm.azure.net, a sovereign cloud's suffix). NAME is
 * 1-127 of [0-9a-zA-Z-], VERSION 32 hex digits. No query, fragment or userinfo.
 */
struct azure_key_id {
	char *vault;   /* "https://HOST[:PORT]", lower case */
	char *host;    /* HOST[:PORT], the token's "region" */
	char *name;    /* NAME */
	char *version; /* VERSION, NULL when the identifier names the key */
};

int dmbyok_azure_parse_key_id(const char *id, struct azure_key_id *ret);
void dmbyok_azure_key_id_done(struct azure_key_id *k);
bool dmbyok_azure_is_key_id(const char *id);
/* The vault's host (the token's "region") of a key identifier; -EINVAL if not one. */
int dmbyok_azure_key_vault_host(const char *id, char **ret);
/* Whether the host is a Managed HSM pool (*.managedhsm.azure.net and sovereign twins). */
bool dmbyok_azure_host_is_hsm(const char *host);
/*
 * The token audience ("resource") of a vault host in one of Azure's clouds:
 * https://vault.azure.net for *.vault.azure.net, https://managedhsm.azure.net for
 * *.managedhsm.azure.net, their sovereign-cloud twins (.azure.cn, .usgovcloudapi.net,
 * .microsoftazure.de). NULL for other hosts (Azure Stack Hub, a test vault): the vault's
 * 401 challenge says it.
 */
const char *dmbyok_azure_resource_for_host(const char *host);

/*
 * Key Vault's 401 challenge, `WWW-Authenticate: Bearer authorization="https://login.
 * microsoftonline.com/TENANT", resource="https://vault.azure.net"` (also authorization_uri,
 * and scope="https://vault.azure.net/.default" in place of resource). -EINVAL when it is not a
 * Bearer challenge naming an authority.
 */
struct azure_challenge {
	char *authority; /* the URL as given */
	char *tenant;    /* its first path segment */
	char *resource;  /* resource, or scope without "/.default"; NULL when neither */
};
int dmbyok_azure_parse_challenge(const char *header, struct azure_challenge *ret);
void dmbyok_azure_challenge_done(struct azure_challenge *c);
/*
 * Whether a vault's challenge may be followed, as Azure's SDK checks it
 * (verify_challenge_resource): its resource must be https://DOMAIN[/] with the vault host
 * (port aside) in DOMAIN, e.g. https://vault.local.azurestack.external for
 * NAME.vault.local.azurestack.external; and when `tenant` (AZURE_TENANT_ID of a service
 * principal) is given, the challenge must name that tenant: dmbyok never switches tenants.
 * The audience to ask tokens for in *ret_resource ("https://domain", lower case), or NULL
 * when the challenge names no resource. -EKEYREJECTED with `why` when refused.
 */
int dmbyok_azure_challenge_verify(const struct azure_challenge *c, const char *vault_host,
                                  const char *tenant, char **ret_resource, char *why,
                                  size_t why_size);

/*
 * An error body {"error": {"code", "message", "innererror": {"code"}}}: each out-parameter
 * NULL when absent, the message made printable. Lenient: never fails but for -ENOMEM.
 */
int dmbyok_azure_parse_error(const struct secret *body, char **ret_code, char **ret_inner,
                             char **ret_message);
/*
 * The errno of a Key Vault answer (kms.h's classes): 403 (Forbidden: KeyDisabled,
 * AccessDenied, ForbiddenByPolicy, ForbiddenByRbac, KeyOperationForbidden), 404 KeyNotFound
 * -> -EKEYREVOKED; 400 BadParameter of an unwrap -> -EBADMSG, else -EINVAL; 401 ->
 * -EKEYEXPIRED; 429 -> -EAGAIN, 504 -> -ETIMEDOUT, other 5xx -> -EREMOTEIO.
 */
int dmbyok_azure_error_to_errno(const char *operation, long http_status, const char *code,
                                const char *inner);

/* Base64url without padding of data, into a new NUL-terminated secret. */
int dmbyok_azure_base64url_secret(const void *data, size_t n, struct secret **ret);
/* Base64url (padding optional) decoded into a new secret; -EINVAL when not base64url. */
int dmbyok_azure_base64url_decode(const char *s, size_t n, struct secret **ret);
/* form-urlencoding (application/x-www-form-urlencoded) of s appended to a secret. */
int dmbyok_azure_form_append(struct secret *form, const char *name, const void *value, size_t n);

/* ---- azure-auth.c: access tokens as Azure's DefaultAzureCredential finds them ---- */

struct azure_token {
	struct secret *token; /* NUL-terminated access token */
	time_t expires;       /* absolute */
	time_t refresh_at;    /* refresh from this time on */
	char *resource;       /* the audience it was issued for */
	const char *source;   /* a credential name: see dmbyok_azure_credential_source */
	/* the client (application) id, or "system-assigned managed identity" */
	char *principal;
};

struct azure_auth {
	struct kms_http *http; /* borrowed */
	unsigned timeout_ms;   /* per request to the token endpoint */
	struct azure_token cached;
};

/*
 * The credential the environment selects, in DefaultAzureCredential's order (the parts
 * that fit a host): "client-secret" (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET),
 * "client-certificate" (... AZURE_CLIENT_CERTIFICATE_PATH), "workload-identity"
 * (AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID), else "managed-identity"
 * (IMDS; AZURE_CLIENT_ID names a user-assigned identity).
 */
const char *dmbyok_azure_credential_source(void);

/*
 * A current access token for `resource` (e.g. https://vault.azure.net), from the cache or
 * the credential above. Errors: -ENOKEY when there are no credentials (IMDS absent),
 * -EKEYREJECTED when the token endpoint refuses them (AADSTS errors), -EINVAL for unusable
 * settings (a certificate file without a key), transient errnos when a configured source
 * cannot be reached or answers 429/5xx; `why` says which and why (never a secret).
 */
int dmbyok_azure_auth_token(struct azure_auth *a, const char *resource,
                            const struct azure_token **ret, char *why, size_t why_size);
/* Drops the cached token (also what freeing the client does). */
void dmbyok_azure_auth_invalidate(struct azure_auth *a);

/*
 * The client assertion of the certificate credential: an RS256 JWT with x5t (the
 * certificate's SHA-1 thumbprint, base64url), aud = the token endpoint, iss = sub = client
 * id, a random jti, valid AZURE_ASSERTION_LIFETIME_S. `pem` (NUL-terminated, locked) holds
 * the private key and the certificate, as AZURE_CLIENT_CERTIFICATE_PATH's PEM file does.
 */
int dmbyok_azure_client_assertion(const struct secret *pem, const char *client_id,
                                  const char *audience, time_t now, struct secret **ret, char *why,
                                  size_t why_size);
/* The token answer {"access_token", "expires_in" (number or string), "expires_on"}. */
int dmbyok_azure_parse_token(struct secret *body, time_t now, struct azure_token *ret, char *why,
                             size_t why_size);
