# Stock Bazaar: the two commands are `make run` and `make test`.
#   make run      installs missing packages, builds, starts a local 3-replica cluster
#   make test     builds twice (plain and ASan+UBSan) and runs every test in both
# Other targets: build, asan, tsan, soak, sim, fuzz, bench, eval, format, check-format, matrix,
# clean.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_TSAN ?= build-tsan
CONFIG     ?= config/bazaar.conf
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=
ROUNDS     ?= 200
SEED       ?= 1
FUZZ_SECONDS ?= 1800
FUZZ_RUNS    ?= 10000000
SEEDS      ?= 10000
MODE       ?= primary-backup

.PHONY: all deps build asan tsan run test test-plain test-asan test-tsan soak sim fuzz bench eval \
        format check-format lint matrix clean

all: build

# `make run` installs only what running needs; everything else installs the test tools too.
DEPS_SET ?= all
run: DEPS_SET = run

deps:
	@bash scripts/deps.sh $(DEPS_SET)

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DBAZAAR_SANITIZE=ON >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)

tsan: deps
	cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBAZAAR_TSAN=ON >/dev/null
	cmake --build $(BUILD_TSAN) -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --test-dir $(BUILD_TSAN) -L concurrency --output-on-failure $(CTEST_ARGS)

run: build
	$(BUILD)/bin/bazaar up --config $(CONFIG)

test: test-plain test-asan

test-plain: build lint matrix
	ctest --test-dir $(BUILD) --output-on-failure $(CTEST_ARGS)

test-asan: asan
	ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
	  ctest --test-dir $(BUILD_ASAN) --output-on-failure $(CTEST_ARGS)

soak: build
	BAZAAR_MODE=$(MODE) python3 tests/fault/fault_runner.py --bin-dir $(BUILD)/bin \
	  --rounds $(ROUNDS) --seed $(SEED)

# The deterministic simulator: `make sim SEEDS=N` runs seeds 1..N on every core, then N/10
# Raft-mode schedules (libraft's fixture) from a seed picked from the clock;
# `make sim SEED=s` replays one primary-backup schedule with its whole trace.
sim: build
ifeq ($(origin SEED),command line)
	$(BUILD)/tests/sim/bazaar-sim --seed $(SEED) --verbose
else
	$(BUILD)/tests/sim/bazaar-sim --seeds $(SEEDS) --jobs $(JOBS)
	BAZAAR_RAFT_SEED=random BAZAAR_RAFT_SCHEDULES=$$(( $(SEEDS) / 10 + 1 )) \
	  $(BUILD)/tests/unit/unit_order_raftnode
endif

fuzz: deps
	bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_RUNS)

# Ours against a 3-member etcd (trades, both replication modes) and nginx (order queries, cache
# hits and misses) in one run of ~13 minutes; writes the ratio table into bench/README.md.
# DURATION=3 ROUNDS=1 make bench is a quick pass; CATCHUP=100000 adds the catch-up of 100k orders.
bench: build
	bash bench/run.sh

eval: build
	bash bench/eval.sh

# Every build type with gcc and clang, -Werror (build only); part of `make test`.
matrix: deps
	@bash scripts/build-matrix.sh

# Style and banned-function checks run as part of `make test`.
lint:
	@bash scripts/lint.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN) build-matrix build-fuzz
