/*
 * spill-read.c - readers of partition logs on disk (consumers, any process,
 * read-only): find a frame by offset or time, check it, skip damage.  The
 * design note and the on-disk format are in spill.c and
 * docs/spill-format.md.
 */
#define _GNU_SOURCE
#include "spill_priv.h"

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

	struct shmq_sfile f;		/* the open segment (f.fd < 0: none) */
	uint64_t limit;		/* the next segment's first offset, or UINT64_MAX */
	uint64_t created;	/* its header's created_ns, 0 if unknown */
	struct shmq_sidx idx;
	bool idx_loaded;
	bool map_tried;		/* r_map has looked at this segment */

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
	rc = shmq__spill_list_segments(r->dfd, &firsts, &n, NULL, NULL);
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
	shmq__spill_sf_drop(&r->f);
	r->idx.n = 0;
	r->idx.has_end = false;
	r->idx_loaded = false;
	r->seq = false;
	r->bad = false;
	r->created = 0;
	r->map_tried = false;
}

/*
 * Map the open segment, read-only, when it is sealed: a newer segment
 * exists, so the writer finished this one (and fdatasync'ed it) before it
 * made the next.  Frames are then checked and handed out where they lie
 * in the page cache instead of being copied into our buffer first: the
 * copy cost a warm replay as much as a plain read(2) of the same bytes
 * (see docs/decisions.md, "Replaying sealed segments through a mapping").
 *
 * A mapping faults (SIGBUS) where its file has been cut, and only
 * recovery cuts a sealed segment (damage at its end).  So we hold a shared
 * flock on the file while it is mapped, and recovery cuts a segment only
 * under an exclusive one, which it does not wait for: a mapped segment
 * keeps its damage (readers report it as SHMQ_ECORRUPT) instead.  Without
 * the lock, or if anything fails, we read with pread as before.  The
 * newest segment, the one the writer appends to and recovery cuts after a
 * crash, is never mapped.
 */
