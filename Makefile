# focald — build, test, benchmark and run.
#
#   make            build everything into build/
#   make test       install missing packages, build, run every test, print a summary
#   make run        install missing packages, build and start the daemon
#   make install    focald, libfocal.a, focal.h, focal.pc and the man pages into $(DESTDIR)$(PREFIX) (/usr/local)
#   make uninstall  removes them again
#   make bench      run the benchmarks (figures go in BENCHMARKS.md)
#   make soak       ten minutes of mixed load, resources sampled (not in CI)
#   make SANITIZE=address,undefined test    the same tests under ASan + UBSan (build/san-*)
#   make SANITIZE=thread test-concurrency   the concurrency tests under TSan
#   make fuzz-run   every libFuzzer target for FUZZ_SECONDS (default 60) each (clang; build/fuzz)
#   make fuzz-regress   the fuzz regressions and seed corpora, once each (seconds)
#   make torture    every fault point of the fault-injection harness (tests/fault; about half an hour)
#   CI=1            turns warnings into errors (.ci/run sets it)

SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
comma := ,

CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif

SANITIZE ?=
ifeq ($(SANITIZE),)
BUILD ?= build
SAN_FLAGS :=
else
BUILD ?= build/san-$(subst $(comma),-,$(SANITIZE))
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
        -Wformat=2 -Wundef -Wvla -Wno-psabi
ifeq ($(CI),1)
WARN += -Werror
endif

CPPFLAGS := -D_GNU_SOURCE -Ilib/include
# Each compile writes the headers it read into a .d file beside its output (-MP: a deleted header is not an
# error); the .d files are included at the end, so touching a header rebuilds only what includes it.
DEPFLAGS := -MMD -MP
CFLAGS := -std=c11 -O2 -g $(WARN) $(SAN_FLAGS)
LDFLAGS := $(SAN_FLAGS)
# The kernels: vectorised, no errno from libm, no trap semantics; fused multiply-add where the ISA has it.
KFLAGS := -O3 -ffp-contract=fast -fno-math-errno -fno-trapping-math

# ---------------------------------------------------------------------------- packages
# Debian packages the build and the tests need. Installed when missing (as root),
# otherwise the exact command is printed and the build stops.
BUILD_PKGS := gcc make pkg-config libc6-dev libmicrohttpd-dev libjansson-dev libsqlite3-dev libuv1-dev libgnutls28-dev \
              libxxhash-dev libcmocka-dev sqlite3 curl libpq-dev
# openssl makes the TLS tests' certificates, python3-venv the client's install test's environment,
# python3-mypy checks the client's types
TEST_PKGS := python3 python3-numpy python3-torch python3-torchvision python3-venv python3-mypy openssl man-db
# the cluster's tests run a throw-away PostgreSQL 15 server (tests/cluster/pgtemp.py), and cut a node's
# connections to it with nftables (found with iproute2's ss)
TEST_PKGS += postgresql-15 nftables iproute2
# the console's tests in a real browser (tests/browser): headless chromium driven through Selenium
TEST_PKGS += chromium chromium-driver python3-selenium
# make bench also trains small models on scikit-learn's bundled digits (tests/bench/bench_miner.py, bench_label_noise.py)
BENCH_PKGS := python3-sklearn

define need_pkgs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing missing packages:" $$missing; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing packages:" $$missing; \
	    echo "install them with:  sudo apt-get install -y" $$missing; exit 1; \
	  fi; \
	fi
endef

$(BUILD)/.build-deps:
	$(call need_pkgs,$(BUILD_PKGS))
	@mkdir -p $(@D) && touch $@

# (the Makefile too: a list of packages that grew is checked again in a build directory that has the stamp)
$(BUILD)/.test-deps: $(BUILD)/.build-deps Makefile
	$(call need_pkgs,$(TEST_PKGS))
	@command -v node >/dev/null && command -v npm >/dev/null || $(MAKE) --no-print-directory node-pkgs
	@mkdir -p $(@D) && touch $@

# node and npm run the OpenAPI suite's linter and response checker. Any install that provides both
# commands will do (NodeSource's nodejs bundles npm, and conflicts with Debian's npm package); without
# them, Debian's nodejs and npm.
node-pkgs:
	$(call need_pkgs,nodejs npm)
