/*
 * ring.c - the partition protocol: claim, commit, take, release.
 *
 * Overview
 * --------
 * A partition is a log of frames addressed by 64-bit byte positions that
 * never wrap (they are the offsets users see).  The newest window of the log
 * lives in a ring of ring_bytes (a power of two): the frame at position pos
 * is stored at ring[pos & mask].  Four kinds of position matter:
 *
 *   tail <= horizon <= head
 *
 *   head     (partition header, producers)  end of the last claim.  A
 *            producer claims [head, head + len) with a CAS on head.
 *   tail     (partition header, producers)  oldest position whose frame is
 *            intact.  Producers move it forward over committed frames
 *            before they reuse the bytes below it.
 *   cursor   (per group, members)  cursor[g].next is the next position the
 *            group hands out.  Members take a frame with a CAS on it.
 *   hold     (per member, that member)  hold[m] is a hazard: "member m may
 *            be reading the frame at this position".
 *
 * horizon = min(cursor of every active tethered group, every hold, head).
 * Nothing at or above the horizon may be overwritten; the producers' tail
 * walk stops there.  A group that does not consume therefore holds the
 * ring, and the topic's full policy (block or fail) decides what producers
 * do.  Untethered groups hold nothing; see below.
 *
 * Claiming.  A claim is contiguous.  A frame never crosses the end of the
 * ring: when it would, the claim also covers the rest of the ring, which
 * the producer seals as a padding frame.  Before its CAS on head, the
 * producer records (partition, position, length) in its slot, so that shmqd
 * can pad the claim over if the producer dies before committing (reap.c).
 *
 * Committing.  The producer writes the payload and header, then publishes
 * the seal (pos | COMMITTED, plus PAD for padding) with a CAS from the value
 * it finds there just before.  shmqd pads an abandoned or stalled claim
 * with the same CAS, so exactly one of them decides what the frame is; the
 * loser of the race learns it (a late commit returns SHMQ_EREVOKED).
 *
 * Batches (shmq_send_batch).  One claim may cover several frames, back to
 * back: one CAS on head for all of them, one commit CAS for all of them.
 *   - The claim takes as many of the batch's next frames as fit between
 *     head (or 0, after the padding to the end when the first does not
 *     fit) and the ring's end, and no more than an eighth of the ring
 *     (WALK_AHEAD_MAX at most, what make_room walks ahead anyway) unless
 *     its first frame alone is larger; the rest goes in the next claim.
 *     So a batch claim is [optional padding to the end][f1 f2 ... fn],
 *     never crossing the end, and never needs more room than a single
 *     frame of max_message or an eighth of the ring.  The slot records
 *     it like any claim: (part, head, whole length).
 *   - The producer writes every frame, stores the seals of f2..fn with
 *     plain stores (after a store fence: release for their headers), and
 *     then commits f1 with the usual CAS.  Nothing reaches f(k+1) but
 *     through fk: a member's cursor moves to the next frame only by a
 *     take of a committed frame, the tail walk and the spiller step over
 *     committed frames by their size, and all stop at f1 while it is
 *     pending.  f1's CAS is a full barrier after the stores of f2..fn, so
 *     whoever sees f1 committed (load fence after its seal) sees them too.
 *   - shmqd pads an abandoned or stalled claim with shmq__ring_pad(pos,
 *     len): a CAS on the first seal of the claim (f1's, or that of the
 *     padding to the end, which the producer sealed at its claim, and
 *     then f1's), and one padding frame of the claim's whole length from
 *     f1.  If it wins, f2..fn lie inside that padding frame: their seals
 *     (stored or not) are never read as frames, no reader reaches them,
 *     and the producer's commit CAS fails: SHMQ_EREVOKED for the whole
 *     claim.  If the producer wins, all n are published.  A stalled
 *     producer may store f2..fn's seals after the padding: harmless, as
 *     the tail walk does not pass a revoked claim until its commit has
 *     returned (revoked_pos), after its last store.
 *   - reap.c decides whether a dead slot's claim is real by its end being
 *     a frame boundary; f2..fn's committed seals are boundaries too, but
 *     only a claim recorded at the same position as the batch could end
 *     there, i.e. a loser of the CAS race, and then a live winner makes
 *     the reaper wait (claimed_by_other).  Both dead at once is the one
 *     case that could pad only a part of a batch (see reap.c).
 *   - A seek checks only that a committed frame starts at the offset it
 *     is given, as for single frames whose payload could look like one:
 *     a seek to an offset the application never received (f2..fn of a
 *     batch not yet committed, or revoked) is not prevented.  Offsets
 *     an application has come from committed messages.
 *
 * Taking.  A member reads cursor.next = x, publishes hold = x, decodes the
 * frame at x and takes it with CAS(cursor.next, x, x + size).  The CAS is
 * also the validation: if it succeeds, the cursor was still x, so no
 * producer could have reused x (horizon <= cursor), and from then on the
 * hold keeps it intact until release.  If it fails, whatever was decoded
 * is discarded.  On a spilling topic the cursor alone does not protect x
 * (what is on disk may be reused), so the tail is read after the header
 * and again after the CAS; see shmq__ring_take.
 *
 * Moving the tail and moving a cursor.  A producer that needs room walks
 * the tail forward over committed frames below the horizon; a member that
 * seeks (or starts a group) moves a cursor to a position that must not be
 * below the tail.  Both happen under the partition's tail lock, a spinlock
 * word holding the owner's pid (a dead owner's lock is taken over).  The
 * lock is on the slow paths only: producers reach make_room() once per
 * eighth of a ring, and seeks are rare.  A lock-free alternative (hazard
 * publication plus re-check on both sides) was tried on paper and rejected:
 * a producer that sees a joiner's hazard only after publishing a tail past
 * it cannot take the tail back, and other producers already trust it.
 *
 * Untethered groups
 * -----------------
 * A group created untethered (group slot, `untethered`) never holds
 * producers back: its cursor is left out of the horizon, and its members
 * publish no holds.  Instead:
 *
 * - The tail walk takes lapped frames away from the group.  When the walk
 *   (under the tail lock) passes the frame at t and an untethered cursor is
 *   at t, it claims the cursor with CAS(next, t, t | SHMQ_CURSOR_WALKER),
 *   adds one to the group's `missed` count of the partition (not for
 *   padding), and stores next = t + size.  Members leave a cursor with the
 *   walker bit alone, and a member's take is a CAS from the plain t, so
 *   each frame is either taken by one member or counted missed by the
 *   walk, never both, never neither.  So an untethered cursor is never
 *   below the tail, and its members never read the spill files.
 * - A member copies the message out of the ring (into a buffer of its
 *   own) instead of holding it: it reads the header, checks that `reuse`
 *   (read after a load fence) is still at or below the frame, takes the
 *   frame with the cursor CAS, copies key and value, and checks `reuse`
 *   again.  Producers overwrite nothing at or above reuse, and a producer
 *   that wrote bytes we read had read a reuse past them before its head
 *   CAS (a full barrier before its stores), so a reuse still at or below
 *   the frame proves the copy whole: a seqlock-like validation.  A copy
 *   that fails it is a message lost in transit: the member adds it to
 *   `missed` itself.  A stopped member therefore holds nothing at all.
 * - Reporting.  Before a take a member reads next = x, then (load fence)
 *   missed and missed_reported.  The walk adds to missed before the store
 *   that moves the cursor off its claim (release), so a member that read
 *   x sees every frame counted below x; and a walk that counts the frame
 *   at x must first change the cursor, so a no-op CAS(next, x, x) that
 *   succeeds proves the count read holds nothing at or above x.  The
 *   member then claims missed - missed_reported with a CAS on
 *   missed_reported and returns it (SHMQ_ELAPPED) before any message at or
 *   above x.  With one member per partition (or a PARTITIONED owner) each
 *   report is exactly the number of messages between the two messages
 *   around it; in a SHARED group the reports of all members sum to what
 *   the group missed.
 * - Exactness has one hole: a producer that dies inside the walk between
 *   its claim of a cursor and the store that ends it leaves the walker bit
 *   set, and whether it had counted that frame is unknown.  The next walk
 *   (or a member that finds the tail lock free) takes the cursor over and
 *   counts the frame again if it walks over it: at most one frame off per
 *   such death.
 *
 * Invariants (shmq__ring_check tests them)
 * ----------------------------------------
 * - tail <= every active cursor <= head, and head - tail <= ring_bytes.
 * - Frames between tail and head are back to back: each frame's size leads
 *   to the next frame; every frame below the horizon is committed.
 * - A committed frame's seal carries its own position, so a reader never
 *   mistakes a frame from an earlier lap for the one it expects.
 *
 * Memory ordering
 * ---------------
 * - Producer: header and payload stores, then the seal CAS (a full barrier
 *   on every ck target; it is the release that publishes the frame).
 * - Reader: seal load, then ck_pr_fence_load() (acquire) before the header
 *   fields and payload.
 * - Member: hold store, then cursor CAS (full barrier): a producer that
 *   sees the advanced cursor also sees the hold.  Producers read cursors
 *   before holds, with a load fence in between.
 * - Tail lock: acquired with a CAS (full barrier), released with a store
 *   after ck_pr_fence_release(); what was read and written under it is
 *   ordered before the next owner's critical section.
 * - Sleepers (wait.c events in the segment header): a waiter sets the
 *   event's flag (atomic exchange, full barrier) and re-checks the
 *   condition before it sleeps; a producer's seal CAS is the full barrier
 *   before it looks at the flag.  Dekker's pattern: one of the two always
 *   sees the other.  Consumers releasing space skip that barrier; blocked
 *   producers sleep in bounded slices instead (see wait_for_space).
 *
 * Failure and recovery
 * --------------------
 * Every value read from shared memory is bounds-checked before it is used:
 * positions are masked into the ring, sizes are checked against the ring and
 * the topic's maximum, and an inconsistent partition makes calls return
 * SHMQ_ECORRUPT rather than read out of bounds.  A producer that dies
 * between claim and commit leaves an unsealed frame; shmqd pads it (reap.c).
 * A member that dies leaves a hold; shmqd clears it.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "atomics.h"

#include "shmq_int.h"

/* Is a before b in the (never wrapping, but compared modularly) log? */
static inline bool pos_before(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b) < 0;
}

