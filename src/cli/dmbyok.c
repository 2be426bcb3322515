/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyok: format, open, close, lock, unlock and inspect volumes encrypted under a
 * customer-managed KMS key. Exit codes follow dmbyok's error classes (dmbyok(8)).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dmbyok/encoding.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/secret.h"

static const struct {
	const char *name;
	int (*run)(struct cli *c);
	const char *help;
} verbs[] = {
	{ "format", verb_format,
	  "DEVICE --key KEY_ID [--context k=v]... [--grant [--grantee ARN]] [--header FILE] "
	  "[--force]" },
	{ "open", verb_open, "DEVICE NAME [--header FILE] [--perf FLAGS]" },
	{ "close", verb_close, "NAME  (a dmbyok volume or an ephemeral mapping)" },
	{ "lock", verb_lock, "NAME [--timeout SECONDS]" },
	{ "unlock", verb_unlock, "NAME [--header FILE]" },
	{ "rewrap", verb_rewrap, "DEVICE [--key NEW_KEY_ID] [--header FILE]" },
	{ "status", verb_status, "[NAME] [--json]" },
	{ "list", verb_list, "[--json]" },
	{ "dump", verb_dump, "DEVICE [--header FILE] [--json]" },
	{ "doctor", verb_doctor,
	  "[--key KEY_ID] [DEVICE [--header FILE]] | --policy [--data-path PATH]... [--json]" },
	{ "volumes", verb_volumes, "[list|check|add NAME DEVICE [OPTIONS]|remove NAME] [--json]" },
	{ "attach", verb_attach, "DEVICE  (a disk of /etc/dmbyok/volumes appeared)" },
	{ "detach", verb_detach, "[KERNEL_NAME]  (a disk went away)" },
	{ "shred", verb_shred, "DEVICE [--yes] [--header FILE] [--force] [--keep-grant] [--json]" },
	{ "ephemeral", verb_ephemeral, "DEVICE NAME [--sector-size BYTES] [--force]" },
	{ "audit", verb_audit, "[--since WHEN] [--volume NAME|UUID] [--json]" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: dmbyok VERB [OPTIONS]\n\nVerbs:\n");
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		fprintf(f, "  %-9s %s\n", verbs[i].name, verbs[i].help);
	fprintf(f, "\nCommon options:\n"
	           "  --region R  --endpoint URL  --profile P  --ca-bundle FILE   KMS access\n"
	           "  --quiet  --debug  --json  --help  --version\n"
	           "Exit codes: 0 ok, 1 internal, 2 bad input, 3 key revoked, 4 KMS unreachable,\n"
	           "5 credentials, 6 wrong token, 7 bad header, 8 busy, 9 no kernel support;\n"
	           "doctor --policy: 10 when the policy does not hold.\n"
	           "See dmbyok(8).\n");
}

int cli_require_args(const struct cli *c, size_t min, size_t max, const char *u)
{
	if (c->n_args < min || c->n_args > max)
		return log_error_errno(EINVAL, "usage: dmbyok %s", u);
	return 0;
}

int main(int argc, char **argv)
{
	enum {
		ARG_HEADER = 0x100,
		ARG_CONTEXT,
		ARG_REGION,
		ARG_ENDPOINT,
		ARG_PROFILE,
		ARG_CA_BUNDLE,
		ARG_PERF,
		ARG_DEBUG,
		ARG_VERSION,
		ARG_JSON,
		ARG_TIMEOUT,
		ARG_YES,
		ARG_POLICY,
		ARG_DATA_PATH,
		ARG_SECTOR_SIZE,
		ARG_SINCE,
		ARG_VOLUME,
		ARG_GRANT,
		ARG_GRANTEE,
		ARG_KEEP_GRANT,
	};
	static const struct option options[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "header", required_argument, NULL, ARG_HEADER },
		{ "context", required_argument, NULL, ARG_CONTEXT },
		{ "force", no_argument, NULL, 'f' },
		{ "json", no_argument, NULL, ARG_JSON },
		{ "region", required_argument, NULL, ARG_REGION },
		{ "endpoint", required_argument, NULL, ARG_ENDPOINT },
		{ "profile", required_argument, NULL, ARG_PROFILE },
		{ "ca-bundle", required_argument, NULL, ARG_CA_BUNDLE },
		{ "perf", required_argument, NULL, ARG_PERF },
		{ "timeout", required_argument, NULL, ARG_TIMEOUT },
		{ "yes", no_argument, NULL, ARG_YES },
		{ "policy", no_argument, NULL, ARG_POLICY },
		{ "data-path", required_argument, NULL, ARG_DATA_PATH },
		{ "sector-size", required_argument, NULL, ARG_SECTOR_SIZE },
		{ "since", required_argument, NULL, ARG_SINCE },
		{ "volume", required_argument, NULL, ARG_VOLUME },
		{ "grant", no_argument, NULL, ARG_GRANT },
		{ "grantee", required_argument, NULL, ARG_GRANTEE },
		{ "keep-grant", no_argument, NULL, ARG_KEEP_GRANT },
		{ "quiet", no_argument, NULL, 'q' },
		{ "debug", no_argument, NULL, ARG_DEBUG },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{},
	};
	struct cli c = { 0 };
	const char *verb;
	int opt, r;

	dmbyok_log_setup("dmbyok");
	c.context = calloc((size_t)argc, sizeof(char *));
	c.data_paths = calloc((size_t)argc, sizeof(char *));
	if (!c.context || !c.data_paths)
		return dmbyok_exit_code(log_oom());

	/* GNU getopt permutes: options may come before or after the verb and its arguments. */
	while ((opt = getopt_long(argc, argv, "k:fqh", options, NULL)) >= 0) {
		switch (opt) {
		case 'k':
			c.key_id = optarg;
			break;
		case ARG_HEADER:
			c.header = optarg;
			break;
		case ARG_CONTEXT:
			c.context[c.n_context++] = optarg;
			break;
		case 'f':
			c.force = true;
			break;
		case ARG_JSON:
			c.json = true;
			break;
		case ARG_REGION:
			c.kms.region = optarg;
			break;
		case ARG_ENDPOINT:
			c.kms.endpoint = optarg;
			break;
		case ARG_PROFILE:
			c.kms.profile = optarg;
			break;
		case ARG_CA_BUNDLE:
			c.kms.ca_bundle = optarg;
			break;
		case ARG_PERF:
			r = dmbyok_perf_flags_parse(optarg, &c.perf_flags);
			if (r < 0)
				return dmbyok_exit_code(r);
			c.perf_set = true;
			break;
		case ARG_TIMEOUT:
			r = dmbyok_parse_option_uint("timeout", optarg, 1, 3600, "seconds",
			                             &c.timeout_s);
			if (r < 0)
				return dmbyok_exit_code(r);
			break;
		case ARG_YES:
			c.yes = true;
			break;
		case ARG_POLICY:
			c.policy = true;
			break;
		case ARG_DATA_PATH:
			c.data_paths[c.n_data_paths++] = optarg;
			break;
		case ARG_SINCE:
			c.since = optarg;
			break;
		case ARG_VOLUME:
			c.volume = optarg;
			break;
		case ARG_GRANT:
			c.grant = true;
			break;
		case ARG_GRANTEE:
			c.grant = true;
			c.grantee = optarg;
			break;
		case ARG_KEEP_GRANT:
			c.keep_grant = true;
			break;
		case ARG_SECTOR_SIZE: {
			unsigned v = 0;

			r = dmbyok_parse_option_uint("sector-size", optarg, 512, 4096, "bytes", &v);
			if (r < 0)
				return dmbyok_exit_code(r);
			c.sector_size = v;
			break;
		}
		case 'q':
			dmbyok_log_set_max_level(LOG_LEVEL_WARNING);
			break;
		case ARG_DEBUG:
			dmbyok_log_set_max_level(LOG_LEVEL_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ARG_VERSION:
			printf("dmbyok %s\n", DMBYOK_VERSION);
			return 0;
		default:
			usage(stderr);
			return dmbyok_exit_code(-EINVAL);
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return dmbyok_exit_code(-EINVAL);
	}
	verb = argv[optind++];
	c.args = argv + optind;
	c.n_args = (size_t)(argc - optind);

	/* Everything below may hold a data key. */
	r = dmbyok_harden_process();
	if (r < 0)
		return dmbyok_exit_code(r);

	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		if (!strcmp(verb, verbs[i].name)) {
			r = verbs[i].run(&c);
			/* Every failure says something, even one a lower layer only returned. */
			if (r < 0 && !dmbyok_log_error_was_logged())
				log_error("%s failed: %s", verb, dmbyok_strerror(r));
			free(c.context);
			free(c.data_paths);
			if (r == CLI_POLICY_VIOLATED)
				return CLI_EXIT_POLICY_VIOLATED;
			return dmbyok_exit_code(r);
		}
	log_error("Unknown verb \"%s\".", verb);
	usage(stderr);
	return dmbyok_exit_code(-EINVAL);
}
