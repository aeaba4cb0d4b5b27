/*
 * bench-latency.c - round-trip latency of 64-byte messages, ping-pong
 * between two processes pinned to two cores: shmq (busy-poll and futex
 * wait) beside a Unix domain socket, in the same run.
 *
 * Design note
 *   What is measured: the parent, pinned to the first CPU, stamps a 64-byte
 *   message with its sequence number, reads CLOCK_MONOTONIC, sends it, waits
 *   for the peer (pinned to the second CPU) to echo it back, and reads the
 *   clock again.  Every round trip is one sample; all samples are kept and
 *   sorted, so the percentiles are exact (nearest rank).  The echo is
 *   checked (sequence number and check word) outside the timed interval.
 *
 *   shmq: two topics of one partition, ping and pong, created fresh for
 *   each measurement so that no earlier group or frame lingers.  The parent
 *   produces into ping and consumes pong; the peer consumes ping and
 *   produces a copy of each message into pong.  Two modes:
 *     busy-poll   consumers opened with SHMQ_CONSUMER_BUSY_POLL, poll(-1):
 *                 they spin and never sleep;
 *     futex wait  plain consumers, poll(-1): spin briefly, then sleep on a
 *                 futex, as an idle consumer does.
 *   The baseline is a SOCK_SEQPACKET socketpair made before fork, blocking
 *   read and write, the usual way two local processes talk.  The baseline
 *   has one mode: a socket cannot spin without also burning a syscall per
 *   try, so its blocking form is the one applications use.
 *
 *   Idle peer: a shmq consumer spins for a while before it sleeps, so in a
 *   back-to-back ping-pong, where the next message always comes within
 *   the spin, "futex wait" never sleeps and measures the same path as
 *   busy-poll.  The second table therefore spins BENCH_LAT_IDLE_GAP_US
 *   (100 us, longer than any spin phase) on the parent's clock before each
 *   round trip: the echo side has gone to sleep on its futex (or in
 *   read()) when the ping comes, and the round trip includes the wake-up,
 *   which is the latency an idle consumer sees.  The socket is measured
 *   the same way beside it.
 *
 *   Fairness: both transports move the same 64 bytes with a copy on each
 *   side, between the same two pinned processes, interleaved within each
 *   run (each transport in turn, then again) so that drift in the machine (other
 *   tenants of a VM, frequency) hits all of them alike.  Each run starts
 *   with a warm-up that is not recorded (caches, page faults, the
 *   scheduler's idea of the two tasks).
 *
 *   Repetitions: BENCH_RUNS runs (default 3); each figure is the median of
 *   the runs' values with the min-max spread beside it, and the ratio
 *   shmq/unix is the ratio of those medians (below 1: shmq is faster).
 *
 *   With one usable CPU both processes share it.  Then busy-poll would
 *   spin away a whole time slice per message, so it is skipped, and the
 *   heading says so.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSG_BYTES 64u

/*
 * The measurements, in the order they run within a run.  The idle ones
 * leave a gap between round trips so that the echo side has gone to sleep
 * when the next message comes: the futex (and socket) wake-up path.
 */
enum transport { T_UDS, T_BUSY, T_FUTEX, T_UDS_IDLE, T_FUTEX_IDLE, T_COUNT };

static const char *const t_label[T_COUNT] = {
	[T_UDS] = "unix seqpacket, blocking",
	[T_BUSY] = "shmq busy-poll",
	[T_FUTEX] = "shmq futex wait",
	[T_UDS_IDLE] = "unix seqpacket, blocking",
	[T_FUTEX_IDLE] = "shmq futex wait",
};
static const struct {
	const char *transport, *wait;
	bool idle;
	enum transport baseline;
} t_info[T_COUNT] = {
	[T_UDS] = { "uds-seqpacket", "blocking", false, T_UDS },
	[T_BUSY] = { "shmq", "busy-poll", false, T_UDS },
	[T_FUTEX] = { "shmq", "futex", false, T_UDS },
	[T_UDS_IDLE] = { "uds-seqpacket", "blocking", true, T_UDS_IDLE },
	[T_FUTEX_IDLE] = { "shmq", "futex", true, T_UDS_IDLE },
};

/* Figures kept per run. */
enum fig { F_P50, F_P99, F_P999, F_MIN, F_MAX, F_MEAN, F_COUNT };

