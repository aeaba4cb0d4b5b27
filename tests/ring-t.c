/*
 * ring-t.c - the ring protocol run as threads of one process.
 *
 * This is the test `make check-tsan` runs: ThreadSanitizer sees the
 * happens-before edges of one process only, so producers and consumers are
 * threads here, each with its own handle, attached to one segment through
 * the public API.  No shmqd: the segment and its topic file are made
 * directly (shmq__segment_create, shmq__topic_file_write), so the only
 * code TSan watches is the library's data path and this test.
 *
 * Checked: every message reaches every group exactly once, intact (length
 * and checksum), with strictly increasing offsets per partition and
 * sequence numbers per producer and partition at every member; the
 * partitions pass shmq__ring_check() afterwards; every group caught up.
 * One producer publishes with shmq_send_batch(), BATCH messages to a
 * partition at a time.  An untethered group whose members pause now and then is lapped by the
 * producers' tail walk while its members take and copy: what it receives is
 * intact, never twice, and with what it is told it missed adds up to what
 * was sent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define TOPIC	  "ring"
#define NPART	  2
#define NGROUPS	  2
#define NMEMBERS  2 /* per group */
#define UGROUP	  NGROUPS /* the untethered group's index */
#define NUMEMBERS 2
#define NPROD	  5
#define NMSG	  20000
#define VALUE_MAX 600
#define TAG_MAGIC 0x7b72

#define SEND_TIMEOUT_MS 1000
#define PRODUCER_MAX_MS 40000
#define MEMBER_IDLE_MS	500
#define MEMBER_MAX_MS	50000

enum api { API_SEND, API_CLAIM, API_BATCH };
/* PL_BATCH: messages seq .. seq + BATCH - 1 go to partition seq / BATCH % NPART. */
enum place { PL_KEYED, PL_RR, PL_EXPLICIT, PL_BATCH };
#define BATCH 16

static const struct prod_conf {
	int api;
	int place;
} prod_conf[NPROD] = {
	{ API_SEND, PL_KEYED },
	{ API_CLAIM, PL_RR },
	{ API_SEND, PL_EXPLICIT },
	{ API_CLAIM, PL_KEYED },
	{ API_BATCH, PL_BATCH },
};

struct tag {
	uint16_t magic;
	uint8_t producer;
	uint8_t reserved;
	uint32_t seq;
	uint32_t value_len;
	uint32_t crc;
};

static char dir[256];
static shmq_client_t *client;
static uint32_t producers_done;
static uint32_t count[NGROUPS + 1][NPROD][NMSG];
static uint64_t nbad_content[NGROUPS + 1], nbad_order[NGROUPS + 1], nbad_poll[NGROUPS + 1];
static uint64_t nmissed, nreports;
static int prod_rc[NPROD];
static uint32_t prod_sent[NPROD];

static uint32_t value_len_of(uint32_t p, uint32_t seq)
{
	uint64_t s = ((uint64_t)p << 32 | seq) ^ 0x5eed;

	return sizeof(struct tag) +
	       (uint32_t)(tu_splitmix(&s) % (VALUE_MAX + 1 - sizeof(struct tag)));
}

static void fill_payload(uint8_t *b, size_t n, uint32_t p, uint32_t seq)
{
	uint64_t s = (uint64_t)p << 32 | seq, v;
	size_t i;

	for (i = 0; i < n; i += 8) {
		v = tu_splitmix(&s);
		memcpy(b + i, &v, n - i < 8 ? n - i : 8);
	}
}

static uint32_t tag_crc(const struct tag *t, const void *payload, size_t n)
{
	return tu_crc(payload, n) ^ (t->seq * 0x9e3779b1u) ^
	       ((uint32_t)t->producer << 24) ^ t->value_len;
}

static void key_of(uint32_t p, char *buf, size_t n)
{
	snprintf(buf, n, "key-%u", p);
}

/* ------------------------------------------------------------------------
 * Producers
 */

static int produce(shmq_producer_t *pr, uint32_t p, uint32_t seq, uint8_t *buf,
		   uint64_t deadline)
{
	const struct prod_conf *pc = &prod_conf[p];
	uint32_t len = value_len_of(p, seq);
	struct tag t = { TAG_MAGIC, (uint8_t)p, 0, seq, len, 0 };
	struct shmq_claim cl;
	char key[16];
	size_t key_len = 0;
	int part = SHMQ_PARTITION_ANY, rc;

	if (pc->place == PL_KEYED) {
		key_of(p, key, sizeof key);
		key_len = strlen(key);
	} else if (pc->place == PL_EXPLICIT) {
		part = (int)(seq % NPART);
	}
	for (;;) {
		if (pc->api == API_SEND) {
			fill_payload(buf + sizeof t, len - sizeof t, p, seq);
			t.crc = tag_crc(&t, buf + sizeof t, len - sizeof t);
			memcpy(buf, &t, sizeof t);
			rc = shmq_send(pr, part, key_len ? key : NULL, key_len,
				       buf, len, SEND_TIMEOUT_MS, NULL);
			if (rc >= 0)
				return 0;
		} else {
			rc = shmq_producer_claim(pr, part, key_len ? key : NULL,
						 key_len, len, SEND_TIMEOUT_MS, &cl);
			if (rc >= 0) {
				uint8_t *v = cl.value;

				fill_payload(v + sizeof t, len - sizeof t, p, seq);
				t.crc = tag_crc(&t, v + sizeof t, len - sizeof t);
				memcpy(v, &t, sizeof t);
				return shmq_producer_commit(pr);
			}
		}
		if (rc != -EAGAIN || tu_now_ns() > deadline)
			return rc;
	}
}

