/* SPDX-License-Identifier: Apache-2.0 */
/*
 * doctor --policy: does this host keep "all data encrypted under the customer's key"? What
 * breaks it: a file system under a data path that no dmbyok mapping encrypts, swap that
 * nothing encrypts (memory pages, keys included, reach the disk in clear), /tmp and /var/tmp
 * on unencrypted storage, and tmpfs anywhere when swap is plain.
 *
 * The kernel tells what stores what: /proc/self/mountinfo (file system -> MAJ:MIN),
 * /proc/swaps, and sysfs (/sys/dev/block/MAJ:MIN: dm/uuid, slaves, partition parent, loop
 * backing file, zram). The evaluation reads them through struct dmbyok_policy_env, so tests
 * run it on fixtures.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "dmbyok/dm.h"
#include "dmbyok/hygiene.h"
#include "dmbyok/log.h"
#include "internal.h"

#define MAX_DEPTH 8 /* stacked devices followed at most this deep */

const char *dmbyok_storage_name(enum dmbyok_storage s)
{
	static const char *const names[] = {
		[DMBYOK_STORAGE_DMBYOK] = "dmbyok",        [DMBYOK_STORAGE_EPHEMERAL] = "ephemeral",
		[DMBYOK_STORAGE_OTHER_CRYPT] = "dm-crypt", [DMBYOK_STORAGE_MEMORY] = "memory",
		[DMBYOK_STORAGE_PLAIN] = "plain",          [DMBYOK_STORAGE_UNKNOWN] = "unknown",
	};

	return (unsigned)s < ELEMENTSOF(names) ? names[s] : "unknown";
}

const char *dmbyok_policy_status_name(enum dmbyok_policy_status s)
{
	return s == DMBYOK_POLICY_OK          ? "ok"
	       : s == DMBYOK_POLICY_VIOLATION ? "violation"
	                                      : "unknown";
}

/* --- /proc parsers ---------------------------------------------------------------------- */

/* Undo the kernel's octal escapes (\040 for a space, \011, \012, \134) in place. */
static void unescape(char *s)
{
	char *w = s;

	for (const char *r = s; *r; w++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 4;
		} else
			*w = *r++;
	}
	*w = '\0';
}

/* Splits a line on spaces in place; at most `max` words. */
static size_t split_words(char *line, char **words, size_t max)
{
	size_t n = 0;
	char *save = NULL;

	for (char *w = strtok_r(line, " \t", &save); w && n < max; w = strtok_r(NULL, " \t", &save))
		words[n++] = w;
	return n;
}

void dmbyok_mounts_free(struct dmbyok_mount *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		free(m[i].mount_point);
		free(m[i].fstype);
		free(m[i].source);
	}
	free(m);
}

int dmbyok_parse_mountinfo(const char *text, struct dmbyok_mount **ret, size_t *ret_n)
{
	_cleanup_free_ char *copy = strdup(text ? text : "");
	struct dmbyok_mount *l = NULL;
	size_t n = 0;
	char *save = NULL;

	ENSURE_ALLOC(copy);
	/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *w[64];
		size_t nw = split_words(line, w, ELEMENTSOF(w)), sep;
		struct dmbyok_mount m = { 0 }, *nl;

		for (sep = 6; sep < nw && strcmp(w[sep], "-"); sep++)
			;
		if (nw < 6 || sep + 2 >= nw || sscanf(w[2], "%u:%u", &m.major, &m.minor) != 2) {
			dmbyok_mounts_free(l, n);
			return log_error_errno(EINVAL, "Cannot parse mountinfo line \"%s\".", w[0]);
		}
		unescape(w[4]);
		unescape(w[sep + 2]);
		m.mount_point = strdup(w[4]);
		m.fstype = strdup(w[sep + 1]);
		m.source = strdup(w[sep + 2]);
		nl = realloc(l, (n + 1) * sizeof(*l));
		if (!nl || !m.mount_point || !m.fstype || !m.source) {
			free(m.mount_point);
			free(m.fstype);
			free(m.source);
			dmbyok_mounts_free(nl ? nl : l, n);
			return -ENOMEM;
		}
		l = nl;
		l[n++] = m;
	}
	*ret = l;
	*ret_n = n;
	return 0;
}

