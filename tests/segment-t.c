/*
 * segment-t.c - topic segments, topic files and the helpers under them
 * (errors, the partition hash, process identity, futex wait and wake).
 *
 * Every segment is named from a private namespace (a fresh directory) and
 * the test's pid, and is unlinked at the end; the last check proves that
 * none is left behind.  Bad headers are made by corrupting a good segment
 * through its creator's mapping, attaching, and restoring the header.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ck_pr.h>

#include "shmq_int.h"
#include "tap.h"

/* One check per SHMQ_E* code in test_strerror, and 172 others. */
#define NTESTS (172 + (SHMQ_EBASE - SHMQ_ELAST))

#define MAX_SEGS 32

static char tmpdir[256];
static uint64_t ns;
static char segs[MAX_SEGS][SHMQ_SEGNAME_MAX];
static int nsegs;
static int topic_seq;

/* A fresh topic name and its segment name, remembered for the cleanup. */
static const char *new_topic(char *topic, size_t n)
{
	if (nsegs == MAX_SEGS)
		bail("too many segments");
	snprintf(topic, n, "t-%d-%d", (int)getpid(), topic_seq++);
	shmq__segment_name(ns, topic, segs[nsegs]);
	return segs[nsegs++];
}

static struct shmq_topic_params small_params(void)
{
	struct shmq_topic_params p = {
		.partitions = 3,
		.ring_bytes = SHMQ_RING_MIN,
		.max_message = 1000,
		.full_policy = SHMQ_FULL_FAIL,
		.numa_node = -1,
		.mode = 0600,
		.stall_timeout_ms = 2500,
		.topic_id = 0x1122334455667788ull,
	};
	return p;
}

/* The reference FNV-1a, written apart from util.c's on purpose. */
static uint64_t ref_fnv(const void *key, size_t n)
{
	const unsigned char *b = key;
	uint64_t h = 14695981039346656037ull; /* 0xcbf29ce484222325 */
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ull; /* 0x100000001b3 */
	}
	return h;
}

/* Field by field: the structs have padding that memcmp would compare. */
static bool same_geo(const struct shmq_geometry *a, const struct shmq_geometry *b)
{
	return a->partitions == b->partitions && a->ring_bytes == b->ring_bytes &&
	       a->max_message == b->max_message && a->full_policy == b->full_policy &&
	       a->numa_node == b->numa_node && a->stall_timeout_ms == b->stall_timeout_ms &&
	       a->topic_id == b->topic_id && a->total_bytes == b->total_bytes &&
	       a->rings_off == b->rings_off;
}

