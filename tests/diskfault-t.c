/*
 * diskfault-t.c - disk faults while shmqd spills.
 *
 * shmqd is started with --fault (fault injection into the spill module's
 * file calls; SIGUSR1 disarms it):
 *
 * full   every spill write fails with ENOSPC: producers are held back
 *        (sends time out with -EAGAIN, nothing is acknowledged and then
 *        lost), stat shows the error; when the disk has room again
 *        (SIGUSR1) spilling resumes and the stopped group receives every
 *        acknowledged message, once, in order.
 * eio    a journal (spill=always) whose fdatasync fails with EIO: the
 *        durable acknowledgement reports -EIO rather than success, the
 *        daemon reopens (and re-validates) the log, and once syncs work
 *        again the acknowledgement comes and every message arrives.
 * roll   spill=overflow with 64 KiB segments, and the fdatasync of the
 *        first segment rolled away from fails with EIO: it runs in
 *        shmqd's syncer thread, and still it is reported (stat), the log
 *        is reopened and re-validated, and the stopped group receives
 *        every message once, in order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define RING (64u << 10)

static char dir[256];
static shmq_client_t *cl;

static void create(const char *name, int spill)
{
	struct shmq_topic_opts o = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	o.partitions = 1;
	o.ring_bytes = RING;
	o.spill = spill;
	rc = shmq_topic_create(cl, name, &o);
	if (rc)
		bail("create %s: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
}

/* A value for seq: 100 bytes, seq in front. */
static int send_seq(shmq_producer_t *p, uint32_t seq, int timeout_ms)
{
	uint8_t buf[100];

	memset(buf, (int)(seq & 0xff), sizeof(buf));
	memcpy(buf, &seq, sizeof(seq));
	return shmq_send(p, 0, NULL, 0, buf, sizeof(buf), timeout_ms, NULL);
}

/* Receive everything; count order violations and damage. */
static uint32_t drain(shmq_consumer_t *c, uint32_t *bad)
{
	struct shmq_msg m;
	uint32_t next = 0, seq;
	int rc;

	while ((rc = shmq_consumer_poll(c, &m, 500)) != -EAGAIN) {
		const uint8_t *v = m.value;
		size_t i;

		if (rc) {
			diag("poll: %s (%s)", shmq_strerror(rc), shmq_errdetail());
			(*bad)++;
			if (rc != SHMQ_ECORRUPT && rc != SHMQ_EGONE)
				break;
			continue;
		}
		memcpy(&seq, v, sizeof(seq));
		for (i = sizeof(seq); i < m.value_len; i++)
			if (v[i] != (uint8_t)(seq & 0xff))
				break;
		if (m.value_len != 100 || i != m.value_len || seq != next) {
			if ((*bad)++ < 5)
				diag("got seq %u (expected %u), %zu bytes", seq, next, m.value_len);
		}
		next = seq + 1;
	}
	return next;
}

static int spill_error(const char *topic)
{
	struct shmq_topic_stat *st;
	int e;

	if (shmq_topic_stat(cl, topic, &st))
		return 0;
	e = st->partitions[0].spill_error;
	shmq_topic_stat_free(st);
	return e;
}

static void test_full(void)
{
	static const char *const fault[] = { "--fault", "write:1:ENOSPC:sticky", NULL };
	shmq_consumer_t *slow;
	shmq_producer_t *p;
	uint32_t seq = 0, bad = 0, got;
	pid_t d;
	int rc = 0, i;

	d = tu_shmqd_start(dir, fault);
	create("full", SHMQ_SPILL_OVERFLOW);
	if (shmq_consumer_open(cl, "full", "slow", NULL, &slow) ||
	    shmq_producer_open(cl, "full", NULL, &p))
		bail("open: %s", shmq_errdetail());
	/* Fill the ring; with no disk, the next sends must wait and give up. */
	while (seq < 100000 && (rc = send_seq(p, seq, 300)) >= 0)
		seq++;
	is_int(rc, -EAGAIN, "full: with the disk full, a send waits and gives up (-EAGAIN) after %u messages",
	       seq);
	ok(seq < 2 * RING / 100, "full: nothing beyond the ring was acknowledged (%u messages)", seq);
	is_int(spill_error("full"), -ENOSPC, "full: stat shows the spill error (-ENOSPC)");

	kill(d, SIGUSR1); /* room again */
	rc = send_seq(p, seq, 5000);
	ok(rc >= 0, "full: when space returns, spilling resumes and the send goes through (%s)",
	   rc < 0 ? shmq_strerror(rc) : "ok");
	if (rc >= 0)
		seq++;
	for (i = 0; i < 4000 && rc >= 0; i++) {
		rc = send_seq(p, seq, 5000);
		if (rc >= 0)
			seq++;
	}
	got = drain(slow, &bad);
	ok(got == seq && bad == 0,
	   "full: the stopped group got all %u acknowledged messages once, in order (%u, %u bad)",
	   seq, got, bad);
	is_int(spill_error("full"), 0, "full: the spill error is cleared");
	shmq_producer_close(p);
	shmq_consumer_close(slow);
	shmq_topic_delete(cl, "full");
	tu_shmqd_stop(d, 0);
}

