/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Memory for data keys. A secret lives in its own anonymous mapping that is mlock'd (never
 * swapped), excluded from core dumps (MADV_DONTDUMP) and wiped-on-fork (MADV_WIPEONFORK),
 * and is zeroed before it is unmapped. Nothing else in dmbyok may hold a plaintext DEK.
 */

#include <stddef.h>
#include <stdint.h>

#include "dmbyok/macro.h"

struct secret {
	size_t size;     /* bytes in use */
	size_t capacity; /* bytes usable in data[] */
	uint8_t *data;
};

/* A zero-filled secret of `size` bytes (capacity may be larger). */
int dmbyok_secret_new(size_t size, struct secret **ret);
/* Wipes and frees; accepts NULL. */
void dmbyok_secret_free(struct secret *s);
DEFINE_CLEANUP_FUNC(struct secret *, dmbyok_secret_free);
#define _cleanup_secret_ _cleanup_(dmbyok_secret_freep)

/* Append bytes (for streaming a response into locked memory); -E2BIG beyond capacity. */
int dmbyok_secret_append(struct secret *s, const void *data, size_t n);

/* Constant-time comparison of two buffers of equal length. */
int dmbyok_secret_equal(const void *a, const void *b, size_t n);

/* Zero memory in a way the compiler may not elide. */
void dmbyok_secure_wipe(void *p, size_t n);

/*
 * Process-wide hardening for anything that handles keys: no core dumps, not dumpable,
 * and glibc's allocator fills freed memory, so transient copies made by libraries
 * (json-c, libcurl) do not linger in the heap after they are freed.
 */
int dmbyok_harden_process(void);
