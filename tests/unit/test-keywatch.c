/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's per-key decisions, driven by a fake clock: no KMS, no device, no sleeping.
 * The last test plays a daemon over simulated days of random answers and checks the
 * safety rules on every action.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "agent/keywatch.h"
#include "dmbyok/log.h"

#define S(x)        ((uint64_t)(x)*1000)
#define NEVER       UINT64_MAX
#define MAX(a, b)   ((a) > (b) ? (a) : (b))
#define VOLUME_ACTS DMBYOK_KEYWATCH_VOLUME_ACTIONS

static const char arn[] = "arn:aws:kms:eu-west-1:111122223333:key/"
                          "1234abcd-12ab-34cd-56ef-1234567890ab";

/* The fake clock; not 0 so that "0 = unset" bugs cannot hide. */
static uint64_t now;

static int setup(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1);
	now = S(1000000);
	return 0;
}

static void watch(struct dmbyok_keywatch *w, const struct dmbyok_keywatch_config *cfg)
{
	assert_int_equal(dmbyok_keywatch_init(w, arn, cfg, now), 0);
	/* The first probe is due at once. */
	assert_int_equal(dmbyok_keywatch_next_deadline(w), now);
	assert_int_equal(dmbyok_keywatch_on_tick(w, now), DMBYOK_KEYWATCH_PROBE);
}

/* Answer the outstanding probe with r at the current time. */
static unsigned answer(struct dmbyok_keywatch *w, int r)
{
	assert_true(w->probe_outstanding);
	return dmbyok_keywatch_on_probe(w, r, false, now);
}

/* Sleep until the watch's deadline and tick there. */
static unsigned sleep_and_tick(struct dmbyok_keywatch *w)
{
	uint64_t d = dmbyok_keywatch_next_deadline(w);

	assert_true(d != NEVER);
	assert_true(d >= now);
	now = d;
	return dmbyok_keywatch_on_tick(w, now);
}

