/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: looks for a secret (and each 32-byte half of it: XTS uses two AES keys), and
 * for its base64 and hex encodings (how a KMS response, a log or a table would carry it), in
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

#define CHUNK   (4u << 20)
#define OVERLAP 128u /* the longest form searched: hex of 64 bytes */

static unsigned char needle[64];
static size_t needle_len;
static int hits;

/* The encodings searched besides the raw bytes: base64 (standard) and hex, both cases. */
static char b64[89], hex_lower[129], hex_upper[129];

static void make_encodings(void)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < needle_len; i += 3) {
		unsigned v = (unsigned)needle[i] << 16;

		v |= i + 1 < needle_len ? (unsigned)needle[i + 1] << 8 : 0;
		v |= i + 2 < needle_len ? needle[i + 2] : 0;
		b64[o++] = alphabet[v >> 18 & 63];
		b64[o++] = alphabet[v >> 12 & 63];
		b64[o++] = i + 1 < needle_len ? alphabet[v >> 6 & 63] : '=';
		b64[o++] = i + 2 < needle_len ? alphabet[v & 63] : '=';
	}
	b64[o] = '\0';
	for (size_t i = 0; i < needle_len; i++) {
		snprintf(hex_lower + 2 * i, 3, "%02x", needle[i]);
		snprintf(hex_upper + 2 * i, 3, "%02X", needle[i]);
	}
}

static void find_all(const unsigned char *buf, size_t n, uint64_t base, const char *where,
                     const void *what, size_t len, const char *form)
{
	const unsigned char *p = buf, *end = buf + n;

	while (p < end) {
		p = memmem(p, (size_t)(end - p), what, len);
		if (!p)
			break;
		printf("found %s (%zu bytes) at %s+0x%" PRIx64 "\n", form, len, where,
		       base + (uint64_t)(p - buf));
		hits++;
		p++;
	}
}

static void search(const unsigned char *buf, size_t n, uint64_t base, const char *where)
{
	/* The whole key, each half on its own, then the encoded forms of the whole key. */
	find_all(buf, n, base, where, needle, needle_len, "the key");
	find_all(buf, n, base, where, needle, needle_len / 2, "its first half");
	find_all(buf, n, base, where, needle + needle_len / 2, needle_len / 2, "its second half");
	/* Base64 without its padding: a copy may be cut at any quantum boundary after 84. */
	find_all(buf, n, base, where, b64, 84, "its base64");
	find_all(buf, n, base, where, hex_lower, 2 * needle_len, "its hex");
	find_all(buf, n, base, where, hex_upper, 2 * needle_len, "its HEX");
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
		if ((size_t)n < OVERLAP || off + (uint64_t)n >= end)
			break;
		off += (uint64_t)n - OVERLAP + 1;
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
	make_encodings();

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
