/*
 * segment.c - naming, creating, attaching and validating topic segments.
 *
 * Overview
 * --------
 * Each topic is one POSIX shared-memory object, "/shmq-<ns>-<topic>", where
 * <ns> is a hash of the device and inode of the namespace's data directory:
 * two namespaces on one host never share a name, and a namespace keeps its
 * names across restarts of shmqd.  The object is laid out as layout.h
 * draws it: a header page, the group, producer and member tables, one page
 * of counters per partition, then the rings.
 *
 * shmqd creates a segment (shmq__segment_create): O_EXCL, exact mode, full
 * size, optional NUMA binding, every page allocated, every field
 * initialised, and the ready word stored last.  Clients and a restarted
 * shmqd attach (shmq__segment_attach): they check who owns the object and
 * its mode before mapping it, then check the header before using it.
 *
 * Invariants
 * ----------
 * - A segment whose ready word is SHMQ_SEG_READY has every identity field
 *   of its header and every initial counter written.  The creator stores
 *   them, then a store fence, then the ready word; an attacher loads the
 *   ready word, then a load fence, then the identity (acquire/release
 *   through ck_pr_fence_store / ck_pr_fence_load).
 * - The identity fields are never written after ready.  Attachers still
 *   read each of them exactly once into a local and check the local: a
 *   buggy or hostile process that can write the segment must not be able
 *   to change a value between its check and its use.
 * - A mapped segment is exactly total_bytes long and total_bytes is what
 *   the geometry implies, so every offset derived from a validated
 *   geometry is inside the mapping.
 * - The geometry is copied into struct shmq_map once and never re-read.
 *
 * Failure and recovery
 * --------------------
 * Creation either publishes a complete segment or unlinks what it created:
 * a failure after shm_open (mode, size, NUMA, ENOSPC, mutex) removes the
 * object, so no half-built segment is left under the topic's name.  A
 * creator that dies before the ready word leaves an object that attachers
 * refuse (SHMQ_ENOTREADY or SHMQ_EMAGIC); shmqd, the only creator, unlinks
 * and recreates it.  posix_fallocate allocates every page up front, so a
 * full /dev/shm is -ENOSPC from create rather than SIGBUS on first touch.
 * The registration mutex is robust: a process that dies holding it hands
 * EOWNERDEAD to the next locker instead of wedging the topic.
 *
 * Security
 * --------
 * - Creation uses O_CREAT|O_EXCL|O_NOFOLLOW: an existing object or a
 *   planted symbolic link at the name makes create fail with -EEXIST; it is
 *   never reused, truncated or followed.  On that error nothing is
 *   unlinked, since the object is not ours.
 * - The mode is set with fchmod after creation so that the umask cannot
 *   widen or narrow it, and only the bits in 0666 with owner rw are
 *   accepted.
 * - Attach refuses an object not owned by the expected uid or not carrying
 *   exactly the expected mode (SHMQ_EFOREIGN), before mapping it.  A
 *   process that could create objects in /dev/shm cannot make us adopt its
 *   own segment under a topic's name.
 * - Every header field is validated before use, with overflow-safe
 *   arithmetic, and the validator is a pure function that is fuzzed.
 * - Residual risk: a topic whose mode grants write access to others lets
 *   them ftruncate the object, after which readers get SIGBUS.  Such modes
 *   are for cooperating users only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomics.h"

#include "shmq_int.h"

#define SHMQ_DEFAULT_RING	(1ull << 20)
#define SHMQ_DEFAULT_MODE	0600u
#define SHMQ_DEFAULT_STALL_MS	10000u
#define SHMQ_MODE_ALLOWED	0666u
#define SHMQ_MODE_OWNER_RW	0600u

/* Nodes our mbind mask can name; MAX_NUMNODES of common kernels. */
#define SHMQ_NUMA_MASK_BITS	1024u
#define SHMQ_ULONG_BITS		(8u * sizeof(unsigned long))

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static bool ring_bytes_ok(uint64_t r)
{
	return is_pow2(r) && r >= SHMQ_RING_MIN && r <= SHMQ_RING_MAX;
}

static bool full_policy_ok(uint32_t fp)
{
	return fp == SHMQ_FULL_BLOCK || fp == SHMQ_FULL_FAIL ||
	       fp == SHMQ_FULL_SPILL;
}

