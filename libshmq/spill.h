/*
 * spill.h - the on-disk half of spilling: partition logs in segment files,
 * their sparse indexes, group offset checkpoints, and CRC-32C.
 *
 * Internal to libshmq (not installed).  shmqd is the only writer of a
 * partition's log; consumers in any process read it.  The byte-level
 * formats and the recovery rules are in docs/spill-format.md and at the top
 * of spill.c and checkpoint.c.
 *
 * Layout on disk, per topic and partition:
 *
 *   DIR/spill/<topic>/groups                 group checkpoints (checkpoint.c,
 *                                            written by checkpointer.c)
 *   DIR/spill/<topic>/groups.prev            the one before
 *   DIR/spill/<topic>/<partition>/           one partition's log
 *       00000000000000000000.seg             segments, named by first offset
 *       00000000000000000000.idx             their sparse indexes (hints)
 *       00000000000067108864.seg
 *       00000000000067108864.idx
 *
 * Offsets are the ring's: a frame spilled from ring position pos is at
 * offset pos in the log, and the log is contiguous (padding frames cover
 * what was never spilled, see shmq__spill_append_pad).
 *
 * Errors follow the library: 0 or a count on success, -errno, or SHMQ_E*.
 * Cold paths (open, recovery, retention, checkpoints) leave a detail in
 * shmq_errdetail(); the append and read paths do too, but only when they
 * fail.
 *
 * Threads: a writer or reader handle is used by one thread at a time.  Any
 * number of readers, in any processes, may read a log while its writer
 * appends; a second writer of the same partition gets -EBUSY (flock).
 */
#ifndef SHMQ_SPILL_H
#define SHMQ_SPILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shmq_int.h"

/* ------------------------------------------------------------------------
 * File formats.  All integers are little-endian (the host's: x86-64).
 */
#define SHMQ_SPILL_DIRNAME	  "spill"
#define SHMQ_SPILL_SEG_MAGIC	  0x316c7073716d6873ull /* "shmqspl1" */
#define SHMQ_SPILL_IDX_MAGIC	  0x31786469716d6873ull /* "shmqidx1" */
/*
 * 2: message frames may carry a producer extension (SHMQ_FRAME_PRODUCER).
 * Version 1 files are read (they are version 2 files without it) and
 * never appended such a frame: the writer rolls past them first.
 */
#define SHMQ_SPILL_FORMAT	  2u
#define SHMQ_SPILL_FORMAT_MIN	  1u
#define SHMQ_SPILL_HEADER	  64u /* segment and index file headers */
#define SHMQ_SPILL_NAME_DIGITS	  20  /* UINT64_MAX has 20 decimal digits */
#define SHMQ_SPILL_SEG_EXT	  ".seg"
#define SHMQ_SPILL_IDX_EXT	  ".idx"
/* "<20 digits>.seg" and its NUL. */
#define SHMQ_SPILL_NAME_MAX	  (SHMQ_SPILL_NAME_DIGITS + 4 + 1)

/* The largest pad frame: its size is a uint32 multiple of the alignment. */
#define SHMQ_SPILL_PAD_MAX	  (UINT32_MAX & ~(SHMQ_FRAME_ALIGN - 1))
/* The largest message frame any topic admits (max_message of a 4 GiB ring). */
#define SHMQ_SPILL_FRAME_MAX	  ((uint32_t)(SHMQ_MAX_MESSAGE_LIMIT(SHMQ_RING_MAX) + \
					      SHMQ_FRAME_HEADER))

/* Defaults of struct shmq_spill_opts. */
#define SHMQ_SPILL_SEGMENT_BYTES  (64ull << 20)
#define SHMQ_SPILL_INDEX_INTERVAL (64u << 10)
#define SHMQ_SPILL_BUFFER_BYTES	  (1u << 20)

