/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's per-key decisions. keywatch.h states the rules; this file only applies them.
 * Nothing here reads a clock or touches KMS or a device: every input is an argument.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include "dmbyok/log.h"
#include "keywatch.h"

#define SEC_MS       UINT64_C(1000)
#define DAY_MS       (UINT64_C(24) * 3600 * SEC_MS)
#define TIMER_MAX_MS (30 * DAY_MS)
/* KMS accepts key ids of up to 2048 characters, ARNs included. */
#define KEY_ARN_MAX 2048

/* Deadlines saturate rather than wrap, so a huge `now` cannot turn "later" into "at once". */
static uint64_t add_ms(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void dmbyok_keywatch_config_default(struct dmbyok_keywatch_config *cfg)
{
	*cfg = (struct dmbyok_keywatch_config){
		.check_interval_ms = 10 * SEC_MS,
		.revoke_confirmations = 2,
		.restore_interval_ms = 2 * SEC_MS,
		.teardown_after_ms = 300 * SEC_MS,
		.fail_closed_after_ms = 0,
	};
}

int dmbyok_keywatch_config_validate(const struct dmbyok_keywatch_config *cfg)
{
	if (cfg->check_interval_ms < SEC_MS || cfg->check_interval_ms > 3600 * SEC_MS)
		return log_error_errno(EINVAL,
		                       "check_interval must be 1 to 3600 s, not %" PRIu64 " ms.",
		                       cfg->check_interval_ms);
	if (cfg->revoke_confirmations < 1 || cfg->revoke_confirmations > 100)
		return log_error_errno(EINVAL, "revoke_confirmations must be 1 to 100, not %u.",
		                       cfg->revoke_confirmations);
	/* Also the retry delay of failed actions: zero would spin on a failing device. */
	if (cfg->restore_interval_ms < 100 || cfg->restore_interval_ms > 3600 * SEC_MS)
		return log_error_errno(
		    EINVAL, "restore_interval must be 100 ms to 3600 s, not %" PRIu64 " ms.",
		    cfg->restore_interval_ms);
	if (cfg->teardown_after_ms != 0 &&
	    (cfg->teardown_after_ms < SEC_MS || cfg->teardown_after_ms > TIMER_MAX_MS))
		return log_error_errno(
		    EINVAL,
		    "teardown_after must be 0 (never) or 1 s to 30 days, not %" PRIu64 " ms.",
		    cfg->teardown_after_ms);
	/*
	 * Below two check intervals a healthy key would be locked by one slow or lost probe:
	 * fail-closed is for "KMS unreachable for long", not for a single hiccup.
	 */
	if (cfg->fail_closed_after_ms != 0 &&
	    (cfg->fail_closed_after_ms < 2 * cfg->check_interval_ms ||
	     cfg->fail_closed_after_ms > TIMER_MAX_MS))
		return log_error_errno(
		    EINVAL,
		    "fail_closed_after must be 0 (off) or 2 check intervals (%" PRIu64
		    " ms) to 30 days, not %" PRIu64 " ms.",
		    2 * cfg->check_interval_ms, cfg->fail_closed_after_ms);
	return 0;
}

static bool key_arn_valid(const char *arn)
{
	size_t n;

	/* An AWS key ARN, a Cloud KMS key (version) name, or a Key Vault key identifier. */
	if (!arn || (strncmp(arn, "arn:", 4) && strncmp(arn, "projects/", 9) &&
	             strncmp(arn, "https://", 8)))
		return false;
	n = strnlen(arn, KEY_ARN_MAX + 1);
	if (n > KEY_ARN_MAX)
		return false;
	/* It ends up in logs and status JSON: nothing that could forge a line. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)arn[i] <= ' ' || arn[i] == 0x7f)
			return false;
	return true;
}

int dmbyok_keywatch_init(struct dmbyok_keywatch *w, const char *key_arn,
                         const struct dmbyok_keywatch_config *cfg, uint64_t now_ms)
{
	struct dmbyok_keywatch_config def;
	_cleanup_free_ char *arn = NULL;

	if (!cfg) {
		dmbyok_keywatch_config_default(&def);
		cfg = &def;
	}
	GUARD(dmbyok_keywatch_config_validate(cfg));
	if (!key_arn_valid(key_arn))
		return log_error_errno(EINVAL, "Cannot watch \"%.80s\": not a key ARN.",
		                       key_arn ? key_arn : "(null)");
	arn = strdup(key_arn);
	ENSURE_ALLOC(arn);

	*w = (struct dmbyok_keywatch){
		.key_arn = TAKE_PTR(arn),
		.cfg = *cfg,
		.state = DMBYOK_KEYWATCH_ACTIVE,
		.volumes = DMBYOK_KEYWATCH_VOLUMES_OPEN,
		.watched_since_ms = now_ms,
		/* Fail-closed counts from the start of the watch until the first OK. */
		.last_ok_ms = now_ms,
		/* The first probe is due at once: the daemon must learn the key's state. */
		.next_probe_ms = now_ms,
		.last_class = DMBYOK_OK,
		.alert_class = DMBYOK_OK,
		.clock_ms = now_ms,
	};
	return 0;
}

