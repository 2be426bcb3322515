/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The volume lifecycle: format, open, close, lock, unlock, rewrap, status, composed from the
 * KMS, volume (header) and dm layers, each under the device's lock, each either done or
 * leaving the header and the mappings as they were.
 */
#include <assert.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <string.h>
#include <unistd.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"
#include "dmbyok/volume.h"
#include "internal.h"
#include "registry.h"
#include "runtime.h"

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
		return log_error_errno(r, "Cannot %s: %s (%s). Check this host's %s credentials.",
		                       what, dmbyok_strerror(r), *detail ? detail : "no detail",
		                       dmbyok_kms_client_provider_title(c));
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

/* A client of `provider` (a token's "kms", or what the key's name says) for `region`. */
static int kms_connect(const struct kms_options *base, const char *provider, const char *region,
                       struct kms_client **ret)
{
	struct kms_options o = *base;
	int r;

	if (!o.provider)
		o.provider = provider;
	if (!o.region)
		o.region = region;
	r = dmbyok_kms_client_new(&o, ret);
	if (r < 0)
		return log_kms_failure(NULL, r, "set up the KMS client");
	return 0;
}

/* A version 1 token proved nothing about the header: prove the key the slow way, upgrade. */
static int verify_v1_and_upgrade(struct volume *v, const struct secret *dek)
{
	struct dmbyok_token t = *v->token;
	_cleanup_free_ char *fp = NULL, *kcv = NULL;
	int r;

	GUARD(dmbyok_volume_verify_key(v, dek));
	GUARD(dmbyok_binding_fingerprint(v->binding, &fp));
	GUARD(dmbyok_key_check_value(dek, v->uuid, v->binding, &kcv));
	t.version = 2;
	t.binding = fp;
	t.key_check = kcv;
	/* libcryptsetup rewrites both header copies in turn: a crash leaves one valid. */
	r = dmbyok_volume_update_token(v, &t);
	if (r < 0)
		log_warning("Could not upgrade the dmbyok token of %s to version 2; it keeps "
		            "opening, at the cost of a LUKS2 digest check each time.",
		            v->device);
	else
		log_info("Upgraded the dmbyok token of %s to version 2 (key check bound to the "
		         "header).",
		         v->device);
	return 0;
}

int dmbyok_unwrap_check(const struct volume *v, const struct kms_options *kms)
{
	/* A token copied from another volume names that volume: refuse before any KMS call. */
	GUARD(dmbyok_token_check_volume(v->token, v->uuid));
	/* So is a header whose volume key changed under the token (cryptsetup reencrypt). */
	GUARD(dmbyok_volume_check_binding(v));
	/* Decrypt runs where the key lives; another region would answer "not found". */
	if (kms->region && v->token->region && strcmp(kms->region, v->token->region) != 0)
		return log_error_errno(EINVAL,
		                       "--region %s contradicts the volume's key %s, which is in "
		                       "%s: drop --region (the token names the region).",
		                       kms->region, v->token->key_arn, v->token->region);
	return 0;
}

int dmbyok_unwrap_dek_with(struct kms_client *c, struct volume *v, struct secret **ret)
{
	_cleanup_secret_ struct secret *dek = NULL;
	int r;

	log_debug("Unwrapping the data key of %s under %s.", v->device, v->token->key_arn);
	r = dmbyok_kms_decrypt(c, v->token->key_arn, v->token->ciphertext, v->token->context, &dek,
	                       NULL);
	if (r == -EKEYREVOKED && v->token->grant_id)
		log_notice("%s is reached through its own grant %s: the key owner may have revoked "
		           "just that grant (`dmbyok dump` shows it).",
		           v->device, v->token->grant_id);
	if (r < 0)
		return log_kms_failure(c, r, "unwrap the data key");
	GUARD(dmbyok_token_verify_dek(v->token, dek, v->uuid, v->binding));
	if (v->token->version < 2)
		GUARD(verify_v1_and_upgrade(v, dek));
	*ret = TAKE_PTR(dek);
	return 0;
}

int dmbyok_unwrap_dek(struct volume *v, const struct kms_options *kms, struct secret **ret)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;

	GUARD(dmbyok_unwrap_check(v, kms));
	GUARD(kms_connect(kms, v->token->kms, v->token->region, &c));
	return dmbyok_unwrap_dek_with(c, v, ret);
}

int dmbyok_key_description(const char *volume_uuid, char **ret)
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

/* Creates the grant that lets `grantee` (NULL: this host) unwrap this volume's DEK only. */
static int volume_grant_create(struct kms_client *c, const char *key_arn, const char *grantee,
                               json_object *context, const char *volume_uuid, char **ret_grant_id)
{
	_cleanup_free_ char *self = NULL;
	int r;

	if (!grantee) {
		r = dmbyok_kms_caller_principal(c, &self);
		if (r < 0)
			return log_kms_failure(c, r, "find this host's principal for the grant");
		grantee = self;
	}
	log_info("Creating a grant on %s for %s, for this volume's encryption context only...",
	         key_arn, grantee);
	r = dmbyok_kms_create_grant(c, key_arn, grantee, context, volume_uuid, ret_grant_id);
	if (r < 0)
		return log_kms_failure(c, r, "create the volume's grant");
	log_info("Grant %s created.", *ret_grant_id);
	return 0;
}

