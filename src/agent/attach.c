/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd's attach: the volumes of /etc/dmbyok/volumes, at start (boot) and whenever udev
 * hands a disk over (`dmbyok attach DEVICE` from dmbyok-attach@.service asks over the
 * control socket). Each pass runs in one child process, dmbyok_attach_many(): headers and
 * table loads in turn, the KMS unwraps in parallel, so 64 volumes cost a few round trips.
 *
 * READY=1 waits for the first pass: it is sent once every volume without `nofail` is
 * attached or has definitively failed (a revoked key, a bad header), or attach-timeout
 * after the start, whichever comes first, so the boot never hangs on an absent KMS. Whatever
 * waits for the KMS or its disk is retried with backoff after that, and `dmbyok volumes`
 * and `status` say so.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "agent-state.h"
#include "dmbyok/attach.h"
#include "dmbyok/error.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"
#include "dmbyok/token.h"
#include "dmbyok/volumes.h"

enum attach_state {
	ATTACH_PENDING,
	ATTACH_RUNNING,
	ATTACH_DONE,           /* attached (by us or anyone) */
	ATTACH_WAITING_KMS,    /* transient KMS failure: retried with backoff */
	ATTACH_WAITING_DEVICE, /* its disk is absent: udev's attach brings it */
	ATTACH_REVOKED,        /* the customer key refuses: retried slowly */
	ATTACH_CREDENTIALS,    /* this host's credentials fail: retried slowly */
	ATTACH_FAILED,         /* not retried until the disk is handed over again */
};

static const char *const state_names[] = {
	[ATTACH_PENDING] = "pending",
	[ATTACH_RUNNING] = "attaching",
	[ATTACH_DONE] = "attached",
	[ATTACH_WAITING_KMS] = "waiting-for-kms",
	[ATTACH_WAITING_DEVICE] = "waiting-for-device",
	[ATTACH_REVOKED] = "key-revoked",
	[ATTACH_CREDENTIALS] = "credentials-broken",
	[ATTACH_FAILED] = "failed",
};

/* Backoff while the KMS is away: short, so volumes attach within seconds of its return. */
#define RETRY_KMS_MIN_MS  1000ULL
#define RETRY_KMS_MAX_MS  5000ULL
#define RETRY_SLOW_MAX_MS 30000ULL /* revoked key, broken credentials */

struct attach_entry {
	struct dmbyok_volume_entry e;
	char *device; /* resolved, at the last pass */
	enum attach_state state;
	int error;
	unsigned attempts;
	uint64_t retry_at_ms;
	bool automatic; /* auto-attach: not in the table */
};

struct attacher {
	struct agent *agent;
	struct attach_entry *v;
	size_t n;
	pid_t pid;
	int pipe_fd;
	size_t *batch; /* indexes of the running pass */
	size_t n_batch;
	sd_event_source *retry, *deadline;
	uint64_t started_ms;
	bool ready_sent, pass_wanted;
};

static uint64_t now_ms(void)
{
	return dmbyok_now_ms();
}

static void entry_free(struct attach_entry *x)
{
	dmbyok_volume_entry_done(&x->e);
	free(x->device);
}

static bool settled(const struct attach_entry *x)
{
	return x->state == ATTACH_DONE || x->state == ATTACH_REVOKED ||
	       x->state == ATTACH_CREDENTIALS || x->state == ATTACH_FAILED;
}

static void counts(const struct attacher *at, size_t *ret_done, size_t *ret_waiting)
{
	*ret_done = *ret_waiting = 0;
	for (size_t i = 0; i < at->n; i++) {
		*ret_done += at->v[i].state == ATTACH_DONE;
		*ret_waiting += at->v[i].state == ATTACH_WAITING_KMS;
	}
}

static void notify_status(struct attacher *at, bool ready)
{
	size_t done, waiting;

	counts(at, &done, &waiting);
	(void)sd_notifyf(false, "%sSTATUS=Watching %zu key(s); attached %zu of %zu volume(s)%s",
	                 ready ? "READY=1\n" : "", at->agent->n_keys, done, at->n,
	                 waiting ? "; waiting for the KMS" : "");
}

