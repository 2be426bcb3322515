/* SPDX-License-Identifier: Apache-2.0 */
/* Pure unit tests of the AWS provider's parts that need no KMS: no network at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "../../src/kms/aws/aws.h"
#include "../../src/kms/kms-util.h"

static char tmpdir[] = "/tmp/dmbyok-aws-config.XXXXXX";

static struct aws_ini *parse(const char *text)
{
	struct secret *s = NULL;
	struct aws_ini *ini = NULL;
	size_t n = strlen(text);

	assert_int_equal(dmbyok_secret_new(n + 1, &s), 0);
	memcpy(s->data, text, n);
	s->data[n] = '\0';
	s->size = n;
	assert_int_equal(dmbyok_aws_ini_parse(s, &ini), 0);
	return ini;
}

static void test_ini(void **state)
{
	struct aws_ini *ini = parse("; leading comment\n"
	                            "stray = ignored\n"
	                            "[default]\r\n"
	                            "AWS_Access_Key_ID = AKID1 \r\n"
	                            "aws_secret_access_key=abc=def\n"
	                            "# comment = no\n"
	                            "\n"
	                            "[ profile dev ]\n"
	                            "region = eu-west-1\n"
	                            "s3 =\n"
	                            "    region = nested-is-ignored\n"
	                            "empty =\n"
	                            "[default]\n"
	                            "aws_session_token = later # not a comment\n");

	assert_string_equal(dmbyok_aws_ini_get(ini, "default", "aws_access_key_id"), "AKID1");
	assert_string_equal(dmbyok_aws_ini_get(ini, "default", "aws_secret_access_key"), "abc=def");
	assert_string_equal(dmbyok_aws_ini_get(ini, "default", "aws_session_token"),
	                    "later # not a comment");
	assert_string_equal(dmbyok_aws_ini_get(ini, "profile dev", "region"), "eu-west-1");
	assert_string_equal(dmbyok_aws_ini_get(ini, "profile dev", "s3"), "");
	assert_string_equal(dmbyok_aws_ini_get(ini, "profile dev", "empty"), "");
	assert_null(dmbyok_aws_ini_get(ini, "default", "# comment"));
	assert_null(dmbyok_aws_ini_get(ini, "default", "stray"));
	assert_null(dmbyok_aws_ini_get(ini, "dev", "region"));
	assert_true(dmbyok_aws_ini_has_section(ini, "profile dev"));
	assert_false(dmbyok_aws_ini_has_section(ini, "nope"));
	assert_null(dmbyok_aws_ini_get(NULL, "default", "x"));
	dmbyok_aws_ini_free(ini);
	dmbyok_aws_ini_free(NULL);

	ini = parse("");
	assert_int_equal(ini->n_entries, 0);
	dmbyok_aws_ini_free(ini);
}

static void test_ini_bad(void **state)
{
	struct secret *s = NULL;
	struct aws_ini *ini = NULL;

	assert_int_equal(dmbyok_secret_new(16, &s), 0);
	strcpy((char *)s->data, "[unterminated\n");
	s->size = strlen((char *)s->data);
	assert_int_equal(dmbyok_aws_ini_parse(s, &ini), -EINVAL);
	assert_int_equal(dmbyok_aws_ini_load("/nonexistent/credentials", &ini), -ENOENT);
}

static void test_error_code(void **state)
{
	static const struct {
		const char *type, *code;
	} cases[] = {
		{ "NotFoundException", "NotFoundException" },
		{ "com.amazon.coral.service#UnknownOperationException",
		  "UnknownOperationException" },
		{ "aws.protocoltests.restjson#FooError:http://internal.amazon.com/coral/",
		  "FooError" },
		{ "FooError:http://internal.amazon.com/", "FooError" },
		{ "", "" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *code = NULL;

		assert_int_equal(dmbyok_aws_error_code(cases[i].type, &code), 0);
		assert_string_equal(code, cases[i].code);
		free(code);
	}
}

static void test_error_mapping(void **state)
{
	static const struct {
		const char *code;
		long status;
		int r;
	} cases[] = {
		{ "DisabledException", 409, -EKEYREVOKED },
		{ "KMSInvalidStateException", 409, -EKEYREVOKED },
		{ "NotFoundException", 404, -EKEYREVOKED },
		{ "AccessDeniedException", 400, -EKEYREVOKED },
		{ "IncorrectKeyException", 400, -EBADMSG },
		{ "InvalidCiphertextException", 400, -EBADMSG },
		{ "DependencyTimeoutException", 503, -EREMOTEIO },
		{ "KMSInternalException", 500, -EREMOTEIO },
		{ "KeyUnavailableException", 500, -EREMOTEIO },
		{ "ThrottlingException", 400, -EAGAIN },
		{ "ExpiredTokenException", 400, -EKEYEXPIRED },
		{ "UnrecognizedClientException", 400, -EKEYREJECTED },
		{ "InvalidSignatureException", 400, -EKEYREJECTED },
		{ "IncompleteSignatureException", 400, -EKEYREJECTED },
		{ "ValidationException", 400, -EINVAL },
		{ "InvalidKeyUsageException", 400, -EINVAL },
		{ "UnknownOperationException", 400, -EINVAL },
		{ NULL, 500, -EREMOTEIO },
		{ NULL, 503, -EREMOTEIO },
		{ NULL, 429, -EAGAIN },
		{ NULL, 403, -EPROTO },
		{ "", 200, -EPROTO },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		int r = dmbyok_aws_error_to_errno(cases[i].code, cases[i].status);

		if (r != cases[i].r)
			fail_msg("%s/%ld: got %d want %d", cases[i].code ? cases[i].code : "-",
			         cases[i].status, r, cases[i].r);
	}
	/* the classes the agent and CLI act on */
	assert_int_equal(dmbyok_error_class(dmbyok_aws_error_to_errno("DisabledException", 409)),
	                 DMBYOK_ERR_KEY_REVOKED);
	assert_int_equal(dmbyok_error_class(dmbyok_aws_error_to_errno("ThrottlingException", 400)),
	                 DMBYOK_ERR_KMS_TRANSIENT);
	assert_int_equal(
	    dmbyok_error_class(dmbyok_aws_error_to_errno("ExpiredTokenException", 400)),
	    DMBYOK_ERR_CREDENTIALS);
}

