/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shred: make a volume's key unrecoverable by overwriting its LUKS2 header, both copies,
 * and its keyslot area with zeros on the disk. The wrapped DEK lives only in the token in
 * the header's JSON areas, and the DEK keyslot only in the keyslot area, so once they are
 * gone nothing can decrypt the data, whatever becomes of the customer key.
 *
 * Under the device's lock and an exclusive open of the device, from the checks to the end
 * of the wipe. Every refusal comes before the first write; after it, a re-run finishes the
 * job (see wipe_order below for why, and when it needs --force).
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <libcryptsetup.h>

#include "dmbyok/agent.h"
#include "dmbyok/hygiene.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"
#include "dmbyok/volume.h"
#include "internal.h"
#include "registry.h"

#define BINARY_HEADER_BYTES 4096ULL
/* LUKS2's default metadata area and the end of its default keyslot area (dmbyok's layout). */
#define DEFAULT_METADATA_BYTES (16ULL << 10)
#define DEFAULT_HEADER_AREA    (16ULL << 20)
#define WIPE_CHUNK             (1U << 20)

#define MAX(a, b) ((a) > (b) ? (a) : (b))

void dmbyok_shred_plan_done(struct dmbyok_shred_plan *p)
{
	free(p->device);
	free(p->header);
	free(p->volume_uuid);
	free(p->key_arn);
	free(p->region);
	free(p->grant_id);
	dmbyok_strv_free(p->forgotten);
	for (size_t i = 0; i < p->n_ranges; i++)
		free(p->ranges[i].path);
	*p = (struct dmbyok_shred_plan){ 0 };
}

/* Bytes in a block device or regular file. */
static int target_size(int fd, const char *path, uint64_t *ret)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return log_error_errno(errno, "Cannot stat %s: %m", path);
	if (S_ISREG(st.st_mode)) {
		*ret = (uint64_t)st.st_size;
		return 0;
	}
	if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, ret) == 0)
		return 0;
	return log_error_errno(ENOTBLK, "%s is neither a block device nor a file.", path);
}

/*
 * A mapping stacked on the device (a dmbyok or cryptsetup volume that is open, an ephemeral
 * mapping, LVM...) must be closed first: shredding under it would leave the kernel a key
 * for data whose header is gone, and the operator a mapping that lies.
 */
static int refuse_holders(dev_t devno, const char *device)
{
	_cleanup_free_ char *dir = NULL;
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (asprintf(&dir, "/sys/dev/block/%u:%u/holders", major(devno), minor(devno)) < 0)
		return -ENOMEM;
	d = opendir(dir);
	if (!d)
		return 0; /* no holders directory: nothing can hold it */
	while (r == 0 && (de = readdir(d))) {
		char path[PATH_MAX], name[256] = "";
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/block/%s/dm/name", de->d_name);
		f = fopen(path, "re");
		if (f && fgets(name, sizeof(name), f))
			name[strcspn(name, "\n")] = '\0';
		if (f)
			fclose(f);
		if (*name)
			r = log_error_errno(
			    EBUSY,
			    "%s is open as mapping %s: close it first (`dmbyok close "
			    "%s`, after unmounting or swapoff). Nothing was changed.",
			    device, name, name);
		else
			r = log_error_errno(EBUSY,
			                    "%s is held by %s (a RAID, bcache or other stacked "
			                    "device): stop that first. Nothing was changed.",
			                    device, de->d_name);
	}
	closedir(d);
	return r;
}

/*
 * The dmbyok token's key ARN (and its region and grant, when it parses), or NULL: a LUKS2
 * header dmbyok did not make has none.
 */
