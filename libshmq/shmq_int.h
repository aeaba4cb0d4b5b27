/*
 * shmq_int.h - private declarations shared by libshmq's modules, shmqd and
 * the tests.  Nothing here is installed or exported: internal non-static
 * functions are shmq__<module>_<verb> and hidden by -fvisibility=hidden.
 * shmqd and the tests link the static library, so they can call them.
 */
#ifndef SHMQ_INT_H
#define SHMQ_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/types.h>

#include "layout.h"
#include "shmq.h"

#define SHMQ_HIDDEN __attribute__((visibility("hidden")))

/*
 * Does an options struct from the caller reach field?  Option structs carry
 * their size first, so a caller built against an older (shorter) or newer
 * (longer) header works: fields beyond its size take their defaults.
 */
#define OPT_HAS(opts, field)                                                   \
	((opts) && (opts)->size >= offsetof(__typeof__(*(opts)), field) +      \
				   sizeof((opts)->field))

/* ------------------------------------------------------------------------
 * util.c: errors, detail strings, clocks, hashing, process identity
 */

/* Set the thread-local detail string (cold paths only).  Returns err. */
int shmq__fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void shmq__clear_detail(void);

uint64_t shmq__now_ns(void);	  /* CLOCK_REALTIME */
uint64_t shmq__mono_ns(void);	  /* CLOCK_MONOTONIC */

/*
 * clock.c: CLOCK_REALTIME for message timestamps, extrapolated from the
 * TSC between reads of the real clock.  One per producer handle (not
 * thread-safe, like the handle).
 */
struct shmq_fastclock {
	bool tsc;		/* the TSC is the kernel's clocksource */
	uint64_t base_tsc, base_ns; /* the last read of the real clock */
	uint64_t cal_tsc, cal_ns;   /* where the rate is measured from */
	uint64_t rate;		/* ns per tick, 32.32 fixed point; 0 = unknown */
	uint64_t resync_ticks;	/* read the real clock again after these */
	uint64_t last_ns;	/* the last value returned */
};
void shmq__fastclock_init(struct shmq_fastclock *c);
uint64_t shmq__fastclock_ns(struct shmq_fastclock *c);
uint64_t shmq__fnv1a64(const void *p, size_t n, uint64_t h);
#define SHMQ_FNV_BASIS 0xcbf29ce484222325ull

/* Start time of pid in clock ticks (field 22 of /proc/PID/stat), 0 if gone. */
uint64_t shmq__proc_start_ticks(pid_t pid);

/*
 * Is the process named by owner alive (not gone, not a zombie, and the same
 * process, not a recycled pid)?  Reads /proc; cold path.  start_ticks 0
 * means "not recorded yet" (a slot being taken): only the pid is checked.
 */
bool shmq__owner_alive(const struct shmq_owner *owner);

/* This process's identity, computed once per process (and after fork). */
void shmq__owner_self(struct shmq_owner *out);

/*
 * Copy a message's bytes: memcpy, but never through glibc's `rep movsb`
 * path when the destination lies 1..31 bytes after the source modulo 4096.
 * There, on the AMD Zen 3 machines shmq is measured on, every store seems
 * to the core to alias a load that follows it (4 KiB aliasing), and a copy
 * of 4 KiB or more runs at 1.5-1.9 GB/s instead of 30 (glibc 2.36 takes
 * that path from between 2 and 4 KiB up).  Where a message lands in a ring
 * against the caller's buffer is chance, so about one large message in 128
 * met it, and every one did when the two kept their distance (a bench
 * transport that batched 64 KiB messages ran 10x slower for it).  Pieces of
 * SHMQ_COPY_PIECE go through memcpy's vector loop, which does not stall so:
 * 29-31 GB/s in the bad window.  Elsewhere this is one subtraction and a
 * predicted branch.
 */
#define SHMQ_COPY_PIECE 2048u
void shmq__copy_pieces(void *dst, const void *src, size_t n);
static inline void shmq__copy(void *dst, const void *src, size_t n)
{
	if (__builtin_expect(n > SHMQ_COPY_PIECE &&
			     ((((uintptr_t)dst - (uintptr_t)src) & 4095) - 1) < 31, 0))
		shmq__copy_pieces(dst, src, n);
	else
		memcpy(dst, src, n);
}

