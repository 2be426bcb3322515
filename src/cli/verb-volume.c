/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs that change a volume or a mapping. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "dmbyok/hygiene.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

int verb_format(struct cli *c)
{
	_cleanup_free_ char *uuid = NULL;
	int r;

	GUARD(cli_require_args(c, 1, 1,
	                       "format DEVICE --key KEY_ID [--context k=v]... [--grant "
	                       "[--grantee ARN]]"));
	if (!c->key_id)
		return log_error_errno(EINVAL, "format needs --key KEY_ID (key id, ARN or alias).");
	r = dmbyok_format(
	    &(struct format_options){
	        .device = c->args[0],
	        .header = c->header,
	        .key_id = c->key_id,
	        .context = c->context,
	        .n_context = c->n_context,
	        .force = c->force,
	        .perf_flags = c->perf_set ? c->perf_flags : DMBYOK_DEFAULT_PERF_FLAGS,
	        .grant = c->grant,
	        .grantee = c->grantee,
	    },
	    &c->kms, &uuid);
	if (r == 0)
		printf("%s\n", uuid);
	return r;
}

int verb_open(struct cli *c)
{
	GUARD(cli_require_args(c, 2, 2, "open DEVICE NAME [--header FILE]"));
	return dmbyok_open(
	    &(struct open_options){
	        .device = c->args[0],
	        .name = c->args[1],
	        .header = c->header,
	        .override_flags = c->perf_set,
	        .flags = c->perf_flags,
	    },
	    &c->kms);
}

int verb_close(struct cli *c)
{
	GUARD(cli_require_args(c, 1, 1, "close NAME"));
	/* An ephemeral mapping has no header and no record: it has its own way out. */
	if (dmbyok_ephemeral_is_mapping(c->args[0]) == 1)
		return dmbyok_ephemeral_close(c->args[0]);
	return dmbyok_close(c->args[0]);
}

int verb_lock(struct cli *c)
{
	GUARD(cli_require_args(c, 1, 1, "lock NAME [--timeout SECONDS]"));
	return dmbyok_lock(c->args[0], c->timeout_s * 1000U);
}

int verb_unlock(struct cli *c)
{
	GUARD(cli_require_args(c, 1, 1, "unlock NAME [--header FILE]"));
	return dmbyok_unlock(c->args[0], c->header, &c->kms);
}

int verb_rewrap(struct cli *c)
{
	GUARD(cli_require_args(c, 1, 1, "rewrap DEVICE [--key NEW_KEY_ID] [--header FILE]"));
	return dmbyok_rewrap(c->args[0], c->header, c->key_id, &c->kms);
}
