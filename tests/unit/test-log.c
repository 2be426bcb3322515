/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The logging path: stderr formatting, journald detection (JOURNAL_STREAM against stderr),
 * native structured entries and the fallback when journald does not take them, the field
 * builder; and the KMS audit entry, end to end through the AWS provider against a canned
 * KMS on loopback: one entry per call with its fields, and no key material in any of them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"
#include "kms/kms-provider.h"

/* ---- stderr captured in a temporary file ---- */

static FILE *cap_file;
static int cap_saved = -1;

static void capture_begin(void)
{
	fflush(stderr);
	cap_file = tmpfile();
	assert_non_null(cap_file);
	cap_saved = dup(STDERR_FILENO);
	assert_true(cap_saved >= 0);
	assert_true(dup2(fileno(cap_file), STDERR_FILENO) >= 0);
}

/* What was written since capture_begin(); stderr is restored. */
static char *capture_end(void)
{
	static char text[65536];
	size_t n;

	fflush(stderr);
	assert_true(dup2(cap_saved, STDERR_FILENO) >= 0);
	close(cap_saved);
	rewind(cap_file);
	n = fread(text, 1, sizeof(text) - 1, cap_file);
	text[n] = '\0';
	fclose(cap_file);
	cap_file = NULL;
	return text;
}

/* JOURNAL_STREAM naming the current stderr (offset to the inode: a mismatch). */
static void journal_stream_is_stderr(long long ino_offset)
{
	struct stat st;
	char v[64];

	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino + (unsigned long long)ino_offset);
	assert_int_equal(setenv("JOURNAL_STREAM", v, 1), 0);
}

static void log_reset(void)
{
	unsetenv("JOURNAL_STREAM");
	unsetenv("DMBYOK_LOG_LEVEL");
	dmbyok_log_setup("test-log");
	dmbyok_log_set_max_level(LOG_LEVEL_INFO);
	dmbyok_log_set_journal_sink(NULL);
}

/* ---- a journal sink that keeps what it is given ---- */

#define SINK_ENTRIES 32
static struct {
	char entry[SINK_ENTRIES][8192]; /* "\nNAME=value\nNAME=value\n" */
	size_t n;
	int fail; /* errno to refuse with, or 0 */
} sink;

static int sink_capture(const struct iovec *iov, int n)
{
	char *e;
	size_t used = 1;

	if (sink.fail)
		return -sink.fail;
	assert_true(sink.n < SINK_ENTRIES);
	e = sink.entry[sink.n++];
	e[0] = '\n';
	for (int i = 0; i < n; i++) {
		assert_true(used + iov[i].iov_len + 2 < sizeof(sink.entry[0]));
		/* every field is NAME=value, as sd_journal_sendv requires */
		assert_non_null(memchr(iov[i].iov_base, '=', iov[i].iov_len));
		memcpy(e + used, iov[i].iov_base, iov[i].iov_len);
		used += iov[i].iov_len;
		e[used++] = '\n';
	}
	e[used] = '\0';
	return 0;
}

static void sink_reset(int fail)
{
	memset(&sink, 0, sizeof(sink));
	sink.fail = fail;
	dmbyok_log_set_journal_sink(sink_capture);
}

/* Whether an entry has exactly this field (name and value). */
static bool has_field(const char *entry, const char *field)
{
	char want[1024];

	snprintf(want, sizeof(want), "\n%s\n", field);
	return strstr(entry, want) != NULL;
}

/* The value of a field in an entry (first occurrence), or NULL. */
static const char *field_value(const char *entry, const char *name)
{
	static char v[1024];
	char want[128];
	const char *p, *end;

	snprintf(want, sizeof(want), "\n%s=", name);
	p = strstr(entry, want);
	if (!p)
		return NULL;
	p += strlen(want);
	end = strchr(p, '\n');
	snprintf(v, sizeof(v), "%.*s", (int)(end - p), p);
	return v;
}

static size_t count_fields(const char *entry, const char *name)
{
	char want[128];
	size_t n = 0;

	snprintf(want, sizeof(want), "\n%s=", name);
	for (const char *p = strstr(entry, want); p; p = strstr(p + 1, want))
		n++;
	return n;
}

