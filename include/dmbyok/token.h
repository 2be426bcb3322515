/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The dmbyok LUKS2 token: everything needed to unwrap a volume's data key (DEK) from the
 * KMS, and nothing secret. Its JSON form is a public contract (docs/format.md):
 *
 *   { "type": "dmbyok", "keyslots": ["0"], "version": 2,
 *     "kms": "aws", "key_id": "alias/orders", "key_arn": "arn:aws:kms:...:key/...",
 *     "region": "eu-west-1", "ciphertext": "<base64 CiphertextBlob>",
 *     "context": { "dmbyok:volume": "<LUKS2 UUID>", ...operator pairs },
 *     "key_check": "hmac-sha256-128:<hex>", "binding": "sha256:<hex>",
 *     "created": "2026-11-23T06:00:00Z", "rewrapped": "..." }
 */

#include <stddef.h>

#include <json-c/json.h>

#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

#define DMBYOK_TOKEN_TYPE              "dmbyok"
#define DMBYOK_TOKEN_VERSION           2 /* what format writes */
#define DMBYOK_TOKEN_VERSION_MIN       1 /* oldest a reader accepts (docs/format.md) */
#define DMBYOK_CONTEXT_VOLUME          "dmbyok:volume"
#define DMBYOK_CONTEXT_RESERVED_PREFIX "dmbyok:"
#define DMBYOK_DEK_BYTES               64   /* aes-xts-plain64 with two AES-256 keys */
#define DMBYOK_CONTEXT_MAX_BYTES       4096 /* serialized encryption context */

struct dmbyok_token {
	int version;
	int keyslot;
	char *kms;
	char *key_id;
	char *key_arn;
	char *region;
	char *ciphertext;
	json_object *context;
	char *key_check;
	char *binding; /* v2: "sha256:<hex>" of the header binding (dmbyok_volume_binding) */
	char *created;
	char *rewrapped; /* NULL until the first re-wrap */
	/* AWS: the per-volume grant this host unwraps through (format --grant), or NULL */
	char *grant_id;
};

void dmbyok_token_free(struct dmbyok_token *t);
DEFINE_CLEANUP_FUNC(struct dmbyok_token *, dmbyok_token_free);
#define _cleanup_token_ _cleanup_(dmbyok_token_freep)

/* Parse and validate a token's JSON; -EUCLEAN with a logged reason when malformed. */
int dmbyok_token_from_json(const char *json, struct dmbyok_token **ret);
int dmbyok_token_to_json(const struct dmbyok_token *t, char **ret);

/*
 * The encryption context for a volume: {"dmbyok:volume": uuid} plus operator pairs given
 * as "k=v" strings. Keys under "dmbyok:" are reserved; -EINVAL on a malformed pair.
 */
int dmbyok_context_new(const char *volume_uuid, char *const *pairs, size_t n_pairs,
                       json_object **ret);

/*
 * -EBADMSG unless the token belongs to the volume with this UUID: its context must name it.
 * This is what refuses a token copied from another volume before any KMS call.
 */
int dmbyok_token_check_volume(const struct dmbyok_token *t, const char *volume_uuid);

/*
 * Key check value, HMAC-SHA256 keyed by the DEK, first 128 bits in hex. Version 2 (binding
 * given): message "dmbyok-kcv-v2" 0 uuid 0 binding, where the binding names the LUKS2
 * digest (salt and value) and the data segment, so a header whose volume key or segment
 * changed (cryptsetup reencrypt) no longer matches. Version 1 (binding NULL):
 * "dmbyok-kcv-v1" uuid, which proves nothing about the header.
 */
int dmbyok_key_check_value(const struct secret *dek, const char *volume_uuid, const char *binding,
                           char **ret);
/*
 * -EBADMSG when the DEK does not match the token's key check value. `binding` is the
 * current header's (required for version 2 tokens, ignored for version 1).
 */
int dmbyok_token_verify_dek(const struct dmbyok_token *t, const struct secret *dek,
                            const char *volume_uuid, const char *binding);
/* "sha256:<hex>" of a header binding, as a version 2 token records it. */
int dmbyok_binding_fingerprint(const char *binding, char **ret);

/* Current UTC time as RFC 3339 ("2026-11-23T06:00:00Z"). */
int dmbyok_timestamp_now(char **ret);
