/*
 * consumer.c - consumer handles: joining a group, polling, waiting.
 *
 * Overview
 * --------
 * A consumer handle is a member of one group of one topic.  It owns a slot
 * of the topic's member table (its identity, its group, and its column of
 * holds in every partition).  Members of a group share the group's cursor
 * in each partition: each take is a CAS on it (ring.c), so each message goes
 * to exactly one member, and each group sees every message.
 *
 * Joining
 * -------
 * Group creation and the choice of the starting position happen under the
 * segment's registration mutex (a robust process-shared mutex: a member
 * that dies holding it does not wedge the topic).  A new group is made
 * active with every cursor at SHMQ_POS_NONE, which producers ignore; then
 * each cursor moves to where the member asked (ring.c's seek, under the
 * partition's tail lock, so no producer moves the tail past it meanwhile).
 * From that moment the cursor holds the partition.
 * When the group already has live members, the new member simply shares
 * their position.
 *
 * Untethered groups
 * -----------------
 * A group created with SHMQ_CONSUMER_UNTETHERED never holds producers back
 * (ring.c, "Untethered groups"): its members copy each message out of the
 * ring (shmq__ring_take_copy) into a buffer of the handle instead of holding
 * it, and a poll that finds the group lapped in a partition returns
 * SHMQ_ELAPPED with the number of messages missed, before the next message
 * of that partition.  Such a group takes nothing from the spill files and
 * gives nothing back (no redelivery, no nack): at most once.
 *
 * Acknowledging
 * -------------
 * In a SHARED group what a member takes is under its lease (lease.c)
 * until the member acknowledges it (shmq_consumer_ack, or the next poll),
 * gives it back (nack), or shmqd parks it (ack timeout, death).  A poll
 * first takes back its own message given back by its last nack, then any
 * parked message of the group (only when the group's parked count is not
 * 0), then the next message of a partition.  PARTITIONED groups, untethered
 * groups and at-most-once members take no leases.
 *
 * Waiting
 * -------
 * A poll that finds nothing spins for SPIN_NS, then sleeps on the topic's
 * data event (wait.c): it sets the event's flag (a full barrier) and looks
 * at every partition once more; a producer that commits after that look
 * sees the flag and wakes it (ring.c, commit).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"

#include "shmq_int.h"
#include "spill.h"

/* How long an empty poll spins before it sleeps. */
#define SPIN_NS 20000u
/* How many empty looks between two reads of the clock. */
#define CLOCK_EVERY 16u

struct shmq_consumer {
	shmq_client_t *client;
	struct shmq_map *map;
	uint32_t group;
	uint32_t member;
	struct shmq_member_slot *slot;
	unsigned flags;
	uint32_t rr;	 /* partition the next poll looks at first */
	int held;	 /* partition of the held message, or -1 */
	uint8_t *broken; /* per partition: failed a check, skipped */
	/* Spilling topics: per partition, the log reader (opened when first
	 * needed) and the offset of a damaged frame reported and to skip. */
	struct shmq_spill_reader **readers;
	uint64_t *bad_at;
	uint64_t disk_reads; /* messages delivered from spill files */
	uint32_t disk_waits; /* see disk_take */
	/* PARTITIONED groups (group.c): what this member owns. */
	bool partitioned;
	bool untethered;
	uint8_t *copy;	    /* untethered: the message the last poll returned */
	uint32_t gen_seen;  /* the group generation owned[] reflects */
	uint8_t *owned;	    /* per partition */
	uint32_t *assigned; /* the owned partitions, for on_rebalance */
	uint32_t nassigned;
	void (*on_rebalance)(void *arg, const uint32_t *parts, uint32_t n);
	void *on_rebalance_arg;
	uint64_t auto_commit_ns; /* 0: off */
	/*
	 * SHARED groups (lease.c): leases on what this member takes, unless
	 * it is at most once; the delivery number of what it holds; and
	 * whether that was given back (nack) and waits parked.
	 */
	bool leases;
	bool nacked;
	uint32_t held_count;
	/* PARTITIONED: the last message given back, to count its deliveries. */
	uint32_t nack_part;
	uint64_t nack_pos;
	uint32_t nack_count;
	uint32_t max_deliveries; /* 0: no limit */
	char dlq[SHMQ_NAME_MAX + 1];
	shmq_producer_t *dlq_producer; /* opened when first needed */
	uint64_t next_commit_ns;
};

uint64_t shmq__consumer_disk_reads(const shmq_consumer_t *c)
{
	return c->disk_reads;
}

uint32_t shmq__consumer_prepare_wait(shmq_consumer_t *c, uint32_t **word)
{
	struct shmq_seg_header *hdr = c->map->hdr;

	*word = &hdr->data_seq;
	return shmq__event_prepare(&hdr->data_seq, &hdr->data_waiters);
}

static void free_readers(struct shmq_consumer *c)
{
	uint32_t p;

	if (c->readers && c->map)
		for (p = 0; p < c->map->geo.partitions; p++)
			shmq__spill_reader_close(c->readers[p]);
	free(c->readers);
	free(c->bad_at);
	free(c->broken);
	free(c->owned);
	free(c->assigned);
	free(c->copy);
}

static int take_member_slot(struct shmq_map *m, uint32_t *index)
{
	struct shmq_owner self;
	uint32_t i, p;

	shmq__owner_self(&self);
	for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
		struct shmq_member_slot *s = shmq__member_slot(m, i);

		if (ck_pr_load_32(&s->owner.pid) != 0 ||
		    !ck_pr_cas_32(&s->owner.pid, 0, self.pid))
			continue;
		ck_pr_store_64(&s->owner.start_ticks, self.start_ticks);
		ck_pr_store_32(&s->group, UINT32_MAX);
		ck_pr_store_64(&s->disk_hold, SHMQ_POS_NONE);
		ck_pr_store_32(&s->flags, 0);
		ck_pr_store_32(&s->ack_timeout_ms, 0);
		/* FREE, keeping the serial: an old view of it never matches. */
		ck_pr_store_64(&s->lease, ck_pr_load_64(&s->lease) & ~SHMQ_LEASE_STATE);
		for (p = 0; p < m->geo.partitions; p++)
			ck_pr_store_64(&shmq__part(m, p)->hold[i], SHMQ_POS_NONE);
		*index = i;
		return 0;
	}
	return shmq__fail(-EMFILE, "topic %s: all %u member slots are taken",
			  m->name, SHMQ_MAX_MEMBERS);
}