void dmbyok_swaps_free(struct dmbyok_swap *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++)
		free(s[i].path);
	free(s);
}

int dmbyok_parse_swaps(const char *text, struct dmbyok_swap **ret, size_t *ret_n)
{
	_cleanup_free_ char *copy = strdup(text ? text : "");
	struct dmbyok_swap *l = NULL;
	size_t n = 0;
	char *save = NULL;

	ENSURE_ALLOC(copy);
	/* Filename Type Size Used Priority, after one heading line. */
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *w[8];
		size_t nw = split_words(line, w, ELEMENTSOF(w));
		struct dmbyok_swap *nl;

		if (nw == 0 || !strcmp(w[0], "Filename"))
			continue;
		if (nw < 2) {
			dmbyok_swaps_free(l, n);
			return log_error_errno(EINVAL, "Cannot parse /proc/swaps line \"%s\".",
			                       w[0]);
		}
		unescape(w[0]);
		nl = realloc(l, (n + 1) * sizeof(*l));
		if (!nl) {
			dmbyok_swaps_free(l, n);
			return -ENOMEM;
		}
		l = nl;
		l[n] =
		    (struct dmbyok_swap){ .path = strdup(w[0]), .is_file = !strcmp(w[1], "file") };
		if (!l[n].path) {
			dmbyok_swaps_free(l, n);
			return -ENOMEM;
		}
		n++;
	}
	*ret = l;
	*ret_n = n;
	return 0;
}

/* --- what stores a device's bytes ------------------------------------------------------- */

struct ctx {
	const struct dmbyok_policy_env *env;
	struct dmbyok_mount *mounts;
	size_t n_mounts;
};

struct verdict {
	enum dmbyok_storage storage;
	char *mapping; /* the encrypting mapping */
	char *key_arn;
	char *what; /* "/dev/vdb", "tmpfs", "9p (not a block device)"... */
};

static void verdict_done(struct verdict *v)
{
	free(v->mapping);
	free(v->key_arn);
	free(v->what);
	*v = (struct verdict){ 0 };
}

/* How bad a storage is for the policy: a stack is as bad as its worst part. */
static int rank(enum dmbyok_storage s)
{
	switch (s) {
	case DMBYOK_STORAGE_DMBYOK:
		return 0;
	case DMBYOK_STORAGE_EPHEMERAL:
		return 1;
	case DMBYOK_STORAGE_OTHER_CRYPT:
		return 2;
	case DMBYOK_STORAGE_MEMORY:
		return 3;
	case DMBYOK_STORAGE_UNKNOWN:
		return 4;
	default:
		return 5;
	}
}

/* The first line of a sysfs attribute under `dir`, or NULL. */
static char *read_attr(const char *dir, const char *attr)
{
	char path[4096], buf[4096];
	FILE *f;
	char *s = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, attr);
	f = fopen(path, "re");
	if (!f)
		return NULL;
	if (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = '\0';
		s = strdup(buf);
	}
	fclose(f);
	return s;
}

static bool has_attr(const char *dir, const char *attr)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, attr);
	return access(path, F_OK) == 0;
}

/* "/dev/vdb" for a sysfs block device directory, else "block device MAJ:MIN". */
static char *dev_node(const char *dir, unsigned maj, unsigned min)
{
	char *node = NULL;

	if (dmbyok_device_node_from_sysfs(dir, &node) < 0 &&
	    asprintf(&node, "block device %u:%u", maj, min) < 0)
		node = NULL;
	return node;
}

