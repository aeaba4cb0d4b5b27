/*
 * spill-common.c - the parts of the spill module that the writer (spill.c)
 * and the reader (spill-read.c) share: file names, segment and index
 * headers, frame checks, a window over a segment file, the index in memory,
 * directories.  The design note and the on-disk format are in spill.c and
 * docs/spill-format.md.
 */
#define _GNU_SOURCE
#include "spill_priv.h"

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

uint32_t shmq__spill_header_crc(const void *h)
{
	return shmq__crc32c(0, h, SHMQ_SPILL_HEADER - 4);
}

void shmq__spill_seg_header_init(struct shmq_spill_seg_header *h, uint64_t topic_id,
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
	h->crc = shmq__spill_header_crc(h);
}

/*
 * Check a segment header read from a file named first.  The version is
 * looked at before the CRC: a later format may checksum differently, and
 * must be refused as such rather than "repaired".
 * Returns 0, SHMQ_EVERSION, SHMQ_EFOREIGN, or SHMQ_ECORRUPT.
 */
int shmq__spill_seg_header_check(const struct shmq_spill_seg_header *h, uint64_t first,
			    uint64_t topic_id, uint32_t part)
{
	if (h->magic == SHMQ_SPILL_SEG_MAGIC &&
	    (h->version < SHMQ_SPILL_FORMAT_MIN || h->version > SHMQ_SPILL_FORMAT) &&
	    h->crc == shmq__spill_header_crc(h))
		return SHMQ_EVERSION;
	if (h->magic != SHMQ_SPILL_SEG_MAGIC || h->crc != shmq__spill_header_crc(h) ||
	    h->header_bytes != SHMQ_SPILL_HEADER || h->first_offset != first ||
	    h->frame_header != SHMQ_FRAME_HEADER || h->frame_align != SHMQ_FRAME_ALIGN)
		return SHMQ_ECORRUPT;
	if ((topic_id && h->topic_id && h->topic_id != topic_id) || h->partition != part)
		return SHMQ_EFOREIGN;
	return 0;
}

void shmq__spill_idx_header_init(struct shmq_spill_idx_header *h, uint64_t topic_id,
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
	h->crc = shmq__spill_header_crc(h);
}

void shmq__spill_idx_entry_seal(struct shmq_spill_idx_entry *e)
{
	e->crc = shmq__crc32c(0, e, offsetof(struct shmq_spill_idx_entry, crc));
}

/* ------------------------------------------------------------------------
 * Frames
 */

/*
 * shmq__spill_frame_check with the length still needed when the answer is
 * PENDING (32 while the header is incomplete, then the frame's file length).
 *
 * The one parser of frames on disk: every read (sf_frame, resync, and the
 * warm-replay path r_next_mapped in spill-read.c) goes through it, and
 * shmq__spill_frame_check is this without *need.  shmq__spill_append_raw
 * (spill.c) reads a frame header too, but not through here: it takes a
 * frame from a ring, where producers leave the CRC 0 (the writer computes
 * it on the way to disk), so the CRC check here would refuse every frame
 * it is given; merging the two would cost the hot read path a flag test
 * for nothing.
 */
int shmq__spill_frame_parse(const uint8_t *buf, size_t avail, uint64_t offset,
		       uint32_t max_frame, struct shmq_frame_view *v,
		       uint32_t *file_len, size_t *need)
{
	struct shmq_frame h;
	struct shmq_frame_ext e;
	uint64_t flags;
	uint32_t flen, crc, saved, ext;
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
	ext = 0;
	if (pad) {
		if (h.flags & ~SHMQ_FRAME_GAP)
			return SHMQ_FRAME_BAD;
		flen = SHMQ_FRAME_HEADER;
	} else {
		ext = shmq__frame_ext_bytes(h.flags);
		/* In 64 bits: a huge value_len must not wrap into a fit. */
		if (h.size > max_frame || (h.flags & ~SHMQ_FRAME_PRODUCER) ||
		    (uint64_t)ext + h.key_len + h.value_len > h.size - SHMQ_FRAME_HEADER ||
		    shmq__frame_bytes(ext + h.key_len, h.value_len) != h.size)
			return SHMQ_FRAME_BAD;
		flen = h.size;
	}
	*need = flen;
	if (avail < flen)
		return SHMQ_FRAME_PENDING;
	saved = h.crc;
	h.crc = 0;
	crc = shmq__crc32c(0, &h, sizeof(h));
	/* The extension, key and value: back to back after the header. */
	if (!pad)
		crc = shmq__crc32c(crc, buf + SHMQ_FRAME_HEADER,
				   (size_t)ext + h.key_len + h.value_len);
	if (crc != saved)
		return SHMQ_FRAME_BAD;
	memset(&e, 0, sizeof(e));
	if (ext) {
		memcpy(&e, buf + SHMQ_FRAME_HEADER, sizeof(e));
		if (!e.producer_id || !e.seq)
			return SHMQ_FRAME_BAD;
	}
	v->pos = offset;
	v->size = h.size;
	v->pad = pad;
	v->gap = pad && (h.flags & SHMQ_FRAME_GAP);
	v->producer_id = e.producer_id;
	v->seq = e.seq;
	if (pad) {
		v->key_len = 0;
		v->value_len = 0;
		v->timestamp_ns = 0;
		v->key = v->value = NULL;
	} else {
		v->key_len = h.key_len;
		v->value_len = h.value_len;
		v->timestamp_ns = h.timestamp_ns;
		v->key = buf + SHMQ_FRAME_HEADER + ext;
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

	return shmq__spill_frame_parse(buf, avail, offset, max_frame, v, file_len, &need);
}

/* ------------------------------------------------------------------------
 * A segment file read through a window (pread into a buffer)
 */

void shmq__spill_sf_init(struct shmq_sfile *f, uint32_t max_frame, size_t want)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->max_frame = max_frame;
	f->want = want;
}

