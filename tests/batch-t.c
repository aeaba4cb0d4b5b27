/*
 * batch-t.c - shmq_send_batch: several messages per claim and commit.
 *
 * stream  A child publishes batches of 1, 2, 3, 64, 65, 7, 200 and 1
 *         messages of varied sizes (some larger than an eighth of the
 *         ring, batches larger than the ring, claims that end at the
 *         ring's end) into a 64 KiB ring, while another child publishes
 *         single messages into the same partition.  The parent's consumer
 *         must see every message once, intact, in order per producer; the
 *         batching child checks that each call published all its messages
 *         and that the offsets it got back grow.
 *
 * kill    KILLS times, a child publishes a batch of VICTIM_N messages
 *         (several claims) and dies by SIGKILL inside its k-th claim,
 *         between the claim and its commit, with every frame of the claim
 *         but the first sealed (a test hook in the library).  Exactly the
 *         messages of its earlier claims are delivered, none of the killed
 *         one; after each kill the partition flows again (a message sent
 *         after it arrives), and a background child publishing single
 *         messages throughout loses nothing.
 *
 * stall   On a topic with stall_timeout_ms = STALL_MS, a child stops
 *         itself (SIGSTOP) inside a batch's claim.  A message sent after
 *         it arrives once shmqd revokes the claim; continued, the child's
 *         shmq_send_batch returns SHMQ_EREVOKED, none of the batch is ever
 *         delivered, and its next batch goes through.
 *
 * kill and stall need shmqd, which runs the reaper.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define RING	 ((uint64_t)SHMQ_RING_MIN)
#define KILLS	 16
#define VICTIM_N 150
#define STALLS	 2
#define STALL_MS 300
#define ROUNDS	 30 /* of the stream child's batch sizes */
#define SINGLES	 3000

#define ID_LIVE	   1u	 /* the parent's producer */
#define ID_BATCH   2u	 /* the stream's batching child */
#define ID_SINGLE  3u	 /* the stream's single-message child, and kill's background */
#define ID_VICTIM  1000u /* + kill: killed inside a claim */
#define ID_STALLED 2000u /* + rep: revoked, never delivered */
#define ID_AFTER   3000u /* + rep: the batch after the revocation */

#define MSG_MAGIC 0x62617463u /* "batc" */
#define MSG_MAX	  12000u

static const uint32_t batch_sizes[] = { 1, 2, 3, 64, 65, 7, 200, 1 };

static char dir[256];
static shmq_client_t *cl;

/* A revoked batch's messages must never be delivered. */
static bool revoked(uint32_t producer)
{
	return producer >= ID_STALLED && producer < ID_STALLED + 1000;
}

/* ------------------------------------------------------------------------
 * Plumbing
 */
/* The value length of message seq of a producer: 24 .. about 1 KiB. */
static size_t msg_len(uint64_t seq)
{
	return sizeof(struct tu_msg_head) + (size_t)(seq * 37 % 1000);
}

/*
 * Send msgs [seq, seq + n) of producer id as one batch of the given
 * lengths (len 0: msg_len).  bufs holds n * MSG_MAX bytes.
 */
static int send_batch(shmq_producer_t *p, uint32_t id, uint64_t seq, uint32_t n,
		      size_t len, uint8_t *bufs, struct shmq_batch_msg *msgs,
		      uint64_t *offsets)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		size_t l = len ? len : msg_len(seq + i);

		tu_msg_make(bufs + (size_t)i * MSG_MAX, l, MSG_MAGIC, id, seq + i);
		msgs[i] = (struct shmq_batch_msg){ NULL, 0, bufs + (size_t)i * MSG_MAX, l };
		offsets[i] = UINT64_MAX;
	}
	return shmq_send_batch(p, 0, msgs, n, 10000, offsets);
}

