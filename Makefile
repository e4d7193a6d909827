# adamant — build, install and test entry points.
#   make            release build: dist/lib/libadamant.so, dist/bin/adamant, dist/bin/adamant-serve, dist/include,
#                   adamant.pc
#   make test       every test: Swift (XCTest), C example + ABI checks, Python (pytest), a 60 s fuzz
#                   run and the sanitizer jobs (make test-fuzz, make test-sanitize)
#   make demo       the README's demo on data shipped in examples/
#   make setup      Debian packages (apt) and the Python virtual environment .venv (requirements-dev.txt,
#                   CPU torch, torchattacks); every Python-using target runs $(PYTHON), that venv's python
#   make wheel      dist/adamant-*.whl: the Python package with libadamant.so and the shared libraries it
#                   needs (auditwheel repair); make test-wheel installs it into a fresh venv and runs it
PREFIX ?= $(CURDIR)/dist
SWIFT ?= swift
CONFIG ?= release
BUILD_FLAGS = -c $(CONFIG) -Xswiftc -static-stdlib -Xswiftc -gnone
BIN = $(shell $(SWIFT) build $(BUILD_FLAGS) --show-bin-path)
# The Python virtual environment `make setup` creates (stock Debian's python3 refuses system-wide pip
# installs). PYTHON is the interpreter every Python-using target runs: the venv's once it exists
# (override: make test PYTHON=/path/to/python).
SYSTEM_PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
PYTHON ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(SYSTEM_PYTHON))

.PHONY: all setup setup-python build dist test test-swift test-c test-imageio test-python test-serve bench-serve demo clean \
	test-fuzz test-sanitize test-asan test-asan-abi test-tsan wheel test-wheel

APT_PACKAGES = libonnx-dev libprotobuf-dev libopenblas-dev libjpeg-dev libpng-dev zlib1g-dev pkg-config \
	python3-venv

all: dist

# System and Python dependencies (Debian; run as root or with sudo).
setup:
	@command -v apt-get >/dev/null || { echo "make setup needs apt-get (Debian/Ubuntu); install: $(APT_PACKAGES)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES)
	$(MAKE) setup-python

# The virtual environment: requirements-dev.txt, then CPU torch and torchattacks (scripts/install_torch.sh).
setup-python:
	test -x $(VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	bash scripts/install_torch.sh $(VENV)/bin/python

build:
	$(SWIFT) build $(BUILD_FLAGS) --product adamant -Xlinker --version-script=$(CURDIR)/Sources/AdamantC/exports.map
	$(SWIFT) build $(BUILD_FLAGS) --product adamant-cli --static-swift-stdlib
	$(SWIFT) build $(BUILD_FLAGS) --product adamant-serve --static-swift-stdlib

dist: build
	mkdir -p $(PREFIX)/lib/pkgconfig $(PREFIX)/include $(PREFIX)/bin
	# install(1) replaces files by rename, so running programs keep their mapped copy
	install -m 755 $(BIN)/libadamant.so $(PREFIX)/lib/libadamant.so
	install -m 644 include/adamant.h $(PREFIX)/include/adamant.h
	install -m 755 $(BIN)/adamant-cli $(PREFIX)/bin/adamant
	install -m 755 $(BIN)/adamant-serve $(PREFIX)/bin/adamant-serve
	sed -e 's|@PREFIX@|$(PREFIX)|' bindings/c/adamant.pc.in > $(PREFIX)/lib/pkgconfig/adamant.pc

test: dist test-swift test-imageio test-c test-python test-wheel test-fuzz test-sanitize

test-swift:
	$(SWIFT) test

test-imageio:
	bash Tests/CImageIOTests/run.sh

test-c: dist
	bash bindings/c/run_tests.sh $(PREFIX)

test-python: dist
	ADAMANT_LIBRARY=$(PREFIX)/lib/libadamant.so $(PYTHON) -m pytest -q --durations=5 bindings/python/tests

# The HTTP service alone (its tests are part of test-python too): starts dist/bin/adamant-serve on free
# loopback ports, exercises every endpoint and error, stops it with SIGTERM.
test-serve: dist
	ADAMANT_LIBRARY=$(PREFIX)/lib/libadamant.so $(PYTHON) -m pytest -q --durations=5 bindings/python/tests/test_serve.py

# The service's load test (a few minutes; not part of make test): benchmarks/results/serve_load.md.
bench-serve: dist
	$(PYTHON) benchmarks/serve_load.py

# Hardening (issue #8). Each instrumented build has its own scratch path (.build-fuzz, .build-asan,
# .build-tsan), so none disturbs the release build in .build.
FUZZ_SECONDS ?= 60
# swiftc has no -sanitize=undefined: Swift code is ASan-instrumented (its arithmetic is checked
# anyway); the C and C++ targets get ASan + UBSan (any UB report is fatal).
UBSAN_C = -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined \
	-Xcxx -fsanitize=undefined -Xcxx -fno-sanitize-recover=undefined
ASAN_FLAGS = --scratch-path .build-asan --sanitize=address $(UBSAN_C)
TSAN_FLAGS = --scratch-path .build-tsan --sanitize=thread
# A crashing test must not wait on swift-backtrace (it can hang under a sanitizer).
SAN_ENV = SWIFT_BACKTRACE=enable=no UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# libFuzzer over load + predict + gradient, FUZZ_SECONDS long, after replaying Tests/Fuzz/regressions.
test-fuzz:
	bash Tests/Fuzz/run.sh $(FUZZ_SECONDS)

test-sanitize: test-asan test-asan-abi test-tsan

# The Swift tests (XCTest) under AddressSanitizer (+ UBSan in the C/C++ targets). allocator_may_return_null:
# a refused allocation must reach adamant as NULL (MemoryTests checks it becomes an error). Leak checking is off
# here: swift-corelibs-xctest never frees test-case instances (so every model a test keeps would be
# reported); test-asan-abi and the fuzzer check leaks.
test-asan:
	$(SWIFT) build --build-tests $(ASAN_FLAGS)
	$(SAN_ENV) ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 $(SWIFT) test --skip-build $(ASAN_FLAGS)

# bindings/c/test_abi.c and example.c against an ASan+UBSan-instrumented libadamant.so.
test-asan-abi:
	SWIFT=$(SWIFT) bash Tests/Sanitize/abi.sh

# The concurrency tests (8 threads, mixed predict/gradient/PGD, host threads busy) under TSan.
test-tsan:
	$(SWIFT) build --build-tests $(TSAN_FLAGS)
	$(SAN_ENV) TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build $(TSAN_FLAGS) --filter ConcurrencyTests

# A self-contained wheel: the package with libadamant.so, repaired by auditwheel so that libonnx,
# libprotobuf (and what they need) travel inside it, under adamant.libs/ with RPATHs to them.
wheel: dist
	bash bindings/python/build_wheel.sh $(PYTHON) $(PREFIX)

# Installs dist/adamant-*.whl into a fresh venv and runs a prediction with the Debian libraries hidden.
test-wheel: wheel
	$(PYTHON) -m pytest -q bindings/python/wheel_tests

demo: dist
	bash examples/demo.sh

clean:
	rm -rf .build dist bindings/python/build
