/*
 * xport-base.c - the baselines a user would pick instead of shmq: a raw
 * cache-line ping-pong (the floor), a naive fixed-slot ring in shared
 * memory, a pipe, a Unix domain socket and a POSIX message queue.
 *
 * Design note
 *   Each is written the way its user would write it, not tuned against
 *   shmq, and all run through the same harness as shmq (harness.c).
 *
 *   raw ping-pong   one buffer per direction in shared memory.  The sender
 *                   copies the message after its first word, then stores
 *                   the first word (the sequence number, never 0) with
 *                   release ordering; the receiver spins until that word
 *                   changes.  A 64-byte message is one cache line each
 *                   way: nothing can pass a message between two cores with
 *                   fewer line transfers, so this is the floor.  It only
 *                   works for strict ping-pong (the sender never runs
 *                   ahead), hence latency only.
 *   naive ring      the obvious single-producer, single-consumer ring: N
 *                   slots, each as large as the largest message, a head
 *                   index the producer advances and a tail index the
 *                   consumer advances, on separate cache lines; each side
 *                   reads the other's index on every operation.  Both
 *                   sides spin.  It gets the same memory as shmq's ring
 *                   (rounded up to a power-of-two slot count).
 *   pipe, unix      a stream of [8-byte length][payload], one writev() per
 *                   message; the receiver reads as much as is there into a
 *                   1 MiB buffer and hands out messages in place, so one
 *                   read() carries many small messages.  Blocking calls,
 *                   kernel default buffer sizes.
 *   mq busy/block   POSIX message queue with the default depth of 10
 *                   messages, sized for the measurement's messages (the
 *                   kernel caps the size at fs.mqueue.msgsize_max, 8 KiB
 *                   by default, for an unprivileged queue: larger sizes
 *                   are "n/a"):
 *                   either O_NONBLOCK and retried on EAGAIN (spins), or
 *                   blocking.  The queue is unlinked as soon as it exists:
 *                   the measured processes inherit its descriptor, and a
 *                   killed run leaves nothing behind.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define LINE 64u

static size_t round_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

static int fail(struct bx_chan *ch, int err, const char *what)
{
	snprintf(ch->err, sizeof(ch->err), "%s: %s", what, strerror(err));
	return -err;
}

static void *xmalloc(size_t n)
{
	void *p;

	if (posix_memalign(&p, 4096, n))
		return NULL;
	memset(p, 0, n);
	return p;
}

static int map_shared(struct bx_chan *ch, size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return fail(ch, errno, "mmap");
	/* Fault every page in now, outside the measurement. */
	memset(p, 0, n);
	ch->mem = p;
	ch->mem_len = n;
	return 0;
}

static void unmap_shared(struct bx_chan *ch)
{
	if (ch->mem)
		munmap(ch->mem, ch->mem_len);
	ch->mem = NULL;
}

/* An endpoint that is just its channel. */
struct chan_ep {
	struct bx_chan *ch;
	uint64_t last;		/* raw: the first word last seen */
};

static int open_plain(struct bx_chan *ch, enum bx_role role, void **ep)
{
	struct chan_ep *e = calloc(1, sizeof(*e));

	(void)role;
	if (!e)
		return fail(ch, ENOMEM, "open");
	e->ch = ch;
	*ep = e;
	return 0;
}

static void close_plain(void *ep)
{
	free(ep);
}

/* ------------------------------------------------------------------------
 * Raw cache-line ping-pong.
 */
static int raw_make(struct bx_chan *ch)
{
	return map_shared(ch, round_up(ch->cf->max_msg, 4096));
}

static int raw_send(void *ep, const void *msg, size_t len)
{
	struct chan_ep *e = ep;
	uint64_t *slot = e->ch->mem, w0;

	memcpy(&w0, msg, sizeof(w0));
	memcpy((char *)slot + 8, (const char *)msg + 8, len - 8);
	/* Release: the rest of the message is visible before its first word. */
	__atomic_store_n(slot, w0, __ATOMIC_RELEASE);
	return 0;
}

static int raw_recv(void *ep, const void **msg, size_t *len)
{
	struct chan_ep *e = ep;
	uint64_t *slot = e->ch->mem, w;

	/* Acquire pairs with the sender's release of the first word. */
	while ((w = __atomic_load_n(slot, __ATOMIC_ACQUIRE)) == e->last)
		bench_relax();
	e->last = w;
	*msg = slot;
	*len = e->ch->cf->max_msg;
	return 0;
}

