/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "aws/aws.h"
#include "kms-provider.h"

static const struct kms_provider_ops *const providers[] = {
	&dmbyok_aws_kms_provider_ops,
};

static const struct kms_provider_ops *provider_find(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(providers); i++)
		if (!strcmp(providers[i]->name, name))
			return providers[i];
	return NULL;
}

void dmbyok_kms_set_last_error(struct kms_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
	va_end(ap);
}

int dmbyok_kms_client_new(const struct kms_options *opts, struct kms_client **ret)
{
	static const struct kms_options no_opts = {};
	_cleanup_kms_client_ struct kms_client *c = NULL;
	const struct kms_provider_ops *ops;
	const char *name;

	ENSURE(ret, EINVAL);
	if (!opts)
		opts = &no_opts;
	name = opts->provider ? opts->provider : "aws";
	ops = provider_find(name);
	if (!ops)
		return log_error_errno(EINVAL, "Unknown KMS provider '%s'.", name);

	c = calloc(1, sizeof(*c));
	ENSURE_ALLOC(c);
	c->ops = ops;
	GUARD(ops->client_new(c, opts));
	*ret = TAKE_PTR(c);
	return 0;
}

void dmbyok_kms_client_free(struct kms_client *c)
{
	if (!c)
		return;
	if (c->provider_data)
		c->ops->client_free(c);
	free(c);
}

const char *dmbyok_kms_last_error(struct kms_client *c)
{
	return c ? c->last_error : "";
}

static int context_check(json_object *context)
{
	if (!context)
		return 0;
	ENSURE(json_object_is_type(context, json_type_object), EINVAL);
	json_object_object_foreach (context, k, v) {
		(void)k;
		ENSURE(json_object_is_type(v, json_type_string), EINVAL);
	}
	return 0;
}

int dmbyok_kms_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                 size_t n_bytes, struct secret **ret_plaintext,
                                 char **ret_ciphertext_b64, char **ret_key_arn)
{
	ENSURE(c && key_id && *key_id && ret_plaintext && ret_ciphertext_b64, EINVAL);
	ENSURE(n_bytes >= 1 && n_bytes <= 1024, EINVAL);
	GUARD(context_check(context));
	c->last_error[0] = '\0';
	return c->ops->generate_data_key(c, key_id, context, n_bytes, ret_plaintext,
	                                 ret_ciphertext_b64, ret_key_arn);
}

int dmbyok_kms_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                       json_object *context, struct secret **ret_plaintext, char **ret_key_arn)
{
	ENSURE(c && ciphertext_b64 && *ciphertext_b64 && ret_plaintext, EINVAL);
	ENSURE(!key_id || *key_id, EINVAL);
	GUARD(context_check(context));
	c->last_error[0] = '\0';
	return c->ops->decrypt(c, key_id, ciphertext_b64, context, ret_plaintext, ret_key_arn);
}

int dmbyok_kms_reencrypt(struct kms_client *c, const char *ciphertext_b64, json_object *context,
                         const char *dest_key_id, char **ret_ciphertext_b64, char **ret_key_arn)
{
	ENSURE(c && ciphertext_b64 && *ciphertext_b64 && dest_key_id && *dest_key_id, EINVAL);
	ENSURE(ret_ciphertext_b64, EINVAL);
	GUARD(context_check(context));
	c->last_error[0] = '\0';
	return c->ops->reencrypt(c, ciphertext_b64, context, dest_key_id, ret_ciphertext_b64,
	                         ret_key_arn);
}

int dmbyok_kms_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret)
{
	ENSURE(c && key_id && *key_id && ret, EINVAL);
	c->last_error[0] = '\0';
	return c->ops->describe_key(c, key_id, ret);
}

void dmbyok_kms_key_info_done(struct kms_key_info *info)
{
	if (!info)
		return;
	free(info->key_arn);
	free(info->key_state);
	*info = (struct kms_key_info){};
}

const char *dmbyok_kms_client_region(struct kms_client *c)
{
	return c ? c->ops->region(c) : NULL;
}

int dmbyok_kms_key_region(const char *key_id, char **ret)
{
	return dmbyok_aws_arn_region(key_id, ret);
}