void dmbyok_keywatch_done(struct dmbyok_keywatch *w)
{
	free(w->key_arn);
	*w = (struct dmbyok_keywatch){ 0 };
}

/* A caller's clock that went backwards is taken as standing still. */
static uint64_t advance_clock(struct dmbyok_keywatch *w, uint64_t now_ms)
{
	if (now_ms > w->clock_ms)
		w->clock_ms = now_ms;
	return w->clock_ms;
}

static bool state_is_locked(enum dmbyok_keywatch_state s)
{
	return s == DMBYOK_KEYWATCH_LOCKED || s == DMBYOK_KEYWATCH_TORN_DOWN ||
	       s == DMBYOK_KEYWATCH_KEY_DELETED;
}

static void set_state(struct dmbyok_keywatch *w, enum dmbyok_keywatch_state s)
{
	if (w->state == s)
		return;
	log_debug("Key %s: %s -> %s.", w->key_arn, dmbyok_keywatch_state_name(w->state),
	          dmbyok_keywatch_state_name(s));
	w->state = s;
}

static void decide_lock(struct dmbyok_keywatch *w, enum dmbyok_keywatch_lock_reason reason,
                        uint64_t now_ms)
{
	w->lock_reason = reason;
	w->locked_at_ms = now_ms;
	set_state(w, DMBYOK_KEYWATCH_LOCKED);
	/*
	 * Locked keys are watched closely: the customer wants the volumes back quickly. A probe
	 * already due (a fail-closed lock on a probe's deadline) stays due.
	 */
	w->next_probe_ms = MIN(w->next_probe_ms, add_ms(now_ms, w->cfg.restore_interval_ms));
}

void dmbyok_keywatch_adopt_locked(struct dmbyok_keywatch *w, uint64_t now_ms)
{
	now_ms = advance_clock(w, now_ms);
	w->volumes = DMBYOK_KEYWATCH_VOLUMES_LOCKED;
	decide_lock(w, DMBYOK_KEYWATCH_REASON_ADOPTED, now_ms);
}

static enum dmbyok_keywatch_volumes target_volumes(const struct dmbyok_keywatch *w)
{
	switch (w->state) {
	case DMBYOK_KEYWATCH_ACTIVE:
	case DMBYOK_KEYWATCH_SUSPECT:
		return DMBYOK_KEYWATCH_VOLUMES_OPEN;
	case DMBYOK_KEYWATCH_LOCKED:
		return DMBYOK_KEYWATCH_VOLUMES_LOCKED;
	default:
		return DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN;
	}
}

