/*
 * bench-latency.c - round-trip latency, ping-pong between two processes
 * pinned to two cores: shmq (busy-poll and futex wait) and every baseline,
 * in the same run, through the same harness.
 *
 * Design note
 *   What is measured (harness.c): process A stamps a message, reads the
 *   clock, sends it, waits for process B's echo and reads the clock again;
 *   every round trip of the measured window goes into a log-linear
 *   histogram (hist.h), and the echo is verified (sequence number and one
 *   check word per cache line) outside the timed interval.  Each sample
 *   includes one clock read (its cost is printed with the machine).
 *
 *   Three sets:
 *     64 B back to back  the headline: every latency transport, longest.
 *     sweep              8 B to 64 KiB in powers of 4, back to back.
 *     64 B idle          A spins BENCH_LAT_GAP_US (100 us) before each
 *                        round trip, so B, finding nothing for longer than
 *                        any spin phase, is asleep (futex, read(), ...)
 *                        when the ping comes: the wake-up path.  Only the
 *                        transports that can sleep run here.
 *   Back to back, shmq's futex mode never sleeps (its spin phase always
 *   sees the next message), so it measures nearly what busy-poll does;
 *   that is what an application that keeps its consumer busy gets.  The
 *   idle set is where "futex wait" means a wake-up, so the issue-5 target
 *   "futex round trip <= 0.7 x a blocking pipe" is judged there (and the
 *   back-to-back ratio is printed beside it, for completeness).
 *
 *   Repetition: BENCH_RUNS rounds; within a round every set, size and
 *   transport runs once, the transport order rotated by one place each
 *   round, so that drift in the machine hits every transport alike.  Each
 *   figure is the median of the rounds' values with the min-max spread.
 *
 *   Transports that spin (raw ping-pong, naive ring, shmq busy-poll, mq
 *   busy) need two usable CPUs and are skipped, with a line, on one.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_T 32
#define MAX_SIZES 12

enum fig { F_P50, F_P99, F_P999, F_P9999, F_MAX, F_MEAN, F_COUNT, F_NFIG };
static const char *const fig_name[F_NFIG] = {
	"p50", "p99", "p999", "p9999", "max", "mean", "samples",
};
static const double fig_pct[F_NFIG] = { 50, 99, 99.9, 99.99, 100, 0, 0 };

enum set { S_HOT, S_SWEEP, S_IDLE, S_N };

struct cell {
	int state;			/* 0 measured, 1 n/a, -1 failed */
	char why[256];
	double fig[64][F_NFIG];		/* per round */
	struct bench_spread s[F_NFIG];
	struct hist *merged;		/* all rounds (S_HOT, S_IDLE) */
};

static struct bench_opts o;
static const struct bx_xport *xs[MAX_T];
static unsigned nx;
static size_t sizes[MAX_SIZES];
static unsigned nsizes;
/* cells[set][size index][transport]; S_HOT and S_IDLE use size index 0. */
static struct cell *cells[S_N][MAX_SIZES][MAX_T];
static struct hx_lat_job jobs[S_N];

static bool in_set(enum set s, const struct bx_xport *x)
{
	if (!(x->flags & BX_LAT))
		return false;
	if ((x->flags & BX_SPIN) && o.ncpu < 2)
		return false;
	/* The idle set is about waking a sleeper: a spinner never sleeps. */
	return s != S_IDLE || !(x->flags & BX_SPIN);
}

static void summarise(struct cell *c, const struct hist *h, int r)
{
	for (int f = 0; f < F_NFIG; f++) {
		if (f == F_MEAN)
			c->fig[r][f] = h->count ? h->sum / (double)h->count : 0;
		else if (f == F_COUNT)
			c->fig[r][f] = (double)h->count;
		else
			c->fig[r][f] = (double)hist_pct(h, fig_pct[f]);
	}
}

static void measure(enum set s, unsigned si, unsigned t, int r, struct hist *h)
{
	struct cell *c = cells[s][si][t];
	struct hx_lat_job j = jobs[s];

	if (c->state)
		return;	/* n/a or failed in an earlier round */
	j.size = s == S_SWEEP ? sizes[si] : 64;
	c->state = hx_latency(xs[t], &j, h, c->why, sizeof(c->why));
	if (c->state)
		return;
	summarise(c, h, r);
	if (c->merged)
		hist_add(c->merged, h);
}

/* ------------------------------------------------------------------------
 * Output.
 */
static const char *wait_kind(const struct bx_xport *x)
{
	return x->flags & BX_SPIN ? "busy-poll" : "blocking";
}

