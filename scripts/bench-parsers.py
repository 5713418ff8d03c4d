#!/usr/bin/env python3
"""Throughput of the container-log path: tail (multiline.parser cri) -> parser filter
(apache2, conf/parsers.conf) -> tcp json_lines into a loopback sink, with a same-run
baseline: the same file through tail -> tcp without multiline or parser.

The file is tests/data/fluent-bit/bench/gen_cri.py's output (BENCH_CRI_LINES physical
lines, ~80% single `F` lines, the rest 1-3 `P` parts and an `F`; each message an Apache
combined access line). The agent reads it from its head with exit_on_eof; a run ends
when every record is delivered (`service has stopped (0 pending tasks)`). Prints lines/s
and lines per CPU-second (physical lines read), median of BENCH_RUNS runs.

Fluent Bit 5.1.1 on the same pipeline and file (measured once on this kind of machine,
tests/data/fluent-bit/bench/RESULTS.md; it is not built here): ~67,000 lines/s,
~65,000 lines per CPU-second.
"""
import os, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
N = int(os.environ.get("BENCH_CRI_LINES", "1000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
GEN = os.path.join(ROOT, "tests/data/fluent-bit/bench/gen_cri.py")
PARSERS = os.path.join(ROOT, "conf/parsers.conf")

CASES = {
    "baseline: tail -> tcp (no multiline, no parser)": "",
    "tail -> cri multiline -> apache2 parser -> tcp": (
        "    multiline.parser cri\n"
        "[FILTER]\n    name parser\n    match *\n    key_name log\n    parser apache2\n    reserve_data on\n"),
}


def main():
    if not os.path.exists(AGENT):
        sys.exit(f"{AGENT} not found: run `make release` first")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench import Sink
    # bench-tail.py's run_agent: wall and CPU seconds of one run, checked for delivery.
    from importlib import import_module
    run_agent = import_module("bench-tail").run_agent
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "cri.log")
        gen = subprocess.run([sys.executable, GEN, "--lines", str(N), "--out", log],
                             check=True, capture_output=True, text=True)
        subprocess.run(f"cat {log} > /dev/null", shell=True, check=True)  # page cache
        sink = Sink()
        print(f"{N:,} CRI lines ({os.path.getsize(log)/1e6:.0f} MB; {gen.stderr.strip()}), median of {RUNS} runs")
        for name, extra in CASES.items():
            conf = os.path.join(d, "bench.conf")
            with open(conf, "w") as f:
                f.write(f"[SERVICE]\n    flush 0.2\n    grace 60\n    parsers_file {PARSERS}\n"
                        f"[INPUT]\n    name tail\n    path {log}\n    read_from_head on\n"
                        f"    exit_on_eof on\n{extra}"
                        f"[OUTPUT]\n    name tcp\n    match *\n    port {sink.port}\n    format json_lines\n")
            runs = [run_agent(conf, os.path.join(d, f"err{i}")) for i in range(RUNS)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"{name:50s} {N/wall:10,.0f} lines/s  {N/cpu:10,.0f} lines per CPU-second")


if __name__ == "__main__":
    main()
