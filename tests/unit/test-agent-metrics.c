/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd's metrics file. What it says is checked by an independent reader: Debian's
 * python3-prometheus-client parser (missing = the test fails, scripts/setup installs it),
 * plus the exposition format's grammar and the histogram rules (the Python parser is lax);
 * the oracle prints every sample it parsed, which the tests compare with what was observed.
 * The write is checked for atomicity: readers racing the writer only ever see whole files,
 * and a failed write leaves the old file and no temporary file behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/metrics.h"
#include "dmbyok/log.h"

#define PYTHON "/usr/bin/python3"

static const char arn1[] = "arn:aws:kms:eu-west-1:111122223333:key/"
                           "1234abcd-12ab-34cd-56ef-1234567890ab";
static const char arn2[] = "arn:aws:kms:eu-west-1:111122223333:key/"
                           "0000ffff-12ab-34cd-56ef-1234567890ab";

/* The oracle, run as `python3 -c ORACLE FILE`: exits non-zero with a reason on any error. */
static const char oracle[] =
    "import json, math, re, sys\n"
    "try:\n"
    "    from prometheus_client.parser import text_string_to_metric_families\n"
    "except ImportError as e:  # exit 3: not a verdict on the text\n"
    "    print(\"oracle: python3-prometheus-client is missing (scripts/setup installs it): %s\" % "
    "e,\n"
    "          file=sys.stderr)\n"
    "    sys.exit(3)\n"
    "text = open(sys.argv[1], encoding=\"utf-8\").read()\n"
    "NAME = r\"[a-zA-Z_:][a-zA-Z0-9_:]*\"\n"
    "LABEL = r\"[a-zA-Z_][a-zA-Z0-9_]*\"\n"
    "VALUE = r'\"(?:[^\"\\\\\\n]|\\\\[\\\\\"n])*\"'\n"
    "SAMPLE = re.compile(r\"(%s)(?:\\{(%s=%s(?:,%s=%s)*)?\\})? (\\S+)\" % (NAME, LABEL, VALUE, "
    "LABEL, VALUE))\n"
    "def fail(msg):\n"
    "    sys.exit(\"oracle: \" + msg)\n"
    "if not text.endswith(\"\\n\"):\n"
    "    fail(\"no newline at the end\")\n"
    "lines = text[:-1].split(\"\\n\")\n"
    "helped, typed, current = set(), {}, None\n"
    "for i, line in enumerate(lines, 1):\n"
    "    if line.startswith(\"# HELP \"):\n"
    "        name, _, doc = line[7:].partition(\" \")\n"
    "        if not re.fullmatch(NAME, name) or name in helped or not doc:\n"
    "            fail(\"line %d: bad or repeated HELP: %r\" % (i, line))\n"
    "        helped.add(name)\n"
    "        if i >= len(lines) or not lines[i].startswith(\"# TYPE %s \" % name):\n"
    "            fail(\"line %d: HELP not followed by its TYPE\" % i)\n"
    "    elif line.startswith(\"# TYPE \"):\n"
    "        name, _, typ = line[7:].partition(\" \")\n"
    "        if name in typed or typ not in (\"counter\", \"gauge\", \"histogram\"):\n"
    "            fail(\"line %d: bad or repeated TYPE: %r\" % (i, line))\n"
    "        typed[name] = typ\n"
    "        current = name\n"
    "    else:\n"
    "        m = SAMPLE.fullmatch(line)\n"
    "        if not m:\n"
    "            fail(\"line %d: not a sample line: %r\" % (i, line))\n"
    "        suffixes = (\"_bucket\", \"_sum\", \"_count\") if typed[current] == \"histogram\" "
    "else (\"\",)\n"
    "        if m.group(1) not in [current + s for s in suffixes]:\n"
    "            fail(\"line %d: sample %s outside its family %s\" % (i, m.group(1), current))\n"
    "        float(m.group(3))\n"
    "seen = set()\n"
    "out = []\n"
    "families = list(text_string_to_metric_families(text))\n"
    "if sorted(f.name + (\"_total\" if f.type == \"counter\" else \"\") for f in families) != "
    "sorted(typed):\n"
    "    fail(\"families differ from the TYPE lines: %r\" % [f.name for f in families])\n"
    "for f in families:\n"
    "    if f.type not in (\"counter\", \"gauge\", \"histogram\") or not f.documentation:\n"
    "        fail(\"family %s: type %s, help %r\" % (f.name, f.type, f.documentation))\n"
    "    series = {}\n"
    "    for s in f.samples:\n"
    "        key = (s.name, tuple(sorted(s.labels.items())))\n"
    "        if key in seen:\n"
    "            fail(\"duplicate sample %r\" % (key,))\n"
    "        seen.add(key)\n"
    "        if s.timestamp is not None:\n"
    "            fail(\"sample with a timestamp: %r\" % (s,))\n"
    "        if f.type == \"counter\" and (s.value < 0 or s.value != int(s.value)):\n"
    "            fail(\"counter %r\" % (s,))\n"
    "        labels = \",\".join(\"%s=%s\" % (k, json.dumps(v)) for k, v in "
    "sorted(s.labels.items()))\n"
    "        out.append(\"%s{%s} %r\" % (s.name, labels, s.value))\n"
    "        if f.type == \"histogram\":\n"
    "            rest = tuple(sorted((k, v) for k, v in s.labels.items() if k != \"le\"))\n"
    "            h = series.setdefault(rest, {\"buckets\": [], \"sum\": None, \"count\": None})\n"
    "            if s.name.endswith(\"_bucket\"):\n"
    "                h[\"buckets\"].append((float(s.labels[\"le\"]), s.value))\n"
    "            elif s.name.endswith(\"_sum\"):\n"
    "                h[\"sum\"] = s.value\n"
    "            else:\n"
    "                h[\"count\"] = s.value\n"
    "    for rest, h in series.items():\n"
    "        b = h[\"buckets\"]\n"
    "        if not b or b[-1][0] != math.inf or h[\"sum\"] is None or h[\"count\"] is None:\n"
    "            fail(\"histogram %s%r incomplete\" % (f.name, rest))\n"
    "        if any(b[j][0] >= b[j + 1][0] or b[j][1] > b[j + 1][1] for j in range(len(b) - 1)):\n"
    "            fail(\"histogram %s%r: buckets not increasing or not cumulative\" % (f.name, "
    "rest))\n"
    "        if b[-1][1] != h[\"count\"]:\n"
    "            fail(\"histogram %s%r: +Inf bucket != count\" % (f.name, rest))\n"
    "print(\"\\n\".join(out))\n";

