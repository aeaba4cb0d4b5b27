/*
 * common.c - pinning, timing, statistics, machine description and the
 * private shmqd namespace of the benchmark programs.
 *
 * Design note
 *   Overview: see common.h.  The measured loops live in the bench-*.c files;
 *   this file only prepares and reports them.
 *
 *   Processes: a benchmark is a parent (the measuring side, pinned to the
 *   first CPU) and one peer forked per measurement (pinned to the second).
 *   The peer is forked before either side opens a shmq handle, and each
 *   side opens its own client, so no handle ever crosses a fork.  Output is
 *   flushed before every fork so that buffered text is not printed twice.
 *
 *   Failure: a benchmark either measures what it says or stops.  bench_die()
 *   deletes the topics this process created, stops the shmqd it started
 *   and removes the directory it made; a peer inherits none of that duty
 *   (the owner is recorded by pid).  The peer dies with its parent
 *   (PR_SET_PDEATHSIG); a peer that fails ends the parent at once (SIGCHLD),
 *   even while the parent spins in a poll that will never be answered; and
 *   both arm alarm() per measurement, so a message lost by a broken queue
 *   ends the run with SIGALRM instead of hanging it.  ^C and SIGTERM take
 *   the same way out as bench_die().  When a program is killed outright,
 *   bench/run.sh's trap runs `--cleanup` against the namespace and removes
 *   it.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Cleanup state: the one namespace of this process and its topics.
 */
#define BENCH_MAX_TOPICS 16

static struct bench_ns *g_ns;
static pid_t g_ns_owner;
static volatile pid_t g_peer;	/* the measured peer, while it runs */
static char g_topics[BENCH_MAX_TOPICS][SHMQ_NAME_MAX + 1];

static void ns_cleanup(void)
{
	/* A forked peer shares the parent's memory image but not its duties. */
	if (g_ns && getpid() == g_ns_owner)
		bench_ns_teardown(g_ns);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "bench[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1); /* runs ns_cleanup through atexit */
}

void bench_check(int rc, const char *what)
{
	const char *detail;

	if (rc >= 0)
		return;
	detail = shmq_errdetail();
	bench_die("%s: %s%s%s", what, shmq_strerror(rc), *detail ? ": " : "",
		  detail);
}

/* ------------------------------------------------------------------------
 * Options.
 */
long bench_env_long(const char *name, long def)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v <= 0)
		bench_die("%s=%s: expected a positive integer", name, s);
	return v;
}

double bench_env_double(const char *name, double def)
{
	const char *s = getenv(name);
	char *end;
	double v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v > 0))
		bench_die("%s=%s: expected a positive number", name, s);
	return v;
}

/*
 * The two CPUs: BENCH_CPUS="a,b", else the first two this process may run
 * on (normally 0 and 1).  With one usable CPU both sides share it, which
 * the programs say in their headings.
 */
static void pick_cpus(struct bench_opts *o)
{
	const char *s = getenv("BENCH_CPUS");
	cpu_set_t set;
	int i, n = 0;

	if (s && *s) {
		if (sscanf(s, "%d,%d", &o->cpu[0], &o->cpu[1]) != 2 ||
		    o->cpu[0] < 0 || o->cpu[1] < 0 ||
		    o->cpu[0] >= CPU_SETSIZE || o->cpu[1] >= CPU_SETSIZE)
			bench_die("BENCH_CPUS=%s: expected two CPU numbers \"a,b\"", s);
		o->ncpu = o->cpu[0] == o->cpu[1] ? 1 : 2;
		return;
	}
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		bench_die("sched_getaffinity: %s", strerror(errno));
	for (i = 0; i < CPU_SETSIZE && n < 2; i++)
		if (CPU_ISSET(i, &set))
			o->cpu[n++] = i;
	if (n == 0)
		bench_die("no CPU in this process's affinity mask");
	if (n == 1)
		o->cpu[1] = o->cpu[0];
	o->ncpu = n;
}

