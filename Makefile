# shmq - one non-recursive GNU Makefile.
#
#   make            libshmq.a, libshmq.so, shmqd, shmqctl
#   make demo       start shmqd, run producers and two groups, print rates
#   make check      build and run every TAP test through prove
#   make check SAN=address,undefined     the same under sanitizers
#   make check-tsan the ring protocol, the spill syncer and the checkpointer
#                   as threads under ThreadSanitizer, and shmqd built with it
#   make bench      benchmarks (never part of check)
#   make fuzz       build the libFuzzer targets (clang)
#   make install / uninstall   honour PREFIX and DESTDIR
#   V=1 shows commands; WERROR=1 (or CI=true) adds -Werror.
#
# Objects go to build/<flavour>/ so that sanitizer builds never mix with the
# plain one.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
PKGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

CC ?= cc
SAN ?=
# Warnings are errors in CI (which sets CI=true) or with WERROR=1.
WERROR ?= $(if $(filter true 1,$(CI)),1)
PKG_CONFIG ?= pkg-config

comma := ,
FLAVOUR := $(if $(SAN),san-$(subst $(comma),-,$(SAN)),default)
B := build/$(FLAVOUR)

ifeq ($(V),1)
Q :=
else
Q := @
endif

SOVERSION := 0
VERSION := 0.1.0

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wno-unused-parameter $(if $(WERROR),-Werror)
OPT := $(if $(SAN),-O1 -fno-omit-frame-pointer -fsanitize=$(SAN) -fno-sanitize-recover=all,-O2)
CFLAGS ?= -g
# Recursively expanded: pkg-config runs only after scripts/deps.sh has made
# sure it and the packages are installed.
DEP_CFLAGS = $(shell $(PKG_CONFIG) --cflags ck numa 2>/dev/null)
DEP_LIBS = $(shell $(PKG_CONFIG) --libs ck numa 2>/dev/null || echo -lck -lnuma)
ALL_CFLAGS = -std=gnu11 $(OPT) $(WARN) -fPIC -fvisibility=hidden -pthread \
	-Iinclude -Ilibshmq $(DEP_CFLAGS) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(if $(SAN),-fsanitize=$(SAN)) -pthread $(LDFLAGS)
LIBS = $(DEP_LIBS) -lm

