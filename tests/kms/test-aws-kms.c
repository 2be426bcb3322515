/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AWS KMS client against the KMS emulator (started by run-with-emulator): every
 * operation round-trips, every credential source, the retry policy and every error class.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "dmbyok/error.h"
#include "aws-test-env.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "../../src/kms/aws/aws.h"

#define HOST_AKID       "AKIDHOST000000000001"
#define HOST_SECRET     "hostsecret"
#define CUSTOMER_AKID   "AKIDCUSTOMER00000001"
#define CUSTOMER_SECRET "customersecret"

static const char *endpoint, *ca, *other_ca, *audit_path, *test_dir;
static struct kms_client *admin;
static char *key_a, *key_b; /* ARNs */

/* A clean AWS environment for each test: the emulator, its CA, and no credentials. */
static void env_reset(void)
{
	aws_test_env_reset(
	    &(struct aws_test_env){ .endpoint = endpoint, .ca = ca, .dir = test_dir });
}

static void env_creds(const char *akid, const char *secret, const char *token)
{
	setenv("AWS_ACCESS_KEY_ID", akid, 1);
	setenv("AWS_SECRET_ACCESS_KEY", secret, 1);
	if (token)
		setenv("AWS_SESSION_TOKEN", token, 1);
	else
		unsetenv("AWS_SESSION_TOKEN");
}

static struct kms_client *client_with(const struct kms_options *opts)
{
	struct kms_client *c = NULL;

	assert_int_equal(dmbyok_kms_client_new(opts, &c), 0);
	return c;
}

static struct kms_client *host_client(void)
{
	env_reset();
	env_creds(HOST_AKID, HOST_SECRET, NULL);
	return client_with(NULL);
}

/* An admin call as the key owner; returns the response. */
static json_object *admin_call(const char *op, const char *fmt, ...) _printf_(2, 3);
static json_object *admin_call(const char *op, const char *fmt, ...)
{
	char buf[4096];
	json_object *req, *resp = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	req = json_tokener_parse(buf);
	assert_non_null(req);
	r = dmbyok_aws_kms_call(admin, op, NULL, req, &resp);
	if (r < 0)
		fail_msg("%s as the customer failed: %s (%s)", op, dmbyok_strerror(r),
		         dmbyok_kms_last_error(admin));
	json_object_put(req);
	return resp;
}

static char *create_key(const char *description)
{
	json_object *resp, *md, *arn;
	char *s;

	resp = admin_call("CreateKey", "{\"Description\":\"%s\"}", description);
	assert_true(json_object_object_get_ex(resp, "KeyMetadata", &md));
	assert_true(json_object_object_get_ex(md, "Arn", &arn));
	s = strdup(json_object_get_string(arn));
	json_object_put(resp);
	return s;
}

static size_t on_body(char *p, size_t s, size_t n, void *u)
{
	(void)p;
	(void)u;
	return s * n;
}

/* The emulator's control API (unsigned, test only). */
static void control(const char *method, const char *path, const char *body)
{
	char url[512];
	CURL *curl = curl_easy_init();
	long status = 0;
	CURLcode cc;

	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	if (body)
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	cc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(curl);
	if (cc != CURLE_OK || status != 200)
		fail_msg("%s %s failed: %s, HTTP %ld", method, path, curl_easy_strerror(cc),
		         status);
}

static void fault(const char *op, const char *kind, int count)
{
	char body[256];

	snprintf(body, sizeof(body), "{\"operation\":\"%s\",\"fault\":\"%s\",\"count\":%d}", op,
	         kind, count);
	control("POST", "/_emulator/faults", body);
}

/* KMS calls of `op` recorded in the audit log so far. */
static unsigned audit_count(const char *op)
{
	FILE *f = fopen(audit_path, "re");
	char line[8192];
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

/*
 * The emulator writes its audit record after answering: wait for `want` new records of
 * `op` since `before`, then make sure no more arrive.
 */
static void audit_expect_range(const char *op, unsigned before, unsigned min, unsigned max)
{
	unsigned n = 0;

	for (int i = 0; i < 100; i++) {
		n = audit_count(op) - before;
		if (n >= min)
			break;
		usleep(20000);
	}
	usleep(100000);
	n = audit_count(op) - before;
	if (n < min || n > max)
		fail_msg("audit log: %u %s calls, expected %u..%u", n, op, min, max);
}

static void audit_expect(const char *op, unsigned before, unsigned want)
{
	audit_expect_range(op, before, want, want);
}

/*
 * libcurl itself re-sends a request once when a reused keep-alive connection turns out to
 * be dead (the server may close idle connections at any time), so a reset can cost one
 * extra request on top of our attempts.
 */
static unsigned extra_for(const char *kind)
{
	return !strcmp(kind, "reset") ? 1 : 0;
}

static json_object *context(const char *volume)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "dmbyok:volume", json_object_new_string(volume));
	return c;
}

/* GenerateDataKey under key_id with a context; the blob goes to *ret_blob. */
static void wrap(struct kms_client *c, const char *key_id, const char *volume,
                 struct secret **ret_pt, char **ret_blob)
{
	json_object *ctx = context(volume);
	char *arn = NULL;
	int r;

