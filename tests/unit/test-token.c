/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/token.h"

#define UUID "3f1c2b9e-5d6a-4e7f-8a9b-0c1d2e3f4a5b"

static const char *good_json =
    "{\"type\":\"dmbyok\",\"keyslots\":[\"0\"],\"version\":1,\"kms\":\"aws\","
    "\"key_id\":\"alias/orders\",\"key_arn\":\"arn:aws:kms:eu-west-1:111122223333:key/k1\","
    "\"region\":\"eu-west-1\",\"ciphertext\":\"AQID\","
    "\"context\":{\"dmbyok:volume\":\"" UUID "\",\"tenant\":\"acme\"},"
    "\"key_check\":\"hmac-sha256-128:00\",\"created\":\"2026-11-23T06:00:00Z\"}";

static int quiet(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1); /* these tests provoke errors on purpose */
	return 0;
}

static void test_round_trip(void **state)
{
	_cleanup_token_ struct dmbyok_token *t = NULL, *again = NULL;
	_cleanup_free_ char *json = NULL;

	(void)state;
	assert_int_equal(dmbyok_token_from_json(good_json, &t), 0);
	assert_string_equal(t->key_id, "alias/orders");
	assert_string_equal(t->region, "eu-west-1");
	assert_int_equal(t->keyslot, 0);
	assert_null(t->rewrapped);
	assert_int_equal(dmbyok_token_check_volume(t, UUID), 0);

	assert_int_equal(dmbyok_token_to_json(t, &json), 0);
	assert_int_equal(dmbyok_token_from_json(json, &again), 0);
	assert_string_equal(again->key_arn, t->key_arn);
	assert_string_equal(again->ciphertext, t->ciphertext);
	assert_true(json_object_equal(again->context, t->context));
}

/* A token with its volume's grant: kept through a round trip; a malformed id is refused. */
static void test_grant_id(void **state)
{
	static const char *bad_ids[] = {
		"\"\"",
		"\"has space\"",
		"\"a/b\"",
		"\"line\\nbreak\"",
		"42",
		/* 129 characters */
		"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
	};
	const char *id = "0c237476b39f8bc44e45212e08498fbe3151305030726c0590dd8d3e9f3d6a0d";
	_cleanup_token_ struct dmbyok_token *t = NULL, *again = NULL;
	_cleanup_free_ char *json = NULL, *with = NULL;
	size_t n = strlen(good_json);

	(void)state;
	assert_int_equal(dmbyok_token_from_json(good_json, &t), 0);
	assert_null(t->grant_id);
	assert_int_equal(dmbyok_token_to_json(t, &json), 0);
	assert_null(strstr(json, "grant_id"));
	t->grant_id = strdup(id);
	free(json);
	json = NULL;
	assert_int_equal(dmbyok_token_to_json(t, &json), 0);
	assert_int_equal(dmbyok_token_from_json(json, &again), 0);
	assert_string_equal(again->grant_id, id);

	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		struct dmbyok_token *b = NULL;

		free(with);
		/* good_json with ,"grant_id":BAD before its closing brace */
		assert_true(asprintf(&with, "%.*s,\"grant_id\":%s}", (int)(n - 1), good_json,
		                     bad_ids[i]) > 0);
		assert_int_equal(dmbyok_token_from_json(with, &b), -EUCLEAN);
		assert_null(b);
	}
	assert_true(dmbyok_kms_grant_id_valid("A1"));
	assert_false(dmbyok_kms_grant_id_valid("-"));
}

