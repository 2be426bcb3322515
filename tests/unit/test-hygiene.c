/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key hygiene, the parts that need no kernel: the /proc parsers and the `doctor --policy`
 * rules on a fixture sysfs tree (plain disk, partition, dmbyok, ephemeral and cryptsetup
 * mappings, LVM over dmbyok, a loop device, zram), and the journal record of a shred (its
 * MESSAGE_ID, which catalog/dmbyok.catalog documents, and its fields).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "dmbyok/hygiene.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"

/* ---- /proc parsers ---- */

static void test_mountinfo(void **state)
{
	static const char text[] =
	    "22 1 0:20 / / ro,relatime - 9p hostroot ro,trans=virtio\n"
	    "30 22 253:0 / /srv/my\\040data rw,relatime shared:5 master:1 - ext4 "
	    "/dev/mapper/orders rw\n"
	    "31 22 0:5 / /proc rw - proc proc rw\n";
	struct dmbyok_mount *m = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(dmbyok_parse_mountinfo(text, &m, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(m[0].mount_point, "/");
	assert_string_equal(m[0].fstype, "9p");
	assert_int_equal(m[0].major, 0);
	assert_int_equal(m[0].minor, 20);
	/* optional fields skipped, \040 undone */
	assert_string_equal(m[1].mount_point, "/srv/my data");
	assert_string_equal(m[1].fstype, "ext4");
	assert_string_equal(m[1].source, "/dev/mapper/orders");
	assert_int_equal(m[1].major, 253);
	dmbyok_mounts_free(m, n);

	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1); /* the expected complaint, silenced */
	assert_int_equal(dmbyok_parse_mountinfo("22 1 0:20 / / ro\n", &m, &n), -EINVAL);
	dmbyok_log_set_max_level(LOG_LEVEL_INFO);
}

static void test_swaps(void **state)
{
	static const char text[] =
	    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	    "/dev/dm-3                               partition\t32764\t\t0\t\t-2\n"
	    "/var/swap\\040file                       file\t\t1024\t\t0\t\t-3\n";
	struct dmbyok_swap *s = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(dmbyok_parse_swaps(text, &s, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(s[0].path, "/dev/dm-3");
	assert_false(s[0].is_file);
	assert_string_equal(s[1].path, "/var/swap file");
	assert_true(s[1].is_file);
	dmbyok_swaps_free(s, n);
	assert_int_equal(dmbyok_parse_swaps("Filename Type Size Used Priority\n", &s, &n), 0);
	assert_int_equal(n, 0);
	dmbyok_swaps_free(s, n);
}

/* ---- a fixture sysfs ---- */

static char root[256];

static void put(const char *rel, const char *content)
{
	char path[512], cmd[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
	assert_int_equal(system(cmd), 0);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static void link_to(const char *rel, const char *target)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	assert_int_equal(symlink(target, path), 0);
}

/* A block device under devices/ with its dev/block/MAJ:MIN link, as sysfs has them. */
static void blockdev(const char *dir, const char *kname, const char *devno)
{
	char rel[256], uevent[128], link[256];

	snprintf(rel, sizeof(rel), "sys/devices/%s/dev", dir);
	put(rel, devno);
	snprintf(rel, sizeof(rel), "sys/devices/%s/uevent", dir);
	snprintf(uevent, sizeof(uevent), "MAJOR=x\nDEVNAME=%s\n", kname);
	put(rel, uevent);
	snprintf(rel, sizeof(rel), "sys/dev/block/%s", devno);
	snprintf(link, sizeof(link), "../../devices/%s", dir);
	put("sys/dev/block/.keep", "");
	link_to(rel, link);
	snprintf(rel, sizeof(rel), "sys/class/block/%s", kname);
	snprintf(link, sizeof(link), "../../devices/%s", dir);
	put("sys/class/block/.keep", "");
	if (!strchr(kname, '/'))
		link_to(rel, link);
}

static void dm(const char *kname, const char *devno, const char *name, const char *uuid)
{
	char dir[128], rel[256];

	snprintf(dir, sizeof(dir), "virtual/block/%s", kname);
	blockdev(dir, kname, devno);
	snprintf(rel, sizeof(rel), "sys/devices/%s/dm/name", dir);
	put(rel, name);
	snprintf(rel, sizeof(rel), "sys/devices/%s/dm/uuid", dir);
	put(rel, uuid);
}

static int fake_is_dmbyok(const char *name, char **ret_key_arn, void *userdata)
{
	(void)userdata;
	*ret_key_arn = NULL;
	if (!strcmp(name, "denied"))
		return -EACCES; /* not root: device-mapper cannot be asked */
	if (strcmp(name, "orders") != 0)
		return 0;
	*ret_key_arn = strdup("arn:aws:kms:us-east-1:111122223333:key/k1");
	return 1;
}

/* Paths the evaluation stats: swap devices and files, loop backing files, btrfs sources. */
static int fake_stat(const char *path, struct stat *ret, void *userdata)
{
	(void)userdata;
	memset(ret, 0, sizeof(*ret));
	if (!strcmp(path, "/dev/mapper/eswap")) {
		ret->st_mode = S_IFBLK | 0600;
		ret->st_rdev = makedev(253, 1);
	} else if (!strcmp(path, "/dev/vdb")) {
		ret->st_mode = S_IFBLK | 0600;
		ret->st_rdev = makedev(254, 16);
	} else if (!strcmp(path, "/dev/zram0")) {
		ret->st_mode = S_IFBLK | 0600;
		ret->st_rdev = makedev(252, 0);
	} else if (!strcmp(path, "/srv/orders/swapfile") || !strcmp(path, "/srv/orders/img")) {
		ret->st_mode = S_IFREG | 0600;
		ret->st_dev = makedev(253, 0); /* on the dmbyok volume */
	} else if (!strcmp(path, "/plain.img")) {
		ret->st_mode = S_IFREG | 0600;
		ret->st_dev = makedev(254, 17); /* on the plain partition */
	} else
		return -ENOENT;
	return 0;
}

static int setup_sysfs(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/test-hygiene.XXXXXX");
	assert_non_null(mkdtemp(root));
	/* a plain disk and its partition */
	blockdev("pci0000:00/virtio2/block/vdb", "vdb", "254:16");
	blockdev("pci0000:00/virtio2/block/vdb/vdb1", "vdb1", "254:17");
	put("sys/devices/pci0000:00/virtio2/block/vdb/vdb1/partition", "1");
	/* dm-crypt mappings: dmbyok, ephemeral, cryptsetup's own */
	dm("dm-0", "253:0", "orders", "CRYPT-LUKS2-0a1b2c3d4e5f60718293a4b5c6d7e8f9-orders");
	dm("dm-1", "253:1", "eswap", DMBYOK_EPHEMERAL_UUID_PREFIX "eswap");
	dm("dm-3", "253:3", "other", "CRYPT-LUKS2-ffffffffffffffffffffffffffffffff-other");
	dm("dm-5", "253:5", "denied", "CRYPT-LUKS2-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-denied");
	/* LVM over the dmbyok mapping, and a linear map over the plain disk */
	dm("dm-2", "253:2", "vg-lv", "LVM-abcdef");
	put("sys/devices/virtual/block/dm-2/slaves/.keep", "");
	link_to("sys/devices/virtual/block/dm-2/slaves/dm-0", "../../dm-0");
	dm("dm-4", "253:4", "lin", "");
	put("sys/devices/virtual/block/dm-4/slaves/.keep", "");
	link_to("sys/devices/virtual/block/dm-4/slaves/vdb", "../../vdb");
	/* loop devices over files on the dmbyok volume and on the plain partition; zram */
	blockdev("virtual/block/loop0", "loop0", "7:0");
	put("sys/devices/virtual/block/loop0/loop/backing_file", "/srv/orders/img\n");
	blockdev("virtual/block/loop1", "loop1", "7:1");
	put("sys/devices/virtual/block/loop1/loop/backing_file", "/plain.img\n");
	blockdev("virtual/block/zram0", "zram0", "252:0");
	put("sys/devices/virtual/block/zram0/comp_algorithm", "[lzo-rle] zstd\n");
	put("sys/devices/virtual/block/zram0/backing_dev", "none\n");
	return 0;
}

static int teardown_sysfs(void **state)
{
	char cmd[512];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd);
}

static const char mountinfo[] =
    "22 1 0:20 / / ro - 9p hostroot ro\n"
    "23 22 0:5 / /proc rw - proc proc rw\n"
    "24 22 0:30 / /tmp rw - tmpfs tmpfs rw\n"
    "25 22 253:0 / /srv/orders rw - ext4 /dev/mapper/orders rw\n"
    "26 25 254:17 / /srv/orders/plain rw - ext4 /dev/vdb1 rw\n"
    "27 25 253:2 / /srv/orders/lv rw - xfs /dev/mapper/vg-lv rw\n"
    "28 25 253:1 / /srv/orders/scratch rw - ext4 /dev/mapper/eswap rw\n"
    "29 25 253:3 / /srv/orders/luks rw - ext4 /dev/mapper/other rw\n"
    "30 25 7:0 / /srv/orders/loop0 rw - ext4 /dev/loop0 rw\n"
    "31 25 7:1 / /srv/orders/loop1 rw - ext4 /dev/loop1 rw\n"
    "32 25 253:4 / /srv/orders/lin rw - ext4 /dev/mapper/lin rw\n"
    "33 22 254:16 / /var rw - ext4 /dev/vdb rw\n"
    "34 25 0:31 / /srv/orders/mem rw - tmpfs tmpfs rw\n"
    "35 25 253:5 / /srv/orders/denied rw - ext4 /dev/mapper/denied rw\n";

static const struct dmbyok_policy_finding *find(const struct dmbyok_policy_report *r,
                                                const char *check, const char *path)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->findings[i].check, check) && !strcmp(r->findings[i].path, path))
			return &r->findings[i];
	fail_msg("no %s finding for %s", check, path);
	return NULL;
}

