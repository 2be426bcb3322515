/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd: keeps the promise while the host runs. It adopts every dmbyok mapping on the
 * host, watches each customer key they use (one probe per key, however many volumes),
 * locks the key's volumes when the customer revokes it and unlocks them when it comes
 * back; an outage never locks. The decisions are keywatch.c's; this file runs them.
 *
 * One sd-event loop, single-threaded. Everything that can wait on the network or a disk
 * runs in a child process the loop watches: each key's probes in its own long-lived
 * prober (prober.c: one KMS client per key, reused), each lock, teardown, unlock or re-wrap
 * in a child of its own. So a KMS call hanging for one key never delays another key's
 * probe or lock, and the watchdog keeps being fed. Mappings are found by a rescan on every
 * device-mapper uevent (and once a minute, in case an event was lost); torn-down volumes by their
 * records.
 */
#include <getopt.h>
#include <inttypes.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "dmbyok/encoding.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/message-ids.h"
#include "dmbyok/process.h"
#include "dmbyok/secret.h"
#include "dmbyok/volumes.h"
#include "agent-state.h"
#include "policywatch.h"

/* A lock killed half-way would leave its volume suspended with its key: let children finish. */
static void exit_when_idle(struct agent *a)
{
	/*
	 * A probe in flight too: killed, its prober could not log the KMS call the KMS has
	 * already seen (the audit trail would miss it). Bounded by DMBYOK_PROBER_DEADLINE_MS.
	 */
	for (size_t i = 0; i < a->n_keys; i++)
		if (a->keys[i]->action_pid || a->keys[i]->rewrap_pid ||
		    dmbyok_prober_busy(a->keys[i]->prober))
			return;
	if (dmbyok_agent_attach_busy(a))
		return;
	(void)sd_event_exit(a->event, 0);
}

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct agent *a = userdata;

	(void)s;
	log_info("Stopping (signal %u): waiting for running probes and actions.", si->ssi_signo);
	(void)sd_notify(false, "STOPPING=1");
	a->stopping = true;
	exit_when_idle(a);
	return 0;
}

static uint64_t now_ms(void)
{
	return dmbyok_now_ms();
}

static void vols_free(struct vol *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].name);
		free(v[i].device);
		free(v[i].header);
	}
	free(v);
}

static void key_free(struct key *k)
{
	if (!k)
		return;
	sd_event_source_disable_unref(k->timer);
	dmbyok_prober_free(k->prober);
	dmbyok_keywatch_done(&k->watch);
	dmbyok_token_free(k->token);
	vols_free(k->vols, k->n_vols);
	free(k->grant_id);
	free(k->label);
	free(k);
}

static void perform(struct key *k, unsigned acts);

/* Wake up exactly when the watch next needs us: no wake-ups between probes. */
static void schedule(struct key *k)
{
	uint64_t d = dmbyok_keywatch_next_deadline(&k->watch);

	if (d == UINT64_MAX) {
		(void)sd_event_source_set_enabled(k->timer, SD_EVENT_OFF);
		return;
	}
	/* keywatch counts CLOCK_MONOTONIC milliseconds, sd-event microseconds. */
	(void)sd_event_source_set_time(k->timer, d * 1000ULL);
	(void)sd_event_source_set_enabled(k->timer, SD_EVENT_ONESHOT);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct key *k = userdata;

	(void)s, (void)usec;
	if (k->agent->stopping)
		return 0;
	perform(k, dmbyok_keywatch_on_tick(&k->watch, now_ms()));
	schedule(k);
	return 0;
}

/* A child's result: its exit status carries the errno (0: success). */
static int child_result(const siginfo_t *si)
{
	return si->si_code == CLD_EXITED ? -si->si_status : -EINTR;
}

static void start_rewrap(struct key *k);

/*
 * One journal entry about a key and its volumes, with a stable MESSAGE_ID (message-ids.h)
 * and the fields operators query: KEY_ARN, VOLUME (once per volume), CLASS of the last
 * probe answer and its LATENCY_MS, and one more field if `name` is given.
 */
static void key_event(const struct key *k, enum log_level level, const char *message_id,
                      const char *name, const char *value, const char *fmt, ...) _printf_(6, 7);
static void key_event(const struct key *k, enum log_level level, const char *message_id,
                      const char *name, const char *value, const char *fmt, ...)
{
	struct log_fields f = {};
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(void)dmbyok_log_field(&f, "KEY_ARN", "%s", k->watch.key_arn);
	if (k->grant_id)
		(void)dmbyok_log_field(&f, "GRANT_ID", "%s", k->grant_id);
	if (k->watch.probes) {
		(void)dmbyok_log_field(&f, "CLASS", "%s",
		                       dmbyok_error_class_name(k->watch.last_class));
		(void)dmbyok_log_field(&f, "LATENCY_MS", "%llu",
		                       (unsigned long long)k->last_latency_ms);
	}
	if (name)
		(void)dmbyok_log_field(&f, name, "%s", value);
	for (size_t i = 0; i < k->n_vols; i++)
		(void)dmbyok_log_field(&f, "VOLUME", "%s", k->vols[i].name);
	log_struct(level, message_id, f.field, "%s", msg);
}
static void rescan_soon(struct agent *a);

