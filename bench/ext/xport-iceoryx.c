/*
 * xport-iceoryx.c - Eclipse iceoryx (its C binding) as a baseline of the
 * harness (a plugin).
 *
 * Design note
 *   Built by bench/run.sh into $SHMQ_BUILD/bench/xport-iceoryx.so when the
 *   C binding's headers are there (run.sh installs
 *   libiceoryx-binding-c-dev and iceoryx as root, and starts iox-roudi,
 *   the daemon every iceoryx process registers with).  The plugin declines
 *   to load unless run.sh says RouDi is up (BENCH_IOX_ROUDI=1): without it
 *   iox_runtime_init() would wait for a daemon that never comes.
 *
 *   One channel is one service (shmq-bench, <coordinator pid>-<id>,
 *   <channel>): a publisher that waits for a slow subscriber
 *   (WAIT_FOR_CONSUMER) and a subscriber whose queue blocks the publisher
 *   when full (BLOCK_PRODUCER), so nothing is dropped; the harness checks
 *   that anyway.  The subscriber queue is 256 chunks, 64 for messages
 *   above 16 KiB (RouDi's default pool of 128 KiB chunks holds 200).
 *   Each measured process registers its own runtime, after the fork.
 *
 *   Sending copies into a loaned chunk (send) or lets the harness write in
 *   place (claim/commit: iceoryx's natural zero-copy use, used for the
 *   throughput stream).  Receiving is zero copy; the chunk is released by
 *   release.  iceoryx samples are fixed-size, typed data and the C binding
 *   has no accessor for a chunk's payload size, so the receiver reports the
 *   measurement's message size; the harness still checks every word it
 *   stamped.
 *
 *   Two ways to wait, as users would: iceoryx-busy polls take_chunk in a
 *   spin, iceoryx-wait sleeps in a WaitSet attached to the subscriber's
 *   HAS_DATA state.
 */
#define _GNU_SOURCE
#include "../xport.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "iceoryx_binding_c/chunk.h"
#include "iceoryx_binding_c/enums.h"
#include "iceoryx_binding_c/log.h"
#include "iceoryx_binding_c/notification_info.h"
#include "iceoryx_binding_c/publisher.h"
#include "iceoryx_binding_c/runtime.h"
#include "iceoryx_binding_c/subscriber.h"
#include "iceoryx_binding_c/wait_set.h"

#define ATTACH_NS 5000000000ull	/* how long open waits for its peer */
#define ROUDI_SOCKET "/tmp/roudi"	/* iceoryx 2.0's default */

