/*
 * clock-t.c - message timestamps from the TSC model (libshmq/clock.c).
 *
 * A producer's timestamps come from the TSC between reads of the real
 * clock.  Each must still lie where the message was sent: at or after the
 * realtime clock read just before the send and at or before the one just
 * after it, give or take the model's error (we allow 20 us, far above the
 * sub-microsecond drift the design expects, so the check is about the
 * model being right, not about speed).  And one handle's timestamps never
 * go backwards.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define SLACK_NS 20000ull
#define N 3000

static uint64_t realtime(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

int main(void)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	static uint64_t before[N], after[N];
	struct shmq_fastclock fc;
	shmq_client_t *cl;
	shmq_producer_t *p;
	shmq_consumer_t *c;
	struct shmq_msg m;
	uint64_t last = 0, worst = 0;
	int i, outside = 0, back = 0, got = 0;
	char dir[256];
	pid_t d;

	tu_init(60);
	plan(4);

	/* The model alone, over 20 ms of calls with pauses. */
	shmq__fastclock_init(&fc);
	for (i = 0; i < N; i++) {
		uint64_t a = realtime(), t = shmq__fastclock_ns(&fc), b = realtime();

		if (t + SLACK_NS < a || t > b + SLACK_NS) {
			if (outside++ < 3)
				diag("call %d: clock %llu, model %llu, clock %llu (rate %llu, base %llu/%llu)",
				     i, (unsigned long long)a, (unsigned long long)t,
				     (unsigned long long)b, (unsigned long long)fc.rate,
				     (unsigned long long)fc.base_tsc, (unsigned long long)fc.base_ns);
		}
		if (t < last)
			back++;
		if (t > b && t - b > worst)
			worst = t - b;
		if (a > t && a - t > worst)
			worst = a - t;
		last = t;
		if (i % 100 == 0)
			usleep(500);
	}
	diag("the model is %s; worst distance from the real clock %.3f us",
	     fc.tsc ? "on (TSC)" : "off (clock_gettime every call)", (double)worst / 1e3);
	is_int(outside, 0, "every timestamp of the model lies where it was taken");
	is_int(back, 0, "and none goes backwards");

	/* End to end: what consumers see in msg.timestamp_ns. */
	tu_make_dir("clock", dir, sizeof(dir));
	d = tu_shmqd_start(dir, NULL);
	if (shmq_open(dir, NULL, &cl))
		bail("open: %s", shmq_errdetail());
	to.ring_bytes = 1 << 20;
	to.spill = SHMQ_SPILL_OFF;
	to.full_policy = SHMQ_FULL_BLOCK;
	co.from = SHMQ_FROM_EARLIEST;
	if (shmq_topic_create(cl, "t", &to) || shmq_producer_open(cl, "t", NULL, &p) ||
	    shmq_consumer_open(cl, "t", "g", &co, &c))
		bail("setup: %s", shmq_errdetail());
	for (i = 0; i < N; i++) {
		uint32_t v = (uint32_t)i;

		before[i] = realtime();
		if (shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL) < 0)
			bail("send: %s", shmq_errdetail());
		after[i] = realtime();
		if (i % 200 == 0)
			usleep(1000);
	}
	outside = 0;
	last = 0;
	back = 0;
	while (got < N && shmq_consumer_poll(c, &m, 1000) == 0) {
		uint32_t v;

		memcpy(&v, m.value, sizeof(v));
		if (v >= N || m.timestamp_ns + SLACK_NS < before[v] ||
		    m.timestamp_ns > after[v] + SLACK_NS)
			outside++;
		if (m.timestamp_ns < last)
			back++;
		last = m.timestamp_ns;
		got++;
	}
	ok(got == N && outside == 0,
	   "each of %d messages carries a timestamp taken while it was sent (%d outside)",
	   got, outside);
	is_int(back, 0, "one producer's timestamps never go backwards");
	shmq_consumer_close(c);
	shmq_producer_close(p);
	shmq_close(cl);
	tu_shmqd_stop(d, 0);
	tu_cleanup(dir);
	return tap_done();
}