static char tmpdir[] = "/tmp/dmbyok-test-metrics.XXXXXX";

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static char *path_in_tmp(const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", tmpdir, name) > 0);
	return p;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;

	assert_non_null(f);
	n = getdelim(&buf, &cap, '\0', f);
	fclose(f);
	if (n < 0) { /* empty file */
		free(buf);
		buf = strdup("");
	}
	assert_non_null(buf);
	return buf;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/*
 * Runs the oracle on `text` and returns its listing of samples, one per line:
 * name{label="value",...} value, labels sorted, values JSON-escaped.
 */
static char *oracle_parse(const char *text)
{
	_cleanup_free_ char *in = path_in_tmp("oracle-in.prom"), *out = path_in_tmp("oracle-out");
	char *listing;
	pid_t pid;
	int status;

	write_text(in, text);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
			_exit(126);
		execl(PYTHON, PYTHON, "-c", oracle, in, (char *)NULL);
		fprintf(stderr, "cannot run %s: %s (scripts/setup installs python3)\n", PYTHON,
		        strerror(errno));
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
		fail_msg("the oracle cannot run: python3-prometheus-client is missing (run "
		         "scripts/setup, or apt-get install python3-prometheus-client)");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "The oracle refused this metrics text:\n%s", text);
		fail_msg("oracle failed (status 0x%x): see its message above", status);
	}
	listing = read_file(out);
	unlink(in);
	unlink(out);
	return listing;
}

