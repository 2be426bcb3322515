/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Google Cloud KMS provider against the emulator (started by run-with-gcp-emulator):
 * every call and error class, the service-account JWT flow, the metadata server, token
 * caching and refresh, retries, and timeouts against a hanging server.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"
#include "../../src/kms/gcp/gcp.h"

#define PROJECT  "projects/dmbyok-test"
#define LOCATION "europe-west1"
#define RING     PROJECT "/locations/" LOCATION "/keyRings/ring"
#define KEY_A    RING "/cryptoKeys/a"
#define KEY_B    RING "/cryptoKeys/b"
#define KEY_R    RING "/cryptoKeys/revocable"
#define HOST_SA  "dmbyok-host@dmbyok-test.iam.gserviceaccount.com"
#define OTHER_SA "dmbyok-other@dmbyok-test.iam.gserviceaccount.com"

static const char *url, *plain, *ca, *other_ca, *audit_path, *test_dir;
static char sa_host[512], sa_other[512];

static const char *need_env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "%s is not set: run this test through run-with-gcp-emulator.\n",
		        name);
		exit(1);
	}
	return v;
}

/* ---- the emulator's admin and control APIs, over plain libcurl ---- */

struct buf {
	char data[65536];
	size_t n;
};

static size_t on_body(char *p, size_t s, size_t n, void *u)
{
	struct buf *b = u;
	size_t m = s * n;

	if (b->n + m >= sizeof(b->data))
		return 0;
	memcpy(b->data + b->n, p, m);
	b->n += m;
	b->data[b->n] = '\0';
	return m;
}

/* A request to the TLS emulator; returns the HTTP status, the body in *out. */
static long request(const char *method, const char *path, const char *token, const char *body,
                    struct buf *out)
{
	char u[1024], auth[256];
	struct curl_slist *h = NULL;
	CURL *curl = curl_easy_init();
	long status = 0;
	CURLcode cc;

	out->n = 0;
	out->data[0] = '\0';
	snprintf(u, sizeof(u), "%s%s", url, path);
	curl_easy_setopt(curl, CURLOPT_URL, u);
	curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
	h = curl_slist_append(h, "Content-Type: application/json");
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	if (body)
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	cc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(curl);
	curl_slist_free_all(h);
	if (cc != CURLE_OK)
		fail_msg("%s %s: %s", method, path, curl_easy_strerror(cc));
	return status;
}

static void admin(const char *method, const char *path, const char *body)
{
	struct buf b;
	char p[1024];
	long s;

	snprintf(p, sizeof(p), "/v1/%s", path);
	s = request(method, p, "admin-token", body, &b);
	if (s != 200)
		fail_msg("admin %s %s: HTTP %ld %s", method, path, s, b.data);
}

static void control(const char *method, const char *what, const char *body)
{
	struct buf b;
	char p[256];
	long s;

	snprintf(p, sizeof(p), "/_emulator/%s", what);
	s = request(method, p, NULL, body, &b);
	if (s != 200)
		fail_msg("control %s %s: HTTP %ld %s", method, what, s, b.data);
}

static void fault(const char *op, const char *kind, int count, int latency_ms)
{
	char body[256];

	snprintf(body, sizeof(body), "{\"operation\":\"%s\",\"fault\":\"%s\",\"count\":%d%s%.0d}",
	         op, kind, count, latency_ms ? ",\"latency_ms\":" : "", latency_ms);
	control("POST", "faults", body);
}

/* A new JSON key of a service account, written to a file. */
static void sa_key(const char *email, char path[static 512])
{
	struct buf b;
	char body[256];
	FILE *f;

	snprintf(body, sizeof(body), "{\"email\":\"%s\"}", email);
	assert_int_equal(request("POST", "/_emulator/service-account-keys", NULL, body, &b), 200);
	snprintf(path, 512, "%s/%s.json", test_dir, email);
	f = fopen(path, "we");
	assert_non_null(f);
	fputs(b.data, f);
	fclose(f);
	chmod(path, 0600);
}

/* Calls of `op` in the emulator's audit log so far. */
static unsigned audit_count(const char *op)
{
	FILE *f = fopen(audit_path, "re");
	char line[16384];
	unsigned n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		json_object *j = json_tokener_parse(line), *o;

		if (j && json_object_object_get_ex(j, "operation", &o) &&
		    !strcmp(json_object_get_string(o), op))
			n++;
		json_object_put(j);
	}
	fclose(f);
	return n;
}

