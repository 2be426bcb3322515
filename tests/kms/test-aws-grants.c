/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-volume grants (kms.h) against the KMS emulator (started by run-with-emulator). The
 * grantee is an assumed-role session whose role the key policy lets encrypt and create
 * grants but not decrypt: only its volume's grant opens that volume's blobs. The customer
 * revokes, the grantee retires; every call is in dmbyok's audit file as the emulator saw it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "dmbyok/error.h"
#include "aws-test-env.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "../../src/kms/aws/aws.h"
#include "../../src/kms/kms-provider.h"

#define ACCOUNT         "111122223333"
#define HOST_AKID       "AKIDHOST000000000001"
#define HOST_SECRET     "hostsecret"
#define HOST_ARN        "arn:aws:iam::" ACCOUNT ":role/dmbyok-host"
#define CUSTOMER_AKID   "AKIDCUSTOMER00000001"
#define CUSTOMER_SECRET "customersecret"
#define CUSTOMER_ARN    "arn:aws:iam::" ACCOUNT ":user/customer-admin"
#define GRANTEE_ROLE    "arn:aws:iam::" ACCOUNT ":role/dmbyok-grantee"

static const char *endpoint, *ca, *audit_path, *test_dir;
static char trail[512], config[512];
static struct kms_client *admin;
static char *key_arn;
/* what this process asked of the KMS, to find in the trail */
static unsigned n_caller_principal;

static void env_reset(void)
{
	aws_test_env_reset(&(struct aws_test_env){ .endpoint = endpoint,
	                                           .ca = ca,
	                                           .dir = test_dir,
	                                           .config = config,
	                                           .sts_endpoint = endpoint });
}

static struct kms_client *client_as(const char *akid, const char *secret)
{
	struct kms_client *c = NULL;

	env_reset();
	setenv("AWS_ACCESS_KEY_ID", akid, 1);
	setenv("AWS_SECRET_ACCESS_KEY", secret, 1);
	assert_int_equal(dmbyok_kms_client_new(NULL, &c), 0);
	return c;
}

/* The grantee: a session of role dmbyok-grantee, assumed by the host's credential chain. */
static struct kms_client *grantee_client(void)
{
	struct kms_client *c = NULL;

	env_reset();
	assert_int_equal(dmbyok_kms_client_new(&(struct kms_options){ .profile = "grantee" }, &c),
	                 0);
	return c;
}

static size_t on_body(char *p, size_t s, size_t n, void *u)
{
	(void)p;
	(void)u;
	return s * n;
}

/* The emulator's control API (unsigned, test only). */
static void control(const char *path, const char *body)
{
	char url[512];
	CURL *curl = curl_easy_init();
	long status = 0;
	CURLcode cc;

	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	cc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(curl);
	if (cc != CURLE_OK || status != 200)
		fail_msg("POST %s failed: %s, HTTP %ld", path, curl_easy_strerror(cc), status);
}

/* An admin call as the key's owner (not through kms.c: not in the audit). */
static json_object *admin_call(const char *op, json_object *req)
{
	json_object *resp = NULL;
	int r = dmbyok_aws_kms_call(admin, op, NULL, req, &resp);

	if (r < 0)
		fail_msg("%s as the customer failed: %s (%s)", op, dmbyok_strerror(r),
		         dmbyok_kms_last_error(admin));
	json_object_put(req);
	return resp;
}

static json_object *parse(const char *text)
{
	json_object *j = json_tokener_parse(text);

	assert_non_null(j);
	return j;
}

static json_object *volume(const char *v)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "dmbyok:volume", json_object_new_string(v));
	return o;
}

