/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Azure Key Vault provider's pure parts: key identifiers and provider choice, the 401
 * challenge, the error taxonomy, base64url and form encoding in locked memory, token
 * answers, the credential chain's order, and the certificate's client assertion (verified
 * with OpenSSL against the certificate).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "../../src/kms/aws/aws.h"
#include "../../src/kms/azure/azure.h"

#define VAULT   "https://dmbyok-test.vault.azure.net"
#define VERSION "0123456789abcdef0123456789ABCDEF"

static void test_key_ids(void **state)
{
	struct azure_key_id k = {};

	(void)state;
	assert_int_equal(dmbyok_azure_parse_key_id(VAULT "/keys/orders", &k), 0);
	assert_string_equal(k.vault, VAULT);
	assert_string_equal(k.host, "dmbyok-test.vault.azure.net");
	assert_string_equal(k.name, "orders");
	assert_null(k.version);
	dmbyok_azure_key_id_done(&k);
	assert_int_equal(
	    dmbyok_azure_parse_key_id("HTTPS://Pool-1.ManagedHSM.azure.net/keys/k-1/" VERSION, &k),
	    0);
	assert_string_equal(k.host, "pool-1.managedhsm.azure.net");
	assert_string_equal(k.version, "0123456789abcdef0123456789abcdef");
	assert_true(dmbyok_azure_host_is_hsm(k.host));
	dmbyok_azure_key_id_done(&k);
	/* A trailing slash names the key; a port is kept (a test vault). */
	assert_int_equal(dmbyok_azure_parse_key_id("https://127.0.0.1:8443/keys/local/", &k), 0);
	assert_string_equal(k.vault, "https://127.0.0.1:8443");
	assert_null(k.version);
	dmbyok_azure_key_id_done(&k);
	static const char *const bad[] = {
		"",
		"http://v.vault.azure.net/keys/k",
		"https://v.vault.azure.net/secrets/k",
		"https://v.vault.azure.net/keys/",
		"https://v.vault.azure.net/keys/k_1",
		"https://v.vault.azure.net/keys/k/123",
		"https://v.vault.azure.net/keys/k/" VERSION "/wrapkey",
		"https://v.vault.azure.net/keys/k?api-version=7.4",
		"https://user@v.vault.azure.net/keys/k",
		"https://v.vault.azure.net:x/keys/k",
		"https://.vault.azure.net/keys/k",
		"https:///keys/k",
		"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		if (dmbyok_azure_is_key_id(bad[i]))
			fail_msg("accepted %s", bad[i]);
}

static void test_provider_choice_and_region(void **state)
{
	char *region = NULL;

	(void)state;
	assert_string_equal(dmbyok_kms_provider_for_key(VAULT "/keys/orders"), "azure");
	assert_string_equal(dmbyok_kms_provider_for_key(VAULT "/keys/orders/" VERSION), "azure");
	assert_string_equal(dmbyok_kms_provider_for_key("https://p.managedhsm.azure.net/keys/k"),
	                    "azure");
	assert_string_equal(dmbyok_kms_provider_for_key("alias/orders"), "aws");
	assert_string_equal(dmbyok_kms_provider_for_key("projects/p/locations/l/keyRings/r/"
	                                                "cryptoKeys/k"),
	                    "gcp");
	assert_true(dmbyok_kms_provider_known("azure"));
	/* The token's "region" of a Key Vault key is its vault's host. */
	assert_int_equal(dmbyok_kms_key_region(VAULT "/keys/orders/" VERSION, &region), 0);
	assert_string_equal(region, "dmbyok-test.vault.azure.net");
	free(region);
	assert_int_equal(dmbyok_kms_key_region("https://example.com/nothing", &region), -EINVAL);
	/* Audiences. */
	assert_string_equal(dmbyok_azure_resource_for_host("v.vault.azure.net"),
	                    "https://vault.azure.net");
	assert_string_equal(dmbyok_azure_resource_for_host("p.managedhsm.azure.net"),
	                    "https://managedhsm.azure.net");
	assert_string_equal(dmbyok_azure_resource_for_host("v.vault.azure.cn"),
	                    "https://vault.azure.cn");
	assert_string_equal(dmbyok_azure_resource_for_host("v.vault.usgovcloudapi.net:443"),
	                    "https://vault.usgovcloudapi.net");
	/* Elsewhere (Azure Stack Hub, a test vault) the vault's challenge says it. */
	assert_null(dmbyok_azure_resource_for_host("127.0.0.1:8443"));
	assert_null(dmbyok_azure_resource_for_host("v.vault.local.azurestack.external"));
	assert_false(dmbyok_azure_host_is_hsm("v.vault.azure.net"));
}

static void test_challenge(void **state)
{
	struct azure_challenge c = {};

	(void)state;
	assert_int_equal(
	    dmbyok_azure_parse_challenge(
	        "Bearer authorization=\"https://login.microsoftonline.com/"
	        "72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://vault.azure.net\"",
	        &c),
	    0);
	assert_string_equal(c.tenant, "72f988bf-86f1-41af-91ab-2d7cd011db47");
	assert_string_equal(c.resource, "https://vault.azure.net");
	dmbyok_azure_challenge_done(&c);
	/* authorization_uri and a scope in place of resource (Managed HSM, newer vaults). */
	assert_int_equal(dmbyok_azure_parse_challenge(
	                     "Bearer authorization_uri=\"https://login.windows.net/tenant-1/\", "
	                     "scope=\"https://managedhsm.azure.net/.default\"",
	                     &c),
	                 0);
	assert_string_equal(c.tenant, "tenant-1");
	assert_string_equal(c.resource, "https://managedhsm.azure.net");
	dmbyok_azure_challenge_done(&c);
	assert_int_equal(dmbyok_azure_parse_challenge("Basic realm=\"x\"", &c), -EINVAL);
	assert_int_equal(
	    dmbyok_azure_parse_challenge("Bearer resource=\"https://vault.azure.net\"", &c),
	    -EINVAL);
	assert_int_equal(dmbyok_azure_parse_challenge("Bearer authorization=\"http://evil/t\"", &c),
	                 -EINVAL);
	assert_int_equal(dmbyok_azure_parse_challenge("Bearer authorization=\"https://l/t", &c),
	                 -EINVAL);
}

/* What the challenge verification says of a resource/tenant for a vault host. */
static int verify(const char *resource, const char *tenant, const char *host, const char *env,
                  char **ret, char *why, size_t why_size)
{
	struct azure_challenge c = { .tenant = (char *)tenant, .resource = (char *)resource };

	why[0] = '\0';
	return dmbyok_azure_challenge_verify(&c, host, env, ret, why, why_size);
}

static void test_challenge_verify(void **state)
{
	char why[512], *res = NULL;

	(void)state;
	/* Azure Stack Hub: the audience is the vault's parent domain, lower-cased. */
	assert_int_equal(verify("https://Vault.Local.AzureStack.External/", "t1",
	                        "stack.vault.local.azurestack.external", NULL, &res, why,
	                        sizeof(why)),
	                 0);
	assert_string_equal(res, "https://vault.local.azurestack.external");
	free(TAKE_PTR(res));
	/* The public cloud, with a port on the vault and the service principal's tenant. */
	assert_int_equal(verify("https://vault.azure.net", "T1", "v.vault.azure.net:443", "t1",
	                        &res, why, sizeof(why)),
	                 0);
	assert_string_equal(res, "https://vault.azure.net");
	free(TAKE_PTR(res));
	/* No resource: nothing to follow. */
	assert_int_equal(verify(NULL, "t1", "v.vault.azure.net", NULL, &res, why, sizeof(why)), 0);
	assert_null(res);
	/* Foreign domains, a suffix that is not a label boundary, odd forms: refused. */
	static const char *const foreign[] = {
		"https://vault.azure.net",
		"https://evil.example",
		"https://ault.azure.net",
		"http://vault.local.azurestack.external",
		"https://azurestack.external:1",
		"https://local.azurestack.external/x",
		"https://stack.vault.local.azurestack.external",
		"https://.azurestack.external",
		"vault.local.azurestack.external",
	};
	for (size_t i = 0; i < ELEMENTSOF(foreign); i++) {
		assert_int_equal(verify(foreign[i], "t1", "stack.vault.local.azurestack.external",
		                        NULL, &res, why, sizeof(why)),
		                 -EKEYREJECTED);
		assert_null(res);
		assert_non_null(strstr(why, "not its domain"));
	}
	assert_int_equal(dmbyok_error_class(-EKEYREJECTED), DMBYOK_ERR_CREDENTIALS);
	/* A test vault by address: no challenge resource is its domain. */
	assert_int_equal(
	    verify("https://vault.azure.net", "t1", "127.0.0.1:8443", NULL, &res, why, sizeof(why)),
	    -EKEYREJECTED);
	/* Another tenant than AZURE_TENANT_ID: refused, and said which. */
	assert_int_equal(verify("https://vault.azure.net", "other-tenant", "v.vault.azure.net",
	                        "my-tenant", &res, why, sizeof(why)),
	                 -EKEYREJECTED);
	assert_null(res);
	assert_non_null(strstr(why, "belongs to tenant other-tenant, AZURE_TENANT_ID says "
	                            "my-tenant"));
	/* Network text is made printable. */
	assert_int_equal(
	    verify("https://x\x01y", "t1", "v.vault.azure.net", NULL, &res, why, sizeof(why)),
	    -EKEYREJECTED);
	assert_null(strchr(why, '\x01'));
}

static struct secret *secret_of(const char *s)
{
	struct secret *x = NULL;

	assert_int_equal(dmbyok_aws_secret_strndup(s, strlen(s), &x), 0);
	return x;
}

static void test_errors(void **state)
{
	struct secret *b;
	char *code = NULL, *inner = NULL, *msg = NULL;

	(void)state;
	b = secret_of(
	    "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Operation unwrapKey is "
	    "not allowed on a disabled key.\",\"innererror\":{\"code\":\"KeyDisabled\"}}}");
	assert_int_equal(dmbyok_azure_parse_error(b, &code, &inner, &msg), 0);
	assert_string_equal(code, "Forbidden");
	assert_string_equal(inner, "KeyDisabled");
	assert_string_equal(msg, "Operation unwrapKey is not allowed on a disabled key.");
	free(code);
	free(inner);
	free(msg);
	dmbyok_secret_free(b);
	b = secret_of("<html>502 Bad Gateway</html>");
	assert_int_equal(dmbyok_azure_parse_error(b, &code, &inner, &msg), 0);
	assert_null(code);
	assert_null(inner);
	assert_null(msg);
	dmbyok_secret_free(b);

	/* The classes: revoked, transient, credentials, wrong token, input. */
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 403, "Forbidden", "KeyDisabled"),
	                 -EKEYREVOKED);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 403, "Forbidden", "AccessDenied"),
	                 -EKEYREVOKED);
	assert_int_equal(
	    dmbyok_azure_error_to_errno("Decrypt", 403, "Forbidden", "ForbiddenByRbac"),
	    -EKEYREVOKED);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 404, "KeyNotFound", NULL),
	                 -EKEYREVOKED);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 401, "Unauthorized", NULL),
	                 -EKEYEXPIRED);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 429, "Throttled", NULL), -EAGAIN);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 500, NULL, NULL), -EREMOTEIO);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 503, "ServiceUnavailable", NULL),
	                 -EREMOTEIO);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 504, NULL, NULL), -ETIMEDOUT);
	assert_int_equal(dmbyok_azure_error_to_errno("Decrypt", 400, "BadParameter", NULL),
	                 -EBADMSG);
	assert_int_equal(dmbyok_azure_error_to_errno("GenerateDataKey", 400, "BadParameter", NULL),
	                 -EINVAL);
	assert_int_equal(dmbyok_error_class(-EKEYREVOKED), DMBYOK_ERR_KEY_REVOKED);
	assert_int_equal(dmbyok_error_class(-EAGAIN), DMBYOK_ERR_KMS_TRANSIENT);
	assert_int_equal(dmbyok_error_class(-EKEYEXPIRED), DMBYOK_ERR_CREDENTIALS);
	assert_int_equal(dmbyok_error_class(-EBADMSG), DMBYOK_ERR_WRONG_TOKEN);
}