struct iep {
	struct bx_chan *ch;
	bool wait;
	iox_pub_storage_t ps;
	iox_sub_storage_t ss;
	iox_ws_storage_t ws_storage;
	iox_pub_t pub;
	iox_sub_t sub;
	iox_ws_t ws;
	void *loan;
	const void *held;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void runtime(void)
{
	static pid_t done;
	char name[64];

	/* One runtime per process, registered after the fork. */
	if (done == getpid())
		return;
	snprintf(name, sizeof(name), "shmqbench%d", (int)getpid());
	/* Its debug log would land in the middle of our table. */
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	iox_runtime_init(name);
	done = getpid();
}

static int i_make(struct bx_chan *ch)
{
	snprintf(ch->name, sizeof(ch->name), "%d-%u", (int)getpid(), ch->cf->id);
	return 0;
}

static void i_free(struct bx_chan *ch)
{
	(void)ch;
}

static int i_open(struct bx_chan *ch, enum bx_role role, void **ep, bool wait)
{
	struct iep *e = calloc(1, sizeof(*e));
	char event[16];
	uint64_t until = now_ns() + ATTACH_NS;

	if (!e)
		return -ENOMEM;
	e->ch = ch;
	e->wait = wait;
	snprintf(event, sizeof(event), "c%u", ch->index);
	runtime();
	if (role == BX_TX) {
		iox_pub_options_t po;

		iox_pub_options_init(&po);
		po.historyCapacity = 0;
		po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
		e->pub = iox_pub_init(&e->ps, "shmq-bench", ch->name, event, &po);
		while (!iox_pub_has_subscribers(e->pub)) {
			if (now_ns() > until) {
				snprintf(ch->err, sizeof(ch->err), "no subscriber came");
				iox_pub_deinit(e->pub);
				free(e);
				return -ETIMEDOUT;
			}
			usleep(1000);
		}
	} else {
		iox_sub_options_t so;

		iox_sub_options_init(&so);
		so.queueCapacity = ch->cf->msg_size > 16384 ? 64 : 256;
		so.historyRequest = 0;
		so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
		e->sub = iox_sub_init(&e->ss, "shmq-bench", ch->name, event, &so);
		while (iox_sub_get_subscription_state(e->sub) != SubscribeState_SUBSCRIBED) {
			if (now_ns() > until) {
				snprintf(ch->err, sizeof(ch->err), "subscription not granted");
				iox_sub_deinit(e->sub);
				free(e);
				return -ETIMEDOUT;
			}
			usleep(1000);
		}
		if (wait) {
			e->ws = iox_ws_init(&e->ws_storage);
			if (iox_ws_attach_subscriber_state(e->ws, e->sub,
							   SubscriberState_HAS_DATA,
							   0, NULL) != WaitSetResult_SUCCESS) {
				snprintf(ch->err, sizeof(ch->err), "WaitSet attach failed");
				iox_ws_deinit(e->ws);
				iox_sub_deinit(e->sub);
				free(e);
				return -EIO;
			}
		}
	}
	*ep = e;
	return 0;
}

static int open_busy(struct bx_chan *ch, enum bx_role role, void **ep)
{
	return i_open(ch, role, ep, false);
}

static int open_wait(struct bx_chan *ch, enum bx_role role, void **ep)
{
	return i_open(ch, role, ep, true);
}

static int i_claim(void *ep, size_t len, void **buf)
{
	struct iep *e = ep;
	enum iox_AllocationResult r;

	r = iox_pub_loan_chunk(e->pub, &e->loan, (uint32_t)len);
	if (r != AllocationResult_SUCCESS) {
		snprintf(e->ch->err, sizeof(e->ch->err),
			 "iox_pub_loan_chunk(%zu bytes): result %d", len, (int)r);
		return -ENOMEM;
	}
	*buf = e->loan;
	return 0;
}

static int i_commit(void *ep)
{
	struct iep *e = ep;

	iox_pub_publish_chunk(e->pub, e->loan);
	e->loan = NULL;
	return 0;
}

static int i_send(void *ep, const void *msg, size_t len)
{
	void *b;
	int rc = i_claim(ep, len, &b);

	if (rc)
		return rc;
	memcpy(b, msg, len);
	return i_commit(ep);
}

static void i_release(void *ep)
{
	struct iep *e = ep;

	if (e->held)
		iox_sub_release_chunk(e->sub, e->held);
	e->held = NULL;
}

static int i_recv(void *ep, const void **msg, size_t *len)
{
	struct iep *e = ep;
	const void *c;

	i_release(e);
	for (;;) {
		enum iox_ChunkReceiveResult r = iox_sub_take_chunk(e->sub, &c);

		if (r == ChunkReceiveResult_SUCCESS)
			break;
		if (r != ChunkReceiveResult_NO_CHUNK_AVAILABLE) {
			snprintf(e->ch->err, sizeof(e->ch->err),
				 "iox_sub_take_chunk: result %d", (int)r);
			return -EIO;
		}
		if (e->wait) {
			iox_notification_info_t info[4];
			uint64_t missed;

			iox_ws_wait(e->ws, info, 4, &missed);
		} else {
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#endif
		}
	}
	e->held = c;
	*msg = c;
	*len = e->ch->cf->msg_size;
	return 0;
}

static void i_close(void *ep)
{
	struct iep *e = ep;

	if (e->sub) {
		i_release(e);
		if (e->ws) {
			iox_ws_detach_subscriber_state(e->ws, e->sub,
						       SubscriberState_HAS_DATA);
			iox_ws_deinit(e->ws);
		}
		iox_sub_deinit(e->sub);
	}
	if (e->pub)
		iox_pub_deinit(e->pub);
	free(e);
}

static const struct bx_xport busy = {
	.api = BX_API_VERSION,
	.name = "iceoryx-busy",
	.label = "iceoryx busy-poll",
	.flags = BX_LAT | BX_TPUT | BX_SPIN | BX_OPTIONAL,
	.chan_make = i_make,
	.chan_free = i_free,
	.open = open_busy,
	.send = i_send,
	.claim = i_claim,
	.commit = i_commit,
	.recv = i_recv,
	.release = i_release,
	.close = i_close,
};

static const struct bx_xport wait = {
	.api = BX_API_VERSION,
	.name = "iceoryx-wait",
	.label = "iceoryx WaitSet",
	.flags = BX_LAT | BX_TPUT | BX_OPTIONAL,
	.chan_make = i_make,
	.chan_free = i_free,
	.open = open_wait,
	.send = i_send,
	.claim = i_claim,
	.commit = i_commit,
	.recv = i_recv,
	.release = i_release,
	.close = i_close,
};

const struct bx_xport *const *bx_plugin_xports(unsigned api, unsigned *n,
					       char *why, size_t len)
{
	static const struct bx_xport *const v[] = { &busy, &wait };
	const char *up = getenv("BENCH_IOX_ROUDI");

	if (api != BX_API_VERSION) {
		snprintf(why, len, "plugin built for harness API %d, not %u",
			 BX_API_VERSION, api);
		return NULL;
	}
	/* RouDi's socket: iox_runtime_init() would wait for ever without it. */
	if (!up || strcmp(up, "1") || access(ROUDI_SOCKET, F_OK) < 0) {
		snprintf(why, len, "iox-roudi is not running (bench/run.sh starts it as root)");
		return NULL;
	}
	*n = 2;
	return v;
}