static bool same_params(const struct shmq_topic_params *a, const struct shmq_topic_params *b)
{
	return a->partitions == b->partitions && a->ring_bytes == b->ring_bytes &&
	       a->max_message == b->max_message && a->full_policy == b->full_policy &&
	       a->numa_node == b->numa_node && a->mode == b->mode &&
	       a->stall_timeout_ms == b->stall_timeout_ms && a->topic_id == b->topic_id;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int wait_status(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ------------------------------------------------------------------------ */

static void test_strerror(void)
{
	const char *seen[SHMQ_EBASE - SHMQ_ELAST + 1];
	const char *s;
	int e, i;

	s = shmq_strerror(0);
	ok(s && *s, "strerror(0) is \"%s\"", s);
	for (e = SHMQ_EBASE - 1; e >= SHMQ_ELAST; e--) {
		int distinct = 1;

		s = shmq_strerror(e);
		for (i = 0; i < SHMQ_EBASE - 1 - e; i++)
			if (!strcmp(seen[i], s))
				distinct = 0;
		seen[SHMQ_EBASE - 1 - e] = s;
		ok(s && *s && strncmp(s, "unknown", 7) && distinct,
		   "strerror(%d) is distinct: \"%s\"", e, s);
	}
	ok(!strcmp(shmq_strerror(-ENOENT), strerror(ENOENT)),
	   "strerror(-ENOENT) is the system's text");
	s = shmq_strerror(-9999);
	ok(s && *s && shmq_strerror(SHMQ_EBASE)[0],
	   "unknown codes still get a string: \"%s\"", s);
}

static void test_hash(void)
{
	static const struct {
		const char *key;
		size_t len;
		uint32_t p16, p7, p256; /* documented placements */
	} keys[] = {
		{ "", 0, 5, 2, 37 },
		{ "a", 1, 12, 5, 140 },
		{ "foobar", 6, 8, 6, 232 },
		{ "user-42", 7, 11, 2, 203 },
		{ "order:1000", 10, 6, 4, 182 },
		{ "\x00\x01\x02\xff", 4, 5, 2, 85 },
	};
	size_t i;

	/* Published FNV-1a 64 test vectors. */
	is_u64(shmq__fnv1a64("", 0, SHMQ_FNV_BASIS), 0xcbf29ce484222325ull, "fnv1a64(\"\")");
	is_u64(shmq__fnv1a64("a", 1, SHMQ_FNV_BASIS), 0xaf63dc4c8601ec8cull, "fnv1a64(\"a\")");
	is_u64(shmq__fnv1a64("foobar", 6, SHMQ_FNV_BASIS), 0x85944171f73967e8ull,
	       "fnv1a64(\"foobar\")");

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		uint64_t h = ref_fnv(keys[i].key, keys[i].len);
		uint32_t n;
		int good = 1;

		for (n = 1; n <= SHMQ_MAX_PARTITIONS; n++)
			if (shmq_key_partition(keys[i].key, keys[i].len, n) != h % n)
				good = 0;
		good = good && shmq_key_partition(keys[i].key, keys[i].len, 16) == keys[i].p16 &&
		       shmq_key_partition(keys[i].key, keys[i].len, 7) == keys[i].p7 &&
		       shmq_key_partition(keys[i].key, keys[i].len, 256) == keys[i].p256;
		ok(good, "key %zu (%zu bytes) lands on documented partitions", i, keys[i].len);
	}
	is_int(shmq_key_partition("a", 1, 0), 0, "0 partitions does not divide by zero");
	is_int(shmq_key_partition(NULL, 0, 16), 5, "NULL empty key hashes like \"\"");
}

static void test_names(void)
{
	static const char *good[] = { "a", "orders", "A.b_c-9", "x..y" };
	static const char *bad[] = { "", ".hidden", "a/b", "a b", "caf\xc3\xa9", "a:b" };
	char longest[SHMQ_NAME_MAX + 2];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ok(shmq__name_valid(good[i]), "name \"%s\" is valid", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(!shmq__name_valid(bad[i]), "name \"%s\" is refused", bad[i]);
	ok(!shmq__name_valid(NULL), "NULL name is refused");
	memset(longest, 'n', sizeof(longest));
	longest[SHMQ_NAME_MAX] = '\0';
	ok(shmq__name_valid(longest), "a %d-byte name is valid", SHMQ_NAME_MAX);
	longest[SHMQ_NAME_MAX] = 'n';
	longest[SHMQ_NAME_MAX + 1] = '\0';
	ok(!shmq__name_valid(longest), "a %d-byte name is refused", SHMQ_NAME_MAX + 1);
}

static void test_owner(void)
{
	struct shmq_owner self, o;
	int pfd[2];
	pid_t pid;
	char c;

	shmq__owner_self(&self);
	is_int(self.pid, getpid(), "owner_self has our pid");
	ok(self.start_ticks != 0, "owner_self has a start time");
	ok(shmq__owner_alive(&self), "we are alive");
	o = self;
	o.start_ticks++;
	ok(!shmq__owner_alive(&o), "same pid, other start time: a recycled pid, not us");
	o.pid = 0;
	ok(!shmq__owner_alive(&o), "pid 0 is no owner");

	/* After fork the cached identity must follow the new pid. */
	pid = fork();
	if (pid == 0) {
		struct shmq_owner kid;

		shmq__owner_self(&kid);
		_exit(kid.pid == (uint32_t)getpid() && kid.start_ticks != 0 &&
		      shmq__owner_alive(&kid) ? 0 : 1);
	}
	is_int(wait_status(pid), 0, "a forked child computes its own identity");

	/* A zombie is dead, and so is a reaped child. */
	if (pipe(pfd) < 0)
		bail("pipe: %s", strerror(errno));
	pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		if (write(pfd[1], "x", 1) != 1)
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	o.pid = (uint32_t)pid;
	o.start_ticks = 0;
	if (read(pfd[0], &c, 1) == 1)
		o.start_ticks = shmq__proc_start_ticks(pid);
	close(pfd[0]);
	{
		/* Wait for the zombie without reaping it. */
		siginfo_t si;

		waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT);
	}
	ok(o.start_ticks != 0 && !shmq__owner_alive(&o), "a zombie is not alive");
	wait_status(pid);
	ok(!shmq__owner_alive(&o), "a reaped child is not alive");

	/* A command name with spaces and parentheses must not fool the parser. */
	pid = fork();
	if (pid == 0) {
		uint64_t before = shmq__proc_start_ticks(getpid()), after;

		prctl(PR_SET_NAME, "x) y ) (z", 0, 0, 0);
		after = shmq__proc_start_ticks(getpid());
		_exit(before != 0 && before == after ? 0 : 1);
	}
	is_int(wait_status(pid), 0, "start time parsed past a comm of \"x) y ) (z\"");
}

static void test_futex(void)
{
	uint32_t *word;
	uint64_t t0, dt;
	pid_t pid;

	word = mmap(NULL, SHMQ_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (word == MAP_FAILED)
		bail("mmap: %s", strerror(errno));
	*word = 7;
	t0 = mono_ms();
	shmq__futex_wait(word, 8, 5000000000ull);
	ok(mono_ms() - t0 < 1000, "futex_wait returns at once when the word differs");
	t0 = mono_ms();
	shmq__futex_wait(word, 7, 30000000ull);
	dt = mono_ms() - t0;
	ok(dt >= 25 && dt < 2000, "futex_wait times out after ~30 ms (%llu ms)",
	   (unsigned long long)dt);

	/* Wake across processes: the futex must not be process-private. */
	pid = fork();
	if (pid == 0) {
		uint64_t start = mono_ms();

		while (ck_pr_load_32(word) == 7 && mono_ms() - start < 10000)
			shmq__futex_wait(word, 7, UINT64_MAX);
		_exit(ck_pr_load_32(word) == 8 ? 0 : 1);
	}
	usleep(50000);
	ck_pr_store_32(word, 8);
	shmq__futex_wake_all(word);
	is_int(wait_status(pid), 0, "a sleeper in another process is woken");
	munmap(word, SHMQ_PAGE);
}

/* ------------------------------------------------------------------------ */

static void test_params(void)
{
	struct shmq_topic_params p, z;
	static const struct {
		const char *what;
		struct shmq_topic_params p;
	} bad[] = {
		{ "partitions > max", { .partitions = SHMQ_MAX_PARTITIONS + 1 } },
		{ "ring_bytes not a power of two", { .ring_bytes = 3 * SHMQ_RING_MIN } },
		{ "ring_bytes below minimum", { .ring_bytes = SHMQ_RING_MIN / 2 } },
		{ "ring_bytes above maximum", { .ring_bytes = SHMQ_RING_MAX * 2 } },
		{ "max_message > ring/2", { .ring_bytes = SHMQ_RING_MIN,
					    .max_message = SHMQ_RING_MIN / 2 + 1 } },
		{ "mode 0777", { .mode = 0777 } },
		{ "mode 01600", { .mode = 01600 } },
		{ "mode 0466 (owner cannot write)", { .mode = 0466 } },
		{ "full_policy 4", { .full_policy = 4 } },
		{ "spill 4", { .spill_mode = 4 } },
		{ "full_policy spill with spill off", { .full_policy = SHMQ_FULL_SPILL, .spill_mode = SHMQ_SPILL_OFF } },
		{ "numa_node -2", { .numa_node = -2 } },
	};
	size_t i;

	memset(&z, 0, sizeof(z));
	p = z;
	is_int(shmq__topic_params_check(&p), 0, "all-zero params take the defaults");
	is_int(p.partitions, 1, "default partitions");
	is_u64(p.ring_bytes, 1u << 20, "default ring_bytes");
	is_int(p.max_message, (1u << 20) / 4, "default max_message");
	is_int(p.mode, 0600, "default mode");
	is_int(p.stall_timeout_ms, 10000, "default stall timeout");
	is_int(p.full_policy, SHMQ_FULL_SPILL, "default full policy: spill");
	is_int(p.spill_mode, SHMQ_SPILL_OVERFLOW, "default spill mode with it: overflow");

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;

		p = bad[i].p;
		shmq__clear_detail();
		r = shmq__topic_params_check(&p);
		ok(r == -EINVAL && shmq_errdetail()[0], "params: %s -> -EINVAL (%s)",
		   bad[i].what, shmq_errdetail());
	}
	p = z;
	p.ring_bytes = SHMQ_RING_MIN;
	p.max_message = SHMQ_MAX_MESSAGE_LIMIT(SHMQ_RING_MIN);
	is_int(shmq__topic_params_check(&p), 0, "max_message == ring/2 - header is accepted");
	p = z;
	p.ring_bytes = SHMQ_RING_MIN;
	p.max_message = SHMQ_MAX_MESSAGE_LIMIT(SHMQ_RING_MIN) + 1;
	is_int(shmq__topic_params_check(&p), -EINVAL,
	       "max_message one past ring/2 - header is refused: a wrapped claim could never fit");
	p = z;
	p.ring_bytes = SHMQ_RING_MAX;
	p.mode = 0666;
	is_int(shmq__topic_params_check(&p), 0, "ring_bytes at the maximum, mode 0666 accepted");
}

static void test_names_ns(void)
{
	char other[300], buf[SHMQ_SEGNAME_MAX], want[SHMQ_SEGNAME_MAX];
	uint64_t a, b;

	ok(shmq__namespace_id(tmpdir, &a) == 0 && shmq__namespace_id(tmpdir, &b) == 0 &&
	   a == b && a == ns, "namespace id is stable");
	snprintf(other, sizeof(other), "%s/other", tmpdir);
	if (mkdir(other, 0700) < 0)
		bail("mkdir %s: %s", other, strerror(errno));
	ok(shmq__namespace_id(other, &b) == 0 && b != a,
	   "another directory is another namespace");
	rmdir(other);
	is_int(shmq__namespace_id(other, &b), -ENOENT, "a missing directory is -ENOENT");
	shmq__segment_name(0x0123456789abcdefull, "orders", buf);
	snprintf(want, sizeof(want), "/shmq-0123456789abcdef-orders");
	ok(!strcmp(buf, want), "segment name is %s", buf);
}

/* ------------------------------------------------------------------------ */

static struct shmq_map good;
static char good_seg[SHMQ_SEGNAME_MAX];
static char good_topic[SHMQ_NAME_MAX + 1];

static void test_create_attach(void)
{
	struct shmq_topic_params p = small_params();
	struct shmq_map m2;
	struct shmq_seg_header *h;
	struct stat st;
	uint32_t i, j;
	int fd, bad_init = 0;
	pid_t pid;

	strcpy(good_seg, new_topic(good_topic, sizeof(good_topic)));
	is_int(shmq__segment_create(good_seg, good_topic, &p, &good), 0,
	       "create %s", good_seg);
	if (!good.base)
		bail("cannot create a segment: %s", shmq_errdetail());
	h = good.hdr;
	is_int(good.geo.partitions, 3, "created: partitions");
	is_u64(good.geo.ring_bytes, SHMQ_RING_MIN, "created: ring_bytes");
	is_int(good.geo.max_message, 1000, "created: max_message");
	is_int(good.geo.full_policy, SHMQ_FULL_FAIL, "created: full_policy");
	is_u64(good.geo.total_bytes, shmq__segment_bytes(3, SHMQ_RING_MIN), "created: total_bytes");
	is_u64(good.geo.rings_off, shmq__rings_off(3), "created: rings_off");
	is_u64(good.geo.topic_id, p.topic_id, "created: topic_id");
	is_u64(good.mask, SHMQ_RING_MIN - 1, "created: mask");
	ok(good.bytes == good.geo.total_bytes && !strcmp(good.name, good_topic),
	   "created: map bytes and name");
	is_u64(h->signature, shmq__layout_signature(), "header carries the layout signature");
	ok(h->magic == SHMQ_SEG_MAGIC && h->version == SHMQ_LAYOUT_VERSION &&
	   h->header_bytes == sizeof(*h) && h->parts_off == SHMQ_PARTS_OFF,
	   "header identity");
	ok(h->ready == SHMQ_SEG_READY && h->owner_uid == geteuid() &&
	   !strcmp(h->name, good_topic) && h->stall_timeout_ms == 2500 &&
	   h->numa_node == -1 && h->created_ns != 0,
	   "header state, owner, name, stall timeout");

	for (i = 0; i < 3; i++) {
		struct shmq_part_header *ph = shmq__part(&good, i);

		if (ph->head || ph->tail)
			bad_init++;
		for (j = 0; j < SHMQ_MAX_GROUPS; j++)
			if (ph->cursor[j].next || ph->cursor[j].committed)
				bad_init++;
		for (j = 0; j < SHMQ_MAX_MEMBERS; j++)
			if (ph->hold[j] != SHMQ_POS_NONE)
				bad_init++;
	}
	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++) {
		struct shmq_producer_slot *ps = shmq__producer_slot(&good, i);

		if (ps->claim_pos != SHMQ_POS_NONE || ps->revoked_pos != SHMQ_POS_NONE ||
		    ps->owner.pid)
			bad_init++;
	}
	for (i = 0; i < SHMQ_MAX_GROUPS; i++)
		if (shmq__group(&good, i)->state != SHMQ_GROUP_FREE)
			bad_init++;
	is_int(bad_init, 0, "counters 0, holds and claims POS_NONE, slots free");

	/* The registration mutex is robust across processes. */
	pid = fork();
	if (pid == 0) {
		pthread_mutex_lock(&good.hdr->lock);
		_exit(0);
	}
	wait_status(pid);
	{
		int r = pthread_mutex_lock(&good.hdr->lock);

		if (r == EOWNERDEAD)
			pthread_mutex_consistent(&good.hdr->lock);
		is_int(r, EOWNERDEAD, "a dead holder's mutex is handed over (EOWNERDEAD)");
		pthread_mutex_unlock(&good.hdr->lock);
	}

	/* Every page is allocated up front. */
	fd = shm_open(good_seg, O_RDONLY, 0);
	ok(fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0600 &&
	   (uint64_t)st.st_blocks * 512 >= good.bytes,
	   "segment has mode 0600 and all its blocks");
	if (fd >= 0)
		close(fd);

	is_int(shmq__segment_attach(good_seg, geteuid(), 0600, p.topic_id, &m2), 0,
	       "attach a good segment");
	ok(same_geo(&m2.geo, &good.geo) && m2.bytes == good.bytes &&
	   m2.mask == good.mask && !strcmp(m2.name, good_topic),
	   "attach round-trips the geometry and the name");
	shmq__part(&good, 2)->hold[5] = 42;
	is_u64(ck_pr_load_64(&shmq__part(&m2, 2)->hold[5]), 42,
	       "the two mappings share memory");
	shmq__part(&good, 2)->hold[5] = SHMQ_POS_NONE;
	shmq__segment_detach(&m2);
	ok(m2.base == NULL && m2.bytes == 0, "detach clears the map");
	shmq__segment_detach(&m2);
	shmq__segment_detach(NULL);
	ok(1, "detach is idempotent and NULL-safe");

	is_int(shmq__segment_attach(good_seg, geteuid(), 0600, 0, &m2), 0,
	       "expect_topic_id 0 accepts any id");
	shmq__segment_detach(&m2);
	memset(&m2, 0x5a, sizeof(m2));
	is_int(shmq__segment_attach(good_seg, geteuid(), 0600, 0x99, &m2), SHMQ_EFOREIGN,
	       "another topic id is SHMQ_EFOREIGN");
	ok(m2.base == (void *)0x5a5a5a5a5a5a5a5aull, "a failed attach leaves *map alone");
}