/* A formatted string, or NULL when out of memory (set_verdict reports that). */
_printf_(1, 2) static char *strdupf(const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static int set_verdict(struct verdict *v, enum dmbyok_storage s, const char *mapping, char *key_arn,
                       char *what)
{
	v->storage = s;
	v->mapping = mapping ? strdup(mapping) : NULL;
	v->key_arn = key_arn;
	v->what = what;
	ENSURE(v->what && (!mapping || v->mapping), ENOMEM);
	return 0;
}

static int classify_devno(const struct ctx *c, unsigned maj, unsigned min, unsigned depth,
                          struct verdict *v);

/* A stack (dm without a crypt UUID, md...): as good as its worst member. */
static int classify_members(const struct ctx *c, const char *dir, unsigned depth, struct verdict *v)
{
	char path[4096];
	struct dirent *de;
	bool any = false;
	DIR *d;
	int r = 0;

	snprintf(path, sizeof(path), "%s/slaves", dir);
	d = opendir(path);
	while (d && r == 0 && (de = readdir(d))) {
		_cleanup_free_ char *devno = NULL;
		char member[4096];
		struct verdict m = { 0 };
		unsigned ma, mi;

		if (de->d_name[0] == '.')
			continue;
		snprintf(member, sizeof(member), "%s/class/block/%s", c->env->sysfs, de->d_name);
		devno = read_attr(member, "dev");
		if (!devno || sscanf(devno, "%u:%u", &ma, &mi) != 2)
			continue;
		r = classify_devno(c, ma, mi, depth + 1, &m);
		if (r == 0 && (!any || rank(m.storage) > rank(v->storage))) {
			verdict_done(v);
			*v = m;
			m = (struct verdict){ 0 };
		}
		any = true;
		verdict_done(&m);
	}
	if (d)
		closedir(d);
	return r < 0 ? r : any ? 1 : 0;
}

/* The storage of the file system mounted from anonymous device 0:MIN (tmpfs, 9p, btrfs...). */
static int classify_anonymous(const struct ctx *c, unsigned maj, unsigned min, unsigned depth,
                              struct verdict *v)
{
	const struct dmbyok_mount *m = NULL;
	struct stat st;

	for (size_t i = 0; i < c->n_mounts; i++)
		if (c->mounts[i].major == maj && c->mounts[i].minor == min)
			m = &c->mounts[i];
	if (!m)
		return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
		                   strdupf("device %u:%u (mounted nowhere)", maj, min));
	if (!strcmp(m->fstype, "tmpfs") || !strcmp(m->fstype, "ramfs"))
		return set_verdict(v, DMBYOK_STORAGE_MEMORY, NULL, NULL, strdup(m->fstype));
	/* btrfs and the like give their mounts an anonymous device; the source names the disk. */
	if (!strncmp(m->source, "/dev/", 5) &&
	    c->env->stat_path(m->source, &st, c->env->userdata) == 0 && S_ISBLK(st.st_mode))
		return classify_devno(c, major(st.st_rdev), minor(st.st_rdev), depth + 1, v);
	return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
	                   strdupf("%s (not on a block device)", m->fstype));
}

static int classify_devno(const struct ctx *c, unsigned maj, unsigned min, unsigned depth,
                          struct verdict *v)
{
	_cleanup_free_ char *uuid = NULL, *name = NULL, *backing = NULL, *parent = NULL;
	char dir[4096];
	struct stat st;
	unsigned pma, pmi;
	int r;