/* Best effort: a grant nothing uses any more is retired, or the operator is told how. */
static void volume_grant_retire(struct kms_client *c, const char *key_arn, const char *grant_id)
{
	int r = dmbyok_kms_retire_grant(c, key_arn, grant_id);

	if (r < 0 && r != -ENOENT)
		log_warning("Could not retire grant %s on %s (%s): retire it with `aws kms "
		            "retire-grant --key-id %s --grant-id %s`.",
		            grant_id, key_arn, dmbyok_strerror(r), key_arn, grant_id);
}

/*
 * The volume's grant on the key `dest` names (nothing when that is the key it has): to the
 * old grant's grantee if this host may list grants, else to this host. Sets *ret_key_arn.
 */
static int rewrap_grant(struct kms_client *c, const struct dmbyok_token *old, const char *dest,
                        const char *volume_uuid, char **ret_key_arn, char **ret_grant_id)
{
	struct kms_key_info info = { 0 };
	struct kms_grant_info g = { 0 };
	int r;

	r = dmbyok_kms_describe_key(c, dest, &info);
	if (r < 0)
		return log_kms_failure(c, r, "look up the new key for the volume's grant");
	if (!strcmp(info.key_arn, old->key_arn)) {
		dmbyok_kms_key_info_done(&info);
		return 0; /* the same key: its grant stays */
	}
	dmbyok_log_quiet_push();
	r = dmbyok_kms_find_grant(c, old->key_arn, old->grant_id, &g);
	dmbyok_log_quiet_pop();
	r = volume_grant_create(c, info.key_arn, r >= 0 ? g.grantee : NULL, old->context,
	                        volume_uuid, ret_grant_id);
	dmbyok_kms_grant_info_done(&g);
	if (r >= 0)
		*ret_key_arn = TAKE_PTR(info.key_arn);
	dmbyok_kms_key_info_done(&info);
	return r;
}

int dmbyok_format(const struct format_options *o, const struct kms_options *kms, char **ret_uuid)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_token_ struct dmbyok_token *t = NULL;
	_cleanup_free_ char *region = NULL;
	char uuid[37];
	int r;

	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;

	assert(o->device && o->key_id);
	if (!*o->key_id)
		return log_error_errno(EINVAL, "The key id is empty.");
	if (o->grant && strcmp(dmbyok_kms_provider_for_key(o->key_id), "aws") != 0)
		return log_error_errno(EINVAL,
		                       "--grant is for AWS KMS keys; Google Cloud and Azure grant "
		                       "access per key through IAM. Nothing was written.");
	if (o->grantee && (strncmp(o->grantee, "arn:", 4) != 0 || strpbrk(o->grantee, " \t\n")))
		return log_error_errno(EINVAL,
		                       "--grantee \"%.80s\" is not a principal ARN "
		                       "(arn:aws:iam::ACCOUNT:role/NAME). Nothing was written.",
		                       o->grantee);
	/* Two formats (or a format and an open) of one device must not interleave. */
	GUARD(dmbyok_device_lock_path(o->device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock));
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
	GUARD(kms_connect(kms, dmbyok_kms_provider_for_key(o->key_id), region, &c));
	log_info("Generating a 512-bit data key under %s...", o->key_id);
	r = dmbyok_kms_generate_data_key(c, o->key_id, t->context, DMBYOK_DEK_BYTES, &dek,
	                                 &t->ciphertext, &t->key_arn);
	if (r < 0)
		return log_kms_failure(c, r, "generate the data key");

	t->version = DMBYOK_TOKEN_VERSION;
	t->kms = strdup(dmbyok_kms_client_provider(c)); /* the provider that wrapped it */
	t->key_id = strdup(o->key_id);
	/* The wrapping key's ARN names its region; unwrapping must go there. */
	t->region = region_of_arn(t->key_arn);
	ENSURE(t->kms && t->key_id && t->region, ENOMEM);
	GUARD(dmbyok_timestamp_now(&t->created));
	if (o->grant)
		GUARD(
		    volume_grant_create(c, t->key_arn, o->grantee, t->context, uuid, &t->grant_id));

	log_info("Writing the LUKS2 header (" DMBYOK_DM_CIPHER ", 512-bit key) to %s...",
	         o->header ? o->header : o->device);
	r = dmbyok_volume_format(&(struct volume_format_params){
	    .device = o->device,
	    .header = o->header,
	    .uuid = uuid,
	    .dek = dek,
	    .token = t,
	    .activation_flags = o->perf_flags,
	});
	if (r < 0) {
		/* Nothing on disk names the grant: it must not outlive this failure. */
		if (t->grant_id)
			volume_grant_retire(c, t->key_arn, t->grant_id);
		return r;
	}
	log_info("Formatted %s as dmbyok volume %s, data key wrapped by %s.", o->device, uuid,
	         t->key_arn);
	if (ret_uuid) {
		*ret_uuid = strdup(uuid);
		ENSURE_ALLOC(*ret_uuid);
	}
	return 0;
}