static int send_one(shmq_producer_t *p, uint32_t id, uint64_t seq, size_t len)
{
	static uint8_t buf[MSG_MAX];

	tu_msg_make(buf, len, MSG_MAGIC, id, seq);
	return shmq_send(p, 0, NULL, 0, buf, len, 10000, NULL);
}

static uint8_t *child_bufs;
static struct shmq_batch_msg child_msgs[256];
static uint64_t child_offsets[256];

static void alloc_child_bufs(void)
{
	child_bufs = malloc((size_t)256 * MSG_MAX);
	if (!child_bufs)
		_exit(92);
}

/* ------------------------------------------------------------------------
 * stream
 */
static void stream_batcher(void)
{
	shmq_client_t *cc = tu_child_client(dir, 60);
	shmq_producer_t *p = tu_producer(cc, "stream");
	uint64_t seq = 0, last = 0;
	uint32_t r, b, i;

	alloc_child_bufs();
	for (r = 0; r < ROUNDS; r++) {
		for (b = 0; b < sizeof batch_sizes / sizeof batch_sizes[0]; b++) {
			uint32_t n = batch_sizes[b];
			/* Now and then, messages larger than an eighth of the ring. */
			size_t len = (r % 5 == 4 && n <= 7) ? 10000 : 0;
			int rc = send_batch(p, ID_BATCH, seq, n, len, child_bufs,
					    child_msgs, child_offsets);

			if (rc != (int)n) {
				fprintf(stderr, "# batcher: batch of %u gave %d (%s)\n", n, rc,
					rc < 0 ? shmq_strerror(rc) : "short");
				_exit(2);
			}
			for (i = 0; i < n; i++) {
				if ((seq || i) && child_offsets[i] <= last) {
					fprintf(stderr, "# batcher: offset %" PRIu64 " after %" PRIu64 "\n",
						child_offsets[i], last);
					_exit(3);
				}
				last = child_offsets[i];
			}
			seq += n;
		}
	}
	shmq_producer_close(p);
	shmq_close(cc);
	_exit(0);
}

static void stream_single(void)
{
	shmq_client_t *cc = tu_child_client(dir, 60);
	shmq_producer_t *p = tu_producer(cc, "stream");
	uint64_t seq;

	for (seq = 0; seq < SINGLES; seq++) {
		int rc = send_one(p, ID_SINGLE, seq, msg_len(seq * 7));

		if (rc < 0) {
			fprintf(stderr, "# single: send %" PRIu64 ": %s\n", seq, shmq_strerror(rc));
			_exit(2);
		}
	}
	shmq_producer_close(p);
	shmq_close(cc);
	_exit(0);
}

static void test_stream(void)
{
	uint64_t batched = 0, deadline;
	struct tu_stream *s = calloc(1, sizeof *s);
	pid_t a, b;
	int sa, sb;
	uint32_t i;

	if (!s)
		bail("calloc");
	for (i = 0; i < sizeof batch_sizes / sizeof batch_sizes[0]; i++)
		batched += batch_sizes[i];
	batched *= ROUNDS;
	tu_topic_create(cl, "stream", RING, SHMQ_FULL_BLOCK, 0);
	tu_stream_open(s, cl, "stream", MSG_MAGIC, revoked);
	a = tu_fork(NULL);
	if (a == 0)
		stream_batcher();
	b = tu_fork(NULL);
	if (b == 0)
		stream_single();
	deadline = tu_now_ns() + 60ull * 1000000000;
	while ((s->expect[ID_BATCH] < batched || s->expect[ID_SINGLE] < SINGLES) &&
	       tu_now_ns() < deadline) {
		uint32_t id;
		uint64_t seq;
		int rc = tu_stream_take(s, 20, &id, &seq);

		if (rc != 0 && rc != -EAGAIN) {
			diag("stream: poll: %s", shmq_strerror(rc));
			break;
		}
	}
	sa = tu_wait_child(a, 10000);
	sb = tu_wait_child(b, 10000);
	tu_stream_drain(s);
	ok(sa != -1 && WIFEXITED(sa) && WEXITSTATUS(sa) == 0,
	   "stream: every batch call published all its messages, at growing offsets (status %#x)",
	   (unsigned)sa);
	ok(sb != -1 && WIFEXITED(sb) && WEXITSTATUS(sb) == 0,
	   "stream: the single sends went through alongside (status %#x)", (unsigned)sb);
	ok(s->bad == 0 && s->expect[ID_BATCH] == batched && s->expect[ID_SINGLE] == SINGLES &&
	   s->delivered == batched + SINGLES,
	   "stream: %" PRIu64 " of %" PRIu64 " batched and %" PRIu64 " of %u single messages, each once, intact, in order (%" PRIu64 " delivered, %u bad)",
	   s->expect[ID_BATCH], batched, s->expect[ID_SINGLE], SINGLES, s->delivered, s->bad);
	tu_stream_close(s);
	free(s);
}

