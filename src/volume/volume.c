/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A dmbyok volume's LUKS2 header through libcryptsetup: load and check it, bind the token to
 * it, format it (restoring the old bytes on failure), and refuse devices that are in use or
 * hold data.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <blkid/blkid.h>
#include <json-c/json.h>
#include <libcryptsetup.h>
#include <openssl/rand.h>

#include "dmbyok/log.h"
#include "dmbyok/volume.h"

/* LUKS2's default metadata plus keyslot area; what format may overwrite and restores. */
#define HEADER_AREA_BYTES (16ULL << 20)

static void crypt_log_cb(int level, const char *msg, void *usrptr)
{
	size_t n = strlen(msg);

	(void)usrptr;
	/* libcryptsetup's own wording goes to debug: our callers say what failed and why. */
	if (level == CRYPT_LOG_DEBUG || level == CRYPT_LOG_DEBUG_JSON ||
	    level == CRYPT_LOG_NORMAL || level == CRYPT_LOG_VERBOSE || level == CRYPT_LOG_ERROR)
		log_debug("libcryptsetup: %.*s", (int)(n && msg[n - 1] == '\n' ? n - 1 : n), msg);
}

void dmbyok_volume_setup_logging(struct crypt_device *cd)
{
	crypt_set_log_callback(cd, crypt_log_cb, NULL);
	if (dmbyok_log_get_max_level() >= LOG_LEVEL_DEBUG)
		crypt_set_debug_level(CRYPT_DEBUG_ALL);
}

void dmbyok_volume_free(struct volume *v)
{
	if (!v)
		return;
	crypt_free(v->cd);
	free(v->device);
	free(v->header);
	free(v->binding);
	dmbyok_token_free(v->token);
	free(v);
}

static int device_size(const char *path, uint64_t *ret_bytes, uint32_t *ret_logical_block)
{
	struct stat st;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_error_errno(errno, "Cannot open %s: %m", path);
	if (fstat(fd, &st) < 0) {
		r = negative_errno();
		goto out;
	}
	if (S_ISBLK(st.st_mode)) {
		int ssz = 512;

		if (ioctl(fd, BLKGETSIZE64, ret_bytes) < 0 || ioctl(fd, BLKSSZGET, &ssz) < 0) {
			r = log_error_errno(errno, "Cannot read the size of %s: %m", path);
			goto out;
		}
		if (ret_logical_block)
			*ret_logical_block = (uint32_t)ssz;
	} else if (S_ISREG(st.st_mode)) {
		*ret_bytes = (uint64_t)st.st_size;
		if (ret_logical_block)
			*ret_logical_block = 512;
	} else {
		r = log_error_errno(ENOTBLK, "%s is neither a block device nor a file.", path);
	}
out:
	close(fd);
	return r;
}

/*
 * The LUKS version (1 or 2) named by a magic at the start or at any LUKS2 secondary header
 * offset, or 0 when there is none: tells a damaged LUKS2 header from something else.
 */
static int luks_version(const char *path)
{
	static const uint64_t offsets[] = { 0,       0x4000,  0x8000,   0x10000,  0x20000,
		                            0x40000, 0x80000, 0x100000, 0x200000, 0x400000 };
	uint8_t buf[8];
	int version = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	for (size_t i = 0; i < ELEMENTSOF(offsets) && !version; i++)
		if (pread(fd, buf, sizeof(buf), (off_t)offsets[i]) == (ssize_t)sizeof(buf) &&
		    (!memcmp(buf, "LUKS\xba\xbe", 6) || !memcmp(buf, "SKUL\xba\xbe", 6)))
			version = buf[6] << 8 | buf[7];
	close(fd);
	return version == 1 || version == 2 ? version : 0;
}

static int find_token(struct volume *v)
{
	for (int i = 0; i < crypt_token_max(CRYPT_LUKS2); i++) {
		const char *type = NULL, *json = NULL;
		crypt_token_info st = crypt_token_status(v->cd, i, &type);
		int r;

		if (st == CRYPT_TOKEN_INACTIVE || st == CRYPT_TOKEN_INVALID || !type ||
		    strcmp(type, DMBYOK_TOKEN_TYPE) != 0)
			continue;
		r = crypt_token_json_get(v->cd, i, &json);
		if (r < 0)
			return log_error_errno(EUCLEAN, "Cannot read dmbyok token %d of %s.", i,
			                       v->device);
		v->token_id = i;
		return dmbyok_token_from_json(json, &v->token);
	}
	return log_error_errno(
	    ENODATA,
	    "%s is a LUKS2 volume without a dmbyok token (made by plain "
	    "cryptsetup?): dmbyok cannot unwrap its key. Open it with cryptsetup.",
	    v->device);
}

