/*
 * testutil.c - see testutil.h.
 *
 * Every wait here is bounded: the tests run unattended in CI, where a hang
 * must turn into a failure with a reason, never into a stalled job.  The
 * shmqd processes a test starts are remembered so that the alarm handler
 * can kill them: a test that times out must not leave a daemon behind.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmq_int.h"
#include "tap.h"

/* Daemons started by this process, for the alarm handler to kill. */
#define TU_MAX_DAEMONS 16
static volatile pid_t tu_daemons[TU_MAX_DAEMONS];
/* The process that armed the alarm; forked children inherit the handler. */
static volatile pid_t tu_owner;

/*
 * Directories made by tu_make_dir and not yet cleaned up.  A test that
 * bails out or fails an exit path still removes them (and their segments)
 * at exit, so that failed runs do not fill /dev/shm; SHMQ_TEST_KEEP=1 in
 * the environment keeps them for a post-mortem.
 */
#define TU_MAX_DIRS 32
static char *tu_dirs[TU_MAX_DIRS];
static pid_t tu_dirs_owner;

static void tu_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

uint64_t tu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Only async-signal-safe calls: write() and kill().  A child that inherited
 * the handler does not kill the parent's daemons; it only reports.
 */
static void tu_on_alarm(int sig)
{
	static const char msg[] = "Bail out! test timed out (alarm)\n";
	static const char cmsg[] = "# child timed out (alarm)\n";
	int i;

	(void)sig;
	if (getpid() == tu_owner) {
		for (i = 0; i < TU_MAX_DAEMONS; i++)
			if (tu_daemons[i] > 0)
				kill(tu_daemons[i], SIGKILL);
		if (write(STDOUT_FILENO, msg, sizeof msg - 1) < 0) {
			/* nothing more to do from a signal handler */
		}
	} else if (write(STDERR_FILENO, cmsg, sizeof cmsg - 1) < 0) {
		/* idem */
	}
	_exit(255);
}

void tu_init(unsigned alarm_seconds)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = tu_on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	tu_owner = getpid();
	alarm(alarm_seconds);
}

const char *tu_build_dir(void)
{
	static char dir[PATH_MAX];
	const char *env = getenv("SHMQ_BUILD");
	char *slash;
	ssize_t n;
	int i;

	if (env && *env)
		return env;
	if (dir[0])
		return dir;
	/* Run by hand: the test lives in $(B)/tests/, so $(B) is two up. */
	n = readlink("/proc/self/exe", dir, sizeof dir - 1);
	if (n <= 0) {
		strcpy(dir, ".");
		return dir;
	}
	dir[n] = '\0';
	for (i = 0; i < 2; i++) {
		slash = strrchr(dir, '/');
		if (!slash || slash == dir) {
			strcpy(dir, ".");
			return dir;
		}
		*slash = '\0';
	}
	return dir;
}

void tu_program(const char *name, char *buf, size_t n)
{
	if ((size_t)snprintf(buf, n, "%s/%s", tu_build_dir(), name) >= n)
		bail("tu_program: path of %s too long", name);
}

