/*
 * bench-shapes.c - the shapes users run with shmq: N producers into one
 * partition, one producer to K groups (fan-out), one shared group of M
 * members, and one group over P partitions; 64-byte messages, every one
 * verified.
 *
 * Design note
 *   Processes: producers are pinned to the second CPU, consumers to the
 *   first.  The machine this was written on has two CPUs, so several
 *   producers (or consumers) share one CPU and take turns: these rows
 *   measure shmq together with the scheduler, and say so.  The 1:1 row,
 *   measured in the same run, is the reference of the ratios.
 *
 *   Timing: producer 0 keeps time.  After BENCH_SHAPE_WARM seconds it opens
 *   the measured window (phase 1, stamps t0), and after BENCH_SHAPE_SECONDS
 *   more closes it (phase 2, stamps t1).  Every producer counts what it
 *   published, and every consumer what it received, while the phase it
 *   reads is 1; then the producers stop, and the consumers drain until
 *   every producer has finished and nothing is left.  Rates are counts /
 *   (t1 - t0).  "produced" is what entered the topic, "delivered" the sum
 *   over consumers (with K groups every message is delivered K times).
 *
 *   Verification, nothing taken on trust: a message carries
 *   (producer << 40 | counter) as its sequence number, and the check words
 *   derived from it in every cache line.
 *     - Where a consumer must see every message of a partition (one group,
 *       one member, one partition: 1:1, N producers, fan-out), each
 *       producer's counter must arrive exactly in order, and at the end
 *       every consumer must have received exactly what was sent.
 *     - A shared group's members, and a group over partitions, see
 *       subsequences: per (producer, partition) the counter must increase;
 *       a bitmap in shared memory, set with an atomic or, catches any
 *       message delivered twice; and the total across members must equal
 *       what was sent (so nothing was lost).
 *
 *   Spill engaged (a stopped group) and replay from disk need 1 KiB
 *   messages, a data directory on a real disk and a file baseline beside
 *   them: bench-spill.c measures them, and the last row says so.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MSG 64u
#define RING_BYTES (4u << 20)
#define MAX_MSG 1024u
#define PROD_SHIFT 40
#define CAP_LOG2 25			/* at most 32 Mi messages per producer */
#define CAP (1ull << CAP_LOG2)
#define MAXP 8				/* partitions tracked per consumer */

enum shape { SH_ONE, SH_PRODUCERS, SH_FANOUT, SH_SHARED, SH_PARTS };
static const char *const shape_name[] = {
	[SH_ONE] = "1to1", [SH_PRODUCERS] = "producers", [SH_FANOUT] = "fanout",
	[SH_SHARED] = "shared", [SH_PARTS] = "partitions",
};

struct cfg {
	enum shape shape;
	int n;			/* N, K, M or P */
	int producers, consumers, groups, partitions;
	bool exact;		/* each consumer sees every message in order */
	int ack;		/* SHARED: ACK_* below */
};

/*
 * How shared-group members acknowledge (lease.c): the default (the next
 * poll acknowledges), at most once (no lease at all), or an explicit
 * shmq_consumer_ack() per message with an ack timeout set (a CAS per ack,
 * as shmqd may expire the lease at the same moment).
 */
enum { ACK_POLL, ACK_NONE, ACK_EXPLICIT };
static const char *const ack_name[] = {
	[ACK_POLL] = "", [ACK_NONE] = "-at-most-once", [ACK_EXPLICIT] = "-ack",
};

struct ctl {
	uint32_t phase;
	uint32_t producers_done;
	uint64_t t0, t1;
	uint64_t sent[HX_MAXPROC];		/* total, per producer */
	uint64_t sent_win[HX_MAXPROC];		/* in the window */
	uint64_t got[HX_MAXPROC];		/* total, per consumer */
	uint64_t got_win[HX_MAXPROC];		/* in the window */
	uint64_t bits[];			/* [producers][CAP / 64] */
};

static struct bench_opts o;
static struct bench_ns ns;
static struct ctl *ctl;
static size_t ctl_bytes;
static char topic[SHMQ_NAME_MAX + 1];
static const struct cfg *cur;
static double warm_s, run_s;

static void check(int rc, const char *what)
{
	if (rc < 0)
		hx_fail("%s: %s (%s)", what, shmq_strerror(rc), shmq_errdetail());
}

