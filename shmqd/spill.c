/*
 * spill.c - the daemon's spiller: rings to disk, group checkpoints,
 * retention, and the log's side of recovery.
 *
 * Overview
 * --------
 * For every online topic whose spill mode is not off, each pass of the
 * event loop looks at every partition:
 *
 *   overflow  when more than half the ring holds frames that some group has
 *             not consumed and that are not on disk yet, write the oldest of
 *             them (up to three quarters of a ring behind head, or up to
 *             head while producers wait for room) to the partition's log;
 *   always    write every committed frame, then fdatasync: a journal.
 *
 * Writing a batch: publish spill_hold (a hazard: producers do not reuse
 * what we are copying), fence, re-read the tail; append the frames (the
 * spill module copies and checksums them); flush, so that readers in other
 * processes find them in the file; only then move `spilled` forward, which
 * lets producers reuse the ring bytes even though a lagging group has not
 * read them: that group's members now read them from disk (ring.c, take).
 * In always mode the batch is also synced and `synced` moves forward, which
 * is what durable acknowledgements (shmq_producer_flush) wait for.
 *
 * When a log rolls to a new segment (every 64 MiB), the old one's
 * fdatasync runs in the syncer thread (d->syncer, libshmq/spill.c,
 * "Rolling without stopping"), not in this loop: producers waiting for
 * room would wait for the disk otherwise.  The loop waits for it only at
 * the next roll if it is still running, and a journal's sync waits for it
 * before it moves `synced`.
 *
 * Group checkpoints: once a second each topic's committed offsets are
 * snapshot here (loads of the cursors) and, if they changed, handed to the
 * checkpointer thread (d->ckpt, libshmq/checkpointer.c), which writes and
 * fsyncs them; a snapshot still waiting is replaced by the newer one.
 * The loop collects the results at each pass and logs failures.  It
 * waits for the thread only when it must own the file: at a topic's
 * release (the directory may be removed next) and at shutdown, where it
 * writes the last checkpoint itself (shmqd_spill_checkpoint_all).
 *
 * The log is contiguous: offsets that every group consumed before they had
 * to go to disk are appended as padding, so the disk log and the ring agree
 * on every offset, and a reader walks over them like over ring padding.
 *
 * Failure and recovery
 * --------------------
 * - A write that fails with ENOSPC keeps the frames in the ring: `spilled`
 *   does not move, producers fall back to waiting, and the pass is retried
 *   (every SPILL_RETRY_MS).  Any other write error, and every failed sync,
 *   fails the log for good (the spill module does not trust the file
 *   again): it is closed and reopened, which re-validates the file.
 * - A failed fdatasync of a rolled segment, in the syncer thread, is
 *   collected by the next pass (shmq__spill_poll, or the next write) and
 *   fails the log like any failed sync: reported, closed, reopened.
 * - The error of the last failed pass is kept in the partition header
 *   (spill_error) for stat and for shmq_producer_flush, and logged once.
 * - shmqd killed in the middle: what was flushed is in the files (the page
 *   cache survives a process); `spilled` was published only after it, so on
 *   restart the log's end is at or after `spilled`, and the next pass moves
 *   `spilled` up to the log's end.
 * - Its spill_hold (the hazard of the pass it was in) is left published
 *   too, and producers never reuse the ring past it.  Nothing else would
 *   withdraw it: in overflow mode a pass stores it only when more than half
 *   a ring lies above max(spilled, the slowest group), and producers stop
 *   a ring above the stale hazard.  If by then less than half a ring lies
 *   above that, they wait for good: as when the pass was killed after its
 *   flush and recovery moved `spilled` to the log's end, possibly the
 *   head, or when the lagging groups caught up meanwhile.  So adoption
 *   withdraws it (shmqd_spill_adopt) before the topic comes online: only a
 *   shmqd spills, one at a time (its lock, main.c), so nobody is copying
 *   from there any more.
 * - Host restart (segment gone, disk kept): the partitions are recreated
 *   starting at the end of their logs, so offsets continue, and the groups
 *   are recreated from the last checkpoint of their committed offsets; they
 *   replay from disk what they had not committed.
 * - A failed checkpoint write (ENOSPC, EIO, in the checkpointer thread) is
 *   logged when the loop collects it, once per run of failures, and the
 *   next snapshot is handed over even if unchanged; the previous
 *   checkpoint stays readable (checkpoint.c).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ck_pr.h>

#include "shmqd.h"
#include "spill.h"

/* Most bytes one partition writes in one pass, so that a pass stays short. */
#define SPILL_PASS_BYTES (8u << 20)
/* How soon a partition whose log failed is tried again. */
#define SPILL_RETRY_MS 1000
/* How often group offsets are checkpointed and retention applied. */
#define CHECKPOINT_MS 1000
#define RETAIN_MS     1000

