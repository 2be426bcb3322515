/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The runtime registry: one JSON file per open dmbyok mapping under
 * /run/dmbyok/mappings (tmpfs, gone at reboot), so that unlock, status and the agent know
 * which device and detached header a mapping came from. No secrets.
 */

#include <stdbool.h>
#include <stdint.h>

#include "dmbyok/lifecycle.h"

struct registry_entry {
	char *name;
	char *device;
	char *header;
	char *volume_uuid;
	char *key_id;
	char *key_arn;
	char *grant_id; /* the token's per-volume grant, or NULL */
	bool frozen;    /* `lock` froze the mapping's file systems: `unlock` thaws them */
	/* dmbyokd tore the mapping down (key revoked): reprovision re-creates it from this */
	bool torn_down;
	uint32_t flags; /* DM_CRYPT_* of the torn-down mapping */
};

void dmbyok_registry_entry_done(struct registry_entry *e);
int dmbyok_registry_save(const struct registry_entry *e);
/* -ENOENT when there is no record for `name`. */
int dmbyok_registry_load(const char *name, struct registry_entry *ret);
int dmbyok_registry_remove(const char *name);
/* Names of all records (NULL-terminated, free with dmbyok_strv_free()). */
int dmbyok_registry_list(char ***ret_names);