/* Messages [seq, end) of producer p, to their partition, in batches. */
static int produce_batch(shmq_producer_t *pr, uint32_t p, uint32_t seq,
			 uint32_t end, uint8_t (*bufs)[VALUE_MAX], uint64_t deadline)
{
	struct shmq_batch_msg msgs[BATCH];
	uint32_t i, n = end - seq;
	int rc;

	for (i = 0; i < n; i++) {
		uint32_t len = value_len_of(p, seq + i);
		struct tag t = { TAG_MAGIC, (uint8_t)p, 0, seq + i, len, 0 };

		fill_payload(bufs[i] + sizeof t, len - sizeof t, p, seq + i);
		t.crc = tag_crc(&t, bufs[i] + sizeof t, len - sizeof t);
		memcpy(bufs[i], &t, sizeof t);
		msgs[i] = (struct shmq_batch_msg){ NULL, 0, bufs[i], len };
	}
	for (i = 0; i < n;) {
		rc = shmq_send_batch(pr, (int)(seq / BATCH % NPART), msgs + i, n - i,
				     SEND_TIMEOUT_MS, NULL);
		if (rc > 0) {
			i += (uint32_t)rc;
			prod_sent[p] += (uint32_t)rc;
			continue;
		}
		if (rc != -EAGAIN || tu_now_ns() > deadline)
			return rc;
	}
	return 0;
}

static void *producer_thread(void *arg)
{
	uint32_t p = (uint32_t)(uintptr_t)arg, seq;
	uint64_t deadline = tu_now_ns() + PRODUCER_MAX_MS * 1000000ull;
	shmq_producer_t *pr = NULL;
	static uint8_t bufs[BATCH][VALUE_MAX]; /* one batching producer */
	uint8_t buf[VALUE_MAX];
	int rc;

	rc = shmq_producer_open(client, TOPIC, NULL, &pr);
	for (seq = 0; rc == 0 && seq < NMSG; seq++) {
		if (prod_conf[p].api == API_BATCH) {
			uint32_t end = (seq / BATCH + 1) * BATCH;

			rc = produce_batch(pr, p, seq, end < NMSG ? end : NMSG,
					   bufs, deadline);
			seq = (end < NMSG ? end : NMSG) - 1;
			continue;
		}
		rc = produce(pr, p, seq, buf, deadline);
		if (rc == 0)
			prod_sent[p]++;
	}
	prod_rc[p] = rc;
	shmq_producer_close(pr);
	return NULL;
}

/* ------------------------------------------------------------------------
 * Members
 */

struct member {
	pthread_t thread;
	shmq_consumer_t *c;
	int group;
};

static int check_msg(int g, const struct shmq_msg *m, int64_t last_seq[NPART][NPROD],
		     uint64_t last_off[NPART])
{
	const uint8_t *v = m->value;
	char key[16];
	struct tag t;

	if (m->partition >= NPART || m->value_len < sizeof t)
		return -1;
	memcpy(&t, v, sizeof t);
	if (t.magic != TAG_MAGIC || t.producer >= NPROD || t.seq >= NMSG ||
	    t.value_len != m->value_len || t.value_len != value_len_of(t.producer, t.seq) ||
	    tag_crc(&t, v + sizeof t, m->value_len - sizeof t) != t.crc)
		return -1;
	if (prod_conf[t.producer].place == PL_KEYED) {
		key_of(t.producer, key, sizeof key);
		if (m->key_len != strlen(key) || memcmp(m->key, key, m->key_len) ||
		    m->partition != shmq_key_partition(key, m->key_len, NPART))
			return -1;
	} else if (m->key_len != 0) {
		return -1;
	}
	if (prod_conf[t.producer].place == PL_EXPLICIT && m->partition != t.seq % NPART)
		return -1;
	if (prod_conf[t.producer].place == PL_BATCH && m->partition != t.seq / BATCH % NPART)
		return -1;

	if (m->offset < last_off[m->partition] ||
	    (int64_t)t.seq <= last_seq[m->partition][t.producer])
		__atomic_fetch_add(&nbad_order[g], 1, __ATOMIC_RELAXED);
	last_off[m->partition] = m->offset + 1;
	last_seq[m->partition][t.producer] = t.seq;
	__atomic_fetch_add(&count[g][t.producer][t.seq], 1, __ATOMIC_RELAXED);
	return 0;
}

