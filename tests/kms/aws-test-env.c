/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include "dmbyok/macro.h"
#include "aws-test-env.h"

const char *aws_test_need_env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "%s is not set: run this test through run-with-emulator.\n", name);
		exit(1);
	}
	return v;
}

void aws_test_env_reset(const struct aws_test_env *e)
{
	static const char *const vars[] = {
		"AWS_ACCESS_KEY_ID",
		"AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN",
		"AWS_PROFILE",
		"AWS_DEFAULT_PROFILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT",
		"AWS_ENDPOINT_URL",
		"AWS_DEFAULT_REGION",
		"AWS_ENDPOINT_URL_STS",
		"AWS_ROLE_ARN",
		"AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_ROLE_SESSION_NAME",
	};
	char path[512];

	for (size_t i = 0; i < ELEMENTSOF(vars); i++)
		unsetenv(vars[i]);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	setenv("AWS_REGION", "us-east-1", 1);
	setenv("AWS_ENDPOINT_URL_KMS", e->endpoint, 1);
	setenv("AWS_CA_BUNDLE", e->ca, 1);
	if (e->sts_endpoint)
		setenv("AWS_ENDPOINT_URL_STS", e->sts_endpoint, 1);
	snprintf(path, sizeof(path), "%s/no-such-credentials", e->dir);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	if (e->config) {
		setenv("AWS_CONFIG_FILE", e->config, 1);
	} else {
		snprintf(path, sizeof(path), "%s/no-such-config", e->dir);
		setenv("AWS_CONFIG_FILE", path, 1);
	}
}