/* The oracle's listing has exactly this line. */
static void assert_sample(const char *listing, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = listing; (p = strstr(p, line)); p += n)
		if ((p == listing || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
			return;
	fail_msg("no sample line\n  %s\nin the oracle's listing:\n%s", line, listing);
}

static void assert_no_sample_of(const char *listing, const char *prefix)
{
	size_t n = strlen(prefix);

	for (const char *p = listing; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, prefix, n))
			fail_msg("unexpected sample starting %s in:\n%s", prefix, listing);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static char *format(const struct dmbyok_metrics *m, const struct dmbyok_metrics_gauges *g)
{
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(dmbyok_metrics_format(m, g, &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

/* Nothing observed yet: every family is there, at zero, and the text is valid. */
static void test_empty(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges g = { 0 };
	_cleanup_free_ char *text = NULL, *l = NULL;

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1700000000, &m), 0);
	text = format(m, &g);
	l = oracle_parse(text);

	assert_sample(l, "dmbyok_agent_start_time_seconds{} 1700000000.0");
	assert_sample(l, "dmbyok_volumes{state=\"active\"} 0.0");
	assert_sample(l, "dmbyok_volumes{state=\"locked\"} 0.0");
	assert_sample(l, "dmbyok_volumes{state=\"torn-down\"} 0.0");
	assert_sample(l, "dmbyok_volumes{state=\"key-deleted\"} 0.0");
	assert_sample(l, "dmbyok_volumes{state=\"waiting-for-kms\"} 0.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"0.01\"} 0.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"10\"} 0.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"+Inf\"} 0.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_count{} 0.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_sum{} 0.0");
	assert_sample(l, "dmbyok_kms_errors_total{class=\"key-revoked\"} 0.0");
	assert_sample(l, "dmbyok_kms_errors_total{class=\"kms-unreachable\"} 0.0");
	assert_sample(l, "dmbyok_kms_errors_total{class=\"credentials\"} 0.0");
	assert_no_sample_of(l, "dmbyok_kms_errors_total{class=\"ok\"}");
	assert_sample(l, "dmbyok_lock_duration_seconds_count{result=\"ok\"} 0.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_count{result=\"failed\"} 0.0");
	assert_sample(l, "dmbyok_restore_duration_seconds_bucket{le=\"300\",result=\"ok\"} 0.0");
	assert_sample(l, "dmbyok_restore_duration_seconds_count{result=\"failed\"} 0.0");
	assert_no_sample_of(l, "dmbyok_key_state");
	assert_no_sample_of(l, "dmbyok_probes_total");
}

/* Probes: per key and class, the latency histogram (bounds inclusive), KMS errors. */
static void test_probes(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges g = { 0 };
	_cleanup_free_ char *text = NULL, *l = NULL;

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, NULL, 0, 10), 0); /* le 0.01 */
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, NULL, 0, 11), 0); /* le 0.025 */
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, NULL, -EKEYREVOKED, 250), 0); /* 0.25 */
	assert_int_equal(dmbyok_metrics_probe_done(m, arn2, NULL, -ETIMEDOUT, 10000), 0); /* 10 */
	assert_int_equal(dmbyok_metrics_probe_done(m, arn2, NULL, -ECONNREFUSED, 10001),
	                 0);                                                            /* +Inf */
	assert_int_equal(dmbyok_metrics_probe_done(m, arn2, NULL, -EKEYEXPIRED, 0), 0); /* 0.01 */
	assert_int_equal(dmbyok_metrics_probe_done(m, NULL, NULL, 0, 1), -EINVAL);
	assert_int_equal(dmbyok_metrics_probe_done(m, "", NULL, 0, 1), -EINVAL);
	dmbyok_metrics_kms_error(m, -EKEYREVOKED); /* an unlock's Decrypt */
	dmbyok_metrics_kms_error(m, 0);            /* not an error: ignored */
	text = format(m, &g);
	l = oracle_parse(text);

	assert_sample(l, "dmbyok_probes_total{class=\"ok\",key=\"arn:aws:kms:eu-west-1:"
	                 "111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"} 2.0");
	assert_sample(l, "dmbyok_probes_total{class=\"key-revoked\",key=\"arn:aws:kms:eu-west-1:"
	                 "111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"} 1.0");
	assert_sample(l, "dmbyok_probes_total{class=\"kms-unreachable\",key=\"arn:aws:kms:eu-west-"
	                 "1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"} 0.0");
	assert_sample(l, "dmbyok_probes_total{class=\"kms-unreachable\",key=\"arn:aws:kms:eu-west-"
	                 "1:111122223333:key/0000ffff-12ab-34cd-56ef-1234567890ab\"} 2.0");
	assert_sample(l, "dmbyok_probes_total{class=\"credentials\",key=\"arn:aws:kms:eu-west-1:"
	                 "111122223333:key/0000ffff-12ab-34cd-56ef-1234567890ab\"} 1.0");
	assert_sample(l, "dmbyok_probes_total{class=\"ok\",key=\"arn:aws:kms:eu-west-1:"
	                 "111122223333:key/0000ffff-12ab-34cd-56ef-1234567890ab\"} 0.0");

	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"0.01\"} 2.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"0.025\"} 3.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"0.1\"} 3.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"0.25\"} 4.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"5\"} 4.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"10\"} 5.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_bucket{le=\"+Inf\"} 6.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_count{} 6.0");
	assert_sample(l, "dmbyok_probe_duration_seconds_sum{} 20.272");

	assert_sample(l, "dmbyok_kms_errors_total{class=\"key-revoked\"} 2.0");
	assert_sample(l, "dmbyok_kms_errors_total{class=\"kms-unreachable\"} 2.0");
	assert_sample(l, "dmbyok_kms_errors_total{class=\"credentials\"} 1.0");
	assert_sample(l, "dmbyok_kms_errors_total{class=\"internal\"} 0.0");
}

