/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs that only look: status, list, dump. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

static json_object *status_json(const struct mapping_status *s)
{
	json_object *o = json_object_new_object();

#define ADD_STR(k, v) json_object_object_add(o, k, (v) ? json_object_new_string(v) : NULL)
	ADD_STR("name", s->dm.name);
	ADD_STR("state", dmbyok_mapping_state_name(s));
	ADD_STR("device", s->device ? s->device : s->dm.device);
	ADD_STR("header", s->header);
	ADD_STR("volume_uuid", s->volume_uuid);
	ADD_STR("key_id", s->key_id);
	ADD_STR("key_arn", s->key_arn);
	ADD_STR("cipher", s->dm.cipher);
	json_object_object_add(o, "sector_size", json_object_new_int((int)s->dm.sector_size));
	json_object_object_add(o, "offset_sectors", json_object_new_int64((int64_t)s->dm.offset));
	json_object_object_add(o, "size_sectors", json_object_new_int64((int64_t)s->dm.length));
	json_object_object_add(o, "open_count", json_object_new_int(s->dm.open_count));
	json_object_object_add(o, "frozen", json_object_new_boolean(s->frozen));
	ADD_STR("record", s->record);
	json_object_object_add(
	    o, "no_read_workqueue",
	    json_object_new_boolean(!!(s->dm.flags & DM_CRYPT_NO_READ_WORKQUEUE)));
	json_object_object_add(
	    o, "no_write_workqueue",
	    json_object_new_boolean(!!(s->dm.flags & DM_CRYPT_NO_WRITE_WORKQUEUE)));
#undef ADD_STR
	return o;
}

static void status_print(const struct mapping_status *s)
{
	printf("%s is %s.\n", s->dm.name, dmbyok_mapping_state_name(s));
	printf("  device:      %s\n", s->device ? s->device : s->dm.device);
	if (s->header)
		printf("  header:      %s\n", s->header);
	if (s->volume_uuid)
		printf("  volume:      %s\n", s->volume_uuid);
	if (s->key_arn)
		printf("  key:         %s (%s)\n", s->key_id ? s->key_id : "-", s->key_arn);
	printf("  cipher:      %s, %u-byte sectors\n", s->dm.cipher, s->dm.sector_size);
	printf("  offset:      %" PRIu64 " sectors\n  size:        %" PRIu64 " sectors\n",
	       s->dm.offset, s->dm.length);
	printf("  workqueues:  read %s, write %s\n",
	       s->dm.flags & DM_CRYPT_NO_READ_WORKQUEUE ? "bypassed" : "used",
	       s->dm.flags & DM_CRYPT_NO_WRITE_WORKQUEUE ? "bypassed" : "used");
	printf("  in use:      %d\n", s->dm.open_count);
	printf("  record:      %s\n", s->record);
	if (!s->locked && s->dm.suspended)
		printf("  note:        suspended with its key in memory (an interrupted lock): run "
		       "`dmbyok lock %s` or `dmbyok unlock %s`\n",
		       s->dm.name, s->dm.name);
}

static void print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
	                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int verb_status(struct cli *c)
{
	struct mapping_status s = { 0 };
	int r;

	GUARD(cli_require_args(c, 0, 1, "status [NAME] [--json]"));
	if (c->n_args == 0)
		return verb_list(c);
	GUARD(dmbyok_check_kernel());
	r = dmbyok_status(c->args[0], &s);
	if (r == -ENODEV)
		return log_error_errno(ENOENT, "No dmbyok mapping named %s.", c->args[0]);
	if (r < 0)
		return log_error_errno(r, "Cannot read %s: %s", c->args[0], dmbyok_strerror(r));
	if (c->json)
		print_json(status_json(&s));
	else
		status_print(&s);
	dmbyok_mapping_status_done(&s);
	return 0;
}

int verb_list(struct cli *c)
{
	struct mapping_status *l = NULL;
	json_object *arr = NULL;
	size_t n = 0;

	GUARD(dmbyok_check_kernel());
	GUARD(dmbyok_list(&l, &n));
	if (c->json)
		arr = json_object_new_array();
	else
		printf("%-16s %-10s %-20s %s\n", "NAME", "STATE", "DEVICE", "KEY");
	for (size_t i = 0; i < n; i++) {
		const struct mapping_status *s = &l[i];

		if (arr)
			json_object_array_add(arr, status_json(s));
		else
			printf("%-16s %-10s %-20s %s\n", s->dm.name, dmbyok_mapping_state_name(s),
			       s->device ? s->device : s->dm.device, s->key_arn ? s->key_arn : "-");
	}
	if (arr)
		print_json(arr);
	dmbyok_mapping_status_list_free(l, n);
	return 0;
}

/* A member of the dump as text, or "-". */
static const char *str(json_object *o, const char *path1, const char *path2)
{
	json_object *v = NULL;

	if (!json_object_object_get_ex(o, path1, &v) ||
	    (path2 && !json_object_object_get_ex(v, path2, &v)))
		return "-";
	return json_object_get_string(v);
}

int verb_dump(struct cli *c)
{
	json_object *o = NULL;

	GUARD(cli_require_args(c, 1, 1, "dump DEVICE [--header FILE] [--json]"));
	GUARD(dmbyok_dump(c->args[0], c->header, &o));
	if (c->json) {
		print_json(o);
		return 0;
	}
	printf("dmbyok volume %s\n", str(o, "volume_uuid", NULL));
	printf("  device:       %s\n", str(o, "device", NULL));
	if (json_object_object_get_ex(o, "header", NULL))
		printf("  header:       %s\n", str(o, "header", NULL));
	printf("  cipher:       %s, %s-bit key, %s-byte sectors\n", str(o, "cipher", NULL),
	       str(o, "key_bits", NULL), str(o, "sector_size", NULL));
	printf("  data:         offset %s sectors, %s sectors\n",
	       str(o, "data_offset_sectors", NULL), str(o, "data_size_sectors", NULL));
	printf("  keyslot:      %s (unlocked by the data key itself)\n", str(o, "keyslot", NULL));
	printf("  kms:          %s, region %s\n", str(o, "token", "kms"),
	       str(o, "token", "region"));
	printf("  key:          %s\n  key ARN:      %s\n", str(o, "token", "key_id"),
	       str(o, "token", "key_arn"));
	printf("  context:      %s\n", str(o, "token", "context"));
	printf("  key check:    %s (token version %s)\n", str(o, "token", "key_check"),
	       str(o, "token", "version"));
	if (strcmp(str(o, "token", "binding"), "-") != 0)
		printf("  bound to:     %s%s\n", str(o, "token", "binding"),
		       json_object_get_boolean(json_object_object_get(o, "binding_matches"))
		           ? ""
		           : " (NOT this header's: re-encrypted since format?)");
	printf("  created:      %s\n", str(o, "token", "created"));
	if (strcmp(str(o, "token", "rewrapped"), "-") != 0)
		printf("  re-wrapped:   %s\n", str(o, "token", "rewrapped"));
	json_object_put(o);
	return 0;
}
