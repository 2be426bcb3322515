/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * One error type for the whole project: a negative errno. The values below are chosen so
 * that every failure falls into exactly one class of dmbyok's taxonomy, which the CLI maps
 * to its exit code and the agent to its policy (lock on revocation, ride out an outage).
 *
 *   class            errno values                              examples
 *   KEY_REVOKED      EKEYREVOKED                               Disabled, KMSInvalidState,
 *                                                              NotFound, AccessDenied,
 *                                                              IncorrectKey
 *   KMS_TRANSIENT    ETIMEDOUT ECONNREFUSED ECONNRESET         network, 5xx, Throttling,
 *                    EHOSTUNREACH ENETUNREACH EAGAIN           KMSInternal, KeyUnavailable,
 *                    EREMOTEIO EPROTO                          DependencyTimeout
 *   CREDENTIALS      EKEYEXPIRED EKEYREJECTED ENOKEY           ExpiredToken,
 *                                                              UnrecognizedClient,
 *                                                              InvalidSignature, none found
 *   WRONG_TOKEN      EBADMSG                                   swapped token, wrong context,
 *                                                              key check value mismatch
 *   HEADER           EUCLEAN ENODATA                           corrupt header or token,
 *                                                              not a dmbyok volume
 *   BUSY             EBUSY EEXIST                              device in use, name taken
 *   NO_KERNEL        ENOTSUP                                   no dm-crypt / keyring / xts
 *   INPUT            EINVAL ENOENT ENOTEMPTY ENOTBLK ...       bad arguments or config,
 *                                                              a device that holds data
 *   INTERNAL         anything else                             ENOMEM, EIO
 */

enum dmbyok_error_class {
	DMBYOK_OK = 0,
	DMBYOK_ERR_INTERNAL,
	DMBYOK_ERR_INPUT,
	DMBYOK_ERR_KEY_REVOKED,
	DMBYOK_ERR_KMS_TRANSIENT,
	DMBYOK_ERR_CREDENTIALS,
	DMBYOK_ERR_WRONG_TOKEN,
	DMBYOK_ERR_HEADER,
	DMBYOK_ERR_BUSY,
	DMBYOK_ERR_NO_KERNEL,
	_DMBYOK_ERR_CLASS_MAX,
};

/* Which class a (negative or positive) errno belongs to. */
enum dmbyok_error_class dmbyok_error_class(int r);

/* Short stable name of a class ("key-revoked", ...), used in JSON output and logs. */
const char *dmbyok_error_class_name(enum dmbyok_error_class c);

/*
 * The CLI's exit code for a result: 0 success, 1 internal, 2 bad input, 3 key revoked,
 * 4 KMS unreachable, 5 credentials, 6 wrong token, 7 header, 8 busy, 9 no kernel support.
 */
int dmbyok_exit_code(int r);

/* strerror() for our negative errno, with dmbyok's wording for the errnos it reuses. */
const char *dmbyok_strerror(int r);