.PHONY: node-pkgs

$(BUILD)/.bench-deps: $(BUILD)/.test-deps
	$(call need_pkgs,$(BENCH_PKGS))
	@mkdir -p $(@D) && touch $@

deps: $(BUILD)/.build-deps
.PHONY: deps

# ---------------------------------------------------------------------------- lib/
LIB := $(BUILD)/lib/libfocal.a
# Each kernel file is compiled once per instruction-set variant, each at its native vector width;
# fl_eval picks the best the CPU supports at run time.
KERNELS := fl_sigmoid fl_softmax
ISA_generic := -march=x86-64 -DFL_W=4
ISA_v3 := -march=x86-64-v3 -DFL_W=8
ISA_v4 := -march=x86-64-v4 -DFL_W=16
ifeq ($(shell uname -m),x86_64)
ISAS := generic v3 v4
else
ISAS := generic
ISA_generic := -DFL_W=4
endif
LIB_OBJS := $(BUILD)/lib/fl_api.o $(foreach k,$(KERNELS),$(foreach i,$(ISAS),$(BUILD)/lib/$(k)_$(i).o))

define kernel_rule
$(BUILD)/lib/$(1)_$(2).o: lib/src/$(1).c $(BUILD)/lib/$(1)_$(2).d | $(BUILD)/.build-deps
	@mkdir -p $$(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) $(KFLAGS) $(ISA_$(2)) -DFL_ISA=$(2) -c $$< -o $$@
endef
$(foreach k,$(KERNELS),$(foreach i,$(ISAS),$(eval $(call kernel_rule,$(k),$(i)))))

$(BUILD)/lib/fl_api.o: lib/src/fl_api.c $(BUILD)/lib/fl_api.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) -c $< -o $@

# Archives are built beside and renamed into place, so a link never sees half of one.
$(LIB): $(LIB_OBJS)
	@rm -f $@.tmp
	ar rcs $@.tmp $^
	@mv $@.tmp $@

lib: $(LIB)
.PHONY: lib