/* Each action bit of a batch is reported with the batch's result. */
static void report_actions(struct key *k, unsigned actions, int r)
{
	for (unsigned bit = DMBYOK_KEYWATCH_LOCK; bit <= DMBYOK_KEYWATCH_REPROVISION; bit <<= 1)
		if (actions & bit)
			(void)dmbyok_keywatch_action_done(&k->watch, bit, r, now_ms());
}

/* A probe's answer, from the key's prober (or a probe that could not be started). */
static void on_probe_answer(int r, unsigned found, void *userdata)
{
	struct key *k = userdata;
	uint64_t t = now_ms();
	bool deleted = false;

	if (k->agent->stopping) {
		exit_when_idle(k->agent); /* that was the last probe it waited for, perhaps */
		return;
	}
	if (found & DMBYOK_PROBE_KEY_DELETED && k->watch.state != DMBYOK_KEYWATCH_KEY_DELETED) {
		deleted = true;
		key_event(k, LOG_LEVEL_ERROR, DMBYOK_MESSAGE_KEY_DELETED, NULL, NULL,
		          "The customer key %s no longer exists: its %zu volume(s) are torn down "
		          "for good. Their data is unrecoverable (crypto-shredded).",
		          k->label, k->n_vols);
	}
	/* An outage is logged once as it starts (and never locks). */
	if (dmbyok_error_class(r) == DMBYOK_ERR_KMS_TRANSIENT && !k->unreachable) {
		k->unreachable = true;
		key_event(k, LOG_LEVEL_WARNING, DMBYOK_MESSAGE_KMS_UNREACHABLE, "DETAIL",
		          dmbyok_strerror(r),
		          "The KMS does not answer for %s (%s): nothing is locked for that; "
		          "probing on.",
		          k->label, dmbyok_strerror(r));
	} else if (dmbyok_error_class(r) != DMBYOK_ERR_KMS_TRANSIENT && k->unreachable) {
		k->unreachable = false;
		log_notice("The KMS answers for %s again.", k->label);
	}
	if (r == 0 && (found & DMBYOK_PROBE_ALIAS_MOVED))
		k->rewrap_due = true;
	k->last_latency_ms = t - k->probe_started_ms;
	if (k->agent->metrics)
		(void)dmbyok_metrics_probe_done(k->agent->metrics, k->watch.key_arn, k->grant_id, r,
		                                k->last_latency_ms);
	log_debug("Probe of %s: %s in %llu ms.", k->label,
	          dmbyok_error_class_name(dmbyok_error_class(r)),
	          (unsigned long long)k->last_latency_ms);
	perform(k, dmbyok_keywatch_on_probe(&k->watch, r, deleted, t));
	dmbyok_agent_write_metrics(k->agent);
	start_rewrap(k);
	schedule(k);
}

static const char *action_done_verb(unsigned actions)
{
	if (actions & DMBYOK_KEYWATCH_TEARDOWN)
		return actions & DMBYOK_KEYWATCH_LOCK ? "Locked and tore down" : "Tore down";
	if (actions & DMBYOK_KEYWATCH_LOCK)
		return "Locked"; /* those nobody held are torn down too: logged one by one */
	return "Restored";       /* unlocked, or mapped again if torn down: logged one by one */
}

static const char *action_name(unsigned actions)
{
	if (actions & DMBYOK_KEYWATCH_TEARDOWN)
		return actions & DMBYOK_KEYWATCH_LOCK ? "lock and tear down" : "tear down";
	if (actions & DMBYOK_KEYWATCH_LOCK)
		return "lock";
	return actions & DMBYOK_KEYWATCH_REPROVISION ? "reprovision" : "unlock";
}

static int on_action_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct key *k = userdata;
	int r = child_result(si);
	unsigned action = k->action;

	sd_event_source_unref(s);
	k->action_pid = 0;
	k->action = 0;
	if (r < 0)
		log_error("Could not %s the volumes of %s: %s. Retrying.", action_name(action),
		          k->label, dmbyok_strerror(r));
	else {
		key_event(k, LOG_LEVEL_NOTICE,
		          action & DMBYOK_KEYWATCH_TEARDOWN ? DMBYOK_MESSAGE_TORN_DOWN
		          : action & DMBYOK_KEYWATCH_LOCK   ? DMBYOK_MESSAGE_VOLUMES_LOCKED
		                                            : DMBYOK_MESSAGE_RESTORED,
		          "ACTION", action_name(action), "%s the %zu volume(s) of %s.",
		          action_done_verb(action), k->n_vols, k->label);
		if (action & DMBYOK_KEYWATCH_LOCK)
			k->locked_at_us = dmbyok_agent_realtime_us();
		else if (action & (DMBYOK_KEYWATCH_UNLOCK | DMBYOK_KEYWATCH_REPROVISION))
			k->restored_at_us = dmbyok_agent_realtime_us();
	}
	report_actions(k, action, r);
	if (k->agent->metrics) {
		uint64_t took = now_ms() - k->action_started_ms;

		if (action & (DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN))
			dmbyok_metrics_lock_done(k->agent->metrics, took, r);
		else
			dmbyok_metrics_restore_done(k->agent->metrics, took, r);
	}
	dmbyok_agent_write_metrics(k->agent);
	if (k->agent->stopping) {
		exit_when_idle(k->agent);
		return 0;
	}
	perform(k, dmbyok_keywatch_on_tick(&k->watch, now_ms()));
	start_rewrap(k);
	schedule(k);
	return 0;
}

