/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <inttypes.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libdevmapper.h>

#include "dmbyok/dm.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"

static const struct {
	uint32_t flag;
	const char *arg;
} crypt_args[] = {
	{ DM_CRYPT_ALLOW_DISCARDS, "allow_discards" },
	{ DM_CRYPT_SAME_CPU_CRYPT, "same_cpu_crypt" },
	{ DM_CRYPT_SUBMIT_FROM_CRYPT_CPUS, "submit_from_crypt_cpus" },
	{ DM_CRYPT_NO_READ_WORKQUEUE, "no_read_workqueue" },
	{ DM_CRYPT_NO_WRITE_WORKQUEUE, "no_write_workqueue" },
};

int dmbyok_dm_crypt_flags_parse(const char *s, uint32_t *ret)
{
	_cleanup_free_ char *copy = strdup(s);
	uint32_t flags = 0;
	char *save = NULL;

	ENSURE_ALLOC(copy);
	if (strcmp(s, "none") != 0)
		for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
			size_t i;

			for (i = 0; i < ELEMENTSOF(crypt_args) && strcmp(w, crypt_args[i].arg); i++)
				;
			if (i == ELEMENTSOF(crypt_args))
				return log_error_errno(EINVAL, "Unknown performance flag \"%s\".",
				                       w);
			flags |= crypt_args[i].flag;
		}
	*ret = flags;
	return 0;
}

static void dm_log_cb(int level, const char *file, int line, int dm_errno_or_class, const char *fmt,
                      ...) _printf_(5, 6);
static void dm_log_cb(int level, const char *file, int line, int dm_errno_or_class, const char *fmt,
                      ...)
{
	char buf[512];
	va_list ap;

	(void)level, (void)file, (void)line, (void)dm_errno_or_class;
	if (dmbyok_log_get_max_level() < LOG_LEVEL_DEBUG)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_debug("libdevmapper: %s", buf);
}

/*
 * libdevmapper logs by itself; route it into our log. Before every call, not once:
 * libcryptsetup installs its own logger whenever it initialises its dm backend.
 */
static void dm_setup(void)
{
	dm_log_with_errno_init(dm_log_cb);
}

DEFINE_CLEANUP_FUNC(struct dm_task *, dm_task_destroy);
#define _cleanup_dm_task_ _cleanup_(dm_task_destroyp)

static int task_errno(struct dm_task *dmt)
{
	int e = dm_task_get_errno(dmt);

	return e > 0 ? -e : -EIO;
}

/* Runs a task, waiting for udev (when it runs) to finish with the node. */
static int run_with_udev(struct dm_task *dmt, bool udev_sync)
{
	uint32_t cookie = 0;
	int ok;

	if (udev_sync && !dm_task_set_cookie(dmt, &cookie, 0))
		return -EIO;
	ok = dm_task_run(dmt);
	if (udev_sync)
		(void)dm_udev_wait(cookie);
	return ok ? 0 : task_errno(dmt);
}

int dmbyok_dm_check_kernel_support(void)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	struct dm_versions *target, *last;
	char version[64];

	dm_setup();
	if (access("/dev/mapper/control", R_OK | W_OK) < 0 && errno == EACCES)
		return log_error_errno(EPERM,
		                       "Access to /dev/mapper/control denied: dmbyok must run "
		                       "as root.");
	if (access("/dev/mapper/control", F_OK) < 0 || !dm_driver_version(version, sizeof(version)))
		return log_error_errno(ENOTSUP, "The kernel has no device-mapper (no "
		                                "/dev/mapper/control): load dm-mod or use a kernel "
		                                "with CONFIG_BLK_DEV_DM.");

	dmt = dm_task_create(DM_DEVICE_LIST_VERSIONS);
	ENSURE_ALLOC(dmt);
	if (!dm_task_run(dmt))
		return log_error_errno(ENOTSUP, "Cannot list device-mapper targets.");
	target = dm_task_get_versions(dmt);
	do {
		if (!strcmp(target->name, "crypt"))
			return 0;
		last = target;
		target = (struct dm_versions *)((char *)target + target->next);
	} while (last != target);

	return log_error_errno(ENOTSUP, "The kernel's device-mapper has no crypt target: load "
	                                "the dm-crypt module (modprobe dm-crypt).");
}

