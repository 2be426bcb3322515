/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * keywatch: what dmbyokd decides about one customer key (by key ARN), as a pure,
 * deterministic state machine. It performs nothing: no clock, no KMS, no device-mapper.
 * The daemon feeds it the time (CLOCK_MONOTONIC in ms) and the outcome of each probe and
 * of each action, and performs the actions it returns. One watch per key, however many
 * volumes use the key, so there is one probe per key per interval.
 *
 * The daemon's loop, for each watch:
 *   sleep until dmbyok_keywatch_next_deadline() (UINT64_MAX: nothing timed; wait for the
 *   outstanding probe or action to finish); then acts = dmbyok_keywatch_on_tick(now);
 *   when a probe finishes: acts = dmbyok_keywatch_on_probe(result, key_deleted, now);
 *   perform acts, in this order: LOCK, TEARDOWN, UNLOCK, REPROVISION, the alerts, PROBE;
 *   report each volume action with dmbyok_keywatch_action_done(action, result, now).
 *
 * States (dmbyok_keywatch_state_name() gives the status JSON word):
 *   ACTIVE      "active"      the key works (or nothing says otherwise yet)
 *   SUSPECT     "suspect"     revoked answers seen since the last OK, fewer than
 *                             revoke_confirmations
 *   LOCKED      "locked"      decided: the key's volumes are locked (key wiped, I/O frozen)
 *   TORN_DOWN   "torn-down"   locked for teardown_after: volumes replaced/removed
 *   KEY_DELETED "key-deleted" terminal: deletion completed, volumes torn down, no probes
 *
 * Probe answers, by dmbyok_error_class() of the result:
 *   OK            resets the revoked count; raised alerts end (ALERT_CLEARED); a LOCKED key
 *                 goes ACTIVE (UNLOCK), a TORN_DOWN key goes ACTIVE (REPROVISION).
 *   KEY_REVOKED   counts. At revoke_confirmations consecutive revoked answers since the last
 *                 OK the key is LOCKED; before that it is SUSPECT and re-probed at once (the
 *                 call that reports the answer already returns PROBE). With key_deleted set,
 *                 the key goes straight to KEY_DELETED (lock + teardown, no confirmation:
 *                 the daemon only sets it once KMS said NotFound for a key whose deletion
 *                 completed). key_deleted is ignored with any other class of result.
 *                 A revoked answer also ends a raised alert: KMS authenticated us.
 *   KMS_TRANSIENT never locks, and neither counts toward nor resets the revoked count: an
 *                 outage between two revoked answers is no evidence either way, so it must
 *                 neither turn one revoked answer into a confirmation-free lock later nor
 *                 wipe out a revocation half confirmed. Raised alerts stay raised (an outage
 *                 does not show that credentials work again).
 *   CREDENTIALS   this host's credentials are broken: ALERT_CREDENTIALS, never locks (the
 *                 customer did not revoke anything). Same count rule as transient.
 *   anything else (wrong token, internal, ...): ALERT_OTHER, never locks, same count rule.
 *   Alerts are raised once per transition into a failing class: repeated answers of the
 *   same class are silent; a different failing class raises its own alert.
 *
 * Timing:
 *   - A probe is due check_interval after the previous answer (restore_interval while
 *     LOCKED or TORN_DOWN), counted from the answer, so a slow KMS never causes
 *     back-to-back probes. A SUSPECT key is re-probed at once after a revoked answer, at
 *     check_interval after any other answer (an outage must not make us hammer KMS).
 *   - At most one probe is outstanding: PROBE is not returned again until on_probe()
 *     reports it. The daemon must report every probe it starts, failed ones included (a
 *     probe that could not run is a transient answer, e.g. -ETIMEDOUT). An unsolicited
 *     answer (a Decrypt the daemon did for another reason) is accepted as well.
 *   - fail_closed_after (0 = off): a key whose last OK answer (or, before the first OK,
 *     the start of the watch) is that old is LOCKED, whatever the answers were.
 *   - teardown_after (0 = never): counted from the lock decision, whatever its reason
 *     (revoked or fail-closed): its point is that applications do not stay frozen forever.
 *   - Times only move forward: a `now` earlier than one already seen is taken as that one.
 *   - next_deadline() is never before the latest `now` seen, and after on_tick() or
 *     on_probe() it is strictly later, so the loop never spins; between probes it only
 *     adds a wake-up for a real timer (fail-closed, teardown, an action retry).
 *
 * Actions and their outcome:
 *   The watch keeps the volumes' state the daemon confirmed (open, locked, torn down) apart
 *   from the state it decided, and returns the action that brings the first to the second:
 *   open->locked LOCK; open->torn down LOCK|TEARDOWN; locked->torn down TEARDOWN;
 *   locked->open UNLOCK; torn down->open REPROVISION; torn down->locked nothing (torn
 *   down is already safe; the teardown timer then catches the decision up).
 *   - One batch of volume actions is outstanding at a time. Probes go on meanwhile (a
 *     stalled disk must not hide a restore or a deletion) and decisions change freely; no
 *     queue is kept: when the batch is reported, the next action is whatever leads from the
 *     confirmed state to the latest decision (a LOCK overtaken by an OK yields an UNLOCK
 *     once the LOCK succeeded, nothing if it failed).
 *   - A failed action (result < 0, e.g. -EBUSY: disk stalled) changes nothing confirmed;
 *     the action is returned again restore_interval later, until it succeeds or the
 *     decision changes. The daemon's actions are idempotent over the key's volumes; one
 *     that only partly succeeded is reported as failed and is redone whole.
 *   - After a success, a follow-up action is due at once: next_deadline() returns `now`.
 *   - Alerts are not tracked: reporting them is accepted and does nothing.
 *   - A new watch assumes the key's volumes are open (the daemon starts watching a key
 *     when it finds open mappings that use it).
 */

