#!/bin/sh
# run.sh - run the shmq benchmark suite and keep its results.
#
#   SHMQ_BUILD=build/default sh bench/run.sh      (what `make bench` does)
#   BENCH_FULL=1 make bench                        longer, more sizes
#
# Design note
#   Order: the machine; the optional baselines (ZeroMQ and iceoryx are
#   plugins built here, so that the Makefile never needs their libraries);
#   one shmqd on a private namespace for the whole run; the three programs
#   (latency, throughput, shapes), each of which measures shmq and its
#   baselines in the same rounds, and bench-groups (recovery after a
#   member's death); then bench-spill with a second shmqd on a
#   namespace of its own on the disk (BENCH_SPILL_DIR, default /var/tmp:
#   $TMPDIR may be tmpfs, and spilling is about the disk); then the plots
#   and the verdict on every issue-5 target.
#
#   Optional pieces never fail the run.  As root, a missing libzmq3-dev,
#   libiceoryx-binding-c-dev + iceoryx, or gnuplot-nox is installed with
#   apt-get; otherwise (or when that fails) the piece is skipped and the
#   output says "skipped: <reason>".  iceoryx needs its daemon: we start
#   iox-roudi when none runs, and stop the one we started (by its pid).
#
#   Cleanup, whatever happens (a failed measurement, a watchdog, ^C): the
#   trap deletes the topics left in the namespaces (their shared memory
#   outlives shmqd otherwise), stops both shmqd and our iox-roudi, and
#   removes the private directories (the spill one with its spill files).  Every measured process runs under alarm() and
#   a coordinator deadline, so nothing here can hang.
#
#   Results: the table on stdout; JSON lines (one object per transport and
#   metric) in bench/results/latest.jsonl, replaced only when the whole run
#   succeeded; PNG plots in bench/results/ (gitignored) with copies in
#   docs/bench/ for the README; the target verdicts in
#   bench/results/targets.txt.
#
#   Knobs (environment): BENCH_FULL=1, BENCH_RUNS, BENCH_CPUS ("0,1"),
#   BENCH_TIMEOUT, BENCH_SPILL_DIR (where the spill namespace goes,
#   /var/tmp), and the per-program ones (--help of each program).
set -eu

: "${SHMQ_BUILD:?set SHMQ_BUILD to the build directory (make bench does)}"
bin=$SHMQ_BUILD/bench
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
results=$here/results
docs=$top/docs/bench
out=$results/latest.jsonl

# BENCH_QUICK=1 is the default; BENCH_FULL=1 asks for the long run.
if [ "${BENCH_FULL:-0}" != 0 ] && [ -n "${BENCH_FULL:-}" ]; then
	export BENCH_FULL=1
	mode=full
else
	export BENCH_FULL=0
	mode=quick
fi

for p in "$SHMQ_BUILD/shmqd" "$bin/bench-latency" "$bin/bench-throughput" \
	"$bin/bench-shapes" "$bin/bench-groups" "$bin/bench-spill"; do
	if [ ! -x "$p" ]; then
		echo "bench: $p is missing; run \`make bench\`" >&2
		exit 1
	fi
done

mkdir -p "$results"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-bench.XXXXXX")
ns=$tmp/ns
plots=$tmp/plots
mkdir "$ns" "$plots"
shmqd_pid=
roudi_pid=
# The spill namespace: made, served and removed around bench-spill only.
spill_ns=
spill_pid=

is_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

# apt-get install, quietly; its output goes to a log we show on failure.
apt_install() {
	echo "bench: installing $* (Debian packages, as root)"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq --no-install-recommends "$@" \
		>"$tmp/apt.log" 2>&1; then
		apt-get update -qq >>"$tmp/apt.log" 2>&1 || true
		apt-get install -y -qq --no-install-recommends "$@" \
			>>"$tmp/apt.log" 2>&1 || {
			tail -n 5 "$tmp/apt.log" >&2
			return 1
		}
	fi
}

# start_shmqd DIR LOG: shmqd in a session of its own when setsid(1) is
# there: a ^C at the terminal then stops the benchmark, not the daemon that
# must delete its topics afterwards.  Sets started_pid.
start_shmqd() {
	if command -v setsid >/dev/null 2>&1; then
		setsid "$SHMQ_BUILD/shmqd" --dir "$1" >>"$2" 2>&1 &
	else
		"$SHMQ_BUILD/shmqd" --dir "$1" >>"$2" 2>&1 &
	fi
	started_pid=$!
}

