/*
 * spill.c - partition logs on disk: segment files, sparse indexes,
 * recovery, retention, and the readers of other processes.
 *
 * Overview
 * --------
 * A partition's log on disk is a directory of segment files, each holding
 * a contiguous run of the partition's frames, named by the offset of its
 * first frame:
 *
 *   DIR/spill/<topic>/<partition>/00000000000000000000.seg  [0, 67108864)
 *                                 00000000000000000000.idx  its index
 *                                 00000000000067108864.seg  [67108864, end)
 *                                 00000000000067108864.idx
 *
 * The names sort as the offsets do, and segment k covers offsets from its
 * name up to segment k+1's name; the last covers up to the log's end.
 * shmqd appends (one writer per partition, enforced with flock on the
 * directory); consumers in other processes read with pread, never
 * through a mapping, so that a file cut by recovery or deleted by
 * retention can never fault them (SIGBUS) - at worst they read fewer bytes.
 *
 * Frames are stored exactly as in the ring (layout.h): the 32-byte header
 * with its seal (the frame's own offset | COMMITTED [| PAD]), then key and
 * value, zero-filled to 32 bytes.  Only two things differ from the ring:
 * the crc field is filled in, and a padding frame is stored as its header
 * alone, its size still the logical size it covers.  So the logical offsets
 * are the ring's, and a file position is found from an offset by walking
 * frames (or by the index), not by arithmetic.
 *
 * On-disk format (docs/spill-format.md has the same with more words)
 * ------------------------------------------------------------------
 * Segment file, all integers little-endian:
 *
 *   0      8      12     16            24     28     32            40
 *   +------+------+------+-------------+------+------+-------------+
 *   |magic |vers. |hdr=64| topic_id    | part.|flags | first_offset|
 *   +------+------+------+-------------+------+------+-------------+
 *   40            48     52     56     60     64
 *   +-------------+------+------+------+------+
 *   | created_ns  |fhdr32|algn32| rsvd | crc  |   crc = CRC-32C(0..59)
 *   +-------------+------+------+------+------+
 *   64: frames, back to back, each at a multiple of 32:
 *   +-------+------+---------+-------+-----------+-----+--------------+
 *   | seal  | size | key_len | flags | value_len | crc | timestamp_ns | 32 B
 *   +-------+------+---------+-------+-----------+-----+--------------+
 *   | key | value | zeros to a multiple of 32    (not for padding)    |
 *   +------------------------------------------------------------------+
 *   frame crc = CRC-32C(header with crc = 0, then key, then value)
 *   seal = offset | 1 (COMMITTED) [| 2 (PAD)]
 *   a message takes `size` bytes of file; a pad takes 32 and covers
 *   `size` bytes of log (key_len, value_len, flags, timestamp are 0)
 *
 * Index file (a hint; never trusted beyond what is re-validated):
 *
 *   0      8      12     16            24     28     32
 *   +------+------+------+-------------+------+------+
 *   |magic |vers. |hdr=64| topic_id    | part.|intvl |
 *   +------+------+------+-------------+------+------+
 *   32            40              48               60     64
 *   +-------------+---------------+----------------+------+
 *   | first_offset| seg_created_ns|   reserved     | crc  |
 *   +-------------+---------------+----------------+------+
 *   64: entries of 32 bytes
 *   +-------------+-------------+-------------+------+------+
 *   | offset      | file_pos    | max_ts      |flags | crc  |  crc of 0..27
 *   +-------------+-------------+-------------+------+------+
 *
 * An entry is written for the first frame at least `interval` file bytes
 * after the previous entry (or the header).  max_ts is the greatest
 * message timestamp of the segment before file_pos: timestamps are taken
 * at claim time by many producers, so they are not monotonic in offset
 * order, and only a running maximum lets a search skip a prefix safely.
 * When a segment rolls, a last entry with flag END records its end offset,
 * its size and its greatest timestamp.  seg_created_ns ties the index to
 * one incarnation of its segment file.
 *
 * Invariants
 * ----------
 * - The writer's end offset is the next frame's offset; appends must come
 *   at exactly that offset, so the log has no gap and no overlap.
 * - Every frame of segment k has an offset in [first_k, first_{k+1}), and
 *   the frames of a segment are back to back: frame i+1 is at file position
 *   pos_i + (pad ? 32 : size_i) and offset off_i + size_i.
 * - Before segment k+1 is created, segment k is complete (its END entry
 *   written) and fdatasync'ed.  So after any crash, every segment but the
 *   last is whole, and only the last can have a torn tail.
 * - Readers see only whole frames whose CRC checks: bytes are copied into
 *   the reader's buffer, then checked, then handed out.
 * - written <= end (frames in the write buffer are not in the file yet),
 *   and synced <= written.  Only fdatasync success moves synced.
 *
 * Failure and recovery
 * --------------------
 * A crash of shmqd loses nothing that was flushed (the page cache keeps
 * it).  A power loss keeps what was synced and may leave, after it, a torn
 * tail in the last segment: partial frames, zeros, or stale blocks.
 * shmq__spill_open() therefore checks the last segment frame by frame from
 * its start, and every older segment from its last index entry that
 * validates (falling back to its start).  At the first frame that fails,
 * it looks further in the file for a valid frame (right seal for its
 * position, right CRC).  If there is none, the tail is cut there
 * (ftruncate, fdatasync) and reported; if there is one, the damage is in
 * the middle (a flipped bit, a lost block): it is kept and counted, and
 * readers report it as SHMQ_ECORRUPT at that offset rather than silently
 * dropping the valid frames after it.  A damaged segment header is
 * rewritten from the file name; a header of another format version or
 * topic refuses the whole open.  The index of the last segment is rebuilt
 * from the scan.
 *
 * Write errors: ENOSPC (or EDQUOT) while flushing cuts the partial write
 * off again and keeps the buffer, so the call can be repeated when space
 * returns.  Any other write error, and any failed fdatasync or fsync,
 * fails the writer for good (after a failed fsync the kernel may have
 * dropped the dirty pages, so the file's contents are unknown); the caller
 * must close and reopen, which re-validates.  Index writes that fail only
 * lose hints.
 *
 * Readers distinguish "not written yet" from "damaged" by position: a bad
 * or incomplete frame at the end of the last segment, with no valid frame
 * after it, is the writer at work (or a torn tail awaiting recovery):
 * -EAGAIN.  Anything else that fails its checks is SHMQ_ECORRUPT.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "spill.h"

#define SPILL_READ_BYTES	(256u << 10)
/* Index entries tried, newest first, before walking from the file start. */
#define SPILL_IDX_TRIES		8
/* A reader at the end of the last segment lists the directory again at
 * most this often when the directory's mtime says nothing changed (mtime
 * is coarse: a file created in the same tick as the last listing leaves
 * it unchanged). */
#define SPILL_RESCAN_NS		(10ull * 1000 * 1000)
#define SPILL_MIN_BUFFER	4096u

static inline uint64_t u64min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------------------------------
 * Names and headers
 */

void shmq__spill_file_name(uint64_t first, const char *ext, char *buf)
{
	snprintf(buf, SHMQ_SPILL_NAME_MAX, "%020" PRIu64 "%s", first, ext);
}

int shmq__spill_parse_name(const char *name, const char *ext, uint64_t *first)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < SHMQ_SPILL_NAME_DIGITS; i++) {
		unsigned d = (unsigned char)name[i] - '0';

		if (d > 9)
			return -EINVAL;
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	if (strcmp(name + SHMQ_SPILL_NAME_DIGITS, ext) != 0)
		return -EINVAL;
	*first = v;
	return 0;
}

static uint32_t header_crc(const void *h)
{
	return shmq__crc32c(0, h, SHMQ_SPILL_HEADER - 4);
}

static void seg_header_init(struct shmq_spill_seg_header *h, uint64_t topic_id,
			    uint32_t part, uint64_t first, uint64_t created)
{
	memset(h, 0, sizeof(*h));
	h->magic = SHMQ_SPILL_SEG_MAGIC;
	h->version = SHMQ_SPILL_FORMAT;
	h->header_bytes = SHMQ_SPILL_HEADER;
	h->topic_id = topic_id;
	h->partition = part;
	h->first_offset = first;
	h->created_ns = created;
	h->frame_header = SHMQ_FRAME_HEADER;
	h->frame_align = SHMQ_FRAME_ALIGN;
	h->crc = header_crc(h);
}

/*
 * Check a segment header read from a file named first.  The version is
 * looked at before the CRC: a later format may checksum differently, and
 * must be refused as such rather than "repaired".
 * Returns 0, SHMQ_EVERSION, SHMQ_EFOREIGN, or SHMQ_ECORRUPT.
 */
static int seg_header_check(const struct shmq_spill_seg_header *h, uint64_t first,
			    uint64_t topic_id, uint32_t part)
{
	if (h->magic == SHMQ_SPILL_SEG_MAGIC && h->version != SHMQ_SPILL_FORMAT &&
	    h->crc == header_crc(h))
		return SHMQ_EVERSION;
	if (h->magic != SHMQ_SPILL_SEG_MAGIC || h->crc != header_crc(h) ||
	    h->header_bytes != SHMQ_SPILL_HEADER || h->first_offset != first ||
	    h->frame_header != SHMQ_FRAME_HEADER || h->frame_align != SHMQ_FRAME_ALIGN)
		return SHMQ_ECORRUPT;
	if ((topic_id && h->topic_id && h->topic_id != topic_id) || h->partition != part)
		return SHMQ_EFOREIGN;
	return 0;
}

static void idx_header_init(struct shmq_spill_idx_header *h, uint64_t topic_id,
			    uint32_t part, uint32_t interval, uint64_t first,
			    uint64_t created)
{
	memset(h, 0, sizeof(*h));
	h->magic = SHMQ_SPILL_IDX_MAGIC;
	h->version = SHMQ_SPILL_FORMAT;
	h->header_bytes = SHMQ_SPILL_HEADER;
	h->topic_id = topic_id;
	h->partition = part;
	h->interval = interval;
	h->first_offset = first;
	h->seg_created_ns = created;
	h->crc = header_crc(h);
}

static void idx_entry_seal(struct shmq_spill_idx_entry *e)
{
	e->crc = shmq__crc32c(0, e, offsetof(struct shmq_spill_idx_entry, crc));
}

/* ------------------------------------------------------------------------
 * Frames
 */

