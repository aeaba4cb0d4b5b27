/*
 * bench-spill.c - spilling to disk and replaying from it, beside plain
 * sequential file I/O of the same bytes in the same directory, and what
 * spilling does to a producer's send latency.
 *
 * Design note
 *   The data directory must be on the disk the numbers are about, never on
 *   tmpfs: without --dir this program makes its namespace (and starts its
 *   shmqd) under BENCH_SPILL_DIR (default /var/tmp); bench/run.sh makes one
 *   there and passes --dir.  Its filesystem is printed (mountinfo and the
 *   statfs magic, what `stat -f` shows); on tmpfs or ramfs the verdicts
 *   are withheld.
 *
 *   Topic: 1 partition, 4 MiB ring, spill=overflow (full policy spill),
 *   1 KiB messages carrying their sequence number and a check word in every
 *   cache line (common.c).  Every message is verified by whoever receives
 *   it.  MB = 10^6 bytes of payload, for shmq and the plain files alike.
 *
 *   One round, every figure of it measured in the same round:
 *     spill      groups "stopped-warm" and "stopped-cold" are created at
 *                offset 0 and never consume; group "live" (first CPU)
 *                keeps up and verifies.  The producer (second CPU) sends
 *                BENCH_SPILL_MB of messages; once the ring is full it can
 *                only go as fast as shmqd writes what the stopped groups
 *                hold.  Rate = messages / (last send returned - first send
 *                started).  The producer also samples its own CPU time and
 *                shmqd's (/proc/PID/schedstat) over that window, and the
 *                longest interval between two sends returning (a stall).
 *     write      the same number of bytes written to a new file in the
 *                data directory, 1 MiB write(2)s, then fdatasync: what
 *                `dd bs=1M conv=fdatasync` does.  spill and write alternate
 *                in order between rounds, and each starts after syncfs(),
 *                so neither pays for the other's dirty pages.
 *     replay     "stopped-warm" then consumes everything (from the spill
 *                files, then the ring) and verifies every message; beside
 *                it a read(2) of the plain file in 1 MiB blocks.  "warm":
 *                as written, in the page cache.  Then the spill files and
 *                the plain file are evicted from the page cache, each by
 *                itself (fdatasync + POSIX_FADV_DONTNEED: no global
 *                drop_caches on a shared machine), and "stopped-cold" and
 *                a second read do the same from the disk.  The page cache
 *                residency of the files at the start of each read is
 *                measured (mincore) and printed, so "cold" is checked,
 *                not assumed.
 *     journal    a topic with spill=always and one live group: the producer
 *                sends BENCH_JOURNAL_MB and then waits in
 *                shmq_producer_flush() until all of it is written and
 *                synced; rate = messages / (first send .. flush returned).
 *     latency    a producer paced at BENCH_SPILL_RATE messages/s of 1 KiB
 *                (spinning on the clock to each message's due time) times
 *                every shmq_send; (a) only group "live", which keeps up,
 *                (b) also group "stopped", so that shmqd spills all along.
 *                After a warm-up, every send goes into a histogram (hist.c),
 *                and a second histogram takes the time from the message's
 *                due time to its send's return, which also counts the
 *                messages that queued behind a stall (no coordinated
 *                omission).  Afterwards the topic's stat must show spill
 *                files in (b) and none in (a).
 *
 *   Repetition: BENCH_RUNS rounds; medians of the rounds with [min-max];
 *   the ratios are ratios of those medians, with the spread of the
 *   per-round ratios beside them.
 *
 *   Cleanup: topics are deleted after each use (shmqd removes their spill
 *   files), the plain file after each round, and at exit whatever is left;
 *   every process runs under hx_run's deadline, every send and poll has a
 *   timeout.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define MSG 1024u
#define RING_BYTES (4u << 20)
#define IO_BLOCK (1u << 20)
/* A send waits this long for the spiller before the run is declared failed. */
#define SEND_TIMEOUT_MS 10000
/* A replaying consumer finds everything already there: silence is a failure. */
#define REPLAY_IDLE_MS 5000
#define FLUSH_TIMEOUT_MS 30000
/* An interval between two sends longer than this counts as a stall. */
#define STALL_NS 1000000ull
#define MAXR 64

enum pmode { P_FLOOD, P_JOURNAL, P_PACED };

/* What the measured processes report; zeroed before every hx_run. */
struct ctl {
	uint32_t done;		/* the producer sent its last message */
	uint64_t sent;
	uint64_t got;
	uint64_t t0, t1;	/* the producer's measured window */
	uint64_t flush_ns;	/* journal: the final flush alone */
	uint64_t prod_cpu_ns;	/* producer CPU time in the window */
	uint64_t shmqd_cpu_ns;	/* shmqd CPU time in the window, or UINT64_MAX */
	uint64_t stalls;	/* intervals longer than STALL_NS */
	uint64_t io_bytes;	/* plain file reads and writes */
	struct hist send;	/* flood: intervals; paced: send durations */
	struct hist sched;	/* paced: due time to return */
};

/* The figures of the throughput table, in its order. */
enum row { X_SPILL, X_WRITE, X_JOURNAL, X_REPLAY_W, X_READ_W, X_REPLAY_C,
	   X_READ_C, X_N };

static const char *const row_label[X_N] = {
	[X_SPILL] = "spill=overflow, a stopped group",
	[X_WRITE] = "file write + fdatasync",
	[X_JOURNAL] = "spill=always (journal) + flush",
	[X_REPLAY_W] = "replay from spill files, warm",
	[X_READ_W] = "file read, warm",
	[X_REPLAY_C] = "replay from spill files, cold",
	[X_READ_C] = "file read, cold",
};
static const char *const row_json[X_N][3] = {
	/* transport, metric, cache */
	[X_SPILL] = { "shmq", "spill_throughput", NULL },
	[X_WRITE] = { "file", "write_throughput", NULL },
	[X_JOURNAL] = { "shmq", "journal_throughput", NULL },
	[X_REPLAY_W] = { "shmq", "replay_throughput", "warm" },
	[X_READ_W] = { "file", "read_throughput", "warm" },
	[X_REPLAY_C] = { "shmq", "replay_throughput", "cold" },
	[X_READ_C] = { "file", "read_throughput", "cold" },
};

