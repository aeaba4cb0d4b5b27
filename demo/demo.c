/*
 * demo.c - shmq-demo, the demonstration behind `make demo`.
 *
 * Design note
 * -----------
 * The demo shows, and checks, the promise of shmq on one host: several
 * producer processes publish into a partitioned topic, two consumer groups
 * each receive every message exactly once, in per-producer order, at
 * microsecond latency.
 *
 *   parent ──fork/exec──> shmqd --dir DIR
 *     │  creates topic "demo": 4 partitions x 4 MiB, policy block
 *     ├─fork─> 5 members: billing x3, audit x2  (opened before any producer)
 *     └─fork─> 4 producers, paced to --rate msg/s in total for --seconds
 *
 * Messages.  Each producer uses one key, chosen so that producer i lands in
 * partition i: its messages stay in one partition, in order, and the four
 * partitions are evenly used.  Even producers publish with claim/commit
 * (zero copy), odd ones with shmq_send, so both paths are checked.  A value
 * is a struct demo_hdr (producer, sequence number, send time on
 * CLOCK_MONOTONIC, payload length, CRC-32 of producer, sequence and
 * payload) followed by a 64..256 byte payload that is a function of
 * (producer, sequence).  The send time is stamped last, just before the
 * message is published, and is not covered by the CRC so that the CRC's
 * cost is not counted as latency.
 *
 * Accounting.  Everything the parent reports lives in one anonymous
 * MAP_SHARED region mapped before the first fork, so every process sees it
 * at the same address: per group a receive counter for every (producer,
 * sequence), per-second sent and received counts, and a log-linear latency
 * histogram per second.  Children update it with relaxed atomic adds:
 * relaxed is enough because each counter is independent, the per-second
 * lines tolerate a count that lands a moment late, and the final summary is
 * read after waitpid(), which orders all of a child's writes before it.
 *
 * Checks.  Each member checks every message's CRC and that, per producer,
 * the sequence numbers it receives only grow (members of a group share the
 * partition's stream, so each member sees an increasing subsequence).  The
 * parent then counts, per group, the (producer, sequence) pairs received
 * zero times (missing) and more than once (duplicated).
 *
 * Stopping.  Everything is bounded.  The parent's SIGINT/SIGTERM handler
 * sets a flag; the parent then raises `stop` in the shared region, which
 * producers check between sends (a blocked send waits at most SEND_WAIT_MS)
 * and members between polls (POLL_MS).  Children ignore SIGINT, so that a
 * Ctrl-C at the terminal reaches them only through the parent, and get
 * SIGTERM if the parent dies (PR_SET_PDEATHSIG).  shmqd runs in its own
 * process group so that Ctrl-C does not take it down before the parent has
 * deleted the topic; the parent stops it with SIGTERM, then SIGKILL.
 *
 * Members never spin: they sleep in shmq_consumer_poll() with a timeout.
 * Nothing is pinned; the demo is meant to run on a small machine.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

#define PROG "shmq-demo"

#define TOPIC		"demo"
#define PARTITIONS	4
#define RING_BYTES	(4u << 20)
#define NPRODUCERS	4
#define NGROUPS		2
#define NMEMBERS	5 /* the sum of the groups' member counts */
#define NCHILDREN	(NPRODUCERS + NMEMBERS)

#define PAYLOAD_MIN	64
#define PAYLOAD_MAX	256
#define DEMO_MAGIC	0x444d5153u /* "SQMD" */

#define NSEC_PER_SEC	1000000000ull
#define NSEC_PER_MSEC	1000000ull

#define POLL_MS		100	/* a member's longest sleep before it looks at `stop` */
#define SEND_WAIT_MS	100	/* a producer's longest wait for room in a full ring */
#define DRAIN_IDLE_NS	(1 * NSEC_PER_SEC) /* members leave after this much quiet */
#define DRAIN_MAX_S	30	/* ...or after this long draining, whatever comes */
#define START_WAIT_S	5	/* for shmqd to answer, and for members to join */
#define STOP_WAIT_MS	3000	/* for children to obey `stop` before SIGKILL */
#define SHMQD_STOP_MS	5000	/* for shmqd to obey SIGTERM before SIGKILL */
#define CATCH_UP_MS	20	/* the most a late producer sends at once */
#define TICK_GRACE_NS	(50 * NSEC_PER_MSEC) /* let a second's counts land */

#define MAX_SECONDS	3600
#define MAX_RATE	10000000ull
/* Bounds the receive counters: 2 bytes per message per group. */
#define MAX_MESSAGES	20000000ull

/*
 * Log-linear latency histogram: values below HIST_SUB get a bucket each;
 * above, each power of two is split into HIST_SUB buckets, so a bucket is
 * at most 1/16 (6%) wide relative to its value.  Values from 2^HIST_MAX_EXP
 * ns (18 minutes) on share the last bucket.
 */
#define HIST_SUB_BITS	4
#define HIST_SUB	(1u << HIST_SUB_BITS)
#define HIST_MAX_EXP	40
#define HIST_BUCKETS	((HIST_MAX_EXP - HIST_SUB_BITS + 2) * HIST_SUB)

struct demo_hdr {
	uint32_t magic;
	uint32_t producer;
	uint64_t seq;
	uint64_t send_ns;     /* CLOCK_MONOTONIC, stamped just before publishing */
	uint32_t payload_len;
	uint32_t crc;	      /* CRC-32 of producer, seq, payload_len, payload */
};

static const struct {
	const char *name;
	int members;
} group_def[NGROUPS] = { { "billing", 3 }, { "audit", 2 } };

/* Per-group totals in the shared region. */
struct group_totals {
	uint64_t received;
	uint64_t bad_checksum;
	uint64_t out_of_order;
	uint64_t misrouted;  /* a producer's message outside its partition */
	uint64_t unexpected; /* a sequence number beyond what was planned */
};

