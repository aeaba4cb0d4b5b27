/*
 * xport-shmq.c - shmq as a transport of the harness.
 *
 * Design note
 *   One channel is one topic of one partition, created through shmqd for
 *   each measurement (so no group or frame of an earlier one lingers) and
 *   deleted after it.  The receiver joins group "bench" from the earliest
 *   offset before anything is sent (the harness starts both ends only
 *   when both have attached).  Each measured process opens its own client:
 *   nothing opened by the coordinator crosses a fork.
 *
 *   Three ways to use it, as users would:
 *     shmq-busy    SHMQ_CONSUMER_BUSY_POLL and SHMQ_PRODUCER_BUSY_WAIT:
 *                  spin, never sleep;
 *     shmq-futex   the defaults: spin briefly, then sleep on the futex;
 *     shmq-zc      the defaults, publishing with claim/commit (the
 *                  producer writes the message in place: zero copy);
 *     shmq-batch   the defaults, publishing with shmq_send_batch(),
 *                  BATCH_N messages a call.  The harness hands over one
 *                  message at a time in a buffer it reuses, so the
 *                  sender copies each into a batch of its own first
 *                  (one more copy than shmq-futex) and publishes the
 *                  batch when it is full, and what is left at close.
 *   Receiving is always in place: the view stays valid until release.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shmq_int.h" /* shmq__copy */

struct shmq_ep {
	struct bx_chan *ch;
	shmq_client_t *cl;
	shmq_producer_t *p;
	shmq_consumer_t *c;
	struct shmq_claim claim;
	/* shmq-batch: messages waiting to be published, slots of msg_size. */
	uint8_t *bbuf;
	struct shmq_batch_msg *bm;
	unsigned bn;
};

#define BATCH_N 32

static int sfail(struct bx_chan *ch, int rc, const char *what)
{
	const char *d = shmq_errdetail();

	snprintf(ch->err, sizeof(ch->err), "%s: %s%s%s", what, shmq_strerror(rc),
		 *d ? ": " : "", d);
	return rc < 0 ? rc : -EIO;
}

static int shmq_make(struct bx_chan *ch)
{
	struct bench_ns *ns = hx_ns();
	size_t ring = ch->cf->ring_bytes ? ch->cf->ring_bytes : 1u << 20;
	int rc;

	if (!ns) {
		snprintf(ch->err, sizeof(ch->err), "no shmq namespace");
		return -EINVAL;
	}
	snprintf(ch->name, sizeof(ch->name), "bx-%u-%u", ch->cf->id, ch->index);
	rc = bench_topic_create(ns, ch->name, ring, (uint32_t)ch->cf->max_msg, 1);
	if (rc < 0)
		return sfail(ch, rc, "create topic");
	return 0;
}

static void shmq_free(struct bx_chan *ch)
{
	if (hx_ns() && ch->name[0])
		bench_topic_delete(hx_ns(), ch->name);
}

static int shmq_open_ep(struct bx_chan *ch, enum bx_role role, void **ep,
			bool busy)
{
	struct shmq_ep *e = calloc(1, sizeof(*e));
	int rc;

	if (!e)
		return -ENOMEM;
	e->ch = ch;
	rc = shmq_open(ch->cf->shmq_dir, NULL, &e->cl);
	if (rc < 0) {
		free(e);
		return sfail(ch, rc, "shmq_open");
	}
	if (role == BX_TX) {
		struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;

		po.flags = busy ? SHMQ_PRODUCER_BUSY_WAIT : 0;
		rc = shmq_producer_open(e->cl, ch->name, &po, &e->p);
	} else {
		struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;

		co.from = SHMQ_FROM_EARLIEST;
		co.flags = busy ? SHMQ_CONSUMER_BUSY_POLL : 0;
		rc = shmq_consumer_open(e->cl, ch->name, "bench", &co, &e->c);
	}
	if (rc < 0) {
		shmq_close(e->cl);
		free(e);
		return sfail(ch, rc, role == BX_TX ? "shmq_producer_open" :
			     "shmq_consumer_open");
	}
	*ep = e;
	return 0;
}

static int open_busy(struct bx_chan *ch, enum bx_role role, void **ep)
{
	return shmq_open_ep(ch, role, ep, true);
}

static int open_futex(struct bx_chan *ch, enum bx_role role, void **ep)
{
	return shmq_open_ep(ch, role, ep, false);
}

static int shmq_send_one(void *ep, const void *msg, size_t len)
{
	struct shmq_ep *e = ep;
	int rc = shmq_send(e->p, 0, NULL, 0, msg, len, -1, NULL);

	return rc < 0 ? sfail(e->ch, rc, "shmq_send") : 0;
}

static int open_batch(struct bx_chan *ch, enum bx_role role, void **ep)
{
	struct shmq_ep *e;
	int rc = shmq_open_ep(ch, role, ep, false);

	if (rc < 0 || role != BX_TX)
		return rc;
	e = *ep;
	e->bbuf = malloc(BATCH_N * (ch->cf->msg_size ? ch->cf->msg_size : 1));
	e->bm = calloc(BATCH_N, sizeof(*e->bm));
	if (!e->bbuf || !e->bm) {
		snprintf(ch->err, sizeof(ch->err), "no memory for a batch");
		return -ENOMEM;
	}
	return 0;
}