/* ---- stderr ---- */

static void test_stderr_output_unchanged_and_fields_only_in_debug(void **state)
{
	const char *const fields[] = { "VOLUME=a1", "KEY_ARN=arn:aws:kms:x", NULL };
	char *out;

	(void)state;
	log_reset();
	capture_begin();
	log_info("plain %d", 1);
	log_warning("careful");
	assert_int_equal(log_struct_errno(LOG_LEVEL_NOTICE, EKEYREVOKED,
	                                  DMBYOK_MESSAGE_VOLUMES_LOCKED, fields, "Locked %s.",
	                                  "a1"),
	                 -EKEYREVOKED);
	log_struct(LOG_LEVEL_DEBUG, DMBYOK_MESSAGE_KMS_CALL, fields, "not shown");
	out = capture_end();
	/* What a terminal showed before structured entries existed, nothing more. */
	assert_string_equal(out, "test-log: plain 1\n"
	                         "test-log: warning: careful\n"
	                         "test-log: Locked a1.\n");

	dmbyok_log_set_max_level(LOG_LEVEL_DEBUG);
	capture_begin();
	log_struct_errno(LOG_LEVEL_WARNING, -ETIMEDOUT, DMBYOK_MESSAGE_KMS_UNREACHABLE, fields,
	                 "KMS down.");
	log_struct(LOG_LEVEL_DEBUG, NULL, NULL, "no fields");
	out = capture_end();
	assert_string_equal(out, "test-log: warning: KMS down. VOLUME=a1 KEY_ARN=arn:aws:kms:x "
	                         "ERRNO=110\n"
	                         "test-log: no fields\n");
	log_reset();
}

static void test_stderr_values_are_quoted_to_stay_one_line(void **state)
{
	const char *const fields[] = {
		"DETAIL=has space",
		"Q=a\"b\\c",
		"NL=one\ntwo",
		"EMPTY=",
		"CTL=\x01",
		"PLAIN=x",
		"lower=dropped",
		"_TRUSTED=dropped",
		"NOEQUALS",
		"9X=dropped",
		NULL,
	};
	char *out;

	(void)state;
	log_reset();
	dmbyok_log_set_max_level(LOG_LEVEL_DEBUG);
	capture_begin();
	log_struct(LOG_LEVEL_INFO, NULL, fields, "m");
	out = capture_end();
	assert_string_equal(out, "test-log: m DETAIL=\"has space\" Q=\"a\\\"b\\\\c\" "
	                         "NL=\"one\\ntwo\" EMPTY=\"\" CTL=\"\\x01\" PLAIN=x\n");
	log_reset();
}

/* ---- journald ---- */

static void test_journal_stream_must_name_stderr(void **state)
{
	(void)state;
	log_reset();
	capture_begin();
	assert_false(dmbyok_log_to_journal());
	journal_stream_is_stderr(0);
	dmbyok_log_setup("test-log");
	assert_true(dmbyok_log_to_journal());
	/* Inherited from a parent whose stderr was the journal, ours is not: not journald. */
	journal_stream_is_stderr(1);
	dmbyok_log_setup("test-log");
	assert_false(dmbyok_log_to_journal());
	static const char *const malformed[] = {
		"", "1", "1:", ":1", "x:1", "1:2x", "-1:2", "1:-2"
	};
	for (size_t i = 0; i < ELEMENTSOF(malformed); i++) {
		setenv("JOURNAL_STREAM", malformed[i], 1);
		dmbyok_log_setup("test-log");
		assert_false(dmbyok_log_to_journal());
	}
	(void)capture_end();
	log_reset();
}