static char *token_key_arn(struct crypt_device *cd, struct dmbyok_shred_plan *p)
{
	for (int i = 0; i < crypt_token_max(CRYPT_LUKS2); i++) {
		_cleanup_token_ struct dmbyok_token *t = NULL;
		const char *type = NULL, *json = NULL;
		crypt_token_info st = crypt_token_status(cd, i, &type);

		if (st == CRYPT_TOKEN_INACTIVE || st == CRYPT_TOKEN_INVALID || !type ||
		    strcmp(type, DMBYOK_TOKEN_TYPE) != 0 || crypt_token_json_get(cd, i, &json) < 0)
			continue;
		dmbyok_log_quiet_push();
		if (dmbyok_token_from_json(json, &t) < 0)
			t = NULL;
		dmbyok_log_quiet_pop();
		/* A damaged token still makes this a dmbyok volume: what matters is its ARN. */
		if (t) {
			p->region = TAKE_PTR(t->region);
			p->grant_id = TAKE_PTR(t->grant_id);
		}
		return strdup(t && t->key_arn ? t->key_arn : "unknown");
	}
	return NULL;
}

/*
 * A LUKS magic left at the start or at a LUKS2 secondary header offset: a header that no
 * longer loads is damaged (or half shredded), not absent. Sets the LUKS version and, for
 * LUKS2, the metadata area size its binary header declares (0 when implausible).
 */
static bool find_magic(int fd, int *ret_version, uint64_t *ret_metadata)
{
	static const uint64_t offsets[] = { 0,       0x4000,  0x8000,   0x10000,  0x20000,
		                            0x40000, 0x80000, 0x100000, 0x200000, 0x400000 };
	uint8_t buf[16];

	for (size_t i = 0; i < ELEMENTSOF(offsets); i++) {
		uint64_t hdr = 0;

		if (pread(fd, buf, sizeof(buf), (off_t)offsets[i]) != (ssize_t)sizeof(buf) ||
		    (memcmp(buf, "LUKS\xba\xbe", 6) && memcmp(buf, "SKUL\xba\xbe", 6)))
			continue;
		*ret_version = buf[6] << 8 | buf[7];
		for (int b = 8; b < 16; b++)
			hdr = hdr << 8 | buf[b]; /* LUKS2 hdr_size, big endian */
		/* LUKS2 allows 16 KiB to 4 MiB, a power of two. */
		*ret_metadata =
		    hdr >= (16U << 10) && hdr <= (4U << 20) && !(hdr & (hdr - 1)) ? hdr : 0;
		return true;
	}
	return false;
}

/*
 * What to wipe on `path` (the device, or the detached header file): the two metadata copies
 * of `metadata` bytes each and everything after them up to `end` (the keyslot area; on a
 * device, up to the data offset), clipped to the size of the target.
 */
static int plan_ranges(struct dmbyok_shred_plan *p, const char *path, uint64_t metadata,
                       uint64_t end, uint64_t size)
{
	const struct {
		uint64_t from, to;
		const char *what;
	} r[] = {
		{ 0, metadata, "primary LUKS2 header" },
		{ metadata, 2 * metadata, "secondary LUKS2 header" },
		{ 2 * metadata, end, "keyslot area" },
	};

	for (size_t i = 0; i < ELEMENTSOF(r); i++) {
		uint64_t to = MIN(r[i].to, size);

		if (r[i].from >= to)
			continue;
		p->ranges[p->n_ranges] = (struct dmbyok_shred_range){
			.path = strdup(path),
			.offset = r[i].from,
			.length = to - r[i].from,
			.what = r[i].what,
		};
		ENSURE_ALLOC(p->ranges[p->n_ranges].path);
		p->n_ranges++;
	}
	if (p->n_ranges == 0)
		return log_error_errno(EINVAL, "%s is empty: nothing to shred.", path);
	return 0;
}

/*
 * Reads what is there: a LUKS2 header that loads (its UUID, key, metadata and keyslot area
 * sizes), one that no longer does but left a magic (damaged: only with --force), or none.
 * `fd` is the header's target, open for reading.
 */