static void test_base64url_and_form(void **state)
{
	static const uint8_t data[] = { 0xfb, 0xff, 0xbf, 0x00, 0x01 };
	struct secret *s = NULL, *d = NULL;

	(void)state;
	assert_int_equal(dmbyok_azure_base64url_secret(data, sizeof(data), &s), 0);
	assert_string_equal((char *)s->data, "-_-_AAE");
	assert_int_equal(dmbyok_azure_base64url_decode((char *)s->data, s->size, &d), 0);
	assert_int_equal(d->size, sizeof(data));
	assert_memory_equal(d->data, data, sizeof(data));
	dmbyok_secret_free(d);
	assert_int_equal(dmbyok_azure_base64url_decode("-_-_AAE=", 8, &d), 0);
	dmbyok_secret_free(d);
	assert_int_equal(dmbyok_azure_base64url_decode("+/+/AAE", 7, &d), -EINVAL);
	assert_int_equal(dmbyok_azure_base64url_decode("A", 1, &d), -EINVAL);
	assert_int_equal(dmbyok_azure_base64url_decode("AB!D", 4, &d), -EINVAL);
	dmbyok_secret_free(s);

	assert_int_equal(dmbyok_secret_new(256, &s), 0);
	s->size = 0;
	assert_int_equal(dmbyok_azure_form_append(s, "client_secret", "a+b/c=d&e f~", 12), 0);
	assert_int_equal(
	    dmbyok_azure_form_append(s, "scope", "https://vault.azure.net/.default", 32), 0);
	s->data[s->size] = '\0';
	assert_string_equal((char *)s->data,
	                    "client_secret=a%2Bb%2Fc%3Dd%26e%20f~&scope=https%3A%2F%2F"
	                    "vault.azure.net%2F.default");
	dmbyok_secret_free(s);
}

