/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dmbyokd's control socket (control.h, docs/agent-control.md). Everything here runs from
 * the agent's sd-event loop and never blocks it: sockets are non-blocking, each connection
 * has a deadline, requests and the number of connections are bounded.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "dmbyok/agent.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

/* How long a starting agent waits for an existing socket's owner to answer a ping. */
#define STALE_CHECK_TIMEOUT_MS 1000U
/* After accept() fails for lack of resources (EMFILE...), stop accepting for this long. */
#define ACCEPT_RETRY_USEC (100U * 1000U)
/* Nesting allowed in a request: requests are flat objects. */
#define REQUEST_MAX_DEPTH 8

struct connection {
	struct dmbyok_control_server *server;
	struct connection *prev, *next;
	int fd;
	pid_t pid; /* the client, for the log */
	sd_event_source *io, *timer;
	char *out; /* the answer, once there is one */
	size_t out_len;
	bool shrunk; /* the answer was replaced by "too large" already */
};

struct dmbyok_control_server {
	sd_event *event;
	dmbyok_control_handler_fn fn;
	void *userdata;
	char *path;
	int listen_fd;
	sd_event_source *listener, *accept_retry;
	struct connection *connections;
	unsigned n_connections;
	/* The socket file we bound, so free() never unlinks one that replaced it. */
	bool bound;
	dev_t dev;
	ino_t ino;
	pid_t owner; /* a forked child that frees its copy must not unlink our socket */
};

DEFINE_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_CLEANUP_FUNC(json_tokener *, json_tokener_free);
DEFINE_CLEANUP_FUNC(struct dmbyok_control_server *, dmbyok_control_server_free);

static bool peer_allowed(uid_t uid)
{
	/* Root; or the agent's own user, so tests run it unprivileged. */
	return uid == 0 || uid == geteuid();
}

static void connection_free(struct connection *c)
{
	struct dmbyok_control_server *s = c->server;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->connections = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_connections--;
	sd_event_source_disable_unref(c->io);
	sd_event_source_disable_unref(c->timer);
	/* Last: a client that sees EOF finds its slot free again. */
	close(c->fd);
	free(c->out);
	free(c);
}

static int error_message(int err, const char *msg, char **ret, size_t *ret_len)
{
	_cleanup_(json_object_putp) json_object *o = json_object_new_object();

	ENSURE_ALLOC(o);
	if (json_object_object_add(o, "error", json_object_new_string(msg)) < 0 ||
	    json_object_object_add(o, "errno", json_object_new_int(err)) < 0)
		return -ENOMEM;
	*ret = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	ENSURE_ALLOC(*ret);
	*ret_len = strlen(*ret);
	return 0;
}

/* Sends the answer (all or nothing: one message), or waits until the socket takes it. */
static void connection_flush(struct connection *c)
{
	for (;;) {
		if (send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			/* The client reads slowly (or never): its deadline bounds the wait. */
			if (sd_event_source_set_io_events(c->io, EPOLLOUT) < 0)
				break;
			return;
		}
		if (errno == EMSGSIZE && !c->shrunk) {
			/* Even the enlarged send buffer cannot hold it: say so instead. */
			log_error("A control answer of %zu bytes does not fit the socket.",
			          c->out_len);
			free(c->out);
			c->out = NULL;
			c->shrunk = true;
			if (error_message(EMSGSIZE, "answer too large", &c->out, &c->out_len) < 0)
				break;
			continue;
		}
		log_debug("Cannot answer control client %d: %m", (int)c->pid);
		break;
	}
	connection_free(c);
}

