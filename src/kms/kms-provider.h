/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The contract between the provider-neutral front end (kms.c) and a provider. A provider
 * fills in one ops table; kms.c validates arguments, clears the last error and dispatches.
 * Further providers (KMIP, PKCS#11) only add a table and a line in kms.c's list.
 */

#include "dmbyok/kms.h"
#include "dmbyok/log.h"

struct kms_client;

struct kms_provider_ops {
	const char *name;  /* what tokens record as "kms" */
	const char *title; /* for people: "AWS", "Google Cloud", ... */
	/* Allocates the provider's state into c->provider_data. */
	int (*client_new)(struct kms_client *c, const struct kms_options *opts);
	/* Frees c->provider_data; never called with it NULL. */
	void (*client_free)(struct kms_client *c);
	int (*generate_data_key)(struct kms_client *c, const char *key_id, json_object *context,
	                         size_t n_bytes, struct secret **ret_plaintext,
	                         char **ret_ciphertext_b64, char **ret_key_arn);
	int (*decrypt)(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
	               json_object *context, struct secret **ret_plaintext, char **ret_key_arn);
	int (*reencrypt)(struct kms_client *c, const char *source_key_arn,
	                 const char *ciphertext_b64, json_object *context, const char *dest_key_id,
	                 char **ret_ciphertext_b64, char **ret_key_arn);
	int (*describe_key)(struct kms_client *c, const char *key_id, struct kms_key_info *ret);
	/*
	 * Who this client's credentials are, as the provider's own audit logs name them (AWS:
	 * the access key id, CloudTrail's userIdentity.accessKeyId; Google Cloud: the service
	 * account's email; Azure: the client id). NULL until a call resolved them, or unknown.
	 * Optional: NULL when the provider cannot tell.
	 */
	const char *(*principal)(struct kms_client *c);
	const char *(*region)(struct kms_client *c);
	/*
	 * Per-volume grants (kms.h), optional: a provider whose access is per key (by IAM)
	 * leaves them NULL and kms.c answers -EOPNOTSUPP. kms.c has checked the arguments.
	 */
	int (*create_grant)(struct kms_client *c, const char *key_id, const char *grantee,
	                    json_object *context, const char *name, char **ret_grant_id);
	int (*retire_grant)(struct kms_client *c, const char *key_arn, const char *grant_id);
	int (*find_grant)(struct kms_client *c, const char *key_arn, const char *grant_id,
	                  struct kms_grant_info *ret);
	int (*caller_principal)(struct kms_client *c, char **ret_arn);
};

struct kms_client {
	const struct kms_provider_ops *ops;
	void *provider_data;
	char last_error[1024];
};

/* Record the provider's own words about the last failure (never secret material). */
void dmbyok_kms_set_last_error(struct kms_client *c, const char *fmt, ...) _printf_(2, 3);
/* Each attempt's region and request id go to dmbyok_kms_note_attempt (kms-http.h). */

/*
 * One KMS call as the audit entry (DMBYOK_MESSAGE_KMS_CALL) records it. Only what may be
 * logged is here, by construction: no plaintext, no wrapped key, no credential.
 */
struct kms_audit {
	/* "Decrypt", "GenerateDataKey", "ReEncrypt", "DescribeKey", "CreateGrant", "RetireGrant",
	 * "ListGrants", "GetCallerIdentity" */
	const char *operation;
	const char *provider;
	const char *region;     /* NULL: unknown */
	const char *key_id;     /* as asked; NULL when the blob names its key, or no key */
	const char *key_arn;    /* as answered; NULL on failure */
	json_object *context;   /* encryption context, or NULL */
	const char *request_id; /* the KMS's, of the last attempt, or NULL */
	const char *principal;  /* the credentials' identity (kms_provider_ops.principal) */
	int result;             /* 0 or a negative errno */
	const char *detail;     /* on failure, the provider's words (dmbyok_kms_last_error) */
	unsigned long long latency_ms;
};

/*
 * The entry's fields: OPERATION, PROVIDER, REGION, KEY_ID, KEY_ARN, ENCRYPTION_CONTEXT,
 * RESULT, LATENCY_MS, REQUEST_ID, DETAIL; the unknown ones are left out (ERRNO is added by
 * the log call). -E2BIG when a field did not fit (the others are there).
 */
int dmbyok_kms_audit_fields(const struct kms_audit *a, struct log_fields *f);
/* Logs the entry: info in the journal, debug on stderr (see message-ids.h), and appends it
 * to the audit file when one is configured (dmbyok_kms_audit_file). */
void dmbyok_kms_audit_log(const struct kms_audit *a);
/* The entry as one JSON line of the audit file (audit.c, include/dmbyok/audit.h); a failure
 * is reported once per process and never fails the call. */
void dmbyok_kms_audit_file(const struct kms_audit *a);
/* The context as canonical JSON (keys sorted by byte, compact, '/' unescaped). */
int dmbyok_kms_context_canonical(json_object *context, char **ret);

extern const struct kms_provider_ops dmbyok_aws_kms_provider_ops;
