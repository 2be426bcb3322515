/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Azure Key Vault provider against the emulator (started by run-with-azure-emulator),
 * reached as a real vault: key ids https://dmbyok-test.vault.azure.net/keys/..., through
 * HTTPS_PROXY (the emulator's CONNECT proxy, TLS verified against the test CA). Every call
 * and error class, the four credentials (client secret, certificate, workload identity,
 * managed identity), token caching and refresh, retries, timeouts, Managed HSM's A256KW.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/encoding.h"
#include "dmbyok/error.h"
#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "../../src/kms/azure/azure.h"

#define TENANT       "5f0c3b6e-9a41-4d8e-b2a7-0d1e2f3a4b5c"
#define HOST_APP     "0a1b2c3d-0000-4000-8000-0000000000a1"
#define OTHER_APP    "0a1b2c3d-0000-4000-8000-0000000000b2"
#define WORKLOAD_APP "0a1b2c3d-0000-4000-8000-0000000000c3"
#define MI_USER      "7e000000-0000-4000-8000-0000000000c1"
#define VAULT        "https://dmbyok-test.vault.azure.net"
#define KEY_A        VAULT "/keys/volumes-a"
#define KEY_B        VAULT "/keys/volumes-b"
#define KEY_R        VAULT "/keys/revocable"
#define KEY_HSM      "https://dmbyok-test.managedhsm.azure.net/keys/hsm-oct"
/* Azure Stack Hub's naming: https://NAME.vault.REGION.FQDN, audience https://vault.REGION.FQDN */
#define STACK_DOMAIN "vault.local.azurestack.external"
#define STACK_AUD    "https://" STACK_DOMAIN
#define KEY_STACK    "https://stack." STACK_DOMAIN "/keys/stack"
#define MI_SYSTEM    "7e000000-0000-4000-8000-00000000005a"
#define NO_TENANT    "11111111-2222-4333-8444-555555555555"

static const char *url, *plain, *ca, *other_ca, *audit_path, *test_dir, *client_cert;
static char trail[512]; /* dmbyok's own audit file (DMBYOK_AUDIT_FILE) */

/* ---- the emulator's control API and audit log, through curl and jq ---- */

/* POST JSON (or, with fmt NULL, DELETE) to /_emulator/WHAT; fails the test unless 2xx. */
static void ctl(const char *what, const char *fmt, ...) _printf_(2, 3);
static void ctl(const char *what, const char *fmt, ...)
{
	char body[12288] = "", cmd[16384];
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(body, sizeof(body), fmt, ap);
		va_end(ap);
	}
	/* JSON without single quotes: safe inside the shell's '...'. */
	assert_null(strchr(body, '\''));
	snprintf(cmd, sizeof(cmd),
	         "curl -sS --fail-with-body --noproxy '*' -o %s/ctl.out "
	         "-H 'Content-Type: application/json' %s%s%s '%s/_emulator/%s'",
	         test_dir, fmt ? "-d '" : "-X DELETE", body, fmt ? "'" : "", plain, what);
	if (system(cmd) != 0)
		fail_msg("control %s %s failed", what, body);
}

static void fault(const char *op, const char *kind, int count, int latency_ms)
{
	ctl("faults", "{\"operation\":\"%s\",\"fault\":\"%s\",\"count\":%d,\"latency_ms\":%d}", op,
	    kind, count, latency_ms);
}

static void clear_faults(void)
{
	ctl("faults", NULL);
}

/* Records of `op` in the audit log (and, when given, whose `field` is `value`). */
static unsigned audit_count_where(const char *op, const char *field, const char *value)
{
	char cmd[1024];
	unsigned n = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
	         "jq -s '[.[] | select(.operation == \"%s\" and (\"%s\" == \"\" or "
	         "(.%s | tostring) == \"%s\"))] | length' %s",
	         op, field ? field : "", field ? field : "operation", value ? value : "",
	         audit_path);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (fscanf(p, "%u", &n) != 1)
		n = 0;
	pclose(p);
	return n;
}

/* A shell pipeline's first output line (at most size-1 bytes), without the newline. */
static void run(const char *cmd, char *out, size_t size)
{
	FILE *p = popen(cmd, "r");

	assert_non_null(p);
	if (!fgets(out, (int)size, p))
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	assert_int_equal(pclose(p), 0);
}

/* The emulator's Key Vault calls for one vault: "OPERATION:STATUS ..." in order. */
static void vault_calls(const char *host, char *out, size_t size)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
	         "jq -rs '[.[] | select(.host == \"%s\" and .operation != \"Token\" and "
	         ".operation != \"IMDS\") | \"\\(.operation):\\(.http_status)\"] | "
	         "join(\" \")' %s",
	         host, audit_path);
	run(cmd, out, size);
}

static unsigned audit_count(const char *op)
{
	return audit_count_where(op, NULL, NULL);
}

/* `want` more records of `op` than `before`: the emulator writes them after answering. */
static void audit_expect(const char *op, unsigned before, unsigned want)
{
	unsigned got = 0;

	for (unsigned waited = 0; waited <= 2000; waited += 100) {
		usleep(100000);
		got = audit_count(op) - before;
		if (got > want)
			break;
		if (got == want && waited >= 100)
			return;
	}
	fail_msg("audit log: %u %s calls, expected %u", got, op, want);
}