/* In a child: an on-revoke/on-restore hook, bounded. Its exit status is its result. */
struct hook_args {
	const char *program, *event, *key_arn, *grant_id;
	const struct vol *vol;
};

static int exec_hook(void *userdata)
{
	const struct hook_args *h = userdata;
	_cleanup_free_ char *node = NULL;

	if (asprintf(&node, "/dev/mapper/%s", h->vol->name) < 0)
		return -ENOMEM;
	if (setenv("DMBYOK_EVENT", h->event, 1) < 0 ||
	    setenv("DMBYOK_VOLUME", h->vol->name, 1) < 0 || setenv("DMBYOK_MAPPER", node, 1) < 0 ||
	    setenv("DMBYOK_DEVICE", h->vol->device, 1) < 0 ||
	    setenv("DMBYOK_KEY_ARN", h->key_arn, 1) < 0 ||
	    (h->grant_id && setenv("DMBYOK_GRANT_ID", h->grant_id, 1) < 0))
		return -ENOMEM;
	execl(h->program, h->program, h->event, h->vol->name, (char *)NULL);
	return -errno;
}

/*
 * The volume's own hook (on-revoke=/on-restore= in the volumes table) if it has one, else
 * the agent's. The table then names a program that runs as root: it must be as trusted as
 * the config file, and the program as any hook; if not, no hook runs (and the log says why).
 */
static char *hook_for(struct key *k, const struct vol *v, bool revoke)
{
	_cleanup_volumes_ struct dmbyok_volumes *t = NULL;
	const char *path = k->agent->conf.volumes ? k->agent->conf.volumes : dmbyok_volumes_path();
	const char *global = revoke ? k->agent->conf.on_revoke : k->agent->conf.on_restore;
	const struct dmbyok_volume_entry *e;
	const char *own;

	dmbyok_log_quiet_push();
	if (dmbyok_volumes_load(path, &t) < 0)
		t = NULL;
	dmbyok_log_quiet_pop();
	e = t ? dmbyok_volumes_find(t, v->name) : NULL;
	own = e ? (revoke ? e->on_revoke : e->on_restore) : NULL;
	if (!own)
		return global ? strdup(global) : NULL;
	if (dmbyok_agent_check_trusted_file(path) < 0 ||
	    dmbyok_agent_check_hook(own, revoke ? "on-revoke" : "on-restore") < 0) {
		log_error("Not running %s's own %s hook from %s (see above).", v->name,
		          revoke ? "on-revoke" : "on-restore", path);
		return NULL;
	}
	return strdup(own);
}

static void run_hook(struct key *k, bool revoke, const struct vol *v)
{
	_cleanup_free_ char *program = hook_for(k, v, revoke);
	const char *event = revoke ? "revoke" : "restore";
	int r;

	if (!program)
		return;
	log_info("Running the %s hook for %s: %s %s %s.", event, v->name, program, event, v->name);
	r = dmbyok_run_bounded(exec_hook,
	                       &(struct hook_args){ .program = program,
	                                            .event = event,
	                                            .key_arn = k->watch.key_arn,
	                                            .grant_id = k->grant_id,
	                                            .vol = v },
	                       HOOK_TIMEOUT_MS);
	if (r == -ETIMEDOUT)
		log_warning("The %s hook for %s did not finish within %u s: killed.", event,
		            v->name, HOOK_TIMEOUT_MS / 1000);
	else if (r != 0)
		log_warning("The %s hook for %s failed (exit status %d).", event, v->name, -r);
}

/*
 * Lock every mapped volume of the key, then tear down at once those nobody holds open. The
 * others stay locked; their users are told by the on-revoke hook (stop the service,
 * unmount), after which those now unused are torn down too. The error target for what is
 * still in use waits for teardown_after (the TEARDOWN action).
 */
static int lock_volumes(struct key *k)
{
	int r = 0, q;

	for (size_t i = 0; i < k->n_vols; i++) {
		if (k->vols[i].torn_down)
			continue;
		q = dmbyok_lock(k->vols[i].name, k->agent->conf.lock_timeout_ms);
		/* Every volume is tried; the action is reported failed (and redone) if one fails.
		 */
		if (q < 0 && r == 0)
			r = q;
	}
	if (r < 0)
		return r;
	for (size_t i = 0; i < k->n_vols; i++) {
		struct vol *v = &k->vols[i];

		if (v->torn_down)
			continue;
		if (dmbyok_teardown(v->name, k->agent->conf.lock_timeout_ms, false) != 1)
			continue; /* torn down, or failed: it stays locked, which is safe */
		run_hook(k, true, v);
		(void)dmbyok_teardown(v->name, k->agent->conf.lock_timeout_ms, false);
	}
	return 0;
}

