/* SPDX-License-Identifier: Apache-2.0 */
/*
 * /etc/dmbyok/volumes, the table of volumes this host attaches by itself: parsing (bad
 * lines reported by number and skipped), resolving DEVICE to a block device, and editing
 * it safely against concurrent editors (include/dmbyok/volumes.h).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <blkid/blkid.h>

#include "dmbyok/error.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/volumes.h"

#define NAME_MAX_LEN 127 /* a dm name is at most 127 characters */

const char *dmbyok_volumes_path(void)
{
	const char *p = secure_getenv("DMBYOK_VOLUMES");

	return p && *p ? p : DMBYOK_VOLUMES_PATH;
}

void dmbyok_volume_entry_done(struct dmbyok_volume_entry *e)
{
	if (!e)
		return;
	free(e->name);
	free(e->device);
	free(e->header);
	free(e->on_revoke);
	free(e->on_restore);
	*e = (struct dmbyok_volume_entry){ 0 };
}

void dmbyok_volumes_free(struct dmbyok_volumes *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		dmbyok_volume_entry_done(&t->entries[i]);
	free(t->entries);
	free(t->path);
	free(t);
}

/* A device-mapper name that is also safe in a unit name and a file name. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > NAME_MAX_LEN || s[0] == '.' || s[0] == '-')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._+-", *s))
			return false;
	return true;
}

static bool device_ok(const char *s)
{
	static const char *const tags[] = { "UUID=", "PARTUUID=", "LABEL=" };

	for (size_t i = 0; i < ELEMENTSOF(tags); i++)
		if (!strncmp(s, tags[i], strlen(tags[i])))
			return s[strlen(tags[i])] != '\0';
	return s[0] == '/';
}

static bool value_ok(const char *v)
{
	return v && *v;
}

static int parse_option(struct dmbyok_volume_entry *e, char *opt, const char **why)
{
	char *v = strchr(opt, '=');
	char *end;
	unsigned long n;

	if (v)
		*v++ = '\0';
	if (!strcmp(opt, "nofail") && !v) {
		e->nofail = true;
		return 0;
	}
	if (!strcmp(opt, "header") && value_ok(v) && v[0] == '/') {
		if (e->header)
			goto dup;
		e->header = strdup(v);
		ENSURE_ALLOC(e->header);
		return 0;
	}
	if (!strcmp(opt, "perf") && value_ok(v)) {
		if (dmbyok_perf_flags_parse(v, &e->perf_flags) < 0) {
			*why = "perf= takes dm-crypt flags as `dmbyok open --perf` does";
			return -EINVAL;
		}
		e->perf_set = true;
		return 0;
	}
	if ((!strcmp(opt, "on-revoke") || !strcmp(opt, "on-restore")) && value_ok(v) &&
	    v[0] == '/') {
		char **hook = !strcmp(opt, "on-revoke") ? &e->on_revoke : &e->on_restore;

		if (*hook)
			goto dup;
		*hook = strdup(v);
		ENSURE_ALLOC(*hook);
		return 0;
	}
	if (!strcmp(opt, "teardown-after") && value_ok(v)) {
		errno = 0;
		n = strtoul(v, &end, 10);
		if (errno || end == v || (*end && strcmp(end, "s")) || n > 86400 || v[0] == '-') {
			*why = "teardown-after= takes seconds, 0 to 86400";
			return -EINVAL;
		}
		e->teardown_after = (unsigned)n;
		e->teardown_after_set = true;
		return 0;
	}
	*why = "unknown option (nofail, header=/PATH, perf=FLAGS, on-revoke=/PATH, "
	       "on-restore=/PATH, teardown-after=SECONDS)";
	return -EINVAL;
dup:
	*why = "an option is given twice";
	return -EINVAL;
}

int dmbyok_volume_entry_parse(const char *line, struct dmbyok_volume_entry *ret,
                              const char **ret_why)
{
	_cleanup_free_ char *copy = strdup(line);
	struct dmbyok_volume_entry e = { 0 };
	char *save = NULL, *name, *device, *options, *extra, *opt;
	const char *why = NULL;
	int r;

	ENSURE_ALLOC(copy);
	name = strtok_r(copy, " \t\n", &save);
	device = strtok_r(NULL, " \t\n", &save);
	options = strtok_r(NULL, " \t\n", &save);
	extra = strtok_r(NULL, " \t\n", &save);
	if (!name || !device) {
		why = "want NAME DEVICE [OPTIONS]";
		goto bad;
	}
	if (extra) {
		why = "too many fields (OPTIONS are one comma-separated field)";
		goto bad;
	}
	if (!name_ok(name)) {
		why = "NAME: 1 to 127 of A-Z a-z 0-9 . _ + -, not starting with . or -";
		goto bad;
	}
	if (!device_ok(device)) {
		why = "DEVICE: UUID=, PARTUUID=, LABEL= or an absolute path";
		goto bad;
	}
	e.name = strdup(name);
	e.device = strdup(device);
	if (!e.name || !e.device) {
		dmbyok_volume_entry_done(&e);
		return -ENOMEM;
	}
	/* "-" or "defaults" for no options, as crypttab and fstab allow. */
	if (options && strcmp(options, "-") && strcmp(options, "defaults"))
		for (opt = strtok_r(options, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
			r = parse_option(&e, opt, &why);
			if (r < 0) {
				dmbyok_volume_entry_done(&e);
				if (r != -EINVAL)
					return r;
				goto bad;
			}
		}
	if (e.header && !strncmp(e.device, "UUID=", 5)) {
		dmbyok_volume_entry_done(&e);
		why = "with header=, the LUKS2 UUID is in the header, not on the device: name the "
		      "device by PARTUUID=, LABEL= or path";
		goto bad;
	}
	*ret = e;
	return 0;
bad:
	if (ret_why)
		*ret_why = why;
	return -EINVAL;
}