static void test_actions(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges g = { 0 };
	_cleanup_free_ char *text = NULL, *l = NULL;

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	dmbyok_metrics_lock_done(m, 40, 0);
	dmbyok_metrics_lock_done(m, 1500, 0);
	dmbyok_metrics_lock_done(m, 30000, -EBUSY);
	dmbyok_metrics_restore_done(m, 300001, 0);
	dmbyok_metrics_restore_done(m, 5, -EKEYREVOKED);
	text = format(m, &g);
	l = oracle_parse(text);

	assert_sample(l, "dmbyok_lock_duration_seconds_bucket{le=\"0.05\",result=\"ok\"} 1.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_bucket{le=\"1\",result=\"ok\"} 1.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_bucket{le=\"2.5\",result=\"ok\"} 2.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_count{result=\"ok\"} 2.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_sum{result=\"ok\"} 1.54");
	assert_sample(l, "dmbyok_lock_duration_seconds_bucket{le=\"10\",result=\"failed\"} 0.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_bucket{le=\"30\",result=\"failed\"} 1.0");
	assert_sample(l, "dmbyok_lock_duration_seconds_sum{result=\"failed\"} 30.0");
	assert_sample(l, "dmbyok_restore_duration_seconds_bucket{le=\"300\",result=\"ok\"} 0.0");
	assert_sample(l, "dmbyok_restore_duration_seconds_bucket{le=\"+Inf\",result=\"ok\"} 1.0");
	assert_sample(l, "dmbyok_restore_duration_seconds_sum{result=\"ok\"} 300.001");
	assert_sample(l, "dmbyok_restore_duration_seconds_bucket{le=\"0.05\",result=\"failed\"} "
	                 "1.0");
	assert_sample(l, "dmbyok_restore_duration_seconds_sum{result=\"failed\"} 0.005");
	/* A lock's KMS-less failure is not a KMS error. */
	assert_sample(l, "dmbyok_kms_errors_total{class=\"busy\"} 0.0");
}