static int teardown_volumes(struct key *k)
{
	int r = 0, q;

	for (size_t i = 0; i < k->n_vols; i++) {
		if (k->vols[i].torn_down)
			continue;
		q = dmbyok_teardown(k->vols[i].name, k->agent->conf.lock_timeout_ms, true);
		if (q < 0 && r == 0)
			r = q;
	}
	return r;
}

/* Unlock what is locked, map again what was torn down (then its on-restore hook). */
static int restore_volumes(struct key *k)
{
	int r = 0, q;

	for (size_t i = 0; i < k->n_vols; i++) {
		struct vol *v = &k->vols[i];

		if (v->torn_down) {
			q = dmbyok_reprovision(v->name, &k->agent->kms);
			if (q == 0)
				run_hook(k, false, v);
		} else
			q = dmbyok_unlock(v->name, v->header, &k->agent->kms);
		if (q < 0 && r == 0)
			r = q;
	}
	return r;
}

/* Re-wrap under the alias's new target; the next rescan moves the volumes to that key. */
static int rewrap_volumes(struct key *k)
{
	int r = 0, q;

	for (size_t i = 0; i < k->n_vols; i++) {
		q = dmbyok_rewrap(k->vols[i].device, k->vols[i].header, NULL, &k->agent->kms);
		if (q < 0 && r == 0)
			r = q;
	}
	return r;
}

#define DMBYOKD_REWRAP (1u << 16) /* not a keywatch action: the daemon's own */

/* In the child: a re-wrap, or a batch of volume actions (LOCK|TEARDOWN, ...). */
static int run_child(struct key *k, unsigned what)
{
	if (what == DMBYOKD_REWRAP)
		return rewrap_volumes(k);
	if (what & DMBYOK_KEYWATCH_LOCK)
		GUARD(lock_volumes(k));
	if (what & DMBYOK_KEYWATCH_TEARDOWN)
		GUARD(teardown_volumes(k));
	if (what & (DMBYOK_KEYWATCH_UNLOCK | DMBYOK_KEYWATCH_REPROVISION))
		GUARD(restore_volumes(k));
	return 0;
}