static bool pos_before(uint64_t a, uint64_t b)
{
	return (int64_t)(a - b) < 0;
}

static bool spilling(const struct shmqd_topic *t)
{
	return t->online && t->map.geo.spill_mode != SHMQ_SPILL_OFF;
}

static void set_error(struct shmqd_topic *t, uint32_t p, int err)
{
	struct shmq_part_header *ph = shmq__part(&t->map, p);
	char why[SHMQD_MSG_MAX];

	if (err && t->spill[p].last_err != err)
		shmqd_err("topic %s partition %u: spilling failed: %s; producers wait for room until it works again",
			  t->name, p, shmqd_liberr(err, why, sizeof(why)));
	else if (!err && t->spill[p].last_err)
		shmqd_log("topic %s partition %u: spilling works again", t->name, p);
	t->spill[p].last_err = err;
	ck_pr_store_32((uint32_t *)&ph->spill_error, (uint32_t)err);
	if (err)
		/* Waiters for durability learn of it (they return -EIO). */
		shmq__event_signal(&t->map.hdr->sync_seq, &t->map.hdr->sync_waiters);
}

static void log_recovery(struct shmqd_topic *t, uint32_t p,
			 const struct shmq_spill_recovery *rep)
{
	if (rep->cuts)
		shmqd_err("topic %s partition %u: cut a torn or corrupt tail at offset %llu (%llu bytes) from its spill log",
			  t->name, p, (unsigned long long)rep->cut_offset,
			  (unsigned long long)rep->cut_bytes);
	if (rep->corrupt)
		shmqd_err("topic %s partition %u: %u damaged region(s) in its spill log, the first at offset %llu; readers get SHMQ_ECORRUPT there",
			  t->name, p, rep->corrupt,
			  (unsigned long long)rep->corrupt_offset);
	if (rep->holes)
		shmqd_err("topic %s partition %u: %u gap(s) between spill segments, the first at offset %llu",
			  t->name, p, rep->holes, (unsigned long long)rep->hole_offset);
}

/* Open partition p's log, recovering it; start_offset for a new log. */
static int open_log(struct shmqd *d, struct shmqd_topic *t, uint32_t p,
		    uint64_t start_offset)
{
	struct shmq_spill_opts o;
	struct shmq_spill_recovery rep;
	int err;

	memset(&o, 0, sizeof(o));
	o.topic_id = t->params.topic_id;
	o.start_offset = start_offset;
	o.max_frame = shmq__frame_bytes(0, t->params.max_message);
	o.mode = t->params.mode;
	o.segment_bytes = d->spill_segment_bytes;
	o.syncer = d->syncer;
	memset(&rep, 0, sizeof(rep));
	err = shmq__spill_open(d->dir, t->name, p, &o, &rep, &t->spill[p].log);
	if (err)
		return err;
	log_recovery(t, p, &rep);
	return 0;
}

int shmqd_spill_prepare(struct shmqd *d, struct shmqd_topic *t,
			uint64_t *starts)
{
	uint32_t p, n = t->params.partitions;
	int err;

	t->spill = calloc(n, sizeof(*t->spill));
	if (!t->spill)
		return -ENOMEM;
	if (t->params.spill_mode == SHMQ_SPILL_OFF || !starts)
		return 0;
	for (p = 0; p < n; p++) {
		struct shmq_spill_stat st;

		err = open_log(d, t, p, 0);
		if (err)
			return err;
		shmq__spill_stat(t->spill[p].log, &st);
		starts[p] = st.end_offset;
	}
	return 0;
}

