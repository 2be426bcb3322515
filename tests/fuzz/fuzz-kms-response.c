/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every parser of AWS KMS responses, on the same input: a KMS endpoint (or anything that
 * answers in its place) controls the body completely.
 */
#include <json-c/json.h>

#include "kms/aws/aws.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

/* The document as strict JSON, the whole input an object; NULL otherwise. */
static json_object *strict_parse(const char *text)
{
	json_tokener *tok = json_tokener_new();
	size_t len = strlen(text), end;
	json_object *j;

	FUZZ_CHECK(tok);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	j = json_tokener_parse_ex(tok, text, (int)len);
	end = j ? json_tokener_get_parse_end(tok) : 0;
	json_tokener_free(tok);
	while (end < len && strchr(" \t\r\n", text[end]))
		end++;
	if (j && (end != len || !json_object_is_type(j, json_type_object))) {
		json_object_put(j);
		j = NULL;
	}
	return j;
}

static bool is_base64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/' || c == '=';
}

static void check_result(int r, const struct aws_kms_result *res, bool plaintext, bool ciphertext,
                         const char *why)
{
	FUZZ_CHECK(r == 0 || r == -EPROTO || r == -ENOMEM);
	if (r == -EPROTO)
		FUZZ_CHECK(why[0] != '\0');
	if (r < 0) {
		FUZZ_CHECK(!res->plaintext && !res->ciphertext_b64 && !res->key_arn);
		return;
	}
	FUZZ_CHECK(dmbyok_aws_is_key_arn(res->key_arn));
	FUZZ_CHECK(!res->source_key_arn || dmbyok_aws_is_key_arn(res->source_key_arn));
	FUZZ_CHECK(!plaintext || (res->plaintext && res->plaintext->size > 0));
	if (ciphertext) {
		FUZZ_CHECK(res->ciphertext_b64 && *res->ciphertext_b64);
		for (const char *p = res->ciphertext_b64; *p; p++)
			FUZZ_CHECK(is_base64_char(*p));
	}
}

/* dmbyok_aws_json_take_string() against json-c: the same value, or the secret escapes. */
static void check_take_string(const uint8_t *data, size_t size, const char *field)
{
	struct secret *body = fuzz_secret_reuse(data, size);
	_cleanup_secret_ struct secret *val = NULL;
	json_object *before = strict_parse((const char *)body->data), *after = NULL, *v;
	size_t len = strlen((const char *)body->data);
	int r;

	r = dmbyok_aws_json_take_string(body, field, &val);
	FUZZ_CHECK(r == 0 || r == -ENOENT || r == -EPROTO || r == -ENOMEM);
	FUZZ_CHECK(strlen((const char *)body->data) == len);
	if (r == 0) {
		FUZZ_CHECK(strlen((const char *)val->data) == val->size);
		FUZZ_CHECK(!strpbrk((const char *)val->data, "\"\\"));
	}
	if (before && json_object_object_get_ex(before, field, &v) &&
	    json_object_is_type(v, json_type_string)) {
		/* a field a JSON parser sees is never missed */
		FUZZ_CHECK(r != -ENOENT);
		if (r == 0) {
			FUZZ_CHECK(!strcmp(json_object_get_string(v), (const char *)val->data));
			/* and after the take, the parser sees only the blanked copy */
			after = strict_parse((const char *)body->data);
			FUZZ_CHECK(after && json_object_object_get_ex(after, field, &v));
			FUZZ_CHECK((size_t)json_object_get_string_len(v) == val->size);
			FUZZ_CHECK(strspn(json_object_get_string(v), "A") == val->size);
		}
	}
	json_object_put(before);
	json_object_put(after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[256];
	int r;

	{
		struct secret *body = fuzz_secret_reuse(data, size);
		_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};

		why[0] = '\0';
		r = dmbyok_aws_parse_generate_data_key(body, &res, why, sizeof(why));
		check_result(r, &res, true, true, why);
	}
	{
		struct secret *body = fuzz_secret_reuse(data, size);
		_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};

		why[0] = '\0';
		r = dmbyok_aws_parse_decrypt(body, &res, why, sizeof(why));
		check_result(r, &res, true, false, why);
	}
	{
		struct secret *body = fuzz_secret_reuse(data, size);
		_cleanup_(dmbyok_aws_kms_result_done) struct aws_kms_result res = {};

		why[0] = '\0';
		r = dmbyok_aws_parse_reencrypt(body, &res, why, sizeof(why));
		check_result(r, &res, false, true, why);
	}
	{
		struct secret *body = fuzz_secret_reuse(data, size);
		_cleanup_(dmbyok_kms_key_info_done) struct kms_key_info info = {};

		why[0] = '\0';
		r = dmbyok_aws_parse_describe_key(body, &info, why, sizeof(why));
		FUZZ_CHECK(r == 0 || r == -EPROTO || r == -ENOMEM);
		if (r == -EPROTO)
			FUZZ_CHECK(why[0] != '\0');
		if (r == 0)
			FUZZ_CHECK(dmbyok_aws_is_key_arn(info.key_arn) && info.key_state &&
			           *info.key_state);
	}
	{
		struct secret *body = fuzz_secret_reuse(data, size);
		_cleanup_free_ char *code = NULL, *msg = NULL;

		r = dmbyok_aws_parse_error(body, &code, &msg);
		FUZZ_CHECK(r == 0 || r == -ENOMEM);
		if (code) {
			FUZZ_CHECK(*code && !strpbrk(code, "#:"));
			(void)dmbyok_aws_error_to_errno(code, 400);
			(void)dmbyok_aws_error_is_retryable(code, 400);
		}
		for (const char *p = msg; p && *p; p++)
			FUZZ_CHECK(*p >= 0x20 && *p < 0x7f);
	}
	check_take_string(data, size, "Plaintext");
	check_take_string(data, size, "KeyId");
	return 0;
}
