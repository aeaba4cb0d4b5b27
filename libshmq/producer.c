/*
 * producer.c - producer handles: slots, partition choice, send and claim.
 *
 * A producer handle owns one slot of the topic's producer table for its
 * lifetime: the slot names the process (pid and start time) and records
 * the claim in progress, which is what lets shmqd pad over the claim of a
 * producer that died (reap.c).  The ring protocol itself is in ring.c.
 *
 * A handle is used by one thread at a time; any number of handles, in any
 * number of processes, may publish into the same partition at once.
 *
 * A handle opened with an identity (idempotent.c) publishes only with
 * shmq_producer_send_seq(): its frames carry the producer extension, and
 * each send records its attempt in the identity's record around the
 * commit.  Handles without one take none of those branches' costs but a
 * test of a flag.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "atomics.h"

#include "shmq_int.h"

struct shmq_producer {
	shmq_client_t *client;
	struct shmq_map *map;
	uint32_t slot_index;
	struct shmq_producer_slot *slot;
	unsigned flags;
	uint32_t rr;	     /* next partition for keyless messages */
	uint64_t *limit;     /* per partition: cached furthest claim end */
	uint64_t *written;   /* per partition: end of our last commit, 0 = none */
	bool claimed;
	struct shmq_ring_claim claim;
	/* The claimed frame's header fields, written by write_header(). */
	uint16_t key_len;
	uint16_t frame_flags;
	uint32_t value_len;
	/* With an identity (idempotent.c), else ident_id == 0: */
	uint64_t ident_id;   /* producer id carried by its frames */
	uint32_t ident;	     /* its slot */
	uint64_t *last_seq;  /* per partition: highest sequence stored */
	struct shmq_fastclock clock; /* message timestamps (clock.c) */
};

/* Take a free slot: CAS the pid in, then say who we are. */
static int take_slot(struct shmq_map *m, uint32_t *index)
{
	struct shmq_owner self;
	uint32_t i;

	shmq__owner_self(&self);
	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++) {
		struct shmq_producer_slot *s = shmq__producer_slot(m, i);

		if (ck_pr_load_32(&s->owner.pid) != 0 ||
		    !ck_pr_cas_32(&s->owner.pid, 0, self.pid))
			continue;
		ck_pr_store_64(&s->owner.start_ticks, self.start_ticks);
		ck_pr_store_64(&s->claim_pos, SHMQ_POS_NONE);
		ck_pr_store_32(&s->ident, 0);
		*index = i;
		return 0;
	}
	return shmq__fail(-EMFILE, "topic %s: all %u producer slots are taken",
			  m->name, SHMQ_MAX_PRODUCERS);
}

int shmq_producer_open(shmq_client_t *client, const char *topic,
		       const struct shmq_producer_opts *opts,
		       shmq_producer_t **out)
{
	struct shmq_producer *p;
	int rc;

	if (!client || !topic || !out)
		return -EINVAL;
	shmq__clear_detail();
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (OPT_HAS(opts, flags))
		p->flags = opts->flags;
	p->client = client;
	shmq__fastclock_init(&p->clock);
	rc = shmq__topic_get(client, topic, &p->map);
	if (rc)
		goto fail;
	p->limit = calloc(p->map->geo.partitions, sizeof(*p->limit));
	p->written = calloc(p->map->geo.partitions, sizeof(*p->written));
	if (!p->limit || !p->written) {
		rc = -ENOMEM;
		goto fail;
	}
	if (OPT_HAS(opts, idempotent_id) && opts->idempotent_id) {
		uint32_t i;

		p->last_seq = calloc(p->map->geo.partitions, sizeof(*p->last_seq));
		if (!p->last_seq) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = shmq__ident_open(p->map, opts->idempotent_id, &p->ident,
				      &p->ident_id);
		if (rc)
			goto fail;
		for (i = 0; i < p->map->geo.partitions; i++)
			p->last_seq[i] = shmq__ident_last(p->map, i, p->ident);
	}
	rc = take_slot(p->map, &p->slot_index);
	if (rc)
		goto fail;
	p->slot = shmq__producer_slot(p->map, p->slot_index);
	/* For the reaper, before any claim: whose attempts our claims are. */
	if (p->ident_id)
		ck_pr_store_32(&p->slot->ident, p->ident + 1);
	*out = p;
	return 0;
fail:
	if (p->ident_id)
		shmq__ident_close(p->map, p->ident);
	free(p->limit);
	free(p->written);
	free(p->last_seq);
	shmq__topic_put(client, p->map);
	free(p);
	return rc;
}