/* The emulator writes its record after answering: wait for them, then for no more. */
static void audit_expect_range(const char *op, unsigned before, unsigned min, unsigned max)
{
	unsigned n = 0;

	for (int i = 0; i < 100 && (n = audit_count(op) - before) < min; i++)
		usleep(20000);
	usleep(100000);
	n = audit_count(op) - before;
	if (n < min || n > max)
		fail_msg("audit log: %u %s calls, expected %u..%u", n, op, min, max);
}

static void audit_expect(const char *op, unsigned before, unsigned want)
{
	audit_expect_range(op, before, want, want);
}

/* The last audit record of `op`, parsed, once there are more than `before` of them (the
 * emulator writes its record after answering). */
static json_object *audit_last(const char *op, unsigned before)
{
	FILE *f;
	char line[16384];
	json_object *last = NULL;

	audit_expect_range(op, before, 1, UINT_MAX);
	f = fopen(audit_path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		json_object *j = json_tokener_parse(line), *o;

		if (j && json_object_object_get_ex(j, "operation", &o) &&
		    !strcmp(json_object_get_string(o), op)) {
			json_object_put(last);
			last = j;
		} else {
			json_object_put(j);
		}
	}
	fclose(f);
	assert_non_null(last);
	return last;
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

/* ---- clients ---- */

static void env_reset(void)
{
	unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
	unsetenv("GCE_METADATA_HOST");
	unsetenv("GCE_METADATA_ROOT");
	setenv("NO_GCE_CHECK", "true", 1);
	setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS", url, 1);
	setenv("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", ca, 1);
}

static struct kms_client *client(const struct kms_options *o)
{
	struct kms_options opts = o ? *o : (struct kms_options){};
	struct kms_client *c = NULL;

	opts.provider = "gcp";
	assert_int_equal(dmbyok_kms_client_new(&opts, &c), 0);
	return c;
}

/* A client of the host's service account (JSON key). */
static struct kms_client *host_client(void)
{
	env_reset();
	setenv("GOOGLE_APPLICATION_CREDENTIALS", sa_host, 1);
	return client(NULL);
}

static json_object *context(const char *volume)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "service", json_object_new_string("orders"));
	json_object_object_add(c, "dmbyok:volume", json_object_new_string(volume));
	return c;
}

static void expect_error(int r, int want, struct kms_client *c, const char *said)
{
	if (r != want)
		fail_msg("got %s, expected %s (%s)", dmbyok_strerror(r), dmbyok_strerror(want),
		         dmbyok_kms_last_error(c));
	if (said && !strstr(dmbyok_kms_last_error(c), said))
		fail_msg("last error \"%s\" lacks \"%s\"", dmbyok_kms_last_error(c), said);
}

/* A wrapped 64-byte key under `key`; the plaintext in *ret_pt if asked. */
static char *wrap(struct kms_client *c, const char *key, json_object *ctx, struct secret **ret_pt,
                  char **ret_version)
{
	struct secret *pt = NULL;
	char *ct = NULL, *version = NULL;
	int r;

	r = dmbyok_kms_generate_data_key(c, key, ctx, 64, &pt, &ct, &version);
	if (r < 0)
		fail_msg("generate_data_key %s: %s (%s)", key, dmbyok_strerror(r),
		         dmbyok_kms_last_error(c));
	if (ret_pt)
		*ret_pt = pt;
	else
		dmbyok_secret_free(pt);
	if (ret_version)
		*ret_version = version;
	else
		free(version);
	return ct;
}

/* ---- tests ---- */

static void test_round_trip_with_service_account(void **state)
{
	struct kms_client *c = host_client();
	json_object *ctx = context("11111111-2222-4333-8444-555566667777"), *rec;
	struct secret *dek = NULL, *again = NULL;
	char *ct, *version = NULL, *key = NULL;
	unsigned tokens = audit_count("Token"), encrypts = audit_count("Encrypt");

	(void)state;
	ct = wrap(c, KEY_A, ctx, &dek, &version);
	assert_int_equal(dek->size, 64);
	assert_string_equal(version, KEY_A "/cryptoKeyVersions/1");
	/* The context travels as AAD, canonically; the emulator saw exactly that. */
	rec = audit_last("Encrypt", encrypts);
	assert_string_equal(jstr(rec, "additional_authenticated_data"),
	                    "{\"dmbyok:volume\":\"11111111-2222-4333-8444-555566667777\","
	                    "\"service\":\"orders\"}");
	assert_string_equal(jstr(rec, "principal"), "serviceAccount:" HOST_SA);
	json_object_put(rec);

	/* By the version that wrapped it (as a token names it) and by the key. */
	assert_int_equal(dmbyok_kms_decrypt(c, version, ct, ctx, &again, &key), 0);
	assert_int_equal(again->size, 64);
	assert_memory_equal(again->data, dek->data, 64);
	assert_string_equal(key, KEY_A);
	dmbyok_secret_free(again);
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &again, NULL), 0);
	assert_memory_equal(again->data, dek->data, 64);
	dmbyok_secret_free(again);
	/* One token for all of it: cached. */
	audit_expect("Token", tokens, 1);
	assert_string_equal(dmbyok_kms_client_provider(c), "gcp");

	dmbyok_secret_free(dek);
	free(ct);
	free(version);
	free(key);
	json_object_put(ctx);
	dmbyok_kms_client_free(c);
}