/*
 * shmq__spill_frame_check with the length still needed when the answer is
 * PENDING (32 while the header is incomplete, then the frame's file length).
 */
static int frame_check(const uint8_t *buf, size_t avail, uint64_t offset,
		       uint32_t max_frame, struct shmq_frame_view *v,
		       uint32_t *file_len, size_t *need)
{
	struct shmq_frame h;
	uint64_t flags;
	uint32_t flen, crc, saved;
	bool pad;

	*need = SHMQ_FRAME_HEADER;
	if (avail < SHMQ_FRAME_HEADER)
		return SHMQ_FRAME_PENDING;
	memcpy(&h, buf, sizeof(h));
	flags = h.seal & SHMQ_SEAL_FLAGS;
	if ((h.seal & ~SHMQ_SEAL_FLAGS) != offset || !(flags & SHMQ_SEAL_COMMITTED) ||
	    (flags & ~(SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD)))
		return SHMQ_FRAME_BAD;
	if (h.size < SHMQ_FRAME_HEADER || (h.size & (SHMQ_FRAME_ALIGN - 1)) ||
	    offset > UINT64_MAX - h.size)
		return SHMQ_FRAME_BAD;
	pad = flags & SHMQ_SEAL_PAD;
	if (pad) {
		flen = SHMQ_FRAME_HEADER;
	} else {
		/* In 64 bits: a huge value_len must not wrap into a fit. */
		if (h.size > max_frame ||
		    (uint64_t)h.key_len + h.value_len > h.size - SHMQ_FRAME_HEADER ||
		    shmq__frame_bytes(h.key_len, h.value_len) != h.size)
			return SHMQ_FRAME_BAD;
		flen = h.size;
	}
	*need = flen;
	if (avail < flen)
		return SHMQ_FRAME_PENDING;
	saved = h.crc;
	h.crc = 0;
	crc = shmq__crc32c(0, &h, sizeof(h));
	if (!pad)
		crc = shmq__crc32c(crc, buf + SHMQ_FRAME_HEADER,
				   (size_t)h.key_len + h.value_len);
	if (crc != saved)
		return SHMQ_FRAME_BAD;
	v->pos = offset;
	v->size = h.size;
	v->pad = pad;
	v->gap = pad && (h.flags & SHMQ_FRAME_GAP);
	if (pad) {
		v->key_len = 0;
		v->value_len = 0;
		v->timestamp_ns = 0;
		v->key = v->value = NULL;
	} else {
		v->key_len = h.key_len;
		v->value_len = h.value_len;
		v->timestamp_ns = h.timestamp_ns;
		v->key = buf + SHMQ_FRAME_HEADER;
		v->value = v->key + h.key_len;
	}
	*file_len = flen;
	return SHMQ_FRAME_OK;
}

int shmq__spill_frame_check(const void *buf, size_t avail, uint64_t offset,
			    uint32_t max_frame, struct shmq_frame_view *v,
			    uint32_t *file_len)
{
	size_t need;

	return frame_check(buf, avail, offset, max_frame, v, file_len, &need);
}

/* ------------------------------------------------------------------------
 * A segment file read through a window (pread into a buffer)
 */
struct sfile {
	int fd;
	uint64_t first;	 /* the segment's first offset (its name) */
	uint64_t size;	 /* file size when last seen */
	uint32_t max_frame;
	uint8_t *buf;
	size_t cap;	 /* allocated */
	size_t want;	 /* usual read size */
	uint64_t wpos;	 /* file position of buf[0] */
	size_t wlen;	 /* valid bytes in buf */
};

static void sf_init(struct sfile *f, uint32_t max_frame, size_t want)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->max_frame = max_frame;
	f->want = want;
}

static void sf_drop(struct sfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	f->wlen = 0;
	f->size = 0;
}

static void sf_free(struct sfile *f)
{
	sf_drop(f);
	free(f->buf);
	f->buf = NULL;
	f->cap = 0;
}

static int sf_stat(struct sfile *f)
{
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	f->size = (uint64_t)st.st_size;
	return 0;
}

/*
 * Make [pos, pos + need) available, reading the file again when fresh or
 * when the window does not hold it.  Sets *p and *avail (bytes available
 * from pos: fewer than need at the end of the file), and *read_eof: -1 when
 * served from the window, else 1 when the read met the end of the file, 0
 * when it did not.  The buffer grows past the usual read size only for a
 * frame the file really holds, so a corrupt size can never make us
 * allocate more than the file's length.
 */
