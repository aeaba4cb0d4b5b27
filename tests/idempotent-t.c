/*
 * idempotent-t.c - idempotent producers and consumer-side dedup.
 *
 * kill    A child producer with an identity sends sequences 1..N into one
 *         partition and is SIGKILLed at a random moment, ROUNDS times.
 *         Each new child resumes from what it knows was acknowledged (a
 *         counter it keeps in memory shared with the parent, which lags
 *         the truth when it dies between a send's return and the store),
 *         minus a random window: it deliberately sends again sequences
 *         already stored.  Those must give SHMQ_EDUPLICATE, the others
 *         must be stored, and shmq_producer_last_seq() must agree with
 *         the acknowledged counter (equal, or one ahead: the message whose
 *         acknowledgement the kill cut off).  A last child finishes.  The
 *         partition must then hold every sequence 1..N exactly once, in
 *         order, intact.  Twice: on a topic that does not spill, read
 *         while the producers run (the ring laps many times, so a dead
 *         producer's attempt is often no longer in the ring when its
 *         successor looks), and on a spilling topic read only at the end
 *         (everything goes through the spill files).
 *
 * codes   SHMQ_EDUPLICATE, -EINVAL, -EBUSY for a live holder (this process
 *         or another), takeover from a dead holder, what messages carry,
 *         the crash windows of the send protocol set up by hand in the
 *         identity's record (committed but not recorded, claimed but not
 *         committed, gone from the ring), identity delete, limits.
 *
 * dedup   shmq_dedup_* against a model.
 *
 * spill   Frames with the extension in a spill log, after a version 1
 *         segment (an older shmqd's): the writer rolls past it, and a
 *         reader returns both kinds with their producer id and sequence.
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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "spill.h"
#include "tap.h"
#include "testutil.h"

#define ROUNDS	  40
#define N_MSGS	  12000
#define MAX_VALUE 400
#define FILL	  "fill: not from the producer under test, 64 bytes of it, padded."

static char dir[256];
static shmq_client_t *cl;

/* What a child producer shares with the parent. */
struct shared {
	uint64_t acked;	     /* highest sequence whose send returned stored */
	uint32_t violations; /* results that contradict the contract */
	uint32_t dup_seen;   /* SHMQ_EDUPLICATE results (sent again on purpose) */
	char why[256];	     /* the first violation */
};
static struct shared *sh;

static uint64_t rnd_state = 0x1de7ull;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* ------------------------------------------------------------------------
 * Messages that prove themselves: value = seq, crc, then bytes from seq.
 */
struct head {
	uint64_t seq;
	uint32_t len;
	uint32_t crc;
};

static size_t make_value(uint64_t seq, uint8_t *buf)
{
	size_t len = sizeof(struct head) + (size_t)(seq * 2654435761u % (MAX_VALUE - 16));
	struct head h = { seq, (uint32_t)len, 0 };
	size_t i;

	for (i = sizeof h; i < len; i++)
		buf[i] = (uint8_t)(seq * 7 + i * 13);
	h.crc = tu_crc(buf + sizeof h, len - sizeof h);
	memcpy(buf, &h, sizeof h);
	return len;
}

/* Does m carry sequence `seq`, intact, from producer `id`? */
static bool msg_ok(const struct shmq_msg *m, uint64_t id, uint64_t seq, char *why,
		   size_t n)
{
	struct head h;

	if (m->value_len < sizeof h) {
		snprintf(why, n, "value of %zu bytes", m->value_len);
		return false;
	}
	memcpy(&h, m->value, sizeof h);
	if (h.seq != seq || m->sequence != seq || m->producer_id != id) {
		snprintf(why, n, "expected seq %" PRIu64 ", got %" PRIu64 " (frame %" PRIu64
			 ", producer %#" PRIx64 ")", seq, h.seq, m->sequence, m->producer_id);
		return false;
	}
	if (h.len != m->value_len ||
	    h.crc != tu_crc((const uint8_t *)m->value + sizeof h, m->value_len - sizeof h)) {
		snprintf(why, n, "seq %" PRIu64 ": payload fails its checksum", seq);
		return false;
	}
	return true;
}

static void violation(const char *fmt, uint64_t a, uint64_t b, int rc)
{
	if (__atomic_fetch_add(&sh->violations, 1, __ATOMIC_SEQ_CST) == 0)
		snprintf(sh->why, sizeof(sh->why), fmt, a, b, shmq_strerror(rc));
}

/* ------------------------------------------------------------------------
 * kill
 */

