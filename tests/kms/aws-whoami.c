/* SPDX-License-Identifier: Apache-2.0 */
/*
 * aws-whoami [--profile NAME]: the principal AWS (STS GetCallerIdentity) sees for the
 * credentials dmbyok's chain resolves, one ARN on stdout. On failure: the reason on stderr
 * and dmbyok's exit code. The credentials oracle test compares it with the AWS CLI.
 */
#include <stdio.h>
#include <string.h>

#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "../../src/kms/aws/aws.h"

int main(int argc, char **argv)
{
	struct aws_credentials_cache cache = {};
	_cleanup_(dmbyok_kms_http_freep) struct kms_http *h = NULL;
	_cleanup_free_ char *arn = NULL, *account = NULL;
	const char *ca = getenv("AWS_CA_BUNDLE");
	char why[1024] = "";
	int r;

	dmbyok_log_setup("aws-whoami");
	if (argc == 3 && !strcmp(argv[1], "--profile")) {
		cache.profile = strdup(argv[2]);
		if (!cache.profile)
			return 1;
	} else if (argc != 1) {
		fprintf(stderr, "usage: aws-whoami [--profile NAME]\n");
		return 2;
	}
	r = dmbyok_kms_http_new(ca && *ca ? ca : NULL, &h);
	if (r >= 0)
		r = dmbyok_aws_get_caller_identity(&cache, h, &arn, &account, why, sizeof(why));
	dmbyok_aws_credentials_cache_done(&cache);
	if (r < 0) {
		fprintf(stderr, "aws-whoami: %s (%s, %s)\n", why[0] ? why : "failed",
		        dmbyok_strerror(r), dmbyok_error_class_name(dmbyok_error_class(r)));
		return dmbyok_exit_code(r);
	}
	printf("%s\n", arn);
	return 0;
}