/* Topic and group names: 1..SHMQ_NAME_MAX of [A-Za-z0-9._-], no leading '.'. */
bool shmq__name_valid(const char *name);

/* ------------------------------------------------------------------------
 * segment.c: naming, creating, attaching and validating topic segments
 */

/* Geometry of a topic, validated and copied out of shared memory. */
struct shmq_geometry {
	uint32_t partitions;
	uint64_t ring_bytes;
	uint32_t max_message;
	uint32_t full_policy;
	int32_t numa_node;
	uint32_t stall_timeout_ms;
	uint64_t topic_id;
	uint64_t total_bytes;
	uint64_t rings_off;
	uint32_t spill_mode;
};

/* An attached topic segment.  Geometry is a private copy, never re-read. */
struct shmq_map {
	uint8_t *base;
	size_t bytes;
	struct shmq_seg_header *hdr;
	struct shmq_geometry geo;
	uint64_t mask; /* ring_bytes - 1 */
	char name[SHMQ_NAME_MAX + 1];
};

/* Parameters of a topic as shmqd keeps them (topics/NAME.topic). */
struct shmq_topic_params {
	uint32_t partitions;
	uint64_t ring_bytes;
	uint32_t max_message;
	uint32_t full_policy;
	int32_t numa_node;
	uint32_t mode;
	uint32_t stall_timeout_ms;
	uint64_t topic_id;
	uint32_t spill_mode;   /* enum shmq_spill_mode, never DEFAULT once checked */
	uint64_t retain_bytes; /* 0 = no limit */
	uint64_t retain_ms;    /* 0 = no limit */
};

/* Fill in defaults and check every field.  Returns 0 or -EINVAL (detail set). */
int shmq__topic_params_check(struct shmq_topic_params *p);

uint64_t shmq__layout_signature(void);

/*
 * The namespace id of a data directory: a hash of its device and inode, so
 * that two directories never share segment names.
 */
int shmq__namespace_id(const char *dir, uint64_t *out);

/* "/shmq-<16 hex ns>-<topic>" into buf (at least SHMQ_SEGNAME_MAX bytes). */
#define SHMQ_SEGNAME_MAX (6 + 16 + 1 + SHMQ_NAME_MAX + 1)
void shmq__segment_name(uint64_t ns, const char *topic, char *buf);

/*
 * Create, size (allocating every page: ENOSPC now, never SIGBUS later),
 * optionally NUMA-bind, initialise and publish (ready word last) a segment.
 * O_EXCL|O_NOFOLLOW, mode p->mode.  Returns 0 and fills *map, -EEXIST,
 * -ENOSPC, -errno.  For shmqd.
 */
int shmq__segment_create(const char *segname, const char *topic,
			 const struct shmq_topic_params *p, struct shmq_map *map);

/*
 * The same, with every partition's log starting at starts[partition]
 * (aligned down to a frame) instead of 0: how shmqd recreates a topic whose
 * segment a host restart removed, so that offsets continue after the end
 * of the spilled log.  starts may be NULL.
 */
int shmq__segment_create_at(const char *segname, const char *topic,
			    const struct shmq_topic_params *p,
			    const uint64_t *starts, struct shmq_map *map);

/*
 * Attach an existing segment read-write after checking its owner (must be
 * expect_uid), its mode (must equal expect_mode) and its header.
 * expect_topic_id of 0 accepts any id.  Returns 0 or -ENOENT, SHMQ_EFOREIGN,
 * SHMQ_EMAGIC, SHMQ_EVERSION, SHMQ_ELAYOUT, SHMQ_ESIZE, SHMQ_ENOTREADY.
 */
int shmq__segment_attach(const char *segname, uid_t expect_uid,
			 uint32_t expect_mode, uint64_t expect_topic_id,
			 struct shmq_map *map);

void shmq__segment_detach(struct shmq_map *map);

/*
 * Validate a header found in memory of `bytes` bytes (the size of the
 * object as fstat reports it) and copy its geometry out.  Pure: no system
 * calls; the fuzz target drives it.  Returns 0 or an attach error.
 */
int shmq__segment_validate(const void *base, size_t bytes,
			   struct shmq_geometry *out);

/* ------------------------------------------------------------------------
 * topicfile.c: topics/NAME.topic in the data directory
 */

