/*
 * group.c - partition ownership in PARTITIONED groups: rebalancing and
 * hand-over.
 *
 * Overview
 * --------
 * In a PARTITIONED group each partition has one owner, a member slot index
 * kept in the group's cursor line of that partition (cursor.owner).  Only
 * the owner takes that partition's messages, so they are processed in order.
 * The assignment is deterministic: partition p belongs to the (p mod n)-th
 * live member of the group in slot order.  It is recomputed under the
 * segment's registration mutex by whoever changes the membership: a member
 * that joins (consumer.c, open), one that leaves (close), and shmqd's reaper
 * when a member dies (reap.c).  Each rebalance bumps the group's generation;
 * members compare it at every poll and refresh their set of partitions.
 *
 * Hand-over
 * ---------
 * A partition moving away from a live member must not be worked on by two
 * members at once.  The new owner is written with SHMQ_OWNER_PENDING and
 * the old owner in cursor.prev; the new owner leaves the partition alone
 * while PENDING is set.  The old owner, at its next poll, sees the new
 * generation, has by then released the message it held (a poll releases the
 * previous message first), and clears PENDING under the mutex.  From there the
 * new owner goes on from the group's cursor: nothing lost, nothing twice.
 *
 * A partition moving away from a member that died (or left) goes over at
 * once, and its cursor is moved back to the group's committed offset: what
 * the member took but had not committed is delivered again, at least once
 * (not in an untethered group, which delivers at most once: ring.c).
 * A PENDING hand-over whose old owner dies before it lets go is completed
 * the same way by the next rebalance.
 *
 * Memory ordering
 * ---------------
 * Owners are written under the registration mutex, then the generation with
 * release ordering; members read the generation with acquire ordering and
 * then the owners.  A member also re-reads its partition's owner right
 * before each take, so a rebalance it has not yet seen stops it at the next
 * message.  The old owner clears PENDING after its release of the frame it
 * held (a release store), so the new owner never overlaps it.
 */
#include <errno.h>
#include <string.h>

#include "atomics.h"

#include "shmq_int.h"

static bool pos_before(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b) < 0;
}

/* Live members of group g, in slot order, leaving out `gone`. */
static uint32_t live_members(struct shmq_map *m, uint32_t g, uint32_t gone,
			     uint32_t *out)
{
	uint32_t i, n = 0;

	for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
		struct shmq_member_slot *s = shmq__member_slot(m, i);
		struct shmq_owner o;

		if (i == gone || ck_pr_load_32(&s->group) != g)
			continue;
		o.pid = ck_pr_load_32(&s->owner.pid);
		o.start_ticks = ck_pr_load_64(&s->owner.start_ticks);
		if (o.pid && shmq__owner_alive(&o))
			out[n++] = i;
	}
	return n;
}

static bool is_in(const uint32_t *set, uint32_t n, uint32_t x)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (set[i] == x)
			return true;
	return false;
}

/*
 * Move the group's cursor in p back to its committed offset (a dead owner's
 * uncommitted messages are delivered again).  Best effort: an offset no
 * longer in the ring (nor, when spilling, on disk) leaves the cursor where
 * it is rather than skipping anything.
 */
static void rewind_to_committed(struct shmq_map *m, uint32_t p, uint32_t g)
{
	struct shmq_cursor *cur = &shmq__part(m, p)->cursor[g];
	uint64_t committed = ck_pr_load_64(&cur->committed);
	uint64_t next = ck_pr_load_64(&cur->next) & ~SHMQ_CURSOR_WALKER;

	/* Untethered groups deliver at most once: what was taken is gone. */
	if (ck_pr_load_32(&shmq__group(m, g)->untethered))
		return;
	if (!pos_before(committed, next))
		return;
	if (shmq__ring_seek(m, p, g, committed) == 0)
		return;
	/* Below the tail: on a spilling topic it is in the spill files. */
	if (m->geo.spill_mode != SHMQ_SPILL_OFF)
		shmq__ring_seek_disk(m, p, g, committed);
}

void shmq__group_rebalance(struct shmq_map *m, uint32_t g, uint32_t gone)
{
	struct shmq_group_slot *gs = shmq__group(m, g);
	uint32_t live[SHMQ_MAX_MEMBERS], n, p;

	if (ck_pr_load_32(&gs->mode) != SHMQ_GROUP_PARTITIONED)
		return;
	n = live_members(m, g, gone, live);
	for (p = 0; p < m->geo.partitions; p++) {
		struct shmq_cursor *cur = &shmq__part(m, p)->cursor[g];
		uint32_t cur_owner = ck_pr_load_32(&cur->owner);
		uint32_t owner = cur_owner & ~SHMQ_OWNER_PENDING;
		uint32_t want = n ? live[p % n] : SHMQ_OWNER_NONE;
		uint32_t prev = ck_pr_load_32(&cur->prev);
		bool pending = cur_owner & SHMQ_OWNER_PENDING;

		/* A hand-over whose old owner is gone completes now. */
		if (pending && !is_in(live, n, prev)) {
			rewind_to_committed(m, p, g);
			pending = false;
			ck_pr_store_32(&cur->prev, SHMQ_OWNER_NONE);
		}
		if (owner == want) {
			ck_pr_store_32(&cur->owner, want | (pending ? SHMQ_OWNER_PENDING : 0));
			continue;
		}
		if (pending) {
			/* Still waiting for prev: it goes straight to want. */
			ck_pr_store_32(&cur->owner, want == SHMQ_OWNER_NONE ?
				       SHMQ_OWNER_NONE : want | SHMQ_OWNER_PENDING);
			continue;
		}
		if (owner != SHMQ_OWNER_NONE && is_in(live, n, owner) &&
		    want != SHMQ_OWNER_NONE) {
			/* From a live member: it lets go at its next poll. */
			ck_pr_store_32(&cur->prev, owner);
			ck_pr_fence_store();
			ck_pr_store_32(&cur->owner, want | SHMQ_OWNER_PENDING);
			continue;
		}
		/* From a dead, departed or no member: at once. */
		if (owner != SHMQ_OWNER_NONE)
			rewind_to_committed(m, p, g);
		ck_pr_store_32(&cur->prev, SHMQ_OWNER_NONE);
		ck_pr_store_32(&cur->owner, want);
	}
	/* Owners before the generation that makes members look at them. */
	ck_pr_fence_store();
	ck_pr_store_32(&gs->generation, ck_pr_load_32(&gs->generation) + 1);
	/* Sleeping members must wake to see it. */
	ck_pr_fence_memory();
	shmq__event_signal(&m->hdr->data_seq, &m->hdr->data_waiters);
}

bool shmq__group_let_go(struct shmq_map *m, uint32_t p, uint32_t g,
			uint32_t member)
{
	struct shmq_cursor *cur = &shmq__part(m, p)->cursor[g];
	uint32_t owner = ck_pr_load_32(&cur->owner);

	if (!(owner & SHMQ_OWNER_PENDING) || ck_pr_load_32(&cur->prev) != member)
		return false;
	/* Under the registration mutex: no rebalance runs meanwhile. */
	ck_pr_store_32(&cur->prev, SHMQ_OWNER_NONE);
	ck_pr_fence_store();
	ck_pr_store_32(&cur->owner, owner & ~SHMQ_OWNER_PENDING);
	/* The new owner may be asleep waiting for this. */
	ck_pr_fence_memory();
	shmq__event_signal(&m->hdr->data_seq, &m->hdr->data_waiters);
	return true;
}
