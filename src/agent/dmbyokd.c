/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd: the agent that keeps dmbyok volumes provisioned while the customer's key is
 * usable and locks them when it is revoked. The watch loop lands with the agent issue;
 * today it only prepares the process the way the agent will run.
 */
#include <stdio.h>
#include <string.h>

#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "dmbyok/secret.h"

int main(int argc, char **argv)
{
	int r;

	dmbyok_log_setup("dmbyokd");
	if (argc > 1 && !strcmp(argv[1], "--version")) {
		printf("dmbyokd %s\n", DMBYOK_VERSION);
		return 0;
	}
	r = dmbyok_harden_process();
	if (r < 0)
		return dmbyok_exit_code(r);
	log_error("The revocation watch loop is not implemented yet; use `dmbyok lock/unlock`.");
	return dmbyok_exit_code(-ENOTSUP);
}
