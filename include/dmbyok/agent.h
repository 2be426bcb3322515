/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Talking to the running agent, dmbyokd, over its control socket (docs/agent-control.md):
 * a SOCK_SEQPACKET Unix socket, <runtime dir>/dmbyokd.sock, mode 0600, root only. One
 * connection carries one JSON request ({"command": "status"}, optionally "name") and one
 * JSON response; the agent then closes it.
 */

#include <json-c/json.h>

#define DMBYOK_AGENT_SOCKET_NAME "dmbyokd.sock"
/* Largest request the agent reads: requests are tiny; anything bigger is refused. */
#define DMBYOK_AGENT_MAX_REQUEST 4096U
/* Largest response a client accepts. */
#define DMBYOK_AGENT_MAX_RESPONSE (16U * 1024U * 1024U)
/* The bound of dmbyok_agent_query(), connect to answer. */
#define DMBYOK_AGENT_QUERY_TIMEOUT_MS 2000U

/* <dmbyok_runtime_dir()>/dmbyokd.sock. */
int dmbyok_agent_socket_path(char **ret);

/*
 * Asks the running agent. -ENOENT/-ECONNREFUSED when no agent runs (socket missing or
 * stale): callers say "agent: not running". Bounded: 2 s in all (-ETIMEDOUT). An answer
 * {"error": ...} is logged and returned as -EREMOTEIO (never as one of the codes above, so
 * an agent that fails a request is not mistaken for an absent one). -EPERM when the
 * socket's owner is neither root nor this user. `name` may be NULL.
 */
int dmbyok_agent_query(const char *command, const char *name, json_object **ret_response);
/* The same against the socket at `path`, bounded by timeout_ms. */
int dmbyok_agent_query_at(const char *path, const char *command, const char *name,
                          unsigned timeout_ms, json_object **ret_response);