static void connection_answer(struct connection *c, json_object *answer)
{
	const char *text = json_object_to_json_string_ext(
	    answer, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

	c->out = text ? strdup(text) : NULL;
	json_object_put(answer);
	if (!c->out) {
		log_oom();
		connection_free(c);
		return;
	}
	c->out_len = strlen(c->out);
	/*
	 * A Unix datagram larger than the sender's buffer fails with EMSGSIZE: make room for a
	 * large status (many volumes). SO_SNDBUFFORCE lets root exceed wmem_max.
	 */
	if (c->out_len > 32768) {
		int size = (int)MIN(c->out_len + 4096, (size_t)DMBYOK_AGENT_MAX_RESPONSE);

		if (setsockopt(c->fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
			(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	}
	connection_flush(c);
}

static void connection_answer_error(struct connection *c, int err, const char *msg)
{
	if (error_message(err, msg, &c->out, &c->out_len) < 0) {
		log_oom();
		connection_free(c);
		return;
	}
	connection_flush(c);
}

/* A request must be a JSON object with a string "command" and an optional string "name". */
static int parse_request(const char *buf, size_t n, json_object **ret, const char **ret_command)
{
	_cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new_ex(REQUEST_MAX_DEPTH);
	_cleanup_(json_object_putp) json_object *o = NULL;
	json_object *command, *name;

	ENSURE_ALLOC(tok);
	o = json_tokener_parse_ex(tok, buf, (int)n);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != n || !json_object_is_type(o, json_type_object))
		return -EINVAL;
	if (!json_object_object_get_ex(o, "command", &command) ||
	    !json_object_is_type(command, json_type_string))
		return -EINVAL;
	if (json_object_object_get_ex(o, "name", &name) &&
	    !json_object_is_type(name, json_type_string))
		return -EINVAL;
	*ret_command = json_object_get_string(command);
	*ret = TAKE_PTR(o);
	return 0;
}

static void connection_dispatch(struct connection *c, const char *buf, size_t n)
{
	_cleanup_(json_object_putp) json_object *request = NULL;
	json_object *answer = NULL;
	const char *command;
	int r;

	if (parse_request(buf, n, &request, &command) < 0) {
		log_debug("Malformed control request from pid %d.", (int)c->pid);
		connection_answer_error(c, EINVAL,
		                        "bad request: expected a JSON object with a string "
		                        "\"command\"");
		return;
	}
	if (!strcmp(command, "ping")) {
		answer = json_object_new_object();
		r = -ENOMEM;
		if (answer &&
		    json_object_object_add(answer, "pong", json_object_new_boolean(1)) >= 0)
			r = 0;
	} else {
		r = c->server->fn(request, &answer, c->server->userdata);
		if (r >= 0 && !answer)
			r = -EIO;
	}
	log_debug("Control request \"%s\" from pid %d: %s.", command, (int)c->pid,
	          r < 0 ? dmbyok_strerror(r) : "answered");
	if (r < 0) {
		json_object_put(answer);
		connection_answer_error(c, -r, dmbyok_strerror(r));
		return;
	}
	connection_answer(c, answer);
}

static int on_connection_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct connection *c = userdata;
	char buf[DMBYOK_AGENT_MAX_REQUEST];
	ssize_t n;

	(void)src, (void)revents;
	if (c->out) { /* writable again, or the client hung up: either way, try */
		connection_flush(c);
		return 0;
	}
	/* MSG_TRUNC: the request's whole length, so an oversize one is recognised. */
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) { /* EOF (the client gave up) or an error: nobody to answer */
		connection_free(c);
		return 0;
	}
	/* One request per connection: answering switches the source to EPOLLOUT or ends it. */
	if ((size_t)n > sizeof(buf)) {
		log_debug("Oversize control request (%zd bytes) from pid %d.", n, (int)c->pid);
		connection_answer_error(c, EMSGSIZE, "request too large");
		return 0;
	}
	connection_dispatch(c, buf, (size_t)n);
	return 0;
}

static int on_connection_timeout(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct connection *c = userdata;

	(void)src, (void)usec;
	log_debug("Control client %d did not finish in time: dropped.", (int)c->pid);
	connection_free(c);
	return 0;
}

/* One message to a client we will not serve, if its socket takes it at once; then close. */
static void refuse(int fd, int err, const char *msg)
{
	_cleanup_free_ char *out = NULL;
	size_t len;

	char request[DMBYOK_AGENT_MAX_REQUEST];

	if (error_message(err, msg, &out, &len) >= 0)
		(void)send(fd, out, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	/* Closing with a request unread would make the client's kernel report a reset first. */
	while (recv(fd, request, sizeof(request), MSG_DONTWAIT) > 0)
		;
	close(fd);
}

static int connection_new(struct dmbyok_control_server *s, int fd)
{
	struct ucred cred = { .pid = 0 };
	socklen_t len = sizeof(cred);
	struct connection *c;
	int r;

	if (s->n_connections >= DMBYOK_CONTROL_MAX_CONNECTIONS) {
		log_debug("Too many control connections: refusing one.");
		refuse(fd, EBUSY, "busy: too many connections");
		return -EBUSY;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || !peer_allowed(cred.uid)) {
		log_warning("Refused a control connection from uid %u (pid %d): only root may ask.",
		            (unsigned)cred.uid, (int)cred.pid);
		refuse(fd, EPERM, "permission denied: only root may ask dmbyokd");
		return -EPERM;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return log_oom();
	}
	*c = (struct connection){ .server = s, .fd = fd, .pid = cred.pid, .next = s->connections };
	if (s->connections)
		s->connections->prev = c;
	s->connections = c;
	s->n_connections++;
	r = sd_event_add_io(s->event, &c->io, fd, EPOLLIN, on_connection_io, c);
	if (r >= 0)
		r = sd_event_add_time_relative(s->event, &c->timer, CLOCK_MONOTONIC,
		                               DMBYOK_CONTROL_CONNECTION_TIMEOUT_MS * 1000ULL,
		                               10 * 1000, on_connection_timeout, c);
	if (r < 0) {
		log_error("Cannot serve a control connection: %s", strerror(-r));
		connection_free(c);
		return r;
	}
	return 0;
}

static int on_accept_retry(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct dmbyok_control_server *s = userdata;

	(void)src, (void)usec;
	(void)sd_event_source_set_enabled(s->listener, SD_EVENT_ON);
	return 0;
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct dmbyok_control_server *s = userdata;

	(void)revents;
	/* A bounded batch: epoll is level-triggered, the rest comes on the next iteration. */
	for (unsigned i = 0; i < DMBYOK_CONTROL_MAX_CONNECTIONS; i++) {
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c >= 0) {
			(void)connection_new(s, c);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN)
			return 0;
		/* EMFILE, ENOBUFS...: the listener would fire again at once; pause instead. */
		log_warning("Cannot accept control connections: %m");
		(void)sd_event_source_set_enabled(src, SD_EVENT_OFF);
		if (!s->accept_retry)
			(void)sd_event_add_time_relative(s->event, &s->accept_retry,
			                                 CLOCK_MONOTONIC, ACCEPT_RETRY_USEC,
			                                 10 * 1000, on_accept_retry, s);
		else {
			(void)sd_event_source_set_time_relative(s->accept_retry, ACCEPT_RETRY_USEC);
			(void)sd_event_source_set_enabled(s->accept_retry, SD_EVENT_ONESHOT);
		}
		return 0;
	}
	return 0;
}

/*
 * The default socket's directory: created when missing, and only trusted when it is a real
 * directory of ours that nobody else may write (else a planted socket could pose as the
 * agent).
 */
static int prepare_runtime_dir(void)
{
	const char *dir = dmbyok_runtime_dir();
	struct stat st;

	ENSURE(dir[0] == '/', EINVAL);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return log_error_errno(errno, "Cannot create %s: %m", dir);
	if (lstat(dir, &st) < 0)
		return log_error_errno(errno, "Cannot access %s: %m", dir);
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0022))
		return log_error_errno(EPERM,
		                       "%s is not a directory owned by this user and writable only "
		                       "by it: not listening there.",
		                       dir);
	return 0;
}

