/* SPDX-License-Identifier: Apache-2.0 */
/* doctor: the lifecycle layer runs the checks; this prints them as they come. */
#include <stdio.h>

#include "cli.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

static void print_check(const char *check, int r, const char *detail, const char *provider_said,
                        void *userdata)
{
	(void)userdata;
	if (r > 0)
		printf("warn %-34s %s: %s\n", check, detail, provider_said);
	else
		printf("%-4s %-34s %s\n", r == 0 ? "ok" : "FAIL", check,
		       r == 0 ? (detail ? detail : "") : dmbyok_strerror(r));
	if (r < 0 && provider_said)
		printf("     %s\n", provider_said);
}

int verb_doctor(struct cli *c)
{
	int r;

	if (c->policy)
		return verb_doctor_policy(c);
	if (c->n_data_paths)
		return log_error_errno(EINVAL, "--data-path goes with --policy.");
	GUARD(cli_require_args(c, 0, 1, "doctor [--key KEY_ID] [DEVICE [--header FILE]]"));
	r = dmbyok_doctor(
	    &(struct doctor_options){
	        .key_id = c->key_id,
	        .device = c->n_args ? c->args[0] : NULL,
	        .header = c->header,
	    },
	    &c->kms, print_check, NULL);
	if (!c->key_id && !c->n_args)
		printf(
		    "skip KMS checks                         (give --key KEY_ID or a DEVICE to run "
		    "them)\n");
	return r;
}