static bool spill_mode_ok(uint32_t sm)
{
	return sm == SHMQ_SPILL_OFF || sm == SHMQ_SPILL_OVERFLOW ||
	       sm == SHMQ_SPILL_ALWAYS;
}

/* ------------------------------------------------------------------------
 * Layout signature
 */

static uint64_t sig_add(uint64_t h, uint64_t v)
{
	return shmq__fnv1a64(&v, sizeof(v), h);
}

#define SIG(v) (h = sig_add(h, (uint64_t)(v)))
#define SIG_FIELD(type, f)                                                     \
	do {                                                                   \
		SIG(offsetof(struct type, f));                                 \
		SIG(sizeof(((struct type *)0)->f));                            \
	} while (0)

/*
 * Every constant, every struct size and the offset and size of every named
 * field (reserved padding is covered by the struct sizes).  A field added
 * to layout.h must be added here too.
 */
uint64_t shmq__layout_signature(void)
{
	uint64_t h = SHMQ_FNV_BASIS;

	SIG(SHMQ_LAYOUT_VERSION);
	SIG(SHMQ_SEG_MAGIC);
	SIG(SHMQ_SEG_READY);
	SIG(SHMQ_CACHELINE);
	SIG(SHMQ_PAGE);
	SIG(SHMQ_NAME_MAX);
	SIG(SHMQ_MAX_PARTITIONS);
	SIG(SHMQ_MAX_GROUPS);
	SIG(SHMQ_MAX_MEMBERS);
	SIG(SHMQ_MAX_PRODUCERS);
	SIG(SHMQ_RING_MIN);
	SIG(SHMQ_RING_MAX);
	SIG(SHMQ_KEY_MAX);
	SIG(SHMQ_FRAME_ALIGN);
	SIG(SHMQ_FRAME_HEADER);
	SIG(SHMQ_SEAL_COMMITTED);
	SIG(SHMQ_SEAL_PAD);
	SIG(SHMQ_SEAL_FLAGS);
	SIG(SHMQ_POS_NONE);
	SIG(SHMQ_CURSOR_WALKER);
	SIG(SHMQ_GROUP_FREE);
	SIG(SHMQ_GROUP_ACTIVE);
	SIG(SHMQ_GROUPS_OFF);
	SIG(SHMQ_PRODUCERS_OFF);
	SIG(SHMQ_MEMBERS_OFF);
	SIG(SHMQ_IDENTS_OFF);
	SIG(SHMQ_PARTS_OFF);
	SIG(SHMQ_MAX_IDENTS);
	SIG(SHMQ_FRAME_GAP);
	SIG(SHMQ_FRAME_PRODUCER);
	SIG(SHMQ_FRAME_EXT);
	SIG(SHMQ_TRY_DONE);
	SIG(SHMQ_IDENT_FREE);
	SIG(SHMQ_IDENT_ACTIVE);
	/* The mutex is shared between processes: its ABI is part of ours. */
	SIG(sizeof(pthread_mutex_t));

	SIG(sizeof(struct shmq_frame));
	SIG_FIELD(shmq_frame, seal);
	SIG_FIELD(shmq_frame, size);
	SIG_FIELD(shmq_frame, key_len);
	SIG_FIELD(shmq_frame, flags);
	SIG_FIELD(shmq_frame, value_len);
	SIG_FIELD(shmq_frame, crc);
	SIG_FIELD(shmq_frame, timestamp_ns);

	SIG(sizeof(struct shmq_seg_header));
	SIG_FIELD(shmq_seg_header, magic);
	SIG_FIELD(shmq_seg_header, version);
	SIG_FIELD(shmq_seg_header, header_bytes);
	SIG_FIELD(shmq_seg_header, signature);
	SIG_FIELD(shmq_seg_header, total_bytes);
	SIG_FIELD(shmq_seg_header, ring_bytes);
	SIG_FIELD(shmq_seg_header, parts_off);
	SIG_FIELD(shmq_seg_header, rings_off);
	SIG_FIELD(shmq_seg_header, topic_id);
	SIG_FIELD(shmq_seg_header, created_ns);
	SIG_FIELD(shmq_seg_header, partitions);
	SIG_FIELD(shmq_seg_header, max_message);
	SIG_FIELD(shmq_seg_header, full_policy);
	SIG_FIELD(shmq_seg_header, numa_node);
	SIG_FIELD(shmq_seg_header, stall_timeout_ms);
	SIG_FIELD(shmq_seg_header, spill_mode);
	SIG_FIELD(shmq_seg_header, owner_uid);
	SIG_FIELD(shmq_seg_header, name);
	SIG_FIELD(shmq_seg_header, ready);
	SIG_FIELD(shmq_seg_header, deleted);
	SIG_FIELD(shmq_seg_header, revoked);
	SIG_FIELD(shmq_seg_header, daemon_pid);
	SIG_FIELD(shmq_seg_header, data_seq);
	SIG_FIELD(shmq_seg_header, data_waiters);
	SIG_FIELD(shmq_seg_header, space_seq);
	SIG_FIELD(shmq_seg_header, space_waiters);
	SIG_FIELD(shmq_seg_header, sync_seq);
	SIG_FIELD(shmq_seg_header, sync_waiters);
	SIG_FIELD(shmq_seg_header, lock);

	SIG(sizeof(struct shmq_group_slot));
	SIG_FIELD(shmq_group_slot, state);
	SIG_FIELD(shmq_group_slot, mode);
	SIG_FIELD(shmq_group_slot, created_ns);
	SIG_FIELD(shmq_group_slot, name);
	SIG_FIELD(shmq_group_slot, generation);
	SIG_FIELD(shmq_group_slot, parked);
	SIG_FIELD(shmq_group_slot, redelivered);
	SIG_FIELD(shmq_group_slot, dead_lettered);
	SIG_FIELD(shmq_group_slot, expired);
	SIG_FIELD(shmq_group_slot, untethered);

	SIG(sizeof(struct shmq_owner));
	SIG_FIELD(shmq_owner, pid);
	SIG_FIELD(shmq_owner, start_ticks);

	SIG(sizeof(struct shmq_producer_slot));
	SIG_FIELD(shmq_producer_slot, owner);
	SIG_FIELD(shmq_producer_slot, claim_pos);
	SIG_FIELD(shmq_producer_slot, claim_len);
	SIG_FIELD(shmq_producer_slot, claim_part);
	SIG_FIELD(shmq_producer_slot, revoked_pos);
	SIG_FIELD(shmq_producer_slot, ident);

	SIG(sizeof(struct shmq_frame_ext));
	SIG_FIELD(shmq_frame_ext, producer_id);
	SIG_FIELD(shmq_frame_ext, seq);

	SIG(sizeof(struct shmq_ident_slot));
	SIG_FIELD(shmq_ident_slot, state);
	SIG_FIELD(shmq_ident_slot, owner);
	SIG_FIELD(shmq_ident_slot, producer_id);
	SIG_FIELD(shmq_ident_slot, created_ns);
	SIG_FIELD(shmq_ident_slot, name);

	SIG(sizeof(struct shmq_ident_seq));
	SIG_FIELD(shmq_ident_seq, last_seq);
	SIG_FIELD(shmq_ident_seq, last_pos);
	SIG_FIELD(shmq_ident_seq, try_seq);
	SIG_FIELD(shmq_ident_seq, try_pos);

	SIG(sizeof(struct shmq_member_slot));
	SIG_FIELD(shmq_member_slot, owner);
	SIG_FIELD(shmq_member_slot, group);
	SIG_FIELD(shmq_member_slot, disk_part);
	SIG_FIELD(shmq_member_slot, disk_hold);
	SIG_FIELD(shmq_member_slot, flags);
	SIG_FIELD(shmq_member_slot, ack_timeout_ms);
	SIG_FIELD(shmq_member_slot, lease);
	SIG_FIELD(shmq_member_slot, lease_pos);
	SIG_FIELD(shmq_member_slot, lease_part);
	SIG_FIELD(shmq_member_slot, lease_count);
	SIG_FIELD(shmq_member_slot, lease_reserved);
	SIG_FIELD(shmq_member_slot, lease_reason);

	SIG(sizeof(struct shmq_cursor));
	SIG_FIELD(shmq_cursor, next);
	SIG_FIELD(shmq_cursor, committed);
	SIG_FIELD(shmq_cursor, owner);
	SIG_FIELD(shmq_cursor, prev);
	SIG_FIELD(shmq_cursor, missed);
	SIG_FIELD(shmq_cursor, missed_reported);

	SIG(sizeof(struct shmq_part_header));
	SIG_FIELD(shmq_part_header, head);
	SIG_FIELD(shmq_part_header, tail);
	SIG_FIELD(shmq_part_header, reuse);
	SIG_FIELD(shmq_part_header, tail_lock);
	SIG_FIELD(shmq_part_header, spilled);
	SIG_FIELD(shmq_part_header, synced);
	SIG_FIELD(shmq_part_header, spill_hold);
	SIG_FIELD(shmq_part_header, spill_error);
	SIG_FIELD(shmq_part_header, cursor);
	SIG_FIELD(shmq_part_header, hold);
	SIG_FIELD(shmq_part_header, ident);

	return h;
}

