/*
 * topicfile.c - DIR/topics/NAME.topic, the durable record of a topic.
 *
 * The file is what survives a restart of shmqd or of the host: it names
 * the topic's id and geometry, from which shmqd recreates or adopts the
 * segment and clients find out which owner, mode and id to expect before
 * they attach.  It is text, one "key=value" a line, for example:
 *
 *   format=1
 *   id=5f0e3c2a9b7d4411
 *   partitions=4
 *   ring_bytes=1048576
 *   max_message=262144
 *   full_policy=block
 *   numa_node=-1
 *   mode=0600
 *   stall_timeout_ms=10000
 *   spill=overflow
 *   retain_bytes=0
 *   retain_ms=0
 *
 * Every key above is required but the last three (spill, retain_bytes,
 * retain_ms), which a file written before spilling existed lacks.  Reading is strict about their values
 * (exact digits, no spaces, no sign where none belongs, no overflow) and
 * ignores keys it does not know, so that a later version can add keys that
 * an older reader skips.  A later incompatible change bumps format.
 *
 * Writes are atomic: a temporary file in the same directory (O_EXCL, never
 * through a symbolic link), fsync, rename over the old file, fsync of the
 * directory.  A crash leaves the old file or the new one, never a mix; a
 * stale temporary starts with '.', which is never a topic name.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomics.h"

#include "shmq_int.h"

#define SHMQ_TOPIC_FORMAT 1
#define SHMQ_TOPIC_SUFFIX ".topic"
/* A topic file is a few hundred bytes; anything far larger is not one. */
#define SHMQ_TOPIC_FILE_MAX 4096

enum topic_key {
	K_FORMAT,
	K_ID,
	K_PARTITIONS,
	K_RING_BYTES,
	K_MAX_MESSAGE,
	K_FULL_POLICY,
	K_NUMA_NODE,
	K_MODE,
	K_STALL,
	K_REQUIRED,			/* keys from here on may be absent */
	K_SPILL = K_REQUIRED,
	K_RETAIN_BYTES,
	K_RETAIN_MS,
	K_COUNT
};

static const char *const key_names[K_COUNT] = {
	[K_FORMAT] = "format",
	[K_ID] = "id",
	[K_PARTITIONS] = "partitions",
	[K_RING_BYTES] = "ring_bytes",
	[K_MAX_MESSAGE] = "max_message",
	[K_FULL_POLICY] = "full_policy",
	[K_NUMA_NODE] = "numa_node",
	[K_MODE] = "mode",
	[K_STALL] = "stall_timeout_ms",
	[K_SPILL] = "spill",
	[K_RETAIN_BYTES] = "retain_bytes",
	[K_RETAIN_MS] = "retain_ms",
};

/*
 * Parse all of s (length n) as an unsigned number in base 10, 16 or 8.
 * Strict: at least one digit, only digits, no overflow past max.
 */
static int parse_u64(const char *s, size_t n, unsigned base, uint64_t max,
		     uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	/* 16 hex digits or 20 decimal ones at most; longer is malformed. */
	if (n == 0 || n > 22)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
		if (d >= base)
			return -EINVAL;
		if (v > (max - d) / base)
			return -EINVAL;
		v = v * base + d;
	}
	*out = v;
	return 0;
}

