/*
 * ack-t.c - SHARED groups with acknowledgements: leases, ack timeouts,
 * messages parked for delivery again, dead letters with their reason.
 *
 * The main scenario is a kill storm: three member processes work through a
 * batch of messages, acknowledging each, while the parent SIGKILLs one at a
 * random moment again and again and starts a new one.  Each member writes
 * what it saw to a shared record before and after each step, so that the
 * parent can check, per message:
 *   - it was acknowledged (an ack that returned 0, or one that was cut off
 *     by the kill), and never acknowledged twice;
 *   - it was never delivered again after an acknowledgement returned 0;
 *   - its delivery counts went up by one or more each time it came again.
 * The other scenarios are single steps: more messages waiting for delivery
 * again than the old two per partition, ack timeouts (redelivered to
 * another member, or called off by a late ack), dead letters after N
 * deliveries with the reason, at-most-once members, a member that closes
 * with a message it gave back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define N	  2000	/* messages of the kill storm */
#define WORKERS	  3
#define KILLS	  40

struct record {
	uint32_t deliveries;	/* deliveries seen (recorded after the poll) */
	uint32_t last_count;	/* the highest delivery_count seen */
	uint32_t count_regress; /* a delivery_count not above the last one */
	uint32_t ack_started;	/* ack calls begun */
	uint32_t ack_ok;	/* ack calls that returned 0 */
	uint32_t ack_other;	/* ack calls that returned anything else */
	uint32_t after_ack;	/* deliveries after an ack returned 0 */
};

struct board {
	uint32_t stop;
	uint32_t bad_msgs;
	struct record rec[N];
};

static char dir[256];
static struct board *board;

static shmq_consumer_t *join(shmq_client_t *cl, const char *group,
			     const struct shmq_consumer_opts *extra)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;

	if (extra)
		o = *extra;
	o.mode = SHMQ_GROUP_SHARED;
	if (shmq_consumer_open(cl, "jobs", group, &o, &c))
		bail("join %s: %s", group, shmq_errdetail());
	return c;
}

static void send_ids(shmq_producer_t *p, uint32_t part, uint32_t from, uint32_t n)
{
	uint32_t v[8], i;

	for (i = from; i < from + n; i++) {
		memset(v, 0, sizeof(v));
		v[0] = i;
		v[1] = ~i;
		if (shmq_send(p, part, NULL, 0, v, sizeof(v), 2000, NULL) < 0)
			bail("send %u: %s", i, shmq_errdetail());
	}
}

static int id_of(const struct shmq_msg *m, uint32_t *id)
{
	uint32_t v[8];

	if (m->value_len != sizeof(v))
		return -1;
	memcpy(v, m->value, sizeof(v));
	if (v[1] != ~v[0])
		return -1;
	*id = v[0];
	return 0;
}

/* A member of the kill storm: until told to stop. */
static void worker(unsigned seed)
{
	shmq_client_t *cl;
	shmq_consumer_t *c;
	struct shmq_msg m;

	tap_child();
	srand(seed);
	if (shmq_open(dir, NULL, &cl))
		_exit(2);
	c = join(cl, "storm", NULL);
	while (!__atomic_load_n(&board->stop, __ATOMIC_ACQUIRE)) {
		struct record *r;
		uint32_t id, last;
		int rc = shmq_consumer_poll(c, &m, 100);
		volatile unsigned spin;

		if (rc == -EAGAIN)
			continue;
		if (rc || id_of(&m, &id) || id >= N) {
			__atomic_add_fetch(&board->bad_msgs, 1, __ATOMIC_RELAXED);
			continue;
		}
		r = &board->rec[id];
		__atomic_add_fetch(&r->deliveries, 1, __ATOMIC_RELAXED);
		if (__atomic_load_n(&r->ack_ok, __ATOMIC_ACQUIRE))
			__atomic_add_fetch(&r->after_ack, 1, __ATOMIC_RELAXED);
		last = __atomic_exchange_n(&r->last_count, m.delivery_count, __ATOMIC_RELAXED);
		if (m.delivery_count <= last)
			__atomic_add_fetch(&r->count_regress, 1, __ATOMIC_RELAXED);
		/* Some work, so that kills land in it as well as in the calls. */
		for (spin = (unsigned)(rand() % 400000); spin; spin--)
			;
		__atomic_add_fetch(&r->ack_started, 1, __ATOMIC_RELAXED);
		rc = shmq_consumer_ack(c);
		__atomic_add_fetch(rc == 0 ? &r->ack_ok : &r->ack_other, 1, __ATOMIC_RELEASE);
	}
	shmq_consumer_close(c);
	shmq_close(cl);
	_exit(0);
}

