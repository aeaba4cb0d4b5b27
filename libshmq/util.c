/*
 * util.c - errors, detail strings, clocks, hashing and process identity.
 *
 * Nothing here touches shared memory.  The helpers are small and cold,
 * except shmq__fnv1a64 and shmq_key_partition, which the send path uses to
 * pick a partition from a key.
 *
 * Process identity: a pid alone does not name a process for long, because
 * the kernel recycles pids.  A slot in shared memory therefore records the
 * pid together with the process's start time in clock ticks since boot
 * (/proc/PID/stat field 22), which a recycled pid cannot repeat.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atomics.h"

#include "shmq_int.h"

#define SHMQ_FNV_PRIME 0x100000001b3ull

void shmq__copy_pieces(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	while (n) {
		size_t k = n < SHMQ_COPY_PIECE ? n : SHMQ_COPY_PIECE;

		memcpy(d, s, k);
		d += k;
		s += k;
		n -= k;
	}
}

/* Large enough for an errno text and for "unknown error -NNNNNNNNNN". */
#define SHMQ_ERRBUF 128
#define SHMQ_DETAIL 256

static __thread char detail[SHMQ_DETAIL];
static __thread char errbuf[SHMQ_ERRBUF];

/* Indexed by SHMQ_EBASE - code, so entry 1 is SHMQ_EMAGIC. */
static const char *const shmq_errors[] = {
	[SHMQ_EBASE - SHMQ_EMAGIC] = "not a shmq segment (bad magic)",
	[SHMQ_EBASE - SHMQ_EVERSION] = "segment has another layout version",
	[SHMQ_EBASE - SHMQ_ELAYOUT] = "segment layout signature differs (other build or ABI)",
	[SHMQ_EBASE - SHMQ_ESIZE] = "segment sizes are inconsistent",
	[SHMQ_EBASE - SHMQ_ENOTREADY] = "segment is not initialised yet",
	[SHMQ_EBASE - SHMQ_ECORRUPT] = "a value in shared memory or a spill file failed a check",
	[SHMQ_EBASE - SHMQ_EREVOKED] = "claim was revoked after stalling",
	[SHMQ_EBASE - SHMQ_ETOOBIG] = "message larger than the topic's maximum",
	[SHMQ_EBASE - SHMQ_EGONE] = "offset is no longer retained",
	[SHMQ_EBASE - SHMQ_EDELETED] = "topic was deleted",
	[SHMQ_EBASE - SHMQ_ENODAEMON] = "shmqd is not running for this directory",
	[SHMQ_EBASE - SHMQ_EFOREIGN] = "segment owner or mode is not acceptable",
	[SHMQ_EBASE - SHMQ_EPROTO] = "control protocol mismatch with shmqd",
	[SHMQ_EBASE - SHMQ_ELAPPED] = "untethered group was lapped: messages were missed",
	[SHMQ_EBASE - SHMQ_EDUPLICATE] = "sequence already stored for this producer identity",
};
_Static_assert(sizeof(shmq_errors) / sizeof(shmq_errors[0]) ==
		       SHMQ_EBASE - SHMQ_ELAST + 1,
	       "every SHMQ_E* code has a string");

/*
 * strerror_r comes in a GNU flavour (returns the string) and an XSI flavour
 * (fills buf, returns 0); which one we get depends on the C library.  Both
 * adapters exist so that the _Generic below compiles with either.
 */
static __attribute__((unused)) const char *errstr_gnu(char *r, char *buf)
{
	(void)buf;
	return r;
}

static __attribute__((unused)) const char *errstr_xsi(int r, char *buf)
{
	return r == 0 ? buf : NULL;
}

#define SHMQ_STRERROR_R(e, buf, n)                                             \
	_Generic(strerror_r((e), (buf), (n)),                                  \
		char *: errstr_gnu,                                            \
		default: errstr_xsi)(strerror_r((e), (buf), (n)), (buf))

SHMQ_API const char *shmq_strerror(int err)
{
	const char *s;

	/* Non-negative values are successes (counts, partition numbers). */
	if (err >= 0)
		return "success";
	if (err <= SHMQ_EMAGIC && err >= SHMQ_ELAST)
		return shmq_errors[SHMQ_EBASE - err];
	if (err <= SHMQ_EBASE) {
		snprintf(errbuf, sizeof(errbuf), "unknown shmq error %d", err);
		return errbuf;
	}
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
	/* A static string, so it stays valid for ever, as the header promises. */
	s = strerrordesc_np(-err);
	if (s)
		return s;
#endif
	s = SHMQ_STRERROR_R(-err, errbuf, sizeof(errbuf));
	if (s && *s)
		return s;
	snprintf(errbuf, sizeof(errbuf), "unknown error %d", err);
	return errbuf;
}

SHMQ_API const char *shmq_errdetail(void)
{
	return detail;
}

int shmq__fail(int err, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	/* Callers often report errno after us; formatting must not change it. */
	errno = saved;
	return err;
}