/* Read DIR/topics/NAME.topic.  Returns 0, -ENOENT, -EINVAL (malformed). */
int shmq__topic_file_read(const char *dir, const char *name,
			  struct shmq_topic_params *p, uid_t *owner);

/* Write it atomically (temp file, fsync, rename, fsync dir).  For shmqd. */
int shmq__topic_file_write(const char *dir, const char *name,
			   const struct shmq_topic_params *p);

int shmq__topic_file_remove(const char *dir, const char *name);

/* ------------------------------------------------------------------------
 * ring.c: the partition protocol (see the design note there)
 */

static inline struct shmq_part_header *shmq__part(const struct shmq_map *m,
						  uint32_t p)
{
	return (struct shmq_part_header *)(m->base + SHMQ_PARTS_OFF +
					   (uint64_t)p * sizeof(struct shmq_part_header));
}

static inline uint8_t *shmq__ring(const struct shmq_map *m, uint32_t p)
{
	return m->base + m->geo.rings_off + (uint64_t)p * m->geo.ring_bytes;
}

static inline struct shmq_group_slot *shmq__group(const struct shmq_map *m,
						  uint32_t g)
{
	return (struct shmq_group_slot *)(m->base + SHMQ_GROUPS_OFF) + g;
}

static inline struct shmq_producer_slot *shmq__producer_slot(const struct shmq_map *m,
							     uint32_t i)
{
	return (struct shmq_producer_slot *)(m->base + SHMQ_PRODUCERS_OFF) + i;
}

static inline struct shmq_member_slot *shmq__member_slot(const struct shmq_map *m,
							 uint32_t i)
{
	return (struct shmq_member_slot *)(m->base + SHMQ_MEMBERS_OFF) + i;
}

static inline uint32_t shmq__frame_bytes(size_t key_len, size_t value_len)
{
	uint64_t n = SHMQ_FRAME_HEADER + (uint64_t)key_len + value_len;
	return (uint32_t)((n + SHMQ_FRAME_ALIGN - 1) & ~(uint64_t)(SHMQ_FRAME_ALIGN - 1));
}

/* Bytes of extension before the key of a message frame with these flags. */
static inline uint32_t shmq__frame_ext_bytes(uint32_t flags)
{
	return flags & SHMQ_FRAME_PRODUCER ? SHMQ_FRAME_EXT : 0;
}

/* A frame header copied out of the ring and checked. */
struct shmq_frame_view {
	uint64_t pos;
	uint32_t size;
	bool pad;
	bool gap; /* a pad in the spill files over offsets never spilled */
	uint16_t key_len;
	uint32_t value_len;
	uint64_t timestamp_ns;
	/* SHMQ_FRAME_PRODUCER: both non-zero, the extension before the key. */
	uint64_t producer_id;
	uint64_t seq;
	const uint8_t *key;   /* into the ring */
	const uint8_t *value; /* into the ring */
};

enum shmq_frame_status {
	SHMQ_FRAME_OK = 0,	  /* committed, checked, view filled */
	SHMQ_FRAME_PENDING = 1,	  /* not committed for this position (yet) */
	SHMQ_FRAME_BAD = -1,	  /* committed but inconsistent: corrupt */
};

/*
 * Decode the frame at log position pos of a ring of ring_bytes (a power of
 * two) without trusting any byte of it.  max_frame bounds size.  The fuzz
 * target drives this.
 */
int shmq__frame_decode(const uint8_t *ring, uint64_t ring_bytes, uint64_t pos,
		       uint32_t max_frame, struct shmq_frame_view *view);

/* Largest frame a topic admits (header + max_message, aligned). */
static inline uint32_t shmq__max_frame(const struct shmq_map *m)
{
	return shmq__frame_bytes(0, m->geo.max_message);
}

/* Producer-side state of one claim. */
struct shmq_ring_claim {
	uint32_t part;
	uint64_t pos;	    /* claim start (wrap padding included) */
	uint32_t len;	    /* claim length */
	uint64_t frame_pos; /* where the message's frame starts */
	uint32_t frame_len;
};

/*
 * Claim frame_len bytes in partition part for the producer in slot.
 * Honours the topic's full policy; waits up to timeout_ms for BLOCK.
 * limit_cache is the producer's cached "head may grow to here" for this
 * partition (in/out).  Returns 0, -EAGAIN, -ETIMEDOUT->-EAGAIN, SHMQ_ECORRUPT,
 * SHMQ_EDELETED.
 */