static void test_malformed_tokens_are_corrupt(void **state)
{
	static const char *bad[] = {
		"not json",
		"[]",
		"{\"type\":\"clevis\",\"keyslots\":[\"0\"]}",
		/* missing ciphertext */
		"{\"type\":\"dmbyok\",\"keyslots\":[\"0\"],\"version\":1,\"kms\":\"aws\","
		"\"key_id\":\"k\",\"key_arn\":\"a\",\"context\":{},\"key_check\":\"x\"}",
		/* future version */
		"{\"type\":\"dmbyok\",\"keyslots\":[\"0\"],\"version\":2}",
		/* non-string context value */
		"{\"type\":\"dmbyok\",\"keyslots\":[\"0\"],\"version\":1,\"kms\":\"aws\","
		"\"key_id\":\"k\",\"key_arn\":\"a\",\"ciphertext\":\"c\",\"context\":{\"n\":1},"
		"\"key_check\":\"x\"}",
		/* two keyslots */
		"{\"type\":\"dmbyok\",\"keyslots\":[\"0\",\"1\"],\"version\":1}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct dmbyok_token *t = NULL;

		assert_int_equal(dmbyok_token_from_json(bad[i], &t), -EUCLEAN);
		assert_null(t);
	}
}

static void test_token_from_other_volume_is_refused(void **state)
{
	_cleanup_token_ struct dmbyok_token *t = NULL;

	(void)state;
	assert_int_equal(dmbyok_token_from_json(good_json, &t), 0);
	assert_int_equal(dmbyok_token_check_volume(t, "00000000-0000-4000-8000-000000000000"),
	                 -EBADMSG);
}

static void test_context_pairs(void **state)
{
	char *ok[] = { "tenant=acme", "env=prod=blue" };
	char *reserved[] = { "dmbyok:volume=x" };
	char *malformed[] = { "=x" };
	char *repeated[] = { "a=1", "a=2" };
	json_object *ctx = NULL, *v;

	(void)state;
	assert_int_equal(dmbyok_context_new(UUID, ok, 2, &ctx), 0);
	assert_true(json_object_object_get_ex(ctx, "dmbyok:volume", &v));
	assert_string_equal(json_object_get_string(v), UUID);
	assert_true(json_object_object_get_ex(ctx, "env", &v));
	assert_string_equal(json_object_get_string(v), "prod=blue");
	json_object_put(ctx);

	assert_int_equal(dmbyok_context_new(UUID, reserved, 1, &ctx), -EINVAL);
	assert_int_equal(dmbyok_context_new(UUID, malformed, 1, &ctx), -EINVAL);
	assert_int_equal(dmbyok_context_new(UUID, repeated, 2, &ctx), -EINVAL);

	char *big[] = { calloc(1, DMBYOK_CONTEXT_MAX_BYTES + 8) };
	assert_non_null(big[0]);
	memset(big[0], 'x', DMBYOK_CONTEXT_MAX_BYTES + 6);
	big[0][0] = 'k';
	big[0][1] = '=';
	assert_int_equal(dmbyok_context_new(UUID, big, 1, &ctx), -E2BIG);
	free(big[0]);
}

static void test_key_check_value(void **state)
{
	_cleanup_secret_ struct secret *dek = NULL, *other = NULL;
	_cleanup_token_ struct dmbyok_token *t = NULL;
	_cleanup_free_ char *kcv = NULL, *kcv2 = NULL;

	(void)state;
	assert_int_equal(dmbyok_secret_new(DMBYOK_DEK_BYTES, &dek), 0);
	assert_int_equal(dmbyok_secret_new(DMBYOK_DEK_BYTES, &other), 0);
	memset(dek->data, 0x42, dek->size);
	memset(other->data, 0x43, other->size);

	assert_int_equal(dmbyok_key_check_value(dek, UUID, NULL, &kcv), 0);
	assert_int_equal(strlen(kcv), strlen("hmac-sha256-128:") + 32);
	/* Bound to the volume: the same key on another volume has another check value. */
	assert_int_equal(dmbyok_key_check_value(dek, "other", NULL, &kcv2), 0);
	assert_string_not_equal(kcv, kcv2);

	/* Version 1 (good_json): the binding plays no part. */
	assert_int_equal(dmbyok_token_from_json(good_json, &t), 0);
	free(t->key_check);
	t->key_check = strdup(kcv);
	assert_int_equal(dmbyok_token_verify_dek(t, dek, UUID, NULL), 0);
	assert_int_equal(dmbyok_token_verify_dek(t, dek, UUID, "digest=changed"), 0);
	assert_int_equal(dmbyok_token_verify_dek(t, other, UUID, NULL), -EBADMSG);
}

