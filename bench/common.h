/*
 * common.h - what the benchmark programs share.
 *
 * Design note
 *   Every bench-*.c program measures shmq beside its baselines, in the
 *   same run, between processes pinned to two cores.  This file gives them
 *   the same footing: one clock, one way to pin, to compute spreads over
 *   repeated runs, to describe the machine, to stamp and check messages,
 *   and to reach a private shmqd namespace.  The measured loops themselves
 *   are in harness.c (every transport) and bench-shapes.c (shmq only).
 *
 *   A namespace is either handed in (--dir DIR, what bench/run.sh does: it
 *   starts one shmqd for the whole run and cleans up in a trap), or made
 *   here (a mkdtemp directory and a shmqd child started with fork/exec), so
 *   that one program can also be run alone.  Topics are created through the
 *   public API and deleted by the program that made them; `--cleanup`
 *   deletes whatever a killed program left behind.
 *
 *   Nothing here is on a measured path except bench_now_ns().
 */
#ifndef SHMQ_BENCH_COMMON_H
#define SHMQ_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#include "shmq.h"

#define BENCH_NORETURN __attribute__((noreturn))
#define BENCH_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ------------------------------------------------------------------------
 * Options shared by every program (command line, then environment).
 */
struct bench_opts {
	const char *dir;	/* --dir: a namespace served by a running shmqd */
	const char *shmqd;	/* --shmqd: binary to start when dir is NULL */
	const char *json;	/* --json: append JSON lines here */
	const char *only;	/* --only a,b: run only these transports */
	const char *plots;	/* --plots DIR: write gnuplot data and scripts */
	const char *targets;	/* --targets FILE: append the target verdicts */
	bool machine;		/* --machine: print the machine and exit */
	bool cleanup;		/* --cleanup: delete every topic of --dir */
	int runs;		/* BENCH_RUNS, default 3 (5 with BENCH_FULL) */
	bool full;		/* BENCH_FULL=1: longer runs, more sizes */
	int timeout_s;		/* BENCH_TIMEOUT: watchdog per measurement */
	int cpu[2];		/* BENCH_CPUS "a,b", default the first two allowed */
	int ncpu;		/* 2, or 1 when only one CPU is usable */
};

/*
 * Parse argv and the BENCH_* environment.  usage_extra is printed after the
 * common options by --help.  Exits on a bad option.
 */
void bench_parse(int argc, char **argv, const char *usage_extra,
		 struct bench_opts *o);

/*
 * The start of every program's main(): bench_parse(), then open --json
 * (the file it returns, or NULL) and do what --machine asks (describe the
 * machine) and, given ns, what --cleanup asks (delete every topic of
 * --dir): either exits 0 when done.
 */
struct bench_ns;
FILE *bench_start(int argc, char **argv, const char *usage_extra,
		  struct bench_opts *o, struct bench_ns *ns);

/* An integer or a double from the environment, or def. */
long bench_env_long(const char *name, long def);
double bench_env_double(const char *name, double def);

/* Should this transport run under --only (a comma-separated list)? */
bool bench_want(const struct bench_opts *o, const char *name);

/* quick (the default) or full: pick the figure for the mode. */
static inline double bench_by_mode(const struct bench_opts *o, double quick,
				   double full)
{
	return o->full ? full : quick;
}

/* ------------------------------------------------------------------------
 * Errors.  A benchmark that cannot measure what it says must stop: these
 * print, run the cleanup registered with bench_atexit_ns() and exit 1.
 */
void bench_die(const char *fmt, ...) BENCH_NORETURN BENCH_PRINTF(1, 2);

/* Die with shmq_strerror(rc) and shmq_errdetail() if rc < 0. */
void bench_check(int rc, const char *what);

/* ------------------------------------------------------------------------
 * Time, CPUs and the measured peer process.
 */

/* CLOCK_MONOTONIC in ns; the vDSO makes it a few tens of ns, no syscall. */
static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A spin-wait hint to the CPU (and to a sibling hyperthread). */
static inline void bench_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Pin the calling process to cpu; dies if the kernel refuses. */
void bench_pin(int cpu);

/*
 * Fork a peer pinned to cpu that runs fn(arg) and exits with its result.
 * The peer dies with its parent (PR_SET_DEATHSIG) and under the watchdog
 * (alarm), so a lost message ends the run instead of hanging it.
 */
pid_t bench_fork(const struct bench_opts *o, int cpu, int (*fn)(void *),
		 void *arg);

/* Reap the peer; dies unless it exited 0. */
void bench_reap(pid_t pid, const char *what);

/*
 * Arm the watchdog for the current measurement in this process (alarm(0)
 * disarms it).  When it fires, the process cleans up and exits 1.
 */
void bench_watchdog(const struct bench_opts *o);

/*
 * A one-byte handshake over a pipe: the peer says it has attached before
 * the measurement starts.  bench_sync_wait() dies on EOF (the peer failed).
 */
