/*
 * bench-throughput.c - one producer to one consumer, 64 B, 1 KiB and
 * 64 KiB messages: shmq beside a Unix domain socket, in the same run.
 *
 * Design note
 *   What is measured: the producer (a forked peer, pinned to the second
 *   CPU) sends numbered messages as fast as the transport takes them; the
 *   consumer (the parent, pinned to the first CPU) receives them, checks
 *   that each carries the next sequence number and the check word of every
 *   64-byte line, and times the stream.  So only data that really reached
 *   the consumer's core is counted: a transport that dropped, reordered,
 *   tore or merely pretended to move a message fails the run.
 *
 *   Timing: the first W messages are a warm-up (W = 4 MiB of payload, at
 *   least 1000 messages).  The consumer starts its clock when it has taken
 *   the last warm-up message, and stops it at the stop message, which the
 *   producer sends after BENCH_TPUT_SECONDS of measured sending.  Rate =
 *   measured messages / consumer elapsed time; MB/s counts payload bytes
 *   only (MB = 10^6 bytes), not headers or framing.
 *
 *   shmq: a fresh topic of one partition per measurement, a 4 MiB ring,
 *   the BLOCK full policy, messages up to 128 KiB.  The producer uses the
 *   copying shmq_send() (timeout -1: wait when the ring is full); the
 *   consumer polls with timeout -1 in the default (spin, then futex) mode
 *   and reads each message in place in the ring.
 *
 *   Baseline: a SOCK_STREAM socketpair made before fork, with the kernel's
 *   default buffer sizes.  Each message is an 8-byte length then the
 *   payload, sent with one blocking write().  The consumer reads into a
 *   1 MiB buffer, as much as the socket holds per read(), and checks the
 *   messages in place there, so a read() typically carries many small
 *   messages: the strongest form of the ordinary way to stream records over
 *   a local socket.
 *
 *   Both producers build each message the same way (sequence number and
 *   check words into one buffer) before handing it over, and both
 *   consumers run the same check, so the difference is the transport.
 *
 *   Sizes: 64 B, 1 KiB and 64 KiB, or BENCH_TPUT_SIZES="64,4096".
 *
 *   Repetitions: BENCH_RUNS runs (default 3), the transports interleaved
 *   within each run; the median of the runs is printed with the min-max
 *   spread, and shmq/unix is the ratio of the medians (above 1: shmq moves
 *   more).
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RING_BYTES	(4u << 20)
#define MAX_MESSAGE	(128u << 10)
#define WARM_BYTES	(4u << 20)
#define UDS_RXBUF	(1u << 20)
#define TIME_EVERY	64	/* producer reads the clock every 64 messages */

#define MAX_SIZES 8
static size_t sizes[MAX_SIZES] = { 64, 1024, 65536 };
static size_t nsizes = 3;

/*
 * BENCH_TPUT_SIZES="64,1024,65536": message sizes, each a multiple of 64
 * (one check word per line) up to the 64 KiB the topic admits with room.
 */
static void parse_sizes(void)
{
	const char *s = getenv("BENCH_TPUT_SIZES");
	char *end;

	if (!s || !*s)
		return;
	nsizes = 0;
	for (;;) {
		unsigned long v = strtoul(s, &end, 10);

		if (end == s || v < 64 || v % 64 || v > 65536 || nsizes == MAX_SIZES)
			bench_die("BENCH_TPUT_SIZES: expected up to %d sizes, "
				  "multiples of 64 from 64 to 65536", MAX_SIZES);
		sizes[nsizes++] = v;
		if (!*end)
			break;
		if (*end != ',')
			bench_die("BENCH_TPUT_SIZES: separate sizes with commas");
		s = end + 1;
	}
}

enum transport { T_UDS, T_SHMQ, T_COUNT };

static const char *const t_label[T_COUNT] = {
	[T_UDS] = "unix stream",
	[T_SHMQ] = "shmq",
};
static const char *const t_json[T_COUNT] = {
	[T_UDS] = "uds-stream",
	[T_SHMQ] = "shmq",
};

struct tput_cfg {
	const struct bench_opts *o;
	struct bench_ns *ns;
	double seconds;		/* measured sending per run */
};

/* One measurement's result, as the consumer saw it. */
struct tput_run {
	uint64_t msgs;
	uint64_t ns;
};

static size_t warm_count(size_t size)
{
	size_t n = WARM_BYTES / size;

	return n < 1000 ? 1000 : n;
}

static void *alloc_aligned(size_t n)
{
	void *p;

	/* Page aligned: the producer's source is not split oddly across lines. */
	if (posix_memalign(&p, 4096, n))
		bench_die("out of memory");
	memset(p, 0xa5, n);
	return p;
}

