/*
 * control.c - the client side of shmqd's control socket.
 *
 * Overview
 *   A client that needs the daemon (topic create and delete, ping) opens a
 *   fresh SOCK_SEQPACKET connection to DIR/control.sock, sends exactly one
 *   struct shmq_ctl_request and reads exactly one struct shmq_ctl_reply.
 *   One request per connection keeps both sides free of framing state: a
 *   connection is a transaction, and a dropped connection loses at most one
 *   request, which the caller sees as an error.
 *
 * Invariants
 *   - Nothing here waits longer than timeout_ms in total (connect, send and
 *     the wait for the reply share one deadline), so a stalled or stopped
 *     shmqd (SIGSTOP, a debugger) turns into -ETIMEDOUT, never a hang.
 *   - A reply is accepted only if it is exactly one struct shmq_ctl_reply
 *     with our magic and version; anything else is SHMQ_EPROTO.  The detail
 *     string of a reply is forced to be NUL-terminated before anyone reads it.
 *   - The socket is non-blocking and close-on-exec, and sends use
 *     MSG_NOSIGNAL: a library must not leak descriptors into children or
 *     kill its caller with SIGPIPE.
 *
 * Memory ordering
 *   None: this file touches no shared memory.
 *
 * Failure and recovery
 *   No socket, or a socket nobody listens on (shmqd was killed and left its
 *   socket file behind), is SHMQ_ENODAEMON: the caller should start shmqd.
 *   A daemon that closes the connection without answering (it died while
 *   serving us) is -ECONNRESET; whether the request took effect is unknown,
 *   exactly as with any lost reply, and the caller may retry once shmqd is
 *   back (create then answers -EEXIST, delete -ENOENT).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "shmq_int.h"

/* How long to back off when shmqd's listen backlog is momentarily full. */
#define CTL_BACKLOG_RETRY_NS (1000u * 1000u) /* 1 ms */

/* Milliseconds left until deadline_ns, or -1 for "no deadline". */
static int ctl_remaining_ms(uint64_t deadline_ns)
{
	uint64_t now;

	if (deadline_ns == UINT64_MAX)
		return -1;
	now = shmq__mono_ns();
	if (now >= deadline_ns)
		return 0;
	/* Round up so that a remainder below 1 ms still waits a little. */
	return (int)((deadline_ns - now + 999999u) / 1000000u);
}

/*
 * Connect to the socket before the deadline.  An AF_UNIX connect on a
 * non-blocking socket fails with EAGAIN, rather than EINPROGRESS, when the
 * listener's backlog is full; there is nothing to poll for, so back off
 * briefly and try again until the deadline.
 */
static int ctl_connect(int fd, const struct sockaddr_un *sa, const char *dir,
		       uint64_t deadline_ns, int timeout_ms)
{
	struct timespec pause = { 0, CTL_BACKLOG_RETRY_NS };

	for (;;) {
		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return 0;
		switch (errno) {
		case EINTR:
			continue;
		case ENOENT:
		case ECONNREFUSED:
			return shmq__fail(SHMQ_ENODAEMON,
					  "no shmqd serving %s (connect to %s: %s)",
					  dir, sa->sun_path, strerror(errno));
		case EAGAIN:
			if (ctl_remaining_ms(deadline_ns) == 0)
				return shmq__fail(-ETIMEDOUT,
						  "shmqd serving %s accepted no connection within %d ms",
						  dir, timeout_ms);
			nanosleep(&pause, NULL);
			continue;
		case EACCES:
			return shmq__fail(-EACCES,
					  "no permission to connect to %s (the data directory belongs to another user?)",
					  sa->sun_path);
		default:
			return shmq__fail(-errno, "connect to %s: %s",
					  sa->sun_path, strerror(errno));
		}
	}
}

