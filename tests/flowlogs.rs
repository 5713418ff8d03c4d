//! Flow logs end to end: conntrack + nflog → flow_aggregate → stdout, in a network
//! namespace with workload addresses on `lo`, against the kernel's own counters.

mod common;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::netns::{connect_from, conntrack_counters, NetNs};
use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

/// Sums of `packets=`/`bytes=` (orig, reply) over `conntrack -E` DESTROY lines to dport 80.
fn tool_totals(text: &str) -> ([u64; 4], usize) {
    let mut t = [0u64; 4];
    let mut n = 0;
    for line in text.lines().filter(|l| l.contains("dport=80 ")) {
        if let Some(nums) = conntrack_counters(line) {
            n += 1;
            for i in 0..4 {
                t[i] += nums[i];
            }
        }
    }
    (t, n)
}

#[test]
fn flow_logs_from_real_traffic_with_workloads_and_a_denied_connection() {
    let ns = NetNs::new("flowlogs");
    for ip in ["10.1.0.5", "10.1.0.6", "10.1.0.7"] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    ns.exec(&["nft", "add table inet fw"]);
    ns.exec(&[
        "nft",
        "add chain inet fw out { type filter hook output priority 0; }",
    ]);
    ns.exec(&[
        "nft",
        "add rule inet fw out tcp dport 5432 log group 5 prefix \"D|policy-demo/deny-db\" drop",
    ]);
    let dir = Dir::new();
    let eps = dir.file(
        "endpoints.json",
        r#"{"endpoints": [
          {"cidr": "10.1.0.5/32", "type": "wep", "namespace": "policy-demo", "name": "access-6b687c8dcb-aaaaa", "generate_name": "access-6b687c8dcb-", "labels": {"run": "access", "pod": "a"}, "local": true},
          {"cidr": "10.1.0.6/32", "type": "wep", "namespace": "policy-demo", "name": "access-6b687c8dcb-bbbbb", "generate_name": "access-6b687c8dcb-", "labels": {"run": "access", "pod": "b"}, "local": true},
          {"cidr": "10.1.0.7/32", "type": "wep", "namespace": "policy-demo", "name": "nginx-86c57db685-xxxxx", "generate_name": "nginx-86c57db685-", "labels": {"app": "nginx"}}
        ]}"#,
    );
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name conntrack\n    tag ct\n    netns {p}\n    sample_interval 1s\n\
         [INPUT]\n    name nflog\n    tag nf\n    netns {p}\n    group 5\n\
         [FILTER]\n    name flow_aggregate\n    match *\n    flush_interval 2s\n    flush_jitter_percent 0\n    endpoints_file {e}\n    include_labels on\n    include_policies on\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        p = ns.path(),
        e = eps.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_log("] receiving NFLOG group 5", T);
    a.wait_log("] watching /var/run/netns/", T);
    let tool = ns.watch_tcp_destroys();
    // Three allowed connections from two "access" pods to nginx:80, one denied to :5432.
    ns.run_in(|| {
        let server = TcpListener::bind("10.1.0.7:80").unwrap();
        for (src, up, down) in [
            ("10.1.0.5", 300, 700),
            ("10.1.0.6", 500, 1100),
            ("10.1.0.5", 900, 100),
        ] {
            let mut c = connect_from(src, "10.1.0.7", 80).unwrap();
            let (mut s, _) = server.accept().unwrap();
            c.write_all(&vec![b'u'; up]).unwrap();
            let mut buf = vec![0; 4096];
            s.read_exact(&mut buf[..up]).unwrap();
            s.write_all(&vec![b'd'; down]).unwrap();
            c.read_exact(&mut buf[..down]).unwrap();
        }
        assert!(
            connect_from("10.1.0.5", "10.1.0.7", 5432).is_err(),
            "dropped by the nft rule"
        );
        // UDP: two 200-byte datagrams from the second pod to nginx:53, echoed.
        let us = std::net::UdpSocket::bind("10.1.0.7:53").unwrap();
        let uc = std::net::UdpSocket::bind("10.1.0.6:45000").unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..2 {
            uc.send_to(&[b'q'; 200], "10.1.0.7:53").unwrap();
            let (n, from) = us.recv_from(&mut buf).unwrap();
            us.send_to(&buf[..n], from).unwrap();
            uc.recv_from(&mut buf).unwrap();
        }
    });
    let udp_truth = ns.exec(&["conntrack", "-L", "-o", "extended", "-p", "udp"]);
    // Wait for the kernel's DESTROY of all three and for flow logs that account for them.
    let raw = tool.read_until(T, |raw| tool_totals(raw).1 >= 3);
    let (truth, n) = tool_totals(&raw);
    assert_eq!(n, 3, "{raw}");
    let allowed = |recs: &[Value]| -> Vec<Value> {
        recs.iter()
            .filter(|r| r["action"] == "allow" && r["dest_port"] == 80)
            .cloned()
            .collect()
    };
    let end = Instant::now() + T;
    let logs = loop {
        // Read while the agent writes: only complete lines.
        let recs: Vec<Value> = a
            .stdout()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let done: u64 = allowed(&recs)
            .iter()
            .map(|r| r["num_flows_completed"].as_u64().unwrap())
            .sum();
        let udp_bytes: u64 = recs
            .iter()
            .filter(|r| r["proto"] == "udp")
            .map(|r| r["bytes_out"].as_u64().unwrap())
            .sum();
        if done >= 3 && recs.iter().any(|r| r["action"] == "deny") && udp_bytes >= 400 {
            break recs;
        }
        assert!(
            Instant::now() < end,
            "flow logs incomplete:\n{}\n{}",
            a.stdout(),
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let allow = allowed(&logs);
    let sum = |k: &str| allow.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    // Reporter src (the access pods are local, nginx is not): out = original direction.
    assert_eq!(
        [
            sum("packets_out"),
            sum("bytes_out"),
            sum("packets_in"),
            sum("bytes_in")
        ],
        truth,
        "{allow:#?}\n{raw}"
    );
    assert_eq!(
        (sum("num_flows_started"), sum("num_flows_completed")),
        (3, 3)
    );
    for r in &allow {
        assert_eq!(r["reporter"], "src");
        assert_eq!(r["source_ip"], Value::Null, "level 2 nulls IPs");
        assert_eq!(r["source_name"], "-");
        assert_eq!(r["source_name_aggr"], "access-6b687c8dcb-*");
        assert_eq!(r["source_namespace"], "policy-demo");
        assert_eq!(r["source_port"], Value::Null);
        assert_eq!(r["dest_name_aggr"], "nginx-86c57db685-*");
        assert_eq!(r["dest_type"], "wep");
        assert_eq!(r["proto"], "tcp");
        assert_eq!(
            r["source_labels"]["labels"],
            serde_json::json!(["run=access"]),
            "intersection of both pods' labels"
        );
    }
    // UDP: the flow logs' bytes equal what conntrack -L counted for the exchange.
    let nums: Vec<u64> = udp_truth
        .lines()
        .find(|l| l.contains("sport=45000"))
        .unwrap_or_else(|| panic!("{udp_truth}"))
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes="))
        .map(|x| x.parse().unwrap())
        .collect();
    let udp: Vec<&Value> = logs
        .iter()
        .filter(|r| r["proto"] == "udp" && r["dest_port"] == 53)
        .collect();
    let udp_sum = |k: &str| udp.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (udp_sum("bytes_out"), udp_sum("bytes_in")),
        (nums[0], nums[1]),
        "{udp:#?}\n{udp_truth}"
    );
    assert_eq!(udp[0]["source_name_aggr"], "access-6b687c8dcb-*");
    let deny: Vec<&Value> = logs.iter().filter(|r| r["action"] == "deny").collect();
    let d = deny[0];
    assert_eq!(d["dest_port"], 5432);
    assert_eq!(
        d["source_ip"], "10.1.0.5",
        "denied flows aggregate at level 1: IPs kept"
    );
    assert_eq!(d["source_port"], Value::Null);
    assert_eq!(
        d["policies"]["all_policies"],
        serde_json::json!(["0|default|policy-demo/deny-db|deny|0"])
    );
    assert!(d["packets_out"].as_u64().unwrap() >= 1, "{d}");
    // Later intervals and the shutdown flush add nothing for connections already over.
    let o = a.stop(T);
    assert_eq!(o.code, Some(0));
    let all: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let allow = allowed(&all);
    let sum = |k: &str| allow.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (
            sum("num_flows_started"),
            sum("num_flows_completed"),
            sum("bytes_out")
        ),
        (3, 3, truth[1]),
        "{allow:#?}"
    );
}

