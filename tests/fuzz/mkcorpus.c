/*
 * mkcorpus.c - write the seed corpora of the fuzz targets.
 *
 * Not part of any build: the corpus it writes is committed, and `make
 * check` replays it.  Rebuild it by hand after a change of the frame or
 * segment format (tests/fuzz/mkcorpus.sh does exactly this):
 *
 *   make build/default/libshmq.a
 *   cc -std=gnu11 -Iinclude -Ilibshmq -o build/default/mkcorpus \
 *      tests/fuzz/mkcorpus.c build/default/libshmq.a -lck -lnuma -pthread
 *   build/default/mkcorpus tests/fuzz/corpus
 *
 * It creates one real segment through shmq__segment_create() (in /dev/shm,
 * removed again at once) so that the segment seeds start from what the
 * library really writes, then derives broken variants from it: each field
 * at, just past and far past its limit.  Frame seeds are in the format
 * frame-fuzz.c documents: an 8-byte little-endian start position, then the
 * ring bytes from that position on.
 *
 * Output is deterministic except where the library's header carries
 * run-specific values (owner uid); the creation time is fixed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmq_int.h"

#define RING ((uint64_t)SHMQ_RING_MIN)

static const char *outdir;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("mkcorpus: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void put(const char *sub, const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", outdir, sub);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		die("mkdir %s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/%s/%s", outdir, sub, name);
	f = fopen(path, "wb");
	if (!f)
		die("%s: %s", path, strerror(errno));
	if (n && fwrite(p, 1, n, f) != n)
		die("%s: short write", path);
	if (fclose(f) != 0)
		die("%s: %s", path, strerror(errno));
}

/* ------------------------------------------------------------------------
 * Frame seeds
 */

/* An input under construction: position, then ring bytes from there on. */
struct fin {
	uint64_t pos;	/* start position */
	size_t len;	/* ring bytes used so far */
	uint8_t ring[RING];
};

static struct fin fi;

static void fstart(uint64_t pos)
{
	memset(&fi, 0, sizeof fi);
	fi.pos = pos;
}

/* Append a raw frame header and body at the next position of the input. */
static uint64_t fraw(uint64_t seal, uint32_t size, uint16_t key_len,
		     uint16_t flags, uint32_t value_len, uint32_t body_bytes)
{
	struct shmq_frame h = {
		.seal = seal, .size = size, .key_len = key_len, .flags = flags,
		.value_len = value_len, .crc = 0, .timestamp_ns = 1700000000000000000ull,
	};
	uint64_t at = fi.pos + fi.len;
	uint32_t i;

	if (fi.len + SHMQ_FRAME_HEADER + body_bytes > RING)
		die("frame seed too long");
	memcpy(fi.ring + fi.len, &h, sizeof h);
	for (i = 0; i < body_bytes; i++)
		fi.ring[fi.len + SHMQ_FRAME_HEADER + i] = (uint8_t)('a' + i % 26);
	fi.len += SHMQ_FRAME_HEADER + body_bytes;
	return at;
}

/* Append a well-formed committed message. */
static void fmsg(uint16_t key_len, uint32_t value_len)
{
	uint32_t size = shmq__frame_bytes(key_len, value_len);

	fraw((fi.pos + fi.len) | SHMQ_SEAL_COMMITTED, size, key_len, 0, value_len,
	     size - SHMQ_FRAME_HEADER);
}

/* Append a well-formed message with the producer extension (id, seq). */
static void fext(uint16_t key_len, uint32_t value_len, uint64_t id, uint64_t seq)
{
	struct shmq_frame_ext e = { id, seq };
	uint32_t size = shmq__frame_bytes(SHMQ_FRAME_EXT + key_len, value_len);
	uint64_t at = fi.len;

	fraw((fi.pos + fi.len) | SHMQ_SEAL_COMMITTED, size, key_len,
	     SHMQ_FRAME_PRODUCER, value_len, size - SHMQ_FRAME_HEADER);
	memcpy(fi.ring + at + SHMQ_FRAME_HEADER, &e, sizeof(e));
}

/* Append a well-formed padding frame of size bytes. */
static void fpad(uint32_t size)
{
	fraw((fi.pos + fi.len) | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD, size, 0, 0, 0,
	     0);
	/* The body of a pad is whatever was there; keep the input short. */
	fi.len += size - SHMQ_FRAME_HEADER;
}