/* A string member of a json-c object, or "" (the binding then simply differs). */
static const char *member(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static bool array_has(json_object *arr, const char *s)
{
	for (size_t i = 0; arr && i < json_object_array_length(arr); i++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(arr, i)), s))
			return true;
	return false;
}

int dmbyok_volume_binding(struct crypt_device *cd, char **ret)
{
	json_object *root = NULL, *digests, *segments, *seg, *segs_of;
	const char *json = NULL;
	int r = -EUCLEAN;

	if (crypt_dump_json(cd, &json, 0) < 0 || !(root = json_tokener_parse(json)))
		return log_error_errno(EUCLEAN, "Cannot read the LUKS2 metadata.");
	if (!json_object_object_get_ex(root, "segments", &segments) ||
	    !json_object_object_get_ex(segments, "0", &seg) ||
	    !json_object_object_get_ex(root, "digests", &digests))
		goto out;
	/* The digest that verifies segment 0's key: it changes with the volume key. */
	json_object_object_foreach (digests, id, d) {
		(void)id;
		if (!json_object_object_get_ex(d, "segments", &segs_of) || !array_has(segs_of, "0"))
			continue;
		if (asprintf(ret, "digest=%s:%s:%s:%s:%s\nsegment=%s:%s:%s:%s:%s:%s\n",
		             member(d, "type"), member(d, "hash"), member(d, "iterations"),
		             member(d, "salt"), member(d, "digest"), member(seg, "type"),
		             member(seg, "offset"), member(seg, "size"), member(seg, "iv_tweak"),
		             member(seg, "encryption"), member(seg, "sector_size")) < 0)
			r = -ENOMEM;
		else
			r = 0;
		break;
	}
out:
	json_object_put(root);
	if (r == -EUCLEAN)
		return log_error_errno(r, "The LUKS2 metadata has no digest for its data segment.");
	return r;
}

int dmbyok_volume_check_binding(const struct volume *v)
{
	_cleanup_free_ char *fp = NULL;

	if (v->token->version < 2)
		return 0; /* nothing recorded; open proves the key the slow way and upgrades */
	GUARD(dmbyok_binding_fingerprint(v->binding, &fp));
	if (strcmp(fp, v->token->binding) != 0)
		return log_error_errno(
		    EUCLEAN,
		    "The LUKS2 header of %s no longer has the volume key or data segment its "
		    "dmbyok token was made for (re-encrypted with cryptsetup reencrypt, or the "
		    "token copied from another header): the wrapped key would map garbage. "
		    "Open it with cryptsetup and a passphrase, or restore the header backup.",
		    v->header ? v->header : v->device);
	return 0;
}

int dmbyok_volume_verify_key(const struct volume *v, const struct secret *dek)
{
	/* The LUKS2 digest: PBKDF2 tuned to ~125 ms, paid only when the token cannot prove it. */
	int r = crypt_volume_key_verify(v->cd, (const char *)dek->data, dek->size);

	if (r < 0)
		return log_error_errno(EUCLEAN,
		                       "The unwrapped data key is not the volume key of %s's "
		                       "LUKS2 header (re-encrypted since format?): refusing to "
		                       "map it.",
		                       v->header ? v->header : v->device);
	return 0;
}

