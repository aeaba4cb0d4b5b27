/*
 * reap.c - recovery from producers and members that die or stall.
 *
 * Overview
 * --------
 * shmqd calls shmq__reap_topic() every few milliseconds for each topic.  A
 * pass looks at the producer and member slots of the segment:
 *
 * - A producer slot whose claim has not changed since the previous pass is
 *   suspicious.  If its process is gone (or a zombie, or a recycled pid),
 *   the claim is padded over so that readers skip it, and the slot is
 *   freed.  If the process lives but the claim is older than the topic's
 *   stall timeout, the claim is revoked: padded over, and its region kept
 *   out of reuse until the producer notices (its commit returns
 *   SHMQ_EREVOKED) or dies.
 * - A member slot whose process is gone loses its holds and its slot.  In
 *   a PARTITIONED group its partitions are dealt again first (group.c).  In
 *   a SHARED group the message it held under a lease is parked for the
 *   other members first, and the slot (with the hold that keeps the
 *   message's bytes) stays until one of them has taken it (lease.c); so
 *   does the slot of a member that closed with a message it gave back.
 * - A live member's lease held past its ack timeout is parked (lease.c);
 *   the reaper times it from the first pass that saw that lease word.
 * - A pass with `force` set (shmqd learnt of a death from a pidfd,
 *   shmqd/watch.c) looks at every member and idle slot at once.
 * - Idle slots are checked every SLOW_PASSES passes, so that a producer or
 *   consumer killed while idle gives its slot back, and so is each
 *   partition's tail lock, taken back from a dead holder.
 *
 * A producer with an identity (idempotent.c) has its attempt marked as
 * not stored when its claim is padded: before padding for a dead one,
 * after a revocation succeeded for a live one.
 *
 * A claim seen only once costs no system call: busy producers hold a claim
 * for well under a microsecond, so the reaper reads /proc only for claims
 * that outlive a pass (a few ms) and, rarely, for idle slots.
 *
 * Deciding whose claim it is
 * --------------------------
 * A producer records (partition, position, length) in its slot before its
 * CAS on head, so a dead producer's slot may describe a claim that it lost
 * to another producer.  The claim [pos, pos + len) was really made by this
 * slot only if:
 *   - head has reached pos + len (claims only grow head), and
 *   - no live producer records the same position (that one won it, or will
 *     retry and record another position), and
 *   - pos + len is a frame boundary: head itself, a committed frame, or the
 *     position another slot's claim starts at.
 * If any of these fail the slot lost its race and there is nothing to pad.
 * A batch's claim (ring.c, "Batches") is one claim of several frames, and
 * the padding covers all of them with one frame.  Its inner frames are
 * sealed before the first is: a loser of the race for the batch's position
 * whose length happens to end at one of them passes the boundary test.
 * While the winner lives, claimed_by_other() keeps us from padding; if
 * both died inside their windows of a few instructions (the loser between
 * its record and its next one), the loser's shorter padding would leave
 * the rest of the batch readable.  Not handled: it takes two deaths within
 * nanoseconds of each other, and the same holds already for a loser's
 * claim that ends on a later committed frame.
 *
 * Failure and recovery
 * --------------------
 * The reaper runs in shmqd only, one pass at a time.  Padding is the same
 * seal CAS a producer commits with, so a producer that wakes up and commits
 * at the same moment either wins (its message is published) or loses (its
 * commit returns SHMQ_EREVOKED); never both.  Every value read from a slot
 * is checked (partition in range, length within a ring, alignment) before
 * it is used.
 */
#include <errno.h>

#include "atomics.h"

#include "shmq_int.h"

/* Idle slots are checked for dead owners once every SLOW_PASSES passes. */
#define SLOW_PASSES 20
/*
 * Members are checked every MEMBER_PASSES passes (20 ms at the default 5 ms
 * interval): a partitioned group rebalances after a death within that.
 */
#define MEMBER_PASSES 4

/*
 * A memo's first_seen_ns: when it first saw what it remembers; 0 means it
 * saw nothing (a zeroed memo), so a clock reading of 0 is stored as 1.
 */