static void expect(const struct dmbyok_policy_report *r, const char *check, const char *path,
                   enum dmbyok_storage storage, enum dmbyok_policy_status status)
{
	const struct dmbyok_policy_finding *f = find(r, check, path);

	if (f->storage != storage || f->status != status)
		fail_msg("%s %s: %s/%s (%s), want %s/%s", check, path,
		         dmbyok_storage_name(f->storage), dmbyok_policy_status_name(f->status),
		         f->reason, dmbyok_storage_name(storage),
		         dmbyok_policy_status_name(status));
}

static int evaluate(const char *swaps, char **paths, size_t n, struct dmbyok_policy_report *r)
{
	char sysfs[300];

	snprintf(sysfs, sizeof(sysfs), "%s/sys", root);
	return dmbyok_policy_evaluate(
	    &(struct dmbyok_policy_env){
	        .sysfs = sysfs,
	        .mountinfo = mountinfo,
	        .swaps = swaps,
	        .is_dmbyok = fake_is_dmbyok,
	        .stat_path = fake_stat,
	    },
	    paths, n, r);
}

static void test_policy_violations(void **state)
{
	static const char swaps[] = "Filename Type Size Used Priority\n"
	                            "/dev/mapper/eswap partition 100 0 -2\n"
	                            "/dev/vdb partition 100 0 -3\n";
	char *paths[] = { "/srv/orders" };
	struct dmbyok_policy_report r = { 0 };

	(void)state;
	assert_int_equal(evaluate(swaps, paths, 1, &r), 0);
	assert_false(r.holds);
	expect(&r, "data", "/srv/orders", DMBYOK_STORAGE_DMBYOK, DMBYOK_POLICY_OK);
	assert_string_equal(find(&r, "data", "/srv/orders")->key_arn,
	                    "arn:aws:kms:us-east-1:111122223333:key/k1");
	assert_string_equal(find(&r, "data", "/srv/orders")->mapping, "orders");
	/* a partition of a plain disk, named as the partition */
	expect(&r, "data", "/srv/orders/plain", DMBYOK_STORAGE_PLAIN, DMBYOK_POLICY_VIOLATION);
	assert_non_null(strstr(find(&r, "data", "/srv/orders/plain")->reason, "/dev/vdb1"));
	/* LVM over the dmbyok mapping is as good as the mapping */
	expect(&r, "data", "/srv/orders/lv", DMBYOK_STORAGE_DMBYOK, DMBYOK_POLICY_OK);
	assert_string_equal(find(&r, "data", "/srv/orders/lv")->mapping, "orders");
	expect(&r, "data", "/srv/orders/scratch", DMBYOK_STORAGE_EPHEMERAL, DMBYOK_POLICY_OK);
	/* encrypted, but not under a customer key */
	expect(&r, "data", "/srv/orders/luks", DMBYOK_STORAGE_OTHER_CRYPT, DMBYOK_POLICY_VIOLATION);
	/* unable to tell a dmbyok volume from cryptsetup's: neither a pass nor a violation */
	expect(&r, "data", "/srv/orders/denied", DMBYOK_STORAGE_UNKNOWN, DMBYOK_POLICY_UNKNOWN);
	expect(&r, "data", "/srv/orders/loop0", DMBYOK_STORAGE_DMBYOK, DMBYOK_POLICY_OK);
	expect(&r, "data", "/srv/orders/loop1", DMBYOK_STORAGE_PLAIN, DMBYOK_POLICY_VIOLATION);
	expect(&r, "data", "/srv/orders/lin", DMBYOK_STORAGE_PLAIN, DMBYOK_POLICY_VIOLATION);
	/* tmpfs is fine only while all swap is encrypted: /dev/vdb is not */
	expect(&r, "data", "/srv/orders/mem", DMBYOK_STORAGE_MEMORY, DMBYOK_POLICY_VIOLATION);
	assert_non_null(
	    strstr(find(&r, "data", "/srv/orders/mem")->reason, "swap /dev/vdb is not encrypted"));
	expect(&r, "swap", "/dev/mapper/eswap", DMBYOK_STORAGE_EPHEMERAL, DMBYOK_POLICY_OK);
	expect(&r, "swap", "/dev/vdb", DMBYOK_STORAGE_PLAIN, DMBYOK_POLICY_VIOLATION);
	assert_string_equal(find(&r, "swap", "/dev/vdb")->devno, "254:16");
	expect(&r, "tmp", "/tmp", DMBYOK_STORAGE_MEMORY, DMBYOK_POLICY_VIOLATION);
	expect(&r, "tmp", "/var/tmp", DMBYOK_STORAGE_PLAIN, DMBYOK_POLICY_VIOLATION);
	/* /proc is under no data path here, and would be skipped anyway */
	for (size_t i = 0; i < r.n; i++)
		assert_string_not_equal(r.findings[i].path, "/proc");
	dmbyok_policy_report_done(&r);
}

