/*
 * checkpoint.c - group committed offsets on disk: DIR/spill/<topic>/groups.
 *
 * Overview
 * --------
 * The committed offsets of a topic's groups live in shared memory, which a
 * host restart loses.  shmqd writes them to a small file per topic now and
 * then (and at shutdown); after a host restart each group replays what was
 * spilled from its checkpointed offset.  The periodic writes run in a
 * thread of their own (checkpointer.c), which writes one topic at a time:
 * this file assumes one writer per topic and does not lock.  A checkpoint lags the groups'
 * real progress, so replay after a crash may deliver again what was
 * processed after the last checkpoint: at-least-once, never a gap.
 *
 * Two files hold the newest two checkpoints:
 *
 *   DIR/spill/<topic>/groups       the newest
 *   DIR/spill/<topic>/groups.prev  the one before
 *   DIR/spill/<topic>/groups.tmp   a write in progress (ignored by readers)
 *
 * On-disk format (little-endian)
 * ------------------------------
 *   0      8      12     16            24            32            40
 *   +------+------+------+-------------+-------------+-------------+
 *   |magic |vers. |hdr=64| generation  | written_ns  | total_bytes |
 *   +------+------+------+-------------+-------------+-------------+
 *   40     44     48            56       60     64
 *   +------+------+-------------+--------+------+
 *   |groups| rsvd | topic_id    |body_crc| crc  |   crc = CRC-32C(0..59)
 *   +------+------+-------------+--------+------+   body_crc = CRC-32C(64..)
 *   64: per group, back to back:
 *   +------------------------------+-------+------+----------------------+
 *   | name, NUL-padded (72 bytes)  | parts | mode | committed[parts] u64 |
 *   +------------------------------+-------+------+----------------------+
 *   0                              72      76     80
 *
 * magic is "shmqgrp1"; total_bytes is the file's length, so a file cut
 * short is told from a whole one before any checksum is computed.
 *
 * Invariants
 * ----------
 * - A write never modifies a file a reader may use: it writes groups.tmp,
 *   fsyncs it, moves a valid "groups" to "groups.prev", renames the
 *   temporary to "groups" and fsyncs the directory.
 * - Generations grow: a write uses one more than the greatest valid
 *   generation on disk, so the newer of the two files is always known,
 *   whatever order the renames reached the disk in.
 * - A "groups" that is not valid is never moved over "groups.prev": the
 *   previous good checkpoint is kept until a new good one is in place.
 *
 * Failure and recovery
 * --------------------
 * A crash before the first rename leaves the old pair (and a stale
 * temporary, removed by the next write).  A crash between the renames
 * leaves only groups.prev, which readers then use.  A torn or bit-flipped
 * file fails its length or checksum: the reader reports it (struct
 * shmq_ckpt_report) and uses the other file, or none.  Errors of write,
 * fsync and rename (through the fault wrappers) are returned as -errno
 * with a detail; the temporary is removed.
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
#include "spill.h"

#define CKPT_VERSION	  1u
#define CKPT_HEADER	  64u
#define CKPT_NAME_BYTES	  (SHMQ_NAME_MAX + 8)
#define CKPT_GROUP_FIXED  (CKPT_NAME_BYTES + 8)
/* Groups a checkpoint may name: far more than SHMQ_MAX_GROUPS, so that a
 * later limit still reads, yet small enough to bound what a reader does. */
#define CKPT_GROUPS_MAX	  4096u

struct ckpt_header {
	uint64_t magic;
	uint32_t version;
	uint32_t header_bytes;
	uint64_t generation;
	uint64_t written_ns;
	uint64_t total_bytes;
	uint32_t group_count;
	uint32_t reserved;
	uint64_t topic_id;
	uint32_t body_crc;
	uint32_t crc;
};
_Static_assert(sizeof(struct ckpt_header) == CKPT_HEADER, "checkpoint header");
_Static_assert(offsetof(struct ckpt_header, body_crc) == 56, "body crc");

