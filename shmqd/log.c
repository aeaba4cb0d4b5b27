/*
 * log.c - shmqd's log lines.
 *
 * Every line goes to stderr as "shmqd[pid]: message", so that whoever runs
 * the daemon (a terminal, systemd's journal, a test harness capturing the
 * output) can tell which instance said what: after a restart two pids may
 * appear in one log.  A line is formatted into one buffer and written with
 * one write(2), so concurrent writers to the same file (a second shmqd
 * refusing to start, say) never interleave within a line.
 *
 * --quiet silences the informational lines; errors are always written.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shmqd.h"

bool shmqd_quiet;

static void vlog(const char *fmt, va_list ap)
{
	char line[1024];
	int saved = errno;
	int n, m;

	n = snprintf(line, sizeof(line), "shmqd[%d]: ", (int)getpid());
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;	/* truncated: still end the line */
	line[n++] = '\n';
	/* A log that cannot be written has nowhere to report that. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		(void)0;
	errno = saved;
}

void shmqd_log(const char *fmt, ...)
{
	va_list ap;

	if (shmqd_quiet)
		return;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

void shmqd_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

const char *shmqd_liberr(int err, char *buf, size_t n)
{
	const char *detail = shmq_errdetail();

	if (detail && *detail)
		snprintf(buf, n, "%s (%s)", shmq_strerror(err), detail);
	else
		snprintf(buf, n, "%s", shmq_strerror(err));
	return buf;
}