struct dm_crypt_params dmbyok_crypt_params(const struct volume *v, const char *key_desc,
                                           size_t key_size, uint32_t flags)
{
	return (struct dm_crypt_params){
		.cipher = DMBYOK_DM_CIPHER,
		.key_desc = key_desc,
		.key_size = key_size,
		.device = v->device,
		.offset = v->data_offset,
		.length = v->data_sectors,
		.sector_size = v->sector_size,
		.flags = flags,
	};
}

int dmbyok_activate(const struct volume *v, const char *name, uint32_t flags,
                    const struct secret *dek)
{
	_cleanup_free_ char *dm_uuid = NULL, *key_desc = NULL;
	struct dm_crypt_params p;

	GUARD(dmbyok_dm_luks2_uuid(v->uuid, name, &dm_uuid));
	GUARD(dmbyok_key_description(v->uuid, &key_desc));
	p = dmbyok_crypt_params(v, key_desc, dek->size, flags);
	return dmbyok_dm_crypt_create(name, dm_uuid, &p, dek);
}

void dmbyok_open_job_done(struct open_job *j)
{
	dmbyok_secret_freep(&j->dek);
	dmbyok_volume_freep(&j->v);
	dmbyok_device_unlock(&j->lock);
}

int dmbyok_open_prepare(struct open_job *j, const struct kms_options *kms)
{
	const struct open_options *o = j->o;
	struct dm_crypt_info existing = { 0 };
	int r;

	assert(o->device && o->name);
	if (!*o->name)
		return log_error_errno(EINVAL, "The mapping name is empty.");
	GUARD(dmbyok_dm_check_kernel_support());
	/*
	 * Held from the in-use check to the table load: every entry point (CLI, agent, udev
	 * attach, token plugin) takes it, so two of them never map one device twice.
	 */
	GUARD(dmbyok_device_lock_path(o->device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &j->lock));
	r = dmbyok_dm_crypt_get_info(o->name, &existing);
	if (r == 0 || r == -EINVAL) {
		dmbyok_dm_crypt_info_done(&existing);
		return log_error_errno(EEXIST, "A mapping named %s already exists.", o->name);
	}
	if (r != -ENODEV)
		return log_error_errno(r, "Cannot look up mapping %s: %s", o->name,
		                       dmbyok_strerror(r));

	GUARD(dmbyok_volume_load(o->device, o->header, &j->v));
	/* Two mappings of one disk would corrupt it: cryptsetup refuses this too. */
	GUARD(dmbyok_volume_check_unused(o->device));
	return dmbyok_unwrap_check(j->v, kms);
}

int dmbyok_open_finish(struct open_job *j)
{
	const struct open_options *o = j->o;
	_cleanup_free_ char *device_path = NULL, *header_path = NULL;
	struct registry_entry entry;
	int r;

	warn_if_not_accelerated();
	GUARD(dmbyok_activate(j->v, o->name, o->override_flags ? o->flags : j->v->activation_flags,
	                      j->dek));
	dmbyok_secret_freep(&j->dek);

	/* Absolute paths: unlock and the agent run from other directories. */
	device_path = realpath(o->device, NULL);
	header_path = o->header ? realpath(o->header, NULL) : NULL;
	entry = (struct registry_entry){
		.name = (char *)o->name,
		.device = device_path ? device_path : (char *)o->device,
		.header = header_path ? header_path : (char *)o->header,
		.volume_uuid = (char *)j->v->uuid,
		.key_id = j->v->token->key_id,
		.key_arn = j->v->token->key_arn,
		.grant_id = j->v->token->grant_id,
	};
	r = dmbyok_registry_save(&entry);
	if (r < 0)
		log_warning("Could not record %s under %s (%s): `unlock` will need --header for "
		            "a detached header.",
		            o->name, dmbyok_runtime_dir(), dmbyok_strerror(r));
	log_info("Opened %s as /dev/mapper/%s.", o->device, o->name);
	return 0;
}

int dmbyok_open(const struct open_options *o, const struct kms_options *kms)
{
	_cleanup_(dmbyok_open_job_done) struct open_job j = { .o = o,
		                                              .lock = DMBYOK_DEVICE_LOCK_INIT };

	GUARD(dmbyok_open_prepare(&j, kms));
	GUARD(dmbyok_unwrap_dek(j.v, kms, &j.dek));
	return dmbyok_open_finish(&j);
}

