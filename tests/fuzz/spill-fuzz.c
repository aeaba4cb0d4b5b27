/*
 * spill-fuzz.c - fuzz the spill files' decoders: segment and index files
 * through the reader and through recovery, and checkpoint images.
 *
 * Input format
 *   byte 0       what the rest is: even = a segment and its index,
 *                odd = a checkpoint image (all of bytes 1..)
 *   segment mode:
 *   bytes 1..4   seg_len, little-endian, clamped to what follows
 *   next seg_len the segment file
 *   the rest     its index file (none when empty)
 *
 * The segment is named by the first_offset field of its own header (bytes
 * 32..39, rounded down to a frame boundary) when it has one, else 0, so
 * that a well-formed header matches its name and the fuzzer reaches the
 * frames.  Files go to a private directory
 * under /dev/shm (tmpfs: fdatasync costs nothing), made and removed for
 * each input.
 *
 * Checked, with abort() on a violation:
 *   - the reader, on the raw files, never hands out a view that is not a
 *     whole frame (ASan sees every byte of key and value touched), and a
 *     skip over damage always moves forward;
 *   - recovery either refuses (version, topic) or leaves a log whose every
 *     offset from the first to the end reads as a valid frame or as
 *     reported damage, with -EAGAIN exactly at the end;
 *   - a frame appended after recovery reads back byte for byte;
 *   - recovery is idempotent: a second open cuts nothing and finds the
 *     same end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmq_int.h"
#include "spill.h"

#define TOPIC "f"
/* Bounds the walks: no input of this size holds more frames. */
#define MAX_STEPS 100000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, uint64_t off)
{
	fprintf(stderr, "spill-fuzz: %s at offset %llu (%s)\n", what,
		(unsigned long long)off, shmq_errdetail());
	abort();
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void put_file(const char *path, const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		fail("cannot create a file", 0);
	if (n && write(fd, p, n) != (ssize_t)n)
		fail("cannot write a file", 0);
	close(fd);
}

static void check_view(const struct shmq_frame_view *v, uint64_t x)
{
	volatile uint8_t sink = 0;
	uint32_t k;

	if (v->pos != x || v->size < SHMQ_FRAME_HEADER || v->size % SHMQ_FRAME_ALIGN)
		fail("view of the wrong frame", x);
	if (v->pad)
		return;
	if ((uint64_t)SHMQ_FRAME_HEADER + v->key_len + v->value_len > v->size)
		fail("key and value larger than the frame", x);
	if (!v->producer_id != !v->seq)
		fail("producer id without sequence, or the reverse", x);
	if (v->producer_id &&
	    (uint64_t)SHMQ_FRAME_HEADER + SHMQ_FRAME_EXT + v->key_len + v->value_len > v->size)
		fail("producer extension, key and value larger than the frame", x);
	for (k = 0; k < v->key_len; k++)
		sink ^= v->key[k];
	for (k = 0; k < v->value_len; k++)
		sink ^= v->value[k];
	(void)sink;
}

/*
 * Read from x on with skips.  Returns the offset where reading stopped and
 * its last return code in *rc_out.
 */
static uint64_t walk(struct shmq_spill_reader *r, uint64_t x, int *rc_out)
{
	struct shmq_frame_view v;
	uint64_t next;
	int rc = 0, steps;

	for (steps = 0; steps < MAX_STEPS; steps++) {
		rc = shmq__spill_read(r, x, &v);
		if (rc == 0) {
			check_view(&v, x);
			if (x > UINT64_MAX - v.size)
				fail("frame wraps the offset space", x);
			x += v.size;
			continue;
		}
		if (rc != SHMQ_ECORRUPT)
			break;
		rc = shmq__spill_skip(r, x, &next);
		if (rc < 0)
			break;
		if (next <= x)
			fail("skip did not move forward", x);
		x = next;
	}
	if (steps == MAX_STEPS)
		fail("more frames than the file can hold", x);
	*rc_out = rc;
	return x;
}

static void fuzz_checkpoint(const uint8_t *p, size_t n)
{
	struct shmq_ckpt *cp = NULL;
	uint32_t i;

	if (shmq__checkpoint_decode(p, n, &cp) != 0)
		return;
	for (i = 0; i < cp->group_count; i++) {
		if (!shmq__name_valid(cp->groups[i].name) ||
		    cp->groups[i].partitions > SHMQ_MAX_PARTITIONS)
			fail("a checkpoint decoded with a bad group", i);
		if (cp->groups[i].partitions)
			(void)*(volatile uint64_t *)&cp->groups[i].committed[cp->groups[i].partitions - 1];
	}
	shmq__checkpoint_free(cp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct shmq_spill_opts opts = {
		.segment_bytes = 1 << 20,
		.index_interval = 256,
		.buffer_bytes = 4096,
		.max_frame = 1 << 20,
	};
	char base[128], part[256], seg[320], idx[320], name[SHMQ_SPILL_NAME_MAX];
	struct shmq_spill_recovery rep, rep2;
	struct shmq_spill_log *log = NULL;
	struct shmq_spill_reader *r = NULL;
	struct shmq_frame_view v;
	uint64_t first = 0, end, x, t;
	uint32_t seg_len = 0;
	uint8_t key[3] = { 1, 2, 3 }, val[45];
	int rc, i;

	if (size < 1)
		return 0;
	if (data[0] & 1) {
		fuzz_checkpoint(data + 1, size - 1);
		return 0;
	}
	data++;
	size--;
	for (i = 0; i < 4 && (size_t)i < size; i++)
		seg_len |= (uint32_t)data[i] << (8 * i);
	data += i;
	size -= (size_t)i;
	if (seg_len > size)
		seg_len = (uint32_t)size;
	/* Aligned: a name that is not is no segment (and is ignored). */
	if (seg_len >= 40)
		memcpy(&first, data + 32, sizeof(first));
	first &= ~(uint64_t)(SHMQ_FRAME_ALIGN - 1);

	snprintf(base, sizeof(base), "%s/shmq-spill-fuzz-%d",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
	nftw(base, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	if (mkdir(base, 0700) < 0)
		fail("cannot make the directory", 0);
	snprintf(part, sizeof(part), "%s/spill", base);
	mkdir(part, 0700);
	snprintf(part, sizeof(part), "%s/spill/%s", base, TOPIC);
	mkdir(part, 0700);
	snprintf(part, sizeof(part), "%s/spill/%s/0", base, TOPIC);
	if (mkdir(part, 0700) < 0)
		fail("cannot make the partition directory", 0);
	shmq__spill_file_name(first, SHMQ_SPILL_SEG_EXT, name);
	snprintf(seg, sizeof(seg), "%s/%s", part, name);
	shmq__spill_file_name(first, SHMQ_SPILL_IDX_EXT, name);
	snprintf(idx, sizeof(idx), "%s/%s", part, name);
	put_file(seg, data, seg_len);
	if (size > seg_len)
		put_file(idx, data + seg_len, size - seg_len);

	/* The reader on the raw files. */
	if (shmq__spill_reader_open(base, TOPIC, 0, NULL, &r) == 0) {
		walk(r, first, &rc);
		shmq__spill_reader_range(r, &x, &end);
		for (t = 0; t < 4; t++) {
			uint64_t ts = t == 3 ? UINT64_MAX : t * 1000000007ull;

			if (shmq__spill_seek_time(r, ts, &x) == 0 && shmq__spill_read(r, x, &v) == 0) {
				check_view(&v, x);
				if (v.pad || v.timestamp_ns < ts)
					fail("seek by time found an older message", x);
			}
		}
		shmq__spill_reader_close(r);
		r = NULL;
	}

	/* Recovery, then the log it leaves. */
	rc = shmq__spill_open(base, TOPIC, 0, &opts, &rep, &log);
	if (rc < 0) {
		if (rc != SHMQ_EVERSION && rc != SHMQ_EFOREIGN)
			fail("recovery failed", (uint64_t)-rc);
		goto out;
	}
	if (rep.end_offset < first)
		fail("recovery ends before the first offset", rep.end_offset);
	if (shmq__spill_reader_open(base, TOPIC, 0, NULL, &r) < 0)
		fail("no reader after recovery", 0);
	x = walk(r, first, &rc);
	if (x != rep.end_offset || rc != -EAGAIN)
		fail("the recovered log does not read to its end", x);

	/* The log takes new frames where recovery left it. */
	end = rep.end_offset;
	memset(&v, 0, sizeof(v));
	memset(val, 0x5a, sizeof(val));
	v.pos = end;
	v.size = shmq__frame_bytes(sizeof(key), sizeof(val));
	v.key_len = sizeof(key);
	v.value_len = sizeof(val);
	v.timestamp_ns = 42;
	v.key = key;
	v.value = val;
	rc = shmq__spill_append(log, &v);
	if (rc == -EINVAL && end > UINT64_MAX - 4096)
		goto out; /* the offset space is used up */
	if (rc < 0 || shmq__spill_sync(log) < 0)
		fail("append after recovery failed", end);
	rc = shmq__spill_read(r, end, &v);
	if (rc < 0 || v.key_len != sizeof(key) || v.value_len != sizeof(val) ||
	    memcmp(v.key, key, sizeof(key)) || memcmp(v.value, val, sizeof(val)))
		fail("the appended frame does not read back", end);
	end += v.size;
	shmq__spill_close(log);
	log = NULL;

	/* Recovery again: nothing left to do. */
	rc = shmq__spill_open(base, TOPIC, 0, &opts, &rep2, &log);
	if (rc < 0 || rep2.cuts || rep2.end_offset != end || rep2.holes != rep.holes)
		fail("recovery is not idempotent", rep2.end_offset);
out:
	shmq__spill_reader_close(r);
	shmq__spill_close(log);
	nftw(base, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}
