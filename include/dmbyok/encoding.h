/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Text forms of values: base64 and hex (encoding uses OpenSSL's codec; decoding is dmbyok's
 * own, strict one), and bounded numbers given as options.
 */

#include <stddef.h>
#include <stdint.h>

/* A newly allocated NUL-terminated base64 string (standard alphabet, padded). */
int dmbyok_base64_encode(const void *data, size_t n, char **ret);

/*
 * Decode base64 into out[0..out_size); returns the decoded length, -EINVAL for input that
 * is not the canonical encoding (RFC 4648 standard alphabet, padded, nothing else: no
 * whitespace, '=' only as the last one or two characters, zero bits under the padding),
 * -E2BIG when it would not fit. Writes only into `out`, so usable with secret memory.
 */
int dmbyok_base64_decode(const char *b64, size_t b64_len, void *out, size_t out_size);

/* Lower-case hex of data into a new string (never use for secrets). */
int dmbyok_hex_encode(const void *data, size_t n, char **ret);

/*
 * A decimal number of `unit` ("seconds", ...) in [min, max] given to --option: -EINVAL with
 * a message naming the option and the range otherwise (signs, spaces, overflow included).
 */
int dmbyok_parse_option_uint(const char *option, const char *s, unsigned min, unsigned max,
                             const char *unit, unsigned *ret);
