/*
 * garbage-t.c - garbage in a live segment never crashes a reader.
 *
 * Every value in shared memory may have been written by a buggy or dead
 * process (DESIGN.md, "The partition log").  This test plays that process:
 * it creates a topic segment itself (shmq__segment_create plus the topic
 * file, so that shmq_open() on the directory finds it without shmqd),
 * publishes through the public API, then overwrites, with a seeded PRNG,
 *
 *   ring      random bytes anywhere in a ring;
 *   frame     one field of a frame header: seals that look committed for
 *             their position over sizes and lengths that are huge, zero,
 *             unaligned or one past the frame, and forged frames at head;
 *   partition head, tail, a group's cursor, a member's hold;
 *   tables    the group, producer and member slots;
 *   header    the state words of the segment header, and its identity
 *             fields (which attached handles must not re-read);
 *   mixed     any of these, several at a time.
 *
 * After each corruption, consumers poll with timeout 0 and must get a
 * message whose key and value lie entirely inside the ring of the partition
 * it names (checked against the segment's mappings in /proc/self/maps, and
 * then read byte by byte), -EAGAIN or SHMQ_ECORRUPT; a producer's send must
 * give a partition, -EAGAIN or SHMQ_ECORRUPT; shmq__ring_check() must give 0
 * or SHMQ_ECORRUPT.  Nothing waits (timeouts 0), and each round has its own
 * alarm, so a loop in the library is a failure, not a stall.
 *
 * Each category runs in a child of its own: a crash or a hang there is one
 * "not ok" that names the seed, the round and the last corruption.  Rerun
 * one failure with SHMQ_TEST_SEED=<seed> (and SHMQ_TEST_ROUNDS).
 *
 * The segment is recreated for each round, so that one round's damage does
 * not decide what the next round can reach.  Run under ASan in CI.
 *
 * Last, a lock word that names a live process: a partition's tail lock
 * held by a stopped process must not make a send with timeout 0 spin for
 * ever.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ck_pr.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define TOPIC	    "garbage"
#define PARTS	    2u
#define RING_BYTES  ((uint64_t)SHMQ_RING_MIN)
#define CONSUMERS   2
#define MAX_FRAMES  256
#define STEPS	    8	/* corruptions per round */
#define ROUND_ALARM 10	/* seconds one round may take */

enum kind { K_RING, K_FRAME, K_PART, K_TABLES, K_HEADER, K_MIXED, K_COUNT };
static const char *const kind_name[K_COUNT] = {
	"ring", "frame", "partition", "tables", "header", "mixed",
};

/* What a category's child reports to the parent, in a shared page. */
struct report {
	char last[256];	    /* the last corruption applied */
	uint32_t round;
	uint32_t violations;
	uint64_t delivered, again, corrupt, deleted;
	uint64_t sent, send_again, send_corrupt, send_revoked;
	uint64_t check_ok, check_corrupt;
	uint64_t frame_corrupt; /* ECORRUPT right after a frame corruption */
};

static struct report *rep;
static char dir[256];
static char segname[SHMQ_SEGNAME_MAX];
static struct shmq_topic_params params;

/* ------------------------------------------------------------------------
 * A seeded PRNG (xorshift64*), so that any failure can be replayed.
 */
static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static void record(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void record(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rep->last, sizeof rep->last, fmt, ap);
	va_end(ap);
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	/* The first few tell the story; the count tells the rest. */
	if (rep->violations++ < 10)
		diag("round %u: %s (after: %s)", rep->round, buf, rep->last);
}

/* ------------------------------------------------------------------------
 * Where the segment is mapped in this process.  Consumers map it with
 * addresses the test cannot see through the API, so the kernel's list of
 * mappings says where a valid view may point.
 */
struct mapping {
	uintptr_t start, end, base; /* base: address of segment offset 0 */
};

static struct mapping maps[16];
static int nmaps;

