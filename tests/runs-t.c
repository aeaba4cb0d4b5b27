/*
 * runs-t.c - PARTITIONED owners take runs of messages with one cursor CAS
 * (libshmq/consumer.c, "Runs"): the windows a run opens.
 *
 * Each scenario first makes sure the owner really is in the middle of a run
 * (the group's cursor, from shmq_topic_stat, stands past the end of the
 * message the owner holds), so that it tests the window and not a take of
 * one message.
 *
 * handover   Two partitions; all messages in partition 1.  Member A takes
 *            three messages of a run, then B joins and partition 1 goes to
 *            B (a hand-over from a live owner: B waits until A lets go).
 *            A's next poll must give the rest of its run back and let go:
 *            A gets nothing more of partition 1, and B gets every other
 *            message, in order, starting right after A's third: none
 *            skipped, none twice, none in two owners' hands.
 * handover-disk  The same with the messages in the spill files (a spilling
 *            topic, small sealed segments, so runs come from the mapping).
 * close      A consumes more than a ring's worth without committing (so its
 *            committed offset is no longer in the ring), takes three
 *            messages of a run, then releases, commits and closes.  The
 *            commit must stop at the first message A did not get; B, the
 *            member left, must go on exactly from there.
 * kill       A (a process) consumes more than a ring's worth without
 *            committing, stops in the middle of a run holding a message,
 *            and is SIGKILLed.  shmqd gives its partition to B, back at the
 *            committed offset, which the ring no longer has: B must still
 *            get every message A never got (at least once), none lost.
 * threads    Threads of one process (for ThreadSanitizer): a producer
 *            into 2 partitions; member C1 consumes throughout; member C2
 *            joins and leaves (release, commit, close) over and over, so
 *            partitions are handed over while runs are in flight.  Each
 *            member releases and commits after every message.  Every message arrives
 *            exactly once, in order per partition, and no two members
 *            process a partition at once (a plain, unsynchronised
 *            per-partition counter each member checks and bumps: two at
 *            once is a data race ThreadSanitizer reports, and a wrong
 *            value is a skip or a duplicate).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define TOPIC	"runs"
#define GROUP	"pg"
#define RING	(64u << 10)
#define VMAGIC	0x72756e73u
#define POLL_MS 20

#define SEND_TIMEOUT_MS 1000
#define WAIT_MS		10000

struct val {
	uint32_t magic;
	uint32_t part;
	uint32_t seq;
	uint32_t crc;
	uint8_t payload[48];
};

static char dir[256];

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void make_val(struct val *v, uint32_t part, uint32_t seq)
{
	memset(v, 0, sizeof *v);
	v->magic = VMAGIC;
	v->part = part;
	v->seq = seq;
	memset(v->payload, (int)(seq * 7 + part), sizeof v->payload);
	v->crc = tu_crc(v->payload, sizeof v->payload) ^ seq ^ part << 24;
}

/* The message's seq if it is intact and of partition part, else -1. */
static int64_t seq_of(const struct shmq_msg *m, uint32_t part)
{
	struct val v;

	if (m->value_len != sizeof v || m->partition != part)
		return -1;
	memcpy(&v, m->value, sizeof v);
	if (v.magic != VMAGIC || v.part != part ||
	    v.crc != (tu_crc(v.payload, sizeof v.payload) ^ v.seq ^ v.part << 24))
		return -1;
	return v.seq;
}

static void send_one(shmq_producer_t *pr, uint32_t p, uint32_t seq)
{
	struct val v;
	int rc;

	make_val(&v, p, seq);
	rc = shmq_send(pr, (int)p, NULL, 0, &v, sizeof v, SEND_TIMEOUT_MS, NULL);
	if (rc != (int)p)
		bail("send %u/%u: %s (%s)", p, seq, shmq_strerror(rc), shmq_errdetail());
}

/* Send until the ring is full (or n sent); returns how many. */
static uint32_t fill(shmq_producer_t *pr, uint32_t p, uint32_t seq, uint32_t n)
{
	struct val v;
	uint32_t k;

	for (k = 0; k < n; k++) {
		make_val(&v, p, seq + k);
		if (shmq_send(pr, (int)p, NULL, 0, &v, sizeof v, 0, NULL) != (int)p)
			break;
	}
	return k;
}