/* A segment file starts with this. */
struct shmq_spill_seg_header {
	uint64_t magic;	       /* SHMQ_SPILL_SEG_MAGIC */
	uint32_t version;      /* SHMQ_SPILL_FORMAT */
	uint32_t header_bytes; /* SHMQ_SPILL_HEADER: frames start here */
	uint64_t topic_id;
	uint32_t partition;
	uint32_t flags;	       /* reserved, 0 */
	uint64_t first_offset; /* equals the file name */
	uint64_t created_ns;   /* CLOCK_REALTIME; ties the index to this file */
	uint32_t frame_header; /* SHMQ_FRAME_HEADER */
	uint32_t frame_align;  /* SHMQ_FRAME_ALIGN */
	uint32_t reserved;
	uint32_t crc;	       /* CRC-32C of bytes 0..59 */
};
_Static_assert(sizeof(struct shmq_spill_seg_header) == SHMQ_SPILL_HEADER, "seg header");
_Static_assert(offsetof(struct shmq_spill_seg_header, first_offset) == 32, "first");
_Static_assert(offsetof(struct shmq_spill_seg_header, crc) == 60, "seg crc");

/* An index file (a hint, see spill.c) starts with this... */
struct shmq_spill_idx_header {
	uint64_t magic;		 /* SHMQ_SPILL_IDX_MAGIC */
	uint32_t version;	 /* SHMQ_SPILL_FORMAT */
	uint32_t header_bytes;	 /* SHMQ_SPILL_HEADER */
	uint64_t topic_id;
	uint32_t partition;
	uint32_t interval;	 /* file bytes between entries, roughly */
	uint64_t first_offset;	 /* the segment's */
	uint64_t seg_created_ns; /* the segment's created_ns */
	uint8_t reserved[12];
	uint32_t crc;		 /* CRC-32C of bytes 0..59 */
};
_Static_assert(sizeof(struct shmq_spill_idx_header) == SHMQ_SPILL_HEADER, "idx header");
_Static_assert(offsetof(struct shmq_spill_idx_header, crc) == 60, "idx crc");

/* ...then entries, in increasing offset and file position. */
#define SHMQ_SPILL_IDX_END 0x1u /* the segment's end, written when it rolled */
struct shmq_spill_idx_entry {
	uint64_t offset;   /* a frame's offset (with END: the segment's end) */
	uint64_t file_pos; /* where that frame starts (with END: the file size) */
	uint64_t max_ts;   /* greatest message timestamp before file_pos in
			    * this segment, 0 if none */
	uint32_t flags;	   /* SHMQ_SPILL_IDX_END */
	uint32_t crc;	   /* CRC-32C of bytes 0..27 */
};
_Static_assert(sizeof(struct shmq_spill_idx_entry) == 32, "idx entry");

/* ------------------------------------------------------------------------
 * crc32c.c
 */

/*
 * CRC-32C of n bytes, continuing from crc (0 to start).  Hardware when the
 * CPU has it, chosen at the first call: folding with VPCLMULQDQ (AVX2), or
 * SSE4.2 on three streams joined with PCLMULQDQ, or on one; else
 * slicing-by-8.
 * shmq__crc32c(0, "123456789", 9) == 0xE3069283.  Thread-safe.
 */
uint32_t shmq__crc32c(uint32_t crc, const void *buf, size_t n);
/*
 * The implementations, for tests: _sw slicing-by-8, _hw one crc32q chain,
 * _hw3 three chains joined by PCLMULQDQ, _fold VPCLMULQDQ folding.  Each
 * falls back to the one before when the CPU lacks what it needs.
 */
uint32_t shmq__crc32c_sw(uint32_t crc, const void *buf, size_t n);
uint32_t shmq__crc32c_hw(uint32_t crc, const void *buf, size_t n);
uint32_t shmq__crc32c_hw3(uint32_t crc, const void *buf, size_t n);
uint32_t shmq__crc32c_fold(uint32_t crc, const void *buf, size_t n);
/* "vpclmulqdq fold (avx2)", "sse4.2 x3 + pclmul", "sse4.2" or "slicing-by-8":
 * what shmq__crc32c uses. */
const char *shmq__crc32c_impl(void);

/* ------------------------------------------------------------------------
 * spill.c: pure helpers (no system calls; the fuzz target drives them)
 */

/* "<first, 20 digits><ext>" into buf (SHMQ_SPILL_NAME_MAX bytes). */
void shmq__spill_file_name(uint64_t first, const char *ext, char *buf);

/*
 * Parse a segment or index file name: exactly SHMQ_SPILL_NAME_DIGITS digits
 * then ext, and a value that fits 64 bits.  Returns 0 or -EINVAL.
 */
