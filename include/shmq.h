/*
 * shmq.h - a message queue for the processes of one Linux host.
 *
 * This header is the user's manual.  Every call says what it takes, what it
 * returns, how long returned pointers stay valid, whether it blocks and what
 * it is safe to do from several threads.
 *
 * Concepts
 * --------
 * namespace  one shmqd and its data directory.  shmq_open() names it.
 * topic      a named stream of messages split into P partitions.  Topics are
 *            created by shmqd (shmq_topic_create asks it over its socket).
 * partition  an ordered log whose newest window lives in a ring in POSIX
 *            shared memory.  Producers and consumers attach to the ring and
 *            move messages with no system call and no daemon on the path.
 * offset     a 64-bit byte position in the partition's log.  Offsets are
 *            unique and strictly increasing in publication order but not
 *            dense: the next message's offset is this one's offset plus the
 *            size of its frame (header, key and value, aligned), and padding
 *            frames may lie between two messages.  An offset is only
 *            meaningful if shmq returned it (shmq_msg.offset, next_offset,
 *            shmq_claim.offset, or shmq_topic_stat).
 * group      a named consumer group.  Every group receives every message
 *            published after it starts.  Members of one group share the work:
 *            each message goes to exactly one member.
 *
 * Errors
 * ------
 * Calls returning int give 0 (or a non-negative count) on success and a
 * negative value on failure: -errno for system conditions, or one of the
 * SHMQ_E* codes below -4000.  shmq_strerror() names every value.  "Full"
 * and "empty" are ordinary results (-EAGAIN), never logged.  The library
 * never prints, exits or aborts on a runtime condition.  Cold paths (open,
 * attach, create) leave a human-readable detail in shmq_errdetail().
 *
 * Threads
 * -------
 * A shmq_client_t may be shared by threads for the topic calls.  Producer
 * and consumer handles are not thread-safe: give each thread its own (they
 * are cheap; any number of them may publish into one partition at once).
 */
#ifndef SHMQ_H
#define SHMQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SHMQ_API __attribute__((visibility("default")))
#else
#define SHMQ_API
#endif

#define SHMQ_VERSION_MAJOR 0
#define SHMQ_VERSION_MINOR 1

/* Library-only error codes.  All are below SHMQ_EBASE. */
#define SHMQ_EBASE	(-4000)
#define SHMQ_EMAGIC	(-4001) /* not a shmq segment */
#define SHMQ_EVERSION	(-4002) /* segment written by another layout version */
#define SHMQ_ELAYOUT	(-4003) /* layout signature differs (other build/ABI) */
#define SHMQ_ESIZE	(-4004) /* segment sizes are inconsistent */
#define SHMQ_ENOTREADY	(-4005) /* segment not (yet) initialised by shmqd */
#define SHMQ_ECORRUPT	(-4006) /* a value in shared memory failed a check */
#define SHMQ_EREVOKED	(-4007) /* claim was padded over by shmqd (stalled) */
#define SHMQ_ETOOBIG	(-4008) /* message larger than the topic's maximum */
#define SHMQ_EGONE	(-4009) /* offset is no longer retained */
#define SHMQ_EDELETED	(-4010) /* the topic was deleted */
#define SHMQ_ENODAEMON	(-4011) /* shmqd is not running for this directory */
#define SHMQ_EFOREIGN	(-4012) /* segment owner or mode is not acceptable */
#define SHMQ_EPROTO	(-4013) /* control protocol mismatch with shmqd */
#define SHMQ_ELAPPED	(-4014) /* untethered group lapped: msg->missed lost */
#define SHMQ_EDUPLICATE	(-4015) /* sequence already stored: not stored again */
#define SHMQ_ELAST	(-4015)

/* Limits. */
#define SHMQ_NAME_MAX		64	/* topic and group names, bytes */
#define SHMQ_MAX_PARTITIONS	256
#define SHMQ_MAX_GROUPS		32	/* groups per topic */
#define SHMQ_MAX_MEMBERS	64	/* consumer handles per topic */
#define SHMQ_MAX_PRODUCERS	128	/* producer handles per topic */
#define SHMQ_MAX_IDENTS		32	/* producer identities per topic */
#define SHMQ_RING_MIN		(64u << 10)	/* 64 KiB */
#define SHMQ_RING_MAX		(1ull << 32)	/* 4 GiB */
#define SHMQ_KEY_MAX		65535u

/* Special partition argument: choose from the key, or round-robin. */
#define SHMQ_PARTITION_ANY	(-1)

/*
 * Return a static, human-readable string for any value returned by this
 * library (0, -errno, SHMQ_E*).  Never NULL.  Thread-safe.
 */
SHMQ_API const char *shmq_strerror(int err);

/*
 * Return the detail of the last failed cold-path call (open, attach, create,
 * delete, stat) in this thread, or "" if there is none.  Valid until the next
 * shmq call in the same thread.
 */
SHMQ_API const char *shmq_errdetail(void);

/*
 * The documented partition hash: FNV-1a (64-bit) of the key bytes, modulo
 * the partition count.  The same key always maps to the same partition of a
 * topic with a given partition count.  Exposed so that other programs can
 * predict placement.  partitions must be > 0.
 */
SHMQ_API uint32_t shmq_key_partition(const void *key, size_t key_len,
				     uint32_t partitions);

/* ------------------------------------------------------------------------
 * Clients
 */

typedef struct shmq_client shmq_client_t;

struct shmq_open_opts {
	size_t size;	/* sizeof(struct shmq_open_opts) */
	unsigned flags; /* reserved, 0 */
};
#define SHMQ_OPEN_OPTS_INIT { .size = sizeof(struct shmq_open_opts) }

