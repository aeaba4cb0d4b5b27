/*
 * group-t.c - consumer group semantics in one process: where a member
 * starts (committed, earliest, latest, explicit offset), how members of one
 * group share messages, commit and resume, and deleting a group that holds
 * the ring.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define TOPIC "groups"

static shmq_client_t *cl;

static void send_range(shmq_producer_t *p, int from, int to)
{
	char buf[32];
	int i, rc;

	for (i = from; i < to; i++) {
		snprintf(buf, sizeof buf, "m%06d", i);
		rc = shmq_send(p, 0, NULL, 0, buf, strlen(buf), 1000, NULL);
		if (rc < 0)
			bail("send %d: %s", i, shmq_strerror(rc));
	}
}

/*
 * Receive values from..to-1 in order; with `all`, then expect nothing more
 * for 50 ms.
 */
static int expect_seq(shmq_consumer_t *c, int from, int to, int all, const char *what)
{
	struct shmq_msg m;
	char want[32];
	int i = from, rc = -EAGAIN;

	while ((all || i < to) && (rc = shmq_consumer_poll(c, &m, 50)) == 0) {
		snprintf(want, sizeof want, "m%06d", i);
		if (i >= to || m.value_len != strlen(want) ||
		    memcmp(m.value, want, m.value_len)) {
			diag("%s: got \"%.*s\", expected %s", what, (int)m.value_len,
			     (const char *)m.value, i < to ? want : "nothing");
			return ok(0, "%s", what);
		}
		i++;
	}
	if (!all && i == to)
		return ok(1, "%s", what);
	if (rc != -EAGAIN)
		diag("%s: poll: %s", what, shmq_strerror(rc));
	if (i != to)
		diag("%s: got %d of %d messages", what, i - from, to - from);
	return ok(rc == -EAGAIN && i == to, "%s", what);
}

#define expect_range(c, from, to, what) expect_seq(c, from, to, 1, what)

static shmq_consumer_t *open_group(const char *group, int from, uint64_t offset)
{
	struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *c = NULL;
	int rc;

	o.from = from;
	o.offset = offset;
	rc = shmq_consumer_open(cl, TOPIC, group, &o, &c);
	if (rc)
		bail("consumer_open %s: %s (%s)", group, shmq_strerror(rc), shmq_errdetail());
	return c;
}

