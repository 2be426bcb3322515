/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Bounded work. Some kernel calls (a device-mapper suspend waiting for I/O on a stalled
 * disk, a file-system freeze) can sleep uninterruptibly for as long as the disk stalls; a
 * thread stuck there also keeps its process from exiting. Such a call runs in a child
 * process instead: the caller waits only as long as it chose, and a child left behind
 * finishes (or is reaped by init) on its own.
 */

#include <stdbool.h>

/* The child's work: 0 or a negative errno (reported back through the exit status). */
typedef int (*dmbyok_child_fn)(void *userdata);

/*
 * Runs fn(userdata) in a forked child and waits up to timeout_ms. Returns fn's result, or
 * -ETIMEDOUT when it did not finish: the child is then sent SIGKILL (which ends the calls
 * that wait interruptibly, such as a dm suspend waiting for in-flight I/O) and left to
 * exit on its own. Only for single-threaded callers or children that call nothing but
 * async-signal-safe functions and system calls.
 */
int dmbyok_run_bounded(dmbyok_child_fn fn, void *userdata, unsigned timeout_ms);

/* In a forked child: stdin, stdout and stderr onto /dev/null (see process.c for why). */
void dmbyok_child_detach_stdio(void);

/* Milliseconds on the monotonic clock. */
unsigned long long dmbyok_now_ms(void);