int dmbyok_volume_load(const char *device, const char *header, struct volume **ret)
{
	_cleanup_volume_ struct volume *v = NULL;
	const char *hdr = header ? header : device, *cipher, *mode;
	uint64_t size = 0;
	uint32_t req = 0;
	int r;

	if (access(device, F_OK) < 0)
		return log_error_errno(errno, "Cannot access %s: %m", device);
	if (header && access(header, F_OK) < 0)
		return log_error_errno(errno, "Cannot access header file %s: %m", header);

	v = calloc(1, sizeof(*v));
	ENSURE_ALLOC(v);
	v->device = strdup(device);
	v->header = header ? strdup(header) : NULL;
	ENSURE_ALLOC(v->device);
	ENSURE(!header || v->header, ENOMEM);

	r = header ? crypt_init_data_device(&v->cd, header, device) : crypt_init(&v->cd, device);
	if (r < 0)
		return log_error_errno(r, "Cannot open %s: %s", hdr, dmbyok_strerror(r));
	dmbyok_volume_setup_logging(v->cd);

	r = crypt_load(v->cd, CRYPT_LUKS2, NULL);
	if (r < 0) {
		int version = luks_version(hdr);

		if (version == 1)
			return log_error_errno(
			    ENODATA, "%s is a LUKS1 volume; dmbyok volumes are LUKS2.", hdr);
		/* A LUKS2 magic that does not load: bad checksums (EINVAL) or cut short (EIO). */
		if (version == 2 && (r == -EINVAL || r == -EIO))
			return log_error_errno(
			    EUCLEAN,
			    "The LUKS2 header on %s is corrupt or truncated. Restore "
			    "it from a backup (cryptsetup luksHeaderRestore).",
			    hdr);
		if (r == -EINVAL)
			return log_error_errno(ENODATA, "%s is not a LUKS2 volume.", hdr);
		return log_error_errno(r, "Cannot read the header on %s: %s", hdr,
		                       dmbyok_strerror(r));
	}

	/* Unmet requirements: a re-encryption is under way and the segments are in flux. */
	if (crypt_persistent_flags_get(v->cd, CRYPT_FLAGS_REQUIREMENTS, &req) == 0 && req)
		return log_error_errno(
		    EUCLEAN,
		    "%s has a LUKS2 re-encryption in progress (requirement flags 0x%x): dmbyok "
		    "will not map a volume whose key is changing. Finish it with cryptsetup "
		    "reencrypt --resume-only, then format the volume for dmbyok again.",
		    hdr, req);

	cipher = crypt_get_cipher(v->cd);
	mode = crypt_get_cipher_mode(v->cd);
	if (!cipher || !mode || strcmp(cipher, DMBYOK_CIPHER) != 0 ||
	    strcmp(mode, DMBYOK_CIPHER_MODE) != 0 ||
	    crypt_get_volume_key_size(v->cd) != DMBYOK_DEK_BYTES)
		return log_error_errno(
		    EUCLEAN,
		    "%s uses %s-%s with a %d-byte key; dmbyok volumes use " DMBYOK_DM_CIPHER
		    " with a 64-byte key.",
		    hdr, cipher ? cipher : "?", mode ? mode : "?",
		    crypt_get_volume_key_size(v->cd));

	GUARD(find_token(v));
	r = crypt_keyslot_status(v->cd, v->token->keyslot);
	if (r != CRYPT_SLOT_ACTIVE && r != CRYPT_SLOT_ACTIVE_LAST)
		return log_error_errno(
		    EUCLEAN, "The dmbyok token of %s names keyslot %d, which is not in use.", hdr,
		    v->token->keyslot);
	v->uuid = crypt_get_uuid(v->cd);
	GUARD(dmbyok_volume_binding(v->cd, &v->binding));
	v->data_offset = crypt_get_data_offset(v->cd);
	v->sector_size = (uint32_t)crypt_get_sector_size(v->cd);
	(void)crypt_persistent_flags_get(v->cd, CRYPT_FLAGS_ACTIVATION, &v->activation_flags);

	GUARD(device_size(device, &size, NULL));
	if (size / 512 <= v->data_offset)
		return log_error_errno(EUCLEAN, "%s is smaller than its header's data offset.",
		                       device);
	v->data_sectors = size / 512 - v->data_offset;
	/* The mapping must end on an encryption sector boundary. */
	v->data_sectors -= v->data_sectors % (v->sector_size / 512);

	*ret = TAKE_PTR(v);
	return 0;
}

/* An exclusive open fails while the device is mounted, mapped (dm) or otherwise held. */
static int open_unused(const char *device)
{
	struct stat st;
	int fd = open(device, O_RDONLY | O_CLOEXEC | O_EXCL);

	if (fd < 0) {
		if (errno == EBUSY)
			return log_error_errno(
			    EBUSY, "%s is in use (mounted, mapped or held open).", device);
		return log_error_errno(errno, "Cannot open %s: %m", device);
	}
	if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode)) {
		close(fd);
		return log_error_errno(ENOTBLK, "%s is not a block device.", device);
	}
	return fd;
}

