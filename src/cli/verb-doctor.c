/* SPDX-License-Identifier: Apache-2.0 */
/* doctor: can this host run dmbyok, and may it use the customer's key? */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/token.h"

static int report(const char *check, int r, const char *detail)
{
	printf("%-4s %-34s %s\n", r == 0 ? "ok" : "FAIL", check,
	       r == 0 ? (detail ? detail : "") : dmbyok_strerror(r));
	return r;
}

static int check_kernel(void)
{
	_cleanup_secret_ struct secret *probe = NULL;
	_cleanup_free_ char *driver = NULL;
	bool fast = false;
	int32_t serial = 0;
	int r, worst = 0;

	r = report("device-mapper with crypt target", dmbyok_dm_check_kernel_support(), NULL);
	worst = r < 0 ? r : worst;

	r = dmbyok_secret_new(DMBYOK_DEK_BYTES, &probe);
	if (r == 0)
		r = dmbyok_keyring_add_logon_key("dmbyok:doctor-probe", probe, &serial);
	dmbyok_keyring_destroy_key(serial);
	r = report("kernel keyring (logon keys)", r, NULL);
	worst = r < 0 ? r : worst;

	r = dmbyok_xts_driver(&driver, &fast);
	if (r == 0 && !fast) {
		printf("warn %-34s %s is software only: expect slow I/O\n", "xts(aes) acceleration",
		       driver);
	} else
		report("xts(aes) acceleration", r == -ENOENT ? 0 : r,
		       driver ? driver : "not loaded yet (loads with dm-crypt)");
	return worst;
}

static int check_kms(struct cli *c)
{
	_cleanup_kms_client_ struct kms_client *k = NULL;
	_cleanup_secret_ struct secret *dek = NULL, *again = NULL;
	_cleanup_free_ char *blob = NULL, *arn = NULL, *blob2 = NULL, *arn2 = NULL;
	struct kms_key_info info = { 0 };
	json_object *ctx = NULL;
	char detail[512];
	int r, worst = 0;

	r = dmbyok_kms_client_new(&c->kms, &k);
	if (report("KMS client and credentials", r, NULL) < 0)
		return r;

	r = dmbyok_kms_describe_key(k, c->key_id, &info);
	if (r == 0)
		snprintf(detail, sizeof(detail), "%s is %s", info.key_arn, info.key_state);
	if (report("DescribeKey", r, detail) < 0 && *dmbyok_kms_last_error(k))
		printf("     %s\n", dmbyok_kms_last_error(k));
	worst = r < 0 ? r : worst;
	dmbyok_kms_key_info_done(&info);

	r = dmbyok_context_new("00000000-0000-0000-0000-000000000000", NULL, 0, &ctx);
	if (r < 0)
		return r;
	r = dmbyok_kms_generate_data_key(k, c->key_id, ctx, DMBYOK_DEK_BYTES, &dek, &blob, &arn);
	if (report("GenerateDataKey", r, arn) < 0 && *dmbyok_kms_last_error(k))
		printf("     %s\n", dmbyok_kms_last_error(k));
	worst = r < 0 ? r : worst;
	if (r == 0) {
		r = dmbyok_kms_decrypt(k, arn, blob, ctx, &again, NULL);
		if (r == 0 && (again->size != dek->size ||
		               !dmbyok_secret_equal(again->data, dek->data, dek->size)))
			r = -EBADMSG;
		if (report("Decrypt", r, "round trip matches") < 0 && *dmbyok_kms_last_error(k))
			printf("     %s\n", dmbyok_kms_last_error(k));
		worst = r < 0 ? r : worst;

		r = dmbyok_kms_reencrypt(k, blob, ctx, c->key_id, &blob2, &arn2);
		if (report("ReEncrypt", r, arn2) < 0 && *dmbyok_kms_last_error(k))
			printf("     %s\n", dmbyok_kms_last_error(k));
		worst = r < 0 ? r : worst;
	}
	json_object_put(ctx);
	return worst;
}

int verb_doctor(struct cli *c)
{
	int r, q = 0;

	GUARD(cli_require_args(c, 0, 0, "doctor [--key KEY_ID]"));
	r = check_kernel();
	if (c->key_id)
		q = check_kms(c);
	else
		printf("skip KMS checks                         (give --key KEY_ID to run them)\n");
	return r < 0 ? r : q;
}