static int parse_value(struct shmq_topic_params *p, enum topic_key k,
		       const char *v, size_t n)
{
	uint64_t u = 0;
	int r = 0;

	switch (k) {
	case K_FORMAT:
		r = parse_u64(v, n, 10, UINT32_MAX, &u);
		if (!r && u != SHMQ_TOPIC_FORMAT)
			r = -EINVAL;
		break;
	case K_ID:
		r = parse_u64(v, n, 16, UINT64_MAX, &u);
		p->topic_id = u;
		break;
	case K_PARTITIONS:
		r = parse_u64(v, n, 10, UINT32_MAX, &u);
		p->partitions = (uint32_t)u;
		break;
	case K_RING_BYTES:
		r = parse_u64(v, n, 10, UINT64_MAX, &u);
		p->ring_bytes = u;
		break;
	case K_MAX_MESSAGE:
		r = parse_u64(v, n, 10, UINT32_MAX, &u);
		p->max_message = (uint32_t)u;
		break;
	case K_FULL_POLICY:
		if (n == 5 && !memcmp(v, "block", 5))
			p->full_policy = SHMQ_FULL_BLOCK;
		else if (n == 4 && !memcmp(v, "fail", 4))
			p->full_policy = SHMQ_FULL_FAIL;
		else if (n == 5 && !memcmp(v, "spill", 5))
			p->full_policy = SHMQ_FULL_SPILL;
		else
			r = -EINVAL;
		break;
	case K_SPILL:
		if (n == 3 && !memcmp(v, "off", 3))
			p->spill_mode = SHMQ_SPILL_OFF;
		else if (n == 8 && !memcmp(v, "overflow", 8))
			p->spill_mode = SHMQ_SPILL_OVERFLOW;
		else if (n == 6 && !memcmp(v, "always", 6))
			p->spill_mode = SHMQ_SPILL_ALWAYS;
		else
			r = -EINVAL;
		break;
	case K_RETAIN_BYTES:
		r = parse_u64(v, n, 10, UINT64_MAX, &u);
		p->retain_bytes = u;
		break;
	case K_RETAIN_MS:
		r = parse_u64(v, n, 10, UINT64_MAX, &u);
		p->retain_ms = u;
		break;
	case K_NUMA_NODE:
		if (n == 2 && !memcmp(v, "-1", 2)) {
			p->numa_node = -1;
			break;
		}
		r = parse_u64(v, n, 10, INT32_MAX, &u);
		p->numa_node = (int32_t)u;
		break;
	case K_MODE:
		r = parse_u64(v, n, 8, 07777, &u);
		p->mode = (uint32_t)u;
		break;
	case K_STALL:
		r = parse_u64(v, n, 10, UINT32_MAX, &u);
		p->stall_timeout_ms = (uint32_t)u;
		break;
	case K_COUNT:
		break;
	}
	return r;
}

static int parse(const char *path, const char *buf, size_t len,
		 struct shmq_topic_params *p)
{
	unsigned seen = 0;
	size_t line = 0;
	const char *s = buf, *end = buf + len;
	int k;

	memset(p, 0, sizeof(*p));
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *eol = nl ? nl : end;
		const char *eq = memchr(s, '=', (size_t)(eol - s));
		size_t klen;

		line++;
		if (eol == s || *s == '#') {
			/* Blank lines and comments carry nothing. */
			s = eol + 1;
			continue;
		}
		if (!eq || eq == s)
			return shmq__fail(-EINVAL, "%s:%zu: not key=value", path, line);
		klen = (size_t)(eq - s);
		for (k = 0; k < K_COUNT; k++)
			if (strlen(key_names[k]) == klen && !memcmp(s, key_names[k], klen))
				break;
		if (k < K_COUNT) {
			if (seen & (1u << k))
				return shmq__fail(-EINVAL, "%s:%zu: duplicate key %s",
						  path, line, key_names[k]);
			seen |= 1u << k;
			if (parse_value(p, (enum topic_key)k, eq + 1,
					(size_t)(eol - eq - 1)) < 0)
				return shmq__fail(-EINVAL, "%s:%zu: bad value for %s: %.*s",
						  path, line, key_names[k],
						  (int)(eol - eq - 1 > 64 ? 64 : eol - eq - 1),
						  eq + 1);
		}
		/* Unknown keys: a later version's, ignored on purpose. */
		s = eol + 1;
	}
	for (k = 0; k < K_REQUIRED; k++)
		if (!(seen & (1u << k)))
			return shmq__fail(-EINVAL, "%s: missing key %s", path,
					  key_names[k]);
	return 0;
}

