/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd: keeps the promise while the host runs. It adopts every dmbyok mapping on the
 * host, watches each customer key they use (one probe per key, however many volumes),
 * locks the key's volumes when the customer revokes it and unlocks them when it comes
 * back; an outage never locks. The decisions are keywatch.c's; this file runs them.
 *
 * One sd-event loop, single-threaded. Everything that can wait on the network or a disk
 * (a KMS probe, a lock, an unlock) runs in a child process the loop watches, so a KMS call
 * hanging for one key never delays another key's lock, and the watchdog keeps being fed.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "dmbyok/encoding.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"
#include "dmbyok/secret.h"
#include "keywatch.h"

struct agent;

/* A customer key and the mappings that use it. */
struct key {
	struct agent *agent;
	struct dmbyok_keywatch watch;
	struct dmbyok_token *token; /* one of its volumes' tokens: what a probe decrypts */
	char **names;               /* its mappings as of the last scan, NULL-terminated */
	size_t n_names;
	bool seen; /* found by the current scan */
	sd_event_source *timer;
	pid_t probe_pid, action_pid;
	unsigned action; /* the volume action action_pid performs */
	uint64_t probe_started_ms;
};

struct agent {
	sd_event *event;
	struct dmbyok_keywatch_config cfg;
	struct kms_options kms;
	unsigned lock_timeout_ms;
	struct key **keys;
	size_t n_keys;
	sd_event_source *rescan;
	bool stopping; /* SIGTERM: start nothing new, exit once running children are done */
};