/* READY once the boot need not wait any more (see the top of this file). */
static void maybe_ready(struct attacher *at, bool deadline_passed)
{
	bool all = true;

	if (at->ready_sent) {
		notify_status(at, false);
		return;
	}
	for (size_t i = 0; i < at->n; i++)
		if (!at->v[i].e.nofail && !settled(&at->v[i]))
			all = false;
	if (!all && !deadline_passed)
		return;
	if (!all)
		log_warning("Not every volume is attached after attach-timeout: ready anyway, so "
		            "the boot goes on; retrying them (see `dmbyok volumes`).");
	at->ready_sent = true;
	notify_status(at, true);
	at->deadline = sd_event_source_disable_unref(at->deadline);
}

static void pass(struct attacher *at);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s, (void)usec;
	pass(userdata);
	return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s, (void)usec;
	maybe_ready(userdata, true);
	return 0;
}

/* The next retry among the waiting entries, if any. */
static void schedule_retry(struct attacher *at)
{
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; i < at->n; i++) {
		enum attach_state s = at->v[i].state;

		if (s == ATTACH_WAITING_KMS || s == ATTACH_REVOKED || s == ATTACH_CREDENTIALS ||
		    s == ATTACH_PENDING)
			next = MIN(next, at->v[i].retry_at_ms);
	}
	if (next == UINT64_MAX) {
		(void)sd_event_source_set_enabled(at->retry, SD_EVENT_OFF);
		return;
	}
	(void)sd_event_source_set_time(at->retry, next * 1000ULL);
	(void)sd_event_source_set_enabled(at->retry, SD_EVENT_ONESHOT);
}

static uint64_t backoff_ms(unsigned attempts, uint64_t max)
{
	uint64_t d = RETRY_KMS_MIN_MS << MIN(attempts, 10u);

	return MIN(d, max);
}

static void record_result(struct attach_entry *x, int r)
{
	enum dmbyok_error_class c = dmbyok_error_class(r);

	x->error = r;
	x->attempts++;
	if (r == 0 || r == -EALREADY) {
		if (r == 0)
			log_notice("Attached %s (%s).", x->e.name, x->device);
		x->state = ATTACH_DONE;
		x->attempts = 0;
		return;
	}
	if (c == DMBYOK_ERR_KMS_TRANSIENT) {
		if (x->state != ATTACH_WAITING_KMS)
			log_warning("Cannot attach %s yet: the KMS does not answer (%s). Retrying.",
			            x->e.name, dmbyok_strerror(r));
		x->state = ATTACH_WAITING_KMS;
		x->retry_at_ms = now_ms() + backoff_ms(x->attempts - 1, RETRY_KMS_MAX_MS);
	} else if (c == DMBYOK_ERR_KEY_REVOKED) {
		if (x->state != ATTACH_REVOKED)
			log_error("Not attaching %s: its customer key refuses (%s). It stays locked "
			          "until the key is usable again.",
			          x->e.name, dmbyok_strerror(r));
		x->state = ATTACH_REVOKED;
		x->retry_at_ms = now_ms() + backoff_ms(x->attempts - 1, RETRY_SLOW_MAX_MS);
	} else if (c == DMBYOK_ERR_CREDENTIALS) {
		if (x->state != ATTACH_CREDENTIALS)
			log_error("Cannot attach %s: this host's KMS credentials fail (%s). Fix "
			          "them; retrying.",
			          x->e.name, dmbyok_strerror(r));
		x->state = ATTACH_CREDENTIALS;
		x->retry_at_ms = now_ms() + backoff_ms(x->attempts - 1, RETRY_SLOW_MAX_MS);
	} else {
		log_error("Cannot attach %s (%s): %s. Fix it, then `dmbyok attach %s`.", x->e.name,
		          x->device ? x->device : x->e.device, dmbyok_strerror(r),
		          x->device ? x->device : x->e.device);
		x->state = ATTACH_FAILED;
	}
}