static void test_token_answers(void **state)
{
	struct azure_token t = {};
	struct secret *b;
	char why[256];

	(void)state;
	/* Entra's v2.0 answer: expires_in a number. */
	b = secret_of("{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,"
	              "\"access_token\":\"eyJ0.abc\"}");
	assert_int_equal(dmbyok_azure_parse_token(b, 1000, &t, why, sizeof(why)), 0);
	assert_string_equal((char *)t.token->data, "eyJ0.abc");
	assert_int_equal(t.expires, 1000 + 3599);
	assert_int_equal(t.refresh_at, 1000 + 3599 - AZURE_REFRESH_MARGIN_S);
	/* The access token was taken out of the locked body before parsing. */
	assert_null(strstr((char *)b->data, "eyJ0.abc"));
	dmbyok_secret_free(b);
	dmbyok_secret_free(t.token);
	t = (struct azure_token){};
	/* IMDS's: strings; a short token refreshes at three quarters of its life. */
	b = secret_of("{\"access_token\":\"tok\",\"expires_in\":\"40\",\"expires_on\":\"1040\","
	              "\"resource\":\"https://vault.azure.net\",\"token_type\":\"Bearer\"}");
	assert_int_equal(dmbyok_azure_parse_token(b, 1000, &t, why, sizeof(why)), 0);
	assert_int_equal(t.expires, 1040);
	assert_int_equal(t.refresh_at, 1030);
	dmbyok_secret_free(b);
	dmbyok_secret_free(t.token);
	t = (struct azure_token){};
	/* Only expires_on (App Service style). */
	b = secret_of("{\"access_token\":\"tok\",\"expires_on\":\"4600\"}");
	assert_int_equal(dmbyok_azure_parse_token(b, 1000, &t, why, sizeof(why)), 0);
	assert_int_equal(t.expires, 4600);
	dmbyok_secret_free(b);
	dmbyok_secret_free(t.token);
	t = (struct azure_token){};
	static const char *const bad[] = {
		"{\"expires_in\":3599}",
		"{\"access_token\":\"\",\"expires_in\":3599}",
		"{\"access_token\":\"a\\nb\",\"expires_in\":3599}",
		"{\"access_token\":\"t\",\"expires_in\":\"soon\"}",
		"{\"access_token\":\"t\",\"expires_in\":-5}",
		"{\"access_token\":\"t\"}",
		"{\"access_token\":\"t\",\"expires_in\":60,\"token_type\":\"pop\"}",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		b = secret_of(bad[i]);
		if (dmbyok_azure_parse_token(b, 1000, &t, why, sizeof(why)) != -EPROTO)
			fail_msg("accepted %s", bad[i]);
		dmbyok_secret_free(b);
	}
}

