/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker of test-azure-secret-heap: a long-lived Key Vault client on the certificate
 * credential makes N GenerateDataKey + Decrypt calls over TLS through the emulator's proxy
 * (its tokens ended now and then, so it fetches new ones), and is freed. It writes the last
 * data keys to DIR/dek-N (from locked memory, with write(2)), plants one copy of a random
 * needle in a freed heap chunk (the positive control), says DIR/ready and waits to be
 * scanned by tests/lifecycle/memscan from outside.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/secret.h"

#define N_CALLS 20

static void die(const char *what)
{
	fprintf(stderr, "test-azure-secret-heap: FAIL: %s\n", what);
	exit(1);
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, p, n) != (ssize_t)n || close(fd) < 0)
		die("cannot write a file");
}

int main(int argc, char **argv)
{
	const char *key = "https://dmbyok-test.vault.azure.net/keys/heap", *dir, *ctl;
	struct kms_client *c = NULL;
	json_object *ctx;
	char cmd[1024];

#if defined(__SANITIZE_ADDRESS__)
	die("not meaningful under AddressSanitizer; CTest registers it only without");
#endif
	if (argc != 3)
		die("usage: test-azure-secret-heap DIR AZURE-EMULATORCTL");
	dir = argv[1];
	ctl = argv[2];
	dmbyok_log_setup("test-azure-secret-heap");
	if (dmbyok_harden_process() < 0)
		die("cannot harden the process");
	ctx = json_object_new_object();
	json_object_object_add(ctx, "dmbyok:volume", json_object_new_string("heap"));
	if (dmbyok_kms_client_new(&(struct kms_options){ .provider = "azure" }, &c) < 0)
		die("client");
	for (int i = 0; i < N_CALLS; i++) {
		_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
		_cleanup_free_ char *blob = NULL, *kid = NULL;
		int r;

		r = dmbyok_kms_generate_data_key(c, key, ctx, 64, &pt, &blob, &kid);
		if (r >= 0)
			r = dmbyok_kms_decrypt(c, kid, blob, ctx, &pt2, NULL);
		if (r < 0) {
			fprintf(stderr, "call %d: %s (%s)\n", i, dmbyok_strerror(r),
			        dmbyok_kms_last_error(c));
			die("KMS call");
		}
		if (i >= N_CALLS - 3) {
			char name[16];

			snprintf(name, sizeof(name), "dek-%d", i - (N_CALLS - 3));
			write_file(dir, name, pt->data, 64);
		}
		/* Entra ends the tokens now and then: the client fetches new ones. */
		if (i % 5 == 4) {
			snprintf(cmd, sizeof(cmd), "%s tokens --expire '*' >/dev/null", ctl);
			if (system(cmd) != 0)
				die("cannot expire the tokens");
		}
	}
	dmbyok_kms_client_free(c);
	json_object_put(ctx);

	/* The positive control: a freed small chunk keeps its content (glibc's tcache). */
	{
		uint8_t planted[64];
		char *freed = malloc(200);

		for (size_t i = 0; i < sizeof(planted); i++)
			planted[i] = (uint8_t)arc4random_uniform(256);
		write_file(dir, "planted", planted, sizeof(planted));
		if (!freed)
			die("oom");
		memcpy(freed + 40, planted, sizeof(planted));
		__asm__ volatile("" : : "r"(freed) : "memory");
		free(freed);
		dmbyok_secure_wipe(planted, sizeof(planted));
	}
	write_file(dir, "ready", "1", 1);
	pause();
	return 0;
}
