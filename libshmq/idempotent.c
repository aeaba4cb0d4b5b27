/*
 * idempotent.c - producer identities: each sequence stored at most once.
 *
 * Overview
 * --------
 * A producer opened with an identity (a name) takes that identity's slot
 * in the topic's identity table (layout.h, struct shmq_ident_slot; one live
 * holder at a time) and publishes every message with a sequence number
 * chosen by the application.  Each message frame carries the identity's
 * producer id and the sequence in a 16-byte extension before the key
 * (SHMQ_FRAME_PRODUCER).  For every partition, the identity has a record
 * in the partition header (struct shmq_ident_seq):
 *
 *   last_seq, last_pos   the highest sequence stored, and its offset
 *   try_seq, try_pos     the message being published now, and its offset
 *
 * A send with sequence s into partition p (producer.c, send_seq):
 *
 *   1. s <= last_seq: SHMQ_EDUPLICATE, nothing stored;
 *   2. claim, write header, extension, key and value;
 *   3. try_pos = X (the frame's offset), then try_seq = s;
 *   4. commit (the seal CAS);
 *   5. committed: last_pos = X, then last_seq = s.  Revoked: try_seq gets
 *      SHMQ_TRY_DONE ("not stored").
 *
 * The frame is the truth; the record says where to look.  A producer that
 * dies between 3 and 5 leaves an attempt that is unresolved (try_seq >
 * last_seq, no DONE), and the identity's next holder resolves it at open,
 * before it sends (shmq__ident_resolve below), by looking at the frame at
 * try_pos under the partition's tail lock:
 *
 *   - a committed message carrying our producer id and try_seq: stored;
 *     last_seq = try_seq;
 *   - padding, a frame still unsealed (its producer is dead: it will never
 *     commit; shmqd pads it), or anything else: not stored;
 *   - below the tail: the ring no longer has it, so it was sealed before
 *     the tail walk passed it (the walk stops at unsealed frames).  Sealed
 *     as padding, it was padded by shmqd's reaper, which marks the
 *     attempt DONE before it pads a dead producer's claim (and after it
 *     revokes a stalled one's): an attempt still unresolved was committed.
 *
 * So a producer killed at any instruction leaves a state from which its
 * successor knows exactly which sequences the partition holds, with no
 * walk of the log: at most one attempt per partition is ever unresolved,
 * because a holder resolves its attempt (step 5) before it makes the next.
 *
 * Invariants
 * ----------
 * - Only the live holder of an identity writes its records, except that
 *   shmqd's reaper may set SHMQ_TRY_DONE on the attempt of a dead or
 *   revoked producer (a CAS from the attempt's sequence, so it never
 *   touches a later attempt), and that the next holder resolves what a
 *   dead one left.
 * - try_seq <= last_seq, or DONE, whenever the holder is between sends.
 * - last_seq only grows while a slot lives.
 *
 * Memory ordering
 * ---------------
 * The holder writes its records with plain atomic stores, try_pos before
 * try_seq and last_pos before last_seq (store fences; a reader after the
 * holder's death sees them in that order).  The commit's seal CAS is a
 * full barrier: the attempt is in the record before the frame can be
 * committed.  A successor reads the records only after it saw the holder
 * dead (/proc), when every store the holder made is visible.  The
 * registration mutex orders takeovers.
 *
 * Failure and recovery
 * --------------------
 * Every record is untrusted: a try_pos that is not a frame of ours is
 * "not stored", and sequences above SHMQ_SEQ_MAX are ignored.  The state
 * lives in the segment: it outlives producers and shmqd, not a host
 * restart (the segment is recreated, and every identity with it).
 */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "atomics.h"

#include "shmq_int.h"

/*
 * A producer id is a hash of the topic and identity names: stable across
 * restarts, and different between topics, so that one consumer-side
 * dedup can serve several topics.  Never 0.
 */
static uint64_t producer_id(const char *topic, const char *name)
{
	uint64_t h = shmq__fnv1a64(topic, strlen(topic) + 1, SHMQ_FNV_BASIS);

	h = shmq__fnv1a64(name, strlen(name), h);
	return h ? h : 1;
}

static struct shmq_ident_seq *rec(struct shmq_map *m, uint32_t part, uint32_t i)
{
	return &shmq__part(m, part)->ident[i];
}

/* Mark the attempt at sequence seq as not stored, unless it moved on. */
static void try_done(struct shmq_ident_seq *r, uint64_t seq)
{
	ck_pr_cas_64(&r->try_seq, seq, seq | SHMQ_TRY_DONE);
}

