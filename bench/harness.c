/*
 * harness.c - measured processes, transports and the two measured loops.
 *
 * Design note
 *   Overview: see harness.h.
 *
 *   The ping-pong (hx_latency): process A (first CPU) stamps a message with
 *   its sequence number (from 1, so no message is all zeroes), reads the
 *   clock, sends it on channel 0, receives the echo on channel 1, reads
 *   the clock again and records the difference in a histogram; the echo is
 *   verified outside the timed interval.  Process B (second CPU) receives
 *   on channel 0 and sends the very bytes it received back on channel 1
 *   (from the receive view: the copy is the transport's).  A warm-up comes
 *   first and is not recorded.  With gap_ns, A spins on the clock before
 *   each round trip so that B, finding nothing for longer than any spin
 *   phase, has gone to sleep: that measures the wake-up path.
 *
 *   The stream (hx_throughput): B (second CPU) produces numbered messages
 *   as fast as the transport takes them, through claim/commit when the
 *   transport has it (zero copy) and send otherwise; A (first CPU)
 *   receives them and checks that each carries the next sequence number
 *   and the check word of every line.  A starts its clock at the last
 *   warm-up message and stops it at the stop message, which B sends after
 *   `seconds` of measured sending; rate = messages / A's elapsed time.
 *
 *   Failure: a measured process that fails writes why into shared memory
 *   and exits 1; one that hangs is killed by the coordinator's deadline
 *   (and by its own alarm()).  Nothing here waits without a bound.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define HX_ATTACH_S 10u		/* longest wait for the processes to attach */

/* What the measured processes share with the coordinator. */
struct hx_ctl {
	uint32_t ready;			/* processes attached */
	uint32_t go;			/* set by the coordinator */
	char err[HX_MAXPROC][320];	/* why a process failed */
	/* results of the transport loops */
	uint64_t msgs, ns;
	struct hist h;
};

static const struct bench_opts *g_o;
static struct bench_ns *g_ns;
static struct hx_ctl *g_ctl;
static int g_index = -1;
static char g_tmp[4096];
static pid_t g_owner;

const struct bench_opts *hx_opts(void)
{
	return g_o;
}

struct bench_ns *hx_ns(void)
{
	return g_ns;
}

const char *hx_tmpdir(void)
{
	return g_tmp;
}

int hx_index(void)
{
	return g_index;
}

void *hx_shared_alloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bench_die("mmap %zu shared bytes: %s", n, strerror(errno));
	/* Touch every page now: no page fault inside a measurement. */
	memset(p, 0, n);
	return p;
}

void hx_shared_free(void *p, size_t n)
{
	if (p)
		munmap(p, n);
}

static void tmp_cleanup(void)
{
	if (g_tmp[0] && getpid() == g_owner)
		bench_rm_tree(g_tmp);
}

static void load_plugins(void);