/*
 * Open a client of the namespace served from data directory dir.  The
 * directory must exist (shmqd creates it).  shmqd need not be running: topic
 * lookups read the directory, and only topic creation and deletion need the
 * daemon.  opts may be NULL.
 *
 * Returns 0 and sets *out, or -ENOENT (no such directory), -ENOMEM, -EINVAL.
 * Thread-safe.  Close with shmq_close(); every producer and consumer opened
 * from the client must be closed first.
 */
SHMQ_API int shmq_open(const char *dir, const struct shmq_open_opts *opts,
		       shmq_client_t **out);

/* Close a client.  shmq_close(NULL) is a no-op. */
SHMQ_API void shmq_close(shmq_client_t *client);

/* ------------------------------------------------------------------------
 * Topics
 */

enum shmq_full_policy {
	SHMQ_FULL_BLOCK = 1, /* producers wait (futex, with a timeout) */
	SHMQ_FULL_FAIL = 2,  /* producers get -EAGAIN at once */
	SHMQ_FULL_SPILL = 3, /* shmqd moves what lagging groups hold to disk;
			      * producers wait only while the disk is behind */
};

/* What goes to disk (spill files under the data directory). */
enum shmq_spill_mode {
	SHMQ_SPILL_DEFAULT = 0,	 /* OVERFLOW with SHMQ_FULL_SPILL, else OFF */
	SHMQ_SPILL_OFF = 1,	 /* nothing: the rings are the only copy */
	SHMQ_SPILL_OVERFLOW = 2, /* what lagging groups hold when a ring runs short */
	SHMQ_SPILL_ALWAYS = 3,	 /* every message: a journal (see shmq_producer_flush) */
};

struct shmq_topic_opts {
	size_t size;		  /* sizeof(struct shmq_topic_opts) */
	uint32_t partitions;	  /* 1 .. SHMQ_MAX_PARTITIONS, default 1 */
	uint64_t ring_bytes;	  /* power of two, SHMQ_RING_MIN .. MAX, default 1 MiB */
	uint32_t max_message;	  /* largest key+value, default ring_bytes/4, at most ring_bytes/2 - 32 */
	int full_policy;	  /* enum shmq_full_policy, default SPILL */
	int numa_node;		  /* bind the rings to this node, -1 = none */
	uint32_t mode;		  /* segment permission bits, default 0600 */
	uint32_t stall_timeout_ms; /* pad over a live producer stuck in a claim, default 10000 */
	int spill;		  /* enum shmq_spill_mode */
	uint64_t retain_bytes;	  /* spill files kept per partition, 0 = no limit */
	uint64_t retain_ms;	  /* age of spill files kept, 0 = no limit */
};
#define SHMQ_TOPIC_OPTS_INIT                                                   \
	{ .size = sizeof(struct shmq_topic_opts), .partitions = 1,             \
	  .ring_bytes = 1u << 20, .max_message = 0,                             \
	  .full_policy = SHMQ_FULL_SPILL, .numa_node = -1, .mode = 0600,        \
	  .stall_timeout_ms = 10000, .spill = SHMQ_SPILL_DEFAULT }

/*
 * Ask shmqd to create a topic.  Names are 1..SHMQ_NAME_MAX bytes of
 * [A-Za-z0-9._-] and do not start with '.'.  The shared memory is allocated
 * in full before this returns, so a full /dev/shm is -ENOSPC here rather
 * than a SIGBUS later.  opts may be NULL for the defaults.
 *
 * Returns 0, -EEXIST (a topic of that name exists), -EINVAL (bad name or
 * option), -ENOSPC, SHMQ_ENODAEMON (no shmqd), -EACCES (shmqd refused our
 * credentials), or another -errno.  Blocks for a round trip to shmqd.
 */
SHMQ_API int shmq_topic_create(shmq_client_t *client, const char *name,
			       const struct shmq_topic_opts *opts);

/*
 * Ask shmqd to delete a topic.  Attached producers and consumers keep their
 * mappings; their next call returns SHMQ_EDELETED.
 * Returns 0, -ENOENT, SHMQ_ENODAEMON, -EACCES.
 */
SHMQ_API int shmq_topic_delete(shmq_client_t *client, const char *name);

/*
 * Call fn(name, arg) for each topic of the namespace, in name order.  Stops
 * early and returns fn's value if fn returns non-zero.  Reads the data
 * directory; works without shmqd.  Returns 0 or -errno.
 */
SHMQ_API int shmq_topic_list(shmq_client_t *client,
			     int (*fn)(const char *name, void *arg), void *arg);

struct shmq_partition_stat {
	uint64_t first_offset; /* oldest offset still readable in the ring */
	uint64_t next_offset;  /* offset the next claim will get */
	uint64_t used_bytes;   /* next_offset - oldest byte that may not be reused */
	int error;	       /* 0, or SHMQ_ECORRUPT when its header is bad */
	/* Spilling topics (0 otherwise): */
	uint64_t spilled;    /* below this, what groups still need is on disk */
	uint64_t synced;     /* below this, on disk and synced (spill=always) */
	uint64_t disk_first; /* oldest offset in the spill files */
	uint64_t disk_end;   /* end of the spill files; disk_first == disk_end: none */
	uint64_t disk_bytes; /* bytes of the spill files */
	int spill_error;     /* 0, or the error that stops shmqd spilling it */
};

