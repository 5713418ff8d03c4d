#!/usr/bin/env python3
"""conntrack input: events/s it sustains with zero loss, and its CPU per 10k events.

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


if __name__ == "__main__":
    main()