const struct bx_xport bx_raw = {
	.api = BX_API_VERSION,
	.name = "raw-pingpong",
	.label = "raw cache-line ping-pong",
	.flags = BX_LAT | BX_SPIN,
	.chan_make = raw_make,
	.chan_free = unmap_shared,
	.open = open_plain,
	.send = raw_send,
	.recv = raw_recv,
	.close = close_plain,
};

/* ------------------------------------------------------------------------
 * The naive fixed-slot ring.
 */
struct naive_ring {
	uint64_t head __attribute__((aligned(LINE)));	/* producer */
	uint64_t tail __attribute__((aligned(LINE)));	/* consumer */
	uint64_t nslots __attribute__((aligned(LINE)));
	uint64_t stride;
};

struct naive_slot {
	uint64_t len;
	char data[];
};

static int naive_make(struct bx_chan *ch)
{
	size_t stride = round_up(sizeof(struct naive_slot) + ch->cf->max_msg, LINE);
	size_t n = 2, bytes = ch->cf->ring_bytes ? ch->cf->ring_bytes : 1u << 20;
	struct naive_ring *r;
	int rc;

	while (n * stride < bytes)
		n *= 2;
	rc = map_shared(ch, sizeof(*r) + n * stride);
	if (rc)
		return rc;
	r = ch->mem;
	r->nslots = n;
	r->stride = stride;
	return 0;
}

static inline struct naive_slot *naive_slot(struct naive_ring *r, uint64_t i)
{
	return (struct naive_slot *)((char *)(r + 1) +
				     (i & (r->nslots - 1)) * r->stride);
}

static int naive_send(void *ep, const void *msg, size_t len)
{
	struct naive_ring *r = ((struct chan_ep *)ep)->ch->mem;
	uint64_t head = r->head;	/* only we write it */
	struct naive_slot *s;

	/* Acquire: the consumer is done with the slot it released. */
	while (head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) == r->nslots)
		bench_relax();
	s = naive_slot(r, head);
	s->len = len;
	memcpy(s->data, msg, len);
	/* Release: the slot is written before the consumer sees it. */
	__atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
	return 0;
}

static int naive_recv(void *ep, const void **msg, size_t *len)
{
	struct naive_ring *r = ((struct chan_ep *)ep)->ch->mem;
	uint64_t tail = r->tail;	/* only we write it */
	struct naive_slot *s;

	/* Acquire pairs with the producer's release of head. */
	while (__atomic_load_n(&r->head, __ATOMIC_ACQUIRE) == tail)
		bench_relax();
	s = naive_slot(r, tail);
	*msg = s->data;
	*len = s->len;
	return 0;
}

static void naive_release(void *ep)
{
	struct naive_ring *r = ((struct chan_ep *)ep)->ch->mem;

	/* Release: our reads of the slot are done before it is reused. */
	__atomic_store_n(&r->tail, r->tail + 1, __ATOMIC_RELEASE);
}

const struct bx_xport bx_naive = {
	.api = BX_API_VERSION,
	.name = "naive-ring",
	.label = "naive fixed-slot ring",
	.flags = BX_LAT | BX_TPUT | BX_SPIN,
	.chan_make = naive_make,
	.chan_free = unmap_shared,
	.open = open_plain,
	.send = naive_send,
	.recv = naive_recv,
	.release = naive_release,
	.close = close_plain,
};

/* ------------------------------------------------------------------------
 * Byte streams: pipe and Unix domain socket.  fd[0] reads, fd[1] writes.
 */
#define STREAM_BUF (1u << 20)

struct stream_ep {
	struct bx_chan *ch;
	int fd;
	char *buf;
	size_t cap, have, pos;
};

static int pipe_make(struct bx_chan *ch)
{
	if (pipe2(ch->fd, O_CLOEXEC) < 0)
		return fail(ch, errno, "pipe");
	return 0;
}

static int uds_make(struct bx_chan *ch)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return fail(ch, errno, "socketpair");
	ch->fd[0] = sv[0];
	ch->fd[1] = sv[1];
	return 0;
}

static void fd_free(struct bx_chan *ch)
{
	for (int i = 0; i < 2; i++) {
		if (ch->fd[i] >= 0)
			close(ch->fd[i]);
		ch->fd[i] = -1;
	}
}

