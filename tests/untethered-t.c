/*
 * untethered-t.c - untethered groups: a fast producer process laps slow and
 * stopped members over the smallest ring, and every lost message is
 * accounted for, exactly.
 *
 * Each message carries its partition and its sequence number in that
 * partition, and a payload derived from both (checked byte for byte through
 * a checksum).  A member of an untethered group checks, per partition:
 *   - messages come in sequence order, intact;
 *   - where it is the only reader of the partition, the SHMQ_ELAPPED
 *     reports since the message before add up to exactly the gap in
 *     sequence numbers before this one;
 * and the parent checks that, per partition, what the group received plus
 * what it was told it missed is exactly what was sent, with no message
 * received twice.  Meanwhile the parent stops (SIGSTOP) and continues the
 * members again and again, and once stops them until the producer has gone
 * round the ring many times: producers must never wait for an untethered
 * group (the topics block or fail when full), and a tethered group next to
 * it still gets every message once, in order.
 *
 * Scenarios: one member with a tethered group alongside (BLOCK); two
 * members of a SHARED group racing each other and the producers' tail walk
 * (BLOCK); a PARTITIONED group of two members over two partitions (FAIL);
 * a spilling topic, which an untethered group never makes spill.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define RING	   SHMQ_RING_MIN
#define MAXP	   2
#define MAXM	   2
#define NMSG	   60000 /* per scenario, over its partitions */
#define VALUE_MAX  400
#define TAG_MAGIC  0x75746872u

/* Bounds on every wait, in ms. */
#define SEND_TIMEOUT_MS 5000   /* one send: longer is a producer held back */
#define PRODUCER_MAX_MS 60000
#define MEMBER_IDLE_MS	300    /* members stop after this much quiet at the end */
#define MEMBER_MAX_MS	90000
#define READY_MAX_MS	10000
#define LAPS_MAX_MS	20000  /* the producer laps a stopped member this fast */
#define LAPS		8      /* rings' worth of messages during the long stop */

struct tag {
	uint32_t magic;
	uint32_t part;
	uint64_t seq;
	uint32_t value_len;
	uint32_t crc;
};

struct member_res {
	uint64_t received, missed, reports;
	uint64_t bad_content, bad_order, bad_gap, bad_poll;
	uint64_t gaps_checked; /* messages after a report, gap compared */
};

/* What the processes of one scenario share (MAP_SHARED). */
struct shared {
	uint64_t sent[MAXP];
	uint64_t progress; /* messages sent so far */
	uint32_t producer_done;
	int32_t producer_rc;
	uint32_t ready;
	struct member_res mem[MAXM];
	uint64_t tethered_received, tethered_bad;
	uint8_t seen[MAXP][NMSG]; /* deliveries to the untethered group */
};

struct scenario {
	const char *name;
	int policy;
	uint32_t partitions;
	int mode;	 /* of the untethered group */
	uint32_t members; /* untethered */
	int tethered;	 /* a tethered group's member alongside */
	int exact;	 /* one reader per partition: check every gap */
};

static char dir[256];
static struct shared *sh;

static uint32_t value_len_of(uint32_t p, uint64_t seq)
{
	uint64_t z = (seq * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)p << 40);

	z ^= z >> 29;
	return (uint32_t)(sizeof(struct tag) + z % (VALUE_MAX - sizeof(struct tag)));
}

static void fill(uint8_t *b, size_t n, uint32_t p, uint64_t seq)
{
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (uint8_t)(seq * 131u + i * 7u + p * 17u + (i >> 8));
}

static uint32_t tag_crc(const struct tag *t, const void *payload, size_t n)
{
	return tu_crc(payload, n) ^ (uint32_t)(t->seq * 0x9e3779b1u) ^
	       (t->part << 24) ^ t->value_len;
}

static uint64_t now_ms(void)
{
	return tu_now_ns() / 1000000;
}

/* ------------------------------------------------------------------------
 * Processes
 */