#undef SIG_FIELD
#undef SIG

/* ------------------------------------------------------------------------
 * Names and parameters
 */

int shmq__namespace_id(const char *dir, uint64_t *out)
{
	struct stat st;
	uint64_t dev, ino, h;

	if (stat(dir, &st) < 0)
		return shmq__fail(-errno, "namespace %s: stat: %s", dir,
				  strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return shmq__fail(-ENOTDIR, "namespace %s: not a directory", dir);
	dev = (uint64_t)st.st_dev;
	ino = (uint64_t)st.st_ino;
	h = shmq__fnv1a64(&dev, sizeof(dev), SHMQ_FNV_BASIS);
	*out = shmq__fnv1a64(&ino, sizeof(ino), h);
	return 0;
}

void shmq__segment_name(uint64_t ns, const char *topic, char *buf)
{
	snprintf(buf, SHMQ_SEGNAME_MAX, "/shmq-%016llx-%s",
		 (unsigned long long)ns, topic);
}

int shmq__topic_params_check(struct shmq_topic_params *p)
{
	if (p->partitions == 0)
		p->partitions = 1;
	if (p->ring_bytes == 0)
		p->ring_bytes = SHMQ_DEFAULT_RING;
	if (p->max_message == 0 && p->ring_bytes / 4 <= UINT32_MAX)
		p->max_message = (uint32_t)(p->ring_bytes / 4);
	if (p->mode == 0)
		p->mode = SHMQ_DEFAULT_MODE;
	if (p->stall_timeout_ms == 0)
		p->stall_timeout_ms = SHMQ_DEFAULT_STALL_MS;
	if (p->full_policy == 0)
		p->full_policy = SHMQ_FULL_SPILL;
	if (p->spill_mode == SHMQ_SPILL_DEFAULT)
		p->spill_mode = p->full_policy == SHMQ_FULL_SPILL ?
			SHMQ_SPILL_OVERFLOW : SHMQ_SPILL_OFF;

	if (p->partitions > SHMQ_MAX_PARTITIONS)
		return shmq__fail(-EINVAL, "partitions %u exceeds %u",
				  p->partitions, SHMQ_MAX_PARTITIONS);
	if (!ring_bytes_ok(p->ring_bytes))
		return shmq__fail(-EINVAL,
				  "ring_bytes %llu is not a power of two in [%llu, %llu]",
				  (unsigned long long)p->ring_bytes,
				  (unsigned long long)SHMQ_RING_MIN,
				  (unsigned long long)SHMQ_RING_MAX);
	/* Half a ring at most, so that a frame and its wrap padding fit. */
	if (p->max_message > SHMQ_MAX_MESSAGE_LIMIT(p->ring_bytes))
		return shmq__fail(-EINVAL, "max_message %u exceeds half the ring less a frame header (%llu)",
				  p->max_message,
				  (unsigned long long)SHMQ_MAX_MESSAGE_LIMIT(p->ring_bytes));
	if ((p->mode & ~SHMQ_MODE_ALLOWED) ||
	    (p->mode & SHMQ_MODE_OWNER_RW) != SHMQ_MODE_OWNER_RW)
		return shmq__fail(-EINVAL,
				  "mode %04o: only bits of 0666 and owner rw required",
				  p->mode);
	if (!full_policy_ok(p->full_policy))
		return shmq__fail(-EINVAL, "full_policy %u is not spill, block or fail",
				  p->full_policy);
	if (!spill_mode_ok(p->spill_mode))
		return shmq__fail(-EINVAL, "spill %u is not off, overflow or always",
				  p->spill_mode);
	if (p->full_policy == SHMQ_FULL_SPILL && p->spill_mode == SHMQ_SPILL_OFF)
		return shmq__fail(-EINVAL, "full policy spill needs spill overflow or always, not off");
	if (p->numa_node < -1)
		return shmq__fail(-EINVAL, "numa_node %d is invalid", p->numa_node);
	return 0;
}

/* ------------------------------------------------------------------------
 * Validation (pure: the fuzz target drives it)
 */

/*
 * Load one header field exactly once.  The header type is aligned to a
 * cache line, but a caller's heap buffer (the fuzz target's) is only
 * malloc-aligned, so fields are addressed as bytes plus offsetof and never
 * through a struct pointer.  A field that is not naturally aligned cannot
 * be in a mapping (mappings are page-aligned), so nobody else writes it
 * and memcpy is enough.
 */
static uint64_t load64(const uint8_t *base, size_t off)
{
	const uint8_t *p = base + off;
	uint64_t v;

	if (!((uintptr_t)p & 7))
		return ck_pr_load_64((const uint64_t *)(const void *)p);
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint32_t load32(const uint8_t *base, size_t off)
{
	const uint8_t *p = base + off;
	uint32_t v;

	if (!((uintptr_t)p & 3))
		return ck_pr_load_32((const uint32_t *)(const void *)p);
	memcpy(&v, p, sizeof(v));
	return v;
}

#define HDR64(f) load64(b, offsetof(struct shmq_seg_header, f))
#define HDR32(f) load32(b, offsetof(struct shmq_seg_header, f))

int shmq__segment_validate(const void *base, size_t bytes,
			   struct shmq_geometry *out)
{
	const uint8_t *b = base;
	struct shmq_geometry g;
	uint64_t magic, signature, parts_off;
	uint32_t version, header_bytes, ready;

	if (!base)
		return -EINVAL;
	if (bytes < sizeof(struct shmq_seg_header))
		return SHMQ_ESIZE;

	/* Padding included, so that copies of the result compare equal. */
	memset(&g, 0, sizeof(g));

	/*
	 * Acquire the ready word first: it pairs with the creator's store
	 * fence before its release store, so that the identity read below is
	 * the one published with it.  Its verdict is reported last, after the
	 * identity checks, which name the more specific problem.
	 */
	ready = HDR32(ready);
	ck_pr_fence_load();

	/* Each field is loaded exactly once; only the locals are checked. */
	magic = HDR64(magic);
	version = HDR32(version);
	header_bytes = HDR32(header_bytes);
	signature = HDR64(signature);
	g.total_bytes = HDR64(total_bytes);
	g.ring_bytes = HDR64(ring_bytes);
	parts_off = HDR64(parts_off);
	g.rings_off = HDR64(rings_off);
	g.topic_id = HDR64(topic_id);
	g.partitions = HDR32(partitions);
	g.max_message = HDR32(max_message);
	g.full_policy = HDR32(full_policy);
	g.numa_node = (int32_t)HDR32(numa_node);
	g.stall_timeout_ms = HDR32(stall_timeout_ms);
	g.spill_mode = HDR32(spill_mode);

	if (magic != SHMQ_SEG_MAGIC)
		return SHMQ_EMAGIC;
	if (version != SHMQ_LAYOUT_VERSION)
		return SHMQ_EVERSION;
	if (signature != shmq__layout_signature() ||
	    header_bytes != sizeof(struct shmq_seg_header))
		return SHMQ_ELAYOUT;

	/*
	 * Bound partitions and ring_bytes before any arithmetic: with both
	 * bounded, shmq__segment_bytes() stays far below 2^64.
	 */
	if (g.partitions == 0 || g.partitions > SHMQ_MAX_PARTITIONS)
		return SHMQ_ESIZE;
	if (!ring_bytes_ok(g.ring_bytes))
		return SHMQ_ESIZE;
	if (g.max_message == 0 || g.max_message > SHMQ_MAX_MESSAGE_LIMIT(g.ring_bytes))
		return SHMQ_ESIZE;
	if (!full_policy_ok(g.full_policy))
		return SHMQ_ESIZE;
	/* 0 would let shmqd revoke every claim it sees twice. */
	if (g.stall_timeout_ms == 0 || !spill_mode_ok(g.spill_mode))
		return SHMQ_ESIZE;
	if (parts_off != SHMQ_PARTS_OFF ||
	    g.rings_off != shmq__rings_off(g.partitions))
		return SHMQ_ESIZE;
	if (g.total_bytes != shmq__segment_bytes(g.partitions, g.ring_bytes) ||
	    g.total_bytes != (uint64_t)bytes)
		return SHMQ_ESIZE;

	if (ready != SHMQ_SEG_READY)
		return SHMQ_ENOTREADY;
	if (out)
		*out = g;
	return 0;
}

#undef HDR32
#undef HDR64

static const char *validate_what(int err)
{
	switch (err) {
	case SHMQ_ESIZE:
		return "sizes or geometry in the header are inconsistent";
	case SHMQ_EMAGIC:
		return "bad magic";
	case SHMQ_EVERSION:
		return "layout version differs";
	case SHMQ_ELAYOUT:
		return "layout signature or header size differs";
	case SHMQ_ENOTREADY:
		return "not initialised (ready word unset)";
	default:
		return "invalid";
	}
}

/* Copy the name stored in the header, which nobody guarantees terminated. */
static void copy_name(char *dst, const char *src)
{
	size_t n = strnlen(src, SHMQ_NAME_MAX);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* ------------------------------------------------------------------------
 * Create
 */

static int numa_check(int node)
{
	if (numa_available() < 0)
		return shmq__fail(-EINVAL, "numa_node %d requested but NUMA is not available",
				  node);
	if (node > numa_max_node() || (unsigned)node >= SHMQ_NUMA_MASK_BITS)
		return shmq__fail(-EINVAL, "numa_node %d does not exist (max %d)",
				  node, numa_max_node());
	if (!numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node))
		return shmq__fail(-EINVAL, "numa_node %d is not available to this process",
				  node);
	return 0;
}

/*
 * Bind with mbind(2) itself: libnuma's numa_tonode_memory() reports errors
 * by printing, which the library must never do.
 */
static int bind_node(void *base, size_t len, int node)
{
	unsigned long mask[SHMQ_NUMA_MASK_BITS / (8 * sizeof(unsigned long))];

	memset(mask, 0, sizeof(mask));
	mask[(unsigned)node / SHMQ_ULONG_BITS] |= 1ul << ((unsigned)node % SHMQ_ULONG_BITS);
	/* The kernel reads maxnode - 1 bits, hence the + 1. */
	if (mbind(base, len, MPOL_BIND, mask, SHMQ_NUMA_MASK_BITS + 1, 0) < 0)
		return -errno;
	return 0;
}

static int init_mutex(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int r;

	r = pthread_mutexattr_init(&a);
	if (r)
		return -r;
	r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!r)
		r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!r)
		r = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return -r;
}

