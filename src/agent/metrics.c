/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd's metrics as a Prometheus textfile (metrics.h says which). Durations are counted
 * in whole milliseconds, so bucket bounds compare exactly and sums print exactly as
 * seconds with three decimals: no float rounding anywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dmbyok/log.h"
#include "metrics.h"

struct bucket {
	uint64_t le_ms;
	const char *le; /* the bound as exposed, in seconds */
};

/* KMS calls: tens of milliseconds when healthy, up to the SDKs' retries when not. */
static const struct bucket probe_buckets[] = {
	{ 10, "0.01" }, { 25, "0.025" }, { 50, "0.05" },  { 100, "0.1" }, { 250, "0.25" },
	{ 500, "0.5" }, { 1000, "1" },   { 2500, "2.5" }, { 5000, "5" },  { 10000, "10" },
};
/* Locks and restores: a freeze and a suspend (or a Decrypt and a resume), up to the lock
 * timeout (30 s by default) when a disk is slow. */
static const struct bucket action_buckets[] = {
	{ 50, "0.05" },  { 100, "0.1" },  { 250, "0.25" },   { 500, "0.5" },
	{ 1000, "1" },   { 2500, "2.5" }, { 5000, "5" },     { 10000, "10" },
	{ 30000, "30" }, { 60000, "60" }, { 300000, "300" },
};
#define N_BUCKETS_MAX 16

struct histogram {
	uint64_t counts[N_BUCKETS_MAX]; /* per bucket, not cumulative; +Inf = count */
	uint64_t count, sum_ms;
};

struct key_series {
	char *key_arn;
	char *grant_id;
	uint64_t probes[_DMBYOK_ERR_CLASS_MAX];
};

enum { RESULT_OK, RESULT_FAILED, _RESULT_MAX };
static const char *const result_names[_RESULT_MAX] = { "ok", "failed" };

struct dmbyok_metrics {
	uint64_t start_unix_s;
	struct key_series **keys;
	size_t n_keys, cap_keys;
	struct histogram probe_latency;
	struct histogram lock[_RESULT_MAX], restore[_RESULT_MAX];
	uint64_t kms_errors[_DMBYOK_ERR_CLASS_MAX];
};

static const char *const volume_state_names[_DMBYOK_METRICS_VOLUMES_MAX] = {
	[DMBYOK_METRICS_VOLUMES_ACTIVE] = "active",
	[DMBYOK_METRICS_VOLUMES_LOCKED] = "locked",
	[DMBYOK_METRICS_VOLUMES_TORN_DOWN] = "torn-down",
	[DMBYOK_METRICS_VOLUMES_KEY_DELETED] = "key-deleted",
	[DMBYOK_METRICS_VOLUMES_WAITING_FOR_KMS] = "waiting-for-kms",
};

const char *dmbyok_metrics_volume_state_name(enum dmbyok_metrics_volume_state s)
{
	if ((int)s < 0 || s >= _DMBYOK_METRICS_VOLUMES_MAX)
		return "unknown";
	return volume_state_names[s];
}

int dmbyok_metrics_new(uint64_t start_unix_s, struct dmbyok_metrics **ret)
{
	struct dmbyok_metrics *m = calloc(1, sizeof(*m));

	ENSURE_ALLOC(m);
	m->start_unix_s = start_unix_s;
	*ret = m;
	return 0;
}

static void key_series_free(struct key_series *k)
{
	if (!k)
		return;
	free(k->key_arn);
	free(k->grant_id);
	free(k);
}

struct dmbyok_metrics *dmbyok_metrics_free(struct dmbyok_metrics *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n_keys; i++)
		key_series_free(m->keys[i]);
	free(m->keys);
	free(m);
	return NULL;
}