static pid_t spawn(unsigned seed)
{
	pid_t pid = fork();

	if (pid < 0)
		bail("fork");
	if (pid == 0)
		worker(seed);
	return pid;
}

static uint32_t acked_count(void)
{
	uint32_t i, n = 0;

	for (i = 0; i < N; i++)
		if (__atomic_load_n(&board->rec[i].ack_ok, __ATOMIC_ACQUIRE) ||
		    __atomic_load_n(&board->rec[i].ack_started, __ATOMIC_ACQUIRE) >
			    __atomic_load_n(&board->rec[i].ack_other, __ATOMIC_ACQUIRE))
			n++;
	return n;
}

static void kill_storm(shmq_client_t *cl, shmq_producer_t *p)
{
	pid_t w[WORKERS];
	uint32_t i, twice = 0, never = 0, after = 0, regress = 0, unsure = 0;
	uint32_t redelivered = 0;
	uint64_t t0;
	int k;

	board = mmap(NULL, sizeof(*board), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (board == MAP_FAILED)
		bail("mmap");
	/* The group exists before the messages, so it sees them all. */
	shmq_consumer_close(join(cl, "storm", NULL));
	send_ids(p, 0, 0, N / 2);
	send_ids(p, 1, N / 2, N - N / 2);
	for (k = 0; k < WORKERS; k++)
		w[k] = spawn(1000u + (unsigned)k);
	for (k = 0; k < KILLS; k++) {
		struct timespec ts = { 0, (long)(1 + rand() % 15) * 1000000L };
		int v = rand() % WORKERS;

		nanosleep(&ts, NULL);
		kill(w[v], SIGKILL);
		if (tu_wait_child(w[v], 5000) == -1)
			bail("worker did not die");
		w[v] = spawn(2000u + (unsigned)k);
	}
	/* Let the last members finish; bounded. */
	t0 = tu_now_ns();
	while (acked_count() < N && tu_now_ns() - t0 < 20000000000ull)
		usleep(10000);
	__atomic_store_n(&board->stop, 1, __ATOMIC_RELEASE);
	for (k = 0; k < WORKERS; k++)
		if (tu_wait_child(w[k], 5000) != 0)
			diag("worker %d did not exit cleanly", k);

	for (i = 0; i < N; i++) {
		struct record *r = &board->rec[i];

		if (r->ack_ok > 1)
			twice++;
		if (!r->ack_ok && r->ack_started <= r->ack_other)
			never++;
		if (!r->ack_ok && r->ack_started > r->ack_other)
			unsure++; /* its ack was cut off by a kill */
		after += r->after_ack;
		regress += r->count_regress;
		if (r->last_count > 1)
			redelivered++;
	}
	diag("kill storm: %d kills, %u of %u messages delivered more than once, %u acks cut off by a kill",
	     KILLS, redelivered, N, unsure);
	is_int(board->bad_msgs, 0, "kill storm: every message intact");
	is_int(never, 0, "kill storm: every message acknowledged");
	is_int(twice, 0, "kill storm: no message acknowledged twice");
	is_int(after, 0, "kill storm: no message delivered again after its ack returned 0");
	is_int(regress, 0, "kill storm: delivery counts only go up");
	ok(redelivered > 0, "kill storm: kills did cause deliveries again (%u)", redelivered);
	munmap(board, sizeof(*board));
}

static int group_stat(shmq_client_t *cl, const char *group, struct shmq_group_stat *out)
{
	struct shmq_topic_stat *st;
	uint32_t g;
	int found = -1;

	if (shmq_topic_stat(cl, "jobs", &st))
		return -1;
	for (g = 0; g < st->group_count; g++)
		if (!strcmp(st->groups[g].name, group)) {
			*out = st->groups[g];
			out->member = NULL;
			out->partitions = NULL;
			found = 0;
		}
	shmq_topic_stat_free(st);
	return found;
}

/* Wait (bounded) until group's parked count is `want`. */
static int wait_parked(shmq_client_t *cl, const char *group, uint32_t want)
{
	struct shmq_group_stat gs;
	uint64_t t0 = tu_now_ns();

	while (tu_now_ns() - t0 < 3000000000ull) {
		if (group_stat(cl, group, &gs) == 0 && gs.parked == want)
			return 0;
		usleep(2000);
	}
	return -1;
}

/*
 * A member process of group that takes one message, says so on fd, and
 * holds it (never acknowledges) until it is killed.
 */
static pid_t spawn_holder(const char *group, const struct shmq_consumer_opts *o,
			  int fd)
{
	pid_t kid = fork();

	if (kid < 0)
		bail("fork");
	if (kid == 0) {
		shmq_client_t *c2;
		shmq_consumer_t *c;
		struct shmq_msg m;
		char one = 1;

		tap_child();
		if (shmq_open(dir, NULL, &c2))
			_exit(2);
		c = join(c2, group, o);
		if (shmq_consumer_poll(c, &m, 2000))
			_exit(3);
		if (write(fd, &one, 1) != 1)
			_exit(4);
		pause();
		_exit(5);
	}
	return kid;
}

/* Five members die holding one message each, all of partition 0. */
static void many_parked(shmq_client_t *cl, shmq_producer_t *p)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *b;
	struct shmq_msg m;
	pid_t kid[5];
	int fds[2], k, got = 0, counts_ok = 1;
	uint32_t seen[5] = { 0 }, id;

	o.from = SHMQ_FROM_LATEST;
	b = join(cl, "five", &o);
	send_ids(p, 0, 10000, 5);
	if (pipe(fds))
		bail("pipe");
	for (k = 0; k < 5; k++)
		kid[k] = spawn_holder("five", NULL, fds[1]);
	close(fds[1]);
	for (k = 0; k < 5; k++) {
		char one;

		if (read(fds[0], &one, 1) != 1)
			bail("a member did not take its message");
	}
	close(fds[0]);
	for (k = 0; k < 5; k++) {
		kill(kid[k], SIGKILL);
		tu_wait_child(kid[k], 2000);
	}
	while (shmq_consumer_poll(b, &m, 1000) == 0) {
		if (id_of(&m, &id) || id < 10000 || id >= 10005)
			continue;
		seen[id - 10000]++;
		got++;
		if (m.delivery_count != 2)
			counts_ok = 0;
		shmq_consumer_ack(b);
	}
	ok(got == 5 && seen[0] == 1 && seen[1] == 1 && seen[2] == 1 && seen[3] == 1 &&
	   seen[4] == 1 && counts_ok,
	   "five members die holding a message each of one partition: all five come again, once, with delivery_count 2 (%d)",
	   got);
	shmq_consumer_close(b);
}

