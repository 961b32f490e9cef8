# The two commands of the README. Everything else is CMake's.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: demo test build setup bench sanitize clean fuzz fuzz-build

setup:
	bash scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# At a terminal, the run's dashboard stays up after the last round until Ctrl-C, and the last
# line is its link; without one (CI, a pipe) the run exits and its last line is the
# `fednas dashboard` command that serves the results again.
demo: build
	./$(BUILD)/fednas run experiments/quickstart.json

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The whole suite (unit, integration, chaos and browser tests) built with AddressSanitizer,
# LeakSanitizer and UndefinedBehaviorSanitizer; any report fails its test (UBSan does not recover,
# and a leak makes a process exit non-zero). Timeouts are 3x make test's (tests/CMakeLists.txt).
# About 15 minutes on 2 busy cores.
sanitize: setup
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDNAS_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --output-on-failure -j$(JOBS)

# libFuzzer targets (tests/fuzz), built with clang under ASan+UBSan in build-fuzz, each run for
# FUZZ_SECONDS; a crash, leak or timeout fails and leaves its reproducer in build-fuzz/artifacts.
FUZZ_SECONDS ?= 600
fuzz-build: setup
	cmake -S . -B build-fuzz -DFEDNAS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DFEDNAS_CUDA=OFF $(CMAKE_FLAGS)
	cmake --build build-fuzz -j$(JOBS)

fuzz: fuzz-build
	bash tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

bench: build
	bash tests/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