int dmbyok_volume_check_unused(const char *device)
{
	int fd = open_unused(device);

	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

int dmbyok_volume_check_blank(const char *device, bool force)
{
	blkid_probe pr = NULL;
	const char *type = NULL, *usage = NULL;
	int fd, r;

	fd = open_unused(device);
	if (fd < 0)
		return fd;
	if (force) {
		close(fd);
		return 0;
	}

	pr = blkid_new_probe();
	if (!pr || blkid_probe_set_device(pr, fd, 0, 0) < 0) {
		r = log_error_errno(EIO, "Cannot probe %s for signatures.", device);
		goto out;
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);

	r = blkid_do_safeprobe(pr);
	if (r == 1) {
		r = 0; /* nothing found */
	} else if (r == 0) {
		if (blkid_probe_lookup_value(pr, "TYPE", &type, NULL) < 0 &&
		    blkid_probe_lookup_value(pr, "PTTYPE", &type, NULL) < 0)
			type = "unknown";
		(void)blkid_probe_lookup_value(pr, "USAGE", &usage, NULL);
		r = log_error_errno(ENOTEMPTY,
		                    "%s already holds a %s signature (%s). Nothing was written; to "
		                    "destroy it, run again with --force.",
		                    device, type, usage ? usage : "partition table");
	} else if (r == -2) {
		r = log_error_errno(
		    ENOTEMPTY,
		    "%s holds ambiguous signatures. Nothing was written; to destroy "
		    "them, run again with --force.",
		    device);
	} else {
		r = log_error_errno(EIO, "Cannot probe %s for signatures.", device);
	}
out:
	blkid_free_probe(pr);
	close(fd);
	return r;
}

int dmbyok_volume_new_uuid(char ret[static 37])
{
	uint8_t b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return -EIO;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(ret, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
	         b[13], b[14], b[15]);
	return 0;
}

/* A copy of the bytes format may overwrite, so a failed format can put them back. */
struct area_backup {
	char *path;
	uint8_t *data;
	size_t size;
	bool existed;
};

static int backup_area(const char *path, struct area_backup *b)
{
	uint64_t size = 0;
	ssize_t n;
	int fd, r;

	b->path = strdup(path);
	ENSURE_ALLOC(b->path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0; /* a new detached header file */
		return log_error_errno(errno, "Cannot open %s: %m", path);
	}
	b->existed = true;
	r = device_size(path, &size, NULL);
	if (r < 0) {
		close(fd);
		return r;
	}
	b->size = size < HEADER_AREA_BYTES ? (size_t)size : HEADER_AREA_BYTES;
	b->data = malloc(b->size ? b->size : 1);
	if (!b->data) {
		close(fd);
		return -ENOMEM;
	}
	n = pread(fd, b->data, b->size, 0);
	close(fd);
	if (n != (ssize_t)b->size)
		return log_error_errno(EIO, "Cannot back up the start of %s.", path);
	return 0;
}

static void restore_area(const struct area_backup *b)
{
	int fd;

	if (!b->existed) {
		(void)unlink(b->path);
		return;
	}
	fd = open(b->path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || pwrite(fd, b->data, b->size, 0) != (ssize_t)b->size || fsync(fd) < 0)
		log_error("Could not restore the first %zu bytes of %s after the failure: %m. The "
		          "device may hold a partial dmbyok header.",
		          b->size, b->path);
	else
		log_info("Restored %s to its previous contents.", b->path);
	if (fd >= 0)
		close(fd);
}

static void backup_done(struct area_backup *b)
{
	free(b->path);
	free(b->data);
}

/* The largest encryption sector size (<= 4096) the device and its size allow. */
static uint32_t choose_sector_size(const char *device, uint64_t data_offset_bytes)
{
	uint64_t size = 0;
	uint32_t logical = 512;

	if (device_size(device, &size, &logical) < 0)
		return 512;
	/* dm-crypt cannot use encryption sectors smaller than the device's own blocks. */
	if (logical > 4096)
		return 0;
	if ((size - data_offset_bytes) % 4096 != 0)
		return logical;
	return 4096;
}

int dmbyok_volume_format(const struct volume_format_params *p)
{
	struct crypt_device *cd = NULL;
	struct area_backup backup = { 0 };
	const char *hdr = p->header ? p->header : p->device;
	struct crypt_pbkdf_type pbkdf = {
		/* The passphrase is 512 random bits: key stretching would add cost, not safety. */
		.type = CRYPT_KDF_PBKDF2,
		.hash = "sha256",
		.iterations = 1000,
		.flags = CRYPT_PBKDF_NO_BENCHMARK,
	};
	struct crypt_params_luks2 params = {
		.sector_size = 0,
		.subsystem = "dmbyok",
	};
	_cleanup_free_ char *json = NULL, *binding = NULL;
	bool written = false;
	int r, slot;

	r = backup_area(hdr, &backup);
	if (r < 0)
		goto out;

	if (p->header && !backup.existed) {
		int fd = open(p->header, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);

		/* libcryptsetup writes into the file but does not grow it: size it (sparse). */
		if (fd < 0 || ftruncate(fd, (off_t)HEADER_AREA_BYTES) < 0) {
			r = log_error_errno(errno, "Cannot create header file %s: %m", p->header);
			if (fd >= 0) {
				close(fd);
				(void)unlink(p->header);
			}
			goto out;
		}
		close(fd);
		/* From here on, any failure removes the file we created (restore_area). */
		written = true;
	}

	r = p->header ? crypt_init_data_device(&cd, p->header, p->device)
	              : crypt_init(&cd, p->device);
	if (r < 0) {
		r = log_error_errno(r, "Cannot open %s: %s", hdr, dmbyok_strerror(r));
		goto fail;
	}
	dmbyok_volume_setup_logging(cd);
	params.sector_size = choose_sector_size(p->device, p->header ? 0 : HEADER_AREA_BYTES);
	if (params.sector_size == 0) {
		r = log_error_errno(ENOTSUP,
		                    "%s has blocks larger than 4096 bytes, which dm-crypt cannot "
		                    "encrypt.",
		                    p->device);
		goto fail;
	}
	written = true;
	r = crypt_format(cd, CRYPT_LUKS2, DMBYOK_CIPHER, DMBYOK_CIPHER_MODE, p->uuid,
	                 (const char *)p->dek->data, p->dek->size, &params);
	if (r < 0)
		goto fail;

	/*
	 * Only now lower the KDF: the LUKS2 digest keeps cryptsetup's default cost so the header
	 * is a standard one, while the DEK keyslot needs no stretching (see pbkdf above).
	 */
	r = crypt_set_pbkdf_type(cd, &pbkdf);
	if (r < 0)
		goto fail;
	slot =
	    crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, (const char *)p->dek->data,
	                                    p->dek->size, (const char *)p->dek->data, p->dek->size);
	if (slot < 0) {
		r = slot;
		goto fail;
	}
	p->token->keyslot = slot;

	/* Version 2: the key check value is bound to this header's digest and segment. */
	r = dmbyok_volume_binding(cd, &binding);
	if (r < 0)
		goto fail;
	free(p->token->binding);
	free(p->token->key_check);
	p->token->binding = p->token->key_check = NULL;
	p->token->version = DMBYOK_TOKEN_VERSION;
	r = dmbyok_binding_fingerprint(binding, &p->token->binding);
	if (r < 0)
		goto fail;
	r = dmbyok_key_check_value(p->dek, p->uuid, binding, &p->token->key_check);
	if (r < 0)
		goto fail;

	r = dmbyok_token_to_json(p->token, &json);
	if (r < 0)
		goto fail;
	r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
	if (r < 0)
		goto fail;

	if (p->activation_flags) {
		r = crypt_persistent_flags_set(cd, CRYPT_FLAGS_ACTIVATION, p->activation_flags);
		if (r < 0)
			goto fail;
	}
	r = 0;
	goto out;

fail:
	log_error("Cannot write the LUKS2 header on %s: %s", hdr, dmbyok_strerror(r));
	if (written)
		restore_area(&backup);
out:
	crypt_free(cd);
	backup_done(&backup);
	return r;
}

int dmbyok_volume_update_token(struct volume *v, const struct dmbyok_token *t)
{
	_cleanup_free_ char *json = NULL;
	int r;

	GUARD(dmbyok_token_to_json(t, &json));
	/* libcryptsetup writes both header copies and their checksums; a crash leaves one valid. */
	r = crypt_token_json_set(v->cd, v->token_id, json);
	if (r < 0)
		return log_error_errno(r, "Cannot update the dmbyok token on %s: %s",
		                       v->header ? v->header : v->device, dmbyok_strerror(r));
	return 0;
}