static void ack_timeouts(shmq_client_t *cl, shmq_producer_t *p)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	struct shmq_group_stat gs;
	shmq_consumer_t *a, *b;
	struct shmq_msg m;
	uint32_t id = 0;
	int rc;

	o.from = SHMQ_FROM_LATEST;
	o.ack_timeout_ms = 50;
	a = join(cl, "slow", &o);
	b = join(cl, "slow", &o);
	send_ids(p, 0, 20000, 1);
	rc = shmq_consumer_poll(a, &m, 1000);
	ok(rc == 0 && m.delivery_count == 1, "ack timeout: member A takes the message");
	/* A sits on it; B gets it once the timeout ran out. */
	rc = shmq_consumer_poll(b, &m, 3000);
	if (rc == 0)
		id_of(&m, &id);
	ok(rc == 0 && id == 20000 && m.delivery_count == 2,
	   "ack timeout: after it, member B gets the message with delivery_count 2");
	is_int(shmq_consumer_ack(a), SHMQ_EREVOKED, "A's late ack: SHMQ_EREVOKED (B has it)");
	is_int(shmq_consumer_ack(b), 0, "B's ack counts");
	ok(group_stat(cl, "slow", &gs) == 0 && gs.expired == 1 && gs.redelivered == 1 &&
	   gs.parked == 0,
	   "stat: expired 1, redelivered 1, parked 0");

	/* A late ack before anyone took it calls the redelivery off. */
	send_ids(p, 0, 20001, 1);
	rc = shmq_consumer_poll(a, &m, 1000);
	ok(rc == 0 && wait_parked(cl, "slow", 1) == 0,
	   "ack timeout: a message held too long is parked");
	is_int(shmq_consumer_ack(a), 0, "a late ack before another member took it counts");
	is_int(shmq_consumer_poll(b, &m, 200), -EAGAIN, "and the message is not delivered again");
	ok(group_stat(cl, "slow", &gs) == 0 && gs.parked == 0, "nothing parked");
	shmq_consumer_close(a);
	shmq_consumer_close(b);
}