struct shmq_group_partition_stat {
	uint64_t next;	    /* next offset to hand out */
	uint64_t committed; /* last committed offset (next to process) */
	uint64_t lag_bytes; /* partition next_offset - group next */
	int on_disk;	    /* 1: next is no longer in the ring; read from disk */
	uint32_t owner_pid; /* PARTITIONED: the owning member's pid, 0 = none */
	uint64_t missed;    /* untethered: messages lost to producers so far */
};

struct shmq_member_stat {
	uint32_t pid;
	uint32_t partitions; /* PARTITIONED: how many it owns */
	uint32_t in_flight;  /* messages it holds (taken, not yet released) */
};

struct shmq_group_stat {
	char name[SHMQ_NAME_MAX + 1];
	int mode;	  /* enum shmq_group_mode */
	uint32_t generation; /* PARTITIONED: bumped by every rebalance */
	uint32_t members; /* consumer handles in the group */
	/* SHARED: delivery again (see shmq_consumer_nack, ack_timeout_ms). */
	uint32_t parked;	/* messages waiting to be delivered again */
	uint64_t redelivered;	/* deliveries with a delivery_count above 1 */
	uint64_t expired;	/* messages held past an ack timeout */
	uint64_t dead_lettered; /* messages sent to a dead-letter topic */
	struct shmq_member_stat *member; /* [members] */
	struct shmq_group_partition_stat *partitions; /* [partition_count] */
	int untethered;	  /* 1: never holds producers (SHMQ_CONSUMER_UNTETHERED) */
};

struct shmq_topic_stat {
	char name[SHMQ_NAME_MAX + 1];
	uint32_t partition_count;
	uint64_t ring_bytes;
	uint32_t max_message;
	int full_policy;
	int spill; /* enum shmq_spill_mode */
	int numa_node;
	uint32_t producers; /* attached producer handles */
	struct shmq_partition_stat *partitions; /* [partition_count] */
	uint32_t group_count;
	struct shmq_group_stat *groups; /* [group_count] */
};

/*
 * Take a consistent-enough snapshot of a topic's counters (each counter is
 * read atomically; the set is not a single atomic snapshot).  Works without
 * shmqd.  On success *out is allocated; free it with shmq_topic_stat_free().
 * Returns 0, -ENOENT, -ENOMEM, or an attach error (SHMQ_EMAGIC ...).
 */
SHMQ_API int shmq_topic_stat(shmq_client_t *client, const char *name,
			     struct shmq_topic_stat **out);
SHMQ_API void shmq_topic_stat_free(struct shmq_topic_stat *st);

/* ------------------------------------------------------------------------
 * Producers
 */

typedef struct shmq_producer shmq_producer_t;

struct shmq_producer_opts {
	size_t size;	/* sizeof(struct shmq_producer_opts) */
	unsigned flags; /* SHMQ_PRODUCER_BUSY_WAIT: spin instead of sleeping when full */
	/*
	 * An identity (a name, as for topics): makes the producer idempotent.
	 * NULL = none.  See "Idempotent producers" below.
	 */
	const char *idempotent_id;
};
#define SHMQ_PRODUCER_BUSY_WAIT 0x1u
#define SHMQ_PRODUCER_OPTS_INIT { .size = sizeof(struct shmq_producer_opts) }

/*
 * Attach a producer to a topic.  Returns 0 and sets *out, -ENOENT (no such
 * topic), -EMFILE (all SHMQ_MAX_PRODUCERS slots of the topic are taken), an
 * attach error (SHMQ_EMAGIC, SHMQ_EVERSION, SHMQ_ELAYOUT, SHMQ_ESIZE,
 * SHMQ_EFOREIGN, SHMQ_ENOTREADY) or -errno.  The handle must be used by one
 * thread at a time.
 *
 * With opts->idempotent_id, also: -EINVAL (not a valid name), -EBUSY (a
 * live process, this one included, holds the identity: the detail names
 * its pid), -EMFILE (all SHMQ_MAX_IDENTS identities of the topic are
 * taken), -EAGAIN (the registration mutex stayed taken).  An identity
 * whose holder died is taken over.
 */
SHMQ_API int shmq_producer_open(shmq_client_t *client, const char *topic,
				const struct shmq_producer_opts *opts,
				shmq_producer_t **out);

/*
 * Detach.  An outstanding claim is aborted first.  NULL is a no-op.
 */
SHMQ_API void shmq_producer_close(shmq_producer_t *producer);

/*
 * Publish a copy of one message.  partition is an explicit partition number
 * or SHMQ_PARTITION_ANY: then the key's hash chooses (shmq_key_partition),
 * or round-robin for an empty key.  key may be NULL when key_len is 0, as
 * may value when value_len is 0.
 *
 * timeout_ms applies when the ring is full and the topic's policy is BLOCK:
 * 0 = do not wait, -1 = wait for ever, otherwise milliseconds.  A topic with
 * the FAIL policy returns -EAGAIN at once.
 *
 * Returns the partition number (>= 0) and stores the message's offset in
 * *offset if offset is not NULL.  Errors: -EAGAIN (full), -EINVAL (bad
 * partition), SHMQ_ETOOBIG, SHMQ_EDELETED, SHMQ_ECORRUPT (the partition's
 * shared state failed a check), -EBUSY (a claim is outstanding),
 * SHMQ_EREVOKED (this thread stalled inside the call for longer than the
 * topic's stall timeout, and shmqd padded its message over: not published).
 *
 * Ordering: the message is visible to consumers when this returns
 * (release ordering on its frame's commit word), and is ordered after every
 * message this handle published before it into the same partition.
 */
SHMQ_API int shmq_send(shmq_producer_t *producer, int partition,
		       const void *key, size_t key_len, const void *value,
		       size_t value_len, int timeout_ms, uint64_t *offset);