/* Open DIR/topics as a directory, never through a symbolic link. */
static int open_topics_dir(const char *dir, bool create, char *path, size_t n)
{
	int fd;

	if (snprintf(path, n, "%s/%s", dir, SHMQ_TOPICS_DIR) >= (int)n)
		return shmq__fail(-ENAMETOOLONG, "%s: path too long", dir);
	if (create) {
		if (mkdir(path, 0700) == 0) {
			/* Make the new directory entry itself durable. */
			int pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

			if (pfd >= 0) {
				fsync(pfd);
				close(pfd);
			}
		} else if (errno != EEXIST) {
			return shmq__fail(-errno, "%s: mkdir: %s", path, strerror(errno));
		}
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return shmq__fail(-errno, "%s: %s", path, strerror(errno));
	return fd;
}

int shmq__topic_file_read(const char *dir, const char *name,
			  struct shmq_topic_params *p, uid_t *owner)
{
	char path[4096], fname[SHMQ_NAME_MAX + sizeof(SHMQ_TOPIC_SUFFIX)];
	char buf[SHMQ_TOPIC_FILE_MAX + 1];
	struct shmq_topic_params tp;
	struct stat st;
	size_t len = 0;
	int dfd, fd, r;

	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "invalid topic name");
	dfd = open_topics_dir(dir, false, path, sizeof(path));
	if (dfd < 0)
		return dfd;
	snprintf(fname, sizeof(fname), "%s%s", name, SHMQ_TOPIC_SUFFIX);
	fd = openat(dfd, fname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	r = -errno;
	close(dfd);
	if (fd < 0) {
		if (r == -ENOENT)
			return shmq__fail(r, "topic %s does not exist", name);
		return shmq__fail(r, "%s/%s: %s", path, fname, strerror(-r));
	}
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", fname);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return shmq__fail(-EINVAL, "%s: not a regular file", path);
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			close(fd);
			return shmq__fail(r, "%s: read: %s", path, strerror(-r));
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf)) {
			close(fd);
			return shmq__fail(-EINVAL, "%s: larger than %d bytes", path,
					  SHMQ_TOPIC_FILE_MAX);
		}
	}
	close(fd);
	if (memchr(buf, '\0', len))
		return shmq__fail(-EINVAL, "%s: contains a NUL byte", path);

	r = parse(path, buf, len, &tp);
	if (r < 0)
		return r;
	/* Zeros would be replaced by defaults; a written file never has them. */
	if (!tp.partitions || !tp.ring_bytes || !tp.max_message || !tp.mode ||
	    !tp.stall_timeout_ms)
		return shmq__fail(-EINVAL, "%s: a geometry value is zero", path);
	r = shmq__topic_params_check(&tp);
	if (r < 0) {
		/* The detail is the buffer we format into: copy it first. */
		char why[256];

		snprintf(why, sizeof(why), "%s", shmq_errdetail());
		return shmq__fail(r, "%s: %s", path, why);
	}
	*p = tp;
	if (owner)
		*owner = st.st_uid;
	return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int shmq__topic_file_write(const char *dir, const char *name,
			   const struct shmq_topic_params *params)
{
	/* Distinguishes temporaries of concurrent writers in one process. */
	static uint32_t tmp_seq;
	char path[4096], fname[SHMQ_NAME_MAX + sizeof(SHMQ_TOPIC_SUFFIX)];
	char tmp[SHMQ_NAME_MAX + 64], buf[1024];
	struct shmq_topic_params p = *params;
	const char *step;
	int dfd, fd = -1, r, len, tries;

	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "invalid topic name");
	r = shmq__topic_params_check(&p);
	if (r < 0)
		return r;
	len = snprintf(buf, sizeof(buf),
		       "format=%d\nid=%016llx\npartitions=%u\nring_bytes=%llu\n"
		       "max_message=%u\nfull_policy=%s\nnuma_node=%d\nmode=%04o\n"
		       "stall_timeout_ms=%u\nspill=%s\nretain_bytes=%llu\n"
		       "retain_ms=%llu\n",
		       SHMQ_TOPIC_FORMAT, (unsigned long long)p.topic_id,
		       p.partitions, (unsigned long long)p.ring_bytes,
		       p.max_message,
		       p.full_policy == SHMQ_FULL_FAIL ? "fail" :
		       p.full_policy == SHMQ_FULL_SPILL ? "spill" : "block",
		       p.numa_node, p.mode, p.stall_timeout_ms,
		       p.spill_mode == SHMQ_SPILL_ALWAYS ? "always" :
		       p.spill_mode == SHMQ_SPILL_OVERFLOW ? "overflow" : "off",
		       (unsigned long long)p.retain_bytes,
		       (unsigned long long)p.retain_ms);

	dfd = open_topics_dir(dir, true, path, sizeof(path));
	if (dfd < 0)
		return dfd;
	snprintf(fname, sizeof(fname), "%s%s", name, SHMQ_TOPIC_SUFFIX);

	/*
	 * A leftover temporary of a crashed writer with our pid may exist;
	 * it is ours to remove, and a fresh sequence number is tried.
	 */
	for (tries = 0;; tries++) {
		snprintf(tmp, sizeof(tmp), ".%s.%ld.%u", fname, (long)getpid(),
			 ck_pr_faa_32(&tmp_seq, 1));
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0600);
		if (fd >= 0 || errno != EEXIST || tries == 3)
			break;
		unlinkat(dfd, tmp, 0);
	}
	if (fd < 0) {
		r = -errno;
		close(dfd);
		return shmq__fail(r, "%s/%s: create: %s", path, tmp, strerror(-r));
	}

	/*
	 * Readable by whoever may use the topic, so that clients can look it
	 * up; fchmod because the umask must not decide.
	 */
	step = "fchmod";
	if (fchmod(fd, (mode_t)((p.mode & 0444) | 0600)) < 0)
		goto fail_errno;
	step = "write";
	r = write_all(fd, buf, (size_t)len);
	if (r < 0) {
		errno = -r;
		goto fail_errno;
	}
	step = "fsync";
	if (fsync(fd) < 0)
		goto fail_errno;
	step = "close";
	r = close(fd);
	fd = -1;
	if (r < 0)
		goto fail_errno;
	step = "rename";
	if (renameat(dfd, tmp, dfd, fname) < 0)
		goto fail_errno;
	step = "fsync of the directory";
	if (fsync(dfd) < 0) {
		/* The rename happened; only its durability is in doubt. */
		r = -errno;
		close(dfd);
		return shmq__fail(r, "%s: %s: %s", path, step, strerror(-r));
	}
	close(dfd);
	return 0;

fail_errno:
	r = -errno;
	shmq__fail(r, "%s/%s: %s: %s", path, tmp, step, strerror(-r));
	if (fd >= 0)
		close(fd);
	unlinkat(dfd, tmp, 0);
	close(dfd);
	return r;
}

int shmq__topic_file_remove(const char *dir, const char *name)
{
	char path[4096], fname[SHMQ_NAME_MAX + sizeof(SHMQ_TOPIC_SUFFIX)];
	int dfd, r;

	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "invalid topic name");
	dfd = open_topics_dir(dir, false, path, sizeof(path));
	if (dfd < 0)
		return dfd;
	snprintf(fname, sizeof(fname), "%s%s", name, SHMQ_TOPIC_SUFFIX);
	if (unlinkat(dfd, fname, 0) < 0) {
		r = -errno;
		close(dfd);
		if (r == -ENOENT)
			return shmq__fail(r, "topic %s does not exist", name);
		return shmq__fail(r, "%s/%s: unlink: %s", path, fname, strerror(-r));
	}
	r = fsync(dfd) < 0 ? -errno : 0;
	close(dfd);
	if (r < 0)
		return shmq__fail(r, "%s: fsync: %s", path, strerror(-r));
	return 0;
}
