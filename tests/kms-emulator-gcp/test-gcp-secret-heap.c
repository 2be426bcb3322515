/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secrets of the Google Cloud KMS provider must not outlive their use in ordinary memory: a
 * long-lived client on a service-account key makes N GenerateDataKey + Decrypt calls over
 * TLS (its tokens revoked and refreshed on the way) and is freed; then this process's heap
 * and anonymous writable mappings are scanned for the access tokens the emulator issued, the
 * service account's private key (PEM text and DER bytes) and the last data keys (raw, base64
 * -- the form :encrypt carries them in -- and hex). A positive control first proves the
 * scanner finds a planted copy. The scanner is tests/kms/test-secret-heap.c's. Runs under
 * run-with-gcp-emulator (TLS emulator).
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/secret.h"

#define N_CALLS      20
#define ARENA_SIZE   (1U << 20)
#define MAX_NEEDLES  64
#define MAX_MAPPINGS 4096

extern char **environ;

/* Needles live here, and the scanner skips this mapping. */
static uint8_t *arena;
static size_t arena_used;
static struct {
	const char *what;
	const uint8_t *p;
	size_t n;
} needles[MAX_NEEDLES];
static size_t n_needles;
static const char *test_dir, *endpoint, *ca;

static void die(const char *fmt, ...) _printf_(1, 2);
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("test-gcp-secret-heap: FAIL: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static uint8_t *arena_alloc(size_t n)
{
	uint8_t *p;

	if (arena_used + n > ARENA_SIZE)
		die("needle arena full");
	p = arena + arena_used;
	arena_used += n;
	return p;
}

static void needle_add(const char *what, const uint8_t *p, size_t n)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char hex[] = "0123456789abcdef";
	uint8_t *e, *h;
	size_t k = 0;

	if (n_needles + 3 > MAX_NEEDLES)
		die("too many needles");
	needles[n_needles++] = (typeof(needles[0])){ what, p, n };
	/* base64 (no padding: a prefix that any encoding of it contains) */
	e = arena_alloc(n / 3 * 4 + 4);
	for (size_t i = 0; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		for (int j = 3; j >= 0; j--)
			e[k++] = (uint8_t)b64[(v >> (6 * j)) & 63];
	}
	needles[n_needles++] = (typeof(needles[0])){ what, e, k };
	h = arena_alloc(2 * n);
	for (size_t i = 0; i < n; i++) {
		h[2 * i] = (uint8_t)hex[p[i] >> 4];
		h[2 * i + 1] = (uint8_t)hex[p[i] & 15];
	}
	needles[n_needles++] = (typeof(needles[0])){ what, h, 2 * n };
}

/* Returns how many needles were found in [heap] and anonymous rw mappings. */
static unsigned scan(bool verbose)
{
	char line[512];
	unsigned found = 0;
	FILE *f = fopen("/proc/self/maps", "re");
	struct {
		uintptr_t lo, hi;
	} maps[MAX_MAPPINGS];
	size_t n = 0;

	if (!f)
		die("cannot read /proc/self/maps: %m");
	/* Read the list first: scanning must not race with stdio's own buffer. */
	while (n < MAX_MAPPINGS && fgets(line, sizeof(line), f)) {
		uintptr_t lo, hi;
		char perms[8], path[256] = "";

		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &lo, &hi, perms, path) < 3)
			continue;
		if (perms[0] != 'r' || perms[1] != 'w')
			continue;
		if (path[0] && strcmp(path, "[heap]"))
			continue;
		if (lo == (uintptr_t)arena || hi - lo > (1UL << 30))
			continue;
		maps[n].lo = lo;
		maps[n].hi = hi;
		n++;
	}
	fclose(f);
	for (size_t m = 0; m < n; m++)
		for (size_t i = 0; i < n_needles; i++) {
			const uint8_t *hit =
			    memmem((const void *)maps[m].lo, maps[m].hi - maps[m].lo, needles[i].p,
			           needles[i].n);

			if (hit) {
				found++;
				if (verbose)
					fprintf(stderr, "found %s (form %zu) at %p in %lx-%lx\n",
					        needles[i].what, i % 3, (const void *)hit,
					        maps[m].lo, maps[m].hi);
			}
		}
	return found;
}

