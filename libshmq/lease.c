/*
 * lease.c - the leases of SHARED group members: acknowledgement, nack,
 * ack timeout, and messages parked for delivery again.
 *
 * Overview
 * --------
 * In a SHARED group any member takes the next message of a partition with a
 * CAS on the group's cursor (ring.c).  From then on the message is that
 * member's until it acknowledges it (shmq_consumer_ack, or the next poll).
 * If instead it gives the message back (nack), holds it past its ack
 * timeout, or dies, the message must go to the group again, to exactly one
 * member, with its delivery count one higher.  The lease is the record of
 * that: one per member slot (layout.h, struct shmq_member_slot), so a group
 * has room for as many messages waiting for delivery again as it has
 * members, and never needs a queue.  A member holds at most one message,
 * so one lease per member is enough.
 *
 * The lease word packs a serial and a state:
 *
 *              prepare (member, before its take CAS)
 *     FREE(s) ---------------------------------------> HELD(s+1)
 *        ^                                                |  |
 *        |   ack (member)                                 |  | nack (member),
 *        +------------------------------------------------+  | expiry (shmqd),
 *        |                                                   | death (shmqd)
 *        |   taken by another member, or cancelled by a      v
 *        +-------- late ack of its own member ---------- PARKED(s+1)
 *
 * Every transition that two parties may race for is a CAS on the word, so
 * exactly one of them wins: a member's ack against shmqd's expiry, a late
 * ack against another member taking the parked message, two members taking
 * it.  The serial makes a CAS against an older lease fail (no ABA).  The
 * fields (position, partition, delivery count, reason) are written before
 * the word by whoever moves it to HELD or PARKED, and read after it.
 *
 * Keeping the bytes
 * -----------------
 * A parked message needs its ring space (or, read from disk, its place in
 * the group's commit horizon) until another member holds it.  The lease
 * does not add a hazard of its own: the member that parked it keeps its
 * hold (ring.c) while the lease is PARKED.  A live member lets go of its
 * hold only once its lease is no longer PARKED (its next poll takes the
 * message back itself, or finds that another member took it); shmqd frees a
 * dead member's slot, holds included, only then.  A member taking a parked
 * message publishes its own hold before its CAS, like a take from the ring.
 *
 * Finding parked messages
 * -----------------------
 * The group slot counts its PARKED leases (`parked`).  A poll scans the
 * member slots only when it is not 0, so ordinary polls pay one load of a
 * line that rarely changes.  The count goes up before a lease is parked and
 * down after it is taken, so it is never lower than the truth (a process
 * that dies between the two leaves it too high: polls then scan in vain,
 * which is slower, never wrong).
 *
 * Failure and recovery
 * --------------------
 * A member killed between its prepare and its take CAS leaves a HELD lease
 * on a message it may not have won; shmqd treats it as taken if the group's
 * cursor passed it, so a death in that window of a few instructions may
 * deliver a message twice (at least once, never lost).
 */
#include "atomics.h"

#include "shmq_int.h"

static inline uint64_t lease_word(uint64_t serial_of, uint32_t state)
{
	return (serial_of & ~SHMQ_LEASE_STATE) | state;
}

uint32_t shmq__lease_state(uint64_t word)
{
	return (uint32_t)(word & SHMQ_LEASE_STATE);
}

void shmq__lease_prepare(struct shmq_member_slot *s, uint32_t part,
			 uint64_t pos, uint32_t count)
{
	uint64_t l = ck_pr_load_64(&s->lease);

	ck_pr_store_64(&s->lease_pos, pos);
	ck_pr_store_32(&s->lease_part, part);
	ck_pr_store_32(&s->lease_count, count);
	ck_pr_fence_store();
	ck_pr_store_64(&s->lease, lease_word(l + SHMQ_LEASE_SERIAL, SHMQ_LEASE_HELD));
}

