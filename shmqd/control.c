/*
 * control.c - shmqd's control socket server.
 *
 * Overview
 *   DIR/control.sock is a SOCK_SEQPACKET listener.  Each connection carries
 *   one request and one reply (control.h), then the daemon closes it.  The
 *   event loop in main.c owns the poll(); this file fills in the pollfds of
 *   the listener and of the connections, and serves what poll reports.
 *
 * Invariants
 *   - Nothing a client does can block the event loop: the listener and
 *     every connection are non-blocking, a request is read with one recv,
 *     a reply is sent with MSG_DONTWAIT (a reply is a few hundred bytes,
 *     which always fits an empty socket buffer; a client that cannot take
 *     it loses it), and a connection that has not sent its request within
 *     SHMQD_CLIENT_TIMEOUT_MS is dropped.
 *   - Only our euid and root are served; anyone else receives -EACCES,
 *     decided from SO_PEERCRED at accept time: its request is read (so
 *     that closing does not reset the connection) but never parsed.
 *     The socket file is also mode 0600, but the credential check does not
 *     rely on the file mode (a directory may be shared by mistake).
 *   - Only a message of exactly sizeof(struct shmq_ctl_request) bytes with
 *     our magic and version, and a NUL-terminated topic name, is parsed;
 *     anything else is answered with SHMQ_EPROTO and dropped.
 *   - At most SHMQD_MAX_CLIENTS connections are open; while the table is
 *     full the listener is not polled, and newcomers wait in the backlog
 *     until a slot frees (at the latest when the timeout drops a staller).
 *
 * Memory ordering
 *   None here; topics.c does the shared-memory work of a request.
 *
 * Failure and recovery
 *   The socket file is removed at a clean exit.  After a crash it stays
 *   behind, connections to it are refused (clients report SHMQ_ENODAEMON),
 *   and the next shmqd unlinks it, which it may do only because it holds
 *   the directory's lock: no live daemon can be listening on it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "shmqd.h"

#define SHMQD_BACKLOG 64

int shmqd_ctl_listen(struct shmqd *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old_mask;
	int fd, n, rc;

	for (unsigned i = 0; i < SHMQD_MAX_CLIENTS; i++)
		d->clients[i].fd = -1;
	d->nclients = 0;

	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", d->dir,
		     SHMQ_CONTROL_SOCKET);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		shmqd_err("control socket path %s/%s is longer than the %zu bytes a Unix socket address holds; use a shorter --dir",
			  d->dir, SHMQ_CONTROL_SOCKET, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	snprintf(d->sock_path, sizeof(d->sock_path), "%s", sa.sun_path);

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		shmqd_err("socket(AF_UNIX, SOCK_SEQPACKET): %s", strerror(errno));
		return -errno;
	}

	/* A socket file left by a daemon that died; we hold the lock. */
	if (unlink(sa.sun_path) == 0)
		shmqd_log("removed stale %s", sa.sun_path);
	else if (errno != ENOENT)
		shmqd_err("cannot remove stale %s: %s", sa.sun_path,
			  strerror(errno));

	/*
	 * bind() creates the file with the umask applied: create it 0600
	 * from the start, so that there is no moment at which another user
	 * may connect.  The chmod after it is for umasks the daemon never
	 * expected and documents the intended mode.
	 */
	old_mask = umask(077);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_mask);
	if (rc != 0) {
		shmqd_err("cannot bind %s: %s", sa.sun_path, strerror(errno));
		goto fail;
	}
	if (chmod(sa.sun_path, 0600) != 0) {
		shmqd_err("cannot chmod %s: %s", sa.sun_path, strerror(errno));
		goto fail_unlink;
	}
	if (listen(fd, SHMQD_BACKLOG) != 0) {
		shmqd_err("cannot listen on %s: %s", sa.sun_path, strerror(errno));
		goto fail_unlink;
	}
	d->listen_fd = fd;
	return 0;

fail_unlink:
	rc = -errno;
	unlink(sa.sun_path);
	close(fd);
	return rc;
fail:
	rc = -errno;
	close(fd);
	return rc;
}

static void client_drop(struct shmqd *d, struct shmqd_client *c)
{
	close(c->fd);
	c->fd = -1;
	d->nclients--;
}