int dmbyok_dm_luks2_uuid(const char *volume_uuid, const char *name, char **ret)
{
	char hex[64];
	size_t n = 0;

	for (const char *p = volume_uuid; *p && n < sizeof(hex) - 1; p++)
		if (*p != '-')
			hex[n++] = *p;
	hex[n] = '\0';
	if (asprintf(ret, DM_LUKS2_UUID_PREFIX "%s-%s", hex, name) < 0)
		return -ENOMEM;
	return 0;
}

static int format_params(const struct dm_crypt_params *p, char **ret)
{
	char opts[256] = "";
	unsigned n = 0;

	for (size_t i = 0; i < ELEMENTSOF(crypt_args); i++)
		if (p->flags & crypt_args[i].flag) {
			strcat(opts, " ");
			strcat(opts, crypt_args[i].arg);
			n++;
		}
	if (p->sector_size != 512) {
		snprintf(opts + strlen(opts), sizeof(opts) - strlen(opts), " sector_size:%u",
		         p->sector_size);
		n++;
	}
	/* <cipher> <key> <iv_offset> <device> <offset> [<#opt_params> <opt_params>] */
	if (asprintf(ret, "%s :%zu:logon:%s 0 %s %" PRIu64 " %u%s", p->cipher, p->key_size,
	             p->key_desc, p->device, p->offset, n, opts) < 0)
		return -ENOMEM;
	return 0;
}

int dmbyok_dm_crypt_create(const char *name, const char *dm_uuid, const struct dm_crypt_params *p,
                           const struct secret *key)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	_cleanup_free_ char *params = NULL;
	int32_t serial = 0;
	int r;

	dm_setup();
	GUARD(format_params(p, &params));

	dmt = dm_task_create(DM_DEVICE_CREATE);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_set_uuid(dmt, dm_uuid) ||
	    !dm_task_add_target(dmt, 0, p->length, "crypt", params) || !dm_task_secure_data(dmt))
		return log_error_errno(EINVAL, "Cannot prepare the dm-crypt table for %s.", name);

	GUARD(dmbyok_keyring_add_logon_key(p->key_desc, key, &serial));
	/* One ioctl creates, loads and resumes; libdevmapper removes the device if load fails. */
	r = run_with_udev(dmt, true);
	dmbyok_keyring_destroy_key(serial);
	if (r == -EEXIST)
		return log_error_errno(EEXIST, "A mapping named %s already exists.", name);
	if (r == -EBUSY)
		return log_error_errno(EBUSY, "%s is in use (mounted or mapped elsewhere).",
		                       p->device);
	if (r < 0)
		return log_error_errno(r, "The kernel refused the dm-crypt table for %s: %s", name,
		                       dmbyok_strerror(r));
	return 0;
}

static int simple_task(int type, const char *name, const char *message, bool udev_sync);

/* Loads `type params` as the table of existing mapping `name` and resumes it with it. */
static int reload_and_resume(const char *name, uint64_t length, const char *type,
                             const char *params)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	int r;

	dmt = dm_task_create(DM_DEVICE_RELOAD);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_add_target(dmt, 0, length, type, params) ||
	    !dm_task_secure_data(dmt))
		return -EINVAL;
	r = run_with_udev(dmt, false);
	if (r < 0)
		return log_error_errno(r, "The kernel refused the %s table for %s: %s", type, name,
		                       dmbyok_strerror(r));
	dm_task_destroy(TAKE_PTR(dmt));

	/*
	 * Swapping tables suspends a live device first; without skip_lockfs that suspend would
	 * freeze the file system on it, which fails for one that saw the error target's EIO.
	 */
	dmt = dm_task_create(DM_DEVICE_RESUME);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_skip_lockfs(dmt))
		return -EINVAL;
	r = run_with_udev(dmt, true);
	if (r < 0)
		return log_error_errno(r,
		                       "Cannot resume %s with its %s table: %s. Run `dmsetup "
		                       "resume %s`.",
		                       name, type, dmbyok_strerror(r), name);
	return 0;
}

int dmbyok_dm_crypt_reload(const char *name, const struct dm_crypt_params *p,
                           const struct secret *key)
{
	_cleanup_free_ char *params = NULL;
	int32_t serial = 0;
	int r;

	dm_setup();
	GUARD(format_params(p, &params));
	GUARD(dmbyok_keyring_add_logon_key(p->key_desc, key, &serial));
	r = reload_and_resume(name, p->length, "crypt", params);
	dmbyok_keyring_destroy_key(serial);
	return r;
}

