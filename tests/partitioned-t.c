/*
 * partitioned-t.c - PARTITIONED consumer groups across processes: members
 * that die, members that come and go, and SHARED groups beside them.
 *
 * kill       A topic of 6 partitions and a PARTITIONED group "pg" of 3
 *            member processes, opened before one producer process publishes
 *            to every partition in turn, with a sequence number per
 *            partition, paced, for a few seconds.  Six times, at random
 *            moments, the parent SIGKILLs a random member, starts a
 *            replacement, and measures how long shmq_topic_stat takes to
 *            show every partition owned by a live member and none by the
 *            dead one (the rebalance time; median and max go to the
 *            diagnostics).  Kills 0, 2, 4 start the replacement at once,
 *            and its join usually deals the partitions again; kills 1, 3, 5
 *            wait (at most 200 ms) for the victim to hold a message it
 *            processed, and start the replacement only after the rebalance:
 *            they time shmqd's noticing the death, and check that the held
 *            message is delivered again.  In the end every message was
 *            processed at least once; the only duplicates are messages that
 *            a killed member processed after its last commit; each member
 *            saw the sequence numbers of a partition increase for as long
 *            as it owned it; no two members processed one partition at
 *            once; a member only got messages of partitions it owned; and
 *            the final members' assignments cover each partition exactly
 *            once.
 *
 * joinleave  The same topic shape; members join every 300 ms and the
 *            oldest leave gracefully (shmq_consumer_close), never fewer
 *            than one, while the producer publishes.  Members that leave
 *            have released and committed everything they processed, so
 *            every message is processed exactly once.
 *
 * shared     A SHARED group of 2 members gets every message exactly once,
 *            and its members are assigned every partition; the mode is the
 *            group's: a member asking for the other mode gets -EINVAL.
 *
 * held       The kill scenario's at-least-once case, made certain: a member
 *            takes a message and holds it, another member of the group
 *            commits in a tight loop, and the holder is SIGKILLed (no
 *            replacement: shmqd's reaper hands its partitions over).  The
 *            held message must reach the member left, every time.
 *
 * What a member does with each message (member_handle):
 *   1. check its checksum, partition and sequence number, and that the
 *      partition is in its assignment (and in the set on_rebalance gave);
 *   2. check order: the sequence number is above the last one it saw in
 *      that partition since it gained it (on_rebalance resets that);
 *   3. mark the partition "processing" in shared memory, a CAS from 0 to
 *      its id: if another live member holds the mark, two members process
 *      the partition at once;
 *   4. count the (partition, seq) as processed, and say in shared memory
 *      that it holds it (every 32nd message it then works on it for 1 ms,
 *      so that kills and rebalances often find a member busy);
 *   5. clear the mark and release the message: the release is where a live
 *      member hands a partition over, so the mark must be gone by then;
 *   6. commit (shmq_consumer_commit covers released messages only), and
 *      record the sequence number as committed by this member.
 * A member killed between 4 and 6 leaves one processed message that is
 * not committed; the library delivers it again: a legitimate duplicate.
 *
 * Set SHMQ_TEST_SEED to replay the random choices of a run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define NPART	 6
#define RING	 (1u << 20)
#define TOPIC	 "pt"
#define PGROUP	 "pg"
#define SGROUP	 "sg"
#define MAXSEQ	 80000	/* per partition; the producer stops there */
#define MAXMEM	 64	/* member ids 1..MAXMEM-1 per scenario */
#define NBAD	 16
#define VMAGIC	 0x70617274u

/* The kill scenario. */
#define KILL_MEMBERS	 3
#define KILLS		 6
#define KILL_PUBLISH_MS	 8000
#define KILL_RATE	 30000	/* messages per second, all partitions */
#define MAX_OWNED	 2	/* partitions a member owns with 3 members */
#define REBALANCE_MAX_MS 2000	/* how long the parent watches one rebalance */
#define REBALANCE_OK_MS	 1000	/* the liveness bound asserted */

/* The join/leave scenario. */
#define JL_PUBLISH_MS	 5000
#define JL_RATE		 20000
#define JL_STEP_MS	 300
#define JL_MAX_LIVE	 3

/* The shared scenario. */
#define SH_PER_PART	 3000

/*
 * Every SLOW_EVERY-th message a member works on for SLOW_US (asleep),
 * holding the message and the partition's mark: so that kills and
 * rebalances often land while a member processes a message, not only while
 * it waits in poll.
 */
#define SLOW_EVERY	 32
#define SLOW_US		 1000

/* Bounds on every wait, in ms. */
#define SEND_TIMEOUT_MS	 1000
#define PRODUCER_SLACK_MS 20000	/* past its publishing time, a producer gives up */
#define POLL_MS		 20
#define MEMBER_IDLE_MS	 1000	/* after the producer: this much quiet = drained */
#define READY_MAX_MS	 10000
#define DRAIN_MAX_MS	 20000
#define EXIT_MAX_MS	 5000
#define CHILD_ALARM_S	 90

/* A message's value. */
struct val {
	uint32_t magic;
	uint32_t part;
	uint32_t seq;
	uint8_t payload[48];
	uint32_t crc; /* tu_crc of everything above */
};
_Static_assert(sizeof(struct val) == 64, "val");

enum bad_kind {
	BAD_CONTENT,	/* length, magic, checksum, partition, seq range */
	BAD_ORDER,	/* seq not above the last one seen since gaining p */
	BAD_OWNERS,	/* another live member was processing the partition */
	BAD_NOTOWNED,	/* message of a partition not in the assignment */
	BAD_CALLBACK,	/* on_rebalance's set differs from the assignment */
	BAD_POLL,	/* poll returned an error */
	BAD_COMMIT,	/* commit returned an error */
	BAD_OPEN,	/* consumer open failed */
	BAD_KINDS
};
static const char *const bad_names[BAD_KINDS] = {
	"content", "order", "two live owners", "partition not owned",
	"on_rebalance differs from assignment", "poll error", "commit error",
	"open error",
};

struct bad {
	int kind, member, rc;
	uint32_t part, seq, other;
};

/* What a member is doing with a message, for the parent after a kill. */
enum { IF_NONE, IF_HELD, IF_RELEASING };
struct inflight {
	uint32_t part, seq;
	uint32_t state; /* IF_HELD: processed, still held, so not committed */
};

/* Everything the processes of one scenario share; MAP_SHARED before fork. */
struct shared {
	int mode;		/* enum shmq_group_mode of the members */
	const char *group;
	uint32_t publish_ms, rate, per_part;
	char dir[256];

	/* Producer. */
	uint32_t pub[NPART];	/* seqs 0 .. pub[p]-1 are published */
	int prod_rc;

