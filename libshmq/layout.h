/*
 * layout.h - the shared-memory ABI of a topic segment.
 *
 * Every struct that lives in shared memory is here, and nothing else.  A
 * change to anything in this file bumps SHMQ_LAYOUT_VERSION; the layout
 * signature (shmq__layout_signature) also changes with any size or offset,
 * so two builds that disagree refuse each other's segments.
 *
 * One POSIX shared-memory object per topic, named by the namespace and the
 * topic (see segment.c).  All values are little-endian host integers; the
 * segment never holds a pointer, only offsets and lengths.
 *
 *   offset 0        +--------------------------------------------+
 *                   | struct shmq_seg_header         (4 KiB)     |
 *                   |   identity (magic, version, signature,     |
 *                   |   geometry), ready word, wait words,       |
 *                   |   registration mutex                       |
 *   SHMQ_GROUPS_OFF +--------------------------------------------+
 *                   | struct shmq_group_slot  [SHMQ_MAX_GROUPS]  |
 *   SHMQ_PRODUCERS_OFF -----------------------------------------+
 *                   | struct shmq_producer_slot [MAX_PRODUCERS]  |
 *   SHMQ_MEMBERS_OFF +-------------------------------------------+
 *                   | struct shmq_member_slot [SHMQ_MAX_MEMBERS] |
 *   SHMQ_IDENTS_OFF +--------------------------------------------+
 *                   | struct shmq_ident_slot [SHMQ_MAX_IDENTS]   |
 *   SHMQ_PARTS_OFF  +--------------------------------------------+
 *                   | struct shmq_part_header [partitions]       |
 *                   |   head (producers) | tail (producers)      |
 *                   |   cursor per group (members)               |
 *                   |   hold per member  (members)               |
 *                   |   sequences per identity (its holder)      |
 *   rings_off       +--------------------------------------------+
 *                   | ring 0: ring_bytes of frames               |
 *                   | ring 1 ...                                 |
 *                   +--------------------------------------------+
 *
 * A ring holds frames back to back.  A frame never crosses the end of the
 * ring: a producer whose frame would not fit claims the rest of the ring as
 * a padding frame as well.
 *
 *   frame at log position pos, stored at ring[pos & (ring_bytes - 1)]:
 *   +-------+------+---------+-------+-----------+-----+--------------+
 *   | seal  | size | key_len | flags | value_len | crc | timestamp_ns |  32 B
 *   +-------+------+---------+-------+-----------+-----+--------------+
 *   | [producer id, sequence: 16 B, with SHMQ_FRAME_PRODUCER only]      |
 *   | key (key_len bytes) | value (value_len bytes) | zero to align  |
 *   +-------------------------------------------------------------------+
 *
 * The seal is what makes a frame readable.  It is written last, with
 * release ordering, as pos | SHMQ_SEAL_COMMITTED (| SHMQ_SEAL_PAD for
 * padding).  A frame left by an earlier lap carries an older position, and
 * a frame being written carries no COMMITTED bit for this position, so a
 * reader tells the three apart by comparing the seal with the position it
 * expects.  The protocol is described in ring.c.
 */
#ifndef SHMQ_LAYOUT_H
#define SHMQ_LAYOUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "shmq.h"

#define SHMQ_LAYOUT_VERSION 6u
#define SHMQ_SEG_MAGIC	    0x31676573716d6873ull /* "shmqseg1" */
#define SHMQ_SEG_READY	    0x59444145u		  /* "EADY" */

#define SHMQ_CACHELINE 64u
#define SHMQ_PAGE      4096u

/* Frames. */
#define SHMQ_FRAME_ALIGN	32u
#define SHMQ_FRAME_HEADER	32u
#define SHMQ_SEAL_COMMITTED	0x1ull
#define SHMQ_SEAL_PAD		0x2ull
#define SHMQ_SEAL_FLAGS		(SHMQ_FRAME_ALIGN - 1ull)