struct ckpt_group_rec {
	char name[CKPT_NAME_BYTES];
	uint32_t partitions;
	uint32_t mode; /* enum shmq_group_mode; 0 in files that predate it */
};
_Static_assert(sizeof(struct ckpt_group_rec) == CKPT_GROUP_FIXED, "group record");

void shmq__checkpoint_free(struct shmq_ckpt *cp)
{
	uint32_t i;

	if (!cp)
		return;
	for (i = 0; cp->groups && i < cp->group_count; i++)
		free(cp->groups[i].committed);
	free(cp->groups);
	free(cp);
}

int shmq__checkpoint_decode(const void *buf, size_t len, struct shmq_ckpt **out)
{
	const uint8_t *p = buf;
	struct ckpt_header h;
	struct shmq_ckpt *cp;
	size_t at = CKPT_HEADER;
	uint32_t i, j;

	if (len < CKPT_HEADER)
		return SHMQ_ECORRUPT; /* torn */
	memcpy(&h, p, sizeof(h));
	if (h.magic != SHMQ_CKPT_MAGIC)
		return SHMQ_EMAGIC;
	if (h.crc != shmq__crc32c(0, &h, offsetof(struct ckpt_header, crc)))
		return SHMQ_ECORRUPT;
	if (h.version != CKPT_VERSION)
		return SHMQ_EVERSION;
	if (h.header_bytes != CKPT_HEADER || h.total_bytes != len ||
	    h.group_count > CKPT_GROUPS_MAX)
		return SHMQ_ECORRUPT;
	if (h.body_crc != shmq__crc32c(0, p + CKPT_HEADER, len - CKPT_HEADER))
		return SHMQ_ECORRUPT;

	cp = calloc(1, sizeof(*cp));
	if (!cp)
		return -ENOMEM;
	cp->generation = h.generation;
	cp->written_ns = h.written_ns;
	cp->topic_id = h.topic_id;
	if (h.group_count) {
		cp->groups = calloc(h.group_count, sizeof(*cp->groups));
		if (!cp->groups) {
			free(cp);
			return -ENOMEM;
		}
	}
	for (i = 0; i < h.group_count; i++) {
		struct shmq_ckpt_group *g = &cp->groups[i];
		struct ckpt_group_rec rec;

		cp->group_count = i + 1; /* so that free sees what is allocated */
		if (len - at < sizeof(rec))
			goto corrupt;
		memcpy(&rec, p + at, sizeof(rec));
		at += sizeof(rec);
		if (!memchr(rec.name, '\0', sizeof(rec.name)) ||
		    strlen(rec.name) > SHMQ_NAME_MAX || !shmq__name_valid(rec.name) ||
		    rec.partitions > SHMQ_MAX_PARTITIONS ||
		    (len - at) / sizeof(uint64_t) < rec.partitions)
			goto corrupt;
		for (j = 0; j < i; j++) {
			if (!strcmp(cp->groups[j].name, rec.name))
				goto corrupt;
		}
		memcpy(g->name, rec.name, strlen(rec.name) + 1);
		g->partitions = rec.partitions;
		g->mode = rec.mode;
		g->committed = calloc(rec.partitions ? rec.partitions : 1, sizeof(uint64_t));
		if (!g->committed) {
			shmq__checkpoint_free(cp);
			return -ENOMEM;
		}
		memcpy(g->committed, p + at, rec.partitions * sizeof(uint64_t));
		at += rec.partitions * sizeof(uint64_t);
	}
	if (at != len)
		goto corrupt;
	*out = cp;
	return 0;
corrupt:
	shmq__checkpoint_free(cp);
	return SHMQ_ECORRUPT;
}