struct row_res {
	double mbps[MAXR], mps[MAXR];
	double shmqd_cpu[MAXR], prod_cpu[MAXR];	/* fractions of one CPU, -1 unknown */
	double stall_ms[MAXR], stalls[MAXR];
	double resident[MAXR];			/* page cache at the start, 0..1 */
	double disk_mib[MAXR];			/* spill files after the run */
	double flush_ms[MAXR];
	bool has_cpu, has_resident;
};

enum lcase { L_KEEP, L_SPILL, L_N };
enum lfig { LF_P50, LF_P99, LF_P999, LF_MAX, LF_S99, LF_S999, LF_SMAX,
	    LF_RATE, LF_STALLS, LF_DCPU, LF_N };
static const double lfig_pct[LF_N] = { 50, 99, 99.9, 100, 99, 99.9, 100 };
static const char *const lcase_label[L_N] = {
	[L_KEEP] = "all groups keep up",
	[L_SPILL] = "a stopped group: spilling",
};
static const char *const lcase_json[L_N] = { "keeping_up", "spilling" };

struct fsinfo {
	char type[64];		/* from mountinfo: ext4, xfs, tmpfs ... */
	char source[256];	/* the device */
	char mnt[1024];
	char magic[64];		/* what stat -f calls it */
	bool memory;		/* tmpfs or ramfs: not a disk */
};

static struct bench_opts o;
static struct bench_ns ns;
static struct ctl *ctl;
static char topic[SHMQ_NAME_MAX + 1];
static char ref_path[4200];
static pid_t ref_owner;
static pid_t shmqd_pid;
static struct fsinfo fs;

/* The job of the next hx_run, inherited by its processes. */
static enum pmode pmode;
static uint64_t p_n;			/* messages (flood, journal) */
static uint64_t l_warm_n, l_meas_n;	/* paced */
static double l_rate;
static const char *const *stopped_groups;	/* made by the live consumer */
static const char *replay_group;

static struct row_res rows[X_N];
static double lat[L_N][LF_N][MAXR];
static double lat_disk_mib[L_N][MAXR];
static struct hist lat_all[L_N][2];

/* ------------------------------------------------------------------------
 * Small helpers of the measured processes.
 */
static void check(int rc, const char *what)
{
	if (rc < 0)
		hx_fail("%s: %s (%s)", what, shmq_strerror(rc), shmq_errdetail());
}

static uint64_t cpu_self_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * CPU time of another process: schedstat's first field is exact (ns);
 * without CONFIG_SCHEDSTATS-style support fall back on stat's ticks.
 */
