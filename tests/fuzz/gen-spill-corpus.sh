#!/bin/sh
# gen-spill-corpus.sh - rebuild the spill fuzz target's seed corpus
# (tests/fuzz/corpus/spill/) from tests/fuzz/gen-spill-corpus.c.  Run from
# the top of the tree after a change of the spill or checkpoint formats;
# commit the result.  Needs the library built.
set -eu
B=build/default
make "$B/libshmq.a"
${CC:-cc} -std=gnu11 -O1 -g -Wall -Wextra -Iinclude -Ilibshmq \
	-o "$B/gen-spill-corpus" tests/fuzz/gen-spill-corpus.c "$B/libshmq.a" \
	$(pkg-config --libs ck numa 2>/dev/null || echo -lck -lnuma) -pthread -lm
rm -rf tests/fuzz/corpus/spill
"$B/gen-spill-corpus" tests/fuzz/corpus/spill
echo "spill: $(ls tests/fuzz/corpus/spill | wc -l) seeds"
