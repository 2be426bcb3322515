/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: a libcryptsetup program as systemd-cryptsetup is one. It activates DEVICE as
 * NAME through whatever token handler libcryptsetup loads (CRYPT_ANY_TOKEN, as crypttab's
 * "none" key does), prints "result R ERRNO-NAME" (R: the keyslot, or the negative errno that
 * reached the caller), and with --hold stays alive until stdin closes, so that its memory
 * can be scanned after the token plugin returned.
 *   token-open DEVICE NAME [--hold]
 * Exit 0 when activated, 1 when not, 2 on bad usage or a header it cannot load.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libcryptsetup.h>

int main(int argc, char **argv)
{
	struct crypt_device *cd = NULL;
	char c;
	int r;

	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--hold") != 0)) {
		fprintf(stderr, "usage: token-open DEVICE NAME [--hold]\n");
		return 2;
	}
	r = crypt_init(&cd, argv[1]);
	if (r == 0)
		r = crypt_load(cd, CRYPT_LUKS2, NULL);
	if (r < 0) {
		fprintf(stderr, "token-open: cannot load %s: %s\n", argv[1], strerror(-r));
		crypt_free(cd);
		return 2;
	}
	r = crypt_activate_by_token(cd, argv[2], CRYPT_ANY_TOKEN, NULL, 0);
	crypt_free(cd);
	printf("result %d %s\n", r, r < 0 ? strerrorname_np(-r) : "ok");
	fflush(stdout);
	if (argc == 4)
		while (read(STDIN_FILENO, &c, 1) > 0)
			;
	return r < 0 ? 1 : 0;
}