static bool blank_or_comment(const char *s)
{
	s += strspn(s, " \t\n");
	return *s == '\0' || *s == '#';
}

int dmbyok_volumes_load(const char *path, struct dmbyok_volumes **ret)
{
	_cleanup_(dmbyok_volumes_freep) struct dmbyok_volumes *t = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t cap = 0;
	FILE *f;
	unsigned line = 0;
	int r = 0;

	path = path ? path : dmbyok_volumes_path();
	t = calloc(1, sizeof(*t));
	ENSURE_ALLOC(t);
	t->path = strdup(path);
	ENSURE_ALLOC(t->path);
	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT) {
			*ret = TAKE_PTR(t);
			return 0;
		}
		return log_error_errno(errno, "Cannot read %s: %m", path);
	}
	while (getline(&buf, &cap, f) >= 0) {
		struct dmbyok_volume_entry e, *grown;
		const char *why = NULL;

		line++;
		if (blank_or_comment(buf))
			continue;
		r = dmbyok_volume_entry_parse(buf, &e, &why);
		if (r == -EINVAL) {
			log_error("%s:%u: %s; this line is skipped.", path, line, why);
			t->n_bad++;
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		if (dmbyok_volumes_find(t, e.name)) {
			log_error("%s:%u: %s is named twice; this line is skipped.", path, line,
			          e.name);
			dmbyok_volume_entry_done(&e);
			t->n_bad++;
			continue;
		}
		e.line = line;
		grown = reallocarray(t->entries, t->n + 1, sizeof(*t->entries));
		if (!grown) {
			dmbyok_volume_entry_done(&e);
			r = -ENOMEM;
			break;
		}
		t->entries = grown;
		t->entries[t->n++] = e;
	}
	if (r == 0 && ferror(f))
		r = log_error_errno(EIO, "Cannot read %s.", path);
	fclose(f);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(t);
	return 0;
}

const struct dmbyok_volume_entry *dmbyok_volumes_find(const struct dmbyok_volumes *t,
                                                      const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->entries[i].name, name))
			return &t->entries[i];
	return NULL;
}

int dmbyok_volume_entry_resolve(const struct dmbyok_volume_entry *e, char **ret_devnode)
{
	char *dev = NULL;
	struct stat st;

	if (e->device[0] == '/') {
		dev = realpath(e->device, NULL);
		if (!dev)
			return errno == ENOENT ? -ENODEV : negative_errno();
	} else {
		/* No cache file: probe what is there now (it may have just been plugged). */
		_cleanup_free_ char *tag = strndup(e->device, strcspn(e->device, "="));

		ENSURE_ALLOC(tag);
		dev = blkid_evaluate_tag(tag, e->device + strlen(tag) + 1, NULL);
		if (!dev)
			return -ENODEV;
	}
	if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode)) {
		int r = errno == ENOENT ? -ENODEV : -ENOTBLK;

		free(dev);
		return r;
	}
	*ret_devnode = dev;
	return 0;
}

int dmbyok_volumes_find_device(const struct dmbyok_volumes *t, const char *devnode,
                               const struct dmbyok_volume_entry **ret)
{
	struct stat want, st;

	if (stat(devnode, &want) < 0)
		return negative_errno();
	if (!S_ISBLK(want.st_mode))
		return -ENOTBLK;
	for (size_t i = 0; i < t->n; i++) {
		_cleanup_free_ char *dev = NULL;

		if (dmbyok_volume_entry_resolve(&t->entries[i], &dev) < 0)
			continue;
		if (stat(dev, &st) == 0 && st.st_rdev == want.st_rdev) {
			*ret = &t->entries[i];
			return 0;
		}
	}
	return -ENOENT;
}

/* --- editing ----------------------------------------------------------------------- */

