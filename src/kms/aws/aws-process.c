/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aws.h"
#include "dmbyok/log.h"

#define PROCESS_OUTPUT_MAX (64U * 1024)
#define PROCESS_STDERR_MAX 1024U
#define PROCESS_TIMEOUT_MS 60000

extern char **environ;

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}
DEFINE_CLEANUP_FUNC(char **, strv_free);

/* botocore splits with shlex (POSIX mode): quotes and backslashes, no expansions. */
int dmbyok_aws_split_command(const char *command, char ***ret_argv)
{
	_cleanup_(strv_freep) char **argv = NULL;
	_cleanup_free_ char *word = NULL;
	size_t n = 0, len = 0, size = strlen(command) + 1;
	const char *p = command;

	word = malloc(size);
	ENSURE_ALLOC(word);
	for (;;) {
		bool in_word = false;
		char **bigger;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (!*p)
			break;
		len = 0;
		while (*p && !(*p == ' ' || *p == '\t' || *p == '\n')) {
			in_word = true;
			if (*p == '\'') {
				const char *e = strchr(p + 1, '\'');

				if (!e)
					return -EINVAL;
				memcpy(word + len, p + 1, (size_t)(e - p - 1));
				len += (size_t)(e - p - 1);
				p = e + 1;
			} else if (*p == '"') {
				for (p++; *p && *p != '"'; p++) {
					if (*p == '\\' && strchr("\"\\$`\n", p[1]))
						p++;
					word[len++] = *p;
				}
				if (*p != '"')
					return -EINVAL;
				p++;
			} else if (*p == '\\') {
				if (!p[1])
					return -EINVAL;
				word[len++] = p[1];
				p += 2;
			} else {
				word[len++] = *p++;
			}
		}
		if (!in_word)
			continue;
		bigger = reallocarray(argv, n + 2, sizeof(*argv));
		ENSURE_ALLOC(bigger);
		argv = bigger;
		argv[n] = strndup(word, len);
		ENSURE_ALLOC(argv[n]);
		argv[++n] = NULL;
	}
	if (n == 0)
		return -EINVAL;
	*ret_argv = TAKE_PTR(argv);
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs argv; stdout into locked memory (it carries the secret), stderr for the message. */
static int run(char **argv, struct secret *out, char *err, size_t err_size, int *ret_status)
{
	posix_spawn_file_actions_t fa;
	int out_pipe[2] = { -1, -1 }, err_pipe[2] = { -1, -1 }, status = 0;
	size_t err_len = 0;
	long long deadline = now_ms() + PROCESS_TIMEOUT_MS;
	pid_t pid = -1;
	int r;

	if (pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) {
		r = negative_errno();
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, err_pipe[1], STDERR_FILENO);
	r = -posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r < 0) {
		pid = -1;
		goto out;
	}
	close(out_pipe[1]);
	close(err_pipe[1]);
	out_pipe[1] = err_pipe[1] = -1;

	out->size = 0;
	while (out_pipe[0] >= 0 || err_pipe[0] >= 0) {
		struct pollfd fds[2] = { { out_pipe[0], POLLIN, 0 }, { err_pipe[0], POLLIN, 0 } };
		long long left = deadline - now_ms();
		char buf[512];
		ssize_t n;

		if (left <= 0) {
			r = -ETIMEDOUT;
			goto out;
		}
		if (poll(fds, 2, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			r = negative_errno();
			goto out;
		}
		if (fds[0].revents) {
			if (out->size + 1 >= out->capacity) {
				r = -E2BIG;
				goto out;
			}
			n = read(out_pipe[0], out->data + out->size, out->capacity - out->size - 1);
			if (n > 0)
				out->size += (size_t)n;
			else if (n == 0 || errno != EINTR) {
				close(out_pipe[0]);
				out_pipe[0] = -1;
			}
		}
		if (fds[1].revents) {
			n = read(err_pipe[0], buf, sizeof(buf));
			if (n > 0) {
				size_t k = (size_t)n < err_size - 1 - err_len
				               ? (size_t)n
				               : err_size - 1 - err_len;

				memcpy(err + err_len, buf, k);
				err_len += k;
			} else if (n == 0 || errno != EINTR) {
				close(err_pipe[0]);
				err_pipe[0] = -1;
			}
		}
	}
	out->data[out->size] = '\0';
	err[err_len] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	pid = -1;
	*ret_status = status;
	r = 0;
out:
	if (pid > 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	for (int i = 0; i < 2; i++) {
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	return r;
}

static const char *first_line(char *s)
{
	s[strcspn(s, "\r\n")] = '\0';
	return *s ? s : "(no message)";
}

static int parse_output(struct secret *out, struct aws_credentials **ret, char *why,
                        size_t why_size)
{
	_cleanup_secret_ struct secret *secret = NULL, *token = NULL;
	json_object *j = NULL, *v;
	const char *akid;
	time_t expiration = 0;
	int r;

	/* The secrets leave the output before json-c copies anything into the heap. */
	r = dmbyok_aws_json_take_string(out, "SecretAccessKey", &secret);
	if (r < 0) {
		snprintf(why, why_size, "credential_process: %s",
		         r == -ENOENT ? "no SecretAccessKey in its output"
		                      : "its output is not JSON");
		return -EINVAL;
	}
	r = dmbyok_aws_json_take_string(out, "SessionToken", &token);
	if (r < 0 && r != -ENOENT) {
		snprintf(why, why_size, "credential_process: malformed SessionToken");
		return -EINVAL;
	}
	j = json_tokener_parse((const char *)out->data);
	if (!j || !json_object_is_type(j, json_type_object)) {
		snprintf(why, why_size, "credential_process: its output is not a JSON object");
		r = -EINVAL;
		goto out;
	}
	if (!json_object_object_get_ex(j, "Version", &v) ||
	    !json_object_is_type(v, json_type_int) || json_object_get_int(v) != 1) {
		snprintf(why, why_size, "credential_process: unsupported Version %s (supported: 1)",
		         v ? json_object_to_json_string(v) : "(missing)");
		r = -EINVAL;
		goto out;
	}
	if (!json_object_object_get_ex(j, "AccessKeyId", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		snprintf(why, why_size, "credential_process: no AccessKeyId in its output");
		r = -EINVAL;
		goto out;
	}
	akid = json_object_get_string(v);
	if (json_object_object_get_ex(j, "Expiration", &v) &&
	    !json_object_is_type(v, json_type_null) &&
	    dmbyok_aws_parse_iso8601(json_object_get_string(v), &expiration) < 0) {
		snprintf(why, why_size, "credential_process: bad Expiration %s",
		         json_object_get_string(v));
		r = -EINVAL;
		goto out;
	}
	r = dmbyok_aws_credentials_new(akid, TAKE_PTR(secret), TAKE_PTR(token), expiration,
	                               "process", ret);
	if (r == -EINVAL)
		snprintf(why, why_size, "credential_process: unusable credentials in its output");
out:
	json_object_put(j);
	return r;
}

int dmbyok_aws_credential_process(const char *command, struct aws_credentials **ret, char *why,
                                  size_t why_size)
{
	_cleanup_(strv_freep) char **argv = NULL;
	_cleanup_secret_ struct secret *out = NULL;
	char err[PROCESS_STDERR_MAX];
	int status = 0, r;

	r = dmbyok_aws_split_command(command, &argv);
	if (r < 0) {
		snprintf(why, why_size, "credential_process: cannot split the command line.");
		return r == -ENOMEM ? r : -EINVAL;
	}
	GUARD(dmbyok_secret_new(PROCESS_OUTPUT_MAX, &out));
	r = run(argv, out, err, sizeof(err), &status);
	if (r < 0) {
		snprintf(why, why_size, "credential_process %s: %s", argv[0],
		         r == -ETIMEDOUT ? "did not finish within 60 s" : strerror(-r));
		return r == -ENOMEM || r == -ETIMEDOUT ? r : -ENOKEY;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, why_size, "credential_process %s failed (%s %d): %s", argv[0],
		         WIFEXITED(status) ? "exit status" : "signal",
		         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
		         first_line(err));
		return -ENOKEY;
	}
	return parse_output(out, ret, why, why_size);
}
