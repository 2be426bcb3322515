/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Volume lifecycle: the operations the CLI offers and the agent will drive, composed from
 * the KMS, volume and dm layers. Each either succeeds or leaves header and mappings as
 * they were, and logs what happened and what to do.
 */

#include <stdbool.h>
#include <stdint.h>

#include "dmbyok/dm.h"
#include "dmbyok/kms.h"
#include "dmbyok/token.h"

/*
 * Performance flags dmbyok persists unless told otherwise. bench/run io measured the
 * workqueue bypass (no_read/no_write_workqueue) at 0.4-0.7x of the default dm-crypt path
 * in the test VM, so the default is cryptsetup's; `--perf` opts in per volume.
 */
#define DMBYOK_DEFAULT_PERF_FLAGS 0

struct format_options {
	const char *device;
	const char *header; /* detached header file, or NULL */
	const char *key_id; /* key id, ARN, alias name or alias ARN */
	char **context;     /* operator "k=v" pairs (not secret) */
	size_t n_context;
	bool force;
	uint32_t perf_flags; /* persisted DM_CRYPT_* flags */
	/*
	 * AWS: create a grant for this volume alone (docs/grants.md), to `grantee` or, when
	 * NULL, to the principal this host's credentials act as.
	 */
	bool grant;
	const char *grantee;
};

struct open_options {
	const char *device;
	const char *header;
	const char *name;
	bool override_flags; /* use `flags` instead of the header's persistent flags */
	uint32_t flags;
};

int dmbyok_format(const struct format_options *o, const struct kms_options *kms, char **ret_uuid);
int dmbyok_open(const struct open_options *o, const struct kms_options *kms);
int dmbyok_close(const char *name);

struct volume;
/*
 * The fast path after the DEK is unwrapped and checked: program the dm-crypt table. No KDF,
 * no LUKS2 digest: the key check value in the token already proved the key.
 */
int dmbyok_activate(const struct volume *v, const char *name, uint32_t flags,
                    const struct secret *dek);
/*
 * Lock: freeze the file system (bounded), suspend (bounded), `key wipe`, drop the page
 * cache. Finishes within timeout_ms (0: DMBYOK_LOCK_TIMEOUT_MS) or fails and leaves the
 * mapping as it was. A file system that cannot be frozen in time does not stop the lock.
 * Repairs an interrupted lock (suspended with its key): wipes the key.
 */
#define DMBYOK_LOCK_TIMEOUT_MS 30000U
int dmbyok_lock(const char *name, unsigned timeout_ms);
/* Unlock repairs an interrupted lock too: resumes it (its key is still there). */
int dmbyok_unlock(const char *name, const char *header, const struct kms_options *kms);

/*
 * Teardown, after a revocation (dmbyokd): locks the mapping if it is not, then removes it
 * if nobody holds it open (0). One in use is left locked (1) unless error_if_in_use: then
 * its table becomes the `error` target, so blocked processes get EIO, and it is removed
 * when its last user closes it (2). Either way its runtime record stays, marked torn
 * down, for dmbyok_reprovision(); `list` (dmbyok_list_torn_down) shows it.
 */
int dmbyok_teardown(const char *name, unsigned timeout_ms, bool error_if_in_use);
/*
 * Maps a torn-down volume again, as it was: same name, device, detached header and flags,
 * after a KMS Decrypt proves the key is back. A mapping still held open gets its crypt
 * table back in place. `unlock NAME` does this for a torn-down NAME; `close NAME` forgets it.
 */
int dmbyok_reprovision(const char *name, const struct kms_options *kms);

/* Re-wrap the DEK (KMS ReEncrypt) under `new_key_id`, or under the token's key_id again
 * (which follows an alias to its current key). The data and the DEK do not change. */
int dmbyok_rewrap(const char *device, const char *header, const char *new_key_id,
                  const struct kms_options *kms);

/* What `status` and `list` show about a dmbyok mapping. */
struct mapping_status {
	struct dm_crypt_info dm;
	bool locked;        /* suspended with its key wiped */
	bool frozen;        /* its file system was frozen by `lock` (thawed by `unlock`) */
	bool torn_down;     /* from dmbyok_list_torn_down(): no crypt mapping, only the record */
	const char *record; /* runtime record: "ok", "missing" or "stale" (static string) */
	char *device;       /* the data device as opened */
	char *header;       /* detached header, or NULL */
	char *volume_uuid;
	char *key_id;
	char *key_arn;
	char *grant_id; /* the per-volume grant the DEK is unwrapped through, or NULL */
};
void dmbyok_mapping_status_done(struct mapping_status *s);
/* "active", "locked", or "suspended-keyed" (an interrupted lock). */
const char *dmbyok_mapping_state_name(const struct mapping_status *s);
/* -ENODEV when NAME is not a dmbyok mapping. */
int dmbyok_status(const char *name, struct mapping_status *ret);
/* Status of every dmbyok mapping; free with dmbyok_mapping_status_list_free(). */
int dmbyok_list(struct mapping_status **ret, size_t *ret_n);
/*
 * Without read_headers, key names come from the runtime records, and headers are read only
 * for mappings that have none (opened by cryptsetup's token plugin, say): cheap enough for
 * the agent to rescan on every device-mapper event.
 */
