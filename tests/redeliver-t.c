/*
 * redeliver-t.c - a SHARED group delivers again what a dead member held.
 *
 * A member process takes a message and is SIGKILLed before it releases it
 * (before its next poll).  shmqd notices the death and puts the message
 * back; another member of the group receives it, with delivery_count 2,
 * while every other message is delivered once, with delivery_count 1.
 * A member's nack gives a message back the same way (shared) or moves the
 * partition back to it (partitioned).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define ROUNDS 5
#define BATCH  10

static char dir[256];

int main(void)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	shmq_client_t *cl;
	shmq_producer_t *p;
	shmq_consumer_t *b;
	int round, seen_twice_ok = 0, once_ok = 0, counts_ok = 0;
	uint64_t worst = 0;
	pid_t d;

	tu_init(60);
	plan(8);
	tu_make_dir("redeliver", dir, sizeof(dir));
	d = tu_shmqd_start(dir, NULL);
	if (shmq_open(dir, NULL, &cl))
		bail("open: %s", shmq_errdetail());
	to.ring_bytes = 64 << 10;
	to.full_policy = SHMQ_FULL_BLOCK;
	to.spill = SHMQ_SPILL_OFF;
	if (shmq_topic_create(cl, "work", &to) || shmq_producer_open(cl, "work", NULL, &p))
		bail("create: %s", shmq_errdetail());
	b = tu_shared_member(cl, "work", "w");

	for (round = 0; round < ROUNDS; round++) {
		int seen[BATCH], i, rc, held = -1, bad = 0, badcount = 0;
		struct shmq_msg m;
		uint64_t t0;
		pid_t a;

		for (i = 0; i < BATCH; i++) {
			uint32_t v = (uint32_t)(round * BATCH + i);

			if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL) < 0)
				bail("send");
		}
		{
			uint32_t v;

			a = tu_fork_holder(dir, "work", "w", &v);
			if (v != UINT32_MAX)
				held = (int)(v - (uint32_t)(round * BATCH));
		}
		kill(a, SIGKILL);
		tu_wait_child(a, 2000);
		t0 = tu_now_ns();

		memset(seen, 0, sizeof(seen));
		while ((rc = shmq_consumer_poll(b, &m, 500)) == 0) {
			uint32_t v;

			memcpy(&v, m.value, sizeof(v));
			i = (int)(v - (uint32_t)(round * BATCH));
			if (i < 0 || i >= BATCH || m.value_len != sizeof(v)) {
				bad++;
				continue;
			}
			seen[i]++;
			if (m.delivery_count != (i == held ? 2u : 1u)) {
				diag("round %d: message %d came with delivery_count %u (held %d)",
				     round, i, m.delivery_count, held);
				badcount++;
			}
			if (i == held && tu_now_ns() - t0 > worst)
				worst = tu_now_ns() - t0;
		}
		for (i = 0; i < BATCH; i++)
			if (seen[i] != 1) {
				diag("round %d: message %d seen %d times (held %d)", round, i,
				     seen[i], held);
				bad++;
			}
		if (held >= 0 && seen[held] == 1)
			seen_twice_ok++;
		if (!bad)
			once_ok++;
		if (!badcount)
			counts_ok++;
	}
	/* nack: the message comes back, its count one higher each time. */
	{
		struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
		shmq_consumer_t *n;
		struct shmq_msg m;
		uint32_t v, first = 0, got[4] = { 0 }, cnt[4] = { 0 };
		int i, rc, okn = 1;

		o.from = SHMQ_FROM_LATEST;
		if (shmq_consumer_open(cl, "work", "nacker", &o, &n))
			bail("nacker: %s", shmq_errdetail());
		for (v = 1000; v < 1002; v++)
			if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL) < 0)
				bail("send");
		for (i = 0; i < 4; i++) {
			rc = shmq_consumer_poll(n, &m, 1000);
			if (rc) {
				okn = 0;
				break;
			}
			memcpy(&got[i], m.value, sizeof(v));
			cnt[i] = m.delivery_count;
			if (i == 0)
				first = got[0];
			if (i < 2 && shmq_consumer_nack(n) != 0)
				okn = 0;
		}
		ok(okn && first == 1000 && got[1] == 1000 && got[2] == 1000 && got[3] == 1001 &&
		   cnt[0] == 1 && cnt[1] == 2 && cnt[2] == 3 && cnt[3] == 1,
		   "nack in a shared group: the message comes back with delivery_count 2, 3, then the next one (%u/%u %u/%u %u/%u %u/%u)",
		   got[0], cnt[0], got[1], cnt[1], got[2], cnt[2], got[3], cnt[3]);
		shmq_consumer_close(n);

		o.mode = SHMQ_GROUP_PARTITIONED;
		if (shmq_consumer_open(cl, "work", "pnacker", &o, &n))
			bail("pnacker: %s", shmq_errdetail());
		v = 2000;
		if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL) < 0)
			bail("send");
		rc = shmq_consumer_poll(n, &m, 1000);
		if (rc == 0)
			rc = shmq_consumer_nack(n);
		if (rc == 0)
			rc = shmq_consumer_poll(n, &m, 1000);
		if (rc == 0)
			memcpy(&v, m.value, sizeof(v));
		ok(rc == 0 && v == 2000, "nack in a partitioned group: the same message comes next");
		is_int(shmq_consumer_nack(n) == 0 ? shmq_consumer_nack(n) : -1, -EINVAL,
		       "nack with nothing held: -EINVAL");
		shmq_consumer_close(n);
	}

	/* Dead letters: given back too often, a message goes to the DLQ. */
	{
		struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
		struct shmq_topic_opts dto = SHMQ_TOPIC_OPTS_INIT;
		struct shmq_dead_letter dl;
		shmq_consumer_t *n, *r;
		struct shmq_msg m;
		const char *topic = NULL;
		const void *val = NULL;
		size_t vlen = 0;
		uint64_t off = 0;
		uint32_t v = 3000, got = 0, counts[3] = { 0 };
		int i, rc = 0;

		dto.ring_bytes = 64 << 10;
		if (shmq_topic_create(cl, "work.dlq", &dto))
			bail("create dlq: %s", shmq_errdetail());
		o.from = SHMQ_FROM_LATEST;
		o.max_deliveries = 2;
		o.dead_letter_topic = "work.dlq";
		if (shmq_consumer_open(cl, "work", "dl", &o, &n))
			bail("dl: %s", shmq_errdetail());
		if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, &off) < 0)
			bail("send");
		for (i = 0; i < 2 && rc == 0; i++) {
			rc = shmq_consumer_poll(n, &m, 1000);
			if (rc == 0) {
				counts[i] = m.delivery_count;
				rc = shmq_consumer_nack(n);
			}
		}
		v = 3001;
		if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL) < 0)
			bail("send");
		rc = shmq_consumer_poll(n, &m, 1000);
		if (rc == 0)
			memcpy(&got, m.value, sizeof(got));
		ok(rc == 0 && counts[0] == 1 && counts[1] == 2 && got == 3001,
		   "max_deliveries 2: after two deliveries the message is not delivered a third time (next: %u)",
		   got);
		shmq_consumer_close(n);

		o.max_deliveries = 0;
		o.from = SHMQ_FROM_EARLIEST;
		if (shmq_consumer_open(cl, "work.dlq", "dlr", &o, &r))
			bail("dlr: %s", shmq_errdetail());
		rc = shmq_consumer_poll(r, &m, 1000);
		if (rc == 0)
			rc = shmq_dead_letter_parse(&m, &dl, &topic, &val, &vlen);
		if (rc == 0 && vlen == sizeof(v))
			memcpy(&v, val, sizeof(v));
		ok(rc == 0 && dl.partition == 0 && dl.offset == off && dl.delivery_count == 2 &&
		   dl.topic_len == 4 && !memcmp(topic, "work", 4) && vlen == sizeof(v) &&
		   v == 3000,
		   "it is in the dead-letter topic with its topic, partition, offset, count and value");
		shmq_consumer_close(r);
	}

	ok(seen_twice_ok == ROUNDS,
	   "the message a killed member held went to the other member, %d of %d rounds (slowest %.1f ms)",
	   seen_twice_ok, ROUNDS, (double)worst / 1e6);
	ok(once_ok == ROUNDS, "every other message exactly once, every round");
	ok(counts_ok == ROUNDS, "delivery_count is 2 for the redelivered message and 1 for the others");
	shmq_consumer_close(b);
	shmq_producer_close(p);
	shmq_close(cl);
	tu_shmqd_stop(d, 0);
	tu_cleanup(dir);
	return tap_done();
}