void dmbyok_mapping_status_done(struct mapping_status *s)
{
	dmbyok_dm_crypt_info_done(&s->dm);
	free(s->device);
	free(s->header);
	free(s->volume_uuid);
	free(s->key_id);
	free(s->key_arn);
	free(s->grant_id);
	*s = (struct mapping_status){ 0 };
}

const char *dmbyok_mapping_state_name(const struct mapping_status *s)
{
	if (s->torn_down)
		return "torn-down";
	if (s->locked)
		return "locked";
	/* An interrupted lock: I/O held but the key still in memory. lock/unlock repair it. */
	return s->dm.suspended ? "suspended-keyed" : "active";
}

/* The volume UUID a LUKS2 dm UUID names ("CRYPT-LUKS2-<32 hex>-<name>"), with dashes. */
static int uuid_of_dm_uuid(const char *dm_uuid, char ret[static 37])
{
	const char *h = dm_uuid + strlen(DM_LUKS2_UUID_PREFIX);

	if (strncmp(dm_uuid, DM_LUKS2_UUID_PREFIX, strlen(DM_LUKS2_UUID_PREFIX)) != 0 ||
	    strlen(h) < 33 || h[32] != '-')
		return -EINVAL;
	snprintf(ret, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
	return 0;
}

static bool same_block_device(const char *a, const char *b)
{
	struct stat sa, sb;

	return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && S_ISBLK(sa.st_mode) &&
	       S_ISBLK(sb.st_mode) && sa.st_rdev == sb.st_rdev;
}

/*
 * The header, read quietly and only from a device that answers: for status, "no readable
 * dmbyok header" is an answer, and a stalled disk must not hang status or lock.
 */
struct volume *dmbyok_load_header_quietly(const char *device, const char *header)
{
	struct volume *v = NULL;

	if (dmbyok_device_responds(device, PROBE_MS) < 0) {
		log_debug("%s does not answer: not reading its header.", device);
		return NULL;
	}
	dmbyok_log_quiet_push();
	if (dmbyok_volume_load(device, header, &v) < 0)
		v = NULL;
	dmbyok_log_quiet_pop();
	return v;
}

/*
 * Reconciles three sources: the kernel's table (truth about the mapping), the header
 * (truth about the key) and the runtime record (where a detached header is). A record that
 * disagrees with the kernel is stale and ignored; key names come from the header when
 * `read_header` and the device answers. Without the header, a mapping is ours when the
 * record or the table's key reference says so.
 */
int dmbyok_read_mapping(const char *name, bool read_header, struct mapping_status *ret)
{
	_cleanup_volume_ struct volume *v = NULL;
	struct mapping_status s = { 0 };
	struct registry_entry e = { 0 };
	char uuid[37];
	bool ours;
	int r;

	r = dmbyok_dm_crypt_get_info(name, &s.dm);
	if (r == -EINVAL)
		return -ENODEV; /* a mapping, but not dm-crypt: not ours */
	if (r < 0)
		return r;
	if (uuid_of_dm_uuid(s.dm.dm_uuid, uuid) < 0) {
		dmbyok_mapping_status_done(&s);
		return -ENODEV;
	}
	/* Keyring reference ":64:logon:..." while keyed; a wiped key shows none. */
	s.locked = s.dm.suspended && s.dm.key_ref[0] != ':';

	s.record = "missing";
	if (dmbyok_registry_load(name, &e) == 0) {
		if (strcmp(e.volume_uuid, uuid) != 0 || !same_block_device(e.device, s.dm.device)) {
			log_debug("Ignoring the stale record of %s (another volume or device).",
			          name);
			dmbyok_registry_entry_done(&e);
			s.record = "stale";
		} else
			s.record = "ok";
	}
	ours = e.name || strstr(s.dm.key_ref, ":logon:" KEY_DESC_PREFIX);

	if (read_header || !ours) {
		v = dmbyok_load_header_quietly(e.device ? e.device : s.dm.device, e.header);
		if (v && strcmp(v->uuid, uuid) != 0)
			dmbyok_volume_freep(&v);
		if (!v && !ours) {
			/* A LUKS2 mapping of a header without a dmbyok token (plain cryptsetup). */
			dmbyok_registry_entry_done(&e);
			dmbyok_mapping_status_done(&s);
			return -ENODEV;
		}
	}
	s.device = e.device ? TAKE_PTR(e.device) : strdup(s.dm.device);
	s.header = TAKE_PTR(e.header);
	s.volume_uuid = strdup(uuid);
	s.key_id = v ? strdup(v->token->key_id) : TAKE_PTR(e.key_id);
	s.key_arn = v ? strdup(v->token->key_arn) : TAKE_PTR(e.key_arn);
	s.grant_id =
	    v ? (v->token->grant_id ? strdup(v->token->grant_id) : NULL) : TAKE_PTR(e.grant_id);
	s.frozen = e.frozen;
	if (v && e.key_arn &&
	    (strcmp(e.key_arn, v->token->key_arn) != 0 ||
	     !streq_ptr(e.grant_id, v->token->grant_id)))
		s.record = "stale"; /* re-wrapped since it was written */
	dmbyok_registry_entry_done(&e);
	if (!s.device || !s.volume_uuid || (v && (!s.key_id || !s.key_arn)) ||
	    (v && v->token->grant_id && !s.grant_id)) {
		dmbyok_mapping_status_done(&s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

int dmbyok_status(const char *name, struct mapping_status *ret)
{
	return dmbyok_read_mapping(name, true, ret);
}

void dmbyok_mapping_status_list_free(struct mapping_status *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dmbyok_mapping_status_done(&l[i]);
	free(l);
}

int dmbyok_list(struct mapping_status **ret, size_t *ret_n)
{
	return dmbyok_list_mappings(true, ret, ret_n);
}

int dmbyok_list_mappings(bool read_headers, struct mapping_status **ret, size_t *ret_n)
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
		if (dmbyok_read_mapping(names[i], read_headers, &l[n]) == 0)
			n++;
	dmbyok_strv_free(names);
	*ret = l;
	*ret_n = n;
	return 0;
}

/* Status of `name` (kernel and record), failing clearly unless it is a dmbyok mapping. */
static int require_mapping(const char *name, struct mapping_status *ret)
{
	int r = dmbyok_read_mapping(name, false, ret);

	if (r == -ENODEV)
		return log_error_errno(ENOENT, "No dmbyok mapping named %s.", name);
	if (r < 0)
		return log_error_errno(r, "Cannot read mapping %s: %s", name, dmbyok_strerror(r));
	return 0;
}

/*
 * Takes the lock of the device under mapping `name`, then reads its status again: what
 * was true before the lock may have changed while we waited.
 */
int dmbyok_lock_mapping(const char *name, unsigned timeout_ms, struct dmbyok_device_lock *ret_lock,
                        struct mapping_status *ret)
{
	struct mapping_status s = { 0 };
	dev_t devno;
	int r;

	GUARD(require_mapping(name, &s));
	devno = makedev(s.dm.dev_major, s.dm.dev_minor);
	dmbyok_mapping_status_done(&s);
	GUARD(dmbyok_device_lock_devno(devno, timeout_ms, ret_lock));
	r = require_mapping(name, ret);
	if (r < 0)
		dmbyok_device_unlock(ret_lock);
	return r;
}

/* Remembers whether the file system is frozen by us, for unlock (and after a crash). */
/* Rewrites the record of a mapping from what status found, with the given key and freeze. */
static int save_record(const struct mapping_status *s, const char *key_id, const char *key_arn,
                       const char *grant_id, bool frozen)
{
	return dmbyok_registry_save(&(struct registry_entry){
	    .name = s->dm.name,
	    .device = s->device,
	    .header = s->header,
	    .volume_uuid = s->volume_uuid,
	    .key_id = (char *)key_id,
	    .key_arn = (char *)key_arn,
	    .grant_id = (char *)grant_id,
	    .frozen = frozen,
	});
}

static void record_frozen(const struct mapping_status *s, bool frozen)
{
	int r;

	if (!s->key_id || !s->key_arn)
		return; /* no record and no header read: thaw_after_resume covers that case */
	r = save_record(s, s->key_id, s->key_arn, s->grant_id, frozen);
	if (r < 0)
		log_warning("Could not record the freeze of %s (%s).", s->dm.name,
		            dmbyok_strerror(r));
}

/* Thaws what a lock froze (or, without a record, anything frozen: it cannot be ours to keep). */
static int thaw_after_resume(const struct mapping_status *s)
{
	_cleanup_free_ char *mp = NULL;
	int r;

	if (!s->frozen && strcmp(s->record, "missing") != 0)
		return 0;
	if (dmbyok_fs_mountpoint(s->dm.major, s->dm.minor, &mp) <= 0)
		return 0;
	r = dmbyok_fs_thaw(mp);
	if (r < 0)
		return log_error_errno(r,
		                       "%s resumed but its file system at %s stays frozen "
		                       "(%s): run `fsfreeze -u %s`.",
		                       s->dm.name, mp, dmbyok_strerror(r), mp);
	if (s->frozen)
		record_frozen(s, false);
	return 0;
}

int dmbyok_close_mapping(const char *name)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	struct mapping_status s = { 0 };
	int r;

	GUARD(dmbyok_dm_check_kernel_support());
	GUARD(dmbyok_lock_mapping(name, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock, &s));
	dmbyok_mapping_status_done(&s);
	r = dmbyok_dm_crypt_remove(name);
	if (r < 0)
		return r;
	(void)dmbyok_registry_remove(name);
	log_info("Closed %s.", name);
	return 0;
}

static unsigned remaining_ms(unsigned long long deadline)
{
	unsigned long long now = dmbyok_now_ms();

	return now >= deadline ? 1 : (unsigned)(deadline - now);
}

int dmbyok_lock(const char *name, unsigned timeout_ms)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	unsigned long long deadline =
	    dmbyok_now_ms() + (timeout_ms ? timeout_ms : DMBYOK_LOCK_TIMEOUT_MS);
	_cleanup_free_ char *mp = NULL;
	struct mapping_status s = { 0 };
	bool frozen = false, freeze_stuck = false;
	int r;

	GUARD(dmbyok_dm_check_kernel_support());
	GUARD(dmbyok_lock_mapping(name, remaining_ms(deadline), &lock, &s));

	if (s.locked) {
		/* Idempotent, and completes a lock killed after its key wipe. */
		(void)dmbyok_dm_drop_page_cache(&s.dm, remaining_ms(deadline));
		log_info("%s is already locked.", name);
		r = 0;
		goto out;
	}
	if (!s.dm.suspended) {
		r = dmbyok_fs_mountpoint(s.dm.major, s.dm.minor, &mp);
		if (r > 0 &&
		    dmbyok_device_responds(s.device, MIN(remaining_ms(deadline), PROBE_MS)) < 0) {
			log_warning(
			    "The device under %s (%s) does not answer a read within %u ms: "
			    "locking without freezing its file system, whose writes would "
			    "stall too. Writes it had not acknowledged stay in memory until "
			    "unlock.",
			    name, s.device, PROBE_MS);
		} else if (r > 0) {
			/* Everything fsync'ed is on the device before the freeze returns. */
			/* Half the bound at most: the suspend after it needs time too. */
			r = dmbyok_fs_freeze(mp, remaining_ms(deadline) / 2);
			if (r == 0) {
				frozen = true;
				record_frozen(&s, true);
			} else {
				freeze_stuck = r == -ETIMEDOUT;
				log_warning(
				    "Could not freeze the file system on %s at %s (%s): "
				    "locking without it. Writes it had not acknowledged stay "
				    "in memory, unwritten, until unlock.",
				    name, mp, dmbyok_strerror(r));
			}
		}
		r = dmbyok_dm_suspend(name, remaining_ms(deadline));
		if (r < 0) {
			if (frozen && dmbyok_fs_thaw(mp) == 0)
				record_frozen(&s, false);
			log_error("Could not lock %s within %u ms; it is as it was. Check the "
			          "device under it (%s).",
			          name, timeout_ms ? timeout_ms : DMBYOK_LOCK_TIMEOUT_MS, s.device);
			goto out;
		}
	} else
		log_notice("%s was suspended with its key still in memory (an interrupted "
		           "lock): wiping the key now.",
		           name);

	r = dmbyok_dm_crypt_wipe_key(name);
	if (r < 0) {
		if (dmbyok_dm_resume(name) == 0 && frozen && dmbyok_fs_thaw(mp) == 0)
			record_frozen(&s, false);
		goto out;
	}
	/*
	 * Cached plaintext would otherwise still be served. Not after a stuck freeze: the drop
	 * would wait on that file system's lock behind the freeze.
	 */
	if (!freeze_stuck)
		(void)dmbyok_dm_drop_page_cache(&s.dm, remaining_ms(deadline));
	log_info("Locked %s: I/O is held and the key is gone from kernel memory.", name);
	r = 0;
out:
	dmbyok_mapping_status_done(&s);
	return r;
}

int dmbyok_unlock_mapping(const char *name, const char *header, const struct kms_options *kms)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	struct mapping_status s = { 0 };
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *dm_uuid = NULL, *key_desc = NULL;
	int r;

	GUARD(dmbyok_dm_check_kernel_support());
	/* Held across the KMS call: a lock that arrives meanwhile waits, then wins. */
	GUARD(dmbyok_lock_mapping(name, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock, &s));
	if (!s.dm.suspended) {
		log_info("%s is not locked.", name);
		r = 0;
		goto out;
	}
	if (!s.locked) {
		/* An interrupted lock: the key is still there, so resuming is all it takes. */
		r = dmbyok_dm_resume(name);
		if (r == 0) {
			log_notice("%s was suspended with its key still in memory (an interrupted "
			           "lock): resumed.",
			           name);
			r = thaw_after_resume(&s);
		}
		goto out;
	}

	if (dmbyok_device_responds(s.device, PROBE_MS) < 0) {
		r = log_error_errno(EBUSY,
		                    "%s does not answer reads: cannot read its header to "
		                    "unlock %s. Retry once the device recovers.",
		                    s.device, name);
		goto out;
	}
	r = dmbyok_volume_load(s.device, header ? header : s.header, &v);
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
	r = dmbyok_unwrap_dek(v, kms, &dek);
	if (r < 0)
		goto out;
	r = dmbyok_key_description(v->uuid, &key_desc);
	if (r < 0)
		goto out;
	r = dmbyok_dm_crypt_unlock(name, key_desc, dek);
	if (r < 0)
		goto out;
	r = thaw_after_resume(&s);
	if (r == 0)
		log_info("Unlocked %s: I/O resumed.", name);
out:
	dmbyok_mapping_status_done(&s);
	return r;
}

