/*
 * policy-t.c - what happens when a ring is full, and how waiting behaves.
 *
 *   fail     a FAIL topic gives -EAGAIN at once when a group that does not
 *            consume holds the ring, whatever the timeout; every message
 *            whose send succeeded comes back, whole and in order, once the
 *            group drains, and then the producer can publish again.
 *   block    a BLOCK topic: timeout 0 gives -EAGAIN at once, 200 ms gives
 *            -EAGAIN after about that long, and a producer waiting for ever
 *            (in a child) wakes promptly when a consumer frees space; its
 *            message comes after all the others.
 *   wake     a consumer sleeping in poll(-1) wakes when a message is
 *            published.
 *   idle     a consumer waiting 2 s on an empty topic uses almost no CPU;
 *            a busy-polling one is measured and reported, not judged.
 *   deleted  shmq_topic_delete() wakes a consumer sleeping in poll with
 *            SHMQ_EDELETED, and the producer's next send fails the same way.
 *
 * Timing is never asserted tightly: a wait must have lasted at least a
 * good part of its timeout, and a wake must come within seconds, so that a
 * loaded CI machine (or a sanitizer build) does not make the test flaky.
 * Every wait is bounded; children are killed if they overstay.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define RING	  ((uint64_t)SHMQ_RING_MIN)
#define VALUE_LEN 1000
#define MS	  1000000ull

static char dir[256];
static shmq_client_t *cl;

/* ------------------------------------------------------------------------
 * Messages that prove themselves: who sent them, their sequence number, and
 * a checksum over the rest.
 */
#define MSG_MAGIC 0x706f6c69u /* "poli" */

/* Is this one of ours, intact?  Fills producer and seq. */
static bool check_msg(const struct shmq_msg *m, uint32_t *producer, uint64_t *seq)
{
	return tu_msg_check(m, MSG_MAGIC, producer, seq);
}

static int send_msg(shmq_producer_t *p, uint32_t producer, uint64_t seq, int timeout_ms)
{
	uint8_t buf[VALUE_LEN];

	tu_msg_make(buf, sizeof buf, MSG_MAGIC, producer, seq);
	return shmq_send(p, 0, NULL, 0, buf, sizeof buf, timeout_ms, NULL);
}

static double ms_since(uint64_t t0)
{
	return (double)(tu_now_ns() - t0) / 1e6;
}

/* ------------------------------------------------------------------------
 * Plumbing
 */

static shmq_consumer_t *consumer(shmq_client_t *c, const char *topic,
				 const char *group, unsigned flags)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *cons;
	int rc;

	o.from = SHMQ_FROM_EARLIEST;
	o.flags = flags;
	rc = shmq_consumer_open(c, topic, group, &o, &cons);
	if (rc)
		bail("consumer open %s/%s: %s (%s)", topic, group, shmq_strerror(rc),
		     shmq_errdetail());
	return cons;
}

/* Read one byte from fd, waiting at most timeout_ms: did it come? */
static bool read_byte(int fd, int timeout_ms)
{
	char b;

	return tu_read_full(fd, &b, 1, timeout_ms);
}

static bool still_running(pid_t pid)
{
	int st;

	return waitpid(pid, &st, WNOHANG) == 0;
}

