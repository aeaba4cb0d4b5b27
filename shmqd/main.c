/*
 * main.c - shmqd: arguments, the directory lock, signals and the event loop.
 *
 * Overview
 *   shmqd --dir DIR serves one namespace.  At start it takes DIR's lock,
 *   adopts the topics it finds (topics.c), opens the control socket
 *   (control.c), and then loops: poll the socket and a signalfd with a
 *   timeout of the reap interval, serve requests, and run the reaper
 *   (reap.c) whenever the interval has passed; while nothing moves, the
 *   interval grows to 50 ms (next_interval), and a death, a request or a
 *   message brings it back.  One thread does it all,
 *   but for two that wait for the disk in its stead: the spill syncer
 *   (libshmq/spill.c) fdatasyncs and closes the spill segments the loop
 *   has rolled away from, so that the loop never waits for the disk at a
 *   roll; the checkpointer (libshmq/checkpointer.c) writes and fsyncs the
 *   group checkpoints whose snapshots the loop hands it (spill.c), so
 *   that a slow fsync never delays the reaper's noticing a death.  Each
 *   shares no state with the loop but its job queue, and blocks every
 *   signal.  At SIGTERM the loop waits for the checkpointer's write in
 *   flight and writes the last checkpoint itself.
 *
 * Invariants
 *   - One shmqd per directory: DIR/shmqd.lock is held with flock(LOCK_EX)
 *     for the daemon's whole life, and holds its pid as text so that a
 *     second daemon can say whom it collided with.  The kernel drops the
 *     lock when the daemon dies in any way, so a stale lock is impossible;
 *     the file itself is never removed (removing it would let two daemons
 *     lock two different files of the same name).
 *   - Everything that assumes no other daemon is alive (unlinking a stale
 *     control socket, adopting segments) happens after the lock is taken.
 *   - Topics are adopted before the socket listens, so a client never sees
 *     a daemon that answers but does not yet know its topics.
 *   - Signals are taken through a signalfd polled with everything else, so
 *     that shutdown runs in the loop, never inside a signal handler.
 *
 * Memory ordering
 *   None here.
 *
 * Failure and recovery
 *   SIGTERM, SIGINT and SIGHUP stop the loop cleanly: the socket is closed
 *   and unlinked, segments are detached but never unlinked (clients keep
 *   working on them and the next shmqd adopts them), and the lock goes
 *   last.  SIGKILL skips all that and needs nothing: the lock dies with the
 *   process, the socket file is replaced by the next daemon, and the
 *   segments are adopted as they are.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>

#include "fault.h"
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmqd.h"
#include "spill.h"

#define REAP_INTERVAL_DEFAULT_MS 5u
#define REAP_INTERVAL_MAX_MS	 60000u

/* How long a second daemon waits for the first to write its pid. */
#define LOCK_PID_WAIT_MS 500

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmqd --dir DIR [--reap-interval-ms N] [--quiet | --verbose]\n"
		"\n"
		"Serve the shmq namespace whose data directory is DIR: create and\n"
		"delete topics, adopt the topics of an earlier shmqd, and reap the\n"
		"claims and slots of dead producers and consumers.\n"
		"\n"
		"  -d, --dir DIR             data directory (created 0700 if missing);\n"
		"                            default: $SHMQ_DIR\n"
		"  -r, --reap-interval-ms N  reaper period, 1..%u ms (default %u); while\n"
		"                            nothing moves, passes space out to 50 ms\n"
		"  -q, --quiet               log only errors\n"
		"  -v, --verbose             log routine events too (the default;\n"
		"                            the last of --quiet and --verbose wins)\n"
		"  -h, --help                print this help\n"
		"      --spill-segment-bytes N\n"
		"                            for tests: roll spill segments at N bytes\n"
		"                            (default 64 MiB)\n"
		"      --fault OP:N:ERRNO[:sticky]\n"
		"                            for tests: fail the Nth spill-file call of\n"
		"                            kind OP (open, write, ftruncate, fsync,\n"
		"                            fdatasync, rename) with ERRNO (ENOSPC, EIO,\n"
		"                            EDQUOT, or a number; 0 = a short write;\n"
		"                            DELAYms, as in DELAY500 = succeed, that many\n"
		"                            milliseconds late: a slow disk);\n"
		"                            sticky: every later call too.  SIGUSR1\n"
		"                            disarms (the disk has room again)\n"
		"\n"
		"Logs go to stderr.  SIGTERM or SIGINT stops shmqd; topics survive\n"
		"and keep working, and the next shmqd adopts them.\n",
		REAP_INTERVAL_MAX_MS, REAP_INTERVAL_DEFAULT_MS);
}