	*v = (struct verdict){ 0 };
	if (depth > MAX_DEPTH)
		return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
		                   strdup("a stack of devices too deep to follow"));
	if (maj == 0)
		return classify_anonymous(c, maj, min, depth, v);
	snprintf(dir, sizeof(dir), "%s/dev/block/%u:%u", c->env->sysfs, maj, min);
	if (access(dir, F_OK) < 0)
		return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
		                   strdupf("device %u:%u (not in sysfs)", maj, min));

	name = read_attr(dir, "dm/name");
	if (name) {
		uuid = read_attr(dir, "dm/uuid");
		if (dmbyok_ephemeral_dm_uuid(uuid))
			return set_verdict(v, DMBYOK_STORAGE_EPHEMERAL, name, NULL,
			                   dev_node(dir, maj, min));
		if (uuid && !strncmp(uuid, DM_LUKS2_UUID_PREFIX, strlen(DM_LUKS2_UUID_PREFIX))) {
			char *arn = NULL;

			r = c->env->is_dmbyok(name, &arn, c->env->userdata);
			if (r == 1)
				return set_verdict(v, DMBYOK_STORAGE_DMBYOK, name, arn,
				                   dev_node(dir, maj, min));
			free(arn);
			/* Not root, say: a dmbyok volume must not pass for someone else's. */
			if (r < 0)
				return set_verdict(
				    v, DMBYOK_STORAGE_UNKNOWN, name, NULL,
				    strdupf("dm-crypt mapping %s (cannot tell whether it "
				            "is a dmbyok volume: %s)",
				            name, dmbyok_strerror(r)));
		}
		if (uuid && !strncmp(uuid, "CRYPT-", 6))
			return set_verdict(v, DMBYOK_STORAGE_OTHER_CRYPT, name, NULL,
			                   dev_node(dir, maj, min));
		/* LVM, multipath, linear...: whatever it maps onto. */
		r = classify_members(c, dir, depth, v);
		if (r != 0)
			return r < 0 ? r : 0;
		return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
		                   strdupf("device-mapper %s (maps no device)", name));
	}
	/* zram: compressed memory, unless it writes back to a disk. */
	if (has_attr(dir, "comp_algorithm")) {
		backing = read_attr(dir, "backing_dev");
		if (backing && *backing && strcmp(backing, "none") != 0 &&
		    c->env->stat_path(backing, &st, c->env->userdata) == 0 && S_ISBLK(st.st_mode))
			return classify_devno(c, major(st.st_rdev), minor(st.st_rdev), depth + 1,
			                      v);
		return set_verdict(v, DMBYOK_STORAGE_MEMORY, NULL, NULL, dev_node(dir, maj, min));
	}
	/* A loop device stores its bytes in a file: the file system that holds it decides. */
	backing = read_attr(dir, "loop/backing_file");
	if (backing) {
		if (c->env->stat_path(backing, &st, c->env->userdata) < 0)
			return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
			                   strdupf("loop device over %s (gone)", backing));
		return classify_devno(c, major(st.st_dev), minor(st.st_dev), depth + 1, v);
	}
	/* A partition is as encrypted as its disk (a partitioned dm-crypt mapping). */
	if (has_attr(dir, "partition")) {
		parent = read_attr(dir, "../dev");
		if (parent && sscanf(parent, "%u:%u", &pma, &pmi) == 2) {
			r = classify_devno(c, pma, pmi, depth + 1, v);
			if (r < 0 || v->storage != DMBYOK_STORAGE_PLAIN)
				return r;
			verdict_done(v); /* a plain disk: name the partition, not the disk */
		}
	}
	/* md RAID and other stacks list their members; a plain disk lists none. */
	r = classify_members(c, dir, depth, v);
	if (r != 0)
		return r < 0 ? r : 0;
	return set_verdict(v, DMBYOK_STORAGE_PLAIN, NULL, NULL, dev_node(dir, maj, min));
}

/* --- the rules ---------------------------------------------------------------------------- */

static bool swap_encrypted(enum dmbyok_storage s)
{
	return s == DMBYOK_STORAGE_DMBYOK || s == DMBYOK_STORAGE_EPHEMERAL ||
	       s == DMBYOK_STORAGE_OTHER_CRYPT || s == DMBYOK_STORAGE_MEMORY;
}

struct swap_state {
	bool any;
	char *plain; /* the first swap that is not encrypted, or NULL */
};

void dmbyok_policy_report_done(struct dmbyok_policy_report *r)
{
	for (size_t i = 0; r->findings && i < r->n; i++) {
		struct dmbyok_policy_finding *f = &r->findings[i];

		free(f->path);
		free(f->data_path);
		free(f->fstype);
		free(f->source);
		free(f->devno);
		free(f->mapping);
		free(f->key_arn);
		free(f->reason);
	}
	free(r->findings);
	*r = (struct dmbyok_policy_report){ 0 };
}

static struct dmbyok_policy_finding *add_finding(struct dmbyok_policy_report *r)
{
	struct dmbyok_policy_finding *l = realloc(r->findings, (r->n + 1) * sizeof(*l));

	if (!l)
		return NULL;
	r->findings = l;
	l[r->n] = (struct dmbyok_policy_finding){ 0 };
	return &l[r->n++];
}