/* Corrupt one header field, attach, restore. */
#define TAMPER(field, value, want, what)                                       \
	do {                                                                   \
		__typeof__(good.hdr->field) saved_ = good.hdr->field;          \
		struct shmq_map m_;                                            \
		int r_;                                                        \
		good.hdr->field = (value);                                     \
		shmq__clear_detail();                                          \
		r_ = shmq__segment_attach(good_seg, geteuid(), 0600, 0, &m_); \
		if (r_ == 0)                                                   \
			shmq__segment_detach(&m_);                             \
		is_int(r_, (want), "%s -> %s", what, shmq_strerror(want));     \
		good.hdr->field = saved_;                                      \
	} while (0)

static void test_bad_headers(void)
{
	struct shmq_map m;
	int r;

	TAMPER(magic, SHMQ_SEG_MAGIC + 1, SHMQ_EMAGIC, "wrong magic");
	TAMPER(version, SHMQ_LAYOUT_VERSION + 1, SHMQ_EVERSION, "layout version + 1");
	TAMPER(version, 0, SHMQ_EVERSION, "layout version 0");
	TAMPER(signature, shmq__layout_signature() ^ 1, SHMQ_ELAYOUT, "wrong signature");
	TAMPER(header_bytes, sizeof(struct shmq_seg_header) + 64, SHMQ_ELAYOUT,
	       "wrong header_bytes");
	TAMPER(total_bytes, good.bytes + 1, SHMQ_ESIZE, "total_bytes off by one");
	TAMPER(total_bytes, good.bytes - 1, SHMQ_ESIZE, "total_bytes short by one");
	TAMPER(ring_bytes, SHMQ_RING_MIN + 4096, SHMQ_ESIZE, "ring_bytes not a power of two");
	TAMPER(ring_bytes, SHMQ_RING_MIN / 2, SHMQ_ESIZE, "ring_bytes below the minimum");
	TAMPER(ring_bytes, 1ull << 63, SHMQ_ESIZE, "ring_bytes 2^63 (overflow bait)");
	TAMPER(partitions, 0, SHMQ_ESIZE, "partitions 0");
	TAMPER(partitions, 0x80000000u, SHMQ_ESIZE, "partitions 2^31 (overflow bait)");
	TAMPER(partitions, 2, SHMQ_ESIZE, "partitions disagree with the size");
	TAMPER(max_message, 0, SHMQ_ESIZE, "max_message 0");
	TAMPER(max_message, SHMQ_RING_MIN / 2 + 1, SHMQ_ESIZE, "max_message > ring/2");
	TAMPER(full_policy, 0, SHMQ_ESIZE, "full_policy 0");
	TAMPER(parts_off, SHMQ_PARTS_OFF + SHMQ_PAGE, SHMQ_ESIZE, "parts_off moved");
	TAMPER(rings_off, good.geo.rings_off - SHMQ_PAGE, SHMQ_ESIZE, "rings_off moved");
	TAMPER(ready, 0, SHMQ_ENOTREADY, "ready word cleared");
	TAMPER(deleted, 1, SHMQ_EDELETED, "deleted flag");

	good.hdr->version++;
	r = shmq__segment_attach(good_seg, geteuid(), 0600, 0, &m);
	ok(r == SHMQ_EVERSION && strstr(shmq_errdetail(), good_seg),
	   "the detail names the segment: %s", shmq_errdetail());
	good.hdr->version--;

	is_int(shmq__segment_attach(good_seg, geteuid(), 0600, 0, &m), 0,
	       "restored header attaches again");
	shmq__segment_detach(&m);

	/* The validator itself, on the good header. */
	is_int(shmq__segment_validate(good.base, good.bytes, NULL), 0, "validate: good");
	is_int(shmq__segment_validate(good.base, good.bytes - 1, NULL), SHMQ_ESIZE,
	       "validate: mapping one byte short");
	is_int(shmq__segment_validate(good.base, sizeof(struct shmq_seg_header) - 1, NULL),
	       SHMQ_ESIZE, "validate: shorter than a header");
	is_int(shmq__segment_validate(good.base, SIZE_MAX, NULL), SHMQ_ESIZE,
	       "validate: SIZE_MAX bytes");

	/* A heap copy is not cache-line aligned; the fuzz target uses one. */
	{
		uint8_t *heap = malloc(good.bytes + 16);
		struct shmq_geometry g;

		if (!heap)
			bail("malloc: %s", strerror(errno));
		memcpy(heap + 8, good.base, good.bytes);
		ok(shmq__segment_validate(heap + 8, good.bytes, &g) == 0 &&
		   same_geo(&g, &good.geo), "validate: an 8-byte aligned heap copy");
		memmove(heap + 3, heap + 8, good.bytes);
		ok(shmq__segment_validate(heap + 3, good.bytes, &g) == 0 &&
		   same_geo(&g, &good.geo), "validate: a misaligned heap copy");
		free(heap);
	}
}