void shmq_producer_close(shmq_producer_t *p)
{
	struct shmq_producer_slot *s;

	if (!p)
		return;
	if (p->claimed)
		shmq_producer_abort(p);
	s = p->slot;
	ck_pr_store_64(&s->claim_pos, SHMQ_POS_NONE);
	ck_pr_store_64(&s->owner.start_ticks, 0);
	ck_pr_fence_store();
	ck_pr_store_32(&s->owner.pid, 0);
	if (p->ident_id)
		shmq__ident_close(p->map, p->ident);
	free(p->limit);
	free(p->written);
	free(p->last_seq);
	shmq__topic_put(p->client, p->map);
	free(p);
}

/*
 * The claimed frame's header, but the seal: shmq_send writes it after the
 * value, right before the seal CAS, so that the frame's first line, on which
 * an idle consumer spins (ring.c, take), goes to this CPU once, for the
 * stores that publish the message, rather than once for the header and
 * again for the seal.  The timestamp is taken then too: publication is the
 * seal CAS.  Nothing reads these fields before the seal says committed.
 */
/* A frame's header but its seal (the ring's CRC is 0: spill.c computes it). */
static inline void fill_header(struct shmq_frame *f, uint32_t size, uint16_t key_len,
			       uint16_t flags, uint32_t value_len, uint64_t ts)
{
	f->size = size;
	f->key_len = key_len;
	f->flags = flags;
	f->value_len = value_len;
	f->crc = 0;
	f->timestamp_ns = ts;
}

static void write_header(struct shmq_producer *p)
{
	struct shmq_frame *f = (struct shmq_frame *)(shmq__ring(p->map, p->claim.part) +
						     (p->claim.frame_pos & p->map->mask));

	fill_header(f, p->claim.frame_len, p->key_len, p->frame_flags, p->value_len,
		    shmq__fastclock_ns(&p->clock));
}

/* Commit the claim and remember how far this handle wrote, for flush. */
static int commit(struct shmq_producer *p)
{
	int rc = shmq__ring_commit(p->map, p->slot, &p->claim, false);

	if (rc == 0)
		p->written[p->claim.part] = p->claim.frame_pos + p->claim.frame_len;
	return rc;
}

static int choose_partition(struct shmq_producer *p, int partition,
			    const void *key, size_t key_len)
{
	uint32_t n = p->map->geo.partitions;

	if (partition >= 0)
		return (uint32_t)partition < n ? partition : -EINVAL;
	if (partition != SHMQ_PARTITION_ANY)
		return -EINVAL;
	if (key_len)
		return (int)shmq_key_partition(key, key_len, n);
	return (int)(p->rr++ % n);
}

/*
 * Claim room for a frame and fill its extension (seq != 0: a producer with
 * an identity) and key; write_header() writes the header later.  *value is
 * where the value goes.
 */
static int claim_frame(struct shmq_producer *p, int partition, uint64_t seq,
		       const void *key, size_t key_len, size_t value_len,
		       int timeout_ms, uint8_t **value)
{
	struct shmq_map *m = p->map;
	uint32_t ext = seq ? SHMQ_FRAME_EXT : 0;
	struct shmq_frame *f;
	int part, rc;

	if (p->claimed)
		return -EBUSY;
	/* The extension counts against max_message: frames stay in bounds. */
	if (key_len > SHMQ_KEY_MAX || value_len > m->geo.max_message ||
	    key_len + value_len + ext > m->geo.max_message)
		return SHMQ_ETOOBIG;
	if ((key_len && !key))
		return -EINVAL;
	part = choose_partition(p, partition, key, key_len);
	if (part < 0)
		return part;
	if (seq && seq <= p->last_seq[part])
		return SHMQ_EDUPLICATE;
	if (ck_pr_load_32(&m->hdr->deleted))
		return SHMQ_EDELETED;
	rc = shmq__ring_claim(m, p->slot, (uint32_t)part,
			      shmq__frame_bytes(ext + key_len, value_len), timeout_ms,
			      p->flags & SHMQ_PRODUCER_BUSY_WAIT,
			      &p->limit[part], &p->claim);
	if (rc)
		return rc;
	f = (struct shmq_frame *)(shmq__ring(m, (uint32_t)part) +
				  (p->claim.frame_pos & m->mask));
	p->key_len = (uint16_t)key_len;
	p->frame_flags = 0;
	p->value_len = (uint32_t)value_len;
	if (ext) {
		struct shmq_frame_ext e = { p->ident_id, seq };

		p->frame_flags = SHMQ_FRAME_PRODUCER;
		memcpy((uint8_t *)f + SHMQ_FRAME_HEADER, &e, sizeof(e));
	}
	if (key_len)
		memcpy((uint8_t *)f + SHMQ_FRAME_HEADER + ext, key, key_len);
	p->claimed = true;
	*value = (uint8_t *)f + SHMQ_FRAME_HEADER + ext + key_len;
	return part;
}

