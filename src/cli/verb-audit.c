/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyok audit: the trail of KMS calls made by every dmbyok program on this host, from the
 * audit file when /etc/dmbyok/audit.conf names one, else from the journal.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cli.h"
#include "dmbyok/audit.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

struct audit_walk {
	uint64_t since_usec;
	const char *volume_uuid; /* NULL: every call */
	json_object *array;      /* --json: the entries; else printed as they come */
	size_t n;
};

/* "2026-12-07", "2026-12-07 19:16[:11]", "2026-12-07T19:16:11Z" (UTC), or "90s", "15m",
 * "2h", "7d" ago. */
static int parse_since(const char *s, uint64_t *ret_usec)
{
	static const char *const formats[] = { "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S",
		                               "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d" };
	struct tm tm;
	char *end;
	unsigned long long n;

	for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
		const char *e;

		memset(&tm, 0, sizeof(tm));
		e = strptime(s, formats[i], &tm);
		if (e && !*e) {
			*ret_usec = (uint64_t)timegm(&tm) * 1000000ULL;
			return 0;
		}
	}
	errno = 0;
	n = strtoull(s, &end, 10);
	if (!errno && end != s && *s != '-' && end[0] && !end[1]) {
		unsigned long long unit = end[0] == 's'   ? 1
		                          : end[0] == 'm' ? 60
		                          : end[0] == 'h' ? 3600
		                          : end[0] == 'd' ? 86400
		                                          : 0;
		time_t now = time(NULL);

		if (unit && n <= (unsigned long long)now / unit) {
			*ret_usec = ((uint64_t)now - n * unit) * 1000000ULL;
			return 0;
		}
	}
	return log_error_errno(EINVAL,
	                       "--since '%s': use YYYY-MM-DD[ HH:MM[:SS]] (UTC) or an age "
	                       "such as 90s, 15m, 2h, 7d.",
	                       s);
}

static const char *member(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
	           ? json_object_get_string(v)
	           : NULL;
}

static long long member_int(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static int on_entry(json_object *e, void *userdata)
{
	struct audit_walk *w = userdata;
	uint64_t t;
	json_object *ctx;
	const char *key;

	if (dmbyok_audit_entry_time(e, &t) < 0 || t < w->since_usec)
		return 0;
	if (w->volume_uuid) {
		const char *v = json_object_object_get_ex(e, "encryption_context", &ctx)
		                    ? member(ctx, "dmbyok:volume")
		                    : NULL;

		if (!v || strcmp(v, w->volume_uuid) != 0)
			return 0;
	}
	w->n++;
	if (w->array) {
		json_object *c = json_object_get(e);

		if (json_object_array_add(w->array, c) < 0) {
			json_object_put(c);
			return log_oom();
		}
		return 0;
	}
	key = member(e, "key_arn") ? member(e, "key_arn") : member(e, "key_id");
	printf("%-24s %-8s %-15s %-17s %6lld ms  %s  %s\n", member(e, "time") ?: "-",
	       member(e, "program") ?: "-", member(e, "operation") ?: "-",
	       member(e, "result") ?: "-", member_int(e, "latency_ms"), key ?: "-",
	       member(e, "request_id") ?: "-");
	return 0;
}

int verb_audit(struct cli *c)
{
	struct dmbyok_audit_settings s = {};
	struct audit_walk w = {};
	struct mapping_status st = {};
	unsigned skipped = 0;
	int r;

	GUARD(cli_require_args(c, 0, 0, "audit [--since WHEN] [--volume NAME|UUID] [--json]"));
	if (c->since)
		GUARD(parse_since(c->since, &w.since_usec));
	if (c->volume) {
		/* A mapping's name stands for its volume; anything else is taken as a LUKS2 UUID.
		 */
		dmbyok_log_quiet_push();
		r = dmbyok_status(c->volume, &st);
		dmbyok_log_quiet_pop();
		if (r == 0 && st.volume_uuid)
			w.volume_uuid = st.volume_uuid;
		else
			w.volume_uuid = c->volume;
	}
	r = dmbyok_audit_settings_load(&s);
	if (r < 0)
		goto out;
	if (c->json) {
		w.array = json_object_new_array();
		if (!w.array) {
			r = log_oom();
			goto out;
		}
	}
	if (s.file) {
		r = dmbyok_audit_file_foreach(&s, on_entry, &w, &skipped);
		if (r < 0) {
			log_error_errno(r, "Cannot read the audit file %s: %s.", s.file,
			                dmbyok_strerror(r));
			goto out;
		}
		if (skipped)
			log_warning(
			    "%s: %u line(s) that are not JSON skipped (a writer killed mid-line?).",
			    s.file, skipped);
	} else {
		r = dmbyok_audit_journal_foreach(w.since_usec, on_entry, &w);
		if (r < 0) {
			log_error_errno(
			    r,
			    "Cannot read the journal: %s. Configure an audit file in %s, or "
			    "run as root or a member of systemd-journal.",
			    dmbyok_strerror(r), DMBYOK_AUDIT_CONF_PATH);
			goto out;
		}
	}
	if (w.array)
		printf("%s\n",
		       json_object_to_json_string_ext(w.array, JSON_C_TO_STRING_PRETTY |
		                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
	else if (!w.n)
		log_info("No KMS call recorded%s in %s.",
		         c->since || c->volume ? " that matches" : "",
		         s.file ? s.file : "the journal");
	r = 0;
out:
	json_object_put(w.array);
	dmbyok_mapping_status_done(&st);
	dmbyok_audit_settings_done(&s);
	return r;
}
