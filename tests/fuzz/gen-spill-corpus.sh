#!/bin/sh
# gen-spill-corpus.sh - rebuild the spill fuzz target's seed corpus
# (tests/fuzz/corpus/spill/) from tests/fuzz/gen-spill-corpus.c.  Run from
# the top of the tree after a change of the spill or checkpoint formats;
# commit the result.  Needs the library built.  Inputs that once made the
# target fail are kept beside the generated seeds as regress-<what>.
set -eu
B=build/default
make "$B/libshmq.a"
${CC:-cc} -std=gnu11 -O1 -g -Wall -Wextra -Iinclude -Ilibshmq \
	-o "$B/gen-spill-corpus" tests/fuzz/gen-spill-corpus.c "$B/libshmq.a" \
	$(pkg-config --libs ck numa 2>/dev/null || echo -lck -lnuma) -pthread -lm
# Seeds named regress-* are inputs that once failed; they are kept by hand.
find tests/fuzz/corpus/spill -type f ! -name 'regress-*' -delete 2>/dev/null || true
"$B/gen-spill-corpus" tests/fuzz/corpus/spill
echo "spill: $(ls tests/fuzz/corpus/spill | wc -l) seeds"