static void test_eio(void)
{
	static const char *const fault[] = { "--fault", "fdatasync:3:EIO:sticky", NULL };
	shmq_consumer_t *g;
	shmq_producer_t *p;
	uint32_t seq = 0, bad = 0, got;
	pid_t d;
	int rc, i;

	d = tu_shmqd_start(dir, fault);
	create("eio", SHMQ_SPILL_ALWAYS);
	if (shmq_consumer_open(cl, "eio", "g", NULL, &g) ||
	    shmq_producer_open(cl, "eio", NULL, &p))
		bail("open: %s", shmq_errdetail());
	for (i = 0; i < 200; i++, seq++)
		if (send_seq(p, seq, 1000) < 0)
			bail("send %u", seq);
	/* The syncs fail from the third on: no durable acknowledgement. */
	for (i = 0; i < 20 && (rc = shmq_producer_flush(p, 2000)) == 0; i++) {
		if (send_seq(p, seq, 1000) < 0)
			bail("send %u", seq);
		seq++;
	}
	is_int(rc, -EIO, "eio: a failed fdatasync is reported to the durable acknowledgement (-EIO)");
	kill(d, SIGUSR1);
	rc = shmq_producer_flush(p, 5000);
	is_int(rc, 0, "eio: once syncs work again the log is reopened and the acknowledgement comes");
	got = drain(g, &bad);
	ok(got == seq && bad == 0, "eio: every message arrived once, in order (%u of %u, %u bad)",
	   got, seq, bad);
	shmq_producer_close(p);
	shmq_consumer_close(g);
	shmq_topic_delete(cl, "eio");
	tu_shmqd_stop(d, 0);
}

static void test_roll(void)
{
	/* fdatasync 1 is the new log's; 2 the first roll's, in the syncer. */
	static const char *const args[] = { "--fault", "fdatasync:2:EIO",
					    "--spill-segment-bytes", "65536", NULL };
	shmq_consumer_t *slow;
	shmq_producer_t *p;
	uint32_t seq = 0, bad = 0, got;
	int rc = 0, seen = 0, e = 0, i;
	pid_t d;

	d = tu_shmqd_start(dir, args);
	create("roll", SHMQ_SPILL_OVERFLOW);
	if (shmq_consumer_open(cl, "roll", "slow", NULL, &slow) ||
	    shmq_producer_open(cl, "roll", NULL, &p))
		bail("open: %s", shmq_errdetail());
	/*
	 * 64 KiB segments of 128-byte frames: a roll every 500 messages.
	 * The error shows while the log waits to be reopened (a second),
	 * and the producer waits for room meanwhile: look while it waits.
	 */
	for (i = 0; seq < 20000 && !seen && i < 1000;) {
		rc = send_seq(p, seq, 10);
		if (rc >= 0)
			seq++;
		else if (rc == -EAGAIN)
			i++; /* at most 1000 waits of 10 ms */
		else
			break;
		if ((rc < 0 || seq % 50 == 0) && spill_error("roll") == -EIO)
			seen = 1;
	}
	ok(seen, "roll: the syncer thread's failed fdatasync of a rolled segment is reported (-EIO in stat, after %u messages; send %s)",
	   seq, rc < 0 ? shmq_strerror(rc) : "ok");
	for (i = 0; i < 4000 && rc >= 0; i++) {
		rc = send_seq(p, seq, 5000);
		if (rc >= 0)
			seq++;
	}
	for (i = 0; i < 500 && (e = spill_error("roll")) != 0; i++)
		usleep(10000);
	is_int(e, 0, "roll: the log was reopened and spilling works again (%u messages sent)", seq);
	got = drain(slow, &bad);
	ok(got == seq && bad == 0,
	   "roll: the stopped group got all %u messages once, in order (%u, %u bad)", seq, got, bad);
	shmq_producer_close(p);
	shmq_consumer_close(slow);
	shmq_topic_delete(cl, "roll");
	tu_shmqd_stop(d, 0);
}

int main(void)
{
	tu_init(120);
	plan(12);
	tu_make_dir("diskfault", dir, sizeof(dir));
	cl = tu_open(dir);
	test_full();
	test_eio();
	test_roll();
	shmq_close(cl);
	tu_cleanup(dir);
	return tap_done();
}