int dmbyok_list_mappings(bool read_headers, struct mapping_status **ret, size_t *ret_n);
void dmbyok_mapping_status_list_free(struct mapping_status *l, size_t n);
/* Volumes torn down by dmbyokd (from their records): name, device, header, keys, flags. */
int dmbyok_list_torn_down(struct mapping_status **ret, size_t *ret_n);

/*
 * doctor: each check of the kernel (device-mapper, keyring, xts acceleration); given
 * key_id, of every KMS call dmbyok makes; given a volume's device, of that volume: its
 * header and token, the unwrap of its DEK, its grant, and where this host's access to its
 * key comes from (grant only, or the key policy too). Reported as each completes: r 0
 * passed, r < 0 failed (provider_said: the KMS's own words, or NULL), r > 0 a warning.
 * Returns the last failure, or 0.
 */
typedef void (*dmbyok_doctor_report_fn)(const char *check, int r, const char *detail,
                                        const char *provider_said, void *userdata);
struct doctor_options {
	const char *key_id; /* NULL: no KMS round trip */
	const char *device; /* NULL: no volume checks */
	const char *header; /* the volume's detached header, or NULL */
};
int dmbyok_doctor(const struct doctor_options *o, const struct kms_options *kms,
                  dmbyok_doctor_report_fn report, void *userdata);

/* The dmbyok token of a volume's header (checked to belong to it). */
int dmbyok_read_token(const char *device, const char *header, struct dmbyok_token **ret);
/*
 * Whether this host may still unwrap under the token's key: one KMS Decrypt of its wrapped
 * DEK with its encryption context (which sees disable, deletion, key policy, grants and
 * IAM), the plaintext wiped at once. 0, or the KMS error in dmbyok's taxonomy.
 */
#define DMBYOK_PROBE_KEY_DELETED 1u /* the key no longer exists (DescribeKey: no such key) */
#define DMBYOK_PROBE_ALIAS_MOVED 2u /* the token's alias names another key now: re-wrap */
/*
 * *ret_found tells more than the result when `describe` allows a DescribeKey:
 * DMBYOK_PROBE_DESCRIBE_DELETED on a revoked answer tells whether the key is gone for good;
 * DMBYOK_PROBE_DESCRIBE_ALIAS on a good answer for an alias-named token, whether the alias
 * was re-targeted. KMS calls: 1, or 2 when the answer calls for an allowed DescribeKey.
 * (The agent allows the deletion check on every revoked answer until the key is locked,
 * then on every 6th probe; the alias check on every 6th probe.)
 */
#define DMBYOK_PROBE_DESCRIBE_ALIAS   1u
#define DMBYOK_PROBE_DESCRIBE_DELETED 2u
int dmbyok_probe_key(const struct dmbyok_token *t, const struct kms_options *kms, unsigned describe,
                     unsigned *ret_found);
/* The same over a client the caller keeps: dmbyokd's probers reuse one per key. */
int dmbyok_probe_key_with(struct kms_client *c, const struct dmbyok_token *t, unsigned describe,
                          unsigned *ret_found);
/* A KMS client for `region` (the options' region wins), failures explained. */
int dmbyok_kms_client_for(const struct kms_options *kms, const char *region,
                          struct kms_client **ret);
/* The client a token's volume needs: its provider ("kms") and region (the options win). */
int dmbyok_kms_client_for_token(const struct kms_options *kms, const struct dmbyok_token *t,
                                struct kms_client **ret);

/* -ENOTSUP with a clear message unless the kernel has device-mapper and dm-crypt. */
int dmbyok_check_kernel(void);

/* Parse "no_read_workqueue,no_write_workqueue,..." or "none" into DM_CRYPT_* flags. */
int dmbyok_perf_flags_parse(const char *s, uint32_t *ret);

/* A volume's header and token as JSON, as `dump --json` shows them (nothing secret). */
int dmbyok_dump(const char *device, const char *header, json_object **ret);

/* The kernel's preferred xts(aes) driver, and whether it is hardware accelerated. */
int dmbyok_xts_driver(char **ret_driver, bool *ret_accelerated);

/* The directory where open mappings are recorded (DMBYOK_RUNTIME_DIR or /run/dmbyok). */
const char *dmbyok_runtime_dir(void);