void shmqd_spill_adopt(struct shmqd_topic *t)
{
	uint32_t p;

	if (t->map.geo.spill_mode == SHMQ_SPILL_OFF)
		return;
	/* The previous shmqd is gone: so is any copy it was making. */
	for (p = 0; p < t->map.geo.partitions; p++)
		ck_pr_store_64(&shmq__part(&t->map, p)->spill_hold, SHMQ_POS_NONE);
}

void shmqd_spill_release(struct shmqd_topic *t)
{
	uint32_t p;

	/*
	 * A write of the topic's checkpoint in flight finishes first: the
	 * topic's directory may be removed next (deleted), and the thread
	 * would create it again.
	 */
	shmq__checkpointer_slot_free(t->ckpt_slot);
	t->ckpt_slot = NULL;
	if (!t->spill)
		return;
	for (p = 0; p < t->params.partitions; p++)
		shmq__spill_close(t->spill[p].log);
	free(t->spill);
	t->spill = NULL;
}

/* Make the ring's spilled agree with the log after (re)opening it. */
static int reconcile(struct shmqd_topic *t, uint32_t p)
{
	struct shmq_part_header *ph = shmq__part(&t->map, p);
	struct shmq_spill_log *log = t->spill[p].log;
	struct shmq_spill_stat st;
	uint64_t sp = ck_pr_load_64(&ph->spilled);
	uint64_t head = ck_pr_load_64(&ph->head);

	shmq__spill_stat(log, &st);
	if (pos_before(st.end_offset, sp)) {
		shmqd_err("topic %s partition %u: its spill log ends at %llu but offsets up to %llu were reported spilled; those are lost",
			  t->name, p, (unsigned long long)st.end_offset,
			  (unsigned long long)sp);
		return shmq__spill_append_pad(log, st.end_offset, sp - st.end_offset);
	}
	if (pos_before(sp, st.end_offset) && !pos_before(head, st.end_offset)) {
		/* Written by a shmqd that died before it said so. */
		ck_pr_store_64(&ph->spilled, st.end_offset);
		if (t->map.geo.spill_mode == SHMQ_SPILL_ALWAYS &&
		    pos_before(ck_pr_load_64(&ph->synced), st.synced_offset))
			ck_pr_store_64(&ph->synced, st.synced_offset);
	}
	return 0;
}

/* The lowest cursor of an active group, or head. */
static uint64_t groups_min(struct shmq_map *m, uint32_t p, uint64_t head)
{
	struct shmq_part_header *ph = shmq__part(m, p);
	uint64_t h = head;
	uint32_t g;

	for (g = 0; g < SHMQ_MAX_GROUPS; g++) {
		uint64_t n;

		if (ck_pr_load_32(&shmq__group(m, g)->state) != SHMQ_GROUP_ACTIVE)
			continue;
		/* Untethered groups never make anything spill (ring.c). */
		if (ck_pr_load_32(&shmq__group(m, g)->untethered))
			continue;
		n = ck_pr_load_64(&ph->cursor[g].next);
		/* Partitioned groups hold from their committed offset (ring.c). */
		if (n != SHMQ_POS_NONE &&
		    ck_pr_load_32(&shmq__group(m, g)->mode) == SHMQ_GROUP_PARTITIONED) {
			uint64_t c = ck_pr_load_64(&ph->cursor[g].committed);

			if (pos_before(c, n) && !pos_before(head, c))
				n = c;
		}
		/* Behind the window counts: that group reads from disk. */
		if (n == SHMQ_POS_NONE || pos_before(head, n))
			continue;
		if (pos_before(n, h))
			h = n;
	}
	return h;
}

/*
 * One pass over partition p.  Returns true when more is left to write
 * right away.
 */
