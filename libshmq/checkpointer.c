/*
 * checkpointer.c - writing group checkpoints in a thread of their own.
 *
 * Overview
 * --------
 * shmqd checkpoints the committed offsets of every spilling topic's groups
 * once a second (shmqd/spill.c).  The write (checkpoint.c) is a temporary
 * file, its fsync, two renames and the directory's fsync: tens to hundreds
 * of milliseconds on a busy or slow disk.  In shmqd's one event loop that
 * is time in which no death is noticed, no claim revoked and no request
 * served.  So the loop only takes the snapshot (a few loads per group and
 * partition) and hands it to the checkpointer, one thread for every
 * topic, which writes it.
 *
 * Each topic has a slot (struct shmq_checkpointer_slot):
 *
 *   pending   the newest snapshot handed over and not yet taken by the
 *             thread; a newer one replaces it (the older is freed unread:
 *             only the newest offsets are worth a write);
 *   running   the thread is writing this topic's checkpoint now;
 *   result    the outcome of the last write, until the loop collects it
 *             (shmq__checkpointer_poll), with the error's detail copied
 *             out of the thread's own (thread-local) detail buffer.
 *
 * The thread takes slots from a queue, oldest first, one write at a time.
 *
 * Invariants
 * ----------
 * - Never two writers of one topic's checkpoint: the thread writes one
 *   slot at a time, a slot is in the queue at most once, and the owner
 *   writes itself (or removes the directory) only after
 *   shmq__checkpointer_quiesce(), which drops the pending snapshot and
 *   waits for a running write.
 * - A snapshot is never written after a newer one of its topic: the
 *   newer either replaced it while it was pending or was handed over
 *   after the thread took it, and is then taken after it finished.
 * - The thread touches a slot only under the lock, except for the topic
 *   name and the snapshot it took (both its own while running).  It never
 *   runs while holding the lock, so the owner never waits on the lock for
 *   the disk.
 * - An uncollected failure is not overwritten by a later success: the
 *   owner learns of every failure (it logs and retries), possibly late.
 *
 * Failure and recovery
 * --------------------
 * The write keeps checkpoint.c's guarantees (a crash at any point leaves
 * the previous or the new checkpoint readable); what is added is only the
 * lag: a checkpoint on disk can be one write older than it would be in the
 * loop.  At shutdown the owner quiesces and writes the last checkpoint
 * itself, so nothing is lost to the thread.  A slot freed while its
 * snapshot is pending drops it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spill.h"

struct shmq_checkpointer_slot {
	struct shmq_checkpointer *w;
	struct shmq_checkpointer_slot *next; /* in the queue while queued */
	char topic[SHMQ_NAME_MAX + 1];
	/* Under w->lock: */
	struct shmq_ckpt *pending;
	uint64_t pending_tag;
	bool queued, running;
	bool have_result;
	struct shmq_checkpointer_result result;
};

struct shmq_checkpointer {
	pthread_mutex_t lock;
	pthread_cond_t work;	/* a slot was queued, or stop */
	pthread_cond_t idle;	/* a write finished */
	struct shmq_checkpointer_slot *head, *tail;
	bool stop;
	char *dir;
	pthread_t thread;
};

/* Record the outcome of a write (lock held). */
static void set_result(struct shmq_checkpointer_slot *s, int err, uint64_t tag)
{
	struct shmq_checkpointer_result *r = &s->result;
	const char *detail;

	/* A failure the owner has not seen yet outranks a later success. */
	if (s->have_result && r->err && !err)
		return;
	r->err = err;
	r->tag = tag;
	r->detail[0] = '\0';
	detail = err ? shmq_errdetail() : NULL;
	if (detail)
		snprintf(r->detail, sizeof(r->detail), "%s", detail);
	s->have_result = true;
}