static void free_member_slot(struct shmq_map *m, uint32_t i)
{
	struct shmq_member_slot *s = shmq__member_slot(m, i);

	ck_pr_store_32(&s->group, UINT32_MAX);
	ck_pr_store_64(&s->disk_hold, SHMQ_POS_NONE);
	ck_pr_store_64(&s->owner.start_ticks, 0);
	ck_pr_fence_store();
	ck_pr_store_32(&s->owner.pid, 0);
}

/* Find group `name`, or create it with every cursor at head.  Under lock. */
static int find_or_create_group(struct shmq_map *m, const char *name,
				int mode, bool untethered, uint32_t *out,
				bool *created)
{
	uint32_t g, free_g = UINT32_MAX, p;

	for (g = 0; g < SHMQ_MAX_GROUPS; g++) {
		struct shmq_group_slot *gs = shmq__group(m, g);

		if (ck_pr_load_32(&gs->state) != SHMQ_GROUP_ACTIVE) {
			if (free_g == UINT32_MAX)
				free_g = g;
			continue;
		}
		if (strncmp(gs->name, name, sizeof(gs->name)) == 0) {
			uint32_t has = ck_pr_load_32(&gs->mode);

			if (has == 0)
				has = SHMQ_GROUP_SHARED;
			if (mode != SHMQ_GROUP_DEFAULT && (uint32_t)mode != has)
				return shmq__fail(-EINVAL, "group %s of topic %s is %s, not %s",
						  name, m->name,
						  has == SHMQ_GROUP_PARTITIONED ? "partitioned" : "shared",
						  mode == SHMQ_GROUP_PARTITIONED ? "partitioned" : "shared");
			/* Lossy or not is no detail a member may miss. */
			if ((bool)ck_pr_load_32(&gs->untethered) != untethered)
				return shmq__fail(-EINVAL, "group %s of topic %s is %s, not %s",
						  name, m->name,
						  untethered ? "tethered" : "untethered",
						  untethered ? "untethered" : "tethered");
			*out = g;
			*created = false;
			return 0;
		}
	}
	if (free_g == UINT32_MAX)
		return shmq__fail(-EMFILE, "topic %s: all %u group slots are taken",
				  m->name, SHMQ_MAX_GROUPS);
	g = free_g;
	{
		struct shmq_group_slot *gs = shmq__group(m, g);

		memset(gs->name, 0, sizeof(gs->name));
		strncpy(gs->name, name, SHMQ_NAME_MAX);
		gs->mode = mode == SHMQ_GROUP_PARTITIONED ? SHMQ_GROUP_PARTITIONED :
			SHMQ_GROUP_SHARED;
		gs->generation = 0;
		gs->untethered = untethered;
		gs->created_ns = shmq__now_ns();
		for (p = 0; p < m->geo.partitions; p++) {
			struct shmq_part_header *ph = shmq__part(m, p);

			ck_pr_store_64(&ph->cursor[g].next, SHMQ_POS_NONE);
			ck_pr_store_64(&ph->cursor[g].committed, 0);
			ck_pr_store_32(&ph->cursor[g].owner, SHMQ_OWNER_NONE);
			ck_pr_store_32(&ph->cursor[g].prev, SHMQ_OWNER_NONE);
			ck_pr_store_64(&ph->cursor[g].missed, 0);
			ck_pr_store_64(&ph->cursor[g].missed_reported, 0);
		}
		gs->parked = 0;
		gs->redelivered = 0;
		gs->dead_lettered = 0;
		gs->expired = 0;
		/* Name and cursors before the state that makes producers look. */
		ck_pr_fence_store();
		ck_pr_store_32(&gs->state, SHMQ_GROUP_ACTIVE);
		ck_pr_fence_memory();
	}
	*out = g;
	*created = true;
	return 0;
}

/* Does group g have a live member other than `self`? */
static bool group_has_live_member(struct shmq_map *m, uint32_t g, uint32_t self)
{
	uint32_t i;

	for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
		struct shmq_member_slot *s = shmq__member_slot(m, i);
		struct shmq_owner o;

		if (i == self || ck_pr_load_32(&s->group) != g ||
		    (ck_pr_load_32(&s->flags) & SHMQ_MEMBER_LEFT))
			continue;
		o.pid = ck_pr_load_32(&s->owner.pid);
		o.start_ticks = ck_pr_load_64(&s->owner.start_ticks);
		if (o.pid && shmq__owner_alive(&o))
			return true;
	}
	return false;
}

static int seek_one(struct shmq_consumer *c, uint32_t p, uint64_t offset);

/*
 * Place the group's cursors as opts ask; the group has no live member.  On a
 * spilling topic, earliest and committed offsets may lie in the spill files.
 */
static int place_group(struct shmq_consumer *c, int from, uint64_t offset,
		       bool created)
{
	struct shmq_map *m = c->map;
	uint32_t p;
	int rc;

	for (p = 0; p < m->geo.partitions; p++) {
		struct shmq_part_header *ph = shmq__part(m, p);
		uint64_t target;

		switch (from) {
		case SHMQ_FROM_EARLIEST:
			target = SHMQ_OFFSET_EARLIEST;
			break;
		case SHMQ_FROM_LATEST:
			target = SHMQ_OFFSET_LATEST;
			break;
		case SHMQ_FROM_OFFSET:
			target = offset;
			break;
		default:
			target = created ? SHMQ_OFFSET_EARLIEST :
				ck_pr_load_64(&ph->cursor[c->group].committed);
			break;
		}
		rc = seek_one(c, p, target);
		if (rc && from == SHMQ_FROM_COMMITTED)
			/* Committed offset no longer held: like Kafka's "earliest" reset. */
			rc = seek_one(c, p, SHMQ_OFFSET_EARLIEST);
		if (rc)
			return rc;
		/*
		 * A new group has committed nothing: its committed offset is
		 * where it starts, so that a rewind (group.c) or a restart
		 * never goes back before the group existed.
		 */
		if (created)
			ck_pr_store_64(&ph->cursor[c->group].committed,
				       ck_pr_load_64(&ph->cursor[c->group].next));
	}
	return 0;
}