	r = dmbyok_kms_generate_data_key(c, key_id, ctx, 64, ret_pt, ret_blob, &arn);
	if (r < 0)
		fail_msg("GenerateDataKey: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(c));
	assert_int_equal((*ret_pt)->size, 64);
	assert_non_null(strstr(arn, ":key/"));
	free(arn);
	json_object_put(ctx);
}

static int unwrap(struct kms_client *c, const char *key_id, const char *blob, const char *volume,
                  struct secret **ret_pt, char **ret_arn)
{
	json_object *ctx = context(volume);
	int r = dmbyok_kms_decrypt(c, key_id, blob, ctx, ret_pt, ret_arn);

	json_object_put(ctx);
	return r;
}

static void test_roundtrip(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL, *pt3 = NULL;
	_cleanup_free_ char *blob = NULL, *arn = NULL, *arn2 = NULL, *blob2 = NULL;
	_cleanup_free_ char *arn3 = NULL;
	json_object *ctx = context("vol-1");

	wrap(c, key_a, "vol-1", &pt, &blob);
	assert_int_equal(unwrap(c, NULL, blob, "vol-1", &pt2, &arn), 0);
	assert_int_equal(pt2->size, 64);
	assert_true(dmbyok_secret_equal(pt->data, pt2->data, 64));
	assert_string_equal(arn, key_a);
	assert_string_equal(dmbyok_kms_client_region(c), "us-east-1");

	/* By alias, and decrypt naming the key by ARN. */
	dmbyok_secret_free(TAKE_PTR(pt2));
	free(TAKE_PTR(arn));
	wrap(c, "alias/dmbyok-test", "vol-1", &pt3, &blob2);
	assert_int_equal(unwrap(c, key_a, blob2, "vol-1", &pt2, &arn), 0);
	assert_true(dmbyok_secret_equal(pt3->data, pt2->data, 64));

	/* ReEncrypt to key B: same plaintext, new wrapping key. */
	free(TAKE_PTR(blob2));
	assert_int_equal(dmbyok_kms_reencrypt(c, key_a, blob, ctx, key_b, &blob2, &arn2), 0);
	assert_string_equal(arn2, key_b);
	/* Naming a source key that did not wrap it: KMS refuses (IncorrectKeyException). */
	char *blob3 = NULL;
	assert_int_equal(dmbyok_kms_reencrypt(c, key_b, blob, ctx, key_b, &blob3, NULL), -EBADMSG);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "IncorrectKeyException"));
	assert_null(blob3);
	dmbyok_secret_free(TAKE_PTR(pt2));
	assert_int_equal(unwrap(c, NULL, blob2, "vol-1", &pt2, &arn3), 0);
	assert_string_equal(arn3, key_b);
	assert_true(dmbyok_secret_equal(pt->data, pt2->data, 64));
	json_object_put(ctx);
}

static void test_describe(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	struct kms_key_info info = {};

	assert_int_equal(dmbyok_kms_describe_key(c, "alias/dmbyok-test", &info), 0);
	assert_string_equal(info.key_arn, key_a);
	assert_string_equal(info.key_state, "Enabled");
	assert_true(info.enabled);
	dmbyok_kms_key_info_done(&info);
	dmbyok_kms_key_info_done(&info); /* idempotent */
	dmbyok_kms_key_info_done(NULL);
}

static void test_wrong_context(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
	_cleanup_free_ char *blob = NULL;

	wrap(c, key_a, "vol-1", &pt, &blob);
	assert_int_equal(unwrap(c, NULL, blob, "vol-2", &pt2, NULL), -EBADMSG);
	assert_null(pt2);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "InvalidCiphertextException"));
	/* a tampered blob is the same class */
	blob[20] = blob[20] == 'A' ? 'B' : 'A';
	assert_int_equal(unwrap(c, NULL, blob, "vol-1", &pt2, NULL), -EBADMSG);
}

static void test_disabled(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
	_cleanup_free_ char *blob = NULL, *key = create_key("disabled");
	struct kms_key_info info = {};

	wrap(c, key, "vol-d", &pt, &blob);
	json_object_put(admin_call("DisableKey", "{\"KeyId\":\"%s\"}", key));
	assert_int_equal(unwrap(c, NULL, blob, "vol-d", &pt2, NULL), -EKEYREVOKED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "DisabledException"));
	assert_int_equal(dmbyok_exit_code(-EKEYREVOKED), 3);
	assert_int_equal(dmbyok_kms_describe_key(c, key, &info), 0);
	assert_string_equal(info.key_state, "Disabled");
	assert_false(info.enabled);
	dmbyok_kms_key_info_done(&info);

	/* back on: usable again */
	json_object_put(admin_call("EnableKey", "{\"KeyId\":\"%s\"}", key));
	assert_int_equal(unwrap(c, NULL, blob, "vol-d", &pt2, NULL), 0);
}