/* The reason and status of a file system ("data" or "tmp") or swap with verdict v. */
static int judge(struct dmbyok_policy_finding *f, const struct verdict *v,
                 const struct swap_state *swaps)
{
	bool tmp = !strcmp(f->check, "tmp"), swap = !strcmp(f->check, "swap");
	const char *arn = v->key_arn ? v->key_arn : "its customer key";
	int n;

	f->status = DMBYOK_POLICY_OK;
	switch (v->storage) {
	case DMBYOK_STORAGE_DMBYOK:
		n = asprintf(&f->reason, "on dmbyok volume %s, encrypted under %s", v->mapping,
		             arn);
		break;
	case DMBYOK_STORAGE_EPHEMERAL:
		n = asprintf(&f->reason,
		             "on ephemeral mapping %s: its key exists only in kernel memory",
		             v->mapping);
		break;
	case DMBYOK_STORAGE_OTHER_CRYPT:
		if (tmp || swap) {
			n = asprintf(&f->reason, "encrypted by dm-crypt mapping %s", v->mapping);
			break;
		}
		f->status = DMBYOK_POLICY_VIOLATION;
		n = asprintf(
		    &f->reason,
		    "encrypted by dm-crypt mapping %s, but not under a customer key (not a "
		    "dmbyok volume)",
		    v->mapping);
		break;
	case DMBYOK_STORAGE_MEMORY:
		if (swap)
			n = asprintf(&f->reason, "in memory (%s)", v->what);
		else if (!swaps->any)
			n = asprintf(&f->reason, "in memory (%s), and there is no swap", v->what);
		else if (!swaps->plain)
			n = asprintf(
			    &f->reason,
			    "in memory (%s); all swap is encrypted, so its pages never reach "
			    "a disk in clear",
			    v->what);
		else {
			f->status = DMBYOK_POLICY_VIOLATION;
			n = asprintf(&f->reason,
			             "in memory (%s), but swap %s is not encrypted: its pages can "
			             "reach that disk in clear",
			             v->what, swaps->plain);
		}
		break;
	case DMBYOK_STORAGE_PLAIN:
		f->status = DMBYOK_POLICY_VIOLATION;
		n = asprintf(&f->reason, "on %s, which nothing encrypts%s", v->what,
		             swap ? ": memory pages, keys included, reach it in clear" : "");
		break;
	default:
		f->status = DMBYOK_POLICY_UNKNOWN;
		n = asprintf(&f->reason, "on %s: dmbyok cannot tell whether it is encrypted",
		             v->what);
		break;
	}
	if (n < 0) {
		f->reason = NULL;
		return -ENOMEM;
	}
	if (v->mapping && !(f->mapping = strdup(v->mapping)))
		return -ENOMEM;
	if (v->key_arn && !(f->key_arn = strdup(v->key_arn)))
		return -ENOMEM;
	f->storage = v->storage;
	return 0;
}

/* File systems that hold no files of data: never a finding. */
static bool pseudo_fs(const char *fstype)
{
	static const char *const l[] = {
		"proc",       "sysfs",     "devtmpfs",    "devpts",   "cgroup", "cgroup2",
		"securityfs", "debugfs",   "tracefs",     "mqueue",   "bpf",    "pstore",
		"configfs",   "fusectl",   "binfmt_misc", "efivarfs", "autofs", "rpc_pipefs",
		"nsfs",       "selinuxfs", "hugetlbfs",
	};

	for (size_t i = 0; i < ELEMENTSOF(l); i++)
		if (!strcmp(fstype, l[i]))
			return true;
	return false;
}

/* Whether mount point m is `path` or one of its ancestors. */
static bool covers(const char *m, const char *path)
{
	size_t n = strlen(m);

	if (!strcmp(m, "/"))
		return true;
	return !strncmp(path, m, n) && (path[n] == '\0' || path[n] == '/');
}

/* The mount that holds `path`: the longest covering mount point, the last mounted on ties. */
static const struct dmbyok_mount *holding_mount(const struct ctx *c, const char *path)
{
	const struct dmbyok_mount *best = NULL;

	for (size_t i = 0; i < c->n_mounts; i++)
		if (covers(c->mounts[i].mount_point, path) &&
		    (!best || strlen(c->mounts[i].mount_point) >= strlen(best->mount_point)))
			best = &c->mounts[i];
	return best;
}