int shmq_consumer_open(shmq_client_t *client, const char *topic,
		       const char *group, const struct shmq_consumer_opts *opts,
		       shmq_consumer_t **out)
{
	struct shmq_consumer *c;
	int from = SHMQ_FROM_COMMITTED, mode = SHMQ_GROUP_DEFAULT, rc;
	uint64_t offset = 0;
	bool created = false, locked = false;

	if (!client || !topic || !group || !out)
		return -EINVAL;
	shmq__clear_detail();
	if (!shmq__name_valid(group))
		return shmq__fail(-EINVAL, "bad group name \"%s\": use 1-%d characters of A-Z a-z 0-9 . _ -",
				  group, SHMQ_NAME_MAX);
	if (OPT_HAS(opts, from))
		from = opts->from;
	if (OPT_HAS(opts, offset))
		offset = opts->offset;
	if (from < SHMQ_FROM_COMMITTED || from > SHMQ_FROM_OFFSET)
		return shmq__fail(-EINVAL, "bad 'from' value %d", from);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->held = -1;
	c->member = UINT32_MAX;
	if (OPT_HAS(opts, flags))
		c->flags = opts->flags;
	if (OPT_HAS(opts, mode))
		mode = opts->mode;
	if (OPT_HAS(opts, on_rebalance_arg)) {
		c->on_rebalance = opts->on_rebalance;
		c->on_rebalance_arg = opts->on_rebalance_arg;
	}
	if (OPT_HAS(opts, auto_commit_ms) && opts->auto_commit_ms)
		c->auto_commit_ns = (uint64_t)opts->auto_commit_ms * 1000000;
	if (OPT_HAS(opts, dead_letter_topic) && opts->max_deliveries) {
		if (!opts->dead_letter_topic || !shmq__name_valid(opts->dead_letter_topic)) {
			rc = shmq__fail(-EINVAL, "max_deliveries needs a valid dead_letter_topic");
			goto fail;
		}
		c->max_deliveries = opts->max_deliveries;
		strncpy(c->dlq, opts->dead_letter_topic, SHMQ_NAME_MAX);
	}
	if (mode < SHMQ_GROUP_DEFAULT || mode > SHMQ_GROUP_PARTITIONED) {
		rc = shmq__fail(-EINVAL, "bad group mode %d", mode);
		goto fail;
	}
	c->client = client;
	rc = shmq__topic_get(client, topic, &c->map);
	if (rc)
		goto fail;
	c->broken = calloc(c->map->geo.partitions, 1);
	c->readers = calloc(c->map->geo.partitions, sizeof(*c->readers));
	c->bad_at = malloc(c->map->geo.partitions * sizeof(*c->bad_at));
	c->owned = calloc(c->map->geo.partitions, 1);
	c->assigned = calloc(c->map->geo.partitions, sizeof(*c->assigned));
	if (!c->broken || !c->readers || !c->bad_at || !c->owned || !c->assigned) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t p = 0; p < c->map->geo.partitions; p++)
		c->bad_at[p] = SHMQ_POS_NONE;
	rc = take_member_slot(c->map, &c->member);
	if (rc)
		goto fail;
	c->slot = shmq__member_slot(c->map, c->member);
	c->untethered = c->flags & SHMQ_CONSUMER_UNTETHERED;
	if (c->untethered) {
		c->copy = malloc(shmq__max_frame(c->map));
		if (!c->copy) {
			rc = -ENOMEM;
			goto fail;
		}
	}

	rc = shmq__seg_lock(c->map);
	if (rc)
		goto fail;
	locked = true;
	rc = find_or_create_group(c->map, group, mode, c->untethered, &c->group,
				  &created);
	if (rc)
		goto fail;
	if (created || !group_has_live_member(c->map, c->group, c->member)) {
		rc = place_group(c, from, offset, created);
		if (rc) {
			if (created)
				ck_pr_store_32(&shmq__group(c->map, c->group)->state,
					       SHMQ_GROUP_FREE);
			goto fail;
		}
	}
	c->partitioned = ck_pr_load_32(&shmq__group(c->map, c->group)->mode) ==
			 SHMQ_GROUP_PARTITIONED;
	/* At most once is simply no lease: shmqd then has nothing to park. */
	c->leases = !c->partitioned && !c->untethered &&
		    !(c->flags & SHMQ_CONSUMER_AT_MOST_ONCE);
	if (c->leases && OPT_HAS(opts, ack_timeout_ms))
		ck_pr_store_32(&c->slot->ack_timeout_ms, opts->ack_timeout_ms);
	/* Settings before the group that makes shmqd look at them. */
	ck_pr_fence_store();
	ck_pr_store_32(&c->slot->group, c->group);
	if (c->partitioned) {
		/* A new member: the group's partitions are dealt again. */
		shmq__group_rebalance(c->map, c->group, UINT32_MAX);
		c->gen_seen = ck_pr_load_32(&shmq__group(c->map, c->group)->generation) - 1;
	}
	shmq__seg_unlock(c->map);
	/* Spill files looked for and not found are no failure. */
	shmq__clear_detail();
	*out = c;
	return 0;
fail:
	if (locked)
		shmq__seg_unlock(c->map);
	if (c->member != UINT32_MAX)
		free_member_slot(c->map, c->member);
	free_readers(c);
	shmq__topic_put(client, c->map);
	free(c);
	return rc;
}

/* Let go of the hazards on what this member held: ring hold, disk hold. */
static void drop_holds(struct shmq_consumer *c)
{
	if (ck_pr_load_64(&c->slot->disk_hold) != SHMQ_POS_NONE)
		ck_pr_store_64(&c->slot->disk_hold, SHMQ_POS_NONE);
	if (c->held >= 0)
		shmq__ring_release(c->map, (uint32_t)c->held, c->member);
	c->held = -1;
}

/*
 * Done with the held message: acknowledge it (end its lease, lease.c) and
 * let go of it.  A message this member gave back and that waits parked
 * keeps its hazards: the next poll takes it back, or finds another member
 * took it.  Returns 0, SHMQ_EREVOKED (its ack timeout ran out and another
 * member has it), or -EINVAL (nothing held).
 */
static int release_held(struct shmq_consumer *c)
{
	bool holds = c->held >= 0 ||
		     ck_pr_load_64(&c->slot->disk_hold) != SHMQ_POS_NONE;
	int rc = 0;

	if (!holds)
		return -EINVAL;
	if (c->leases) {
		uint64_t l = ck_pr_load_64(&c->slot->lease);

		if (c->nacked && shmq__lease_state(l) == SHMQ_LEASE_PARKED)
			return 0;
		if (!c->nacked && shmq__lease_state(l) != SHMQ_LEASE_FREE)
			rc = shmq__lease_end(c->map, c->slot);
		else if (!c->nacked)
			rc = SHMQ_EREVOKED;
		c->nacked = false;
	}
	drop_holds(c);
	return rc;
}