static int read_header(const struct dmbyok_shred_options *o, int fd, struct dmbyok_shred_plan *p)
{
	const char *hdr = o->header ? o->header : o->device;
	struct crypt_device *cd = NULL;
	uint64_t metadata = 0, keyslots = 0, end, size = 0;
	int version = 0, r;

	GUARD(target_size(fd, hdr, &size));
	r = o->header ? crypt_init_data_device(&cd, o->header, o->device) : crypt_init(&cd, hdr);
	if (r < 0)
		return log_error_errno(r, "Cannot open %s: %s", hdr, dmbyok_strerror(r));
	dmbyok_volume_setup_logging(cd);
	/*
	 * libcryptsetup repairs a damaged header copy from the intact one while loading: that
	 * writes only to a header that was damaged already, and the wipe overwrites it anyway.
	 */
	r = crypt_load(cd, CRYPT_LUKS2, NULL);
	if (r == 0 && crypt_get_metadata_size(cd, &metadata, &keyslots) == 0 && metadata) {
		p->volume_uuid = strdup(crypt_get_uuid(cd) ? crypt_get_uuid(cd) : "");
		p->key_arn = token_key_arn(cd, p);
		end = 2 * metadata + keyslots;
		if (!o->header)
			end = MAX(end, crypt_get_data_offset(cd) * 512);
		crypt_free(cd);
		ENSURE_ALLOC(p->volume_uuid);
		if (!p->key_arn && !o->force)
			return log_error_errno(
			    ENODATA,
			    "%s is a LUKS2 volume without a dmbyok token: dmbyok "
			    "did not make it. Erase it with `cryptsetup erase`, "
			    "or run again with --force. Nothing was changed.",
			    hdr);
		return plan_ranges(p, hdr, metadata, end, size);
	}
	crypt_free(cd);

	if (!find_magic(fd, &version, &metadata))
		return log_error_errno(ENODATA,
		                       "%s has no LUKS header: nothing to shred (already shredded, "
		                       "or never formatted).",
		                       hdr);
	if (!o->force)
		return log_error_errno(
		    version == 1 ? ENODATA : EUCLEAN,
		    version == 1 ? "%s is a LUKS1 volume, not a dmbyok volume: erase it with "
		                   "`cryptsetup erase`, or run again with --force. Nothing was "
		                   "changed."
		                 : "The LUKS2 header on %s no longer loads, but what is left of it "
		                   "is still there (an interrupted shred, or a damaged header). "
		                   "Nothing was changed; to wipe it, run again with --force.",
		    hdr);
	/* Sizes from what survives; at least LUKS2's default layout, which dmbyok uses. */
	p->damaged = true;
	if (!metadata)
		metadata = DEFAULT_METADATA_BYTES;
	return plan_ranges(p, hdr, metadata, MAX(DEFAULT_HEADER_AREA, 2 * metadata), size);
}

/* Runtime records of this device or volume: dmbyokd's torn-down (or key-deleted) ones. */
static int find_records(dev_t devno, const char *volume_uuid, char ***ret)
{
	char **names = NULL, **found;
	size_t n = 0, all = 0;

	GUARD(dmbyok_registry_list(&names));
	while (names[all])
		all++;
	found = calloc(all + 1, sizeof(char *));
	if (!found) {
		dmbyok_strv_free(names);
		return -ENOMEM;
	}
	for (size_t i = 0; i < all; i++) {
		struct registry_entry e = { 0 };
		struct stat st;

		if (dmbyok_registry_load(names[i], &e) < 0)
			continue;
		/* No crypt mapping holds the device (checked): every such record is stale. */
		if ((e.device && stat(e.device, &st) == 0 && S_ISBLK(st.st_mode) &&
		     st.st_rdev == devno) ||
		    (volume_uuid && e.volume_uuid && !strcmp(e.volume_uuid, volume_uuid)))
			found[n++] = TAKE_PTR(names[i]);
		dmbyok_registry_entry_done(&e);
	}
	dmbyok_strv_free(names);
	*ret = found;
	return 0;
}