static void fput(const char *name)
{
	static uint8_t out[8 + RING];
	int i;

	for (i = 0; i < 8; i++)
		out[i] = (uint8_t)(fi.pos >> (8 * i));
	memcpy(out + 8, fi.ring, fi.len);
	put("frame", name, out, 8 + fi.len);
}

static void frame_seeds(void)
{
	const uint32_t max_value = RING / 2; /* the loosest max_message */
	uint32_t i;

	put("frame", "empty", "", 0);
	fstart(0);
	fput("zero-ring-at-0");
	fstart(5 * RING + 4096);
	fput("zero-ring-lapped");

	/* Well-formed logs. */
	fstart(0);
	fmsg(1, 5);
	fput("one-message");
	fstart(3 * RING + 4096);
	fmsg(3, 100);
	fmsg(0, 0);
	fmsg(0, 1);
	fmsg(16, 31);
	fput("four-messages-lapped");
	fstart(64);
	fmsg(0, 10);
	fpad(96);
	fmsg(8, 8);
	fput("message-pad-message");
	/* Message, wrap padding to the end, message at ring offset 0. */
	fstart(7 * RING - 96);
	fmsg(0, 20);
	fpad(32);
	fmsg(2, 2);
	fput("wrap-padding");
	/* A frame that ends exactly at the end of the ring. */
	fstart(2 * RING - 128);
	fmsg(4, 128 - 32 - 4);
	fmsg(0, 0);
	fput("frame-ends-at-ring-end");
	/* The largest message the loosest topic admits, key and value. */
	fstart(RING);
	fmsg(0, max_value);
	fput("value-at-limit");
	fstart(RING);
	fmsg(4096, 0);
	fput("key-only");
	fstart(0);
	fmsg(1000, max_value - 1000);
	fput("key-and-value-at-limit");
	/* A padding frame covering the whole rest of the ring. */
	fstart(RING);
	fpad(RING);
	fput("pad-whole-ring");
	/* A lap of the smallest frames, then the walk meets its own start. */
	fstart(9 * RING);
	for (i = 0; i < RING / SHMQ_FRAME_ALIGN; i++)
		fmsg(0, 0);
	fput("lap-of-empty-messages");

	/* Seals that say "not for this position". */
	fstart(RING);
	fraw(0 | SHMQ_SEAL_COMMITTED, 64, 1, 0, 1, 32);
	fput("seal-previous-lap");
	fstart(RING);
	fraw((2 * RING) | SHMQ_SEAL_COMMITTED, 64, 1, 0, 1, 32);
	fput("seal-next-lap");
	fstart(RING);
	fraw(RING, 64, 1, 0, 1, 32);
	fput("seal-not-committed");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_PAD, 64, 0, 0, 0, 32);
	fput("seal-pad-not-committed");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_FLAGS, 64, 1, 0, 1, 32);
	fput("seal-all-flag-bits");
	/* The last frame before the 64-bit position wraps, then position 0. */
	fstart(UINT64_MAX & ~(uint64_t)SHMQ_SEAL_FLAGS);
	fmsg(0, 0);
	fmsg(1, 1);
	fput("position-wraps-64-bits");

	/* Committed for this position, but the lengths lie. */
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 0, 0, 0, 0, 32);
	fput("size-zero");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD, 0, 0, 0, 0, 32);
	fput("pad-size-zero");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 31, 0, 0, 0, 32);
	fput("size-below-header");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 33, 0, 0, 1, 32);
	fput("size-unaligned");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 0xffffffe0u, 0, 0, 16, 32);
	fput("size-huge");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD, 0xffffffe0u, 0, 0, 0, 32);
	fput("pad-size-huge");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD, RING + 32, 0, 0, 0, 32);
	fput("pad-larger-than-ring");
	fstart(2 * RING - 64);
	fraw((2 * RING - 64) | SHMQ_SEAL_COMMITTED, 128, 0, 0, 90, 32);
	fput("frame-crosses-ring-end");
	fstart(2 * RING - 64);
	fraw((2 * RING - 64) | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD, 128, 0, 0, 0, 32);
	fput("pad-crosses-ring-end");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 64, 0xffff, 0, 0, 32);
	fput("key-len-beyond-frame");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 64, 0, 0, 0xffffffffu, 32);
	fput("value-len-all-ones");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 64, 16, 0, 17, 32);
	fput("key-plus-value-one-over");
	/* 32 + key_len + value_len wraps a 32-bit sum to exactly the size. */
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 64, 0xffff, 0,
	     (uint32_t)(0x100000000ull + 64 - SHMQ_FRAME_HEADER - 0xffff), 32);
	fput("length-sum-wraps-u32");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 32, 0, 0, UINT32_MAX, 0);
	fput("value-len-wraps-to-header");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, shmq__frame_bytes(0, max_value + 1), 0, 0,
	     max_value + 1, 0);
	fput("value-one-over-limit");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, shmq__frame_bytes(SHMQ_KEY_MAX, 0), SHMQ_KEY_MAX,
	     0, 0, 0);
	fput("key-max-frame-over-limit");
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 64, 1, 0xffff, 1, 32);
	fput("flags-set");
	fstart(RING);
	fext(3, 40, 0x1de7, 1);
	fext(0, 0, UINT64_MAX, (uint64_t)INT64_MAX);
	fmsg(1, 1);
	fput("producer-ext");
	fstart(RING);
	fext(0, 8, 0, 5);
	fput("producer-ext-id-zero");
	fstart(RING);
	fext(0, 8, 7, 0);
	fput("producer-ext-seq-zero");
	/* The extension does not fit the frame's size. */
	fstart(RING);
	fraw(RING | SHMQ_SEAL_COMMITTED, 64, 0, SHMQ_FRAME_PRODUCER, 32, 32);
	fput("producer-ext-over-size");
	/* A good message followed by one whose size runs off the ring. */
	fstart(RING - 4096);
	fmsg(2, 40);
	fraw((RING - 4096 + 96) | SHMQ_SEAL_COMMITTED, 8192, 0, 0, 8000, 32);
	fput("good-then-oversized");
}

