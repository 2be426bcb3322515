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
	char *device;  /* node of the underlying device (/dev/vda), from sysfs */
	unsigned dev_major, dev_minor; /* of the underlying device */
	uint64_t offset;
	uint64_t length;
	uint32_t sector_size;
	uint32_t flags;
	bool suspended;
	int open_count;
	unsigned major, minor; /* of the mapping itself */
};

void dmbyok_dm_crypt_info_done(struct dm_crypt_info *info);

/* "no_read_workqueue,allow_discards,..." (dm-crypt's own names) or "none" to DM_CRYPT_*. */
int dmbyok_dm_crypt_flags_parse(const char *s, uint32_t *ret);

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

/*
 * The steps of a lock, each bounded or instant, composed by the lifecycle layer:
 * suspend without dm's own freeze (the caller froze the file system, or could not), in a
 * child so a stalled disk costs at most timeout_ms (-ETIMEDOUT, nothing changed); then
 * `key wipe`, which dm-crypt accepts only while suspended; then the page cache drop.
 */
int dmbyok_dm_suspend(const char *name, unsigned timeout_ms);
int dmbyok_dm_crypt_wipe_key(const char *name);
int dmbyok_dm_resume(const char *name);
/*
 * Drop cached plaintext of a locked mapping: its buffer cache (fadvise DONTNEED) and the clean
 * page cache (vm.drop_caches=1, system-wide: the kernel has no per-device call). Pages
 * mapped by running processes stay until they unmap or the mapping is torn down.
 */
int dmbyok_dm_drop_page_cache(const struct dm_crypt_info *info, unsigned timeout_ms);

/*
 * File systems on a mapping. mountpoint: the first mount of device MAJ:MIN in this mount
 * namespace (1), or none (0, *ret NULL). freeze: FIFREEZE from a child within timeout_ms
 * (-ETIMEDOUT: still syncing on a stalled disk; the child then thaws by itself once its
 * freeze completes, so nothing stays frozen). thaw: FITHAW, 0 when it was not frozen.
 */
int dmbyok_fs_mountpoint(unsigned maj, unsigned min, char **ret);
int dmbyok_fs_freeze(const char *mountpoint, unsigned timeout_ms);
int dmbyok_fs_thaw(const char *mountpoint);
/*
 * 0 when one 4 KiB direct read of `node` completes within timeout_ms, -ETIMEDOUT when the
 * device is stalled. A freeze writes (ext4 commits its superblock), so freezing a file
 * system over a stalled device would put I/O in flight that then blocks the suspend too.
 */
int dmbyok_device_responds(const char *node, unsigned timeout_ms);
/*
 * The node the kernel names a block device by ("/dev/vda"), from the DEVNAME of the uevent
 * in its sysfs directory (e.g. /sys/dev/block/MAJ:MIN): /dev/block links exist only where
 * udev runs. -ENOENT when the uevent names none, the errno of opening it otherwise.
 */
int dmbyok_device_node_from_sysfs(const char *sysfs_dir, char **ret);

/*
 * Teardown and reprovision of a mapping whose key is revoked, keeping its name and dm UUID
 * while something holds it open. replace_with_error: the table becomes the `error` target
 * (held and new I/O fail with EIO: nothing of the volume stays in the kernel), resumed.
 * remove_deferred: removed now if unused, else as soon as its last user closes it.
 * cancel_deferred_remove: keep it after all (0 when no removal was pending). crypt_reload:
 * the crypt table again, its key through the keyring, resumed.
 */
int dmbyok_dm_replace_with_error(const char *name, uint64_t length);
int dmbyok_dm_remove_deferred(const char *name);
int dmbyok_dm_cancel_deferred_remove(const char *name);
int dmbyok_dm_crypt_reload(const char *name, const struct dm_crypt_params *p,
                           const struct secret *key);
/* Any mapping's first target type ("crypt", "error", ...), dm UUID and open count. */
int dmbyok_dm_get_target(const char *name, char **ret_type, char **ret_dm_uuid,
                         int *ret_open_count);

/* Hand dm-crypt the key again (through the keyring) and resume I/O. */
int dmbyok_dm_crypt_unlock(const char *name, const char *key_desc, const struct secret *key);

/* The thread-keyring logon key used for one table load or `key set` message. */
int dmbyok_keyring_add_logon_key(const char *description, const struct secret *key,
                                 int32_t *ret_serial);
void dmbyok_keyring_destroy_key(int32_t serial);
