/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/volume.h"
#include "registry.h"

#define KEY_DESC_PREFIX "dmbyok:"

/* Explain a KMS failure in the operator's terms, with what to do; returns r. */
static int log_kms_failure(struct kms_client *c, int r, const char *what)
{
	const char *detail = c ? dmbyok_kms_last_error(c) : "";

	switch (dmbyok_error_class(r)) {
	case DMBYOK_ERR_KEY_REVOKED:
		return log_error_errno(
		    r,
		    "Cannot %s: the customer's KMS key is unusable (%s). The key "
		    "owner must re-enable it or restore this host's access.",
		    what, *detail ? detail : dmbyok_strerror(r));
	case DMBYOK_ERR_KMS_TRANSIENT:
		return log_error_errno(r,
		                       "Cannot %s: the KMS is unreachable or failing (%s). Retry "
		                       "later; nothing was changed.",
		                       what, *detail ? detail : dmbyok_strerror(r));
	case DMBYOK_ERR_CREDENTIALS:
		return log_error_errno(r, "Cannot %s: %s (%s). Check this host's AWS credentials.",
		                       what, dmbyok_strerror(r), *detail ? detail : "no detail");
	case DMBYOK_ERR_WRONG_TOKEN:
		return log_error_errno(r,
		                       "Cannot %s: the KMS rejects the wrapped key under this "
		                       "volume's encryption context (%s): the token was altered or "
		                       "copied from another volume.",
		                       what, *detail ? detail : dmbyok_strerror(r));
	default:
		return log_error_errno(r, "Cannot %s: %s%s%s", what, dmbyok_strerror(r),
		                       *detail ? ": " : "", detail);
	}
}

/* The region a key ARN names, or NULL (an alias or bare key id names none). */
static char *region_of_arn(const char *key_id)
{
	char *region = NULL;

	return dmbyok_kms_key_region(key_id, &region) >= 0 ? region : NULL;
}

static int kms_connect(const struct kms_options *base, const char *region, struct kms_client **ret)
{
	struct kms_options o = *base;
	int r;

	if (!o.region)
		o.region = region;
	r = dmbyok_kms_client_new(&o, ret);
	if (r < 0)
		return log_kms_failure(NULL, r, "set up the KMS client");
	return 0;
}

/* Unwrap a loaded volume's DEK: binding check, KMS Decrypt, key check value. */
static int unwrap_dek(struct volume *v, const struct kms_options *kms, struct secret **ret)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	int r;

	/* A token copied from another volume names that volume: refuse before any KMS call. */
	GUARD(dmbyok_token_check_volume(v->token, v->uuid));
	GUARD(kms_connect(kms, v->token->region, &c));

	log_debug("Unwrapping the data key of %s under %s.", v->device, v->token->key_arn);
	r = dmbyok_kms_decrypt(c, v->token->key_arn, v->token->ciphertext, v->token->context, &dek,
	                       NULL);
	if (r < 0)
		return log_kms_failure(c, r, "unwrap the data key");
	GUARD(dmbyok_token_verify_dek(v->token, dek, v->uuid));
	*ret = TAKE_PTR(dek);
	return 0;
}

static int key_description(const char *volume_uuid, char **ret)
{
	if (asprintf(ret, KEY_DESC_PREFIX "%s", volume_uuid) < 0)
		return -ENOMEM;
	return 0;
}

int dmbyok_xts_driver(char **ret_driver, bool *ret_accelerated)
{
	char line[256], name[128] = "", driver[128] = "", best[128] = "";
	int prio = -1, best_prio = -1;
	FILE *f = fopen("/proc/crypto", "re");

	if (!f)
		return negative_errno();
	/* Blocks of "name : ...", "driver : ...", "priority : N": the highest priority wins. */
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "name : %127s", name) == 1)
			continue;
		if (sscanf(line, "driver : %127s", driver) == 1)
			continue;
		if (sscanf(line, "priority : %d", &prio) == 1 && !strcmp(name, "xts(aes)") &&
		    prio > best_prio) {
			best_prio = prio;
			snprintf(best, sizeof(best), "%s", driver);
		}
	}
	fclose(f);
	if (!*best)
		return -ENOENT;
	*ret_accelerated = !strstr(best, "generic") && !strstr(best, "ecb(aes-");
	*ret_driver = strdup(best);
	ENSURE_ALLOC(*ret_driver);
	return 0;
}

/* Warn when the kernel would do AES-XTS in software: several times slower. */
static void warn_if_not_accelerated(void)
{
	_cleanup_free_ char *driver = NULL;
	bool fast = false;

	if (dmbyok_xts_driver(&driver, &fast) < 0)
		log_debug("The kernel lists no xts(aes) implementation yet; it will load one.");
	else if (!fast)
		log_warning("The kernel's xts(aes) is %s, a software implementation: expect slow "
		            "I/O (load aesni_intel or use a CPU with AES instructions).",
		            driver);
	else
		log_debug("xts(aes) is implemented by %s.", driver);
}

