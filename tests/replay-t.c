/*
 * replay-t.c - spilling to disk and replaying, end to end with shmqd.
 *
 * stopped  A group that stops consuming while producers publish ten times
 *          the ring's capacity does not hold them back (spill=overflow):
 *          when it resumes it receives everything, once, in order, byte
 *          for byte, first from the spill files and then from the ring;
 *          a group that kept up never read from disk.
 * kill     shmqd is SIGKILLed at random moments while it spills, and
 *          restarted: every message whose send returned arrives, once, in
 *          order.  Again with 64 KiB spill segments, so that the kills
 *          land while segments roll and the syncer thread syncs the one
 *          before (recovery then finds the last two unsynced).
 * dead     shmqd SIGKILLed in the one window that leaves the most behind:
 *          its pass had copied frames to the log and flushed them, but
 *          had neither published `spilled` nor withdrawn its hazard
 *          (spill_hold).  That pass is replayed here by hand, so the
 *          window is hit every time.  The restarted shmqd finds the log
 *          ahead of `spilled`; producers on the full ring must get room
 *          again (the dead spiller copies nothing), and every message
 *          arrives once, in order, the first ring's worth from that log.
 *          Again killed before the flush, with a group that then keeps
 *          up: nothing is left to spill, and still producers get room.
 * host     A simulated host restart (spill=always): every process gone,
 *          the segments removed, shmqd restarted.  The topic comes back
 *          with its offsets continuing after the journal, the group comes
 *          back from its checkpoint and replays exactly what it had not
 *          committed, and a durable acknowledgement (shmq_producer_flush)
 *          covered everything sent.
 * time     Seek by timestamp finds the first message at or after a time,
 *          whether it is on disk or in the ring.
 * corrupt  A byte flipped in a spill file: that message is never
 *          delivered (SHMQ_ECORRUPT with its offset), the rest is.
 * gap      Seeking back to what every group consumed before spilling
 *          began is SHMQ_EGONE, not a silent skip.
 *
 * Messages carry (partition-local sequence, length, checksum) so that every
 * check is on content.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ck_pr.h>

#include "shmq.h"
#include "shmq_int.h"
#include "spill.h"
#include "tap.h"
#include "testutil.h"

#define RING	 (64u << 10)
#define NPART	 2

#define MSG_MAGIC 0x72706c79u /* "rply" */

static char dir[256];
static pid_t daemon_pid;
/* Extra shmqd arguments of restarts (test_kill). */
static const char *const *daemon_args;
static shmq_client_t *cl;

/* A deterministic value for (partition, seq): 24..408 bytes. */
static size_t make_value(uint32_t part, uint32_t seq, uint8_t *buf)
{
	size_t len = sizeof(struct tu_msg_head) + (seq * 37 + part * 11) % 385;

	return tu_msg_make(buf, len, MSG_MAGIC, part, seq);
}

/* Check a received value: returns its seq, or -1 when it is damaged. */
static long check_value(const struct shmq_msg *m)
{
	uint32_t part;
	uint64_t seq;

	if (!tu_msg_check(m, MSG_MAGIC, &part, &seq) || part != m->partition)
		return -1;
	return (long)seq;
}

static void create(const char *name, int spill)
{
	struct shmq_topic_opts o = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	o.partitions = NPART;
	o.ring_bytes = RING;
	o.max_message = 1024;
	if (spill)
		o.spill = spill;
	rc = shmq_topic_create(cl, name, &o);
	if (rc)
		bail("create %s: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
}

static shmq_consumer_t *consumer(const char *topic, const char *group, int from)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;
	int rc;

	o.from = from;
	rc = shmq_consumer_open(cl, topic, group, &o, &c);
	if (rc)
		bail("consumer %s/%s: %s (%s)", topic, group, shmq_strerror(rc), shmq_errdetail());
	return c;
}

static shmq_producer_t *producer(const char *topic)
{
	shmq_producer_t *p;
	int rc = shmq_producer_open(cl, topic, NULL, &p);

	if (rc)
		bail("producer %s: %s (%s)", topic, shmq_strerror(rc), shmq_errdetail());
	return p;
}

/* Send seq in partition part; bail on anything but success. */
static uint64_t send_one(shmq_producer_t *p, uint32_t part, uint32_t seq)
{
	static uint8_t buf[1024];
	size_t len = make_value(part, seq, buf);
	uint64_t off;
	int rc = shmq_send(p, (int)part, NULL, 0, buf, len, 10000, &off);

	if (rc < 0)
		bail("send %u/%u: %s (%s)", part, seq, shmq_strerror(rc), shmq_errdetail());
	return off;
}