static void test_policy_holds(void **state)
{
	/* Only encrypted swap (a swap file on the dmbyok volume, ephemeral, zram). */
	static const char swaps[] = "Filename Type Size Used Priority\n"
	                            "/dev/mapper/eswap partition 100 0 -2\n"
	                            "/srv/orders/swapfile file 100 0 -3\n"
	                            "/dev/zram0 partition 100 0 100\n";
	char *paths[] = { "/srv/orders/lv", "/srv/orders/scratch", "/srv/orders/lv/deeper" };
	struct dmbyok_policy_report r = { 0 };
	size_t data = 0;

	(void)state;
	assert_int_equal(evaluate(swaps, paths, 3, &r), 0);
	expect(&r, "swap", "/srv/orders/swapfile", DMBYOK_STORAGE_DMBYOK, DMBYOK_POLICY_OK);
	expect(&r, "swap", "/dev/zram0", DMBYOK_STORAGE_MEMORY, DMBYOK_POLICY_OK);
	expect(&r, "tmp", "/tmp", DMBYOK_STORAGE_MEMORY, DMBYOK_POLICY_OK);
	assert_non_null(strstr(find(&r, "tmp", "/tmp")->reason, "all swap is encrypted"));
	/* /var/tmp is on the plain /var: the policy still does not hold */
	expect(&r, "tmp", "/var/tmp", DMBYOK_STORAGE_PLAIN, DMBYOK_POLICY_VIOLATION);
	assert_false(r.holds);
	/* a mount covered by two data paths is one finding */
	for (size_t i = 0; i < r.n; i++)
		data += !strcmp(r.findings[i].check, "data");
	assert_int_equal(data, 2);
	dmbyok_policy_report_done(&r);
}

