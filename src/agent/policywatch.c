/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of "nothing unencrypted" (policywatch.h): each change of the mount table
 * (the kernel flags /proc/self/mountinfo with POLLPRI) runs the data-path part of
 * `dmbyok doctor --policy`; a file system mounted under a data path from storage that is not
 * under the customer's key is reported once, and unmounted when the policy says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dmbyok/dm.h"
#include "dmbyok/hygiene.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"
#include "dmbyok/process.h"
#include "policywatch.h"

/* Mount events come in bursts (a mount, its propagation, udev's probe): look once after. */
#define DEBOUNCE_USEC (200 * 1000ULL)
#define UNMOUNT_MS    10000U

struct dmbyok_policywatch {
	sd_event_source *io, *timer;
	int fd;
	char **paths; /* absolute data paths, NULL-terminated */
	size_t n_paths;
	bool unmount;
	char **reported; /* "MOUNTPOINT DEVNO" already reported: one alert per mount */
	size_t n_reported;
};

static bool reported(const struct dmbyok_policywatch *w, const char *id)
{
	for (size_t i = 0; i < w->n_reported; i++)
		if (!strcmp(w->reported[i], id))
			return true;
	return false;
}

/* What was reported and is no longer mounted may be reported again when it comes back. */
static void forget_gone(struct dmbyok_policywatch *w, char **now, size_t n_now)
{
	size_t k = 0;

	for (size_t i = 0; i < w->n_reported; i++) {
		bool still = false;

		for (size_t j = 0; j < n_now && !still; j++)
			still = !strcmp(w->reported[i], now[j]);
		if (still)
			w->reported[k++] = w->reported[i];
		else
			free(w->reported[i]);
	}
	w->n_reported = k;
}

/* A mount at or below the data path: never the file system that merely holds it (/). */
static bool under(const char *mount_point, const char *data_path)
{
	size_t n = strlen(data_path);

	return !strncmp(mount_point, data_path, n) &&
	       (mount_point[n] == '\0' || mount_point[n] == '/');
}

/*
 * systemctl names the mount unit from the path and reaches PID 1 over its private socket
 * (systemd-mount would need a D-Bus daemon). --no-block: the loop never waits on a disk.
 */
struct unmount_job {
	const char *path;
	int err_fd; /* where systemctl's words go (a pipe to the agent), or -1 */
};

static int exec_systemd_umount(void *userdata)
{
	const struct unmount_job *j = userdata;

	if (j->err_fd >= 0)
		(void)dup2(j->err_fd, STDERR_FILENO);
	execlp("systemctl", "systemctl", "stop", "--no-block", "--", j->path, (char *)NULL);
	return -errno;
}

static int do_umount(void *userdata)
{
	const struct unmount_job *j = userdata;

	return umount2(j->path, UMOUNT_NOFOLLOW) < 0 ? -errno : 0;
}

/*
 * Under systemd the agent has a mount namespace of its own (ProtectSystem=): an unmount there
 * would hide the file system from the agent only. systemd unmounts it for the host then.
 */
static bool own_mount_namespace(void)
{
	struct stat self, init;

	if (stat("/proc/self/ns/mnt", &self) == 0 && stat("/proc/1/ns/mnt", &init) == 0)
		return self.st_ino != init.st_ino;
	/* PID 1's namespace is hidden from a sandboxed service (no ptrace access): under
	 * systemd (INVOCATION_ID), assume the sandbox; systemctl is right in either case. */
	return getenv("INVOCATION_ID") != NULL;
}

static void unmount_it(const struct dmbyok_policy_finding *f)
{
	bool via_systemd = own_mount_namespace();
	struct unmount_job j = { .path = f->path, .err_fd = -1 };
	char said[512] = "";
	int pipefd[2] = { -1, -1 }, r;
	ssize_t n;

	if (via_systemd && pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) == 0)
		j.err_fd = pipefd[1];
	r = dmbyok_run_bounded(via_systemd ? exec_systemd_umount : do_umount, &j, UNMOUNT_MS);
	if (pipefd[0] >= 0) {
		close(pipefd[1]);
		n = read(pipefd[0], said, sizeof(said) - 1);
		said[n > 0 ? n : 0] = '\0';
		said[strcspn(said, "\n")] = '\0';
		close(pipefd[0]);
	}
	if (r < 0 && via_systemd)
		log_error("systemctl could not stop the mount unit of %s (%s): it stays mounted, "
		          "unencrypted. Unmount it and put %s on a dmbyok volume.",
		          f->path, said[0] ? said : dmbyok_strerror(r), f->data_path);
	else if (r < 0)
		log_error("Cannot unmount %s (%s): it stays mounted, unencrypted. Unmount it and "
		          "put %s on a dmbyok volume.",
		          f->path, r == -EBUSY ? "in use" : dmbyok_strerror(r), f->data_path);
	else if (via_systemd)
		log_warning(
		    "Asked systemd to unmount %s: a file system under data path %s may only "
		    "come from a dmbyok volume.",
		    f->path, f->data_path);
	else
		log_warning("Unmounted %s: a file system under data path %s may only come from a "
		            "dmbyok volume.",
		            f->path, f->data_path);
}