static void test_journal_entries_are_native_with_fields(void **state)
{
	const char *const fields[] = { "VOLUME=a1", "VOLUME=a2", "KEY_ARN=arn:k", "bad=x", NULL };
	const char *e;
	char *out;

	(void)state;
	log_reset();
	sink_reset(0);
	capture_begin();
	journal_stream_is_stderr(0);
	dmbyok_log_setup("test-log");
	log_struct(LOG_LEVEL_NOTICE, DMBYOK_MESSAGE_VOLUMES_LOCKED, fields, "Locked %d.", 2);
	assert_int_equal(log_struct_errno(LOG_LEVEL_ERROR, -EKEYEXPIRED,
	                                  DMBYOK_MESSAGE_CREDENTIALS_BROKEN, NULL, "creds"),
	                 -EKEYEXPIRED);
	log_struct(LOG_LEVEL_DEBUG, DMBYOK_MESSAGE_KMS_CALL, NULL, "below the level");
	/* Plain messages still take the stream, with the priority prefix journald parses. */
	log_notice("plain");
	out = capture_end();
	assert_string_equal(out, "<5>plain\n");

	assert_int_equal(sink.n, 2);
	e = sink.entry[0];
	assert_true(has_field(e, "MESSAGE=Locked 2."));
	assert_true(has_field(e, "PRIORITY=5"));
	assert_true(has_field(e, "SYSLOG_IDENTIFIER=test-log"));
	assert_true(has_field(e, "MESSAGE_ID=" DMBYOK_MESSAGE_VOLUMES_LOCKED));
	assert_true(has_field(e, "VOLUME=a1"));
	assert_true(has_field(e, "VOLUME=a2"));
	assert_true(has_field(e, "KEY_ARN=arn:k"));
	assert_true(has_field(e, "CODE_FUNC=test_journal_entries_are_native_with_fields"));
	/* From the project's root, as in systemd's own entries. */
	assert_true(has_field(e, "CODE_FILE=tests/unit/test-log.c"));
	assert_non_null(field_value(e, "CODE_LINE"));
	assert_null(field_value(e, "ERRNO"));
	assert_null(strstr(e, "bad=x"));

	e = sink.entry[1];
	assert_true(has_field(e, "PRIORITY=3"));
	assert_true(has_field(e, "ERRNO=127")); /* EKEYEXPIRED */
	assert_true(has_field(e, "MESSAGE_ID=" DMBYOK_MESSAGE_CREDENTIALS_BROKEN));
	log_reset();
}

static void test_journal_refusal_falls_back_to_the_stream(void **state)
{
	const char *const fields[] = { "VOLUME=a1", "DETAIL=two words", NULL };
	char *out;

	(void)state;
	log_reset();
	sink_reset(ECONNREFUSED);
	capture_begin();
	journal_stream_is_stderr(0);
	dmbyok_log_setup("test-log");
	log_struct_errno(LOG_LEVEL_WARNING, ETIMEDOUT, NULL, fields, "lost?");
	out = capture_end();
	/* Not lost: on the stream, fields included (they are the record there). */
	assert_string_equal(out, "<4>lost? VOLUME=a1 DETAIL=\"two words\" ERRNO=110\n");
	assert_int_equal(sink.n, 0);
	log_reset();
}

/* ---- the field builder ---- */

static void test_field_builder(void **state)
{
	struct log_fields f = {};
	char big[9000];

	(void)state;
	assert_int_equal(dmbyok_log_field(&f, "VOLUME", "%s", "a1"), 0);
	assert_int_equal(dmbyok_log_field(&f, "VOLUME", "%s", "a2"), 0);
	assert_int_equal(dmbyok_log_field(&f, "LATENCY_MS", "%u", 41u), 0);
	assert_int_equal(dmbyok_log_field(&f, "EMPTY", "%s", ""), 0);
	/* names journald would not index, or that log_struct sets itself */
	static const char *const refused[] = {
		"",
		"volume",
		"_PID",
		"1ST",
		"A-B",
		"MESSAGE",
		"MESSAGE_ID",
		"PRIORITY",
		"ERRNO",
		"CODE_FILE",
		"SYSLOG_IDENTIFIER",
		"A2345678901234567890123456789012345678901234567890123456789012345",
	};
	for (size_t i = 0; i < ELEMENTSOF(refused); i++)
		assert_int_equal(dmbyok_log_field(&f, refused[i], "x"), -EINVAL);
	assert_int_equal(dmbyok_log_field(&f, NULL, "x"), -EINVAL);

	assert_int_equal(f.n, 4);
	assert_string_equal(f.field[0], "VOLUME=a1");
	assert_string_equal(f.field[1], "VOLUME=a2");
	assert_string_equal(f.field[2], "LATENCY_MS=41");
	assert_string_equal(f.field[3], "EMPTY=");
	assert_null(f.field[4]);

	/* A value that does not fit is left out, never cut; the list stays usable. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(dmbyok_log_field(&f, "BIG", "%s", big), -E2BIG);
	assert_int_equal(f.n, 4);
	assert_null(f.field[4]);
	assert_int_equal(dmbyok_log_field(&f, "AFTER", "ok"), 0);
	assert_string_equal(f.field[4], "AFTER=ok");
	assert_string_equal(f.field[0], "VOLUME=a1");

	/* Full list: refused, and still NULL-terminated. */
	while (f.n < DMBYOK_LOG_FIELDS_MAX)
		assert_int_equal(dmbyok_log_field(&f, "N", "%zu", f.n), 0);
	assert_int_equal(dmbyok_log_field(&f, "N", "one more"), -E2BIG);
	assert_null(f.field[DMBYOK_LOG_FIELDS_MAX]);
}