static void test_retry_policy(void **state)
{
	struct kms_retry rt;

	assert_true(dmbyok_aws_error_is_retryable("ThrottlingException", 400));
	assert_true(dmbyok_aws_error_is_retryable("KMSInternalException", 500));
	assert_true(dmbyok_aws_error_is_retryable(NULL, 502));
	assert_true(dmbyok_aws_error_is_retryable(NULL, 504));
	assert_false(dmbyok_aws_error_is_retryable("AccessDeniedException", 400));
	assert_false(dmbyok_aws_error_is_retryable("DisabledException", 409));
	assert_false(dmbyok_aws_error_is_retryable("ExpiredTokenException", 400));
	assert_false(dmbyok_aws_error_is_retryable("ValidationException", 400));
	assert_false(dmbyok_aws_error_is_retryable(NULL, 404));
	assert_true(dmbyok_kms_errno_is_retryable(-ECONNREFUSED));
	assert_true(dmbyok_kms_errno_is_retryable(-ETIMEDOUT));
	assert_true(dmbyok_kms_errno_is_retryable(-ECONNRESET));
	assert_false(dmbyok_kms_errno_is_retryable(-EINVAL));
	assert_false(dmbyok_kms_errno_is_retryable(-EPROTO));

	for (unsigned a = 1; a < 40; a++)
		for (int i = 0; i < 50; i++) {
			unsigned ms = dmbyok_kms_retry_backoff_ms(a);

			assert_true(ms <= 20000);
			if (a <= 8)
				assert_true(ms <= 100U << (a - 1));
		}

	dmbyok_kms_retry_init(&rt, 0);
	assert_int_equal(rt.max_attempts, 3);
	/* the quota bounds retries in a storm, and successes refill it */
	for (unsigned i = 0; i < KMS_RETRY_QUOTA / KMS_RETRY_COST; i++)
		assert_true(dmbyok_kms_retry_acquire(&rt, -EAGAIN));
	assert_false(dmbyok_kms_retry_acquire(&rt, -EAGAIN));
	dmbyok_kms_retry_release(&rt, -EAGAIN, true);
	assert_true(dmbyok_kms_retry_acquire(&rt, -EAGAIN));
	assert_false(dmbyok_kms_retry_acquire(&rt, -ETIMEDOUT));
}