static void test_policy_unknown(void **state)
{
	char *paths[] = { "/srv/other" }; /* on the 9p root */
	struct dmbyok_policy_report r = { 0 };
	const struct dmbyok_policy_finding *f;

	(void)state;
	assert_int_equal(evaluate("Filename Type Size Used Priority\n", paths, 1, &r), 0);
	expect(&r, "data", "/", DMBYOK_STORAGE_UNKNOWN, DMBYOK_POLICY_UNKNOWN);
	f = find(&r, "data", "/");
	assert_string_equal(f->data_path, "/srv/other");
	assert_string_equal(f->fstype, "9p");
	assert_string_equal(f->reason,
	                    "on 9p (not on a block device): dmbyok cannot tell whether it is "
	                    "encrypted");
	/* no swap at all: tmpfs is fine */
	expect(&r, "tmp", "/tmp", DMBYOK_STORAGE_MEMORY, DMBYOK_POLICY_OK);
	assert_false(r.holds);
	dmbyok_policy_report_done(&r);
}

/* ---- the shred record ---- */

static char entry[8192];

static int sink(const struct iovec *iov, int n)
{
	size_t used = 0;

	for (int i = 0; i < n; i++) {
		assert_true(used + iov[i].iov_len + 2 < sizeof(entry));
		memcpy(entry + used, iov[i].iov_base, iov[i].iov_len);
		used += iov[i].iov_len;
		entry[used++] = '\n';
	}
	entry[used] = '\0';
	return 0;
}

