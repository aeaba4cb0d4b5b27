/*
 * shmqd-t.c - shmqd end to end: the directory lock, topic create / list /
 * delete through the public API, the control socket's robustness, and
 * what survives the daemon: SIGKILL with traffic flowing and adoption by
 * the next daemon, segments lost with the host (recreated), and segments
 * squatted by someone else (refused, never touched).
 *
 * Everything runs against the built binary ($SHMQ_BUILD/shmqd), each part
 * in its own data directory, i.e. its own namespace.  Producers and
 * consumers of the flow test are forked children that report by exit
 * status; the messages carry sequence numbers and their complement, so the
 * consumer proves that every message arrived once, in order, intact.
 *
 * The daemon's log is captured by pointing our stderr at a file while
 * tu_shmqd_start() forks it (with --verbose, to override its --quiet):
 * the daemon inherits the descriptor.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "shmq.h"
#include "shmq_int.h"
#include "tap.h"
#include "testutil.h"

#define ALARM_SECONDS 120

/* The flow test: N messages at one per FLOW_PACE_NS, about 1.5 s. */
#define FLOW_N	     50000u
#define FLOW_PACE_NS 30000u
#define FLOW_BATCH   64u

struct flow_msg {
	uint64_t seq;
	uint64_t check; /* ~seq: a torn or foreign frame fails it */
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool exited_ok(int status)
{
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void describe_status(const char *who, int status)
{
	if (exited_ok(status))
		return;
	if (status == -1)
		diag("%s had to be killed (timeout)", who);
	else if (WIFEXITED(status))
		diag("%s exited with %d", who, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		diag("%s killed by signal %d", who, WTERMSIG(status));
}

/* ------------------------------------------------------------------------
 * Logs and files
 */

/* Start shmqd with its stderr (and stdout) going to log. */
static pid_t start_logged(const char *dir, const char *log)
{
	static const char *const verbose[] = { "--verbose", NULL };
	int fd, saved;
	pid_t pid;

	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		bail("open %s: %s", log, strerror(errno));
	fflush(stderr);
	saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
	if (saved < 0 || dup2(fd, STDERR_FILENO) < 0)
		bail("redirect stderr: %s", strerror(errno));
	close(fd);
	/* tu_shmqd_start passes --quiet; the last of the two wins. */
	pid = tu_shmqd_start(dir, verbose);
	dup2(saved, STDERR_FILENO);
	close(saved);
	return pid;
}

static char *slurp(const char *path)
{
	static char buf[65536];
	ssize_t n = 0, r;
	int fd;

	buf[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return buf;
	while ((size_t)n < sizeof(buf) - 1 &&
	       (r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
		n += r;
	buf[n] = '\0';
	close(fd);
	return buf;
}

/* Is there a line in the text holding both a and b? */
static bool line_has(const char *text, const char *a, const char *b)
{
	const char *p = text;

	while (*p) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char line[2048];

		snprintf(line, sizeof(line), "%.*s", (int)len, p);
		if (strstr(line, a) && strstr(line, b))
			return true;
		p += len + (end ? 1 : 0);
	}
	return false;
}

static void dump_log(const char *log)
{
	char *text = slurp(log), *line, *save = NULL;

	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save))
		diag("log: %s", line);
}

static void segname_of(const char *dir, const char *topic, char *buf)
{
	uint64_t ns;

	if (shmq__namespace_id(dir, &ns) != 0)
		bail("namespace id of %s: %s", dir, shmq_errdetail());
	shmq__segment_name(ns, topic, buf);
}

static uint64_t next_offset(shmq_client_t *c, const char *topic)
{
	struct shmq_topic_stat *st;
	uint64_t v;

	if (shmq_topic_stat(c, topic, &st) != 0)
		return 0;
	v = st->partitions[0].next_offset;
	shmq_topic_stat_free(st);
	return v;
}

struct names {
	char buf[1024];
};

static int collect(const char *name, void *arg)
{
	struct names *n = arg;
	size_t len = strlen(n->buf);

	snprintf(n->buf + len, sizeof(n->buf) - len, "%s%s", len ? "," : "",
		 name);
	return 0;
}

static const char *list_of(shmq_client_t *c)
{
	static struct names n;

	n.buf[0] = '\0';
	if (shmq_topic_list(c, collect, &n) != 0)
		return "(list failed)";
	return n.buf;
}

/* ------------------------------------------------------------------------
 * 1. The lock: a second daemon on the same directory
 */

static void test_second_daemon(const char *dir, pid_t first)
{
	char prog[PATH_MAX], out[4096], want[64];
	int pfd[2], status;
	ssize_t n = 0, r;
	pid_t pid;

	tu_program("shmqd", prog, sizeof(prog));
	if (pipe2(pfd, O_CLOEXEC) != 0)
		bail("pipe: %s", strerror(errno));
	pid = tu_fork(NULL);
	if (pid == 0) {
		dup2(pfd[1], STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		alarm(0);
		execl(prog, "shmqd", "--dir", dir, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	status = tu_wait_child(pid, 5000);
	while ((size_t)n < sizeof(out) - 1 &&
	       (r = read(pfd[0], out + n, sizeof(out) - 1 - (size_t)n)) > 0)
		n += r;
	out[n > 0 ? n : 0] = '\0';
	close(pfd[0]);

	ok(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0,
	   "a second shmqd on the same directory exits non-zero");
	snprintf(want, sizeof(want), "(pid %d)", (int)first);
	ok(strstr(out, want) && strstr(out, "already served"),
	   "its error names the first shmqd's pid");
	if (!strstr(out, want))
		diag("second shmqd said: %s", out);
}

/* ------------------------------------------------------------------------
 * 2. Topics through the public API
 */

static void test_topics(const char *dir, shmq_client_t *c)
{
	struct shmq_topic_opts o = SHMQ_TOPIC_OPTS_INIT;
	struct shmq_topic_stat *st;
	char longname[SHMQ_NAME_MAX + 2];

	is_int(shmq_topic_create(c, "orders", NULL), 0, "create orders");
	is_int(shmq_topic_create(c, "orders", NULL), -EEXIST,
	       "creating an existing topic gives -EEXIST");
	is_int(shmq_topic_create(c, "bad/name", NULL), -EINVAL,
	       "a name with '/' is refused");
	is_int(shmq_topic_create(c, ".hidden", NULL), -EINVAL,
	       "a name starting with '.' is refused");
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	is_int(shmq_topic_create(c, longname, NULL), -EINVAL,
	       "a name of %d bytes is refused", SHMQ_NAME_MAX + 1);

	o.ring_bytes = 100000;
	is_int(shmq_topic_create(c, "odd", &o), -EINVAL,
	       "a ring size that is not a power of two is refused");
	ok(shmq_errdetail()[0] != '\0', "with a detail: %s", shmq_errdetail());
	o.ring_bytes = 32u << 10;
	is_int(shmq_topic_create(c, "small", &o), -EINVAL,
	       "a ring below 64 KiB is refused");
	o = (struct shmq_topic_opts)SHMQ_TOPIC_OPTS_INIT;
	o.partitions = SHMQ_MAX_PARTITIONS + 1;
	is_int(shmq_topic_create(c, "wide", &o), -EINVAL,
	       "too many partitions are refused");

	o = (struct shmq_topic_opts)SHMQ_TOPIC_OPTS_INIT;
	o.partitions = 3;
	o.ring_bytes = 64u << 10;
	is_int(shmq_topic_create(c, "alpha", &o), 0,
	       "create alpha with 3 partitions of 64 KiB");
	if (shmq_topic_stat(c, "alpha", &st) == 0) {
		ok(st->partition_count == 3 && st->ring_bytes == (64u << 10),
		   "alpha has the geometry asked for");
		shmq_topic_stat_free(st);
	} else {
		ok(0, "alpha has the geometry asked for (stat: %s)",
		   shmq_errdetail());
	}
	ok(strcmp(list_of(c), "alpha,orders") == 0,
	   "list gives alpha,orders in name order (got %s)", list_of(c));

	is_int(shmq_topic_delete(c, "orders"), 0, "delete orders");
	ok(strcmp(list_of(c), "alpha") == 0, "list after delete gives alpha (got %s)",
	   list_of(c));
	is_int(shmq_topic_delete(c, "orders"), -ENOENT,
	       "deleting it again gives -ENOENT");
	is_int(shmq_topic_create(c, "orders", NULL), 0,
	       "the name can be created again after delete");
	(void)dir;
}

/* ------------------------------------------------------------------------
 * 3. The control socket is never blocked by a bad client
 */

static int raw_connect(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir,
		 SHMQ_CONTROL_SOCKET);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		bail("connect %s: %s", sa.sun_path, strerror(errno));
	return fd;
}

/*
 * Another user who can reach the socket is refused by its credentials.
 * Only root can become another user; the directory and the socket are
 * opened up for the moment so that the file modes do not refuse first.
 */
static void test_other_user(const char *dir)
{
	char sock[PATH_MAX];
	int status;
	pid_t pid;

	if (geteuid() != 0) {
		skip(1, "only root can act as another user");
		return;
	}
	snprintf(sock, sizeof(sock), "%s/%s", dir, SHMQ_CONTROL_SOCKET);
	if (chmod(dir, 0755) != 0 || chmod(sock, 0666) != 0)
		bail("chmod: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		shmq_client_t *oc;
		int rc;

		tap_child();
		if (setgroups(0, NULL) != 0 || setgid(65534) != 0 ||
		    setuid(65534) != 0)
			_exit(2);
		if (shmq_open(dir, NULL, &oc) != 0)
			_exit(3);
		rc = shmq_topic_create(oc, "intruder", NULL);
		if (rc != -EACCES) {
			fprintf(stderr, "# other user: create gave %s (%s)\n",
				shmq_strerror(rc), shmq_errdetail());
			_exit(4);
		}
		_exit(0);
	}
	status = tu_wait_child(pid, 5000);
	describe_status("the other user", status);
	ok(exited_ok(status), "another user is refused with -EACCES");
	chmod(sock, 0600);
	chmod(dir, 0700);
}

static void test_bad_clients(const char *dir, shmq_client_t *c)
{
	struct shmq_ctl_reply rep;
	struct pollfd pfd;
	int staller, junk;
	ssize_t n = -1;

	/* A client that connects and says nothing must not stall others. */
	staller = raw_connect(dir);
	is_int(shmq_topic_create(c, "beside-a-staller", NULL), 0,
	       "a request is served while another client stalls");

	junk = raw_connect(dir);
	if (send(junk, "hey", 3, MSG_NOSIGNAL) != 3)
		bail("send: %s", strerror(errno));
	pfd.fd = junk;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 5000) == 1)
		n = recv(junk, &rep, sizeof(rep), 0);
	ok(n == (ssize_t)sizeof(rep) && rep.magic == SHMQ_CTL_MAGIC &&
		   rep.status == SHMQ_EPROTO,
	   "a short request is answered with SHMQ_EPROTO");
	close(junk);
	close(staller);
	is_int(shmq_topic_delete(c, "beside-a-staller"), 0,
	       "shmqd still serves after garbage");
	test_other_user(dir);
}

/* ------------------------------------------------------------------------
 * 4. Producer and consumer children for the flow test
 */

static int flow_producer(const char *dir)
{
	shmq_client_t *c;
	shmq_producer_t *p;
	uint64_t start, off, last = 0;
	int rc;

	tap_child();
	if (shmq_open(dir, NULL, &c) || shmq_producer_open(c, "flow", NULL, &p)) {
		fprintf(stderr, "# producer: open: %s\n", shmq_errdetail());
		return 10;
	}
	start = tu_now_ns();
	for (uint64_t seq = 0; seq < FLOW_N; seq++) {
		struct flow_msg m = { seq, ~seq };
		uint64_t give_up = tu_now_ns() + 10000000000ull;

		/* Pace in batches: nanosleep cannot sleep 30 us precisely. */
		if (seq % FLOW_BATCH == 0) {
			uint64_t due = start + seq * FLOW_PACE_NS, now = tu_now_ns();

			if (due > now) {
				struct timespec ts = { 0, (long)(due - now) };

				if (due - now >= 1000000000ull)
					ts = (struct timespec){ 0, 999999999L };
				nanosleep(&ts, NULL);
			}
		}
		do {
			rc = shmq_send(p, 0, NULL, 0, &m, sizeof(m), 1000, &off);
		} while (rc == -EAGAIN && tu_now_ns() < give_up);
		if (rc != 0) {
			fprintf(stderr, "# producer: send %llu: %s (%s)\n",
				(unsigned long long)seq, shmq_strerror(rc),
				shmq_errdetail());
			return 11;
		}
		if (seq && off <= last) {
			fprintf(stderr, "# producer: offset went from %llu to %llu\n",
				(unsigned long long)last, (unsigned long long)off);
			return 12;
		}
		last = off;
	}
	shmq_producer_close(p);
	shmq_close(c);
	return 0;
}

static int flow_consumer(const char *dir, int ready_fd)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	uint64_t expect = 0, last = 0, give_up;
	shmq_consumer_t *k;
	shmq_client_t *c;
	struct shmq_msg msg;
	struct flow_msg m;
	int rc;

	tap_child();
	o.from = SHMQ_FROM_EARLIEST;
	if (shmq_open(dir, NULL, &c) ||
	    shmq_consumer_open(c, "flow", "g", &o, &k)) {
		fprintf(stderr, "# consumer: open: %s\n", shmq_errdetail());
		return 20;
	}
	if (write(ready_fd, "r", 1) != 1)
		return 21;
	close(ready_fd);
	give_up = tu_now_ns() + 60000000000ull;
	while (expect < FLOW_N) {
		rc = shmq_consumer_poll(k, &msg, 100);
		if (rc == -EAGAIN) {
			if (tu_now_ns() > give_up) {
				fprintf(stderr, "# consumer: stuck at %llu\n",
					(unsigned long long)expect);
				return 22;
			}
			continue;
		}
		if (rc != 0) {
			fprintf(stderr, "# consumer: poll: %s (%s)\n",
				shmq_strerror(rc), shmq_errdetail());
			return 23;
		}
		if (msg.value_len != sizeof(m)) {
			fprintf(stderr, "# consumer: message of %zu bytes\n",
				msg.value_len);
			return 24;
		}
		memcpy(&m, msg.value, sizeof(m));
		if (m.seq != expect || m.check != ~m.seq) {
			fprintf(stderr, "# consumer: got seq %llu, expected %llu\n",
				(unsigned long long)m.seq,
				(unsigned long long)expect);
			return 25;
		}
		if (expect && msg.offset <= last) {
			fprintf(stderr, "# consumer: offset went from %llu to %llu\n",
				(unsigned long long)last,
				(unsigned long long)msg.offset);
			return 26;
		}
		last = msg.offset;
		expect++;
		shmq_consumer_release(k);
	}
	shmq_consumer_close(k);
	shmq_close(c);
	return 0;
}

/* ------------------------------------------------------------------------
 * 5. SIGKILL with traffic flowing, adoption, then a lost segment
 */

/* Open file descriptors of process pid, or -1. */
static int fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *dp;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dp = opendir(path);
	if (!dp)
		return -1;
	while ((e = readdir(dp)))
		if (e->d_name[0] != '.')
			n++;
	closedir(dp);
	return n;
}

/*
 * shmqd watches attached processes with pidfds (shmqd/watch.c): one more
 * fd while a process is attached, none left after it dies or leaves, over
 * many processes that exit, are killed, or close.
 */
static void test_watch_fds(shmq_client_t *c, pid_t daemon)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	int base, during = -1, after = -1, k, fds[2];
	uint64_t deadline;
	pid_t kid;
	char one;