/* `close` of a torn-down volume, for one whose device we shredded (we hold its lock). */
static void forget_record(const char *name)
{
	_cleanup_free_ char *type = NULL, *dm_uuid = NULL;
	int open_count = 0;

	/* Its error-target mapping, still there while a process held it: removed once unused. */
	if (dmbyok_dm_get_target(name, &type, &dm_uuid, &open_count) == 0 &&
	    !strcmp(type, "error")) {
		if (open_count == 0)
			(void)dmbyok_dm_crypt_remove(name);
		else
			log_notice("%s (torn down) is still held open: it goes away with its last "
			           "user.",
			           name);
	}
	if (dmbyok_registry_remove(name) < 0)
		log_warning("Could not forget the record of %s under %s: run `dmbyok close %s`.",
		            name, dmbyok_runtime_dir(), name);
	else
		log_info("Forgot %s (it had been torn down by dmbyokd).", name);
}

static int write_zeros(int fd, const uint8_t *zeros, const struct dmbyok_shred_range *r,
                       uint64_t from, uint64_t to)
{
	for (uint64_t at = from; at < to;) {
		size_t n = (size_t)MIN((uint64_t)WIPE_CHUNK, to - at);
		ssize_t w = pwrite(fd, zeros, n, (off_t)at);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return log_error_errno(
			    w < 0 ? errno : EIO,
			    "Writing zeros to %s at byte %llu failed: %m. The %s "
			    "is partly wiped: run shred again (with --force if it "
			    "says the header no longer loads).",
			    r->path, (unsigned long long)at, r->what);
		at += (uint64_t)w;
	}
	/* Durable before the next step starts: the order below must hold on the disk too. */
	if (fdatasync(fd) < 0)
		return log_error_errno(errno, "Cannot flush %s to the disk: %m. Run shred again.",
		                       r->path);
	return 0;
}

/*
 * The wipe, backwards: keyslot area, then the secondary header, then the primary; within a
 * header copy its JSON area (the token and the wrapped DEK) before its binary header (the
 * magic). So as long as any header byte is left, a LUKS magic is too, and a re-run after a
 * kill never takes a half-wiped header for a blank device. Killed in the keyslot area or the
 * secondary copy, the header still loads (libcryptsetup uses the other copy) and a re-run
 * simply shreds it; killed in the primary copy, it no longer loads and the re-run needs
 * --force (dmbyok-shred(8)).
 *
 * Explicit writes rather than crypt_wipe(): that order, a flush after each step, and no
 * need for a loaded header (a damaged one gives none). O_DIRECT on a block device: the zeros
 * go to the device, not the page cache, and no cached copy of the old header survives.
 */
static int wipe(const struct dmbyok_shred_plan *p)
{
	_cleanup_free_ uint8_t *zeros = NULL;
	struct stat st;
	int fd, r = 0;

	if (posix_memalign((void **)&zeros, 4096, WIPE_CHUNK) != 0)
		return -ENOMEM;
	memset(zeros, 0, WIPE_CHUNK);
	/* Every range is on one target: the device, or the detached header file. */
	if (stat(p->ranges[0].path, &st) < 0)
		return log_error_errno(errno, "Cannot stat %s: %m", p->ranges[0].path);
	fd = open(p->ranges[0].path, O_WRONLY | O_CLOEXEC | (S_ISBLK(st.st_mode) ? O_DIRECT : 0));
	if (fd < 0)
		return log_error_errno(errno,
		                       "Cannot open %s for writing: %m. Nothing was changed.",
		                       p->ranges[0].path);
	for (size_t i = p->n_ranges; r == 0 && i-- > 0;) {
		const struct dmbyok_shred_range *x = &p->ranges[i];
		uint64_t split = x->offset + MIN(BINARY_HEADER_BYTES, x->length);

		if (!strcmp(x->what, "keyslot area")) {
			r = write_zeros(fd, zeros, x, x->offset, x->offset + x->length);
			continue;
		}
		r = write_zeros(fd, zeros, x, split, x->offset + x->length);
		if (r == 0)
			r = write_zeros(fd, zeros, x, x->offset, split);
	}
	/* Anything still cached for the device (a buffered read of the old header) goes too. */
	if (r == 0 && S_ISBLK(st.st_mode) && ioctl(fd, BLKFLSBUF, 0) < 0)
		log_debug("BLKFLSBUF on %s: %m", p->ranges[0].path);
	close(fd);
	return r;
}

