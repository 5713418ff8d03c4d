#!/usr/bin/env python3
"""conntrack input: events/s it sustains with zero loss, and its CPU per 10k events;
then flow_aggregate's include_process/include_tcp_stats: CPU per 10k connections, on
against off, in the same run.

Creates a network namespace with conntrack on (as the tests do), runs the agent
watching it (stdout json_lines to a file), and sends one UDP datagram from each of
N distinct source ports as fast as a generator can: N NEW and, once the entries
expire (1 s) and a dump reaps them, N DESTROY. The baseline is the generator's own
rate in the same run: the agent keeps up when its NEW rate matches it. Needs root.
"""
import json, os, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.environ.get("AGENT", os.path.join(ROOT, "target/release/agent"))
N = int(os.environ.get("BENCH_FLOWS", "20000"))
NS = f"bench-ct-{os.getpid()}"


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    if os.geteuid() != 0:
        sys.exit("bench_conntrack needs root (network namespaces, conntrack)")
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        for rule in ["add table inet b", "add chain inet b out { type filter hook output priority 0; }",
                     "add rule inet b out ct state new counter"]:
            sh("ip", "netns", "exec", NS, "nft", *rule.split(" "))
        sh("ip", "netns", "exec", NS, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1",
           "net.netfilter.nf_conntrack_timestamp=1", "net.netfilter.nf_conntrack_udp_timeout=1")
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "c.conf")
            out_path, err_path = os.path.join(d, "out"), os.path.join(d, "err")
            open(conf, "w").write(
                f"[SERVICE]\n    flush 0.2\n[INPUT]\n    name conntrack\n    netns /var/run/netns/{NS}\n"
                "    sample_interval 1s\n    protocols udp\n    rcvbuf 32M\n"
                "[OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n")
            p = subprocess.Popen([AGENT, "-c", conf], stdout=open(out_path, "w"), stderr=open(err_path, "w"))
            while "watching" not in open(err_path).read():
                time.sleep(0.01)
            cpu0 = cpu_seconds(p.pid)
            # Generator inside the namespace (setns needs Python 3.12; use ip netns exec).
            gen = ("import socket,time\nt=time.monotonic()\n"
                   f"for port in range(20000, {20000 + N}):\n"
                   "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',port)); s.sendto(b'x',('127.0.0.1',9)); s.close()\n"
                   "print(time.monotonic()-t)\n")
            t0 = time.monotonic()
            gen_secs = float(subprocess.run(["ip", "netns", "exec", NS, "python3", "-c", gen],
                                            check=True, capture_output=True, text=True).stdout)
            new_done = None
            while True:
                news = destroys = 0
                for line in open(out_path):
                    ev = line[10:17]
                    news += ev.startswith("new")
                    destroys += ev.startswith("destroy")
                if new_done is None and news >= N:
                    new_done = time.monotonic() - t0
                if news >= N and destroys >= N:
                    break
                if time.monotonic() - t0 > 120:
                    sys.exit(f"timed out: {news} new, {destroys} destroy of {N}")
                time.sleep(0.05)
            cpu = cpu_seconds(p.pid) - cpu0
            p.send_signal(signal.SIGTERM)
            p.wait()
            lost = "conntrack events:" in open(err_path).read()
            total = sum(1 for _ in open(out_path))
    finally:
        subprocess.run(["ip", "netns", "del", NS])
    print(f"conntrack: {N:,} flows ({2 * N:,} events)")
    print(f"  generator (baseline)        {N / gen_secs / 1e3:8.1f} k flows/s")
    print(f"  agent NEW events delivered  {N / new_done / 1e3:8.1f} k events/s  ({(N / new_done) / (N / gen_secs):4.2f}x baseline)")
    print(f"  loss                        {'SOME (see log)' if lost else 'none'}")
    print(f"  records (events + samples)  {total:8,}")
    print(f"  CPU per 10k records         {cpu / total * 1e4 * 1e3:8.1f} ms  (decode, state, JSON, write)")


# flow_aggregate with include_process/include_tcp_stats on against off: the same
# timeline twice (M TCP connections opened in the namespace and held HOLD seconds while
# conntrack samples them each second, then closed), the agent's CPU over it.
M = int(os.environ.get("BENCH_SOCK_FLOWS", "5000"))  # 2 fds each: under `ulimit -n`
HOLD = 5
SAMPLE = os.environ.get("BENCH_SAMPLE", "5s")  # flow_aggregate sample_interval


def sockets_run(ns, include):
    opts = ("    include_process on\n    include_tcp_stats on\n"
            f"    sample_interval {SAMPLE}\n"
            f"    netns /var/run/netns/{ns}\n") if include else ""
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "c.conf")
        err_path = os.path.join(d, "err")
        open(conf, "w").write(
            f"[SERVICE]\n    flush 0.2\n[INPUT]\n    name conntrack\n    tag ct\n    netns /var/run/netns/{ns}\n"
            "    sample_interval 1s\n    protocols tcp\n    rcvbuf 32M\n"
            "[FILTER]\n    name flow_aggregate\n    match ct\n    flush_interval 1s\n"
            "    local_endpoints 127.0.0.1/32\n" + opts +
            "[OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n")
        out_path = os.path.join(d, "out")
        p = subprocess.Popen([AGENT, "-c", conf], stdout=open(out_path, "w"), stderr=open(err_path, "w"))
        while "watching" not in open(err_path).read():
            time.sleep(0.01)
        cpu0 = cpu_seconds(p.pid)
        gen = ("import socket,sys,time\n"
               "l=socket.socket(); l.bind(('127.0.0.1',9000)); l.listen(4096)\n"
               "c=[]; a=[]\n"
               f"for i in range({M}):\n"
               "    s=socket.create_connection(('127.0.0.1',9000)); s.send(b'x'); c.append(s); a.append(l.accept()[0])\n"
               f"time.sleep({HOLD})\n"
               "[s.close() for s in c + a]\n")
        subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", gen], check=True)
        time.sleep(3)  # the DESTROY events and a last flush
        cpu = cpu_seconds(p.pid) - cpu0
        p.send_signal(signal.SIGTERM)
        p.wait()
        procs = sum(1 for line in open(out_path) if '"process_name":"python3"' in line)
        rtts = sum(1 for line in open(out_path) if '"tcp_mean_smooth_rtt":0,' not in line)
        return cpu, procs, rtts


def sockets_bench():
    ns = f"bench-sd-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for rule in ["add table inet b", "add chain inet b out { type filter hook output priority 0; }",
                     "add rule inet b out ct state new counter"]:
            sh("ip", "netns", "exec", ns, "nft", *rule.split(" "))
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1",
           "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1", "net.netfilter.nf_conntrack_tcp_timeout_close=1")
        off, _, _ = sockets_run(ns, False)
        on, procs, rtts = sockets_run(ns, True)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    print(f"flow_aggregate: {M:,} TCP connections held {HOLD} s (conntrack samples each 1 s), "
          f"sample_interval {SAMPLE}, same timeline twice")
    print(f"  CPU per 10k connections, include_* off   {off / M * 1e4 * 1e3:8.1f} ms")
    print(f"  CPU per 10k connections, include_* on    {on / M * 1e4 * 1e3:8.1f} ms  "
          f"(+{(on - off) / M * 1e4 * 1e3:.1f} ms: sock_diag dumps, /proc scans, matching)")
    print(f"  records naming python3 / with TCP stats  {procs:8,} / {rtts:,}")


if __name__ == "__main__":
    main()
    if os.environ.get("BENCH_SOCKETS", "1") != "0":
        sockets_bench()
