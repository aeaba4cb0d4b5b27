/*
 * multiproc-t.c - the end-to-end correctness test: many producer processes,
 * three consumer groups of several member processes each, one shmqd, and
 * rings small enough that every partition laps many times.
 *
 * What is checked, for every message of every producer and for every group:
 *   - it arrived exactly once in the group (no loss, no duplicate), counted
 *     in a MAP_SHARED array that every process writes atomically;
 *   - its bytes are intact (length and a checksum over a payload derived
 *     from the producer and the sequence number);
 *   - each member saw, per partition, strictly increasing offsets and per
 *     producer strictly increasing sequence numbers;
 *   - every group saw it at the partition and offset the producer was told
 *     at send or claim time (so offsets name messages, across processes);
 *   - a keyed message came from the key's partition, an explicit one from
 *     the partition asked for.
 * The test runs twice: consumers that sleep when idle, and busy-polling
 * consumers (with half of the producers busy-waiting for room).
 *
 * Message identity: a 16-byte tag (producer, seq, value length, checksum).
 * Producers that choose explicit partitions put the tag in the key, so that
 * their values can be of any length down to 0; the others put it at the
 * start of the value (keyed producers need their key for placement).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define NPART	  4
#define NGROUPS	  3
#define NPROD	  6
#define RING	  SHMQ_RING_MIN
#define VALUE_MAX 2000
#define TAG_MAGIC 0x7a71
#define NBAD	  16
#define TOPIC	  "mp"

/* Bounds on every wait, in ms. */
#define SEND_TIMEOUT_MS	 1000	/* one blocked send or claim */
#define PRODUCER_MAX_MS	 45000	/* a producer gives up after this */
#define MEMBER_IDLE_MS	 1000	/* members stop after this much quiet */
#define MEMBER_MAX_MS	 60000
#define READY_MAX_MS	 10000

enum api { API_SEND, API_CLAIM };
enum place { PL_KEYED, PL_RR, PL_EXPLICIT };

static const struct prod_conf {
	int api;
	int place;
} prod_conf[NPROD] = {
	{ API_SEND, PL_KEYED },	   { API_CLAIM, PL_KEYED },
	{ API_SEND, PL_RR },	   { API_CLAIM, PL_RR },
	{ API_SEND, PL_EXPLICIT }, { API_CLAIM, PL_EXPLICIT },
};

static const int group_members[NGROUPS] = { 2, 3, 2 };

struct tag {
	uint16_t magic;
	uint8_t producer;
	uint8_t part; /* intended partition for explicit placement, else 0xff */
	uint32_t seq;
	uint32_t value_len;
	uint32_t crc; /* of the payload, folded with the fields above */
};
_Static_assert(sizeof(struct tag) == 16, "tag");

enum bad_kind { BAD_TAG, BAD_LEN, BAD_CRC, BAD_ORDER, BAD_PART, BAD_KEY, BAD_POLL };
static const char *const bad_names[] = { "bad tag", "bad length", "bad checksum",
					 "order", "partition", "key", "poll error" };

struct bad {
	int group, kind, rc;
	uint32_t producer, seq, partition;
	uint64_t offset;
};

struct group_stats {
	uint64_t msgs;
	uint64_t bad[BAD_POLL + 1];
};

/* Everything shared by the processes of one run; MAP_SHARED before fork. */
struct shared {
	uint32_t members_ready;
	uint32_t producers_done; /* set by the parent once they all exited */
	struct group_stats grp[NGROUPS];
	uint64_t prod_err[NPROD];
	int prod_rc[NPROD];
	uint32_t nbad;
	struct bad bad[NBAD];
};

struct run {
	const char *name;
	uint32_t m; /* messages per producer */
	unsigned consumer_flags;
	char dir[256];
	struct shared *sh;
	/* [NGROUPS][NPROD][m] */
	uint32_t *count;
	uint64_t *goff;
	uint16_t *gpart;
	/* [NPROD][m]: what the producer was told */
	uint64_t *poff;
	uint16_t *ppart;
};

static size_t gidx(const struct run *r, int g, uint32_t p, uint32_t seq)
{
	return ((size_t)g * NPROD + p) * r->m + seq;
}

