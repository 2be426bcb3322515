/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Credential secrets must not outlive their use in ordinary memory. A long-lived client with
 * assumed-role (session token) credentials makes N KMS calls over TLS and is freed; then this
 * process's heap and anonymous writable mappings are scanned for the temporary secret key
 * and session token, raw and in base64 and hex. A positive control first proves the scanner
 * finds a planted copy, including one left in a freed tcache-sized chunk, which glibc's
 * M_PERTURB does not touch. Runs under run-with-emulator (TLS emulator).
 */
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmbyok/kms.h"
#include "dmbyok/log.h"
#include "dmbyok/secret.h"
#include "../../src/kms/aws/aws.h"

#define N_CALLS      20
#define ARENA_SIZE   (1U << 20)
#define MAX_NEEDLES  32
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
	fputs("test-secret-heap: FAIL: ", stderr);
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

static void ctl(const char *a1, const char *a2, const char *a3, const char *a4)
{
	char ctl_path[512];
	uint8_t *out = arena_alloc(4096);

	snprintf(ctl_path, sizeof(ctl_path), "%s/../kms-emulator/emulatorctl", TEST_SOURCE_DIR);
	run_capture((char *const[]){ ctl_path, "--url", (char *)endpoint, "--ca-bundle", (char *)ca,
	                             (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL },
	            out, 4096);
}

static void write_config(void)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/heap-config", test_dir);
	f = fopen(path, "we");
	if (!f)
		die("cannot write %s: %m", path);
	fputs("[profile heap]\nrole_arn = arn:aws:iam::111122223333:role/heap-role\n"
	      "source_profile = base\nrole_session_name = heapscan\nregion = us-east-1\n"
	      "[profile base]\naws_access_key_id = AKIDCUSTOMER00000001\n"
	      "aws_secret_access_key = customersecret\n",
	      f);
	fclose(f);
	setenv("AWS_CONFIG_FILE", path, 1);
	snprintf(path, sizeof(path), "%s/no-credentials", test_dir);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
}

int main(void)
{
	struct kms_client *c = NULL;
	json_object *req, *resp = NULL, *md, *arn = NULL;
	char *key = NULL, *ctl_path = NULL;
	uint8_t *out, *p;
	size_t len;
	int r;

#if defined(__SANITIZE_ADDRESS__)
	/* ASan's shadow memory and quarantine are not glibc's heap: nothing to learn here. */
	die("not meaningful under AddressSanitizer; CTest registers it only without");
#endif
	test_dir = getenv("DMBYOK_TEST_DIR");
	endpoint = getenv("DMBYOK_TEST_ENDPOINT");
	ca = getenv("DMBYOK_TEST_CA");
	if (!test_dir || !endpoint || !ca)
		die("run this test through run-with-emulator");
	dmbyok_log_setup("test-secret-heap");
	/* As the CLI and the agent run: M_PERTURB, mlockall, not dumpable. */
	if (dmbyok_harden_process() < 0)
		die("cannot harden the process");
	arena = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED)
		die("mmap: %m");

	positive_control();

	ctl("create-role", "heap-role", "--trust", "111122223333");
	setenv("AWS_REGION", "us-east-1", 1);
	setenv("AWS_ENDPOINT_URL_KMS", endpoint, 1);
	setenv("AWS_ENDPOINT_URL_STS", endpoint, 1);
	setenv("AWS_CA_BUNDLE", ca, 1);
	write_config();

	/* the key, created by its owner */
	if (dmbyok_kms_client_new(&(struct kms_options){ .profile = "base" }, &c) < 0)
		die("client");
	req = json_tokener_parse("{\"Description\":\"heap scan\"}");
	if (dmbyok_aws_kms_call(c, "CreateKey", NULL, req, &resp) < 0 ||
	    !json_object_object_get_ex(resp, "KeyMetadata", &md) ||
	    !json_object_object_get_ex(md, "Arn", &arn))
		die("CreateKey: %s", dmbyok_kms_last_error(c));
	key = strdup(json_object_get_string(arn));
	json_object_put(req);
	json_object_put(resp);
	dmbyok_kms_client_free(c);

	/* a long-lived client on assumed-role credentials */
	if (dmbyok_kms_client_new(&(struct kms_options){ .profile = "heap" }, &c) < 0)
		die("client");
	for (int i = 0; i < N_CALLS; i++) {
		_cleanup_secret_ struct secret *pt = NULL, *pt2 = NULL;
		_cleanup_free_ char *blob = NULL;

		r = dmbyok_kms_generate_data_key(c, key, NULL, 64, &pt, &blob, NULL);
		if (r >= 0)
			r = dmbyok_kms_decrypt(c, key, blob, NULL, &pt2, NULL);
		if (r < 0)
			die("KMS call %d: %s (%s)", i, dmbyok_strerror(r),
			    dmbyok_kms_last_error(c));
	}
	dmbyok_kms_client_free(c);
	free(key);
	free(ctl_path);

	/* the session's secret key and token, straight from the emulator into the arena */
	out = arena_alloc(65536);
	{
		char path[512];

		snprintf(path, sizeof(path), "%s/../kms-emulator/emulatorctl", TEST_SOURCE_DIR);
		len = run_capture((char *const[]){ path, "--url", (char *)endpoint, "--ca-bundle",
		                                   (char *)ca, "sessions", "--session-name",
		                                   "heapscan", "--secrets-only", NULL },
		                  out, 65536);
	}
	p = out;
	for (unsigned i = 0; p < out + len; i++) {
		uint8_t *nl = memchr(p, '\n', (size_t)(out + len - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(out + len - p);

		needle_add(i % 2 ? "session token" : "secret access key", p, n);
		p += n + 1;
	}
	if (n_needles < 6)
		die("the emulator handed out no heapscan session");
	printf("ok   %d KMS calls on assumed-role credentials (%zu session(s))\n", 2 * N_CALLS,
	       n_needles / 6);

	if (scan(true) != 0)
		die("credential secrets left in the heap after the client was freed");
	printf("ok   no secret access key or session token (raw, base64, hex) in the heap\n");
	return 0;
}
