/*
 * laps-t.c - many laps of the smallest ring, every size, every wrap.
 *
 * Topics are made directly (shmq__segment_create and a topic file, the way
 * shmqd makes them), with ring_bytes = SHMQ_RING_MIN and max_message =
 * SHMQ_MAX_MESSAGE_LIMIT (ring/2 - 32), the largest the API allows.  One process produces and consumes in
 * lockstep, so that it can predict every offset: with one producer in a
 * partition, a message's offset is the previous message's next_offset,
 * moved to the start of the ring when the frame would cross its end (the
 * rest of the ring becoming a padding frame).  A last part runs the
 * producer in a second process.
 *
 * Checked: every message byte for byte (a pattern derived from its
 * sequence number); offsets strictly increasing and exactly as predicted;
 * next_offset leading to the next message; sizes from 0 to max_message,
 * max+1 refused; a wrap-padding frame of every possible size; seeking back
 * re-delivers the same bytes, seeking to an overwritten offset is
 * SHMQ_EGONE; FROM_LATEST and FROM_EARLIEST; aborted claims are never
 * seen; the FAIL policy gives -EAGAIN at once and loses nothing; a
 * blocked send honours its timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define RING	 SHMQ_RING_MIN
#define MAX_MSG	 SHMQ_MAX_MESSAGE_LIMIT(RING)
#define MASK	 ((uint64_t)RING - 1)
#define NONE	 UINT64_MAX
#define MAX_TOPICS 8

static char dir[256];
static shmq_client_t *client;
static struct shmq_map maps[MAX_TOPICS];
static int nmaps;

/* ------------------------------------------------------------------------
 * Topics without shmqd
 */

static void make_topic(const char *name, uint32_t parts, int policy,
		       uint32_t max_message)
{
	static uint32_t serial;
	struct shmq_topic_params tp;

	if (nmaps >= MAX_TOPICS)
		bail("too many topics");
	memset(&tp, 0, sizeof tp);
	tp.partitions = parts;
	tp.ring_bytes = RING;
	tp.max_message = max_message;
	tp.full_policy = (uint32_t)policy;
	tp.numa_node = -1;
	tp.mode = 0600;
	tp.stall_timeout_ms = 10000;
	tp.topic_id = (uint64_t)getpid() << 16 | ++serial;
	tu_topic_direct(dir, name, &tp, &maps[nmaps++]);
}

/* ------------------------------------------------------------------------
 * Messages: a key and a value derived from the sequence number
 */

static void gen(uint64_t seq, uint8_t *key, uint32_t key_len, uint8_t *val,
		uint32_t value_len)
{
	uint32_t j;

	for (j = 0; j < key_len; j++)
		key[j] = (uint8_t)(seq ^ (j * 29u) ^ 0x5a);
	for (j = 0; j < value_len; j++)
		val[j] = (uint8_t)(seq * 131u + j * 7u + (j >> 8) + (seq >> 8));
}

/* Where the next frame of fb bytes goes, after a frame that ended at pos. */
static uint64_t predict(uint64_t pos, uint32_t fb)
{
	if ((pos & MASK) + fb > RING)
		pos += RING - (pos & MASK);
	return pos;
}

struct sent {
	uint64_t offset;
	uint32_t key_len, value_len;
	int after_abort; /* an aborted claim lies between it and the one before */
};

/*
 * One producer and one consumer on partition 0 of a topic, and what was
 * sent: the history is indexed by sequence number.
 */
struct lane {
	const char *topic;
	shmq_producer_t *pr;
	shmq_consumer_t *c;
	struct sent *hist;
	size_t hist_n, hist_cap;
	size_t recv_idx;	/* sequence number the consumer expects next */
	uint64_t next_pos;	/* end of the last frame claimed, or NONE */
	uint64_t prev_next;	/* next_offset of the last message received */
	uint64_t last_end;	/* last offset received + 1, 0 after a seek */
	int aborted;		/* a claim was aborted since the last send */
	/* failures */
	uint64_t bad_predict, bad_offset, bad_bytes, bad_next, bad_order;
	uint64_t unexpected, poll_err, received, pads;
};

static uint8_t kbuf[SHMQ_KEY_MAX + 1], vbuf[MAX_MSG + 64], cbuf[MAX_MSG + 64];

static void lane_open(struct lane *l, const char *topic, const char *group, int from)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	int rc;

	memset(l, 0, sizeof *l);
	l->topic = topic;
	l->next_pos = NONE;
	l->prev_next = NONE;
	co.from = from;
	rc = shmq_producer_open(client, topic, NULL, &l->pr);
	if (rc < 0)
		bail("producer_open %s: %s (%s)", topic, shmq_strerror(rc), shmq_errdetail());
	rc = shmq_consumer_open(client, topic, group, &co, &l->c);
	if (rc < 0)
		bail("consumer_open %s: %s (%s)", topic, shmq_strerror(rc), shmq_errdetail());
}

