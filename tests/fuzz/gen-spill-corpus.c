/*
 * gen-spill-corpus.c - write the seed corpus of spill-fuzz.c.
 *
 * Not part of any build: the corpus it writes is committed, and `make
 * check` replays it (build/.../tests/fuzz-spill-t).  Rebuild it after a
 * change of the spill formats with tests/fuzz/gen-spill-corpus.sh.
 *
 * Real files first: segments and indexes written by the library's own
 * writer (shmq__spill_open/append/roll) into a temporary directory, and
 * checkpoints written by shmq__checkpoint_write.  Then broken variants of
 * them: cut at interesting points, bits flipped in each field, garbage
 * after the end, indexes that lie.  Each seed is in the input format that
 * spill-fuzz.c documents: a mode byte, then for segments a 4-byte segment
 * length, the segment and its index.
 *
 * Output is deterministic: the creation times the library writes into
 * segment, index and checkpoint headers are replaced by a fixed one (and
 * the header CRCs recomputed), so that a rebuild changes no seed unless a
 * format changed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmq_int.h"
#include "spill.h"

#define TOPIC "f"

static const char *outdir;
static char tmp[256];

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("gen-spill-corpus: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

struct blob {
	uint8_t *p;
	size_t n;
};

static struct blob slurp(const char *path)
{
	struct blob b = { 0 };
	struct stat st;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("open %s: %s", path, strerror(errno));
	b.n = (size_t)st.st_size;
	b.p = malloc(b.n + 1);
	if (!b.p || pread(fd, b.p, b.n, 0) != (ssize_t)b.n)
		die("read %s", path);
	close(fd);
	return b;
}

static struct blob dup_blob(struct blob b)
{
	struct blob c = { malloc(b.n + 1), b.n };

	memcpy(c.p, b.p, b.n);
	return c;
}

static void put(const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "wb");
	if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f))
		die("write %s", path);
}

/* A segment seed: mode 0, the segment's length, the segment, its index. */
static void put_seg(const char *name, struct blob seg, struct blob idx)
{
	size_t n = 5 + seg.n + idx.n;
	uint8_t *buf = malloc(n);
	uint32_t len = (uint32_t)seg.n;

	buf[0] = 0;
	memcpy(buf + 1, &len, 4);
	memcpy(buf + 5, seg.p, seg.n);
	if (idx.n)
		memcpy(buf + 5 + seg.n, idx.p, idx.n);
	put(name, buf, n);
	free(buf);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void fresh_dir(void)
{
	nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	if (mkdir(tmp, 0700) < 0)
		die("mkdir %s: %s", tmp, strerror(errno));
}

/* Producer id of the next messages (0: none), and their next sequence. */
static uint64_t ext_id, ext_seq;

static void msg(struct shmq_spill_log *log, uint64_t *end, uint16_t klen, uint32_t vlen,
		uint64_t ts)
{
	static uint8_t buf[70000];
	struct shmq_frame_view v;
	uint32_t i;

	for (i = 0; i < klen + vlen && i < sizeof(buf); i++)
		buf[i] = (uint8_t)(*end + i * 7);
	memset(&v, 0, sizeof(v));
	v.pos = *end;
	v.size = shmq__frame_bytes((ext_id ? SHMQ_FRAME_EXT : 0) + klen, vlen);
	v.producer_id = ext_id;
	v.seq = ext_id ? ++ext_seq : 0;
	v.key_len = klen;
	v.value_len = vlen;
	v.timestamp_ns = ts;
	v.key = buf;
	v.value = buf + klen;
	if (shmq__spill_append(log, &v) < 0)
		die("append: %s", shmq_errdetail());
	*end += v.size;
}

static void pad(struct shmq_spill_log *log, uint64_t *end, uint64_t len)
{
	if (shmq__spill_append_pad(log, *end, len) < 0)
		die("pad: %s", shmq_errdetail());
	*end += len;
}

static struct shmq_spill_log *wopen(uint64_t start, uint32_t interval)
{
	struct shmq_spill_opts o = { .topic_id = 7, .start_offset = start,
				     .index_interval = interval, .segment_bytes = 1 << 20 };
	struct shmq_spill_log *log;

	if (shmq__spill_open(tmp, TOPIC, 0, &o, NULL, &log) < 0)
		die("open: %s", shmq_errdetail());
	return log;
}

/* A fixed creation time for every header (2023-11-14T22:13:20Z). */
#define FIXED_NS 1700000000000000000ull

static void fix_times(struct blob *seg, struct blob *idx)
{
	struct shmq_spill_seg_header h;
	struct shmq_spill_idx_header ih;

	if (seg->n >= sizeof(h)) {
		memcpy(&h, seg->p, sizeof(h));
		h.created_ns = FIXED_NS;
		h.crc = shmq__crc32c(0, &h, offsetof(struct shmq_spill_seg_header, crc));
		memcpy(seg->p, &h, sizeof(h));
	}
	if (idx->n >= sizeof(ih)) {
		memcpy(&ih, idx->p, sizeof(ih));
		ih.seg_created_ns = FIXED_NS;
		ih.crc = shmq__crc32c(0, &ih, offsetof(struct shmq_spill_idx_header, crc));
		memcpy(idx->p, &ih, sizeof(ih));
	}
}

static void files(uint64_t first, struct blob *seg, struct blob *idx)
{
	char path[512], name[SHMQ_SPILL_NAME_MAX];

	shmq__spill_file_name(first, SHMQ_SPILL_SEG_EXT, name);
	snprintf(path, sizeof(path), "%s/spill/%s/0/%s", tmp, TOPIC, name);
	*seg = slurp(path);
	shmq__spill_file_name(first, SHMQ_SPILL_IDX_EXT, name);
	snprintf(path, sizeof(path), "%s/spill/%s/0/%s", tmp, TOPIC, name);
	*idx = slurp(path);
	fix_times(seg, idx);
}

static void flip(struct blob b, size_t at, int bit)
{
	if (at < b.n)
		b.p[at] ^= (uint8_t)(1u << bit);
}

/* Each index entry changed by fn, its CRC made right again. */
static struct blob lying_index(struct blob idx, int how)
{
	struct blob c = dup_blob(idx);
	size_t at;

	for (at = SHMQ_SPILL_HEADER; at + 32 <= c.n; at += 32) {
		struct shmq_spill_idx_entry e;

		memcpy(&e, c.p + at, sizeof(e));
		if (how == 0)
			e.file_pos += 32;
		else if (how == 1)
			e.offset += 32;
		else if (how == 2)
			e.max_ts = UINT64_MAX - e.max_ts;
		else
			e.file_pos = UINT64_MAX - 31;
		e.crc = shmq__crc32c(0, &e, offsetof(struct shmq_spill_idx_entry, crc));
		memcpy(c.p + at, &e, sizeof(e));
	}
	return c;
}

static void segments(void)
{
	struct blob seg, idx, none = { 0 }, b, c;
	struct shmq_spill_log *log;
	uint64_t end = 0, cuts[] = { 0, 1, 31, 63, 64, 65, 95, 96, 200, 1000 };
	size_t i;
	char name[64];

	/* An empty log: a header and an index header. */
	fresh_dir();
	log = wopen(0, 256);
	shmq__spill_close(log);
	files(0, &seg, &idx);
	put_seg("seg-empty", seg, idx);
	put_seg("seg-empty-no-index", seg, none);
	free(seg.p);
	free(idx.p);

	/* Three frames and a pad. */
	fresh_dir();
	log = wopen(0, 256);
	end = 0;
	msg(log, &end, 3, 10, 1000);
	pad(log, &end, 4096);
	msg(log, &end, 0, 0, 2000);
	msg(log, &end, 20, 300, 1500);
	shmq__spill_close(log);
	files(0, &seg, &idx);
	put_seg("seg-three-and-pad", seg, idx);
	free(seg.p);
	free(idx.p);

	/* Messages with the producer extension, one of them empty. */
	fresh_dir();
	log = wopen(0, 256);
	end = 0;
	ext_id = 0x1de7;
	msg(log, &end, 3, 10, 1000);
	msg(log, &end, 0, 0, 1001);
	ext_id = 0;
	msg(log, &end, 2, 5, 1002);
	ext_id = UINT64_MAX;
	msg(log, &end, 0, 16, 1003);
	ext_id = 0;
	shmq__spill_close(log);
	files(0, &seg, &idx);
	put_seg("seg-producer-ext", seg, idx);
	free(seg.p);
	free(idx.p);

	/* Many frames with an index entry every 256 bytes, at a high start. */
	fresh_dir();
	end = 1ull << 40;
	log = wopen(end, 256);
	for (i = 0; i < 60; i++) {
		if (i % 9 == 4)
			pad(log, &end, 32 * (i + 1));
		/* Every other message from an idempotent producer. */
		ext_id = i % 2 ? 0x1de70 + i % 3 : 0;
		msg(log, &end, (uint16_t)(i % 5), (uint32_t)(i * 37 % 700),
		    1000 + i * 10 + (i % 3) * 7);
	}
	ext_id = 0;
	shmq__spill_close(log);
	files(1ull << 40, &seg, &idx);
	put_seg("seg-many", seg, idx);
	put_seg("seg-many-no-index", seg, none);

	for (i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		b = dup_blob(seg);
		b.n = cuts[i] < b.n ? cuts[i] : b.n;
		snprintf(name, sizeof(name), "seg-many-cut-%zu", (size_t)cuts[i]);
		put_seg(name, b, idx);
		free(b.p);
	}
	b = dup_blob(seg);
	b.n -= 7;
	put_seg("seg-many-cut-last-frame", b, idx);
	b.n = seg.n / 2;
	put_seg("seg-many-cut-half", b, idx);
	free(b.p);

	/* Garbage after the end. */
	b.n = seg.n + 300;
	b.p = calloc(1, b.n);
	memcpy(b.p, seg.p, seg.n);
	put_seg("seg-many-zeros-after", b, idx);
	for (i = seg.n; i < b.n; i++)
		b.p[i] = (uint8_t)(i * 131);
	put_seg("seg-many-junk-after", b, idx);
	free(b.p);

	/* Flipped bits: header fields, a frame's seal, size, lengths, crc, value. */
	{
		static const struct {
			size_t at;
			int bit;
			const char *what;
		} f[] = {
			{ 0, 0, "magic" },	 { 8, 1, "version" },	 { 16, 0, "topic" },
			{ 24, 0, "partition" },	 { 32, 5, "first" },	 { 40, 3, "created" },
			{ 60, 2, "header-crc" }, { 64, 0, "seal-committed" },
			{ 64, 1, "seal-pad" },	 { 64 + 5, 3, "seal-offset" },
			{ 72, 5, "size" },	 { 74, 0, "size-high" },
			{ 76, 0, "key-len" },	 { 80, 4, "value-len" },
			{ 84, 0, "crc" },	 { 88, 0, "timestamp" },
			{ 100, 0, "key" },	 { 1000, 0, "middle" },
		};

		for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
			b = dup_blob(seg);
			flip(b, f[i].at, f[i].bit);
			snprintf(name, sizeof(name), "seg-many-flip-%s", f[i].what);
			put_seg(name, b, idx);
			free(b.p);
		}
		b = dup_blob(seg);
		flip(b, seg.n - 40, 0);
		put_seg("seg-many-flip-last-frame", b, idx);
		free(b.p);
	}
	{
		/* Another format version, with a right CRC: refused. */
		struct shmq_spill_seg_header h;

		b = dup_blob(seg);
		memcpy(&h, b.p, sizeof(h));
		h.version = SHMQ_SPILL_FORMAT + 1;
		h.crc = shmq__crc32c(0, &h, 60);
		memcpy(b.p, &h, sizeof(h));
		put_seg("seg-many-version-next", b, idx);
		free(b.p);
	}

	/* Indexes that lie, are cut, are garbage. */
	for (i = 0; i < 4; i++) {
		static const char *how[] = { "pos-shifted", "offset-shifted", "ts-inverted",
					     "pos-huge" };

		c = lying_index(idx, (int)i);
		snprintf(name, sizeof(name), "seg-many-index-%s", how[i]);
		put_seg(name, seg, c);
		free(c.p);
	}
	c = dup_blob(idx);
	c.n = idx.n - 13;
	put_seg("seg-many-index-cut", seg, c);
	for (i = SHMQ_SPILL_HEADER; i < c.n; i++)
		c.p[i] = (uint8_t)(i * 29);
	put_seg("seg-many-index-garbage", seg, c);
	c.n = 10;
	put_seg("seg-many-index-short", seg, c);
	free(c.p);
	free(seg.p);
	free(idx.p);

	/* A rolled segment: its index ends with an END entry. */
	fresh_dir();
	log = wopen(4096, 256);
	end = 4096;
	for (i = 0; i < 30; i++)
		msg(log, &end, 1, (uint32_t)(i * 50), 500 + i);
	shmq__spill_roll(log);
	shmq__spill_close(log);
	files(4096, &seg, &idx);
	put_seg("seg-rolled", seg, idx);
	free(seg.p);
	free(idx.p);

	/* The largest pad, and frames near the top of the offset space. */
	fresh_dir();
	end = (UINT64_MAX - (1ull << 33)) & ~(uint64_t)31;
	log = wopen(end, 256);
	pad(log, &end, SHMQ_SPILL_PAD_MAX);
	msg(log, &end, 2, 2, 1);
	pad(log, &end, 64);
	shmq__spill_close(log);
	files((UINT64_MAX - (1ull << 33)) & ~(uint64_t)31, &seg, &idx);
	put_seg("seg-top-of-offsets", seg, idx);
	free(seg.p);
	free(idx.p);

	/* One large message (above the fuzz target's write buffer). */
	fresh_dir();
	log = wopen(0, 256);
	end = 0;
	msg(log, &end, 100, 10000, 9);
	msg(log, &end, 0, 1, 10);
	shmq__spill_close(log);
	files(0, &seg, &idx);
	put_seg("seg-large-frame", seg, idx);
	b = dup_blob(seg);
	b.n = 64 + 32 + 5000;
	put_seg("seg-large-frame-torn", b, idx);
	free(b.p);
	free(seg.p);
	free(idx.p);
}

