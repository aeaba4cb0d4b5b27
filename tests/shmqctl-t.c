/*
 * shmqctl-t.c - the command-line tool, end to end.
 *
 * Design note
 * -----------
 * The test runs the built shmqctl as a user would, against a shmqd started
 * for it on a private data directory, and judges it only by what a user
 * sees: exit status, stdout and stderr.  Each run goes through run_ctl(),
 * which feeds stdin, collects both outputs through poll() and gives the
 * program RUN_TIMEOUT_MS before killing it, so that a hung command fails
 * its check instead of the whole test; alarm() (tu_init) bounds the rest.
 *
 * The data checks compare content, not counts: the lines consumed must be
 * exactly the lines produced, byte for byte and in order (one key, so one
 * partition), including an empty line, blanks, a tab and a long line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "testutil.h"

#define RUN_TIMEOUT_MS 10000
#define OUT_MAX (256 * 1024)
#define NLINES 100

static char ctl_path[4096];
static char data_dir[4096];

struct run {
	int status; /* exit code, or -1 if it did not exit normally */
	size_t out_len, err_len;
	char out[OUT_MAX];
	char err[OUT_MAX];
};

static uint64_t now_ms(void)
{
	return tu_now_ns() / 1000000u;
}

/* Append what fd has to buf; false at end of file. */
static bool drain(int fd, char *buf, size_t *len)
{
	char tmp[4096];
	ssize_t n = read(fd, tmp, sizeof(tmp));
	size_t room;

	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return false;
	room = OUT_MAX - 1 - *len;
	if ((size_t)n > room)
		n = (ssize_t)room;
	memcpy(buf + *len, tmp, (size_t)n);
	*len += (size_t)n;
	buf[*len] = '\0';
	return true;
}

/*
 * Run shmqctl with args (NULL-terminated) and input on stdin.  SHMQ_DIR is
 * the test's directory unless use_env is false.
 */
