/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit file (src/kms/audit.c): its settings, size-based rotation, writers in several
 * processes that never interleave or lose a line, a writer killed mid-way (kill -9) whose
 * lock dies with it, and the lines of struct kms_audit as the KMS layer writes them.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/audit.h"
#include "dmbyok/log.h"
#include "kms/kms-provider.h"

static char dir[] = "/var/tmp/dmbyok-audit-XXXXXX";
static char conf[128], file[128];

static int setup(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(conf, sizeof(conf), "%s/audit.conf", dir);
	snprintf(file, sizeof(file), "%s/log/kms-audit.jsonl", dir);
	setenv("DMBYOK_AUDIT_CONF", conf, 1);
	unsetenv("DMBYOK_AUDIT_FILE");
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static void clean(void)
{
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s/log'", dir);
	assert_int_equal(system(cmd), 0);
}

static void write_conf(const char *text)
{
	FILE *f = fopen(conf, "we");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int load(const char *text, struct dmbyok_audit_settings *s)
{
	write_conf(text);
	return dmbyok_audit_settings_load(s);
}

static void test_settings(void **state)
{
	struct dmbyok_audit_settings s = {};

	(void)state;
	unlink(conf);
	assert_int_equal(dmbyok_audit_settings_load(&s), 0);
	assert_null(s.file); /* no configuration: the journal only */
	assert_int_equal(s.max_bytes, DMBYOK_AUDIT_DEFAULT_MAX_BYTES);
	assert_int_equal(s.keep, DMBYOK_AUDIT_DEFAULT_KEEP);

	assert_int_equal(
	    load("# audit\n file = /var/log/dmbyok/kms.jsonl \nmax-size = 64K\nkeep=3\n", &s), 0);
	assert_string_equal(s.file, "/var/log/dmbyok/kms.jsonl");
	assert_int_equal(s.max_bytes, 65536);
	assert_int_equal(s.keep, 3);
	dmbyok_audit_settings_done(&s);

	assert_int_equal(load("max-size = 2M\n", &s), 0);
	assert_int_equal(s.max_bytes, 2U << 20);
	setenv("DMBYOK_AUDIT_FILE", "/tmp/x.jsonl", 1);
	assert_int_equal(dmbyok_audit_settings_load(&s), 0);
	assert_string_equal(s.file, "/tmp/x.jsonl"); /* the environment wins */
	dmbyok_audit_settings_done(&s);
	setenv("DMBYOK_AUDIT_FILE", "relative.jsonl", 1);
	assert_int_equal(dmbyok_audit_settings_load(&s), -EINVAL);
	unsetenv("DMBYOK_AUDIT_FILE");

	static const char *const bad[] = {
		"file = relative/path\n", "max-size = 1K\n", "max-size = -5\n",
		"max-size = 10X\n",       "keep = 0\n",      "keep = 101\n",
		"keep = two\n",           "colour = blue\n", "file /x\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load(bad[i], &s), -EINVAL);
		assert_null(s.file); /* nothing half-set */
	}
	unlink(conf);
}

static int count_entry(json_object *e, void *userdata)
{
	(void)e;
	(*(unsigned *)userdata)++;
	return 0;
}

/* Checks every writer's sequence: each (writer, n) once, in order within a writer. */
struct seqs {
	int next[16];
	unsigned total;
	bool out_of_order;
};

static int check_entry(json_object *e, void *userdata)
{
	struct seqs *q = userdata;
	json_object *w, *n;
	int wi, ni;

	assert_true(json_object_object_get_ex(e, "writer", &w));
	assert_true(json_object_object_get_ex(e, "n", &n));
	wi = json_object_get_int(w);
	ni = json_object_get_int(n);
	assert_in_range(wi, 0, 15);
	if (q->next[wi] != -1 && ni != q->next[wi]) /* -1: may start anywhere (rotated away) */
		q->out_of_order = true;
	q->next[wi] = ni + 1;
	q->total++;
	return 0;
}

static void line_for(char *buf, size_t size, int writer, int n)
{
	/* About 200 bytes, like a real entry. */
	snprintf(buf, size,
	         "{\"writer\":%d,\"n\":%d,\"operation\":\"Decrypt\",\"key_arn\":"
	         "\"arn:aws:kms:eu-west-1:111122223333:key/0b5c1e6e-8a1e-4c52-9b7f-2d8c0f3a1b22\","
	         "\"pad\":\"%0*d\"}",
	         writer, n, 60, n);
}

static void test_rotation(void **state)
{
	struct dmbyok_audit_settings s = { .file = file, .max_bytes = 4096, .keep = 3 };
	char line[512], path[160];
	struct stat st;
	struct seqs q = {};
	unsigned skipped = 99;

	(void)state;
	clean();
	for (int i = 0; i < 100; i++) {
		line_for(line, sizeof(line), 0, i);
		assert_int_equal(dmbyok_audit_file_append(&s, line), 0);
	}
	/* Every file within the bound; only keep rotated copies; owner-only. */
	assert_int_equal(stat(file, &st), 0);
	assert_true(st.st_size <= 4096);
	assert_int_equal(st.st_mode & 0777, 0600);
	for (unsigned i = 1; i <= 3; i++) {
		snprintf(path, sizeof(path), "%s.%u", file, i);
		assert_int_equal(stat(path, &st), 0);
		assert_true(st.st_size <= 4096 && st.st_size > 4096 / 2);
	}
	snprintf(path, sizeof(path), "%s.4", file);
	assert_int_equal(stat(path, &st), -1);
	snprintf(path, sizeof(path), "%s/log", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	/* The walk sees the newest lines, oldest first, none twice; earlier ones rotated away. */
	for (int i = 0; i < 16; i++)
		q.next[i] = -1;
	assert_int_equal(dmbyok_audit_file_foreach(&s, check_entry, &q, &skipped), 0);
	assert_int_equal(skipped, 0);
	assert_false(q.out_of_order);
	assert_int_equal(q.next[0], 100); /* the last line is there */
	assert_true(q.total >= 3 * 4096 / 300 && q.total < 100);

	/* Bad lines are refused before anything is written. */
	assert_int_equal(dmbyok_audit_file_append(&s, "two\nlines"), -EINVAL);
	assert_int_equal(dmbyok_audit_file_append(&s, ""), -EINVAL);
}

#define WRITERS 8
#define LINES   300

static void test_concurrent_writers(void **state)
{
	struct dmbyok_audit_settings s = { .file = file, .max_bytes = 32768, .keep = 100 };
	struct seqs q = {};
	unsigned skipped = 99;
	pid_t pids[WRITERS];

	(void)state;
	clean();
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0) {
			char line[512];

			for (int n = 0; n < LINES; n++) {
				line_for(line, sizeof(line), w, n);
				if (dmbyok_audit_file_append(&s, line) < 0)
					_exit(1);
			}
			_exit(0);
		}
	}
	for (int w = 0; w < WRITERS; w++) {
		int status;

		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	/* 8 x 300 lines of ~200 bytes over 32 KiB files: many rotations, not one line lost. */
	assert_int_equal(dmbyok_audit_file_foreach(&s, check_entry, &q, &skipped), 0);
	assert_int_equal(skipped, 0);
	assert_int_equal(q.total, WRITERS * LINES);
	assert_false(q.out_of_order);
	for (int w = 0; w < WRITERS; w++)
		assert_int_equal(q.next[w], LINES);
}

static void test_killed_writers(void **state)
{
	struct dmbyok_audit_settings s = { .file = file, .max_bytes = 16384, .keep = 100 };
	unsigned n = 0, skipped = 0;
	char line[512];
	pid_t pids[4];

	(void)state;
	clean();
	for (int round = 0; round < 5; round++) {
		for (int w = 0; w < 4; w++) {
			pids[w] = fork();
			assert_true(pids[w] >= 0);
			if (pids[w] == 0) {
				for (int i = 0;; i++) {
					line_for(line, sizeof(line), w, i);
					(void)dmbyok_audit_file_append(&s, line);
				}
			}
		}
		usleep(30000 + round * 20000);
		for (int w = 0; w < 4; w++) {
			assert_int_equal(kill(pids[w], SIGKILL), 0);
			assert_int_equal(waitpid(pids[w], NULL, 0), pids[w]);
		}
		/* The killed writers' locks died with them: the next append goes through. */
		alarm(10);
		line_for(line, sizeof(line), 15, round);
		assert_int_equal(dmbyok_audit_file_append(&s, line), 0);
		alarm(0);
	}
	assert_int_equal(dmbyok_audit_file_foreach(&s, count_entry, &n, &skipped), 0);
	/* Whole lines only, or at worst a torn last line of a killed writer, which is skipped. */
	assert_true(n > 5);
	assert_true(skipped <= 5 * 4);
	print_message("killed writers: %u lines kept, %u torn line(s) skipped\n", n, skipped);
}

static int find_entry(json_object *e, void *userdata)
{
	json_object **ret = userdata;

	json_object_put(*ret);
	*ret = json_object_get(e);
	return 0;
}

static void test_kms_layer_line(void **state)
{
	struct dmbyok_audit_settings s = { .file = file, .max_bytes = 1 << 20, .keep = 1 };
	json_object *ctx =
	    json_tokener_parse("{\"dmbyok:volume\":\"5b0c6a9e-1111-4222-8333-444455556666\"}");
	json_object *got = NULL, *v;
	uint64_t t;

	(void)state;
	clean();
	/* The KMS layer reads the settings once per process: point them at our file first. */
	setenv("DMBYOK_AUDIT_FILE", file, 1);
	dmbyok_kms_audit_log(&(struct kms_audit){
	    .operation = "Decrypt",
	    .provider = "aws",
	    .region = "eu-west-1",
	    .key_arn = "arn:aws:kms:eu-west-1:111122223333:key/k",
	    .context = ctx,
	    .request_id = "req-1",
	    .result = -EKEYREVOKED,
	    .detail = "DisabledException: key is disabled",
	    .latency_ms = 42,
	});
	unsetenv("DMBYOK_AUDIT_FILE");
	assert_int_equal(dmbyok_audit_file_foreach(&s, find_entry, &got, NULL), 0);
	assert_non_null(got);
	assert_true(json_object_object_get_ex(got, "operation", &v));
	assert_string_equal(json_object_get_string(v), "Decrypt");
	assert_true(json_object_object_get_ex(got, "result", &v));
	assert_string_equal(json_object_get_string(v), "key-revoked");
	assert_true(json_object_object_get_ex(got, "errno", &v));
	assert_int_equal(json_object_get_int(v), EKEYREVOKED);
	assert_true(json_object_object_get_ex(got, "latency_ms", &v));
	assert_int_equal(json_object_get_int(v), 42);
	assert_true(json_object_object_get_ex(got, "request_id", &v));
	assert_string_equal(json_object_get_string(v), "req-1");
	assert_true(json_object_object_get_ex(got, "encryption_context", &v));
	assert_true(json_object_object_get_ex(v, "dmbyok:volume", &v));
	assert_true(json_object_object_get_ex(got, "detail", &v));
	assert_true(json_object_object_get_ex(got, "program", &v));
	assert_true(json_object_object_get_ex(got, "pid", &v));
	assert_int_equal(dmbyok_audit_entry_time(got, &t), 0);
	assert_true(t / 1000000ULL + 60 >= (uint64_t)time(NULL) &&
	            t / 1000000ULL <= (uint64_t)time(NULL));
	json_object_put(got);
	json_object_put(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_settings),           cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_concurrent_writers), cmocka_unit_test(test_killed_writers),
		cmocka_unit_test(test_kms_layer_line),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