#define BINDING_A                                                                                  \
	"digest=pbkdf2:sha256:1000:c2FsdA==:ZGlnZXN0\nsegment=crypt:16777216:dynamic:0:aes-xts-"   \
	"plain64:4096\n"
#define BINDING_B                                                                                  \
	"digest=pbkdf2:sha256:1000:c2FsdA==:b3RoZXI=\nsegment=crypt:16777216:dynamic:0:aes-xts-"   \
	"plain64:4096\n"

/* Version 2: a header whose digest (volume key) or segment changed no longer matches. */
static void test_key_check_value_is_bound_to_the_header(void **state)
{
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_token_ struct dmbyok_token *t = NULL;
	_cleanup_free_ char *v1 = NULL, *a = NULL, *b = NULL, *fa = NULL, *fb = NULL;

	(void)state;
	assert_int_equal(dmbyok_secret_new(DMBYOK_DEK_BYTES, &dek), 0);
	memset(dek->data, 0x42, dek->size);
	assert_int_equal(dmbyok_key_check_value(dek, UUID, NULL, &v1), 0);
	assert_int_equal(dmbyok_key_check_value(dek, UUID, BINDING_A, &a), 0);
	assert_int_equal(dmbyok_key_check_value(dek, UUID, BINDING_B, &b), 0);
	assert_string_not_equal(v1, a);
	assert_string_not_equal(a, b);

	assert_int_equal(dmbyok_binding_fingerprint(BINDING_A, &fa), 0);
	assert_int_equal(dmbyok_binding_fingerprint(BINDING_B, &fb), 0);
	assert_int_equal(strlen(fa), strlen("sha256:") + 64);
	assert_string_not_equal(fa, fb);

	assert_int_equal(dmbyok_token_from_json(good_json, &t), 0);
	t->version = 2;
	free(t->key_check);
	t->key_check = strdup(a);
	t->binding = strdup(fa);
	assert_int_equal(dmbyok_token_verify_dek(t, dek, UUID, BINDING_A), 0);
	assert_int_equal(dmbyok_token_verify_dek(t, dek, UUID, BINDING_B), -EBADMSG);
	/* A version 2 token without the header's binding cannot be checked at all. */
	assert_int_equal(dmbyok_token_verify_dek(t, dek, UUID, NULL), -EINVAL);
}

/* Version 2 tokens must carry their binding; versions beyond this build are refused. */
static void test_versions(void **state)
{
	_cleanup_token_ struct dmbyok_token *t = NULL, *t2 = NULL;
	_cleanup_free_ char *json = NULL, *v2 = NULL, *nobind = NULL;
	char *p;

	(void)state;
	json = strdup(good_json);
	p = strstr(json, "\"version\":1");
	assert_non_null(p);
	p[10] = '2';
	assert_int_equal(dmbyok_token_from_json(json, &t), -EUCLEAN); /* no binding */
	assert_true(
	    asprintf(&nobind, "%.*s,\"binding\":\"sha256:00\"}", (int)strlen(json) - 1, json) > 0);
	assert_int_equal(dmbyok_token_from_json(nobind, &t), 0);
	assert_int_equal(t->version, 2);
	assert_string_equal(t->binding, "sha256:00");
	assert_int_equal(dmbyok_token_to_json(t, &v2), 0);
	assert_int_equal(dmbyok_token_from_json(v2, &t2), 0);
	assert_string_equal(t2->binding, "sha256:00");

	p = strstr(nobind, "\"version\":2");
	p[10] = '3';
	assert_int_equal(dmbyok_token_from_json(nobind, &t2), -EUCLEAN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_malformed_tokens_are_corrupt),
		cmocka_unit_test(test_grant_id),
		cmocka_unit_test(test_token_from_other_volume_is_refused),
		cmocka_unit_test(test_context_pairs),
		cmocka_unit_test(test_key_check_value),
		cmocka_unit_test(test_key_check_value_is_bound_to_the_header),
		cmocka_unit_test(test_versions),
	};
	return cmocka_run_group_tests(tests, quiet, NULL);
}