/* After a re-wrap, open mappings of the volume must name the key that now wraps it. */
static void update_records(const char *volume_uuid, const char *key_id, const char *key_arn,
                           const char *grant_id)
{
	struct mapping_status *l = NULL;
	size_t n = 0;

	int r;

	/* Rewrap needs no device-mapper: without one there is no mapping to update, silently. */
	dmbyok_log_quiet_push();
	r = dmbyok_dm_check_kernel_support();
	if (r >= 0)
		r = dmbyok_list(&l, &n);
	dmbyok_log_quiet_pop();
	if (r < 0)
		return;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].volume_uuid, volume_uuid) &&
		    save_record(&l[i], key_id, key_arn, grant_id, l[i].frozen) < 0)
			log_warning("Could not update the record of %s.", l[i].dm.name);
	dmbyok_mapping_status_list_free(l, n);
}

int dmbyok_rewrap(const char *device, const char *header, const char *new_key_id,
                  const struct kms_options *kms)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	_cleanup_free_ char *ciphertext = NULL, *arn = NULL, *now = NULL, *dest_region = NULL,
	                    *arn_region = NULL, *grant_id = NULL, *grant_key = NULL;
	struct dmbyok_token t;
	const char *dest;
	int r;

	/* The token is rewritten: no other operation may read it half-way or race us. */
	GUARD(dmbyok_device_lock_path(device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock));
	GUARD(dmbyok_volume_load(device, header, &v));
	GUARD(dmbyok_token_check_volume(v->token, v->uuid));
	GUARD(dmbyok_volume_check_binding(v));
	dest = new_key_id ? new_key_id : v->token->key_id;
	/* A re-wrap runs inside one KMS: a key of another provider needs a new volume. */
	if (strcmp(dmbyok_kms_provider_for_key(dest), v->token->kms) != 0)
		return log_error_errno(
		    EINVAL,
		    "%s is a %s key but the volume's key is in %s: re-wrap within "
		    "one provider (or format a new volume and copy the data).",
		    dest, dmbyok_kms_provider_for_key(dest), v->token->kms);
	dest_region = region_of_arn(dest);
	/* ReEncrypt runs in one region: a blob cannot move to a key of another one this way. */
	if (dest_region && v->token->region && strcmp(dest_region, v->token->region) != 0)
		return log_error_errno(EINVAL,
		                       "%s is in region %s but the volume's key is in %s: re-wrap "
		                       "within one region (or format a new volume there).",
		                       dest, dest_region, v->token->region);
	if (kms->region && v->token->region && strcmp(kms->region, v->token->region) != 0)
		return log_error_errno(EINVAL,
		                       "--region %s contradicts the volume's key %s, which is in "
		                       "%s: drop --region.",
		                       kms->region, v->token->key_arn, v->token->region);
	GUARD(kms_connect(kms, v->token->kms, dest_region ? dest_region : v->token->region, &c));

	/*
	 * A volume with its own grant gets one on the new key first (ReEncrypt needs it there
	 * when the key policy gives this host nothing); the old grant goes after the write.
	 */
	if (v->token->grant_id)
		GUARD(rewrap_grant(c, v->token, dest, v->uuid, &grant_key, &grant_id));

	log_info("Re-wrapping the data key of %s from %s under %s...", device, v->token->key_arn,
	         dest);
	r = dmbyok_kms_reencrypt(c, v->token->key_arn, v->token->ciphertext, v->token->context,
	                         dest, &ciphertext, &arn);
	if (r < 0) {
		r = log_kms_failure(c, r, "re-wrap the data key");
		goto fail;
	}
	if (grant_id && strcmp(arn, grant_key) != 0) {
		r = log_error_errno(EAGAIN,
		                    "%s moved from %s to %s during the re-wrap: nothing was "
		                    "changed; run it again.",
		                    dest, grant_key, arn);
		goto fail;
	}

	/* Never write a token we could not open: unwrap the new blob and check it first. */
	r = dmbyok_kms_decrypt(c, arn, ciphertext, v->token->context, &dek, NULL);
	if (r >= 0)
		r = dmbyok_token_verify_dek(v->token, dek, v->uuid, v->binding);
	else
		r = log_kms_failure(c, r, "verify the re-wrapped data key");
	if (r >= 0)
		r = dmbyok_timestamp_now(&now);
	if (r < 0)
		goto fail;

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
	if (grant_id)
		t.grant_id = grant_id;
	r = dmbyok_volume_update_token(v, &t);
	if (r < 0)
		goto fail;
	update_records(v->uuid, dest, arn, t.grant_id);
	log_info("Re-wrapped %s: data key now wrapped by %s.", device, arn);
	if (grant_id)
		volume_grant_retire(c, v->token->key_arn, v->token->grant_id);
	return 0;
