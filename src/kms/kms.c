/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"
#include "aws/aws.h"
#include "azure/azure.h"
#include "gcp/gcp.h"
#include "kms-http.h"
#include "kms-provider.h"

static const struct kms_provider_ops *const providers[] = {
	&dmbyok_aws_kms_provider_ops,
	&dmbyok_gcp_kms_provider_ops,
	&dmbyok_azure_kms_provider_ops,
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

/* ---- the audit: one entry per KMS call, the host-side counterpart of CloudTrail ---- */

static int key_compare(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int dmbyok_kms_context_canonical(json_object *context, char **ret)
{
	_cleanup_free_ const char **keys = NULL;
	json_object *sorted = NULL;
	const char *text;
	size_t n = 0;
	int r = 0;

	ENSURE(context && json_object_is_type(context, json_type_object) && ret, EINVAL);
	keys = calloc((size_t)json_object_object_length(context) + 1, sizeof(*keys));
	ENSURE_ALLOC(keys);
	json_object_object_foreach (context, k, v) {
		(void)v;
		keys[n++] = k;
	}
	qsort(keys, n, sizeof(*keys), key_compare);

	/* json-c keeps insertion order: a copy built in key order prints in key order. */
	sorted = json_object_new_object();
	ENSURE_ALLOC(sorted);
	for (size_t i = 0; i < n && r == 0; i++)
		if (json_object_object_add(
		        sorted, keys[i],
		        json_object_get(json_object_object_get(context, keys[i]))) < 0)
			r = -ENOMEM;
	if (r == 0) {
		text = json_object_to_json_string_ext(sorted, JSON_C_TO_STRING_PLAIN |
		                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
		*ret = text ? strdup(text) : NULL;
		if (!*ret)
			r = -ENOMEM;
	}
	json_object_put(sorted);
	return r;
}

int dmbyok_kms_audit_fields(const struct kms_audit *a, struct log_fields *f)
{
	_cleanup_free_ char *context = NULL;
	int r = 0, q;

#define FIELD(name, ...)                                                                           \
	do {                                                                                       \
		q = dmbyok_log_field(f, name, __VA_ARGS__);                                        \
		if (q < 0 && r == 0)                                                               \
			r = q;                                                                     \
	} while (0)

	ENSURE(a && a->operation && f, EINVAL);
	FIELD("OPERATION", "%s", a->operation);
	if (a->provider)
		FIELD("PROVIDER", "%s", a->provider);
	if (a->region && *a->region)
		FIELD("REGION", "%s", a->region);
	if (a->key_id)
		FIELD("KEY_ID", "%s", a->key_id);
	if (a->key_arn)
		FIELD("KEY_ARN", "%s", a->key_arn);
	if (a->context) {
		q = dmbyok_kms_context_canonical(a->context, &context);
		if (q < 0 && r == 0)
			r = q;
		if (context)
			FIELD("ENCRYPTION_CONTEXT", "%s", context);
	}
	FIELD("RESULT", "%s", dmbyok_error_class_name(dmbyok_error_class(a->result)));
	FIELD("LATENCY_MS", "%llu", a->latency_ms);
	if (a->request_id && *a->request_id)
		FIELD("REQUEST_ID", "%s", a->request_id);
	if (a->principal && *a->principal)
		FIELD("PRINCIPAL", "%s", a->principal);
	if (a->result < 0 && a->detail && *a->detail)
		FIELD("DETAIL", "%s", a->detail);
#undef FIELD
	return r;
}

void dmbyok_kms_audit_log(const struct kms_audit *a)
{
	struct log_fields f = {};
	const char *key = a->key_arn ? a->key_arn : a->key_id;

	/* A call about no key (GetCallerIdentity) has none; Decrypt's blob names its own. */
	if (!key)
		key = strcmp(a->operation, "GetCallerIdentity") ? "(key named by the blob)"
		                                                : "(no key)";

	/*
	 * An audit trail belongs in the journal whatever the outcome: info there. On a terminal
	 * it would double every command's output (failures are reported by the caller): debug.
	 */
	(void)dmbyok_kms_audit_fields(a, &f);
	(void)log_struct_errno(
	    dmbyok_log_to_journal() ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG, a->result,
	    DMBYOK_MESSAGE_KMS_CALL, f.field, "KMS %s %s: %s in %llu ms.", a->operation, key,
	    dmbyok_error_class_name(dmbyok_error_class(a->result)), a->latency_ms);
	dmbyok_kms_audit_file(a);
}

static unsigned long long now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	       (unsigned long long)ts.tv_nsec / 1000000ULL;
}

/* Before the provider is called: the client is clean, the clock runs. */
static unsigned long long call_begin(struct kms_client *c)
{
	c->last_error[0] = '\0';
	dmbyok_kms_attempt_reset();
	return now_ms();
}

static void call_end(struct kms_client *c, const char *operation, const char *key_id,
                     const char *key_arn, json_object *context, int r, unsigned long long t0)
{
	const char *region, *request_id;

	/* The provider's last attempt says where the call went; else the client's region. */
	dmbyok_kms_attempt_get(&region, &request_id);
	if (!region[0])
		region = c->ops->region(c);

	dmbyok_kms_audit_log(&(struct kms_audit){
	    .operation = operation,
	    .provider = c->ops->name,
	    .region = region,
	    .key_id = key_id,
	    .key_arn = r >= 0 ? key_arn : NULL,
	    .context = context,
	    .request_id = request_id,
	    .principal = c->ops->principal ? c->ops->principal(c) : NULL,
	    .result = r,
	    .detail = c->last_error,
	    .latency_ms = now_ms() - t0,
	});
}

int dmbyok_kms_generate_data_key(struct kms_client *c, const char *key_id, json_object *context,
                                 size_t n_bytes, struct secret **ret_plaintext,
                                 char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_free_ char *arn = NULL;
	unsigned long long t0;
	int r;

	ENSURE(c && key_id && *key_id && ret_plaintext && ret_ciphertext_b64, EINVAL);
	ENSURE(n_bytes >= 1 && n_bytes <= 1024, EINVAL);
	GUARD(context_check(context));
	t0 = call_begin(c);
	r = c->ops->generate_data_key(c, key_id, context, n_bytes, ret_plaintext,
	                              ret_ciphertext_b64, &arn);
	call_end(c, "GenerateDataKey", key_id, arn, context, r, t0);
	if (r >= 0 && ret_key_arn)
		*ret_key_arn = TAKE_PTR(arn);
	return r;
}

int dmbyok_kms_decrypt(struct kms_client *c, const char *key_id, const char *ciphertext_b64,
                       json_object *context, struct secret **ret_plaintext, char **ret_key_arn)
{
	_cleanup_free_ char *arn = NULL;
	unsigned long long t0;
	int r;

	ENSURE(c && ciphertext_b64 && *ciphertext_b64 && ret_plaintext, EINVAL);
	ENSURE(!key_id || *key_id, EINVAL);
	GUARD(context_check(context));
	t0 = call_begin(c);
	r = c->ops->decrypt(c, key_id, ciphertext_b64, context, ret_plaintext, &arn);
	call_end(c, "Decrypt", key_id, arn, context, r, t0);
	if (r >= 0 && ret_key_arn)
		*ret_key_arn = TAKE_PTR(arn);
	return r;
}

int dmbyok_kms_reencrypt(struct kms_client *c, const char *source_key_arn,
                         const char *ciphertext_b64, json_object *context, const char *dest_key_id,
                         char **ret_ciphertext_b64, char **ret_key_arn)
{
	_cleanup_free_ char *arn = NULL;
	unsigned long long t0;
	int r;

	ENSURE(c && ciphertext_b64 && *ciphertext_b64 && dest_key_id && *dest_key_id, EINVAL);
	ENSURE(ret_ciphertext_b64, EINVAL);
	GUARD(context_check(context));
	t0 = call_begin(c);
	r = c->ops->reencrypt(c, source_key_arn, ciphertext_b64, context, dest_key_id,
	                      ret_ciphertext_b64, &arn);
	call_end(c, "ReEncrypt", dest_key_id, arn, context, r, t0);
	if (r >= 0 && ret_key_arn)
		*ret_key_arn = TAKE_PTR(arn);
	return r;
}

int dmbyok_kms_describe_key(struct kms_client *c, const char *key_id, struct kms_key_info *ret)
{
	unsigned long long t0;
	int r;

	ENSURE(c && key_id && *key_id && ret, EINVAL);
	t0 = call_begin(c);
	r = c->ops->describe_key(c, key_id, ret);
	call_end(c, "DescribeKey", key_id, r >= 0 ? ret->key_arn : NULL, NULL, r, t0);
	return r;
}

void dmbyok_kms_key_info_done(struct kms_key_info *info)
{
	if (!info)
		return;
	free(info->key_arn);
	free(info->key_state);
	*info = (struct kms_key_info){};
}

/* ---- per-volume grants: AWS KMS's; the other providers grant per key, by IAM ---- */

static int grants_unsupported(struct kms_client *c)
{
	dmbyok_kms_set_last_error(c,
	                          "per-volume grants are an AWS KMS feature; %s grants access "
	                          "per key through IAM",
	                          dmbyok_kms_client_provider_title(c));
	return log_error_errno(EOPNOTSUPP,
	                       "Per-volume grants are an AWS KMS feature; %s grants "
	                       "access per key through IAM.",
	                       dmbyok_kms_client_provider_title(c));
}

int dmbyok_kms_create_grant(struct kms_client *c, const char *key_id, const char *grantee,
                            json_object *context, const char *name, char **ret_grant_id)
{
	_cleanup_free_ char *id = NULL;
	unsigned long long t0;
	int r;

	ENSURE(c && key_id && *key_id && grantee && *grantee && ret_grant_id, EINVAL);
	ENSURE(!name || *name, EINVAL);
	/* Without a context the grant would open every blob of the key to the grantee. */
	ENSURE(context && json_object_is_type(context, json_type_object) &&
	           json_object_object_length(context) > 0,
	       EINVAL);
	GUARD(context_check(context));
	if (!c->ops->create_grant)
		return grants_unsupported(c);
	t0 = call_begin(c);
	r = c->ops->create_grant(c, key_id, grantee, context, name, &id);
	call_end(c, "CreateGrant", key_id, NULL, context, r, t0);
	if (r >= 0)
		*ret_grant_id = TAKE_PTR(id);
	return r;
}

int dmbyok_kms_retire_grant(struct kms_client *c, const char *key_arn, const char *grant_id)
{
	unsigned long long t0;
	int r;

	ENSURE(c && key_arn && *key_arn && grant_id && *grant_id, EINVAL);
	if (!c->ops->retire_grant)
		return grants_unsupported(c);
	t0 = call_begin(c);
	r = c->ops->retire_grant(c, key_arn, grant_id);
	call_end(c, "RetireGrant", key_arn, key_arn, NULL, r, t0);
	return r;
}

int dmbyok_kms_find_grant(struct kms_client *c, const char *key_arn, const char *grant_id,
                          struct kms_grant_info *ret)
{
	_cleanup_(dmbyok_kms_grant_info_done) struct kms_grant_info info = {};
	unsigned long long t0;
	int r;

	ENSURE(c && key_arn && *key_arn && grant_id && *grant_id && ret, EINVAL);
	if (!c->ops->find_grant)
		return grants_unsupported(c);
	t0 = call_begin(c);
	r = c->ops->find_grant(c, key_arn, grant_id, &info);
	/* Not finding the grant is an answer about the key, like DescribeKey's -ENOENT. */
	call_end(c, "ListGrants", key_arn, key_arn, NULL, r, t0);
	if (r >= 0) {
		*ret = info;
		info = (struct kms_grant_info){};
	}
	return r;
}

bool dmbyok_kms_grant_id_valid(const char *id)
{
	size_t n = id ? strnlen(id, 129) : 0;

	if (n < 1 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]))
			return false;
	return true;
}

