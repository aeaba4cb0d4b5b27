/*
 * reap-t.c - the reaper's clock: timeouts fire when they are due, never at
 * the first sighting.
 *
 * shmqd's reaper (libshmq/reap.c) times a live producer's claim (the
 * topic's stall timeout) and a member's lease (its ack timeout) from the
 * first pass that saw it; the members and producers read no clock.  This
 * test drives shmq__reap_topic() itself, with a clock it makes up, on a
 * topic made without shmqd, so every case is exact and none depends on
 * scheduling:
 *
 * first   A claim that a forced pass (the one shmqd runs when a process
 *         died) sees for the first time is not revoked, whether that
 *         pass's clock is even or odd.  (A memo stored now | 1, and
 *         now - (now + 1) wrapped: kill-t once saw a claim revoked 1 ms
 *         after it was made, under a 300 ms stall timeout.)
 * stall   A claim is revoked at the pass where stall_timeout_ms has gone by
 *         since its first sighting, not one ns earlier, and not by a pass
 *         whose clock went back; its commit then gives SHMQ_EREVOKED and
 *         the message is never delivered, while the next one is.
 * ack     A held message's lease is parked at the pass where its ack
 *         timeout has gone by, not earlier, not at a first sighting.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define STALL_MS 300
#define ACK_MS	 200
#define MS	 1000000ull

static char dir[256];
static shmq_client_t *cl;
static struct shmq_map map;
static struct shmq_reap_state st;

/* One pass with a made-up clock; what it did. */
static struct shmq_reap_stats pass(uint64_t now_ns, bool force)
{
	struct shmq_reap_stats s;

	memset(&s, 0, sizeof s);
	st.force = force;
	shmq__reap_topic(&map, &st, now_ns, &s);
	return s;
}

