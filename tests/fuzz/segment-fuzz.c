/*
 * segment-fuzz.c - fuzz the validation of a segment header.
 *
 * The input is the first bytes of a segment as a hostile or broken process
 * may have left them.  shmq__segment_validate() is given it twice:
 *
 *   1. as an object of exactly the input's size (a heap block of that size,
 *      so AddressSanitizer sees any read past it; a short input is a
 *      truncated object);
 *   2. when the header's total_bytes claims a small object (at most
 *      EMBED_MAX), at the start of a zeroed block of that claimed size, so
 *      that a header that is self-consistent reaches the checks past the
 *      size test and can be accepted;
 *   3. as 2, with the layout version and signature of this build written
 *      over the input's, so that seeds made by an older build (the
 *      signature changes with every layout change) still reach the checks
 *      behind the signature.
 *
 * Either call must return 0 or an attach error.  When it returns 0, the
 * geometry it copied out is what every other module trusts for its bounds,
 * so the target checks that it really describes an object no larger than
 * the one given.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq_int.h"

/* Big enough for a few partitions of the smallest ring. */
#define EMBED_MAX (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, size_t bytes, const struct shmq_geometry *g)
{
	fprintf(stderr,
		"segment-fuzz: %s (object %zu bytes): partitions %u ring_bytes %llu "
		"max_message %u rings_off %llu total_bytes %llu\n",
		what, bytes, g->partitions, (unsigned long long)g->ring_bytes,
		g->max_message, (unsigned long long)g->rings_off,
		(unsigned long long)g->total_bytes);
	abort();
}

static void check_geometry(size_t bytes, const struct shmq_geometry *g)
{
	if (g->partitions < 1 || g->partitions > SHMQ_MAX_PARTITIONS)
		fail("partition count out of range", bytes, g);
	if (g->ring_bytes < SHMQ_RING_MIN || g->ring_bytes > SHMQ_RING_MAX ||
	    (g->ring_bytes & (g->ring_bytes - 1)))
		fail("ring size not a power of two in range", bytes, g);
	if (g->max_message > g->ring_bytes / 2)
		fail("max_message above half the ring", bytes, g);
	if (g->rings_off != shmq__rings_off(g->partitions))
		fail("rings_off does not follow the partition count", bytes, g);
	/* Both are now small enough that the product cannot overflow. */
	if (g->total_bytes != shmq__segment_bytes(g->partitions, g->ring_bytes))
		fail("total_bytes does not follow the geometry", bytes, g);
	if (g->total_bytes > bytes)
		fail("accepted a header that claims more than the object", bytes, g);
}

static void run(const uint8_t *data, size_t size, size_t bytes, bool current)
{
	struct shmq_geometry g;
	uint8_t *buf;
	int rc;

	/* malloc(0) may return NULL; one spare byte keeps the block real. */
	buf = calloc(1, bytes ? bytes : 1);
	if (!buf)
		abort();
	memcpy(buf, data, size < bytes ? size : bytes);
	if (current && bytes >= sizeof(struct shmq_seg_header)) {
		struct shmq_seg_header *h = (struct shmq_seg_header *)buf;

		h->version = SHMQ_LAYOUT_VERSION;
		h->signature = shmq__layout_signature();
	}
	memset(&g, 0xa5, sizeof g);
	rc = shmq__segment_validate(buf, bytes, &g);
	switch (rc) {
	case 0:
		check_geometry(bytes, &g);
		break;
	case SHMQ_EMAGIC:
	case SHMQ_EVERSION:
	case SHMQ_ELAYOUT:
	case SHMQ_ESIZE:
	case SHMQ_ENOTREADY:
	case SHMQ_EFOREIGN:
		break;
	default:
		fprintf(stderr, "segment-fuzz: validate returned %d (%s)\n", rc,
			shmq_strerror(rc));
		abort();
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t claimed;

	run(data, size, size, false);

	if (size < offsetof(struct shmq_seg_header, total_bytes) + sizeof claimed)
		return 0;
	memcpy(&claimed, data + offsetof(struct shmq_seg_header, total_bytes),
	       sizeof claimed);
	if (claimed > size && claimed <= EMBED_MAX) {
		run(data, size, (size_t)claimed, false);
		run(data, size, (size_t)claimed, true);
	}
	return 0;
}