/* ---- clients ---- */

static void env_reset(void)
{
	static const char *const vars[] = { "AZURE_TENANT_ID",
		                            "AZURE_CLIENT_ID",
		                            "AZURE_CLIENT_SECRET",
		                            "AZURE_CLIENT_CERTIFICATE_PATH",
		                            "AZURE_FEDERATED_TOKEN_FILE",
		                            "AZURE_AUTHORITY_HOST" };

	for (size_t i = 0; i < ELEMENTSOF(vars); i++)
		unsetenv(vars[i]);
	/* The vault and login.microsoftonline.com through the emulator's proxy; IMDS direct. */
	setenv("HTTPS_PROXY", plain, 1);
	setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", plain, 1);
	setenv("REQUESTS_CA_BUNDLE", ca, 1);
}

static struct kms_client *client(const struct kms_options *o)
{
	struct kms_options opts = o ? *o : (struct kms_options){};
	struct kms_client *c = NULL;

	opts.provider = "azure";
	assert_int_equal(dmbyok_kms_client_new(&opts, &c), 0);
	return c;
}

static void secret_env(const char *app, const char *secret)
{
	env_reset();
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_CLIENT_ID", app, 1);
	setenv("AZURE_CLIENT_SECRET", secret, 1);
}

/* A client of the host's service principal (client secret). */
static struct kms_client *host_client(void)
{
	secret_env(HOST_APP, "host-secret");
	return client(NULL);
}

static json_object *context(void)
{
	json_object *c = json_object_new_object();

	json_object_object_add(c, "dmbyok:volume", json_object_new_string("vol-1"));
	return c;
}

/* r is `want`, and the provider's words say `said` (when given). */
static void expect_error(int r, int want, struct kms_client *c, const char *said)
{
	const char *words = dmbyok_kms_last_error(c);
	bool ok = r == want && (!said || strstr(words, said));

	if (!ok)
		fail_msg("%s (want %s) with \"%s\" (want \"%s\")", dmbyok_strerror(r),
		         dmbyok_strerror(want), words, said ? said : "anything");
}

/* A wrapped 64-byte key under `key`; the plaintext and the versioned kid if asked. */
static char *wrap(struct kms_client *c, const char *key, struct secret **ret_pt, char **ret_kid)
{
	struct secret *pt = NULL;
	char *ct = NULL, *kid = NULL;
	json_object *ctx = context();
	int r;

	r = dmbyok_kms_generate_data_key(c, key, ctx, 64, &pt, &ct, &kid);
	json_object_put(ctx);
	if (r < 0)
		fail_msg("generate_data_key %s: %s (%s)", key, dmbyok_strerror(r),
		         dmbyok_kms_last_error(c));
	assert_int_equal(pt->size, 64);
	if (ret_pt)
		*ret_pt = pt;
	else
		dmbyok_secret_free(pt);
	if (ret_kid)
		*ret_kid = kid;
	else
		free(kid);
	return ct;
}

static int unwrap(struct kms_client *c, const char *kid, const char *ct, struct secret **ret)
{
	return dmbyok_kms_decrypt(c, kid, ct, NULL, ret, NULL);
}

static void expect_unwraps(struct kms_client *c, const char *kid, const char *ct,
                           const struct secret *want)
{
	struct secret *pt = NULL;
	int r = unwrap(c, kid, ct, &pt);

	if (r < 0)
		fail_msg("decrypt %s: %s (%s)", kid, dmbyok_strerror(r), dmbyok_kms_last_error(c));
	assert_int_equal(pt->size, want->size);
	assert_memory_equal(pt->data, want->data, want->size);
	dmbyok_secret_free(pt);
}

static int setup(void **state)
{
	(void)state;
	ctl("create-key", "{\"key_id\":\"%s\"}", KEY_A);
	ctl("create-key", "{\"key_id\":\"%s\",\"key_size\":3072}", KEY_B);
	ctl("create-key", "{\"key_id\":\"%s\"}", KEY_R);
	ctl("create-key", "{\"key_id\":\"%s\",\"kty\":\"oct-HSM\",\"key_size\":256}", KEY_HSM);
	return 0;
}

/* ---- tests ---- */

static void test_round_trip_client_secret(void **state)
{
	struct kms_client *c;
	struct secret *dek = NULL;
	struct kms_key_info info = {};
	char *ct, *kid = NULL;
	unsigned tokens = audit_count("Token"), wraps = audit_count("WrapKey");

	(void)state;
	c = host_client();
	assert_string_equal(dmbyok_kms_client_provider(c), "azure");
	ct = wrap(c, KEY_A, &dek, &kid);
	/* The token records the exact version: https://VAULT/keys/NAME/32-hex. */
	assert_true(!strncmp(kid, KEY_A "/", strlen(KEY_A "/")));
	assert_int_equal(strlen(kid), strlen(KEY_A "/") + 32);
	expect_unwraps(c, kid, ct, dek);
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_A, &info), 0);
	assert_string_equal(info.key_arn, kid);
	assert_string_equal(info.key_state, "Enabled");
	assert_true(info.enabled);
	dmbyok_kms_key_info_done(&info);
	/* The versioned id describes that version. */
	assert_int_equal(dmbyok_kms_describe_key(c, kid, &info), 0);
	assert_string_equal(info.key_arn, kid);
	dmbyok_kms_key_info_done(&info);
	/* Decrypt needs the version that wrapped. */
	expect_error(unwrap(c, KEY_A, ct, &dek), -EINVAL, c, "names no version");
	audit_expect("Token", tokens, 1);
	audit_expect("WrapKey", wraps, 1);
	/* Every call reached the emulator through the proxy, over TLS, as the host. */
	assert_true(
	    audit_count_where("WrapKey", "principal", "0b1b2c3d-0000-4000-8000-0000000000a1") > 0);
	assert_true(audit_count_where("Token", "credential", "client-secret") >= 1);
	assert_true(audit_count_where("WrapKey", "via_proxy", "true") >= 1);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
	dmbyok_kms_client_free(c);
}