/* The group's cursor and committed offset in partition p. */
static void group_at(shmq_client_t *cl, uint32_t p, uint64_t *next,
		     uint64_t *committed)
{
	struct shmq_topic_stat *st;
	uint32_t g;
	int rc;

	rc = shmq_topic_stat(cl, TOPIC, &st);
	if (rc < 0)
		bail("stat: %s", shmq_strerror(rc));
	for (g = 0; g < st->group_count; g++)
		if (strcmp(st->groups[g].name, GROUP) == 0)
			break;
	if (g == st->group_count)
		bail("stat: no group %s", GROUP);
	*next = st->groups[g].partitions[p].next;
	if (committed)
		*committed = st->groups[g].partitions[p].committed;
	shmq_topic_stat_free(st);
}

static shmq_consumer_t *join(shmq_client_t *cl, int from, int flags)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;
	int rc;

	o.mode = SHMQ_GROUP_PARTITIONED;
	o.from = from;
	o.flags = (unsigned)flags;
	rc = shmq_consumer_open(cl, TOPIC, GROUP, &o, &c);
	if (rc < 0)
		bail("consumer_open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	return c;
}

/* Poll until a message comes (bounded); -EAGAIN if none. */
static int poll_one(shmq_consumer_t *c, struct shmq_msg *m, int max_ms)
{
	uint64_t t0 = tu_now_ns();
	int rc;

	do
		rc = shmq_consumer_poll(c, m, POLL_MS);
	while (rc == -EAGAIN && (tu_now_ns() - t0) / 1000000 < (uint64_t)max_ms);
	return rc;
}

static void topic(shmq_client_t *cl, uint32_t parts, int spill)
{
	struct shmq_topic_opts t = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	t.partitions = parts;
	t.ring_bytes = RING;
	t.full_policy = spill == SHMQ_SPILL_OFF ? SHMQ_FULL_BLOCK : SHMQ_FULL_SPILL;
	t.spill = spill;
	rc = shmq_topic_create(cl, TOPIC, &t);
	if (rc < 0)
		bail("topic_create: %s (%s)", shmq_strerror(rc), shmq_errdetail());
}

/* ------------------------------------------------------------------------
 * handover, handover-disk
 */

#define HO_N	 2000	/* messages (on disk: 3 sealed segments of 64 KiB) */
#define HO_FIRST 3	/* A takes this many */