struct expect {
	uint32_t next[NPART]; /* next seq expected per partition */
	uint32_t bad, dup_or_gap;
	uint64_t got;
};

/* Receive until nothing comes for idle_ms; check order and content. */
static void drain(shmq_consumer_t *c, struct expect *e, int idle_ms, uint64_t max)
{
	struct shmq_msg m;
	int rc;

	while (e->got < max && (rc = shmq_consumer_poll(c, &m, idle_ms)) != -EAGAIN) {
		long seq;

		if (rc) {
			diag("poll: %s (%s)", shmq_strerror(rc), shmq_errdetail());
			e->bad++;
			if (rc != SHMQ_ECORRUPT && rc != SHMQ_EGONE)
				return;
			continue;
		}
		seq = check_value(&m);
		if (seq < 0 || m.partition >= NPART) {
			if (e->bad++ < 5)
				diag("damaged message at partition %u offset %llu", m.partition,
				     (unsigned long long)m.offset);
			continue;
		}
		if ((uint32_t)seq != e->next[m.partition]) {
			if (e->dup_or_gap++ < 5)
				diag("partition %u: got seq %ld, expected %u", m.partition, seq,
				     e->next[m.partition]);
		}
		e->next[m.partition] = (uint32_t)seq + 1;
		e->got++;
	}
}

static void restart_daemon(int hard)
{
	tu_shmqd_stop(daemon_pid, hard);
	daemon_pid = tu_shmqd_start(dir, daemon_args);
}

/* ------------------------------------------------------------------------ */

static void test_stopped(void)
{
	shmq_consumer_t *slow, *fast;
	shmq_producer_t *p;
	struct expect es, ef;
	uint32_t seq[NPART] = { 0 }, n = 0, i;
	uint64_t bytes = 0;

	create("stopped", 0);
	slow = consumer("stopped", "slow", SHMQ_FROM_EARLIEST);
	fast = consumer("stopped", "fast", SHMQ_FROM_EARLIEST);
	p = producer("stopped");
	memset(&es, 0, sizeof(es));
	memset(&ef, 0, sizeof(ef));
	/* Ten times the capacity of all rings, while "slow" stands still. */
	while (bytes < 10ull * NPART * RING) {
		uint32_t part = n % NPART;
		static uint8_t buf[1024];

		bytes += shmq__frame_bytes(0, make_value(part, seq[part], buf));
		send_one(p, part, seq[part]++);
		n++;
		if ((n & 15) == 0)
			drain(fast, &ef, 0, UINT64_MAX);
	}
	drain(fast, &ef, 200, UINT64_MAX);
	ok(ef.got == n && ef.bad == 0 && ef.dup_or_gap == 0,
	   "stopped: the group that kept up got all %u messages in order (%llu, %u bad, %u out of order)",
	   n, (unsigned long long)ef.got, ef.bad, ef.dup_or_gap);
	is_u64(shmq__consumer_disk_reads(fast), 0, "stopped: the group that kept up never read from disk");

	drain(slow, &es, 500, UINT64_MAX);
	for (i = 0; i < NPART; i++)
		if (es.next[i] != seq[i])
			es.dup_or_gap++;
	ok(es.got == n && es.bad == 0 && es.dup_or_gap == 0,
	   "stopped: the stopped group then got all %u messages (%.1f rings), once, in order, intact (%llu, %u bad, %u out of order)",
	   n, (double)bytes / RING / NPART, (unsigned long long)es.got, es.bad, es.dup_or_gap);
	ok(shmq__consumer_disk_reads(slow) > 0 && shmq__consumer_disk_reads(slow) < n,
	   "stopped: it read %llu of them from the spill files, the rest from the ring",
	   (unsigned long long)shmq__consumer_disk_reads(slow));
	shmq_producer_close(p);
	shmq_consumer_close(slow);
	shmq_consumer_close(fast);
}

