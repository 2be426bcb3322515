/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-volume grants on AWS KMS (kms.h): CreateGrant, RetireGrant, ListGrants, and the name
 * a grant gives the caller. A volume's grant lets its grantee Decrypt and ReEncrypt only
 * under the volume's encryption context, and names the grantee its retiring principal.
 */
#include <stdio.h>
#include <string.h>

#include "aws.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "../kms-provider.h"

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
#define _cleanup_json_ _cleanup_(json_object_putp)

/* Some grant operations take key ids and ARNs only: an alias there is a NotFoundException. */
static bool is_alias(const char *key_id)
{
	return !strncmp(key_id, "alias/", strlen("alias/")) ||
	       (!strncmp(key_id, "arn:", strlen("arn:")) && strstr(key_id, ":alias/"));
}

static int malformed(char *why, size_t why_size, const char *operation, const char *what)
{
	snprintf(why, why_size, "%s: %s", operation, what);
	return -EPROTO;
}

int dmbyok_aws_parse_create_grant(const struct secret *body, char **ret_grant_id, char *why,
                                  size_t why_size)
{
	_cleanup_json_ json_object *j = NULL;
	_cleanup_free_ char *id = NULL;
	int r;

	r = dmbyok_aws_parse_object(body, &j);
	if (r == -EPROTO)
		return malformed(why, why_size, "CreateGrant", "malformed response");
	if (r < 0)
		return r;
	GUARD(dmbyok_aws_member_string(j, "CreateGrant", "GrantId", true, &id, why, why_size));
	if (!dmbyok_kms_grant_id_valid(id))
		return malformed(why, why_size, "CreateGrant",
		                 "GrantId in the response is not one");
	*ret_grant_id = TAKE_PTR(id);
	return 0;
}

/* An encryption context as the response gives it: an object of strings, copied. */
static int context_copy(json_object *v, json_object **ret, char *why, size_t why_size)
{
	_cleanup_json_ json_object *o = NULL;

	if (!json_object_is_type(v, json_type_object))
		return malformed(why, why_size, "ListGrants",
		                 "EncryptionContextEquals in the response is not an object");
	o = json_object_new_object();
	ENSURE_ALLOC(o);
	json_object_object_foreach (v, k, s) {
		json_object *copy;

		if (!json_object_is_type(s, json_type_string) ||
		    strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s))
			return malformed(why, why_size, "ListGrants",
			                 "an encryption context value in the response is not a "
			                 "string");
		copy = json_object_new_string(json_object_get_string(s));
		ENSURE_ALLOC(copy);
		if (json_object_object_add(o, k, copy) < 0) {
			json_object_put(copy);
			return -ENOMEM;
		}
	}
	*ret = TAKE_PTR(o);
	return 0;
}

static int grant_entry(json_object *g, struct kms_grant_info *ret, char *why, size_t why_size)
{
	_cleanup_(dmbyok_kms_grant_info_done) struct kms_grant_info info = {};
	json_object *ops, *cons, *eq;
	size_t n;

	GUARD(dmbyok_aws_member_string(g, "ListGrants", "GrantId", true, &info.grant_id, why,
	                               why_size));
	GUARD(dmbyok_aws_member_string(g, "ListGrants", "GranteePrincipal", true, &info.grantee,
	                               why, why_size));
	GUARD(dmbyok_aws_member_string(g, "ListGrants", "RetiringPrincipal", false,
	                               &info.retiring_principal, why, why_size));
	if (!json_object_object_get_ex(g, "Operations", &ops) ||
	    !json_object_is_type(ops, json_type_array))
		return malformed(why, why_size, "ListGrants", "a grant lacks Operations");
	n = json_object_array_length(ops);
	info.operations = calloc(n + 1, sizeof(*info.operations));
	ENSURE_ALLOC(info.operations);
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(ops, i);

		if (!json_object_is_type(o, json_type_string) ||
		    json_object_get_string_len(o) == 0 ||
		    strlen(json_object_get_string(o)) != (size_t)json_object_get_string_len(o))
			return malformed(why, why_size, "ListGrants",
			                 "an operation in the response is not a string");
		info.operations[i] = strdup(json_object_get_string(o));
		ENSURE_ALLOC(info.operations[i]);
	}
	if (json_object_object_get_ex(g, "Constraints", &cons)) {
		if (!json_object_is_type(cons, json_type_object))
			return malformed(why, why_size, "ListGrants",
			                 "Constraints in the response is not an object");
		if (json_object_object_get_ex(cons, "EncryptionContextEquals", &eq))
			GUARD(context_copy(eq, &info.context_equals, why, why_size));
	}
	*ret = info;
	info = (struct kms_grant_info){};
	return 0;
}

