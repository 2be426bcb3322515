/* SPDX-License-Identifier: Apache-2.0 */
/* doctor: can this host run dmbyok, and may it use the customer's key? */
#include <stdio.h>
#include <string.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/token.h"

struct doctor {
	dmbyok_doctor_report_fn report;
	void *userdata;
	int worst;
};

/* Reports one check; keeps the worst failure for the caller's exit code. */
static int check(struct doctor *d, const char *name, int r, const char *detail,
                 const char *provider_said)
{
	d->report(name, r, detail, provider_said && *provider_said ? provider_said : NULL,
	          d->userdata);
	if (r < 0)
		d->worst = r;
	return r;
}

static void check_kernel(struct doctor *d)
{
	_cleanup_secret_ struct secret *probe = NULL;
	_cleanup_free_ char *driver = NULL;
	bool fast = false;
	int32_t serial = 0;
	int r;

	check(d, "device-mapper with crypt target", dmbyok_dm_check_kernel_support(), NULL, NULL);

	r = dmbyok_secret_new(DMBYOK_DEK_BYTES, &probe);
	if (r == 0)
		r = dmbyok_keyring_add_logon_key("dmbyok:doctor-probe", probe, &serial);
	dmbyok_keyring_destroy_key(serial);
	check(d, "kernel keyring (logon keys)", r, NULL, NULL);

	r = dmbyok_xts_driver(&driver, &fast);
	if (r == 0 && !fast)
		/* A warning, not a failure: it works, slowly. */
		check(d, "xts(aes) acceleration", 1, driver, "software only: expect slow I/O");
	else
		check(d, "xts(aes) acceleration", r == -ENOENT ? 0 : r,
		      driver ? driver : "not loaded yet (loads with dm-crypt)", NULL);
}

static void check_kms(struct doctor *d, const char *key_id, const struct kms_options *kms)
{
	_cleanup_kms_client_ struct kms_client *k = NULL;
	_cleanup_secret_ struct secret *dek = NULL, *again = NULL;
	_cleanup_free_ char *blob = NULL, *arn = NULL, *blob2 = NULL, *arn2 = NULL;
	struct kms_key_info info = { 0 };
	json_object *ctx = NULL;
	char detail[512] = "";
	struct kms_options o = *kms;
	int r;

	/* The provider the key's name belongs to, unless one was asked for. */
	if (!o.provider)
		o.provider = dmbyok_kms_provider_for_key(key_id);
	if (check(d, "KMS client and credentials", dmbyok_kms_client_new(&o, &k), NULL, NULL) < 0)
		return;

	r = dmbyok_kms_describe_key(k, key_id, &info);
	if (r == 0)
		snprintf(detail, sizeof(detail), "%s is %s", info.key_arn, info.key_state);
	check(d, "DescribeKey", r, detail, dmbyok_kms_last_error(k));
	dmbyok_kms_key_info_done(&info);

	/* A context no volume has: the round trip proves the calls, not a volume. */
	if (check(d, "encryption context",
	          dmbyok_context_new("00000000-0000-0000-0000-000000000000", NULL, 0, &ctx), NULL,
	          NULL) < 0)
		return;
	r = dmbyok_kms_generate_data_key(k, key_id, ctx, DMBYOK_DEK_BYTES, &dek, &blob, &arn);
	check(d, "GenerateDataKey", r, arn, dmbyok_kms_last_error(k));
	if (r == 0) {
		r = dmbyok_kms_decrypt(k, arn, blob, ctx, &again, NULL);
		if (r == 0 && (again->size != dek->size ||
		               !dmbyok_secret_equal(again->data, dek->data, dek->size)))
			r = -EBADMSG;
		check(d, "Decrypt", r, "round trip matches", dmbyok_kms_last_error(k));
		r = dmbyok_kms_reencrypt(k, blob, ctx, key_id, &blob2, &arn2);
		check(d, "ReEncrypt", r, arn2, dmbyok_kms_last_error(k));
	}
	json_object_put(ctx);
}

int dmbyok_doctor(const char *key_id, const struct kms_options *kms, dmbyok_doctor_report_fn report,
                  void *userdata)
{
	struct doctor d = { .report = report, .userdata = userdata };

	check_kernel(&d);
	if (key_id)
		check_kms(&d, key_id, kms);
	return d.worst;
}