static void test_foreign(void)
{
	struct shmq_map m;
	int fd, r;

	r = shmq__segment_attach(good_seg, geteuid() + 1, 0600, 0, &m);
	ok(r == SHMQ_EFOREIGN && strstr(shmq_errdetail(), "uid"),
	   "another owner -> SHMQ_EFOREIGN (%s)", shmq_errdetail());
	fd = shm_open(good_seg, O_RDWR, 0);
	if (fd < 0 || fchmod(fd, 0666) < 0)
		bail("fchmod %s: %s", good_seg, strerror(errno));
	r = shmq__segment_attach(good_seg, geteuid(), 0600, 0, &m);
	ok(r == SHMQ_EFOREIGN && strstr(shmq_errdetail(), "mode"),
	   "mode 0666 when 0600 is expected -> SHMQ_EFOREIGN (%s)", shmq_errdetail());
	fchmod(fd, 0600);
	close(fd);
	r = shmq__segment_attach(good_seg, geteuid(), 0640, 0, &m);
	is_int(r, SHMQ_EFOREIGN, "mode 0600 when 0640 is expected -> SHMQ_EFOREIGN");
}

static void test_short_files(void)
{
	char topic[SHMQ_NAME_MAX + 1];
	const char *seg;
	struct shmq_map m;
	void *p;
	int fd;

	seg = new_topic(topic, sizeof(topic));
	fd = shm_open(seg, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0)
		bail("shm_open %s: %s", seg, strerror(errno));
	fchmod(fd, 0600);
	if (ftruncate(fd, 100) < 0)
		bail("ftruncate: %s", strerror(errno));
	is_int(shmq__segment_attach(seg, geteuid(), 0600, 0, &m), SHMQ_ESIZE,
	       "a file shorter than its header -> SHMQ_ESIZE");
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, 2 * SHMQ_PAGE) < 0)
		bail("ftruncate: %s", strerror(errno));
	is_int(shmq__segment_attach(seg, geteuid(), 0600, 0, &m), SHMQ_EMAGIC,
	       "two pages of zeros -> SHMQ_EMAGIC");
	/* A good header in a file of the wrong size. */
	p = mmap(NULL, 2 * SHMQ_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		bail("mmap: %s", strerror(errno));
	memcpy(p, good.base, SHMQ_PAGE);
	is_int(shmq__segment_attach(seg, geteuid(), 0600, 0, &m), SHMQ_ESIZE,
	       "a good header in a file of the wrong size -> SHMQ_ESIZE");
	munmap(p, 2 * SHMQ_PAGE);
	close(fd);
	shm_unlink(seg);
	is_int(shmq__segment_attach(seg, geteuid(), 0600, 0, &m), -ENOENT,
	       "a missing segment -> -ENOENT");
}