fail:
	if (grant_id)
		volume_grant_retire(c, grant_key, grant_id);
	return r;
}

int dmbyok_check_kernel(void)
{
	return dmbyok_dm_check_kernel_support();
}

int dmbyok_perf_flags_parse(const char *s, uint32_t *ret)
{
	return dmbyok_dm_crypt_flags_parse(s, ret);
}

int dmbyok_dump(const char *device, const char *header, json_object **ret)
{
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_free_ char *token_json = NULL;
	json_object *o;
	bool matches;

	GUARD(dmbyok_volume_load(device, header, &v));
	GUARD(dmbyok_token_to_json(v->token, &token_json));
	dmbyok_log_quiet_push();
	matches = dmbyok_volume_check_binding(v) == 0;
	dmbyok_log_quiet_pop();

	o = json_object_new_object();
	ENSURE_ALLOC(o);
	json_object_object_add(o, "device", json_object_new_string(v->device));
	if (v->header)
		json_object_object_add(o, "header", json_object_new_string(v->header));
	json_object_object_add(o, "volume_uuid", json_object_new_string(v->uuid));
	json_object_object_add(o, "cipher", json_object_new_string(DMBYOK_DM_CIPHER));
	json_object_object_add(o, "key_bits", json_object_new_int(DMBYOK_DEK_BYTES * 8));
	json_object_object_add(o, "sector_size", json_object_new_int((int)v->sector_size));
	json_object_object_add(o, "data_offset_sectors",
	                       json_object_new_int64((int64_t)v->data_offset));
	json_object_object_add(o, "data_size_sectors",
	                       json_object_new_int64((int64_t)v->data_sectors));
	json_object_object_add(o, "keyslot", json_object_new_int(v->token->keyslot));
	json_object_object_add(o, "token_id", json_object_new_int(v->token_id));
	/* Version 1 tokens record no binding: they prove nothing about the header. */
	json_object_object_add(o, "binding_matches",
	                       v->token->version >= 2 ? json_object_new_boolean(matches) : NULL);
	json_object_object_add(o, "token", json_tokener_parse(token_json));
	*ret = o;
	return 0;
}

