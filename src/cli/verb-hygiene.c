/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key hygiene verbs: shred, ephemeral, and doctor --policy (verb_doctor hands it over;
 * verb_close removes ephemeral mappings). The lifecycle layer (include/dmbyok/hygiene.h)
 * does the work.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "dmbyok/hygiene.h"
#include "dmbyok/log.h"

static void print_plan(FILE *f, const struct dmbyok_shred_plan *p)
{
	if (p->damaged)
		fprintf(f, "The LUKS header on %s no longer loads; what is left of it goes:\n",
		        p->header ? p->header : p->device);
	else
		fprintf(f, "This destroys the data key of volume %s on %s (wrapped by %s):\n",
		        p->volume_uuid, p->device, p->key_arn ? p->key_arn : "no dmbyok token");
	for (size_t i = 0; i < p->n_ranges; i++)
		fprintf(f, "  zeros over %s bytes %llu+%llu (%s)\n", p->ranges[i].path,
		        (unsigned long long)p->ranges[i].offset,
		        (unsigned long long)p->ranges[i].length, p->ranges[i].what);
	for (char **n = p->forgotten; n && *n; n++)
		fprintf(f, "  and forgets %s, which dmbyokd tore down\n", *n);
	if (p->grant_id)
		fprintf(f, "  after retiring the volume's KMS grant %s\n", p->grant_id);
	fprintf(f, "The data on %s can never be decrypted again, whatever happens to the key.\n",
	        p->device);
}

/* cryptsetup erase's rule: a terminal answers YES, anything else is a no. */
static int confirm(const struct dmbyok_shred_plan *p, void *userdata)
{
	const struct cli *c = userdata;
	char answer[16] = "";

	if (c->yes)
		return 0;
	if (!isatty(STDIN_FILENO))
		return log_error_errno(EINVAL,
		                       "shred cannot be undone and there is no terminal to confirm "
		                       "it: run again with --yes. Nothing was changed.");
	print_plan(stderr, p);
	fprintf(stderr, "Type YES (in capitals) to shred it: ");
	fflush(stderr);
	if (!fgets(answer, sizeof(answer), stdin) || strcmp(answer, "YES\n") != 0)
		return log_error_errno(EINVAL, "Not confirmed: nothing was changed.");
	return 0;
}