static int add_mount_finding(const struct ctx *c, struct dmbyok_policy_report *rep,
                             const char *check, const char *data_path, const struct dmbyok_mount *m,
                             const struct swap_state *swaps)
{
	struct verdict v = { 0 };
	struct dmbyok_policy_finding *f;
	int r;

	/* A data path's mounts are one finding each, however many data paths cover them. */
	for (size_t i = 0; i < rep->n; i++)
		if (!strcmp(rep->findings[i].check, check) &&
		    !strcmp(rep->findings[i].path, m->mount_point))
			return 0;
	f = add_finding(rep);
	ENSURE_ALLOC(f);
	f->check = check;
	f->path = strdup(m->mount_point);
	f->data_path = data_path ? strdup(data_path) : NULL;
	f->fstype = strdup(m->fstype);
	f->source = strdup(m->source);
	if (!f->path || (data_path && !f->data_path) || !f->fstype || !f->source ||
	    asprintf(&f->devno, "%u:%u", m->major, m->minor) < 0)
		return -ENOMEM;
	r = classify_devno(c, m->major, m->minor, 0, &v);
	if (r == 0)
		r = judge(f, &v, swaps);
	verdict_done(&v);
	return r;
}

static int add_swap_finding(const struct ctx *c, struct dmbyok_policy_report *rep,
                            const struct dmbyok_swap *s, const struct verdict *v)
{
	struct dmbyok_policy_finding *f = add_finding(rep);
	struct swap_state none = { 0 };

	ENSURE_ALLOC(f);
	(void)c;
	f->check = "swap";
	f->path = strdup(s->path);
	ENSURE_ALLOC(f->path);
	return judge(f, v, &none);
}

/* Swap first: whether tmpfs is fine depends on it. */
static int classify_swap(const struct ctx *c, const struct dmbyok_swap *s, struct verdict *v,
                         char **ret_devno)
{
	struct stat st;
	dev_t d;

	if (c->env->stat_path(s->path, &st, c->env->userdata) < 0)
		return set_verdict(v, DMBYOK_STORAGE_UNKNOWN, NULL, NULL,
		                   strdupf("%s (cannot stat it)", s->path));
	d = s->is_file ? st.st_dev : st.st_rdev;
	if (asprintf(ret_devno, "%u:%u", major(d), minor(d)) < 0)
		return -ENOMEM;
	return classify_devno(c, major(d), minor(d), 0, v);
}

int dmbyok_policy_evaluate(const struct dmbyok_policy_env *env, char *const *data_paths,
                           size_t n_data_paths, struct dmbyok_policy_report *ret)
{
	static const char *const tmp_paths[] = { "/tmp", "/var/tmp" };
	struct ctx c = { .env = env };
	struct dmbyok_policy_report rep = { 0 };
	struct dmbyok_swap *swaps = NULL;
	struct verdict *sv = NULL;
	struct swap_state ss = { 0 };
	size_t n_swaps = 0;
	int r;

	r = dmbyok_parse_mountinfo(env->mountinfo, &c.mounts, &c.n_mounts);
	if (r < 0)
		return r;
	r = dmbyok_parse_swaps(env->swaps, &swaps, &n_swaps);
	if (r < 0)
		goto out;
	sv = calloc(n_swaps ? n_swaps : 1, sizeof(*sv));
	if (!sv) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_swaps; i++) {
		_cleanup_free_ char *devno = NULL;

		r = classify_swap(&c, &swaps[i], &sv[i], &devno);
		if (r < 0)
			goto out;
		ss.any = true;
		if (!ss.plain && !swap_encrypted(sv[i].storage))
			ss.plain = swaps[i].path;
		r = add_swap_finding(&c, &rep, &swaps[i], &sv[i]);
		if (r < 0)
			goto out;
		rep.findings[rep.n - 1].devno = TAKE_PTR(devno);
	}

	for (size_t i = 0; i < n_data_paths; i++) {
		const char *p = data_paths[i];
		const struct dmbyok_mount *holder = holding_mount(&c, p);

		if (p[0] != '/') {
			r = log_error_errno(EINVAL, "Data path %s is not absolute.", p);
			goto out;
		}
		/* Where files written under the path go, then everything mounted below it. */
		if (holder && !pseudo_fs(holder->fstype)) {
			r = add_mount_finding(&c, &rep, "data", p, holder, &ss);
			if (r < 0)
				goto out;
		}
		for (size_t j = 0; j < c.n_mounts; j++) {
			const struct dmbyok_mount *m = &c.mounts[j];

			if (m == holder || pseudo_fs(m->fstype) || !covers(p, m->mount_point) ||
			    !strcmp(p, m->mount_point))
				continue;
			r = add_mount_finding(&c, &rep, "data", p, m, &ss);
			if (r < 0)
				goto out;
		}
	}
	for (size_t i = 0; i < ELEMENTSOF(tmp_paths); i++) {
		const struct dmbyok_mount *holder = holding_mount(&c, tmp_paths[i]);

		if (!holder)
			continue;
		r = add_mount_finding(&c, &rep, "tmp", NULL, holder, &ss);
		if (r < 0)
			goto out;
		/* Name the path checked (/var/tmp on the root file system is "/var/tmp", not "/").
		 */
		free(rep.findings[rep.n - 1].path);
		rep.findings[rep.n - 1].path = strdup(tmp_paths[i]);
		if (!rep.findings[rep.n - 1].path) {
			r = -ENOMEM;
			goto out;
		}
	}

	rep.holds = true;
	for (size_t i = 0; i < rep.n; i++)
		if (rep.findings[i].status != DMBYOK_POLICY_OK)
			rep.holds = false;
	*ret = rep;
	rep = (struct dmbyok_policy_report){ 0 };
	r = 0;
