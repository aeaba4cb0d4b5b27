/*
 * harness.h - one measuring harness for shmq and every baseline.
 *
 * Design note
 *   Every measurement is a set of processes forked from the program (the
 *   coordinator) and pinned to CPUs, which attach, say they are ready, and
 *   start together when the coordinator says go.  The coordinator itself
 *   measures nothing: it sleeps in sigtimedwait() until they end (or a
 *   deadline passes, when it kills them by pid), so it neither steals a
 *   measured CPU nor holds transport state across a fork.  Results come
 *   back through shared memory mapped before the fork.
 *
 *   hx_latency() and hx_throughput() run the same ping-pong and the same
 *   verified stream over any struct bx_xport (xport.h): shmq, the built-in
 *   baselines (xport-base.c) and the plugins bench/run.sh builds
 *   (bench/ext/).  bench-shapes.c uses the process helpers with shmq's own
 *   API for the shapes only shmq has.
 *
 *   Outcome of a measurement: 0 measured; 1 not applicable (the transport
 *   cannot carry this size, say: why tells); -1 failed (why tells).  A
 *   failure of a transport that is not BX_OPTIONAL ends the program: a
 *   baseline that silently vanished would make every ratio a lie.
 */
#ifndef SHMQ_BENCH_HARNESS_H
#define SHMQ_BENCH_HARNESS_H

#include "common.h"
#include "hist.h"
#include "xport.h"

#define HX_MAXPROC 16

/* Call once, after bench_parse and (if shmq runs) bench_ns_setup. */
void hx_init(const struct bench_opts *o, struct bench_ns *ns);
const struct bench_opts *hx_opts(void);
struct bench_ns *hx_ns(void);		/* NULL when no namespace is set up */
const char *hx_tmpdir(void);		/* private directory, removed at exit */

/* ------------------------------------------------------------------------
 * Processes.
 */
struct hx_proc {
	int cpu;
	int (*fn)(void *arg);	/* its result is the exit status */
	void *arg;
	/* filled in by hx_run */
	pid_t pid;
	bool done;
	int status;
};

/*
 * Fork the n processes, wait until each has called hx_ready(), let them
 * go, and wait (without spinning) until they all end or timeout_s passes;
 * then kill what is left.  Returns 0 if all exited 0, else -1 with why.
 */
int hx_run(struct hx_proc *p, int n, unsigned timeout_s, char *why, size_t len);

/* In a measured process: attached; wait for the go of the coordinator. */
void hx_ready(void);

/* In a measured process: record why it fails, for the coordinator, and exit 1. */
void hx_fail(const char *fmt, ...) BENCH_NORETURN BENCH_PRINTF(1, 2);

/* Index of this measured process in hx_run's array (-1 in the coordinator). */
int hx_index(void);

/* Shared memory for results: zeroed, MAP_SHARED, inherited by the fork. */
void *hx_shared_alloc(size_t n);
void hx_shared_free(void *p, size_t n);

/* A timeout for a measurement that should take `seconds`. */
unsigned hx_timeout(double seconds);

/* ------------------------------------------------------------------------
 * Transports.
 */
extern const struct bx_xport bx_raw, bx_naive, bx_pipe, bx_uds, bx_mq_busy,
	bx_mq_block, bx_shmq_busy, bx_shmq_futex, bx_shmq_zc,
	bx_shmq_batch;

/* Every transport that --only admits: built-ins, then loaded plugins. */
unsigned hx_xports(const struct bx_xport ***out);
const struct bx_xport *hx_find(const char *name);

/* Print (and write as JSON) a "skipped: why" line per plugin not loaded. */
void hx_report_skipped(FILE *json, const char *bench);

/* ------------------------------------------------------------------------
 * Measurements.
 */
struct hx_lat_job {
	size_t size;		/* message bytes, a multiple of 8 */
	uint64_t gap_ns;	/* idle spin before each round trip, or 0 */
	size_t warm_n;		/* unrecorded round trips, at most ... */
	double warm_s;		/* ... or this long */
	size_t max_samples;	/* recorded round trips, at most ... */
	double seconds;		/* ... or this long */
};

int hx_latency(const struct bx_xport *x, const struct hx_lat_job *j,
	       struct hist *out, char *why, size_t len);

struct hx_tput_job {
	size_t size;		/* message bytes, a multiple of 8 */
	size_t max_msg;		/* the channel's configured maximum */
	size_t ring_bytes;	/* queue memory where the transport has a choice */
	double seconds;		/* measured sending */
	size_t warm_n;		/* unmeasured messages first */
};

struct hx_tput_res {
	uint64_t msgs;		/* verified messages in the measured window */
	uint64_t ns;		/* the window, on the consumer's clock */
};

int hx_throughput(const struct bx_xport *x, const struct hx_tput_job *j,
		  struct hx_tput_res *out, char *why, size_t len);

#endif /* SHMQ_BENCH_HARNESS_H */