static uint64_t seen_at(uint64_t now_ns)
{
	return now_ns ? now_ns : 1;
}

/*
 * How long since then, in ns; 0 when then is not before now (a pass given
 * an older clock than an earlier one must not wrap around into a timeout).
 * Memos once stored now | 1, now + 1 for an even now: the forced pass after
 * a death, which looks at a claim at its first sighting, computed
 * now - (now + 1), wrapped, and revoked a live producer's claim the moment
 * it saw it, about every other time (kill-t saw a claim revoked 1 ms after
 * it was made, under a 300 ms stall timeout; reap-t checks it).
 */
static uint64_t since(uint64_t now_ns, uint64_t then_ns)
{
	return now_ns > then_ns ? now_ns - then_ns : 0;
}

static bool pos_before(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b) < 0;
}

static bool seal_committed(struct shmq_map *m, uint32_t part, uint64_t pos)
{
	const struct shmq_frame *f =
		(const struct shmq_frame *)(shmq__ring(m, part) + (pos & m->mask));
	uint64_t seal = ck_pr_load_64(&f->seal);

	return (seal & ~SHMQ_SEAL_FLAGS) == pos && (seal & SHMQ_SEAL_COMMITTED);
}

/* Another live slot than self records a claim at pos in part? */
static bool claimed_by_other(struct shmq_map *m, uint32_t self, uint32_t part,
			     uint64_t pos, bool want_live)
{
	uint32_t i;

	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++) {
		struct shmq_producer_slot *s = shmq__producer_slot(m, i);
		struct shmq_owner o;

		if (i == self || ck_pr_load_64(&s->claim_pos) != pos ||
		    ck_pr_load_32(&s->claim_part) != part)
			continue;
		if (!want_live)
			return true;
		o.pid = ck_pr_load_32(&s->owner.pid);
		o.start_ticks = ck_pr_load_64(&s->owner.start_ticks);
		if (o.pid && shmq__owner_alive(&o))
			return true;
	}
	return false;
}

enum claim_state {
	CLAIM_RESOLVED,	 /* lost its CAS, committed, or long gone: nothing to do */
	CLAIM_ABANDONED, /* won and unsealed: pad it */
	CLAIM_UNSURE,	 /* a live slot records the same position: look again */
};

/*
 * Did slot i's recorded claim [pos, pos + len) in part win its CAS, and is
 * the frame still unsealed?  See "Deciding whose claim it is" above.
 */
static enum claim_state claim_state(struct shmq_map *m, uint32_t i, uint32_t part,
				    uint64_t pos, uint32_t len)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	uint64_t head = ck_pr_load_64(&ph->head);
	uint64_t tail = ck_pr_load_64(&ph->tail);
	uint64_t end = pos + len, fpos = pos, off = pos & m->mask;

	if (part >= m->geo.partitions || len < SHMQ_FRAME_HEADER ||
	    len > m->geo.ring_bytes || (pos & (SHMQ_FRAME_ALIGN - 1)) ||
	    (len & (SHMQ_FRAME_ALIGN - 1)))
		return CLAIM_RESOLVED; /* garbage: nothing we could pad */
	if (pos_before(head, end) || pos_before(pos, tail))
		return CLAIM_RESOLVED;
	if (off + len > m->geo.ring_bytes)
		fpos = pos + (m->geo.ring_bytes - off);
	if (seal_committed(m, part, fpos))
		return CLAIM_RESOLVED;
	/*
	 * A live producer records the same position: it won it, or it lost
	 * the CAS and is about to record another.  Decide on a later pass.
	 */
	if (claimed_by_other(m, i, part, pos, true))
		return CLAIM_UNSURE;
	if (end == head || seal_committed(m, part, end) ||
	    claimed_by_other(m, i, part, end, false))
		return CLAIM_ABANDONED;
	return CLAIM_RESOLVED;
}

static void wake_all(struct shmq_map *m)
{
	ck_pr_inc_32(&m->hdr->data_seq);
	shmq__futex_wake_all(&m->hdr->data_seq);
	ck_pr_inc_32(&m->hdr->space_seq);
	shmq__futex_wake_all(&m->hdr->space_seq);
}