int dmbyok_dm_replace_with_error(const char *name, uint64_t length)
{
	dm_setup();
	/* Held bios move to the new table on resume: they fail instead of waiting forever. */
	return reload_and_resume(name, length, "error", "");
}

int dmbyok_dm_remove_deferred(const char *name)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	int r;

	dm_setup();
	dmt = dm_task_create(DM_DEVICE_REMOVE);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_deferred_remove(dmt))
		return -EINVAL;
	r = run_with_udev(dmt, true);
	if (r < 0)
		return log_error_errno(r, "Cannot schedule the removal of %s: %s", name,
		                       dmbyok_strerror(r));
	return 0;
}

int dmbyok_dm_cancel_deferred_remove(const char *name)
{
	int r;

	dm_setup();
	r = simple_task(DM_DEVICE_TARGET_MSG, name, "@cancel_deferred_remove", false);
	/* ENXIO: no removal was pending (it is not an error to cancel nothing). */
	return r == -ENXIO ? 0 : r;
}

int dmbyok_dm_get_target(const char *name, char **ret_type, char **ret_dm_uuid, int *ret_open_count)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	_cleanup_free_ char *type_copy = NULL, *uuid_copy = NULL;
	struct dm_info di;
	uint64_t start, length;
	char *type = NULL, *params = NULL;
	const char *uuid;
	int r;

	dm_setup();
	dmt = dm_task_create(DM_DEVICE_TABLE);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name))
		return -EINVAL;
	if (!dm_task_run(dmt)) {
		r = task_errno(dmt);
		return r == -ENXIO ? -ENODEV : r;
	}
	if (!dm_task_get_info(dmt, &di) || !di.exists)
		return -ENODEV;
	(void)dm_get_next_target(dmt, NULL, &start, &length, &type, &params);
	uuid = dm_task_get_uuid(dmt);
	type_copy = strdup(type ? type : "");
	uuid_copy = strdup(uuid ? uuid : "");
	if (!type_copy || !uuid_copy)
		return -ENOMEM;
	*ret_type = TAKE_PTR(type_copy);
	*ret_dm_uuid = TAKE_PTR(uuid_copy);
	*ret_open_count = di.open_count;
	return 0;
}

int dmbyok_dm_crypt_remove(const char *name)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	int r;

	dm_setup();
	dmt = dm_task_create(DM_DEVICE_REMOVE);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_retry_remove(dmt))
		return -EINVAL;
	r = run_with_udev(dmt, true);
	if (r == -EBUSY)
		return log_error_errno(
		    EBUSY, "%s is in use (mounted or held open): unmount it first.", name);
	if (r < 0)
		return log_error_errno(r, "Cannot remove mapping %s: %s", name, dmbyok_strerror(r));
	return 0;
}

void dmbyok_dm_crypt_info_done(struct dm_crypt_info *info)
{
	free(info->name);
	free(info->dm_uuid);
	free(info->cipher);
	free(info->key_ref);
	free(info->device);
	*info = (struct dm_crypt_info){ 0 };
}

int dmbyok_device_node_from_sysfs(const char *sysfs_dir, char **ret)
{
	char path[4096], line[256];
	FILE *f;
	int r = -ENOENT;

	snprintf(path, sizeof(path), "%s/uevent", sysfs_dir);
	f = fopen(path, "re");
	if (!f)
		return negative_errno();
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "DEVNAME=", 8)) {
			line[strcspn(line, "\n")] = '\0';
			r = asprintf(ret, "/dev/%s", line + 8) < 0 ? -ENOMEM : 0;
			break;
		}
	fclose(f);
	return r;
}

/* The node of the mapping's underlying device "MAJ:MIN", else its /dev/block form. */
static char *device_node(const char *majmin)
{
	char dir[96], *node = NULL;

	snprintf(dir, sizeof(dir), "/sys/dev/block/%s", majmin);
	if (dmbyok_device_node_from_sysfs(dir, &node) < 0 &&
	    asprintf(&node, "/dev/block/%s", majmin) < 0)
		node = NULL;
	return node;
}

