/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AWS KMS as a dmbyok KMS provider: the table that kms.c dispatches through, wiring the
 * key operations (aws-kms.c) and the per-volume grants (aws-grants.c).
 */
#include "aws.h"
#include "../kms-provider.h"

const struct kms_provider_ops dmbyok_aws_kms_provider_ops = {
	.name = "aws",
	.title = "AWS",
	.client_new = dmbyok_aws_client_new,
	.client_free = dmbyok_aws_client_free,
	.generate_data_key = dmbyok_aws_generate_data_key,
	.decrypt = dmbyok_aws_decrypt,
	.reencrypt = dmbyok_aws_reencrypt,
	.describe_key = dmbyok_aws_describe_key,
	.region = dmbyok_aws_region,
	.principal = dmbyok_aws_principal,
	.create_grant = dmbyok_aws_create_grant,
	.retire_grant = dmbyok_aws_retire_grant,
	.find_grant = dmbyok_aws_find_grant,
	.caller_principal = dmbyok_aws_caller_principal,
};
