/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dmbyok/error.h"

enum dmbyok_error_class dmbyok_error_class(int r)
{
	switch (abs(r)) {
	case 0:
		return DMBYOK_OK;
	case EKEYREVOKED:
		return DMBYOK_ERR_KEY_REVOKED;
	case ETIMEDOUT:
	case ECONNREFUSED:
	case ECONNRESET:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EAGAIN:
	case EREMOTEIO:
	case EPROTO:
		return DMBYOK_ERR_KMS_TRANSIENT;
	case EKEYEXPIRED:
	case EKEYREJECTED:
	case ENOKEY:
		return DMBYOK_ERR_CREDENTIALS;
	case EBADMSG:
		return DMBYOK_ERR_WRONG_TOKEN;
	case EUCLEAN:
	case ENODATA:
		return DMBYOK_ERR_HEADER;
	case EBUSY:
	case EEXIST:
		return DMBYOK_ERR_BUSY;
	case ENOTSUP:
		return DMBYOK_ERR_NO_KERNEL;
	case EINVAL:
	case ENOENT:
	case E2BIG:
	case ERANGE:
	case ENOTBLK:
	case ENAMETOOLONG:
	case EPERM:
	case EACCES:
	case ENXIO:
	case ENOTEMPTY:
		return DMBYOK_ERR_INPUT;
	default:
		return DMBYOK_ERR_INTERNAL;
	}
}

static const char *const class_names[_DMBYOK_ERR_CLASS_MAX] = {
	[DMBYOK_OK] = "ok",
	[DMBYOK_ERR_INTERNAL] = "internal",
	[DMBYOK_ERR_INPUT] = "bad-input",
	[DMBYOK_ERR_KEY_REVOKED] = "key-revoked",
	[DMBYOK_ERR_KMS_TRANSIENT] = "kms-unreachable",
	[DMBYOK_ERR_CREDENTIALS] = "credentials",
	[DMBYOK_ERR_WRONG_TOKEN] = "wrong-token",
	[DMBYOK_ERR_HEADER] = "bad-header",
	[DMBYOK_ERR_BUSY] = "busy",
	[DMBYOK_ERR_NO_KERNEL] = "no-kernel-support",
};

const char *dmbyok_error_class_name(enum dmbyok_error_class c)
{
	if (c < 0 || c >= _DMBYOK_ERR_CLASS_MAX)
		return "internal";
	return class_names[c];
}

int dmbyok_exit_code(int r)
{
	/* The class enum is ordered so that its value is the documented exit code. */
	return (int)dmbyok_error_class(r);
}

const char *dmbyok_strerror(int r)
{
	switch (abs(r)) {
	case EKEYREVOKED:
		return "the KMS key is unusable (disabled, deleted, or access revoked)";
	case EKEYEXPIRED:
		return "this host's KMS credentials have expired";
	case EKEYREJECTED:
		return "this host's KMS credentials were rejected";
	case ENOKEY:
		return "no KMS credentials found";
	case EBADMSG:
		return "the wrapped data key does not belong to this volume";
	case EUCLEAN:
		return "the volume header or dmbyok token is corrupt";
	case ENODATA:
		return "not a dmbyok volume";
	case EREMOTEIO:
		return "the KMS returned a server error";
	case EPROTO:
		return "the KMS sent a malformed response";
	case ENOTSUP:
		return "the kernel lacks a required feature";
	default:
		return strerror(abs(r));
	}
}