/* Gauges: volumes by state, each key's state one-hot, last OK absent until there is one. */
static void test_gauges(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	const struct dmbyok_metrics_key keys[] = {
		{ arn1, DMBYOK_KEYWATCH_LOCKED, 1700000123, NULL },
		{ arn2, DMBYOK_KEYWATCH_ACTIVE, 0, NULL },
	};
	struct dmbyok_metrics_gauges g = {
		.volumes = { [DMBYOK_METRICS_VOLUMES_ACTIVE] = 3,
		             [DMBYOK_METRICS_VOLUMES_LOCKED] = 2,
		             [DMBYOK_METRICS_VOLUMES_WAITING_FOR_KMS] = 1 },
		.keys = keys,
		.n_keys = 2,
	};
	_cleanup_free_ char *text = NULL, *l = NULL;
	const char *k1 = "key=\"arn:aws:kms:eu-west-1:111122223333:key/"
	                 "1234abcd-12ab-34cd-56ef-1234567890ab\"";
	const char *k2 = "key=\"arn:aws:kms:eu-west-1:111122223333:key/"
	                 "0000ffff-12ab-34cd-56ef-1234567890ab\"";
	char line[512];

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	text = format(m, &g);
	l = oracle_parse(text);

	assert_sample(l, "dmbyok_volumes{state=\"active\"} 3.0");
	assert_sample(l, "dmbyok_volumes{state=\"locked\"} 2.0");
	assert_sample(l, "dmbyok_volumes{state=\"torn-down\"} 0.0");
	assert_sample(l, "dmbyok_volumes{state=\"waiting-for-kms\"} 1.0");
	for (int s = 0; s < _DMBYOK_KEYWATCH_STATE_MAX; s++) {
		snprintf(line, sizeof(line), "dmbyok_key_state{%s,state=\"%s\"} %s", k1,
		         dmbyok_keywatch_state_name(s),
		         s == DMBYOK_KEYWATCH_LOCKED ? "1.0" : "0.0");
		assert_sample(l, line);
		snprintf(line, sizeof(line), "dmbyok_key_state{%s,state=\"%s\"} %s", k2,
		         dmbyok_keywatch_state_name(s),
		         s == DMBYOK_KEYWATCH_ACTIVE ? "1.0" : "0.0");
		assert_sample(l, line);
	}
	snprintf(line, sizeof(line),
	         "dmbyok_key_last_successful_probe_timestamp_seconds{%s} 1700000123.0", k1);
	assert_sample(l, line);
	snprintf(line, sizeof(line), "dmbyok_key_last_successful_probe_timestamp_seconds{%s}", k2);
	assert_no_sample_of(l, line);
	/* Keys the daemon watches but never probed have no counters yet. */
	assert_no_sample_of(l, "dmbyok_probes_total");
}

/* Label values are escaped so that a parser reads back exactly the original. */
static void test_escaping(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	static const char weird[] = "arn:x\"y\\z\nw}{,=";
	const struct dmbyok_metrics_key keys[] = { { weird, DMBYOK_KEYWATCH_SUSPECT, 42, NULL } };
	struct dmbyok_metrics_gauges g = { .keys = keys, .n_keys = 1 };
	_cleanup_free_ char *text = NULL, *l = NULL;

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	assert_int_equal(dmbyok_metrics_probe_done(m, weird, NULL, -EBADMSG, 3), 0);
	text = format(m, &g);
	/* The raw text: one sample per line, the escapes the format defines. */
	assert_non_null(strstr(text, "{key=\"arn:x\\\"y\\\\z\\nw}{,=\",state=\"suspect\"} 1\n"));
	l = oracle_parse(text);
	/* The oracle prints label values JSON-escaped: the same three escapes here. */
	assert_sample(l, "dmbyok_key_state{key=\"arn:x\\\"y\\\\z\\nw}{,=\",state=\"suspect\"} 1.0");
	assert_sample(l, "dmbyok_key_last_successful_probe_timestamp_seconds{key=\"arn:x\\\"y\\\\z"
	                 "\\nw}{,=\"} 42.0");
	assert_sample(l,
	              "dmbyok_probes_total{class=\"wrong-token\",key=\"arn:x\\\"y\\\\z\\nw}{,=\"} "
	              "1.0");
}