/* The actions that lead from what the daemon confirmed to what was decided. */
static unsigned needed_actions(const struct dmbyok_keywatch *w)
{
	enum dmbyok_keywatch_volumes want = target_volumes(w);

	switch (w->volumes) {
	case DMBYOK_KEYWATCH_VOLUMES_OPEN:
		if (want == DMBYOK_KEYWATCH_VOLUMES_LOCKED)
			return DMBYOK_KEYWATCH_LOCK;
		if (want == DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN)
			return DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN;
		return 0;
	case DMBYOK_KEYWATCH_VOLUMES_LOCKED:
		if (want == DMBYOK_KEYWATCH_VOLUMES_OPEN)
			return DMBYOK_KEYWATCH_UNLOCK;
		if (want == DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN)
			return DMBYOK_KEYWATCH_TEARDOWN;
		return 0;
	case DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN:
		/* Torn down is already at least as safe as locked. */
		return want == DMBYOK_KEYWATCH_VOLUMES_OPEN ? DMBYOK_KEYWATCH_REPROVISION : 0;
	}
	return 0;
}

static uint64_t probe_interval(const struct dmbyok_keywatch *w)
{
	return state_is_locked(w->state) ? w->cfg.restore_interval_ms : w->cfg.check_interval_ms;
}

static unsigned raise_alert(struct dmbyok_keywatch *w, enum dmbyok_error_class c)
{
	if (w->alert_class == c)
		return 0;
	w->alert_class = c;
	return c == DMBYOK_ERR_CREDENTIALS ? DMBYOK_KEYWATCH_ALERT_CREDENTIALS
	                                   : DMBYOK_KEYWATCH_ALERT_OTHER;
}

static unsigned clear_alert(struct dmbyok_keywatch *w)
{
	if (w->alert_class == DMBYOK_OK)
		return 0;
	w->alert_class = DMBYOK_OK;
	return DMBYOK_KEYWATCH_ALERT_CLEARED;
}

/*
 * Everything that depends on time alone, run by every entry point that may return
 * actions: afterwards nothing is due at `now` any more, so the next deadline is later.
 */
static unsigned step(struct dmbyok_keywatch *w, uint64_t now_ms)
{
	unsigned acts = 0, need;

	if ((w->state == DMBYOK_KEYWATCH_ACTIVE || w->state == DMBYOK_KEYWATCH_SUSPECT) &&
	    w->cfg.fail_closed_after_ms > 0 &&
	    now_ms >= add_ms(w->last_ok_ms, w->cfg.fail_closed_after_ms)) {
		/* The agent announces the lock (one journal entry per decision). */
		log_debug("Key %s: no successful probe for %" PRIu64 " s, locking (fail-closed).",
		          w->key_arn, (now_ms - w->last_ok_ms) / SEC_MS);
		decide_lock(w, DMBYOK_KEYWATCH_REASON_FAIL_CLOSED, now_ms);
	}

	if (w->state == DMBYOK_KEYWATCH_LOCKED && w->cfg.teardown_after_ms > 0 &&
	    now_ms >= add_ms(w->locked_at_ms, w->cfg.teardown_after_ms)) {
		log_warning("Key %s: locked for %" PRIu64 " s, tearing its volumes down.",
		            w->key_arn, (now_ms - w->locked_at_ms) / SEC_MS);
		set_state(w, DMBYOK_KEYWATCH_TORN_DOWN);
	}

	if (w->actions_outstanding == 0 && now_ms >= w->action_due_ms) {
		need = needed_actions(w);
		w->actions_outstanding = need;
		acts |= need;
	}

	if (w->state != DMBYOK_KEYWATCH_KEY_DELETED && !w->probe_outstanding &&
	    now_ms >= w->next_probe_ms) {
		w->probe_outstanding = true;
		acts |= DMBYOK_KEYWATCH_PROBE;
	}
	return acts;
}