/* ---- the KMS audit entry ---- */

#define ARN_EU     "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#define ARN_EU_NEW "arn:aws:kms:eu-west-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"
#define ARN_US     "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
/* The canned secrets: none may appear in any log output. */
#define PLAINTEXT "0123456789abcdef"
#define PLAINTEXT_B64                                                                              \
	"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg=="
#define BLOB_B64   "S01TRQF3cmFwcGVkLWRhdGEta2V5LXVuZGVyLXRoZS1jdXN0b21lci1rZXktMDEyMzQ1Njc4OQ=="
#define BLOB2_B64  "S01TRQF3cmFwcGVkLWRhdGEta2V5LXVuZGVyLXRoZS1vdGhlci1rZXktMDEyMzQ1Njc4OTAx"
#define SECRET_KEY "wJalrXUtnFEMI-test-secret-access-key"

static void test_audit_fields_are_only_the_non_secret_inputs(void **state)
{
	json_object *ctx = json_object_new_object();
	struct log_fields f = {};
	char *canon = NULL;

	(void)state;
	json_object_object_add(ctx, "service", json_object_new_string("orders"));
	json_object_object_add(ctx, "dmbyok:volume", json_object_new_string("uuid-1"));
	json_object_object_add(ctx, "a/b", json_object_new_string("x\"y"));
	assert_int_equal(dmbyok_kms_context_canonical(ctx, &canon), 0);
	/* sorted keys, compact, '/' as is: the same bytes whatever order the token had */
	assert_string_equal(canon, "{\"a/b\":\"x\\\"y\",\"dmbyok:volume\":\"uuid-1\",\"service\":"
	                           "\"orders\"}");
	free(canon);

	assert_int_equal(dmbyok_kms_audit_fields(
	                     &(struct kms_audit){
	                         .operation = "Decrypt",
	                         .provider = "aws",
	                         .region = "eu-west-1",
	                         .key_id = "alias/orders",
	                         .key_arn = ARN_EU,
	                         .context = ctx,
	                         .request_id = "req-1",
	                         .result = 0,
	                         .detail = "ignored on success",
	                         .latency_ms = 41,
	                     },
	                     &f),
	                 0);
	const char *const want[] = {
		"OPERATION=Decrypt",
		"PROVIDER=aws",
		"REGION=eu-west-1",
		"KEY_ID=alias/orders",
		"KEY_ARN=" ARN_EU,
		"ENCRYPTION_CONTEXT={\"a/b\":\"x\\\"y\",\"dmbyok:volume\":\"uuid-1\",\"service\":"
		"\"orders\"}",
		"RESULT=ok",
		"LATENCY_MS=41",
		"REQUEST_ID=req-1",
		NULL,
	};
	for (size_t i = 0; i < ELEMENTSOF(want); i++) {
		if (!want[i]) {
			assert_null(f.field[i]);
			break;
		}
		assert_string_equal(f.field[i], want[i]);
	}

	/* A failure names its class; the unknowns are left out rather than empty. */
	memset(&f, 0, sizeof(f));
	assert_int_equal(dmbyok_kms_audit_fields(
	                     &(struct kms_audit){
	                         .operation = "Decrypt",
	                         .result = -EKEYREVOKED,
	                         .detail = "DisabledException: key is disabled.",
	                         .latency_ms = 3,
	                     },
	                     &f),
	                 0);
	assert_string_equal(f.field[0], "OPERATION=Decrypt");
	assert_string_equal(f.field[1], "RESULT=key-revoked");
	assert_string_equal(f.field[2], "LATENCY_MS=3");
	assert_string_equal(f.field[3], "DETAIL=DisabledException: key is disabled.");
	assert_null(f.field[4]);
	json_object_put(ctx);
}