static int parse_crypt_params(const char *params, struct dm_crypt_info *info)
{
	char cipher[128], key[256], dev[64];
	unsigned long long iv_offset, offset;
	int consumed = 0;
	unsigned n_opts = 0;
	const char *p;

	if (sscanf(params, "%127s %255s %llu %63s %llu%n", cipher, key, &iv_offset, dev, &offset,
	           &consumed) != 5)
		return -EINVAL;
	info->cipher = strdup(cipher);
	/* Only a keyring reference is kept: a hex key (from --showkeys) is never copied. */
	info->key_ref = key[0] == ':' ? strdup(key) : strdup("-");
	info->device = device_node(dev);
	dmbyok_secure_wipe(key, sizeof(key));
	ENSURE(info->cipher && info->key_ref && info->device, ENOMEM);
	if (sscanf(dev, "%u:%u", &info->dev_major, &info->dev_minor) != 2)
		return -EINVAL;
	info->offset = offset;
	info->sector_size = 512;

	p = params + consumed;
	if (sscanf(p, " %u%n", &n_opts, &consumed) == 1) {
		p += consumed;
		for (unsigned i = 0; i < n_opts; i++) {
			char arg[64];

			if (sscanf(p, " %63s%n", arg, &consumed) != 1)
				break;
			p += consumed;
			if (!strncmp(arg, "sector_size:", 12))
				info->sector_size = (uint32_t)strtoul(arg + 12, NULL, 10);
			for (size_t j = 0; j < ELEMENTSOF(crypt_args); j++)
				if (!strcmp(arg, crypt_args[j].arg))
					info->flags |= crypt_args[j].flag;
		}
	}
	return 0;
}

int dmbyok_dm_crypt_get_info(const char *name, struct dm_crypt_info *ret)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	struct dm_crypt_info info = { 0 };
	struct dm_info di;
	uint64_t start, length;
	char *type = NULL, *params = NULL;
	const char *uuid;
	int r;

	dm_setup();
	dmt = dm_task_create(DM_DEVICE_TABLE);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_secure_data(dmt))
		return -EINVAL;
	if (!dm_task_run(dmt)) {
		r = task_errno(dmt);
		return r == -ENXIO ? -ENODEV : r; /* the kernel's word for "no such mapping" */
	}
	if (!dm_task_get_info(dmt, &di) || !di.exists)
		return -ENODEV;

	(void)dm_get_next_target(dmt, NULL, &start, &length, &type, &params);
	if (!type || strcmp(type, "crypt") != 0 || !params)
		return -EINVAL;

	r = parse_crypt_params(params, &info);
	if (r < 0) {
		dmbyok_dm_crypt_info_done(&info);
		return r;
	}
	uuid = dm_task_get_uuid(dmt);
	info.name = strdup(name);
	info.dm_uuid = strdup(uuid ? uuid : "");
	info.length = length;
	info.suspended = di.suspended;
	info.open_count = di.open_count;
	info.major = di.major;
	info.minor = di.minor;
	if (!info.name || !info.dm_uuid) {
		dmbyok_dm_crypt_info_done(&info);
		return -ENOMEM;
	}
	*ret = info;
	return 0;
}

void dmbyok_strv_free(char **l)
{
	if (!l)
		return;
	for (char **p = l; *p; p++)
		free(*p);
	free(l);
}

int dmbyok_dm_list_names(char ***ret_names)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;
	struct dm_names *names;
	char **l = NULL;
	size_t n = 0;
	unsigned next = 0;

	dm_setup();
	dmt = dm_task_create(DM_DEVICE_LIST);
	ENSURE_ALLOC(dmt);
	if (!dm_task_run(dmt))
		return task_errno(dmt);
	names = dm_task_get_names(dmt);

	l = calloc(1, sizeof(char *));
	ENSURE_ALLOC(l);
	if (names && names->dev) {
		do {
			char **nl;

			names = (struct dm_names *)((char *)names + next);
			next = names->next;
			nl = realloc(l, (n + 2) * sizeof(char *));
			if (!nl || !(nl[n] = strdup(names->name))) {
				dmbyok_strv_free(nl ? nl : l);
				return -ENOMEM;
			}
			nl[++n] = NULL;
			l = nl;
		} while (next);
	}
	*ret_names = l;
	return 0;
}

static int simple_task(int type, const char *name, const char *message, bool udev_sync)
{
	_cleanup_dm_task_ struct dm_task *dmt = NULL;

	dmt = dm_task_create(type);
	ENSURE_ALLOC(dmt);
	if (!dm_task_set_name(dmt, name) || !dm_task_secure_data(dmt))
		return -EINVAL;
	if (message && (!dm_task_set_sector(dmt, 0) || !dm_task_set_message(dmt, message)))
		return -EINVAL;
	return run_with_udev(dmt, udev_sync);
}

struct suspend_args {
	const char *name;
};