int dmbyok_format(const struct format_options *o, const struct kms_options *kms, char **ret_uuid)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_token_ struct dmbyok_token *t = NULL;
	_cleanup_free_ char *region = NULL;
	char uuid[37];
	int r;

	ENSURE(o->device && o->key_id && *o->key_id, EINVAL);
	GUARD(dmbyok_volume_check_blank(o->device, o->force));
	if (o->header && access(o->header, F_OK) == 0 && !o->force)
		return log_error_errno(ENOTEMPTY,
		                       "Header file %s exists. Nothing was written; to "
		                       "overwrite it, run again with --force.",
		                       o->header);

	t = calloc(1, sizeof(*t));
	ENSURE_ALLOC(t);
	GUARD(dmbyok_volume_new_uuid(uuid));
	GUARD(dmbyok_context_new(uuid, o->context, o->n_context, &t->context));

	region = region_of_arn(o->key_id);
	GUARD(kms_connect(kms, region, &c));
	log_info("Generating a 512-bit data key under %s...", o->key_id);
	r = dmbyok_kms_generate_data_key(c, o->key_id, t->context, DMBYOK_DEK_BYTES, &dek,
	                                 &t->ciphertext, &t->key_arn);
	if (r < 0)
		return log_kms_failure(c, r, "generate the data key");

	t->version = DMBYOK_TOKEN_VERSION;
	t->kms = strdup("aws");
	t->key_id = strdup(o->key_id);
	/* The wrapping key's ARN names its region; unwrapping must go there. */
	t->region = region_of_arn(t->key_arn);
	ENSURE(t->kms && t->key_id && t->region, ENOMEM);
	GUARD(dmbyok_key_check_value(dek, uuid, &t->key_check));
	GUARD(dmbyok_timestamp_now(&t->created));

	log_info("Writing the LUKS2 header (" DMBYOK_DM_CIPHER ", 512-bit key) to %s...",
	         o->header ? o->header : o->device);
	GUARD(dmbyok_volume_format(&(struct volume_format_params){
	    .device = o->device,
	    .header = o->header,
	    .uuid = uuid,
	    .dek = dek,
	    .token = t,
	    .activation_flags = o->perf_flags,
	}));
	log_info("Formatted %s as dmbyok volume %s, data key wrapped by %s.", o->device, uuid,
	         t->key_arn);
	if (ret_uuid) {
		*ret_uuid = strdup(uuid);
		ENSURE_ALLOC(*ret_uuid);
	}
	return 0;
}

int dmbyok_activate(const struct volume *v, const char *name, uint32_t flags,
                    const struct secret *dek)
{
	_cleanup_free_ char *dm_uuid = NULL, *key_desc = NULL;

	GUARD(dmbyok_dm_luks2_uuid(v->uuid, name, &dm_uuid));
	GUARD(key_description(v->uuid, &key_desc));
	return dmbyok_dm_crypt_create(name, dm_uuid,
	                              &(struct dm_crypt_params){
	                                  .cipher = DMBYOK_DM_CIPHER,
	                                  .key_desc = key_desc,
	                                  .key_size = dek->size,
	                                  .device = v->device,
	                                  .offset = v->data_offset,
	                                  .length = v->data_sectors,
	                                  .sector_size = v->sector_size,
	                                  .flags = flags,
	                              },
	                              dek);
}

int dmbyok_open(const struct open_options *o, const struct kms_options *kms)
{
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *device_path = NULL, *header_path = NULL;
	struct dm_crypt_info existing = { 0 };
	struct registry_entry entry;
	int r;

	ENSURE(o->device && o->name && *o->name, EINVAL);
	GUARD(dmbyok_dm_check_kernel_support());
	r = dmbyok_dm_crypt_get_info(o->name, &existing);
	if (r == 0 || r == -EINVAL) {
		dmbyok_dm_crypt_info_done(&existing);
		return log_error_errno(EEXIST, "A mapping named %s already exists.", o->name);
	}
	if (r != -ENODEV)
		return log_error_errno(r, "Cannot look up mapping %s: %s", o->name,
		                       dmbyok_strerror(r));

	GUARD(dmbyok_volume_load(o->device, o->header, &v));
	/* Two mappings of one disk would corrupt it: cryptsetup refuses this too. */
	GUARD(dmbyok_volume_check_unused(o->device));
	GUARD(unwrap_dek(v, kms, &dek));
	warn_if_not_accelerated();
	GUARD(dmbyok_activate(v, o->name, o->override_flags ? o->flags : v->activation_flags, dek));

	/* Absolute paths: unlock and the agent run from other directories. */
	device_path = realpath(o->device, NULL);
	header_path = o->header ? realpath(o->header, NULL) : NULL;
	entry = (struct registry_entry){
		.name = (char *)o->name,
		.device = device_path ? device_path : (char *)o->device,
		.header = header_path ? header_path : (char *)o->header,
		.volume_uuid = (char *)v->uuid,
		.key_id = v->token->key_id,
		.key_arn = v->token->key_arn,
	};
	r = dmbyok_registry_save(&entry);
	if (r < 0)
		log_warning("Could not record %s under %s (%s): `unlock` will need --header for "
		            "a detached header.",
		            o->name, dmbyok_runtime_dir(), dmbyok_strerror(r));
	log_info("Opened %s as /dev/mapper/%s.", o->device, o->name);
	return 0;
}

