# The two commands of the README. Everything else is CMake's.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: demo test build setup bench sanitize clean

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

# Unit tests under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize: setup
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDNAS_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ctest --output-on-failure -j$(JOBS) -E integration_

bench: build
	bash tests/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan
