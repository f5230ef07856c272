# focald — build, test, benchmark and run.
#
#   make            build everything into build/
#   make test       install missing packages, build, run every test, print a summary
#   make run        install missing packages, build and start the daemon
#   make bench      run the benchmarks (figures go in BENCHMARKS.md)
#   make SANITIZE=address,undefined test    the same tests under ASan + UBSan (build/san-*)
#   make SANITIZE=thread test-concurrency   the concurrency tests under TSan
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
CFLAGS := -std=c11 -O2 -g $(WARN) $(SAN_FLAGS)
LDFLAGS := $(SAN_FLAGS)
# The kernels: vectorised, no errno from libm, no trap semantics; fused multiply-add where the ISA has it.
KFLAGS := -O3 -ffp-contract=fast -fno-math-errno -fno-trapping-math

# ---------------------------------------------------------------------------- packages
# Debian packages the build and the tests need. Installed when missing (as root),
# otherwise the exact command is printed and the build stops.
BUILD_PKGS := gcc make pkg-config libc6-dev libmicrohttpd-dev libjansson-dev libsqlite3-dev libuv1-dev \
              libcmocka-dev sqlite3 curl
TEST_PKGS := python3 python3-numpy python3-torch python3-torchvision

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

$(BUILD)/.test-deps: $(BUILD)/.build-deps
	$(call need_pkgs,$(TEST_PKGS))
	@mkdir -p $(@D) && touch $@

deps: $(BUILD)/.build-deps
.PHONY: deps

# ---------------------------------------------------------------------------- lib/
LIB := $(BUILD)/lib/libfocal.a
LIB_HDRS := $(wildcard lib/include/*.h lib/src/*.h)
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
$(BUILD)/lib/$(1)_$(2).o: lib/src/$(1).c $(LIB_HDRS) | $(BUILD)/.build-deps
	@mkdir -p $$(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(KFLAGS) $(ISA_$(2)) -DFL_ISA=$(2) -c $$< -o $$@
endef
$(foreach k,$(KERNELS),$(foreach i,$(ISAS),$(eval $(call kernel_rule,$(k),$(i)))))

$(BUILD)/lib/fl_api.o: lib/src/fl_api.c $(LIB_HDRS) | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

lib: $(LIB)
.PHONY: lib

# ---------------------------------------------------------------------------- tests
UNIT_TESTS := test_lib_golden test_lib_props test_lib_vmath
UNIT_BINS := $(addprefix $(BUILD)/tests/,$(UNIT_TESTS))

$(BUILD)/tests/test_lib_vmath: tests/unit/test_lib_vmath.c $(LIB_HDRS) | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Ilib/src $(CFLAGS) $(KFLAGS) -march=x86-64 -DFL_W=4 $< -o $@ $(LDFLAGS) -lcmocka -lm

$(BUILD)/tests/test_lib_%: tests/unit/test_lib_%.c $(LIB) | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DGOLDEN_PATH='"tests/golden/lib_golden.txt"' $< $(LIB) -o $@ $(LDFLAGS) -lcmocka -lm -lpthread

all: $(LIB) $(UNIT_BINS) $(BUILD)/bench/bench_lib
.PHONY: all

# Runs every suite; tests/run-suites prints one line per suite and a summary, and fails if any failed.
test: $(BUILD)/.test-deps all
	@BUILD=$(BUILD) SANITIZE="$(SANITIZE)" tests/run-suites $(UNIT_BINS) -- golden-reference
.PHONY: test

# Regenerates the golden vectors from the float64 reference (commit the result).
golden: $(BUILD)/.test-deps
	/usr/bin/python3 tests/reference/focal_ref.py tests/golden/lib_golden.txt
.PHONY: golden

# ---------------------------------------------------------------------------- benchmarks
$(BUILD)/bench/bench_lib: tests/bench/bench_lib.c $(LIB) | $(BUILD)/.build-deps
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(LIB) -o $@ $(LDFLAGS) -lm

bench: $(BUILD)/.test-deps $(BUILD)/bench/bench_lib
	/usr/bin/python3 tests/bench/bench_lib.py --bin $(BUILD)/bench/bench_lib
.PHONY: bench

clean:
	rm -rf build
.PHONY: clean