	to.ring_bytes = 64 << 10;
	if (shmq_topic_create(c, "watched", &to))
		bail("create watched: %s", shmq_errdetail());
	sleep_ms(50);
	base = fd_count(daemon);
	if (pipe(fds))
		bail("pipe");
	kid = fork();
	if (kid == 0) {
		shmq_producer_t *p;

		tap_child();
		if (shmq_producer_open(c, "watched", NULL, &p))
			_exit(2);
		if (write(fds[1], "x", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	if (read(fds[0], &one, 1) != 1)
		bail("the attached child did not start");
	deadline = tu_now_ns() + 3000000000ull;
	while ((during = fd_count(daemon)) <= base && tu_now_ns() < deadline)
		sleep_ms(5);
	kill(kid, SIGKILL);
	tu_wait_child(kid, 2000);
	close(fds[0]);
	close(fds[1]);
	if (during <= base) {
		skip(2, "shmqd opened no pidfd (no pidfd_open here?): deaths are noticed by polling");
		return;
	}
	/* Forty more: exiting attached, closing first, and killed. */
	for (k = 0; k < 40; k++) {
		kid = fork();
		if (kid == 0) {
			struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
			shmq_consumer_t *cons;
			shmq_producer_t *p;

			tap_child();
			if (shmq_producer_open(c, "watched", NULL, &p) ||
			    shmq_consumer_open(c, "watched", "w", &co, &cons))
				_exit(2);
			sleep_ms(20);
			if (k % 3 == 1) {
				shmq_producer_close(p);
				shmq_consumer_close(cons);
			}
			if (k % 3 == 2)
				pause(); /* killed */
			_exit(0);
		}
		if (k % 3 == 2) {
			sleep_ms(30);
			kill(kid, SIGKILL);
		}
		tu_wait_child(kid, 3000);
	}
	deadline = tu_now_ns() + 5000000000ull;
	while ((after = fd_count(daemon)) > base && tu_now_ns() < deadline)
		sleep_ms(10);
	ok(during == base + 1, "shmqd watches an attached process with one pidfd (%d -> %d)",
	   base, during);
	is_int(after, base, "after 41 processes died or left, none of their pidfds is left open");
	if (shmq_topic_delete(c, "watched"))
		bail("delete watched: %s", shmq_errdetail());
}

static void test_kill_and_adopt(const char *dir)
{
	char log[PATH_MAX], seg[SHMQ_SEGNAME_MAX];
	uint64_t o1, o2, o3, o4, deadline;
	shmq_client_t *c;
	pid_t daemon, prod, cons;
	int rfd[2], status;
	struct pollfd pfd;
	char byte;

	snprintf(log, sizeof(log), "%s/shmqd.log", dir);
	daemon = tu_shmqd_start(dir, NULL);
	c = tu_open(dir);
	if (shmq_topic_create(c, "flow", NULL))
		bail("create flow: %s", shmq_errdetail());

	if (pipe2(rfd, O_CLOEXEC) != 0)
		bail("pipe: %s", strerror(errno));
	fflush(NULL);
	cons = fork();
	if (cons == 0) {
		close(rfd[0]);
		_exit(flow_consumer(dir, rfd[1]));
	}
	close(rfd[1]);
	pfd.fd = rfd[0];
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 5000) != 1 || read(rfd[0], &byte, 1) != 1)
		bail("the consumer did not come up");
	close(rfd[0]);
	prod = fork();
	if (prod == 0)
		_exit(flow_producer(dir));

	/* Let traffic build up, then kill the daemon under it. */
	deadline = tu_now_ns() + 5000000000ull;
	while (next_offset(c, "flow") < 1000 * sizeof(struct flow_msg) &&
	       tu_now_ns() < deadline)
		sleep_ms(5);
	o1 = next_offset(c, "flow");
	status = tu_shmqd_stop(daemon, 1);
	ok(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	   "shmqd killed with SIGKILL while messages flow (offset %llu)",
	   (unsigned long long)o1);

	sleep_ms(300);
	o2 = next_offset(c, "flow");
	ok(o2 > o1, "messages keep flowing without shmqd (offset %llu -> %llu)",
	   (unsigned long long)o1, (unsigned long long)o2);
	is_int(shmq_topic_create(c, "while-down", NULL), SHMQ_ENODAEMON,
	       "create with a stale socket and no daemon gives SHMQ_ENODAEMON");

	daemon = start_logged(dir, log);
	ok(line_has(slurp(log), "topic flow:", "adopted"),
	   "the restarted shmqd adopts the topic");
	if (!line_has(slurp(log), "topic flow:", "adopted"))
		dump_log(log);
	o3 = next_offset(c, "flow");
	ok(o3 >= o2, "offsets continue after adoption, not reset (%llu -> %llu)",
	   (unsigned long long)o2, (unsigned long long)o3);

	status = tu_wait_child(prod, 30000);
	describe_status("producer", status);
	ok(exited_ok(status), "the producer sent all %u messages across the restart",
	   FLOW_N);
	status = tu_wait_child(cons, 30000);
	describe_status("consumer", status);
	ok(exited_ok(status),
	   "the consumer received all %u in order, none lost or duplicated", FLOW_N);
	o4 = next_offset(c, "flow");
	ok(o4 > o3, "messages flowed on after the restart (offset %llu -> %llu)",
	   (unsigned long long)o3, (unsigned long long)o4);

	/* A clean stop, then the segment disappears as with a host reboot. */
	status = tu_shmqd_stop(daemon, 0);
	ok(exited_ok(status), "SIGTERM stops shmqd with status 0");
	ok(access(log, F_OK) == 0 && line_has(slurp(log), "shutting down", ""),
	   "and it logs the shutdown");
	segname_of(dir, "flow", seg);
	is_int(shm_unlink(seg), 0, "the segment outlived shmqd; remove it (reboot)");

	daemon = start_logged(dir, log);
	ok(line_has(slurp(log), "topic flow:", "recreated"),
	   "the restarted shmqd recreates the missing segment");
	if (!line_has(slurp(log), "topic flow:", "recreated"))
		dump_log(log);
	ok(next_offset(c, "flow") < o4, "the recreated ring starts afresh");
	{
		struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
		shmq_producer_t *p = NULL;
		shmq_consumer_t *k = NULL;
		struct shmq_msg msg;
		int rc = -1;

		co.from = SHMQ_FROM_EARLIEST;
		if (shmq_producer_open(c, "flow", NULL, &p) == 0 &&
		    shmq_consumer_open(c, "flow", "after", &co, &k) == 0 &&
		    shmq_send(p, 0, NULL, 0, "reborn", 6, 1000, NULL) == 0)
			rc = shmq_consumer_poll(k, &msg, 2000);
		ok(rc == 0 && msg.value_len == 6 && memcmp(msg.value, "reborn", 6) == 0,
		   "the recreated topic carries messages");
		shmq_consumer_close(k);
		shmq_producer_close(p);
	}
	status = tu_shmqd_stop(daemon, 0);
	ok(exited_ok(status), "shmqd stops cleanly again");
	shmq_close(c);
}

/* ------------------------------------------------------------------------
 * 6. Squatted segments
 */

static void squat(const char *seg, mode_t mode, const void *junk, size_t n,
		  size_t size)
{
	int fd;

	shm_unlink(seg);
	fd = shm_open(seg, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
	if (fd < 0 || fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)size) != 0)
		bail("squat %s: %s", seg, strerror(errno));
	if (n && pwrite(fd, junk, n, 0) != (ssize_t)n)
		bail("squat %s: write: %s", seg, strerror(errno));
	close(fd);
}

