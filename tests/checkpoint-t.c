/*
 * checkpoint-t.c - group offset checkpoints (libshmq/checkpoint.c).
 *
 * Round trips, then every way a checkpoint file can go bad on disk (cut at
 * each length, a flipped bit anywhere, a crash between the two renames, a
 * failing write, fsync or rename) and what the reader then uses.  Each
 * checkpoint's offsets are derived from its generation, so the test always
 * knows which one it got back.
 *
 * Then the checkpointer (libshmq/checkpointer.c), the thread shmqd writes
 * checkpoints in; built for `make check-tsan` too.  Three topics get 200
 * snapshots each, handed over as fast as the main thread can while every
 * fsync is 2 ms late and the main thread reads the files: no write fails,
 * a topic's writes come in the order of their snapshots (what is read
 * never goes back), newer snapshots replace waiting ones (fewer writes
 * than snapshots), and after quiescing, a write of the owner's own is the
 * one read.  A failing rename comes back as the result, with its detail.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "shmq_int.h"
#include "spill.h"
#include "tap.h"
#include "testutil.h"

#define NTESTS 48
#define TOPIC "payments"
#define GROUPS 3
#define PARTS 4

static char dir[256];

/* A checkpoint whose offsets say which one it is (tag). */
static struct shmq_ckpt *make(uint64_t tag)
{
	static const char *names[GROUPS] = { "billing", "audit.v2", "x" };
	struct shmq_ckpt *cp = calloc(1, sizeof(*cp));
	int g, p;

	cp->topic_id = 0xfeed;
	cp->group_count = GROUPS;
	cp->groups = calloc(GROUPS, sizeof(*cp->groups));
	for (g = 0; g < GROUPS; g++) {
		strcpy(cp->groups[g].name, names[g]);
		cp->groups[g].partitions = g == 2 ? 0 : PARTS;
		cp->groups[g].committed = calloc(PARTS, sizeof(uint64_t));
		for (p = 0; p < PARTS; p++)
			cp->groups[g].committed[p] = tag * 1000000 + (uint64_t)g * 1000 + (uint64_t)p * 32;
	}
	return cp;
}

/* Is got the checkpoint make(tag) made? */
static int same(const struct shmq_ckpt *got, uint64_t tag)
{
	struct shmq_ckpt *want = make(tag);
	int g, p, eq = got->group_count == want->group_count && got->topic_id == want->topic_id;

	for (g = 0; eq && g < GROUPS; g++) {
		eq = !strcmp(got->groups[g].name, want->groups[g].name) &&
		     got->groups[g].partitions == want->groups[g].partitions;
		for (p = 0; eq && p < (int)want->groups[g].partitions; p++)
			eq = got->groups[g].committed[p] == want->groups[g].committed[p];
	}
	shmq__checkpoint_free(want);
	return eq;
}

static int put(uint64_t tag)
{
	struct shmq_ckpt *cp = make(tag);
	int rc = shmq__checkpoint_write(dir, TOPIC, cp);

	shmq__checkpoint_free(cp);
	return rc;
}

/* Read and say which tag came back: -1 on error (rc in *rcp). */
static long long got_tag(struct shmq_ckpt_report *rep, int *rcp)
{
	struct shmq_ckpt *cp = NULL;
	long long tag = -1;
	int rc = shmq__checkpoint_read(dir, TOPIC, &cp, rep);

	if (rcp)
		*rcp = rc;
	if (rc == 0) {
		tag = (long long)(cp->groups[0].committed[0] / 1000000);
		if (!same(cp, (uint64_t)tag))
			tag = -2;
		shmq__checkpoint_free(cp);
	}
	return tag;
}