# ---------------------------------------------------------------------------- server/
# libpq: a cluster node's shared log in PostgreSQL (server/pglog.c)
SERVER_PKGS := libmicrohttpd jansson sqlite3 libuv gnutls libpq
SERVER_CFLAGS = $(shell pkg-config --cflags $(SERVER_PKGS) 2>/dev/null)
SERVER_LIBS = $(shell pkg-config --libs $(SERVER_PKGS) 2>/dev/null) -lpthread -lm
SERVER_SRCS := $(filter-out server/main.c,$(wildcard server/*.c))
SERVER_OBJS := $(patsubst server/%.c,$(BUILD)/server/%.o,$(SERVER_SRCS)) $(BUILD)/server/gen_schema.o $(BUILD)/server/gen_openapi.o \
               $(BUILD)/server/gen_ui.o $(BUILD)/server/gen_pg_schema.o
SERVER_LIB := $(BUILD)/server/libfocald.a
SCHEMA_FILES := $(sort $(wildcard schema/*.sql))
PG_SCHEMA_FILES := $(sort $(wildcard schema/postgresql/*.sql))
FOCALD := $(BUILD)/focald

$(BUILD)/server/%.o: server/%.c $(BUILD)/server/%.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) $(SERVER_CFLAGS) $(CFLAGS) -c $< -o $@

# The migrations and the OpenAPI document are compiled into the binary, as bytes.
hexbytes = od -An -v -tx1 $(1) | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'

$(BUILD)/server/gen_schema.c: $(SCHEMA_FILES) schema Makefile
	@mkdir -p $(@D)
	@{ echo '/* generated by the Makefile from the files in schema/: the migrations in order */'; \
	  i=0; for f in $(SCHEMA_FILES); do echo "static const char m$$i[] = {"; $(call hexbytes,$$f); echo '0};'; i=$$((i+1)); done; \
	  echo 'extern const char *const focald_schema[];'; \
	  echo 'const char *const focald_schema[] = {'; \
	  i=0; for f in $(SCHEMA_FILES); do echo "  m$$i,"; i=$$((i+1)); done; \
	  echo '};'; \
	  echo 'extern const int focald_schema_count;'; \
	  echo 'const int focald_schema_count = $(words $(SCHEMA_FILES));'; } > $@

# The cluster's PostgreSQL migrations (server/pglog.c applies them), the same way.
$(BUILD)/server/gen_pg_schema.c: $(PG_SCHEMA_FILES) schema/postgresql Makefile
	@mkdir -p $(@D)
	@{ echo '/* generated by the Makefile from the files in schema/postgresql/: the migrations in order */'; \
	  i=0; for f in $(PG_SCHEMA_FILES); do echo "static const char m$$i[] = {"; $(call hexbytes,$$f); echo '0};'; i=$$((i+1)); done; \
	  echo 'extern const char *const focald_pg_schema[];'; \
	  echo 'const char *const focald_pg_schema[] = {'; \
	  i=0; for f in $(PG_SCHEMA_FILES); do echo "  m$$i,"; i=$$((i+1)); done; \
	  echo '};'; \
	  echo 'extern const int focald_pg_schema_count;'; \
	  echo 'const int focald_pg_schema_count = $(words $(PG_SCHEMA_FILES));'; } > $@

$(BUILD)/server/gen_openapi.c: server/openapi.json Makefile
	@mkdir -p $(@D)
	@{ echo '/* generated by the Makefile from server/openapi.json */'; \
	  echo '#include <stddef.h>'; \
	  echo 'extern const char focald_openapi[];'; \
	  echo 'extern const size_t focald_openapi_len;'; \
	  echo 'const char focald_openapi[] = {'; \
	  $(call hexbytes,$<); \
	  echo '0};'; \
	  echo 'const size_t focald_openapi_len = sizeof focald_openapi - 1;'; } > $@

# The console's files (server/ui/), by name; ui.c serves them under /ui/.
UI_FILES := $(sort $(wildcard server/ui/*))

$(BUILD)/server/gen_ui.c: $(UI_FILES) Makefile
	@mkdir -p $(@D)
	@{ echo '/* generated by the Makefile from the files in server/ui/: the console */'; \
	  echo '#include <stddef.h>'; \
	  i=0; for f in $(UI_FILES); do echo "static const unsigned char f$$i[] = {"; $(call hexbytes,$$f); echo '0};'; i=$$((i+1)); done; \
	  echo 'extern const char *const focald_ui_names[];'; \
	  echo 'const char *const focald_ui_names[] = {'; \
	  for f in $(UI_FILES); do echo "  \"$$(basename $$f)\","; done; \
	  echo '};'; \
	  echo 'extern const unsigned char *const focald_ui_data[];'; \
	  echo 'const unsigned char *const focald_ui_data[] = {'; \
	  i=0; for f in $(UI_FILES); do echo "  f$$i,"; i=$$((i+1)); done; \
	  echo '};'; \
	  echo 'extern const size_t focald_ui_lens[];'; \
	  echo 'const size_t focald_ui_lens[] = {'; \
	  i=0; for f in $(UI_FILES); do echo "  sizeof f$$i - 1,"; i=$$((i+1)); done; \
	  echo '};'; \
	  echo 'extern const int focald_ui_count;'; \
	  echo 'const int focald_ui_count = $(words $(UI_FILES));'; } > $@

$(BUILD)/server/gen_%.o: $(BUILD)/server/gen_%.c
	$(CC) $(CFLAGS) -Wno-missing-prototypes -c $< -o $@

$(SERVER_LIB): $(SERVER_OBJS)
	@rm -f $@.tmp
	ar rcs $@.tmp $^
	@mv $@.tmp $@

$(FOCALD): $(BUILD)/server/main.o $(SERVER_LIB) $(LIB)
	$(CC) $(CFLAGS) $< $(SERVER_LIB) $(LIB) -o $@ $(LDFLAGS) $(SERVER_LIBS)

# Builds and starts the daemon in the foreground on the embedded default (SQLite in ./data).
run: $(FOCALD)
	$(FOCALD)
.PHONY: run

# ---------------------------------------------------------------------------- install
# make install [PREFIX=/usr/local] [DESTDIR=]: focald, the library (static archive, public header and a
# pkg-config file written for PREFIX) and the man pages of focald and focalctl; make uninstall removes
# exactly those files. focalctl itself comes with the Python package (clients/python/README.md).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(PREFIX)/bin
LIBDIR = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
MANDIR = $(PREFIX)/share/man
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
# The library's version has one source: FL_VERSION in its header.
FL_VERSION = $(shell sed -n 's/^\#define FL_VERSION "\(.*\)"$$/\1/p' lib/include/focal.h)
INSTALLED := $(BINDIR)/focald $(LIBDIR)/libfocal.a $(INCLUDEDIR)/focal.h $(PKGCONFIGDIR)/focal.pc \
             $(MANDIR)/man8/focald.8 $(MANDIR)/man1/focalctl.1

install: $(FOCALD) $(LIB)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(FOCALD) $(DESTDIR)$(BINDIR)/focald
	install -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/libfocal.a
	install -m 644 lib/include/focal.h $(DESTDIR)$(INCLUDEDIR)/focal.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	  -e 's|@VERSION@|$(FL_VERSION)|g' lib/focal.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/focal.pc
	@chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/focal.pc
	install -m 644 docs/man/focald.8 $(DESTDIR)$(MANDIR)/man8/focald.8
	install -m 644 docs/man/focalctl.1 $(DESTDIR)$(MANDIR)/man1/focalctl.1
.PHONY: install

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
.PHONY: uninstall

# ---------------------------------------------------------------------------- tests
BENCH_BINS := $(BUILD)/bench/bench_lib $(BUILD)/bench/loadgen $(BUILD)/bench/bench_store
UNIT_TESTS := test_lib_golden test_lib_props test_lib_vmath test_history test_codec test_decode test_state test_store test_numfmt test_buf test_idhash test_metrics test_binary test_review test_config test_jsonw test_export test_router test_idem test_jtext
UNIT_BINS := $(addprefix $(BUILD)/tests/,$(UNIT_TESTS))

# Daemon modules' tests link the daemon's objects (without main).
$(BUILD)/tests/test_%: tests/unit/test_%.c $(SERVER_LIB) $(LIB) $(BUILD)/tests/test_%.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) -Iserver $(SERVER_CFLAGS) $(CFLAGS) $< $(SERVER_LIB) $(LIB) -o $@ $(LDFLAGS) -lcmocka $(SERVER_LIBS)

# jtext's test fails jansson's allocations one by one: its calls to malloc go to the test's wrapper.
$(BUILD)/tests/test_jtext: LDFLAGS += -Wl,--wrap=malloc

# The shared log's test needs a PostgreSQL server (the cluster suite starts one); it is not in UNIT_TESTS.
PG_TEST_BINS := $(BUILD)/tests/test_pglog
$(BUILD)/tests/test_pglog: tests/unit/test_pglog.c $(SERVER_LIB) $(BUILD)/tests/test_pglog.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) -Iserver $(SERVER_CFLAGS) $(CFLAGS) $< $(SERVER_LIB) -o $@ $(LDFLAGS) -lcmocka $(SERVER_LIBS)