static void test_exclusive(void)
{
	struct shmq_topic_params p = small_params();
	char topic[SHMQ_NAME_MAX + 1], path[128], target[300];
	const char *seg;
	struct shmq_map m;
	int fd, r;

	/* A second create of a live segment fails and leaves it intact. */
	shmq__part(&good, 0)->hold[0] = 77;
	is_int(shmq__segment_create(good_seg, good_topic, &p, &m), -EEXIST,
	       "second create of the same name -> -EEXIST");
	r = shmq__segment_attach(good_seg, geteuid(), 0600, 0, &m);
	ok(r == 0 && shmq__part(&m, 0)->hold[0] == 77,
	   "the existing segment is neither unlinked nor reset");
	if (r == 0)
		shmq__segment_detach(&m);
	shmq__part(&good, 0)->hold[0] = SHMQ_POS_NONE;

	/* An object planted at the name first is never reused. */
	seg = new_topic(topic, sizeof(topic));
	fd = shm_open(seg, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0 || write(fd, "planted", 7) != 7)
		bail("planting %s: %s", seg, strerror(errno));
	r = shmq__segment_create(seg, topic, &p, &m);
	{
		struct stat st;
		char buf[8] = "";

		ok(r == -EEXIST && fstat(fd, &st) == 0 && st.st_size == 7 &&
		   pread(fd, buf, 7, 0) == 7 && !memcmp(buf, "planted", 7) &&
		   shm_unlink(seg) == 0,
		   "create over a planted object -> -EEXIST, object untouched");
	}
	close(fd);

	/* A symbolic link at the name is neither followed nor replaced. */
	seg = new_topic(topic, sizeof(topic));
	snprintf(path, sizeof(path), "/dev/shm%s", seg);
	snprintf(target, sizeof(target), "%s/target", tmpdir);
	fd = open(target, O_CREAT | O_EXCL | O_WRONLY, 0600);
	if (fd >= 0)
		close(fd);
	if (fd < 0 || symlink(target, path) < 0) {
		skip(3, "cannot plant a symlink in /dev/shm: %s", strerror(errno));
	} else {
		struct stat st;

		is_int(shmq__segment_create(seg, topic, &p, &m), -EEXIST,
		       "create over a symlink -> -EEXIST");
		is_int(shmq__segment_attach(seg, geteuid(), 0600, 0, &m), -ELOOP,
		       "attach through a symlink -> -ELOOP");
		ok(stat(target, &st) == 0 && st.st_size == 0 && lstat(path, &st) == 0 &&
		   S_ISLNK(st.st_mode), "the link and its target are untouched");
		unlink(path);
	}
	unlink(target);

	/* Bad input creates nothing. */
	seg = new_topic(topic, sizeof(topic));
	is_int(shmq__segment_create(seg, "bad/name", &p, &m), -EINVAL,
	       "create with a bad topic name -> -EINVAL");
	p.ring_bytes = 3 * SHMQ_RING_MIN;
	r = shmq__segment_create(seg, topic, &p, &m);
	fd = shm_open(seg, O_RDONLY, 0);
	ok(r == -EINVAL && fd < 0 && errno == ENOENT,
	   "create with bad params -> -EINVAL, nothing left");
	if (fd >= 0)
		close(fd);

	/* The mode is exact whatever the umask. */
	p = small_params();
	p.mode = 0640;
	seg = new_topic(topic, sizeof(topic));
	{
		mode_t old = umask(0077);
		struct stat st;

		r = shmq__segment_create(seg, topic, &p, &m);
		umask(old);
		fd = shm_open(seg, O_RDONLY, 0);
		ok(r == 0 && fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0640,
		   "mode 0640 under umask 0077 stays 0640");
		if (fd >= 0)
			close(fd);
		if (r == 0)
			shmq__segment_detach(&m);
		r = shmq__segment_attach(seg, geteuid(), 0640, p.topic_id, &m);
		is_int(r, 0, "attach expecting 0640");
		if (r == 0)
			shmq__segment_detach(&m);
	}
}