/* Publish the messages waiting; a short count means a failure. */
static int batch_flush(struct shmq_ep *e)
{
	unsigned done = 0;

	while (done < e->bn) {
		int rc = shmq_send_batch(e->p, 0, e->bm + done, e->bn - done, -1, NULL);

		if (rc < 0) {
			e->bn = 0;
			return sfail(e->ch, rc, "shmq_send_batch");
		}
		done += (unsigned)rc;
	}
	e->bn = 0;
	return 0;
}

static int shmq_send_batched(void *ep, const void *msg, size_t len)
{
	struct shmq_ep *e = ep;
	size_t slot = e->ch->cf->msg_size;
	uint8_t *b;

	if (len > slot) {
		int rc = batch_flush(e);

		return rc < 0 ? rc : shmq_send_one(ep, msg, len);
	}
	b = e->bbuf + (size_t)e->bn * slot;
	/*
	 * As shmq_send copies: a plain memcpy here met glibc's 4 KiB aliasing
	 * stall (shmq_int.h) on every 64 KiB message, and this transport ran
	 * at a tenth of shmq_send's rate for it.
	 */
	shmq__copy(b, msg, len);
	e->bm[e->bn++] = (struct shmq_batch_msg){ NULL, 0, b, len };
	return e->bn == BATCH_N ? batch_flush(e) : 0;
}

static int shmq_claim_one(void *ep, size_t len, void **buf)
{
	struct shmq_ep *e = ep;
	int rc = shmq_producer_claim(e->p, 0, NULL, 0, len, -1, &e->claim);

	if (rc < 0)
		return sfail(e->ch, rc, "shmq_producer_claim");
	*buf = e->claim.value;
	return 0;
}

static int shmq_commit_one(void *ep)
{
	struct shmq_ep *e = ep;
	int rc = shmq_producer_commit(e->p);

	return rc < 0 ? sfail(e->ch, rc, "shmq_producer_commit") : 0;
}

static int shmq_recv_one(void *ep, const void **msg, size_t *len)
{
	struct shmq_ep *e = ep;
	struct shmq_msg m;
	int rc;

	/* -1 waits for ever; the measured process's alarm bounds it. */
	do
		rc = shmq_consumer_poll(e->c, &m, -1);
	while (rc == -EAGAIN);
	if (rc < 0)
		return sfail(e->ch, rc, "shmq_consumer_poll");
	*msg = m.value;
	*len = m.value_len;
	return 0;
}

static void shmq_release_one(void *ep)
{
	shmq_consumer_release(((struct shmq_ep *)ep)->c);
}

static void shmq_close_ep(void *ep)
{
	struct shmq_ep *e = ep;

	if (e->bn)
		batch_flush(e);
	free(e->bbuf);
	free(e->bm);
	shmq_consumer_close(e->c);
	shmq_producer_close(e->p);
	shmq_close(e->cl);
	free(e);
}

const struct bx_xport bx_shmq_busy = {
	.api = BX_API_VERSION,
	.name = "shmq-busy",
	.label = "shmq busy-poll",
	.flags = BX_LAT | BX_TPUT | BX_SPIN,
	.chan_make = shmq_make,
	.chan_free = shmq_free,
	.open = open_busy,
	.send = shmq_send_one,
	.recv = shmq_recv_one,
	.release = shmq_release_one,
	.close = shmq_close_ep,
};

const struct bx_xport bx_shmq_futex = {
	.api = BX_API_VERSION,
	.name = "shmq-futex",
	.label = "shmq futex wait (default)",
	.flags = BX_LAT | BX_TPUT,
	.chan_make = shmq_make,
	.chan_free = shmq_free,
	.open = open_futex,
	.send = shmq_send_one,
	.recv = shmq_recv_one,
	.release = shmq_release_one,
	.close = shmq_close_ep,
};

const struct bx_xport bx_shmq_zc = {
	.api = BX_API_VERSION,
	.name = "shmq-zc",
	.label = "shmq claim/commit (zero copy)",
	.flags = BX_TPUT,
	.chan_make = shmq_make,
	.chan_free = shmq_free,
	.open = open_futex,
	.send = shmq_send_one,
	.claim = shmq_claim_one,
	.commit = shmq_commit_one,
	.recv = shmq_recv_one,
	.release = shmq_release_one,
	.close = shmq_close_ep,
};

const struct bx_xport bx_shmq_batch = {
	.api = BX_API_VERSION,
	.name = "shmq-batch",
	.label = "shmq send_batch, 32 a call",
	.flags = BX_TPUT,
	.chan_make = shmq_make,
	.chan_free = shmq_free,
	.open = open_batch,
	.send = shmq_send_batched,
	.recv = shmq_recv_one,
	.release = shmq_release_one,
	.close = shmq_close_ep,
};
