/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Helpers the cloud KMS providers (aws/, gcp/, azure/) share and that belong to none of
 * them: base64 into locked memory, secret strings taken out of JSON bodies before a JSON
 * library copies them, the rule for URLs a credential may be sent to, small secret files
 * read into locked memory, and RS256 JWTs (Google's service-account assertion, Azure's
 * certificate client assertion). Internal to the library.
 */

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "dmbyok/secret.h"

/* Base64 (standard, padded) of data into a new NUL-terminated secret. */
int dmbyok_kms_base64_secret(const void *data, size_t n, struct secret **ret);
/* Base64url without padding (JWT) of data, into a new heap string (not for secrets). */
int dmbyok_kms_base64url(const void *data, size_t n, char **ret);

/*
 * Takes a top-level string member out of a JSON object held in locked memory, before any
 * JSON library copies it: its value, unescaped (\n, \", \\, \/, \uXXXX for ASCII), goes
 * into a new NUL-terminated secret and its text in `body` is overwritten with 'A's (the
 * document stays valid JSON). -ENOENT when absent, -EPROTO when malformed or not a string.
 */
int dmbyok_kms_json_take_string(struct secret *body, const char *field, struct secret **ret);
/*
 * The same for values that never need escapes (base64, AWS keys and tokens): a value with a
 * backslash is refused (-EPROTO), so the secret is exactly the bytes on the wire.
 */
int dmbyok_kms_json_take_plain_string(struct secret *body, const char *field, struct secret **ret);

/* Whether a URL's host is a loopback address (where plain HTTP is tolerated). */
bool dmbyok_kms_url_is_loopback(const char *url);
/* A URL a credential may go to: https://, or plain http:// to loopback only; no userinfo. */
bool dmbyok_kms_url_acceptable(const char *url);

/*
 * A regular file of less than max_size bytes read whole into a new locked secret,
 * NUL-terminated: private keys, tokens and credentials files never pass through stdio's
 * unlocked buffers. An empty file gives an empty secret (an empty AWS config is valid;
 * whether an empty key or token is, the caller says). -EINVAL when the file is not regular
 * or too large; open/read errnos otherwise.
 */
int dmbyok_kms_read_secret_file(const char *path, size_t max_size, struct secret **ret);

/*
 * The unencrypted RSA private key of a PEM text (NUL-terminated, locked). OpenSSL is told
 * never to prompt: an encrypted key is a configuration error. -EINVAL when there is no such
 * key, -ENOMEM.
 */
int dmbyok_kms_rsa_key_from_pem(const struct secret *pem, EVP_PKEY **ret);

/*
 * An RS256 JWT of `claims`, signed with `key`, as a NUL-terminated secret (an assertion is
 * a credential while it is valid). The header is {"alg":"RS256","typ":"JWT"} and, when
 * key_member is not NULL, key_member: key_value (Google's "kid", Azure's "x5t").
 * -EIO when OpenSSL cannot sign.
 */
int dmbyok_kms_jwt_sign_rs256(EVP_PKEY *key, const char *key_member, const char *key_value,
                              json_object *claims, struct secret **ret);