/* From ACTIVE with a probe outstanding: two revoked answers, LOCK confirmed. */
static void lock_by_revocation(struct dmbyok_keywatch *w)
{
	assert_int_equal(answer(w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	assert_int_equal(w->state, DMBYOK_KEYWATCH_LOCKED);
	assert_int_equal(dmbyok_keywatch_action_done(w, DMBYOK_KEYWATCH_LOCK, 0, now), 0);
	assert_int_equal(w->volumes, DMBYOK_KEYWATCH_VOLUMES_LOCKED);
}

static void test_config_default(void **state)
{
	struct dmbyok_keywatch_config cfg;

	(void)state;
	dmbyok_keywatch_config_default(&cfg);
	assert_int_equal(cfg.check_interval_ms, S(10));
	assert_int_equal(cfg.revoke_confirmations, 2);
	assert_int_equal(cfg.restore_interval_ms, S(2));
	assert_int_equal(cfg.teardown_after_ms, S(300));
	assert_int_equal(cfg.fail_closed_after_ms, 0);
	assert_int_equal(dmbyok_keywatch_config_validate(&cfg), 0);
}

static void test_config_validation(void **state)
{
	struct dmbyok_keywatch_config def, cfg;

	(void)state;
	dmbyok_keywatch_config_default(&def);
#define EXPECT(field, value, r)                                                                    \
	do {                                                                                       \
		cfg = def;                                                                         \
		cfg.field = (value);                                                               \
		assert_int_equal(dmbyok_keywatch_config_validate(&cfg), (r));                      \
	} while (0)
	EXPECT(check_interval_ms, 0, -EINVAL);
	EXPECT(check_interval_ms, 999, -EINVAL);
	EXPECT(check_interval_ms, S(1), 0);
	EXPECT(check_interval_ms, S(3600), 0);
	EXPECT(check_interval_ms, S(3600) + 1, -EINVAL);
	EXPECT(revoke_confirmations, 0, -EINVAL);
	EXPECT(revoke_confirmations, 1, 0);
	EXPECT(revoke_confirmations, 100, 0);
	EXPECT(revoke_confirmations, 101, -EINVAL);
	EXPECT(restore_interval_ms, 0, -EINVAL);
	EXPECT(restore_interval_ms, 99, -EINVAL);
	EXPECT(restore_interval_ms, 100, 0);
	EXPECT(restore_interval_ms, S(3601), -EINVAL);
	EXPECT(teardown_after_ms, 0, 0); /* never */
	EXPECT(teardown_after_ms, 500, -EINVAL);
	EXPECT(teardown_after_ms, S(30 * 86400), 0);
	EXPECT(teardown_after_ms, S(30 * 86400) + 1, -EINVAL);
	EXPECT(fail_closed_after_ms, 0, 0);           /* off */
	EXPECT(fail_closed_after_ms, S(19), -EINVAL); /* under two check intervals */
	EXPECT(fail_closed_after_ms, S(20), 0);
	EXPECT(fail_closed_after_ms, UINT64_MAX, -EINVAL);
#undef EXPECT
	/* The fail-closed bound follows the check interval. */
	cfg = def;
	cfg.check_interval_ms = S(60);
	cfg.fail_closed_after_ms = S(100);
	assert_int_equal(dmbyok_keywatch_config_validate(&cfg), -EINVAL);
}

static void test_init_and_done(void **state)
{
	struct dmbyok_keywatch w;
	struct dmbyok_keywatch_config cfg;
	char long_arn[2100];

	(void)state;
	assert_int_equal(dmbyok_keywatch_init(&w, NULL, NULL, now), -EINVAL);
	assert_int_equal(dmbyok_keywatch_init(&w, "", NULL, now), -EINVAL);
	assert_int_equal(dmbyok_keywatch_init(&w, "alias/orders", NULL, now), -EINVAL);
	assert_int_equal(dmbyok_keywatch_init(&w, "arn:aws:kms:x\n", NULL, now), -EINVAL);
	memset(long_arn, 'a', sizeof(long_arn) - 1);
	memcpy(long_arn, "arn:", 4);
	long_arn[sizeof(long_arn) - 1] = 0;
	assert_int_equal(dmbyok_keywatch_init(&w, long_arn, NULL, now), -EINVAL);
	dmbyok_keywatch_config_default(&cfg);
	cfg.revoke_confirmations = 0;
	assert_int_equal(dmbyok_keywatch_init(&w, arn, &cfg, now), -EINVAL);

	assert_int_equal(dmbyok_keywatch_init(&w, arn, NULL, now), 0);
	assert_string_equal(w.key_arn, arn);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);
	assert_int_equal(w.cfg.check_interval_ms, S(10));
	dmbyok_keywatch_done(&w);
	assert_null(w.key_arn);
	dmbyok_keywatch_done(&w); /* twice is harmless */
}

static void test_probes_keep_the_interval_without_extra_wakeups(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };

	(void)state;
	watch(&w, NULL);
	/* While the probe runs nothing else is timed: the daemon waits for its answer. */
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), NEVER);
	assert_int_equal(dmbyok_keywatch_on_tick(&w, now), 0); /* a second PROBE? no */
	now += 1234;                                           /* a slow answer */
	assert_int_equal(answer(&w, 0), 0);
	/* Counted from the answer, and exactly the probe: no wake-up in between. */
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(10));
	assert_int_equal(dmbyok_keywatch_on_tick(&w, now + S(5)), 0); /* spurious wake-up */
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(w.probes, 1);
	assert_int_equal(w.probes_ok, 1);
}

static void test_two_confirmations_lock_one_does_not(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	struct dmbyok_keywatch_config cfg;

	(void)state;
	watch(&w, NULL);
	/* One revoked answer: suspect, no lock. */
	assert_int_equal(answer(&w, -EKEYREVOKED) & VOLUME_ACTS, 0);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_SUSPECT);
	assert_string_equal(dmbyok_keywatch_state_name(w.state), "suspect");
	assert_int_equal(w.revoked_streak, 1);
	/* The second one confirms. */
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_LOCKED);
	assert_int_equal(w.lock_reason, DMBYOK_KEYWATCH_REASON_REVOKED);
	assert_int_equal(w.locked_at_ms, now);
	assert_string_equal(dmbyok_keywatch_state_name(w.state), "locked");
	dmbyok_keywatch_done(&w);

	/* With revoke_confirmations = 1 the first revoked answer locks. */
	dmbyok_keywatch_config_default(&cfg);
	cfg.revoke_confirmations = 1;
	watch(&w, &cfg);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_LOCKED);
}

static void test_suspect_is_reprobed_at_once(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	struct dmbyok_keywatch_config cfg;

	(void)state;
	dmbyok_keywatch_config_default(&cfg);
	cfg.revoke_confirmations = 3;
	watch(&w, &cfg);
	/* Each unconfirmed revoked answer asks for the next probe in the same call. */
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(w.next_probe_ms, now);
	now += 300;
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	now += 300;
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	/* Locked: the next probe comes after restore_interval, not at once. */
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(2));
}

static void test_ok_between_revoked_answers_resets(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };

	(void)state;
	watch(&w, NULL);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
		assert_int_equal(answer(&w, 0), 0);
		assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
		assert_int_equal(w.revoked_streak, 0);
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	}
}

