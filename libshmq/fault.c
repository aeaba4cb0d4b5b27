/*
 * fault.c - the armed half of fault injection (see fault.h).
 *
 * Overview
 * --------
 * When a test arms a rule, shmq__fault_active becomes non-zero and the
 * wrappers in fault.h call in here instead of going straight to the
 * system.  Each call is counted per kind, the rules are matched against
 * the count, and either the real call runs (perhaps shortened, perhaps
 * after a delay) or errno is set and -1 returned.  There is no file
 * format; this module keeps no state on disk.
 *
 * Invariants
 * ----------
 * - count[op] is the number of calls of kind op since the last reset; a
 *   rule fires when count == nth, or count >= nth when sticky.
 * - Disarming clears shmq__fault_active first, so a wrapper that races
 *   with it sees either the armed state or the plain system call.
 * - A rule's `used` is its publication: arming writes the rule, then sets
 *   it; disarming only clears it.  shmqd disarms (SIGUSR1) in its loop
 *   while its spill syncer thread may be matching rules in hit().
 * - A delay rule sleeps in the thread that makes the call (a syncer's or
 *   checkpointer's fsync sleeps there, not in shmqd's loop), and does not
 *   end the match: a failure rule for the same call still fires after it,
 *   as on a disk that is slow and then fails.
 *
 * Failure and recovery
 * --------------------
 * Nothing here can fail at run time.  The rules live in ordinary globals:
 * a forked child inherits them, which is what a test that forks a writer
 * wants.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "fault.h"
#include "shmq_int.h"

struct fault_rule {
	bool used;
	enum shmq_fault_op op;
	unsigned long nth;
	int err;
	unsigned flags;
};

SHMQ_HIDDEN unsigned shmq__fault_active;
static unsigned long count[SHMQ_FAULT_NOPS];
static unsigned long fired;
static struct fault_rule rules[SHMQ_FAULT_RULES];

int shmq__fault_arm(enum shmq_fault_op op, unsigned long nth, int err,
		    unsigned flags)
{
	int i;

	if ((unsigned)op >= SHMQ_FAULT_NOPS || nth == 0)
		return -EINVAL;
	if (flags & SHMQ_FAULT_DELAY) {
		if (err <= 0 || err > 60000)
			return -EINVAL;
	} else if (err == SHMQ_FAULT_SHORT && op != SHMQ_FAULT_WRITE) {
		return -EINVAL;
	}
	for (i = 0; i < SHMQ_FAULT_RULES; i++) {
		if (__atomic_load_n(&rules[i].used, __ATOMIC_RELAXED))
			continue;
		rules[i].op = op;
		rules[i].nth = nth;
		rules[i].err = err;
		rules[i].flags = flags;
		__atomic_store_n(&rules[i].used, true, __ATOMIC_RELEASE);
		__atomic_store_n(&shmq__fault_active, 1, __ATOMIC_RELEASE);
		return 0;
	}
	return -ENOSPC;
}

void shmq__fault_reset(void)
{
	memset(count, 0, sizeof(count));
	fired = 0;
	__atomic_store_n(&shmq__fault_active, 1, __ATOMIC_RELEASE);
}

void shmq__fault_disarm(void)
{
	int i;

	__atomic_store_n(&shmq__fault_active, 0, __ATOMIC_RELEASE);
	for (i = 0; i < SHMQ_FAULT_RULES; i++)
		__atomic_store_n(&rules[i].used, false, __ATOMIC_RELAXED);
}

unsigned long shmq__fault_calls(enum shmq_fault_op op)
{
	if ((unsigned)op >= SHMQ_FAULT_NOPS)
		return 0;
	return __atomic_load_n(&count[op], __ATOMIC_RELAXED);
}

unsigned long shmq__fault_fired(void)
{
	return __atomic_load_n(&fired, __ATOMIC_RELAXED);
}

/* Sleep ms milliseconds, whatever signals arrive; errno is kept. */
static void delay_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	int saved = errno;

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	errno = saved;
}

/*
 * Count a call of kind op and find the rule that fires for it.  Returns
 * NULL to let the real call run untouched.
 */
static const struct fault_rule *hit(enum shmq_fault_op op)
{
	unsigned long n = __atomic_add_fetch(&count[op], 1, __ATOMIC_RELAXED);
	int i;

	for (i = 0; i < SHMQ_FAULT_RULES; i++) {
		const struct fault_rule *r = &rules[i];

		if (!__atomic_load_n(&r->used, __ATOMIC_ACQUIRE) || r->op != op)
			continue;
		if (n == r->nth || ((r->flags & SHMQ_FAULT_STICKY) && n > r->nth)) {
			__atomic_add_fetch(&fired, 1, __ATOMIC_RELAXED);
			if (r->flags & SHMQ_FAULT_DELAY) {
				/* A slow disk: the call still happens, late. */
				delay_ms(r->err);
				continue;
			}
			return r;
		}
	}
	return NULL;
}

int shmq__fault_openat_slow(int dfd, const char *path, int flags, mode_t mode)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_OPEN);

	if (r) {
		errno = r->err;
		return -1;
	}
	return openat(dfd, path, flags, mode);
}

ssize_t shmq__fault_write_slow(int fd, const void *buf, size_t n)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_WRITE);

	if (!r)
		return write(fd, buf, n);
	if (r->err == SHMQ_FAULT_SHORT)
		return write(fd, buf, n > 1 ? n / 2 : n);
	errno = r->err;
	return -1;
}

ssize_t shmq__fault_pwrite_slow(int fd, const void *buf, size_t n, off_t off)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_WRITE);

	if (!r)
		return pwrite(fd, buf, n, off);
	if (r->err == SHMQ_FAULT_SHORT)
		return pwrite(fd, buf, n > 1 ? n / 2 : n, off);
	errno = r->err;
	return -1;
}

int shmq__fault_ftruncate_slow(int fd, off_t len)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_FTRUNCATE);

	if (r) {
		errno = r->err;
		return -1;
	}
	return ftruncate(fd, len);
}

int shmq__fault_fsync_slow(int fd)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_FSYNC);

	if (r) {
		errno = r->err;
		return -1;
	}
	return fsync(fd);
}

int shmq__fault_fdatasync_slow(int fd)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_FDATASYNC);

	if (r) {
		errno = r->err;
		return -1;
	}
	return fdatasync(fd);
}

int shmq__fault_renameat_slow(int odfd, const char *op, int ndfd, const char *np)
{
	const struct fault_rule *r = hit(SHMQ_FAULT_RENAME);

	if (r) {
		errno = r->err;
		return -1;
	}
	return renameat(odfd, op, ndfd, np);
}