struct shmq_frame {
	uint64_t seal;	       /* pos | COMMITTED [| PAD]; written last */
	uint32_t size;	       /* whole frame with header, multiple of 32 */
	uint16_t key_len;
	uint16_t flags;	       /* SHMQ_FRAME_GAP (pads), SHMQ_FRAME_PRODUCER */
	uint32_t value_len;
	uint32_t crc;	       /* CRC32C of key and value once spilled, else 0 */
	uint64_t timestamp_ns; /* CLOCK_REALTIME at publication */
};
_Static_assert(sizeof(struct shmq_frame) == SHMQ_FRAME_HEADER, "frame header");
_Static_assert(offsetof(struct shmq_frame, seal) == 0, "seal first");
_Static_assert(offsetof(struct shmq_frame, size) == 8, "size");
_Static_assert(offsetof(struct shmq_frame, timestamp_ns) == 24, "timestamp");

/*
 * The largest key + value a ring admits.  A claim that meets the end of the
 * ring also covers the rest of it as padding: at worst (ring - off) + frame
 * bytes with off > ring - frame.  With frame <= ring / 2 that always fits in
 * an empty ring.
 */
#define SHMQ_MAX_MESSAGE_LIMIT(ring_bytes) ((ring_bytes) / 2 - SHMQ_FRAME_HEADER)

/*
 * Frame flags.  GAP: in a spill file, a padding frame over offsets that
 * every group had consumed before they had to go to disk; their messages
 * are not there (a reader that lands in one reports SHMQ_EGONE).
 * PRODUCER: a message from a producer with an identity (idempotent.c); a
 * struct shmq_frame_ext follows the header, before the key, counted in
 * size (and in the CRC of a spilled frame).  Its producer id and sequence
 * are never 0.  No other bit is set in a message's flags.
 */
#define SHMQ_FRAME_GAP	    0x1u
#define SHMQ_FRAME_PRODUCER 0x2u

struct shmq_frame_ext {
	uint64_t producer_id;
	uint64_t seq;
};
#define SHMQ_FRAME_EXT 16u
_Static_assert(sizeof(struct shmq_frame_ext) == SHMQ_FRAME_EXT, "frame extension");

/* A position no frame has: "no claim", "no hold". */
#define SHMQ_POS_NONE UINT64_MAX

/*
 * The cursor of an untethered group while a producer's tail walk takes the
 * frame at it away from the group (ring.c, make_room): the position with
 * this bit set.  Positions are frame-aligned, so the bit is free.  Members
 * leave such a cursor alone.
 */
#define SHMQ_CURSOR_WALKER 0x1ull

/* Segment header. */
struct shmq_seg_header {
	/* Identity: written once by shmqd before ready, then read-only. */
	uint64_t magic;
	uint32_t version;
	uint32_t header_bytes;
	uint64_t signature;
	uint64_t total_bytes;
	uint64_t ring_bytes;
	uint64_t parts_off;
	uint64_t rings_off;
	uint64_t topic_id;
	uint64_t created_ns;
	uint32_t partitions;
	uint32_t max_message;
	uint32_t full_policy;
	int32_t numa_node;
	uint32_t stall_timeout_ms;
	uint32_t owner_uid;
	char name[SHMQ_NAME_MAX + 8];
	uint32_t spill_mode; /* enum shmq_spill_mode */
	uint32_t reserved_id;

	/* State. */
	uint32_t ready __attribute__((aligned(SHMQ_CACHELINE)));
	uint32_t deleted;     /* set by shmqd before unlink */
	uint32_t revoked;     /* claims padded over while their producer lives */
	uint32_t daemon_pid;  /* shmqd that last adopted the segment */

	/* Consumers waiting for data: an event (wait.c) producers signal. */
	uint32_t data_seq __attribute__((aligned(SHMQ_CACHELINE)));
	uint32_t data_waiters; /* flag: a consumer may be asleep */

	/* Producers waiting for space: an event consumers signal. */
	uint32_t space_seq __attribute__((aligned(SHMQ_CACHELINE)));
	uint32_t space_waiters; /* flag: a producer may be asleep */