/* A canned KMS on loopback: answers each operation, one connection per request. */
static struct {
	int fd;
	int port;
	pthread_t thread;
	bool disabled; /* answer DisabledException */
	unsigned served;
	unsigned short_writes;
} fake;

static void fake_answer(int c, const char *request)
{
	const char *target = strstr(request, "X-Amz-Target: TrentService."), *body;
	char response[2048], id[32];
	int status = 200, n;

	fake.served++;
	snprintf(id, sizeof(id), "req-%04u", fake.served);
	target = target ? target + strlen("X-Amz-Target: TrentService.") : "";
	if (fake.disabled) {
		status = 400;
		body = "{\"__type\":\"DisabledException\",\"message\":\"" ARN_EU " is disabled.\"}";
	} else if (!strncmp(target, "Decrypt", 7)) {
		body = "{\"KeyId\":\"" ARN_EU "\",\"Plaintext\":\"" PLAINTEXT_B64 "\","
		       "\"EncryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"}";
	} else if (!strncmp(target, "GenerateDataKey", 15)) {
		body = "{\"KeyId\":\"" ARN_EU "\",\"Plaintext\":\"" PLAINTEXT_B64 "\","
		       "\"CiphertextBlob\":\"" BLOB_B64 "\"}";
	} else if (!strncmp(target, "ReEncrypt", 9)) {
		body = "{\"KeyId\":\"" ARN_EU_NEW "\",\"SourceKeyId\":\"" ARN_EU "\","
		       "\"CiphertextBlob\":\"" BLOB2_B64 "\"}";
	} else if (!strncmp(target, "DescribeKey", 11)) {
		body = "{\"KeyMetadata\":{\"KeyId\":\"1234abcd-12ab-34cd-56ef-1234567890ab\","
		       "\"Arn\":\"" ARN_EU "\",\"KeyState\":\"Enabled\",\"Enabled\":true}}";
	} else {
		status = 400;
		body = "{\"__type\":\"UnknownOperationException\"}";
	}
	n = snprintf(response, sizeof(response),
	             "HTTP/1.1 %d X\r\nContent-Type: application/x-amz-json-1.1\r\n"
	             "x-amzn-RequestId: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
	             status, id, strlen(body), body);
	if (write(c, response, (size_t)n) != n)
		fake.short_writes++; /* checked by the test, outside this thread */
}

static void *fake_serve(void *arg)
{
	(void)arg;
	for (;;) {
		char request[16384];
		size_t used = 0;
		const char *end, *cl;
		int c = accept(fake.fd, NULL, NULL);

		if (c < 0)
			return NULL; /* shut down */
		/* headers, then Content-Length bytes of body */
		for (;;) {
			ssize_t n = read(c, request + used, sizeof(request) - 1 - used);

			if (n <= 0)
				break;
			used += (size_t)n;
			request[used] = '\0';
			end = strstr(request, "\r\n\r\n");
			cl = strcasestr(request, "\r\nContent-Length:");
			if (end && (!cl || used >= (size_t)(end + 4 - request) +
			                               strtoul(cl + 17, NULL, 10)))
				break;
		}
		fake_answer(c, request);
		close(c);
	}
}

static void fake_start(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(&fake, 0, sizeof(fake));
	fake.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fake.fd >= 0);
	assert_int_equal(bind(fake.fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fake.fd, 8), 0);
	assert_int_equal(getsockname(fake.fd, (struct sockaddr *)&a, &len), 0);
	fake.port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&fake.thread, NULL, fake_serve, NULL), 0);
}

