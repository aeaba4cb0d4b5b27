/*
 * wait.c - futex wait and wake on 32-bit words in shared memory.
 *
 * Design note
 * -----------
 * An event is a pair of words: a sequence word to sleep on and a flag that
 * says somebody may be asleep.  A waiter reads the sequence, sets the flag
 * with an atomic exchange (a full barrier), re-checks its condition and
 * then sleeps here only while the sequence still holds the value it read
 * (shmq__event_prepare, then shmq__futex_wait).  A waker that changed the
 * condition fences, and only if the flag is set exchanges it back to 0,
 * bumps the sequence and wakes everyone (shmq__event_signal).  So only the
 * first waker after a sleep pays for a system call; the others see a clear
 * flag.  Dekker's pattern on (condition, flag) makes sure that either the
 * waiter's re-check sees the change or the waker sees the flag.  A waiter
 * that stops waiting (timeout, or it found its condition) leaves the flag
 * set: the next waker pays one needless wake, which is cheaper than a
 * second atomic on every wait, and a dead waiter cannot leave a count
 * behind.  The kernel compares the word and queues the
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

#include "atomics.h"

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

uint32_t shmq__event_prepare(uint32_t *seq, uint32_t *flag)
{
	uint32_t s = ck_pr_load_32(seq);

	/* The exchange is the full barrier before the caller's re-check. */
	ck_pr_fas_32(flag, 1);
	return s;
}

void shmq__event_signal(uint32_t *seq, uint32_t *flag)
{
	if (ck_pr_load_32(flag) && ck_pr_fas_32(flag, 0)) {
		ck_pr_inc_32(seq);
		shmq__futex_wake_all(seq);
	}
}
