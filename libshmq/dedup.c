/*
 * dedup.c - consumer-side deduplication by (producer id, partition,
 * sequence).
 *
 * A private hash table (nothing in shared memory): open addressing with
 * linear probing, at most half full, keyed by (producer id, partition),
 * each entry holding the highest sequence seen and when the pair was last
 * seen (a counter of checks).  When a new pair comes and max_entries are
 * kept, the pair seen least recently is evicted: a scan of the table,
 * O(max_entries), paid only when the set of pairs a consumer sees
 * outgrows the table.  Deleting from a linearly probed table moves later
 * entries of the same run back (no tombstones), so lookups stay short.
 */
#include <errno.h>
#include <stdlib.h>

#include "shmq_int.h"

#define DEDUP_DEFAULT	  4096u
#define DEDUP_MAX_ENTRIES (1u << 24)

struct dedup_entry {
	uint64_t producer_id; /* 0: empty */
	uint64_t seq;	      /* highest seen */
	uint64_t seen;	      /* d->clock when last seen */
	uint32_t partition;
};

struct shmq_dedup {
	struct dedup_entry *t;
	uint32_t mask;	      /* table size - 1, a power of two */
	uint32_t n, max;
	uint64_t clock;
	uint64_t evictions;
};

static uint32_t slot_of(const struct shmq_dedup *d, uint64_t id, uint32_t part)
{
	uint64_t h = (id ^ ((uint64_t)part * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;

	return (uint32_t)(h >> 32) & d->mask;
}

int shmq_dedup_create(uint32_t max_entries, shmq_dedup_t **out)
{
	struct shmq_dedup *d;
	uint32_t size = 2;

	if (!out || max_entries > DEDUP_MAX_ENTRIES)
		return -EINVAL;
	if (!max_entries)
		max_entries = DEDUP_DEFAULT;
	while (size < 2 * max_entries)
		size <<= 1;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->t = calloc(size, sizeof(*d->t));
	if (!d->t) {
		free(d);
		return -ENOMEM;
	}
	d->mask = size - 1;
	d->max = max_entries;
	*out = d;
	return 0;
}

/* Remove the entry at i, moving later entries of its run back. */
static void remove_at(struct shmq_dedup *d, uint32_t i)
{
	uint32_t j = i;

	for (;;) {
		uint32_t home;

		j = (j + 1) & d->mask;
		if (!d->t[j].producer_id)
			break;
		home = slot_of(d, d->t[j].producer_id, d->t[j].partition);
		/* Entry j may fill the hole at i if i lies on its probe path. */
		if (((j - home) & d->mask) >= ((j - i) & d->mask)) {
			d->t[i] = d->t[j];
			i = j;
		}
	}
	d->t[i].producer_id = 0;
	d->n--;
}

static void evict_oldest(struct shmq_dedup *d)
{
	uint32_t i, old = UINT32_MAX;

	for (i = 0; i <= d->mask; i++)
		if (d->t[i].producer_id &&
		    (old == UINT32_MAX || d->t[i].seen < d->t[old].seen))
			old = i;
	if (old != UINT32_MAX) {
		remove_at(d, old);
		d->evictions++;
	}
}

int shmq_dedup_check(shmq_dedup_t *d, const struct shmq_msg *msg)
{
	uint64_t id;
	uint32_t i;

	if (!d || !msg)
		return -EINVAL;
	id = msg->producer_id;
	if (!id)
		return 1; /* not from an idempotent producer: nothing to go by */
	d->clock++;
	for (i = slot_of(d, id, msg->partition); d->t[i].producer_id;
	     i = (i + 1) & d->mask) {
		struct dedup_entry *e = &d->t[i];

		if (e->producer_id != id || e->partition != msg->partition)
			continue;
		e->seen = d->clock;
		if (msg->sequence <= e->seq)
			return 0;
		e->seq = msg->sequence;
		return 1;
	}
	if (d->n >= d->max) {
		evict_oldest(d);
		/* The hole may have moved our slot: probe again. */
		for (i = slot_of(d, id, msg->partition); d->t[i].producer_id;
		     i = (i + 1) & d->mask)
			;
	}
	d->t[i].producer_id = id;
	d->t[i].partition = msg->partition;
	d->t[i].seq = msg->sequence;
	d->t[i].seen = d->clock;
	d->n++;
	return 1;
}

uint64_t shmq_dedup_evictions(const shmq_dedup_t *d)
{
	return d ? d->evictions : 0;
}

void shmq_dedup_free(shmq_dedup_t *d)
{
	if (!d)
		return;
	free(d->t);
	free(d);
}