/* The value length of message seq of producer p: uniform, deterministic. */
static uint32_t value_len_of(uint32_t p, uint32_t seq)
{
	uint64_t s = ((uint64_t)p << 32 | seq) ^ 0x5eed;
	uint32_t h = (uint32_t)tu_splitmix(&s);

	if (prod_conf[p].place == PL_EXPLICIT)
		return h % (VALUE_MAX + 1);
	return sizeof(struct tag) + h % (VALUE_MAX + 1 - sizeof(struct tag));
}

static void fill_payload(uint8_t *b, size_t n, uint32_t p, uint32_t seq)
{
	uint64_t s = (uint64_t)p << 32 | seq, v;
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		v = tu_splitmix(&s);
		memcpy(b + i, &v, 8);
	}
	if (i < n) {
		v = tu_splitmix(&s);
		memcpy(b + i, &v, n - i);
	}
}

static uint32_t tag_crc(const struct tag *t, const void *payload, size_t n)
{
	return tu_crc(payload, n) ^ (t->seq * 0x9e3779b1u) ^
	       ((uint32_t)t->producer << 24) ^ t->value_len ^ t->part;
}

static int explicit_part(uint32_t p, uint32_t seq)
{
	return p == 4 ? (int)((seq + p) % NPART) : (int)((seq / 5 + p) % NPART);
}

static void key_of(uint32_t p, char *buf, size_t n)
{
	snprintf(buf, n, "key-%u", p);
}

static void note_bad(struct shared *sh, int g, int kind, int rc, uint32_t p,
		     uint32_t seq, uint32_t part, uint64_t off)
{
	uint32_t i;

	__atomic_fetch_add(&sh->grp[g].bad[kind], 1, __ATOMIC_RELAXED);
	i = __atomic_fetch_add(&sh->nbad, 1, __ATOMIC_RELAXED);
	if (i < NBAD)
		sh->bad[i] = (struct bad){ g, kind, rc, p, seq, part, off };
}

/* ------------------------------------------------------------------------
 * Producers
 */

static int produce_one(shmq_producer_t *pr, uint32_t p, uint32_t seq,
		       uint8_t *buf, uint64_t deadline, int *part_out,
		       uint64_t *off_out)
{
	const struct prod_conf *pc = &prod_conf[p];
	uint32_t len = value_len_of(p, seq);
	struct tag t = { TAG_MAGIC, (uint8_t)p, 0xff, seq, len, 0 };
	char keybuf[16];
	const void *key = NULL;
	size_t key_len = 0, plen;
	uint8_t *payload;
	struct shmq_claim cl;
	int part = SHMQ_PARTITION_ANY, rc;

	if (pc->place == PL_KEYED) {
		key_of(p, keybuf, sizeof keybuf);
		key = keybuf;
		key_len = strlen(keybuf);
	} else if (pc->place == PL_EXPLICIT) {
		part = explicit_part(p, seq);
		t.part = (uint8_t)part;
	}

	for (;;) {
		if (pc->api == API_SEND || pc->place == PL_EXPLICIT) {
			/*
			 * The tag (in the key or at the front of the value)
			 * needs the checksum before the send or the claim.
			 */
			payload = pc->place == PL_EXPLICIT ? buf : buf + sizeof t;
			plen = pc->place == PL_EXPLICIT ? len : len - sizeof t;
			fill_payload(payload, plen, p, seq);
			t.crc = tag_crc(&t, payload, plen);
			if (pc->place == PL_EXPLICIT) {
				key = &t;
				key_len = sizeof t;
			} else {
				memcpy(buf, &t, sizeof t);
			}
		}
		if (pc->api == API_SEND) {
			rc = shmq_send(pr, part, key, key_len, buf, len,
				       SEND_TIMEOUT_MS, off_out);
			if (rc >= 0) {
				*part_out = rc;
				return 0;
			}
		} else {
			rc = shmq_producer_claim(pr, part, key, key_len, len,
						 SEND_TIMEOUT_MS, &cl);
			if (rc >= 0) {
				if (cl.value_len != len || (int)cl.partition != rc) {
					shmq_producer_abort(pr);
					return -ERANGE;
				}
				if (pc->place == PL_EXPLICIT) {
					memcpy(cl.value, buf, len);
				} else {
					/* Zero copy: build the value in the ring. */
					payload = (uint8_t *)cl.value + sizeof t;
					plen = len - sizeof t;
					fill_payload(payload, plen, p, seq);
					t.crc = tag_crc(&t, payload, plen);
					memcpy(cl.value, &t, sizeof t);
				}
				rc = shmq_producer_commit(pr);
				if (rc < 0)
					return rc;
				*part_out = (int)cl.partition;
				*off_out = cl.offset;
				return 0;
			}
		}
		if (rc != -EAGAIN || tu_now_ns() > deadline)
			return rc;
	}
}

