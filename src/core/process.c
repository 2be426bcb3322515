/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dmbyok/log.h"
#include "dmbyok/process.h"

unsigned long long dmbyok_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL +
	       (unsigned long long)ts.tv_nsec / 1000000ULL;
}

void dmbyok_child_detach_stdio(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	/*
	 * A child left stuck on a stalled disk must not hold its caller's stdout or stderr: a
	 * shell reading them (`$(dmbyok status)`) would wait for it as long as the disk stalls.
	 */
	if (fd >= 0) {
		(void)dup2(fd, STDIN_FILENO);
		(void)dup2(fd, STDOUT_FILENO);
		(void)dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
}

/* Exit statuses carry errno values (all below 256); 0 is success. */
static int status_to_result(int status)
{
	if (WIFEXITED(status))
		return -WEXITSTATUS(status);
	return -EINTR; /* killed by a signal */
}

int dmbyok_run_bounded(dmbyok_child_fn fn, void *userdata, unsigned timeout_ms)
{
	unsigned long long deadline = dmbyok_now_ms() + timeout_ms;
	int pidfd, status = 0, r;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return log_error_errno(errno, "Cannot fork: %m");
	if (pid == 0) {
		dmbyok_child_detach_stdio();
		r = fn(userdata);
		_exit(r < 0 ? (-r & 0xff) : 0);
	}

	/* A pidfd becomes readable when the child exits: wait for that or the deadline. */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		unsigned long long now = dmbyok_now_ms();
		struct pollfd p = { .fd = pidfd, .events = POLLIN };
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid) {
			r = status_to_result(status);
			break;
		}
		if (w < 0 && errno != EINTR) {
			r = negative_errno();
			break;
		}
		if (now >= deadline) {
			/* Interruptible waits end now; an uninterruptible one ends with the stall.
			 */
			(void)kill(pid, SIGKILL);
			(void)waitpid(pid, &status, WNOHANG);
			r = -ETIMEDOUT;
			break;
		}
		if (pidfd >= 0)
			(void)poll(&p, 1, (int)(deadline - now));
		else
			(void)poll(NULL, 0, 10);
	}
	if (pidfd >= 0)
		close(pidfd);
	return r;
}