static pid_t spawn(struct key *k, unsigned what, sd_event_child_handler_t done)
{
	pid_t pid = fork();
	int r;

	if (pid < 0) {
		log_error("Cannot fork: %m");
		return -1;
	}
	if (pid == 0) {
		r = run_child(k, what);
		_exit(r < 0 ? (-r & 0xff) : 0);
	}
	r = sd_event_add_child(k->agent->event, NULL, pid, WEXITED, done, k);
	if (r < 0) {
		log_error("Cannot watch child %d: %s", (int)pid, strerror(-r));
		(void)kill(pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static int on_rewrap_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct key *k = userdata;
	int r = child_result(si);

	sd_event_source_unref(s);
	k->rewrap_pid = 0;
	if (r < 0)
		log_error("Could not re-wrap the volumes of %s under the new target of %s: %s. "
		          "Retrying after the next probe.",
		          k->watch.key_arn, k->token->key_id, dmbyok_strerror(r));
	else {
		k->rewrap_due = false;
		key_event(k, LOG_LEVEL_NOTICE, DMBYOK_MESSAGE_REWRAPPED, "KEY_ID", k->token->key_id,
		          "Re-wrapped the %zu volume(s) of %s: %s was re-targeted; they now "
		          "follow its new key.",
		          k->n_vols, k->watch.key_arn, k->token->key_id);
	}
	if (k->agent->stopping)
		exit_when_idle(k->agent);
	else
		rescan_soon(k->agent); /* their records name the new key: watch it instead */
	return 0;
}

/* Only while the key works and nothing else runs for it: a re-wrap needs the old key. */
static void start_rewrap(struct key *k)
{
	if (!k->rewrap_due || k->rewrap_pid || k->action_pid || k->agent->stopping ||
	    k->watch.state != DMBYOK_KEYWATCH_ACTIVE)
		return;
	log_info("%s now names another key than %s: re-wrapping its %zu volume(s).",
	         k->token->key_id, k->watch.key_arn, k->n_vols);
	k->rewrap_pid = spawn(k, DMBYOKD_REWRAP, on_rewrap_exit);
	if (k->rewrap_pid < 0)
		k->rewrap_pid = 0;
}

static void perform(struct key *k, unsigned acts)
{
	const char *arn = k->label;
	int r;

	if (acts & DMBYOK_KEYWATCH_ALERT_CREDENTIALS)
		key_event(k, LOG_LEVEL_ERROR, DMBYOK_MESSAGE_CREDENTIALS_BROKEN, "DETAIL",
		          dmbyok_strerror(k->watch.last_result),
		          "This host's KMS credentials fail (%s) for %s: nothing is locked for "
		          "that; fix the credentials.",
		          dmbyok_strerror(k->watch.last_result), arn);
	if ((acts & DMBYOK_KEYWATCH_LOCK) && k->watch.state != DMBYOK_KEYWATCH_KEY_DELETED) {
		const char *reason = dmbyok_keywatch_lock_reason_name(k->watch.lock_reason);

		if (k->watch.lock_reason == DMBYOK_KEYWATCH_REASON_FAIL_CLOSED)
			key_event(k, LOG_LEVEL_WARNING, DMBYOK_MESSAGE_KEY_REVOKED, "REASON",
			          reason,
			          "Locking the %zu volume(s) of %s (fail-closed): no good answer "
			          "for %" PRIu64 " s.",
			          k->n_vols, arn, (now_ms() - k->watch.last_ok_ms) / 1000);
		else
			key_event(k, LOG_LEVEL_WARNING, DMBYOK_MESSAGE_KEY_REVOKED, "REASON",
			          reason,
			          "Locking the %zu volume(s) of %s: the customer revoked the key "
			          "(%s, %u answers in a row).",
			          k->n_vols, arn, dmbyok_strerror(k->watch.last_result),
			          k->watch.revoked_streak);
	}
	if (acts & DMBYOK_KEYWATCH_ALERT_OTHER)
		log_error("Probing %s fails unexpectedly: %s; nothing is locked for that.", arn,
		          dmbyok_strerror(k->watch.last_result));
	if (acts & DMBYOK_KEYWATCH_ALERT_CLEARED)
		log_notice("Probing %s works again.", arn);

	if (acts & DMBYOK_KEYWATCH_VOLUME_ACTIONS) {
		/* keywatch.c has logged the decision; the outcome is logged on the child's exit. */
		k->action = acts & DMBYOK_KEYWATCH_VOLUME_ACTIONS;
		k->action_started_ms = now_ms();
		k->action_pid = spawn(k, k->action, on_action_exit);
		if (k->action_pid < 0) {
			k->action_pid = 0;
			report_actions(k, k->action, -EAGAIN);
			k->action = 0;
		}
	}

	if (acts & DMBYOK_KEYWATCH_PROBE) {
		k->probe_started_ms = now_ms();
		k->describe = k->probes_to_describe == 0
		                  ? DMBYOK_PROBE_DESCRIBE_ALIAS | DMBYOK_PROBE_DESCRIBE_DELETED
		                  : 0;
		if (k->watch.state == DMBYOK_KEYWATCH_ACTIVE ||
		    k->watch.state == DMBYOK_KEYWATCH_SUSPECT)
			k->describe |= DMBYOK_PROBE_DESCRIBE_DELETED;
		k->probes_to_describe =
		    k->probes_to_describe == 0 ? DESCRIBE_EVERY - 1 : k->probes_to_describe - 1;
		r = k->prober ? 0
		              : dmbyok_prober_new(k->agent->event, k->token, &k->agent->kms,
		                                  on_probe_answer, k, &k->prober);
		if (r >= 0)
			r = dmbyok_prober_probe(k->prober, k->describe);
		if (r < 0) {
			log_warning("Cannot probe %s: %s", k->label, dmbyok_strerror(r));
			/* Reported as a transient answer, as keywatch requires. */
			perform(k, dmbyok_keywatch_on_probe(&k->watch, -EAGAIN, false, now_ms()));
		}
	}
}

static struct key *key_find(struct agent *a, const char *arn, const char *grant_id)
{
	for (size_t i = 0; i < a->n_keys; i++)
		if (!strcmp(a->keys[i]->watch.key_arn, arn) &&
		    streq_ptr(a->keys[i]->grant_id, grant_id))
			return a->keys[i];
	return NULL;
}

static int key_new(struct agent *a, const char *key_arn, const char *grant_id, struct key **ret)
{
	struct key *k, **l;
	int r;

	k = calloc(1, sizeof(*k));
	ENSURE_ALLOC(k);
	k->agent = a;
	k->grant_id = grant_id ? strdup(grant_id) : NULL;
	r = grant_id && !k->grant_id ? -ENOMEM : 0;
	if (r >= 0 && (grant_id ? asprintf(&k->label, "%s through grant %s", key_arn, grant_id)
	                        : asprintf(&k->label, "%s", key_arn)) < 0) {
		k->label = NULL;
		r = -ENOMEM;
	}
	if (r >= 0)
		r = dmbyok_keywatch_init(&k->watch, key_arn, &a->conf.watch, now_ms());
	if (r >= 0)
		r = sd_event_add_time(a->event, &k->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, k);
	l = r >= 0 ? realloc(a->keys, (a->n_keys + 1) * sizeof(*l)) : NULL;
	if (!l) {
		key_free(k);
		return r < 0 ? r : -ENOMEM;
	}
	a->keys = l;
	a->keys[a->n_keys++] = k;
	*ret = k;
	return 0;
}

static int vol_add(struct key *k, const struct mapping_status *s)
{
	struct vol *l = realloc(k->vols, (k->n_vols + 1) * sizeof(*l));
	struct vol *v;

	ENSURE_ALLOC(l);
	k->vols = l;
	v = &l[k->n_vols];
	*v = (struct vol){ .name = strdup(s->dm.name),
		           .device = strdup(s->device),
		           .header = s->header ? strdup(s->header) : NULL,
		           .torn_down = s->torn_down };
	if (!v->name || !v->device || (s->header && !v->header)) {
		free(v->name);
		free(v->device);
		free(v->header);
		return -ENOMEM;
	}
	k->n_vols++;
	return 0;
}

/* Adds one volume found by a scan to its key's watch (a new watch for a new key). */
static void adopt(struct agent *a, const struct mapping_status *s)
{
	struct key *k = key_find(a, s->key_arn, s->grant_id);
	bool new_key = false;

	if (!k) {
		if (key_new(a, s->key_arn, s->grant_id, &k) < 0)
			return;
		new_key = true;
		if (s->grant_id)
			log_info("Watching key %s through grant %s (%s's own).", s->key_arn,
			         s->grant_id, s->dm.name);
		else
			log_info("Watching key %s.", s->key_arn);
	}
	if (vol_add(k, s) < 0)
		return;
	if (!k->token && dmbyok_read_token(s->device, s->header, &k->token) < 0)
		log_warning("Cannot read the token of %s yet.", s->dm.name);
	/* An agent restarted after it locked them: they stay locked until the key is back. */
	if (new_key && (s->locked || s->torn_down)) {
		log_notice("%s is %s: keeping it so until %s answers again.", s->dm.name,
		           s->torn_down ? "torn down" : "locked", s->key_arn);
		dmbyok_keywatch_adopt_locked(&k->watch, now_ms());
	}
	k->seen = true;
}

/*
 * Adopts what exists: every dmbyok mapping, and every volume dmbyokd tore down, grouped by
 * the key that wraps its DEK. Nothing is changed here. Key names come from the runtime
 * records (a re-wrap updates them); a header is read only for a mapping without a record.
 */
static int rescan(struct agent *a)
{
	struct mapping_status *l = NULL, *torn = NULL;
	size_t n = 0, n_torn = 0;
	int r;

	r = dmbyok_list_mappings(false, &l, &n);
	if (r < 0)
		return log_error_errno(r, "Cannot list mappings: %s", dmbyok_strerror(r));
	r = dmbyok_list_torn_down(&torn, &n_torn);
	if (r < 0)
		log_warning("Cannot list torn-down volumes: %s", dmbyok_strerror(r));
	for (size_t i = 0; i < a->n_keys; i++) {
		a->keys[i]->seen = false;
		vols_free(a->keys[i]->vols, a->keys[i]->n_vols);
		a->keys[i]->vols = NULL;
		a->keys[i]->n_vols = 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (!l[i].key_arn) {
			struct mapping_status full = { 0 };

			/* No record: the header names the key (if the device answers now). */
			if (dmbyok_status(l[i].dm.name, &full) == 0 && full.key_arn)
				adopt(a, &full);
			dmbyok_mapping_status_done(&full);
			continue;
		}
		adopt(a, &l[i]);
	}
	for (size_t i = 0; i < n_torn; i++) {
		bool mapped = false;

		/* An in-use torn-down mapping has the error target: not in the first list. */
		for (size_t j = 0; j < n && !mapped; j++)
			mapped = !strcmp(l[j].dm.name, torn[i].dm.name);
		if (!mapped)
			adopt(a, &torn[i]);
	}
	/* Keys no volume uses any more are dropped, once nothing runs for them. */
	for (size_t i = 0; i < a->n_keys;) {
		struct key *k = a->keys[i];

		if (k->seen || k->action_pid || k->rewrap_pid || !k->token) {
			if (k->seen && k->token)
				schedule(k);
			i++;
			continue;
		}
		log_info("No volume uses %s any more: no longer watching it.", k->label);
		key_free(k);
		a->keys[i] = a->keys[--a->n_keys];
	}
	dmbyok_mapping_status_list_free(l, n);
	dmbyok_mapping_status_list_free(torn, n_torn);
	return 0;
}

static int on_rescan(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct agent *a = userdata;

	if (a->stopping)
		return 0;
	(void)rescan(a);
	/* The backstop: the next uevent brings this forward. */
	(void)sd_event_source_set_time_relative(s, RESCAN_BACKSTOP_MS * 1000ULL);
	(void)sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
	return 0;
}

/* Bring the rescan forward to RESCAN_DEBOUNCE_MS from now (unless it is due sooner). */
static void rescan_soon(struct agent *a)
{
	uint64_t now_us, due;

	if (sd_event_now(a->event, CLOCK_MONOTONIC, &now_us) < 0 ||
	    sd_event_source_get_time(a->rescan, &due) < 0)
		return;
	if (due > now_us + RESCAN_DEBOUNCE_MS * 1000ULL) {
		(void)sd_event_source_set_time(a->rescan, now_us + RESCAN_DEBOUNCE_MS * 1000ULL);
		(void)sd_event_source_set_enabled(a->rescan, SD_EVENT_ONESHOT);
	}
}

/*
 * The kernel's uevents (not udev's: the agent must work where udevd does not run, and
 * before it does at boot). Only whether a dm device came, went or changed matters.
 */
static int on_uevent(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct agent *a = userdata;
	char buf[8192];
	bool dm = false;
	ssize_t n;

	(void)s, (void)revents;
	while ((n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) != 0) {
		if (n < 0) {
			if (errno == ENOBUFS)
				dm = true; /* events were lost: rescan to be sure */
			if (errno == EINTR || errno == ENOBUFS)
				continue;
			break;
		}
		buf[n] = '\0';
		/* "ACTION@DEVPATH" then NUL-separated KEY=VALUE pairs. */
		for (char *p = buf; p < buf + n; p += strlen(p) + 1)
			if (!strncmp(p, "DEVNAME=dm-", 11) || !strncmp(p, "DM_NAME=", 8))
				dm = true;
	}
	if (dm && !a->stopping)
		rescan_soon(a);
	return 0;
}

static int uevents_open(struct agent *a)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = 1 /* kernel */ };
	int fd, r;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	r = sd_event_add_io(a->event, &a->uevents, fd, EPOLLIN, on_uevent, a);
	if (r < 0) {
		close(fd);
		return r;
	}
	(void)sd_event_source_set_io_fd_own(a->uevents, true);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: dmbyokd [--config FILE] [--check-interval S] [--revoke-confirmations N]\n"
	        "               [--restore-interval S] [--fail-closed-after S]\n"
	        "               [--teardown-after S] [--on-revoke PROGRAM] [--on-restore PROGRAM]\n"
	        "               [--lock-timeout S] [--metrics-file PATH] [--control-socket PATH]\n"
	        "               [--region R] [--endpoint URL] [--profile P] [--ca-bundle FILE]\n"
	        "               [--volumes FILE] [--attach-timeout S] [--attach-concurrency N]\n"
	        "               [--auto-attach yes|no] [--policy-data-paths P1:P2...]\n"
	        "               [--policy-unmount yes|no] [--debug] [--version]\n"
	        "Settings are read from %s (or --config FILE) first; options override them.\n",
	        DMBYOK_AGENT_CONFIG_FILE);
}

