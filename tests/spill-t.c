/*
 * spill-t.c - partition logs on disk (libshmq/spill.c), CRC-32C and fault
 * injection.
 *
 * Every test makes a fresh data directory and removes it.  Frames carry
 * content derived from their offset (a splitmix64 stream seeded by it), so
 * every read is checked byte for byte against what was appended, and a
 * model of the log (offset, size, pad, lengths, timestamp per frame) says
 * what must be there after each reopen, cut, fault or retention pass.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"
#include "shmq_int.h"
#include "spill.h"
#include "tap.h"
#include "testutil.h"

#define NTESTS 138

#define TOPIC "orders"
#define KiB 1024u

struct rec {
	uint64_t off;
	uint32_t size;
	bool pad;
	uint16_t klen;
	uint32_t vlen;
	uint64_t ts;
};

struct model {
	struct rec *r;
	size_t n, cap;
	uint64_t end;
};

static uint8_t *kbuf, *vbuf;
#define VBUF_MAX (256u * KiB)

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed, w = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!(i & 7))
			w = tu_splitmix(&s);
		p[i] = (uint8_t)(w >> (8 * (i & 7)));
	}
}

static void model_push(struct model *m, const struct rec *r)
{
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 256;
		m->r = realloc(m->r, m->cap * sizeof(*m->r));
		if (!m->r)
			bail("out of memory");
	}
	m->r[m->n++] = *r;
	m->end = r->off + r->size;
}

static void model_free(struct model *m)
{
	free(m->r);
	memset(m, 0, sizeof(*m));
}

/* Append a message of klen/vlen at the model's end. */
static int add_msg(struct shmq_spill_log *log, struct model *m, uint16_t klen,
		   uint32_t vlen, uint64_t ts)
{
	struct shmq_frame_view v;
	struct rec r = { .off = m->end, .size = shmq__frame_bytes(klen, vlen),
			 .klen = klen, .vlen = vlen, .ts = ts };
	int rc;

	if (vlen > VBUF_MAX)
		bail("value too large for the test buffer");
	fill(kbuf, klen, r.off * 2 + 1);
	fill(vbuf, vlen, r.off * 2);
	memset(&v, 0, sizeof(v));
	v.pos = r.off;
	v.size = r.size;
	v.key_len = klen;
	v.value_len = vlen;
	v.timestamp_ns = ts;
	v.key = kbuf;
	v.value = vbuf;
	rc = shmq__spill_append(log, &v);
	if (rc == 0)
		model_push(m, &r);
	return rc;
}

static int add_pad(struct shmq_spill_log *log, struct model *m, uint64_t len)
{
	uint64_t pos = m->end;
	int rc = shmq__spill_append_pad(log, pos, len);

	if (rc == 0) {
		while (len) {
			struct rec r = { .off = pos, .pad = true };

			r.size = (uint32_t)(len < SHMQ_SPILL_PAD_MAX ? len : SHMQ_SPILL_PAD_MAX);
			model_push(m, &r);
			pos += r.size;
			len -= r.size;
		}
	}
	return rc;
}

/* Does the view match the model's record, byte for byte? */
static int view_ok(const struct rec *e, const struct shmq_frame_view *v)
{
	if (v->pos != e->off || v->size != e->size || v->pad != e->pad)
		return 0;
	if (e->pad)
		return 1;
	if (v->key_len != e->klen || v->value_len != e->vlen || v->timestamp_ns != e->ts)
		return 0;
	fill(kbuf, e->klen, e->off * 2 + 1);
	fill(vbuf, e->vlen, e->off * 2);
	return (!e->klen || !memcmp(v->key, kbuf, e->klen)) &&
	       (!e->vlen || !memcmp(v->value, vbuf, e->vlen));
}

/*
 * Read records [from, to) of the model sequentially with a fresh reader;
 * with check_end, also check that the model's end is the end (-EAGAIN).
 * Returns the number of problems (diagnosed).
 */
static int read_range(const char *dir, const struct model *m, size_t from, size_t to,
		      bool check_end)
{
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	int bad = 0, rc;
	size_t i;

	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	if (rc < 0) {
		diag("reader_open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
		return 1;
	}
	for (i = from; i < to; i++) {
		rc = shmq__spill_read(r, m->r[i].off, &v);
		if (rc < 0 || !view_ok(&m->r[i], &v)) {
			if (bad++ < 3)
				diag("record %zu at %" PRIu64 ": %s %s", i, m->r[i].off,
				     rc < 0 ? shmq_strerror(rc) : "content differs",
				     rc < 0 ? shmq_errdetail() : "");
		}
	}
	if (check_end) {
		rc = shmq__spill_read(r, m->end, &v);
		if (rc != -EAGAIN) {
			diag("read at the end %" PRIu64 ": %d %s", m->end, rc,
			     shmq_strerror(rc));
			bad++;
		}
	}
	shmq__spill_reader_close(r);
	return bad;
}

static void diag_rep(const char *what, const struct shmq_spill_recovery *r)
{
	diag("%s: %u segments, %" PRIu64 " frames, end %" PRIu64 ", cuts %u at %" PRIu64
	     " (%" PRIu64 " bytes), corrupt %u at %" PRIu64 ", holes %u at %" PRIu64
	     ", headers %u, indexes %u, removed %u", what, r->segments, r->frames,
	     r->end_offset, r->cuts, r->cut_offset, r->cut_bytes, r->corrupt,
	     r->corrupt_offset, r->holes, r->hole_offset, r->headers_repaired,
	     r->indexes_rebuilt, r->files_removed);
}

/* All of the model, and nothing after it. */
static int read_seq(const char *dir, const struct model *m, size_t from, size_t to)
{
	return read_range(dir, m, from, to, to == m->n);
}

static struct shmq_spill_opts small_opts(void)
{
	struct shmq_spill_opts o = {
		.topic_id = 0x5eed,
		.segment_bytes = 256 * KiB,
		.index_interval = 4 * KiB,
		.buffer_bytes = 64 * KiB,
	};
	return o;
}

static struct shmq_spill_log *wopen(const char *dir, const struct shmq_spill_opts *o,
				    struct shmq_spill_recovery *rep)
{
	struct shmq_spill_log *log = NULL;
	int rc = shmq__spill_open(dir, TOPIC, 0, o, rep, &log);

	if (rc < 0) {
		diag("spill_open: %s (%s)", shmq_strerror(rc), shmq_errdetail());
		return NULL;
	}
	return log;
}

static void seg_path(const char *dir, uint64_t first, const char *ext, char *buf,
		     size_t n)
{
	char name[SHMQ_SPILL_NAME_MAX];

	shmq__spill_file_name(first, ext, name);
	snprintf(buf, n, "%s/spill/%s/0/%s", dir, TOPIC, name);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		bail("open %s: %s", path, strerror(errno));
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
		bail("read %s", path);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void spit(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n))
		bail("write %s: %s", path, strerror(errno));
	close(fd);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_size : UINT64_MAX;
}

/* The file position of each record, as the writer lays them out. */
static uint64_t rec_pos(const struct model *m, size_t i, uint64_t seg_first)
{
	uint64_t pos = SHMQ_SPILL_HEADER;
	size_t k;

	for (k = 0; k < i; k++) {
		if (m->r[k].off < seg_first)
			continue;
		pos += m->r[k].pad ? SHMQ_FRAME_HEADER : m->r[k].size;
	}
	return pos;
}