static void test_context_and_key_binding(void **state)
{
	struct kms_client *c = host_client();
	json_object *ctx = context("v1"), *other = context("v2");
	struct secret *pt = NULL;
	char *ct = wrap(c, KEY_A, ctx, NULL, NULL);

	(void)state;
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, other, &pt, NULL), -EBADMSG, c,
	             "INVALID_ARGUMENT: Decryption failed");
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, NULL, &pt, NULL), -EBADMSG, c, NULL);
	expect_error(dmbyok_kms_decrypt(c, KEY_B, ct, ctx, &pt, NULL), -EBADMSG, c, NULL);
	/* A Cloud KMS blob does not name its key to the client. */
	expect_error(dmbyok_kms_decrypt(c, NULL, ct, ctx, &pt, NULL), -EINVAL, c,
	             "needs the key's name");
	expect_error(dmbyok_kms_decrypt(c, "alias/orders", ct, ctx, &pt, NULL), -EINVAL, c,
	             "not a Cloud KMS key name");
	expect_error(dmbyok_kms_decrypt(c, KEY_A, "not base64!", ctx, &pt, NULL), -EBADMSG, c,
	             NULL);
	free(ct);
	json_object_put(ctx);
	json_object_put(other);
	dmbyok_kms_client_free(c);
}

static void test_describe_key(void **state)
{
	struct kms_client *c = host_client();
	struct kms_key_info info = {};

	(void)state;
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_B, &info), 0);
	assert_string_equal(info.key_arn, KEY_B "/cryptoKeyVersions/1");
	assert_string_equal(info.key_state, "ENABLED");
	assert_true(info.enabled);
	dmbyok_kms_key_info_done(&info);
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_B "/cryptoKeyVersions/1", &info), 0);
	assert_string_equal(info.key_arn, KEY_B "/cryptoKeyVersions/1");
	assert_true(info.enabled);
	dmbyok_kms_key_info_done(&info);
	expect_error(dmbyok_kms_describe_key(c, RING "/cryptoKeys/nope", &info), -ENOENT, c, NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_B "/cryptoKeyVersions/9", &info), -ENOENT, c,
	             NULL);
	dmbyok_kms_client_free(c);
}

static void test_rotation_and_reencrypt(void **state)
{
	struct kms_client *c = host_client();
	json_object *ctx = context("rot");
	struct secret *dek = NULL, *pt = NULL;
	struct kms_key_info info = {};
	char *ct, *ct2 = NULL, *version = NULL;

	(void)state;
	admin("POST", RING "/cryptoKeys?cryptoKeyId=rot", "{\"purpose\":\"ENCRYPT_DECRYPT\"}");
	ct = wrap(c, RING "/cryptoKeys/rot", ctx, &dek, NULL);
	admin("POST", RING "/cryptoKeys/rot/cryptoKeyVersions", "{}");
	admin("POST", RING "/cryptoKeys/rot:updatePrimaryVersion",
	      "{\"cryptoKeyVersionId\":\"2\"}");
	assert_int_equal(dmbyok_kms_describe_key(c, RING "/cryptoKeys/rot", &info), 0);
	assert_string_equal(info.key_arn, RING "/cryptoKeys/rot/cryptoKeyVersions/2");
	dmbyok_kms_key_info_done(&info);

	/* Re-wrap under the new primary: decrypt + encrypt, no data touched. */
	assert_int_equal(
	    dmbyok_kms_reencrypt(c, NULL, ct, ctx, RING "/cryptoKeys/rot", &ct2, &version), 0);
	assert_string_equal(version, RING "/cryptoKeys/rot/cryptoKeyVersions/2");
	assert_string_not_equal(ct, ct2);
	assert_int_equal(dmbyok_kms_decrypt(c, version, ct2, ctx, &pt, NULL), 0);
	assert_memory_equal(pt->data, dek->data, 64);
	dmbyok_secret_free(pt);
	/* The old blob still decrypts (version 1 is enabled). */
	assert_int_equal(dmbyok_kms_decrypt(c, RING "/cryptoKeys/rot", ct, ctx, &pt, NULL), 0);
	dmbyok_secret_free(pt);
	/* Once version 1 is disabled only the re-wrapped blob opens. */
	admin("PATCH", RING "/cryptoKeys/rot/cryptoKeyVersions/1?updateMask=state",
	      "{\"state\":\"DISABLED\"}");
	expect_error(dmbyok_kms_decrypt(c, RING "/cryptoKeys/rot", ct, ctx, &pt, NULL),
	             -EKEYREVOKED, c, "DISABLED");
	assert_int_equal(dmbyok_kms_decrypt(c, version, ct2, ctx, &pt, NULL), 0);
	dmbyok_secret_free(pt);
	/* A re-wrap from a disabled version is refused the same way. */
	expect_error(dmbyok_kms_reencrypt(c, NULL, ct, ctx, RING "/cryptoKeys/rot", &ct2, NULL),
	             -EKEYREVOKED, c, NULL);
	/* To another key: decrypted by the source the token names, encrypted by the new key. */
	admin("POST", RING "/cryptoKeys?cryptoKeyId=rot-next", "{\"purpose\":\"ENCRYPT_DECRYPT\"}");
	free(TAKE_PTR(ct));
	ct = TAKE_PTR(ct2); /* version 2's blob */
	free(TAKE_PTR(version));
	assert_int_equal(dmbyok_kms_reencrypt(c, RING "/cryptoKeys/rot/cryptoKeyVersions/2", ct,
	                                      ctx, RING "/cryptoKeys/rot-next", &ct2, &version),
	                 0);
	assert_string_equal(version, RING "/cryptoKeys/rot-next/cryptoKeyVersions/1");
	assert_int_equal(dmbyok_kms_decrypt(c, version, ct2, ctx, &pt, NULL), 0);
	assert_memory_equal(pt->data, dek->data, 64);
	dmbyok_secret_free(pt);

	dmbyok_secret_free(dek);
	free(ct);
	free(ct2);
	free(version);
	json_object_put(ctx);
	dmbyok_kms_client_free(c);
}

