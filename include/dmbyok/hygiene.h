/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include "dmbyok/kms.h"

/*
 * Key hygiene: what keeps data from outliving the customer's key.
 *
 *   shred      makes a volume's key unrecoverable: both LUKS2 header copies and the keyslot
 *              area (the wrapped DEK with them) overwritten with zeros on the disk.
 *   ephemeral  a dm-crypt mapping (swap, scratch) whose random key never leaves kernel
 *              memory: no header, no KMS, gone at power-off.
 *   policy     `doctor --policy`: what on this host breaks "all data encrypted under the
 *              customer's key" (plain file systems under data paths, plain swap, /tmp).
 *
 * Each changes a device only under the device's lock (runtime.h), after its checks; a
 * failure before the change leaves the device as it was and says what to do.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* --- shred ---------------------------------------------------------------------------- */

#define DMBYOK_SHRED_RANGES_MAX 3

/* One byte range a shred overwrites (or overwrote) with zeros. */
struct dmbyok_shred_range {
	char *path;       /* the data device, or the detached header file */
	uint64_t offset;  /* bytes */
	uint64_t length;  /* bytes */
	const char *what; /* "primary LUKS2 header", "secondary LUKS2 header", "keyslot area" */
};

/* What a shred found and wipes: shown before the confirmation, recorded after the wipe. */
struct dmbyok_shred_plan {
	char *device;      /* the data device, as given */
	char *header;      /* the detached header file, or NULL */
	char *volume_uuid; /* the LUKS2 UUID; NULL when the header no longer loads (--force) */
	char *key_arn;     /* the customer key that wrapped the DEK; NULL when unknown */
	char *region;      /* the token's KMS region, or NULL */
	char *grant_id;    /* the volume's own KMS grant (format --grant), or NULL */
	/* what became of it: "retired", "gone" (revoked or retired before), "kept", or NULL */
	const char *grant_outcome;
	bool damaged;     /* the header no longer loads: what is left of it is wiped (--force) */
	char **forgotten; /* runtime records of this device (torn down by dmbyokd), forgotten */
	size_t n_ranges;  /* in disk order; the wipe goes backwards (see shred.c) */
	struct dmbyok_shred_range ranges[DMBYOK_SHRED_RANGES_MAX];
};
void dmbyok_shred_plan_done(struct dmbyok_shred_plan *p);

/* Asked once everything is checked, before the first byte is written: 0 goes on. */
typedef int (*dmbyok_shred_confirm_fn)(const struct dmbyok_shred_plan *p, void *userdata);

struct dmbyok_shred_options {
	const char *device;
	const char *header; /* detached header file, or NULL */
	/*
	 * Also wipe a header that no longer loads but still carries a LUKS magic (an interrupted
	 * shred, or any damaged header), or a LUKS header without a dmbyok token.
	 */
	bool force;
	/*
	 * A volume with its own KMS grant has it retired before the first write; when that
	 * fails, nothing is changed unless keep_grant (then the record names the grant).
	 */
	const struct kms_options *kms;
	bool keep_grant;
	dmbyok_shred_confirm_fn confirm; /* NULL: no confirmation (the caller asked already) */
	void *userdata;
};

/*
 * Shred a dmbyok volume (docs/ephemeral.md, dmbyok-shred(8)). Refuses (-EBUSY) a device
 * that is open (names the mapping), mounted or held; -ENODATA when there is no LUKS header
 * left (already shredded, or never formatted). On success *ret holds what was wiped, and
 * the structured record (DMBYOK_MESSAGE_SHREDDED) is logged.
 */
int dmbyok_shred(const struct dmbyok_shred_options *o, struct dmbyok_shred_plan *ret);

/* The journal record of a completed shred (called by dmbyok_shred). */
void dmbyok_shred_log(const struct dmbyok_shred_plan *p);

/* --- ephemeral ------------------------------------------------------------------------ */

/*
 * dm UUID of an ephemeral mapping: cryptsetup's plain form ("CRYPT-PLAIN-..."), so
 * `cryptsetup status/close` understand it, with a tag that dmbyok recognises. Not the LUKS2
 * form: `dmbyok list` and dmbyokd, which look for LUKS2 mappings, never take it for a volume.
 */
#define DMBYOK_EPHEMERAL_UUID_PREFIX "CRYPT-PLAIN-DMBYOK-EPHEMERAL-"
/* The logon key description that carries its key into dm-crypt for the table load. */
#define DMBYOK_EPHEMERAL_KEY_PREFIX "dmbyok-ephemeral:"

struct dmbyok_ephemeral_options {
	const char *device;
	const char *name;
	uint32_t sector_size; /* encryption sector size in bytes; 0: 4096 where possible */
	bool force;           /* map a device that holds a signature (file system, LUKS, swap) */
};

