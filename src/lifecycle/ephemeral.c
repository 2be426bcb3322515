/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ephemeral: a dm-crypt mapping whose key is random and lives only in kernel memory, for
 * swap and scratch space. The key is generated into secret memory, handed to dm-crypt as a
 * logon key through the keyring (never as hex in the table), and that keyring entry is
 * invalidated right after the load: nothing outside dm-crypt ever holds it again, so the
 * device's contents are unrecoverable once the mapping is gone or the host powers off.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "dmbyok/hygiene.h"
#include "dmbyok/log.h"
#include "dmbyok/volume.h"
#include "internal.h"
#include "registry.h"

#define EPHEMERAL_KEY_BYTES 64 /* aes-xts-plain64 with two 256-bit AES keys */
#define DM_UUID_MAX         128

bool dmbyok_ephemeral_dm_uuid(const char *dm_uuid)
{
	return dm_uuid && !strncmp(dm_uuid, DMBYOK_EPHEMERAL_UUID_PREFIX,
	                           strlen(DMBYOK_EPHEMERAL_UUID_PREFIX));
}

static int random_key(struct secret **ret)
{
	_cleanup_secret_ struct secret *k = NULL;
	size_t have = 0;

	GUARD(dmbyok_secret_new(EPHEMERAL_KEY_BYTES, &k));
	/* Straight into locked memory: the kernel's CSPRNG, no user-space generator state. */
	while (have < k->size) {
		ssize_t n = getrandom(k->data + have, k->size - have, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return log_error_errno(n < 0 ? errno : EIO, "Cannot get random bytes: %m");
		have += (size_t)n;
	}
	*ret = TAKE_PTR(k);
	return 0;
}

/* Size in bytes and logical block size of a block device. */
static int block_geometry(const char *device, uint64_t *ret_size, uint32_t *ret_logical)
{
	struct stat st;
	int fd, ssz = 512, r = 0;

	fd = open(device, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_error_errno(errno, "Cannot open %s: %m", device);
	if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode))
		r = log_error_errno(ENOTBLK, "%s is not a block device.", device);
	else if (ioctl(fd, BLKGETSIZE64, ret_size) < 0 || ioctl(fd, BLKSSZGET, &ssz) < 0)
		r = log_error_errno(errno, "Cannot read the size of %s: %m", device);
	close(fd);
	*ret_logical = (uint32_t)ssz;
	return r;
}

static int choose_sector_size(const struct dmbyok_ephemeral_options *o, uint32_t logical,
                              uint32_t *ret)
{
	uint32_t s = o->sector_size;

	if (logical > 4096)
		return log_error_errno(
		    ENOTSUP,
		    "%s has %u-byte blocks; dm-crypt encrypts sectors of at most "
		    "4096 bytes.",
		    o->device, logical);
	if (!s) {
		*ret = 4096; /* fewer, larger crypto operations; swap pages are 4 KiB anyway */
		return 0;
	}
	if (s < 512 || s > 4096 || (s & (s - 1)))
		return log_error_errno(EINVAL,
		                       "--sector-size %u: use 512, 1024, 2048 or 4096 bytes.", s);
	if (s < logical)
		return log_error_errno(EINVAL,
		                       "--sector-size %u is smaller than the %u-byte blocks of %s.",
		                       s, logical, o->device);
	*ret = s;
	return 0;
}

static int check_name(const char *name)
{
	if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return log_error_errno(EINVAL, "\"%s\" is not a valid mapping name.",
		                       name ? name : "");
	if (strlen(DMBYOK_EPHEMERAL_UUID_PREFIX) + strlen(name) > DM_UUID_MAX)
		return log_error_errno(ENAMETOOLONG,
		                       "The mapping name %s is too long (at most %zu "
		                       "characters).",
		                       name, DM_UUID_MAX - strlen(DMBYOK_EPHEMERAL_UUID_PREFIX));
	return 0;
}

