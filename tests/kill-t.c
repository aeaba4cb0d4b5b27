/*
 * kill-t.c - a producer that dies or stalls between claim and commit.
 *
 * DESIGN.md: "A producer that dies between claim and commit must not wedge
 * the partition: shmqd learns of the death without a long timeout ... and
 * fills the abandoned claim with padding that readers skip.  A producer
 * that is alive but stalled is padded over only after a much longer,
 * configurable timeout, and its late commit then fails with an error."
 *
 * kill   ITERATIONS times, a child producer claims a message, writes none,
 *        half or all of its value (a value that would pass every check if
 *        it were delivered), tells the parent through a pipe and waits; the
 *        parent SIGKILLs it there.  Some claims are made to cross the end
 *        of the ring, so that they include wrap padding, and in the second
 *        half another child keeps publishing throughout.  After each kill
 *        the parent's own producer publishes a message, which must arrive
 *        within a second (the partition flows again), and the topic's
 *        producer count must come back (the dead producer's slot is freed).
 *        No message of a killed producer is ever delivered; every delivered
 *        message checks out (checksum, producer, sequence number in order,
 *        nothing lost).
 *
 * stall  On a topic with stall_timeout_ms = 300, a child claims a message,
 *        fills it and stops itself (SIGSTOP).  A message published after
 *        that claim arrives once the reaper revokes the claim: not before
 *        the timeout, and within seconds.  Then the child continues: its
 *        commit must return SHMQ_EREVOKED (it reports by exit status), the
 *        revoked message is never delivered, and the same producer handle
 *        can publish again.
 *
 * Both need shmqd, which runs the reaper.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define RING	   ((uint64_t)SHMQ_RING_MIN)
#define ITERATIONS 50
#define STALLS	   3
#define STALL_MS   300

/* Producer ids carried in every message. */
#define ID_LIVE	   1u	 /* the parent's producer */
#define ID_BG	   2u	 /* the background child */
#define ID_VICTIM  1000u /* + iteration: killed before commit, never delivered */
#define ID_STALLED 2000u /* + rep: revoked, never delivered */
#define ID_AFTER   3000u /* + rep: what a revoked producer sends next */

static char dir[256];
static shmq_client_t *cl;

/* ------------------------------------------------------------------------
 * Messages that prove themselves.
 */
#define MSG_MAGIC 0x6b696c6cu /* "kill" */

static int send_msg(shmq_producer_t *p, uint32_t producer, uint64_t seq,
		    size_t len, int timeout_ms)
{
	static uint8_t buf[8192];

	tu_msg_make(buf, len, MSG_MAGIC, producer, seq);
	return shmq_send(p, 0, NULL, 0, buf, len, timeout_ms, NULL);
}

/* A killed or revoked claim's message must never be delivered. */
static bool abandoned(uint32_t producer)
{
	return (producer >= ID_VICTIM && producer < ID_VICTIM + 1000) ||
	       (producer >= ID_STALLED && producer < ID_STALLED + 1000);
}

/* ------------------------------------------------------------------------
 * Plumbing
 */
/* The topic's producer count, or -1. */
static int producers(const char *topic)
{
	struct shmq_topic_stat *st;
	int n;

	if (shmq_topic_stat(cl, topic, &st) != 0)
		return -1;
	n = (int)st->producers;
	shmq_topic_stat_free(st);
	return n;
}

/* Wait up to timeout_ms for the producer count to be want.  Returns ms or -1. */
static double await_producers(const char *topic, int want, int timeout_ms)
{
	uint64_t t0 = tu_now_ns(), deadline = t0 + (uint64_t)timeout_ms * 1000000;

	do {
		if (producers(topic) == want)
			return (double)(tu_now_ns() - t0) / 1e6;
		usleep(5000);
	} while (tu_now_ns() < deadline);
	return -1;
}

/* ------------------------------------------------------------------------
 * kill
 */