static void fake_stop(void)
{
	shutdown(fake.fd, SHUT_RDWR);
	assert_int_equal(pthread_join(fake.thread, NULL), 0);
	close(fake.fd);
}

/* The client under test: environment keys, no shared files, region us-east-1. */
static struct kms_client *client_for(int port, unsigned max_attempts)
{
	struct kms_client *c = NULL;
	char url[64];

	unsetenv("AWS_PROFILE");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_ENDPOINT_URL");
	unsetenv("AWS_ENDPOINT_URL_KMS");
	unsetenv("AWS_CA_BUNDLE");
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST000000000001", 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY, 1);
	setenv("AWS_REGION", "us-east-1", 1);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	setenv("AWS_CONFIG_FILE", "/nonexistent/dmbyok-test-log/config", 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/dmbyok-test-log/credentials", 1);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	assert_int_equal(
	    dmbyok_kms_client_new(
	        &(struct kms_options){ .endpoint = url, .max_attempts = max_attempts }, &c),
	    0);
	return c;
}

static void assert_no_secret(const char *text)
{
	static const char *const secrets[] = {
		PLAINTEXT,          PLAINTEXT_B64,           BLOB_B64, BLOB2_B64,
		SECRET_KEY,         "MDEyMzQ1Njc4OWFiY2RlZ", /* any piece of the plaintext's base64
		                                              */
		"S01TRQF3cmFwcGVk",                          /* or of a wrapped key */
	};

	for (size_t i = 0; i < ELEMENTSOF(secrets); i++)
		if (strstr(text, secrets[i]))
			fail_msg("secret \"%s\" in the log: %s", secrets[i], text);
}