/*
 * The producer's loop, common to both transports: send warm-up messages,
 * then send for cfg->seconds, then the stop message.  send() hands one
 * stamped message of size bytes to the transport.
 */
struct producer {
	const struct tput_cfg *cfg;
	size_t size;
	void *msg;		/* where to stamp the message */
	void (*send)(struct producer *p);
	/* transport state */
	int fd;
	int other;
	shmq_producer_t *sp;
	const char *topic;
	struct bench_sync ready, go;
};

static void produce(struct producer *p)
{
	size_t warm = warm_count(p->size);
	uint64_t dur = (uint64_t)(p->cfg->seconds * 1e9);
	uint64_t t0 = 0;

	for (uint64_t seq = 0;; seq++) {
		bench_stamp_msg(p->msg, p->size, seq);
		p->send(p);
		if (seq + 1 == warm)
			t0 = bench_now_ns();
		else if (seq >= warm && seq % TIME_EVERY == 0 &&
			 bench_now_ns() - t0 >= dur)
			break;
	}
	bench_stamp_msg(p->msg, p->size, BENCH_STOP);
	p->send(p);
}

/* ------------------------------------------------------------------------
 * Unix domain socket.
 */
static void uds_send(struct producer *p)
{
	/* The length prefix sits just before msg in the same buffer. */
	bench_write_full(p->fd, (char *)p->msg - 8, 8 + p->size);
}

static int uds_producer(void *arg)
{
	struct producer *p = arg;
	uint64_t len = p->size;
	char *buf;

	close(p->other);
	/* 64 bytes in front, the length in its last 8: the payload stays aligned. */
	buf = alloc_aligned(64 + p->size);
	memcpy(buf + 56, &len, 8);
	p->msg = buf + 64;
	p->send = uds_send;
	produce(p);
	close(p->fd);
	free(buf);
	return 0;
}

static struct tput_run run_uds(const struct tput_cfg *c, size_t size,
			       int *sndbuf, int *rcvbuf)
{
	size_t warm = warm_count(size), cap = UDS_RXBUF + 8 + size;
	size_t have = 0, pos = 0;
	uint64_t expect = 0, t0 = 0, t1 = 0;
	struct producer peer;
	struct tput_run res;
	socklen_t sl = sizeof(int);
	char *buf;
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		bench_die("socketpair: %s", strerror(errno));
	getsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, sndbuf, &sl);
	sl = sizeof(int);
	getsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, rcvbuf, &sl);
	buf = alloc_aligned(cap);

	memset(&peer, 0, sizeof(peer));
	peer.cfg = c;
	peer.size = size;
	peer.fd = sv[1];
	peer.other = sv[0];
	pid = bench_fork(c->o, c->o->cpu[1], uds_producer, &peer);
	close(sv[1]);
	bench_watchdog(c->o);

	for (;;) {
		uint64_t len, seq;
		const char *m;
		ssize_t r;

		if (have - pos < 8 + size) {
			/*
			 * Not a whole message left.  Move the partial one to
			 * the front only when the free tail could not hold a
			 * whole message, so the copy is rare.
			 */
			if (cap - have < 8 + size) {
				memmove(buf, buf + pos, have - pos);
				have -= pos;
				pos = 0;
			}
			do
				r = read(sv[0], buf + have, cap - have);
			while (r < 0 && errno == EINTR);
			if (r < 0)
				bench_die("uds read: %s", strerror(errno));
			if (r == 0)
				bench_die("uds: producer closed after %llu messages",
					  (unsigned long long)expect);
			have += (size_t)r;
			continue;
		}
		m = buf + pos;
		memcpy(&len, m, 8);
		if (len != size)
			bench_die("uds: frame length %llu, expected %zu",
				  (unsigned long long)len, size);
		m += 8;
		pos += 8 + size;
		seq = bench_msg_seq(m);
		if (seq == BENCH_STOP) {
			t1 = bench_now_ns();
			break;
		}
		if (!bench_verify_msg(m, size, expect))
			bench_die("uds: message %llu is wrong (seq %llu)",
				  (unsigned long long)expect,
				  (unsigned long long)seq);
		if (++expect == warm)
			t0 = bench_now_ns();
	}
	alarm(0);
	bench_reap(pid, "uds producer");
	close(sv[0]);
	free(buf);
	if (expect <= warm)
		bench_die("uds: no measured messages");
	res.msgs = expect - warm;
	res.ns = t1 - t0;
	return res;
}