static void test_revocation_classes(void **state)
{
	struct kms_client *c = host_client();
	json_object *ctx = context("rev");
	struct secret *pt = NULL;
	struct kms_key_info info = {};
	char *ct, *version = NULL;
	const char *v1 = KEY_R "/cryptoKeyVersions/1";

	(void)state;
	ct = wrap(c, KEY_R, ctx, NULL, &version);
	assert_string_equal(version, v1);

	/* Disabled version: FAILED_PRECONDITION. */
	admin("PATCH", KEY_R "/cryptoKeyVersions/1?updateMask=state", "{\"state\":\"DISABLED\"}");
	expect_error(dmbyok_kms_decrypt(c, v1, ct, ctx, &pt, NULL), -EKEYREVOKED, c,
	             "FAILED_PRECONDITION: " KEY_R "/cryptoKeyVersions/1 is not enabled, current "
	             "state is: DISABLED.");
	assert_int_equal(dmbyok_kms_describe_key(c, v1, &info), 0);
	assert_string_equal(info.key_state, "DISABLED");
	assert_false(info.enabled);
	dmbyok_kms_key_info_done(&info);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_R, ctx, 64, &pt, &ct, NULL), -EKEYREVOKED,
	             c, "DISABLED");
	admin("PATCH", KEY_R "/cryptoKeyVersions/1?updateMask=state", "{\"state\":\"ENABLED\"}");
	assert_int_equal(dmbyok_kms_decrypt(c, v1, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);

	/* IAM: a deny rule on this principal (PERMISSION_DENIED), then lifted. */
	control("POST", "deny",
	        "{\"principal\":\"serviceAccount:" HOST_SA "\",\"resource\":\"" KEY_R "\"}");
	expect_error(dmbyok_kms_decrypt(c, v1, ct, ctx, &pt, NULL), -EKEYREVOKED, c,
	             "PERMISSION_DENIED: Permission 'cloudkms.cryptoKeyVersions.useToDecrypt'");
	control("DELETE", "deny", NULL);
	assert_int_equal(dmbyok_kms_decrypt(c, v1, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);

	/* Another principal without a binding. */
	setenv("GOOGLE_APPLICATION_CREDENTIALS", sa_other, 1);
	{
		struct kms_client *o = client(NULL);

		expect_error(dmbyok_kms_decrypt(o, v1, ct, ctx, &pt, NULL), -EKEYREVOKED, o,
		             "PERMISSION_DENIED");
		dmbyok_kms_client_free(o);
	}

	/* Scheduled for destruction, then destroyed: revoked; gone for good: -ENOENT. */
	admin("POST", KEY_R "/cryptoKeyVersions/1:destroy", "{}");
	expect_error(dmbyok_kms_decrypt(c, v1, ct, ctx, &pt, NULL), -EKEYREVOKED, c,
	             "DESTROY_SCHEDULED");
	assert_int_equal(dmbyok_kms_describe_key(c, v1, &info), 0);
	assert_string_equal(info.key_state, "DESTROY_SCHEDULED");
	dmbyok_kms_key_info_done(&info);
	control("POST", "destroy-now", "{\"name\":\"" KEY_R "/cryptoKeyVersions/1\"}");
	expect_error(dmbyok_kms_decrypt(c, v1, ct, ctx, &pt, NULL), -EKEYREVOKED, c, "DESTROYED");
	expect_error(dmbyok_kms_describe_key(c, v1, &info), -ENOENT, c, NULL);
	/* The key itself has no usable primary any more. */
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_R, &info), 0);
	assert_false(info.enabled);
	dmbyok_kms_key_info_done(&info);

	/* No such key: NOT_FOUND is revoked for a blob, a typo (-EINVAL) for a new key. */
	expect_error(dmbyok_kms_decrypt(c, RING "/cryptoKeys/nope", ct, ctx, &pt, NULL),
	             -EKEYREVOKED, c, "NOT_FOUND");
	expect_error(
	    dmbyok_kms_generate_data_key(c, RING "/cryptoKeys/nope", ctx, 64, &pt, &ct, NULL),
	    -EINVAL, c, "no Cloud KMS key");
	free(ct);
	free(version);
	json_object_put(ctx);
	dmbyok_kms_client_free(c);
}

