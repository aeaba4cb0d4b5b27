/*
 * clock.c - message timestamps without a clock_gettime() per message.
 *
 * Overview
 * --------
 * Every frame carries CLOCK_REALTIME at publication (layout.h).  On the
 * machines we measure, clock_gettime() through the vDSO costs about 30 ns
 * (a KVM guest reading the TSC through the pvclock page), a third of what
 * a 64-byte send costs altogether; the TSC itself reads in about 12 ns.  So
 * a producer handle keeps a small linear model, realtime = base_ns +
 * (tsc - base_tsc) * rate, and reads the real clock only to resynchronise
 * it, once per RESYNC_NS of TSC time.
 *
 *   first call          clock_gettime; calibration starts (cal_*)
 *   until 1 ms passed   clock_gettime every call (no rate known yet)
 *   then                rate = d(realtime) / d(tsc) over the last interval
 *                       of at least 1 ms; extrapolate from the last resync
 *   every RESYNC_NS     clock_gettime again: new base, new rate
 *
 * Accuracy: the rate comes from two clock reads at least 1 ms apart, each
 * good to some 30 ns, so it is off by a few parts in 10^5, and an
 * extrapolation at most RESYNC_NS long drifts by well under 100 ns.  A step
 * of the realtime clock (settimeofday) shows up at the next resync.  The
 * values one handle returns never go backwards (clamped to the last one);
 * those of different producers were never ordered (they race for the
 * ring), and the spill index and time seeks already allow for that.  (A
 * step back of the realtime clock by more than RESYNC_NS is followed.)
 *
 * When the TSC is not to be trusted -- not x86-64, or the kernel does not
 * use it as its clocksource (then it may differ between CPUs or stop in
 * idle) -- every call is a clock_gettime(), as before.  The check reads
 * /sys once per process.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "shmq_int.h"

/* Resynchronise with the real clock this often (ns of TSC time). */
#define RESYNC_NS 1000000ull
/* The shortest interval a rate is measured over. */
#define CAL_NS 1000000ull

static pthread_once_t tsc_once = PTHREAD_ONCE_INIT;
static bool tsc_usable;

static void tsc_check(void)
{
#if defined(__x86_64__)
	char buf[32] = "";
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource",
			"re");

	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f))
		tsc_usable = strncmp(buf, "tsc\n", 4) == 0;
	fclose(f);
#endif
}

static inline uint64_t read_tsc(void)
{
#if defined(__x86_64__)
	return __rdtsc();
#else
	return 0;
#endif
}

void shmq__fastclock_init(struct shmq_fastclock *c)
{
	memset(c, 0, sizeof(*c));
	pthread_once(&tsc_once, tsc_check);
	c->tsc = tsc_usable;
}

/*
 * A (tsc, realtime) pair is only as good as the time between its two
 * reads: a thread preempted in between would pair a TSC value with a clock
 * read milliseconds later, and the model would be that far off until the
 * next resync.  So the clock read is bracketed by two TSC reads and kept
 * only if they are close (PAIR_TICKS: a few microseconds at any clock
 * rate a TSC has; the reads themselves take some 100 ticks).
 */
#define PAIR_TICKS 20000u
#define PAIR_TRIES 4

/* Read the real clock and move the model's base (and rate) to now. */
static uint64_t resync(struct shmq_fastclock *c)
{
	uint64_t t1 = 0, t2 = 0, tsc, ns = 0;
	int k;

	for (k = 0; k < PAIR_TRIES; k++) {
		t1 = read_tsc();
		ns = shmq__now_ns();
		t2 = read_tsc();
		if (t2 >= t1 && t2 - t1 < PAIR_TICKS)
			break;
	}
	if (k == PAIR_TRIES)
		return ns; /* no tight pair now: right for this call, model unchanged */
	tsc = t1 + (t2 - t1) / 2;
	if (!c->cal_tsc) {
		c->cal_tsc = tsc;
		c->cal_ns = ns;
	} else if (tsc > c->cal_tsc && ns > c->cal_ns && ns - c->cal_ns >= CAL_NS) {
		/* ns per tick as a 32.32 fixed-point number. */
		c->rate = (uint64_t)(((unsigned __int128)(ns - c->cal_ns) << 32) /
				     (tsc - c->cal_tsc));
		c->cal_tsc = tsc;
		c->cal_ns = ns;
		/* Ticks in RESYNC_NS, at that rate. */
		c->resync_ticks = c->rate ? (uint64_t)(((unsigned __int128)RESYNC_NS << 32) /
							c->rate) : 0;
	}
	c->base_tsc = tsc;
	c->base_ns = ns;
	return ns;
}

uint64_t shmq__fastclock_ns(struct shmq_fastclock *c)
{
	uint64_t tsc, ns, d;

	if (!c->tsc)
		return shmq__now_ns();
	tsc = read_tsc();
	d = tsc - c->base_tsc;
	if (c->rate && tsc >= c->base_tsc && d < c->resync_ticks)
		ns = c->base_ns + (uint64_t)(((unsigned __int128)d * c->rate) >> 32);
	else
		ns = resync(c);
	/*
	 * Never backwards by the model's own error, per handle; a real step
	 * back of the clock (more than a resync's worth) is followed.
	 */
	if (ns < c->last_ns && c->last_ns - ns < RESYNC_NS)
		ns = c->last_ns;
	c->last_ns = ns;
	return ns;
}