/* Append a varied mix of messages (0 .. 64 KiB, some above the buffer) and pads. */
static int fill_log(struct shmq_spill_log *log, struct model *m, size_t n, uint64_t seed)
{
	uint64_t s = seed;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		uint64_t x = tu_splitmix(&s);
		uint16_t klen = (uint16_t)(x % 3 == 0 ? 0 : x % 97);
		uint32_t vlen;

		switch ((x >> 8) % 20) {
		case 0:
			vlen = 0;
			break;
		case 1:
			vlen = 64 * KiB;
			break;
		case 2:
			vlen = 100 * KiB; /* above the 64 KiB buffer: written directly */
			break;
		case 3:
		case 4:
			vlen = (uint32_t)((x >> 16) % (64 * KiB));
			break;
		case 5:
			rc = add_pad(log, m, ((x >> 16) % 4096 + 1) * SHMQ_FRAME_ALIGN);
			if (rc < 0)
				return rc;
			continue;
		default:
			vlen = (uint32_t)((x >> 16) % 700);
			break;
		}
		rc = add_msg(log, m, klen, vlen, 1000000 + i * 1000);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */

/*
 * The CRC implementations against each other.  The three-stream one joins
 * its streams with a constant per run length (m 64-bit words per stream,
 * 8 <= m <= 256, blocks of 24m bytes): every length up to 6400 reaches
 * every m, with each start alignment and a register not 0 as well as 0.
 * Longer buffers take several blocks of the longest run; random ones up to
 * 64 KiB, cut anywhere, check that and the chaining.
 */
static void test_crc(void)
{
	static const char check[] = "123456789";
	enum { EVERY = 6400, BIG = 65536 };
	uint8_t *buf = malloc(BIG + 16);
	uint64_t s = 42;
	size_t n, off;
	int i, bad = 0, bad3 = 0, badf = 0, badc = 0;

	if (!buf)
		bail("out of memory");
	is_int(shmq__crc32c(0, check, 9), 0xe3069283, "crc32c(\"123456789\") (%s)",
	       shmq__crc32c_impl());
	is_int(shmq__crc32c_sw(0, check, 9), 0xe3069283, "slicing-by-8 check value");
	is_int(shmq__crc32c_hw(0, check, 9), 0xe3069283, "sse4.2 check value");
	is_int(shmq__crc32c_hw3(0, check, 9), 0xe3069283, "sse4.2 x3 check value");
	is_int(shmq__crc32c_fold(0, check, 9), 0xe3069283, "vpclmulqdq fold check value");
	is_int(shmq__crc32c(0, "", 0), 0, "crc of nothing is 0");
	fill(buf, BIG + 16, 7);
	for (n = 0; n <= EVERY; n++) {
		uint32_t init = n & 1 ? (uint32_t)tu_splitmix(&s) : 0;
		uint32_t a, b, c, f;

		off = n % 8;
		a = shmq__crc32c_sw(init, buf + off, n);
		b = shmq__crc32c_hw(init, buf + off, n);
		c = shmq__crc32c_hw3(init, buf + off, n);
		f = shmq__crc32c_fold(init, buf + off, n);
		bad += a != b;
		bad3 += a != c;
		badf += a != f;
	}
	is_int(bad, 0, "software and one-chain hardware CRCs agree on every length to %d", EVERY);
	is_int(bad3, 0, "software and three-stream CRCs agree on every length to %d", EVERY);
	is_int(badf, 0, "software and folding CRCs agree on every length to %d", EVERY);
	for (i = 0; i < 300; i++) {
		size_t cut;
		uint32_t a, b, c;

		off = tu_splitmix(&s) % 16;
		n = tu_splitmix(&s) % BIG;
		cut = n ? tu_splitmix(&s) % n : 0;
		a = shmq__crc32c_sw(0, buf + off, n);
		b = shmq__crc32c_hw3(0, buf + off, n);
		c = shmq__crc32c(shmq__crc32c(0, buf + off, cut), buf + off + cut, n - cut);
		badc += a != b || a != c || a != shmq__crc32c_fold(0, buf + off, n);
	}
	is_int(badc, 0, "software, three-stream, folding and chained CRCs agree on 300 buffers to 64 KiB");
	free(buf);
}

static void test_names(void)
{
	char name[SHMQ_SPILL_NAME_MAX];
	uint64_t v = 0;

	shmq__spill_file_name(1048576, SHMQ_SPILL_SEG_EXT, name);
	ok(!strcmp(name, "00000000000001048576.seg"), "segment name %s", name);
	ok(shmq__spill_parse_name(name, SHMQ_SPILL_SEG_EXT, &v) == 0 && v == 1048576,
	   "name parses back");
	ok(shmq__spill_parse_name("18446744073709551615.seg", ".seg", &v) == 0 &&
		   v == UINT64_MAX, "UINT64_MAX parses");
	ok(shmq__spill_parse_name("18446744073709551616.seg", ".seg", &v) < 0,
	   "one past UINT64_MAX is refused");
	ok(shmq__spill_parse_name("0000000000000001048576.seg", ".seg", &v) < 0 &&
		   shmq__spill_parse_name("00000000000001048576.idx", ".seg", &v) < 0 &&
		   shmq__spill_parse_name("0000000000000104857x.seg", ".seg", &v) < 0,
	   "wrong length, extension or digit is refused");
}

static void test_round_trip(void)
{
	char dir[256], path[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log, *log2 = NULL;
	struct shmq_spill_reader *r;
	struct shmq_spill_stat st;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint8_t raw[32 + 64];
	struct shmq_frame f;
	size_t i, bad = 0;
	int rc;

	tu_make_dir("spill-rt", dir, sizeof(dir));
	log = wopen(dir, &o, &rep);
	if (!log)
		bail("cannot open a log");
	is_int(rep.segments, 0, "a new log has no segment to recover");
	shmq__spill_stat(log, &st);
	ok(st.end_offset == 0 && st.first_offset == 0 && st.segments == 1,
	   "a new log starts at 0 with one empty segment");
	is_int(shmq__spill_open(dir, TOPIC, 0, &o, NULL, &log2), -EBUSY,
	       "a second writer of the partition gets -EBUSY");

	rc = fill_log(log, &m, 900, 1);
	is_int(rc, 0, "900 frames of 0..100 KiB, with pads, appended");
	/* A raw frame as the ring holds it. */
	memset(&f, 0, sizeof(f));
	f.seal = m.end | SHMQ_SEAL_COMMITTED;
	f.size = shmq__frame_bytes(3, 40);
	f.key_len = 3;
	f.value_len = 40;
	f.timestamp_ns = 77;
	memcpy(raw, &f, sizeof(f));
	fill(raw + 32, 3, m.end * 2 + 1);
	fill(raw + 35, 40, m.end * 2);
	rc = shmq__spill_append_raw(log, m.end, raw, sizeof(raw));
	is_int(rc, 0, "append_raw of a ring frame");
	if (rc == 0) {
		struct rec e = { .off = m.end, .size = f.size, .klen = 3, .vlen = 40, .ts = 77 };

		model_push(&m, &e);
	}
	f.seal = (m.end + 32) | SHMQ_SEAL_COMMITTED;
	memcpy(raw, &f, sizeof(f));
	is_int(shmq__spill_append_raw(log, m.end, raw, sizeof(raw)), -EINVAL,
	       "append_raw refuses a seal for another position");
	is_int(add_msg(log, &(struct model){ .end = m.end + 32 }, 1, 1, 1), -EINVAL,
	       "append at an offset other than the end is -EINVAL");

	shmq__spill_stat(log, &st);
	ok(st.end_offset == m.end && st.written_offset < st.end_offset,
	   "end is the model's (%" PRIu64 "), the buffer is not written yet", m.end);
	is_int(shmq__spill_sync(log), 0, "sync");
	shmq__spill_stat(log, &st);
	ok(st.written_offset == m.end && st.synced_offset == m.end,
	   "after sync, written and synced reach the end");
	ok(st.segments > 10, "segments rolled at 256 KiB: %u segments", st.segments);
	diag("%zu frames, %" PRIu64 " bytes of log, %" PRIu64 " on disk, %u segments",
	     m.n, m.end, st.disk_bytes, st.segments);

	is_int(read_seq(dir, &m, 0, m.n), 0, "every frame reads back byte for byte, in order");

	/* Random access: a fresh position each time, through the index. */
	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	is_int(rc, 0, "reader open");
	for (i = m.n; i-- > 0;) {
		rc = shmq__spill_read(r, m.r[i].off, &v);
		if (rc < 0 || !view_ok(&m.r[i], &v))
			bad++;
	}
	is_int(bad, 0, "every frame reads back by offset, newest first");
	is_int(shmq__spill_read(r, m.r[5].off + 32, &v), -EINVAL,
	       "an offset inside a frame is -EINVAL");
	is_int(shmq__spill_read(r, m.end + 4096, &v), -EAGAIN,
	       "an offset past the end is -EAGAIN");
	{
		uint64_t first = 1, end = 0;

		rc = shmq__spill_reader_range(r, &first, &end);
		ok(rc == 0 && first == 0 && end == m.end, "reader_range: [%" PRIu64 ", %" PRIu64 ")",
		   first, end);
	}
	shmq__spill_reader_close(r);

	/* Offsets continue after close and reopen. */
	shmq__spill_close(log);
	log = wopen(dir, &o, &rep);
	ok(log && rep.end_offset == m.end && rep.cuts == 0 && rep.corrupt == 0 &&
		   rep.holes == 0, "reopen: the end is where it was, nothing cut");
	ok(rep.indexes_rebuilt == 0, "the last segment's index needed no rebuild");
	diag_rep("reopen", &rep);
	is_int(fill_log(log, &m, 200, 2), 0, "200 more frames after the reopen");
	is_int(shmq__spill_sync(log), 0, "sync");
	shmq__spill_close(log);
	is_int(read_seq(dir, &m, 0, m.n), 0, "old and new frames read back, offsets continuous");

	/* A log that starts elsewhere remembers it with an empty segment. */
	o.start_offset = 1 << 20;
	rc = shmq__spill_open(dir, TOPIC, 1, &o, NULL, &log);
	is_int(rc, 0, "a log opened at start offset 1 MiB");
	shmq__spill_close(log);
	rc = shmq__spill_open(dir, TOPIC, 1, NULL, &rep, &log);
	ok(rc == 0 && rep.end_offset == 1 << 20, "reopened, it still starts at 1 MiB");
	snprintf(path, sizeof(path), "%s/spill/%s/1/00000000000001048576.seg", dir, TOPIC);
	ok(file_size(path) == SHMQ_SPILL_HEADER, "00000000000001048576.seg holds the header");
	shmq__spill_close(log);
	is_int(shmq__spill_reader_open(dir, TOPIC, 7, NULL, &r), -ENOENT,
	       "a partition never spilled: -ENOENT");

	model_free(&m);
	tu_cleanup(dir);
}

/* A segment cut at every byte of its last two frames. */
static void test_torn_tail(void)
{
	char dir[256], seg[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct model m = { 0 };
	uint64_t p1, p2, sz, c;
	size_t len, n, fails = 0, tried = 0;
	uint8_t *orig;
	int k;

	tu_make_dir("spill-torn", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	if (!log)
		bail("open");
	add_msg(log, &m, 10, 100, 1);
	add_msg(log, &m, 0, 1000, 2);
	add_pad(log, &m, 4096);
	add_msg(log, &m, 0, 0, 3);
	add_pad(log, &m, 96);	 /* second-to-last: a pad (32 bytes in the file) */
	add_msg(log, &m, 7, 200, 4); /* last */
	is_int(shmq__spill_sync(log), 0, "six frames synced");
	shmq__spill_close(log);
	n = m.n;
	seg_path(dir, 0, SHMQ_SPILL_SEG_EXT, seg, sizeof(seg));
	orig = slurp(seg, &len);
	p1 = rec_pos(&m, n - 2, 0);
	p2 = rec_pos(&m, n - 1, 0);
	sz = len;
	ok(sz == p2 + m.r[n - 1].size, "the file ends with the last frame (%" PRIu64 " bytes)", sz);

	for (c = p1; c <= sz; c++) {
		uint64_t keep_pos = c >= sz ? sz : c >= p2 ? p2 : p1;
		size_t keep = c >= sz ? n : c >= p2 ? n - 1 : n - 2;
		uint64_t keep_end = keep == n ? m.end : m.r[keep].off;
		struct model mk = m;

		tried++;
		spit(seg, orig, (size_t)c);
		log = wopen(dir, &o, &rep);
		if (!log) {
			fails++;
			continue;
		}
		if (rep.end_offset != keep_end || file_size(seg) != keep_pos ||
		    rep.cuts != (c != keep_pos) || rep.cut_bytes != c - keep_pos ||
		    (c != keep_pos && rep.cut_offset != keep_end)) {
			if (fails < 3)
				diag("cut at %" PRIu64 ": end %" PRIu64 " (want %" PRIu64 "), "
				     "size %" PRIu64 " (want %" PRIu64 "), cuts %u, cut_bytes %"
				     PRIu64, c, rep.end_offset, keep_end, file_size(seg),
				     keep_pos, rep.cuts, rep.cut_bytes);
			fails++;
		}
		shmq__spill_close(log);
		mk.n = keep;
		mk.end = keep_end;
		if (read_seq(dir, &mk, 0, keep))
			fails++;
	}
	is_int(fails, 0, "cut at each of %zu positions of the last two frames: recovered "
	       "to the last whole frame, cut reported, the rest readable", tried);

	/* Garbage after the last frame: zeros, then random bytes. */
	for (k = 0; k < 2; k++) {
		uint8_t *junk = malloc(len + 5000);

		memcpy(junk, orig, len);
		if (k == 0)
			memset(junk + len, 0, 5000);
		else
			fill(junk + len, 5000, 99);
		spit(seg, junk, len + 5000);
		free(junk);
		log = wopen(dir, &o, &rep);
		ok(log && rep.cuts == 1 && rep.cut_bytes == 5000 && rep.end_offset == m.end &&
			   file_size(seg) == len,
		   "%s after the last frame are cut off", k ? "random bytes" : "zeros");
		shmq__spill_close(log);
	}
	is_int(read_seq(dir, &m, 0, n), 0, "all six frames still read back");

	/* A torn creation: a segment shorter than its header. */
	{
		char seg2[512];
		struct model m2 = m;

		log = wopen(dir, &o, NULL);
		shmq__spill_roll(log);
		shmq__spill_close(log);
		seg_path(dir, m.end, SHMQ_SPILL_SEG_EXT, seg2, sizeof(seg2));
		ok(file_size(seg2) == SHMQ_SPILL_HEADER, "roll made segment %" PRIu64, m.end);
		truncate(seg2, 10);
		log = wopen(dir, &o, &rep);
		ok(log && rep.headers_repaired == 1 && rep.end_offset == m.end &&
			   file_size(seg2) == SHMQ_SPILL_HEADER,
		   "a 10-byte segment gets its header back; the log still ends at %" PRIu64, m.end);
		is_int(add_msg(log, &m2, 1, 2, 5), 0, "and takes frames again");
		shmq__spill_close(log);
		is_int(read_seq(dir, &m2, 0, m2.n), 0, "across both segments");
		model_free(&m2);
		m.r = NULL;
	}
	free(orig);
	model_free(&m);
	tu_cleanup(dir);
}

static void flip_bit(const char *path, uint64_t at, int bit)
{
	uint8_t b;
	int fd = open(path, O_RDWR);

	if (fd < 0 || pread(fd, &b, 1, (off_t)at) != 1)
		bail("flip %s", path);
	b ^= (uint8_t)(1u << bit);
	if (pwrite(fd, &b, 1, (off_t)at) != 1)
		bail("flip %s", path);
	close(fd);
}

static size_t list_firsts(const char *dir, uint64_t *firsts, size_t max)
{
	char path[512];
	struct dirent *de;
	size_t n = 0, i, j;
	DIR *d;

	snprintf(path, sizeof(path), "%s/spill/%s/0", dir, TOPIC);
	d = opendir(path);
	while (d && (de = readdir(d)) && n < max) {
		uint64_t x;

		if (shmq__spill_parse_name(de->d_name, SHMQ_SPILL_SEG_EXT, &x) == 0)
			firsts[n++] = x;
	}
	if (d)
		closedir(d);
	/* Insertion sort: a few segments. */
	for (i = 1; i < n; i++) {
		uint64_t x = firsts[i];

		for (j = i; j > 0 && firsts[j - 1] > x; j--)
			firsts[j] = firsts[j - 1];
		firsts[j] = x;
	}
	return n;
}

/* Pick a message record in segment first (not the segment's last frame). */
static size_t pick_msg(const struct model *m, uint64_t first, uint64_t limit)
{
	size_t i, found = SIZE_MAX, count = 0;

	for (i = 0; i + 1 < m->n; i++) {
		if (m->r[i].off >= first && m->r[i + 1].off < limit && !m->r[i].pad &&
		    m->r[i].vlen > 16 && ++count == 5)
			found = i;
	}
	return found;
}

static void test_bitflip(void)
{
	char dir[256], path[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint64_t firsts[64], next = 0, sf, sg;
	size_t nf, i, fi, gi, delivered = 0, wrong = 0, corrupt_seen = 0;
	int rc;

	tu_make_dir("spill-flip", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	fill_log(log, &m, 500, 3);
	shmq__spill_sync(log);
	shmq__spill_close(log);
	nf = list_firsts(dir, firsts, 64);
	ok(nf >= 3, "%zu segments", nf);
	/* F: a value bit in the second segment; G: a size bit in the last. */
	sf = firsts[1];
	sg = firsts[nf - 1];
	fi = pick_msg(&m, sf, firsts[2]);
	gi = pick_msg(&m, sg, UINT64_MAX);
	if (fi == SIZE_MAX || gi == SIZE_MAX)
		bail("no frame to damage");
	seg_path(dir, sf, SHMQ_SPILL_SEG_EXT, path, sizeof(path));
	flip_bit(path, rec_pos(&m, fi, sf) + 32 + m.r[fi].klen + m.r[fi].vlen / 2, 3);
	seg_path(dir, sg, SHMQ_SPILL_SEG_EXT, path, sizeof(path));
	flip_bit(path, rec_pos(&m, gi, sg) + 9, 2); /* size field, bit 10 */
	diag("damaged frames at %" PRIu64 " (value) and %" PRIu64 " (size)", m.r[fi].off,
	     m.r[gi].off);

	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	for (i = 0; i < m.n;) {
		rc = shmq__spill_read(r, m.r[i].off, &v);
		if (rc == SHMQ_ECORRUPT) {
			char want[32];

			snprintf(want, sizeof(want), "%" PRIu64, m.r[i].off);
			corrupt_seen++;
			ok((i == fi || i == gi) && strstr(shmq_errdetail(), want),
			   "SHMQ_ECORRUPT at exactly the damaged frame %" PRIu64 " (%s)",
			   m.r[i].off, shmq_errdetail());
			is_int(shmq__spill_read(r, m.r[i].off, &v), SHMQ_ECORRUPT,
			       "asked again, it is still not delivered");
			rc = shmq__spill_skip(r, m.r[i].off, &next);
			ok(rc == 0 && next == m.r[i + 1].off,
			   "skip goes on at the next frame %" PRIu64, next);
			i++;
			continue;
		}
		if (rc < 0 || !view_ok(&m.r[i], &v))
			wrong++;
		else
			delivered++;
		i++;
	}
	is_int(corrupt_seen, 2, "two damaged frames reported");
	ok(delivered == m.n - 2 && wrong == 0, "every other frame delivered intact (%zu)",
	   delivered);
	shmq__spill_reader_close(r);

	/* Random access past the damage, through a walk that meets it. */
	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	rc = shmq__spill_read(r, m.r[gi + 1].off, &v);
	ok(rc == 0 && view_ok(&m.r[gi + 1], &v), "a frame after the damaged size reads by offset");
	rc = shmq__spill_read(r, m.r[fi + 1].off, &v);
	ok(rc == 0 && view_ok(&m.r[fi + 1], &v), "a frame after the damaged value reads by offset");
	shmq__spill_reader_close(r);

	/* Recovery keeps damage that valid frames follow; cuts a corrupt tail. */
	log = wopen(dir, &o, &rep);
	ok(log && rep.cuts == 0 && rep.corrupt >= 1 && rep.end_offset == m.end,
	   "reopen keeps the log (corrupt %u, first at %" PRIu64 "), end unchanged",
	   rep.corrupt, rep.corrupt_offset);
	ok(rep.corrupt_offset == m.r[fi].off || rep.corrupt_offset == m.r[gi].off,
	   "and reports the damaged offset");
	diag_rep("after bit flips", &rep);
	shmq__spill_close(log);
	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	is_int(shmq__spill_read(r, m.r[gi].off, &v), SHMQ_ECORRUPT,
	       "after recovery the damaged frame is still refused");
	shmq__spill_reader_close(r);

	seg_path(dir, sg, SHMQ_SPILL_SEG_EXT, path, sizeof(path));
	flip_bit(path, rec_pos(&m, m.n - 1, sg) + 20, 0); /* the last frame's crc */
	log = wopen(dir, &o, &rep);
	ok(log && rep.cuts == 1 && rep.cut_offset == m.r[m.n - 1].off &&
		   rep.end_offset == m.r[m.n - 1].off,
	   "a corrupt last frame is a corrupt tail: cut at %" PRIu64, rep.cut_offset);
	diag_rep("corrupt tail", &rep);
	shmq__spill_close(log);

	model_free(&m);
	tu_cleanup(dir);
}

/* Synced frames survive; the writer reports and, where it must, fails. */
static void test_faults(void)
{
	char dir[256];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct shmq_spill_stat st;
	struct model m = { 0 };
	size_t acked;
	int rc, i;

	tu_make_dir("spill-fault", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	fill_log(log, &m, 100, 4);
	is_int(shmq__spill_sync(log), 0, "100 frames synced (acknowledged)");
	acked = m.n;
	ok(shmq__fault_active == 0, "fault injection is disarmed by default");

	/* ENOSPC on a data write: reported, nothing lost, retry succeeds. */
	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_WRITE, 1, ENOSPC, 0);
	for (i = 0, rc = 0; i < 1000 && rc == 0; i++)
		rc = add_msg(log, &m, 4, 500, 5);
	is_int(rc, -ENOSPC, "ENOSPC while flushing is returned by append");
	shmq__spill_stat(log, &st);
	ok(st.error == 0 && st.end_offset == m.end, "the writer is not failed; the frame was not appended");
	shmq__fault_disarm();
	is_int(shmq__spill_sync(log), 0, "space is back: sync writes what was kept");
	acked = m.n;

	/* Short writes: handled, never visible. */
	shmq__fault_reset();
	for (i = 1; i <= 6; i++)
		shmq__fault_arm(SHMQ_FAULT_WRITE, (unsigned long)i * 2, SHMQ_FAULT_SHORT, 0);
	rc = fill_log(log, &m, 150, 5);
	if (!rc)
		rc = shmq__spill_sync(log);
	ok(rc == 0 && shmq__fault_fired() >= 3,
	   "short writes (%lu injected) are completed by the writer", shmq__fault_fired());
	shmq__fault_disarm();
	acked = m.n;

	/* A short write, then ENOSPC: the partial frame is cut off again. */
	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_WRITE, 1, SHMQ_FAULT_SHORT, 0);
	shmq__fault_arm(SHMQ_FAULT_WRITE, 2, ENOSPC, SHMQ_FAULT_STICKY);
	fill_log(log, &m, 20, 6);
	rc = shmq__spill_sync(log);
	is_int(rc, -ENOSPC, "a disk that stays full: sync returns -ENOSPC");
	shmq__spill_stat(log, &st);
	ok(st.synced_offset == m.r[acked].off && st.written_offset == st.synced_offset &&
		   st.error == 0, "nothing past the acknowledged end was written or acknowledged");
	shmq__fault_disarm();
	is_int(shmq__spill_sync(log), 0, "and when it has room again, sync succeeds");
	acked = m.n;

	/* ENOSPC creating a segment at a roll: retried by the next append. */
	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_OPEN, 1, ENOSPC, 0);
	for (i = 0, rc = 0; i < 2000 && rc == 0; i++)
		rc = add_msg(log, &m, 0, 2000, 6);
	is_int(rc, -ENOSPC, "ENOSPC creating the next segment");
	shmq__fault_disarm();
	is_int(add_msg(log, &m, 0, 2000, 6), 0, "the next append creates it");
	is_int(shmq__spill_sync(log), 0, "sync");
	acked = m.n;

	/* EIO from fdatasync: the writer fails for good. */
	fill_log(log, &m, 30, 7);
	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_FDATASYNC, 1, EIO, 0);
	is_int(shmq__spill_sync(log), -EIO, "fdatasync's EIO is returned");
	shmq__fault_disarm();
	shmq__spill_stat(log, &st);
	ok(st.error == -EIO && st.synced_offset == m.r[acked].off,
	   "the writer is failed and acknowledged nothing more");
	is_int(add_msg(log, &(struct model){ .end = m.end }, 1, 1, 1), -EIO,
	       "appends fail until it is reopened");
	is_int(shmq__spill_sync(log), -EIO, "and so does sync");
	shmq__spill_close(log);
	log = wopen(dir, &o, &rep);
	ok(log != NULL, "reopen after EIO re-validates (end %" PRIu64 ")", rep.end_offset);
	ok(rep.end_offset >= m.r[acked].off, "every acknowledged frame is still there");
	m.n = acked;
	m.end = m.r[acked - 1].off + m.r[acked - 1].size;
	shmq__spill_close(log);
	is_int(read_range(dir, &m, 0, m.n, false), 0, "acknowledged frames read back intact");

	/* EIO on a data write: failed. */
	log = wopen(dir, &o, &rep);
	m.end = rep.end_offset; /* the unacknowledged frames that made it stay */
	{
		struct model tmp = m;

		tmp.r = NULL;
		tmp.n = tmp.cap = 0;
		shmq__fault_reset();
		shmq__fault_arm(SHMQ_FAULT_WRITE, 1, EIO, 0);
		for (i = 0, rc = 0; i < 1000 && rc == 0; i++)
			rc = add_msg(log, &tmp, 0, 900, 8);
		shmq__fault_disarm();
		is_int(rc, -EIO, "EIO on a write is returned");
		shmq__spill_stat(log, &st);
		ok(st.error == -EIO, "and fails the writer");
		model_free(&tmp);
	}
	shmq__spill_close(log);

	/* EIO from fdatasync at a roll. */
	log = wopen(dir, &o, &rep);
	{
		struct model tmp = { .end = rep.end_offset };

		shmq__fault_reset();
		shmq__fault_arm(SHMQ_FAULT_FDATASYNC, 1, EIO, 0);
		for (i = 0, rc = 0; i < 2000 && rc == 0; i++)
			rc = add_msg(log, &tmp, 0, 3000, 9);
		shmq__fault_disarm();
		is_int(rc, -EIO, "EIO syncing a finished segment at a roll fails the append");
		model_free(&tmp);
	}
	shmq__spill_close(log);

	/* Recovery's own I/O failing: the open fails, a later one works. */
	{
		char seg[512];
		uint64_t firsts[64];
		size_t nf = list_firsts(dir, firsts, 64);
		struct shmq_spill_log *l2 = NULL;
		uint8_t junk[100];

		seg_path(dir, firsts[nf - 1], SHMQ_SPILL_SEG_EXT, seg, sizeof(seg));
		fill(junk, sizeof(junk), 1);
		{
			int fd = open(seg, O_WRONLY | O_APPEND);

			if (fd < 0 || write(fd, junk, sizeof(junk)) != (ssize_t)sizeof(junk))
				bail("append junk");
			close(fd);
		}
		shmq__fault_reset();
		shmq__fault_arm(SHMQ_FAULT_FTRUNCATE, 1, EIO, 0);
		rc = shmq__spill_open(dir, TOPIC, 0, &o, &rep, &l2);
		shmq__fault_disarm();
		is_int(rc, -EIO, "an ftruncate failing in recovery fails the open");
		l2 = wopen(dir, &o, &rep);
		ok(l2 && rep.cuts == 1 && rep.cut_bytes == sizeof(junk),
		   "the next open cuts the junk");
		diag_rep("junk", &rep);
		shmq__spill_close(l2);
	}
	is_int(read_range(dir, &m, 0, m.n, false), 0, "acknowledged frames still read back");
	ok(shmq__fault_active == 0, "disarmed again");
	model_free(&m);
	tu_cleanup(dir);
}

static void test_retention(void)
{
	char dir[256];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_retain_stat rs;
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r;
	struct shmq_spill_stat st, st2;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint64_t now = shmq__now_ns(), hour = 3600ull * 1000000000ull, old_end;
	size_t i, first_new;
	int rc;

	o.segment_bytes = 64 * KiB;
	tu_make_dir("spill-ret", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	/* Two hours old, then fresh. */
	for (i = 0; i < 200; i++)
		add_msg(log, &m, 8, 1000, now - 2 * hour + i);
	shmq__spill_roll(log);
	old_end = m.end;
	first_new = m.n;
	for (i = 0; i < 200; i++)
		add_msg(log, &m, 8, 1000, now - 60ull * 1000000000ull + i);
	shmq__spill_sync(log);
	shmq__spill_stat(log, &st);

	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	is_int(shmq__spill_read(r, m.r[3].off, &v), 0, "a reader holds an old segment open");

	rc = shmq__spill_retain(log, 0, hour, now, &rs);
	ok(rc > 0 && rs.first_offset == old_end,
	   "retention by age deleted %d segments: the log now starts at %" PRIu64, rc,
	   rs.first_offset);
	shmq__spill_stat(log, &st2);
	ok(st2.first_offset == old_end && st2.disk_bytes == st.disk_bytes - rs.bytes,
	   "stat agrees: first %" PRIu64 ", %" PRIu64 " bytes", st2.first_offset, st2.disk_bytes);
	is_int(shmq__spill_read(r, m.r[100].off, &v), SHMQ_EGONE,
	       "an offset retention deleted is SHMQ_EGONE");
	rc = shmq__spill_read(r, m.r[first_new].off, &v);
	ok(rc == 0 && view_ok(&m.r[first_new], &v), "the first retained offset reads");
	shmq__spill_reader_close(r);
	is_int(read_seq(dir, &m, first_new, m.n), 0, "everything retained reads back");

	rc = shmq__spill_retain(log, 200 * KiB, 0, now, &rs);
	shmq__spill_stat(log, &st2);
	ok(rc > 0 && st2.disk_bytes <= 200 * KiB, "retention by size: %" PRIu64 " bytes left",
	   st2.disk_bytes);
	rc = shmq__spill_retain(log, 1, 1, now, &rs);
	shmq__spill_stat(log, &st2);
	ok(st2.segments == 1 && st2.active_offset == st2.first_offset,
	   "the segment being written is never deleted");
	is_int(add_msg(log, &m, 1, 1, now), 0, "and the log goes on");
	shmq__spill_close(log);
	log = wopen(dir, &o, NULL);
	shmq__spill_stat(log, &st2);
	ok(st2.end_offset == m.end && st2.first_offset >= old_end, "reopen agrees");
	shmq__spill_close(log);
	model_free(&m);
	tu_cleanup(dir);
}

/* The first message (in offset order) with timestamp >= t. */
static uint64_t brute_time(const struct model *m, uint64_t t, bool *found)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		if (!m->r[i].pad && m->r[i].ts >= t) {
			*found = true;
			return m->r[i].off;
		}
	}
	*found = false;
	return m->end;
}

static void test_seek(void)
{
	char dir[256], path[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint64_t s = 11, firsts[64], off;
	size_t i, nf, bad = 0;
	int rc, k;

	tu_make_dir("spill-seek", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	/* Timestamps that mostly grow, with producers' jitter (not monotonic). */
	for (i = 0; i < 3000; i++) {
		uint64_t x = tu_splitmix(&s);

		if (x % 9 == 0)
			add_pad(log, &m, 64 + (x % 8) * 32);
		add_msg(log, &m, (uint16_t)(x % 5), (uint32_t)(x >> 8) % 1500,
			1000000 + i * 100 + (x >> 20) % 500);
	}
	shmq__spill_sync(log);
	shmq__spill_close(log);
	nf = list_firsts(dir, firsts, 64);

	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	for (i = 0; i < m.n; i += 7) {
		size_t j = (i * 7919) % m.n;

		rc = shmq__spill_read(r, m.r[j].off, &v);
		if (rc < 0 || !view_ok(&m.r[j], &v))
			bad++;
	}
	is_int(bad, 0, "seek by offset: scattered offsets read the right frames");

	for (k = 0; k < 3; k++) {
		uint64_t t;

		bad = 0;
		for (t = 900000; t < 1000000 + 3000 * 100 + 1000; t += 997) {
			bool found;
			uint64_t want = brute_time(&m, t, &found);

			off = 0;
			rc = shmq__spill_seek_time(r, t, &off);
			if (rc != (found ? 0 : -EAGAIN) || off != want) {
				if (bad++ < 3)
					diag("t %" PRIu64 ": got %d/%" PRIu64 ", want %" PRIu64, t, rc,
					     off, want);
			}
		}
		is_int(bad, 0, "seek by time: first message with timestamp >= t, for 300 t (%s)",
		       k == 0 ? "with indexes" : k == 1 ? "indexes garbled" : "indexes deleted");
		/* The index is a hint: garble it, then remove it; all stays right. */
		for (i = 0; i < nf; i++) {
			seg_path(dir, firsts[i], SHMQ_SPILL_IDX_EXT, path, sizeof(path));
			if (k == 0) {
				size_t len;
				uint8_t *b = slurp(path, &len);

				fill(b + SHMQ_SPILL_HEADER, len - SHMQ_SPILL_HEADER, i);
				spit(path, b, len);
				free(b);
			} else {
				unlink(path);
			}
		}
		shmq__spill_reader_close(r);
		rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
		bad = 0;
		for (i = 0; i < m.n; i += 3) {
			size_t j = (i * 7919) % m.n;

			rc = shmq__spill_read(r, m.r[j].off, &v);
			if (rc < 0 || !view_ok(&m.r[j], &v))
				bad++;
		}
		if (k < 2)
			is_int(bad, 0, "seek by offset with the indexes %s",
			       k == 0 ? "garbled" : "deleted");
	}
	shmq__spill_reader_close(r);

	/* An index that checksums right but lies about positions. */
	log = wopen(dir, &o, NULL); /* rebuilds the indexes */
	shmq__spill_close(log);
	for (i = 0; i < nf; i++) {
		size_t len, e;
		uint8_t *b;

		seg_path(dir, firsts[i], SHMQ_SPILL_IDX_EXT, path, sizeof(path));
		b = slurp(path, &len);
		for (e = SHMQ_SPILL_HEADER; e + 32 <= len; e += 32) {
			struct shmq_spill_idx_entry x;

			memcpy(&x, b + e, sizeof(x));
			x.file_pos += 32 * (e % 3);
			x.offset += 64 * (e % 2);
			x.max_ts /= 2;
			x.crc = shmq__crc32c(0, &x, 28);
			memcpy(b + e, &x, sizeof(x));
		}
		spit(path, b, len);
		free(b);
	}
	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	bad = 0;
	for (i = 0; i < m.n; i += 3) {
		size_t j = (i * 7919) % m.n;

		rc = shmq__spill_read(r, m.r[j].off, &v);
		if (rc < 0 || !view_ok(&m.r[j], &v))
			bad++;
	}
	is_int(bad, 0, "an index with valid checksums and wrong positions: reads still right");
	shmq__spill_reader_close(r);
	{
		struct shmq_spill_recovery rep;

		log = wopen(dir, &o, &rep);
		ok(log && rep.indexes_rebuilt >= 1 && rep.cuts == 0 && rep.end_offset == m.end,
		   "recovery re-validates and rebuilds lying indexes (%u)", rep.indexes_rebuilt);
		diag_rep("lying indexes", &rep);
		shmq__spill_close(log);
	}
	is_int(read_seq(dir, &m, 0, m.n), 0, "and the log is whole");
	model_free(&m);
	tu_cleanup(dir);
}

/* An older segment losing its tail leaves a hole that readers report. */
static void test_hole(void)
{
	char dir[256], path[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint64_t firsts[64], next = 0;
	size_t nf, i, last_kept = 0, after = 0;
	int rc;

	o.segment_bytes = 32 * KiB;
	tu_make_dir("spill-hole", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	for (i = 0; i < 200; i++)
		add_msg(log, &m, 4, 300 + (uint32_t)i, i);
	shmq__spill_sync(log);
	shmq__spill_close(log);
	nf = list_firsts(dir, firsts, 64);
	/* Cut the second segment in the middle of its third-to-last frame. */
	for (i = 0; i < m.n && m.r[i].off < firsts[2]; i++)
		;
	last_kept = i - 3;
	after = i;
	seg_path(dir, firsts[1], SHMQ_SPILL_SEG_EXT, path, sizeof(path));
	if (truncate(path, (off_t)(rec_pos(&m, last_kept, firsts[1]) + 40)) < 0)
		bail("truncate");
	log = wopen(dir, &o, &rep);
	ok(log && rep.holes == 1 && rep.hole_offset == m.r[last_kept].off && rep.cuts == 1 &&
		   rep.end_offset == m.end,
	   "an older segment's torn tail is cut, and the hole [%" PRIu64 ", %" PRIu64
	   ") reported", rep.hole_offset, firsts[2]);
	shmq__spill_close(log);

	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	for (i = 0; i < last_kept; i++) {
		rc = shmq__spill_read(r, m.r[i].off, &v);
		if (rc < 0)
			break;
	}
	ok(i == last_kept, "frames before the hole read");
	rc = shmq__spill_read(r, m.r[last_kept].off, &v);
	is_int(rc, SHMQ_ECORRUPT, "the first offset of the hole is SHMQ_ECORRUPT (%s)",
	       shmq_errdetail());
	rc = shmq__spill_skip(r, m.r[last_kept].off, &next);
	ok(rc == 0 && next == firsts[2], "skip goes on at the next segment");
	is_int(shmq__spill_read(r, m.r[last_kept + 1].off, &v), SHMQ_ECORRUPT,
	       "an offset inside the hole is SHMQ_ECORRUPT too");
	shmq__spill_reader_close(r);
	is_int(read_seq(dir, &m, after, m.n), 0, "the segments after the hole read back");
	nf = list_firsts(dir, firsts, 64);

	/* A stray file with an unaligned name is no segment. */
	snprintf(path, sizeof(path), "%s/spill/%s/0/00000000000000000001.seg", dir, TOPIC);
	spit(path, "x", 1);
	log = wopen(dir, &o, &rep);
	ok(log && rep.segments == nf && rep.end_offset == m.end,
	   "a file named by an unaligned offset is ignored");
	shmq__spill_close(log);
	model_free(&m);
	tu_cleanup(dir);
}

/*
 * Power loss while the segment before the last was not synced yet (a
 * syncer finishes it while the next one is written): only the last two
 * segments can be damaged, and recovery checks both from their start.
 * Simulated on a log written through a syncer: blocks lost in the middle
 * of that segment (zeros, its tail intact) are found and reported; a tail
 * that was allocated but never written (zeros to the end) is cut, the
 * hole up to the last segment reported, and the last segment's frames
 * kept; and recovery syncs both segments, so synced starts at the end.
 */
static void test_unsynced(void)
{
	char dir[256], path[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_syncer *sy = NULL;
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct shmq_spill_stat st;
	struct model m = { 0 };
	uint64_t firsts[64], zfrom, zto;
	unsigned long calls;
	size_t nf, i, a, b, z, len;
	uint8_t *img, *copy;
	int rc, bad = 0;

	o.segment_bytes = 32 * KiB;
	tu_make_dir("spill-unsynced", dir, sizeof(dir));
	if (shmq__spill_syncer_start(&sy))
		bail("syncer: %s", shmq_errdetail());
	o.syncer = sy;
	log = wopen(dir, &o, NULL);
	if (!log)
		bail("open");
	for (i = 0, rc = 0; i < 300 && rc == 0; i++)
		rc = add_msg(log, &m, 4, 300 + (uint32_t)(i * 7 % 200), i);
	if (!rc)
		rc = shmq__spill_sync(log);
	shmq__spill_stat(log, &st);
	ok(rc == 0 && st.synced_offset == m.end && st.segments >= 4,
	   "300 frames through a syncer, %u segments, synced to the end", st.segments);
	shmq__spill_close(log);
	shmq__spill_syncer_stop(sy);
	o.syncer = NULL;

	nf = list_firsts(dir, firsts, 64);
	for (a = 0; a < m.n && m.r[a].off < firsts[nf - 2]; a++)
		;
	for (b = a; b < m.n && m.r[b].off < firsts[nf - 1]; b++)
		;
	seg_path(dir, firsts[nf - 2], SHMQ_SPILL_SEG_EXT, path, sizeof(path));
	img = slurp(path, &len);
	copy = malloc(len);
	if (!copy || b - a < 20)
		bail("segment %zu has %zu frames", nf - 2, b - a);

	/* Lost blocks early in it: before its last index entries. */
	z = a + (b - a) / 4;
	zfrom = rec_pos(&m, z, firsts[nf - 2]);
	zto = rec_pos(&m, z + 2, firsts[nf - 2]);
	memcpy(copy, img, len);
	memset(copy + zfrom, 0, zto - zfrom);
	spit(path, copy, len);
	log = wopen(dir, &o, &rep);
	ok(log && rep.corrupt == 1 && rep.corrupt_offset == m.r[z].off && rep.cuts == 0 &&
		   rep.end_offset == m.end,
	   "zeros in the middle of the segment before the last are found by recovery "
	   "(corrupt at %" PRIu64 ")", rep.corrupt_offset);
	diag_rep("middle", &rep);
	shmq__spill_close(log);
	spit(path, img, len);

	/* Recovery syncs both unsynced segments (and only those). */
	shmq__fault_reset();
	log = wopen(dir, &o, &rep);
	calls = shmq__fault_calls(SHMQ_FAULT_FDATASYNC);
	shmq__fault_disarm();
	ok(log && rep.cuts == 0 && rep.corrupt == 0 && calls == 2,
	   "a whole log: recovery fdatasyncs the last two segments (%lu calls)", calls);
	shmq__spill_close(log);

	/* Written, allocated, never reached the disk: zeros to its end. */
	zfrom = rec_pos(&m, b - 3, firsts[nf - 2]);
	memcpy(copy, img, len);
	memset(copy + zfrom, 0, len - zfrom);
	spit(path, copy, len);
	log = wopen(dir, &o, &rep);
	ok(log && rep.cuts == 1 && rep.cut_offset == m.r[b - 3].off &&
		   rep.cut_bytes == len - zfrom && rep.holes == 1 &&
		   rep.hole_offset == m.r[b - 3].off && rep.end_offset == m.end,
	   "a zeroed tail of the segment before the last is cut, the hole to the last "
	   "segment reported, the log's end kept");
	diag_rep("tail", &rep);
	if (log) {
		/* The log goes on after the last segment. */
		rc = add_msg(log, &m, 1, 10, 999);
		if (!rc)
			rc = shmq__spill_sync(log);
		bad += rc != 0;
		shmq__spill_close(log);
	}
	bad += read_range(dir, &m, 0, b - 3, false);
	bad += read_seq(dir, &m, b, m.n);
	is_int(bad, 0, "the frames before the cut, and those of the last segment "
	       "(and one appended after reopening), read back");
	free(copy);
	free(img);
	model_free(&m);
	tu_cleanup(dir);
}

/* Is a file of that path mapped into this process? */
static bool mapped(const char *path)
{
	char line[1024];
	bool found = false;
	size_t n = strlen(path);
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		size_t l = strcspn(line, "\n");

		found = l >= n && !memcmp(line + l - n, path, n);
	}
	fclose(f);
	return found;
}

/*
 * Readers map sealed segments; recovery must not cut a mapped one (the
 * reader would die of SIGBUS), and cuts it once it is no longer mapped.
 */
static void test_mapped_cut(void)
{
	char dir[256], path[512], real[PATH_MAX];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint64_t firsts[64], next = 0, size, pos;
	size_t i, first1 = 0, last_kept, after, bad = 0;
	uint8_t junk[4096];
	int fd, rc;

	o.segment_bytes = 32 * KiB;
	tu_make_dir("spill-mapped", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	for (i = 0; i < 200; i++)
		add_msg(log, &m, 4, 300 + (uint32_t)i, i);
	shmq__spill_sync(log);
	shmq__spill_close(log);
	list_firsts(dir, firsts, 64);
	for (i = 0; i < m.n && m.r[i].off < firsts[1]; i++)
		;
	first1 = i;
	for (; i < m.n && m.r[i].off < firsts[2]; i++)
		;
	after = i;
	last_kept = after - 3;
	seg_path(dir, firsts[1], SHMQ_SPILL_SEG_EXT, path, sizeof(path));
	if (!realpath(path, real))
		bail("realpath %s: %s", path, strerror(errno));

	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	if (rc < 0)
		bail("reader_open: %s", shmq_strerror(rc));
	rc = shmq__spill_read(r, m.r[first1].off, &v);
	ok(rc == 0 && view_ok(&m.r[first1], &v) && mapped(real),
	   "a reader maps the sealed segment %" PRIu64 " it reads", firsts[1]);

	/* Damage its last three frames in place: recovery would cut them. */
	size = file_size(path);
	pos = rec_pos(&m, last_kept, firsts[1]) + 40;
	memset(junk, 0xa5, sizeof(junk));
	fd = open(path, O_WRONLY);
	if (fd < 0)
		bail("open %s: %s", path, strerror(errno));
	while (pos < size) {
		size_t n = size - pos < sizeof(junk) ? (size_t)(size - pos) : sizeof(junk);

		if (pwrite(fd, junk, n, (off_t)pos) != (ssize_t)n)
			bail("pwrite %s: %s", path, strerror(errno));
		pos += n;
	}
	close(fd);
	log = wopen(dir, &o, &rep);
	ok(log && rep.cuts == 0 && rep.corrupt == 1 &&
		   rep.corrupt_offset == m.r[last_kept].off && file_size(path) == size,
	   "recovery keeps the damaged tail of a mapped segment instead of cutting it");
	if (!log || rep.cuts)
		diag_rep("recovery", &rep);
	shmq__spill_close(log);
	for (i = first1; i < last_kept; i++) {
		rc = shmq__spill_read(r, m.r[i].off, &v);
		bad += rc != 0 || !view_ok(&m.r[i], &v);
	}
	ok(bad == 0, "the reader still reads the frames before the damage");
	rc = shmq__spill_read(r, m.r[last_kept].off, &v);
	is_int(rc, SHMQ_ECORRUPT, "and reports the damage as SHMQ_ECORRUPT");
	rc = shmq__spill_skip(r, m.r[last_kept].off, &next);
	ok(rc == 0 && next == firsts[2], "skip goes on at the next segment");
	shmq__spill_reader_close(r);
	ok(!mapped(real), "a closed reader maps nothing");

	log = wopen(dir, &o, &rep);
	ok(log && rep.cuts == 1 && rep.cut_offset == m.r[last_kept].off,
	   "unmapped, the damaged tail is cut");
	shmq__spill_close(log);
	is_int(read_seq(dir, &m, after, m.n), 0, "the segments after it read back");
	model_free(&m);
	tu_cleanup(dir);
}

/* Headers: damaged ones are repaired; other versions and topics refused. */
static void test_headers(void)
{
	char dir[256], seg[512];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log = NULL;
	struct shmq_spill_reader *r;
	struct shmq_spill_seg_header h;
	struct shmq_frame_view v;
	struct model m = { 0 };
	uint8_t *b;
	size_t len;
	int rc;

	tu_make_dir("spill-hdr", dir, sizeof(dir));
	log = wopen(dir, &o, NULL);
	fill_log(log, &m, 50, 12);
	shmq__spill_sync(log);
	shmq__spill_close(log);
	seg_path(dir, 0, SHMQ_SPILL_SEG_EXT, seg, sizeof(seg));

	flip_bit(seg, 40, 1); /* created_ns */
	log = wopen(dir, &o, &rep);
	ok(log && rep.headers_repaired == 1 && rep.end_offset == m.end,
	   "a damaged header is rewritten, the frames kept");
	shmq__spill_close(log);
	is_int(read_seq(dir, &m, 0, m.n), 0, "all frames read back");

	b = slurp(seg, &len);
	memcpy(&h, b, sizeof(h));
	h.version = SHMQ_SPILL_FORMAT + 1;
	h.crc = shmq__crc32c(0, &h, 60);
	memcpy(b, &h, sizeof(h));
	spit(seg, b, len);
	is_int(shmq__spill_open(dir, TOPIC, 0, &o, NULL, &log), SHMQ_EVERSION,
	       "a segment of another format version refuses the open");
	rc = shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	is_int(shmq__spill_read(r, 0, &v), SHMQ_EVERSION, "and the reader");
	shmq__spill_reader_close(r);
	h.version = SHMQ_SPILL_FORMAT;
	h.topic_id = 0xbad;
	h.crc = shmq__crc32c(0, &h, 60);
	memcpy(b, &h, sizeof(h));
	spit(seg, b, len);
	is_int(shmq__spill_open(dir, TOPIC, 0, &o, NULL, &log), SHMQ_EFOREIGN,
	       "a segment of another topic id is refused");
	free(b);
	(void)rc;
	model_free(&m);
	tu_cleanup(dir);
}

/* A reader in another process follows a writer that is appending. */
static void test_follow(void)
{
	char dir[256], scratch[256];
	struct shmq_spill_opts o = small_opts();
	struct shmq_spill_log *log;
	struct shmq_spill_reader *r = NULL;
	struct shmq_frame_view v;
	struct model m = { 0 };
	size_t i = 0, bad = 0, waits = 0;
	uint64_t deadline;
	pid_t pid;
	int st;

	o.segment_bytes = 128 * KiB;
	tu_make_dir("spill-follow", dir, sizeof(dir));
	/* The model: the same appends, made here into a scratch log. */
	tu_make_dir("spill-scratch", scratch, sizeof(scratch));
	log = wopen(scratch, &o, NULL);
	for (i = 0; i < 40; i++)
		fill_log(log, &m, 50, 100 + i);
	shmq__spill_close(log);
	tu_cleanup(scratch);

	log = wopen(dir, &o, NULL); /* the log exists before the reader looks */
	shmq__spill_close(log);
	pid = fork();
	if (pid == 0) {
		struct model cm = { 0 };

		tap_child();
		log = wopen(dir, &o, NULL);
		for (i = 0; i < 40; i++) {
			if (fill_log(log, &cm, 50, 100 + i) < 0 || shmq__spill_flush(log) < 0)
				_exit(1);
			if (i % 4 == 0)
				usleep(1000);
		}
		shmq__spill_close(log);
		_exit(0);
	}
	deadline = tu_now_ns() + 20ull * 1000000000ull;
	shmq__spill_reader_open(dir, TOPIC, 0, NULL, &r);
	for (i = 0; i < m.n && tu_now_ns() < deadline;) {
		int rc = shmq__spill_read(r, m.r[i].off, &v);

		if (rc == -EAGAIN) {
			waits++;
			usleep(100);
			continue;
		}
		if ((rc < 0 || !view_ok(&m.r[i], &v)) && bad++ < 3)
			diag("follow: record %zu: %s %s", i, shmq_strerror(rc), shmq_errdetail());
		i++;
	}
	st = tu_wait_child(pid, 20000);
	if (i < m.n) {
		/* Stuck: say where, and whether it is there now the writer is done. */
		int rc = shmq__spill_read(r, m.r[i].off, &v);

		diag("follow: still waiting at record %zu (offset %" PRIu64 ") after %zu waits; read now: %s %s",
		     i, m.r[i].off, waits, shmq_strerror(rc), rc ? shmq_errdetail() : "");
	}
	shmq__spill_reader_close(r);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a writer process appended %zu frames", m.n);
	ok(i == m.n && bad == 0,
	   "a reader following it read all %zu frames intact across rolls (%zu waits)", i,
	   waits);
	model_free(&m);
	tu_cleanup(dir);
}

int main(void)
{
	tu_init(300);
	plan(NTESTS);
	kbuf = malloc(SHMQ_KEY_MAX);
	vbuf = malloc(VBUF_MAX);
	if (!kbuf || !vbuf)
		bail("out of memory");
	test_crc();
	test_names();
	test_round_trip();
	test_torn_tail();
	test_bitflip();
	test_faults();
	test_retention();
	test_seek();
	test_hole();
	test_unsynced();
	test_mapped_cut();
	test_headers();
	test_follow();
	free(kbuf);
	free(vbuf);
	return tap_done();
}