/* Per-key series live from watch (or first probe) to forget: memory follows the keys. */
static void test_forget_bounded(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges g = { 0 };
	_cleanup_free_ char *base = NULL, *text = NULL, *l = NULL;
	char arn[128];

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	assert_int_equal(dmbyok_metrics_watch_key(m, arn1, NULL), 0);
	assert_int_equal(dmbyok_metrics_watch_key(m, arn1, NULL), 0); /* twice: one set of series */
	assert_int_equal(dmbyok_metrics_watch_key(m, NULL, NULL), -EINVAL);
	base = format(m, &g);
	l = oracle_parse(base);
	assert_sample(l, "dmbyok_probes_total{class=\"ok\",key=\"arn:aws:kms:eu-west-1:"
	                 "111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"} 0.0");

	/* Thousands of keys come and go: the output (and the table) stays one key's worth. */
	for (int i = 0; i < 5000; i++) {
		snprintf(arn, sizeof(arn), "arn:aws:kms:eu-west-1:111122223333:key/k%d", i);
		assert_int_equal(dmbyok_metrics_probe_done(m, arn, NULL, 0, 5), 0);
		dmbyok_metrics_forget_key(m, arn, NULL);
	}
	dmbyok_metrics_forget_key(m, "arn:never-seen", NULL);
	dmbyok_metrics_forget_key(m, NULL, NULL);
	text = format(m, &g);
	assert_int_equal(count_lines(text), count_lines(base));
	assert_null(strstr(text, "key/k"));

	dmbyok_metrics_forget_key(m, arn1, NULL);
	free(l);
	free(text);
	text = format(m, &g);
	l = oracle_parse(text);
	assert_no_sample_of(l, "dmbyok_probes_total");
	/* The histogram keeps what the forgotten keys' probes did: it has no key label. */
	assert_sample(l, "dmbyok_probe_duration_seconds_count{} 5000.0");
}

/* A key watched whole and through a volume's grant: two watches, two series, never merged. */
static void test_grant_series(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	const char *grant = "0c237476b39f8bc44e45212e08498fbe3151305030726c0590dd8d3e9f3d6a0d";
	const struct dmbyok_metrics_key keys[] = {
		{ arn1, DMBYOK_KEYWATCH_ACTIVE, 7, NULL },
		{ arn1, DMBYOK_KEYWATCH_LOCKED, 5, grant },
	};
	struct dmbyok_metrics_gauges g = { .keys = keys, .n_keys = 2 };
	_cleanup_free_ char *text = NULL, *l = NULL;
	char want[512];

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, NULL, 0, 1), 0);
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, grant, -EKEYREVOKED, 1), 0);
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, grant, -EKEYREVOKED, 1), 0);
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, "", 0, 1), -EINVAL);
	text = format(m, &g);
	l = oracle_parse(text);
	snprintf(want, sizeof(want),
	         "dmbyok_probes_total{class=\"key-revoked\",grant=\"%s\",key=\"%s\"} 2.0", grant,
	         arn1);
	assert_sample(l, want);
	snprintf(want, sizeof(want), "dmbyok_probes_total{class=\"key-revoked\",key=\"%s\"} 0.0",
	         arn1);
	assert_sample(l, want);
	snprintf(want, sizeof(want),
	         "dmbyok_key_state{grant=\"%s\",key=\"%s\",state=\"locked\"} 1.0", grant, arn1);
	assert_sample(l, want);
	snprintf(want, sizeof(want), "dmbyok_key_state{key=\"%s\",state=\"active\"} 1.0", arn1);
	assert_sample(l, want);
	/* Forgetting the grant's watch leaves the key's own series. */
	dmbyok_metrics_forget_key(m, arn1, grant);
	free(text);
	text = format(m, &(struct dmbyok_metrics_gauges){ 0 });
	assert_null(strstr(text, grant));
	assert_non_null(strstr(text, "dmbyok_probes_total{key="));
}

static void test_bad_gauges(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_key k = { NULL, DMBYOK_KEYWATCH_ACTIVE, 0, NULL };
	struct dmbyok_metrics_gauges g = { .keys = &k, .n_keys = 1 };
	char *text = NULL;

	(void)state;
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	assert_int_equal(dmbyok_metrics_format(m, &g, &text, NULL), -EINVAL);
	k.key_arn = arn1;
	k.state = _DMBYOK_KEYWATCH_STATE_MAX;
	assert_int_equal(dmbyok_metrics_format(m, &g, &text, NULL), -EINVAL);
	assert_null(text);
	assert_null(dmbyok_metrics_free(NULL));
}

/* Names in `dir`, sorted, joined by spaces: what a directory listing shows. */
static char *list_dir(const char *dir)
{
	struct dirent **e;
	char *s = strdup("");
	int n = scandir(dir, &e, NULL, alphasort);

	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		char *t;

		if (strcmp(e[i]->d_name, ".") && strcmp(e[i]->d_name, "..")) {
			assert_true(asprintf(&t, "%s%s%s", s, s[0] ? " " : "", e[i]->d_name) > 0);
			free(s);
			s = t;
		}
		free(e[i]);
	}
	free(e);
	return s;
}

