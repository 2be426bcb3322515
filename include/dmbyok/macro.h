/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Small helpers used everywhere: scope-bound cleanup (systemd's _cleanup_) and the guard
 * macros that carry dmbyok's one error discipline: functions return 0 (or a count) on
 * success and a negative errno on failure, and callers propagate it unchanged.
 */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f)         __attribute__((cleanup(f)))
#define _unused_             __attribute__((unused))
#define _printf_(a, b)       __attribute__((format(printf, a, b)))
#define _nonnull_(...)       __attribute__((nonnull(__VA_ARGS__)))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define MIN(a, b)     ((a) < (b) ? (a) : (b))
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Hand ownership of a pointer to someone else: returns it and leaves NULL behind. */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		typeof(p) _taken = (p);                                                            \
		(p) = NULL;                                                                        \
		_taken;                                                                            \
	})

/*
 * Defines func##p(type *p), a cleanup helper that calls the destructor and resets the
 * pointer, so a second call (or a cleanup after an explicit one) is harmless.
 */
#define DEFINE_CLEANUP_FUNC(type, func)                                                            \
	static inline void func##p(type *p)                                                        \
	{                                                                                          \
		if (*p) {                                                                          \
			func(*p);                                                                  \
			*p = NULL;                                                                 \
		}                                                                                  \
	}

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* A descriptor or stream closed at scope exit; -1 / NULL mean "nothing to close". */
static inline void closep(int *fd)
{
	if (*fd >= 0)
		(void)close(*fd);
	*fd = -1;
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f)
{
	if (*f)
		(void)fclose(*f);
	*f = NULL;
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Propagate a negative errno from an expression. */
#define GUARD(expr)                                                                                \
	do {                                                                                       \
		int _g_r = (expr);                                                                 \
		if (_g_r < 0)                                                                      \
			return _g_r;                                                               \
	} while (0)

/* Fail with -err when a precondition does not hold. */
#define ENSURE(cond, err)                                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			return -(err);                                                             \
	} while (0)

/* Allocation failure is the one error we do not log at each site. */
#define ENSURE_ALLOC(p) ENSURE((p) != NULL, ENOMEM)

/* Equal strings, or both NULL. */
static inline bool streq_ptr(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

static inline int negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}
