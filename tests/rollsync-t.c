/*
 * rollsync-t.c - the spill syncer (libshmq/spill.c, "Rolling without
 * stopping"): rolled segments are fdatasync'ed and closed in the syncer's
 * thread while their logs go on being written.  Built for `make
 * check-tsan` too: the writers, the syncer and retention run as threads
 * of one process.
 *
 * threads  two writer threads append to three logs that share one
 *          syncer, with 32 KiB segments (a roll every ~80 messages),
 *          flushing often and syncing now and then (after a sync the
 *          whole log is durable: synced is the end); one log also has
 *          retention deleting old segments while they may be syncing.
 *          Reopened without a syncer, every log is whole (no cut, no
 *          damage) and every message reads back, in order, intact.
 * eio      the syncer's fdatasync of a rolled segment fails: the writer
 *          hears of it (shmq__spill_poll, then every call) and is failed
 *          for good; synced does not move (a durable acknowledgement is
 *          never given for frames whose sync failed, even though the
 *          active segment's own sync would succeed); a reopen
 *          re-validates and keeps every frame that was synced.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "shmq_int.h"
#include "spill.h"
#include "tap.h"
#include "testutil.h"

#define TOPIC	"rolls"
#define NLOGS	3
#define NMSG	3000
#define VMAX	512

static char dir[256];
static struct shmq_spill_syncer *syncer;

static struct shmq_spill_opts opts(void)
{
	struct shmq_spill_opts o = {
		.topic_id = 0x5eed,
		.segment_bytes = 32 << 10,
		.index_interval = 4 << 10,
		.buffer_bytes = 8 << 10,
	};
	return o;
}

static uint32_t vlen_of(uint32_t part, uint32_t i)
{
	return 8 + (i * 37 + part * 11) % (VMAX - 8);
}

static void make_value(uint32_t part, uint32_t i, uint8_t *buf, uint32_t len)
{
	uint64_t tag = (uint64_t)part << 32 | i;
	uint32_t k;

	memcpy(buf, &tag, sizeof(tag));
	for (k = sizeof(tag); k < len; k++)
		buf[k] = (uint8_t)(i * 7 + k + part);
}

static int append(struct shmq_spill_log *log, uint32_t part, uint32_t i)
{
	uint8_t buf[VMAX];
	struct shmq_frame_view v;
	struct shmq_spill_stat st;

	shmq__spill_stat(log, &st);
	memset(&v, 0, sizeof(v));
	v.pos = st.end_offset;
	v.value_len = vlen_of(part, i);
	v.size = shmq__frame_bytes(0, v.value_len);
	v.timestamp_ns = 1000 + i;
	make_value(part, i, buf, v.value_len);
	v.value = buf;
	return shmq__spill_append(log, &v);
}

/*
 * Read partition part's log from its first retained offset; the messages
 * must be consecutive, intact, and end at NMSG.  Returns problems.
 */
static int check_log(uint32_t part, uint32_t *count)
{
	struct shmq_spill_reader *r;
	struct shmq_frame_view v;
	uint64_t off, end;
	uint32_t next = UINT32_MAX;
	uint8_t want[VMAX];
	int rc, bad = 0;

	*count = 0;
	if (shmq__spill_reader_open(dir, TOPIC, part, NULL, &r) < 0 ||
	    shmq__spill_reader_range(r, &off, &end) < 0) {
		diag("reader of %u: %s", part, shmq_errdetail());
		return 1;
	}
	while ((rc = shmq__spill_read(r, off, &v)) == 0) {
		uint64_t tag;

		off = v.pos + v.size;
		if (v.pad)
			continue;
		memcpy(&tag, v.value, sizeof(tag));
		if (next == UINT32_MAX)
			next = (uint32_t)tag; /* retention may have taken the first */
		make_value(part, next, want, vlen_of(part, next));
		if (tag != ((uint64_t)part << 32 | next) || v.value_len != vlen_of(part, next) ||
		    memcmp(v.value, want, v.value_len)) {
			if (bad++ < 3)
				diag("partition %u: at %" PRIu64 " expected message %u", part,
				     v.pos, next);
		}
		next++;
		(*count)++;
	}
	if (rc != -EAGAIN || next != NMSG || off != end) {
		diag("partition %u: ended with %s at %" PRIu64 " (range end %" PRIu64
		     "), next message %u", part, shmq_strerror(rc), off, end, next);
		bad++;
	}
	shmq__spill_reader_close(r);
	return bad;
}

struct writer {
	pthread_t t;
	struct shmq_spill_log *logs[NLOGS];
	uint32_t parts[NLOGS];
	int n;
	bool retain;	/* on the first of its logs */
	int errors;	/* appends and syncs that failed */
	int unsynced;	/* syncs after which synced was not the end */
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct shmq_spill_stat st;
	uint32_t i;
	int k;

	for (i = 0; i < NMSG; i++) {
		for (k = 0; k < w->n; k++) {
			struct shmq_spill_log *log = w->logs[k];

			if (append(log, w->parts[k], i))
				w->errors++;
			if (i % 16 == 15 && shmq__spill_flush(log))
				w->errors++;
			if (i % 200 == 199 || i + 1 == NMSG) {
				if (shmq__spill_sync(log)) {
					w->errors++;
				} else {
					shmq__spill_stat(log, &st);
					if (st.synced_offset != st.end_offset)
						w->unsynced++;
				}
				if (k == 0 && w->retain &&
				    shmq__spill_retain(log, 96 << 10, 0, shmq__now_ns(), NULL) < 0)
					w->errors++;
			}
		}
	}
	return NULL;
}