static void producer(const struct scenario *sc)
{
	uint8_t buf[VALUE_MAX];
	shmq_client_t *cl;
	shmq_producer_t *pr;
	uint64_t deadline = now_ms() + PRODUCER_MAX_MS;
	int rc, i;

	rc = shmq_open(dir, NULL, &cl);
	if (rc == 0)
		rc = shmq_producer_open(cl, "u", NULL, &pr);
	for (i = 0; rc == 0 && i < NMSG; i++) {
		uint32_t p = (uint32_t)i % sc->partitions;
		struct tag t = { TAG_MAGIC, p, sh->sent[p], 0, 0 };

		t.value_len = value_len_of(p, t.seq);
		fill(buf + sizeof t, t.value_len - sizeof t, p, t.seq);
		t.crc = tag_crc(&t, buf + sizeof t, t.value_len - sizeof t);
		memcpy(buf, &t, sizeof t);
		/*
		 * BLOCK: only the tethered group may make us wait, and it
		 * keeps up; FAIL with no tethered group: never -EAGAIN.
		 */
		rc = shmq_send(pr, (int)p, NULL, 0, buf, t.value_len,
			       SEND_TIMEOUT_MS, NULL);
		if (rc < 0)
			break;
		rc = 0;
		sh->sent[p]++;
		__atomic_fetch_add(&sh->progress, 1, __ATOMIC_RELEASE);
		if (now_ms() > deadline)
			rc = -ETIMEDOUT;
	}
	sh->producer_rc = rc;
	__atomic_store_n(&sh->producer_done, 1, __ATOMIC_RELEASE);
	_exit(0);
}

static int check_content(const struct shmq_msg *m, struct tag *t)
{
	if (m->value_len < sizeof *t || m->key_len != 0)
		return -1;
	memcpy(t, m->value, sizeof *t);
	if (t->magic != TAG_MAGIC || t->part != m->partition || t->part >= MAXP ||
	    t->seq >= NMSG || t->value_len != m->value_len ||
	    t->value_len != value_len_of(t->part, t->seq) ||
	    tag_crc(t, (const uint8_t *)m->value + sizeof *t,
		    m->value_len - sizeof *t) != t->crc)
		return -1;
	return 0;
}

/* A member of the untethered group "u" (idx >= 0) or of the tethered "t". */
static void member(const struct scenario *sc, int idx)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	struct member_res r = { 0 };
	uint64_t next[MAXP] = { 0 }, pending[MAXP] = { 0 };
	int started[MAXP] = { 0 };
	uint64_t start = now_ms(), idle_since = 0;
	shmq_client_t *cl;
	shmq_consumer_t *c;
	struct shmq_msg m;
	struct tag t;
	int rc;

	o.from = SHMQ_FROM_EARLIEST;
	if (idx >= 0) {
		o.flags = SHMQ_CONSUMER_UNTETHERED;
		o.mode = sc->mode;
	}
	if (shmq_open(dir, NULL, &cl) ||
	    shmq_consumer_open(cl, "u", idx >= 0 ? "u" : "t", &o, &c))
		_exit(3);
	__atomic_fetch_add(&sh->ready, 1, __ATOMIC_RELEASE);
	for (;;) {
		rc = shmq_consumer_poll(c, &m, 20);
		if (rc == 0) {
			uint32_t p = m.partition;

			idle_since = 0;
			if (check_content(&m, &t)) {
				r.bad_content++;
				continue;
			}
			r.received++;
			if (idx < 0) {
				/* Tethered: every message, in order. */
				if (t.seq != next[p])
					r.bad_order++;
				next[p] = t.seq + 1;
				continue;
			}
			__atomic_fetch_add(&sh->seen[p][t.seq], 1, __ATOMIC_RELAXED);
			/* Slower than the producer: lapped between stops too. */
			for (volatile uint32_t k = 0; k < (t.seq % 64) * 64; k++)
				;
			if (t.seq < next[p]) {
				r.bad_order++;
			} else if (sc->exact) {
				/*
				 * A PARTITIONED group's partition may come to
				 * this member in the middle: gaps count from
				 * its first message there.
				 */
				if ((started[p] || sc->mode != SHMQ_GROUP_PARTITIONED) &&
				    pending[p] != t.seq - next[p]) {
					if (r.bad_gap++ < 4)
						fprintf(stderr, "# member %d partition %u: told %llu missed, gap %llu..%llu\n",
							idx, p, (unsigned long long)pending[p],
							(unsigned long long)next[p],
							(unsigned long long)t.seq);
				}
				if (pending[p])
					r.gaps_checked++;
			}
			started[p] = 1;
			pending[p] = 0;
			next[p] = t.seq + 1;
			continue;
		}
		if (rc == SHMQ_ELAPPED && idx >= 0 && m.partition < MAXP &&
		    m.missed > 0) {
			pending[m.partition] += m.missed;
			r.missed += m.missed;
			r.reports++;
			idle_since = 0;
			continue;
		}
		if (rc != -EAGAIN) {
			fprintf(stderr, "# member %d: poll: %s\n", idx, shmq_strerror(rc));
			r.bad_poll++;
			break;
		}
		if (now_ms() - start > MEMBER_MAX_MS) {
			r.bad_poll++;
			break;
		}
		if (!__atomic_load_n(&sh->producer_done, __ATOMIC_ACQUIRE))
			continue;
		if (!idle_since)
			idle_since = now_ms();
		else if (now_ms() - idle_since > MEMBER_IDLE_MS)
			break;
	}
	if (idx >= 0 && sc->exact) {
		/* What was missed after the last message is told too. */
		for (uint32_t p = 0; p < sc->partitions; p++)
			if (started[p] && pending[p] != sh->sent[p] - next[p])
				r.bad_gap++;
	}
	if (idx >= 0) {
		sh->mem[idx] = r;
	} else {
		sh->tethered_received = r.received;
		sh->tethered_bad = r.bad_content + r.bad_order + r.bad_poll;
	}
	shmq_consumer_close(c);
	shmq_close(cl);
	_exit(0);
}