/* Open DIR/spill/<topic> (see shmq__spill_open_dir). */
static int open_topic_dir(const char *dir, const char *topic, bool create)
{
	const char *comp[2] = { SHMQ_SPILL_DIRNAME, topic };

	return shmq__spill_open_dir(dir, comp, 2, create, 0600);
}

/* Read and decode one checkpoint file.  Returns 0 and *out, or why not. */
static int read_one(int dfd, const char *name, struct shmq_ckpt **out)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0, len;
	int fd, r;

	fd = shmq__fault_openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return SHMQ_ECORRUPT;
	}
	if ((uint64_t)st.st_size > SHMQ_CKPT_MAX) {
		close(fd);
		return SHMQ_ECORRUPT;
	}
	len = (size_t)st.st_size;
	buf = malloc(len + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	r = shmq__checkpoint_decode(buf, got, out);
	free(buf);
	return r;
}

int shmq__checkpoint_read(const char *dir, const char *topic,
			  struct shmq_ckpt **out, struct shmq_ckpt_report *rep)
{
	struct shmq_ckpt_report local;
	struct shmq_ckpt *cur = NULL, *prev = NULL;
	int dfd;

	if (!rep)
		rep = &local;
	rep->current = rep->previous = -ENOENT;
	rep->used = -1;
	if (!shmq__name_valid(topic))
		return shmq__fail(-EINVAL, "invalid topic name");
	dfd = open_topic_dir(dir, topic, false);
	if (dfd < 0)
		return dfd == -ENOENT ? -ENOENT : dfd;
	rep->current = read_one(dfd, SHMQ_CKPT_FILE, &cur);
	rep->previous = read_one(dfd, SHMQ_CKPT_PREV, &prev);
	close(dfd);
	if (rep->current == -ENOMEM || rep->previous == -ENOMEM) {
		shmq__checkpoint_free(cur);
		shmq__checkpoint_free(prev);
		return -ENOMEM;
	}
	/* The newer valid one; "groups" wins a tie. */
	if (cur && (!prev || cur->generation >= prev->generation)) {
		shmq__checkpoint_free(prev);
		rep->used = 0;
		*out = cur;
		return 0;
	}
	if (prev) {
		shmq__checkpoint_free(cur);
		rep->used = 1;
		*out = prev;
		return 0;
	}
	if (rep->current == -ENOENT && rep->previous == -ENOENT)
		return -ENOENT;
	return shmq__fail(SHMQ_ECORRUPT, "%s/%s/%s: no valid checkpoint (%s: %s, %s: %s)",
			  dir, SHMQ_SPILL_DIRNAME, topic, SHMQ_CKPT_FILE,
			  shmq_strerror(rep->current), SHMQ_CKPT_PREV,
			  shmq_strerror(rep->previous));
}

