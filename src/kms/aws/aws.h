/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Internals of the AWS KMS provider, shared by its modules and by the tests. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <json-c/json.h>

#include "dmbyok/kms.h"
#include "dmbyok/macro.h"
#include "dmbyok/secret.h"
#include "../kms-http.h"

#define AWS_DEFAULT_TIMEOUT_MS  KMS_HTTP_DEFAULT_TIMEOUT_MS
#define AWS_METADATA_TIMEOUT_MS 1000U

/* ---- aws-config.c: shared config/credentials files, region and endpoint ---- */

/* A parsed INI file. The text lives in locked memory since it may hold secret keys. */
struct aws_ini_entry {
	const char *section;
	const char *key;
	const char *value;
};

struct aws_ini {
	struct secret *text;
	struct aws_ini_entry *entries;
	size_t n_entries;
};

/* Parses `text` (NUL-terminated in text->data[text->size]) in place; takes ownership. */
int dmbyok_aws_ini_parse(struct secret *text, struct aws_ini **ret);
/* Reads and parses a file: -ENOENT when it does not exist. */
int dmbyok_aws_ini_load(const char *path, struct aws_ini **ret);
void dmbyok_aws_ini_free(struct aws_ini *ini);
DEFINE_CLEANUP_FUNC(struct aws_ini *, dmbyok_aws_ini_free);
/* The value of key in section, or NULL. */
const char *dmbyok_aws_ini_get(const struct aws_ini *ini, const char *section, const char *key);
bool dmbyok_aws_ini_has_section(const struct aws_ini *ini, const char *section);

/* The profile in effect: explicit, AWS_PROFILE, or "default". */
const char *dmbyok_aws_profile_name(const char *explicit_profile);
/* Paths of the shared files, honouring AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE. */
int dmbyok_aws_credentials_file_path(char **ret);
int dmbyok_aws_config_file_path(char **ret);
/* The config file's section name for a profile ("default" or "profile NAME"). */
int dmbyok_aws_config_section(const char *profile, char **ret);

/* The region of an ARN ("arn:PARTITION:kms:REGION:ACCOUNT:..."), or -EINVAL if not one. */
int dmbyok_aws_arn_region(const char *arn, char **ret);
/*
 * Region in the AWS CLI's order: explicit, the key ARN's, AWS_REGION, AWS_DEFAULT_REGION,
 * the profile's `region`. -ENOENT when none gives one.
 */
int dmbyok_aws_resolve_region(const char *explicit_region, const char *key_id, const char *profile,
                              char **ret);
/* Endpoint: explicit, AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL; NULL (0) when AWS's own. */
int dmbyok_aws_endpoint_override(const char *explicit_endpoint, char **ret);
/* The URL for a region given an optional override. Plain http only to loopback. */
int dmbyok_aws_endpoint_url(const char *override, const char *region, char **ret);

/*
 * Both shared files loaded, read as botocore's merged view: a profile's key comes from the
 * credentials file ([NAME]) if it has it, else from the config file ([profile NAME], or
 * [default]). Either file may be absent (NULL).
 */
struct aws_shared_config {
	char *creds_path, *config_path;
	struct aws_ini *creds, *config;
};

/* -EINVAL (with why) when a file exists but cannot be read or parsed. */
int dmbyok_aws_shared_config_load(struct aws_shared_config *ret, char *why, size_t why_size);
void dmbyok_aws_shared_config_done(struct aws_shared_config *sc);
const char *dmbyok_aws_profile_get(const struct aws_shared_config *sc, const char *profile,
                                   const char *key);
/* From the credentials file or the config file only. */
const char *dmbyok_aws_profile_get_creds_file(const struct aws_shared_config *sc,
                                              const char *profile, const char *key);
const char *dmbyok_aws_profile_get_config_file(const struct aws_shared_config *sc,
                                               const char *profile, const char *key);
bool dmbyok_aws_profile_exists(const struct aws_shared_config *sc, const char *profile);
/* Whether the profile was named (explicitly, AWS_PROFILE or AWS_DEFAULT_PROFILE). */
bool dmbyok_aws_profile_is_set(const char *explicit_profile);

