//! `dest_domains` end to end, in a network namespace: a real resolver (dnsmasq) answers
//! a CNAME chain, the glibc resolver (`getent`, through the namespace's own resolv.conf)
//! asks it, an nft rule copies the replies to NFLOG group 7 (`nflog` with `dns on`),
//! then TCP connections to the resolved address and to one never resolved.

mod common;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{connect_from, NetNs};
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(40);

/// `/etc/netns/<name>/resolv.conf`, which `ip netns exec` mounts over
/// /etc/resolv.conf; removed on drop.
struct ResolvConf(std::path::PathBuf);

impl ResolvConf {
    fn new(ns: &NetNs, nameserver: &str) -> ResolvConf {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{}", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
        ResolvConf(dir)
    }

    /// Adds a line (`options use-vc`: glibc asks over TCP).
    fn append(&self, line: &str) {
        let path = self.0.join("resolv.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{line}\n")).unwrap();
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Exchanges a few bytes so the connection is a whole flow.
fn exchange(server: &TcpListener, src: &str, dst: &str, port: u16) {
    let mut c = connect_from(src, dst, port).unwrap();
    let (mut s, _) = server.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"pong").unwrap();
    c.read_exact(&mut buf).unwrap();
}

/// A namespace with a client (10.3.0.5), dnsmasq at 10.3.0.53 answering
/// `www.example.test` CNAME `db.example.test` A 10.3.0.80 (TTL 60 s; dnsmasq's default
/// 0 would leave Calico's 2 s minimum), the namespace's resolv.conf
/// naming it, and nft copying DNS replies to NFLOG group 7 (as README tells users).
/// Fields drop in order: dnsmasq before the namespace.
struct Resolver {
    _dnsmasq: Killed,
    resolv: ResolvConf,
    ns: NetNs,
}

impl Resolver {
    fn new(prefix: &str) -> Resolver {
        let ns = NetNs::new(prefix);
        // client, resolver, a sender of garbage from port 53, two servers.
        for ip in [
            "10.3.0.5",
            "10.3.0.53",
            "10.3.0.54",
            "10.3.0.80",
            "10.3.0.81",
        ] {
            ns.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        ns.exec(&["nft", "add table inet dns"]);
        ns.exec(&[
            "nft",
            "add chain inet dns out { type filter hook output priority 0; }",
        ]);
        ns.exec(&["nft", "add rule inet dns out udp sport 53 log group 7"]);
        ns.exec(&["nft", "add rule inet dns out tcp sport 53 log group 7"]);
        let resolv = ResolvConf::new(&ns, "10.3.0.53");
        let dnsmasq = Killed(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "dnsmasq", "--keep-in-foreground"])
                .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
                .args(["--pid-file=", "--user=root", "--log-facility=-"])
                .args(["--listen-address=10.3.0.53", "--local-ttl=60"])
                .args(["--host-record=db.example.test,10.3.0.80"])
                .args(["--cname=www.example.test,db.example.test"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (scripts/test-deps.sh installs dnsmasq-base)"),
        );
        Resolver {
            _dnsmasq: dnsmasq,
            resolv,
            ns,
        }
    }

    /// `getent ahostsv4 www.example.test` in the namespace (the glibc resolver),
    /// retried until dnsmasq listens; its output.
    fn resolve(&self) -> String {
        let end = Instant::now() + T;
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.ns.name, "getent", "ahostsv4"])
                .arg("www.example.test")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                return text;
            }
            assert!(Instant::now() < end, "getent never resolved: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The records of the complete stdout lines so far.
fn records(a: &Agent) -> Vec<Value> {
    a.stdout()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// dnsmasq's real reply (compressed names and all) as the `dns` record tells it: the
/// question, then the CNAME and the address in the reply's order; over UDP, then over
/// TCP (glibc's `options use-vc`), whose handshake and ACK segments say nothing.
#[test]
fn a_real_resolvers_reply_becomes_one_dns_record() {
    let r = Resolver::new("ndns");
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name nflog\n    tag dns\n    netns {}\n    group 7\n    dns on\n\
         [OUTPUT]\n    name stdout\n    match *\n    format json_lines\n    json_date_key false\n",
        r.ns.path()
    );
    let mut a = Agent::start(&conf);
    a.wait_log("] receiving NFLOG group 7", T);
    r.resolve();
    a.wait_lines(1, T);
    r.resolv.append("options use-vc");
    r.resolve();
    a.wait_lines(2, T);
    let recs = records(&a);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for (d, proto) in recs.iter().zip(["udp", "tcp"]) {
        assert_eq!(d["event"], "dns", "{d}");
        assert_eq!(d["proto"], proto, "{d}");
        assert_eq!(
            (&d["src_ip"], &d["src_port"]),
            (&json!("10.3.0.53"), &json!(53))
        );
        assert_eq!(d["question"], "www.example.test");
        assert_eq!(d["qtype"], "A");
        assert_eq!(d["rcode"], "NOERROR");
        assert_eq!(d["group"], 7);
        assert_eq!(
            d["answers"],
            json!([
                {"name": "www.example.test", "type": "CNAME", "ttl": 60, "cname": "db.example.test"},
                {"name": "db.example.test", "type": "A", "ttl": 60, "address": "10.3.0.80"}
            ]),
            "{d}"
        );
    }
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(" 0 malformed, 0 cut by copy_range, 0 queries"),
        "{}",
        o.stderr
    );
}