#include <stdbool.h>
#include <stdint.h>

#include "dmbyok/error.h"

struct dmbyok_keywatch_config {
	uint64_t check_interval_ms;    /* probe period: default 10 s, 1 s .. 3600 s */
	unsigned revoke_confirmations; /* revoked answers in a row that lock: default 2, 1 .. 100 */
	uint64_t restore_interval_ms;  /* probe period once locked, and action retry delay:
	                                  default 2 s, 100 ms .. 3600 s */
	uint64_t teardown_after_ms;    /* locked that long -> teardown: default 300 s; 0 = never,
	                                  else 1 s .. 30 days */
	uint64_t fail_closed_after_ms; /* no OK answer that long -> lock: default 0 = off, else
	                                  2 * check_interval .. 30 days */
};

void dmbyok_keywatch_config_default(struct dmbyok_keywatch_config *cfg);
/* 0, or -EINVAL with the reason logged. */
int dmbyok_keywatch_config_validate(const struct dmbyok_keywatch_config *cfg);

enum dmbyok_keywatch_state {
	DMBYOK_KEYWATCH_ACTIVE,
	DMBYOK_KEYWATCH_SUSPECT,
	DMBYOK_KEYWATCH_LOCKED,
	DMBYOK_KEYWATCH_TORN_DOWN,
	DMBYOK_KEYWATCH_KEY_DELETED,
	_DMBYOK_KEYWATCH_STATE_MAX,
};

/* Why the key is locked (status output). */
enum dmbyok_keywatch_lock_reason {
	DMBYOK_KEYWATCH_REASON_NONE,
	DMBYOK_KEYWATCH_REASON_REVOKED,
	DMBYOK_KEYWATCH_REASON_FAIL_CLOSED,
	DMBYOK_KEYWATCH_REASON_DELETED,
	DMBYOK_KEYWATCH_REASON_ADOPTED, /* found locked when the watch began (agent restart) */
};

/* What the daemon confirmed about the key's volumes. */
enum dmbyok_keywatch_volumes {
	DMBYOK_KEYWATCH_VOLUMES_OPEN,
	DMBYOK_KEYWATCH_VOLUMES_LOCKED,
	DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN,
};

/* Action bits; several may be returned together. */
enum {
	DMBYOK_KEYWATCH_LOCK = 1u << 0,        /* lock every volume of the key */
	DMBYOK_KEYWATCH_TEARDOWN = 1u << 1,    /* error target for in-use mappings, remove others */
	DMBYOK_KEYWATCH_UNLOCK = 1u << 2,      /* unlock the locked volumes */
	DMBYOK_KEYWATCH_REPROVISION = 1u << 3, /* map the torn-down volumes again */
	DMBYOK_KEYWATCH_ALERT_CREDENTIALS = 1u << 4, /* this host's credentials are broken */
	DMBYOK_KEYWATCH_ALERT_OTHER = 1u << 5,       /* unexpected probe failure (last_result) */
	DMBYOK_KEYWATCH_ALERT_CLEARED = 1u << 6,     /* the raised alert's condition ended */
	DMBYOK_KEYWATCH_PROBE = 1u << 7,             /* probe the key now, report with on_probe */
};

