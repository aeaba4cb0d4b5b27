/*
 * testutil.h - what the multi-process tests share: a private namespace per
 * test, starting and stopping shmqd, bounded waits for children.
 *
 * Every helper is bounded in time; none spins for ever.  Tests also arm
 * alarm() through tu_init() so that a hang fails instead of stalling CI.
 */
#ifndef SHMQ_TESTUTIL_H
#define SHMQ_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmq.h"

/* Arm alarm(seconds) and make SIGPIPE harmless.  Call first. */
void tu_init(unsigned alarm_seconds);

/* Directory with the built programs (SHMQ_BUILD, set by make check). */
const char *tu_build_dir(void);

/* Path of a built program ("shmqd", "shmqctl") into buf. */
void tu_program(const char *name, char *buf, size_t n);

/*
 * Make a fresh, empty data directory /tmp/shmq-t-<tag>-<pid>-<n> into buf.
 * Bails out on failure.
 */
void tu_make_dir(const char *tag, char *buf, size_t n);

/*
 * Start shmqd on dir with extra arguments (NULL-terminated, may be NULL) and
 * wait (at most 5 s) until it answers on its control socket.  Returns its
 * pid; bails out if it does not come up.
 */
pid_t tu_shmqd_start(const char *dir, const char *const *extra_args);

/*
 * Create topic name in dir without shmqd, as shmqd would (segment and topic
 * file), for tests that drive the library's internals themselves (the
 * reaper, threads).  tp's unset fields take their defaults; map is the
 * creator's mapping.  Bails out on failure.
 */
struct shmq_topic_params;
struct shmq_map;
void tu_topic_direct(const char *dir, const char *name,
		     struct shmq_topic_params *tp, struct shmq_map *map);

/* SIGTERM (or SIGKILL if hard) and reap, at most 5 s.  Returns wait status. */
int tu_shmqd_stop(pid_t pid, int hard);

/*
 * Delete every topic's shared-memory segment of the namespace in dir and
 * remove dir recursively.  For the end of a test.
 */
void tu_cleanup(const char *dir);

/*
 * Wait for child pid at most timeout_ms; kill it (SIGKILL) if it has not
 * exited by then.  Returns its wait status, or -1 if it had to be killed.
 */
int tu_wait_child(pid_t pid, int timeout_ms);

/* CPU time (user + system) of this process and its reaped children, ns. */
uint64_t tu_cpu_ns(int who); /* who: RUSAGE_SELF or RUSAGE_CHILDREN */

/* A 32-bit checksum of a buffer, for payload verification. */
uint32_t tu_crc(const void *p, size_t n);

/*
 * Messages that prove themselves: a header (a test's magic, the producer,
 * a sequence number, the length, a checksum of the rest), then a pattern
 * derived from (producer, seq).  len >= sizeof(struct tu_msg_head).
 */
struct tu_msg_head {
	uint32_t magic;
	uint32_t producer;
	uint64_t seq;
	uint32_t len;
	uint32_t crc;
};

/* Fill buf[0..len) with message (producer, seq); returns len. */
size_t tu_msg_make(void *buf, size_t len, uint32_t magic, uint32_t producer,
		   uint64_t seq);

/* Is m one of ours (magic), whole and intact?  Fills producer and seq. */
bool tu_msg_check(const struct shmq_msg *m, uint32_t magic, uint32_t *producer,
		  uint64_t *seq);

/* Monotonic clock, ns. */
uint64_t tu_now_ns(void);

#endif