/* ------------------------------------------------------------------------
 * kill
 */
static int hook_fd = -1;
static uint32_t hook_target;
static uint64_t hook_prev_end;

/* How many messages of the batch have their offsets: the claims so far. */
static uint64_t filled(void)
{
	uint64_t n = 0;

	while (n < VICTIM_N && child_offsets[n] != UINT64_MAX)
		n++;
	return n;
}

static void kill_hook(uint32_t claim)
{
	uint64_t ends[2] = { hook_prev_end, filled() };

	if (claim != hook_target) {
		hook_prev_end = ends[1];
		return;
	}
	if (write(hook_fd, ends, sizeof ends) != sizeof ends)
		_exit(91);
	raise(SIGKILL);
}

static void victim(int fd, uint32_t k)
{
	shmq_client_t *cc = tu_child_client(dir, 60);
	shmq_producer_t *p = tu_producer(cc, "kill");
	int rc;

	alloc_child_bufs();
	hook_fd = fd;
	hook_target = k % 4;
	shmq__batch_hook = kill_hook;
	/* 300 B: 352-byte frames, 23 to a claim of an eighth of the ring. */
	rc = send_batch(p, ID_VICTIM + k, 0, VICTIM_N, 300, child_bufs, child_msgs,
			child_offsets);
	fprintf(stderr, "# victim: the batch returned %d\n", rc);
	_exit(2);
}

static void background(int stop_fd)
{
	shmq_client_t *cc = tu_child_client(dir, 60);
	shmq_producer_t *p = tu_producer(cc, "kill");
	uint64_t n = 0;
	struct pollfd pfd = { .fd = stop_fd, .events = POLLIN };

	alarm(120);
	while (poll(&pfd, 1, 0) == 0) {
		if (send_one(p, ID_SINGLE, n, msg_len(n)) < 0)
			_exit(2);
		n++;
		usleep(500);
	}
	shmq_producer_close(p);
	shmq_close(cc);
	/* The count as exit status would not fit: report it on stderr. */
	fprintf(stderr, "# background: %" PRIu64 " messages\n", n);
	_exit(0);
}