static bool spill_partition(struct shmqd *d, struct shmqd_topic *t, uint32_t p,
			    uint64_t now_ns)
{
	struct shmq_map *m = &t->map;
	struct shmq_part_header *ph = shmq__part(m, p);
	struct shmqd_spill_part *sp = &t->spill[p];
	const uint8_t *ring = shmq__ring(m, p);
	uint64_t cap = m->geo.ring_bytes, head, spilled, base, target, pos, tail;
	uint32_t max_frame = shmq__max_frame(m);
	bool always = m->geo.spill_mode == SHMQ_SPILL_ALWAYS, more = false;
	bool reopened = false;
	struct shmq_spill_stat st;
	int err = 0;

	if (sp->retry_ns && now_ns < sp->retry_ns)
		return false;
	if (!sp->log) {
		err = open_log(d, t, p, ck_pr_load_64(&ph->spilled));
		if (!err)
			err = reconcile(t, p);
		if (err) {
			if (sp->log) {
				shmq__spill_close(sp->log);
				sp->log = NULL;
			}
			goto failed;
		}
		reopened = true;
	}
	/* The syncer's verdict on the segment rolled last, if it is in. */
	err = shmq__spill_poll(sp->log);
	if (err)
		goto failed;
	/*
	 * A log reopened after a failure, and found sound: spilling works
	 * again, even if nothing needs spilling this pass.  (The error was
	 * cleared only by a pass that wrote, so a topic whose producers had
	 * stopped kept reporting an error that was no longer there.)  A
	 * full disk keeps its log open and is cleared by the next write.
	 */
	if (sp->last_err && reopened)
		set_error(t, p, 0);

	head = ck_pr_load_64(&ph->head);
	spilled = ck_pr_load_64(&ph->spilled);
	/* With always, producers never pass what is not on disk. */
	if (always && head - spilled > cap) {
		err = shmq__fail(SHMQ_ECORRUPT, "spilled %llu is more than a ring behind head %llu",
				 (unsigned long long)spilled, (unsigned long long)head);
		goto failed;
	}
	if (always) {
		base = spilled;
		target = head;
	} else {
		uint64_t g = groups_min(m, p, head);

		base = pos_before(spilled, g) ? g : spilled;
		if (head - base <= cap / 2)
			return false;
		target = head - cap / 4;
		/* Producers are waiting for room: give them all we can. */
		if (ck_pr_load_32(&m->hdr->space_waiters))
			target = head;
	}

	/* Our hazard first, then the tail (pairs with make_room). */
	ck_pr_store_64(&ph->spill_hold, base);
	ck_pr_fence_memory();
	tail = ck_pr_load_64(&ph->tail);
	if (pos_before(base, tail))
		base = tail; /* consumed by every group and reused: not needed */
	pos = base;

	shmq__spill_stat(sp->log, &st);
	if (pos_before(st.end_offset, base)) {
		/* Consumed by every group before it had to go to disk. */
		err = shmq__spill_append_pad(sp->log, st.end_offset, base - st.end_offset);
		if (err)
			goto out;
	} else if (pos_before(base, st.end_offset)) {
		/* Already in the log (written by a shmqd that died, say). */
		base = st.end_offset;
	}

	for (pos = base; pos_before(pos, target);) {
		struct shmq_frame_view v;
		int rc = shmq__frame_decode(ring, cap, pos, max_frame, &v);

		if (rc == SHMQ_FRAME_PENDING)
			break;
		if (rc == SHMQ_FRAME_BAD) {
			err = shmq__fail(SHMQ_ECORRUPT, "bad frame at %llu in the ring",
					 (unsigned long long)pos);
			break;
		}
		err = shmq__spill_append(sp->log, &v);
		if (err)
			break;
		pos += v.size;
		if (pos - base >= SPILL_PASS_BYTES) {
			more = pos_before(pos, target);
			break;
		}
	}
	if (pos != base) {
		int e = always ? shmq__spill_sync(sp->log) : shmq__spill_flush(sp->log);

		if (e) {
			err = e;
		} else {
			/* In the file: producers may now reuse the ring bytes. */
			ck_pr_store_64(&ph->spilled, pos);
			if (always)
				ck_pr_store_64(&ph->synced, pos);
			/*
			 * Producers waiting for room: come back at once rather
			 * than after the next reap interval.
			 */
			if (ck_pr_load_32(&m->hdr->space_waiters))
				more = true;
		}
	}
out:
	ck_pr_fence_store();
	ck_pr_store_64(&ph->spill_hold, SHMQ_POS_NONE);
	if (pos_before(spilled, ck_pr_load_64(&ph->spilled))) {
		/* spilled and synced before the flags (pairs with the waiters' exchange). */
		ck_pr_fence_memory();
		shmq__event_signal(&m->hdr->space_seq, &m->hdr->space_waiters);
		if (always)
			shmq__event_signal(&m->hdr->sync_seq, &m->hdr->sync_waiters);
	}
	if (!err) {
		if (sp->last_err)
			set_error(t, p, 0);
		return more;
	}
failed:
	set_error(t, p, err);
	sp->retry_ns = now_ns + SPILL_RETRY_MS * 1000000ull;
	if (sp->log && err != -ENOSPC && err != -EDQUOT) {
		struct shmq_spill_stat fs;

		shmq__spill_stat(sp->log, &fs);
		if (fs.error) {
			/* The module no longer trusts the file: reopen later. */
			shmq__spill_close(sp->log);
			sp->log = NULL;
		}
	}
	return false;
}

