/*
 * xport-zeromq.c - ZeroMQ ipc:// as a baseline of the harness (a plugin).
 *
 * Design note
 *   Built by bench/run.sh into $SHMQ_BUILD/bench/xport-zeromq.so when
 *   libzmq's header is there (run.sh installs libzmq3-dev as root), and
 *   loaded by the benchmark programs with dlopen, so that `make bench`
 *   never needs libzmq to link.  It depends on xport.h only.
 *
 *   One channel is a ZMQ_PAIR socket pair over ipc:// (a Unix socket in
 *   the run's private directory): the receiver binds, the sender connects
 *   (with a 1 ms reconnect interval, so a sender that comes first is not
 *   held back 100 ms).  Default high-water marks (1000 messages).  Each
 *   end has its own context, made after the fork, in the measured process.
 *   Sending copies (zmq_send); receiving is zero copy (zmq_msg_recv, and
 *   the view stays valid until release closes the message).
 *
 *   Note: a ZeroMQ context runs an I/O thread, which inherits the measured
 *   process's CPU; so each side's application thread and I/O thread share
 *   one CPU, as they would for any process pinned to one core.
 */
#define _GNU_SOURCE
#include "../xport.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

struct zep {
	struct bx_chan *ch;
	void *ctx, *sock;
	zmq_msg_t msg;
	bool held;
};

static int zfail(struct bx_chan *ch, const char *what)
{
	int err = zmq_errno();

	snprintf(ch->err, sizeof(ch->err), "%s: %s", what, zmq_strerror(err));
	return err > 0 ? -err : -EIO;
}

static int z_make(struct bx_chan *ch)
{
	/* The socket file is made by bind, in the receiver. */
	snprintf(ch->name, sizeof(ch->name), "ipc://%s/zmq-%d-%u-%u",
		 ch->cf->tmpdir, (int)getpid(), ch->cf->id, ch->index);
	return 0;
}

static void z_free(struct bx_chan *ch)
{
	if (!strncmp(ch->name, "ipc://", 6))
		unlink(ch->name + 6);
}

static int z_open(struct bx_chan *ch, enum bx_role role, void **ep)
{
	struct zep *e = calloc(1, sizeof(*e));
	int linger = 1000, ivl = 1;

	if (!e)
		return -ENOMEM;
	e->ch = ch;
	e->ctx = zmq_ctx_new();
	if (!e->ctx) {
		free(e);
		return zfail(ch, "zmq_ctx_new");
	}
	e->sock = zmq_socket(e->ctx, ZMQ_PAIR);
	if (!e->sock)
		goto fail;
	/* Deliver what is queued at close, but never wait for ever. */
	zmq_setsockopt(e->sock, ZMQ_LINGER, &linger, sizeof(linger));
	if (role == BX_RX) {
		if (zmq_bind(e->sock, ch->name) < 0)
			goto fail;
	} else {
		zmq_setsockopt(e->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
		if (zmq_connect(e->sock, ch->name) < 0)
			goto fail;
	}
	*ep = e;
	return 0;
fail:
	zfail(ch, role == BX_RX ? "zmq bind" : "zmq connect");
	if (e->sock)
		zmq_close(e->sock);
	zmq_ctx_term(e->ctx);
	free(e);
	return -EIO;
}

static int z_send(void *ep, const void *msg, size_t len)
{
	struct zep *e = ep;

	while (zmq_send(e->sock, msg, len, 0) < 0)
		if (zmq_errno() != EINTR)
			return zfail(e->ch, "zmq_send");
	return 0;
}

static void z_release(void *ep)
{
	struct zep *e = ep;

	if (e->held)
		zmq_msg_close(&e->msg);
	e->held = false;
}

static int z_recv(void *ep, const void **msg, size_t *len)
{
	struct zep *e = ep;

	z_release(e);
	zmq_msg_init(&e->msg);
	while (zmq_msg_recv(&e->msg, e->sock, 0) < 0) {
		if (zmq_errno() != EINTR) {
			zmq_msg_close(&e->msg);
			return zfail(e->ch, "zmq_msg_recv");
		}
	}
	e->held = true;
	*msg = zmq_msg_data(&e->msg);
	*len = zmq_msg_size(&e->msg);
	return 0;
}

static void z_close(void *ep)
{
	struct zep *e = ep;

	z_release(e);
	zmq_close(e->sock);
	zmq_ctx_term(e->ctx);
	free(e);
}

static const struct bx_xport zeromq = {
	.api = BX_API_VERSION,
	.name = "zeromq",
	.label = "ZeroMQ ipc:// PAIR",
	.flags = BX_LAT | BX_TPUT | BX_OPTIONAL,
	.chan_make = z_make,
	.chan_free = z_free,
	.open = z_open,
	.send = z_send,
	.recv = z_recv,
	.release = z_release,
	.close = z_close,
};

const struct bx_xport *const *bx_plugin_xports(unsigned api, unsigned *n,
					       char *why, size_t len)
{
	static const struct bx_xport *const v[] = { &zeromq };
	int major, minor, patch;

	if (api != BX_API_VERSION) {
		snprintf(why, len, "plugin built for harness API %d, not %u",
			 BX_API_VERSION, api);
		return NULL;
	}
	zmq_version(&major, &minor, &patch);
	(void)major;
	(void)minor;
	(void)patch;
	*n = 1;
	return v;
}