$(BUILD)/tests/test_lib_vmath: tests/unit/test_lib_vmath.c $(BUILD)/tests/test_lib_vmath.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) -Ilib/src $(CFLAGS) $(KFLAGS) -march=x86-64 -DFL_W=4 $< -o $@ $(LDFLAGS) -lcmocka -lm

# The golden vectors' path is built in as an absolute path, so that the test runs from any directory.
$(BUILD)/tests/test_lib_%: tests/unit/test_lib_%.c $(LIB) $(BUILD)/tests/test_lib_%.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) -DGOLDEN_PATH='"$(abspath tests/golden/lib_golden.txt)"' $< $(LIB) -o $@ $(LDFLAGS) -lcmocka -lm -lpthread

# The fault-injection harness's library, preloaded into focald by tests/fault/torture.py.
FAULT_SHIM := $(BUILD)/tests/libfaultvfs.so
# Built without the sanitizers, so that it preloads into any build of focald.
$(FAULT_SHIM): tests/fault/faultvfs.c $(BUILD)/tests/libfaultvfs.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) -std=c11 -O2 -g $(WARN) -fPIC -shared $< -o $@ -lsqlite3

all: $(LIB) $(FOCALD) $(UNIT_BINS) $(PG_TEST_BINS) $(BENCH_BINS) $(FAULT_SHIM)
.PHONY: all

