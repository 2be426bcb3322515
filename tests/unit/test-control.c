/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's control socket, server (src/agent/control.c) and client
 * (src/lifecycle/agent-client.c), over real Unix sockets in a temporary runtime directory.
 * The server runs a real sd-event loop in a child process, as the agent would; the test is
 * its client. No timed assertions: waits are bounded only so that a bug fails instead of
 * hanging.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/control.h"
#include "dmbyok/agent.h"
#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"

/* How long the test waits for something that must happen before it calls it a failure. */
#define BOUND_MS   30000
#define BIG_ANSWER (1024 * 1024) /* beyond the socket's default send buffer */

static char dir[] = "/var/tmp/dmbyok-control-XXXXXX";
static char sock[256];
static pid_t server; /* the running server, killed after a test that failed midway */

static int setup(void **state)
{
	(void)state;
	dmbyok_log_set_max_level(LOG_LEVEL_ERROR - 1);
	if (!mkdtemp(dir))
		return -1;
	snprintf(sock, sizeof(sock), "%s/%s", dir, DMBYOK_AGENT_SOCKET_NAME);
	signal(SIGPIPE, SIG_IGN); /* a failing test must fail, not die of a broken pipe */
	return setenv("DMBYOK_RUNTIME_DIR", dir, 1);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static int cleanup_test(void **state)
{
	(void)state;
	if (server > 0) {
		(void)kill(server, SIGKILL);
		(void)waitpid(server, NULL, 0);
		server = 0;
	}
	(void)unlink(sock);
	return 0;
}

/*
 * The test's handler: "status" answers the server's pid and the name asked for; "fail"
 * fails with -ENOENT; "nothing" returns success without an answer; "big" answers a
 * BIG_ANSWER-byte string.
 */
static int handler(json_object *request, json_object **ret, void *userdata)
{
	const char *command = json_object_get_string(json_object_object_get(request, "command"));
	json_object *name = NULL, *o;

	(void)userdata;
	if (!strcmp(command, "fail"))
		return -ENOENT;
	if (!strcmp(command, "nothing"))
		return 0;
	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	if (!strcmp(command, "big")) {
		char *s = malloc(BIG_ANSWER + 1);

		if (!s) {
			json_object_put(o);
			return -ENOMEM;
		}
		for (size_t i = 0; i < BIG_ANSWER; i++)
			s[i] = (char)('a' + i % 26);
		s[BIG_ANSWER] = 0;
		json_object_object_add(o, "big", json_object_new_string(s));
		free(s);
	} else {
		json_object_object_add(o, "pid", json_object_new_int(getpid()));
		if (json_object_object_get_ex(request, "name", &name))
			json_object_object_add(o, "name", json_object_get(name));
	}
	*ret = o;
	return 0;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	(void)s, (void)si, (void)userdata;
	return sd_event_exit(sd_event_source_get_event(s), 0);
}

/*
 * Forks a child that serves the default socket from its own sd-event loop until SIGTERM.
 * Returns its pid once it listens (or fails the test with the server's error).
 */
static pid_t start_server(void)
{
	int ready[2], r = 0;
	pid_t pid;

	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct dmbyok_control_server *s = NULL;
		sd_event *e = NULL;
		sigset_t mask;

		close(ready[0]);
		sigemptyset(&mask);
		sigaddset(&mask, SIGTERM);
		sigprocmask(SIG_BLOCK, &mask, NULL);
		r = sd_event_new(&e);
		if (r >= 0)
			r = sd_event_add_signal(e, NULL, SIGTERM, on_sigterm, NULL);
		if (r >= 0)
			r = dmbyok_control_server_new(e, NULL, handler, NULL, &s);
		if (write(ready[1], &r, sizeof(r)) != sizeof(r) || r < 0)
			_exit(1);
		close(ready[1]);
		r = sd_event_loop(e);
		dmbyok_control_server_free(s);
		sd_event_unref(e);
		_exit(r < 0 ? 2 : 0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &r, sizeof(r)), sizeof(r));
	close(ready[0]);
	assert_int_equal(r, 0);
	server = pid;
	return pid;
}

/* SIGTERM, a clean exit, and the socket is gone with the server. */
static void stop_server(pid_t pid)
{
	struct stat st;
	int status;

	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	server = 0;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(lstat(sock, &st), -1);
	assert_int_equal(errno, ENOENT);
}

static int sockaddr_of(const char *path, struct sockaddr_un *sa)
{
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	assert_true(strlen(path) < sizeof(sa->sun_path));
	strcpy(sa->sun_path, path);
	return 0;
}

/* A raw client connected to the socket, blocking. */
static int raw_connect(void)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sockaddr_of(sock, &sa);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Waits (bounded) until fd is readable or hung up; false if that never happened. */
static bool wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, BOUND_MS) == 1;
}