int dmbyok_read_token(const char *device, const char *header, struct dmbyok_token **ret)
{
	_cleanup_volume_ struct volume *v = NULL;

	GUARD(dmbyok_volume_load(device, header, &v));
	GUARD(dmbyok_token_check_volume(v->token, v->uuid));
	*ret = TAKE_PTR(v->token);
	return 0;
}

static bool is_alias(const char *key_id)
{
	return key_id && (!strncmp(key_id, "alias/", 6) || strstr(key_id, ":alias/"));
}

int dmbyok_kms_client_for(const struct kms_options *kms, const char *region,
                          struct kms_client **ret)
{
	return kms_connect(kms, NULL, region, ret);
}

int dmbyok_kms_client_for_token(const struct kms_options *kms, const struct dmbyok_token *t,
                                struct kms_client **ret)
{
	return kms_connect(kms, t->kms, t->region, ret);
}

int dmbyok_probe_key_with(struct kms_client *c, const struct dmbyok_token *t, unsigned describe,
                          unsigned *ret_found)
{
	_cleanup_secret_ struct secret *dek = NULL;
	struct kms_key_info info = { 0 };
	unsigned found = 0;
	int r, q;

	/* The one call that proves this host may still unwrap; the key is wiped at once. */
	r = dmbyok_kms_decrypt(c, t->key_arn, t->ciphertext, t->context, &dek, NULL);
	dmbyok_secret_freep(&dek);
	if (r < 0)
		log_debug("Probe of %s: %s (%s)", t->key_arn, dmbyok_strerror(r),
		          dmbyok_kms_last_error(c));
	if ((describe & DMBYOK_PROBE_DESCRIBE_DELETED) &&
	    dmbyok_error_class(r) == DMBYOK_ERR_KEY_REVOKED) {
		/* Revoked, or gone for good? Only a key that no longer exists is crypto-shredded.
		 */
		q = dmbyok_kms_describe_key(c, t->key_arn, &info);
		if (q == -ENOENT)
			found |= DMBYOK_PROBE_KEY_DELETED;
		dmbyok_kms_key_info_done(&info);
	} else if (r == 0 && (describe & DMBYOK_PROBE_DESCRIBE_ALIAS) && is_alias(t->key_id)) {
		q = dmbyok_kms_describe_key(c, t->key_id, &info);
		if (q == 0 && info.key_arn && strcmp(info.key_arn, t->key_arn) != 0) {
			log_debug("%s now names %s, not %s.", t->key_id, info.key_arn, t->key_arn);
			found |= DMBYOK_PROBE_ALIAS_MOVED;
		}
		dmbyok_kms_key_info_done(&info);
	}
	*ret_found = found;
	return r;
}

int dmbyok_probe_key(const struct dmbyok_token *t, const struct kms_options *kms, unsigned describe,
                     unsigned *ret_found)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;

	GUARD(kms_connect(kms, t->kms, t->region, &c));
	return dmbyok_probe_key_with(c, t, describe, ret_found);
}