	/* Members. */
	uint32_t ready;		/* members that opened (or failed to) */
	uint32_t done;		/* the producer finished: drain, then report */
	uint32_t drained;	/* members idle since done, assignment written */
	uint32_t release;	/* the parent has read the assignments: exit */
	uint32_t dead[MAXMEM];	/* set by the parent just before SIGKILL */
	uint32_t leave[MAXMEM];	/* set by the parent: close and exit */
	uint32_t marker[NPART];	/* id of the member processing p, or 0 */
	int32_t committed[MAXMEM][NPART]; /* last seq the member committed */
	struct inflight inflight[MAXMEM];
	int32_t assign_n[MAXMEM];
	uint32_t assign[MAXMEM][NPART];
	uint64_t msgs;
	uint64_t bad[BAD_KINDS];
	uint32_t nbad;
	struct bad bads[NBAD];

	/* Per message: times processed, and who processed it first. */
	uint32_t count[NPART][MAXSEQ];
	uint8_t first_by[NPART][MAXSEQ];
};

static struct shared *sh;
static uint64_t rng;

static uint32_t rnd(uint32_t n)
{
	return (uint32_t)(tu_splitmix(&rng) % n);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void sleep_us(unsigned us)
{
	struct timespec ts = { 0, (long)us * 1000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t ms_since(uint64_t t0)
{
	return (tu_now_ns() - t0) / 1000000ull;
}

static void make_val(struct val *v, uint32_t part, uint32_t seq)
{
	uint64_t s = (uint64_t)part << 32 | seq, x;
	size_t i;

	v->magic = VMAGIC;
	v->part = part;
	v->seq = seq;
	for (i = 0; i < sizeof v->payload; i += 8) {
		x = tu_splitmix(&s);
		memcpy(v->payload + i, &x, 8);
	}
	v->crc = tu_crc(v, offsetof(struct val, crc));
}

static void note_bad(int kind, int member, int rc, uint32_t part, uint32_t seq,
		     uint32_t other)
{
	uint32_t i;

	__atomic_fetch_add(&sh->bad[kind], 1, __ATOMIC_RELAXED);
	i = __atomic_fetch_add(&sh->nbad, 1, __ATOMIC_RELAXED);
	if (i < NBAD)
		sh->bads[i] = (struct bad){ kind, member, rc, part, seq, other };
}

/* ------------------------------------------------------------------------
 * The producer
 */

static int producer_main(void)
{
	shmq_client_t *cl = NULL;
	shmq_producer_t *pr = NULL;
	uint32_t seq[NPART] = { 0 }, p;
	uint64_t start, end, hard, i = 0, now, target;
	struct val v;
	int rc;

	rc = shmq_open(sh->dir, NULL, &cl);
	if (rc == 0)
		rc = shmq_producer_open(cl, TOPIC, NULL, &pr);
	if (rc < 0) {
		fprintf(stderr, "# producer: open: %s (%s)\n", shmq_strerror(rc),
			shmq_errdetail());
		sh->prod_rc = rc;
		shmq_close(cl);
		return 1;
	}
	start = tu_now_ns();
	end = start + (uint64_t)sh->publish_ms * 1000000ull;
	hard = end + (uint64_t)PRODUCER_SLACK_MS * 1000000ull;
	for (;;) {
		p = (uint32_t)(i % NPART);
		if (seq[p] >= sh->per_part)
			break;
		now = tu_now_ns();
		if (sh->publish_ms && now >= end)
			break;
		if (sh->rate) {
			target = (now - start) / 1000 * sh->rate / 1000000ull;
			if (i >= target) {
				sleep_ms(1);
				continue;
			}
		}
		make_val(&v, p, seq[p]);
		do
			rc = shmq_send(pr, (int)p, NULL, 0, &v, sizeof v,
				       SEND_TIMEOUT_MS, NULL);
		while (rc == -EAGAIN && tu_now_ns() < hard);
		if (rc != (int)p) {
			fprintf(stderr, "# producer: partition %u seq %u: %d %s (%s)\n",
				p, seq[p], rc, shmq_strerror(rc), shmq_errdetail());
			sh->prod_rc = rc < 0 ? rc : -ERANGE;
			break;
		}
		seq[p]++;
		__atomic_store_n(&sh->pub[p], seq[p], __ATOMIC_RELEASE);
		i++;
	}
	shmq_producer_close(pr);
	shmq_close(cl);
	return sh->prod_rc ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * Members
 */

struct member {
	int id;
	uint32_t handled;
	shmq_consumer_t *c;
	uint32_t owned;	     /* bit p: on_rebalance says we own p */
	int64_t last[NPART]; /* last seq seen in p since gaining it */
};

static uint32_t mask_of(const uint32_t *parts, uint32_t n, int *bad)
{
	uint32_t i, mask = 0;

	for (i = 0; i < n; i++) {
		if (parts[i] >= NPART || mask & (1u << parts[i]))
			*bad = 1;
		else
			mask |= 1u << parts[i];
	}
	return mask;
}

static void on_rebalance(void *arg, const uint32_t *parts, uint32_t n)
{
	struct member *me = arg;
	uint32_t mask, gained, p;
	int bad = 0;

	mask = mask_of(parts, n, &bad);
	if (bad || n > NPART)
		note_bad(BAD_CALLBACK, me->id, 0, n, 0, mask);
	gained = mask & ~me->owned;
	for (p = 0; p < NPART; p++)
		if (gained & (1u << p))
			me->last[p] = -1;
	me->owned = mask;
}

static void member_handle(struct member *me, const struct shmq_msg *m)
{
	uint32_t parts[NPART + 8], mask, p = m->partition, exp;
	uint8_t zero = 0;
	int n, bad = 0, rc;
	struct val v;

	/* 1. Content, and the assignment. */
	if (m->value_len != sizeof v || p >= NPART) {
		note_bad(BAD_CONTENT, me->id, 0, p, UINT32_MAX, (uint32_t)m->value_len);
		return;
	}
	memcpy(&v, m->value, sizeof v);
	if (v.magic != VMAGIC || v.part != p || v.seq >= MAXSEQ ||
	    v.crc != tu_crc(&v, offsetof(struct val, crc))) {
		note_bad(BAD_CONTENT, me->id, 0, p, v.seq, v.part);
		return;
	}
	n = shmq_consumer_assignment(me->c, parts, NPART + 8);
	mask = n >= 0 && n <= NPART + 8 ? mask_of(parts, (uint32_t)n, &bad) : 0;
	if (!(mask & (1u << p)))
		note_bad(BAD_NOTOWNED, me->id, n, p, v.seq, mask);
	if (sh->mode == SHMQ_GROUP_PARTITIONED && (bad || mask != me->owned))
		note_bad(BAD_CALLBACK, me->id, n, p, v.seq, mask << 16 | me->owned);

	/* 2. Order, for as long as we own the partition. */
	if ((int64_t)v.seq <= me->last[p])
		note_bad(BAD_ORDER, me->id, 0, p, v.seq, (uint32_t)me->last[p]);
	me->last[p] = v.seq;

	/* 3. Nobody else is processing p (a dead member's mark is stale). */
	if (sh->mode == SHMQ_GROUP_PARTITIONED) {
		exp = 0;
		if (!__atomic_compare_exchange_n(&sh->marker[p], &exp, (uint32_t)me->id,
						 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			if (exp >= MAXMEM ||
			    !__atomic_load_n(&sh->dead[exp], __ATOMIC_ACQUIRE) ||
			    !__atomic_compare_exchange_n(&sh->marker[p], &exp,
							 (uint32_t)me->id, 0,
							 __ATOMIC_ACQ_REL,
							 __ATOMIC_ACQUIRE))
				note_bad(BAD_OWNERS, me->id, 0, p, v.seq, exp);
		}
	}

	/* 4. Processed (and still held: not committed by anyone). */
	__atomic_compare_exchange_n(&sh->first_by[p][v.seq], &zero, (uint8_t)me->id,
				    0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	__atomic_fetch_add(&sh->count[p][v.seq], 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(&sh->msgs, 1, __ATOMIC_RELAXED);
	sh->inflight[me->id].part = p;
	sh->inflight[me->id].seq = v.seq;
	__atomic_store_n(&sh->inflight[me->id].state, IF_HELD, __ATOMIC_RELEASE);
	if (++me->handled % SLOW_EVERY == 0)
		sleep_us(SLOW_US);

	/* 5. Done with p: clear the mark, then release (the hand-over point). */
	if (sh->mode == SHMQ_GROUP_PARTITIONED) {
		exp = (uint32_t)me->id;
		__atomic_compare_exchange_n(&sh->marker[p], &exp, 0, 0,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&sh->inflight[me->id].state, IF_RELEASING, __ATOMIC_RELEASE);
	shmq_consumer_release(me->c);

	/* 6. Commit what we released; it will not come again. */
	rc = shmq_consumer_commit(me->c);
	if (rc < 0)
		note_bad(BAD_COMMIT, me->id, rc, p, v.seq, 0);
	else
		__atomic_store_n(&sh->committed[me->id][p], (int32_t)v.seq,
				 __ATOMIC_RELEASE);
	__atomic_store_n(&sh->inflight[me->id].state, IF_NONE, __ATOMIC_RELEASE);
}

/*
 * A member's client, and its consumer in sh->group.  It counts itself
 * ready whether or not that worked (the parent waits for every member);
 * a failure is noted and closed, and returned.
 */
static int member_open(int id, const struct shmq_consumer_opts *opts,
		       shmq_client_t **cl, shmq_consumer_t **c)
{
	int rc;

	*cl = NULL;
	rc = shmq_open(sh->dir, NULL, cl);
	if (rc == 0)
		rc = shmq_consumer_open(*cl, TOPIC, sh->group, opts, c);
	__atomic_fetch_add(&sh->ready, 1, __ATOMIC_RELEASE);
	if (rc < 0) {
		fprintf(stderr, "# member %d: open: %s (%s)\n", id,
			shmq_strerror(rc), shmq_errdetail());
		note_bad(BAD_OPEN, id, rc, 0, 0, 0);
		shmq_close(*cl);
	}
	return rc;
}

static int member_main(int id)
{
	struct shmq_consumer_opts opts = SHMQ_CONSUMER_OPTS_INIT;
	struct member me;
	shmq_client_t *cl = NULL;
	struct shmq_msg m;
	uint64_t start = tu_now_ns(), idle_since = 0, now;
	int rc, p, n, failed = 0;

	memset(&me, 0, sizeof me);
	memset(&m, 0, sizeof m);
	me.id = id;
	for (p = 0; p < NPART; p++)
		me.last[p] = -1;
	opts.from = SHMQ_FROM_EARLIEST;
	opts.mode = sh->mode;
	if (sh->mode == SHMQ_GROUP_PARTITIONED) {
		opts.on_rebalance = on_rebalance;
		opts.on_rebalance_arg = &me;
	}
	if (member_open(id, &opts, &cl, &me.c) < 0)
		return 1;

	for (;;) {
		if (__atomic_load_n(&sh->leave[id], __ATOMIC_ACQUIRE))
			break;
		rc = shmq_consumer_poll(me.c, &m, POLL_MS);
		now = tu_now_ns();
		if (rc == 0) {
			member_handle(&me, &m);
			idle_since = 0;
			continue;
		}
		if (rc != -EAGAIN) {
			note_bad(BAD_POLL, id, rc, m.partition, 0, 0);
			failed = 1;
			if (rc != SHMQ_ECORRUPT)
				break;
		}
		if (now - start > (uint64_t)(CHILD_ALARM_S - 10) * 1000000000ull) {
			fprintf(stderr, "# member %d: gave up\n", id);
			failed = 1;
			break;
		}
		if (!__atomic_load_n(&sh->done, __ATOMIC_ACQUIRE))
			continue;
		if (!idle_since) {
			idle_since = now;
			continue;
		}
		if (now - idle_since < MEMBER_IDLE_MS * 1000000ull)
			continue;
		/* Drained: report the assignment, and stay until all have. */
		n = shmq_consumer_assignment(me.c, sh->assign[id], NPART);
		sh->assign_n[id] = n;
		__atomic_fetch_add(&sh->drained, 1, __ATOMIC_RELEASE);
		while (!__atomic_load_n(&sh->release, __ATOMIC_ACQUIRE)) {
			rc = shmq_consumer_poll(me.c, &m, POLL_MS);
			if (rc == 0)
				member_handle(&me, &m);
			if (ms_since(start) > (CHILD_ALARM_S - 10) * 1000u) {
				failed = 1;
				break;
			}
		}
		break;
	}
	shmq_consumer_close(me.c);
	shmq_close(cl);
	return failed;
}

/*
 * The held scenario's members.  The committer takes what comes, counts it
 * and commits in a tight loop (committing when there is nothing new is
 * legitimate and cheap).  The victim takes one message and holds it until
 * it is killed.
 */
static int committer_main(int id)
{
	struct shmq_consumer_opts opts = SHMQ_CONSUMER_OPTS_INIT;
	shmq_client_t *cl = NULL;
	shmq_consumer_t *c = NULL;
	struct shmq_msg m;
	struct val v;
	int rc;

	opts.mode = SHMQ_GROUP_PARTITIONED;
	opts.from = SHMQ_FROM_EARLIEST;
	if (member_open(id, &opts, &cl, &c) < 0)
		return 1;
	while (!__atomic_load_n(&sh->release, __ATOMIC_ACQUIRE)) {
		rc = shmq_consumer_poll(c, &m, 0);
		if (rc == 0 && m.value_len == sizeof v && m.partition < NPART) {
			memcpy(&v, m.value, sizeof v);
			if (v.seq < MAXSEQ && v.part == m.partition)
				__atomic_fetch_add(&sh->count[v.part][v.seq], 1,
						   __ATOMIC_RELEASE);
			else
				note_bad(BAD_CONTENT, id, 0, m.partition, v.seq, v.part);
		} else if (rc == 0) {
			note_bad(BAD_CONTENT, id, 0, m.partition, 0, (uint32_t)m.value_len);
		} else if (rc != -EAGAIN) {
			note_bad(BAD_POLL, id, rc, m.partition, 0, 0);
		}
		shmq_consumer_release(c);
		rc = shmq_consumer_commit(c);
		if (rc < 0)
			note_bad(BAD_COMMIT, id, rc, 0, 0, 0);
	}
	shmq_consumer_close(c);
	shmq_close(cl);
	return 0;
}

static int victim_main(int id)
{
	struct shmq_consumer_opts opts = SHMQ_CONSUMER_OPTS_INIT;
	shmq_client_t *cl = NULL;
	shmq_consumer_t *c = NULL;
	struct shmq_msg m;
	struct val v;
	int rc;

	opts.mode = SHMQ_GROUP_PARTITIONED;
	if (member_open(id, &opts, &cl, &c) < 0)
		return 1;
	for (;;) {
		rc = shmq_consumer_poll(c, &m, POLL_MS);
		if (rc == -EAGAIN)
			continue;
		if (rc < 0 || m.value_len != sizeof v) {
			note_bad(BAD_POLL, id, rc, m.partition, 0, 0);
			return 1;
		}
		memcpy(&v, m.value, sizeof v);
		sh->inflight[id].part = v.part;
		sh->inflight[id].seq = v.seq;
		__atomic_store_n(&sh->inflight[id].state, IF_HELD, __ATOMIC_RELEASE);
		for (;;)
			pause(); /* holding it, until SIGKILL */
	}
}

/* ------------------------------------------------------------------------
 * The parent
 */

enum role { ROLE_MEMBER, ROLE_COMMITTER, ROLE_VICTIM };
static enum role spawn_role;

static pid_t spawn(int member_id)
{
	pid_t parent = getpid(), pid;

	pid = tu_fork(NULL);
	if (pid == 0) {
		tap_child();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		/* The alarm is not inherited; a stuck child must die too. */
		alarm(CHILD_ALARM_S);
		if (!member_id)
			_exit(producer_main());
		if (spawn_role == ROLE_COMMITTER)
			_exit(committer_main(member_id));
		if (spawn_role == ROLE_VICTIM)
			_exit(victim_main(member_id));
		_exit(member_main(member_id));
	}
	return pid;
}

static void setup(int mode, const char *group, const char *tag, pid_t *shmqd,
		  shmq_client_t **cl)
{
	struct shmq_topic_opts topts = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	memset(sh, 0, sizeof *sh);
	memset(sh->committed, 0xff, sizeof sh->committed);
	sh->mode = mode;
	sh->group = group;
	sh->per_part = MAXSEQ;
	tu_make_dir(tag, sh->dir, sizeof sh->dir);
	*shmqd = tu_shmqd_start(sh->dir, NULL);
	*cl = tu_open(sh->dir);
	topts.partitions = NPART;
	topts.ring_bytes = RING;
	topts.full_policy = SHMQ_FULL_BLOCK;
	topts.spill = SHMQ_SPILL_OFF;
	rc = shmq_topic_create(*cl, TOPIC, &topts);
	if (rc < 0)
		bail("shmq_topic_create: %s (%s)", shmq_strerror(rc), shmq_errdetail());
}

static void teardown(pid_t shmqd, shmq_client_t *cl)
{
	shmq_close(cl);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(sh->dir);
}

static void wait_counter(const uint32_t *ctr, uint32_t want, int max_ms,
			 const char *what)
{
	uint64_t t0 = tu_now_ns();

	while (__atomic_load_n(ctr, __ATOMIC_ACQUIRE) < want) {
		if (ms_since(t0) > (uint64_t)max_ms)
			bail("%s: %u of %u within %d ms", what,
			     __atomic_load_n(ctr, __ATOMIC_ACQUIRE), want, max_ms);
		sleep_ms(1);
	}
}

/* What shmq_topic_stat says of the group. */
struct gsnap {
	int found, mode;
	uint32_t generation, members;
	uint32_t owner[NPART];
	uint64_t next[NPART], committed[NPART], head[NPART];
};

static int group_snap(shmq_client_t *cl, const char *group, struct gsnap *g)
{
	struct shmq_topic_stat *st = NULL;
	uint32_t i, p;
	int rc;

	memset(g, 0, sizeof *g);
	rc = shmq_topic_stat(cl, TOPIC, &st);
	if (rc < 0)
		return rc;
	for (i = 0; i < st->group_count; i++) {
		const struct shmq_group_stat *gs = &st->groups[i];

		if (strcmp(gs->name, group) != 0)
			continue;
		g->found = 1;
		g->mode = gs->mode;
		g->generation = gs->generation;
		g->members = gs->members;
		for (p = 0; p < NPART && p < st->partition_count; p++) {
			g->owner[p] = gs->partitions[p].owner_pid;
			g->next[p] = gs->partitions[p].next;
			g->committed[p] = gs->partitions[p].committed;
			g->head[p] = st->partitions[p].next_offset;
		}
	}
	shmq_topic_stat_free(st);
	return 0;
}

static int pid_in(uint32_t pid, const pid_t *pids, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (pid != 0 && (pid_t)pid == pids[i])
			return 1;
	return 0;
}

/* Every partition owned by one of pids, and by none other (dead ones). */
static int owned_by(const struct gsnap *g, const pid_t *pids, int n)
{
	int p;

	if (!g->found)
		return 0;
	for (p = 0; p < NPART; p++)
		if (!pid_in(g->owner[p], pids, n))
			return 0;
	return 1;
}

static void diag_owners(const char *what, const struct gsnap *g)
{
	diag("%s: found %d mode %d generation %u members %u owners %u %u %u %u %u %u",
	     what, g->found, g->mode, g->generation, g->members, g->owner[0],
	     g->owner[1], g->owner[2], g->owner[3], g->owner[4], g->owner[5]);
}

static void report_bad(const char *name)
{
	uint32_t i, n = sh->nbad < NBAD ? sh->nbad : NBAD;

	for (i = 0; i < n; i++) {
		const struct bad *b = &sh->bads[i];

		diag("%s: member %d: %s: partition %u seq %u other %#x rc %d (%s)",
		     name, b->member, bad_names[b->kind], b->part, b->seq,
		     b->other, b->rc, shmq_strerror(b->rc));
	}
}

struct tally {
	uint64_t published, missing, dups, extra;
};

/* Count what the members processed against what was published. */
static void tally(const char *name, struct tally *t, int verbose)
{
	uint32_t p, seq, c, pub;
	int shown = 0;

	memset(t, 0, sizeof *t);
	for (p = 0; p < NPART; p++) {
		pub = __atomic_load_n(&sh->pub[p], __ATOMIC_ACQUIRE);
		t->published += pub;
		for (seq = 0; seq < MAXSEQ; seq++) {
			c = __atomic_load_n(&sh->count[p][seq], __ATOMIC_ACQUIRE);
			if (seq >= pub) {
				t->extra += c;
				continue;
			}
			if (c == 0)
				t->missing++;
			else if (c > 1)
				t->dups += c - 1;
			if (verbose && (c == 0 || c > 2) && shown++ < 8)
				diag("%s: partition %u seq %u processed %u times",
				     name, p, seq, c);
		}
	}
}

/* The drained members' assignments: each partition exactly once. */
static int assignments_cover(const char *name, const int *ids, int n)
{
	int cover[NPART] = { 0 }, i, j, bad = 0;

	for (i = 0; i < n; i++) {
		int an = sh->assign_n[ids[i]];

		if (an < 0 || an > NPART) {
			diag("%s: member %d: assignment returned %d", name, ids[i], an);
			bad++;
			continue;
		}
		for (j = 0; j < an; j++) {
			if (sh->assign[ids[i]][j] >= NPART)
				bad++;
			else
				cover[sh->assign[ids[i]][j]]++;
		}
	}
	for (j = 0; j < NPART; j++) {
		if (cover[j] != 1) {
			diag("%s: partition %d is in %d assignments", name, j, cover[j]);
			bad++;
		}
	}
	return bad == 0;
}

/* After the drain: the group is all committed, and owned by the final members. */
static int final_stat(const char *name, shmq_client_t *cl, const pid_t *pids,
		      int n, uint32_t min_generation)
{
	struct gsnap g;
	int rc, p, bad = 0;

	rc = group_snap(cl, PGROUP, &g);
	if (rc < 0) {
		diag("%s: stat: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
		return 0;
	}
	if (!g.found || g.mode != SHMQ_GROUP_PARTITIONED ||
	    g.generation < min_generation || g.members != (uint32_t)n ||
	    !owned_by(&g, pids, n)) {
		diag_owners(name, &g);
		bad++;
	}
	for (p = 0; p < NPART; p++) {
		if (g.next[p] != g.head[p] || g.committed[p] != g.head[p]) {
			diag("%s: partition %d: head %llu, group next %llu, committed %llu",
			     name, p, (unsigned long long)g.head[p],
			     (unsigned long long)g.next[p],
			     (unsigned long long)g.committed[p]);
			bad++;
		}
	}
	diag("%s: final generation %u", name, g.generation);
	return bad == 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int errors(void)
{
	return sh->bad[BAD_POLL] + sh->bad[BAD_COMMIT] + sh->bad[BAD_OPEN] != 0;
}

/*
 * Let the drained members go, and reap them: how many did not exit 0
 * within EXIT_MAX_MS.
 */
static int release_members(const char *name, const pid_t *pids, const int *ids, int n)
{
	int i, st, bad = 0;

	__atomic_store_n(&sh->release, 1, __ATOMIC_RELEASE);
	for (i = 0; i < n; i++) {
		st = tu_wait_child(pids[i], EXIT_MAX_MS);
		if (st != 0) {
			diag("%s: member %d status %#x", name, ids[i], st);
			bad++;
		}
	}
	return bad;
}

/* What every partitioned member must have seen: 4 checks. */
static void check_members(const char *name)
{
	ok(sh->bad[BAD_CONTENT] == 0, "%s: no checksum, partition or length failure (%llu)",
	   name, (unsigned long long)sh->bad[BAD_CONTENT]);
	ok(sh->bad[BAD_ORDER] == 0, "%s: per-partition order held for every owner (%llu violations)",
	   name, (unsigned long long)sh->bad[BAD_ORDER]);
	ok(sh->bad[BAD_OWNERS] == 0, "%s: never two live members processing one partition (%llu)",
	   name, (unsigned long long)sh->bad[BAD_OWNERS]);
	ok(sh->bad[BAD_NOTOWNED] + sh->bad[BAD_CALLBACK] == 0,
	   "%s: messages only from owned partitions (%llu), on_rebalance agrees with the assignment (%llu)",
	   name, (unsigned long long)sh->bad[BAD_NOTOWNED],
	   (unsigned long long)sh->bad[BAD_CALLBACK]);
}

/* ------------------------------------------------------------------------
 * kill: members SIGKILLed mid-stream
 */

#define KILL_CHECKS 14

static void scenario_kill(void)
{
	const char *name = "kill";
	shmq_client_t *cl;
	pid_t shmqd, pids[KILL_MEMBERS], prod, victim;
	int ids[KILL_MEMBERS], killed[KILLS], next_id = 1, i, k, j, p, st;
	int bad_exit = 0, owned_ok, timed_out = 0, nheld = 0, redelivered = 0, deferred;
	int shown = 0;
	uint64_t t_start, t0, times[KILLS], sorted[KILLS], dup_bad = 0;
	struct inflight held[KILLS];
	uint32_t seq, c, first;
	struct gsnap g;
	struct tally t;

	setup(SHMQ_GROUP_PARTITIONED, PGROUP, "part-kill", &shmqd, &cl);
	sh->publish_ms = KILL_PUBLISH_MS;
	sh->rate = KILL_RATE;

	for (i = 0; i < KILL_MEMBERS; i++) {
		ids[i] = next_id++;
		pids[i] = spawn(ids[i]);
	}
	wait_counter(&sh->ready, KILL_MEMBERS, READY_MAX_MS, "kill: members open");

	/* They settle: each owns 2 partitions, every partition is owned. */
	t0 = tu_now_ns();
	for (;;) {
		int per[KILL_MEMBERS] = { 0 };

		owned_ok = group_snap(cl, PGROUP, &g) == 0 && owned_by(&g, pids, KILL_MEMBERS);
		for (p = 0; owned_ok && p < NPART; p++)
			for (i = 0; i < KILL_MEMBERS; i++)
				per[i] += g.owner[p] == (uint32_t)pids[i];
		for (i = 0; owned_ok && i < KILL_MEMBERS; i++)
			owned_ok = per[i] == NPART / KILL_MEMBERS;
		if (owned_ok || ms_since(t0) > 5000)
			break;
		sleep_ms(2);
	}
	if (!owned_ok)
		diag_owners("kill: before publishing", &g);
	ok(owned_ok && g.mode == SHMQ_GROUP_PARTITIONED,
	   "kill: %d members own %d partitions each before publishing (%llu ms)",
	   KILL_MEMBERS, NPART / KILL_MEMBERS, (unsigned long long)ms_since(t0));

	prod = spawn(0);
	t_start = tu_now_ns();
	for (k = 0; k < KILLS; k++) {
		/* Random moments spread over the publishing time. */
		uint64_t at = 700 + (uint64_t)k * (KILL_PUBLISH_MS - 1500) / KILLS +
			      rnd((KILL_PUBLISH_MS - 1500) / KILLS);

		while (ms_since(t_start) < at)
			sleep_ms(1);
		j = (int)rnd(KILL_MEMBERS);
		victim = pids[j];
		killed[k] = ids[j];
		/*
		 * Every other kill waits (briefly) for the victim to hold a
		 * message it processed: the case the committed offset is for.
		 * Its replacement starts once the others took over: a member
		 * that joins rebalances too, and at once it would take the
		 * dead member's partitions before shmqd's reaper does; these
		 * kills time shmqd's noticing the death, and its hand-over.
		 */
		deferred = k % 2;
		if (deferred) {
			uint64_t w0 = tu_now_ns();

			while (__atomic_load_n(&sh->inflight[ids[j]].state,
					       __ATOMIC_ACQUIRE) != IF_HELD &&
			       ms_since(w0) < 200)
				;
		}
		__atomic_store_n(&sh->dead[ids[j]], 1, __ATOMIC_RELEASE);
		kill(victim, SIGKILL);
		t0 = tu_now_ns();
		ids[j] = next_id++;
		pids[j] = deferred ? 0 : spawn(ids[j]);
		st = tu_wait_child(victim, EXIT_MAX_MS);
		if (!(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
			diag("kill: member %d (pid %d) status %#x", killed[k], (int)victim, st);
			bad_exit++;
		}
		/* Processed and held at its death: must be delivered again. */
		if (sh->inflight[killed[k]].state == IF_HELD)
			held[nheld++] = sh->inflight[killed[k]];
		for (p = 0; p < NPART; p++) {
			uint32_t exp = (uint32_t)killed[k];

			__atomic_compare_exchange_n(&sh->marker[p], &exp, 0, 0,
						    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
		}
		/* Rebalanced: no partition left to the dead, all to the living. */
		for (;;) {
			owned_ok = group_snap(cl, PGROUP, &g) == 0 &&
				   owned_by(&g, pids, KILL_MEMBERS);
			times[k] = tu_now_ns() - t0;
			if (owned_ok || times[k] > REBALANCE_MAX_MS * 1000000ull)
				break;
			sleep_ms(2);
		}
		if (!owned_ok) {
			diag("kill %d: member %d (pid %d) not rebalanced within %d ms",
			     k, killed[k], (int)victim, REBALANCE_MAX_MS);
			diag_owners("kill: at the deadline", &g);
			timed_out++;
		}
		if (deferred)
			pids[j] = spawn(ids[j]);
		diag("kill %d: member %d (pid %d) at %llu ms; replacement %s; rebalanced in %.1f ms; committed %d %d %d %d %d %d",
		     k, killed[k], (int)victim, (unsigned long long)at,
		     deferred ? "after" : "at once",
		     (double)times[k] / 1e6, sh->committed[killed[k]][0],
		     sh->committed[killed[k]][1], sh->committed[killed[k]][2],
		     sh->committed[killed[k]][3], sh->committed[killed[k]][4],
		     sh->committed[killed[k]][5]);
	}

	st = tu_wait_child(prod, KILL_PUBLISH_MS + PRODUCER_SLACK_MS + 5000);
	__atomic_store_n(&sh->done, 1, __ATOMIC_RELEASE);
	tally(name, &t, 0);
	ok(st == 0 && sh->prod_rc == 0,
	   "kill: the producer published %llu messages (status %#x, rc %d)",
	   (unsigned long long)t.published, st, sh->prod_rc);

	for (i = 0; i < 2; i++) {
		uint64_t kind[KILLS];
		int nk = 0;

		for (k = i; k < KILLS; k += 2)
			kind[nk++] = times[k];
		qsort(kind, (size_t)nk, sizeof kind[0], cmp_u64);
		diag("kill: replacement %s: rebalance median %.1f ms, max %.1f ms (%d kills)",
		     i ? "after (shmqd's reaper hands over)" : "at once (its join hands over)",
		     (double)(nk % 2 ? kind[nk / 2] * 2 : kind[nk / 2 - 1] + kind[nk / 2]) / 2e6,
		     (double)kind[nk - 1] / 1e6, nk);
	}
	memcpy(sorted, times, sizeof sorted);
	qsort(sorted, KILLS, sizeof sorted[0], cmp_u64);
	diag("kill: rebalance after a member's death: median %.1f ms, max %.1f ms (%d kills)",
	     (double)(sorted[KILLS / 2 - 1] + sorted[KILLS / 2]) / 2e6,
	     (double)sorted[KILLS - 1] / 1e6, KILLS);
	ok(!timed_out && sorted[KILLS - 1] < REBALANCE_OK_MS * 1000000ull,
	   "kill: every rebalance took under %d ms (median %.1f ms, max %.1f ms)",
	   REBALANCE_OK_MS, (double)(sorted[KILLS / 2 - 1] + sorted[KILLS / 2]) / 2e6,
	   (double)sorted[KILLS - 1] / 1e6);

	/* Drain; the members report their assignments, then exit. */
	wait_counter(&sh->drained, KILL_MEMBERS, DRAIN_MAX_MS, "kill: members drain");
	tally(name, &t, 1);
	ok(final_stat(name, cl, pids, KILL_MEMBERS, KILLS),
	   "kill: stat: PARTITIONED, rebalanced at least %d times, owned by the final members, all committed",
	   KILLS);
	ok(assignments_cover(name, ids, KILL_MEMBERS),
	   "kill: the final members' assignments cover every partition exactly once");
	bad_exit += release_members(name, pids, ids, KILL_MEMBERS);
	report_bad(name);
	ok(bad_exit == 0 && !errors(),
	   "kill: members exited cleanly (the killed ones by SIGKILL), no open, poll or commit error");

	ok(t.missing == 0 && t.extra == 0,
	   "kill: every message published was processed (%llu published, %llu processed, %llu missing, %llu never published)",
	   (unsigned long long)t.published, (unsigned long long)sh->msgs,
	   (unsigned long long)t.missing, (unsigned long long)t.extra);
	check_members(name);

	/* Duplicates: only a killed member's message after its last commit. */
	for (p = 0; p < NPART; p++) {
		for (seq = 0; seq < MAXSEQ; seq++) {
			c = sh->count[p][seq];
			if (c < 2)
				continue;
			first = sh->first_by[p][seq];
			if (shown++ < 16)
				diag("kill: partition %d seq %u processed %u times, first by member %u (last commit there %d)",
				     p, seq, c, first, first < MAXMEM ? sh->committed[first][p] : -2);
			if (first >= MAXMEM || !sh->dead[first] ||
			    (int64_t)seq <= sh->committed[first][p])
				dup_bad++;
		}
	}
	for (i = 0; i < nheld; i++) {
		c = sh->count[held[i].part][held[i].seq];
		diag("kill: partition %u seq %u, held by a member at its death, processed %u times",
		     held[i].part, held[i].seq, c);
		redelivered += c >= 2;
	}
	ok(redelivered == nheld,
	   "kill: what a member held (processed, not committed) at its death was delivered again (%d of %d)",
	   redelivered, nheld);
	ok(t.dups <= KILLS * MAX_OWNED,
	   "kill: %llu duplicates, at most %d kills x %d partitions",
	   (unsigned long long)t.dups, KILLS, MAX_OWNED);
	ok(dup_bad == 0,
	   "kill: every duplicate was first processed by a killed member after its last commit there (%llu not)",
	   (unsigned long long)dup_bad);
	teardown(shmqd, cl);
}

/* ------------------------------------------------------------------------
 * joinleave: members come and go gracefully
 */

#define JL_CHECKS 9

static void scenario_joinleave(void)
{
	const char *name = "joinleave";
	shmq_client_t *cl;
	pid_t shmqd, pids[MAXMEM], prod;
	int ids[MAXMEM], live = 0, next_id = 1, joins = 0, leaves = 0, bad_exit = 0;
	int st, maxlive = 0, minlive = MAXMEM;
	uint64_t t_start, step;
	struct tally t;

	setup(SHMQ_GROUP_PARTITIONED, PGROUP, "part-jl", &shmqd, &cl);
	sh->publish_ms = JL_PUBLISH_MS;
	sh->rate = JL_RATE;

	ids[0] = next_id++;
	pids[0] = spawn(ids[0]);
	live = 1;
	joins++;
	wait_counter(&sh->ready, 1, READY_MAX_MS, "joinleave: first member open");

	prod = spawn(0);
	t_start = tu_now_ns();
	for (step = 1; ms_since(t_start) < JL_PUBLISH_MS - JL_STEP_MS; step++) {
		while (ms_since(t_start) < step * JL_STEP_MS)
			sleep_ms(1);
		if (next_id < MAXMEM) {
			ids[live] = next_id++;
			pids[live] = spawn(ids[live]);
			live++;
			joins++;
		}
		/*
		 * The oldest leave: above 3 always, and now and then down to
		 * 1.  Only once the newest has joined: a group with no live
		 * member starts again from opts.from (earliest) when one joins.
		 */
		wait_counter(&sh->ready, (uint32_t)joins, READY_MAX_MS,
			     "joinleave: the new member opens");
		while (live > JL_MAX_LIVE || (live > 1 && rnd(3) == 0)) {
			__atomic_store_n(&sh->leave[ids[0]], 1, __ATOMIC_RELEASE);
			st = tu_wait_child(pids[0], EXIT_MAX_MS);
			if (st != 0) {
				diag("joinleave: member %d left with status %#x", ids[0], st);
				bad_exit++;
			}
			memmove(ids, ids + 1, (size_t)(live - 1) * sizeof ids[0]);
			memmove(pids, pids + 1, (size_t)(live - 1) * sizeof pids[0]);
			live--;
			leaves++;
		}
		if (live > maxlive)
			maxlive = live;
		if (live < minlive)
			minlive = live;
	}

	st = tu_wait_child(prod, JL_PUBLISH_MS + PRODUCER_SLACK_MS + 5000);
	__atomic_store_n(&sh->done, 1, __ATOMIC_RELEASE);
	tally(name, &t, 0);
	ok(st == 0 && sh->prod_rc == 0,
	   "joinleave: the producer published %llu messages (status %#x, rc %d)",
	   (unsigned long long)t.published, st, sh->prod_rc);
	diag("joinleave: %d joins, %d leaves, %d to %d members at a time",
	     joins, leaves, minlive, maxlive);

	wait_counter(&sh->ready, (uint32_t)joins, READY_MAX_MS, "joinleave: members open");
	wait_counter(&sh->drained, (uint32_t)live, DRAIN_MAX_MS, "joinleave: members drain");
	tally(name, &t, 1);
	ok(final_stat(name, cl, pids, live, 1),
	   "joinleave: stat: PARTITIONED, owned by the %d final members, all committed", live);
	ok(assignments_cover(name, ids, live),
	   "joinleave: the final members' assignments cover every partition exactly once");
	bad_exit += release_members(name, pids, ids, live);
	report_bad(name);
	ok(bad_exit == 0 && !errors(),
	   "joinleave: every member left cleanly, no open, poll or commit error");
	ok(t.missing == 0 && t.dups == 0 && t.extra == 0,
	   "joinleave: every message processed exactly once (%llu published, %llu missing, %llu duplicates, %llu never published)",
	   (unsigned long long)t.published, (unsigned long long)t.missing,
	   (unsigned long long)t.dups, (unsigned long long)t.extra);
	check_members(name);
	teardown(shmqd, cl);
}

/* ------------------------------------------------------------------------
 * shared: SHARED groups, and the mode belongs to the group
 */

#define SH_CHECKS 10

static int open_mode(shmq_client_t *cl, const char *group, int mode, int from,
		     shmq_consumer_t **c)
{
	struct shmq_consumer_opts opts = SHMQ_CONSUMER_OPTS_INIT;

	opts.mode = mode;
	opts.from = from;
	*c = NULL;
	return shmq_consumer_open(cl, TOPIC, group, &opts, c);
}

static void scenario_shared(void)
{
	const char *name = "shared";
	shmq_client_t *cl;
	shmq_consumer_t *c1, *c2;
	pid_t shmqd, pids[2], prod;
	int ids[2] = { 1, 2 }, i, st, rc, n, n2, bad_exit = 0, all_ok;
	uint32_t parts[NPART];
	struct shmq_msg m;
	struct gsnap g;
	struct tally t;
	uint64_t t0;

	setup(SHMQ_GROUP_SHARED, SGROUP, "part-sh", &shmqd, &cl);
	sh->per_part = SH_PER_PART;
	for (i = 0; i < 2; i++)
		pids[i] = spawn(ids[i]);
	wait_counter(&sh->ready, 2, READY_MAX_MS, "shared: members open");
	prod = spawn(0);
	st = tu_wait_child(prod, PRODUCER_SLACK_MS);
	__atomic_store_n(&sh->done, 1, __ATOMIC_RELEASE);
	tally(name, &t, 0);
	ok(st == 0 && sh->prod_rc == 0 && t.published == NPART * SH_PER_PART,
	   "shared: the producer published %llu messages (status %#x, rc %d)",
	   (unsigned long long)t.published, st, sh->prod_rc);
	wait_counter(&sh->drained, 2, DRAIN_MAX_MS, "shared: members drain");

	rc = group_snap(cl, SGROUP, &g);
	all_ok = rc == 0 && g.found && g.mode == SHMQ_GROUP_SHARED && g.members == 2;
	for (i = 0; i < 2; i++)
		all_ok &= sh->assign_n[ids[i]] == NPART;
	ok(all_ok, "shared: stat says SHARED with 2 members; each member is assigned all %d partitions (%d, %d)",
	   NPART, sh->assign_n[1], sh->assign_n[2]);
	bad_exit += release_members(name, pids, ids, 2);
	tally(name, &t, 1);
	report_bad(name);
	ok(bad_exit == 0 && !errors(), "shared: members exited cleanly, no open, poll or commit error");
	ok(t.missing == 0 && t.dups == 0 && t.extra == 0,
	   "shared: 2 members processed every message exactly once (%llu published, %llu missing, %llu duplicates)",
	   (unsigned long long)t.published, (unsigned long long)t.missing,
	   (unsigned long long)t.dups);
	ok(sh->bad[BAD_CONTENT] + sh->bad[BAD_ORDER] + sh->bad[BAD_NOTOWNED] == 0,
	   "shared: content intact, per-member order held (%llu, %llu, %llu)",
	   (unsigned long long)sh->bad[BAD_CONTENT], (unsigned long long)sh->bad[BAD_ORDER],
	   (unsigned long long)sh->bad[BAD_NOTOWNED]);

	/* A PARTITIONED group beside it; its lone member owns every partition. */
	rc = open_mode(cl, PGROUP, SHMQ_GROUP_PARTITIONED, SHMQ_FROM_LATEST, &c1);
	n = -1;
	if (rc == 0) {
		t0 = tu_now_ns();
		do {
			shmq_consumer_poll(c1, &m, 10);
			n = shmq_consumer_assignment(c1, parts, NPART);
		} while (n != NPART && ms_since(t0) < 1000);
	}
	all_ok = rc == 0 && n == NPART && group_snap(cl, PGROUP, &g) == 0 &&
		 g.found && g.mode == SHMQ_GROUP_PARTITIONED && owned_by(&g, &(pid_t){ getpid() }, 1);
	if (!all_ok)
		diag_owners("shared: lone PARTITIONED member", &g);
	ok(all_ok, "shared: a lone PARTITIONED member of %s owns all %d partitions (open %d, assignment %d)",
	   PGROUP, NPART, rc, n);

	rc = open_mode(cl, PGROUP, SHMQ_GROUP_SHARED, SHMQ_FROM_COMMITTED, &c2);
	is_int(rc, -EINVAL, "shared: a SHARED member of the PARTITIONED group %s gets -EINVAL", PGROUP);
	shmq_consumer_close(c2);

	/* SHMQ_GROUP_DEFAULT takes the group's mode: two members split it. */
	rc = open_mode(cl, PGROUP, SHMQ_GROUP_DEFAULT, SHMQ_FROM_COMMITTED, &c2);
	n = n2 = -1;
	if (rc == 0 && c1) {
		t0 = tu_now_ns();
		do {
			shmq_consumer_poll(c1, &m, 0);
			shmq_consumer_poll(c2, &m, 0);
			n = shmq_consumer_assignment(c1, parts, NPART);
			n2 = shmq_consumer_assignment(c2, parts, NPART);
		} while ((n != NPART / 2 || n2 != NPART / 2) && ms_since(t0) < 1000);
	}
	ok(rc == 0 && n == NPART / 2 && n2 == NPART / 2,
	   "shared: a DEFAULT-mode member joins %s as a partitioned member (open %d, assignments %d and %d)",
	   PGROUP, rc, n, n2);
	shmq_consumer_close(c2);
	shmq_consumer_close(c1);
	rc = open_mode(cl, PGROUP, SHMQ_GROUP_SHARED, SHMQ_FROM_COMMITTED, &c2);
	is_int(rc, -EINVAL, "shared: ... also once its members left: the mode is the group's");
	shmq_consumer_close(c2);
	rc = open_mode(cl, SGROUP, SHMQ_GROUP_PARTITIONED, SHMQ_FROM_COMMITTED, &c2);
	is_int(rc, -EINVAL, "shared: a PARTITIONED member of the SHARED group %s gets -EINVAL", SGROUP);
	shmq_consumer_close(c2);
	teardown(shmqd, cl);
}

/* ------------------------------------------------------------------------
 * held: a member dies holding a message while another one commits
 */

#define HELD_ROUNDS	 10
#define HELD_WAIT_MS	 500
#define HELD_CHECKS	 2

static void scenario_held(void)
{
	const char *name = "held";
	shmq_client_t *cl;
	shmq_producer_t *pr = NULL;
	pid_t shmqd, committer, victim;
	int round, id = 1, rc, p, held = 0, lost = 0, missing = 0, st, bad_exit = 0;
	uint64_t t0, slowest = 0;
	struct inflight h;
	struct val v;

	setup(SHMQ_GROUP_PARTITIONED, PGROUP, "part-held", &shmqd, &cl);
	rc = shmq_producer_open(cl, TOPIC, NULL, &pr);
	if (rc < 0)
		bail("held: producer_open: %s", shmq_strerror(rc));
	spawn_role = ROLE_COMMITTER;
	committer = spawn(id++);
	wait_counter(&sh->ready, 1, READY_MAX_MS, "held: committer open");

	for (round = 0; round < HELD_ROUNDS; round++) {
		spawn_role = ROLE_VICTIM;
		victim = spawn(id);
		wait_counter(&sh->ready, (uint32_t)round + 2, READY_MAX_MS,
			     "held: victim open");
		/* One message per partition: the victim takes one of its own. */
		for (p = 0; p < NPART; p++) {
			make_val(&v, (uint32_t)p, (uint32_t)round);
			rc = shmq_send(pr, p, NULL, 0, &v, sizeof v, SEND_TIMEOUT_MS, NULL);
			if (rc != p)
				bail("held: send: %s", shmq_strerror(rc));
		}
		t0 = tu_now_ns();
		while (__atomic_load_n(&sh->inflight[id].state, __ATOMIC_ACQUIRE) != IF_HELD &&
		       ms_since(t0) < 1000)
			sleep_ms(1);
		h = sh->inflight[id];
		__atomic_store_n(&sh->dead[id], 1, __ATOMIC_RELEASE);
		kill(victim, SIGKILL);
		st = tu_wait_child(victim, EXIT_MAX_MS);
		if (!(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
			bad_exit++;
		/* Everything of the round reaches the committer, the held one too. */
		t0 = tu_now_ns();
		for (;;) {
			int n = 0;

			for (p = 0; p < NPART; p++)
				n += __atomic_load_n(&sh->count[p][round], __ATOMIC_ACQUIRE) > 0;
			if (n == NPART || ms_since(t0) > HELD_WAIT_MS)
				break;
			sleep_ms(1);
		}
		if (ms_since(t0) > slowest)
			slowest = ms_since(t0);
		if (h.state == IF_HELD) {
			held++;
			if (!sh->count[h.part][h.seq]) {
				lost++;
				diag("held: round %d: partition %u seq %u, held by the killed member, not delivered again within %d ms",
				     round, h.part, h.seq, HELD_WAIT_MS);
			}
		}
		for (p = 0; p < NPART; p++)
			missing += !sh->count[p][round];
		id++;
	}
	__atomic_store_n(&sh->release, 1, __ATOMIC_RELEASE);
	st = tu_wait_child(committer, EXIT_MAX_MS);
	report_bad(name);
	ok(st == 0 && bad_exit == 0 && !errors() && sh->bad[BAD_CONTENT] == 0,
	   "held: members ran cleanly (committer status %#x, %d victims not killed by SIGKILL)",
	   st, bad_exit);
	ok(held == HELD_ROUNDS && lost == 0 && missing == 0,
	   "held: a message a member held when killed went to the member left, committing all along (%d of %d held, %d lost, %d messages missing, slowest round %llu ms)",
	   held - lost, held, lost, missing, (unsigned long long)slowest);
	shmq_producer_close(pr);
	spawn_role = ROLE_MEMBER;
	teardown(shmqd, cl);
}

int main(void)
{
	const char *env = getenv("SHMQ_TEST_SEED");
	uint64_t seed;

	tu_init(150);
	plan(KILL_CHECKS + JL_CHECKS + SH_CHECKS + HELD_CHECKS);
	seed = env && *env ? strtoull(env, NULL, 0) : tu_now_ns() ^ (uint64_t)getpid() << 32;
	rng = seed;
	diag("seed %llu (set SHMQ_TEST_SEED to replay)", (unsigned long long)seed);
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		  -1, 0);
	if (sh == MAP_FAILED)
		bail("mmap: %s", strerror(errno));

	scenario_kill();
	scenario_joinleave();
	scenario_shared();
	scenario_held();
	munmap(sh, sizeof *sh);
	return tap_done();
}