/*
 * A hung measurement (a message lost, a peer stuck) or an interrupt (^C,
 * SIGTERM) ends here.  exit() from a signal handler is not
 * async-signal-safe, but the alternative is worse: without the atexit
 * cleanup, shared-memory segments and a shmqd would outlive us.  The code we
 * interrupt is a measured loop that holds no stdio or malloc lock in
 * practice, and the re-armed default SIGALRM bounds the damage if the
 * cleanup itself were to hang.
 */
static void on_fatal(int sig)
{
	static const char hung[] = "bench: watchdog: a measurement hung "
				   "(BENCH_TIMEOUT seconds)\n";
	static const char intr[] = "bench: interrupted\n";
	static const char peer[] = "bench: the measured peer failed\n";
	const char *msg = sig == SIGALRM ? hung : sig == SIGCHLD ? peer : intr;
	size_t len = strlen(msg);

	if (sig == SIGCHLD) {
		siginfo_t si;
		pid_t p = g_peer;

		/*
		 * Peek without reaping: a peer that exits 0 at the end of its
		 * measurement is reaped by bench_reap(), and shmqd's exit is
		 * seen where it matters (topic create, teardown).
		 */
		memset(&si, 0, sizeof(si));
		if (p <= 0 || waitid(P_PID, (id_t)p, &si,
				     WEXITED | WNOHANG | WNOWAIT) < 0 ||
		    si.si_pid != p ||
		    (si.si_code == CLD_EXITED && si.si_status == 0))
			return;
	}
	signal(SIGALRM, SIG_DFL);
	alarm(5);
	if (write(STDERR_FILENO, msg, len) < 0) {
		/* Nothing better to do: we are leaving anyway. */
	}
	exit(sig == SIGALRM || sig == SIGCHLD ? 1 : 128 + sig);
}

static void usage(FILE *f, const char *prog, const char *extra)
{
	fprintf(f,
		"usage: %s [options]\n"
		"  --dir DIR      use the shmqd already serving DIR (else start one\n"
		"                 on a temporary directory)\n"
		"  --shmqd PATH   shmqd binary (default $SHMQ_BUILD/shmqd, or next\n"
		"                 to this program's directory)\n"
		"  --json FILE    append one JSON object per result line to FILE\n"
		"  --only LIST    run only these transports (comma-separated names)\n"
		"  --plots DIR    write gnuplot data and scripts to DIR\n"
		"  --targets FILE append the verdict on each issue-5 target to FILE\n"
		"  --machine      describe the machine and exit\n"
		"  --cleanup      delete every topic of --dir and exit\n"
		"environment:\n"
		"  BENCH_RUNS     repetitions of each measurement (default 3, full 5)\n"
		"  BENCH_FULL     1: longer measurements and more sizes\n"
		"  BENCH_CPUS     \"a,b\": the two CPUs (default the first two allowed)\n"
		"  BENCH_TIMEOUT  seconds before one measurement is declared hung (60)\n"
		"%s",
		prog, extra ? extra : "");
}

