/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Optional enforcement of "all data under the customer's key" (dmbyokd.conf
 * policy-data-paths, policy-unmount): a file system mounted at or under a data path from
 * storage that is not a dmbyok volume is reported once (DMBYOK_MESSAGE_POLICY_VIOLATED)
 * and, with unmount, unmounted (through systemd when the agent has a mount namespace of its
 * own). The check is doctor --policy's (lifecycle/policy.c); what the data path merely sits
 * on (the root file system) is never unmounted, and what cannot be proven plain (a network
 * file system) is only reported.
 */

#include <stdbool.h>

#include <systemd/sd-event.h>

struct dmbyok_policywatch;

/* data_paths: absolute paths separated by ':'. Looks at once, then at each mount change. */
int dmbyok_policywatch_new(sd_event *event, const char *data_paths, bool unmount,
                           struct dmbyok_policywatch **ret);
/* NULL-safe. */
struct dmbyok_policywatch *dmbyok_policywatch_free(struct dmbyok_policywatch *w);
