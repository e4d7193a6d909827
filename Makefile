# adamant — build, install and test entry points.
#   make            release build: dist/lib/libadamant.so, dist/bin/adamant, dist/include, adamant.pc
#   make test       every test: Swift (XCTest), C example + ABI checks, Python (pytest)
#   make demo       the README's demo on data shipped in examples/
PREFIX ?= $(CURDIR)/dist
SWIFT ?= swift
CONFIG ?= release
BUILD_FLAGS = -c $(CONFIG) -Xswiftc -static-stdlib -Xswiftc -gnone
BIN = $(shell $(SWIFT) build $(BUILD_FLAGS) --show-bin-path)
PYTHON ?= python3

.PHONY: all setup build dist test test-swift test-c test-imageio test-python demo clean

APT_PACKAGES = libonnx-dev libprotobuf-dev libopenblas-dev libjpeg-dev libpng-dev zlib1g-dev pkg-config

all: dist

# System and Python dependencies (Debian; run as root or with sudo).
setup:
	@command -v apt-get >/dev/null || { echo "make setup needs apt-get (Debian/Ubuntu); install: $(APT_PACKAGES)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -r requirements-dev.txt

build:
	$(SWIFT) build $(BUILD_FLAGS) --product adamant -Xlinker --version-script=$(CURDIR)/Sources/AdamantC/exports.map
	$(SWIFT) build $(BUILD_FLAGS) --product adamant-cli --static-swift-stdlib

dist: build
	mkdir -p $(PREFIX)/lib/pkgconfig $(PREFIX)/include $(PREFIX)/bin
	# install(1) replaces files by rename, so running programs keep their mapped copy
	install -m 755 $(BIN)/libadamant.so $(PREFIX)/lib/libadamant.so
	install -m 644 include/adamant.h $(PREFIX)/include/adamant.h
	install -m 755 $(BIN)/adamant-cli $(PREFIX)/bin/adamant
	sed -e 's|@PREFIX@|$(PREFIX)|' bindings/c/adamant.pc.in > $(PREFIX)/lib/pkgconfig/adamant.pc

test: dist test-swift test-imageio test-c test-python

test-swift:
	$(SWIFT) test

test-imageio:
	bash Tests/CImageIOTests/run.sh

test-c: dist
	bash bindings/c/run_tests.sh $(PREFIX)

test-python: dist
	ADAMANT_LIBRARY=$(PREFIX)/lib/libadamant.so $(PYTHON) -m pytest -q bindings/python/tests

demo: dist
	bash examples/demo.sh

clean:
	rm -rf .build dist