/* The file first (--config, else the default path if it exists), then the options over it. */
static int parse_args(struct agent *a, int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'F' },
		{ "check-interval", required_argument, NULL, 's' },
		{ "revoke-confirmations", required_argument, NULL, 's' },
		{ "restore-interval", required_argument, NULL, 's' },
		{ "fail-closed-after", required_argument, NULL, 's' },
		{ "teardown-after", required_argument, NULL, 's' },
		{ "on-revoke", required_argument, NULL, 's' },
		{ "on-restore", required_argument, NULL, 's' },
		{ "lock-timeout", required_argument, NULL, 's' },
		{ "metrics-file", required_argument, NULL, 's' },
		{ "control-socket", required_argument, NULL, 's' },
		{ "region", required_argument, NULL, 's' },
		{ "endpoint", required_argument, NULL, 's' },
		{ "profile", required_argument, NULL, 's' },
		{ "ca-bundle", required_argument, NULL, 's' },
		{ "volumes", required_argument, NULL, 's' },
		{ "attach-timeout", required_argument, NULL, 's' },
		{ "attach-concurrency", required_argument, NULL, 's' },
		{ "auto-attach", required_argument, NULL, 's' },
		{ "policy-data-paths", required_argument, NULL, 's' },
		{ "policy-unmount", required_argument, NULL, 's' },
		{ "debug", no_argument, NULL, 'd' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *config = NULL;
	char where[64];
	int opt, idx;

	dmbyok_agent_config_init(&a->conf);
	/* Pass 1: only --config (and --help/--version), so the file comes before the options. */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		if (opt == 'F')
			config = optarg;
		else if (opt == 'V') {
			printf("dmbyokd %s\n", DMBYOK_VERSION);
			exit(0);
		} else if (opt == 'h') {
			usage(stdout);
			exit(0);
		}
	}
	GUARD(dmbyok_agent_config_load(&a->conf, config ? config : DMBYOK_AGENT_CONFIG_FILE,
	                               config != NULL));

	optind = 0;
	opterr = 1;
	while ((opt = getopt_long(argc, argv, "h", options, &idx)) >= 0) {
		switch (opt) {
		case 'F':
			break;
		case 's':
			snprintf(where, sizeof(where), "--%s", options[idx].name);
			GUARD(dmbyok_agent_config_set(&a->conf, options[idx].name, optarg, where));
			break;
		case 'd':
			GUARD(dmbyok_agent_config_set(&a->conf, "debug", "yes", "--debug"));
			break;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return log_error_errno(EINVAL, "Unexpected argument \"%s\".", argv[optind]);
	}
	GUARD(dmbyok_agent_config_validate(&a->conf));
	if (a->conf.debug)
		dmbyok_log_set_max_level(LOG_LEVEL_DEBUG);
	a->kms = (struct kms_options){
		.region = a->conf.region,
		.endpoint = a->conf.endpoint,
		.profile = a->conf.profile,
		.ca_bundle = a->conf.ca_bundle,
	};
	return 0;
}