/// Then a TCP connection to the resolved address, one to an address never resolved,
/// and a datagram from port 53 that is no DNS message.
#[test]
fn a_connection_to_a_resolved_address_names_the_domain_asked_for() {
    let r = Resolver::new("fdns");
    let dir = Dir::new();
    let eps = dir.file(
        "endpoints.json",
        r#"{"endpoints": [
          {"cidr": "10.3.0.5/32", "type": "wep", "namespace": "shop", "name": "client-7d9f-abcde", "generate_name": "client-7d9f-", "local": true}
        ]}"#,
    );
    let conf = format!(
        "[SERVICE]\n    flush 0.2\n\
         [INPUT]\n    name conntrack\n    tag ct\n    netns {p}\n    sample_interval 1s\n\
         [INPUT]\n    name nflog\n    tag dns\n    netns {p}\n    group 7\n    dns on\n\
         [FILTER]\n    name flow_aggregate\n    match *\n    flush_interval 2s\n    endpoints_file {e}\n\
         [OUTPUT]\n    name stdout\n    match flowlogs\n    format json_lines\n    json_date_key false\n",
        p = r.ns.path(),
        e = eps.display()
    );
    let mut a = Agent::start(&conf);
    a.wait_log("] receiving NFLOG group 7", T);
    a.wait_log("] watching /var/run/netns/", T);
    let resolved = r.resolve();
    assert!(
        resolved.starts_with("10.3.0.80 ") && resolved.contains("db.example.test"),
        "a CNAME to db.example.test: {resolved}"
    );
    r.ns.run_in(|| {
        // Not DNS, from port 53: counted and skipped.
        let junk = UdpSocket::bind("10.3.0.54:53").unwrap();
        junk.send_to(b"definitely not a DNS message", "10.3.0.5:4000")
            .unwrap();
        let resolved = TcpListener::bind("10.3.0.80:80").unwrap();
        exchange(&resolved, "10.3.0.5", "10.3.0.80", 80);
        let unnamed = TcpListener::bind("10.3.0.81:8080").unwrap();
        exchange(&unnamed, "10.3.0.5", "10.3.0.81", 8080);
    });
    let flow = |recs: &[Value], port: u64| -> Option<Value> {
        recs.iter()
            .find(|r| r["dest_port"] == port && r["num_flows_completed"] == 1)
            .cloned()
    };
    let end = Instant::now() + T;
    let (named, unnamed) = loop {
        let recs = records(&a);
        if let (Some(n), Some(u)) = (flow(&recs, 80), flow(&recs, 8080)) {
            break (n, u);
        }
        assert!(
            Instant::now() < end,
            "flow logs incomplete:\n{}\n{}",
            a.stdout(),
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The name the client asked for, not the CNAME's target.
    assert_eq!(
        named["dest_domains"],
        json!(["www.example.test"]),
        "{named}"
    );
    assert_eq!(named["dest_type"], "net");
    assert_eq!(named["reporter"], "src");
    assert_eq!(named["source_name_aggr"], "client-7d9f-*");
    assert_eq!(unnamed["dest_domains"], Value::Null, "{unnamed}");
    let o = a.stop(T);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let summary = log_lines(&o.stderr)
        .into_iter()
        .find(|l| l.contains("DNS responses,"))
        .unwrap_or_else(|| panic!("{}", o.stderr));
    assert!(summary.contains(", 1 malformed,"), "{summary}");
    assert!(!summary.contains("] 0 DNS responses"), "{summary}");
    assert!(
        o.stderr.contains("is no DNS response"),
        "the first malformed packet is warned about: {}",
        o.stderr
    );
}
