/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Attach: open the volumes of /etc/dmbyok/volumes by themselves, at boot (dmbyokd, many at
 * once) and when their disk appears (udev); detach: clean up after a disk that went away.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dmbyok/kms.h"
#include "dmbyok/volumes.h"

/* At most this many KMS unwraps run at once (threads, one KMS client each, reused). */
#define DMBYOK_ATTACH_CONCURRENCY 32U

struct dmbyok_attach {
	const char *name;
	const char *device; /* the resolved block device */
	const char *header; /* NULL: on the device */
	bool perf_set;
	uint32_t perf_flags;
	/*
	 * Out: 0 attached; -EALREADY it already was (this name over this device); -EBUSY the
	 * device is mapped under another name; else why not, in dmbyok's error taxonomy
	 * (dmbyok_error_class tells a revoked key from an unreachable KMS).
	 */
	int result;
};

/*
 * Attaches n volumes: the header reads and table loads one after the other (under each
 * device's lock, held throughout), the KMS unwraps up to `concurrency` at a time (0: the
 * default). Per-volume outcomes are in a[i].result; returns how many failed (>= 0).
 */
int dmbyok_attach_many(struct dmbyok_attach *a, size_t n, const struct kms_options *kms,
                       unsigned concurrency);

/* The name of the mapping over block device `devnode`, if any (1), else 0. */
int dmbyok_mapping_of_device(const char *devnode, char **ret_name);

/*
 * After a disk went away: every dmbyok mapping whose underlying device no longer exists
 * (or only those over `kernel_name`, e.g. "vdb", when not NULL) gets the error target, so
 * its key leaves kernel memory and its users see EIO, and is removed, at once or with its
 * last user; its record is forgotten. Returns how many were detached.
 */
int dmbyok_detach_gone(const char *kernel_name);
