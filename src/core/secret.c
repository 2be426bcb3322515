/* SPDX-License-Identifier: Apache-2.0 */
#include <malloc.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "dmbyok/log.h"
#include "dmbyok/secret.h"

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) / page * page;
}

int dmbyok_secret_new(size_t size, struct secret **ret)
{
	_cleanup_free_ struct secret *s = NULL;
	size_t len = page_round(size ? size : 1);
	void *p;

	s = calloc(1, sizeof(*s));
	ENSURE_ALLOC(s);

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return log_error_errno(errno, "Cannot map memory for a secret: %m");

	/*
	 * The raw system call: sanitizer runtimes turn mlock() into a no-op, and a build that
	 * silently stops locking keys is one we would never notice.
	 */
	if (syscall(SYS_mlock, p, len) < 0) {
		int r = negative_errno();

		munmap(p, len);
		return log_error_errno(
		    r, "Cannot lock memory for a secret (RLIMIT_MEMLOCK too low?): %s",
		    strerror(-r));
	}
	/* Best effort: older kernels lack these, the mlock above is what matters most. */
	(void)madvise(p, len, MADV_DONTDUMP);
	(void)madvise(p, len, MADV_WIPEONFORK);

	s->data = p;
	s->size = size;
	s->capacity = len;
	*ret = TAKE_PTR(s);
	return 0;
}

void dmbyok_secret_free(struct secret *s)
{
	if (!s)
		return;
	dmbyok_secure_wipe(s->data, s->capacity);
	(void)syscall(SYS_munlock, s->data, s->capacity);
	munmap(s->data, s->capacity);
	free(s);
}

int dmbyok_secret_append(struct secret *s, const void *data, size_t n)
{
	if (n > s->capacity - s->size)
		return -E2BIG;
	memcpy(s->data + s->size, data, n);
	s->size += n;
	return 0;
}

int dmbyok_secret_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

void dmbyok_secure_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

int dmbyok_harden_process(void)
{
	struct rlimit no_core = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &no_core) < 0)
		return log_error_errno(errno, "Cannot disable core dumps: %m");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return log_error_errno(errno, "Cannot mark the process non-dumpable: %m");
	/* Freed heap is overwritten with this byte (glibc M_PERTURB). */
	(void)mallopt(M_PERTURB, 0xa5);
	/*
	 * Libraries handed a key (libcryptsetup at format, OpenSSL's HMAC, the TLS buffers a
	 * KMS response crosses) keep transient copies in ordinary heap: lock all of it, as
	 * cryptsetup does, so none of it can reach swap. Best effort for unprivileged tests.
	 */
	if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
		log_notice(
		    "Cannot lock this process's memory (%m): the data key's own buffers are "
		    "still locked, but transient copies inside libraries (TLS records, "
		    "libcryptsetup) could be swapped out. Raise RLIMIT_MEMLOCK or run as root.");
	return 0;
}
