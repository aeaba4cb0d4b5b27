/*
 * subscribe-t.c - pattern subscriptions: a subscription to "orders.*"
 * receives exactly the messages of the matching topics, picks up a topic
 * created later, wakes promptly when any matching topic gets a message,
 * uses no CPU while idle, and survives the deletion of one of its topics.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmq.h"
#include "tap.h"
#include "testutil.h"

#define N 100

static shmq_client_t *cl;

static void create(const char *name)
{
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	int rc;

	to.ring_bytes = 64 << 10;
	to.full_policy = SHMQ_FULL_FAIL;
	if ((rc = shmq_topic_create(cl, name, &to)))
		bail("create %s: %s (%s)", name, shmq_strerror(rc), shmq_errdetail());
}

/* Publish "<topic>:<seq>" for seq in from..to-1. */
static void publish(shmq_client_t *c, const char *topic, int from, int to)
{
	shmq_producer_t *p;
	char buf[SHMQ_NAME_MAX + 16];
	int i, rc;

	if ((rc = shmq_producer_open(c, topic, NULL, &p)))
		bail("producer_open %s: %s", topic, shmq_strerror(rc));
	for (i = from; i < to; i++) {
		snprintf(buf, sizeof buf, "%s:%d", topic, i);
		rc = shmq_send(p, 0, NULL, 0, buf, strlen(buf), 1000, NULL);
		if (rc < 0)
			bail("send %s %d: %s", topic, i, shmq_strerror(rc));
	}
	shmq_producer_close(p);
}

/*
 * Check that a message's value is "<topic>:<seq>" and return seq, or -1
 * (with a diagnostic).
 */
static int parse(const struct shmq_msg *m, const char *topic)
{
	char buf[128];
	size_t tl = strlen(topic);
	char *end;
	long seq;

	if (m->value_len >= sizeof buf)
		goto bad;
	memcpy(buf, m->value, m->value_len);
	buf[m->value_len] = 0;
	if (strncmp(buf, topic, tl) || buf[tl] != ':')
		goto bad;
	seq = strtol(buf + tl + 1, &end, 10);
	if (*end || end == buf + tl + 1)
		goto bad;
	return (int)seq;
bad:
	diag("topic %s: unexpected value \"%.*s\"", topic, (int)m->value_len,
	     (const char *)m->value);
	return -1;
}

struct tally {
	const char *name;
	int next;	/* next expected seq */
	int bad;	/* out of order, duplicated or malformed */
};

/*
 * Poll until -EAGAIN (idle_ms without a message) or until `want` messages
 * came; count per topic in t[0..nt) and anything else in *other.
 * Returns how many messages came.
 */
static int drain(shmq_subscription_t *s, struct tally *t, int nt, int *other,
		 int want, int idle_ms, char *first_topics, size_t ftn)
{
	struct shmq_msg m;
	const char *topic;
	int got = 0, i, rc, seq;

	while (got < want && (rc = shmq_subscription_poll(s, &m, &topic, idle_ms)) == 0) {
		if (first_topics && got < 4) {
			strncat(first_topics, topic, ftn - strlen(first_topics) - 1);
			strncat(first_topics, " ", ftn - strlen(first_topics) - 1);
		}
		got++;
		for (i = 0; i < nt; i++)
			if (!strcmp(topic, t[i].name))
				break;
		if (i == nt) {
			diag("message from unexpected topic %s", topic);
			(*other)++;
			continue;
		}
		seq = parse(&m, topic);
		if (seq != t[i].next) {
			diag("%s: got seq %d, expected %d", topic, seq, t[i].next);
			t[i].bad++;
			if (seq >= 0)
				t[i].next = seq + 1;
			continue;
		}
		t[i].next++;
	}
	return got;
}