static void test_transient_neither_counts_nor_resets(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };

	(void)state;
	watch(&w, NULL);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	/* An outage while suspect: no lock, no reset, and back to the normal interval. */
	for (int i = 0; i < 20; i++) {
		assert_int_equal(answer(&w, -ETIMEDOUT), 0);
		assert_int_equal(w.state, DMBYOK_KEYWATCH_SUSPECT);
		assert_int_equal(w.revoked_streak, 1);
		assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(10));
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	}
	/* Credentials and other failures do not count either. */
	assert_int_equal(answer(&w, -EKEYEXPIRED), DMBYOK_KEYWATCH_ALERT_CREDENTIALS);
	assert_int_equal(w.revoked_streak, 1);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED),
	                 DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_ALERT_CLEARED);
}

static void test_transient_never_locks(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	static const int transients[] = { -ETIMEDOUT,   -ECONNREFUSED, -ECONNRESET, -EHOSTUNREACH,
		                          -ENETUNREACH, -EAGAIN,       -EREMOTEIO,  -EPROTO };
	uint64_t start = now;
	unsigned n = 0;

	(void)state;
	watch(&w, NULL);
	/* Six hours of outage: 2160 probes, every one check_interval after the last. */
	while (now - start < S(6 * 3600)) {
		uint64_t answered = now;

		assert_int_equal(answer(&w, transients[n % ELEMENTSOF(transients)]), 0);
		n++;
		assert_int_equal(dmbyok_keywatch_next_deadline(&w), answered + S(10));
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
		assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	}
	assert_int_equal(n, 2160);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);
	assert_int_equal(w.alert_class, DMBYOK_OK); /* an outage is not an alert of ours */
}

static void test_credentials_alert_once_never_lock(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	unsigned alerts = 0, a;

	(void)state;
	watch(&w, NULL);
	for (int i = 0; i < 1000; i++) {
		/* Outages in between do not re-arm the alert. */
		a = answer(&w, i % 3 == 2 ? -ETIMEDOUT : i % 2 ? -EKEYEXPIRED : -EKEYREJECTED);
		assert_int_equal(a & VOLUME_ACTS, 0);
		if (a & DMBYOK_KEYWATCH_ALERT_CREDENTIALS)
			alerts++;
		assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	}
	assert_int_equal(alerts, 1);
	/* Fixed: cleared once; broken again: a new alert. */
	assert_int_equal(answer(&w, 0), DMBYOK_KEYWATCH_ALERT_CLEARED);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, 0), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -ENOKEY), DMBYOK_KEYWATCH_ALERT_CREDENTIALS);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	/* Another failing class raises its own alert, once. */
	assert_int_equal(answer(&w, -EBADMSG), DMBYOK_KEYWATCH_ALERT_OTHER);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EBADMSG), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -ENOMEM), DMBYOK_KEYWATCH_ALERT_OTHER);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EIO), 0); /* internal again */
	assert_int_equal(w.last_class, DMBYOK_ERR_INTERNAL);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
}

static void test_fail_closed_locks_after_bound_and_restores(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	struct dmbyok_keywatch_config cfg;
	uint64_t start = now;
	unsigned a;

	(void)state;
	dmbyok_keywatch_config_default(&cfg);
	cfg.fail_closed_after_ms = S(60);
	watch(&w, &cfg);
	/* Before any OK, the bound counts from the start of the watch. */
	for (;;) {
		assert_int_equal(answer(&w, -ETIMEDOUT) & VOLUME_ACTS, 0);
		a = sleep_and_tick(&w);
		if (a & DMBYOK_KEYWATCH_LOCK)
			break;
		assert_true(now - start < S(60));
	}
	assert_int_equal(now - start, S(60));
	assert_int_equal(w.lock_reason, DMBYOK_KEYWATCH_REASON_FAIL_CLOSED);
	assert_string_equal(dmbyok_keywatch_lock_reason_name(w.lock_reason), "fail-closed");
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, 0, now), 0);
	if (!(a & DMBYOK_KEYWATCH_PROBE))
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	/* Locked: probes every restore_interval; still down... */
	assert_int_equal(answer(&w, -ETIMEDOUT), 0);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(2));
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	/* ...then back. */
	assert_int_equal(answer(&w, 0), DMBYOK_KEYWATCH_UNLOCK);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_UNLOCK, 0, now), 0);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);

	/* Measured from the last OK answer: 60 s after it, not before. */
	start = now;
	for (;;) {
		a = sleep_and_tick(&w);
		if (a & DMBYOK_KEYWATCH_LOCK)
			break;
		assert_int_equal(answer(&w, -EKEYEXPIRED) & VOLUME_ACTS, 0);
	}
	assert_int_equal(now - start, S(60));
}

