/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * dmbyokd's Prometheus metrics, written as a file for node_exporter's textfile collector
 * (text exposition format 0.0.4). The daemon reports events as they finish (the observe
 * calls: counters and histograms kept here) and, whenever it wants the file refreshed
 * (after a state change, at each check interval), passes the current gauges to
 * dmbyok_metrics_write(), which replaces the file atomically: a reader sees the previous
 * complete file or the new complete file, never a partial one.
 *
 * Pure bookkeeping: no clock is read here; every time is an argument.
 *
 * Metrics (every sample is always present once its key or label set exists, at 0 when
 * nothing happened yet, so rate() and increase() see the first event):
 *   dmbyok_agent_start_time_seconds                    gauge, unix time of the start
 *   dmbyok_volumes{state}                              gauge, volumes by state: active,
 *                                                      locked, torn-down, key-deleted,
 *                                                      waiting-for-kms
 *   dmbyok_key_state{key,state}                        gauge, 1 for the key's keywatch
 *                                                      state, 0 for the others
 *   dmbyok_key_last_successful_probe_timestamp_seconds{key}
 *                                                      gauge, unix time; absent until the
 *                                                      key's first successful probe
 *   dmbyok_probes_total{key,class}                     counter, by dmbyok_error_class_name
 *                                                      of the result ("ok", "key-revoked",
 *                                                      "kms-unreachable", ...)
 *   dmbyok_probe_duration_seconds                      histogram, 0.01 .. 10 s
 *   dmbyok_kms_errors_total{class}                     counter, failed probes and other
 *                                                      KMS calls by error class
 *   dmbyok_lock_duration_seconds{result}               histogram, result "ok" / "failed"
 *   dmbyok_restore_duration_seconds{result}            histogram (unlock or reprovision)
 *
 * Memory is bounded by the keys being watched: per-key counters live from
 * dmbyok_metrics_watch_key() (or the key's first probe) until dmbyok_metrics_forget_key();
 * per-key gauges are whatever the daemon passes to each write.
 */

#include <stddef.h>
#include <stdint.h>

#include "dmbyok/macro.h"
#include "keywatch.h"

struct dmbyok_metrics;

/* start_unix_s: the agent's start (dmbyok_agent_start_time_seconds). -ENOMEM. */
int dmbyok_metrics_new(uint64_t start_unix_s, struct dmbyok_metrics **ret);
struct dmbyok_metrics *dmbyok_metrics_free(struct dmbyok_metrics *m); /* NULL-safe; NULL */
DEFINE_CLEANUP_FUNC(struct dmbyok_metrics *, dmbyok_metrics_free);
#define _cleanup_metrics_ _cleanup_(dmbyok_metrics_freep)

/*
 * A probe of key_arn (through grant_id, a volume's own grant, or NULL) finished with
 * `result` (0 or a negative errno, classified by dmbyok_error_class()) after latency_ms.
 * Each (key, grant) is its own series: label grant="ID" beside key="ARN" when there is one.
 * Counts dmbyok_probes_total{key,class}, the
 * latency histogram, and, when it failed, dmbyok_kms_errors_total{class}. A key not seen
 * before gets its series here. 0, -EINVAL (no key_arn), -ENOMEM (nothing counted).
 */
int dmbyok_metrics_probe_done(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id,
                              int result, uint64_t latency_ms);
/* The daemon starts watching key_arn: its per-key counters appear, at 0. -EINVAL, -ENOMEM. */
int dmbyok_metrics_watch_key(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id);
/* A KMS call other than a probe (an unlock's Decrypt) failed: dmbyok_kms_errors_total. */
void dmbyok_metrics_kms_error(struct dmbyok_metrics *m, int result);
/* A lock of a key's volumes finished: result 0 counts as "ok", anything else "failed". */
void dmbyok_metrics_lock_done(struct dmbyok_metrics *m, uint64_t duration_ms, int result);
/* An unlock or reprovision finished: result 0 counts as "ok", anything else "failed". */
void dmbyok_metrics_restore_done(struct dmbyok_metrics *m, uint64_t duration_ms, int result);
/* The key is no longer watched: its series go (and its memory). Unknown keys are ignored. */
void dmbyok_metrics_forget_key(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id);

/* Volume states of dmbyok_volumes{state}; the daemon counts its volumes into these. */
enum dmbyok_metrics_volume_state {
	DMBYOK_METRICS_VOLUMES_ACTIVE,
	DMBYOK_METRICS_VOLUMES_LOCKED,
	DMBYOK_METRICS_VOLUMES_TORN_DOWN,
	DMBYOK_METRICS_VOLUMES_KEY_DELETED,
	DMBYOK_METRICS_VOLUMES_WAITING_FOR_KMS, /* open; the key's state is in doubt (suspect,
	                                           or KMS not answering yet) */
	_DMBYOK_METRICS_VOLUMES_MAX,
};
/* The label value: "active", "locked", "torn-down", "key-deleted", "waiting-for-kms". */
const char *dmbyok_metrics_volume_state_name(enum dmbyok_metrics_volume_state s);

/* One watched key, as the daemon sees it at write time. */
struct dmbyok_metrics_key {
	const char *key_arn;
	enum dmbyok_keywatch_state state;
	uint64_t last_ok_unix_s; /* unix time of the last successful probe; 0: none yet */
	const char *grant_id;    /* the watch's per-volume grant; NULL: none */
};

/* The gauges at write time. */
struct dmbyok_metrics_gauges {
	unsigned volumes[_DMBYOK_METRICS_VOLUMES_MAX];
	const struct dmbyok_metrics_key *keys;
	size_t n_keys;
};

/*
 * The exposition text for the counters and histograms kept in m and gauges g, as a new
 * NUL-terminated string (ret_len: its length, may be NULL). -ENOMEM, -EINVAL for a key
 * without an ARN or a state out of range.
 */
int dmbyok_metrics_format(const struct dmbyok_metrics *m, const struct dmbyok_metrics_gauges *g,
                          char **ret, size_t *ret_len);

/*
 * Formats and replaces `path` atomically: a temporary file beside it (".NAME.XXXXXX": not
 * *.prom, so the collector never reads it), mode 0644, written, fsync'd, renamed over
 * path, directory fsync'd. On failure the temporary file is removed and path is left as
 * it was. 0 or -errno (logged).
 */
int dmbyok_metrics_write(const struct dmbyok_metrics *m, const struct dmbyok_metrics_gauges *g,
                         const char *path);