static void test_credential_order(void **state)
{
	(void)state;
	static const char *const vars[] = { "AZURE_TENANT_ID", "AZURE_CLIENT_ID",
		                            "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
		                            "AZURE_FEDERATED_TOKEN_FILE" };
	for (size_t i = 0; i < ELEMENTSOF(vars); i++)
		unsetenv(vars[i]);
	assert_string_equal(dmbyok_azure_credential_source(), "managed-identity");
	/* AZURE_CLIENT_ID alone: the user-assigned managed identity. */
	setenv("AZURE_CLIENT_ID", "c", 1);
	assert_string_equal(dmbyok_azure_credential_source(), "managed-identity");
	setenv("AZURE_FEDERATED_TOKEN_FILE", "/f", 1);
	assert_string_equal(dmbyok_azure_credential_source(), "managed-identity");
	setenv("AZURE_TENANT_ID", "t", 1);
	assert_string_equal(dmbyok_azure_credential_source(), "workload-identity");
	setenv("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pem", 1);
	assert_string_equal(dmbyok_azure_credential_source(), "client-certificate");
	setenv("AZURE_CLIENT_SECRET", "s", 1);
	assert_string_equal(dmbyok_azure_credential_source(), "client-secret");
	setenv("AZURE_CLIENT_SECRET", "", 1);
	assert_string_equal(dmbyok_azure_credential_source(), "client-certificate");
	for (size_t i = 0; i < ELEMENTSOF(vars); i++)
		unsetenv(vars[i]);
}