/* ------------------------------------------------------------------------
 * shmq.
 */
static void shmq_send_one(struct producer *p)
{
	bench_check(shmq_send(p->sp, 0, NULL, 0, p->msg, p->size, -1, NULL),
		    "shmq_send");
}

static int shmq_producer(void *arg)
{
	struct producer *p = arg;
	shmq_client_t *cl;

	/* Our own client: nothing opened by the parent crosses the fork. */
	bench_check(shmq_open(p->cfg->ns->dir, NULL, &cl), "shmq_open");
	bench_check(shmq_producer_open(cl, p->topic, NULL, &p->sp),
		    "shmq_producer_open");
	p->msg = alloc_aligned(p->size);
	p->send = shmq_send_one;
	bench_sync_post(&p->ready);
	/* Send nothing before the consumer's group exists. */
	bench_sync_wait(&p->go);
	produce(p);
	shmq_producer_close(p->sp);
	shmq_close(cl);
	free(p->msg);
	return 0;
}

static struct tput_run run_shmq(const struct tput_cfg *c, size_t size, int run)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	size_t warm = warm_count(size);
	uint64_t expect = 0, t0 = 0, t1 = 0;
	char topic[SHMQ_NAME_MAX + 1];
	struct producer peer;
	struct tput_run res;
	shmq_consumer_t *in;
	struct shmq_msg m;
	pid_t pid;

	/* A fresh topic per measurement: no group or frame of an earlier one. */
	snprintf(topic, sizeof(topic), "tput-%zu-%d", size, run);
	bench_topic_create(c->ns, topic, RING_BYTES, MAX_MESSAGE);

	memset(&peer, 0, sizeof(peer));
	peer.cfg = c;
	peer.size = size;
	peer.topic = topic;
	bench_sync_init(&peer.ready);
	bench_sync_init(&peer.go);
	pid = bench_fork(c->o, c->o->cpu[1], shmq_producer, &peer);
	bench_watchdog(c->o);

	co.from = SHMQ_FROM_EARLIEST;
	bench_check(shmq_consumer_open(c->ns->client, topic, "bench", &co, &in),
		    "shmq_consumer_open");
	bench_sync_wait(&peer.ready);
	bench_sync_post(&peer.go);
	bench_sync_close(&peer.ready);
	bench_sync_close(&peer.go);

	for (;;) {
		uint64_t seq;
		int rc;

		do
			rc = shmq_consumer_poll(in, &m, -1);
		while (rc == -EAGAIN);
		bench_check(rc, "shmq_consumer_poll");
		if (m.value_len != size)
			bench_die("shmq: message of %zu bytes, expected %zu",
				  m.value_len, size);
		seq = bench_msg_seq(m.value);
		if (seq == BENCH_STOP) {
			t1 = bench_now_ns();
			break;
		}
		if (!bench_verify_msg(m.value, size, expect))
			bench_die("shmq: message %llu is wrong (seq %llu)",
				  (unsigned long long)expect,
				  (unsigned long long)seq);
		if (++expect == warm)
			t0 = bench_now_ns();
		/* The next poll releases it; no explicit release on the path. */
	}
	shmq_consumer_release(in);
	alarm(0);
	bench_reap(pid, "shmq producer");
	shmq_consumer_close(in);
	bench_topic_delete(c->ns, topic);
	if (expect <= warm)
		bench_die("shmq: no measured messages");
	res.msgs = expect - warm;
	res.ns = t1 - t0;
	return res;
}

/* ------------------------------------------------------------------------
 * Reporting.
 */