out:
	for (size_t i = 0; sv && i < n_swaps; i++)
		verdict_done(&sv[i]);
	free(sv);
	dmbyok_swaps_free(swaps, n_swaps);
	dmbyok_mounts_free(c.mounts, c.n_mounts);
	dmbyok_policy_report_done(&rep);
	return r;
}

/* --- on this host --------------------------------------------------------------------------- */

static int read_file(const char *path, char **ret)
{
	char *text = NULL;
	size_t size = 0, n;
	char buf[4096];
	FILE *out, *f = fopen(path, "re");

	if (!f)
		return log_error_errno(errno, "Cannot read %s: %m", path);
	out = open_memstream(&text, &size);
	if (!out) {
		fclose(f);
		return -ENOMEM;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, out);
	fclose(f);
	if (fclose(out) != 0) {
		free(text);
		return -ENOMEM;
	}
	*ret = text;
	return 0;
}

static int host_is_dmbyok(const char *name, char **ret_key_arn, void *userdata)
{
	struct mapping_status s = { 0 };
	int r;

	(void)userdata;
	*ret_key_arn = NULL;
	/* Key names from the records; the header only for a mapping without one. */
	dmbyok_log_quiet_push();
	r = dmbyok_read_mapping(name, false, &s);
	dmbyok_log_quiet_pop();
	if (r == -ENODEV)
		return 0; /* a LUKS2 mapping without a dmbyok token: cryptsetup's */
	if (r < 0)
		return r;
	*ret_key_arn = s.key_arn ? strdup(s.key_arn) : NULL;
	dmbyok_mapping_status_done(&s);
	return 1;
}

static int host_stat(const char *path, struct stat *ret, void *userdata)
{
	(void)userdata;
	return stat(path, ret) < 0 ? negative_errno() : 0;
}

int dmbyok_policy_check(char *const *data_paths, size_t n_data_paths,
                        struct dmbyok_policy_report *ret)
{
	_cleanup_free_ char *mountinfo = NULL, *swaps = NULL;
	char **resolved;
	int r = 0;

	GUARD(read_file("/proc/self/mountinfo", &mountinfo));
	GUARD(read_file("/proc/swaps", &swaps));
	resolved = calloc(n_data_paths + 1, sizeof(char *));
	ENSURE_ALLOC(resolved);
	/* Symlinks resolved: the mounts that matter are where the path really leads. */
	for (size_t i = 0; r == 0 && i < n_data_paths; i++) {
		resolved[i] = realpath(data_paths[i], NULL);
		if (!resolved[i])
			r = log_error_errno(errno, "Data path %s: %m", data_paths[i]);
	}
	if (r == 0)
		r = dmbyok_policy_evaluate(
		    &(struct dmbyok_policy_env){
		        .sysfs = "/sys",
		        .mountinfo = mountinfo,
		        .swaps = swaps,
		        .is_dmbyok = host_is_dmbyok,
		        .stat_path = host_stat,
		    },
		    resolved, n_data_paths, ret);
	dmbyok_strv_free(resolved);
	return r;
}
