/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Teardown and reprovision: what dmbyokd does to the mappings of a revoked key after it
 * locked them, and undoes when the key comes back. A torn-down mapping leaves nothing of
 * the volume in the kernel; its runtime record stays, marked torn down, and holds what it
 * takes to map it again exactly as it was (device, detached header, dm-crypt flags).
 */
#include <string.h>

#include "dmbyok/log.h"
#include "internal.h"
#include "registry.h"

static int save_torn_down(const struct mapping_status *s, const char *key_id, const char *key_arn,
                          const char *grant_id, bool torn_down)
{
	return dmbyok_registry_save(&(struct registry_entry){
	    .name = s->dm.name,
	    .device = s->device,
	    .header = s->header,
	    .volume_uuid = s->volume_uuid,
	    .key_id = (char *)key_id,
	    .key_arn = (char *)key_arn,
	    .grant_id = (char *)grant_id,
	    .frozen = s->frozen,
	    .torn_down = torn_down,
	    .flags = s->dm.flags,
	});
}

int dmbyok_teardown(const char *name, unsigned timeout_ms, bool error_if_in_use)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_free_ char *mp = NULL;
	struct mapping_status s = { 0 };
	const char *key_id, *key_arn, *grant_id;
	int r;

	/* Never tear down a keyed mapping: lock it first unless it is. */
	GUARD(dmbyok_read_mapping(name, false, &s));
	r = s.locked ? 0 : dmbyok_lock(name, timeout_ms);
	dmbyok_mapping_status_done(&s);
	if (r < 0)
		return r;
	GUARD(dmbyok_lock_mapping(name, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock, &s));
	if (!s.locked) {
		r = log_error_errno(EAGAIN, "%s was unlocked meanwhile: not tearing it down.",
		                    name);
		goto out;
	}
	if (s.dm.open_count > 0 && !error_if_in_use) {
		r = 1;
		goto out;
	}
	/* The record must name the key, so the agent keeps watching it while nothing is mapped. */
	key_id = s.key_id;
	key_arn = s.key_arn;
	grant_id = s.grant_id;
	if (!key_arn) {
		v = dmbyok_load_header_quietly(s.device, s.header);
		if (!v) {
			r = log_error_errno(EBUSY,
			                    "Cannot read the header of %s (%s) to record it: not "
			                    "tearing it down; it stays locked.",
			                    name, s.device);
			goto out;
		}
		key_id = v->token->key_id;
		key_arn = v->token->key_arn;
		grant_id = v->token->grant_id;
	}
	r = save_torn_down(&s, key_id, key_arn, grant_id, true);
	if (r < 0) {
		log_error("Cannot record %s as torn down (%s): it stays locked.", name,
		          dmbyok_strerror(r));
		goto out;
	}

	if (s.dm.open_count == 0) {
		r = dmbyok_dm_crypt_remove(name);
		if (r < 0) {
			(void)save_torn_down(&s, key_id, key_arn, grant_id, false);
			goto out;
		}
		log_info("Tore down %s: removed (nobody held it open).", name);
		goto out;
	}

	/*
	 * In use: the error target makes every held and new I/O fail, so blocked processes get
	 * EIO and can exit, then the mapping goes with its last user. The file system the lock
	 * froze is thawed, else its writers would wait on the freeze instead of failing.
	 */
	r = dmbyok_dm_replace_with_error(name, s.dm.length);
	if (r < 0) {
		(void)save_torn_down(&s, key_id, key_arn, grant_id, false);
		goto out;
	}
	if (s.frozen && dmbyok_fs_mountpoint(s.dm.major, s.dm.minor, &mp) > 0)
		(void)dmbyok_fs_thaw(mp);
	r = dmbyok_dm_remove_deferred(name);
	if (r < 0)
		log_warning("%s now fails all I/O but will not go away by itself: run `dmsetup "
		            "remove %s` once unused.",
		            name, name);
	log_info("Tore down %s: in use (%d opener(s)), so its I/O now fails; it is removed "
	         "when its last user closes it.",
	         name, s.dm.open_count);
	r = 2;
out:
	dmbyok_mapping_status_done(&s);
	return r;
}

/* Re-creates or re-keys the mapping of a torn-down volume; the caller holds its device lock. */
static int remap(struct volume *v, const struct registry_entry *e, const struct secret *dek)
{
	_cleanup_free_ char *type = NULL, *dm_uuid = NULL, *want_uuid = NULL, *key_desc = NULL;
	struct dm_crypt_params p;
	int open_count, r;

	GUARD(dmbyok_dm_luks2_uuid(v->uuid, e->name, &want_uuid));
	r = dmbyok_dm_get_target(e->name, &type, &dm_uuid, &open_count);
	if (r == -ENODEV) {
		GUARD(dmbyok_volume_check_unused(v->device));
		return dmbyok_activate(v, e->name, e->flags, dek);
	}
	if (r < 0)
		return r;
	if (strcmp(type, "error") != 0 || strcmp(dm_uuid, want_uuid) != 0)
		return log_error_errno(EEXIST,
		                       "A mapping named %s exists and is not the torn-down one: "
		                       "not touching it.",
		                       e->name);
	/* Still held by a user: same node, the crypt table again, so the user need not reopen. */
	GUARD(dmbyok_dm_cancel_deferred_remove(e->name));
	GUARD(dmbyok_key_description(v->uuid, &key_desc));
	p = dmbyok_crypt_params(v, key_desc, dek->size, e->flags);
	r = dmbyok_dm_crypt_reload(e->name, &p, dek);
	if (r == -ENXIO || r == -ENODEV) {
		/* Its last user closed it just now and it went away: map it anew. */
		GUARD(dmbyok_volume_check_unused(v->device));
		return dmbyok_activate(v, e->name, e->flags, dek);
	}
	return r;
}