static void json_cell(FILE *f, enum set s, size_t size, unsigned t,
		      const struct cell *c)
{
	const struct hx_lat_job *j = &jobs[s];

	if (!f || c->state > 0)
		return;
	fprintf(f, "{\"bench\":\"latency\",\"time\":\"%s\",\"transport\":\"%s\","
		"\"wait\":\"%s\",\"metric\":\"rtt_ns\",\"set\":\"%s\","
		"\"msg_bytes\":%zu,\"gap_ns\":%llu,\"cpus\":[%d,%d],\"runs\":%d",
		bench_started(), xs[t]->name, wait_kind(xs[t]),
		s == S_HOT ? "64B" : s == S_SWEEP ? "sweep" : "64B-idle", size,
		(unsigned long long)j->gap_ns, o.cpu[0], o.cpu[1], o.runs);
	if (c->state < 0) {
		fprintf(f, ",\"failed\":");
		bench_json_str(f, c->why);
		fprintf(f, "}\n");
		return;
	}
	for (int k = 0; k < F_NFIG; k++) {
		const char *n = fig_name[k];
		const char *u = k == F_COUNT ? "" : "_ns";

		fprintf(f, ",\"%s%s\":%.0f,\"%s%s_min\":%.0f,\"%s%s_max\":%.0f",
			n, u, c->s[k].med, n, u, c->s[k].min, n, u, c->s[k].max);
	}
	fprintf(f, "}\n");
}

static void print_set(enum set s, const char *title)
{
	printf("%s\n", title);
	printf("  %-30s %8s %20s %20s %8s %8s %9s\n", "transport", "samples",
	       "p50 [min-max]", "p99 [min-max]", "p99.9", "p99.99", "max");
	for (unsigned t = 0; t < nx; t++) {
		struct cell *c = cells[s][0][t];
		char a[64], b[64];

		if (!c)
			continue;
		if (c->state) {
			printf("  %-30s %s: %s\n", xs[t]->label,
			       c->state > 0 ? "n/a" : "FAILED", c->why);
			continue;
		}
		snprintf(a, sizeof(a), "%.0f [%.0f-%.0f]", c->s[F_P50].med,
			 c->s[F_P50].min, c->s[F_P50].max);
		snprintf(b, sizeof(b), "%.0f [%.0f-%.0f]", c->s[F_P99].med,
			 c->s[F_P99].min, c->s[F_P99].max);
		printf("  %-30s %8.0f %20s %20s %8.0f %8.0f %9.0f\n", xs[t]->label,
		       c->s[F_COUNT].med, a, b, c->s[F_P999].med,
		       c->s[F_P9999].med, c->s[F_MAX].med);
	}
}

static void print_sweep(void)
{
	char h[32];

	printf("Round-trip latency sweep, back to back: p50 ns (p99 ns below), median of runs\n");
	printf("  %-30s", "transport");
	for (unsigned si = 0; si < nsizes; si++) {
		if (sizes[si] >= 1024)
			snprintf(h, sizeof(h), "%zuK", sizes[si] / 1024);
		else
			snprintf(h, sizeof(h), "%zu", sizes[si]);
		printf(" %8s", h);
	}
	printf("\n");
	for (unsigned t = 0; t < nx; t++) {
		if (!cells[S_SWEEP][0][t])
			continue;
		for (int f = 0; f < 2; f++) {
			printf("  %-30s", f == 0 ? xs[t]->label : "");
			for (unsigned si = 0; si < nsizes; si++) {
				struct cell *c = cells[S_SWEEP][si][t];

				if (c->state > 0)
					printf(" %8s", "n/a");
				else if (c->state < 0)
					printf(" %8s", "FAILED");
				else
					printf(" %8.0f", c->s[f == 0 ? F_P50 : F_P99].med);
			}
			printf("\n");
		}
	}
	for (unsigned t = 0; t < nx; t++)
		for (unsigned si = 0; si < nsizes && cells[S_SWEEP][0][t]; si++)
			if (cells[S_SWEEP][si][t]->state)
				printf("  %s, %zu B: %s: %s\n", xs[t]->label, sizes[si],
				       cells[S_SWEEP][si][t]->state > 0 ? "n/a" : "FAILED",
				       cells[S_SWEEP][si][t]->why);
}

static const struct cell *find(enum set s, const char *name)
{
	for (unsigned t = 0; t < nx; t++)
		if (!strcmp(xs[t]->name, name) && cells[s][0][t] &&
		    cells[s][0][t]->state == 0)
			return cells[s][0][t];
	return NULL;
}

/*
 * One ratio line (a over b, of figure f); with a target, the verdict goes
 * to stdout, the --targets file and the JSON.
 */