int dmbyok_aws_parse_list_grants(const struct secret *body, const char *grant_id,
                                 struct kms_grant_info *ret, char **ret_next_marker, char *why,
                                 size_t why_size)
{
	_cleanup_json_ json_object *j = NULL;
	_cleanup_free_ char *marker = NULL;
	json_object *grants, *truncated;
	size_t n;
	int r;

	*ret_next_marker = NULL;
	r = dmbyok_aws_parse_object(body, &j);
	if (r == -EPROTO)
		return malformed(why, why_size, "ListGrants", "malformed response");
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(j, "Grants", &grants) ||
	    !json_object_is_type(grants, json_type_array))
		return malformed(why, why_size, "ListGrants", "the response lacks Grants");
	if (json_object_object_get_ex(j, "Truncated", &truncated)) {
		/* json-c would read "false" as true */
		if (!json_object_is_type(truncated, json_type_boolean))
			return malformed(why, why_size, "ListGrants",
			                 "Truncated in the response is not a boolean");
		if (json_object_get_boolean(truncated))
			GUARD(dmbyok_aws_member_string(j, "ListGrants", "NextMarker", true, &marker,
			                               why, why_size));
	}
	n = json_object_array_length(grants);
	for (size_t i = 0; i < n; i++) {
		json_object *g = json_object_array_get_idx(grants, i), *id;

		if (!json_object_is_type(g, json_type_object) ||
		    !json_object_object_get_ex(g, "GrantId", &id) ||
		    !json_object_is_type(id, json_type_string))
			return malformed(why, why_size, "ListGrants",
			                 "a grant in the response has no GrantId");
		/* The filter is the KMS's; a page may still hold others (not ours to trust). */
		if (!strcmp(json_object_get_string(id), grant_id))
			return grant_entry(g, ret, why, why_size);
	}
	*ret_next_marker = TAKE_PTR(marker);
	return -ENOENT;
}

static int key_arn_check(struct kms_client *c, const char *operation, const char *key_arn)
{
	if (dmbyok_aws_is_key_arn(key_arn))
		return 0;
	dmbyok_kms_set_last_error(c, "%s: a grant is named with its key's ARN, not \"%s\"",
	                          operation, key_arn);
	return log_debug_errno(EINVAL, "%s", dmbyok_kms_last_error(c));
}

int dmbyok_aws_create_grant(struct kms_client *c, const char *key_id, const char *grantee,
                            json_object *context, const char *name, char **ret_grant_id)
{
	static const char *const operations[] = { AWS_GRANT_OPERATIONS };
	_cleanup_json_ json_object *req = NULL, *ops = NULL, *constraints = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	char why[256] = "";
	int r;

	if (is_alias(key_id)) {
		dmbyok_kms_set_last_error(
		    c, "CreateGrant takes a key id or key ARN, not the alias %s", key_id);
		return log_debug_errno(EINVAL, "%s", dmbyok_kms_last_error(c));
	}
	req = json_object_new_object();
	ops = json_object_new_array();
	constraints = json_object_new_object();
	ENSURE(req && ops && constraints, ENOMEM);
	for (size_t i = 0; i < ELEMENTSOF(operations); i++) {
		json_object *s = json_object_new_string(operations[i]);

		ENSURE_ALLOC(s);
		if (json_object_array_add(ops, s) < 0) {
			json_object_put(s);
			return -ENOMEM;
		}
	}
	/*
	 * No DescribeKey or RetireGrant among the operations: a constraint does not bind them,
	 * and the grantee retires the grant as its retiring principal.
	 */
	GUARD(dmbyok_aws_add_object(constraints, "EncryptionContextEquals", context));
	GUARD(dmbyok_aws_add_string(req, "KeyId", key_id));
	GUARD(dmbyok_aws_add_string(req, "GranteePrincipal", grantee));
	GUARD(dmbyok_aws_add_string(req, "RetiringPrincipal", grantee));
	GUARD(dmbyok_aws_add_object(req, "Operations", ops));
	GUARD(dmbyok_aws_add_object(req, "Constraints", constraints));
	if (name)
		GUARD(dmbyok_aws_add_string(req, "Name", name));

	/* AccessDenied, a disabled or deleted key: -EKEYREVOKED, as for Decrypt. */
	GUARD(dmbyok_aws_kms_request(c, "CreateGrant", key_id, req, &body, NULL));
	r = dmbyok_aws_parse_create_grant(body, ret_grant_id, why, sizeof(why));
	if (r < 0)
		return dmbyok_aws_response_failed(c, "CreateGrant", r, why);
	return 0;
}

