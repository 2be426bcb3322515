/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: looks for a secret (and each 32-byte half of it: XTS uses two AES keys) in
 * every readable mapping of a live process, or in a file or block device.
 *   memscan NEEDLE_FILE --pid PID | --file PATH
 * Exit 0: not found; 1: found (each hit is printed); 2: could not scan.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (4u << 20)

static unsigned char needle[64];
static size_t needle_len;
static int hits;

static void search(const unsigned char *buf, size_t n, uint64_t base, const char *where)
{
	/* The whole key, then each half on its own. */
	const struct {
		size_t off, len;
	} parts[] = { { 0, needle_len },
		      { 0, needle_len / 2 },
		      { needle_len / 2, needle_len / 2 } };

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		const unsigned char *p = buf, *end = buf + n;

		while (p < end) {
			p = memmem(p, (size_t)(end - p), needle + parts[i].off, parts[i].len);
			if (!p)
				break;
			printf("found %zu bytes of the key at %s+0x%" PRIx64 "\n", parts[i].len,
			       where, base + (uint64_t)(p - buf));
			hits++;
			p++;
		}
		if (hits)
			return;
	}
}

/* Read [start, end) of fd in chunks that overlap by the needle's length. */
static int scan_range(int fd, uint64_t start, uint64_t end, const char *where)
{
	unsigned char *buf = malloc(CHUNK);
	uint64_t off = start;

	if (!buf)
		return -1;
	while (off < end) {
		size_t want = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
		ssize_t n = pread(fd, buf, want, (off_t)off);

		if (n <= 0)
			break; /* unreadable page (guard, I/O mapping): skip the rest */
		search(buf, (size_t)n, off, where);
		if ((size_t)n < needle_len || off + (uint64_t)n >= end)
			break;
		off += (uint64_t)n - needle_len + 1;
	}
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	char path[64], line[512];
	FILE *maps;
	int fd;

	if (argc != 4) {
		fprintf(stderr, "usage: memscan NEEDLE_FILE --pid PID | --file PATH\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || (needle_len = (size_t)read(fd, needle, sizeof(needle))) != sizeof(needle)) {
		fprintf(stderr, "memscan: the needle must be a 64-byte key file\n");
		return 2;
	}
	close(fd);

	if (!strcmp(argv[2], "--file")) {
		fd = open(argv[3], O_RDONLY);
		if (fd < 0) {
			perror(argv[3]);
			return 2;
		}
		scan_range(fd, 0, UINT64_MAX, argv[3]);
		close(fd);
		return hits ? 1 : 0;
	}

	snprintf(path, sizeof(path), "/proc/%s/maps", argv[3]);
	maps = fopen(path, "re");
	snprintf(path, sizeof(path), "/proc/%s/mem", argv[3]);
	fd = open(path, O_RDONLY);
	if (!maps || fd < 0) {
		perror(path);
		return 2;
	}
	while (fgets(line, sizeof(line), maps)) {
		uint64_t start, end;
		char perms[8], where[300] = "";

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %*s %*s %*s %299[^\n]", &start, &end,
		           perms, where) < 3 ||
		    perms[0] != 'r')
			continue;
		if (strstr(where, "[vvar]") || strstr(where, "[vsyscall]"))
			continue;
		scan_range(fd, start, end, where[0] ? where : "[anon]");
	}
	fclose(maps);
	close(fd);
	return hits ? 1 : 0;
}
