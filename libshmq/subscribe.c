/*
 * subscribe.c - pattern subscriptions: one consumer per matching topic.
 *
 * Design note
 * -----------
 * A subscription is built on the public consumer API only (plus the wait
 * announcement shmq__consumer_prepare_wait).  It holds a shmq_consumer_t,
 * opened with the subscription's group and options, for each topic whose
 * name matches the pattern (fnmatch(3), no flags).
 *
 * Topics come and go.  The topic list is read when subscribing and again
 * from poll at most every RESCAN_NS; a matching topic without a consumer
 * gets one (an open that fails is retried at the next rescan).  A consumer
 * whose poll says SHMQ_EDELETED is closed and forgotten; if a topic of the
 * same name is created again, the next rescan opens it afresh.  Entries are
 * removed only inside poll, after the held message was released, so the
 * topic name returned by the previous poll stays valid until the next one.
 *
 * Fairness: each pass polls every consumer with a zero timeout, starting
 * at s->rr, and the next pass starts after the consumer that gave the last
 * message, so a busy topic cannot starve the others.
 *
 * Waiting follows the event protocol of wait.c, over several words: for
 * every consumer announce a sleeper (shmq__consumer_prepare_wait returns
 * the topic's futex word and the value to wait on), look at every consumer
 * once more, and only then sleep on all the words at once with futex_waitv
 * (Linux 5.16+).  A producer that publishes after our last look sees the
 * flag set and bumps the word, so the kernel either refuses to sleep
 * (EAGAIN) or wakes us.  The words are in MAP_SHARED memory, so the waiters
 * are shared (no FUTEX_PRIVATE_FLAG).  Each sleep ends at the caller's
 * deadline or the next rescan, whichever is first, so new topics are seen
 * within about RESCAN_NS.  Without futex_waitv (ENOSYS, or more than
 * FUTEX_WAITV_MAX topics) one word is waited on in slices of 1 ms, and the
 * others are looked at between slices.  With no topic at all the
 * subscription sleeps until the next rescan.  Every wake-up is a hint; the
 * loop re-polls and re-checks its deadline.
 *
 * Not thread-safe: one thread at a time per subscription, like a consumer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fnmatch.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shmq_int.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif
#ifndef FUTEX_WAITV_MAX
#define FUTEX_WAITV_MAX 128
/* Older headers: the kernel's layout of a vectorised waiter. */
struct futex_waitv {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t __reserved;
};
#endif

#define RESCAN_NS	(100ull * 1000000)
#define SLICE_NS	(1000000ull)

struct sub_topic {
	char name[SHMQ_NAME_MAX + 1];
	shmq_consumer_t *c;
};

struct shmq_subscription {
	shmq_client_t *client;
	char *pattern;
	char group[SHMQ_NAME_MAX + 1];
	struct shmq_consumer_opts opts;
	bool busy;		/* SHMQ_CONSUMER_BUSY_POLL: never sleep */
	bool no_waitv;		/* futex_waitv failed for good */
	struct sub_topic *t;
	uint32_t n, cap;
	uint32_t rr;		/* topic the next pass looks at first */
	int held;		/* topic of the held message, or -1 */
	uint64_t next_scan;	/* CLOCK_MONOTONIC ns */
	struct futex_waitv *wv;	/* [cap], for sleeping */
};

static int find_topic(const shmq_subscription_t *s, const char *name)
{
	uint32_t i;

	for (i = 0; i < s->n; i++)
		if (!strcmp(s->t[i].name, name))
			return (int)i;
	return -1;
}

static int grow(shmq_subscription_t *s)
{
	uint32_t cap = s->cap ? s->cap * 2 : 8;
	struct sub_topic *t;
	struct futex_waitv *wv;

	t = realloc(s->t, cap * sizeof(*t));
	if (!t)
		return -ENOMEM;
	s->t = t;
	wv = realloc(s->wv, cap * sizeof(*wv));
	if (!wv)
		return -ENOMEM;
	s->wv = wv;
	s->cap = cap;
	return 0;
}