int shmq_send(shmq_producer_t *p, int partition, const void *key,
	      size_t key_len, const void *value, size_t value_len,
	      int timeout_ms, uint64_t *offset)
{
	uint8_t *dst;
	int part, rc;

	if (!p || (value_len && !value) || p->ident_id)
		return -EINVAL;
	part = claim_frame(p, partition, 0, key, key_len, value_len, timeout_ms, &dst);
	if (part < 0)
		return part;
	if (value_len)
		shmq__copy(dst, value, value_len);
	write_header(p);
	p->claimed = false;
	rc = commit(p);
	if (rc)
		return rc;
	if (offset)
		*offset = p->claim.frame_pos;
	return part;
}

/* The most frames one claim of a batch covers (ring.c bounds its bytes). */
#define BATCH_CLAIM_MAX 64u

void (*shmq__batch_hook)(uint32_t claim);

/*
 * A batch goes out in claims of up to BATCH_CLAIM_MAX frames: each is one
 * CAS on head, one clock read, then the frames written back to back, every
 * seal but the first stored, and one commit CAS on the first seal, which
 * publishes them all (ring.c, "Batches").
 */
int shmq_send_batch(shmq_producer_t *p, int partition,
		    const struct shmq_batch_msg *msgs, size_t n,
		    int timeout_ms, uint64_t *offsets)
{
	uint32_t sizes[BATCH_CLAIM_MAX], part, claims = 0;
	struct shmq_map *m;
	uint8_t *ring;
	size_t done = 0, i;
	int rc = 0;

	if (!p || (n && !msgs) || n > INT_MAX || p->ident_id)
		return -EINVAL;
	if (p->claimed)
		return -EBUSY;
	m = p->map;
	if (partition < 0 || (uint32_t)partition >= m->geo.partitions)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		const struct shmq_batch_msg *x = &msgs[i];

		if (x->key_len > SHMQ_KEY_MAX || x->value_len > m->geo.max_message ||
		    x->key_len + x->value_len > m->geo.max_message)
			return SHMQ_ETOOBIG;
		if ((x->key_len && !x->key) || (x->value_len && !x->value))
			return -EINVAL;
	}
	if (ck_pr_load_32(&m->hdr->deleted))
		return SHMQ_EDELETED;
	part = (uint32_t)partition;
	ring = shmq__ring(m, part);
	while (done < n) {
		uint32_t want = n - done < BATCH_CLAIM_MAX ? (uint32_t)(n - done) : BATCH_CLAIM_MAX;
		uint32_t taken, k;
		uint64_t pos, ts;

		for (k = 0; k < want; k++)
			sizes[k] = shmq__frame_bytes(msgs[done + k].key_len,
						     msgs[done + k].value_len);
		rc = shmq__ring_claim_batch(m, p->slot, part, sizes, want, timeout_ms,
					    p->flags & SHMQ_PRODUCER_BUSY_WAIT,
					    &p->limit[part], &p->claim, &taken);
		if (rc)
			break;
		ts = shmq__fastclock_ns(&p->clock);
		pos = p->claim.frame_pos;
		for (k = 0; k < taken; k++) {
			const struct shmq_batch_msg *x = &msgs[done + k];
			struct shmq_frame *f = (struct shmq_frame *)(ring + (pos & m->mask));
			uint8_t *d = (uint8_t *)f + SHMQ_FRAME_HEADER;

			if (x->key_len)
				memcpy(d, x->key, x->key_len);
			if (x->value_len)
				shmq__copy(d + x->key_len, x->value, x->value_len);
			fill_header(f, sizes[k], (uint16_t)x->key_len, 0,
				    (uint32_t)x->value_len, ts);
			if (offsets)
				offsets[done + k] = pos;
			pos += sizes[k];
		}
		shmq__ring_seal_rest(m, &p->claim, sizes, taken);
		if (__builtin_expect(shmq__batch_hook != NULL, 0))
			shmq__batch_hook(claims);
		claims++;
		rc = commit(p);
		if (rc)
			break;
		done += taken;
	}
	return done ? (int)done : rc;
}

int shmq_producer_claim(shmq_producer_t *p, int partition, const void *key,
			size_t key_len, size_t value_len, int timeout_ms,
			struct shmq_claim *claim)
{
	uint8_t *dst;
	int part;

	if (!p || !claim || p->ident_id)
		return -EINVAL;
	part = claim_frame(p, partition, 0, key, key_len, value_len, timeout_ms, &dst);
	if (part < 0)
		return part;
	/* The application writes the value for as long as it likes: not there. */
	write_header(p);
	claim->value = dst;
	claim->value_len = value_len;
	claim->partition = (uint32_t)part;
	claim->offset = p->claim.frame_pos;
	return part;
}