static void ratio(FILE *json, const char *what, enum set s, const char *a,
		  const char *b, enum fig f, double target)
{
	const struct cell *ca = find(s, a), *cb = find(s, b);
	char verdict[96] = "";
	double q;

	if (!ca || !cb) {
		printf("    %-44s %-6s not measured (%s)\n", what, fig_name[f],
		       !ca ? a : b);
		if (target > 0)
			bench_target_line(&o, "%-58s %-6s NOT MEASURED (%s missing)",
					  what, fig_name[f], !ca ? a : b);
		return;
	}
	q = ca->s[f].med / cb->s[f].med;
	if (target > 0)
		snprintf(verdict, sizeof(verdict), "  target <= %.2g: %s", target,
			 q <= target ? "met" : "MISSED");
	printf("    %-44s %-6s %7.3fx  (%.0f / %.0f ns)%s\n", what, fig_name[f],
	       q, ca->s[f].med, cb->s[f].med, verdict);
	if (target > 0)
		bench_target_line(&o, "%-58s %-6s %7.3fx  target <= %.2g  %s", what,
				  fig_name[f], q, target, q <= target ? "met" : "MISSED");
	if (json)
		fprintf(json, "{\"bench\":\"latency\",\"time\":\"%s\",\"metric\":\"%s_ratio\","
			"\"set\":\"%s\",\"transport\":\"%s\",\"baseline\":\"%s\","
			"\"msg_bytes\":64,\"ratio\":%.4f%s%.2g%s%s}\n",
			bench_started(), fig_name[f],
			s == S_HOT ? "64B" : "64B-idle", a, b, q,
			target > 0 ? ",\"target_max\":" : "", target > 0 ? target : 0,
			target > 0 ? ",\"met\":" : "",
			target > 0 ? (q <= target ? "true" : "false") : "");
}

/* ------------------------------------------------------------------------
 * Plots: HDR-style percentile curves (64 B) and p50 against size.
 */
static void plot_curves(enum set s, const char *base, const char *title)
{
	char name[128];
	FILE *gp, *d;
	bool first = true;

	snprintf(name, sizeof(name), "%s.gp", base);
	gp = bench_plot_open(&o, name);
	if (!gp)
		return;
	fprintf(gp, "set terminal pngcairo size 1000,620 noenhanced font ',10'\n"
		"set output '%s.png'\n"
		"set title '%s'\n"
		"set logscale x\nset logscale y\nset grid\n"
		"set xlabel 'percentile'\nset ylabel 'round trip, ns'\n"
		/* Tic labels are formats to gnuplot: %%%% prints a %%. */
		"set xtics ('0%%%%' 1, '50%%%%' 2, '90%%%%' 10, '99%%%%' 100, "
		"'99.9%%%%' 1000, '99.99%%%%' 10000, '99.999%%%%' 100000, "
		"'99.9999%%%%' 1000000)\n"
		"set key outside right\n"
		"plot ", base, title);
	for (unsigned t = 0; t < nx; t++) {
		struct cell *c = cells[s][0][t];
		static const double pcts[] = {
			0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99,
			99.995, 99.999, 99.9995, 99.9999,
		};

		if (!c || c->state || !c->merged || !c->merged->count)
			continue;
		snprintf(name, sizeof(name), "%s-%s.dat", base, xs[t]->name);
		d = bench_plot_open(&o, name);
		fprintf(d, "# percentile  1/(1-p)  round_trip_ns  (all rounds merged)\n");
		for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
			/* A percentile finer than the samples resolve says nothing. */
			if (pcts[i] > 0 &&
			    (1 - pcts[i] / 100) * (double)c->merged->count < 1)
				break;
			fprintf(d, "%g %g %llu\n", pcts[i], 1 / (1 - pcts[i] / 100),
				(unsigned long long)(pcts[i] > 0 ?
				hist_pct(c->merged, pcts[i]) : c->merged->min));
		}
		fprintf(d, "%g %g %llu\n", 100.0,
			(double)c->merged->count, (unsigned long long)c->merged->max);
		fclose(d);
		fprintf(gp, "%s'%s' using 2:3 with linespoints title '%s'",
			first ? "" : ", \\\n     ", name, xs[t]->label);
		first = false;
	}
	fprintf(gp, "\n");
	fclose(gp);
}

