/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What the lifecycle modules (lifecycle.c, teardown.c) share; not part of the public API. */

#include "dmbyok/lifecycle.h"
#include "dmbyok/volume.h"
#include "runtime.h"

#define KEY_DESC_PREFIX "dmbyok:"
/* How long the device under a mapping may take to answer one read before we call it stalled. */
#define PROBE_MS 2000U

/* Unwrap a loaded volume's DEK: binding checks, KMS Decrypt, key check value. */
int dmbyok_unwrap_dek(struct volume *v, const struct kms_options *kms, struct secret **ret);
/* Its two halves: the checks made before any KMS call, and the call over a given client. */
int dmbyok_unwrap_check(const struct volume *v, const struct kms_options *kms);
int dmbyok_unwrap_dek_with(struct kms_client *c, struct volume *v, struct secret **ret);

/*
 * An open in three steps, so that dmbyok_attach_many can unwrap many volumes at once
 * between the serial ones: prepare (device lock, name free, header, device unused, checks),
 * the unwrap (into j->dek), finish (table load, record). done releases all, NULL-safe.
 */
struct open_job {
	const struct open_options *o;
	struct dmbyok_device_lock lock;
	struct volume *v;
	struct secret *dek;
};
int dmbyok_open_prepare(struct open_job *j, const struct kms_options *kms);
int dmbyok_open_finish(struct open_job *j);
void dmbyok_open_job_done(struct open_job *j);
/* The logon key description that carries a volume's key into dm-crypt. */
int dmbyok_key_description(const char *volume_uuid, char **ret);
/* The dm-crypt table of volume `v` with the given key reference and flags. */
struct dm_crypt_params dmbyok_crypt_params(const struct volume *v, const char *key_desc,
                                           size_t key_size, uint32_t flags);
/* Status of a dmbyok mapping, reading its header when asked (and the device answers). */
int dmbyok_read_mapping(const char *name, bool read_header, struct mapping_status *ret);
/* Takes the lock of the device under mapping `name`, then reads its status again. */
int dmbyok_lock_mapping(const char *name, unsigned timeout_ms, struct dmbyok_device_lock *ret_lock,
                        struct mapping_status *ret);
/* The header, read quietly and only from a device that answers; NULL otherwise. */
struct volume *dmbyok_load_header_quietly(const char *device, const char *header);
/* close and unlock of a mapping; dmbyok_close/unlock (teardown.c) also know torn-down ones. */
int dmbyok_close_mapping(const char *name);
int dmbyok_unlock_mapping(const char *name, const char *header, const struct kms_options *kms);