static void test_kill(void)
{
	struct tu_stream *s = calloc(1, sizeof *s);
	uint64_t want[KILLS], seq = 0;
	int stop[2], flowed = 0, reported = 0, exact = 0, st;
	shmq_producer_t *p;
	pid_t bg;
	uint32_t k;

	if (!s)
		bail("calloc");
	tu_topic_create(cl, "kill", RING, SHMQ_FULL_BLOCK, 0);
	tu_stream_open(s, cl, "kill", MSG_MAGIC, revoked);
	p = tu_producer(cl, "kill");
	if (pipe(stop) < 0)
		bail("pipe: %s", strerror(errno));
	bg = tu_fork(NULL);
	if (bg == 0) {
		close(stop[1]);
		background(stop[0]);
	}
	close(stop[0]);
	for (k = 0; k < KILLS; k++) {
		uint64_t ends[2] = { UINT64_MAX, UINT64_MAX };
		int fds[2];
		pid_t pid = tu_fork(fds);

		if (pid == 0)
			victim(fds[1], k);
		want[k] = UINT64_MAX;
		/* Consume meanwhile: the victim's claims need room. */
		{
			uint64_t deadline = tu_now_ns() + 10ull * 1000000000;
			struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
			uint32_t id;
			uint64_t q;

			while (poll(&pfd, 1, 0) == 0 && tu_now_ns() < deadline)
				tu_stream_take(s, 5, &id, &q);
		}
		if (tu_read_full(fds[0], ends, sizeof ends, 1000)) {
			reported++;
			want[k] = ends[0];
		} else {
			diag("kill %u: the victim did not reach its claim %u", k, k % 4);
		}
		close(fds[0]);
		st = tu_wait_child(pid, 5000);
		if (st == -1 || !WIFSIGNALED(st))
			diag("kill %u: the victim ended with status %#x", k, (unsigned)st);
		/* The partition flows again: shmqd pads the dead claim. */
		if (send_one(p, ID_LIVE, seq, 64) >= 0 &&
		    tu_stream_consume_until(s, ID_LIVE, seq, 5000) >= 0)
			flowed++;
		else
			diag("kill %u: the partition did not flow again (claim %u, messages %" PRIu64 "..%" PRIu64 ")",
			     k, k % 4, ends[0], ends[1]);
		seq++;
	}
	if (write(stop[1], "x", 1) != 1)
		bail("write: %s", strerror(errno));
	close(stop[1]);
	st = tu_wait_child(bg, 10000);
	tu_stream_drain(s);

	for (k = 0; k < KILLS; k++) {
		if (s->expect[ID_VICTIM + k] == want[k])
			exact++;
		else
			diag("kill %u: %" PRIu64 " of the victim's messages delivered, %" PRIu64 " expected",
			     k, s->expect[ID_VICTIM + k], want[k]);
	}
	is_int(reported, KILLS, "kill: every victim died inside a claim of its batch, after its other frames were sealed");
	is_int(exact, KILLS, "kill: exactly the messages of the victim's earlier claims were delivered, none of the killed one");
	is_int(flowed, KILLS, "kill: after each kill the partition flowed again");
	ok(s->bad == 0 && s->expect[ID_LIVE] == seq,
	   "kill: all %" PRIu64 " delivered messages intact, in order (%u bad)", s->delivered, s->bad);
	ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && s->expect[ID_SINGLE] > 0,
	   "kill: the background producer published throughout (%" PRIu64 " delivered in order)",
	   s->expect[ID_SINGLE]);

	/* The partition's invariants hold after all that. */
	if (!is_int(tu_ring_check(dir, "kill"), 0, "kill: shmq__ring_check passes afterwards"))
		diag("%s", shmq_errdetail());
	shmq_producer_close(p);
	tu_stream_close(s);
	free(s);
}

/* ------------------------------------------------------------------------
 * stall
 */
static void stall_hook(uint32_t claim)
{
	(void)claim;
	if (write(hook_fd, "s", 1) != 1)
		_exit(91);
	raise(SIGSTOP);
}

static void staller(int fd, uint32_t rep)
{
	shmq_client_t *cc = tu_child_client(dir, 60);
	shmq_producer_t *p = tu_producer(cc, "stall");
	int rc;

	alloc_child_bufs();
	hook_fd = fd;
	shmq__batch_hook = stall_hook;
	rc = send_batch(p, ID_STALLED + rep, 0, 10, 200, child_bufs, child_msgs,
			child_offsets);
	if (rc != SHMQ_EREVOKED) {
		fprintf(stderr, "# staller: the stalled batch gave %d (%s)\n", rc,
			rc < 0 ? shmq_strerror(rc) : "messages");
		_exit(3);
	}
	shmq__batch_hook = NULL;
	rc = send_batch(p, ID_AFTER + rep, 0, 5, 0, child_bufs, child_msgs,
			child_offsets);
	if (rc != 5) {
		fprintf(stderr, "# staller: the batch after the revocation gave %d\n", rc);
		_exit(4);
	}
	shmq_producer_close(p);
	shmq_close(cc);
	_exit(0);
}