static void test_kill(const char *topic, const char *const *args)
{
	shmq_consumer_t *slow;
	shmq_producer_t *p;
	struct expect e;
	uint32_t seq[NPART] = { 0 }, n = 0, round;
	unsigned rnd = 12345;

	daemon_args = args;
	if (args)
		restart_daemon(0);
	create(topic, 0);
	slow = consumer(topic, "slow", SHMQ_FROM_EARLIEST);
	p = producer(topic);
	memset(&e, 0, sizeof(e));
	for (round = 0; round < 10; round++) {
		uint32_t k, burst;

		rnd = rnd * 1103515245 + 12345;
		burst = 500 + (rnd >> 8) % 3000;
		for (k = 0; k < burst; k++) {
			uint32_t part = n % NPART;

			send_one(p, part, seq[part]++);
			n++;
			/* Kill it in the middle of the stream, while it spills. */
			if (k == burst / 2)
				restart_daemon(1);
		}
		/* Now and then the slow group catches up a little. */
		if (round % 3 == 2)
			drain(&*slow, &e, 0, e.got + 2000);
	}
	drain(slow, &e, 500, UINT64_MAX);
	ok(e.got == n && e.bad == 0 && e.dup_or_gap == 0,
	   "%s: shmqd SIGKILLed 10 times while spilling; all %u acknowledged messages arrived once, in order (%llu, %u bad, %u out of order)",
	   topic, n, (unsigned long long)e.got, e.bad, e.dup_or_gap);
	if (args) {
		char path[512];
		size_t nseg = 0;
		struct dirent *de;
		DIR *dp;

		snprintf(path, sizeof(path), "%s/spill/%s/0", dir, topic);
		dp = opendir(path);
		while (dp && (de = readdir(dp)))
			nseg += strlen(de->d_name) > 4 &&
				!strcmp(de->d_name + strlen(de->d_name) - 4, ".seg");
		if (dp)
			closedir(dp);
		ok(nseg > 2, "%s: the log of partition 0 rolled (%zu segments)", topic, nseg);
	}
	shmq_producer_close(p);
	shmq_consumer_close(slow);
	if (args) {
		daemon_args = NULL;
		restart_daemon(0);
	}
}

/*
 * What a shmqd killed inside a spill pass leaves behind, made by hand
 * while no shmqd runs: the pass's hazard spill_hold = `spilled` still
 * published, and if it was killed after its flush (flushed), the frames
 * from there to the head appended to the log, but `spilled` not moved.
 */
static void leave_killed_pass(const char *topic, uint32_t part, bool flushed)
{
	char seg[SHMQ_SEGNAME_MAX];
	struct shmq_spill_opts o;
	struct shmq_spill_log *log;
	struct shmq_part_header *ph;
	struct shmq_map map;
	uint64_t ns, from, head, pos;
	int rc;

	shmq__namespace_id(dir, &ns);
	shmq__segment_name(ns, topic, seg);
	rc = shmq__segment_attach(seg, getuid(), 0600, 0, &map);
	if (rc)
		bail("dead: attach %s: %s (%s)", seg, shmq_strerror(rc), shmq_errdetail());
	ph = shmq__part(&map, part);
	from = ck_pr_load_64(&ph->spilled);
	head = ck_pr_load_64(&ph->head);
	memset(&o, 0, sizeof(o));
	o.topic_id = map.hdr->topic_id;
	o.start_offset = from;
	o.max_frame = shmq__max_frame(&map);
	ck_pr_store_64(&ph->spill_hold, from);
	if (!flushed) {
		shmq__segment_detach(&map);
		return;
	}
	rc = shmq__spill_open(dir, topic, part, &o, NULL, &log);
	if (rc)
		bail("dead: spill open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	for (pos = from; pos != head;) {
		struct shmq_frame_view v;

		if (shmq__frame_decode(shmq__ring(&map, part), map.geo.ring_bytes, pos,
				       shmq__max_frame(&map), &v) != SHMQ_FRAME_OK)
			bail("dead: no committed frame at %llu", (unsigned long long)pos);
		if (shmq__spill_append(log, &v))
			bail("dead: append at %llu: %s", (unsigned long long)pos, shmq_errdetail());
		pos += v.size;
	}
	if (shmq__spill_flush(log))
		bail("dead: flush: %s", shmq_errdetail());
	shmq__spill_close(log);
	shmq__segment_detach(&map);
}