void bench_parse(int argc, char **argv, const char *usage_extra,
		 struct bench_opts *o)
{
	static const struct option lopts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "shmqd", required_argument, NULL, 's' },
		{ "json", required_argument, NULL, 'j' },
		{ "only", required_argument, NULL, 'o' },
		{ "plots", required_argument, NULL, 'p' },
		{ "targets", required_argument, NULL, 't' },
		{ "machine", no_argument, NULL, 'm' },
		{ "cleanup", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sigaction sa;
	int c;

	memset(o, 0, sizeof(*o));
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': o->dir = optarg; break;
		case 's': o->shmqd = optarg; break;
		case 'j': o->json = optarg; break;
		case 'o': o->only = optarg; break;
		case 'p': o->plots = optarg; break;
		case 't': o->targets = optarg; break;
		case 'm': o->machine = true; break;
		case 'c': o->cleanup = true; break;
		case 'h':
			usage(stdout, argv[0], usage_extra);
			exit(0);
		default:
			usage(stderr, argv[0], usage_extra);
			exit(2);
		}
	}
	if (optind != argc) {
		usage(stderr, argv[0], usage_extra);
		exit(2);
	}
	if (o->cleanup && !o->dir)
		bench_die("--cleanup needs --dir");
	{
		const char *f = getenv("BENCH_FULL");

		o->full = f && *f && strcmp(f, "0") != 0;
	}
	o->runs = (int)bench_env_long("BENCH_RUNS", o->full ? 5 : 3);
	if (o->runs > 64)
		bench_die("BENCH_RUNS=%d: at most 64", o->runs);
	o->timeout_s = (int)bench_env_long("BENCH_TIMEOUT", 60);
	pick_cpus(o);
	/* A peer that dies must not take us with SIGPIPE; EPIPE is reported. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_fatal);
	signal(SIGINT, on_fatal);
	signal(SIGTERM, on_fatal);
	signal(SIGHUP, on_fatal);
	/* SA_RESTART: a peer's normal exit must not interrupt our reads. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	(void)bench_started();
}

FILE *bench_start(int argc, char **argv, const char *usage_extra,
		  struct bench_opts *o, struct bench_ns *ns)
{
	FILE *json;

	bench_parse(argc, argv, usage_extra, o);
	json = bench_json_open(o);
	if (o->machine) {
		bench_machine(json);
		exit(0);
	}
	if (o->cleanup && ns) {
		bench_ns_setup(ns, o);
		bench_topic_delete_all(ns);
		bench_ns_teardown(ns);
		exit(0);
	}
	return json;
}

bool bench_want(const struct bench_opts *o, const char *name)
{
	size_t n = strlen(name);
	const char *s;

	if (!o->only)
		return true;
	for (s = o->only; *s;) {
		size_t len = strcspn(s, ",");

		if (len == n && !strncmp(s, name, n))
			return true;
		s += len;
		if (*s == ',')
			s++;
	}
	return false;
}

/* ------------------------------------------------------------------------
 * CPUs and processes.
 */
void bench_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		bench_die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

void bench_watchdog(const struct bench_opts *o)
{
	alarm((unsigned)o->timeout_s);
}

pid_t bench_fork(const struct bench_opts *o, int cpu, int (*fn)(void *),
		 void *arg)
{
	pid_t parent = getpid();
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid > 0) {
		g_peer = pid;
		return pid;
	}
	/*
	 * The death signal is armed after fork; if the parent died in
	 * between, we would never get it, so check once by hand.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
	/* The parent cleans up after an interrupt; the peer just goes. */
	signal(SIGCHLD, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	bench_pin(cpu);
	bench_watchdog(o);
	fflush(NULL);
	exit(fn(arg)); /* exit, not _exit: stderr of a failed peer matters */
}

void bench_reap(pid_t pid, const char *what)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			bench_die("waitpid(%s): %s", what, strerror(errno));
	g_peer = 0;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	if (WIFSIGNALED(st))
		bench_die("%s peer killed by signal %d%s", what, WTERMSIG(st),
			  WTERMSIG(st) == SIGALRM ? " (watchdog: hung)" : "");
	bench_die("%s peer failed (exit %d)", what, WEXITSTATUS(st));
}

void bench_sync_init(struct bench_sync *s)
{
	if (pipe2(s->fd, O_CLOEXEC) < 0)
		bench_die("pipe: %s", strerror(errno));
}

void bench_sync_post(struct bench_sync *s)
{
	char c = 1;

	bench_write_full(s->fd[1], &c, 1);
}

void bench_sync_wait(struct bench_sync *s)
{
	char c;
	ssize_t r;

	/* Our own copy of the write end would hide the peer's EOF. */
	if (s->fd[1] >= 0) {
		close(s->fd[1]);
		s->fd[1] = -1;
	}
	do
		r = read(s->fd[0], &c, 1);
	while (r < 0 && errno == EINTR);
	if (r != 1)
		bench_die("peer failed before it was ready");
}

