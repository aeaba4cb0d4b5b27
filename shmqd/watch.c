/*
 * watch.c - learn of the death of attached processes from pidfds.
 *
 * Overview
 *   The reaper (reap.c, libshmq/reap.c) finds dead producers and members by
 *   looking at /proc, on a cadence: claims every pass (5 ms), members every
 *   fourth.  A death is therefore noticed some 10-20 ms late.  Here each
 *   process that owns a producer or member slot of an online topic gets a
 *   pidfd (pidfd_open(2), Linux 5.3), watched by one epoll fd that the
 *   event loop polls with its other fds.  When a watched process exits its
 *   pidfd becomes readable, and the event loop runs a forced reaper pass at
 *   once (every slot, every check): a partitioned group rebalances, a
 *   shared group's held message goes back, a dead producer's claim is
 *   padded, within a millisecond or two of the death.
 *
 *   The pidfd is only a wake-up.  Who is dead is still decided by the
 *   reaper's own check (pid and start time in /proc), so a wrong or missed
 *   event costs at most the old cadence, never a wrong reap.  Processes are
 *   picked up by a scan of the slots at every pass (a hash lookup per
 *   occupied slot); a pid no longer in any slot is let go at the next sweep.
 *
 * Failure and recovery
 *   Without pidfd_open (an old kernel, a seccomp filter), or when the table
 *   is full, the reaper's cadence is all there is: the watch says so once in
 *   the log and stands aside.  A pid that exits between the scan and
 *   pidfd_open (ESRCH) asks for a forced pass at once, as an event would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shmqd.h"

/* Sweep for processes no longer attached every so many scans. */
#define SWEEP_EVERY 200u

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

int shmqd_watch_init(struct shmqd_watch *w)
{
	uint32_t i;

	memset(w, 0, sizeof(*w));
	for (i = 0; i < SHMQD_WATCH_MAX; i++)
		w->e[i].fd = -1;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		shmqd_err("epoll_create1: %s; deaths are noticed by polling only",
			  strerror(errno));
		w->off = true;
	}
	return 0;
}

void shmqd_watch_close(struct shmqd_watch *w)
{
	uint32_t i;

	for (i = 0; i < SHMQD_WATCH_MAX; i++)
		if (w->e[i].fd >= 0)
			close(w->e[i].fd);
	if (w->epfd >= 0)
		close(w->epfd);
	w->epfd = -1;
	w->off = true;
}

int shmqd_watch_fd(const struct shmqd_watch *w)
{
	return w->off ? -1 : w->epfd;
}

/* Open addressing on pid; the slot of pid, or of the empty place for it. */
static struct shmqd_watch_entry *find(struct shmqd_watch *w, uint32_t pid)
{
	uint32_t h = (pid * 2654435761u) % SHMQD_WATCH_MAX, k;

	for (k = 0; k < SHMQD_WATCH_MAX; k++) {
		struct shmqd_watch_entry *e = &w->e[(h + k) % SHMQD_WATCH_MAX];

		if (e->pid == pid || e->pid == 0)
			return e;
	}
	return NULL;
}

/* Remove e, keeping every other entry reachable (backward shift). */
static void drop(struct shmqd_watch *w, struct shmqd_watch_entry *e)
{
	uint32_t i = (uint32_t)(e - w->e), j = i;

	if (e->fd >= 0)
		close(e->fd); /* also leaves the epoll set */
	w->e[i].pid = 0;
	w->e[i].fd = -1;
	w->n--;
	for (;;) {
		uint32_t home;

		j = (j + 1) % SHMQD_WATCH_MAX;
		if (w->e[j].pid == 0)
			return;
		home = (w->e[j].pid * 2654435761u) % SHMQD_WATCH_MAX;
		/* Can e[j] move to the hole at i?  Only if i lies on its probe path. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			w->e[i] = w->e[j];
			w->e[j].pid = 0;
			w->e[j].fd = -1;
			i = j;
		}
	}
}

/* Watch owner o; returns true when it is already gone. */
static bool watch_one(struct shmqd_watch *w, const struct shmq_owner *o)
{
	struct shmqd_watch_entry *e;
	struct epoll_event ev = { .events = EPOLLIN };
	int fd;

	if (!o->pid || o->pid > (uint32_t)INT32_MAX)
		return false;
	e = find(w, o->pid);
	if (e && e->pid == o->pid) {
		e->seen = w->scans;
		return false;
	}
	if (!e || w->n >= SHMQD_WATCH_MAX * 3 / 4) {
		if (!w->full_said)
			shmqd_log("more than %u attached processes: deaths of the others are noticed by polling",
				  SHMQD_WATCH_MAX * 3 / 4);
		w->full_said = true;
		return false;
	}
	fd = open_pidfd((pid_t)o->pid);
	if (fd < 0) {
		if (errno == ESRCH)
			return true;
		if (errno == ENOSYS || errno == EPERM) {
			shmqd_log("pidfd_open: %s; deaths are noticed by polling only",
				  strerror(errno));
			shmqd_watch_close(w);
		}
		return false;
	}
	/* The pid may have been reused since the slot was written. */
	if (!shmq__owner_alive(o)) {
		close(fd);
		return true;
	}
	/* The pid, not the place: places move when entries are dropped. */
	ev.data.u32 = o->pid;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		return false;
	}
	e->pid = o->pid;
	e->fd = fd;
	e->seen = w->scans;
	w->n++;
	return false;
}

static void owner_of(struct shmq_owner *o, const struct shmq_owner *slot)
{
	o->pid = __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE);
	o->start_ticks = __atomic_load_n(&slot->start_ticks, __ATOMIC_RELAXED);
}

bool shmqd_watch_scan(struct shmqd *d)
{
	struct shmqd_watch *w = &d->watch;
	bool gone = false;
	uint32_t i, k;

	if (w->off)
		return false;
	w->scans++;
	for (size_t t = 0; t < d->ntopics; t++) {
		struct shmq_map *m = &d->topics[t]->map;
		struct shmq_owner o;

		if (!d->topics[t]->online)
			continue;
		for (i = 0; i < SHMQ_MAX_PRODUCERS && !w->off; i++) {
			owner_of(&o, &shmq__producer_slot(m, i)->owner);
			gone |= watch_one(w, &o);
		}
		for (i = 0; i < SHMQ_MAX_MEMBERS && !w->off; i++) {
			owner_of(&o, &shmq__member_slot(m, i)->owner);
			gone |= watch_one(w, &o);
		}
	}
	if (w->off || w->scans % SWEEP_EVERY)
		return gone;
	/* Let go of processes that no slot names any more. */
	for (k = 0; k < SHMQD_WATCH_MAX; k++) {
		struct shmqd_watch_entry *e = &w->e[k];

		while (e->pid && e->seen != w->scans)
			drop(w, e); /* may shift another entry into e */
	}
	w->full_said = false;
	return gone;
}

uint32_t shmqd_watch_events(struct shmqd *d)
{
	struct shmqd_watch *w = &d->watch;
	struct epoll_event ev[32];
	uint32_t deaths = 0;
	int n, i;

	if (w->off)
		return 0;
	n = epoll_wait(w->epfd, ev, 32, 0);
	for (i = 0; i < n; i++) {
		struct shmqd_watch_entry *e = find(w, ev[i].data.u32);

		if (e && e->pid && e->pid == ev[i].data.u32) {
			drop(w, e);
			deaths++;
		}
	}
	return deaths;
}