static void lane_close(struct lane *l)
{
	shmq_consumer_close(l->c);
	shmq_producer_close(l->pr);
	free(l->hist);
}

static uint64_t lane_bad(const struct lane *l)
{
	return l->bad_predict + l->bad_offset + l->bad_bytes + l->bad_next +
	       l->bad_order + l->unexpected + l->poll_err;
}

static void lane_diag(const struct lane *l)
{
	if (lane_bad(l) || l->recv_idx != l->hist_n)
		diag("%s: sent %zu received %llu (expecting seq %zu); bad: predict %llu offset %llu bytes %llu next %llu order %llu unexpected %llu poll %llu",
		     l->topic, l->hist_n, (unsigned long long)l->received, l->recv_idx,
		     (unsigned long long)l->bad_predict, (unsigned long long)l->bad_offset,
		     (unsigned long long)l->bad_bytes, (unsigned long long)l->bad_next,
		     (unsigned long long)l->bad_order, (unsigned long long)l->unexpected,
		     (unsigned long long)l->poll_err);
}

/* Send (or claim, fill and commit) message number hist_n. */
static int lane_send(struct lane *l, uint32_t key_len, uint32_t value_len,
		     int use_claim, int timeout_ms)
{
	uint64_t seq = l->hist_n, off = NONE;
	uint32_t fb = shmq__frame_bytes(key_len, value_len);
	struct shmq_claim cl;
	int rc;

	gen(seq, kbuf, key_len, vbuf, value_len);
	if (use_claim) {
		rc = shmq_producer_claim(l->pr, 0, kbuf, key_len, value_len,
					 timeout_ms, &cl);
		if (rc < 0)
			return rc;
		if (value_len)
			memcpy(cl.value, vbuf, value_len);
		off = cl.offset;
		rc = shmq_producer_commit(l->pr);
	} else {
		rc = shmq_send(l->pr, 0, kbuf, key_len, vbuf, value_len,
			       timeout_ms, &off);
	}
	if (rc < 0)
		return rc;
	if (l->next_pos != NONE && off != predict(l->next_pos, fb)) {
		if (l->bad_predict++ < 4)
			diag("%s: seq %llu (%u+%u bytes) at %llu, expected %llu",
			     l->topic, (unsigned long long)seq, key_len, value_len,
			     (unsigned long long)off,
			     (unsigned long long)predict(l->next_pos, fb));
	}
	l->next_pos = off + fb;
	if (l->hist_n == l->hist_cap) {
		l->hist_cap = l->hist_cap ? 2 * l->hist_cap : 1024;
		l->hist = realloc(l->hist, l->hist_cap * sizeof *l->hist);
		if (!l->hist)
			bail("out of memory");
	}
	l->hist[l->hist_n++] = (struct sent){ off, key_len, value_len, l->aborted };
	l->aborted = 0;
	return 0;
}

/* Index of the message sent at offset off, or -1. */
static ssize_t lane_find(const struct lane *l, uint64_t off)
{
	size_t lo = 0, hi = l->hist_n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (l->hist[mid].offset < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->hist_n && l->hist[lo].offset == off ? (ssize_t)lo : -1;
}

static void lane_check(struct lane *l, const struct shmq_msg *m)
{
	const struct sent *h;
	ssize_t at;
	uint32_t fb = shmq__frame_bytes(m->key_len, m->value_len);

	l->received++;
	if (l->recv_idx >= l->hist_n || m->offset != l->hist[l->recv_idx].offset) {
		at = lane_find(l, m->offset);
		if (l->bad_offset++ < 4)
			diag("%s: got offset %llu, expected seq %zu at %llu",
			     l->topic, (unsigned long long)m->offset, l->recv_idx,
			     l->recv_idx < l->hist_n ?
				     (unsigned long long)l->hist[l->recv_idx].offset : 0ull);
		if (at < 0) {
			l->unexpected++;
			return;
		}
		l->recv_idx = (size_t)at;
	}
	h = &l->hist[l->recv_idx];
	gen(l->recv_idx, kbuf, h->key_len, cbuf, h->value_len);
	if (m->partition != 0 || m->key_len != h->key_len ||
	    m->value_len != h->value_len ||
	    (h->key_len && memcmp(m->key, kbuf, h->key_len)) ||
	    (h->value_len && memcmp(m->value, cbuf, h->value_len))) {
		if (l->bad_bytes++ < 4)
			diag("%s: seq %zu at %llu: content differs (%zu+%zu bytes, want %u+%u)",
			     l->topic, l->recv_idx, (unsigned long long)m->offset,
			     m->key_len, m->value_len, h->key_len, h->value_len);
	}
	if (m->next_offset != m->offset + fb ||
	    (l->prev_next != NONE && !h->after_abort &&
	     m->offset != predict(l->prev_next, fb))) {
		if (l->bad_next++ < 4)
			diag("%s: seq %zu at %llu next %llu; previous next_offset %llu",
			     l->topic, l->recv_idx, (unsigned long long)m->offset,
			     (unsigned long long)m->next_offset,
			     (unsigned long long)l->prev_next);
	}
	if (l->prev_next != NONE && m->offset != l->prev_next)
		l->pads++;
	if (m->offset < l->last_end)
		l->bad_order++;
	l->last_end = m->offset + 1;
	l->prev_next = m->next_offset;
	l->recv_idx++;
}

/* Take everything there is, then release the last message. */
static void lane_drain(struct lane *l)
{
	struct shmq_msg m;
	int rc, i;

	for (i = 0; i < 4 * (int)(RING / SHMQ_FRAME_ALIGN); i++) {
		rc = shmq_consumer_poll(l->c, &m, 0);
		if (rc == -EAGAIN)
			break;
		if (rc < 0) {
			if (l->poll_err++ < 4)
				diag("%s: poll: %s", l->topic, shmq_strerror(rc));
			break;
		}
		lane_check(l, &m);
	}
	shmq_consumer_release(l->c);
}

/* Send; when the ring is full, drain and try once more. */
static int lane_put(struct lane *l, uint32_t key_len, uint32_t value_len,
		    int use_claim)
{
	int rc = lane_send(l, key_len, value_len, use_claim, 0);

	if (rc == -EAGAIN) {
		lane_drain(l);
		rc = lane_send(l, key_len, value_len, use_claim, 0);
	}
	return rc;
}

/* Fill with padding-free messages up to ring position target (mod RING). */
static int lane_fill_to(struct lane *l, uint64_t target)
{
	uint64_t d;
	uint32_t chunk;
	int rc;

	while ((l->next_pos & MASK) != (target & MASK)) {
		d = (l->next_pos & MASK) < (target & MASK) ?
			    (target & MASK) - (l->next_pos & MASK) :
			    RING - (l->next_pos & MASK);
		chunk = d > 8192 ? 8192 : (uint32_t)d;
		rc = lane_put(l, 0, chunk - SHMQ_FRAME_HEADER, (int)(l->hist_n & 1));
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Parts of the test
 */

static void test_sizes(void)
{
	static const uint32_t sizes[] = {
		0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 95, 96, 97,
		127, 128, 129, 255, 256, 1000, 1023, 1024, 4095, 4096, 4097,
		8191, 8192, 16383, 16384, 16385, 20000, 32735, 32736,
	};
	static const uint32_t keys[] = { 0, 1, 5, 31, 32, 100 };
	struct shmq_claim cl;
	struct lane l;
	unsigned i, k, r, fails = 0;
	int rc;

	lane_open(&l, "sizes", "g", SHMQ_FROM_EARLIEST);
	for (r = 0; r < 3; r++) {
		for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
			for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
				uint32_t v = sizes[i];

				if (keys[k] + v > MAX_MSG)
					v = MAX_MSG - keys[k];
				rc = lane_put(&l, keys[k], v, (int)((i + k + r) & 1));
				if (rc < 0 && fails++ < 4)
					diag("sizes: %u+%u bytes: %s", keys[k], v,
					     shmq_strerror(rc));
			}
		}
	}
	lane_drain(&l);
	lane_diag(&l);
	ok(fails == 0 && lane_bad(&l) == 0 && l.recv_idx == l.hist_n,
	   "sizes 0..32736 with keys 0..100: %zu messages byte for byte", l.hist_n);

	/* The limit is on key + value. */
	lane_drain(&l);
	rc = lane_put(&l, 0, MAX_MSG, 0);
	ok(rc == 0, "send of exactly max_message (%u) at ring offset %llu: %s",
	   MAX_MSG, (unsigned long long)(l.next_pos & MASK), shmq_strerror(rc));
	rc = lane_put(&l, 10, MAX_MSG - 10, 1);
	ok(rc == 0, "claim of key+value == max_message: %s", shmq_strerror(rc));
	is_int(shmq_send(l.pr, 0, NULL, 0, vbuf, MAX_MSG + 1, 0, NULL), SHMQ_ETOOBIG,
	       "send of max_message + 1 is SHMQ_ETOOBIG");
	is_int(shmq_send(l.pr, 0, kbuf, 1, vbuf, MAX_MSG, 0, NULL), SHMQ_ETOOBIG,
	       "send of 1 + max_message key+value is SHMQ_ETOOBIG");
	is_int(shmq_producer_claim(l.pr, 0, NULL, 0, MAX_MSG + 1, 0, &cl), SHMQ_ETOOBIG,
	       "claim of max_message + 1 is SHMQ_ETOOBIG");
	lane_drain(&l);
	lane_diag(&l);
	ok(lane_bad(&l) == 0 && l.recv_idx == l.hist_n,
	   "refused messages left nothing behind");
	lane_close(&l);
}

/*
 * A wrap-padding frame of every size: put the head k frames of 32 bytes
 * before the end of the ring, then send a frame that does not fit there.
 */
static void test_wraps(void)
{
	uint32_t max_frame = shmq__frame_bytes(0, MAX_MSG);
	uint32_t kmax = max_frame / SHMQ_FRAME_ALIGN - 1, k, fb, fails = 0;
	uint64_t pads_before, wraps = 0;
	struct lane l;
	int rc;

	lane_open(&l, "wraps", "g", SHMQ_FROM_EARLIEST);
	if (lane_put(&l, 0, 0, 0) < 0)
		bail("wraps: first send failed");
	for (k = 1; k <= kmax; k++) {
		uint32_t gap = k * SHMQ_FRAME_ALIGN;

		if (lane_fill_to(&l, RING - gap) < 0) {
			fails++;
			break;
		}
		fb = gap + SHMQ_FRAME_ALIGN *
				   (1 + (k * 7919u) % ((max_frame - gap) / SHMQ_FRAME_ALIGN));
		pads_before = l.pads;
		rc = lane_put(&l, (k % 3) * 7, fb - SHMQ_FRAME_HEADER - (k % 3) * 7,
			      (int)(k & 1));
		if (rc < 0) {
			if (fails++ < 4)
				diag("wraps: k %u frame %u: %s", k, fb, shmq_strerror(rc));
			continue;
		}
		lane_drain(&l);
		wraps++;
		if (l.pads != pads_before + 1 && fails++ < 4)
			diag("wraps: k %u: %llu padding frames seen", k,
			     (unsigned long long)(l.pads - pads_before));
	}
	lane_drain(&l);
	lane_diag(&l);
	ok(fails == 0 && wraps == kmax,
	   "a wrap-padding frame of each size 32..%u (%llu wraps)",
	   kmax * SHMQ_FRAME_ALIGN, (unsigned long long)wraps);
	ok(lane_bad(&l) == 0 && l.recv_idx == l.hist_n,
	   "wraps: %zu messages over %llu laps, offsets as predicted, byte for byte",
	   l.hist_n, (unsigned long long)(l.next_pos / RING));
	ok(l.bad_next == 0 && l.bad_predict == 0,
	   "wraps: next_offset leads to the next message's offset");
	lane_close(&l);
}

/*
 * The worst wrap: a frame of the largest size with the head one alignment
 * unit past where it would still fit, so that the claim needs padding of
 * max_frame - 32 bytes and the frame.  max_message is capped so that this
 * fits the ring; it must be accepted once the ring is drained.
 */
static void test_worst_wrap(void)
{
	uint32_t max_frame = shmq__frame_bytes(0, MAX_MSG);
	uint64_t start;
	int rc;
	struct lane l;

	lane_open(&l, "worst", "g", SHMQ_FROM_EARLIEST);
	rc = lane_put(&l, 0, 0, 0);
	if (rc == 0)
		rc = lane_fill_to(&l, RING - max_frame + SHMQ_FRAME_ALIGN);
	if (rc < 0)
		diag("worst: filling: %s", shmq_strerror(rc));
	lane_drain(&l);
	start = l.next_pos;
	rc = lane_send(&l, 0, MAX_MSG, 0, 0);
	if (rc == -EAGAIN) {
		lane_drain(&l);
		rc = lane_send(&l, 0, MAX_MSG, 0, 0);
	}
	ok(rc == 0,
	   "max_message (%u, frame %u) accepted with the head at ring offset %llu, ring drained: %s",
	   MAX_MSG, max_frame, (unsigned long long)(start & MASK), shmq_strerror(rc));
	if (rc < 0)
		diag("a claim there needs %llu bytes (padding %llu + frame %u) of a %u-byte ring",
		     (unsigned long long)(RING - (start & MASK) + max_frame),
		     (unsigned long long)(RING - (start & MASK)), max_frame, RING);
	lane_drain(&l);
	rc = lane_put(&l, 0, 100, 0);
	lane_drain(&l);
	lane_diag(&l);
	ok(rc == 0 && lane_bad(&l) == 0 && l.recv_idx == l.hist_n,
	   "worst wrap: padding and frame where predicted, and the partition goes on");
	lane_close(&l);
}

static void test_seek(void)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	struct shmq_topic_stat *st = NULL;
	shmq_consumer_t *c2 = NULL;
	struct shmq_msg m;
	struct lane l;
	uint64_t o3, first = NONE, redelivered;
	uint32_t i;
	ssize_t at;
	int rc, bad;

	lane_open(&l, "seek", "main", SHMQ_FROM_EARLIEST);
	for (i = 0; i < 10; i++)
		lane_put(&l, 3, 100 + i, 0);
	lane_drain(&l);
	o3 = l.hist[3].offset;

	rc = shmq_consumer_seek(l.c, 0, o3);
	l.recv_idx = 3;
	l.prev_next = NONE;
	l.last_end = 0;
	redelivered = l.received;
	lane_drain(&l);
	redelivered = l.received - redelivered;
	ok(rc == 0 && redelivered == 7 && lane_bad(&l) == 0,
	   "seek back to a remembered offset re-delivers the same bytes (%llu messages, rc %s)",
	   (unsigned long long)redelivered, shmq_strerror(rc));
	is_int(shmq_consumer_seek(l.c, 0, o3 + SHMQ_FRAME_ALIGN), -EINVAL,
	       "seek into the middle of a frame is -EINVAL");
	is_int(shmq_consumer_seek(l.c, 0, o3 + 1), -EINVAL,
	       "seek to an unaligned offset is -EINVAL");
	is_int(shmq_consumer_seek(l.c, 1, o3), -EINVAL, "seek in a partition beyond the topic's is -EINVAL");
	is_int(shmq_consumer_seek(l.c, 0, l.next_pos + SHMQ_FRAME_ALIGN), -EINVAL,
	       "seek beyond the head is -EINVAL");

	/* Three laps later, o3 has been overwritten. */
	while (l.next_pos - o3 < 3 * (uint64_t)RING)
		if (lane_put(&l, 0, 1000 + (uint32_t)(l.hist_n % 500), (int)(l.hist_n & 1)) < 0)
			break;
	lane_drain(&l);
	is_int(shmq_consumer_seek(l.c, 0, o3), SHMQ_EGONE,
	       "seek to an offset that was overwritten is SHMQ_EGONE");
	co.from = SHMQ_FROM_OFFSET;
	co.offset = o3;
	rc = shmq_consumer_open(client, "seek", "old", &co, &c2);
	is_int(rc, SHMQ_EGONE, "SHMQ_FROM_OFFSET with an overwritten offset is SHMQ_EGONE");
	if (rc == 0)
		shmq_consumer_close(c2);

	/* FROM_EARLIEST: the oldest message still in the ring, then all after. */
	rc = shmq_topic_stat(client, "seek", &st);
	if (rc == 0)
		first = st->partitions[0].first_offset;
	shmq_topic_stat_free(st);
	co.from = SHMQ_FROM_EARLIEST;
	c2 = NULL;
	rc = shmq_consumer_open(client, "seek", "early", &co, &c2);
	bad = rc < 0;
	at = -1;
	if (rc == 0 && shmq_consumer_poll(c2, &m, 0) == 0) {
		at = lane_find(&l, m.offset);
		/* The oldest readable frame may be padding: the message after it. */
		if (at < 0 || m.offset < first ||
		    (at > 0 && l.hist[at - 1].offset >= first))
			bad = 1;
		for (i = 1; !bad && (size_t)at + i < l.hist_n; i++) {
			if (shmq_consumer_poll(c2, &m, 0) != 0 ||
			    m.offset != l.hist[at + i].offset ||
			    m.value_len != l.hist[at + i].value_len)
				bad = 1;
		}
		if (!bad && shmq_consumer_poll(c2, &m, 0) != -EAGAIN)
			bad = 1;
	} else {
		bad = 1;
	}
	ok(!bad, "SHMQ_FROM_EARLIEST starts at the oldest message in the ring (first_offset %llu, seq %zd of %zu) and reads to the end",
	   (unsigned long long)first, at, l.hist_n);
	shmq_consumer_close(c2);

	/* FROM_LATEST: nothing old, then exactly what comes next. */
	co.from = SHMQ_FROM_LATEST;
	c2 = NULL;
	rc = shmq_consumer_open(client, "seek", "late", &co, &c2);
	bad = rc < 0 || shmq_consumer_poll(c2, &m, 0) != -EAGAIN;
	if (rc == 0) {
		lane_put(&l, 0, 77, 1);
		if (shmq_consumer_poll(c2, &m, 0) != 0 ||
		    m.offset != l.hist[l.hist_n - 1].offset || m.value_len != 77 ||
		    shmq_consumer_poll(c2, &m, 0) != -EAGAIN)
			bad = 1;
		shmq_consumer_close(c2);
	}
	ok(!bad, "SHMQ_FROM_LATEST skips old messages and gets the next one");
	lane_drain(&l);

	/* Seek to LATEST, then to EARLIEST. */
	rc = shmq_consumer_seek(l.c, 0, SHMQ_OFFSET_LATEST);
	ok(rc == 0 && shmq_consumer_poll(l.c, &m, 0) == -EAGAIN,
	   "seek to SHMQ_OFFSET_LATEST: nothing to read");
	rc = shmq_consumer_seek(l.c, 0, SHMQ_OFFSET_EARLIEST);
	bad = rc < 0 || shmq_consumer_poll(l.c, &m, 0) != 0 ||
	      lane_find(&l, m.offset) < 0 || m.offset > l.hist[l.hist_n - 1].offset - RING / 2;
	ok(!bad, "seek to SHMQ_OFFSET_EARLIEST: an old message of the ring");
	shmq_consumer_release(l.c);
	lane_close(&l);
}

