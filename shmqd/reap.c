/*
 * reap.c - the daemon's periodic reaper pass.
 *
 * Overview
 *   Every reap interval (longer while nothing moves: main.c) the event
 *   loop calls shmqd_reap_all(), which runs
 *   libshmq's shmq__reap_topic() over each online topic: it frees the slots
 *   of dead producers and consumers, pads over claims that died with their
 *   producer, and revokes claims held past the topic's stall timeout.  The
 *   protocol lives in libshmq/reap.c; this file only drives it and says in
 *   the log what it did, because a padded claim is a lost message and an
 *   operator must be able to find out why.
 *
 * Invariants
 *   - Offline topics are never reaped: their segments are not ours to write.
 *   - Each topic keeps its own struct shmq_reap_state for its whole online
 *     life (what the reaper saw at the previous pass), reset when the topic
 *     comes online, because an adopted segment's claims were never seen by
 *     this daemon and must be timed from now.
 *   - Each topic's pass reads the clock itself, just before it: a stall or
 *     ack timeout timed from a stale "now" would fire early.
 *   - A pass where nothing was wrong logs nothing: it runs every few
 *     milliseconds.
 *
 * Memory ordering
 *   All in shmq__reap_topic().
 *
 * Failure and recovery
 *   If the daemon dies mid-pass, the next one (after a restart) simply
 *   passes again: every step of the reaper is idempotent by design of
 *   reap.c (a slot is freed or a claim padded at most once).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include <ck_pr.h>

#include "shmqd.h"

/* Append ", <n> <what>[s]" to buf when n is non-zero. */
static void say(char *buf, size_t size, size_t *len, uint32_t n,
		const char *one, const char *many)
{
	int w;

	if (!n || *len >= size)
		return;
	w = snprintf(buf + *len, size - *len, "%s%u %s", *len ? ", " : "", n,
		     n == 1 ? one : many);
	if (w > 0)
		*len += (size_t)w;
}

static void reap_log(const struct shmqd_topic *t,
		     const struct shmq_reap_stats *s)
{
	char what[SHMQD_MSG_MAX];
	size_t len = 0;

	what[0] = '\0';
	say(what, sizeof(what), &len, s->padded_dead,
	    "claim of a dead producer padded over",
	    "claims of dead producers padded over");
	say(what, sizeof(what), &len, s->padded_stalled,
	    "stalled claim revoked (its commit will fail)",
	    "stalled claims revoked (their commits will fail)");
	say(what, sizeof(what), &len, s->dead_producers,
	    "producer slot of a dead process freed",
	    "producer slots of dead processes freed");
	say(what, sizeof(what), &len, s->dead_members,
	    "consumer slot of a dead process freed",
	    "consumer slots of dead processes freed");
	say(what, sizeof(what), &len, s->expired_leases,
	    "message held past its ack timeout given to the group again",
	    "messages held past their ack timeout given to the group again");
	if (len)
		shmqd_log("topic %s: %s", t->name, what);
}

bool shmqd_reap_all(struct shmqd *d, bool force)
{
	bool moving = false;

	for (size_t i = 0; i < d->ntopics; i++) {
		struct shmqd_topic *t = d->topics[i];
		struct shmq_reap_stats stats;
		uint64_t heads = 0;
		uint32_t p;

		if (!t->online)
			continue;
		memset(&stats, 0, sizeof(stats));
		t->reap.force = force;
		/*
		 * The clock is read here, for each topic, never taken from
		 * the event loop: spill work before the pass (a checkpoint's
		 * fsync can take hundreds of ms on a busy disk) would make it
		 * stale, and a claim or lease first seen at a stale time
		 * would time out that much early.
		 */
		shmq__reap_topic(&t->map, &t->reap, shmq__mono_ns(), &stats);
		reap_log(t, &stats);
		for (p = 0; p < t->map.geo.partitions; p++)
			heads += ck_pr_load_64(&shmq__part(&t->map, p)->head);
		if (heads != t->heads_seen || stats.dead_producers || stats.dead_members ||
		    stats.padded_dead || stats.padded_stalled || stats.expired_leases)
			moving = true;
		t->heads_seen = heads;
	}
	return moving;
}