static int tu_rm_one(const char *path, const struct stat *st, int flag,
		     struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void tu_rm_tree(const char *dir)
{
	nftw(dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void tu_cleanup_at_exit(void)
{
	const char *keep = getenv("SHMQ_TEST_KEEP");
	int i;

	/* Forked children that exit() must not remove their parent's dirs. */
	if (getpid() != tu_dirs_owner)
		return;
	for (i = 0; i < TU_MAX_DIRS; i++) {
		char *dir = tu_dirs[i];

		if (!dir)
			continue;
		tu_dirs[i] = NULL; /* tu_cleanup() must not free it under us */
		if (keep && *keep && strcmp(keep, "0") != 0)
			fprintf(stderr, "# kept %s\n", dir);
		else
			tu_cleanup(dir);
		free(dir);
	}
}

static void tu_track_dir(const char *dir)
{
	int i;

	if (!tu_dirs_owner || tu_dirs_owner != getpid()) {
		/* First dir of this process (or of a child that makes its own). */
		memset(tu_dirs, 0, sizeof tu_dirs);
		if (!tu_dirs_owner)
			atexit(tu_cleanup_at_exit);
		tu_dirs_owner = getpid();
	}
	for (i = 0; i < TU_MAX_DIRS; i++) {
		if (!tu_dirs[i]) {
			tu_dirs[i] = strdup(dir);
			return;
		}
	}
}

static void tu_untrack_dir(const char *dir)
{
	int i;

	if (tu_dirs_owner != getpid())
		return;
	for (i = 0; i < TU_MAX_DIRS; i++) {
		if (tu_dirs[i] && strcmp(tu_dirs[i], dir) == 0) {
			free(tu_dirs[i]);
			tu_dirs[i] = NULL;
		}
	}
}

void tu_make_dir(const char *tag, char *buf, size_t n)
{
	static unsigned counter;

	if ((size_t)snprintf(buf, n, "/tmp/shmq-t-%s-%d-%u", tag, (int)getpid(),
			     counter++) >= n)
		bail("tu_make_dir: buffer too small");
	/* A leftover from a pid that was recycled is removed, not reused. */
	if (mkdir(buf, 0700) < 0) {
		if (errno != EEXIST)
			bail("mkdir %s: %s", buf, strerror(errno));
		tu_cleanup(buf);
		if (mkdir(buf, 0700) < 0)
			bail("mkdir %s: %s", buf, strerror(errno));
	}
	tu_track_dir(buf);
}

/* Can we connect to DIR/control.sock?  Proves that shmqd listens. */
static int tu_control_connects(const char *dir)
{
	struct sockaddr_un sa;
	int fd, rc;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir,
			     SHMQ_CONTROL_SOCKET) >= sizeof sa.sun_path)
		bail("control socket path too long for %s", dir);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		bail("socket: %s", strerror(errno));
	rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	close(fd);
	return rc == 0;
}

static void tu_remember_daemon(pid_t pid, pid_t forget)
{
	int i;

	for (i = 0; i < TU_MAX_DAEMONS; i++) {
		if (tu_daemons[i] == forget) {
			tu_daemons[i] = pid;
			return;
		}
	}
}

void tu_topic_direct(const char *dir, const char *name,
		     struct shmq_topic_params *tp, struct shmq_map *map)
{
	char path[PATH_MAX], segname[SHMQ_SEGNAME_MAX];
	uint64_t ns;
	int rc;

	if (!tp->topic_id)
		tp->topic_id = (uint64_t)tu_crc(name, strlen(name)) << 32 | (uint32_t)getpid();
	rc = shmq__topic_params_check(tp);
	if (rc < 0)
		bail("topic %s params: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
	snprintf(path, sizeof path, "%s/%s", dir, SHMQ_TOPICS_DIR);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		bail("mkdir %s: %s", path, strerror(errno));
	rc = shmq__namespace_id(dir, &ns);
	if (rc < 0)
		bail("namespace id: %s", shmq_strerror(rc));
	shmq__segment_name(ns, name, segname);
	rc = shmq__segment_create(segname, name, tp, map);
	if (rc < 0)
		bail("segment create %s: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
	rc = shmq__topic_file_write(dir, name, tp);
	if (rc < 0)
		bail("topic file %s: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
}

pid_t tu_shmqd_start(const char *dir, const char *const *extra_args)
{
	char prog[PATH_MAX];
	const char *argv[64];
	pid_t parent = getpid(), pid;
	uint64_t deadline;
	int argc = 0, status;

	tu_program("shmqd", prog, sizeof prog);
	if (access(prog, X_OK) < 0)
		bail("%s: %s (build it first, or set SHMQ_BUILD)", prog,
		     strerror(errno));
	argv[argc++] = "shmqd";
	argv[argc++] = "--dir";
	argv[argc++] = dir;
	/* Errors still reach stderr; routine logging would drown test output. */
	argv[argc++] = "--quiet";
	while (extra_args && *extra_args) {
		if (argc >= (int)(sizeof argv / sizeof argv[0]) - 1)
			bail("tu_shmqd_start: too many arguments");
		argv[argc++] = *extra_args++;
	}
	argv[argc] = NULL;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bail("fork: %s", strerror(errno));
	if (pid == 0) {
		/*
		 * The daemon dies with the test, whatever kills the test, so
		 * that no run leaves a daemon behind.  Its stdout goes to
		 * stderr: stdout is the TAP stream.
		 */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		alarm(0);
		execv(prog, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	tu_remember_daemon(pid, 0);

	deadline = tu_now_ns() + 5000000000ull;
	for (;;) {
		if (tu_control_connects(dir))
			return pid;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			tu_remember_daemon(0, pid);
			bail("shmqd --dir %s exited before answering (status %#x)",
			     dir, status);
		}
		if (tu_now_ns() > deadline)
			break;
		tu_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	tu_remember_daemon(0, pid);
	bail("shmqd --dir %s did not answer on %s within 5 s", dir,
	     SHMQ_CONTROL_SOCKET);
}

/* Poll for pid's exit until deadline; returns 1 and *status when reaped. */
static int tu_reap_until(pid_t pid, uint64_t deadline, int *status)
{
	unsigned ms = 1;
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 1;
		if (r < 0 && errno != EINTR) {
			*status = -1;
			return 1; /* not our child, or already reaped */
		}
		if (tu_now_ns() >= deadline)
			return 0;
		tu_sleep_ms(ms);
		if (ms < 20)
			ms *= 2;
	}
}

int tu_shmqd_stop(pid_t pid, int hard)
{
	int status = -1;

	if (pid <= 0)
		return -1;
	kill(pid, hard ? SIGKILL : SIGTERM);
	if (!tu_reap_until(pid, tu_now_ns() + 5000000000ull, &status)) {
		diag("shmqd %d ignored %s for 5 s; killing it", (int)pid,
		     hard ? "SIGKILL" : "SIGTERM");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	tu_remember_daemon(0, pid);
	return status;
}

int tu_wait_child(pid_t pid, int timeout_ms)
{
	int status = -1;

	if (tu_reap_until(pid, tu_now_ns() + (uint64_t)timeout_ms * 1000000ull,
			  &status))
		return status;
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return -1;
}

/*
 * Unlink every segment of the namespace: those named by a topic file, and
 * any other /dev/shm object with the namespace's prefix (a topic whose file
 * was already removed, or a half-created one).
 */
static void tu_unlink_segments(const char *dir)
{
	char path[PATH_MAX], segname[SHMQ_SEGNAME_MAX], prefix[SHMQ_SEGNAME_MAX];
	char other[NAME_MAX + 2];
	char topic[SHMQ_NAME_MAX + 1];
	struct dirent *de;
	uint64_t ns;
	size_t len, plen;
	DIR *d;

	if (shmq__namespace_id(dir, &ns) < 0)
		return;
	snprintf(path, sizeof path, "%s/%s", dir, SHMQ_TOPICS_DIR);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		len = strlen(de->d_name);
		if (len <= 6 || strcmp(de->d_name + len - 6, ".topic") != 0 ||
		    len - 6 > SHMQ_NAME_MAX)
			continue;
		memcpy(topic, de->d_name, len - 6);
		topic[len - 6] = '\0';
		shmq__segment_name(ns, topic, segname);
		shm_unlink(segname);
	}
	if (d)
		closedir(d);

	/* The prefix is the name of a topic "x" without its last byte. */
	shmq__segment_name(ns, "x", prefix);
	plen = strlen(prefix) - 1;
	d = opendir("/dev/shm");
	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, prefix + 1, plen - 1) == 0) {
			snprintf(other, sizeof other, "/%s", de->d_name);
			shm_unlink(other);
		}
	}
	if (d)
		closedir(d);
}

/*
 * A test may nest namespaces inside its directory (a deep path, a second
 * daemon): every directory that looks like a data directory has its
 * segments unlinked before the tree goes.
 */
static int tu_unlink_one(const char *path, const struct stat *st, int flag,
			 struct FTW *ftw)
{
	char sub[PATH_MAX];
	struct stat sst;

	(void)st;
	(void)ftw;
	if (flag != FTW_D)
		return 0;
	if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, SHMQ_TOPICS_DIR) < sizeof sub &&
	    lstat(sub, &sst) == 0)
		tu_unlink_segments(path);
	else if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, SHMQ_LOCK_FILE) < sizeof sub &&
		 lstat(sub, &sst) == 0)
		tu_unlink_segments(path);
	return 0;
}