/* Aborted claims become padding: readers never see them. */
static void test_abort(void)
{
	struct shmq_claim cl;
	struct shmq_msg m;
	struct lane l;
	uint32_t i, kl, vl, aborted = 0, fails = 0;
	int rc;

	lane_open(&l, "abort", "g", SHMQ_FROM_EARLIEST);
	for (i = 0; i < 3000; i++) {
		kl = (i * 13) % 9;
		vl = (i * 7919u) % (i % 10 == 0 ? MAX_MSG / 2 : 3000);
		if (i % 3 == 1) {
			rc = shmq_producer_claim(l.pr, 0, kbuf, kl, vl, 0, &cl);
			if (rc == -EAGAIN) {
				lane_drain(&l);
				rc = shmq_producer_claim(l.pr, 0, kbuf, kl, vl, 0, &cl);
			}
			if (rc < 0) {
				if (fails++ < 4)
					diag("abort: claim: %s", shmq_strerror(rc));
				continue;
			}
			memset(cl.value, 0xee, vl);
			if (i % 6 == 1) {
				rc = shmq_producer_abort(l.pr);
			} else {
				/* Close aborts an outstanding claim. */
				shmq_producer_close(l.pr);
				l.pr = NULL;
				rc = shmq_producer_open(client, "abort", NULL, &l.pr);
				if (rc < 0)
					bail("reopen producer: %s", shmq_strerror(rc));
			}
			if (rc < 0 && fails++ < 4)
				diag("abort: %s", shmq_strerror(rc));
			aborted++;
			l.aborted = 1;
			l.next_pos = cl.offset + shmq__frame_bytes(kl, vl);
			/* Nothing new to read: the claim is padding now. */
			if (i % 9 == 1) {
				lane_drain(&l);
				if (shmq_consumer_poll(l.c, &m, 0) != -EAGAIN && fails++ < 4)
					diag("abort: a message after an aborted claim");
			}
			continue;
		}
		rc = lane_put(&l, kl, vl, (int)(i & 2));
		if (rc < 0 && fails++ < 4)
			diag("abort: send: %s", shmq_strerror(rc));
		if (i % 17 == 0)
			lane_drain(&l);
	}
	lane_drain(&l);
	lane_diag(&l);
	ok(fails == 0 && lane_bad(&l) == 0 && l.recv_idx == l.hist_n,
	   "%u aborted claims never seen; %zu messages around them intact", aborted,
	   l.hist_n);
	is_int(shmq_producer_abort(l.pr), -EINVAL, "abort without a claim is -EINVAL");
	is_int(shmq_producer_commit(l.pr), -EINVAL, "commit without a claim is -EINVAL");
	rc = shmq_producer_claim(l.pr, 0, NULL, 0, 10, 0, &cl);
	is_int(shmq_send(l.pr, 0, NULL, 0, vbuf, 10, 0, NULL), -EBUSY,
	       "send while a claim is outstanding is -EBUSY");
	if (rc >= 0)
		shmq_producer_abort(l.pr);
	lane_close(&l);
}