static void r_map(struct shmq_spill_reader *r)
{
	struct stat st;
	void *m;

	r->map_tried = true;
	if (r->f.fd < 0 || r->limit == UINT64_MAX || fstat(r->f.fd, &st) < 0 ||
	    (uint64_t)st.st_size <= SHMQ_SPILL_HEADER || (uint64_t)st.st_size > SIZE_MAX)
		return;
	if (flock(r->f.fd, LOCK_SH | LOCK_NB) < 0)
		return;
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, r->f.fd, 0);
	if (m == MAP_FAILED) {
		flock(r->f.fd, LOCK_UN);
		return;
	}
	/* Read ahead hard; the frames are read once, in order. */
	madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
	r->f.map = m;
	r->f.map_len = (size_t)st.st_size;
	r->f.size = (uint64_t)st.st_size;
	r->f.wlen = 0;
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
	rc = shmq__spill_sf_stat(&r->f);
	if (rc == 0)
		rc = shmq__spill_sf_get(&r->f, 0, SHMQ_SPILL_HEADER, true, &p, &avail, NULL);
	if (rc < 0) {
		r_close_seg(r);
		return shmq__fail(rc, "%s/%s: %s", r->path, name, strerror(-rc));
	}
	if (avail >= SHMQ_SPILL_HEADER) {
		memcpy(&h, p, sizeof(h));
		rc = shmq__spill_seg_header_check(&h, first, r->o.topic_id, r->part);
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
	rc = shmq__spill_sf_stat(&r->f);
	if (rc < 0)
		return rc;
	rc = shmq__spill_idx_load(r->dfd, r->f.first, r->created, r->o.topic_id, r->part,
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

	found = shmq__spill_sf_resync(&r->f, pos, off, r->limit, q, s);
	if (found < 0)
		return found;
	if (!found && r->limit == UINT64_MAX) {
		rc = r_maybe_list(r);
		if (rc < 0)
			return rc;
		if (r->limit == UINT64_MAX)
			return -EAGAIN; /* the writer's tail */
	}
	rc = shmq__spill_sf_frame(&r->f, pos, off, &v, &flen);
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
	rc = shmq__spill_idx_start(&r->f, &r->idx, x, &pos, &off, &ts);
	if (rc < 0)
		return rc;
	while (off < x) {
		st = shmq__spill_sf_frame(&r->f, pos, off, &v, &flen);
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

/*
 * The frame at x where the last read ended, in a mapped (sealed) segment:
 * every read of a replay but the first of each segment.  It is parsed
 * where it lies, with the same checks and CRC as any other read; only a
 * frame that passes them all is answered here.  Anything else (the end of
 * the segment, a frame that is not whole in the mapping, damage) returns
 * false and goes the long way, which decides what it is, so errors and
 * their reports are the same as before.
 */
static inline bool r_next_mapped(struct shmq_spill_reader *r, uint64_t x,
				 struct shmq_frame_view *v)
{
	struct shmq_sfile *f = &r->f;
	uint64_t pos = r->seq_pos;
	uint32_t flen;
	size_t need;

	if (!r->seq || x != r->seq_off || !f->map ||
	    pos >= f->map_len || f->map_len - pos < SHMQ_FRAME_HEADER)
		return false;
	shmq__spill_sf_ahead(f, (size_t)pos, SHMQ_FRAME_HEADER);
	if (shmq__spill_frame_parse(f->map + pos, f->map_len - (size_t)pos, x,
				    f->max_frame, v, &flen, &need) != SHMQ_FRAME_OK)
		return false;
	r->seq_off = x + v->size;
	r->seq_pos = pos + flen;
	return true;
}

int shmq__spill_read(struct shmq_spill_reader *r, uint64_t x, struct shmq_frame_view *v)
{
	uint64_t pos = 0, q, s;
	uint32_t flen;
	int rc, st, hops;

	if (r_next_mapped(r, x, v))
		return 0;
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
		if (!r->map_tried && r->limit != UINT64_MAX)
			r_map(r);
		st = shmq__spill_sf_frame(&r->f, pos, x, v, &flen);
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
		rc = shmq__spill_sf_resync(&r->f, pos, off, r->limit, &q, &s);
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
		rc = shmq__spill_sf_stat(&r->f);
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
			struct shmq_sidx one = { .e = &r->idx.e[lo - 1], .n = 1 };

			rc = shmq__spill_idx_start(&r->f, &one, UINT64_MAX, &pos, &off, &ts);
			if (rc < 0)
				goto out;
		}
		for (;;) {
			st = shmq__spill_sf_frame(&r->f, pos, off, &v, &flen);
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
			rc = shmq__spill_sf_resync(&r->f, pos, off, r->limit, &q, &s);
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
	rc = shmq__spill_idx_start(&r->f, &r->idx, UINT64_MAX, &pos, &off, &ts);
	if (rc < 0)
		return rc;
	for (;;) {
		st = shmq__spill_sf_frame(&r->f, pos, off, &v, &flen);
		if (st < 0)
			return st;
		if (st == SF_OK) {
			pos += flen;
			off += v.size;
			continue;
		}
		if (st == SF_END)
			break;
		rc = shmq__spill_sf_resync(&r->f, pos, off, UINT64_MAX, &q, &s);
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
	shmq__spill_sf_init(&r->f, r->o.max_frame, r->o.read_bytes);
	if (asprintf(&r->path, "%s/%s/%s/%u", dir, SHMQ_SPILL_DIRNAME, topic,
		     partition) < 0) {
		free(r);
		return -ENOMEM;
	}
	rc = shmq__spill_open_log_dir(dir, topic, partition, false, 0);
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
	shmq__spill_sf_free(&r->f);
	shmq__spill_idx_free(&r->idx);
	if (r->dfd >= 0)
		close(r->dfd);
	free(r->firsts);
	free(r->path);
	free(r);
}