/* A producer's life: resume, resend a window, go on to n; exits 0 at n. */
static void producer_child(const char *topic, uint64_t n, bool slow)
{
	struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;
	static uint8_t buf[MAX_VALUE];
	shmq_client_t *c;
	shmq_producer_t *p;
	uint64_t acked, last, seq, from;
	int rc, tries = 0;

	tap_child();
	if (shmq_open(dir, NULL, &c))
		_exit(90);
	po.idempotent_id = "idem";
	/*
	 * Half the producers also die by their own hand in one of the two
	 * windows of the send protocol: attempt recorded but not committed,
	 * or committed but not recorded as stored.
	 */
	if (slow && rnd() % 2) {
		shmq__ident_crash_point = rnd() % 2 ? SHMQ_CRASH_TRIED : SHMQ_CRASH_COMMITTED;
		shmq__ident_crash_countdown = (uint32_t)(rnd() % 200);
	}
	/* The parent reaped our predecessor: the identity is free. */
	while ((rc = shmq_producer_open(c, topic, &po, &p)) == -EAGAIN && tries++ < 100)
		usleep(10000);
	if (rc) {
		violation("open: %" PRIu64 " %" PRIu64 " %s", 0, 0, rc);
		_exit(91);
	}
	acked = __atomic_load_n(&sh->acked, __ATOMIC_SEQ_CST);
	if (shmq_producer_last_seq(p, 0, &last))
		_exit(92);
	/* A kill may cut one acknowledgement off, never more. */
	if (last != acked && last != acked + 1)
		violation("last_seq %" PRIu64 " but %" PRIu64 " acknowledged (%s)", last, acked, 0);
	if (last > acked)
		__atomic_store_n(&sh->acked, last, __ATOMIC_SEQ_CST);
	/* Resume from what we know, minus a window sent again on purpose. */
	from = acked + 1;
	from = from > 1 + rnd() % 64 ? from - rnd() % 64 : 1;
	for (seq = from; seq <= n; seq++) {
		size_t len = make_value(seq, buf);

		rc = shmq_producer_send_seq(p, 0, seq, NULL, 0, buf, len, -1, NULL);
		if (seq <= last) {
			if (rc != SHMQ_EDUPLICATE)
				violation("seq %" PRIu64 " (last %" PRIu64 ") sent again: %s", seq, last, rc);
			else
				__atomic_fetch_add(&sh->dup_seen, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		if (rc != 0) {
			violation("seq %" PRIu64 " (last %" PRIu64 "): %s", seq, last, rc);
			_exit(93);
		}
		__atomic_store_n(&sh->acked, seq, __ATOMIC_SEQ_CST);
		/* Spread the sends over the rounds, so that kills land anywhere. */
		if (slow && seq % 4 == 0)
			usleep((useconds_t)(rnd() % 300));
	}
	shmq_producer_close(p);
	shmq_close(c);
	_exit(0);
}

/* Read what is there (at most for wait_ms), checking order and content. */
static void consume(shmq_consumer_t *c, uint64_t id, uint64_t *next, uint32_t *bad,
		    char *why, size_t n, int wait_ms)
{
	uint64_t end = tu_now_ns() + (uint64_t)wait_ms * 1000000;
	struct shmq_msg m;

	do {
		int rc = shmq_consumer_poll(c, &m, 1);

		if (rc == -EAGAIN)
			continue;
		if (rc) {
			if (!(*bad)++)
				snprintf(why, n, "poll: %s", shmq_strerror(rc));
			continue;
		}
		/* The parent's filler (see fill): not the producer's. */
		if (!m.producer_id && m.value_len == sizeof(FILL) && !memcmp(m.value, FILL, sizeof(FILL)))
			continue;
		if (!msg_ok(&m, id, *next, *bad ? (char[256]){ 0 } : why, *bad ? 256 : n))
			(*bad)++;
		/* Go by what arrived: one wrong message is one failure. */
		if (m.value_len >= sizeof(struct head)) {
			struct head h;

			memcpy(&h, m.value, sizeof h);
			if (h.seq >= *next)
				*next = h.seq + 1;
		}
	} while (tu_now_ns() < end);
}

/*
 * Publish two rings' worth of plain messages into partition 0 (reading
 * meanwhile on the live topic), so that what a dead producer left is no
 * longer in the ring when its successor looks.
 */
static void fill(shmq_producer_t *p, shmq_consumer_t *c, uint64_t id, bool live,
		 uint64_t *next, uint32_t *bad, char *why, size_t n)
{
	uint64_t bytes = 0, end = tu_now_ns() + 10000000000ull;

	while (bytes < 2 * SHMQ_RING_MIN && tu_now_ns() < end) {
		int rc = shmq_send(p, 0, NULL, 0, FILL, sizeof(FILL), live ? 0 : 100, NULL);

		if (rc == 0)
			bytes += shmq__frame_bytes(0, sizeof(FILL));
		else if (live)
			consume(c, id, next, bad, why, n, 1);
	}
}

static void test_kill(const char *topic, int spill)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;
	shmq_consumer_t *c;
	shmq_producer_t *p, *plain;
	uint64_t next = 1, id, last = 0, end;
	uint32_t bad = 0, killed = 0;
	char why[256] = "";
	bool live = spill == SHMQ_SPILL_OFF;
	int r, rc, st = 0;
	pid_t pid;

	memset(sh, 0, sizeof(*sh));
	to.ring_bytes = SHMQ_RING_MIN;
	to.spill = spill;
	to.full_policy = live ? SHMQ_FULL_BLOCK : SHMQ_FULL_SPILL;
	rc = shmq_topic_create(cl, topic, &to);
	if (rc)
		bail("create %s: %s (%s)", topic, shmq_strerror(rc), shmq_errdetail());
	co.from = SHMQ_FROM_EARLIEST;
	rc = shmq_consumer_open(cl, topic, "check", &co, &c);
	if (rc)
		bail("consumer %s: %s", topic, shmq_strerror(rc));
	/* The id every message must carry. */
	po.idempotent_id = "idem";
	if (shmq_producer_open(cl, topic, &po, &p))
		bail("producer %s: %s", topic, shmq_errdetail());
	id = shmq_producer_id(p);
	shmq_producer_close(p);
	if (shmq_producer_open(cl, topic, NULL, &plain))
		bail("producer %s: %s", topic, shmq_errdetail());

	for (r = 0; r <= ROUNDS; r++) {
		uint64_t delay_ms = r % 7 == 3 ? 0 : 1 + rnd() % 25;

		pid = fork();
		if (pid < 0)
			bail("fork: %s", strerror(errno));
		if (pid == 0)
			producer_child(topic, N_MSGS, r < ROUNDS);
		if (r == ROUNDS) {
			/* The last one finishes; read meanwhile. */
			end = tu_now_ns() + 60000000000ull;
			while (waitpid(pid, &st, WNOHANG) == 0 && tu_now_ns() < end) {
				if (live)
					consume(c, id, &next, &bad, why, sizeof(why), 5);
				else
					usleep(5000);
			}
			if (tu_now_ns() >= end) {
				kill(pid, SIGKILL);
				waitpid(pid, &st, 0);
			}
			break;
		}
		if (live)
			consume(c, id, &next, &bad, why, sizeof(why), (int)delay_ms);
		else if (delay_ms)
			usleep((useconds_t)(delay_ms * 1000));
		if (waitpid(pid, &st, WNOHANG) == 0) {
			kill(pid, SIGKILL);
			killed++;
			if (tu_wait_child(pid, 10000) == -1)
				diag("round %d: the producer did not die", r);
		} else if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
			/* Not at its crash point: a violation (sh->why), or worse. */
			diag("round %d: the producer ended by itself (status %#x)", r,
			     (unsigned)st);
		}
		if (r % 2)
			fill(plain, c, id, live, &next, &bad, why, sizeof(why));
	}
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	   "%s: the last producer finished (status %#x)", topic, (unsigned)st);
	ok(sh->violations == 0,
	   "%s: %u kills; every resent sequence gave SHMQ_EDUPLICATE (%u), every new one was stored, last_seq matched the acknowledgements (%u violations%s%s)",
	   topic, killed, sh->dup_seen, sh->violations, sh->violations ? ": " : "", sh->why);
	p = NULL;
	if (shmq_producer_open(cl, topic, &po, &p) == 0)
		shmq_producer_last_seq(p, 0, &last);
	is_u64(last, N_MSGS, "%s: a new holder of the identity sees last sequence %d", topic, N_MSGS);
	shmq_producer_close(p);

	/* Read the rest (on the spilling topic: everything, mostly from disk). */
	end = tu_now_ns() + 60000000000ull;
	while (next <= N_MSGS && tu_now_ns() < end)
		consume(c, id, &next, &bad, why, sizeof(why), 50);
	/* Nothing after N: no duplicate trails the last message. */
	consume(c, id, &next, &bad, why, sizeof(why), 300);
	ok(bad == 0, "%s: %s; in order, intact, with the producer id (%u bad%s%s)",
	   topic, live ? "read while producing" : "read from the spill files and the ring",
	   bad, bad ? ": " : "", why);
	is_u64(next, N_MSGS + 1, "%s: every sequence 1..%d arrived exactly once, none after",
	       topic, N_MSGS);
	if (!live)
		ok(shmq__consumer_disk_reads(c) > 0,
		   "%s: %" PRIu64 " messages came from the spill files", topic,
		   shmq__consumer_disk_reads(c));
	shmq_producer_close(plain);
	shmq_consumer_close(c);
}