int dmbyok_aws_retire_grant(struct kms_client *c, const char *key_arn, const char *grant_id)
{
	_cleanup_json_ json_object *req = NULL;
	_cleanup_secret_ struct secret *body = NULL;
	_cleanup_free_ char *code = NULL;
	int r;

	GUARD(key_arn_check(c, "RetireGrant", key_arn));
	req = json_object_new_object();
	ENSURE_ALLOC(req);
	GUARD(dmbyok_aws_add_string(req, "KeyId", key_arn));
	GUARD(dmbyok_aws_add_string(req, "GrantId", grant_id));
	r = dmbyok_aws_kms_request(c, "RetireGrant", key_arn, req, &body, &code);
	/* Retired or revoked already, or the key is deleted and its grants with it. */
	if (r < 0 && code && !strcmp(code, "NotFoundException"))
		return log_debug_errno(ENOENT, "RetireGrant: no grant %s on %s.", grant_id,
		                       key_arn);
	return r;
}

/* Pages a KMS may answer before we call it a loop. */
#define LIST_GRANTS_MAX_PAGES 1000

int dmbyok_aws_find_grant(struct kms_client *c, const char *key_arn, const char *grant_id,
                          struct kms_grant_info *ret)
{
	_cleanup_free_ char *marker = NULL;

	GUARD(key_arn_check(c, "ListGrants", key_arn));
	for (unsigned page = 0; page < LIST_GRANTS_MAX_PAGES; page++) {
		_cleanup_json_ json_object *req = NULL;
		_cleanup_secret_ struct secret *body = NULL;
		_cleanup_free_ char *code = NULL;
		char why[256] = "";
		int r;

		req = json_object_new_object();
		ENSURE_ALLOC(req);
		GUARD(dmbyok_aws_add_string(req, "KeyId", key_arn));
		GUARD(dmbyok_aws_add_string(req, "GrantId", grant_id));
		if (marker)
			GUARD(dmbyok_aws_add_string(req, "Marker", marker));
		r = dmbyok_aws_kms_request(c, "ListGrants", key_arn, req, &body, &code);
		/* A deleted key has no grants either. */
		if (r < 0 && code && !strcmp(code, "NotFoundException"))
			return log_debug_errno(ENOENT, "ListGrants: no key %s.", key_arn);
		if (r < 0)
			return r;
		free(TAKE_PTR(marker));
		r = dmbyok_aws_parse_list_grants(body, grant_id, ret, &marker, why, sizeof(why));
		if (r >= 0)
			return 0;
		if (r != -ENOENT)
			return dmbyok_aws_response_failed(c, "ListGrants", r, why);
		if (!marker) {
			dmbyok_kms_set_last_error(c, "ListGrants: key %s has no grant %s", key_arn,
			                          grant_id);
			return log_debug_errno(ENOENT, "%s", dmbyok_kms_last_error(c));
		}
	}
	dmbyok_kms_set_last_error(c, "ListGrants: more than %u pages of grants",
	                          LIST_GRANTS_MAX_PAGES);
	return log_debug_errno(EPROTO, "%s", dmbyok_kms_last_error(c));
}