static int stream_open(struct bx_chan *ch, enum bx_role role, void **ep)
{
	struct stream_ep *e = calloc(1, sizeof(*e));

	if (!e)
		return fail(ch, ENOMEM, "open");
	e->ch = ch;
	/* Our end only: the other end's copy would hide the peer's exit. */
	e->fd = ch->fd[role == BX_TX ? 1 : 0];
	close(ch->fd[role == BX_TX ? 0 : 1]);
	if (role == BX_RX) {
		e->cap = STREAM_BUF + 8 + ch->cf->max_msg;
		e->buf = xmalloc(e->cap);
		if (!e->buf) {
			free(e);
			return fail(ch, ENOMEM, "open");
		}
	}
	*ep = e;
	return 0;
}

static int stream_send(void *ep, const void *msg, size_t len)
{
	struct stream_ep *e = ep;
	uint64_t hdr = len;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = 8 },
		{ .iov_base = (void *)msg, .iov_len = len },
	};
	size_t left = 8 + len;

	while (left) {
		ssize_t r = writev(e->fd, iov, 2);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(e->ch, errno, "write");
		left -= (size_t)r;
		/* A short write: go on from where it stopped. */
		for (int i = 0; i < 2; i++) {
			size_t d = (size_t)r < iov[i].iov_len ? (size_t)r : iov[i].iov_len;

			iov[i].iov_base = (char *)iov[i].iov_base + d;
			iov[i].iov_len -= d;
			r -= (ssize_t)d;
		}
	}
	return 0;
}

static int stream_recv(void *ep, const void **msg, size_t *len)
{
	struct stream_ep *e = ep;
	uint64_t n;

	for (;;) {
		ssize_t r;

		if (e->have - e->pos >= 8) {
			memcpy(&n, e->buf + e->pos, 8);
			if (n > e->ch->cf->max_msg) {
				snprintf(e->ch->err, sizeof(e->ch->err),
					 "frame of %llu bytes", (unsigned long long)n);
				return -EPROTO;
			}
			if (e->have - e->pos >= 8 + n)
				break;
		}
		/*
		 * Not a whole message left.  Move the partial one to the
		 * front only when the free tail could not hold a whole one,
		 * so the copy is rare.
		 */
		if (e->cap - e->have < 8 + e->ch->cf->max_msg) {
			memmove(e->buf, e->buf + e->pos, e->have - e->pos);
			e->have -= e->pos;
			e->pos = 0;
		}
		do
			r = read(e->fd, e->buf + e->have, e->cap - e->have);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			return fail(e->ch, errno, "read");
		if (r == 0) {
			snprintf(e->ch->err, sizeof(e->ch->err), "the sender closed");
			return -EPIPE;
		}
		e->have += (size_t)r;
	}
	*msg = e->buf + e->pos + 8;
	*len = n;
	e->pos += 8 + n;
	return 0;
}

static void stream_close(void *ep)
{
	struct stream_ep *e = ep;

	close(e->fd);
	free(e->buf);
	free(e);
}

const struct bx_xport bx_pipe = {
	.api = BX_API_VERSION,
	.name = "pipe",
	.label = "pipe, blocking",
	.flags = BX_LAT | BX_TPUT,
	.chan_make = pipe_make,
	.chan_free = fd_free,
	.open = stream_open,
	.send = stream_send,
	.recv = stream_recv,
	.close = stream_close,
};

const struct bx_xport bx_uds = {
	.api = BX_API_VERSION,
	.name = "unix-stream",
	.label = "unix stream socket, blocking",
	.flags = BX_LAT | BX_TPUT,
	.chan_make = uds_make,
	.chan_free = fd_free,
	.open = stream_open,
	.send = stream_send,
	.recv = stream_recv,
	.close = stream_close,
};

/* ------------------------------------------------------------------------
 * POSIX message queues.  fd[0] holds the mqd_t.
 */
#define MQ_DEPTH 10	/* the kernel's default msg_max */

struct mq_ep {
	struct bx_chan *ch;
	mqd_t q;
	bool busy;
	char *buf;
	size_t cap;
};