static int read_dead_letter(shmq_client_t *cl, const char *group, uint32_t *id,
			    struct shmq_dead_letter *dl)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *r;
	struct shmq_msg m;
	const void *val;
	size_t vlen = 0;
	uint32_t v[8];
	int rc;

	o.from = SHMQ_FROM_COMMITTED;
	if (shmq_consumer_open(cl, "jobs.dlq", group, &o, &r))
		return -1;
	rc = shmq_consumer_poll(r, &m, 1000);
	if (rc == 0)
		rc = shmq_dead_letter_parse(&m, dl, NULL, &val, &vlen);
	if (rc == 0 && vlen == sizeof(v)) {
		memcpy(v, val, sizeof(v));
		*id = v[0];
	}
	shmq_consumer_release(r);
	shmq_consumer_commit(r);
	shmq_consumer_close(r);
	return rc;
}

static void dead_letters(shmq_client_t *cl, shmq_producer_t *p)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	struct shmq_topic_opts dto = SHMQ_TOPIC_OPTS_INIT;
	struct shmq_dead_letter dl;
	struct shmq_group_stat gs;
	shmq_consumer_t *a, *b, *rd;
	struct shmq_msg m;
	uint32_t id = 0, counts[3] = { 0 };
	int i, rc = 0;

	dto.ring_bytes = 64 << 10;
	if (shmq_topic_create(cl, "jobs.dlq", &dto))
		bail("create dlq: %s", shmq_errdetail());
	/* A reader group on the DLQ from now on. */
	o.from = SHMQ_FROM_LATEST;
	if (shmq_consumer_open(cl, "jobs.dlq", "dlr", &o, &rd))
		bail("dlr: %s", shmq_errdetail());
	shmq_consumer_close(rd);

	/* A message that always fails: nacked until max_deliveries. */
	o.max_deliveries = 3;
	o.dead_letter_topic = "jobs.dlq";
	a = join(cl, "failing", &o);
	send_ids(p, 1, 30000, 1);
	for (i = 0; i < 3 && rc == 0; i++) {
		rc = shmq_consumer_poll(a, &m, 1000);
		if (rc == 0) {
			counts[i] = m.delivery_count;
			rc = shmq_consumer_nack(a);
		}
	}
	ok(rc == 0 && counts[0] == 1 && counts[1] == 2 && counts[2] == 3,
	   "a message that always fails is delivered 3 times (%u %u %u)", counts[0],
	   counts[1], counts[2]);
	is_int(shmq_consumer_poll(a, &m, 200), -EAGAIN, "and not a fourth time");
	rc = read_dead_letter(cl, "dlr", &id, &dl);
	ok(rc == 0 && id == 30000 && dl.partition == 1 && dl.delivery_count == 3 &&
	   dl.reason == SHMQ_REDELIVER_NACK,
	   "it is in the dead-letter topic: partition 1, 3 deliveries, reason nack");
	ok(group_stat(cl, "failing", &gs) == 0 && gs.dead_lettered == 1 && gs.redelivered == 2,
	   "stat: dead_lettered 1, redelivered 2");
	shmq_consumer_close(a);

	/* Held past its ack timeout by one member, given up by the next. */
	o.max_deliveries = 1;
	o.ack_timeout_ms = 30;
	a = join(cl, "stuck", &o);
	b = join(cl, "stuck", &o);
	send_ids(p, 0, 30001, 1);
	rc = shmq_consumer_poll(a, &m, 1000);
	if (rc == 0)
		rc = wait_parked(cl, "stuck", 1);
	is_int(rc == 0 ? shmq_consumer_poll(b, &m, 300) : rc, -EAGAIN,
	       "max_deliveries 1: the expired message is not delivered to B");
	rc = read_dead_letter(cl, "dlr", &id, &dl);
	ok(rc == 0 && id == 30001 && dl.delivery_count == 1 &&
	   dl.reason == SHMQ_REDELIVER_ACK_TIMEOUT,
	   "it is a dead letter with reason ack timeout");
	is_int(shmq_consumer_ack(a), SHMQ_EREVOKED, "A's late ack: SHMQ_EREVOKED");
	shmq_consumer_close(a);
	shmq_consumer_close(b);
}

