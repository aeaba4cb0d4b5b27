#!/bin/sh
# run.sh - run the shmq benchmarks in order and keep their results.
#
#   SHMQ_BUILD=build/default sh bench/run.sh      (what `make bench` does)
#
# Design note
#   One shmqd serves the whole run, on a private namespace made with
#   mktemp -d, so nothing here can meet another user's topics.  The programs
#   create and delete their own topics through the public API.  Whatever
#   happens (a failed measurement, a watchdog, ^C), the trap deletes the
#   topics left in the namespace (their shared memory outlives shmqd
#   otherwise), stops shmqd and removes the directory.
#
#   The table goes to stdout.  The JSON lines (one object per transport and
#   metric, plus one for the machine) go to bench/results/latest.jsonl,
#   which is replaced only when the whole run succeeded; a failed run
#   leaves the previous results in place.
#
#   Knobs (environment): BENCH_RUNS (3), BENCH_CPUS ("0,1"),
#   BENCH_LAT_SAMPLES, BENCH_LAT_WARMUP, BENCH_TPUT_SECONDS, BENCH_TIMEOUT.
#   The defaults finish in well under a minute.
set -eu

: "${SHMQ_BUILD:?set SHMQ_BUILD to the build directory (make bench does)}"
bin=$SHMQ_BUILD/bench
here=$(cd "$(dirname "$0")" && pwd)
results=$here/results
out=$results/latest.jsonl

for p in "$SHMQ_BUILD/shmqd" "$bin/bench-latency" "$bin/bench-throughput"; do
	if [ ! -x "$p" ]; then
		echo "bench: $p is missing; run \`make bench\`" >&2
		exit 1
	fi
done

mkdir -p "$results"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-bench.XXXXXX")
ns=$tmp/ns
mkdir "$ns"
shmqd_pid=

# shmqd in a session of its own when setsid(1) is there: a ^C at the
# terminal then stops the benchmark, not the daemon that must delete its
# topics afterwards.
start_shmqd() {
	if command -v setsid >/dev/null 2>&1; then
		setsid "$SHMQ_BUILD/shmqd" --dir "$ns" >>"$tmp/shmqd.log" 2>&1 &
	else
		"$SHMQ_BUILD/shmqd" --dir "$ns" >>"$tmp/shmqd.log" 2>&1 &
	fi
	shmqd_pid=$!
}

cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	set +e
	if [ -n "$shmqd_pid" ]; then
		# Topics a killed program could not delete.  Deleting needs
		# shmqd; if it died too, a new one adopts the segments first.
		if [ "$rc" -ne 0 ]; then
			if ! kill -0 "$shmqd_pid" 2>/dev/null; then
				wait "$shmqd_pid" 2>/dev/null
				start_shmqd
			fi
			"$bin/bench-latency" --dir "$ns" --cleanup >/dev/null 2>&1 ||
				echo "bench: could not delete the topics left in $ns" >&2
		fi
		kill "$shmqd_pid" 2>/dev/null
		i=0
		while kill -0 "$shmqd_pid" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -9 "$shmqd_pid" 2>/dev/null
		wait "$shmqd_pid" 2>/dev/null
	fi
	if [ "$rc" -ne 0 ]; then
		echo "bench: failed (status $rc); shmqd's log:" >&2
		tail -n 20 "$tmp/shmqd.log" >&2 2>/dev/null
	fi
	rm -f "$out.tmp"
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
"$bin/bench-latency" --machine --json "$out.tmp"

start_shmqd
# The programs wait for shmqd to listen; this only catches a shmqd that
# cannot start at all, with its own words.
sleep 0.2
if ! kill -0 "$shmqd_pid" 2>/dev/null; then
	echo "bench: shmqd --dir $ns exited at once" >&2
	exit 1
fi

"$bin/bench-latency" --dir "$ns" --json "$out.tmp"
"$bin/bench-throughput" --dir "$ns" --json "$out.tmp"

mv "$out.tmp" "$out"
echo "results: $out ($(($(date +%s) - start)) s)"
