#!/bin/sh
# mkcorpus.sh - rebuild the fuzz seed corpora (tests/fuzz/corpus/) from
# tests/fuzz/mkcorpus.c.  Run from the top of the tree after a change of the
# frame or segment format; commit the result.  Needs the library built.
set -eu
B=build/default
make "$B/libshmq.a"
${CC:-cc} -std=gnu11 -O1 -g -Wall -Wextra -Iinclude -Ilibshmq \
	-o "$B/mkcorpus" tests/fuzz/mkcorpus.c "$B/libshmq.a" \
	$(pkg-config --libs ck numa 2>/dev/null || echo -lck -lnuma) -pthread -lm
rm -rf tests/fuzz/corpus/frame tests/fuzz/corpus/segment
"$B/mkcorpus" tests/fuzz/corpus
echo "frame: $(ls tests/fuzz/corpus/frame | wc -l) seeds," \
     "segment: $(ls tests/fuzz/corpus/segment | wc -l) seeds"