static void scenario_handover(bool disk)
{
	const char *name = disk ? "handover-disk" : "handover";
	static const char *const seg_args[] = { "--spill-segment-bytes", "65536", NULL };
	shmq_client_t *cl;
	shmq_producer_t *pr;
	shmq_consumer_t *a, *b;
	struct shmq_msg m;
	uint64_t next, after3 = 0, t0;
	uint32_t k, sent, got_b = 0, a_more = 0, bad = 0, expect = HO_FIRST;
	pid_t shmqd;
	int rc;

	tu_make_dir(disk ? "runs-hod" : "runs-ho", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, disk ? seg_args : NULL);
	if ((rc = shmq_open(dir, NULL, &cl)) < 0)
		bail("shmq_open: %s", shmq_strerror(rc));
	topic(cl, 2, disk ? SHMQ_SPILL_OVERFLOW : SHMQ_SPILL_OFF);
	/* A first: the lower member slot, so partition 1 goes to B later. */
	a = join(cl, SHMQ_FROM_EARLIEST, 0);
	if ((rc = shmq_producer_open(cl, TOPIC, NULL, &pr)) < 0)
		bail("producer_open: %s", shmq_strerror(rc));
	/* On disk: far more than the ring, written out by shmqd's spiller. */
	for (sent = 0; sent < (disk ? HO_N : 300); sent++)
		send_one(pr, 1, sent);
	for (k = 0; k < HO_FIRST; k++) {
		rc = poll_one(a, &m, WAIT_MS);
		if (rc < 0 || seq_of(&m, 1) != (int64_t)k) {
			diag("%s: A: wanted seq %u, got %lld at %llu (%s)", name, k,
			     rc < 0 ? -1ll : (long long)seq_of(&m, 1),
			     (unsigned long long)m.offset, shmq_errdetail());
			bad++;
		}
		after3 = m.next_offset;
	}
	group_at(cl, 1, &next, NULL);
	ok(bad == 0 && next != after3 && (int64_t)(next - after3) > 0,
	   "%s: A got seqs 0-%u and is in the middle of a run (cursor %llu, past %llu)",
	   name, HO_FIRST - 1, (unsigned long long)next, (unsigned long long)after3);

	b = join(cl, SHMQ_FROM_EARLIEST, 0);
	/* B waits for A; A's poll gives back, lets go and finds nothing of 1. */
	rc = shmq_consumer_poll(b, &m, 0);
	ok(rc == -EAGAIN, "%s: B gets nothing while A has not let go (%s)", name,
	   shmq_strerror(rc));
	t0 = tu_now_ns();
	while ((rc = shmq_consumer_poll(a, &m, 0)) != -EAGAIN &&
	       (tu_now_ns() - t0) / 1000000 < WAIT_MS)
		a_more++;
	group_at(cl, 1, &next, NULL);
	ok(a_more == 0 && next == after3,
	   "%s: A's next poll gave the rest of its run back (cursor %llu, A's next message %llu; A got %u more)",
	   name, (unsigned long long)next, (unsigned long long)after3, a_more);

	bad = 0;
	while (expect < HO_N) {
		int64_t s;

		if (sent < HO_N)
			sent += fill(pr, 1, sent, HO_N - sent);

		rc = poll_one(b, &m, WAIT_MS);
		if (rc < 0)
			break;
		s = seq_of(&m, 1);
		if (s != (int64_t)expect)
			bad++;
		if (s >= 0)
			expect = (uint32_t)s + 1;
		got_b++;
		rc = shmq_consumer_poll(a, &m, 0);
		if (rc != -EAGAIN)
			a_more++;
	}
	ok(bad == 0 && got_b == HO_N - HO_FIRST && a_more == 0,
	   "%s: B got seqs %u-%u, each once, in order (%u received, %u out of place, A got %u)",
	   name, HO_FIRST, HO_N - 1, got_b, bad, a_more);
	shmq_consumer_close(a);
	shmq_consumer_close(b);
	shmq_producer_close(pr);
	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
}

/* ------------------------------------------------------------------------
 * close
 */

#define CL_LAPS 1500 /* well over a ring of 96-byte frames */

