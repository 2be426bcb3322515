/* SPDX-License-Identifier: Apache-2.0 */
/* doctor: can this host run dmbyok, and may it use the customer's key? */
#include <stdio.h>
#include <string.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/token.h"
#include "dmbyok/volume.h"
#include "internal.h"

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
		r = dmbyok_kms_reencrypt(k, arn, blob, ctx, key_id, &blob2, &arn2);
		check(d, "ReEncrypt", r, arn2, dmbyok_kms_last_error(k));
	}
	json_object_put(ctx);
}

/* The volume's own grant, as the KMS lists it (needs kms:ListGrants). */
static void check_grant(struct doctor *d, struct kms_client *k, const struct dmbyok_token *t)
{
	struct kms_grant_info g = { 0 };
	char detail[512] = "";
	int r;

	dmbyok_log_quiet_push();
	r = dmbyok_kms_find_grant(k, t->key_arn, t->grant_id, &g);
	dmbyok_log_quiet_pop();
	if (r == -EKEYREVOKED) /* the host may not list grants: a fact, not a fault */
		check(d, "its grant", 1, t->grant_id,
		      "not checked: this host may not kms:ListGrants");
	else if (r == -ENOENT)
		check(d, "its grant", r, NULL,
		      "revoked or retired: only the key policy can let this host unwrap now");
	else if (r < 0)
		check(d, "its grant", r, NULL, dmbyok_kms_last_error(k));
	else if (!g.context_equals || !json_object_equal(g.context_equals, t->context))
		check(d, "its grant", 1, t->grant_id,
		      "its EncryptionContextEquals is not this volume's context");
	else {
		snprintf(detail, sizeof(detail), "%s for %s, this volume's context only",
		         g.grant_id, g.grantee);
		check(d, "its grant", 0, detail, NULL);
	}
	dmbyok_kms_grant_info_done(&g);
}

/*
 * Whether anything but the volume's grant lets this host Decrypt under the key: a Decrypt
 * of its blob under a context no grant names. KMS authorizes before it decrypts, so the key
 * policy or IAM allowing it shows as InvalidCiphertext (-EBADMSG), nothing allowing it as
 * AccessDenied. No plaintext can come back: the blob is bound to another context.
 */
static void check_access(struct doctor *d, struct kms_client *k, const struct dmbyok_token *t,
                         int unwrapped)
{
	_cleanup_secret_ struct secret *never = NULL;
	json_object *ctx = NULL;
	char detail[512] = "";
	int r;

	if (strcmp(dmbyok_kms_client_provider(k), "aws") != 0)
		return; /* Cloud KMS and Key Vault grant per key, through IAM */
	if (json_object_deep_copy(t->context, &ctx, NULL) < 0 || !ctx)
		return (void)check(d, "where this host's access comes from", -ENOMEM, NULL, NULL);
	json_object_object_add(ctx, "dmbyok:doctor", json_object_new_string("access-probe"));
	dmbyok_log_quiet_push();
	r = dmbyok_kms_decrypt(k, t->key_arn, t->ciphertext, ctx, &never, NULL);
	dmbyok_log_quiet_pop();
	json_object_put(ctx);
	if (r == -EBADMSG && t->grant_id)
		check(d, "where this host's access comes from", 1, "the key policy or IAM",
		      "they let this host Decrypt under any context: revoking its grant alone "
		      "would not lock this volume");
	else if (r == -EBADMSG)
		check(d, "where this host's access comes from", 0,
		      "the key policy or IAM (no per-volume grant)", NULL);
	else if (r == -EKEYREVOKED && t->grant_id) {
		snprintf(detail, sizeof(detail),
		         "its grant %s only: revoking it locks this volume and no other",
		         t->grant_id);
		check(d, "where this host's access comes from", unwrapped < 0 ? unwrapped : 0,
		      detail, NULL);
	} else if (r == -EKEYREVOKED)
		check(d, "where this host's access comes from", unwrapped < 0 ? unwrapped : 0,
		      unwrapped < 0 ? "nowhere"
		                    : "the key policy or IAM, for this volume's context",
		      NULL);
	else
		check(d, "where this host's access comes from", r < 0 ? r : -EPROTO, NULL,
		      dmbyok_kms_last_error(k));
}

static void check_volume(struct doctor *d, const char *device, const char *header,
                         const struct kms_options *kms)
{
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_kms_client_ struct kms_client *k = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	char detail[512] = "";
	int r;

	r = dmbyok_volume_load(device, header, &v);
	if (r == 0)
		snprintf(detail, sizeof(detail), "volume %s under %s", v->uuid, v->token->key_arn);
	if (check(d, "volume header and token", r, detail, NULL) < 0)
		return;
	if (check(d, "token bound to this header", dmbyok_unwrap_check(v, kms), NULL, NULL) < 0)
		return;
	if (check(d, "KMS client and credentials", dmbyok_kms_client_for_token(kms, v->token, &k),
	          NULL, NULL) < 0)
		return;
	dmbyok_log_quiet_push();
	r = dmbyok_unwrap_dek_with(k, v, &dek);
	dmbyok_log_quiet_pop();
	check(d, "unwrap its data key", r, "matches the token's key check value; wiped",
	      dmbyok_kms_last_error(k));
	dmbyok_secret_freep(&dek);
	if (v->token->grant_id)
		check_grant(d, k, v->token);
	check_access(d, k, v->token, r);
}

int dmbyok_doctor(const struct doctor_options *o, const struct kms_options *kms,
                  dmbyok_doctor_report_fn report, void *userdata)
{
	struct doctor d = { .report = report, .userdata = userdata };

	check_kernel(&d);
	if (o->key_id)
		check_kms(&d, o->key_id, kms);
	if (o->device)
		check_volume(&d, o->device, o->header, kms);
	return d.worst;
}
