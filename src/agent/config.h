/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * dmbyokd's settings: defaults, then the config file (/etc/dmbyok/dmbyokd.conf or
 * --config FILE), then the command line, which wins. Every setting has one name, the same
 * as a key in the file and as a long option ("check-interval" is `check-interval = 10` and
 * `--check-interval 10`), so the daemon feeds both through dmbyok_agent_config_set().
 *
 * The file (etc/dmbyokd.conf.example documents every key):
 *   - one `key = value` per line; blank lines are ignored; `#` starts a comment at the
 *     beginning of a line or after a blank (so `check-interval = 10  # seconds` works; a
 *     `#` inside a value, as in `/opt/hook#2`, stays part of it);
 *   - an unknown key, a bad value, a key given twice, a line without `=` are errors naming
 *     FILE:LINE: a typo in a security setting must not be silently ignored;
 *   - it names programs that run as root, so it must be a regular file owned by root
 *     (by the caller when not root) and not writable by group or others.
 *
 * Values:
 *   - times: whole seconds, optionally with one unit suffix: 30, 30s, 5min, 2h, 1d
 *     (s/sec, min, h, d); stored in milliseconds;
 *   - counts: plain decimal numbers;
 *   - booleans: yes/no, true/false, on/off, 1/0;
 *   - strings and paths: the rest of the line, blanks around it trimmed; an empty value
 *     unsets the setting (so `--on-revoke=` disables a hook the file configured).
 */

#include <stdbool.h>

#include "keywatch.h"

#define DMBYOK_AGENT_CONFIG_FILE "/etc/dmbyok/dmbyokd.conf"

struct dmbyok_agent_config {
	struct dmbyok_keywatch_config watch; /* check-interval, revoke-confirmations,
	                                        restore-interval, teardown-after,
	                                        fail-closed-after */
	unsigned lock_timeout_ms;            /* lock-timeout (seconds in the file), default
	                                        DMBYOK_LOCK_TIMEOUT_MS from dmbyok/lifecycle.h */
	char *region, *endpoint, *profile, *ca_bundle; /* KMS options, NULL = unset */
	char *on_revoke, *on_restore; /* hook programs (absolute paths, must exist and be
	                                 executable, not group/world writable), NULL = none */
	char *metrics_file;           /* Prometheus textfile output path (absolute, ends in .prom),
	                                 NULL = off */
	char *control_socket;         /* NULL = default <runtime dir>/dmbyokd.sock */
	char *volumes;                /* the volumes table; NULL = /etc/dmbyok/volumes */
	unsigned attach_timeout_ms;   /* attach-timeout: READY at the latest this long after the
	                                 start (0: at once); default 30 s */
	unsigned attach_concurrency;  /* KMS unwraps at once while attaching; default 32 */
	bool auto_attach;             /* attach dmbyok disks udev hands over that are not in the
	                                 table, as dmbyok-<LUKS2 UUID> */
	char *policy_data_paths;      /* "/srv:/var/lib/db": mounts there must be dmbyok volumes
	                                 (policywatch.h); NULL = not watched */
	bool policy_unmount;          /* unmount what breaks it, not only report it */
	bool debug;
};

/* The defaults: keywatch's, DMBYOK_LOCK_TIMEOUT_MS, every string unset, no debug. */
void dmbyok_agent_config_init(struct dmbyok_agent_config *c);
/* Frees the strings and leaves the defaults behind; NULL-safe; idempotent. */
void dmbyok_agent_config_done(struct dmbyok_agent_config *c);

/*
 * One setting by its long-option name ("check-interval", ...); `where` is used in the
 * error message ("/etc/dmbyok/dmbyokd.conf:12" or "--check-interval"; NULL: the key).
 * A later call for the same key replaces the earlier value. -EINVAL with a clear logged
 * reason (unknown key, bad value, hook that is not a safe executable), -ENOMEM.
 */
int dmbyok_agent_config_set(struct dmbyok_agent_config *c, const char *key, const char *value,
                            const char *where);

/*
 * Reads a config file into c (see above). must_exist=false: a missing file is not an
 * error (the default path). -EINVAL for a bad line (FILE:LINE logged), -EPERM for a file
 * that is not a regular file owned by root (or, when not running as root, by the caller)
 * or that group or others may write, -errno when it cannot be read. Settings given
 * before a failing line may have been applied: the caller gives up on any error.
 */
int dmbyok_agent_config_load(struct dmbyok_agent_config *c, const char *path, bool must_exist);

/*
 * Final checks once the file and the options are in: dmbyok_keywatch_config_validate()
 * (fail-closed-after at least twice check-interval, reported in the settings' names), the
 * lock timeout, the paths (for fields set directly), the hooks again (they may have
 * changed since they were set), and that the metrics file and the control socket are
 * different paths. 0 or -EINVAL.
 */
int dmbyok_agent_config_validate(const struct dmbyok_agent_config *c);

/*
 * What a file that names root's programs must be (the config file, the volumes table when
 * it names hooks): a regular file owned by root (or the caller) that group and others
 * cannot write; and such a program: absolute, executable, just as trusted. -EPERM/-EINVAL
 * with the reason logged; `who` names the setting in the message.
 */
int dmbyok_agent_check_trusted_file(const char *path);
int dmbyok_agent_check_hook(const char *path, const char *who);