static void test_arn_region(void **state)
{
	char *r = NULL;

	assert_int_equal(dmbyok_aws_arn_region("arn:aws:kms:eu-central-1:111122223333:key/abc", &r),
	                 0);
	assert_string_equal(r, "eu-central-1");
	free(r);
	assert_int_equal(dmbyok_aws_arn_region("arn:aws-cn:kms:cn-north-1:1:alias/x", &r), 0);
	assert_string_equal(r, "cn-north-1");
	free(r);
	assert_int_equal(dmbyok_aws_arn_region("alias/x", &r), -EINVAL);
	assert_int_equal(dmbyok_aws_arn_region("1234abcd-12ab-34cd-56ef-1234567890ab", &r),
	                 -EINVAL);
	assert_int_equal(dmbyok_aws_arn_region("arn:aws:kms::1:key/x", &r), -EINVAL);
	assert_int_equal(dmbyok_aws_arn_region("arn:aws:kms:EU/../x:1:key/x", &r), -EINVAL);
	assert_int_equal(dmbyok_aws_arn_region(NULL, &r), -EINVAL);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_region(void **state)
{
	char config[256], *r = NULL;

	snprintf(config, sizeof(config), "%s/config", tmpdir);
	write_file(config, "[default]\nregion = ap-south-1\n[profile p]\nregion = sa-east-1\n");
	setenv("AWS_CONFIG_FILE", config, 1);
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_DEFAULT_PROFILE");
	setenv("AWS_REGION", "us-west-2", 1);
	setenv("AWS_DEFAULT_REGION", "us-west-1", 1);

	/* explicit > key ARN > AWS_REGION > AWS_DEFAULT_REGION > profile */
	assert_int_equal(
	    dmbyok_aws_resolve_region("eu-west-3", "arn:aws:kms:eu-west-1:1:key/k", NULL, &r), 0);
	assert_string_equal(r, "eu-west-3");
	free(r);
	assert_int_equal(dmbyok_aws_resolve_region(NULL, "arn:aws:kms:eu-west-1:1:key/k", NULL, &r),
	                 0);
	assert_string_equal(r, "eu-west-1");
	free(r);
	assert_int_equal(dmbyok_aws_resolve_region(NULL, "alias/k", NULL, &r), 0);
	assert_string_equal(r, "us-west-2");
	free(r);
	unsetenv("AWS_REGION");
	assert_int_equal(dmbyok_aws_resolve_region(NULL, NULL, NULL, &r), 0);
	assert_string_equal(r, "us-west-1");
	free(r);
	unsetenv("AWS_DEFAULT_REGION");
	assert_int_equal(dmbyok_aws_resolve_region(NULL, NULL, NULL, &r), 0);
	assert_string_equal(r, "ap-south-1");
	free(r);
	assert_int_equal(dmbyok_aws_resolve_region(NULL, NULL, "p", &r), 0);
	assert_string_equal(r, "sa-east-1");
	free(r);
	setenv("AWS_PROFILE", "p", 1);
	assert_int_equal(dmbyok_aws_resolve_region(NULL, NULL, NULL, &r), 0);
	assert_string_equal(r, "sa-east-1");
	free(r);
	assert_int_equal(dmbyok_aws_resolve_region(NULL, NULL, "nope", &r), -ENOENT);
	unsetenv("AWS_PROFILE");
	assert_int_equal(dmbyok_aws_resolve_region("Bad Region", NULL, NULL, &r), -EINVAL);
	setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
	assert_int_equal(dmbyok_aws_resolve_region(NULL, NULL, NULL, &r), -ENOENT);
	unlink(config);
}

static void test_endpoint(void **state)
{
	char *e = NULL, *u = NULL;

	unsetenv("AWS_ENDPOINT_URL_KMS");
	unsetenv("AWS_ENDPOINT_URL");
	assert_int_equal(dmbyok_aws_endpoint_override(NULL, &e), 0);
	assert_null(e);
	assert_int_equal(dmbyok_aws_endpoint_url(NULL, "eu-west-1", &u), 0);
	assert_string_equal(u, "https://kms.eu-west-1.amazonaws.com/");
	free(u);
	assert_int_equal(dmbyok_aws_endpoint_url(NULL, "cn-north-1", &u), 0);
	assert_string_equal(u, "https://kms.cn-north-1.amazonaws.com.cn/");
	free(u);
	assert_int_equal(dmbyok_aws_endpoint_url(NULL, NULL, &u), -EINVAL);

	setenv("AWS_ENDPOINT_URL", "https://generic.example", 1);
	assert_int_equal(dmbyok_aws_endpoint_override(NULL, &e), 0);
	assert_string_equal(e, "https://generic.example");
	free(e);
	setenv("AWS_ENDPOINT_URL_KMS", "https://kms.example:8443", 1);
	assert_int_equal(dmbyok_aws_endpoint_override(NULL, &e), 0);
	assert_string_equal(e, "https://kms.example:8443");
	assert_int_equal(dmbyok_aws_endpoint_url(e, "us-east-1", &u), 0);
	assert_string_equal(u, "https://kms.example:8443/");
	free(u);
	free(e);
	assert_int_equal(dmbyok_aws_endpoint_override("https://explicit/", &e), 0);
	assert_string_equal(e, "https://explicit/");
	assert_int_equal(dmbyok_aws_endpoint_url(e, "us-east-1", &u), 0);
	assert_string_equal(u, "https://explicit/");
	free(u);
	free(e);
	unsetenv("AWS_ENDPOINT_URL_KMS");
	unsetenv("AWS_ENDPOINT_URL");

	/* plain http: loopback only; never credentials in the URL */
	assert_int_equal(dmbyok_aws_endpoint_url("http://127.0.0.1:4566", "us-east-1", &u), 0);
	free(u);
	assert_int_equal(dmbyok_aws_endpoint_url("http://localhost:4566", "us-east-1", &u), 0);
	free(u);
	assert_int_equal(dmbyok_aws_endpoint_url("http://[::1]:4566", "us-east-1", &u), 0);
	free(u);
	assert_int_equal(dmbyok_aws_endpoint_url("http://kms.example", "us-east-1", &u), -EINVAL);
	assert_int_equal(dmbyok_aws_endpoint_url("http://127.0.0.1.evil.com", "us-east-1", &u),
	                 -EINVAL);
	assert_int_equal(dmbyok_aws_endpoint_url("ftp://x", "us-east-1", &u), -EINVAL);
	assert_int_equal(dmbyok_aws_endpoint_url("https://a:b@kms.example", "us-east-1", &u),
	                 -EINVAL);
	assert_false(dmbyok_kms_url_is_loopback("http://localhost.example/"));
	assert_true(dmbyok_kms_url_is_loopback("http://127.1.2.3/"));
}

static void test_config_paths(void **state)
{
	char *p = NULL;

	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_CONFIG_FILE");
	setenv("HOME", "/home/u", 1);
	assert_int_equal(dmbyok_aws_credentials_file_path(&p), 0);
	assert_string_equal(p, "/home/u/.aws/credentials");
	free(p);
	assert_int_equal(dmbyok_aws_config_file_path(&p), 0);
	assert_string_equal(p, "/home/u/.aws/config");
	free(p);
	setenv("AWS_CONFIG_FILE", "/etc/x", 1);
	assert_int_equal(dmbyok_aws_config_file_path(&p), 0);
	assert_string_equal(p, "/etc/x");
	free(p);
	assert_int_equal(dmbyok_aws_config_section("default", &p), 0);
	assert_string_equal(p, "default");
	free(p);
	assert_int_equal(dmbyok_aws_config_section("dev", &p), 0);
	assert_string_equal(p, "profile dev");
	free(p);
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_DEFAULT_PROFILE");
	assert_string_equal(dmbyok_aws_profile_name(NULL), "default");
	setenv("AWS_PROFILE", "env", 1);
	assert_string_equal(dmbyok_aws_profile_name(NULL), "env");
	assert_string_equal(dmbyok_aws_profile_name("explicit"), "explicit");
	unsetenv("AWS_PROFILE");
}

static void test_iso8601(void **state)
{
	time_t t;

	assert_int_equal(dmbyok_aws_parse_iso8601("1970-01-01T00:01:00Z", &t), 0);
	assert_int_equal(t, 60);
	assert_int_equal(dmbyok_aws_parse_iso8601("2024-02-29T12:00:00.123Z", &t), 0);
	assert_int_equal(t, 1709208000);
	assert_int_equal(dmbyok_aws_parse_iso8601("2024-02-29T12:00:00+00:00", &t), 0);
	assert_int_equal(dmbyok_aws_parse_iso8601("2024-02-29T12:00:00+02:00", &t), -EINVAL);
	assert_int_equal(dmbyok_aws_parse_iso8601("tomorrow", &t), -EINVAL);
}

static struct secret *body(const char *text)
{
	struct secret *s = NULL;
	size_t n = strlen(text);

	assert_int_equal(dmbyok_secret_new(n + 1, &s), 0);
	memcpy(s->data, text, n + 1);
	s->size = n;
	return s;
}

static void test_json_take_string(void **state)
{
	struct secret *b, *v = NULL;
	json_object *j, *o;

	b = body("{\"KeyId\":\"arn:x\",\"Nested\":{\"Plaintext\":\"no\",\"a\":[1,{\"b\":\"}\"}]},"
	         "\"Esc\":\"\\\"Plaintext\\\"\" , \"Plaintext\" : \"AAEC\", \"n\": -1.5e3 }");
	assert_int_equal(dmbyok_aws_json_take_string(b, "Plaintext", &v), 0);
	assert_string_equal((char *)v->data, "AAEC");
	assert_int_equal(v->size, 4);
	/* blanked in place, and the rest still parses */
	assert_null(strstr((char *)b->data, "AAEC\""));
	j = json_tokener_parse((char *)b->data);
	assert_non_null(j);
	assert_true(json_object_object_get_ex(j, "KeyId", &o));
	assert_string_equal(json_object_get_string(o), "arn:x");
	json_object_put(j);
	dmbyok_secret_free(v);
	v = NULL;
	/* only top-level fields count */
	assert_int_equal(dmbyok_aws_json_take_string(b, "a", &v), -ENOENT);
	dmbyok_secret_free(b);

	static const char *const bad[] = {
		"not json",
		"{\"Plaintext\":1}",
		"{\"Plaintext\":\"a\\nb\"}",
		"{\"Plaintext\":\"a\",\"Plaintext\":\"b\"}",
		"{\"Plaintext\":\"abc",
		"[1]",
		"{\"x\":\"y\" \"Plaintext\":\"a\"}",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		b = body(bad[i]);
		if (dmbyok_aws_json_take_string(b, "Plaintext", &v) != -EPROTO)
			fail_msg("accepted: %s", bad[i]);
		dmbyok_secret_free(b);
	}
}

static void test_client_options(void **state)
{
	struct kms_client *c = NULL;

	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	unsetenv("AWS_CA_BUNDLE");
	setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
	/* no region anywhere: the client still works with key ARNs */
	assert_int_equal(dmbyok_kms_client_new(NULL, &c), 0);
	assert_null(dmbyok_kms_client_region(c));
	assert_string_equal(dmbyok_kms_last_error(c), "");
	dmbyok_kms_client_free(c);
	assert_int_equal(
	    dmbyok_kms_client_new(
	        &(struct kms_options){ .region = "eu-north-1", .provider = "aws" }, &c),
	    0);
	assert_string_equal(dmbyok_kms_client_region(c), "eu-north-1");
	dmbyok_kms_client_free(c);
	dmbyok_kms_client_free(NULL);
	assert_int_equal(dmbyok_kms_client_new(&(struct kms_options){ .provider = "nope" }, &c),
	                 -EINVAL);
	assert_string_equal(dmbyok_kms_last_error(NULL), "");
}

static int setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	/* Never reach for real instance metadata from a unit test. */
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	return 0;
}