static void test_rotation_and_reencrypt(void **state)
{
	struct kms_client *c = host_client();
	struct secret *dek = NULL, *again = NULL;
	char *ct, *kid = NULL, *ct2 = NULL, *kid2 = NULL;
	unsigned unwraps;

	(void)state;
	ct = wrap(c, KEY_B, &dek, &kid);
	ctl("rotate", "{\"key_id\":\"%s\"}", KEY_B);
	/* The old blob still opens on its version; ReEncrypt moves it to the new one. */
	expect_unwraps(c, kid, ct, dek);
	usleep(300000); /* the emulator writes its record after answering */
	unwraps = audit_count("UnwrapKey");
	assert_int_equal(dmbyok_kms_reencrypt(c, NULL, ct, NULL, KEY_B, &ct2, &kid2), 0);
	assert_string_not_equal(kid, kid2);
	assert_true(!strncmp(kid2, KEY_B "/", strlen(KEY_B "/")));
	/* Newest version first (BadParameter), then the one that wrapped. */
	audit_expect("UnwrapKey", unwraps, 2);
	expect_unwraps(c, kid2, ct2, dek);
	/* A blob of another key is refused as a wrong token. */
	expect_error(dmbyok_kms_reencrypt(c, NULL, ct, NULL, KEY_A, &ct2, &kid2), -EBADMSG, c,
	             "no enabled version");
	/* Naming the version that wrapped it (the token's key_arn): one unwrap, no trials,
	 * and the blob may move to another key. */
	usleep(300000);
	unwraps = audit_count("UnwrapKey");
	free(TAKE_PTR(kid2));
	free(TAKE_PTR(ct2));
	assert_int_equal(dmbyok_kms_reencrypt(c, kid, ct, NULL, KEY_A, &ct2, &kid2), 0);
	assert_true(!strncmp(kid2, KEY_A "/", strlen(KEY_A "/")));
	audit_expect("UnwrapKey", unwraps, 1);
	expect_unwraps(c, kid2, ct2, dek);
	expect_error(unwrap(c, kid2, ct, &again), -EBADMSG, c, "BadParameter");
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
	free(ct2);
	free(kid2);
	dmbyok_kms_client_free(c);
}

static void test_revocation_classes(void **state)
{
	struct kms_client *c = host_client(), *other;
	struct secret *dek = NULL, *pt = NULL;
	struct kms_key_info info = {};
	char *ct, *kid = NULL, *ct2 = NULL;

	(void)state;
	ct = wrap(c, KEY_R, &dek, &kid);

	/* Disabled (the current version). */
	ctl("enabled", "{\"key_id\":\"%s\",\"enabled\":false}", KEY_R);
	expect_error(unwrap(c, kid, ct, &pt), -EKEYREVOKED, c, "Forbidden (KeyDisabled)");
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_R, &info), 0);
	assert_string_equal(info.key_state, "Disabled");
	assert_false(info.enabled);
	dmbyok_kms_key_info_done(&info);
	expect_error(dmbyok_kms_generate_data_key(c, KEY_R, NULL, 64, &pt, &ct2, NULL),
	             -EKEYREVOKED, c, "disabled");
	ctl("enabled", "{\"key_id\":\"%s\",\"enabled\":true}", KEY_R);
	expect_unwraps(c, kid, ct, dek);

	/* The host's access policy removed. */
	ctl("policy", "{\"vault\":\"dmbyok-test.vault.azure.net\",\"principal\":\"host\","
	              "\"permissions\":null}");
	expect_error(unwrap(c, kid, ct, &pt), -EKEYREVOKED, c, "Forbidden (AccessDenied)");
	expect_error(dmbyok_kms_describe_key(c, KEY_R, &info), -EKEYREVOKED, c,
	             "does not have keys get permission");
	ctl("policy", "{\"vault\":\"dmbyok-test.vault.azure.net\",\"principal\":\"host\","
	              "\"permissions\":[\"get\",\"list\",\"wrapKey\",\"unwrapKey\"]}");
	expect_unwraps(c, kid, ct, dek);

	/* Another principal, never granted. */
	secret_env(OTHER_APP, "other-secret");
	other = client(NULL);
	expect_error(unwrap(other, kid, ct, &pt), -EKEYREVOKED, other, "AccessDenied");
	dmbyok_kms_client_free(other);

	/* Soft-deleted: revoked; DescribeKey says so; recovered: back. */
	ctl("delete", "{\"key_id\":\"%s\"}", KEY_R);
	expect_error(unwrap(c, kid, ct, &pt), -EKEYREVOKED, c, "KeyNotFound");
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_R, &info), 0);
	assert_string_equal(info.key_state, "SoftDeleted");
	assert_false(info.enabled);
	dmbyok_kms_key_info_done(&info);
	ctl("recover", "{\"key_id\":\"%s\"}", KEY_R);
	expect_unwraps(c, kid, ct, dek);

	/* Deleted and purged: gone for good, -ENOENT as for the other providers. */
	ctl("delete", "{\"key_id\":\"%s\"}", KEY_R);
	ctl("purge", "{\"key_id\":\"%s\"}", KEY_R);
	expect_error(unwrap(c, kid, ct, &pt), -EKEYREVOKED, c, "KeyNotFound");
	expect_error(dmbyok_kms_describe_key(c, KEY_R, &info), -ENOENT, c, NULL);
	expect_error(dmbyok_kms_describe_key(c, kid, &info), -ENOENT, c, NULL);
	ctl("create-key", "{\"key_id\":\"%s\"}", KEY_R);

	/* A key that never existed, named at format time: a typo (exit 2), not a revocation. */
	expect_error(
	    dmbyok_kms_generate_data_key(c, VAULT "/keys/no-such-key", NULL, 64, &pt, &ct2, NULL),
	    -EINVAL, c, "no Key Vault key");
	/* Not a key identifier at all. */
	expect_error(dmbyok_kms_generate_data_key(c, "https://example.com/secrets/x", NULL, 64, &pt,
	                                          &ct2, NULL),
	             -EINVAL, c, "not a Key Vault key identifier");
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
	dmbyok_kms_client_free(c);
}