/* shmq_topic_list callback: open a consumer for a new matching topic. */
static int scan_one(const char *name, void *arg)
{
	shmq_subscription_t *s = arg;
	shmq_consumer_t *c = NULL;

	if (fnmatch(s->pattern, name, 0) || find_topic(s, name) >= 0)
		return 0;
	if (strlen(name) > SHMQ_NAME_MAX)
		return 0;
	if (s->n == s->cap && grow(s))
		return -ENOMEM;
	/* A topic that cannot be opened now is tried again next rescan. */
	if (shmq_consumer_open(s->client, name, s->group, &s->opts, &c))
		return 0;
	strcpy(s->t[s->n].name, name);
	s->t[s->n].c = c;
	s->n++;
	return 0;
}

static int rescan(shmq_subscription_t *s)
{
	s->next_scan = shmq__mono_ns() + RESCAN_NS;
	return shmq_topic_list(s->client, scan_one, s);
}

/* Close and forget topic i (never the held one: see poll). */
static void drop(shmq_subscription_t *s, uint32_t i)
{
	shmq_consumer_close(s->t[i].c);
	memmove(&s->t[i], &s->t[i + 1], (s->n - i - 1) * sizeof(s->t[0]));
	s->n--;
	if (s->rr > i)
		s->rr--;
	if (s->rr >= s->n)
		s->rr = 0;
}

/*
 * One pass over every consumer, without waiting, from s->rr.  Returns 0
 * (message), SHMQ_ECORRUPT or SHMQ_ELAPPED with *idx set, or -EAGAIN.
 * Deleted topics are dropped on the way.
 */
static int pass(shmq_subscription_t *s, struct shmq_msg *msg, uint32_t *idx)
{
	uint32_t k, i, n = s->n;
	int rc;

	for (k = 0; k < n && s->n; k++) {
		i = s->rr % s->n;
		rc = shmq_consumer_poll(s->t[i].c, msg, 0);
		if (rc == SHMQ_EDELETED) {
			drop(s, i);
			continue;
		}
		s->rr = (i + 1) % s->n;
		if (rc == 0 || rc == SHMQ_ECORRUPT || rc == SHMQ_ELAPPED) {
			*idx = i;
			return rc;
		}
	}
	return -EAGAIN;
}