/* Map DEVICE as NAME with aes-xts-plain64 and a random 512-bit key nobody ever sees. */
int dmbyok_ephemeral_open(const struct dmbyok_ephemeral_options *o);
/* 1 when NAME is an ephemeral mapping, 0 when it is not (or does not exist), < 0 on error. */
int dmbyok_ephemeral_is_mapping(const char *name);
/* Remove an ephemeral mapping (-EBUSY while in use: swapoff or unmount first). */
int dmbyok_ephemeral_close(const char *name);
bool dmbyok_ephemeral_dm_uuid(const char *dm_uuid);

/* --- policy: doctor --policy ---------------------------------------------------------- */

/* What stores a file system's or swap's bytes, as far as the kernel tells. */
enum dmbyok_storage {
	DMBYOK_STORAGE_DMBYOK,      /* a dmbyok crypt mapping: the customer's key */
	DMBYOK_STORAGE_EPHEMERAL,   /* a dmbyok ephemeral mapping: a key only in kernel memory */
	DMBYOK_STORAGE_OTHER_CRYPT, /* dm-crypt, but not under a customer key (cryptsetup) */
	DMBYOK_STORAGE_MEMORY,      /* tmpfs, ramfs, zram: in memory, unless swapped out */
	DMBYOK_STORAGE_PLAIN,       /* a block device nothing encrypts */
	DMBYOK_STORAGE_UNKNOWN,     /* not a block device (9p, NFS, overlay, FUSE...) */
};
const char *dmbyok_storage_name(enum dmbyok_storage s);

enum dmbyok_policy_status {
	DMBYOK_POLICY_OK,
	DMBYOK_POLICY_VIOLATION,
	DMBYOK_POLICY_UNKNOWN, /* cannot be proven: the policy does not hold either */
};
const char *dmbyok_policy_status_name(enum dmbyok_policy_status s);

struct dmbyok_policy_finding {
	const char *check; /* "data", "swap" or "tmp" (static) */
	char *path;        /* the mount point, or the swap file or device */
	char *data_path;   /* "data": the --data-path it is under; NULL otherwise */
	char *fstype;      /* NULL for swap */
	char *source;      /* the mount's source, or NULL */
	char *devno;       /* "MAJ:MIN" of what holds it */
	enum dmbyok_storage storage;
	char *mapping; /* the mapping that encrypts it (dmbyok, ephemeral, dm-crypt), or NULL */
	char *key_arn; /* its customer key, when dmbyok knows it */
	enum dmbyok_policy_status status;
	char *reason; /* one sentence for the operator */
};

struct dmbyok_policy_report {
	struct dmbyok_policy_finding *findings;
	size_t n;
	bool holds;
};
void dmbyok_policy_report_done(struct dmbyok_policy_report *r);

/* One line of /proc/self/mountinfo, the parts the policy needs (escapes undone). */
struct dmbyok_mount {
	char *mount_point;
	unsigned major, minor;
	char *fstype;
	char *source;
};
int dmbyok_parse_mountinfo(const char *text, struct dmbyok_mount **ret, size_t *ret_n);
void dmbyok_mounts_free(struct dmbyok_mount *m, size_t n);

/* One line of /proc/swaps. */
struct dmbyok_swap {
	char *path;
	bool is_file;
};
int dmbyok_parse_swaps(const char *text, struct dmbyok_swap **ret, size_t *ret_n);
void dmbyok_swaps_free(struct dmbyok_swap *s, size_t n);

/* Where the policy looks: the host's by default, fixtures in tests. */
struct dmbyok_policy_env {
	const char *sysfs;     /* "/sys" */
	const char *mountinfo; /* the text of /proc/self/mountinfo */
	const char *swaps;     /* the text of /proc/swaps */
	/*
	 * 1 when dm mapping NAME is a dmbyok volume (*ret_key_arn: its key or NULL), 0 when it
	 * is not, < 0 when that cannot be told (no access to device-mapper: not root).
	 */
	int (*is_dmbyok)(const char *name, char **ret_key_arn, void *userdata);
	int (*stat_path)(const char *path, struct stat *ret, void *userdata);
	void *userdata;
};

/*
 * The findings for absolute, resolved data paths: every mount under each (and the one that
 * holds it), every swap, /tmp and /var/tmp. Pseudo file systems that hold no data (proc,
 * sysfs, cgroup...) are skipped.
 */
int dmbyok_policy_evaluate(const struct dmbyok_policy_env *env, char *const *data_paths,
                           size_t n_data_paths, struct dmbyok_policy_report *ret);
/* The same on this host; -ENOENT (logged) for a data path that does not exist. */
int dmbyok_policy_check(char *const *data_paths, size_t n_data_paths,
                        struct dmbyok_policy_report *ret);
