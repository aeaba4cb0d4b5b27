#!/bin/sh
# deps.sh [build|bench] - make sure the Debian packages shmq needs are here.
#
# Run by make before the first compile.  As root it installs what is
# missing with apt-get; otherwise it prints the exact apt-get line and fails,
# so that a fresh Debian 12 machine can type `make demo` or `make check` first.
set -u
what=${1:-build}
need=""

have_header() { [ -f "/usr/include/$1" ] || [ -f "/usr/local/include/$1" ]; }

command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
have_header ck_ec.h || need="$need libck-dev"
have_header numa.h || need="$need libnuma-dev"
command -v prove >/dev/null 2>&1 || need="$need perl"
if [ "$what" = bench ]; then
	command -v gnuplot >/dev/null 2>&1 || need="$need gnuplot-nox"
fi

[ -z "$need" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "shmq: installing missing Debian packages:$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2 || echo "shmq: apt-get update failed; trying the install anyway" >&2
	# shellcheck disable=SC2086
	if ! apt-get install -y -qq --no-install-recommends $need >&2; then
		echo "shmq: apt-get install$need failed" >&2
		exit 1
	fi
	exit 0
fi

echo "shmq: missing Debian packages:$need" >&2
echo "shmq: install them with:  sudo apt-get install$need" >&2
exit 1