static void test_transient_errors_and_retries(void **state)
{
	struct kms_options o = { .max_attempts = 3 };
	struct kms_client *c;
	struct secret *dek = NULL, *pt = NULL;
	char *ct, *kid = NULL;
	unsigned n;

	(void)state;
	secret_env(HOST_APP, "host-secret");
	c = client(&o);
	ct = wrap(c, KEY_A, &dek, &kid);

	/* Two throttled answers, then success: retried. */
	n = audit_count("UnwrapKey");
	fault("UnwrapKey", "throttle", 2, 0);
	expect_unwraps(c, kid, ct, dek);
	audit_expect("UnwrapKey", n, 3);
	/* Throttled throughout: transient after 3 attempts. */
	n = audit_count("UnwrapKey");
	fault("UnwrapKey", "throttle", 3, 0);
	expect_error(unwrap(c, kid, ct, &pt), -EAGAIN, c, "Throttled");
	audit_expect("UnwrapKey", n, 3);
	fault("UnwrapKey", "http503", 3, 0);
	expect_error(unwrap(c, kid, ct, &pt), -EREMOTEIO, c, "ServiceUnavailable");
	fault("UnwrapKey", "http500", 3, 0);
	expect_error(unwrap(c, kid, ct, &pt), -EREMOTEIO, c, "InternalServerError");
	fault("UnwrapKey", "http504", 3, 0);
	expect_error(unwrap(c, kid, ct, &pt), -ETIMEDOUT, c, "GatewayTimeout");
	fault("UnwrapKey", "reset", -1, 0);
	expect_error(unwrap(c, kid, ct, &pt), -ECONNRESET, c, "cannot reach");
	clear_faults();
	/* One reset, then an answer. */
	fault("UnwrapKey", "reset", 1, 0);
	expect_unwraps(c, kid, ct, dek);
	clear_faults();
	for (int r = 0; r < 3; r++) /* the retry quota refills on successes */
		expect_unwraps(c, kid, ct, dek);
	dmbyok_kms_client_free(c);

	/* A hanging vault: the per-attempt timeout. */
	o.timeout_ms = 700;
	o.max_attempts = 2;
	secret_env(HOST_APP, "host-secret");
	c = client(&o);
	fault("UnwrapKey", "hang", 2, 3000);
	expect_error(unwrap(c, kid, ct, &pt), -ETIMEDOUT, c, "cannot reach");
	clear_faults();
	dmbyok_kms_client_free(c);

	/* The token endpoint down: transient, not credentials. */
	c = host_client();
	fault("Token", "http503", 3, 0);
	expect_error(unwrap(c, kid, ct, &pt), -EREMOTEIO, c, "token endpoint");
	clear_faults();
	expect_unwraps(c, kid, ct, dek);
	dmbyok_kms_client_free(c);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
}

static void test_credentials_rejected(void **state)
{
	struct kms_client *c;
	struct secret *pt = NULL;
	struct kms_key_info info = {};
	unsigned n;

	(void)state;
	secret_env(HOST_APP, "wrong-secret");
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYREJECTED, c, "AADSTS7000215");
	assert_int_equal(dmbyok_error_class(-EKEYREJECTED), DMBYOK_ERR_CREDENTIALS);
	dmbyok_kms_client_free(c);
	secret_env("0a1b2c3d-0000-4000-8000-00000000dead", "x");
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYREJECTED, c, "AADSTS700016");
	dmbyok_kms_client_free(c);
	secret_env(HOST_APP, "host-secret");
	setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000", 1);
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYREJECTED, c, "AADSTS90002");
	dmbyok_kms_client_free(c);

	/* 401 from the vault: a fresh token once, a second 401 is the credentials' fault. */
	c = host_client();
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_A, &info), 0);
	dmbyok_kms_key_info_done(&info);
	n = audit_count("Token");
	fault("GetKey", "unauthorized", 2, 0);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYEXPIRED, c, "Unauthorized");
	audit_expect("Token", n, 1);
	/* One 401 (a token revoked early): refreshed and carried on. */
	n = audit_count("Token");
	fault("GetKey", "unauthorized", 1, 0);
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_A, &info), 0);
	dmbyok_kms_key_info_done(&info);
	audit_expect("Token", n, 1);
	dmbyok_kms_client_free(c);

	/* No managed identity on this "VM": no credentials at all. */
	env_reset();
	ctl("imds", "{\"system_assigned\":false}");
	c = client(NULL);
	expect_error(dmbyok_kms_decrypt(c, KEY_A "/00000000000000000000000000000000",
	                                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, &pt, NULL),
	             -ENOKEY, c, "Identity not found");
	ctl("imds", "{\"system_assigned\":true}");
	dmbyok_kms_client_free(c);
}