/* A self-signed RSA certificate and its key, PEM, as AZURE_CLIENT_CERTIFICATE_PATH holds. */
static struct secret *make_pem(X509 **ret_cert)
{
	EVP_PKEY *key = EVP_RSA_gen(2048);
	X509 *cert = X509_new();
	BIO *bio = BIO_new(BIO_s_mem());
	struct secret *s;
	char *p;
	long n;

	assert_non_null(key);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), 0);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_set_pubkey(cert, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"dmbyok-host", -1, -1, 0);
	X509_set_issuer_name(cert, X509_get_subject_name(cert));
	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(PEM_write_bio_X509(bio, cert), 1);
	n = BIO_get_mem_data(bio, &p);
	assert_int_equal(dmbyok_secret_new((size_t)n + 1, &s), 0);
	memcpy(s->data, p, (size_t)n);
	s->size = (size_t)n;
	s->data[n] = '\0';
	BIO_free(bio);
	EVP_PKEY_free(key);
	*ret_cert = cert;
	return s;
}

static json_object *part_json(const char *b64url, size_t n)
{
	char std[4096];
	uint8_t raw[4096];
	int len;
	size_t i;

	for (i = 0; i < n; i++)
		std[i] = b64url[i] == '-' ? '+' : b64url[i] == '_' ? '/' : b64url[i];
	while (i % 4)
		std[i++] = '=';
	len = EVP_DecodeBlock(raw, (unsigned char *)std, (int)i);
	assert_true(len > 0);
	raw[len] = '\0';
	return json_tokener_parse((char *)raw);
}

