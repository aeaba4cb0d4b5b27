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
 * directory); consumers in other processes read the segment being written
 * with pread, and sealed segments (a newer one exists) through a
 * read-only mapping under a shared flock of the file.  Recovery, the only
 * thing that cuts a sealed segment, cuts only under an exclusive flock, so
 * a file cut under a mapping can never fault a reader (SIGBUS); retention
 * unlinks, which leaves a mapping alone.
 *
 * Frames are stored exactly as in the ring (layout.h): the 32-byte header
 * with its seal (the frame's own offset | COMMITTED [| PAD]), then the
 * producer extension (flag SHMQ_FRAME_PRODUCER only), key and value,
 * zero-filled to 32 bytes.  Only two things differ from the ring:
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
 *   | [producer id, seq: 16 B if flags has 2] | key | value | zeros    |
 *   +------------------------------------------------------------------+
 *   frame crc = CRC-32C(header with crc = 0, then extension, key, value)
 *   seal = offset | 1 (COMMITTED) [| 2 (PAD)]
 *   a message takes `size` bytes of file; a pad takes 32 and covers
 *   `size` bytes of log (key_len, value_len, timestamp are 0; flags 0 or
 *   1 = GAP).  Format version 2; version 1 files have no extension.
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
 *   written and everything flushed), and segment k-1 is fdatasync'ed.  So
 *   after a crash of the process every segment is whole, and after a
 *   power loss every segment but the last two is; only those two can have
 *   torn tails or lost blocks (see "Rolling without stopping").
 * - Readers see only whole frames whose CRC checks: bytes are copied into
 *   the reader's buffer (or, sealed segments, mapped), then checked, then
 *   handed out.
 * - written <= end (frames in the write buffer are not in the file yet),
 *   and synced <= written.  Only fdatasync success moves synced, and only
 *   when the syncs of both unsynced segments (the active one, and the one
 *   rolled last if its sync is outstanding) have succeeded.
 *
 * Rolling without stopping
 * ------------------------
 * The fdatasync of a finished 64 MiB segment takes 0.1-0.25 s on ext4
 * (it waits for the data's writeback and forces a journal commit), and
 * shmqd's spiller runs in its one event loop: while the loop waits, the
 * reaper waits and producers blocked on a full ring wait too.  So a log
 * opened with a syncer (shmq__spill_syncer_start: one thread, shared by
 * all logs) hands the finished segment to that thread: the roll writes
 * the END entry, flushes, creates the next segment and returns; the
 * thread fdatasyncs and closes the old one while the loop appends to the
 * new one.  Each log has one job slot: a roll first waits for the job of
 * the roll before it (or runs it itself if the thread has not started
 * it), so at most two segments are ever unsynced, and the loop waits only
 * when it fills a whole segment faster than the disk syncs one.
 *
 * What that changes:
 * - Recovery checks the last two segments frame by frame from their
 *   start (older ones from their last index entry, as before), and
 *   fdatasyncs both, so synced still starts at the end.  A torn tail of
 *   the one before the last is cut like any older segment's, and the
 *   offsets up to the last segment become a hole (reported; readers get
 *   SHMQ_ECORRUPT there and skip to the last segment, which keeps what
 *   made it to disk).
 * - shmq__spill_sync waits for the outstanding job before it moves
 *   synced, so a durable acknowledgement is exact: the frames below it
 *   are in segments whose fdatasync returned.
 * - A failed fdatasync in the thread is kept in the job; the writer
 *   collects it at its next call (or shmq__spill_poll) and fails for
 *   good, as if the sync had failed in its own thread.  The thread never
 *   touches the log, only its job (two fds, a state word, an error), so
 *   retention and everything else stay single-threaded.
 * - Closing a log waits for its job: a syncer never outlives a job.
 *
 * Rejected: skipping the sync at a roll when nothing is promised
 * (spill=overflow).  Then no segment would be known whole after a power
 * loss, so recovery would have to check every segment frame by frame
 * (gigabytes at open), or leave older segments' damage to be found by
 * readers; and a journal still needs the sync, so it would keep the stall.
 * io_uring's asynchronous fsync would avoid the thread, but is often
 * disabled (seccomp in containers) and needs the thread as a fallback
 * anyway.
 *
 * Failure and recovery
 * --------------------
 * A crash of shmqd loses nothing that was flushed (the page cache keeps
 * it).  A power loss keeps what was synced and may leave, after it, torn
 * tails in the last two segments: partial frames, zeros, or stale blocks.
 * shmq__spill_open() therefore checks the last two segments frame by frame
 * from their start, and every older segment from its last index entry
 * that validates (falling back to its start).  At the first frame that fails,
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
#include <pthread.h>
#include <signal.h>

#include "spill_priv.h"

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

/*
 * A rolled segment waiting for its fdatasync and close (see "Rolling
 * without stopping").  Each log has one: at most one is outstanding.
 */
enum { SEAL_IDLE, SEAL_QUEUED, SEAL_RUNNING, SEAL_DONE };

struct seal_job {
	struct seal_job *next;	/* in the syncer's queue while QUEUED */
	int fd, ifd;		/* the segment and its index (-1: none) */
	uint32_t state;		/* SEAL_*, atomic: IDLE -> QUEUED by the
				 * writer, -> RUNNING -> DONE by whoever runs
				 * it (under the syncer's lock), -> IDLE by
				 * the writer when it collects the result */
	int err;		/* the fdatasync's, written before DONE */
};

struct shmq_spill_syncer {
	pthread_mutex_t lock;
	pthread_cond_t work;	/* a job was queued, or stop */
	pthread_cond_t done;	/* a job is DONE */
	struct seal_job *head, *tail; /* QUEUED jobs, oldest first */
	bool stop;
	pthread_t thread;
};

struct shmq_spill_log {
	int dfd;	    /* the partition directory, flock'ed */
	char *path;	    /* for details */
	uint32_t part;
	struct shmq_spill_opts o;
	struct wseg *segs;  /* oldest first; the last is being written */
	uint32_t nsegs, capsegs;

	int fd;		    /* active segment, -1 when a new one is due */
	uint32_t version;   /* its format version (1: no producer extension) */
	int ifd;	    /* its index, -1 when lost (hints only) */
	uint64_t created_ns;
	uint64_t file_bytes;	 /* segment bytes in the file */
	uint64_t idx_file_bytes; /* index bytes in the file */
	uint64_t last_ipos;	 /* file position of the last index entry */
	uint64_t seg_max_ts;
	struct shmq_sidx ipend;	 /* entries not written yet */

	uint64_t end;	    /* next offset */
	uint64_t written;   /* end of what is in the file */
	uint64_t synced;    /* end of what is durable */
	uint8_t *buf;	    /* frames [written, end) of the active segment */
	size_t blen, bcap;
	bool dir_dirty;	    /* a file was created since the last fsync of dfd */
	int failed;	    /* sticky: the writer must be reopened */
	uint64_t index_errors;
	struct seal_job seal; /* the segment rolled last, until it is synced */
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

/* ------------------------------------------------------------------------
 * Finishing rolled segments (see "Rolling without stopping")
 */

/* fdatasync and close a rolled segment.  Touches nothing but the job. */
static int seal_run(struct seal_job *j)
{
	int err = 0;

	if (shmq__fault_fdatasync(j->fd) < 0)
		err = -errno;
	close(j->fd);
	if (j->ifd >= 0)
		close(j->ifd);
	j->fd = j->ifd = -1;
	return err;
}

static uint32_t seal_state(const struct seal_job *j)
{
	return __atomic_load_n(&j->state, __ATOMIC_ACQUIRE);
}

static void seal_set(struct seal_job *j, uint32_t st)
{
	__atomic_store_n(&j->state, st, __ATOMIC_RELEASE);
}

static void *syncer_main(void *arg)
{
	struct shmq_spill_syncer *s = arg;
	struct seal_job *j;
	int err;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->head && !s->stop)
			pthread_cond_wait(&s->work, &s->lock);
		j = s->head;
		if (!j)
			break; /* stopping, and nothing is left */
		s->head = j->next;
		if (!s->head)
			s->tail = NULL;
		j->next = NULL;
		seal_set(j, SEAL_RUNNING);
		pthread_mutex_unlock(&s->lock);
		err = seal_run(j);
		pthread_mutex_lock(&s->lock);
		j->err = err;
		seal_set(j, SEAL_DONE);
		pthread_cond_broadcast(&s->done);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int shmq__spill_syncer_start(struct shmq_spill_syncer **out)
{
	struct shmq_spill_syncer *s = calloc(1, sizeof(*s));
	sigset_t all, old;
	int r;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->done, NULL);
	/* Signals stay with the caller's threads (shmqd reads a signalfd). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&s->thread, NULL, syncer_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		pthread_cond_destroy(&s->done);
		pthread_cond_destroy(&s->work);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return shmq__fail(-r, "cannot start the spill syncer thread: %s", strerror(r));
	}
	pthread_setname_np(s->thread, "shmq-syncer");
	*out = s;
	return 0;
}

void shmq__spill_syncer_stop(struct shmq_spill_syncer *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->done);
	pthread_cond_destroy(&s->work);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Hand the log's job (fd and ifd set) to its syncer. */
static void seal_queue(struct shmq_spill_log *log)
{
	struct shmq_spill_syncer *s = log->o.syncer;
	struct seal_job *j = &log->seal;

	pthread_mutex_lock(&s->lock);
	j->next = NULL;
	if (s->tail)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	seal_set(j, SEAL_QUEUED);
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->lock);
}

/* Take the result of a DONE job: a failed sync fails the writer. */
static int seal_collect(struct shmq_spill_log *log)
{
	struct seal_job *j = &log->seal;
	int err = j->err;

	j->err = 0;
	seal_set(j, SEAL_IDLE);
	if (err && !log->failed)
		return wfail(log, err, "fdatasync of a finished segment");
	return log->failed;
}

/* Collect the job if it is done; never blocks.  0 or the writer's error. */
static int seal_poll(struct shmq_spill_log *log)
{
	if (seal_state(&log->seal) != SEAL_DONE)
		return log->failed;
	return seal_collect(log);
}

/*
 * Wait until the job is done, running it here if the syncer has not
 * started it (it is busy with other logs), and collect it.
 */
static int seal_wait(struct shmq_spill_log *log)
{
	struct shmq_spill_syncer *s = log->o.syncer;
	struct seal_job *j = &log->seal, **pp;
	uint32_t st = seal_state(j);

	if (st == SEAL_IDLE)
		return log->failed;
	if (st != SEAL_DONE) {
		pthread_mutex_lock(&s->lock);
		if (seal_state(j) == SEAL_QUEUED) {
			for (pp = &s->head; *pp != j; pp = &(*pp)->next)
				;
			*pp = j->next;
			if (s->tail == j) {
				struct seal_job *t = s->head;

				while (t && t->next)
					t = t->next;
				s->tail = t;
			}
			j->next = NULL;
			seal_set(j, SEAL_RUNNING);
			pthread_mutex_unlock(&s->lock);
			j->err = seal_run(j);
			seal_set(j, SEAL_DONE);
		} else {
			while (seal_state(j) != SEAL_DONE)
				pthread_cond_wait(&s->done, &s->lock);
			pthread_mutex_unlock(&s->lock);
		}
	}
	return seal_collect(log);
}

int shmq__spill_poll(struct shmq_spill_log *log)
{
	return seal_poll(log);
}

/* Write the pending index entries.  Failures lose hints only. */
static void idx_flush(struct shmq_spill_log *log)
{
	size_t len = (size_t)log->ipend.n * sizeof(struct shmq_spill_idx_entry);

	if (!log->ipend.n)
		return;
	if (log->ifd < 0) {
		log->index_errors++;
	} else if (shmq__spill_pwrite_all(log->ifd, log->ipend.e, len, log->idx_file_bytes) < 0) {
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

	r = seal_poll(log);
	if (r)
		return r;
	if (log->blen) {
		r = shmq__spill_pwrite_all(log->fd, log->buf, log->blen, log->file_bytes);
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
 * Finish the active segment: flush, write its END entry, then fdatasync
 * and close it, here or (with a syncer) in the syncer's thread.  Waits
 * first for the sync of the segment finished before, so that only the
 * last two segments are ever unsynced (see "Rolling without stopping").
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
	shmq__spill_idx_entry_seal(&e);
	if (shmq__spill_idx_push(&log->ipend, &e) == 0)
		idx_flush(log);
	r = seal_wait(log);
	if (r < 0)
		return r;
	if (log->synced == log->end) {
		/* All of it is synced already (a journal between batches). */
		close(log->fd);
		if (log->ifd >= 0)
			close(log->ifd);
	} else {
		log->seal.fd = log->fd;
		log->seal.ifd = log->ifd;
		if (log->o.syncer) {
			seal_queue(log);
		} else {
			r = seal_run(&log->seal);
			if (r < 0)
				return wfail(log, r, "fdatasync of a finished segment");
		}
	}
	log->fd = -1;
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
	shmq__spill_idx_header_init(&h, log->o.topic_id, log->part, log->o.index_interval, first,
			log->created_ns);
	if (shmq__spill_pwrite_all(fd, &h, sizeof(h), 0) < 0) {
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
	shmq__spill_seg_header_init(&h, log->o.topic_id, log->part, first, log->created_ns);
	r = shmq__fault_ftruncate(fd, 0);
	if (r == 0)
		r = shmq__spill_pwrite_all(fd, &h, sizeof(h), 0);
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
	log->version = SHMQ_SPILL_FORMAT;
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

/*
 * Before the first frame with a producer extension goes to a version 1
 * segment (left by an older shmqd): roll to a new segment, or, when the
 * old one holds no frame, rewrite its header in the current version.
 * Older readers then refuse the file (SHMQ_EVERSION) instead of failing
 * the frame's CRC.
 */
static int leave_old_format(struct shmq_spill_log *log)
{
	struct shmq_spill_seg_header h;
	int r;

	if (log->file_bytes + log->blen > SHMQ_SPILL_HEADER)
		return shmq__spill_roll(log);
	shmq__spill_seg_header_init(&h, log->o.topic_id, log->part,
				    last_seg(log)->first, log->created_ns);
	r = shmq__spill_pwrite_all(log->fd, &h, sizeof(h), 0);
	if (r < 0)
		return wfail(log, r, "rewrite the header");
	log->version = SHMQ_SPILL_FORMAT;
	return 0;
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
	struct shmq_frame_ext x = { v->producer_id, v->seq };
	uint32_t flen, crc, ext;
	uint64_t fpos;
	int r;

	if (log->failed)
		return log->failed;
	if (v->pos != log->end)
		return shmq__fail(-EINVAL, "%s: append at %" PRIu64 ", the log ends at %" PRIu64,
				  log->path, v->pos, log->end);
	/* A message from an identity carries both its id and sequence. */
	ext = !v->pad && v->producer_id ? SHMQ_FRAME_EXT : 0;
	if (v->size < SHMQ_FRAME_HEADER || (v->size & (SHMQ_FRAME_ALIGN - 1)) ||
	    v->pos > UINT64_MAX - v->size ||
	    (!v->pad && (v->size > log->o.max_frame || (ext && !v->seq) ||
			 shmq__frame_bytes(ext + v->key_len, v->value_len) != v->size)))
		return shmq__fail(-EINVAL, "%s: frame at %" PRIu64 " has inconsistent sizes",
				  log->path, v->pos);
	flen = v->pad ? SHMQ_FRAME_HEADER : v->size;
	if (ext && log->fd >= 0 && log->version < SHMQ_SPILL_FORMAT) {
		r = leave_old_format(log);
		if (r < 0)
			return r;
	}
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
	if (ext)
		h.flags = SHMQ_FRAME_PRODUCER;
	if (!v->pad) {
		h.key_len = v->key_len;
		h.value_len = v->value_len;
		h.timestamp_ns = v->timestamp_ns;
	}
	fpos = log->file_bytes + log->blen;

	if (flen <= log->bcap) {
		uint8_t *p = log->buf + log->blen, *q = p + sizeof(h) + ext;
		size_t kv = v->pad ? 0 : (size_t)ext + v->key_len + v->value_len;

		/*
		 * Copy first, checksum the copy: what the file holds then
		 * always agrees with its CRC, whatever the ring does meanwhile.
		 */
		memcpy(p, &h, sizeof(h));
		if (!v->pad) {
			if (ext)
				memcpy(p + sizeof(h), &x, sizeof(x));
			if (v->key_len)
				memcpy(q, v->key, v->key_len);
			if (v->value_len)
				shmq__copy(q + v->key_len, v->value, v->value_len);
			memset(p + sizeof(h) + kv, 0, flen - sizeof(h) - kv);
		}
		crc = shmq__crc32c(0, p, sizeof(h) + kv);
		memcpy(p + offsetof(struct shmq_frame, crc), &crc, sizeof(crc));
		log->blen += flen;
	} else {
		/* Larger than the buffer (which is empty now): straight from
		 * the ring, checksummed there. */
		static const uint8_t zeros[SHMQ_FRAME_ALIGN];
		uint32_t kv = ext + v->key_len + v->value_len;
		uint64_t at = fpos;

		crc = shmq__crc32c(0, &h, sizeof(h));
		crc = shmq__crc32c(crc, &x, ext);
		crc = shmq__crc32c(crc, v->key, v->key_len);
		crc = shmq__crc32c(crc, v->value, v->value_len);
		h.crc = crc;
		r = shmq__spill_pwrite_all(log->fd, &h, sizeof(h), at);
		at += sizeof(h);
		if (!r && ext) {
			r = shmq__spill_pwrite_all(log->fd, &x, ext, at);
			at += ext;
		}
		if (!r && v->key_len) {
			r = shmq__spill_pwrite_all(log->fd, v->key, v->key_len, at);
			at += v->key_len;
		}
		if (!r && v->value_len) {
			r = shmq__spill_pwrite_all(log->fd, v->value, v->value_len, at);
			at += v->value_len;
		}
		if (!r && flen - sizeof(h) - kv)
			r = shmq__spill_pwrite_all(log->fd, zeros, flen - sizeof(h) - kv, at);
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

		shmq__spill_idx_entry_seal(&e);
		if (shmq__spill_idx_push(&log->ipend, &e) == 0)
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
		uint32_t ext = shmq__frame_ext_bytes(h.flags);

		if ((uint64_t)ext + h.key_len + h.value_len > avail - sizeof(h) ||
		    (h.flags & ~SHMQ_FRAME_PRODUCER))
			return shmq__fail(-EINVAL, "%s: frame at %" PRIu64 " is truncated or has unknown flags",
					  log->path, pos);
		if (ext) {
			struct shmq_frame_ext e;

			memcpy(&e, (const uint8_t *)frame + sizeof(h), sizeof(e));
			v.producer_id = e.producer_id;
			v.seq = e.seq;
		}
		v.key_len = h.key_len;
		v.value_len = h.value_len;
		v.timestamp_ns = h.timestamp_ns;
		v.key = (const uint8_t *)frame + sizeof(h) + ext;
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
		return seal_poll(log);
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
	/* The segment rolled last holds frames below synced's new value. */
	r = seal_wait(log);
	if (r < 0)
		return r;
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
	/*
	 * The segment rolled last is synced before its log goes (its
	 * result is lost like a flush's): the syncer may not outlive it.
	 */
	seal_wait(log);
	if (log->dfd >= 0)
		close(log->dfd); /* drops the flock */
	shmq__spill_idx_free(&log->ipend);
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
			 uint64_t created, const struct shmq_sidx *x, bool with_end,
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
	shmq__spill_idx_header_init(&h, log->o.topic_id, log->part, log->o.index_interval,
			s->first, created);
	r = shmq__spill_pwrite_all(fd, &h, sizeof(h), 0);
	if (!r && x->n) {
		r = shmq__spill_pwrite_all(fd, x->e, x->n * sizeof(*x->e), at);
		at += x->n * sizeof(*x->e);
	}
	if (!r && with_end) {
		e = (struct shmq_spill_idx_entry){ .offset = s->end, .file_pos = s->bytes,
						   .max_ts = s->max_ts,
						   .flags = SHMQ_SPILL_IDX_END };
		shmq__spill_idx_entry_seal(&e);
		r = shmq__spill_pwrite_all(fd, &e, sizeof(e), at);
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
 * it open as the active one.  The last two may never have been synced:
 * they are checked from their start, and synced.
 */
static int recover_segment(struct shmq_spill_log *log, uint32_t i,
			   struct shmq_spill_recovery *rep)
{
	bool last = i + 1 == log->nsegs, unsynced = i + 2 >= log->nsegs;
	bool header_bad = false, full, cut = false;
	struct wseg *s = &log->segs[i];
	uint64_t limit = last ? UINT64_MAX : log->segs[i + 1].first;
	struct shmq_spill_seg_header h;
	char name[SHMQ_SPILL_NAME_MAX];
	struct shmq_sidx old = { 0 }, built = { 0 };
	struct shmq_frame_view v;
	uint64_t pos, off, max_ts, created = 0;
	struct shmq_sfile f;
	struct stat st;
	const uint8_t *p;
	size_t avail;
	uint32_t flen;
	int r, st_f;

	shmq__spill_sf_init(&f, log->o.max_frame, log->o.buffer_bytes);
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

	r = shmq__spill_sf_get(&f, 0, SHMQ_SPILL_HEADER, true, &p, &avail, NULL);
	if (r < 0)
		goto out;
	if (avail < SHMQ_SPILL_HEADER) {
		header_bad = true;
	} else {
		memcpy(&h, p, sizeof(h));
		r = shmq__spill_seg_header_check(&h, s->first, log->o.topic_id, log->part);
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
	full = unsynced || header_bad;
	pos = SHMQ_SPILL_HEADER;
	off = s->first;
	max_ts = 0;
	if (!header_bad) {
		r = shmq__spill_idx_load(log->dfd, s->first, created, log->o.topic_id, log->part,
			     f.size, &old);
		if (r < 0)
			goto out;
		if (!full) {
			r = shmq__spill_idx_start(&f, &old, UINT64_MAX, &pos, &off, &max_ts);
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
			if ((r = shmq__spill_idx_push(&built, &old.e[k])) < 0)
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
			st_f = shmq__spill_sf_frame(&f, pos, off, &v, &flen);
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

				shmq__spill_idx_entry_seal(&e);
				if ((r = shmq__spill_idx_push(&built, &e)) < 0)
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

			r = off >= limit ? 0 : shmq__spill_sf_resync(&f, pos, off, limit, &q, &sv);
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
		/*
		 * A reader maps sealed segments under a shared flock
		 * (spill-read.c, r_map), and a cut under its mapping would
		 * kill it with SIGBUS: cut only under an exclusive one.  An
		 * older segment that is mapped keeps its damaged tail
		 * instead (nothing is appended to it; readers report the
		 * damage as SHMQ_ECORRUPT and skip to the next segment).
		 * The newest is never mapped, short of its successor
		 * vanishing between a reader's listing and now.
		 */
		if (flock(f.fd, LOCK_EX | LOCK_NB) < 0) {
			if (last) {
				r = shmq__fail(-EBUSY, "%s/%s: a reader maps it; its torn "
					       "tail at %" PRIu64 " cannot be cut now",
					       log->path, name, pos);
				goto out;
			}
			if (rep) {
				rep->corrupt++;
				note(&rep->corrupt_offset, off);
			}
			break;
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
		shmq__spill_seg_header_init(&h, log->o.topic_id, log->part, s->first, created);
		if (f.size < SHMQ_SPILL_HEADER && shmq__fault_ftruncate(f.fd, 0) < 0) {
			r = shmq__fail(-errno, "%s/%s: ftruncate: %s", log->path, name,
				       strerror(errno));
			goto out;
		}
		r = shmq__spill_pwrite_all(f.fd, &h, sizeof(h), 0);
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

	/* Everything recovered is made durable: synced starts at the end. */
	if (unsynced && shmq__fault_fdatasync(f.fd) < 0) {
		r = shmq__fail(-errno, "%s/%s: fdatasync: %s", log->path, name,
			       strerror(errno));
		goto out;
	}
	if (last) {
		log->fd = f.fd;
		f.fd = -1;
		/* A repaired header was rewritten in the current format. */
		log->version = header_bad ? SHMQ_SPILL_FORMAT : h.version;
		log->file_bytes = s->bytes;
		log->created_ns = created;
		log->seg_max_ts = max_ts;
		log->end = log->written = log->synced = s->end;
	}
	r = 0;
out:
	shmq__spill_idx_free(&old);
	shmq__spill_idx_free(&built);
	shmq__spill_sf_free(&f);
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
	log->seal.fd = log->seal.ifd = -1;
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

	r = shmq__spill_open_log_dir(dir, topic, partition, true, log->o.mode);
	if (r < 0)
		goto fail;
	log->dfd = r;
	if (flock(log->dfd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		shmq__fail(r, "%s: %s", log->path,
			   r == -EBUSY ? "another writer has this log open" : strerror(-r));
		goto fail;
	}
	r = shmq__spill_list_segments(log->dfd, &firsts, &n, &orphans, &norphans);
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
