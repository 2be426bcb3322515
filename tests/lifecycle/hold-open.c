/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: opens a dmbyok volume through the library exactly as `dmbyok open` does,
 * then stays alive until stdin closes, so a test can read this process's memory after the
 * open returned and prove the data key is not left in it. With CYCLES, it then locks and
 * unlocks the mapping that many times (each unlock unwraps the key from the KMS again), as
 * a long-lived agent would, before it reports.
 *   hold-open DEVICE NAME [CYCLES]
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/secret.h"

int main(int argc, char **argv)
{
	struct kms_options kms = { 0 };
	char c;
	int r;

	dmbyok_log_setup("hold-open");
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: hold-open DEVICE NAME [CYCLES]\n");
		return 2;
	}
	r = dmbyok_harden_process();
	if (r == 0)
		r = dmbyok_open(&(struct open_options){ .device = argv[1], .name = argv[2] }, &kms);
	for (int i = 0; r == 0 && argc == 4 && i < atoi(argv[3]); i++) {
		r = dmbyok_lock(argv[2], 0);
		if (r == 0)
			r = dmbyok_unlock(argv[2], NULL, &kms);
	}
	if (r < 0)
		return dmbyok_exit_code(r);
	printf("opened\n");
	fflush(stdout);
	while (read(STDIN_FILENO, &c, 1) > 0)
		;
	return 0;
}