static int teardown(void **state)
{
	rmdir(tmpdir);
	return 0;
}

static void test_split_command(void **state)
{
	char **argv = NULL;

	assert_int_equal(dmbyok_aws_split_command("cat \"/a dir/x y.json\" 'it''s' a\\ b", &argv),
	                 0);
	assert_string_equal(argv[0], "cat");
	assert_string_equal(argv[1], "/a dir/x y.json");
	assert_string_equal(argv[2], "its");
	assert_string_equal(argv[3], "a b");
	assert_null(argv[4]);
	for (char **p = argv; *p; p++)
		free(*p);
	free(argv);
	assert_int_equal(dmbyok_aws_split_command("echo 'unbalanced", &argv), -EINVAL);
	assert_int_equal(dmbyok_aws_split_command("   ", &argv), -EINVAL);
}

static void test_sts_endpoint_and_xml(void **state)
{
	_cleanup_free_ char *url = NULL, *region = NULL, *text = NULL;

	unsetenv("AWS_ENDPOINT_URL_STS");
	unsetenv("AWS_ENDPOINT_URL");
	assert_int_equal(dmbyok_aws_sts_endpoint("eu-west-1", &url, &region), 0);
	assert_string_equal(url, "https://sts.eu-west-1.amazonaws.com/");
	assert_string_equal(region, "eu-west-1");
	free(url);
	free(region);
	assert_int_equal(dmbyok_aws_sts_endpoint(NULL, &url, &region), 0);
	assert_string_equal(url, "https://sts.amazonaws.com/");
	assert_string_equal(region, "us-east-1");
	free(url);
	free(region);
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/", 1);
	setenv("AWS_ENDPOINT_URL_STS", "https://sts.example/", 1);
	assert_int_equal(dmbyok_aws_sts_endpoint("eu-west-1", &url, &region), 0);
	assert_string_equal(url, "https://sts.example/");
	setenv("AWS_ENDPOINT_URL_STS", "http://sts.example/", 1);
	assert_int_equal(dmbyok_aws_sts_endpoint("eu-west-1", &text, &text), -EINVAL);
	unsetenv("AWS_ENDPOINT_URL_STS");
	unsetenv("AWS_ENDPOINT_URL");

	assert_int_equal(dmbyok_aws_xml_text("<E><Code>AccessDenied</Code><Message>a &amp; "
	                                     "&lt;b&gt;</Message></E>",
	                                     "Message", &text),
	                 0);
	assert_string_equal(text, "a & <b>");
	assert_int_equal(dmbyok_aws_xml_text("<E></E>", "Code", &url), -ENOENT);
}