static int producer(void *arg)
{
	int id = (int)(intptr_t)arg;
	shmq_client_t *cl;
	shmq_producer_t *p;
	char msg[MSG] __attribute__((aligned(64)));
	uint64_t start, c;
	uint32_t ph = 0;

	check(shmq_open(ns.dir, NULL, &cl), "shmq_open");
	check(shmq_producer_open(cl, topic, NULL, &p), "shmq_producer_open");
	hx_ready();
	start = bench_now_ns();
	for (c = 1; c < CAP; c++) {
		bench_stamp_msg(msg, MSG, (uint64_t)id << PROD_SHIFT | c);
		/* Keyless, partition ANY: round-robin over the partitions. */
		check(shmq_send(p, SHMQ_PARTITION_ANY, NULL, 0, msg, MSG, -1, NULL),
		      "shmq_send");
		if (ph == 1)
			ctl->sent_win[id]++;
		if (c & 63)
			continue;
		if (id == 0) {
			uint64_t now = bench_now_ns();

			if (ph == 0 && now - start >= (uint64_t)(warm_s * 1e9)) {
				ctl->t0 = now;
				__atomic_store_n(&ctl->phase, 1, __ATOMIC_RELEASE);
			} else if (ph == 1 && now - ctl->t0 >= (uint64_t)(run_s * 1e9)) {
				ctl->t1 = now;
				__atomic_store_n(&ctl->phase, 2, __ATOMIC_RELEASE);
			}
		}
		ph = __atomic_load_n(&ctl->phase, __ATOMIC_ACQUIRE);
		if (ph == 2)
			break;
	}
	if (c >= CAP)
		hx_fail("producer %d reached %llu messages: raise CAP_LOG2", id,
			(unsigned long long)CAP);
	ctl->sent[id] = c;
	__atomic_add_fetch(&ctl->producers_done, 1, __ATOMIC_RELEASE);
	shmq_producer_close(p);
	shmq_close(cl);
	return 0;
}

static int consumer(void *arg)
{
	int id = (int)(intptr_t)arg;
	const struct cfg *c = cur;
	int me = id - c->producers;	/* consumer index */
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	uint64_t last[HX_MAXPROC][MAXP];
	char group[16];
	shmq_client_t *cl;
	shmq_consumer_t *in;

	memset(last, 0, sizeof(last));
	/* Fan-out: one group per consumer; otherwise all in group 0. */
	snprintf(group, sizeof(group), "g%d", c->shape == SH_FANOUT ? me : 0);
	co.from = SHMQ_FROM_EARLIEST;
	if (c->ack == ACK_NONE)
		co.flags = SHMQ_CONSUMER_AT_MOST_ONCE;
	if (c->ack == ACK_EXPLICIT)
		co.ack_timeout_ms = 30000;
	check(shmq_open(ns.dir, NULL, &cl), "shmq_open");
	check(shmq_consumer_open(cl, topic, group, &co, &in), "shmq_consumer_open");
	hx_ready();
	for (;;) {
		struct shmq_msg m;
		uint64_t seq, k;
		unsigned prod, part;
		int rc = shmq_consumer_poll(in, &m, 10);

		if (rc == -EAGAIN) {
			/* Done when every producer is and nothing is left. */
			if (__atomic_load_n(&ctl->producers_done, __ATOMIC_ACQUIRE) ==
			    (uint32_t)c->producers &&
			    shmq_consumer_poll(in, &m, 0) == -EAGAIN)
				break;
			continue;
		}
		check(rc, "shmq_consumer_poll");
		seq = m.value_len >= 8 ? bench_msg_seq(m.value) : 0;
		prod = (unsigned)(seq >> PROD_SHIFT);
		k = seq & ((1ull << PROD_SHIFT) - 1);
		part = m.partition;
		if (m.value_len != MSG || prod >= (unsigned)c->producers ||
		    part >= MAXP || k == 0 || k >= CAP ||
		    !bench_verify_msg(m.value, MSG, seq))
			hx_fail("%s: consumer %d: a wrong message (seq %#llx, %zu bytes)",
				shape_name[c->shape], me, (unsigned long long)seq,
				m.value_len);
		if (c->exact ? k != last[prod][part] + 1 : k <= last[prod][part])
			hx_fail("%s: consumer %d: producer %u's message %llu came after %llu",
				shape_name[c->shape], me, prod,
				(unsigned long long)k,
				(unsigned long long)last[prod][part]);
		last[prod][part] = k;
		if (!c->exact) {
			uint64_t *w = &ctl->bits[prod * (CAP / 64) + k / 64];
			uint64_t bit = 1ull << (k % 64);

			if (__atomic_fetch_or(w, bit, __ATOMIC_RELAXED) & bit)
				hx_fail("%s: message %u/%llu delivered twice",
					shape_name[c->shape], prod, (unsigned long long)k);
		}
		if (c->ack == ACK_EXPLICIT)
			check(shmq_consumer_ack(in), "shmq_consumer_ack");
		ctl->got[me]++;
		if (__atomic_load_n(&ctl->phase, __ATOMIC_RELAXED) == 1)
			ctl->got_win[me]++;
	}
	shmq_consumer_close(in);
	shmq_close(cl);
	return 0;
}