/*
 * Settle what a dead holder left in one partition (see the note above).
 * Returns 0, or -EAGAIN when the tail lock could not be had.
 */
static int resolve(struct shmq_map *m, uint32_t part, uint32_t i, uint64_t id)
{
	struct shmq_ident_seq *r = rec(m, part, i);
	uint64_t t = ck_pr_load_64(&r->try_seq), last = ck_pr_load_64(&r->last_seq);
	uint64_t x = ck_pr_load_64(&r->try_pos);
	struct shmq_frame_view v;
	bool stored;
	int st;

	if ((t & SHMQ_TRY_DONE) || t > SHMQ_SEQ_MAX || t <= last)
		return 0;
	st = shmq__ring_frame_at(m, part, x, &v);
	if (st == -EAGAIN)
		return st;
	if (st == SHMQ_FRAME_GONE)
		stored = true;
	else
		stored = st == SHMQ_FRAME_OK && !v.pad && v.producer_id == id &&
			 v.seq == t;
	if (!stored) {
		try_done(r, t);
		return 0;
	}
	ck_pr_store_64(&r->last_pos, x);
	ck_pr_fence_store();
	ck_pr_store_64(&r->last_seq, t);
	return 0;
}

int shmq__ident_open(struct shmq_map *m, const char *name, uint32_t *index,
		     uint64_t *id_out)
{
	struct shmq_owner self;
	uint64_t id;
	uint32_t i, free_i = UINT32_MAX, p;
	int rc;

	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "bad producer identity \"%s\"", name);
	id = producer_id(m->name, name);
	shmq__owner_self(&self);
	rc = shmq__seg_lock(m);
	if (rc)
		return rc == -ETIMEDOUT ? -EAGAIN : rc;
	for (i = 0; i < SHMQ_MAX_IDENTS; i++) {
		struct shmq_ident_slot *s = shmq__ident_slot(m, i);

		if (ck_pr_load_32(&s->state) != SHMQ_IDENT_ACTIVE) {
			if (free_i == UINT32_MAX)
				free_i = i;
			continue;
		}
		if (strncmp(s->name, name, sizeof(s->name)) == 0)
			break;
		if (ck_pr_load_64(&s->producer_id) == id) {
			rc = shmq__fail(-EEXIST, "topic %s: producer identity \"%s\" has the producer id of \"%.*s\"",
					m->name, name, SHMQ_NAME_MAX, s->name);
			goto out;
		}
	}
	if (i < SHMQ_MAX_IDENTS) {
		struct shmq_ident_slot *s = shmq__ident_slot(m, i);
		struct shmq_owner o;

		o.pid = ck_pr_load_32(&s->owner.pid);
		o.start_ticks = ck_pr_load_64(&s->owner.start_ticks);
		if (o.pid && shmq__owner_alive(&o)) {
			rc = shmq__fail(-EBUSY, "topic %s: producer identity \"%s\" is held by pid %u",
					m->name, name, o.pid);
			goto out;
		}
		/* Taken over: producer_id is re-derived, in case it was hurt. */
		ck_pr_store_64(&s->producer_id, id);
	} else if (free_i == UINT32_MAX) {
		rc = shmq__fail(-EMFILE, "topic %s: all %u producer identities are taken",
				m->name, SHMQ_MAX_IDENTS);
		goto out;
	} else {
		struct shmq_ident_slot *s = shmq__ident_slot(m, free_i);

		i = free_i;
		for (p = 0; p < m->geo.partitions; p++)
			memset(rec(m, p, i), 0, sizeof(struct shmq_ident_seq));
		memset(s->name, 0, sizeof(s->name));
		memcpy(s->name, name, strlen(name));
		s->producer_id = id;
		s->created_ns = shmq__now_ns();
		ck_pr_fence_store();
		ck_pr_store_32(&s->state, SHMQ_IDENT_ACTIVE);
	}
	{
		struct shmq_ident_slot *s = shmq__ident_slot(m, i);

		ck_pr_store_64(&s->owner.start_ticks, self.start_ticks);
		ck_pr_store_32(&s->owner.pid, self.pid);
	}
	rc = 0;
out:
	shmq__seg_unlock(m);
	if (rc)
		return rc;
	/* Ours now: settle what the previous holder left, then go. */
	for (p = 0; p < m->geo.partitions; p++) {
		rc = resolve(m, p, i, id);
		if (rc) {
			shmq__ident_close(m, i);
			return rc;
		}
	}
	*index = i;
	*id_out = id;
	return 0;
}