/*
 * The rest of shmq__frame_decode, for a frame at pos (aligned) whose seal,
 * read before a load fence, says committed at pos.
 */
static inline int decode_sealed(const uint8_t *ring, uint64_t ring_bytes,
				uint64_t pos, uint64_t seal, uint32_t max_frame,
				struct shmq_frame_view *v)
{
	uint64_t off = pos & (ring_bytes - 1);
	const struct shmq_frame *f = (const struct shmq_frame *)(ring + off);
	uint32_t size, value_len, ext;
	uint16_t key_len, flags;

	size = ck_pr_load_32(&f->size);
	if (size < SHMQ_FRAME_HEADER || (size & (SHMQ_FRAME_ALIGN - 1)) ||
	    size > ring_bytes - off)
		return SHMQ_FRAME_BAD;
	v->pos = pos;
	v->size = size;
	v->gap = false;
	if (seal & SHMQ_SEAL_PAD) {
		v->pad = true;
		v->key_len = 0;
		v->value_len = 0;
		v->key = v->value = NULL;
		v->timestamp_ns = 0;
		v->producer_id = v->seq = 0;
		return SHMQ_FRAME_OK;
	}
	key_len = ck_pr_load_16(&f->key_len);
	value_len = ck_pr_load_32(&f->value_len);
	flags = ck_pr_load_16(&f->flags);
	ext = shmq__frame_ext_bytes(flags);
	/* In 64 bits first: a huge value_len must not wrap into a fit. */
	if (size > max_frame || (flags & ~SHMQ_FRAME_PRODUCER) ||
	    (uint64_t)ext + key_len + value_len > size - SHMQ_FRAME_HEADER ||
	    shmq__frame_bytes(ext + key_len, value_len) != size)
		return SHMQ_FRAME_BAD;
	v->producer_id = 0;
	v->seq = 0;
	if (ext) {
		struct shmq_frame_ext e;

		memcpy(&e, ring + off + SHMQ_FRAME_HEADER, sizeof(e));
		if (!e.producer_id || !e.seq)
			return SHMQ_FRAME_BAD;
		v->producer_id = e.producer_id;
		v->seq = e.seq;
	}
	v->pad = false;
	v->key_len = key_len;
	v->value_len = value_len;
	v->timestamp_ns = ck_pr_load_64(&f->timestamp_ns);
	v->key = ring + off + SHMQ_FRAME_HEADER + ext;
	v->value = v->key + key_len;
	return SHMQ_FRAME_OK;
}

int shmq__frame_decode(const uint8_t *ring, uint64_t ring_bytes, uint64_t pos,
		       uint32_t max_frame, struct shmq_frame_view *v)
{
	uint64_t seal;

	if (pos & (SHMQ_FRAME_ALIGN - 1))
		return SHMQ_FRAME_BAD;
	seal = ck_pr_load_64(&((const struct shmq_frame *)(ring + (pos & (ring_bytes - 1))))->seal);
	if ((seal & ~SHMQ_SEAL_FLAGS) != pos || !(seal & SHMQ_SEAL_COMMITTED))
		return SHMQ_FRAME_PENDING;
	/* Acquire: the header and payload were written before the seal. */
	ck_pr_fence_load();
	return decode_sealed(ring, ring_bytes, pos, seal, max_frame, v);
}

/*
 * The lowest position group g still needs in the ring (its cursor and its
 * members' holds), or with g == UINT32_MAX, the lowest position that no
 * producer may overwrite: every active group's cursor, raised to the
 * spilled position on a spilling topic (what is on disk no longer needs
 * the ring), then lowered to every hold and to the spiller's hold.
 * A cursor, hold or spilled position outside [head - ring, head] cannot
 * hold anything and is ignored (see below).
 */
