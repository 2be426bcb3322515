/* SPDX-License-Identifier: Apache-2.0 */
/* Configure-time probe: prints the directory this libcryptsetup loads token plugins from. */
#include <stdio.h>

#include <libcryptsetup.h>

int main(void)
{
	const char *dir = crypt_token_external_path();

	if (!dir)
		return 1; /* built without external token support */
	fputs(dir, stdout);
	return 0;
}