static void test_pending_deletion_and_deleted(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
	_cleanup_free_ char *blob = NULL, *key = create_key("doomed");
	char body[512];

	wrap(c, key, "vol-p", &pt, &blob);
	json_object_put(
	    admin_call("ScheduleKeyDeletion", "{\"KeyId\":\"%s\",\"PendingWindowInDays\":7}", key));
	assert_int_equal(unwrap(c, NULL, blob, "vol-p", &pt2, NULL), -EKEYREVOKED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "KMSInvalidStateException"));

	snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", key);
	control("POST", "/_emulator/expire-deletion", body);
	assert_int_equal(unwrap(c, NULL, blob, "vol-p", &pt2, NULL), -EKEYREVOKED);
	assert_int_equal(unwrap(c, key, blob, "vol-p", &pt2, NULL), -EKEYREVOKED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "NotFoundException"));
}

static void test_policy_denies_host(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
	_cleanup_free_ char *blob = NULL, *key = create_key("policy");
	json_object *req, *resp = NULL, *stmt;

	wrap(c, key, "vol-x", &pt, &blob);
	/* Only the customer's admin may use the key now. */
	stmt =
	    json_tokener_parse("{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":"
	                       "\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:"
	                       "user/customer-admin\"},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}");
	req = json_object_new_object();
	json_object_object_add(req, "KeyId", json_object_new_string(key));
	json_object_object_add(req, "PolicyName", json_object_new_string("default"));
	json_object_object_add(req, "Policy",
	                       json_object_new_string(json_object_to_json_string(stmt)));
	assert_int_equal(dmbyok_aws_kms_call(admin, "PutKeyPolicy", NULL, req, &resp), 0);
	json_object_put(req);
	json_object_put(resp);
	json_object_put(stmt);

	assert_int_equal(unwrap(c, NULL, blob, "vol-x", &pt2, NULL), -EKEYREVOKED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "AccessDeniedException"));
}

static void test_credential_errors(void **state)
{
	struct kms_client *c;
	struct kms_key_info info = {};

	/* expired session token */
	env_reset();
	env_creds("AKIDEXPIRED000000001", "expiredsecret", "expired-token");
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYEXPIRED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "ExpiredToken"));
	dmbyok_kms_client_free(c);

	/* wrong secret */
	env_creds(HOST_AKID, "not-the-secret", NULL);
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYREJECTED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "InvalidSignature"));
	dmbyok_kms_client_free(c);

	/* unknown access key */
	env_creds("AKIDNOBODY0000000000", "whatever", NULL);
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYREJECTED);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "UnrecognizedClient"));
	dmbyok_kms_client_free(c);

	/* nothing at all */
	env_reset();
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -ENOKEY);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "environment variables"));
	assert_non_null(strstr(dmbyok_kms_last_error(c), "profile 'default'"));
	assert_non_null(strstr(dmbyok_kms_last_error(c), "container endpoint"));
	dmbyok_kms_client_free(c);
	assert_int_equal(dmbyok_exit_code(-ENOKEY), 5);

	/* half a key pair */
	setenv("AWS_ACCESS_KEY_ID", HOST_AKID, 1);
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -ENOKEY);
	dmbyok_kms_client_free(c);
}

static void write_file(const char *name, const char *text, char *ret_path, size_t size)
{
	FILE *f;

	snprintf(ret_path, size, "%s/%s", test_dir, name);
	f = fopen(ret_path, "we");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Describes key A with a client made by `opts` and checks who the emulator saw. */
static void expect_works(const struct kms_options *opts)
{
	_cleanup_kms_client_ struct kms_client *c = client_with(opts);
	struct kms_key_info info = {};
	int r = dmbyok_kms_describe_key(c, key_a, &info);

	if (r < 0)
		fail_msg("DescribeKey: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(c));
	assert_string_equal(info.key_arn, key_a);
	dmbyok_kms_key_info_done(&info);
}

static void test_creds_session_env(void **state)
{
	env_reset();
	env_creds("ASIAHOST000000000001", "hostsessionsecret", "host-session-token");
	expect_works(NULL);
	/* the token is signed and checked: without it the same keys fail */
	env_creds("ASIAHOST000000000001", "hostsessionsecret", NULL);
	_cleanup_kms_client_ struct kms_client *c = client_with(NULL);
	struct kms_key_info info = {};
	assert_true(dmbyok_kms_describe_key(c, key_a, &info) < 0);
}

static void test_creds_profiles(void **state)
{
	char creds[512], config[512];

	env_reset();
	write_file("credentials",
	           "# test\n[default]\naws_access_key_id = " HOST_AKID "\n"
	           "aws_secret_access_key = " HOST_SECRET "\n\n"
	           "[other]\naws_access_key_id=AKIDNOBODY0000000000\naws_secret_access_key=x\n",
	           creds, sizeof(creds));
	write_file("config",
	           "[default]\nregion = us-east-1\n"
	           "[profile cfg]\nregion = us-east-1\naws_access_key_id = " HOST_AKID "\n"
	           "aws_secret_access_key = " HOST_SECRET "\n"
	           "s3 =\n    max_concurrent_requests = 10\n"
	           "[profile sess]\naws_access_key_id = ASIAHOST000000000001\n"
	           "aws_secret_access_key = hostsessionsecret\n"
	           "aws_session_token = host-session-token\n",
	           config, sizeof(config));
	setenv("AWS_SHARED_CREDENTIALS_FILE", creds, 1);
	setenv("AWS_CONFIG_FILE", config, 1);

	/* default profile from the credentials file */
	expect_works(NULL);
	/* AWS_PROFILE naming a config-file profile */
	setenv("AWS_PROFILE", "cfg", 1);
	expect_works(NULL);
	setenv("AWS_PROFILE", "sess", 1);
	expect_works(NULL);
	/* the region can come from the profile too */
	unsetenv("AWS_REGION");
	setenv("AWS_PROFILE", "cfg", 1);
	expect_works(NULL);
	setenv("AWS_REGION", "us-east-1", 1);

	/* an explicit profile beats environment keys; a bad one fails */
	setenv("AWS_PROFILE", "default", 1);
	env_creds("AKIDNOBODY0000000000", "whatever", NULL);
	expect_works(&(struct kms_options){ .profile = "cfg" });
	{
		_cleanup_kms_client_ struct kms_client *c =
		    client_with(&(struct kms_options){ .profile = "other" });
		struct kms_key_info info = {};

		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYREJECTED);
	}
	{
		_cleanup_kms_client_ struct kms_client *c =
		    client_with(&(struct kms_options){ .profile = "missing" });
		struct kms_key_info info = {};

		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -ENOKEY);
		assert_non_null(strstr(dmbyok_kms_last_error(c), "'missing'"));
	}
}