static void test_threads(void)
{
	struct shmq_spill_opts o = opts();
	struct writer w[2];
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *logs[NLOGS];
	uint32_t p, count[NLOGS];
	int errors = 0, unsynced = 0, bad = 0, whole = 0, i;

	o.syncer = syncer;
	for (p = 0; p < NLOGS; p++)
		if (shmq__spill_open(dir, TOPIC, p, &o, NULL, &logs[p]))
			bail("open %u: %s", p, shmq_errdetail());
	memset(w, 0, sizeof(w));
	w[0].logs[0] = logs[0];
	w[0].parts[0] = 0;
	w[0].logs[1] = logs[1];
	w[0].parts[1] = 1;
	w[0].n = 2;
	w[1].logs[0] = logs[2];
	w[1].parts[0] = 2;
	w[1].n = 1;
	w[1].retain = true;
	for (i = 0; i < 2; i++)
		if (pthread_create(&w[i].t, NULL, writer_main, &w[i]))
			bail("pthread_create");
	for (i = 0; i < 2; i++) {
		pthread_join(w[i].t, NULL);
		errors += w[i].errors;
		unsynced += w[i].unsynced;
	}
	is_int(errors, 0, "threads: two writers, three logs, one syncer: every append, "
	       "flush, sync and retention pass succeeded");
	is_int(unsynced, 0, "threads: after every sync, synced is the end");
	for (p = 0; p < NLOGS; p++)
		shmq__spill_close(logs[p]);

	o.syncer = NULL;
	for (p = 0; p < NLOGS; p++) {
		struct shmq_spill_log *log;

		if (shmq__spill_open(dir, TOPIC, p, &o, &rep, &log) == 0) {
			whole += rep.cuts == 0 && rep.corrupt == 0 && rep.holes == 0 &&
				 rep.segments > 2;
			shmq__spill_close(log);
		}
		bad += check_log(p, &count[p]);
	}
	is_int(whole, NLOGS, "threads: reopened, every log is whole and rolled");
	ok(bad == 0 && count[0] == NMSG && count[1] == NMSG && count[2] < NMSG,
	   "threads: every message reads back in order, intact (%u, %u, and %u after retention)",
	   count[0], count[1], count[2]);
}

static void test_eio(void)
{
	struct shmq_spill_opts o = opts();
	struct shmq_spill_recovery rep;
	struct shmq_spill_log *log;
	struct shmq_spill_stat st, st0;
	uint32_t i, segs;
	int rc = 0, polled = 0, k;

	o.syncer = syncer;
	if (shmq__spill_open(dir, "eio", 0, &o, NULL, &log))
		bail("open: %s", shmq_errdetail());
	for (i = 0; i < 100; i++)
		append(log, 0, i);
	is_int(shmq__spill_sync(log), 0, "eio: 100 messages synced");
	shmq__spill_stat(log, &st0);

	/* The next fdatasync is the syncer's, of the segment rolled next. */
	shmq__fault_reset();
	shmq__fault_arm(SHMQ_FAULT_FDATASYNC, 1, EIO, 0);
	segs = st0.segments;
	for (i = 100; rc == 0 && i < 1000; i++) {
		rc = append(log, 0, i);
		shmq__spill_stat(log, &st);
		if (st.segments > segs)
			break;
	}
	for (k = 0; k < 5000 && !polled; k++) {
		polled = shmq__spill_poll(log);
		if (!polled)
			usleep(1000);
	}
	shmq__fault_disarm();
	ok(rc == 0 && polled == -EIO, "eio: the syncer's failed fdatasync of the rolled "
	   "segment reaches the writer (%s)", shmq_strerror(polled));
	shmq__spill_stat(log, &st);
	ok(st.error == -EIO && st.synced_offset == st0.synced_offset,
	   "eio: the writer is failed; synced did not move");
	is_int(shmq__spill_sync(log), -EIO, "eio: so a sync fails, though the active "
	       "segment's own fdatasync would work");
	is_int(append(log, 0, i), -EIO, "eio: and so do appends, until it is reopened");
	shmq__spill_close(log);
	o.syncer = NULL;
	rc = shmq__spill_open(dir, "eio", 0, &o, &rep, &log);
	ok(rc == 0 && rep.end_offset >= st0.synced_offset && rep.cuts == 0,
	   "eio: reopened, re-validated: everything synced is there (end %" PRIu64 ")",
	   rep.end_offset);
	if (rc == 0)
		shmq__spill_close(log);
}

int main(void)
{
	tu_init(120);
	plan(10);
	tu_make_dir("rollsync", dir, sizeof(dir));
	if (shmq__spill_syncer_start(&syncer))
		bail("syncer: %s", shmq_errdetail());
	test_threads();
	test_eio();
	shmq__spill_syncer_stop(syncer);
	tu_cleanup(dir);
	return tap_done();
}