int shmq__spill_parse_name(const char *name, const char *ext, uint64_t *first);

/*
 * Decode the frame at the start of buf (avail bytes of a segment file) as
 * the frame of log offset `offset`, without trusting any byte of it: the
 * seal must carry exactly that offset and COMMITTED, the sizes must agree
 * (a message frame at most max_frame), and the CRC must match.
 *
 * Returns SHMQ_FRAME_OK and fills *v (key and value point into buf) and
 * *file_len (the bytes it takes in the file: its size, or 32 for a pad),
 * SHMQ_FRAME_PENDING when buf ends before the frame does (a frame still
 * being written, or a torn one), or SHMQ_FRAME_BAD.
 */
int shmq__spill_frame_check(const void *buf, size_t avail, uint64_t offset,
			    uint32_t max_frame, struct shmq_frame_view *v,
			    uint32_t *file_len);

/* ------------------------------------------------------------------------
 * spill.c: the writer (shmqd), one handle per partition log
 */
struct shmq_spill_log;

/*
 * Open the directory dir/comp[0]/.../comp[n-1] without following a symbolic
 * link below dir, creating what is missing when create (mode's read and
 * write bits, with the matching x bits) and fsyncing the parent of each
 * directory created, so that the new entry survives a power loss.  Returns
 * a directory fd or -errno (detail set).
 */
int shmq__spill_open_dir(const char *dir, const char *const *comp, int n,
			 bool create, uint32_t mode);

/* Zero means the default in every field. */
struct shmq_spill_opts {
	uint64_t topic_id;	 /* written in headers; files with another
				  * non-zero id are refused (SHMQ_EFOREIGN) */
	uint64_t start_offset;	 /* where a log with no segment starts; aligned */
	uint64_t segment_bytes;	 /* roll before a segment grows past this
				  * (a bigger frame gets a segment of its own);
				  * default SHMQ_SPILL_SEGMENT_BYTES */
	uint64_t segment_age_ns; /* also roll at the first append this long
				  * after the segment was created; 0 = never */
	uint32_t index_interval; /* default SHMQ_SPILL_INDEX_INTERVAL */
	uint32_t buffer_bytes;	 /* write buffer, default SHMQ_SPILL_BUFFER_BYTES */
	uint32_t max_frame;	 /* largest message frame accepted and read back;
				  * default SHMQ_SPILL_FRAME_MAX */
	uint32_t mode;		 /* file mode, default 0600; directories get
				  * the matching x bits */
	struct shmq_spill_syncer *syncer; /* finishes rolled segments in its
				  * thread; NULL: a roll syncs in the caller */
};

/*
 * What recovery found and did at open: for shmqd's log.  Offsets that do
 * not apply are SHMQ_POS_NONE.
 */
struct shmq_spill_recovery {
	uint32_t segments;	   /* segment files found */
	uint64_t frames;	   /* frames validated (CRC checked) */
	uint64_t end_offset;	   /* the log's end after recovery */
	uint32_t cuts;		   /* segments whose tail was cut off */
	uint64_t cut_offset;	   /* where the first cut began: the frames from
				    * there to the old end were dropped */
	uint64_t cut_bytes;	   /* file bytes removed by all cuts */
	uint32_t corrupt;	   /* damaged regions with valid frames after
				    * them, left in place; readers report them */
	uint64_t corrupt_offset;   /* the first one's offset */
	uint32_t holes;		   /* gaps between a segment's end and the next
				    * segment's first offset */
	uint64_t hole_offset;	   /* the first gap's start */
	uint32_t headers_repaired; /* segment headers rewritten */
	uint32_t indexes_rebuilt;
	uint32_t files_removed;	   /* orphan index files */
};