/*
 * Write every field of a freshly zeroed segment except the ready word.
 * Plain stores: nobody may use the segment until ready is published.
 */
static void init_segment(uint8_t *base, uint64_t bytes, const char *topic,
			 const uint64_t *starts,
			 const struct shmq_topic_params *p)
{
	struct shmq_seg_header *hdr = (struct shmq_seg_header *)base;
	struct shmq_map tmp = { .base = base };
	uint32_t i, j;

	hdr->magic = SHMQ_SEG_MAGIC;
	hdr->version = SHMQ_LAYOUT_VERSION;
	hdr->header_bytes = sizeof(*hdr);
	hdr->signature = shmq__layout_signature();
	hdr->total_bytes = bytes;
	hdr->ring_bytes = p->ring_bytes;
	hdr->parts_off = SHMQ_PARTS_OFF;
	hdr->rings_off = shmq__rings_off(p->partitions);
	hdr->topic_id = p->topic_id;
	hdr->created_ns = shmq__now_ns();
	hdr->partitions = p->partitions;
	hdr->max_message = p->max_message;
	hdr->full_policy = p->full_policy;
	hdr->numa_node = p->numa_node;
	hdr->stall_timeout_ms = p->stall_timeout_ms;
	hdr->spill_mode = p->spill_mode;
	hdr->owner_uid = (uint32_t)geteuid();
	copy_name(hdr->name, topic);

	for (i = 0; i < p->partitions; i++) {
		struct shmq_part_header *ph = shmq__part(&tmp, i);

		/* A partition recreated after a host restart continues its log. */
		uint64_t start = starts ? starts[i] & ~(uint64_t)(SHMQ_FRAME_ALIGN - 1) : 0;

		ph->head = start;
		ph->tail = start;
		ph->reuse = start;
		ph->spilled = start;
		ph->synced = start;
		ph->spill_hold = SHMQ_POS_NONE;
		ph->spill_error = 0;
		for (j = 0; j < SHMQ_MAX_GROUPS; j++) {
			ph->cursor[j].next = start;
			ph->cursor[j].committed = start;
			ph->cursor[j].owner = SHMQ_OWNER_NONE;
			ph->cursor[j].prev = SHMQ_OWNER_NONE;
		}
		for (j = 0; j < SHMQ_MAX_MEMBERS; j++)
			ph->hold[j] = SHMQ_POS_NONE;
	}
	for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
		struct shmq_member_slot *ms = shmq__member_slot(&tmp, i);

		ms->group = UINT32_MAX;
		ms->disk_hold = SHMQ_POS_NONE;
	}
	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++) {
		struct shmq_producer_slot *ps = shmq__producer_slot(&tmp, i);

		ps->claim_pos = SHMQ_POS_NONE;
		ps->revoked_pos = SHMQ_POS_NONE;
	}
}