/* In the child: the suspend ioctl itself, which waits (interruptibly) for in-flight I/O. */
static int suspend_child(void *userdata)
{
	const struct suspend_args *a = userdata;
	_cleanup_dm_task_ struct dm_task *dmt = NULL;

	dmt = dm_task_create(DM_DEVICE_SUSPEND);
	if (!dmt)
		return -ENOMEM;
	/* The file system was frozen (or could not be) by the caller: no freeze under dm's mutex.
	 */
	if (!dm_task_set_name(dmt, a->name) || !dm_task_skip_lockfs(dmt))
		return -EINVAL;
	return dm_task_run(dmt) ? 0 : task_errno(dmt);
}

int dmbyok_dm_suspend(const char *name, unsigned timeout_ms)
{
	int r;

	dm_setup();
	r = dmbyok_run_bounded(suspend_child, &(struct suspend_args){ .name = name }, timeout_ms);
	if (r == -ETIMEDOUT)
		/* Busy, not a network timeout: the error taxonomy keeps ETIMEDOUT for the KMS. */
		return log_error_errno(EBUSY,
		                       "I/O to the device under %s did not complete within %u ms: "
		                       "it cannot be suspended, and its key stays in memory until "
		                       "that I/O completes or fails.",
		                       name, timeout_ms);
	if (r < 0)
		return log_error_errno(r, "Cannot suspend %s: %s", name, dmbyok_strerror(r));
	return 0;
}

int dmbyok_dm_crypt_wipe_key(const char *name)
{
	int r;

	dm_setup();
	/* dm-crypt accepts key messages only while suspended, so no I/O can be in flight. */
	r = simple_task(DM_DEVICE_TARGET_MSG, name, "key wipe", false);
	if (r < 0)
		return log_error_errno(r, "dm-crypt refused to wipe the key of %s: %s", name,
		                       dmbyok_strerror(r));
	return 0;
}

int dmbyok_dm_resume(const char *name)
{
	int r;

	dm_setup();
	r = simple_task(DM_DEVICE_RESUME, name, NULL, true);
	if (r < 0)
		return log_error_errno(r, "Cannot resume %s: %s. Run `dmsetup resume %s`.", name,
		                       dmbyok_strerror(r), name);
	return 0;
}

/* In the child: the steps must not wait for the (suspended) device, but stay bounded anyway. */
static int drop_cache_child(void *userdata)
{
	const struct dm_crypt_info *info = userdata;
	char path[64];
	int fd, r = 0;

	/*
	 * The mapping's own buffer cache (raw reads, file-system metadata). Not BLKFLSBUF: it
	 * syncs the mounted file system first, whose cache flush waits on the suspended device.
	 */
	snprintf(path, sizeof(path), "/dev/dm-%u", info->minor);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		r = -posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	/* ...and file pages: the kernel has no per-device call, only the global clean drop. */
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1", 1) != 1)
		r = negative_errno();
	if (fd >= 0)
		close(fd);
	return r;
}

int dmbyok_dm_drop_page_cache(const struct dm_crypt_info *info, unsigned timeout_ms)
{
	int r = dmbyok_run_bounded(drop_cache_child, (void *)info, timeout_ms);

	if (r < 0)
		return log_warning_errno(r,
		                         "Could not drop the page cache of %s (%s): pages read "
		                         "before the lock may still be served until it is closed.",
		                         info->name, dmbyok_strerror(r));
	return 0;
}

int dmbyok_dm_crypt_unlock(const char *name, const char *key_desc, const struct secret *key)
{
	_cleanup_free_ char *msg = NULL;
	int32_t serial = 0;
	int r;

	dm_setup();
	if (asprintf(&msg, "key set :%zu:logon:%s", key->size, key_desc) < 0)
		return -ENOMEM;
	GUARD(dmbyok_keyring_add_logon_key(key_desc, key, &serial));
	r = simple_task(DM_DEVICE_TARGET_MSG, name, msg, false);
	dmbyok_keyring_destroy_key(serial);
	if (r < 0)
		return log_error_errno(r, "dm-crypt refused the key for %s: %s", name,
		                       dmbyok_strerror(r));
	r = simple_task(DM_DEVICE_RESUME, name, NULL, true);
	if (r < 0)
		return log_error_errno(r,
		                       "%s has its key again but did not resume: %s. Run "
		                       "`dmsetup resume %s`.",
		                       name, dmbyok_strerror(r), name);
	return 0;
}
