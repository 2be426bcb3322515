/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Internals of the AWS KMS provider, shared by its modules and by the tests. */

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <json-c/json.h>

#include "dmbyok/kms.h"
#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

#define AWS_DEFAULT_TIMEOUT_MS  10000U
#define AWS_CONNECT_TIMEOUT_MS  3000U
#define AWS_DEFAULT_ATTEMPTS    3U
#define AWS_RESPONSE_MAX        (1U << 20)
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
/* Whether a URL's host is a loopback address (where plain HTTP is tolerated). */
bool dmbyok_aws_url_is_loopback(const char *url);

/* ---- aws-http.c: one libcurl handle per client, retry policy ---- */

struct aws_http;

struct aws_http_request {
	const char *method; /* "GET", "PUT", "POST" */
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
	const char *body;
	size_t body_len;
	/* SigV4: provider string "aws:amz:REGION:SERVICE" and the key pair; NULL: unsigned. */
	const char *sigv4;
	const char *access_key_id;
	const char *secret_access_key;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	bool no_proxy; /* metadata endpoints must never go through a proxy */
};

struct aws_http_response {
	long status;
	struct secret *body; /* NUL-terminated; locked memory since it may carry plaintext */
};

int dmbyok_aws_http_new(const char *ca_bundle, struct aws_http **ret);
void dmbyok_aws_http_free(struct aws_http *h);
DEFINE_CLEANUP_FUNC(struct aws_http *, dmbyok_aws_http_free);
/*
 * One attempt. Transport failures return a negative errno (-ECONNREFUSED, -ETIMEDOUT,
 * -ECONNRESET, -EHOSTUNREACH, -EPROTO, -EINVAL for a TLS verification failure) and set
 * ret_detail (a static string). Any HTTP status is success here.
 */
int dmbyok_aws_http_perform(struct aws_http *h, const struct aws_http_request *req,
                            struct aws_http_response *ret, const char **ret_detail);
void dmbyok_aws_http_response_done(struct aws_http_response *r);

/* SDK "standard" retry mode: attempts, full-jitter backoff and a retry quota. */
struct aws_retry {
	unsigned max_attempts;
	unsigned quota; /* tokens left; retries stop when exhausted */
};

#define AWS_RETRY_QUOTA        500U
#define AWS_RETRY_COST         5U
#define AWS_RETRY_TIMEOUT_COST 10U

void dmbyok_aws_retry_init(struct aws_retry *r, unsigned max_attempts);
/* Backoff before attempt `attempt + 1` (attempt counts from 1), in milliseconds. */
unsigned dmbyok_aws_retry_backoff_ms(unsigned attempt);
/* Whether an error code (from `__type`) or HTTP status is worth another attempt. */
bool dmbyok_aws_error_is_retryable(const char *error_code, long status);
bool dmbyok_aws_errno_is_retryable(int r);
/* Takes tokens for a retry after error r; false when the quota is exhausted. */
bool dmbyok_aws_retry_acquire(struct aws_retry *rt, int r);
void dmbyok_aws_retry_release(struct aws_retry *rt, int r, bool retried);
void dmbyok_aws_sleep_ms(unsigned ms);

/* ---- aws-credentials.c: the credential chain ---- */

struct aws_credentials {
	char *access_key_id;
	struct secret *secret_access_key; /* NUL-terminated */
	char *session_token;              /* NULL for long-term keys */
	time_t expiration;                /* 0: does not expire */
	const char *source;               /* "environment", "profile", "container", "imds" */
};

void dmbyok_aws_credentials_free(struct aws_credentials *cr);
DEFINE_CLEANUP_FUNC(struct aws_credentials *, dmbyok_aws_credentials_free);

struct aws_credentials_cache {
	char *profile; /* explicit profile, or NULL */
	struct aws_credentials *cached;
	time_t next_refresh; /* after a failed refresh, do not hammer the source */
};

/*
 * Current credentials, from the cache or the chain; temporary ones are refreshed shortly
 * before they expire. -ENOKEY when no source has any. The pointer is valid until the
 * next call or dmbyok_aws_credentials_invalidate().
 */
int dmbyok_aws_credentials_get(struct aws_credentials_cache *cache, struct aws_http *h,
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

/* ---- aws-kms.c: operations and error mapping ---- */

/*
 * Takes a top-level string field out of a JSON object held in locked memory, before any
 * JSON library copies it to the heap: its raw text goes into a new secret (NUL-terminated)
 * and is blanked in `body`. Escapes are refused (keys and base64 never need them).
 * -ENOENT when absent, -EPROTO when malformed.
 */
int dmbyok_aws_json_take_string(struct secret *body, const char *field, struct secret **ret);

/* `__type` reduced to the bare code: strip up to '#', and from ':'. */
int dmbyok_aws_error_code(const char *type, char **ret);
/* The errno for an AWS error code and HTTP status (see kms.h for the classes). */
int dmbyok_aws_error_to_errno(const char *error_code, long status);

/*
 * One signed KMS call (with retries) returning the parsed response. For tests and admin
 * tooling; the response must not carry plaintext (use the typed operations for those).
 */
int dmbyok_aws_kms_call(struct kms_client *c, const char *operation, const char *key_id,
                        json_object *request, json_object **ret_response);