/*
 * The STS endpoint as the AWS CLI picks it: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else
 * https://sts.REGION.amazonaws.com, or the global https://sts.amazonaws.com without a
 * region. ret_signing_region is the region for SigV4 ("us-east-1" when none).
 */
int dmbyok_aws_sts_endpoint(const char *region, char **ret_url, char **ret_signing_region);

/* HTTP and retry pacing are the providers' shared client: ../kms-http.h. */

/* ---- aws-credentials.c: the credential chain ---- */

struct aws_credentials {
	char *access_key_id;
	struct secret *secret_access_key; /* NUL-terminated */
	struct secret *session_token;     /* NUL-terminated; NULL for long-term keys */
	time_t expiration;                /* 0: does not expire */
	time_t obtained;
	/* environment, profile, assume-role, web-identity, process, container, imds */
	const char *source;
};

/* Takes ownership of secret and token (token may be NULL); -EINVAL for unusable values. */
int dmbyok_aws_credentials_new(const char *access_key_id, struct secret *secret,
                               struct secret *token, time_t expiration, const char *source,
                               struct aws_credentials **ret);
/* A copy of s (n bytes) as a NUL-terminated secret. */
int dmbyok_aws_secret_strndup(const char *s, size_t n, struct secret **ret);
/* Whether a header value is free of CR and LF (no smuggled headers). */
bool dmbyok_aws_header_safe(const char *s, size_t n);

void dmbyok_aws_credentials_free(struct aws_credentials *cr);
DEFINE_CLEANUP_FUNC(struct aws_credentials *, dmbyok_aws_credentials_free);