/* Each transient fault, once (recovered by a retry) and for every attempt (given up). */
static void test_transient_errors_and_retries(void **state)
{
	static const struct {
		const char *kind;
		int r;
	} cases[] = {
		{ "unavailable", -EREMOTEIO },
		{ "internal", -EREMOTEIO },
		{ "deadline_exceeded", -ETIMEDOUT },
		{ "resource_exhausted", -EAGAIN },
		{ "http503", -EREMOTEIO },
		{ "http500", -EREMOTEIO },
		{ "reset", -ECONNRESET },
	};
	struct kms_client *c = host_client();
	json_object *ctx = context("t");
	struct secret *pt = NULL;
	char *ct = wrap(c, KEY_A, ctx, NULL, NULL);
	unsigned before;

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		/*
		 * libcurl itself resends once when a reused connection dies without an answer,
		 * so a reset may cost one more request than attempts.
		 */
		unsigned extra = !strcmp(cases[i].kind, "reset");

		before = audit_count("Decrypt");
		fault("Decrypt", cases[i].kind, 1, 0);
		assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
		dmbyok_secret_freep(&pt);
		audit_expect("Decrypt", before, 2);

		before = audit_count("Decrypt");
		fault("Decrypt", cases[i].kind, extra ? -1 : 3, 0);
		expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), cases[i].r, c, NULL);
		assert_int_equal(dmbyok_error_class(cases[i].r), DMBYOK_ERR_KMS_TRANSIENT);
		/* Three attempts, the SDKs' standard, and no more. */
		audit_expect_range("Decrypt", before, 3, 3 + 3 * extra);
		control("DELETE", "faults", NULL);
	}
	/* A 200 that is not JSON: a protocol error, not retried. */
	before = audit_count("Decrypt");
	fault("Decrypt", "malformed", 1, 0);
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), -EPROTO, c, NULL);
	audit_expect("Decrypt", before, 1);
	free(ct);
	json_object_put(ctx);
	dmbyok_kms_client_free(c);
}