/* The control socket's commands (docs/agent-control.md). */
static int on_control_request(json_object *request, json_object **ret, void *userdata)
{
	json_object *cmd;

	if (json_object_object_get_ex(request, "command", &cmd) &&
	    !strcmp(json_object_get_string(cmd), "attach"))
		return dmbyok_agent_attach_command(userdata, request, ret);
	/* A change no uevent announces (shred forgot a torn-down volume): look again soon. */
	if (json_object_object_get_ex(request, "command", &cmd) &&
	    !strcmp(json_object_get_string(cmd), "rescan")) {
		struct agent *a = userdata;

		a->rescan_soon(a);
		*ret = json_object_new_object();
		if (!*ret ||
		    json_object_object_add(*ret, "rescan", json_object_new_string("scheduled")) < 0)
			return -ENOMEM;
		return 0;
	}
	return dmbyok_agent_status(request, ret, userdata);
}

int main(int argc, char **argv)
{
	struct agent a = { .exit_when_idle = exit_when_idle, .rescan_soon = rescan_soon };
	sigset_t mask;
	int r;

	dmbyok_log_setup("dmbyokd");
	r = parse_args(&a, argc, argv);
	if (r < 0) {
		dmbyok_agent_config_done(&a.conf);
		return dmbyok_exit_code(r);
	}
	a.started_us = dmbyok_agent_realtime_us();
	r = dmbyok_harden_process();
	if (r < 0)
		return dmbyok_exit_code(r);
	r = dmbyok_check_kernel();
	if (r < 0)
		return dmbyok_exit_code(r);

	/* sd-event takes SIGCHLD (children), SIGTERM and SIGINT as events: block them first. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	r = sd_event_default(&a.event);
	if (r >= 0)
		r = sd_event_add_signal(a.event, NULL, SIGTERM, on_stop_signal, &a);
	if (r >= 0)
		r = sd_event_add_signal(a.event, NULL, SIGINT, on_stop_signal, &a);
	if (r >= 0)
		r = sd_event_set_watchdog(a.event, true);
	if (r >= 0)
		r = sd_event_add_time_relative(a.event, &a.rescan, CLOCK_MONOTONIC,
		                               RESCAN_BACKSTOP_MS * 1000ULL, 1000, on_rescan, &a);
	if (r >= 0)
		r = uevents_open(&a);
	if (r >= 0)
		r = dmbyok_control_server_new(a.event, a.conf.control_socket, on_control_request,
		                              &a, &a.control);
	if (r >= 0 && a.conf.metrics_file)
		r = dmbyok_metrics_new(a.started_us / 1000000ULL, &a.metrics);
	if (r >= 0 && a.conf.policy_data_paths)
		r = dmbyok_policywatch_new(a.event, a.conf.policy_data_paths, a.conf.policy_unmount,
		                           &a.policy);
	if (r == -EADDRINUSE) {
		log_error("Another dmbyokd is running (it answers on its control socket): not "
		          "starting a second one.");
		return dmbyok_exit_code(-EBUSY);
	}
	if (r < 0) {
		log_error("Cannot set up the event loop: %s", strerror(-r));
		return dmbyok_exit_code(r);
	}

	/* Adoption first: every existing mapping is watched before we say we are ready. */
	(void)rescan(&a);
	log_info("Watching %zu key(s): probe every %llu s, lock after %u revoked answers in a "
	         "row.",
	         a.n_keys, (unsigned long long)(a.conf.watch.check_interval_ms / 1000),
	         a.conf.watch.revoke_confirmations);
	dmbyok_agent_write_metrics(&a);
	{
		struct log_fields f = {};

		(void)dmbyok_log_field(&f, "KEYS", "%zu", a.n_keys);
		log_struct(LOG_LEVEL_INFO, DMBYOK_MESSAGE_AGENT_STARTED, f.field,
		           "Started: watching %zu key(s).", a.n_keys);
	}
	/* READY=1 comes from there, once the table's volumes are attached (or need not be). */
	r = dmbyok_agent_attach_start(&a);
	if (r < 0) {
		log_error("Cannot start attaching: %s", dmbyok_strerror(r));
		return dmbyok_exit_code(r);
	}

	r = sd_event_loop(a.event);
	for (size_t i = 0; i < a.n_keys; i++)
		key_free(a.keys[i]);
	free(a.keys);
	sd_event_source_disable_unref(a.rescan);
	sd_event_source_disable_unref(a.uevents);
	dmbyok_control_server_free(a.control);
	dmbyok_agent_attach_free(&a);
	dmbyok_metrics_free(a.metrics);
	dmbyok_policywatch_free(a.policy);
	sd_event_unref(a.event);
	dmbyok_agent_config_done(&a.conf);
	return r < 0 ? dmbyok_exit_code(r) : 0;
}