int shmq_producer_commit(shmq_producer_t *p)
{
	if (!p || !p->claimed)
		return -EINVAL;
	p->claimed = false;
	return commit(p);
}

/* Is every partition we wrote to synced past our last commit? */
static int flushed(struct shmq_producer *p)
{
	struct shmq_map *m = p->map;
	uint32_t i;

	for (i = 0; i < m->geo.partitions; i++) {
		struct shmq_part_header *ph = shmq__part(m, i);

		if (!p->written[i])
			continue;
		if ((int64_t)(ck_pr_load_64(&ph->synced) - p->written[i]) >= 0)
			continue;
		if (ck_pr_load_32((uint32_t *)&ph->spill_error))
			return shmq__fail(-EIO, "topic %s partition %u: shmqd cannot write its spill file (%s)",
					  m->name, i, shmq_strerror((int)ck_pr_load_32((uint32_t *)&ph->spill_error)));
		return -EAGAIN;
	}
	return 0;
}

int shmq_producer_flush(shmq_producer_t *p, int timeout_ms)
{
	struct shmq_seg_header *hdr;
	uint64_t deadline = 0, now;
	int rc;

	if (!p)
		return -EINVAL;
	shmq__clear_detail();
	if (p->map->geo.spill_mode != SHMQ_SPILL_ALWAYS)
		return shmq__fail(-ENOTSUP, "topic %s does not journal (its spill mode is not always)",
				  p->map->name);
	hdr = p->map->hdr;
	for (;;) {
		uint32_t seq = shmq__event_prepare(&hdr->sync_seq, &hdr->sync_waiters);

		/*
		 * While shmqd reports a disk error, wait on: it retries, and
		 * the error is the answer only if it outlasts the timeout.
		 */
		rc = flushed(p);
		if (rc != -EAGAIN && rc != -EIO)
			return rc;
		if (ck_pr_load_32(&hdr->deleted))
			return SHMQ_EDELETED;
		if (timeout_ms == 0)
			return rc;
		now = shmq__mono_ns();
		if (!deadline)
			deadline = timeout_ms < 0 ? UINT64_MAX :
				now + (uint64_t)timeout_ms * 1000000;
		if (now >= deadline)
			return rc;
		/* In slices: recovery after an error is not signalled. */
		shmq__futex_wait(&hdr->sync_seq, seq,
				 rc == -EIO ? 50000000u :
				 deadline == UINT64_MAX ? UINT64_MAX : deadline - now);
	}
}

int shmq_producer_abort(shmq_producer_t *p)
{
	if (!p || !p->claimed)
		return -EINVAL;
	p->claimed = false;
	shmq__ring_commit(p->map, p->slot, &p->claim, true);
	return 0;
}

int shmq_producer_send_seq(shmq_producer_t *p, int partition, uint64_t seq,
			   const void *key, size_t key_len, const void *value,
			   size_t value_len, int timeout_ms, uint64_t *offset)
{
	uint8_t *dst;
	uint32_t part;
	int rc;

	if (!p || !p->ident_id || (value_len && !value) || seq == 0 ||
	    seq > SHMQ_SEQ_MAX || (partition == SHMQ_PARTITION_ANY && !key_len))
		return -EINVAL;
	rc = claim_frame(p, partition, seq, key, key_len, value_len, timeout_ms, &dst);
	if (rc < 0)
		return rc;
	part = (uint32_t)rc;
	if (value_len)
		shmq__copy(dst, value, value_len);
	write_header(p);
	p->claimed = false;
	/* The attempt is recorded before the commit can publish it. */
	shmq__ident_try(p->map, part, p->ident, seq, p->claim.frame_pos);
	if (__builtin_expect(shmq__ident_crash_point != 0, 0))
		shmq__ident_crash(SHMQ_CRASH_TRIED);
	rc = commit(p);
	if (rc) {
		shmq__ident_not_stored(p->map, part, p->ident, seq);
		return rc;
	}
	if (__builtin_expect(shmq__ident_crash_point != 0, 0))
		shmq__ident_crash(SHMQ_CRASH_COMMITTED);
	shmq__ident_stored(p->map, part, p->ident, seq, p->claim.frame_pos);
	p->last_seq[part] = seq;
	if (offset)
		*offset = p->claim.frame_pos;
	return (int)part;
}

int shmq_producer_last_seq(shmq_producer_t *p, uint32_t partition, uint64_t *seq)
{
	if (!p || !p->ident_id || !seq || partition >= p->map->geo.partitions)
		return -EINVAL;
	*seq = p->last_seq[partition];
	return 0;
}

uint64_t shmq_producer_id(const shmq_producer_t *p)
{
	return p ? p->ident_id : 0;
}