	/* Producers waiting for a durable acknowledgement: shmqd signals. */
	uint32_t sync_seq __attribute__((aligned(SHMQ_CACHELINE)));
	uint32_t sync_waiters; /* flag */

	/* Guards group creation and member registration (cold path only). */
	pthread_mutex_t lock __attribute__((aligned(SHMQ_CACHELINE)));
};
_Static_assert(sizeof(struct shmq_seg_header) <= SHMQ_PAGE, "header fits a page");
_Static_assert(offsetof(struct shmq_seg_header, magic) == 0, "magic first");

/* Consumer groups. */
enum shmq_group_state { SHMQ_GROUP_FREE = 0, SHMQ_GROUP_ACTIVE = 1 };

struct shmq_group_slot {
	uint32_t state; /* enum shmq_group_state; ACTIVE stored last */
	uint32_t mode;	/* enum shmq_group_mode; 0 (old groups) is SHARED */
	uint64_t created_ns;
	char name[SHMQ_NAME_MAX + 8];
	uint32_t generation; /* PARTITIONED: bumped after each rebalance */
	uint32_t untethered; /* 1: never holds producers back (ring.c); set at creation */
	/*
	 * SHARED: how many member slots hold a parked message (a lease in
	 * state PARKED, see below): members look for one only when this is
	 * not 0, so an ordinary poll reads one line that rarely changes.
	 */
	uint32_t parked;
	uint32_t reserved1;
	/* Counters for stat, only ever incremented. */
	uint64_t redelivered;	/* deliveries with a delivery count above 1 */
	uint64_t dead_lettered; /* messages sent to the dead-letter topic */
	uint64_t expired;	/* leases that ran past the ack timeout */
};
_Static_assert(sizeof(struct shmq_group_slot) == 128, "group slot");

/*
 * Identity of an attached process: pid and its start time in clock ticks
 * since boot (/proc/PID/stat field 22), which tells a recycled pid apart.
 */
struct shmq_owner {
	uint32_t pid; /* 0 = slot free */
	uint32_t reserved;
	uint64_t start_ticks;
};

/* One per producer handle. */
struct shmq_producer_slot {
	struct shmq_owner owner;
	uint64_t claim_pos;  /* start of the outstanding claim, or POS_NONE */
	uint32_t claim_len;  /* bytes claimed, wrap padding included */
	uint32_t claim_part; /* its partition */
	uint64_t revoked_pos; /* set by shmqd when it padded the claim over */
	uint32_t ident;	     /* identity slot + 1 (idempotent.c), 0 = none */
	uint8_t reserved[64 - 44];
};
_Static_assert(sizeof(struct shmq_producer_slot) == 64, "producer slot");

/*
 * The lease of a SHARED group member on the message it holds (consumer.c,
 * "Leases").  The word packs a serial, bumped by each lease the member
 * takes, with a state, so that a CAS on it never succeeds against an older
 * lease (no ABA):
 *
 *   FREE    the member holds nothing under a lease
 *   HELD    it holds lease_pos (taken, not yet acknowledged)
 *   PARKED  lease_pos waits to be delivered again, to any member: it was
 *           given back (nack), its ack timeout ran out, or its member died
 */
#define SHMQ_LEASE_FREE	  0u
#define SHMQ_LEASE_HELD	  1u
#define SHMQ_LEASE_PARKED 2u
#define SHMQ_LEASE_STATE  3ull
#define SHMQ_LEASE_SERIAL 4ull /* one serial step */

/* Why a lease was parked (lease_reason; struct shmq_dead_letter.reason). */
#define SHMQ_PARKED_NACK    SHMQ_REDELIVER_NACK
#define SHMQ_PARKED_EXPIRED SHMQ_REDELIVER_ACK_TIMEOUT
#define SHMQ_PARKED_DIED    SHMQ_REDELIVER_MEMBER_DIED

/* Member flags (struct shmq_member_slot.flags). */
/*
 * Closed while its parked message waited: the slot stays (its hold keeps
 * the message) until another member takes it; shmqd then frees it.
 */
