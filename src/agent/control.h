/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * dmbyokd's control socket, server side (docs/agent-control.md; the client is
 * include/dmbyok/agent.h). A SOCK_SEQPACKET Unix socket served from the agent's sd-event
 * loop without ever blocking it: one connection carries one request message (a JSON
 * object, at most DMBYOK_AGENT_MAX_REQUEST bytes) and gets one response message, then is
 * closed. A connection that has not been answered and flushed within
 * DMBYOK_CONTROL_CONNECTION_TIMEOUT_MS is dropped, and at most DMBYOK_CONTROL_MAX_CONNECTIONS
 * are served at once (others get {"error": ...} and are closed), so clients that never send
 * or never read cost nothing but a slot for a while. Only root (or the agent's own user)
 * may ask.
 *
 * The server checks what every request must be (a JSON object with a string "command"
 * and, if present, a string "name") and answers {"command": "ping"} itself with
 * {"pong": true}; every other request goes to the handler.
 */

#include <json-c/json.h>
#include <systemd/sd-event.h>

#define DMBYOK_CONTROL_CONNECTION_TIMEOUT_MS 2000U
#define DMBYOK_CONTROL_MAX_CONNECTIONS       16U

struct dmbyok_control_server;
/* Builds the answer to one request. `request` is the parsed JSON object; return 0 with
 * *ret_response set (the server takes ownership), or a negative errno (the server answers
 * {"error": "..."}). */
typedef int (*dmbyok_control_handler_fn)(json_object *request, json_object **ret_response,
                                         void *userdata);
/* Listens on `path` (NULL: <dmbyok_runtime_dir()>/dmbyokd.sock), mode 0600, replacing a
 * stale socket left by a killed agent but refusing (-EADDRINUSE) if another agent answers
 * on it. */
int dmbyok_control_server_new(sd_event *event, const char *path, dmbyok_control_handler_fn fn,
                              void *userdata, struct dmbyok_control_server **ret);
struct dmbyok_control_server *
dmbyok_control_server_free(struct dmbyok_control_server *s); /* NULL-safe, unlinks the socket */