/* The fixed head of the shared region; the arrays follow it. */
struct shared_head {
	int stop;		/* parent -> children: stop now */
	int producers_finished; /* parent -> members: every producer exited */
	int members_ready;	/* members -> parent: joined their group */
	uint64_t start_ns;	/* CLOCK_MONOTONIC at the producers' start */
	uint64_t sent[NPRODUCERS];
	struct group_totals g[NGROUPS];
};

/*
 * Process-local view of the demo, set up before the first fork: the
 * pointers into the shared region stay valid in every child.
 */
struct demo {
	const char *dir;
	const char *shmqd;
	unsigned seconds;
	uint64_t rate;

	uint64_t max_seq;  /* receive counters per producer */
	uint64_t nseconds; /* slots of the per-second arrays */
	uint64_t plan[NPRODUCERS]; /* messages each producer is to send */
	uint64_t prate[NPRODUCERS]; /* each producer's share of --rate */
	char key[NPRODUCERS][32];
	uint32_t partition_of[NPRODUCERS];

	struct shared_head *sh;
	uint64_t *sent_sec;    /* [nseconds] */
	uint64_t *recv_sec;    /* [NGROUPS][nseconds] */
	uint64_t *hist;	       /* [NGROUPS][nseconds][HIST_BUCKETS] */
	uint16_t *recv_count;  /* [NGROUPS][NPRODUCERS][max_seq] */
	size_t shared_bytes;
};

static volatile sig_atomic_t got_signal;
static uint32_t crc_table[256];

/* ------------------------------------------------------------------------
 * Small helpers
 */