static void *member_thread(void *arg)
{
	struct member *me = arg;
	int64_t last_seq[NPART][NPROD];
	uint64_t last_off[NPART] = { 0 };
	uint64_t start = tu_now_ns(), idle_since = 0, now;
	struct shmq_msg m;
	uint32_t n = 0;
	int rc, p, q;

	for (p = 0; p < NPART; p++)
		for (q = 0; q < NPROD; q++)
			last_seq[p][q] = -1;
	for (;;) {
		rc = shmq_consumer_poll(me->c, &m, 50);
		now = tu_now_ns();
		if (rc == 0) {
			if (check_msg(me->group, &m, last_seq, last_off) < 0)
				__atomic_fetch_add(&nbad_content[me->group], 1,
						   __ATOMIC_RELAXED);
			idle_since = 0;
			/* Untethered: fall behind now and then, to be lapped. */
			if (me->group == UGROUP && ++n % 256 == 0)
				usleep(3000);
			continue;
		}
		if (rc == SHMQ_ELAPPED && me->group == UGROUP) {
			__atomic_fetch_add(&nmissed, m.missed, __ATOMIC_RELAXED);
			__atomic_fetch_add(&nreports, 1, __ATOMIC_RELAXED);
			idle_since = 0;
			continue;
		}
		if (rc != -EAGAIN) {
			diag("poll: %s", shmq_strerror(rc));
			__atomic_fetch_add(&nbad_poll[me->group], 1, __ATOMIC_RELAXED);
			if (rc != SHMQ_ECORRUPT)
				break;
		}
		if (now - start > MEMBER_MAX_MS * 1000000ull) {
			__atomic_fetch_add(&nbad_poll[me->group], 1, __ATOMIC_RELAXED);
			break;
		}
		if (!__atomic_load_n(&producers_done, __ATOMIC_ACQUIRE))
			continue;
		if (!idle_since)
			idle_since = now;
		else if (now - idle_since > MEMBER_IDLE_MS * 1000000ull)
			break;
	}
	shmq_consumer_release(me->c);
	return NULL;
}

/* ------------------------------------------------------------------------
 * Setup: a topic without shmqd
 */

static void make_topic(struct shmq_map *map)
{
	struct shmq_topic_params tp;

	memset(&tp, 0, sizeof tp);
	tp.partitions = NPART;
	tp.ring_bytes = SHMQ_RING_MIN;
	tp.full_policy = SHMQ_FULL_BLOCK;
	tp.numa_node = -1;
	tp.mode = 0600;
	tp.stall_timeout_ms = 10000;
	tp.topic_id = 0x7269ull << 32 | (uint32_t)getpid();
	tu_topic_direct(dir, TOPIC, &tp, map);
}