static void test_stall(void)
{
	struct tu_stream *s = calloc(1, sizeof *s);
	int passed = 0, exited = 0, after = 0;
	shmq_producer_t *p;
	uint64_t seq = 0;
	uint32_t rep;

	if (!s)
		bail("calloc");
	tu_topic_create(cl, "stall", RING, SHMQ_FULL_BLOCK, STALL_MS);
	tu_stream_open(s, cl, "stall", MSG_MAGIC, revoked);
	p = tu_producer(cl, "stall");
	for (rep = 0; rep < STALLS; rep++) {
		int fds[2], st;
		char b;
		pid_t pid = tu_fork(fds);

		if (pid == 0)
			staller(fds[1], rep);
		if (!tu_read_full(fds[0], &b, 1, 5000))
			diag("stall %u: the child did not claim", rep);
		close(fds[0]);
		if (waitpid(pid, &st, WUNTRACED) != pid || !WIFSTOPPED(st))
			diag("stall %u: the child did not stop", rep);
		/* Behind the stalled claim: arrives once shmqd revokes it. */
		if (send_one(p, ID_LIVE, seq, 64) >= 0 &&
		    tu_stream_consume_until(s, ID_LIVE, seq, 5000) >= 0)
			passed++;
		seq++;
		kill(pid, SIGCONT);
		st = tu_wait_child(pid, 5000);
		if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
			exited++;
		else
			diag("stall %u: the child ended with status %#x", rep, (unsigned)st);
		if (tu_stream_consume_until(s, ID_AFTER + rep, 4, 3000) >= 0)
			after++;
	}
	tu_stream_drain(s);
	is_int(passed, STALLS, "stall: a message behind a stalled batch arrives once shmqd revokes it");
	is_int(exited, STALLS, "stall: the continued batch returns SHMQ_EREVOKED, and the next batch goes through");
	ok(s->forbidden == 0 && s->bad == 0 && after == STALLS && s->expect[ID_LIVE] == seq,
	   "stall: none of a revoked batch delivered (%u), the later batches arrived (%d), all in order (%u bad)",
	   s->forbidden, after, s->bad);
	shmq_producer_close(p);
	tu_stream_close(s);
	free(s);
}

/* ------------------------------------------------------------------------
 * Argument checks, without shmqd's help.
 */
static void test_args(void)
{
	struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;
	struct shmq_batch_msg m[2] = { { NULL, 0, "a", 1 }, { NULL, 0, NULL, 5 } };
	shmq_producer_t *p, *ip;
	int rc;

	p = tu_producer(cl, "stream");
	is_int(shmq_send_batch(p, SHMQ_PARTITION_ANY, m, 1, 0, NULL), -EINVAL,
	       "args: a batch needs an explicit partition");
	is_int(shmq_send_batch(p, 0, m, 2, 0, NULL), -EINVAL,
	       "args: a value_len without a value is refused before anything is published");
	is_int(shmq_send_batch(p, 0, m, 0, 0, NULL), 0, "args: an empty batch publishes nothing");
	po.idempotent_id = "batch-ident";
	rc = shmq_producer_open(cl, "stream", &po, &ip);
	if (rc)
		bail("idempotent producer: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	is_int(shmq_send_batch(ip, 0, m, 1, 0, NULL), -EINVAL,
	       "args: a producer with an identity cannot batch");
	shmq_producer_close(ip);
	shmq_producer_close(p);
}

int main(void)
{
	pid_t shmqd;

	tu_init(240);
	plan(3 + 4 + 6 + 3);
	tu_make_dir("batch", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);

	test_stream();
	test_args();
	test_kill();
	test_stall();

	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
	return tap_done();
}