#define DMBYOK_KEYWATCH_VOLUME_ACTIONS                                                             \
	(DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN | DMBYOK_KEYWATCH_UNLOCK |                \
	 DMBYOK_KEYWATCH_REPROVISION)
#define DMBYOK_KEYWATCH_ALERTS                                                                     \
	(DMBYOK_KEYWATCH_ALERT_CREDENTIALS | DMBYOK_KEYWATCH_ALERT_OTHER |                         \
	 DMBYOK_KEYWATCH_ALERT_CLEARED)

struct dmbyok_keywatch {
	char *key_arn;
	struct dmbyok_keywatch_config cfg;

	enum dmbyok_keywatch_state state;
	enum dmbyok_keywatch_lock_reason lock_reason;
	enum dmbyok_keywatch_volumes volumes; /* confirmed by the daemon */
	unsigned revoked_streak;              /* revoked answers since the last OK */

	uint64_t watched_since_ms;
	uint64_t last_ok_ms; /* watched_since_ms until the first OK answer */
	uint64_t last_probe_ms;
	uint64_t next_probe_ms;
	uint64_t locked_at_ms; /* the latest lock decision */
	int last_result;       /* 0 or -errno of the latest answer */
	enum dmbyok_error_class last_class;
	enum dmbyok_error_class alert_class; /* DMBYOK_OK: no alert raised */

	bool probe_outstanding;
	unsigned actions_outstanding; /* volume actions returned, not reported yet */
	uint64_t action_due_ms;       /* earliest time the next volume action may be returned */
	uint64_t clock_ms;            /* the latest `now` seen */

	uint64_t probes, probes_ok, probes_revoked;
	unsigned action_failures; /* in a row, reset by a success */
};

/* cfg NULL: the defaults. -EINVAL for a bad ARN or config, -ENOMEM. */
int dmbyok_keywatch_init(struct dmbyok_keywatch *w, const char *key_arn,
                         const struct dmbyok_keywatch_config *cfg, uint64_t now_ms);
void dmbyok_keywatch_done(struct dmbyok_keywatch *w);
/*
 * The key's volumes were found locked when the watch began (an agent restarted after it
 * locked them): the watch starts LOCKED, probing at restore_interval, and the first OK
 * answer unlocks them. A lock decided this way is never re-done.
 */
void dmbyok_keywatch_adopt_locked(struct dmbyok_keywatch *w, uint64_t now_ms);

/* A probe's answer: 0 or a negative errno; key_deleted as described above. */
unsigned dmbyok_keywatch_on_probe(struct dmbyok_keywatch *w, int probe_result, bool key_deleted,
                                  uint64_t now_ms);
/* Timers: probe due, fail-closed, teardown, action retry. Harmless when nothing is due. */
unsigned dmbyok_keywatch_on_tick(struct dmbyok_keywatch *w, uint64_t now_ms);
/*
 * The outcome of one volume action (a single bit) returned earlier: 0 or -errno.
 * -EINVAL when that action is not outstanding (not returned, or already reported).
 */
int dmbyok_keywatch_action_done(struct dmbyok_keywatch *w, unsigned action, int result,
                                uint64_t now_ms);
/* When the daemon must call on_tick() next; UINT64_MAX when nothing is timed. */
uint64_t dmbyok_keywatch_next_deadline(const struct dmbyok_keywatch *w);

const char *dmbyok_keywatch_state_name(enum dmbyok_keywatch_state s);
const char *dmbyok_keywatch_lock_reason_name(enum dmbyok_keywatch_lock_reason r);
const char *dmbyok_keywatch_volumes_name(enum dmbyok_keywatch_volumes v);
/* Name of one action bit ("lock", "alert-credentials", ...); "unknown" otherwise. */
const char *dmbyok_keywatch_action_name(unsigned action);
