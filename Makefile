# Targets anyone can run on a fresh machine with a Rust toolchain.
CARGO ?= cargo
CONF ?= conf/random-stdout.conf

.PHONY: build release run test bench demo netcat-demo fmt lint

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Runs the agent on an example config (Ctrl-C to stop).
run: build
	./target/debug/agent -c $(CONF)

# Unit tests and the integration tests in tests/, which drive the built binary. As root,
# installs what the kernel and network tests need first; otherwise skips (and names)
# the tests that need root or missing tools.
test:
	CARGO=$(CARGO) bash scripts/test.sh

# Throughput and peak memory of random/dummy -> stdout into /dev/null and -> tcp into a
# loopback sink, and tail -> stdout.
bench: release
	scripts/bench.sh
	@if [ "$$(id -u)" = 0 ]; then python3 scripts/bench_conntrack.py; else echo "conntrack bench skipped: needs root"; fi
	cargo test --release --test kube_scale -- --ignored --nocapture

# Flow logs from real traffic in a throw-away network namespace (root).
demo: build
	scripts/demo.sh

# The networking demo: conf/fluent-bit.conf -> tcp -> nc -l 127.0.0.1 9090.
netcat-demo: build
	AGENT=./target/debug/agent scripts/netcat-demo.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --all-targets -- -D warnings