/* Build the file image of cp with generation gen.  Returns its length. */
static int encode(const struct shmq_ckpt *cp, uint64_t gen, uint8_t **out,
		  size_t *len_out)
{
	struct ckpt_header h;
	size_t len = CKPT_HEADER, at = CKPT_HEADER;
	uint8_t *buf;
	uint32_t i;

	if (cp->group_count > CKPT_GROUPS_MAX || (cp->group_count && !cp->groups))
		return -EINVAL;
	for (i = 0; i < cp->group_count; i++) {
		const struct shmq_ckpt_group *g = &cp->groups[i];

		if (!shmq__name_valid(g->name) || g->partitions > SHMQ_MAX_PARTITIONS ||
		    (g->partitions && !g->committed))
			return -EINVAL;
		len += CKPT_GROUP_FIXED + (size_t)g->partitions * sizeof(uint64_t);
	}
	buf = calloc(1, len);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < cp->group_count; i++) {
		const struct shmq_ckpt_group *g = &cp->groups[i];
		struct ckpt_group_rec rec;

		memset(&rec, 0, sizeof(rec));
		memcpy(rec.name, g->name, strlen(g->name));
		rec.partitions = g->partitions;
		rec.mode = g->mode;
		memcpy(buf + at, &rec, sizeof(rec));
		at += sizeof(rec);
		if (g->partitions)
			memcpy(buf + at, g->committed, g->partitions * sizeof(uint64_t));
		at += g->partitions * sizeof(uint64_t);
	}
	memset(&h, 0, sizeof(h));
	h.magic = SHMQ_CKPT_MAGIC;
	h.version = CKPT_VERSION;
	h.header_bytes = CKPT_HEADER;
	h.generation = gen;
	h.written_ns = shmq__now_ns();
	h.total_bytes = len;
	h.group_count = cp->group_count;
	h.topic_id = cp->topic_id;
	h.body_crc = shmq__crc32c(0, buf + CKPT_HEADER, len - CKPT_HEADER);
	h.crc = shmq__crc32c(0, &h, offsetof(struct ckpt_header, crc));
	memcpy(buf, &h, sizeof(h));
	*out = buf;
	*len_out = len;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = shmq__fault_write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int shmq__checkpoint_write(const char *dir, const char *topic,
			   const struct shmq_ckpt *cp)
{
	struct shmq_ckpt *cur = NULL, *prev = NULL;
	uint64_t gen = 0;
	const char *step;
	uint8_t *buf = NULL;
	size_t len = 0;
	bool cur_valid;
	int dfd, fd = -1, r;

	if (!shmq__name_valid(topic))
		return shmq__fail(-EINVAL, "invalid topic name");
	dfd = open_topic_dir(dir, topic, true);
	if (dfd < 0)
		return dfd;

	/* The next generation, and whether "groups" is worth keeping. */
	r = read_one(dfd, SHMQ_CKPT_FILE, &cur);
	cur_valid = r == 0;
	if (cur_valid)
		gen = cur->generation;
	if (read_one(dfd, SHMQ_CKPT_PREV, &prev) == 0 && prev->generation > gen)
		gen = prev->generation;
	shmq__checkpoint_free(cur);
	shmq__checkpoint_free(prev);

	r = encode(cp, gen + 1, &buf, &len);
	if (r < 0) {
		close(dfd);
		return shmq__fail(r, "%s/%s/%s: %s", dir, SHMQ_SPILL_DIRNAME, topic,
				  r == -EINVAL ? "invalid checkpoint" : strerror(-r));
	}

	/* A stale temporary is a crashed write's: ours to remove. */
	unlinkat(dfd, SHMQ_CKPT_TMP, 0);
	step = "create";
	fd = shmq__fault_openat(dfd, SHMQ_CKPT_TMP,
				O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		goto fail_errno;
	step = "write";
	r = write_all(fd, buf, len);
	if (r < 0)
		goto fail;
	step = "fsync";
	if (shmq__fault_fsync(fd) < 0)
		goto fail_errno;
	close(fd);
	fd = -1;
	if (cur_valid) {
		step = "rename to " SHMQ_CKPT_PREV;
		if (shmq__fault_renameat(dfd, SHMQ_CKPT_FILE, dfd, SHMQ_CKPT_PREV) < 0)
			goto fail_errno;
	}
	step = "rename";
	if (shmq__fault_renameat(dfd, SHMQ_CKPT_TMP, dfd, SHMQ_CKPT_FILE) < 0)
		goto fail_errno;
	step = "fsync of the directory";
	if (shmq__fault_fsync(dfd) < 0) {
		/* Both renames happened; only their durability is in doubt. */
		r = -errno;
		goto fail_kept;
	}
	free(buf);
	close(dfd);
	return 0;

fail_errno:
	r = -errno;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(dfd, SHMQ_CKPT_TMP, 0);
fail_kept:
	free(buf);
	close(dfd);
	return shmq__fail(r, "%s/%s/%s: checkpoint %s: %s", dir, SHMQ_SPILL_DIRNAME,
			  topic, step, strerror(-r));
}