/*
 * A producer that dies between claim and commit: the reaper pads its claim
 * over, so the partition is not wedged, and the daemon says so in its log.
 */
static void test_dead_claim(shmq_client_t *c, const char *log)
{
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *k = NULL;
	shmq_producer_t *p = NULL;
	struct shmq_msg msg;
	uint64_t deadline;
	pid_t pid;
	int rc = -1, status;

	co.from = SHMQ_FROM_EARLIEST;
	if (shmq_consumer_open(c, "fresh", "g", &co, &k) != 0)
		bail("consumer on fresh: %s", shmq_errdetail());
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct shmq_claim cl;

		tap_child();
		if (shmq_producer_open(c, "fresh", NULL, &p) != 0 ||
		    shmq_producer_claim(p, 0, NULL, 0, 100, 1000, &cl) != 0)
			_exit(1);
		memset(cl.value, 'z', 100);
		_exit(0);	/* dies holding the claim */
	}
	status = tu_wait_child(pid, 5000);
	if (!exited_ok(status))
		bail("the claiming child failed");

	if (shmq_producer_open(c, "fresh", NULL, &p) == 0 &&
	    shmq_send(p, 0, NULL, 0, "after", 5, 1000, NULL) == 0)
		rc = shmq_consumer_poll(k, &msg, 5000);
	ok(rc == 0 && msg.value_len == 5 && memcmp(msg.value, "after", 5) == 0,
	   "a claim abandoned by a dead producer does not wedge the partition");
	shmq_producer_close(p);
	shmq_consumer_close(k);

	deadline = tu_now_ns() + 3000000000ull;
	while (!line_has(slurp(log), "topic fresh:", "dead producer") &&
	       tu_now_ns() < deadline)
		sleep_ms(10);
	ok(line_has(slurp(log), "topic fresh:", "dead producer"),
	   "shmqd logs that it padded the dead producer's claim");
}