static void sleep_until(uint64_t until_ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(until_ns / 1000000000ull),
		.tv_nsec = (long)(until_ns % 1000000000ull),
	};

	(void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/*
 * Sleep until a word of wv[0..n) changes, or until until_ns (monotonic).
 * Falls back to 1 ms slices on the first word without futex_waitv.
 */
static void wait_words(shmq_subscription_t *s, uint32_t n, uint64_t until_ns,
		       uint64_t now)
{
	struct timespec ts;
	uint64_t left;
	long rc;

	if (!s->no_waitv && n <= FUTEX_WAITV_MAX) {
		ts.tv_sec = (time_t)(until_ns / 1000000000ull);
		ts.tv_nsec = (long)(until_ns % 1000000000ull);
		rc = syscall(SYS_futex_waitv, s->wv, n, 0, &ts, CLOCK_MONOTONIC);
		if (rc >= 0 || errno == EAGAIN || errno == ETIMEDOUT ||
		    errno == EINTR)
			return;
		/* ENOSYS (old kernel), or refused: never try it again. */
		s->no_waitv = true;
	}
	left = until_ns - now;
	if (n == 1)
		shmq__futex_wait((uint32_t *)(uintptr_t)s->wv[0].uaddr,
				 (uint32_t)s->wv[0].val, left);
	else
		shmq__futex_wait((uint32_t *)(uintptr_t)s->wv[0].uaddr,
				 (uint32_t)s->wv[0].val,
				 left < SLICE_NS ? left : SLICE_NS);
}

int shmq_subscribe(shmq_client_t *client, const char *pattern,
		   const char *group, const struct shmq_consumer_opts *opts,
		   shmq_subscription_t **out)
{
	shmq_subscription_t *s;
	size_t n;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	shmq__clear_detail();
	if (!client || !pattern || !*pattern)
		return shmq__fail(-EINVAL, "subscribe: empty pattern");
	if (!group || !shmq__name_valid(group))
		return shmq__fail(-EINVAL, "subscribe: bad group name");
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->pattern = strdup(pattern);
	if (!s->pattern) {
		free(s);
		return -ENOMEM;
	}
	s->client = client;
	strcpy(s->group, group);
	s->held = -1;
	if (opts) {
		n = opts->size < sizeof(s->opts) ? opts->size : sizeof(s->opts);
		memcpy(&s->opts, opts, n);
		s->opts.size = n;
		s->busy = OPT_HAS(&s->opts, flags) &&
			  (s->opts.flags & SHMQ_CONSUMER_BUSY_POLL);
	} else {
		s->opts.size = sizeof(s->opts);
		s->opts.from = SHMQ_FROM_COMMITTED;
	}
	rc = rescan(s);
	if (rc) {
		shmq_subscription_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

void shmq_subscription_close(shmq_subscription_t *s)
{
	uint32_t i;

	if (!s)
		return;
	for (i = 0; i < s->n; i++)
		shmq_consumer_close(s->t[i].c);
	free(s->t);
	free(s->wv);
	free(s->pattern);
	free(s);
}

int shmq_subscription_commit(shmq_subscription_t *s)
{
	uint32_t i;
	int rc, first = 0;

	if (!s)
		return -EINVAL;
	for (i = 0; i < s->n; i++) {
		rc = shmq_consumer_commit(s->t[i].c);
		/* A deleted topic has nothing left to commit. */
		if (rc && rc != SHMQ_EDELETED && !first)
			first = rc;
	}
	return first;
}

int shmq_subscription_poll(shmq_subscription_t *s, struct shmq_msg *msg,
			   const char **topic, int timeout_ms)
{
	uint64_t now, deadline, until;
	uint32_t i, n, idx = 0;
	int rc;

	if (!s || !msg)
		return -EINVAL;
	if (s->held >= 0) {
		shmq_consumer_release(s->t[s->held].c);
		s->held = -1;
	}
	now = shmq__mono_ns();
	deadline = timeout_ms < 0 ? UINT64_MAX :
		now + (uint64_t)timeout_ms * 1000000;
	for (;;) {
		if (now >= s->next_scan)
			(void)rescan(s); /* a failed rescan is retried later */
		rc = pass(s, msg, &idx);
		if (rc != -EAGAIN)
			goto got;
		now = shmq__mono_ns();
		if (now >= deadline)
			return -EAGAIN;
		if (s->busy)
			continue;
		until = s->next_scan < deadline ? s->next_scan : deadline;
		if (until <= now)
			continue;
		if (!s->n) {
			sleep_until(until);
			now = shmq__mono_ns();
			continue;
		}
		/* Announce on every topic, look once more, then sleep. */
		for (i = 0; i < s->n; i++) {
			uint32_t *word;

			s->wv[i].val = shmq__consumer_prepare_wait(s->t[i].c, &word);
			s->wv[i].uaddr = (uintptr_t)word;
			s->wv[i].flags = FUTEX_32;
			s->wv[i].__reserved = 0;
		}
		n = s->n;
		rc = pass(s, msg, &idx);
		if (rc != -EAGAIN)
			goto got;
		/*
		 * Sleep only on words announced before that last look.  If
		 * pass() dropped a deleted topic the list moved: go round.
		 */
		if (s->n == n)
			wait_words(s, n, until, now);
		now = shmq__mono_ns();
	}
got:
	s->held = (int)idx;
	if (topic)
		*topic = s->t[idx].name;
	return rc;
}
