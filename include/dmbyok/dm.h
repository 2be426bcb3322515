/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * dm-crypt mappings through libdevmapper, and the kernel keyring that carries their keys.
 * The key never appears in a table or an ioctl: a table names a logon key
 * (":64:logon:dmbyok:<uuid>") that this process adds to its thread keyring just before
 * the table load (or `key set` message) and invalidates right after; dm-crypt keeps its
 * own copy in kernel memory until the mapping is removed or `key wipe` is sent.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "dmbyok/macro.h"
#include "dmbyok/secret.h"

/* dm-crypt optional parameters dmbyok may set (values match libcryptsetup's flags). */
#define DM_CRYPT_ALLOW_DISCARDS         (UINT32_C(1) << 3)
#define DM_CRYPT_SAME_CPU_CRYPT         (UINT32_C(1) << 6)
#define DM_CRYPT_SUBMIT_FROM_CRYPT_CPUS (UINT32_C(1) << 7)
#define DM_CRYPT_NO_READ_WORKQUEUE      (UINT32_C(1) << 24)
#define DM_CRYPT_NO_WRITE_WORKQUEUE     (UINT32_C(1) << 25)

/* dm UUIDs of LUKS2 mappings, as cryptsetup makes them: CRYPT-LUKS2-<uuid hex>-<name>. */
#define DM_LUKS2_UUID_PREFIX "CRYPT-LUKS2-"

struct dm_crypt_params {
	const char *cipher;   /* "aes-xts-plain64" */
	const char *key_desc; /* logon key description, e.g. "dmbyok:<uuid>" */
	size_t key_size;      /* bytes */
	const char *device;   /* the underlying block device */
	uint64_t offset;      /* data offset, 512-byte sectors */
	uint64_t length;      /* mapping length, 512-byte sectors */
	uint32_t sector_size; /* encryption sector size, bytes */
	uint32_t flags;       /* DM_CRYPT_* */
};

/* What the kernel reports about a dm-crypt mapping. */
struct dm_crypt_info {
	char *name;
	char *dm_uuid;
	char *cipher;
	char *key_ref; /* ":64:logon:dmbyok:..." as the table names the key, never key bytes */
	char *device;  /* "/dev/block/MAJ:MIN" of the underlying device */
	uint64_t offset;
	uint64_t length;
	uint32_t sector_size;
	uint32_t flags;
	bool suspended;
	int open_count;
	unsigned major, minor; /* of the mapping itself */
};

void dmbyok_dm_crypt_info_done(struct dm_crypt_info *info);

/* -ENOTSUP with a clear message when the kernel has no device-mapper or no crypt target. */
int dmbyok_dm_check_kernel_support(void);

/* The dm UUID cryptsetup uses for a LUKS2 mapping, so `cryptsetup status/close` know it. */
int dmbyok_dm_luks2_uuid(const char *volume_uuid, const char *name, char **ret);

/*
 * Create and activate a mapping whose key is `key`, passed through the kernel keyring.
 * -EEXIST when `name` exists. On failure nothing is left behind.
 */
int dmbyok_dm_crypt_create(const char *name, const char *dm_uuid, const struct dm_crypt_params *p,
                           const struct secret *key);
int dmbyok_dm_crypt_remove(const char *name);

/* -ENODEV when there is no such mapping, -EINVAL when it is not a crypt mapping. */
int dmbyok_dm_crypt_get_info(const char *name, struct dm_crypt_info *ret);

/* Names of all device-mapper devices (NULL-terminated, free with dmbyok_strv_free()). */
int dmbyok_dm_list_names(char ***ret_names);
void dmbyok_strv_free(char **l);

/* Freeze file systems, flush, suspend I/O, then drop the key from dm-crypt's memory. */
int dmbyok_dm_crypt_lock(const char *name);
/* Hand dm-crypt the key again (through the keyring) and resume I/O. */
int dmbyok_dm_crypt_unlock(const char *name, const char *key_desc, const struct secret *key);

/* The thread-keyring logon key used for one table load or `key set` message. */
int dmbyok_keyring_add_logon_key(const char *description, const struct secret *key,
                                 int32_t *ret_serial);
void dmbyok_keyring_destroy_key(int32_t serial);
