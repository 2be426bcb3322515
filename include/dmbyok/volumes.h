/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * /etc/dmbyok/volumes: the volumes this host attaches by itself (at boot by dmbyokd, when
 * their disk appears through udev), one a line, crypttab-like (docs/volumes.md):
 *
 *   # NAME   DEVICE                                   OPTIONS
 *   orders   UUID=2f6c0b1e-...                        nofail,perf=no-read-workqueue
 *   search   /dev/disk/by-id/nvme-Amazon_EBS_vol0a1   header=/etc/dmbyok/search.hdr
 *
 * DEVICE is UUID= (the LUKS2 UUID), PARTUUID=, LABEL= or an absolute path. A bad line is
 * reported with its number and skipped; it never stops the other volumes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dmbyok/macro.h"

#define DMBYOK_VOLUMES_PATH "/etc/dmbyok/volumes"

struct dmbyok_volume_entry {
	unsigned line;
	char *name;
	char *device; /* as written: UUID=, PARTUUID=, LABEL= or a path */
	char *header; /* header=FILE, or NULL */
	bool nofail;  /* never holds the boot */
	bool perf_set;
	uint32_t perf_flags;     /* perf=FLAGS: overrides the header's persistent flags */
	char *on_revoke;         /* on-revoke=PROGRAM, or NULL (the agent's default) */
	char *on_restore;        /* on-restore=PROGRAM, or NULL */
	unsigned teardown_after; /* teardown-after=SECONDS; 0: the agent's default */
	bool teardown_after_set;
};

struct dmbyok_volumes {
	char *path;
	struct dmbyok_volume_entry *entries;
	size_t n;
	unsigned n_bad; /* lines reported and skipped */
};

/* The table's path: $DMBYOK_VOLUMES when set (tests), else DMBYOK_VOLUMES_PATH. */
const char *dmbyok_volumes_path(void);
/*
 * Reads a table (NULL: dmbyok_volumes_path()). A missing file is an empty table. Bad lines
 * are logged as "FILE:LINE: why" and counted in n_bad; only I/O errors fail.
 */
int dmbyok_volumes_load(const char *path, struct dmbyok_volumes **ret);
void dmbyok_volumes_free(struct dmbyok_volumes *t);
DEFINE_CLEANUP_FUNC(struct dmbyok_volumes *, dmbyok_volumes_free);
#define _cleanup_volumes_ _cleanup_(dmbyok_volumes_freep)

/* Parses one line ("NAME DEVICE [OPTIONS]"); -EINVAL with *ret_why set when malformed. */
int dmbyok_volume_entry_parse(const char *line, struct dmbyok_volume_entry *ret,
                              const char **ret_why);
void dmbyok_volume_entry_done(struct dmbyok_volume_entry *e);

const struct dmbyok_volume_entry *dmbyok_volumes_find(const struct dmbyok_volumes *t,
                                                      const char *name);
/* The block device an entry names, as a /dev path; -ENODEV while it is absent. */
int dmbyok_volume_entry_resolve(const struct dmbyok_volume_entry *e, char **ret_devnode);
/* The entry whose device is `devnode` (same block device), or -ENOENT. */
int dmbyok_volumes_find_device(const struct dmbyok_volumes *t, const char *devnode,
                               const struct dmbyok_volume_entry **ret);

/*
 * Edits the table in place: appends "NAME DEVICE [OPTIONS]" (checked first; the name and
 * the device must be new) or removes NAME's line. Comments and other lines are kept; the
 * file is replaced atomically under a lock, so concurrent editors never lose a line.
 */
int dmbyok_volumes_add(const char *path, const char *line);
int dmbyok_volumes_remove(const char *path, const char *name);