/* FAIL: -EAGAIN at once when full; everything sent before is delivered. */
static void test_fail_policy(void)
{
	struct lane l;
	uint64_t t, worst = 0;
	uint32_t round, n, fails = 0, total = 0;
	int rc;

	lane_open(&l, "fail", "g", SHMQ_FROM_EARLIEST);
	for (round = 0; round < 6; round++) {
		for (n = 0; n < RING / SHMQ_FRAME_ALIGN + 1; n++) {
			t = tu_now_ns();
			rc = lane_send(&l, n % 4, (n * 131 + round * 17) % 3000,
				       (int)(n & 1), -1);
			t = tu_now_ns() - t;
			if (rc == -EAGAIN) {
				if (t > worst)
					worst = t;
				break;
			}
			if (rc < 0) {
				if (fails++ < 4)
					diag("fail: send: %s", shmq_strerror(rc));
				break;
			}
			total++;
		}
		if (n == 0 || n > RING / SHMQ_FRAME_ALIGN)
			fails++;
		lane_drain(&l);
	}
	lane_diag(&l);
	ok(fails == 0 && worst < 200000000ull,
	   "FAIL policy: -EAGAIN at once when full, even with timeout -1 (slowest %.1f ms)",
	   (double)worst / 1e6);
	ok(lane_bad(&l) == 0 && l.recv_idx == l.hist_n && total == l.hist_n,
	   "FAIL policy: all %u messages sent before -EAGAIN delivered after draining",
	   total);
	lane_close(&l);
}

