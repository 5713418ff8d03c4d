//! flow_aggregate's `include_process` and `include_tcp_stats` end to end, against the
//! kernel's own view: the client is a real process in a network namespace, its server
//! in another, joined by a "wire" that delays every packet; `ss -ti` (iproute2, an
//! independent reader of the same tcp_info) and /proc give the expected values.
//!
//! Why not `tc qdisc ... netem delay/loss`: this kernel has no sch_netem (nor tbf,
//! nor NFQUEUE). A token-bucket qdisc only delays once its bucket is empty, so its
//! delay depends on the traffic, not on the test. Instead the two namespaces are joined
//! by two TUN devices and a userspace forwarder that holds each packet for 25 ms (what
//! netem's delay does in the kernel): a real path with a 50 ms round trip. Loss is an
//! nftables rule (`numgen random mod 20 == 0 drop`, 5 %) on the server's side.

mod common;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::NetNs;
use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Holds each IP packet for DELAY seconds between two TUN devices.
const WIRE: &str = r#"
import fcntl, heapq, os, select, struct, sys, time
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd
a, b = tun(sys.argv[1]), tun(sys.argv[2])
delay, peer, queue, seq = float(sys.argv[3]), {}, [], 0
peer[a], peer[b] = b, a
print("ready", flush=True)
while True:
    timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
    for fd in select.select([a, b], [], [], timeout)[0]:
        try:
            pkt = os.read(fd, 65536)
        except OSError:  # EIO while a device is down (being moved to its namespace)
            time.sleep(0.01)
            continue
        seq += 1
        heapq.heappush(queue, (time.monotonic() + delay, seq, peer[fd], pkt))
    while queue and queue[0][0] <= time.monotonic():
        _, _, fd, pkt = heapq.heappop(queue)
        try:
            os.write(fd, pkt)
        except OSError:
            pass
"#;

/// Echo on :5001, sink on :5002, UDP echo on :5003.
const SERVER: &str = r#"
import socket, threading
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("10.4.0.2", 5003))
    while True:
        d, peer = u.recvfrom(2048)
        u.sendto(d, peer)
threading.Thread(target=udp, daemon=True).start()
def serve(port, echo):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.4.0.2", port)); s.listen()
    def conn(c):
        while True:
            d = c.recv(65536)
            if not d: break
            if echo: c.sendall(d)
    while True:
        c, _ = s.accept()
        threading.Thread(target=conn, args=(c,), daemon=True).start()
serve_threads = [threading.Thread(target=serve, args=(p, e), daemon=True) for p, e in ((5001, True), (5002, False))]
[t.start() for t in serve_threads]
print("listening", flush=True)
import sys; sys.stdin.read()
"#;

/// Ping-pong on :5001 for ~3 s (RTT samples) with a datagram to :5003 (an unconnected
/// UDP socket) each round, 4 MB to :5002 (through the loss), then "done"; the sockets
/// stay open until stdin closes.
const CLIENT: &str = r#"
import socket, sys, time
a = socket.create_connection(("10.4.0.2", 5001))
b = socket.create_connection(("10.4.0.2", 5002))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 3
while time.time() < end:
    a.sendall(b"x" * 100)
    got = 0
    while got < 100: got += len(a.recv(100 - got))
    u.sendto(b"q", ("10.4.0.2", 5003))
    u.recvfrom(100)
b.sendall(b"y" * 4_000_000)
print("done", a.getsockname()[1], b.getsockname()[1], flush=True)
sys.stdin.read()
"#;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(ns: Option<&NetNs>, script: &str, args: &[&str]) -> (Proc, BufReader<ChildStdout>) {
    let mut cmd = match ns {
        // `ip netns exec` execs the command in place: the child's pid is python's.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    let mut child = cmd
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Proc(child), out)
}