/* Wait for events on fd until the deadline.  Returns 0, -ETIMEDOUT, -errno. */
static int ctl_wait(int fd, short events, uint64_t deadline_ns)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int n;

	for (;;) {
		int left = ctl_remaining_ms(deadline_ns);

		if (left == 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, left);
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int ctl_send(int fd, const struct shmq_ctl_request *req, const char *dir,
		    uint64_t deadline_ns, int timeout_ms)
{
	ssize_t n;
	int err;

	for (;;) {
		n = send(fd, req, sizeof(*req), MSG_NOSIGNAL);
		if (n == (ssize_t)sizeof(*req))
			return 0;
		if (n >= 0)	/* SEQPACKET sends all or nothing */
			return shmq__fail(SHMQ_EPROTO,
					  "short send to shmqd serving %s (%zd of %zu bytes)",
					  dir, n, sizeof(*req));
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			break;
		err = ctl_wait(fd, POLLOUT, deadline_ns);
		if (err == -ETIMEDOUT)
			return shmq__fail(-ETIMEDOUT,
					  "shmqd serving %s did not take our request within %d ms",
					  dir, timeout_ms);
		if (err)
			return shmq__fail(err, "poll on the control socket: %s",
					  strerror(-err));
	}
	if (errno == EPIPE || errno == ECONNRESET)
		return shmq__fail(-ECONNRESET,
				  "shmqd serving %s closed the connection before our request",
				  dir);
	return shmq__fail(-errno, "send to shmqd serving %s: %s", dir,
			  strerror(errno));
}

static int ctl_recv(int fd, struct shmq_ctl_reply *rep, const char *dir,
		    uint64_t deadline_ns, int timeout_ms)
{
	/*
	 * One byte more than a reply: with MSG_TRUNC the kernel reports the
	 * real length of an oversized message anyway, and the spare byte
	 * keeps the size check honest where it might not.
	 */
	union {
		struct shmq_ctl_reply rep;
		char raw[sizeof(struct shmq_ctl_reply) + 1];
	} buf;
	ssize_t n;
	int err;

	for (;;) {
		err = ctl_wait(fd, POLLIN, deadline_ns);
		if (err == -ETIMEDOUT)
			return shmq__fail(-ETIMEDOUT,
					  "shmqd serving %s did not answer within %d ms",
					  dir, timeout_ms);
		if (err)
			return shmq__fail(err, "poll on the control socket: %s",
					  strerror(-err));
		n = recv(fd, buf.raw, sizeof(buf.raw), MSG_TRUNC);
		if (n >= 0)
			break;
		if (errno == EINTR || errno == EAGAIN)
			continue;
		if (errno == ECONNRESET)
			goto reset;
		return shmq__fail(-errno, "receive from shmqd serving %s: %s",
				  dir, strerror(errno));
	}
	if (n == 0)
		goto reset;
	if (n != (ssize_t)sizeof(struct shmq_ctl_reply))
		return shmq__fail(SHMQ_EPROTO,
				  "reply of %zd bytes from shmqd serving %s, expected %zu (another shmq version?)",
				  n, dir, sizeof(struct shmq_ctl_reply));
	if (buf.rep.magic != SHMQ_CTL_MAGIC)
		return shmq__fail(SHMQ_EPROTO,
				  "reply from %s/%s has a bad magic number (not shmqd?)",
				  dir, SHMQ_CONTROL_SOCKET);
	if (buf.rep.version != SHMQ_CTL_VERSION)
		return shmq__fail(SHMQ_EPROTO,
				  "shmqd serving %s speaks control protocol %u, this library %u",
				  dir, buf.rep.version, SHMQ_CTL_VERSION);
	buf.rep.detail[SHMQ_CTL_DETAIL_MAX - 1] = '\0';
	*rep = buf.rep;
	return 0;

reset:
	return shmq__fail(-ECONNRESET,
			  "shmqd serving %s closed the connection without answering (did it exit?)",
			  dir);
}

int shmq__control_call(const char *dir, struct shmq_ctl_request *req,
		       struct shmq_ctl_reply *rep, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline_ns = UINT64_MAX;
	struct shmq_ctl_reply got;
	int fd, n, err;

	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir,
		     SHMQ_CONTROL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
		return shmq__fail(-ENAMETOOLONG,
				  "control socket path %s/%s is longer than the %zu bytes a Unix socket address holds; use a shorter data directory",
				  dir, SHMQ_CONTROL_SOCKET,
				  sizeof(sa.sun_path) - 1);

	if (timeout_ms >= 0)
		deadline_ns = shmq__mono_ns() + (uint64_t)timeout_ms * 1000000u;

	req->magic = SHMQ_CTL_MAGIC;
	req->version = SHMQ_CTL_VERSION;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return shmq__fail(-errno, "socket(AF_UNIX, SOCK_SEQPACKET): %s",
				  strerror(errno));

	err = ctl_connect(fd, &sa, dir, deadline_ns, timeout_ms);
	if (!err)
		err = ctl_send(fd, req, dir, deadline_ns, timeout_ms);
	if (!err)
		err = ctl_recv(fd, &got, dir, deadline_ns, timeout_ms);
	close(fd);
	if (err)
		return err;

	/*
	 * The call itself succeeded; the caller reads the answer from
	 * rep->status.  Leave shmqd's explanation of a refusal in the detail
	 * string so that a caller that simply returns the status hands its
	 * user the reason too.
	 */
	*rep = got;
	if (got.status != 0)
		shmq__fail(got.status, "%s", got.detail);
	else
		shmq__clear_detail();
	return 0;
}