static void test_enospc(void)
{
	struct shmq_topic_params p = small_params();
	char topic[SHMQ_NAME_MAX + 1];
	const char *seg;
	struct statvfs vfs;
	struct shmq_map m;
	uint64_t fs_bytes;
	int r, fd;

	/*
	 * Ask for more than the whole of /dev/shm: tmpfs refuses such a
	 * fallocate before allocating anything, so the test costs no memory.
	 */
	if (statvfs("/dev/shm", &vfs) < 0 || vfs.f_blocks == 0) {
		skip(2, "/dev/shm has no size limit");
		return;
	}
	fs_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	p.ring_bytes = SHMQ_RING_MAX;
	if (fs_bytes / SHMQ_RING_MAX + 1 > SHMQ_MAX_PARTITIONS) {
		skip(2, "/dev/shm is larger than the largest topic");
		return;
	}
	p.partitions = (uint32_t)(fs_bytes / SHMQ_RING_MAX + 1);
	seg = new_topic(topic, sizeof(topic));
	r = shmq__segment_create(seg, topic, &p, &m);
	ok(r == -ENOSPC, "a topic larger than /dev/shm -> -ENOSPC (%s)", shmq_errdetail());
	if (r == 0)
		shmq__segment_detach(&m);
	fd = shm_open(seg, O_RDONLY, 0);
	ok(fd < 0 && errno == ENOENT, "the failed segment was unlinked");
	if (fd >= 0)
		close(fd);
}