/* A lock killed half-way would leave its volume suspended with its key: let children finish. */
static void exit_when_idle(struct agent *a)
{
	for (size_t i = 0; i < a->n_keys; i++)
		if (a->keys[i]->probe_pid || a->keys[i]->action_pid)
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

static void key_free(struct key *k)
{
	if (!k)
		return;
	sd_event_source_disable_unref(k->timer);
	dmbyok_keywatch_done(&k->watch);
	dmbyok_token_free(k->token);
	dmbyok_strv_free(k->names);
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

static int on_probe_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct key *k = userdata;
	int r = child_result(si);
	uint64_t t = now_ms();

	sd_event_source_unref(s);
	k->probe_pid = 0;
	if (k->agent->stopping) {
		exit_when_idle(k->agent);
		return 0;
	}
	log_debug("Probe of %s: %s in %llu ms.", k->watch.key_arn,
	          dmbyok_error_class_name(dmbyok_error_class(r)),
	          (unsigned long long)(t - k->probe_started_ms));
	perform(k, dmbyok_keywatch_on_probe(&k->watch, r, false, t));
	schedule(k);
	return 0;
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
		log_error("Could not %s the volumes of %s: %s. Retrying.",
		          dmbyok_keywatch_action_name(action), k->watch.key_arn,
		          dmbyok_strerror(r));
	else
		log_notice("%s the %zu volume(s) of %s.",
		           action == DMBYOK_KEYWATCH_LOCK ? "Locked" : "Unlocked", k->n_names,
		           k->watch.key_arn);
	(void)dmbyok_keywatch_action_done(&k->watch, action, r, now_ms());
	if (k->agent->stopping) {
		exit_when_idle(k->agent);
		return 0;
	}
	perform(k, dmbyok_keywatch_on_tick(&k->watch, now_ms()));
	schedule(k);
	return 0;
}

/* In the child: one probe, or one action on every mapping of the key. */
static int run_child(struct key *k, unsigned what)
{
	int r = 0;

	if (what == DMBYOK_KEYWATCH_PROBE)
		return dmbyok_probe_key(k->token, &k->agent->kms);
	for (size_t i = 0; i < k->n_names; i++) {
		int q = what == DMBYOK_KEYWATCH_LOCK
		            ? dmbyok_lock(k->names[i], k->agent->lock_timeout_ms)
		            : dmbyok_unlock(k->names[i], NULL, &k->agent->kms);
		/* Every volume is tried; the action is reported failed (and redone) if one fails.
		 */
		if (q < 0 && r == 0)
			r = q;
	}
	return r;
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

static void perform(struct key *k, unsigned acts)
{
	const char *arn = k->watch.key_arn;

	if (acts & DMBYOK_KEYWATCH_ALERT_CREDENTIALS)
		log_error("This host's KMS credentials fail (%s) for %s: nothing is locked for "
		          "that; fix the credentials.",
		          dmbyok_strerror(k->watch.last_result), arn);
	if (acts & DMBYOK_KEYWATCH_ALERT_OTHER)
		log_error("Probing %s fails unexpectedly: %s; nothing is locked for that.", arn,
		          dmbyok_strerror(k->watch.last_result));
	if (acts & DMBYOK_KEYWATCH_ALERT_CLEARED)
		log_notice("Probing %s works again.", arn);

	for (unsigned bit = DMBYOK_KEYWATCH_LOCK; bit <= DMBYOK_KEYWATCH_REPROVISION; bit <<= 1) {
		if (!(acts & bit))
			continue;
		if (bit != DMBYOK_KEYWATCH_LOCK && bit != DMBYOK_KEYWATCH_UNLOCK) {
			/* teardown_after is 0 (never) in this version: these are not asked for. */
			(void)dmbyok_keywatch_action_done(&k->watch, bit, -EOPNOTSUPP, now_ms());
			continue;
		}
		/* keywatch.c has logged the decision; the outcome is logged on the child's exit. */
		k->action = bit;
		k->action_pid = spawn(k, bit, on_action_exit);
		if (k->action_pid < 0) {
			k->action_pid = 0;
			(void)dmbyok_keywatch_action_done(&k->watch, bit, -EAGAIN, now_ms());
		}
		break; /* one action at a time: the next comes when this one is reported */
	}

	if (acts & DMBYOK_KEYWATCH_PROBE) {
		k->probe_started_ms = now_ms();
		k->probe_pid = spawn(k, DMBYOK_KEYWATCH_PROBE, on_probe_exit);
		if (k->probe_pid < 0) {
			k->probe_pid = 0;
			perform(k, dmbyok_keywatch_on_probe(&k->watch, -EAGAIN, false, now_ms()));
		}
	}
}

static struct key *key_find(struct agent *a, const char *arn)
{
	for (size_t i = 0; i < a->n_keys; i++)
		if (!strcmp(a->keys[i]->watch.key_arn, arn))
			return a->keys[i];
	return NULL;
}

static int key_new(struct agent *a, const struct mapping_status *s, struct key **ret)
{
	struct key *k, **l;
	int r;

	k = calloc(1, sizeof(*k));
	ENSURE_ALLOC(k);
	k->agent = a;
	r = dmbyok_keywatch_init(&k->watch, s->key_arn, &a->cfg, now_ms());
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

/*
 * Adopts what exists: every dmbyok mapping, grouped by the key that wraps its DEK (read
 * from its header, so a re-wrap moves it to its new key). Nothing is changed here.
 */
static int rescan(struct agent *a)
{
	struct mapping_status *l = NULL;
	size_t n = 0;
	int r;

	r = dmbyok_list(&l, &n);
	if (r < 0)
		return log_error_errno(r, "Cannot list mappings: %s", dmbyok_strerror(r));
	for (size_t i = 0; i < a->n_keys; i++) {
		a->keys[i]->seen = false;
		dmbyok_strv_free(a->keys[i]->names);
		a->keys[i]->names = NULL;
		a->keys[i]->n_names = 0;
	}
	for (size_t i = 0; i < n; i++) {
		const struct mapping_status *s = &l[i];
		struct key *k;
		char **names;
		bool new_key = false;

		if (!s->key_arn)
			continue; /* header unreadable now (disk stalled): next scan */
		k = key_find(a, s->key_arn);
		if (!k) {
			if (key_new(a, s, &k) < 0)
				continue;
			new_key = true;
			log_info("Watching key %s.", s->key_arn);
		}
		/* NULL-terminated, so dmbyok_strv_free() frees it. */
		names = realloc(k->names, (k->n_names + 2) * sizeof(char *));
		if (names)
			names[k->n_names + 1] = NULL;
		if (!names || !(names[k->n_names] = strdup(s->dm.name))) {
			if (names)
				k->names = names;
			continue;
		}
		k->names = names;
		k->n_names++;
		if (!k->token && dmbyok_read_token(s->device, s->header, &k->token) < 0)
			log_warning("Cannot read the token of %s yet.", s->dm.name);
		/* An agent restarted after it locked them: they stay locked until the key is back.
		 */
		if (new_key && s->locked) {
			log_notice("%s is locked: keeping it so until %s answers again.",
			           s->dm.name, s->key_arn);
			dmbyok_keywatch_adopt_locked(&k->watch, now_ms());
		}
		k->seen = true;
	}
	/* Keys no mapping uses any more are dropped, once nothing runs for them. */
	for (size_t i = 0; i < a->n_keys;) {
		struct key *k = a->keys[i];

		if (k->seen || k->probe_pid || k->action_pid || !k->token) {
			if (k->seen && k->token)
				schedule(k);
			i++;
			continue;
		}
		log_info("No mapping uses %s any more: no longer watching it.", k->watch.key_arn);
		key_free(k);
		a->keys[i] = a->keys[--a->n_keys];
	}
	dmbyok_mapping_status_list_free(l, n);
	return 0;
}

static int on_rescan(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct agent *a = userdata;

	if (a->stopping)
		return 0;
	(void)rescan(a);
	(void)sd_event_source_set_time(s, usec + a->cfg.check_interval_ms * 1000ULL);
	(void)sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
	return 0;
}

/* An option in seconds, stored in milliseconds (keywatch's unit). */
static int parse_seconds(const char *option, const char *s, unsigned min, unsigned max,
                         uint64_t *ret_ms)
{
	unsigned v;

	GUARD(dmbyok_parse_option_uint(option, s, min, max, "seconds", &v));
	*ret_ms = (uint64_t)v * 1000ULL;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dmbyokd [--check-interval S] [--revoke-confirmations N]\n"
	           "               [--restore-interval S] [--fail-closed-after S]\n"
	           "               [--lock-timeout S] [--region R] [--endpoint URL]\n"
	           "               [--profile P] [--ca-bundle FILE] [--debug] [--version]\n");
}

static int parse_args(struct agent *a, int argc, char **argv)
{
	static const struct option options[] = {
		{ "check-interval", required_argument, NULL, 'i' },
		{ "revoke-confirmations", required_argument, NULL, 'c' },
		{ "restore-interval", required_argument, NULL, 'r' },
		{ "fail-closed-after", required_argument, NULL, 'f' },
		{ "lock-timeout", required_argument, NULL, 't' },
		{ "region", required_argument, NULL, 'R' },
		{ "endpoint", required_argument, NULL, 'E' },
		{ "profile", required_argument, NULL, 'P' },
		{ "ca-bundle", required_argument, NULL, 'C' },
		{ "debug", no_argument, NULL, 'd' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	uint64_t ms;
	int opt;

	dmbyok_keywatch_config_default(&a->cfg);
	a->cfg.teardown_after_ms = 0; /* teardown lands with the next version of the agent */
	a->lock_timeout_ms = DMBYOK_LOCK_TIMEOUT_MS;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
		switch (opt) {
		case 'i':
			GUARD(parse_seconds("check-interval", optarg, 1, 3600,
			                    &a->cfg.check_interval_ms));
			break;
		case 'c':
			GUARD(dmbyok_parse_option_uint("revoke-confirmations", optarg, 1, 100,
			                               "answers", &a->cfg.revoke_confirmations));
			break;
		case 'r':
			GUARD(parse_seconds("restore-interval", optarg, 1, 3600,
			                    &a->cfg.restore_interval_ms));
			break;
		case 'f':
			GUARD(parse_seconds("fail-closed-after", optarg, 0, 30 * 86400,
			                    &a->cfg.fail_closed_after_ms));
			break;
		case 't':
			GUARD(parse_seconds("lock-timeout", optarg, 1, 3600, &ms));
			a->lock_timeout_ms = (unsigned)ms;
			break;
		case 'R':
			a->kms.region = optarg;
			break;
		case 'E':
			a->kms.endpoint = optarg;
			break;
		case 'P':
			a->kms.profile = optarg;
			break;
		case 'C':
			a->kms.ca_bundle = optarg;
			break;
		case 'd':
			dmbyok_log_set_max_level(LOG_LEVEL_DEBUG);
			break;
		case 'V':
			printf("dmbyokd %s\n", DMBYOK_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return log_error_errno(EINVAL, "Unexpected argument \"%s\".", argv[optind]);
	}
	return dmbyok_keywatch_config_validate(&a->cfg);
}

int main(int argc, char **argv)
{
	struct agent a = { 0 };
	sigset_t mask;
	int r;

	dmbyok_log_setup("dmbyokd");
	r = parse_args(&a, argc, argv);
	if (r < 0)
		return dmbyok_exit_code(r);
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
		                               a.cfg.check_interval_ms * 1000ULL, 1000, on_rescan,
		                               &a);
	if (r < 0) {
		log_error("Cannot set up the event loop: %s", strerror(-r));
		return dmbyok_exit_code(r);
	}

	/* Adoption first: every existing mapping is watched before we say we are ready. */
	(void)rescan(&a);
	log_info("Watching %zu key(s): probe every %llu s, lock after %u revoked answers in a "
	         "row.",
	         a.n_keys, (unsigned long long)(a.cfg.check_interval_ms / 1000),
	         a.cfg.revoke_confirmations);
	(void)sd_notifyf(false, "READY=1\nSTATUS=Watching %zu key(s)", a.n_keys);

	r = sd_event_loop(a.event);
	for (size_t i = 0; i < a.n_keys; i++)
		key_free(a.keys[i]);
	free(a.keys);
	sd_event_source_disable_unref(a.rescan);
	sd_event_unref(a.event);
	return r < 0 ? dmbyok_exit_code(r) : 0;
}