LIB_SRC := $(wildcard libshmq/*.c)
SHMQD_SRC := $(wildcard shmqd/*.c)
CTL_SRC := $(wildcard shmqctl/*.c)
DEMO_SRC := $(wildcard demo/*.c)
TEST_SRC := $(wildcard tests/*-t.c)
TEST_SUPPORT := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
FUZZ_SRC := $(wildcard tests/fuzz/*-fuzz.c)
BENCH_PROGS_SRC := $(wildcard bench/bench-*.c)
BENCH_SUPPORT := $(filter-out $(BENCH_PROGS_SRC),$(wildcard bench/*.c))

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

LIB_OBJ := $(call obj,$(LIB_SRC))
STATIC_LIB := $(B)/libshmq.a
SHARED_LIB := $(B)/libshmq.so.$(VERSION)
SHMQD := $(B)/shmqd
SHMQCTL := $(B)/shmqctl
DEMO := $(B)/shmq-demo
TESTS := $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRC))
FUZZ_REPLAY := $(patsubst tests/fuzz/%-fuzz.c,$(B)/tests/fuzz-%-t,$(FUZZ_SRC))
BENCHES := $(patsubst bench/%.c,$(B)/bench/%,$(BENCH_PROGS_SRC))
DEPS_STAMP := build/.deps-ok

# Keep test and bench objects: they are not throwaway intermediates.
.SECONDARY:

.PHONY: all check check-tsan demo bench fuzz install uninstall clean deps

all: $(STATIC_LIB) $(SHARED_LIB) $(SHMQD) $(SHMQCTL)

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/deps.sh
	$(Q)sh scripts/deps.sh build
	$(Q)mkdir -p build && touch $@

$(B)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# Objects live under $(B)/obj/ so that no object directory (shmqd/) takes
# the name of a program.  `make build/default/libshmq/ring.o` still works as
# a quick compile check.
$(B)/%.o: $(B)/obj/%.o
	@:

$(STATIC_LIB): $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,libshmq.so.$(SOVERSION) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)
	$(Q)ln -sf libshmq.so.$(VERSION) $(B)/libshmq.so.$(SOVERSION)
	$(Q)ln -sf libshmq.so.$(SOVERSION) $(B)/libshmq.so

$(SHMQD): $(call obj,$(SHMQD_SRC)) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(SHMQCTL): $(call obj,$(CTL_SRC)) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(DEMO): $(call obj,$(DEMO_SRC)) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/tests/%-t: $(B)/obj/tests/%-t.o $(call obj,$(TEST_SUPPORT)) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# A fuzz target's corpus is replayed by a TAP driver built with the normal
# compiler, so `make check` runs it without libFuzzer.
$(B)/tests/fuzz-%-t: $(B)/obj/tests/fuzz/%-fuzz.o $(B)/obj/tests/fuzz/replay.o $(call obj,$(TEST_SUPPORT)) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/bench/%: $(B)/obj/bench/%.o $(call obj,$(BENCH_SUPPORT)) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# Tests find the programs they start through SHMQ_BUILD.
check: all $(TESTS) $(FUZZ_REPLAY)
	SHMQ_BUILD=$(CURDIR)/$(B) SHMQ_FUZZ_CORPUS=$(CURDIR)/tests/fuzz/corpus \
		prove -f $(TESTS) $(FUZZ_REPLAY)

# ThreadSanitizer cannot see across processes; the ring protocol tests run
# producers and consumers as threads of one process, rollsync-t runs spill
# writers, the syncer thread of shmqd and retention as threads, and
# checkpoint-t the checkpointer thread with its owner.  diskfault-t runs
# shmqd itself, built with TSan too: its loop, syncer and checkpointer
# threads on slow and failing disks (a report stops shmqd, and the test).
TSAN_TESTS := ring-t rollsync-t checkpoint-t diskfault-t
check-tsan:
	$(MAKE) SAN=thread build/san-thread/shmqd $(addprefix build/san-thread/tests/,$(TSAN_TESTS))
	SHMQ_BUILD=$(CURDIR)/build/san-thread \
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp history_size=7 halt_on_error=1" \
		prove -f $(addprefix build/san-thread/tests/,$(TSAN_TESTS))

demo: all $(DEMO)
	$(DEMO) --shmqd $(SHMQD) --dir $(CURDIR)/var/demo

bench: all $(BENCHES)
	@sh scripts/deps.sh bench || true
	SHMQ_BUILD=$(CURDIR)/$(B) sh bench/run.sh

fuzz:
	$(MAKE) CC=clang SAN=fuzzer,address,undefined FUZZ=1 $(patsubst tests/fuzz/%-fuzz.c,build/san-fuzzer-address-undefined/fuzz-%,$(FUZZ_SRC))

build/san-fuzzer-address-undefined/fuzz-%: build/san-fuzzer-address-undefined/obj/tests/fuzz/%-fuzz.o $(STATIC_LIB)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

shmq.pc: shmq.pc.in
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCDIR@|$(INCDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

install: all shmq.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGDIR)
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/libshmq.a
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/libshmq.so.$(VERSION)
	ln -sf libshmq.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libshmq.so.$(SOVERSION)
	ln -sf libshmq.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libshmq.so
	install -m 644 include/shmq.h $(DESTDIR)$(INCDIR)/shmq.h
	install -m 644 shmq.pc $(DESTDIR)$(PKGDIR)/shmq.pc
	install -m 755 $(SHMQD) $(DESTDIR)$(BINDIR)/shmqd
	install -m 755 $(SHMQCTL) $(DESTDIR)$(BINDIR)/shmqctl

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libshmq.a $(DESTDIR)$(LIBDIR)/libshmq.so \
	      $(DESTDIR)$(LIBDIR)/libshmq.so.$(SOVERSION) \
	      $(DESTDIR)$(LIBDIR)/libshmq.so.$(VERSION) \
	      $(DESTDIR)$(INCDIR)/shmq.h $(DESTDIR)$(PKGDIR)/shmq.pc \
	      $(DESTDIR)$(BINDIR)/shmqd $(DESTDIR)$(BINDIR)/shmqctl

clean:
	rm -rf build shmq.pc

-include $(shell find build -name '*.d' 2>/dev/null)