/* A round trip with whatever credential the environment selects; returns the kid. */
static void round_trip(const char *key, const char *source)
{
	struct kms_client *c = client(NULL);
	struct secret *dek = NULL;
	char *ct, *kid = NULL;

	assert_string_equal(dmbyok_azure_credential_source(), source);
	ct = wrap(c, key, &dek, &kid);
	expect_unwraps(c, kid, ct, dek);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
	dmbyok_kms_client_free(c);
}

static void test_certificate_credential(void **state)
{
	struct kms_client *c;
	struct kms_key_info info = {};
	char pem[8192];
	FILE *f = fopen(client_cert, "re");
	size_t n;
	unsigned ok;

	(void)state;
	assert_non_null(f);
	n = fread(pem, 1, sizeof(pem) - 1, f);
	fclose(f);
	pem[n] = '\0';
	env_reset();
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_CLIENT_ID", HOST_APP, 1);
	setenv("AZURE_CLIENT_CERTIFICATE_PATH", client_cert, 1);
	/* Not registered yet: Entra refuses the assertion's thumbprint. */
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYREJECTED, c, "AADSTS700027");
	dmbyok_kms_client_free(c);
	{
		/* JSON-escape the PEM's newlines for the control API. */
		char esc[16384], *o = esc;

		for (const char *p = pem; *p; p++) {
			if (*p == '\n') {
				*o++ = '\\';
				*o++ = 'n';
			} else {
				*o++ = *p;
			}
		}
		*o = '\0';
		ctl("certificate", "{\"client_id\":\"%s\",\"certificate\":\"%s\"}", HOST_APP, esc);
	}
	ok = audit_count_where("Token", "credential", "client-certificate");
	round_trip(KEY_A, "client-certificate");
	assert_int_equal(audit_count_where("Token", "credential", "client-certificate"), ok + 1);
	/* An unreadable certificate file is a missing credential, said so. */
	setenv("AZURE_CLIENT_CERTIFICATE_PATH", "/nonexistent/client.pem", 1);
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -ENOKEY, c,
	             "AZURE_CLIENT_CERTIFICATE_PATH");
	dmbyok_kms_client_free(c);
}

static void test_workload_identity(void **state)
{
	char path[512], cmd[1024];
	struct kms_client *c;
	struct kms_key_info info = {};
	unsigned ok;

	(void)state;
	snprintf(path, sizeof(path), "%s/federated-token", test_dir);
	snprintf(cmd, sizeof(cmd),
	         "%s/azure-emulatorctl federated-token system:serviceaccount:dmbyok:dmbyokd >%s",
	         TEST_SOURCE_DIR, path);
	assert_int_equal(system(cmd), 0);
	env_reset();
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_CLIENT_ID", WORKLOAD_APP, 1);
	setenv("AZURE_FEDERATED_TOKEN_FILE", path, 1);
	ok = audit_count_where("Token", "credential", "workload-identity");
	round_trip(KEY_A, "workload-identity");
	assert_int_equal(audit_count_where("Token", "credential", "workload-identity"), ok + 1);
	/* Another service account's token: no federated credential matches it. */
	snprintf(cmd, sizeof(cmd),
	         "%s/azure-emulatorctl federated-token system:serviceaccount:default:other >%s",
	         TEST_SOURCE_DIR, path);
	assert_int_equal(system(cmd), 0);
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYREJECTED, c, "AADSTS70021");
	dmbyok_kms_client_free(c);
}