static void run_ctl_v(struct run *r, const char *input, bool use_env,
		      va_list ap)
{
	const char *argv[32];
	int in[2], out[2], err[2];
	size_t in_len = input ? strlen(input) : 0, in_off = 0;
	uint64_t deadline = now_ms() + RUN_TIMEOUT_MS;
	bool out_open = true, err_open = true;
	int argc = 0, st;
	pid_t pid;

	argv[argc++] = ctl_path;
	while (argc < 31 && (argv[argc] = va_arg(ap, const char *)))
		argc++;
	argv[argc] = NULL;
	r->out_len = r->err_len = 0;
	r->out[0] = r->err[0] = '\0';
	r->status = -1;

	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
		bail("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		bail("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		if (use_env)
			setenv("SHMQ_DIR", data_dir, 1);
		else
			unsetenv("SHMQ_DIR");
		execv(ctl_path, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", ctl_path, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	if (!in_len) {
		close(in[1]);
		in[1] = -1;
	}
	while ((out_open || err_open || in[1] >= 0) && now_ms() < deadline) {
		struct pollfd pf[3] = {
			{ .fd = out_open ? out[0] : -1, .events = POLLIN },
			{ .fd = err_open ? err[0] : -1, .events = POLLIN },
			{ .fd = in[1], .events = POLLOUT },
		};

		if (poll(pf, 3, 100) < 0 && errno != EINTR)
			break;
		if (pf[0].revents && !drain(out[0], r->out, &r->out_len))
			out_open = false;
		if (pf[1].revents && !drain(err[0], r->err, &r->err_len))
			err_open = false;
		if (pf[2].revents & (POLLERR | POLLHUP)) {
			close(in[1]);
			in[1] = -1;
		} else if (pf[2].revents & POLLOUT) {
			ssize_t n = write(in[1], input + in_off, in_len - in_off);

			if (n > 0)
				in_off += (size_t)n;
			if (in_off == in_len || (n < 0 && errno != EAGAIN)) {
				close(in[1]);
				in[1] = -1;
			}
		}
	}
	if (in[1] >= 0)
		close(in[1]);
	close(out[0]);
	close(err[0]);
	{
		int64_t left = (int64_t)deadline - (int64_t)now_ms();

		st = tu_wait_child(pid, left > 0 ? (int)left : 1);
	}
	if (st != -1 && WIFEXITED(st))
		r->status = WEXITSTATUS(st);
}

/* Print a run's exit status and output as diagnostics, one line each. */
static void diag_text(const char *what, const char *text)
{
	const char *p = text, *nl;

	while (*p) {
		nl = strchr(p, '\n');
		if (!nl)
			nl = p + strlen(p);
		diag("%s: %.*s", what, (int)(nl - p), p);
		p = *nl ? nl + 1 : nl;
	}
}

static int show(const struct run *r)
{
	diag("exit status: %d", r->status);
	diag_text("stdout", r->out);
	diag_text("stderr", r->err);
	return 0;
}

/* Checks that show what the last run printed when they fail. */
#define okr(cond, ...) ((void)(ok(cond, __VA_ARGS__) || show(&r)))
#define is_intr(got, want, ...) \
	((void)(is_int(got, want, __VA_ARGS__) || show(&r)))

static void run_ctl(struct run *r, const char *input, ...)
{
	va_list ap;

	va_start(ap, input);
	run_ctl_v(r, input, true, ap);
	va_end(ap);
}

static void run_ctl_noenv(struct run *r, ...)
{
	va_list ap;

	va_start(ap, r);
	run_ctl_v(r, NULL, false, ap);
	va_end(ap);
}

/* A shmqctl error message: "shmqctl: " and more. */
static bool is_error_msg(const struct run *r)
{
	return r->err_len > 9 && !strncmp(r->err, "shmqctl: ", 9);
}

/*
 * In `stat` output, the rows of group g: each must show a lag of 0.
 * Returns the number of rows found, or -1 if one has another lag.
 */
static int group_rows_lag0(const char *out, const char *g)
{
	char *copy = strdup(out), *save = NULL, *line;
	int rows = 0;

	if (!copy)
		bail("out of memory");
	for (line = strtok_r(copy, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *tok, *first = NULL, *lag = NULL, *s2 = NULL;
		int col = 0;

		/* GROUP MEMBERS PARTITION COMMITTED NEXT LAG READS */
		for (tok = strtok_r(line, " \t", &s2); tok;
		     tok = strtok_r(NULL, " \t", &s2), col++) {
			if (!first)
				first = tok;
			if (col == 5)
				lag = tok;
		}
		if (!first || strcmp(first, g))
			continue;
		if (!lag || strcmp(lag, "0")) {
			rows = -1;
			break;
		}
		rows++;
	}
	free(copy);
	return rows;
}

/* The lines to publish: varied on purpose, one per message. */
static char *make_input(void)
{
	size_t cap = 64 * 1024, len = 0;
	char *buf = malloc(cap);
	int i;

	if (!buf)
		bail("out of memory");
	for (i = 0; i < NLINES; i++) {
		if (i == 10) {
			len += (size_t)snprintf(buf + len, cap - len, "\n");
		} else if (i == 20) {
			len += (size_t)snprintf(buf + len, cap - len,
						"  blanks\tand a tab  \n");
		} else if (i == 30) {
			memset(buf + len, 'x', 1000);
			len += 1000;
			buf[len++] = '\n';
			buf[len] = '\0';
		} else {
			len += (size_t)snprintf(buf + len, cap - len,
						"message %d of %d\n", i, NLINES);
		}
	}
	return buf;
}

int main(void)
{
	static struct run r;
	char *input;
	unsigned part;
	unsigned long long off;
	int consumed;
	pid_t shmqd;

	tu_init(90);
	plan(66);
	tu_program("shmqctl", ctl_path, sizeof(ctl_path));
	if (access(ctl_path, X_OK))
		bail("no shmqctl at %s", ctl_path);
	tu_make_dir("shmqctl", data_dir, sizeof(data_dir));
	shmqd = tu_shmqd_start(data_dir, NULL);
	input = make_input();

	/* Help and usage. */
	run_ctl(&r, NULL, "--help", NULL);
	is_intr(r.status, 0, "--help exits 0");
	okr(strstr(r.out, "usage:") && strstr(r.out, "consume"),
	   "--help prints the usage with every command");
	run_ctl(&r, NULL, "create", "--help", NULL);
	okr(r.status == 0 && strstr(r.out, "--ring-bytes"),
	   "create --help describes create's options");
	run_ctl(&r, NULL, "frobnicate", NULL);
	okr(r.status == 2 && is_error_msg(&r), "an unknown command is a usage error");

	/* create and its refusals. */
	run_ctl(&r, NULL, "create", "t1", "--partitions", "2", "--ring-bytes",
		"64K", NULL);
	is_intr(r.status, 0, "create t1 --partitions 2 --ring-bytes 64K");
	is_intr((long long)r.err_len, 0, "create prints nothing on stderr");
	run_ctl(&r, NULL, "create", "t2", "--partitions", "1", "--ring-bytes",
		"12Q", NULL);
	is_intr(r.status, 2, "a bad size is a usage error");
	okr(is_error_msg(&r) && strstr(r.err, "--ring-bytes"),
	   "...and says which option");
	run_ctl(&r, NULL, "create", "t2", "--partitions", "1", "--ring-bytes",
		"100K", NULL);
	okr(r.status == 2 && is_error_msg(&r),
	   "a ring that is not a power of two is refused");
	run_ctl(&r, NULL, "create", "t2", "--partitions", "1", NULL);
	is_intr(r.status, 2, "missing --ring-bytes is a usage error");
	okr(is_error_msg(&r) && strstr(r.err, "--ring-bytes"), "...and says so");
	run_ctl(&r, NULL, "create", "--partitions", "1", "--ring-bytes", "64K",
		NULL);
	okr(r.status == 2 && is_error_msg(&r), "missing TOPIC is a usage error");
	run_ctl(&r, NULL, "create", "t2", "--partitions", "3x", "--ring-bytes",
		"64K", NULL);
	okr(r.status == 2 && is_error_msg(&r),
	   "a number with trailing text is refused");
	run_ctl(&r, NULL, "create", "t2", "--partitions", "0", "--ring-bytes",
		"64K", NULL);
	okr(r.status == 2 && is_error_msg(&r), "0 partitions is refused");
	run_ctl(&r, NULL, "create", "t1", "--partitions", "2", "--ring-bytes",
		"64K", NULL);
	is_intr(r.status, 1, "creating an existing topic fails with status 1");
	okr(!strncmp(r.err, "shmqctl: create topic t1: ", 26),
	   "...with 'shmqctl: <what failed>: <why>'");
	run_ctl_noenv(&r, "list", NULL);
	okr(r.status == 2 && strstr(r.err, "SHMQ_DIR"),
	   "no --dir and no SHMQ_DIR is a usage error");

	/* list. */
	run_ctl(&r, NULL, "list", NULL);
	is_intr(r.status, 0, "list exits 0");
	okr(!strcmp(r.out, "t1\n"), "list prints exactly the topic");
	run_ctl_noenv(&r, "--dir", data_dir, "list", NULL);
	okr(r.status == 0 && !strcmp(r.out, "t1\n"), "--dir works like SHMQ_DIR");

	/* produce, then consume what was produced. */
	run_ctl(&r, input, "produce", "t1", "--key", "k", NULL);
	is_intr(r.status, 0, "produce %d lines exits 0", NLINES);
	okr(r.out_len == 0 && r.err_len == 0, "produce prints nothing");
	run_ctl(&r, NULL, "consume", "t1", "--group", "g1", "--from",
		"earliest", "--count", "100", NULL);
	is_intr(r.status, 0, "consume --count %d exits 0", NLINES);
	okr(!strcmp(r.out, input), "it prints exactly the lines produced, in order");
	run_ctl(&r, NULL, "consume", "t1", "--group", "g1", "--from",
		"committed", "--timeout", "200", NULL);
	is_intr(r.status, 0, "consume from committed in the same group exits 0");
	is_intr((long long)r.out_len, 0,
	       "...and gets nothing: the first consume committed");
	run_ctl(&r, NULL, "consume", "t1", "--group", "g2", "--from",
		"earliest", "--timeout", "200", NULL);
	is_intr(r.status, 0, "consume in a new group exits after --timeout");
	okr(!strcmp(r.out, input), "a new group from earliest gets every line again");
	run_ctl(&r, NULL, "consume", "t1", "--group", "g3", "--from",
		"earliest", "--count", "1", "--print-offsets", NULL);
	consumed = -1;
	okr(r.status == 0 &&
		   sscanf(r.out, "%u\t%llu\t%n", &part, &off, &consumed) == 2 &&
		   consumed > 0 && !strcmp(r.out + consumed, "message 0 of 100\n"),
	   "--print-offsets prefixes PARTITION<tab>OFFSET<tab>");

	/* stat. */
	run_ctl(&r, NULL, "stat", "t1", NULL);
	is_intr(r.status, 0, "stat t1 exits 0");
	okr(strstr(r.out, "topic t1:") != NULL, "stat names the topic");
	is_intr(group_rows_lag0(r.out, "g1"), 2,
	       "stat shows g1 in both partitions with lag 0");
	is_intr(group_rows_lag0(r.out, "g2"), 2,
	       "stat shows g2 in both partitions with lag 0");
	run_ctl(&r, NULL, "stat", NULL);
	okr(r.status == 0 && strstr(r.out, "topic t1:"),
	   "stat without a topic shows every topic");

	/* Refusals of produce and consume. */
	run_ctl(&r, NULL, "consume", "t1", "--group", "g1", "--count", "abc",
		NULL);
	okr(r.status == 2 && is_error_msg(&r), "consume --count abc is refused");
	run_ctl(&r, NULL, "consume", "t1", "--count", "1", NULL);
	okr(r.status == 2 && strstr(r.err, "--group"),
	   "consume without --group is a usage error");
	run_ctl(&r, NULL, "consume", "t1", "--group", "g1", "--from", "soon",
		NULL);
	okr(r.status == 2 && is_error_msg(&r), "consume --from soon is refused");
	run_ctl(&r, "x\n", "produce", "nosuch", NULL);
	is_intr(r.status, 1, "produce to a missing topic fails with status 1");
	okr(!strncmp(r.err, "shmqctl: ", 9) && strstr(r.err, "nosuch"),
	   "...with a message naming it");
	run_ctl(&r, "x\n", "produce", "t1", "--partition", "5", NULL);
	okr(r.status == 1 && is_error_msg(&r),
	   "produce --partition beyond the topic fails");
	run_ctl(&r, "x\n", "produce", "t1", "--timeout", "-5", NULL);
	okr(r.status == 2 && is_error_msg(&r), "produce --timeout -5 is refused");
	run_ctl(&r, NULL, "stat", "t1", "t2", NULL);
	okr(r.status == 2 && is_error_msg(&r), "stat with two topics is refused");

	/* delete. */
	/* Time, group modes and the groups command. */
	{
		char future[32];

		snprintf(future, sizeof(future), "@%lld", (long long)time(NULL) + 3600);
		run_ctl(&r, NULL, "consume", "t1", "--group", "tf", "--from", future,
			"--timeout", "200", NULL);
		okr(r.status == 0 && r.out_len == 0, "consume --from a time in the future gets nothing");
		run_ctl(&r, NULL, "consume", "t1", "--group", "tp", "--from",
			"2001-01-01T00:00:00Z", "--timeout", "300", NULL);
		okr(r.status == 0 && r.out_len > 0 && !strncmp(r.out, input, r.out_len) &&
		    r.out_len == strlen(input),
		    "consume --from a time in the past gets every message, in order");
		run_ctl(&r, NULL, "consume", "t1", "--group", "tm", "--mode", "partitioned",
			"--from", "earliest", "--count", "1", NULL);
		is_intr(r.status, 0, "consume --mode partitioned exits 0");
		run_ctl(&r, NULL, "groups", "t1", NULL);
		okr(r.status == 0 && strstr(r.out, "group tm: partitioned") &&
		    strstr(r.out, "group tp: shared"),
		    "groups shows each group's mode");
		run_ctl(&r, NULL, "consume", "t1", "--group", "tm", "--mode", "shared",
			"--timeout", "10", NULL);
		okr(r.status == 1 && is_error_msg(&r), "joining a partitioned group as shared is refused");
		run_ctl(&r, NULL, "consume", "t1", "--group", "tx", "--from", "yesterday", NULL);
		okr(r.status == 2 && is_error_msg(&r), "--from with a word that is no time is a usage error");
	}
	/* --ack: each message acknowledged and committed once printed. */
	{
		const char *nl1 = strchr(input, '\n'), *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;

		run_ctl(&r, NULL, "consume", "t1", "--group", "ta", "--from", "earliest",
			"--ack", "--ack-timeout", "5000", "--count", "1", NULL);
		okr(r.status == 0 && nl1 && r.out_len == (size_t)(nl1 - input) + 1 &&
		    !strncmp(r.out, input, r.out_len),
		    "consume --ack --count 1 prints the first message");
		run_ctl(&r, NULL, "consume", "t1", "--group", "ta", "--ack", "--count", "1", NULL);
		okr(r.status == 0 && nl2 && r.out_len == (size_t)(nl2 - nl1) &&
		    !strncmp(r.out, nl1 + 1, r.out_len),
		    "the next consume --ack of the group goes on with the second");
		run_ctl(&r, NULL, "consume", "t1", "--group", "ta", "--ack-timeout", "10", NULL);
		okr(r.status == 2 && is_error_msg(&r), "--ack-timeout without --ack is a usage error");
		run_ctl(&r, NULL, "groups", "t1", NULL);
		okr(r.status == 0 && strstr(r.out, "group ta: shared") &&
		    strstr(r.out, "redelivered 0") && strstr(r.out, "dead-lettered 0"),
		    "groups shows a shared group's redelivery counters");
	}

	/* Untethered groups: lapped by a produce, and told how far. */
	{
		char *lines = malloc(3000 * 16), *nl, *last = NULL;
		const char *m;
		size_t len = 0;
		unsigned long long missed = 0;
		int i, got = 0;

		if (!lines)
			bail("malloc");
		for (i = 0; i < 3000; i++)
			len += (size_t)sprintf(lines + len, "line-%d\n", i);
		run_ctl(&r, NULL, "create", "t3", "--partitions", "1", "--ring-bytes",
			"64K", "--full", "block", NULL);
		is_intr(r.status, 0, "create t3 (blocks when full) exits 0");
		run_ctl(&r, NULL, "consume", "t3", "--group", "un", "--untethered",
			"--from", "earliest", "--timeout", "10", NULL);
		okr(r.status == 0, "consume --untethered creates an untethered group");
		run_ctl(&r, lines, "produce", "t3", "--timeout", "2000", NULL);
		okr(r.status == 0, "3000 lines (three rings) go past the untethered group");
		run_ctl(&r, NULL, "consume", "t3", "--group", "un", "--untethered",
			"--timeout", "300", NULL);
		for (m = r.err; (m = strstr(m, "missed ")); m += 7)
			missed += strtoull(m + 7, NULL, 10);
		for (nl = r.out; (nl = strchr(nl, '\n')); nl++)
			got++;
		if (r.out_len > 1) {
			r.out[r.out_len - 1] = '\0';
			last = strrchr(r.out, '\n');
			last = last ? last + 1 : r.out;
		}
		okr(r.status == 0 && missed > 0 && got + missed == 3000 && last &&
		    !strcmp(last, "line-2999"),
		    "consume --untethered prints what is left and says on stderr how many were missed (%d + %llu)",
		    got, missed);
		run_ctl(&r, NULL, "groups", "t3", NULL);
		okr(r.status == 0 && strstr(r.out, "group un: shared, untethered") &&
		    (m = strstr(r.out, "missed ")) && strtoull(m + 7, NULL, 10) == missed,
		    "groups shows the group untethered, with its missed count");
		run_ctl(&r, NULL, "delete", "t3", NULL);
		is_intr(r.status, 0, "delete t3 exits 0");
		free(lines);
	}

	run_ctl(&r, NULL, "delete", "t1", NULL);
	is_intr(r.status, 0, "delete t1 exits 0");
	run_ctl(&r, NULL, "list", NULL);
	okr(r.status == 0 && r.out_len == 0, "list no longer shows it");
	run_ctl(&r, NULL, "delete", "t1", NULL);
	is_intr(r.status, 1, "deleting it again fails with status 1");
	okr(is_error_msg(&r) && strstr(r.err, "t1"), "...with a message");
	run_ctl(&r, NULL, "stat", "t1", NULL);
	okr(r.status == 1 && is_error_msg(&r), "stat of a deleted topic fails");
	run_ctl(&r, NULL, "delete", NULL);
	okr(r.status == 2 && is_error_msg(&r), "delete without TOPIC is refused");
	run_ctl(&r, NULL, "list", "extra", NULL);
	okr(r.status == 2 && is_error_msg(&r), "list with an argument is refused");
	run_ctl(&r, NULL, "create", "bad/name", "--partitions", "1",
		"--ring-bytes", "64K", NULL);
	okr(r.status == 2 && is_error_msg(&r), "a bad topic name is refused");

	free(input);
	tu_shmqd_stop(shmqd, 0);
	tu_cleanup(data_dir);
	return tap_done();
}