static void test_dead_spiller(void)
{
	static uint8_t buf[1024];
	shmq_consumer_t *slow;
	shmq_producer_t *p;
	struct expect e;
	uint32_t seq = 0, full, i;
	int rc = 0;

	create("dead", 0);
	slow = consumer("dead", "slow", SHMQ_FROM_EARLIEST);
	p = producer("dead");
	/* Nothing in flight: the kill itself changes nothing here. */
	tu_shmqd_stop(daemon_pid, 1);
	/* With nobody to spill, "slow" holds the ring: fill it. */
	for (;;) {
		size_t len = make_value(0, seq, buf);

		rc = shmq_send(p, 0, NULL, 0, buf, len, 0, NULL);
		if (rc)
			break;
		seq++;
	}
	if (rc != -EAGAIN)
		bail("dead: filling the ring: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	full = seq;
	leave_killed_pass("dead", 0, true);
	daemon_pid = tu_shmqd_start(dir, NULL);

	/* Two more rings, each send given 5 s: room must come. */
	for (i = 0; i < 2 * full; i++) {
		size_t len = make_value(0, seq, buf);

		rc = shmq_send(p, 0, NULL, 0, buf, len, 5000, NULL);
		if (rc)
			break;
		seq++;
	}
	is_int(rc, 0, "dead: after a restart over a killed spill pass, producers on the full ring get room (%u of %u sent; %s)",
	       seq - full, 2 * full, shmq_errdetail());
	memset(&e, 0, sizeof(e));
	drain(slow, &e, 500, UINT64_MAX);
	ok(e.got == seq && e.next[0] == seq && e.bad == 0 && e.dup_or_gap == 0 &&
	   shmq__consumer_disk_reads(slow) >= full,
	   "dead: the stopped group got all %u messages once, in order, the first %u through the killed pass's log (%llu, %u bad, %u out of order, %llu from disk)",
	   seq, full, (unsigned long long)e.got, e.bad, e.dup_or_gap,
	   (unsigned long long)shmq__consumer_disk_reads(slow));
	shmq_producer_close(p);
	shmq_consumer_close(slow);

	/*
	 * Killed before its flush instead, with the ring half full; then the
	 * group catches up and keeps up.  Nothing is left to spill, and the
	 * dead pass's hazard must not hold the producers a ring later.
	 */
	create("dead2", 0);
	slow = consumer("dead2", "g", SHMQ_FROM_EARLIEST);
	p = producer("dead2");
	memset(&e, 0, sizeof(e));
	tu_shmqd_stop(daemon_pid, 1);
	for (seq = 0; seq < full / 2; seq++)
		if ((rc = shmq_send(p, 0, NULL, 0, buf, make_value(0, seq, buf), 0, NULL)))
			bail("dead2: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	leave_killed_pass("dead2", 0, false);
	daemon_pid = tu_shmqd_start(dir, NULL);
	for (i = 0; i < 3 * full; i++) {
		rc = shmq_send(p, 0, NULL, 0, buf, make_value(0, seq, buf), 5000, NULL);
		if (rc)
			break;
		seq++;
		if ((i & 15) == 0)
			drain(slow, &e, 0, UINT64_MAX);
	}
	is_int(rc, 0, "dead2: a group that keeps up after a restart over a killed spill pass: producers get room (%u of %u sent; %s)",
	       i, 3 * full, shmq_errdetail());
	drain(slow, &e, 500, UINT64_MAX);
	ok(e.got == seq && e.next[0] == seq && e.bad == 0 && e.dup_or_gap == 0,
	   "dead2: and it got all %u messages once, in order (%llu, %u bad, %u out of order)",
	   seq, (unsigned long long)e.got, e.bad, e.dup_or_gap);
	shmq_producer_close(p);
	shmq_consumer_close(slow);
}

static void test_host(void)
{
	struct shmq_msg m;
	shmq_consumer_t *g;
	shmq_producer_t *p;
	struct expect e;
	uint64_t last_off[NPART] = { 0 }, off;
	uint32_t seq[NPART] = { 0 }, n = 3000, i, committed_n = 0;
	int rc;

	create("host", SHMQ_SPILL_ALWAYS);
	g = consumer("host", "g", SHMQ_FROM_EARLIEST);
	{
		struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
		shmq_consumer_t *pg;

		/* A partitioned group, to come back partitioned. */
		o.mode = SHMQ_GROUP_PARTITIONED;
		if (shmq_consumer_open(cl, "host", "pg", &o, &pg))
			bail("host: partitioned group: %s", shmq_errdetail());
		shmq_consumer_commit(pg);
		shmq_consumer_close(pg);
	}
	p = producer("host");
	for (i = 0; i < n; i++) {
		uint32_t part = i % NPART;

		last_off[part] = send_one(p, part, seq[part]++);
	}
	rc = shmq_producer_flush(p, 10000);
	is_int(rc, 0, "host: a durable acknowledgement for %u messages", n);

	/* Consume and commit a third, as a member would. */
	memset(&e, 0, sizeof(e));
	drain(g, &e, 200, n / 3);
	committed_n = (uint32_t)e.got;
	shmq_consumer_release(g);
	shmq_consumer_commit(g);
	shmq_consumer_close(g);
	shmq_producer_close(p);

	/* Power off: shmqd stops (it checkpoints), the segments vanish. */
	tu_shmqd_stop(daemon_pid, 0);
	{
		char seg[SHMQ_SEGNAME_MAX];
		uint64_t ns;

		shmq__namespace_id(dir, &ns);
		shmq__segment_name(ns, "host", seg);
		ok(shm_unlink(seg) == 0, "host: the segment is gone (%s)", seg);
	}
	daemon_pid = tu_shmqd_start(dir, NULL);

	g = consumer("host", "g", SHMQ_FROM_COMMITTED);
	{
		struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
		shmq_consumer_t *pg = NULL;

		o.mode = SHMQ_GROUP_PARTITIONED;
		rc = shmq_consumer_open(cl, "host", "pg", &o, &pg);
		is_int(rc, 0, "host: the partitioned group came back partitioned (%s)", shmq_errdetail());
		shmq_consumer_close(pg);
	}
	drain(g, &e, 500, UINT64_MAX);
	for (i = 0; i < NPART; i++)
		if (e.next[i] != seq[i])
			e.dup_or_gap++;
	ok(e.got == n && e.bad == 0 && e.dup_or_gap == 0,
	   "host: after the restart the group replayed exactly the %u messages it had not committed (%llu in all, %u bad, %u out of order)",
	   n - committed_n, (unsigned long long)e.got, e.bad, e.dup_or_gap);

	p = producer("host");
	off = send_one(p, 0, seq[0]++);
	ok(off > last_off[0], "host: offsets continue after the journal (%llu after %llu)",
	   (unsigned long long)off, (unsigned long long)last_off[0]);
	rc = shmq_consumer_poll(g, &m, 1000);
	ok(rc == 0 && m.offset == off && check_value(&m) == (long)seq[0] - 1,
	   "host: and the group receives the new message at that offset");
	shmq_producer_close(p);
	shmq_consumer_close(g);
}

static void test_time(void)
{
	shmq_consumer_t *slow, *c;
	shmq_producer_t *p;
	struct shmq_msg m;
	uint64_t t_mid = 0;
	uint32_t i, n = 8000, mid = 2000;
	int rc;

	create("time", 0);
	slow = consumer("time", "slow", SHMQ_FROM_EARLIEST); /* makes it spill */
	p = producer("time");
	for (i = 0; i < n; i++) {
		if (i == mid) {
			usleep(2000);
			t_mid = shmq__now_ns();
		}
		send_one(p, 0, i);
	}
	c = consumer("time", "reader", SHMQ_FROM_LATEST);
	rc = shmq_consumer_seek_time(c, 0, t_mid);
	is_int(rc, 0, "time: seek by a timestamp that lies on disk");
	rc = shmq_consumer_poll(c, &m, 1000);
	ok(rc == 0 && check_value(&m) == mid && m.timestamp_ns >= t_mid,
	   "time: it lands on the first message at or after that time (seq %ld)",
	   rc ? -1 : check_value(&m));
	rc = shmq_consumer_seek_time(c, 0, shmq__now_ns() + 1000000000ull);
	rc = rc ? rc : shmq_consumer_poll(c, &m, 0);
	is_int(rc, -EAGAIN, "time: a timestamp in the future lands after the last message");
	shmq_producer_close(p);
	shmq_consumer_close(c);
	shmq_consumer_close(slow);
}

/*
 * A spilled frame whose bytes rot on disk is never delivered: the reader
 * gets SHMQ_ECORRUPT with its offset, and then everything after it.
 */
static void test_corrupt(void)
{
	char path[512];
	struct shmq_msg m;
	shmq_consumer_t *slow;
	shmq_producer_t *p;
	uint32_t i, n = 3000, after = 0, bad = 0;
	uint64_t first_off;
	long seq;
	FILE *f;
	int rc, c;

	create("rot", 0);
	slow = consumer("rot", "slow", SHMQ_FROM_EARLIEST);
	p = producer("rot");
	first_off = send_one(p, 0, 0);
	for (i = 1; i < n; i++)
		send_one(p, 0, i);
	/* Wait until the first message is on disk and out of the ring. */
	for (i = 0; i < 200; i++) {
		struct shmq_topic_stat *st;
		uint64_t tail = 0;

		if (shmq_topic_stat(cl, "rot", &st) == 0) {
			tail = st->partitions[0].first_offset;
			shmq_topic_stat_free(st);
		}
		if (tail > first_off)
			break;
		usleep(10000);
	}
	/* Flip a byte inside the first frame's 16-byte value, first segment. */
	snprintf(path, sizeof(path), "%s/spill/rot/0/%020llu.seg", dir,
		 (unsigned long long)first_off);
	f = fopen(path, "r+b");
	ok(f != NULL, "corrupt: the first spill segment is %s", path);
	if (f) {
		fseek(f, 64 + 32 + 10, SEEK_SET);
		c = fgetc(f);
		fseek(f, 64 + 32 + 10, SEEK_SET);
		fputc(c ^ 0x10, f);
		fclose(f);
	}
	rc = shmq_consumer_poll(slow, &m, 1000);
	ok(rc == SHMQ_ECORRUPT && m.partition == 0 && m.offset == first_off,
	   "corrupt: the damaged message is not delivered; the reader gets SHMQ_ECORRUPT at its offset (%s, offset %llu)",
	   shmq_strerror(rc), (unsigned long long)m.offset);
	while ((rc = shmq_consumer_poll(slow, &m, 300)) == 0) {
		seq = check_value(&m);
		if (seq != (long)after + 1)
			bad++;
		after = (uint32_t)seq;
	}
	ok(after == n - 1 && bad == 0,
	   "corrupt: then every later message arrives, in order, intact (up to seq %u, %u bad)",
	   after, bad);
	shmq_producer_close(p);
	shmq_consumer_close(slow);
}

/*
 * Offsets every group consumed before anything had to go to disk are a gap
 * in the spill files: seeking back into them is SHMQ_EGONE, never a silent
 * skip; a group that stopped later still gets all of its messages.
 */
static void test_gap(void)
{
	shmq_consumer_t *a, *b;
	shmq_producer_t *p;
	struct expect ea, eb;
	uint64_t first;
	uint32_t i, n1 = 300, n2 = 6000;
	int rc;

	create("gap", 0);
	a = consumer("gap", "a", SHMQ_FROM_EARLIEST);
	b = consumer("gap", "b", SHMQ_FROM_EARLIEST);
	p = producer("gap");
	memset(&ea, 0, sizeof(ea));
	memset(&eb, 0, sizeof(eb));
	/* Both keep up: nothing has to go to disk. */
	first = send_one(p, 0, 0);
	for (i = 1; i < n1; i++) {
		send_one(p, 0, i);
		if ((i & 15) == 0) {
			drain(a, &ea, 0, UINT64_MAX);
			drain(b, &eb, 0, UINT64_MAX);
		}
	}
	drain(a, &ea, 100, UINT64_MAX);
	drain(b, &eb, 100, UINT64_MAX);
	/* b stops; a keeps up while many rings go by and b's part spills. */
	for (; i < n1 + n2; i++) {
		send_one(p, 0, i);
		if ((i & 15) == 0)
			drain(a, &ea, 0, UINT64_MAX);
	}
	drain(a, &ea, 200, UINT64_MAX);
	rc = shmq_consumer_seek(a, 0, first);
	is_int(rc, SHMQ_EGONE, "gap: seeking back to offsets every group consumed before spilling began: SHMQ_EGONE (%s)",
	       shmq_errdetail());
	drain(b, &eb, 500, UINT64_MAX);
	ok(eb.got == n1 + n2 && eb.bad == 0 && eb.dup_or_gap == 0,
	   "gap: the group that stopped later got all %u messages, in order (%llu, %u bad, %u out of order)",
	   n1 + n2, (unsigned long long)eb.got, eb.bad, eb.dup_or_gap);
	shmq_producer_close(p);
	shmq_consumer_close(a);
	shmq_consumer_close(b);
}

int main(void)
{
	tu_init(240);
	plan(25);
	tu_make_dir("replay", dir, sizeof(dir));
	daemon_pid = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);

	test_stopped();
	test_kill("kill", NULL);
	{
		static const char *const small[] = { "--spill-segment-bytes", "65536", NULL };

		test_kill("kill-rolling", small);
	}
	test_dead_spiller();
	test_host();
	test_time();
	test_corrupt();
	test_gap();

	shmq_close(cl);
	tu_shmqd_stop(daemon_pid, 0);
	tu_cleanup(dir);
	return tap_done();
}