struct bench_sync {
	int fd[2];
};
void bench_sync_init(struct bench_sync *s);
void bench_sync_post(struct bench_sync *s);	/* in the peer */
void bench_sync_wait(struct bench_sync *s);	/* in the parent */
void bench_sync_close(struct bench_sync *s);

/* read/write the whole buffer on a blocking fd; die on error or EOF. */
void bench_read_full(int fd, void *buf, size_t n);
void bench_write_full(int fd, const void *buf, size_t n);

/* ------------------------------------------------------------------------
 * Statistics.
 */

/* Sort samples in place, ascending. */
void bench_sort_u64(uint64_t *v, size_t n);

/* Nearest-rank percentile (0 < p <= 100) of sorted samples. */
uint64_t bench_pct(const uint64_t *sorted, size_t n, double p);

/* Median and min-max of the per-run values of one figure. */
struct bench_spread {
	double med;
	double min;
	double max;
};
void bench_spread(const double *v, int n, struct bench_spread *out);

/* "med [min-max]" into buf, with printf format fmt for each number. */
const char *bench_fmt_spread(char *buf, size_t n, const char *fmt,
			     const struct bench_spread *s);

/* ------------------------------------------------------------------------
 * Output.
 */

/* Print the machine to stdout and, if json is open, one JSON line. */
void bench_machine(FILE *json);

/* The cost of one CLOCK_MONOTONIC read: the cheapest and the median of many. */
void bench_clock_cost(uint64_t *min_ns, uint64_t *median_ns);

/* A JSON string, quoted and escaped. */
void bench_json_str(FILE *f, const char *s);

/* A file of --plots DIR opened for writing ("w"), or NULL without --plots. */
FILE *bench_plot_open(const struct bench_opts *o, const char *name);

/* Append one line to --targets FILE (and nothing without it). */
void bench_target_line(const struct bench_opts *o, const char *fmt, ...)
	BENCH_PRINTF(2, 3);

/* The JSON lines file from --json, opened for append; NULL if none. */
FILE *bench_json_open(const struct bench_opts *o);

/* ISO 8601 UTC time of program start, for every JSON line. */
const char *bench_started(void);

/* ------------------------------------------------------------------------
 * The shmq namespace.
 */
struct bench_ns {
	char dir[4096];
	pid_t shmqd;		/* > 0 when we started it */
	bool own_dir;		/* we made dir and remove it */
	shmq_client_t *client;
};

/*
 * Use o->dir, or make a temporary directory and start shmqd in it.  Opens
 * ns->client.  Registers ns for cleanup by bench_die() and at exit.
 */
void bench_ns_setup(struct bench_ns *ns, const struct bench_opts *o);

/*
 * The same, but a directory we make goes under parent (NULL: $TMPDIR or
 * /tmp): the spill benchmark needs its data directory on a real disk.
 */
void bench_ns_setup_in(struct bench_ns *ns, const struct bench_opts *o,
		       const char *parent);

/* Remove dir and everything below it (no links followed); quietly. */
void bench_rm_tree(const char *dir);

/* Delete our topics, stop our shmqd, remove our directory, close. */
void bench_ns_teardown(struct bench_ns *ns);

/*
 * Create a topic of `partitions` partitions with the BLOCK policy.
 * Retries while shmqd is not yet listening (it may still be starting), for
 * a few seconds.  The topic is remembered and deleted by
 * bench_topic_delete() or teardown.  Returns 0 or the shmq error (the
 * detail is in shmq_errdetail()); never dies, so that a transport can
 * report it.
 */
int bench_topic_create(struct bench_ns *ns, const char *name,
		       uint64_t ring_bytes, uint32_t max_message,
		       uint32_t partitions);
/* The same with every topic option given (spill mode, full policy ...). */
int bench_topic_create_opts(struct bench_ns *ns, const char *name,
			    const struct shmq_topic_opts *opts);
void bench_topic_delete(struct bench_ns *ns, const char *name);

/* Delete every topic of the namespace (--cleanup). */
void bench_topic_delete_all(struct bench_ns *ns);

/* ------------------------------------------------------------------------
 * Message contents.  A message of n bytes (a multiple of 8, at least 8)
 * carries its sequence number in word 0 and a check word in the last word
 * of every cache line it touches (of a partial last line too, unless that
 * word is word 0), so a consumer that verifies it has read every line the
 * producer wrote: nothing is counted that was not really moved.
 */
#define BENCH_LINE 64u
#define BENCH_STOP UINT64_MAX	/* sequence number that ends a stream */

/* Write seq and the check words into msg (n bytes). */
void bench_stamp_msg(void *msg, size_t n, uint64_t seq);

/* Does msg (n bytes) carry seq and all its check words? */
bool bench_verify_msg(const void *msg, size_t n, uint64_t seq);

/* The sequence number of a message (an unaligned load is fine). */
uint64_t bench_msg_seq(const void *msg);

#endif /* SHMQ_BENCH_COMMON_H */