static void test_audit_one_entry_per_call_without_secrets(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	json_object *ctx = json_object_new_object();
	struct secret *pt = NULL;
	struct kms_key_info info = {};
	char *blob = NULL, *arn = NULL, *out;
	const char *e;

	(void)state;
	json_object_object_add(ctx, "dmbyok:volume", json_object_new_string("uuid-1"));
	json_object_object_add(ctx, "app", json_object_new_string("orders"));
	fake_start();
	c = client_for(fake.port, 1);

	log_reset();
	sink_reset(0);
	capture_begin();
	journal_stream_is_stderr(0);
	dmbyok_log_setup("test-log");

	/* Decrypt named by ARN (the call goes to the ARN's region), and by the blob alone. */
	assert_int_equal(dmbyok_kms_decrypt(c, ARN_EU, BLOB_B64, ctx, &pt, NULL), 0);
	assert_memory_equal(pt->data, PLAINTEXT, 16);
	dmbyok_secret_free(pt);
	assert_int_equal(dmbyok_kms_decrypt(c, NULL, BLOB_B64, ctx, &pt, &arn), 0);
	assert_string_equal(arn, ARN_EU);
	dmbyok_secret_free(pt);
	free(arn);
	assert_int_equal(dmbyok_kms_generate_data_key(c, "alias/orders", ctx, 64, &pt, &blob, NULL),
	                 0);
	dmbyok_secret_free(pt);
	free(blob);
	assert_int_equal(dmbyok_kms_reencrypt(c, NULL, BLOB_B64, ctx, ARN_EU_NEW, &blob, &arn), 0);
	free(blob);
	free(arn);
	assert_int_equal(dmbyok_kms_describe_key(c, ARN_EU, &info), 0);
	dmbyok_kms_key_info_done(&info);
	fake.disabled = true;
	assert_int_equal(dmbyok_kms_decrypt(c, ARN_EU, BLOB_B64, ctx, &pt, NULL), -EKEYREVOKED);
	out = capture_end();

	/* Under journald: all native, nothing on the stream. */
	assert_string_equal(out, "");
	assert_int_equal(fake.served, 6);
	assert_int_equal(fake.short_writes, 0);
	assert_int_equal(sink.n, 6);
	for (size_t i = 0; i < sink.n; i++) {
		e = sink.entry[i];
		assert_no_secret(e);
		assert_true(has_field(e, "MESSAGE_ID=" DMBYOK_MESSAGE_KMS_CALL));
		assert_true(has_field(e, "PRIORITY=6")); /* info, success or not */
		assert_true(has_field(e, "PROVIDER=aws"));
		assert_non_null(field_value(e, "LATENCY_MS"));
		assert_true(strspn(field_value(e, "LATENCY_MS"), "0123456789") ==
		            strlen(field_value(e, "LATENCY_MS")));
		/* AWS's request id of that very call */
		char id[48];
		snprintf(id, sizeof(id), "REQUEST_ID=req-%04zu", i + 1);
		assert_true(has_field(e, id));
		/* the credentials that signed it, as CloudTrail names them (not their secret) */
		assert_true(has_field(e, "PRINCIPAL=AKIDTEST000000000001"));
		assert_int_equal(count_fields(e, "OPERATION"), 1);
		assert_int_equal(count_fields(e, "KEY_ARN"), i == 5 ? 0 : 1);
	}
	e = sink.entry[0];
	assert_true(has_field(e, "OPERATION=Decrypt"));
	assert_true(has_field(e, "KEY_ID=" ARN_EU));
	assert_true(has_field(e, "KEY_ARN=" ARN_EU));
	assert_true(has_field(e, "REGION=eu-west-1"));
	assert_true(has_field(e, "RESULT=ok"));
	assert_true(
	    has_field(e, "ENCRYPTION_CONTEXT={\"app\":\"orders\",\"dmbyok:volume\":\"uuid-1\"}"));
	assert_non_null(strstr(e, "\nMESSAGE=KMS Decrypt " ARN_EU ": ok in "));
	assert_null(field_value(e, "ERRNO"));
	e = sink.entry[1];
	assert_null(field_value(e, "KEY_ID")); /* the blob named the key */
	assert_true(has_field(e, "KEY_ARN=" ARN_EU));
	assert_true(has_field(e, "REGION=us-east-1"));
	e = sink.entry[2];
	assert_true(has_field(e, "OPERATION=GenerateDataKey"));
	assert_true(has_field(e, "KEY_ID=alias/orders"));
	assert_true(has_field(e, "KEY_ARN=" ARN_EU));
	e = sink.entry[3];
	assert_true(has_field(e, "OPERATION=ReEncrypt"));
	assert_true(has_field(e, "KEY_ID=" ARN_EU_NEW));
	assert_true(has_field(e, "KEY_ARN=" ARN_EU_NEW));
	e = sink.entry[4];
	assert_true(has_field(e, "OPERATION=DescribeKey"));
	assert_true(has_field(e, "KEY_ARN=" ARN_EU));
	assert_null(field_value(e, "ENCRYPTION_CONTEXT"));
	e = sink.entry[5];
	assert_true(has_field(e, "RESULT=key-revoked"));
	assert_true(has_field(e, "ERRNO=128")); /* EKEYREVOKED */
	assert_non_null(strstr(e, "\nDETAIL=DisabledException: "));

	/* On a terminal in debug mode: the same entry as one line, still without secrets. */
	log_reset();
	dmbyok_log_set_max_level(LOG_LEVEL_DEBUG);
	fake.disabled = false;
	capture_begin();
	assert_int_equal(dmbyok_kms_decrypt(c, ARN_EU, BLOB_B64, ctx, &pt, NULL), 0);
	dmbyok_secret_free(pt);
	out = capture_end();
	assert_no_secret(out);
	assert_non_null(strstr(out, "test-log: KMS Decrypt " ARN_EU ": ok in "));
	assert_non_null(strstr(out,
	                       " OPERATION=Decrypt PROVIDER=aws REGION=eu-west-1 KEY_ID=" ARN_EU
	                       " KEY_ARN=" ARN_EU " ENCRYPTION_CONTEXT="));
	assert_non_null(strstr(out, " RESULT=ok LATENCY_MS="));
	assert_non_null(strstr(out, " REQUEST_ID=req-0007 PRINCIPAL=AKIDTEST000000000001\n"));

	/* At the default level a terminal shows nothing for a successful call. */
	log_reset();
	capture_begin();
	assert_int_equal(dmbyok_kms_decrypt(c, ARN_EU, BLOB_B64, ctx, &pt, NULL), 0);
	dmbyok_secret_free(pt);
	out = capture_end();
	assert_string_equal(out, "");

	fake_stop();
	json_object_put(ctx);
	log_reset();
}