/* ------------------------------------------------------------------------
 * codes
 */

static shmq_producer_t *ident_producer(const char *topic, const char *name, int *rc)
{
	struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;
	shmq_producer_t *p = NULL;

	po.idempotent_id = name;
	*rc = shmq_producer_open(cl, topic, &po, &p);
	return *rc ? NULL : p;
}

/* Its last sequence in partition 0, UINT64_MAX when that fails. */
static uint64_t last_of(shmq_producer_t *p)
{
	uint64_t last;

	return p && shmq_producer_last_seq(p, 0, &last) == 0 ? last : UINT64_MAX;
}

static int send_seq(shmq_producer_t *p, int part, uint64_t seq)
{
	uint8_t buf[MAX_VALUE];
	size_t len = make_value(seq, buf);

	return shmq_producer_send_seq(p, part, seq, NULL, 0, buf, len, 1000, NULL);
}

/* Fork a child that opens identity name of topic and reports by status. */
static int child_open(const char *topic, const char *name)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		shmq_client_t *c;
		shmq_producer_t *p;
		int rc;

		tap_child();
		if (shmq_open(dir, NULL, &c))
			_exit(90);
		p = NULL;
		{
			struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;

			po.idempotent_id = name;
			rc = shmq_producer_open(c, topic, &po, &p);
		}
		_exit(rc == -EBUSY ? 1 : rc == 0 ? 0 : 2);
	}
	st = tu_wait_child(pid, 10000);
	return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A child that takes identity name, sends 1..n into partition 0, and waits to die. */
