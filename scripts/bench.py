#!/usr/bin/env python3
"""Throughput and peak memory of the agent's hot path, as ratios against a baseline
measured in the same run.

For each case the agent generates N records as fast as it can (interval 1 ns) and
writes them to /dev/null through the stdout output, or through the tcp output to a
loopback sink in this script that counts what it receives; the run ends when the input
has sent all samples and the SIGTERM shutdown has flushed the rest, so the time covers
every record formatted and written. Baseline: `yes LINE | head -n N > /dev/null`,
the cost of moving the same number of lines through a pipe with no formatting.

The forward cases run an agent pair on loopback: a sender (random -> forward output)
and a receiver (forward input -> stdout json_lines, read by this script); the time runs
from the sender's start until the receiver has printed all N records; CPU is both
agents', peak RSS the larger of the two.

BENCH_ONLY=WORD runs only the cases whose name holds WORD (and the dummy baseline);
BENCH_RECORDS=N sets the records per case.
"""
import os, signal, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
N = int(os.environ.get("BENCH_RECORDS", "3000000"))
LINE = '{"date":1587769732.572266,"rand_value":9704012962543047466}'

CASES = {
    "random -> stdout json_lines": "[INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "dummy  -> stdout json_lines": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "random -> stdout msgpack print": "[INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "random -> tcp json_lines": "[INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "dummy  -> tcp json_lines": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    "random -> tcp msgpack": "[INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    # Issue 17: POSTed in json_lines to a loopback HTTP server that answers 200.
    "dummy  -> http json_lines": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    # OTLP/HTTP protobuf (1000 records per request) to the same loopback server.
    "dummy  -> opentelemetry": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n",
    # The cost of a rate limit that never drops (every record takes a token).
    "dummy -> limit -> stdout json_lines": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "[FILTER]\n    name limit\n    match *\n    max_records_per_second 1T\n",
    "dummy -> limit per key -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"dummy\",\"pod\":\"web-1\"}}\n"
    "[FILTER]\n    name limit\n    match *\n    per pod\n    max_records_per_second 1T\n",
    # Issue 16's filters against "dummy -> stdout json_lines" above (same run).
    "dummy -> modify (5 rules) -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"dummy\",\"level\":\"info\",\"pod\":\"web-1\"}}\n"
    "[FILTER]\n    name modify\n    match *\n    condition key_exists message\n    set env prod\n"
    "    rename level severity\n    copy pod pod_name\n    add team core\n    remove message\n",
    "dummy -> grep (2 regexes, and) -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"GET /api/v1/items 200\",\"level\":\"info\",\"kubernetes\":{{\"labels\":{{\"app\":\"web\"}}}}}}\n"
    "[FILTER]\n    name grep\n    match *\n    logical_op and\n    regex message ^GET\n"
    "    regex $kubernetes['labels']['app'] ^web$\n",
    "dummy -> nest (2 keys) -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"hi\",\"pod_name\":\"web-1\",\"pod_ns\":\"prod\"}}\n"
    "[FILTER]\n    name nest\n    match *\n    operation nest\n    wildcard pod_*\n    nest_under kubernetes\n    remove_prefix pod_\n",
    # Every record re-emitted under a tag built from a capture and a key, the original
    # dropped: the emitter's second pass through the engine included.
    "dummy -> rewrite_tag (move) -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"GET /api 200\",\"pod\":\"web-1\"}}\n"
    "[FILTER]\n    name rewrite_tag\n    match dummy.0\n    rule $message ^([A-Z]+) app.$1.$pod false\n",
    "dummy -> expect (3 rules, warn) -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"GET /api 200\",\"pod\":\"web-1\",\"labels\":{{\"app\":\"web\"}}}}\n"
    "[FILTER]\n    name expect\n    match *\n    key_exists message\n    key_val_is_not_null $labels['app']\n    key_val_eq pod web-1\n",
    # A Lua callback that adds one field (every record goes to Lua and back).
    "dummy -> lua (add a field) -> stdout": "[INPUT]\n    name dummy\n    samples {n}\n    interval_sec 0\n    interval_nsec 1\n"
    "    dummy {{\"message\":\"dummy\",\"level\":\"info\",\"pod\":\"web-1\"}}\n"
    "[FILTER]\n    name lua\n    match *\n    call cb\n"
    "    code function cb(tag, ts, record) record.env = 'prod' return 2, ts, record end\n",
}


class Sink:
    """A loopback TCP sink: accepts any number of connections, counts bytes and lines."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.bytes = self.lines = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            with self.lock:
                self.bytes += len(data)
                self.lines += data.count(b"\n")

    def wait_lines(self, n, timeout=10):
        end = time.monotonic() + timeout
        while self.lines < n and time.monotonic() < end:
            time.sleep(0.01)
        return self.lines


# The body of an OTLP LogRecord of dummy's {"message":"dummy"}: field 5, an AnyValue
# whose string_value (field 1) is "dummy"; one per record in the protobuf bodies.
OTLP_DUMMY = b"\x2a\x07\x0a\x05dummy"


class HttpSink(Sink):
    """A loopback HTTP/1.1 server: answers each request 200 (keepalive), counts the
    lines of the bodies (and dummy's OTLP log records)."""

    otlp_records = 0
    # What each request is answered with: an empty body, or a Bulk API reply for es.
    reply = b""

    def read(self, conn):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(1 << 20)
                if not data:
                    return
                buf += data
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            chunks = [rest]
            have = len(rest)
            while have < length:
                data = conn.recv(1 << 20)
                if not data:
                    return
                chunks.append(data)
                have += len(data)
            body = b"".join(chunks)
            buf = body[length:]
            with self.lock:
                self.bytes += length
                self.lines += body[:length].count(b"\n")
                self.otlp_records += body[:length].count(OTLP_DUMMY)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(self.reply) + self.reply)


def baseline(n):
    t = time.monotonic()
    subprocess.run(f"yes '{LINE}' | head -n {n} > /dev/null", shell=True, check=True)
    return n / (time.monotonic() - t)


def run_case(name, input_conf, n):
    fmt = "msgpack" if "msgpack" in name else "json_lines"
    sink = Sink() if "tcp" in name else HttpSink() if "http" in name or "opentelemetry" in name else None
    if "opentelemetry" in name:
        output = f"[OUTPUT]\n    name opentelemetry\n    match *\n    port {sink.port}\n"
    elif sink:
        kind = "http" if "http" in name else "tcp"
        output = f"[OUTPUT]\n    name {kind}\n    match *\n    port {sink.port}\n    format {fmt}\n"
    else:
        output = f"[OUTPUT]\n    name stdout\n    match *\n    format {fmt}\n"
    conf = "[SERVICE]\n    flush 0.2\n    log_level debug\n" + input_conf.format(n=n) + output
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.conf")
        err_path = os.path.join(d, "err")
        with open(path, "w") as f:
            f.write(conf)
        t = time.monotonic()
        with open(os.devnull, "w") as out, open(err_path, "w") as err:
            p = subprocess.Popen([AGENT, "-c", path], stdout=out, stderr=err)
            while "all samples sent" not in open(err_path).read():
                if p.poll() is not None:
                    sys.exit(f"agent exited early:\n{open(err_path).read()}")
                time.sleep(0.01)
            p.send_signal(signal.SIGTERM)
            # This child's own usage: RUSAGE_CHILDREN's maxrss is the largest of all
            # children so far, which would carry one case's peak into the next.
            _, _, usage = os.wait4(p.pid, 0)
            p.returncode = 0
        elapsed = time.monotonic() - t
        log = open(err_path).read()
        if "service has stopped (0 pending tasks)" not in log:
            sys.exit(f"records were not all delivered:\n{log}")
    # The agent closed its connections at exit; the sink has read what was written.
    if "opentelemetry" in name:
        end = time.monotonic() + 10
        while sink.otlp_records < n and time.monotonic() < end:
            time.sleep(0.01)
        if sink.otlp_records != n:
            sys.exit(f"the sink received {sink.otlp_records} OTLP log records, expected {n}")
    elif sink and fmt == "json_lines" and sink.wait_lines(n) != n:
        sys.exit(f"the sink received {sink.lines} lines, expected {n}")
    cpu = usage.ru_utime + usage.ru_stime
    return n / elapsed, n / cpu, usage.ru_maxrss / 1024


FORWARD_CASES = {
    "random -> forward -> forward": "",
    "... acks + gzip": "    require_ack_response on\n    compress gzip\n",
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_forward_case(extra, n):
    port = free_port()
    receiver = (f"[SERVICE]\n    flush 0.2\n[INPUT]\n    name forward\n    listen 127.0.0.1\n"
                f"    port {port}\n[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n")
    sender = ("[SERVICE]\n    flush 0.2\n    log_level debug\n"
              + CASES["random -> stdout json_lines"].format(n=n)
              + f"[OUTPUT]\n    name forward\n    match *\n    host 127.0.0.1\n    port {port}\n"
              + "    retry_limit no_limits\n" + extra)
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, conf in (("rx", receiver), ("tx", sender)):
            paths[name] = os.path.join(d, name + ".conf")
            with open(paths[name], "w") as f:
                f.write(conf)
        rx_err = open(os.path.join(d, "rx.err"), "w+")
        rx = subprocess.Popen([AGENT, "-c", paths["rx"]], stdout=subprocess.PIPE, stderr=rx_err)
        while "listening on" not in open(rx_err.name).read():
            if rx.poll() is not None:
                sys.exit(f"receiver exited early:\n{open(rx_err.name).read()}")
            time.sleep(0.01)
        lines = [0]
        done = threading.Event()

        def count():
            while lines[0] < n:
                data = rx.stdout.read1(1 << 20)
                if not data:
                    break
                lines[0] += data.count(b"\n")
            done.set()
            # Keep draining so the receiver never blocks on a full pipe.
            while rx.stdout.read1(1 << 20):
                pass

        threading.Thread(target=count, daemon=True).start()
        t = time.monotonic()
        with open(os.devnull, "w") as out, open(os.path.join(d, "tx.err"), "w") as err:
            tx = subprocess.Popen([AGENT, "-c", paths["tx"]], stdout=out, stderr=err)
            if not done.wait(300) or lines[0] < n:
                sys.exit(f"the receiver printed {lines[0]} of {n} records")
            elapsed = time.monotonic() - t
            tx.send_signal(signal.SIGTERM)
            _, _, tx_usage = os.wait4(tx.pid, 0)
            tx.returncode = 0
        rx.send_signal(signal.SIGTERM)
        _, _, rx_usage = os.wait4(rx.pid, 0)
        rx.returncode = 0
    cpu = sum(u.ru_utime + u.ru_stime for u in (tx_usage, rx_usage))
    return n / elapsed, n / cpu, max(tx_usage.ru_maxrss, rx_usage.ru_maxrss) / 1024


def outage(seconds, rate=10000):
    """RSS of the agent while its only destination is down for `seconds`, at a fixed
    input rate: bounded queues and mem_buf_limit must keep it flat."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    conf = ("[SERVICE]\n    flush 1\n    log_level error\n"
            f"[INPUT]\n    name dummy\n    rate {rate}\n    mem_buf_limit 10M\n"
            f"[OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "outage.conf")
        open(path, "w").write(conf)
        p = subprocess.Popen([AGENT, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        for _ in range(seconds):
            time.sleep(1)
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]) / 1024)
        p.kill()
        p.wait()
    return samples


def main():
    if not os.path.exists(AGENT):
        sys.exit(f"{AGENT} not found: run `make release` first")
    base = baseline(N)
    print(f"records per case: {N:,}")
    print(f"baseline  yes|head -> /dev/null: {base/1e6:6.2f} M lines/s")
    only = os.environ.get("BENCH_ONLY")
    for name, conf in CASES.items():
        if only and only not in name and not name.startswith("dummy  -> stdout"):
            continue
        rate, per_cpu, rss = run_case(name, conf, N)
        print(f"{name:32s} {rate/1e6:6.2f} M rec/s wall  {per_cpu/1e6:6.2f} M rec/s per CPU-second"
              f"  ({rate/base:5.2f}x baseline)  peak RSS {rss:6.1f} MiB")
    for name, extra in FORWARD_CASES.items():
        if only:
            break
        rate, per_cpu, rss = run_forward_case(extra, N)
        print(f"{name:32s} {rate/1e6:6.2f} M rec/s wall  {per_cpu/1e6:6.2f} M rec/s per CPU-second"
              f"  ({rate/base:5.2f}x baseline)  peak RSS {rss:6.1f} MiB")
    secs = int(os.environ.get("BENCH_OUTAGE_SECS", "60"))
    if secs > 0 and not only:
        rss = outage(secs)
        print(f"outage {secs} s, dummy 10k rec/s -> tcp down, mem_buf_limit 10M: RSS after 1 s {rss[0]:.1f} MiB,"
              f" peak {max(rss):.1f} MiB, at the end {rss[-1]:.1f} MiB ({max(rss)/rss[0]:.2f}x the first second)")


if __name__ == "__main__":
    main()