/*
 * Something exists at the socket's path. A socket whose owner answers a ping belongs to a
 * running agent: -EADDRINUSE. One that refuses, or accepts without answering (an agent
 * killed while a child of it still holds the listening socket), is stale: removed.
 */
static int remove_stale(const char *path)
{
	_cleanup_(json_object_putp) json_object *answer = NULL;
	struct stat st;
	int r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : log_error_errno(errno, "Cannot access %s: %m", path);
	if (!S_ISSOCK(st.st_mode))
		return log_error_errno(EEXIST, "%s exists and is not a socket: not replacing it.",
		                       path);
	dmbyok_log_quiet_push();
	r = dmbyok_agent_query_at(path, "ping", NULL, STALE_CHECK_TIMEOUT_MS, &answer);
	dmbyok_log_quiet_pop();
	if (r >= 0 || r == -EREMOTEIO)
		return log_error_errno(
		    EADDRINUSE, "Another dmbyokd answers on %s: not starting a second one.", path);
	log_notice("Replacing the stale control socket %s (%s).", path, dmbyok_strerror(r));
	if (unlink(path) < 0 && errno != ENOENT)
		return log_error_errno(errno, "Cannot remove the stale socket %s: %m", path);
	return 0;
}

static int bind_socket(struct dmbyok_control_server *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(s->path);
	struct stat st;
	int r = 0;

	if (len >= sizeof(sa.sun_path))
		return log_error_errno(ENAMETOOLONG, "Socket path %s is too long.", s->path);
	memcpy(sa.sun_path, s->path, len);
	s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0)
		return log_error_errno(errno, "Cannot create a socket: %m");
	for (unsigned attempt = 0;; attempt++) {
		/* Created 0600 from the start, not chmod'ed after (the agent is single-threaded,
		 * so the process-wide umask is ours for this call). */
		mode_t old = umask(0177);

		r = bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? negative_errno()
		                                                               : 0;
		umask(old);
		if (r == 0)
			break;
		if (r != -EADDRINUSE || attempt > 0)
			return log_error_errno(r, "Cannot listen on %s: %s", s->path,
			                       dmbyok_strerror(r));
		GUARD(remove_stale(s->path));
	}
	if (lstat(s->path, &st) < 0)
		return log_error_errno(errno, "Cannot access %s: %m", s->path);
	s->bound = true;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->owner = getpid();
	if (listen(s->listen_fd, (int)DMBYOK_CONTROL_MAX_CONNECTIONS) < 0)
		return log_error_errno(errno, "Cannot listen on %s: %m", s->path);
	return 0;
}