/* Whether fd is readable or hung up right now. */
static bool readable_now(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

/* Reads one answer message from a raw client and parses it. */
static json_object *raw_answer(int fd)
{
	static char buf[BIG_ANSWER + 4096];
	ssize_t n;

	assert_true(wait_readable(fd));
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = 0;
	return json_tokener_parse(buf);
}

/* One message from a raw client, and the server's answer; the server then closes. */
static json_object *raw_exchange(const void *msg, size_t len)
{
	int fd = raw_connect();
	json_object *o;
	char c;

	assert_int_equal(send(fd, msg, len, MSG_NOSIGNAL), (ssize_t)len);
	o = raw_answer(fd);
	assert_non_null(o);
	/* One request per connection: EOF follows the answer. */
	assert_true(wait_readable(fd));
	assert_int_equal(recv(fd, &c, 1, 0), 0);
	close(fd);
	return o;
}

static void assert_error_answer(json_object *o, int err, const char *text)
{
	json_object *v;

	assert_true(json_object_object_get_ex(o, "error", &v));
	assert_non_null(strstr(json_object_get_string(v), text));
	assert_true(json_object_object_get_ex(o, "errno", &v));
	assert_int_equal(json_object_get_int(v), err);
	json_object_put(o);
}

/* A listening socket at the default path that never accepts: connections queue, unanswered. */
static int mute_listener(void)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sockaddr_of(sock, &sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static void test_no_agent(void **state)
{
	json_object *o = NULL;
	char *path = NULL;

	(void)state;
	assert_int_equal(dmbyok_agent_socket_path(&path), 0);
	assert_string_equal(path, sock);
	free(path);
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), -ENOENT);
	assert_null(o);
}

static void test_round_trip(void **state)
{
	pid_t pid = start_server();
	json_object *o = NULL, *v;
	struct stat st;

	(void)state;
	/* Only its owner may connect. */
	assert_int_equal(lstat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);

	assert_int_equal(dmbyok_agent_query("status", "a1", &o), 0);
	assert_int_equal(json_object_get_int(json_object_object_get(o, "pid")), pid);
	assert_string_equal(json_object_get_string(json_object_object_get(o, "name")), "a1");
	json_object_put(o);

	assert_int_equal(dmbyok_agent_query("status", NULL, &o), 0);
	assert_int_equal(json_object_get_int(json_object_object_get(o, "pid")), pid);
	assert_false(json_object_object_get_ex(o, "name", NULL));
	json_object_put(o);

	/* The server answers a ping itself. */
	assert_int_equal(dmbyok_agent_query("ping", NULL, &o), 0);
	assert_true(json_object_object_get_ex(o, "pong", &v));
	assert_true(json_object_get_boolean(v));
	json_object_put(o);

	/* An answer beyond the socket's default buffer arrives whole. */
	assert_int_equal(dmbyok_agent_query("big", NULL, &o), 0);
	v = json_object_object_get(o, "big");
	assert_int_equal(json_object_get_string_len(v), BIG_ANSWER);
	assert_int_equal(json_object_get_string(v)[BIG_ANSWER - 1], 'a' + (BIG_ANSWER - 1) % 26);
	json_object_put(o);

	stop_server(pid);
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), -ENOENT);
}

static int on_client_done(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	char result = 127;

	(void)revents, (void)userdata;
	if (read(fd, &result, 1) != 1)
		result = 126;
	return sd_event_exit(sd_event_source_get_event(s), result);
}

/*
 * The server in this process (so that sanitizers see all of it, connections included) and
 * a client in a child: answers, an oversize request, an idle connection still open when
 * the server is freed.
 */