/* Returns 0 and the two rates, or dies: shmq is not optional here. */
static void run_one(const struct cfg *c, int r, double *produced,
		    double *delivered)
{
	struct hx_proc p[HX_MAXPROC];
	static unsigned id;
	uint64_t sent = 0, got = 0, sent_win = 0, got_win = 0;
	char why[320];
	int n = 0, rc;

	cur = c;
	memset(ctl, 0, ctl_bytes);
	snprintf(topic, sizeof(topic), "shape-%s%s-%d-%d-%u", shape_name[c->shape],
		 ack_name[c->ack], c->n, r, ++id);
	rc = bench_topic_create(&ns, topic, RING_BYTES, MAX_MSG,
				(uint32_t)c->partitions);
	if (rc < 0)
		bench_die("create %s: %s (%s)", topic, shmq_strerror(rc),
			  shmq_errdetail());
	for (int i = 0; i < c->producers; i++, n++)
		p[n] = (struct hx_proc){ .cpu = o.cpu[1], .fn = producer,
					 .arg = (void *)(intptr_t)n };
	for (int i = 0; i < c->consumers; i++, n++)
		p[n] = (struct hx_proc){ .cpu = o.cpu[0], .fn = consumer,
					 .arg = (void *)(intptr_t)n };
	rc = hx_run(p, n, hx_timeout(warm_s + run_s + 2), why, sizeof(why));
	bench_topic_delete(&ns, topic);
	if (rc < 0)
		bench_die("shape %s %d: %s", shape_name[c->shape], c->n, why);

	for (int i = 0; i < c->producers; i++) {
		sent += ctl->sent[i];	/* the last counter: they start at 1 */
		sent_win += ctl->sent_win[i];
	}
	for (int i = 0; i < c->consumers; i++) {
		got += ctl->got[i];
		got_win += ctl->got_win[i];
		/* Every group (every consumer, in fan-out) receives everything. */
		if (c->exact && ctl->got[i] != sent)
			bench_die("shape %s %d: consumer %d received %llu of %llu",
				  shape_name[c->shape], c->n, i,
				  (unsigned long long)ctl->got[i],
				  (unsigned long long)sent);
	}
	if (!c->exact && got != sent)
		bench_die("shape %s %d: the group received %llu of %llu",
			  shape_name[c->shape], c->n, (unsigned long long)got,
			  (unsigned long long)sent);
	if (ctl->t1 <= ctl->t0)
		bench_die("shape %s %d: no measured window", shape_name[c->shape], c->n);
	*produced = (double)sent_win * 1e9 / (double)(ctl->t1 - ctl->t0);
	*delivered = (double)got_win * 1e9 / (double)(ctl->t1 - ctl->t0);
}

