#!/usr/bin/env bash
# make bench: throughput and peak RSS of the agent's hot paths (see scripts/bench.py,
# scripts/bench-tail.py, scripts/bench-parsers.py and scripts/bench-kafka.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/bench.py
python3 scripts/bench-tail.py
python3 scripts/bench-parsers.py
python3 scripts/bench-metrics.py
python3 scripts/bench-kafka.py