static void find_mappings(void)
{
	char want[SHMQ_SEGNAME_MAX + 16], line[512];
	FILE *f;

	snprintf(want, sizeof want, "/dev/shm%s", segname);
	nmaps = 0;
	f = fopen("/proc/self/maps", "r");
	if (!f)
		bail("/proc/self/maps: %s", strerror(errno));
	while (fgets(line, sizeof line, f) && nmaps < (int)(sizeof maps / sizeof maps[0])) {
		unsigned long start, end, off;
		char path[400];

		path[0] = '\0';
		if (sscanf(line, "%lx-%lx %*s %lx %*s %*s %399s", &start, &end, &off,
			   path) < 3)
			continue;
		if (strcmp(path, want) != 0 || strstr(line, "(deleted)"))
			continue;
		maps[nmaps].start = start;
		maps[nmaps].end = end;
		maps[nmaps].base = start - off;
		nmaps++;
	}
	fclose(f);
}

/* Does [p, p + n) lie inside ring `part` of one mapping of the segment? */
static bool in_ring(const void *p, uint64_t n, uint32_t part)
{
	uintptr_t a = (uintptr_t)p;
	int i;

	for (i = 0; i < nmaps; i++) {
		uintptr_t lo = maps[i].base + params.ring_bytes * part +
			       (uintptr_t)shmq__rings_off(params.partitions);
		uintptr_t hi = lo + params.ring_bytes;

		if (lo < maps[i].start)
			lo = maps[i].start;
		if (hi > maps[i].end)
			hi = maps[i].end;
		if (a >= lo && a <= hi && n <= hi - a)
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------------
 * Segment and handles of one round.
 */
struct round {
	struct shmq_map map; /* the test's own mapping, for corrupting */
	shmq_producer_t *prod;
	shmq_consumer_t *cons[CONSUMERS];
	uint64_t frames[MAX_FRAMES]; /* positions of published messages */
	uint32_t frame_part[MAX_FRAMES];
	int nframes;
	bool deleted_touched; /* the header's deleted word was overwritten */
};

static void round_open(shmq_client_t *cl, struct round *r)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	char group[16];
	int rc, i;

	memset(r, 0, sizeof *r);
	shm_unlink(segname);
	rc = shmq__segment_create(segname, TOPIC, &params, &r->map);
	if (rc)
		bail("segment create: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	rc = shmq_producer_open(cl, TOPIC, NULL, &r->prod);
	if (rc)
		bail("producer open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	co.from = SHMQ_FROM_EARLIEST;
	for (i = 0; i < CONSUMERS; i++) {
		snprintf(group, sizeof group, "g%d", i);
		rc = shmq_consumer_open(cl, TOPIC, group, &co, &r->cons[i]);
		if (rc)
			bail("consumer open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	}
	find_mappings();
	if (nmaps < 1)
		bail("no mapping of %s in /proc/self/maps", segname);
}

static void round_close(struct round *r)
{
	int i;

	for (i = 0; i < CONSUMERS; i++)
		shmq_consumer_close(r->cons[i]);
	shmq_producer_close(r->prod);
	shmq__segment_detach(&r->map);
	shm_unlink(segname);
}

/* A value that names its sequence number and carries a checksum of itself. */
static size_t make_value(uint8_t *buf, size_t len, uint32_t seq)
{
	size_t i;
	uint32_t crc;

	if (len < 8)
		len = 8;
	memcpy(buf, &seq, 4);
	for (i = 8; i < len; i++)
		buf[i] = (uint8_t)(seq * 31 + i);
	crc = tu_crc(buf + 8, len - 8);
	memcpy(buf + 4, &crc, 4);
	return len;
}

static bool value_ok(const uint8_t *buf, size_t len, uint32_t *seq)
{
	uint32_t crc;

	if (len < 8)
		return false;
	memcpy(seq, buf, 4);
	memcpy(&crc, buf + 4, 4);
	return crc == tu_crc(buf + 8, len - 8);
}

/* Publish n messages of random sizes into random partitions. */
static void publish(struct round *r, int n)
{
	static uint8_t val[4096];
	char key[48];
	int i;

	for (i = 0; i < n; i++) {
		size_t klen = below(sizeof key), vlen = 8 + below(2000);
		uint64_t off;
		int rc;

		memset(key, 'k', klen);
		vlen = make_value(val, vlen, (uint32_t)i);
		rc = shmq_send(r->prod, (int)below(PARTS), key, klen, val, vlen, 0, &off);
		if (rc < 0)
			break; /* full: the groups hold the ring */
		if (r->nframes < MAX_FRAMES) {
			r->frames[r->nframes] = off;
			r->frame_part[r->nframes] = (uint32_t)rc;
			r->nframes++;
		}
	}
}

/*
 * Poll consumer c once (timeout 0) and judge the result.  Returns the
 * poll's result.
 */
static int poll_check(struct round *r, int c, bool after_frame)
{
	struct shmq_msg m;
	int rc;

	memset(&m, 0, sizeof m);
	rc = shmq_consumer_poll(r->cons[c], &m, 0);
	if (rc == 0) {
		volatile uint8_t sink = 0;
		const uint8_t *k = m.key, *v = m.value;
		size_t i;

		rep->delivered++;
		if (m.partition >= PARTS) {
			violation("message names partition %u", m.partition);
			return rc;
		}
		if (m.key_len && !in_ring(m.key, m.key_len, m.partition)) {
			violation("key %p+%zu outside ring %u", m.key, m.key_len,
				  m.partition);
			return rc;
		}
		if (m.value_len && !in_ring(m.value, m.value_len, m.partition)) {
			violation("value %p+%zu outside ring %u", m.value,
				  m.value_len, m.partition);
			return rc;
		}
		/* Read it all, as an application would. */
		for (i = 0; i < m.key_len; i++)
			sink ^= k[i];
		for (i = 0; i < m.value_len; i++)
			sink ^= v[i];
		(void)sink;
		if (below(2))
			shmq_consumer_release(r->cons[c]);
	} else if (rc == -EAGAIN) {
		rep->again++;
	} else if (rc == SHMQ_ECORRUPT) {
		rep->corrupt++;
		if (after_frame)
			rep->frame_corrupt++;
	} else if (rc == SHMQ_EDELETED && r->deleted_touched) {
		rep->deleted++;
	} else {
		violation("poll returned %d (%s)", rc, shmq_strerror(rc));
	}
	return rc;
}

static void send_check(struct round *r)
{
	static uint8_t val[2048];
	size_t vlen = make_value(val, 8 + below(1500), 0xffffffffu);
	int rc;

	rc = shmq_send(r->prod, (int)below(PARTS), "x", below(2), val, vlen, 0, NULL);
	if (rc >= 0 && rc < (int)PARTS)
		rep->sent++;
	else if (rc == -EAGAIN)
		rep->send_again++;
	else if (rc == SHMQ_ECORRUPT)
		rep->send_corrupt++;
	else if (rc == SHMQ_EREVOKED)
		/*
		 * Not in shmq_send()'s contract, and nothing revoked this
		 * claim (no shmqd runs here): the claim found its frame
		 * already sealed for its position, which is corruption.
		 * Counted apart, so that the safety checks stay separate
		 * from this question of which error code is right.
		 */
		rep->send_revoked++;
	else if (rc == SHMQ_EDELETED && r->deleted_touched)
		rep->deleted++;
	else
		violation("send returned %d (%s)", rc, shmq_strerror(rc));
}

static void ring_check(struct round *r)
{
	uint32_t p;

	for (p = 0; p < PARTS; p++) {
		int rc = shmq__ring_check(&r->map, p);

		if (rc == 0)
			rep->check_ok++;
		else if (rc == SHMQ_ECORRUPT)
			rep->check_corrupt++;
		else
			violation("ring_check(%u) returned %d", p, rc);
	}
}

/* ------------------------------------------------------------------------
 * Corruptions.  Each writes through the test's own mapping and records
 * what it did, so that a crash can be told.
 */

/* A value for a 64-bit position field: mostly plausible, sometimes wild. */
static uint64_t wild_pos(uint64_t near)
{
	switch (below(10)) {
	case 0: return rnd();
	case 1: return 0;
	case 2: return SHMQ_POS_NONE;
	case 3: return near + 1 + below(SHMQ_FRAME_ALIGN - 1); /* unaligned */
	case 4: return near + RING_BYTES * (1 + below(4));
	case 5: return near - RING_BYTES * (1 + below(4));
	case 6: return near + SHMQ_FRAME_ALIGN * below(64);
	case 7: return near - SHMQ_FRAME_ALIGN * below(64);
	case 8: return UINT64_MAX - below(RING_BYTES);
	default: return near ^ (1ull << below(64));
	}
}

/* A value for a 32-bit length field. */
static uint32_t wild_len(uint32_t near)
{
	switch (below(9)) {
	case 0: return (uint32_t)rnd();
	case 1: return 0;
	case 2: return UINT32_MAX;
	case 3: return UINT32_MAX - (uint32_t)below(64);
	case 4: return near + 1;
	case 5: return near - 1;
	case 6: return (uint32_t)RING_BYTES;
	case 7: return (uint32_t)(RING_BYTES / 2 + below(RING_BYTES));
	default: return near ^ (1u << below(32));
	}
}

static void corrupt_ring(struct round *r)
{
	uint32_t p = (uint32_t)below(PARTS);
	uint64_t off = below(RING_BYTES);
	uint8_t *ring = shmq__ring(&r->map, p);
	uint64_t n = 1 + below(64), i;

	if (n > RING_BYTES - off)
		n = RING_BYTES - off;
	for (i = 0; i < n; i++)
		ring[off + i] = (uint8_t)rnd();
	record("ring %u: %" PRIu64 " random bytes at %" PRIu64, p, n, off);
}

static void corrupt_frame(struct round *r)
{
	uint32_t p;
	uint64_t pos;
	struct shmq_frame *f;
	int which;

	/* A published frame, or the unwritten position at head. */
	if (r->nframes && below(4)) {
		int i = (int)below((uint64_t)r->nframes);

		p = r->frame_part[i];
		pos = r->frames[i];
	} else {
		p = (uint32_t)below(PARTS);
		pos = shmq__part(&r->map, p)->head;
	}
	/* A head made unaligned by an earlier corruption has no frame. */
	if (pos & (SHMQ_FRAME_ALIGN - 1)) {
		record("frame: none at unaligned %" PRIu64, pos);
		return;
	}
	f = (struct shmq_frame *)(shmq__ring(&r->map, p) + (pos & (RING_BYTES - 1)));
	which = (int)below(8);
	switch (which) {
	case 0: /* looks committed for its position, lengths huge */
		f->seal = pos | SHMQ_SEAL_COMMITTED;
		f->size = wild_len(f->size);
		f->key_len = (uint16_t)(below(2) ? 0xffff : rnd());
		f->value_len = wild_len(f->value_len);
		break;
	case 1: /* committed padding of a wild size */
		f->seal = pos | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD;
		f->size = wild_len(f->size);
		break;
	case 2:
		f->seal = pos | SHMQ_SEAL_COMMITTED;
		f->size = wild_len(f->size);
		break;
	case 3:
		f->seal = pos | SHMQ_SEAL_COMMITTED;
		f->key_len = (uint16_t)rnd();
		break;
	case 4:
		f->seal = pos | SHMQ_SEAL_COMMITTED;
		f->value_len = wild_len(f->value_len);
		break;
	case 5:
		f->seal = wild_pos(pos) | (rnd() & SHMQ_SEAL_FLAGS);
		break;
	case 6: /* size that runs exactly to or one frame past the ring end */
		f->seal = pos | SHMQ_SEAL_COMMITTED | (below(2) ? SHMQ_SEAL_PAD : 0);
		f->size = (uint32_t)(RING_BYTES - (pos & (RING_BYTES - 1)) +
				     SHMQ_FRAME_ALIGN * below(2));
		f->value_len = f->size - SHMQ_FRAME_HEADER;
		f->key_len = 0;
		break;
	default: /* lengths that add up to the size in 32 bits only by wrapping */
		f->seal = pos | SHMQ_SEAL_COMMITTED;
		f->size = 64;
		f->key_len = (uint16_t)(below(2) ? 0xffff : 0);
		f->value_len = (uint32_t)(0x100000000ull + f->size - SHMQ_FRAME_HEADER -
					  f->key_len);
		break;
	}
	record("frame %u@%" PRIu64 " variant %d: seal %#" PRIx64 " size %u key %u value %u",
	       p, pos, which, f->seal, f->size, f->key_len, f->value_len);
}

static void corrupt_part(struct round *r)
{
	uint32_t p = (uint32_t)below(PARTS);
	struct shmq_part_header *h = shmq__part(&r->map, p);
	uint64_t *field, old;
	const char *what;
	uint32_t idx = 0;

	switch (below(5)) {
	case 0:
		field = &h->head;
		what = "head";
		break;
	case 1:
		field = &h->tail;
		what = "tail";
		break;
	case 2:
		idx = (uint32_t)(below(4) ? below(CONSUMERS) : below(SHMQ_MAX_GROUPS));
		field = &h->cursor[idx].next;
		what = "cursor.next";
		break;
	case 3:
		idx = (uint32_t)(below(4) ? below(CONSUMERS) : below(SHMQ_MAX_GROUPS));
		field = &h->cursor[idx].committed;
		what = "cursor.committed";
		break;
	default:
		idx = (uint32_t)(below(4) ? below(4) : below(SHMQ_MAX_MEMBERS));
		field = &h->hold[idx];
		what = "hold";
		break;
	}
	old = *field;
	*field = wild_pos(old);
	record("partition %u %s[%u]: %#" PRIx64 " -> %#" PRIx64, p, what, idx, old,
	       *field);
}

static void corrupt_tables(struct round *r)
{
	uint32_t i = (uint32_t)below(4);

	switch (below(3)) {
	case 0: {
		struct shmq_group_slot *g = shmq__group(&r->map, below(2) ? i : (uint32_t)below(SHMQ_MAX_GROUPS));

		switch (below(3)) {
		case 0: g->state = (uint32_t)rnd(); break;
		case 1: g->mode = (uint32_t)rnd(); break;
		default: memset(g->name, (int)(1 + below(255)), sizeof g->name); break;
		}
		record("group slot: state %u mode %u", g->state, g->mode);
		break;
	}
	case 1: {
		struct shmq_producer_slot *s = shmq__producer_slot(&r->map, below(2) ? i : (uint32_t)below(SHMQ_MAX_PRODUCERS));

		switch (below(6)) {
		case 0: s->owner.pid = (uint32_t)rnd(); break;
		case 1: s->owner.start_ticks = rnd(); break;
		case 2: s->claim_pos = wild_pos(s->claim_pos); break;
		case 3: s->claim_len = wild_len(s->claim_len); break;
		case 4: s->claim_part = below(2) ? PARTS + (uint32_t)below(4) : (uint32_t)rnd(); break;
		default: s->revoked_pos = wild_pos(s->claim_pos); break;
		}
		record("producer slot: pid %u claim %#" PRIx64 "+%u part %u revoked %#" PRIx64,
		       s->owner.pid, s->claim_pos, s->claim_len, s->claim_part,
		       s->revoked_pos);
		break;
	}
	default: {
		struct shmq_member_slot *s = shmq__member_slot(&r->map, below(2) ? i : (uint32_t)below(SHMQ_MAX_MEMBERS));

		switch (below(3)) {
		case 0: s->group = below(2) ? SHMQ_MAX_GROUPS + (uint32_t)below(4) : (uint32_t)rnd(); break;
		case 1: s->owner.pid = (uint32_t)rnd(); break;
		default: s->group = (uint32_t)below(CONSUMERS + 1); break;
		}
		record("member slot: pid %u group %u", s->owner.pid, s->group);
		break;
	}
	}
}

static void corrupt_header(struct round *r)
{
	struct shmq_seg_header *h = r->map.hdr;

	switch (below(12)) {
	case 0: h->ready = (uint32_t)rnd(); break;
	case 1: h->deleted = (uint32_t)rnd(); r->deleted_touched = true; break;
	case 2: h->revoked = (uint32_t)rnd(); break;
	case 3: h->data_seq = (uint32_t)rnd(); break;
	case 4: h->data_waiters = (uint32_t)rnd(); break;
	case 5: h->space_seq = (uint32_t)rnd(); break;
	case 6: h->space_waiters = (uint32_t)rnd(); break;
	case 7: h->daemon_pid = (uint32_t)rnd(); break;
	/* Identity: attached handles keep their own copy of the geometry. */
	case 8: h->partitions = (uint32_t)rnd(); break;
	case 9: h->ring_bytes = rnd(); break;
	case 10: h->max_message = (uint32_t)rnd(); break;
	default: h->rings_off = rnd(); break;
	}
	record("header: ready %#x deleted %u partitions %u ring %#" PRIx64
	       " max_message %u rings_off %#" PRIx64,
	       h->ready, h->deleted, h->partitions, h->ring_bytes, h->max_message,
	       h->rings_off);
}

static bool corrupt(struct round *r, enum kind k)
{
	switch (k) {
	case K_RING: corrupt_ring(r); return false;
	case K_FRAME: corrupt_frame(r); return true;
	case K_PART: corrupt_part(r); return false;
	case K_TABLES: corrupt_tables(r); return false;
	case K_HEADER: corrupt_header(r); return false;
	default: return corrupt(r, (enum kind)below(K_MIXED));
	}
}

/* ------------------------------------------------------------------------
 * Rounds
 */

static void one_round(shmq_client_t *cl, enum kind k)
{
	struct round r;
	int step, i, c;

	round_open(cl, &r);
	record("publish");
	publish(&r, (int)below(80));
	/* Let one group move on, so cursors and holds differ. */
	for (i = (int)below(20); i > 0; i--)
		poll_check(&r, 0, false);
	for (step = 0; step < STEPS; step++) {
		bool frame = corrupt(&r, k);

		for (c = 0; c < CONSUMERS; c++)
			for (i = 0; i < 4; i++)
				if (poll_check(&r, c, frame) != 0)
					break;
		send_check(&r);
		ring_check(&r);
		if (below(3) == 0)
			publish(&r, (int)below(10));
	}
	record("close");
	round_close(&r);
}

/* The child of one category: rounds until done; exit status = violations. */
static void run_kind(enum kind k, uint64_t seed, unsigned rounds)
{
	shmq_client_t *cl;
	unsigned i;
	int rc;

	tap_child();
	rng_state = seed;
	rc = shmq_open(dir, NULL, &cl);
	if (rc) {
		diag("shmq_open: %s", shmq_strerror(rc));
		_exit(100);
	}
	/* The default action of SIGALRM ends a round that hangs. */
	signal(SIGALRM, SIG_DFL);
	for (i = 0; i < rounds; i++) {
		rep->round = i;
		alarm(ROUND_ALARM);
		one_round(cl, k);
	}
	alarm(0);
	shmq_close(cl);
	_exit(rep->violations ? 1 : 0);
}

/*
 * Without corruption, every published message comes back whole and inside
 * the ring: this shows that the checks above can pass, and that the
 * mapping-based bounds check recognises the library's views.
 */
static void baseline(void)
{
	static uint8_t val[4096];
	shmq_client_t *cl;
	struct round r;
	struct shmq_msg m;
	int sent = 0, got = 0, bad = 0, i, rc;

	cl = tu_open(dir);
	round_open(cl, &r);
	for (i = 0; i < 40; i++) {
		size_t vlen = make_value(val, 8 + (size_t)i * 50, (uint32_t)i);

		rc = shmq_send(r.prod, i % (int)PARTS, "key", 3, val, vlen, 0, NULL);
		if (rc < 0) {
			diag("baseline send %d: %s", i, shmq_strerror(rc));
			break;
		}
		sent++;
	}
	while (got + bad < sent && shmq_consumer_poll(r.cons[0], &m, 0) == 0) {
		uint32_t seq;

		if (m.partition < PARTS && in_ring(m.value, m.value_len, m.partition) &&
		    in_ring(m.key, m.key_len, m.partition) && m.key_len == 3 &&
		    value_ok(m.value, m.value_len, &seq) && seq < (uint32_t)sent &&
		    seq % PARTS == m.partition)
			got++;
		else
			bad++;
	}
	ok(sent == 40 && got == sent && bad == 0,
	   "baseline: %d of %d messages back intact and inside the ring (%d bad, %d mappings)",
	   got, sent, bad, nmaps);
	round_close(&r);
	shmq_close(cl);
}

/*
 * The tail lock of a partition names its holder by pid.  A holder that is
 * alive but stopped (SIGSTOP, a debugger, a swapped-out VM) must not make
 * other producers spin for ever: a send with timeout 0 returns.  The lock
 * word is set by hand to the pid of a stopped helper, on a partition whose
 * ring has wrapped so that claims need to move the tail.
 */
static void tail_lock_held(void)
{
	static uint8_t val[1024];
	pid_t holder, pid;
	int st;

	holder = tu_fork(NULL);
	if (holder == 0) {
		alarm(60);
		for (;;)
			raise(SIGSTOP);
	}
	if (waitpid(holder, &st, WUNTRACED) != holder || !WIFSTOPPED(st))
		diag("tail lock: the holder did not stop");

	pid = fork();
	if (pid < 0)
		bail("fork: %s", strerror(errno));
	if (pid == 0) {
		shmq_client_t *cl;
		struct shmq_msg m;
		struct round r;
		int i, c;

		tap_child();
		signal(SIGALRM, SIG_DFL);
		alarm(ROUND_ALARM);
		if (shmq_open(dir, NULL, &cl) != 0)
			_exit(100);
		round_open(cl, &r);
		/* Go round the ring once, with both groups keeping up. */
		for (i = 0; i < 200; i++) {
			make_value(val, sizeof val, (uint32_t)i);
			shmq_send(r.prod, 0, NULL, 0, val, sizeof val, 0, NULL);
			for (c = 0; c < CONSUMERS; c++)
				while (shmq_consumer_poll(r.cons[c], &m, 0) == 0)
					;
		}
		ck_pr_store_32(&shmq__part(&r.map, 0)->tail_lock, (uint32_t)holder);
		for (i = 0; i < 200; i++) {
			make_value(val, sizeof val, (uint32_t)i);
			shmq_send(r.prod, 0, NULL, 0, val, sizeof val, 0, NULL);
			for (c = 0; c < CONSUMERS; c++)
				while (shmq_consumer_poll(r.cons[c], &m, 0) == 0)
					;
		}
		ck_pr_store_32(&shmq__part(&r.map, 0)->tail_lock, 0);
		round_close(&r);
		shmq_close(cl);
		_exit(0);
	}
	st = tu_wait_child(pid, (ROUND_ALARM + 5) * 1000);
	ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	   "a tail lock held by a stopped process does not hang sends with timeout 0%s",
	   st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? " (hung)" : "");
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
	shm_unlink(segname);
}

int main(void)
{
	const char *env;
	uint64_t seed = 0x5eed0001;
	unsigned rounds = 200;
	uint64_t ns;
	int k, rc;

	tu_init(300);
	if ((env = getenv("SHMQ_TEST_SEED")) && *env)
		seed = strtoull(env, NULL, 0);
	if ((env = getenv("SHMQ_TEST_ROUNDS")) && *env)
		rounds = (unsigned)strtoul(env, NULL, 0);

	plan(1 + K_COUNT + 3);
	tu_make_dir("garbage", dir, sizeof dir);

	/* A topic made by hand: its segment and its topic file. */
	params = (struct shmq_topic_params){
		.partitions = PARTS, .ring_bytes = RING_BYTES, .max_message = 0,
		.full_policy = SHMQ_FULL_FAIL, .numa_node = -1, .mode = 0600,
		.stall_timeout_ms = 10000, .topic_id = 0x6a7ba6e,
	};
	rc = shmq__topic_params_check(&params);
	if (rc)
		bail("topic params: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	if (shmq__namespace_id(dir, &ns) != 0)
		bail("namespace id of %s", dir);
	shmq__segment_name(ns, TOPIC, segname);
	{
		char topics[300];

		snprintf(topics, sizeof topics, "%s/%s", dir, SHMQ_TOPICS_DIR);
		if (mkdir(topics, 0700) < 0 && errno != EEXIST)
			bail("mkdir %s: %s", topics, strerror(errno));
	}
	rc = shmq__topic_file_write(dir, TOPIC, &params);
	if (rc)
		bail("topic file: %s", shmq_strerror(rc));

	rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rep == MAP_FAILED)
		bail("mmap: %s", strerror(errno));

	diag("seed %#" PRIx64 ", %u rounds of %d corruptions per kind", seed, rounds,
	     STEPS);
	baseline();

	{
		uint64_t frame_corrupt = 0, revoked = 0;

		for (k = 0; k < K_COUNT; k++) {
			uint64_t kseed = seed * (uint64_t)(k + 1) + 0x9e3779b97f4a7c15ull;
			pid_t pid;
			int st;

			memset(rep, 0, sizeof *rep);
			pid = tu_fork(NULL);
			if (pid == 0)
				run_kind((enum kind)k, kseed, rounds);
			st = tu_wait_child(pid, (int)(rounds * ROUND_ALARM + 30) * 1000);
			diag("%s: %" PRIu64 " delivered, %" PRIu64 " EAGAIN, %" PRIu64
			     " ECORRUPT, %" PRIu64 " EDELETED; sends %" PRIu64 " ok, %" PRIu64
			     " EAGAIN, %" PRIu64 " ECORRUPT, %" PRIu64 " EREVOKED; ring_check %"
			     PRIu64 " ok, %" PRIu64 " ECORRUPT",
			     kind_name[k], rep->delivered, rep->again, rep->corrupt,
			     rep->deleted, rep->sent, rep->send_again, rep->send_corrupt,
			     rep->send_revoked, rep->check_ok, rep->check_corrupt);
			if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
				ok(1, "%s: every poll, send and check within the rules",
				   kind_name[k]);
			} else {
				ok(0, "%s: %s", kind_name[k],
				   st == -1 ? "hung (killed)" :
				   WIFSIGNALED(st) ? "crashed or hung" : "rule violations");
				if (st != -1 && WIFSIGNALED(st))
					diag("signal %d", WTERMSIG(st));
				diag("seed %#" PRIx64 " (kind seed %#" PRIx64 ") round %u, %u violations, last: %s",
				     seed, kseed, rep->round, rep->violations, rep->last);
			}
			if (k == K_FRAME)
				frame_corrupt = rep->frame_corrupt;
			revoked += rep->send_revoked;
		}
		/* Huge lengths under a committed seal are not a message: the
		 * reader must say so rather than wait for ever at them. */
		ok(frame_corrupt > 0,
		   "corrupt frame headers are reported as SHMQ_ECORRUPT (%" PRIu64 " times)",
		   frame_corrupt);
		ok(revoked == 0,
		   "shmq_send never returns SHMQ_EREVOKED when nothing revoked its claim (%" PRIu64 " times)",
		   revoked);
	}

	tail_lock_held();

	munmap(rep, sizeof *rep);
	tu_cleanup(dir);
	return tap_done();
}