# cleanup_ns DIR PIDVAR LOG: delete the topics a killed program left in
# DIR (a dead shmqd is replaced first: deleting needs one), then stop it.
cleanup_ns() {
	eval "cpid=\$$2"
	if ! kill -0 "$cpid" 2>/dev/null; then
		wait "$cpid" 2>/dev/null
		start_shmqd "$1" "$3"
		cpid=$started_pid
		eval "$2=\$cpid"
	fi
	"$bin/bench-latency" --dir "$1" --cleanup >/dev/null 2>&1 ||
		echo "bench: could not delete the topics left in $1" >&2
}

stop_pid() {
	kill "$1" 2>/dev/null || return 0
	i=0
	while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	# Gone already is the usual case; under set -e that must not end us.
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	set +e
	if [ -n "$shmqd_pid" ]; then
		# Topics a killed program could not delete.  Deleting needs
		# shmqd; if it died too, a new one adopts the segments first.
		[ "$rc" -ne 0 ] && cleanup_ns "$ns" shmqd_pid "$tmp/shmqd.log"
		stop_pid "$shmqd_pid"
	fi
	if [ -n "$spill_pid" ]; then
		[ "$rc" -ne 0 ] && cleanup_ns "$spill_ns" spill_pid "$tmp/shmqd-spill.log"
		stop_pid "$spill_pid"
	fi
	[ -n "$spill_ns" ] && rm -rf "$spill_ns"
	[ -n "$roudi_pid" ] && stop_pid "$roudi_pid"
	if [ "$rc" -ne 0 ]; then
		echo "bench: failed (status $rc); shmqd's log:" >&2
		tail -n 20 "$tmp/shmqd.log" >&2 2>/dev/null
		if [ -s "$tmp/shmqd-spill.log" ]; then
			echo "bench: the spill namespace's shmqd's log:" >&2
			tail -n 20 "$tmp/shmqd-spill.log" >&2
		fi
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
echo "shmq benchmark suite ($mode mode; BENCH_FULL=1 for the long run)"
echo
"$bin/bench-latency" --machine --json "$out.tmp"

# ------------------------------------------------------------------------
# Optional baselines, built as plugins the programs load with dlopen.
cc=${CC:-cc}
pflags="-std=gnu11 -O2 -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
-Wmissing-prototypes -fPIC -shared"
case "${CI:-}${WERROR:-}" in
true* | *1) pflags="$pflags -Werror" ;;
esac

# plugin NAME REASON-IF-MISSING HEADER CFLAGS LIBS
plugin() {
	rm -f "$bin/xport-$1.so" "$bin/xport-$1.skip"
	if [ ! -f "$3" ]; then
		echo "$2" >"$bin/xport-$1.skip"
		return
	fi
	# shellcheck disable=SC2086
	if ! $cc $pflags $4 -o "$bin/xport-$1.so" "$here/ext/xport-$1.c" $5 \
		2>"$tmp/$1.build.log"; then
		cat "$tmp/$1.build.log" >&2
		echo "plugin build failed (see the compiler's message above)" \
			>"$bin/xport-$1.skip"
	fi
}

zmq_h=/usr/include/zmq.h
if [ ! -f "$zmq_h" ] && is_root; then
	apt_install libzmq3-dev || true
fi
plugin zeromq "libzmq3-dev not installed" "$zmq_h" "" "-lzmq"

iox_inc=/usr/include/iceoryx/v2.0.3
iox_h=$iox_inc/iceoryx_binding_c/runtime.h
if { [ ! -f "$iox_h" ] || ! command -v iox-roudi >/dev/null 2>&1; } && is_root; then
	apt_install libiceoryx-binding-c-dev iceoryx || true
fi
if [ -f "$iox_h" ] && ! command -v iox-roudi >/dev/null 2>&1; then
	echo "iox-roudi not installed (Debian package iceoryx)" >"$bin/xport-iceoryx.skip"
	rm -f "$bin/xport-iceoryx.so"
else
	# Their headers are not -Wstrict-prototypes clean: -isystem.
	plugin iceoryx "libiceoryx-binding-c-dev not installed" "$iox_h" \
		"-isystem $iox_inc" "-liceoryx_binding_c"