static void __attribute__((format(printf, 1, 2))) warnx_(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Report a failed shmq call; the detail is copied before strerror runs. */
static void __attribute__((format(printf, 2, 3))) shmq_warn(int err, const char *fmt, ...)
{
	char detail[512], what[512];
	va_list ap;

	snprintf(detail, sizeof(detail), "%s", shmq_errdetail());
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fprintf(stderr, PROG ": %s: %s%s%s\n", what, shmq_strerror(err),
		detail[0] ? ": " : "", detail);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Sleep until an absolute CLOCK_MONOTONIC time; a signal cuts it short. */
static void sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / NSEC_PER_SEC),
			       .tv_nsec = (long)(t % NSEC_PER_SEC) };

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void crc_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 (IEEE), continued from crc; start with 0. */
static uint32_t crc32_update(uint32_t crc, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint32_t msg_crc(const struct demo_hdr *h, const void *payload)
{
	uint32_t crc = 0;

	crc = crc32_update(crc, &h->producer, sizeof(h->producer));
	crc = crc32_update(crc, &h->seq, sizeof(h->seq));
	crc = crc32_update(crc, &h->payload_len, sizeof(h->payload_len));
	return crc32_update(crc, payload, h->payload_len);
}

/* splitmix64: the payload is a pure function of (producer, seq). */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Fill in a message's header (but for send_ns) and payload into buf. */
static size_t make_msg(unsigned char *buf, uint32_t producer, uint64_t seq)
{
	struct demo_hdr h = { .magic = DEMO_MAGIC, .producer = producer, .seq = seq };
	uint64_t x = mix64(((uint64_t)producer << 48) ^ seq);
	unsigned char *payload = buf + sizeof(h);
	uint32_t i;

	h.payload_len = PAYLOAD_MIN + (uint32_t)(x % (PAYLOAD_MAX - PAYLOAD_MIN + 1));
	for (i = 0; i < h.payload_len; i += 8) {
		x = mix64(x);
		memcpy(payload + i, &x,
		       h.payload_len - i < 8 ? h.payload_len - i : 8);
	}
	h.crc = msg_crc(&h, payload);
	memcpy(buf, &h, sizeof(h));
	return sizeof(h) + h.payload_len;
}

static unsigned hist_bucket(uint64_t v)
{
	unsigned e;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	if (e > HIST_MAX_EXP)
		return HIST_BUCKETS - 1;
	return (e - HIST_SUB_BITS + 1) * HIST_SUB +
	       (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of a bucket's range, as its representative value. */
static uint64_t hist_value(unsigned b)
{
	unsigned e, sub;

	if (b < HIST_SUB)
		return b;
	e = b / HIST_SUB + HIST_SUB_BITS - 1;
	sub = b % HIST_SUB;
	return ((uint64_t)(HIST_SUB + sub) << (e - HIST_SUB_BITS)) +
	       ((1ull << (e - HIST_SUB_BITS)) >> 1);
}

/* The value at quantile q (0..1) of a histogram holding total samples. */
static uint64_t hist_quantile(const uint64_t *h, uint64_t total, double q)
{
	uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
	uint64_t seen = 0;
	unsigned b;

	if (rank == 0)
		rank = 1;
	for (b = 0; b < HIST_BUCKETS; b++) {
		seen += h[b];
		if (seen >= rank)
			return hist_value(b);
	}
	return hist_value(HIST_BUCKETS - 1);
}

/* A latency in 6 characters or so: 850ns, 12.3us, 456us, 1.23ms, 2.50s. */
static void fmt_ns(char *buf, size_t n, uint64_t ns)
{
	double v = (double)ns;

	if (ns < 1000)
		snprintf(buf, n, "%" PRIu64 "ns", ns);
	else if (ns < 100000)
		snprintf(buf, n, "%.1fus", v / 1e3);
	else if (ns < 1000000)
		snprintf(buf, n, "%.0fus", v / 1e3);
	else if (ns < 10000000)
		snprintf(buf, n, "%.2fms", v / 1e6);
	else if (ns < 100000000)
		snprintf(buf, n, "%.1fms", v / 1e6);
	else if (ns < 1000000000)
		snprintf(buf, n, "%.0fms", v / 1e6);
	else
		snprintf(buf, n, "%.2fs", v / 1e9);
}

static uint64_t *sec_slot(uint64_t *base, const struct demo *d, int g)
{
	return base + (size_t)g * d->nseconds;
}

static uint64_t *hist_of(const struct demo *d, int g, uint64_t sec)
{
	return d->hist + ((size_t)g * d->nseconds + sec) * HIST_BUCKETS;
}

static uint16_t *counts_of(const struct demo *d, int g, uint32_t p)
{
	return d->recv_count + ((size_t)g * NPRODUCERS + p) * d->max_seq;
}

/* The per-second slot for time t; late stragglers share the last one. */
static uint64_t second_of(const struct demo *d, uint64_t t)
{
	uint64_t start = __atomic_load_n(&d->sh->start_ns, __ATOMIC_ACQUIRE);
	uint64_t s = t > start ? (t - start) / NSEC_PER_SEC : 0;

	return s < d->nseconds ? s : d->nseconds - 1;
}

static void add(uint64_t *p, uint64_t v)
{
	/* Relaxed: independent counters; see "Accounting" above. */
	__atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static bool stop_requested(const struct demo *d)
{
	return got_signal || __atomic_load_n(&d->sh->stop, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------------
 * Children
 */

static void on_signal(int sig)
{
	got_signal = sig;
}

/*
 * Common start of every child: Ctrl-C is the parent's to handle; SIGTERM
 * (from the parent, or because the parent died) means stop.
 */
static void child_setup(pid_t parent)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGINT, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	/* The parent may have died before prctl took effect. */
	if (getppid() != parent)
		got_signal = SIGTERM;
}

enum { PUBLISHED, PUBLISH_FAILED, PUBLISH_STOPPED };

/* Publish one message: PUBLISHED, PUBLISH_FAILED (reported) or PUBLISH_STOPPED. */
static int publish(const struct demo *d, shmq_producer_t *pr, uint32_t id,
		   unsigned char *buf, size_t len, bool zero_copy)
{
	const char *key = d->key[id];
	size_t klen = strlen(key);
	uint64_t t;
	int rc;

	for (;;) {
		if (zero_copy) {
			struct shmq_claim cl;

			rc = shmq_producer_claim(pr, SHMQ_PARTITION_ANY, key,
						 klen, len, SEND_WAIT_MS, &cl);
			if (rc >= 0) {
				t = now_ns();
				memcpy(buf + offsetof(struct demo_hdr, send_ns),
				       &t, sizeof(t));
				memcpy(cl.value, buf, len);
				rc = shmq_producer_commit(pr);
				if (rc == 0)
					return PUBLISHED;
				shmq_warn(rc, "producer %u: commit", id);
				return PUBLISH_FAILED;
			}
		} else {
			t = now_ns();
			memcpy(buf + offsetof(struct demo_hdr, send_ns), &t,
			       sizeof(t));
			rc = shmq_send(pr, SHMQ_PARTITION_ANY, key, klen, buf,
				       len, SEND_WAIT_MS, NULL);
			if (rc >= 0)
				return PUBLISHED;
		}
		/* A full ring is back-pressure: wait again unless told to stop. */
		if (rc == -EAGAIN && !stop_requested(d))
			continue;
		if (rc == -EAGAIN)
			return PUBLISH_STOPPED;
		shmq_warn(rc, "producer %u: %s", id, zero_copy ? "claim" : "send");
		return PUBLISH_FAILED;
	}
}

static int producer_main(struct demo *d, uint32_t id)
{
	struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;
	unsigned char buf[sizeof(struct demo_hdr) + PAYLOAD_MAX];
	shmq_producer_t *pr = NULL;
	shmq_client_t *client = NULL;
	uint64_t start, end, seq = 0, rate = d->prate[id];
	uint64_t catch_up = rate * CATCH_UP_MS / 1000 + 1;
	int rc;

	rc = shmq_open(d->dir, NULL, &client);
	if (rc) {
		shmq_warn(rc, "producer %u: open %s", id, d->dir);
		return 1;
	}
	rc = shmq_producer_open(client, TOPIC, &po, &pr);
	if (rc) {
		shmq_warn(rc, "producer %u: open producer", id);
		shmq_close(client);
		return 1;
	}
	start = __atomic_load_n(&d->sh->start_ns, __ATOMIC_ACQUIRE);
	end = start + d->seconds * NSEC_PER_SEC;
	rc = 0;
	while (seq < d->plan[id] && !stop_requested(d)) {
		uint64_t now = now_ns(), due, burst;

		if (now >= end)
			break;
		/* Pacing: by now, rate * elapsed messages are due. */
		due = (uint64_t)((unsigned __int128)rate * (now - start) /
				 NSEC_PER_SEC) + 1;
		if (due > d->plan[id])
			due = d->plan[id];
		/*
		 * After a stall (a busy machine), catch up at most
		 * CATCH_UP_MS worth of messages: the rate stays a rate rather
		 * than becoming a burst, and `sent` records what really went.
		 */
		if (due > seq + catch_up) {
			start += (uint64_t)((unsigned __int128)(due - seq - catch_up) *
					    NSEC_PER_SEC / rate);
			due = seq + catch_up;
		}
		if (seq >= due) {
			/*
			 * Ahead of schedule: sleep until the next message is
			 * due, but at least 200 us so that we send in small
			 * bursts rather than wake for every message.
			 */
			uint64_t next = start + (uint64_t)((unsigned __int128)seq *
						NSEC_PER_SEC / rate);

			if (next < now + 200000)
				next = now + 200000;
			if (next > now + 100 * NSEC_PER_MSEC)
				next = now + 100 * NSEC_PER_MSEC;
			sleep_until(next);
			continue;
		}
		/* Behind schedule (or on it): a bounded burst. */
		for (burst = 0; burst < 256 && seq < due; burst++) {
			size_t len = make_msg(buf, id, seq);
			int pub = publish(d, pr, id, buf, len, id % 2 == 0);

			if (pub == PUBLISH_FAILED)
				rc = 1;
			if (pub != PUBLISHED)
				goto out;
			/* Counted only once published, so `sent` is exact. */
			seq++;
			__atomic_store_n(&d->sh->sent[id], seq, __ATOMIC_RELAXED);
			add(&d->sent_sec[second_of(d, now_ns())], 1);
			if (stop_requested(d))
				goto out;
		}
	}
out:
	shmq_producer_close(pr);
	shmq_close(client);
	return rc;
}

/* Per-member state of the order check. */
struct member_state {
	int group;
	int64_t last_seq[NPRODUCERS];
};

static void check_msg(struct demo *d, struct member_state *ms,
		      const struct shmq_msg *m)
{
	struct group_totals *gt = &d->sh->g[ms->group];
	uint64_t now = now_ns(), sec, lat;
	struct demo_hdr h;

	add(&gt->received, 1);
	sec = second_of(d, now);
	add(&sec_slot(d->recv_sec, d, ms->group)[sec], 1);

	if (m->value_len < sizeof(h)) {
		add(&gt->bad_checksum, 1);
		return;
	}
	/* The value may be unaligned in the ring: copy the header out. */
	memcpy(&h, m->value, sizeof(h));
	if (h.magic != DEMO_MAGIC || h.producer >= NPRODUCERS ||
	    h.payload_len != m->value_len - sizeof(h) ||
	    msg_crc(&h, (const unsigned char *)m->value + sizeof(h)) != h.crc) {
		add(&gt->bad_checksum, 1);
		return;
	}
	lat = now > h.send_ns ? now - h.send_ns : 0;
	add(&hist_of(d, ms->group, sec)[hist_bucket(lat)], 1);

	if (m->partition != d->partition_of[h.producer])
		add(&gt->misrouted, 1);
	/* Equal is a duplicate, which the receive counters report. */
	if ((int64_t)h.seq < ms->last_seq[h.producer])
		add(&gt->out_of_order, 1);
	else
		ms->last_seq[h.producer] = (int64_t)h.seq;
	if (h.seq < d->max_seq)
		/* 16 bits wrap only after 65536 deliveries of one message. */
		__atomic_fetch_add(&counts_of(d, ms->group, h.producer)[h.seq],
				   1, __ATOMIC_RELAXED);
	else
		add(&gt->unexpected, 1);
}

static int member_main(struct demo *d, int g, int m)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	struct member_state ms = { .group = g };
	shmq_consumer_t *c = NULL;
	shmq_client_t *client = NULL;
	uint64_t last_rx = 0, finished_at = 0;
	int rc, p;

	for (p = 0; p < NPRODUCERS; p++)
		ms.last_seq[p] = -1;
	rc = shmq_open(d->dir, NULL, &client);
	if (rc) {
		shmq_warn(rc, "%s member %d: open %s", group_def[g].name, m, d->dir);
		return 1;
	}
	co.from = SHMQ_FROM_EARLIEST;
	rc = shmq_consumer_open(client, TOPIC, group_def[g].name, &co, &c);
	if (rc) {
		shmq_warn(rc, "%s member %d: join", group_def[g].name, m);
		shmq_close(client);
		return 1;
	}
	__atomic_fetch_add(&d->sh->members_ready, 1, __ATOMIC_RELEASE);

	while (!stop_requested(d)) {
		struct shmq_msg msg;
		uint64_t now;

		rc = shmq_consumer_poll(c, &msg, POLL_MS);
		if (rc == 0) {
			check_msg(d, &ms, &msg);
			last_rx = now_ns();
		} else if (rc != -EAGAIN && rc != -EINTR) {
			shmq_warn(rc, "%s member %d: poll", group_def[g].name, m);
			rc = 1;
			break;
		}
		rc = 0;
		/*
		 * Drain: once every producer has exited, leave after a second
		 * with nothing to take, or after DRAIN_MAX_S in any case.
		 */
		if (!__atomic_load_n(&d->sh->producers_finished, __ATOMIC_ACQUIRE))
			continue;
		now = now_ns();
		if (!finished_at)
			finished_at = now;
		if (now - (last_rx > finished_at ? last_rx : finished_at) >=
			    DRAIN_IDLE_NS ||
		    now - finished_at >= DRAIN_MAX_S * NSEC_PER_SEC)
			break;
	}
	shmq_consumer_close(c);
	shmq_close(client);
	return rc;
}

/* ------------------------------------------------------------------------
 * The parent: processes
 */

enum role { ROLE_PRODUCER, ROLE_MEMBER };

struct child {
	pid_t pid; /* 0 once reaped */
	enum role role;
	int id;	   /* producer id, or member number in its group */
	int group;
	int status;
};

static void describe_child(const struct child *c, char *buf, size_t n)
{
	if (c->role == ROLE_PRODUCER)
		snprintf(buf, n, "producer %d", c->id);
	else
		snprintf(buf, n, "%s member %d", group_def[c->group].name, c->id);
}

static pid_t spawn(struct demo *d, struct child *c)
{
	pid_t parent = getpid();
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid != 0)
		return pid;
	child_setup(parent);
	_exit(c->role == ROLE_PRODUCER ? producer_main(d, (uint32_t)c->id) :
					 member_main(d, c->group, c->id));
}

/*
 * Reap whatever has exited, without blocking.  Returns how many children
 * are still running.  A child that failed makes *failed true.
 */
static int reap(struct child *ch, int n, bool *failed)
{
	int running = 0, i, st;

	for (i = 0; i < n; i++) {
		if (!ch[i].pid)
			continue;
		if (waitpid(ch[i].pid, &st, WNOHANG) == ch[i].pid) {
			ch[i].pid = 0;
			ch[i].status = st;
			if (!WIFEXITED(st) || WEXITSTATUS(st))
				*failed = true;
			continue;
		}
		running++;
	}
	return running;
}

static int running_of(const struct child *ch, int n, enum role r)
{
	int i, k = 0;

	for (i = 0; i < n; i++)
		k += ch[i].pid && ch[i].role == r;
	return k;
}

/* Raise `stop`, wait STOP_WAIT_MS, then SIGKILL what is left and reap it. */
static void stop_children(struct demo *d, struct child *ch, int n)
{
	uint64_t deadline = now_ns() + STOP_WAIT_MS * NSEC_PER_MSEC;
	bool failed = false;
	int i;

	__atomic_store_n(&d->sh->stop, 1, __ATOMIC_RELEASE);
	while (reap(ch, n, &failed) && now_ns() < deadline)
		usleep(10000);
	for (i = 0; i < n; i++) {
		if (!ch[i].pid)
			continue;
		kill(ch[i].pid, SIGKILL);
		waitpid(ch[i].pid, &ch[i].status, 0);
		ch[i].pid = 0;
	}
}

static pid_t start_shmqd(const struct demo *d)
{
	pid_t parent = getpid();
	pid_t pid;
	int fd;

	fflush(NULL);
	pid = fork();
	if (pid != 0)
		return pid;
	/* Out of the terminal's process group: Ctrl-C is for the parent. */
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(1);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		close(fd);
	}
	/* --quiet: only its errors, so that the demo's output stays short. */
	execl(d->shmqd, d->shmqd, "--dir", d->dir, "--quiet", (char *)NULL);
	fprintf(stderr, PROG ": exec %s: %s\n", d->shmqd, strerror(errno));
	_exit(127);
}

/* SIGTERM, wait SHMQD_STOP_MS, SIGKILL. */
static void stop_shmqd(pid_t pid)
{
	uint64_t deadline = now_ns() + SHMQD_STOP_MS * NSEC_PER_MSEC;
	int st;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_ns() >= deadline) {
			warnx_("shmqd did not stop within %d ms; killing it",
			       SHMQD_STOP_MS);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return;
		}
		usleep(10000);
	}
}