static void plot_sweep(void)
{
	FILE *gp = bench_plot_open(&o, "latency-sweep.gp"), *d;
	bool first = true;

	if (!gp)
		return;
	d = bench_plot_open(&o, "latency-sweep.dat");
	fprintf(d, "# bytes, then p50 ns per transport (NaN: not measured)\n");
	for (unsigned si = 0; si < nsizes; si++) {
		fprintf(d, "%zu", sizes[si]);
		for (unsigned t = 0; t < nx; t++) {
			struct cell *c = cells[S_SWEEP][si][t];

			if (!cells[S_SWEEP][0][t])
				continue;
			if (c->state)
				fprintf(d, " NaN");
			else
				fprintf(d, " %.0f", c->s[F_P50].med);
		}
		fprintf(d, "\n");
	}
	fclose(d);
	fprintf(gp, "set terminal pngcairo size 1000,620 noenhanced font ',10'\n"
		"set output 'latency-sweep.png'\n"
		"set title 'Round trip p50 against message size (median of runs)'\n"
		"set logscale x 2\nset logscale y\nset grid\n"
		"set xlabel 'message bytes'\nset ylabel 'round trip p50, ns'\n"
		"set key outside right\nplot ");
	for (unsigned t = 0, col = 2; t < nx; t++) {
		if (!cells[S_SWEEP][0][t])
			continue;
		fprintf(gp, "%s'latency-sweep.dat' using 1:%u with linespoints title '%s'",
			first ? "" : ", \\\n     ", col++, xs[t]->label);
		first = false;
	}
	fprintf(gp, "\n");
	fclose(gp);
}