/* One message of a batch (shmq_send_batch). */
struct shmq_batch_msg {
	const void *key;   /* may be NULL when key_len is 0 */
	size_t key_len;
	const void *value; /* may be NULL when value_len is 0 */
	size_t value_len;
};

/*
 * Publish copies of msgs[0..n) into one partition (an explicit number; a
 * keyed application chooses it with shmq_key_partition()), in order, at a
 * fraction of the cost of n shmq_send() calls: a claim and a commit cover
 * up to 64 messages (fewer at the ring's end, and no more than an eighth
 * of the ring), and the messages of one claim share a timestamp.
 * Consumers see the messages of one claim all or none: a producer that
 * dies or stalls inside it loses all of them, never some.
 *
 * Every message is checked before anything is published (SHMQ_ETOOBIG,
 * -EINVAL).  timeout_ms is as for shmq_send(), for each wait for room.
 *
 * Returns how many messages were published, from the first: n, or fewer
 * when a later claim failed (the rest was not published; a call for the
 * rest says why), or a negative error when none was: those of shmq_send(),
 * and -EINVAL for a handle with an identity (idempotent producers send one
 * message at a time).  If offsets is not NULL, offsets[i] receives the
 * offset of message i for each i below the returned count.
 */
SHMQ_API int shmq_send_batch(shmq_producer_t *producer, int partition,
			     const struct shmq_batch_msg *msgs, size_t n,
			     int timeout_ms, uint64_t *offsets);

/* A claimed message, to be filled in place. */
struct shmq_claim {
	void *value;	    /* value_len writable bytes in the ring */
	size_t value_len;
	uint32_t partition;
	uint64_t offset;
};

/*
 * Reserve room for one message and return where to write its value (zero
 * copy).  The key is copied now.  Publish with shmq_producer_commit() or
 * withdraw with shmq_producer_abort(); one claim may be outstanding per
 * handle.  partition and timeout_ms are as for shmq_send().  claim->value
 * stays valid until commit or abort.  Until then, readers of the partition
 * wait at this message: commit promptly.  A claim held longer than the
 * topic's stall timeout is padded over by shmqd and its commit fails with
 * SHMQ_EREVOKED.
 *
 * Returns the partition (>= 0) or the errors of shmq_send().
 */
SHMQ_API int shmq_producer_claim(shmq_producer_t *producer, int partition,
				 const void *key, size_t key_len,
				 size_t value_len, int timeout_ms,
				 struct shmq_claim *claim);

/*
 * Publish the outstanding claim.  Returns 0, -EINVAL (no claim), or
 * SHMQ_EREVOKED (shmqd padded the claim over because it stalled; the
 * message is not published and readers never see it).
 */
SHMQ_API int shmq_producer_commit(shmq_producer_t *producer);

/*
 * Withdraw the outstanding claim: its space becomes padding that readers
 * skip.  Returns 0 or -EINVAL (no claim).  Revoked claims return 0 too.
 */
SHMQ_API int shmq_producer_abort(shmq_producer_t *producer);

/*
 * Durable acknowledgement, for topics with SHMQ_SPILL_ALWAYS: wait until
 * every message this handle published is written to its spill file and
 * synced (fdatasync, and the directory when a file was created), so that it
 * survives a power loss.  shmqd does the writing; while it is down, this
 * waits.  timeout_ms as for shmq_send (0 = just check).
 *
 * Returns 0, -EAGAIN (not yet durable within the timeout), -ENOTSUP (the
 * topic does not journal: its spill mode is not ALWAYS), SHMQ_EDELETED,
 * or -EIO (for as long as the timeout, shmqd reported a write or sync
 * error for a partition this handle wrote to; the messages stay in the
 * ring, shmqd retries, and a later flush may succeed).
 */
SHMQ_API int shmq_producer_flush(shmq_producer_t *producer, int timeout_ms);

/* ------------------------------------------------------------------------
 * Idempotent producers (part of the producer API)
 *
 * A producer opened with an identity (opts->idempotent_id) publishes each
 * message with a sequence number that the application chooses, strictly
 * increasing per (identity, partition); gaps are allowed.  A partition
 * stores each sequence of an identity at most once: a send whose sequence
 * is at or below the highest one the partition already stored for that
 * identity returns SHMQ_EDUPLICATE and stores nothing.  The identity's
 * state lives in the topic's shared memory, not in the process, so a
 * producer that crashed (at any instruction) and is started again with the
 * same identity can simply send again everything it has not seen
 * acknowledged, from any earlier point: what was stored is refused as a
 * duplicate, what was not is stored, once, in sequence order.
 *
 * One live process at a time may hold an identity (a second open gets
 * -EBUSY); an identity whose holder died is taken over, and the taker
 * learns what the dead holder stored, including a message it committed
 * just before dying (shmq_producer_last_seq).  Each message carries a
 * 64-bit producer id (a hash of the topic and identity names, never 0) and
 * its sequence: struct shmq_msg shows both to consumers.  The two take 16
 * bytes of the frame, counted against the topic's max_message.
 * Producers without an identity pay nothing for any of this.
 *
 * Limits: SHMQ_MAX_IDENTS identities per topic; an identity stays
 * registered for as long as the topic exists (shmq_identity_delete
 * removes one).  The state is in shared memory: it survives the producer
 * and shmqd, but not a host restart, after which the topic's sequences
 * start from nothing (use shmq_dedup on the consumer side to drop what a
 * producer sends again then).
 */

