/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A dmbyok volume on disk: a standard LUKS2 header (libcryptsetup) whose volume key is the
 * DEK, with one keyslot unlocked by the DEK itself and one "dmbyok" token holding the
 * KMS-wrapped DEK. This layer reads and writes headers; it never talks to a KMS or the
 * device-mapper.
 */

#include <stdbool.h>
#include <stdint.h>

#include "dmbyok/macro.h"
#include "dmbyok/secret.h"
#include "dmbyok/token.h"

struct crypt_device;

#define DMBYOK_CIPHER      "aes"
#define DMBYOK_CIPHER_MODE "xts-plain64"
#define DMBYOK_DM_CIPHER   DMBYOK_CIPHER "-" DMBYOK_CIPHER_MODE /* as dm-crypt names it */

struct volume {
	struct crypt_device *cd;
	char *device;     /* the data device */
	char *header;     /* detached header file, or NULL when on the data device */
	const char *uuid; /* the LUKS2 UUID (owned by cd) */
	int token_id;     /* LUKS2 token number of the dmbyok token */
	struct dmbyok_token *token;
	char *binding;             /* this header's binding (dmbyok_volume_binding) */
	uint64_t data_offset;      /* in 512-byte sectors */
	uint64_t data_sectors;     /* size of the encrypted area, in 512-byte sectors */
	uint32_t sector_size;      /* encryption sector size, bytes */
	uint32_t activation_flags; /* LUKS2 persistent CRYPT_ACTIVATE_* flags */
};

void dmbyok_volume_free(struct volume *v);
DEFINE_CLEANUP_FUNC(struct volume *, dmbyok_volume_free);
#define _cleanup_volume_ _cleanup_(dmbyok_volume_freep)

/*
 * Load a dmbyok volume's header (from `header` when detached). Errors: -ENOENT no such
 * device, -ENODATA not LUKS2 or no dmbyok token, -EUCLEAN corrupt header or token, or a
 * re-encryption in progress (unmet LUKS2 requirements).
 */
int dmbyok_volume_load(const char *device, const char *header, struct volume **ret);

/*
 * The header binding: the LUKS2 digest of segment 0 (type, hash, iterations, salt, value)
 * and segment 0 itself (type, offset, size, IV tweak, cipher, sector size) as one string.
 * Any change of volume key or data segment changes it; reading it costs no KDF.
 */
int dmbyok_volume_binding(struct crypt_device *cd, char **ret);
/*
 * -EUCLEAN unless a version 2 token's binding fingerprint is this header's: refuses a
 * re-encrypted header before any KMS call. Version 1 tokens pass (see verify_key).
 */
int dmbyok_volume_check_binding(const struct volume *v);
/* The LUKS2 digest check of a DEK (~125 ms PBKDF2): -EUCLEAN when it is not the key. */
int dmbyok_volume_verify_key(const struct volume *v, const struct secret *dek);

/*
 * Refuse a device that is in use or carries any signature (file system, LUKS, partition
 * table, RAID...) unless `force`: -EBUSY, -ENOTEMPTY with the signature named.
 */
int dmbyok_volume_check_blank(const char *device, bool force);

/* -EBUSY unless the device can be opened exclusively (not mounted, mapped or held). */
int dmbyok_volume_check_unused(const char *device);

/* A fresh random (version 4) UUID for a new header. */
int dmbyok_volume_new_uuid(char ret[static 37]);

struct volume_format_params {
	const char *device;
	const char *header; /* detached header file or NULL */
	const char *uuid;   /* from dmbyok_volume_new_uuid(): the token's context names it */
	const struct secret *dek;
	struct dmbyok_token *token;
	char *binding;
	/* this header's binding (dmbyok_volume_binding) */ /* keyslot is filled in */
	uint32_t activation_flags; /* persisted CRYPT_ACTIVATE_* performance flags */
};

/*
 * Write a LUKS2 header with the DEK as volume key, the DEK keyslot and the token. On any
 * failure the header area is restored byte for byte, so the device is as it was.
 */
int dmbyok_volume_format(const struct volume_format_params *p);

/* Replace the token (after a re-wrap), keeping its LUKS2 token number. */
int dmbyok_volume_update_token(struct volume *v, const struct dmbyok_token *t);

/* Route libcryptsetup's messages into dmbyok's log. */
void dmbyok_volume_setup_logging(struct crypt_device *cd);