static void free_producer_slot(struct shmq_map *m, struct shmq_producer_slot *s)
{
	if (ck_pr_load_64(&s->revoked_pos) != SHMQ_POS_NONE) {
		ck_pr_store_64(&s->revoked_pos, SHMQ_POS_NONE);
		ck_pr_dec_32(&m->hdr->revoked);
	}
	ck_pr_store_64(&s->claim_pos, SHMQ_POS_NONE);
	ck_pr_store_64(&s->owner.start_ticks, 0);
	ck_pr_fence_store();
	ck_pr_store_32(&s->owner.pid, 0);
}

static void free_member_slot(struct shmq_map *m, uint32_t i)
{
	struct shmq_member_slot *s = shmq__member_slot(m, i);
	uint32_t p;

	for (p = 0; p < m->geo.partitions; p++)
		ck_pr_store_64(&shmq__part(m, p)->hold[i], SHMQ_POS_NONE);
	ck_pr_store_64(&s->disk_hold, SHMQ_POS_NONE);
	ck_pr_store_64(&s->owner.start_ticks, 0);
	ck_pr_fence_store();
	ck_pr_store_32(&s->owner.pid, 0);
}

/*
 * A SHARED group member that died, or closed while a message it gave back
 * waited parked: what it had taken and not acknowledged goes to the group
 * again (lease.c).  Its slot, and with it the hold that keeps the message's
 * bytes, stays until another member has taken the message.  Returns true
 * when the slot may be freed now.
 */
static bool shared_member_gone(struct shmq_map *m, uint32_t i, uint32_t g)
{
	struct shmq_member_slot *s = shmq__member_slot(m, i);
	uint64_t l = ck_pr_load_64(&s->lease);
	uint32_t part;
	uint64_t pos;

	switch (shmq__lease_state(l)) {
	case SHMQ_LEASE_PARKED:
		return false; /* waits for a taker */
	case SHMQ_LEASE_HELD:
		part = ck_pr_load_32(&s->lease_part);
		pos = ck_pr_load_64(&s->lease_pos);
		/*
		 * Taken only if the group's cursor passed it: a lease is
		 * prepared before the take's CAS (see lease.c on the window).
		 */
		if (part >= m->geo.partitions ||
		    !pos_before(pos, ck_pr_load_64(&shmq__part(m, part)->cursor[g].next)))
			return true;
		shmq__lease_park(m, s, l, SHMQ_PARKED_DIED);
		return false;
	default:
		return true;
	}
}

/*
 * A live member's lease that ran past its ack timeout goes back (lease.c).
 * The reaper times it from the first pass that saw this very lease word
 * (its serial changes with every take), so members never read a clock;
 * the timeout is honoured to within a member pass (about 20 ms).
 */
static bool expire_lease(struct shmq_map *m, struct shmq_reap_state *st,
			 uint32_t i, uint64_t now_ns)
{
	struct shmq_member_slot *s = shmq__member_slot(m, i);
	struct shmq_reap_lease_memo *memo = &st->member[i];
	uint32_t timeout_ms = ck_pr_load_32(&s->ack_timeout_ms);
	uint64_t l;

	if (!timeout_ms)
		return false;
	l = ck_pr_load_64(&s->lease);
	if (shmq__lease_state(l) != SHMQ_LEASE_HELD) {
		memo->word = 0;
		return false;
	}
	if (memo->word != l || !memo->first_seen_ns) {
		memo->word = l;
		memo->first_seen_ns = seen_at(now_ns);
		return false;
	}
	if (since(now_ns, memo->first_seen_ns) < (uint64_t)timeout_ms * 1000000)
		return false;
	memo->word = 0;
	return shmq__lease_park(m, s, l, SHMQ_PARKED_EXPIRED);
}