/// Packets logged with a snaplen shorter than their IP header (`snaplen 14`) are
/// skipped and counted, never indexed past their end (the agent panicked); packets
/// logged whole by another rule still become records.
#[test]
fn packets_cut_shorter_than_their_ip_header_are_skipped_and_counted() {
    let ns = NetNs::new("nfshort");
    ns.exec(&["ip", "addr", "add", "10.2.0.5/32", "dev", "lo"]);
    ns.exec(&["nft", "add table inet fw"]);
    ns.exec(&[
        "nft",
        "add chain inet fw out { type filter hook output priority 0; }",
    ]);
    ns.exec(&[
        "nft",
        "add rule inet fw out tcp dport 5001 log group 6 snaplen 14 prefix \"D|t/short\" drop",
    ]);
    ns.exec(&[
        "nft",
        "add rule inet fw out tcp dport 5002 log group 6 prefix \"D|t/whole\" drop",
    ]);
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name nflog\n    tag nf\n    netns {}\n    group 6\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n",
        ns.path()
    );
    let mut a = Agent::start(&conf);
    a.wait_log("] receiving NFLOG group 6", T);
    ns.run_in(|| {
        for port in [5001, 5001, 5002] {
            let _ = TcpStream::connect_timeout(
                &SocketAddr::new("10.2.0.5".parse().unwrap(), port),
                Duration::from_millis(300),
            );
        }
    });
    a.wait_log("without a whole IP header were skipped", T);
    a.wait_until(T, "the whole packet's record", |out, _| {
        out.contains("t/whole")
    });
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!o.stdout.contains("t/short"), "{}", o.stdout);
    let summary = log_lines(&o.stderr)
        .into_iter()
        .find(|l| l.contains("without a whole IP header") && l.contains("packets,"))
        .unwrap_or_else(|| panic!("{}", o.stderr));
    assert!(!summary.contains(", 0 without"), "{summary}");
}

