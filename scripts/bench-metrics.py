#!/usr/bin/env python3
"""Metrics throughput: samples per second through node_exporter_metrics ->
prometheus_remote_write, and the agent's CPU per scrape, with a same-run baseline.

The agent scrapes every BENCH_SCRAPE seconds (default 0.05) for BENCH_SECONDS (10) and
remote-writes to a loopback HTTP sink in this script that answers 204 and counts
requests and bytes. Samples per scrape come from the agent's own prometheus_exporter
(one line per sample); scrapes from fluentbit_input_records_total of the input (one
per set). CPU is the agent's user+system time over the run. Baseline: this script
reading the same procfs files once per scrape (what a scrape must read at least).
"""
import http.server, os, socket, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
SCRAPE = os.environ.get("BENCH_SCRAPE", "0.05")
FILES = ["/proc/stat", "/proc/meminfo", "/proc/diskstats", "/proc/loadavg", "/proc/vmstat",
         "/proc/net/dev", "/proc/sys/fs/file-nr", "/proc/1/mounts"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Sink(http.server.BaseHTTPRequestHandler):
    requests = 0
    bytes = 0
    lock = threading.Lock()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        with Sink.lock:
            Sink.requests += 1
            Sink.bytes += n
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    if not os.path.exists(AGENT):
        sys.exit(f"{AGENT} is missing: make release first")
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    http_port, exp_port = free_port(), free_port()
    conf = (f"[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http_port}\n"
            f"[INPUT]\n    name node_exporter_metrics\n    tag node\n    scrape_interval {SCRAPE}\n"
            f"[OUTPUT]\n    name prometheus_remote_write\n    match node\n    host 127.0.0.1\n"
            f"    port {sink.server_address[1]}\n    uri /api/v1/write\n"
            f"[OUTPUT]\n    name prometheus_exporter\n    match node\n    host 127.0.0.1\n    port {exp_port}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(conf)
    agent = subprocess.Popen([AGENT, "-q", "-c", f.name])
    try:
        time.sleep(1.0)
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        scrapes0 = scrapes(http_port)
        time.sleep(SECONDS)
        cpu1, t1 = cpu_seconds(agent.pid), time.monotonic()
        n = scrapes(http_port) - scrapes0
        per_scrape = sum(1 for l in get(exp_port, "/metrics").splitlines() if l and not l.startswith("#"))
    finally:
        agent.terminate()
        agent.wait()
        os.unlink(f.name)
    # Baseline: the same files read once per scrape, by this script.
    b0 = time.process_time()
    for _ in range(max(n, 1)):
        for path in FILES:
            try:
                open(path, "rb").read()
            except OSError:
                pass
    base = (time.process_time() - b0) / max(n, 1)
    agent_cpu = (cpu1 - cpu0) / max(n, 1)
    print(f"node_exporter_metrics -> prometheus_remote_write: {n} scrapes of {per_scrape} samples in {t1 - t0:.1f} s")
    print(f"  samples/s: {n * per_scrape / (t1 - t0):,.0f}   requests: {Sink.requests}, {Sink.bytes / 1e6:.1f} MB")
    print(f"  agent CPU per scrape: {agent_cpu * 1e3:.2f} ms   baseline (reading the procfs files): {base * 1e3:.2f} ms   ratio {agent_cpu / base if base else 0:.1f}x")


def scrapes(port):
    for line in get(port, "/api/v1/metrics/prometheus").splitlines():
        if line.startswith('fluentbit_input_records_total{name="node_exporter_metrics.0"}'):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