/*
 * A snapshot of every active group's committed offsets, and its checksum
 * in *sum.  NULL when out of memory (the checkpoint waits for the next
 * time).
 */
static struct shmq_ckpt *snapshot(struct shmqd_topic *t, uint64_t *sum)
{
	struct shmq_map *m = &t->map;
	struct shmq_ckpt *cp;
	uint32_t g, p, np = m->geo.partitions;

	cp = calloc(1, sizeof(*cp));
	if (!cp)
		return NULL;
	cp->groups = calloc(SHMQ_MAX_GROUPS, sizeof(*cp->groups));
	if (!cp->groups) {
		free(cp);
		return NULL;
	}
	cp->topic_id = t->params.topic_id;
	*sum = SHMQ_FNV_BASIS;
	for (g = 0; g < SHMQ_MAX_GROUPS; g++) {
		struct shmq_group_slot *gs = shmq__group(m, g);
		struct shmq_ckpt_group *cg = &cp->groups[cp->group_count];

		if (ck_pr_load_32(&gs->state) != SHMQ_GROUP_ACTIVE)
			continue;
		/*
		 * Untethered groups replay nothing from disk, and a restored
		 * group would come back tethered: their members start them
		 * afresh after a host restart.
		 */
		if (ck_pr_load_32(&gs->untethered))
			continue;
		memcpy(cg->name, gs->name, SHMQ_NAME_MAX);
		cg->name[SHMQ_NAME_MAX] = 0;
		if (!shmq__name_valid(cg->name))
			continue;
		cg->committed = calloc(np, sizeof(uint64_t));
		if (!cg->committed) {
			shmq__checkpoint_free(cp);
			return NULL;
		}
		cg->partitions = np;
		cg->mode = ck_pr_load_32(&gs->mode);
		for (p = 0; p < np; p++)
			cg->committed[p] =
				ck_pr_load_64(&shmq__part(m, p)->cursor[g].committed);
		*sum = shmq__fnv1a64(cg->name, strlen(cg->name), *sum);
		*sum = shmq__fnv1a64(cg->committed, np * sizeof(uint64_t), *sum);
		cp->group_count++;
	}
	return cp;
}

/* The outcome of a checkpoint write of the snapshot with checksum sum. */
static void checkpoint_done(struct shmqd_topic *t, int err, uint64_t sum,
			    const char *detail)
{
	if (err) {
		/* Once per run of failures; every later checkpoint retries. */
		if (!t->ckpt_failed)
			shmqd_err("topic %s: cannot checkpoint group offsets: %s%s%s%s",
				  t->name, shmq_strerror(err),
				  *detail ? " (" : "", detail, *detail ? ")" : "");
		t->ckpt_failed = true;
		t->ckpt_sent = false; /* hand the next one over even if equal */
		return;
	}
	t->ckpt_failed = false;
	t->ckpt_done = true;
	t->ckpt_done_sum = sum;
}

/* Write cp here, in the loop, and free it. */
static void checkpoint_write_here(struct shmqd *d, struct shmqd_topic *t,
				  struct shmq_ckpt *cp, uint64_t sum)
{
	const char *detail;
	int err;

	shmq__clear_detail();
	err = shmq__checkpoint_write(d->dir, t->name, cp);
	detail = shmq_errdetail();
	checkpoint_done(t, err, sum, err && detail ? detail : "");
	shmq__checkpoint_free(cp);
}

