/*
 * topics.c - shmqd's topic table: adopt at start, create, delete.
 *
 * Overview
 *   The data directory is the record of which topics exist: one file
 *   DIR/topics/NAME.topic each (topicfile.c).  The shared-memory segments
 *   are the topics' live state.  The table here joins the two: at start
 *   every topic file is read and its segment adopted, and later creates and
 *   deletes change both.  Clients never ask the daemon to look a topic up;
 *   they read the topic file and attach to the segment themselves.
 *
 * Invariants
 *   - A name in the table is a name with a topic file, and a name with a
 *     topic file is in the table (after adoption): CREATE of either is
 *     -EEXIST, whether the topic is online or offline.
 *   - An online topic's segment passed shmq__segment_attach with our euid,
 *     the mode and the topic id of its topic file.  Only online segments
 *     are ever written by the daemon (daemon_pid, deleted, the reaper).
 *   - A segment that fails those checks (owned by someone else, a mode
 *     nobody asked for, a header that is not ours) is never written,
 *     truncated or unlinked: it may be a squatter's trap, or another
 *     build's live topic.  Its topic stays offline, and is retried now and
 *     then in case the administrator removes the culprit.
 *   - Topic ids are random and non-zero, so that a segment left by an
 *     earlier topic of the same name is never mistaken for the current one.
 *
 * Memory ordering
 *   DELETE publishes hdr->deleted and then bumps both wait words:
 *   store_fence, deleted = 1, store_fence, ++data_seq, ++space_seq, wake.
 *   A sleeper that wakes on a changed sequence word and re-reads deleted
 *   therefore finds it set; one that was not yet asleep sees the sequence
 *   word changed and does not sleep.  daemon_pid is informational (for
 *   shmqctl and humans) and stored with a plain atomic store.
 *
 * Failure and recovery
 *   - Creation order: segment (ready word last, in segment.c), then the
 *     topic file.  A crash between the two leaves a segment with no topic
 *     file, which nobody can find; the next CREATE of that name finds the
 *     stale segment, checks that it is ours and replaces it.  A failed
 *     topic file write unlinks the new segment at once.
 *   - Deletion order: the topic file first, then the segment.  Removing the
 *     file is the commit point: if the daemon dies right after, the topic
 *     is gone for every new client and the orphan segment is replaced by
 *     the next CREATE.  The opposite order could resurrect a deleted topic
 *     as an empty one at the next start.
 *   - A segment missing at start (the host rebooted and /dev/shm is empty)
 *     is recreated empty with the parameters and topic id of its file.
 */
#define _GNU_SOURCE
#include <ck_pr.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmqd.h"

#define TOPIC_SUFFIX ".topic"

/* ------------------------------------------------------------------------
 * The table
 */

struct shmqd_topic *shmqd_topic_find(struct shmqd *d, const char *name)
{
	for (size_t i = 0; i < d->ntopics; i++)
		if (strcmp(d->topics[i]->name, name) == 0)
			return d->topics[i];
	return NULL;
}

static struct shmqd_topic *topic_add(struct shmqd *d, const char *name)
{
	struct shmqd_topic *t;