void shmq_consumer_release(shmq_consumer_t *c)
{
	if (c)
		release_held(c);
}

int shmq_consumer_ack(shmq_consumer_t *c)
{
	int rc;

	if (!c)
		return -EINVAL;
	shmq__clear_detail();
	if (c->nacked)
		return shmq__fail(-EINVAL, "the held message was given back (nack)");
	rc = release_held(c);
	if (rc == SHMQ_EREVOKED)
		return shmq__fail(rc, "topic %s: the message ran past the ack timeout and went to another member",
				  c->map->name);
	return rc == -EINVAL ? shmq__fail(rc, "no message held") : rc;
}

void shmq_consumer_close(shmq_consumer_t *c)
{
	bool parked;

	if (!c)
		return;
	shmq_consumer_release(c);
	if (c->auto_commit_ns)
		shmq_consumer_commit(c);
	/*
	 * A message we gave back and nobody took yet keeps our slot and its
	 * hold; shmqd frees both once another member takes it (lease.c).
	 */
	parked = c->leases &&
		 shmq__lease_state(ck_pr_load_64(&c->slot->lease)) == SHMQ_LEASE_PARKED;
	if (parked) {
		ck_pr_store_32(&c->slot->flags, ck_pr_load_32(&c->slot->flags) | SHMQ_MEMBER_LEFT);
	} else if (c->partitioned && shmq__seg_lock(c->map) == 0) {
		/* Our partitions go to the others now (see group.c). */
		shmq__group_rebalance(c->map, c->group, c->member);
		free_member_slot(c->map, c->member);
		shmq__seg_unlock(c->map);
	} else {
		free_member_slot(c->map, c->member);
	}
	shmq_producer_close(c->dlq_producer);
	free_readers(c);
	shmq__topic_put(c->client, c->map);
	free(c);
}

/* The spill log reader of partition p, opened when first needed. */
static int reader_of(struct shmq_consumer *c, uint32_t p,
		     struct shmq_spill_reader **out)
{
	struct shmq_spill_reader_opts o;
	int rc;

	if (!c->readers[p]) {
		memset(&o, 0, sizeof(o));
		o.topic_id = c->map->geo.topic_id;
		o.max_frame = shmq__max_frame(c->map);
		rc = shmq__spill_reader_open(c->client->dir, c->map->name, p, &o,
					     &c->readers[p]);
		if (rc)
			return rc;
	}
	*out = c->readers[p];
	return 0;
}

/* What a take from the spill files asks of try_all. */
#define DISK_AGAIN 1	   /* the cursor moved: look at the partition again */
#define DISK_RETRY_TAKEN 2 /* taken, but not readable yet: read it again */

/*
 * The group's next frame in partition p, at x, is no longer in the ring:
 * read it from the partition's spill log and take it with a cursor CAS.
 * The view points into the reader's buffer, valid until the next read on
 * it, which is not before the next poll.
 */
static int disk_take(struct shmq_consumer *c, uint32_t p, uint64_t x,
		     bool taken, struct shmq_frame_view *v, struct shmq_msg *msg)
{
	struct shmq_map *m = c->map;
	struct shmq_spill_reader *r;
	uint64_t first, end, next;
	int rc;

	rc = reader_of(c, p, &r);
	if (rc == -ENOENT)
		goto gone_all;
	if (rc)
		return rc;
	if (c->bad_at[p] == x) {
		/* A damaged frame we reported: go on after the damage. */
		c->bad_at[p] = SHMQ_POS_NONE;
		rc = shmq__spill_skip(r, x, &next);
		if (rc == -EAGAIN)
			next = ck_pr_load_64(&shmq__part(m, p)->tail);
		else if (rc)
			return rc;
		shmq__ring_take_at(m, p, c->group, x, next);
		return DISK_AGAIN;
	}
	rc = shmq__spill_read(r, x, v);
	if (rc == 0 && v->gap) {
		/*
		 * Offsets every group had consumed when they were reused, so
		 * never spilled: this group came back to them (a seek, a
		 * rewind to its committed offset).  Say so, and go on.
		 */
		next = x + v->size;
		goto moved;
	}
	if (rc == 0) {
		if (!v->pad) {
			/*
			 * Our hold for the group's commits, before the take:
			 * a commit must not pass what we are processing.
			 */
			ck_pr_store_32(&c->slot->disk_part, p);
			ck_pr_store_64(&c->slot->disk_hold, x);
		}
		if (!taken && c->leases && !v->pad)
			shmq__lease_prepare(c->slot, p, x, 1);
		if (!taken && shmq__ring_take_at(m, p, c->group, x, x + v->size)) {
			if (c->leases && !v->pad)
				shmq__lease_end(m, c->slot);
			ck_pr_store_64(&c->slot->disk_hold, SHMQ_POS_NONE);
			return DISK_AGAIN; /* another member took it */
		}
		return v->pad ? DISK_AGAIN : 0;
	}
	/*
	 * Not in the files yet.  Below the tail that cannot last: the
	 * spiller flushes before it lets producers reuse anything.
	 */
	if (rc == -EAGAIN && taken && ++c->disk_waits < 100000)
		return DISK_RETRY_TAKEN;
	if (rc == -EAGAIN)
		return -EAGAIN;
	if (rc == SHMQ_ECORRUPT) {
		c->bad_at[p] = x;
		msg->partition = p;
		msg->offset = x;
		msg->next_offset = x;
		return shmq__fail(SHMQ_ECORRUPT, "topic %s partition %u: the spilled message at offset %llu fails its checksum; it is not delivered, and the next poll goes on after it",
				  m->name, p, (unsigned long long)x);
	}
	if (rc != SHMQ_EGONE)
		return rc;
	if (shmq__spill_reader_range(r, &first, &end) == 0 &&
	    (int64_t)(first - x) > 0) {
		next = first;
		goto moved;
	}
gone_all:
	next = ck_pr_load_64(&shmq__part(m, p)->tail);
moved:
	/* Retention (or reuse) removed what the group had not read: say so, go on. */
	if (shmq__ring_take_at(m, p, c->group, x, next))
		return DISK_AGAIN;
	msg->partition = p;
	msg->offset = x;
	msg->next_offset = next;
	return shmq__fail(SHMQ_EGONE, "topic %s partition %u: offsets %llu to %llu are no longer kept (retention, or consumed by every group and reused before this group came back to them)",
			  m->name, p, (unsigned long long)x, (unsigned long long)next);
}

