/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* dmbyokd's state, shared by the loop (dmbyokd.c) and what reports it (status.c). */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "control.h"
#include "dmbyok/kms.h"
#include "dmbyok/token.h"
#include "keywatch.h"
#include "metrics.h"
#include "prober.h"

struct agent;

/*
 * How often, in probes, a probe may add a DescribeKey: of the alias (re-targeted?) while the
 * key answers, of the key (deleted?) once it is locked. Until it is locked, every revoked
 * answer gets the deletion check, so a deleted key is known as such when it locks.
 */
#define DESCRIBE_EVERY 6
/* A rescan in case a uevent was lost (the socket overflowed): at most this far apart. */
#define RESCAN_BACKSTOP_MS 60000ULL
/* Uevents come in bursts (one per suspend, resume, table load): one rescan per burst. */
#define RESCAN_DEBOUNCE_MS 200ULL
/* A hook that has not finished by then is killed: the next step must not wait for ever. */
#define HOOK_TIMEOUT_MS 60000U

/* A volume of a key: mapped now, or torn down (only its record remains). */
struct vol {
	char *name;
	char *device;
	char *header;
	bool torn_down;
};

/* A customer key and the volumes that use it. */
struct key {
	struct agent *agent;
	struct dmbyok_keywatch watch;
	/*
	 * The per-volume grant its volumes unwrap through, or NULL. A watch is per (key, grant):
	 * a customer who revokes one volume's grant must see exactly that volume locked.
	 */
	char *grant_id;
	char *label; /* for people: the key ARN, and " through grant ID" when there is one */
	struct dmbyok_token *token; /* one of its volumes' tokens: what a probe decrypts */
	struct vol *vols;           /* as of the last scan */
	size_t n_vols;
	bool seen; /* found by the current scan */
	sd_event_source *timer;
	struct dmbyok_prober *prober; /* created at the first probe */
	pid_t action_pid, rewrap_pid;
	unsigned action;             /* the volume action action_pid performs */
	unsigned probes_to_describe; /* probes until the next DescribeKey */
	unsigned describe;           /* DMBYOK_PROBE_DESCRIBE_* the running probe may add */
	bool rewrap_due;             /* the alias moved: re-wrap once no action runs */
	bool unreachable;            /* the last answer was transient (logged once per outage) */
	uint64_t probe_started_ms, last_latency_ms, action_started_ms;
	uint64_t locked_at_us, restored_at_us; /* CLOCK_REALTIME, for status; 0: never */
};

struct agent {
	sd_event *event;
	struct dmbyok_agent_config conf; /* file and command line */
	struct kms_options kms;          /* from conf */
	struct key **keys;
	size_t n_keys;
	sd_event_source *rescan, *uevents;
	struct dmbyok_control_server *control;
	struct dmbyok_metrics *metrics;    /* NULL: no metrics-file */
	struct dmbyok_policywatch *policy; /* NULL: no policy-data-paths */
	struct attacher *attach;           /* attach.c: the volumes table's volumes */
	/* What attach.c needs of the loop (dmbyokd.c sets them; no call back up): exit once no
	 * child runs (after SIGTERM), and rescan the mappings shortly. */
	void (*exit_when_idle)(struct agent *a);
	void (*rescan_soon)(struct agent *a);
	uint64_t started_us; /* CLOCK_REALTIME */
	bool stopping;       /* SIGTERM: start nothing new, exit once running children are done */
};

/*
 * attach.c: attaches the volumes of the table at start, then sends READY=1 (see there);
 * udev's hand-over (`{"command": "attach", "name": DEVICE}`); the entries for status.
 */
int dmbyok_agent_attach_start(struct agent *a);
bool dmbyok_agent_attach_busy(const struct agent *a);
int dmbyok_agent_attach_command(struct agent *a, json_object *request, json_object **ret);
json_object *dmbyok_agent_attach_json(const struct agent *a);
void dmbyok_agent_attach_free(struct agent *a);

/* CLOCK_REALTIME in microseconds (status times); CLOCK_MONOTONIC ms is keywatch's clock. */
uint64_t dmbyok_agent_realtime_us(void);
/* The control socket's `status` answer (docs/agent-control.md). */
int dmbyok_agent_status(json_object *request, json_object **ret, void *userdata);
/* Rewrites the metrics file, if one is configured (after each probe and action). */
void dmbyok_agent_write_metrics(struct agent *a);
