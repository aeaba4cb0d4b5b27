/*
 * hist.c - the log-linear histogram of hist.h.
 *
 * Design note: see hist.h.  Nothing here is on a measured path; the
 * recording itself is inline in the header.
 */
#include "hist.h"

#include <string.h>

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void hist_add(struct hist *into, const struct hist *from)
{
	if (!from->count)
		return;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->count += from->count;
	into->sum += from->sum;
	if (from->min < into->min)
		into->min = from->min;
	if (from->max > into->max)
		into->max = from->max;
}

uint64_t hist_bucket_high(unsigned i)
{
	unsigned shift;

	if (i < 2 * HIST_SUB)
		return i;
	shift = i / HIST_SUB - 1;
	return ((uint64_t)(i - shift * HIST_SUB) << shift) + (1ull << shift) - 1;
}

uint64_t hist_pct(const struct hist *h, double p)
{
	uint64_t rank, cum = 0;

	if (!h->count)
		return 0;
	if (p >= 100)
		return h->max;
	/* Nearest rank: the smallest value with at least p % at or below it. */
	rank = (uint64_t)((p / 100.0) * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		cum += h->b[i];
		if (cum >= rank) {
			uint64_t v = hist_bucket_high(i);

			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}
