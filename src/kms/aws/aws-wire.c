/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every AWS service's responses share, for KMS, STS and the credential endpoints
 * alike: error codes and their place in dmbyok's error taxonomy, and taking a secret
 * string out of a JSON body before any JSON library copies it to the heap (the scanner is
 * shared with the other providers: ../kms-util.c).
 */
#include <stdbool.h>
#include <string.h>

#include "aws.h"
#include "../kms-util.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"

int dmbyok_aws_error_code(const char *type, char **ret)
{
	const char *p, *hash;
	char *s;

	ENSURE(type, EINVAL);
	/* "aws.protocoltests#FooError:http://..." -> "FooError" */
	hash = strrchr(type, '#');
	p = hash ? hash + 1 : type;
	s = strndup(p, strcspn(p, ":"));
	ENSURE_ALLOC(s);
	*ret = s;
	return 0;
}

static bool code_in(const char *code, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(code, *list))
			return true;
	return false;
}

int dmbyok_aws_error_to_errno(const char *code, long status)
{
	static const char *const revoked[] = {
		"DisabledException",
		"KMSInvalidStateException",
		"NotFoundException",
		"AccessDeniedException",
		NULL,
	};
	/* The blob is not that key's (a wrong or altered token): never a revocation. */
	static const char *const not_this_key[] = { "InvalidCiphertextException",
		                                    "IncorrectKeyException", NULL };
	static const char *const remote[] = {
		"DependencyTimeoutException", "KMSInternalException",
		"KeyUnavailableException",    "InternalFailure",
		"ServiceUnavailable",         NULL,
	};
	static const char *const rejected[] = {
		"UnrecognizedClientException",
		"InvalidSignatureException",
		"IncompleteSignatureException",
		"MissingAuthenticationTokenException",
		"InvalidClientTokenId",
		"SignatureDoesNotMatch",
		/* a signature outside the allowed window: this host's clock is off */
		"RequestExpired",
		NULL,
	};
	static const char *const expired[] = { "ExpiredTokenException", "ExpiredToken", NULL };

	if (code && *code) {
		if (code_in(code, revoked))
			return -EKEYREVOKED;
		if (code_in(code, not_this_key))
			return -EBADMSG;
		if (code_in(code, remote))
			return -EREMOTEIO;
		if (code_in(code, expired))
			return -EKEYEXPIRED;
		if (code_in(code, rejected))
			return -EKEYREJECTED;
		if (dmbyok_aws_error_is_retryable(code, 0))
			return -EAGAIN; /* throttling (the transient codes are caught above) */
		/* ValidationException, InvalidKeyUsage, InvalidArn, InvalidGrantToken, ... */
		if (status >= 400 && status < 500)
			return -EINVAL;
	}
	if (status == 429)
		return -EAGAIN;
	if (status >= 500)
		return -EREMOTEIO;
	return -EPROTO;
}

int dmbyok_aws_json_take_string(struct secret *body, const char *field, struct secret **ret)
{
	return dmbyok_kms_json_take_plain_string(body, field, ret);
}

bool dmbyok_aws_error_is_retryable(const char *code, long status)
{
	static const char *const retryable[] = {
		/* throttling, as the SDKs' standard mode lists it */
		"Throttling",
		"ThrottlingException",
		"ThrottledException",
		"RequestThrottledException",
		"TooManyRequestsException",
		"ProvisionedThroughputExceededException",
		"TransactionInProgressException",
		"RequestLimitExceeded",
		"BandwidthLimitExceeded",
		"LimitExceededException",
		"RequestThrottled",
		"SlowDown",
		"PriorRequestNotComplete",
		"EC2ThrottledException",
		/* transient */
		"RequestTimeout",
		"RequestTimeoutException",
		"InternalError",
		/* KMS's own service-side errors */
		"KMSInternalException",
		"KeyUnavailableException",
		"DependencyTimeoutException",
	};

	if (status == 500 || status == 502 || status == 503 || status == 504)
		return true;
	if (!code)
		return false;
	for (size_t i = 0; i < ELEMENTSOF(retryable); i++)
		if (!strcmp(code, retryable[i]))
			return true;
	return false;
}