static void test_served_in_process(void **state)
{
	struct dmbyok_control_server *s = NULL;
	static char big[2 * DMBYOK_AGENT_MAX_REQUEST];
	sd_event *e = NULL;
	struct stat st;
	int done[2];
	pid_t pid;

	(void)state;
	assert_int_equal(pipe(done), 0);
	assert_int_equal(sd_event_new(&e), 0);
	assert_int_equal(dmbyok_control_server_new(e, NULL, handler, NULL, &s), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Connected first, so accepted before the requests below are answered. */
		int idle = raw_connect(), fd = raw_connect();
		json_object *o = NULL;
		char buf[256], result = 0;
		ssize_t n;

		if (dmbyok_agent_query("status", "a1", &o) < 0 ||
		    json_object_get_int(json_object_object_get(o, "pid")) != getppid())
			result = 1;
		json_object_put(o);
		memset(big, ' ', sizeof(big));
		if (send(fd, big, sizeof(big), MSG_NOSIGNAL) != (ssize_t)sizeof(big) ||
		    !wait_readable(fd) || (n = recv(fd, buf, sizeof(buf) - 1, 0)) <= 0 ||
		    (buf[n] = 0, !strstr(buf, "too large")))
			result = 2;
		if (dmbyok_agent_query("nothing", NULL, &o) != -EREMOTEIO)
			result = 3;
		if (write(done[1], &result, 1) != 1)
			_exit(1);
		pause(); /* holding `idle` open until killed */
		_exit(idle);
	}
	assert_int_equal(sd_event_add_io(e, NULL, done[0], EPOLLIN, on_client_done, NULL), 0);
	assert_int_equal(sd_event_loop(e), 0);
	assert_int_equal(lstat(sock, &st), 0);
	assert_null(dmbyok_control_server_free(s));
	assert_int_equal(lstat(sock, &st), -1);
	assert_null(dmbyok_control_server_free(NULL));
	sd_event_unref(e);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	close(done[0]);
	close(done[1]);
}

static void test_handler_error(void **state)
{
	pid_t pid = start_server();
	json_object *o = NULL;
	const char req[] = "{\"command\":\"fail\"}";
	const char nothing[] = "{\"command\":\"nothing\"}";

	(void)state;
	/* Not -ENOENT: a failed request must not read as "no agent". */
	assert_int_equal(dmbyok_agent_query("fail", NULL, &o), -EREMOTEIO);
	assert_null(o);
	assert_error_answer(raw_exchange(req, strlen(req)), ENOENT, "No such file");
	/* Success without an answer is an internal error, still answered. */
	assert_int_equal(dmbyok_agent_query("nothing", NULL, &o), -EREMOTEIO);
	assert_error_answer(raw_exchange(nothing, strlen(nothing)), EIO, "");
	/* The server goes on serving. */
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), 0);
	json_object_put(o);
	stop_server(pid);
}

static void test_bad_requests(void **state)
{
	pid_t pid = start_server();
	static char big[2 * DMBYOK_AGENT_MAX_REQUEST];
	static const char *const bad[] = {
		"not json",
		"[\"status\"]",
		"{\"command\": 5}",
		"{\"name\": \"a1\"}",
		"{\"command\": \"status\", \"name\": [1]}",
		"{\"command\": \"status\"} trailing",
	};
	json_object *o = NULL;

	(void)state;
	/* Oversize: a valid JSON object, but longer than any request may be. */
	memset(big, ' ', sizeof(big));
	memcpy(big, "{\"command\":\"status\"", 19);
	big[sizeof(big) - 1] = '}';
	assert_error_answer(raw_exchange(big, sizeof(big)), EMSGSIZE, "too large");
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_error_answer(raw_exchange(bad[i], strlen(bad[i])), EINVAL, "bad request");
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), 0);
	json_object_put(o);
	stop_server(pid);
}

static void test_stuck_clients_do_not_stall_the_loop(void **state)
{
	pid_t pid = start_server();
	const char req[] = "{\"command\":\"big\"}";
	int silent = raw_connect(), deaf = raw_connect();
	json_object *o = NULL;

	(void)state;
	/* One never sends; one asks for a large answer and never reads it. */
	assert_int_equal(send(deaf, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	assert_int_equal(dmbyok_agent_query("status", "x", &o), 0);
	assert_int_equal(json_object_get_int(json_object_object_get(o, "pid")), pid);
	json_object_put(o);
	close(silent);
	close(deaf);
	stop_server(pid);
}

static void test_connection_limit_and_deadline(void **state)
{
	pid_t pid = start_server();
	int idle[DMBYOK_CONTROL_MAX_CONNECTIONS];
	bool limit_seen = false;
	json_object *o = NULL;
	char c;
	int r;

	(void)state;
	/*
	 * The server's deadline runs on every connection: if this process were descheduled
	 * for that long, the idle ones would be gone before the extra one arrives. That is
	 * seen (an idle one got EOF first) and the round is played again.
	 */
	for (unsigned round = 0; round < 5 && !limit_seen; round++) {
		bool idle_closed = false;

		for (size_t i = 0; i < ELEMENTSOF(idle); i++)
			idle[i] = raw_connect();
		r = dmbyok_agent_query("ping", NULL, &o);
		for (size_t i = 0; i < ELEMENTSOF(idle); i++)
			idle_closed |= readable_now(idle[i]);
		if (!idle_closed) {
			/* All slots taken: refused at once with "busy", not left hanging. */
			assert_int_equal(r, -EREMOTEIO);
			limit_seen = true;
		} else if (r == 0) {
			json_object_put(o);
		}
		/* The server drops each idle connection at its deadline: EOF. */
		for (size_t i = 0; i < ELEMENTSOF(idle); i++) {
			assert_true(wait_readable(idle[i]));
			assert_int_equal(recv(idle[i], &c, 1, 0), 0);
			close(idle[i]);
		}
		/* Their slots are free again. */
		assert_int_equal(dmbyok_agent_query("ping", NULL, &o), 0);
		json_object_put(o);
	}
	assert_true(limit_seen);
	stop_server(pid);
}

static void test_stale_socket_replaced(void **state)
{
	struct sockaddr_un sa;
	json_object *o = NULL;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	pid_t pid;

	(void)state;
	/* A socket file left by a killed agent: nobody listens. */
	assert_true(fd >= 0);
	sockaddr_of(sock, &sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), -ECONNREFUSED);
	pid = start_server();
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), 0);
	json_object_put(o);
	stop_server(pid);

	/*
	 * An agent killed while a child of it still holds the listening socket: connections
	 * queue but nobody answers. That is stale too.
	 */
	fd = mute_listener();
	pid = start_server();
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), 0);
	assert_int_equal(json_object_get_int(json_object_object_get(o, "pid")), pid);
	json_object_put(o);
	stop_server(pid);
	close(fd);
}