static void test_squatters(const char *dir)
{
	char log[PATH_MAX], seg_mode[SHMQ_SEGNAME_MAX], seg_junk[SHMQ_SEGNAME_MAX];
	unsigned char junk[4096], now[sizeof(junk)];
	shmq_producer_t *p = NULL;
	shmq_client_t *c;
	struct stat st;
	pid_t daemon;
	int rc, fd, status;
	bool same;

	snprintf(log, sizeof(log), "%s/shmqd.log", dir);
	daemon = tu_shmqd_start(dir, NULL);
	c = tu_open(dir);
	if (shmq_topic_create(c, "sqmode", NULL) ||
	    shmq_topic_create(c, "sqjunk", NULL) ||
	    shmq_topic_create(c, "good", NULL))
		bail("create: %s", shmq_errdetail());
	if (!exited_ok(tu_shmqd_stop(daemon, 0)))
		bail("shmqd did not stop cleanly");

	/* Valid topic files stay; the segments are replaced by impostors. */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 131u + 7u);
	segname_of(dir, "sqmode", seg_mode);
	segname_of(dir, "sqjunk", seg_junk);
	squat(seg_mode, 0666, NULL, 0, 2u << 20);
	squat(seg_junk, 0600, junk, sizeof(junk), 2u << 20);

	daemon = start_logged(dir, log);
	ok(waitpid(daemon, &status, WNOHANG) == 0,
	   "shmqd keeps running next to squatted segments");
	ok(line_has(slurp(log), "topic sqmode:", "offline"),
	   "it logs the refusal of the segment with a foreign mode");
	ok(line_has(slurp(log), "topic sqjunk:", "offline"),
	   "it logs the refusal of the segment with a garbage header");
	ok(line_has(slurp(log), "topic good:", "adopted"),
	   "and adopts the healthy topic");
	if (!line_has(slurp(log), "topic sqjunk:", "offline"))
		dump_log(log);

	rc = shmq_producer_open(c, "sqmode", NULL, &p);
	is_int(rc, SHMQ_EFOREIGN, "a producer refuses the 0666 segment");
	if (rc == 0)
		shmq_producer_close(p);
	rc = shmq_producer_open(c, "sqjunk", NULL, &p);
	ok(rc == SHMQ_EMAGIC || rc == SHMQ_EVERSION || rc == SHMQ_ELAYOUT ||
		   rc == SHMQ_ESIZE || rc == SHMQ_ENOTREADY || rc == SHMQ_EFOREIGN,
	   "a producer refuses the garbage segment (%s)", shmq_strerror(rc));
	if (rc == 0)
		shmq_producer_close(p);
	rc = shmq_producer_open(c, "good", NULL, &p);
	is_int(rc, 0, "a producer opens the healthy topic");
	if (rc == 0) {
		is_int(shmq_send(p, 0, NULL, 0, "x", 1, 1000, NULL), 0,
		       "and publishes into it");
		shmq_producer_close(p);
	} else {
		skip(1, "no producer");
	}

	fd = shm_open(seg_junk, O_RDONLY | O_CLOEXEC, 0);
	same = fd >= 0 && pread(fd, now, sizeof(now), 0) == (ssize_t)sizeof(now) &&
	       memcmp(now, junk, sizeof(junk)) == 0;
	ok(same, "the garbage segment was left untouched");
	if (fd >= 0)
		close(fd);
	fd = shm_open(seg_mode, O_RDONLY | O_CLOEXEC, 0);
	ok(fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0666 &&
		   st.st_size == (off_t)(2u << 20),
	   "the 0666 segment was left untouched");
	if (fd >= 0)
		close(fd);

	is_int(shmq_topic_create(c, "sqmode", NULL), -EEXIST,
	       "an offline topic's name stays taken");
	is_int(shmq_topic_create(c, "fresh", NULL), 0, "shmqd still creates topics");
	test_dead_claim(c, log);
	is_int(shmq_topic_delete(c, "sqjunk"), 0, "an offline topic can be deleted");
	fd = shm_open(seg_junk, O_RDONLY | O_CLOEXEC, 0);
	ok(fd >= 0, "deleting it did not unlink the squatted segment");
	if (fd >= 0)
		close(fd);
	ok(strcmp(list_of(c), "fresh,good,sqmode") == 0,
	   "list shows the remaining topics (got %s)", list_of(c));

	status = tu_shmqd_stop(daemon, 0);
	ok(exited_ok(status), "shmqd stops cleanly");
	shm_unlink(seg_mode);
	shm_unlink(seg_junk);
	shmq_close(c);
}

