/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Google Cloud KMS provider's pure parts: resource names and provider choice, CRC32C,
 * the error taxonomy, secret strings out of JSON, and the RS256 JWT (verified with OpenSSL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "../../src/kms/gcp/gcp.h"

#define KEY "projects/p-1/locations/europe-west1/keyRings/r_1/cryptoKeys/k-1"

static void test_names(void **state)
{
	char *key = NULL, *loc = NULL, *ver = NULL;

	(void)state;
	assert_int_equal(dmbyok_gcp_parse_name(KEY, &key, &loc, &ver), 0);
	assert_string_equal(key, KEY);
	assert_string_equal(loc, "europe-west1");
	assert_null(ver);
	free(key);
	free(loc);
	assert_int_equal(dmbyok_gcp_parse_name(KEY "/cryptoKeyVersions/12", &key, NULL, &ver), 0);
	assert_string_equal(key, KEY);
	assert_string_equal(ver, "12");
	free(key);
	free(ver);
	static const char *const bad[] = {
		"",
		"projects/p/locations/l/keyRings/r",
		"projects/p/locations/l/keyRings/r/cryptoKeys/",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k/",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/0",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1x",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k:encrypt",
		"projects/p/locations/L/keyRings/r/cryptoKeys/k",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k?x=1",
		"projects//locations/l/keyRings/r/cryptoKeys/k",
		"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_false(dmbyok_gcp_is_name(bad[i]));
}

static void test_provider_choice_and_region(void **state)
{
	char *region = NULL;

	(void)state;
	assert_string_equal(dmbyok_kms_provider_for_key(KEY), "gcp");
	assert_string_equal(dmbyok_kms_provider_for_key(KEY "/cryptoKeyVersions/3"), "gcp");
	assert_string_equal(dmbyok_kms_provider_for_key("alias/orders"), "aws");
	assert_string_equal(dmbyok_kms_provider_for_key("arn:aws:kms:eu-west-1:111122223333:key/"
	                                                "1234abcd-12ab-34cd-56ef-1234567890ab"),
	                    "aws");
	assert_true(dmbyok_kms_provider_known("gcp"));
	assert_true(dmbyok_kms_provider_known("aws"));
	assert_false(dmbyok_kms_provider_known("vault"));
	assert_false(dmbyok_kms_provider_known(NULL));
	/* The token's "region" of a Cloud KMS key is its location. */
	assert_int_equal(dmbyok_kms_key_region(KEY "/cryptoKeyVersions/3", &region), 0);
	assert_string_equal(region, "europe-west1");
	free(region);
	assert_int_equal(dmbyok_kms_key_region("projects/p/locations/l", &region), -EINVAL);
}

static void test_crc32c(void **state)
{
	(void)state;
	/* The standard check value, and the empty input (Cloud KMS's AAD checksum of none). */
	assert_int_equal(dmbyok_gcp_crc32c("123456789", 9), 0xE3069283U);
	assert_int_equal(dmbyok_gcp_crc32c("", 0), 0);
}

static void test_error_taxonomy(void **state)
{
	static const struct {
		const char *op, *status;
		long http;
		enum dmbyok_error_class want;
	} cases[] = {
		{ "Decrypt", "FAILED_PRECONDITION", 400, DMBYOK_ERR_KEY_REVOKED },
		{ "Decrypt", "PERMISSION_DENIED", 403, DMBYOK_ERR_KEY_REVOKED },
		{ "Decrypt", "NOT_FOUND", 404, DMBYOK_ERR_KEY_REVOKED },
		{ "Decrypt", "INVALID_ARGUMENT", 400, DMBYOK_ERR_WRONG_TOKEN },
		{ "GenerateDataKey", "INVALID_ARGUMENT", 400, DMBYOK_ERR_INPUT },
		{ "Decrypt", "UNAVAILABLE", 503, DMBYOK_ERR_KMS_TRANSIENT },
		{ "Decrypt", "DEADLINE_EXCEEDED", 504, DMBYOK_ERR_KMS_TRANSIENT },
		{ "Decrypt", "RESOURCE_EXHAUSTED", 429, DMBYOK_ERR_KMS_TRANSIENT },
		{ "Decrypt", "INTERNAL", 500, DMBYOK_ERR_KMS_TRANSIENT },
		{ "Decrypt", "UNAUTHENTICATED", 401, DMBYOK_ERR_CREDENTIALS },
		/* no Google error at all: by the HTTP status */
		{ "Decrypt", NULL, 503, DMBYOK_ERR_KMS_TRANSIENT },
		{ "Decrypt", NULL, 502, DMBYOK_ERR_KMS_TRANSIENT },
		{ "Decrypt", NULL, 401, DMBYOK_ERR_CREDENTIALS },
		{ "Decrypt", NULL, 403, DMBYOK_ERR_KEY_REVOKED },
	};

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		assert_int_equal(dmbyok_error_class(dmbyok_gcp_error_to_errno(
		                     cases[i].op, cases[i].status, cases[i].http)),
		                 cases[i].want);
}

static struct secret *secret_of(const char *s)
{
	struct secret *x = NULL;

	assert_int_equal(dmbyok_secret_new(strlen(s) + 1, &x), 0);
	memcpy(x->data, s, strlen(s) + 1);
	x->size = strlen(s);
	return x;
}

static void test_json_take_string(void **state)
{
	struct secret *body, *v = NULL;

	(void)state;
	body = secret_of("{\"a\": [1, {\"plaintext\": \"x\"}], \"private_key\": "
	                 "\"-----BEGIN\\nAB\\/C\\u0041\\\"\\\\\", \"n\": true}");
	assert_int_equal(dmbyok_kms_json_take_string(body, "private_key", &v), 0);
	assert_string_equal((char *)v->data, "-----BEGIN\nAB/CA\"\\");
	/* Blanked where it stood, and the document is still JSON with the other members. */
	assert_null(strstr((char *)body->data, "BEGIN"));
	json_object *j = json_tokener_parse((char *)body->data);
	assert_non_null(j);
	json_object_put(j);
	dmbyok_secret_free(v);
	/* Only top-level members; absent; not a string; twice. */
	assert_int_equal(dmbyok_kms_json_take_string(body, "plaintext", &v), -ENOENT);
	assert_int_equal(dmbyok_kms_json_take_string(body, "n", &v), -EPROTO);
	dmbyok_secret_free(body);
	body = secret_of("{\"t\":\"a\",\"t\":\"b\"}");
	assert_int_equal(dmbyok_kms_json_take_string(body, "t", &v), -EPROTO);
	dmbyok_secret_free(body);
	body = secret_of("{\"t\":\"a\\u00e9\"}");
	assert_int_equal(dmbyok_kms_json_take_string(body, "t", &v), -EPROTO);
	dmbyok_secret_free(body);
}

/* base64url without padding, decoded (the JWT's parts). */
static size_t b64url_decode(const char *s, size_t n, unsigned char *out)
{
	char buf[2048];
	size_t m = 0;
	int len;

	assert_true(n + 4 < sizeof(buf));
	for (size_t i = 0; i < n; i++)
		buf[m++] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	while (m % 4)
		buf[m++] = '=';
	len = EVP_DecodeBlock(out, (unsigned char *)buf, (int)m);
	assert_true(len >= 0);
	return (size_t)len - (n % 4 == 2 ? 2 : n % 4 == 3 ? 1 : 0);
}

static void test_jwt(void **state)
{
	EVP_PKEY *key = EVP_RSA_gen(2048);
	BIO *bio = BIO_new(BIO_s_mem());
	struct secret *pem = NULL, *jwt = NULL;
	char *p, why[256] = "", *dot1, *dot2;
	unsigned char claims[1024], sig[512];
	size_t n_claims, n_sig;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	long len;

	(void)state;
	assert_non_null(key);
	assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
	len = BIO_get_mem_data(bio, &p);
	assert_int_equal(dmbyok_secret_new((size_t)len + 1, &pem), 0);
	memcpy(pem->data, p, (size_t)len);
	pem->size = (size_t)len;
	assert_int_equal(dmbyok_gcp_jwt_sign(pem, "kid-1", "sa@p.iam.gserviceaccount.com",
	                                     "https://oauth2.googleapis.com/token", 1700000000,
	                                     &jwt, why, sizeof(why)),
	                 0);
	dot1 = strchr((char *)jwt->data, '.');
	dot2 = strrchr((char *)jwt->data, '.');
	assert_true(dot1 && dot2 && dot1 != dot2);
	n_claims = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), claims);
	claims[n_claims] = '\0';
	assert_string_equal((char *)claims,
	                    "{\"iss\":\"sa@p.iam.gserviceaccount.com\",\"scope\":"
	                    "\"https://www.googleapis.com/auth/cloud-platform\",\"aud\":"
	                    "\"https://oauth2.googleapis.com/token\",\"iat\":1700000000,"
	                    "\"exp\":1700003600}");
	n_sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), sig);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(
	    EVP_DigestVerify(md, sig, n_sig, jwt->data, (size_t)(dot2 - (char *)jwt->data)), 1);
	dmbyok_secret_free(jwt);
	/* Not a key at all. */
	dmbyok_secret_free(pem);
	pem = secret_of("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
	assert_int_equal(
	    dmbyok_gcp_jwt_sign(pem, NULL, "a@b", "https://x/token", 1, &jwt, why, sizeof(why)),
	    -EINVAL);
	dmbyok_secret_free(pem);
	EVP_MD_CTX_free(md);
	BIO_free(bio);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_provider_choice_and_region),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_error_taxonomy),
		cmocka_unit_test(test_json_take_string),
		cmocka_unit_test(test_jwt),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
