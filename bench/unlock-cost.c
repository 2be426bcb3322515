/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unlock cost per volume, KMS excluded: the DEK is unwrapped once, then each round
 * activates the same volume (a) through dmbyok's fast path (header load, token binding
 * and key check value, dm-crypt table through the keyring) and (b) through libcryptsetup's
 * crypt_activate_by_volume_key, which is what `cryptsetup open --volume-key-file` does
 * (header load, LUKS2 digest PBKDF2, table). Same process, same VM, interleaved rounds;
 * teardown is not timed. Prints CPU and wall time per activation and their ratio.
 *   unlock-cost DEVICE [ROUNDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <libcryptsetup.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/volume.h"

static double now(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double header_cpu; /* the part of dmbyok's cost spent reading the LUKS2 header */

static int dmbyok_round(const char *dev, const struct secret *dek)
{
	_cleanup_volume_ struct volume *v = NULL;
	double c0 = now(CLOCK_PROCESS_CPUTIME_ID);

	GUARD(dmbyok_volume_load(dev, NULL, &v));
	header_cpu += now(CLOCK_PROCESS_CPUTIME_ID) - c0;
	GUARD(dmbyok_token_check_volume(v->token, v->uuid));
	GUARD(dmbyok_volume_check_binding(v));
	GUARD(dmbyok_token_verify_dek(v->token, dek, v->uuid, v->binding));
	return dmbyok_activate(v, "bench-dmbyok", v->activation_flags, dek);
}

static int stock_round(const char *dev, const struct secret *dek, struct crypt_device **ret)
{
	int r = crypt_init(ret, dev);

	if (r == 0)
		r = crypt_load(*ret, CRYPT_LUKS2, NULL);
	if (r == 0)
		r = crypt_activate_by_volume_key(*ret, "bench-stock", (const char *)dek->data,
		                                 dek->size, 0);
	return r < 0 ? r : 0;
}

int main(int argc, char **argv)
{
	_cleanup_volume_ struct volume *v = NULL;
	_cleanup_kms_client_ struct kms_client *kms = NULL;
	_cleanup_secret_ struct secret *dek = NULL;
	struct kms_options opts = { 0 };
	double cpu[2] = { 0 }, wall[2] = { 0 };
	int rounds = argc > 2 ? atoi(argv[2]) : 20, r;

	dmbyok_log_setup("unlock-cost");
	if (argc < 2 || rounds < 1) {
		fprintf(stderr, "usage: unlock-cost DEVICE [ROUNDS]\n");
		return 2;
	}
	if ((r = dmbyok_volume_load(argv[1], NULL, &v)) < 0 ||
	    (r = dmbyok_kms_client_new(&opts, &kms)) < 0 ||
	    (r = dmbyok_kms_decrypt(kms, v->token->key_arn, v->token->ciphertext, v->token->context,
	                            &dek, NULL)) < 0)
		return dmbyok_exit_code(r);

	for (int i = 0; i < rounds; i++) {
		struct crypt_device *cd = NULL;
		double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);

		if ((r = dmbyok_round(argv[1], dek)) < 0)
			return dmbyok_exit_code(r);
		cpu[0] += now(CLOCK_PROCESS_CPUTIME_ID) - c0;
		wall[0] += now(CLOCK_MONOTONIC) - w0;
		if ((r = dmbyok_dm_crypt_remove("bench-dmbyok")) < 0)
			return dmbyok_exit_code(r);

		c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
		r = stock_round(argv[1], dek, &cd);
		cpu[1] += now(CLOCK_PROCESS_CPUTIME_ID) - c0;
		wall[1] += now(CLOCK_MONOTONIC) - w0;
		if (r < 0) {
			fprintf(stderr, "crypt_activate_by_volume_key: %s\n", dmbyok_strerror(r));
			return 1;
		}
		crypt_deactivate(cd, "bench-stock");
		crypt_free(cd);
	}
	printf("  activation, %d rounds each, per volume (KMS excluded):\n", rounds);
	printf("    dmbyok fast path              %8.2f ms CPU  %8.2f ms wall\n",
	       1e3 * cpu[0] / rounds, 1e3 * wall[0] / rounds);
	printf("      of which reading the header %8.2f ms CPU\n", 1e3 * header_cpu / rounds);
	printf("    crypt_activate_by_volume_key  %8.2f ms CPU  %8.2f ms wall\n",
	       1e3 * cpu[1] / rounds, 1e3 * wall[1] / rounds);
	printf("  ratio: dmbyok is %.1fx cheaper in CPU, %.1fx in wall time\n", cpu[1] / cpu[0],
	       wall[1] / wall[0]);
	return 0;
}
