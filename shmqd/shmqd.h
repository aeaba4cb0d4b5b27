/*
 * shmqd.h - what the files of the daemon share.
 *
 * shmqd is one process with one thread of its own: an event loop in main.c
 * that polls the control socket (control.c) and, every reap interval, runs
 * the reaper (reap.c) over the topic table (topics.c).  None of the
 * daemon's own state needs a lock; only the topic segments are shared,
 * with the clients, and every access to them goes through libshmq's
 * protocol functions or a ck_pr atomic.  Two library threads do the slow
 * disk work for the loop, the spill syncer and the checkpointer; each
 * shares with the loop only its job queue (libshmq/spill.c,
 * libshmq/checkpointer.c).
 *
 * Functions here are shmqd_<duty>_<verb>.  They are distinct from the
 * library's shmq__ names so that the daemon and libshmq.a never clash.
 */
#ifndef SHMQD_H
#define SHMQD_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "shmq_int.h"

/* Room for the longest reply detail and a little context around it. */
#define SHMQD_MSG_MAX 512

/* Connections served at once; more wait in the listen backlog. */
#define SHMQD_MAX_CLIENTS 64

/* A connection that has not sent its request by then is dropped. */
#define SHMQD_CLIENT_TIMEOUT_MS 2000

/* Offline topics are retried this often (a squatter may have gone). */
#define SHMQD_RETRY_OFFLINE_MS 2000

/* The spiller's state of one partition (spill.c). */
struct shmq_spill_log;
struct shmq_spill_syncer;
struct shmq_checkpointer;
struct shmq_checkpointer_slot;
struct shmqd_spill_part {
	struct shmq_spill_log *log; /* NULL until opened, or after a failure */
	int last_err;		    /* logged once per change */
	uint64_t retry_ns;	    /* after a failure: not before this */
};

/* One topic the daemon knows of, from its topic file. */
struct shmqd_topic {
	char name[SHMQ_NAME_MAX + 1];
	char segname[SHMQ_SEGNAME_MAX];
	struct shmq_topic_params params;
	/*
	 * online: map is attached and the reaper runs over it.  Offline: the
	 * topic file exists but its segment could not be adopted (foreign,
	 * squatted, corrupt); the name is still taken, and nothing of the
	 * segment is touched.
	 */
	bool online;
	int offline_err; /* why it is offline, to log only changes */
	struct shmq_map map;
	struct shmq_reap_state reap;
	/* spill.c: [partitions] while online; NULL when offline. */
	struct shmqd_spill_part *spill;
	uint64_t next_ckpt_ns, next_retain_ns;
	/*
	 * Group checkpoints (spill.c): the topic's slot with the
	 * checkpointer thread (NULL: none yet, or written in the loop), the
	 * checksum of the snapshot last handed over (sent) and of the last
	 * one known written (done), and whether the last write failed.
	 */
	struct shmq_checkpointer_slot *ckpt_slot;
	uint64_t ckpt_sum, ckpt_done_sum;
	bool ckpt_sent, ckpt_done, ckpt_failed;
	/* reap.c: the sum of the partitions' heads at the last pass. */
	uint64_t heads_seen;
};

struct shmqd_client {
	int fd;		      /* -1 = slot free */
	uint64_t deadline_ns; /* CLOCK_MONOTONIC */
	/*
	 * SO_PEERCRED said no.  The request is still read before the -EACCES
	 * reply: closing a Unix socket with unread data resets the peer's
	 * connection, and the client would see ECONNRESET instead of why.
	 */
	bool refused;
	uid_t uid;
};

/* watch.c: pidfds of the processes attached to online topics. */
#define SHMQD_WATCH_MAX 1024u

struct shmqd_watch_entry {
	uint32_t pid; /* 0: empty */
	int fd;	      /* its pidfd, in the epoll set */
	uint32_t seen; /* the last scan that found it in a slot */
};

struct shmqd_watch {
	int epfd;
	bool off;	/* no pidfds here: polling only */
	bool full_said;
	uint32_t n, scans;
	struct shmqd_watch_entry e[SHMQD_WATCH_MAX];
};

struct shmqd {
	const char *dir;
	uint64_t ns;	/* namespace id of dir */
	uid_t euid;
	pid_t pid;
	unsigned reap_interval_ms;