void dmbyok_mapping_status_done(struct mapping_status *s)
{
	dmbyok_dm_crypt_info_done(&s->dm);
	free(s->device);
	free(s->header);
	free(s->volume_uuid);
	free(s->key_id);
	free(s->key_arn);
	*s = (struct mapping_status){ 0 };
}

int dmbyok_status(const char *name, struct mapping_status *ret)
{
	struct mapping_status s = { 0 };
	struct registry_entry e = { 0 };
	int r;

	r = dmbyok_dm_crypt_get_info(name, &s.dm);
	if (r == -EINVAL)
		return -ENODEV; /* a mapping, but not dm-crypt: not ours */
	if (r < 0)
		return r;
	if (strncmp(s.dm.dm_uuid, DM_LUKS2_UUID_PREFIX, strlen(DM_LUKS2_UUID_PREFIX)) != 0) {
		dmbyok_mapping_status_done(&s);
		return -ENODEV;
	}
	/* Keyring reference "...:logon:dmbyok:<uuid>" while keyed; a wiped key shows none. */
	s.locked = s.dm.suspended && s.dm.key_ref[0] != ':';

	if (dmbyok_registry_load(name, &e) == 0) {
		s.device = TAKE_PTR(e.device);
		s.header = TAKE_PTR(e.header);
		s.volume_uuid = TAKE_PTR(e.volume_uuid);
		s.key_id = TAKE_PTR(e.key_id);
		s.key_arn = TAKE_PTR(e.key_arn);
		dmbyok_registry_entry_done(&e);
	} else if (strstr(s.dm.key_ref, ":logon:" KEY_DESC_PREFIX)) {
		s.device = strdup(s.dm.device);
		s.volume_uuid = strdup(strstr(s.dm.key_ref, ":logon:" KEY_DESC_PREFIX) +
		                       strlen(":logon:" KEY_DESC_PREFIX));
	} else {
		/* A LUKS2 mapping dmbyok did not open (plain cryptsetup). */
		dmbyok_mapping_status_done(&s);
		return -ENODEV;
	}
	*ret = s;
	return 0;
}

void dmbyok_mapping_status_list_free(struct mapping_status *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dmbyok_mapping_status_done(&l[i]);
	free(l);
}

int dmbyok_list(struct mapping_status **ret, size_t *ret_n)
{
	char **names = NULL;
	struct mapping_status *l;
	size_t n = 0, all = 0;

	GUARD(dmbyok_dm_list_names(&names));
	while (names[all])
		all++;
	l = calloc(all ? all : 1, sizeof(*l));
	if (!l) {
		dmbyok_strv_free(names);
		return -ENOMEM;
	}
	/* Anything that is not a dmbyok crypt mapping (or vanished meanwhile) is skipped. */
	for (size_t i = 0; i < all; i++)
		if (dmbyok_status(names[i], &l[n]) == 0)
			n++;
	dmbyok_strv_free(names);
	*ret = l;
	*ret_n = n;
	return 0;
}

/* Status of `name`, failing with a clear message unless it is a dmbyok mapping. */
static int require_mapping(const char *name, struct mapping_status *ret)
{
	int r = dmbyok_status(name, ret);

	if (r == -ENODEV)
		return log_error_errno(ENOENT, "No dmbyok mapping named %s.", name);
	if (r < 0)
		return log_error_errno(r, "Cannot read mapping %s: %s", name, dmbyok_strerror(r));
	return 0;
}

int dmbyok_close(const char *name)
{
	struct mapping_status s = { 0 };
	int r;

	GUARD(dmbyok_dm_check_kernel_support());
	GUARD(require_mapping(name, &s));
	dmbyok_mapping_status_done(&s);
	r = dmbyok_dm_crypt_remove(name);
	if (r < 0)
		return r;
	(void)dmbyok_registry_remove(name);
	log_info("Closed %s.", name);
	return 0;
}

