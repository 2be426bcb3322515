/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The dmbyok CLI: parsed options shared by every verb, and the verbs themselves. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dmbyok/lifecycle.h"

struct cli {
	char **args; /* positional arguments after the verb */
	size_t n_args;
	const char *header;
	const char *key_id;
	char **context;
	size_t n_context;
	bool force;
	bool json;
	bool perf_set;
	uint32_t perf_flags;
	unsigned timeout_s; /* lock's bound; 0: the default */
	bool yes;           /* shred: do not ask */
	bool policy;        /* doctor --policy */
	char **data_paths;  /* doctor --policy --data-path PATH... */
	size_t n_data_paths;
	uint32_t sector_size; /* ephemeral --sector-size; 0: the default */
	const char *since;    /* audit --since */
	const char *volume;   /* audit --volume */
	bool grant;           /* format --grant */
	const char *grantee;  /* format --grantee ARN (implies --grant) */
	bool keep_grant;      /* shred --keep-grant */
	struct kms_options kms;
};

int verb_format(struct cli *c);
int verb_open(struct cli *c);
int verb_close(struct cli *c);
int verb_lock(struct cli *c);
int verb_unlock(struct cli *c);
int verb_rewrap(struct cli *c);
int verb_status(struct cli *c);
int verb_list(struct cli *c);
int verb_dump(struct cli *c);
int verb_doctor(struct cli *c);
int verb_volumes(struct cli *c);
int verb_attach(struct cli *c);
int verb_detach(struct cli *c);
/* verb-hygiene.c: shred, ephemeral, and doctor --policy (which verb_doctor hands over). */
int verb_shred(struct cli *c);
int verb_ephemeral(struct cli *c);
int verb_doctor_policy(struct cli *c);
/* verb-audit.c */
int verb_audit(struct cli *c);

/*
 * A verb's result that is a finding, not an error: `doctor --policy` found the policy broken.
 * main() exits with CLI_EXIT_POLICY_VIOLATED (10), beyond the error classes' 0-9.
 */
#define CLI_POLICY_VIOLATED      1000
#define CLI_EXIT_POLICY_VIOLATED 10

/* -EINVAL with a usage message unless exactly `min`..`max` positional arguments were given. */
int cli_require_args(const struct cli *c, size_t min, size_t max, const char *usage);