void bench_sync_close(struct bench_sync *s)
{
	for (int i = 0; i < 2; i++) {
		if (s->fd[i] >= 0)
			close(s->fd[i]);
		s->fd[i] = -1;
	}
}

void bench_read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			bench_die("read: %s", strerror(errno));
		if (r == 0)
			bench_die("read: unexpected end of stream");
		p += r;
		n -= (size_t)r;
	}
}

void bench_write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t r = write(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			bench_die("write: %s", strerror(errno));
		p += r;
		n -= (size_t)r;
	}
}

/* ------------------------------------------------------------------------
 * Statistics.
 */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

void bench_sort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
}

uint64_t bench_pct(const uint64_t *sorted, size_t n, double p)
{
	/*
	 * Nearest rank: the smallest sample with at least p% of the samples
	 * at or below it.  No interpolation, so every figure printed is a
	 * latency that was really observed.
	 */
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)((p / 100.0) * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

void bench_spread(const double *v, int n, struct bench_spread *out)
{
	double s[64];
	int m = n < 64 ? n : 64;

	if (m <= 0) {
		out->med = out->min = out->max = 0;
		return;
	}
	memcpy(s, v, (size_t)m * sizeof(*s));
	qsort(s, (size_t)m, sizeof(*s), cmp_double);
	out->min = s[0];
	out->max = s[m - 1];
	/* The middle run; the mean of the middle two for an even count. */
	out->med = m % 2 ? s[m / 2] : (s[m / 2 - 1] + s[m / 2]) / 2;
}

const char *bench_fmt_spread(char *buf, size_t n, const char *fmt,
			     const struct bench_spread *s)
{
	char a[32], b[32], c[32];

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(a, sizeof(a), fmt, s->med);
	snprintf(b, sizeof(b), fmt, s->min);
	snprintf(c, sizeof(c), fmt, s->max);
#pragma GCC diagnostic pop
	snprintf(buf, n, "%s [%s-%s]", a, b, c);
	return buf;
}

/* ------------------------------------------------------------------------
 * Output.
 */
const char *bench_started(void)
{
	static char stamp[32];

	if (!stamp[0]) {
		time_t t = time(NULL);
		struct tm tm;

		gmtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	return stamp;
}

FILE *bench_json_open(const struct bench_opts *o)
{
	FILE *f;

	if (!o->json)
		return NULL;
	f = fopen(o->json, "a");
	if (!f)
		bench_die("%s: %s", o->json, strerror(errno));
	/* Whole lines only, so a killed run leaves no torn object. */
	setvbuf(f, NULL, _IOLBF, 0);
	return f;
}

FILE *bench_plot_open(const struct bench_opts *o, const char *name)
{
	char path[4096];
	FILE *f;

	if (!o->plots)
		return NULL;
	snprintf(path, sizeof(path), "%s/%s", o->plots, name);
	f = fopen(path, "w");
	if (!f)
		bench_die("%s: %s", path, strerror(errno));
	return f;
}

void bench_target_line(const struct bench_opts *o, const char *fmt, ...)
{
	va_list ap;
	FILE *f;

	if (!o->targets)
		return;
	f = fopen(o->targets, "a");
	if (!f)
		bench_die("%s: %s", o->targets, strerror(errno));
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

/* Read the first line of a small file into buf, without the newline. */
static bool read_line(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	bool ok;

	if (!f)
		return false;
	ok = fgets(buf, (int)n, f) != NULL;
	fclose(f);
	if (ok)
		buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

/* The machine's strings are plain, but quote defensively. */
void bench_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s < 0x20)
			fputc(' ', f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

struct machine {
	char model[256];
	int cpus;		/* online */
	int cores;		/* distinct (package, core) pairs */
	int sockets;
	int numa_nodes;
	bool virt;		/* the hypervisor CPUID flag */
	char kernel[256];
	char clocksource[64];
	uint64_t clock_ns;	/* cost of one CLOCK_MONOTONIC read, cheapest */
	uint64_t clock_med_ns;	/* and median */
	double load1;		/* 1-minute load average, -1 if unknown */
};

static void cpuinfo(struct machine *m)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[4096];

	snprintf(m->model, sizeof(m->model), "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *v = strchr(line, ':');

		if (!v)
			continue;
		v++;
		v += strspn(v, " \t");
		v[strcspn(v, "\n")] = '\0';
		if (!strncmp(line, "model name", 10) && !strcmp(m->model, "unknown"))
			snprintf(m->model, sizeof(m->model), "%s", v);
		if (!strncmp(line, "flags", 5) && strstr(v, " hypervisor"))
			m->virt = true;
	}
	fclose(f);
}

static void topology(struct machine *m)
{
	/* (package, core) pairs; enough for any machine this will meet. */
	enum { MAXC = 4096 };
	static long pkg[MAXC], core[MAXC];
	long maxpkg = -1;
	int n = 0;

	for (int cpu = 0; cpu < MAXC; cpu++) {
		char path[128], buf[64];
		long p, c;
		int i;

		snprintf(path, sizeof(path),
			 "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
		if (!read_line(path, buf, sizeof(buf)))
			continue;
		p = atol(buf);
		snprintf(path, sizeof(path),
			 "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
		if (!read_line(path, buf, sizeof(buf)))
			continue;
		c = atol(buf);
		for (i = 0; i < n; i++)
			if (pkg[i] == p && core[i] == c)
				break;
		if (i == n && n < MAXC) {
			pkg[n] = p;
			core[n] = c;
			n++;
		}
		if (p > maxpkg)
			maxpkg = p;
	}
	m->cores = n ? n : m->cpus;
	m->sockets = maxpkg >= 0 ? (int)maxpkg + 1 : 1;
}

static int numa_nodes(void)
{
	DIR *d = opendir("/sys/devices/system/node");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 1; /* a kernel without NUMA support has one node */
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "node", 4) &&
		    e->d_name[4] >= '0' && e->d_name[4] <= '9')
			n++;
	closedir(d);
	return n ? n : 1;
}

void bench_clock_cost(uint64_t *min_ns, uint64_t *median_ns)
{
	/*
	 * Back-to-back pairs: the cheapest is the floor under every sample,
	 * the median what a typical sample pays (one read sits inside each
	 * timed interval).  Pairs of 16 reads, so that the clock's own
	 * granularity does not round a cheap read to zero.
	 */
	enum { PAIRS = 4001, READS = 16 };
	static uint64_t d[PAIRS];

	for (int i = 0; i < PAIRS; i++) {
		uint64_t a = bench_now_ns(), b;

		for (int k = 0; k < READS - 1; k++)
			(void)bench_now_ns();
		b = bench_now_ns();
		d[i] = (b - a) / READS;
	}
	bench_sort_u64(d, PAIRS);
	*min_ns = d[0];
	*median_ns = d[PAIRS / 2];
}

void bench_machine(FILE *json)
{
	struct machine m;
	struct utsname u;
	char buf[128];

	memset(&m, 0, sizeof(m));
	cpuinfo(&m);
	m.cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	topology(&m);
	m.numa_nodes = numa_nodes();
	if (uname(&u) == 0)
		snprintf(m.kernel, sizeof(m.kernel), "%s %s %s", u.sysname,
			 u.release, u.version);
	if (!read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource",
		       m.clocksource, sizeof(m.clocksource)))
		snprintf(m.clocksource, sizeof(m.clocksource), "unknown");
	bench_clock_cost(&m.clock_ns, &m.clock_med_ns);
	m.load1 = -1;
	if (read_line("/proc/loadavg", buf, sizeof(buf)))
		m.load1 = strtod(buf, NULL);

	printf("Machine\n");
	printf("  CPU       %s\n", m.model);
	printf("  cores     %d online CPUs, %d cores, %d socket%s%s\n", m.cpus,
	       m.cores, m.sockets, m.sockets == 1 ? "" : "s",
	       m.virt ? " (virtual machine)" : "");
	printf("  NUMA      %d node%s\n", m.numa_nodes, m.numa_nodes == 1 ? "" : "s");
	printf("  kernel    %s\n", m.kernel);
	printf("  timer     CLOCK_MONOTONIC (vDSO) via %s: %llu ns per read (median; min %llu);\n"
	       "            every latency sample includes one read\n",
	       m.clocksource, (unsigned long long)m.clock_med_ns,
	       (unsigned long long)m.clock_ns);
	/*
	 * Two pinned processes own two CPUs for the whole run; anything else
	 * that runs there shows up in the tails and the spreads.  Say so.
	 */
	if (m.load1 >= 0)
		printf("  load      %.2f (1 min)%s\n", m.load1,
		       m.load1 >= 0.5 ? "  -- other work is running: expect noisy figures" : "");
	printf("\n");
	fflush(stdout);

	if (!json)
		return;
	fprintf(json, "{\"bench\":\"machine\",\"metric\":\"machine\",\"time\":\"%s\",\"cpu_model\":",
		bench_started());
	bench_json_str(json, m.model);
	fprintf(json, ",\"cpus\":%d,\"cores\":%d,\"sockets\":%d,\"numa_nodes\":%d,"
		"\"virtual\":%s,\"kernel\":", m.cpus, m.cores, m.sockets,
		m.numa_nodes, m.virt ? "true" : "false");
	bench_json_str(json, m.kernel);
	fprintf(json, ",\"clocksource\":");
	bench_json_str(json, m.clocksource);
	fprintf(json, ",\"clock_read_ns\":%llu,\"clock_read_ns_min\":%llu,"
		"\"loadavg_1min\":%.2f}\n",
		(unsigned long long)m.clock_med_ns, (unsigned long long)m.clock_ns,
		m.load1);
}

/* ------------------------------------------------------------------------
 * The namespace.
 */
static void find_shmqd(const char *given, char *out, size_t n)
{
	const char *build = getenv("SHMQ_BUILD");
	char self[PATH_MAX];
	ssize_t len;
	char *slash;
	int w;

	if (given) {
		w = snprintf(out, n, "%s", given);
	} else if (build && *build) {
		w = snprintf(out, n, "%s/shmqd", build);
	} else {
		/* Programs live in <build>/bench/, shmqd in <build>/. */
		len = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (len <= 0)
			bench_die("cannot find shmqd: pass --shmqd or set SHMQ_BUILD");
		self[len] = '\0';
		slash = strrchr(self, '/');
		if (slash)
			*slash = '\0';
		w = snprintf(out, n, "%s/../shmqd", self);
	}
	if (w < 0 || (size_t)w >= n)
		bench_die("path of shmqd too long");
}

static void start_shmqd(struct bench_ns *ns, const char *path)
{
	pid_t parent = getpid();
	pid_t pid;

	if (access(path, X_OK) < 0)
		bench_die("%s: %s (build it with `make all`, or pass --shmqd)",
			  path, strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		/* Our table is on stdout; shmqd may talk on stderr. */
		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
			_exit(127);
		/*
		 * Out of the terminal's process group: a ^C must reach us,
		 * not the daemon we still need to delete our topics.
		 */
		setsid();
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		execl(path, "shmqd", "--dir", ns->dir, (char *)NULL);
		fprintf(stderr, "bench: exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	ns->shmqd = pid;
}

static void stop_shmqd(struct bench_ns *ns)
{
	int st;

	if (ns->shmqd <= 0)
		return;
	kill(ns->shmqd, SIGTERM);
	for (int i = 0; i < 500; i++) { /* 5 s, then no more patience */
		if (waitpid(ns->shmqd, &st, WNOHANG) == ns->shmqd) {
			ns->shmqd = 0;
			return;
		}
		usleep(10000);
	}
	fprintf(stderr, "bench: shmqd did not stop on SIGTERM; killing it\n");
	kill(ns->shmqd, SIGKILL);
	waitpid(ns->shmqd, &st, 0);
	ns->shmqd = 0;
}

static int rm_one(const char *path, const struct stat *sb, int type,
		  struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

void bench_rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void bench_ns_setup(struct bench_ns *ns, const struct bench_opts *o)
{
	bench_ns_setup_in(ns, o, NULL);
}

void bench_ns_setup_in(struct bench_ns *ns, const struct bench_opts *o,
		       const char *parent)
{
	char path[PATH_MAX];

	memset(ns, 0, sizeof(*ns));
	if (o->dir) {
		if (strlen(o->dir) >= sizeof(ns->dir))
			bench_die("--dir %s: path too long", o->dir);
		snprintf(ns->dir, sizeof(ns->dir), "%s", o->dir);
	} else {
		const char *tmp = getenv("TMPDIR");

		if (!parent || !*parent)
			parent = tmp && *tmp ? tmp : "/tmp";
		if (snprintf(ns->dir, sizeof(ns->dir), "%s/shmq-bench-XXXXXX",
			     parent) >= (int)sizeof(ns->dir))
			bench_die("%s: path too long", parent);
		if (!mkdtemp(ns->dir))
			bench_die("mkdtemp %s: %s", ns->dir, strerror(errno));
		ns->own_dir = true;
	}
	g_ns = ns;
	g_ns_owner = getpid();
	atexit(ns_cleanup);
	if (!o->dir) {
		find_shmqd(o->shmqd, path, sizeof(path));
		start_shmqd(ns, path);
	}
	bench_check(shmq_open(ns->dir, NULL, &ns->client), "shmq_open");
}

void bench_ns_teardown(struct bench_ns *ns)
{
	for (int i = 0; i < BENCH_MAX_TOPICS; i++)
		if (g_topics[i][0] && ns->client)
			bench_topic_delete(ns, g_topics[i]);
	shmq_close(ns->client);
	ns->client = NULL;
	stop_shmqd(ns);
	if (ns->own_dir) {
		bench_rm_tree(ns->dir);
		ns->own_dir = false;
	}
	if (g_ns == ns)
		g_ns = NULL;
}

int bench_topic_create(struct bench_ns *ns, const char *name,
		       uint64_t ring_bytes, uint32_t max_message,
		       uint32_t partitions)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;

	to.partitions = partitions;
	to.ring_bytes = ring_bytes;
	to.max_message = max_message;
	to.full_policy = SHMQ_FULL_BLOCK;
	return bench_topic_create_opts(ns, name, &to);
}

int bench_topic_create_opts(struct bench_ns *ns, const char *name,
			    const struct shmq_topic_opts *opts)
{
	struct shmq_topic_opts to = *opts;
	uint64_t deadline = bench_now_ns() + 10 * 1000000000ull;
	int slot, rc, st;

	for (slot = 0; slot < BENCH_MAX_TOPICS; slot++)
		if (!g_topics[slot][0])
			break;
	if (slot == BENCH_MAX_TOPICS)
		return -ENOSPC;

	/* shmqd may have been started a moment ago and not listen yet. */
	for (;;) {
		rc = shmq_topic_create(ns->client, name, &to);
		if (rc != SHMQ_ENODAEMON || bench_now_ns() > deadline)
			break;
		if (ns->shmqd > 0 && waitpid(ns->shmqd, &st, WNOHANG) == ns->shmqd) {
			ns->shmqd = 0;
			bench_die("shmqd exited (status 0x%x) before it served %s",
				  (unsigned)st, ns->dir);
		}
		usleep(20000);
	}
	if (rc == -EEXIST) {
		/* Left by a killed run on a reused --dir: start clean. */
		rc = shmq_topic_delete(ns->client, name);
		if (rc == 0)
			rc = shmq_topic_create(ns->client, name, &to);
	}
	if (rc < 0)
		return rc;
	snprintf(g_topics[slot], sizeof(g_topics[slot]), "%s", name);
	return 0;
}

void bench_topic_delete(struct bench_ns *ns, const char *name)
{
	int rc = shmq_topic_delete(ns->client, name);

	if (rc < 0 && rc != -ENOENT)
		fprintf(stderr, "bench: delete topic %s: %s\n", name,
			shmq_strerror(rc));
	for (int i = 0; i < BENCH_MAX_TOPICS; i++)
		if (!strcmp(g_topics[i], name))
			g_topics[i][0] = '\0';
}

static int collect(const char *name, void *arg)
{
	char (*names)[SHMQ_NAME_MAX + 1] = arg;

	for (int i = 0; i < 256; i++) {
		if (!names[i][0]) {
			snprintf(names[i], SHMQ_NAME_MAX + 1, "%s", name);
			return 0;
		}
	}
	return 1; /* more than 256: delete these, the caller loops */
}

void bench_topic_delete_all(struct bench_ns *ns)
{
	static char names[256][SHMQ_NAME_MAX + 1];
	uint64_t deadline = bench_now_ns() + 5 * 1000000000ull;
	int rc;

	/* A shmqd restarted for the cleanup may not listen yet. */
	while (shmq_topic_delete(ns->client, "bench-no-such-topic") == SHMQ_ENODAEMON &&
	       bench_now_ns() < deadline)
		usleep(20000);

	/* Delete outside the listing callback: the listing reads the directory. */
	do {
		memset(names, 0, sizeof(names));
		rc = shmq_topic_list(ns->client, collect, names);
		if (rc < 0)
			bench_check(rc, "shmq_topic_list");
		for (int i = 0; i < 256 && names[i][0]; i++)
			bench_topic_delete(ns, names[i]);
	} while (rc > 0);
}

/* ------------------------------------------------------------------------
 * Message contents.
 */
static inline uint64_t check_word(uint64_t seq, size_t line)
{
	/* Differs per message and per line, so a stale line cannot pass. */
	return (seq * 0x9e3779b97f4a7c15ull) ^ (line + 1);
}

/* Where line l's check word goes in a message of n bytes, 0 for none. */
static inline size_t check_at(size_t n, size_t l)
{
	size_t end = (l + 1) * BENCH_LINE;

	if (end > n)
		end = n;
	/* A message of one word has no room beside its sequence number. */
	return end - sizeof(uint64_t);
}

void bench_stamp_msg(void *msg, size_t n, uint64_t seq)
{
	char *p = msg;
	size_t lines = (n + BENCH_LINE - 1) / BENCH_LINE;

	memcpy(p, &seq, sizeof(seq));
	for (size_t l = 0; l < lines; l++) {
		uint64_t w = check_word(seq, l);
		size_t at = check_at(n, l);

		if (at)
			memcpy(p + at, &w, sizeof(w));
	}
}

bool bench_verify_msg(const void *msg, size_t n, uint64_t seq)
{
	const char *p = msg;
	size_t lines = (n + BENCH_LINE - 1) / BENCH_LINE;
	uint64_t w;
	bool ok;

	memcpy(&w, p, sizeof(w));
	ok = w == seq;
	/* Read every line even after a mismatch: the cost must not depend on it. */
	for (size_t l = 0; l < lines; l++) {
		size_t at = check_at(n, l);

		if (!at)
			continue;
		memcpy(&w, p + at, sizeof(w));
		ok &= w == check_word(seq, l);
	}
	return ok;
}

uint64_t bench_msg_seq(const void *msg)
{
	uint64_t w;

	memcpy(&w, msg, sizeof(w));
	return w;
}