/*
 * Is some shmqd already serving the directory?  The public API has no ping,
 * so ask to delete a topic that does not exist: only a daemon can answer
 * anything but SHMQ_ENODAEMON, and the answer changes nothing.
 */
static bool daemon_answers(const struct demo *d)
{
	shmq_client_t *client;
	int rc;

	if (shmq_open(d->dir, NULL, &client))
		return false;
	rc = shmq_topic_delete(client, "shmq-demo-probe-no-such-topic");
	shmq_close(client);
	return rc != SHMQ_ENODAEMON && rc != -ECONNREFUSED;
}

/*
 * Wait until shmqd answers, clearing a stale "demo" topic, then create the
 * topic.  Deleting is the probe: it needs the daemon, and it also removes
 * what a previous run left behind.  Returns 0, or 1 after reporting.
 */
static int create_topic(const struct demo *d, pid_t shmqd, bool *shmqd_dead)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	uint64_t deadline = now_ns() + START_WAIT_S * NSEC_PER_SEC;
	shmq_client_t *client = NULL;
	int rc, st;

	to.partitions = PARTITIONS;
	to.ring_bytes = RING_BYTES;
	to.full_policy = SHMQ_FULL_BLOCK;
	for (;;) {
		if (!client) {
			rc = shmq_open(d->dir, NULL, &client);
			if (rc && rc != -ENOENT) {
				shmq_warn(rc, "open %s", d->dir);
				return 1;
			}
		}
		if (client) {
			rc = shmq_topic_delete(client, TOPIC);
			if (rc == 0 || rc == -ENOENT)
				rc = shmq_topic_create(client, TOPIC, &to);
			if (rc == 0)
				break;
			/*
			 * Not up yet (no socket, or not listening), or a stale
			 * topic that reappeared: try again.  Anything else is
			 * a real refusal.
			 */
			if (rc != SHMQ_ENODAEMON && rc != -ECONNREFUSED &&
			    rc != -ENOENT && rc != -EEXIST) {
				shmq_warn(rc, "create topic %s", TOPIC);
				shmq_close(client);
				return 1;
			}
		}
		if (waitpid(shmqd, &st, WNOHANG) == shmqd) {
			*shmqd_dead = true;
			warnx_("shmqd exited (%s %d) before it answered; its messages are above",
			       WIFEXITED(st) ? "status" : "signal",
			       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			shmq_close(client);
			return 1;
		}
		if (got_signal || now_ns() >= deadline) {
			if (!got_signal)
				shmq_warn(rc, "shmqd did not answer within %d s", START_WAIT_S);
			shmq_close(client);
			return 1;
		}
		usleep(50000);
	}
	shmq_close(client);
	return 0;
}