static void positive_control(void)
{
	char *live, *freed;
	uint8_t *p = arena_alloc(40);
	unsigned found;

	for (int i = 0; i < 39; i++)
		p[i] = (uint8_t)('A' + (arc4random_uniform(26)));
	needle_add("planted", p, 39);
	live = malloc(200);
	if (!live)
		die("oom");
	memcpy(live + 50, p, 39);
	if (scan(false) != 1)
		die("the scanner does not find a planted heap copy");
	dmbyok_secure_wipe(live, 200);
	free(live);
	if (scan(false) != 0)
		die("the scanner finds a wiped copy");
	/* The premise: a freed small chunk keeps its content despite M_PERTURB. */
	freed = malloc(200);
	if (!freed)
		die("oom");
	memcpy(freed + 50, p, 39);
	/* keep the compiler from dropping a store to memory that is freed next */
	__asm__ volatile("" : : "r"(freed) : "memory");
	free(freed);
	found = scan(false);
	if (found != 1)
		die("a freed tcache chunk kept %u copies (want 1): the premise of this test "
		    "changed",
		    found);
	/* take it back from tcache and wipe it */
	freed = malloc(200);
	dmbyok_secure_wipe(freed, 200);
	free(freed);
	n_needles = 0;
	printf("ok   positive control: the scanner finds live and freed planted copies\n");
}

/* Runs argv with stdout read into the arena (never through stdio or the heap). */
static size_t run_capture(char *const *argv, uint8_t *out, size_t size)
{
	posix_spawn_file_actions_t fa;
	int fds[2], status;
	size_t len = 0;
	pid_t pid;

	if (pipe(fds) < 0)
		die("pipe: %m");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
	posix_spawn_file_actions_addclose(&fa, fds[0]);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
		die("cannot run %s", argv[0]);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	for (;;) {
		ssize_t k = read(fds[0], out + len, size - len - 1);

		if (k <= 0)
			break;
		len += (size_t)k;
	}
	close(fds[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die("%s %s failed", argv[0], argv[5]);
	out[len] = '\0';
	return len;
}

/* A whole file into the arena (never through stdio or the heap); NUL-terminated. */
static size_t read_into_arena(const char *path, uint8_t **ret)
{
	uint8_t *out = arena_alloc(262144);
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("cannot open %s: %m", path);
	for (;;) {
		ssize_t k = read(fd, out + len, 262144 - len - 1);

		if (k <= 0)
			break;
		len += (size_t)k;
	}
	close(fd);
	out[len] = '\0';
	*ret = out;
	return len;
}

static void ctl_to_file(const char *a1, const char *a2, const char *a3, const char *path)
{
	char ctl_path[512];
	uint8_t *out = arena_alloc(16384);
	size_t n;
	int fd;

	snprintf(ctl_path, sizeof(ctl_path), "%s/gcp-emulatorctl", TEST_SOURCE_DIR);
	n = run_capture((char *const[]){ ctl_path, "--url", (char *)endpoint, "--ca-bundle",
	                                 (char *)ca, (char *)a1, (char *)a2, (char *)a3, NULL },
	                out, 16384);
	if (path) {
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, out, n) != (ssize_t)n)
			die("cannot write %s", path);
		close(fd);
	}
}

static int b64val(uint8_t c)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = memchr(b64, c, 64);

	return p ? (int)(p - b64) : -1;
}