void dmbyok_kms_grant_info_done(struct kms_grant_info *info)
{
	if (!info)
		return;
	free(info->grant_id);
	free(info->grantee);
	free(info->retiring_principal);
	for (char **o = info->operations; o && *o; o++)
		free(*o);
	free(info->operations);
	json_object_put(info->context_equals);
	*info = (struct kms_grant_info){};
}

int dmbyok_kms_caller_principal(struct kms_client *c, char **ret_arn)
{
	_cleanup_free_ char *arn = NULL;
	unsigned long long t0;
	int r;

	ENSURE(c && ret_arn, EINVAL);
	if (!c->ops->caller_principal)
		return grants_unsupported(c);
	t0 = call_begin(c);
	r = c->ops->caller_principal(c, &arn);
	call_end(c, "GetCallerIdentity", NULL, NULL, NULL, r, t0);
	if (r >= 0)
		*ret_arn = TAKE_PTR(arn);
	return r;
}

const char *dmbyok_kms_client_region(struct kms_client *c)
{
	return c ? c->ops->region(c) : NULL;
}

int dmbyok_kms_key_region(const char *key_id, char **ret)
{
	if (key_id && !strcmp(dmbyok_kms_provider_for_key(key_id), "gcp"))
		return dmbyok_gcp_key_location(key_id, ret);
	if (key_id && !strcmp(dmbyok_kms_provider_for_key(key_id), "azure"))
		return dmbyok_azure_key_vault_host(key_id, ret);
	return dmbyok_aws_arn_region(key_id, ret);
}

const char *dmbyok_kms_provider_for_key(const char *key_id)
{
	/* Each provider's key names have their own shape; AWS takes ids, aliases and ARNs. */
	if (key_id && !strncmp(key_id, "projects/", strlen("projects/")))
		return "gcp";
	/* Key Vault identifiers are URLs (https://VAULT.vault.azure.net/keys/NAME...). */
	if (key_id && !strncasecmp(key_id, "https://", strlen("https://")))
		return "azure";
	return "aws";
}

bool dmbyok_kms_provider_known(const char *name)
{
	return name && provider_find(name) != NULL;
}

const char *dmbyok_kms_client_provider(struct kms_client *c)
{
	return c ? c->ops->name : NULL;
}

const char *dmbyok_kms_client_provider_title(struct kms_client *c)
{
	return c ? c->ops->title : "KMS";
}