static void delete_topic(const struct demo *d)
{
	shmq_client_t *client;
	int rc;

	rc = shmq_open(d->dir, NULL, &client);
	if (rc) {
		shmq_warn(rc, "open %s to delete topic %s", d->dir, TOPIC);
		return;
	}
	rc = shmq_topic_delete(client, TOPIC);
	if (rc && rc != -ENOENT)
		shmq_warn(rc, "delete topic %s", TOPIC);
	shmq_close(client);
}

/* ------------------------------------------------------------------------
 * The parent: reporting
 */

static void print_header(void)
{
	int g;

	printf("%6s %9s", "time", "sent/s");
	for (g = 0; g < NGROUPS; g++) {
		char col[32];

		snprintf(col, sizeof(col), "%s/s", group_def[g].name);
		printf(" | %9s %7s %7s %7s", col, "p50", "p99", "p99.9");
	}
	putchar('\n');
}

static void print_second(const struct demo *d, uint64_t sec)
{
	int g;

	printf("%5" PRIu64 "s %9" PRIu64, sec + 1, get(&d->sent_sec[sec]));
	for (g = 0; g < NGROUPS; g++) {
		uint64_t h[HIST_BUCKETS], n = 0;
		char p50[16] = "-", p99[16] = "-", p999[16] = "-";
		unsigned b;

		for (b = 0; b < HIST_BUCKETS; b++) {
			h[b] = get(&hist_of(d, g, sec)[b]);
			n += h[b];
		}
		if (n) {
			fmt_ns(p50, sizeof(p50), hist_quantile(h, n, 0.50));
			fmt_ns(p99, sizeof(p99), hist_quantile(h, n, 0.99));
			fmt_ns(p999, sizeof(p999), hist_quantile(h, n, 0.999));
		}
		printf(" | %9" PRIu64 " %7s %7s %7s",
		       get(&sec_slot(d->recv_sec, d, g)[sec]), p50,
		       p99, p999);
	}
	putchar('\n');
	fflush(stdout);
}