#define SHMQ_MEMBER_LEFT 0x2u

/* One per consumer handle. */
struct shmq_member_slot {
	struct shmq_owner owner;
	uint32_t group; /* index into the group table */
	uint32_t disk_part; /* partition of disk_hold */
	/*
	 * A message this member took from the spill files and holds: counts
	 * in its group's commit horizon (not in the producers' horizon: the
	 * ring does not hold it), or SHMQ_POS_NONE.
	 */
	uint64_t disk_hold;
	uint32_t flags;		 /* SHMQ_MEMBER_* */
	uint32_t ack_timeout_ms; /* 0: leases never expire */
	/*
	 * SHARED groups: the lease (see above) and what it is on.  The
	 * fields are written by whoever moves the lease word into HELD or
	 * PARKED, before it (release); read by others after it (acquire).
	 */
	uint64_t lease __attribute__((aligned(SHMQ_CACHELINE)));
	uint64_t lease_pos;
	uint32_t lease_part;
	uint32_t lease_count;	 /* delivery number of lease_pos */
	uint64_t lease_reserved;  /* 0 (shmqd times ack timeouts itself) */
	uint32_t lease_reason;	 /* SHMQ_PARKED_*, while PARKED */
	uint8_t reserved1[64 - 36];
};
_Static_assert(sizeof(struct shmq_member_slot) == 128, "member slot");
_Static_assert(offsetof(struct shmq_member_slot, lease) == 64, "lease line");

/*
 * Producer identities (idempotent.c).  A slot is taken, under the
 * registration mutex, the first time a producer opens with a name, and
 * stays for the topic's life, so that its sequences outlive its holders.
 * owner is the one live process using it (pid 0: nobody).
 */
enum shmq_ident_state { SHMQ_IDENT_FREE = 0, SHMQ_IDENT_ACTIVE = 1 };

struct shmq_ident_slot {
	uint32_t state; /* enum shmq_ident_state; ACTIVE stored last */
	uint32_t reserved0;
	struct shmq_owner owner;
	uint64_t producer_id; /* carried by its frames; never 0 */
	uint64_t created_ns;
	char name[SHMQ_NAME_MAX + 8];
	uint8_t reserved[128 - 40 - (SHMQ_NAME_MAX + 8)];
};
_Static_assert(sizeof(struct shmq_ident_slot) == 128, "identity slot");

/*
 * An identity's sequences in one partition, written by its holder (and a
 * successor, and shmqd's reaper, once the holder is dead; see
 * idempotent.c for the protocol).  try_seq has SHMQ_TRY_DONE once the
 * attempt is known not to be stored.
 */
struct shmq_ident_seq {
	uint64_t last_seq; /* highest sequence stored, 0 = none */
	uint64_t last_pos; /* its offset */
	uint64_t try_seq;  /* sequence of the frame being published */
	uint64_t try_pos;  /* that frame's offset */
};
#define SHMQ_TRY_DONE (1ull << 63)

/*
 * Owner of a partition in a PARTITIONED group: a member slot index, or
 * NONE; with PENDING, the owner waits until the previous owner (prev) has
 * let go (see group.c).
 */
#define SHMQ_OWNER_NONE	   0x7fffffffu
#define SHMQ_OWNER_PENDING 0x80000000u

/* A group's position in one partition.  Written by the group's members. */
struct shmq_cursor {
	uint64_t next;	    /* next position to hand out (members CAS it) */
	uint64_t committed; /* committed position */
	uint32_t owner;	    /* PARTITIONED: SHMQ_OWNER_* or a member index */
	uint32_t prev;	    /* PARTITIONED: the owner before, while PENDING */
	uint8_t reserved[SHMQ_CACHELINE - 40];
	/*
	 * Untethered groups: messages producers took away from the group
	 * (lapped) or that a member lost while copying (ring.c), and how many
	 * of them members have reported so far.  Both only grow.
	 */
	uint64_t missed;
	uint64_t missed_reported;
};
_Static_assert(sizeof(struct shmq_cursor) == SHMQ_CACHELINE, "cursor");
_Static_assert(offsetof(struct shmq_cursor, missed) == 48, "missed counts");