static int horizon_of(struct shmq_map *m, uint32_t part, uint32_t g,
		      uint64_t *out)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	uint64_t head = ck_pr_load_64(&ph->head);
	uint64_t h = head, cap = m->geo.ring_bytes;
	bool spilling = m->geo.spill_mode != SHMQ_SPILL_OFF;
	uint32_t i;

	for (i = 0; i < SHMQ_MAX_GROUPS; i++) {
		uint64_t n;

		if (g != UINT32_MAX && i != g)
			continue;
		if (ck_pr_load_32(&shmq__group(m, i)->state) != SHMQ_GROUP_ACTIVE)
			continue;
		/* Untethered groups hold nothing (see the design note). */
		if (g == UINT32_MAX && ck_pr_load_32(&shmq__group(m, i)->untethered))
			continue;
		n = ck_pr_load_64(&ph->cursor[i].next);
		if (n != SHMQ_POS_NONE)
			n &= ~SHMQ_CURSOR_WALKER; /* an untethered group's commit */
		/*
		 * A partitioned group on a spilling topic holds from its
		 * committed offset: a dead member's partition goes back there
		 * (group.c), so what lies between must stay readable, in the
		 * ring or on disk, rather than be reused as consumed.
		 */
		if (g == UINT32_MAX && spilling && n != SHMQ_POS_NONE &&
		    ck_pr_load_32(&shmq__group(m, i)->mode) == SHMQ_GROUP_PARTITIONED) {
			uint64_t c = ck_pr_load_64(&ph->cursor[i].committed);

			if (pos_before(c, n) && !pos_before(head, c))
				n = c;
		}
		/*
		 * A cursor ahead of the head we read a moment ago moved on
		 * meanwhile; SHMQ_POS_NONE is a group being placed (see
		 * consumer.c).  Neither holds anything.  A cursor more than a
		 * ring behind is a group that reads from disk on a spilling
		 * topic (it holds at `spilled`, below), or garbage on one that
		 * does not, which that group's members report when they take.
		 */
		/*
		 * Messages parked for delivery again (lease.c) need no look
		 * of their own: the member that parked one keeps its hold.
		 */
		if (n == SHMQ_POS_NONE || pos_before(head, n))
			continue;
		if (head - n > cap && !spilling)
			continue;
		if (pos_before(n, h))
			h = n;
	}
	if (g == UINT32_MAX && spilling) {
		uint64_t sp = ck_pr_load_64(&ph->spilled), x;

		/*
		 * Every group holds at max(its cursor, spilled): what is below
		 * spilled is on disk.  min over groups of that is max(spilled,
		 * the lowest cursor).  With spill=always everything goes to
		 * disk: nothing may be reused before it is there, and nothing
		 * else holds (a lagging group reads the journal).  A
		 * spilled position outside the window is stale (overflow: the
		 * groups kept up) or garbage: it frees nothing then.
		 */
		if (m->geo.spill_mode == SHMQ_SPILL_ALWAYS)
			h = head - sp <= cap ? sp : ck_pr_load_64(&ph->tail);
		else if (head - sp <= cap && pos_before(h, sp))
			h = sp;
		x = ck_pr_load_64(&ph->spill_hold);
		if (x != SHMQ_POS_NONE && head - x <= cap && pos_before(x, h))
			h = x;
	}
	/* Cursors before holds: a member stores its hold before its cursor CAS. */
	ck_pr_fence_load();
	if (g != UINT32_MAX) {
		/* Messages the group's members hold from disk count for commits. */
		for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
			struct shmq_member_slot *s = shmq__member_slot(m, i);
			uint64_t x = ck_pr_load_64(&s->disk_hold);

			if (x == SHMQ_POS_NONE || !ck_pr_load_32(&s->owner.pid) ||
			    ck_pr_load_32(&s->group) != g ||
			    ck_pr_load_32(&s->disk_part) != part)
				continue;
			if (pos_before(x, h) && !pos_before(head, x))
				h = x;
		}
	}
	for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
		uint64_t x = ck_pr_load_64(&ph->hold[i]);

		if (x == SHMQ_POS_NONE)
			continue;
		if (g != UINT32_MAX &&
		    ck_pr_load_32(&shmq__member_slot(m, i)->group) != g)
			continue;
		/*
		 * A hold may lag behind a cursor another member moved; it is
		 * still a hazard.  One further than a ring from head belongs
		 * to a take that will fail its cursor CAS: ignore it.
		 */
		if (head - x > cap)
			continue;
		if (pos_before(x, h))
			h = x;
	}
	*out = h;
	return 0;
}

uint64_t shmq__ring_horizon(struct shmq_map *m, uint32_t part, uint32_t g)
{
	uint64_t h;

	if (horizon_of(m, part, g, &h))
		return ck_pr_load_64(&shmq__part(m, part)->head);
	return h;
}

/* Does a stalled producer still own the padded claim starting at t? */
static bool revoked_at(struct shmq_map *m, uint32_t part, uint64_t t)
{
	uint32_t i;

	if (!ck_pr_load_32(&m->hdr->revoked))
		return false;
	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++) {
		struct shmq_producer_slot *s = shmq__producer_slot(m, i);

		if (ck_pr_load_64(&s->revoked_pos) == t &&
		    ck_pr_load_32(&s->claim_part) == part)
			return true;
	}
	return false;
}

/*
 * The tail lock.  Held for a bounded walk of frame headers or a seek, so a
 * waiter spins with a pause, then yields, for at most max_wait_ns: the
 * owner may be stopped (SIGSTOP) inside, and a send with a timeout of 0
 * must not hang on it.  A waiter that gives up also checks whether the
 * owner still exists and takes the lock over from a dead one; shmqd takes
 * it from a stopped one after the stall timeout (reap.c).  Returns 0, or
 * -EAGAIN when the lock stayed taken.
 */
static int tail_lock(struct shmq_part_header *ph, uint64_t max_wait_ns)
{
	struct shmq_owner self;
	uint64_t start = 0;
	uint32_t me, spins = 0;

	shmq__owner_self(&self);
	me = self.pid;

	for (;;) {
		uint32_t owner = ck_pr_load_32(&ph->tail_lock);

		if (owner == 0) {
			if (ck_pr_cas_32(&ph->tail_lock, 0, me))
				return 0;
			continue;
		}
		if (++spins < 64) {
			ck_pr_stall();
			continue;
		}
		if (!start)
			start = shmq__mono_ns();
		if (shmq__mono_ns() - start >= max_wait_ns) {
			struct shmq_owner o = { .pid = owner };

			if (!shmq__owner_alive(&o) &&
			    ck_pr_cas_32(&ph->tail_lock, owner, me))
				return 0;
			return -EAGAIN;
		}
		sched_yield();
	}
}

/* How long make_room and seek wait for the tail lock. */
#define TAIL_LOCK_WAIT_NS 200000u
#define SEEK_LOCK_WAIT_NS 1000000000u

static void tail_unlock(struct shmq_part_header *ph)
{
	ck_pr_fence_release();
	ck_pr_store_32(&ph->tail_lock, 0);
}

/* The longest a producer blocked on a full ring sleeps before looking again. */
#define SPACE_WAIT_SLICE_NS 2000000u
/* How long a producer facing a full ring spins before it sleeps. */
#define SPACE_SPIN_NS 20000u

/* How far past the needed room a walk goes, so that claims stay fast. */
#define WALK_AHEAD_MAX (256u << 10)

/*
 * A producer that found the ring full waits, while it spins, for room for
 * a batch (an eighth of the ring, at most WALK_AHEAD_MAX) rather than for
 * one frame, and looks again only after a backoff.  Otherwise, with the
 * consumers just behind, it would take the tail lock and read every group's
 * cursor and every hold for each frame they free: the producer then spends
 * itself on make_room, and the cache lines it reads are the ones the
 * consumers write, which slows them too.  Measured (bench-throughput,
 * 1 KiB): without the batch the 1:1 stream fell, in most runs, into that
 * state for good, at about 1.5 M msg/s instead of 7-8 M.
 */
#define SPACE_BACKOFF_MAX 256u

/* An untethered group's cursor, as the tail walk last saw it. */
struct walk_cursor {
	struct shmq_cursor *cur;
	uint64_t next;
};

/* The untethered groups' cursors of a partition, for the tail walk. */
static uint32_t walk_cursors(struct shmq_map *m, struct shmq_part_header *ph,
			     struct walk_cursor *w)
{
	uint32_t g, n = 0;

	for (g = 0; g < SHMQ_MAX_GROUPS; g++) {
		struct shmq_group_slot *gs = shmq__group(m, g);

		if (ck_pr_load_32(&gs->state) != SHMQ_GROUP_ACTIVE ||
		    !ck_pr_load_32(&gs->untethered))
			continue;
		w[n].cur = &ph->cursor[g];
		w[n].next = ck_pr_load_64(&ph->cursor[g].next);
		n++;
	}
	return n;
}