/* What the shared files looked like when the cached credentials were resolved. */
struct aws_file_stamp {
	bool exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct aws_credentials_cache {
	char *profile; /* explicit profile, or NULL */
	struct aws_credentials *cached;
	time_t next_refresh; /* after a failed refresh, do not hammer the source */
	/* Static keys from the shared files are re-read when either file changes. */
	struct aws_file_stamp stamps[2];
};

/*
 * Current credentials, from the cache or the chain; temporary ones are refreshed shortly
 * before they expire. -ENOKEY when no source has any. The pointer is valid until the
 * next call or dmbyok_aws_credentials_invalidate().
 */
int dmbyok_aws_credentials_get(struct aws_credentials_cache *cache, struct kms_http *h,
                               const struct aws_credentials **ret, char *why, size_t why_size);
void dmbyok_aws_credentials_invalidate(struct aws_credentials_cache *cache);
void dmbyok_aws_credentials_cache_done(struct aws_credentials_cache *cache);

/*
 * Credentials from the JSON the container and instance metadata endpoints return
 * (AccessKeyId, SecretAccessKey, Token, Expiration). `body` (NUL-terminated, locked) has
 * its secret blanked in place. -EPROTO when malformed or not "Success".
 */
int dmbyok_aws_credentials_from_json(struct secret *body, const char *source,
                                     struct aws_credentials **ret);

/* ISO 8601 "2024-01-02T03:04:05Z" (fractions allowed) to time_t. */
int dmbyok_aws_parse_iso8601(const char *s, time_t *ret);

/*
 * credential_process (aws-process.c): runs the command without a shell (split as POSIX
 * shell words, as botocore does) and parses its JSON (Version 1). A failing command or
 * malformed output is final: -ENOKEY / -EINVAL with the reason in why.
 */
int dmbyok_aws_credential_process(const char *command, struct aws_credentials **ret, char *why,
                                  size_t why_size);
/* POSIX shell word splitting without expansions; -EINVAL for unbalanced quotes. */
int dmbyok_aws_split_command(const char *command, char ***ret_argv);

/* STS (aws-sts.c), the Query API with XML answers; errors as for KMS calls, plus why. */
struct aws_assume_role {
	const char *role_arn;
	const char *session_name;
	const char *external_id; /* NULL: none */
	unsigned duration_s;     /* 0: STS's default */
};
/* AssumeRole, signed with `source`. */
int dmbyok_aws_sts_assume_role(struct kms_http *h, const char *region,
                               const struct aws_credentials *source,
                               const struct aws_assume_role *p, struct aws_credentials **ret,
                               char *why, size_t why_size);
/* AssumeRoleWithWebIdentity, unsigned: the token (NUL-terminated) is the credential. */
int dmbyok_aws_sts_assume_role_with_web_identity(struct kms_http *h, const char *region,
                                                 const struct secret *token,
                                                 const struct aws_assume_role *p,
                                                 struct aws_credentials **ret, char *why,
                                                 size_t why_size);
/* STS GetCallerIdentity signed with `cr`: the principal they belong to. */
int dmbyok_aws_sts_get_caller_identity(struct kms_http *h, const char *region,
                                       const struct aws_credentials *cr, char **ret_arn,
                                       char **ret_account, char *why, size_t why_size);
/*
 * STS GetCallerIdentity with the credentials the chain resolves: who this host is to AWS.
 * ret_account may be NULL.
 */
int dmbyok_aws_get_caller_identity(struct aws_credentials_cache *cache, struct kms_http *h,
                                   char **ret_arn, char **ret_account, char *why, size_t why_size);
/*
 * (aws-sts.c) The principal a grant names for GetCallerIdentity's ARN: an assumed-role session
 * (arn:P:sts::ACCOUNT:assumed-role/ROLE/SESSION) becomes its role (arn:P:iam::ACCOUNT:role/ROLE),
 * any other principal ARN stays as it is. -EINVAL when arn is not a principal ARN.
 */
int dmbyok_aws_grantee_from_caller_arn(const char *arn, char **ret);
/* The text of the first <tag>...</tag> in xml, entities decoded; -ENOENT when absent. */
int dmbyok_aws_xml_text(const char *xml, const char *tag, char **ret);

/* ---- aws-kms.c: operations and error mapping ---- */

/*
 * Takes a top-level string field out of a JSON object held in locked memory, before any
 * JSON library copies it to the heap: its raw text goes into a new secret (NUL-terminated)
 * and is blanked in `body`. Escapes are refused (keys and base64 never need them).
 * -ENOENT when absent, -EPROTO when malformed. The shared scanner's plain variant
 * (../kms-util.h), under the name the AWS modules and their tests use.
 */
int dmbyok_aws_json_take_string(struct secret *body, const char *field, struct secret **ret);

/* Whether an error code (from `__type`) or HTTP status is worth another attempt. */
bool dmbyok_aws_error_is_retryable(const char *error_code, long status);
/* `__type` reduced to the bare code: strip up to '#', and from ':'. */
int dmbyok_aws_error_code(const char *type, char **ret);
/* The errno for an AWS error code and HTTP status (see kms.h for the classes). */
int dmbyok_aws_error_to_errno(const char *error_code, long status);

/*
 * One signed KMS call with the standard retry policy: the response body in locked memory.
 * After an error response, *ret_error_code (optional) is the bare AWS error code, or NULL.
 */
int dmbyok_aws_kms_request(struct kms_client *c, const char *operation, const char *key_id,
                           json_object *request, struct secret **ret_body, char **ret_error_code);
/* A success response as strict JSON (what AWS sends), and an object; else -EPROTO. */
int dmbyok_aws_parse_object(const struct secret *body, json_object **ret);
/* A string member, non-empty, without NULs; NULL in *ret when optional and absent. */
int dmbyok_aws_member_string(json_object *o, const char *operation, const char *field,
                             bool required, char **ret, char *why, size_t why_size);
/* A success response the parser refused (r, with why): recorded as the client's last error. */
int dmbyok_aws_response_failed(struct kms_client *c, const char *operation, int r, const char *why);
/* Request members; a NULL object is left out. */
int dmbyok_aws_add_string(json_object *o, const char *k, const char *v);
int dmbyok_aws_add_object(json_object *o, const char *k, json_object *v);

/*
 * One signed KMS call (with retries) returning the parsed response. For tests and admin
 * tooling; the response must not carry plaintext (use the typed operations for those).
 */
int dmbyok_aws_kms_call(struct kms_client *c, const char *operation, const char *key_id,
                        json_object *request, json_object **ret_response);

/*
 * Response parsers: pure functions of a response body (NUL-terminated, in locked memory),
 * called by the operations and fuzzed on their own (tests/fuzz). Anything but a
 * well-formed answer is -EPROTO with the reason in `why` (never secret material); -ENOMEM
 * is the only other error. Key ARN fields must be key ARNs, CiphertextBlob and Plaintext
 * non-empty canonical base64.
 */
struct aws_kms_result {
	struct secret *plaintext; /* GenerateDataKey, Decrypt */
	char *ciphertext_b64;     /* GenerateDataKey, ReEncrypt */
	char *key_arn;            /* KeyId: the key that did the work */
	char *source_key_arn;     /* ReEncrypt's SourceKeyId, NULL when absent */
};
void dmbyok_aws_kms_result_done(struct aws_kms_result *res);

/* These take Plaintext out of `body` (blanking it) before any JSON parser sees it. */
int dmbyok_aws_parse_generate_data_key(struct secret *body, struct aws_kms_result *ret, char *why,
                                       size_t why_size);
int dmbyok_aws_parse_decrypt(struct secret *body, struct aws_kms_result *ret, char *why,
                             size_t why_size);
int dmbyok_aws_parse_reencrypt(struct secret *body, struct aws_kms_result *ret, char *why,
                               size_t why_size);
int dmbyok_aws_parse_describe_key(const struct secret *body, struct kms_key_info *ret, char *why,
                                  size_t why_size);
/*
 * An error response (`__type` or `code`, `message` or `Message`): the bare code, NULL when
 * the body names none, and the message made printable, NULL when absent.
 */
int dmbyok_aws_parse_error(const struct secret *body, char **ret_code, char **ret_message);

/* Whether s is a KMS key ARN: "arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID". */
bool dmbyok_aws_is_key_arn(const char *s);

/* ---- aws-kms.c: the provider's operations (aws-provider.c is their table) ---- */

int dmbyok_aws_client_new(struct kms_client *c, const struct kms_options *opts);
void dmbyok_aws_client_free(struct kms_client *c);
int dmbyok_aws_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                 size_t n_bytes, struct secret **ret_plaintext,
                                 char **ret_ciphertext_b64, char **ret_key_arn);
