/*
 * hist.h - a log-linear latency histogram (HDR style) of every sample.
 *
 * Design note
 *   A round trip is recorded in a bucket chosen by its power of two and,
 *   within that, by HIST_SUB linear steps, so the relative error of any
 *   reported value is below 1 / HIST_SUB (0.8 %) while the memory stays
 *   fixed (HIST_BUCKETS counters, 34 KiB) however many samples come.
 *   Values below HIST_SUB ns are exact.  Minimum, maximum and sum are kept
 *   exactly beside the buckets.
 *
 *   A percentile is reported as the highest value of the bucket the rank
 *   falls in (never above the exact maximum): the histogram may round a
 *   latency up by less than 0.8 %, never down, so it cannot flatter a
 *   transport.
 *
 *   Recording is two shifts and an increment: cheap enough to do for every
 *   sample outside the timed interval.
 */
#ifndef SHMQ_BENCH_HIST_H
#define SHMQ_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7u
#define HIST_SUB (1u << HIST_SUB_BITS)
/* Values up to 2^40 ns (18 minutes); anything larger lands in the last bucket. */
#define HIST_MAX_BITS 40u
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	double sum;
	uint64_t b[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *into, const struct hist *from);

static inline unsigned hist_index(uint64_t v)
{
	unsigned msb, shift;

	if (v < HIST_SUB)
		return (unsigned)v;
	if (v >= (1ull << HIST_MAX_BITS))
		return HIST_BUCKETS - 1;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - HIST_SUB_BITS;
	/* v >> shift is in [HIST_SUB, 2 HIST_SUB): the buckets follow on. */
	return shift * HIST_SUB + (unsigned)(v >> shift);
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

/* The highest value that bucket i stands for. */
uint64_t hist_bucket_high(unsigned i);

/* The p-th percentile (0 < p <= 100), rounded up to its bucket; 0 if empty. */
uint64_t hist_pct(const struct hist *h, double p);

#endif /* SHMQ_BENCH_HIST_H */
