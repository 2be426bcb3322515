/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * dmbyok's runtime state under /run/dmbyok (DMBYOK_RUNTIME_DIR): the records of open
 * mappings and the per-device locks that every entry point (CLI, agent, udev attach, token
 * plugin) takes before it looks at or changes a device. Nothing here is secret, but all of
 * it is trusted: the directories must belong to us and be writable by nobody else.
 */

#include <sys/types.h>

#include "dmbyok/macro.h"

/* How long an operation waits for another one on the same device by default. */
#define DMBYOK_DEVICE_LOCK_TIMEOUT_MS 60000U

/*
 * The path of `sub` under the runtime directory, created (0700) when missing. -EPERM when
 * it (or the runtime directory) is a symlink, not a directory, not owned by us, or
 * writable by group or others: a record or lock there could be forged.
 */
int dmbyok_runtime_subdir(const char *sub, char **ret);

/*
 * An exclusive lock on one block device, keyed by its device number like cryptsetup's
 * /run/cryptsetup/L_MAJ:MIN: held from the in-use check to the table load (open), around
 * the state check and the suspend or resume (lock, unlock), and around a token rewrite.
 * Waits up to timeout_ms for another holder (logging that it waits), then -EBUSY. The lock
 * is a POSIX record lock: held by this process only (not by children it forks), dropped by
 * the kernel when the process exits, even by kill -9. Threads of one process share it.
 */
struct dmbyok_device_lock {
	int fd;
	dev_t devno;
};

int dmbyok_device_lock_devno(dev_t devno, unsigned timeout_ms, struct dmbyok_device_lock *ret);
/* Locks the block device at `path` (a symlink such as /dev/disk/by-id/... is followed). */
int dmbyok_device_lock_path(const char *path, unsigned timeout_ms, struct dmbyok_device_lock *ret);
/* Releases; accepts a lock that was never taken (fd < 0). */
void dmbyok_device_unlock(struct dmbyok_device_lock *l);
#define _cleanup_device_lock_   _cleanup_(dmbyok_device_unlock)
#define DMBYOK_DEVICE_LOCK_INIT ((struct dmbyok_device_lock){ .fd = -1 })