static void test_restore_within_restore_interval(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	uint64_t enabled;
	unsigned a = 0;

	(void)state;
	watch(&w, NULL);
	lock_by_revocation(&w);
	/* The customer enables the key again at an arbitrary moment. */
	enabled = now + S(47) + 321;
	while (!(a & DMBYOK_KEYWATCH_UNLOCK)) {
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
		a = answer(&w, now >= enabled ? 0 : -EKEYREVOKED);
		assert_int_equal(a & ~DMBYOK_KEYWATCH_UNLOCK, 0);
	}
	assert_true(now >= enabled);
	assert_true(now <= enabled + S(2));
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	assert_int_equal(w.revoked_streak, 0);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_UNLOCK, 0, now), 0);
	/* Back to the normal interval. */
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(10));
}

/* An agent restarted over volumes it had locked keeps them locked until the key answers OK. */
static void test_adopted_locked_volumes(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	uint64_t t0 = now;

	(void)state;
	assert_int_equal(dmbyok_keywatch_init(&w, arn, NULL, now), 0);
	dmbyok_keywatch_adopt_locked(&w, now);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_LOCKED);
	assert_string_equal(dmbyok_keywatch_lock_reason_name(w.lock_reason), "found-locked");
	/* Nothing to do to the volumes (they are locked already): only probes. */
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(now, t0);
	assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(now - t0, S(2)); /* restore_interval */
	assert_int_equal(answer(&w, 0), DMBYOK_KEYWATCH_UNLOCK);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_UNLOCK, 0, now), 0);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
}

static void test_teardown_then_reprovision(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	uint64_t locked_at;
	unsigned a;

	(void)state;
	watch(&w, NULL);
	lock_by_revocation(&w);
	locked_at = now;
	for (;;) {
		a = sleep_and_tick(&w);
		if (a & DMBYOK_KEYWATCH_TEARDOWN)
			break;
		assert_int_equal(a, DMBYOK_KEYWATCH_PROBE);
		assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	}
	/* Exactly teardown_after after the lock decision, and only then. */
	assert_int_equal(now - locked_at, S(300));
	assert_int_equal(w.state, DMBYOK_KEYWATCH_TORN_DOWN);
	assert_string_equal(dmbyok_keywatch_state_name(w.state), "torn-down");
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_TEARDOWN, 0, now), 0);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN);
	if (!(a & DMBYOK_KEYWATCH_PROBE))
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(2));
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	/* OK after a teardown: reprovision, not unlock. */
	assert_int_equal(answer(&w, 0), DMBYOK_KEYWATCH_REPROVISION);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_REPROVISION, 0, now), 0);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);
}

static void test_teardown_never_when_off(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	struct dmbyok_keywatch_config cfg;
	uint64_t start;

	(void)state;
	dmbyok_keywatch_config_default(&cfg);
	cfg.teardown_after_ms = 0;
	watch(&w, &cfg);
	lock_by_revocation(&w);
	start = now;
	while (now - start < S(86400)) {
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
		assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	}
	assert_int_equal(w.state, DMBYOK_KEYWATCH_LOCKED);
}

static void test_key_deleted_is_terminal(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };

	(void)state;
	watch(&w, NULL);
	/* key_deleted means nothing with another answer. */
	assert_int_equal(dmbyok_keywatch_on_probe(&w, -ETIMEDOUT, true, now), 0);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	/* No confirmation: lock and teardown at once, no further probe. */
	assert_int_equal(dmbyok_keywatch_on_probe(&w, -EKEYREVOKED, true, now),
	                 DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_KEY_DELETED);
	assert_string_equal(dmbyok_keywatch_state_name(w.state), "key-deleted");
	assert_int_equal(w.lock_reason, DMBYOK_KEYWATCH_REASON_DELETED);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, 0, now), 0);
	/* A failed teardown is retried even in the terminal state. */
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_TEARDOWN, -EBUSY, now), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_TEARDOWN);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_TEARDOWN, 0, now), 0);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), NEVER);
	/* Even an OK (a late answer) never brings the volumes back. */
	assert_int_equal(dmbyok_keywatch_on_probe(&w, 0, false, now + S(1)), 0);
	assert_int_equal(dmbyok_keywatch_on_tick(&w, now + S(86400)), 0);
	assert_int_equal(w.state, DMBYOK_KEYWATCH_KEY_DELETED);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), NEVER);
	dmbyok_keywatch_done(&w);

	/* From locked: only the teardown is left to do. */
	watch(&w, NULL);
	lock_by_revocation(&w);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(dmbyok_keywatch_on_probe(&w, -EKEYREVOKED, true, now),
	                 DMBYOK_KEYWATCH_TEARDOWN);
}