unsigned dmbyok_keywatch_on_probe(struct dmbyok_keywatch *w, int probe_result, bool key_deleted,
                                  uint64_t now_ms)
{
	enum dmbyok_error_class c = dmbyok_error_class(probe_result);
	unsigned acts = 0;

	now_ms = advance_clock(w, now_ms);
	w->probe_outstanding = false;
	/* Terminal: a late or unsolicited answer changes nothing. */
	if (w->state == DMBYOK_KEYWATCH_KEY_DELETED)
		return step(w, now_ms);

	w->probes++;
	w->last_probe_ms = now_ms;
	w->last_result = probe_result;
	w->last_class = c;

	switch (c) {
	case DMBYOK_OK:
		w->probes_ok++;
		w->last_ok_ms = now_ms;
		w->revoked_streak = 0;
		acts |= clear_alert(w);
		if (w->state != DMBYOK_KEYWATCH_ACTIVE) {
			if (state_is_locked(w->state))
				log_notice("Key %s: usable again, restoring its volumes.",
				           w->key_arn);
			w->lock_reason = DMBYOK_KEYWATCH_REASON_NONE;
			set_state(w, DMBYOK_KEYWATCH_ACTIVE);
		}
		break;

	case DMBYOK_ERR_KEY_REVOKED:
		w->probes_revoked++;
		/* KMS authenticated us to say so: whatever was wrong with access is not. */
		acts |= clear_alert(w);
		if (w->revoked_streak < UINT_MAX)
			w->revoked_streak++;
		if (key_deleted) {
			log_debug("Key %s: deleted, tearing its volumes down for good.",
			          w->key_arn);
			if (!state_is_locked(w->state))
				w->locked_at_ms = now_ms;
			w->lock_reason = DMBYOK_KEYWATCH_REASON_DELETED;
			set_state(w, DMBYOK_KEYWATCH_KEY_DELETED);
			return acts | step(w, now_ms);
		}
		if (state_is_locked(w->state)) {
			if (w->revoked_streak >= w->cfg.revoke_confirmations)
				w->lock_reason = DMBYOK_KEYWATCH_REASON_REVOKED;
		} else if (w->revoked_streak >= w->cfg.revoke_confirmations) {
			log_debug("Key %s: revoked (%s, %u answers in a row), locking its volumes.",
			          w->key_arn, dmbyok_strerror(probe_result), w->revoked_streak);
			decide_lock(w, DMBYOK_KEYWATCH_REASON_REVOKED, now_ms);
		} else
			set_state(w, DMBYOK_KEYWATCH_SUSPECT);
		break;

	case DMBYOK_ERR_KMS_TRANSIENT:
		/* No evidence either way: the revoked count stays as it is. */
		break;

	default:
		acts |= raise_alert(w, c);
		break;
	}

	if (c == DMBYOK_ERR_KEY_REVOKED && w->state == DMBYOK_KEYWATCH_SUSPECT)
		w->next_probe_ms = now_ms; /* confirm at once */
	else
		w->next_probe_ms = add_ms(now_ms, probe_interval(w));
	return acts | step(w, now_ms);
}

unsigned dmbyok_keywatch_on_tick(struct dmbyok_keywatch *w, uint64_t now_ms)
{
	return step(w, advance_clock(w, now_ms));
}

int dmbyok_keywatch_action_done(struct dmbyok_keywatch *w, unsigned action, int result,
                                uint64_t now_ms)
{
	now_ms = advance_clock(w, now_ms);
	if (action == 0 || (action & (action - 1)) != 0)
		return log_debug_errno(EINVAL, "Key %s: report one action at a time, not 0x%x.",
		                       w->key_arn, action);
	if (action & DMBYOK_KEYWATCH_ALERTS)
		return 0;
	if (!(action & w->actions_outstanding))
		return log_debug_errno(EINVAL, "Key %s: action %s is not outstanding.", w->key_arn,
		                       dmbyok_keywatch_action_name(action));
	w->actions_outstanding &= ~action;

	if (result < 0) {
		/* Nothing changed on the volumes; the same action comes back after a pause. */
		w->action_failures++;
		w->action_due_ms = add_ms(now_ms, w->cfg.restore_interval_ms);
		log_debug("Key %s: %s failed (%s), retrying in %" PRIu64 " ms.", w->key_arn,
		          dmbyok_keywatch_action_name(action), dmbyok_strerror(result),
		          w->cfg.restore_interval_ms);
		return 0;
	}

	w->action_failures = 0;
	switch (action) {
	case DMBYOK_KEYWATCH_LOCK:
		/* Reported after the TEARDOWN of the same batch: torn down stays torn down. */
		if (w->volumes == DMBYOK_KEYWATCH_VOLUMES_OPEN)
			w->volumes = DMBYOK_KEYWATCH_VOLUMES_LOCKED;
		break;
	case DMBYOK_KEYWATCH_TEARDOWN:
		w->volumes = DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN;
		break;
	case DMBYOK_KEYWATCH_UNLOCK:
	case DMBYOK_KEYWATCH_REPROVISION:
		w->volumes = DMBYOK_KEYWATCH_VOLUMES_OPEN;
		break;
	}
	return 0;
}