	if (d->ntopics == d->cap_topics) {
		size_t cap = d->cap_topics ? 2 * d->cap_topics : 16;
		struct shmqd_topic **v = realloc(d->topics, cap * sizeof(*v));

		if (!v)
			return NULL;
		d->topics = v;
		d->cap_topics = cap;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	snprintf(t->name, sizeof(t->name), "%s", name);
	shmq__segment_name(d->ns, name, t->segname);
	d->topics[d->ntopics++] = t;
	return t;
}

static void topic_drop(struct shmqd *d, struct shmqd_topic *t)
{
	for (size_t i = 0; i < d->ntopics; i++) {
		if (d->topics[i] != t)
			continue;
		d->topics[i] = d->topics[--d->ntopics];
		break;
	}
	shmqd_spill_release(t);
	if (t->online)
		shmq__segment_detach(&t->map);
	free(t);
}

void shmqd_topics_detach_all(struct shmqd *d)
{
	/* Detach only: clients keep using the segments, and the next shmqd
	 * adopts them. */
	while (d->ntopics)
		topic_drop(d, d->topics[d->ntopics - 1]);
	free(d->topics);
	d->topics = NULL;
	d->cap_topics = 0;
}

/* ------------------------------------------------------------------------
 * Segments
 */

/*
 * Tell attached clients that the segment is going away: they return
 * SHMQ_EDELETED from their next call, sleepers included.
 */
static void segment_mark_deleted(struct shmq_map *m)
{
	struct shmq_seg_header *h = m->hdr;

	/* Whatever the daemon wrote before is visible before the flag. */
	ck_pr_fence_store();
	ck_pr_store_32(&h->deleted, 1);
	/*
	 * The flag is visible before either sequence word changes, so a
	 * waiter that sees a new sequence value and re-reads the flag (with
	 * the acquire its wait loop does) finds it set.
	 */
	ck_pr_fence_store();
	ck_pr_inc_32(&h->data_seq);
	ck_pr_inc_32(&h->space_seq);
	shmq__futex_wake_all(&h->data_seq);
	shmq__futex_wake_all(&h->space_seq);
}

static void segment_take_over(struct shmqd *d, struct shmqd_topic *t)
{
	/* Informational: which shmqd serves the topic now. */
	ck_pr_store_32(&t->map.hdr->daemon_pid, (uint32_t)d->pid);
	memset(&t->reap, 0, sizeof(t->reap));
	t->online = true;
	t->offline_err = 0;
}

/*
 * Is the object segname a regular file owned by us with exactly `mode`?
 * This is checked independently of shmq__segment_attach before the daemon
 * unlinks a segment that attach refused, so that the decision to destroy
 * never rests on the order in which attach happens to run its checks.
 */
static bool segment_is_ours(struct shmqd *d, const char *segname, uint32_t mode)
{
	struct stat st;
	bool ours;
	int fd;

	fd = shm_open(segname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0)
		return false;
	ours = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	       st.st_uid == d->euid && (st.st_mode & 07777) == mode;
	close(fd);
	return ours;
}

/*
 * Bring topic t online from its topic file.  Logs what it did; a failure
 * is logged only when it differs from the topic's previous failure, so
 * that periodic retries of a squatted topic do not flood the log.
 * Returns 0 or the error that keeps the topic offline.
 */
static int topic_bring_online(struct shmqd *d, struct shmqd_topic *t)
{
	struct shmq_topic_params p;
	char why[SHMQD_MSG_MAX];
	bool retry = t->offline_err != 0;
	uint32_t prev;
	uid_t owner;
	int err;

	err = shmq__topic_file_read(d->dir, t->name, &p, &owner);
	if (err) {
		if (err != t->offline_err)
			shmqd_err("topic %s: cannot read %s/%s/%s%s: %s; the topic stays offline",
				  t->name, d->dir, SHMQ_TOPICS_DIR, t->name,
				  TOPIC_SUFFIX, shmqd_liberr(err, why, sizeof(why)));
		goto offline;
	}
	if (owner != d->euid) {
		err = SHMQ_EFOREIGN;
		if (err != t->offline_err)
			shmqd_err("topic %s: its topic file belongs to uid %u, not to uid %u who runs shmqd; the topic stays offline",
				  t->name, (unsigned)owner, (unsigned)d->euid);
		goto offline;
	}
	t->params = p;

	err = shmq__segment_attach(t->segname, d->euid, p.mode, p.topic_id,
				   &t->map);
	if (err == SHMQ_EDELETED && segment_is_ours(d, t->segname, p.mode)) {
		/*
		 * Ours, but marked deleted while its topic file survived (a
		 * delete that died half-way in some older daemon).  Clients
		 * already treat it as gone, so it can never serve again:
		 * replace it.
		 */
		shmqd_err("topic %s: segment %s is marked deleted although the topic exists; replacing it with an empty one",
			  t->name, t->segname);
		shm_unlink(t->segname);
		err = -ENOENT;
	}
	if (err == 0) {
		if (t->map.geo.partitions != p.partitions ||
		    t->map.geo.ring_bytes != p.ring_bytes) {
			err = SHMQ_ESIZE;
			if (err != t->offline_err)
				shmqd_err("topic %s: segment %s has %u partitions of %llu bytes but the topic file says %u of %llu; refusing it, the topic stays offline",
					  t->name, t->segname,
					  t->map.geo.partitions,
					  (unsigned long long)t->map.geo.ring_bytes,
					  p.partitions,
					  (unsigned long long)p.ring_bytes);
			shmq__segment_detach(&t->map);
			goto offline;
		}
		err = shmqd_spill_prepare(d, t, NULL);
		if (err) {
			shmq__segment_detach(&t->map);
			goto offline;
		}
		shmqd_spill_adopt(t);
		prev = ck_pr_load_32(&t->map.hdr->daemon_pid);
		segment_take_over(d, t);
		if (prev && prev != (uint32_t)d->pid)
			shmqd_log("topic %s: adopted segment %s (served before by shmqd pid %u)%s",
				  t->name, t->segname, prev,
				  retry ? "; the topic is online again" : "");
		else
			shmqd_log("topic %s: adopted segment %s%s", t->name,
				  t->segname,
				  retry ? "; the topic is online again" : "");
		return 0;
	}
	if (err == -ENOENT) {
		uint64_t *starts = NULL;

		/*
		 * A spilling topic continues after the end of its logs, and
		 * its groups replay from their checkpointed offsets.
		 */
		if (p.spill_mode != SHMQ_SPILL_OFF) {
			starts = calloc(p.partitions, sizeof(*starts));
			err = starts ? shmqd_spill_prepare(d, t, starts) : -ENOMEM;
		} else {
			err = shmqd_spill_prepare(d, t, NULL);
		}
		if (err == 0)
			err = shmq__segment_create_at(t->segname, t->name, &p,
						      starts, &t->map);
		if (err == 0) {
			if (starts)
				shmqd_spill_restore_groups(d, t);
			segment_take_over(d, t);
			shmqd_log("topic %s: segment %s was missing (host restart?); recreated it (%u partition%s of %llu bytes)%s",
				  t->name, t->segname, p.partitions,
				  p.partitions == 1 ? "" : "s",
				  (unsigned long long)p.ring_bytes,
				  starts ? ", continuing after its spilled log" : " empty");
			free(starts);
			return 0;
		}
		free(starts);
		shmqd_spill_release(t);
		if (err != t->offline_err)
			shmqd_err("topic %s: segment %s is missing and could not be recreated: %s; the topic stays offline",
				  t->name, t->segname,
				  shmqd_liberr(err, why, sizeof(why)));
		goto offline;
	}
	if (err != t->offline_err)
		shmqd_err("topic %s: refusing segment %s: %s; it is left untouched and the topic stays offline until it is removed",
			  t->name, t->segname, shmqd_liberr(err, why, sizeof(why)));
offline:
	t->online = false;
	t->offline_err = err;
	return err;
}

static int topic_dirent_filter(const struct dirent *e)
{
	size_t n = strlen(e->d_name), s = strlen(TOPIC_SUFFIX);

	return n > s && strcmp(e->d_name + n - s, TOPIC_SUFFIX) == 0;
}

void shmqd_topics_adopt_all(struct shmqd *d)
{
	char path[4096];
	struct dirent **list = NULL;
	unsigned online = 0, offline = 0;
	int n;

	snprintf(path, sizeof(path), "%s/%s", d->dir, SHMQ_TOPICS_DIR);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		shmqd_err("cannot create %s: %s", path, strerror(errno));

	/* alphasort: adoption, and so the log, in a stable order. */
	n = scandir(path, &list, topic_dirent_filter, alphasort);
	if (n < 0) {
		shmqd_err("cannot list %s: %s; no topic adopted", path,
			  strerror(errno));
		return;
	}
	for (int i = 0; i < n; i++) {
		char name[SHMQ_NAME_MAX + 1];
		size_t len = strlen(list[i]->d_name) - strlen(TOPIC_SUFFIX);
		struct shmqd_topic *t;

		/*
		 * Temporary files of an interrupted topic file write, and
		 * anything else that is not NAME.topic for a valid name, are
		 * not topics.
		 */
		if (len > SHMQ_NAME_MAX)
			goto next;
		memcpy(name, list[i]->d_name, len);
		name[len] = '\0';
		if (!shmq__name_valid(name) || shmqd_topic_find(d, name))
			goto next;
		t = topic_add(d, name);
		if (!t) {
			shmqd_err("topic %s: out of memory; not adopted", name);
			goto next;
		}
		if (topic_bring_online(d, t) == 0)
			online++;
		else
			offline++;
next:
		free(list[i]);
	}
	free(list);
	if (online + offline)
		shmqd_log("%u topic%s online, %u offline", online,
			  online == 1 ? "" : "s", offline);
}

void shmqd_topics_retry_offline(struct shmqd *d)
{
	size_t i = 0;

	while (i < d->ntopics) {
		struct shmqd_topic *t = d->topics[i];
		char path[4096];

		if (t->online || topic_bring_online(d, t) == 0) {
			i++;
			continue;
		}
		/*
		 * Someone removed the topic file by hand: the name is free
		 * again.  topic_drop() moves the last entry to slot i, so i
		 * is not advanced.
		 */
		snprintf(path, sizeof(path), "%s/%s/%s%s", d->dir,
			 SHMQ_TOPICS_DIR, t->name, TOPIC_SUFFIX);
		if (access(path, F_OK) != 0 && errno == ENOENT) {
			shmqd_log("topic %s: its topic file is gone; forgetting the offline topic",
				  t->name);
			topic_drop(d, t);
			continue;
		}
		i++;
	}
}

/* ------------------------------------------------------------------------
 * Control requests
 */

/*
 * CREATE found a segment of the name it wants while no topic file names it:
 * left by a create that died before writing the file, or by a delete that
 * died after removing it.  Replace it if it is ours; never touch it if not.
 */
static int clear_stale_segment(struct shmqd *d, const char *name,
			       const char *segname, uint32_t mode,
			       char *detail, size_t n)
{
	struct shmq_map m;
	char why[SHMQD_MSG_MAX];
	int err;

	err = shmq__segment_attach(segname, d->euid, mode, 0, &m);
	if (err == 0) {
		/* A whole topic nobody can find; wake any straggler first. */
		segment_mark_deleted(&m);
		shmq__segment_detach(&m);
	} else if (err == -ENOENT) {
		return 0;	/* gone meanwhile */
	} else if (err == SHMQ_EFOREIGN || !segment_is_ours(d, segname, mode)) {
		shmqd_err("topic %s: segment %s exists, has no topic file and is not ours: %s; refusing to create the topic",
			  name, segname, shmqd_liberr(err, why, sizeof(why)));
		snprintf(detail, n,
			 "shared memory object %s already exists and belongs to another user or has unexpected permissions; shmqd will not touch it (remove it by hand if it is stale)",
			 segname);
		return SHMQ_EFOREIGN;
	}
	/* Ours: a valid but orphaned segment, or our own half-built one. */
	if (shm_unlink(segname) != 0 && errno != ENOENT) {
		err = -errno;
		snprintf(detail, n, "cannot remove stale segment %s: %s",
			 segname, strerror(errno));
		return err;
	}
	shmqd_log("topic %s: removed stale segment %s left without a topic file",
		  name, segname);
	return 0;
}

/*
 * The library's check names the field and the value it refused; the rule
 * for that field, appended here, tells the user what would be accepted.
 */
static const struct {
	const char *field;
	const char *rule;
} param_rules[] = {
	{ "partitions", "partitions must be between 1 and 256" },
	{ "ring_bytes", "ring_bytes must be a power of two between 64 KiB and 4 GiB" },
	{ "max_message", "max_message must be at most half of ring_bytes" },
	{ "mode", "mode must give the owner read and write and use only the bits of 0666" },
	{ "full_policy", "full_policy must be spill, block or fail" },
	{ "numa_node", "numa_node must be -1 (no binding) or a node number" },
};

static void explain_params(const char *lib, char *detail, size_t n)
{
	for (size_t i = 0; i < sizeof(param_rules) / sizeof(param_rules[0]); i++) {
		size_t len = strlen(param_rules[i].field);

		if (strncmp(lib, param_rules[i].field, len) == 0 &&
		    (lib[len] == ' ' || lib[len] == ':')) {
			snprintf(detail, n, "%s: %s", param_rules[i].rule, lib);
			return;
		}
	}
	if (*lib)
		snprintf(detail, n, "invalid topic options: %s", lib);
	else
		snprintf(detail, n,
			 "invalid topic options: partitions 1..256, ring_bytes a power of two between 64 KiB and 4 GiB, max_message at most ring_bytes/2 - 32, full_policy spill, block or fail");
}

int shmqd_topic_create(struct shmqd *d, const char *name,
		       const struct shmq_topic_params *params, char *detail,
		       size_t n)
{
	struct shmq_topic_params p = *params;
	struct shmq_topic_params existing;
	char segname[SHMQ_SEGNAME_MAX];
	char why[SHMQD_MSG_MAX];
	struct shmqd_topic *t;
	struct shmq_map map;
	uid_t owner;
	int err;

	if (!shmq__name_valid(name)) {
		snprintf(detail, n,
			 "invalid topic name \"%s\": use 1 to %d bytes of A-Z a-z 0-9 . _ - not starting with '.'",
			 name, SHMQ_NAME_MAX);
		return -EINVAL;
	}
	t = shmqd_topic_find(d, name);
	if (t) {
		snprintf(detail, n, "topic %s already exists%s", name,
			 t->online ? "" :
			 " (offline: shmqd refused its segment; see its log)");
		return -EEXIST;
	}
	/* A topic file that appeared behind our back still owns the name. */
	err = shmq__topic_file_read(d->dir, name, &existing, &owner);
	if (err == 0 || err == -EINVAL) {
		snprintf(detail, n, "a topic file for %s already exists in %s/%s",
			 name, d->dir, SHMQ_TOPICS_DIR);
		return -EEXIST;
	}
	if (err != -ENOENT) {
		snprintf(detail, n, "cannot check for a topic file of %s: %s",
			 name, shmqd_liberr(err, why, sizeof(why)));
		return err;
	}

	shmq__clear_detail();
	err = shmq__topic_params_check(&p);
	if (err) {
		const char *lib = shmq_errdetail();

		explain_params(lib ? lib : "", detail, n);
		return err;
	}

	do {
		if (getrandom(&p.topic_id, sizeof(p.topic_id), 0) !=
		    (ssize_t)sizeof(p.topic_id)) {
			err = -errno;
			snprintf(detail, n, "getrandom: %s", strerror(errno));
			return err;
		}
	} while (p.topic_id == 0);

	shmq__segment_name(d->ns, name, segname);
	/* Spill files of an earlier topic of that name are not this one's. */
	shmqd_spill_remove(d, name);
	err = shmq__segment_create(segname, name, &p, &map);
	if (err == -EEXIST) {
		err = clear_stale_segment(d, name, segname, p.mode, detail, n);
		if (err)
			return err;
		err = shmq__segment_create(segname, name, &p, &map);
	}
	if (err) {
		shmqd_liberr(err, why, sizeof(why));
		if (err == -ENOSPC)
			snprintf(detail, n,
				 "not enough shared memory for %u partitions of %llu bytes (is /dev/shm full?): %s",
				 p.partitions, (unsigned long long)p.ring_bytes,
				 why);
		else
			snprintf(detail, n, "cannot create segment %s: %s",
				 segname, why);
		shmqd_err("topic %s: %s", name, detail);
		return err;
	}

	err = shmq__topic_file_write(d->dir, name, &p);
	if (err) {
		/* No client can have found the topic yet: undo quietly. */
		snprintf(detail, n, "cannot write topic file %s/%s/%s%s: %s",
			 d->dir, SHMQ_TOPICS_DIR, name, TOPIC_SUFFIX,
			 shmqd_liberr(err, why, sizeof(why)));
		shmqd_err("topic %s: %s", name, detail);
		shm_unlink(segname);
		shmq__segment_detach(&map);
		return err;
	}

	t = topic_add(d, name);
	if (!t) {
		/*
		 * The topic exists on disk and in memory; only our table is
		 * short of it.  Detach: the next start (or retry) adopts it.
		 */
		shmq__segment_detach(&map);
		snprintf(detail, n,
			 "topic created, but shmqd is out of memory and will not reap it until restarted");
		shmqd_err("topic %s: %s", name, detail);
		return 0;
	}
	t->params = p;
	t->map = map;
	if (shmqd_spill_prepare(d, t, NULL))
		shmqd_err("topic %s: out of memory for its spill state; it will not spill until shmqd restarts",
			  name);
	segment_take_over(d, t);
	shmqd_log("topic %s: created (%u partition%s of %llu bytes, max message %u, mode %04o, segment %s)",
		  name, p.partitions, p.partitions == 1 ? "" : "s",
		  (unsigned long long)p.ring_bytes, p.max_message,
		  (unsigned)p.mode, segname);
	snprintf(detail, n, "created topic %s", name);
	return 0;
}

int shmqd_topic_delete(struct shmqd *d, const char *name, char *detail,
		       size_t n)
{
	char why[SHMQD_MSG_MAX];
	struct shmqd_topic *t;
	int err;

	if (!shmq__name_valid(name)) {
		snprintf(detail, n, "invalid topic name \"%s\"", name);
		return -EINVAL;
	}
	t = shmqd_topic_find(d, name);
	if (!t) {
		snprintf(detail, n, "no topic named %s", name);
		return -ENOENT;
	}

	/* The commit point: from here on no new client finds the topic. */
	err = shmq__topic_file_remove(d->dir, name);
	if (err && err != -ENOENT) {
		snprintf(detail, n, "cannot remove topic file of %s: %s", name,
			 shmqd_liberr(err, why, sizeof(why)));
		shmqd_err("topic %s: %s", name, detail);
		return err;
	}

	if (t->online) {
		segment_mark_deleted(&t->map);
		/*
		 * Attached clients keep their mappings (and see deleted);
		 * the memory is freed when the last of them detaches.
		 */
		if (shm_unlink(t->segname) != 0 && errno != ENOENT)
			shmqd_err("topic %s: cannot unlink segment %s: %s",
				  name, t->segname, strerror(errno));
		shmqd_log("topic %s: deleted", name);
	} else {
		shmqd_log("topic %s: deleted; it was offline, so its segment %s was left untouched",
			  name, t->segname);
	}
	topic_drop(d, t);
	shmqd_spill_remove(d, name);
	snprintf(detail, n, "deleted topic %s", name);
	return 0;
}
