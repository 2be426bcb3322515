/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The AWS environment of the tests that run against the KMS emulator (run-with-emulator). */

/* getenv(name), or exit 1 saying the test must run through run-with-emulator. */
const char *aws_test_need_env(const char *name);

struct aws_test_env {
	const char *endpoint;     /* the emulator: AWS_ENDPOINT_URL_KMS */
	const char *ca;           /* its CA: AWS_CA_BUNDLE */
	const char *dir;          /* a directory for the test's files */
	const char *config;       /* AWS_CONFIG_FILE; NULL: one that does not exist */
	const char *sts_endpoint; /* AWS_ENDPOINT_URL_STS; NULL: unset */
};

/*
 * A clean AWS environment: every credential, profile, container, web-identity and
 * endpoint variable unset, then the emulator's endpoint and CA, region us-east-1, no
 * instance metadata, no shared credentials file.
 */
void aws_test_env_reset(const struct aws_test_env *e);