static int producer_main(struct run *r, uint32_t p)
{
	struct shmq_producer_opts popts = SHMQ_PRODUCER_OPTS_INIT;
	struct shared *sh = r->sh;
	shmq_client_t *cl = NULL;
	shmq_producer_t *pr = NULL;
	uint64_t deadline = tu_now_ns() + PRODUCER_MAX_MS * 1000000ull;
	uint8_t buf[VALUE_MAX];
	uint64_t off;
	uint32_t seq;
	int rc, part;

	/* Busy-waiting producers go with busy-polling consumers, every other one. */
	if (r->consumer_flags & SHMQ_CONSUMER_BUSY_POLL && p % 2)
		popts.flags = SHMQ_PRODUCER_BUSY_WAIT;
	rc = shmq_open(r->dir, NULL, &cl);
	if (rc == 0)
		rc = shmq_producer_open(cl, TOPIC, &popts, &pr);
	if (rc < 0) {
		fprintf(stderr, "# producer %u: open: %s (%s)\n", p,
			shmq_strerror(rc), shmq_errdetail());
		sh->prod_rc[p] = rc;
		return 1;
	}
	for (seq = 0; seq < r->m; seq++) {
		off = UINT64_MAX;
		rc = produce_one(pr, p, seq, buf, deadline, &part, &off);
		if (rc < 0) {
			fprintf(stderr, "# producer %u seq %u: %s (%s)\n", p, seq,
				shmq_strerror(rc), shmq_errdetail());
			sh->prod_rc[p] = rc;
			sh->prod_err[p]++;
			break;
		}
		r->poff[(size_t)p * r->m + seq] = off;
		r->ppart[(size_t)p * r->m + seq] = (uint16_t)part;
	}
	shmq_producer_close(pr);
	shmq_close(cl);
	return rc < 0 ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * Members
 */

struct member_state {
	int64_t last_seq[NPART][NPROD];
	uint64_t last_off[NPART];
	int have_off[NPART];
};

static void member_check(struct run *r, int g, struct member_state *st,
			 const struct shmq_msg *m)
{
	struct shared *sh = r->sh;
	const uint8_t *payload;
	struct tag t;
	size_t plen;
	char keybuf[16];
	uint32_t part = m->partition;
	size_t i;

	if (part >= NPART) {
		note_bad(sh, g, BAD_PART, 0, UINT32_MAX, 0, part, m->offset);
		return;
	}
	if (st->have_off[part] && m->offset <= st->last_off[part])
		note_bad(sh, g, BAD_ORDER, 0, UINT32_MAX, 0, part, m->offset);
	st->have_off[part] = 1;
	st->last_off[part] = m->offset;

	if (m->key_len == sizeof t) {
		memcpy(&t, m->key, sizeof t);
		payload = m->value;
		plen = m->value_len;
	} else if (m->value_len >= sizeof t) {
		memcpy(&t, m->value, sizeof t);
		payload = (const uint8_t *)m->value + sizeof t;
		plen = m->value_len - sizeof t;
	} else {
		note_bad(sh, g, BAD_TAG, 0, UINT32_MAX, 0, part, m->offset);
		return;
	}
	if (t.magic != TAG_MAGIC || t.producer >= NPROD || t.seq >= r->m ||
	    (m->key_len == sizeof t) != (prod_conf[t.producer].place == PL_EXPLICIT)) {
		note_bad(sh, g, BAD_TAG, 0, t.producer, t.seq, part, m->offset);
		return;
	}
	if (t.value_len != m->value_len ||
	    t.value_len != value_len_of(t.producer, t.seq))
		note_bad(sh, g, BAD_LEN, 0, t.producer, t.seq, part, m->offset);
	else if (tag_crc(&t, payload, plen) != t.crc)
		note_bad(sh, g, BAD_CRC, 0, t.producer, t.seq, part, m->offset);

	switch (prod_conf[t.producer].place) {
	case PL_KEYED:
		key_of(t.producer, keybuf, sizeof keybuf);
		if (m->key_len != strlen(keybuf) ||
		    memcmp(m->key, keybuf, m->key_len) != 0)
			note_bad(sh, g, BAD_KEY, 0, t.producer, t.seq, part, m->offset);
		else if (part != shmq_key_partition(keybuf, strlen(keybuf), NPART))
			note_bad(sh, g, BAD_PART, 0, t.producer, t.seq, part, m->offset);
		break;
	case PL_EXPLICIT:
		if (part != t.part || (int)t.part != explicit_part(t.producer, t.seq))
			note_bad(sh, g, BAD_PART, 0, t.producer, t.seq, part, m->offset);
		break;
	default:
		if (m->key_len != 0)
			note_bad(sh, g, BAD_KEY, 0, t.producer, t.seq, part, m->offset);
		break;
	}

	if ((int64_t)t.seq <= st->last_seq[part][t.producer])
		note_bad(sh, g, BAD_ORDER, 0, t.producer, t.seq, part, m->offset);
	st->last_seq[part][t.producer] = t.seq;

	i = gidx(r, g, t.producer, t.seq);
	r->goff[i] = m->offset;
	r->gpart[i] = (uint16_t)part;
	/* Release: the parent reads offset and partition after the count. */
	__atomic_fetch_add(&r->count[i], 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(&sh->grp[g].msgs, 1, __ATOMIC_RELAXED);
}

static int member_main(struct run *r, int g)
{
	struct shmq_consumer_opts opts = SHMQ_CONSUMER_OPTS_INIT;
	struct shared *sh = r->sh;
	struct member_state st;
	shmq_client_t *cl = NULL;
	shmq_consumer_t *c = NULL;
	struct shmq_msg m;
	char group[16];
	uint64_t start = tu_now_ns(), idle_since = 0, now;
	int rc, p, q, failed = 0;

	memset(&st, 0, sizeof st);
	memset(&m, 0, sizeof m);
	for (p = 0; p < NPART; p++)
		for (q = 0; q < NPROD; q++)
			st.last_seq[p][q] = -1;
	snprintf(group, sizeof group, "g%d", g);
	opts.flags = r->consumer_flags;
	opts.from = SHMQ_FROM_EARLIEST;
	rc = shmq_open(r->dir, NULL, &cl);
	if (rc == 0)
		rc = shmq_consumer_open(cl, TOPIC, group, &opts, &c);
	if (rc < 0) {
		fprintf(stderr, "# member of %s: open: %s (%s)\n", group,
			shmq_strerror(rc), shmq_errdetail());
		note_bad(sh, g, BAD_POLL, rc, UINT32_MAX, 0, 0, 0);
		__atomic_fetch_add(&sh->members_ready, 1, __ATOMIC_RELEASE);
		shmq_close(cl);
		return 1;
	}
	__atomic_fetch_add(&sh->members_ready, 1, __ATOMIC_RELEASE);

	for (;;) {
		rc = shmq_consumer_poll(c, &m, 100);
		now = tu_now_ns();
		if (rc == 0) {
			member_check(r, g, &st, &m);
			idle_since = 0;
			continue;
		}
		if (rc != -EAGAIN) {
			/* ECORRUPT skips that partition; keep reading the others. */
			note_bad(sh, g, BAD_POLL, rc, UINT32_MAX, 0,
				 rc == SHMQ_ECORRUPT ? m.partition : 0, 0);
			failed = 1;
			if (rc != SHMQ_ECORRUPT)
				break;
		}
		if (now - start > MEMBER_MAX_MS * 1000000ull) {
			fprintf(stderr, "# member of %s: gave up after %d ms\n",
				group, MEMBER_MAX_MS);
			failed = 1;
			break;
		}
		if (!__atomic_load_n(&sh->producers_done, __ATOMIC_ACQUIRE))
			continue;
		if (!idle_since)
			idle_since = now;
		else if (now - idle_since > MEMBER_IDLE_MS * 1000000ull)
			break;
	}
	shmq_consumer_close(c);
	shmq_close(cl);
	return failed;
}

/* ------------------------------------------------------------------------
 * The parent
 */

#define CHECKS_PER_RUN (2 + 4 * NGROUPS + 3)

static void *shared_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bail("mmap %zu: %s", bytes, strerror(errno));
	return p;
}

static pid_t spawn(struct run *r, int is_producer, int idx)
{
	pid_t pid;

	pid = tu_fork(NULL);
	if (pid == 0) {
		tap_child();
		/* The alarm is not inherited; a stuck child must die too. */
		alarm(90);
		_exit(is_producer ? producer_main(r, (uint32_t)idx)
				  : member_main(r, idx));
	}
	return pid;
}

static void report_bad(const struct run *r)
{
	const struct shared *sh = r->sh;
	uint32_t i, n = sh->nbad < NBAD ? sh->nbad : NBAD;

	for (i = 0; i < n; i++) {
		const struct bad *b = &sh->bad[i];

		diag("group %d: %s: producer %d seq %u partition %u offset %llu rc %d (%s)",
		     b->group, bad_names[b->kind], (int)b->producer, b->seq,
		     b->partition, (unsigned long long)b->offset, b->rc,
		     shmq_strerror(b->rc));
	}
}

static void check_group(const struct run *r, int g)
{
	const struct group_stats *gs = &r->sh->grp[g];
	uint64_t content = gs->bad[BAD_TAG] + gs->bad[BAD_LEN] + gs->bad[BAD_CRC] +
			   gs->bad[BAD_KEY] + gs->bad[BAD_PART] + gs->bad[BAD_POLL];
	uint64_t missing = 0, dup = 0, where = 0, unsent = 0;
	uint32_t p, seq, c;
	size_t i;
	int shown = 0, wshown = 0;

	for (p = 0; p < NPROD; p++) {
		for (seq = 0; seq < r->m; seq++) {
			i = gidx(r, g, p, seq);
			c = __atomic_load_n(&r->count[i], __ATOMIC_ACQUIRE);
			/*
			 * A producer that failed (reported above) sent only
			 * part of its messages: the rest must not arrive.
			 */
			if (r->poff[(size_t)p * r->m + seq] == UINT64_MAX) {
				unsent++;
				if (c != 0) {
					dup++;
					if (shown++ < 8)
						diag("%s g%d: producer %u seq %u never sent, received %u times",
						     r->name, g, p, seq, c);
				}
				continue;
			}
			if (c != 1) {
				if (c == 0)
					missing++;
				else
					dup++;
				if (shown++ < 8)
					diag("%s g%d: producer %u seq %u received %u times",
					     r->name, g, p, seq, c);
				continue;
			}
			if (r->goff[i] != r->poff[(size_t)p * r->m + seq] ||
			    r->gpart[i] != r->ppart[(size_t)p * r->m + seq]) {
				where++;
				if (wshown++ < 8)
					diag("%s g%d: producer %u seq %u at %u/%llu, producer says %u/%llu",
					     r->name, g, p, seq, r->gpart[i],
					     (unsigned long long)r->goff[i],
					     r->ppart[(size_t)p * r->m + seq],
					     (unsigned long long)r->poff[(size_t)p * r->m + seq]);
			}
		}
	}
	if (unsent)
		diag("%s g%d: %llu messages were not sent (producer errors)", r->name, g,
		     (unsigned long long)unsent);
	ok(missing == 0 && dup == 0,
	   "%s g%d: every message sent arrived exactly once (%llu received, %llu missing, %llu duplicated)",
	   r->name, g, (unsigned long long)gs->msgs, (unsigned long long)missing,
	   (unsigned long long)dup);
	ok(content == 0, "%s g%d: content, key and partition intact (%llu bad)",
	   r->name, g, (unsigned long long)content);
	ok(gs->bad[BAD_ORDER] == 0, "%s g%d: offsets and sequences increase per member (%llu bad)",
	   r->name, g, (unsigned long long)gs->bad[BAD_ORDER]);
	ok(where == 0, "%s g%d: partition and offset agree with the producer's (%llu differ)",
	   r->name, g, (unsigned long long)where);
}

/* Producer side: offsets grow with seq per partition; placement as asked. */
static void check_producers(const struct run *r)
{
	uint64_t last[NPART], bad = 0;
	char keybuf[16];
	uint32_t p, seq, part;
	int shown = 0, want;

	for (p = 0; p < NPROD; p++) {
		memset(last, 0, sizeof last);
		key_of(p, keybuf, sizeof keybuf);
		for (seq = 0; seq < r->m; seq++) {
			uint64_t off = r->poff[(size_t)p * r->m + seq];

			/* A failed producer stopped here (reported already). */
			if (off == UINT64_MAX && r->sh->prod_rc[p] != 0)
				break;
			part = r->ppart[(size_t)p * r->m + seq];
			want = -1;
			if (prod_conf[p].place == PL_KEYED)
				want = (int)shmq_key_partition(keybuf, strlen(keybuf), NPART);
			else if (prod_conf[p].place == PL_EXPLICIT)
				want = explicit_part(p, seq);
			if (part >= NPART || (want >= 0 && (int)part != want) ||
			    (last[part] && off + 1 <= last[part]) || off == UINT64_MAX) {
				if (shown++ < 8)
					diag("%s: producer %u seq %u: partition %u (want %d) offset %llu",
					     r->name, p, seq, part, want,
					     (unsigned long long)off);
				bad++;
				continue;
			}
			last[part] = off + 1;
		}
	}
	ok(bad == 0, "%s: producers' offsets increase per partition, placement as asked",
	   r->name);
}

/* After the run: every group has caught up, and the rings are sound. */
static void check_topic(const struct run *r)
{
	struct shmq_topic_stat *st = NULL;
	char segname[SHMQ_SEGNAME_MAX];
	struct shmq_map map;
	shmq_client_t *cl = NULL;
	uint64_t ns;
	uint32_t p, g;
	int rc, lagging = 0, bad = 0;

	rc = shmq_open(r->dir, NULL, &cl);
	if (rc == 0)
		rc = shmq_topic_stat(cl, TOPIC, &st);
	if (rc < 0) {
		diag("stat: %s (%s)", shmq_strerror(rc), shmq_errdetail());
		lagging = 1;
	} else {
		for (g = 0; g < st->group_count; g++) {
			for (p = 0; p < st->partition_count; p++) {
				if (st->groups[g].partitions[p].next !=
				    st->partitions[p].next_offset) {
					diag("%s: group %s partition %u at %llu, head %llu",
					     r->name, st->groups[g].name, p,
					     (unsigned long long)st->groups[g].partitions[p].next,
					     (unsigned long long)st->partitions[p].next_offset);
					lagging++;
				}
			}
		}
		if (st->group_count != NGROUPS) {
			diag("%s: %u groups", r->name, st->group_count);
			lagging++;
		}
	}
	ok(lagging == 0, "%s: every group consumed every partition to its head", r->name);
	shmq_topic_stat_free(st);
	shmq_close(cl);

	rc = shmq__namespace_id(r->dir, &ns);
	if (rc == 0) {
		shmq__segment_name(ns, TOPIC, segname);
		rc = shmq__segment_attach(segname, geteuid(), 0600, 0, &map);
	}
	if (rc < 0) {
		diag("attach: %s (%s)", shmq_strerror(rc), shmq_errdetail());
		bad = 1;
	} else {
		for (p = 0; p < NPART; p++) {
			rc = shmq__ring_check(&map, p);
			if (rc != 0) {
				diag("%s: partition %u: %s (%s)", r->name, p,
				     shmq_strerror(rc), shmq_errdetail());
				bad++;
			}
		}
		shmq__segment_detach(&map);
	}
	ok(bad == 0, "%s: shmq__ring_check passes on every partition", r->name);
}

static void run(const char *name, uint32_t m, unsigned consumer_flags)
{
	struct shmq_topic_opts topts = SHMQ_TOPIC_OPTS_INIT;
	struct run r = { .name = name, .m = m, .consumer_flags = consumer_flags };
	pid_t members[16], producers[NPROD], shmqd;
	shmq_client_t *cl = NULL;
	size_t n = (size_t)NGROUPS * NPROD * m;
	uint64_t t0, deadline;
	int nmem = 0, g, i, k, st, bad;

	r.sh = shared_alloc(sizeof *r.sh);
	r.count = shared_alloc(n * sizeof *r.count);
	r.goff = shared_alloc(n * sizeof *r.goff);
	r.gpart = shared_alloc(n * sizeof *r.gpart);
	r.poff = shared_alloc((size_t)NPROD * m * sizeof *r.poff);
	r.ppart = shared_alloc((size_t)NPROD * m * sizeof *r.ppart);
	memset(r.poff, 0xff, (size_t)NPROD * m * sizeof *r.poff);

	tu_make_dir(name, r.dir, sizeof r.dir);
	shmqd = tu_shmqd_start(r.dir, NULL);
	cl = tu_open(r.dir);
	topts.partitions = NPART;
	topts.ring_bytes = RING;
	topts.full_policy = SHMQ_FULL_BLOCK;
	k = shmq_topic_create(cl, TOPIC, &topts);
	if (k < 0)
		bail("shmq_topic_create: %s (%s)", shmq_strerror(k), shmq_errdetail());
	shmq_close(cl);

	/* Every group has its members before the first message. */
	for (g = 0; g < NGROUPS; g++)
		for (i = 0; i < group_members[g]; i++)
			members[nmem++] = spawn(&r, 0, g);
	deadline = tu_now_ns() + READY_MAX_MS * 1000000ull;
	while (__atomic_load_n(&r.sh->members_ready, __ATOMIC_ACQUIRE) < (uint32_t)nmem) {
		if (tu_now_ns() > deadline)
			bail("%s: members did not open within %d ms", name, READY_MAX_MS);
		usleep(1000);
	}

	t0 = tu_now_ns();
	for (i = 0; i < NPROD; i++)
		producers[i] = spawn(&r, 1, i);
	bad = 0;
	for (i = 0; i < NPROD; i++) {
		st = tu_wait_child(producers[i], PRODUCER_MAX_MS + 5000);
		if (st != 0) {
			diag("%s: producer %d: status %#x, rc %d (%s)", name, i, st,
			     r.sh->prod_rc[i], shmq_strerror(r.sh->prod_rc[i]));
			bad++;
		}
	}
	__atomic_store_n(&r.sh->producers_done, 1, __ATOMIC_RELEASE);
	ok(bad == 0, "%s: %d producers sent %u messages each", name, NPROD, m);
	bad = 0;
	for (i = 0; i < nmem; i++) {
		st = tu_wait_child(members[i], MEMBER_MAX_MS);
		if (st != 0) {
			diag("%s: member %d: status %#x", name, i, st);
			bad++;
		}
	}
	ok(bad == 0, "%s: %d members finished cleanly", name, nmem);
	diag("%s: %u messages x %d groups in %.2f s", name, NPROD * m, NGROUPS,
	     (double)(tu_now_ns() - t0) / 1e9);

	report_bad(&r);
	for (g = 0; g < NGROUPS; g++)
		check_group(&r, g);
	check_producers(&r);
	check_topic(&r);

	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(r.dir);
	munmap(r.sh, sizeof *r.sh);
	munmap(r.count, n * sizeof *r.count);
	munmap(r.goff, n * sizeof *r.goff);
	munmap(r.gpart, n * sizeof *r.gpart);
	munmap(r.poff, (size_t)NPROD * m * sizeof *r.poff);
	munmap(r.ppart, (size_t)NPROD * m * sizeof *r.ppart);
}

int main(void)
{
	tu_init(120);
	plan(2 * CHECKS_PER_RUN);
	run("sleeping", 20000, 0);
	run("busypoll", 8000, SHMQ_CONSUMER_BUSY_POLL);
	return tap_done();
}