/*
 * The tail walk is about to pass the frame at t (*v): if an untethered
 * group's cursor is there, take the frame away from the group and count it
 * missed (see "Untethered groups" above).  Under the tail lock.
 */
static void take_lapped(struct walk_cursor *w, uint64_t t,
			const struct shmq_frame_view *v)
{
	uint64_t n = w->next, again;

	for (;;) {
		if (n == SHMQ_POS_NONE)
			return; /* being placed: its seek waits for our lock */
		if ((n & ~SHMQ_CURSOR_WALKER) != t) {
			if (pos_before(t, n))
				return; /* ahead: only members move it, forward */
			/*
			 * Behind t: not on a frame boundary the walk passed,
			 * so garbage, which its members report, unless it
			 * moved since we looked.
			 */
			again = ck_pr_load_64(&w->cur->next);
			if (again == n)
				return;
			n = w->next = again;
			continue;
		}
		/*
		 * Claim it; a walker bit already there is a walker that died
		 * in here (we hold its lock now): its claim is ours.
		 */
		if (!(n & SHMQ_CURSOR_WALKER) &&
		    !ck_pr_cas_64(&w->cur->next, n, t | SHMQ_CURSOR_WALKER)) {
			n = w->next = ck_pr_load_64(&w->cur->next);
			continue; /* a member took it, or moved on */
		}
		if (!v->pad)
			ck_pr_inc_64(&w->cur->missed);
		/* The count before the cursor: a member reads them in turn. */
		ck_pr_fence_store();
		ck_pr_store_64(&w->cur->next, t + v->size);
		w->next = t + v->size;
		return;
	}
}

/*
 * What the tail walk needs of the frame at t: whether it is committed, its
 * size (bounded as shmq__frame_decode bounds it, so the walk stays in the
 * ring) and whether it is padding.  The rest of a message's header is not
 * the walk's to check: the walk only steps over the frame to reuse its
 * bytes, and a reader of it decodes it in full.  Half the cost of a full
 * decode, for every frame a producer reuses.
 */
static int walk_frame(const uint8_t *ring, uint64_t ring_bytes, uint64_t t,
		      uint32_t max_frame, struct shmq_frame_view *v)
{
	uint64_t off = t & (ring_bytes - 1);
	const struct shmq_frame *f = (const struct shmq_frame *)(ring + off);
	uint64_t seal = ck_pr_load_64(&f->seal);
	uint32_t size;

	if ((seal & ~SHMQ_SEAL_FLAGS) != t || !(seal & SHMQ_SEAL_COMMITTED))
		return SHMQ_FRAME_PENDING;
	/* Acquire: the size was written before the seal. */
	ck_pr_fence_load();
	size = ck_pr_load_32(&f->size);
	if (size < SHMQ_FRAME_HEADER || (size & (SHMQ_FRAME_ALIGN - 1)) ||
	    size > ring_bytes - off || (!(seal & SHMQ_SEAL_PAD) && size > max_frame))
		return SHMQ_FRAME_BAD;
	v->pos = t;
	v->size = size;
	v->pad = seal & SHMQ_SEAL_PAD;
	return SHMQ_FRAME_OK;
}

/*
 * Make room so that a claim may end at `end`: producers may overwrite
 * positions below `reuse` (a frame at p lives at p & mask, so a claim may
 * end at reuse + ring).  Under the tail lock:
 *   1. walk the tail forward over committed frames below the horizon,
 *      taking the frames it passes away from untethered groups at them;
 *   2. publish the tail (only forward), then a full fence;
 *   3. read the hazards (holds, the spiller's hold) again, and let reuse
 *      go only as far as the lower of the tail and the hazards.
 * Step 3 pairs with a reader on a spilling topic, which publishes its hold
 * and then reads the tail (shmq__ring_take): either we see its hold or it
 * sees our tail and reads the frame from disk.  On a topic that does not
 * spill, the group cursors that bound the walk protect readers by
 * themselves.  The walk goes a little past what is needed so that the
 * next claims find room without coming here.  Sets *limit.
 */
static int make_room(struct shmq_map *m, uint32_t part, uint64_t end,
		     uint64_t *limit)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	const uint8_t *ring = shmq__ring(m, part);
	uint64_t cap = m->geo.ring_bytes;
	uint64_t ahead = cap / 8 < WALK_AHEAD_MAX ? cap / 8 : WALK_AHEAD_MAX;
	uint64_t need = end - cap, goal = need + ahead;
	uint64_t head, tail, reuse, t, h;
	uint32_t max_frame = shmq__max_frame(m), nw, i;
	struct walk_cursor w[SHMQ_MAX_GROUPS];
	int rc = 0;

	/* reuse only grows, and each value was safe when it was published. */
	reuse = ck_pr_load_64(&ph->reuse);
	if (!pos_before(reuse, need))
		goto enough;

	if (tail_lock(ph, TAIL_LOCK_WAIT_NS))
		return -EAGAIN; /* like a full ring: the caller waits or fails */
	tail = ck_pr_load_64(&ph->tail);
	head = ck_pr_load_64(&ph->head);
	reuse = ck_pr_load_64(&ph->reuse);
	if (head - tail > cap || pos_before(tail, reuse)) {
		rc = shmq__fail(SHMQ_ECORRUPT, "partition %u: reuse %llu, tail %llu and head %llu are inconsistent",
				part, (unsigned long long)reuse, (unsigned long long)tail,
				(unsigned long long)head);
		goto out;
	}
	if (!pos_before(reuse, need))
		goto out;
	rc = horizon_of(m, part, UINT32_MAX, &h);
	if (rc)
		goto out;
	nw = walk_cursors(m, ph, w);
	for (t = tail; pos_before(t, goal) && pos_before(t, h);) {
		struct shmq_frame_view v;
		int st;

		st = walk_frame(ring, cap, t, max_frame, &v);
		if (st == SHMQ_FRAME_PENDING)
			break; /* a claim not yet committed: not ours to reuse */
		/*
		 * After the seal: shmqd announces a revocation (revoked_pos,
		 * then the locked increment of revoked) before it pads, so a
		 * walk that sees the padding also sees the announcement.
		 */
		if (st == SHMQ_FRAME_OK && v.pad && revoked_at(m, part, t))
			break;
		if (st == SHMQ_FRAME_BAD) {
			rc = shmq__fail(SHMQ_ECORRUPT, "partition %u: bad frame at %llu",
					part, (unsigned long long)t);
			goto out;
		}
		for (i = 0; i < nw; i++)
			take_lapped(&w[i], t, &v);
		t += v.size;
	}
	/*
	 * Only forward, by CAS: shmqd may have taken the lock from a holder
	 * that died in here.
	 */
	while (pos_before(tail, t) && !ck_pr_cas_64(&ph->tail, tail, t))
		tail = ck_pr_load_64(&ph->tail);
	/* The tail before the hazards: pairs with the take of a spilling topic. */
	ck_pr_fence_memory();
	rc = horizon_of(m, part, UINT32_MAX, &h);
	if (rc)
		goto out;
	if (pos_before(h, t))
		t = h;
	while (pos_before(reuse, t) && !ck_pr_cas_64(&ph->reuse, reuse, t))
		reuse = ck_pr_load_64(&ph->reuse);
	reuse = ck_pr_load_64(&ph->reuse);
	if (pos_before(reuse, need))
		rc = -EAGAIN;
