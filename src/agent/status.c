/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What dmbyokd tells: the control socket's `status` answer (docs/agent-control.md) and the
 * Prometheus textfile metrics, both from the same view of keys and volumes.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dmbyok/error.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"
#include "agent-state.h"

uint64_t dmbyok_agent_realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

/* keywatch counts CLOCK_MONOTONIC ms; status shows wall-clock times. */
static uint64_t wall_us_of(uint64_t mono_ms)
{
	uint64_t now = dmbyok_now_ms(), wall = dmbyok_agent_realtime_us();

	return mono_ms >= now ? wall : wall - (now - mono_ms) * 1000ULL;
}

static json_object *rfc3339(uint64_t wall_us)
{
	char buf[32];
	time_t t = (time_t)(wall_us / 1000000ULL);
	struct tm tm;

	if (!wall_us || !gmtime_r(&t, &tm) ||
	    !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return NULL; /* JSON null */
	return json_object_new_string(buf);
}

/*
 * A volume's state as the agent sees it. waiting-for-kms: the key has not answered (an
 * outage, or this host's credentials) for two probe intervals, so nothing is known.
 */
static const char *volume_state(const struct key *k, const struct vol *v)
{
	const struct dmbyok_keywatch *w = &k->watch;

	if (w->state == DMBYOK_KEYWATCH_KEY_DELETED)
		return "key-deleted";
	if (v->torn_down)
		return "torn-down";
	if (w->state == DMBYOK_KEYWATCH_LOCKED || w->state == DMBYOK_KEYWATCH_TORN_DOWN)
		return "locked";
	if (w->last_class != DMBYOK_OK && w->last_class != DMBYOK_ERR_KEY_REVOKED &&
	    dmbyok_now_ms() - w->last_ok_ms > 2 * w->cfg.check_interval_ms)
		return "waiting-for-kms";
	return "active";
}

static enum dmbyok_metrics_volume_state metrics_state(const char *state)
{
	for (int i = 0; i < _DMBYOK_METRICS_VOLUMES_MAX; i++)
		if (!strcmp(dmbyok_metrics_volume_state_name(i), state))
			return i;
	return DMBYOK_METRICS_VOLUMES_ACTIVE;
}

#define ADD(o, key, value)                                                                         \
	do {                                                                                       \
		if (json_object_object_add((o), (key), (value)) < 0)                               \
			goto oom;                                                                  \
	} while (0)

static json_object *agent_json(const struct agent *a)
{
	const struct dmbyok_keywatch_config *c = &a->conf.watch;
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	ADD(o, "pid", json_object_new_int(getpid()));
	ADD(o, "version", json_object_new_string(DMBYOK_VERSION));
	ADD(o, "started", rfc3339(a->started_us));
	ADD(o, "check_interval_s", json_object_new_int64(c->check_interval_ms / 1000));
	ADD(o, "revoke_confirmations", json_object_new_int(c->revoke_confirmations));
	ADD(o, "restore_interval_s", json_object_new_int64(c->restore_interval_ms / 1000));
	ADD(o, "teardown_after_s", json_object_new_int64(c->teardown_after_ms / 1000));
	ADD(o, "fail_closed_after_s", json_object_new_int64(c->fail_closed_after_ms / 1000));
	return o;
oom:
	json_object_put(o);
	return NULL;
}

static json_object *key_json(const struct key *k)
{
	const struct dmbyok_keywatch *w = &k->watch;
	uint64_t next = dmbyok_keywatch_next_deadline(w), now = dmbyok_now_ms();
	json_object *o = json_object_new_object(), *vols = json_object_new_array();

	if (!o || !vols)
		goto oom;
	ADD(o, "key_arn", json_object_new_string(w->key_arn));
	ADD(o, "grant_id", k->grant_id ? json_object_new_string(k->grant_id) : NULL);
	if (k->token && k->token->key_id)
		ADD(o, "key_id", json_object_new_string(k->token->key_id));
	ADD(o, "state", json_object_new_string(dmbyok_keywatch_state_name(w->state)));
	ADD(o, "lock_reason",
	    json_object_new_string(dmbyok_keywatch_lock_reason_name(w->lock_reason)));
	ADD(o, "last_probe", w->probes ? rfc3339(wall_us_of(w->last_probe_ms)) : NULL);
	ADD(o, "last_probe_class",
	    w->probes ? json_object_new_string(dmbyok_error_class_name(w->last_class)) : NULL);
	ADD(o, "last_probe_latency_ms",
	    w->probes ? json_object_new_int64(k->last_latency_ms) : NULL);
	ADD(o, "last_ok", w->probes_ok ? rfc3339(wall_us_of(w->last_ok_ms)) : NULL);
	ADD(o, "next_probe_in_ms",
	    next == UINT64_MAX ? NULL : json_object_new_int64(next > now ? next - now : 0));
	ADD(o, "probes", json_object_new_int64(w->probes));
	ADD(o, "locked_at", rfc3339(k->locked_at_us));
	ADD(o, "restored_at", rfc3339(k->restored_at_us));
	for (size_t i = 0; i < k->n_vols; i++)
		if (json_object_array_add(vols, json_object_new_string(k->vols[i].name)) < 0)
			goto oom;
	ADD(o, "volumes", vols);
	return o;
oom:
	json_object_put(vols);
	json_object_put(o);
	return NULL;
}

static json_object *volume_json(const struct key *k, const struct vol *v)
{
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	ADD(o, "name", json_object_new_string(v->name));
	ADD(o, "key_arn", json_object_new_string(k->watch.key_arn));
	ADD(o, "grant_id", k->grant_id ? json_object_new_string(k->grant_id) : NULL);
	ADD(o, "state", json_object_new_string(volume_state(k, v)));
	ADD(o, "device", json_object_new_string(v->device));
	return o;
oom:
	json_object_put(o);
	return NULL;
}

int dmbyok_agent_status(json_object *request, json_object **ret, void *userdata)
{
	struct agent *a = userdata;
	json_object *o = json_object_new_object(), *keys = json_object_new_array(),
	            *vols = json_object_new_array(), *cmd;

	if (!json_object_object_get_ex(request, "command", &cmd) ||
	    strcmp(json_object_get_string(cmd), "status") != 0) {
		json_object_put(o), json_object_put(keys), json_object_put(vols);
		return -EOPNOTSUPP;
	}
	if (!o || !keys || !vols)
		goto oom;
	ADD(o, "agent", agent_json(a));
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct key *k = a->keys[i];

		if (json_object_array_add(keys, key_json(k)) < 0)
			goto oom;
		for (size_t j = 0; j < k->n_vols; j++)
			if (json_object_array_add(vols, volume_json(k, &k->vols[j])) < 0)
				goto oom;
	}
	ADD(o, "keys", keys);
	keys = NULL;
	ADD(o, "volumes", vols);
	ADD(o, "attach", dmbyok_agent_attach_json(a));
	*ret = o;
	return 0;
oom:
	json_object_put(keys);
	json_object_put(vols);
	json_object_put(o);
	return log_oom();
}

void dmbyok_agent_write_metrics(struct agent *a)
{
	struct dmbyok_metrics_gauges g = { 0 };
	struct dmbyok_metrics_key *keys;
	int r;

	if (!a->metrics)
		return;
	keys = calloc(a->n_keys ? a->n_keys : 1, sizeof(*keys));
	if (!keys) {
		log_oom();
		return;
	}
	for (size_t i = 0; i < a->n_keys; i++) {
		const struct key *k = a->keys[i];

		keys[i] = (struct dmbyok_metrics_key){
			.key_arn = k->watch.key_arn,
			.grant_id = k->grant_id,
			.state = k->watch.state,
			.last_ok_unix_s =
			    k->watch.probes_ok ? wall_us_of(k->watch.last_ok_ms) / 1000000ULL : 0,
		};
		for (size_t j = 0; j < k->n_vols; j++)
			g.volumes[metrics_state(volume_state(k, &k->vols[j]))]++;
	}
	g.keys = keys;
	g.n_keys = a->n_keys;
	r = dmbyok_metrics_write(a->metrics, &g, a->conf.metrics_file);
	if (r < 0)
		log_warning("Cannot write the metrics to %s: %s", a->conf.metrics_file,
		            dmbyok_strerror(r));
	free(keys);
}