/* BLOCK: a send into a full ring waits for its timeout and no longer. */
static void test_block_timeout(void)
{
	struct lane l;
	uint64_t t = 0;
	uint32_t n;
	int rc = 0;

	lane_open(&l, "block", "g", SHMQ_FROM_EARLIEST);
	for (n = 0; n < RING / SHMQ_FRAME_ALIGN + 1; n++) {
		rc = lane_send(&l, 0, 500, 0, 0);
		if (rc < 0)
			break;
	}
	if (rc == -EAGAIN) {
		t = tu_now_ns();
		rc = lane_send(&l, 0, 500, 0, 100);
		t = tu_now_ns() - t;
	}
	ok(rc == -EAGAIN && t >= 90000000ull && t < 3000000000ull,
	   "BLOCK policy: a full ring makes a 100 ms send wait %.1f ms, then -EAGAIN",
	   (double)t / 1e6);
	lane_drain(&l);
	rc = lane_send(&l, 0, 500, 1, 100);
	lane_drain(&l);
	ok(rc == 0 && lane_bad(&l) == 0 && l.recv_idx == l.hist_n,
	   "BLOCK policy: room again after draining; nothing lost");
	lane_close(&l);
}

/* ------------------------------------------------------------------------
 * Two processes: the producer in a child, the consumer here
 */