/*
 * Publish a copy of one message with sequence number seq (1 ..
 * SHMQ_SEQ_MAX) from a producer with an identity.  partition: an explicit
 * partition, or SHMQ_PARTITION_ANY with a non-empty key (the key's hash
 * chooses; round-robin is refused, as sequences are per partition).
 * Other arguments as for shmq_send().
 *
 * Returns the partition (>= 0) when the message was stored now,
 * SHMQ_EDUPLICATE (nothing stored: the partition already holds seq or a
 * later sequence of this identity), -EINVAL (no identity, seq out of
 * range, or no partition), or the errors of shmq_send(); after any error
 * but SHMQ_EDUPLICATE the message is not stored and may be sent again
 * with the same seq.  Not for shmq_producer_claim(): a producer with an
 * identity publishes with this call only (shmq_send and claim give
 * -EINVAL).
 */
#define SHMQ_SEQ_MAX ((uint64_t)INT64_MAX)
SHMQ_API int shmq_producer_send_seq(shmq_producer_t *producer, int partition,
				    uint64_t seq, const void *key,
				    size_t key_len, const void *value,
				    size_t value_len, int timeout_ms,
				    uint64_t *offset);

/*
 * The highest sequence this identity has stored in partition (0 when
 * none), into *seq: where a restarted producer resumes.  Returns 0,
 * -EINVAL (no identity, bad partition).  No system call.
 */
SHMQ_API int shmq_producer_last_seq(shmq_producer_t *producer,
				    uint32_t partition, uint64_t *seq);

/* The producer id its messages carry, 0 for a producer without identity. */
SHMQ_API uint64_t shmq_producer_id(const shmq_producer_t *producer);

/*
 * Forget identity `name` of `topic`: its sequences are dropped and its
 * slot freed.  Works without shmqd.  Returns 0, -ENOENT (no such topic or
 * identity), -EBUSY (a live process holds it), or an attach error.
 */
SHMQ_API int shmq_identity_delete(shmq_client_t *client, const char *topic,
				  const char *name);

/* ------------------------------------------------------------------------
 * Consumers
 */

typedef struct shmq_consumer shmq_consumer_t;

enum shmq_from {
	SHMQ_FROM_COMMITTED = 0, /* the group's position (its committed offset
				  * if no member is live), else earliest */
	SHMQ_FROM_EARLIEST = 1,	 /* the oldest message still readable */
	SHMQ_FROM_LATEST = 2,	 /* only messages published from now on */
	SHMQ_FROM_OFFSET = 3,	 /* opts.offset, in every partition */
};

/*
 * How the members of a group share the work, chosen by the member that
 * creates the group and kept by the group (a later member asking for the
 * other mode gets -EINVAL).
 *
 * SHARED (competing consumers, a work queue): every member takes the next
 * message of any partition from the group's atomic cursor; each message
 * goes to one member; a partition's messages may be processed by several
 * members at once.
 *
 * PARTITIONED (Kafka's consumer groups): each partition is owned by exactly
 * one live member, which alone takes its messages, in order.  Partitions are
 * rebalanced when a member joins, leaves or dies (shmqd notices a death in
 * milliseconds): partition p goes to the (p mod n)-th live member in slot
 * order.  A member learns of a rebalance at its next poll (and through
 * on_rebalance).  A partition taken from a live member is handed over once
 * that member has released what it holds of it, and the new owner goes on
 * from the group's position; one taken from a dead member is handed over
 * at the group's committed offset, so what the dead member took but did not
 * commit is delivered again (at least once).
 */
enum shmq_group_mode {
	SHMQ_GROUP_DEFAULT = 0,	    /* the group's mode; SHARED for a new group */
	SHMQ_GROUP_SHARED = 1,
	SHMQ_GROUP_PARTITIONED = 2,
};

struct shmq_consumer_opts {
	size_t size;	/* sizeof(struct shmq_consumer_opts) */
	int from;	/* enum shmq_from; applies when the group has no live member */
	uint64_t offset; /* with SHMQ_FROM_OFFSET */
	unsigned flags; /* SHMQ_CONSUMER_BUSY_POLL: spin, never sleep */
	int mode;	/* enum shmq_group_mode, for a group this member creates */
	/*
	 * PARTITIONED: called from shmq_consumer_poll() (in the polling
	 * thread) when this member's partitions change, with the new set.
	 * May be NULL.  parts is valid during the call only.
	 */
	void (*on_rebalance)(void *arg, const uint32_t *parts, uint32_t n);
	void *on_rebalance_arg;
	/*
	 * Commit automatically (as shmq_consumer_commit) from
	 * shmq_consumer_poll() at most this often, and at close; 0 = only
	 * when the application commits.  What a poll returned is committed
	 * only once released (by the next poll or shmq_consumer_release), so
	 * with auto-commit a message is committed after it was processed:
	 * at least once.
	 */
	uint32_t auto_commit_ms;
	/*
	 * SHARED groups: a message about to be delivered for the
	 * (max_deliveries + 1)th time (it was given back or held by dying
	 * members that often) goes to dead_letter_topic instead, as a dead
	 * letter (see shmq_dead_letter_parse), and is not delivered.  0 = no
	 * limit.  The topic must exist; when it does not, or the send fails,
	 * the message is delivered after all (nothing is lost).
	 */
	uint32_t max_deliveries;
	const char *dead_letter_topic;
	/*
	 * SHARED groups: a message this member holds (taken, not yet
	 * acknowledged) for longer than this is given to the group again,
	 * its delivery_count one higher; this member's late
	 * shmq_consumer_ack() then returns SHMQ_EREVOKED if another member
	 * took it meanwhile, or 0 if none did (the redelivery is called off).
	 * shmqd checks every 20 ms or so.  0 = never (the default).
	 */
	uint32_t ack_timeout_ms;
};
/* Spin, never sleep. */
#define SHMQ_CONSUMER_BUSY_POLL 0x1u
/*
 * SHARED groups: at most once.  Nothing this member took is delivered
 * again: not when it dies holding it, and it cannot nack.  Spares the
 * lease bookkeeping of every take (see shmq_consumer_ack).  PARTITIONED
 * groups: ignored (at most once there means committing before processing).
 */