static void test_audit_unreachable_kms(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	struct secret *pt = NULL;
	int fd;
	const char *e;

	(void)state;
	/* A port nobody listens on: bound, then closed. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	c = client_for(ntohs(a.sin_port), 1);

	log_reset();
	sink_reset(0);
	capture_begin();
	journal_stream_is_stderr(0);
	dmbyok_log_setup("test-log");
	assert_int_equal(dmbyok_kms_decrypt(c, ARN_US, BLOB_B64, NULL, &pt, NULL), -ECONNREFUSED);
	(void)capture_end();

	assert_int_equal(sink.n, 1);
	e = sink.entry[0];
	assert_no_secret(e);
	assert_true(has_field(e, "RESULT=kms-unreachable"));
	assert_true(has_field(e, "ERRNO=111"));
	assert_true(has_field(e, "REGION=us-east-1"));
	assert_true(has_field(e, "KEY_ID=" ARN_US));
	assert_null(field_value(e, "KEY_ARN"));
	assert_null(field_value(e, "REQUEST_ID")); /* no answer, no id */
	assert_null(field_value(e, "ENCRYPTION_CONTEXT"));
	assert_non_null(field_value(e, "DETAIL"));
	log_reset();
}

/* Every id is a distinct 128-bit id, and catalog/dmbyok.catalog documents exactly these. */
static void test_message_ids_and_catalog(void **state)
{
	static const char *const ids[] = {
		DMBYOK_MESSAGE_KEY_REVOKED,        DMBYOK_MESSAGE_VOLUMES_LOCKED,
		DMBYOK_MESSAGE_TORN_DOWN,          DMBYOK_MESSAGE_RESTORED,
		DMBYOK_MESSAGE_REWRAPPED,          DMBYOK_MESSAGE_KMS_UNREACHABLE,
		DMBYOK_MESSAGE_CREDENTIALS_BROKEN, DMBYOK_MESSAGE_KMS_CALL,
		DMBYOK_MESSAGE_KEY_DELETED,        DMBYOK_MESSAGE_AGENT_STARTED,
		DMBYOK_MESSAGE_SHREDDED,           DMBYOK_MESSAGE_POLICY_VIOLATED,
	};
	char path[4096], line[256];
	const char *slash = strrchr(__FILE__, '/');
	size_t found = 0;
	FILE *f;

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
		assert_int_equal(strlen(ids[i]), 32);
		assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(ids[i], ids[j]);
	}
	/* this file is tests/unit/test-log.c */
	assert_non_null(slash);
	snprintf(path, sizeof(path), "%.*s/../../catalog/dmbyok.catalog", (int)(slash - __FILE__),
	         __FILE__);
	f = fopen(path, "re");
	if (!f)
		fail_msg("cannot open %s", path);
	while (fgets(line, sizeof(line), f)) {
		bool known = false;

		if (strncmp(line, "-- ", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		for (size_t i = 0; i < ELEMENTSOF(ids); i++)
			known = known || !strcmp(line + 3, ids[i]);
		if (!known)
			fail_msg("catalog entry %s is not in message-ids.h", line + 3);
		found++;
	}
	fclose(f);
	assert_int_equal(found, ELEMENTSOF(ids));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stderr_output_unchanged_and_fields_only_in_debug),
		cmocka_unit_test(test_stderr_values_are_quoted_to_stay_one_line),
		cmocka_unit_test(test_journal_stream_must_name_stderr),
		cmocka_unit_test(test_journal_entries_are_native_with_fields),
		cmocka_unit_test(test_journal_refusal_falls_back_to_the_stream),
		cmocka_unit_test(test_field_builder),
		cmocka_unit_test(test_audit_fields_are_only_the_non_secret_inputs),
		cmocka_unit_test(test_audit_one_entry_per_call_without_secrets),
		cmocka_unit_test(test_audit_unreachable_kms),
		cmocka_unit_test(test_message_ids_and_catalog),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