static void test_managed_identity(void **state)
{
	struct kms_client *c;
	struct secret *pt = NULL, *dek = NULL;
	char *ct, *kid = NULL;
	unsigned n = audit_count("IMDS");

	(void)state;
	env_reset();
	round_trip(KEY_A, "managed-identity");
	assert_int_equal(audit_count("IMDS"), n + 1);
	/* AZURE_CLIENT_ID alone selects a user-assigned identity. */
	setenv("AZURE_CLIENT_ID", MI_USER, 1);
	n = audit_count_where("IMDS", "client_id", MI_USER);
	round_trip(KEY_A, "managed-identity");
	assert_int_equal(audit_count_where("IMDS", "client_id", MI_USER), n + 1);
	/* Its access policy removed: revoked. */
	c = client(NULL);
	ct = wrap(c, KEY_A, &dek, &kid);
	ctl("policy", "{\"vault\":\"dmbyok-test.vault.azure.net\",\"principal\":\"mi-user\","
	              "\"permissions\":null}");
	expect_error(unwrap(c, kid, ct, &pt), -EKEYREVOKED, c, "AccessDenied");
	ctl("policy", "{\"vault\":\"dmbyok-test.vault.azure.net\",\"principal\":\"mi-user\","
	              "\"permissions\":[\"get\",\"list\",\"wrapKey\",\"unwrapKey\"]}");
	expect_unwraps(c, kid, ct, dek);
	dmbyok_kms_client_free(c);
	/* An unknown user-assigned identity. */
	setenv("AZURE_CLIENT_ID", "7e000000-0000-4000-8000-00000000ffff", 1);
	c = client(NULL);
	expect_error(unwrap(c, kid, ct, &pt), -ENOKEY, c, "Identity not found");
	dmbyok_kms_client_free(c);
	/* A named IMDS endpoint that does not answer: transient, not "no credentials". */
	setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9", 1);
	c = client(NULL);
	expect_error(unwrap(c, kid, ct, &pt), -ECONNREFUSED, c, "managed identity endpoint");
	dmbyok_kms_client_free(c);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
}

static void test_token_cache_and_refresh(void **state)
{
	struct kms_client *c = host_client();
	struct secret *dek = NULL;
	char *ct, *kid = NULL;
	unsigned tokens;

	(void)state;
	ct = wrap(c, KEY_A, &dek, &kid);
	/* Many calls, one token. */
	tokens = audit_count("Token");
	for (int i = 0; i < 10; i++)
		expect_unwraps(c, kid, ct, dek);
	audit_expect("Token", tokens, 0);
	/* Tokens ended by Entra: the vault's 401 fetches a fresh one and the call succeeds. */
	ctl("tokens", "{\"expire\":\"*\"}");
	expect_unwraps(c, kid, ct, dek);
	audit_expect("Token", tokens, 1);
	dmbyok_kms_client_free(c);

	/* Short-lived tokens are refreshed before they expire (a quarter of the lifetime). */
	ctl("tokens", "{\"lifetime\":4}");
	c = host_client();
	tokens = audit_count("Token");
	expect_unwraps(c, kid, ct, dek);
	expect_unwraps(c, kid, ct, dek);
	audit_expect("Token", tokens, 1);
	sleep(3);
	expect_unwraps(c, kid, ct, dek);
	audit_expect("Token", tokens, 2);
	ctl("tokens", "{\"lifetime\":3599}");
	dmbyok_kms_client_free(c);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
}

static void test_authority_host_and_tls(void **state)
{
	struct kms_client *c;
	struct kms_key_info info = {};
	char direct[256];
	unsigned n = audit_count_where("Token", "via_proxy", "false");

	(void)state;
	/* AZURE_AUTHORITY_HOST: the token endpoint asked directly (no proxy for it). */
	secret_env(HOST_APP, "host-secret");
	setenv("AZURE_AUTHORITY_HOST", url, 1);
	setenv("NO_PROXY", "127.0.0.1", 1);
	round_trip(KEY_A, "client-secret");
	assert_int_equal(audit_count_where("Token", "via_proxy", "false"), n + 1);
	/*
	 * A vault named by its address (a test vault): an Azure identifier all the same, but
	 * its challenge names https://vault.azure.net, a domain 127.0.0.1 is not in, so no
	 * token is sent to it (Azure's SDK refuses it too). Named vaults: test_azure_stack.
	 */
	snprintf(direct, sizeof(direct), "%s/keys/local", url);
	assert_string_equal(dmbyok_kms_provider_for_key(direct), "azure");
	ctl("create-key", "{\"key_id\":\"%s\"}", direct);
	n = audit_count("Token");
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, direct, &info), -EKEYREJECTED, c, "not its domain");
	dmbyok_kms_client_free(c);
	audit_expect("Token", n, 0);
	unsetenv("NO_PROXY");
	/* Plain http for a credential is refused, except to loopback. */
	setenv("AZURE_AUTHORITY_HOST", "http://login.example.com", 1);
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EINVAL, c, "https://");
	dmbyok_kms_client_free(c);
	/* TLS is always verified: another CA fails, and says to check the bundle. */
	secret_env(HOST_APP, "host-secret");
	setenv("REQUESTS_CA_BUNDLE", other_ca, 1);
	c = client(NULL);
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EINVAL, c, NULL);
	dmbyok_kms_client_free(c);
	/* --endpoint and --profile mean nothing to Key Vault. */
	secret_env(HOST_APP, "host-secret");
	{
		struct kms_client *x = NULL;

		assert_int_equal(
		    dmbyok_kms_client_new(
		        &(struct kms_options){ .provider = "azure", .endpoint = url }, &x),
		    -EINVAL);
		assert_int_equal(
		    dmbyok_kms_client_new(
		        &(struct kms_options){ .provider = "azure", .profile = "p" }, &x),
		    -EINVAL);
	}
}