/* ------------------------------------------------------------------------
 * Segment seeds
 */

static uint8_t real_hdr[SHMQ_PAGE];

/* The header page of a real segment of p partitions of ring bytes. */
static void real_header(uint32_t p, uint64_t ring, uint8_t *out)
{
	struct shmq_topic_params tp = {
		.partitions = p, .ring_bytes = ring, .max_message = 0,
		.full_policy = SHMQ_FULL_BLOCK, .numa_node = -1, .mode = 0600,
		.stall_timeout_ms = 10000, .topic_id = 0x5eed,
	};
	struct shmq_seg_header *h;
	struct shmq_map map;
	char name[64];
	int rc;

	rc = shmq__topic_params_check(&tp);
	if (rc)
		die("topic params: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	snprintf(name, sizeof name, "/shmq-mkcorpus-%ld", (long)getpid());
	shm_unlink(name);
	rc = shmq__segment_create(name, "seed", &tp, &map);
	if (rc)
		die("segment create: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	shm_unlink(name);
	memcpy(out, map.base, SHMQ_PAGE);
	shmq__segment_detach(&map);
	h = (struct shmq_seg_header *)out;
	h->created_ns = 1700000000000000000ull;
}

/* Write real_hdr with one field changed. */
#define VARIANT(name, field, value)                                            \
	do {                                                                   \
		uint8_t v_[SHMQ_PAGE];                                         \
		struct shmq_seg_header *h_ = (struct shmq_seg_header *)v_;     \
		memcpy(v_, real_hdr, sizeof v_);                               \
		h_->field = (value);                                           \
		put("segment", name, v_, sizeof v_);                           \
	} while (0)

static void segment_seeds(void)
{
	static const size_t cuts[] = { 0, 1, 7, 8, 16, 63, 64, 100,
				       sizeof(struct shmq_seg_header) - 1 };
	const struct shmq_seg_header *rh = (const struct shmq_seg_header *)real_hdr;
	uint8_t other[SHMQ_PAGE];
	char name[64];
	size_t i;

	real_header(2, 2 * RING, other);
	put("segment", "real-2x128k", other, sizeof other);
	real_header(4, RING, other);
	put("segment", "real-4x64k", other, sizeof other);
	real_header(1, RING, real_hdr);
	put("segment", "real-1x64k", real_hdr, sizeof real_hdr);
	put("segment", "real-struct-only", real_hdr, sizeof(struct shmq_seg_header));
	for (i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		snprintf(name, sizeof name, "truncated-%zu", cuts[i]);
		put("segment", name, real_hdr, cuts[i]);
	}

	VARIANT("magic-zero", magic, 0);
	VARIANT("magic-swapped", magic, __builtin_bswap64(SHMQ_SEG_MAGIC));
	VARIANT("version-zero", version, 0);
	VARIANT("version-next", version, SHMQ_LAYOUT_VERSION + 1);
	VARIANT("signature-bit", signature, rh->signature ^ 1);
	VARIANT("header-bytes-zero", header_bytes, 0);
	VARIANT("header-bytes-page-plus", header_bytes, SHMQ_PAGE + 1);
	VARIANT("header-bytes-huge", header_bytes, UINT32_MAX);
	VARIANT("total-zero", total_bytes, 0);
	VARIANT("total-minus-one", total_bytes, rh->total_bytes - 1);
	VARIANT("total-plus-page", total_bytes, rh->total_bytes + SHMQ_PAGE);
	VARIANT("total-huge", total_bytes, UINT64_MAX);
	VARIANT("ring-zero", ring_bytes, 0);
	VARIANT("ring-three", ring_bytes, 3);
	VARIANT("ring-half-min", ring_bytes, RING / 2);
	VARIANT("ring-min-plus-align", ring_bytes, RING + 32);
	VARIANT("ring-double", ring_bytes, 2 * RING);
	VARIANT("ring-above-max", ring_bytes, SHMQ_RING_MAX * 2);
	VARIANT("ring-2-pow-63", ring_bytes, 1ull << 63);
	VARIANT("partitions-zero", partitions, 0);
	VARIANT("partitions-two", partitions, 2);
	VARIANT("partitions-above-max", partitions, SHMQ_MAX_PARTITIONS + 1);
	VARIANT("partitions-huge", partitions, UINT32_MAX);
	VARIANT("parts-off-zero", parts_off, 0);
	VARIANT("parts-off-page", parts_off, rh->parts_off + SHMQ_PAGE);
	VARIANT("rings-off-zero", rings_off, 0);
	VARIANT("rings-off-page", rings_off, rh->rings_off + SHMQ_PAGE);
	VARIANT("rings-off-huge", rings_off, UINT64_MAX - 4095);
	VARIANT("max-message-zero", max_message, 0);
	VARIANT("max-message-half-ring-plus", max_message, (uint32_t)(RING / 2 + 1));
	VARIANT("max-message-ring", max_message, (uint32_t)RING);
	VARIANT("max-message-huge", max_message, UINT32_MAX);
	VARIANT("policy-zero", full_policy, 0);
	VARIANT("policy-huge", full_policy, UINT32_MAX);
	VARIANT("numa-huge", numa_node, INT32_MAX);
	VARIANT("stall-zero", stall_timeout_ms, 0);
	VARIANT("not-ready", ready, 0);
	VARIANT("ready-other", ready, ~SHMQ_SEG_READY);
	VARIANT("deleted", deleted, 1);
	VARIANT("data-waiters-huge", data_waiters, UINT32_MAX);

	/* Geometry that is consistent in itself but enormous. */
	{
		uint8_t v[SHMQ_PAGE];
		struct shmq_seg_header *h = (struct shmq_seg_header *)v;

		memcpy(v, real_hdr, sizeof v);
		h->partitions = SHMQ_MAX_PARTITIONS;
		h->ring_bytes = SHMQ_RING_MAX;
		h->rings_off = shmq__rings_off(h->partitions);
		h->total_bytes = shmq__segment_bytes(h->partitions, h->ring_bytes);
		put("segment", "consistent-huge", v, sizeof v);

		/* Consistent and small enough to be embedded: 3 partitions. */
		memcpy(v, real_hdr, sizeof v);
		h->partitions = 3;
		h->rings_off = shmq__rings_off(h->partitions);
		h->total_bytes = shmq__segment_bytes(h->partitions, h->ring_bytes);
		put("segment", "consistent-3x64k", v, sizeof v);

		/* Partition count and ring size whose product overflows. */
		memcpy(v, real_hdr, sizeof v);
		h->partitions = SHMQ_MAX_PARTITIONS;
		h->ring_bytes = 1ull << 57;
		h->rings_off = shmq__rings_off(h->partitions);
		h->total_bytes = h->rings_off + h->partitions * h->ring_bytes;
		put("segment", "geometry-overflows", v, sizeof v);

		/* The name with no terminating NUL. */
		memcpy(v, real_hdr, sizeof v);
		memset(h->name, 'x', sizeof h->name);
		put("segment", "name-unterminated", v, sizeof v);

		/* Everything 0xff. */
		memset(v, 0xff, sizeof v);
		put("segment", "all-ones", v, sizeof v);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS-DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	if (mkdir(outdir, 0755) < 0 && errno != EEXIST)
		die("mkdir %s: %s", outdir, strerror(errno));
	frame_seeds();
	segment_seeds();
	return 0;
}