#define TWO_N 30000

static void two_sizes(uint32_t seq, uint32_t *kl, uint32_t *vl)
{
	uint64_t h = (uint64_t)seq * 0x9e3779b97f4a7c15ull;

	h ^= h >> 29;
	*kl = (uint32_t)(h % 5);
	/* Mostly small, sometimes up to max_message. */
	if (seq % 50 == 0)
		*vl = (uint32_t)((h >> 8) % (MAX_MSG + 1 - *kl));
	else
		*vl = (uint32_t)((h >> 8) % 1500);
}

static int two_child(void)
{
	shmq_client_t *cl = NULL;
	shmq_producer_t *pr = NULL;
	uint64_t deadline = tu_now_ns() + 40000000000ull;
	uint32_t seq, kl, vl;
	int rc;

	rc = shmq_open(dir, NULL, &cl);
	if (rc == 0)
		rc = shmq_producer_open(cl, "two", NULL, &pr);
	for (seq = 0; rc == 0 && seq < TWO_N; seq++) {
		two_sizes(seq, &kl, &vl);
		gen(seq, kbuf, kl, vbuf, vl);
		do {
			rc = shmq_send(pr, 0, kbuf, kl, vbuf, vl, 1000, NULL);
		} while (rc == -EAGAIN && tu_now_ns() < deadline);
		if (rc > 0)
			rc = -EPROTO;
	}
	if (rc < 0)
		fprintf(stderr, "# two: producer: %s\n", shmq_strerror(rc));
	shmq_producer_close(pr);
	shmq_close(cl);
	return rc < 0;
}