static void test_creds_container(void **state)
{
	char url[512], token_file[512];

	env_reset();
	snprintf(url, sizeof(url), "%s/container/credentials", endpoint);
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-auth-token", 1);
	expect_works(NULL);

	/* the token file wins over the variable */
	write_file("container-token", "container-auth-token\n", token_file, sizeof(token_file));
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong", 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file, 1);
	expect_works(NULL);

	/* a wrong token is a credential error, not "none found" */
	unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	{
		_cleanup_kms_client_ struct kms_client *c = client_with(NULL);
		struct kms_key_info info = {};

		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYREJECTED);
		assert_non_null(strstr(dmbyok_kms_last_error(c), "HTTP 401"));
	}
}

static void test_creds_imds(void **state)
{
	env_reset();
	unsetenv("AWS_EC2_METADATA_DISABLED");
	setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint, 1);
	{
		_cleanup_kms_client_ struct kms_client *c = client_with(NULL);
		_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
		_cleanup_free_ char *blob = NULL;

		wrap(c, key_a, "vol-i", &pt, &blob);
		/* cached: with the metadata service gone, the client keeps its credentials */
		setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9", 1);
		assert_int_equal(unwrap(c, NULL, blob, "vol-i", &pt2, NULL), 0);
		assert_true(dmbyok_secret_equal(pt->data, pt2->data, 64));
	}
	{
		/*
		 * A new client has no cache and nothing answers: the metadata service is
		 * unreachable (transient, exit 4), which is not "no credentials".
		 */
		_cleanup_kms_client_ struct kms_client *c = client_with(NULL);
		struct kms_key_info info = {};

		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -ECONNREFUSED);
		assert_int_equal(dmbyok_exit_code(-ECONNREFUSED), 4);
		assert_non_null(strstr(dmbyok_kms_last_error(c), "instance metadata service"));
	}
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

/* Assumed-role credentials: cached, refreshed before expiry, and expired ones rejected. */
static void test_creds_assume_role_refresh(void **state)
{
	char config[512];
	unsigned before = audit_count("sts:AssumeRole");

	env_reset();
	control("POST", "/_emulator/roles",
	        "{\"RoleName\":\"refresh-role\",\"TrustedPrincipals\":[\"111122223333\"]}");
	control("POST", "/_emulator/sts", "{\"MinDurationSeconds\":1}");
	write_file("config-refresh",
	           "[profile r]\nrole_arn = arn:aws:iam::111122223333:role/refresh-role\n"
	           "source_profile = base\nrole_session_name = refresh\nduration_seconds = 4\n"
	           "[profile base]\naws_access_key_id = " HOST_AKID "\n"
	           "aws_secret_access_key = " HOST_SECRET "\n",
	           config, sizeof(config));
	setenv("AWS_CONFIG_FILE", config, 1);
	setenv("AWS_ENDPOINT_URL_STS", endpoint, 1);
	{
		_cleanup_kms_client_ struct kms_client *c =
		    client_with(&(struct kms_options){ .profile = "r" });
		struct kms_key_info info = {};

		/* two calls, one AssumeRole: the session is cached */
		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), 0);
		dmbyok_kms_key_info_done(&info);
		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), 0);
		dmbyok_kms_key_info_done(&info);
		audit_expect("sts:AssumeRole", before, 1);
		/* past half its 4 s life the session is renewed before it expires */
		sleep(3);
		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), 0);
		dmbyok_kms_key_info_done(&info);
		audit_expect("sts:AssumeRole", before, 2);
	}
	control("POST", "/_emulator/sts", "{\"MinDurationSeconds\":900}");
	unsetenv("AWS_ENDPOINT_URL_STS");
}