out:
	tail_unlock(ph);
	if (rc)
		return rc;
enough:
	*limit = reuse + cap;
	return 0;
}

/* Seal the frame at pos as padding of size bytes, unless already sealed. */
/*
 * Seal the frame at pos as padding of size bytes, unless somebody sealed
 * it first.  Two phases, so that a producer committing at the same moment
 * can never see its commit succeed over our header: first a CAS takes the
 * seal from whatever was there to pos | PAD (ours, not yet readable; a
 * producer's commit CAS now fails, and one that read the seal after this
 * sees our position and gives up: shmq__ring_commit); then the header;
 * then the readable seal, with release ordering.
 */
static void seal_pad(uint8_t *ring, uint64_t mask, uint64_t pos, uint32_t size)
{
	struct shmq_frame *f = (struct shmq_frame *)(ring + (pos & mask));
	uint64_t seen = ck_pr_load_64(&f->seal);

	/* (A zeroed seal, never written, says position 0 with no flag.) */
	if ((seen & ~SHMQ_SEAL_FLAGS) == pos &&
	    (seen & (SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD)))
		return; /* committed, or another padder has it */
	if (!ck_pr_cas_64(&f->seal, seen, pos | SHMQ_SEAL_PAD))
		return; /* the producer committed (or a padder won) */
	ck_pr_store_32(&f->size, size);
	ck_pr_store_16(&f->key_len, 0);
	ck_pr_store_32(&f->value_len, 0);
	ck_pr_fence_store();
	ck_pr_store_64(&f->seal, pos | SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD);
}

void shmq__ring_pad(struct shmq_map *m, uint32_t part, uint64_t pos, uint32_t len)
{
	uint8_t *ring = shmq__ring(m, part);
	uint64_t cap = m->geo.ring_bytes, off = pos & m->mask;

	if (off + len > cap) {
		seal_pad(ring, m->mask, pos, (uint32_t)(cap - off));
		len -= (uint32_t)(cap - off);
		pos += cap - off;
	}
	seal_pad(ring, m->mask, pos, len);
}

/* Sleep until a consumer frees space or deadline passes.  Pairs with release. */
static void wait_for_space(struct shmq_map *m, uint32_t part, uint64_t end,
			   uint64_t *limit, uint64_t deadline)
{
	struct shmq_seg_header *hdr = m->hdr;
	uint32_t seq = shmq__event_prepare(&hdr->space_seq, &hdr->space_waiters);
	uint64_t now, slice;

	if (make_room(m, part, end, limit) != -EAGAIN ||
	    ck_pr_load_32(&hdr->deleted))
		return;
	now = shmq__mono_ns();
	/*
	 * Sleep in slices.  A claim that blocks the tail walk is not released
	 * by a consumer, so nobody signals when it commits; and release does
	 * not fence before it looks at the flag (see there), so a wake can be
	 * missed.  Either costs at most one slice.
	 */
	slice = SPACE_WAIT_SLICE_NS;
	if (deadline != UINT64_MAX && deadline - now < slice)
		slice = deadline > now ? deadline - now : 0;
	shmq__futex_wait(&hdr->space_seq, seq, slice);
}

/*
 * Claim room for frames of sizes[0..n) (n >= 1) in partition part: as many
 * of them as fit, one after the other, between head and the ring's end
 * (after the padding to it when sizes[0] does not fit there), and no more
 * bytes than max_bytes unless one frame alone is larger.  *taken is how
 * many.  With n == 1 this is the claim of one message (shmq__ring_claim);
 * see "Batches" in the design note for more.
 */
static inline int claim_frames(struct shmq_map *m, struct shmq_producer_slot *slot,
			       uint32_t part, const uint32_t *sizes, uint32_t n,
			       uint64_t max_bytes, int timeout_ms, bool busy_wait,
			       uint64_t *limit_cache, struct shmq_ring_claim *c,
			       uint32_t *taken)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	uint64_t cap = m->geo.ring_bytes, deadline = 0, full_since = 0, now;
	uint64_t head, off, len, fpos, end, room;
	uint8_t *ring = shmq__ring(m, part);
	uint32_t backoff = 16, frame_len, nf;
	int rc;

	for (;;) {
		head = ck_pr_load_64(&ph->head);
		off = head & m->mask;
		if (head & (SHMQ_FRAME_ALIGN - 1)) {
			ck_pr_store_64(&slot->claim_pos, SHMQ_POS_NONE);
			return shmq__fail(SHMQ_ECORRUPT, "partition %u: head %llu is not aligned",
					  part, (unsigned long long)head);
		}
		frame_len = sizes[0];
		len = 0;
		fpos = head;
		room = cap - off;
		if (off + frame_len > cap) {
			/* The frame would cross the end: pad to it, start at 0. */
			len = cap - off;
			fpos = head + (cap - off);
			room = cap;
		}
		/* The rest of a batch only as far as the end and max_bytes. */
		for (nf = 1; nf < n; nf++) {
			if (frame_len + sizes[nf] > room ||
			    frame_len + sizes[nf] > max_bytes)
				break;
			frame_len += sizes[nf];
		}
		len += frame_len;
		end = head + len;
		if (pos_before(*limit_cache, end)) {
			uint64_t want = end;

			/*
			 * No stale claim record may outlive this call: shmqd
			 * would take it for a live producer's claim (reap.c).
			 */
			ck_pr_store_64(&slot->claim_pos, SHMQ_POS_NONE);
			/* Found full and still spinning: wait for a batch. */
			if (full_since && (busy_wait || shmq__mono_ns() - full_since < SPACE_SPIN_NS))
				want = end + (cap / 8 < WALK_AHEAD_MAX ? cap / 8 : WALK_AHEAD_MAX);
			rc = make_room(m, part, want, limit_cache);
			if (rc == 0)
				continue;
			if (rc != -EAGAIN)
				return rc;
			if (ck_pr_load_32(&m->hdr->deleted))
				return SHMQ_EDELETED;
			/* SHMQ_FULL_SPILL waits like BLOCK: for the spiller. */
			if (m->geo.full_policy == SHMQ_FULL_FAIL || timeout_ms == 0)
				return -EAGAIN;
			now = shmq__mono_ns();
			if (!deadline) {
				deadline = timeout_ms < 0 ? UINT64_MAX :
					now + (uint64_t)timeout_ms * 1000000;
				full_since = now;
			}
			if (deadline != UINT64_MAX && now >= deadline)
				return -EAGAIN;
			/*
			 * Spin a little first, as a consumer does: a consumer
			 * that keeps up frees room within microseconds, and a
			 * sleep costs two system calls and a wake-up.
			 */
			if (busy_wait || now - full_since < SPACE_SPIN_NS) {
				for (uint32_t k = 0; k < backoff; k++)
					ck_pr_stall();
				if (backoff < SPACE_BACKOFF_MAX)
					backoff *= 2;
			} else {
				wait_for_space(m, part, end, limit_cache, deadline);
			}
			continue;
		}
		/* Record the claim before making it, for shmqd (reap.c). */
		ck_pr_store_32(&slot->claim_part, part);
		ck_pr_store_32(&slot->claim_len, (uint32_t)len);
		ck_pr_store_64(&slot->claim_pos, head);
		ck_pr_fence_store_atomic();
		if (ck_pr_cas_64(&ph->head, head, end))
			break;
	}

	if (fpos != head)
		seal_pad(ring, m->mask, head, (uint32_t)(cap - off));

	c->part = part;
	c->pos = head;
	c->len = (uint32_t)len;
	c->frame_pos = fpos;
	c->frame_len = frame_len;
	*taken = nf;
	return 0;
}

