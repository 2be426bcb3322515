/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: the application of the "no acknowledged write lost" oracle. Appends numbered
 * records ("record %08d\n") to FILE, each followed by fsync(); only after fsync returned is
 * the record acknowledged: its number is written to ACKED (through a rename, so a reader
 * never sees the file empty). Stops after the record in progress once STOP exists, and at
 * the first failed write or fsync (a torn-down volume: EIO), exit status 1.
 *   fsync-writer FILE ACKED STOP [PAUSE_MS]
 * One process instead of a shell loop starting dd and mv per record: under TCG those
 * processes took a guest CPU away from what the test measures. PAUSE_MS (default 20)
 * between records keeps the writer writing without spinning.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int write_acked(const char *acked, const char *tmp, unsigned long n)
{
	char buf[32];
	int fd, len;

	len = snprintf(buf, sizeof(buf), "%lu\n", n);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)len) != len) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return rename(tmp, acked) < 0 ? -errno : 0;
}

int main(int argc, char **argv)
{
	struct timespec pause = { 0 };
	char rec[32], *tmp;
	unsigned long n;
	int fd, len;

	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: fsync-writer FILE ACKED STOP [PAUSE_MS]\n");
		return 2;
	}
	long ms = argc == 5 ? atol(argv[4]) : 20;
	pause.tv_sec = ms / 1000;
	pause.tv_nsec = (ms % 1000) * 1000000L;
	if (asprintf(&tmp, "%s.new", argv[2]) < 0)
		return 2;
	fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "fsync-writer: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (n = 0; access(argv[3], F_OK) < 0; n++) {
		len = snprintf(rec, sizeof(rec), "record %08lu\n", n);
		if (write(fd, rec, (size_t)len) != len || fsync(fd) < 0) {
			fprintf(stderr, "fsync-writer: record %lu: %s\n", n, strerror(errno));
			return 1;
		}
		int r = write_acked(argv[2], tmp, n);
		if (r < 0) {
			fprintf(stderr, "fsync-writer: %s: %s\n", argv[2], strerror(-r));
			return 1;
		}
		nanosleep(&pause, NULL);
	}
	return 0;
}