void tu_cleanup(const char *dir)
{
	struct stat st;

	tu_untrack_dir(dir);
	if (lstat(dir, &st) < 0)
		return;
	/* The top directory is always a namespace, whatever it holds. */
	tu_unlink_segments(dir);
	nftw(dir, tu_unlink_one, 16, FTW_PHYS);
	tu_rm_tree(dir);
}

uint64_t tu_cpu_ns(int who)
{
	struct rusage ru;

	if (getrusage(who, &ru) < 0)
		return 0;
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) *
		       1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) *
		       1000ull;
}

/*
 * CRC-32 (the IEEE polynomial, reflected), slicing by 8: the multi-process
 * tests checksum a few hundred megabytes, several times over, and under
 * the sanitizers a byte-at-a-time loop would dominate their run time.
 * The tables are built once; pthread_once orders that for threaded tests.
 */
static uint32_t tu_crc_table[8][256];
static pthread_once_t tu_crc_once = PTHREAD_ONCE_INIT;

static void tu_crc_init(void)
{
	uint32_t c;
	int i, j;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (j = 0; j < 8; j++)
			c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
		tu_crc_table[0][i] = c;
	}
	for (i = 0; i < 256; i++)
		for (j = 1; j < 8; j++)
			tu_crc_table[j][i] = (tu_crc_table[j - 1][i] >> 8) ^
					     tu_crc_table[0][tu_crc_table[j - 1][i] & 0xff];
}