int dmbyok_control_server_new(sd_event *event, const char *path, dmbyok_control_handler_fn fn,
                              void *userdata, struct dmbyok_control_server **ret)
{
	_cleanup_(dmbyok_control_server_freep) struct dmbyok_control_server *s = NULL;
	int r;

	ENSURE(event && fn && ret, EINVAL);
	s = calloc(1, sizeof(*s));
	ENSURE_ALLOC(s);
	s->listen_fd = -1;
	s->event = sd_event_ref(event);
	s->fn = fn;
	s->userdata = userdata;
	if (path) {
		s->path = strdup(path);
		ENSURE_ALLOC(s->path);
	} else {
		GUARD(prepare_runtime_dir());
		GUARD(dmbyok_agent_socket_path(&s->path));
	}
	GUARD(bind_socket(s));
	r = sd_event_add_io(event, &s->listener, s->listen_fd, EPOLLIN, on_accept, s);
	if (r < 0)
		return log_error_errno(r, "Cannot watch %s: %s", s->path, strerror(-r));
	log_debug("Answering control requests on %s.", s->path);
	*ret = TAKE_PTR(s);
	return 0;
}

struct dmbyok_control_server *dmbyok_control_server_free(struct dmbyok_control_server *s)
{
	struct stat st;

	if (!s)
		return NULL;
	while (s->connections)
		connection_free(s->connections);
	sd_event_source_disable_unref(s->listener);
	sd_event_source_disable_unref(s->accept_retry);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->bound && s->owner == getpid() && lstat(s->path, &st) == 0 && st.st_dev == s->dev &&
	    st.st_ino == s->ino)
		(void)unlink(s->path);
	free(s->path);
	sd_event_unref(s->event);
	free(s);
	return NULL;
}