/* How one measurement is shaped. */
struct lat_shape {
	size_t samples;		/* recorded round trips per run */
	size_t warmup;		/* unrecorded round trips before them */
	uint64_t gap_ns;	/* idle time before each round trip, or 0 */
};

struct lat_cfg {
	const struct bench_opts *o;
	struct bench_ns *ns;
	struct lat_shape hot;	/* back-to-back */
	struct lat_shape idle;	/* with gaps */
	const struct lat_shape *sh; /* the one being measured */
	uint64_t *buf;		/* [max samples] */
};

/*
 * Wait out the gap before a round trip by spinning on the clock: this
 * side stays awake and precise, while the echo side, finding nothing for
 * longer than any spin phase, goes to sleep.
 */
static void gap(const struct lat_cfg *c)
{
	uint64_t until;

	if (!c->sh->gap_ns)
		return;
	until = bench_now_ns() + c->sh->gap_ns;
	while (bench_now_ns() < until)
		bench_relax();
}

/* ------------------------------------------------------------------------
 * Unix domain socket.
 */
struct uds_peer {
	int fd;			/* our end */
	int other;		/* the parent's end, closed in the peer */
};

static int uds_echo(void *arg)
{
	struct uds_peer *p = arg;
	char msg[MSG_BYTES];

	close(p->other);
	for (;;) {
		ssize_t r = read(p->fd, msg, sizeof(msg));

		if (r < 0 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(msg))
			bench_die("uds echo: read returned %zd: %s", r,
				  r < 0 ? strerror(errno) : "short message");
		if (bench_msg_seq(msg) == BENCH_STOP)
			return 0;
		bench_write_full(p->fd, msg, sizeof(msg));
	}
}

static void run_uds(struct lat_cfg *c)
{
	char msg[MSG_BYTES], reply[MSG_BYTES];
	struct uds_peer peer;
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		bench_die("socketpair: %s", strerror(errno));
	peer.fd = sv[1];
	peer.other = sv[0];
	pid = bench_fork(c->o, c->o->cpu[1], uds_echo, &peer);
	close(sv[1]);
	bench_watchdog(c->o);

	for (size_t i = 0; i < c->sh->warmup + c->sh->samples; i++) {
		uint64_t t0, t1;
		ssize_t r;

		bench_stamp_msg(msg, sizeof(msg), i);
		gap(c);
		t0 = bench_now_ns();
		/* A seqpacket write is one whole message or an error. */
		if (write(sv[0], msg, sizeof(msg)) != (ssize_t)sizeof(msg))
			bench_die("uds write: %s", strerror(errno));
		do
			r = read(sv[0], reply, sizeof(reply));
		while (r < 0 && errno == EINTR);
		t1 = bench_now_ns();
		if (r != (ssize_t)sizeof(reply) ||
		    !bench_verify_msg(reply, sizeof(reply), i))
			bench_die("uds: round trip %zu came back wrong (%zd bytes)", i, r);
		if (i >= c->sh->warmup)
			c->buf[i - c->sh->warmup] = t1 - t0;
	}
	bench_stamp_msg(msg, sizeof(msg), BENCH_STOP);
	bench_write_full(sv[0], msg, sizeof(msg));
	alarm(0);
	bench_reap(pid, "uds echo");
	close(sv[0]);
}

/* ------------------------------------------------------------------------
 * shmq.
 */
struct shmq_peer {
	struct lat_cfg *cfg;
	const char *ping, *pong;
	bool busy;
	struct bench_sync ready;
};

static shmq_consumer_t *open_consumer(shmq_client_t *cl, const char *topic,
				      bool busy)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;

	/* A fresh topic: start at its beginning, whoever attaches first. */
	co.from = SHMQ_FROM_EARLIEST;
	co.flags = busy ? SHMQ_CONSUMER_BUSY_POLL : 0;
	bench_check(shmq_consumer_open(cl, topic, "bench", &co, &c),
		    "shmq_consumer_open");
	return c;
}

static shmq_producer_t *open_producer(shmq_client_t *cl, const char *topic)
{
	shmq_producer_t *p;

	bench_check(shmq_producer_open(cl, topic, NULL, &p), "shmq_producer_open");
	return p;
}

/* Wait for the next message, in the mode under test. */
static void take(shmq_consumer_t *c, struct shmq_msg *m)
{
	int rc;

	do
		rc = shmq_consumer_poll(c, m, -1);
	while (rc == -EAGAIN);
	bench_check(rc, "shmq_consumer_poll");
	if (m->value_len != MSG_BYTES)
		bench_die("shmq: message of %zu bytes, expected %u", m->value_len,
			  MSG_BYTES);
}