int dmbyok_ephemeral_open(const struct dmbyok_ephemeral_options *o)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	_cleanup_secret_ struct secret *key = NULL;
	_cleanup_free_ char *dm_uuid = NULL, *key_desc = NULL, *device = NULL;
	struct registry_entry e = { 0 };
	struct dm_crypt_info existing = { 0 };
	struct dm_crypt_params p;
	uint64_t size = 0;
	uint32_t logical = 512, sector_size = 0;
	int r;

	GUARD(check_name(o->name));
	if (!o->device || !*o->device)
		return log_error_errno(EINVAL, "No device given.");
	GUARD(dmbyok_dm_check_kernel_support());
	/* From the checks to the table load: nobody formats, opens or shreds it meanwhile. */
	GUARD(dmbyok_device_lock_path(o->device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock));
	r = dmbyok_dm_crypt_get_info(o->name, &existing);
	dmbyok_dm_crypt_info_done(&existing);
	if (r == 0 || r == -EINVAL)
		return log_error_errno(EEXIST, "A mapping named %s already exists.", o->name);
	if (r != -ENODEV)
		return log_error_errno(r, "Cannot look up mapping %s: %s", o->name,
		                       dmbyok_strerror(r));
	/* `close NAME` must not have to guess which of the two is meant. */
	if (dmbyok_registry_load(o->name, &e) == 0) {
		dmbyok_registry_entry_done(&e);
		return log_error_errno(EEXIST,
		                       "%s names a dmbyok volume torn down by dmbyokd: choose "
		                       "another name (or `dmbyok close %s` to forget it).",
		                       o->name, o->name);
	}
	/* In use, or holding a file system, LUKS or swap signature: its data would be gone. */
	GUARD(dmbyok_volume_check_blank(o->device, o->force));
	GUARD(block_geometry(o->device, &size, &logical));
	GUARD(choose_sector_size(o, logical, &sector_size));
	if (size / sector_size == 0)
		return log_error_errno(EINVAL, "%s is smaller than one %u-byte sector.", o->device,
		                       sector_size);
	device = realpath(o->device, NULL);
	ENSURE_ALLOC(device);

	if (asprintf(&dm_uuid, DMBYOK_EPHEMERAL_UUID_PREFIX "%s", o->name) < 0 ||
	    asprintf(&key_desc, DMBYOK_EPHEMERAL_KEY_PREFIX "%s", o->name) < 0)
		return -ENOMEM;
	GUARD(random_key(&key));
	p = (struct dm_crypt_params){
		.cipher = DMBYOK_DM_CIPHER,
		.key_desc = key_desc,
		.key_size = key->size,
		.device = device,
		.offset = 0, /* no header: every byte of the device is encrypted data */
		.length = size / sector_size * (sector_size / 512),
		.sector_size = sector_size,
	};
	/* The keyring entry exists for the table load only; dm-crypt keeps its own copy. */
	r = dmbyok_dm_crypt_create(o->name, dm_uuid, &p, key);
	dmbyok_secret_freep(&key);
	if (r < 0)
		return r;
	log_info("Mapped %s as /dev/mapper/%s with a random key that exists only in kernel "
	         "memory (" DMBYOK_DM_CIPHER ", %u-byte sectors). Its data is lost when the "
	         "mapping is closed or the host powers off.",
	         o->device, o->name, sector_size);
	return 0;
}

int dmbyok_ephemeral_is_mapping(const char *name)
{
	_cleanup_free_ char *type = NULL, *dm_uuid = NULL;
	int open_count, r;

	r = dmbyok_dm_get_target(name, &type, &dm_uuid, &open_count);
	if (r == -ENODEV || r == -EINVAL)
		return 0;
	if (r < 0)
		return r;
	/* No table at all: an `ephemeral` killed between creating the device and its load. */
	return dmbyok_ephemeral_dm_uuid(dm_uuid) && (!strcmp(type, "crypt") || !*type);
}

/* Reads NAME's target; -ENOENT (logged) unless it is an ephemeral mapping. */
static int get_ephemeral(const char *name, char **ret_type, int *ret_open_count)
{
	_cleanup_free_ char *type = NULL, *dm_uuid = NULL;
	int r;

	r = dmbyok_dm_get_target(name, &type, &dm_uuid, ret_open_count);
	if (r == -ENODEV ||
	    (r == 0 && (!dmbyok_ephemeral_dm_uuid(dm_uuid) || (strcmp(type, "crypt") && *type))))
		return log_error_errno(ENOENT, "No ephemeral mapping named %s.", name);
	if (r < 0)
		return log_error_errno(r, "Cannot read mapping %s: %s", name, dmbyok_strerror(r));
	*ret_type = TAKE_PTR(type);
	return 0;
}

int dmbyok_ephemeral_close(const char *name)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	_cleanup_free_ char *type = NULL;
	struct dm_crypt_info info = { 0 };
	int open_count = 0, r;

	GUARD(dmbyok_dm_check_kernel_support());
	GUARD(get_ephemeral(name, &type, &open_count));
	if (*type) {
		/* Under the lock of the device beneath it, like every change of a device. */
		r = dmbyok_dm_crypt_get_info(name, &info);
		if (r == 0)
			r = dmbyok_device_lock_devno(makedev(info.dev_major, info.dev_minor),
			                             DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock);
		dmbyok_dm_crypt_info_done(&info);
		if (r < 0)
			return r == -ENODEV ? log_error_errno(
			                          ENOENT, "No mapping named %s (any more).", name)
			                    : r;
		/* What was true before the lock may not be now. */
		free(type);
		type = NULL;
		GUARD(get_ephemeral(name, &type, &open_count));
	}
	/* Said at once, rather than after libdevmapper's retries of a remove bound to fail. */
	if (open_count > 0)
		return log_error_errno(EBUSY,
		                       "%s is in use (active swap, mounted, or held open): swapoff "
		                       "or unmount it first.",
		                       name);
	GUARD(dmbyok_dm_crypt_remove(name));
	if (*type)
		log_info("Closed %s: its key is gone from kernel memory, and with it its data.",
		         name);
	else
		log_info("Removed %s, an ephemeral mapping left without a table (an interrupted "
		         "`dmbyok ephemeral`).",
		         name);
	return 0;
}