/*
 * PARTITIONED: when the group's generation moved, learn which partitions
 * are ours now, let go of those handed to others (we hold nothing of them:
 * poll released our last message), and tell the application.
 */
static void refresh_assignment(struct shmq_consumer *c)
{
	struct shmq_map *m = c->map;
	uint32_t gen = ck_pr_load_32(&shmq__group(m, c->group)->generation);
	uint32_t p, n = 0;
	bool changed = false, locked = false;

	if (gen == c->gen_seen)
		return;
	ck_pr_fence_load(); /* the generation before the owners (group.c) */
	for (p = 0; p < m->geo.partitions; p++) {
		struct shmq_cursor *cur = &shmq__part(m, p)->cursor[c->group];
		uint32_t owner = ck_pr_load_32(&cur->owner);
		bool mine = (owner & ~SHMQ_OWNER_PENDING) == c->member;

		if ((owner & SHMQ_OWNER_PENDING) &&
		    ck_pr_load_32(&cur->prev) == c->member) {
			if (!locked && shmq__seg_lock(m) == 0)
				locked = true;
			if (locked)
				shmq__group_let_go(m, p, c->group, c->member);
			else
				gen--; /* could not let go: try again next poll */
		}
		if (mine != (bool)c->owned[p])
			changed = true;
		c->owned[p] = mine;
		if (mine)
			c->assigned[n++] = p;
	}
	if (locked)
		shmq__seg_unlock(m);
	c->nassigned = n;
	c->gen_seen = gen;
	if (changed && c->on_rebalance)
		c->on_rebalance(c->on_rebalance_arg, c->assigned, n);
}

int shmq_consumer_assignment(shmq_consumer_t *c, uint32_t *parts, uint32_t max)
{
	uint32_t p, n = 0;

	if (!c)
		return -EINVAL;
	for (p = 0; p < c->map->geo.partitions; p++) {
		if (c->partitioned && !c->owned[p])
			continue;
		if (n < max && parts)
			parts[n] = p;
		n++;
	}
	return (int)n;
}

/*
 * SHARED groups: take a message parked for delivery again (lease.c): our
 * own, given back by our last nack (we still hold its hazards), else any
 * other member's.  Our hazard on it is published before the CAS that takes
 * it, as for a take from the ring.  Returns 0 with *pp, *v, *count (the
 * delivery it will be) and *reason; SHMQ_TAKE_DISK_TAKEN (taken; below the
 * tail of a spilling topic: read it from disk); -EAGAIN (none);
 * SHMQ_ECORRUPT.
 */
static int take_parked(struct shmq_consumer *c, uint32_t *pp,
		       struct shmq_frame_view *v, uint32_t *count,
		       uint32_t *reason)
{
	struct shmq_map *m = c->map;
	bool spilling = m->geo.spill_mode != SHMQ_SPILL_OFF;
	struct shmq_lease_view lv;
	int tries;

	for (tries = 0; tries < SHMQ_MAX_MEMBERS; tries++) {
		bool back = c->nacked, below;
		uint64_t *hold;

		if (!back && !ck_pr_load_32(&shmq__group(m, c->group)->parked))
			return -EAGAIN;
		if (!shmq__lease_find_parked(m, c->group, c->member, &lv)) {
			if (!back)
				return -EAGAIN;
			lv.slot = UINT32_MAX; /* ours was taken */
		}
		if (back && lv.slot != c->member) {
			/* Another member took ours: let go of its hazards. */
			c->nacked = false;
			drop_holds(c);
			continue;
		}
		hold = &shmq__part(m, lv.part)->hold[c->member];
		below = spilling && (int64_t)(lv.pos - shmq__ring_tail(m, lv.part)) < 0;
		if (!back) {
			if (below) {
				ck_pr_store_32(&c->slot->disk_part, lv.part);
				ck_pr_store_64(&c->slot->disk_hold, lv.pos);
			} else {
				ck_pr_store_64(hold, lv.pos);
			}
			shmq__lease_prepare(c->slot, lv.part, lv.pos, lv.count + 1);
		}
		if (!shmq__lease_take_parked(m, c->group, &lv, back)) {
			if (!back) {
				shmq__lease_end(m, c->slot);
				ck_pr_store_64(below ? &c->slot->disk_hold : hold,
					       SHMQ_POS_NONE);
			}
			continue;
		}
		c->nacked = false;
		c->held = -1;
		*pp = lv.part;
		*count = lv.count + 1;
		*reason = lv.reason;
		v->pos = lv.pos;
		/*
		 * Below the tail (now, or already): read it from disk, our
		 * disk hold keeping the group's commits behind it meanwhile.
		 */
		if (spilling && (int64_t)(lv.pos - shmq__ring_tail(m, lv.part)) < 0) {
			ck_pr_store_32(&c->slot->disk_part, lv.part);
			ck_pr_store_64(&c->slot->disk_hold, lv.pos);
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			return SHMQ_TAKE_DISK_TAKEN;
		}
		ck_pr_store_64(hold, lv.pos);
		if (shmq__frame_decode(shmq__ring(m, lv.part), m->geo.ring_bytes, lv.pos,
				       shmq__max_frame(m), v) != SHMQ_FRAME_OK || v->pad) {
			shmq__lease_end(m, c->slot);
			ck_pr_store_64(hold, SHMQ_POS_NONE);
			return SHMQ_ECORRUPT;
		}
		return 0;
	}
	return -EAGAIN;
}

/*
 * Send the message in *v (partition p, delivered `count - 1` times) to the
 * member's dead-letter topic.  Returns 0 when it went there.
 */
static int dead_letter(struct shmq_consumer *c, uint32_t p,
		       const struct shmq_frame_view *v, uint32_t count,
		       uint32_t reason)
{
	struct shmq_dead_letter h;
	struct shmq_claim cl;
	size_t tlen = strlen(c->map->name);
	uint8_t *out;
	int rc;

	if (!c->dlq_producer &&
	    shmq_producer_open(c->client, c->dlq, NULL, &c->dlq_producer))
		return -ENOENT;
	h.magic = SHMQ_DEAD_LETTER_MAGIC;
	h.partition = p;
	h.offset = v->pos;
	h.timestamp_ns = v->timestamp_ns;
	h.delivery_count = count - 1;
	h.topic_len = (uint32_t)tlen;
	h.reason = reason;
	h.reserved = 0;
	rc = shmq_producer_claim(c->dlq_producer, SHMQ_PARTITION_ANY, v->key,
				 v->key_len, sizeof(h) + tlen + v->value_len, 0, &cl);
	if (rc < 0)
		return rc;
	out = cl.value;
	memcpy(out, &h, sizeof(h));
	memcpy(out + sizeof(h), c->map->name, tlen);
	memcpy(out + sizeof(h) + tlen, v->value, v->value_len);
	return shmq_producer_commit(c->dlq_producer);
}