# Runs every suite; tests/run-suites prints one line per suite and a summary, and fails if any failed.
test: $(BUILD)/.test-deps all
	@BUILD=$(BUILD) SANITIZE="$(SANITIZE)" tests/run-suites $(UNIT_BINS) -- golden-reference openapi integration upgrade clients install torture browser cluster
.PHONY: test

# Every fault point of the fault-injection harness's workload (tests/fault/README.md): about 3,500 points,
# under half an hour on this project's machines; `make test` runs a bounded subset.
torture: $(BUILD)/.test-deps all
	/usr/bin/python3 tests/fault/torture.py --build $(BUILD) --all --seed $${FOCALD_TORTURE_SEED:-3} --requests 60
.PHONY: torture

# The tests that run threads against each other, built with ThreadSanitizer: the store (writer and
# checkpointer threads), the whole integration suite (HTTP pool, libuv pool, writer) against a
# TSan-built daemon, the upgrade suite (the writer and checkpointer on databases migrated from every schema,
# loaded and replayed), and the cluster suite (the shared log's appenders and follower; nodes with their
# follower and snapshotter threads). Use with SANITIZE=thread (its own build directory, build/san-thread).
test-concurrency: $(BUILD)/.test-deps all
	@if [ "$(SANITIZE)" != thread ]; then echo "use: make SANITIZE=thread test-concurrency"; exit 2; fi
	@BUILD=$(BUILD) SANITIZE="$(SANITIZE)" TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $(TSAN_OPTIONS)" \
	  tests/run-suites $(BUILD)/tests/test_store $(BUILD)/tests/test_state -- integration upgrade cluster
.PHONY: test-concurrency

# Regenerates the golden vectors from the float64 reference (commit the result).
golden: $(BUILD)/.test-deps
	/usr/bin/python3 tests/reference/focal_ref.py tests/golden/lib_golden.txt
.PHONY: golden

# ---------------------------------------------------------------------------- benchmarks
$(BUILD)/bench/bench_lib: tests/bench/bench_lib.c $(LIB) $(BUILD)/bench/bench_lib.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) $< $(LIB) -o $@ $(LDFLAGS) -lm

$(BUILD)/bench/loadgen: tests/bench/loadgen.c $(BUILD)/bench/loadgen.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) $(CFLAGS) $< -o $@ $(LDFLAGS) -lpthread -lm

$(BUILD)/bench/bench_store: tests/bench/bench_store.c $(SERVER_LIB) $(LIB) $(BUILD)/bench/bench_store.d | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DEPFLAGS) -Iserver $(SERVER_CFLAGS) $(CFLAGS) $< $(SERVER_LIB) $(LIB) -o $@ $(LDFLAGS) $(SERVER_LIBS)

# The library (with torchvision's ratio), the daemon (ingest, queries on 1M samples, memory),
# binary ingest and the Python baseline, exports of 1M samples, what the Miner costs a training loop, the
# store alone, and adversarial load (probes beside slow and idle connections, meta in any order, replay,
# 10,000 datasets, large bodies' memory), and a cluster of nodes on a throw-away PostgreSQL (ingest, lag, top-k);
# figures go in BENCHMARKS.md.
bench: $(BUILD)/.bench-deps $(BENCH_BINS) $(FOCALD)
	/usr/bin/python3 tests/bench/bench_lib.py --bin $(BUILD)/bench/bench_lib
	/usr/bin/python3 tests/bench/bench_daemon.py --build $(BUILD)
	/usr/bin/python3 tests/bench/bench_console.py --build $(BUILD)
	/usr/bin/python3 tests/bench/bench_ingest.py --build $(BUILD)
	/usr/bin/python3 tests/bench/bench_export.py --build $(BUILD)
	/usr/bin/python3 tests/bench/bench_miner.py --build $(BUILD)
	/usr/bin/python3 tests/bench/bench_label_noise.py --build $(BUILD)
	@mkdir -p $(BUILD)/bench-store
	$(BUILD)/bench/bench_store --db $(BUILD)/bench-store/f.db --durability full
	$(BUILD)/bench/bench_store --db $(BUILD)/bench-store/f.db --durability normal
	/usr/bin/python3 tests/bench/bench_adversarial.py --build $(BUILD)
	/usr/bin/python3 tests/bench/bench_cluster.py --build $(BUILD)