/* Serializes editors: a lock file next to the table (the table itself is replaced). */
static int lock_table(const char *path)
{
	_cleanup_free_ char *lock = NULL;
	int fd;

	if (asprintf(&lock, "%s.lock", path) < 0)
		return -ENOMEM;
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return log_error_errno(errno, "Cannot lock %s: %m", path);
	if (flock(fd, LOCK_EX) < 0) {
		int r = negative_errno();

		close(fd);
		return r;
	}
	return fd;
}

/* Writes `text` as the new table: temporary file, fsync, rename, so no reader sees half. */
static int replace_table(const char *path, const char *text)
{
	_cleanup_free_ char *tmp = NULL;
	size_t len = strlen(text);
	int fd, r = 0;

	if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return log_error_errno(errno, "Cannot write next to %s: %m", path);
	if (fchmod(fd, 0644) < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
		r = log_error_errno(errno ? errno : EIO, "Cannot write %s: %m", tmp);
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = log_error_errno(errno, "Cannot replace %s: %m", path);
	if (r < 0)
		unlink(tmp);
	return r;
}

/* The table's text, or "" when there is none yet. */
static int read_text(const char *path, char **ret)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	FILE *f = fopen(path, "re"), *m;

	if (!f && errno != ENOENT)
		return log_error_errno(errno, "Cannot read %s: %m", path);
	m = open_memstream(&buf, &len);
	if (!m) {
		if (f)
			fclose(f);
		return -ENOMEM;
	}
	if (f) {
		char chunk[4096];
		size_t n;

		while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
			fwrite(chunk, 1, n, m);
		fclose(f);
	}
	if (fclose(m) != 0)
		return -ENOMEM;
	*ret = TAKE_PTR(buf);
	return 0;
}

int dmbyok_volumes_add(const char *path, const char *line)
{
	_cleanup_(dmbyok_volumes_freep) struct dmbyok_volumes *t = NULL;
	_cleanup_free_ char *text = NULL, *out = NULL;
	struct dmbyok_volume_entry e;
	const char *why = NULL;
	int lock, r;

	path = path ? path : dmbyok_volumes_path();
	if (strchr(line, '\n'))
		return log_error_errno(EINVAL, "One line at a time.");
	r = dmbyok_volume_entry_parse(line, &e, &why);
	if (r == -EINVAL)
		return log_error_errno(EINVAL, "\"%s\": %s. %s is unchanged.", line, why, path);
	GUARD(r);
	lock = lock_table(path);
	if (lock < 0) {
		dmbyok_volume_entry_done(&e);
		return lock;
	}
	r = dmbyok_volumes_load(path, &t);
	if (r >= 0 && dmbyok_volumes_find(t, e.name))
		r = log_error_errno(EEXIST, "%s is already in %s (line %u): remove it first.",
		                    e.name, path, dmbyok_volumes_find(t, e.name)->line);
	for (size_t i = 0; r >= 0 && i < t->n; i++)
		if (!strcmp(t->entries[i].device, e.device))
			r = log_error_errno(EEXIST, "%s is already in %s as %s (line %u).", e.device,
			                    path, t->entries[i].name, t->entries[i].line);
	if (r >= 0)
		r = read_text(path, &text);
	if (r >= 0 && asprintf(&out, "%s%s%s\n", text,
	                       *text && text[strlen(text) - 1] != '\n' ? "\n" : "", line) < 0)
		r = -ENOMEM;
	if (r >= 0)
		r = replace_table(path, out);
	if (r >= 0)
		log_info("Added %s to %s.", e.name, path);
	dmbyok_volume_entry_done(&e);
	close(lock);
	return r;
}

int dmbyok_volumes_remove(const char *path, const char *name)
{
	_cleanup_(dmbyok_volumes_freep) struct dmbyok_volumes *t = NULL;
	_cleanup_free_ char *text = NULL, *out = NULL;
	const struct dmbyok_volume_entry *e = NULL;
	size_t len = 0;
	FILE *m = NULL;
	unsigned line = 0;
	char *s, *nl;
	int lock, r;

	path = path ? path : dmbyok_volumes_path();
	lock = lock_table(path);
	if (lock < 0)
		return lock;
	r = dmbyok_volumes_load(path, &t);
	if (r >= 0 && !(e = dmbyok_volumes_find(t, name)))
		r = log_error_errno(ENOENT, "%s is not in %s.", name, path);
	if (r >= 0)
		r = read_text(path, &text);
	if (r >= 0 && !(m = open_memstream(&out, &len)))
		r = -ENOMEM;
	if (r >= 0) {
		/* Every line but the entry's, byte for byte. */
		for (s = text; *s; s = nl ? nl + 1 : s + strlen(s)) {
			nl = strchr(s, '\n');
			if (++line != e->line)
				fwrite(s, 1, nl ? (size_t)(nl - s + 1) : strlen(s), m);
		}
		if (fclose(m) != 0)
			r = -ENOMEM;
		m = NULL;
	}
	if (r >= 0)
		r = replace_table(path, out);
	if (r >= 0)
		log_info("Removed %s from %s.", name, path);
	close(lock);
	return r;
}