/* The background producer: publishes until told to stop, then reports. */
static pid_t start_background(int *stop_fd, int *result_fd)
{
	int stop[2], result[2];
	pid_t pid;

	if (pipe(stop) < 0 || pipe(result) < 0)
		bail("pipe: %s", strerror(errno));
	pid = tu_fork(NULL);
	if (pid == 0) {
		shmq_client_t *cc;
		shmq_producer_t *p;
		uint64_t n = 0;
		int rc = 0;

		close(stop[1]);
		close(result[0]);
		cc = tu_child_client(dir, 30);
		alarm(120);
		p = tu_producer(cc, "kill");
		fcntl(stop[0], F_SETFL, O_NONBLOCK);
		for (;;) {
			char b;

			if (read(stop[0], &b, 1) != -1 || errno != EAGAIN)
				break;
			/* Long enough to outlast a stall before the reaper pads it. */
			rc = send_msg(p, ID_BG, n, 48 + n % 300, 5000);
			if (rc < 0) {
				fprintf(stderr, "# background: send %" PRIu64 ": %s\n", n,
					shmq_strerror(rc));
				break;
			}
			n++;
			usleep(1000);
		}
		if (write(result[1], &n, sizeof n) != sizeof n)
			_exit(91);
		shmq_producer_close(p);
		shmq_close(cc);
		_exit(rc < 0 ? 1 : 0);
	}
	close(stop[0]);
	close(result[1]);
	*stop_fd = stop[1];
	*result_fd = result[0];
	return pid;
}

/* A victim: claim, write `stage` of the value, tell the parent, wait to die. */
static void victim(int fd, uint32_t id, size_t value_len, int stage)
{
	static uint8_t buf[16384];
	shmq_client_t *cc = tu_child_client(dir, 30);
	shmq_producer_t *p = tu_producer(cc, "kill");
	struct shmq_claim claim;
	int rc;

	rc = shmq_producer_claim(p, 0, "victim", 6, value_len, 2000, &claim);
	if (rc < 0) {
		fprintf(stderr, "# victim %u: claim: %s\n", id, shmq_strerror(rc));
		_exit(2);
	}
	tu_msg_make(buf, value_len, MSG_MAGIC, id, 0);
	if (stage == 1)
		memcpy(claim.value, buf, value_len / 2);
	else if (stage == 2)
		memcpy(claim.value, buf, value_len);
	/* 'w': the message starts the ring, so the claim wrapped (or the
	 * log was there by chance); the parent counts them. */
	if (write(fd, (claim.offset & (RING - 1)) == 0 ? "w" : "c", 1) != 1)
		_exit(91);
	for (;;)
		pause();
}

/* Publish filler until head is within `room` bytes of the end of the ring. */
static void approach_ring_end(shmq_producer_t *p, struct tu_stream *s, uint64_t *seq,
			      uint64_t room)
{
	int i;

	for (i = 0; i < 200; i++) {
		struct shmq_topic_stat *st;
		uint64_t off;

		if (shmq_topic_stat(cl, "kill", &st) != 0)
			return;
		off = st->partitions[0].next_offset & (RING - 1);
		shmq_topic_stat_free(st);
		if (RING - off <= room && RING - off > 64)
			return;
		if (send_msg(p, ID_LIVE, *seq, RING - off > 4096 ? 4000 : 100, 2000) < 0 ||
		    tu_stream_consume_until(s, ID_LIVE, *seq, 2000) < 0)
			return;
		(*seq)++;
	}
}

