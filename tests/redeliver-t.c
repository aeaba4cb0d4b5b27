/*
 * redeliver-t.c - a SHARED group delivers again what a dead member held.
 *
 * A member process takes a message and is SIGKILLed before it releases it
 * (before its next poll).  shmqd notices the death and puts the message
 * back; another member of the group receives it, with delivery_count 2,
 * while every other message is delivered once, with delivery_count 1.
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

static shmq_consumer_t *member(shmq_client_t *cl)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;

	o.mode = SHMQ_GROUP_SHARED;
	o.from = SHMQ_FROM_EARLIEST;
	if (shmq_consumer_open(cl, "work", "w", &o, &c))
		bail("member: %s", shmq_errdetail());
	return c;
}

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
	plan(3);
	tu_make_dir("redeliver", dir, sizeof(dir));
	d = tu_shmqd_start(dir, NULL);
	if (shmq_open(dir, NULL, &cl))
		bail("open: %s", shmq_errdetail());
	to.ring_bytes = 64 << 10;
	to.full_policy = SHMQ_FULL_BLOCK;
	to.spill = SHMQ_SPILL_OFF;
	if (shmq_topic_create(cl, "work", &to) || shmq_producer_open(cl, "work", NULL, &p))
		bail("create: %s", shmq_errdetail());
	b = member(cl);

	for (round = 0; round < ROUNDS; round++) {
		int fds[2], seen[BATCH], i, rc, held = -1, bad = 0, badcount = 0;
		struct shmq_msg m;
		uint64_t t0;
		pid_t a;

		for (i = 0; i < BATCH; i++) {
			uint32_t v = (uint32_t)(round * BATCH + i);

			if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL) < 0)
				bail("send");
		}
		if (pipe(fds))
			bail("pipe");
		a = fork();
		if (a == 0) {
			shmq_client_t *c2;
			shmq_consumer_t *ac;
			uint32_t v;

			tap_child();
			if (shmq_open(dir, NULL, &c2))
				_exit(2);
			ac = member(c2);
			if (shmq_consumer_poll(ac, &m, 2000) || m.value_len != sizeof(v))
				_exit(3);
			memcpy(&v, m.value, sizeof(v));
			/* Held, never released: tell the parent, then wait to die. */
			if (write(fds[1], &v, sizeof(v)) != sizeof(v))
				_exit(4);
			pause();
			_exit(5);
		}
		close(fds[1]);
		{
			uint32_t v;

			if (read(fds[0], &v, sizeof(v)) == sizeof(v))
				held = (int)(v - (uint32_t)(round * BATCH));
		}
		close(fds[0]);
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