void shmq__spill_sf_drop(struct shmq_sfile *f)
{
	if (f->map)
		munmap((void *)f->map, f->map_len);
	f->map = NULL;
	f->map_len = 0;
	f->ahead = 0;
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	f->wlen = 0;
	f->size = 0;
}

void shmq__spill_sf_free(struct shmq_sfile *f)
{
	shmq__spill_sf_drop(f);
	free(f->buf);
	f->buf = NULL;
	f->cap = 0;
}

int shmq__spill_sf_stat(struct shmq_sfile *f)
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
 *
 * A mapped (sealed) segment serves [pos, pos + need) from the mapping when
 * it holds it: the mapping shows the page cache itself, so it is always
 * fresh, and it reaches the file's end (a sealed segment does not grow),
 * so *read_eof is 1.  Beyond the mapping, the reads below decide.
 */
int shmq__spill_sf_get(struct shmq_sfile *f, uint64_t pos, size_t need, bool fresh,
		  const uint8_t **p, size_t *avail, int *read_eof)
{
	size_t len, got = 0;

	if (f->map && pos <= f->map_len && f->map_len - pos >= need) {
		shmq__spill_sf_ahead(f, (size_t)pos, need);
		*p = f->map + pos;
		*avail = f->map_len - (size_t)pos;
		if (read_eof)
			*read_eof = 1;
		return 0;
	}

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
		int r = shmq__spill_sf_stat(f);
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
 * Decode the frame at file position pos as offset off.  Anything but OK
 * that came from the window is read again from the file before it is
 * believed: the window may hold bytes read before a writer finished them,
 * or before recovery replaced a torn tail.
 */
int shmq__spill_sf_frame(struct shmq_sfile *f, uint64_t pos, uint64_t off,
		    struct shmq_frame_view *v, uint32_t *flen)
{
	const uint8_t *p;
	size_t avail, need = SHMQ_FRAME_HEADER;
	bool fresh = false;
	int r, st = SHMQ_FRAME_PENDING, tries, eof;

	for (tries = 0; tries < 4; tries++) {
		r = shmq__spill_sf_get(f, pos, need, fresh, &p, &avail, &eof);
		if (r < 0)
			return r;
		if (avail == 0 && eof == 1)
			return SF_END;
		st = shmq__spill_frame_parse(p, avail, off, f->max_frame, v, flen, &need);
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
int shmq__spill_sf_resync(struct shmq_sfile *f, uint64_t pos, uint64_t off, uint64_t limit,
		     uint64_t *q_out, uint64_t *s_out)
{
	struct shmq_frame_view v;
	uint64_t q;
	uint32_t flen;
	int r;

	r = shmq__spill_sf_stat(f);
	if (r < 0)
		return r;
	for (q = pos + SHMQ_FRAME_ALIGN; q + SHMQ_FRAME_HEADER <= f->size;
	     q += SHMQ_FRAME_ALIGN) {
		const uint8_t *p;
		size_t avail;
		uint64_t seal, s;

		r = shmq__spill_sf_get(f, q, SHMQ_FRAME_HEADER, false, &p, &avail, NULL);
		if (r < 0)
			return r;
		if (avail < SHMQ_FRAME_HEADER)
			break;
		memcpy(&seal, p, sizeof(seal));
		s = seal & ~SHMQ_SEAL_FLAGS;
		if (!(seal & SHMQ_SEAL_COMMITTED) || s <= off || s >= limit ||
		    s - off < q - pos)
			continue;
		r = shmq__spill_sf_frame(f, q, s, &v, &flen);
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

void shmq__spill_idx_free(struct shmq_sidx *x)
{
	free(x->e);
	memset(x, 0, sizeof(*x));
}

int shmq__spill_idx_push(struct shmq_sidx *x, const struct shmq_spill_idx_entry *e)
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
int shmq__spill_idx_load(int dfd, uint64_t first, uint64_t created, uint64_t topic_id,
		    uint32_t part, uint64_t seg_size, struct shmq_sidx *x)
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
	if (h.magic != SHMQ_SPILL_IDX_MAGIC || h.version < SHMQ_SPILL_FORMAT_MIN ||
	    h.version > SHMQ_SPILL_FORMAT ||
	    h.header_bytes != SHMQ_SPILL_HEADER || h.crc != shmq__spill_header_crc(&h) ||
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
		r = shmq__spill_idx_push(x, &e);
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
int shmq__spill_idx_start(struct shmq_sfile *f, const struct shmq_sidx *x, uint64_t target,
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
		st = shmq__spill_sf_frame(f, e->file_pos, e->offset, &v, &flen);
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
int shmq__spill_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
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

mode_t shmq__spill_dir_mode(uint32_t mode)
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
			if (mkdirat(fd, comp[i], shmq__spill_dir_mode(mode)) == 0) {
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
int shmq__spill_open_log_dir(const char *dir, const char *topic, uint32_t part,
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
int shmq__spill_list_segments(int dfd, uint64_t **out, uint32_t *n_out,
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