/*
 * Open (creating DIR/spill/<topic>/<partition>/ as needed) the log of one
 * partition for appending, and recover it:
 *   - every older segment: its header is checked, the index entry
 *     nearest its end re-validated, and the frames from there to the end
 *     of the file checked;
 *   - the last two segments (the one before the last may not have been
 *     synced yet, see shmq__spill_roll): every frame is checked from its
 *     start;
 *   - a torn or corrupt tail (no valid frame after the first bad one) is
 *     cut back to the last whole valid frame (ftruncate, then fdatasync);
 *     a damaged region followed by valid frames is kept and counted, so
 *     that readers report it (SHMQ_ECORRUPT) rather than losing what
 *     follows it;
 *   - the last segment's index is rebuilt, an older one's when it does not
 *     match; damaged segment headers are rewritten from the file name;
 *   - the last two segments are fdatasync'ed, so that everything
 *     recovered is durable: synced_offset starts at the end.
 * With no segment at all, an empty one is created at opts->start_offset,
 * which records where the log starts.  rep (may be NULL) says what was
 * found and cut: log it.
 *
 * Returns 0 and sets *out, or -EINVAL (bad name, options), -EBUSY (another
 * writer has the partition), SHMQ_EVERSION (a file of another format),
 * SHMQ_EFOREIGN (a file of another topic id or partition), -ENOMEM, or the
 * -errno of a failed system call.  Blocks on disk I/O: reads the whole last
 * segment.  Close with shmq__spill_close().
 */
int shmq__spill_open(const char *dir, const char *topic, uint32_t partition,
		     const struct shmq_spill_opts *opts,
		     struct shmq_spill_recovery *rep, struct shmq_spill_log **out);

/*
 * Flush what is buffered (best effort: a failure is lost, the caller has
 * the error from its last flush or sync if it asked) and close.  Does not
 * sync.  NULL is a no-op.
 */
void shmq__spill_close(struct shmq_spill_log *log);

/*
 * Append one frame as decoded from the ring (shmq__frame_decode): v->pos
 * must equal the log's end offset.  The frame is copied (key and value are
 * read once, then checksummed from the copy, so a buggy producer
 * scribbling on the ring cannot make the file disagree with its CRC;
 * frames larger than the write buffer are written straight from the
 * ring and checksummed there).  Padding (v->pad) is stored as its 32-byte
 * header only.  Rolls to a new segment first when this one is full or old
 * (see shmq__spill_roll).
 *
 * The frame goes to the write buffer: it is in the file (readable by
 * readers, and safe from a crash of this process) only after a flush,
 * which happens when the buffer fills, and by shmq__spill_flush/sync.
 *
 * Returns 0 (appended), -EINVAL (v->pos is not the end; sizes inconsistent;
 * a message frame above max_frame), or an error of the flush or roll it
 * needed (-ENOSPC: nothing is lost, the buffer is kept, try again later;
 * any other error: the writer is failed, see shmq__spill_sync).  On error
 * the frame was not appended.
 */
int shmq__spill_append(struct shmq_spill_log *log,
		       const struct shmq_frame_view *v);

/*
 * The same for raw frame bytes as found in the ring at log position pos:
 * avail bytes from the frame's header on (avail may exceed the frame).
 * The header is validated like shmq__frame_decode does (seal pos |
 * COMMITTED [| PAD], sizes), so a frame that is not committed is -EINVAL.
 */
int shmq__spill_append_raw(struct shmq_spill_log *log, uint64_t pos,
			   const void *frame, size_t avail);

/*
 * Append padding over [pos, pos + len) (pos the end, len a multiple of
 * SHMQ_FRAME_ALIGN, any size: split into pad frames of at most
 * SHMQ_SPILL_PAD_MAX).  For offsets that are never spilled (every group
 * consumed them before they had to go to disk): the log stays contiguous,
 * and a reader walks over them as over ring padding.
 */
int shmq__spill_append_pad(struct shmq_spill_log *log, uint64_t pos,
			   uint64_t len);

/*
 * Write the buffer to the file (no sync).  Afterwards written_offset ==
 * end_offset: readers see every appended frame, and the frames survive a
 * crash of this process (not of the host).
 * Returns 0, -ENOSPC / -EDQUOT (the partial write was cut off again; the
 * buffer is kept; retry later), or another -errno (the writer is failed).
 */
int shmq__spill_flush(struct shmq_spill_log *log);

/*
 * Flush, then fdatasync the segment, wait for the syncer to finish the
 * segment rolled last (if it has not), and fsync the directory if a file
 * was created since the last sync.  Afterwards synced_offset == end_offset:
 * the frames survive a power loss.  A failed fdatasync or fsync fails the
 * writer for good: the kernel may have dropped the dirty pages, so what
 * the file holds is unknown; every later call returns the same error and
 * the caller must close and reopen (which re-validates).  Blocks on disk.
 */