static void test_failed_lock_is_retried(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	uint64_t decided, failed;

	(void)state;
	watch(&w, NULL);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	decided = now;
	/* The disk stalled: nothing is locked yet. */
	now += S(1);
	failed = now;
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, -EBUSY, now), 0);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);
	assert_int_equal(w.action_failures, 1);
	/* The probe (restore_interval after the decision) comes first, then the retry. */
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(now, decided + S(2));
	assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_LOCK);
	assert_int_equal(now, failed + S(2));
	/* Fails again, then succeeds: no more LOCK after that. */
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, -ETIMEDOUT, now), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_LOCK);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, 0, now), 0);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_LOCKED);
	assert_int_equal(w.action_failures, 0);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
		assert_int_equal(answer(&w, -EKEYREVOKED), 0);
	}
}

static void test_lock_overtaken_by_ok(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };

	(void)state;
	watch(&w, NULL);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	/* Probes go on while the LOCK runs; the key is back before it finished. */
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, 0), 0); /* no UNLOCK while the LOCK is outstanding */
	assert_int_equal(w.state, DMBYOK_KEYWATCH_ACTIVE);
	now += 500;
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, 0, now), 0);
	/* The follow-up is due at once. */
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now);
	assert_int_equal(dmbyok_keywatch_on_tick(&w, now), DMBYOK_KEYWATCH_UNLOCK);
	assert_true(dmbyok_keywatch_next_deadline(&w) > now);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_UNLOCK, 0, now), 0);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);

	/* Same race, but the LOCK failed: nothing left to do. */
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(answer(&w, 0), 0);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, -EBUSY, now), 0);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), now + S(10)); /* the probe only */
	assert_int_equal(sleep_and_tick(&w), DMBYOK_KEYWATCH_PROBE);
}

static void test_action_done_misuse(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };

	(void)state;
	watch(&w, NULL);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, 0, now), -EINVAL);
	assert_int_equal(dmbyok_keywatch_action_done(&w, 0, 0, now), -EINVAL);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_PROBE, 0, now), -EINVAL);
	/* Alerts are fire-and-forget; reporting them is harmless. */
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_ALERT_CREDENTIALS, 0, now),
	                 0);
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);

	/* The batch LOCK|TEARDOWN: one report each, in any order, each only once. */
	assert_int_equal(dmbyok_keywatch_on_probe(&w, -EKEYREVOKED, true, now),
	                 DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN);
	assert_int_equal(dmbyok_keywatch_action_done(
	                     &w, DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN, 0, now),
	                 -EINVAL);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_TEARDOWN, 0, now), 0);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_TEARDOWN, 0, now),
	                 -EINVAL);
	assert_int_equal(dmbyok_keywatch_action_done(&w, DMBYOK_KEYWATCH_LOCK, 0, now), 0);
	/* A LOCK reported after its TEARDOWN does not make the volumes "only locked". */
	assert_int_equal(w.volumes, DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), NEVER);
}

