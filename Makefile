# corral: convenience targets over CMake. `make run` and `make test` do all
# the set-up on a fresh machine (Debian packages, llama.cpp source, build).
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCORRAL_WERROR=ON
PORT ?= 8080
DEMO_MODEL := $(BUILD)/models/demo.gguf

.PHONY: all deps configure build run test test-unit test-asan test-tsan fuzz soak bench clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

$(DEMO_MODEL): | build
	@mkdir -p $(dir $@)
	$(BUILD)/corral-mkmodel --out $@ --dim 256 --layers 4 --ffn 768 --heads 8 --kv-heads 4 --type q8_0 --name corral-demo

# Build and serve the generated demo model on http://127.0.0.1:$(PORT)
run: build $(DEMO_MODEL)
	$(BUILD)/corral serve --model demo=$(DEMO_MODEL) --preload demo --port $(PORT) $(ARGS)

# Build and run every test: unit (cmocka), end to end (pytest), OpenAI SDK.
# (llama-server, from the same llama.cpp tree, is a supervised child in the
# end-to-end tests.)
test: build
	@cmake --build $(BUILD) --target llama-server -j$(JOBS)
	cd $(BUILD) && ctest --output-on-failure --timeout 1200

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
# (llama-server, a child in the tests, is the plain build's.)
test-asan: build
	@cmake --build $(BUILD) --target llama-server -j$(JOBS)
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORRAL_SANITIZE=ON -DCORRAL_WERROR=ON \
	  -DCORRAL_TEST_LLAMA_SERVER=$(abspath $(BUILD))/bin/llama-server >/dev/null
	@cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure --timeout 1200

# The whole suite with corral under ThreadSanitizer (llama.cpp itself is not
# instrumented).
test-tsan: build
	@cmake --build $(BUILD) --target llama-server -j$(JOBS)
	@cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORRAL_TSAN=ON -DCORRAL_WERROR=ON \
	  -DCORRAL_TEST_LLAMA_SERVER=$(abspath $(BUILD))/bin/llama-server >/dev/null
	@cmake --build $(BUILD)-tsan -j$(JOBS)
	cd $(BUILD)-tsan && TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp)" ctest --output-on-failure --timeout 1200

# libFuzzer (clang, ASan + UBSan) on the request parser, the config reader
# and the upstream SSE reader, FUZZ_TIME seconds each (see scripts/fuzz.sh).
FUZZ_TIME ?= 60
fuzz:
	@bash scripts/install-deps.sh --fuzz
	@FUZZ_BUILD=$(BUILD)-fuzz bash scripts/fuzz.sh $(FUZZ_TIME)

# Mixed load against one server, sampling RSS and open fds (see bench/soak.sh).
SOAK_TIME ?= 3600
soak: build
	bash bench/soak.sh --duration $(SOAK_TIME)

bench: build
	bash bench/run.sh

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-fuzz