static int sf_get(struct sfile *f, uint64_t pos, size_t need, bool fresh,
		  const uint8_t **p, size_t *avail, int *read_eof)
{
	size_t len, got = 0;

	if (!fresh && pos >= f->wpos && pos - f->wpos <= f->wlen &&
	    f->wlen - (pos - f->wpos) >= need) {
		*p = f->buf + (pos - f->wpos);
		*avail = f->wlen - (size_t)(pos - f->wpos);
		if (read_eof)
			*read_eof = -1;
		return 0;
	}
	len = need > f->want ? need : f->want;
	if (len > f->cap) {
		int r = sf_stat(f);
		uint8_t *nb;

		if (r < 0)
			return r;
		if (pos >= f->size || f->size - pos < need)
			len = f->want; /* the file lacks it: a short read */
		if (len > f->cap) {
			nb = realloc(f->buf, len);
			if (!nb)
				return -ENOMEM;
			f->buf = nb;
			f->cap = len;
		}
	}
	while (got < len) {
		ssize_t n = pread(f->fd, f->buf + got, len - got, (off_t)(pos + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			f->wlen = 0;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	f->wpos = pos;
	f->wlen = got;
	if (pos + got > f->size)
		f->size = pos + got;
	*p = f->buf;
	*avail = got;
	if (read_eof)
		*read_eof = got < len;
	return 0;
}

/*
 * What sf_frame finds at a position.  Non-negative, so that callers can
 * tell them from -errno (SHMQ_FRAME_BAD is -1).
 */
#define SF_OK	   SHMQ_FRAME_OK      /* a valid frame */
#define SF_PENDING SHMQ_FRAME_PENDING /* the file ends inside it */
#define SF_END	   2		      /* the file ends here */
#define SF_BAD	   3		      /* it fails a check */

/*
 * Decode the frame at file position pos as offset off.  Anything but OK
 * that came from the window is read again from the file before it is
 * believed: the window may hold bytes read before a writer finished them,
 * or before recovery replaced a torn tail.
 */
static int sf_frame(struct sfile *f, uint64_t pos, uint64_t off,
		    struct shmq_frame_view *v, uint32_t *flen)
{
	const uint8_t *p;
	size_t avail, need = SHMQ_FRAME_HEADER;
	bool fresh = false;
	int r, st = SHMQ_FRAME_PENDING, tries, eof;

	for (tries = 0; tries < 4; tries++) {
		r = sf_get(f, pos, need, fresh, &p, &avail, &eof);
		if (r < 0)
			return r;
		if (avail == 0 && eof == 1)
			return SF_END;
		st = frame_check(p, avail, off, f->max_frame, v, flen, &need);
		if (st == SHMQ_FRAME_OK)
			return SF_OK;
		if (eof == 1)
			break;	   /* fresh from the file, and all it has */
		if (st == SHMQ_FRAME_PENDING && need > avail)
			continue;  /* the next get reads at least need bytes */
		if (eof == 0)
			break;	   /* fresh from the file */
		fresh = true;
	}
	return st == SHMQ_FRAME_PENDING ? SF_PENDING : SF_BAD;
}

/*
 * After a bad frame at (pos, off): the first valid frame further in the
 * file.  A candidate at q must carry an offset s with s > off and s - off
 * >= q - pos (a frame covers at least the bytes it takes in the file),
 * below limit, and pass every check including its CRC.  Returns 1 and sets
 * *q_out, *s_out; 0 when there is none; -errno.
 */
static int sf_resync(struct sfile *f, uint64_t pos, uint64_t off, uint64_t limit,
		     uint64_t *q_out, uint64_t *s_out)
{
	struct shmq_frame_view v;
	uint64_t q;
	uint32_t flen;
	int r;

	r = sf_stat(f);
	if (r < 0)
		return r;
	for (q = pos + SHMQ_FRAME_ALIGN; q + SHMQ_FRAME_HEADER <= f->size;
	     q += SHMQ_FRAME_ALIGN) {
		const uint8_t *p;
		size_t avail;
		uint64_t seal, s;

		r = sf_get(f, q, SHMQ_FRAME_HEADER, false, &p, &avail, NULL);
		if (r < 0)
			return r;
		if (avail < SHMQ_FRAME_HEADER)
			break;
		memcpy(&seal, p, sizeof(seal));
		s = seal & ~SHMQ_SEAL_FLAGS;
		if (!(seal & SHMQ_SEAL_COMMITTED) || s <= off || s >= limit ||
		    s - off < q - pos)
			continue;
		r = sf_frame(f, q, s, &v, &flen);
		if (r < 0)
			return r;
		if (r == SF_OK) {
			*q_out = q;
			*s_out = s;
			return 1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Indexes
 */
struct idx {
	struct shmq_spill_idx_entry *e;
	uint32_t n, cap;
	bool has_end;	       /* e[n - 1] is an END entry */
	uint64_t file_bytes;   /* size of the file it was read from */
};

static void idx_free(struct idx *x)
{
	free(x->e);
	memset(x, 0, sizeof(*x));
}

static int idx_push(struct idx *x, const struct shmq_spill_idx_entry *e)
{
	if (x->n == x->cap) {
		uint32_t nc = x->cap ? x->cap * 2 : 64;
		struct shmq_spill_idx_entry *ne = realloc(x->e, nc * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		x->e = ne;
		x->cap = nc;
	}
	x->e[x->n++] = *e;
	return 0;
}

/*
 * Read the index of the segment named first into x, keeping only entries
 * that are whole, checksum right, lie inside a segment of seg_size bytes,
 * and keep offset, position and max_ts in order.  A missing or foreign
 * index gives no entry.  Never fails but for -ENOMEM.
 */
static int idx_load(int dfd, uint64_t first, uint64_t created, uint64_t topic_id,
		    uint32_t part, uint64_t seg_size, struct idx *x)
{
	char name[SHMQ_SPILL_NAME_MAX];
	struct shmq_spill_idx_header h;
	struct shmq_spill_idx_entry *buf = NULL;
	struct stat st;
	uint64_t max_entries, n, i, prev_off = 0, prev_pos = 0, prev_ts = 0;
	size_t len, got = 0;
	int fd, r = 0;

	x->n = 0;
	x->has_end = false;
	x->file_bytes = 0;
	shmq__spill_file_name(first, SHMQ_SPILL_IDX_EXT, name);
	fd = shmq__fault_openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size < SHMQ_SPILL_HEADER)
		goto out;
	x->file_bytes = (uint64_t)st.st_size;
	/* At most one entry per frame, and one END. */
	max_entries = seg_size / SHMQ_FRAME_ALIGN + 1;
	n = ((uint64_t)st.st_size - SHMQ_SPILL_HEADER) / sizeof(*buf);
	if (n > max_entries)
		n = max_entries;
	len = SHMQ_SPILL_HEADER + (size_t)n * sizeof(*buf);
	buf = malloc(len);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	while (got < len) {
		ssize_t k = pread(fd, (uint8_t *)buf + got, len - got, (off_t)got);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	if (got < SHMQ_SPILL_HEADER)
		goto out;
	memcpy(&h, buf, sizeof(h));
	if (h.magic != SHMQ_SPILL_IDX_MAGIC || h.version != SHMQ_SPILL_FORMAT ||
	    h.header_bytes != SHMQ_SPILL_HEADER || h.crc != header_crc(&h) ||
	    h.first_offset != first || h.partition != part ||
	    (created && h.seg_created_ns != created) ||
	    (topic_id && h.topic_id && h.topic_id != topic_id))
		goto out;
	n = (got - SHMQ_SPILL_HEADER) / sizeof(*buf);
	for (i = 0; i < n; i++) {
		struct shmq_spill_idx_entry e;

		memcpy(&e, (uint8_t *)buf + SHMQ_SPILL_HEADER + i * sizeof(e), sizeof(e));
		if (e.crc != shmq__crc32c(0, &e, offsetof(struct shmq_spill_idx_entry, crc)))
			continue;
		if (e.flags & ~SHMQ_SPILL_IDX_END)
			continue;
		if (e.offset < first || e.file_pos < SHMQ_SPILL_HEADER ||
		    e.file_pos > seg_size || (e.file_pos & (SHMQ_FRAME_ALIGN - 1)) ||
		    (e.offset & (SHMQ_FRAME_ALIGN - 1)))
			continue;
		if (x->n && (e.offset <= prev_off || e.file_pos <= prev_pos ||
			     e.max_ts < prev_ts))
			continue;
		r = idx_push(x, &e);
		if (r < 0)
			goto out;
		prev_off = e.offset;
		prev_pos = e.file_pos;
		prev_ts = e.max_ts;
		if (e.flags & SHMQ_SPILL_IDX_END) {
			x->has_end = true;
			break;
		}
	}
out:
	free(buf);
	close(fd);
	return r;
}

/*
 * The entry to start a walk for offset `target` from: the last entry at
 * or before it (not END) whose frame validates.  Sets *pos, *off, *max_ts;
 * falls back to the start of the file.
 */
static int idx_start(struct sfile *f, const struct idx *x, uint64_t target,
		     uint64_t *pos, uint64_t *off, uint64_t *max_ts)
{
	struct shmq_frame_view v;
	uint32_t flen, lo = 0, hi = x->n, tries = 0;
	int st;

	*pos = SHMQ_SPILL_HEADER;
	*off = f->first;
	*max_ts = 0;
	/* The number of entries with offset <= target. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (x->e[mid].offset <= target)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo > 0 && tries < SPILL_IDX_TRIES) {
		const struct shmq_spill_idx_entry *e = &x->e[--lo];

		if (e->flags & SHMQ_SPILL_IDX_END)
			continue;
		tries++;
		st = sf_frame(f, e->file_pos, e->offset, &v, &flen);
		if (st < 0)
			return st;
		if (st == SF_OK) {
			*pos = e->file_pos;
			*off = e->offset;
			*max_ts = e->max_ts;
			return 0;
		}
	}
	return 0;
}

/* Write a whole index file: header then entries.  Returns 0 or -errno. */
static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;

	while (n) {
		ssize_t w = shmq__fault_pwrite(fd, p, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Directories
 */

static mode_t dir_mode(uint32_t mode)
{
	return (mode_t)(mode | ((mode & 0444) >> 2));
}

int shmq__spill_open_dir(const char *dir, const char *const *comp, int n,
			 bool create, uint32_t mode)
{
	int fd, i;

	fd = shmq__fault_openat(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (fd < 0)
		return shmq__fail(-errno, "%s: %s", dir, strerror(errno));
	for (i = 0; i < n; i++) {
		int nfd, r;

		if (create) {
			if (mkdirat(fd, comp[i], dir_mode(mode)) == 0) {
				if (shmq__fault_fsync(fd) < 0) {
					r = -errno;
					close(fd);
					return shmq__fail(r, "%s: fsync after mkdir %s: %s",
							  dir, comp[i], strerror(-r));
				}
			} else if (errno != EEXIST) {
				r = -errno;
				close(fd);
				return shmq__fail(r, "%s: mkdir %s: %s", dir, comp[i],
						  strerror(-r));
			}
		}
		nfd = shmq__fault_openat(fd, comp[i],
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
		r = -errno;
		close(fd);
		if (nfd < 0)
			return shmq__fail(r, "%s: %s: %s", dir, comp[i], strerror(-r));
		fd = nfd;
	}
	return fd;
}

/* Open DIR/spill/<topic>/<partition> (see shmq__spill_open_dir). */
static int open_log_dir(const char *dir, const char *topic, uint32_t part,
			bool create, uint32_t mode)
{
	char pname[16];
	const char *comp[3] = { SHMQ_SPILL_DIRNAME, topic, pname };

	snprintf(pname, sizeof(pname), "%u", part);
	return shmq__spill_open_dir(dir, comp, 3, create, mode);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * List the segments of a log directory, sorted.  With orphans (may be
 * NULL), also the index files that have no segment.
 */
static int list_segments(int dfd, uint64_t **out, uint32_t *n_out,
			 uint64_t **orphans, uint32_t *n_orphans)
{
	uint64_t *segs = NULL, *idxs = NULL, v;
	uint32_t n = 0, cap = 0, ni = 0, capi = 0, i, j;
	struct dirent *d;
	DIR *dir;
	int fd, r = 0;

	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		r = -errno;
		close(fd);
		return r;
	}
	while ((d = readdir(dir))) {
		bool is_seg = shmq__spill_parse_name(d->d_name, SHMQ_SPILL_SEG_EXT, &v) == 0;

		if (!is_seg && (!orphans ||
				shmq__spill_parse_name(d->d_name, SHMQ_SPILL_IDX_EXT, &v) != 0))
			continue;
		/* Every offset is a multiple of the alignment: not ours. */
		if (v & (SHMQ_FRAME_ALIGN - 1))
			continue;
		if (is_seg ? n == cap : ni == capi) {
			uint32_t nc = (is_seg ? cap : capi) ? (is_seg ? cap : capi) * 2 : 16;
			uint64_t *nv = realloc(is_seg ? segs : idxs, nc * sizeof(*nv));

			if (!nv) {
				r = -ENOMEM;
				break;
			}
			if (is_seg) {
				segs = nv;
				cap = nc;
			} else {
				idxs = nv;
				capi = nc;
			}
		}
		if (is_seg)
			segs[n++] = v;
		else
			idxs[ni++] = v;
	}
	closedir(dir);
	if (r < 0) {
		free(segs);
		free(idxs);
		return r;
	}
	if (n)
		qsort(segs, n, sizeof(*segs), cmp_u64);
	if (orphans) {
		/* Keep only index files without their segment. */
		for (i = j = 0; i < ni; i++) {
			if (!n || !bsearch(&idxs[i], segs, n, sizeof(*segs), cmp_u64))
				idxs[j++] = idxs[i];
		}
		*orphans = idxs;
		*n_orphans = j;
	}
	*out = segs;
	*n_out = n;
	return 0;
}

/* ------------------------------------------------------------------------
 * The writer
 */
struct wseg {
	uint64_t first;
	uint64_t end;	    /* logical end */
	uint64_t bytes;	    /* segment file bytes */
	uint64_t idx_bytes; /* index file bytes */
	uint64_t max_ts;    /* greatest message timestamp, 0 if none */
};

struct shmq_spill_log {
	int dfd;	    /* the partition directory, flock'ed */
	char *path;	    /* for details */
	uint32_t part;
	struct shmq_spill_opts o;
	struct wseg *segs;  /* oldest first; the last is being written */
	uint32_t nsegs, capsegs;

	int fd;		    /* active segment, -1 when a new one is due */
	int ifd;	    /* its index, -1 when lost (hints only) */
	uint64_t created_ns;
	uint64_t file_bytes;	 /* segment bytes in the file */
	uint64_t idx_file_bytes; /* index bytes in the file */
	uint64_t last_ipos;	 /* file position of the last index entry */
	uint64_t seg_max_ts;
	struct idx ipend;	 /* entries not written yet */

	uint64_t end;	    /* next offset */
	uint64_t written;   /* end of what is in the file */
	uint64_t synced;    /* end of what is durable */
	uint8_t *buf;	    /* frames [written, end) of the active segment */
	size_t blen, bcap;
	bool dir_dirty;	    /* a file was created since the last fsync of dfd */
	int failed;	    /* sticky: the writer must be reopened */
	uint64_t index_errors;
};

static struct wseg *last_seg(struct shmq_spill_log *log)
{
	return &log->segs[log->nsegs - 1];
}

static int segs_push(struct shmq_spill_log *log, const struct wseg *s)
{
	if (log->nsegs == log->capsegs) {
		uint32_t nc = log->capsegs ? log->capsegs * 2 : 16;
		struct wseg *ns = realloc(log->segs, nc * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		log->segs = ns;
		log->capsegs = nc;
	}
	log->segs[log->nsegs++] = *s;
	return 0;
}

/* Fail the writer for good (see "Failure and recovery").  Returns err. */
static int wfail(struct shmq_spill_log *log, int err, const char *what)
{
	log->failed = err;
	return shmq__fail(err, "%s: %s: %s (the log must be reopened)", log->path,
			  what, strerror(-err));
}

/* Write the pending index entries.  Failures lose hints only. */
static void idx_flush(struct shmq_spill_log *log)
{
	size_t len = (size_t)log->ipend.n * sizeof(struct shmq_spill_idx_entry);

	if (!log->ipend.n)
		return;
	if (log->ifd < 0) {
		log->index_errors++;
	} else if (pwrite_all(log->ifd, log->ipend.e, len, log->idx_file_bytes) < 0) {
		/* Cut what may be half written, so later entries stay whole. */
		if (shmq__fault_ftruncate(log->ifd, (off_t)log->idx_file_bytes) < 0) {
			close(log->ifd);
			log->ifd = -1;
		}
		log->index_errors++;
	} else {
		log->idx_file_bytes += len;
		last_seg(log)->idx_bytes = log->idx_file_bytes;
	}
	log->ipend.n = 0;
}

/*
 * Write the buffer at the end of the file.  On ENOSPC/EDQUOT, cut the part
 * that made it and keep the buffer; on any other error, fail the writer.
 */
static int wflush(struct shmq_spill_log *log)
{
	int r;

	if (log->failed)
		return log->failed;
	if (log->blen) {
		r = pwrite_all(log->fd, log->buf, log->blen, log->file_bytes);
		if (r < 0) {
			if (shmq__fault_ftruncate(log->fd, (off_t)log->file_bytes) < 0)
				return wfail(log, r, "write, then ftruncate");
			if (r == -ENOSPC || r == -EDQUOT)
				return shmq__fail(r, "%s: write: %s", log->path,
						  strerror(-r));
			return wfail(log, r, "write");
		}
		/*
		 * Start writeback of what we just wrote, without waiting for
		 * it: the fdatasync at the end of a segment (or of a journal
		 * batch) then finds little left to do, instead of stalling
		 * shmqd for the whole segment at once.  A hint: its result
		 * does not matter, the sync that follows decides.
		 */
		(void)sync_file_range(log->fd, (off_t)log->file_bytes,
				      (off_t)log->blen, SYNC_FILE_RANGE_WRITE);
		log->file_bytes += log->blen;
		log->blen = 0;
		last_seg(log)->bytes = log->file_bytes;
	}
	log->written = log->end;
	idx_flush(log);
	return 0;
}

/*
 * Finish the active segment: flush, write its END entry, fdatasync it (so
 * that every segment but the last is whole after a crash), close it.
 */
static int finish_segment(struct shmq_spill_log *log)
{
	struct shmq_spill_idx_entry e;
	int r;

	if (log->fd < 0)
		return 0;
	r = wflush(log);
	if (r < 0)
		return r;
	e = (struct shmq_spill_idx_entry){ .offset = log->end,
					   .file_pos = log->file_bytes,
					   .max_ts = log->seg_max_ts,
					   .flags = SHMQ_SPILL_IDX_END };
	idx_entry_seal(&e);
	if (idx_push(&log->ipend, &e) == 0)
		idx_flush(log);
	if (log->synced != log->end && shmq__fault_fdatasync(log->fd) < 0)
		return wfail(log, -errno, "fdatasync of a finished segment");
	close(log->fd);
	log->fd = -1;
	if (log->ifd >= 0)
		close(log->ifd);
	log->ifd = -1;
	return 0;
}

/* Create and open the index of a new segment; failure only loses hints. */
static void create_index(struct shmq_spill_log *log, uint64_t first)
{
	struct shmq_spill_idx_header h;
	char name[SHMQ_SPILL_NAME_MAX];
	int fd;

	shmq__spill_file_name(first, SHMQ_SPILL_IDX_EXT, name);
	/* A stale index of that name belongs to a segment that is gone. */
	fd = shmq__fault_openat(log->dfd, name,
				O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
				log->o.mode);
	log->ifd = -1;
	log->idx_file_bytes = 0;
	if (fd < 0) {
		log->index_errors++;
		return;
	}
	idx_header_init(&h, log->o.topic_id, log->part, log->o.index_interval, first,
			log->created_ns);
	if (pwrite_all(fd, &h, sizeof(h), 0) < 0) {
		close(fd);
		log->index_errors++;
		return;
	}
	log->ifd = fd;
	log->idx_file_bytes = sizeof(h);
}

/* Create segment `first` (O_EXCL) with its header, and make it active. */
static int create_segment(struct shmq_spill_log *log, uint64_t first)
{
	struct shmq_spill_seg_header h;
	char name[SHMQ_SPILL_NAME_MAX];
	struct wseg s = { .first = first, .end = first };
	struct stat st;
	int fd, r;

	shmq__spill_file_name(first, SHMQ_SPILL_SEG_EXT, name);
	fd = shmq__fault_openat(log->dfd, name,
				O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
				log->o.mode);
	if (fd < 0 && errno == EEXIST) {
		/*
		 * Left by an earlier attempt that failed after creating it:
		 * reuse it if it holds no frame.
		 */
		fd = shmq__fault_openat(log->dfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
		if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
				(uint64_t)st.st_size > SHMQ_SPILL_HEADER)) {
			close(fd);
			return shmq__fail(-EEXIST, "%s/%s: exists and holds frames",
					  log->path, name);
		}
	}
	if (fd < 0)
		return shmq__fail(-errno, "%s/%s: create: %s", log->path, name,
				  strerror(errno));
	log->created_ns = shmq__now_ns();
	seg_header_init(&h, log->o.topic_id, log->part, first, log->created_ns);
	r = shmq__fault_ftruncate(fd, 0);
	if (r == 0)
		r = pwrite_all(fd, &h, sizeof(h), 0);
	else
		r = -errno;
	if (r < 0) {
		unlinkat(log->dfd, name, 0);
		close(fd);
		return shmq__fail(r, "%s/%s: write header: %s", log->path, name,
				  strerror(-r));
	}
	s.bytes = SHMQ_SPILL_HEADER;
	if (log->nsegs && last_seg(log)->first == first) {
		*last_seg(log) = s; /* replaces an empty segment */
	} else if ((r = segs_push(log, &s)) < 0) {
		unlinkat(log->dfd, name, 0);
		close(fd);
		return r;
	}
	log->fd = fd;
	log->file_bytes = SHMQ_SPILL_HEADER;
	log->last_ipos = SHMQ_SPILL_HEADER;
	log->seg_max_ts = 0;
	log->ipend.n = 0;
	log->dir_dirty = true;
	create_index(log, first);
	last_seg(log)->idx_bytes = log->idx_file_bytes;
	return 0;
}

int shmq__spill_roll(struct shmq_spill_log *log)
{
	int r;

	if (log->failed)
		return log->failed;
	if (log->fd >= 0 && log->file_bytes + log->blen == SHMQ_SPILL_HEADER)
		return 0; /* nothing in it: nothing to roll */
	r = finish_segment(log);
	if (r < 0)
		return r;
	return create_segment(log, log->end);
}

/* Is a roll due before appending flen more file bytes? */
static bool roll_due(struct shmq_spill_log *log, uint64_t flen)
{
	uint64_t used = log->file_bytes + log->blen;

	if (used == SHMQ_SPILL_HEADER)
		return false; /* an empty segment takes any frame */
	if (used + flen > log->o.segment_bytes)
		return true;
	return log->o.segment_age_ns &&
	       shmq__now_ns() - log->created_ns >= log->o.segment_age_ns;
}

static int append_frame(struct shmq_spill_log *log, const struct shmq_frame_view *v)
{
	struct shmq_frame h;
	uint32_t flen, crc;
	uint64_t fpos;
	int r;

	if (log->failed)
		return log->failed;
	if (v->pos != log->end)
		return shmq__fail(-EINVAL, "%s: append at %" PRIu64 ", the log ends at %" PRIu64,
				  log->path, v->pos, log->end);
	if (v->size < SHMQ_FRAME_HEADER || (v->size & (SHMQ_FRAME_ALIGN - 1)) ||
	    v->pos > UINT64_MAX - v->size ||
	    (!v->pad && (v->size > log->o.max_frame ||
			 shmq__frame_bytes(v->key_len, v->value_len) != v->size)))
		return shmq__fail(-EINVAL, "%s: frame at %" PRIu64 " has inconsistent sizes",
				  log->path, v->pos);
	flen = v->pad ? SHMQ_FRAME_HEADER : v->size;
	if (log->fd < 0 || roll_due(log, flen)) {
		r = log->fd < 0 ? create_segment(log, log->end) : shmq__spill_roll(log);
		if (r < 0)
			return r;
	}
	if (log->blen && flen > log->bcap - log->blen) {
		r = wflush(log);
		if (r < 0)
			return r;
	}

	memset(&h, 0, sizeof(h));
	h.seal = v->pos | SHMQ_SEAL_COMMITTED | (v->pad ? SHMQ_SEAL_PAD : 0);
	h.size = v->size;
	h.flags = v->pad && v->gap ? SHMQ_FRAME_GAP : 0;
	if (!v->pad) {
		h.key_len = v->key_len;
		h.value_len = v->value_len;
		h.timestamp_ns = v->timestamp_ns;
	}
	fpos = log->file_bytes + log->blen;

	if (flen <= log->bcap) {
		uint8_t *p = log->buf + log->blen;
		size_t kv = v->pad ? 0 : (size_t)v->key_len + v->value_len;

		/*
		 * Copy first, checksum the copy: what the file holds then
		 * always agrees with its CRC, whatever the ring does meanwhile.
		 */
		memcpy(p, &h, sizeof(h));
		if (!v->pad) {
			if (v->key_len)
				memcpy(p + sizeof(h), v->key, v->key_len);
			if (v->value_len)
				memcpy(p + sizeof(h) + v->key_len, v->value, v->value_len);
			memset(p + sizeof(h) + kv, 0, flen - sizeof(h) - kv);
		}
		crc = shmq__crc32c(0, p, sizeof(h) + kv);
		memcpy(p + offsetof(struct shmq_frame, crc), &crc, sizeof(crc));
		log->blen += flen;
	} else {
		/* Larger than the buffer (which is empty now): straight from
		 * the ring, checksummed there. */
		static const uint8_t zeros[SHMQ_FRAME_ALIGN];
		uint32_t kv = v->key_len + v->value_len;
		uint64_t at = fpos;

		crc = shmq__crc32c(0, &h, sizeof(h));
		crc = shmq__crc32c(crc, v->key, v->key_len);
		crc = shmq__crc32c(crc, v->value, v->value_len);
		h.crc = crc;
		r = pwrite_all(log->fd, &h, sizeof(h), at);
		at += sizeof(h);
		if (!r && v->key_len) {
			r = pwrite_all(log->fd, v->key, v->key_len, at);
			at += v->key_len;
		}
		if (!r && v->value_len) {
			r = pwrite_all(log->fd, v->value, v->value_len, at);
			at += v->value_len;
		}
		if (!r && flen - sizeof(h) - kv)
			r = pwrite_all(log->fd, zeros, flen - sizeof(h) - kv, at);
		if (r < 0) {
			if (shmq__fault_ftruncate(log->fd, (off_t)log->file_bytes) < 0)
				return wfail(log, r, "write, then ftruncate");
			if (r == -ENOSPC || r == -EDQUOT)
				return shmq__fail(r, "%s: write: %s", log->path, strerror(-r));
			return wfail(log, r, "write");
		}
		log->file_bytes += flen;
		last_seg(log)->bytes = log->file_bytes;
	}

	/* The index entry for this frame, if one is due. */
	if (fpos - log->last_ipos >= log->o.index_interval) {
		struct shmq_spill_idx_entry e = { .offset = v->pos, .file_pos = fpos,
						  .max_ts = log->seg_max_ts };

		idx_entry_seal(&e);
		if (idx_push(&log->ipend, &e) == 0)
			log->last_ipos = fpos;
	}
	if (!v->pad && v->timestamp_ns > log->seg_max_ts)
		log->seg_max_ts = v->timestamp_ns;
	log->end += v->size;
	last_seg(log)->end = log->end;
	last_seg(log)->max_ts = log->seg_max_ts;
	if (!log->blen) {
		log->written = log->end;
		idx_flush(log);
	}
	return 0;
}

int shmq__spill_append(struct shmq_spill_log *log, const struct shmq_frame_view *v)
{
	return append_frame(log, v);
}

int shmq__spill_append_raw(struct shmq_spill_log *log, uint64_t pos,
			   const void *frame, size_t avail)
{
	struct shmq_frame_view v;
	struct shmq_frame h;
	uint64_t flags;

	if (avail < sizeof(h))
		return shmq__fail(-EINVAL, "%s: frame at %" PRIu64 " is truncated",
				  log->path, pos);
	memcpy(&h, frame, sizeof(h));
	flags = h.seal & SHMQ_SEAL_FLAGS;
	if ((h.seal & ~SHMQ_SEAL_FLAGS) != pos || !(flags & SHMQ_SEAL_COMMITTED))
		return shmq__fail(-EINVAL, "%s: frame at %" PRIu64 " is not committed",
				  log->path, pos);
	memset(&v, 0, sizeof(v));
	v.pos = pos;
	v.size = h.size;
	v.pad = flags & SHMQ_SEAL_PAD;
	if (!v.pad) {
		if ((uint64_t)h.key_len + h.value_len > avail - sizeof(h))
			return shmq__fail(-EINVAL, "%s: frame at %" PRIu64 " is truncated",
					  log->path, pos);
		v.key_len = h.key_len;
		v.value_len = h.value_len;
		v.timestamp_ns = h.timestamp_ns;
		v.key = (const uint8_t *)frame + sizeof(h);
		v.value = v.key + h.key_len;
	}
	return append_frame(log, &v);
}

int shmq__spill_append_pad(struct shmq_spill_log *log, uint64_t pos, uint64_t len)
{
	struct shmq_frame_view v;
	int r;

	if (len & (SHMQ_FRAME_ALIGN - 1))
		return shmq__fail(-EINVAL, "%s: padding of %" PRIu64 " bytes is not aligned",
				  log->path, len);
	memset(&v, 0, sizeof(v));
	v.pad = true;
	v.gap = true;
	while (len) {
		v.pos = pos;
		v.size = (uint32_t)u64min(len, SHMQ_SPILL_PAD_MAX);
		r = append_frame(log, &v);
		if (r < 0)
			return r;
		pos += v.size;
		len -= v.size;
	}
	return 0;
}

int shmq__spill_flush(struct shmq_spill_log *log)
{
	if (log->fd < 0)
		return log->failed;
	return wflush(log);
}

int shmq__spill_sync(struct shmq_spill_log *log)
{
	int r;

	if (log->failed)
		return log->failed;
	if (log->fd >= 0) {
		r = wflush(log);
		if (r < 0)
			return r;
		if (log->synced != log->end && shmq__fault_fdatasync(log->fd) < 0)
			return wfail(log, -errno, "fdatasync");
	}
	if (log->dir_dirty) {
		if (shmq__fault_fsync(log->dfd) < 0)
			return wfail(log, -errno, "fsync of the directory");
		log->dir_dirty = false;
	}
	log->synced = log->end;
	return 0;
}

void shmq__spill_stat(const struct shmq_spill_log *log, struct shmq_spill_stat *st)
{
	uint32_t i;

	memset(st, 0, sizeof(*st));
	st->first_offset = log->nsegs ? log->segs[0].first : log->end;
	st->active_offset = log->nsegs ? log->segs[log->nsegs - 1].first : log->end;
	st->end_offset = log->end;
	st->written_offset = log->written;
	st->synced_offset = log->synced;
	st->segments = log->nsegs;
	st->error = log->failed;
	st->index_errors = log->index_errors;
	for (i = 0; i < log->nsegs; i++)
		st->disk_bytes += log->segs[i].bytes + log->segs[i].idx_bytes;
}

int shmq__spill_retain(struct shmq_spill_log *log, uint64_t max_bytes,
		       uint64_t max_age_ns, uint64_t now_ns,
		       struct shmq_spill_retain_stat *st)
{
	char name[SHMQ_SPILL_NAME_MAX];
	uint64_t total = 0, freed = 0;
	uint32_t i, n = 0;
	int r = 0;

	for (i = 0; i < log->nsegs; i++)
		total += log->segs[i].bytes + log->segs[i].idx_bytes;
	/* The newest segment is never deleted: it records the log's end. */
	while (n + 1 < log->nsegs) {
		const struct wseg *s = &log->segs[n];
		uint64_t b = s->bytes + s->idx_bytes;
		bool old = max_age_ns && (s->max_ts == 0 || now_ns < max_age_ns ||
					  s->max_ts <= now_ns - max_age_ns);
		bool big = max_bytes && total > max_bytes;

		if (!old && !big)
			break;
		shmq__spill_file_name(s->first, SHMQ_SPILL_SEG_EXT, name);
		if (unlinkat(log->dfd, name, 0) < 0 && errno != ENOENT) {
			r = shmq__fail(-errno, "%s/%s: unlink: %s", log->path, name,
				       strerror(errno));
			break;
		}
		/* The index goes second: an orphan index is removed at open. */
		shmq__spill_file_name(s->first, SHMQ_SPILL_IDX_EXT, name);
		unlinkat(log->dfd, name, 0);
		total -= b;
		freed += b;
		n++;
	}
	if (n) {
		memmove(log->segs, log->segs + n, (log->nsegs - n) * sizeof(*log->segs));
		log->nsegs -= n;
	}
	if (st) {
		st->segments = n;
		st->bytes = freed;
		st->first_offset = log->segs[0].first;
	}
	return r < 0 ? r : (int)n;
}

void shmq__spill_close(struct shmq_spill_log *log)
{
	if (!log)
		return;
	if (log->fd >= 0) {
		wflush(log);
		close(log->fd);
	}
	if (log->ifd >= 0)
		close(log->ifd);
	if (log->dfd >= 0)
		close(log->dfd); /* drops the flock */
	idx_free(&log->ipend);
	free(log->segs);
	free(log->buf);
	free(log->path);
	free(log);
}

/* ------------------------------------------------------------------------
 * Recovery (at open)
 */

/* Rewrite the index of a recovered segment from entries x (+ END). */
static int rewrite_index(struct shmq_spill_log *log, const struct wseg *s,
			 uint64_t created, const struct idx *x, bool with_end,
			 int *fd_out)
{
	struct shmq_spill_idx_header h;
	struct shmq_spill_idx_entry e;
	char name[SHMQ_SPILL_NAME_MAX];
	uint64_t at = SHMQ_SPILL_HEADER;
	int fd, r;

	shmq__spill_file_name(s->first, SHMQ_SPILL_IDX_EXT, name);
	fd = shmq__fault_openat(log->dfd, name,
				O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
				log->o.mode);
	if (fd < 0)
		return -errno;
	idx_header_init(&h, log->o.topic_id, log->part, log->o.index_interval,
			s->first, created);
	r = pwrite_all(fd, &h, sizeof(h), 0);
	if (!r && x->n) {
		r = pwrite_all(fd, x->e, x->n * sizeof(*x->e), at);
		at += x->n * sizeof(*x->e);
	}
	if (!r && with_end) {
		e = (struct shmq_spill_idx_entry){ .offset = s->end, .file_pos = s->bytes,
						   .max_ts = s->max_ts,
						   .flags = SHMQ_SPILL_IDX_END };
		idx_entry_seal(&e);
		r = pwrite_all(fd, &e, sizeof(e), at);
		at += sizeof(e);
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	if (fd_out) {
		*fd_out = fd;
		log->idx_file_bytes = at;
	} else {
		close(fd);
	}
	return (int)(at > INT32_MAX ? INT32_MAX : at);
}

static void note(uint64_t *slot, uint64_t off)
{
	if (*slot == SHMQ_POS_NONE)
		*slot = off;
}

/*
 * Recover segment i (see the design note).  For the last segment, leaves
 * it open as the active one.
 */
static int recover_segment(struct shmq_spill_log *log, uint32_t i,
			   struct shmq_spill_recovery *rep)
{
	bool last = i + 1 == log->nsegs, header_bad = false, full, cut = false;
	struct wseg *s = &log->segs[i];
	uint64_t limit = last ? UINT64_MAX : log->segs[i + 1].first;
	struct shmq_spill_seg_header h;
	char name[SHMQ_SPILL_NAME_MAX];
	struct idx old = { 0 }, built = { 0 };
	struct shmq_frame_view v;
	uint64_t pos, off, max_ts, created = 0;
	struct sfile f;
	struct stat st;
	const uint8_t *p;
	size_t avail;
	uint32_t flen;
	int r, st_f;

	sf_init(&f, log->o.max_frame, log->o.buffer_bytes);
	f.first = s->first;
	shmq__spill_file_name(s->first, SHMQ_SPILL_SEG_EXT, name);
	f.fd = shmq__fault_openat(log->dfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
	if (f.fd < 0)
		return shmq__fail(-errno, "%s/%s: open: %s", log->path, name, strerror(errno));
	if (fstat(f.fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = shmq__fail(-EINVAL, "%s/%s: not a regular file", log->path, name);
		goto out;
	}
	f.size = (uint64_t)st.st_size;

	r = sf_get(&f, 0, SHMQ_SPILL_HEADER, true, &p, &avail, NULL);
	if (r < 0)
		goto out;
	if (avail < SHMQ_SPILL_HEADER) {
		header_bad = true;
	} else {
		memcpy(&h, p, sizeof(h));
		r = seg_header_check(&h, s->first, log->o.topic_id, log->part);
		if (r == SHMQ_EVERSION || r == SHMQ_EFOREIGN) {
			shmq__fail(r, "%s/%s: %s", log->path, name,
				   r == SHMQ_EVERSION ? "written by another format version"
						      : "belongs to another topic or partition");
			goto out;
		}
		header_bad = r != 0;
		if (!header_bad)
			created = h.created_ns;
	}
	if (header_bad && f.size < SHMQ_SPILL_HEADER)
		f.size = 0; /* torn at creation: no frame can be in it */

	/* Where to start checking: the file start, or the index's last word. */
	full = last || header_bad;
	pos = SHMQ_SPILL_HEADER;
	off = s->first;
	max_ts = 0;
	if (!header_bad) {
		r = idx_load(log->dfd, s->first, created, log->o.topic_id, log->part,
			     f.size, &old);
		if (r < 0)
			goto out;
		if (!full) {
			r = idx_start(&f, &old, UINT64_MAX, &pos, &off, &max_ts);
			if (r < 0)
				goto out;
			if (pos == SHMQ_SPILL_HEADER)
				full = true;
		}
	}
	/* Rebuild the entries from the walk's start on; keep those before. */
	if (!full) {
		uint32_t k;

		for (k = 0; k < old.n && old.e[k].file_pos <= pos; k++) {
			if (old.e[k].flags & SHMQ_SPILL_IDX_END)
				break;
			if ((r = idx_push(&built, &old.e[k])) < 0)
				goto out;
		}
	}
	log->last_ipos = built.n ? built.e[built.n - 1].file_pos : SHMQ_SPILL_HEADER;

	while (f.size >= SHMQ_SPILL_HEADER) {
		if (off >= limit) {
			if (pos >= f.size)
				break; /* ends exactly where the next one starts */
			st_f = SF_BAD; /* overlaps the next segment */
		} else {
			st_f = sf_frame(&f, pos, off, &v, &flen);
			if (st_f < 0) {
				r = st_f;
				goto out;
			}
			if (st_f == SF_END)
				break;
			if (st_f == SF_OK && off + v.size > limit)
				st_f = SF_BAD;
		}
		if (st_f == SF_OK) {
			if (pos - log->last_ipos >= log->o.index_interval) {
				struct shmq_spill_idx_entry e = { .offset = off, .file_pos = pos,
								  .max_ts = max_ts };

				idx_entry_seal(&e);
				if ((r = idx_push(&built, &e)) < 0)
					goto out;
				log->last_ipos = pos;
			}
			if (!v.pad && v.timestamp_ns > max_ts)
				max_ts = v.timestamp_ns;
			if (rep)
				rep->frames++;
			pos += flen;
			off += v.size;
			continue;
		}
		/* A bad or incomplete frame: damage in the middle, or the tail? */
		{
			uint64_t q = 0, sv = 0;

			r = off >= limit ? 0 : sf_resync(&f, pos, off, limit, &q, &sv);
			if (r < 0)
				goto out;
			if (r == 1) {
				if (rep) {
					rep->corrupt++;
					note(&rep->corrupt_offset, off);
				}
				pos = q;
				off = sv;
				continue;
			}
		}
		if (rep) {
			rep->cuts++;
			rep->cut_bytes += f.size - pos;
			note(&rep->cut_offset, off);
		}
		if (shmq__fault_ftruncate(f.fd, (off_t)pos) < 0) {
			r = shmq__fail(-errno, "%s/%s: cutting the tail at %" PRIu64 ": %s",
				       log->path, name, pos, strerror(errno));
			goto out;
		}
		f.size = pos;
		f.wlen = 0;
		cut = true;
		break;
	}

	if (header_bad) {
		/* The name says where the segment starts; the rest is ours. */
		created = shmq__now_ns();
		seg_header_init(&h, log->o.topic_id, log->part, s->first, created);
		if (f.size < SHMQ_SPILL_HEADER && shmq__fault_ftruncate(f.fd, 0) < 0) {
			r = shmq__fail(-errno, "%s/%s: ftruncate: %s", log->path, name,
				       strerror(errno));
			goto out;
		}
		r = pwrite_all(f.fd, &h, sizeof(h), 0);
		if (r < 0) {
			shmq__fail(r, "%s/%s: rewriting the header: %s", log->path, name,
				   strerror(-r));
			goto out;
		}
		if (f.size < SHMQ_SPILL_HEADER)
			f.size = SHMQ_SPILL_HEADER;
		if (rep)
			rep->headers_repaired++;
	}
	if ((cut || header_bad) && shmq__fault_fdatasync(f.fd) < 0) {
		r = shmq__fail(-errno, "%s/%s: fdatasync after repair: %s", log->path,
			       name, strerror(errno));
		goto out;
	}

	s->end = off;
	s->bytes = f.size;
	s->max_ts = max_ts;

	/* The index: rebuilt for the last segment, and where it disagrees. */
	{
		bool same = !cut && !header_bad && old.n == built.n + !last &&
			    old.file_bytes == SHMQ_SPILL_HEADER + old.n * sizeof(*old.e) &&
			    (!built.n || !memcmp(old.e, built.e, built.n * sizeof(*old.e))) &&
			    (last || (old.has_end && old.e[old.n - 1].offset == s->end &&
				      old.e[old.n - 1].file_pos == s->bytes));
		int ifd = -1;

		if (same) {
			s->idx_bytes = old.file_bytes;
			if (last) {
				char iname[SHMQ_SPILL_NAME_MAX];

				shmq__spill_file_name(s->first, SHMQ_SPILL_IDX_EXT, iname);
				ifd = shmq__fault_openat(log->dfd, iname,
							 O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
				log->idx_file_bytes = old.file_bytes;
			}
		} else {
			r = rewrite_index(log, s, created, &built, !last, last ? &ifd : NULL);
			if (r < 0) {
				log->index_errors++;
				s->idx_bytes = 0;
			} else {
				s->idx_bytes = (uint64_t)r;
				if (rep)
					rep->indexes_rebuilt++;
			}
		}
		if (last) {
			log->ifd = ifd;
			if (ifd < 0)
				log->index_errors++;
			if (ifd >= 0)
				s->idx_bytes = log->idx_file_bytes;
		}
	}

	if (last) {
		/* Everything recovered is made durable: synced starts at the end. */
		if (shmq__fault_fdatasync(f.fd) < 0) {
			r = shmq__fail(-errno, "%s/%s: fdatasync: %s", log->path, name,
				       strerror(errno));
			goto out;
		}
		log->fd = f.fd;
		f.fd = -1;
		log->file_bytes = s->bytes;
		log->created_ns = created;
		log->seg_max_ts = max_ts;
		log->end = log->written = log->synced = s->end;
	}
	r = 0;
out:
	idx_free(&old);
	idx_free(&built);
	sf_free(&f);
	return r;
}

int shmq__spill_open(const char *dir, const char *topic, uint32_t partition,
		     const struct shmq_spill_opts *opts,
		     struct shmq_spill_recovery *rep, struct shmq_spill_log **out)
{
	struct shmq_spill_recovery local;
	struct shmq_spill_log *log;
	uint64_t *firsts = NULL, *orphans = NULL;
	uint32_t n = 0, norphans = 0, i;
	char name[SHMQ_SPILL_NAME_MAX];
	int r;

	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	rep->cut_offset = rep->corrupt_offset = rep->hole_offset = SHMQ_POS_NONE;
	rep->end_offset = SHMQ_POS_NONE;
	if (!shmq__name_valid(topic))
		return shmq__fail(-EINVAL, "invalid topic name");
	log = calloc(1, sizeof(*log));
	if (!log)
		return -ENOMEM;
	log->fd = log->ifd = log->dfd = -1;
	log->part = partition;
	if (opts)
		log->o = *opts;
	if (!log->o.segment_bytes)
		log->o.segment_bytes = SHMQ_SPILL_SEGMENT_BYTES;
	if (!log->o.index_interval)
		log->o.index_interval = SHMQ_SPILL_INDEX_INTERVAL;
	if (!log->o.buffer_bytes)
		log->o.buffer_bytes = SHMQ_SPILL_BUFFER_BYTES;
	if (!log->o.max_frame)
		log->o.max_frame = SHMQ_SPILL_FRAME_MAX;
	if (!log->o.mode)
		log->o.mode = 0600;
	if (log->o.buffer_bytes < SPILL_MIN_BUFFER)
		log->o.buffer_bytes = SPILL_MIN_BUFFER;
	log->o.buffer_bytes &= ~(SHMQ_FRAME_ALIGN - 1);
	if ((log->o.start_offset & (SHMQ_FRAME_ALIGN - 1)) ||
	    log->o.segment_bytes <= SHMQ_SPILL_HEADER || log->o.mode & ~0777u ||
	    log->o.index_interval < SHMQ_FRAME_ALIGN) {
		free(log);
		return shmq__fail(-EINVAL, "bad spill options");
	}
	if (asprintf(&log->path, "%s/%s/%s/%u", dir, SHMQ_SPILL_DIRNAME, topic,
		     partition) < 0) {
		log->path = NULL;
		r = -ENOMEM;
		goto fail;
	}
	log->bcap = log->o.buffer_bytes;
	log->buf = malloc(log->bcap);
	if (!log->buf) {
		r = -ENOMEM;
		goto fail;
	}

	r = open_log_dir(dir, topic, partition, true, log->o.mode);
	if (r < 0)
		goto fail;
	log->dfd = r;
	if (flock(log->dfd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		shmq__fail(r, "%s: %s", log->path,
			   r == -EBUSY ? "another writer has this log open" : strerror(-r));
		goto fail;
	}
	r = list_segments(log->dfd, &firsts, &n, &orphans, &norphans);
	if (r < 0) {
		shmq__fail(r, "%s: listing: %s", log->path, strerror(-r));
		goto fail;
	}
	for (i = 0; i < norphans; i++) {
		shmq__spill_file_name(orphans[i], SHMQ_SPILL_IDX_EXT, name);
		if (unlinkat(log->dfd, name, 0) == 0)
			rep->files_removed++;
	}
	free(orphans);
	rep->segments = n;
	for (i = 0; i < n; i++) {
		struct wseg s = { .first = firsts[i], .end = firsts[i] };

		if ((r = segs_push(log, &s)) < 0)
			goto fail;
	}
	free(firsts);
	firsts = NULL;

	if (n == 0) {
		/* The empty first segment records where the log starts. */
		r = create_segment(log, log->o.start_offset);
		if (r < 0)
			goto fail;
		if (shmq__fault_fdatasync(log->fd) < 0 || shmq__fault_fsync(log->dfd) < 0) {
			r = shmq__fail(-errno, "%s: sync of a new log: %s", log->path,
				       strerror(errno));
			goto fail;
		}
		log->dir_dirty = false;
		log->end = log->written = log->synced = log->o.start_offset;
	} else {
		for (i = 0; i < n; i++) {
			r = recover_segment(log, i, rep);
			if (r < 0)
				goto fail;
		}
		for (i = 0; i + 1 < n; i++) {
			if (log->segs[i].end != log->segs[i + 1].first) {
				rep->holes++;
				note(&rep->hole_offset, log->segs[i].end);
			}
		}
	}
	rep->end_offset = log->end;
	*out = log;
	return 0;

fail:
	free(firsts);
	shmq__spill_close(log);
	return r;
}

/* ------------------------------------------------------------------------
 * Readers
 */
struct shmq_spill_reader {
	int dfd;
	char *path;
	uint32_t part;
	struct shmq_spill_reader_opts o;
	uint64_t *firsts;	/* segments as last listed, sorted */
	uint32_t nseg;
	uint64_t listed_ns;	/* CLOCK_MONOTONIC of the last listing */
	struct timespec dir_mtime;

	struct sfile f;		/* the open segment (f.fd < 0: none) */
	uint64_t limit;		/* the next segment's first offset, or UINT64_MAX */
	uint64_t created;	/* its header's created_ns, 0 if unknown */
	struct idx idx;
	bool idx_loaded;

	bool seq;		/* the next frame's place is known: */
	uint64_t seq_off, seq_pos;
	uint64_t bad_off, bad_pos; /* where the last SHMQ_ECORRUPT was found */
	uint64_t bad_asked;	/* the offset that call was asked for */
	bool bad;
};

static int r_list(struct shmq_spill_reader *r)
{
	uint64_t *firsts;
	uint32_t n, i;
	struct stat st;
	int rc;

	if (fstat(r->dfd, &st) == 0)
		r->dir_mtime = st.st_mtim;
	rc = list_segments(r->dfd, &firsts, &n, NULL, NULL);
	if (rc < 0)
		return shmq__fail(rc, "%s: listing: %s", r->path, strerror(-rc));
	free(r->firsts);
	r->firsts = firsts;
	r->nseg = n;
	r->listed_ns = shmq__mono_ns();
	if (r->f.fd >= 0) {
		r->limit = UINT64_MAX;
		for (i = 0; i < n; i++) {
			if (firsts[i] > r->f.first) {
				r->limit = firsts[i];
				break;
			}
		}
	}
	return 0;
}

/* List again if the directory changed, or if the last listing is old. */
static int r_maybe_list(struct shmq_spill_reader *r)
{
	struct stat st;

	if (fstat(r->dfd, &st) == 0 &&
	    (st.st_mtim.tv_sec != r->dir_mtime.tv_sec ||
	     st.st_mtim.tv_nsec != r->dir_mtime.tv_nsec))
		return r_list(r);
	if (shmq__mono_ns() - r->listed_ns >= SPILL_RESCAN_NS)
		return r_list(r);
	return 0;
}

static void r_close_seg(struct shmq_spill_reader *r)
{
	sf_drop(&r->f);
	r->idx.n = 0;
	r->idx.has_end = false;
	r->idx_loaded = false;
	r->seq = false;
	r->bad = false;
	r->created = 0;
}

/*
 * Open segment `first` as the current one.  Returns 0, -ENOENT (gone),
 * SHMQ_EVERSION, SHMQ_EFOREIGN, -errno.
 */
static int r_open_seg(struct shmq_spill_reader *r, uint64_t first)
{
	struct shmq_spill_seg_header h;
	char name[SHMQ_SPILL_NAME_MAX];
	const uint8_t *p;
	size_t avail;
	uint32_t i;
	int rc;

	if (r->f.fd >= 0 && r->f.first == first)
		return 0;
	r_close_seg(r);
	shmq__spill_file_name(first, SHMQ_SPILL_SEG_EXT, name);
	r->f.fd = shmq__fault_openat(r->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
	if (r->f.fd < 0)
		return -errno;
	r->f.first = first;
	r->f.wlen = 0;
	rc = sf_stat(&r->f);
	if (rc == 0)
		rc = sf_get(&r->f, 0, SHMQ_SPILL_HEADER, true, &p, &avail, NULL);
	if (rc < 0) {
		r_close_seg(r);
		return shmq__fail(rc, "%s/%s: %s", r->path, name, strerror(-rc));
	}
	if (avail >= SHMQ_SPILL_HEADER) {
		memcpy(&h, p, sizeof(h));
		rc = seg_header_check(&h, first, r->o.topic_id, r->part);
		if (rc == SHMQ_EVERSION || rc == SHMQ_EFOREIGN) {
			r_close_seg(r);
			return shmq__fail(rc, "%s/%s: %s", r->path, name,
					  rc == SHMQ_EVERSION ? "another format version"
							      : "another topic or partition");
		}
		/* A damaged header only costs the index (it cannot be tied). */
		if (rc == 0)
			r->created = h.created_ns;
	}
	r->limit = UINT64_MAX;
	for (i = 0; i < r->nseg; i++) {
		if (r->firsts[i] > first) {
			r->limit = r->firsts[i];
			break;
		}
	}
	return 0;
}

static int r_load_idx(struct shmq_spill_reader *r)
{
	int rc;

	if (r->idx_loaded)
		return 0;
	if (!r->created) {
		r->idx.n = 0; /* a damaged header cannot vouch for an index */
		r->idx.has_end = false;
		return 0;
	}
	rc = sf_stat(&r->f);
	if (rc < 0)
		return rc;
	rc = idx_load(r->dfd, r->f.first, r->created, r->o.topic_id, r->part,
		      r->f.size, &r->idx);
	if (rc < 0)
		return rc;
	/* The segment being written grows its index: reload it next time. */
	r->idx_loaded = r->idx.has_end;
	return 0;
}

static int r_corrupt(struct shmq_spill_reader *r, uint64_t off, uint64_t pos,
		     uint64_t asked)
{
	r->bad = true;
	r->bad_off = off;
	r->bad_pos = pos;
	r->bad_asked = asked;
	r->seq = false;
	if (asked == off)
		return shmq__fail(SHMQ_ECORRUPT, "%s: frame at offset %" PRIu64
				  " (segment %" PRIu64 ", file position %" PRIu64
				  ") fails its checks", r->path, off, r->f.first, pos);
	return shmq__fail(SHMQ_ECORRUPT, "%s: offset %" PRIu64 " lies in damage from "
			  "offset %" PRIu64 " (segment %" PRIu64 ")", r->path, asked,
			  off, r->f.first);
}

/*
 * The frame at (pos, off) of the current segment is not valid: decide
 * between "not written yet" (-EAGAIN: the end of the last segment with
 * nothing valid after it) and damage (0; or 1 with the valid frame after
 * it in *q, *s, for a walk that passes by).
 *
 * Returns 2 when the frame has become valid meanwhile.  The writer writes
 * in order, so once a later frame or a later segment is on disk, this
 * frame is as final as it will ever be; but we may have read it half
 * written (a large frame goes out in several writes, and a reader can
 * see a write page by page) before finding that evidence.  So the frame
 * is read again after the evidence is in, and only then judged.
 */
static int r_damage(struct shmq_spill_reader *r, uint64_t pos, uint64_t off,
		    uint64_t *q, uint64_t *s)
{
	struct shmq_frame_view v;
	uint32_t flen;
	int found, rc;

	found = sf_resync(&r->f, pos, off, r->limit, q, s);
	if (found < 0)
		return found;
	if (!found && r->limit == UINT64_MAX) {
		rc = r_maybe_list(r);
		if (rc < 0)
			return rc;
		if (r->limit == UINT64_MAX)
			return -EAGAIN; /* the writer's tail */
	}
	rc = sf_frame(&r->f, pos, off, &v, &flen);
	if (rc < 0)
		return rc;
	if (rc == SF_OK)
		return 2;
	return found;
}

/*
 * Find the file position of offset x: the current segment is the one that
 * must hold it.  Returns 0 and *pos, 1 when a listing on the way showed
 * that a newer segment holds x (look again), or an error of
 * shmq__spill_read.
 */
static int r_walk_to(struct shmq_spill_reader *r, uint64_t x, uint64_t *pos_out)
{
	struct shmq_frame_view v;
	uint64_t pos, off, ts, q, s;
	uint32_t flen;
	int rc, st;

	if (x == r->f.first) {
		*pos_out = SHMQ_SPILL_HEADER;
		return 0;
	}
	rc = r_load_idx(r);
	if (rc < 0)
		return rc;
	rc = idx_start(&r->f, &r->idx, x, &pos, &off, &ts);
	if (rc < 0)
		return rc;
	while (off < x) {
		st = sf_frame(&r->f, pos, off, &v, &flen);
		if (st < 0)
			return st;
		if (st == SF_OK) {
			if (off + v.size > x)
				return shmq__fail(-EINVAL, "%s: offset %" PRIu64
						  " is inside the frame at %" PRIu64,
						  r->path, x, off);
			pos += flen;
			off += v.size;
			continue;
		}
		if (st == SF_END) {
			/* x is past this segment's frames. */
			if (r->limit == UINT64_MAX && (rc = r_maybe_list(r)) < 0)
				return rc;
			if (r->limit == UINT64_MAX)
				return -EAGAIN;
			if (x >= r->limit)
				return 1;
			return r_corrupt(r, off, pos, x);
		}
		rc = r_damage(r, pos, off, &q, &s);
		if (rc < 0)
			return rc;
		if (rc == 2)
			continue; /* whole now: walk over it */
		if (rc == 1 && s <= x) {
			pos = q;
			off = s;
			continue;
		}
		if (x >= r->limit)
			return 1;
		return r_corrupt(r, off, pos, x);
	}
	if (off != x)
		return shmq__fail(-EINVAL, "%s: offset %" PRIu64 " is not a frame start",
				  r->path, x);
	*pos_out = pos;
	return 0;
}

/* The segment that must hold offset x, opened.  -EAGAIN, SHMQ_EGONE... */
static int r_seek_seg(struct shmq_spill_reader *r, uint64_t x)
{
	uint32_t lo, hi, tries;
	int rc;

	for (tries = 0; tries < 3; tries++) {
		/* Our own file may have been deleted under us: look again. */
		if (r->f.fd >= 0) {
			struct stat st;

			if (fstat(r->f.fd, &st) == 0 && st.st_nlink == 0) {
				r_close_seg(r);
				if ((rc = r_list(r)) < 0)
					return rc;
			}
		}
		if (!r->nseg || x < r->firsts[0]) {
			if ((rc = r_list(r)) < 0)
				return rc;
		}
		if (!r->nseg)
			return -EAGAIN;
		if (x < r->firsts[0])
			return shmq__fail(SHMQ_EGONE, "%s: offset %" PRIu64 " is older than "
					  "the oldest segment (%" PRIu64 ")", r->path, x,
					  r->firsts[0]);
		/* The last segment whose first offset is <= x. */
		lo = 0;
		hi = r->nseg;
		while (hi - lo > 1) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (r->firsts[mid] <= x)
				lo = mid;
			else
				hi = mid;
		}
		rc = r_open_seg(r, r->firsts[lo]);
		if (rc != -ENOENT)
			return rc;
		/* Deleted by retention since we listed. */
		if ((rc = r_list(r)) < 0)
			return rc;
	}
	return -EAGAIN;
}

int shmq__spill_read(struct shmq_spill_reader *r, uint64_t x, struct shmq_frame_view *v)
{
	uint64_t pos = 0, q, s;
	uint32_t flen;
	int rc, st, hops;

	if (x & (SHMQ_FRAME_ALIGN - 1))
		return shmq__fail(-EINVAL, "%s: offset %" PRIu64 " is not aligned", r->path, x);
	for (hops = 0; hops < 4; hops++) {
		if (r->seq && r->f.fd >= 0 && x == r->seq_off) {
			pos = r->seq_pos;
		} else {
			rc = r_seek_seg(r, x);
			if (rc < 0)
				return rc;
			rc = r_walk_to(r, x, &pos);
			if (rc < 0)
				return rc;
			if (rc == 1) {
				r->seq = false;
				continue;
			}
		}
		st = sf_frame(&r->f, pos, x, v, &flen);
		if (st < 0)
			return st;
		if (st == SF_OK) {
			r->seq = true;
			r->seq_off = x + v->size;
			r->seq_pos = pos + flen;
			return 0;
		}
		if (st == SF_END) {
			/* The end of this segment's frames: the next segment? */
			if (r->limit == UINT64_MAX) {
				rc = r_maybe_list(r);
				if (rc < 0)
					return rc;
			}
			if (r->limit == UINT64_MAX)
				return -EAGAIN;
			if (r->limit != x)
				return r_corrupt(r, x, pos, x);
			rc = r_open_seg(r, r->limit);
			if (rc == -ENOENT)
				rc = r_list(r);
			if (rc < 0)
				return rc;
			r->seq = false;
			continue;
		}
		rc = r_damage(r, pos, x, &q, &s);
		if (rc < 0)
			return rc;
		if (rc == 2)
			continue; /* whole now: read it again */
		return r_corrupt(r, x, pos, x);
	}
	return -EAGAIN;
}

int shmq__spill_skip(struct shmq_spill_reader *r, uint64_t bad, uint64_t *next)
{
	struct shmq_frame_view v;
	uint64_t pos, off, q, s;
	int rc;

	/*
	 * Go on from the damage the caller was shown, not from a new search
	 * for bad: in a damaged file two routes may disagree about where an
	 * offset is, and skip must move forward from what read reported.
	 */
	if (!r->bad || r->bad_asked != bad || r->f.fd < 0) {
		rc = shmq__spill_read(r, bad, &v);
		if (rc == 0) {
			*next = bad; /* readable after all (a writer finished it) */
			return 0;
		}
		if (rc != SHMQ_ECORRUPT || !r->bad)
			return rc;
	}
	pos = r->bad_pos;
	off = r->bad_off;
	for (;;) {
		rc = sf_resync(&r->f, pos, off, r->limit, &q, &s);
		if (rc < 0)
			return rc;
		if (rc == 0)
			break;
		if (s > bad) {
			r->bad = false;
			r->seq = true;
			r->seq_off = s;
			r->seq_pos = q;
			*next = s;
			return 0;
		}
		pos = q; /* a valid frame, but not past bad: look further */
		off = s;
	}
	if (r->limit == UINT64_MAX && (rc = r_maybe_list(r)) < 0)
		return rc;
	if (r->limit == UINT64_MAX)
		return -EAGAIN;
	r->bad = false;
	*next = r->limit;
	return 0;
}

int shmq__spill_seek_time(struct shmq_spill_reader *r, uint64_t t, uint64_t *out)
{
	struct shmq_frame_view v;
	uint64_t pos, off = 0, ts, q, s, *firsts = NULL;
	uint32_t i, n, flen, lo, hi;
	int rc, st;

	rc = r_list(r);
	if (rc < 0)
		return rc;
	if (!r->nseg)
		return -ENOENT;
	n = r->nseg;
	firsts = malloc(n * sizeof(*firsts));
	if (!firsts)
		return -ENOMEM;
	memcpy(firsts, r->firsts, n * sizeof(*firsts));
	r->seq = false;
	for (i = 0; i < n; i++) {
		rc = r_open_seg(r, firsts[i]);
		if (rc == -ENOENT)
			continue;
		if (rc < 0)
			goto out;
		rc = r_load_idx(r);
		if (rc < 0)
			goto out;
		rc = sf_stat(&r->f);
		if (rc < 0)
			goto out;
		/* A whole segment older than t is passed by its END entry. */
		if (r->idx.has_end && i + 1 < n) {
			const struct shmq_spill_idx_entry *e = &r->idx.e[r->idx.n - 1];

			if (e->max_ts < t && e->file_pos == r->f.size && e->offset == firsts[i + 1])
				continue;
		}
		/* The last entry whose running maximum is below t. */
		lo = 0;
		hi = r->idx.n - (r->idx.has_end ? 1 : 0);
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (r->idx.e[mid].max_ts < t)
				lo = mid + 1;
			else
				hi = mid;
		}
		pos = SHMQ_SPILL_HEADER;
		off = firsts[i];
		if (lo) {
			struct idx one = { .e = &r->idx.e[lo - 1], .n = 1 };

			rc = idx_start(&r->f, &one, UINT64_MAX, &pos, &off, &ts);
			if (rc < 0)
				goto out;
		}
		for (;;) {
			st = sf_frame(&r->f, pos, off, &v, &flen);
			if (st < 0) {
				rc = st;
				goto out;
			}
			if (st == SF_OK) {
				if (!v.pad && v.timestamp_ns >= t) {
					*out = off;
					rc = 0;
					goto out;
				}
				pos += flen;
				off += v.size;
				continue;
			}
			if (st == SF_END)
				break;
			/* Damaged frames are passed over: never delivered. */
			rc = sf_resync(&r->f, pos, off, r->limit, &q, &s);
			if (rc < 0)
				goto out;
			if (rc == 0)
				break;
			pos = q;
			off = s;
		}
	}
	/* No message on disk is that recent: continue in the ring. */
	*out = off;
	rc = -EAGAIN;
out:
	free(firsts);
	return rc;
}

int shmq__spill_reader_range(struct shmq_spill_reader *r, uint64_t *first,
			     uint64_t *end)
{
	struct shmq_frame_view v;
	uint64_t pos, off, ts, q, s;
	uint32_t flen;
	int rc, st;

	rc = r_list(r);
	if (rc < 0)
		return rc;
	if (!r->nseg)
		return -ENOENT;
	rc = r_open_seg(r, r->firsts[r->nseg - 1]);
	if (rc < 0)
		return rc;
	r->seq = false;
	r->idx_loaded = false;
	rc = r_load_idx(r);
	if (rc < 0)
		return rc;
	rc = idx_start(&r->f, &r->idx, UINT64_MAX, &pos, &off, &ts);
	if (rc < 0)
		return rc;
	for (;;) {
		st = sf_frame(&r->f, pos, off, &v, &flen);
		if (st < 0)
			return st;
		if (st == SF_OK) {
			pos += flen;
			off += v.size;
			continue;
		}
		if (st == SF_END)
			break;
		rc = sf_resync(&r->f, pos, off, UINT64_MAX, &q, &s);
		if (rc < 0)
			return rc;
		if (rc == 0)
			break;
		pos = q;
		off = s;
	}
	*first = r->firsts[0];
	*end = off;
	return 0;
}

int shmq__spill_reader_open(const char *dir, const char *topic, uint32_t partition,
			    const struct shmq_spill_reader_opts *opts,
			    struct shmq_spill_reader **out)
{
	struct shmq_spill_reader *r;
	int rc;

	if (!shmq__name_valid(topic))
		return shmq__fail(-EINVAL, "invalid topic name");
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (opts)
		r->o = *opts;
	if (!r->o.max_frame)
		r->o.max_frame = SHMQ_SPILL_FRAME_MAX;
	if (!r->o.read_bytes)
		r->o.read_bytes = SPILL_READ_BYTES;
	r->part = partition;
	sf_init(&r->f, r->o.max_frame, r->o.read_bytes);
	if (asprintf(&r->path, "%s/%s/%s/%u", dir, SHMQ_SPILL_DIRNAME, topic,
		     partition) < 0) {
		free(r);
		return -ENOMEM;
	}
	rc = open_log_dir(dir, topic, partition, false, 0);
	if (rc < 0) {
		free(r->path);
		free(r);
		return rc;
	}
	r->dfd = rc;
	rc = r_list(r);
	if (rc < 0) {
		shmq__spill_reader_close(r);
		return rc;
	}
	*out = r;
	return 0;
}

void shmq__spill_reader_close(struct shmq_spill_reader *r)
{
	if (!r)
		return;
	sf_free(&r->f);
	idx_free(&r->idx);
	if (r->dfd >= 0)
		close(r->dfd);
	free(r->firsts);
	free(r->path);
	free(r);
}
