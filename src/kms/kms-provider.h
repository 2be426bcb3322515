/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The contract between the provider-neutral front end (kms.c) and a provider. A provider
 * fills in one ops table; kms.c validates arguments, clears the last error and dispatches.
 * Further providers (KMIP, PKCS#11) only add a table and a line in kms.c's list.
 */

#include "dmbyok/kms.h"

struct kms_client;

struct kms_provider_ops {
	const char *name;
	/* Allocates the provider's state into c->provider_data. */
	int (*client_new)(struct kms_client *c, const struct kms_options *opts);
	/* Frees c->provider_data; never called with it NULL. */
	void (*client_free)(struct kms_client *c);
	int (*generate_data_key)(struct kms_client *c, const char *key_id, json_object *context,
	                         size_t n_bytes, struct secret **ret_plaintext,
	                         char **ret_ciphertext_b64, char **ret_key_arn);
	int (*decrypt)(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
	               json_object *context, struct secret **ret_plaintext, char **ret_key_arn);
	int (*reencrypt)(struct kms_client *c, const char *ciphertext_b64, json_object *context,
	                 const char *dest_key_id, char **ret_ciphertext_b64, char **ret_key_arn);
	int (*describe_key)(struct kms_client *c, const char *key_id, struct kms_key_info *ret);
	const char *(*region)(struct kms_client *c);
};

struct kms_client {
	const struct kms_provider_ops *ops;
	void *provider_data;
	char last_error[1024];
};

/* Record the provider's own words about the last failure (never secret material). */
void dmbyok_kms_set_last_error(struct kms_client *c, const char *fmt, ...) _printf_(2, 3);

extern const struct kms_provider_ops dmbyok_aws_kms_provider_ops;