int shmq__ring_claim(struct shmq_map *m, struct shmq_producer_slot *slot,
		     uint32_t part, uint32_t frame_len, int timeout_ms,
		     bool busy_wait, uint64_t *limit_cache,
		     struct shmq_ring_claim *c);

/*
 * A batch's claim: as shmq__ring_claim, for frames of sizes[0..n), n >= 1,
 * of which it claims the first *taken, back to back from c->frame_pos
 * (c->frame_len is their total).  A claim stops at the ring's end and, but
 * for a first frame that is larger, at an eighth of the ring (ring.c,
 * "Batches").
 */
int shmq__ring_claim_batch(struct shmq_map *m, struct shmq_producer_slot *slot,
			   uint32_t part, const uint32_t *sizes, uint32_t n,
			   int timeout_ms, bool busy_wait, uint64_t *limit_cache,
			   struct shmq_ring_claim *c, uint32_t *taken);

/*
 * Seal every frame of a batch's claim but the first (sizes[0..n) as
 * claimed), whose headers and payloads are written; shmq__ring_commit then
 * publishes them all with the first frame's seal.
 */
void shmq__ring_seal_rest(struct shmq_map *m, const struct shmq_ring_claim *c,
			  const uint32_t *sizes, uint32_t n);

/*
 * Tests: if set, shmq_send_batch() calls it between each of its claims
 * and the commit of the claim, with every frame but the first sealed
 * (the claim's number within the call, from 0).
 */
extern void (*shmq__batch_hook)(uint32_t claim);

/*
 * Seal the claimed frame as a message (or as padding when pad).  The caller
 * has written a message's whole header but the seal (the size included);
 * padding gets its header here.  Returns 0 or SHMQ_EREVOKED.
 */
int shmq__ring_commit(struct shmq_map *m, struct shmq_producer_slot *slot,
		      const struct shmq_ring_claim *c, bool pad);

/* Seal [pos, pos + len) of part as padding (one or two frames). For shmqd. */
void shmq__ring_pad(struct shmq_map *m, uint32_t part, uint64_t pos, uint32_t len);

/* Wake consumers sleeping on the topic (after a commit). */
void shmq__ring_wake_consumers(struct shmq_map *m);

/*
 * Take the next frame for group g in partition part, for member slot index
 * member.  On success the member's hold protects the frame until
 * shmq__ring_release().  Padding is skipped.  With lease (the member's slot,
 * for a SHARED member), its lease is HELD on what it takes (lease.c).  Returns 0, -EAGAIN (nothing
 * committed yet), SHMQ_ECORRUPT, SHMQ_TAKE_DISK_TAKEN, or SHMQ_TAKE_DISK: on a spilling topic,
 * the group's next frame (at view->pos) is no longer in the ring; read it
 * from the spill files and take it with shmq__ring_take_at().
 */
#define SHMQ_TAKE_DISK 1
/* ... or: the frame at view->pos was taken for this member (the cursor
 * moved past it), but its ring copy may be reused: read it from disk. */
#define SHMQ_TAKE_DISK_TAKEN 2
int shmq__ring_take(struct shmq_map *m, uint32_t part, uint32_t g,
		    uint32_t member, struct shmq_member_slot *lease,
		    struct shmq_frame_view *view);

/*
 * Take what lies at [pos, next) for group g, read from elsewhere (the spill
 * files), or skip over it: CAS the cursor from pos to next.  Returns 0, or
 * -EAGAIN when another member moved the cursor first.
 */
int shmq__ring_take_at(struct shmq_map *m, uint32_t part, uint32_t g,
		       uint64_t pos, uint64_t next);

/*
 * Untethered group g (ring.c, "Untethered groups"): take the next message of
 * part for a member and copy its key and value into buf (shmq__max_frame
 * bytes), where view->key and view->value then point.  Publishes no hold.
 * Returns 0, -EAGAIN (nothing yet), SHMQ_ECORRUPT, or SHMQ_ELAPPED with
 * *missed (> 0) messages the group lost before view->pos, its position now.
 */
int shmq__ring_take_copy(struct shmq_map *m, uint32_t part, uint32_t g,
			 uint8_t *buf, struct shmq_frame_view *view,
			 uint64_t *missed);