int shmq_dead_letter_parse(const struct shmq_msg *msg, struct shmq_dead_letter *info,
			   const char **topic, const void **value, size_t *value_len)
{
	const uint8_t *b;

	if (!msg || !info || msg->value_len < sizeof(*info))
		return -EINVAL;
	b = msg->value;
	memcpy(info, b, sizeof(*info));
	if (info->magic != SHMQ_DEAD_LETTER_MAGIC ||
	    info->topic_len > msg->value_len - sizeof(*info))
		return -EINVAL;
	if (topic)
		*topic = (const char *)b + sizeof(*info);
	if (value)
		*value = b + sizeof(*info) + info->topic_len;
	if (value_len)
		*value_len = msg->value_len - sizeof(*info) - info->topic_len;
	return 0;
}

/*
 * Hand the message in *v (partition p, delivery number count, held by us:
 * in the ring, or from disk) to the application; or, past max_deliveries,
 * to the dead-letter topic.  Returns 0 (delivered), or 1 (dead-lettered and
 * acknowledged: look for another).
 */
static int hand_over(struct shmq_consumer *c, uint32_t p,
		     const struct shmq_frame_view *v, uint32_t count,
		     uint32_t reason, bool from_disk, struct shmq_msg *msg)
{
	struct shmq_group_slot *gs = shmq__group(c->map, c->group);

	c->held = from_disk || c->untethered ? -1 : (int)p;
	if (c->max_deliveries && count > c->max_deliveries &&
	    dead_letter(c, p, v, count, reason) == 0) {
		/* Given up on: not delivered; done with it. */
		release_held(c);
		ck_pr_inc_64(&gs->dead_lettered);
		return 1;
	}
	if (count > 1)
		ck_pr_inc_64(&gs->redelivered);
	c->held_count = count;
	c->disk_reads += from_disk;
	msg->delivery_count = count;
	msg->key = v->key;
	msg->key_len = v->key_len;
	msg->value = v->value;
	msg->value_len = v->value_len;
	msg->offset = v->pos;
	msg->next_offset = v->pos + v->size;
	msg->timestamp_ns = v->timestamp_ns;
	msg->partition = p;
	msg->producer_id = v->producer_id;
	msg->sequence = v->seq;
	return 0;
}

/* SHARED: a message parked for delivery again, if there is one. */
static int try_parked(struct shmq_consumer *c, struct shmq_msg *msg)
{
	struct shmq_frame_view v;
	uint32_t p, count, reason;
	int rc, tries;

	for (tries = 0; tries < 1024; tries++) {
		bool from_disk = false;

		rc = take_parked(c, &p, &v, &count, &reason);
		if (rc == -EAGAIN)
			return rc;
		if (rc == SHMQ_TAKE_DISK_TAKEN) {
			c->disk_waits = 0;
			do
				rc = disk_take(c, p, v.pos, true, &v, msg);
			while (rc == DISK_RETRY_TAKEN);
			if (rc) {
				/* Gone from disk too, or damaged: nothing to deliver. */
				shmq__lease_end(c->map, c->slot);
				drop_holds(c);
				if (rc == DISK_AGAIN)
					continue;
				return rc;
			}
			from_disk = true;
		} else if (rc) {
			msg->partition = p;
			return shmq__fail(rc, "topic %s partition %u: a message given back for delivery again fails its checks",
					  c->map->name, p);
		}
		if (hand_over(c, p, &v, count, reason, from_disk, msg) == 0)
			return 0;
	}
	return -EAGAIN;
}

/* One look at every partition, starting after the last one served. */
static int try_all(struct shmq_consumer *c, struct shmq_msg *msg)
{
	struct shmq_map *m = c->map;
	uint32_t n = m->geo.partitions, i;
	int rc;

	/* What take_parked looks at first, without the call for most polls. */
	if (c->leases &&
	    (c->nacked || ck_pr_load_32(&shmq__group(m, c->group)->parked))) {
		rc = try_parked(c, msg);
		if (rc != -EAGAIN)
			return rc;
	}
	for (i = 0; i < n; i++) {
		uint32_t p = c->rr + i < n ? c->rr + i : c->rr + i - n;
		struct shmq_frame_view v;
		bool from_disk = false;
		uint32_t count = 1;
		int tries = 0;

		if (c->broken[p])
			continue;
		if (c->partitioned) {
			/*
			 * Ours, with no hand-over pending?  Read right before
			 * the take: a rebalance we have not seen stops us here.
			 */
			if (!c->owned[p] ||
			    ck_pr_load_32(&shmq__part(m, p)->cursor[c->group].owner) != c->member)
				continue;
		}
		if (c->untethered) {
			uint64_t missed = 0;

			rc = shmq__ring_take_copy(m, p, c->group, c->copy, &v, &missed);
			if (rc == SHMQ_ELAPPED) {
				memset(msg, 0, offsetof(struct shmq_msg, missed));
				msg->offset = msg->next_offset = v.pos;
				msg->partition = p;
				msg->missed = missed;
				c->rr = p + 1 < n ? p + 1 : 0;
				return rc;
			}
			goto taken;
		}
again:
		from_disk = false;
		rc = shmq__ring_take(m, p, c->group, c->member,
				     c->leases ? c->slot : NULL, &v);
		if (rc == SHMQ_TAKE_DISK || rc == SHMQ_TAKE_DISK_TAKEN) {
			bool taken = rc == SHMQ_TAKE_DISK_TAKEN;
			uint64_t x = v.pos;

			c->disk_waits = 0;
			do
				rc = disk_take(c, p, x, taken, &v, msg);
			while (rc == DISK_RETRY_TAKEN);
			if (rc == DISK_AGAIN && ++tries < 1024)
				goto again;
			if (rc == DISK_AGAIN)
				continue;
			if (rc == SHMQ_ECORRUPT || rc == SHMQ_EGONE) {
				c->rr = p + 1 < n ? p + 1 : 0;
				return rc;
			}
			from_disk = true;
		}
taken:
		if (rc == -EAGAIN)
			continue;
		if (rc) {
			c->broken[p] = 1;
			msg->partition = p;
			return shmq__fail(rc, "topic %s partition %u failed a consistency check",
					  m->name, p);
		}
		/* PARTITIONED: the message our last nack gave back, again. */
		if (c->partitioned && p == c->nack_part && v.pos == c->nack_pos) {
			count = c->nack_count + 1;
			c->nack_pos = SHMQ_POS_NONE;
		}
		if (hand_over(c, p, &v, count, 0, from_disk, msg)) {
			if (++tries < 1024)
				goto again;
			continue;
		}
		c->rr = p + 1 < n ? p + 1 : 0;
		return 0;
	}
	return -EAGAIN;
}