/* GetCallerIdentity's ARN as a grant names it: a session becomes its role. */
static void test_grantee_from_caller_arn(void **state)
{
	static const struct {
		const char *in, *out; /* out NULL: -EINVAL */
	} cases[] = {
		{ "arn:aws:sts::111122223333:assumed-role/dmbyok-host/i-0abc",
		  "arn:aws:iam::111122223333:role/dmbyok-host" },
		{ "arn:aws:sts::111122223333:assumed-role/r+=,.@_-/s@x.example",
		  "arn:aws:iam::111122223333:role/r+=,.@_-" },
		{ "arn:aws-cn:sts::123456789012:assumed-role/app/sess",
		  "arn:aws-cn:iam::123456789012:role/app" },
		{ "arn:aws-us-gov:sts::123456789012:assumed-role/app/sess",
		  "arn:aws-us-gov:iam::123456789012:role/app" },
		/* other principals are named as they are */
		{ "arn:aws:iam::111122223333:user/customer-admin",
		  "arn:aws:iam::111122223333:user/customer-admin" },
		{ "arn:aws:iam::111122223333:role/path/to/app",
		  "arn:aws:iam::111122223333:role/path/to/app" },
		{ "arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:root" },
		{ "arn:aws:sts::111122223333:federated-user/bob",
		  "arn:aws:sts::111122223333:federated-user/bob" },
		/* not principal ARNs, or sessions we cannot read */
		{ "arn:aws:sts::111122223333:assumed-role/app", NULL },
		{ "arn:aws:sts::111122223333:assumed-role//sess", NULL },
		{ "arn:aws:sts::111122223333:assumed-role/app/", NULL },
		{ "arn:aws:sts::111122223333:assumed-role/app/a/b", NULL },
		{ "arn:aws:sts::1111:assumed-role/app/sess", NULL },
		{ "arn:aws:sts:us-east-1:111122223333:assumed-role/app/sess", NULL },
		{ "arn:aws:kms:us-east-1:111122223333:key/1234", NULL },
		{ "arn::iam::111122223333:root", NULL },
		{ "arn:aws:iam::111122223333:", NULL },
		{ "role/app", NULL },
		{ "", NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *out = NULL;
		int r = dmbyok_aws_grantee_from_caller_arn(cases[i].in, &out);

		if (!cases[i].out) {
			if (r != -EINVAL)
				fail_msg("%s: want -EINVAL, got %d (%s)", cases[i].in, r,
				         out ? out : "");
			continue;
		}
		if (r < 0)
			fail_msg("%s: %s", cases[i].in, dmbyok_strerror(r));
		assert_string_equal(out, cases[i].out);
		free(out);
	}
}

#define GID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* CreateGrant's and ListGrants' answers, as AWS documents them, and malformed ones. */
static void test_grant_parsers(void **state)
{
	static const char *const bad_lists[] = {
		"{}",
		"{\"Grants\":{}}",
		"{\"Grants\":[],\"Truncated\":\"false\"}",
		"{\"Grants\":[],\"Truncated\":true}",
		"{\"Grants\":[1]}",
		"{\"Grants\":[{\"GranteePrincipal\":\"x\"}]}",
		"{\"Grants\":[{\"GrantId\":\"" GID "\",\"Operations\":[\"Decrypt\"]}]}",
		"{\"Grants\":[{\"GrantId\":\"" GID "\",\"GranteePrincipal\":\"g\"}]}",
		"{\"Grants\":[{\"GrantId\":\"" GID "\",\"GranteePrincipal\":\"g\","
		"\"Operations\":[\"Decrypt\",7]}]}",
		"{\"Grants\":[{\"GrantId\":\"" GID "\",\"GranteePrincipal\":\"g\","
		"\"Operations\":[],\"Constraints\":{\"EncryptionContextEquals\":{\"a\":1}}}]}",
		"{\"Grants\":[{\"GrantId\":\"" GID "\",\"GranteePrincipal\":\"g\","
		"\"Operations\":[],\"Constraints\":[]}]}",
		"{\"Grants\":[]} trailing",
	};
	struct kms_grant_info info = {};
	struct secret *b;
	char *id = NULL, *marker = NULL, why[256];

	b = body("{\"GrantToken\":\"AQpAtoken\",\"GrantId\":\"" GID "\"}");
	assert_int_equal(dmbyok_aws_parse_create_grant(b, &id, why, sizeof(why)), 0);
	assert_string_equal(id, GID);
	free(id);
	dmbyok_secret_free(b);
	b = body("{\"GrantId\":\"a b\"}");
	assert_int_equal(dmbyok_aws_parse_create_grant(b, &id, why, sizeof(why)), -EPROTO);
	dmbyok_secret_free(b);
	b = body("{\"GrantToken\":\"t\"}");
	assert_int_equal(dmbyok_aws_parse_create_grant(b, &id, why, sizeof(why)), -EPROTO);
	dmbyok_secret_free(b);

	b = body("{\"Grants\":[{\"GrantId\":\"other\",\"GranteePrincipal\":7},"
	         "{\"KeyId\":\"arn:aws:kms:us-east-1:111122223333:key/k\",\"GrantId\":\"" GID
	         "\",\"Name\":\"vol\",\"CreationDate\":1.7e9,"
	         "\"GranteePrincipal\":\"arn:aws:iam::111122223333:role/h\","
	         "\"RetiringPrincipal\":\"arn:aws:iam::111122223333:role/h\","
	         "\"IssuingAccount\":\"arn:aws:iam::111122223333:root\","
	         "\"Operations\":[\"Decrypt\",\"ReEncryptFrom\",\"ReEncryptTo\"],"
	         "\"Constraints\":{\"EncryptionContextEquals\":{\"dmbyok:volume\":\"v1\"}}}],"
	         "\"Truncated\":false}");
	assert_int_equal(dmbyok_aws_parse_list_grants(b, GID, &info, &marker, why, sizeof(why)), 0);
	dmbyok_secret_free(b);
	assert_string_equal(info.grant_id, GID);
	assert_string_equal(info.grantee, "arn:aws:iam::111122223333:role/h");
	assert_string_equal(info.retiring_principal, "arn:aws:iam::111122223333:role/h");
	assert_string_equal(info.operations[0], "Decrypt");
	assert_string_equal(info.operations[2], "ReEncryptTo");
	assert_null(info.operations[3]);
	assert_string_equal(
	    json_object_to_json_string_ext(info.context_equals, JSON_C_TO_STRING_PLAIN),
	    "{\"dmbyok:volume\":\"v1\"}");
	dmbyok_kms_grant_info_done(&info);
	dmbyok_kms_grant_info_done(&info); /* zeroed: done again is harmless */

	/* no retiring principal, no constraints */
	b = body("{\"Grants\":[{\"GrantId\":\"" GID "\",\"GranteePrincipal\":\"g\","
	         "\"Operations\":[\"DescribeKey\"]}]}");
	assert_int_equal(dmbyok_aws_parse_list_grants(b, GID, &info, &marker, why, sizeof(why)), 0);
	dmbyok_secret_free(b);
	assert_null(info.retiring_principal);
	assert_null(info.context_equals);
	dmbyok_kms_grant_info_done(&info);

	/* not on this page: the next page's marker, or none on the last */
	b = body("{\"Grants\":[],\"Truncated\":true,\"NextMarker\":\"m2\"}");
	assert_int_equal(dmbyok_aws_parse_list_grants(b, GID, &info, &marker, why, sizeof(why)),
	                 -ENOENT);
	dmbyok_secret_free(b);
	assert_string_equal(marker, "m2");
	free(marker);
	b = body("{\"Grants\":[]}");
	assert_int_equal(dmbyok_aws_parse_list_grants(b, GID, &info, &marker, why, sizeof(why)),
	                 -ENOENT);
	dmbyok_secret_free(b);
	assert_null(marker);

	for (size_t i = 0; i < ELEMENTSOF(bad_lists); i++) {
		b = body(bad_lists[i]);
		if (dmbyok_aws_parse_list_grants(b, GID, &info, &marker, why, sizeof(why)) !=
		    -EPROTO)
			fail_msg("accepted: %s", bad_lists[i]);
		dmbyok_secret_free(b);
		assert_null(info.grant_id);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ini),
		cmocka_unit_test(test_ini_bad),
		cmocka_unit_test(test_error_code),
		cmocka_unit_test(test_error_mapping),
		cmocka_unit_test(test_retry_policy),
		cmocka_unit_test(test_arn_region),
		cmocka_unit_test(test_region),
		cmocka_unit_test(test_endpoint),
		cmocka_unit_test(test_config_paths),
		cmocka_unit_test(test_iso8601),
		cmocka_unit_test(test_json_take_string),
		cmocka_unit_test(test_client_options),
		cmocka_unit_test(test_split_command),
		cmocka_unit_test(test_sts_endpoint_and_xml),
		cmocka_unit_test(test_grantee_from_caller_arn),
		cmocka_unit_test(test_grant_parsers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