static bool exited_zero(int st)
{
	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void describe(const char *who, int st)
{
	if (st == -1)
		diag("%s: did not exit in time and was killed", who);
	else if (WIFSIGNALED(st))
		diag("%s: killed by signal %d", who, WTERMSIG(st));
	else if (WEXITSTATUS(st))
		diag("%s: exit status %d", who, WEXITSTATUS(st));
}

/*
 * Poll c with timeout 0 until it is empty, checking that the messages are
 * producer 1's seq first..first+n-1 in order.  Returns how many came.
 */
static int drain_in_order(shmq_consumer_t *c, uint64_t first, int max, int *bad)
{
	struct shmq_msg m;
	int got = 0, rc;

	while (got < max && (rc = shmq_consumer_poll(c, &m, 0)) == 0) {
		uint32_t prod;
		uint64_t seq;

		if (!check_msg(&m, &prod, &seq) || prod != 1 || seq != first + (uint64_t)got) {
			if ((*bad)++ < 5)
				diag("unexpected message at offset %llu",
				     (unsigned long long)m.offset);
		}
		got++;
	}
	shmq_consumer_release(c);
	return got;
}

/* ------------------------------------------------------------------------
 * fail
 */
static void test_fail(void)
{
	shmq_producer_t *p;
	shmq_consumer_t *c;
	struct shmq_msg m;
	uint64_t t0;
	double el0, el1;
	int n = 0, rc = 0, bad = 0, got, rc0, rc1;
	uint32_t prod;
	uint64_t seq;

	tu_topic_create(cl, "fail", RING, SHMQ_FULL_FAIL, 0);
	c = consumer(cl, "fail", "hold", 0);
	p = tu_producer(cl, "fail");
	while (n < 1000 && (rc = send_msg(p, 1, (uint64_t)n, 0)) >= 0)
		n++;
	ok(rc == -EAGAIN && n > 0, "fail: the held ring fills after %d messages (then %s)",
	   n, shmq_strerror(rc));

	t0 = tu_now_ns();
	rc0 = send_msg(p, 1, (uint64_t)n, 0);
	el0 = ms_since(t0);
	t0 = tu_now_ns();
	rc1 = send_msg(p, 1, (uint64_t)n, 1000);
	el1 = ms_since(t0);
	ok(rc0 == -EAGAIN && rc1 == -EAGAIN && el0 < 500 && el1 < 500,
	   "fail: -EAGAIN at once, timeout or not (%.1f ms, %.1f ms with 1000 ms)",
	   el0, el1);

	got = drain_in_order(c, 0, n + 10, &bad);
	ok(got == n && bad == 0,
	   "fail: all %d acknowledged messages come back in order and intact (%d, %d bad)",
	   n, got, bad);

	rc = send_msg(p, 1, (uint64_t)n, 0);
	rc1 = shmq_consumer_poll(c, &m, 1000);
	ok(rc >= 0 && rc1 == 0 && check_msg(&m, &prod, &seq) && prod == 1 &&
	   seq == (uint64_t)n,
	   "fail: after the drain the producer publishes again (send %d, poll %d)", rc, rc1);
	shmq_consumer_release(c);
	shmq_producer_close(p);
	shmq_consumer_close(c);
}

/* ------------------------------------------------------------------------
 * block
 */
static void test_block(void)
{
	shmq_producer_t *p;
	shmq_consumer_t *c;
	struct shmq_msg m;
	uint64_t t0;
	double el;
	int n = 0, rc = 0, bad = 0, got, i, st, fds[2];
	pid_t pid;

	tu_topic_create(cl, "block", RING, SHMQ_FULL_BLOCK, 0);
	c = consumer(cl, "block", "hold", 0);
	p = tu_producer(cl, "block");
	while (n < 1000 && (rc = send_msg(p, 1, (uint64_t)n, 0)) >= 0)
		n++;
	t0 = tu_now_ns();
	rc = send_msg(p, 1, (uint64_t)n, 0);
	el = ms_since(t0);
	ok(rc == -EAGAIN && n > 0 && el < 500,
	   "block: full after %d messages; timeout 0 gives %s at once (%.1f ms)", n,
	   shmq_strerror(rc), el);

	t0 = tu_now_ns();
	rc = send_msg(p, 1, (uint64_t)n, 200);
	el = ms_since(t0);
	ok(rc == -EAGAIN && el >= 150 && el < 5000,
	   "block: timeout 200 ms gives %s after %.0f ms", shmq_strerror(rc), el);

	/* A producer that waits for ever, in a child. */
	pid = tu_fork(fds);
	if (pid == 0) {
		shmq_client_t *cc = tu_child_client(dir, 0);
		shmq_producer_t *cp = tu_producer(cc, "block");

		if (write(fds[1], "r", 1) != 1)
			_exit(91);
		rc = send_msg(cp, 2, 0, -1);
		if (rc < 0)
			fprintf(stderr, "# blocked child: send gave %s\n", shmq_strerror(rc));
		shmq_producer_close(cp);
		shmq_close(cc);
		_exit(rc >= 0 ? 0 : 1);
	}
	if (!read_byte(fds[0], 5000))
		diag("block: the child did not get ready");
	usleep(300 * 1000);
	ok(still_running(pid), "block: a producer with timeout -1 waits while the ring is full");

	/* Free about half the ring. */
	for (i = 0; i < n / 2; i++) {
		uint32_t prod;
		uint64_t seq;

		if (shmq_consumer_poll(c, &m, 0) != 0)
			break;
		if (!check_msg(&m, &prod, &seq) || prod != 1 || seq != (uint64_t)i)
			bad++;
	}
	t0 = tu_now_ns();
	shmq_consumer_release(c);
	st = tu_wait_child(pid, 2000);
	el = ms_since(t0);
	describe("blocked child", st);
	ok(exited_zero(st), "block: the waiting producer completes when space is freed (%.0f ms)",
	   el);
	close(fds[0]);

	/* The rest of producer 1's messages, then the child's. */
	got = drain_in_order(c, (uint64_t)i, n - i, &bad);
	rc = shmq_consumer_poll(c, &m, 1000);
	{
		uint32_t prod = 0;
		uint64_t seq = 1;

		ok(got == n - i && bad == 0 && rc == 0 && check_msg(&m, &prod, &seq) &&
		   prod == 2 && seq == 0,
		   "block: all %d messages in order, then the blocked producer's (%d bad, poll %s)",
		   n, bad, shmq_strerror(rc));
	}
	shmq_consumer_release(c);
	shmq_producer_close(p);
	shmq_consumer_close(c);
}

/* ------------------------------------------------------------------------
 * wake
 */
static void test_wake(void)
{
	shmq_producer_t *p;
	uint64_t t0;
	double el;
	int st, fds[2];
	pid_t pid;

	tu_topic_create(cl, "wake", RING, SHMQ_FULL_BLOCK, 0);
	p = tu_producer(cl, "wake");
	pid = tu_fork(fds);
	if (pid == 0) {
		shmq_client_t *cc = tu_child_client(dir, 0);
		shmq_consumer_t *c = consumer(cc, "wake", "w", 0);
		struct shmq_msg m;
		uint32_t prod = 0;
		uint64_t seq = 0;
		int rc;

		if (write(fds[1], "r", 1) != 1)
			_exit(91);
		rc = shmq_consumer_poll(c, &m, -1);
		if (rc != 0) {
			fprintf(stderr, "# waking child: poll gave %s\n", shmq_strerror(rc));
			_exit(1);
		}
		if (!check_msg(&m, &prod, &seq) || prod != 3 || seq != 7)
			_exit(2);
		shmq_consumer_close(c);
		shmq_close(cc);
		_exit(0);
	}
	if (!read_byte(fds[0], 5000))
		diag("wake: the child did not get ready");
	usleep(200 * 1000);
	ok(still_running(pid), "wake: a consumer in poll(-1) waits on an empty topic");
	t0 = tu_now_ns();
	if (send_msg(p, 3, 7, 0) < 0)
		diag("wake: send failed");
	st = tu_wait_child(pid, 2000);
	el = ms_since(t0);
	describe("waiting consumer", st);
	ok(exited_zero(st), "wake: it wakes with the message when one is published (%.1f ms)",
	   el);
	close(fds[0]);
	shmq_producer_close(p);
}

/* ------------------------------------------------------------------------
 * idle and busy
 */
struct idle_result {
	int rc;
	uint64_t wall_ns;
	uint64_t cpu_ns;
};

/* A child that polls an empty topic for ms milliseconds and reports. */
static int idle_child(const char *group, unsigned flags, int ms, struct idle_result *res)
{
	int st, fds[2];
	pid_t pid;

	pid = tu_fork(fds);
	if (pid == 0) {
		shmq_client_t *cc = tu_child_client(dir, 0);
		shmq_consumer_t *c = consumer(cc, "idle", group, flags);
		struct idle_result r;
		struct shmq_msg m;
		uint64_t cpu0, t0;

		cpu0 = tu_cpu_ns(RUSAGE_SELF);
		t0 = tu_now_ns();
		r.rc = shmq_consumer_poll(c, &m, ms);
		r.wall_ns = tu_now_ns() - t0;
		r.cpu_ns = tu_cpu_ns(RUSAGE_SELF) - cpu0;
		if (write(fds[1], &r, sizeof r) != sizeof r)
			_exit(91);
		shmq_consumer_close(c);
		shmq_close(cc);
		_exit(0);
	}
	memset(res, 0, sizeof *res);
	res->rc = 1;
	st = tu_wait_child(pid, ms + 5000);
	if (read(fds[0], res, sizeof *res) != sizeof *res)
		res->rc = 1;
	close(fds[0]);
	describe(group, st);
	return st;
}

static void test_idle(void)
{
	struct idle_result r;
	int st;

	tu_topic_create(cl, "idle", RING, SHMQ_FULL_BLOCK, 0);

	st = idle_child("sleeper", 0, 2000, &r);
	ok(exited_zero(st) && r.rc == -EAGAIN && r.wall_ns >= 1500 * MS &&
	   r.cpu_ns < 50 * MS,
	   "idle: a consumer waiting %.0f ms on an empty topic used %.2f ms of CPU (%s)",
	   (double)r.wall_ns / 1e6, (double)r.cpu_ns / 1e6, shmq_strerror(r.rc));

	st = idle_child("spinner", SHMQ_CONSUMER_BUSY_POLL, 500, &r);
	ok(exited_zero(st) && r.rc == -EAGAIN,
	   "busy: a busy-polling consumer times out after %.0f ms (%s)",
	   (double)r.wall_ns / 1e6, shmq_strerror(r.rc));
	diag("busy: it used %.0f ms of CPU in %.0f ms (for comparison, not judged)",
	     (double)r.cpu_ns / 1e6, (double)r.wall_ns / 1e6);
}

/* ------------------------------------------------------------------------
 * deleted
 */
static void test_deleted(void)
{
	shmq_producer_t *p;
	uint64_t t0;
	double el;
	int rc, st, fds[2];
	pid_t pid;

	tu_topic_create(cl, "doomed", RING, SHMQ_FULL_BLOCK, 0);
	p = tu_producer(cl, "doomed");
	pid = tu_fork(fds);
	if (pid == 0) {
		shmq_client_t *cc = tu_child_client(dir, 0);
		shmq_consumer_t *c = consumer(cc, "doomed", "d", 0);
		struct shmq_msg m;

		if (write(fds[1], "r", 1) != 1)
			_exit(91);
		rc = shmq_consumer_poll(c, &m, -1);
		if (rc != SHMQ_EDELETED)
			fprintf(stderr, "# doomed child: poll gave %s\n", shmq_strerror(rc));
		shmq_consumer_close(c);
		shmq_close(cc);
		_exit(rc == SHMQ_EDELETED ? 0 : 1);
	}
	if (!read_byte(fds[0], 5000))
		diag("deleted: the child did not get ready");
	usleep(200 * 1000);
	ok(still_running(pid), "deleted: a consumer sleeps in poll(-1)");
	t0 = tu_now_ns();
	rc = shmq_topic_delete(cl, "doomed");
	if (rc)
		diag("delete: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	st = tu_wait_child(pid, 2000);
	el = ms_since(t0);
	describe("sleeping consumer", st);
	ok(rc == 0 && exited_zero(st),
	   "deleted: shmq_topic_delete wakes it with SHMQ_EDELETED (%.1f ms)", el);
	close(fds[0]);
	rc = send_msg(p, 1, 0, 0);
	is_int(rc, SHMQ_EDELETED, "deleted: the producer's next send gives SHMQ_EDELETED");
	shmq_producer_close(p);
}

int main(void)
{
	pid_t shmqd;

	tu_init(120);
	plan(16);
	tu_make_dir("policy", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);

	test_fail();
	test_block();
	test_wake();
	test_idle();
	test_deleted();

	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
	return tap_done();
}
