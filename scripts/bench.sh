#!/usr/bin/env bash
# make bench: throughput and peak RSS of the agent's hot paths (see scripts/bench.py,
# scripts/bench-tail.py and scripts/bench-parsers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/bench.py
python3 scripts/bench-tail.py
python3 scripts/bench-parsers.py
python3 scripts/bench-metrics.py