static void test_credentials(void **state)
{
	struct kms_client *c;
	json_object *ctx = context("cred");
	struct secret *pt = NULL;
	char *ct, path[512], *kid;
	unsigned before;
	FILE *f;

	(void)state;
	/* None at all: no key file, no gcloud file, NO_GCE_CHECK. */
	env_reset();
	c = client(NULL);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL), -ENOKEY, c,
	             "no Google credentials");
	dmbyok_kms_client_free(c);
	/* A named key file that is not there. */
	snprintf(path, sizeof(path), "%s/missing.json", test_dir);
	setenv("GOOGLE_APPLICATION_CREDENTIALS", path, 1);
	c = client(NULL);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL), -ENOKEY, c,
	             "cannot read the credentials file");
	dmbyok_kms_client_free(c);
	/* A user's gcloud login is not a service account. */
	snprintf(path, sizeof(path), "%s/user.json", test_dir);
	f = fopen(path, "we");
	fputs("{\"type\":\"authorized_user\",\"client_id\":\"x\",\"client_secret\":\"y\","
	      "\"refresh_token\":\"z\"}",
	      f);
	fclose(f);
	setenv("GOOGLE_APPLICATION_CREDENTIALS", path, 1);
	c = client(NULL);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL), -EINVAL, c,
	             "authorized_user");
	dmbyok_kms_client_free(c);
	/* The well-known file (gcloud's ADC) when GOOGLE_APPLICATION_CREDENTIALS is unset. */
	unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
	snprintf(path, sizeof(path), "%s/adc", test_dir);
	mkdir(path, 0700);
	setenv("CLOUDSDK_CONFIG", path, 1);
	snprintf(path, sizeof(path), "%s/adc/application_default_credentials.json", test_dir);
	assert_int_equal(link(sa_host, path), 0);
	c = client(NULL);
	ct = wrap(c, KEY_A, ctx, NULL, NULL);
	free(ct);
	dmbyok_kms_client_free(c);
	unlink(path);
	snprintf(path, sizeof(path), "%s/gcloud-config", test_dir);
	setenv("CLOUDSDK_CONFIG", path, 1);

	/* A key the service account no longer has: the token endpoint refuses the JWT. */
	{
		char key_path[512];
		json_object *j;

		sa_key(OTHER_SA, key_path);
		j = json_object_from_file(key_path);
		kid = strdup(jstr(j, "private_key_id"));
		json_object_put(j);
		snprintf(path, sizeof(path),
		         "{\"email\":\"" OTHER_SA "\",\"private_key_id\":\"%s\"}", kid);
		control("DELETE", "service-account-keys", path);
		setenv("GOOGLE_APPLICATION_CREDENTIALS", key_path, 1);
		c = client(NULL);
		expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL),
		             -EKEYREJECTED, c, "Invalid JWT Signature");
		dmbyok_kms_client_free(c);
		free(kid);
	}

	/* The token endpoint down: transient, retried. */
	c = host_client();
	before = audit_count("Token");
	fault("Token", "unavailable", 3, 0);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL), -EREMOTEIO, c,
	             "token endpoint");
	audit_expect("Token", before, 3);
	fault("Token", "unavailable", 1, 0);
	ct = wrap(c, KEY_A, ctx, NULL, NULL);
	free(ct);

	/* UNAUTHENTICATED once: a fresh token and the call goes through. */
	before = audit_count("Token");
	fault("Encrypt", "unauthenticated", 1, 0);
	ct = wrap(c, KEY_A, ctx, NULL, NULL);
	free(ct);
	audit_expect("Token", before, 1);
	/* Every time: a credentials error. */
	fault("Encrypt", "unauthenticated", -1, 0);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL), -EKEYEXPIRED,
	             c, "UNAUTHENTICATED");
	assert_int_equal(dmbyok_error_class(-EKEYEXPIRED), DMBYOK_ERR_CREDENTIALS);
	control("DELETE", "faults", NULL);
	dmbyok_kms_client_free(c);
	json_object_put(ctx);
}

static void test_token_refresh(void **state)
{
	struct kms_client *c;
	json_object *ctx = context("refresh");
	struct secret *pt = NULL;
	char *ct;
	unsigned before;

	(void)state;
	c = host_client();
	ct = wrap(c, KEY_A, ctx, NULL, NULL);

	/* Tokens the KMS stops accepting before their time: one refresh, call succeeds. */
	before = audit_count("Token");
	control("POST", "tokens", "{\"expire\":\"*\"}");
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	audit_expect("Token", before, 1);

	/* Short-lived tokens are refreshed ahead of their expiry (a quarter of the life). */
	control("POST", "tokens", "{\"lifetime\":10}");
	control("POST", "tokens", "{\"expire\":\"*\"}");
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	before = audit_count("Token");
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	audit_expect("Token", before, 0);
	/* 10 s tokens are refreshed 2 s (a quarter, under 225 s) before they expire. */
	sleep(9);
	before = audit_count("Token");
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	audit_expect("Token", before, 1);
	/* ...and no 401 was needed for it. */
	control("POST", "tokens", "{\"lifetime\":3599}");
	free(ct);
	json_object_put(ctx);
	dmbyok_kms_client_free(c);
}