int main(void)
{
	struct shmq_consumer_opts opts = SHMQ_CONSUMER_OPTS_INIT;
	struct member members[NGROUPS * NMEMBERS + NUMEMBERS];
	pthread_t producers[NPROD];
	struct shmq_topic_stat *st = NULL;
	struct shmq_map map;
	char group[16];
	uint64_t missing, dup, t0, got;
	uint32_t p, g, seq;
	int i, rc, bad, shown;

	tu_init(120);
	plan(14);
	tu_make_dir("ring", dir, sizeof dir);
	make_topic(&map);
	client = tu_open(dir);

	/* Members join before the first message, so they must see them all. */
	opts.from = SHMQ_FROM_EARLIEST;
	for (i = 0; i < NGROUPS * NMEMBERS; i++) {
		members[i].group = i / NMEMBERS;
		snprintf(group, sizeof group, "g%d", members[i].group);
		rc = shmq_consumer_open(client, TOPIC, group, &opts, &members[i].c);
		if (rc < 0)
			bail("consumer_open %s: %s (%s)", group, shmq_strerror(rc),
			     shmq_errdetail());
	}
	opts.flags = SHMQ_CONSUMER_UNTETHERED;
	for (i = NGROUPS * NMEMBERS; i < NGROUPS * NMEMBERS + NUMEMBERS; i++) {
		members[i].group = UGROUP;
		rc = shmq_consumer_open(client, TOPIC, "u", &opts, &members[i].c);
		if (rc < 0)
			bail("consumer_open u: %s (%s)", shmq_strerror(rc),
			     shmq_errdetail());
	}
	t0 = tu_now_ns();
	for (i = 0; i < NGROUPS * NMEMBERS + NUMEMBERS; i++)
		if (pthread_create(&members[i].thread, NULL, member_thread, &members[i]))
			bail("pthread_create");
	for (p = 0; p < NPROD; p++)
		if (pthread_create(&producers[p], NULL, producer_thread,
				   (void *)(uintptr_t)p))
			bail("pthread_create");
	for (p = 0; p < NPROD; p++)
		pthread_join(producers[p], NULL);
	__atomic_store_n(&producers_done, 1, __ATOMIC_RELEASE);
	for (i = 0; i < NGROUPS * NMEMBERS + NUMEMBERS; i++)
		pthread_join(members[i].thread, NULL);
	diag("%d x %d messages, %d groups: %.2f s", NPROD, NMSG, NGROUPS,
	     (double)(tu_now_ns() - t0) / 1e9);

	bad = 0;
	for (p = 0; p < NPROD; p++) {
		if (prod_rc[p] != 0) {
			diag("producer %u: %s after %u messages", p,
			     shmq_strerror(prod_rc[p]), prod_sent[p]);
			bad++;
		}
	}
	ok(bad == 0, "%d producer threads sent %d messages each", NPROD, NMSG);
	ok(nbad_poll[0] + nbad_poll[1] + nbad_poll[UGROUP] == 0,
	   "no poll errors, no member timed out");

	for (g = 0; g < NGROUPS; g++) {
		missing = dup = 0;
		shown = 0;
		for (p = 0; p < NPROD; p++) {
			for (seq = 0; seq < NMSG; seq++) {
				if (count[g][p][seq] == 1)
					continue;
				if (count[g][p][seq] == 0)
					missing++;
				else
					dup++;
				if (shown++ < 8)
					diag("g%u: producer %u seq %u received %u times",
					     g, p, seq, count[g][p][seq]);
			}
		}
		ok(missing == 0 && dup == 0,
		   "g%u: every message exactly once (%llu missing, %llu duplicated)", g,
		   (unsigned long long)missing, (unsigned long long)dup);
		ok(nbad_content[g] == 0, "g%u: content, key and partition intact (%llu bad)",
		   g, (unsigned long long)nbad_content[g]);
		ok(nbad_order[g] == 0, "g%u: offsets and sequences increase per member (%llu bad)",
		   g, (unsigned long long)nbad_order[g]);
	}

	got = dup = 0;
	for (p = 0; p < NPROD; p++) {
		for (seq = 0; seq < NMSG; seq++) {
			got += count[UGROUP][p][seq];
			dup += count[UGROUP][p][seq] > 1;
		}
	}
	diag("untethered: received %llu, missed %llu in %llu reports",
	     (unsigned long long)got, (unsigned long long)nmissed,
	     (unsigned long long)nreports);
	ok(dup == 0 && got + nmissed == (uint64_t)NPROD * NMSG,
	   "untethered: received + missed == sent (%llu + %llu), none twice (%llu)",
	   (unsigned long long)got, (unsigned long long)nmissed,
	   (unsigned long long)dup);
	ok(nbad_content[UGROUP] == 0 && nbad_order[UGROUP] == 0,
	   "untethered: content intact, in order per member (%llu bad, %llu out of order)",
	   (unsigned long long)nbad_content[UGROUP],
	   (unsigned long long)nbad_order[UGROUP]);
	ok(nreports > 0, "untethered: the group was lapped and told so");

	bad = 0;
	for (p = 0; p < NPART; p++) {
		rc = shmq__ring_check(&map, p);
		if (rc != 0) {
			diag("partition %u: %s (%s)", p, shmq_strerror(rc),
			     shmq_errdetail());
			bad++;
		}
	}
	ok(bad == 0, "shmq__ring_check passes on every partition");

	rc = shmq_topic_stat(client, TOPIC, &st);
	bad = rc < 0;
	if (rc < 0)
		diag("stat: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	for (g = 0; rc == 0 && g < st->group_count; g++) {
		for (p = 0; p < st->partition_count; p++) {
			if (st->groups[g].partitions[p].next != st->partitions[p].next_offset) {
				diag("group %s partition %u at %llu, head %llu",
				     st->groups[g].name, p,
				     (unsigned long long)st->groups[g].partitions[p].next,
				     (unsigned long long)st->partitions[p].next_offset);
				bad++;
			}
		}
	}
	ok(bad == 0 && st && st->group_count == NGROUPS + 1,
	   "every group consumed every partition to its head");
	ok(st && st->producers == 0, "closed producers left no slot behind (%u)",
	   st ? st->producers : 0);
	shmq_topic_stat_free(st);

	for (i = 0; i < NGROUPS * NMEMBERS + NUMEMBERS; i++)
		shmq_consumer_close(members[i].c);
	shmq_close(client);
	shmq__segment_detach(&map);
	tu_cleanup(dir);
	return tap_done();
}