int dmbyok_lock(const char *name)
{
	struct mapping_status s = { 0 };
	bool locked;

	GUARD(dmbyok_dm_check_kernel_support());
	GUARD(require_mapping(name, &s));
	locked = s.locked;
	dmbyok_mapping_status_done(&s);
	if (locked) {
		log_info("%s is already locked.", name);
		return 0;
	}
	GUARD(dmbyok_dm_crypt_lock(name));
	log_info("Locked %s: I/O is held and the key is gone from kernel memory.", name);
	return 0;
}

int dmbyok_unlock(const char *name, const char *header, const struct kms_options *kms)
{
	struct mapping_status s = { 0 };
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *dm_uuid = NULL, *key_desc = NULL;
	int r;

	GUARD(dmbyok_dm_check_kernel_support());
	GUARD(require_mapping(name, &s));
	if (!s.locked) {
		r = s.dm.suspended ? log_error_errno(EBUSY,
		                                     "%s is suspended but still keyed: it was "
		                                     "not locked by dmbyok; resume it with "
		                                     "dmsetup resume.",
		                                     name)
		                   : 0;
		if (r == 0)
			log_info("%s is not locked.", name);
		dmbyok_mapping_status_done(&s);
		return r;
	}

	r = dmbyok_volume_load(s.device ? s.device : s.dm.device, header ? header : s.header, &v);
	if (r < 0)
		goto out;
	/* The header must be the one this mapping was opened from. */
	r = dmbyok_dm_luks2_uuid(v->uuid, name, &dm_uuid);
	if (r < 0)
		goto out;
	if (strcmp(dm_uuid, s.dm.dm_uuid) != 0) {
		r = log_error_errno(EBADMSG,
		                    "The header of %s (volume %s) is not the one %s was "
		                    "opened with.",
		                    v->device, v->uuid, name);
		goto out;
	}
	r = unwrap_dek(v, kms, &dek);
	if (r < 0)
		goto out;
	r = key_description(v->uuid, &key_desc);
	if (r < 0)
		goto out;
	r = dmbyok_dm_crypt_unlock(name, key_desc, dek);
	if (r == 0)
		log_info("Unlocked %s: I/O resumed.", name);
out:
	dmbyok_mapping_status_done(&s);
	return r;
}

int dmbyok_rewrap(const char *device, const char *header, const char *new_key_id,
                  const struct kms_options *kms)
{
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *ciphertext = NULL, *arn = NULL, *now = NULL, *dest_region = NULL,
	                    *arn_region = NULL;
	struct dmbyok_token t;
	const char *dest;
	int r;

	GUARD(dmbyok_volume_load(device, header, &v));
	GUARD(dmbyok_token_check_volume(v->token, v->uuid));
	dest = new_key_id ? new_key_id : v->token->key_id;
	dest_region = region_of_arn(dest);
	/* ReEncrypt runs in one region: a blob cannot move to a key of another one this way. */
	if (dest_region && v->token->region && strcmp(dest_region, v->token->region) != 0)
		return log_error_errno(EINVAL,
		                       "%s is in region %s but the volume's key is in %s: re-wrap "
		                       "within one region (or format a new volume there).",
		                       dest, dest_region, v->token->region);
	GUARD(kms_connect(kms, dest_region ? dest_region : v->token->region, &c));

	log_info("Re-wrapping the data key of %s from %s under %s...", device, v->token->key_arn,
	         dest);
	r = dmbyok_kms_reencrypt(c, v->token->ciphertext, v->token->context, dest, &ciphertext,
	                         &arn);
	if (r < 0)
		return log_kms_failure(c, r, "re-wrap the data key");

	/* Never write a token we could not open: unwrap the new blob and check it first. */
	r = dmbyok_kms_decrypt(c, arn, ciphertext, v->token->context, &dek, NULL);
	if (r < 0)
		return log_kms_failure(c, r, "verify the re-wrapped data key");
	GUARD(dmbyok_token_verify_dek(v->token, dek, v->uuid));
	GUARD(dmbyok_timestamp_now(&now));

	t = *v->token;
	t.key_id = (char *)dest;
	t.key_arn = arn;
	t.ciphertext = ciphertext;
	arn_region = region_of_arn(arn);
	if (arn_region) {
		free(dest_region);
		dest_region = TAKE_PTR(arn_region);
	}
	t.region = dest_region ? dest_region : v->token->region;
	t.rewrapped = now;
	GUARD(dmbyok_volume_update_token(v, &t));
	log_info("Re-wrapped %s: data key now wrapped by %s.", device, arn);
	return 0;
}
