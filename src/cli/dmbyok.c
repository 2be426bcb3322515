/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "dmbyok/error.h"
#include "dmbyok/log.h"

int main(int argc, char **argv)
{
	log_setup("dmbyok");
	if (argc > 1 && !strcmp(argv[1], "--version")) {
		printf("dmbyok %s\n", DMBYOK_VERSION);
		return 0;
	}
	fprintf(stderr, "usage: dmbyok VERB ...\n");
	return 2;
}