static void test_something_else_is_not_replaced(void **state)
{
	struct dmbyok_control_server *s = NULL;
	sd_event *e = NULL;
	struct stat st;
	FILE *f;

	(void)state;
	f = fopen(sock, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(sd_event_new(&e), 0);
	assert_int_equal(dmbyok_control_server_new(e, NULL, handler, NULL, &s), -EEXIST);
	assert_null(s);
	assert_int_equal(lstat(sock, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(unlink(sock), 0);
	sd_event_unref(e);
}

static void test_live_server_refuses_a_second(void **state)
{
	struct dmbyok_control_server *s = NULL;
	pid_t pid = start_server();
	json_object *o = NULL;
	sd_event *e = NULL;

	(void)state;
	assert_int_equal(sd_event_new(&e), 0);
	assert_int_equal(dmbyok_control_server_new(e, NULL, handler, NULL, &s), -EADDRINUSE);
	assert_null(s);
	/* The refused one left the live socket alone. */
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), 0);
	assert_int_equal(json_object_get_int(json_object_object_get(o, "pid")), pid);
	json_object_put(o);
	sd_event_unref(e);
	stop_server(pid);
}

static void test_client_gives_up_on_a_mute_server(void **state)
{
	json_object *o = NULL;
	int fd = mute_listener();

	(void)state;
	assert_int_equal(dmbyok_agent_query("status", NULL, &o), -ETIMEDOUT);
	assert_null(o);
	close(fd);
	assert_int_equal(unlink(sock), 0);
}

/* In a child that became `uid`: the client's result, as the exit status. */
static int query_as(uid_t uid)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		json_object *o = NULL;
		int r;

		if (setgid(uid) < 0 || setuid(uid) < 0)
			_exit(255);
		r = dmbyok_agent_query("status", NULL, &o);
		_exit(r < 0 ? -r : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_only_root_may_ask(void **state)
{
	const uid_t nobody = 65534;
	pid_t pid;

	(void)state;
	if (geteuid() != 0) {
		print_message("Not root: cannot play another user here.\n");
		skip();
	}
	pid = start_server();
	assert_int_equal(chmod(dir, 0711), 0);
	/* The socket's mode stops others... */
	assert_int_equal(query_as(nobody), EACCES);
	/* ...and where it would not, the server checks who connects. */
	assert_int_equal(chmod(sock, 0666), 0);
	assert_int_equal(query_as(nobody), EREMOTEIO);
	assert_int_equal(chmod(dir, 0700), 0);
	stop_server(pid);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_no_agent, cleanup_test),
		cmocka_unit_test_teardown(test_round_trip, cleanup_test),
		cmocka_unit_test_teardown(test_served_in_process, cleanup_test),
		cmocka_unit_test_teardown(test_handler_error, cleanup_test),
		cmocka_unit_test_teardown(test_bad_requests, cleanup_test),
		cmocka_unit_test_teardown(test_stuck_clients_do_not_stall_the_loop, cleanup_test),
		cmocka_unit_test_teardown(test_connection_limit_and_deadline, cleanup_test),
		cmocka_unit_test_teardown(test_stale_socket_replaced, cleanup_test),
		cmocka_unit_test_teardown(test_something_else_is_not_replaced, cleanup_test),
		cmocka_unit_test_teardown(test_live_server_refuses_a_second, cleanup_test),
		cmocka_unit_test_teardown(test_client_gives_up_on_a_mute_server, cleanup_test),
		cmocka_unit_test_teardown(test_only_root_may_ask, cleanup_test),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