static void test_managed_hsm_a256kw(void **state)
{
	struct kms_client *c = host_client();
	struct secret *dek = NULL;
	struct kms_key_info info = {};
	char *ct, *kid = NULL;
	unsigned hsm_tokens =
	    audit_count_where("Token", "scope", "https://managedhsm.azure.net/.default");
	uint8_t raw[128];

	(void)state;
	ct = wrap(c, KEY_HSM, &dek, &kid);
	/* A256KW of 64 bytes: 72. */
	assert_int_equal(dmbyok_base64_decode(ct, strlen(ct), raw, sizeof(raw)), 72);
	expect_unwraps(c, kid, ct, dek);
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_HSM, &info), 0);
	assert_string_equal(info.key_state, "Enabled");
	dmbyok_kms_key_info_done(&info);
	/* Managed HSM's own audience, in addition to the vault token the client holds. */
	assert_true(audit_count_where("Token", "scope", "https://managedhsm.azure.net/.default") >
	            hsm_tokens);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
	dmbyok_kms_client_free(c);
}

static void test_azure_stack(void **state)
{
	struct kms_client *c;
	struct secret *dek = NULL;
	struct kms_key_info info = {};
	char *ct, *kid = NULL, calls[1024];
	unsigned stack_tokens = audit_count_where("IMDS", "resource", STACK_AUD),
	         public_tokens = audit_count_where("IMDS", "resource", "https://vault.azure.net");

	(void)state;
	/* The host's managed identity, and no setting at all: the vault's challenge says. */
	env_reset();
	ctl("create-key", "{\"key_id\":\"%s\"}", KEY_STACK);
	c = client(NULL);
	ct = wrap(c, KEY_STACK, &dek, &kid);
	assert_true(!strncmp(kid, KEY_STACK "/", strlen(KEY_STACK "/")));
	/* The audience is cached in the client: no second challenge. */
	expect_unwraps(c, kid, ct, dek);
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_STACK, &info), 0);
	assert_string_equal(info.key_state, "Enabled");
	dmbyok_kms_key_info_done(&info);
	dmbyok_kms_client_free(c);
	/* A new client (an unlock at boot): its first call meets the challenge. */
	c = client(NULL);
	expect_unwraps(c, kid, ct, dek);
	dmbyok_kms_client_free(c);
	vault_calls("stack." STACK_DOMAIN, calls, sizeof(calls));
	printf("stack vault calls: %s\n", calls);
	assert_string_equal(calls, "GetKey:401 GetKey:200 WrapKey:200 UnwrapKey:200 GetKey:200 "
	                           "UnwrapKey:401 UnwrapKey:200");
	/* Tokens for the vault's audience only, one per client; the refused calls had none. */
	assert_int_equal(audit_count_where("IMDS", "resource", STACK_AUD), stack_tokens + 2);
	assert_int_equal(audit_count_where("IMDS", "resource", "https://vault.azure.net"),
	                 public_tokens);
	assert_int_equal(audit_count_where("UnwrapKey", "principal", MI_SYSTEM) >= 2, 1);
	dmbyok_secret_free(dek);
	free(ct);
	free(kid);
}

static void test_challenge_refused(void **state)
{
	struct kms_client *c;
	struct kms_key_info info = {};
	char calls[1024];
	unsigned imds = audit_count("IMDS"), tokens;
	int r;

	(void)state;
	/* A vault whose challenge names a foreign domain: no token is asked for or sent. */
	env_reset();
	ctl("create-key", "{\"key_id\":\"https://foreign.%s/keys/k\"}", STACK_DOMAIN);
	ctl("challenge", "{\"vault\":\"foreign.%s\",\"resource\":\"https://vault.example.com\"}",
	    STACK_DOMAIN);
	c = client(NULL);
	r = dmbyok_kms_describe_key(c, "https://foreign." STACK_DOMAIN "/keys/k", &info);
	expect_error(r, -EKEYREJECTED, c, "asks for tokens for \"https://vault.example.com\"");
	expect_error(r, -EKEYREJECTED, c, "not its domain");
	assert_int_equal(dmbyok_error_class(r), DMBYOK_ERR_CREDENTIALS);
	dmbyok_kms_client_free(c);
	assert_int_equal(audit_count("IMDS"), imds);
	vault_calls("foreign." STACK_DOMAIN, calls, sizeof(calls));
	assert_string_equal(calls, "GetKey:401");

	/* A vault of another tenant than AZURE_TENANT_ID's: not silently another tenant. */
	secret_env(HOST_APP, "host-secret");
	ctl("create-key", "{\"key_id\":\"https://tenant.%s/keys/k\"}", STACK_DOMAIN);
	ctl("challenge", "{\"vault\":\"tenant.%s\",\"tenant\":\"%s\"}", STACK_DOMAIN, NO_TENANT);
	tokens = audit_count("Token");
	c = client(NULL);
	r = dmbyok_kms_describe_key(c, "https://tenant." STACK_DOMAIN "/keys/k", &info);
	expect_error(r, -EKEYREJECTED, c,
	             "belongs to tenant " NO_TENANT ", AZURE_TENANT_ID says " TENANT);
	assert_int_equal(dmbyok_error_class(r), DMBYOK_ERR_CREDENTIALS);
	dmbyok_kms_client_free(c);
	assert_int_equal(audit_count("Token"), tokens);
	/* The same vault's own tenant: followed. */
	ctl("challenge", "{\"vault\":\"tenant.%s\"}", STACK_DOMAIN);
	c = client(NULL);
	assert_int_equal(
	    dmbyok_kms_describe_key(c, "https://tenant." STACK_DOMAIN "/keys/k", &info), 0);
	dmbyok_kms_key_info_done(&info);
	dmbyok_kms_client_free(c);
	assert_true(audit_count_where("Token", "scope", STACK_AUD "/.default") >= 1);

	/* A known cloud's vault that moved tenant: its 401's challenge is refused, no retry. */
	c = host_client();
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_A, &info), 0);
	dmbyok_kms_key_info_done(&info);
	ctl("challenge", "{\"vault\":\"dmbyok-test.vault.azure.net\",\"tenant\":\"%s\"}",
	    NO_TENANT);
	fault("GetKey", "unauthorized", 1, 0);
	tokens = audit_count("Token");
	expect_error(dmbyok_kms_describe_key(c, KEY_A, &info), -EKEYREJECTED, c,
	             "belongs to tenant " NO_TENANT);
	assert_int_equal(audit_count("Token"), tokens);
	ctl("challenge", "{\"vault\":\"dmbyok-test.vault.azure.net\"}");
	clear_faults();
	assert_int_equal(dmbyok_kms_describe_key(c, KEY_A, &info), 0);
	dmbyok_kms_key_info_done(&info);
	dmbyok_kms_client_free(c);
}