static void print_shredded(const struct cli *c, const struct dmbyok_shred_plan *p)
{
	json_object *o, *wiped, *forgot;

	if (!c->json) {
		printf("shredded  %s\n", p->device);
		if (p->header)
			printf("header    %s\n", p->header);
		printf("volume    %s\n",
		       p->volume_uuid ? p->volume_uuid : "unknown (damaged header)");
		printf("key       %s\n", p->key_arn ? p->key_arn : "unknown");
		for (size_t i = 0; i < p->n_ranges; i++)
			printf("wiped     %s %llu+%llu %s\n", p->ranges[i].path,
			       (unsigned long long)p->ranges[i].offset,
			       (unsigned long long)p->ranges[i].length, p->ranges[i].what);
		for (char **n = p->forgotten; n && *n; n++)
			printf("forgot    %s\n", *n);
		if (p->grant_id)
			printf("grant     %s %s\n", p->grant_id, p->grant_outcome);
		return;
	}
	o = json_object_new_object();
	wiped = json_object_new_array();
	forgot = json_object_new_array();
	json_object_object_add(o, "device", json_object_new_string(p->device));
	json_object_object_add(o, "header", p->header ? json_object_new_string(p->header) : NULL);
	json_object_object_add(o, "volume_uuid",
	                       p->volume_uuid ? json_object_new_string(p->volume_uuid) : NULL);
	json_object_object_add(o, "key_arn",
	                       p->key_arn ? json_object_new_string(p->key_arn) : NULL);
	json_object_object_add(o, "damaged", json_object_new_boolean(p->damaged));
	if (p->grant_id) {
		json_object *g = json_object_new_object();

		json_object_object_add(g, "id", json_object_new_string(p->grant_id));
		json_object_object_add(g, "outcome", json_object_new_string(p->grant_outcome));
		json_object_object_add(o, "grant", g);
	}
	for (size_t i = 0; i < p->n_ranges; i++) {
		json_object *r = json_object_new_object();

		json_object_object_add(r, "path", json_object_new_string(p->ranges[i].path));
		json_object_object_add(r, "offset",
		                       json_object_new_int64((int64_t)p->ranges[i].offset));
		json_object_object_add(r, "length",
		                       json_object_new_int64((int64_t)p->ranges[i].length));
		json_object_object_add(r, "what", json_object_new_string(p->ranges[i].what));
		json_object_array_add(wiped, r);
	}
	for (char **n = p->forgotten; n && *n; n++)
		json_object_array_add(forgot, json_object_new_string(*n));
	json_object_object_add(o, "wiped", wiped);
	json_object_object_add(o, "forgotten", forgot);
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
	                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int verb_shred(struct cli *c)
{
	struct dmbyok_shred_plan done = { 0 };

	GUARD(cli_require_args(c, 1, 1,
	                       "shred DEVICE [--yes] [--header FILE] [--force] [--keep-grant]"));
	GUARD(dmbyok_shred(
	    &(struct dmbyok_shred_options){
	        .device = c->args[0],
	        .header = c->header,
	        .force = c->force,
	        .kms = &c->kms,
	        .keep_grant = c->keep_grant,
	        .confirm = confirm,
	        .userdata = c,
	    },
	    &done));
	print_shredded(c, &done);
	dmbyok_shred_plan_done(&done);
	return 0;
}

int verb_ephemeral(struct cli *c)
{
	GUARD(cli_require_args(c, 2, 2, "ephemeral DEVICE NAME [--sector-size BYTES] [--force]"));
	return dmbyok_ephemeral_open(&(struct dmbyok_ephemeral_options){
	    .device = c->args[0],
	    .name = c->args[1],
	    .sector_size = c->sector_size,
	    .force = c->force,
	});
}

static const char *status_word(enum dmbyok_policy_status s)
{
	return s == DMBYOK_POLICY_OK ? "ok" : s == DMBYOK_POLICY_VIOLATION ? "FAIL" : "UNKNOWN";
}

static void print_policy_json(const struct dmbyok_policy_report *rep)
{
	json_object *o = json_object_new_object(), *l = json_object_new_array();

#define STR_OR_NULL(s) ((s) ? json_object_new_string(s) : NULL)
	for (size_t i = 0; i < rep->n; i++) {
		const struct dmbyok_policy_finding *f = &rep->findings[i];
		json_object *e = json_object_new_object();

		json_object_object_add(e, "check", json_object_new_string(f->check));
		json_object_object_add(e, "path", json_object_new_string(f->path));
		json_object_object_add(e, "data_path", STR_OR_NULL(f->data_path));
		json_object_object_add(e, "fstype", STR_OR_NULL(f->fstype));
		json_object_object_add(e, "source", STR_OR_NULL(f->source));
		json_object_object_add(e, "devno", STR_OR_NULL(f->devno));
		json_object_object_add(e, "storage",
		                       json_object_new_string(dmbyok_storage_name(f->storage)));
		json_object_object_add(e, "mapping", STR_OR_NULL(f->mapping));
		json_object_object_add(e, "key_arn", STR_OR_NULL(f->key_arn));
		json_object_object_add(
		    e, "status", json_object_new_string(dmbyok_policy_status_name(f->status)));
		json_object_object_add(e, "reason", json_object_new_string(f->reason));
		json_object_array_add(l, e);
	}
#undef STR_OR_NULL
	json_object_object_add(o, "holds", json_object_new_boolean(rep->holds));
	json_object_object_add(o, "findings", l);
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
	                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int verb_doctor_policy(struct cli *c)
{
	struct dmbyok_policy_report rep = { 0 };
	size_t bad = 0;

	GUARD(cli_require_args(c, 0, 0, "doctor --policy [--data-path PATH]... [--json]"));
	GUARD(dmbyok_policy_check(c->data_paths, c->n_data_paths, &rep));
	for (size_t i = 0; i < rep.n; i++)
		bad += rep.findings[i].status != DMBYOK_POLICY_OK;
	if (c->json)
		print_policy_json(&rep);
	else {
		for (size_t i = 0; i < rep.n; i++) {
			const struct dmbyok_policy_finding *f = &rep.findings[i];

			if (f->fstype)
				printf("%-7s %-4s %s (%s %s): %s\n", status_word(f->status),
				       f->check, f->path, f->fstype, f->source, f->reason);
			else
				printf("%-7s %-4s %s: %s\n", status_word(f->status), f->check,
				       f->path, f->reason);
		}
		if (rep.holds)
			printf("policy holds: all data is encrypted under the customer's key%s\n",
			       c->n_data_paths ? ""
			                       : " (no --data-path given: swap and /tmp only)");
		else
			printf("policy does not hold: %zu finding(s)\n", bad);
	}
	dmbyok_policy_report_done(&rep);
	return bad ? CLI_POLICY_VIOLATED : 0;
}