#define SHMQ_CONSUMER_AT_MOST_ONCE 0x2u
/*
 * SHMQ_CONSUMER_UNTETHERED, in flags: the group (chosen by the member that
 * creates it, like the mode; a later member asking otherwise gets -EINVAL)
 * never holds producers back.  Producers overwrite what it has not read as
 * if it did not exist, whatever the full policy, and never spill for it.
 * When that happens, the next poll of a member that reads that partition
 * returns SHMQ_ELAPPED with msg->missed, the exact number of messages of
 * the partition the group lost there, and the group goes on from the
 * oldest message still in the ring.  With one member (or in a PARTITIONED
 * group) each SHMQ_ELAPPED comes exactly where the messages were lost:
 * between the message before them and the one after.
 *
 * The price: each message is copied out of the ring into a buffer of the
 * handle (up to the topic's max_message), since nothing may hold the ring;
 * msg's view points there, valid as usual until the next poll or close.
 * A message a poll returned is delivered, whatever becomes of the member
 * (at most once): nothing is delivered again, nack is -ENOTSUP, and the
 * spill files are never read (seeks older than the ring are SHMQ_EGONE).
 * A stopped or slow member holds nothing: producers go on.
 */
#define SHMQ_CONSUMER_UNTETHERED 0x4u
#define SHMQ_CONSUMER_OPTS_INIT                                                \
	{ .size = sizeof(struct shmq_consumer_opts), .from = SHMQ_FROM_COMMITTED }

/*
 * Join group `group` of `topic` (creating the group on first use).
 * When the group has no live member, its position in every partition is
 * set from opts->from; otherwise the new member shares the group's current
 * position.  opts may be NULL.
 *
 * Returns 0 and sets *out, -ENOENT (no topic), -EINVAL (bad name), -EMFILE
 * (no free group or member slot), SHMQ_EGONE (SHMQ_FROM_OFFSET older than
 * the ring holds), or an attach error.  One thread at a time per handle.
 */
SHMQ_API int shmq_consumer_open(shmq_client_t *client, const char *topic,
				const char *group,
				const struct shmq_consumer_opts *opts,
				shmq_consumer_t **out);

/* Leave the group; releases a held message.  NULL is a no-op. */
SHMQ_API void shmq_consumer_close(shmq_consumer_t *consumer);

/* A received message: a view into the ring. */
struct shmq_msg {
	const void *key;
	size_t key_len;
	const void *value;
	size_t value_len;
	uint64_t offset;      /* this message's offset */
	uint64_t next_offset; /* the offset after it in its partition */
	uint64_t timestamp_ns; /* CLOCK_REALTIME at publication */
	uint32_t partition;
	/*
	 * 1, or more when the message is delivered again: in a SHARED group
	 * after a member gave it back (nack), held it past its ack timeout,
	 * or died holding it (taken, not acknowledged); in a PARTITIONED
	 * group after this member's nack.
	 */
	uint32_t delivery_count;
	/*
	 * From an idempotent producer: its producer id and the message's
	 * sequence number in this partition.  0 and 0 otherwise.
	 */
	uint64_t producer_id;
	uint64_t sequence;
	/*
	 * Set only when a poll returns SHMQ_ELAPPED (untethered groups):
	 * how many messages of `partition` the group missed.  Then next_offset
	 * is where the group goes on in that partition, and key and value
	 * are NULL.
	 */
	uint64_t missed;
};

/*
 * Take the next message for this member from any partition of the topic.
 * The previously returned message, if still held, is released first.  The
 * view in *msg (key, value) stays valid, and its bytes unchanged, until
 * shmq_consumer_release(), the next poll, or close: the ring space is not
 * reused while it is held.
 *
 * timeout_ms: 0 = return at once, -1 = wait for ever, else milliseconds.
 * Waiting spins briefly and then sleeps on a futex in shared memory, so an
 * idle consumer uses no CPU; SHMQ_CONSUMER_BUSY_POLL never sleeps.
 *
 * Returns 0 and fills *msg, -EAGAIN (nothing within the timeout),
 * SHMQ_EDELETED, SHMQ_ECORRUPT with msg->partition set to the partition
 * whose shared state failed a check (that partition is then skipped by this
 * handle), or, in an untethered group only, SHMQ_ELAPPED with
 * msg->partition and msg->missed (see SHMQ_CONSUMER_UNTETHERED): not an
 * error, poll again.  Messages of one partition come in offset order.
 */
SHMQ_API int shmq_consumer_poll(shmq_consumer_t *consumer,
				struct shmq_msg *msg, int timeout_ms);

/*
 * The partitions this member owns (PARTITIONED groups; every partition for
 * SHARED), as of its last poll: up to max of them into parts.  Returns how
 * many it owns (which may exceed max).
 */
SHMQ_API int shmq_consumer_assignment(shmq_consumer_t *consumer,
				      uint32_t *parts, uint32_t max);

