/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Verbs of the volumes table (/etc/dmbyok/volumes): volumes (list, check, add, remove),
 * attach (what udev's dmbyok-attach@.service runs when a disk appears) and detach (after
 * a disk went away).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "dmbyok/agent.h"
#include "dmbyok/attach.h"
#include "dmbyok/error.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/volumes.h"

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);

/* "attached", "locked", "torn-down" (from the mapping), "absent" or "not attached". */
static const char *entry_state(const struct dmbyok_volume_entry *e, char **ret_devnode)
{
	struct mapping_status s = { 0 };
	const char *state;

	*ret_devnode = NULL;
	if (dmbyok_status(e->name, &s) == 0) {
		state = s.torn_down ? "torn-down" : s.locked ? "locked" : "attached";
		dmbyok_mapping_status_done(&s);
		(void)dmbyok_volume_entry_resolve(e, ret_devnode);
		return state;
	}
	return dmbyok_volume_entry_resolve(e, ret_devnode) < 0 ? "absent" : "not attached";
}

/* What the agent says about an entry's attach ("waiting-for-kms: ..."), or NULL. */
static const char *agent_attach_state(json_object *status, const char *name)
{
	json_object *l, *v;

	if (!status || !json_object_object_get_ex(status, "attach", &l) ||
	    !json_object_is_type(l, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(l); i++) {
		json_object *e = json_object_array_get_idx(l, i);

		if (json_object_object_get_ex(e, "name", &v) &&
		    !strcmp(json_object_get_string(v), name) &&
		    json_object_object_get_ex(e, "state", &v))
			return json_object_get_string(v);
	}
	return NULL;
}

static int volumes_list(struct cli *c, const struct dmbyok_volumes *t)
{
	_cleanup_(json_object_putp) json_object *status = NULL, *out = NULL;

	(void)dmbyok_agent_query("status", NULL, &status);
	if (c->json) {
		out = json_object_new_array();
		ENSURE_ALLOC(out);
	} else if (t->n == 0)
		printf("%s has no volumes.\n", t->path);
	else
		printf("%-20s %-44s %-14s %s\n", "NAME", "DEVICE", "STATE", "AGENT");
	for (size_t i = 0; i < t->n; i++) {
		const struct dmbyok_volume_entry *e = &t->entries[i];
		_cleanup_free_ char *dev = NULL;
		const char *state = entry_state(e, &dev);
		const char *agent = agent_attach_state(status, e->name);

		if (out) {
			json_object *o = json_object_new_object();

			ENSURE_ALLOC(o);
			json_object_array_add(out, o);
			json_object_object_add(o, "name", json_object_new_string(e->name));
			json_object_object_add(o, "line", json_object_new_int((int)e->line));
			json_object_object_add(o, "device", json_object_new_string(e->device));
			json_object_object_add(o, "resolved",
			                       dev ? json_object_new_string(dev) : NULL);
			json_object_object_add(o, "state", json_object_new_string(state));
			json_object_object_add(o, "nofail", json_object_new_boolean(e->nofail));
			json_object_object_add(o, "agent",
			                       agent ? json_object_new_string(agent) : NULL);
		} else
			printf("%-20s %-44s %-14s %s\n", e->name, e->device, state,
			       agent ? agent : status ? "-" : "not running");
	}
	if (out)
		printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY |
		                                                       JSON_C_TO_STRING_NOSLASHESCAPE));
	return 0;
}

int verb_volumes(struct cli *c)
{
	_cleanup_volumes_ struct dmbyok_volumes *t = NULL;
	const char *sub = c->n_args > 0 ? c->args[0] : "list";
	const char *path = dmbyok_volumes_path();

	if (!strcmp(sub, "add")) {
		_cleanup_free_ char *line = NULL;

		GUARD(cli_require_args(c, 3, 4, "volumes add NAME DEVICE [OPTIONS]"));
		if (asprintf(&line, "%s %s%s%s", c->args[1], c->args[2], c->n_args > 3 ? " " : "",
		             c->n_args > 3 ? c->args[3] : "") < 0)
			return -ENOMEM;
		return dmbyok_volumes_add(path, line);
	}
	if (!strcmp(sub, "remove")) {
		GUARD(cli_require_args(c, 2, 2, "volumes remove NAME"));
		return dmbyok_volumes_remove(path, c->args[1]);
	}
	if (strcmp(sub, "list") && strcmp(sub, "check"))
		return log_error_errno(EINVAL, "Unknown: volumes %s (list, check, add, remove).",
		                       sub);
	GUARD(cli_require_args(c, 0, 1, "volumes [list|check|add|remove]"));
	GUARD(dmbyok_volumes_load(path, &t));
	if (!strcmp(sub, "check")) {
		if (t->n_bad > 0)
			return log_error_errno(EINVAL, "%s: %u bad line(s), skipped by attach.", path,
			                       t->n_bad);
		printf("%s: %zu volume(s), no bad line.\n", path, t->n);
		return 0;
	}
	return volumes_list(c, t);
}

/* The agent answers {"attach": "queued"|"already"|"ignored", "name": ...}. */
static int attach_through_agent(const char *device, bool *ret_answered)
{
	_cleanup_(json_object_putp) json_object *answer = NULL;
	json_object *v;
	int r;

	*ret_answered = false;
	r = dmbyok_agent_query("attach", device, &answer);
	if (r == -ENOENT || r == -ECONNREFUSED)
		return 0;
	*ret_answered = true;
	if (r < 0)
		return log_error_errno(r, "dmbyokd did not take %s: %s", device, dmbyok_strerror(r));
	if (json_object_object_get_ex(answer, "message", &v))
		log_info("dmbyokd: %s", json_object_get_string(v));
	return 0;
}

int verb_attach(struct cli *c)
{
	_cleanup_volumes_ struct dmbyok_volumes *t = NULL;
	const struct dmbyok_volume_entry *e = NULL;
	_cleanup_free_ char *dev = NULL;
	struct dmbyok_attach a;
	bool answered;
	int r;

	GUARD(cli_require_args(c, 1, 1, "attach DEVICE"));
	/* The agent attaches with its warm KMS client, retries while the KMS is away, and
	 * knows auto-attach; without it, this process does it once. */
	GUARD(attach_through_agent(c->args[0], &answered));
	if (answered)
		return 0;
	GUARD(dmbyok_volumes_load(NULL, &t));
	r = dmbyok_volumes_find_device(t, c->args[0], &e);
	if (r == -ENOENT) {
		log_info("%s is not in %s: not attaching it (auto-attach needs dmbyokd).",
		         c->args[0], t->path);
		return 0;
	}
	if (r < 0)
		return log_error_errno(r, "Cannot attach %s: %s", c->args[0], dmbyok_strerror(r));
	GUARD(dmbyok_volume_entry_resolve(e, &dev));
	a = (struct dmbyok_attach){ .name = e->name,
		                    .device = dev,
		                    .header = e->header,
		                    .perf_set = e->perf_set,
		                    .perf_flags = e->perf_flags };
	(void)dmbyok_attach_many(&a, 1, &c->kms, 1);
	if (a.result == -EALREADY) {
		log_info("%s is already attached as %s.", c->args[0], e->name);
		return 0;
	}
	return a.result;
}

int verb_detach(struct cli *c)
{
	int n;

	GUARD(cli_require_args(c, 0, 1, "detach [KERNEL_NAME]"));
	n = dmbyok_detach_gone(c->n_args ? c->args[0] : NULL);
	if (n < 0)
		return n;
	if (n == 0)
		log_info("No dmbyok mapping is over a disk that went away.");
	return 0;
}