/*
 * --fault OP:N:ERRNO[:sticky] or OP:N:DELAYms[:sticky], for tests of disk
 * faults while spilling.  The whole spec must parse: "DELAY500ms" is
 * refused rather than taken for DELAY500 without its sticky.
 */
static int arm_fault(const char *spec)
{
	static const char *const ops[] = {
		[SHMQ_FAULT_OPEN] = "open", [SHMQ_FAULT_WRITE] = "write",
		[SHMQ_FAULT_FTRUNCATE] = "ftruncate", [SHMQ_FAULT_FSYNC] = "fsync",
		[SHMQ_FAULT_FDATASYNC] = "fdatasync", [SHMQ_FAULT_RENAME] = "rename",
	};
	char op[16], err[16], *end;
	unsigned long nth, ms;
	unsigned flags = 0;
	int i, e, at = 0;

	if (sscanf(spec, "%15[a-z]:%lu:%15[A-Z0-9]%n", op, &nth, err, &at) < 3 || !at)
		goto bad;
	if (!strcmp(spec + at, ":sticky"))
		flags |= SHMQ_FAULT_STICKY;
	else if (spec[at])
		goto bad;
	for (i = 0; i < SHMQ_FAULT_NOPS; i++)
		if (!strcmp(op, ops[i]))
			break;
	if (i == SHMQ_FAULT_NOPS)
		goto bad;
	if (!strcmp(err, "ENOSPC")) {
		e = ENOSPC;
	} else if (!strcmp(err, "EIO")) {
		e = EIO;
	} else if (!strcmp(err, "EDQUOT")) {
		e = EDQUOT;
	} else if (!strncmp(err, "DELAY", 5)) {
		/* A slow disk: the call succeeds, ms milliseconds late. */
		errno = 0;
		ms = strtoul(err + 5, &end, 10);
		if (errno || end == err + 5 || *end || ms > INT_MAX)
			goto bad;
		e = (int)ms;
		flags |= SHMQ_FAULT_DELAY;
	} else {
		e = atoi(err);
	}
	if (shmq__fault_arm((enum shmq_fault_op)i, nth, e, flags) == 0)
		return 0;
bad:
	fprintf(stderr, "shmqd: --fault wants OP:N:ERRNO[:sticky] or OP:N:DELAYms[:sticky], not \"%s\"\n",
		spec);
	return 2;
}

static int parse_args(int argc, char **argv, struct shmqd *d)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "reap-interval-ms", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "fault", required_argument, NULL, 'F' },
		{ "spill-segment-bytes", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long v;
	char *end;
	int c;

	d->dir = NULL;
	d->reap_interval_ms = REAP_INTERVAL_DEFAULT_MS;
	while ((c = getopt_long(argc, argv, "d:r:qvh", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			d->dir = optarg;
			break;
		case 'r':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 ||
			    v > REAP_INTERVAL_MAX_MS) {
				fprintf(stderr,
					"shmqd: --reap-interval-ms wants a number of milliseconds from 1 to %u, not \"%s\"\n",
					REAP_INTERVAL_MAX_MS, optarg);
				return 2;
			}
			d->reap_interval_ms = (unsigned)v;
			break;
		case 'q':
			shmqd_quiet = true;
			break;
		case 'v':
			shmqd_quiet = false;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'F':
			if (arm_fault(optarg))
				return 2;
			break;
		case 'S':
			/* For tests: rolls without writing 64 MiB first. */
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 4096) {
				fprintf(stderr, "shmqd: --spill-segment-bytes wants a number of bytes, at least 4096, not \"%s\"\n",
					optarg);
				return 2;
			}
			d->spill_segment_bytes = v;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "shmqd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!d->dir || !*d->dir) {
		d->dir = getenv("SHMQ_DIR");
		if (!d->dir || !*d->dir) {
			fprintf(stderr, "shmqd: no data directory: give --dir DIR or set SHMQ_DIR\n");
			usage(stderr);
			return 2;
		}
	}
	return 0;
}