/*
 * Give the held message (the one the last poll returned) back: it was not
 * processed.  In a SHARED group it goes to the group again (to any member,
 * this one included: its next poll takes it back unless another member
 * was quicker), its delivery_count one higher; there is room for as many
 * such messages as the group has members.  In a PARTITIONED group the
 * partition's position moves back to it, so it comes next, its
 * delivery_count one higher (kept by this member only).
 * Returns 0, -EINVAL (nothing held, given back already, or an at-most-once
 * member), -ENOTSUP (an untethered group), SHMQ_EREVOKED (SHARED: the ack
 * timeout had run out and another member has it), SHMQ_EDELETED.
 */
SHMQ_API int shmq_consumer_nack(shmq_consumer_t *consumer);

/*
 * A dead letter, as shmq sends it to a dead-letter topic: its key is the
 * original key; its value starts with this header (little-endian), then
 * the original topic's name (topic_len bytes), then the original value.
 */
#define SHMQ_DEAD_LETTER_MAGIC 0x326c646du /* "mdl2" */

/* Why a message was delivered again (struct shmq_dead_letter.reason). */
enum shmq_redelivery_reason {
	SHMQ_REDELIVER_NACK = 1,	/* a member gave it back */
	SHMQ_REDELIVER_ACK_TIMEOUT = 2, /* a member held it too long */
	SHMQ_REDELIVER_MEMBER_DIED = 3, /* a member died holding it */
};

struct shmq_dead_letter {
	uint32_t magic;		 /* SHMQ_DEAD_LETTER_MAGIC */
	uint32_t partition;	 /* in the original topic */
	uint64_t offset;	 /* in that partition */
	uint64_t timestamp_ns;	 /* of the original message */
	uint32_t delivery_count; /* deliveries before it was given up */
	uint32_t topic_len;
	uint32_t reason;	 /* enum shmq_redelivery_reason: the last one */
	uint32_t reserved;	 /* 0 */
	/* topic name, then the value */
};

/*
 * Read a dead letter received from a dead-letter topic: fills *info and
 * points *topic (topic_len bytes, not NUL-terminated) and *value into msg's
 * value.  Returns 0, or -EINVAL when msg is not a dead letter.
 */
SHMQ_API int shmq_dead_letter_parse(const struct shmq_msg *msg,
				    struct shmq_dead_letter *info,
				    const char **topic, const void **value,
				    size_t *value_len);

/*
 * Acknowledge the held message: done with it (shmq_consumer_release, and
 * the next poll, do the same without telling how it went).  In a SHARED
 * group with an ack timeout, the answer says whether this acknowledgement
 * counted: 0 yes, the message is done and delivered to nobody else;
 * SHMQ_EREVOKED no, the message ran past the ack timeout and another member
 * took it (it will be, or was, processed there).  Returns -EINVAL when
 * nothing is held.  Never blocks.
 */
SHMQ_API int shmq_consumer_ack(shmq_consumer_t *consumer);

/* Release (acknowledge) the held message, if any.  Never blocks. */
SHMQ_API void shmq_consumer_release(shmq_consumer_t *consumer);

/*
 * Commit the group's progress: for each partition (in a PARTITIONED group,
 * each partition this member owns), the offset below which every message
 * has been handed to a member of the group and released.
 * A later member opening with SHMQ_FROM_COMMITTED, after every member has
 * left, resumes there.  Returns 0 or SHMQ_EDELETED.
 */
SHMQ_API int shmq_consumer_commit(shmq_consumer_t *consumer);

/*
 * Delete group `group` of `topic`: its position and committed offsets are
 * forgotten and it no longer holds messages in the rings.  A group that
 * nobody consumes holds its topic's rings for ever (producers then block
 * or fail as the topic says), so delete groups that are no longer used.
 * Works without shmqd.  Returns 0, -ENOENT (no such topic or group),
 * -EBUSY (the group has a live member), or an attach error.
 */
SHMQ_API int shmq_group_delete(shmq_client_t *client, const char *topic,
			       const char *group);

/* Seek targets besides explicit offsets. */
#define SHMQ_OFFSET_EARLIEST UINT64_MAX
#define SHMQ_OFFSET_LATEST   (UINT64_MAX - 1)

/*
 * Move the group's position in one partition to offset (an offset shmq
 * returned, or SHMQ_OFFSET_EARLIEST / SHMQ_OFFSET_LATEST).  The group's
 * other members follow the new position too.  On a spilling topic the
 * offset may lie in the spill files, and EARLIEST is the oldest offset
 * they keep.  Releases a held message.  Returns 0, -EINVAL (bad partition
 * or not a message boundary), SHMQ_EGONE (no longer in the ring, nor on
 * disk), SHMQ_EDELETED.
 */
SHMQ_API int shmq_consumer_seek(shmq_consumer_t *consumer, uint32_t partition,
				uint64_t offset);

/* Every partition, for shmq_consumer_seek_time. */
#define SHMQ_ALL_PARTITIONS UINT32_MAX

/*
 * Move the group's position in one partition (or in every partition, with
 * SHMQ_ALL_PARTITIONS) to the first message whose timestamp is at or after
 * timestamp_ns (CLOCK_REALTIME, as in shmq_msg), whether it is still in
 * the ring or only in the spill files.  With no such message the position
 * becomes the end: the next message published.  Releases a held message.
 * Returns 0, -EINVAL (bad partition), SHMQ_EDELETED, or an error reading
 * the spill files.
 */
SHMQ_API int shmq_consumer_seek_time(shmq_consumer_t *consumer,
				     uint32_t partition, uint64_t timestamp_ns);

/* ------------------------------------------------------------------------
 * Subscriptions by pattern (part of the consumer API)
 *
 * A subscription consumes every topic whose name matches a shell glob, as
 * one member of a group in each: it holds one consumer per matching topic,
 * opened with the same group name and options, and follows topics as they
 * are created and deleted.
 */

typedef struct shmq_subscription shmq_subscription_t;

/*
 * Subscribe to every topic whose name matches pattern (fnmatch(3) without
 * flags: "orders.*" matches "orders.eu"; '*' also matches '.'), in group
 * `group`, with opts as for shmq_consumer_open() (NULL: the defaults; the
 * options are copied).  The topics are listed now and again from
 * shmq_subscription_poll() at most every 100 ms: a topic created later is
 * joined within about 100 ms of its creation (from opts->from: with the
 * default SHMQ_FROM_COMMITTED a new group starts at the earliest message,
 * so nothing published before it was noticed is missed; SHMQ_FROM_LATEST
 * misses it).  A topic that cannot be joined (for example -EMFILE) is
 * skipped and tried again at each rescan.  A deleted topic is left as soon
 * as a poll sees it deleted.  Matching no topic is not an error.
 *
 * Returns 0 and sets *out, -EINVAL (NULL or empty pattern, bad group
 * name), -ENOMEM, or an error listing the topics (-errno).  Close with
 * shmq_subscription_close() before closing the client.  One thread at a
 * time per subscription.
 */
SHMQ_API int shmq_subscribe(shmq_client_t *client, const char *pattern,
			    const char *group,
			    const struct shmq_consumer_opts *opts,
			    shmq_subscription_t **out);

/*
 * Take the next message from any subscribed topic.  Topics are served in
 * turn (each poll starts after the topic of the previous message), so a
 * busy topic does not starve the others; within a topic the order is that
 * of shmq_consumer_poll().  The previously returned message is released
 * first.  *msg is a view valid, like a consumer's, until the next poll or
 * close; *topic (if topic is not NULL) is set to the message's topic name,
 * valid until the next poll or close.
 *
 * timeout_ms: 0 = return at once, -1 = wait for ever, else milliseconds.
 * A waiting subscription sleeps on every topic at once (futex_waitv, Linux
 * 5.16+; older kernels wake every millisecond) and wakes when a message is
 * published to any of them; it also wakes every 100 ms to look for new
 * topics.  With SHMQ_CONSUMER_BUSY_POLL in opts it spins instead.
 *
 * Returns 0 and fills *msg, -EAGAIN (nothing within the timeout), -EINVAL,
 * SHMQ_ECORRUPT with *topic and msg->partition naming the partition that
 * failed a check (that consumer skips it from then on), or SHMQ_ELAPPED
 * with *topic, msg->partition and msg->missed (untethered groups).  A deleted topic is
 * not an error: it is dropped and the others are served.
 */
SHMQ_API int shmq_subscription_poll(shmq_subscription_t *s,
				    struct shmq_msg *msg, const char **topic,
				    int timeout_ms);

/*
 * shmq_consumer_commit() for every subscribed topic (what was released is
 * committed; the message the last poll returned is not, until the next
 * poll or close releases it).  Returns 0, -EINVAL, or the first error of a
 * commit; topics deleted meanwhile are skipped.  Never blocks.
 */
SHMQ_API int shmq_subscription_commit(shmq_subscription_t *s);

/* Leave every group joined; releases a held message.  NULL is a no-op. */
SHMQ_API void shmq_subscription_close(shmq_subscription_t *s);

/* ------------------------------------------------------------------------
 * Consumer-side deduplication
 *
 * A dedup remembers, per (producer id, partition), the highest sequence
 * number seen, and calls a message a duplicate when its sequence is at or
 * below it.  It is meant for one consumer that sees every message of the
 * partitions it reads, in order: a single consumer, or the owner of
 * partitions in a PARTITIONED group (keep one dedup for the member's life;
 * a partition that comes to it from another member starts unknown, so the
 * first message redelivered there passes).  It is not for a SHARED group:
 * its members each see part of a partition, not in order.  A subscription
 * may share one dedup between its topics (producer ids differ by topic).
 *
 * What it drops: messages delivered again to this consumer (at least once
 * after a nack, a seek back, a member's death or a replay) and messages an
 * idempotent producer stored twice because its identity's state was lost
 * (a host restart).  Messages without a producer id always pass.
 *
 * Memory is bounded: at most `max_entries` (producer, partition) pairs are
 * kept (in a hash table of about 48 bytes an entry); when a new pair comes
 * with the table full, the pair seen least recently is forgotten, and a
 * duplicate of it would pass afterwards.  Size it for the producers and
 * partitions a consumer sees.  Not thread-safe: one per consumer thread.
 */
typedef struct shmq_dedup shmq_dedup_t;

/*
 * Create a dedup of at most max_entries pairs (0: 4096).  Returns 0 and
 * sets *out, -EINVAL (max_entries above 1 << 24), -ENOMEM.
 */
SHMQ_API int shmq_dedup_create(uint32_t max_entries, shmq_dedup_t **out);

/*
 * Look at msg: returns 1 when it is new (deliver it; its sequence is now
 * the highest seen for its producer and partition), 0 when it is a
 * duplicate (drop it), -EINVAL when d or msg is NULL.  O(1) but for the
 * eviction of a pair, O(max_entries).
 */
SHMQ_API int shmq_dedup_check(shmq_dedup_t *d, const struct shmq_msg *msg);

/* Pairs forgotten to make room, since creation. */
SHMQ_API uint64_t shmq_dedup_evictions(const shmq_dedup_t *d);

/* NULL is a no-op. */
SHMQ_API void shmq_dedup_free(shmq_dedup_t *d);

#ifdef __cplusplus
}
#endif

#endif /* SHMQ_H */
