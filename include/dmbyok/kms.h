/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * KMS providers. A provider wraps and unwraps data keys under a customer's key that never
 * leaves the KMS. Everything above this layer is provider-neutral; AWS KMS is the first
 * provider (src/kms/aws). Errors follow dmbyok's taxonomy (dmbyok/error.h):
 *   -EKEYREVOKED  the key is unusable for us: disabled, pending deletion, deleted, access
 *                 denied by policy or grant, or not the key that wrapped the blob
 *   transient     -ETIMEDOUT, -ECONNREFUSED, -EREMOTEIO (5xx), -EAGAIN (throttled), ...
 *                 after the provider's own retries are exhausted
 *   credentials   -EKEYEXPIRED, -EKEYREJECTED, -ENOKEY
 *   -EBADMSG      the blob does not decrypt under this context (swapped or tampered)
 *   -EINVAL       bad input or configuration
 * After a failure dmbyok_kms_last_error() gives the provider's own words (e.g.
 * "DisabledException: arn:aws:kms:...:key/... is disabled.") for the operator.
 *
 * Encryption contexts are json-c objects whose values are strings. They are not secret.
 */

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

struct kms_client;

struct kms_options {
	const char *provider;  /* "aws" (the default when NULL), "gcp", "azure" */
	const char *region;    /* NULL: from the key ARN, AWS_REGION/AWS_DEFAULT_REGION, config */
	const char *endpoint;  /* NULL: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, or AWS's own */
	const char *ca_bundle; /* NULL: AWS_CA_BUNDLE, or the system trust store */
	const char *profile;   /* NULL: AWS_PROFILE, or "default" */
	unsigned timeout_ms;   /* per attempt; 0 = provider default */
	unsigned max_attempts; /* 0 = provider default (3, the SDKs' standard retry mode) */
};

struct kms_key_info {
	char *key_arn;
	char *key_state; /* "Enabled", "Disabled", "PendingDeletion", ... */
	bool enabled;
};

int dmbyok_kms_client_new(const struct kms_options *opts, struct kms_client **ret);
void dmbyok_kms_client_free(struct kms_client *c);
DEFINE_CLEANUP_FUNC(struct kms_client *, dmbyok_kms_client_free);
#define _cleanup_kms_client_ _cleanup_(dmbyok_kms_client_freep)

/* The provider's last error text, or "" (owned by the client, valid until the next call). */
const char *dmbyok_kms_last_error(struct kms_client *c);

/*
 * GenerateDataKey: `n_bytes` of fresh plaintext key (in locked memory) and the same key
 * wrapped under `key_id` (alias or id or ARN) and bound to `context`. The ciphertext is
 * returned base64-encoded, as stored in the volume's token; ret_key_arn names the key.
 */
int dmbyok_kms_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                 size_t n_bytes, struct secret **ret_plaintext,
                                 char **ret_ciphertext_b64, char **ret_key_arn);

/* Decrypt: `key_id` may be NULL (the blob names its key); the context must match exactly. */
int dmbyok_kms_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                       json_object *context, struct secret **ret_plaintext, char **ret_key_arn);

/*
 * ReEncrypt a blob under `dest_key_id`, same context, the DEK kept in the KMS or in locked
 * memory. `source_key_arn` is the key (version) that wrapped it, as the token records it:
 * Cloud KMS must decrypt with that key, Key Vault with that version, AWS checks it. NULL
 * when unknown: AWS reads it from the blob, Cloud KMS assumes the destination key (a
 * rotation), Key Vault tries the destination key's enabled versions.
 */
int dmbyok_kms_reencrypt(struct kms_client *c, const char *source_key_arn,
                         const char *ciphertext_b64, json_object *context, const char *dest_key_id,
                         char **ret_ciphertext_b64, char **ret_key_arn);

/* -ENOENT when no such key exists (never did, or its deletion completed). */
int dmbyok_kms_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret);
void dmbyok_kms_key_info_done(struct kms_key_info *info);

/*
 * Per-volume grants (AWS KMS). A volume's grant lets `grantee` (a principal ARN) Decrypt and
 * ReEncrypt blobs of `key_id` only under an encryption context equal to `context`
 * (EncryptionContextEquals), and names the grantee its retiring principal, so that the
 * customer can revoke one volume and the host can retire what it no longer needs. `name`
 * (the volume's UUID) makes a retried create idempotent. `context` needs at least one pair
 * and `key_id` must be a key id or ARN, not an alias (CreateGrant takes none): else -EINVAL.
 * Providers without grants (Cloud
 * KMS, Key Vault: access there is per key, by IAM) return -EOPNOTSUPP.
 */
int dmbyok_kms_create_grant(struct kms_client *c, const char *key_id, const char *grantee,
                            json_object *context, const char *name, char **ret_grant_id);
/*
 * RetireGrant (key_arn: the key's ARN); -ENOENT when the key has no such grant (already
 * retired or revoked, or the key is deleted).
 */
int dmbyok_kms_retire_grant(struct kms_client *c, const char *key_arn, const char *grant_id);

/*
 * What dmbyok accepts as a grant id, from the KMS and in tokens and records: 1 to 128
 * letters and digits (AWS gives 64 hex digits). It ends up in logs, paths and JSON.
 */
bool dmbyok_kms_grant_id_valid(const char *id);

struct kms_grant_info {
	char *grant_id;
	char *grantee;
	char *retiring_principal;    /* NULL when the grant names none */
	char **operations;           /* NULL-terminated: "Decrypt", "ReEncryptFrom", ... */
	json_object *context_equals; /* the EncryptionContextEquals constraint, or NULL */
};
/* ListGrants for one grant id (needs kms:ListGrants): -ENOENT when the key has no such grant. */
int dmbyok_kms_find_grant(struct kms_client *c, const char *key_arn, const char *grant_id,
                          struct kms_grant_info *ret);
void dmbyok_kms_grant_info_done(struct kms_grant_info *info);

/*
 * The principal this client's credentials act as, as a grant names it: sts:GetCallerIdentity,
 * an assumed-role session given as its role's ARN. -EOPNOTSUPP for providers without grants.
 */
int dmbyok_kms_caller_principal(struct kms_client *c, char **ret_arn);

/*
 * The region named by a key ARN (a Cloud KMS name: its location; a Key Vault identifier: the
 * vault's host), else -EINVAL.
 */
int dmbyok_kms_key_region(const char *key_id, char **ret);

/*
 * The provider whose key names look like key_id: "gcp" for Cloud KMS resource names
 * (projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N]), "azure" for any
 * https:// name (Key Vault identifiers https://VAULT.vault.azure.net/keys/NAME[/VERSION],
 * Managed HSM's, a test vault's), else "aws".
 */
const char *dmbyok_kms_provider_for_key(const char *key_id);
/* Whether this build has a provider of that name (a token's "kms" member). */
bool dmbyok_kms_provider_known(const char *name);

/* The provider a client speaks ("aws", "gcp", "azure"): what a token records as "kms". */
const char *dmbyok_kms_client_provider(struct kms_client *c);
/* The same for people ("AWS", "Google Cloud", "Azure"); "KMS" when c is NULL. */
const char *dmbyok_kms_client_provider_title(struct kms_client *c);

/* The region a client talks to (resolved at creation). */
const char *dmbyok_kms_client_region(struct kms_client *c);