int main(void)
{
	struct shmq_msg m;
	shmq_subscription_t *s = NULL;
	const char *topic = NULL;
	char dir[256], first[128] = "";
	uint64_t t0, el, cpu0, cpu;
	int rc, other = 0, got, st;
	pid_t d, kid;

	tu_init(60);
	plan(24);
	tu_make_dir("subscribe", dir, sizeof dir);
	d = tu_shmqd_start(dir, NULL);
	cl = tu_open(dir);
	create("orders.eu");
	create("orders.us");
	create("billing");

	is_int(shmq_subscribe(cl, "orders.*", "bad/name", NULL, &s), -EINVAL,
	       "a bad group name is refused");
	ok(s == NULL, "... and *out is NULL");
	shmq_subscription_close(NULL);
	is_int(shmq_subscribe(cl, "orders.*", "g", NULL, &s), 0, "subscribe orders.* in group g");
	if (!s)
		bail("no subscription: %s", shmq_errdetail());

	/* Exactly the matching topics' messages, each once, in order. */
	publish(cl, "orders.eu", 0, N);
	publish(cl, "orders.us", 0, N);
	publish(cl, "billing", 0, N);
	{
		struct tally t[2] = { { "orders.eu", 0, 0 }, { "orders.us", 0, 0 } };

		got = drain(s, t, 2, &other, 1000000, 200, first, sizeof first);
		is_int(got, 2 * N, "received 2 x %d messages", N);
		is_int(other, 0, "nothing from billing (or any other topic)");
		ok(t[0].next == N && !t[0].bad, "orders.eu: every message once, in order");
		ok(t[1].next == N && !t[1].bad, "orders.us: every message once, in order");
		ok(strstr(first, "orders.eu") && strstr(first, "orders.us"),
		   "fair: both topics among the first 4 messages (%s)", first);
	}

	/* A topic created after subscribing is picked up. */
	create("orders.asia");
	publish(cl, "orders.asia", 0, 10);
	{
		struct tally t[1] = { { "orders.asia", 0, 0 } };

		other = 0;
		t0 = tu_now_ns();
		got = drain(s, t, 1, &other, 10, 2000, NULL, 0);
		el = tu_now_ns() - t0;
		is_int(got, 10, "10 messages of orders.asia, created later, arrive");
		ok(t[0].next == 10 && !t[0].bad && !other, "... in order, content checked");
		ok(el < 1000000000ull, "... within 1 s of polling (%llu ms)",
		   (unsigned long long)(el / 1000000));
	}

	/* A subscriber blocked in poll wakes when another process publishes. */
	kid = fork();
	if (kid < 0)
		bail("fork: %s", strerror(errno));
	if (kid == 0) {
		shmq_client_t *c2;

		tap_child();
		usleep(200 * 1000);
		if (shmq_open(dir, NULL, &c2))
			_exit(2);
		publish(c2, "orders.us", N, N + 1);
		shmq_close(c2);
		_exit(0);
	}
	t0 = tu_now_ns();
	rc = shmq_subscription_poll(s, &m, &topic, 3000);
	el = tu_now_ns() - t0;
	st = tu_wait_child(kid, 5000);
	ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "publisher child exited cleanly");
	is_int(rc, 0, "blocked poll returned a message");
	ok(rc == 0 && topic && !strcmp(topic, "orders.us") && parse(&m, "orders.us") == N,
	   "... the one the child published to orders.us");
	ok(el < 2000000000ull && el >= 150000000ull,
	   "... promptly: after %llu ms (child waited 200 ms)",
	   (unsigned long long)(el / 1000000));

	/* Idle: one second of waiting costs almost no CPU. */
	cpu0 = tu_cpu_ns(RUSAGE_SELF);
	t0 = tu_now_ns();
	rc = shmq_subscription_poll(s, &m, &topic, 1000);
	el = tu_now_ns() - t0;
	cpu = tu_cpu_ns(RUSAGE_SELF) - cpu0;
	is_int(rc, -EAGAIN, "idle poll times out with -EAGAIN");
	ok(el >= 990000000ull && el < 1500000000ull, "... after the timeout (%llu ms)",
	   (unsigned long long)(el / 1000000));
	ok(cpu < 100000000ull, "... using %llu ms of CPU (< 100)",
	   (unsigned long long)(cpu / 1000000));

	is_int(shmq_subscription_commit(s), 0, "commit every topic");

	/* Deleting a topic does not break the subscription. */
	is_int(shmq_topic_delete(cl, "orders.eu"), 0, "delete orders.eu while subscribed");
	publish(cl, "orders.us", N + 1, N + 6);
	publish(cl, "orders.asia", 10, 15);
	{
		struct tally t[2] = { { "orders.us", N + 1, 0 }, { "orders.asia", 10, 0 } };

		other = 0;
		got = drain(s, t, 2, &other, 1000000, 300, NULL, 0);
		is_int(got, 10, "the other topics' 10 new messages arrive");
		ok(t[0].next == N + 6 && t[1].next == 15 && !t[0].bad && !t[1].bad && !other,
		   "... each once, in order");
	}
	is_int(shmq_subscription_poll(s, &m, &topic, 50), -EAGAIN,
	       "then polling just times out");
	is_int(shmq_subscription_commit(s), 0, "commit still works");

	shmq_subscription_close(s);
	shmq_close(cl);
	tu_shmqd_stop(d, 0);
	tu_cleanup(dir);
	return tap_done();
}