void shmq__clear_detail(void)
{
	detail[0] = '\0';
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	/* Cannot fail for these clocks with a valid pointer. */
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t shmq__now_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

uint64_t shmq__mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

uint64_t shmq__fnv1a64(const void *p, size_t n, uint64_t h)
{
	const uint8_t *b = p;

	while (n--) {
		h ^= *b++;
		h *= SHMQ_FNV_PRIME;
	}
	return h;
}

SHMQ_API uint32_t shmq_key_partition(const void *key, size_t key_len,
				     uint32_t partitions)
{
	/* A contract violation, but the library never divides by zero. */
	if (partitions == 0)
		return 0;
	return (uint32_t)(shmq__fnv1a64(key, key_len, SHMQ_FNV_BASIS) % partitions);
}

/*
 * Read /proc/PID/stat and return its state letter and start time.  Returns
 * 0, or -errno from open/read (-ENOENT: no such process), or -EINVAL when
 * the line cannot be parsed.
 */
static int proc_stat(pid_t pid, char *state, uint64_t *ticks)
{
	/*
	 * The line holds ~52 numeric fields of at most 20 digits and a comm of
	 * at most 16 bytes; 2 KiB is ample and a longer line is malformed.
	 */
	char path[32], buf[2048];
	size_t len = 0;
	const char *p, *end;
	int fd, field;

	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;

			close(fd);
			return e;
		}
		if (r == 0 || (len += (size_t)r) == sizeof(buf) - 1)
			break;
	}
	close(fd);
	buf[len] = '\0';

	/*
	 * Field 2, the command name, is in parentheses and may itself hold
	 * spaces and ')', so the fields after it start at the LAST ')'.
	 */
	end = memrchr(buf, ')', len);
	if (!end || end[1] != ' ' || end[2] == '\0' || end[3] != ' ')
		return -EINVAL;
	*state = end[2];

	/* end + 3 is the space before field 4; walk to field 22. */
	p = end + 3;
	for (field = 4; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EINVAL;
	}
	p++;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	{
		char *stop;
		unsigned long long v;

		errno = 0;
		v = strtoull(p, &stop, 10);
		if (errno || (*stop != ' ' && *stop != '\n' && *stop != '\0'))
			return -EINVAL;
		*ticks = v;
	}
	return 0;
}

uint64_t shmq__proc_start_ticks(pid_t pid)
{
	uint64_t ticks;
	char state;

	if (proc_stat(pid, &state, &ticks) < 0)
		return 0;
	return ticks;
}

bool shmq__owner_alive(const struct shmq_owner *owner)
{
	uint64_t ticks;
	char state;
	pid_t pid;
	int r;

	if (!owner || owner->pid == 0 || owner->pid > (uint32_t)INT32_MAX)
		return false;
	pid = (pid_t)owner->pid;
	r = proc_stat(pid, &state, &ticks);
	if (r == -ENOENT || r == -ESRCH) {
		/*
		 * No /proc entry normally means no process.  But /proc mounted
		 * with hidepid=, or not mounted at all, hides live processes;
		 * kill(pid, 0) still sees them (EPERM for another user's).
		 * Reaping a live process would corrupt its partition, while
		 * missing a dead one only delays recovery, so an invisible but
		 * existing pid counts as alive.
		 */
		if (kill(pid, 0) == 0 || errno == EPERM)
			return true;
		return false;
	}
	if (r < 0) {
		/* Cannot tell (EMFILE, EACCES, ...): assume alive, as above. */
		return true;
	}
	/* 'x' is how kernels before 3.13 spelled 'X' (dead). */
	if (state == 'Z' || state == 'X' || state == 'x')
		return false;
	/* 0: the slot's owner has not recorded its start time yet. */
	return owner->start_ticks == 0 || ticks == owner->start_ticks;
}

/*
 * Process-wide, computed once and forgotten in the child after fork()
 * (pthread_atfork), so that hot paths (the tail lock) learn their pid
 * without a system call.  Threads that race to compute it store the same
 * values; start_ticks is stored before pid, and pid is what readers test.
 */
static struct shmq_owner self_cache;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_forget(void)
{
	self_cache.pid = 0;
	self_cache.start_ticks = 0;
}

static void self_register(void)
{
	pthread_atfork(NULL, NULL, self_forget);
}

void shmq__owner_self(struct shmq_owner *out)
{
	uint32_t pid;

	pthread_once(&self_once, self_register);
	pid = ck_pr_load_32(&self_cache.pid);
	if (!pid) {
		pid = (uint32_t)getpid();
		ck_pr_store_64(&self_cache.start_ticks, shmq__proc_start_ticks((pid_t)pid));
		ck_pr_fence_store();
		ck_pr_store_32(&self_cache.pid, pid);
	}
	out->pid = pid;
	out->reserved = 0;
	ck_pr_fence_load();
	out->start_ticks = ck_pr_load_64(&self_cache.start_ticks);
}

bool shmq__name_valid(const char *name)
{
	size_t i;

	if (!name || name[0] == '\0' || name[0] == '.')
		return false;
	for (i = 0; name[i]; i++) {
		char c = name[i];

		if (i >= SHMQ_NAME_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}