static void test_metadata_server(void **state)
{
	struct kms_client *c;
	json_object *ctx = context("gce"), *rec;
	struct secret *pt = NULL;
	char *ct;
	unsigned before = audit_count("Metadata"), decrypts = audit_count("Decrypt");

	(void)state;
	env_reset();
	unsetenv("NO_GCE_CHECK");
	setenv("GCE_METADATA_HOST", plain, 1);
	c = client(NULL);
	ct = wrap(c, KEY_A, ctx, NULL, NULL);
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	audit_expect("Metadata", before, 1);
	rec = audit_last("Decrypt", decrypts);
	assert_string_equal(jstr(rec, "principal"), "serviceAccount:" HOST_SA);
	json_object_put(rec);
	dmbyok_kms_client_free(c);

	/* A named metadata server that is down: transient, not "no credentials". */
	c = client(NULL);
	fault("Metadata", "unavailable", 3, 0);
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), -EREMOTEIO, c,
	             "metadata server");
	dmbyok_kms_client_free(c);
	/* A hanging one: bounded by the client's timeout. */
	c = client(&(struct kms_options){ .timeout_ms = 500, .max_attempts = 1 });
	fault("Metadata", "timeout", 1, 3000);
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), -ETIMEDOUT, c,
	             "metadata server");
	dmbyok_kms_client_free(c);
	control("DELETE", "faults", NULL);
	free(ct);
	json_object_put(ctx);
}

/* A listener that accepts connections (the kernel's backlog) and never answers. */
static int hanging_listener(char ret_url[static 64])
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(ret_url, 64, "http://127.0.0.1:%u/", ntohs(sa.sin_port));
	return fd;
}

static void test_timeouts(void **state)
{
	struct kms_client *c;
	json_object *ctx = context("slow");
	struct secret *pt = NULL;
	char *ct, hang[64];
	unsigned before;
	int fd;

	(void)state;
	c = host_client();
	ct = wrap(c, KEY_A, ctx, NULL, NULL);
	dmbyok_kms_client_free(c);

	/* The emulator hangs on Decrypt: each attempt ends at the timeout, all are made. */
	setenv("GOOGLE_APPLICATION_CREDENTIALS", sa_host, 1);
	c = client(&(struct kms_options){ .timeout_ms = 400, .max_attempts = 2 });
	before = audit_count("Decrypt");
	fault("Decrypt", "timeout", 2, 2000);
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), -ETIMEDOUT, c,
	             "cannot reach");
	assert_int_equal(dmbyok_error_class(-ETIMEDOUT), DMBYOK_ERR_KMS_TRANSIENT);
	/* the emulator logs a hung request when it gives up on it */
	for (int i = 0; i < 100 && audit_count("Decrypt") - before < 2; i++)
		usleep(50000);
	audit_expect("Decrypt", before, 2);
	/* A slow answer within the timeout is just slow. */
	fault("Decrypt", "latency", 1, 100);
	assert_int_equal(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	dmbyok_kms_client_free(c);

	/* A server that accepts and never answers (plain http: loopback only). */
	fd = hanging_listener(hang);
	c = client(&(struct kms_options){ .endpoint = hang, .timeout_ms = 300, .max_attempts = 2 });
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), -ETIMEDOUT, c, hang);
	dmbyok_kms_client_free(c);
	close(fd);
	/* Nobody listening there any more. */
	c = client(&(struct kms_options){ .endpoint = hang, .max_attempts = 2 });
	expect_error(dmbyok_kms_decrypt(c, KEY_A, ct, ctx, &pt, NULL), -ECONNREFUSED, c, NULL);
	dmbyok_kms_client_free(c);
	control("DELETE", "faults", NULL);
	free(ct);
	json_object_put(ctx);
}

static void test_endpoint_and_tls(void **state)
{
	struct kms_client *c = NULL;
	json_object *ctx = context("tls");
	struct secret *pt = NULL;
	char *ct = NULL;

	(void)state;
	env_reset();
	setenv("GOOGLE_APPLICATION_CREDENTIALS", sa_host, 1);
	/* Plain http only to loopback; no credentials in the URL. */
	assert_int_equal(
	    dmbyok_kms_client_new(
	        &(struct kms_options){ .provider = "gcp", .endpoint = "http://kms.example/" }, &c),
	    -EINVAL);
	assert_int_equal(
	    dmbyok_kms_client_new(
	        &(struct kms_options){ .provider = "gcp", .endpoint = "https://u:p@kms.example/" },
	        &c),
	    -EINVAL);
	assert_int_equal(
	    dmbyok_kms_client_new(&(struct kms_options){ .provider = "gcp", .profile = "dev" }, &c),
	    -EINVAL);
	/* An unrelated CA: the emulator's certificate is not trusted. */
	c = client(&(struct kms_options){ .ca_bundle = other_ca, .max_attempts = 1 });
	expect_error(dmbyok_kms_generate_data_key(c, KEY_A, ctx, 64, &pt, &ct, NULL), -EINVAL, c,
	             "certificate");
	dmbyok_kms_client_free(c);
	/* The endpoint given explicitly (no gcloud variable). */
	unsetenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS");
	c = client(&(struct kms_options){ .endpoint = url });
	ct = wrap(c, KEY_A, ctx, NULL, NULL);
	free(ct);
	dmbyok_kms_client_free(c);
	json_object_put(ctx);
}