uint32_t tu_crc(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffffu, lo, hi;

	pthread_once(&tu_crc_once, tu_crc_init);
	while (n >= 8) {
		/* Byte loads: the buffer need not be aligned (ring views are). */
		lo = c ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 |
			  (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
		hi = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
		     (uint32_t)b[7] << 24;
		c = tu_crc_table[7][lo & 0xff] ^ tu_crc_table[6][(lo >> 8) & 0xff] ^
		    tu_crc_table[5][(lo >> 16) & 0xff] ^ tu_crc_table[4][lo >> 24] ^
		    tu_crc_table[3][hi & 0xff] ^ tu_crc_table[2][(hi >> 8) & 0xff] ^
		    tu_crc_table[1][(hi >> 16) & 0xff] ^ tu_crc_table[0][hi >> 24];
		b += 8;
		n -= 8;
	}
	while (n--)
		c = tu_crc_table[0][(c ^ *b++) & 0xff] ^ (c >> 8);
	return ~c;
}

size_t tu_msg_make(void *buf, size_t len, uint32_t magic, uint32_t producer,
		   uint64_t seq)
{
	struct tu_msg_head h = { magic, producer, seq, (uint32_t)len, 0 };
	uint8_t *b = buf;
	size_t i;

	for (i = sizeof h; i < len; i++)
		b[i] = (uint8_t)(seq * 11 + producer * 5 + i);
	h.crc = tu_crc(b + sizeof h, len - sizeof h);
	memcpy(b, &h, sizeof h);
	return len;
}

bool tu_msg_check(const struct shmq_msg *m, uint32_t magic, uint32_t *producer,
		  uint64_t *seq)
{
	struct tu_msg_head h;

	if (m->value_len < sizeof h)
		return false;
	memcpy(&h, m->value, sizeof h);
	if (h.magic != magic || h.len != m->value_len ||
	    h.crc != tu_crc((const uint8_t *)m->value + sizeof h, m->value_len - sizeof h))
		return false;
	*producer = h.producer;
	*seq = h.seq;
	return true;
}

/* ------------------------------------------------------------------------
 * Plumbing of the tests that fork producers.
 */
shmq_client_t *tu_open(const char *dir)
{
	shmq_client_t *c;
	int rc = shmq_open(dir, NULL, &c);

	if (rc)
		bail("shmq_open %s: %s (%s)", dir, shmq_strerror(rc), shmq_errdetail());
	return c;
}

void tu_topic_create(shmq_client_t *c, const char *name, uint64_t ring_bytes,
		     int full_policy, uint32_t stall_ms)
{
	struct shmq_topic_opts o = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	o.ring_bytes = ring_bytes;
	o.full_policy = full_policy;
	if (stall_ms)
		o.stall_timeout_ms = stall_ms;
	rc = shmq_topic_create(c, name, &o);
	if (rc)
		bail("create topic %s: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
}

shmq_producer_t *tu_producer(shmq_client_t *c, const char *topic)
{
	shmq_producer_t *p;
	int rc = shmq_producer_open(c, topic, NULL, &p);

	if (rc)
		bail("producer open %s: %s (%s)", topic, shmq_strerror(rc), shmq_errdetail());
	return p;
}

pid_t tu_fork(int fds[2])
{
	pid_t pid;

	if (fds && pipe(fds) < 0)
		bail("pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bail("fork: %s", strerror(errno));
	if (fds)
		close(fds[pid == 0 ? 0 : 1]);
	return pid;
}

shmq_client_t *tu_child_client(const char *dir, unsigned alarm_s)
{
	shmq_client_t *c;

	tap_child();
	if (alarm_s)
		alarm(alarm_s);
	if (shmq_open(dir, NULL, &c) != 0)
		_exit(90);
	return c;
}

shmq_consumer_t *tu_shared_member(shmq_client_t *c, const char *topic,
				  const char *group)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *m;

	o.mode = SHMQ_GROUP_SHARED;
	o.from = SHMQ_FROM_EARLIEST;
	if (shmq_consumer_open(c, topic, group, &o, &m))
		bail("member of %s/%s: %s", topic, group, shmq_errdetail());
	return m;
}

pid_t tu_fork_holder(const char *dir, const char *topic, const char *group,
		     uint32_t *held)
{
	struct shmq_msg m;
	uint32_t v;
	int fds[2];
	pid_t pid = tu_fork(fds);

	if (pid == 0) {
		shmq_consumer_t *c = tu_shared_member(tu_child_client(dir, 30),
						      topic, group);

		if (shmq_consumer_poll(c, &m, 2000) || m.value_len != sizeof(v))
			_exit(3);
		memcpy(&v, m.value, sizeof(v));
		/* Held, never released: tell the parent, then wait to die. */
		if (write(fds[1], &v, sizeof(v)) != sizeof(v))
			_exit(4);
		pause();
		_exit(5);
	}
	*held = tu_read_full(fds[0], &v, sizeof(v), 3000) ? v : UINT32_MAX;
	close(fds[0]);
	return pid;
}

bool tu_read_full(int fd, void *buf, size_t n, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	if (poll(&pfd, 1, timeout_ms) != 1)
		return false;
	return read(fd, buf, n) == (ssize_t)n;
}

int tu_ring_check(const char *dir, const char *topic)
{
	char segname[SHMQ_SEGNAME_MAX];
	struct shmq_map map;
	uint64_t ns;
	int rc;

	rc = shmq__namespace_id(dir, &ns);
	if (rc == 0) {
		shmq__segment_name(ns, topic, segname);
		rc = shmq__segment_attach(segname, getuid(), 0600, 0, &map);
	}
	if (rc == 0) {
		rc = shmq__ring_check(&map, 0);
		shmq__segment_detach(&map);
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * The stream checker.
 */
void tu_stream_open(struct tu_stream *s, shmq_client_t *c, const char *topic,
		    uint32_t magic, bool (*forbid)(uint32_t producer))
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	int rc;

	memset(s, 0, sizeof *s);
	s->name = topic;
	s->magic = magic;
	s->forbid = forbid;
	o.from = SHMQ_FROM_EARLIEST;
	rc = shmq_consumer_open(c, topic, "check", &o, &s->c);
	if (rc)
		bail("consumer open %s: %s (%s)", topic, shmq_strerror(rc), shmq_errdetail());
}

void tu_stream_close(struct tu_stream *s)
{
	shmq_consumer_close(s->c);
	s->c = NULL;
}

void tu_stream_judge(struct tu_stream *s, const struct shmq_msg *m, uint32_t *id,
		     uint64_t *seq)
{
	uint32_t producer;

	s->delivered++;
	*id = UINT32_MAX;
	if (!tu_msg_check(m, s->magic, &producer, seq) || producer >= TU_STREAM_IDS) {
		if (s->bad++ < 5)
			diag("%s: message at %" PRIu64 " (%zu bytes) fails its checks",
			     s->name, m->offset, m->value_len);
		return;
	}
	*id = producer;
	if (s->forbid && s->forbid(producer)) {
		if (s->forbidden++ < 5)
			diag("%s: delivered message %" PRIu64 " of producer %u at %" PRIu64
			     ", which must never come",
			     s->name, *seq, producer, m->offset);
		return;
	}
	if (*seq != s->expect[producer] && s->bad++ < 5)
		diag("%s: producer %u seq %" PRIu64 ", expected %" PRIu64, s->name,
		     producer, *seq, s->expect[producer]);
	s->expect[producer] = *seq + 1;
}

int tu_stream_take(struct tu_stream *s, int timeout_ms, uint32_t *id, uint64_t *seq)
{
	struct shmq_msg m;
	int rc = shmq_consumer_poll(s->c, &m, timeout_ms);

	if (rc != 0)
		return rc;
	tu_stream_judge(s, &m, id, seq);
	shmq_consumer_release(s->c);
	return 0;
}

double tu_stream_consume_until(struct tu_stream *s, uint32_t want_id,
			       uint64_t want_seq, int timeout_ms)
{
	uint64_t t0 = tu_now_ns(), deadline = t0 + (uint64_t)timeout_ms * 1000000;

	while (tu_now_ns() < deadline) {
		uint32_t id;
		uint64_t seq;
		int rc = tu_stream_take(s, 20, &id, &seq);

		if (rc == -EAGAIN)
			continue;
		if (rc != 0) {
			diag("%s: poll: %s", s->name, shmq_strerror(rc));
			return -1;
		}
		if (id == want_id && seq == want_seq)
			return (double)(tu_now_ns() - t0) / 1e6;
	}
	return -1;
}

void tu_stream_drain(struct tu_stream *s)
{
	uint32_t id;
	uint64_t seq;
	int n = 0;

	while (n++ < 1000000 && tu_stream_take(s, 300, &id, &seq) == 0)
		;
}