int shmq__ring_claim(struct shmq_map *m, struct shmq_producer_slot *slot,
		     uint32_t part, uint32_t frame_len, int timeout_ms,
		     bool busy_wait, uint64_t *limit_cache,
		     struct shmq_ring_claim *c)
{
	uint32_t taken;

	return claim_frames(m, slot, part, &frame_len, 1, frame_len, timeout_ms,
			    busy_wait, limit_cache, c, &taken);
}

int shmq__ring_claim_batch(struct shmq_map *m, struct shmq_producer_slot *slot,
			   uint32_t part, const uint32_t *sizes, uint32_t n,
			   int timeout_ms, bool busy_wait, uint64_t *limit_cache,
			   struct shmq_ring_claim *c, uint32_t *taken)
{
	uint64_t cap = m->geo.ring_bytes;

	return claim_frames(m, slot, part, sizes, n,
			    cap / 8 < WALK_AHEAD_MAX ? cap / 8 : WALK_AHEAD_MAX,
			    timeout_ms, busy_wait, limit_cache, c, taken);
}

int shmq__ring_commit(struct shmq_map *m, struct shmq_producer_slot *slot,
		      const struct shmq_ring_claim *c, bool pad)
{
	struct shmq_seg_header *hdr = m->hdr;
	struct shmq_frame *f = (struct shmq_frame *)(shmq__ring(m, c->part) +
						     (c->frame_pos & m->mask));
	uint64_t want = c->frame_pos | SHMQ_SEAL_COMMITTED | (pad ? SHMQ_SEAL_PAD : 0);
	/*
	 * What the seal holds now: an earlier lap's word, or shmqd's padding
	 * of our claim.  Read here rather than when we claimed: only a padder
	 * may write the seal of a claimed frame, and it does so with a CAS
	 * from whatever it found, so if it pads after this load our CAS below
	 * fails, and if it padded before, we see its position.  Reading the
	 * seal line only now keeps it out of our cache while a consumer spins
	 * on it, until the stores that publish it.
	 */
	uint64_t seen = ck_pr_load_64(&f->seal);
	int rc = 0;

	if ((seen & ~SHMQ_SEAL_FLAGS) == c->frame_pos &&
	    (seen & (SHMQ_SEAL_COMMITTED | SHMQ_SEAL_PAD))) {
		/* shmqd padded it (or is padding it) before we got here. */
		rc = SHMQ_EREVOKED;
	} else {
		if (pad) {
			ck_pr_store_32(&f->size, c->frame_len);
			ck_pr_store_16(&f->key_len, 0);
			ck_pr_store_32(&f->value_len, 0);
		}
		/*
		 * The CAS is the release that publishes header and payload,
		 * and the full barrier that orders the seal before the load
		 * of data_waiters below (pairs with the consumer's increment
		 * of data_waiters before its last look).
		 */
		if (!ck_pr_cas_64(&f->seal, seen, want))
			rc = SHMQ_EREVOKED;
	}
	ck_pr_store_64(&slot->claim_pos, SHMQ_POS_NONE);
	if (rc == SHMQ_EREVOKED) {
		/*
		 * shmqd announces a revocation of this claim in our slot
		 * (revoked_pos = the claim's start) before its seal CAS, and
		 * our failed CAS saw that CAS, so any other change of the
		 * seal is somebody writing where they must not.
		 */
		if (ck_pr_load_64(&slot->revoked_pos) != c->pos)
			return shmq__fail(SHMQ_ECORRUPT, "partition %u: the seal of our claim at %llu changed under us",
					  c->part, (unsigned long long)c->frame_pos);
		/* Let the tail walk pass our padded claim: we no longer write. */
		ck_pr_store_64(&slot->revoked_pos, SHMQ_POS_NONE);
		ck_pr_dec_32(&hdr->revoked);
	}
	if (rc == 0)
		shmq__event_signal(&hdr->data_seq, &hdr->data_waiters);
	return rc;
}

void shmq__ring_seal_rest(struct shmq_map *m, const struct shmq_ring_claim *c,
			  const uint32_t *sizes, uint32_t n)
{
	uint8_t *ring = shmq__ring(m, c->part);
	uint64_t pos = c->frame_pos + sizes[0];
	uint32_t k;

	/* Their headers and payloads before their seals. */
	ck_pr_fence_store();
	for (k = 1; k < n; k++) {
		struct shmq_frame *f = (struct shmq_frame *)(ring + (pos & m->mask));

		ck_pr_store_64(&f->seal, pos | SHMQ_SEAL_COMMITTED);
		pos += sizes[k];
	}
}

void shmq__ring_wake_consumers(struct shmq_map *m)
{
	ck_pr_fence_memory();
	shmq__event_signal(&m->hdr->data_seq, &m->hdr->data_waiters);
}

/* How many lines of a frame past its first a take prefetches. */
#define TAKE_PREFETCH_LINES 8u

/*
 * A committed frame at x: ask for the rest of its lines at once, so that
 * their misses overlap with the work of the take (and with each other)
 * instead of coming one after the other when the application reads the
 * message.  The size is not checked yet: it is only a hint here, a
 * prefetch cannot fault, and the lines asked for stay inside the ring.
 * Larger frames are left to the hardware's stream prefetcher once it has
 * seen these.
 */
static inline void prefetch_frame(const uint8_t *ring, uint64_t mask, uint64_t x)
{
	uint64_t off = x & mask, a = (off & ~(uint64_t)(SHMQ_CACHELINE - 1)) + SHMQ_CACHELINE;
	const struct shmq_frame *f = (const struct shmq_frame *)(ring + off);
	uint64_t end = off + ck_pr_load_32(&f->size);
	uint32_t i;

	for (i = 0; i < TAKE_PREFETCH_LINES && a < end; i++, a += SHMQ_CACHELINE)
		__builtin_prefetch(ring + (a & mask));
}