/* ------------------------------------------------------------------------
 * 7. Without a daemon, and with a directory too deep for a socket
 */

static void test_no_daemon(const char *dir, shmq_client_t *c)
{
	char sock[PATH_MAX];

	snprintf(sock, sizeof(sock), "%s/%s", dir, SHMQ_CONTROL_SOCKET);
	ok(access(sock, F_OK) != 0 && errno == ENOENT,
	   "a stopped shmqd removed its control socket");
	is_int(shmq_topic_create(c, "nobody", NULL), SHMQ_ENODAEMON,
	       "create without shmqd gives SHMQ_ENODAEMON");
	ok(strstr(shmq_errdetail(), "no shmqd") != NULL,
	   "with a detail saying so (%s)", shmq_errdetail());
	is_int(shmq_topic_delete(c, "alpha"), SHMQ_ENODAEMON,
	       "delete without shmqd gives SHMQ_ENODAEMON");
	ok(strcmp(list_of(c), "alpha,orders") == 0,
	   "list works without shmqd (got %s)", list_of(c));
}

static void test_long_dir(void)
{
	char base[256], deep[512];
	shmq_client_t *c;
	int rc;

	tu_make_dir("long", base, sizeof(base));
	snprintf(deep, sizeof(deep), "%s/%0120d", base, 0);
	if (mkdir(deep, 0700) != 0)
		bail("mkdir %s: %s", deep, strerror(errno));
	rc = shmq_open(deep, NULL, &c);
	if (rc == 0) {
		is_int(shmq_topic_create(c, "t", NULL), -ENAMETOOLONG,
		       "a socket path longer than sun_path gives -ENAMETOOLONG");
		shmq_close(c);
	} else {
		ok(0, "shmq_open of a deep directory: %s", shmq_strerror(rc));
	}
	tu_cleanup(base);
}

int main(void)
{
	char d1[256], d2[256], d3[256];
	shmq_client_t *c;
	pid_t daemon;
	int status;

	tu_init(ALARM_SECONDS);
	plan(66);

	tu_make_dir("shmqd", d1, sizeof(d1));
	tu_make_dir("shmqd-flow", d2, sizeof(d2));
	tu_make_dir("shmqd-squat", d3, sizeof(d3));

	daemon = tu_shmqd_start(d1, NULL);
	ok(daemon > 0, "shmqd serves %s", d1);
	test_second_daemon(d1, daemon);

	is_int(shmq_open(d1, NULL, &c), 0, "shmq_open");
	test_topics(d1, c);
	test_bad_clients(d1, c);
	test_watch_fds(c, daemon);

	status = tu_shmqd_stop(daemon, 0);
	ok(exited_ok(status), "shmqd exits 0 on SIGTERM");
	test_no_daemon(d1, c);
	shmq_close(c);

	test_kill_and_adopt(d2);
	test_squatters(d3);
	test_long_dir();

	tu_cleanup(d1);
	tu_cleanup(d2);
	tu_cleanup(d3);
	return tap_done();
}