static void test_client_assertion(void **state)
{
	X509 *cert = NULL;
	struct secret *pem = make_pem(&cert), *jwt = NULL, *sig = NULL;
	const char *aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
	char why[256], *dot1, *dot2, *x5t_want = NULL;
	unsigned char thumb[20];
	unsigned tl = 0;
	json_object *h, *c;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	(void)state;
	assert_int_equal(
	    dmbyok_azure_client_assertion(pem, "app-1", aud, 1700000000, &jwt, why, sizeof(why)),
	    0);
	dot1 = strchr((char *)jwt->data, '.');
	dot2 = strrchr((char *)jwt->data, '.');
	assert_true(dot1 && dot2 && dot1 != dot2);
	h = part_json((char *)jwt->data, (size_t)(dot1 - (char *)jwt->data));
	c = part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	assert_string_equal(json_object_get_string(json_object_object_get(h, "alg")), "RS256");
	X509_digest(cert, EVP_sha1(), thumb, &tl);
	{
		struct secret *t = NULL;

		assert_int_equal(dmbyok_azure_base64url_secret(thumb, tl, &t), 0);
		x5t_want = strdup((char *)t->data);
		dmbyok_secret_free(t);
	}
	assert_string_equal(json_object_get_string(json_object_object_get(h, "x5t")), x5t_want);
	assert_string_equal(json_object_get_string(json_object_object_get(c, "aud")), aud);
	assert_string_equal(json_object_get_string(json_object_object_get(c, "iss")), "app-1");
	assert_string_equal(json_object_get_string(json_object_object_get(c, "sub")), "app-1");
	assert_int_equal(json_object_get_int64(json_object_object_get(c, "exp")),
	                 1700000000 + AZURE_ASSERTION_LIFETIME_S);
	assert_non_null(json_object_object_get(c, "jti"));
	/* The signature verifies under the certificate's public key. */
	assert_int_equal(dmbyok_azure_base64url_decode(dot2 + 1, strlen(dot2 + 1), &sig), 0);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(cert)),
	                 1);
	assert_int_equal(EVP_DigestVerify(md, sig->data, sig->size, jwt->data,
	                                  (size_t)(dot2 - (char *)jwt->data)),
	                 1);
	/* A file without the certificate is refused with a reason. */
	{
		struct secret *key_only = secret_of("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END "
		                                    "PRIVATE KEY-----\n");
		struct secret *none = NULL;

		assert_int_equal(
		    dmbyok_azure_client_assertion(key_only, "a", aud, 1, &none, why, sizeof(why)),
		    -EINVAL);
		assert_non_null(strstr(why, "PEM file with the certificate"));
		dmbyok_secret_free(key_only);
	}
	json_object_put(h);
	json_object_put(c);
	free(x5t_want);
	EVP_MD_CTX_free(md);
	X509_free(cert);
	dmbyok_secret_free(sig);
	dmbyok_secret_free(jwt);
	dmbyok_secret_free(pem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_ids),
		cmocka_unit_test(test_provider_choice_and_region),
		cmocka_unit_test(test_challenge),
		cmocka_unit_test(test_challenge_verify),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_base64url_and_form),
		cmocka_unit_test(test_token_answers),
		cmocka_unit_test(test_credential_order),
		cmocka_unit_test(test_client_assertion),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