int shmq__ring_take(struct shmq_map *m, uint32_t part, uint32_t g,
		    uint32_t member, struct shmq_member_slot *lease,
		    struct shmq_frame_view *v)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	struct shmq_cursor *cur = &ph->cursor[g];
	uint64_t *hold = &ph->hold[member];
	const uint8_t *ring = shmq__ring(m, part);
	uint64_t cap = m->geo.ring_bytes;
	uint32_t max_frame = shmq__max_frame(m);
	bool spilling = m->geo.spill_mode != SHMQ_SPILL_OFF;

	for (;;) {
		uint64_t x = ck_pr_load_64(&cur->next), seal;
		int rc;

		/*
		 * A look at the seal first: an empty partition costs no store
		 * and no look at the head line that producers write.
		 */
		if (spilling && pos_before(x, ck_pr_load_64(&ph->tail))) {
			/* Below the tail: no longer ours to read in the ring. */
			if (ck_pr_load_64(&cur->next) != x)
				continue;
			v->pos = x;
			return SHMQ_TAKE_DISK;
		}
		if (x & (SHMQ_FRAME_ALIGN - 1))
			return SHMQ_ECORRUPT; /* no frame starts there */
		seal = ck_pr_load_64(&((const struct shmq_frame *)(ring + (x & m->mask)))->seal);
		if ((seal & ~SHMQ_SEAL_FLAGS) != x || !(seal & SHMQ_SEAL_COMMITTED))
			return -EAGAIN;
		/* Acquire: the header and payload were written before the seal. */
		ck_pr_fence_load();
		prefetch_frame(ring, m->mask, x);
		ck_pr_store_64(hold, x);
		/*
		 * The header is read once, after the hold store or before it:
		 * what proves it whole is the cursor CAS below (or, spilling,
		 * the look at the tail after it), not the hold, which only
		 * keeps the frame once the CAS made it ours.  A frame lapped
		 * since we read its seal fails the CAS, or decodes as bad with
		 * the cursor moved on.
		 */
		rc = decode_sealed(ring, cap, x, seal, max_frame, v);
		if (rc == SHMQ_FRAME_BAD) {
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			/*
			 * A stale read the cursor already left, or (spilling)
			 * one producers may already have reused, is not
			 * corruption: the next look decides.
			 */
			ck_pr_fence_load();
			if (ck_pr_load_64(&cur->next) != x ||
			    (spilling && pos_before(x, ck_pr_load_64(&ph->tail))))
				continue;
			return SHMQ_ECORRUPT;
		}
		/*
		 * On a spilling topic producers may reuse what is on disk
		 * although this group has not read it.  They publish the tail
		 * before they reuse anything below it, and the tail only
		 * grows: a tail still at or below x, read after the header,
		 * proves the header was whole.
		 */
		if (spilling && pos_before(x, ck_pr_load_64(&ph->tail))) {
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			continue; /* the next look sends us to disk */
		}
		/* A SHARED member's lease is on it before it is taken (lease.c). */
		if (lease && !v->pad)
			shmq__lease_prepare(lease, part, x, 1);
		/* Take it; the CAS also proves that the cursor was still x. */
		if (!ck_pr_cas_64(&cur->next, x, x + v->size)) {
			if (lease && !v->pad)
				shmq__lease_end(m, lease);
			/* The next look may find nothing: hold nothing. */
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			continue;
		}
		/*
		 * The CAS is a full barrier between our hold and this look at
		 * the tail (pairs with make_room: tail, fence, hazards).  A
		 * tail still at or below x means every producer that moves
		 * it past x later sees our hold; otherwise one may already be
		 * reusing x, and the frame is read from disk instead.
		 */
		if (spilling && pos_before(x, ck_pr_load_64(&ph->tail))) {
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			if (v->pad)
				continue;
			v->pos = x;
			return SHMQ_TAKE_DISK_TAKEN;
		}
		if (v->pad) {
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			continue;
		}
		return 0;
	}
}

/*
 * A cursor with the walker bit whose tail lock is free: the walker died
 * between its claim and the store that ends it (a live one stores before it
 * lets the lock go).  Give the cursor back at the frame it was on; the next
 * walk over that frame counts it (see "Untethered groups" above).
 */
static void unclaim_dead_walker(struct shmq_part_header *ph,
				struct shmq_cursor *cur, uint64_t x)
{
	/* The cursor before the lock: pairs with the walker's store, unlock. */
	ck_pr_fence_load();
	if (ck_pr_load_32(&ph->tail_lock) == 0)
		ck_pr_cas_64(&cur->next, x, x & ~SHMQ_CURSOR_WALKER);
}

int shmq__ring_take_copy(struct shmq_map *m, uint32_t part, uint32_t g,
			 uint8_t *buf, struct shmq_frame_view *v,
			 uint64_t *missed)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	struct shmq_cursor *cur = &ph->cursor[g];
	const uint8_t *ring = shmq__ring(m, part);
	uint64_t cap = m->geo.ring_bytes;
	uint32_t max_frame = shmq__max_frame(m);

	for (;;) {
		uint64_t x = ck_pr_load_64(&cur->next), seal, lost, done;
		int rc;

		if (x == SHMQ_POS_NONE)
			return -EAGAIN; /* being placed */
		if (x & SHMQ_CURSOR_WALKER) {
			/* A producer is taking this frame from us right now. */
			unclaim_dead_walker(ph, cur, x);
			return -EAGAIN;
		}
		if (x & (SHMQ_FRAME_ALIGN - 1))
			return SHMQ_ECORRUPT; /* no frame starts there */
		/*
		 * Lapped?  The counts after the cursor: the walk counts
		 * before it moves the cursor on (take_lapped).
		 */
		ck_pr_fence_load();
		lost = ck_pr_load_64(&cur->missed);
		done = ck_pr_load_64(&cur->missed_reported);
		if (pos_before(done, lost)) {
			/*
			 * Still at x, so no walk counted x or beyond in what
			 * we read: all of it lies before x.
			 */
			if (!ck_pr_cas_64(&cur->next, x, x))
				continue;
			while (pos_before(done, lost) &&
			       !ck_pr_cas_64(&cur->missed_reported, done, lost))
				done = ck_pr_load_64(&cur->missed_reported);
			if (pos_before(done, lost)) {
				*missed = lost - done;
				v->pos = x;
				return SHMQ_ELAPPED;
			}
			/* Another member reported it. */
		}
		seal = ck_pr_load_64(&((const struct shmq_frame *)(ring + (x & m->mask)))->seal);
		if ((seal & ~SHMQ_SEAL_FLAGS) != x || !(seal & SHMQ_SEAL_COMMITTED)) {
			if (ck_pr_load_64(&cur->next) != x)
				continue;
			return -EAGAIN;
		}
		rc = shmq__frame_decode(ring, cap, x, max_frame, v);
		/*
		 * What was read is whole if producers may still not overwrite
		 * x (the header loads before reuse; see the design note).
		 */
		ck_pr_fence_load();
		if (pos_before(x, ck_pr_load_64(&ph->reuse))) {
			/* Then the walk took x from us: look again. */
			ck_pr_fence_load();
			if (ck_pr_load_64(&cur->next) == x)
				return SHMQ_ECORRUPT; /* below reuse, yet not taken */
			continue;
		}
		if (rc != SHMQ_FRAME_OK) {
			if (ck_pr_load_64(&cur->next) != x)
				continue;
			/* A committed seal that changed under a valid reuse. */
			return SHMQ_ECORRUPT;
		}
		if (!ck_pr_cas_64(&cur->next, x, x + v->size))
			continue;
		if (v->pad)
			continue;
		/*
		 * Ours now, and nothing holds it: copy it, then check that
		 * no producer could have started to overwrite it meanwhile.
		 */
		shmq__copy(buf, v->key, (size_t)v->key_len + v->value_len);
		ck_pr_fence_load();
		if (pos_before(x, ck_pr_load_64(&ph->reuse))) {
			/* Lost while we copied: reported like the lapped ones. */
			ck_pr_inc_64(&cur->missed);
			continue;
		}
		v->key = buf;
		v->value = buf + v->key_len;
		return 0;
	}
}

void shmq__ring_release(struct shmq_map *m, uint32_t part, uint32_t member)
{
	struct shmq_seg_header *hdr = m->hdr;

	/* Our reads of the frame are done before the space may be reused. */
	ck_pr_fence_release();
	ck_pr_store_64(&shmq__part(m, part)->hold[member], SHMQ_POS_NONE);
	/*
	 * No store-load fence between the hold store and the look at the
	 * flag: it would cost every message a full barrier to save a blocked
	 * producer, in a narrow race, at most one sleep slice
	 * (SPACE_WAIT_SLICE_NS; see wait_for_space).
	 */
	shmq__event_signal(&hdr->space_seq, &hdr->space_waiters);
}