/* Rotated keys in the shared files reach a long-lived client without a restart. */
static void test_creds_file_rotation(void **state)
{
	char creds[512];
	struct kms_key_info info = {};
	_cleanup_kms_client_ struct kms_client *c = NULL;

	env_reset();
	write_file("credentials-rotate",
	           "[default]\naws_access_key_id = " HOST_AKID
	           "\naws_secret_access_key = " HOST_SECRET "\n",
	           creds, sizeof(creds));
	setenv("AWS_SHARED_CREDENTIALS_FILE", creds, 1);
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), 0);
	dmbyok_kms_key_info_done(&info);
	/* a bad key written over the file: the next call uses it (and fails) */
	write_file("credentials-rotate",
	           "[default]\naws_access_key_id = " HOST_AKID "\naws_secret_access_key = nope\n",
	           creds, sizeof(creds));
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYREJECTED);
	/* replaced atomically by a new file (another inode), as rotation tools do */
	write_file("credentials-rotate.new",
	           "[default]\naws_access_key_id = " HOST_AKID
	           "\naws_secret_access_key = " HOST_SECRET "\n",
	           creds, sizeof(creds));
	{
		char target[512];

		snprintf(target, sizeof(target), "%s/credentials-rotate", test_dir);
		assert_int_equal(rename(creds, target), 0);
	}
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), 0);
	dmbyok_kms_key_info_done(&info);
}

/* Temporary credentials past their expiry are refused by the service. */
static void test_creds_expired_session(void **state)
{
	_cleanup_(dmbyok_kms_http_freep) struct kms_http *h = NULL;
	struct aws_credentials_cache cache = {};
	const struct aws_credentials *cr;
	_cleanup_(dmbyok_aws_credentials_freep) struct aws_credentials *tmp = NULL;
	char why[512];

	env_reset();
	env_creds(HOST_AKID, HOST_SECRET, NULL);
	setenv("AWS_ENDPOINT_URL_STS", endpoint, 1);
	control("POST", "/_emulator/sts", "{\"MinDurationSeconds\":1}");
	assert_int_equal(dmbyok_kms_http_new(ca, &h), 0);
	assert_int_equal(dmbyok_aws_credentials_get(&cache, h, &cr, why, sizeof(why)), 0);
	assert_int_equal(dmbyok_aws_sts_assume_role(
	                     h, "us-east-1", cr,
	                     &(struct aws_assume_role){
	                         .role_arn = "arn:aws:iam::111122223333:role/refresh-role",
	                         .session_name = "expiring",
	                         .duration_s = 1,
	                     },
	                     &tmp, why, sizeof(why)),
	                 0);
	assert_string_equal(tmp->source, "assume-role");
	assert_true(tmp->expiration <= time(NULL) + 1);
	dmbyok_aws_credentials_cache_done(&cache);
	control("POST", "/_emulator/sts", "{\"MinDurationSeconds\":900}");
	sleep(2);
	/* the session's keys, from the environment: KMS now says ExpiredToken */
	env_creds(tmp->access_key_id, (const char *)tmp->secret_access_key->data,
	          (const char *)tmp->session_token->data);
	{
		_cleanup_kms_client_ struct kms_client *c = client_with(NULL);
		struct kms_key_info info = {};

		assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EKEYEXPIRED);
		assert_non_null(strstr(dmbyok_kms_last_error(c), "ExpiredToken"));
	}
	unsetenv("AWS_ENDPOINT_URL_STS");
}

static void test_retry_recovers(void **state)
{
	static const char *const kinds[] = {
		"throttle",           "http500",         "http503", "internal",
		"dependency_timeout", "key_unavailable", "reset"
	};
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL;
	_cleanup_free_ char *blob = NULL;

	wrap(c, key_a, "vol-r", &pt, &blob);
	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		_cleanup_secret_ struct secret *pt2 = NULL;
		unsigned before = audit_count("Decrypt");
		int r;

		fault("Decrypt", kinds[i], 2);
		r = unwrap(c, NULL, blob, "vol-r", &pt2, NULL);
		if (r < 0)
			fail_msg("%s x2: %s (%s)", kinds[i], dmbyok_strerror(r),
			         dmbyok_kms_last_error(c));
		audit_expect_range("Decrypt", before, 3, 3 + extra_for(kinds[i]));
		assert_true(dmbyok_secret_equal(pt->data, pt2->data, 64));
	}
}

static void test_retry_exhausted(void **state)
{
	static const struct {
		const char *kind;
		int r;
	} cases[] = {
		{ "throttle", -EAGAIN },
		{ "internal", -EREMOTEIO },
		{ "dependency_timeout", -EREMOTEIO },
		{ "key_unavailable", -EREMOTEIO },
		{ "http500", -EREMOTEIO },
		{ "http503", -EREMOTEIO },
		{ "reset", -ECONNRESET },
	};
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL;
	_cleanup_free_ char *blob = NULL;

	wrap(c, key_a, "vol-e", &pt, &blob);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_secret_ struct secret *pt2 = NULL;
		unsigned before = audit_count("Decrypt");
		int r;

		fault("Decrypt", cases[i].kind, -1);
		r = unwrap(c, NULL, blob, "vol-e", &pt2, NULL);
		control("DELETE", "/_emulator/faults", NULL);
		if (r != cases[i].r)
			fail_msg("%s: got %s, want %s (%s)", cases[i].kind, dmbyok_strerror(r),
			         dmbyok_strerror(cases[i].r), dmbyok_kms_last_error(c));
		assert_int_equal(dmbyok_exit_code(r), 4);
		audit_expect_range("Decrypt", before, 3, 3 + extra_for(cases[i].kind));
	}
}