void hx_init(const struct bench_opts *o, struct bench_ns *ns)
{
	const char *t = getenv("TMPDIR");
	sigset_t set;

	g_o = o;
	g_ns = ns;
	g_ctl = hx_shared_alloc(sizeof(*g_ctl));
	snprintf(g_tmp, sizeof(g_tmp), "%s/shmq-bx-XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(g_tmp))
		bench_die("mkdtemp %s: %s", g_tmp, strerror(errno));
	g_owner = getpid();
	atexit(tmp_cleanup);
	/*
	 * SIGCHLD stays pending until hx_run collects it with sigtimedwait:
	 * the coordinator sleeps until a process ends, never polls.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	load_plugins();
}

unsigned hx_timeout(double seconds)
{
	double t = 20 + 4 * seconds;

	if (g_o && t > g_o->timeout_s)
		t = g_o->timeout_s;
	return (unsigned)t;
}

/* ------------------------------------------------------------------------
 * Processes.
 */
void hx_fail(const char *fmt, ...)
{
	va_list ap;

	if (g_index >= 0 && g_index < HX_MAXPROC) {
		va_start(ap, fmt);
		vsnprintf(g_ctl->err[g_index], sizeof(g_ctl->err[0]), fmt, ap);
		va_end(ap);
	}
	fflush(NULL);
	exit(1);
}

void hx_ready(void)
{
	__atomic_add_fetch(&g_ctl->ready, 1, __ATOMIC_SEQ_CST);
	/*
	 * Sleep-wait: the others may still be attaching, and a spinning
	 * process would take a CPU from one that shares it.  The warm-up of
	 * every measurement absorbs the skew of the start.
	 */
	while (!__atomic_load_n(&g_ctl->go, __ATOMIC_ACQUIRE))
		usleep(50);
}

static pid_t spawn(struct hx_proc *p, int index, unsigned timeout_s)
{
	pid_t parent = getpid(), pid;
	sigset_t set;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;
	g_index = index;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGALRM, SIG_DFL);
	bench_pin(p->cpu);
	/* Our own bound, a little after the coordinator's. */
	alarm(timeout_s + 3);
	exit(p->fn(p->arg));
}

static void reap(struct hx_proc *p, int flags)
{
	int st;

	if (p->done || p->pid <= 0)
		return;
	if (waitpid(p->pid, &st, flags) == p->pid) {
		p->done = true;
		p->status = st;
	}
}

static void describe(struct hx_proc *p, int n, char *why, size_t len)
{
	for (int i = 0; i < n; i++) {
		int st = p[i].status;

		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			continue;
		if (i < HX_MAXPROC && g_ctl->err[i][0])
			snprintf(why, len, "%s", g_ctl->err[i]);
		else if (WIFSIGNALED(st))
			snprintf(why, len, "process %d killed by signal %d%s", i,
				 WTERMSIG(st), WTERMSIG(st) == SIGALRM ?
				 " (its own watchdog: hung)" : "");
		else
			snprintf(why, len, "process %d exited with status %d", i,
				 WEXITSTATUS(st));
		/* The first process to fail says why; the rest follow from it. */
		if (i < HX_MAXPROC && g_ctl->err[i][0])
			return;
	}
}

int hx_run(struct hx_proc *p, int n, unsigned timeout_s, char *why, size_t len)
{
	uint64_t deadline;
	sigset_t set;
	int left;

	if (n > HX_MAXPROC)
		bench_die("hx_run: %d processes, at most %d", n, HX_MAXPROC);
	g_ctl->ready = 0;
	g_ctl->go = 0;
	memset(g_ctl->err, 0, sizeof(g_ctl->err));
	for (int i = 0; i < n; i++) {
		p[i].done = false;
		p[i].status = 0;
		p[i].pid = spawn(&p[i], i, timeout_s);
	}
	/* Attaching (connecting, registering with a daemon) is quick or stuck. */
	deadline = bench_now_ns() + (uint64_t)(timeout_s < HX_ATTACH_S ?
					       timeout_s : HX_ATTACH_S) * 1000000000ull;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);

	/* Attach phase: short sleeps are fine, nothing is measured yet. */
	while (__atomic_load_n(&g_ctl->ready, __ATOMIC_ACQUIRE) < (uint32_t)n) {
		bool gone = false;

		for (int i = 0; i < n; i++) {
			reap(&p[i], WNOHANG);
			gone |= p[i].done;
		}
		if (gone || bench_now_ns() > deadline) {
			if (!gone)
				timeout_s = HX_ATTACH_S;
			goto stop;
		}
		usleep(200);
	}
	__atomic_store_n(&g_ctl->go, 1, __ATOMIC_RELEASE);
	deadline = bench_now_ns() + (uint64_t)timeout_s * 1000000000ull;

	for (;;) {
		struct timespec ts;
		uint64_t now;

		left = 0;
		for (int i = 0; i < n; i++) {
			reap(&p[i], WNOHANG);
			left += !p[i].done;
		}
		if (!left)
			break;
		now = bench_now_ns();
		if (now >= deadline)
			break;
		ts.tv_sec = (time_t)((deadline - now) / 1000000000ull);
		ts.tv_nsec = (long)((deadline - now) % 1000000000ull);
		/* Sleeps until a process ends: the coordinator takes no CPU. */
		sigtimedwait(&set, NULL, &ts);
	}
stop:
	left = 0;
	for (int i = 0; i < n; i++) {
		if (!p[i].done) {
			left++;
			kill(p[i].pid, SIGKILL);
		}
	}
	for (int i = 0; i < n; i++)
		reap(&p[i], 0);
	if (left) {
		char said[320] = "";

		describe(p, n, said, sizeof(said));
		snprintf(why, len, "hung %s: killed after %u s%s%s",
			 __atomic_load_n(&g_ctl->go, __ATOMIC_ACQUIRE) ?
			 "measuring" : "attaching", timeout_s,
			 said[0] ? "; " : "", said);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (!WIFEXITED(p[i].status) || WEXITSTATUS(p[i].status) != 0) {
			describe(p, n, why, len);
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Transports: the built-ins and the plugins bench/run.sh built.
 */
#define MAX_XPORTS 32
#define MAX_PLUGINS 8

static const struct bx_xport *g_x[MAX_XPORTS];
static unsigned g_nx;
static struct {
	char name[64];
	char why[256];
} g_skipped[MAX_PLUGINS];
static unsigned g_nskipped;

static void add_xport(const struct bx_xport *x)
{
	if (g_nx < MAX_XPORTS)
		g_x[g_nx++] = x;
}

static void skip_plugin(const char *name, const char *why)
{
	if (g_nskipped == MAX_PLUGINS)
		return;
	snprintf(g_skipped[g_nskipped].name, sizeof(g_skipped[0].name), "%s", name);
	snprintf(g_skipped[g_nskipped].why, sizeof(g_skipped[0].why), "%s", why);
	g_nskipped++;
}

/* Where run.sh puts plugins: BENCH_PLUGINS, else $SHMQ_BUILD/bench. */
static bool plugin_dir(char *out, size_t n)
{
	const char *d = getenv("BENCH_PLUGINS"), *b = getenv("SHMQ_BUILD");

	if (d && *d)
		snprintf(out, n, "%s", d);
	else if (b && *b)
		snprintf(out, n, "%s/bench", b);
	else
		return false;
	return true;
}

/*
 * A plugin that is missing says why in NAME.skip beside where it would
 * be (run.sh writes "libzmq3-dev not installed" there, say).
 */
static void load_one(const char *dir, const char *name)
{
	char path[4200], why[256] = "", *nl;
	const struct bx_xport *const *v;
	bx_plugin_fn fn;
	unsigned n = 0;
	void *h;
	FILE *f;

	snprintf(path, sizeof(path), "%s/xport-%s.so", dir, name);
	if (access(path, R_OK) < 0) {
		snprintf(path, sizeof(path), "%s/xport-%s.skip", dir, name);
		f = fopen(path, "r");
		if (f) {
			if (!fgets(why, sizeof(why), f))
				why[0] = '\0';
			fclose(f);
		}
		if ((nl = strchr(why, '\n')))
			*nl = '\0';
		skip_plugin(name, why[0] ? why : "plugin not built (bench/run.sh builds it)");
		return;
	}
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		skip_plugin(name, dlerror());
		return;
	}
	*(void **)&fn = dlsym(h, "bx_plugin_xports");
	if (!fn) {
		skip_plugin(name, "no bx_plugin_xports in the plugin");
		return;
	}
	v = fn(BX_API_VERSION, &n, why, sizeof(why));
	if (!v) {
		skip_plugin(name, why[0] ? why : "the plugin declined");
		return;
	}
	for (unsigned i = 0; i < n; i++)
		if (v[i]->api == BX_API_VERSION)
			add_xport(v[i]);
}

static void load_plugins(void)
{
	static const struct bx_xport *const builtin[] = {
		&bx_raw, &bx_naive, &bx_shmq_busy, &bx_shmq_futex, &bx_shmq_zc, &bx_shmq_batch,
		&bx_pipe, &bx_uds, &bx_mq_busy, &bx_mq_block,
	};
	char dir[4096];

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		add_xport(builtin[i]);
	if (!plugin_dir(dir, sizeof(dir))) {
		skip_plugin("zeromq", "no plugin directory (set SHMQ_BUILD or BENCH_PLUGINS)");
		skip_plugin("iceoryx", "no plugin directory (set SHMQ_BUILD or BENCH_PLUGINS)");
		return;
	}
	load_one(dir, "zeromq");
	load_one(dir, "iceoryx");
}

unsigned hx_xports(const struct bx_xport ***out)
{
	*out = g_x;
	return g_nx;
}

const struct bx_xport *hx_find(const char *name)
{
	for (unsigned i = 0; i < g_nx; i++)
		if (!strcmp(g_x[i]->name, name))
			return g_x[i];
	return NULL;
}

void hx_report_skipped(FILE *json, const char *bench)
{
	for (unsigned i = 0; i < g_nskipped; i++) {
		if (!bench_want(g_o, g_skipped[i].name))
			continue;
		printf("  %-30s skipped: %s\n", g_skipped[i].name, g_skipped[i].why);
		if (!json)
			continue;
		fprintf(json, "{\"bench\":\"%s\",\"time\":\"%s\",\"transport\":",
			bench, bench_started());
		bench_json_str(json, g_skipped[i].name);
		fprintf(json, ",\"metric\":\"skipped\",\"reason\":");
		bench_json_str(json, g_skipped[i].why);
		fprintf(json, "}\n");
	}
}

/* ------------------------------------------------------------------------
 * The measured loops.
 */
struct job {
	const struct bx_xport *x;
	struct bx_chan ch[2];
	const struct hx_lat_job *lat;
	const struct hx_tput_job *tput;
};

static void *open_end(struct job *j, unsigned c, enum bx_role role)
{
	void *ep = NULL;

	if (j->x->open(&j->ch[c], role, &ep) < 0)
		hx_fail("%s: open %s of channel %u: %s", j->x->name,
			role == BX_TX ? "sender" : "receiver", c, j->ch[c].err);
	return ep;
}

static void *alloc_msg(size_t n)
{
	void *p;

	/* Page aligned, so that no transport starts from an odd line split. */
	if (posix_memalign(&p, 4096, n < 64 ? 64 : n))
		hx_fail("out of memory");
	memset(p, 0xa5, n);
	return p;
}

static inline void xsend(struct job *j, void *ep, unsigned c, const void *m,
			 size_t n)
{
	if (j->x->send(ep, m, n) < 0)
		hx_fail("%s: send: %s", j->x->name, j->ch[c].err);
}

static inline void xrecv(struct job *j, void *ep, unsigned c, const void **m,
			 size_t *n)
{
	if (j->x->recv(ep, m, n) < 0)
		hx_fail("%s: receive: %s", j->x->name, j->ch[c].err);
}

static inline void xrelease(struct job *j, void *ep)
{
	if (j->x->release)
		j->x->release(ep);
}

static int lat_pinger(void *arg)
{
	struct job *j = arg;
	const struct hx_lat_job *lj = j->lat;
	size_t n = lj->size;
	void *tx = open_end(j, 0, BX_TX), *rx = open_end(j, 1, BX_RX);
	char *msg = alloc_msg(n);
	uint64_t warm_ns = (uint64_t)(lj->warm_s * 1e9);
	uint64_t run_ns = (uint64_t)(lj->seconds * 1e9);
	uint64_t start, t_meas = 0, seq = 0;
	bool warm = true;
	struct hist *h = malloc(sizeof(*h));

	if (!h)
		hx_fail("out of memory");
	hist_reset(h);
	hx_ready();
	start = bench_now_ns();
	for (;;) {
		const void *v;
		size_t got;
		uint64_t t0, t1;
		bool ok;

		bench_stamp_msg(msg, n, ++seq);
		if (lj->gap_ns) {
			/* Spin, not sleep: this side stays awake and precise. */
			uint64_t until = bench_now_ns() + lj->gap_ns;

			while (bench_now_ns() < until)
				bench_relax();
		}
		t0 = bench_now_ns();
		xsend(j, tx, 0, msg, n);
		xrecv(j, rx, 1, &v, &got);
		t1 = bench_now_ns();
		ok = got == n && bench_verify_msg(v, n, seq);
		xrelease(j, rx);
		if (!ok)
			hx_fail("%s: round trip %llu came back wrong (%zu bytes of %zu)",
				j->x->name, (unsigned long long)seq, got, n);
		if (warm) {
			if (seq >= lj->warm_n || t1 - start >= warm_ns) {
				warm = false;
				t_meas = bench_now_ns();
			}
			continue;
		}
		hist_record(h, t1 - t0);
		if (h->count >= lj->max_samples ||
		    ((h->count & 63) == 0 && t1 - t_meas >= run_ns))
			break;
	}
	bench_stamp_msg(msg, n, BENCH_STOP);
	xsend(j, tx, 0, msg, n);
	g_ctl->h = *h;
	j->x->close(tx);
	j->x->close(rx);
	free(msg);
	free(h);
	return 0;
}

static int lat_echo(void *arg)
{
	struct job *j = arg;
	void *rx = open_end(j, 0, BX_RX), *tx = open_end(j, 1, BX_TX);

	hx_ready();
	for (;;) {
		const void *v;
		size_t got;

		xrecv(j, rx, 0, &v, &got);
		if (got >= 8 && bench_msg_seq(v) == BENCH_STOP)
			break;
		xsend(j, tx, 1, v, got);
		xrelease(j, rx);
	}
	xrelease(j, rx);
	j->x->close(rx);
	j->x->close(tx);
	return 0;
}

static int tput_producer(void *arg)
{
	struct job *j = arg;
	const struct hx_tput_job *tj = j->tput;
	size_t n = tj->size;
	void *tx = open_end(j, 0, BX_TX);
	char *msg = alloc_msg(n);
	uint64_t dur = (uint64_t)(tj->seconds * 1e9), t0 = 0;
	bool zc = j->x->claim && j->x->commit;

	hx_ready();
	for (uint64_t seq = 1;; seq++) {
		if (zc) {
			void *b;

			if (j->x->claim(tx, n, &b) < 0)
				hx_fail("%s: claim: %s", j->x->name, j->ch[0].err);
			bench_stamp_msg(b, n, seq);
			if (j->x->commit(tx) < 0)
				hx_fail("%s: commit: %s", j->x->name, j->ch[0].err);
		} else {
			bench_stamp_msg(msg, n, seq);
			xsend(j, tx, 0, msg, n);
		}
		if (seq == tj->warm_n)
			t0 = bench_now_ns();
		else if (seq > tj->warm_n && (seq & 63) == 0 &&
			 bench_now_ns() - t0 >= dur)
			break;
	}
	bench_stamp_msg(msg, n, BENCH_STOP);
	xsend(j, tx, 0, msg, n);
	j->x->close(tx);
	free(msg);
	return 0;
}

static int tput_consumer(void *arg)
{
	struct job *j = arg;
	const struct hx_tput_job *tj = j->tput;
	size_t n = tj->size;
	void *rx = open_end(j, 0, BX_RX);
	uint64_t expect = 1, t0 = 0, t1;

	hx_ready();
	for (;;) {
		const void *v;
		size_t got;
		uint64_t seq;

		xrecv(j, rx, 0, &v, &got);
		seq = got >= 8 ? bench_msg_seq(v) : 0;
		if (seq == BENCH_STOP) {
			t1 = bench_now_ns();
			break;
		}
		if (got != n || !bench_verify_msg(v, n, expect))
			hx_fail("%s: message %llu is wrong (seq %llu, %zu bytes of %zu)",
				j->x->name, (unsigned long long)expect,
				(unsigned long long)seq, got, n);
		xrelease(j, rx);
		if (expect++ == tj->warm_n)
			t0 = bench_now_ns();
	}
	xrelease(j, rx);
	j->x->close(rx);
	if (expect <= tj->warm_n + 1)
		hx_fail("%s: no measured messages", j->x->name);
	g_ctl->msgs = expect - 1 - tj->warm_n;
	g_ctl->ns = t1 - t0;
	return 0;
}

/* Make the job's channels; 0, or 1 (not applicable) / -1 with why. */
static int make_chans(struct job *j, struct bx_conf *cf, unsigned nch,
		      char *why, size_t len)
{
	static unsigned id;

	cf->tmpdir = g_tmp;
	cf->shmq_dir = g_ns ? g_ns->dir : NULL;
	cf->id = ++id;
	for (unsigned c = 0; c < nch; c++) {
		int rc;

		memset(&j->ch[c], 0, sizeof(j->ch[c]));
		j->ch[c].cf = cf;
		j->ch[c].index = c;
		j->ch[c].fd[0] = j->ch[c].fd[1] = -1;
		rc = j->x->chan_make(&j->ch[c]);
		if (rc != 0) {
			snprintf(why, len, "%s", j->ch[c].err);
			while (c-- > 0)
				j->x->chan_free(&j->ch[c]);
			return rc > 0 ? 1 : -1;
		}
	}
	return 0;
}

static void free_chans(struct job *j, unsigned nch)
{
	for (unsigned c = 0; c < nch; c++)
		j->x->chan_free(&j->ch[c]);
}

/*
 * An optional transport that failed once is not tried again in this
 * program: it would only fail (or hang until the deadline) once per size
 * and round.  Its first reason is kept.
 */
static struct {
	const struct bx_xport *x;
	char why[320];
} g_broken[MAX_XPORTS];
static unsigned g_nbroken;

static const char *broken(const struct bx_xport *x)
{
	for (unsigned i = 0; i < g_nbroken; i++)
		if (g_broken[i].x == x)
			return g_broken[i].why;
	return NULL;
}

static int outcome(const struct bx_xport *x, int rc, const char *why)
{
	if (rc < 0 && !(x->flags & BX_OPTIONAL))
		bench_die("%s: %s", x->name, why);
	if (rc < 0 && g_nbroken < MAX_XPORTS) {
		g_broken[g_nbroken].x = x;
		snprintf(g_broken[g_nbroken].why, sizeof(g_broken[0].why), "%s", why);
		g_nbroken++;
	}
	return rc;
}

/* Refuse a transport that failed before; returns -1 with why then. */
static int refuse(const struct bx_xport *x, char *why, size_t len)
{
	const char *b = broken(x);

	if (!b)
		return 0;
	snprintf(why, len, "%s", b);
	return -1;
}

int hx_latency(const struct bx_xport *x, const struct hx_lat_job *lj,
	       struct hist *out, char *why, size_t len)
{
	struct bx_conf cf = { .max_msg = lj->size, .msg_size = lj->size,
			      .ring_bytes = 1u << 20 };
	struct job j = { .x = x, .lat = lj };
	struct hx_proc p[2] = {
		{ .cpu = g_o->cpu[0], .fn = lat_pinger, .arg = &j },
		{ .cpu = g_o->cpu[1], .fn = lat_echo, .arg = &j },
	};
	int rc;

	why[0] = '\0';
	if (refuse(x, why, len))
		return -1;
	if (x->max_msg && lj->size > x->max_msg) {
		snprintf(why, len, "messages above %zu bytes", x->max_msg);
		return 1;
	}
	rc = make_chans(&j, &cf, 2, why, len);
	if (rc)
		return outcome(x, rc, why);
	hist_reset(&g_ctl->h);
	rc = hx_run(p, 2, hx_timeout(lj->seconds + lj->warm_s), why, len);
	free_chans(&j, 2);
	if (rc == 0)
		*out = g_ctl->h;
	return outcome(x, rc, why);
}

int hx_throughput(const struct bx_xport *x, const struct hx_tput_job *tj,
		  struct hx_tput_res *out, char *why, size_t len)
{
	struct bx_conf cf = { .max_msg = tj->max_msg, .msg_size = tj->size,
			      .ring_bytes = tj->ring_bytes, .stream = 1 };
	struct job j = { .x = x, .tput = tj };
	struct hx_proc p[2] = {
		{ .cpu = g_o->cpu[0], .fn = tput_consumer, .arg = &j },
		{ .cpu = g_o->cpu[1], .fn = tput_producer, .arg = &j },
	};
	int rc;

	why[0] = '\0';
	if (refuse(x, why, len))
		return -1;
	if (x->max_msg && tj->size > x->max_msg) {
		snprintf(why, len, "messages above %zu bytes", x->max_msg);
		return 1;
	}
	rc = make_chans(&j, &cf, 1, why, len);
	if (rc)
		return outcome(x, rc, why);
	g_ctl->msgs = g_ctl->ns = 0;
	rc = hx_run(p, 2, hx_timeout(tj->seconds + 1), why, len);
	free_chans(&j, 1);
	if (rc == 0) {
		out->msgs = g_ctl->msgs;
		out->ns = g_ctl->ns;
	}
	return outcome(x, rc, why);
}