static void test_shred_record(void **state)
{
	struct stat st;
	char v[64];
	struct dmbyok_shred_plan p = {
		.device = "/dev/vdb",
		.volume_uuid = "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9",
		.key_arn = "arn:aws:kms:us-east-1:111122223333:key/k1",
		.n_ranges = 3,
		.ranges = {
		    { "/dev/vdb", 0, 16384, "primary LUKS2 header" },
		    { "/dev/vdb", 16384, 16384, "secondary LUKS2 header" },
		    { "/dev/vdb", 32768, 16744448, "keyslot area" },
		},
	};
	char *forgotten[] = { "orders", NULL };

	(void)state;
	p.forgotten = forgotten;
	/* stderr is journald's stream: the entry goes natively, to our sink */
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	assert_int_equal(setenv("JOURNAL_STREAM", v, 1), 0);
	dmbyok_log_setup("test-hygiene");
	dmbyok_log_set_journal_sink(sink);
	dmbyok_log_set_max_level(LOG_LEVEL_WARNING); /* --quiet: the record still goes */
	dmbyok_shred_log(&p);
	assert_int_equal(dmbyok_log_get_max_level(), LOG_LEVEL_WARNING);
	dmbyok_log_set_max_level(LOG_LEVEL_INFO);
	dmbyok_log_set_journal_sink(NULL);
	unsetenv("JOURNAL_STREAM");
	dmbyok_log_setup("test-hygiene");

	assert_non_null(strstr(entry, "MESSAGE_ID=" DMBYOK_MESSAGE_SHREDDED "\n"));
	assert_non_null(strstr(entry, "PRIORITY=5\n"));
	assert_non_null(strstr(entry, "\nDEVICE=/dev/vdb\n"));
	assert_non_null(strstr(entry, "\nVOLUME_UUID=0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9\n"));
	assert_non_null(strstr(entry, "\nKEY_ARN=arn:aws:kms:us-east-1:111122223333:key/k1\n"));
	assert_non_null(strstr(entry, "\nWIPED=/dev/vdb 0+16384 primary LUKS2 header\n"));
	assert_non_null(strstr(entry, "\nWIPED=/dev/vdb 16384+16384 secondary LUKS2 header\n"));
	assert_non_null(strstr(entry, "\nWIPED=/dev/vdb 32768+16744448 keyslot area\n"));
	assert_non_null(strstr(entry, "\nVOLUME=orders\n"));
	assert_null(strstr(entry, "DAMAGED="));

	/* The id is checked, with the catalog's text for it, by test-log with the others. */
	assert_string_not_equal(DMBYOK_MESSAGE_SHREDDED, DMBYOK_MESSAGE_KEY_DELETED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mountinfo),         cmocka_unit_test(test_swaps),
		cmocka_unit_test(test_policy_violations), cmocka_unit_test(test_policy_holds),
		cmocka_unit_test(test_policy_unknown),    cmocka_unit_test(test_shred_record),
	};

	dmbyok_log_setup("test-hygiene");
	return cmocka_run_group_tests(tests, setup_sysfs, teardown_sysfs);
}