static void test_write(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges g = { .volumes = { 1 } };
	_cleanup_free_ char *dir = path_in_tmp("w"), *path = NULL, *expect = NULL, *got = NULL,
	                    *names = NULL, *l = NULL;
	struct stat st, st2;
	mode_t umask_was;
	int old_fd;

	(void)state;
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_true(asprintf(&path, "%s/dmbyokd.prom", dir) > 0);
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);

	/* Mode 0644 whatever the umask: node_exporter usually runs as another user. */
	umask_was = umask(077);
	assert_int_equal(dmbyok_metrics_write(m, &g, path), 0);
	umask(umask_was);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	expect = format(m, &g);
	got = read_file(path);
	assert_string_equal(got, expect);
	l = oracle_parse(got);
	assert_sample(l, "dmbyok_volumes{state=\"active\"} 1.0");
	names = list_dir(dir);
	assert_string_equal(names, "dmbyokd.prom"); /* no temporary file left */

	/* A reader holding the old file keeps reading it whole: it is replaced, not rewritten. */
	old_fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(old_fd >= 0);
	g.volumes[0] = 7;
	assert_int_equal(dmbyok_metrics_probe_done(m, arn1, NULL, 0, 1), 0);
	assert_int_equal(dmbyok_metrics_write(m, &g, path), 0);
	assert_int_equal(stat(path, &st2), 0);
	assert_true(st2.st_ino != st.st_ino);
	{
		char buf[65536];
		ssize_t n = pread(old_fd, buf, sizeof(buf) - 1, 0);

		assert_true(n >= 0);
		buf[n] = '\0';
		assert_string_equal(buf, expect);
	}
	close(old_fd);
	free(expect);
	free(got);
	expect = format(m, &g);
	got = read_file(path);
	assert_string_equal(got, expect);
	free(names);
	names = list_dir(dir);
	assert_string_equal(names, "dmbyokd.prom");

	/* A relative path is written beside the working directory's files. */
	{
		char cwd[4096];

		assert_non_null(getcwd(cwd, sizeof(cwd)));
		assert_int_equal(chdir(dir), 0);
		assert_int_equal(dmbyok_metrics_write(m, &g, "rel.prom"), 0);
		assert_int_equal(chdir(cwd), 0);
		free(names);
		names = list_dir(dir);
		assert_string_equal(names, "dmbyokd.prom rel.prom");
	}
}

/* Failures leave the old file as it was and no temporary file. */
static void test_write_failures(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges g = { .volumes = { 1 } };
	_cleanup_free_ char *dir = path_in_tmp("f"), *path = NULL, *blocker = NULL, *inside = NULL,
	                    *names = NULL, *got = NULL, *missing = NULL;
	pid_t pid;
	int status;

	(void)state;
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);

	/* No such directory: nothing created, an error. */
	assert_true(asprintf(&missing, "%s/nodir/x.prom", dir) > 0);
	assert_int_equal(dmbyok_metrics_write(m, &g, missing), -ENOENT);
	assert_int_equal(dmbyok_metrics_write(m, &g, "/"), -EINVAL);

	/* The rename fails (a non-empty directory is in the way) after the temp file is full. */
	assert_true(asprintf(&blocker, "%s/blocked.prom", dir) > 0);
	assert_int_equal(mkdir(blocker, 0755), 0);
	assert_true(asprintf(&inside, "%s/keep", blocker) > 0);
	write_text(inside, "x");
	assert_true(dmbyok_metrics_write(m, &g, blocker) < 0);
	names = list_dir(dir);
	assert_string_equal(names, "blocked.prom");

	/* The write itself fails half-way (file size limit): the old file is untouched. */
	assert_true(asprintf(&path, "%s/dmbyokd.prom", dir) > 0);
	write_text(path, "old complete file\n");
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { .rlim_cur = 100, .rlim_max = 100 };

		signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG */
		if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
			_exit(3);
		_exit(dmbyok_metrics_write(m, &g, path) == -EFBIG ? 0 : 4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	got = read_file(path);
	assert_string_equal(got, "old complete file\n");
	free(names);
	names = list_dir(dir);
	assert_string_equal(names, "blocked.prom dmbyokd.prom");
}