/* ---- kms.c's audit entries for this provider ---- */

static struct {
	char entry[16][4096];
	size_t n;
} sink;

static int sink_capture(const struct iovec *iov, int n)
{
	char *e;
	size_t used = 1;

	if (sink.n >= ELEMENTSOF(sink.entry))
		return 0;
	e = sink.entry[sink.n++];
	e[0] = '\n';
	for (int i = 0; i < n && used + iov[i].iov_len + 2 < sizeof(sink.entry[0]); i++) {
		memcpy(e + used, iov[i].iov_base, iov[i].iov_len);
		used += iov[i].iov_len;
		e[used++] = '\n';
	}
	e[used] = '\0';
	return 0;
}

static void test_audit_entries(void **state)
{
	struct kms_client *c = host_client();
	json_object *ctx = context("audit");
	struct secret *pt = NULL;
	struct stat st;
	char v[64], *ct, *version = NULL;

	(void)state;
	ct = wrap(c, KEY_A, ctx, NULL, &version);
	/* Under journald (JOURNAL_STREAM names our stderr), into a capturing sink. */
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", v, 1);
	dmbyok_log_setup("test-gcp-kms");
	dmbyok_log_set_journal_sink(sink_capture);
	sink.n = 0;
	assert_int_equal(dmbyok_kms_decrypt(c, version, ct, ctx, &pt, NULL), 0);
	dmbyok_secret_freep(&pt);
	fault("Decrypt", "unavailable", 3, 0);
	assert_int_equal(dmbyok_kms_decrypt(c, version, ct, ctx, &pt, NULL), -EREMOTEIO);
	unsetenv("JOURNAL_STREAM");
	dmbyok_log_setup("test-gcp-kms");
	dmbyok_log_set_journal_sink(NULL);

	assert_int_equal(sink.n, 2);
	assert_non_null(strstr(sink.entry[0], "\nMESSAGE_ID=" DMBYOK_MESSAGE_KMS_CALL "\n"));
	assert_non_null(strstr(sink.entry[0], "\nOPERATION=Decrypt\n"));
	assert_non_null(strstr(sink.entry[0], "\nPROVIDER=gcp\n"));
	assert_non_null(strstr(sink.entry[0], "\nREGION=" LOCATION "\n"));
	assert_non_null(strstr(sink.entry[0], "\nKEY_ID=" KEY_A "/cryptoKeyVersions/1\n"));
	assert_non_null(strstr(sink.entry[0], "\nKEY_ARN=" KEY_A "\n"));
	assert_non_null(strstr(sink.entry[0], "\nRESULT=ok\n"));
	assert_non_null(strstr(sink.entry[1], "\nRESULT=kms-unreachable\n"));
	assert_non_null(strstr(sink.entry[1], "\nDETAIL=UNAVAILABLE: "));
	control("DELETE", "faults", NULL);
	free(ct);
	free(version);
	json_object_put(ctx);
	dmbyok_kms_client_free(c);
}

static int group_setup(void **state)
{
	(void)state;
	url = need_env("DMBYOK_TEST_GCP_URL");
	plain = need_env("DMBYOK_TEST_GCP_PLAIN");
	ca = need_env("DMBYOK_TEST_CA");
	other_ca = need_env("DMBYOK_TEST_OTHER_CA");
	audit_path = need_env("DMBYOK_TEST_AUDIT");
	test_dir = need_env("DMBYOK_TEST_DIR");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	admin("POST", PROJECT "/locations/" LOCATION "/keyRings?keyRingId=ring", "{}");
	admin("POST", RING "/cryptoKeys?cryptoKeyId=a", "{\"purpose\":\"ENCRYPT_DECRYPT\"}");
	admin("POST", RING "/cryptoKeys?cryptoKeyId=b", "{\"purpose\":\"ENCRYPT_DECRYPT\"}");
	admin("POST", RING "/cryptoKeys?cryptoKeyId=revocable",
	      "{\"purpose\":\"ENCRYPT_DECRYPT\"}");
	sa_key(HOST_SA, sa_host);
	sa_key(OTHER_SA, sa_other);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_with_service_account),
		cmocka_unit_test(test_context_and_key_binding),
		cmocka_unit_test(test_describe_key),
		cmocka_unit_test(test_rotation_and_reencrypt),
		cmocka_unit_test(test_revocation_classes),
		cmocka_unit_test(test_transient_errors_and_retries),
		cmocka_unit_test(test_credentials),
		cmocka_unit_test(test_token_refresh),
		cmocka_unit_test(test_metadata_server),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_endpoint_and_tls),
		cmocka_unit_test(test_audit_entries),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