/* Drop member's hold in part; wake blocked producers if any wait. */
void shmq__ring_release(struct shmq_map *m, uint32_t part, uint32_t member);

/*
 * The lowest position that group g (or, with g == UINT32_MAX, any group)
 * still needs in part: its cursor and its members' holds.  Returns
 * head when nothing is held.
 */
uint64_t shmq__ring_horizon(struct shmq_map *m, uint32_t part, uint32_t g);

/*
 * Move group g's cursor in part to pos (SHMQ_OFFSET_EARLIEST/LATEST allowed)
 * under the partition's tail lock, so that no producer moves the tail past
 * it meanwhile.
 * Returns 0, -EINVAL (not a frame boundary), SHMQ_EGONE.
 */
int shmq__ring_seek(struct shmq_map *m, uint32_t part, uint32_t g,
		    uint64_t pos);

/*
 * The same for a position below the tail that the caller found in the
 * spill files (a spilling topic): no ring check.
 */
int shmq__ring_seek_disk(struct shmq_map *m, uint32_t part, uint32_t g,
			 uint64_t pos);

/*
 * Under the tail lock (the frames from tail to head cannot be reused
 * meanwhile), find the first message at or after `from` (raised to the
 * tail) whose timestamp is >= ts.  *pos is its offset, or the first
 * uncommitted position (head, normally) when there is none.
 */
int shmq__ring_find_time(struct shmq_map *m, uint32_t part, uint64_t from,
			 uint64_t ts, uint64_t *pos);

/*
 * Under the tail lock, decode the frame at pos (its view's key and value
 * are valid only until the lock is let go: use the header fields).
 * Returns what shmq__frame_decode does (SHMQ_FRAME_PENDING also at or past
 * head), SHMQ_FRAME_GONE when pos is below the tail (the ring no longer
 * has it: the frame was sealed, committed or padded, before the tail
 * passed it), or -EAGAIN (the lock stayed taken).
 */
#define SHMQ_FRAME_GONE 2
int shmq__ring_frame_at(struct shmq_map *m, uint32_t part, uint64_t pos,
			struct shmq_frame_view *v);

/* The partition's tail (oldest offset still in the ring). */
uint64_t shmq__ring_tail(struct shmq_map *m, uint32_t part);

/*
 * Check the partition's invariants (tail <= horizon <= head, head - tail
 * <= ring, frames between tail and head well formed where committed).
 * Returns 0 or SHMQ_ECORRUPT with a detail.  Tests and shmqd call it.
 */
int shmq__ring_check(struct shmq_map *m, uint32_t part);

/* ------------------------------------------------------------------------
 * idempotent.c: producer identities and their sequences
 */

static inline struct shmq_ident_slot *shmq__ident_slot(const struct shmq_map *m,
						       uint32_t i)
{
	return (struct shmq_ident_slot *)(m->base + SHMQ_IDENTS_OFF) + i;
}

/*
 * Take identity `name` of the topic for this process (registering it on
 * first use), and settle what a dead previous holder left in every
 * partition.  Returns 0 with its slot index and producer id, or -EINVAL,
 * -EBUSY (a live holder), -EMFILE, -EEXIST (another name has the same
 * producer id), -EAGAIN (a lock stayed taken); detail set.
 */
int shmq__ident_open(struct shmq_map *m, const char *name, uint32_t *index,
		     uint64_t *id);
/* Let the identity go (it stays registered). */
void shmq__ident_close(struct shmq_map *m, uint32_t index);
/* The highest sequence stored in part (0 = none). */
uint64_t shmq__ident_last(struct shmq_map *m, uint32_t part, uint32_t index);
/* Send protocol steps 3 and 5 (see idempotent.c). */
void shmq__ident_try(struct shmq_map *m, uint32_t part, uint32_t index,
		     uint64_t seq, uint64_t pos);
void shmq__ident_stored(struct shmq_map *m, uint32_t part, uint32_t index,
			uint64_t seq, uint64_t pos);
void shmq__ident_not_stored(struct shmq_map *m, uint32_t part, uint32_t index,
			    uint64_t seq);

/*
 * Tests: die by SIGKILL at a point of the send protocol, when the point
 * is reached for the (countdown + 1)th time.  0 = disarmed (the send path
 * of an identity looks at one global).
 */