/*
 * Readers racing the writer see one whole version or the other, never a mix or a cut:
 * a child reads the file over and over while the parent rewrites it, alternating two
 * contents of different lengths. The child checks every read.
 */
static void test_write_atomic_under_readers(void **state)
{
	_cleanup_metrics_ struct dmbyok_metrics *m = NULL;
	struct dmbyok_metrics_gauges a = { .volumes = { 1 } }, b = { .volumes = { 22, 333 } };
	const struct dmbyok_metrics_key keys[] = { { arn1, DMBYOK_KEYWATCH_ACTIVE, 5, NULL } };
	_cleanup_free_ char *dir = path_in_tmp("r"), *path = NULL, *ta = NULL, *tb = NULL;
	int go[2], status;
	pid_t pid;

	(void)state;
	b.keys = keys;
	b.n_keys = 1;
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_true(asprintf(&path, "%s/dmbyokd.prom", dir) > 0);
	assert_int_equal(dmbyok_metrics_new(1, &m), 0);
	ta = format(m, &a);
	tb = format(m, &b);
	assert_true(strlen(ta) != strlen(tb));
	assert_int_equal(dmbyok_metrics_write(m, &a, path), 0);
	assert_int_equal(pipe(go), 0);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		unsigned reads = 0, bad = 0;
		char c;

		close(go[1]);
		(void)fcntl(go[0], F_SETFL, O_NONBLOCK);
		/* Until the parent closes the pipe (read returns 0), and at least 50 reads. */
		while (read(go[0], &c, 1) < 0 || reads < 50) {
			char *t = read_file(path);

			reads++;
			if (strcmp(t, ta) && strcmp(t, tb)) {
				fprintf(stderr, "read %u saw a partial file (%zu bytes)\n", reads,
				        strlen(t));
				bad++;
			}
			free(t);
		}
		_exit(bad ? 1 : 0);
	}
	close(go[0]);
	for (int i = 0; i < 100; i++)
		assert_int_equal(dmbyok_metrics_write(m, i % 2 ? &a : &b, path), 0);
	close(go[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* The oracle is a real check: it refuses broken texts (so its "yes" means something). */
static void test_oracle_refuses(void **state)
{
	static const char *const bad[] = {
		"# HELP a x\n# TYPE a gauge\na{l=\"v} 1\n",     /* unclosed */
		"# HELP a x\n# TYPE a gauge\na 1",              /* no newline */
		"# HELP a x\n# TYPE a gauge\na{l=\"\\q\"} 1\n", /* bad escape */
		/* not cumulative */
		("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
		 "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"),
		"# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
		"# HELP a x\n# TYPE a gauge\na 1\na 2\n",                 /* duplicate */
		"# HELP a x\n# TYPE a gauge\nb 1\n",                      /* outside */
		"# HELP a_total x\n# TYPE a_total counter\na_total -1\n", /* negative */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		_cleanup_free_ char *in = path_in_tmp("bad.prom");
		pid_t pid;
		int status;

		write_text(in, bad[i]);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int null = open("/dev/null", O_WRONLY);

			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
			execl(PYTHON, PYTHON, "-c", oracle, in, (char *)NULL);
			_exit(127);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		/* 1: refused; 3 (module missing) or 127 (no python) prove nothing. */
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
			fail_msg("the oracle did not refuse bad text %zu (status 0x%x):\n%s", i,
			         status, bad[i]);
	}
	/* And the control: it accepts a good one. */
	free(oracle_parse("# HELP a_total x\n# TYPE a_total counter\na_total{l=\"\\\"\"} 1\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oracle_refuses),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_probes),
		cmocka_unit_test(test_actions),
		cmocka_unit_test(test_gauges),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_forget_bounded),
		cmocka_unit_test(test_grant_series),
		cmocka_unit_test(test_bad_gauges),
		cmocka_unit_test(test_write),
		cmocka_unit_test(test_write_failures),
		cmocka_unit_test(test_write_atomic_under_readers),
	};

	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1);
	return cmocka_run_group_tests(tests, setup, teardown);
}