fn line(r: &mut BufReader<ChildStdout>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

/// `rtt:<srtt ms>/<var>` and `retrans:<cur>/<total>` of `ss -tin` for one socket.
fn ss(ns: &NetNs, sport: &str) -> (f64, u64, String) {
    let out = ns.exec(&[
        "ss",
        "-tin",
        "state",
        "established",
        "sport",
        "=",
        &format!(":{sport}"),
    ]);
    let word = |key: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let rtt = word("rtt:")
        .and_then(|v| v.split('/').next().and_then(|x| x.parse().ok()))
        .unwrap_or_else(|| panic!("{out}"));
    let retrans = word("retrans:")
        .and_then(|v| v.split('/').nth(1).and_then(|x| x.parse().ok()))
        .unwrap_or(0);
    (rtt, retrans, out)
}

#[test]
fn process_and_tcp_stats_of_a_real_client_through_a_delaying_lossy_path() {
    let a = NetNs::new("sdcli");
    let b = NetNs::new("sdsrv");
    let tag = std::process::id() % 100_000;
    let (ta, tb) = (format!("sdw{tag}a"), format!("sdw{tag}b"));
    let (_wire, mut wire_out) = python(None, WIRE, &[&ta, &tb, "0.025"]);
    assert_eq!(line(&mut wire_out).trim(), "ready");
    for (ns, dev, ip) in [(&a, &ta, "10.4.0.1/24"), (&b, &tb, "10.4.0.2/24")] {
        let moved = Command::new("ip")
            .args(["link", "set", dev, "netns", &ns.name])
            .status()
            .unwrap();
        assert!(moved.success());
        ns.exec(&["ip", "addr", "add", ip, "dev", dev]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
    b.exec(&["nft", "add table inet loss"]);
    b.exec(&[
        "nft",
        "add chain inet loss in { type filter hook input priority 0; }",
    ]);
    b.exec(&[
        "nft",
        "add rule inet loss in tcp dport 5002 numgen random mod 20 == 0 drop",
    ]);
    let (_server, mut server_out) = python(Some(&b), SERVER, &[]);
    assert_eq!(line(&mut server_out).trim(), "listening");
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name conntrack\n    tag ct\n    netns {p}\n    sample_interval 1s\n\
         [FILTER]\n    name flow_aggregate\n    match ct\n    flush_interval 2s\n    local_endpoints 10.4.0.1/32\n    \
         include_process on\n    include_tcp_stats on\n    sample_interval 1s\n    netns {p}\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        p = a.path()
    );
    let mut agent = Agent::start(&conf);
    agent.wait_log("] watching /var/run/netns/", T);
    let (mut client, mut client_out) = python(Some(&a), CLIENT, &[]);
    let done = line(&mut client_out);
    let ports: Vec<&str> = done.split_whitespace().skip(1).collect();
    assert_eq!(ports.len(), 2, "client: {done}");
    let pid = client.0.id();
    let pid_text = pid.to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let (rtt_ms, _, ss_rtt) = ss(&a, ports[0]);
    assert!(rtt_ms > 45.0, "the wire delays: {ss_rtt}");
    // Let the agent sample the idle connections once more, then end them.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, retrans_total, ss_loss) = ss(&a, ports[1]);
    drop(client.0.stdin.take());
    let _ = client.0.wait();
    let records = |out: &str| -> Vec<Value> {
        out.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let end = Instant::now() + T;
    let logs = loop {
        let recs = records(&agent.stdout());
        let completed = |port: u64| {
            recs.iter()
                .filter(|r| r["dest_port"] == port)
                .map(|r| r["num_flows_completed"].as_u64().unwrap())
                .sum::<u64>()
        };
        if completed(5001) >= 1 && completed(5002) >= 1 {
            break recs;
        }
        assert!(
            Instant::now() < end,
            "no complete flows:\n{}\n{}",
            agent.stdout(),
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let port = |p: u64| -> Vec<&Value> { logs.iter().filter(|r| r["dest_port"] == p).collect() };
    // The client's records name its process: pid, comm, arguments.
    for r in port(5001).iter().chain(port(5002).iter()) {
        if r["process_name"] == "-" {
            // Updates before a dump listed the socket (the sampler's thread dumps every
            // sample_interval): Calico's "not included" values.
            assert_eq!(r["num_process_names"], 0, "{r}");
            continue;
        }
        assert_eq!(r["process_name"], comm.trim(), "{r}");
        assert_eq!(r["process_id"].as_str(), Some(&*pid_text), "{r}");
        assert_eq!(r["num_process_names"], 1);
        assert_eq!(r["num_process_ids"], 1);
        let args = r["process_args"][0].as_str().unwrap();
        assert!(args.starts_with("-c \nimport socket, sys, time"), "{r}");
    }
    assert!(
        port(5001)
            .iter()
            .any(|r| r["process_id"].as_str() == Some(&*pid_text)),
        "{logs:#?}"
    );
    // The UDP socket is unconnected (no peer in the dump): found by its local address.
    let udp: Vec<&Value> = logs.iter().filter(|r| r["proto"] == "udp").collect();
    assert!(
        udp.iter()
            .any(|r| r["dest_port"] == 5003 && r["process_id"].as_str() == Some(&*pid_text)),
        "{udp:#?}"
    );
    assert!(
        udp.iter().all(|r| r["tcp_mean_smooth_rtt"] == 0),
        "no TCP stats for UDP"
    );
    // Smoothed RTT: every sample of the ping-pong connection, as ss reads the same
    // tcp_info field, within 10 %.
    let rtts: Vec<f64> = port(5001)
        .iter()
        .filter(|r| r["tcp_mean_smooth_rtt"].as_u64().unwrap() > 0)
        .map(|r| r["tcp_mean_smooth_rtt"].as_u64().unwrap() as f64 / 1000.0)
        .collect();
    assert!(!rtts.is_empty(), "{logs:#?}");
    for agent_ms in &rtts {
        assert!(
            (agent_ms - rtt_ms).abs() <= rtt_ms * 0.10,
            "agent {agent_ms} ms vs ss {rtt_ms} ms: {ss_rtt}\n{logs:#?}"
        );
    }
    for r in port(5001) {
        let (mean, max) = (
            r["tcp_mean_smooth_rtt"].as_u64().unwrap(),
            r["tcp_max_smooth_rtt"].as_u64().unwrap(),
        );
        assert!(mean <= max, "{r}");
        if mean > 0 {
            assert!(r["tcp_mean_mss"].as_u64().unwrap() > 500, "{r}");
            assert!(
                r["tcp_min_send_congestion_window"].as_u64().unwrap() >= 1,
                "{r}"
            );
            assert!(r["tcp_mean_min_rtt"].as_u64().unwrap() >= 45_000, "{r}");
        }
    }
    // Retransmissions through the 5 % loss: counted, and never more than the socket's
    // own total (ss's retrans:<cur>/<total>) — the agent sums per-sample deltas of it.
    let retrans: u64 = port(5002)
        .iter()
        .map(|r| r["tcp_total_retransmissions"].as_u64().unwrap())
        .sum();
    assert!(retrans > 0, "{ss_loss}\n{logs:#?}");
    assert!(
        retrans <= retrans_total,
        "agent {retrans} > ss {retrans_total}: {ss_loss}"
    );
    eprintln!(
        "srtt: agent {rtts:?} ms, ss {rtt_ms} ms; retransmissions: agent {retrans}, ss total {retrans_total}"
    );
    let o = agent.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

/// Off by default: Calico's "not included" values, and no sock_diag dump at all.
#[test]
fn without_the_options_records_carry_calicos_off_values_and_nothing_is_dumped() {
    let ns = NetNs::new("sdoff");
    ns.exec(&["ip", "addr", "add", "10.5.0.1/32", "dev", "lo"]);
    let http = free_port();
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name conntrack\n    tag ct\n    netns {p}\n\
         [FILTER]\n    name flow_aggregate\n    match ct\n    flush_interval 1s\n    local_endpoints 10.5.0.1/32\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        p = ns.path()
    );
    let mut agent = Agent::start(&conf);
    agent.wait_log("] watching /var/run/netns/", T);
    ns.run_in(|| {
        let l = std::net::TcpListener::bind("10.5.0.1:7000").unwrap();
        let mut c = std::net::TcpStream::connect("10.5.0.1:7000").unwrap();
        let _s = l.accept().unwrap();
        c.write_all(b"hello").unwrap();
    });
    agent.wait_until(T, "a flow record", |out, _| {
        out.contains("\"dest_port\":7000")
    });
    let (_, metrics) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        metrics.contains("agent_flow_aggregate_records_total"),
        "{metrics}"
    );
    let o = agent.stop(T);
    let r: Value = serde_json::from_str(
        o.stdout
            .lines()
            .find(|l| l.contains("\"dest_port\":7000"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r["process_name"], "-");
    assert_eq!(r["num_process_names"], 0);
    assert_eq!(r["process_id"], "-");
    assert_eq!(r["num_process_ids"], 0);
    assert_eq!(r["process_args"], serde_json::json!(["-"]));
    assert_eq!(r["num_process_args"], 0);
    for k in [
        "tcp_mean_smooth_rtt",
        "tcp_total_retransmissions",
        "tcp_min_mss",
        "tcp_unrecovered_to",
    ] {
        assert_eq!(r[k], 0, "{k}");
    }
    assert!(
        !metrics.contains("agent_flow_aggregate_sockdiag_dumps_total"),
        "{metrics}"
    );
}

/// Bad settings are configuration errors naming the file, line and what is expected.
#[test]
fn bad_sampler_settings_are_refused_with_file_and_line() {
    let conf = |extra: &str| {
        format!(
            "[INPUT]\n    name dummy\n[FILTER]\n    name flow_aggregate\n    match *\n{extra}[OUTPUT]\n    name null\n    match *\n"
        )
    };
    let lines = refused_config(&conf(
        "    include_tcp_stats on\n    sample_interval 10ms\n",
    ));
    let l = lines
        .iter()
        .find(|l| l.contains("sample_interval"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(l.contains("fluent-bit.conf:7"), "{l}");
    assert!(l.contains("at least 100ms"), "{l}");
    let lines = refused_config(&conf(
        "    include_process on\n    netns /var/run/netns/no-such-namespace\n",
    ));
    let l = lines
        .iter()
        .find(|l| l.contains("netns"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(l.contains("fluent-bit.conf:7"), "{l}");
    assert!(l.contains("ip netns add"), "{l}");
    let lines = refused_config(&conf("    include_process on\n    process_limit 0\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("process_limit") && l.contains(">= 1")),
        "{lines:#?}"
    );
}