static void test_no_retry_on_permanent(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
	_cleanup_free_ char *blob = NULL;
	unsigned before;

	wrap(c, key_a, "vol-n", &pt, &blob);
	before = audit_count("Decrypt");
	assert_int_equal(unwrap(c, NULL, blob, "vol-other", &pt2, NULL), -EBADMSG);
	audit_expect("Decrypt", before, 1);

	/* a malformed success is not retried either, and is a protocol error */
	fault("Decrypt", "malformed", 1);
	before = audit_count("Decrypt");
	assert_int_equal(unwrap(c, NULL, blob, "vol-n", &pt2, NULL), -EPROTO);
	assert_null(pt2);
	audit_expect("Decrypt", before, 1);
}

static void test_timeout(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
	_cleanup_free_ char *blob = NULL;
	struct timespec t0, t1;
	char body[256];
	double s;

	env_reset();
	env_creds(HOST_AKID, HOST_SECRET, NULL);
	c = client_with(&(struct kms_options){ .timeout_ms = 400, .max_attempts = 2 });
	wrap(c, key_a, "vol-t", &pt, &blob);
	snprintf(
	    body, sizeof(body),
	    "{\"operation\":\"Decrypt\",\"fault\":\"timeout\",\"count\":2,\"latency_ms\":5000}");
	control("POST", "/_emulator/faults", body);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(unwrap(c, NULL, blob, "vol-t", &pt2, NULL), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	/* Gave up on its own bound (2 x 400 ms and a backoff), not after the server's 5 s; the
	 * margin is for a loaded CI machine, not a speed claim. */
	assert_true(s < 4.0);
	/* let the emulator's sleeping handlers finish */
	sleep(4);
	assert_int_equal(unwrap(c, NULL, blob, "vol-t", &pt2, NULL), 0);
}

static void test_tls(void **state)
{
	struct kms_key_info info = {};
	struct kms_client *c;

	env_reset();
	env_creds(HOST_AKID, HOST_SECRET, NULL);
	/* a CA that did not sign the emulator's certificate */
	c = client_with(&(struct kms_options){ .ca_bundle = other_ca });
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EINVAL);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "CA bundle"));
	dmbyok_kms_client_free(c);

	/* the system trust store does not know the test CA either */
	unsetenv("AWS_CA_BUNDLE");
	c = client_with(NULL);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -EINVAL);
	dmbyok_kms_client_free(c);

	/* the explicit option beats the environment */
	setenv("AWS_CA_BUNDLE", other_ca, 1);
	expect_works(&(struct kms_options){ .ca_bundle = ca });

	/* a bundle that cannot be read is refused up front */
	assert_int_equal(
	    dmbyok_kms_client_new(&(struct kms_options){ .ca_bundle = "/nonexistent/ca.pem" }, &c),
	    -ENOENT);
	/* plain http is for loopback only */
	assert_int_equal(dmbyok_kms_client_new(
	                     &(struct kms_options){ .endpoint = "http://kms.example.com" }, &c),
	                 -EINVAL);
}

static void test_emulator_down(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	struct kms_key_info info = {};
	struct timespec t0, t1;
	char url[64];
	int fd;

	/* A port that was free a moment ago: nothing listens there. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u", ntohs(sa.sin_port));

	env_reset();
	env_creds(HOST_AKID, HOST_SECRET, NULL);
	_cleanup_kms_client_ struct kms_client *c =
	    client_with(&(struct kms_options){ .endpoint = url });
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(dmbyok_kms_describe_key(c, key_a, &info), -ECONNREFUSED);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 2);
	assert_int_equal(dmbyok_exit_code(-ECONNREFUSED), 4);
}

static void test_bad_arguments(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL;
	_cleanup_free_ char *blob = NULL;
	json_object *bad = json_object_new_object();

	json_object_object_add(bad, "n", json_object_new_int(1));
	assert_int_equal(dmbyok_kms_generate_data_key(c, key_a, bad, 64, &pt, &blob, NULL),
	                 -EINVAL);
	assert_int_equal(dmbyok_kms_generate_data_key(c, key_a, NULL, 0, &pt, &blob, NULL),
	                 -EINVAL);
	assert_int_equal(dmbyok_kms_decrypt(c, NULL, "", NULL, &pt, NULL), -EINVAL);
	json_object_put(bad);
	assert_int_equal(dmbyok_kms_client_new(&(struct kms_options){ .provider = "kmip" }, &c),
	                 -EINVAL);
	/* validation errors from the service are input errors */
	assert_int_equal(dmbyok_kms_decrypt(c, NULL, "bm90IGEgYmxvYg==", NULL, &pt, NULL) < 0, 1);
}