static int on_pass_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct attacher *at = userdata;
	int results[256];
	ssize_t got = read(at->pipe_fd, results, sizeof(int) * at->n_batch);

	sd_event_source_unref(s);
	at->pid = 0;
	close(at->pipe_fd);
	at->pipe_fd = -1;
	for (size_t i = 0; i < at->n_batch; i++) {
		struct attach_entry *x = &at->v[at->batch[i]];
		/* A child that died early leaves no answer: as an outage, retried. */
		int r = got >= (ssize_t)((i + 1) * sizeof(int)) ? results[i] : -EAGAIN;

		record_result(x, r);
	}
	if (si->si_code != CLD_EXITED)
		log_error("The attach process died (signal %d): retrying.", si->si_status);
	free(at->batch);
	at->batch = NULL;
	at->n_batch = 0;
	maybe_ready(at, false);
	if (at->agent->stopping) {
		at->agent->exit_when_idle(at->agent);
		return 0;
	}
	at->agent->rescan_soon(at->agent); /* adopt what was attached */
	if (at->pass_wanted)
		pass(at);
	else
		schedule_retry(at);
	return 0;
}

/* The child: attach the batch, report one int per volume, exit. */
static _Noreturn void run_pass(struct attacher *at, int fd)
{
	struct dmbyok_attach *a = calloc(at->n_batch, sizeof(*a));
	int results[256];

	if (!a)
		_exit(ENOMEM);
	for (size_t i = 0; i < at->n_batch; i++) {
		const struct attach_entry *x = &at->v[at->batch[i]];

		a[i] = (struct dmbyok_attach){ .name = x->e.name,
			                       .device = x->device,
			                       .header = x->e.header,
			                       .perf_set = x->e.perf_set,
			                       .perf_flags = x->e.perf_flags };
	}
	(void)dmbyok_attach_many(a, at->n_batch, &at->agent->kms,
	                         at->agent->conf.attach_concurrency);
	for (size_t i = 0; i < at->n_batch; i++)
		results[i] = a[i].result;
	(void)!write(fd, results, sizeof(int) * at->n_batch);
	_exit(0);
}

/* One pass over the entries that are due: resolve their disks, attach what is there. */
static void pass(struct attacher *at)
{
	uint64_t now = now_ms();
	int fds[2];
	size_t *batch;
	size_t n = 0;

	if (at->agent->stopping)
		return;
	if (at->pid) {
		at->pass_wanted = true; /* after the running one */
		return;
	}
	at->pass_wanted = false;
	batch = calloc(at->n ? at->n : 1, sizeof(*batch));
	if (!batch) {
		log_oom();
		return;
	}
	for (size_t i = 0; i < at->n && n < 256; i++) {
		struct attach_entry *x = &at->v[i];

		if (settled(x) && x->state != ATTACH_REVOKED && x->state != ATTACH_CREDENTIALS)
			continue;
		if (x->state != ATTACH_PENDING && x->state != ATTACH_WAITING_DEVICE &&
		    x->retry_at_ms > now)
			continue;
		free(x->device);
		x->device = NULL;
		if (dmbyok_volume_entry_resolve(&x->e, &x->device) < 0) {
			if (x->state != ATTACH_WAITING_DEVICE)
				log_info("%s: %s is not there (yet); it is attached when it appears.",
				         x->e.name, x->e.device);
			x->state = ATTACH_WAITING_DEVICE;
			continue;
		}
		x->state = ATTACH_RUNNING;
		batch[n++] = i;
	}
	if (n == 0) {
		free(batch);
		maybe_ready(at, false);
		schedule_retry(at);
		return;
	}
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_error("Cannot attach: %m");
		goto fail;
	}
	at->batch = batch;
	at->n_batch = n;
	log_info("Attaching %zu volume(s).", n);
	at->pid = fork();
	if (at->pid == 0) {
		close(fds[0]);
		run_pass(at, fds[1]);
	}
	close(fds[1]);
	if (at->pid < 0 ||
	    sd_event_add_child(at->agent->event, NULL, at->pid, WEXITED, on_pass_exit, at) < 0) {
		log_error("Cannot start the attach process: %m");
		if (at->pid > 0) {
			(void)kill(at->pid, SIGKILL);
			(void)waitpid(at->pid, NULL, 0);
		}
		at->pid = 0;
		close(fds[0]);
		at->batch = NULL;
		at->n_batch = 0;
		goto fail;
	}
	at->pipe_fd = fds[0];
	return;
