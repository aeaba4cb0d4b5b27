/*
 * bench-groups.c - how fast consumer groups recover from a member's death.
 *
 * Design note
 *   Two measurements, each repeated BENCH_GROUP_RUNS times (quick 15, full
 *   50), reported as median, p90 and max:
 *
 *   rebalance   a PARTITIONED group of two members over 4 partitions.  The
 *               victim (a child process pinned to the second CPU) joins and
 *               polls; the survivor (this process, on the first CPU) waits
 *               until it owns 2 partitions, SIGKILLs the victim, and polls
 *               until it owns all 4.  The time is from kill() to that poll.
 *   redelivery  a SHARED group: the victim takes a message and holds it
 *               (never acknowledges); the survivor SIGKILLs it and polls
 *               until it receives that message with delivery_count 2.
 *
 *   Both include shmqd's detection: it checks members every 20 ms or so
 *   (reap.c, MEMBER_PASSES), so the expected median is about half of that,
 *   plus the poll that notices.  The bound is 100 ms.  Every wait
 *   is bounded (5 s), and a run that exceeds it fails the program.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PARTS 4
#define BOUND_NS 5000000000ull

static struct bench_opts o;
static struct bench_ns ns;

static void die_rc(int rc, const char *what)
{
	if (rc < 0)
		bench_die("%s: %s (%s)", what, shmq_strerror(rc), shmq_errdetail());
}

static shmq_consumer_t *join(shmq_client_t *cl, const char *topic, int mode)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;

	co.mode = mode;
	co.from = SHMQ_FROM_EARLIEST;
	die_rc(shmq_consumer_open(cl, topic, "g", &co, &c), "shmq_consumer_open");
	return c;
}

/* The victim: join, say so on fd, and poll (or hold one message) until killed. */
static void victim(const char *topic, int mode, int fd)
{
	shmq_client_t *cl;
	shmq_consumer_t *c;
	struct shmq_msg m;
	char one = 1;

	bench_pin(o.cpu[o.ncpu > 1 ? 1 : 0]);
	alarm(30);
	if (shmq_open(ns.dir, NULL, &cl))
		_exit(2);
	c = join(cl, topic, mode);
	if (mode == SHMQ_GROUP_SHARED) {
		if (shmq_consumer_poll(c, &m, 5000))
			_exit(3);
		/* Held, never acknowledged. */
	} else {
		shmq_consumer_poll(c, &m, 0);
	}
	if (write(fd, &one, 1) != 1)
		_exit(4);
	for (;;) {
		if (mode == SHMQ_GROUP_SHARED)
			pause();
		else
			shmq_consumer_poll(c, &m, 10);
	}
}

/* One run; returns the time from kill() to recovery, in ns. */
static uint64_t run_one(int mode, int r)
{
	char topic[SHMQ_NAME_MAX + 1];
	shmq_consumer_t *c;
	struct shmq_msg m;
	uint64_t t0, t = 0, start;
	int fds[2], rc;
	pid_t pid;
	char one;

	snprintf(topic, sizeof(topic), "grp-%s-%d",
		 mode == SHMQ_GROUP_SHARED ? "shared" : "part", r);
	die_rc(bench_topic_create(&ns, topic, 64 << 10, 1024, PARTS), "create topic");
	c = join(ns.client, topic, mode);
	if (mode == SHMQ_GROUP_SHARED) {
		shmq_producer_t *p;
		uint64_t v = 42;

		die_rc(shmq_producer_open(ns.client, topic, NULL, &p), "producer");
		die_rc(shmq_send(p, 0, NULL, 0, &v, sizeof(v), 1000, NULL), "send");
		shmq_producer_close(p);
	}
	if (pipe(fds))
		bench_die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(fds[0]);
		victim(topic, mode, fds[1]);
	}
	close(fds[1]);
	if (read(fds[0], &one, 1) != 1)
		bench_die("the victim did not join");
	close(fds[0]);
	if (mode == SHMQ_GROUP_PARTITIONED) {
		/* Settled: the two members own two partitions each. */
		start = bench_now_ns();
		do {
			shmq_consumer_poll(c, &m, 1);
			shmq_consumer_release(c);
			if (bench_now_ns() - start > BOUND_NS)
				bench_die("rebalance run %d: never owned 2 of %d partitions", r, PARTS);
		} while (shmq_consumer_assignment(c, NULL, 0) != PARTS / 2);
	}
	t0 = bench_now_ns();
	kill(pid, SIGKILL);
	for (;;) {
		rc = shmq_consumer_poll(c, &m, 1);
		if (mode == SHMQ_GROUP_SHARED && rc == 0) {
			if (m.delivery_count != 2)
				bench_die("redelivery run %d: delivery_count %u, not 2", r,
					  m.delivery_count);
			t = bench_now_ns() - t0;
			break;
		}
		shmq_consumer_release(c);
		if (mode == SHMQ_GROUP_PARTITIONED &&
		    shmq_consumer_assignment(c, NULL, 0) == PARTS) {
			t = bench_now_ns() - t0;
			break;
		}
		if (bench_now_ns() - t0 > BOUND_NS)
			bench_die("%s run %d: no recovery within 5 s",
				  mode == SHMQ_GROUP_SHARED ? "redelivery" : "rebalance", r);
	}
	waitpid(pid, NULL, 0);
	shmq_consumer_close(c);
	bench_topic_delete(&ns, topic);
	return t;
}