static void test_deadline_never_in_the_past(void **state)
{
	_cleanup_(dmbyok_keywatch_done) struct dmbyok_keywatch w = { 0 };
	uint64_t t;

	(void)state;
	watch(&w, NULL);
	assert_int_equal(answer(&w, 0), 0);
	/* A late daemon: the deadline it missed is "now", never earlier. */
	now += S(3600);
	assert_int_equal(dmbyok_keywatch_on_probe(&w, 0, false, now), 0); /* unsolicited */
	t = now;
	/* A clock that goes backwards is taken as standing still. */
	assert_int_equal(dmbyok_keywatch_on_tick(&w, t - S(100)), 0);
	assert_int_equal(w.clock_ms, t);
	assert_int_equal(dmbyok_keywatch_next_deadline(&w), t + S(10));
	assert_int_equal(dmbyok_keywatch_on_probe(&w, -EKEYREVOKED, false, t - S(50)),
	                 DMBYOK_KEYWATCH_PROBE);
	assert_int_equal(w.last_probe_ms, t);
	/* Each tick at the deadline moves it strictly forward. */
	assert_int_equal(answer(&w, -EKEYREVOKED), DMBYOK_KEYWATCH_LOCK);
	for (int i = 0; i < 1000; i++) {
		uint64_t before = now;

		sleep_and_tick(&w);
		assert_true(now > before || i == 0);
		assert_true(dmbyok_keywatch_next_deadline(&w) > now);
		if (w.probe_outstanding)
			assert_int_equal(answer(&w, -EAGAIN) & DMBYOK_KEYWATCH_PROBE, 0);
		if (w.actions_outstanding)
			assert_int_equal(
			    dmbyok_keywatch_action_done(
			        &w, w.actions_outstanding & -w.actions_outstanding, -EBUSY, now),
			    0);
	}
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(dmbyok_keywatch_state_name(DMBYOK_KEYWATCH_ACTIVE), "active");
	assert_string_equal(dmbyok_keywatch_state_name(_DMBYOK_KEYWATCH_STATE_MAX), "unknown");
	assert_string_equal(dmbyok_keywatch_action_name(DMBYOK_KEYWATCH_LOCK), "lock");
	assert_string_equal(dmbyok_keywatch_action_name(DMBYOK_KEYWATCH_REPROVISION),
	                    "reprovision");
	assert_string_equal(dmbyok_keywatch_action_name(DMBYOK_KEYWATCH_ALERT_CREDENTIALS),
	                    "alert-credentials");
	assert_string_equal(
	    dmbyok_keywatch_action_name(DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_UNLOCK), "unknown");
	assert_string_equal(dmbyok_keywatch_lock_reason_name(DMBYOK_KEYWATCH_REASON_REVOKED),
	                    "revoked");
	assert_string_equal(dmbyok_keywatch_volumes_name(DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN),
	                    "torn-down");
}

/*
 * The property test: a daemon with random probe latencies, random answers in regimes
 * (healthy, outage, revoked, credentials broken, chaos) and actions that randomly fail, over
 * simulated days. Checked on every action: LOCK/TEARDOWN only after revoke_confirmations
 * revoked answers since the last OK (or fail_closed_after without an OK, or a deletion);
 * UNLOCK/REPROVISION only after an OK that came after the last LOCK/TEARDOWN; one probe
 * and one action batch at a time; the deadline never in the past and never spinning.
 */
enum regime { HEALTHY, OUTAGE, REVOKED, CREDENTIALS, CHAOS, _REGIME_MAX };

struct sim {
	struct dmbyok_keywatch w;
	uint64_t rng;
	enum regime regime;
	bool calm; /* final phase: all OK, every action succeeds */
	bool allow_delete;

	bool probe_running;
	uint64_t probe_end;
	unsigned batch;
	uint64_t batch_end;

	/* The checker's own account of the answers. */
	unsigned streak;
	uint64_t last_ok;
	bool deleted;
	uint64_t event, last_ok_event, last_lock_event;
	uint64_t locks, unlocks, teardowns, reprovisions, probes;
};

static uint64_t rnd(struct sim *s)
{
	/* xorshift64*: deterministic per seed, so a failure replays. */
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * UINT64_C(2685821657736338717);
}

static unsigned below(struct sim *s, unsigned n)
{
	return (unsigned)(rnd(s) % n);
}

static int draw_answer(struct sim *s)
{
	static const int transient[] = { -ETIMEDOUT, -ECONNREFUSED, -EAGAIN, -EREMOTEIO };
	static const int any[] = { 0,        -EKEYREVOKED, -ETIMEDOUT,   -EKEYEXPIRED,
		                   -EBADMSG, -ENOMEM,      -EKEYREVOKED, 0 };
	unsigned p = below(s, 100);
	int t = transient[below(s, ELEMENTSOF(transient))];

	if (s->calm)
		return 0;
	if (below(s, 300) == 0)
		s->regime = (enum regime)below(s, _REGIME_MAX);
	switch (s->regime) {
	case HEALTHY:
		return p < 95 ? 0 : t;
	case OUTAGE:
		return p < 97 ? t : 0;
	case REVOKED:
		return p < 75 ? -EKEYREVOKED : p < 97 ? t : 0;
	case CREDENTIALS:
		return p < 85 ? -EKEYEXPIRED : p < 95 ? t : -EBADMSG;
	default:
		return any[below(s, ELEMENTSOF(any))];
	}
}