static pid_t spawn(void (*fn)(const struct scenario *, int),
		   const struct scenario *sc, int idx)
{
	pid_t pid = fork();

	if (pid < 0)
		bail("fork: %s", strerror(errno));
	if (pid == 0)
		fn(sc, idx);
	return pid;
}

static void producer_entry(const struct scenario *sc, int idx)
{
	(void)idx;
	producer(sc);
}

static void signal_all(const pid_t *pids, uint32_t n, int sig)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		kill(pids[i], sig);
}

/* ------------------------------------------------------------------------
 * One scenario
 */

static void run(shmq_client_t *cl, const struct scenario *sc)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	struct shmq_topic_stat *st = NULL;
	pid_t members[MAXM], tethered = 0, prod;
	uint64_t t0, base, got, missed, reports, dup, gaps_checked;
	uint64_t bad_content, bad_order, bad_gap, bad_poll;
	uint32_t i, p, want_ready = sc->members + (sc->tethered ? 1 : 0);
	int rc, bad, lapped_stopped;

	memset(sh, 0, sizeof *sh);
	to.partitions = sc->partitions;
	to.ring_bytes = RING;
	to.full_policy = sc->policy;
	rc = shmq_topic_create(cl, "u", &to);
	if (rc)
		bail("%s: create: %s (%s)", sc->name, shmq_strerror(rc), shmq_errdetail());

	for (i = 0; i < sc->members; i++)
		members[i] = spawn(member, sc, (int)i);
	if (sc->tethered)
		tethered = spawn(member, sc, -1);
	t0 = now_ms();
	while (__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE) < want_ready &&
	       now_ms() - t0 < READY_MAX_MS)
		usleep(1000);
	if (__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE) < want_ready)
		bail("%s: members did not come up", sc->name);
	prod = spawn(producer_entry, sc, 0);

	/*
	 * Stop the untethered members until the producer has gone round the
	 * ring LAPS times: it must not wait for them.  Then stop and continue
	 * them again and again while it runs.
	 */
	signal_all(members, sc->members, SIGSTOP);
	base = __atomic_load_n(&sh->progress, __ATOMIC_ACQUIRE);
	t0 = now_ms();
	lapped_stopped = 0;
	while (now_ms() - t0 < LAPS_MAX_MS &&
	       !__atomic_load_n(&sh->producer_done, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&sh->progress, __ATOMIC_ACQUIRE) - base >=
		    (uint64_t)LAPS * RING / (VALUE_MAX / 2 + 32)) {
			lapped_stopped = 1;
			break;
		}
		usleep(1000);
	}
	signal_all(members, sc->members, SIGCONT);
	ok(lapped_stopped, "%s: the producer went %d times round the ring while the untethered member%s stood stopped",
	   sc->name, LAPS, sc->members > 1 ? "s" : "");
	for (i = 0; !__atomic_load_n(&sh->producer_done, __ATOMIC_ACQUIRE) &&
		    now_ms() - t0 < PRODUCER_MAX_MS; i++) {
		usleep(1000 + (i % 7) * 500);
		signal_all(members, sc->members, SIGSTOP);
		usleep(2000 + (i % 5) * 1000);
		signal_all(members, sc->members, SIGCONT);
	}
	signal_all(members, sc->members, SIGCONT);

	rc = tu_wait_child(prod, PRODUCER_MAX_MS + 5000);
	ok(rc == 0 && sh->producer_rc == 0 &&
	   sh->sent[0] + sh->sent[1] == NMSG,
	   "%s: the producer sent all %d messages, never held back (%s)", sc->name,
	   NMSG, shmq_strerror(sh->producer_rc));
	bad = 0;
	for (i = 0; i < sc->members; i++)
		if (tu_wait_child(members[i], MEMBER_MAX_MS + 5000) != 0)
			bad++;
	if (sc->tethered && tu_wait_child(tethered, MEMBER_MAX_MS + 5000) != 0)
		bad++;
	ok(bad == 0, "%s: every member exited cleanly", sc->name);

	got = missed = reports = dup = gaps_checked = 0;
	bad_content = bad_order = bad_gap = bad_poll = 0;
	for (i = 0; i < sc->members; i++) {
		got += sh->mem[i].received;
		missed += sh->mem[i].missed;
		reports += sh->mem[i].reports;
		gaps_checked += sh->mem[i].gaps_checked;
		bad_content += sh->mem[i].bad_content;
		bad_order += sh->mem[i].bad_order;
		bad_gap += sh->mem[i].bad_gap;
		bad_poll += sh->mem[i].bad_poll;
	}
	for (p = 0; p < sc->partitions; p++)
		for (i = 0; i < sh->sent[p]; i++)
			dup += sh->seen[p][i] > 1;
	diag("%s: received %llu, missed %llu in %llu reports (%llu gaps checked)",
	     sc->name, (unsigned long long)got, (unsigned long long)missed,
	     (unsigned long long)reports, (unsigned long long)gaps_checked);
	ok(bad_content == 0 && bad_order == 0 && bad_poll == 0,
	   "%s: untethered messages intact and in order (%llu bad, %llu out of order, %llu poll errors)",
	   sc->name, (unsigned long long)bad_content, (unsigned long long)bad_order,
	   (unsigned long long)bad_poll);
	ok(reports > 0 && missed > 0 && got > 0,
	   "%s: the group was lapped and told so", sc->name);
	ok(got + missed == NMSG && dup == 0,
	   "%s: received + missed == sent (%llu + %llu of %d), none twice (%llu)",
	   sc->name, (unsigned long long)got, (unsigned long long)missed, NMSG,
	   (unsigned long long)dup);
	if (sc->exact)
		ok(bad_gap == 0 && gaps_checked > 0,
		   "%s: every report is exactly the gap it stands for (%llu wrong)",
		   sc->name, (unsigned long long)bad_gap);
	if (sc->tethered)
		ok(sh->tethered_received == NMSG && sh->tethered_bad == 0,
		   "%s: the tethered group got every message once, in order (%llu, %llu bad)",
		   sc->name, (unsigned long long)sh->tethered_received,
		   (unsigned long long)sh->tethered_bad);

	rc = shmq_topic_stat(cl, "u", &st);
	if (rc == 0) {
		uint64_t stat_missed = 0, gone = 0;

		for (i = 0; i < st->group_count; i++) {
			if (strcmp(st->groups[i].name, "u"))
				continue;
			for (p = 0; p < sc->partitions; p++)
				stat_missed += st->groups[i].partitions[p].missed;
			ok(st->groups[i].untethered == 1 && stat_missed == missed,
			   "%s: stat shows the group untethered, %llu missed",
			   sc->name, (unsigned long long)stat_missed);
		}
		if (sc->policy == SHMQ_FULL_SPILL) {
			for (p = 0; p < sc->partitions; p++)
				gone += st->partitions[p].disk_end - st->partitions[p].disk_first;
			ok(gone == 0, "%s: nothing was spilled for the untethered group (%llu bytes)",
			   sc->name, (unsigned long long)gone);
		}
		shmq_topic_stat_free(st);
	} else {
		ok(0, "%s: stat: %s", sc->name, shmq_strerror(rc));
	}
	rc = shmq_topic_delete(cl, "u");
	if (rc)
		bail("%s: delete: %s", sc->name, shmq_strerror(rc));
}