int dmbyok_aws_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                       json_object *context, struct secret **ret_plaintext, char **ret_key_arn);
int dmbyok_aws_reencrypt(struct kms_client *c, const char *source_key_arn,
                         const char *ciphertext_b64, json_object *context, const char *dest_key_id,
                         char **ret_ciphertext_b64, char **ret_key_arn);
int dmbyok_aws_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret);
const char *dmbyok_aws_region(struct kms_client *c);
/* The access key id that signs the calls (CloudTrail's userIdentity.accessKeyId), or NULL. */
const char *dmbyok_aws_principal(struct kms_client *c);
/* STS GetCallerIdentity, named as a grant's grantee (dmbyok_aws_grantee_from_caller_arn). */
int dmbyok_aws_caller_principal(struct kms_client *c, char **ret_arn);

/* ---- aws-grants.c: per-volume grants (kms.h) ---- */

/* The operations a volume's grant allows: what unlocking and rewrapping need, no more. */
#define AWS_GRANT_OPERATIONS "Decrypt", "ReEncryptFrom", "ReEncryptTo"

int dmbyok_aws_create_grant(struct kms_client *c, const char *key_id, const char *grantee,
                            json_object *context, const char *name, char **ret_grant_id);
int dmbyok_aws_retire_grant(struct kms_client *c, const char *key_arn, const char *grant_id);
int dmbyok_aws_find_grant(struct kms_client *c, const char *key_arn, const char *grant_id,
                          struct kms_grant_info *ret);
/* CreateGrant's answer: its GrantId. */
int dmbyok_aws_parse_create_grant(const struct secret *body, char **ret_grant_id, char *why,
                                  size_t why_size);
/*
 * One ListGrants page: the entry for grant_id into *ret, else -ENOENT with *ret_next_marker
 * the page's NextMarker when it is Truncated (NULL on the last page).
 */
int dmbyok_aws_parse_list_grants(const struct secret *body, const char *grant_id,
                                 struct kms_grant_info *ret, char **ret_next_marker, char *why,
                                 size_t why_size);