static void test_numa(void)
{
	struct shmq_topic_params p = small_params();
	char topic[SHMQ_NAME_MAX + 1];
	const char *seg;
	struct shmq_map m;
	int r, node = -1, fd;

	if (numa_available() < 0) {
		skip(3, "NUMA is not available on this machine");
		return;
	}
	p.numa_node = 0;
	seg = new_topic(topic, sizeof(topic));
	r = shmq__segment_create(seg, topic, &p, &m);
	is_int(r, 0, "create bound to NUMA node 0 (%s)", r ? shmq_errdetail() : "ok");
	if (r == 0) {
		void *page = shmq__ring(&m, 2);

		if (get_mempolicy(&node, NULL, 0, page, MPOL_F_NODE | MPOL_F_ADDR) < 0)
			node = -2;
		is_int(node, 0, "a ring page lives on node 0");
		shmq__segment_detach(&m);
	} else {
		skip(1, "no segment");
	}
	p.numa_node = numa_max_node() + 1;
	seg = new_topic(topic, sizeof(topic));
	r = shmq__segment_create(seg, topic, &p, &m);
	fd = shm_open(seg, O_RDONLY, 0);
	ok(r == -EINVAL && fd < 0, "a node that does not exist -> -EINVAL, nothing created (%s)",
	   shmq_errdetail());
	if (fd >= 0)
		close(fd);
}

/* ------------------------------------------------------------------------ */

static void put_file(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/topics/%s.topic", tmpdir, name);
	f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		bail("writing %s: %s", path, strerror(errno));
}

#define GOOD_FILE                                                              \
	"format=1\nid=00000000000000ab\npartitions=2\nring_bytes=65536\n"        \
	"max_message=100\nfull_policy=fail\nnuma_node=-1\nmode=0600\n"         \
	"stall_timeout_ms=500\n"