static pid_t child_hold(const char *topic, const char *name, uint64_t n)
{
	int fds[2];
	pid_t pid;
	char b;

	if (pipe(fds))
		bail("pipe");
	pid = fork();
	if (pid == 0) {
		shmq_client_t *c;
		shmq_producer_t *p;
		uint64_t s;
		int rc;

		tap_child();
		close(fds[0]);
		if (shmq_open(dir, NULL, &c))
			_exit(90);
		p = ident_producer(topic, name, &rc);
		for (s = 1; p && s <= n; s++)
			if (send_seq(p, 0, s) != 0)
				_exit(91);
		if (write(fds[1], "x", 1) != 1)
			_exit(92);
		for (;;)
			pause();
	}
	close(fds[1]);
	if (read(fds[0], &b, 1) != 1)
		diag("the holder did not start");
	close(fds[0]);
	return pid;
}

static void test_codes(void)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	shmq_producer_t *a, *b, *plain;
	struct shmq_map *m;
	struct shmq_msg msg;
	shmq_consumer_t *c;
	uint64_t last = 99, off, id;
	char why[256];
	int rc, part, i;
	pid_t pid;

	to.partitions = 2;
	to.spill = SHMQ_SPILL_OFF;
	to.full_policy = SHMQ_FULL_FAIL;
	to.max_message = 1000;
	if (shmq_topic_create(cl, "codes", &to))
		bail("create codes");
	{
		struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;

		co.from = SHMQ_FROM_EARLIEST;
		if (shmq_consumer_open(cl, "codes", "g", &co, &c))
			bail("consumer codes");
	}
	if (shmq_producer_open(cl, "codes", NULL, &plain))
		bail("producer codes");
	a = ident_producer("codes", "a", &rc);
	is_int(rc, 0, "open with identity \"a\"");
	if (!a)
		bail("no producer");
	id = shmq_producer_id(a);
	ok(id != 0 && shmq_producer_id(plain) == 0,
	   "an identity's producer id is %#" PRIx64 "; 0 without one", id);
	last = last_of(a);
	ok(last == 0,
	   "a new identity has stored nothing (last_seq %" PRIu64 ")", last);
	is_int(shmq_producer_last_seq(plain, 0, &last), -EINVAL, "last_seq without identity: -EINVAL");
	is_int(shmq_producer_last_seq(a, 2, &last), -EINVAL, "last_seq of a partition out of range: -EINVAL");

	is_int(send_seq(a, 0, 1), 0, "seq 1 stored");
	is_int(send_seq(a, 0, 1), SHMQ_EDUPLICATE, "seq 1 again: SHMQ_EDUPLICATE");
	is_int(send_seq(a, 0, 5), 0, "seq 5 stored (gaps are allowed)");
	is_int(send_seq(a, 0, 3), SHMQ_EDUPLICATE, "seq 3 after 5: SHMQ_EDUPLICATE");
	is_int(send_seq(a, 1, 3), 1, "seq 3 in partition 1: stored (sequences are per partition)");
	is_int(send_seq(a, 0, 0), -EINVAL, "seq 0: -EINVAL");
	is_int(send_seq(a, 0, SHMQ_SEQ_MAX + 1), -EINVAL, "seq above SHMQ_SEQ_MAX: -EINVAL");
	is_int(shmq_producer_send_seq(a, SHMQ_PARTITION_ANY, 9, NULL, 0, "v", 1, 0, NULL),
	       -EINVAL, "round-robin (no partition, no key): -EINVAL");
	part = (int)shmq_key_partition("k", 1, 2);
	rc = shmq_producer_send_seq(a, SHMQ_PARTITION_ANY, 10, "k", 1, "v", 1, 0, &off);
	is_int(rc, part, "a key chooses the partition (%d)", part);
	is_int(shmq_send(a, 0, NULL, 0, "v", 1, 0, NULL), -EINVAL,
	       "shmq_send on a producer with an identity: -EINVAL");
	{
		struct shmq_claim cl_;

		is_int(shmq_producer_claim(a, 0, NULL, 0, 8, 0, &cl_), -EINVAL,
		       "claim on a producer with an identity: -EINVAL");
	}
	{
		static uint8_t big[1000];

		is_int(shmq_producer_send_seq(a, 0, 20, NULL, 0, big, 1000 - 16 + 1, 0, NULL),
		       SHMQ_ETOOBIG, "the extension counts against max_message: SHMQ_ETOOBIG");
		is_int(shmq_producer_send_seq(a, 0, 20, NULL, 0, big, 1000 - 16, 0, NULL), 0,
		       "max_message - 16 bytes fit");
	}
	is_int(shmq_send(plain, 0, NULL, 0, "plain", 5, 0, NULL), 0, "a plain producer still sends");
	last = last_of(a);
	ok(last == 20, "last_seq is 20 (%" PRIu64 ")", last);

	/* What consumers see in partition 0. */
	{
		uint64_t want[5], got[8], pid_ok = 1;
		int nw = 0, ng = 0;

		want[nw++] = 1;
		want[nw++] = 5;
		if (part == 0)
			want[nw++] = 10;
		want[nw++] = 20;
		want[nw++] = 0;
		while (shmq_consumer_poll(c, &msg, 200) == 0 && ng < 8) {
			if (msg.partition != 0)
				continue;
			if (msg.producer_id != (msg.sequence ? id : 0))
				pid_ok = 0;
			if ((msg.sequence == 1 || msg.sequence == 5) &&
			    !msg_ok(&msg, id, msg.sequence, why, sizeof why))
				pid_ok = 0;
			got[ng++] = msg.sequence;
		}
		ok(pid_ok && ng == nw && !memcmp(got, want, sizeof(want[0]) * (size_t)nw),
		   "partition 0 holds seqs 1, 5,%s 20 with the producer id and intact, then a plain message with 0, 0",
		   part == 0 ? " 10," : "");
	}

	/* One live holder. */
	b = ident_producer("codes", "a", &rc);
	is_int(rc, -EBUSY, "a second open of \"a\" in this process: -EBUSY");
	ok(strstr(shmq_errdetail(), "held by pid") != NULL, "the detail names the holder: %s",
	   shmq_errdetail());
	is_int(child_open("codes", "a"), 1, "another process opening \"a\": -EBUSY");
	shmq_producer_close(a);
	is_int(child_open("codes", "a"), 0, "after close, another process may take \"a\"");

	/* Takeover from a dead holder, which learns what it stored. */
	pid = child_hold("codes", "dead", 10);
	is_int(child_open("codes", "dead"), 1, "a live holder in another process: -EBUSY");
	kill(pid, SIGKILL);
	tu_wait_child(pid, 5000);
	b = ident_producer("codes", "dead", &rc);
	is_int(rc, 0, "the identity of a dead holder is taken over");
	last = last_of(b);
	ok(last == 10,
	   "the taker sees the dead holder's last sequence (10: %" PRIu64 ")", last);
	is_int(b ? send_seq(b, 0, 10) : -1, SHMQ_EDUPLICATE, "the dead holder's seq 10: SHMQ_EDUPLICATE");
	is_int(b ? send_seq(b, 0, 11) : -1, 0, "seq 11 is stored");
	shmq_producer_close(b);

	/* The crash windows, set up by hand in the identity's record. */
	if (shmq__topic_get(cl, "codes", &m))
		bail("attach codes");
	a = ident_producer("codes", "win", &rc);
	for (i = 1; a && i <= 3; i++)
		send_seq(a, 0, (uint64_t)i);
	shmq_producer_close(a);
	{
		uint32_t k;
		struct shmq_ident_seq *r = NULL;
		struct shmq_part_header *ph = shmq__part(m, 0);

		for (k = 0; k < SHMQ_MAX_IDENTS; k++)
			if (!strcmp(shmq__ident_slot(m, k)->name, "win"))
				r = &ph->ident[k];
		if (!r)
			bail("no record for \"win\"");
		/* Killed after the commit of 3, before last_seq = 3. */
		r->last_seq = 2;
		r->try_seq = 3;
		a = ident_producer("codes", "win", &rc);
		last = last_of(a);
		ok(last == 3,
		   "committed but not recorded: the successor finds seq 3 in the frame (%" PRIu64 ")", last);
		is_int(a ? send_seq(a, 0, 3) : -1, SHMQ_EDUPLICATE, "and refuses it again");
		shmq_producer_close(a);
		/* Killed after recording the attempt at head, before its commit. */
		r->try_seq = 4;
		r->try_pos = ph->head;
		a = ident_producer("codes", "win", &rc);
		last = last_of(a);
		ok(last == 3,
		   "recorded but not committed: seq 4 is not stored (%" PRIu64 ")", last);
		ok(r->try_seq == (4 | SHMQ_TRY_DONE), "the attempt is marked done");
		is_int(a ? send_seq(a, 0, 4) : -1, 0, "and seq 4 is stored when sent again");
		shmq_producer_close(a);
		/* An attempt whose frame is a stranger's: not ours. */
		r->try_seq = 9;
		r->try_pos = r->last_pos; /* seq 4's frame, not 9 */
		a = ident_producer("codes", "win", &rc);
		last = last_of(a);
		ok(last == 4,
		   "an attempt whose frame carries another sequence is not stored (%" PRIu64 ")", last);
		shmq_producer_close(a);
		/* Gone from the ring: sealed; unmarked means committed... */
		r->try_seq = 6;
		r->try_pos = ph->tail - SHMQ_FRAME_ALIGN;
		a = ident_producer("codes", "win", &rc);
		last = last_of(a);
		ok(last == 6,
		   "an attempt gone from the ring, not marked by the reaper: stored (%" PRIu64 ")", last);
		shmq_producer_close(a);
		/* ... marked (shmqd padded a dead claim) means not stored. */
		r->last_seq = 4;
		r->try_seq = 6 | SHMQ_TRY_DONE;
		a = ident_producer("codes", "win", &rc);
		last = last_of(a);
		ok(last == 4,
		   "an attempt the reaper marked: not stored (%" PRIu64 ")", last);
		shmq_producer_close(a);
	}
	shmq__topic_put(cl, m);

	/* Delete. */
	a = ident_producer("codes", "a", &rc);
	is_int(shmq_identity_delete(cl, "codes", "a"), -EBUSY, "delete a held identity: -EBUSY");
	shmq_producer_close(a);
	is_int(shmq_identity_delete(cl, "codes", "a"), 0, "delete it once let go");
	is_int(shmq_identity_delete(cl, "codes", "a"), -ENOENT, "delete it again: -ENOENT");
	a = ident_producer("codes", "a", &rc);
	last = last_of(a);
	ok(last == 0,
	   "a deleted identity starts again from nothing (%" PRIu64 ")", last);
	shmq_producer_close(a);
	b = ident_producer("codes", "no/slash", &rc);
	is_int(rc, -EINVAL, "a bad identity name: -EINVAL");

	/* Limits. */
	{
		shmq_producer_t *ps[SHMQ_MAX_IDENTS];
		char name[32];
		int n = 0;

		for (i = 0; i < SHMQ_MAX_IDENTS + 1; i++) {
			shmq_producer_t *q;

			snprintf(name, sizeof name, "many-%d", i);
			q = ident_producer("codes", name, &rc);
			if (!q)
				break;
			ps[n++] = q;
			if (n == SHMQ_MAX_IDENTS)
				break;
		}
		/* Three are taken by the identities above: a, dead, win. */
		ok(rc == -EMFILE && n == SHMQ_MAX_IDENTS - 3,
		   "identities run out with -EMFILE after %d more (%s)", n, shmq_strerror(rc));
		while (n)
			shmq_producer_close(ps[--n]);
	}
	shmq_producer_close(plain);
	shmq_consumer_close(c);
}

