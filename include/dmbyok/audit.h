/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The audit trail of KMS calls. Every call by any dmbyok program (the CLI, dmbyokd, the
 * token plugin) is logged as a journal entry (DMBYOK_MESSAGE_KMS_CALL) and, when
 * /etc/dmbyok/audit.conf names a file, appended to that file as one JSON line:
 *
 *   {"time":"2026-12-07T19:16:11.123Z","program":"dmbyokd","pid":42,"operation":"Decrypt",
 *    "provider":"aws","region":"eu-west-1","key_id":"alias/orders","key_arn":"arn:...",
 *    "encryption_context":{"dmbyok:volume":"..."},"result":"ok","errno":0,
 *    "latency_ms":21,"request_id":"..."}
 *
 * The file rotates by size (FILE.1 .. FILE.KEEP, oldest last) under an exclusive lock, so
 * writers in several processes never interleave or lose lines. No secret is ever in a line
 * (struct kms_audit carries none by construction). docs/audit.md has the details.
 */

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#define DMBYOK_AUDIT_CONF_PATH         "/etc/dmbyok/audit.conf"
#define DMBYOK_AUDIT_DEFAULT_MAX_BYTES (10ULL << 20)
#define DMBYOK_AUDIT_DEFAULT_KEEP      5U
#define DMBYOK_AUDIT_MAX_KEEP          100U

struct dmbyok_audit_settings {
	char *file;         /* NULL: no audit file, the journal only */
	uint64_t max_bytes; /* rotate before a line would make the file larger */
	unsigned keep;      /* rotated files kept: FILE.1 .. FILE.keep */
};

/*
 * Reads the settings: DMBYOK_AUDIT_CONF (default /etc/dmbyok/audit.conf; a missing file means
 * no audit file), `file = /ABSOLUTE/PATH`, `max-size = N[K|M|G]`, `keep = N`, comments with
 * '#'; DMBYOK_AUDIT_FILE overrides `file`. A bad line is -EINVAL, reported as FILE:LINE.
 */
int dmbyok_audit_settings_load(struct dmbyok_audit_settings *ret);
void dmbyok_audit_settings_done(struct dmbyok_audit_settings *s);

/*
 * Appends one line (JSON, no newline in it) to s->file, creating it (0600, its directory
 * 0700) and rotating it first when it would outgrow s->max_bytes. The line is on disk
 * (fdatasync) when this returns 0.
 */
int dmbyok_audit_file_append(const struct dmbyok_audit_settings *s, const char *line);

/*
 * Calls fn for each entry of the audit file and its rotated copies, oldest first, under a
 * shared lock (no rotation meanwhile). Lines that are not JSON objects (a writer killed in
 * the middle of a line) are skipped and counted in *ret_skipped. fn returning < 0 stops
 * the walk with that value.
 */
int dmbyok_audit_file_foreach(const struct dmbyok_audit_settings *s,
                              int (*fn)(json_object *entry, void *userdata), void *userdata,
                              unsigned *ret_skipped);

/*
 * The same walk over the journal's KMS call entries (MESSAGE_ID=DMBYOK_MESSAGE_KMS_CALL)
 * from since_usec (CLOCK_REALTIME microseconds; 0: all), each turned into the file's JSON
 * shape. -ENOENT when this system has no journal to read.
 */
int dmbyok_audit_journal_foreach(uint64_t since_usec, int (*fn)(json_object *entry, void *userdata),
                                 void *userdata);

/* An entry's "time" as CLOCK_REALTIME microseconds; -EINVAL when it has none or a bad one. */
int dmbyok_audit_entry_time(json_object *entry, uint64_t *ret_usec);
