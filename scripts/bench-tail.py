#!/usr/bin/env python3
"""Throughput and peak memory of tail -> stdout json_lines, against baselines measured in
the same run.

A file of N lines of 200 bytes (JSON-ish, with quotes to escape) is written to a temp dir
and read into the page cache. The agent reads it from its head with `exit_on_eof on` and
writes every record to /dev/null through the stdout output; the run ends when the input
has read every file to its end and every record is written, so the time covers every line
read, split, wrapped in a record, formatted and written. The log must end with
`service has stopped (0 pending tasks)`. Baselines: `cat FILE > /dev/null` (reading the
page cache) and `wc -l FILE` (reading + finding newlines). Each case runs RUNS times; the
median is printed. The second case bounds what is read and not yet delivered with
mem_buf_limit; the others send to a loopback tcp sink and an Elasticsearch stand-in.
"""
import os, resource, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
N = int(os.environ.get("BENCH_LINES", "2000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ONLY = os.environ.get("BENCH_ONLY")
LINE_LEN = 200
STDOUT = "[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n"
TCP = "[OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n"
ES = "[OUTPUT]\n    name es\n    match *\n    port {http_port}\n    suppress_type_name on\n"
CASES = {
    "tail -> stdout json_lines": ("", STDOUT),
    "tail -> stdout json_lines, mem_buf_limit 2M": ("    mem_buf_limit 2M\n", STDOUT),
    "tail -> tcp json_lines (loopback sink)": ("", TCP),
    # Issue 17: Bulk API NDJSON to a loopback server answering {"errors":false}.
    "tail -> es bulk (loopback sink)": ("", ES),
}


def make_file(path, n):
    head = '{"level":"info","msg":"request \\"served\\"","path":"/api/v1/items","status":200,"seq":'
    with open(path, "w") as f:
        for i in range(n):
            s = f"{head}{i:09d},\"pad\":\""
            f.write(s + "x" * (LINE_LEN - len(s) - 3) + '"}\n')


def timed(cmd):
    t = time.monotonic()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def run_agent(conf_path, err_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    with open(os.devnull, "w") as out, open(err_path, "w") as err:
        p = subprocess.Popen([AGENT, "-c", conf_path], stdout=out, stderr=err)
        p.wait()
    elapsed = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = open(err_path).read()
    if p.returncode != 0 or "service has stopped (0 pending tasks)" not in log:
        sys.exit(f"agent did not deliver everything (exit {p.returncode}):\n{log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of children is the largest of any child so far: each run is measured
    # in a fresh python child below, so this is this run's peak.
    return elapsed, cpu


def main():
    if not os.path.exists(AGENT):
        sys.exit(f"{AGENT} not found: run `make release` first")
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "app.log")
        make_file(log, N)
        size = os.path.getsize(log)
        timed(f"cat {log}")  # into the page cache
        mb = size / 1e6
        cat = statistics.median(timed(f"cat {log}") for _ in range(RUNS))
        wc = statistics.median(timed(f"wc -l {log}") for _ in range(RUNS))
        results = []
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench import HttpSink, Sink
        sink = Sink()
        http = HttpSink()
        http.reply = b'{"took":1,"errors":false,"items":[]}'
        for name, (extra, output) in CASES.items():
            if ONLY and ONLY not in name:
                continue
            conf = os.path.join(d, "tail.conf")
            with open(conf, "w") as f:
                f.write("[SERVICE]\n    flush 0.2\n    grace 60\n[INPUT]\n    name tail\n"
                        f"    path {log}\n    read_from_head on\n    exit_on_eof on\n{extra}"
                        + output.format(port=sink.port, http_port=http.port))
            runs = []
            for i in range(RUNS):
                # A fresh child per run, so ru_maxrss is that run's peak alone.
                out = subprocess.run([sys.executable, __file__, "--one", conf,
                                      os.path.join(d, f"err{i}")],
                                     check=True, capture_output=True, text=True).stdout.split()
                runs.append(tuple(float(x) for x in out))
            results.append((name,
                            statistics.median(r[0] for r in runs),
                            statistics.median(r[1] for r in runs),
                            max(r[2] for r in runs)))
    print(f"lines per case: {N:,} x {LINE_LEN} B = {mb:,.0f} MB, median of {RUNS} runs")
    print(f"baseline  cat FILE > /dev/null: {mb/cat:8.0f} MB/s")
    print(f"baseline  wc -l FILE:           {mb/wc:8.0f} MB/s")
    for name, wall, cpu, rss in results:
        rate = mb / wall
        print(f"{name:40s} {rate:6.0f} MB/s in  {N/wall/1e6:5.2f} M lines/s"
              f"  {mb/cpu:6.0f} MB per CPU-second  ({rate/(mb/wc):5.2f}x wc -l)  peak RSS {rss:6.1f} MiB")

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        elapsed, cpu = run_agent(sys.argv[2], sys.argv[3])
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(elapsed, cpu, rss)
    else:
        main()