/* An at-most-once member dies holding a message: it is not delivered again. */
static void at_most_once(shmq_client_t *cl, shmq_producer_t *p)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *b;
	struct shmq_msg m;
	uint32_t id = 0;
	int fds[2], rc;
	pid_t kid;
	char one;

	o.from = SHMQ_FROM_LATEST;
	o.flags = SHMQ_CONSUMER_AT_MOST_ONCE;
	b = join(cl, "amo", &o);
	send_ids(p, 0, 40000, 1);
	if (pipe(fds))
		bail("pipe");
	kid = spawn_holder("amo", &o, fds[1]);
	close(fds[1]);
	if (read(fds[0], &one, 1) != 1)
		bail("the at-most-once member took nothing");
	close(fds[0]);
	kill(kid, SIGKILL);
	tu_wait_child(kid, 2000);
	send_ids(p, 0, 40001, 1);
	rc = shmq_consumer_poll(b, &m, 1000);
	if (rc == 0)
		id_of(&m, &id);
	ok(rc == 0 && id == 40001 && m.delivery_count == 1 &&
	   shmq_consumer_poll(b, &m, 200) == -EAGAIN,
	   "at most once: what a dead member held is not delivered again (next: %u)", id);
	is_int(shmq_consumer_nack(b), -EINVAL, "at most once: nack is refused");
	shmq_consumer_close(b);
}

/* A member gives a message back and leaves: another member gets it. */
static void close_parked(shmq_client_t *cl, shmq_producer_t *p)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	struct shmq_group_stat gs;
	shmq_consumer_t *a, *b;
	struct shmq_msg m;
	uint64_t t0;
	uint32_t id = 0;
	int rc;

	o.from = SHMQ_FROM_LATEST;
	a = join(cl, "leaver", &o);
	b = join(cl, "leaver", &o);
	send_ids(p, 0, 50000, 1);
	rc = shmq_consumer_poll(a, &m, 1000);
	if (rc == 0)
		rc = shmq_consumer_nack(a);
	shmq_consumer_close(a);
	if (rc == 0)
		rc = shmq_consumer_poll(b, &m, 1000);
	if (rc == 0)
		id_of(&m, &id);
	ok(rc == 0 && id == 50000 && m.delivery_count == 2,
	   "a message given back by a member that then left goes to another member");
	shmq_consumer_ack(b);
	/* shmqd frees the slot the leaver kept for it. */
	t0 = tu_now_ns();
	while (tu_now_ns() - t0 < 3000000000ull &&
	       (group_stat(cl, "leaver", &gs) || gs.members != 1))
		usleep(5000);
	is_int(gs.members, 1, "then the leaver's slot is freed");
	shmq_consumer_close(b);
}

int main(void)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	shmq_client_t *cl;
	shmq_producer_t *p;
	pid_t d;

	tu_init(180);
	plan(27);
	srand((unsigned)getpid());
	tu_make_dir("ack", dir, sizeof(dir));
	d = tu_shmqd_start(dir, NULL);
	if (shmq_open(dir, NULL, &cl))
		bail("open: %s", shmq_errdetail());
	to.partitions = 2;
	to.ring_bytes = 256 << 10;
	to.full_policy = SHMQ_FULL_BLOCK;
	to.spill = SHMQ_SPILL_OFF;
	if (shmq_topic_create(cl, "jobs", &to) || shmq_producer_open(cl, "jobs", NULL, &p))
		bail("create: %s", shmq_errdetail());

	kill_storm(cl, p);
	many_parked(cl, p);
	ack_timeouts(cl, p);
	dead_letters(cl, p);
	at_most_once(cl, p);
	close_parked(cl, p);

	shmq_producer_close(p);
	shmq_close(cl);
	tu_shmqd_stop(d, 0);
	tu_cleanup(dir);
	return tap_done();
}