uint64_t dmbyok_keywatch_next_deadline(const struct dmbyok_keywatch *w)
{
	uint64_t d = UINT64_MAX;

	if (w->state != DMBYOK_KEYWATCH_KEY_DELETED && !w->probe_outstanding)
		d = w->next_probe_ms;
	if ((w->state == DMBYOK_KEYWATCH_ACTIVE || w->state == DMBYOK_KEYWATCH_SUSPECT) &&
	    w->cfg.fail_closed_after_ms > 0)
		d = MIN(d, add_ms(w->last_ok_ms, w->cfg.fail_closed_after_ms));
	if (w->state == DMBYOK_KEYWATCH_LOCKED && w->cfg.teardown_after_ms > 0)
		d = MIN(d, add_ms(w->locked_at_ms, w->cfg.teardown_after_ms));
	if (w->actions_outstanding == 0 && needed_actions(w) != 0)
		d = MIN(d, w->action_due_ms);
	if (d != UINT64_MAX && d < w->clock_ms)
		d = w->clock_ms;
	return d;
}

static const char *const state_names[_DMBYOK_KEYWATCH_STATE_MAX] = {
	[DMBYOK_KEYWATCH_ACTIVE] = "active",           [DMBYOK_KEYWATCH_SUSPECT] = "suspect",
	[DMBYOK_KEYWATCH_LOCKED] = "locked",           [DMBYOK_KEYWATCH_TORN_DOWN] = "torn-down",
	[DMBYOK_KEYWATCH_KEY_DELETED] = "key-deleted",
};

const char *dmbyok_keywatch_state_name(enum dmbyok_keywatch_state s)
{
	if ((unsigned)s >= _DMBYOK_KEYWATCH_STATE_MAX)
		return "unknown";
	return state_names[s];
}

const char *dmbyok_keywatch_lock_reason_name(enum dmbyok_keywatch_lock_reason r)
{
	switch (r) {
	case DMBYOK_KEYWATCH_REASON_NONE:
		return "none";
	case DMBYOK_KEYWATCH_REASON_REVOKED:
		return "revoked";
	case DMBYOK_KEYWATCH_REASON_FAIL_CLOSED:
		return "fail-closed";
	case DMBYOK_KEYWATCH_REASON_DELETED:
		return "deleted";
	case DMBYOK_KEYWATCH_REASON_ADOPTED:
		return "found-locked";
	}
	return "unknown";
}

const char *dmbyok_keywatch_volumes_name(enum dmbyok_keywatch_volumes v)
{
	switch (v) {
	case DMBYOK_KEYWATCH_VOLUMES_OPEN:
		return "open";
	case DMBYOK_KEYWATCH_VOLUMES_LOCKED:
		return "locked";
	case DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN:
		return "torn-down";
	}
	return "unknown";
}

const char *dmbyok_keywatch_action_name(unsigned action)
{
	switch (action) {
	case DMBYOK_KEYWATCH_LOCK:
		return "lock";
	case DMBYOK_KEYWATCH_TEARDOWN:
		return "teardown";
	case DMBYOK_KEYWATCH_UNLOCK:
		return "unlock";
	case DMBYOK_KEYWATCH_REPROVISION:
		return "reprovision";
	case DMBYOK_KEYWATCH_ALERT_CREDENTIALS:
		return "alert-credentials";
	case DMBYOK_KEYWATCH_ALERT_OTHER:
		return "alert-other";
	case DMBYOK_KEYWATCH_ALERT_CLEARED:
		return "alert-cleared";
	case DMBYOK_KEYWATCH_PROBE:
		return "probe";
	}
	return "unknown";
}