/* The tag of topic's checkpoint (-1: none, -2: not one of make's). */
static long long tag_of(const char *topic, uint64_t *gen)
{
	struct shmq_ckpt *cp = NULL;
	long long tag = -1;

	if (shmq__checkpoint_read(dir, topic, &cp, NULL) == 0) {
		tag = (long long)(cp->groups[0].committed[0] / 1000000);
		if (!same(cp, (uint64_t)tag))
			tag = -2;
		if (gen)
			*gen = cp->generation;
		shmq__checkpoint_free(cp);
	}
	return tag;
}

/* Wait (at most 5 s) for a result of slot s. */
static bool result_of(struct shmq_checkpointer_slot *s, struct shmq_checkpointer_result *r)
{
	int i;

	for (i = 0; i < 5000; i++) {
		if (shmq__checkpointer_poll(s, r))
			return true;
		usleep(1000);
	}
	return false;
}

static void test_checkpointer(void)
{
	static const char *const topics[] = { "ck.a", "ck.b", "ck.c" };
	struct shmq_checkpointer_slot *slot[3];
	struct shmq_checkpointer_result r;
	struct shmq_checkpointer *w;
	long long seen[3] = { -1, -1, -1 }, t;
	uint64_t tag, gen[3] = { 0 };
	int i, failed = 0, back = 0, torn = 0, order = 0, rc;

	memset(&r, 0, sizeof(r));

	rc = shmq__checkpointer_start(dir, &w);
	if (rc)
		bail("checkpointer: %s", shmq_errdetail());
	for (i = 0; i < 3; i++)
		if (shmq__checkpointer_slot_new(w, topics[i], &slot[i]))
			bail("slot");
	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_FSYNC, 1, 2, SHMQ_FAULT_STICKY | SHMQ_FAULT_DELAY);
	for (tag = 1; tag <= 200; tag++) {
		for (i = 0; i < 3; i++) {
			shmq__checkpointer_submit(slot[i], make(tag), tag);
			if (shmq__checkpointer_poll(slot[i], &r)) {
				failed += r.err != 0;
				order += r.tag > tag;
			}
			t = tag_of(topics[i], NULL);
			torn += t == -2;
			back += t < seen[i];
			if (t > seen[i])
				seen[i] = t;
		}
		usleep(500); /* a few snapshots per write */
	}
	for (i = 0; i < 3; i++) {
		shmq__checkpointer_quiesce(slot[i]);
		if (shmq__checkpointer_poll(slot[i], &r))
			failed += r.err != 0;
		t = tag_of(topics[i], &gen[i]);
		back += t < seen[i];
	}
	shmq__fault_disarm();
	ok(failed == 0 && torn == 0, "checkpointer: 600 snapshots of 3 topics, every fsync 2 ms late: no write failed, no file read torn");
	ok(back == 0 && order == 0,
	   "checkpointer: what is read of a topic never goes back to an older snapshot");
	ok(gen[0] < 200 && gen[1] < 200 && gen[2] < 200 && gen[0] > 0,
	   "checkpointer: waiting snapshots were replaced by newer ones (%llu, %llu, %llu writes of 200)",
	   (unsigned long long)gen[0], (unsigned long long)gen[1], (unsigned long long)gen[2]);
	for (i = 0, rc = 0; i < 3; i++) {
		struct shmq_ckpt *cp = make(1000);

		rc |= shmq__checkpoint_write(dir, topics[i], cp);
		shmq__checkpoint_free(cp);
		rc |= tag_of(topics[i], NULL) != 1000;
	}
	is_int(rc, 0, "checkpointer: after quiescing, the owner's own write is what is read");

	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_RENAME, 1, EIO, SHMQ_FAULT_STICKY);
	shmq__checkpointer_submit(slot[0], make(1001), 1001);
	rc = result_of(slot[0], &r);
	ok(rc && r.err == -EIO && r.tag == 1001 && strstr(r.detail, "rename"),
	   "checkpointer: a failed rename is the result, with its detail (%s: %s)",
	   rc ? shmq_strerror(r.err) : "none", rc ? r.detail : "");
	shmq__checkpointer_quiesce(slot[0]);
	shmq__fault_disarm();
	shmq__checkpointer_submit(slot[0], make(1002), 1002);
	ok(result_of(slot[0], &r) && r.err == 0 && r.tag == 1002 && tag_of(topics[0], NULL) == 1002,
	   "checkpointer: the next write succeeds");

	/*
	 * Freed with snapshots handed over: the one being written (if the
	 * thread took 1003 already) finishes, the waiting one is dropped and
	 * freed (the sanitizer builds see a leak).
	 */
	shmq__checkpointer_quiesce(slot[1]);
	shmq__checkpointer_submit(slot[1], make(1003), 1003);
	shmq__checkpointer_submit(slot[1], make(1004), 1004);
	for (i = 0; i < 3; i++)
		shmq__checkpointer_slot_free(slot[i]);
	t = tag_of(topics[1], NULL);
	ok(t == 1000 || t == 1003 || t == 1004,
	   "checkpointer: a slot freed with snapshots handed over leaves a whole checkpoint (%lld)", t);
	shmq__checkpointer_stop(w);
}

