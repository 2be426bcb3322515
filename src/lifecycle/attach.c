/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attach many volumes at once (boot) and detach those whose disk went away.
 *
 * An open is a header read, one KMS round trip and a table load. With 64 volumes the round
 * trips dominate, so only they run in parallel: threads, each with its own KMS client (a
 * client is used by one thread at a time) reused for the volumes it takes. Header reads
 * and table loads stay serial: libcryptsetup and libdevmapper keep process-wide state, and
 * they are fast. Every device's lock is held from its header read to its table load, as
 * `dmbyok open` does, so udev attach, the agent and an operator never map a disk twice.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "dmbyok/attach.h"
#include "dmbyok/dm.h"
#include "dmbyok/error.h"
#include "dmbyok/log.h"
#include "internal.h"
#include "registry.h"

int dmbyok_mapping_of_device(const char *devnode, char **ret_name)
{
	_cleanup_free_ char *dir = NULL;
	struct dirent *de;
	struct stat st;
	DIR *d;
	int r = 0;

	if (stat(devnode, &st) < 0)
		return negative_errno();
	if (!S_ISBLK(st.st_mode))
		return -ENOTBLK;
	if (asprintf(&dir, "/sys/dev/block/%u:%u/holders", major(st.st_rdev), minor(st.st_rdev)) <
	    0)
		return -ENOMEM;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : negative_errno();
	while (r == 0 && (de = readdir(d))) {
		_cleanup_free_ char *path = NULL;
		char name[256];
		FILE *f;

		if (strncmp(de->d_name, "dm-", 3) != 0)
			continue;
		if (asprintf(&path, "/sys/block/%s/dm/name", de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f)) {
			name[strcspn(name, "\n")] = '\0';
			*ret_name = strdup(name);
			r = *ret_name ? 1 : -ENOMEM;
		}
		fclose(f);
	}
	closedir(d);
	return r;
}

/* -EALREADY when `name` already maps `device`, -EBUSY when another mapping holds it. */
static int already_attached(const struct dmbyok_attach *a)
{
	_cleanup_free_ char *holder = NULL;
	int r = dmbyok_mapping_of_device(a->device, &holder);

	if (r <= 0)
		return r;
	if (!strcmp(holder, a->name))
		return -EALREADY;
	log_error("%s is already attached as %s, not as %s: `dmbyok close %s` first to rename it.",
	          a->device, holder, a->name, holder);
	return -EBUSY;
}

struct unwrap_pool {
	struct open_job *jobs;
	int *results;
	size_t n;
	atomic_size_t next;
	const struct kms_options *kms;
};

struct region_client {
	char *region; /* "provider/region" */
	struct kms_client *client;
};