static struct key_series *key_find(const struct dmbyok_metrics *m, const char *key_arn,
                                   const char *grant_id, size_t *ret_index)
{
	for (size_t i = 0; i < m->n_keys; i++)
		if (!strcmp(m->keys[i]->key_arn, key_arn) &&
		    streq_ptr(m->keys[i]->grant_id, grant_id)) {
			if (ret_index)
				*ret_index = i;
			return m->keys[i];
		}
	return NULL;
}

static int key_get(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id,
                   struct key_series **ret)
{
	struct key_series *k;

	if (!key_arn || !key_arn[0] || (grant_id && !grant_id[0]))
		return -EINVAL;
	k = key_find(m, key_arn, grant_id, NULL);
	if (k) {
		*ret = k;
		return 0;
	}
	if (m->n_keys == m->cap_keys) {
		size_t cap = m->cap_keys ? 2 * m->cap_keys : 8;
		struct key_series **keys = reallocarray(m->keys, cap, sizeof(*keys));

		ENSURE_ALLOC(keys);
		m->keys = keys;
		m->cap_keys = cap;
	}
	k = calloc(1, sizeof(*k));
	ENSURE_ALLOC(k);
	k->key_arn = strdup(key_arn);
	k->grant_id = grant_id ? strdup(grant_id) : NULL;
	if (!k->key_arn || (grant_id && !k->grant_id)) {
		key_series_free(k);
		return -ENOMEM;
	}
	m->keys[m->n_keys++] = k;
	*ret = k;
	return 0;
}

int dmbyok_metrics_watch_key(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id)
{
	struct key_series *k;

	return key_get(m, key_arn, grant_id, &k);
}

void dmbyok_metrics_forget_key(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id)
{
	size_t i;
	struct key_series *k = key_arn ? key_find(m, key_arn, grant_id, &i) : NULL;

	if (!k)
		return;
	key_series_free(k);
	/* Keep the others in order: the file stays stable from one write to the next. */
	memmove(m->keys + i, m->keys + i + 1, (m->n_keys - i - 1) * sizeof(*m->keys));
	m->n_keys--;
}

static void observe(struct histogram *h, const struct bucket *b, size_t n, uint64_t ms)
{
	size_t i = 0;

	while (i < n && ms > b[i].le_ms)
		i++;
	if (i < n)
		h->counts[i]++;
	h->count++;
	/* Saturate: a counter that wraps would read as a reset. */
	h->sum_ms = h->sum_ms > UINT64_MAX - ms ? UINT64_MAX : h->sum_ms + ms;
}

void dmbyok_metrics_kms_error(struct dmbyok_metrics *m, int result)
{
	enum dmbyok_error_class c = dmbyok_error_class(result);

	if (c != DMBYOK_OK)
		m->kms_errors[c]++;
}

int dmbyok_metrics_probe_done(struct dmbyok_metrics *m, const char *key_arn, const char *grant_id,
                              int result, uint64_t latency_ms)
{
	struct key_series *k;

	GUARD(key_get(m, key_arn, grant_id, &k));
	k->probes[dmbyok_error_class(result)]++;
	observe(&m->probe_latency, probe_buckets, ELEMENTSOF(probe_buckets), latency_ms);
	dmbyok_metrics_kms_error(m, result);
	return 0;
}

void dmbyok_metrics_lock_done(struct dmbyok_metrics *m, uint64_t duration_ms, int result)
{
	observe(&m->lock[result == 0 ? RESULT_OK : RESULT_FAILED], action_buckets,
	        ELEMENTSOF(action_buckets), duration_ms);
}

void dmbyok_metrics_restore_done(struct dmbyok_metrics *m, uint64_t duration_ms, int result)
{
	observe(&m->restore[result == 0 ? RESULT_OK : RESULT_FAILED], action_buckets,
	        ELEMENTSOF(action_buckets), duration_ms);
}