int shmq_consumer_poll(shmq_consumer_t *c, struct shmq_msg *msg, int timeout_ms)
{
	struct shmq_seg_header *hdr;
	uint64_t start = 0, deadline = 0, now = 0;
	bool busy;
	uint32_t spins = 0;
	int rc;

	if (!c || !msg)
		return -EINVAL;
	shmq_consumer_release(c);
	if (c->auto_commit_ns) {
		now = shmq__mono_ns();
		if (now >= c->next_commit_ns) {
			shmq_consumer_commit(c);
			c->next_commit_ns = now + c->auto_commit_ns;
		}
	}
	hdr = c->map->hdr;
	busy = c->flags & SHMQ_CONSUMER_BUSY_POLL;
	for (;;) {
		if (c->partitioned)
			refresh_assignment(c);
		rc = try_all(c, msg);
		if (rc != -EAGAIN)
			return rc;
		if (timeout_ms == 0)
			return ck_pr_load_32(&hdr->deleted) ? SHMQ_EDELETED : -EAGAIN;
		/*
		 * The clock and the deleted flag are looked at every
		 * CLOCK_EVERY spins only: a busy poller should spend its time
		 * on the partitions, not on clock_gettime.
		 */
		if (spins++ % CLOCK_EVERY) {
			ck_pr_stall();
			continue;
		}
		if (ck_pr_load_32(&hdr->deleted))
			return SHMQ_EDELETED;
		if (busy && timeout_ms < 0)
			continue;
		now = shmq__mono_ns();
		if (!start) {
			start = now;
			deadline = timeout_ms < 0 ? UINT64_MAX :
				now + (uint64_t)timeout_ms * 1000000;
		}
		if (now >= deadline)
			return -EAGAIN;
		if (busy || now - start < SPIN_NS)
			continue;

		/* Sleep: register as a waiter, look once more, then wait. */
		{
			uint32_t seq = shmq__event_prepare(&hdr->data_seq,
							   &hdr->data_waiters);

			/* A rebalance signalled before the flag was set: see it. */
			if (c->partitioned)
				refresh_assignment(c);
			rc = try_all(c, msg);
			if (rc != -EAGAIN)
				return rc;
			if (!ck_pr_load_32(&hdr->deleted))
				shmq__futex_wait(&hdr->data_seq, seq,
						 deadline == UINT64_MAX ? UINT64_MAX : deadline - now);
			spins = 0;
		}
	}
}

int shmq_consumer_nack(shmq_consumer_t *c)
{
	struct shmq_map *m;
	uint64_t x, l;
	uint32_t p;
	int rc;

	if (!c)
		return -EINVAL;
	shmq__clear_detail();
	m = c->map;
	if (ck_pr_load_32(&m->hdr->deleted))
		return SHMQ_EDELETED;
	if (c->untethered)
		return -ENOTSUP; /* nothing is held, nothing is given back */
	if (c->nacked)
		return shmq__fail(-EINVAL, "the held message was given back already");
	if (c->held >= 0) {
		p = (uint32_t)c->held;
		x = ck_pr_load_64(&shmq__part(m, p)->hold[c->member]);
	} else {
		x = ck_pr_load_64(&c->slot->disk_hold);
		p = ck_pr_load_32(&c->slot->disk_part);
	}
	if (x == SHMQ_POS_NONE || p >= m->geo.partitions)
		return shmq__fail(-EINVAL, "no message held");
	if (c->partitioned) {
		/* Back to it: the owner's next poll delivers it again. */
		shmq_consumer_release(c);
		rc = seek_one(c, p, x);
		if (rc == 0) {
			c->nack_part = p;
			c->nack_pos = x;
			c->nack_count = c->held_count;
		}
		return rc;
	}
	if (!c->leases)
		return shmq__fail(-EINVAL, "an at-most-once member cannot give a message back");
	/*
	 * Parked, our hazards kept: it waits for any member, this one at its
	 * next poll included (lease.c).  Already parked by an expiry is as
	 * good; already taken by another member after one is too late.
	 */
	l = ck_pr_load_64(&c->slot->lease);
	if (shmq__lease_state(l) == SHMQ_LEASE_HELD &&
	    !shmq__lease_park(m, c->slot, l, SHMQ_PARKED_NACK))
		l = ck_pr_load_64(&c->slot->lease);
	if (shmq__lease_state(l) == SHMQ_LEASE_FREE) {
		drop_holds(c);
		return shmq__fail(SHMQ_EREVOKED, "topic %s: the message ran past the ack timeout and went to another member",
				  m->name);
	}
	c->nacked = true;
	return 0;
}

int shmq_consumer_commit(shmq_consumer_t *c)
{
	struct shmq_map *m;
	uint32_t p;

	if (!c)
		return -EINVAL;
	m = c->map;
	if (ck_pr_load_32(&m->hdr->deleted))
		return SHMQ_EDELETED;
	for (p = 0; p < m->geo.partitions; p++) {
		struct shmq_cursor *cur = &shmq__part(m, p)->cursor[c->group];
		uint64_t h;

		/*
		 * A partitioned member commits what it owns: another member's
		 * partition is its owner's to commit (or, if that one died,
		 * goes back to its committed offset: group.c).
		 */
		if (c->partitioned && !c->owned[p])
			continue;
		h = shmq__ring_horizon(m, p, c->group);

		for (;;) {
			uint64_t old = ck_pr_load_64(&cur->committed);

			if ((int64_t)(h - old) <= 0 ||
			    ck_pr_cas_64(&cur->committed, old, h))
				break;
		}
	}
	return 0;
}

/*
 * On a spilling topic, where is pos (or EARLIEST) on disk?  Returns 0 and
 * *where (an offset in the files below the tail), -ENOENT when the ring
 * should handle it, or an error of the reader.
 */