/* What the checkpointer made of what it was handed (never waits). */
static void checkpoint_collect(struct shmqd_topic *t)
{
	struct shmq_checkpointer_result res;

	if (t->ckpt_slot && shmq__checkpointer_poll(t->ckpt_slot, &res))
		checkpoint_done(t, res.err, res.tag, res.detail);
}

/*
 * Checkpoint every active group's committed offsets, if they changed:
 * hand the snapshot to the checkpointer thread (a newer one replaces it
 * while it waits), or write it here when there is no thread.
 */
static void checkpoint(struct shmqd *d, struct shmqd_topic *t)
{
	struct shmq_ckpt *cp;
	uint64_t sum;

	cp = snapshot(t, &sum);
	if (!cp)
		return;
	if (t->ckpt_sent && sum == t->ckpt_sum) {
		shmq__checkpoint_free(cp);
		return;
	}
	t->ckpt_sum = sum;
	t->ckpt_sent = true;
	if (d->ckpt && !t->ckpt_slot &&
	    shmq__checkpointer_slot_new(d->ckpt, t->name, &t->ckpt_slot))
		t->ckpt_slot = NULL; /* out of memory: in the loop, then */
	if (t->ckpt_slot)
		shmq__checkpointer_submit(t->ckpt_slot, cp, sum);
	else
		checkpoint_write_here(d, t, cp, sum);
}

/*
 * The last checkpoint, at shutdown: written here, so that it is on disk
 * when shmqd exits, and after whatever the thread was writing, so that
 * nothing older lands on top of it.
 */
static void checkpoint_final(struct shmqd *d, struct shmqd_topic *t)
{
	struct shmq_ckpt *cp;
	uint64_t sum;

	if (t->ckpt_slot) {
		shmq__checkpointer_quiesce(t->ckpt_slot);
		checkpoint_collect(t);
	}
	cp = snapshot(t, &sum);
	if (!cp)
		return;
	if (t->ckpt_done && sum == t->ckpt_done_sum) {
		shmq__checkpoint_free(cp);
		return;
	}
	checkpoint_write_here(d, t, cp, sum);
}

static void retain(struct shmqd_topic *t)
{
	uint32_t p;

	if (!t->params.retain_bytes && !t->params.retain_ms)
		return;
	for (p = 0; p < t->params.partitions; p++) {
		struct shmq_spill_retain_stat rs;
		int n;

		if (!t->spill[p].log)
			continue;
		n = shmq__spill_retain(t->spill[p].log, t->params.retain_bytes,
				       t->params.retain_ms * 1000000ull,
				       shmq__now_ns(), &rs);
		if (n > 0)
			shmqd_log("topic %s partition %u: retention removed %u spill segment(s), %llu bytes; the log now starts at %llu",
				  t->name, p, rs.segments, (unsigned long long)rs.bytes,
				  (unsigned long long)rs.first_offset);
	}
}

/* One pass; periodic checkpoints only when ckpt (not at shutdown). */
static bool spill_pass(struct shmqd *d, uint64_t now_ns, bool ckpt)
{
	bool more = false;
	size_t i;

	for (i = 0; i < d->ntopics; i++) {
		struct shmqd_topic *t = d->topics[i];
		uint32_t p;

		if (!spilling(t) || !t->spill)
			continue;
		for (p = 0; p < t->map.geo.partitions; p++)
			more |= spill_partition(d, t, p, now_ns);
		checkpoint_collect(t);
		if (ckpt && now_ns >= t->next_ckpt_ns) {
			checkpoint(d, t);
			t->next_ckpt_ns = now_ns + CHECKPOINT_MS * 1000000ull;
		}
		if (now_ns >= t->next_retain_ns) {
			retain(t);
			t->next_retain_ns = now_ns + RETAIN_MS * 1000000ull;
		}
	}
	return more;
}

bool shmqd_spill_all(struct shmqd *d, uint64_t now_ns)
{
	return spill_pass(d, now_ns, true);
}

void shmqd_spill_checkpoint_all(struct shmqd *d)
{
	unsigned passes = 0;
	size_t i;

	/* A journal gets everything committed so far before we stop. */
	while (spill_pass(d, shmq__mono_ns(), false) && ++passes < 10000)
		;

	for (i = 0; i < d->ntopics; i++) {
		struct shmqd_topic *t = d->topics[i];
		uint32_t p;

		if (!spilling(t) || !t->spill)
			continue;
		for (p = 0; p < t->map.geo.partitions; p++)
			if (t->spill[p].log)
				shmq__spill_flush(t->spill[p].log);
		checkpoint_final(d, t);
	}
}