static int shmq_echo(void *arg)
{
	struct shmq_peer *p = arg;
	shmq_client_t *cl;
	shmq_consumer_t *in;
	shmq_producer_t *out;
	struct shmq_msg m;

	/* Our own client: nothing opened by the parent crosses the fork. */
	bench_check(shmq_open(p->cfg->ns->dir, NULL, &cl), "shmq_open");
	in = open_consumer(cl, p->ping, p->busy);
	out = open_producer(cl, p->pong);
	bench_sync_post(&p->ready);

	for (;;) {
		take(in, &m);
		if (bench_msg_seq(m.value) == BENCH_STOP)
			break;
		/* Echo straight from the ring view: the copy is shmq_send's. */
		bench_check(shmq_send(out, 0, NULL, 0, m.value, m.value_len, -1,
				      NULL), "shmq_send (echo)");
		shmq_consumer_release(in);
	}
	shmq_consumer_close(in);
	shmq_producer_close(out);
	shmq_close(cl);
	return 0;
}

static void run_shmq(struct lat_cfg *c, enum transport t, int run)
{
	bool busy = t == T_BUSY;
	char ping[SHMQ_NAME_MAX + 1], pong[SHMQ_NAME_MAX + 1];
	char msg[MSG_BYTES] __attribute__((aligned(64)));
	struct shmq_peer peer;
	shmq_consumer_t *in;
	shmq_producer_t *out;
	struct shmq_msg m;
	pid_t pid;

	/* Fresh topics per measurement: no group or frame of an earlier one. */
	snprintf(ping, sizeof(ping), "lat-%d-%d-ping", (int)t, run);
	snprintf(pong, sizeof(pong), "lat-%d-%d-pong", (int)t, run);
	bench_topic_create(c->ns, ping, 1u << 20, 4096);
	bench_topic_create(c->ns, pong, 1u << 20, 4096);

	memset(&peer, 0, sizeof(peer));
	peer.cfg = c;
	peer.ping = ping;
	peer.pong = pong;
	peer.busy = busy;
	bench_sync_init(&peer.ready);
	pid = bench_fork(c->o, c->o->cpu[1], shmq_echo, &peer);
	bench_watchdog(c->o);

	out = open_producer(c->ns->client, ping);
	in = open_consumer(c->ns->client, pong, busy);
	bench_sync_wait(&peer.ready);
	bench_sync_close(&peer.ready);

	for (size_t i = 0; i < c->sh->warmup + c->sh->samples; i++) {
		uint64_t t0, t1;
		bool ok;

		bench_stamp_msg(msg, sizeof(msg), i);
		gap(c);
		t0 = bench_now_ns();
		bench_check(shmq_send(out, 0, NULL, 0, msg, sizeof(msg), -1, NULL),
			    "shmq_send");
		take(in, &m);
		t1 = bench_now_ns();
		ok = bench_verify_msg(m.value, m.value_len, i);
		shmq_consumer_release(in);
		if (!ok)
			bench_die("shmq: round trip %zu came back wrong", i);
		if (i >= c->sh->warmup)
			c->buf[i - c->sh->warmup] = t1 - t0;
	}
	bench_stamp_msg(msg, sizeof(msg), BENCH_STOP);
	bench_check(shmq_send(out, 0, NULL, 0, msg, sizeof(msg), -1, NULL),
		    "shmq_send (stop)");
	alarm(0);
	bench_reap(pid, busy ? "shmq busy-poll echo" : "shmq futex echo");
	shmq_consumer_close(in);
	shmq_producer_close(out);
	bench_topic_delete(c->ns, ping);
	bench_topic_delete(c->ns, pong);
}

/* ------------------------------------------------------------------------
 * Reporting.
 */
static void summarise(struct lat_cfg *c, double *fig)
{
	uint64_t *v = c->buf;
	size_t n = c->sh->samples;
	double sum = 0;

	bench_sort_u64(v, n);
	for (size_t i = 0; i < n; i++)
		sum += (double)v[i];
	fig[F_P50] = (double)bench_pct(v, n, 50);
	fig[F_P99] = (double)bench_pct(v, n, 99);
	fig[F_P999] = (double)bench_pct(v, n, 99.9);
	fig[F_MIN] = (double)v[0];
	fig[F_MAX] = (double)v[n - 1];
	fig[F_MEAN] = sum / (double)n;
}