static void *checkpointer_main(void *arg)
{
	struct shmq_checkpointer *w = arg;
	struct shmq_checkpointer_slot *s;
	struct shmq_ckpt *cp;
	uint64_t tag;
	int err;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->head && !w->stop)
			pthread_cond_wait(&w->work, &w->lock);
		if (w->stop)
			break; /* the owner quiesced every slot first */
		s = w->head;
		w->head = s->next;
		if (!w->head)
			w->tail = NULL;
		s->next = NULL;
		s->queued = false;
		cp = s->pending;
		tag = s->pending_tag;
		s->pending = NULL;
		s->running = true;
		pthread_mutex_unlock(&w->lock);

		shmq__clear_detail();
		err = shmq__checkpoint_write(w->dir, s->topic, cp);
		shmq__checkpoint_free(cp);

		pthread_mutex_lock(&w->lock);
		set_result(s, err, tag);
		s->running = false;
		pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int shmq__checkpointer_start(const char *dir, struct shmq_checkpointer **out)
{
	struct shmq_checkpointer *w = calloc(1, sizeof(*w));
	sigset_t all, old;
	int r;

	if (!w)
		return -ENOMEM;
	w->dir = strdup(dir);
	if (!w->dir) {
		free(w);
		return -ENOMEM;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->work, NULL);
	pthread_cond_init(&w->idle, NULL);
	/* Signals stay with the caller's threads (shmqd reads a signalfd). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&w->thread, NULL, checkpointer_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		pthread_cond_destroy(&w->idle);
		pthread_cond_destroy(&w->work);
		pthread_mutex_destroy(&w->lock);
		free(w->dir);
		free(w);
		return shmq__fail(-r, "cannot start the checkpointer thread: %s", strerror(r));
	}
	pthread_setname_np(w->thread, "shmq-ckpt");
	*out = w;
	return 0;
}

void shmq__checkpointer_stop(struct shmq_checkpointer *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->work);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->idle);
	pthread_cond_destroy(&w->work);
	pthread_mutex_destroy(&w->lock);
	free(w->dir);
	free(w);
}

int shmq__checkpointer_slot_new(struct shmq_checkpointer *w, const char *topic,
				struct shmq_checkpointer_slot **out)
{
	struct shmq_checkpointer_slot *s;

	if (!shmq__name_valid(topic))
		return shmq__fail(-EINVAL, "invalid topic name");
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->w = w;
	snprintf(s->topic, sizeof(s->topic), "%s", topic);
	*out = s;
	return 0;
}

void shmq__checkpointer_submit(struct shmq_checkpointer_slot *s,
			       struct shmq_ckpt *cp, uint64_t tag)
{
	struct shmq_checkpointer *w = s->w;
	struct shmq_ckpt *old;

	pthread_mutex_lock(&w->lock);
	old = s->pending;	/* superseded: never written */
	s->pending = cp;
	s->pending_tag = tag;
	if (!s->queued) {
		s->next = NULL;
		if (w->tail)
			w->tail->next = s;
		else
			w->head = s;
		w->tail = s;
		s->queued = true;
		pthread_cond_signal(&w->work);
	}
	pthread_mutex_unlock(&w->lock);
	shmq__checkpoint_free(old);
}

bool shmq__checkpointer_poll(struct shmq_checkpointer_slot *s,
			     struct shmq_checkpointer_result *res)
{
	struct shmq_checkpointer *w = s->w;
	bool got;

	pthread_mutex_lock(&w->lock);
	got = s->have_result;
	if (got) {
		*res = s->result;
		s->have_result = false;
	}
	pthread_mutex_unlock(&w->lock);
	return got;
}

bool shmq__checkpointer_quiesce(struct shmq_checkpointer_slot *s)
{
	struct shmq_checkpointer *w = s->w;
	struct shmq_checkpointer_slot **pp;
	struct shmq_ckpt *dropped = NULL;

	pthread_mutex_lock(&w->lock);
	if (s->queued) {
		for (pp = &w->head; *pp != s; pp = &(*pp)->next)
			;
		*pp = s->next;
		if (w->tail == s) {
			struct shmq_checkpointer_slot *t = w->head;

			while (t && t->next)
				t = t->next;
			w->tail = t;
		}
		s->next = NULL;
		s->queued = false;
		dropped = s->pending;
		s->pending = NULL;
	}
	while (s->running)
		pthread_cond_wait(&w->idle, &w->lock);
	pthread_mutex_unlock(&w->lock);
	shmq__checkpoint_free(dropped);
	return dropped != NULL;
}

void shmq__checkpointer_slot_free(struct shmq_checkpointer_slot *s)
{
	if (!s)
		return;
	shmq__checkpointer_quiesce(s);
	free(s);
}