/* Revoke a live producer's claim: keep its bytes out of reuse, pad it. */
static bool revoke(struct shmq_map *m, struct shmq_producer_slot *s,
		   uint32_t part, uint64_t pos, uint32_t len)
{
	uint64_t fpos = pos, off = pos & m->mask;

	if (off + len > m->geo.ring_bytes)
		fpos = pos + (m->geo.ring_bytes - off);
	/* Announce first, so that the tail walk stops at the claim. */
	ck_pr_store_64(&s->revoked_pos, pos);
	ck_pr_inc_32(&m->hdr->revoked);
	shmq__ring_pad(m, part, pos, len);
	/* If the producer's commit won the seal, the claim is its message. */
	{
		const struct shmq_frame *f = (const struct shmq_frame *)(shmq__ring(m, part) +
									 (fpos & m->mask));
		uint64_t seal = ck_pr_load_64(&f->seal);

		if (!(seal & SHMQ_SEAL_PAD) || (seal & ~SHMQ_SEAL_FLAGS) != fpos) {
			ck_pr_store_64(&s->revoked_pos, SHMQ_POS_NONE);
			ck_pr_dec_32(&m->hdr->revoked);
			return false;
		}
	}
	/* Padded: an idempotent producer's attempt is not stored. */
	shmq__ident_claim_padded(m, s, part, pos, len);
	return true;
}