static void report(FILE *json, const char *what, const char *metric,
		   uint64_t *v, int n)
{
	double med, p90, max;

	bench_sort_u64(v, (size_t)n);
	med = (double)bench_pct(v, (size_t)n, 50) / 1e6;
	p90 = (double)bench_pct(v, (size_t)n, 90) / 1e6;
	max = (double)v[n - 1] / 1e6;
	printf("  %-52s %8.2f %8.2f %8.2f   (%d runs)\n", what, med, p90, max, n);
	bench_target_line(&o, "%-58s %-6s %7.2f ms (max %.2f)  bound <= 100 ms  %s", what, "ms",
			  med, max, max <= 100 ? "met" : "MISSED");
	if (json)
		fprintf(json, "{\"bench\":\"groups\",\"time\":\"%s\",\"transport\":\"shmq\","
			"\"metric\":\"%s\",\"runs\":%d,\"median_ms\":%.3f,\"p90_ms\":%.3f,"
			"\"max_ms\":%.3f}\n",
			bench_started(), metric, n, med, p90, max);
}

int main(int argc, char **argv)
{
	uint64_t reb[200], red[200];
	uint64_t t_start = bench_now_ns();
	int runs, r;
	FILE *json;

	json = bench_start(argc, argv,
			   "  BENCH_GROUP_RUNS     deaths measured per kind (15; full 50)\n",
			   &o, &ns);
	bench_ns_setup(&ns, &o);
	runs = (int)bench_env_long("BENCH_GROUP_RUNS", o.full ? 50 : 15);
	if (runs < 1 || runs > 200)
		bench_die("BENCH_GROUP_RUNS must be 1..200");
	bench_pin(o.cpu[0]);
	printf("Groups: recovery after a member is SIGKILLed (from kill() to the survivor's\n"
	       "  poll that sees it), shmqd reaping every 5 ms, members checked every 20 ms.\n");
	printf("  %-52s %8s %8s %8s\n", "", "p50 ms", "p90 ms", "max ms");
	for (r = 0; r < runs; r++) {
		/* Interleaved, so that both see the same machine. */
		reb[r] = run_one(SHMQ_GROUP_PARTITIONED, r);
		red[r] = run_one(SHMQ_GROUP_SHARED, r);
	}
	report(json, "partitioned group: rebalance after a member's death",
	       "rebalance_after_death", reb, runs);
	report(json, "shared group: held message delivered again after death",
	       "redelivery_after_death", red, runs);
	printf("  (%.1f s)\n\n", (double)(bench_now_ns() - t_start) / 1e9);
	bench_ns_teardown(&ns);
	if (json)
		fclose(json);
	return 0;
}