	int lock_fd;
	int signal_fd;
	int listen_fd;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

	struct shmqd_client clients[SHMQD_MAX_CLIENTS];
	unsigned nclients;

	struct shmqd_topic **topics;
	size_t ntopics, cap_topics;
	uint64_t next_retry_ns;

	struct shmqd_watch watch;

	/* spill.c: finishes rolled spill segments in its own thread; NULL
	 * when it could not start (rolls then sync in the loop). */
	struct shmq_spill_syncer *syncer;
	/* spill.c: writes group checkpoints in its own thread; NULL when it
	 * could not start (checkpoints are then written in the loop). */
	struct shmq_checkpointer *ckpt;
	uint64_t spill_segment_bytes; /* --spill-segment-bytes; 0: default */
};

/* log.c: "shmqd[pid]: message" on stderr. */
extern bool shmqd_quiet;
void shmqd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void shmqd_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The library's last error as "strerror (detail)" into buf. */
const char *shmqd_liberr(int err, char *buf, size_t n);

/* topics.c */
void shmqd_topics_adopt_all(struct shmqd *d);
void shmqd_topics_retry_offline(struct shmqd *d);
struct shmqd_topic *shmqd_topic_find(struct shmqd *d, const char *name);
int shmqd_topic_create(struct shmqd *d, const char *name,
		       const struct shmq_topic_params *params, char *detail,
		       size_t n);
int shmqd_topic_delete(struct shmqd *d, const char *name, char *detail,
		       size_t n);
void shmqd_topics_detach_all(struct shmqd *d);

/* control.c */
int shmqd_ctl_listen(struct shmqd *d);
void shmqd_ctl_close(struct shmqd *d);
/* Fill pollfds for the listener and the clients; returns how many. */
unsigned shmqd_ctl_pollfds(struct shmqd *d, struct pollfd *pfd);
/* Serve what the pollfds of shmqd_ctl_pollfds() report. */
void shmqd_ctl_serve(struct shmqd *d, const struct pollfd *pfd, unsigned n,
		     uint64_t now_ns);
/* Drop connections past their deadline. */
void shmqd_ctl_expire(struct shmqd *d, uint64_t now_ns);

/* reap.c */
/*
 * force: every slot and every check now (a process just died).  Returns
 * true when the pass found anything moving: a message published since the
 * last pass (a head moved), or something reaped.
 */
bool shmqd_reap_all(struct shmqd *d, bool force);

/* watch.c */
int shmqd_watch_init(struct shmqd_watch *w);
void shmqd_watch_close(struct shmqd_watch *w);
/* The fd to poll for deaths, or -1 when deaths are noticed by polling. */
int shmqd_watch_fd(const struct shmqd_watch *w);
/* Watch every process attached now; true if one is already gone. */
bool shmqd_watch_scan(struct shmqd *d);
/* Deaths since the last call (the fd was readable). */
uint32_t shmqd_watch_events(struct shmqd *d);

/*
 * spill.c.  prepare: allocate a topic's spill state when it comes online;
 * with starts (a host restart: the segment must be recreated), also open
 * and recover every partition's log and fill starts[p] with its end.
 * adopt: withdraw the hazards an earlier shmqd's spiller left in an
 * adopted segment.  release: close it all (no sync), and wait for a
 * checkpoint of the topic being written.  all: one spiller pass over every
 * topic, handing group checkpoints to the checkpointer; true when work is
 * left for an immediate next pass.  checkpoint_all: flush and checkpoint in
 * the loop, after the checkpointer's writes (at shutdown).  restore_groups:
 * recreate groups in a recreated segment from the last checkpoint.
 * remove: delete a deleted topic's spill directory.
 */
int shmqd_spill_prepare(struct shmqd *d, struct shmqd_topic *t, uint64_t *starts);
void shmqd_spill_adopt(struct shmqd_topic *t);
void shmqd_spill_release(struct shmqd_topic *t);
bool shmqd_spill_all(struct shmqd *d, uint64_t now_ns);
void shmqd_spill_checkpoint_all(struct shmqd *d);
void shmqd_spill_restore_groups(struct shmqd *d, struct shmqd_topic *t);
void shmqd_spill_remove(struct shmqd *d, const char *topic);

#endif /* SHMQD_H */
