/*
 * fault.h - fault injection for the file I/O of the spill module.
 *
 * Overview
 * --------
 * Every open, write, pwrite, ftruncate, fsync, fdatasync and rename that
 * spill.c and checkpoint.c make goes through one of the wrappers below.  A
 * test arms a rule, "the Nth call of kind K fails with errno E" or "the
 * Nth write writes only half of what it was asked" (a short write), or
 * "the Nth fsync takes 400 ms longer" (a slow disk), runs
 * the code under test and checks what it reported and what survived on
 * disk.  Several rules may be armed at once; a sticky rule also fails every
 * later call of its kind (a disk that stays full).
 *
 * Cost when disarmed: one load of a global (shmq__fault_active) and a
 * predicted-not-taken branch in front of the system call.  Nothing else:
 * no counting, no lock.  The counters and rules are only looked at when a
 * test has called shmq__fault_arm() or shmq__fault_count().
 *
 * Invariants
 * ----------
 * - Calls are numbered from 1 per kind since the last shmq__fault_reset()
 *   (arming does not reset the count, so rules for several points of one
 *   run can be armed up front).
 * - A short write writes max(1, n / 2) bytes for real and returns that
 *   count: the caller must loop, exactly as for a short write the kernel
 *   makes when a disk fills up.
 *
 * Failure and recovery
 * --------------------
 * An injected failure returns -1 with errno set and does nothing else: the
 * file is left exactly as a real failure at that point would leave it
 * (apart from data loss in the page cache, which a test simulates by
 * truncating files itself).  Thread-safe in the sense that counters are
 * atomic; tests arm rules from one thread.
 */
#ifndef SHMQ_FAULT_H
#define SHMQ_FAULT_H

#include <fcntl.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

enum shmq_fault_op {
	SHMQ_FAULT_OPEN = 0,	/* open, openat */
	SHMQ_FAULT_WRITE,	/* write, pwrite */
	SHMQ_FAULT_FTRUNCATE,
	SHMQ_FAULT_FSYNC,
	SHMQ_FAULT_FDATASYNC,
	SHMQ_FAULT_RENAME,	/* renameat */
	SHMQ_FAULT_NOPS
};

/* The err of a rule that makes a write short instead of failing it. */
#define SHMQ_FAULT_SHORT 0
/* Rule flag: fail the Nth call and every later one of the kind. */
#define SHMQ_FAULT_STICKY 0x1u
/* Rule flag: do not fail the call; sleep err milliseconds, then make it. */
#define SHMQ_FAULT_DELAY 0x2u
/* Rules armed at once. */
#define SHMQ_FAULT_RULES 8

/* Non-zero while a rule is armed or calls are being counted. */
extern unsigned shmq__fault_active;

/*
 * Arm a rule: the nth call (1-based, counted since the last reset) of kind
 * op fails with errno err, or, with err == SHMQ_FAULT_SHORT and op ==
 * SHMQ_FAULT_WRITE, writes half.  flags: SHMQ_FAULT_STICKY, and
 * SHMQ_FAULT_DELAY to make the call err milliseconds slow instead of
 * failing it (a slow disk: code that runs it in a loop that also keeps
 * time must not take a stale clock for now).  Returns 0, or
 * -ENOSPC when SHMQ_FAULT_RULES rules are armed, -EINVAL for a bad op
 * or a delay outside 1..60000 ms.
 */
int shmq__fault_arm(enum shmq_fault_op op, unsigned long nth, int err,
		    unsigned flags);

/* Zero the counters and start counting (no rule armed). */
void shmq__fault_reset(void);

/* Drop every rule and stop counting: back to zero cost. */
void shmq__fault_disarm(void);

/* Calls of kind op seen since the last reset (while counting). */
unsigned long shmq__fault_calls(enum shmq_fault_op op);

/* How many injected faults fired since the last reset. */
unsigned long shmq__fault_fired(void);

/* The armed slow paths.  Same contracts as the system calls. */
int shmq__fault_openat_slow(int dfd, const char *path, int flags, mode_t mode);
ssize_t shmq__fault_write_slow(int fd, const void *buf, size_t n);
ssize_t shmq__fault_pwrite_slow(int fd, const void *buf, size_t n, off_t off);
int shmq__fault_ftruncate_slow(int fd, off_t len);
int shmq__fault_fsync_slow(int fd);
int shmq__fault_fdatasync_slow(int fd);
int shmq__fault_renameat_slow(int odfd, const char *op, int ndfd, const char *np);

#define SHMQ_FAULT_COLD(x) __builtin_expect(!!(x), 0)

static inline int shmq__fault_openat(int dfd, const char *path, int flags,
				     mode_t mode)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_openat_slow(dfd, path, flags, mode);
	return openat(dfd, path, flags, mode);
}

static inline ssize_t shmq__fault_write(int fd, const void *buf, size_t n)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_write_slow(fd, buf, n);
	return write(fd, buf, n);
}

static inline ssize_t shmq__fault_pwrite(int fd, const void *buf, size_t n,
					 off_t off)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_pwrite_slow(fd, buf, n, off);
	return pwrite(fd, buf, n, off);
}

static inline int shmq__fault_ftruncate(int fd, off_t len)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_ftruncate_slow(fd, len);
	return ftruncate(fd, len);
}

static inline int shmq__fault_fsync(int fd)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_fsync_slow(fd);
	return fsync(fd);
}

static inline int shmq__fault_fdatasync(int fd)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_fdatasync_slow(fd);
	return fdatasync(fd);
}

static inline int shmq__fault_renameat(int odfd, const char *op, int ndfd,
				       const char *np)
{
	if (SHMQ_FAULT_COLD(shmq__fault_active))
		return shmq__fault_renameat_slow(odfd, op, ndfd, np);
	return renameat(odfd, op, ndfd, np);
}

#endif /* SHMQ_FAULT_H */
