/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A key's prober: a long-lived child process that holds one KMS client for the key, so a
 * probe reuses its connection and cached credentials instead of a fresh process, TLS
 * handshake and credential lookup each time. One per key: a KMS call that hangs for one
 * key never delays another's probe. The loop sends a request and gets the answer as an
 * event; a prober that does not answer within DMBYOK_PROBER_DEADLINE_MS is killed (the
 * probe is answered -ETIMEDOUT, a transient outcome) and replaced at the next probe.
 */

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "dmbyok/kms.h"
#include "dmbyok/token.h"

/* Longer than the KMS client's own bound (attempts x timeout + backoff). */
#define DMBYOK_PROBER_DEADLINE_MS 60000U

struct dmbyok_prober;
/* result: 0 or -errno of the Decrypt; found: DMBYOK_PROBE_* of dmbyok_probe_key(). */
typedef void (*dmbyok_prober_done_fn)(int result, unsigned found, void *userdata);

/* The token and options must outlive the prober (the child keeps its own copy anyway). */
int dmbyok_prober_new(sd_event *event, const struct dmbyok_token *token,
                      const struct kms_options *kms, dmbyok_prober_done_fn done, void *userdata,
                      struct dmbyok_prober **ret);
/* Starts one probe; `done` is called from the loop. -EBUSY while one is outstanding. */
int dmbyok_prober_probe(struct dmbyok_prober *p, unsigned describe); /* DMBYOK_PROBE_DESCRIBE_* */
/* Whether a probe is outstanding (its answer, or the deadline, is still to come). */
bool dmbyok_prober_busy(const struct dmbyok_prober *p);
/* Kills the child. NULL-safe. */
struct dmbyok_prober *dmbyok_prober_free(struct dmbyok_prober *p);