int main(void)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	shmq_producer_t *p;
	shmq_consumer_t *a, *b, *c;
	struct shmq_msg m;
	uint64_t off10 = 0;
	char dir[256];
	pid_t d;
	int rc, i, na, nb, seen[200];

	tu_init(60);
	plan(21);
	tu_make_dir("group", dir, sizeof dir);
	d = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);
	to.partitions = 1;
	to.ring_bytes = 64 << 10;
	to.full_policy = SHMQ_FULL_FAIL;
	if ((rc = shmq_topic_create(cl, TOPIC, &to)))
		bail("create: %s (%s)", shmq_strerror(rc), shmq_errdetail());
	if ((rc = shmq_producer_open(cl, TOPIC, NULL, &p)))
		bail("producer_open: %s", shmq_strerror(rc));

	/* A new group with the default start sees what the ring still holds. */
	send_range(p, 0, 20);
	a = open_group("g", SHMQ_FROM_COMMITTED, 0);
	for (i = 0; i < 10; i++) {
		if (shmq_consumer_poll(a, &m, 100))
			bail("poll %d", i);
		if (i == 9)
			off10 = m.next_offset;
	}
	shmq_consumer_release(a);
	is_int(shmq_consumer_commit(a), 0, "commit after 10 messages");
	shmq_consumer_close(a);

	/* Resume from the committed offset, after every member left. */
	send_range(p, 20, 30);
	a = open_group("g", SHMQ_FROM_COMMITTED, 0);
	expect_range(a, 10, 30, "new member resumes at the committed offset");
	shmq_consumer_close(a);

	/* Explicit offset, latest and earliest. */
	a = open_group("g", SHMQ_FROM_OFFSET, off10);
	expect_range(a, 10, 30, "explicit offset: the 11th message onwards");
	shmq_consumer_close(a);
	a = open_group("g", SHMQ_FROM_LATEST, 0);
	send_range(p, 30, 35);
	expect_range(a, 30, 35, "latest: only messages published after opening");
	is_int(shmq_consumer_seek(a, 0, SHMQ_OFFSET_EARLIEST), 0, "seek to earliest");
	expect_range(a, 0, 35, "earliest: everything the ring still holds");
	is_int(shmq_consumer_seek(a, 0, off10 + 8), -EINVAL,
	       "seek into the middle of a message is refused");
	shmq_consumer_close(a);

	/* Two members of one group share: each message to exactly one. */
	a = open_group("shared", SHMQ_FROM_LATEST, 0);
	b = open_group("shared", SHMQ_FROM_COMMITTED, 0);
	send_range(p, 100, 300);
	memset(seen, 0, sizeof seen);
	na = nb = 0;
	for (;;) {
		int got = 0;

		if (shmq_consumer_poll(a, &m, 0) == 0) {
			seen[atoi((const char *)m.value + 1) - 100]++;
			na++;
			got = 1;
		}
		if (shmq_consumer_poll(b, &m, 0) == 0) {
			seen[atoi((const char *)m.value + 1) - 100]++;
			nb++;
			got = 1;
		}
		if (!got)
			break;
	}
	for (i = 0; i < 200 && seen[i] == 1; i++)
		;
	ok(i == 200, "two members of a group: each of 200 messages exactly once (%d, %d)", na, nb);
	ok(na > 0 && nb > 0, "both members got work");

	/* A second group still sees every message. */
	c = open_group("other", SHMQ_FROM_EARLIEST, 0);
	expect_seq(c, 0, 35, 0, "another group sees the stream from the start");
	expect_range(c, 100, 300, "... and every message the shared group split");
	shmq_consumer_close(c);

	/* Auto-commit: what was released is committed, also at close. */
	{
		struct shmq_consumer_opts o = SHMQ_CONSUMER_OPTS_INIT;
		shmq_consumer_t *ac;

		o.from = SHMQ_FROM_EARLIEST;
		o.auto_commit_ms = 1;
		if (shmq_consumer_open(cl, TOPIC, "auto", &o, &ac))
			bail("auto: %s", shmq_errdetail());
		expect_seq(ac, 0, 12, 0, "auto-commit: a member reads 12 messages");
		shmq_consumer_close(ac);
		ac = open_group("auto", SHMQ_FROM_COMMITTED, 0);
		expect_seq(ac, 12, 20, 0, "auto-commit: the next member resumes after them");
		shmq_consumer_close(ac);
		is_int(shmq_group_delete(cl, TOPIC, "auto"), 0, "delete group auto");
	}

	/* Delete refuses a live group, frees the ring of an abandoned one. */
	is_int(shmq_group_delete(cl, TOPIC, "shared"), -EBUSY, "delete of a group with live members: -EBUSY");
	shmq_consumer_close(a);
	shmq_consumer_close(b);
	for (i = 0; i < 100000; i++) {
		rc = shmq_send(p, 0, NULL, 0, "fill", 4, 0, NULL);
		if (rc < 0)
			break;
	}
	is_int(rc, -EAGAIN, "abandoned groups hold the ring: FAIL policy gives -EAGAIN");
	is_int(shmq_group_delete(cl, TOPIC, "shared"), 0, "delete group shared");
	is_int(shmq_group_delete(cl, TOPIC, "other"), 0, "delete group other");
	is_int(shmq_group_delete(cl, TOPIC, "g"), 0, "delete group g");
	is_int(shmq_send(p, 0, NULL, 0, "free", 4, 0, NULL), 0, "with the groups gone the ring takes messages again");
	is_int(shmq_group_delete(cl, TOPIC, "g"), -ENOENT, "deleting it again: -ENOENT");

	shmq_producer_close(p);
	shmq_close(cl);
	tu_shmqd_stop(d, 0);
	tu_cleanup(dir);
	return tap_done();
}