void dmbyok_shred_log(const struct dmbyok_shred_plan *p)
{
	struct log_fields f = {};
	enum log_level level;

	(void)dmbyok_log_field(&f, "DEVICE", "%s", p->device);
	if (p->header)
		(void)dmbyok_log_field(&f, "HEADER", "%s", p->header);
	if (p->volume_uuid)
		(void)dmbyok_log_field(&f, "VOLUME_UUID", "%s", p->volume_uuid);
	if (p->key_arn)
		(void)dmbyok_log_field(&f, "KEY_ARN", "%s", p->key_arn);
	for (size_t i = 0; i < p->n_ranges; i++)
		(void)dmbyok_log_field(&f, "WIPED", "%s %llu+%llu %s", p->ranges[i].path,
		                       (unsigned long long)p->ranges[i].offset,
		                       (unsigned long long)p->ranges[i].length, p->ranges[i].what);
	if (p->grant_id)
		(void)dmbyok_log_field(&f, "GRANT_ID", "%s %s", p->grant_id,
		                       p->grant_outcome ? p->grant_outcome : "unknown");
	if (p->damaged)
		(void)dmbyok_log_field(&f, "DAMAGED", "1");
	for (char **n = p->forgotten; n && *n; n++)
		(void)dmbyok_log_field(&f, "VOLUME", "%s", *n);
	/* The record of an irreversible act reaches the journal even under --quiet. */
	level = dmbyok_log_get_max_level();
	if (dmbyok_log_to_journal() && level < LOG_LEVEL_NOTICE)
		dmbyok_log_set_max_level(LOG_LEVEL_NOTICE);
	if (p->volume_uuid)
		log_struct(
		    LOG_LEVEL_NOTICE, DMBYOK_MESSAGE_SHREDDED, f.field,
		    "Shredded %s: the LUKS2 header%s of volume %s is overwritten on the disk; "
		    "its data key (wrapped by %s) is unrecoverable.",
		    p->device, p->header ? " file" : "", p->volume_uuid,
		    p->key_arn ? p->key_arn : "no dmbyok token");
	else
		log_struct(
		    LOG_LEVEL_NOTICE, DMBYOK_MESSAGE_SHREDDED, f.field,
		    "Shredded %s: what was left of its damaged LUKS header%s is overwritten on "
		    "the disk; no data key can be recovered from it.",
		    p->device, p->header ? " file" : "");
	dmbyok_log_set_max_level(level);
}

/* dmbyokd, if it runs, drops the forgotten volumes now rather than at its backstop rescan. */
static void tell_agent(void)
{
	json_object *answer = NULL;

	dmbyok_log_quiet_push();
	(void)dmbyok_agent_query("rescan", NULL, &answer);
	dmbyok_log_quiet_pop();
	json_object_put(answer);
}

/*
 * Before the wipe, so that a KMS failure changes nothing: a grant left behind would let
 * this host unwrap a copy of the header (a backup) for as long as the key lives.
 */