int shmq__ring_seek(struct shmq_map *m, uint32_t part, uint32_t g,
		    uint64_t pos)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	uint64_t cap = m->geo.ring_bytes, head, tail, j;
	struct shmq_frame_view v;
	int rc = 0;

	if (tail_lock(ph, SEEK_LOCK_WAIT_NS))
		return shmq__fail(-EBUSY, "partition %u: its tail lock stayed taken by pid %u",
				  part, ck_pr_load_32(&ph->tail_lock));
	head = ck_pr_load_64(&ph->head);
	tail = ck_pr_load_64(&ph->tail);
	if (head - tail > cap) {
		rc = shmq__fail(SHMQ_ECORRUPT, "partition %u: tail and head more than a ring apart", part);
		goto out;
	}
	if (pos == SHMQ_OFFSET_EARLIEST)
		j = tail;
	else if (pos == SHMQ_OFFSET_LATEST)
		j = head;
	else
		j = pos;
	if (pos_before(j, tail)) {
		rc = shmq__fail(SHMQ_EGONE, "offset %llu of partition %u is older than the ring holds (oldest %llu)",
				(unsigned long long)j, part, (unsigned long long)tail);
		goto out;
	}
	if (pos_before(head, j) || (j & (SHMQ_FRAME_ALIGN - 1)) ||
	    (j != head && j != tail &&
	     shmq__frame_decode(shmq__ring(m, part), cap, j, shmq__max_frame(m),
				&v) != SHMQ_FRAME_OK)) {
		rc = shmq__fail(-EINVAL, "offset %llu is not a message boundary of partition %u",
				(unsigned long long)j, part);
		goto out;
	}
	/* Members racing on the cursor fail their CAS and re-read it. */
	ck_pr_store_64(&ph->cursor[g].next, j);
out:
	tail_unlock(ph);
	return rc;
}

int shmq__ring_check(struct shmq_map *m, uint32_t part)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	const uint8_t *ring = shmq__ring(m, part);
	uint64_t cap = m->geo.ring_bytes;
	/* Tail first: it never passes a head read after it. */
	uint64_t tail = ck_pr_load_64(&ph->tail);
	uint64_t head = ck_pr_load_64(&ph->head);
	uint64_t t, h;
	uint32_t g;
	int rc;

	if (head - tail > cap)
		return shmq__fail(SHMQ_ECORRUPT, "partition %u: head %llu - tail %llu exceeds the ring",
				  part, (unsigned long long)head, (unsigned long long)tail);
	rc = horizon_of(m, part, UINT32_MAX, &h);
	if (rc)
		return rc;
	if (pos_before(h, tail))
		return shmq__fail(SHMQ_ECORRUPT, "partition %u: horizon %llu below tail %llu",
				  part, (unsigned long long)h, (unsigned long long)tail);
	for (g = 0; g < SHMQ_MAX_GROUPS; g++) {
		uint64_t n;

		if (ck_pr_load_32(&shmq__group(m, g)->state) != SHMQ_GROUP_ACTIVE)
			continue;
		n = ck_pr_load_64(&ph->cursor[g].next);
		if (n == SHMQ_POS_NONE)
			continue;
		n &= ~SHMQ_CURSOR_WALKER;
		/*
		 * On a spilling topic a lagging group reads from disk; an
		 * untethered one never lags behind the tail.
		 */
		if ((pos_before(n, tail) &&
		     (m->geo.spill_mode == SHMQ_SPILL_OFF ||
		      ck_pr_load_32(&shmq__group(m, g)->untethered))) ||
		    pos_before(head, n))
			return shmq__fail(SHMQ_ECORRUPT, "partition %u: group %u cursor %llu outside [%llu, %llu]",
					  part, g, (unsigned long long)n,
					  (unsigned long long)tail, (unsigned long long)head);
	}
	for (t = tail; pos_before(t, head);) {
		struct shmq_frame_view v;

		rc = shmq__frame_decode(ring, cap, t, shmq__max_frame(m), &v);
		if (rc == SHMQ_FRAME_BAD)
			return shmq__fail(SHMQ_ECORRUPT, "partition %u: bad frame at %llu",
					  part, (unsigned long long)t);
		if (rc == SHMQ_FRAME_PENDING) {
			if (pos_before(t, h))
				return shmq__fail(SHMQ_ECORRUPT, "partition %u: uncommitted frame at %llu below the horizon %llu",
						  part, (unsigned long long)t, (unsigned long long)h);
			return 0; /* a claim in progress: cannot walk past it */
		}
		t += v.size;
	}
	if (t != head)
		return shmq__fail(SHMQ_ECORRUPT, "partition %u: frames end at %llu, head is %llu",
				  part, (unsigned long long)t, (unsigned long long)head);
	return 0;
}

int shmq__ring_take_at(struct shmq_map *m, uint32_t part, uint32_t g,
		       uint64_t pos, uint64_t next)
{
	struct shmq_cursor *cur = &shmq__part(m, part)->cursor[g];

	return ck_pr_cas_64(&cur->next, pos, next) ? 0 : -EAGAIN;
}

int shmq__ring_seek_disk(struct shmq_map *m, uint32_t part, uint32_t g,
			 uint64_t pos)
{
	struct shmq_part_header *ph = shmq__part(m, part);

	if (pos & (SHMQ_FRAME_ALIGN - 1) ||
	    pos_before(ck_pr_load_64(&ph->head), pos))
		return shmq__fail(-EINVAL, "offset %llu is not a message boundary of partition %u",
				  (unsigned long long)pos, part);
	if (tail_lock(ph, SEEK_LOCK_WAIT_NS))
		return shmq__fail(-EBUSY, "partition %u: its tail lock stayed taken", part);
	ck_pr_store_64(&ph->cursor[g].next, pos);
	tail_unlock(ph);
	return 0;
}

int shmq__ring_find_time(struct shmq_map *m, uint32_t part, uint64_t from,
			 uint64_t ts, uint64_t *pos)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	const uint8_t *ring = shmq__ring(m, part);
	uint64_t cap = m->geo.ring_bytes, t, head;
	int rc = 0;

	if (tail_lock(ph, SEEK_LOCK_WAIT_NS))
		return shmq__fail(-EBUSY, "partition %u: its tail lock stayed taken", part);
	t = ck_pr_load_64(&ph->tail);
	head = ck_pr_load_64(&ph->head);
	if (pos_before(t, from) && !pos_before(head, from))
		t = from;
	while (pos_before(t, head)) {
		struct shmq_frame_view v;
		int st = shmq__frame_decode(ring, cap, t, shmq__max_frame(m), &v);

		if (st == SHMQ_FRAME_PENDING)
			break;
		if (st == SHMQ_FRAME_BAD) {
			rc = shmq__fail(SHMQ_ECORRUPT, "partition %u: bad frame at %llu",
					part, (unsigned long long)t);
			break;
		}
		if (!v.pad && v.timestamp_ns >= ts)
			break;
		t += v.size;
	}
	tail_unlock(ph);
	*pos = t;
	return rc;
}

uint64_t shmq__ring_tail(struct shmq_map *m, uint32_t part)
{
	return ck_pr_load_64(&shmq__part(m, part)->tail);
}

int shmq__ring_frame_at(struct shmq_map *m, uint32_t part, uint64_t pos,
			struct shmq_frame_view *v)
{
	struct shmq_part_header *ph = shmq__part(m, part);
	uint64_t head, tail;
	int rc;

	if (tail_lock(ph, SEEK_LOCK_WAIT_NS))
		return shmq__fail(-EAGAIN, "partition %u: its tail lock stayed taken", part);
	tail = ck_pr_load_64(&ph->tail);
	head = ck_pr_load_64(&ph->head);
	if (pos_before(pos, tail))
		rc = SHMQ_FRAME_GONE;
	else if (!pos_before(pos, head))
		rc = SHMQ_FRAME_PENDING;
	else
		rc = shmq__frame_decode(shmq__ring(m, part), m->geo.ring_bytes,
					pos, shmq__max_frame(m), v);
	tail_unlock(ph);
	return rc;
}