/* ------------------------------------------------------------------------
 * dedup
 */

static struct shmq_msg dm(uint64_t id, uint32_t part, uint64_t seq)
{
	struct shmq_msg m;

	memset(&m, 0, sizeof m);
	m.producer_id = id;
	m.partition = part;
	m.sequence = seq;
	return m;
}

static int chk(shmq_dedup_t *d, uint64_t id, uint32_t part, uint64_t seq)
{
	struct shmq_msg m = dm(id, part, seq);

	return shmq_dedup_check(d, &m);
}

/* A model: pairs with their highest sequence and when last seen, LRU. */
#define MODEL_MAX 64
struct model {
	uint64_t id[MODEL_MAX], seq[MODEL_MAX], seen[MODEL_MAX];
	uint32_t part[MODEL_MAX];
	int n, cap;
	uint64_t clock;
};

static int model_check(struct model *mo, uint64_t id, uint32_t part, uint64_t seq)
{
	int i, old = 0;

	mo->clock++;
	for (i = 0; i < mo->n; i++) {
		if (mo->id[i] != id || mo->part[i] != part)
			continue;
		mo->seen[i] = mo->clock;
		if (seq <= mo->seq[i])
			return 0;
		mo->seq[i] = seq;
		return 1;
	}
	if (mo->n == mo->cap) {
		for (i = 1; i < mo->n; i++)
			if (mo->seen[i] < mo->seen[old])
				old = i;
		mo->n--;
		mo->id[old] = mo->id[mo->n];
		mo->seq[old] = mo->seq[mo->n];
		mo->seen[old] = mo->seen[mo->n];
		mo->part[old] = mo->part[mo->n];
	}
	mo->id[mo->n] = id;
	mo->part[mo->n] = part;
	mo->seq[mo->n] = seq;
	mo->seen[mo->n] = mo->clock;
	mo->n++;
	return 1;
}