static void check(struct dmbyok_policywatch *w)
{
	struct dmbyok_policy_report rep = { 0 };
	_cleanup_free_ char **present = NULL;
	char **now = NULL;
	size_t n_now = 0, n_present = 0;
	struct stat st;
	int r;

	/* A data path that does not exist (yet) holds no data: the others are still checked. */
	present = calloc(w->n_paths + 1, sizeof(*present));
	if (!present)
		return;
	for (size_t i = 0; i < w->n_paths; i++)
		if (stat(w->paths[i], &st) == 0)
			present[n_present++] = w->paths[i];
	if (n_present == 0)
		return;
	r = dmbyok_policy_check(present, n_present, &rep);
	if (r < 0) {
		log_debug("Policy check: %s", dmbyok_strerror(r));
		return;
	}
	now = calloc(rep.n + 1, sizeof(*now));
	if (!now) {
		dmbyok_policy_report_done(&rep);
		return;
	}
	for (size_t i = 0; i < rep.n; i++) {
		const struct dmbyok_policy_finding *f = &rep.findings[i];
		struct log_fields fields = {};
		char *id = NULL;

		if (strcmp(f->check, "data") != 0 || f->status == DMBYOK_POLICY_OK ||
		    !under(f->path, f->data_path))
			continue;
		if (asprintf(&id, "%s %s", f->path, f->devno ? f->devno : "?") < 0)
			continue;
		now[n_now++] = id;
		if (reported(w, id))
			continue;
		(void)dmbyok_log_field(&fields, "DATA_PATH", "%s", f->data_path);
		(void)dmbyok_log_field(&fields, "MOUNT_POINT", "%s", f->path);
		if (f->source)
			(void)dmbyok_log_field(&fields, "SOURCE", "%s", f->source);
		(void)dmbyok_log_field(&fields, "STATUS", "%s",
		                       dmbyok_policy_status_name(f->status));
		log_struct(LOG_LEVEL_WARNING, DMBYOK_MESSAGE_POLICY_VIOLATED, fields.field,
		           "Data path %s: %s is mounted from %s, which is not under the customer's "
		           "key (%s).",
		           f->data_path, f->path, f->source ? f->source : "an unknown source",
		           f->reason ? f->reason : dmbyok_policy_status_name(f->status));
		/* Only what is proven plain: an unknown (a network file system) is only reported.
		 */
		if (w->unmount && f->status == DMBYOK_POLICY_VIOLATION)
			unmount_it(f);
	}
	forget_gone(w, now, n_now);
	for (size_t i = 0; i < n_now; i++) {
		char **l;

		if (reported(w, now[i]))
			continue;
		l = realloc(w->reported, (w->n_reported + 1) * sizeof(*l));
		if (!l)
			break;
		w->reported = l;
		w->reported[w->n_reported++] = TAKE_PTR(now[i]);
	}
	for (size_t i = 0; i < n_now; i++)
		free(now[i]);
	free(now);
	dmbyok_policy_report_done(&rep);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s, (void)usec;
	check(userdata);
	return 0;
}

static int on_mount_change(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct dmbyok_policywatch *w = userdata;
	uint64_t now;

	(void)s, (void)fd, (void)revents;
	/* The kernel clears the flag as it reports it: nothing to read here. */
	if (sd_event_now(sd_event_source_get_event(w->timer), CLOCK_MONOTONIC, &now) >= 0)
		(void)sd_event_source_set_time(w->timer, now + DEBOUNCE_USEC);
	(void)sd_event_source_set_enabled(w->timer, SD_EVENT_ONESHOT);
	return 0;
}

struct dmbyok_policywatch *dmbyok_policywatch_free(struct dmbyok_policywatch *w)
{
	if (!w)
		return NULL;
	sd_event_source_disable_unref(w->io);
	sd_event_source_disable_unref(w->timer);
	if (w->fd >= 0)
		close(w->fd);
	dmbyok_strv_free(w->paths);
	for (size_t i = 0; i < w->n_reported; i++)
		free(w->reported[i]);
	free(w->reported);
	free(w);
	return NULL;
}

int dmbyok_policywatch_new(sd_event *event, const char *data_paths, bool unmount,
                           struct dmbyok_policywatch **ret)
{
	struct dmbyok_policywatch *w;
	_cleanup_free_ char *copy = NULL;
	char *save = NULL;
	int r;

	w = calloc(1, sizeof(*w));
	ENSURE_ALLOC(w);
	w->fd = -1;
	w->unmount = unmount;
	copy = strdup(data_paths);
	w->paths = calloc(strlen(data_paths) / 2 + 2, sizeof(char *));
	if (!copy || !w->paths) {
		dmbyok_policywatch_free(w);
		return -ENOMEM;
	}
	for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		w->paths[w->n_paths] = strdup(p);
		if (!w->paths[w->n_paths++]) {
			dmbyok_policywatch_free(w);
			return -ENOMEM;
		}
	}
	w->fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	r = w->fd < 0 ? -errno : 0;
	if (r >= 0)
		r = sd_event_add_io(event, &w->io, w->fd, EPOLLPRI, on_mount_change, w);
	/* Due at once: the first look is at start. */
	if (r >= 0)
		r = sd_event_add_time(event, &w->timer, CLOCK_MONOTONIC, 1, 0, on_timer, w);
	if (r < 0) {
		dmbyok_policywatch_free(w);
		return log_error_errno(r, "Cannot watch the mount table: %s", dmbyok_strerror(r));
	}
	*ret = w;
	return 0;
}