static int seek_on_disk(struct shmq_consumer *c, uint32_t p, uint64_t pos,
			uint64_t *where)
{
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	uint64_t first, end, tail = shmq__ring_tail(c->map, p);
	int rc;

	if (c->map->geo.spill_mode == SHMQ_SPILL_OFF || pos == SHMQ_OFFSET_LATEST ||
	    c->untethered)
		return -ENOENT; /* the ring's to handle */
	if (pos != SHMQ_OFFSET_EARLIEST && (int64_t)(pos - tail) >= 0)
		return -ENOENT;
	rc = reader_of(c, p, &r);
	if (rc)
		return rc == -ENOENT ? -ENOENT : rc;
	if (pos == SHMQ_OFFSET_EARLIEST) {
		int n;

		rc = shmq__spill_reader_range(r, &first, &end);
		if (rc || (int64_t)(first - tail) >= 0)
			return -ENOENT;
		/* The oldest message: past gaps (and pads) at the start. */
		for (n = 0; n < 1024 && (int64_t)(first - tail) < 0; n++) {
			if (shmq__spill_read(r, first, &v) || !v.pad)
				break;
			first += v.size;
		}
		if ((int64_t)(first - tail) >= 0)
			return -ENOENT;
		*where = first;
		return 0;
	}
	rc = shmq__spill_read(r, pos, &v);
	if (rc == -EAGAIN)
		return -ENOENT;
	if (rc)
		return rc;
	if (v.gap)
		return shmq__fail(SHMQ_EGONE, "offset %llu of partition %u was consumed by every group and reused before it had to be spilled",
				  (unsigned long long)pos, p);
	*where = pos;
	return 0;
}

static int seek_one(struct shmq_consumer *c, uint32_t p, uint64_t offset)
{
	uint64_t where = 0;
	int rc;

	c->broken[p] = 0;
	c->bad_at[p] = SHMQ_POS_NONE;
	rc = seek_on_disk(c, p, offset, &where);
	if (rc == 0)
		return shmq__ring_seek_disk(c->map, p, c->group, where);
	if (rc != -ENOENT)
		return rc;
	return shmq__ring_seek(c->map, p, c->group, offset);
}

int shmq_consumer_seek(shmq_consumer_t *c, uint32_t partition, uint64_t offset)
{
	if (!c)
		return -EINVAL;
	shmq__clear_detail();
	if (partition >= c->map->geo.partitions)
		return shmq__fail(-EINVAL, "partition %u out of range (topic has %u)",
				  partition, c->map->geo.partitions);
	if (ck_pr_load_32(&c->map->hdr->deleted))
		return SHMQ_EDELETED;
	shmq_consumer_release(c);
	return seek_one(c, partition, offset);
}

static int seek_time_one(struct shmq_consumer *c, uint32_t p, uint64_t ts)
{
	struct shmq_spill_reader *r;
	uint64_t from = 0, pos;
	int rc;

	if (c->map->geo.spill_mode != SHMQ_SPILL_OFF && !c->untethered &&
	    (rc = reader_of(c, p, &r)) != -ENOENT) {
		if (rc)
			return rc;
		rc = shmq__spill_seek_time(r, ts, &pos);
		if (rc == 0 && (int64_t)(pos - shmq__ring_tail(c->map, p)) < 0)
			return shmq__ring_seek_disk(c->map, p, c->group, pos);
		if (rc == 0 || rc == -EAGAIN)
			from = pos; /* the ring goes on from there */
		else if (rc != -ENOENT)
			return rc;
	}
	rc = shmq__ring_find_time(c->map, p, from, ts, &pos);
	if (rc)
		return rc;
	return shmq__ring_seek(c->map, p, c->group, pos);
}

int shmq_consumer_seek_time(shmq_consumer_t *c, uint32_t partition,
			    uint64_t timestamp_ns)
{
	uint32_t p;
	int rc;

	if (!c)
		return -EINVAL;
	shmq__clear_detail();
	if (partition != SHMQ_ALL_PARTITIONS && partition >= c->map->geo.partitions)
		return shmq__fail(-EINVAL, "partition %u out of range (topic has %u)",
				  partition, c->map->geo.partitions);
	if (ck_pr_load_32(&c->map->hdr->deleted))
		return SHMQ_EDELETED;
	shmq_consumer_release(c);
	for (p = 0; p < c->map->geo.partitions; p++) {
		if (partition != SHMQ_ALL_PARTITIONS && p != partition)
			continue;
		c->broken[p] = 0;
		c->bad_at[p] = SHMQ_POS_NONE;
		rc = seek_time_one(c, p, timestamp_ns);
		if (rc)
			return rc;
	}
	return 0;
}

int shmq_group_delete(shmq_client_t *client, const char *topic, const char *group)
{
	struct shmq_map *mp;
	uint32_t g, i;
	int rc;

	if (!client || !topic || !group)
		return -EINVAL;
	shmq__clear_detail();
	if (!shmq__name_valid(group))
		return shmq__fail(-EINVAL, "bad group name \"%s\"", group);
	rc = shmq__topic_get(client, topic, &mp);
	if (rc)
		return rc;
	rc = shmq__seg_lock(mp);
	if (rc)
		goto out;
	for (g = 0; g < SHMQ_MAX_GROUPS; g++) {
		struct shmq_group_slot *gs = shmq__group(mp, g);

		if (ck_pr_load_32(&gs->state) == SHMQ_GROUP_ACTIVE &&
		    strncmp(gs->name, group, sizeof(gs->name)) == 0)
			break;
	}
	if (g == SHMQ_MAX_GROUPS) {
		rc = shmq__fail(-ENOENT, "topic %s has no group \"%s\"", topic, group);
	} else if (group_has_live_member(mp, g, UINT32_MAX)) {
		rc = shmq__fail(-EBUSY, "group \"%s\" of topic %s has a live member", group, topic);
	} else {
		/* Dead members' slots go with the group, holds first. */
		for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
			struct shmq_member_slot *s = shmq__member_slot(mp, i);
			uint32_t p;

			if (!ck_pr_load_32(&s->owner.pid) || ck_pr_load_32(&s->group) != g)
				continue;
			for (p = 0; p < mp->geo.partitions; p++)
				ck_pr_store_64(&shmq__part(mp, p)->hold[i], SHMQ_POS_NONE);
			free_member_slot(mp, i);
		}
		ck_pr_store_32(&shmq__group(mp, g)->state, SHMQ_GROUP_FREE);
		/* Producers blocked on this group's position may go on. */
		ck_pr_inc_32(&mp->hdr->space_seq);
		shmq__futex_wake_all(&mp->hdr->space_seq);
	}
	shmq__seg_unlock(mp);
out:
	shmq__topic_put(client, mp);
	return rc;
}