/* A checkpoint file with the fixed time (written_ns at 24, crc of 0..59 at 60). */
static struct blob ckpt_file(const char *path)
{
	struct blob b = slurp(path);
	uint64_t t = FIXED_NS;
	uint32_t crc;

	if (b.n >= 64) {
		memcpy(b.p + 24, &t, sizeof(t));
		crc = shmq__crc32c(0, b.p, 60);
		memcpy(b.p + 60, &crc, sizeof(crc));
	}
	return b;
}

static void checkpoints(void)
{
	struct shmq_ckpt cp = { .topic_id = 3 };
	struct shmq_ckpt_group g[2];
	uint64_t off[4] = { 0, 32, 1 << 20, UINT64_MAX & ~31ull };
	char path[512];
	struct blob b;
	uint8_t *buf;
	size_t i;

	fresh_dir();
	memset(g, 0, sizeof(g));
	strcpy(g[0].name, "billing");
	g[0].partitions = 4;
	g[0].committed = off;
	strcpy(g[1].name, "audit");
	g[1].partitions = 0;
	cp.group_count = 2;
	cp.groups = g;
	if (shmq__checkpoint_write(tmp, TOPIC, &cp) < 0)
		die("checkpoint: %s", shmq_errdetail());
	snprintf(path, sizeof(path), "%s/spill/%s/%s", tmp, TOPIC, SHMQ_CKPT_FILE);
	b = ckpt_file(path);
	buf = malloc(b.n + 1);
	buf[0] = 1;
	memcpy(buf + 1, b.p, b.n);
	put("ckpt-two-groups", buf, b.n + 1);
	put("ckpt-torn", buf, b.n / 2);
	put("ckpt-header-only", buf, 1 + 64);
	for (i = 0; i < 4; i++) {
		static const size_t at[] = { 1 + 8, 1 + 40, 1 + 64, 1 + 64 + 72 };
		char name[64];

		buf[at[i]] ^= 1;
		snprintf(name, sizeof(name), "ckpt-flip-%zu", at[i] - 1);
		put(name, buf, b.n + 1);
		buf[at[i]] ^= 1;
	}
	free(buf);
	free(b.p);
	cp.group_count = 0;
	if (shmq__checkpoint_write(tmp, TOPIC, &cp) < 0)
		die("checkpoint: %s", shmq_errdetail());
	b = ckpt_file(path);
	buf = malloc(b.n + 1);
	buf[0] = 1;
	memcpy(buf + 1, b.p, b.n);
	put("ckpt-empty", buf, b.n + 1);
	free(buf);
	free(b.p);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		die("usage: gen-spill-corpus OUTDIR");
	outdir = argv[1];
	if (mkdir(outdir, 0755) < 0 && errno != EEXIST)
		die("mkdir %s: %s", outdir, strerror(errno));
	snprintf(tmp, sizeof(tmp), "/tmp/gen-spill-corpus-%d", (int)getpid());
	segments();
	checkpoints();
	nftw(tmp, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}