/*
 * After a host restart: recreate the groups of a new segment from the last
 * checkpoint, each at its committed offset (or at the start of what the
 * disk still holds), so that they replay what they had not committed.
 */
void shmqd_spill_restore_groups(struct shmqd *d, struct shmqd_topic *t)
{
	struct shmq_map *m = &t->map;
	struct shmq_ckpt_report rep;
	struct shmq_ckpt *cp = NULL;
	char why[SHMQD_MSG_MAX];
	uint32_t i, p, slot = 0;
	int err;

	err = shmq__checkpoint_read(d->dir, t->name, &cp, &rep);
	if (err == -ENOENT)
		return;
	if (err) {
		shmqd_err("topic %s: cannot read the group checkpoint: %s; groups start afresh",
			  t->name, shmqd_liberr(err, why, sizeof(why)));
		return;
	}
	if (rep.used == 1)
		shmqd_err("topic %s: the newest group checkpoint is damaged; used the previous one",
			  t->name);
	if (cp->topic_id && cp->topic_id != t->params.topic_id) {
		shmqd_err("topic %s: the group checkpoint belongs to another topic of that name; ignored",
			  t->name);
		shmq__checkpoint_free(cp);
		return;
	}
	for (i = 0; i < cp->group_count && slot < SHMQ_MAX_GROUPS; i++) {
		struct shmq_ckpt_group *cg = &cp->groups[i];
		struct shmq_group_slot *gs = shmq__group(m, slot);

		if (!shmq__name_valid(cg->name) || cg->partitions != m->geo.partitions)
			continue;
		memset(gs->name, 0, sizeof(gs->name));
		memcpy(gs->name, cg->name, strlen(cg->name));
		gs->mode = cg->mode == SHMQ_GROUP_PARTITIONED ? SHMQ_GROUP_PARTITIONED :
			SHMQ_GROUP_SHARED;
		gs->generation = 0;
		gs->created_ns = shmq__now_ns();
		for (p = 0; p < m->geo.partitions; p++) {
			struct shmq_part_header *ph = shmq__part(m, p);
			uint64_t head = ck_pr_load_64(&ph->head);
			uint64_t c = cg->committed[p];

			/* Never past the end of the log: that would skip. */
			if (pos_before(head, c))
				c = head;
			ph->cursor[slot].next = c;
			ph->cursor[slot].committed = c;
			ph->cursor[slot].owner = SHMQ_OWNER_NONE;
			ph->cursor[slot].prev = SHMQ_OWNER_NONE;
		}
		ck_pr_fence_store();
		ck_pr_store_32(&gs->state, SHMQ_GROUP_ACTIVE);
		shmqd_log("topic %s: restored group %s from its checkpoint", t->name, cg->name);
		slot++;
	}
	shmq__checkpoint_free(cp);
}

/* Remove DIR/spill/<topic> and everything in it (topic deleted). */
void shmqd_spill_remove(struct shmqd *d, const char *topic)
{
	char path[2048], sub[2048 + 300], file[2048 + 600];
	struct dirent *e, *f;
	DIR *dp, *dq;

	snprintf(path, sizeof(path), "%s/spill/%s", d->dir, topic);
	dp = opendir(path);
	if (!dp)
		return;
	while ((e = readdir(dp))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		dq = opendir(sub);
		if (!dq) {
			unlink(sub);
			continue;
		}
		while ((f = readdir(dq))) {
			if (f->d_name[0] == '.' && (!f->d_name[1] ||
						    (f->d_name[1] == '.' && !f->d_name[2])))
				continue;
			snprintf(file, sizeof(file), "%s/%s", sub, f->d_name);
			unlink(file);
		}
		closedir(dq);
		rmdir(sub);
	}
	closedir(dp);
	if (rmdir(path) != 0 && errno != ENOENT)
		shmqd_err("topic %s: cannot remove %s: %s", topic, path, strerror(errno));
}