static bool second_is_quiet(const struct demo *d, uint64_t sec)
{
	int g;

	if (get(&d->sent_sec[sec]))
		return false;
	for (g = 0; g < NGROUPS; g++)
		if (get(&sec_slot(d->recv_sec, d, g)[sec]))
			return false;
	return true;
}

struct verdict {
	char why[1024];
	size_t len;
};

static void __attribute__((format(printf, 2, 3)))
failure(struct verdict *v, const char *fmt, ...)
{
	va_list ap;

	if (v->len >= sizeof(v->why) - 1)
		return;
	if (v->len)
		v->len += (size_t)snprintf(v->why + v->len, sizeof(v->why) - v->len, "; ");
	if (v->len >= sizeof(v->why) - 1)
		return;
	va_start(ap, fmt);
	v->len += (size_t)vsnprintf(v->why + v->len, sizeof(v->why) - v->len, fmt, ap);
	va_end(ap);
	if (v->len > sizeof(v->why) - 1)
		v->len = sizeof(v->why) - 1;
}

static void summarize(const struct demo *d, struct verdict *v)
{
	uint64_t total = 0;
	int g;
	uint32_t p;

	printf("\nsent");
	for (p = 0; p < NPRODUCERS; p++) {
		uint64_t s = d->sh->sent[p];

		total += s;
		printf("%s p%u %" PRIu64, p ? "," : ":", p, s);
	}
	printf(" = %" PRIu64 " messages\n\n", total);

	printf("%-8s %9s %8s %10s %12s %12s %7s %7s %7s %7s\n", "group",
	       "received", "missing", "duplicated", "out-of-order",
	       "bad-checksum", "p50", "p99", "p99.9", "max");
	for (g = 0; g < NGROUPS; g++) {
		const struct group_totals *gt = &d->sh->g[g];
		uint64_t missing = 0, dup = 0, extra = gt->unexpected, n = 0;
		uint64_t *h = calloc(HIST_BUCKETS, sizeof(*h));
		char p50[16] = "-", p99[16] = "-", p999[16] = "-", mx[16] = "-";
		uint64_t s;
		unsigned b;

		for (p = 0; p < NPRODUCERS; p++) {
			const uint16_t *cnt = counts_of(d, g, p);
			uint64_t sent = d->sh->sent[p];

			for (s = 0; s < d->max_seq; s++) {
				if (s < sent && cnt[s] == 0)
					missing++;
				else if (s < sent && cnt[s] > 1)
					dup += cnt[s] - 1u;
				else if (s >= sent && cnt[s])
					extra += cnt[s];
			}
		}
		if (h) {
			for (s = 0; s < d->nseconds; s++)
				for (b = 0; b < HIST_BUCKETS; b++)
					h[b] += hist_of(d, g, s)[b];
			for (b = 0; b < HIST_BUCKETS; b++)
				n += h[b];
		}
		if (n) {
			fmt_ns(p50, sizeof(p50), hist_quantile(h, n, 0.50));
			fmt_ns(p99, sizeof(p99), hist_quantile(h, n, 0.99));
			fmt_ns(p999, sizeof(p999), hist_quantile(h, n, 0.999));
			for (b = HIST_BUCKETS; b-- > 0;)
				if (h[b]) {
					fmt_ns(mx, sizeof(mx), hist_value(b));
					break;
				}
		}
		free(h);
		printf("%-8s %9" PRIu64 " %8" PRIu64 " %10" PRIu64 " %12" PRIu64
		       " %12" PRIu64 " %7s %7s %7s %7s\n",
		       group_def[g].name, gt->received, missing, dup,
		       gt->out_of_order, gt->bad_checksum, p50, p99, p999, mx);

		if (missing)
			failure(v, "%s missed %" PRIu64, group_def[g].name, missing);
		if (dup)
			failure(v, "%s got %" PRIu64 " duplicates", group_def[g].name, dup);
		if (gt->out_of_order)
			failure(v, "%s got %" PRIu64 " out of order",
				group_def[g].name, gt->out_of_order);
		if (gt->bad_checksum)
			failure(v, "%s got %" PRIu64 " with a bad checksum",
				group_def[g].name, gt->bad_checksum);
		if (gt->misrouted)
			failure(v, "%s got %" PRIu64 " in the wrong partition",
				group_def[g].name, gt->misrouted);
		if (extra)
			failure(v, "%s got %" PRIu64 " never sent",
				group_def[g].name, extra);
	}
	if (total == 0)
		failure(v, "nothing was sent");
}