static void sim_check_and_start(struct sim *s, unsigned acts, uint64_t t)
{
	const struct dmbyok_keywatch_config *cfg = &s->w.cfg;
	unsigned vol = acts & VOLUME_ACTS;

	if (acts & (DMBYOK_KEYWATCH_LOCK | DMBYOK_KEYWATCH_TEARDOWN)) {
		bool revoked = s->streak >= cfg->revoke_confirmations;
		bool stale =
		    cfg->fail_closed_after_ms > 0 && t - s->last_ok >= cfg->fail_closed_after_ms;

		assert_true(revoked || stale || s->deleted);
		s->last_lock_event = s->event;
		s->locks += !!(acts & DMBYOK_KEYWATCH_LOCK);
		s->teardowns += !!(acts & DMBYOK_KEYWATCH_TEARDOWN);
	}
	if (acts & (DMBYOK_KEYWATCH_UNLOCK | DMBYOK_KEYWATCH_REPROVISION)) {
		assert_false(s->deleted);
		assert_true(s->last_ok_event > s->last_lock_event);
		s->unlocks += !!(acts & DMBYOK_KEYWATCH_UNLOCK);
		s->reprovisions += !!(acts & DMBYOK_KEYWATCH_REPROVISION);
	}
	/* Never two opposite moves at once. */
	assert_false((acts & DMBYOK_KEYWATCH_LOCK) && (acts & DMBYOK_KEYWATCH_UNLOCK));
	if (vol) {
		assert_int_equal(s->batch, 0);
		s->batch = vol;
		s->batch_end = t + below(s, 6000);
	}
	if (acts & DMBYOK_KEYWATCH_PROBE) {
		assert_false(s->probe_running);
		s->probe_running = true;
		/* Mostly quick; sometimes longer than a check interval (KMS retries). */
		s->probe_end = t + (below(s, 20) ? below(s, 3000) : S(10) + below(s, 20000));
		s->probes++;
	}
}

static void sim_run(struct sim *s, uint64_t *t, uint64_t until)
{
	unsigned same_time = 0;
	uint64_t prev = *t;

	while (*t < until) {
		uint64_t d = dmbyok_keywatch_next_deadline(&s->w), next = d;
		unsigned acts;

		if (s->probe_running)
			next = MIN(next, s->probe_end);
		if (s->batch)
			next = MIN(next, s->batch_end);
		if (next == NEVER) {
			/* Only a deleted key with nothing left to do rests for good. */
			assert_int_equal(s->w.state, DMBYOK_KEYWATCH_KEY_DELETED);
			return;
		}
		assert_true(d == NEVER || d >= *t);
		*t = MAX(*t, next);
		/* Several events may share a moment, but not endlessly. */
		same_time = *t == prev ? same_time + 1 : 0;
		assert_true(same_time < 8);
		prev = *t;
		s->event++;

		if (s->probe_running && *t >= s->probe_end) {
			int r = draw_answer(s);
			bool deleted = r == -EKEYREVOKED && s->allow_delete && below(s, 20000) == 0;

			s->probe_running = false;
			if (!s->deleted) {
				if (r == 0) {
					s->streak = 0;
					s->last_ok = *t;
					s->last_ok_event = s->event;
				} else if (r == -EKEYREVOKED)
					s->streak++;
				s->deleted = deleted;
			}
			acts = dmbyok_keywatch_on_probe(&s->w, r, deleted, *t);
			if (acts & DMBYOK_KEYWATCH_ALERT_CREDENTIALS)
				assert_int_equal(r, -EKEYEXPIRED);
			if (acts & DMBYOK_KEYWATCH_ALERT_OTHER)
				assert_true(r == -EBADMSG || r == -ENOMEM);
			if (acts & DMBYOK_KEYWATCH_ALERT_CLEARED)
				assert_true(r == 0 || r == -EKEYREVOKED);
		} else if (s->batch && *t >= s->batch_end) {
			unsigned batch = s->batch;

			s->batch = 0;
			for (unsigned bit = 1; bit & VOLUME_ACTS; bit <<= 1) {
				int r = !s->calm && below(s, 5) == 0 ? -EBUSY : 0;

				if (batch & bit)
					assert_int_equal(
					    dmbyok_keywatch_action_done(&s->w, bit, r, *t), 0);
			}
			assert_true(dmbyok_keywatch_next_deadline(&s->w) >= *t);
			continue;
		} else {
			acts = dmbyok_keywatch_on_tick(&s->w, *t);
			assert_int_equal(acts & DMBYOK_KEYWATCH_ALERTS, 0);
		}
		/* Whatever was due has been handed out: the next deadline is later. */
		assert_true(dmbyok_keywatch_next_deadline(&s->w) > *t);
		sim_check_and_start(s, acts, *t);
	}
}

