/*
 * client.c - the client handle, topic lookup, and the topic calls.
 *
 * A client is a data directory and its namespace id.  It holds no
 * connection: topic lookups read DIR/topics/NAME.topic and attach the
 * segment directly, so producers and consumers open and run while shmqd is
 * down; only creating and deleting topics talk to shmqd over its socket.
 *
 * Trust: the topic file says who owns the namespace (the file's owner, the
 * uid shmqd runs as), the permission bits and the topic id; the segment
 * must agree on all three, else it is refused (SHMQ_EFOREIGN), so a segment
 * squatted under the expected name by another user is never used.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "atomics.h"

#include "control.h"
#include "shmq_int.h"
#include "spill.h"

/* How long a control request may take (a create allocates the segment). */
#define CONTROL_TIMEOUT_MS 30000
/* How long the registration mutex may be waited for. */
#define LOCK_TIMEOUT_S 2

struct shmq_topic_ref {
	struct shmq_topic_ref *next;
	unsigned refs;
	struct shmq_map map;
};

int shmq_open(const char *dir, const struct shmq_open_opts *opts,
	      shmq_client_t **out)
{
	struct shmq_client *c;
	char real[PATH_MAX];
	struct stat st;
	int rc;

	(void)opts;
	if (!dir || !out)
		return -EINVAL;
	shmq__clear_detail();
	if (!realpath(dir, real))
		return shmq__fail(-errno, "data directory %s: %s", dir, strerror(errno));
	if (stat(real, &st) < 0)
		return shmq__fail(-errno, "data directory %s: %s", real, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return shmq__fail(-ENOTDIR, "%s is not a directory", real);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->dir = strdup(real);
	if (!c->dir) {
		free(c);
		return -ENOMEM;
	}
	rc = shmq__namespace_id(c->dir, &c->ns);
	if (rc) {
		free(c->dir);
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void shmq_close(shmq_client_t *c)
{
	struct shmq_topic_ref *r;

	if (!c)
		return;
	/* Handles still open keep nothing alive: closing first is the rule. */
	while ((r = c->topics)) {
		c->topics = r->next;
		shmq__segment_detach(&r->map);
		free(r);
	}
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c);
}

int shmq__topic_get(shmq_client_t *c, const char *name, struct shmq_map **out)
{
	struct shmq_topic_params p;
	struct shmq_topic_ref *r;
	char seg[SHMQ_SEGNAME_MAX];
	uid_t owner;
	int rc;

	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "bad topic name \"%s\"", name);
	rc = shmq__topic_file_read(c->dir, name, &p, &owner);
	if (rc == -ENOENT)
		return shmq__fail(-ENOENT, "no topic \"%s\" in %s", name, c->dir);
	if (rc)
		return rc;

	pthread_mutex_lock(&c->lock);
	for (r = c->topics; r; r = r->next) {
		if (r->map.geo.topic_id == p.topic_id &&
		    strcmp(r->map.name, name) == 0 &&
		    !ck_pr_load_32(&r->map.hdr->deleted)) {
			r->refs++;
			*out = &r->map;
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	shmq__segment_name(c->ns, name, seg);
	rc = shmq__segment_attach(seg, owner, p.mode, p.topic_id, &r->map);
	if (rc) {
		pthread_mutex_unlock(&c->lock);
		free(r);
		return rc;
	}
	r->refs = 1;
	r->next = c->topics;
	c->topics = r;
	*out = &r->map;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void shmq__topic_put(shmq_client_t *c, struct shmq_map *m)
{
	struct shmq_topic_ref **pp, *r;

	if (!m)
		return;
	pthread_mutex_lock(&c->lock);
	for (pp = &c->topics; (r = *pp); pp = &r->next) {
		if (&r->map != m)
			continue;
		if (--r->refs == 0) {
			*pp = r->next;
			shmq__segment_detach(&r->map);
			free(r);
		}
		break;
	}
	pthread_mutex_unlock(&c->lock);
}

int shmq__seg_lock(struct shmq_map *m)
{
	struct timespec ts;
	int rc;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += LOCK_TIMEOUT_S;
	rc = pthread_mutex_timedlock(&m->hdr->lock, &ts);
	if (rc == EOWNERDEAD) {
		/* The holder died; what it guards is re-checked by every user. */
		pthread_mutex_consistent(&m->hdr->lock);
		return 0;
	}
	if (rc == ETIMEDOUT)
		return shmq__fail(-ETIMEDOUT, "topic %s: registration lock held for over %d s",
				  m->name, LOCK_TIMEOUT_S);
	if (rc)
		return shmq__fail(SHMQ_ECORRUPT, "topic %s: registration lock unusable: %s",
				  m->name, strerror(rc));
	return 0;
}

void shmq__seg_unlock(struct shmq_map *m)
{
	pthread_mutex_unlock(&m->hdr->lock);
}

static int control(shmq_client_t *c, uint32_t op, const char *name,
		   const struct shmq_topic_opts *opts)
{
	struct shmq_ctl_request req;
	struct shmq_ctl_reply rep;
	int rc;

	memset(&req, 0, sizeof(req));
	req.op = op;
	strncpy(req.topic, name, SHMQ_NAME_MAX);
	if (opts) {
		req.params.partitions = OPT_HAS(opts, partitions) ? opts->partitions : 0;
		req.params.ring_bytes = OPT_HAS(opts, ring_bytes) ? opts->ring_bytes : 0;
		req.params.max_message = OPT_HAS(opts, max_message) ? opts->max_message : 0;
		req.params.full_policy = OPT_HAS(opts, full_policy) ? opts->full_policy : 0;
		req.params.numa_node = OPT_HAS(opts, numa_node) ? opts->numa_node : -1;
		req.params.mode = OPT_HAS(opts, mode) ? opts->mode : 0;
		req.params.stall_timeout_ms = OPT_HAS(opts, stall_timeout_ms) ?
			opts->stall_timeout_ms : 0;
		req.params.spill_mode = OPT_HAS(opts, spill) ? (uint32_t)opts->spill : 0;
		req.params.retain_bytes = OPT_HAS(opts, retain_bytes) ? opts->retain_bytes : 0;
		req.params.retain_ms = OPT_HAS(opts, retain_ms) ? opts->retain_ms : 0;
	} else {
		req.params.numa_node = -1;
	}
	rc = shmq__control_call(c->dir, &req, &rep, CONTROL_TIMEOUT_MS);
	if (rc)
		return rc;
	if (rep.status) {
		rep.detail[sizeof(rep.detail) - 1] = 0;
		if (rep.detail[0])
			return shmq__fail(rep.status, "%s", rep.detail);
		return rep.status;
	}
	return 0;
}

int shmq_topic_create(shmq_client_t *c, const char *name,
		      const struct shmq_topic_opts *opts)
{
	if (!c || !name)
		return -EINVAL;
	shmq__clear_detail();
	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "bad topic name \"%s\": use 1-%d characters of A-Z a-z 0-9 . _ - not starting with '.'",
				  name, SHMQ_NAME_MAX);
	return control(c, SHMQ_CTL_CREATE, name, opts);
}

int shmq_topic_delete(shmq_client_t *c, const char *name)
{
	if (!c || !name)
		return -EINVAL;
	shmq__clear_detail();
	if (!shmq__name_valid(name))
		return shmq__fail(-EINVAL, "bad topic name \"%s\"", name);
	return control(c, SHMQ_CTL_DELETE, name, NULL);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int shmq_topic_list(shmq_client_t *c, int (*fn)(const char *name, void *arg),
		    void *arg)
{
	char path[PATH_MAX];
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *e;
	DIR *d;
	int rc = 0;

	if (!c || !fn)
		return -EINVAL;
	shmq__clear_detail();
	snprintf(path, sizeof(path), "%s/%s", c->dir, SHMQ_TOPICS_DIR);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : shmq__fail(-errno, "%s: %s", path, strerror(errno));
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		char *name;

		if (len <= 6 || strcmp(e->d_name + len - 6, ".topic"))
			continue;
		name = strndup(e->d_name, len - 6);
		if (!name) {
			rc = -ENOMEM;
			break;
		}
		if (!shmq__name_valid(name)) {
			free(name);
			continue;
		}
		if (n == cap) {
			char **grown = realloc(names, (cap ? cap * 2 : 16) * sizeof(*names));

			if (!grown) {
				free(name);
				rc = -ENOMEM;
				break;
			}
			names = grown;
			cap = cap ? cap * 2 : 16;
		}
		names[n++] = name;
	}
	closedir(d);
	if (!rc && n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n; i++) {
		if (!rc)
			rc = fn(names[i], arg);
		free(names[i]);
	}
	free(names);
	return rc;
}

void shmq_topic_stat_free(struct shmq_topic_stat *st)
{
	uint32_t g;

	if (!st)
		return;
	for (g = 0; g < st->group_count; g++) {
		free(st->groups[g].partitions);
		free(st->groups[g].member);
	}
	free(st->groups);
	free(st->partitions);
	free(st);
}

/* The spill side of a partition's stat: shmqd's positions and the files. */
static void disk_stat(shmq_client_t *c, const char *name, struct shmq_map *m,
		      uint32_t p, struct shmq_partition_stat *ps)
{
	struct shmq_part_header *ph = shmq__part(m, p);
	struct shmq_spill_reader *r;
	char path[PATH_MAX + 64], file[PATH_MAX + 400];
	struct dirent *e;
	struct stat sb;
	DIR *d;

	ps->spilled = ck_pr_load_64(&ph->spilled);
	ps->synced = ck_pr_load_64(&ph->synced);
	ps->spill_error = (int)ck_pr_load_32((uint32_t *)&ph->spill_error);
	if (shmq__spill_reader_open(c->dir, name, p, NULL, &r) == 0) {
		if (shmq__spill_reader_range(r, &ps->disk_first, &ps->disk_end))
			ps->disk_first = ps->disk_end = 0;
		shmq__spill_reader_close(r);
	}
	snprintf(path, sizeof(path), "%s/spill/%s/%u", c->dir, name, p);
	d = opendir(path);
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		if (stat(file, &sb) == 0 && S_ISREG(sb.st_mode))
			ps->disk_bytes += (uint64_t)sb.st_size;
	}
	closedir(d);
}

int shmq_topic_stat(shmq_client_t *c, const char *name,
		    struct shmq_topic_stat **out)
{
	struct shmq_topic_stat *st;
	struct shmq_map *mp;
	uint32_t p, g, i, n;
	int rc;

	if (!c || !name || !out)
		return -EINVAL;
	shmq__clear_detail();
	rc = shmq__topic_get(c, name, &mp);
	if (rc)
		return rc;
	st = calloc(1, sizeof(*st));
	if (!st)
		goto nomem;
	strncpy(st->name, name, SHMQ_NAME_MAX);
	st->partition_count = mp->geo.partitions;
	st->ring_bytes = mp->geo.ring_bytes;
	st->max_message = mp->geo.max_message;
	st->full_policy = (int)mp->geo.full_policy;
	st->spill = (int)mp->geo.spill_mode;
	st->numa_node = mp->geo.numa_node;
	for (i = 0; i < SHMQ_MAX_PRODUCERS; i++)
		if (ck_pr_load_32(&shmq__producer_slot(mp, i)->owner.pid))
			st->producers++;
	st->partitions = calloc(mp->geo.partitions, sizeof(*st->partitions));
	st->groups = calloc(SHMQ_MAX_GROUPS, sizeof(*st->groups));
	if (!st->partitions || !st->groups)
		goto nomem;
	for (p = 0; p < mp->geo.partitions; p++) {
		struct shmq_part_header *ph = shmq__part(mp, p);
		struct shmq_partition_stat *ps = &st->partitions[p];

		ps->first_offset = ck_pr_load_64(&ph->tail);
		ps->next_offset = ck_pr_load_64(&ph->head);
		ps->used_bytes = ps->next_offset - shmq__ring_horizon(mp, p, UINT32_MAX);
		if (ps->next_offset - ps->first_offset > mp->geo.ring_bytes ||
		    ps->used_bytes > mp->geo.ring_bytes)
			ps->error = SHMQ_ECORRUPT;
		if (mp->geo.spill_mode != SHMQ_SPILL_OFF)
			disk_stat(c, name, mp, p, ps);
	}
	for (g = 0, n = 0; g < SHMQ_MAX_GROUPS; g++) {
		struct shmq_group_slot *gs = shmq__group(mp, g);
		struct shmq_group_stat *out_g = &st->groups[n];

		if (ck_pr_load_32(&gs->state) != SHMQ_GROUP_ACTIVE)
			continue;
		memcpy(out_g->name, gs->name, SHMQ_NAME_MAX);
		out_g->name[SHMQ_NAME_MAX] = 0;
		out_g->mode = ck_pr_load_32(&gs->mode) == SHMQ_GROUP_PARTITIONED ?
			SHMQ_GROUP_PARTITIONED : SHMQ_GROUP_SHARED;
		out_g->generation = ck_pr_load_32(&gs->generation);
		out_g->parked = ck_pr_load_32(&gs->parked);
		out_g->redelivered = ck_pr_load_64(&gs->redelivered);
		out_g->expired = ck_pr_load_64(&gs->expired);
		out_g->dead_lettered = ck_pr_load_64(&gs->dead_lettered);
		out_g->untethered = ck_pr_load_32(&gs->untethered) != 0;
		out_g->partitions = calloc(mp->geo.partitions, sizeof(*out_g->partitions));
		out_g->member = calloc(SHMQ_MAX_MEMBERS, sizeof(*out_g->member));
		if (!out_g->partitions || !out_g->member) {
			free(out_g->partitions);
			free(out_g->member);
			goto nomem;
		}
		for (i = 0; i < SHMQ_MAX_MEMBERS; i++) {
			struct shmq_member_slot *ms = shmq__member_slot(mp, i);
			struct shmq_member_stat *mst = &out_g->member[out_g->members];
			uint32_t pid = ck_pr_load_32(&ms->owner.pid);

			if (!pid || ck_pr_load_32(&ms->group) != g)
				continue;
			mst->pid = pid;
			for (p = 0; p < mp->geo.partitions; p++) {
				struct shmq_part_header *ph = shmq__part(mp, p);

				if (ck_pr_load_64(&ph->hold[i]) != SHMQ_POS_NONE)
					mst->in_flight++;
				else if (p == 0 && ck_pr_load_64(&ms->disk_hold) != SHMQ_POS_NONE)
					mst->in_flight++; /* held, read from disk */
				if ((ck_pr_load_32(&ph->cursor[g].owner) & ~SHMQ_OWNER_PENDING) == i)
					mst->partitions++;
			}
			out_g->members++;
		}
		n++;
		st->group_count = n;
		for (p = 0; p < mp->geo.partitions; p++) {
			struct shmq_cursor *cur = &shmq__part(mp, p)->cursor[g];
			struct shmq_group_partition_stat *gp = &out_g->partitions[p];

			gp->next = ck_pr_load_64(&cur->next);
			if (gp->next != SHMQ_POS_NONE)
				gp->next &= ~SHMQ_CURSOR_WALKER;
			gp->committed = ck_pr_load_64(&cur->committed);
			gp->missed = ck_pr_load_64(&cur->missed);
			gp->lag_bytes = st->partitions[p].next_offset - gp->next;
			gp->on_disk = (int64_t)(gp->next - st->partitions[p].first_offset) < 0;
			if (out_g->mode == SHMQ_GROUP_PARTITIONED) {
				uint32_t o = ck_pr_load_32(&cur->owner) & ~SHMQ_OWNER_PENDING;

				if (o < SHMQ_MAX_MEMBERS)
					gp->owner_pid = ck_pr_load_32(&shmq__member_slot(mp, o)->owner.pid);
			}
			if (gp->lag_bytes > mp->geo.ring_bytes &&
			    mp->geo.spill_mode == SHMQ_SPILL_OFF)
				st->partitions[p].error = SHMQ_ECORRUPT;
		}
	}
	shmq__topic_put(c, mp);
	*out = st;
	return 0;
nomem:
	shmq_topic_stat_free(st);
	shmq__topic_put(c, mp);
	return -ENOMEM;
}