/* A label value as the exposition format wants it: \\, \" and \n escaped. */
static void put_label_value(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void put_header(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_ms_as_seconds(FILE *f, uint64_t ms)
{
	fprintf(f, "%" PRIu64 ".%03u", ms / 1000, (unsigned)(ms % 1000));
}

/* One histogram's samples; `label` is one `name="value"` pair, or "" for none. */
static void put_histogram(FILE *f, const char *name, const char *label, const struct histogram *h,
                          const struct bucket *b, size_t n)
{
	const char *comma = label[0] ? "," : "";
	uint64_t cumulative = 0;

	for (size_t i = 0; i < n; i++) {
		cumulative += h->counts[i];
		fprintf(f, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, label, comma, b[i].le,
		        cumulative);
	}
	fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, label, comma, h->count);
	if (label[0])
		fprintf(f, "%s_sum{%s} ", name, label);
	else
		fprintf(f, "%s_sum ", name);
	put_ms_as_seconds(f, h->sum_ms);
	if (label[0])
		fprintf(f, "\n%s_count{%s} %" PRIu64 "\n", name, label, h->count);
	else
		fprintf(f, "\n%s_count %" PRIu64 "\n", name, h->count);
}

static void put_result_histograms(FILE *f, const char *name, const char *help,
                                  const struct histogram h[_RESULT_MAX])
{
	put_header(f, name, "histogram", help);
	for (int r = 0; r < _RESULT_MAX; r++) {
		char label[32];

		snprintf(label, sizeof(label), "result=\"%s\"", result_names[r]);
		put_histogram(f, name, label, &h[r], action_buckets, ELEMENTSOF(action_buckets));
	}
}

/* key="ARN" and, for a volume's own grant, grant="ID": one series per watch. */
static void put_key_labels(FILE *f, const char *key_arn, const char *grant_id)
{
	fputs("key=", f);
	put_label_value(f, key_arn);
	if (grant_id) {
		fputs(",grant=", f);
		put_label_value(f, grant_id);
	}
}

int dmbyok_metrics_format(const struct dmbyok_metrics *m, const struct dmbyok_metrics_gauges *g,
                          char **ret, size_t *ret_len)
{
	_cleanup_fclose_ FILE *f = NULL;
	char *buf = NULL;
	size_t len = 0;
	int r;

	for (size_t i = 0; i < g->n_keys; i++)
		if (!g->keys[i].key_arn || !g->keys[i].key_arn[0] || (int)g->keys[i].state < 0 ||
		    g->keys[i].state >= _DMBYOK_KEYWATCH_STATE_MAX)
			return log_error_errno(EINVAL,
			                       "Metrics: key %zu has no ARN or a bad state.", i);
	f = open_memstream(&buf, &len);
	ENSURE_ALLOC(f);

	put_header(f, "dmbyok_agent_start_time_seconds", "gauge",
	           "Unix time when dmbyokd started.");
	fprintf(f, "dmbyok_agent_start_time_seconds %" PRIu64 "\n", m->start_unix_s);

	put_header(f, "dmbyok_volumes", "gauge", "dmbyok volumes by state.");
	for (int s = 0; s < _DMBYOK_METRICS_VOLUMES_MAX; s++)
		fprintf(f, "dmbyok_volumes{state=\"%s\"} %u\n", volume_state_names[s],
		        g->volumes[s]);

	put_header(f, "dmbyok_key_state", "gauge",
	           "1 for the state dmbyokd decided for the key, 0 for the others.");
	for (size_t i = 0; i < g->n_keys; i++)
		for (int s = 0; s < _DMBYOK_KEYWATCH_STATE_MAX; s++) {
			fputs("dmbyok_key_state{", f);
			put_key_labels(f, g->keys[i].key_arn, g->keys[i].grant_id);
			fprintf(f, ",state=\"%s\"} %d\n", dmbyok_keywatch_state_name(s),
			        (int)g->keys[i].state == s);
		}

	put_header(f, "dmbyok_key_last_successful_probe_timestamp_seconds", "gauge",
	           "Unix time of the key's last successful probe.");
	for (size_t i = 0; i < g->n_keys; i++) {
		if (!g->keys[i].last_ok_unix_s)
			continue; /* absent, not 1970: "never" must not look like "long ago" */
		fputs("dmbyok_key_last_successful_probe_timestamp_seconds{", f);
		put_key_labels(f, g->keys[i].key_arn, g->keys[i].grant_id);
		fprintf(f, "} %" PRIu64 "\n", g->keys[i].last_ok_unix_s);
	}

	put_header(f, "dmbyok_probes_total", "counter",
	           "Probes of the key by result class (ok, key-revoked, kms-unreachable, ...).");
	for (size_t i = 0; i < m->n_keys; i++)
		for (int c = 0; c < _DMBYOK_ERR_CLASS_MAX; c++) {
			fputs("dmbyok_probes_total{", f);
			put_key_labels(f, m->keys[i]->key_arn, m->keys[i]->grant_id);
			fprintf(f, ",class=\"%s\"} %" PRIu64 "\n", dmbyok_error_class_name(c),
			        m->keys[i]->probes[c]);
		}

	put_header(f, "dmbyok_probe_duration_seconds", "histogram",
	           "Time a key probe (KMS Decrypt) took, retries included.");
	put_histogram(f, "dmbyok_probe_duration_seconds", "", &m->probe_latency, probe_buckets,
	              ELEMENTSOF(probe_buckets));

	put_header(f, "dmbyok_kms_errors_total", "counter", "Failed KMS calls by error class.");
	for (int c = DMBYOK_OK + 1; c < _DMBYOK_ERR_CLASS_MAX; c++)
		fprintf(f, "dmbyok_kms_errors_total{class=\"%s\"} %" PRIu64 "\n",
		        dmbyok_error_class_name(c), m->kms_errors[c]);

	put_result_histograms(f, "dmbyok_lock_duration_seconds",
	                      "Time locking a key's volumes took, by result.", m->lock);
	put_result_histograms(f, "dmbyok_restore_duration_seconds",
	                      "Time unlocking or reprovisioning a key's volumes took, by result.",
	                      m->restore);

	r = ferror(f) ? -ENOMEM : 0;
	/* fclose publishes buf and len; after it, buf is ours to free. */
	if (fclose(TAKE_PTR(f)) != 0 || r < 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	if (ret_len)
		*ret_len = len;
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	/* The rename is done: a failure here only weakens durability across a crash. */
	if (fd < 0 || fsync(fd) < 0)
		log_debug("Cannot fsync %s: %s.", dir, strerror(errno));
	if (fd >= 0)
		close(fd);
}

int dmbyok_metrics_write(const struct dmbyok_metrics *m, const struct dmbyok_metrics_gauges *g,
                         const char *path)
{
	_cleanup_free_ char *text = NULL, *dir = NULL, *tmp = NULL;
	const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
	size_t len;
	int fd, r;

	if (!base[0])
		return log_error_errno(EINVAL, "Metrics file %s is a directory name.", path);
	r = dmbyok_metrics_format(m, g, &text, &len);
	if (r < 0)
		return r == -ENOMEM ? log_oom() : r;
	dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
	if (!dir || asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0) {
		tmp = NULL;
		return log_oom();
	}

	/* Beside the target, so the rename stays in one filesystem and is atomic. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = negative_errno();
		return log_error_errno(r, "Cannot create a temporary file in %s for %s: %s.", dir,
		                       path, strerror(-r));
	}
	/* mkostemp made it 0600: the collector may run as another user. */
	r = fchmod(fd, 0644) < 0 ? negative_errno() : write_all(fd, text, len);
	if (r == 0 && fsync(fd) < 0)
		r = negative_errno();
	if (close(fd) < 0 && r == 0)
		r = negative_errno();
	if (r == 0 && rename(tmp, path) < 0)
		r = negative_errno();
	if (r == 0) {
		fsync_dir(dir);
		return 0;
	}
	(void)unlink(tmp);
	return log_error_errno(r, "Cannot write metrics to %s: %s.", path, strerror(-r));
}