int main(int argc, char **argv)
{
	struct cfg cfgs[16];
	double prod[16][64], deliv[16][64];
	int ncfg = 0;
	uint64_t t_start = bench_now_ns();
	FILE *json;

	json = bench_start(argc, argv,
			   "  BENCH_SHAPE_SECONDS  measured window per run (0.25; full 1.5)\n"
			   "  BENCH_SHAPE_WARM     warm-up before it (0.1; full 0.3)\n",
			   &o, &ns);
	bench_ns_setup(&ns, &o);
	hx_init(&o, &ns);
	run_s = bench_env_double("BENCH_SHAPE_SECONDS", bench_by_mode(&o, 0.25, 1.5));
	warm_s = bench_env_double("BENCH_SHAPE_WARM", bench_by_mode(&o, 0.1, 0.3));

	cfgs[ncfg++] = (struct cfg){ SH_ONE, 1, 1, 1, 1, 1, true, ACK_POLL };
	for (int n = 2; n <= 4; n *= 2) {
		cfgs[ncfg++] = (struct cfg){ SH_PRODUCERS, n, n, 1, 1, 1, true, ACK_POLL };
		cfgs[ncfg++] = (struct cfg){ SH_FANOUT, n, 1, n, n, 1, true, ACK_POLL };
		cfgs[ncfg++] = (struct cfg){ SH_SHARED, n, 1, n, 1, 1, false, ACK_POLL };
		cfgs[ncfg++] = (struct cfg){ SH_PARTS, n, 1, 1, 1, n, false, ACK_POLL };
	}
	/* Acknowledgement costs, beside the shared group of 2 above. */
	cfgs[ncfg++] = (struct cfg){ SH_SHARED, 2, 1, 2, 1, 1, false, ACK_NONE };
	cfgs[ncfg++] = (struct cfg){ SH_SHARED, 2, 1, 2, 1, 1, false, ACK_EXPLICIT };
	ctl_bytes = sizeof(*ctl) + (size_t)4 * (CAP / 64) * sizeof(uint64_t);
	ctl = hx_shared_alloc(ctl_bytes);

	printf("Shapes (shmq only): 64 B messages, producers on CPU %d, consumers on CPU %d,\n"
	       "  every message verified; %s mode, %.2f s window, %d rounds, shapes rotated.\n"
	       "  With 2 CPUs, several producers or consumers share one CPU: these\n"
	       "  rows include the scheduler's turn-taking.\n",
	       o.cpu[1], o.cpu[0], o.full ? "full" : "quick", run_s, o.runs);
	fflush(stdout);
	for (int r = 0; r < o.runs; r++)
		for (int k = 0; k < ncfg; k++) {
			int i = (k + r) % ncfg;

			run_one(&cfgs[i], r, &prod[i][r], &deliv[i][r]);
		}

	printf("  %-44s %24s %24s %8s\n", "shape", "produced Mmsg/s", "delivered Mmsg/s",
	       "vs 1:1");
	for (int i = 0; i < ncfg; i++) {
		const struct cfg *c = &cfgs[i];
		struct bench_spread sp, sd;
		char lab[64], a[64], b[64];
		double v[64], w[64];
		static double ref;

		for (int r = 0; r < o.runs; r++) {
			v[r] = prod[i][r] / 1e6;
			w[r] = deliv[i][r] / 1e6;
		}
		bench_spread(v, o.runs, &sp);
		bench_spread(w, o.runs, &sd);
		if (c->shape == SH_ONE)
			ref = sd.med;
		switch (c->shape) {
		case SH_ONE: snprintf(lab, sizeof(lab), "1 producer -> 1 consumer"); break;
		case SH_PRODUCERS: snprintf(lab, sizeof(lab), "%d producers -> 1 partition", c->n); break;
		case SH_FANOUT: snprintf(lab, sizeof(lab), "1 producer -> %d groups (fan-out)", c->n); break;
		case SH_SHARED:
			snprintf(lab, sizeof(lab), "1 shared group of %d members%s", c->n,
				 c->ack == ACK_NONE ? ", at most once" :
				 c->ack == ACK_EXPLICIT ? ", ack each" : "");
			break;
		case SH_PARTS: snprintf(lab, sizeof(lab), "1 group over %d partitions", c->n); break;
		}
		printf("  %-44s %24s %24s %7.2fx\n", lab,
		       bench_fmt_spread(a, sizeof(a), "%.3f", &sp),
		       bench_fmt_spread(b, sizeof(b), "%.3f", &sd), sd.med / ref);
		if (json)
			fprintf(json, "{\"bench\":\"shapes\",\"time\":\"%s\",\"transport\":\"shmq\","
				"\"metric\":\"throughput\",\"shape\":\"%s%s\",\"n\":%d,"
				"\"producers\":%d,\"consumers\":%d,\"groups\":%d,"
				"\"partitions\":%d,\"msg_bytes\":%u,\"runs\":%d,"
				"\"produced_msgs_per_s\":%.0f,\"produced_msgs_per_s_min\":%.0f,"
				"\"produced_msgs_per_s_max\":%.0f,"
				"\"delivered_msgs_per_s\":%.0f,\"delivered_msgs_per_s_min\":%.0f,"
				"\"delivered_msgs_per_s_max\":%.0f,\"delivered_vs_1to1\":%.4f}\n",
				bench_started(), shape_name[c->shape], ack_name[c->ack], c->n, c->producers,
				c->consumers, c->groups, c->partitions, MSG, o.runs,
				sp.med * 1e6, sp.min * 1e6, sp.max * 1e6, sd.med * 1e6,
				sd.min * 1e6, sd.max * 1e6, sd.med / ref);
	}
	printf("  %-44s see \"Spill and replay\" (bench-spill, 1 KiB, on disk)\n",
	       "spill engaged, replay from disk");
	printf("  (%.1f s)\n\n", (double)(bench_now_ns() - t_start) / 1e9);
	hx_shared_free(ctl, ctl_bytes);
	bench_ns_teardown(&ns);
	if (json)
		fclose(json);
	return 0;
}
