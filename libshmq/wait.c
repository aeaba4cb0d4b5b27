/*
 * wait.c - futex wait and wake on 32-bit words in shared memory.
 *
 * Design note
 * -----------
 * The waiting protocol lives with its callers (ring.c): a waiter reads a
 * sequence word, announces itself in a waiter count, re-checks its
 * condition and then sleeps here only while the word still holds the value
 * it read; a waker changes the word first and then calls
 * shmq__futex_wake_all().  The kernel compares the word and queues the
 * waiter atomically, so a wake that lands between the caller's check and
 * the sleep makes FUTEX_WAIT return at once instead of being lost.
 *
 * The words live in MAP_SHARED memory used by several processes, so these
 * are the shared futex operations: FUTEX_PRIVATE_FLAG would key the wait
 * queue by this process's address space and never meet a waker in another
 * process.
 *
 * Every return is a hint, not a verdict.  Wake-ups may be spurious, signals
 * interrupt (EINTR), the word may already differ (EAGAIN) and timeouts
 * expire (ETIMEDOUT); callers re-check their condition and their own
 * deadline after each return, so the errors are dropped here.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shmq_int.h"

void shmq__futex_wait(uint32_t *word, uint32_t expected, uint64_t timeout_ns)
{
	struct timespec ts, *tsp = NULL;

	/* A zero timeout cannot sleep; spare the system call. */
	if (timeout_ns == 0)
		return;
	if (timeout_ns != UINT64_MAX) {
		/* FUTEX_WAIT takes a relative timeout on CLOCK_MONOTONIC. */
		ts.tv_sec = (time_t)(timeout_ns / 1000000000ull);
		ts.tv_nsec = (long)(timeout_ns % 1000000000ull);
		tsp = &ts;
	}
	(void)syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, NULL, 0);
}

void shmq__futex_wake_all(uint32_t *word)
{
	(void)syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}