static void test_kill(void)
{
	struct tu_stream s;
	shmq_producer_t *p;
	uint64_t seq = 0, bg_sent = 0;
	double lat, max_flow = 0, max_slot = 0;
	int claimed = 0, wrapped = 0, flowed = 0, freed = 0, i, st = 0;
	int stop_fd = -1, result_fd = -1;
	pid_t bg = 0;

	tu_topic_create(cl, "kill", RING, SHMQ_FULL_BLOCK, 0);
	tu_stream_open(&s, cl, "kill", MSG_MAGIC, abandoned);
	p = tu_producer(cl, "kill");

	for (i = 0; i < ITERATIONS; i++) {
		int stage = i % 3, fds[2], want = 1;
		char b;
		size_t value_len = 200 + (size_t)(i * 997) % 6000;
		pid_t pid;

		if (i == ITERATIONS / 2) {
			bg = start_background(&stop_fd, &result_fd);
			if (await_producers("kill", 2, 2000) < 0)
				diag("kill: the background producer did not show up");
		}
		if (bg)
			want = 2;
		if (i % 4 == 3) {
			/* Make the victim's claim cross the end of the ring. */
			approach_ring_end(p, &s, &seq, 3000);
			value_len = 5000;
		}

		pid = tu_fork(fds);
		if (pid == 0)
			victim(fds[1], ID_VICTIM + (uint32_t)i, value_len, stage);
		b = 0;
		tu_read_full(fds[0], &b, 1, 5000);
		switch (b) {
		case 'w':
			wrapped++;
			/* fall through */
		case 'c':
			claimed++;
			break;
		default:
			diag("kill %d: the victim did not claim", i);
		}
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(fds[0]);

		/* The partition must flow again: a later message arrives. */
		if (send_msg(p, ID_LIVE, seq, 100 + (size_t)i, 3000) < 0)
			diag("kill %d: live send failed", i);
		lat = tu_stream_consume_until(&s, ID_LIVE, seq, 3000);
		seq++;
		if (lat >= 0 && lat <= 1000)
			flowed++;
		else
			diag("kill %d (stage %d, value %zu): flowed again after %.0f ms",
			     i, stage, value_len, lat);
		if (lat > max_flow)
			max_flow = lat;

		lat = await_producers("kill", want, 2000);
		if (lat >= 0)
			freed++;
		else
			diag("kill %d: %d producers, want %d", i, producers("kill"), want);
		if (lat > max_slot)
			max_slot = lat;
	}

	if (bg) {
		if (write(stop_fd, "s", 1) != 1)
			diag("kill: cannot stop the background producer");
		st = tu_wait_child(bg, 10000);
		if (read(result_fd, &bg_sent, sizeof bg_sent) != sizeof bg_sent)
			bg_sent = 0;
		close(stop_fd);
		close(result_fd);
		if (bg_sent && tu_stream_consume_until(&s, ID_BG, bg_sent - 1, 5000) < 0)
			diag("kill: the background producer's last message did not come");
	}
	tu_stream_drain(&s);

	is_int(claimed, ITERATIONS, "kill: every victim claimed before it was killed (%d across the ring's end)",
	       wrapped);
	ok(flowed == ITERATIONS,
	   "kill: the partition flowed again within 1 s after %d of %d kills (slowest %.0f ms)",
	   flowed, ITERATIONS, max_flow);
	ok(freed == ITERATIONS,
	   "kill: the dead producer's slot was freed after %d of %d kills (slowest %.0f ms)",
	   freed, ITERATIONS, max_slot);
	is_int(s.forbidden, 0, "kill: no message of a killed producer was delivered");
	ok(s.bad == 0 && s.expect[ID_LIVE] == seq,
	   "kill: every one of the %" PRIu64 " delivered messages checks out, in order, none lost (%u bad)",
	   s.delivered, s.bad);
	ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && bg_sent > 0 &&
	   s.expect[ID_BG] == bg_sent,
	   "kill: the background producer published %" PRIu64 " messages throughout, all delivered (%" PRIu64 ")",
	   bg_sent, s.expect[ID_BG]);

	/* The partition's invariants hold after all that. */
	if (!is_int(tu_ring_check(dir, "kill"), 0, "kill: shmq__ring_check passes afterwards"))
		diag("%s", shmq_errdetail());

	shmq_producer_close(p);
	tu_stream_close(&s);
}

/* ------------------------------------------------------------------------
 * stall
 */
