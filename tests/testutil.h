/*
 * testutil.h - what the multi-process tests share: a private namespace per
 * test, starting and stopping shmqd, bounded waits for children, the
 * plumbing of forked producers, and a checker of what a consumer sees.
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

/*
 * splitmix64: the next number of the stream in *s.  For the tests'
 * deterministic contents and choices; inline, as some fill buffers with it.
 */
static inline uint64_t tu_splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Monotonic clock, ns. */
uint64_t tu_now_ns(void);

/* ------------------------------------------------------------------------
 * Plumbing of the tests that fork producers: each bails out (or, in a
 * child, exits) on failure, so that a test reads as what it checks.
 */

/* shmq_open(dir) with default options. */
shmq_client_t *tu_open(const char *dir);

/* A topic of ring_bytes per partition, with full_policy; stall_ms 0: default. */
void tu_topic_create(shmq_client_t *c, const char *name, uint64_t ring_bytes,
		     int full_policy, uint32_t stall_ms);

/* shmq_producer_open(c, topic) with default options. */
shmq_producer_t *tu_producer(shmq_client_t *c, const char *topic);

/*
 * fork(), after flushing stdio.  With fds, a pipe from the child (which
 * keeps fds[1]) to the parent (which keeps fds[0]); fds may be NULL.
 */
pid_t tu_fork(int fds[2]);

/*
 * In a forked child: tap_child(), alarm(alarm_s) unless 0 (a child whose
 * parent died must not linger), and a client of its own on dir: never the
 * parent's handles.  Exits 90 if it cannot open one.
 */
shmq_client_t *tu_child_client(const char *dir, unsigned alarm_s);

/* A member of SHARED group `group` of topic, from the earliest message. */
shmq_consumer_t *tu_shared_member(shmq_client_t *c, const char *topic,
				  const char *group);

/*
 * Fork a member of SHARED group `group` of topic (tu_shared_member, on a
 * client of its own) that polls one message, whose value must be a
 * uint32_t, holds it without releasing or acknowledging it, tells the
 * parent which, and waits to be killed.  Returns its pid; *held is the
 * value it holds, or UINT32_MAX if it said nothing within 3 s.  For tests
 * of what happens to a dead member's message.
 */
pid_t tu_fork_holder(const char *dir, const char *topic, const char *group,
		     uint32_t *held);

/* Wait at most timeout_ms for fd to be readable, then read n bytes: true
 * if they came whole. */
bool tu_read_full(int fd, void *buf, size_t n, int timeout_ms);

/* shmq__ring_check() of partition 0 of topic in dir, attached afresh:
 * 0, or the error (with shmq_errdetail()). */
int tu_ring_check(const char *dir, const char *topic);

/* ------------------------------------------------------------------------
 * A stream checker: what one consumer has seen of a topic whose messages
 * are tu_msg_make()'s, from producers with ids below TU_STREAM_IDS.  Each
 * producer's messages must come with seq 0, 1, 2, ... (none lost, none
 * twice, in order); the messages of the producers the test forbids (a
 * killed or revoked claim's) must never come at all.
 */
#define TU_STREAM_IDS 4096u

struct tu_stream {
	const char *name;
	shmq_consumer_t *c;
	uint32_t magic;
	bool (*forbid)(uint32_t producer); /* may be NULL */
	uint64_t expect[TU_STREAM_IDS];	   /* the next seq due from each producer */
	uint64_t delivered;
	uint32_t bad;	    /* failed its checks, or unknown, or out of order */
	uint32_t forbidden; /* of a producer forbid() names */
};

/*
 * Clear s and open a consumer in group "check" of topic from the earliest
 * message; messages must carry magic.  Bails out on failure.
 */
void tu_stream_open(struct tu_stream *s, shmq_client_t *c, const char *topic,
		    uint32_t magic, bool (*forbid)(uint32_t producer));

/* Close s's consumer. */
void tu_stream_close(struct tu_stream *s);

/*
 * Count and judge message m; *id, *seq are its producer and sequence
 * number (*id is UINT32_MAX if it failed its checks).
 */
void tu_stream_judge(struct tu_stream *s, const struct shmq_msg *m, uint32_t *id,
		     uint64_t *seq);

/*
 * Poll once (at most timeout_ms); judge and release what came.  Returns
 * the poll's result (0: a message, whose producer and seq are in *id, *seq).
 */
int tu_stream_take(struct tu_stream *s, int timeout_ms, uint32_t *id, uint64_t *seq);

/*
 * Take and judge everything until message (want_id, want_seq) arrives or
 * timeout_ms passes.  Returns the milliseconds it took, or -1.
 */
double tu_stream_consume_until(struct tu_stream *s, uint32_t want_id,
			       uint64_t want_seq, int timeout_ms);

/* Take what is left: until a poll of 300 ms finds nothing (bounded). */
void tu_stream_drain(struct tu_stream *s);

#endif