static void path_of(const char *name, char *buf, size_t n)
{
	snprintf(buf, n, "%s/spill/%s/%s", dir, TOPIC, name);
}

static uint8_t *slurp(const char *name, size_t *len)
{
	char path[512];
	struct stat st;
	uint8_t *buf;
	int fd;

	path_of(name, path, sizeof(path));
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		bail("open %s: %s", path, strerror(errno));
	buf = malloc((size_t)st.st_size + 1);
	if (pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
		bail("read %s", path);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void spit(const char *name, const void *p, size_t n)
{
	char path[512];
	int fd;

	path_of(name, path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n))
		bail("write %s", path);
	close(fd);
}

static bool exists(const char *name)
{
	char path[512];

	path_of(name, path, sizeof(path));
	return access(path, F_OK) == 0;
}

int main(void)
{
	struct shmq_ckpt_report rep;
	struct shmq_ckpt *cp = NULL;
	uint8_t *good, *bad;
	size_t len, plen, i, fails;
	int rc;

	tu_init(120);
	plan(NTESTS);
	tu_make_dir("ckpt", dir, sizeof(dir));

	/* Nothing yet. */
	is_int(shmq__checkpoint_read(dir, TOPIC, &cp, &rep), -ENOENT,
	       "no checkpoint yet: -ENOENT");
	ok(rep.used == -1, "and none used");

	/* Round trip. */
	is_int(put(1), 0, "write a checkpoint of 3 groups");
	rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
	ok(rc == 0 && same(cp, 1), "it reads back equal");
	ok(rc == 0 && cp->generation == 1 && cp->written_ns > 0, "generation 1");
	ok(rep.used == 0 && rep.current == 0 && rep.previous == -ENOENT,
	   "from \"groups\"; there is no \"groups.prev\" yet");
	shmq__checkpoint_free(cp);
	is_int(put(2), 0, "write another");
	rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
	ok(rc == 0 && same(cp, 2) && cp->generation == 2 && rep.used == 0 && rep.previous == 0,
	   "the newer one is read; the older one is kept as groups.prev");
	shmq__checkpoint_free(cp);
	ok(!exists(SHMQ_CKPT_TMP), "no temporary is left behind");

	/* Torn: "groups" cut at every length. */
	good = slurp(SHMQ_CKPT_FILE, &len);
	fails = 0;
	for (i = 0; i < len; i++) {
		spit(SHMQ_CKPT_FILE, good, i);
		if (got_tag(&rep, &rc) != 1 || rep.used != 1 || rep.current != SHMQ_ECORRUPT)
			fails++;
	}
	is_int(fails, 0, "groups cut at each of %zu lengths: detected, groups.prev used", len);

	/* Corrupt: each bit of "groups" flipped in turn. */
	fails = 0;
	bad = malloc(len);
	for (i = 0; i < len * 8; i++) {
		memcpy(bad, good, len);
		bad[i / 8] ^= (uint8_t)(1u << (i % 8));
		spit(SHMQ_CKPT_FILE, bad, len);
		if (got_tag(&rep, &rc) != 1 || rep.used != 1 || rep.current >= 0)
			fails++;
	}
	is_int(fails, 0, "each of %zu single-bit flips is detected (checksum), groups.prev used",
	       len * 8);
	memcpy(bad, good, len);
	bad[0] ^= 1;
	spit(SHMQ_CKPT_FILE, bad, len);
	got_tag(&rep, &rc);
	is_int(rep.current, SHMQ_EMAGIC, "a bad magic is SHMQ_EMAGIC");
	memcpy(bad, good, len);
	bad[100] ^= 4;
	spit(SHMQ_CKPT_FILE, bad, len);
	got_tag(&rep, &rc);
	is_int(rep.current, SHMQ_ECORRUPT, "a bad body is SHMQ_ECORRUPT");

	/* A write after a corrupt "groups" keeps the good groups.prev. */
	is_int(put(3), 0, "write over a corrupt \"groups\"");
	is_int(got_tag(&rep, &rc), 3, "the new one is read");
	ok(rep.previous == 0, "groups.prev is still valid");
	{
		struct shmq_ckpt *p = NULL;
		uint8_t *pb = slurp(SHMQ_CKPT_PREV, &plen);

		rc = shmq__checkpoint_decode(pb, plen, &p);
		ok(rc == 0 && same(p, 1) && p->generation == 1,
		   "it is the last good one (generation 1), not the corrupt one");
		shmq__checkpoint_free(p);
		free(pb);
	}
	{
		uint64_t g3;

		rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
		g3 = rc == 0 ? cp->generation : 0;
		shmq__checkpoint_free(cp);
		is_int(put(4), 0, "and the next write");
		rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
		ok(rc == 0 && same(cp, 4) && cp->generation == g3 + 1 && g3 == 2,
		   "generations go on from the greatest valid one (1 -> 2 -> 3)");
		shmq__checkpoint_free(cp);
	}

	/* Both bad. */
	free(good);
	good = slurp(SHMQ_CKPT_FILE, &len);
	spit(SHMQ_CKPT_FILE, good, len / 2);
	{
		uint8_t *pb = slurp(SHMQ_CKPT_PREV, &plen);

		pb[plen - 1] ^= 0x80;
		spit(SHMQ_CKPT_PREV, pb, plen);
		free(pb);
	}
	rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
	ok(rc == SHMQ_ECORRUPT && rep.used == -1, "both torn or corrupt: SHMQ_ECORRUPT (%s)",
	   shmq_errdetail());
	is_int(put(5), 0, "a write after that still succeeds");
	is_int(got_tag(&rep, &rc), 5, "and is read");

	/* A crash between the renames: only groups.prev (and a temporary). */
	is_int(put(6), 0, "write 6");
	free(good);
	good = slurp(SHMQ_CKPT_FILE, &len);
	{
		char a[512], b[512];

		path_of(SHMQ_CKPT_FILE, a, sizeof(a));
		path_of(SHMQ_CKPT_PREV, b, sizeof(b));
		rename(a, b);
		spit(SHMQ_CKPT_TMP, good, len / 3);
	}
	ok(got_tag(&rep, &rc) == 6 && rep.used == 1 && rep.current == -ENOENT,
	   "only groups.prev left: it is used");
	is_int(put(7), 0, "the next write removes the stale temporary and succeeds");
	is_int(got_tag(&rep, &rc), 7, "7 is read");

	/* Faults: every failure leaves the last good checkpoint readable. */
	{
		static const struct {
			enum shmq_fault_op op;
			int err;
			int want;
			const char *what;
		} f[] = {
			{ SHMQ_FAULT_OPEN, EACCES, -EACCES, "creating the temporary" },
			{ SHMQ_FAULT_WRITE, ENOSPC, -ENOSPC, "writing (ENOSPC)" },
			{ SHMQ_FAULT_FSYNC, EIO, -EIO, "fsync of the file" },
			{ SHMQ_FAULT_RENAME, EIO, -EIO, "renaming" },
		};
		size_t k;

		for (k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
			/* Opens: the data dir, spill, the topic, groups, groups.prev,
			 * then the temporary. */
			unsigned long nth = f[k].op == SHMQ_FAULT_OPEN ? 6 : 1;

			shmq__fault_reset();
			shmq__fault_arm(f[k].op, nth, f[k].err, 0);
			rc = put(100 + k);
			shmq__fault_disarm();
			ok(rc == f[k].want && got_tag(&rep, NULL) == 7 && !exists(SHMQ_CKPT_TMP),
			   "%s fails the write (%s); checkpoint 7 is still read", f[k].what,
			   shmq_strerror(rc));
		}
		shmq__fault_reset();
		shmq__fault_arm(SHMQ_FAULT_WRITE, 1, SHMQ_FAULT_SHORT, 0);
		rc = put(8);
		shmq__fault_disarm();
		ok(rc == 0 && got_tag(&rep, NULL) == 8, "a short write is completed");
		shmq__fault_reset();
		shmq__fault_arm(SHMQ_FAULT_FSYNC, 2, EIO, 0);
		rc = put(9);
		shmq__fault_disarm();
		ok(rc == -EIO && got_tag(&rep, NULL) == 9,
		   "a failed fsync of the directory is reported (the renames happened)");
	}

	/* Bad input. */
	{
		struct shmq_ckpt *c = make(10);

		strcpy(c->groups[1].name, "bad/name");
		is_int(shmq__checkpoint_write(dir, TOPIC, c), -EINVAL, "an invalid group name: -EINVAL");
		strcpy(c->groups[1].name, "ok");
		c->groups[1].partitions = SHMQ_MAX_PARTITIONS + 1;
		is_int(shmq__checkpoint_write(dir, TOPIC, c), -EINVAL, "too many partitions: -EINVAL");
		is_int(shmq__checkpoint_write(dir, "../x", c), -EINVAL,
		       "an invalid topic name: -EINVAL");
		shmq__checkpoint_free(c);
		is_int(got_tag(&rep, NULL), 9, "nothing changed");
	}
	{
		struct shmq_ckpt empty = { .topic_id = 1 };

		uint64_t g;

		rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
		g = rc == 0 ? cp->generation : 0;
		shmq__checkpoint_free(cp);
		is_int(shmq__checkpoint_write(dir, TOPIC, &empty), 0, "a checkpoint of no group");
		rc = shmq__checkpoint_read(dir, TOPIC, &cp, &rep);
		ok(rc == 0 && cp->group_count == 0 && cp->generation == g + 1, "reads back empty");
		shmq__checkpoint_free(cp);
	}

	/* Decoding garbage never crashes and never succeeds by accident. */
	{
		uint64_t s = 1;
		size_t n, accepted = 0;

		for (i = 0; i < 20000; i++) {
			struct shmq_ckpt *c = NULL;
			uint8_t buf[256];

			n = (size_t)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 56);
			for (size_t j = 0; j < n; j++)
				buf[j] = (uint8_t)((s = s * 6364136223846793005ull + 1) >> 56);
			if (n >= 8)
				memcpy(buf, &(uint64_t){ SHMQ_CKPT_MAGIC }, 8);
			if (shmq__checkpoint_decode(buf, n, &c) == 0) {
				accepted++;
				shmq__checkpoint_free(c);
			}
		}
		is_int(accepted, 0, "20000 random images are all refused");
	}
	is_int(shmq__checkpoint_read(dir, "nosuch", &cp, &rep), -ENOENT,
	       "a topic with no spill directory: -ENOENT");
	ok(shmq__fault_active == 0, "fault injection disarmed");
	test_checkpointer();

	free(good);
	free(bad);
	tu_cleanup(dir);
	return tap_done();
}
