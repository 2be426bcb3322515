/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dmbyok LUKS2 token parser: any header can carry any token JSON. A token that parses
 * must survive to_json and parse again unchanged, or `rewrap` would write another token.
 */
#include "dmbyok/token.h"
#include "fuzz.h"

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static bool token_equal(const struct dmbyok_token *a, const struct dmbyok_token *b)
{
	return a->version == b->version && a->keyslot == b->keyslot && str_eq(a->kms, b->kms) &&
	       str_eq(a->key_id, b->key_id) && str_eq(a->key_arn, b->key_arn) &&
	       str_eq(a->region, b->region) && str_eq(a->ciphertext, b->ciphertext) &&
	       str_eq(a->key_check, b->key_check) && str_eq(a->binding, b->binding) &&
	       str_eq(a->created, b->created) && str_eq(a->rewrapped, b->rewrapped) &&
	       json_object_equal(a->context, b->context);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_token_ struct dmbyok_token *t = NULL, *t2 = NULL;
	_cleanup_free_ char *json = fuzz_string(data, size), *out = NULL, *out2 = NULL;
	int r;

	r = dmbyok_token_from_json(json, &t);
	FUZZ_CHECK(r == 0 || r == -EUCLEAN || r == -ENOMEM);
	if (r < 0)
		return 0;

	FUZZ_CHECK(dmbyok_token_to_json(t, &out) == 0);
	FUZZ_CHECK(dmbyok_token_from_json(out, &t2) == 0);
	FUZZ_CHECK(token_equal(t, t2));
	FUZZ_CHECK(dmbyok_token_to_json(t2, &out2) == 0);
	FUZZ_CHECK(!strcmp(out, out2));
	return 0;
}