static void test_property_random_days(void **state)
{
	static const struct {
		unsigned confirmations;
		uint64_t fail_closed, teardown, check, restore;
		bool allow_delete;
	} cases[] = {
		{ 2, 0, S(300), S(10), S(2), false }, { 1, 0, S(300), S(10), S(2), false },
		{ 3, 0, S(60), S(5), S(1), false },   { 2, S(120), S(300), S(10), S(2), false },
		{ 2, S(20), 0, S(10), 500, false },   { 5, S(3600), S(30), S(30), S(5), false },
		{ 2, 0, S(300), S(10), S(2), true },  { 1, S(60), S(10), S(1), 100, true },
	};
	uint64_t total_probes = 0, total_locks = 0, total_unlocks = 0, total_reprov = 0;

	(void)state;
	for (unsigned c = 0; c < ELEMENTSOF(cases); c++)
		for (uint64_t seed = 1; seed <= 3; seed++) {
			struct dmbyok_keywatch_config cfg = {
				.check_interval_ms = cases[c].check,
				.revoke_confirmations = cases[c].confirmations,
				.restore_interval_ms = cases[c].restore,
				.teardown_after_ms = cases[c].teardown,
				.fail_closed_after_ms = cases[c].fail_closed,
			};
			struct sim s = {
				.rng = seed * UINT64_C(0x9e3779b97f4a7c15) + c,
				.allow_delete = cases[c].allow_delete,
			};
			uint64_t t = S(5000) + seed;

			assert_int_equal(dmbyok_keywatch_init(&s.w, arn, &cfg, t), 0);
			s.last_ok = t;
			/* Two days of weather, then a calm day: everything must come back. */
			sim_run(&s, &t, t + S(2 * 86400));
			s.calm = true;
			sim_run(&s, &t, t + S(86400));
			if (s.deleted) {
				assert_int_equal(s.w.state, DMBYOK_KEYWATCH_KEY_DELETED);
				assert_int_equal(s.w.volumes, DMBYOK_KEYWATCH_VOLUMES_TORN_DOWN);
			} else {
				assert_int_equal(s.w.state, DMBYOK_KEYWATCH_ACTIVE);
				assert_int_equal(s.w.volumes, DMBYOK_KEYWATCH_VOLUMES_OPEN);
				assert_int_equal(s.w.actions_outstanding, 0);
				assert_int_equal(s.w.alert_class, DMBYOK_OK);
			}
			total_probes += s.probes;
			total_locks += s.locks;
			total_unlocks += s.unlocks;
			total_reprov += s.reprovisions;
			dmbyok_keywatch_done(&s.w);
		}
	/* The weather really exercised the machine. */
	assert_true(total_probes > 500000);
	assert_true(total_locks > 100);
	assert_true(total_unlocks > 50);
	assert_true(total_reprov > 5);
	print_message("property: %" PRIu64 " probes, %" PRIu64 " locks, %" PRIu64
	              " unlocks, %" PRIu64 " reprovisions\n",
	              total_probes, total_locks, total_unlocks, total_reprov);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_config_default, setup),
		cmocka_unit_test_setup(test_config_validation, setup),
		cmocka_unit_test_setup(test_init_and_done, setup),
		cmocka_unit_test_setup(test_probes_keep_the_interval_without_extra_wakeups, setup),
		cmocka_unit_test_setup(test_two_confirmations_lock_one_does_not, setup),
		cmocka_unit_test_setup(test_suspect_is_reprobed_at_once, setup),
		cmocka_unit_test_setup(test_ok_between_revoked_answers_resets, setup),
		cmocka_unit_test_setup(test_transient_neither_counts_nor_resets, setup),
		cmocka_unit_test_setup(test_transient_never_locks, setup),
		cmocka_unit_test_setup(test_credentials_alert_once_never_lock, setup),
		cmocka_unit_test_setup(test_fail_closed_locks_after_bound_and_restores, setup),
		cmocka_unit_test_setup(test_restore_within_restore_interval, setup),
		cmocka_unit_test_setup(test_adopted_locked_volumes, setup),
		cmocka_unit_test_setup(test_teardown_then_reprovision, setup),
		cmocka_unit_test_setup(test_teardown_never_when_off, setup),
		cmocka_unit_test_setup(test_key_deleted_is_terminal, setup),
		cmocka_unit_test_setup(test_failed_lock_is_retried, setup),
		cmocka_unit_test_setup(test_lock_overtaken_by_ok, setup),
		cmocka_unit_test_setup(test_action_done_misuse, setup),
		cmocka_unit_test_setup(test_deadline_never_in_the_past, setup),
		cmocka_unit_test_setup(test_names, setup),
		cmocka_unit_test_setup(test_property_random_days, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
