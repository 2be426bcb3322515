/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "runtime.h"

const char *dmbyok_runtime_dir(void)
{
	const char *d = getenv("DMBYOK_RUNTIME_DIR");

	return d && *d ? d : "/run/dmbyok";
}

/* A directory we may trust: a real directory, ours, not writable by anyone else. */
static int check_trusted_dir(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return negative_errno();
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0022))
		return log_error_errno(EPERM,
		                       "%s is not a directory owned by this user and writable "
		                       "only by it (a symlink, or planted by someone else?): "
		                       "refusing to trust what it holds. Remove it and retry.",
		                       path);
	return 0;
}

/* mkdir that tolerates an existing directory, then verifies whatever is there. */
static int make_trusted_dir(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return log_error_errno(errno, "Cannot create %s: %m", path);
	return check_trusted_dir(path);
}

int dmbyok_runtime_subdir(const char *sub, char **ret)
{
	const char *top = dmbyok_runtime_dir();
	_cleanup_free_ char *path = NULL;

	ENSURE(top[0] == '/', EINVAL);
	/* The parent of the runtime directory (/run) is the system's; only ours is checked. */
	GUARD(make_trusted_dir(top));
	if (asprintf(&path, "%s/%s", top, sub) < 0)
		return -ENOMEM;
	GUARD(make_trusted_dir(path));
	*ret = TAKE_PTR(path);
	return 0;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int dmbyok_device_lock_devno(dev_t devno, unsigned timeout_ms, struct dmbyok_device_lock *ret)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	unsigned waited = 0;
	bool told = false;
	int fd;

	GUARD(dmbyok_runtime_subdir("locks", &dir));
	if (asprintf(&path, "%s/L_%u:%u", dir, major(devno), minor(devno)) < 0)
		return -ENOMEM;
	/* Lock files are never removed: removing one races with a waiter that opened it. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return log_error_errno(errno, "Cannot open lock file %s: %m", path);

	/*
	 * A POSIX record lock, not flock: it belongs to this process only, so the children a
	 * lock forks for bounded kernel calls (which may outlive us, stuck on a stalled disk)
	 * never hold it; and the kernel drops it when we exit, even by kill -9.
	 */
	while (fcntl(fd, F_SETLK, &(struct flock){ .l_type = F_WRLCK, .l_whence = SEEK_SET }) < 0) {
		if (errno != EAGAIN && errno != EACCES) {
			int r = negative_errno();

			close(fd);
			return log_error_errno(r, "Cannot lock %s: %s", path, dmbyok_strerror(r));
		}
		if (waited >= timeout_ms) {
			close(fd);
			return log_error_errno(EBUSY,
			                       "Another dmbyok operation on device %u:%u has not "
			                       "finished after %u s; try again later.",
			                       major(devno), minor(devno), timeout_ms / 1000);
		}
		if (!told) {
			log_info("Waiting for another dmbyok operation on device %u:%u...",
			         major(devno), minor(devno));
			told = true;
		}
		sleep_ms(20);
		waited += 20;
	}
	*ret = (struct dmbyok_device_lock){ .fd = fd, .devno = devno };
	return 0;
}

int dmbyok_device_lock_path(const char *path, unsigned timeout_ms, struct dmbyok_device_lock *ret)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return log_error_errno(errno, "Cannot access %s: %m", path);
	if (!S_ISBLK(st.st_mode))
		return log_error_errno(ENOTBLK, "%s is not a block device.", path);
	return dmbyok_device_lock_devno(st.st_rdev, timeout_ms, ret);
}

void dmbyok_device_unlock(struct dmbyok_device_lock *l)
{
	if (!l || l->fd < 0)
		return;
	/* Closing the descriptor releases the record lock (we never open the file twice). */
	close(l->fd);
	l->fd = -1;
}
