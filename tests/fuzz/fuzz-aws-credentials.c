/* SPDX-License-Identifier: Apache-2.0 */
/* Credentials JSON from the container and instance metadata endpoints. */
#include "kms/aws/aws.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_secret_ struct secret *body = fuzz_secret(data, size);
	_cleanup_(dmbyok_aws_credentials_freep) struct aws_credentials *cr = NULL;
	int r;

	r = dmbyok_aws_credentials_from_json(body, "imds", &cr);
	FUZZ_CHECK(r == 0 || r == -EPROTO || r == -ENOMEM);
	if (r < 0)
		return 0;
	FUZZ_CHECK(cr->access_key_id && cr->secret_access_key);
	FUZZ_CHECK(cr->expiration != 0);
	/* the secret was blanked in the body, which may now go to json-c */
	FUZZ_CHECK(strlen((const char *)body->data) == strnlen((const char *)data, size));
	return 0;
}