int shmq__segment_create(const char *segname, const char *topic,
			 const struct shmq_topic_params *params,
			 struct shmq_map *map)
{
	return shmq__segment_create_at(segname, topic, params, NULL, map);
}

int shmq__segment_create_at(const char *segname, const char *topic,
			    const struct shmq_topic_params *params,
			    const uint64_t *starts, struct shmq_map *map)
{
	struct shmq_topic_params p = *params;
	struct shmq_seg_header *hdr;
	struct shmq_geometry geo;
	uint64_t bytes;
	void *base = MAP_FAILED;
	const char *step;
	int fd, r;

	if (!shmq__name_valid(topic))
		return shmq__fail(-EINVAL, "segment %s: invalid topic name", segname);
	r = shmq__topic_params_check(&p);
	if (r < 0)
		return r;
	/* Checked before anything exists, so that there is nothing to undo. */
	if (p.numa_node >= 0) {
		r = numa_check(p.numa_node);
		if (r < 0)
			return r;
	}
	bytes = shmq__segment_bytes(p.partitions, p.ring_bytes);
	if (bytes > SIZE_MAX || bytes > (uint64_t)INT64_MAX)
		return shmq__fail(-EFBIG, "segment %s: %llu bytes do not fit the address space",
				  segname, (unsigned long long)bytes);

	fd = shm_open(segname, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
		      (mode_t)p.mode);
	if (fd < 0)
		return shmq__fail(-errno, "segment %s: create: %s", segname,
				  strerror(errno));

	step = "fchmod";
	if (fchmod(fd, (mode_t)p.mode) < 0)
		goto fail_errno;
	step = "ftruncate";
	if (ftruncate(fd, (off_t)bytes) < 0)
		goto fail_errno;
	step = "mmap";
	base = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		goto fail_errno;
	/* Bind before the first page exists: later binding does not move pages. */
	if (p.numa_node >= 0) {
		r = bind_node(base, (size_t)bytes, p.numa_node);
		if (r < 0) {
			shmq__fail(r, "segment %s: mbind to node %d: %s", segname,
				   p.numa_node, strerror(-r));
			goto fail;
		}
	}
	/* posix_fallocate returns the error number; it leaves errno alone. */
	r = posix_fallocate(fd, 0, (off_t)bytes);
	if (r) {
		shmq__fail(-r, "segment %s: allocating %llu bytes: %s", segname,
			   (unsigned long long)bytes, strerror(r));
		r = -r;
		goto fail;
	}
	close(fd);
	fd = -1;

	hdr = base;
	init_segment(base, bytes, topic, starts, &p);
	r = init_mutex(&hdr->lock);
	if (r < 0) {
		shmq__fail(r, "segment %s: robust mutex: %s", segname, strerror(-r));
		goto fail;
	}

	/*
	 * Publish: the store fence orders every initialising store above
	 * before the ready word; it pairs with the load fence after an
	 * attacher's load of ready in shmq__segment_validate().
	 */
	ck_pr_fence_store();
	ck_pr_store_32(&hdr->ready, SHMQ_SEG_READY);

	/* Our own output must pass the check every attacher applies. */
	r = shmq__segment_validate(base, (size_t)bytes, &geo);
	if (r < 0) {
		shmq__fail(r, "segment %s: fresh segment fails validation: %s",
			   segname, validate_what(r));
		goto fail;
	}

	memset(map, 0, sizeof(*map));
	map->base = base;
	map->bytes = (size_t)bytes;
	map->hdr = hdr;
	map->geo = geo;
	map->mask = geo.ring_bytes - 1;
	copy_name(map->name, topic);
	return 0;

fail_errno:
	r = -errno;
	shmq__fail(r, "segment %s: %s: %s", segname, step, strerror(errno));
fail:
	if (base != MAP_FAILED)
		munmap(base, (size_t)bytes);
	if (fd >= 0)
		close(fd);
	/* Ours since O_EXCL succeeded: leave nothing half-built behind. */
	shm_unlink(segname);
	return r;
}