int shmq__spill_sync(struct shmq_spill_log *log);

/*
 * Finish the current segment (if it holds a frame) and start a new one at
 * the end offset.  Returns 0 or the errors of flush and sync.  With a
 * syncer, the finished segment's fdatasync runs in the syncer's thread:
 * the roll waits only for the sync of the segment before it, if that one
 * is still running, so that at most the last two segments are unsynced.
 */
int shmq__spill_roll(struct shmq_spill_log *log);

/*
 * With a syncer: if the sync of the segment rolled last has finished,
 * collect its result.  Returns 0, or the error that failed the writer
 * (that sync's, or an earlier one; see shmq__spill_sync).  Never blocks;
 * no system call.  Every writer call collects too; this is for a caller
 * with nothing to append that still wants to hear of a failed sync.
 */
int shmq__spill_poll(struct shmq_spill_log *log);

struct shmq_spill_stat {
	uint64_t first_offset;	 /* oldest retained offset (first segment) */
	uint64_t end_offset;	 /* next offset to append */
	uint64_t written_offset; /* in the files: readers see below this */
	uint64_t synced_offset;	 /* durable below this */
	uint64_t active_offset;	 /* first offset of the segment being written */
	uint64_t disk_bytes;	 /* segment and index files, as written */
	uint32_t segments;
	int error;		 /* 0, or the error that failed the writer */
	uint64_t index_errors;	 /* index writes that failed (hints lost) */
};

/* Fill *st.  Never fails; no system call. */
void shmq__spill_stat(const struct shmq_spill_log *log,
		      struct shmq_spill_stat *st);

struct shmq_spill_retain_stat {
	uint32_t segments;  /* segment files deleted */
	uint64_t bytes;	    /* their bytes, with their indexes */
	uint64_t first_offset; /* oldest retained offset afterwards */
};

/*
 * Retention: delete whole segments, oldest first, while the log's bytes
 * exceed max_bytes, or while a segment's newest message is older than
 * max_age_ns before now_ns (CLOCK_REALTIME; a segment with no message
 * counts as old).  0 disables a limit.  Never deletes the segment being
 * written.  Readers of a deleted segment get SHMQ_EGONE for its offsets
 * (a reader that has the file open may finish it).  st may be NULL.
 * Returns the number of segments deleted, or -errno (unlink failed).
 */
int shmq__spill_retain(struct shmq_spill_log *log, uint64_t max_bytes,
		       uint64_t max_age_ns, uint64_t now_ns,
		       struct shmq_spill_retain_stat *st);

/* ------------------------------------------------------------------------
 * spill.c: the syncer, a thread that finishes rolled segments
 */
struct shmq_spill_syncer;

/*
 * Start a thread that fdatasyncs and closes the segments that logs opened
 * with opts.syncer roll away from, so that the appending thread does not
 * wait for the disk at a roll (spill.c, "Rolling without stopping").  One
 * syncer serves any number of logs, one job at a time, oldest first.  The
 * thread blocks every signal.  Returns 0 and sets *out, or -errno.
 */
int shmq__spill_syncer_start(struct shmq_spill_syncer **out);

/*
 * Run what is still queued, stop the thread and free the syncer.  The
 * logs that use it must be closed first.  NULL is a no-op.
 */
void shmq__spill_syncer_stop(struct shmq_spill_syncer *s);

/* ------------------------------------------------------------------------
 * spill.c: readers (consumers, any process), read-only
 */
struct shmq_spill_reader;

struct shmq_spill_reader_opts {
	uint64_t topic_id;   /* refuse segments of another non-zero id; 0 = any */
	uint32_t max_frame;  /* default SHMQ_SPILL_FRAME_MAX */
	uint32_t read_bytes; /* read-ahead window, default 256 KiB */
};

/*
 * Open the log of one partition read-only.  opts may be NULL.  Returns 0
 * and sets *out, -ENOENT (nothing was ever spilled for this partition),
 * -EINVAL, -ENOMEM, -errno.  Close with shmq__spill_reader_close().
 */
int shmq__spill_reader_open(const char *dir, const char *topic,
			    uint32_t partition,
			    const struct shmq_spill_reader_opts *opts,
			    struct shmq_spill_reader **out);