/* ------------------------------------------------------------------------
 * Options
 */

static void options(shmq_client_t *cl)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	struct shmq_consumer_opts un = SHMQ_CONSUMER_OPTS_INIT, te = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *a = NULL, *b = NULL;
	int rc;

	to.ring_bytes = RING;
	to.full_policy = SHMQ_FULL_BLOCK;
	rc = shmq_topic_create(cl, "o", &to);
	if (rc)
		bail("create o: %s", shmq_strerror(rc));
	un.flags = SHMQ_CONSUMER_UNTETHERED;
	rc = shmq_consumer_open(cl, "o", "g", &un, &a);
	ok(rc == 0, "an untethered group is created (%s)", shmq_strerror(rc));
	rc = shmq_consumer_open(cl, "o", "g", &te, &b);
	ok(rc == -EINVAL, "a tethered member cannot join it (%s: %s)",
	   shmq_strerror(rc), shmq_errdetail());
	if (rc == 0)
		shmq_consumer_close(b);
	rc = shmq_consumer_open(cl, "o", "h", &te, &b);
	if (rc)
		bail("open h: %s", shmq_strerror(rc));
	shmq_consumer_close(b);
	rc = shmq_consumer_open(cl, "o", "h", &un, &b);
	ok(rc == -EINVAL, "an untethered member cannot join a tethered group (%s)",
	   shmq_strerror(rc));
	if (rc == 0)
		shmq_consumer_close(b);
	rc = shmq_group_delete(cl, "o", "h");
	if (rc)
		bail("group delete h: %s", shmq_strerror(rc));
	{
		shmq_producer_t *pr;
		struct shmq_msg m;

		if (shmq_producer_open(cl, "o", NULL, &pr))
			bail("producer o");
		rc = shmq_send(pr, 0, "k", 1, "v", 1, 0, NULL);
		shmq_producer_close(pr);
		rc = rc < 0 ? rc : shmq_consumer_poll(a, &m, 1000);
		ok(rc == 0 && m.value_len == 1 && !memcmp(m.value, "v", 1) &&
		   m.key_len == 1 && !memcmp(m.key, "k", 1),
		   "an untethered member receives a message (%s)", shmq_strerror(rc));
		rc = shmq_consumer_nack(a);
		ok(rc == -ENOTSUP, "nack is not for untethered groups (%s)",
		   shmq_strerror(rc));
	}
	ok(!strcmp(shmq_strerror(SHMQ_ELAPPED), "untethered group was lapped: messages were missed"),
	   "SHMQ_ELAPPED has its text");
	shmq_consumer_close(a);
	rc = shmq_topic_delete(cl, "o");
	if (rc)
		bail("delete o: %s", shmq_strerror(rc));
}

int main(void)
{
	static const struct scenario scenarios[] = {
		{ "one member, tethered group alongside", SHMQ_FULL_BLOCK, 1,
		  SHMQ_GROUP_SHARED, 1, 1, 1 },
		{ "shared, two members", SHMQ_FULL_BLOCK, 1, SHMQ_GROUP_SHARED, 2, 0, 0 },
		{ "partitioned, two members", SHMQ_FULL_FAIL, 2,
		  SHMQ_GROUP_PARTITIONED, 2, 0, 1 },
		{ "spilling topic", SHMQ_FULL_SPILL, 1, SHMQ_GROUP_SHARED, 1, 0, 1 },
	};
	shmq_client_t *cl;
	pid_t shmqd;
	size_t i;

	tu_init(600);
	/* 6 options; per scenario 7, + exact, + tethered, + spill. */
	plan(6 + 4 * 7 + 3 + 1 + 1);
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		bail("mmap: %s", strerror(errno));
	tu_make_dir("untethered", dir, sizeof dir);
	shmqd = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);
	options(cl);
	for (i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
		run(cl, &scenarios[i]);
	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(dir);
	return tap_done();
}