static shmq_producer_t *producer(void)
{
	shmq_producer_t *p;
	int rc = shmq_producer_open(cl, "reap", NULL, &p);

	if (rc)
		bail("producer open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	return p;
}

static void claim(shmq_producer_t *p, uint32_t tag)
{
	struct shmq_claim c;
	int rc = shmq_producer_claim(p, 0, NULL, 0, sizeof tag, 0, &c);

	if (rc < 0)
		bail("claim: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	memcpy(c.value, &tag, sizeof tag);
}

static void test_first_sighting(void)
{
	shmq_producer_t *p = producer();
	/* An even and an odd clock: now | 1 is now + 1 for the even one. */
	static const uint64_t clocks[] = { 1000 * MS, 1000 * MS + 1, 7 * MS, 7 * MS + 1 };
	uint32_t revoked = 0, failed = 0;
	size_t i;

	for (i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
		struct shmq_reap_stats s;
		int rc;

		memset(&st, 0, sizeof st);
		claim(p, 100 + (uint32_t)i);
		s = pass(clocks[i], true);
		revoked += s.padded_stalled;
		rc = shmq_producer_commit(p);
		if (rc) {
			diag("first: commit after a forced pass at %" PRIu64 " ns: %s",
			     clocks[i], shmq_strerror(rc));
			failed++;
		}
	}
	ok(revoked == 0 && failed == 0,
	   "first: a claim seen first by a forced pass is not revoked, even or odd clock (%u revoked, %u commits failed)",
	   revoked, failed);
	shmq_producer_close(p);
}

static void test_stall(void)
{
	shmq_producer_t *p = producer();
	const uint64_t t0 = 5000 * MS, timeout = STALL_MS * MS;
	uint32_t early = 0;
	struct shmq_reap_stats s;
	int rc;

	memset(&st, 0, sizeof st);
	claim(p, 200);
	early += pass(t0, false).padded_stalled;	   /* first sighting */
	early += pass(t0 - 50 * MS, false).padded_stalled;  /* a clock that went back */
	early += pass(t0 + timeout / 2, true).padded_stalled;
	early += pass(t0 + timeout - 1, false).padded_stalled;
	ok(early == 0, "stall: not revoked before %d ms from the first sighting (%u early)",
	   STALL_MS, early);
	s = pass(t0 + timeout, false);
	ok(s.padded_stalled == 1, "stall: revoked at the pass %d ms after the first sighting (%u)",
	   STALL_MS, s.padded_stalled);
	rc = shmq_producer_commit(p);
	ok(rc == SHMQ_EREVOKED, "stall: the late commit gives SHMQ_EREVOKED (%s)",
	   shmq_strerror(rc));
	shmq_producer_close(p);
}

/* The revoked message (200) is never delivered; what was committed is. */
static void test_delivery(void)
{
	shmq_producer_t *p = producer();
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;
	struct shmq_msg m;
	uint32_t got[8], n = 0, tag = 300;
	int rc;

	rc = shmq_send(p, 0, NULL, 0, &tag, sizeof tag, 0, NULL);
	if (rc < 0)
		bail("send: %s", shmq_strerror(rc));
	o.from = SHMQ_FROM_EARLIEST;
	rc = shmq_consumer_open(cl, "reap", "all", &o, &c);
	if (rc)
		bail("consumer open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	while (n < 8 && shmq_consumer_poll(c, &m, 100) == 0) {
		if (m.value_len == sizeof(uint32_t))
			memcpy(&got[n++], m.value, sizeof(uint32_t));
		shmq_consumer_release(c);
	}
	ok(n == 5 && got[0] == 100 && got[1] == 101 && got[2] == 102 && got[3] == 103 &&
	   got[4] == 300,
	   "stall: the four committed messages and the later one arrive, the revoked one never (%u messages)",
	   n);
	shmq_consumer_close(c);
	shmq_producer_close(p);
}

static void test_ack_timeout(void)
{
	shmq_producer_t *p = producer();
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	const uint64_t t0 = 9000 * MS, timeout = ACK_MS * MS;
	uint32_t early = 0, tag = 400;
	struct shmq_reap_stats s;
	shmq_consumer_t *c;
	struct shmq_msg m;
	int rc;

	o.from = SHMQ_FROM_EARLIEST;
	o.mode = SHMQ_GROUP_SHARED;
	o.ack_timeout_ms = ACK_MS;
	rc = shmq_consumer_open(cl, "reap", "acks", &o, &c);
	if (rc)
		bail("consumer open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	/* Skip to the end: only the next message counts. */
	while (shmq_consumer_poll(c, &m, 0) == 0)
		shmq_consumer_ack(c);
	rc = shmq_send(p, 0, NULL, 0, &tag, sizeof tag, 0, NULL);
	if (rc < 0)
		bail("send: %s", shmq_strerror(rc));
	rc = shmq_consumer_poll(c, &m, 1000);
	if (rc)
		bail("poll: %s", shmq_strerror(rc));

	memset(&st, 0, sizeof st);
	/* Forced passes: leases are looked at every pass then. */
	early += pass(t0, true).expired_leases; /* first sighting, even clock */
	early += pass(t0 - 20 * MS, true).expired_leases;
	early += pass(t0 + timeout - 1, true).expired_leases;
	ok(early == 0, "ack: a held message is not taken back before %d ms (%u early)",
	   ACK_MS, early);
	s = pass(t0 + timeout, true);
	ok(s.expired_leases == 1, "ack: taken back at the pass %d ms after the first sighting (%u)",
	   ACK_MS, s.expired_leases);
	shmq_consumer_close(c);
	shmq_producer_close(p);
}

int main(void)
{
	struct shmq_topic_params tp;

	tu_init(60);
	plan(7);
	tu_make_dir("reap", dir, sizeof dir);
	memset(&tp, 0, sizeof tp);
	tp.partitions = 1;
	tp.ring_bytes = SHMQ_RING_MIN;
	tp.full_policy = SHMQ_FULL_BLOCK;
	tp.numa_node = -1;
	tp.mode = 0600;
	tp.stall_timeout_ms = STALL_MS;
	tu_topic_direct(dir, "reap", &tp, &map);
	cl = tu_open(dir);

	test_first_sighting();
	test_stall();
	test_delivery();
	test_ack_timeout();

	shmq_close(cl);
	tu_cleanup(dir);
	return tap_done();
}
