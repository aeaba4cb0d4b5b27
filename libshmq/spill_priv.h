/*
 * spill_priv.h - what the writer (spill.c) and the reader (spill-read.c) of
 * the spill module share: the file window, the index in memory, header and
 * frame checks, directories.  Private to them and spill-common.c; the
 * module's interface is spill.h.
 */
#ifndef SHMQ_SPILL_PRIV_H
#define SHMQ_SPILL_PRIV_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "spill.h"

#define SPILL_READ_BYTES	(256u << 10)
/* How far ahead of the frame being read a mapped segment is prefetched. */
#define SPILL_MAP_AHEAD		(8u << 10)
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

struct shmq_sfile {
	int fd;
	uint64_t first;	 /* the segment's first offset (its name) */
	uint64_t size;	 /* file size when last seen */
	uint32_t max_frame;
	uint8_t *buf;
	size_t cap;	 /* allocated */
	size_t want;	 /* usual read size */
	uint64_t wpos;	 /* file position of buf[0] */
	size_t wlen;	 /* valid bytes in buf */
	const uint8_t *map; /* readers, sealed segments: [0, map_len) mapped */
	size_t map_len;
	size_t ahead;	 /* prefetched up to here in map */
};

struct shmq_sidx {
	struct shmq_spill_idx_entry *e;
	uint32_t n, cap;
	bool has_end;	       /* e[n - 1] is an END entry */
	uint64_t file_bytes;   /* size of the file it was read from */
};

/*
 * Ask for the bytes of a mapped segment up to SPILL_MAP_AHEAD past
 * [pos, pos + need), so that memory works while we check this frame: the
 * hardware prefetchers stop at page boundaries, and every frame's CRC
 * would wait for DRAM (measured: 6.5 -> 8.3 GB/s for frames of 1 KiB).
 * Pages not mapped yet are skipped by the CPU, never faulted.
 * [pos, pos + need) must lie in the mapping.
 */
static inline void shmq__spill_sf_ahead(struct shmq_sfile *f, size_t pos, size_t need)
{
	size_t end = f->map_len - pos - need > SPILL_MAP_AHEAD ?
		     pos + need + SPILL_MAP_AHEAD : f->map_len;

	if (f->ahead < pos)
		f->ahead = pos;
	for (; f->ahead < end; f->ahead += 64)
		__builtin_prefetch(f->map + f->ahead);
}

/* Each function is described where it is defined, in spill-common.c. */
uint32_t shmq__spill_header_crc(const void *h);

void shmq__spill_seg_header_init(struct shmq_spill_seg_header *h, uint64_t topic_id,
			    uint32_t part, uint64_t first, uint64_t created);

int shmq__spill_seg_header_check(const struct shmq_spill_seg_header *h, uint64_t first,
			    uint64_t topic_id, uint32_t part);

void shmq__spill_idx_header_init(struct shmq_spill_idx_header *h, uint64_t topic_id,
			    uint32_t part, uint32_t interval, uint64_t first,
			    uint64_t created);

void shmq__spill_idx_entry_seal(struct shmq_spill_idx_entry *e);

int shmq__spill_frame_parse(const uint8_t *buf, size_t avail, uint64_t offset,
		       uint32_t max_frame, struct shmq_frame_view *v,
		       uint32_t *file_len, size_t *need);

void shmq__spill_sf_init(struct shmq_sfile *f, uint32_t max_frame, size_t want);

void shmq__spill_sf_drop(struct shmq_sfile *f);

void shmq__spill_sf_free(struct shmq_sfile *f);

int shmq__spill_sf_stat(struct shmq_sfile *f);

int shmq__spill_sf_get(struct shmq_sfile *f, uint64_t pos, size_t need, bool fresh,
		  const uint8_t **p, size_t *avail, int *read_eof);

int shmq__spill_sf_frame(struct shmq_sfile *f, uint64_t pos, uint64_t off,
		    struct shmq_frame_view *v, uint32_t *flen);

int shmq__spill_sf_resync(struct shmq_sfile *f, uint64_t pos, uint64_t off, uint64_t limit,
		     uint64_t *q_out, uint64_t *s_out);

void shmq__spill_idx_free(struct shmq_sidx *x);

int shmq__spill_idx_push(struct shmq_sidx *x, const struct shmq_spill_idx_entry *e);

int shmq__spill_idx_load(int dfd, uint64_t first, uint64_t created, uint64_t topic_id,
		    uint32_t part, uint64_t seg_size, struct shmq_sidx *x);

int shmq__spill_idx_start(struct shmq_sfile *f, const struct shmq_sidx *x, uint64_t target,
		     uint64_t *pos, uint64_t *off, uint64_t *max_ts);

int shmq__spill_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);

mode_t shmq__spill_dir_mode(uint32_t mode);

int shmq__spill_open_log_dir(const char *dir, const char *topic, uint32_t part,
			bool create, uint32_t mode);

int shmq__spill_list_segments(int dfd, uint64_t **out, uint32_t *n_out,
			 uint64_t **orphans, uint32_t *n_orphans);

/*
 * What shmq__spill_sf_frame finds at a position.  Non-negative, so that
 * callers can tell them from -errno (SHMQ_FRAME_BAD is -1).
 */
#define SF_OK	   SHMQ_FRAME_OK      /* a valid frame */
#define SF_PENDING SHMQ_FRAME_PENDING /* the file ends inside it */
#define SF_END	   2		      /* the file ends here */
#define SF_BAD	   3		      /* it fails a check */

#endif /* SHMQ_SPILL_PRIV_H */