/* NULL is a no-op. */
void shmq__spill_reader_close(struct shmq_spill_reader *r);

/*
 * Read the frame at offset (a message or a pad: v->pad; skip pads with
 * offset = v->pos + v->size).  The frame's CRC is checked first; a frame
 * that fails is never returned.
 *
 * Lifetime: the file is read with pread into the reader's buffer; v->key
 * and v->value point into it and stay valid until the next call on this
 * reader (read, skip, seek, range, close).
 *
 * Cost: reading offset == the end of the frame returned last (sequential
 * iteration) needs no index search, and no system call while the frame is
 * in the read-ahead window.  Any other offset searches the segment list
 * and the segment's index (a hint: the entry used is re-validated), then
 * walks at most about one index interval of frames.
 *
 * Returns 0 and fills *v;
 *   -EAGAIN       offset is at or past the end of what is on disk (read
 *                 it from the ring; or wait for the spiller);
 *   SHMQ_EGONE    offset is older than the oldest retained segment;
 *   SHMQ_ECORRUPT the frame at offset fails its checks, or offset lies in
 *                 a damaged region (the detail names the offset); use
 *                 shmq__spill_skip() to go on past it;
 *   -EINVAL       offset is not the start of a frame;
 *   SHMQ_EVERSION, SHMQ_EFOREIGN (the segment's header), -errno.
 */
int shmq__spill_read(struct shmq_spill_reader *r, uint64_t offset,
		     struct shmq_frame_view *v);

/*
 * After SHMQ_ECORRUPT at bad: find the first valid frame after the damage
 * (scanning the file for a frame whose seal, position and CRC all check,
 * or the next segment).  The offsets in between are lost.  Returns 0 and
 * sets *next, -EAGAIN when nothing valid follows yet (the damage is at the
 * end of the log), or the errors of shmq__spill_read.
 */
int shmq__spill_skip(struct shmq_spill_reader *r, uint64_t bad,
		     uint64_t *next);

/*
 * Seek by time: the first message (in offset order) whose timestamp is >=
 * t_ns.  Segments are skipped by the greatest timestamp their index
 * records, and within a segment the index's running maximum narrows the
 * walk; damaged frames are passed over.  Returns 0 and sets *offset;
 * -EAGAIN and sets *offset to the end of the log on disk when no message on
 * disk qualifies (continue in the ring from there); -ENOENT when no
 * segment is left; -errno.
 */
int shmq__spill_seek_time(struct shmq_spill_reader *r, uint64_t t_ns,
			  uint64_t *offset);

/*
 * The range on disk now: *first the oldest retained offset, *end the end
 * of the valid frames of the newest segment.  Cold: lists the directory
 * and walks the newest segment's tail.  Returns 0, -ENOENT (no segment),
 * -errno.
 */
int shmq__spill_reader_range(struct shmq_spill_reader *r, uint64_t *first,
			     uint64_t *end);

/* ------------------------------------------------------------------------
 * checkpoint.c: group committed offsets, DIR/spill/<topic>/groups
 */
#define SHMQ_CKPT_MAGIC	 0x31707267716d6873ull /* "shmqgrp1" */
#define SHMQ_CKPT_FILE	 "groups"
#define SHMQ_CKPT_PREV	 "groups.prev"
#define SHMQ_CKPT_TMP	 "groups.tmp"
/* A checkpoint larger than this is not one (32 groups x 256 partitions
 * fits in well under 1 MiB). */
#define SHMQ_CKPT_MAX	 (4u << 20)

struct shmq_ckpt_group {
	char name[SHMQ_NAME_MAX + 1];
	uint32_t mode; /* enum shmq_group_mode; 0 = not recorded (shared) */
	uint32_t partitions;
	uint64_t *committed; /* [partitions]: the next offset to process */
};

struct shmq_ckpt {
	uint64_t generation; /* set by write (previous + 1), filled by read */
	uint64_t written_ns; /* CLOCK_REALTIME of the write */
	uint64_t topic_id;
	uint32_t group_count;
	struct shmq_ckpt_group *groups;
};