int main(int argc, char **argv)
{
	static const size_t sweep[] = { 8, 32, 128, 512, 2048, 8192, 32768, 65536 };
	const struct bx_xport **all;
	unsigned nall;
	struct bench_ns ns;
	struct hist *h;
	bool need_ns = false;
	uint64_t t_start = bench_now_ns();
	FILE *json;

	json = bench_start(argc, argv,
			   "  BENCH_LAT_GAP_US   idle gap before each round trip of the idle set (100)\n",
			   &o, &ns);
	bench_ns_setup(&ns, &o);
	hx_init(&o, &ns);

	jobs[S_HOT] = (struct hx_lat_job){
		.warm_n = 20000, .warm_s = bench_by_mode(&o, 0.05, 0.3),
		.max_samples = (size_t)bench_by_mode(&o, 300000, 3000000),
		.seconds = bench_by_mode(&o, 0.3, 3),
	};
	jobs[S_SWEEP] = (struct hx_lat_job){
		.warm_n = 2000, .warm_s = bench_by_mode(&o, 0.02, 0.1),
		.max_samples = (size_t)bench_by_mode(&o, 50000, 500000),
		.seconds = bench_by_mode(&o, 0.05, 0.5),
	};
	jobs[S_IDLE] = (struct hx_lat_job){
		.gap_ns = (uint64_t)bench_env_long("BENCH_LAT_GAP_US", 100) * 1000,
		.warm_n = 200, .warm_s = 0.05,
		.max_samples = (size_t)bench_by_mode(&o, 3000, 30000),
		.seconds = bench_by_mode(&o, 0.3, 3),
	};
	for (size_t i = 0; i < sizeof(sweep) / sizeof(sweep[0]); i++)
		sizes[nsizes++] = sweep[i];

	nall = hx_xports(&all);
	for (unsigned i = 0; i < nall && nx < MAX_T; i++)
		if ((all[i]->flags & BX_LAT) && bench_want(&o, all[i]->name))
			xs[nx++] = all[i];
	for (unsigned t = 0; t < nx; t++) {
		for (int s = 0; s < S_N; s++) {
			if (!in_set((enum set)s, xs[t]))
				continue;
			for (unsigned si = 0; si < (s == S_SWEEP ? nsizes : 1); si++) {
				struct cell *c = calloc(1, sizeof(*c));

				if (!c)
					bench_die("out of memory");
				if (s != S_SWEEP) {
					c->merged = malloc(sizeof(*c->merged));
					if (!c->merged)
						bench_die("out of memory");
					hist_reset(c->merged);
				}
				cells[s][si][t] = c;
			}
		}
		need_ns |= !strncmp(xs[t]->name, "shmq", 4);
	}
	(void)need_ns;
	h = malloc(sizeof(*h));
	if (!h)
		bench_die("out of memory");

	printf("Round-trip latency: ping-pong, process A on CPU %d, echo B on CPU %d\n",
	       o.cpu[0], o.cpu[1]);
	if (o.ncpu < 2)
		printf("  ONLY ONE USABLE CPU: transports that spin are skipped\n");
	printf("  %s mode, %d rounds, transport order rotated each round; figures in ns\n"
	       "  are the median of the rounds [min-max]; percentiles from a log-linear\n"
	       "  histogram of every sample (< 0.8%% rounding up)\n",
	       o.full ? "full" : "quick", o.runs);
	fflush(stdout);

	for (int r = 0; r < o.runs; r++) {
		for (int s = 0; s < S_N; s++) {
			for (unsigned si = 0; si < (s == S_SWEEP ? nsizes : 1); si++) {
				for (unsigned k = 0; k < nx; k++) {
					unsigned t = (k + (unsigned)r) % nx;

					if (!cells[s][si][t])
						continue;
					/* 64 B of the sweep is the headline's figure. */
					if (s == S_SWEEP && sizes[si] == 64)
						continue;
					measure((enum set)s, si, t, r, h);
				}
			}
		}
	}

	/* Spreads; the sweep's 64 B column is the headline. */
	for (int s = 0; s < S_N; s++) {
		for (unsigned si = 0; si < nsizes; si++) {
			for (unsigned t = 0; t < nx; t++) {
				struct cell *c = cells[s][si][t];
				double v[64];

				if (!c)
					continue;
				if (s == S_SWEEP && sizes[si] == 64 && cells[S_HOT][0][t]) {
					struct cell *hc = cells[S_HOT][0][t];

					c->state = hc->state;
					memcpy(c->why, hc->why, sizeof(c->why));
					memcpy(c->fig, hc->fig, sizeof(c->fig));
				}
				if (c->state)
					continue;
				for (int f = 0; f < F_NFIG; f++) {
					for (int r = 0; r < o.runs; r++)
						v[r] = c->fig[r][f];
					bench_spread(v, o.runs, &c->s[f]);
				}
			}
		}
	}

	print_set(S_HOT, "Round trip, 64 B, back to back (ns)");
	hx_report_skipped(json, "latency");
	printf("\n");
	{
		char t[160];

		snprintf(t, sizeof(t), "Round trip, 64 B, %.0f us idle before each "
			 "(the echo side is asleep: wake-up path) (ns)",
			 (double)jobs[S_IDLE].gap_ns / 1e3);
		print_set(S_IDLE, t);
	}
	printf("\n");
	print_sweep();
	printf("\n");

	printf("Ratios, 64 B, of the medians of the rounds\n");
	ratio(json, "shmq busy-poll / raw ping-pong", S_HOT, "shmq-busy",
	      "raw-pingpong", F_P50, 1.3);
	ratio(json, "shmq busy-poll / raw ping-pong", S_HOT, "shmq-busy",
	      "raw-pingpong", F_P99, 1.5);
	ratio(json, "shmq futex, echo asleep / pipe, echo asleep", S_IDLE,
	      "shmq-futex", "pipe", F_P50, 0.7);
	ratio(json, "shmq futex / pipe, back to back", S_HOT, "shmq-futex",
	      "pipe", F_P50, 0);
	ratio(json, "shmq busy-poll / naive ring", S_HOT, "shmq-busy",
	      "naive-ring", F_P50, 0);
	ratio(json, "shmq busy-poll / mq busy", S_HOT, "shmq-busy",
	      "mq-busy", F_P50, 0);
	ratio(json, "shmq futex / zeromq", S_HOT, "shmq-futex", "zeromq", F_P50, 0);
	ratio(json, "shmq busy-poll / iceoryx busy-poll", S_HOT, "shmq-busy",
	      "iceoryx-busy", F_P50, 0);
	ratio(json, "shmq futex, asleep / iceoryx waitset, asleep", S_IDLE,
	      "shmq-futex", "iceoryx-wait", F_P50, 0);

	for (unsigned t = 0; t < nx; t++) {
		if (cells[S_HOT][0][t])
			json_cell(json, S_HOT, 64, t, cells[S_HOT][0][t]);
		if (cells[S_IDLE][0][t])
			json_cell(json, S_IDLE, 64, t, cells[S_IDLE][0][t]);
		for (unsigned si = 0; si < nsizes; si++)
			if (cells[S_SWEEP][si][t] && sizes[si] != 64)
				json_cell(json, S_SWEEP, sizes[si], t,
					  cells[S_SWEEP][si][t]);
	}
	plot_curves(S_HOT, "latency-64", "Round trip, 64 B, back to back: percentile curves (all rounds)");
	plot_curves(S_IDLE, "latency-64-idle", "Round trip, 64 B, echo side asleep: percentile curves (all rounds)");
	plot_sweep();
	printf("  (%.1f s)\n\n", (double)(bench_now_ns() - t_start) / 1e9);

	free(h);
	bench_ns_teardown(&ns);
	if (json)
		fclose(json);
	return 0;
}