void shmq__ident_close(struct shmq_map *m, uint32_t i)
{
	struct shmq_ident_slot *s = shmq__ident_slot(m, i);

	ck_pr_store_64(&s->owner.start_ticks, 0);
	ck_pr_fence_store();
	ck_pr_store_32(&s->owner.pid, 0);
}

uint64_t shmq__ident_last(struct shmq_map *m, uint32_t part, uint32_t i)
{
	uint64_t last = ck_pr_load_64(&rec(m, part, i)->last_seq);

	return last > SHMQ_SEQ_MAX ? 0 : last;
}

void shmq__ident_try(struct shmq_map *m, uint32_t part, uint32_t i,
		     uint64_t seq, uint64_t pos)
{
	struct shmq_ident_seq *r = rec(m, part, i);

	ck_pr_store_64(&r->try_pos, pos);
	ck_pr_fence_store();
	ck_pr_store_64(&r->try_seq, seq);
}

void shmq__ident_stored(struct shmq_map *m, uint32_t part, uint32_t i,
			uint64_t seq, uint64_t pos)
{
	struct shmq_ident_seq *r = rec(m, part, i);

	ck_pr_store_64(&r->last_pos, pos);
	ck_pr_fence_store();
	ck_pr_store_64(&r->last_seq, seq);
}

void shmq__ident_not_stored(struct shmq_map *m, uint32_t part, uint32_t i,
			    uint64_t seq)
{
	try_done(rec(m, part, i), seq);
}

int shmq__ident_crash_point;
uint32_t shmq__ident_crash_countdown;

void shmq__ident_crash(int point)
{
	if (point == shmq__ident_crash_point && shmq__ident_crash_countdown-- == 0)
		raise(SIGKILL);
}

void shmq__ident_claim_padded(struct shmq_map *m, struct shmq_producer_slot *s,
			      uint32_t part, uint64_t pos, uint32_t len)
{
	uint32_t i = ck_pr_load_32(&s->ident);
	struct shmq_ident_seq *r;
	uint64_t t, x;

	if (i == 0 || i > SHMQ_MAX_IDENTS || part >= m->geo.partitions)
		return;
	r = rec(m, part, i - 1);
	t = ck_pr_load_64(&r->try_seq);
	x = ck_pr_load_64(&r->try_pos);
	/* The claim's frame: at pos, or after the padding to the ring's end. */
	if ((t & SHMQ_TRY_DONE) || x - pos >= len)
		return;
	/*
	 * From t only: if the holder moved on to a later attempt meanwhile
	 * (it cannot, being dead, but a revoked one may), that one is left.
	 */
	try_done(r, t);
}

int shmq_identity_delete(shmq_client_t *client, const char *topic,
			 const char *name)
{
	struct shmq_map *m;
	uint32_t i, p;
	int rc;

	if (!client || !topic || !name)
		return -EINVAL;
	shmq__clear_detail();
	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "bad producer identity \"%s\"", name);
	rc = shmq__topic_get(client, topic, &m);
	if (rc)
		return rc;
	rc = shmq__seg_lock(m);
	if (rc)
		goto out;
	for (i = 0; i < SHMQ_MAX_IDENTS; i++) {
		struct shmq_ident_slot *s = shmq__ident_slot(m, i);

		if (ck_pr_load_32(&s->state) == SHMQ_IDENT_ACTIVE &&
		    strncmp(s->name, name, sizeof(s->name)) == 0)
			break;
	}
	if (i == SHMQ_MAX_IDENTS) {
		rc = shmq__fail(-ENOENT, "topic %s has no producer identity \"%s\"", topic, name);
	} else {
		struct shmq_ident_slot *s = shmq__ident_slot(m, i);
		struct shmq_owner o = { .pid = ck_pr_load_32(&s->owner.pid),
					.start_ticks = ck_pr_load_64(&s->owner.start_ticks) };

		if (o.pid && shmq__owner_alive(&o)) {
			rc = shmq__fail(-EBUSY, "producer identity \"%s\" of topic %s is held by pid %u",
					name, topic, o.pid);
		} else {
			ck_pr_store_32(&s->state, SHMQ_IDENT_FREE);
			ck_pr_store_32(&s->owner.pid, 0);
			for (p = 0; p < m->geo.partitions; p++)
				memset(rec(m, p, i), 0, sizeof(struct shmq_ident_seq));
		}
	}
	shmq__seg_unlock(m);
out:
	shmq__topic_put(client, m);
	return rc;
}