static void wrap(struct kms_client *c, json_object *context, struct secret **ret_pt,
                 char **ret_blob)
{
	int r = dmbyok_kms_generate_data_key(c, key_arn, context, 32, ret_pt, ret_blob, NULL);

	if (r < 0)
		fail_msg("GenerateDataKey: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(c));
}

/* Decrypt's result, the plaintext checked on success. */
static int unwrap(struct kms_client *c, const char *blob, json_object *context,
                  const struct secret *want)
{
	struct secret *pt = NULL;
	int r = dmbyok_kms_decrypt(c, key_arn, blob, context, &pt, NULL);

	if (r >= 0) {
		assert_int_equal(pt->size, want->size);
		assert_memory_equal(pt->data, want->data, want->size);
		dmbyok_secret_free(pt);
	}
	return r;
}

static void test_caller_principal(void **state)
{
	_cleanup_kms_client_ struct kms_client *g = grantee_client();
	_cleanup_kms_client_ struct kms_client *h = client_as(HOST_AKID, HOST_SECRET);
	_cleanup_free_ char *arn = NULL, *host = NULL;
	int r;

	/* STS says arn:aws:sts::ACCOUNT:assumed-role/dmbyok-grantee/i-0grantee */
	r = dmbyok_kms_caller_principal(g, &arn);
	if (r < 0)
		fail_msg("caller principal: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(g));
	assert_string_equal(arn, GRANTEE_ROLE);
	assert_int_equal(dmbyok_kms_caller_principal(h, &host), 0);
	assert_string_equal(host, HOST_ARN);
	n_caller_principal += 2;
}

static void test_grant_lifecycle(void **state)
{
	_cleanup_kms_client_ struct kms_client *g = grantee_client();
	_cleanup_kms_client_ struct kms_client *h = client_as(HOST_AKID, HOST_SECRET);
	_cleanup_free_ char *grantee = NULL, *id = NULL, *id_again = NULL, *id2 = NULL;
	_cleanup_free_ char *blob1 = NULL, *blob2 = NULL, *reblob = NULL, *want = NULL;
	_cleanup_free_ char *got = NULL;
	_cleanup_secret_ struct secret *pt1 = NULL, *pt2 = NULL;
	struct kms_grant_info info = {};
	json_object *v1 = volume("v1"), *v2 = volume("v2"), *resp;
	char req[512];
	int r;

	assert_int_equal(dmbyok_kms_caller_principal(g, &grantee), 0);
	n_caller_principal++;

	/* The key policy lets the grantee's role wrap, not unwrap. */
	wrap(g, v1, &pt1, &blob1);
	wrap(g, v2, &pt2, &blob2);
	assert_int_equal(unwrap(g, blob1, v1, pt1), -EKEYREVOKED);

	/* Its grant for volume v1; the same name again is the same grant. */
	r = dmbyok_kms_create_grant(g, key_arn, grantee, v1, "vol-v1", &id);
	if (r < 0)
		fail_msg("CreateGrant: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(g));
	assert_int_equal(dmbyok_kms_create_grant(g, key_arn, grantee, v1, "vol-v1", &id_again), 0);
	assert_string_equal(id, id_again);

	/* v1 opens under v1's context only; ReEncrypt (From and To) under it too. */
	assert_int_equal(unwrap(g, blob1, v1, pt1), 0);
	assert_int_equal(unwrap(g, blob2, v2, pt2), -EKEYREVOKED);
	r = dmbyok_kms_reencrypt(g, NULL, blob1, v1, key_arn, &reblob, NULL);
	if (r < 0)
		fail_msg("ReEncrypt: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(g));
	assert_int_equal(unwrap(g, reblob, v1, pt1), 0);

	/* The grant as the KMS holds it. */
	r = dmbyok_kms_find_grant(g, key_arn, id, &info);
	if (r < 0)
		fail_msg("ListGrants: %s (%s)", dmbyok_strerror(r), dmbyok_kms_last_error(g));
	assert_string_equal(info.grant_id, id);
	assert_string_equal(info.grantee, GRANTEE_ROLE);
	assert_string_equal(info.retiring_principal, GRANTEE_ROLE);
	assert_non_null(info.operations);
	assert_string_equal(info.operations[0], "Decrypt");
	assert_string_equal(info.operations[1], "ReEncryptFrom");
	assert_string_equal(info.operations[2], "ReEncryptTo");
	assert_null(info.operations[3]);
	assert_non_null(info.context_equals);
	assert_int_equal(dmbyok_kms_context_canonical(v1, &want), 0);
	assert_int_equal(dmbyok_kms_context_canonical(info.context_equals, &got), 0);
	assert_string_equal(got, want);
	dmbyok_kms_grant_info_done(&info);

	/* The customer revokes: denied at once; no such grant any more. */
	snprintf(req, sizeof(req), "{\"KeyId\":\"%s\",\"GrantId\":\"%s\"}", key_arn, id);
	resp = admin_call("RevokeGrant", parse(req));
	json_object_put(resp);
	assert_int_equal(unwrap(g, blob1, v1, pt1), -EKEYREVOKED);
	assert_int_equal(dmbyok_kms_find_grant(g, key_arn, id, &info), -ENOENT);
	assert_null(info.grant_id);

	/* A new grant restores it. */
	assert_int_equal(dmbyok_kms_create_grant(g, key_arn, grantee, v1, "vol-v1", &id2), 0);
	assert_string_not_equal(id2, id);
	assert_int_equal(unwrap(g, blob1, v1, pt1), 0);

	/* Only the retiring principal retires it; then it is gone, and a second retire says so. */
	assert_int_equal(dmbyok_kms_retire_grant(h, key_arn, id2), -EKEYREVOKED);
	assert_int_equal(dmbyok_kms_retire_grant(g, key_arn, id2), 0);
	assert_int_equal(dmbyok_kms_find_grant(g, key_arn, id2, &info), -ENOENT);
	assert_int_equal(dmbyok_kms_retire_grant(g, key_arn, id2), -ENOENT);
	assert_int_equal(unwrap(g, blob1, v1, pt1), -EKEYREVOKED);

	json_object_put(v1);
	json_object_put(v2);
}

/* Refused before any KMS call: an alias where a key id or ARN is needed, no context. */
static void test_bad_arguments(void **state)
{
	_cleanup_kms_client_ struct kms_client *g = grantee_client();
	json_object *v1 = volume("v1"), *empty = json_object_new_object();
	char *id = NULL;

	assert_int_equal(
	    dmbyok_kms_create_grant(g, "alias/orders", GRANTEE_ROLE, v1, "vol-v1", &id), -EINVAL);
	assert_non_null(strstr(dmbyok_kms_last_error(g), "not the alias"));
	assert_int_equal(dmbyok_kms_create_grant(g, key_arn, GRANTEE_ROLE, NULL, "vol-v1", &id),
	                 -EINVAL);
	assert_int_equal(dmbyok_kms_create_grant(g, key_arn, GRANTEE_ROLE, empty, "vol-v1", &id),
	                 -EINVAL);
	assert_int_equal(dmbyok_kms_create_grant(g, key_arn, "", v1, "vol-v1", &id), -EINVAL);
	assert_int_equal(dmbyok_kms_retire_grant(g, "alias/orders", "0123"), -EINVAL);
	assert_null(id);
	json_object_put(v1);
	json_object_put(empty);
}

/* Cloud KMS and Key Vault grant per key, by IAM: no call is made, nothing is audited. */
static void test_other_providers(void **state)
{
	static const char *const providers[] = { "gcp", "azure" };

	for (size_t i = 0; i < ELEMENTSOF(providers); i++) {
		_cleanup_kms_client_ struct kms_client *c = NULL;
		struct kms_grant_info info = {};
		json_object *v1 = volume("v1");
		char *s = NULL;

		assert_int_equal(
		    dmbyok_kms_client_new(&(struct kms_options){ .provider = providers[i] }, &c),
		    0);
		assert_int_equal(dmbyok_kms_create_grant(c,
		                                         "projects/p/locations/l/keyRings/r/"
		                                         "cryptoKeys/k",
		                                         GRANTEE_ROLE, v1, "vol-v1", &s),
		                 -EOPNOTSUPP);
		assert_non_null(
		    strstr(dmbyok_kms_last_error(c), "per-volume grants are an AWS KMS feature"));
		assert_non_null(
		    strstr(dmbyok_kms_last_error(c), dmbyok_kms_client_provider_title(c)));
		assert_int_equal(dmbyok_kms_retire_grant(c, "k", "g"), -EOPNOTSUPP);
		assert_int_equal(dmbyok_kms_find_grant(c, "k", "g", &info), -EOPNOTSUPP);
		assert_int_equal(dmbyok_kms_caller_principal(c, &s), -EOPNOTSUPP);
		assert_null(s);
		json_object_put(v1);
	}
}

/* "ok" or "error" as the emulator would class the call. */
static const char *outcome(json_object *e, bool ours)
{
	json_object *res, *err, *op;

	if (!ours) {
		assert_true(json_object_object_get_ex(e, "result", &res));
		return !strcmp(json_object_get_string(res), "Success") ? "ok" : "error";
	}
	assert_true(json_object_object_get_ex(e, "result", &res));
	assert_true(json_object_object_get_ex(e, "errno", &err));
	assert_true(json_object_object_get_ex(e, "operation", &op));
	/* ListGrants answered an empty list: for us no such grant (-ENOENT). */
	if (!strcmp(json_object_get_string(res), "ok") ||
	    (!strcmp(json_object_get_string(op), "ListGrants") &&
	     json_object_get_int(err) == ENOENT))
		return "ok";
	return "error";
}

static int qsort_strcmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* One "REQUEST-ID OPERATION OUTCOME" line per grant call of a trail, sorted. */
static char *grant_calls(const char *path, bool ours, unsigned *ret_n, unsigned *ret_unsent)
{
	static const char *const ops[] = { "CreateGrant", "RetireGrant", "ListGrants" };
	char line[16384], **rows = NULL, *out;
	size_t n = 0, len = 1;
	FILE *f = fopen(path, "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		json_object *e = json_tokener_parse(line), *op, *id, *who;
		bool wanted = false;

		assert_non_null(e);
		assert_true(json_object_object_get_ex(e, "operation", &op));
		for (size_t i = 0; i < ELEMENTSOF(ops); i++)
			wanted |= !strcmp(json_object_get_string(op), ops[i]);
		/* the customer's calls are not ours */
		if (!ours && json_object_object_get_ex(e, "principal", &who) &&
		    !strcmp(json_object_get_string(who), CUSTOMER_ARN))
			wanted = false;
		/* refused here, never sent (an alias for a key ARN): ours only, counted apart */
		if (wanted && !json_object_object_get_ex(e, "request_id", &id)) {
			assert_true(ours);
			(*ret_unsent)++;
			wanted = false;
		}
		if (wanted) {
			rows = realloc(rows, (n + 1) * sizeof(*rows));
			assert_non_null(rows);
			assert_true(asprintf(&rows[n], "%s %s %s\n", json_object_get_string(id),
			                     json_object_get_string(op), outcome(e, ours)) > 0);
			len += strlen(rows[n++]);
		}
		json_object_put(e);
	}
	fclose(f);
	qsort(rows, n, sizeof(*rows), qsort_strcmp);
	out = calloc(1, len);
	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		strcat(out, rows[i]);
		free(rows[i]);
	}
	free(rows);
	*ret_n = (unsigned)n;
	return out;
}

static void test_audit(void **state)
{
	_cleanup_free_ char *ours = NULL, *theirs = NULL;
	unsigned n_ours, n_theirs, n_identity = 0, n_create_context = 0, n_unsent = 0;
	char line[16384];
	FILE *f;

	ours = grant_calls(trail, true, &n_ours, &n_unsent);
	theirs = grant_calls(audit_path, false, &n_theirs, &n_unsent);
	/* test_bad_arguments' alias for CreateGrant and for RetireGrant */
	assert_int_equal(n_unsent, 2);
	printf("grant calls: %u in dmbyok's trail, %u at the emulator\n", n_ours, n_theirs);
	/* 3 CreateGrant (one idempotent), 2 ListGrants, 4 RetireGrant (one denied, one absent) */
	assert_int_equal(n_ours, 9);
	assert_string_equal(ours, theirs);

	f = fopen(trail, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		json_object *e = json_tokener_parse(line), *op, *c, *v;

		assert_true(json_object_object_get_ex(e, "operation", &op));
		if (!strcmp(json_object_get_string(op), "GetCallerIdentity")) {
			assert_true(json_object_object_get_ex(e, "result", &v));
			assert_string_equal(json_object_get_string(v), "ok");
			n_identity++;
		}
		if (!strcmp(json_object_get_string(op), "CreateGrant") &&
		    json_object_object_get_ex(e, "encryption_context", &c) &&
		    json_object_object_get_ex(c, "dmbyok:volume", &v) &&
		    !strcmp(json_object_get_string(v), "v1"))
			n_create_context++;
		json_object_put(e);
	}
	fclose(f);
	assert_int_equal(n_identity, n_caller_principal);
	/* the three sent, and the one refused for its alias */
	assert_int_equal(n_create_context, 4);
}

static int group_setup(void **state)
{
	json_object *req, *pol, *resp, *md, *arn;
	char path[512];
	FILE *f;

	endpoint = aws_test_need_env("DMBYOK_TEST_ENDPOINT");
	ca = aws_test_need_env("DMBYOK_TEST_CA");
	audit_path = aws_test_need_env("DMBYOK_TEST_AUDIT");
	test_dir = aws_test_need_env("DMBYOK_TEST_DIR");
	dmbyok_log_setup("test-aws-grants");

	/* Before the first KMS call: the audit settings are read once per process. */
	snprintf(trail, sizeof(trail), "%s/grants-trail.jsonl", test_dir);
	setenv("DMBYOK_AUDIT_FILE", trail, 1);
	snprintf(path, sizeof(path), "%s/no-such-audit.conf", test_dir);
	setenv("DMBYOK_AUDIT_CONF", path, 1);

	snprintf(config, sizeof(config), "%s/config-grants", test_dir);
	f = fopen(config, "we");
	if (!f)
		return -1;
	fputs("[profile grantee]\nrole_arn = " GRANTEE_ROLE "\nsource_profile = host\n"
	      "role_session_name = i-0grantee\n"
	      "[profile host]\naws_access_key_id = " HOST_AKID "\n"
	      "aws_secret_access_key = " HOST_SECRET "\n",
	      f);
	fclose(f);
	control("/_emulator/roles",
	        "{\"RoleName\":\"dmbyok-grantee\",\"TrustedPrincipals\":[\"" HOST_ARN "\"]}");

	env_reset();
	setenv("AWS_ACCESS_KEY_ID", CUSTOMER_AKID, 1);
	setenv("AWS_SECRET_ACCESS_KEY", CUSTOMER_SECRET, 1);
	if (dmbyok_kms_client_new(NULL, &admin) < 0)
		return -1;
	/* The customer owns the key; the grantee's role may wrap and make grants, not unwrap. */
	pol = parse("{\"Version\":\"2012-10-17\",\"Statement\":["
	            "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" CUSTOMER_ARN "\"},"
	            "\"Action\":\"kms:*\",\"Resource\":\"*\"},"
	            "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" GRANTEE_ROLE "\"},"
	            "\"Action\":[\"kms:Encrypt\",\"kms:GenerateDataKey\",\"kms:CreateGrant\","
	            "\"kms:DescribeKey\",\"kms:ListGrants\"],\"Resource\":\"*\"}]}");
	req = json_object_new_object();
	json_object_object_add(req, "Description", json_object_new_string("grants"));
	json_object_object_add(
	    req, "Policy",
	    json_object_new_string(json_object_to_json_string_ext(pol, JSON_C_TO_STRING_PLAIN)));
	json_object_put(pol);
	resp = admin_call("CreateKey", req);
	if (!json_object_object_get_ex(resp, "KeyMetadata", &md) ||
	    !json_object_object_get_ex(md, "Arn", &arn))
		return -1;
	key_arn = strdup(json_object_get_string(arn));
	json_object_put(resp);
	return key_arn ? 0 : -1;
}

static int group_teardown(void **state)
{
	dmbyok_kms_client_free(admin);
	free(key_arn);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_caller_principal),
		cmocka_unit_test(test_grant_lifecycle),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_other_providers),
		cmocka_unit_test(test_audit),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
