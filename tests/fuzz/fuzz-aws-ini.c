/* SPDX-License-Identifier: Apache-2.0 */
/* The shared AWS config and credentials files (INI), as dmbyok_aws_ini_load() reads them. */
#include "kms/aws/aws.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static bool inside(const struct secret *text, const char *p)
{
	return p >= (const char *)text->data && p <= (const char *)text->data + text->size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(dmbyok_aws_ini_freep) struct aws_ini *ini = NULL;
	struct secret *text = fuzz_secret(data, size);
	int r;

	r = dmbyok_aws_ini_parse(text, &ini); /* takes the text, also on failure */
	FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
	if (r < 0)
		return 0;

	for (size_t i = 0; i < ini->n_entries; i++) {
		const struct aws_ini_entry *e = &ini->entries[i];

		/* parsed in place: everything points into the locked text */
		FUZZ_CHECK(inside(ini->text, e->section) && inside(ini->text, e->key) &&
		           inside(ini->text, e->value));
		FUZZ_CHECK(dmbyok_aws_ini_has_section(ini, e->section));
		FUZZ_CHECK(dmbyok_aws_ini_get(ini, e->section, e->key) != NULL);
	}
	(void)dmbyok_aws_ini_get(ini, "default", "region");
	(void)dmbyok_aws_ini_get(ini, "profile default", "aws_secret_access_key");
	return 0;
}