static void staller(int fd, uint32_t rep)
{
	static uint8_t buf[1024];
	shmq_client_t *cc = tu_child_client(dir, 30);
	shmq_producer_t *p = tu_producer(cc, "stall");
	struct shmq_claim claim;
	uint64_t t;
	int rc;

	rc = shmq_producer_claim(p, 0, NULL, 0, 500, 2000, &claim);
	if (rc < 0) {
		fprintf(stderr, "# staller: claim: %s\n", shmq_strerror(rc));
		_exit(2);
	}
	/* When the claim was made, on the clock the reaper uses too: the
	 * parent times the stall from here, not from when it was scheduled
	 * to read the pipe. */
	t = tu_now_ns();
	tu_msg_make(buf, 500, MSG_MAGIC, ID_STALLED + rep, 0);
	memcpy(claim.value, buf, 500);
	if (write(fd, &t, sizeof t) != sizeof t)
		_exit(91);
	/* The parent continues us (or kills us) after the stall timeout. */
	raise(SIGSTOP);
	rc = shmq_producer_commit(p);
	if (rc != SHMQ_EREVOKED) {
		fprintf(stderr, "# staller: commit after the stall gave %d (%s)\n", rc,
			shmq_strerror(rc));
		_exit(3);
	}
	rc = send_msg(p, ID_AFTER + rep, 0, 300, 2000);
	if (rc < 0) {
		fprintf(stderr, "# staller: send after the revoke: %s\n", shmq_strerror(rc));
		_exit(4);
	}
	shmq_producer_close(p);
	shmq_close(cc);
	_exit(0);
}

static void test_stall(void)
{
	struct tu_stream s;
	shmq_producer_t *p;
	uint64_t seq = 0;
	uint32_t rep;
	int after_ok = 0;

	tu_topic_create(cl, "stall", RING, SHMQ_FULL_BLOCK, STALL_MS);
	tu_stream_open(&s, cl, "stall", MSG_MAGIC, abandoned);
	p = tu_producer(cl, "stall");

	for (rep = 0; rep < STALLS; rep++) {
		int fds[2], st;
		uint64_t t0;
		double el = -1;
		pid_t pid;

		pid = tu_fork(fds);
		if (pid == 0)
			staller(fds[1], rep);
		t0 = 0;
		if (!tu_read_full(fds[0], &t0, sizeof t0, 5000)) {
			diag("stall %u: the child did not claim", rep);
			t0 = tu_now_ns();
		}
		close(fds[0]);
		/* Bounded: the child stops itself right after the byte. */
		if (waitpid(pid, &st, WUNTRACED) != pid || !WIFSTOPPED(st))
			diag("stall %u: the child did not stop", rep);

		if (send_msg(p, ID_LIVE, seq, 200, 3000) >= 0 &&
		    tu_stream_consume_until(&s, ID_LIVE, seq, 5000) >= 0)
			el = (double)(tu_now_ns() - t0) / 1e6;
		seq++;
		/* The reaper cannot have seen the claim before it was made. */
		ok(el >= STALL_MS && el < 5000,
		   "stall %u: a message after a stalled claim arrives after the %d ms timeout (%.0f ms)",
		   rep, STALL_MS, el);

		kill(pid, SIGCONT);
		st = tu_wait_child(pid, 5000);
		ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		   "stall %u: the continued producer's commit gives SHMQ_EREVOKED, and it can send again (status %#x)",
		   rep, (unsigned)st);
		if (tu_stream_consume_until(&s, ID_AFTER + rep, 0, 3000) >= 0)
			after_ok++;
	}
	tu_stream_drain(&s);
	ok(s.forbidden == 0 && s.bad == 0 && after_ok == STALLS &&
	   s.expect[ID_LIVE] == seq,
	   "stall: no revoked message delivered; %d of %d later sends arrived; %" PRIu64 " messages in order (%u bad)",
	   after_ok, STALLS, s.delivered, s.bad);
	{
		double lat = await_producers("stall", 1, 2000);

		ok(lat >= 0, "stall: the exited producers' slots are free again (%d producers)",
		   producers("stall"));
	}
	shmq_producer_close(p);
	tu_stream_close(&s);
}

int main(void)
{
	pid_t shmqd;

	tu_init(180);
	plan(7 + 2 * STALLS + 2);
	tu_make_dir("kill", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);

	test_kill();
	test_stall();

	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
	return tap_done();
}