static void test_dedup(void)
{
	shmq_dedup_t *d;
	struct model mo;
	int i, diff = 0, cap;

	is_int(shmq_dedup_create((1u << 24) + 1, &d), -EINVAL, "dedup: too many entries: -EINVAL");
	if (shmq_dedup_create(4, &d))
		bail("dedup create");
	ok(chk(d, 1, 0, 1) == 1 && chk(d, 1, 0, 1) == 0 && chk(d, 1, 0, 2) == 1 &&
	   chk(d, 1, 0, 1) == 0 && chk(d, 1, 0, 2) == 0,
	   "dedup: a sequence at or below the highest seen is a duplicate");
	ok(chk(d, 1, 1, 1) == 1 && chk(d, 2, 0, 1) == 1,
	   "dedup: per producer and partition");
	ok(chk(d, 0, 0, 0) == 1 && chk(d, 0, 0, 0) == 1, "dedup: messages without producer id pass");
	is_int(shmq_dedup_check(d, NULL), -EINVAL, "dedup: NULL message: -EINVAL");
	/* (1,0) (1,1) (2,0) kept; (3,0) fills; (4,0) evicts the least recent. */
	chk(d, 1, 0, 2);
	chk(d, 1, 1, 1);
	chk(d, 2, 0, 1);
	chk(d, 3, 0, 1);
	chk(d, 1, 1, 1);
	chk(d, 1, 0, 2); /* (2,0) is now the least recently seen */
	ok(chk(d, 4, 0, 1) == 1 && shmq_dedup_evictions(d) == 1, "dedup: a fifth pair evicts one");
	ok(chk(d, 1, 1, 1) == 0 && chk(d, 1, 0, 2) == 0 && chk(d, 3, 0, 1) == 0,
	   "dedup: the recently seen pairs are kept");
	is_int(chk(d, 2, 0, 1), 1, "dedup: the least recently seen pair was forgotten (its duplicate passes)");
	shmq_dedup_free(d);
	shmq_dedup_free(NULL);

	/* Random traffic against the model, within and beyond capacity. */
	for (cap = 16; cap <= MODEL_MAX; cap *= 4) {
		if (shmq_dedup_create((uint32_t)cap, &d))
			bail("dedup create");
		memset(&mo, 0, sizeof mo);
		mo.cap = cap;
		for (i = 0; i < 200000; i++) {
			uint64_t id = 1 + rnd() % (uint64_t)(cap + cap / 2);
			uint32_t part = (uint32_t)(rnd() % 2);
			uint64_t seq = 1 + rnd() % 1000;

			if (chk(d, id, part, seq) != model_check(&mo, id, part, seq))
				diff++;
		}
		is_int(diff, 0, "dedup: 200000 random checks with %d entries agree with an LRU model (%" PRIu64 " evictions)",
		       cap, shmq_dedup_evictions(d));
		shmq_dedup_free(d);
	}
}