enum { SHMQ_CRASH_NONE = 0, SHMQ_CRASH_TRIED = 1, SHMQ_CRASH_COMMITTED = 2 };
extern int shmq__ident_crash_point;
extern uint32_t shmq__ident_crash_countdown;
void shmq__ident_crash(int point);

/*
 * shmqd is about to pad (dead producer) or has padded (revoked claim) the
 * claim [pos, pos + len) of partition part made by the producer in slot s:
 * if that producer has an identity whose attempt is this claim's frame,
 * mark the attempt as not stored.
 */
void shmq__ident_claim_padded(struct shmq_map *m, struct shmq_producer_slot *s,
			      uint32_t part, uint64_t pos, uint32_t len);

/* ------------------------------------------------------------------------
 * client.c: the client handle and topic lookup
 */
struct shmq_topic_ref;

struct shmq_client {
	char *dir;   /* realpath of the data directory */
	uint64_t ns; /* namespace id */
	pthread_mutex_t lock;	     /* guards topics */
	struct shmq_topic_ref *topics; /* attached segments, shared by handles */
};

/*
 * Attach topic name of the client's namespace, or share the mapping the
 * client already has of it: the topic file is read each time, and a cached
 * mapping is reused only while its topic id matches and it is not deleted.
 * The file says who must own the segment, its mode and its id; the segment
 * must agree.  Returns 0 and *out, or the errors of shmq__topic_file_read
 * and shmq__segment_attach.  Release with shmq__topic_put().  Thread-safe.
 *
 * Sharing one mapping per topic and client keeps the page tables small and
 * lets ThreadSanitizer see producers and consumers of one process touch the
 * same addresses.
 */
int shmq__topic_get(shmq_client_t *c, const char *name, struct shmq_map **out);
void shmq__topic_put(shmq_client_t *c, struct shmq_map *m);

/*
 * For waiting on several consumers at once (subscriptions): announce a
 * sleeper on c's topic and return the futex word and the value to wait
 * for.  The caller must look at c again (poll with timeout 0) after this
 * and before it sleeps (see wait.c).
 */
uint32_t shmq__consumer_prepare_wait(shmq_consumer_t *c, uint32_t **word);

/* How many messages this consumer was given from spill files (tests). */
uint64_t shmq__consumer_disk_reads(const shmq_consumer_t *c);

/* Lock the segment's registration mutex (robust; bounded wait). */
int shmq__seg_lock(struct shmq_map *m);
void shmq__seg_unlock(struct shmq_map *m);

/* ------------------------------------------------------------------------
 * group.c: partition ownership in PARTITIONED groups
 */

/*
 * Recompute group g's owners from its live members, leaving out member
 * `gone` (one that is leaving; UINT32_MAX for none), and bump its
 * generation.  No-op for SHARED groups.  Under the registration mutex.
 */
void shmq__group_rebalance(struct shmq_map *m, uint32_t g, uint32_t gone);

/*
 * member, the previous owner of partition p, lets go of it (it holds
 * nothing of p any more): clear the new owner's PENDING.  Returns whether
 * there was anything to let go.  Under the registration mutex.
 */
bool shmq__group_let_go(struct shmq_map *m, uint32_t p, uint32_t g,
			uint32_t member);

/* ------------------------------------------------------------------------
 * lease.c: SHARED group members' leases on what they hold
 */

/* SHMQ_LEASE_FREE, HELD or PARKED of a lease word. */
uint32_t shmq__lease_state(uint64_t word);

/*
 * Before the CAS that takes pos of part: the member's own lease (FREE)
 * becomes HELD on it, as delivery number count.
 */
void shmq__lease_prepare(struct shmq_member_slot *s, uint32_t part,
			 uint64_t pos, uint32_t count);

/*
 * The member is done with what its lease is on (an ack, or a take that lost
 * its CAS).  Returns 0 (done: nobody else will get it), or SHMQ_EREVOKED
 * (it ran past the ack timeout and another member took it meanwhile).
 */
int shmq__lease_end(struct shmq_map *m, struct shmq_member_slot *s);

/*
 * Park the lease `held` (a HELD word read from s) for delivery again, for
 * `reason` (SHMQ_PARKED_*).  Returns false if the word changed meanwhile.
 */
bool shmq__lease_park(struct shmq_map *m, struct shmq_member_slot *s,
		      uint64_t held, uint32_t reason);