/* Which file a read used and why the other was not used. */
struct shmq_ckpt_report {
	int current;  /* "groups": 0 valid, -ENOENT, SHMQ_ECORRUPT (torn or
		       * checksum), SHMQ_EVERSION, SHMQ_EMAGIC, -errno */
	int previous; /* "groups.prev": the same */
	int used;     /* 0 "groups", 1 "groups.prev", -1 none */
};

/*
 * Write the checkpoint of topic atomically: DIR/spill/<topic>/groups.tmp
 * (O_EXCL, a stale one removed first), fsync, the current file renamed to
 * groups.prev, the new one renamed to groups, fsync of the directory.  A
 * crash at any point leaves a valid checkpoint: the new one or the
 * previous one.  The generation written is one more than the greatest
 * valid one on disk.  Group names must be valid (shmq__name_valid).
 * Returns 0, -EINVAL, -ENOSPC, -EIO, -errno.  Blocks on disk.
 */
int shmq__checkpoint_write(const char *dir, const char *topic,
			   const struct shmq_ckpt *cp);

/*
 * Read the newest valid checkpoint of topic: "groups", or "groups.prev"
 * when "groups" is missing, torn or fails its checksum (or holds an older
 * generation).  rep (may be NULL) says which was used and what was wrong
 * with the other.  Returns 0 and sets *out (free with
 * shmq__checkpoint_free), -ENOENT (neither exists: no checkpoint yet),
 * SHMQ_ECORRUPT (both bad; detail), -ENOMEM, -errno.
 */
int shmq__checkpoint_read(const char *dir, const char *topic,
			  struct shmq_ckpt **out, struct shmq_ckpt_report *rep);

/* Decode a checkpoint image of len bytes.  Pure; fuzzed.  Returns 0 and
 * *out, SHMQ_EMAGIC, SHMQ_EVERSION, SHMQ_ECORRUPT, -ENOMEM. */
int shmq__checkpoint_decode(const void *buf, size_t len, struct shmq_ckpt **out);

/* NULL is a no-op. */
void shmq__checkpoint_free(struct shmq_ckpt *cp);

/* ------------------------------------------------------------------------
 * checkpointer.c: checkpoints written in a thread, off shmqd's event loop
 */
struct shmq_checkpointer;
struct shmq_checkpointer_slot;

/* How the last write of a slot went. */
struct shmq_checkpointer_result {
	int err;	  /* 0, or as shmq__checkpoint_write */
	uint64_t tag;	  /* the tag its snapshot was handed over with */
	char detail[256]; /* the error's detail (shmq_errdetail of the thread) */
};

/*
 * Start the thread that writes the checkpoints of DIR's topics.  It blocks
 * every signal.  Returns 0 and *out, -ENOMEM, -errno.
 */
int shmq__checkpointer_start(const char *dir, struct shmq_checkpointer **out);

/* Stop the thread and free it.  Every slot must be freed first.  NULL: no-op. */
void shmq__checkpointer_stop(struct shmq_checkpointer *w);

/* A topic's slot: at most one write running, one snapshot waiting. */
int shmq__checkpointer_slot_new(struct shmq_checkpointer *w, const char *topic,
				struct shmq_checkpointer_slot **out);

/*
 * Hand snapshot cp (ownership passes; freed when written or superseded)
 * to the thread, tagged (the caller's, returned in the result).  A
 * snapshot of the slot still waiting is replaced and freed unwritten.
 * Never waits for the disk.
 */
void shmq__checkpointer_submit(struct shmq_checkpointer_slot *s,
			       struct shmq_ckpt *cp, uint64_t tag);

/*
 * The result of the slot's last finished write, once: true and *res, or
 * false when there is none new.  A failure is kept until collected, even
 * when a later write succeeds.  Never waits for the disk.
 */
bool shmq__checkpointer_poll(struct shmq_checkpointer_slot *s,
			     struct shmq_checkpointer_result *res);

/*
 * Drop the slot's waiting snapshot and wait for its running write: then
 * nobody else writes the topic's checkpoint until the next submit, and
 * the caller may write it or remove the directory.  Returns true when a
 * snapshot was dropped.  Waits for the disk (one write at most).
 */
bool shmq__checkpointer_quiesce(struct shmq_checkpointer_slot *s);

/* Quiesce and free.  NULL is a no-op. */
void shmq__checkpointer_slot_free(struct shmq_checkpointer_slot *s);

#endif /* SHMQ_SPILL_H */