static void test_topic_files(void)
{
	static const struct {
		const char *what, *text;
		int want;
	} cases[] = {
		{ "a good hand-written file", GOOD_FILE, 0 },
		{ "unknown keys ignored", "future=x y z\n" GOOD_FILE "later=1\n", 0 },
		{ "comments and blank lines", "# c\n\n" GOOD_FILE, 0 },
		{ "no final newline", "format=1\nid=ab\npartitions=2\nring_bytes=65536\n"
				      "max_message=100\nfull_policy=block\nnuma_node=0\n"
				      "mode=600\nstall_timeout_ms=500", 0 },
		{ "a non-numeric value", "partitions=abc\n" GOOD_FILE, -EINVAL },
		{ "a missing key", "format=1\nid=ab\npartitions=2\nring_bytes=65536\n"
				   "max_message=100\nfull_policy=fail\nnuma_node=-1\n"
				   "mode=0600\n", -EINVAL },
		{ "a duplicate key", GOOD_FILE "partitions=2\n", -EINVAL },
		{ "a trailing space", "format=1 \nid=ab\npartitions=2\nring_bytes=65536\n"
				      "max_message=100\nfull_policy=fail\nnuma_node=-1\n"
				      "mode=0600\nstall_timeout_ms=500\n", -EINVAL },
		{ "a negative count", "format=1\nid=ab\npartitions=-2\nring_bytes=65536\n"
				      "max_message=100\nfull_policy=fail\nnuma_node=-1\n"
				      "mode=0600\nstall_timeout_ms=500\n", -EINVAL },
		{ "an overflowing number", "format=1\nid=ab\npartitions=2\n"
					   "ring_bytes=99999999999999999999\nmax_message=100\n"
					   "full_policy=fail\nnuma_node=-1\nmode=0600\n"
					   "stall_timeout_ms=500\n", -EINVAL },
		{ "a 17-digit id", "format=1\nid=10000000000000000\npartitions=2\n"
				   "ring_bytes=65536\nmax_message=100\nfull_policy=fail\n"
				   "numa_node=-1\nmode=0600\nstall_timeout_ms=500\n", -EINVAL },
		{ "format 2", "format=2\nid=ab\npartitions=2\nring_bytes=65536\n"
			      "max_message=100\nfull_policy=fail\nnuma_node=-1\n"
			      "mode=0600\nstall_timeout_ms=500\n", -EINVAL },
		{ "an unknown policy", "format=1\nid=ab\npartitions=2\nring_bytes=65536\n"
				       "max_message=100\nfull_policy=drop\nnuma_node=-1\n"
				       "mode=0600\nstall_timeout_ms=500\n", -EINVAL },
		{ "a ring that is not a power of two",
		  "format=1\nid=ab\npartitions=2\nring_bytes=65537\n"
		  "max_message=100\nfull_policy=fail\nnuma_node=-1\n"
		  "mode=0600\nstall_timeout_ms=500\n", -EINVAL },
		{ "a line without '='", "oops\n" GOOD_FILE, -EINVAL },
		{ "partitions=0", "format=1\nid=ab\npartitions=0\nring_bytes=65536\n"
				  "max_message=100\nfull_policy=fail\nnuma_node=-1\n"
				  "mode=0600\nstall_timeout_ms=500\n", -EINVAL },
	};
	struct shmq_topic_params p = small_params(), q;
	char path[512], link[512];
	uid_t owner = (uid_t)-1;
	struct stat st;
	size_t i;
	int r;

	is_int(shmq__topic_file_read(tmpdir, "nosuch", &q, &owner), -ENOENT,
	       "reading a topic before the topics directory exists -> -ENOENT");
	is_int(shmq__topic_file_write(tmpdir, "orders", &p), 0, "write orders.topic");
	snprintf(path, sizeof(path), "%s/topics/orders.topic", tmpdir);
	ok(stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0600,
	   "the file has mode 0600");
	memset(&q, 0, sizeof(q));
	is_int(shmq__topic_file_read(tmpdir, "orders", &q, &owner), 0, "read it back");
	ok(same_params(&p, &q), "every parameter round-trips");
	is_int(owner, geteuid(), "the owner is reported");

	p.partitions = 7;
	p.full_policy = SHMQ_FULL_BLOCK;
	p.numa_node = 0;
	p.topic_id = UINT64_MAX;
	is_int(shmq__topic_file_write(tmpdir, "orders", &p), 0, "rewrite orders.topic");
	r = shmq__topic_file_read(tmpdir, "orders", &q, NULL);
	ok(r == 0 && same_params(&p, &q), "the rewrite replaced every value");
	{
		char dpath[512], cmd[600];
		FILE *f;
		int n = -1;

		snprintf(dpath, sizeof(dpath), "%s/topics", tmpdir);
		snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dpath);
		f = popen(cmd, "r");
		if (f) {
			if (fscanf(f, "%d", &n) != 1)
				n = -1;
			pclose(f);
		}
		is_int(n, 1, "no temporary file is left behind");
	}

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		put_file("hand", cases[i].text);
		shmq__clear_detail();
		r = shmq__topic_file_read(tmpdir, "hand", &q, NULL);
		is_int(r, cases[i].want, "topic file with %s (%s)", cases[i].what,
		       r ? shmq_errdetail() : "ok");
	}
	put_file("hand", GOOD_FILE);
	r = shmq__topic_file_read(tmpdir, "hand", &q, NULL);
	ok(r == 0 && q.topic_id == 0xab && q.partitions == 2 && q.ring_bytes == 65536 &&
	   q.max_message == 100 && q.full_policy == SHMQ_FULL_FAIL && q.numa_node == -1 &&
	   q.mode == 0600 && q.stall_timeout_ms == 500, "hand-written values are parsed");

	snprintf(link, sizeof(link), "%s/topics/linked.topic", tmpdir);
	if (symlink(path, link) < 0)
		bail("symlink: %s", strerror(errno));
	is_int(shmq__topic_file_read(tmpdir, "linked", &q, NULL), -ELOOP,
	       "a symlinked topic file is not followed");
	unlink(link);

	is_int(shmq__topic_file_read(tmpdir, "../x", &q, NULL), -EINVAL,
	       "a bad topic name -> -EINVAL");
	is_int(shmq__topic_file_remove(tmpdir, "orders"), 0, "remove orders.topic");
	is_int(shmq__topic_file_remove(tmpdir, "orders"), -ENOENT, "remove again -> -ENOENT");
	is_int(shmq__topic_file_read(tmpdir, "orders", &q, NULL), -ENOENT,
	       "a removed topic reads as -ENOENT");
	shmq__topic_file_remove(tmpdir, "hand");
}

/* ------------------------------------------------------------------------ */

static void cleanup(void)
{
	char path[512];
	int i, left = 0;

	shmq__segment_detach(&good);
	for (i = 0; i < nsegs; i++)
		shm_unlink(segs[i]);
	for (i = 0; i < nsegs; i++) {
		int fd = shm_open(segs[i], O_RDONLY, 0);

		if (fd >= 0) {
			left++;
			close(fd);
		}
	}
	is_int(left, 0, "every segment of the test is gone");
	snprintf(path, sizeof(path), "%s/topics", tmpdir);
	rmdir(path);
	rmdir(tmpdir);
}

int main(void)
{
	alarm(60);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/shmq-t-segment-%d-XXXXXX", (int)getpid());
	if (!mkdtemp(tmpdir))
		bail("mkdtemp: %s", strerror(errno));
	if (shmq__namespace_id(tmpdir, &ns) < 0)
		bail("namespace id: %s", shmq_errdetail());

	plan(NTESTS);
	test_strerror();
	test_hash();
	test_names();
	test_owner();
	test_futex();
	test_params();
	test_names_ns();
	test_create_attach();
	test_bad_headers();
	test_foreign();
	test_short_files();
	test_exclusive();
	test_enospc();
	test_numa();
	test_topic_files();
	cleanup();
	return tap_done();
}