/* A parked lease as seen by a member that may take it. */
struct shmq_lease_view {
	uint32_t slot;
	uint32_t part;
	uint64_t word;
	uint64_t pos;
	uint32_t count;	 /* deliveries so far */
	uint32_t reason; /* SHMQ_PARKED_* */
};

/* A parked lease of group g, looking from member slot `from` on. */
bool shmq__lease_find_parked(struct shmq_map *m, uint32_t g, uint32_t from,
			     struct shmq_lease_view *out);

/*
 * Take the parked lease v of group g: CAS it to FREE (another member's), or
 * with back, to HELD again (the caller's own, as delivery count + 1).  The
 * caller's hazard on v->pos is published first.  Returns false when another
 * member (or a late ack) won it.
 */
bool shmq__lease_take_parked(struct shmq_map *m, uint32_t g,
			     const struct shmq_lease_view *v, bool back);

/* ------------------------------------------------------------------------
 * reap.c: recovery from dead and stalled processes (shmqd)
 */

/* What the reaper remembers between scans for one producer slot. */
struct shmq_reap_slot_memo {
	uint64_t claim_pos;
	uint64_t first_seen_ns; /* 0: nothing seen (a zeroed memo is valid) */
};

struct shmq_reap_state {
	uint64_t passes;
	/*
	 * This pass looks at everything (shmqd learnt of a death): members
	 * and idle slots now, and a claim's owner even at its first sighting.
	 */
	bool force;
	struct shmq_reap_slot_memo producer[SHMQ_MAX_PRODUCERS];
	/*
	 * Per member slot: the HELD lease word seen, and since when (lease.c:
	 * shmqd times ack timeouts itself, so members read no clock).
	 */
	struct shmq_reap_lease_memo {
		uint64_t word;
		uint64_t first_seen_ns;
	} member[SHMQ_MAX_MEMBERS];
};

struct shmq_reap_stats {
	uint32_t dead_producers; /* slots freed */
	uint32_t dead_members;
	uint32_t padded_dead;	 /* claims padded because their producer died */
	uint32_t padded_stalled; /* claims revoked after the stall timeout */
	uint32_t expired_leases; /* messages held past an ack timeout, parked */
};

/*
 * One reaper pass over a topic: free the slots of dead producers and
 * members, pad over claims their producers abandoned, and revoke claims
 * held past the stall timeout.  now_ns is CLOCK_MONOTONIC.  Cheap when
 * nothing is wrong (no /proc reads for claims seen only once).
 */
void shmq__reap_topic(struct shmq_map *m, struct shmq_reap_state *st,
		      uint64_t now_ns, struct shmq_reap_stats *stats);

/* ------------------------------------------------------------------------
 * wait.c: futex wait and wake on words in shared memory
 */

/* Sleep while *word == expected, up to timeout_ns (UINT64_MAX = for ever). */
void shmq__futex_wait(uint32_t *word, uint32_t expected, uint64_t timeout_ns);
void shmq__futex_wake_all(uint32_t *word);

/*
 * An event: a sequence word and a "someone may sleep" flag (see wait.c).
 * Waiter: s = shmq__event_prepare(seq, flag); re-check the condition;
 * shmq__futex_wait(seq, s, timeout).  Waker: change the condition, make it
 * visible with a full barrier, then shmq__event_signal(seq, flag).
 */
uint32_t shmq__event_prepare(uint32_t *seq, uint32_t *flag);
void shmq__event_signal(uint32_t *seq, uint32_t *flag);

/* ------------------------------------------------------------------------
 * control.c / control.h: the client side of shmqd's socket
 */
#define SHMQ_CONTROL_SOCKET "control.sock"
#define SHMQ_TOPICS_DIR	    "topics"
#define SHMQ_LOCK_FILE	    "shmqd.lock"

struct shmq_ctl_request;
struct shmq_ctl_reply;

/*
 * Send one request to the shmqd serving dir and read its reply (bounded by
 * timeout_ms).  Fills magic and version of req.  Returns 0 when a reply came
 * (its status is the answer), SHMQ_ENODAEMON (no socket, or nobody listens),
 * SHMQ_EPROTO (malformed reply), -ETIMEDOUT, or -errno.
 */
int shmq__control_call(const char *dir, struct shmq_ctl_request *req,
		       struct shmq_ctl_reply *rep, int timeout_ms);

#endif /* SHMQ_INT_H */
