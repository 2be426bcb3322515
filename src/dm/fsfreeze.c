/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Freezing the file system on a mapping before it is suspended, from user space (FIFREEZE)
 * rather than through device-mapper's lockfs: dm's freeze runs under the mapping's suspend
 * mutex, so a freeze stuck on a stalled disk would also block the fallback suspend that
 * must still wipe the key. Here the freeze runs in a child with a deadline, and a child
 * whose parent gave up thaws what it froze as soon as its freeze completes.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmbyok/dm.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *w = s;

	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*w++ = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
			p += 3;
		} else
			*w++ = *p;
	}
	*w = '\0';
}

int dmbyok_fs_mountpoint(unsigned maj, unsigned min, char **ret)
{
	char line[4096], want[32];
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return negative_errno();
	snprintf(want, sizeof(want), "%u:%u", maj, min);
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": every mount of one device shares a superblock.
	 */
	while (fgets(line, sizeof(line), f)) {
		char dev[32], mp[4096];

		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mp) == 2 && !strcmp(dev, want)) {
			fclose(f);
			unescape(mp);
			*ret = strdup(mp);
			return *ret ? 1 : -ENOMEM;
		}
	}
	fclose(f);
	*ret = NULL;
	return 0;
}

static int ioctl_at(const char *mountpoint, unsigned long req)
{
	int fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return negative_errno();
	if (ioctl(fd, req, 0) < 0)
		r = negative_errno();
	close(fd);
	return r;
}

int dmbyok_fs_freeze(const char *mountpoint, unsigned timeout_ms)
{
	int status_pipe[2], control_pipe[2], r;
	struct pollfd p;
	pid_t pid;
	int8_t result = 0;

	if (pipe2(status_pipe, O_CLOEXEC) < 0)
		return negative_errno();
	if (pipe2(control_pipe, O_CLOEXEC) < 0) {
		r = negative_errno();
		close(status_pipe[0]), close(status_pipe[1]);
		return r;
	}
	pid = fork();
	if (pid < 0) {
		r = negative_errno();
		goto out;
	}
	if (pid == 0) {
		char keep = 0;

		close(status_pipe[0]), close(control_pipe[1]);
		dmbyok_child_detach_stdio();
		r = ioctl_at(mountpoint, FIFREEZE);
		result = (int8_t)r;
		(void)!write(status_pipe[1], &result, 1);
		/* EOF without "k": the parent gave up (timeout, crash): do not leave it frozen. */
		if (r == 0 && (read(control_pipe[0], &keep, 1) != 1 || keep != 'k'))
			(void)ioctl_at(mountpoint, FITHAW);
		_exit(0);
	}
	close(status_pipe[1]), close(control_pipe[0]);
	status_pipe[1] = control_pipe[0] = -1;

	p = (struct pollfd){ .fd = status_pipe[0], .events = POLLIN };
	r = poll(&p, 1, (int)timeout_ms);
	if (r <= 0 || read(status_pipe[0], &result, 1) != 1) {
		/* Still syncing on a stalled disk: the child thaws by itself if it ever gets there.
		 */
		r = -ETIMEDOUT;
		goto out;
	}
	r = result;
	if (r == 0)
		(void)!write(control_pipe[1], "k", 1);
	(void)waitpid(pid, NULL, 0);
out:
	for (int i = 0; i < 2; i++) {
		if (status_pipe[i] >= 0)
			close(status_pipe[i]);
		if (control_pipe[i] >= 0)
			close(control_pipe[i]);
	}
	return r;
}

int dmbyok_fs_thaw(const char *mountpoint)
{
	int r = ioctl_at(mountpoint, FITHAW);

	return r == -EINVAL ? 0 : r; /* not frozen (any more): nothing to do */
}

/* In the child: one small direct read, which a stalled device never completes. */
static int read_child(void *userdata)
{
	const char *node = userdata;
	void *buf = NULL;
	int fd, r = 0;

	if (posix_memalign(&buf, 4096, 4096) != 0)
		return -ENOMEM;
	fd = open(node, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 || pread(fd, buf, 4096, 0) < 0)
		r = negative_errno();
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

int dmbyok_device_responds(const char *node, unsigned timeout_ms)
{
	return dmbyok_run_bounded(read_child, (void *)node, timeout_ms);
}