/*
 * dmbyok's audit entries for Key Vault calls carry the request id Key Vault answered with
 * (x-ms-request-id), the one the vault's own log has: every id in dmbyok's trail is a Key
 * Vault call of that vault in the emulator's audit, and every successful call has one.
 */
static void test_request_ids(void **state)
{
	char cmd[2048], out[256];
	unsigned with_id = 0, failed_with_id = 0, ok_without = 0;

	(void)state;
	snprintf(cmd, sizeof(cmd),
	         "jq -r 'select(.provider == \"azure\" and .request_id != null) | "
	         "\"\\(.request_id) \\(.region)\"' %s | sort -u >%s/ours && "
	         "jq -r 'select(.operation != \"Token\" and .operation != \"IMDS\") | "
	         "\"\\(.request_id) \\(.host)\"' %s | sort -u >%s/theirs && "
	         "comm -23 %s/ours %s/theirs | wc -l",
	         trail, test_dir, audit_path, test_dir, test_dir, test_dir);
	run(cmd, out, sizeof(out));
	assert_string_equal(out, "0");
	snprintf(cmd, sizeof(cmd),
	         "jq -rs '[.[] | select(.provider == \"azure\")] | "
	         "[([.[] | select(.request_id != null)] | length), "
	         "([.[] | select(.request_id != null and .result != \"ok\")] | length), "
	         "([.[] | select(.request_id == null and .result == \"ok\")] | length)] | "
	         "map(tostring) | join(\" \")' %s",
	         trail);
	run(cmd, out, sizeof(out));
	assert_int_equal(sscanf(out, "%u %u %u", &with_id, &failed_with_id, &ok_without), 3);
	printf("dmbyok's audit: %u Key Vault calls with Key Vault's request id (%u failed), %u "
	       "successful ones without\n",
	       with_id, failed_with_id, ok_without);
	assert_true(with_id >= 50);
	/* Refusals (403, 404, 400, 401) are traceable in the vault's log too. */
	assert_true(failed_with_id >= 10);
	assert_int_equal(ok_without, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_client_secret),
		cmocka_unit_test(test_rotation_and_reencrypt),
		cmocka_unit_test(test_revocation_classes),
		cmocka_unit_test(test_transient_errors_and_retries),
		cmocka_unit_test(test_credentials_rejected),
		cmocka_unit_test(test_certificate_credential),
		cmocka_unit_test(test_workload_identity),
		cmocka_unit_test(test_managed_identity),
		cmocka_unit_test(test_token_cache_and_refresh),
		cmocka_unit_test(test_authority_host_and_tls),
		cmocka_unit_test(test_managed_hsm_a256kw),
		cmocka_unit_test(test_azure_stack),
		cmocka_unit_test(test_challenge_refused),
		cmocka_unit_test(test_request_ids),
	};

	const struct {
		const char **value;
		const char *name;
	} from_env[] = {
		{ &url, "DMBYOK_TEST_AZURE_URL" },
		{ &plain, "DMBYOK_TEST_AZURE_PLAIN" },
		{ &ca, "DMBYOK_TEST_CA" },
		{ &other_ca, "DMBYOK_TEST_OTHER_CA" },
		{ &audit_path, "DMBYOK_TEST_AUDIT" },
		{ &test_dir, "DMBYOK_TEST_DIR" },
		{ &client_cert, "DMBYOK_TEST_CLIENT_CERT" },
	};

	for (size_t i = 0; i < ELEMENTSOF(from_env); i++) {
		*from_env[i].value = getenv(from_env[i].name);
		if (!*from_env[i].value || !**from_env[i].value) {
			fprintf(stderr,
			        "%s is not set: run this through run-with-azure-emulator.\n",
			        from_env[i].name);
			return 1;
		}
	}
	/* dmbyok's own audit file, before the first KMS call (read once per process). */
	snprintf(trail, sizeof(trail), "%s/dmbyok-audit.jsonl", test_dir);
	setenv("DMBYOK_AUDIT_FILE", trail, 1);
	{
		char conf[512];

		snprintf(conf, sizeof(conf), "%s/no-such-audit.conf", test_dir);
		setenv("DMBYOK_AUDIT_CONF", conf, 1);
	}
	return cmocka_run_group_tests(tests, setup, NULL);
}