fi
if [ -f "$bin/xport-iceoryx.so" ]; then
	# One RouDi per machine: use a running one, else start ours.
	# (A RouDi on its way out has no socket any more: start ours then.)
	if pgrep -x iox-roudi >/dev/null 2>&1 && [ -S /tmp/roudi ]; then
		export BENCH_IOX_ROUDI=1
	else
		setsid iox-roudi >"$tmp/roudi.log" 2>&1 &
		roudi_pid=$!
		i=0
		while [ "$i" -lt 50 ] && ! grep -q "RouDi is ready" "$tmp/roudi.log"; do
			sleep 0.1
			i=$((i + 1))
		done
		if grep -q "RouDi is ready" "$tmp/roudi.log"; then
			export BENCH_IOX_ROUDI=1
		else
			echo "iox-roudi did not become ready: $(tail -n 1 "$tmp/roudi.log")" \
				>"$bin/xport-iceoryx.skip"
			rm -f "$bin/xport-iceoryx.so"
			stop_pid "$roudi_pid"
			roudi_pid=
		fi
	fi
fi
export BENCH_PLUGINS="$bin"

start_shmqd "$ns" "$tmp/shmqd.log"
shmqd_pid=$started_pid
# The programs wait for shmqd to listen; this only catches a shmqd that
# cannot start at all, with its own words.
sleep 0.2
if ! kill -0 "$shmqd_pid" 2>/dev/null; then
	echo "bench: shmqd --dir $ns exited at once" >&2
	exit 1
fi

targets=$tmp/targets.txt
: >"$targets"
for prog in latency throughput shapes groups; do
	"$bin/bench-$prog" --dir "$ns" --json "$out.tmp" --plots "$plots" \
		--targets "$targets"
done

# ------------------------------------------------------------------------
# Spill and replay: a namespace on the disk, with a shmqd of its own, so
# that its spill files are where the numbers say they are.
spill_ns=$(mktemp -d "${BENCH_SPILL_DIR:-/var/tmp}/shmq-bench-spill.XXXXXX")
start_shmqd "$spill_ns" "$tmp/shmqd-spill.log"
spill_pid=$started_pid
sleep 0.2
if ! kill -0 "$spill_pid" 2>/dev/null; then
	echo "bench: shmqd --dir $spill_ns exited at once" >&2
	exit 1
fi
"$bin/bench-spill" --dir "$spill_ns" --json "$out.tmp" --targets "$targets"
stop_pid "$spill_pid"
spill_pid=
# What shmqd said while it spilled, beyond topics coming and going: a
# spill error or a recovery would be news.
grep -v -e ': serving ' -e ': topic [^ ]*: created ' -e ': topic [^ ]*: deleted$' \
	-e ': received SIGTERM' -e ': stopped$' "$tmp/shmqd-spill.log" |
	sed 's/^/  shmqd (spill namespace) said: /' || true
rm -rf "$spill_ns"
spill_ns=

# ------------------------------------------------------------------------
# Plots.
if ! command -v gnuplot >/dev/null 2>&1 && is_root; then
	apt_install gnuplot-nox || true
fi
if command -v gnuplot >/dev/null 2>&1; then
	made=0
	for gp in "$plots"/*.gp; do
		[ -f "$gp" ] || continue
		if (cd "$plots" && gnuplot "$(basename "$gp")") 2>"$tmp/gnuplot.log"; then
			made=$((made + 1))
		else
			echo "bench: gnuplot $(basename "$gp") failed:" >&2
			tail -n 3 "$tmp/gnuplot.log" >&2
		fi
	done
	mkdir -p "$docs"
	for png in "$plots"/*.png; do
		[ -f "$png" ] || continue
		cp "$png" "$results/"
		cp "$png" "$docs/"
	done
	echo "plots: $made PNG in $results/ (copies in docs/bench/)"
else
	echo "plots: skipped: gnuplot not installed (apt-get install gnuplot-nox)"
fi

echo
echo "Issue-5 targets on this machine (ratios of medians measured in this run)"
sed 's/^/  /' "$targets"
cp "$targets" "$results/targets.txt"

mv "$out.tmp" "$out"
echo
echo "results: $out ($(($(date +%s) - start)) s)"