/// An ICMP echo request from `src` to `dst` with this identifier (raw socket, root).
fn ping(src: &str, dst: &str, id: u16) {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
    .unwrap();
    s.bind(&SocketAddr::new(src.parse().unwrap(), 0).into())
        .unwrap();
    let mut pkt = [
        8u8,
        0,
        0,
        0,
        (id >> 8) as u8,
        id as u8,
        0,
        1,
        b'p',
        b'i',
        b'n',
        b'g',
    ];
    let sum = pkt
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    s.send_to(&pkt, &SocketAddr::new(dst.parse().unwrap(), 0).into())
        .unwrap();
}

fn exchange(src: &str, dst: &str, port: u16, server: &TcpListener) {
    let mut c = connect_from(src, dst, port).unwrap();
    let (mut s, _) = server.accept().unwrap();
    c.write_all(&[b'u'; 300]).unwrap();
    let mut buf = [0; 300];
    s.read_exact(&mut buf).unwrap();
    s.write_all(&buf).unwrap();
    c.read_exact(&mut buf).unwrap();
}

/// Calico's NFLOG prefixes on a node where every workload is local: a deny at egress
/// is reported once, by the source; at ingress once, by the destination; a logged
/// allow changes no counter and names its policy; two pings with two ids are two
/// flows; a SNAT'd connection lists the port it left from.
#[test]
fn calico_prefixes_report_verdicts_from_the_side_that_acted() {
    let ns = NetNs::new("flowcalico");
    for ip in ["10.2.0.5", "10.2.0.6", "10.2.0.7"] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let dir = Dir::new();
    let rules = dir.file(
        "rules.nft",
        "table inet fw {\n\
           chain out { type filter hook output priority 0;\n\
             tcp dport 5432 log group 7 prefix \"DPE0|np/policy-demo/default.deny-db\" drop\n\
             tcp dport 80 ct state new log group 7 prefix \"APE0|np/policy-demo/default.allow-web\"\n\
           }\n\
           chain in { type filter hook input priority 0;\n\
             tcp dport 5433 log group 7 prefix \"DPI1|np/policy-demo/default.deny-db\" drop\n\
           }\n\
           chain post { type nat hook postrouting priority 100;\n\
             ip saddr 10.2.0.6 tcp dport 81 snat ip to 10.2.0.6:61000-61009\n\
           }\n\
         }\n",
    );
    ns.exec(&["nft", "-f", rules.to_str().unwrap()]);
    let eps = dir.file(
        "endpoints.json",
        r#"{"endpoints": [
          {"cidr": "10.2.0.5/32", "namespace": "policy-demo", "name": "access-6b687c8dcb-aaaaa", "generate_name": "access-6b687c8dcb-", "local": true},
          {"cidr": "10.2.0.6/32", "namespace": "policy-demo", "name": "client-0", "local": true},
          {"cidr": "10.2.0.7/32", "namespace": "policy-demo", "name": "nginx-86c57db685-xxxxx", "generate_name": "nginx-86c57db685-", "local": true}
        ]}"#,
    );
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name conntrack\n    tag ct\n    netns {p}\n    sample_interval 1s\n\
         [INPUT]\n    name nflog\n    tag nf\n    netns {p}\n    group 7\n\
         [FILTER]\n    name flow_aggregate\n    match *\n    flush_interval 2s\n    flush_jitter_percent 0\n    endpoints_file {e}\n    include_policies on\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        p = ns.path(),
        e = eps.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_log("] receiving NFLOG group 7", T);
    a.wait_log("] watching /var/run/netns/", T);
    let tool = ns.watch_tcp_destroys();
    ns.run_in(|| {
        let web = TcpListener::bind("10.2.0.7:80").unwrap();
        exchange("10.2.0.5", "10.2.0.7", 80, &web);
        let _db = TcpListener::bind("10.2.0.7:5433").unwrap();
        assert!(
            connect_from("10.2.0.5", "10.2.0.7", 5432).is_err(),
            "egress deny"
        );
        assert!(
            connect_from("10.2.0.5", "10.2.0.7", 5433).is_err(),
            "ingress deny"
        );
        let nat = TcpListener::bind("10.2.0.7:81").unwrap();
        exchange("10.2.0.6", "10.2.0.7", 81, &nat);
        ping("10.2.0.5", "10.2.0.7", 7001);
        ping("10.2.0.5", "10.2.0.7", 7002);
    });
    let raw = tool.read_until(T, |raw| {
        raw.lines()
            .filter(|l| l.contains("dport=80 ") || l.contains("dport=81 "))
            .count()
            >= 2
    });
    let (truth, _) = tool_totals(&raw);
    let end = Instant::now() + T;
    let logs = loop {
        let recs: Vec<Value> = a
            .stdout()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let completed = |port: u64| {
            recs.iter()
                .filter(|r| r["dest_port"] == port && r["action"] == "allow")
                .map(|r| r["num_flows_completed"].as_u64().unwrap())
                .sum::<u64>()
        };
        let denies = recs.iter().filter(|r| r["action"] == "deny").count();
        let icmp = recs.iter().any(|r| r["proto"] == "icmp");
        if completed(80) >= 2 && completed(81) >= 2 && denies >= 2 && icmp {
            break recs;
        }
        assert!(
            Instant::now() < end,
            "flow logs incomplete:\n{}\n{}",
            a.stdout(),
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let one more interval pass: a late duplicate would show up in it.
    std::thread::sleep(Duration::from_millis(2500));
    let o = a.stop(T);
    let all: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(all.len() >= logs.len());
    let pick =
        |f: &dyn Fn(&Value) -> bool| all.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>();
    // Egress deny: reported once, by the source, bytes out only.
    let egress = pick(&|r| r["dest_port"] == 5432);
    assert_eq!(egress.len(), 1, "{egress:#?}");
    assert_eq!(
        (&egress[0]["action"], &egress[0]["reporter"]),
        (&"deny".into(), &"src".into())
    );
    assert!(egress[0]["bytes_out"].as_u64().unwrap() > 0 && egress[0]["bytes_in"] == 0);
    assert_eq!(
        egress[0]["policies"]["all_policies"],
        serde_json::json!(["0|default|policy-demo/default.deny-db|deny|0"])
    );
    // Ingress deny: once, by the destination, bytes in only. Conntrack confirmed the
    // connection on its way out, so the source (whose egress allowed it) reports an
    // allow, and the destination no allow beside its deny.
    let ingress = pick(&|r| r["dest_port"] == 5433 && r["action"] == "deny");
    assert_eq!(ingress.len(), 1, "{ingress:#?}");
    assert_eq!(ingress[0]["reporter"], "dst");
    let allowed = pick(&|r| r["dest_port"] == 5433 && r["action"] == "allow");
    assert!(
        allowed.iter().all(|r| r["reporter"] == "src"),
        "{allowed:#?}"
    );
    assert!(ingress[0]["bytes_in"].as_u64().unwrap() > 0 && ingress[0]["bytes_out"] == 0);
    assert_eq!(
        ingress[0]["policies"]["enforced_policies"],
        serde_json::json!(["0|default|policy-demo/default.deny-db|deny|1"])
    );
    // The logged allow: counters are conntrack's, exactly, from both sides; the source
    // side's record names the egress policy.
    let web = pick(&|r| r["dest_port"] == 80);
    let src: Vec<&Value> = web.iter().filter(|r| r["reporter"] == "src").collect();
    let dst: Vec<&Value> = web.iter().filter(|r| r["reporter"] == "dst").collect();
    let sum = |rs: &[&Value], k: &str| rs.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        [
            sum(&src, "packets_out"),
            sum(&src, "bytes_out"),
            sum(&src, "packets_in"),
            sum(&src, "bytes_in")
        ],
        truth,
        "{web:#?}\n{raw}"
    );
    assert_eq!(
        [
            sum(&dst, "packets_in"),
            sum(&dst, "bytes_in"),
            sum(&dst, "packets_out"),
            sum(&dst, "bytes_out")
        ],
        truth
    );
    assert_eq!(
        src[0]["policies"]["all_policies"],
        serde_json::json!(["0|default|policy-demo/default.allow-web|allow|0"])
    );
    assert_eq!(dst[0]["policies"]["all_policies"], serde_json::json!([]));
    // SNAT: the connection left from a port of the snat range.
    let nat = pick(&|r| r["dest_port"] == 81 && r["reporter"] == "src");
    let ports = nat[0]["nat_outgoing_ports"]
        .as_array()
        .unwrap_or_else(|| panic!("{nat:#?}"));
    assert!(
        ports.len() == 1 && (61000..=61009).contains(&ports[0].as_u64().unwrap()),
        "{nat:#?}"
    );
    // ICMP: two echo ids, two flows.
    let icmp = pick(&|r| r["proto"] == "icmp" && r["reporter"] == "src");
    assert_eq!(
        icmp.iter().map(|r| r["num_flows"].as_u64().unwrap()).max(),
        Some(2),
        "{icmp:#?}"
    );
    assert_eq!(icmp[0]["dest_port"], Value::Null);
}