/* One thread: takes the next job, unwraps it over this thread's client for its region. */
static void *unwrap_worker(void *userdata)
{
	struct unwrap_pool *p = userdata;
	struct region_client clients[8] = { 0 };
	size_t n_clients = 0;

	for (size_t i; (i = atomic_fetch_add(&p->next, 1)) < p->n;) {
		struct open_job *j = &p->jobs[i];
		const struct dmbyok_token *t;
		_cleanup_free_ char *where = NULL;
		struct kms_client *c = NULL;
		bool once = false;
		int r = 0;

		if (p->results[i] < 0)
			continue; /* failed before the KMS: no header loaded */
		t = j->v->token;
		/* One client per provider and region this thread meets. */
		if (asprintf(&where, "%s/%s", t->kms, t->region ? t->region : "") < 0) {
			p->results[i] = -ENOMEM;
			continue;
		}
		for (size_t k = 0; k < n_clients; k++)
			if (!strcmp(clients[k].region, where))
				c = clients[k].client;
		if (!c) {
			r = dmbyok_kms_client_for_token(p->kms, t, &c);
			once = r == 0;
			if (r == 0 && n_clients < ELEMENTSOF(clients)) {
				clients[n_clients].region = TAKE_PTR(where);
				clients[n_clients++].client = c;
				once = false;
			}
		}
		if (r == 0)
			r = dmbyok_unwrap_dek_with(c, j->v, &j->dek);
		if (once) /* more regions than the cache holds: this client serves one call */
			dmbyok_kms_client_free(c);
		p->results[i] = r;
	}
	for (size_t k = 0; k < n_clients; k++) {
		dmbyok_kms_client_free(clients[k].client);
		free(clients[k].region);
	}
	return NULL;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

int dmbyok_attach_many(struct dmbyok_attach *a, size_t n, const struct kms_options *kms,
                       unsigned concurrency)
{
	_cleanup_free_ struct open_job *jobs = NULL;
	_cleanup_free_ struct open_options *opts = NULL;
	_cleanup_free_ int *results = NULL;
	_cleanup_free_ pthread_t *threads = NULL;
	struct unwrap_pool pool;
	struct timespec t0;
	size_t n_threads = 0, n_unwrap = 0;
	int failed = 0;

	if (n == 0)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	jobs = calloc(n, sizeof(*jobs));
	opts = calloc(n, sizeof(*opts));
	results = calloc(n, sizeof(*results));
	ENSURE(jobs && opts && results, ENOMEM);

	/* Serial: device locks, header reads, checks. A failure here costs no KMS call. */
	for (size_t i = 0; i < n; i++) {
		opts[i] = (struct open_options){ .device = a[i].device,
			                         .header = a[i].header,
			                         .name = a[i].name,
			                         .override_flags = a[i].perf_set,
			                         .flags = a[i].perf_flags };
		jobs[i] = (struct open_job){ .o = &opts[i], .lock = DMBYOK_DEVICE_LOCK_INIT };
		results[i] = already_attached(&a[i]);
		if (results[i] == 0)
			results[i] = dmbyok_open_prepare(&jobs[i], kms);
		/* Another opener won the race between the check and the lock. */
		if (results[i] == -EEXIST || results[i] == -EBUSY) {
			int q = already_attached(&a[i]);

			if (q < 0)
				results[i] = q;
		}
		if (results[i] == 0)
			n_unwrap++;
	}

	/* Parallel: the KMS round trips. */
	if (concurrency == 0)
		concurrency = DMBYOK_ATTACH_CONCURRENCY;
	pool = (struct unwrap_pool){ .jobs = jobs, .results = results, .n = n, .kms = kms };
	atomic_init(&pool.next, 0);
	threads = calloc(MIN(concurrency, n_unwrap) + 1, sizeof(*threads));
	ENSURE_ALLOC(threads);
	for (; n_threads < MIN(concurrency, n_unwrap); n_threads++)
		if (pthread_create(&threads[n_threads], NULL, unwrap_worker, &pool) != 0)
			break;
	if (n_threads == 0)
		unwrap_worker(&pool); /* no thread to be had: this one does it all */
	for (size_t t = 0; t < n_threads; t++)
		pthread_join(threads[t], NULL);
	log_debug("Unwrapped %zu data key(s) with %zu thread(s) in %.3f s.", n_unwrap, n_threads,
	          seconds_since(&t0));

	/* Serial: the table loads, then each device's lock goes. */
	for (size_t i = 0; i < n; i++) {
		if (results[i] == 0)
			results[i] = dmbyok_open_finish(&jobs[i]);
		dmbyok_open_job_done(&jobs[i]);
		a[i].result = results[i];
		if (results[i] < 0 && results[i] != -EALREADY)
			failed++;
	}
	log_info("Attached %zu of %zu volume(s) in %.3f s.", n - (size_t)failed, n,
	         seconds_since(&t0));
	return failed;
}

/* Whether the block device major:minor still exists. */
static bool device_exists(unsigned maj, unsigned min)
{
	char path[64];

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", maj, min);
	return access(path, F_OK) == 0;
}

static bool record_names_device(const char *name, const char *kernel_name)
{
	struct registry_entry e = { 0 };
	bool match = false;
	const char *base;

	if (dmbyok_registry_load(name, &e) < 0)
		return false;
	base = e.device ? strrchr(e.device, '/') : NULL;
	match = base && !strcmp(base + 1, kernel_name);
	dmbyok_registry_entry_done(&e);
	return match;
}

static int detach_one(const struct dm_crypt_info *info)
{
	int r;

	/*
	 * The disk is gone, so there is nothing to flush to: the error target drops the crypt
	 * table and its key at once, and fails whatever still waits on it.
	 */
	r = dmbyok_dm_replace_with_error(info->name, info->length);
	if (r < 0)
		return r;
	r = info->open_count > 0 ? dmbyok_dm_remove_deferred(info->name)
	                         : dmbyok_dm_crypt_remove(info->name);
	if (r < 0)
		return r;
	(void)dmbyok_registry_remove(info->name);
	log_notice("Detached %s: its disk went away; %s.", info->name,
	           info->open_count > 0 ? "it is removed when its last user closes it"
	                                : "removed");
	return 0;
}

int dmbyok_detach_gone(const char *kernel_name)
{
	char **names = NULL;
	int n = 0, r;

	GUARD(dmbyok_dm_list_names(&names));
	for (char **s = names; *s; s++) {
		struct dm_crypt_info info = { 0 };
		if (dmbyok_dm_crypt_get_info(*s, &info) < 0)
			continue;
		/* Ours (the key comes from our keyring description), over a vanished disk. */
		if (info.key_ref && strstr(info.key_ref, ":logon:" KEY_DESC_PREFIX) &&
		    !device_exists(info.dev_major, info.dev_minor) &&
		    (!kernel_name || record_names_device(*s, kernel_name))) {
			r = detach_one(&info);
			if (r < 0)
				log_error("Cannot detach %s: %s", *s, dmbyok_strerror(r));
			else
				n++;
		}
		dmbyok_dm_crypt_info_done(&info);
	}
	dmbyok_strv_free(names);
	return n;
}