static const char *size_label(size_t size, char *buf, size_t n)
{
	if (size >= 1024 && size % 1024 == 0)
		snprintf(buf, n, "%zu KiB", size / 1024);
	else
		snprintf(buf, n, "%zu B", size);
	return buf;
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_ns ns;
	struct tput_cfg c;
	double (*rate)[MAX_SIZES][T_COUNT];
	bool want[T_COUNT];
	int sndbuf = 0, rcvbuf = 0;
	FILE *json;
	uint64_t t_start = bench_now_ns();

	bench_parse(argc, argv,
		    "  BENCH_TPUT_SECONDS  measured sending per run and size (0.5)\n"
		    "  BENCH_TPUT_SIZES    message sizes in bytes (64,1024,65536)\n",
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

	c.o = &o;
	c.ns = &ns;
	c.seconds = bench_env_double("BENCH_TPUT_SECONDS", 0.5);
	parse_sizes();
	rate = calloc((size_t)o.runs, sizeof(*rate));
	if (!rate)
		bench_die("out of memory");
	want[T_UDS] = bench_want(&o, "uds");
	want[T_SHMQ] = bench_want(&o, "shmq");
	if (want[T_SHMQ])
		bench_ns_setup(&ns, &o);
	/* After shmqd is started, so that it does not inherit the pinning. */
	bench_pin(o.cpu[0]);

	printf("Throughput, 1 producer (CPU %d) -> 1 consumer (CPU %d), copying send,\n"
	       "consumer checks the sequence number and one word per 64 B line\n",
	       o.cpu[1], o.cpu[0]);
	if (o.ncpu == 1)
		printf("  ONLY ONE USABLE CPU: producer and consumer share CPU %d\n",
		       o.cpu[0]);
	printf("  %.2f s per run after a warm-up, %d run%s; median of runs [min-max];\n"
	       "  MB = 10^6 payload bytes; shmq ring %u KiB, unix socket kernel default buffers\n",
	       c.seconds, o.runs, o.runs == 1 ? "" : "s", RING_BYTES >> 10);
	fflush(stdout);

	for (int r = 0; r < o.runs; r++) {
		for (size_t s = 0; s < nsizes; s++) {
			for (int t = 0; t < T_COUNT; t++) {
				struct tput_run res;

				if (!want[t])
					continue;
				if (t == T_UDS)
					res = run_uds(&c, sizes[s], &sndbuf, &rcvbuf);
				else
					res = run_shmq(&c, sizes[s], r);
				rate[r][s][t] = (double)res.msgs * 1e9 / (double)res.ns;
			}
		}
	}

	printf("  %-8s %-12s %26s %26s %10s\n", "size", "transport",
	       "Mmsg/s", "MB/s", "shmq/unix");
	for (size_t s = 0; s < nsizes; s++) {
		struct bench_spread sp[T_COUNT], mb[T_COUNT];
		char lab[32];

		for (int t = 0; t < T_COUNT; t++) {
			double v[64], w[64];
			char a[64], b[64], q[32] = "";

			if (!want[t])
				continue;
			for (int r = 0; r < o.runs; r++) {
				v[r] = rate[r][s][t] / 1e6;
				w[r] = rate[r][s][t] * (double)sizes[s] / 1e6;
			}
			bench_spread(v, o.runs, &sp[t]);
			bench_spread(w, o.runs, &mb[t]);
			if (t == T_SHMQ && want[T_UDS])
				snprintf(q, sizeof(q), "%.2fx",
					 sp[T_SHMQ].med / sp[T_UDS].med);
			printf("  %-8s %-12s %26s %26s %10s\n",
			       t == 0 || !want[0] ? size_label(sizes[s], lab, sizeof(lab)) : "",
			       t_label[t],
			       bench_fmt_spread(a, sizeof(a), "%.3f", &sp[t]),
			       bench_fmt_spread(b, sizeof(b), "%.0f", &mb[t]), q);

			if (!json)
				continue;
			fprintf(json, "{\"bench\":\"throughput\",\"time\":\"%s\","
				"\"transport\":\"%s\",\"metric\":\"throughput\","
				"\"msg_bytes\":%zu,\"producer_cpu\":%d,\"consumer_cpu\":%d,\"runs\":%d,"
				"\"seconds_per_run\":%.3f,"
				"\"msgs_per_s\":%.0f,\"msgs_per_s_min\":%.0f,"
				"\"msgs_per_s_max\":%.0f,\"mb_per_s\":%.1f,"
				"\"mb_per_s_min\":%.1f,\"mb_per_s_max\":%.1f",
				bench_started(), t_json[t], sizes[s], o.cpu[1],
				o.cpu[0], o.runs, c.seconds, sp[t].med * 1e6,
				sp[t].min * 1e6, sp[t].max * 1e6, mb[t].med,
				mb[t].min, mb[t].max);
			if (t == T_UDS)
				fprintf(json, ",\"sndbuf\":%d,\"rcvbuf\":%d",
					sndbuf, rcvbuf);
			else
				fprintf(json, ",\"ring_bytes\":%u", RING_BYTES);
			if (t == T_SHMQ && want[T_UDS])
				fprintf(json, ",\"baseline\":\"%s\",\"ratio\":%.4f",
					t_json[T_UDS], sp[T_SHMQ].med / sp[T_UDS].med);
			fprintf(json, "}\n");
		}
	}
	printf("  (%.1f s)\n\n", (double)(bench_now_ns() - t_start) / 1e9);

	if (want[T_SHMQ])
		bench_ns_teardown(&ns);
	if (json)
		fclose(json);
	free(rate);
	return 0;
}