/* ------------------------------------------------------------------------
 * spill
 */

static int append(struct shmq_spill_log *log, uint64_t pos, uint64_t id, uint64_t seq,
		  const char *val)
{
	struct shmq_frame_view v;

	memset(&v, 0, sizeof v);
	v.pos = pos;
	v.size = shmq__frame_bytes((id ? SHMQ_FRAME_EXT : 0) + 1, strlen(val));
	v.producer_id = id;
	v.seq = seq;
	v.key = (const uint8_t *)"k";
	v.key_len = 1;
	v.value = (const uint8_t *)val;
	v.value_len = (uint32_t)strlen(val);
	v.timestamp_ns = 1;
	return shmq__spill_append(log, &v) ? -1 : (int)v.size;
}

static void test_spill(void)
{
	struct shmq_spill_seg_header h;
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r;
	struct shmq_spill_stat st;
	struct shmq_frame_view v;
	char path[512];
	uint64_t pos = 0;
	int fd, n, good = 0;

	if (shmq__spill_open(dir, "old", 0, NULL, NULL, &log))
		bail("spill open: %s", shmq_errdetail());
	n = append(log, pos, 0, 0, "plain");
	pos += (uint64_t)n;
	shmq__spill_sync(log);
	shmq__spill_close(log);
	/* Make it a version 1 segment, as an older shmqd wrote it. */
	snprintf(path, sizeof path, "%s/spill/old/0/00000000000000000000.seg", dir);
	fd = open(path, O_RDWR);
	if (fd < 0 || pread(fd, &h, sizeof h, 0) != sizeof h)
		bail("%s: %s", path, strerror(errno));
	h.version = 1;
	h.crc = shmq__crc32c(0, &h, offsetof(struct shmq_spill_seg_header, crc));
	if (pwrite(fd, &h, sizeof h, 0) != sizeof h)
		bail("pwrite");
	close(fd);

	is_int(shmq__spill_open(dir, "old", 0, NULL, NULL, &log), 0,
	       "spill: a log whose segment is version 1 opens");
	n = append(log, pos, 0x1de7, 7, "ext");
	ok(n > 0, "spill: a frame with the extension is appended");
	pos += (uint64_t)(n > 0 ? n : 0);
	append(log, pos, 0, 0, "plain2");
	shmq__spill_sync(log);
	shmq__spill_stat(log, &st);
	is_int(st.segments, 2, "spill: the writer rolled past the version 1 segment first");
	shmq__spill_close(log);

	if (shmq__spill_reader_open(dir, "old", 0, NULL, &r))
		bail("reader");
	pos = 0;
	if (shmq__spill_read(r, pos, &v) == 0 && !v.producer_id && !v.seq &&
	    v.value_len == 5 && !memcmp(v.value, "plain", 5))
		good++;
	pos += v.size;
	if (shmq__spill_read(r, pos, &v) == 0 && v.producer_id == 0x1de7 && v.seq == 7 &&
	    v.key_len == 1 && v.key[0] == 'k' && v.value_len == 3 && !memcmp(v.value, "ext", 3))
		good++;
	pos += v.size;
	if (shmq__spill_read(r, pos, &v) == 0 && !v.producer_id &&
	    v.value_len == 6 && !memcmp(v.value, "plain2", 6))
		good++;
	is_int(good, 3, "spill: a reader returns the old frame, the extension's id and sequence, and the next frame");
	shmq__spill_reader_close(r);
}

int main(void)
{
	pid_t shmqd;

	tu_init(600);
	/* dedup, codes, kill twice */
	plan(10 + 44 + 5 + 6 + 4);
	rnd_state ^= (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	diag("seed %#" PRIx64, rnd_state);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		bail("mmap: %s", strerror(errno));
	tu_make_dir("idem", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);

	test_dedup();
	test_spill();
	test_codes();
	test_kill("lapped", SHMQ_SPILL_OFF);
	test_kill("spilled", SHMQ_SPILL_OVERFLOW);

	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
	return tap_done();
}