fail:
	for (size_t i = 0; i < n; i++)
		record_result(&at->v[batch[i]], -EAGAIN);
	free(batch);
	schedule_retry(at);
}

static int add_entry(struct attacher *at, const struct dmbyok_volume_entry *e, bool automatic)
{
	struct attach_entry *l = reallocarray(at->v, at->n + 1, sizeof(*l));
	struct attach_entry *x;

	ENSURE_ALLOC(l);
	at->v = l;
	x = &l[at->n];
	*x = (struct attach_entry){ .e = *e, .automatic = automatic };
	x->e.name = strdup(e->name);
	x->e.device = strdup(e->device);
	x->e.header = e->header ? strdup(e->header) : NULL;
	x->e.on_revoke = e->on_revoke ? strdup(e->on_revoke) : NULL;
	x->e.on_restore = e->on_restore ? strdup(e->on_restore) : NULL;
	if (!x->e.name || !x->e.device || (e->header && !x->e.header) ||
	    (e->on_revoke && !x->e.on_revoke) || (e->on_restore && !x->e.on_restore)) {
		entry_free(x);
		return -ENOMEM;
	}
	at->n++;
	return 0;
}

static struct attach_entry *entry_find(struct attacher *at, const char *name)
{
	for (size_t i = 0; i < at->n; i++)
		if (!strcmp(at->v[i].e.name, name))
			return &at->v[i];
	return NULL;
}

/* Takes in the table's current entries (new ones pending; edited ones as they are now). */
static int load_table(struct attacher *at)
{
	_cleanup_volumes_ struct dmbyok_volumes *t = NULL;

	GUARD(dmbyok_volumes_load(at->agent->conf.volumes, &t));
	for (size_t i = 0; i < t->n; i++)
		if (!entry_find(at, t->entries[i].name))
			GUARD(add_entry(at, &t->entries[i], false));
	return 0;
}

int dmbyok_agent_attach_start(struct agent *a)
{
	struct attacher *at = calloc(1, sizeof(*at));
	int r;

	ENSURE_ALLOC(at);
	a->attach = at;
	*at = (struct attacher){ .agent = a, .pipe_fd = -1, .started_ms = now_ms() };
	r = sd_event_add_time(a->event, &at->retry, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_retry,
	                      at);
	if (r >= 0)
		r = sd_event_source_set_enabled(at->retry, SD_EVENT_OFF);
	if (r >= 0 && a->conf.attach_timeout_ms > 0)
		r = sd_event_add_time_relative(a->event, &at->deadline, CLOCK_MONOTONIC,
		                               a->conf.attach_timeout_ms * 1000ULL, 1000,
		                               on_deadline, at);
	if (r < 0)
		return r;
	r = load_table(at);
	if (r < 0)
		log_error("Cannot read the volumes table: %s. Attaching nothing.", dmbyok_strerror(r));
	if (at->n)
		log_info("%zu volume(s) in %s.", at->n,
		         a->conf.volumes ? a->conf.volumes : dmbyok_volumes_path());
	pass(at);
	maybe_ready(at, a->conf.attach_timeout_ms == 0);
	return 0;
}

bool dmbyok_agent_attach_busy(const struct agent *a)
{
	return a->attach && a->attach->pid;
}

void dmbyok_agent_attach_free(struct agent *a)
{
	struct attacher *at = a->attach;

	if (!at)
		return;
	for (size_t i = 0; i < at->n; i++)
		entry_free(&at->v[i]);
	free(at->v);
	free(at->batch);
	if (at->pipe_fd >= 0)
		close(at->pipe_fd);
	sd_event_source_disable_unref(at->retry);
	sd_event_source_disable_unref(at->deadline);
	free(at);
	a->attach = NULL;
}

/* auto-attach: a dmbyok volume not in the table, named dmbyok-<LUKS2 UUID>. */
static int auto_entry(struct attacher *at, const char *device, struct attach_entry **ret)
{
	_cleanup_(dmbyok_token_freep) struct dmbyok_token *t = NULL;
	struct dmbyok_volume_entry e = { 0 };
	_cleanup_free_ char *name = NULL;
	const char *uuid;
	int r;

	r = dmbyok_read_token(device, NULL, &t);
	if (r < 0)
		return r;
	uuid = json_object_get_string(json_object_object_get(t->context, DMBYOK_CONTEXT_VOLUME));
	if (!uuid || asprintf(&name, "dmbyok-%s", uuid) < 0)
		return -EINVAL;
	*ret = entry_find(at, name);
	if (*ret)
		return 0;
	e.name = name;
	e.device = (char *)device;
	GUARD(add_entry(at, &e, true));
	*ret = &at->v[at->n - 1];
	return 0;
}