static void test_generate_unknown_key_is_input_error(void **state)
{
	_cleanup_kms_client_ struct kms_client *c = host_client();
	_cleanup_secret_ struct secret *pt = NULL;
	_cleanup_free_ char *blob = NULL, *arn = NULL, *gone = create_key("gone");
	json_object *ctx = context("vol-typo");
	struct kms_key_info info = {};
	char body[512];
	int r;

	/* An alias typo at format: bad input (exit 2), naming what was typed. */
	r = dmbyok_kms_generate_data_key(c, "alias/dmbyok-tset", ctx, 64, &pt, &blob, &arn);
	assert_int_equal(r, -EINVAL);
	assert_int_equal(dmbyok_exit_code(r), 2);
	assert_null(pt);
	assert_null(blob);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "alias/dmbyok-tset"));
	assert_non_null(strstr(dmbyok_kms_last_error(c), "NotFoundException"));

	/* A key that no longer exists, named by ARN, is no key to format with either. */
	json_object_put(admin_call("ScheduleKeyDeletion",
	                           "{\"KeyId\":\"%s\",\"PendingWindowInDays\":7}", gone));
	snprintf(body, sizeof(body), "{\"KeyId\":\"%s\"}", gone);
	control("POST", "/_emulator/expire-deletion", body);
	assert_int_equal(dmbyok_kms_generate_data_key(c, gone, ctx, 64, &pt, &blob, NULL), -EINVAL);
	assert_non_null(strstr(dmbyok_kms_last_error(c), gone));

	/*
	 * DescribeKey of a key that is gone says so distinctly (-ENOENT): the agent's proof that
	 * a revoked key was deleted, not merely disabled or denied.
	 */
	assert_int_equal(dmbyok_kms_describe_key(c, gone, &info), -ENOENT);
	assert_non_null(strstr(dmbyok_kms_last_error(c), "NotFoundException"));
	json_object_put(ctx);
}

/*
 * A one-shot plain-HTTP responder on loopback (the client allows http there): answers the
 * next request with `status` and `body`, whatever it was, then exits. Returns its URL.
 */
static pid_t canned_server(long status, const char *body, char *url, size_t url_size)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd, conn;
	pid_t pid;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(url, url_size, "http://127.0.0.1:%u", ntohs(sa.sin_port));

	pid = fork();
	assert_true(pid >= 0);
	if (pid > 0) {
		close(fd);
		return pid;
	}

	conn = accept(fd, NULL, NULL);
	if (conn >= 0) {
		char req[16384], head[256];
		size_t got = 0, want = 0;
		char *end = NULL, *cl;
		ssize_t n;

		/* the whole request, so that closing does not reset the connection */
		while (got < sizeof(req) - 1 &&
		       (n = read(conn, req + got, sizeof(req) - 1 - got)) > 0) {
			got += (size_t)n;
			req[got] = '\0';
			if (!end && (end = strstr(req, "\r\n\r\n"))) {
				cl = strcasestr(req, "\r\nContent-Length:");
				want =
				    (size_t)(end + 4 - req) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
			}
			if (end && got >= want)
				break;
		}
		snprintf(head, sizeof(head),
		         "HTTP/1.1 %ld Canned\r\nContent-Type: application/x-amz-json-1.1\r\n"
		         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		         status, strlen(body));
		if (write(conn, head, strlen(head)) < 0 || write(conn, body, strlen(body)) < 0)
			_exit(1);
		close(conn);
	}
	_exit(0);
}

static void canned_done(pid_t pid)
{
	int st = 0;

	/* the responder exits once it answered; if nothing asked, end it */
	if (waitpid(pid, &st, WNOHANG) == 0) {
		kill(pid, SIGTERM);
		waitpid(pid, &st, 0);
	}
}

#define ARN_A   "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#define NOT_ARN "1234abcd-12ab-34cd-56ef-1234567890ab"
/* 64 bytes of key, and a ciphertext blob */
#define PT64                                                                                       \
	"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
