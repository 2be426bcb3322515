/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client side of dmbyokd's control socket (docs/agent-control.md): one request, one
 * answer, within a deadline, so `dmbyok status` never hangs on an agent that is stuck.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dmbyok/agent.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "dmbyok/process.h"

int dmbyok_agent_socket_path(char **ret)
{
	if (asprintf(ret, "%s/%s", dmbyok_runtime_dir(), DMBYOK_AGENT_SOCKET_NAME) < 0)
		return -ENOMEM;
	return 0;
}

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_CLEANUP_FUNC(json_tokener *, json_tokener_free);

/* Milliseconds left until `deadline` (never negative). */
static int remaining_ms(unsigned long long deadline)
{
	unsigned long long now = dmbyok_now_ms();

	return now >= deadline ? 0 : (int)(deadline - now);
}

/* Waits until fd is ready for `events` or the deadline passes (-ETIMEDOUT). */
static int wait_fd(int fd, short events, unsigned long long deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int left = remaining_ms(deadline), n;

		if (left == 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (n > 0)
			return 0; /* ready, or an error/hangup the next call reports */
	}
}

static int connect_bounded(int fd, const struct sockaddr_un *sa, unsigned long long deadline)
{
	/*
	 * A Unix socket connect never returns EINPROGRESS: a full backlog (an agent too busy to
	 * accept) is EAGAIN, and nothing signals when it drains, so retry in small steps.
	 */
	while (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		struct timespec ts = { .tv_nsec = 10 * 1000000L };

		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return negative_errno();
		if (remaining_ms(deadline) == 0)
			return -ETIMEDOUT;
		(void)nanosleep(&ts, NULL);
	}
	return 0;
}

/* Whoever listens must be root (or us): nobody else may pose as the agent. */
static int check_peer(int fd, const char *path)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return log_error_errno(errno, "Cannot identify who listens on %s: %m", path);
	if (cred.uid != 0 && cred.uid != geteuid())
		return log_error_errno(EPERM,
		                       "%s is served by uid %u, neither root nor us: not asking "
		                       "it.",
		                       path, (unsigned)cred.uid);
	return 0;
}

static int build_request(const char *command, const char *name, char **ret)
{
	_cleanup_(json_object_putp) json_object *o = json_object_new_object();

	ENSURE_ALLOC(o);
	if (json_object_object_add(o, "command", json_object_new_string(command)) < 0 ||
	    (name && json_object_object_add(o, "name", json_object_new_string(name)) < 0))
		return -ENOMEM;
	*ret = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	ENSURE_ALLOC(*ret);
	return 0;
}

static int receive_answer(int fd, unsigned long long deadline, json_object **ret)
{
	_cleanup_(json_tokener_freep) json_tokener *tok = NULL;
	_cleanup_free_ char *buf = NULL;
	json_object *o;
	bool reset_seen = false;
	char peek;
	ssize_t n;

	for (;;) {
		GUARD(wait_fd(fd, POLLIN, deadline));
		/* MSG_TRUNC: the length of the whole message, whatever the buffer. */
		n = recv(fd, &peek, 1, MSG_PEEK | MSG_TRUNC);
		if (n >= 0)
			break;
		/*
		 * An agent that refused us (busy, not root) and closed before reading our request
		 * makes the kernel report ECONNRESET once, ahead of the answer it left: read on.
		 */
		if (errno == ECONNRESET && !reset_seen) {
			reset_seen = true;
			continue;
		}
		if (errno != EAGAIN && errno != EINTR)
			break;
	}
	if (n < 0)
		return negative_errno();
	if (n == 0)
		return -ECONNRESET; /* closed without an answer */
	if ((size_t)n > DMBYOK_AGENT_MAX_RESPONSE)
		return log_error_errno(EMSGSIZE, "dmbyokd's answer is too large (%zd bytes).", n);
	buf = malloc((size_t)n + 1);
	ENSURE_ALLOC(buf);
	if (recv(fd, buf, (size_t)n, 0) != n)
		return -EIO;
	buf[n] = 0;

	tok = json_tokener_new();
	ENSURE_ALLOC(tok);
	o = json_tokener_parse_ex(tok, buf, (int)n);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != (size_t)n ||
	    !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return log_error_errno(EPROTO, "dmbyokd's answer is not a JSON object.");
	}
	*ret = o;
	return 0;
}

int dmbyok_agent_query_at(const char *path, const char *command, const char *name,
                          unsigned timeout_ms, json_object **ret_response)
{
	unsigned long long deadline = dmbyok_now_ms() + timeout_ms;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *req = NULL;
	json_object *answer = NULL, *err;
	ssize_t n;
	int r;

	ENSURE(path && command && ret_response, EINVAL);
	if (strlen(path) >= sizeof(sa.sun_path))
		return log_error_errno(ENAMETOOLONG, "Socket path %s is too long.", path);
	memcpy(sa.sun_path, path, strlen(path));
	GUARD(build_request(command, name, &req));

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return log_error_errno(errno, "Cannot create a socket: %m");
	r = connect_bounded(fd, &sa, deadline);
	if (r < 0) {
		/* No agent is an answer, not a failure: the caller words it. */
		log_debug("Cannot reach dmbyokd at %s: %s", path, dmbyok_strerror(r));
		return r;
	}
	GUARD(check_peer(fd, path));
	for (;;) {
		/* MSG_NOSIGNAL: an agent that closed on us is an error, not a SIGPIPE. */
		n = send(fd, req, strlen(req), MSG_NOSIGNAL);
		if (n >= 0)
			break;
		/* Closed already: what it said before closing (if anything) is read below. */
		if (errno == EPIPE)
			break;
		if (errno != EAGAIN && errno != EINTR)
			return log_debug_errno(errno, "Cannot send to dmbyokd at %s: %m", path);
		GUARD(wait_fd(fd, POLLOUT, deadline));
	}
	r = receive_answer(fd, deadline, &answer);
	if (r < 0)
		return log_debug_errno(r, "No answer from dmbyokd at %s: %s", path,
		                       dmbyok_strerror(r));
	if (json_object_object_get_ex(answer, "error", &err)) {
		log_warning("dmbyokd refused \"%s\": %s", command, json_object_get_string(err));
		json_object_put(answer);
		return -EREMOTEIO;
	}
	*ret_response = answer;
	return 0;
}

int dmbyok_agent_query(const char *command, const char *name, json_object **ret_response)
{
	_cleanup_free_ char *path = NULL;

	GUARD(dmbyok_agent_socket_path(&path));
	return dmbyok_agent_query_at(path, command, name, DMBYOK_AGENT_QUERY_TIMEOUT_MS,
	                             ret_response);
}