static int mq_make_flags(struct bx_chan *ch, int extra)
{
	struct mq_attr a = { .mq_maxmsg = MQ_DEPTH,
			     .mq_msgsize = (long)ch->cf->msg_size };
	struct rlimit rl;
	mqd_t q;

	/*
	 * Each queue counts maxmsg * msgsize against RLIMIT_MSGQUEUE (800 KiB
	 * by default), and a ping-pong needs two: raise the soft limit to
	 * the hard one (root may raise both).
	 */
	if (getrlimit(RLIMIT_MSGQUEUE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		struct rlimit want = { RLIM_INFINITY, RLIM_INFINITY };

		if (setrlimit(RLIMIT_MSGQUEUE, &want) < 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_MSGQUEUE, &rl);
		}
	}
	snprintf(ch->name, sizeof(ch->name), "/shmq-bench-%d-%u-%u", (int)getpid(),
		 ch->cf->id, ch->index);
	q = mq_open(ch->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | extra,
		    0600, &a);
	if (q == (mqd_t)-1) {
		int err = errno;

		/* Over msgsize_max without privilege: this size cannot go. */
		snprintf(ch->err, sizeof(ch->err),
			 "mq_open (depth %d, %zu-byte messages): %s%s", MQ_DEPTH,
			 ch->cf->msg_size, strerror(err),
			 err == EINVAL || err == EMFILE ?
			 " (see /proc/sys/fs/mqueue/msgsize_max)" : "");
		return err == EINVAL || err == EMFILE ? 1 : -err;
	}
	mq_unlink(ch->name);
	ch->fd[0] = (int)q;
	return 0;
}

static int mq_make_busy(struct bx_chan *ch)
{
	return mq_make_flags(ch, O_NONBLOCK);
}

static int mq_make_block(struct bx_chan *ch)
{
	return mq_make_flags(ch, 0);
}

static void mq_free(struct bx_chan *ch)
{
	if (ch->fd[0] >= 0)
		mq_close((mqd_t)ch->fd[0]);
	ch->fd[0] = -1;
}

static int mq_open_ep(struct bx_chan *ch, enum bx_role role, void **ep)
{
	struct mq_ep *e = calloc(1, sizeof(*e));
	struct mq_attr a;

	if (!e)
		return fail(ch, ENOMEM, "open");
	e->ch = ch;
	e->q = (mqd_t)ch->fd[0];
	if (mq_getattr(e->q, &a) < 0) {
		free(e);
		return fail(ch, errno, "mq_getattr");
	}
	e->busy = a.mq_flags & O_NONBLOCK;
	if (role == BX_RX) {
		/* mq_receive wants room for the largest message. */
		e->cap = (size_t)a.mq_msgsize;
		e->buf = xmalloc(e->cap);
		if (!e->buf) {
			free(e);
			return fail(ch, ENOMEM, "open");
		}
	}
	*ep = e;
	return 0;
}

static int mq_send_one(void *ep, const void *msg, size_t len)
{
	struct mq_ep *e = ep;

	while (mq_send(e->q, msg, len, 0) < 0) {
		if (errno == EAGAIN && e->busy) {
			bench_relax();
			continue;
		}
		if (errno != EINTR)
			return fail(e->ch, errno, "mq_send");
	}
	return 0;
}

static int mq_recv_one(void *ep, const void **msg, size_t *len)
{
	struct mq_ep *e = ep;
	ssize_t r;

	while ((r = mq_receive(e->q, e->buf, e->cap, NULL)) < 0) {
		if (errno == EAGAIN && e->busy) {
			bench_relax();
			continue;
		}
		if (errno != EINTR)
			return fail(e->ch, errno, "mq_receive");
	}
	*msg = e->buf;
	*len = (size_t)r;
	return 0;
}

static void mq_close_ep(void *ep)
{
	struct mq_ep *e = ep;

	free(e->buf);
	free(e);
}

const struct bx_xport bx_mq_busy = {
	.api = BX_API_VERSION,
	.name = "mq-busy",
	.label = "POSIX mq, O_NONBLOCK spin",
	.flags = BX_LAT | BX_TPUT | BX_SPIN,
	.chan_make = mq_make_busy,
	.chan_free = mq_free,
	.open = mq_open_ep,
	.send = mq_send_one,
	.recv = mq_recv_one,
	.close = mq_close_ep,
};

const struct bx_xport bx_mq_block = {
	.api = BX_API_VERSION,
	.name = "mq-block",
	.label = "POSIX mq, blocking",
	.flags = BX_LAT | BX_TPUT,
	.chan_make = mq_make_block,
	.chan_free = mq_free,
	.open = mq_open_ep,
	.send = mq_send_one,
	.recv = mq_recv_one,
	.close = mq_close_ep,
};