static int retire_grant(const struct dmbyok_shred_options *o, struct dmbyok_shred_plan *p)
{
	struct kms_options kms = o->kms ? *o->kms : (struct kms_options){ 0 };
	_cleanup_kms_client_ struct kms_client *c = NULL;
	int r;

	kms.provider = "aws";
	if (!kms.region)
		kms.region = p->region;
	r = dmbyok_kms_client_new(&kms, &c);
	if (r >= 0)
		r = dmbyok_kms_retire_grant(c, p->key_arn, p->grant_id);
	if (r >= 0 || r == -ENOENT) {
		p->grant_outcome = r >= 0 ? "retired" : "gone";
		log_info("Grant %s on %s: %s.", p->grant_id, p->key_arn,
		         r >= 0 ? "retired" : "already gone (revoked or retired)");
		return 0;
	}
	if (o->keep_grant) {
		p->grant_outcome = "kept";
		log_warning("Could not retire grant %s on %s (%s%s%s): shredding anyway "
		            "(--keep-grant); retire it with `aws kms retire-grant --key-id %s "
		            "--grant-id %s`.",
		            p->grant_id, p->key_arn, dmbyok_strerror(r), c ? ": " : "",
		            c ? dmbyok_kms_last_error(c) : "", p->key_arn, p->grant_id);
		return 0;
	}
	return log_error_errno(r,
	                       "Cannot retire the volume's grant %s on %s (%s%s%s). Nothing "
	                       "was changed: run again when the KMS answers, or with "
	                       "--keep-grant to shred now and retire the grant later.",
	                       p->grant_id, p->key_arn, dmbyok_strerror(r), c ? ": " : "",
	                       c ? dmbyok_kms_last_error(c) : "");
}

int dmbyok_shred(const struct dmbyok_shred_options *o, struct dmbyok_shred_plan *ret)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	struct dmbyok_shred_plan p = { 0 };
	struct stat st;
	int excl = -1, hfd = -1, r;

	if (!o->device || !*o->device)
		return log_error_errno(EINVAL, "No device given.");
	/* Every verb that changes a device holds its lock from its checks to its change. */
	GUARD(dmbyok_device_lock_path(o->device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock));
	if (stat(o->device, &st) < 0)
		return log_error_errno(errno, "Cannot access %s: %m", o->device);
	GUARD(refuse_holders(st.st_rdev, o->device));
	/* Held to the end: nothing mounts or maps the device while we read and wipe it. */
	excl = open(o->device, O_RDONLY | O_CLOEXEC | O_EXCL);
	if (excl < 0) {
		if (errno == EBUSY)
			return log_error_errno(EBUSY,
			                       "%s is in use (mounted, or held open): unmount it "
			                       "first. Nothing was changed.",
			                       o->device);
		return log_error_errno(errno, "Cannot open %s: %m", o->device);
	}

	p.device = strdup(o->device);
	p.header = o->header ? strdup(o->header) : NULL;
	if (!p.device || (o->header && !p.header)) {
		r = -ENOMEM;
		goto out;
	}
	hfd = o->header ? open(o->header, O_RDONLY | O_CLOEXEC) : dup(excl);
	if (hfd < 0) {
		r = log_error_errno(errno, "Cannot open %s: %m", o->header ? o->header : o->device);
		goto out;
	}
	r = read_header(o, hfd, &p);
	if (r < 0)
		goto out;
	r = find_records(st.st_rdev, p.volume_uuid, &p.forgotten);
	if (r < 0) {
		log_error("Cannot read the runtime records under %s: %s. Nothing was changed.",
		          dmbyok_runtime_dir(), dmbyok_strerror(r));
		goto out;
	}

	if (o->confirm) {
		r = o->confirm(&p, o->userdata);
		if (r < 0)
			goto out;
	}

	if (p.grant_id) {
		r = retire_grant(o, &p);
		if (r < 0)
			goto out;
	}
	r = wipe(&p);
	if (r < 0)
		goto out;
	for (char **n = p.forgotten; *n; n++)
		forget_record(*n);
	if (p.forgotten[0])
		tell_agent();
	dmbyok_shred_log(&p);
	*ret = p;
	p = (struct dmbyok_shred_plan){ 0 };
	r = 0;
out:
	if (hfd >= 0)
		close(hfd);
	close(excl);
	dmbyok_shred_plan_done(&p);
	return r;
}