void shmq__reap_topic(struct shmq_map *m, struct shmq_reap_state *st,
		      uint64_t now_ns, struct shmq_reap_stats *stats)
{
	bool slow = st->force || (st->passes % SLOW_PASSES) == 0;
	bool members = st->force || (st->passes % MEMBER_PASSES) == 0;
	bool woke = false;
	uint32_t i, g;

	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++) {
		struct shmq_producer_slot *s = shmq__producer_slot(m, i);
		struct shmq_reap_slot_memo *memo = &st->producer[i];
		struct shmq_owner o;
		uint64_t claim, revoked;
		uint32_t part, len;

		o.pid = ck_pr_load_32(&s->owner.pid);
		if (!o.pid) {
			memo->claim_pos = SHMQ_POS_NONE;
			memo->first_seen_ns = 0;
			continue;
		}
		o.start_ticks = ck_pr_load_64(&s->owner.start_ticks);
		claim = ck_pr_load_64(&s->claim_pos);
		part = ck_pr_load_32(&s->claim_part);
		len = ck_pr_load_32(&s->claim_len);
		revoked = ck_pr_load_64(&s->revoked_pos);

		if (claim == SHMQ_POS_NONE) {
			memo->claim_pos = SHMQ_POS_NONE;
			memo->first_seen_ns = 0;
			if ((slow || revoked != SHMQ_POS_NONE) && !shmq__owner_alive(&o)) {
				free_producer_slot(m, s);
				stats->dead_producers++;
				woke = true;
			}
			continue;
		}
		/*
		 * first_seen_ns 0: a fresh (zeroed) memo has seen nothing.  A
		 * claim seen for the first time is only remembered, unless a
		 * death was announced: then whose it is is worth a look now.
		 */
		if (claim != memo->claim_pos || memo->first_seen_ns == 0) {
			memo->claim_pos = claim;
			memo->first_seen_ns = seen_at(now_ns);
			if (!st->force)
				continue;
		}
		if (!shmq__owner_alive(&o)) {
			enum claim_state cs = claim_state(m, i, part, claim, len);

			if (cs == CLAIM_UNSURE)
				continue; /* keep the slot: it is our only record */
			if (cs == CLAIM_ABANDONED) {
				/*
				 * Its identity's attempt is marked first: a
				 * successor that finds the frame gone from the
				 * ring takes an unmarked attempt for committed
				 * (idempotent.c).  Dead, it cannot commit.
				 */
				shmq__ident_claim_padded(m, s, part, claim, len);
				shmq__ring_pad(m, part, claim, len);
				stats->padded_dead++;
			}
			free_producer_slot(m, s);
			memo->claim_pos = SHMQ_POS_NONE;
			memo->first_seen_ns = 0;
			stats->dead_producers++;
			woke = true;
			continue;
		}
		if (revoked == SHMQ_POS_NONE &&
		    since(now_ns, memo->first_seen_ns) >=
			    (uint64_t)m->geo.stall_timeout_ms * 1000000 &&
		    claim_state(m, i, part, claim, len) == CLAIM_ABANDONED &&
		    revoke(m, s, part, claim, len)) {
			stats->padded_stalled++;
			woke = true;
		}
	}

	/*
	 * A tail lock left by a dead process.  One held by a live process is
	 * never taken away, not even from a stopped one: it may be in the
	 * middle of moving the tail (ring.c, make_room), and producers that
	 * wait for the lock give up after their timeout instead of hanging.
	 */
	for (i = 0; slow && i < m->geo.partitions; i++) {
		struct shmq_part_header *ph = shmq__part(m, i);
		struct shmq_owner o = { .pid = ck_pr_load_32(&ph->tail_lock) };

		if (o.pid && !shmq__owner_alive(&o) &&
		    ck_pr_cas_32(&ph->tail_lock, o.pid, 0))
			woke = true;
	}

	/*
	 * A partitioned group whose partition is owned by a slot that is no
	 * longer its member (a member left, or died, while the registration
	 * mutex could not be had): deal its partitions again.
	 */
	for (g = 0; members && g < SHMQ_MAX_GROUPS; g++) {
		uint32_t p;

		if (ck_pr_load_32(&shmq__group(m, g)->state) != SHMQ_GROUP_ACTIVE ||
		    ck_pr_load_32(&shmq__group(m, g)->mode) != SHMQ_GROUP_PARTITIONED)
			continue;
		for (p = 0; p < m->geo.partitions; p++) {
			struct shmq_cursor *cur = &shmq__part(m, p)->cursor[g];
			uint32_t own = ck_pr_load_32(&cur->owner);
			uint32_t o = own & ~SHMQ_OWNER_PENDING;

			/* A hand-over waiting for a member that is gone. */
			if (own & SHMQ_OWNER_PENDING)
				o = ck_pr_load_32(&cur->prev);
			if (o == SHMQ_OWNER_NONE || o >= SHMQ_MAX_MEMBERS)
				continue;
			if (ck_pr_load_32(&shmq__member_slot(m, o)->owner.pid) &&
			    ck_pr_load_32(&shmq__member_slot(m, o)->group) == g)
				continue;
			if (shmq__seg_lock(m) == 0) {
				shmq__group_rebalance(m, g, UINT32_MAX);
				shmq__seg_unlock(m);
				woke = true;
			}
			break;
		}
	}

	for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
		struct shmq_member_slot *s = shmq__member_slot(m, i);
		struct shmq_owner o;
		bool left;

		o.pid = ck_pr_load_32(&s->owner.pid);
		if (!o.pid || !members)
			continue;
		o.start_ticks = ck_pr_load_64(&s->owner.start_ticks);
		g = ck_pr_load_32(&s->group);
		left = ck_pr_load_32(&s->flags) & SHMQ_MEMBER_LEFT;
		if (!left && shmq__owner_alive(&o)) {
			if (g < SHMQ_MAX_GROUPS && expire_lease(m, st, i, now_ns)) {
				stats->expired_leases++;
				woke = true;
			}
			continue;
		}
		if (g < SHMQ_MAX_GROUPS &&
		    ck_pr_load_32(&shmq__group(m, g)->mode) == SHMQ_GROUP_PARTITIONED &&
		    shmq__seg_lock(m) == 0) {
			/*
			 * Its partitions go to the live members (group.c),
			 * back at the committed offset; its holds go only
			 * after that, so that no commit in between can pass
			 * the message it held.
			 */
			shmq__group_rebalance(m, g, i);
			free_member_slot(m, i);
			shmq__seg_unlock(m);
		} else {
			if (g < SHMQ_MAX_GROUPS && !shared_member_gone(m, i, g))
				continue; /* what it held waits for a taker */
			free_member_slot(m, i);
		}
		if (!left)
			stats->dead_members++;
		woke = true;
	}
	st->passes++;
	if (woke)
		wake_all(m);
}