void shmqd_ctl_close(struct shmqd *d)
{
	for (unsigned i = 0; i < SHMQD_MAX_CLIENTS; i++)
		if (d->clients[i].fd >= 0)
			client_drop(d, &d->clients[i]);
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		d->listen_fd = -1;
		unlink(d->sock_path);
	}
}

static void reply(struct shmqd *d, int fd, int status, const char *detail)
{
	struct shmq_ctl_reply rep;

	memset(&rep, 0, sizeof(rep));
	rep.magic = SHMQ_CTL_MAGIC;
	rep.version = SHMQ_CTL_VERSION;
	rep.status = status;
	rep.daemon_pid = (uint32_t)d->pid;
	snprintf(rep.detail, sizeof(rep.detail), "%s", detail ? detail : "");
	/* Best effort: a client that went away or cannot take a reply of a
	 * few hundred bytes into an empty buffer loses it. */
	if (send(fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
	    errno != EPIPE && errno != ECONNRESET)
		shmqd_err("control: cannot send a reply: %s", strerror(errno));
}

/* Turn the wire's parameters into the library's. */
static void params_from_wire(const struct shmq_ctl_params *w,
			     struct shmq_topic_params *p)
{
	memset(p, 0, sizeof(*p));
	p->partitions = w->partitions;
	p->ring_bytes = w->ring_bytes;
	p->max_message = w->max_message;
	/*
	 * A negative policy becomes a huge unsigned one, which the check
	 * refuses like any other unknown policy.
	 */
	p->full_policy = (uint32_t)w->full_policy;
	p->numa_node = w->numa_node;
	p->mode = w->mode;
	p->stall_timeout_ms = w->stall_timeout_ms;
	p->spill_mode = w->spill_mode;
	p->retain_bytes = w->retain_bytes;
	p->retain_ms = w->retain_ms;
	p->topic_id = 0;	/* chosen by the daemon */
}

static const char *op_name(uint32_t op)
{
	switch (op) {
	case SHMQ_CTL_PING:
		return "ping";
	case SHMQ_CTL_CREATE:
		return "create";
	case SHMQ_CTL_DELETE:
		return "delete";
	}
	return "unknown";
}

/* Read and answer the request waiting on c, then close the connection. */
static void client_serve(struct shmqd *d, struct shmqd_client *c)
{
	union {
		struct shmq_ctl_request req;
		char raw[sizeof(struct shmq_ctl_request) + 1];
	} buf;
	struct shmq_ctl_request *req = &buf.req;
	struct shmq_topic_params p;
	char detail[SHMQ_CTL_DETAIL_MAX];
	ssize_t n;
	int status;

	n = recv(c->fd, buf.raw, sizeof(buf.raw), MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;		/* spurious wake-up; poll again */
	if (n <= 0)
		goto drop;	/* hung up without asking anything */

	detail[0] = '\0';
	if (c->refused) {
		snprintf(detail, sizeof(detail),
			 "shmqd serving %s runs as uid %u and serves only that user and root, not uid %u",
			 d->dir, (unsigned)d->euid, (unsigned)c->uid);
		status = -EACCES;
	} else if (n != (ssize_t)sizeof(*req)) {
		snprintf(detail, sizeof(detail),
			 "request of %zd bytes, shmqd expects %zu (client and shmqd from different shmq versions?)",
			 n, sizeof(*req));
		status = SHMQ_EPROTO;
	} else if (req->magic != SHMQ_CTL_MAGIC) {
		snprintf(detail, sizeof(detail),
			 "request with a bad magic number (not a shmq client?)");
		status = SHMQ_EPROTO;
	} else if (req->version != SHMQ_CTL_VERSION) {
		snprintf(detail, sizeof(detail),
			 "client speaks control protocol %u, shmqd speaks %u",
			 req->version, SHMQ_CTL_VERSION);
		status = SHMQ_EPROTO;
	} else if (!memchr(req->topic, '\0', sizeof(req->topic))) {
		snprintf(detail, sizeof(detail),
			 "topic name in the request is not NUL-terminated");
		status = SHMQ_EPROTO;
	} else {
		switch (req->op) {
		case SHMQ_CTL_PING:
			status = 0;
			snprintf(detail, sizeof(detail), "shmqd %d serving %s",
				 (int)d->pid, d->dir);
			break;
		case SHMQ_CTL_CREATE:
			params_from_wire(&req->params, &p);
			status = shmqd_topic_create(d, req->topic, &p, detail,
						    sizeof(detail));
			break;
		case SHMQ_CTL_DELETE:
			status = shmqd_topic_delete(d, req->topic, detail,
						    sizeof(detail));
			break;
		default:
			snprintf(detail, sizeof(detail),
				 "unknown request %u (client newer than shmqd?)",
				 req->op);
			status = SHMQ_EPROTO;
			break;
		}
	}
	if (status == SHMQ_EPROTO)
		shmqd_err("control: dropping a malformed request (%s): %s",
			  n == (ssize_t)sizeof(*req) ? op_name(req->op) : "?",
			  detail);
	reply(d, c->fd, status, detail);
drop:
	client_drop(d, c);
}

static void accept_all(struct shmqd *d, uint64_t now_ns)
{
	while (d->nclients < SHMQD_MAX_CLIENTS) {
		struct shmqd_client *c = NULL;
		struct ucred cred;
		socklen_t len = sizeof(cred);
		int fd;

		fd = accept4(d->listen_fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				shmqd_err("control: accept: %s", strerror(errno));
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
			shmqd_err("control: SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		for (unsigned i = 0; i < SHMQD_MAX_CLIENTS; i++) {
			if (d->clients[i].fd < 0) {
				c = &d->clients[i];
				break;
			}
		}
		c->refused = cred.uid != d->euid && cred.uid != 0;
		c->uid = cred.uid;
		if (c->refused)
			shmqd_log("control: refusing pid %d of uid %u",
				  (int)cred.pid, (unsigned)cred.uid);
		c->fd = fd;
		c->deadline_ns = now_ns + SHMQD_CLIENT_TIMEOUT_MS * 1000000ull;
		d->nclients++;
	}
}

unsigned shmqd_ctl_pollfds(struct shmqd *d, struct pollfd *pfd)
{
	unsigned n = 0;

	/*
	 * The listener goes first, always present so that indexes stay
	 * simple; with a full table it asks for no events.
	 */
	pfd[n].fd = d->listen_fd;
	pfd[n].events = d->nclients < SHMQD_MAX_CLIENTS ? POLLIN : 0;
	pfd[n].revents = 0;
	n++;
	for (unsigned i = 0; i < SHMQD_MAX_CLIENTS; i++) {
		if (d->clients[i].fd < 0)
			continue;
		pfd[n].fd = d->clients[i].fd;
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
		n++;
	}
	return n;
}

static struct shmqd_client *client_by_fd(struct shmqd *d, int fd)
{
	for (unsigned i = 0; i < SHMQD_MAX_CLIENTS; i++)
		if (d->clients[i].fd == fd)
			return &d->clients[i];
	return NULL;
}

void shmqd_ctl_serve(struct shmqd *d, const struct pollfd *pfd, unsigned n,
		     uint64_t now_ns)
{
	/*
	 * Serve the connections before accepting, so that the descriptors
	 * poll reported on are still the ones in the table (accepting could
	 * reuse a number a served connection just freed).
	 */
	for (unsigned i = 1; i < n; i++) {
		struct shmqd_client *c;

		if (!pfd[i].revents)
			continue;
		c = client_by_fd(d, pfd[i].fd);
		if (!c)
			continue;
		if (pfd[i].revents & POLLIN)
			client_serve(d, c);
		else
			client_drop(d, c);	/* POLLHUP/POLLERR alone */
	}
	if (n > 0 && (pfd[0].revents & POLLIN))
		accept_all(d, now_ns);
}

void shmqd_ctl_expire(struct shmqd *d, uint64_t now_ns)
{
	for (unsigned i = 0; i < SHMQD_MAX_CLIENTS; i++) {
		struct shmqd_client *c = &d->clients[i];

		if (c->fd >= 0 && now_ns >= c->deadline_ns) {
			shmqd_log("control: dropped a connection that sent no request within %d ms",
				  SHMQD_CLIENT_TIMEOUT_MS);
			client_drop(d, c);
		}
	}
}
