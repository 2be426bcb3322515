/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Helpers shared by the libFuzzer harnesses. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmbyok/log.h"
#include "dmbyok/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A finding that is no crash (a broken invariant): report it the way sanitizers do. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The input as a NUL-terminated secret, as the HTTP layer hands over response bodies. */
static inline struct secret *fuzz_secret(const uint8_t *data, size_t size)
{
	struct secret *s = NULL;

	FUZZ_CHECK(dmbyok_secret_new(size + 1, &s) == 0);
	memcpy(s->data, data, size);
	s->data[size] = '\0';
	return s;
}

/*
 * The same, in one buffer kept across inputs: a harness that parses each input several
 * times spends its time in mmap and mlock otherwise. Valid until the next call.
 */
static inline struct secret *fuzz_secret_reuse(const uint8_t *data, size_t size)
{
	static struct secret *s;

	if (s && s->capacity < size + 1) {
		dmbyok_secret_free(s);
		s = NULL;
	}
	if (!s)
		FUZZ_CHECK(dmbyok_secret_new(size + 1, &s) == 0);
	memcpy(s->data, data, size);
	s->data[size] = '\0';
	s->size = size;
	return s;
}

/* The input as a NUL-terminated heap string. */
static inline char *fuzz_string(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	FUZZ_CHECK(s);
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* Parsers log at debug level when they refuse input: keep the fuzzer's output readable. */
static inline void fuzz_quiet(void)
{
	dmbyok_log_setup("fuzz");
	dmbyok_log_set_max_level(getenv("DMBYOK_FUZZ_LOG") ? LOG_LEVEL_DEBUG : (enum log_level)0);
}