/* Make sure DIR exists and is ours. */
static int prepare_dir(struct shmqd *d)
{
	struct stat st;

	if (mkdir(d->dir, 0700) == 0)
		shmqd_log("created data directory %s", d->dir);
	else if (errno != EEXIST) {
		shmqd_err("cannot create data directory %s: %s", d->dir,
			  strerror(errno));
		return -1;
	}
	if (stat(d->dir, &st) != 0) {
		shmqd_err("cannot stat %s: %s", d->dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		shmqd_err("%s exists and is not a directory", d->dir);
		return -1;
	}
	/*
	 * The directory decides which topics exist: a directory somebody
	 * else owns could feed us topic files and sockets of theirs.
	 */
	if (st.st_uid != d->euid) {
		shmqd_err("data directory %s belongs to uid %u; shmqd runs as uid %u and serves only a directory of its own",
			  d->dir, (unsigned)st.st_uid, (unsigned)d->euid);
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		shmqd_err("warning: data directory %s is writable by group or others (mode %04o); other users could plant topic files",
			  d->dir, (unsigned)(st.st_mode & 07777));
	return 0;
}

/* Read the pid the lock holder wrote, waiting a little if it has not yet. */
static long lock_holder_pid(int fd)
{
	uint64_t until = shmq__mono_ns() + LOCK_PID_WAIT_MS * 1000000ull;
	struct timespec pause = { 0, 5 * 1000 * 1000 };
	char buf[32];
	ssize_t n;
	long pid;
	char *end;

	for (;;) {
		n = pread(fd, buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			pid = strtol(buf, &end, 10);
			if (end != buf && pid > 0 && (*end == '\n' || !*end))
				return pid;
		}
		if (shmq__mono_ns() >= until)
			return -1;
		nanosleep(&pause, NULL);
	}
}

static int take_lock(struct shmqd *d)
{
	char path[PATH_MAX];
	char pid[32];
	struct stat st;
	long holder;
	int fd, n;

	n = snprintf(path, sizeof(path), "%s/%s", d->dir, SHMQ_LOCK_FILE);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		shmqd_err("data directory path %s is too long", d->dir);
		return -1;
	}
	fd = open(path, O_CREAT | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		shmqd_err("cannot open lock file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		shmqd_err("lock file %s is not a regular file", path);
		close(fd);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK) {
			shmqd_err("cannot lock %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		holder = lock_holder_pid(fd);
		if (holder > 0)
			fprintf(stderr, "shmqd: %s is already served by shmqd (pid %ld)\n",
				d->dir, holder);
		else
			fprintf(stderr, "shmqd: %s is already served by shmqd (pid unknown: %s holds no pid)\n",
				d->dir, path);
		close(fd);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)d->pid);
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		shmqd_err("cannot write our pid into %s: %s", path,
			  strerror(errno));
		close(fd);
		return -1;
	}
	d->lock_fd = fd;
	return 0;
}

static int setup_signals(struct shmqd *d)
{
	sigset_t set;

	/* Replies use MSG_NOSIGNAL; this covers anything else. */
	signal(SIGPIPE, SIG_IGN);

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		shmqd_err("sigprocmask: %s", strerror(errno));
		return -1;
	}
	d->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d->signal_fd < 0) {
		shmqd_err("signalfd: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static const char *signal_name(int sig)
{
	switch (sig) {
	case SIGTERM:
		return "SIGTERM";
	case SIGINT:
		return "SIGINT";
	case SIGHUP:
		return "SIGHUP";
	}
	return "a signal";
}

/* Returns the signal number that asks us to stop, or 0. */
static int read_signal(struct shmqd *d)
{
	struct signalfd_siginfo si;

	if (read(d->signal_fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	return (int)si.ssi_signo;
}

static int ms_until(uint64_t now_ns, uint64_t when_ns)
{
	if (when_ns <= now_ns)
		return 0;
	/* Round up, so that the loop does not wake just before the time. */
	return (int)((when_ns - now_ns + 999999u) / 1000000u);
}

/*
 * The pass interval after a pass: the reap interval while anything moves,
 * doubling with every quiet pass up to IDLE_INTERVAL_MAX_MS (or the reap
 * interval, if longer).  A quiet pass saw no message published, nothing
 * reaped, no disk work, no request, no process attach or die.  An idle
 * shmqd woke 200 times a second, and each wake-up cost this 2-vCPU guest
 * some 65 us: 1.3 % of a CPU for nothing.  Deaths of watched processes
 * wake the loop through their pidfds, whatever the interval; only where
 * processes are not watched (no pidfds, or too many) is the cadence kept,
 * because there deaths are found by the passes.  What waits longer when a
 * burst follows a quiet spell: the first pass, so a producer that fills a
 * spilling ring at once may wait up to IDLE_INTERVAL_MAX_MS for shmqd to
 * start spilling, and stall and ack timeouts are honoured to within it.
 */
#define IDLE_INTERVAL_MAX_MS 50u

static uint64_t next_interval(const struct shmqd *d, bool quiet, unsigned *quiet_passes)
{
	uint64_t base = d->reap_interval_ms * 1000000ull, cap, v;

	if (!quiet || d->watch.off || d->watch.full_said) {
		*quiet_passes = 0;
		return base;
	}
	cap = IDLE_INTERVAL_MAX_MS * 1000000ull;
	if (cap < base)
		cap = base;
	if (*quiet_passes < 16)
		(*quiet_passes)++;
	v = base << *quiet_passes;
	return v < cap ? v : cap;
}

static void event_loop(struct shmqd *d)
{
	struct pollfd pfd[3 + SHMQD_MAX_CLIENTS];
	uint64_t interval_ns = d->reap_interval_ms * 1000000ull;
	uint64_t now = shmq__mono_ns();
	uint64_t next_reap = now + interval_ns;
	uint64_t next_retry = now + SHMQD_RETRY_OFFLINE_MS * 1000000ull;
	bool spill_more = false, death = false, stirred = false;
	unsigned n, quiet_passes = 0;
	int rc, sig;

	for (;;) {
		pfd[0].fd = d->signal_fd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		/* Deaths of attached processes (watch.c); -1 is ignored by poll. */
		pfd[1].fd = shmqd_watch_fd(&d->watch);
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		n = shmqd_ctl_pollfds(d, pfd + 2);

		rc = poll(pfd, n + 2, spill_more || death ? 0 :
			  ms_until(shmq__mono_ns(), next_reap));
		if (rc < 0 && errno != EINTR) {
			shmqd_err("poll: %s", strerror(errno));
			/* Do not spin on a persistent error. */
			usleep(d->reap_interval_ms * 1000u);
		}
		now = shmq__mono_ns();

		if (rc > 0 && (pfd[0].revents & POLLIN)) {
			sig = read_signal(d);
			if (sig == SIGUSR1) {
				/* Tests: the disk has room again. */
				shmq__fault_disarm();
				shmqd_log("fault injection disarmed");
				sig = 0;
			}
			if (sig) {
				shmqd_log("received %s; shutting down (topics stay available)",
					  signal_name(sig));
				shmqd_spill_checkpoint_all(d);
				return;
			}
		}
		if (rc > 0 && (pfd[1].revents & POLLIN) && shmqd_watch_events(d))
			death = true;
		if (rc > 0) {
			shmqd_ctl_serve(d, pfd + 2, n, now);
			stirred = true;
		}
		shmqd_ctl_expire(d, now);

		if (death) {
			/* A process died: recover what it held now, not at the cadence. */
			death = false;
			stirred = true;
			shmqd_reap_all(d, true);
		}

		/* A request or a death after quiet passes: the cadence again. */
		if (stirred && quiet_passes) {
			quiet_passes = 0;
			interval_ns = d->reap_interval_ms * 1000000ull;
			if (next_reap > now + interval_ns)
				next_reap = now + interval_ns;
		}

		if (now >= next_reap || spill_more) {
			/* Disk work left over: come back at once (poll 0). */
			spill_more = shmqd_spill_all(d, now);
		}
		if (now >= next_reap) {
			uint32_t watched = d->watch.n;
			bool moving = shmqd_reap_all(d, false);

			/* New processes to watch; one already gone asks for a pass. */
			death = shmqd_watch_scan(d);
			if (moving || spill_more || death || d->watch.n != watched)
				stirred = true;
			if (stirred && quiet_passes)
				next_reap = now; /* the reap interval from now */
			interval_ns = next_interval(d, !stirred, &quiet_passes);
			stirred = false;
			/*
			 * Keep the cadence, but after a long stall (a big
			 * create, a stopped process) do not run a burst of
			 * passes to catch up: one is enough.
			 */
			next_reap += interval_ns;
			if (next_reap <= now)
				next_reap = now + interval_ns;
		}
		if (now >= next_retry) {
			shmqd_topics_retry_offline(d);
			next_retry = now + SHMQD_RETRY_OFFLINE_MS * 1000000ull;
		}
	}
}

int main(int argc, char **argv)
{
	struct shmqd d;
	size_t online = 0;
	int rc;

	memset(&d, 0, sizeof(d));
	d.lock_fd = d.signal_fd = d.listen_fd = -1;
	d.pid = getpid();
	d.euid = geteuid();

	rc = parse_args(argc, argv, &d);
	if (rc)
		return rc;
	if (prepare_dir(&d) || take_lock(&d))
		return 1;
	rc = shmq__namespace_id(d.dir, &d.ns);
	if (rc) {
		char why[SHMQD_MSG_MAX];

		shmqd_err("cannot compute the namespace of %s: %s", d.dir,
			  shmqd_liberr(rc, why, sizeof(why)));
		return 1;
	}
	if (setup_signals(&d))
		return 1;
	shmqd_watch_init(&d.watch);
	rc = shmq__spill_syncer_start(&d.syncer);
	if (rc) {
		char why[SHMQD_MSG_MAX];

		shmqd_err("%s; spill segments are synced in the event loop",
			  shmqd_liberr(rc, why, sizeof(why)));
		d.syncer = NULL;
	}
	rc = shmq__checkpointer_start(d.dir, &d.ckpt);
	if (rc) {
		char why[SHMQD_MSG_MAX];

		shmqd_err("%s; group checkpoints are written in the event loop",
			  shmqd_liberr(rc, why, sizeof(why)));
		d.ckpt = NULL;
	}

	shmqd_topics_adopt_all(&d);
	if (shmqd_ctl_listen(&d)) {
		shmqd_topics_detach_all(&d);
		shmq__checkpointer_stop(d.ckpt);
		shmq__spill_syncer_stop(d.syncer);
		return 1;
	}
	for (size_t i = 0; i < d.ntopics; i++)
		online += d.topics[i]->online;
	shmqd_log("serving %s on %s (%zu topic%s online, reaping every %u ms)",
		  d.dir, d.sock_path, online, online == 1 ? "" : "s",
		  d.reap_interval_ms);

	event_loop(&d);

	/* The socket first: no request may arrive while we take things down. */
	shmqd_ctl_close(&d);
	shmqd_watch_close(&d.watch);
	shmqd_topics_detach_all(&d);
	/* After the topics: each waited for its checkpoint in flight. */
	shmq__checkpointer_stop(d.ckpt);
	/* After the logs: closing one waits for its segment's sync. */
	shmq__spill_syncer_stop(d.syncer);
	close(d.signal_fd);
	/* The lock last: the next shmqd starts only after we let go. */
	close(d.lock_fd);
	shmqd_log("stopped");
	return 0;
}
