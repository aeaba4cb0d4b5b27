/*
 * control.h - the wire format of shmqd's control socket.
 *
 * Overview
 *   DIR/control.sock is a SOCK_SEQPACKET Unix socket.  A client sends one
 *   struct shmq_ctl_request per message and reads one struct shmq_ctl_reply.
 *   Messages are fixed-size, so a short or oversized message is a protocol
 *   error (SHMQ_EPROTO), never a partial parse.  Both sides are on one host
 *   and one build, so integers travel in host order.
 *
 * Security
 *   shmqd reads SO_PEERCRED of each connection and serves only its own uid
 *   and root; others get -EACCES.
 *
 * Versioning
 *   magic and version open both messages; a mismatch is SHMQ_EPROTO.
 */
#ifndef SHMQ_CONTROL_H
#define SHMQ_CONTROL_H

#include <stdint.h>

#include "shmq.h"

#define SHMQ_CTL_MAGIC	 0x6c7463716d6873ull /* "shmqctl" */
#define SHMQ_CTL_VERSION 2u

enum shmq_ctl_op {
	SHMQ_CTL_PING = 1,   /* is shmqd there?  status 0 */
	SHMQ_CTL_CREATE = 2, /* create topic with params */
	SHMQ_CTL_DELETE = 3, /* delete topic */
};

struct shmq_ctl_params {
	uint32_t partitions;
	uint32_t max_message;
	uint64_t ring_bytes;
	int32_t full_policy;
	int32_t numa_node;
	uint32_t mode;
	uint32_t stall_timeout_ms;
	uint32_t spill_mode;
	uint32_t reserved;
	uint64_t retain_bytes;
	uint64_t retain_ms;
};

struct shmq_ctl_request {
	uint64_t magic;
	uint32_t version;
	uint32_t op; /* enum shmq_ctl_op */
	char topic[SHMQ_NAME_MAX + 8];
	struct shmq_ctl_params params;
};

#define SHMQ_CTL_DETAIL_MAX 256

struct shmq_ctl_reply {
	uint64_t magic;
	uint32_t version;
	int32_t status; /* 0 or a shmq error code */
	uint32_t daemon_pid;
	uint32_t reserved;
	char detail[SHMQ_CTL_DETAIL_MAX]; /* NUL-terminated */
};

#endif /* SHMQ_CONTROL_H */
