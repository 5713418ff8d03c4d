# Targets anyone can run on a fresh machine with a Rust toolchain.
CARGO ?= cargo
CONF ?= conf/random-stdout.conf

.PHONY: build release run test bench fmt lint

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Runs the agent on an example config (Ctrl-C to stop).
run: build
	./target/debug/agent -c $(CONF)

# Unit tests and the integration tests in tests/, which drive the built binary.
test:
	$(CARGO) test --all-targets

# Throughput and peak memory of random/dummy -> stdout and tail -> stdout (json_lines into /dev/null).
bench: release
	scripts/bench.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --all-targets -- -D warnings