int dmbyok_reprovision(const char *name, const struct kms_options *kms)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	struct registry_entry e = { 0 };
	int r;

	GUARD(dmbyok_dm_check_kernel_support());
	r = dmbyok_registry_load(name, &e);
	if (r == -ENOENT || (r == 0 && !e.torn_down)) {
		dmbyok_registry_entry_done(&e);
		return log_error_errno(ENOENT, "%s was not torn down: nothing to reprovision.",
		                       name);
	}
	if (r < 0)
		return r;
	r = dmbyok_device_lock_path(e.device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock);
	if (r < 0)
		goto out;
	r = dmbyok_volume_load(e.device, e.header, &v);
	if (r < 0)
		goto out;
	if (strcmp(v->uuid, e.volume_uuid) != 0) {
		r = log_error_errno(EBADMSG,
		                    "%s now holds volume %s, not %s that was torn down as %s: "
		                    "not mapping it.",
		                    e.device, v->uuid, e.volume_uuid, name);
		goto out;
	}
	r = dmbyok_unwrap_dek(v, kms, &dek);
	if (r < 0)
		goto out;
	r = remap(v, &e, dek);
	if (r < 0)
		goto out;
	e.torn_down = false;
	e.frozen = false;
	free(e.key_id);
	free(e.key_arn);
	free(e.grant_id);
	e.key_id = strdup(v->token->key_id);
	e.key_arn = strdup(v->token->key_arn);
	e.grant_id = v->token->grant_id ? strdup(v->token->grant_id) : NULL;
	if (!e.key_id || !e.key_arn || (v->token->grant_id && !e.grant_id) ||
	    dmbyok_registry_save(&e) < 0)
		log_warning("Reprovisioned %s but could not update its record.", name);
	log_info("Reprovisioned %s from %s as it was before its teardown.", name, e.device);
	r = 0;
out:
	dmbyok_registry_entry_done(&e);
	return r;
}

int dmbyok_list_torn_down(struct mapping_status **ret, size_t *ret_n)
{
	char **names = NULL;
	struct mapping_status *l;
	size_t n = 0, all = 0;

	GUARD(dmbyok_registry_list(&names));
	while (names[all])
		all++;
	l = calloc(all ? all : 1, sizeof(*l));
	if (!l) {
		dmbyok_strv_free(names);
		return -ENOMEM;
	}
	for (size_t i = 0; i < all; i++) {
		struct registry_entry e = { 0 };
		struct mapping_status *s = &l[n];

		if (dmbyok_registry_load(names[i], &e) < 0)
			continue;
		if (e.torn_down && e.key_arn) {
			s->torn_down = true;
			s->record = "ok";
			s->dm.name = TAKE_PTR(e.name);
			s->dm.flags = e.flags;
			s->device = TAKE_PTR(e.device);
			s->header = TAKE_PTR(e.header);
			s->volume_uuid = TAKE_PTR(e.volume_uuid);
			s->key_id = TAKE_PTR(e.key_id);
			s->key_arn = TAKE_PTR(e.key_arn);
			s->grant_id = TAKE_PTR(e.grant_id);
			n++;
		}
		dmbyok_registry_entry_done(&e);
	}
	dmbyok_strv_free(names);
	*ret = l;
	*ret_n = n;
	return 0;
}

/* No crypt mapping by that name, and a record that says dmbyokd tore it down. */
static bool is_torn_down(const char *name)
{
	struct mapping_status s = { 0 };
	struct registry_entry e = { 0 };
	bool r;

	if (dmbyok_read_mapping(name, false, &s) != -ENODEV) {
		dmbyok_mapping_status_done(&s);
		return false;
	}
	r = dmbyok_registry_load(name, &e) == 0 && e.torn_down;
	dmbyok_registry_entry_done(&e);
	return r;
}

/* `close` of a torn-down volume: forget it (and its error mapping, once unused). */
static int close_torn_down(const char *name)
{
	_cleanup_device_lock_ struct dmbyok_device_lock lock = DMBYOK_DEVICE_LOCK_INIT;
	_cleanup_free_ char *type = NULL, *dm_uuid = NULL;
	struct registry_entry e = { 0 };
	int open_count, r;

	GUARD(dmbyok_registry_load(name, &e));
	r = dmbyok_device_lock_path(e.device, DMBYOK_DEVICE_LOCK_TIMEOUT_MS, &lock);
	if (r < 0)
		goto out;
	r = dmbyok_dm_get_target(name, &type, &dm_uuid, &open_count);
	if (r == 0 && !strcmp(type, "error")) {
		r = dmbyok_dm_crypt_remove(name);
		if (r < 0)
			goto out;
	} else if (r < 0 && r != -ENODEV)
		goto out;
	r = dmbyok_registry_remove(name);
	if (r == 0)
		log_info("Closed %s (it had been torn down by dmbyokd).", name);
out:
	dmbyok_registry_entry_done(&e);
	return r;
}

int dmbyok_close(const char *name)
{
	GUARD(dmbyok_dm_check_kernel_support());
	return is_torn_down(name) ? close_torn_down(name) : dmbyok_close_mapping(name);
}

int dmbyok_unlock(const char *name, const char *header, const struct kms_options *kms)
{
	GUARD(dmbyok_dm_check_kernel_support());
	return is_torn_down(name) ? dmbyok_reprovision(name, kms)
	                          : dmbyok_unlock_mapping(name, header, kms);
}
