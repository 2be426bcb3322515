/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs that only look: status, list, dump. status and list also show the agent's view. */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cli.h"
#include "dmbyok/agent.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

/* What dmbyokd said (docs/agent-control.md), asked once per command. */
struct agent_view {
	int r;               /* 0: it answered; -ENOENT/-ECONNREFUSED: not running; else why not */
	json_object *status; /* its answer to "status" */
};

static void agent_view_load(struct agent_view *a)
{
	a->status = NULL;
	a->r = dmbyok_agent_query("status", NULL, &a->status);
}

static void agent_view_done(struct agent_view *a)
{
	json_object_put(a->status);
	a->status = NULL;
}

static bool agent_not_running(const struct agent_view *a)
{
	return a->r == -ENOENT || a->r == -ECONNREFUSED;
}

static const char *member_str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The entry of `array` (a member of the agent's status) whose `key` is `value`. */
static json_object *agent_find(const struct agent_view *a, const char *array, const char *key,
                               const char *value)
{
	json_object *l;

	if (a->r < 0 || !value || !json_object_object_get_ex(a->status, array, &l) ||
	    !json_object_is_type(l, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(l); i++) {
		json_object *e = json_object_array_get_idx(l, i);
		const char *v = member_str(e, key);

		if (v && !strcmp(v, value))
			return e;
	}
	return NULL;
}

/* The agent's watch of (key, grant): a volume's own grant is watched apart from its key. */
static json_object *agent_find_key(const struct agent_view *a, const char *key_arn,
                                   const char *grant_id)
{
	json_object *l;

	if (a->r < 0 || !key_arn || !json_object_object_get_ex(a->status, "keys", &l) ||
	    !json_object_is_type(l, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(l); i++) {
		json_object *e = json_object_array_get_idx(l, i);

		if (streq_ptr(member_str(e, "key_arn"), key_arn) &&
		    streq_ptr(member_str(e, "grant_id"), grant_id))
			return e;
	}
	return NULL;
}

/* A volume the agent reports without a mapping to show for it: torn down, key deleted... */
static bool agent_only(json_object *vol)
{
	const char *state = member_str(vol, "state");

	/* An active or locked volume has a mapping: without one, the agent has not rescanned. */
	return state && strcmp(state, "active") && strcmp(state, "locked");
}

/*
 * The "agent" member of a status entry: the agent's volume entry merged with its key's
 * probe fields (the key's own "state" and "volumes" renamed key_state and key_volumes).
 */
static json_object *agent_json(const struct agent_view *a, const char *name)
{
	json_object *o = json_object_new_object(), *vol, *key;

	if (!o)
		return NULL;
	if (agent_not_running(a)) {
		json_object_object_add(o, "running", json_object_new_boolean(0));
		return o;
	}
	if (a->r < 0) {
		json_object_object_add(o, "error", json_object_new_string(dmbyok_strerror(a->r)));
		return o;
	}
	json_object_object_add(o, "running", json_object_new_boolean(1));
	vol = agent_find(a, "volumes", "name", name);
	json_object_object_add(o, "watched", json_object_new_boolean(vol != NULL));
	if (!vol)
		return o;
	json_object_object_foreach (vol, vk, vv) {
		json_object_object_add(o, vk, json_object_get(vv));
	}
	key = agent_find_key(a, member_str(vol, "key_arn"), member_str(vol, "grant_id"));
	if (!key)
		return o;
	json_object_object_foreach (key, kk, kv) {
		const char *k = !strcmp(kk, "state")     ? "key_state"
		                : !strcmp(kk, "volumes") ? "key_volumes"
		                                         : kk;

		if (!json_object_object_get_ex(o, k, NULL))
			json_object_object_add(o, k, json_object_get(kv));
	}
	return o;
}

/* An RFC 3339 UTC time as the agent writes it (fractions of a second allowed). */
static bool parse_time(const char *s, time_t *ret)
{
	struct tm tm = { 0 };
	const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;

	if (!end)
		return false;
	if (*end == '.')
		for (end++; isdigit((unsigned char)*end); end++)
			;
	if (strcmp(end, "Z") != 0)
		return false;
	*ret = timegm(&tm);
	return true;
}

/* "12 s", "5 min", "3 h", "2 d" since `when`; "?" when it cannot be read. */
static void format_ago(const char *when, char *buf, size_t size)
{
	time_t t;
	long long d;

	if (!parse_time(when, &t)) {
		snprintf(buf, size, "?");
		return;
	}
	d = (long long)difftime(time(NULL), t);
	d = d < 0 ? 0 : d;
	if (d < 120)
		snprintf(buf, size, "%lld s", d);
	else if (d < 7200)
		snprintf(buf, size, "%lld min", d / 60);
	else if (d < 172800)
		snprintf(buf, size, "%lld h", d / 3600);
	else
		snprintf(buf, size, "%lld d", d / 86400);
}

_printf_(3, 4) static void append(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len >= size - 1)
		return;
	if (len > 0)
		len += (size_t)snprintf(buf + len, size - len, "; ");
	if (len >= size - 1)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

/* Why the agent locked a key, in words. */
static const char *reason_words(const char *reason)
{
	if (!strcmp(reason, "revoked"))
		return "key revoked";
	if (!strcmp(reason, "fail-closed"))
		return "fail-closed (no good answer for too long)";
	if (!strcmp(reason, "deleted"))
		return "key deleted";
	if (!strcmp(reason, "adopted"))
		return "found locked when the agent started";
	return reason;
}

/*
 * The agent's view in one line: "locked (key revoked 12 s ago; last probe 2026-...:
 * key-revoked in 41 ms; next in 1.2 s)", "not running", ...
 */
static void agent_line(const struct agent_view *a, json_object *agent, char *line, size_t size)
{
	const char *state = member_str(agent, "state"), *reason = member_str(agent, "lock_reason");
	const char *probe = member_str(agent, "last_probe"), *t;
	char details[512] = "", ago[32];
	json_object *v;

	if (agent_not_running(a)) {
		snprintf(line, size, "not running");
		return;
	}
	if (a->r < 0) {
		snprintf(line, size, "unknown (%s)", dmbyok_strerror(a->r));
		return;
	}
	if (!state) {
		snprintf(line, size, "running, not watching this volume (yet)");
		return;
	}
	if (reason && strcmp(reason, "none")) {
		if ((t = member_str(agent, "locked_at"))) {
			format_ago(t, ago, sizeof(ago));
			append(details, sizeof(details), "%s %s ago", reason_words(reason), ago);
		} else {
			append(details, sizeof(details), "%s", reason_words(reason));
		}
	} else if ((t = member_str(agent, "key_state")) && !strcmp(t, "suspect")) {
		append(details, sizeof(details), "key suspect: revoked answers, not confirmed yet");
	} else if ((t = member_str(agent, "restored_at"))) {
		format_ago(t, ago, sizeof(ago));
		append(details, sizeof(details), "restored %s ago", ago);
	}
	if (probe) {
		const char *class = member_str(agent, "last_probe_class");

		if (json_object_object_get_ex(agent, "last_probe_latency_ms", &v) &&
		    json_object_is_type(v, json_type_int))
			append(details, sizeof(details), "last probe %s: %s in %" PRId64 " ms",
			       probe, class ? class : "?", json_object_get_int64(v));
		else
			append(details, sizeof(details), "last probe %s: %s", probe,
			       class ? class : "?");
	} else {
		append(details, sizeof(details), "no probe yet");
	}
	if (json_object_object_get_ex(agent, "next_probe_in_ms", &v) &&
	    json_object_is_type(v, json_type_int)) {
		int64_t ms = json_object_get_int64(v);

		if (ms < 10000)
			append(details, sizeof(details), "next in %.1f s",
			       (double)(ms < 0 ? 0 : ms) / 1000.0);
		else
			append(details, sizeof(details), "next in %" PRId64 " s", ms / 1000);
	}
	snprintf(line, size, "%s (%s)", state, details);
}

/* A volume the agent knows that has no mapping now: the agent's state for it. */
static json_object *agent_only_json(const struct agent_view *a, json_object *vol)
{
	const char *name = member_str(vol, "name");
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
#define ADD_STR(k, v) json_object_object_add(o, k, (v) ? json_object_new_string(v) : NULL)
	ADD_STR("name", name);
	ADD_STR("state", member_str(vol, "state"));
	ADD_STR("device", member_str(vol, "device"));
	ADD_STR("key_arn", member_str(vol, "key_arn"));
#undef ADD_STR
	json_object_object_add(o, "mapped", json_object_new_boolean(0));
	json_object_object_add(o, "agent", agent_json(a, name));
	return o;
}

static void agent_only_print(const struct agent_view *a, json_object *vol)
{
	const char *name = member_str(vol, "name"), *t;
	json_object *agent = agent_json(a, name);
	char line[640];

	printf("%s has no mapping (dmbyokd: %s).\n", name, member_str(vol, "state"));
	if ((t = member_str(vol, "device")))
		printf("  device:      %s\n", t);
	if ((t = member_str(vol, "key_arn")))
		printf("  key:         %s\n", t);
	agent_line(a, agent, line, sizeof(line));
	printf("  agent:       %s\n", line);
	json_object_put(agent);
}

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
	ADD_STR("grant_id", s->grant_id);
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

static void status_print(const struct mapping_status *s, const struct agent_view *a)
{
	json_object *agent = agent_json(a, s->dm.name);
	char line[640];

	printf("%s is %s.\n", s->dm.name, dmbyok_mapping_state_name(s));
	printf("  device:      %s\n", s->device ? s->device : s->dm.device);
	if (s->header)
		printf("  header:      %s\n", s->header);
	if (s->volume_uuid)
		printf("  volume:      %s\n", s->volume_uuid);
	if (s->key_arn)
		printf("  key:         %s (%s)\n", s->key_id ? s->key_id : "-", s->key_arn);
	if (s->grant_id)
		printf("  grant:       %s\n", s->grant_id);
	printf("  cipher:      %s, %u-byte sectors\n", s->dm.cipher, s->dm.sector_size);
	printf("  offset:      %" PRIu64 " sectors\n  size:        %" PRIu64 " sectors\n",
	       s->dm.offset, s->dm.length);
	printf("  workqueues:  read %s, write %s\n",
	       s->dm.flags & DM_CRYPT_NO_READ_WORKQUEUE ? "bypassed" : "used",
	       s->dm.flags & DM_CRYPT_NO_WRITE_WORKQUEUE ? "bypassed" : "used");
	printf("  in use:      %d\n", s->dm.open_count);
	printf("  record:      %s\n", s->record);
	agent_line(a, agent, line, sizeof(line));
	printf("  agent:       %s\n", line);
	json_object_put(agent);
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
	struct agent_view a;
	json_object *vol, *o;
	int r;

	GUARD(cli_require_args(c, 0, 1, "status [NAME] [--json]"));
	if (c->n_args == 0)
		return verb_list(c);
	GUARD(dmbyok_check_kernel());
	r = dmbyok_status(c->args[0], &s);
	if (r < 0 && r != -ENODEV)
		return log_error_errno(r, "Cannot read %s: %s", c->args[0], dmbyok_strerror(r));
	agent_view_load(&a);
	if (r == -ENODEV) {
		/* No mapping, but the agent may have torn it down: that is its status. */
		vol = agent_find(&a, "volumes", "name", c->args[0]);
		if (!vol || !agent_only(vol)) {
			agent_view_done(&a);
			return log_error_errno(ENOENT, "No dmbyok mapping named %s.", c->args[0]);
		}
		if (c->json)
			print_json(agent_only_json(&a, vol));
		else
			agent_only_print(&a, vol);
		agent_view_done(&a);
		return 0;
	}
	if (c->json) {
		o = status_json(&s);
		json_object_object_add(o, "agent", agent_json(&a, s.dm.name));
		print_json(o);
	} else {
		status_print(&s, &a);
	}
	agent_view_done(&a);
	dmbyok_mapping_status_done(&s);
	return 0;
}

int verb_list(struct cli *c)
{
	struct mapping_status *l = NULL;
	json_object *arr = NULL, *vols = NULL;
	struct agent_view a;
	size_t n = 0;

	GUARD(dmbyok_check_kernel());
	GUARD(dmbyok_list(&l, &n));
	agent_view_load(&a);
	if (c->json)
		arr = json_object_new_array();
	else
		printf("%-16s %-10s %-20s %-16s %s\n", "NAME", "STATE", "DEVICE", "AGENT", "KEY");
	for (size_t i = 0; i < n; i++) {
		const struct mapping_status *s = &l[i];
		json_object *o, *vol = agent_find(&a, "volumes", "name", s->dm.name);
		const char *agent_state = vol ? member_str(vol, "state") : NULL;

		if (arr) {
			o = status_json(s);
			json_object_object_add(o, "agent", agent_json(&a, s->dm.name));
			json_object_array_add(arr, o);
		} else {
			printf("%-16s %-10s %-20s %-16s %s\n", s->dm.name,
			       dmbyok_mapping_state_name(s), s->device ? s->device : s->dm.device,
			       agent_state ? agent_state : "-", s->key_arn ? s->key_arn : "-");
		}
	}
	/* Volumes the agent tore down (or whose key was deleted) have no mapping: show them. */
	if (a.r >= 0 && json_object_object_get_ex(a.status, "volumes", &vols) &&
	    json_object_is_type(vols, json_type_array))
		for (size_t j = 0; j < json_object_array_length(vols); j++) {
			json_object *vol = json_object_array_get_idx(vols, j);
			const char *name = member_str(vol, "name"), *t;
			bool mapped = false;

			for (size_t i = 0; name && i < n; i++)
				mapped |= !strcmp(l[i].dm.name, name);
			if (!name || mapped || !agent_only(vol))
				continue;
			if (arr) {
				json_object_array_add(arr, agent_only_json(&a, vol));
				continue;
			}
			t = member_str(vol, "state");
			printf("%-16s %-10s %-20s %-16s %s\n", name, t,
			       member_str(vol, "device") ? member_str(vol, "device") : "-", t,
			       member_str(vol, "key_arn") ? member_str(vol, "key_arn") : "-");
		}
	if (arr)
		print_json(arr);
	else if (agent_not_running(&a))
		printf("agent: not running\n");
	else if (a.r < 0)
		printf("agent: unknown (%s)\n", dmbyok_strerror(a.r));
	agent_view_done(&a);
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
	if (strcmp(str(o, "token", "grant_id"), "-") != 0)
		printf("  grant:        %s (this volume's own; its context only)\n",
		       str(o, "token", "grant_id"));
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