static json_object *answer(const char *attach, const char *name, const char *fmt, ...)
    _printf_(3, 4);
static json_object *answer(const char *attach, const char *name, const char *fmt, ...)
{
	json_object *o = json_object_new_object();
	_cleanup_free_ char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (!o)
		return NULL;
	json_object_object_add(o, "attach", json_object_new_string(attach));
	if (name)
		json_object_object_add(o, "name", json_object_new_string(name));
	if (msg)
		json_object_object_add(o, "message", json_object_new_string(msg));
	return o;
}

int dmbyok_agent_attach_command(struct agent *a, json_object *request, json_object **ret)
{
	struct attacher *at = a->attach;
	_cleanup_volumes_ struct dmbyok_volumes *t = NULL;
	const struct dmbyok_volume_entry *e = NULL;
	struct attach_entry *x = NULL;
	json_object *v;
	const char *device;
	int r;

	if (!at || !json_object_object_get_ex(request, "name", &v))
		return -EINVAL;
	device = json_object_get_string(v);
	if (device[0] != '/')
		return -EINVAL;
	/* The table may have been edited since the start. */
	(void)load_table(at);
	r = dmbyok_volumes_load(a->conf.volumes, &t);
	if (r >= 0)
		r = dmbyok_volumes_find_device(t, device, &e);
	if (r >= 0)
		x = entry_find(at, e->name);
	else if (r == -ENOENT && a->conf.auto_attach) {
		r = auto_entry(at, device, &x);
		if (r < 0) {
			*ret = answer("ignored", NULL, "%s is not a dmbyok volume: ignored.", device);
			return *ret ? 0 : -ENOMEM;
		}
	} else if (r == -ENOENT) {
		*ret = answer("ignored", NULL,
		              "%s is not in the volumes table (and auto-attach is off): ignored.",
		              device);
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		return r;
	if (!x)
		return -ENOENT;
	if (x->state == ATTACH_DONE) {
		_cleanup_free_ char *holder = NULL;

		if (dmbyok_mapping_of_device(device, &holder) > 0 && !strcmp(holder, x->e.name)) {
			*ret = answer("already", x->e.name, "%s is attached as %s.", device, x->e.name);
			return *ret ? 0 : -ENOMEM;
		}
	}
	/* Handed over again: whatever it was waiting for, try now. */
	if (x->state != ATTACH_RUNNING) {
		x->state = ATTACH_PENDING;
		x->retry_at_ms = 0;
	}
	pass(at);
	*ret = answer("queued", x->e.name, "attaching %s as %s.", device, x->e.name);
	return *ret ? 0 : -ENOMEM;
}

json_object *dmbyok_agent_attach_json(const struct agent *a)
{
	const struct attacher *at = a->attach;
	json_object *l = json_object_new_array();

	if (!l || !at)
		return l;
	for (size_t i = 0; i < at->n; i++) {
		const struct attach_entry *x = &at->v[i];
		json_object *o = json_object_new_object();

		if (!o || json_object_array_add(l, o) < 0) {
			json_object_put(o);
			json_object_put(l);
			return NULL;
		}
		json_object_object_add(o, "name", json_object_new_string(x->e.name));
		json_object_object_add(o, "device", json_object_new_string(x->e.device));
		json_object_object_add(o, "state", json_object_new_string(state_names[x->state]));
		json_object_object_add(o, "nofail", json_object_new_boolean(x->e.nofail));
		json_object_object_add(o, "automatic", json_object_new_boolean(x->automatic));
		if (x->error && x->state != ATTACH_DONE)
			json_object_object_add(o, "error",
			                       json_object_new_string(dmbyok_strerror(x->error)));
		json_object_object_add(o, "attempts", json_object_new_int((int)x->attempts));
	}
	return l;
}