int shmq__lease_end(struct shmq_map *m, struct shmq_member_slot *s)
{
	uint64_t l = ck_pr_load_64(&s->lease);
	uint32_t g;

	if (shmq__lease_state(l) == SHMQ_LEASE_HELD) {
		/* Only an expiry (a member with an ack timeout) may race us. */
		if (!ck_pr_load_32(&s->ack_timeout_ms)) {
			ck_pr_store_64(&s->lease, lease_word(l, SHMQ_LEASE_FREE));
			return 0;
		}
		if (ck_pr_cas_64(&s->lease, l, lease_word(l, SHMQ_LEASE_FREE)))
			return 0;
		l = ck_pr_load_64(&s->lease); /* expired meanwhile */
	}
	if (shmq__lease_state(l) != SHMQ_LEASE_PARKED)
		return SHMQ_EREVOKED; /* parked and taken by another member */
	/* Parked, and nobody took it yet: our late acknowledgement wins. */
	if (!ck_pr_cas_64(&s->lease, l, lease_word(l, SHMQ_LEASE_FREE)))
		return SHMQ_EREVOKED;
	g = ck_pr_load_32(&s->group);
	if (g < SHMQ_MAX_GROUPS)
		ck_pr_dec_32(&shmq__group(m, g)->parked);
	return 0;
}

bool shmq__lease_park(struct shmq_map *m, struct shmq_member_slot *s,
		      uint64_t held, uint32_t reason)
{
	uint32_t g = ck_pr_load_32(&s->group);
	struct shmq_group_slot *gs;

	if (shmq__lease_state(held) != SHMQ_LEASE_HELD || g >= SHMQ_MAX_GROUPS)
		return false;
	gs = shmq__group(m, g);
	ck_pr_store_32(&s->lease_reason, reason);
	/* Counted before it can be seen parked: never lower than the truth. */
	ck_pr_inc_32(&gs->parked);
	if (!ck_pr_cas_64(&s->lease, held, lease_word(held, SHMQ_LEASE_PARKED))) {
		ck_pr_dec_32(&gs->parked);
		return false;
	}
	if (reason == SHMQ_PARKED_EXPIRED)
		ck_pr_inc_64(&gs->expired);
	/* Members asleep may take it now. */
	ck_pr_fence_memory();
	shmq__event_signal(&m->hdr->data_seq, &m->hdr->data_waiters);
	return true;
}

bool shmq__lease_find_parked(struct shmq_map *m, uint32_t g, uint32_t from,
			     struct shmq_lease_view *out)
{
	uint32_t k;

	for (k = 0; k < SHMQ_MAX_MEMBERS; k++) {
		uint32_t i = (from + k) % SHMQ_MAX_MEMBERS;
		struct shmq_member_slot *s = shmq__member_slot(m, i);
		uint64_t l;

		if (ck_pr_load_32(&s->group) != g)
			continue;
		l = ck_pr_load_64(&s->lease);
		if (shmq__lease_state(l) != SHMQ_LEASE_PARKED)
			continue;
		ck_pr_fence_load(); /* the word before the fields */
		out->slot = i;
		out->word = l;
		out->pos = ck_pr_load_64(&s->lease_pos);
		out->part = ck_pr_load_32(&s->lease_part);
		out->count = ck_pr_load_32(&s->lease_count);
		out->reason = ck_pr_load_32(&s->lease_reason);
		if (out->part >= m->geo.partitions ||
		    (out->pos & (SHMQ_FRAME_ALIGN - 1)))
			continue; /* garbage: nothing we could deliver */
		return true;
	}
	return false;
}

bool shmq__lease_take_parked(struct shmq_map *m, uint32_t g,
			     const struct shmq_lease_view *v, bool back)
{
	struct shmq_member_slot *s = shmq__member_slot(m, v->slot);
	uint64_t to = back ? lease_word(v->word + SHMQ_LEASE_SERIAL, SHMQ_LEASE_HELD) :
		lease_word(v->word, SHMQ_LEASE_FREE);

	if (!ck_pr_cas_64(&s->lease, v->word, to))
		return false;
	if (back)
		ck_pr_store_32(&s->lease_count, v->count + 1);
	ck_pr_dec_32(&shmq__group(m, g)->parked);
	return true;
}
