/*
 * frame-fuzz.c - fuzz the ring reader's frame decoder.
 *
 * Input format
 *   bytes 0..7   the log position the reader starts at (little-endian); it
 *                is rounded down to SHMQ_FRAME_ALIGN because a reader's
 *                position is always a frame boundary (a cursor that is not
 *                is caught before decoding, and garbage-t covers that path).
 *   bytes 8..    the ring contents, laid into a zeroed ring of RING_BYTES
 *                starting at the ring offset of that position and wrapping
 *                at the end, exactly where the reader will look.  So a short
 *                input is one frame header at the reader's position, and an
 *                input that starts near the end of the ring exercises the
 *                wrap.
 *
 * The target walks frames as a reader does: decode, and on SHMQ_FRAME_OK
 * step to pos + size; stop at PENDING or BAD.  Whatever the bytes say, a
 * decoded frame must lie inside the ring without crossing its end, its key
 * and value must lie inside the frame, and the walk must make progress.
 * The ring is a heap block of exactly RING_BYTES so that AddressSanitizer
 * catches a read past either end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq_int.h"

#define RING_BYTES ((uint64_t)SHMQ_RING_MIN)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, uint64_t pos, const struct shmq_frame_view *v)
{
	fprintf(stderr,
		"frame-fuzz: %s at pos %llu: view pos %llu size %u pad %d "
		"key_len %u value_len %u\n",
		what, (unsigned long long)pos, (unsigned long long)v->pos,
		v->size, v->pad, v->key_len, v->value_len);
	abort();
}

/* Is [p, p + n) inside [lo, hi)?  Written so that no sum can overflow. */
static int inside(const uint8_t *p, uint64_t n, const uint8_t *lo,
		  const uint8_t *hi)
{
	if (p < lo || p > hi)
		return 0;
	return n <= (uint64_t)(hi - p);
}

static void check_view(const uint8_t *ring, uint64_t pos,
		       const struct shmq_frame_view *v)
{
	uint64_t off = pos & (RING_BYTES - 1);
	const uint8_t *frame = ring + off;

	if (v->pos != pos)
		fail("view names another position", pos, v);
	if (v->size < SHMQ_FRAME_HEADER || v->size % SHMQ_FRAME_ALIGN)
		fail("frame size not a positive multiple of the alignment", pos, v);
	if (v->size > RING_BYTES - off)
		fail("frame crosses the end of the ring", pos, v);
	if (v->pad)
		return;
	if (v->key_len && !inside(v->key, v->key_len, frame, frame + v->size))
		fail("key outside its frame", pos, v);
	if (v->value_len && !inside(v->value, v->value_len, frame, frame + v->size))
		fail("value outside its frame", pos, v);
	if ((uint64_t)SHMQ_FRAME_HEADER + v->key_len + v->value_len > v->size)
		fail("key and value larger than the frame", pos, v);
	/* The producer extension: both fields or neither, before the key. */
	if (!v->producer_id != !v->seq)
		fail("producer id without sequence, or the reverse", pos, v);
	if (v->producer_id &&
	    (v->key != frame + SHMQ_FRAME_HEADER + SHMQ_FRAME_EXT ||
	     (uint64_t)SHMQ_FRAME_HEADER + SHMQ_FRAME_EXT + v->key_len + v->value_len > v->size))
		fail("producer extension not where it belongs", pos, v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The largest frame a topic with this ring may admit (max_message
	 * at most ring_bytes / 2); the loosest bound the reader is given. */
	const uint32_t max_frame = shmq__frame_bytes(0, RING_BYTES / 2);
	struct shmq_frame_view v;
	uint8_t *ring;
	uint64_t pos = 0, off;
	size_t i, n;
	unsigned steps;
	int st;

	for (i = 0; i < 8 && i < size; i++)
		pos |= (uint64_t)data[i] << (8 * i);
	pos &= ~(uint64_t)(SHMQ_FRAME_ALIGN - 1);
	data += i;
	size -= i;

	ring = calloc(1, RING_BYTES);
	if (!ring)
		abort();
	/* Lay the input out from the reader's position, wrapping. */
	off = pos & (RING_BYTES - 1);
	n = size < RING_BYTES ? size : RING_BYTES;
	for (i = 0; i < n;) {
		size_t chunk = RING_BYTES - off < n - i ? RING_BYTES - off : n - i;

		memcpy(ring + off, data + i, chunk);
		i += chunk;
		off = (off + chunk) & (RING_BYTES - 1);
	}

	/*
	 * A ring of RING_BYTES holds at most RING_BYTES / 32 frames, so a
	 * walk of one lap plus one frame has seen all of them; a decoder
	 * that keeps returning OK past that is following a loop of seals,
	 * which the seal protocol (each frame carries its own position, and
	 * positions only grow) must rule out.
	 */
	for (steps = 0; steps <= RING_BYTES / SHMQ_FRAME_ALIGN; steps++) {
		memset(&v, 0xa5, sizeof v);
		st = shmq__frame_decode(ring, RING_BYTES, pos, max_frame, &v);

		if (st == SHMQ_FRAME_PENDING || st == SHMQ_FRAME_BAD)
			break;
		if (st != SHMQ_FRAME_OK) {
			fprintf(stderr, "frame-fuzz: decode returned %d\n", st);
			abort();
		}
		check_view(ring, pos, &v);
		if (!v.pad && v.size > max_frame)
			fail("message frame larger than max_frame", pos, &v);
		/* Touch every byte the view names, so ASan sees any stray. */
		{
			volatile uint8_t sink = 0;
			uint32_t k;

			if (!v.pad) {
				for (k = 0; k < v.key_len; k++)
					sink ^= v.key[k];
				for (k = 0; k < v.value_len; k++)
					sink ^= v.value[k];
			}
			(void)sink;
		}
		pos += v.size;
	}
	if (steps > RING_BYTES / SHMQ_FRAME_ALIGN) {
		fprintf(stderr, "frame-fuzz: more than a lap of committed frames\n");
		abort();
	}
	free(ring);
	return 0;
}