/* ------------------------------------------------------------------------
 * Attach and detach
 */

int shmq__segment_attach(const char *segname, uid_t expect_uid,
			 uint32_t expect_mode, uint64_t expect_topic_id,
			 struct shmq_map *map)
{
	struct shmq_geometry geo;
	struct shmq_seg_header *hdr;
	struct stat st;
	size_t bytes;
	void *base;
	int fd, r;

	fd = shm_open(segname, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT)
			return shmq__fail(r, "segment %s does not exist", segname);
		return shmq__fail(r, "segment %s: open: %s", segname, strerror(-r));
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return shmq__fail(r, "segment %s: fstat: %s", segname, strerror(-r));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return shmq__fail(SHMQ_EFOREIGN, "segment %s is not a regular file",
				  segname);
	}
	if (st.st_uid != expect_uid) {
		close(fd);
		return shmq__fail(SHMQ_EFOREIGN, "segment %s is owned by uid %u, not %u",
				  segname, (unsigned)st.st_uid, (unsigned)expect_uid);
	}
	if ((st.st_mode & 07777) != expect_mode) {
		close(fd);
		return shmq__fail(SHMQ_EFOREIGN, "segment %s has mode %04o, not %04o",
				  segname, (unsigned)(st.st_mode & 07777),
				  (unsigned)expect_mode);
	}
	if (st.st_size < (off_t)SHMQ_PAGE || (uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return shmq__fail(SHMQ_ESIZE, "segment %s: size %lld is impossible",
				  segname, (long long)st.st_size);
	}
	bytes = (size_t)st.st_size;
	base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	r = -errno;
	/* The mapping keeps the object alive; the descriptor is not needed. */
	close(fd);
	if (base == MAP_FAILED)
		return shmq__fail(r, "segment %s: mmap: %s", segname, strerror(-r));

	r = shmq__segment_validate(base, bytes, &geo);
	if (r < 0) {
		munmap(base, bytes);
		return shmq__fail(r, "segment %s: %s", segname, validate_what(r));
	}
	if (expect_topic_id && geo.topic_id != expect_topic_id) {
		munmap(base, bytes);
		return shmq__fail(SHMQ_EFOREIGN,
				  "segment %s belongs to topic id %016llx, not %016llx",
				  segname, (unsigned long long)geo.topic_id,
				  (unsigned long long)expect_topic_id);
	}
	hdr = base;
	/* Relaxed is enough: deletion is a hint re-checked on every call. */
	if (ck_pr_load_32(&hdr->deleted)) {
		munmap(base, bytes);
		return shmq__fail(SHMQ_EDELETED, "segment %s: topic was deleted",
				  segname);
	}

	memset(map, 0, sizeof(*map));
	map->base = base;
	map->bytes = bytes;
	map->hdr = hdr;
	map->geo = geo;
	map->mask = geo.ring_bytes - 1;
	copy_name(map->name, hdr->name);
	return 0;
}

void shmq__segment_detach(struct shmq_map *map)
{
	if (!map)
		return;
	if (map->base)
		munmap(map->base, map->bytes);
	memset(map, 0, sizeof(*map));
}