.PHONY: bench

# Ten minutes of mixed load (posting, querying, reviewing, exporting) with RSS, fds and WAL sampled; not in CI.
soak: $(BUILD)/.test-deps $(BUILD)/bench/loadgen $(FOCALD)
	/usr/bin/python3 tests/soak.py --build $(BUILD)
.PHONY: soak

# Builds docker/Dockerfile with podman and runs the image read-only on a volume: a batch in, its hard
# examples out, non-root, HEALTHCHECK, SIGTERM (tests/container-smoke; root, a few minutes).
container-test:
	tests/container-smoke
.PHONY: container-test

# ---------------------------------------------------------------------------- fuzzing
# libFuzzer targets (clang): the JSON and binary request decoders, the review bodies, URL and query
# handling, the loss kernels. The library and the daemon's objects are built by this Makefile's own
# rules into build/fuzz with clang and the sanitizers (CI= there: clang's extra warnings on the
# daemon are reported, not fatal; the targets themselves obey CI=1). tests/fuzz/README.md tells
# how to run one target longer and how to add a regression.
FUZZ_BUILD := build/fuzz
FUZZ_TARGETS := fuzz_json_batch fuzz_binary_batch fuzz_review fuzz_query fuzz_kernels
FUZZ_BINS := $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))
FUZZ_SECONDS ?= 60
FUZZ_CC := clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_PKGS := clang libclang-rt-dev

$(FUZZ_BUILD)/.fuzz-deps:
	$(call need_pkgs,$(FUZZ_PKGS))
	@mkdir -p $(@D) && touch $@

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/server/libfocald.a $(FUZZ_BUILD)/lib/libfocal.a
	$(FUZZ_CC) $(CPPFLAGS) $(DEPFLAGS) -Iserver $(SERVER_CFLAGS) -std=c11 -O1 -g $(WARN) -fsanitize=fuzzer $(FUZZ_SAN) $< \
	  $(FUZZ_BUILD)/server/libfocald.a $(FUZZ_BUILD)/lib/libfocal.a -o $@ $(SERVER_LIBS)

# The archives first, by a second make with clang's flags; then the targets, against them.
fuzz: $(FUZZ_BUILD)/.fuzz-deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) SANITIZE= CI= \
	  SAN_FLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" $(FUZZ_BUILD)/lib/libfocal.a $(FUZZ_BUILD)/server/libfocald.a
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
.PHONY: fuzz

# Each target for FUZZ_SECONDS on a copy of its seed corpus, after its regressions; fails on any crash,
# leak or timeout (inputs saved under build/fuzz/crashes/<target>/).
fuzz-run: fuzz
	tests/fuzz/run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)
.PHONY: fuzz-run

fuzz-regress: fuzz
	tests/fuzz/run --regress $(FUZZ_TARGETS)
.PHONY: fuzz-regress

clean:
	rm -rf build
.PHONY: clean

# The header dependencies the compiler wrote (DEPFLAGS); none before the first build. Each target names
# its .d file as a prerequisite, so a target built without one (by an older Makefile) is built again once.
DEP_FILES := $(patsubst %.o,%.d,$(LIB_OBJS) $(filter-out $(BUILD)/server/gen_%,$(SERVER_OBJS)) $(BUILD)/server/main.o) \
             $(addsuffix .d,$(UNIT_BINS) $(PG_TEST_BINS) $(BENCH_BINS)) $(FAULT_SHIM:.so=.d)
$(DEP_FILES):
-include $(wildcard $(BUILD)/*.d $(BUILD)/*/*.d $(FUZZ_BUILD)/*.d)