static uint64_t cpu_of_ns(pid_t pid)
{
	unsigned long long run, ut, st;
	char path[64], buf[1024], *p;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return UINT64_MAX;
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	f = fopen(path, "r");
	if (f) {
		int ok = fscanf(f, "%llu", &run) == 1;

		fclose(f);
		if (ok)
			return run;
	}
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return UINT64_MAX;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command may hold spaces and parentheses: parse after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return UINT64_MAX;
	return (ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

static shmq_consumer_t *join(shmq_client_t *cl, const char *group, int from)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c;

	co.from = from;
	check(shmq_consumer_open(cl, topic, group, &co, &c), "shmq_consumer_open");
	return c;
}

/* One received message must be the next one: partition 0, seq, check words. */
static void verify(const struct shmq_msg *m, uint64_t seq, const char *who)
{
	if (m->partition != 0 || m->value_len != MSG ||
	    !bench_verify_msg(m->value, MSG, seq))
		hx_fail("%s: expected message %llu, got %s (partition %u, %zu bytes, offset %llu)",
			who, (unsigned long long)seq,
			m->value_len >= 8 ? "another or a damaged one" : "a short one",
			m->partition, m->value_len, (unsigned long long)m->offset);
}

/* ------------------------------------------------------------------------
 * The measured processes.
 */
static int producer(void *arg)
{
	char msg[MSG] __attribute__((aligned(64)));
	shmq_client_t *cl;
	shmq_producer_t *p;
	uint64_t total = pmode == P_PACED ? l_warm_n + l_meas_n : p_n;
	uint64_t c0, d0, prev, t0, due = 0;
	double period = pmode == P_PACED ? 1e9 / l_rate : 0;

	(void)arg;
	check(shmq_open(ns.dir, NULL, &cl), "shmq_open");
	check(shmq_producer_open(cl, topic, NULL, &p), "shmq_producer_open");
	hist_reset(&ctl->send);
	hist_reset(&ctl->sched);
	hx_ready();

	c0 = cpu_self_ns();
	d0 = cpu_of_ns(shmqd_pid);
	t0 = prev = bench_now_ns();
	for (uint64_t i = 0; i < total; i++) {
		uint64_t a, b;
		int rc;

		bench_stamp_msg(msg, MSG, i + 1);
		if (pmode == P_PACED) {
			/* Spin to the due time: the rate stays fixed whatever the sends cost. */
			due = t0 + (uint64_t)((double)i * period);
			while ((a = bench_now_ns()) < due)
				bench_relax();
			if (i == l_warm_n) {
				/* The measured window starts with this message. */
				c0 = cpu_self_ns();
				d0 = cpu_of_ns(shmqd_pid);
				ctl->t0 = a;
				/* Reading /proc is no part of the send. */
				a = bench_now_ns();
			}
		} else {
			a = prev;
		}
		rc = shmq_send(p, 0, NULL, 0, msg, MSG, SEND_TIMEOUT_MS, NULL);
		if (rc == -EAGAIN)
			hx_fail("message %llu: no room within %d ms: the spiller does not keep up at all",
				(unsigned long long)i + 1, SEND_TIMEOUT_MS);
		check(rc, "shmq_send");
		b = bench_now_ns();
		if (pmode != P_PACED) {
			/* Flood: the interval between two returns, which shows stalls. */
			hist_record(&ctl->send, b - a);
			ctl->stalls += b - a > STALL_NS;
		} else if (i >= l_warm_n) {
			hist_record(&ctl->send, b - a);
			hist_record(&ctl->sched, b - due);
			ctl->stalls += b - a > STALL_NS;
		}
		prev = b;
	}
	if (pmode == P_JOURNAL) {
		uint64_t f0 = bench_now_ns();
		int rc = shmq_producer_flush(p, FLUSH_TIMEOUT_MS);

		if (rc == -EAGAIN)
			hx_fail("shmq_producer_flush: not durable within %d ms",
				FLUSH_TIMEOUT_MS);
		check(rc, "shmq_producer_flush");
		prev = bench_now_ns();
		ctl->flush_ns = prev - f0;
	}
	if (pmode != P_PACED)
		ctl->t0 = t0;
	ctl->t1 = prev;
	ctl->prod_cpu_ns = cpu_self_ns() - c0;
	{
		uint64_t d1 = cpu_of_ns(shmqd_pid);

		ctl->shmqd_cpu_ns = d0 == UINT64_MAX || d1 == UINT64_MAX ?
			UINT64_MAX : d1 - d0;
	}
	ctl->sent = total;
	__atomic_store_n(&ctl->done, 1, __ATOMIC_RELEASE);
	shmq_producer_close(p);
	shmq_close(cl);
	return 0;
}

/* Group "live": keeps up and checks everything; makes the stopped groups first. */
static int live(void *arg)
{
	shmq_client_t *cl;
	shmq_consumer_t *in;
	uint64_t next = 1;

	(void)arg;
	check(shmq_open(ns.dir, NULL, &cl), "shmq_open");
	/*
	 * A group that has no member still holds what it has not consumed:
	 * join at offset 0 and leave, before the producer may start.
	 */
	for (int i = 0; stopped_groups && stopped_groups[i]; i++)
		shmq_consumer_close(join(cl, stopped_groups[i], SHMQ_FROM_EARLIEST));
	in = join(cl, "live", SHMQ_FROM_EARLIEST);
	hx_ready();
	for (;;) {
		struct shmq_msg m;
		int rc = shmq_consumer_poll(in, &m, 10);

		if (rc == -EAGAIN) {
			if (__atomic_load_n(&ctl->done, __ATOMIC_ACQUIRE) &&
			    next > ctl->sent)
				break;
			continue;
		}
		check(rc, "live: shmq_consumer_poll");
		verify(&m, next, "live");
		next++;
	}
	ctl->got = next - 1;
	shmq_consumer_close(in);
	shmq_close(cl);
	return 0;
}

/* A stopped group catches up: everything, in order, timed. */
static int replayer(void *arg)
{
	shmq_client_t *cl;
	shmq_consumer_t *in;
	uint64_t next, t0;

	(void)arg;
	check(shmq_open(ns.dir, NULL, &cl), "shmq_open");
	/* No live member: the group resumes at its committed offset, 0. */
	in = join(cl, replay_group, SHMQ_FROM_COMMITTED);
	hx_ready();
	t0 = bench_now_ns();
	for (next = 1; next <= p_n; next++) {
		struct shmq_msg m;
		int rc = shmq_consumer_poll(in, &m, REPLAY_IDLE_MS);

		if (rc == -EAGAIN)
			hx_fail("replay %s: nothing for %d ms at message %llu of %llu",
				replay_group, REPLAY_IDLE_MS, (unsigned long long)next,
				(unsigned long long)p_n);
		check(rc, "replay: shmq_consumer_poll");
		verify(&m, next, replay_group);
	}
	ctl->t1 = bench_now_ns();
	ctl->t0 = t0;
	ctl->got = next - 1;
	{
		struct shmq_msg m;
		int rc = shmq_consumer_poll(in, &m, 0);

		/* Exactly what was sent: one more would be a duplicate. */
		if (rc != -EAGAIN)
			hx_fail("replay %s: a message after the last one sent (poll: %s)",
				replay_group, shmq_strerror(rc));
	}
	shmq_consumer_close(in);
	shmq_close(cl);
	return 0;
}

/* The plain file: N bytes of stamped 1 KiB records, then fdatasync. */
static int file_write(void *arg)
{
	char *buf = aligned_alloc(4096, IO_BLOCK);
	uint64_t left = p_n * MSG, t0;
	int fd;

	(void)arg;
	if (!buf)
		hx_fail("out of memory");
	/* Not zeroes: the same kind of bytes as the messages. */
	for (size_t k = 0; k < IO_BLOCK / MSG; k++)
		bench_stamp_msg(buf + k * MSG, MSG, k + 1);
	hx_ready();
	t0 = bench_now_ns();
	fd = open(ref_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		hx_fail("open %s: %s", ref_path, strerror(errno));
	while (left) {
		size_t n = left < IO_BLOCK ? (size_t)left : IO_BLOCK;
		ssize_t w = write(fd, buf, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			hx_fail("write %s: %s", ref_path, w < 0 ? strerror(errno) : "wrote 0");
		left -= (uint64_t)w;
		ctl->io_bytes += (uint64_t)w;
	}
	if (fdatasync(fd) < 0)
		hx_fail("fdatasync %s: %s", ref_path, strerror(errno));
	close(fd);
	ctl->t1 = bench_now_ns();
	ctl->t0 = t0;
	free(buf);
	return 0;
}

static int file_read(void *arg)
{
	char *buf = aligned_alloc(4096, IO_BLOCK);
	uint64_t t0;
	ssize_t r;
	int fd;

	(void)arg;
	if (!buf)
		hx_fail("out of memory");
	memset(buf, 0, IO_BLOCK);
	hx_ready();
	t0 = bench_now_ns();
	fd = open(ref_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		hx_fail("open %s: %s", ref_path, strerror(errno));
	while ((r = read(fd, buf, IO_BLOCK)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			hx_fail("read %s: %s", ref_path, strerror(errno));
		ctl->io_bytes += (uint64_t)r;
	}
	close(fd);
	ctl->t1 = bench_now_ns();
	ctl->t0 = t0;
	if (ctl->io_bytes != p_n * MSG)
		hx_fail("read %llu bytes of %s, expected %llu",
			(unsigned long long)ctl->io_bytes, ref_path,
			(unsigned long long)(p_n * MSG));
	free(buf);
	return 0;
}

/* ------------------------------------------------------------------------
 * The coordinator's side: files, page cache, filesystem.
 */
static void ref_cleanup(void)
{
	if (ref_path[0] && getpid() == ref_owner)
		unlink(ref_path);
}

/* Start from a clean state: no dirty pages of an earlier step in flight. */
static void sync_dir(void)
{
	int fd = open(ns.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		bench_die("open %s: %s", ns.dir, strerror(errno));
	if (syncfs(fd) < 0)
		bench_die("syncfs %s: %s", ns.dir, strerror(errno));
	close(fd);
}

/* Call fn on every file of the current topic's partition-0 spill directory. */
static void spill_files(void (*fn)(const char *path, void *arg), void *arg)
{
	char dir[4400], path[4800];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/spill/%s/0", ns.dir, topic);
	d = opendir(dir);
	if (!d)
		bench_die("opendir %s: %s (no spill files?)", dir, strerror(errno));
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		fn(path, arg);
	}
	closedir(d);
}

/* Page cache residency of a file: pages resident and pages, added to r[]. */
static void resident(const char *path, void *arg)
{
	uint64_t *r = arg;
	long pg = sysconf(_SC_PAGESIZE);
	unsigned char *vec;
	struct stat st;
	size_t pages;
	void *map;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
		close(fd);
		return;
	}
	pages = ((size_t)st.st_size + (size_t)pg - 1) / (size_t)pg;
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	vec = malloc(pages);
	if (map != MAP_FAILED && vec && mincore(map, (size_t)st.st_size, vec) == 0) {
		for (size_t i = 0; i < pages; i++)
			r[0] += vec[i] & 1;
		r[1] += pages;
	}
	free(vec);
	if (map != MAP_FAILED)
		munmap(map, (size_t)st.st_size);
	close(fd);
}

/*
 * Drop one file from the page cache: write back what is dirty, then
 * POSIX_FADV_DONTNEED, which drops clean, unmapped pages.  Only this file:
 * the machine's other work keeps its cache.
 */
static void evict(const char *path, void *arg)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	(void)arg;
	if (fd < 0)
		bench_die("open %s: %s", path, strerror(errno));
	if (fdatasync(fd) < 0)
		bench_die("fdatasync %s: %s", path, strerror(errno));
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
}

static double spill_resident(void)
{
	uint64_t r[2] = { 0, 0 };

	spill_files(resident, r);
	return r[1] ? (double)r[0] / (double)r[1] : 0;
}

static double ref_resident(void)
{
	uint64_t r[2] = { 0, 0 };

	resident(ref_path, r);
	return r[1] ? (double)r[0] / (double)r[1] : 0;
}

static const char *fs_magic_name(unsigned long m, char *buf, size_t n)
{
	switch (m) {
	case 0xEF53: return "ext2/ext3";	/* ext4 too, as stat -f says */
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x01021994: return "tmpfs";
	case 0x858458F6: return "ramfs";
	case 0x794C7630: return "overlayfs";
	case 0x2FC12FC1: return "zfs";
	case 0xF2F52010: return "f2fs";
	case 0x6969: return "nfs";
	}
	snprintf(buf, n, "0x%lx", m);
	return buf;
}

/* Which filesystem holds path: mountinfo's entry for its device. */
static void fs_describe(const char *path, struct fsinfo *fi)
{
	char line[4096], real[4096], mnt[1024], type[64], src[256];
	size_t best = 0;
	struct statfs sf;
	struct stat st;
	FILE *f;

	memset(fi, 0, sizeof(*fi));
	snprintf(fi->type, sizeof(fi->type), "unknown");
	snprintf(fi->source, sizeof(fi->source), "unknown");
	if (stat(path, &st) < 0 || statfs(path, &sf) < 0 || !realpath(path, real))
		bench_die("stat %s: %s", path, strerror(errno));
	snprintf(fi->magic, sizeof(fi->magic), "%s",
		 fs_magic_name((unsigned long)sf.f_type, type, sizeof(type)));
	fi->memory = sf.f_type == 0x01021994 || sf.f_type == 0x858458F6;
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return;
	/* id parent major:minor root mountpoint options ... - type source ... */
	while (fgets(line, sizeof(line), f)) {
		unsigned maj, mnr;
		char *dash = strstr(line, " - ");
		size_t len;

		if (!dash || sscanf(line, "%*d %*d %u:%u %*s %1023s", &maj, &mnr, mnt) != 3 ||
		    sscanf(dash + 3, "%63s %255s", type, src) != 2)
			continue;
		if (maj != major(st.st_dev) || mnr != minor(st.st_dev))
			continue;
		/* Of bind mounts of one device, the one the path lies under. */
		len = strlen(mnt);
		if (strncmp(real, mnt, len) ||
		    (real[len] != '/' && real[len] != '\0' && strcmp(mnt, "/")))
			continue;
		if (len < best)
			continue;
		best = len;
		snprintf(fi->type, sizeof(fi->type), "%s", type);
		snprintf(fi->source, sizeof(fi->source), "%s", src);
		snprintf(fi->mnt, sizeof(fi->mnt), "%s", mnt);
	}
	fclose(f);
}

/* shmqd's pid: ours, or the one its lock file names. */
static pid_t find_shmqd_pid(void)
{
	char path[4200], buf[32] = "";
	FILE *f;

	if (ns.shmqd > 0)
		return ns.shmqd;
	snprintf(path, sizeof(path), "%s/shmqd.lock", ns.dir);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return (pid_t)atol(buf);
}

/* ------------------------------------------------------------------------
 * Runs.
 */
static void make_topic(const char *name, int spill)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	snprintf(topic, sizeof(topic), "%s", name);
	to.partitions = 1;
	to.ring_bytes = RING_BYTES;
	to.max_message = MSG;
	to.full_policy = SHMQ_FULL_SPILL;
	to.spill = spill;
	rc = bench_topic_create_opts(&ns, topic, &to);
	if (rc < 0)
		bench_die("create %s: %s (%s)", topic, shmq_strerror(rc),
			  shmq_errdetail());
}

/*
 * MiB of the topic's spill files, from its stat; *range gets the bytes of
 * log they cover (0: nothing was ever spilled; the files may still hold
 * their headers).
 */
static double topic_disk_mib(uint64_t *range)
{
	struct shmq_topic_stat *st;
	double mib;
	int rc = shmq_topic_stat(ns.client, topic, &st);

	if (rc < 0)
		bench_die("stat %s: %s", topic, shmq_strerror(rc));
	if (st->partitions[0].spill_error)
		bench_die("%s: shmqd reports a spill error: %s", topic,
			  shmq_strerror(st->partitions[0].spill_error));
	mib = (double)st->partitions[0].disk_bytes / (1 << 20);
	if (range)
		*range = st->partitions[0].disk_end - st->partitions[0].disk_first;
	shmq_topic_stat_free(st);
	return mib;
}

static void run(struct hx_proc *p, int n, double expect_s, const char *what)
{
	char why[320];

	memset(ctl, 0, sizeof(*ctl));
	if (hx_run(p, n, hx_timeout(expect_s), why, sizeof(why)) < 0)
		bench_die("%s: %s", what, why);	/* the atexit cleanup deletes the topic */
}

static double secs(void)
{
	if (ctl->t1 <= ctl->t0)
		bench_die("no measured window");
	return (double)(ctl->t1 - ctl->t0) / 1e9;
}

static void record(enum row x, int r, uint64_t msgs)
{
	double s = secs();
	struct row_res *rr = &rows[x];

	rr->mbps[r] = (double)msgs * MSG / s / 1e6;
	rr->mps[r] = (double)msgs / s;
}

static void record_cpu(enum row x, int r)
{
	struct row_res *rr = &rows[x];
	double s = secs();

	rr->has_cpu = true;
	rr->prod_cpu[r] = (double)ctl->prod_cpu_ns / 1e9 / s;
	rr->shmqd_cpu[r] = ctl->shmqd_cpu_ns == UINT64_MAX ? -1 :
		(double)ctl->shmqd_cpu_ns / 1e9 / s;
	rr->stall_ms[r] = (double)ctl->send.max / 1e6;
	rr->stalls[r] = (double)ctl->stalls;
}

/* Seconds a run of `bytes` should take on a slow disk (for the deadline). */
static double expect(uint64_t bytes)
{
	return 2 + (double)bytes / 50e6;
}

static void step_spill(int r)
{
	static const char *const groups[] = { "stopped-warm", "stopped-cold", NULL };
	struct hx_proc p[2] = {
		{ .cpu = o.cpu[1], .fn = producer },
		{ .cpu = o.cpu[0], .fn = live },
	};

	pmode = P_FLOOD;
	stopped_groups = groups;
	run(p, 2, expect(p_n * MSG), "spill");
	if (ctl->got != p_n)
		bench_die("spill: group live received %llu of %llu",
			  (unsigned long long)ctl->got, (unsigned long long)p_n);
	record(X_SPILL, r, p_n);
	record_cpu(X_SPILL, r);
	rows[X_SPILL].disk_mib[r] = topic_disk_mib(NULL);
	/* The stopped groups hold all but what is still in the ring. */
	if (rows[X_SPILL].disk_mib[r] * (1 << 20) < (double)(p_n * MSG) - RING_BYTES)
		bench_die("spill: only %.1f MiB in the spill files after %llu MiB",
			  rows[X_SPILL].disk_mib[r],
			  (unsigned long long)(p_n * MSG >> 20));
}

static void step_write(int r)
{
	struct hx_proc p = { .cpu = o.cpu[1], .fn = file_write };

	run(&p, 1, expect(p_n * MSG), "file write");
	record(X_WRITE, r, p_n);
}

static void step_replay(enum row x, const char *group, int r)
{
	struct hx_proc p = { .cpu = o.cpu[0], .fn = replayer };

	rows[x].has_resident = true;
	rows[x].resident[r] = spill_resident();
	replay_group = group;
	run(&p, 1, expect(p_n * MSG), "replay");
	record(x, r, p_n);
}

static void step_read(enum row x, int r)
{
	struct hx_proc p = { .cpu = o.cpu[0], .fn = file_read };

	rows[x].has_resident = true;
	rows[x].resident[r] = ref_resident();
	run(&p, 1, expect(p_n * MSG), "file read");
	record(x, r, p_n);
}

static void round_disk(int r, uint64_t journal_n)
{
	char name[SHMQ_NAME_MAX + 1];
	uint64_t n = p_n;

	/* spill and write: alternate which goes first, each from a clean state. */
	snprintf(name, sizeof(name), "spill-%d", r);
	make_topic(name, SHMQ_SPILL_OVERFLOW);
	for (int k = 0; k < 2; k++) {
		sync_dir();
		if ((k + r) % 2 == 0)
			step_spill(r);
		else
			step_write(r);
	}
	sync_dir();
	/* Warm: as written.  Replay and read alternate too. */
	for (int k = 0; k < 2; k++) {
		if ((k + r) % 2 == 0)
			step_replay(X_REPLAY_W, "stopped-warm", r);
		else
			step_read(X_READ_W, r);
	}
	/* Cold: the files alone evicted from the page cache. */
	spill_files(evict, NULL);
	evict(ref_path, NULL);
	for (int k = 0; k < 2; k++) {
		if ((k + r) % 2 == 0)
			step_replay(X_REPLAY_C, "stopped-cold", r);
		else
			step_read(X_READ_C, r);
	}
	bench_topic_delete(&ns, topic);
	unlink(ref_path);

	/* The journal: every message written and synced, then one flush. */
	{
		struct hx_proc p[2] = {
			{ .cpu = o.cpu[1], .fn = producer },
			{ .cpu = o.cpu[0], .fn = live },
		};

		snprintf(name, sizeof(name), "journal-%d", r);
		make_topic(name, SHMQ_SPILL_ALWAYS);
		sync_dir();
		pmode = P_JOURNAL;
		p_n = journal_n;
		stopped_groups = NULL;
		run(p, 2, expect(journal_n * MSG), "journal");
		if (ctl->got != journal_n)
			bench_die("journal: group live received %llu of %llu",
				  (unsigned long long)ctl->got,
				  (unsigned long long)journal_n);
		record(X_JOURNAL, r, journal_n);
		record_cpu(X_JOURNAL, r);
		rows[X_JOURNAL].flush_ms[r] = (double)ctl->flush_ns / 1e6;
		rows[X_JOURNAL].disk_mib[r] = topic_disk_mib(NULL);
		bench_topic_delete(&ns, topic);
		p_n = n;
	}
}

static void round_latency(int r)
{
	static const char *const groups[] = { "stopped", NULL };

	for (int k = 0; k < L_N; k++) {
		enum lcase c = (enum lcase)((k + r) % L_N);
		struct hx_proc p[2] = {
			{ .cpu = o.cpu[1], .fn = producer },
			{ .cpu = o.cpu[0], .fn = live },
		};
		char name[SHMQ_NAME_MAX + 1];
		uint64_t range;
		double mib, s;

		snprintf(name, sizeof(name), "latency-%s-%d", lcase_json[c], r);
		make_topic(name, SHMQ_SPILL_OVERFLOW);
		sync_dir();
		pmode = P_PACED;
		stopped_groups = c == L_SPILL ? groups : NULL;
		run(p, 2, (double)(l_warm_n + l_meas_n) / l_rate, "latency");
		if (ctl->got != ctl->sent)
			bench_die("latency: group live received %llu of %llu",
				  (unsigned long long)ctl->got,
				  (unsigned long long)ctl->sent);
		mib = topic_disk_mib(&range);
		bench_topic_delete(&ns, topic);
		/*
		 * The spilling case must spill.  The other may too, a little:
		 * a live group descheduled for longer than half a ring's worth
		 * of messages (10 ms here) is lagging, and is spilled for; the
		 * table says how much.
		 */
		if (!range)
			mib = 0;
		if (c == L_SPILL && mib * (1 << 20) < (double)(l_meas_n * MSG) / 2)
			bench_die("latency: only %.1f MiB spilled with a stopped group", mib);
		lat_disk_mib[c][r] = mib;
		for (int f = 0; f < LF_RATE; f++)
			lat[c][f][r] = (double)hist_pct(f < LF_S99 ? &ctl->send : &ctl->sched,
							 lfig_pct[f]);
		s = secs();
		lat[c][LF_RATE][r] = (double)l_meas_n / s;
		lat[c][LF_STALLS][r] = (double)ctl->stalls;
		lat[c][LF_DCPU][r] = ctl->shmqd_cpu_ns == UINT64_MAX ? -1 :
			(double)ctl->shmqd_cpu_ns / 1e9 / s;
		hist_add(&lat_all[c][0], &ctl->send);
		hist_add(&lat_all[c][1], &ctl->sched);
	}
}

/* ------------------------------------------------------------------------
 * Output.
 */
static void spread(const double *v, struct bench_spread *s)
{
	bench_spread(v, o.runs, s);
}

static void json_head(FILE *j, const char *transport, const char *metric)
{
	fprintf(j, "{\"bench\":\"spill\",\"time\":\"%s\",\"transport\":\"%s\","
		"\"metric\":\"%s\",\"msg_bytes\":%u,\"runs\":%d,\"fs\":",
		bench_started(), transport, metric, MSG, o.runs);
	bench_json_str(j, fs.type);
	fprintf(j, ",\"device\":");
	bench_json_str(j, fs.source);
	fprintf(j, ",\"dir\":");
	bench_json_str(j, ns.dir);
}

static void json_spread(FILE *j, const char *name, const struct bench_spread *s,
			const char *fmt)
{
	fprintf(j, ",\"%s\":", name);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	fprintf(j, fmt, s->med);
	fprintf(j, ",\"%s_min\":", name);
	fprintf(j, fmt, s->min);
	fprintf(j, ",\"%s_max\":", name);
	fprintf(j, fmt, s->max);
#pragma GCC diagnostic pop
}

static void print_rows(FILE *json, uint64_t journal_n)
{
	printf("  %-36s %20s %20s %s\n", "what", "MB/s [min-max]", "Kmsg/s [min-max]",
	       "notes (medians)");
	for (int x = 0; x < X_N; x++) {
		struct row_res *rr = &rows[x];
		struct bench_spread mb, ms, sc, pc, st, sl, rs, dk, fl;
		char a[64], b[64], note[200] = "";
		double k[MAXR];
		uint64_t n = x == X_JOURNAL ? journal_n : p_n;

		for (int r = 0; r < o.runs; r++)
			k[r] = rr->mps[r] / 1e3;
		spread(rr->mbps, &mb);
		spread(k, &ms);
		spread(rr->shmqd_cpu, &sc);
		spread(rr->prod_cpu, &pc);
		spread(rr->stall_ms, &st);
		spread(rr->stalls, &sl);
		spread(rr->resident, &rs);
		spread(rr->disk_mib, &dk);
		spread(rr->flush_ms, &fl);
		if (rr->has_cpu) {
			int w = 0;

			if (sc.med >= 0)
				w = snprintf(note, sizeof(note), "CPU shmqd %.0f%%, ", sc.med * 100);
			snprintf(note + w, sizeof(note) - (size_t)w,
				 "producer %.0f%%; longest wait %.0f ms, %.0f > 1 ms",
				 pc.med * 100, st.med, sl.med);
		} else if (rr->has_resident) {
			snprintf(note, sizeof(note), "%.1f%% in page cache at start",
				 rs.med * 100);
		}
		if (x == X_JOURNAL)
			snprintf(note + strlen(note), sizeof(note) - strlen(note),
				 "; the last flush %.0f ms", fl.med);
		/* No trailing blank when there is no note. */
		printf("  %-36s %20s %20s%s%s\n", row_label[x],
		       bench_fmt_spread(a, sizeof(a), "%.0f", &mb),
		       bench_fmt_spread(b, sizeof(b), "%.1f", &ms), note[0] ? " " : "",
		       note);
		if (!json)
			continue;
		json_head(json, row_json[x][0], row_json[x][1]);
		if (row_json[x][2])
			fprintf(json, ",\"cache\":\"%s\"", row_json[x][2]);
		fprintf(json, ",\"bytes\":%llu,\"msgs\":%llu",
			(unsigned long long)(n * MSG), (unsigned long long)n);
		json_spread(json, "mb_per_s", &mb, "%.1f");
		for (int r = 0; r < o.runs; r++)
			k[r] = rr->mps[r];
		spread(k, &ms);
		json_spread(json, "msgs_per_s", &ms, "%.0f");
		if (rr->has_cpu) {
			if (sc.med >= 0)
				json_spread(json, "shmqd_cpu", &sc, "%.3f");
			json_spread(json, "producer_cpu", &pc, "%.3f");
			json_spread(json, "longest_wait_ms", &st, "%.2f");
			json_spread(json, "waits_over_1ms", &sl, "%.0f");
		}
		if (x == X_SPILL || x == X_JOURNAL)
			json_spread(json, "spill_file_mib", &dk, "%.1f");
		if (x == X_JOURNAL)
			json_spread(json, "flush_ms", &fl, "%.2f");
		if (rr->has_resident)
			json_spread(json, "resident_at_start", &rs, "%.4f");
		fprintf(json, "}\n");
	}
}

/* a / b of the medians; the per-round ratios give the spread. */
static void ratio(FILE *json, const char *what, enum row a, enum row b,
		  double target)
{
	struct bench_spread sa, sb, sr;
	double q[MAXR], v;
	char verdict[160];

	spread(rows[a].mbps, &sa);
	spread(rows[b].mbps, &sb);
	for (int r = 0; r < o.runs; r++)
		q[r] = rows[a].mbps[r] / rows[b].mbps[r];
	spread(q, &sr);
	v = sa.med / sb.med;
	if (target <= 0)
		snprintf(verdict, sizeof(verdict), "(no target)");
	else if (fs.memory)
		snprintf(verdict, sizeof(verdict), "target >= %.2g  not judged: %s is not a disk",
			 target, fs.type);
	else
		snprintf(verdict, sizeof(verdict), "target >= %.2g  %s", target,
			 v >= target ? "met" : "MISSED");
	printf("    %-50s %6.2fx  per round [%.2f-%.2f]  %s\n", what, v, sr.min,
	       sr.max, verdict);
	if (target > 0) {
		if (fs.memory)
			bench_target_line(&o, "%-58s %-6s %7.3fx  target >= %.2g  not judged (data directory on %s)",
					  what, "MB/s", v, target, fs.type);
		else
			bench_target_line(&o, "%-58s %-6s %7.3fx  target >= %.2g  %s",
					  what, "MB/s", v, target,
					  v >= target ? "met" : "MISSED");
	}
	if (!json)
		return;
	json_head(json, "shmq", "ratio");
	fprintf(json, ",\"what\":");
	bench_json_str(json, what);
	fprintf(json, ",\"a\":\"%s%s%s\",\"b\":\"%s%s%s\",\"ratio\":%.4f,"
		"\"ratio_round_min\":%.4f,\"ratio_round_max\":%.4f",
		row_json[a][1], row_json[a][2] ? "_" : "", row_json[a][2] ? row_json[a][2] : "",
		row_json[b][1], row_json[b][2] ? "_" : "", row_json[b][2] ? row_json[b][2] : "",
		v, sr.min, sr.max);
	if (target > 0 && !fs.memory)
		fprintf(json, ",\"target_min\":%.2f,\"met\":%s", target,
			v >= target ? "true" : "false");
	else if (target > 0)
		fprintf(json, ",\"target_min\":%.2f,\"met\":null", target);
	fprintf(json, "}\n");
}

static void print_latency(FILE *json)
{
	struct bench_spread s[L_N][LF_N];

	printf("\nProducer send latency at %.0f msg/s of 1 KiB (ns; %.2f s measured after %.2f s warm-up)\n",
	       l_rate, (double)l_meas_n / l_rate, (double)l_warm_n / l_rate);
	printf("  %-28s %8s %19s %21s %23s %10s %8s %6s\n", "case", "samples",
	       "p50 [min-max]", "p99 [min-max]", "p99.9 [min-max]", "max",
	       ">1 ms", "shmqd");
	for (int c = 0; c < L_N; c++) {
		char a[64], b[64], d[64], cpu[16] = "?";

		for (int f = 0; f < LF_N; f++)
			spread(lat[c][f], &s[c][f]);
		if (s[c][LF_DCPU].med >= 0)
			snprintf(cpu, sizeof(cpu), "%.0f%%", s[c][LF_DCPU].med * 100);
		printf("  %-28s %8llu %19s %21s %23s %10llu %8.0f %6s\n", lcase_label[c],
		       (unsigned long long)(lat_all[c][0].count / (uint64_t)o.runs),
		       bench_fmt_spread(a, sizeof(a), "%.0f", &s[c][LF_P50]),
		       bench_fmt_spread(b, sizeof(b), "%.0f", &s[c][LF_P99]),
		       bench_fmt_spread(d, sizeof(d), "%.0f", &s[c][LF_P999]),
		       (unsigned long long)lat_all[c][0].max, s[c][LF_STALLS].med, cpu);
	}
	printf("  From each message's due time to its send's return (us; counts the\n"
	       "  messages queued behind a stall, and the producer's own preemptions)\n");
	printf("  %-28s %21s %23s %10s %18s\n", "case", "p99 [min-max]",
	       "p99.9 [min-max]", "max", "achieved msg/s");
	for (int c = 0; c < L_N; c++) {
		struct bench_spread u99 = s[c][LF_S99], u999 = s[c][LF_S999];
		char b[64], d[64];

		/* ns to us for the print: these run to tens of milliseconds. */
		u99.med /= 1e3, u99.min /= 1e3, u99.max /= 1e3;
		u999.med /= 1e3, u999.min /= 1e3, u999.max /= 1e3;
		printf("  %-28s %21s %23s %10.0f %18.0f\n", lcase_label[c],
		       bench_fmt_spread(b, sizeof(b), "%.0f", &u99),
		       bench_fmt_spread(d, sizeof(d), "%.0f", &u999),
		       (double)lat_all[c][1].max / 1e3, s[c][LF_RATE].med);
	}
	{
		struct bench_spread dk, dl;

		spread(lat_disk_mib[L_SPILL], &dk);
		spread(lat_disk_mib[L_KEEP], &dl);
		printf("  spill files per run: %.1f MiB [%.1f-%.1f] spilling, %.1f MiB [%.1f-%.1f] keeping up\n"
		       "  (a live group descheduled for more than half a ring, 10 ms, lags and is spilled for)\n",
		       dk.med, dk.min, dk.max, dl.med, dl.min, dl.max);
		printf("    %-50s %6.2fx\n", "send p99 while spilling / not",
		       s[L_SPILL][LF_P99].med / s[L_KEEP][LF_P99].med);
		printf("    %-50s %6.2fx\n", "send p99.9 while spilling / not",
		       s[L_SPILL][LF_P999].med / s[L_KEEP][LF_P999].med);
	}
	if (!json)
		return;
	for (int c = 0; c < L_N; c++) {
		static const char *const nm[LF_N] = {
			"p50_ns", "p99_ns", "p999_ns", "max_ns", "due_p99_ns",
			"due_p999_ns", "due_max_ns", "achieved_msgs_per_s",
			"sends_over_1ms", "shmqd_cpu",
		};
		static const char *const fm[LF_N] = {
			"%.0f", "%.0f", "%.0f", "%.0f", "%.0f", "%.0f", "%.0f",
			"%.0f", "%.0f", "%.3f",
		};

		json_head(json, "shmq", "send_latency");
		fprintf(json, ",\"case\":\"%s\",\"rate_msgs_per_s\":%.0f,"
			"\"samples_per_run\":%llu", lcase_json[c], l_rate,
			(unsigned long long)l_meas_n);
		for (int f = 0; f < LF_N; f++)
			if (f != LF_DCPU || s[c][f].min >= 0)
				json_spread(json, nm[f], &s[c][f], fm[f]);
		fprintf(json, ",\"all_runs_max_ns\":%llu",
			(unsigned long long)lat_all[c][0].max);
		{
			struct bench_spread dk;

			spread(lat_disk_mib[c], &dk);
			json_spread(json, "spill_file_mib", &dk, "%.2f");
		}
		fprintf(json, "}\n");
	}
}

int main(int argc, char **argv)
{
	const char *parent = getenv("BENCH_SPILL_DIR");
	uint64_t t_start = bench_now_ns(), journal_n, need;
	bool verbose = bench_env_long("BENCH_SPILL_VERBOSE", 0) > 0;
	struct statvfs sv;
	FILE *json;

	json = bench_start(argc, argv,
			   "  BENCH_SPILL_DIR      where to make the data directory without --dir\n"
			   "                       (/var/tmp: it must be on the disk, not tmpfs)\n"
			   "  BENCH_SPILL_MB       MiB spilled, replayed and written per round (256; full 1024)\n"
			   "  BENCH_JOURNAL_MB     MiB through the spill=always journal (64; full 256)\n"
			   "  BENCH_SPILL_RATE     messages/s of the paced producer (200000)\n"
			   "  BENCH_SPILL_LAT_SECONDS  measured seconds per latency case (1; full 3)\n"
			   "  BENCH_SPILL_VERBOSE  1: print each round's figures as it ends\n",
			   &o, &ns);
	bench_ns_setup_in(&ns, &o, parent && *parent ? parent : "/var/tmp");
	hx_init(&o, &ns);
	if (o.runs > MAXR)
		bench_die("BENCH_RUNS: at most %d", MAXR);
	p_n = (uint64_t)bench_env_long("BENCH_SPILL_MB", o.full ? 1024 : 256) *
	      ((1 << 20) / MSG);
	journal_n = (uint64_t)bench_env_long("BENCH_JOURNAL_MB", o.full ? 256 : 64) *
		    ((1 << 20) / MSG);
	l_rate = bench_env_double("BENCH_SPILL_RATE", 200000);
	l_meas_n = (uint64_t)(l_rate * bench_env_double("BENCH_SPILL_LAT_SECONDS",
							bench_by_mode(&o, 1, 3)));
	l_warm_n = (uint64_t)(l_rate * 0.2);
	if (l_meas_n < 1000)
		bench_die("BENCH_SPILL_RATE x BENCH_SPILL_LAT_SECONDS: at least 1000 messages");

	fs_describe(ns.dir, &fs);
	shmqd_pid = find_shmqd_pid();
	/* Spill files, the plain file and the journal at once, with room to spare. */
	need = 2 * p_n * MSG + p_n * MSG / 16 + journal_n * MSG * 2;
	if (statvfs(ns.dir, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < need + (1ull << 30))
		bench_die("%s: %llu MiB free, the spill benchmark needs %llu MiB (lower BENCH_SPILL_MB)",
			  ns.dir, (unsigned long long)((uint64_t)sv.f_bavail * sv.f_frsize >> 20),
			  (unsigned long long)((need + (1ull << 30)) >> 20));
	snprintf(ref_path, sizeof(ref_path), "%s/bench-sequential.dat", ns.dir);
	ref_owner = getpid();
	atexit(ref_cleanup);
	ctl = hx_shared_alloc(sizeof(*ctl));
	for (int c = 0; c < L_N; c++)
		for (int k = 0; k < 2; k++)
			hist_reset(&lat_all[c][k]);

	printf("Spill and replay (shmq): 1 partition, 4 MiB ring, 1 KiB messages, every one verified;\n"
	       "  producer on CPU %d, consumers on CPU %d, shmqd (pid %d) unpinned; %s mode, %d rounds.\n",
	       o.cpu[1], o.cpu[0], (int)shmqd_pid, o.full ? "full" : "quick", o.runs);
	printf("  data directory %s\n"
	       "    %s on %s (mounted at %s; stat -f: %s)%s\n",
	       ns.dir, fs.type, fs.source, fs.mnt[0] ? fs.mnt : "?", fs.magic,
	       fs.memory ? "  -- NOT A DISK: the verdicts are withheld" : "");
	printf("  %llu MiB (%llu messages) spilled, written, replayed and read per round;\n"
	       "  file = write(2)/read(2) of 1 MiB blocks in the same directory (like dd bs=1M;\n"
	       "  the write ends with fdatasync); warm = as written, in the page cache; cold =\n"
	       "  those files alone evicted (fdatasync + POSIX_FADV_DONTNEED; no drop_caches).\n",
	       (unsigned long long)(p_n * MSG >> 20), (unsigned long long)p_n);
	fflush(stdout);

	for (int r = 0; r < o.runs; r++) {
		round_disk(r, journal_n);
		/* The paced producer spins: it needs a CPU of its own. */
		if (o.ncpu > 1)
			round_latency(r);
		if (verbose) {
			printf("  round %d MB/s:", r);
			for (int x = 0; x < X_N; x++)
				printf(" %.0f", rows[x].mbps[r]);
			printf("  (the rows below, in order)\n");
			fflush(stdout);
		}
	}

	printf("  (journal: %llu MiB per round; spill files: %.0f MiB per round)\n",
	       (unsigned long long)(journal_n * MSG >> 20), rows[X_SPILL].disk_mib[0]);
	print_rows(json, journal_n);
	printf("  Ratios of the medians\n");
	ratio(json, "spill >= 0.8 x sequential write", X_SPILL, X_WRITE, 0.8);
	ratio(json, "replay, warm >= 0.8 x sequential read, warm", X_REPLAY_W, X_READ_W, 0.8);
	ratio(json, "replay, cold >= 0.8 x sequential read, cold", X_REPLAY_C, X_READ_C, 0.8);
	ratio(json, "journal (spill=always) / sequential write", X_JOURNAL, X_WRITE, 0);
	if (o.ncpu > 1)
		print_latency(json);
	else {
		printf("\nProducer send latency: skipped: one CPU (the paced producer spins)\n");
		if (json) {
			json_head(json, "shmq", "send_latency");
			fprintf(json, ",\"skipped\":\"one CPU: the paced producer spins\"}\n");
		}
	}
	printf("  (%.1f s)\n\n", (double)(bench_now_ns() - t_start) / 1e9);

	hx_shared_free(ctl, sizeof(*ctl));
	unlink(ref_path);
	bench_ns_teardown(&ns);
	if (json)
		fclose(json);
	return 0;
}
