#!/usr/bin/env python3
"""Throughput and peak memory of the agent's hot path, as ratios against a baseline
measured in the same run.

For each case the agent generates N records as fast as it can (interval 1 ns) and
writes them to /dev/null through the stdout output; the run ends when the input has
sent all samples and the SIGTERM shutdown has flushed the rest, so the time covers
every record formatted and written. Baseline: `yes LINE | head -n N > /dev/null`,
the cost of moving the same number of lines through a pipe with no formatting.
"""
import os, resource, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
N = int(os.environ.get("BENCH_RECORDS", "3000000"))
LINE = '{"date":1587769732.572266,"rand_value":9704012962543047466}'

CASES = {
    "random -> stdout json_lines": "[INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "dummy  -> stdout json_lines": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "random -> stdout msgpack print": "[INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    # The cost of a rate limit that never drops (every record takes a token).
    "dummy -> limit -> stdout json_lines": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "[FILTER]\n    name limit\n    match *\n    max_records_per_second 1T\n",
    "dummy -> limit per key -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"dummy\",\"pod\":\"web-1\"}}\n"
    "[FILTER]\n    name limit\n    match *\n    per pod\n    max_records_per_second 1T\n",
}


def baseline(n):
    t = time.monotonic()
    subprocess.run(f"yes '{LINE}' | head -n {n} > /dev/null", shell=True, check=True)
    return n / (time.monotonic() - t)


def run_case(name, input_conf, n):
    fmt = "msgpack" if "msgpack" in name else "json_lines"
    conf = ("[SERVICE]\n    flush 0.2\n    log_level debug\n" + input_conf.format(n=n)
            + f"[OUTPUT]\n    name stdout\n    match *\n    format {fmt}\n")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.conf")
        err_path = os.path.join(d, "err")
        with open(path, "w") as f:
            f.write(conf)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        with open(os.devnull, "w") as out, open(err_path, "w") as err:
            p = subprocess.Popen([AGENT, "-c", path], stdout=out, stderr=err)
            while "all samples sent" not in open(err_path).read():
                if p.poll() is not None:
                    sys.exit(f"agent exited early:\n{open(err_path).read()}")
                time.sleep(0.01)
            p.send_signal(signal.SIGTERM)
            p.wait()
        elapsed = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = open(err_path).read()
        if "service has stopped (0 pending tasks)" not in log:
            sys.exit(f"records were not all delivered:\n{log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return n / elapsed, n / cpu, after.ru_maxrss / 1024


def main():
    if not os.path.exists(AGENT):
        sys.exit(f"{AGENT} not found: run `make release` first")
    base = baseline(N)
    print(f"records per case: {N:,}")
    print(f"baseline  yes|head -> /dev/null: {base/1e6:6.2f} M lines/s")
    for name, conf in CASES.items():
        rate, per_cpu, rss = run_case(name, conf, N)
        print(f"{name:32s} {rate/1e6:6.2f} M rec/s wall  {per_cpu/1e6:6.2f} M rec/s per CPU-second"
              f"  ({rate/base:5.2f}x baseline)  peak RSS {rss:6.1f} MiB")


if __name__ == "__main__":
    main()