struct shmq_part_header {
	/* Producers: CAS to claim [head, head + len). */
	uint64_t head __attribute__((aligned(SHMQ_CACHELINE)));
	/*
	 * Producers, under tail_lock.  tail: oldest position readers may
	 * still find in the ring.  reuse: how far producers may overwrite
	 * (reuse <= tail; see ring.c, make_room).
	 */
	uint64_t tail __attribute__((aligned(SHMQ_CACHELINE)));
	uint64_t reuse;
	/*
	 * Serialises moving the tail (producers, make_room) with moving a
	 * cursor by seek or group start: pid of the holder, 0 when free.
	 */
	uint32_t tail_lock __attribute__((aligned(SHMQ_CACHELINE)));
	uint8_t reserved0[SHMQ_CACHELINE - 4];
	/*
	 * shmqd's spiller.  spilled: every frame below it that a group still
	 * needs is on disk, so producers may reuse it.  synced: frames below
	 * it are on disk and synced (durable acknowledgements wait for it).
	 * spill_hold: the spiller is copying frames from here (a hazard, like
	 * a member's hold; a shmqd that adopts the segment withdraws the one
	 * a killed shmqd left).  spill_error: the last error of the spiller for
	 * this partition (0 when fine), for stat.
	 */
	uint64_t spilled __attribute__((aligned(SHMQ_CACHELINE)));
	uint64_t synced;
	uint64_t spill_hold;
	int32_t spill_error;
	uint32_t reserved1[(SHMQ_CACHELINE - 28) / 4];
	struct shmq_cursor cursor[SHMQ_MAX_GROUPS];
	/* hold[m]: member m may be reading the frame at this position. */
	uint64_t hold[SHMQ_MAX_MEMBERS];
	/* ident[i]: identity slot i's sequences here (idempotent.c). */
	struct shmq_ident_seq ident[SHMQ_MAX_IDENTS];
	uint8_t reserved2[SHMQ_PAGE - 256 - SHMQ_MAX_GROUPS * SHMQ_CACHELINE -
			  SHMQ_MAX_MEMBERS * 8 -
			  SHMQ_MAX_IDENTS * sizeof(struct shmq_ident_seq)];
};
_Static_assert(sizeof(struct shmq_part_header) == SHMQ_PAGE, "partition header");
_Static_assert(offsetof(struct shmq_part_header, tail) == 64, "tail line");
_Static_assert(offsetof(struct shmq_part_header, cursor) == 256, "cursors");

#define SHMQ_GROUPS_OFF	   ((uint64_t)SHMQ_PAGE)
#define SHMQ_PRODUCERS_OFF (SHMQ_GROUPS_OFF + SHMQ_MAX_GROUPS * sizeof(struct shmq_group_slot))
#define SHMQ_MEMBERS_OFF   (SHMQ_PRODUCERS_OFF + SHMQ_MAX_PRODUCERS * sizeof(struct shmq_producer_slot))
#define SHMQ_IDENTS_OFF	   (SHMQ_MEMBERS_OFF + SHMQ_MAX_MEMBERS * sizeof(struct shmq_member_slot))
#define SHMQ_PARTS_OFF	   (SHMQ_IDENTS_OFF + SHMQ_MAX_IDENTS * sizeof(struct shmq_ident_slot))
_Static_assert(SHMQ_PARTS_OFF % SHMQ_PAGE == 0, "partition table page aligned");

/* Offset of the rings for a topic of p partitions. */
static inline uint64_t shmq__rings_off(uint32_t p)
{
	return SHMQ_PARTS_OFF + (uint64_t)p * sizeof(struct shmq_part_header);
}

static inline uint64_t shmq__segment_bytes(uint32_t p, uint64_t ring_bytes)
{
	return shmq__rings_off(p) + (uint64_t)p * ring_bytes;
}

#endif /* SHMQ_LAYOUT_H */