static void scenario_close(void)
{
	shmq_client_t *cl;
	shmq_producer_t *pr;
	shmq_consumer_t *a, *b;
	struct shmq_msg m;
	uint64_t next, committed, after = 0;
	uint32_t sent = 0, got = 0, bad = 0, k, last = 0;
	pid_t shmqd;
	int rc;

	tu_make_dir("runs-close", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	if ((rc = shmq_open(dir, NULL, &cl)) < 0)
		bail("shmq_open: %s", shmq_strerror(rc));
	topic(cl, 2, SHMQ_SPILL_OFF);
	a = join(cl, SHMQ_FROM_EARLIEST, 0);
	b = join(cl, SHMQ_FROM_EARLIEST, 0); /* owns partition 1; A has 0 */
	if ((rc = shmq_producer_open(cl, TOPIC, NULL, &pr)) < 0)
		bail("producer_open: %s", shmq_strerror(rc));
	/* A works through more than a ring without committing. */
	while (got < CL_LAPS) {
		sent += fill(pr, 0, sent, 100000);
		while (got < sent) {
			rc = poll_one(a, &m, WAIT_MS);
			if (rc < 0 || seq_of(&m, 0) != (int64_t)got)
				bad++;
			got++;
			if (got >= CL_LAPS)
				break;
		}
	}
	/* A full ring behind, then three messages of a fresh run. */
	shmq_consumer_release(a);
	sent += fill(pr, 0, sent, 100000);
	for (k = 0; k < 64; k++) {
		rc = poll_one(a, &m, WAIT_MS);
		if (rc < 0 || seq_of(&m, 0) != (int64_t)got)
			bad++;
		last = got++;
		after = m.next_offset;
		group_at(cl, 0, &next, &committed);
		if (k >= 2 && (int64_t)(next - after) > 0)
			break;
	}
	ok(bad == 0 && (int64_t)(next - after) > 0,
	   "close: A got seqs 0-%u in order and is in the middle of a run (cursor %llu, past %llu)",
	   last, (unsigned long long)next, (unsigned long long)after);
	shmq_consumer_release(a);
	shmq_consumer_commit(a);
	group_at(cl, 0, &next, &committed);
	ok(committed == after,
	   "close: a commit after the release stops at A's next message (%llu, A's next %llu)",
	   (unsigned long long)committed, (unsigned long long)after);
	shmq_consumer_close(a);

	/* B owns partition 0 now and goes on right after A's last message. */
	bad = 0;
	for (k = got; k < sent; k++) {
		rc = poll_one(b, &m, WAIT_MS);
		if (rc < 0 || seq_of(&m, 0) != (int64_t)k) {
			diag("close: B: wanted seq %u, got %lld (%s)", k,
			     rc < 0 ? -1ll : (long long)seq_of(&m, 0), shmq_strerror(rc));
			bad++;
			break;
		}
	}
	ok(bad == 0, "close: B got seqs %u-%u, the rest of A's run and after, in order",
	   got, sent - 1);
	shmq_consumer_close(b);
	shmq_producer_close(pr);
	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
}

/* ------------------------------------------------------------------------
 * kill
 */

#define KL_N	 4000
#define KL_STOP	 1500	/* A stops in a run once past this seq */

struct kill_shared {
	uint32_t ready, stopped, done;
	uint32_t a_last;	  /* the seq A held when it stopped */
	uint32_t a_bad;
	uint8_t got_a[KL_N];
};

static struct kill_shared *ks;

static int kill_member_main(void)
{
	shmq_client_t *cl;
	shmq_consumer_t *a;
	struct shmq_msg m;
	uint32_t expect = 0;
	uint64_t next;
	int rc;

	alarm(60);
	if ((rc = shmq_open(dir, NULL, &cl)) < 0)
		return 1;
	a = join(cl, SHMQ_FROM_EARLIEST, 0);
	__atomic_store_n(&ks->ready, 1, __ATOMIC_RELEASE);
	for (;;) {
		int64_t s;

		rc = poll_one(a, &m, WAIT_MS);
		if (rc < 0)
			return 2;
		s = seq_of(&m, 0);
		if (s != (int64_t)expect)
			ks->a_bad++;
		if (s < 0 || s >= KL_N)
			return 3;
		ks->got_a[s] = 1;
		expect = (uint32_t)s + 1;
		if (s < KL_STOP)
			continue;
		group_at(cl, 0, &next, NULL);
		if ((int64_t)(next - m.next_offset) > 0) {
			/* In a run, holding s: wait for the SIGKILL. */
			ks->a_last = (uint32_t)s;
			__atomic_store_n(&ks->stopped, 1, __ATOMIC_RELEASE);
			for (;;)
				pause();
		}
	}
}

static void scenario_kill(void)
{
	shmq_client_t *cl;
	shmq_producer_t *pr;
	shmq_consumer_t *b;
	struct shmq_msg m;
	uint32_t sent = 0, k, missing = 0, first_b = UINT32_MAX, bad_b = 0, expect = 0;
	uint8_t *got_b;
	uint64_t t0;
	pid_t shmqd, a;
	int rc, st;
	bool killed = false;

	ks = mmap(NULL, sizeof *ks, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	got_b = calloc(KL_N, 1);
	if (ks == MAP_FAILED || !got_b)
		bail("mmap: %s", strerror(errno));
	memset(ks, 0, sizeof *ks);
	tu_make_dir("runs-kill", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	if ((rc = shmq_open(dir, NULL, &cl)) < 0)
		bail("shmq_open: %s", shmq_strerror(rc));
	topic(cl, 2, SHMQ_SPILL_OFF);
	a = fork();
	if (a < 0)
		bail("fork: %s", strerror(errno));
	if (a == 0)
		_exit(kill_member_main());
	t0 = tu_now_ns();
	while (!__atomic_load_n(&ks->ready, __ATOMIC_ACQUIRE) &&
	       (tu_now_ns() - t0) / 1000000 < WAIT_MS)
		sleep_ms(1);
	/* B joins second: partition 1 (empty) is its, 0 stays A's. */
	b = join(cl, SHMQ_FROM_EARLIEST, 0);
	if ((rc = shmq_producer_open(cl, TOPIC, NULL, &pr)) < 0)
		bail("producer_open: %s", shmq_strerror(rc));
	t0 = tu_now_ns();
	while ((sent < KL_N || expect < KL_N) && (tu_now_ns() - t0) / 1000000 < 4 * WAIT_MS) {
		int64_t s;

		if (sent < KL_N)
			sent += fill(pr, 0, sent, KL_N - sent);
		if (!killed && __atomic_load_n(&ks->stopped, __ATOMIC_ACQUIRE)) {
			kill(a, SIGKILL);
			st = tu_wait_child(a, WAIT_MS);
			killed = true;
		}
		rc = shmq_consumer_poll(b, &m, killed ? POLL_MS : 0);
		if (rc == -EAGAIN)
			continue;
		s = seq_of(&m, 0);
		if (rc < 0 || s < 0) {
			bad_b++;
			continue;
		}
		if (first_b == UINT32_MAX)
			first_b = (uint32_t)s;
		else if (s != (int64_t)expect)
			bad_b++;
		got_b[s] = 1;
		expect = (uint32_t)s + 1;
	}
	if (!killed) {
		kill(a, SIGKILL);
		st = tu_wait_child(a, WAIT_MS);
	}
	for (k = 0; k < KL_N; k++)
		missing += !ks->got_a[k] && !got_b[k];
	ok(killed && ks->a_bad == 0,
	   "kill: A consumed in order and was SIGKILLed in the middle of a run, holding seq %u",
	   ks->a_last);
	ok(missing == 0 && bad_b == 0 && first_b <= ks->a_last + 1,
	   "kill: every message reached A or B, none lost (%u missing; B started at seq %u, A held %u; %u out of order at B)",
	   missing, first_b, ks->a_last, bad_b);
	(void)st;
	shmq_consumer_close(b);
	shmq_producer_close(pr);
	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
	munmap(ks, sizeof *ks);
	free(got_b);
}

/* ------------------------------------------------------------------------
 * threads
 */

#define TH_PARTS 2
#define TH_N	 30000 /* per partition */
#define TH_LEAVES 40

static shmq_client_t *th_client;
static uint32_t th_next[TH_PARTS];  /* plain: only the owner touches it */
static uint32_t th_bad, th_done, th_leaves, th_got;
static uint8_t th_count[TH_PARTS][TH_N];

static void *th_producer(void *arg)
{
	shmq_producer_t *pr;
	uint32_t k, p;

	(void)arg;
	if (shmq_producer_open(th_client, TOPIC, NULL, &pr) < 0) {
		__atomic_fetch_add(&th_bad, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	for (k = 0; k < TH_N; k++)
		for (p = 0; p < TH_PARTS; p++)
			send_one(pr, p, k);
	shmq_producer_close(pr);
	return NULL;
}

/* One message: the partition's counter says which seq must come. */
static void th_handle(const struct shmq_msg *m)
{
	uint32_t p = m->partition;
	int64_t s = p < TH_PARTS ? seq_of(m, p) : -1;

	if (s < 0 || s >= TH_N || (uint32_t)s != th_next[p]) {
		__atomic_fetch_add(&th_bad, 1, __ATOMIC_RELAXED);
		if (s < 0 || s >= TH_N)
			return;
	}
	th_next[p] = (uint32_t)s + 1;
	__atomic_fetch_add(&th_count[p][s], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&th_got, 1, __ATOMIC_RELAXED);
}

static uint32_t th_total(void)
{
	return __atomic_load_n(&th_got, __ATOMIC_RELAXED);
}

static void *th_stayer(void *arg)
{
	shmq_consumer_t *c = arg;
	struct shmq_msg m;
	uint64_t t0 = tu_now_ns();
	int rc;

	while (!__atomic_load_n(&th_done, __ATOMIC_ACQUIRE) &&
	       (tu_now_ns() - t0) / 1000000 < 6 * WAIT_MS) {
		rc = shmq_consumer_poll(c, &m, POLL_MS);
		if (rc == -EAGAIN)
			continue;
		if (rc < 0) {
			__atomic_fetch_add(&th_bad, 1, __ATOMIC_RELAXED);
			continue;
		}
		th_handle(&m);
		shmq_consumer_release(c);
		shmq_consumer_commit(c);
	}
	shmq_consumer_release(c);
	shmq_consumer_commit(c);
	return NULL;
}

static void *th_leaver(void *arg)
{
	struct shmq_msg m;
	uint32_t i, k;
	int rc;

	(void)arg;
	for (i = 0; i < TH_LEAVES && !__atomic_load_n(&th_done, __ATOMIC_ACQUIRE); i++) {
		shmq_consumer_t *c = join(th_client, SHMQ_FROM_COMMITTED, 0);

		/* A few messages (some runs in flight), then leave. */
		for (k = 0; k < 50 + i * 13 % 200; k++) {
			rc = shmq_consumer_poll(c, &m, POLL_MS);
			if (rc == -EAGAIN)
				continue;
			if (rc < 0) {
				__atomic_fetch_add(&th_bad, 1, __ATOMIC_RELAXED);
				continue;
			}
			th_handle(&m);
			shmq_consumer_release(c);
			shmq_consumer_commit(c);
		}
		shmq_consumer_release(c);
		shmq_consumer_commit(c);
		shmq_consumer_close(c);
		__atomic_fetch_add(&th_leaves, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void scenario_threads(void)
{
	struct shmq_topic_params tp;
	struct shmq_map map;
	pthread_t prod, stay, leave;
	shmq_consumer_t *c1;
	uint32_t p, k, missing = 0, dup = 0;
	uint64_t t0;
	int rc;

	tu_make_dir("runs-th", dir, sizeof dir);
	memset(&tp, 0, sizeof tp);
	tp.partitions = TH_PARTS;
	tp.ring_bytes = RING;
	tp.full_policy = SHMQ_FULL_BLOCK;
	tp.numa_node = -1;
	tp.mode = 0600;
	tp.stall_timeout_ms = 10000;
	tp.topic_id = 0x7275ull << 32 | (uint32_t)getpid();
	tu_topic_direct(dir, TOPIC, &tp, &map);
	if ((rc = shmq_open(dir, NULL, &th_client)) < 0)
		bail("shmq_open: %s", shmq_strerror(rc));
	c1 = join(th_client, SHMQ_FROM_EARLIEST, 0);
	pthread_create(&stay, NULL, th_stayer, c1);
	pthread_create(&leave, NULL, th_leaver, NULL);
	pthread_create(&prod, NULL, th_producer, NULL);
	pthread_join(prod, NULL);
	t0 = tu_now_ns();
	while (th_total() < TH_PARTS * TH_N && (tu_now_ns() - t0) / 1000000 < 4 * WAIT_MS)
		sleep_ms(5);
	__atomic_store_n(&th_done, 1, __ATOMIC_RELEASE);
	pthread_join(leave, NULL);
	pthread_join(stay, NULL);
	for (p = 0; p < TH_PARTS; p++)
		for (k = 0; k < TH_N; k++) {
			missing += th_count[p][k] == 0;
			dup += th_count[p][k] > 1;
		}
	ok(th_bad == 0 && missing == 0 && dup == 0,
	   "threads: %u messages through members joining and leaving %u times: each exactly once, in order per partition (%u out of place, %u missing, %u twice)",
	   TH_PARTS * TH_N, th_leaves, th_bad, missing, dup);
	shmq_consumer_close(c1);
	shmq_close(th_client);
	tu_cleanup(dir);
}

int main(void)
{
	tu_init(240);
	plan(4 + 4 + 3 + 2 + 1);
	scenario_handover(false);
	scenario_handover(true);
	scenario_close();
	scenario_kill();
	scenario_threads();
	return tap_done();
}
