/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmbyok/lifecycle.h"
#include "dmbyok/log.h"
#include "prober.h"

/* On the wire (a SOCK_SEQPACKET pair): one byte asks, one answer comes back. */
struct answer {
	int32_t result;
	uint32_t found;
};

struct dmbyok_prober {
	sd_event *event;
	const struct dmbyok_token *token;
	const struct kms_options *kms;
	dmbyok_prober_done_fn done;
	void *userdata;
	pid_t pid;
	int fd; /* our end; -1 until the child runs */
	sd_event_source *io, *deadline;
	bool outstanding;
};

/* The child: serves probes until its parent goes away. Never returns. */
static _Noreturn void serve(int fd, const struct dmbyok_token *t, const struct kms_options *kms)
{
	_cleanup_kms_client_ struct kms_client *c = NULL;
	struct answer a;
	char ask;
	ssize_t n;

	/* A killed agent must not leave probers behind. */
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(0);
	while ((n = recv(fd, &ask, 1, 0)) == 1) {
		unsigned found = 0;

		if (!c && dmbyok_kms_client_for_token(kms, t, &c) < 0) {
			a = (struct answer){ .result = -EAGAIN };
		} else {
			a.result = dmbyok_probe_key_with(c, t, (unsigned char)ask, &found);
			a.found = found;
		}
		if (send(fd, &a, sizeof(a), MSG_NOSIGNAL) != sizeof(a))
			break;
	}
	_exit(0);
}

static void stop_child(struct dmbyok_prober *p)
{
	p->io = sd_event_source_disable_unref(p->io);
	p->deadline = sd_event_source_disable_unref(p->deadline);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	if (p->pid > 0) {
		(void)kill(p->pid, SIGKILL);
		(void)waitpid(p->pid, NULL, 0);
	}
	p->pid = 0;
}

static void finish(struct dmbyok_prober *p, int result, unsigned found)
{
	p->outstanding = false;
	(void)sd_event_source_set_enabled(p->deadline, SD_EVENT_OFF);
	p->done(result, found, p->userdata);
}

static int on_answer(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct dmbyok_prober *p = userdata;
	struct answer a;
	ssize_t n;

	(void)s, (void)revents;
	n = recv(fd, &a, sizeof(a), MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n != sizeof(a)) {
		/* The child died (or spoke garbage): a probe that could not run is transient. */
		log_warning("The prober of %s went away; starting a new one at the next probe.",
		            p->token->key_arn);
		stop_child(p);
		if (p->outstanding)
			finish(p, -EAGAIN, 0);
		return 0;
	}
	if (p->outstanding)
		finish(p, a.result, a.found);
	return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct dmbyok_prober *p = userdata;

	(void)s, (void)usec;
	log_warning("The KMS did not answer a probe of %s within %u s: replacing its prober.",
	            p->token->key_arn, DMBYOK_PROBER_DEADLINE_MS / 1000);
	stop_child(p);
	if (p->outstanding)
		finish(p, -ETIMEDOUT, 0);
	return 0;
}

static int start_child(struct dmbyok_prober *p)
{
	int sv[2], r;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	if (pid == 0) {
		close(sv[0]);
		serve(sv[1], p->token, p->kms);
	}
	close(sv[1]);
	p->pid = pid;
	p->fd = sv[0];
	r = sd_event_add_io(p->event, &p->io, p->fd, EPOLLIN, on_answer, p);
	if (r >= 0)
		r = sd_event_add_time(p->event, &p->deadline, CLOCK_MONOTONIC, UINT64_MAX, 0,
		                      on_deadline, p);
	if (r >= 0)
		r = sd_event_source_set_enabled(p->deadline, SD_EVENT_OFF);
	if (r < 0)
		stop_child(p);
	return r;
}

int dmbyok_prober_new(sd_event *event, const struct dmbyok_token *token,
                      const struct kms_options *kms, dmbyok_prober_done_fn done, void *userdata,
                      struct dmbyok_prober **ret)
{
	struct dmbyok_prober *p = calloc(1, sizeof(*p));

	ENSURE_ALLOC(p);
	*p = (struct dmbyok_prober){ .event = event,
		                     .token = token,
		                     .kms = kms,
		                     .done = done,
		                     .userdata = userdata,
		                     .fd = -1 };
	*ret = p;
	return 0;
}

int dmbyok_prober_probe(struct dmbyok_prober *p, unsigned describe)
{
	char ask = (char)describe; /* DMBYOK_PROBE_DESCRIBE_* */

	if (p->outstanding)
		return -EBUSY;
	if (p->pid == 0)
		GUARD(start_child(p));
	if (send(p->fd, &ask, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
		stop_child(p);
		return -EAGAIN;
	}
	p->outstanding = true;
	GUARD(sd_event_source_set_time_relative(p->deadline, DMBYOK_PROBER_DEADLINE_MS * 1000ULL));
	return sd_event_source_set_enabled(p->deadline, SD_EVENT_ONESHOT);
}

bool dmbyok_prober_busy(const struct dmbyok_prober *p)
{
	return p && p->outstanding;
}

struct dmbyok_prober *dmbyok_prober_free(struct dmbyok_prober *p)
{
	if (!p)
		return NULL;
	stop_child(p);
	free(p);
	return NULL;
}