/* ------------------------------------------------------------------------
 * The parent: set-up and main
 */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [--dir DIR] [--shmqd PATH] [--seconds N] [--rate N]\n"
		"\n"
		"Start shmqd on DIR, create topic \"" TOPIC "\" (%d partitions x %u MiB, policy block),\n"
		"run %d producers and two consumer groups (billing: 3 members, audit: 2),\n"
		"print rates and latencies each second, and check that every group\n"
		"received every message exactly once and in order.\n"
		"\n"
		"  --dir DIR      data directory (created if missing; default var/demo)\n"
		"  --shmqd PATH   the shmqd program (default: shmqd beside this program)\n"
		"  --seconds N    how long producers publish, 1..%d (default 5)\n"
		"  --rate N       total messages per second, %d..%llu (default 200000)\n",
		PARTITIONS, RING_BYTES >> 20, NPRODUCERS, MAX_SECONDS, NPRODUCERS,
		MAX_RATE);
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* mkdir -p, mode 0700 for what it creates. */
static int make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t i, n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		buf[i] = path[i];
	}
	return 0;
}

/* shmqd beside this program, for when --shmqd is not given. */
static const char *default_shmqd(void)
{
	static char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 8);
	char *slash;

	if (n <= 0)
		return "shmqd";
	buf[n] = '\0';
	slash = strrchr(buf, '/');
	if (!slash)
		return "shmqd";
	strcpy(slash + 1, "shmqd");
	return buf;
}