struct lat_report {
	bool ran;
	struct bench_spread s[F_COUNT];
};

#define ROW "  %-28s %24s %24s %24s\n"

static void print_row(const char *label, const struct lat_report *r)
{
	char a[64], b[64], d[64];

	struct bench_spread us[F_COUNT];

	/* The table is in microseconds, the JSON in nanoseconds. */
	for (int f = 0; f < F_COUNT; f++) {
		us[f].med = r->s[f].med / 1e3;
		us[f].min = r->s[f].min / 1e3;
		us[f].max = r->s[f].max / 1e3;
	}
	printf(ROW, label,
	       bench_fmt_spread(a, sizeof(a), "%.2f", &us[F_P50]),
	       bench_fmt_spread(b, sizeof(b), "%.2f", &us[F_P99]),
	       bench_fmt_spread(d, sizeof(d), "%.2f", &us[F_P999]));
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static void print_ratio(const struct lat_report *r, const struct lat_report *base)
{
	char a[32], b[32], d[32];

	snprintf(a, sizeof(a), "%.3gx", ratio(r->s[F_P50].med, base->s[F_P50].med));
	snprintf(b, sizeof(b), "%.3gx", ratio(r->s[F_P99].med, base->s[F_P99].med));
	snprintf(d, sizeof(d), "%.3gx", ratio(r->s[F_P999].med, base->s[F_P999].med));
	printf(ROW, "  shmq/unix", a, b, d);
}

static void json_row(FILE *f, const struct lat_cfg *c, enum transport t,
		     const struct lat_report *rep)
{
	static const char *const name[F_COUNT] = {
		[F_P50] = "p50", [F_P99] = "p99", [F_P999] = "p999",
		[F_MIN] = "min", [F_MAX] = "max", [F_MEAN] = "mean",
	};
	const struct lat_shape *sh = t_info[t].idle ? &c->idle : &c->hot;
	const struct lat_report *r = &rep[t], *base = &rep[t_info[t].baseline];

	if (!f)
		return;
	fprintf(f, "{\"bench\":\"latency\",\"time\":\"%s\",\"transport\":\"%s\","
		"\"wait\":\"%s\",\"metric\":\"rtt_ns\",\"msg_bytes\":%u,"
		"\"cpus\":[%d,%d],\"runs\":%d,\"samples_per_run\":%zu,"
		"\"warmup\":%zu,\"gap_ns\":%llu",
		bench_started(), t_info[t].transport, t_info[t].wait, MSG_BYTES,
		c->o->cpu[0], c->o->cpu[1], c->o->runs, sh->samples, sh->warmup,
		(unsigned long long)sh->gap_ns);
	for (int i = 0; i < F_COUNT; i++)
		fprintf(f, ",\"%s_ns\":%.1f,\"%s_ns_min\":%.1f,\"%s_ns_max\":%.1f",
			name[i], r->s[i].med, name[i], r->s[i].min, name[i],
			r->s[i].max);
	if (t_info[t].baseline != t && base->ran)
		fprintf(f, ",\"baseline\":\"%s\",\"p50_ratio\":%.4f,"
			"\"p99_ratio\":%.4f,\"p999_ratio\":%.4f",
			t_info[t_info[t].baseline].transport,
			ratio(r->s[F_P50].med, base->s[F_P50].med),
			ratio(r->s[F_P99].med, base->s[F_P99].med),
			ratio(r->s[F_P999].med, base->s[F_P999].med));
	fprintf(f, "}\n");
}

static void print_table(const struct lat_cfg *c, const struct lat_report *rep)
{
	bool heading_idle = false;
	char h[64];

	printf(ROW, "back-to-back round trips", "p50", "p99", "p99.9");
	for (int t = 0; t < T_COUNT; t++) {
		enum transport b = t_info[t].baseline;

		if (!rep[t].ran)
			continue;
		if (t_info[t].idle && !heading_idle) {
			snprintf(h, sizeof(h), "%.0f us idle before each round trip",
				 (double)c->idle.gap_ns / 1e3);
			printf("  %s\n", h);
			heading_idle = true;
		}
		print_row(t_label[t], &rep[t]);
		if (b != (enum transport)t && rep[b].ran)
			print_ratio(&rep[t], &rep[b]);
	}
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_ns ns;
	struct lat_cfg c;
	struct lat_report rep[T_COUNT];
	double (*fig)[T_COUNT][F_COUNT];
	bool want[T_COUNT], shmq;
	size_t most;
	FILE *json;
	uint64_t t_start = bench_now_ns();

	bench_parse(argc, argv,
		    "  BENCH_LAT_SAMPLES       back-to-back round trips per run (100000)\n"
		    "  BENCH_LAT_WARMUP        unrecorded round trips first (10000)\n"
		    "  BENCH_LAT_IDLE_SAMPLES  round trips with an idle gap per run (5000)\n"
		    "  BENCH_LAT_IDLE_GAP_US   the gap, microseconds (100)\n",
		    &o);
	json = bench_json_open(&o);
	if (o.machine) {
		bench_machine(json);
		return 0;
	}
	if (o.cleanup) {
		bench_ns_setup(&ns, &o);
		bench_topic_delete_all(&ns);
		bench_ns_teardown(&ns);
		return 0;
	}

	memset(&c, 0, sizeof(c));
	c.o = &o;
	c.ns = &ns;
	c.hot.samples = (size_t)bench_env_long("BENCH_LAT_SAMPLES", 100000);
	c.hot.warmup = (size_t)bench_env_long("BENCH_LAT_WARMUP", 10000);
	c.idle.samples = (size_t)bench_env_long("BENCH_LAT_IDLE_SAMPLES", 5000);
	c.idle.warmup = c.idle.samples / 10;
	c.idle.gap_ns = (uint64_t)bench_env_long("BENCH_LAT_IDLE_GAP_US", 100) * 1000;
	most = c.hot.samples > c.idle.samples ? c.hot.samples : c.idle.samples;
	c.buf = calloc(most, sizeof(*c.buf));
	fig = calloc((size_t)o.runs, sizeof(*fig));
	if (!c.buf || !fig)
		bench_die("out of memory");

	for (int t = 0; t < T_COUNT; t++)
		want[t] = bench_want(&o, t_info[t].transport[0] == 's' ? "shmq" : "uds");
	want[T_BUSY] = want[T_BUSY] && o.ncpu > 1;
	shmq = want[T_BUSY] || want[T_FUTEX] || want[T_FUTEX_IDLE];
	if (shmq)
		bench_ns_setup(&ns, &o);
	/* After shmqd is started, so that it does not inherit the pinning. */
	bench_pin(o.cpu[0]);

	printf("Round-trip latency, %u B ping-pong, parent on CPU %d, echo on CPU %d\n",
	       MSG_BYTES, o.cpu[0], o.cpu[1]);
	if (o.ncpu == 1)
		printf("  ONLY ONE USABLE CPU: both processes share CPU %d; "
		       "shmq busy-poll skipped\n", o.cpu[0]);
	printf("  %zu round trips per run after %zu warm-up (idle: %zu after %zu), "
	       "%d run%s\n  median of runs [min-max], microseconds\n",
	       c.hot.samples, c.hot.warmup, c.idle.samples, c.idle.warmup,
	       o.runs, o.runs == 1 ? "" : "s");
	fflush(stdout);

	for (int r = 0; r < o.runs; r++) {
		for (int t = 0; t < T_COUNT; t++) {
			if (!want[t])
				continue;
			c.sh = t_info[t].idle ? &c.idle : &c.hot;
			if (t == T_UDS || t == T_UDS_IDLE)
				run_uds(&c);
			else
				run_shmq(&c, t, r);
			summarise(&c, fig[r][t]);
		}
	}

	for (int t = 0; t < T_COUNT; t++) {
		double v[64];

		rep[t].ran = want[t];
		for (int f = 0; f < F_COUNT; f++) {
			for (int r = 0; r < o.runs; r++)
				v[r] = fig[r][t][f];
			bench_spread(v, o.runs, &rep[t].s[f]);
		}
	}
	print_table(&c, rep);
	for (int t = 0; t < T_COUNT; t++)
		if (rep[t].ran)
			json_row(json, &c, (enum transport)t, rep);
	printf("  (%.1f s)\n\n", (double)(bench_now_ns() - t_start) / 1e9);

	if (shmq)
		bench_ns_teardown(&ns);
	if (json)
		fclose(json);
	free(c.buf);
	free(fig);
	return 0;
}
