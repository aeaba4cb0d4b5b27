/*
 * xport.h - the interface every measured transport implements.
 *
 * Design note
 *   The harness (harness.c) runs the same ping-pong and the same verified
 *   stream over every transport, so that shmq and its baselines are
 *   measured by one piece of code.  A transport only moves bytes: it makes
 *   a one-way channel in the coordinating process before the measured
 *   processes are forked, opens one end of it in each of them, and sends
 *   and receives whole messages.  Stamping, checking, timing and recording
 *   are the harness's.
 *
 *   This header includes nothing of shmq or of the harness, because the
 *   optional baselines (ZeroMQ, iceoryx) are built by bench/run.sh as
 *   plugins (shared objects loaded with dlopen) against their own
 *   libraries; the benchmark programs themselves link nothing beyond what
 *   the Makefile gives them.  A plugin exports bx_plugin_xports().
 *
 *   Contract of the operations:
 *     chan_make   in the coordinator, once per channel and measurement,
 *                 before fork: make what both ends need (a pipe, shared
 *                 memory, a topic).  Errors: negative, ch->err says why.
 *     open        in a measured process: this process's end (BX_TX sends,
 *                 BX_RX receives).  Everything heavy happens here, never
 *                 in the coordinator (ZeroMQ and iceoryx start threads,
 *                 which must not cross a fork).
 *     send        one whole message of len bytes; waits (in the transport's
 *                 own way: spin or sleep) while the channel is full.
 *     claim       optional, zero copy: room for len bytes to fill in place,
 *     commit      then publish it.  The harness uses them when present.
 *     recv        waits for the next message and returns a view of it,
 *                 valid until release (or the next recv when there is no
 *                 release).
 *     close       end this process's end; chan_free undoes chan_make in
 *                 the coordinator after both processes have gone.
 *   A transport never waits for ever by itself: the measured processes
 *   run under alarm(), so a lost message ends the measurement.
 */
#ifndef SHMQ_BENCH_XPORT_H
#define SHMQ_BENCH_XPORT_H

#include <stddef.h>
#include <stdint.h>

#define BX_API_VERSION 1

/* What a transport can be used for. */
#define BX_LAT	0x1u	/* ping-pong round trips */
#define BX_TPUT	0x2u	/* one-way stream */
#define BX_SPIN	0x4u	/* waits by spinning: needs a CPU of its own */
#define BX_OPTIONAL 0x8u /* a failure skips it instead of failing the run */

enum bx_role { BX_TX = 0, BX_RX = 1 };

/* What every channel of one measurement shares. */
struct bx_conf {
	const char *tmpdir;	/* private directory of the run (socket paths) */
	const char *shmq_dir;	/* the shmq namespace */
	size_t max_msg;		/* the largest message the channel admits */
	size_t msg_size;	/* the size every message of the measurement has */
	size_t ring_bytes;	/* queue memory, where a transport has a choice */
	unsigned id;		/* unique per measurement in this process */
	int stream;		/* 1: a throughput stream, 0: ping-pong */
};

/* One direction of one measurement. */
struct bx_chan {
	const struct bx_conf *cf;
	unsigned index;		/* 0: ping or the stream, 1: pong */
	int fd[2];
	void *mem;
	size_t mem_len;
	char name[200];
	char err[256];
};

struct bx_xport {
	unsigned api;		/* BX_API_VERSION */
	const char *name;	/* JSON and --only name: "shmq-busy", "pipe" */
	const char *label;	/* for the tables */
	unsigned flags;		/* BX_* */
	size_t max_msg;		/* largest message it takes, 0 = no limit */
	int (*chan_make)(struct bx_chan *ch);
	void (*chan_free)(struct bx_chan *ch);
	int (*open)(struct bx_chan *ch, enum bx_role role, void **ep);
	int (*send)(void *ep, const void *msg, size_t len);
	int (*claim)(void *ep, size_t len, void **buf);
	int (*commit)(void *ep);
	int (*recv)(void *ep, const void **msg, size_t *len);
	void (*release)(void *ep);
	void (*close)(void *ep);
};

/*
 * A plugin's entry point: its transports, or NULL with why set (a missing
 * daemon, say).  api is the caller's BX_API_VERSION.
 */
typedef const struct bx_xport *const *(*bx_plugin_fn)(unsigned api,
							unsigned *n,
							char *why, size_t len);
const struct bx_xport *const *bx_plugin_xports(unsigned api, unsigned *n,
					       char *why, size_t len);

#endif /* SHMQ_BENCH_XPORT_H */