int main(void)
{
	struct kms_client *c = NULL;
	json_object *ctx;
	char path[512];
	const char *key = "projects/dmbyok-test/locations/europe-west1/keyRings/heap/cryptoKeys/k";
	uint8_t *file, *p, *deks;
	size_t len;
	unsigned tokens = 0;
	int r;

#if defined(__SANITIZE_ADDRESS__)
	die("not meaningful under AddressSanitizer; CTest registers it only without");
#endif
	test_dir = getenv("DMBYOK_TEST_DIR");
	endpoint = getenv("DMBYOK_TEST_GCP_URL");
	ca = getenv("DMBYOK_TEST_CA");
	if (!test_dir || !endpoint || !ca)
		die("run this test through run-with-gcp-emulator");
	dmbyok_log_setup("test-gcp-secret-heap");
	if (dmbyok_harden_process() < 0)
		die("cannot harden the process");
	arena = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		die("mmap: %m");

	positive_control();

	ctl_to_file("create-key", key, NULL, NULL);
	snprintf(path, sizeof(path), "%s/heap-sa.json", test_dir);
	ctl_to_file("sa-key", "dmbyok-host@dmbyok-test.iam.gserviceaccount.com", NULL, path);
	setenv("GOOGLE_APPLICATION_CREDENTIALS", path, 1);
	setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS", endpoint, 1);
	setenv("CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", ca, 1);

	deks = arena_alloc(3 * 64);
	ctx = json_object_new_object();
	json_object_object_add(ctx, "dmbyok:volume", json_object_new_string("heap"));
	if (dmbyok_kms_client_new(&(struct kms_options){ .provider = "gcp" }, &c) < 0)
		die("client");
	for (int i = 0; i < N_CALLS; i++) {
		_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
		_cleanup_free_ char *blob = NULL, *version = NULL;

		r = dmbyok_kms_generate_data_key(c, key, ctx, 64, &pt, &blob, &version);
		if (r >= 0)
			r = dmbyok_kms_decrypt(c, version, blob, ctx, &pt2, NULL);
		if (r < 0)
			die("KMS call %d: %s (%s)", i, dmbyok_strerror(r),
			    dmbyok_kms_last_error(c));
		if (i >= N_CALLS - 3)
			memcpy(deks + 64 * (i - (N_CALLS - 3)), pt->data, 64);
		/* The KMS stops taking the tokens now and then: the client fetches new ones. */
		if (i % 5 == 4)
			ctl_to_file("tokens", "--expire", "*", NULL);
	}
	dmbyok_kms_client_free(c);
	json_object_put(ctx);

	for (int i = 0; i < 3; i++)
		needle_add("data key", deks + 64 * i, 64);
	/* Every access token the emulator issued, from its state file. */
	snprintf(path, sizeof(path), "%s/state.json", test_dir);
	len = read_into_arena(path, &file);
	for (p = file; (p = memmem(p, (size_t)(file + len - p), "\"ya29.emu-", 10)); tokens++) {
		uint8_t *end = memchr(p + 1, '"', (size_t)(file + len - p - 1));

		if (!end)
			die("malformed state file");
		if (n_needles + 3 <= MAX_NEEDLES - 6)
			needles[n_needles++] =
			    (typeof(needles[0])){ "access token", p + 1, (size_t)(end - p - 1) };
		p = end;
	}
	if (tokens < 1 + (N_CALLS - 1) / 5)
		die("only %u access tokens were issued: the refreshes did not happen", tokens);
	/* The private key: a line of its PEM (JSON-escaped in the file) and its DER bytes. */
	snprintf(path, sizeof(path), "%s/heap-sa.json", test_dir);
	len = read_into_arena(path, &file);
	p = memmem(file, len, "-----BEGIN PRIVATE KEY-----\\n", 29);
	if (!p)
		die("no private key in the service-account key");
	p += 29 + 3 * 66; /* a few lines in: the private parts, not the algorithm header */
	needles[n_needles++] = (typeof(needles[0])){ "private key (PEM)", p, 64 };
	{
		uint8_t *der = arena_alloc(48);

		for (int i = 0; i < 16; i++) {
			uint32_t v = 0;

			for (int j = 0; j < 4; j++) {
				int x = b64val(p[4 * i + j]);

				if (x < 0)
					die("unexpected PEM text");
				v = v << 6 | (uint32_t)x;
			}
			der[3 * i] = (uint8_t)(v >> 16);
			der[3 * i + 1] = (uint8_t)(v >> 8);
			der[3 * i + 2] = (uint8_t)v;
		}
		needles[n_needles++] = (typeof(needles[0])){ "private key (DER)", der, 48 };
	}
	printf("ok   %d Cloud KMS calls on a service-account key, %u access tokens issued\n",
	       2 * N_CALLS, tokens);

	if (scan(true) != 0)
		die("secrets left in the heap after the client was freed");
	printf("ok   no data key, access token or private key in the heap\n");
	return 0;
}