static int setup_shared(struct demo *d)
{
	size_t head = (sizeof(struct shared_head) + 63) & ~(size_t)63;
	size_t sent = d->nseconds * sizeof(uint64_t);
	size_t recv = NGROUPS * d->nseconds * sizeof(uint64_t);
	size_t hist = NGROUPS * d->nseconds * HIST_BUCKETS * sizeof(uint64_t);
	size_t cnt = NGROUPS * NPRODUCERS * d->max_seq * sizeof(uint16_t);
	unsigned char *base;

	d->shared_bytes = head + sent + recv + hist + cnt;
	/* Anonymous shared memory is zero-filled and touched only where used. */
	base = mmap(NULL, d->shared_bytes, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return -errno;
	d->sh = (struct shared_head *)base;
	d->sent_sec = (uint64_t *)(base + head);
	d->recv_sec = (uint64_t *)(base + head + sent);
	d->hist = (uint64_t *)(base + head + sent + recv);
	d->recv_count = (uint16_t *)(base + head + sent + recv + hist);
	return 0;
}

/*
 * Give producer i a key that shmq's documented hash puts in partition i, so
 * that the four producers use the four partitions.  Falls back to a plain
 * key (still one partition per producer) if none is found.
 */
static void choose_keys(struct demo *d)
{
	uint32_t i, k;

	for (i = 0; i < NPRODUCERS; i++) {
		snprintf(d->key[i], sizeof(d->key[i]), "producer-%u", i);
		for (k = 0; k < 10000; k++) {
			char key[32];

			snprintf(key, sizeof(key), "producer-%u.%u", i, k);
			if (shmq_key_partition(key, strlen(key), PARTITIONS) ==
			    i % PARTITIONS) {
				memcpy(d->key[i], key, sizeof(key));
				break;
			}
		}
		d->partition_of[i] = shmq_key_partition(d->key[i],
							strlen(d->key[i]),
							PARTITIONS);
	}
}

static int parse_args(struct demo *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "shmqd", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "rate", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t v;
	int c;

	d->dir = "var/demo";
	d->shmqd = NULL;
	d->seconds = 5;
	d->rate = 200000;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			d->dir = optarg;
			break;
		case 's':
			d->shmqd = optarg;
			break;
		case 't':
			if (!parse_u64(optarg, 1, MAX_SECONDS, &v)) {
				warnx_("--seconds: '%s' is not a number in 1..%d",
				       optarg, MAX_SECONDS);
				return 2;
			}
			d->seconds = (unsigned)v;
			break;
		case 'r':
			if (!parse_u64(optarg, NPRODUCERS, MAX_RATE, &v)) {
				warnx_("--rate: '%s' is not a number in %d..%llu",
				       optarg, NPRODUCERS, MAX_RATE);
				return 2;
			}
			d->rate = v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			warnx_("option '%s' needs a value", argv[optind - 1]);
			return 2;
		default:
			warnx_("unknown option '%s'; try --help", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		warnx_("unexpected argument '%s'; try --help", argv[optind]);
		return 2;
	}
	if (d->rate * d->seconds > MAX_MESSAGES) {
		warnx_("--rate x --seconds is more than %llu messages", MAX_MESSAGES);
		return 2;
	}
	if (!d->shmqd)
		d->shmqd = default_shmqd();
	return 0;
}

int main(int argc, char **argv)
{
	static struct demo demo;
	struct demo *d = &demo;
	struct child ch[NCHILDREN];
	struct verdict v = { .len = 0 };
	char path[PATH_MAX], name[64];
	bool failed = false, shmqd_dead = false, interrupted;
	struct sigaction sa;
	uint64_t finished_at = 0, next_tick, sec = 0, t;
	pid_t shmqd;
	int rc, i, g, m, n = 0;
	uint32_t p;

	rc = parse_args(d, argc, argv);
	if (rc)
		return rc;
	for (p = 0; p < NPRODUCERS; p++) {
		d->prate[p] = d->rate / NPRODUCERS + (p < d->rate % NPRODUCERS);
		d->plan[p] = d->prate[p] * d->seconds;
		if (d->plan[p] + 1 > d->max_seq)
			d->max_seq = d->plan[p] + 1;
	}
	d->nseconds = d->seconds + DRAIN_MAX_S + 10;

	rc = make_dirs(d->dir);
	if (rc || !realpath(d->dir, path)) {
		warnx_("create %s: %s", d->dir, strerror(rc ? -rc : errno));
		return 1;
	}
	d->dir = path;
	rc = setup_shared(d);
	if (rc) {
		warnx_("map %zu bytes of shared counters: %s", d->shared_bytes,
		       strerror(-rc));
		return 1;
	}
	crc_init();
	choose_keys(d);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (access(d->shmqd, X_OK)) {
		warnx_("%s: %s (use --shmqd PATH)", d->shmqd, strerror(errno));
		return 1;
	}
	if (daemon_answers(d)) {
		warnx_("a shmqd is already serving %s; stop it or use another --dir",
		       d->dir);
		return 1;
	}
	printf("shmq demo: %d producers -> topic \"%s\" (%d partitions x %u MiB) -> billing (%d members), audit (%d)\n"
	       "           %" PRIu64 " msg/s for %u s, data directory %s\n",
	       NPRODUCERS, TOPIC, PARTITIONS, RING_BYTES >> 20,
	       group_def[0].members, group_def[1].members, d->rate, d->seconds,
	       d->dir);
	fflush(stdout);

	shmqd = start_shmqd(d);
	if (shmqd < 0) {
		warnx_("fork: %s", strerror(errno));
		return 1;
	}
	if (create_topic(d, shmqd, &shmqd_dead)) {
		failure(&v, "could not set up topic %s", TOPIC);
		goto cleanup;
	}
	if (waitpid(shmqd, &rc, WNOHANG) == shmqd) {
		/* Then another daemon answered: we must not use it. */
		shmqd_dead = true;
		failure(&v, "shmqd exited at start; is another one serving %s?",
			d->dir);
		goto cleanup;
	}

	/* Members join before any producer runs, so both groups see everything. */
	for (g = 0; g < NGROUPS; g++)
		for (m = 0; m < group_def[g].members; m++) {
			ch[n] = (struct child){ .role = ROLE_MEMBER, .id = m, .group = g };
			ch[n].pid = spawn(d, &ch[n]);
			if (ch[n].pid < 0) {
				warnx_("fork: %s", strerror(errno));
				ch[n].pid = 0;
				failure(&v, "could not start every process");
				goto stop;
			}
			n++;
		}
	t = now_ns() + START_WAIT_S * NSEC_PER_SEC;
	while (__atomic_load_n(&d->sh->members_ready, __ATOMIC_ACQUIRE) < NMEMBERS) {
		if (reap(ch, n, &failed) < n || failed) {
			failure(&v, "a member failed to join");
			goto stop;
		}
		if (got_signal)
			goto stop;
		if (now_ns() >= t) {
			failure(&v, "members did not join within %d s", START_WAIT_S);
			goto stop;
		}
		usleep(10000);
	}

	__atomic_store_n(&d->sh->start_ns, now_ns(), __ATOMIC_RELEASE);
	for (p = 0; p < NPRODUCERS; p++) {
		ch[n] = (struct child){ .role = ROLE_PRODUCER, .id = (int)p };
		ch[n].pid = spawn(d, &ch[n]);
		if (ch[n].pid < 0) {
			warnx_("fork: %s", strerror(errno));
			ch[n].pid = 0;
			failure(&v, "could not start every process");
			goto stop;
		}
		n++;
	}

	print_header();
	next_tick = d->sh->start_ns + NSEC_PER_SEC + TICK_GRACE_NS;
	for (;;) {
		uint64_t now = now_ns();
		uint64_t wake = now + 100 * NSEC_PER_MSEC;
		int running = reap(ch, n, &failed);

		while (now >= next_tick && sec < d->nseconds) {
			/* Once producers are done, quiet seconds are not news. */
			if (!finished_at || !second_is_quiet(d, sec))
				print_second(d, sec);
			sec++;
			next_tick += NSEC_PER_SEC;
		}
		if (!shmqd_dead && waitpid(shmqd, &rc, WNOHANG) == shmqd) {
			/* The data path does not need it, but it should not die. */
			shmqd_dead = true;
			failure(&v, "shmqd exited during the run");
		}
		if (got_signal || failed || !running)
			break;
		if (!finished_at && !running_of(ch, n, ROLE_PRODUCER)) {
			finished_at = now;
			__atomic_store_n(&d->sh->producers_finished, 1,
					 __ATOMIC_RELEASE);
		}
		/* Members bound their own drain; this bounds them from outside. */
		if (finished_at &&
		    now - finished_at > (DRAIN_MAX_S + 5) * NSEC_PER_SEC) {
			failure(&v, "members did not finish draining");
			break;
		}
		sleep_until(wake < next_tick ? wake : next_tick);
	}

stop:
	stop_children(d, ch, n);
	for (i = 0; i < n; i++) {
		int st = ch[i].status;

		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			continue;
		describe_child(&ch[i], name, sizeof(name));
		if (WIFEXITED(st))
			failure(&v, "%s exited with status %d", name, WEXITSTATUS(st));
		else
			failure(&v, "%s was killed by signal %d", name, WTERMSIG(st));
	}
cleanup:
	interrupted = got_signal != 0;
	if (!shmqd_dead) {
		delete_topic(d);
		stop_shmqd(shmqd);
	}
	if (n)
		summarize(d, &v);
	if (interrupted)
		failure(&v, "interrupted by signal %d", (int)got_signal);
	if (v.len) {
		printf("FAILED: %s\n", v.why);
		return 1;
	}
	printf("OK: every message was received by every group exactly once\n");
	return 0;
}