#define BLOB "AQIDAHhBbG9iAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static void test_response_key_not_an_arn(void **state)
{
	static const struct {
		const char *operation;
		const char *body;
		const char *said;
	} cases[] = {
		{ "GenerateDataKey",
		  "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"" NOT_ARN "\",\"Plaintext\":\"" PT64
		  "\"}",
		  "KeyId \"" NOT_ARN "\" in the response is not a key ARN" },
		{ "GenerateDataKey",
		  "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"\",\"Plaintext\":\"" PT64 "\"}",
		  "KeyId" },
		{ "GenerateDataKey", "{\"CiphertextBlob\":\"" BLOB "\",\"Plaintext\":\"" PT64 "\"}",
		  "lacks KeyId" },
		{ "GenerateDataKey",
		  "{\"CiphertextBlob\":\"not base64!\",\"KeyId\":\"" ARN_A
		  "\",\"Plaintext\":\"" PT64 "\"}",
		  "CiphertextBlob" },
		{ "GenerateDataKey",
		  "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"" ARN_A
		  "\",\"Plaintext\":\"Zg=A\"}",
		  "Plaintext" },
		{ "Decrypt", "{\"KeyId\":\"alias/orders\",\"Plaintext\":\"" PT64 "\"}",
		  "not a key ARN" },
		{ "Decrypt",
		  "{\"KeyId\":\"arn:aws:iam::111122223333:role/orders\",\"Plaintext\":\"" PT64
		  "\"}",
		  "not a key ARN" },
		{ "ReEncrypt", "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"" NOT_ARN "\"}",
		  "not a key ARN" },
		{ "ReEncrypt",
		  "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"" ARN_A "\",\"SourceKeyId\":7}",
		  "SourceKeyId" },
		{ "DescribeKey",
		  "{\"KeyMetadata\":{\"Arn\":\"" NOT_ARN "\",\"KeyState\":\"Enabled\"}}", "Arn" },
		{ "DescribeKey",
		  "{\"KeyMetadata\":{\"Arn\":\"" ARN_A
		  "\",\"KeyState\":\"Disabled\",\"Enabled\":\"false\"}}",
		  "Enabled" },
	};

	env_reset();
	env_creds(HOST_AKID, HOST_SECRET, NULL);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_kms_client_ struct kms_client *c = NULL;
		_cleanup_secret_ struct secret *pt = NULL;
		_cleanup_free_ char *blob = NULL, *arn = NULL;
		struct kms_key_info info = {};
		json_object *ctx = context("vol-c");
		const char *op = cases[i].operation;
		char url[64];
		pid_t pid = canned_server(200, cases[i].body, url, sizeof(url));
		int r;

		c = client_with(&(struct kms_options){ .endpoint = url, .max_attempts = 1 });
		if (!strcmp(op, "GenerateDataKey"))
			r = dmbyok_kms_generate_data_key(c, "alias/orders", ctx, 64, &pt, &blob,
			                                 &arn);
		else if (!strcmp(op, "Decrypt"))
			r = dmbyok_kms_decrypt(c, NULL, BLOB, ctx, &pt, &arn);
		else if (!strcmp(op, "ReEncrypt"))
			r = dmbyok_kms_reencrypt(c, NULL, BLOB, ctx, ARN_A, &blob, &arn);
		else
			r = dmbyok_kms_describe_key(c, ARN_A, &info);
		canned_done(pid);
		json_object_put(ctx);
		if (r != -EPROTO || !strstr(dmbyok_kms_last_error(c), cases[i].said))
			fail_msg("case %zu (%s): %s, \"%s\"; want EPROTO and \"%s\"", i, op,
			         dmbyok_strerror(r), dmbyok_kms_last_error(c), cases[i].said);
		assert_null(pt);
		assert_null(blob);
		assert_null(arn);
		assert_null(info.key_arn);
	}

	/* the same responder, well-formed: the client reads it */
	{
		_cleanup_kms_client_ struct kms_client *c = NULL;
		_cleanup_secret_ struct secret *pt = NULL;
		_cleanup_free_ char *blob = NULL, *arn = NULL;
		char url[64];
		pid_t pid = canned_server(200,
		                          "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"" ARN_A
		                          "\",\"Plaintext\":\"" PT64 "\"}",
		                          url, sizeof(url));

		c = client_with(&(struct kms_options){ .endpoint = url, .max_attempts = 1 });
		assert_int_equal(
		    dmbyok_kms_generate_data_key(c, "alias/orders", NULL, 64, &pt, &blob, &arn), 0);
		canned_done(pid);
		assert_string_equal(arn, ARN_A);
		assert_string_equal(blob, BLOB);
		for (unsigned i = 0; i < 64; i++)
			assert_int_equal(pt->data[i], i);
	}
}

static int group_setup(void **state)
{
	json_object *resp;

	endpoint = aws_test_need_env("DMBYOK_TEST_ENDPOINT");
	ca = aws_test_need_env("DMBYOK_TEST_CA");
	other_ca = aws_test_need_env("DMBYOK_TEST_OTHER_CA");
	audit_path = aws_test_need_env("DMBYOK_TEST_AUDIT");
	test_dir = aws_test_need_env("DMBYOK_TEST_DIR");
	dmbyok_log_setup("test-aws-kms");

	env_reset();
	env_creds(CUSTOMER_AKID, CUSTOMER_SECRET, NULL);
	if (dmbyok_kms_client_new(NULL, &admin) < 0)
		return -1;
	key_a = create_key("dmbyok test key A");
	key_b = create_key("dmbyok test key B");
	resp = admin_call("CreateAlias",
	                  "{\"AliasName\":\"alias/dmbyok-test\",\"TargetKeyId\":\"%s\"}", key_a);
	json_object_put(resp);
	return 0;
}

static int group_teardown(void **state)
{
	dmbyok_kms_client_free(admin);
	free(key_a);
	free(key_b);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_wrong_context),
		cmocka_unit_test(test_disabled),
		cmocka_unit_test(test_pending_deletion_and_deleted),
		cmocka_unit_test(test_policy_denies_host),
		cmocka_unit_test(test_credential_errors),
		cmocka_unit_test(test_creds_session_env),
		cmocka_unit_test(test_creds_profiles),
		cmocka_unit_test(test_creds_container),
		cmocka_unit_test(test_creds_imds),
		cmocka_unit_test(test_creds_assume_role_refresh),
		cmocka_unit_test(test_creds_file_rotation),
		cmocka_unit_test(test_creds_expired_session),
		cmocka_unit_test(test_retry_recovers),
		cmocka_unit_test(test_retry_exhausted),
		cmocka_unit_test(test_no_retry_on_permanent),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_emulator_down),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_generate_unknown_key_is_input_error),
		cmocka_unit_test(test_response_key_not_an_arn),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