static void test_two_processes(void)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c = NULL;
	struct shmq_msg m;
	uint64_t prev_next = NONE, deadline;
	uint32_t seq = 0, kl, vl, bad = 0, fb;
	pid_t pid;
	int rc, st;

	co.from = SHMQ_FROM_EARLIEST;
	rc = shmq_consumer_open(client, "two", "g", &co, &c);
	if (rc < 0)
		bail("two: consumer_open: %s", shmq_strerror(rc));
	pid = tu_fork(NULL);
	if (pid == 0) {
		tap_child();
		alarm(60);
		_exit(two_child());
	}
	deadline = tu_now_ns() + 45000000000ull;
	while (seq < TWO_N && tu_now_ns() < deadline) {
		rc = shmq_consumer_poll(c, &m, 200);
		if (rc == -EAGAIN)
			continue;
		if (rc < 0) {
			diag("two: poll: %s", shmq_strerror(rc));
			bad++;
			break;
		}
		two_sizes(seq, &kl, &vl);
		gen(seq, kbuf, kl, vbuf, vl);
		fb = shmq__frame_bytes(kl, vl);
		if (m.key_len != kl || m.value_len != vl ||
		    memcmp(m.key, kbuf, kl) || memcmp(m.value, vbuf, vl) ||
		    m.next_offset != m.offset + fb ||
		    (prev_next != NONE && m.offset != predict(prev_next, fb))) {
			if (bad++ < 4)
				diag("two: seq %u at %llu: %zu+%zu bytes, want %u+%u",
				     seq, (unsigned long long)m.offset, m.key_len,
				     m.value_len, kl, vl);
		}
		prev_next = m.next_offset;
		seq++;
	}
	rc = shmq_consumer_poll(c, &m, 300);
	st = tu_wait_child(pid, 10000);
	ok(st == 0 && seq == TWO_N && bad == 0 && rc == -EAGAIN,
	   "two processes: %u of %u messages over %llu laps, byte for byte, offsets as predicted",
	   seq, TWO_N, (unsigned long long)(prev_next == NONE ? 0 : prev_next / RING));
	shmq_consumer_close(c);
}

/*
 * shmq__copy, which every value goes through, takes another path when the
 * destination lies 1..31 bytes after the source modulo 4096 (shmq_int.h):
 * every byte must arrive on both paths, at every size around the piece.
 */
static void test_copy(void)
{
	static const size_t sizes[] = { 1, 2047, 2048, 2049, 4095, 4096, 4097,
					6144 + 17, 65536 };
	uint8_t *src = malloc(65536 + 16384), *dst = malloc(65536 + 16384);
	uint64_t r = 42;
	uint32_t bad = 0, runs = 0;
	size_t i, k;
	int d;

	if (!src || !dst)
		bail("malloc");
	for (k = 0; k < 65536 + 16384; k++)
		src[k] = (uint8_t)tu_splitmix(&r);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (d = -40; d <= 40; d++) {
			/* dst - src == d (mod 4096), with a guard byte each side. */
			uint8_t *s = src + 4096 + 64, *t = dst + 4096 + 64 +
				(((uintptr_t)s - (uintptr_t)(dst + 4096 + 64) + (size_t)d) & 4095);

			memset(t - 1, 0xa5, sizes[i] + 2);
			shmq__copy(t, s, sizes[i]);
			runs++;
			if (memcmp(t, s, sizes[i]) || t[-1] != 0xa5 || t[sizes[i]] != 0xa5)
				bad++;
		}
	}
	ok(bad == 0, "copy: every byte, no more, at %u sizes and distances around the aliasing window (%u of %u wrong)",
	   (unsigned)(sizeof(sizes) / sizeof(sizes[0])), bad, runs);
	free(src);
	free(dst);
}

int main(void)
{
	int i, p, rc, bad = 0;

	tu_init(120);
	plan(34);
	tu_make_dir("laps", dir, sizeof dir);
	make_topic("sizes", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	make_topic("wraps", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	make_topic("worst", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	make_topic("seek", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	make_topic("abort", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	make_topic("fail", 1, SHMQ_FULL_FAIL, MAX_MSG);
	make_topic("block", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	make_topic("two", 1, SHMQ_FULL_BLOCK, MAX_MSG);
	client = tu_open(dir);

	test_sizes();
	test_wraps();
	test_worst_wrap();
	test_seek();
	test_abort();
	test_fail_policy();
	test_block_timeout();
	test_two_processes();
	test_copy();

	for (i = 0; i < nmaps; i++) {
		for (p = 0; p < (int)maps[i].geo.partitions; p++) {
			rc = shmq__ring_check(&maps[i], (uint32_t)p);
			if (rc) {
				diag("%s partition %d: %s (%s)", maps[i].name, p,
				     shmq_strerror(rc), shmq_errdetail());
				bad++;
			}
		}
	}
	ok(bad == 0, "shmq__ring_check passes on every partition of every topic");
	for (i = 0; i < nmaps; i++)
		shmq__segment_detach(&maps[i]);
	shmq_close(client);
	tu_cleanup(dir);
	return tap_done();
}
