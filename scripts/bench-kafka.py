#!/usr/bin/env python3
"""Kafka throughput and peak memory, against a baseline measured in the same run.

A tansu broker (SQLite storage, in a temp dir) on loopback; N records (BENCH_KAFKA_RECORDS,
default 200,000):
  dummy -> kafka   the agent generates N records as fast as it can and produces them as
                   JSON messages; the time runs until the broker acknowledged all N
                   (the agent's fluentbit_output_proc_records_total reaches N: a chunk
                   counts only once every message is acknowledged).
  kafka -> stdout  the agent consumes those N messages as a group member and prints them
                   as JSON lines into a pipe this script counts.
Baselines: Python confluent-kafka (librdkafka 2.16) producing the same N messages (same
bytes) and consuming them, on the same broker in the same run: the cost of the client
library and the broker alone. Skipped, with the reason, without tansu or confluent-kafka.
"""
import os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
N = int(os.environ.get("BENCH_KAFKA_RECORDS", "200000"))
BODY = '{"message":"dummy","level":"info","pod":"web-1"}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tansu():
    t = shutil.which("tansu")
    if t:
        return t
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    t = os.path.join(home, "bin", "tansu")
    return t if os.path.exists(t) else None


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(port, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics/prometheus", timeout=2).read().decode()
    except OSError:
        return 0
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{"))


def run_agent(conf, tmp, stdout=subprocess.DEVNULL):
    path = os.path.join(tmp, f"bench-{time.time_ns()}.conf")
    with open(path, "w") as f:
        f.write(conf)
    return subprocess.Popen([AGENT, "-c", path], stdout=stdout, stderr=open(path + ".log", "w"))


def stop(p):
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def main():
    from confluent_kafka import Consumer, Producer  # noqa: E402 (checked below)

    tmp = tempfile.mkdtemp(prefix="bench-kafka-")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "sqlite://tansu.db"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("tansu did not start")
                time.sleep(0.1)
        for t in ("bench-agent", "bench-base"):
            subprocess.run([tansu(), "topic", "create", t, "--broker", url, "--partitions", "3"],
                           check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        brokers = f"127.0.0.1:{port}"
        print(f"kafka records per case: {N:,} (tansu broker, SQLite storage)")

        # Baseline producer: the same message bytes as the agent's.
        msg = ('{"@timestamp":1700000000.123457,' + BODY[1:]).encode()
        p = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
        t0 = time.perf_counter()
        c0 = time.process_time()
        for _ in range(N):
            while True:
                try:
                    p.produce("bench-base", msg)
                    break
                except BufferError:
                    p.poll(0.05)
        assert p.flush(120) == 0, "baseline messages not acknowledged"
        base_p = N / (time.perf_counter() - t0)
        base_p_cpu = N / max(time.process_time() - c0, 1e-9)

        # dummy -> kafka
        http = free_port()
        agent = run_agent(
            f"[SERVICE]\n    flush 0.2\n    grace 30\n    http_server on\n    http_port {http}\n"
            f"[INPUT]\n    name dummy\n    samples {N}\n    interval_sec 0\n    interval_nsec 1\n    dummy {BODY}\n"
            f"[OUTPUT]\n    name kafka\n    match *\n    brokers {brokers}\n    topics bench-agent\n", tmp)
        t0 = time.perf_counter()
        while metric(http, "fluentbit_output_proc_records_total") < N:
            if agent.poll() is not None or time.perf_counter() - t0 > 300:
                sys.exit("dummy -> kafka did not finish")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        cpu, rss = proc_cpu(agent.pid), proc_hwm(agent.pid)
        stop(agent)
        print(f"dummy -> kafka (json)          {N / wall / 1e3:8.1f} k rec/s wall  {N / cpu / 1e3:8.1f} k rec/s per CPU-s"
              f"  peak RSS {rss:6.1f} MiB")
        print(f"  baseline confluent-kafka produce {base_p / 1e3:8.1f} k rec/s wall  {base_p_cpu / 1e3:8.1f} k rec/s per CPU-s"
              f"  (agent {N / wall / base_p:4.2f}x wall, {N / cpu / base_p_cpu:4.2f}x per CPU-s)")

        # Baseline consumer, then kafka -> stdout on the agent's N messages.
        c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-base-reader",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe(["bench-agent"])
        got = 0
        t0 = time.perf_counter()
        c0 = time.process_time()
        while got < N and time.perf_counter() - t0 < 300:
            for m in c.consume(10000, 0.5):
                if not m.error():
                    got += 1
        base_c = got / (time.perf_counter() - t0)
        base_c_cpu = got / max(time.process_time() - c0, 1e-9)
        c.close()

        agent = run_agent(
            f"[SERVICE]\n    flush 0.2\n    grace 5\n"
            f"[INPUT]\n    name kafka\n    brokers {brokers}\n    topics bench-agent\n    group_id bench-agent-reader\n"
            f"    rdkafka.auto.offset.reset earliest\n"
            f"[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n", tmp, stdout=subprocess.PIPE)
        t0 = time.perf_counter()
        lines = 0
        for _ in agent.stdout:
            lines += 1
            if lines == N:
                break
        wall = time.perf_counter() - t0
        cpu, rss = proc_cpu(agent.pid), proc_hwm(agent.pid)
        stop(agent)
        print(f"kafka -> stdout (json_lines)   {N / wall / 1e3:8.1f} k rec/s wall  {N / cpu / 1e3:8.1f} k rec/s per CPU-s"
              f"  peak RSS {rss:6.1f} MiB")
        print(f"  baseline confluent-kafka consume {base_c / 1e3:8.1f} k rec/s wall  {base_c_cpu / 1e3:8.1f} k rec/s per CPU-s"
              f"  (agent {N / wall / base_c:4.2f}x wall, {N / cpu / base_c_cpu:4.2f}x per CPU-s)")
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if not tansu():
        print("kafka bench skipped: needs the tansu broker (scripts/test-deps.sh --install)")
        sys.exit(0)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("kafka bench skipped: needs Python confluent-kafka (scripts/test-deps.sh --install)")
        sys.exit(0)
    main()
